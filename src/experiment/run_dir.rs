//! A run's directory `runs/<experiment>/<config hash>/`: resolved config, provenance, status with
//! heartbeat, `metrics.jsonl`, `summary.json`, TensorBoard events, and a lock.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Run status as written to `status.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// In progress (check the heartbeat).
    Running,
    /// Finished all stages.
    Completed,
    /// Stopped by an error (e.g. a non-finite loss).
    Failed,
    /// Stopped by SIGINT, SIGTERM or SIGHUP after writing a checkpoint.
    Interrupted,
}

/// `status.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    /// Status.
    pub status: Status,
    /// Global step.
    pub step: u64,
    /// Process id of the writer.
    pub pid: u32,
    /// Unix seconds of the last heartbeat.
    pub heartbeat: u64,
    /// Why it failed, if it did.
    pub message: Option<String>,
    /// Host name of the writer (runs on a cluster share the filesystem, not the process table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Seconds without a heartbeat after which a RUNNING run counts as crashed.
pub const HEARTBEAT_TIMEOUT: u64 = 120;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether the writer of a heartbeat is alive: on this host, its process exists and the
/// heartbeat is recent; on another host (a cluster node), the heartbeat is recent.
fn writer_alive(pid: u32, host: Option<&str>, heartbeat: u64) -> bool {
    let recent = unix_now().saturating_sub(heartbeat) <= HEARTBEAT_TIMEOUT;
    match host {
        Some(h) if h != host_name() => recent,
        _ => process_alive(pid) && recent,
    }
}

impl StatusFile {
    /// The status as a person should read it: a RUNNING run whose process is gone or whose
    /// heartbeat is stale is CRASHED.
    pub fn display(&self) -> &'static str {
        match self.status {
            Status::Running if !writer_alive(self.pid, self.host.as_deref(), self.heartbeat) => {
                "CRASHED"
            }
            Status::Running => "RUNNING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Interrupted => "INTERRUPTED",
        }
    }
}

