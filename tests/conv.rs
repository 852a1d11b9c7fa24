//! The backbones' convolution seam (`weakalign::backbone::conv`): outputs and gradients against
//! burn's convolution, gradients against central finite differences (f64), and `Conv2d` modules
//! (explicit and TF "SAME" padding, strides) through `conv` against `Conv2d::forward`; the fused
//! block `a(conv(x, W·s) + t + r)` against burn's ops composed, and against finite differences in
//! every input; convolution + frozen batch normalization (`norm::conv_bn`) against burn's modules.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use proptest::prelude::*;
use weakalign::backbone::conv::kernels::{self, Algorithm, ConvGeometry, Epilogue, Upstream};
use weakalign::backbone::conv::{Activation, After, conv2d, conv2d_with, forward as conv};

use crate::common::{assert_close, cases, f32_device, f64_device, gradcheck, tensor, values};

/// A convolution problem: shapes, options and values.
#[derive(Clone, Debug)]
struct Case {
    x: Vec<f64>,
    x_shape: [usize; 4],
    w: Vec<f64>,
    w_shape: [usize; 4],
    bias: Vec<f64>,
    stride: [usize; 2],
    padding: [(usize, usize); 2],
    groups: usize,
}

impl Case {
    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new_with_padding(self.stride, self.padding, [1, 1], self.groups)
    }

    /// Whether the kernel fits the padded input.
    fn fits(&self) -> bool {
        (0..2).all(|a| {
            self.x_shape[2 + a] + self.padding[a].0 + self.padding[a].1 >= self.w_shape[2 + a]
        })
    }

    /// The kernels' geometry of a dense problem.
    fn geometry(&self) -> ConvGeometry {
        ConvGeometry {
            batch: self.x_shape[0],
            c_in: self.x_shape[1],
            size_in: [self.x_shape[2], self.x_shape[3]],
            c_out: self.w_shape[0],
            kernel: [self.w_shape[2], self.w_shape[3]],
            stride: self.stride,
            padding: self.padding,
            depthwise: false,
        }
    }
}

/// Random problems the kernel fits: 1–3 images, 1–6 channels in (up to 4 the dense kernels gather
/// the taps into one product, above they run one per tap), 1–4 out, dense or depthwise,
/// kernels 1–3 (and 7×7, ResNet's stem), strides 1–2, padding 0–2 per side (asymmetric
/// included).
fn case() -> impl Strategy<Value = Case> {
    (
        (1..=3usize, 1..=6usize, 1..=4usize, any::<bool>()),
        prop_oneof![
            Just([1usize, 1]),
            Just([3, 3]),
            Just([2, 3]),
            Just([7, 7]),
            Just([5, 5])
        ],
        prop_oneof![Just([1usize, 1]), Just([2, 2]), Just([1, 2])],
        [(0..=2usize, 0..=2usize), (0..=2usize, 0..=2usize)],
        [0..=5usize, 0..=5usize],
    )
        .prop_flat_map(
            |((batch, c_in, c_out, depthwise), kernel, stride, padding, extra)| {
                let size = [0, 1].map(|a| {
                    (kernel[a] + extra[a])
                        .saturating_sub(padding[a].0 + padding[a].1)
                        .max(1)
                });
                let depthwise = depthwise && c_in > 1;
                let (c_out, c_in_w, groups) = if depthwise {
                    (c_in, 1, c_in)
                } else {
                    (c_out, c_in, 1)
                };
                let x_shape = [batch, c_in, size[0], size[1]];
                let w_shape = [c_out, c_in_w, kernel[0], kernel[1]];
                case_values(x_shape, w_shape, stride, padding, groups)
            },
        )
        .prop_filter("the kernel fits the padded input", Case::fits)
}

/// Random values in [-1, 1) for the input, weight and bias of a problem of these shapes.
fn case_values(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    stride: [usize; 2],
    padding: [(usize, usize); 2],
    groups: usize,
) -> impl Strategy<Value = Case> {
    let n = |s: [usize; 4]| s.iter().product::<usize>();
    (
        prop::collection::vec(-1.0..1.0f64, n(x_shape)),
        prop::collection::vec(-1.0..1.0f64, n(w_shape)),
        prop::collection::vec(-1.0..1.0f64, w_shape[0]),
    )
        .prop_map(move |(x, w, bias)| Case {
            x,
            x_shape,
            w,
            w_shape,
            bias,
            stride,
            padding,
            groups,
        })
}

