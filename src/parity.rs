//! Device parity: every differentiable operation and each backbone's two-stage model, run on a
//! device and on the CPU (`flex`) from identical inputs, forward values and gradients compared
//! with a tolerance stated per operation. `weakalign parity --device cuda` (`make test-cuda`)
//! runs it on a GPU; on the CPU (`--device cpu`) it checks the harness itself (the two sides
//! are then the same backend and must agree exactly).
//!
//! An error is `max |device − cpu| / max(floor, max |cpu|)` over one output or one gradient
//! tensor, the worst over an operation's outputs (and over its gradients) is its error. The
//! operations take inputs of order 1 and use `floor = 1`; the models use `floor = 1e-8`, so each
//! parameter's gradient is measured against its own scale (at initialization they span 1e-7 to
//! 1e1).
//!
//! The models are checked in the configuration whose arithmetic is well conditioned and which
//! training and evaluation use by default: BatchNorm on running statistics, heads started at the
//! identity, smooth images. A random initialization with batch statistics over a batch of two
//! is not: there a ±1e-6 change of the input moved the CPU's own gradients by up to 240 %
//! (EfficientNet-Lite0, 240²), so no device could be held to the CPU there. Batch statistics
//! (the strong stages' heads) are checked as an operation of their own.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::f32::consts::TAU;
use std::time::Instant;

use crate::backbone::{BackboneKind, BatchNormMode, Trainable};
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
use crate::model::{ModelConfig, TwoStage, TwoStageOutput};

/// One operation's comparison.
#[derive(Clone, Debug, Serialize)]
pub struct OpParity {
    /// The operation.
    pub op: String,
    /// Largest relative error of its outputs.
    pub forward: f64,
    /// Largest relative error of its input (or parameter) gradients; `None` for a forward-only
    /// (inference) check.
    pub gradient: Option<f64>,
    /// The tolerance of the outputs' error.
    pub tolerance: f64,
    /// The tolerance of the gradients' error.
    pub gradient_tolerance: f64,
    /// Whether both errors are within their tolerances.
    pub pass: bool,
    /// Wall-clock seconds of the device's side (the first call of a kernel includes its
    /// compilation).
    pub seconds: f64,
}

/// Where each operation's result goes as soon as it is known (a slow device shows progress).
struct Sink<'a> {
    results: Vec<OpParity>,
    report: &'a mut dyn FnMut(&OpParity),
}

impl Sink<'_> {
    fn push(&mut self, r: OpParity) {
        (self.report)(&r);
        self.results.push(r);
    }
}

/// Values of `n` elements drawn uniformly from `[lo, hi)` (a pure function of `seed`).
fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi) as f32).collect()
}

/// How an operation is judged: its tolerances and the floor of the error's scale (module docs).
#[derive(Clone, Copy, Debug)]
struct Bound {
    forward: f64,
    gradient: f64,
    floor: f64,
}

impl Bound {
    /// One tolerance for outputs and gradients, inputs of order 1.
    const fn op(tolerance: f64) -> Self {
        Bound {
            forward: tolerance,
            gradient: tolerance,
            floor: 1.0,
        }
    }
}

