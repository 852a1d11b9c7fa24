//! The command-line interface: one file per command, each parsing its arguments into typed
//! values (clap), calling the library, and printing. `main.rs` maps errors to exit codes.

pub mod agree;
pub mod align;
pub mod bench;
pub mod compare;
pub mod data;
pub mod devices;
pub mod eval;
pub mod exp;
pub mod import;
pub mod parity;
pub mod runs;

use clap::{Parser, Subcommand};

use crate::error::exit_code;
use crate::experiment::resolve::rule;

/// weakalign: end-to-end weakly-supervised semantic alignment.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit status: 0 success; 1 error (bad input, missing file, I/O); 2 bad command line; \
3 training diverged (non-finite loss); 4 run locked by another live process; \
5 resume refused (pass --resume or --allow-config-change); 130 interrupted after a checkpoint."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment file (every combination of its `[sweep]` axes is one run).
    Exp(exp::ExpArgs),
    /// Benchmark metrics of a checkpoint (affine, affine∘TPS and the identity baseline).
    Eval(eval::EvalArgs),
    /// Align your own images: θ, the warped source, a checkerboard, and the matches figure.
    Align(align::AlignArgs),
    /// List runs with their status (a RUNNING run whose process died shows as CRASHED).
    Runs(runs::RunsArgs),
    /// Compare runs: test PCK mean ± std over seeds per configuration cell.
    Compare(compare::CompareArgs),
    /// Time the two-stage model's forward and weak training step on a device (`make bench-gpu`).
    Bench(bench::BenchArgs),
    /// Check a device against the CPU: every differentiable operation and each backbone's
    /// two-stage model, forward and gradients (`make test-cuda`, `make test-wgpu`).
    Parity(parity::ParityArgs),
    /// Train one experiment on a device and on the CPU from the same seed and compare per-step
    /// losses and the final test PCK (`make test-wgpu`).
    Agree(agree::AgreeArgs),
    /// List the devices this binary can use here (`cpu`, `cuda:N`, `wgpu:N` with its adapter).
    Devices,
    /// Convert pretrained weights into our record format (used by `make weights`).
    Import {
        /// Which weights.
        #[command(subcommand)]
        what: import::Import,
    },
    /// Dataset utilities: pair lists, the embedded dataset, baselines.
    Data {
        /// What to do.
        #[command(subcommand)]
        what: data::Data,
    },
}

/// Runs a parsed command line; returns the process exit code of a command that did not fail
/// (0, or [`exit_code::INTERRUPTED`]).
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Exp(args) => exp::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Align(args) => align::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Agree(args) => agree::run(args),
        Command::Devices => devices::run(),
        Command::Import { what } => import::run(what),
        Command::Data { what } => data::run(what),
    }
}

/// The exit code of a failed command: the library's code for its error
/// ([`crate::Error::exit_code`]), else [`exit_code::ERROR`].
pub fn failure_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<crate::Error>())
        .map_or(exit_code::ERROR, crate::Error::exit_code)
}

/// A clap value parser for a named choice ([`crate::choice`]).
fn choice<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, String> {
    crate::choice::parse(name)
}

/// A clap value parser for a PCK threshold: finite, in (0, 1] (as `eval.alpha` in files).
fn pck_alpha(text: &str) -> Result<f64, String> {
    rule::fraction(text.parse().map_err(|e| format!("{text:?}: {e}"))?)
}

/// A clap value parser for a TPS regularization λ: finite, ≥ 0 (as `eval.tps_lambda` in files).
fn tps_lambda(text: &str) -> Result<f64, String> {
    rule::non_negative(text.parse().map_err(|e| format!("{text:?}: {e}"))?)
}
