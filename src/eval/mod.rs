//! Evaluation: PCK on keypoint benchmarks.

pub mod flow;
pub mod keypoints;
pub mod pck;
