//! The `weakalign` command-line tool: parses arguments, runs, prints the error chain, and exits
//! with the code of what happened (`weakalign --help` lists them).

use clap::Parser;

fn main() {
    weakalign::memory::keep_freed_memory();
    weakalign::device::pin_default_to_cpu();
    let cli = weakalign::cli::Cli::parse();
    let code = match weakalign::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            weakalign::cli::failure_code(&e)
        }
    };
    std::process::exit(code);
}
