//! Device parity: every differentiable operation and each backbone's two-stage model, run on a
//! device and on the CPU (`flex`) from identical inputs, forward values and gradients compared
//! with a tolerance stated per operation. `weakalign parity --device cuda` (`make test-cuda`)
//! runs it on a GPU; on the CPU (`--device cpu`) it checks the harness itself (the two sides
//! are then the same backend and must agree exactly).
//!
//! Errors are `max |device − cpu| / max(1, max |cpu|)` over every element of every output and
//! input gradient of an operation.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backbone::BackboneKind;
use crate::correlation::{FeatureCorrelation, feature_l2_norm};
use crate::device::{DeviceChoice, read_f64};
use crate::error::Result;
use crate::geometry::{
    AffineTheta, ComposeBorder, Composed, GridFactors, Theta, Tps, TpsTheta,
    WEAK_LOSS_OFFSET_FACTOR, sample, sampling_grid,
};
use crate::loss::{
    InlierConfig, InlierKind, affine_inlier_score, composed_inlier_score, transformed_grid_loss,
    weakalign_loss,
};
use crate::model::ModelConfig;

/// One operation's comparison.
#[derive(Clone, Debug, Serialize)]
pub struct OpParity {
    /// The operation.
    pub op: String,
    /// Largest relative error of its outputs.
    pub forward: f64,
    /// Largest relative error of its input (or parameter) gradients.
    pub gradient: f64,
    /// The tolerance it is held to.
    pub tolerance: f64,
    /// Whether both errors are within it.
    pub pass: bool,
}

/// Values of `n` elements drawn uniformly from `[lo, hi)` (a pure function of `seed`).
fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi) as f32).collect()
}

/// Largest relative error between two equally long value lists; a value that is NaN or infinite
/// on one side only, or a length mismatch, is an infinite error.
fn relative_error(device: &[f64], cpu: &[f64]) -> f64 {
    if device.len() != cpu.len() {
        return f64::INFINITY;
    }
    let scale = cpu
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, v| m.max(v.abs()));
    let mut diff = 0.0f64;
    for (a, b) in device.iter().zip(cpu) {
        if a == b || (a.is_nan() && b.is_nan()) {
            continue;
        }
        let d = (a - b).abs();
        if !d.is_finite() {
            return f64::INFINITY;
        }
        diff = diff.max(d);
    }
    diff / scale
}

/// Outputs and input gradients of an operation on one device.
struct Run {
    outputs: Vec<Vec<f64>>,
    gradients: Vec<Vec<f64>>,
}

/// Runs `op` on `device` with `inputs` (values and shapes, made trainable), then backpropagates
/// `Σ_k Σ w_k ⊙ output_k` with fixed weights `w_k`.
///
/// # Shapes
/// - `inputs[i]`: the tensor of shape `inputs[i].1` that `op` receives as its `i`-th argument
/// - `op`'s outputs: `[n_k]` each (flatten with [`flat`])
fn run_op<const D: usize>(
    device: &Device,
    inputs: &[(Vec<f32>, [usize; D])],
    op: &dyn Fn(&[Tensor<D>]) -> Result<Vec<Tensor<1>>>,
) -> Result<Run> {
    let device = device.clone().autodiff();
    let tensors: Vec<Tensor<D>> = inputs
        .iter()
        .map(|(v, shape)| {
            Tensor::<D>::from_data(TensorData::new(v.clone(), *shape), &device).require_grad()
        })
        .collect();
    let outputs = op(&tensors)?;
    let mut total: Option<Tensor<1>> = None;
    for (k, out) in outputs.iter().enumerate() {
        let n = out.dims()[0];
        let w = Tensor::<1>::from_data(
            TensorData::new(uniform(1000 + k as u64, n, 0.5, 1.5), [n]),
            &device,
        );
        let term = (out.clone() * w).sum();
        total = Some(match total {
            None => term,
            Some(t) => t + term,
        });
    }
    let grads = total.expect("an operation has outputs").backward();
    let gradients: Vec<Vec<f64>> = tensors
        .iter()
        .filter_map(|t| t.grad(&grads))
        .map(read_f64)
        .collect();
    // A comparison without gradients could not fail: every input must receive one.
    crate::error::check_arg(
        gradients.len() == tensors.len(),
        "parity",
        "gradients",
        || {
            format!(
                "{} of {} inputs received a gradient",
                gradients.len(),
                tensors.len()
            )
        },
    )?;
    Ok(Run {
        outputs: outputs.into_iter().map(read_f64).collect(),
        gradients,
    })
}