/// Removes the temporary files of atomic writes that never finished (see
/// [`crate::fsutil::temporary_sibling`]) from a run directory and its event folders; called by the
/// process that holds the run's lock. Returns how many it removed.
fn remove_temporary_files(run: &Path) -> usize {
    let is_temporary = |name: &str| {
        name.rsplit_once(".tmp-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    };
    ["", "train", "valid", "info"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(run.join(sub)).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| is_temporary(&e.file_name().to_string_lossy()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// An open run directory holding its lock.
pub struct RunDir {
    /// `runs/<experiment>/<hash>`.
    pub path: PathBuf,
    /// `checkpoints/<experiment>-<hash>`.
    pub checkpoints: PathBuf,
    lock: PathBuf,
}

impl RunDir {
    /// Opens (creating if needed) the run directory and takes its lock; a live process holding
    /// the lock is an error, a dead one's lock is taken over.
    pub fn open(path: PathBuf, checkpoints: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        std::fs::create_dir_all(&checkpoints).map_err(|e| Error::io(&checkpoints, e))?;
        let lock = path.join("LOCK");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(mut f) => {
                    write!(f, "{} {}", std::process::id(), host_name())
                        .map_err(|e| Error::io(&lock, e))?;
                    let removed = super::checkpoint::remove_unfinished(&checkpoints)
                        + remove_temporary_files(&path);
                    if removed > 0 {
                        eprintln!(
                            "{}: removed {removed} unfinished write(s) of an earlier process",
                            path.display()
                        );
                    }
                    return Ok(Self {
                        path,
                        checkpoints,
                        lock,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(pid) = RunDir::live_holder(&path) {
                        return Err(Error::Locked {
                            path,
                            holder: Some(pid),
                        });
                    }
                    let _ = std::fs::remove_file(&lock); // stale lock of a dead process
                }
                Err(e) => return Err(Error::io(&lock, e)),
            }
        }
        Err(Error::Locked { path, holder: None })
    }

    /// The live process holding the lock of the run at `path`, if any (not this one), as
    /// `PID` or `PID on HOST`. The lock file holds `PID HOST`; a holder on another host (a
    /// cluster node) counts as live while the run's heartbeat is recent.
    pub fn live_holder(path: &Path) -> Option<String> {
        let text = std::fs::read_to_string(path.join("LOCK")).ok()?;
        let mut words = text.split_whitespace();
        let pid: u32 = words.next()?.parse().ok()?;
        let host = words.next().filter(|h| *h != host_name());
        match host {
            None if pid == std::process::id() || !process_alive(pid) => None,
            None => Some(pid.to_string()),
            Some(h) => {
                let heartbeat = RunDir::read_status(path).map_or(0, |s| s.heartbeat);
                writer_alive(pid, Some(h), heartbeat).then(|| format!("{pid} on {h}"))
            }
        }
    }

    /// Writes `status.json` atomically.
    pub fn set_status(&self, status: Status, step: u64, message: Option<String>) -> Result<()> {
        let s = StatusFile {
            status,
            step,
            pid: std::process::id(),
            heartbeat: unix_now(),
            message,
            host: Some(host_name()),
        };
        write_atomic(
            &self.path.join("status.json"),
            serde_json::to_string_pretty(&s).unwrap().as_bytes(),
        )
    }

    /// Reads `status.json`, if any (a damaged one reads as none: see [`RunDir::check_status`]).
    pub fn read_status(dir: &Path) -> Option<StatusFile> {
        RunDir::check_status(dir).ok().flatten()
    }

    /// Reads `status.json`: `Ok(None)` where there is none, an error naming the file where it
    /// exists but cannot be read or parsed.
    pub fn check_status(dir: &Path) -> Result<Option<StatusFile>> {
        let path = dir.join("status.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Data {
                file: path,
                line: Some(e.line()),
                msg: format!("damaged run status ({e})"),
            })
    }

    /// Writes a text file atomically inside the run directory.
    pub fn write(&self, name: &str, text: &str) -> Result<()> {
        write_atomic(&self.path.join(name), text.as_bytes())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// `git rev-parse HEAD` and `git diff HEAD` of the working tree (empty when not a repository).
pub fn git_provenance() -> (String, String) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    (
        run(&["rev-parse", "HEAD"]).trim().to_string(),
        run(&["diff", "HEAD"]),
    )
}

/// The environment a run executed in. On the CPU a run is bit-reproducible for a given thread
/// count (`rayon_threads`; unset means one per core, `threads`), not across thread counts: with
/// one and with two threads the real-data run's gradient norms already differ in the eighth digit
/// at step 5, and the difference grows over a run (experiments/README.md measures it).
pub fn environment(device: crate::device::DeviceChoice) -> serde_json::Value {
    serde_json::json!({
        "weakalign": env!("CARGO_PKG_VERSION"),
        "burn": "0.22.1",
        "device": device.to_string(),
        "backend": device.describe(),
        "cuda_compiled_in": cfg!(feature = "cuda"),
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rayon_threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "cpu": cpu_model(),
    })
}

/// The thread count that decides a CPU run's arithmetic in an [`environment`]:
/// `RAYON_NUM_THREADS`, else the cores.
fn threads(env: &serde_json::Value) -> Option<u64> {
    env["rayon_threads"]
        .as_str()
        .and_then(|t| t.trim().parse().ok())
        .filter(|&t| t > 0)
        .or_else(|| env["threads"].as_u64())
}

/// What differs between two [`environment`]s in what decides training's bits: the device,
/// backend, processor and thread count, each as `"key: a → b"`. Empty when training in `a` and in
/// `b` gives the same bits. (One-thread CPU runs were measured to agree across processors too;
/// this asks more than that, which costs at worst a retraining or a needless warning.)
pub fn arithmetic_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let show = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut out: Vec<String> = ["device", "backend", "cpu"]
        .iter()
        .filter(|k| a[**k] != b[**k])
        .map(|k| format!("{k}: {} → {}", show(&a[*k]), show(&b[*k])))
        .collect();
    let (ta, tb) = (threads(a), threads(b));
    if ta != tb {
        let show = |t: Option<u64>| t.map_or("unknown".to_string(), |t| t.to_string());
        out.push(format!("threads: {} → {}", show(ta), show(tb)));
    }
    out
}

/// Whether training in `a` and in `b` gives the same bits (see [`arithmetic_differences`]).
pub fn same_arithmetic(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    arithmetic_differences(a, b).is_empty()
}

/// The processor's name as Linux reports it (`model name` in /proc/cpuinfo); `None` elsewhere.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

/// Appends metric records (one JSON object per line), fsynced in batches.
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
    /// Lines written so far (including those from before a resume).
    pub lines: u64,
}

impl Metrics {
    /// Opens `metrics.jsonl`, truncated to its first `keep_lines` lines (a resume drops what a
    /// crashed process wrote after its last checkpoint).
    ///
    /// A file with fewer complete records than the checkpoint counted (truncated or damaged
    /// since) is reported, as is a record that is not JSON; the run continues with what is there.
    pub fn open(path: PathBuf, keep_lines: u64) -> Result<Self> {
        let existing = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let kept: String = existing
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .take(keep_lines as usize)
            .collect();
        let lines = kept.matches('\n').count() as u64;
        if lines < keep_lines {
            eprintln!(
                "warning: {}: {lines} complete records where the checkpoint counted {keep_lines}: \
                 the file was truncated or damaged since, {} records are missing",
                path.display(),
                keep_lines - lines
            );
        }
        if let Some(bad) = kept
            .lines()
            .position(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        {
            eprintln!(
                "warning: {}:{}: not a JSON record (the file is damaged); kept as it is",
                path.display(),
                bad + 1
            );
        }
        write_atomic(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { path, file, lines })
    }

    /// Appends one record.
    pub fn record(&mut self, step: u64, stage: &str, tag: &str, value: f64) -> Result<()> {
        let line = serde_json::json!({"step": step, "stage": stage, "tag": tag, "value": value})
            .to_string();
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))?;
        self.lines += 1;
        Ok(())
    }

    /// Forces the records to disk (before a checkpoint names their count).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::arithmetic_differences;
    use serde_json::json;

    fn env(rayon: Option<&str>, cores: u64, cpu: &str) -> serde_json::Value {
        json!({"device": "cpu", "backend": "flex", "cpu": cpu, "threads": cores,
               "rayon_threads": rayon})
    }

    #[test]
    fn the_thread_count_is_rayons_else_the_cores() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            arithmetic_differences(&env(None, 2, "A"), &env(Some("2"), 4, "A")),
            none
        );
        assert_eq!(
            arithmetic_differences(&env(Some("0"), 2, "A"), &env(None, 2, "A")),
            none
        );
        assert_eq!(
            arithmetic_differences(&env(Some("2"), 2, "A"), &env(Some("1"), 2, "B")),
            ["cpu: A → B", "threads: 2 → 1"]
        );
        assert_eq!(
            arithmetic_differences(&env(Some("x"), 8, "A"), &env(None, 2, "A")),
            ["threads: 8 → 2"]
        );
    }
}
