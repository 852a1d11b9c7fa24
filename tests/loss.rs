//! Inlier counts: the gather form equals the reference's dense warped-mask definition.

use burn::tensor::Tensor;
use weakalign::geometry::{
    AffineTheta, ComposeBorder, Composed, GridFactors, Theta, Tps, TpsTheta, sample, sampling_grid,
};
use weakalign::loss::{Dilation, InlierConfig, InlierKind, inlier_score, weakalign_loss};

use crate::common::{assert_close, f32_device, f64_device, tensor, values, wave};

/// The reference's identity mask `[1, h·w, h, w]` (`mask[c, y, x] = 1` iff `c = x·h + y`),
/// dilated per channel with a plain loop.
fn dense_identity_mask(h: usize, w: usize, dilation: Dilation) -> Vec<f64> {
    let reach: &[(i64, i64)] = match dilation {
        Dilation::None => &[(0, 0)],
        Dilation::Cross => &[(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
        Dilation::Square => &[
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (0, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ],
    };
    let mut m = vec![0.0; h * w * h * w];
    for x in 0..w as i64 {
        for y in 0..h as i64 {
            let c = (x * h as i64 + y) as usize;
            for (dx, dy) in reach {
                let (xx, yy) = (x + dx, y + dy);
                if (0..w as i64).contains(&xx) && (0..h as i64).contains(&yy) {
                    m[(c * h + yy as usize) * w + xx as usize] = 1.0;
                }
            }
        }
    }
    m
}

/// The reference definition: warp the identity mask by the location grid with `grid_sample`,
/// then `Σ mask·matches`, optionally normalized by `Σ (mask + 1e-5)`.
fn dense_score(
    matches: Tensor<4>,
    locations: Tensor<4>,
    dilation: Dilation,
    normalize: bool,
) -> Vec<f64> {
    let [b, k, h, w] = matches.dims();
    let opts = (matches.device(), matches.dtype());
    let mask = tensor(&dense_identity_mask(h, w, dilation), [1, k, h, w], opts).repeat_dim(0, b);
    let warped = sample(mask, locations).unwrap();
    let score = values((warped.clone() * matches).sum_dims_squeeze::<1, _>(&[1, 2, 3]));
    let sums = values(warped.sum_dims_squeeze::<1, _>(&[1, 2, 3]));
    score
        .iter()
        .zip(&sums)
        .map(|(s, m)| {
            if normalize {
                s / (m + 1e-5 * (k * h * w) as f64)
            } else {
                *s
            }
        })
        .collect()
}

fn matches(b: usize, h: usize, w: usize, seed: f64) -> Tensor<4> {
    let k = h * w;
    let raw: Vec<f64> = wave(b * k * h * w, seed)
        .into_iter()
        .map(f64::abs)
        .collect();
    tensor(&raw, [b, k, h, w], f64_device())
}

#[test]
fn soft_count_equals_the_dense_warped_mask_definition() {
    let (dev, dt) = f64_device();
    let (h, w) = (15, 15);
    let corr = matches(2, h, w, 0.4);
    let aff = AffineTheta::from_values(
        &[
            0.9, -0.15, 0.1, 0.2, 1.1, -0.05, 1.2, 0.1, -0.2, -0.1, 0.8, 0.15,
        ],
        &dev,
        dt,
    )
    .unwrap();
    let q: Vec<f64> = [TpsTheta::IDENTITY, TpsTheta::IDENTITY]
        .concat()
        .iter()
        .enumerate()
        .map(|(i, v)| v + 0.15 * (i as f64 * 2.3).sin())
        .collect();
    let tps_theta = TpsTheta::from_values(&q, &dev, dt).unwrap();
    let tps = Tps::new(0.2).unwrap();
    let composed = Composed {
        affine: &aff,
        tps: tps.warp(&tps_theta),
    };
    let factors = GridFactors::offset(227.0 / 210.0);
    let grids = [
        ("affine", sampling_grid(&aff, [h, w], factors).unwrap()),
        (
            "composed/reference",
            composed
                .grid([h, w], factors, ComposeBorder::Reference)
                .unwrap(),
        ),
        (
            "composed/analytic",
            composed
                .grid([h, w], factors, ComposeBorder::Analytic)
                .unwrap(),
        ),
    ];
    for (name, grid) in grids {
        for dilation in [Dilation::None, Dilation::Cross, Dilation::Square] {
            for normalize in [true, false] {
                let config = InlierConfig {
                    dilation,
                    normalize,
                    ..InlierConfig::default()
                };
                let got = values(inlier_score(corr.clone(), grid.clone(), &config).unwrap());
                let want = dense_score(corr.clone(), grid.clone(), dilation, normalize);
                assert_close(
                    &format!("{name} {dilation:?} norm={normalize}"),
                    &got,
                    &want,
                    1e-10,
                    1e-10,
                );
            }
        }
    }
}

#[test]
fn identity_score_on_the_identity_match_tensor() {
    // weakalign-reference §8.3: 225 / (225 + 0.50625) = 0.997755.
    for (dev, dt) in [f32_device(), f64_device()] {
        let (h, w) = (15, 15);
        let ident = tensor(
            &dense_identity_mask(h, w, Dilation::None),
            [1, h * w, h, w],
            (dev.clone(), dt),
        );
        let theta = AffineTheta::identity(1, &dev, dt);
        let score =
            weakalign::loss::affine_inlier_score(&theta, ident, &InlierConfig::default()).unwrap();
        assert_close(
            "identity score",
            &values(score),
            &[225.0 / (225.0 + 0.50625)],
            1e-6,
            0.0,
        );
    }
}

#[test]
fn hard_count_matches_a_brute_force_loop() {
    let (dev, dt) = f64_device();
    let (h, w) = (6, 5);
    let corr = matches(1, h, w, 1.1);
    let corr_v = values(corr.clone());
    let theta = AffineTheta::from_values(&[0.8, 0.2, 0.1, -0.1, 1.1, -0.2], &dev, dt).unwrap();
    let grid = sampling_grid(&theta, [h, w], GridFactors::default()).unwrap();
    let g = values(grid.clone());
    for radius in [0.5, 1.0, 1.5] {
        let config = InlierConfig {
            kind: InlierKind::Hard { radius },
            normalize: false,
            ..InlierConfig::default()
        };
        let got = values(inlier_score(corr.clone(), grid.clone(), &config).unwrap());
        let mut want = 0.0;
        for yb in 0..h {
            for xb in 0..w {
                let p = yb * w + xb;
                let u = (g[2 * p] + 1.0) / 2.0 * (w as f64 - 1.0);
                let v = (g[2 * p + 1] + 1.0) / 2.0 * (h as f64 - 1.0);
                for xa in 0..w {
                    for ya in 0..h {
                        if (u - xa as f64).powi(2) + (v - ya as f64).powi(2) <= radius * radius {
                            want += corr_v[(xa * h + ya) * h * w + p];
                        }
                    }
                }
            }
        }
        assert_close(&format!("hard τ={radius}"), &got, &[want], 1e-12, 1e-12);
    }
}

#[test]
fn hard_count_gives_theta_no_gradient() {
    let (dev, dt) = f64_device();
    let corr = matches(1, 5, 5, 0.2).require_grad();
    let theta_t = tensor(&[0.9, 0.1, 0.05, -0.1, 1.05, 0.1], [1, 6], (dev, dt)).require_grad();
    let theta = AffineTheta::new(theta_t.clone()).unwrap();
    let config = InlierConfig {
        kind: InlierKind::Hard { radius: 1.0 },
        ..InlierConfig::default()
    };
    let score = weakalign::loss::affine_inlier_score(&theta, corr.clone(), &config).unwrap();
    let grads = score.sum().backward();
    assert!(
        corr.grad(&grads).is_some(),
        "the matches must receive a gradient"
    );
    // θ's branch is reached by the backward pass (a branch it never visits is never freed:
    // burn's autodiff kept the regression heads' activations of every hard-inlier step), with
    // a gradient of exactly zero.
    let g = values(
        theta_t
            .grad(&grads)
            .expect("the backward pass reaches θ's branch"),
    );
    assert!(
        g.iter().all(|&v| v == 0.0),
        "hard count must not move θ: {g:?}"
    );
}

#[test]
fn weakalign_loss_is_minus_the_mean_of_both_scores() {
    let (dev, dt) = f64_device();
    let corr = matches(2, 15, 15, 0.8);
    let aff = AffineTheta::identity(2, &dev, dt);
    let tps_theta = TpsTheta::identity(2, &dev, dt);
    let tps = Tps::new(0.2).unwrap();
    let config = InlierConfig::default();
    let objective = weakalign_loss(&aff, &tps_theta, &tps, corr.clone(), &config).unwrap();
    let loss = values(objective.loss);
    let s_aff = values(weakalign::loss::affine_inlier_score(&aff, corr.clone(), &config).unwrap());
    let composed = Composed {
        affine: &aff,
        tps: tps.warp(&tps_theta),
    };
    let s_comp = values(weakalign::loss::composed_inlier_score(&composed, corr, &config).unwrap());
    let want = -(s_aff[0] + s_comp[0] + s_aff[1] + s_comp[1]) / 2.0;
    assert_close("objective", &loss, &[want], 1e-12, 0.0);
    // The scores it returns are the two terms, per pair.
    assert_close("s_aff", &values(objective.inlier_aff), &s_aff, 0.0, 0.0);
    assert_close(
        "s_aff∘tps",
        &values(objective.inlier_aff_tps),
        &s_comp,
        0.0,
        0.0,
    );
}
