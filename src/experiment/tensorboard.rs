//! A TensorBoard event-file writer: prost messages in TFRecord framing (masked CRC-32C).
//!
//! Written by hand rather than with `tensorboard-rs`, whose image summaries swap dimensions and
//! which has no HParams support. Supports scalars, PNG images, text and the HParams plugin
//! (experiment, session start and session end), which is what TensorBoard's HParams table
//! needs. On a resume, [`forget_after`] removes from the existing files the events a crashed
//! process wrote after its last checkpoint (the resumed run logs those steps again), so no reader
//! sees a step twice; a `SessionLog::START` at the resume step marks the restart as well (what
//! TensorBoard itself purges on).
//!
//! Protos: `tensorflow/core/util/event.proto`, `framework/summary.proto`,
//! `tensorboard/plugins/hparams/{api,plugin_data}.proto` (field numbers as upstream).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5, 7")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

#[derive(Clone, PartialEq, Message)]
struct SessionLog {
    #[prost(int32, tag = "1")]
    status: i32,
}

#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
    #[prost(oneof = "ValueKind", tags = "2, 4, 8")]
    value: Option<ValueKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ValueKind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "4")]
    Image(Image),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

#[derive(Clone, PartialEq, Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    content: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct Image {
    #[prost(int32, tag = "1")]
    height: i32,
    #[prost(int32, tag = "2")]
    width: i32,
    #[prost(int32, tag = "3")]
    colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    encoded_image_string: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShape>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    string_val: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShape {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<Dim>,
}

#[derive(Clone, PartialEq, Message)]
struct Dim {
    #[prost(int64, tag = "1")]
    size: i64,
}

// --- HParams plugin (tensorboard/plugins/hparams) ---

#[derive(Clone, PartialEq, Message)]
struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    version: i32,
    #[prost(oneof = "HpData", tags = "2, 3, 4")]
    data: Option<HpData>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum HpData {
    #[prost(message, tag = "2")]
    Experiment(HpExperiment),
    #[prost(message, tag = "3")]
    SessionStartInfo(SessionStartInfo),
    #[prost(message, tag = "4")]
    SessionEndInfo(SessionEndInfo),
}

#[derive(Clone, PartialEq, Message)]
struct HpExperiment {
    #[prost(string, tag = "6")]
    name: String,
    #[prost(message, repeated, tag = "4")]
    hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    metric_infos: Vec<MetricInfo>,
}

#[derive(Clone, PartialEq, Message)]
struct HParamInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "4")]
    r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    name: Option<MetricName>,
}

#[derive(Clone, PartialEq, Message)]
struct MetricName {
    #[prost(string, tag = "1")]
    group: String,
    #[prost(string, tag = "2")]
    tag: String,
}

#[derive(Clone, PartialEq, Message)]
struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    hparams: std::collections::BTreeMap<String, ProtoValue>,
    #[prost(string, tag = "4")]
    group_name: String,
    #[prost(double, tag = "5")]
    start_time_secs: f64,
}

#[derive(Clone, PartialEq, Message)]
struct SessionEndInfo {
    #[prost(int32, tag = "1")]
    status: i32,
    #[prost(double, tag = "2")]
    end_time_secs: f64,
}

/// `google.protobuf.Value` (the subset HParams uses).
#[derive(Clone, PartialEq, Message)]
struct ProtoValue {
    #[prost(oneof = "ProtoKind", tags = "2, 3, 4")]
    kind: Option<ProtoKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ProtoKind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    Str(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
}

/// An HParam value.
#[derive(Clone, Debug, PartialEq)]
pub enum HParam {
    /// Numeric.
    Number(f64),
    /// Text.
    Text(String),
    /// Flag.
    Bool(bool),
}

/// How a session ended (HParams `Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// Finished.
    Success = 1,
    /// Failed.
    Failure = 2,
    /// Still running or interrupted.
    Running = 3,
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The records of a TFRecord file, up to the first torn or corrupt one (a write cut short).
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 12 {
        let (len_bytes, after) = rest.split_at(8);
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let crc = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
        if crc(&after[..4]) != masked_crc(len_bytes) || after.len() < 4 + len + 4 {
            break;
        }
        let data = &after[4..4 + len];
        if crc(&after[4 + len..8 + len]) != masked_crc(data) {
            break;
        }
        out.push(&rest[..16 + len]);
        rest = &after[8 + len..];
    }
    out
}

