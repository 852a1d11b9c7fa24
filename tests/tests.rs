//! The integration-test binary (one binary: each extra one re-links burn).

// Shared backends, builders, finite-difference gradient checks and approximate asserts.
mod common;

// Geometry invariants: identity transforms, TPS interpolation, conventions.
mod geometry;

// Correlation layout and normalization.
mod correlation;

// Inlier counts: gather form vs the dense definition, hard count, identity score.
mod loss;

// Autodiff vs central finite differences (f64) for every differentiable operation (proptest).
mod grad;

// The backbones' convolution kernels against burn's and finite differences.
mod conv;

// Max pooling against burn's and finite differences.
mod pool;

// Golden values from PyTorch (tests/golden/README.md says how they were made).
mod golden;

// Bad input gives errors that name the shapes, never panics.
mod bad_input;

// The bad-input corpus (tests/bad_inputs/): exit code, message, nothing written.
mod bad_input_corpus;

// Backbones, heads and models against PyTorch; weight import and records.
mod models;

// Data: readers, synthetic pairs, the embedded dataset, the loader.
mod data;

// Experiments: configs, runner, resume, TensorBoard, checkpoints.
mod experiments;

// Sweeps through a real Slurm (tools/slurm_local.sh): job arrays, requeue, resubmission.
mod slurm;
