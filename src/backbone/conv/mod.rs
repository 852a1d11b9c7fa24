//! The model's convolutions (backbones and regression heads) on the CPU: one seam between
//! burn's `Conv2d` modules and our shifted-product kernels ([`kernels`]).
//!
//! Why: the backbone is most of a training step (`make bench`'s per-part profile), and on burn
//! 0.22's CPU backend (flex) a convolution's backward is the slow part: the input gradient goes
//! through a transposed convolution and the weight gradient through a convolution whose kernel
//! is the whole output gradient (issue 11). [`forward`] runs the same convolution as
//! `Conv2d::forward` — same weights, same padding rules, same output up to float rounding — with
//! a forward and a backward that are each one matrix product per kernel tap.
//!
//! The seam also takes what follows a convolution in the networks ([`After`]): a per-channel
//! scale folded into the weight (frozen batch normalization, [`super::norm::conv_bn`]), a bias,
//! a residual and ReLU/ReLU6 are applied as the output is written ([`FusedConv`]), and the
//! backward takes the gradient through the activation (from the stored output) and sums the
//! bias gradient while it lays out `dy` for the products. On burn's ops each of those is a pass
//! over the activation forward and one or two backward, each with a tensor of its own: on
//! ResNet-101 and EfficientNet-Lite0 those passes had cost about as much as the convolutions
//! (`make bench`, issue 11).
//!
//! Where it applies: flex tensors (with or without autodiff), f32 or f64, dilation 1, dense
//! (`groups = 1`) or depthwise (`groups = c_in = c_out`: EfficientNet's, whose backward on flex
//! went through per-group slices). Everything else (other groupings, the GPU backends) takes
//! burn's convolution unchanged. `WEAKALIGN_CONV=burn` in the environment turns the seam off, and
//! the max pooling of [`super::pool`] with it (for comparisons); it is read once per process.
//!
//! Tested in `tests/conv.rs`: outputs and both gradients against burn's convolution, and the
//! gradients against central finite differences in f64; the fused block (scale, bias, residual,
//! each activation) against burn's ops composed and against finite differences in every input.

pub mod kernels;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;

pub use kernels::Activation;
use kernels::{ConvGeometry, Epilogue, Real};

/// A convolution and what follows it, in one pass over the output: `a(conv2d(x, weight · scale)
/// + bias [+ residual])` (the scale per output channel), run by the shifted-product kernels.
///
/// Only called where the kernels apply ([`conv2d_with`] routes everything else to burn's ops):
/// dense or depthwise, dilation 1, `x`, `weight`, `bias` (and `residual`) all f32 or all f64.
#[backend_extension(Flex, Autodiff)]
pub trait FusedConv: Backend {
    /// `a(conv2d(x, weight · scale) + bias)` with `options`.
    ///
    /// # Shapes
    /// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`, `scale` and
    ///   `bias`: `[c_out]`
    /// - output: `[batch, c_out, h_out, w_out]`
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        activation: Activation,
    ) -> FloatTensor<Self>;

    /// `a(conv2d(x, weight · scale) + bias + residual)` with `options`.
    ///
    /// # Shapes
    /// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`, `scale` and
    ///   `bias`: `[c_out]`, `residual`: `[batch, c_out, h_out, w_out]`
    /// - output: `[batch, c_out, h_out, w_out]`
    fn fused_conv2d_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        activation: Activation,
    ) -> FloatTensor<Self>;
}

/// The geometry of `conv2d(x, weight)`; `None` where the kernels do not apply.
fn geometry(x: &[usize], weight: &[usize], options: &ConvOptions<2>) -> Option<ConvGeometry> {
    let (&[batch, c_in, h, w], &[c_out, c_in_w, kh, kw]) = (x, weight) else {
        return None;
    };
    let depthwise = options.groups > 1 && options.groups == c_in && c_out == c_in && c_in_w == 1;
    let g = ConvGeometry {
        batch,
        c_in,
        size_in: [h, w],
        c_out,
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding,
        depthwise,
    };
    let dense = options.groups == 1 && c_in_w == c_in;
    ((dense || depthwise) && options.dilation == [1, 1] && g.is_valid()).then_some(g)
}

