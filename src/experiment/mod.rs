//! Experiments: TOML files, the training runner, run directories, TensorBoard logging,
//! checkpoints and sweeps.

pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod resolve;
pub mod run_dir;
pub mod runner;
pub mod tensorboard;