impl OpParity {
    /// The verdict on two runs of one operation: the worst relative error over its outputs and
    /// over its gradients (a different number of either is an infinite error).
    fn judge(op: String, tolerance: f64, device: &Run, cpu: &Run) -> Self {
        let worst = |a: &[Vec<f64>], b: &[Vec<f64>]| {
            if a.len() != b.len() {
                return f64::INFINITY;
            }
            a.iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max(relative_error(x, y)))
        };
        let forward = worst(&device.outputs, &cpu.outputs);
        let gradient = worst(&device.gradients, &cpu.gradients);
        OpParity {
            op,
            forward,
            gradient,
            tolerance,
            pass: forward <= tolerance && gradient <= tolerance,
        }
    }
}

/// Compares `op` on `device` against the CPU.
fn compare<const D: usize>(
    name: &str,
    tolerance: f64,
    device: &Device,
    inputs: &[(Vec<f32>, [usize; D])],
    op: &dyn Fn(&[Tensor<D>]) -> Result<Vec<Tensor<1>>>,
) -> Result<OpParity> {
    let cpu = run_op(&crate::device::inference(), inputs, op)?;
    let dev = run_op(device, inputs, op)?;
    Ok(OpParity::judge(name.into(), tolerance, &dev, &cpu))
}

/// A fixed (not differentiated) tensor from values and shape, on `device`.
///
/// # Shapes
/// - output: `shape`
fn constant<const D: usize>(
    (values, shape): &(Vec<f32>, [usize; D]),
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.clone(), *shape), device)
}

/// Flattens a tensor for the comparison.
///
/// # Shapes
/// - `t`: any `[d0, d1, …]`
/// - output: `[d0·d1·…]`
fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n: usize = t.dims().iter().product();
    t.reshape([n])
}

/// Batch and sizes of the operation checks: small, so every operation runs in milliseconds.
const B: usize = 2;
const H: usize = 6;
const W: usize = 5;
const C: usize = 8;

/// Random inputs shared by the operation checks.
struct Inputs {
    /// Affine θ near the identity, `[B, 6]`.
    theta_aff: (Vec<f32>, [usize; 2]),
    /// TPS θ near the identity, `[B, 18]`.
    theta_tps: (Vec<f32>, [usize; 2]),
    /// The TPS of the checks (λ 0.2).
    spline: Tps,
}

/// `B` copies of `base` plus uniform noise in ±`spread`.
fn near(seed: u64, base: &[f64], spread: f64) -> Vec<f32> {
    let noise = uniform(seed, B * base.len(), -spread, spread);
    (0..B * base.len())
        .map(|i| base[i % base.len()] as f32 + noise[i])
        .collect()
}

fn aff(t: &Tensor<2>) -> Result<AffineTheta> {
    AffineTheta::new(t.clone())
}

fn tps_t(t: &Tensor<2>) -> Result<TpsTheta> {
    TpsTheta::new(t.clone())
}

/// The differentiable operations, each on small random inputs.
fn operations(device: &Device) -> Result<Vec<OpParity>> {
    let inputs = Inputs {
        theta_aff: (near(1, AffineTheta::IDENTITY, 0.2), [B, 6]),
        theta_tps: (near(2, TpsTheta::IDENTITY, 0.2), [B, 18]),
        spline: Tps::new(0.2)?,
    };
    let mut out = geometry_operations(device, &inputs)?;
    out.extend(correlation_operations(device)?);
    out.extend(loss_operations(device, &inputs)?);
    Ok(out)
}