/// The geometry of a call [`FusedConv`] is given (the caller checked that the kernels apply).
fn checked_geometry(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> ConvGeometry {
    geometry(&x.shape().dims::<4>(), &weight.shape().dims::<4>(), options)
        .expect("conv2d_with calls FusedConv only where the kernels apply")
}

/// A flex tensor's elements, row-major (borrowed where it is contiguous).
///
/// # Shapes
/// - `t`: any `[d0, d1, …]`
/// - output: its `d0·d1·…` elements
pub(crate) fn host<T: Real + burn::tensor::Element + bytemuck::Pod>(
    t: &FlexTensor,
) -> std::borrow::Cow<'_, [T]> {
    match t.is_contiguous().then(|| t.as_slice::<T>()).flatten() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<T>()
                .expect("a contiguous tensor has a slice")
                .to_vec(),
        ),
    }
}

/// A flex tensor holding `values`.
///
/// # Shapes
/// - `values`: the product of `shape` elements, row-major
/// - output: `shape`
pub(crate) fn flex<T: Real + burn::tensor::Element + bytemuck::Pod, const D: usize>(
    values: Vec<T>,
    shape: [usize; D],
) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The fused forward on flex tensors.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`, `scale` and `bias`:
///   `[c_out]`, `residual`: like the output
/// - output: `[batch, c_out, h_out, w_out]`
fn flex_forward(
    [x, weight, scale, bias]: [&FlexTensor; 4],
    residual: Option<&FlexTensor>,
    options: &ConvOptions<2>,
    activation: Activation,
) -> FlexTensor {
    fn run<T: Real + burn::tensor::Element + bytemuck::Pod>(
        g: &ConvGeometry,
        [x, weight, scale, bias]: [&FlexTensor; 4],
        residual: Option<&FlexTensor>,
        activation: Activation,
    ) -> FlexTensor {
        let (bias, residual) = (host::<T>(bias), residual.map(host::<T>));
        let epi = Epilogue {
            bias: Some(&bias),
            residual: residual.as_deref(),
            activation,
        };
        let [h_out, w_out] = g.size_out();
        let y = kernels::forward::<T>(g, &host(x), &host(weight), Some(&host(scale)), &epi);
        flex(y, [g.batch, g.c_out, h_out, w_out])
    }
    let g = checked_geometry(x, weight, options);
    let inputs = [x, weight, scale, bias];
    match x.dtype() {
        DType::F64 => run::<f64>(&g, inputs, residual, activation),
        _ => run::<f32>(&g, inputs, residual, activation),
    }
}

/// Gradients of the fused forward with respect to `x`, `weight`, `scale`, `bias` and the
/// residual, each when `want` asks (the residual's is the gradient through the activation).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`, `scale`: `[c_out]`,
///   `y` (the forward's output) and `dy`: `[batch, c_out, h_out, w_out]`
/// - output: like `x`, `weight`, `scale`, `[c_out]` and `y`
fn flex_backward(
    [x, weight, scale, y, dy]: [&FlexTensor; 5],
    options: &ConvOptions<2>,
    activation: Activation,
    want: [bool; 5],
) -> [Option<FlexTensor>; 5] {
    fn run<T: Real + burn::tensor::Element + bytemuck::Pod>(
        g: &ConvGeometry,
        [x, weight, scale, y, dy_tensor]: [&FlexTensor; 5],
        activation: Activation,
        [want_dx, want_dw, want_ds, want_db, want_dr]: [bool; 5],
    ) -> [Option<FlexTensor>; 5] {
        let (dy, y) = (host::<T>(dy_tensor), host::<T>(y));
        let [h_out, w_out] = g.size_out();
        let through = (activation != Activation::Identity).then_some((activation, &*y));
        // The residual's gradient is `dv` itself: computed whole where it is wanted, else image
        // by image inside the kernels.
        let dv = match through {
            Some((a, y)) if want_dr => Some(kernels::through_activation(a, y, &dy)),
            _ => None,
        };
        let up = match &dv {
            Some(dv) => kernels::Upstream {
                dy: dv,
                through: None,
            },
            None => kernels::Upstream { dy: &dy, through },
        };
        let [dx, dw, ds, db] = {
            let (x, weight, scale) = (host::<T>(x), host::<T>(weight), host::<T>(scale));
            let want = [want_dx, want_dw, want_ds, want_db];
            kernels::backward::<T>(g, [&x, &weight], Some(&scale), up, want)
        };
        // Without an activation the residual's gradient is the output's, as it came.
        let dr = want_dr.then(|| match dv {
            Some(dv) => flex(dv, [g.batch, g.c_out, h_out, w_out]),
            None => dy_tensor.clone(),
        });
        [
            dx.map(|v| flex(v, x.shape().dims::<4>())),
            dw.map(|v| flex(v, weight.shape().dims::<4>())),
            ds.map(|v| flex(v, [g.c_out])),
            db.map(|v| flex(v, [g.c_out])),
            dr,
        ]
    }
    let g = checked_geometry(x, weight, options);
    let tensors = [x, weight, scale, y, dy];
    match x.dtype() {
        DType::F64 => run::<f64>(&g, tensors, activation, want),
        _ => run::<f32>(&g, tensors, activation, want),
    }
}

