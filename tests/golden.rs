//! Golden values from PyTorch (`tools/make_golden.py`, see `tests/golden/README.md`).
//!
//! Everything runs in f32 on flex, as inference does; tolerance 1e-5 (absolute + relative).

use std::collections::HashMap;
use std::sync::OnceLock;

use burn::tensor::Tensor;
use weakalign::correlation::{FeatureCorrelation, correlation, feature_l2_norm};
use weakalign::geometry::points::{to_normalized, to_pixels};
use weakalign::geometry::{
    AffineTheta, ComposeBorder, Composed, GridFactors, Theta, Tps, TpsTheta, Transform, sample,
    sampling_grid,
};
use weakalign::loss::{
    Dilation, InlierConfig, affine_inlier_score, composed_inlier_score, transformed_grid_loss,
    weakalign_loss,
};

use crate::common::{self, assert_close, f32_device, tensor, values};

const TOL: f64 = 1e-5;
const OFFSET: f64 = 227.0 / 210.0;

struct Fixture {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn fixtures() -> &'static HashMap<String, Fixture> {
    static FIXTURES: OnceLock<HashMap<String, Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/core.json");
        let text = std::fs::read_to_string(path).expect("tests/golden/core.json should exist");
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid fixture JSON");
        json["fixtures"]
            .as_object()
            .expect("`fixtures` object")
            .iter()
            .map(|(name, v)| {
                let shape = v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize);
                let data = v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_f64().unwrap());
                (
                    name.clone(),
                    Fixture {
                        shape: shape.collect(),
                        data: data.collect(),
                    },
                )
            })
            .collect()
    })
}

fn fixture(name: &str) -> &'static Fixture {
    fixtures()
        .get(name)
        .unwrap_or_else(|| panic!("fixture `{name}` missing"))
}

fn input<const D: usize>(name: &str) -> Tensor<D> {
    let f = fixture(name);
    let shape: [usize; D] = f.shape.clone().try_into().expect("fixture rank");
    tensor(&f.data, shape, f32_device())
}

fn check<const D: usize>(name: &str, got: Tensor<D>) {
    let f = fixture(name);
    assert_eq!(got.dims().to_vec(), f.shape, "{name}: shape");
    assert_close(name, &values(got), &f.data, TOL, TOL);
}

/// `sin(0.7071·i + seed)·cos(0.1234·i)` in f64, rounded to f32: `wave` of the generator.
fn wave<const D: usize>(shape: [usize; D], seed: f64) -> Tensor<D> {
    let n = shape.iter().product::<usize>();
    let v: Vec<f64> = common::wave(n, seed)
        .into_iter()
        .map(|v| v as f32 as f64)
        .collect();
    tensor(&v, shape, f32_device())
}

fn thetas() -> (AffineTheta, TpsTheta) {
    (
        AffineTheta::new(input("theta_aff")).unwrap(),
        TpsTheta::new(input("theta_tps")).unwrap(),
    )
}

#[test]
fn golden_wave_inputs_match_the_generator() {
    check("theta_tps", thetas().1.into_tensor());
    check("features_a", wave([2, 5, 4, 3], 0.1));
    check("warp_image", wave([2, 3, 4, 5], 0.5));
}

#[test]
fn golden_affine_grids_and_points() {
    let (aff, _) = thetas();
    check(
        "affine_grid",
        sampling_grid(&aff, [5, 7], GridFactors::default()).unwrap(),
    );
    let factors = GridFactors {
        offset: OFFSET,
        padding_crop: 0.5 * 9.0 / 16.0,
    };
    check(
        "affine_grid_factors",
        sampling_grid(&aff, [5, 7], factors).unwrap(),
    );
    check("affine_points", aff.map_points(input("points")).unwrap());
}

#[test]
fn golden_tps_grids_and_points() {
    let (_, theta) = thetas();
    for (lambda, tag) in [(0.0, "0"), (0.2, "02")] {
        let tps = Tps::new(lambda).unwrap();
        let warp = tps.warp(&theta);
        check(
            &format!("tps_grid_l{tag}"),
            sampling_grid(&warp, [5, 7], GridFactors::default()).unwrap(),
        );
        check(
            &format!("tps_points_l{tag}"),
            warp.map_points(input("points")).unwrap(),
        );
    }
}

#[test]
fn golden_tps_grid_with_offset_factor() {
    let (_, theta) = thetas();
    let tps = Tps::new(0.2).unwrap();
    let grid = sampling_grid(&tps.warp(&theta), [5, 7], GridFactors::offset(OFFSET)).unwrap();
    check("tps_grid_l02_offset", grid);
}

#[test]
fn golden_pixel_to_normalized() {
    let sizes = [(300, 200), (120, 160)];
    let normalized = to_normalized(input("pixel_points"), &sizes).unwrap();
    check("pixel_points_normalized", normalized.clone());
    check("pixel_points", to_pixels(normalized, &sizes).unwrap());
}

