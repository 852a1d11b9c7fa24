//! Bad tensor arguments give errors that name the shapes; nothing panics.

use weakalign::Error;
use weakalign::correlation::correlation;
use weakalign::geometry::{
    AffineTheta, GridFactors, Theta, Tps, TpsTheta, Transform, sample, sampling_grid,
};
use weakalign::loss::{InlierConfig, InlierKind, inlier_score};

use crate::common::{f32_device, tensor};

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn theta_with_the_wrong_parameter_count_is_rejected() {
    let opts = f32_device();
    let e = AffineTheta::new(tensor(&[0.0; 10], [2, 5], opts.clone())).unwrap_err();
    assert_eq!(
        message(e),
        "AffineTheta: `params` has shape [2, 5], expected [batch, 6]"
    );
    let e = TpsTheta::new(tensor(&[0.0; 12], [2, 6], opts.clone())).unwrap_err();
    assert!(message(e).contains("[2, 6], expected [batch, 18]"));
    let e = AffineTheta::from_values(&[1.0; 7], &opts.0, opts.1).unwrap_err();
    assert!(message(e).contains("7 values is not a positive multiple of 6"));
}

#[test]
fn points_and_grids_with_wrong_shapes_are_rejected() {
    let opts = f32_device();
    let theta = AffineTheta::identity(2, &opts.0, opts.1);
    let e = theta
        .map_points(tensor(&[0.0; 9], [1, 3, 3], opts.clone()))
        .unwrap_err();
    assert!(message(e).contains("`points` has shape [1, 3, 3], expected [batch=2 (or 1), 2, n]"));
    let e = theta
        .map_points(tensor(&[0.0; 18], [3, 2, 3], opts.clone()))
        .unwrap_err();
    assert!(message(e).contains("[3, 2, 3]"));
    let image = tensor(&[0.0; 2 * 3 * 4 * 4], [2, 3, 4, 4], opts.clone());
    let e = sample(
        image,
        tensor(&[0.0; 2 * 4 * 4 * 3], [2, 4, 4, 3], opts.clone()),
    )
    .unwrap_err();
    assert_eq!(
        message(e),
        "sample: `grid` has shape [2, 4, 4, 3], expected [batch=2, h_out, w_out, 2]"
    );
    let e = sampling_grid(&theta, [0, 4], GridFactors::default()).unwrap_err();
    assert!(message(e).contains("grid size must be positive"));
    let e = sampling_grid(&theta, [3, 4], GridFactors::offset(0.0)).unwrap_err();
    assert!(message(e).contains("offset factor must be finite and > 0"));
}

#[test]
fn correlation_and_inlier_shape_mismatches_are_rejected() {
    let opts = f32_device();
    let a = tensor(&[0.0; 2 * 3 * 4 * 4], [2, 3, 4, 4], opts.clone());
    let b = tensor(&[0.0; 2 * 3 * 4 * 5], [2, 3, 4, 5], opts.clone());
    let e = correlation(a, b).unwrap_err();
    assert_eq!(
        message(e),
        "correlation: `target` has shape [2, 3, 4, 5], expected [batch=2, channels=3, h=4, w=4]"
    );
    let m = tensor(&[0.0; 10 * 4 * 4], [1, 10, 4, 4], opts.clone());
    let loc = tensor(&[0.0; 4 * 4 * 2], [1, 4, 4, 2], opts.clone());
    let e = inlier_score(m, loc.clone(), &InlierConfig::default()).unwrap_err();
    assert!(message(e).contains("channels must be h·w = 16"));
    let m = tensor(&[0.0; 16 * 4 * 4], [1, 16, 4, 4], opts.clone());
    let config = InlierConfig {
        kind: InlierKind::Hard { radius: f64::NAN },
        ..InlierConfig::default()
    };
    let e = inlier_score(m.clone(), loc, &config).unwrap_err();
    assert!(message(e).contains("radius"));
    let wrong = tensor(&[0.0; 4 * 3 * 2], [1, 4, 3, 2], opts);
    let e = inlier_score(m, wrong, &InlierConfig::default()).unwrap_err();
    assert!(
        message(e).contains("`locations` has shape [1, 4, 3, 2], expected [batch=1, h=4, w=4, 2]")
    );
}

#[test]
fn invalid_tps_regularization_is_rejected() {
    assert!(
        message(Tps::new(-0.1).unwrap_err()).contains("TPS regularization must be finite and >= 0")
    );
    assert!(Tps::new(f64::INFINITY).is_err());
}
