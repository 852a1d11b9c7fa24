//! Evaluation: PCK on keypoint benchmarks.

pub mod keypoints;
pub mod pck;
