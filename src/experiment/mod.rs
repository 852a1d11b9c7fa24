//! Experiments: TOML files resolved into one typed configuration, the training runner and its
//! parts, run directories, TensorBoard logging, checkpoints, sweeps and comparisons.
//!
//! A run flows through these files in order: [`config`] (parse, `--set`, hash) → [`resolve`]
//! (checked, typed [`resolve::Resolved`]) → [`runner`] (resume policy and the loop), which uses
//! [`stage`] (what each stage trains; [`schedule`] its learning rate), [`sources`] (the batches),
//! [`step`] (one optimisation step), [`logger`] (TensorBoard via [`tensorboard`],
//! `metrics.jsonl`), [`checkpoint`] and [`run_dir`]; [`fork`] starts a run from a sibling's
//! identical strong stages. [`trained`] loads a finished model for
//! `eval` and `align`; [`sweep`] expands and runs `[sweep]` files; [`compare`] tabulates runs;
//! [`agreement`] trains one experiment on a device and on the CPU and compares them.

pub mod agreement;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod fork;
pub mod launcher;
pub mod logger;
pub mod param_ids;
pub mod resolve;
pub mod run_dir;
pub mod runner;
pub mod schedule;
pub mod sources;
pub mod stage;
pub mod step;
pub mod sweep;
pub mod tensorboard;
pub mod trained;