impl FusedConv for Flex {
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        flex_forward([&x, &weight, &scale, &bias], None, &options, activation)
    }

    fn fused_conv2d_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        let inputs = [&x, &weight, &scale, &bias];
        flex_forward(inputs, Some(&residual), &options, activation)
    }
}

/// The backward step of [`FusedConv`] under autodiff; parents `x`, `weight`, `scale`, `bias`
/// and (`N = 5`) the residual.
#[derive(Debug)]
struct FusedConvBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for FusedConvBackward<N> {
    /// `x`, `weight`, `scale`, the output `y`, options and activation.
    type State = ([FlexTensor; 4], ConvOptions<2>, Activation);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let ([x, weight, scale, y], options, activation) = ops.state;
        let want = [0, 1, 2, 3, 4].map(|i| ops.parents.get(i).is_some_and(Option::is_some));
        let d = flex_backward([&x, &weight, &scale, &y, &dy], &options, activation, want);
        for (parent, d) in ops.parents.into_iter().zip(d) {
            if let (Some(node), Some(d)) = (parent, d) {
                grads.register::<Flex>(node.id, d);
            }
        }
    }
}

/// The autodiff forward of [`FusedConv`] with `N` parents (the first four: `x`, `weight`,
/// `scale`, `bias`; the fifth, when `N = 5`, the residual).
///
/// # Shapes
/// - `parents`: `x` `[batch, c_in, h, w]`, `weight` `[c_out, c_in / groups, kh, kw]`, `scale`
///   and `bias` `[c_out]`, residual like the output
/// - output: `[batch, c_out, h_out, w_out]`
fn autodiff_forward<C: CheckpointStrategy, const N: usize>(
    parents: [&FloatTensor<Autodiff<Flex, C>>; N],
    options: ConvOptions<2>,
    activation: Activation,
) -> FloatTensor<Autodiff<Flex, C>> {
    let prep = FusedConvBackward::<N>
        .prepare::<C>(parents.map(|p| p.node()))
        .compute_bound()
        .stateful();
    let inputs = [0, 1, 2, 3].map(|i| parents[i].primitive());
    let residual = (N == 5).then(|| parents[N - 1].primitive());
    let y = flex_forward(inputs, residual, &options, activation);
    match prep {
        OpsKind::Tracked(prep) => {
            let [x, weight, scale, _] = inputs.map(Clone::clone);
            prep.finish(([x, weight, scale, y.clone()], options, activation), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

impl<C: CheckpointStrategy> FusedConv for Autodiff<Flex, C> {
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        autodiff_forward::<C, 4>([&x, &weight, &scale, &bias], options, activation)
    }

    fn fused_conv2d_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        activation: Activation,
    ) -> FloatTensor<Self> {
        let parents = [&x, &weight, &scale, &bias, &residual];
        autodiff_forward::<C, 5>(parents, options, activation)
    }
}

/// The `(begin, end)` zero padding of `conv` on `axis` (0: height, 1: width) for an input side
/// `size`, as `Conv2d::forward` computes it (burn's rule is not public): `Same` pads
/// `(⌈size/s⌉ − 1)·s + k − size` in all, the odd one at the end.
fn padding_pair(
    padding: &PaddingConfig2d,
    axis: usize,
    size: usize,
    conv: &Conv2d,
) -> (usize, usize) {
    let (k, s) = (conv.kernel_size[axis], conv.stride[axis]);
    match *padding {
        PaddingConfig2d::Valid => (0, 0),
        PaddingConfig2d::Same => {
            let out = size.div_ceil(s);
            let total = if out > 0 {
                ((out - 1) * s + k).saturating_sub(size)
            } else {
                0
            };
            (total / 2, total - total / 2)
        }
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)][axis],
    }
}

