//! `make bench-conv`: every distinct convolution of the three backbones (batch 8, 240² input),
//! forward and backward (input and weight gradients) through our CPU kernels
//! (`weakalign::backbone::conv::kernels`), medians of `BENCH_RUNS` runs (default 3) after one
//! warm-up. Writes `target/bench/conv_layers.json`; `tools/bench_conv_pytorch.py` times the same
//! list with PyTorch's `conv2d` and prints both side by side, weighted by how often each layer
//! occurs in its backbone. The per-layer profile behind issue 11's kernel work.

use weakalign::backbone::conv::kernels::{self, ConvGeometry, Epilogue, Upstream};

const BATCH: usize = 8;

/// One layer: backbone, how many times it occurs, c_in, c_out, input side, kernel, stride,
/// padding (begin, end), depthwise.
type Layer = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    (usize, usize),
    bool,
);

#[rustfmt::skip]
const LAYERS: &[Layer] = &[
    ("vgg16", 1, 3, 64, 240, 3, 1, (1, 1), false),
    ("vgg16", 1, 64, 64, 240, 3, 1, (1, 1), false),
    ("vgg16", 1, 64, 128, 120, 3, 1, (1, 1), false),
    ("vgg16", 1, 128, 128, 120, 3, 1, (1, 1), false),
    ("vgg16", 1, 128, 256, 60, 3, 1, (1, 1), false),
    ("vgg16", 2, 256, 256, 60, 3, 1, (1, 1), false),
    ("vgg16", 1, 256, 512, 30, 3, 1, (1, 1), false),
    ("vgg16", 2, 512, 512, 30, 3, 1, (1, 1), false),
    ("resnet101", 1, 3, 64, 240, 7, 2, (3, 3), false),
    ("resnet101", 1, 64, 64, 60, 1, 1, (0, 0), false),
    ("resnet101", 3, 64, 64, 60, 3, 1, (1, 1), false),
    ("resnet101", 4, 64, 256, 60, 1, 1, (0, 0), false),
    ("resnet101", 2, 256, 64, 60, 1, 1, (0, 0), false),
    ("resnet101", 1, 256, 128, 60, 1, 1, (0, 0), false),
    ("resnet101", 1, 128, 128, 60, 3, 2, (1, 1), false),
    ("resnet101", 4, 128, 512, 30, 1, 1, (0, 0), false),
    ("resnet101", 1, 256, 512, 60, 1, 2, (0, 0), false),
    ("resnet101", 3, 512, 128, 30, 1, 1, (0, 0), false),
    ("resnet101", 3, 128, 128, 30, 3, 1, (1, 1), false),
    ("resnet101", 1, 512, 256, 30, 1, 1, (0, 0), false),
    ("resnet101", 1, 256, 256, 30, 3, 2, (1, 1), false),
    ("resnet101", 23, 256, 1024, 15, 1, 1, (0, 0), false),
    ("resnet101", 1, 512, 1024, 30, 1, 2, (0, 0), false),
    ("resnet101", 22, 1024, 256, 15, 1, 1, (0, 0), false),
    ("resnet101", 22, 256, 256, 15, 3, 1, (1, 1), false),
    ("efficientnet_lite0", 1, 3, 32, 240, 3, 2, (0, 1), false),
    ("efficientnet_lite0", 1, 32, 32, 120, 3, 1, (1, 1), true),
    ("efficientnet_lite0", 1, 32, 16, 120, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 1, 16, 96, 120, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 1, 96, 96, 120, 3, 2, (0, 1), true),
    ("efficientnet_lite0", 1, 96, 24, 60, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 2, 24, 144, 60, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 1, 144, 144, 60, 3, 1, (1, 1), true),
    ("efficientnet_lite0", 1, 144, 24, 60, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 1, 144, 144, 60, 5, 2, (1, 2), true),
    ("efficientnet_lite0", 1, 144, 40, 30, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 2, 40, 240, 30, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 1, 240, 240, 30, 5, 1, (2, 2), true),
    ("efficientnet_lite0", 1, 240, 40, 30, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 1, 240, 240, 30, 3, 2, (0, 1), true),
    ("efficientnet_lite0", 1, 240, 80, 15, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 3, 80, 480, 15, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 2, 480, 480, 15, 3, 1, (1, 1), true),
    ("efficientnet_lite0", 2, 480, 80, 15, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 1, 480, 480, 15, 5, 1, (2, 2), true),
    ("efficientnet_lite0", 1, 480, 112, 15, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 2, 112, 672, 15, 1, 1, (0, 0), false),
    ("efficientnet_lite0", 2, 672, 672, 15, 5, 1, (2, 2), true),
    ("efficientnet_lite0", 2, 672, 112, 15, 1, 1, (0, 0), false),
];

/// Median seconds of `runs` calls of `f` after one warm-up ([`weakalign::bench::time`]).
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    let timed = weakalign::bench::time(runs, || {
        f();
        Ok(())
    });
    timed.expect("the timed kernels do not fail").0
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    weakalign::memory::keep_freed_memory();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("BENCH_BACKBONES").unwrap_or_default();
    let mut rows = Vec::new();
    for &(backbone, count, c_in, c_out, size, k, s, pad, depthwise) in LAYERS {
        if !only.is_empty() && !only.split(',').any(|b| b == backbone) {
            continue;
        }
        let g = ConvGeometry {
            batch: BATCH,
            c_in,
            size_in: [size, size],
            c_out,
            kernel: [k, k],
            stride: [s, s],
            padding: [pad, pad],
            depthwise,
        };
        let [x_len, w_len, y_len] = g.lens();
        let (x, w, dy) = (values(x_len, 1), values(w_len, 2), values(y_len, 3));
        let fwd = median(runs, || {
            std::hint::black_box(kernels::forward(&g, &x, &w, None, &Epilogue::NONE));
        });
        let bwd = median(runs, || {
            let up = Upstream {
                dy: &dy,
                through: None,
            };
            let want = [true, true, false, false];
            std::hint::black_box(kernels::backward(&g, [&x, &w], None, up, want));
        });
        let [h_out, w_out] = g.size_out();
        let per_out = if depthwise { k * k } else { c_in * k * k };
        let gflop = 2.0 * (BATCH * c_out * h_out * w_out * per_out) as f64 / 1e9;
        eprintln!(
            "{backbone:>18} ×{count:<2} {c_in:>4}→{c_out:<4} {size:>3}² k{k} s{s}{} fwd {fwd:.4} s ({:.0} GFLOP/s) bwd {bwd:.4} s ({:.0} GFLOP/s)",
            if depthwise { " dw" } else { "   " },
            gflop / fwd,
            2.0 * gflop / bwd
        );
        rows.push(serde_json::json!({
            "backbone": backbone, "count": count, "c_in": c_in, "c_out": c_out, "size": size,
            "kernel": k, "stride": s, "padding": [pad.0, pad.1], "depthwise": depthwise,
            "batch": BATCH, "forward_s": fwd, "backward_s": bwd, "gflop": gflop,
        }));
    }
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/conv_layers.json",
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
}