/// Warping, the affine, TPS and composed grids.
fn geometry_operations(device: &Device, inputs: &Inputs) -> Result<Vec<OpParity>> {
    let (h, w) = (H, W);
    let Inputs {
        theta_aff,
        theta_tps,
        spline,
    } = inputs;
    let mut out = Vec::new();
    // Warping: image and grid.
    let image = (uniform(3, B * 3 * h * w, 0.0, 1.0), [B, 3, h, w]);
    let grid = (uniform(4, B * h * w * 2, -1.1, 1.1), [B, h, w, 2]);
    out.push(compare(
        "warp (image, grid)",
        1e-5,
        device,
        &[image, grid],
        &|x| Ok(vec![flat(sample(x[0].clone(), x[1].clone())?)]),
    )?);

    // Grids from θ.
    out.push(compare(
        "affine grid",
        1e-5,
        device,
        std::slice::from_ref(theta_aff),
        &|x| {
            Ok(vec![flat(sampling_grid(
                &aff(&x[0])?,
                [h, w],
                GridFactors::offset(WEAK_LOSS_OFFSET_FACTOR),
            )?)])
        },
    )?);
    out.push(compare(
        "TPS grid (λ 0.2)",
        1e-5,
        device,
        std::slice::from_ref(theta_tps),
        &|x| {
            Ok(vec![flat(sampling_grid(
                &spline.warp(&tps_t(&x[0])?),
                [h, w],
                GridFactors::default(),
            )?)])
        },
    )?);
    for border in [ComposeBorder::Analytic, ComposeBorder::Reference] {
        let name = format!("composed grid ({})", crate::choice::name(&border));
        let inputs = [theta_aff.clone(), theta_tps.clone()];
        out.push(compare(&name, 1e-5, device, &inputs, &|x| {
            let (a, t) = (aff(&x[0])?, tps_t(&x[1])?);
            let composed = Composed {
                affine: &a,
                tps: spline.warp(&t),
            };
            // Reference mode marks out-of-range cells with 1e10: compare where both are in range.
            let g = composed.grid([h, w], GridFactors::default(), border)?;
            Ok(vec![flat(g.clamp(-10.0, 10.0))])
        })?);
    }
    Ok(out)
}

/// Feature normalization and the correlation layer.
fn correlation_operations(device: &Device) -> Result<Vec<OpParity>> {
    let (h, w, c) = (H, W, C);
    let mut out = Vec::new();
    // Correlation.
    let features = |seed| (uniform(seed, B * c * h * w, -1.0, 1.0), [B, c, h, w]);
    out.push(compare(
        "feature L2 norm",
        1e-5,
        device,
        &[features(5)],
        &|x| Ok(vec![flat(feature_l2_norm(x[0].clone()))]),
    )?);
    for normalize in [false, true] {
        let name = format!("correlation (normalize {normalize})");
        out.push(compare(
            &name,
            1e-5,
            device,
            &[features(6), features(7)],
            &|x| {
                let corr = FeatureCorrelation { normalize }.forward(x[0].clone(), x[1].clone())?;
                Ok(vec![flat(corr)])
            },
        )?);
    }
    Ok(out)
}

/// Inlier counts, the grid loss and the WeakAlign objective.
fn loss_operations(device: &Device, inputs: &Inputs) -> Result<Vec<OpParity>> {
    let (h, w) = (H, W);
    let Inputs {
        theta_aff,
        theta_tps,
        spline,
    } = inputs;
    let mut out = Vec::new();
    // Inlier counts, grid loss and the WeakAlign objective on a random match tensor.
    let matches = (uniform(8, B * h * w * h * w, 0.0, 1.0), [B, h * w, h, w]);
    let soft = InlierConfig::default();
    let hard = InlierConfig {
        kind: InlierKind::Hard { radius: 1.0 },
        ..soft
    };
    for (name, config) in [("soft", soft), ("hard", hard)] {
        let inputs = [matches.clone()];
        let (a, t) = (theta_aff.clone(), theta_tps.clone());
        out.push(compare(
            &format!("{name} inlier count (affine, composed)"),
            1e-4,
            device,
            &inputs,
            &|x| {
                let d = x[0].device();
                let (a, t) = (
                    AffineTheta::new(constant(&a, &d))?,
                    TpsTheta::new(constant(&t, &d))?,
                );
                let composed = Composed {
                    affine: &a,
                    tps: spline.warp(&t),
                };
                Ok(vec![
                    affine_inlier_score(&a, x[0].clone(), &config)?,
                    composed_inlier_score(&composed, x[0].clone(), &config)?,
                ])
            },
        )?);
    }
    let inputs = [
        theta_aff.clone(),
        (near(9, AffineTheta::IDENTITY, 0.2), [B, 6]),
    ];
    out.push(compare(
        "grid loss (affine)",
        1e-5,
        device,
        &inputs,
        &|x| Ok(vec![transformed_grid_loss(&aff(&x[0])?, &aff(&x[1])?)?]),
    )?);
    let inputs = [
        theta_tps.clone(),
        (near(10, TpsTheta::IDENTITY, 0.2), [B, 18]),
    ];
    out.push(compare("grid loss (TPS)", 1e-5, device, &inputs, &|x| {
        let s = Tps::new(0.0)?;
        Ok(vec![transformed_grid_loss(
            &s.warp(&tps_t(&x[0])?),
            &s.warp(&tps_t(&x[1])?),
        )?])
    })?);
    let (a, t) = (theta_aff.clone(), theta_tps.clone());
    out.push(compare(
        "WeakAlign objective (w.r.t. matches)",
        1e-4,
        device,
        &[matches],
        &|x| {
            let d = x[0].device();
            let (a, t) = (
                AffineTheta::new(constant(&a, &d))?,
                TpsTheta::new(constant(&t, &d))?,
            );
            Ok(vec![
                weakalign_loss(&a, &t, spline, x[0].clone(), &soft)?.loss,
            ])
        },
    )?);
    Ok(out)
}

