//! `make bench`: two-stage forward on `[8, 3, 240, 240]` for each backbone, and one weak-training
//! step (forward, WeakAlign loss, backward, Adam), timed as medians of `BENCH_RUNS` runs (default 5)
//! after one warm-up. Writes `target/bench/weakalign.json`; `tools/bench_pytorch.py` times the same
//! architecture in PyTorch and `tools/bench_table.py` writes `docs/benchmarks.md`.
//!
//! Weights are random (timing does not depend on them). Threads: `RAYON_NUM_THREADS` (the
//! Makefile sets 2).

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor};
use weakalign::backbone::{BackboneKind, BatchNormMode, Trainable};
use weakalign::geometry::Tps;
use weakalign::loss::{InlierConfig, weakalign_loss};
use weakalign::model::ModelConfig;

const BATCH: usize = 8;
const SIZE: usize = 240;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> (f64, Vec<f64>) {
    f(); // warm-up
    let samples: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    (median(samples.clone()), samples)
}

fn images(device: &burn::tensor::Device) -> Tensor<4> {
    Tensor::random(
        [BATCH, 3, SIZE, SIZE],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("BENCH_BACKBONES").unwrap_or_default();
    let mut results = Vec::new();
    for kind in [
        BackboneKind::Vgg16,
        BackboneKind::ResNet101,
        BackboneKind::EfficientNetLite0,
    ] {
        if !only.is_empty() && !only.split(',').any(|b| b == kind.name()) {
            continue;
        }
        let config = ModelConfig {
            backbone: kind,
            ..ModelConfig::default()
        };

        let device = weakalign::device::inference();
        let model = config.init_two_stage(&device).unwrap();
        let (src, tgt) = (images(&device), images(&device));
        let (forward, fwd_samples) = time(runs, || {
            let out = model.forward(src.clone(), tgt.clone()).unwrap();
            let _ = out.theta_tps.tensor_values();
        });
        eprintln!(
            "{}: two-stage forward {forward:.3} s (median of {runs})",
            kind.name()
        );

        let device = weakalign::device::training();
        let mut model = config.init_two_stage(&device).unwrap();
        model.backbone = model
            .backbone
            .configure(BatchNormMode::Frozen, Trainable::All);
        let mut optim = AdamConfig::new().init();
        let tps = Tps::new(0.2).unwrap();
        let loss_config = InlierConfig::default();
        let (src, tgt) = (images(&device), images(&device));
        let (step, step_samples) = time(runs, || {
            let out = model.forward(src.clone(), tgt.clone()).unwrap();
            let loss = weakalign_loss(
                &out.theta_aff,
                &out.theta_tps,
                &tps,
                out.corr_aff,
                &loss_config,
            )
            .unwrap()
            .loss;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(5e-8, model.clone(), grads);
        });
        eprintln!(
            "{}: weak training step {step:.3} s (median of {runs})",
            kind.name()
        );
        results.push(serde_json::json!({
            "backbone": kind.name(),
            "forward_s": forward,
            "forward_samples": fwd_samples,
            "train_step_s": step,
            "train_step_samples": step_samples,
        }));
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let loaders = loader_throughput();
    let report = serde_json::json!({
        "framework": "weakalign (burn 0.22 flex)",
        "batch": BATCH, "size": SIZE, "runs": runs, "threads": threads,
        "results": results,
        "loaders": loaders,
    });
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/weakalign.json",
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

trait ReadBack {
    fn tensor_values(&self) -> Vec<f32>;
}

impl ReadBack for weakalign::geometry::TpsTheta {
    /// Reads the result back so that lazy backends finish the work inside the timed region.
    fn tensor_values(&self) -> Vec<f32> {
        use weakalign::geometry::Theta;
        self.tensor()
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }
}

/// Pairs per second delivered by the background loader (2 worker threads, batch 8, 240×240):
/// the embedded dataset, and Caltech-101 weak pairs (JPEG decode, random crop, resize) when
/// `datasets/caltech-101` is linked.
fn loader_throughput() -> Vec<serde_json::Value> {
    use std::sync::Arc;
    use weakalign::backbone::IMAGENET;
    use weakalign::data::embedded::{EmbeddedDataset, EmbeddedPairs, Split};
    use weakalign::data::loader::{EpochBatches, Order, PairSource};
    use weakalign::data::weak::{WeakPairs, build_pair_lists};

    let device = weakalign::device::training();
    let order = Order {
        seed: 1,
        shuffle: true,
        batch_size: BATCH,
        keep_last: false,
    };
    let measure = |name: &str, source: Arc<dyn PairSource>| {
        let batches = 12.min(order.batches_per_epoch(source.len()));
        let t = Instant::now();
        let n: usize = EpochBatches::new(source, order, 0, 0, 2, 2, &device)
            .take(batches)
            .map(|b| b.unwrap().indices.len())
            .sum();
        let rate = n as f64 / t.elapsed().as_secs_f64();
        eprintln!("loader {name}: {rate:.1} pairs/s");
        serde_json::json!({"loader": name, "pairs_per_s": rate})
    };
    let mut out = Vec::new();
    let dataset = Arc::new(EmbeddedDataset::generate(Default::default()));
    out.push(measure(
        "embedded",
        Arc::new(EmbeddedPairs {
            dataset,
            split: Split::Train,
            size: SIZE,
            norm: IMAGENET,
        }),
    ));
    let caltech = std::path::Path::new("datasets/caltech-101/101_ObjectCategories");
    if caltech.is_dir() {
        let lists = build_pair_lists(caltech, 4, 0.2, 1, &["BACKGROUND_Google"]).unwrap();
        let source = WeakPairs {
            root: caltech.to_path_buf(),
            pairs: lists.train,
            augment: true,
            size: SIZE,
            norm: IMAGENET,
            seed: 1,
        };
        out.push(measure("caltech-101 weak pairs", Arc::new(source)));
    }
    out
}