/// Largest relative error between two equally long value lists, against
/// `max(floor, max |cpu|)`; a value that is NaN or infinite on one side only, or a length
/// mismatch, is an infinite error.
fn relative_error(device: &[f64], cpu: &[f64], floor: f64) -> f64 {
    if device.len() != cpu.len() {
        return f64::INFINITY;
    }
    let scale = cpu
        .iter()
        .filter(|v| v.is_finite())
        .fold(floor, |m, v| m.max(v.abs()));
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

/// Runs `op` on `device` without autodiff (the inference path: evaluation and `align`, where
/// burn hands some operations to other kernels than under autodiff), outputs only.
///
/// # Shapes
/// - as [`run_op`]
fn run_forward<const D: usize>(
    device: &Device,
    inputs: &[(Vec<f32>, [usize; D])],
    op: &dyn Fn(&[Tensor<D>]) -> Result<Vec<Tensor<1>>>,
) -> Result<Run> {
    let tensors: Vec<Tensor<D>> = inputs.iter().map(|i| constant(i, device)).collect();
    Ok(Run {
        outputs: op(&tensors)?.into_iter().map(read_f64).collect(),
        gradients: Vec::new(),
    })
}

impl OpParity {
    /// The verdict on two runs of one operation: the worst relative error over its outputs and
    /// over its gradients (a different number of either is an infinite error).
    fn judge(op: String, bound: Bound, device: &Run, cpu: &Run, seconds: f64) -> Self {
        let worst = |a: &[Vec<f64>], b: &[Vec<f64>]| {
            if a.len() != b.len() {
                return f64::INFINITY;
            }
            a.iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max(relative_error(x, y, bound.floor)))
        };
        let forward = worst(&device.outputs, &cpu.outputs);
        let forward_only = device.gradients.is_empty() && cpu.gradients.is_empty();
        let gradient = (!forward_only).then(|| worst(&device.gradients, &cpu.gradients));
        OpParity {
            op,
            forward,
            gradient,
            tolerance: bound.forward,
            gradient_tolerance: bound.gradient,
            pass: forward <= bound.forward && gradient.is_none_or(|g| g <= bound.gradient),
            seconds,
        }
    }
}

/// A way to run an operation: [`run_op`] (forward and gradients) or [`run_forward`].
type Runner<const D: usize> = fn(
    &Device,
    &[(Vec<f32>, [usize; D])],
    &dyn Fn(&[Tensor<D>]) -> Result<Vec<Tensor<1>>>,
) -> Result<Run>;

/// `run` on the CPU, then on `device` (timed), and the verdict on the two.
fn side_by_side(
    name: String,
    bound: Bound,
    device: &Device,
    run: &dyn Fn(&Device) -> Result<Run>,
) -> Result<OpParity> {
    let cpu = run(&crate::device::inference())?;
    let start = Instant::now();
    let dev = run(device)?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(OpParity::judge(name, bound, &dev, &cpu, seconds))
}

/// Compares `op` on `device` against the CPU, both run by `runner`.
fn compare_by<const D: usize>(
    runner: Runner<D>,
    name: &str,
    tolerance: f64,
    device: &Device,
    inputs: &[(Vec<f32>, [usize; D])],
    op: &dyn Fn(&[Tensor<D>]) -> Result<Vec<Tensor<1>>>,
) -> Result<OpParity> {
    side_by_side(name.into(), Bound::op(tolerance), device, &|d| {
        runner(d, inputs, op)
    })
}

