//! Autodiff gradients vs central finite differences, in f64 on flex + autodiff (proptest).
//!
//! Tolerances: `common::GRAD_ATOL` = 1e-6 absolute plus `common::GRAD_RTOL` = 1e-5 relative,
//! with step `common::FD_STEP` = 1e-6. Bilinear sampling is piecewise linear; random inputs hit a
//! kink within 1e-6 with negligible probability. Default case counts are modest for CI;
//! `make test-grad` runs 256 cases each.

use burn::tensor::Tensor;
use proptest::prelude::*;
use weakalign::correlation::{FeatureCorrelation, feature_l2_norm};
use weakalign::geometry::points::{to_normalized, to_pixels};
use weakalign::geometry::{
    AffineTheta, ComposeBorder, Composed, GridFactors, Theta, Tps, TpsTheta, Transform, sample,
    sampling_grid,
};
use weakalign::loss::{
    Dilation, InlierConfig, InlierKind, affine_inlier_score, composed_inlier_score, inlier_score,
    transformed_grid_loss, weakalign_loss,
};

use crate::common::{cases, f64_device, gradcheck, tensor};

fn vals(n: usize, range: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-range..range, n)
}

/// An affine θ near the identity.
fn affine_near_identity(batch: usize) -> impl Strategy<Value = Vec<f64>> {
    vals(6 * batch, 0.25).prop_map(move |d| {
        (0..6 * batch)
            .map(|i| AffineTheta::IDENTITY[i % 6] + d[i])
            .collect()
    })
}

/// A TPS θ near the identity.
fn tps_near_identity(batch: usize) -> impl Strategy<Value = Vec<f64>> {
    vals(18 * batch, 0.2).prop_map(move |d| {
        (0..18 * batch)
            .map(|i| TpsTheta::IDENTITY[i % 18] + d[i])
            .collect()
    })
}

fn affine(t: Tensor<2>) -> AffineTheta {
    AffineTheta::new(t).unwrap()
}

fn tps_theta(t: Tensor<2>) -> TpsTheta {
    TpsTheta::new(t).unwrap()
}

fn fixed<const D: usize>(v: &[f64], shape: [usize; D]) -> Tensor<D> {
    tensor(v, shape, f64_device())
}

