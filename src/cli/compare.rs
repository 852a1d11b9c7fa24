//! `weakalign compare`: test PCK mean ± std over seeds per configuration cell.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::experiment::compare::{cells, runs_at, table};

/// Arguments of `weakalign compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run folders or experiment folders (default: all of `runs/`).
    pub paths: Vec<PathBuf>,
    /// CSV instead of Markdown.
    #[arg(long)]
    pub csv: bool,
}

/// Runs `weakalign compare`.
pub fn run(args: CompareArgs) -> Result<i32> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("runs")]
    } else {
        args.paths
    };
    let runs = runs_at(&paths);
    if runs.is_empty() {
        bail!("no runs found under {:?}", paths);
    }
    print!("{}", table(&cells(&runs), args.csv));
    Ok(0)
}
