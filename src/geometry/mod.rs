//! Geometric transformations: typed parameters, sampling grids, point maps and warping.
//!
//! # Convention
//!
//! Stated once here; functions in this module only document where they differ.
//!
//! - Points are `(x, y)`: `x` along the width (columns), `y` along the height (rows). Point sets
//!   are `[batch, 2, n]` with row 0 = x and row 1 = y; sampling grids are `[batch, h, w, 2]` with
//!   the last axis `(x, y)`, the layout of `grid_sample`.
//! - Coordinates are normalized to `[-1, 1]` with −1 and +1 at the **centres** of the first and
//!   last pixel (`align_corners = true`, PyTorch ≤ 1.2 semantics; all base grids are
//!   `linspace(-1, 1, n)`).
//! - A θ maps **target** coordinates to **source** coordinates: the warped image is
//!   `I_warp(p) = I_src(T_θ(p))` for `p` on the target grid (backward warping).
//! - Sampling is bilinear with **zero padding** outside `[-1, 1]`.
//! - Pixel coordinates are 1-based as in MATLAB ([`points::normalize_axis`]).
//!
//! ## Reference
//! weakalign: `geotnf/transformation.py` (`GeometricTnf`, `AffineGridGen`, `TpsGridGen`,
//! `ComposedGeometricTnf`), `geotnf/point_tnf.py` (`PointTnf`, `normalize_axis`). See
//! `weakalign-reference.md` §1 and §5.

pub mod affine;
pub mod compose;
pub mod grid;
pub mod points;
pub mod theta;
pub mod tps;
pub mod transform;

pub use compose::{ComposeBorder, Composed};
pub use grid::{identity_grid, identity_points, sample};
pub use theta::{AffineTheta, Theta, TpsTheta};
pub use tps::{Tps, TpsWarp};
pub use transform::{GridFactors, Transform, sampling_grid};

/// `offset_factor` of the weak loss's mask warping, `227/210 ≈ 1.0810`.
///
/// A legacy of the 227-px MatConvNet model (feature-cell centres spanning ±210/227 of the image),
/// kept by the authors' 240-px PyTorch code. weakalign: `model/loss.py` `WeakInlierCount`.
pub const WEAK_LOSS_OFFSET_FACTOR: f64 = 227.0 / 210.0;

/// Mirror-padding factor of synthetic pair generation (weakalign: `SynthPairTnf`, §7.1).
pub const SYNTH_PADDING_FACTOR: f64 = 0.5;

/// Central-crop factor of synthetic pair generation (weakalign: `SynthPairTnf`, §7.1).
pub const SYNTH_CROP_FACTOR: f64 = 9.0 / 16.0;