/// Compares `op`'s forward and gradients on `device` against the CPU's.
fn compare<const D: usize>(
    name: &str,
    tolerance: f64,
    device: &Device,
    inputs: &[(Vec<f32>, [usize; D])],
    op: &dyn Fn(&[Tensor<D>]) -> Result<Vec<Tensor<1>>>,
) -> Result<OpParity> {
    compare_by(run_op, name, tolerance, device, inputs, op)
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
fn operations(device: &Device, out: &mut Sink<'_>) -> Result<()> {
    let inputs = Inputs {
        theta_aff: (near(1, AffineTheta::IDENTITY, 0.2), [B, 6]),
        theta_tps: (near(2, TpsTheta::IDENTITY, 0.2), [B, 18]),
        spline: Tps::new(0.2)?,
    };
    backbone_operations(device, out)?;
    geometry_operations(device, &inputs, out)?;
    correlation_operations(device, out)?;
    loss_operations(device, &inputs, out)
}

/// Channels of the backbone layers' checks (in, out).
const C_IN: usize = 4;
const C_OUT: usize = 6;

/// A backbone layer's random input, `[B, C_IN, side, side]`.
fn layer_input(seed: u64, side: usize) -> (Vec<f32>, [usize; 4]) {
    (
        uniform(seed, B * C_IN * side * side, -1.0, 1.0),
        [B, C_IN, side, side],
    )
}

/// The backbones' layers through [`crate::backbone::conv`] and [`crate::backbone::pool`] (on the
/// CPU our kernels, elsewhere burn's): [`convolution_operations`], then
/// [`pooling_and_normalization_operations`].
fn backbone_operations(device: &Device, out: &mut Sink<'_>) -> Result<()> {
    convolution_operations(device, out)?;
    pooling_and_normalization_operations(device, out)
}

/// One convolution through [`crate::backbone::conv::conv2d_with`], flattened.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`; `weight`: `[c_out, c_in / groups, k, k]`
/// - output: `[batch · c_out · h_out · w_out]`
fn conv_row(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    options: burn::tensor::ops::ConvOptions<2>,
    after: crate::backbone::conv::After,
) -> Result<Vec<Tensor<1>>> {
    let y = crate::backbone::conv::conv2d_with(x.clone(), weight.clone(), options, after);
    Ok(vec![flat(y)])
}

/// Dense and depthwise convolutions with symmetric and TensorFlow-"SAME" (asymmetric) padding,
/// the fused scale, bias, residual and activations, and ReLU6 at exactly 0.
fn convolution_operations(device: &Device, out: &mut Sink<'_>) -> Result<()> {
    use crate::backbone::conv::After;
    use crate::backbone::conv::kernels::Activation;
    use burn::tensor::ops::ConvOptions;

    let (c_in, c_out) = (C_IN, C_OUT);
    let x = layer_input;
    let w = |seed, c_out: usize, c_in: usize| {
        (
            uniform(seed, c_out * c_in * 9, -0.5, 0.5),
            [c_out, c_in, 3, 3],
        )
    };
    let v = |seed, n: usize| (uniform(seed, n, 0.5, 1.5), [n, 1, 1, 1]);
    let vector = |t: &Tensor<4>| t.clone().flatten::<1>(0, 3);
    // (name, groups, stride, padding per axis, activation, input side)
    let cases = [
        (
            "convolution 3×3 (pad 1, + bias, ReLU)",
            1,
            1,
            (1, 1),
            Activation::Relu,
            9,
        ),
        (
            "convolution 3×3 stride 2 (SAME: pad 0, 1; ReLU6)",
            1,
            2,
            (0, 1),
            Activation::Relu6,
            8,
        ),
        (
            "depthwise convolution 3×3 (pad 1, ReLU6)",
            c_in,
            1,
            (1, 1),
            Activation::Relu6,
            9,
        ),
        (
            "depthwise convolution 3×3 stride 2 (SAME: pad 0, 1)",
            c_in,
            2,
            (0, 1),
            Activation::Identity,
            8,
        ),
    ];
    for (name, groups, stride, pad, activation, side) in cases {
        let c_out = if groups == 1 { c_out } else { c_in };
        let options = ConvOptions::new_with_padding([stride; 2], [pad; 2], [1, 1], groups);
        // Input, weight, and the per-channel scale and bias (frozen BatchNorm's), all
        // differentiated; the vectors enter as `[c_out, 1, 1, 1]` to share the rank.
        let inputs = [
            x(20, side),
            w(21, c_out, c_in / groups),
            v(22, c_out),
            v(23, c_out),
        ];
        out.push(compare(name, 1e-5, device, &inputs, &|t| {
            let after = After {
                scale: Some(vector(&t[2])),
                bias: Some(vector(&t[3])),
                residual: None,
                activation,
            };
            conv_row(&t[0], &t[1], options.clone(), after)
        })?);
    }
    // A residual block's output: conv, frozen-BN scale and shift, residual, ReLU.
    let inputs = [x(24, 7), w(25, c_in, c_in), v(26, c_in), v(27, c_in)];
    out.push(compare(
        "convolution + scale + bias + residual, ReLU",
        1e-5,
        device,
        &inputs,
        &|t| {
            let after = After {
                scale: Some(vector(&t[2])),
                bias: Some(vector(&t[3])),
                residual: Some(t[0].clone()),
                activation: Activation::Relu,
            };
            conv_row(
                &t[0],
                &t[1],
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
                after,
            )
        },
    )?);
    // ReLU6 where its input is exactly 0: a depthwise convolution without bias over a zero region
    // (what a ReLU6 output feeds the next block where a frozen BatchNorm's shift is 0). The CPU's
    // kernels give the gradient 0 there, as PyTorch; burn's clamp gave 1 (`conv::finish`).
    let mut zeros = x(29, 8);
    for (i, value) in zeros.0.iter_mut().enumerate() {
        if i % 64 < 32 {
            *value = 0.0; // the top half of every 8×8 plane
        }
    }
    let inputs = [zeros, w(30, c_in, 1)];
    out.push(compare(
        "depthwise convolution over a zero region, ReLU6 (gradient at exactly 0)",
        1e-5,
        device,
        &inputs,
        &|t| {
            let after = After {
                activation: Activation::Relu6,
                ..After::default()
            };
            let options = ConvOptions::new([1, 1], [1, 1], [1, 1], c_in);
            conv_row(&t[0], &t[1], options, after)
        },
    )?);
    Ok(())
}

/// BatchNorm on batch statistics and the max poolings of VGG-16 and ResNet-101.
fn pooling_and_normalization_operations(device: &Device, out: &mut Sink<'_>) -> Result<()> {
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;

    let (c_in, x) = (C_IN, layer_input);
    // BatchNorm on batch statistics (the strong stages' heads train with it).
    out.push(compare(
        "batch normalization (batch statistics)",
        1e-5,
        device,
        &[x(31, 6)],
        &|t| {
            let bn = burn::nn::BatchNormConfig::new(c_in).init(&t[0].device());
            Ok(vec![flat(bn.forward(t[0].clone()))])
        },
    )?);
    let pools = [
        (
            "max pool 2×2 (VGG-16)",
            MaxPool2dConfig::new([2, 2]).with_strides([2, 2]),
        ),
        (
            "max pool 3×3 stride 2 pad 1 (ResNet-101)",
            MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        ),
    ];
    for (name, config) in pools {
        let pool = config.init();
        out.push(compare(name, 1e-5, device, &[x(28, 8)], &|t| {
            Ok(vec![flat(crate::backbone::pool::max_pool2d(
                &pool,
                t[0].clone(),
            ))])
        })?);
    }
    Ok(())
}

/// Warping, the affine, TPS and composed grids.
fn geometry_operations(device: &Device, inputs: &Inputs, out: &mut Sink<'_>) -> Result<()> {
    let (h, w) = (H, W);
    let Inputs {
        theta_aff,
        theta_tps,
        spline,
    } = inputs;
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

    // Warping at the grid of a θ, as the models warp: the grid is a strided view (see `sample`),
    // and without autodiff burn runs another kernel than under it.
    let image = (uniform(3, B * 3 * h * w, 0.0, 1.0), [B, 3, h, w]);
    let warp_at_theta = |x: &[Tensor<4>]| -> Result<Vec<Tensor<1>>> {
        let d = x[0].device();
        let theta = aff(&constant(theta_aff, &d))?;
        let grid = sampling_grid(&theta, [h, w], GridFactors::default())?;
        Ok(vec![flat(sample(x[0].clone(), grid)?)])
    };
    out.push(compare(
        "warp at an affine θ's grid",
        1e-5,
        device,
        std::slice::from_ref(&image),
        &warp_at_theta,
    )?);
    out.push(compare_by(
        run_forward,
        "warp at an affine θ's grid (inference)",
        1e-5,
        device,
        std::slice::from_ref(&image),
        &warp_at_theta,
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
    Ok(())
}

/// Feature normalization and the correlation layer.
fn correlation_operations(device: &Device, out: &mut Sink<'_>) -> Result<()> {
    let (h, w, c) = (H, W, C);
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
    Ok(())
}

/// The affine and the composed (affine then TPS) inlier counts of `matches`.
///
/// # Shapes
/// - `matches`: `[batch, h·w, h, w]`
/// - outputs: `[batch]` twice
fn inlier_scores(
    a: &AffineTheta,
    t: &TpsTheta,
    spline: &Tps,
    matches: Tensor<4>,
    config: &InlierConfig,
) -> Result<Vec<Tensor<1>>> {
    let composed = Composed {
        affine: a,
        tps: spline.warp(t),
    };
    Ok(vec![
        affine_inlier_score(a, matches.clone(), config)?,
        composed_inlier_score(&composed, matches, config)?,
    ])
}

/// Inlier counts, the grid loss and the WeakAlign objective.
fn loss_operations(device: &Device, inputs: &Inputs, out: &mut Sink<'_>) -> Result<()> {
    let (h, w) = (H, W);
    let Inputs {
        theta_aff,
        theta_tps,
        spline,
    } = inputs;
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
                inlier_scores(&a, &t, spline, x[0].clone(), &config)
            },
        )?);
    }
    // The soft count with respect to θ too (the hard count gives θ no gradient): θ enters as
    // `[B, P, 1, 1]` so that all inputs share one rank.
    let as_4d = |(v, [b, p]): &(Vec<f32>, [usize; 2])| (v.clone(), [*b, *p, 1, 1]);
    let inputs = [matches.clone(), as_4d(theta_aff), as_4d(theta_tps)];
    out.push(compare(
        "soft inlier count (affine, composed) w.r.t. matches, θ_aff, θ_tps",
        1e-4,
        device,
        &inputs,
        &|x| {
            let theta = |t: &Tensor<4>| t.clone().flatten::<2>(1, 3);
            let (a, t) = (aff(&theta(&x[1]))?, tps_t(&theta(&x[2]))?);
            inlier_scores(&a, &t, spline, x[0].clone(), &soft)
        },
    )?);
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
    Ok(())
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

