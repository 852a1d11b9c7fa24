//! Dense correspondences of a two-stage model on images at their own resolution: where every
//! target pixel lands in the source under the identity, θ_aff and θ_aff∘θ_tps.

use burn::tensor::DType;

use crate::backbone::Normalization;
use crate::data::image::RgbImage;
use crate::error::Result;
use crate::geometry::{
    AffineTheta, ComposeBorder, Composed, GridFactors, Theta, Tps, sampling_grid,
};
use crate::model::{TwoStage, TwoStageOutput};

/// The two-stage model's predictions for a pair of raw images (resized and normalized for it),
/// the affine head run `affine_passes` times ([`TwoStage::forward_refined`]; 1 = the paper).
///
/// # Shapes
/// - output: `theta_aff` `[1, 6]`, `theta_tps` `[1, 18]`, correlations `[1, h·w, h, w]`
pub fn predict(
    model: &TwoStage,
    norm: Normalization,
    source: &RgbImage,
    target: &RgbImage,
    affine_passes: usize,
) -> Result<TwoStageOutput> {
    let device = model.device();
    let size = model.image_size;
    model.forward_refined(
        source.network_input(size, norm, &device),
        target.network_input(size, norm, &device),
        affine_passes,
    )
}

/// Normalized source locations `(x, y)` of every target pixel (row-major over the target's own
/// `h × w`) under, in order, the identity, θ_aff and θ_aff∘θ_tps predicted for
/// `(source, target)` with `affine_passes` passes of the affine head; the composition is analytic
/// (the evaluation's convention).
pub fn dense_locations(
    model: &TwoStage,
    norm: Normalization,
    source: &RgbImage,
    target: &RgbImage,
    spline: &Tps,
    affine_passes: usize,
) -> Result<[Vec<(f64, f64)>; 3]> {
    let out = predict(model, norm, source, target, affine_passes)?;
    let device = model.device();
    let (h, w) = (target.height, target.width);
    let identity = AffineTheta::identity(1, &device, DType::F32);
    let composed = Composed {
        affine: &out.theta_aff,
        tps: spline.warp(&out.theta_tps),
    };
    let grids = [
        sampling_grid(&identity, [h, w], GridFactors::default())?,
        sampling_grid(&out.theta_aff, [h, w], GridFactors::default())?,
        composed.grid([h, w], GridFactors::default(), ComposeBorder::Analytic)?,
    ];
    Ok(grids.map(|g| {
        crate::device::read_f64(g)
            .chunks(2)
            .map(|p| (p[0], p[1]))
            .collect()
    }))
}
