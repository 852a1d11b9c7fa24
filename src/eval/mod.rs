//! Evaluation: PCK on keypoint benchmarks.

pub mod caltech;
pub mod flow;
pub mod keypoints;
pub mod pck;