/// Smooth images in `[-1, 1]`: per channel a sum of three sinusoids of one to three cycles across
/// the image, with phases and directions drawn from `seed`. Not white noise: a warp of noise turns
/// a rounding difference in a sampling coordinate into an unrelated neighbour's value, so noise
/// inputs measure the warp's conditioning rather than the device (photos are smooth at that scale).
///
/// # Shapes
/// - output: the `batch · 3 · size²` values of `[batch, 3, size, size]`
fn smooth_images(seed: u64, batch: usize, size: usize) -> Vec<f32> {
    let waves = uniform(seed, batch * 3 * 3 * 4, 0.0, 1.0);
    let mut out = Vec::with_capacity(batch * 3 * size * size);
    for plane in 0..batch * 3 {
        let w = &waves[plane * 12..plane * 12 + 12];
        for y in 0..size {
            for x in 0..size {
                let (u, v) = (x as f32 / size as f32, y as f32 / size as f32);
                let value: f32 = (0..3)
                    .map(|k| {
                        let (fx, fy) = (1.0 + 2.0 * w[4 * k], 1.0 + 2.0 * w[4 * k + 1]);
                        let (phase, amp) = (TAU * w[4 * k + 2], 0.2 + 0.13 * w[4 * k + 3]);
                        amp * (TAU * (fx * u + fy * v) + phase).sin()
                    })
                    .sum();
                out.push(value);
            }
        }
    }
    out
}

