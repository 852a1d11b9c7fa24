//! Max pooling (`weakalign::backbone::pool::max_pool2d`): output and gradient against burn's
//! `MaxPool2d`, the gradient against central finite differences (f64), ties and NaN as in
//! PyTorch, and the inference path (f32, no autodiff).

use burn::nn::PaddingConfig2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Tensor, TensorData};
use proptest::prelude::*;
use weakalign::backbone::pool::max_pool2d;

use crate::common::{assert_close, cases, f32_device, f64_device, gradcheck, tensor, values};

/// A pooling problem: the module and an input.
#[derive(Clone, Debug)]
struct Case {
    kernel: [usize; 2],
    stride: [usize; 2],
    /// (top, left, bottom, right)
    padding: [usize; 4],
    x: Vec<f64>,
    shape: [usize; 4],
}

impl Case {
    fn pool(&self) -> MaxPool2d {
        let [t, l, b, r] = self.padding;
        MaxPool2dConfig::new(self.kernel)
            .with_strides(self.stride)
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .init()
    }
}

/// The backbones' windows (VGG's 2×2 stride 2, ResNet's 3×3 stride 2 padding 1) and others
/// (overlapping, rectangular, asymmetric padding, odd sides that leave a remainder), on 1–2
/// images of 1–3 channels. Values are distinct (a shuffled ramp), so the maximum is unique and
/// finite differences are valid.
fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(([2usize, 2], [2usize, 2], [0usize, 0, 0, 0])),
            Just(([3, 3], [2, 2], [1, 1, 1, 1])),
            Just(([3, 3], [1, 1], [1, 1, 1, 1])),
            Just(([2, 3], [1, 2], [0, 1, 1, 0])),
        ],
        1..=2usize,
        1..=3usize,
        [0..=4usize, 0..=4usize],
    )
        .prop_flat_map(|((kernel, stride, padding), batch, channels, extra)| {
            let shape = [batch, channels, kernel[0] + extra[0], kernel[1] + extra[1]];
            let n: usize = shape.iter().product();
            Just((0..n).collect::<Vec<_>>())
                .prop_shuffle()
                .prop_map(move |order| Case {
                    kernel,
                    stride,
                    padding,
                    x: order.iter().map(|&i| i as f64 / n as f64 - 0.5).collect(),
                    shape,
                })
        })
}

/// Fixed weights like `y` for a scalar `Σ r ⊙ y` whose gradient differs element by element.
fn probe(dims: [usize; 4]) -> Tensor<4> {
    let n = dims.iter().product();
    let r = (0..n)
        .map(|i| ((i * 7919) % 13) as f64 / 6.0 - 1.0)
        .collect();
    let opts = f64_device();
    Tensor::<4>::from_data(TensorData::new(r, dims), (&opts.0, opts.1))
}

/// Output and the gradient of `Σ r ⊙ y` w.r.t. the input (f64, autodiff).
fn run(c: &Case, f: impl Fn(&MaxPool2d, Tensor<4>) -> Tensor<4>) -> [Vec<f64>; 2] {
    let x = tensor(&c.x, c.shape, f64_device()).require_grad();
    let y = f(&c.pool(), x.clone());
    let grads = (y.clone() * probe(y.dims())).sum().backward();
    [values(y), values(x.grad(&grads).unwrap())]
}

proptest! {
    #![proptest_config(cases(32))]

    #[test]
    fn max_pool_matches_burn_output_and_gradient(c in case()) {
        let ours = run(&c, max_pool2d);
        let burn = run(&c, |pool, x| pool.forward(x));
        assert_close("output", &ours[0], &burn[0], 0.0, 0.0);
        assert_close("dx", &ours[1], &burn[1], 0.0, 0.0);
    }

    #[test]
    fn grad_max_pool(c in case()) {
        let pool = c.pool();
        let dims = {
            let x = tensor(&c.x, c.shape, f64_device());
            max_pool2d(&pool, x).dims()
        };
        gradcheck("max_pool/x", &c.x, c.shape, |x| max_pool2d(&pool, x) * probe(dims));
    }
}

/// Ties go to the first maximum in row-major window order (PyTorch's and burn's rule: ReLU
/// outputs are full of equal zeros), NaN wins (a diverging run must show), and the f32 inference
/// path gives the same values.
#[test]
fn max_pool_ties_nan_and_inference() {
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    #[rustfmt::skip]
    let x = [
        0.0, 0.0, 1.0, 2.0,
        0.0, 0.0, 2.0, f64::NAN,
        3.0, 3.0, -1.0, -2.0,
        3.0, 1.0, -3.0, -1.0,
    ];
    let input = tensor(&x, [1, 1, 4, 4], f64_device()).require_grad();
    let y = max_pool2d(&pool, input.clone());
    let got = values(y.clone());
    assert_eq!(got[0], 0.0);
    assert!(got[1].is_nan(), "NaN must propagate: {got:?}");
    assert_eq!(got[2..], [3.0, -1.0]);
    let grads = (y * probe([1, 1, 2, 2])).sum().backward();
    let dx = values(input.grad(&grads).unwrap());
    let r = values(probe([1, 1, 2, 2]));
    let mut want = [0.0; 16];
    (want[0], want[7], want[8], want[14 - 4]) = (r[0], r[1], r[2], r[3]);
    assert_eq!(
        dx, want,
        "the gradient goes to the first maximum, and to the NaN"
    );

    let x32 = tensor(&[1.0, 5.0, 2.0, 4.0], [1, 1, 2, 2], f32_device());
    assert_eq!(values(max_pool2d(&pool, x32)), [5.0]);
}
