//! The `weakalign` command-line tool: parses arguments, runs, prints the error chain.

use clap::Parser;

fn main() {
    let cli = weakalign::cli::Cli::parse();
    if let Err(e) = weakalign::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