/// Every summary value in the event files of `dir` as `(tag, step)`, files in name order, as a
/// reader that does not purge on `SessionLog::START` sees them.
pub fn summary_steps(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        for r in records(&bytes) {
            let event = Event::decode(&r[12..r.len() - 4])
                .map_err(|e| Error::data(&path, None, format!("undecodable event: {e}")))?;
            if let Some(What::Summary(sum)) = event.what {
                out.extend(
                    sum.value
                        .into_iter()
                        .map(|v| (v.tag, event.step.max(0) as u64)),
                );
            }
        }
    }
    Ok(out)
}

/// The TensorBoard event files (`events.out.tfevents.*`) in `dir`; none where it does not exist.
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect()
}

/// Before a writer (re)starts at `step` in `dir`: rewrites the event files already there without
/// the events after `step` (what a crashed process logged past its last checkpoint, which the
/// resumed run logs again) and without a torn final record. With `restated`, the events at `step`
/// and the HParams summaries go too (a new writer states them again: configuration text,
/// hyperparameters). So no reader shows a step twice after a resume, not only TensorBoard's,
/// which purges on `SessionLog::START`. Returns how many events were removed.
pub fn forget_after(dir: &Path, step: u64, restated: bool) -> Result<usize> {
    let mut removed = 0;
    for path in event_files(dir) {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let all = records(&bytes);
        let kept: Vec<&[u8]> = all
            .iter()
            .copied()
            .filter(|r| {
                let Ok(event) = Event::decode(&r[12..r.len() - 4]) else {
                    return false;
                };
                let s = event.step.max(0) as u64;
                let hparams = matches!(&event.what, Some(What::Summary(sum))
                    if sum.value.iter().any(|v| v.tag.starts_with("_hparams_/")));
                match event.what {
                    Some(What::FileVersion(_)) => true,
                    _ if restated => s < step && !hparams,
                    _ => s <= step,
                }
            })
            .collect();
        let whole: usize = all.iter().map(|r| r.len()).sum();
        if kept.len() < all.len() || whole < bytes.len() {
            removed += all.len() - kept.len();
            crate::fsutil::write_atomic(&path, &kept.concat())?;
        }
    }
    Ok(removed)
}

