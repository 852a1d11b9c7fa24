//! Correlation layout and normalization.

use weakalign::correlation::{FeatureCorrelation, correlation, feature_l2_norm};

use crate::common::{assert_close, f64_device, tensor, values, wave};

#[test]
fn channel_k_is_x_times_h_plus_y_of_the_source() {
    // Non-square maps catch a transposed index.
    let (b, c, h, w) = (2, 3, 4, 5);
    let opts = f64_device();
    let (fa, fb) = (wave(b * c * h * w, 0.1), wave(b * c * h * w, 0.9));
    let corr = values(
        correlation(
            tensor(&fa, [b, c, h, w], opts.clone()),
            tensor(&fb, [b, c, h, w], opts),
        )
        .unwrap(),
    );
    let at =
        |f: &[f64], bi: usize, ci: usize, y: usize, x: usize| f[((bi * c + ci) * h + y) * w + x];
    for bi in 0..b {
        for (xa, ya, yb, xb) in [(0, 0, 0, 0), (4, 1, 3, 2), (2, 3, 1, 4), (1, 2, 0, 3)] {
            let want: f64 = (0..c)
                .map(|ci| at(&fa, bi, ci, ya, xa) * at(&fb, bi, ci, yb, xb))
                .sum();
            let k = xa * h + ya;
            let got = corr[((bi * h * w + k) * h + yb) * w + xb];
            assert!((got - want).abs() < 1e-12, "k={k}: {got} vs {want}");
        }
    }
}

#[test]
fn normalized_correlation_is_relu_then_unit_norm_over_sources() {
    let (b, c, h, w) = (1, 4, 3, 3);
    let opts = f64_device();
    let fa = tensor(&wave(b * c * h * w, 0.3), [b, c, h, w], opts.clone());
    let fb = tensor(&wave(b * c * h * w, 1.3), [b, c, h, w], opts);
    let corr = values(
        FeatureCorrelation { normalize: true }
            .forward(fa, fb)
            .unwrap(),
    );
    for p in 0..h * w {
        let col: Vec<f64> = (0..h * w).map(|k| corr[k * h * w + p]).collect();
        assert!(col.iter().all(|&v| v >= 0.0));
        let norm: f64 = col.iter().map(|v| v * v).sum::<f64>();
        // ‖relu(corr)‖² / (‖relu(corr)‖² + 1e-6) ≤ 1
        assert!(
            norm <= 1.0 && norm > 0.99,
            "target {p}: squared norm {norm}"
        );
    }
}

#[test]
fn l2_norm_puts_epsilon_inside_the_root() {
    let opts = f64_device();
    let f = tensor(&[3.0, 0.0, 4.0, 0.0], [1, 2, 1, 2], opts); // location 0: (3, 4); 1: (0, 0)
    let got = values(feature_l2_norm(f));
    let n = (25.0f64 + 1e-6).sqrt();
    assert_close("l2", &got, &[3.0 / n, 0.0, 4.0 / n, 0.0], 1e-15, 0.0);
}