/// Whether `WEAKALIGN_CONV=burn` turned the seam (and [`super::pool`]'s) off (read once).
fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("WEAKALIGN_CONV").is_ok_and(|v| v == "burn"))
}

/// Whether our CPU kernels (this seam's convolutions with what follows them, and
/// [`super::pool`]'s max pooling) may run on `x`: the one place that decides it. They are written
/// for flex's host memory, so on any other backend (CUDA, wgpu) burn's own ops run, whose cubecl
/// kernels are the GPU counterparts; `WEAKALIGN_CONV=burn` sends flex there too.
pub(crate) fn own_kernels_apply(x: &Tensor<4>) -> bool {
    matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) && !disabled()
}

/// What comes with a convolution: its output scaled per channel (folded into the weight), then
/// `a(· + bias [+ residual])`.
#[derive(Clone, Debug, Default)]
pub struct After {
    /// Per output channel, `[c_out]`: the convolution runs with `weight · scale`.
    pub scale: Option<Tensor<1>>,
    /// Per output channel, `[c_out]`.
    pub bias: Option<Tensor<1>>,
    /// Added before the activation, like the output (`[batch, c_out, h_out, w_out]`).
    pub residual: Option<Tensor<4>>,
    /// The activation `a`.
    pub activation: Activation,
}

/// The options `Conv2d::forward` would use on an input of side `[h, w]`.
fn options_of(conv: &Conv2d, [h, w]: [usize; 2]) -> ConvOptions<2> {
    let padding = [0, 1].map(|a| padding_pair(&conv.padding, a, [h, w][a], conv));
    ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups)
}

/// `conv.forward(x)`, through the shifted-product kernels where they apply (module docs).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`
/// - output: `[batch, c_out, h_out, w_out]`, as `Conv2d::forward`
pub fn forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    forward_then(conv, x, Activation::Identity)
}

/// `a(conv.forward(x))`, in one pass over the output where the kernels apply.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`
/// - output: `[batch, c_out, h_out, w_out]`, as `Conv2d::forward`
pub fn forward_then(conv: &Conv2d, x: Tensor<4>, activation: Activation) -> Tensor<4> {
    let after = After {
        bias: conv.bias.as_ref().map(|b| b.val()),
        activation,
        ..After::default()
    };
    forward_with(conv, conv.weight.val(), x, after)
}

/// `a(conv(x; weight · scale) + bias [+ residual])`: `conv`'s geometry (stride, padding rule,
/// groups) with `weight` in place of its own; `conv`'s own bias is not added (pass it in
/// `after`; batch normalization passes its scale and shift, [`super::norm::conv_bn`]).
///
/// # Shapes
/// - `weight`: like `conv.weight`, `[c_out, c_in / groups, kh, kw]`; `x`: `[batch, c_in, h, w]`
/// - output: `[batch, c_out, h_out, w_out]`
pub fn forward_with(conv: &Conv2d, weight: Tensor<4>, x: Tensor<4>, after: After) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    conv2d_with(x, weight, options_of(conv, [h, w]), after)
}

/// `burn::tensor::module::conv2d`, through the shifted-product kernels where they apply
/// (module docs).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`, `bias`: `[c_out]`
/// - output: `[batch, c_out, h_out, w_out]`
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let after = After {
        bias,
        ..After::default()
    };
    conv2d_with(x, weight, options, after)
}

