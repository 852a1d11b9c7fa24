//! Evaluation and inference: metrics as the authors define them, the benchmark protocols built
//! on them, and alignment of a user's own images.

pub mod align;
pub mod benchmark;
pub mod caltech;
pub mod dense;
pub mod flow;
pub mod identity;
pub mod keypoints;
pub mod pck;

pub use benchmark::{Benchmark, EvalOptions, Report, Subject};
