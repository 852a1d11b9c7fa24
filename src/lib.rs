//! # weakalign
//!
//! End-to-end weakly-supervised semantic alignment (Rocco, Arandjelović, Sivic, CVPR 2018) on
//! [burn](https://burn.dev).
//!
//! Two images of objects of the same category go through a siamese CNN (the *backbone*); a
//! normalized [`correlation`] compares every pair of feature locations; a regression CNN predicts
//! an affine θ and then a thin-plate-spline θ (the [`geometry`]); and training needs only image
//! pairs: the [`loss`] is a differentiable "soft inlier count", a RANSAC-like score read off the
//! correlation through the predicted warp.
//!
//! Modules, the pipeline first in data-flow order, then what drives it:
//! - [`backbone`]: the siamese feature extractors (VGG-16, ResNet-101, EfficientNet-Lite0).
//! - [`correlation`]: feature L2 normalization, the correlation tensor `[B, h·w, h, w]` and its
//!   normalization.
//! - [`regression`]: the regression head, correlation → typed θ.
//! - [`model`]: the single-stage and two-stage (affine → TPS) models and their configuration.
//! - [`geometry`]: typed θ ([`geometry::AffineTheta`], [`geometry::TpsTheta`]), sampling grids,
//!   point maps, bilinear warping. Read its `# Convention` block first.
//! - [`loss`]: the strong-supervision transformed-grid loss and the weak inlier counts.
//! - [`data`]: images, synthetic and weak pairs, benchmark readers, the embedded dataset, loading.
//! - [`eval`]: metrics, benchmark protocols and reports, alignment of your own images.
//! - [`experiment`]: configuration, the training runner and its parts, runs, checkpoints, sweeps.
//! - [`cli`]: the `weakalign` command, one file per subcommand.
//! - [`weights`]: weight files: our records, torchvision and official checkpoints, ImageNet.
//! - [`device`]: the backends (CPU, CUDA) and the user's choice among them.
//! - [`bench`](mod@bench): speed of the model on a device (`make bench`, `weakalign bench`).
//! - [`parity`]: a device's results against the CPU's, op by op (`weakalign parity`).
//! - [`error`]: the error type and the process exit codes.
//! - [`choice`]: names of user choices (serde names, shared by files and the command line).
//! - [`fsutil`]: atomic file writes.
//!
//! Semantics follow the authors' PyTorch code (align_corners = true, θ maps target → source,
//! correlation index `k = x·h + y`); deliberate deviations are options and say so where they are
//! defined.

pub mod backbone;
pub mod bench;
pub mod choice;
pub mod cli;
pub mod correlation;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod fsutil;
pub mod geometry;
pub mod loss;
pub mod memory;
pub mod model;
pub mod parity;
pub mod regression;
pub mod weights;

pub use error::{Error, Result};