/// `a(y [+ residual])` with burn's ops (where the fused kernels do not run).
///
/// # Shapes
/// - `y`, `residual`: `[batch, c, h, w]`
/// - output: `[batch, c, h, w]`
pub fn finish(y: Tensor<4>, residual: Option<Tensor<4>>, activation: Activation) -> Tensor<4> {
    let y = match residual {
        Some(r) => y + r,
        None => y,
    };
    match activation {
        Activation::Identity => y,
        Activation::Relu => relu(y),
        Activation::Relu6 => relu6(y),
    }
}

/// ReLU6 with PyTorch's gradient (`hardtanh_backward`): 1 strictly inside `(0, 6)`, 0 elsewhere,
/// including at exactly 0 and 6, as the fused kernels compute it. burn's `relu6` is a `clamp`,
/// whose gradient is 1 at both ends; a depthwise convolution over a zero region of a ReLU6
/// output gives exactly 0 wherever the bias is 0 (every frozen BatchNorm at initialization), and
/// there the two conventions gave the GPU a different bias gradient than the CPU (issue 30).
/// The forward is burn's clamp bit for bit; the gradient is routed through `y − y.detach()`, which
/// is 0 in value, masked outside `(0, 6)`.
///
/// # Shapes
/// - `y`: `[batch, c, h, w]`
/// - output: `[batch, c, h, w]`
fn relu6(y: Tensor<4>) -> Tensor<4> {
    if !y.is_tracked() {
        return burn::tensor::activation::relu6(y);
    }
    let inside = y
        .clone()
        .greater_elem(0.0)
        .bool_and(y.clone().lower_elem(6.0));
    let through = (y.clone() - y.clone().detach()).mask_fill(inside.bool_not(), 0.0);
    burn::tensor::activation::relu6(y.detach()) + through
}

/// `a(conv2d(x, weight · scale) + bias [+ residual])` in one pass over the output where the
/// kernels apply (module docs); otherwise burn's convolution and ops (the same values up to float
/// rounding).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`; `after.scale` and
///   `after.bias`: `[c_out]`, `after.residual`: like the output
/// - output: `[batch, c_out, h_out, w_out]`
pub fn conv2d_with(
    x: Tensor<4>,
    weight: Tensor<4>,
    options: ConvOptions<2>,
    after: After,
) -> Tensor<4> {
    let own = own_kernels_apply(&x);
    let dtype = x.dtype();
    let same_dtype = [
        Some(weight.dtype()),
        after.scale.as_ref().map(|s| s.dtype()),
        after.bias.as_ref().map(|b| b.dtype()),
        after.residual.as_ref().map(|r| r.dtype()),
    ]
    .into_iter()
    .flatten()
    .all(|d| d == dtype);
    let fits = geometry(&x.dims(), &weight.dims(), &options).is_some();
    if !own || !fits || !same_dtype || !matches!(dtype, DType::F32 | DType::F64) {
        let weight = match after.scale {
            Some(s) => {
                let c_out = s.dims()[0];
                weight * s.reshape([c_out, 1, 1, 1])
            }
            None => weight,
        };
        let y = burn::tensor::module::conv2d(x, weight, after.bias, options);
        return finish(y, after.residual, after.activation);
    }
    let c_out = weight.dims()[0];
    let constant = |v: f64| Tensor::full([c_out], v, (&x.device(), dtype));
    let scale = after.scale.unwrap_or_else(|| constant(1.0));
    let bias = after.bias.unwrap_or_else(|| constant(0.0));
    let y = match after.residual {
        Some(r) => Dispatch::fused_conv2d_residual(
            x.into_dispatch(),
            weight.into_dispatch(),
            scale.into_dispatch(),
            bias.into_dispatch(),
            r.into_dispatch(),
            options,
            after.activation,
        ),
        None => Dispatch::fused_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            scale.into_dispatch(),
            bias.into_dispatch(),
            options,
            after.activation,
        ),
    };
    Tensor::from_dispatch(y)
}
