//! The library's error type: every user-reachable failure is a value, never a panic.
//!
//! Variants carry the data a user needs to fix the input: the operation and the shapes for tensor
//! arguments, the file (and line, key) for files. The states of a training run that a script
//! must tell apart (diverged, locked, resume refused) are variants of their own with their own
//! process exit codes ([`Error::exit_code`]).

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `weakalign` because of its input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor argument has the wrong shape.
    #[error("{op}: `{arg}` has shape {got:?}, expected {expected}")]
    Shape {
        /// The operation that rejected the argument, e.g. `affine::grid`.
        op: &'static str,
        /// The argument's name.
        arg: &'static str,
        /// The shape it had.
        got: Vec<usize>,
        /// The shape it should have, with named dimensions, e.g. `[batch, 2, n]`.
        expected: String,
    },
    /// A weights file cannot be read or does not fit the model.
    #[error("weights {path}: {reason}")]
    Weights {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong: unreadable, a tensor with the wrong shape (named, with both shapes),
        /// or tensors the model needs that the file lacks.
        reason: String,
    },
    /// An experiment file or `--set` override is invalid.
    #[error("{}{}{}: {msg}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!(" (key `{k}`)")).unwrap_or_default())]
    Config {
        /// The experiment file.
        file: std::path::PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// The offending key, when known.
        key: Option<String>,
        /// What is wrong.
        msg: String,
    },
    /// A data file (CSV, annotation, flow) is malformed.
    #[error("{}{}: {msg}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Data {
        /// The file.
        file: std::path::PathBuf,
        /// 1-based line, where the file has lines.
        line: Option<usize>,
        /// What is wrong.
        msg: String,
    },
    /// An image cannot be decoded.
    #[error("image {path}: {reason}")]
    Image {
        /// The file.
        path: std::path::PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The path involved.
        path: std::path::PathBuf,
        /// The underlying error (in the message, not repeated as a source).
        cause: std::io::Error,
    },
    /// A scalar argument is outside its valid range.
    #[error("{op}: invalid `{arg}`: {reason}")]
    Argument {
        /// The operation that rejected the argument.
        op: &'static str,
        /// The argument's name.
        arg: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Training diverged: the loss became NaN or infinite. The run is FAILED; its checkpoints
    /// from before the divergence are kept.
    #[error("train: non-finite loss {loss} at step {step} ({stage}); last good checkpoint kept")]
    Diverged {
        /// The step whose loss was not finite (1-based global step).
        step: u64,
        /// The stage it was in.
        stage: &'static str,
        /// The loss value.
        loss: f64,
    },
    /// A run directory is held by another live process.
    #[error("{} is locked {}: wait for it to finish or stop it (it checkpoints on SIGTERM); if no weakalign process is running there (a PID reused after a crash), delete {}", path.display(), holder.as_ref().map_or("(its lock could not be taken)".to_string(), |pid| format!("by running process {pid}")), path.join("LOCK").display())]
    Locked {
        /// The run directory.
        path: std::path::PathBuf,
        /// The process holding it (`PID`, or `PID on HOST` for another cluster node), when known.
        holder: Option<String>,
    },
    /// A run cannot be continued or restarted as asked (it exists and needs `--resume`, or its
    /// configuration changed since the checkpoint).
    #[error("{}: {reason}", path.display())]
    ResumeConflict {
        /// The run directory.
        path: std::path::PathBuf,
        /// What was found and what to do.
        reason: String,
    },
}

/// Process exit codes of the `weakalign` command (also in `weakalign --help`).
pub mod exit_code {
    /// Any error not listed below: bad input, a missing file, an I/O failure.
    pub const ERROR: i32 = 1;
    /// A command line clap rejects (clap's own code).
    pub const USAGE: i32 = 2;
    /// [`super::Error::Diverged`]: the loss became non-finite.
    pub const DIVERGED: i32 = 3;
    /// [`super::Error::Locked`]: another live process holds the run.
    pub const LOCKED: i32 = 4;
    /// [`super::Error::ResumeConflict`]: pass `--resume` or `--allow-config-change`.
    pub const RESUME_CONFLICT: i32 = 5;
    /// The run was interrupted (SIGINT, SIGTERM or SIGHUP) after writing a checkpoint.
    pub const INTERRUPTED: i32 = 130;
}

impl Error {
    /// The process exit code for this error ([`exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Diverged { .. } => exit_code::DIVERGED,
            Error::Locked { .. } => exit_code::LOCKED,
            Error::ResumeConflict { .. } => exit_code::RESUME_CONFLICT,
            _ => exit_code::ERROR,
        }
    }

    /// A [`Error::Data`] at `file:line`.
    pub fn data(
        file: impl Into<std::path::PathBuf>,
        line: Option<usize>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Data {
            file: file.into(),
            line,
            msg: msg.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// One expected dimension: a fixed size, or any size bound to a name (`batch`, `n`, ...).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dim {
    /// Must equal this size.
    Is(usize),
    /// Any size; the name is only used in messages.
    Any(&'static str),
    /// Must equal this size, which came from another argument (named in messages).
    Same(&'static str, usize),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Is(n) => write!(f, "{n}"),
            Dim::Any(name) => write!(f, "{name}"),
            Dim::Same(name, n) => write!(f, "{name}={n}"),
        }
    }
}

/// Checks `got` against `expected`, naming the operation and argument on mismatch.
pub(crate) fn check_shape(
    op: &'static str,
    arg: &'static str,
    got: &[usize],
    expected: &[Dim],
) -> Result<()> {
    let ok = got.len() == expected.len()
        && got.iter().zip(expected).all(|(&g, e)| match *e {
            Dim::Is(n) | Dim::Same(_, n) => g == n,
            Dim::Any(_) => true,
        });
    if ok {
        Ok(())
    } else {
        let names: Vec<String> = expected.iter().map(Dim::to_string).collect();
        Err(Error::Shape {
            op,
            arg,
            got: got.to_vec(),
            expected: format!("[{}]", names.join(", ")),
        })
    }
}

/// Fails with [`Error::Argument`] unless `ok`.
pub(crate) fn check_arg(
    ok: bool,
    op: &'static str,
    arg: &'static str,
    reason: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Argument {
            op,
            arg,
            reason: reason(),
        })
    }
}