/// Tolerances of the model checks: forward (θ, correlations) and each parameter's gradient
/// against its own scale. The CPU's own gradients move by up to 2.2e-3 when its input images move
/// by ±1e-6 (EfficientNet-Lite0, 240²), so a device is held to 1e-2, not to float rounding.
const MODEL_BOUND: Bound = Bound {
    forward: 1e-3,
    gradient: 1e-2,
    floor: 1e-8,
};

/// Image pairs of the model checks: one. Batches are covered by the operations (two each); a
/// second pair would double the device's time and, for VGG-16 at 176², need a 136 MiB buffer
/// (burn's im2col of a convolution's input gradient), past the 128 MiB a storage buffer may have on
/// Mesa's software Vulkan, where burn 0.22 then panics inside its autotuner and hangs.
const MODEL_BATCH: usize = 1;

/// The two-stage model of the checks on `device` (a training device keeps its autodiff): drawn on
/// the CPU from a fixed seed and moved, so both sides hold the same weights. BatchNorm runs on its
/// running statistics everywhere (the weak stage's default and evaluation's), every parameter
/// trainable. Its heads start near the identity θ, as training does by default
/// (`model.identity_init`), with small random weights in their last layers so that every parameter
/// receives a gradient: randomly initialized heads predict warps far outside the image, whose
/// coordinates would amplify rounding instead.
fn check_model(kind: BackboneKind, size: usize, device: &Device) -> Result<TwoStage> {
    let cpu = crate::device::training();
    cpu.seed(7);
    let config = ModelConfig {
        backbone: kind,
        image_size: size,
        identity_init: true,
        ..ModelConfig::default()
    };
    let mut model = config.init_two_stage(&cpu)?;
    let small = |seed, param: &Param<Tensor<2>>| {
        let shape = param.dims();
        let values = uniform(seed, shape.iter().product(), -1e-3, 1e-3);
        Param::from_tensor(Tensor::<2>::from_data(TensorData::new(values, shape), &cpu))
    };
    model.regression_aff.linear.weight = small(31, &model.regression_aff.linear.weight);
    model.regression_tps.linear.weight = small(32, &model.regression_tps.linear.weight);
    crate::model::materialize(&model);
    let mut model = model.fork(device);
    model.backbone = model
        .backbone
        .configure(BatchNormMode::Frozen, Trainable::All);
    model.regression_aff = model.regression_aff.freeze().set_require_grad(true);
    model.regression_tps = model.regression_tps.freeze().set_require_grad(true);
    Ok(model)
}

