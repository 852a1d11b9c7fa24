//! `weakalign data`: dataset utilities (pair lists, the embedded dataset, identity baselines).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::choice;
use crate::data::{embedded, pf, weak};
use crate::eval::Benchmark;
use crate::eval::identity::identity_pck;

/// Dataset utilities.
#[derive(Debug, Subcommand)]
pub enum Data {
    /// Write PF-WILLOW's standard 900-pair `test_pairs_pf.csv` from its `.mat` keypoint files.
    WillowCsv {
        /// PF-WILLOW root (holding `PF-dataset/`).
        #[arg(long, default_value = "datasets/pf-willow")]
        root: PathBuf,
        /// Output CSV (default: `<root>/test_pairs_pf.csv`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build same-category train/validation pair lists from a class-folder tree.
    Pairs {
        /// Root with one folder per class (e.g. `datasets/caltech-101/101_ObjectCategories`).
        root: PathBuf,
        /// Output folder for `train_pairs.csv` and `val_pairs.csv`.
        #[arg(long)]
        out: PathBuf,
        /// Training pairs per class (validation gets the same fraction as its images).
        #[arg(long, default_value_t = 40)]
        pairs_per_class: usize,
        /// Fraction of each class's images held out for validation.
        #[arg(long, default_value_t = 0.2)]
        validation: f64,
        /// Split and pairing seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Class folders to skip.
        #[arg(long, default_value = "BACKGROUND_Google")]
        exclude: Vec<String>,
    },
    /// Write the embedded dataset (PNG images, pair and keypoint CSVs) to a folder.
    Embedded {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Generation seed.
        #[arg(long, default_value_t = 2018)]
        seed: u64,
    },
    /// PCK@α of the identity transform on a keypoint benchmark (the baseline every model must beat).
    IdentityPck {
        /// `embedded` or `pf-willow`.
        #[arg(long, default_value = "embedded", value_parser = choice::<Benchmark>)]
        dataset: Benchmark,
        /// PF-WILLOW root.
        #[arg(long, default_value = "datasets/pf-willow")]
        root: PathBuf,
        /// α.
        #[arg(long, default_value_t = 0.1)]
        alpha: f64,
    },
}

/// Runs `weakalign data`.
pub fn run(what: Data) -> Result<i32> {
    match what {
        Data::WillowCsv { root, out } => {
            let pairs = pf::willow_pairs_from_mat(&root)?;
            let out = out.unwrap_or_else(|| root.join("test_pairs_pf.csv"));
            pf::write_willow_csv(&out, &pairs)?;
            println!("wrote {} pairs to {}", pairs.len(), out.display());
        }
        Data::Pairs {
            root,
            out,
            pairs_per_class,
            validation,
            seed,
            exclude,
        } => {
            if !(0.0..1.0).contains(&validation) {
                bail!("--validation must be in [0, 1), got {validation}");
            }
            let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
            let lists = weak::build_pair_lists(&root, pairs_per_class, validation, seed, &exclude)?;
            weak::write_pair_lists(&out, &lists)?;
            println!(
                "wrote {} training and {} validation pairs to {}",
                lists.train.len(),
                lists.validation.len(),
                out.display()
            );
        }
        Data::Embedded { out, seed } => {
            let config = embedded::EmbeddedConfig {
                seed,
                ..Default::default()
            };
            let dataset = embedded::EmbeddedDataset::generate(config);
            embedded::write(&dataset, &out)?;
            println!(
                "wrote {} images and pair lists to {}",
                dataset.instances.len(),
                out.display()
            );
        }
        Data::IdentityPck {
            dataset,
            root,
            alpha,
        } => {
            let baseline = identity_pck(dataset, &root, alpha)?;
            println!(
                "identity PCK@{alpha} on {} ({} pairs): {:.4}",
                dataset.name(),
                baseline.pairs,
                baseline.pck
            );
        }
    }
    Ok(0)
}