/// Fixed weights like `y` for a scalar `Σ r ⊙ y` whose gradient differs element by element.
fn probe(y: &Tensor<4>) -> Tensor<4> {
    let opts = f64_device();
    let r = (0..y.dims().iter().product::<usize>())
        .map(|i| ((i * 7919) % 13) as f64 / 6.0 - 1.0)
        .collect();
    Tensor::<4>::from_data(TensorData::new(r, y.dims()), (&opts.0, opts.1))
}

/// `a(y)` with burn's activation functions (the reference the fused pass is checked against).
fn activate(y: Tensor<4>, activation: Activation) -> Tensor<4> {
    match activation {
        Activation::Identity => y,
        Activation::Relu => burn::tensor::activation::relu(y),
        Activation::Relu6 => burn::tensor::activation::relu6(y),
    }
}

/// Output and the gradients of `Σ r ⊙ y` w.r.t. input, weight and bias (f64, autodiff).
fn run(
    c: &Case,
    f: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>,
) -> [Vec<f64>; 4] {
    let opts = f64_device();
    let x = tensor(&c.x, c.x_shape, opts.clone()).require_grad();
    let w = tensor(&c.w, c.w_shape, opts.clone()).require_grad();
    let b = tensor(&c.bias, [c.bias.len()], opts.clone()).require_grad();
    let y = f(x.clone(), w.clone(), Some(b.clone()), c.options());
    let grads = (y.clone() * probe(&y)).sum().backward();
    [
        values(y),
        values(x.grad(&grads).unwrap()),
        values(w.grad(&grads).unwrap()),
        values(b.grad(&grads).unwrap()),
    ]
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn shift_conv_matches_burn_output_and_gradients(c in case()) {
        let ours = run(&c, conv2d);
        let burn = run(&c, burn::tensor::module::conv2d);
        for (what, (a, b)) in ["output", "dx", "dweight", "dbias"].iter().zip(ours.iter().zip(&burn)) {
            assert_close(what, a, b, 1e-10, 1e-10);
        }
    }

    #[test]
    fn grad_shift_conv_wrt_input(c in case()) {
        let (w, options) = (tensor(&c.w, c.w_shape, f64_device()), c.options());
        gradcheck("conv/x", &c.x, c.x_shape, |x| conv2d(x, w.clone(), None, options.clone()));
    }

    #[test]
    fn grad_shift_conv_wrt_weight(c in case()) {
        let (x, options) = (tensor(&c.x, c.x_shape, f64_device()), c.options());
        gradcheck("conv/w", &c.w, c.w_shape, |w| conv2d(x.clone(), w, None, options.clone()));
    }
}

