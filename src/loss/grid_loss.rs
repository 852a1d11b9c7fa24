//! The transformed-grid loss of strong supervision (CNNGeometric).
//!
//! `loss = mean over batch and points of ‖T_θ̂(p) − T_θgt(p)‖²` on a 20×20 grid of points
//! `linspace(-1, 1, 20)²`.
//!
//! ## Reference
//! weakalign: `model/loss.py` `TransformedGridLoss` (weakalign-reference §6).

use burn::tensor::Tensor;

use crate::error::{Result, check_arg};
use crate::geometry::{Transform, identity_points};

/// Points per side of the loss grid (weakalign: `TransformedGridLoss(grid_size=20)`).
pub const GRID_LOSS_SIZE: usize = 20;

/// Mean squared distance between the predicted and ground-truth images of the 20×20 grid.
///
/// Both transforms are of the same type, so an affine prediction cannot be scored against a TPS
/// ground truth.
///
/// # Shapes
/// - `predicted`, `ground_truth`: batch `B`
/// - output: `[1]`
pub fn transformed_grid_loss<T: Transform>(predicted: &T, ground_truth: &T) -> Result<Tensor<1>> {
    check_arg(
        predicted.batch() == ground_truth.batch(),
        "transformed_grid_loss",
        "ground_truth",
        || {
            format!(
                "batch {} != predicted batch {}",
                ground_truth.batch(),
                predicted.batch()
            )
        },
    )?;
    let (device, dtype) = predicted.tensor_options();
    let points = identity_points([GRID_LOSS_SIZE, GRID_LOSS_SIZE], &device, dtype);
    let diff = predicted.map_points(points.clone())? - ground_truth.map_points(points)?; // [B, 2, N]
    Ok(diff.square().sum_dim(1).mean()) // [1]
}