/// One event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<time>.weakalign.<pid>.<n>` with its `file_version` event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut n = 0;
        let path = loop {
            let p = dir.join(format!(
                "events.out.tfevents.{:010}.weakalign.{}.{n}",
                now() as u64,
                std::process::id()
            ));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        w.event(0, What::FileVersion("brain.Event:2".into()))?;
        Ok(w)
    }

    fn event(&mut self, step: u64, what: What) -> Result<()> {
        let bytes = Event {
            wall_time: now(),
            step: step as i64,
            what: Some(what),
        }
        .encode_to_vec();
        let len = (bytes.len() as u64).to_le_bytes();
        let io = |e| Error::io(&self.path, e);
        let mut record = Vec::with_capacity(bytes.len() + 16);
        record.extend(len);
        record.extend(masked_crc(&len).to_le_bytes());
        record.extend(&bytes);
        record.extend(masked_crc(&bytes).to_le_bytes());
        self.out.write_all(&record).map_err(io)
    }

    fn summary(&mut self, step: u64, value: SummaryValue) -> Result<()> {
        self.event(step, What::Summary(Summary { value: vec![value] }))
    }

    /// A scalar.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        self.summary(
            step,
            SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(ValueKind::SimpleValue(value as f32)),
            },
        )
    }

    /// An RGB image (`height × width × 3` bytes), stored as PNG.
    pub fn image(
        &mut self,
        tag: &str,
        step: u64,
        height: usize,
        width: usize,
        rgb: &[u8],
    ) -> Result<()> {
        let mut png = Vec::new();
        image::RgbImage::from_raw(width as u32, height as u32, rgb.to_vec())
            .expect("rgb buffer matches its size")
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let img = Image {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png,
        };
        self.summary(
            step,
            SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(ValueKind::Image(img)),
            },
        )
    }

    /// Text (Markdown), for TensorBoard's text plugin.
    pub fn text(&mut self, tag: &str, step: u64, text: &str) -> Result<()> {
        let tensor = TensorProto {
            dtype: 7, // DT_STRING
            tensor_shape: Some(TensorShape {
                dim: vec![Dim { size: 1 }],
            }),
            string_val: vec![text.as_bytes().to_vec()],
        };
        let metadata = SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: "text".into(),
                content: Vec::new(),
            }),
        };
        self.summary(
            step,
            SummaryValue {
                tag: tag.into(),
                metadata: Some(metadata),
                value: Some(ValueKind::Tensor(tensor)),
            },
        )
    }

    fn hparams(&mut self, tag: &str, data: HpData) -> Result<()> {
        let content = HParamsPluginData {
            version: 0,
            data: Some(data),
        }
        .encode_to_vec();
        let metadata = SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: "hparams".into(),
                content,
            }),
        };
        let tensor = TensorProto {
            dtype: 7,
            tensor_shape: Some(TensorShape { dim: Vec::new() }),
            string_val: vec![Vec::new()],
        };
        self.summary(
            0,
            SummaryValue {
                tag: tag.into(),
                metadata: Some(metadata),
                value: Some(ValueKind::Tensor(tensor)),
            },
        )
    }

    /// The HParams experiment: which hyperparameters and metrics the table shows.
    pub fn hparams_experiment(
        &mut self,
        names: &[(String, HParam)],
        metrics: &[&str],
    ) -> Result<()> {
        let hparam_infos = names
            .iter()
            .map(|(n, v)| HParamInfo {
                name: n.clone(),
                r#type: match v {
                    HParam::Text(_) => 1,
                    HParam::Bool(_) => 2,
                    HParam::Number(_) => 3,
                },
            })
            .collect();
        let metric_infos = metrics
            .iter()
            .map(|m| MetricInfo {
                name: Some(MetricName {
                    group: String::new(),
                    tag: m.to_string(),
                }),
            })
            .collect();
        self.hparams(
            "_hparams_/experiment",
            HpData::Experiment(HpExperiment {
                name: String::new(),
                hparam_infos,
                metric_infos,
            }),
        )
    }

    /// A session start with its hyperparameter values, grouped by `group` (the config hash).
    pub fn hparams_session_start(
        &mut self,
        values: &[(String, HParam)],
        group: &str,
    ) -> Result<()> {
        let hparams = values
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    HParam::Number(x) => ProtoKind::Number(*x),
                    HParam::Text(s) => ProtoKind::Str(s.clone()),
                    HParam::Bool(b) => ProtoKind::Bool(*b),
                };
                (k.clone(), ProtoValue { kind: Some(kind) })
            })
            .collect();
        let info = SessionStartInfo {
            hparams,
            group_name: group.into(),
            start_time_secs: now(),
        };
        self.hparams(
            "_hparams_/session_start_info",
            HpData::SessionStartInfo(info),
        )
    }

    /// The session end.
    pub fn hparams_session_end(&mut self, status: SessionStatus) -> Result<()> {
        let info = SessionEndInfo {
            status: status as i32,
            end_time_secs: now(),
        };
        self.hparams("_hparams_/session_end_info", HpData::SessionEndInfo(info))
    }

    /// Marks a (re)start at `step`: TensorBoard discards events after it from earlier writers.
    pub fn session_start(&mut self, step: u64) -> Result<()> {
        self.event(step, What::SessionLog(SessionLog { status: 1 }))
    }

    /// Flushes to disk.
    pub fn flush(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.out
            .flush()
            .and_then(|_| self.out.get_ref().sync_data())
            .map_err(|e| Error::io(path, e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}