/// All parameter gradients of a model, in module order.
fn parameter_gradients<M: Module>(model: &M, grads: &GradientsParams) -> Vec<Vec<f64>> {
    struct Collect<'a>(&'a GradientsParams, Vec<Vec<f64>>);
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.1.push(read_f64(g));
            }
        }
    }
    let mut c = Collect(grads, Vec::new());
    model.visit(&mut c);
    c.1
}

/// A backbone's two-stage model (seeded on the CPU, moved): θ_aff, θ_tps and the correlation
/// forward, and the WeakAlign loss's parameter gradients.
fn model_parity(kind: BackboneKind, device: &Device, size: usize) -> Result<OpParity> {
    let run = |device: &Device| -> Result<Run> {
        let d = device.clone().autodiff();
        let config = ModelConfig {
            backbone: kind,
            image_size: size,
            ..ModelConfig::default()
        };
        let model = config.init_two_stage_seeded(7, &d)?;
        let image = |seed| {
            Tensor::<4>::from_data(
                TensorData::new(
                    uniform(seed, 2 * 3 * size * size, -1.0, 1.0),
                    [2, 3, size, size],
                ),
                &d,
            )
        };
        let out = model.forward(image(11), image(12))?;
        let loss = weakalign_loss(
            &out.theta_aff,
            &out.theta_tps,
            &Tps::new(0.2)?,
            out.corr_aff.clone(),
            &InlierConfig::default(),
        )?;
        let grads = GradientsParams::from_grads(loss.loss.backward(), &model);
        let gradients = parameter_gradients(&model, &grads);
        crate::error::check_arg(!gradients.is_empty(), "parity", "gradients", || {
            "no parameter received a gradient".into()
        })?;
        Ok(Run {
            outputs: vec![
                read_f64(out.theta_aff.into_tensor()),
                read_f64(out.theta_tps.into_tensor()),
                read_f64(out.corr_aff),
            ],
            gradients,
        })
    };
    let (cpu, dev) = (run(&crate::device::inference())?, run(device)?);
    let op = format!("two-stage {} ({size}²)", kind.name());
    Ok(OpParity::judge(op, 1e-3, &dev, &cpu))
}

/// The whole suite on `device` (models at `size`; `backbones` empty skips them).
pub fn parity(
    device: DeviceChoice,
    backbones: &[BackboneKind],
    size: usize,
) -> Result<Vec<OpParity>> {
    let d = device.inference()?;
    let mut all = operations(&d)?;
    for &kind in backbones {
        all.push(model_parity(kind, &d, size)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_sees_a_difference_and_a_length_mismatch() {
        assert_eq!(relative_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((relative_error(&[1.0, 2.5], &[1.0, 2.0]) - 0.25).abs() < 1e-12);
        assert_eq!(relative_error(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(relative_error(&[f64::NAN], &[1.0]), f64::INFINITY);
    }

    #[test]
    fn every_input_of_an_operation_gets_a_gradient() {
        let image = (uniform(3, 2 * 3 * 4 * 4, 0.0, 1.0), [2, 3, 4, 4]);
        let grid = (uniform(4, 2 * 4 * 4 * 2, -1.0, 1.0), [2, 4, 4, 2]);
        let run = run_op(&crate::device::inference(), &[image, grid], &|x| {
            Ok(vec![flat(sample(x[0].clone(), x[1].clone())?)])
        })
        .unwrap();
        assert_eq!(run.gradients.len(), 2);
        assert!(run.gradients.iter().all(|g| g.iter().any(|v| *v != 0.0)));
    }
}
