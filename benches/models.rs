//! `make bench`: two-stage forward on `[8, 3, 240, 240]` for each backbone, and one weak-training
//! step (forward, WeakAlign loss, backward, Adam), timed by `weakalign::bench` as medians of
//! `BENCH_RUNS` runs (default 5) after one warm-up, on the CPU. Writes `target/bench/weakalign.json`; `tools/bench_pytorch.py` times the same
//! architecture in PyTorch and `tools/bench_table.py` writes `docs/benchmarks.md`.
//!
//! Weights are random (timing does not depend on them). Threads: `RAYON_NUM_THREADS` (the
//! Makefile sets 2).

use std::time::Instant;

use weakalign::backbone::BackboneKind;
use weakalign::bench::{BenchOptions, bench_models};
use weakalign::device::DeviceChoice;

const BATCH: usize = 8;
const SIZE: usize = 240;

fn main() {
    weakalign::memory::keep_freed_memory();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("BENCH_BACKBONES").unwrap_or_default();
    let backbones: Vec<BackboneKind> = [
        BackboneKind::Vgg16,
        BackboneKind::ResNet101,
        BackboneKind::EfficientNetLite0,
    ]
    .into_iter()
    .filter(|k| only.is_empty() || only.split(',').any(|b| b == k.name()))
    .collect();
    let profile = std::env::var("BENCH_PROFILE").map_or(true, |v| v != "0");
    // A child process times one backbone and prints its row: each backbone's peak memory is then
    // its own process's.
    if std::env::var("BENCH_CHILD").is_ok() {
        let options = BenchOptions {
            device: DeviceChoice::Cpu,
            batch: BATCH,
            size: SIZE,
            runs,
            backbones,
            profile,
        };
        let results = bench_models(&options, &mut |_| {}).expect("benchmark runs");
        println!("{}", serde_json::to_string(&results).unwrap());
        return;
    }
    let mut results = Vec::new();
    for kind in backbones {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("BENCH_CHILD", "1")
            .env("BENCH_BACKBONES", kind.name())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("the benchmark re-runs itself");
        assert!(out.status.success(), "{} benchmark failed", kind.name());
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        for r in &rows {
            eprintln!(
                "{}: two-stage forward {:.3} s, weak training step {:.3} s (medians of {runs}), peak RSS {:.0} MiB",
                r["backbone"].as_str().unwrap_or("?"),
                r["forward_s"],
                r["train_step_s"],
                r["peak_rss_mib"]
            );
        }
        results.extend(rows);
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
