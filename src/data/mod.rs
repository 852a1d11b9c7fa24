//! Data: images and their preprocessing, synthetic and weak training pairs, benchmark readers,
//! the embedded default dataset, and background batch loading.

pub mod caltech;
pub mod csv;
pub mod embedded;
pub mod ground_truth;
pub mod image;
pub mod layout;
pub mod loader;
pub mod pf;
pub mod points;
pub mod rng;
pub mod synth;
pub mod tss;
pub mod weak;
