//! Evaluation metrics.

pub mod pck;
