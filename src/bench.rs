//! Speed of the two-stage model on a device: forward, and one weak training step (forward,
//! WeakAlign loss, backward, Adam), medians of `runs` after one warm-up, random weights. Used by
//! `make bench` (CPU, `benches/models.rs`) and `make bench-gpu` (`weakalign bench --device cuda`,
//! which needs only the binary on the GPU machine).
//!
//! Every timed region ends by reading a value back to the host, so asynchronous backends
//! (CUDA) have finished the work inside it.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::backbone::{BackboneKind, BatchNormMode, Trainable};
use crate::device::DeviceChoice;
use crate::error::Result;
use crate::geometry::{AffineTheta, GridFactors, Theta, Tps, TpsTheta, sample, sampling_grid};
use crate::loss::{InlierConfig, weakalign_loss};
use crate::model::{ModelConfig, TwoStage, correlate};

/// What to time.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Where.
    pub device: DeviceChoice,
    /// Pairs per batch.
    pub batch: usize,
    /// Input side.
    pub size: usize,
    /// Timed runs (after one warm-up).
    pub runs: usize,
    /// Backbones, in order.
    pub backbones: Vec<BackboneKind>,
    /// Also time the parts of a training step ([`profile_step`]).
    pub profile: bool,
}

/// One backbone's timings, seconds.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Backbone name.
    pub backbone: String,
    /// Median two-stage forward.
    pub forward_s: f64,
    /// Every forward sample.
    pub forward_samples: Vec<f64>,
    /// Median weak training step.
    pub train_step_s: f64,
    /// Every step sample.
    pub train_step_samples: Vec<f64>,
    /// Where a training step's time goes (see [`profile_step`]).
    pub profile: Vec<OpTiming>,
    /// Peak resident memory of the process while this backbone ran, MiB (Linux; `None`
    /// elsewhere).
    pub peak_rss_mib: Option<f64>,
}

/// One part of the weak training step, timed alone on the training device: medians of the
/// forward and of forward + backward (its inputs require gradients, as inside the step).
#[derive(Clone, Debug, Serialize)]
pub struct OpTiming {
    /// What: `backbone`, `correlation`, `regression_affine`, `regression_tps`, `warp`
    /// (sampling grid + bilinear sample of the source), `inlier_loss` (both grids, both soft
    /// inlier counts), `adam`.
    pub op: &'static str,
    /// How often one training step runs it.
    pub calls_per_step: usize,
    /// Median forward, seconds per call.
    pub forward_s: f64,
    /// Median forward + backward, seconds per call (for `adam`: the update).
    pub forward_backward_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median and samples of `runs` timed calls after one warm-up (also `make bench-conv`'s timer).
pub fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, Vec<f64>)> {
    time_inside(runs, || {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    })
}

/// Like [`time`], for calls that time their own region (seconds returned) and leave set-up out.
fn time_inside(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<(f64, Vec<f64>)> {
    f()?;
    let samples = (0..runs.max(1)).map(|_| f()).collect::<Result<Vec<_>>>()?;
    Ok((median(samples.clone()), samples))
}

/// Peak resident set size of this process since the last [`reset_peak_rss`], MiB (`VmHWM` in
/// `/proc/self/status`; `None` where there is no procfs).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the kernel's peak-RSS mark for this process (Linux ≥ 4.0; ignored elsewhere), so
/// that each backbone's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A fixed random batch of images (values in `[-2, 2)`), made on the CPU and moved.
///
/// # Shapes
/// - output: `[batch, 3, size, size]`
fn images(seed: u64, batch: usize, size: usize, device: &Device) -> Tensor<4> {
    random(seed, [batch, 3, size, size], 2.0, device)
}

/// A model of `kind` initialized on the CPU and moved to `device`.
fn model(kind: BackboneKind, size: usize, device: &Device) -> Result<TwoStage> {
    let config = ModelConfig {
        backbone: kind,
        image_size: size,
        ..ModelConfig::default()
    };
    config.init_two_stage_seeded(1, device)
}

/// Random values in `[-range, range)`, made on the CPU and moved.
///
/// # Shapes
/// - output: `shape`
fn random<const D: usize>(seed: u64, shape: [usize; D], range: f32, device: &Device) -> Tensor<D> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-range..range)).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// One weak training step as the benchmark times it: forward, WeakAlign loss (λ = 0.2, default
/// inlier count), backward, Adam (lr 5e-8), ending with a read-back. Returns the updated model
/// and the seconds the Adam update alone took.
///
/// # Shapes
/// - `src`, `tgt`: `[batch, 3, S, S]`
fn weak_step(
    net: TwoStage,
    optim: &mut burn::optim::ModuleOptimizer,
    src: &Tensor<4>,
    tgt: &Tensor<4>,
) -> Result<(TwoStage, f64)> {
    let out = net.forward(src.clone(), tgt.clone())?;
    let (tps, config) = (Tps::new(0.2)?, InlierConfig::default());
    let loss = weakalign_loss(&out.theta_aff, &out.theta_tps, &tps, out.corr_aff, &config)?;
    let grads = GradientsParams::from_grads(loss.loss.backward(), &net);
    let t = Instant::now();
    let net = optim.step(5e-8, net, grads);
    let _ = crate::device::read_f64(net.regression_tps.linear.bias.clone().unwrap().val());
    Ok((net, t.elapsed().as_secs_f64()))
}