/// Non-negative matches in the correlation layout, `[batch, h·w, h, w]`.
fn matches_strategy(batch: usize, h: usize, w: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.0..1.0f64, batch * h * w * h * w)
}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn grad_warp_wrt_image(img in vals(2 * 2 * 4 * 5, 1.0), grid in vals(2 * 3 * 4 * 2, 1.2)) {
        gradcheck("warp/image", &img, [2, 2, 4, 5], |x| sample(x, fixed(&grid, [2, 3, 4, 2])).unwrap());
    }

    #[test]
    fn grad_warp_wrt_grid(img in vals(2 * 2 * 4 * 5, 1.0), grid in vals(2 * 3 * 4 * 2, 1.2)) {
        gradcheck("warp/grid", &grid, [2, 3, 4, 2], |g| sample(fixed(&img, [2, 2, 4, 5]), g).unwrap());
    }

    #[test]
    fn grad_affine_grid_wrt_theta(theta in affine_near_identity(2), o in 0.8..1.3f64, pc in 0.2..1.0f64) {
        let factors = GridFactors { offset: o, padding_crop: pc };
        gradcheck("affine grid", &theta, [2, 6], |t| sampling_grid(&affine(t), [4, 5], factors).unwrap());
    }

    #[test]
    fn grad_tps_grid_wrt_theta(theta in tps_near_identity(2), lambda in prop::sample::select(vec![0.0, 0.2]), o in 0.9..1.2f64) {
        let tps = Tps::new(lambda).unwrap();
        gradcheck("tps grid", &theta, [2, 18], |t| {
            sampling_grid(&tps.warp(&tps_theta(t)), [4, 5], GridFactors::offset(o)).unwrap()
        });
    }

    #[test]
    fn grad_affine_points(theta in affine_near_identity(2), pts in vals(2 * 2 * 7, 1.5)) {
        gradcheck("affine points/θ", &theta, [2, 6], |t| affine(t).map_points(fixed(&pts, [2, 2, 7])).unwrap());
        gradcheck("affine points/p", &pts, [2, 2, 7], |p| affine(fixed(&theta, [2, 6])).map_points(p).unwrap());
    }

    #[test]
    fn grad_affine_compose(outer in affine_near_identity(2), inner in affine_near_identity(2)) {
        gradcheck("affine compose/outer", &outer, [2, 6], |t| affine(t).compose(&affine(fixed(&inner, [2, 6]))).unwrap().into_tensor());
        gradcheck("affine compose/inner", &inner, [2, 6], |t| affine(fixed(&outer, [2, 6])).compose(&affine(t)).unwrap().into_tensor());
    }

    #[test]
    fn grad_tps_points(theta in tps_near_identity(2), pts in vals(2 * 2 * 7, 1.5), lambda in prop::sample::select(vec![0.0, 0.2])) {
        let tps = Tps::new(lambda).unwrap();
        gradcheck("tps points/θ", &theta, [2, 18], |t| tps.warp(&tps_theta(t)).map_points(fixed(&pts, [2, 2, 7])).unwrap());
        gradcheck("tps points/p", &pts, [2, 2, 7], |p| tps.warp(&tps_theta(fixed(&theta, [2, 18]))).map_points(p).unwrap());
    }

    #[test]
    fn grad_composed_points_and_grids(a in affine_near_identity(1), q in tps_near_identity(1), pts in vals(2 * 5, 1.2)) {
        let tps = Tps::new(0.2).unwrap();
        let f = GridFactors::offset(227.0 / 210.0);
        let (a_fixed, q_fixed) = (affine(fixed(&a, [1, 6])), tps_theta(fixed(&q, [1, 18])));
        gradcheck("composed points/θ_aff", &a, [1, 6], |t| {
            let th = affine(t);
            Composed { affine: &th, tps: tps.warp(&q_fixed) }.map_points(fixed(&pts, [1, 2, 5])).unwrap()
        });
        gradcheck("composed points/θ_tps", &q, [1, 18], |t| {
            let th = tps_theta(t);
            Composed { affine: &a_fixed, tps: tps.warp(&th) }.map_points(fixed(&pts, [1, 2, 5])).unwrap()
        });
        for border in [ComposeBorder::Analytic, ComposeBorder::Reference] {
            gradcheck("composed grid/θ_aff", &a, [1, 6], |t| {
                let th = affine(t);
                // Reference mode writes 1e10 at out-of-range cells: compare the bounded part.
                Composed { affine: &th, tps: tps.warp(&q_fixed) }.grid([5, 6], f, border).unwrap().clamp(-3.0, 3.0)
            });
            gradcheck("composed grid/θ_tps", &q, [1, 18], |t| {
                let th = tps_theta(t);
                Composed { affine: &a_fixed, tps: tps.warp(&th) }.grid([5, 6], f, border).unwrap().clamp(-3.0, 3.0)
            });
        }
    }

    #[test]
    fn grad_pixel_conversions(px in vals(2 * 2 * 3, 100.0)) {
        let sizes = [(240, 320), (17, 9)];
        gradcheck("to_normalized", &px, [2, 2, 3], |p| to_normalized(p, &sizes).unwrap());
        gradcheck("to_pixels", &px, [2, 2, 3], |p| to_pixels(p, &sizes).unwrap());
    }

    #[test]
    fn grad_feature_l2_norm(f in vals(2 * 3 * 2 * 3, 1.0), weights in vals(2 * 3 * 2 * 3, 1.0)) {
        // A weighted sum so that the gradient is not trivially zero (Σ of a unit vector's entries
        // still varies, but weights exercise every output).
        gradcheck("l2 norm", &f, [2, 3, 2, 3], |x| feature_l2_norm(x) * fixed(&weights, [2, 3, 2, 3]));
    }

    #[test]
    fn grad_correlation(fa in vals(2 * 3 * 3 * 2, 1.0), fb in vals(2 * 3 * 3 * 2, 1.0), weights in vals(2 * 6 * 3 * 2, 1.0), normalize in any::<bool>()) {
        let layer = FeatureCorrelation { normalize };
        let wt = || fixed(&weights, [2, 6, 3, 2]);
        gradcheck("correlation/source", &fa, [2, 3, 3, 2], |x| layer.forward(x, fixed(&fb, [2, 3, 3, 2])).unwrap() * wt());
        gradcheck("correlation/target", &fb, [2, 3, 3, 2], |x| layer.forward(fixed(&fa, [2, 3, 3, 2]), x).unwrap() * wt());
    }

    #[test]
    fn grad_soft_inlier_wrt_theta(theta in affine_near_identity(2), m in matches_strategy(2, 4, 3),
                                  dilation in prop::sample::select(vec![Dilation::None, Dilation::Cross, Dilation::Square]),
                                  normalize in any::<bool>()) {
        let config = InlierConfig { dilation, normalize, ..InlierConfig::default() };
        gradcheck("soft inlier/θ_aff", &theta, [2, 6], |t| {
            affine_inlier_score(&affine(t), fixed(&m, [2, 12, 4, 3]), &config).unwrap()
        });
    }

    #[test]
    fn grad_soft_inlier_wrt_matches(theta in affine_near_identity(1), m in matches_strategy(1, 4, 3),
                                    dilation in prop::sample::select(vec![Dilation::None, Dilation::Cross]),
                                    normalize in any::<bool>()) {
        let config = InlierConfig { dilation, normalize, ..InlierConfig::default() };
        let th = affine(fixed(&theta, [1, 6]));
        gradcheck("soft inlier/matches", &m, [1, 12, 4, 3], |x| affine_inlier_score(&th, x, &config).unwrap());
    }

    #[test]
    fn grad_composed_inlier(a in affine_near_identity(1), q in tps_near_identity(1), m in matches_strategy(1, 4, 4),
                            border in prop::sample::select(vec![ComposeBorder::Reference, ComposeBorder::Analytic])) {
        let tps = Tps::new(0.2).unwrap();
        let config = InlierConfig { compose_border: border, ..InlierConfig::default() };
        let (a_fixed, q_fixed) = (affine(fixed(&a, [1, 6])), tps_theta(fixed(&q, [1, 18])));
        let mt = || fixed(&m, [1, 16, 4, 4]);
        gradcheck("composed inlier/θ_aff", &a, [1, 6], |t| {
            let th = affine(t);
            composed_inlier_score(&Composed { affine: &th, tps: tps.warp(&q_fixed) }, mt(), &config).unwrap()
        });
        gradcheck("composed inlier/θ_tps", &q, [1, 18], |t| {
            let th = tps_theta(t);
            composed_inlier_score(&Composed { affine: &a_fixed, tps: tps.warp(&th) }, mt(), &config).unwrap()
        });
        gradcheck("composed inlier/matches", &m, [1, 16, 4, 4], |x| {
            composed_inlier_score(&Composed { affine: &a_fixed, tps: tps.warp(&q_fixed) }, x, &config).unwrap()
        });
    }

    #[test]
    fn grad_hard_inlier_wrt_matches(locations in vals(2 * 4 * 3 * 2, 1.1), m in matches_strategy(2, 4, 3), radius in 0.3..1.6f64) {
        let config = InlierConfig { kind: InlierKind::Hard { radius }, ..InlierConfig::default() };
        gradcheck("hard inlier/matches", &m, [2, 12, 4, 3], |x| {
            inlier_score(x, fixed(&locations, [2, 4, 3, 2]), &config).unwrap()
        });
    }

    #[test]
    fn grad_grid_loss(pred in affine_near_identity(2), gt in affine_near_identity(2),
                      pred_tps in tps_near_identity(2), gt_tps in tps_near_identity(2)) {
        gradcheck("grid loss/affine", &pred, [2, 6], |t| {
            transformed_grid_loss(&affine(t), &affine(fixed(&gt, [2, 6]))).unwrap()
        });
        let tps = Tps::new(0.0).unwrap();
        let gt_theta = tps_theta(fixed(&gt_tps, [2, 18]));
        gradcheck("grid loss/tps", &pred_tps, [2, 18], |t| {
            transformed_grid_loss(&tps.warp(&tps_theta(t)), &tps.warp(&gt_theta)).unwrap()
        });
    }

    #[test]
    fn grad_weakalign_loss(a in affine_near_identity(2), q in tps_near_identity(2), m in matches_strategy(2, 3, 4)) {
        let tps = Tps::new(0.2).unwrap();
        let config = InlierConfig::default();
        let (a_fixed, q_fixed) = (affine(fixed(&a, [2, 6])), tps_theta(fixed(&q, [2, 18])));
        let mt = || fixed(&m, [2, 12, 3, 4]);
        gradcheck("objective/θ_aff", &a, [2, 6], |t| weakalign_loss(&affine(t), &q_fixed, &tps, mt(), &config).unwrap().loss);
        gradcheck("objective/θ_tps", &q, [2, 18], |t| weakalign_loss(&a_fixed, &tps_theta(t), &tps, mt(), &config).unwrap().loss);
        gradcheck("objective/corr", &m, [2, 12, 3, 4], |x| weakalign_loss(&a_fixed, &q_fixed, &tps, x, &config).unwrap().loss);
    }
}
