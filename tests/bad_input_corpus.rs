//! The bad-input corpus (`tests/bad_inputs/`, cases in `cases.toml`): configurations, `--set`
//! strings, images, point CSVs, PF-WILLOW `.mat` files, TSS `.flo` files, PF-PASCAL pair lists and
//! damaged checkpoints. Each case must exit with its code and a message naming what is wrong,
//! never panic, and write or change nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sha2::Digest;

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    args: Vec<String>,
    #[serde(default = "error_exit")]
    exit: i32,
    message: Vec<String>,
}

fn error_exit() -> i32 {
    1
}

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (relative path → SHA-256), empty for a missing folder.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            let bytes = if p.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            out.insert(rel, sha2::Sha256::digest(&bytes).to_vec());
        }
    }
    out
}

/// A checkpoint of the smoke experiment, and a small valid image.
fn good_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new(env!("CARGO_BIN_EXE_weakalign"))
        .arg("exp")
        .arg(project().join("experiments/smoke.toml"))
        .arg("--root")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    let image = dir.join("good.png");
    ::image::RgbImage::from_fn(32, 24, |x, y| {
        ::image::Rgb([x as u8 * 8, y as u8 * 10, 128])
    })
    .save(&image)
    .unwrap();
    (run, image)
}

#[test]
fn bad_input_corpus_is_refused_and_nothing_is_written() {
    let corpus = project().join("tests/bad_inputs");
    let cases: Cases =
        toml::from_str(&std::fs::read_to_string(corpus.join("cases.toml")).unwrap()).unwrap();
    let fixtures = tempfile::tempdir().unwrap();
    let (checkpoint, image) = good_inputs(fixtures.path());
    let before = (snapshot(&corpus), snapshot(&checkpoint));
    let mut used = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for case in &cases.case {
        let root = tempfile::tempdir().unwrap();
        let out_dir = root.path().join("out");
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| {
                if let Some(rest) = a.strip_prefix("{corpus}/") {
                    used.insert(PathBuf::from(rest));
                }
                a.replace("{corpus}", corpus.to_str().unwrap())
                    .replace("{root}", root.path().to_str().unwrap())
                    .replace("{out}", out_dir.to_str().unwrap())
                    .replace("{checkpoint}", checkpoint.to_str().unwrap())
                    .replace("{image}", image.to_str().unwrap())
                    .replace(
                        "{smoke}",
                        project().join("experiments/smoke.toml").to_str().unwrap(),
                    )
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_weakalign"))
            .args(&args)
            .current_dir(root.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut wrong = Vec::new();
        if out.status.code() != Some(case.exit) {
            wrong.push(format!(
                "exit {:?}, expected {}",
                out.status.code(),
                case.exit
            ));
        }
        if text.contains("panicked") {
            wrong.push("panicked".into());
        }
        for m in &case.message {
            if !text.contains(m.as_str()) {
                wrong.push(format!("message lacks {m:?}"));
            }
        }
        if !snapshot(root.path()).is_empty() {
            wrong.push(format!("wrote {:?}", snapshot(root.path()).keys()));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n  {}",
                case.name,
                wrong.join("; "),
                text.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        (snapshot(&corpus), snapshot(&checkpoint)),
        before,
        "the corpus and the good checkpoint must be unchanged"
    );
    // Every file of the corpus is used by some case.
    let unused: Vec<PathBuf> = before
        .0
        .keys()
        .filter(|f| corpus.join(f).is_file() && !f.ends_with("cases.toml"))
        .filter(|f| !used.iter().any(|u| f.starts_with(u)))
        .cloned()
        .collect();
    assert!(unused.is_empty(), "corpus files no case uses: {unused:?}");
    assert!(cases.case.len() >= 40, "{} cases", cases.case.len());
}