/// The inputs of every part of the step, on one device: `src` `[batch, 3, S, S]`, `f_src` and
/// `f_tgt` `[batch, c, h, w]`, `corr` `[batch, h·w, h, w]`, `theta_aff` `[batch, 6]`,
/// `theta_tps` `[batch, 18]`.
struct Parts {
    net: TwoStage,
    src: Tensor<4>,
    f_src: Tensor<4>,
    f_tgt: Tensor<4>,
    corr: Tensor<4>,
    theta_aff: Tensor<2>,
    theta_tps: Tensor<2>,
}

impl Parts {
    /// The same parts without autodiff (the model's `valid()` copy, inputs' inner tensors);
    /// shapes unchanged.
    fn untracked(&self) -> Parts {
        Parts {
            net: self.net.valid(),
            src: self.src.clone().inner(),
            f_src: self.f_src.clone().inner(),
            f_tgt: self.f_tgt.clone().inner(),
            corr: self.corr.clone().inner(),
            theta_aff: self.theta_aff.clone().inner(),
            theta_tps: self.theta_tps.clone().inner(),
        }
    }
}

/// Median forward of `f` on `untracked` (no autodiff, as inference runs it) and forward +
/// backward of the sum of its output on `tracked`.
///
/// # Shapes
/// - `f`'s output: any `[d0, …]` (summed to one value for the backward)
fn time_op<const D: usize>(
    runs: usize,
    [untracked, tracked]: [&Parts; 2],
    f: impl Fn(&Parts) -> Result<Tensor<D>>,
) -> Result<(f64, f64)> {
    let (forward_s, _) = time(runs, || {
        let _ = crate::device::read_f64(f(untracked)?.sum());
        Ok(())
    })?;
    let (forward_backward_s, _) = time(runs, || {
        drop(f(tracked)?.sum().backward());
        Ok(())
    })?;
    Ok((forward_s, forward_backward_s))
}

