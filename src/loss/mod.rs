//! Training objectives: the strong-supervision transformed-grid loss and the weakly-supervised
//! inlier counts.

pub mod grid_loss;
pub mod inlier;

pub use grid_loss::transformed_grid_loss;
pub use inlier::{
    Dilation, InlierConfig, InlierKind, WeakAlignLoss, affine_inlier_score, composed_inlier_score,
    inlier_score, weakalign_loss,
};