#[test]
fn golden_composed_points_and_grids() {
    let (aff, theta) = thetas();
    let tps = Tps::new(0.2).unwrap();
    let composed = Composed {
        affine: &aff,
        tps: tps.warp(&theta),
    };
    check(
        "composed_points_l02",
        composed.map_points(input("points")).unwrap(),
    );
    let f = GridFactors::offset(OFFSET);
    check(
        "composed_grid_analytic_l02",
        composed.grid([5, 7], f, ComposeBorder::Analytic).unwrap(),
    );

    // Reference border handling on 15×15 (batch element 0): cells that can sample anything
    // (|v| < 2) agree to 1e-5, and both sides put the same cells beyond that. Beyond it, values
    // are 1e10 markers or 1e10 × float round-off, which no implementation reproduces bit for bit.
    let aff0 = AffineTheta::new(aff.tensor().clone().slice([0..1, 0..6])).unwrap();
    let theta0 = TpsTheta::new(theta.tensor().clone().slice([0..1, 0..18])).unwrap();
    let composed0 = Composed {
        affine: &aff0,
        tps: tps.warp(&theta0),
    };
    let got = values(
        composed0
            .grid([15, 15], f, ComposeBorder::Reference)
            .unwrap(),
    );
    let want = &fixture("composed_grid_reference_l02").data;
    let mut kept = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g_in, w_in) = (g.abs() < 2.0, w.abs() < 2.0);
        assert_eq!(
            g_in,
            w_in,
            "cell {}: in-range differs (ours {g}, torch {w})",
            i / 2
        );
        if w_in {
            kept += 1;
            assert!(
                (g - w).abs() <= TOL * (1.0 + w.abs()),
                "value {i}: {g} vs {w}"
            );
        }
    }
    assert!(kept > 0);
}

#[test]
fn golden_warp() {
    check(
        "warp",
        sample(input("warp_image"), input("warp_grid")).unwrap(),
    );
}

#[test]
fn golden_correlation_and_norm() {
    let (fa, fb) = (input::<4>("features_a"), input::<4>("features_b"));
    check("l2norm_a", feature_l2_norm(fa.clone()));
    check("correlation", correlation(fa.clone(), fb.clone()).unwrap());
    check(
        "correlation_normalized",
        FeatureCorrelation { normalize: true }
            .forward(fa, fb)
            .unwrap(),
    );
}

fn inlier_matches() -> Tensor<4> {
    let ga = feature_l2_norm(wave([2, 8, 15, 15], 0.2));
    let gb = feature_l2_norm(wave([2, 8, 15, 15], 1.7));
    FeatureCorrelation { normalize: true }
        .forward(ga, gb)
        .unwrap()
}

#[test]
fn golden_inlier_counts() {
    let (aff, theta) = thetas();
    let corr = inlier_matches();
    let base = InlierConfig::default();
    let cases = [
        ("inlier_affine", base),
        (
            "inlier_affine_unnormalized",
            InlierConfig {
                normalize: false,
                ..base
            },
        ),
        (
            "inlier_affine_cross",
            InlierConfig {
                dilation: Dilation::Cross,
                ..base
            },
        ),
        (
            "inlier_affine_square",
            InlierConfig {
                dilation: Dilation::Square,
                ..base
            },
        ),
    ];
    for (name, config) in cases {
        check(
            name,
            affine_inlier_score(&aff, corr.clone(), &config).unwrap(),
        );
    }
    let tps = Tps::new(0.2).unwrap();
    let composed = Composed {
        affine: &aff,
        tps: tps.warp(&theta),
    };
    check(
        "inlier_composed",
        composed_inlier_score(&composed, corr.clone(), &base).unwrap(),
    );
    let unnormalized = InlierConfig {
        normalize: false,
        ..base
    };
    check(
        "inlier_composed_unnormalized",
        composed_inlier_score(&composed, corr.clone(), &unnormalized).unwrap(),
    );
    check(
        "weakalign_loss",
        weakalign_loss(&aff, &theta, &tps, corr, &base)
            .unwrap()
            .loss,
    );
}

#[test]
fn golden_grid_loss() {
    let (aff, theta) = thetas();
    let gt_aff = AffineTheta::new(input("grid_loss_gt_aff")).unwrap();
    check(
        "grid_loss_affine",
        transformed_grid_loss(&aff, &gt_aff).unwrap(),
    );
    let tps = Tps::new(0.0).unwrap();
    let gt_tps = TpsTheta::new(input("grid_loss_gt_tps")).unwrap();
    check(
        "grid_loss_tps",
        transformed_grid_loss(&tps.warp(&theta), &tps.warp(&gt_tps)).unwrap(),
    );
}

#[test]
fn golden_identity_inlier_score() {
    let opts = f32_device();
    let mut mask = vec![0.0; 225 * 225];
    for x in 0..15 {
        for y in 0..15 {
            mask[((x * 15 + y) * 15 + y) * 15 + x] = 1.0;
        }
    }
    let ident = tensor(&mask, [1, 225, 15, 15], opts.clone());
    let theta = AffineTheta::from_values(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &opts.0, opts.1).unwrap();
    check(
        "inlier_identity",
        affine_inlier_score(&theta, ident, &InlierConfig::default()).unwrap(),
    );
}