/// Where a weak training step's time goes: each part of it timed alone, with the step's shapes
/// (`net`: frozen BatchNorm, every parameter trainable, on the training device). The parts times
/// their calls per step add up to about the step (the table shows both, so the rest is visible).
///
/// # Shapes
/// - `src`, `tgt`: `[batch, 3, S, S]`
pub fn profile_step(
    net: &TwoStage,
    src: &Tensor<4>,
    tgt: &Tensor<4>,
    runs: usize,
) -> Result<Vec<OpTiming>> {
    let device = net.device();
    let [batch, _, size, _] = src.dims();
    let [_, channels, h, w] = net.backbone.forward(src.clone().inner()).dims();
    let (l2, norm) = (net.normalize_features, net.normalize_matches);
    let fixed = |seed, dims: [usize; 4]| random(seed, dims, 1.0, &device).require_grad();
    let (f_src, f_tgt) = (
        fixed(3, [batch, channels, h, w]),
        fixed(4, [batch, channels, h, w]),
    );
    let corr = correlate(f_src.clone(), f_tgt.clone(), l2, norm)?
        .detach()
        .require_grad();
    let near_identity = |identity: Tensor<2>, seed| {
        let [b, n] = identity.dims();
        (identity + random(seed, [b, n], 1.0, &device) * 0.05)
            .detach()
            .require_grad()
    };
    let dtype = src.dtype();
    let tracked = Parts {
        net: net.clone(),
        src: src.clone(),
        f_src,
        f_tgt,
        corr,
        theta_aff: near_identity(
            AffineTheta::identity(batch, &device, dtype).into_tensor(),
            5,
        ),
        theta_tps: near_identity(TpsTheta::identity(batch, &device, dtype).into_tensor(), 6),
    };
    let untracked = tracked.untracked();
    let both = [&untracked, &tracked];
    let (tps, config) = (Tps::new(0.2)?, InlierConfig::default());

    let mut rows = Vec::new();
    let mut push = |op, calls_per_step, (forward_s, forward_backward_s)| {
        rows.push(OpTiming {
            op,
            calls_per_step,
            forward_s,
            forward_backward_s,
        })
    };
    push(
        "backbone",
        3,
        time_op(runs, both, |p| Ok(p.net.backbone.forward(p.src.clone())))?,
    );
    push(
        "correlation",
        2,
        time_op(runs, both, |p| {
            correlate(p.f_src.clone(), p.f_tgt.clone(), l2, norm)
        })?,
    );
    push(
        "regression_affine",
        1,
        time_op(runs, both, |p| {
            Ok(p.net.regression_aff.forward(p.corr.clone())?.into_tensor())
        })?,
    );
    push(
        "regression_tps",
        1,
        time_op(runs, both, |p| {
            Ok(p.net.regression_tps.forward(p.corr.clone())?.into_tensor())
        })?,
    );
    push(
        "warp",
        1,
        time_op(runs, both, |p| {
            let theta = AffineTheta::new(p.theta_aff.clone())?;
            let grid = sampling_grid(&theta, [size, size], GridFactors::default())?;
            sample(p.src.clone(), grid)
        })?,
    );
    push(
        "inlier_loss",
        1,
        time_op(runs, both, |p| {
            let aff = AffineTheta::new(p.theta_aff.clone())?;
            let tps_theta = TpsTheta::new(p.theta_tps.clone())?;
            let loss = weakalign_loss(&aff, &tps_theta, &tps, p.corr.clone(), &config)?;
            Ok(loss.loss.unsqueeze::<1>())
        })?,
    );

    let mut model = net.clone();
    let mut optim = AdamConfig::new().init();
    let (adam_s, _) = time_inside(runs, || {
        let (next, update_s) = weak_step(model.clone(), &mut optim, src, tgt)?;
        model = next;
        Ok(update_s)
    })?;
    push("adam", 1, (0.0, adam_s));
    Ok(rows)
}

/// Times one backbone.
fn bench_one(kind: BackboneKind, o: &BenchOptions) -> Result<BenchRow> {
    reset_peak_rss();
    let device = o.device.inference()?;
    let net = model(kind, o.size, &device)?.valid();
    let (src, tgt) = (
        images(1, o.batch, o.size, &device),
        images(2, o.batch, o.size, &device),
    );
    let (forward_s, forward_samples) = time(o.runs, || {
        let out = net.forward(src.clone(), tgt.clone())?;
        let _ = crate::device::read_f64(out.theta_tps.into_tensor());
        Ok(())
    })?;

    let train = o.device.training()?;
    let mut net = model(kind, o.size, &train)?;
    net.backbone = net
        .backbone
        .configure(BatchNormMode::Frozen, Trainable::All);
    let mut optim = AdamConfig::new().init();
    let (src, tgt) = (
        images(1, o.batch, o.size, &train),
        images(2, o.batch, o.size, &train),
    );
    let (train_step_s, train_step_samples) = time(o.runs, || {
        net = weak_step(net.clone(), &mut optim, &src, &tgt)?.0;
        Ok(())
    })?;
    let peak_rss_mib = peak_rss_mib();
    let profile = if o.profile {
        profile_step(&net, &src, &tgt, o.runs)?
    } else {
        Vec::new()
    };
    Ok(BenchRow {
        backbone: kind.name(),
        forward_s,
        forward_samples,
        train_step_s,
        train_step_samples,
        profile,
        peak_rss_mib,
    })
}

/// Times every backbone of `o`; `report` hears each finished row.
pub fn bench_models(o: &BenchOptions, report: &mut dyn FnMut(&BenchRow)) -> Result<Vec<BenchRow>> {
    o.backbones
        .iter()
        .map(|&kind| {
            let row = bench_one(kind, o)?;
            report(&row);
            Ok(row)
        })
        .collect()
}
