//! An experiment file as a list of runs: every combination of its `[sweep]` axes is one cell
//! (named by its configuration hash), resolved once and run in order; cells already completed
//! are skipped by the runner.

use std::path::Path;

use super::config::{expand_sweep, locate};
use super::resolve::{Resolved, resolve};
use super::run_dir::Status;
use super::runner::{RunOptions, RunOutcome, run};
use crate::error::{Error, Result};

/// One run of a sweep.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Its configuration.
    pub resolved: Resolved,
    /// The sweep values that made it (`key=value`), in axis order.
    pub axes: Vec<String>,
}

impl Cell {
    /// The sweep values except the seed: what runs of one comparison cell share.
    pub fn label(&self) -> String {
        self.axes
            .iter()
            .filter(|a| !a.starts_with("seed="))
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads `file` with `overrides` and resolves every cell of its sweep (a file without `[sweep]`
/// is one cell). Every error surfaces here, before anything runs.
pub fn cells(file: &Path, overrides: &[String]) -> Result<Vec<Cell>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    expand_sweep(file, &text, overrides)?
        .into_iter()
        .map(|(exp, axes)| {
            Ok(Cell {
                resolved: resolve(&exp, file).map_err(|e| locate(e, &text, overrides, &axes))?,
                axes,
            })
        })
        .collect()
}

/// What happens to the cells, as it happens.
pub enum Event<'a> {
    /// Cell `index` (0-based) of `total` starts.
    Start {
        /// Position.
        index: usize,
        /// Cells in the sweep.
        total: usize,
        /// The cell.
        cell: &'a Cell,
    },
    /// A cell ended (completed, skipped as already complete, or interrupted).
    Finished {
        /// The cell.
        cell: &'a Cell,
        /// Its outcome.
        outcome: &'a RunOutcome,
    },
    /// A cell failed; the sweep goes on with the next one.
    Failed {
        /// The cell.
        cell: &'a Cell,
        /// Why.
        error: &'a Error,
    },
}

/// How a sweep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Cells in the sweep.
    pub total: usize,
    /// Cells that failed.
    pub failed: usize,
    /// A cell was interrupted: the sweep stopped there.
    pub interrupted: bool,
}

/// Runs the cells in order with `opts` (each with its own label). A single cell's error is
/// returned as is; in a sweep of several, a failed cell is reported and the next one runs.
pub fn run_cells(
    cells: &[Cell],
    opts: &RunOptions,
    report: &mut dyn FnMut(Event<'_>),
) -> Result<SweepOutcome> {
    let mut result = SweepOutcome {
        total: cells.len(),
        failed: 0,
        interrupted: false,
    };
    for (index, cell) in cells.iter().enumerate() {
        report(Event::Start {
            index,
            total: cells.len(),
            cell,
        });
        let options = RunOptions {
            cell_label: cell.label(),
            ..opts.clone()
        };
        match run(&cell.resolved, &options) {
            Ok(outcome) => {
                report(Event::Finished {
                    cell,
                    outcome: &outcome,
                });
                if outcome.status == Status::Interrupted {
                    result.interrupted = true;
                    break;
                }
            }
            Err(error) if cells.len() > 1 => {
                report(Event::Failed {
                    cell,
                    error: &error,
                });
                result.failed += 1;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(result)
}