/// The modules the backbones use, in f32 on the inference device: VGG's 3×3 (padding 1),
/// ResNet's 7×7 stride-2 stem and 1×1 stride-2 downsample, EfficientNet's "SAME" stride-2 stem
/// (asymmetric padding), pointwise and depthwise convolutions; a grouped (not depthwise)
/// convolution takes burn's path.
#[test]
fn shift_conv_modules_match_conv2d_forward() {
    let device = f32_device().0;
    let configs = [
        Conv2dConfig::new([3, 8], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        Conv2dConfig::new([3, 8], [7, 7])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
            .with_bias(false),
        Conv2dConfig::new([3, 8], [1, 1])
            .with_stride([2, 2])
            .with_bias(false),
        Conv2dConfig::new([3, 8], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Same)
            .with_bias(false),
        Conv2dConfig::new([3, 8], [1, 1]).with_padding(PaddingConfig2d::Same),
        Conv2dConfig::new([3, 3], [5, 5])
            .with_groups(3)
            .with_padding(PaddingConfig2d::Same),
        Conv2dConfig::new([3, 3], [3, 3])
            .with_stride([2, 2])
            .with_groups(3)
            .with_padding(PaddingConfig2d::Same)
            .with_bias(false),
        Conv2dConfig::new([4, 6], [3, 3]).with_groups(2),
    ];
    for (i, config) in configs.iter().enumerate() {
        let c_in = config.channels[0];
        let x = tensor(
            &crate::common::wave(2 * c_in * 17 * 16, 0.3),
            [2, c_in, 17, 16],
            f32_device(),
        );
        let module = config.init(&device);
        let want = values(module.forward(x.clone()));
        let got = values(conv(&module, x.clone()));
        assert_close(&format!("module {i}"), &got, &want, 1e-5, 1e-5);
    }
}

/// Same inputs, same bits: the images are shared out to threads in fixed groups and the weight
/// gradient is summed in group order.
#[test]
fn shift_conv_is_deterministic() {
    let opts = f64_device();
    let x = tensor(
        &crate::common::wave(4 * 3 * 9 * 9, 0.1),
        [4, 3, 9, 9],
        opts.clone(),
    );
    let w0 = tensor(
        &crate::common::wave(5 * 3 * 3 * 3, 0.2),
        [5, 3, 3, 3],
        opts.clone(),
    );
    let run = || {
        let w = w0.clone().require_grad();
        let y = conv2d(
            x.clone(),
            w.clone(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let grads = (y.clone() * y.clone()).sum().backward();
        (values(y), values(w.grad(&grads).unwrap()))
    };
    assert_eq!(run(), run());
}

/// `bn(x)` through `norm::conv_bn` behind a 1×1 identity convolution (no bias): batch
/// normalization folded the way the backbones run it.
fn folded_batch_norm(bn: &burn::nn::BatchNorm, x: Tensor<4>) -> Tensor<4> {
    use burn::module::Param;
    use weakalign::backbone::norm;

    let c = x.dims()[1];
    let opts = f64_device();
    let eye: Vec<f64> = (0..c * c)
        .map(|k| f64::from(u8::from(k / c == k % c)))
        .collect();
    let mut identity = Conv2dConfig::new([c, c], [1, 1])
        .with_bias(false)
        .init(&opts.0);
    identity.weight = Param::from_tensor(tensor(&eye, [c, c, 1, 1], opts));
    norm::conv_bn(&identity, bn, x, None, Activation::Identity)
}

/// Batch normalization with running statistics as one affine map equals burn's `BatchNorm`,
/// forward and (on the training device, frozen) the gradients to the input, γ and β.
#[test]
fn folded_batch_norm_matches_burn() {
    use burn::module::{Module, Param, RunningState};
    use burn::nn::BatchNormConfig;

    let opts = f64_device();
    let vector = |seed: f64, offset: f64| {
        let v: Vec<f64> = crate::common::wave(4, seed)
            .iter()
            .map(|v| v + offset)
            .collect();
        tensor(&v, [4], opts.clone())
    };
    let mut bn = BatchNormConfig::new(4).with_epsilon(1e-3).init(&opts.0);
    bn.gamma = Param::from_tensor(vector(0.1, 1.0));
    bn.beta = Param::from_tensor(vector(0.2, 0.0));
    bn.running_mean = RunningState::new(vector(0.3, 0.0));
    bn.running_var = RunningState::new(vector(0.4, 1.5));
    let bn = bn.freeze().set_require_grad(true); // as `Backbone::configure(Frozen, All)`
    assert!(
        !bn.training.is_enabled(),
        "the folded path is the one under test"
    );
    let x0 = crate::common::wave(2 * 4 * 5 * 3, 0.5);
    let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
        let x = tensor(&x0, [2, 4, 5, 3], opts.clone()).require_grad();
        let y = f(x.clone());
        let grads = (y.clone() * y.clone()).sum().backward();
        [
            values(y),
            values(x.grad(&grads).unwrap()),
            values(bn.gamma.val().grad(&grads).unwrap()),
            values(bn.beta.val().grad(&grads).unwrap()),
        ]
    };
    let ours = run(&|x| folded_batch_norm(&bn, x));
    let burn = run(&|x| bn.forward(x));
    for (what, (a, b)) in ["output", "dx", "dgamma", "dbeta"]
        .iter()
        .zip(ours.iter().zip(&burn))
    {
        assert_close(what, a, b, 1e-12, 1e-12);
    }
}

/// Larger images (several thousand pixels per plane, three images shared out to the threads in
/// uneven groups): same results as burn's convolution, dense and depthwise.
#[test]
fn shift_conv_large_planes_match_burn() {
    for (x_shape, kernel, stride, padding, groups) in [
        ([3, 2, 70, 66], 3, 1, 1, 1),
        ([3, 2, 70, 66], 1, 1, 0, 1),
        ([2, 3, 140, 70], 3, 2, 1, 1),
        ([3, 2, 70, 66], 3, 1, 1, 2),
    ] {
        let c_out = if groups == 1 { 3 } else { 2 };
        let w_shape = [c_out, x_shape[1] / groups, kernel, kernel];
        let n = |s: [usize; 4]| s.iter().product::<usize>();
        let c = Case {
            x: crate::common::wave(n(x_shape), 0.7),
            x_shape,
            w: crate::common::wave(n(w_shape), 0.9),
            w_shape,
            bias: vec![0.1; c_out],
            stride: [stride; 2],
            padding: [(padding, padding); 2],
            groups,
        };
        let (ours, burn) = (run(&c, conv2d), run(&c, burn::tensor::module::conv2d));
        for (what, (a, b)) in ["output", "dx", "dweight", "dbias"]
            .iter()
            .zip(ours.iter().zip(&burn))
        {
            assert_close(&format!("{what} {x_shape:?}"), a, b, 1e-9, 1e-9);
        }
    }
}

/// Random 3×3 stride-1 problems Winograd's F(2×2, 3×3) fits, 16–20 channels in and out: odd
/// and even sides (partial last tiles), padding 0–2 per side (asymmetric included).
fn winograd_case() -> impl Strategy<Value = Case> {
    (
        (1..=3usize, 16..=20usize, 16..=20usize),
        [(0..=2usize, 0..=2usize), (0..=2usize, 0..=2usize)],
        [1..=7usize, 1..=7usize],
    )
        .prop_flat_map(|((batch, c_in, c_out), padding, size)| {
            let size = [0, 1].map(|a| {
                (size[a] + 2)
                    .saturating_sub(padding[a].0 + padding[a].1)
                    .max(1)
            });
            let x_shape = [batch, c_in, size[0], size[1]];
            case_values(x_shape, [c_out, c_in, 3, 3], [1, 1], padding, 1)
        })
        .prop_filter("the kernel fits the padded input", Case::fits)
}

/// Output and gradients (x, weight, scale, bias) of the kernels by `algorithm`, with a scale,
/// bias, residual and `activation` in the fused pass and the upstream gradient taken through it.
fn by_algorithm(c: &Case, algorithm: Algorithm, activation: Activation) -> Vec<Vec<f64>> {
    let g = c.geometry();
    let y_len = g.lens()[2];
    let residual = crate::common::wave(y_len, 0.3);
    let scale: Vec<f64> = (0..g.c_out).map(|o| 0.5 + o as f64 / 8.0).collect();
    let epi = Epilogue {
        bias: Some(&c.bias),
        residual: Some(&residual),
        activation,
    };
    let y = kernels::forward_by(algorithm, &g, &c.x, &c.w, Some(&scale), &epi);
    let dy = crate::common::wave(y_len, 0.8);
    let up = Upstream {
        dy: &dy,
        through: Some((activation, &y)),
    };
    let grads = kernels::backward_by(algorithm, &g, [&c.x, &c.w], Some(&scale), up, [true; 4]);
    std::iter::once(y)
        .chain(
            grads
                .into_iter()
                .map(|d| d.expect("every gradient was asked for")),
        )
        .collect()
}

proptest! {
    #![proptest_config(cases(16))]

    /// Winograd's algorithm against the shifted products (themselves checked against burn and
    /// finite differences above), f64, with every part of the fused pass.
    #[test]
    fn winograd_matches_shifted_products(
        c in winograd_case(),
        activation in prop_oneof![Just(Activation::Identity), Just(Activation::Relu), Just(Activation::Relu6)],
    ) {
        let winograd = by_algorithm(&c, Algorithm::Winograd, activation);
        let direct = by_algorithm(&c, Algorithm::ShiftedProducts, activation);
        for (what, (a, b)) in ["output", "dx", "dweight", "dscale", "dbias"].iter().zip(winograd.iter().zip(&direct)) {
            assert_close(what, a, b, 1e-10, 1e-10);
        }
    }
}

proptest! {
    #![proptest_config(cases(6))]

    /// Winograd's input gradient against central finite differences of Winograd's forward
    /// (f64, on the host kernels directly: `conv2d` chooses Winograd only for wide layers).
    #[test]
    fn grad_winograd_wrt_input(c in winograd_case()) {
        let g = c.geometry();
        let r = crate::common::wave(g.lens()[2], 0.4);
        let loss = |x: &[f64]| -> f64 {
            let y = kernels::forward_by(Algorithm::Winograd, &g, x, &c.w, None, &Epilogue::NONE);
            y.iter().zip(&r).map(|(y, r)| y * r).sum()
        };
        let up = Upstream { dy: &r, through: None };
        let [dx, ..] = kernels::backward_by(Algorithm::Winograd, &g, [&c.x, &c.w], None, up, [true, false, false, false]);
        let dx = dx.expect("the input gradient was asked for");
        let h = 1e-6;
        let fd: Vec<f64> = (0..c.x.len())
            .map(|i| {
                let (mut xp, mut xm) = (c.x.clone(), c.x.clone());
                xp[i] += h;
                xm[i] -= h;
                (loss(&xp) - loss(&xm)) / (2.0 * h)
            })
            .collect();
        assert_close("winograd dx", &dx, &fd, 1e-6, 1e-6);
    }
}

/// A convolution large enough for the kernels to choose Winograd's algorithm (VGG-like: 128
/// channels, 44² plane), through `conv2d`: same output and gradients as burn's convolution.
#[test]
fn winograd_is_chosen_for_wide_convolutions_and_matches_burn() {
    let (x_shape, w_shape) = ([2, 128, 44, 44], [128, 128, 3, 3]);
    let n = |s: [usize; 4]| s.iter().product::<usize>();
    let c = Case {
        x: crate::common::wave(n(x_shape), 0.7),
        x_shape,
        w: crate::common::wave(n(w_shape), 0.9)
            .iter()
            .map(|v| v / 30.0)
            .collect(),
        w_shape,
        bias: vec![0.1; 128],
        stride: [1, 1],
        padding: [(1, 1); 2],
        groups: 1,
    };
    assert_eq!(Algorithm::choose(&c.geometry()), Algorithm::Winograd);
    let (ours, burn) = (run(&c, conv2d), run(&c, burn::tensor::module::conv2d));
    for (what, (a, b)) in ["output", "dx", "dweight", "dbias"]
        .iter()
        .zip(ours.iter().zip(&burn))
    {
        assert_close(what, a, b, 1e-9, 1e-9);
    }
}

proptest! {
    #![proptest_config(cases(12))]

    /// Folded batch normalization against central finite differences (f64), in the input, γ and β.
    #[test]
    fn grad_folded_batch_norm(
        x in prop::collection::vec(-2.0..2.0f64, 2 * 3 * 4 * 2),
        gamma in prop::collection::vec(0.5..1.5f64, 3),
        beta in prop::collection::vec(-1.0..1.0f64, 3),
        mean in prop::collection::vec(-1.0..1.0f64, 3),
        var in prop::collection::vec(0.1..2.0f64, 3),
    ) {
        use burn::module::{Module, Param, RunningState};
        use burn::nn::{BatchNorm, BatchNormConfig};

        let opts = f64_device();
        let vector = |v: &[f64]| tensor(v, [3], opts.clone());
        let make = |gamma: Tensor<1>, beta: Tensor<1>| -> BatchNorm {
            let mut bn = BatchNormConfig::new(3).with_epsilon(1e-3).init(&opts.0);
            bn.gamma = Param::from_tensor(gamma);
            bn.beta = Param::from_tensor(beta);
            bn.running_mean = RunningState::new(vector(&mean));
            bn.running_var = RunningState::new(vector(&var));
            bn.freeze().set_require_grad(true)
        };
        let shape = [2, 3, 4, 2];
        gradcheck("batch norm/x", &x, shape, |x| folded_batch_norm(&make(vector(&gamma), vector(&beta)), x));
        // γ and β: the parameters' autodiff gradients against central differences of Σ y.
        let bn = make(vector(&gamma), vector(&beta));
        let grads = folded_batch_norm(&bn, tensor(&x, shape, opts.clone())).sum().backward();
        let analytic = [
            values(bn.gamma.val().grad(&grads).unwrap()),
            values(bn.beta.val().grad(&grads).unwrap()),
        ];
        let total = |g: &[f64], b: &[f64]| {
            values(folded_batch_norm(&make(vector(g), vector(b)), tensor(&x, shape, opts.clone())).sum())[0]
        };
        let h = crate::common::FD_STEP;
        for (which, analytic) in analytic.iter().enumerate() {
            let numeric: Vec<f64> = (0..3)
                .map(|i| {
                    let (mut gp, mut gm, mut bp, mut bm) =
                        (gamma.clone(), gamma.clone(), beta.clone(), beta.clone());
                    if which == 0 { gp[i] += h; gm[i] -= h; } else { bp[i] += h; bm[i] -= h; }
                    (total(&gp, &bp) - total(&gm, &bm)) / (2.0 * h)
                })
                .collect();
            assert_close(["batch norm/gamma", "batch norm/beta"][which], analytic, &numeric,
                crate::common::GRAD_ATOL, crate::common::GRAD_RTOL);
        }
    }
}

/// A fused-block problem: a convolution case with a per-channel scale, a residual like the
/// output and an activation. Residuals reach ±8 so that ReLU6's ceiling is crossed.
#[derive(Clone, Debug)]
struct FusedCase {
    conv: Case,
    scale: Vec<f64>,
    residual: Vec<f64>,
    with_residual: bool,
    activation: Activation,
}

impl FusedCase {
    fn out_shape(&self) -> [usize; 4] {
        let c = &self.conv;
        let size = [0, 1].map(|a| {
            (c.x_shape[2 + a] + c.padding[a].0 + c.padding[a].1 - c.w_shape[2 + a]) / c.stride[a]
                + 1
        });
        [c.x_shape[0], c.w_shape[0], size[0], size[1]]
    }
}

fn fused_case() -> impl Strategy<Value = FusedCase> {
    case().prop_flat_map(|conv| {
        let c_out = conv.w_shape[0];
        let probe = FusedCase {
            conv: conv.clone(),
            scale: vec![],
            residual: vec![],
            with_residual: false,
            activation: Activation::Identity,
        };
        let out_len: usize = probe.out_shape().iter().product();
        (
            prop::collection::vec(-2.0..2.0f64, c_out),
            prop::collection::vec(-8.0..8.0f64, out_len),
            any::<bool>(),
            prop_oneof![
                Just(Activation::Identity),
                Just(Activation::Relu),
                Just(Activation::Relu6)
            ],
        )
            .prop_map(
                move |(scale, residual, with_residual, activation)| FusedCase {
                    conv: conv.clone(),
                    scale,
                    residual,
                    with_residual,
                    activation,
                },
            )
    })
}

/// burn's ops composed: `a(conv2d(x, W·s, t) + r)`.
fn composed(
    x: Tensor<4>,
    w: Tensor<4>,
    scale: Tensor<1>,
    bias: Tensor<1>,
    residual: Option<Tensor<4>>,
    activation: Activation,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let c_out = scale.dims()[0];
    let y =
        burn::tensor::module::conv2d(x, w * scale.reshape([c_out, 1, 1, 1]), Some(bias), options);
    let y = match residual {
        Some(r) => y + r,
        None => y,
    };
    activate(y, activation)
}

/// Output and the gradients of `Σ q ⊙ y` w.r.t. x, weight, scale, bias and residual (f64).
fn run_fused(c: &FusedCase, fused: bool) -> Vec<Vec<f64>> {
    let opts = f64_device();
    let x = tensor(&c.conv.x, c.conv.x_shape, opts.clone()).require_grad();
    let w = tensor(&c.conv.w, c.conv.w_shape, opts.clone()).require_grad();
    let s = tensor(&c.scale, [c.scale.len()], opts.clone()).require_grad();
    let b = tensor(&c.conv.bias, [c.conv.bias.len()], opts.clone()).require_grad();
    let r = tensor(&c.residual, c.out_shape(), opts.clone()).require_grad();
    let residual = c.with_residual.then(|| r.clone());
    let y = if fused {
        let after = After {
            scale: Some(s.clone()),
            bias: Some(b.clone()),
            residual,
            activation: c.activation,
        };
        conv2d_with(x.clone(), w.clone(), c.conv.options(), after)
    } else {
        composed(
            x.clone(),
            w.clone(),
            s.clone(),
            b.clone(),
            residual,
            c.activation,
            c.conv.options(),
        )
    };
    let grads = (y.clone() * probe(&y)).sum().backward();
    let mut out = vec![
        values(y),
        values(x.grad(&grads).unwrap()),
        values(w.grad(&grads).unwrap()),
        values(s.grad(&grads).unwrap()),
        values(b.grad(&grads).unwrap()),
    ];
    if c.with_residual {
        out.push(values(r.grad(&grads).unwrap()));
    }
    out
}

proptest! {
    #![proptest_config(cases(24))]

    /// The fused block equals burn's ops composed, output and all five gradients.
    #[test]
    fn fused_block_matches_burn_ops_composed(c in fused_case()) {
        let (ours, burn) = (run_fused(&c, true), run_fused(&c, false));
        let names = ["output", "dx", "dweight", "dscale", "dbias", "dresidual"];
        for (what, (a, b)) in names.iter().zip(ours.iter().zip(&burn)) {
            assert_close(&format!("{what} ({:?})", c.activation), a, b, 1e-10, 1e-10);
        }
    }

    /// The fused block's gradients against central finite differences (f64) in each input
    /// (coordinates at the activation's kinks are skipped by `gradcheck`).
    #[test]
    fn grad_fused_block(c in fused_case()) {
        let opts = f64_device();
        let t1 = |v: &[f64]| tensor(v, [v.len()], opts.clone());
        let (x, w) = (tensor(&c.conv.x, c.conv.x_shape, opts.clone()), tensor(&c.conv.w, c.conv.w_shape, opts.clone()));
        let r = tensor(&c.residual, c.out_shape(), opts.clone());
        let block = |x: Tensor<4>, w: Tensor<4>, s: Tensor<1>, b: Tensor<1>, r: Tensor<4>| {
            let after = After {
                scale: Some(s),
                bias: Some(b),
                residual: c.with_residual.then_some(r),
                activation: c.activation,
            };
            conv2d_with(x, w, c.conv.options(), after)
        };
        let (s, b) = (t1(&c.scale), t1(&c.conv.bias));
        gradcheck("fused/x", &c.conv.x, c.conv.x_shape, |x| block(x, w.clone(), s.clone(), b.clone(), r.clone()));
        gradcheck("fused/w", &c.conv.w, c.conv.w_shape, |w| block(x.clone(), w, s.clone(), b.clone(), r.clone()));
        gradcheck("fused/scale", &c.scale, [c.scale.len()], |s| block(x.clone(), w.clone(), s, b.clone(), r.clone()));
        gradcheck("fused/bias", &c.conv.bias, [c.conv.bias.len()], |b| block(x.clone(), w.clone(), s.clone(), b, r.clone()));
        if c.with_residual {
            gradcheck("fused/residual", &c.residual, c.out_shape(), |r| block(x.clone(), w.clone(), s.clone(), b.clone(), r));
        }
    }
}

/// A convolution followed by frozen batch normalization, a residual and ReLU, as the backbones
/// run it (`norm::conv_bn`), against burn's modules (`Conv2d`, `BatchNorm`, `relu`): output and
/// the gradients of the input, the convolution's weight and bias, γ, β and the residual.
#[test]
fn conv_bn_matches_burn_modules() {
    use burn::module::{Module, Param, RunningState};
    use burn::nn::BatchNormConfig;
    use weakalign::backbone::norm;

    let opts = f64_device();
    let wave = crate::common::wave;
    let vector = |seed: f64, offset: f64| {
        let v: Vec<f64> = wave(6, seed).iter().map(|v| v + offset).collect();
        tensor(&v, [6], opts.clone())
    };
    for (stride, groups, activation) in [
        (1, 1, Activation::Relu),
        (2, 1, Activation::Relu6),
        (1, 6, Activation::Relu6),
        (1, 1, Activation::Identity),
    ] {
        let config = Conv2dConfig::new([6, 6], [3, 3])
            .with_stride([stride, stride])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Same);
        let mut conv_module = config.init(&opts.0);
        let w_shape = [6, 6 / groups, 3, 3];
        let w0: Vec<f64> = wave(w_shape.iter().product(), 0.7)
            .iter()
            .map(|v| 0.5 * v)
            .collect();
        conv_module.weight = Param::from_tensor(tensor(&w0, w_shape, opts.clone()));
        conv_module.bias = Some(Param::from_tensor(vector(0.8, 0.0)));
        let conv_module = conv_module.set_require_grad(true);
        let mut bn = BatchNormConfig::new(6).with_epsilon(1e-3).init(&opts.0);
        bn.gamma = Param::from_tensor(vector(0.1, 1.0));
        bn.beta = Param::from_tensor(vector(0.2, 0.0));
        bn.running_mean = RunningState::new(vector(0.3, 0.0));
        bn.running_var = RunningState::new(vector(0.4, 1.5));
        let bn = bn.freeze().set_require_grad(true);
        let x0 = wave(2 * 6 * 9 * 8, 0.5);
        let out = conv_module
            .forward(tensor(&x0, [2, 6, 9, 8], opts.clone()))
            .dims();
        let r0: Vec<f64> = wave(out.iter().product(), 0.6)
            .iter()
            .map(|v| 4.0 * v)
            .collect();
        let run = |fused: bool| {
            let x = tensor(&x0, [2, 6, 9, 8], opts.clone()).require_grad();
            let r = tensor(&r0, out, opts.clone()).require_grad();
            let y = if fused {
                norm::conv_bn(&conv_module, &bn, x.clone(), Some(r.clone()), activation)
            } else {
                activate(
                    bn.forward(conv_module.forward(x.clone())) + r.clone(),
                    activation,
                )
            };
            let grads = (y.clone() * y.clone()).sum().backward();
            [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(conv_module.weight.val().grad(&grads).unwrap()),
                values(
                    conv_module
                        .bias
                        .as_ref()
                        .unwrap()
                        .val()
                        .grad(&grads)
                        .unwrap(),
                ),
                values(bn.gamma.val().grad(&grads).unwrap()),
                values(bn.beta.val().grad(&grads).unwrap()),
                values(r.grad(&grads).unwrap()),
            ]
        };
        let (ours, burn) = (run(true), run(false));
        let names = [
            "output",
            "dx",
            "dweight",
            "dbias",
            "dgamma",
            "dbeta",
            "dresidual",
        ];
        for (what, (a, b)) in names.iter().zip(ours.iter().zip(&burn)) {
            let what = format!("{what} (stride {stride}, groups {groups}, {activation:?})");
            assert_close(&what, a, b, 1e-10, 1e-10);
        }
    }
}

/// ReLU6 on burn's path (`conv::finish`, what a GPU runs) has PyTorch's gradient: 1 strictly
/// inside (0, 6), 0 elsewhere, including at exactly 0 and 6 (burn's `relu6`, a clamp, gives 1
/// there), and burn's values.
#[test]
fn relu6_on_burns_path_has_pytorchs_gradient_at_its_ends() {
    use weakalign::backbone::conv::finish;
    let opts = f64_device();
    let y = tensor(&[-1.0, 0.0, 3.0, 6.0, 7.0], [1, 1, 1, 5], opts).require_grad();
    let out = finish(y.clone(), None, Activation::Relu6);
    let grads = out.clone().sum().backward();
    assert_eq!(values(out), [0.0, 0.0, 3.0, 6.0, 6.0]);
    assert_eq!(values(y.grad(&grads).unwrap()), [0.0, 0.0, 1.0, 0.0, 0.0]);
}

/// Where a convolution's output is exactly 0 (a zero region of its input, no bias), our CPU
/// kernels and burn's path (`conv::finish`, the GPU's) give the same ReLU6 gradients: the case
/// in which EfficientNet's depthwise convolutions at initialization gave a GPU other BatchNorm β
/// gradients than the CPU (issue 30).
#[test]
fn fused_kernels_and_burns_path_agree_where_relu6_sees_exact_zeros() {
    use weakalign::backbone::conv::finish;
    let opts = f64_device();
    let (c, side) = (3, 6);
    let x: Vec<f64> = (0..c * side * side)
        .map(|i| {
            if i % 36 < 18 {
                0.0
            } else {
                ((i * 37) % 17) as f64 / 8.0 - 1.0
            }
        })
        .collect();
    let w: Vec<f64> = (0..c * 9)
        .map(|i| ((i * 13) % 11) as f64 / 5.0 - 1.0)
        .collect();
    let run = |fused: bool| {
        let xt = tensor(&x, [1, c, side, side], opts.clone()).require_grad();
        let wt = tensor(&w, [c, 1, 3, 3], opts.clone()).require_grad();
        let bt = tensor(&[0.0; 3], [c], opts.clone()).require_grad();
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], c);
        let y = if fused {
            let after = After {
                bias: Some(bt.clone()),
                activation: Activation::Relu6,
                ..After::default()
            };
            conv2d_with(xt.clone(), wt.clone(), options, after)
        } else {
            let y = burn::tensor::module::conv2d(xt.clone(), wt.clone(), Some(bt.clone()), options);
            finish(y, None, Activation::Relu6)
        };
        let grads = (y.clone() * probe(&y)).sum().backward();
        [
            values(y),
            values(xt.grad(&grads).unwrap()),
            values(wt.grad(&grads).unwrap()),
            values(bt.grad(&grads).unwrap()),
        ]
    };
    let (ours, burn) = (run(true), run(false));
    assert!(
        ours[0].iter().filter(|v| **v == 0.0).count() > 6,
        "exact zeros in the output"
    );
    for (what, (a, b)) in ["output", "dx", "dweight", "dbias"]
        .iter()
        .zip(ours.iter().zip(&burn))
    {
        assert_close(what, a, b, 1e-12, 1e-12);
    }
}
