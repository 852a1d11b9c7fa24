//! An evaluation's result: JSON (numbers with their protocol) and a Markdown table, written
//! atomically as `<name>.json` and `<name>.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::eval::pck::mean_over_pairs;
use crate::fsutil::write_atomic;

/// A finished evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// File stem: the benchmark's name.
    pub name: String,
    /// Numbers and protocol.
    pub json: serde_json::Value,
    /// The same as a table.
    pub markdown: String,
}

impl Report {
    /// Writes `<dir>/<name>.json` and `<dir>/<name>.md` atomically; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<[PathBuf; 2]> {
        let json = dir.join(format!("{}.json", self.name));
        let md = dir.join(format!("{}.md", self.name));
        let text = serde_json::to_string_pretty(&self.json).expect("JSON values serialize");
        write_atomic(&json, text.as_bytes())?;
        write_atomic(&md, self.markdown.as_bytes())?;
        Ok([json, md])
    }
}

/// Mean per class and overall of per-pair values (pairs without a value are left out), with the
/// number of pairs scored: `{"overall", "per_class", "pairs_scored"}`.
pub fn summarize<'a>(
    values: impl IntoIterator<Item = (&'a str, Option<f64>)>,
) -> serde_json::Value {
    let values: Vec<(&str, Option<f64>)> = values.into_iter().collect();
    let mut classes: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for (class, v) in &values {
        classes.entry(class).or_default().push(*v);
    }
    let per_class: serde_json::Map<String, serde_json::Value> = classes
        .iter()
        .map(|(c, v)| {
            (
                c.to_string(),
                serde_json::json!(mean_over_pairs(v.iter().copied())),
            )
        })
        .collect();
    serde_json::json!({
        "overall": mean_over_pairs(values.iter().map(|v| v.1)),
        "per_class": per_class,
        "pairs_scored": values.iter().filter(|v| v.1.is_some()).count(),
    })
}

/// A table cell: 4 decimals, or `–` for a missing value.
pub fn cell(v: &serde_json::Value) -> String {
    v.as_f64().map_or("–".to_string(), |x| format!("{x:.4}"))
}
