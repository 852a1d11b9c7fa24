//! The `weakalign` command-line tool: parses arguments, runs, prints the error chain, and exits
//! with the code of what happened (`weakalign --help` lists them).

use clap::Parser;

fn main() {
    // Output piped into a reader that stops early (`weakalign exp F --dry-run | head`): end
    // quietly, as Unix tools do, instead of panicking on the broken pipe (Rust ignores SIGPIPE).
    // SAFETY: the first thing the process does, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