/// What the checks read off a two-stage forward: θ_aff, θ_tps and both correlations.
///
/// # Shapes
/// - outputs: `[batch·6]`, `[batch·18]`, `[batch·h·w·h·w]` twice
fn model_outputs(out: TwoStageOutput) -> Vec<Vec<f64>> {
    vec![
        read_f64(out.theta_aff.into_tensor()),
        read_f64(out.theta_tps.into_tensor()),
        read_f64(out.corr_aff),
        read_f64(out.corr_aff_tps),
    ]
}

/// A backbone's two-stage model on [`MODEL_BATCH`] smooth image pairs ([`check_model`]): trained
/// as the weak stage trains it (autodiff), the forward and the WeakAlign loss's parameter
/// gradients; and evaluated as `eval` and `align` run it (no autodiff), the forward.
fn model_parity(kind: BackboneKind, device: &Device, size: usize) -> Result<[OpParity; 2]> {
    let images = |d: &Device| {
        let image = |seed| {
            let values = smooth_images(seed, MODEL_BATCH, size);
            Tensor::<4>::from_data(TensorData::new(values, [MODEL_BATCH, 3, size, size]), d)
        };
        (image(11), image(12))
    };
    let train = |device: &Device| -> Result<Run> {
        let d = device.clone().autodiff();
        let model = check_model(kind, size, &d)?;
        let (source, target) = images(&d);
        let out = model.forward(source, target)?;
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
            outputs: model_outputs(out),
            gradients,
        })
    };
    let evaluate = |device: &Device| -> Result<Run> {
        let model = check_model(kind, size, device)?;
        let (source, target) = images(device);
        Ok(Run {
            outputs: model_outputs(model.forward(source, target)?),
            gradients: Vec::new(),
        })
    };
    let name = |what| format!("two-stage {} ({size}²{what})", kind.name());
    Ok([
        side_by_side(name(""), MODEL_BOUND, device, &train)?,
        side_by_side(name(", inference"), MODEL_BOUND, device, &evaluate)?,
    ])
}

/// The whole suite on `device` (models at `size`; `backbones` empty skips them); `report` sees
/// each operation's result as soon as it is known.
pub fn parity(
    device: DeviceChoice,
    backbones: &[BackboneKind],
    size: usize,
    report: &mut dyn FnMut(&OpParity),
) -> Result<Vec<OpParity>> {
    let d = device.inference()?;
    let mut out = Sink {
        results: Vec::new(),
        report,
    };
    operations(&d, &mut out)?;
    for &kind in backbones {
        for row in model_parity(kind, &d, size)? {
            out.push(row);
        }
    }
    Ok(out.results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_sees_a_difference_and_a_length_mismatch() {
        assert_eq!(relative_error(&[1.0, 2.0], &[1.0, 2.0], 1.0), 0.0);
        assert!((relative_error(&[1.0, 2.5], &[1.0, 2.0], 1.0) - 0.25).abs() < 1e-12);
        assert_eq!(relative_error(&[1.0], &[1.0, 2.0], 1.0), f64::INFINITY);
        assert_eq!(relative_error(&[f64::NAN], &[1.0], 1.0), f64::INFINITY);
        // Small values: against the floor, or against their own scale.
        assert!((relative_error(&[1.1e-3], &[1e-3], 1.0) - 1e-4).abs() < 1e-12);
        assert!((relative_error(&[1.1e-3], &[1e-3], 1e-8) - 0.1).abs() < 1e-9);
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
