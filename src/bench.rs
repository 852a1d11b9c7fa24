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
use crate::geometry::{Theta, Tps};
use crate::loss::{InlierConfig, weakalign_loss};
use crate::model::{ModelConfig, TwoStage};

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
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median and samples of `runs` timed calls after one warm-up.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, Vec<f64>)> {
    f()?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    Ok((median(samples.clone()), samples))
}

/// A fixed random batch of images, made on the CPU and moved.
///
/// # Shapes
/// - output: `[batch, 3, size, size]`
fn images(seed: u64, batch: usize, size: usize, device: &Device) -> Tensor<4> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = batch * 3 * size * size;
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    Tensor::from_data(TensorData::new(v, [batch, 3, size, size]), device)
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

/// Times one backbone.
fn bench_one(kind: BackboneKind, o: &BenchOptions) -> Result<BenchRow> {
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
    let (tps, config) = (Tps::new(0.2)?, InlierConfig::default());
    let (src, tgt) = (
        images(1, o.batch, o.size, &train),
        images(2, o.batch, o.size, &train),
    );
    let (train_step_s, train_step_samples) = time(o.runs, || {
        let out = net.forward(src.clone(), tgt.clone())?;
        let loss = weakalign_loss(&out.theta_aff, &out.theta_tps, &tps, out.corr_aff, &config)?;
        let grads = GradientsParams::from_grads(loss.loss.backward(), &net);
        net = optim.step(5e-8, net.clone(), grads);
        let _ = crate::device::read_f64(net.regression_tps.linear.bias.clone().unwrap().val());
        Ok(())
    })?;
    Ok(BenchRow {
        backbone: kind.name(),
        forward_s,
        forward_samples,
        train_step_s,
        train_step_samples,
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
