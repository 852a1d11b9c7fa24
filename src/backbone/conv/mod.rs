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
//! Where it applies: flex tensors (with or without autodiff), f32 or f64, dilation 1, dense
//! (`groups = 1`) or depthwise (`groups = c_in = c_out`: EfficientNet's, whose backward on flex
//! went through per-group slices). Everything else (other groupings, the CUDA backend) takes
//! burn's convolution unchanged. `WEAKALIGN_CONV=burn` in the environment turns the seam off (for
//! comparisons); it is read once per process.
//!
//! Tested in `tests/conv.rs`: outputs and both gradients against burn's convolution, and the
//! gradients against central finite differences in f64.

pub mod kernels;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;

use kernels::{ConvGeometry, Real};

/// A convolution without bias, run by the shifted-product kernels (burn's own where they do not
/// apply: grouped but not depthwise, dilated).
#[backend_extension(Flex, Autodiff)]
pub trait ShiftConv: Backend {
    /// `conv2d(x, weight)` with `options`.
    ///
    /// # Shapes
    /// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in, kh, kw]`
    /// - output: `[batch, c_out, h_out, w_out]`
    fn shift_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
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

/// A flex tensor's elements, row-major (borrowed where it is contiguous).
///
/// # Shapes
/// - `t`: any `[d0, d1, …]`
/// - output: its `d0·d1·…` elements
fn host<T: Real + burn::tensor::Element + bytemuck::Pod>(
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
/// - `values`: `shape[0]·…·shape[3]` elements, row-major
/// - output: `shape`
fn flex<T: Real + burn::tensor::Element + bytemuck::Pod>(
    values: Vec<T>,
    shape: [usize; 4],
) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The forward on flex tensors; burn's convolution where the kernels do not apply.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`
/// - output: `[batch, c_out, h_out, w_out]`
fn flex_forward(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
    let (xs, ws) = (x.shape().dims::<4>(), weight.shape().dims::<4>());
    let Some(g) = geometry(&xs, &ws, &options).filter(|_| x.dtype() == weight.dtype()) else {
        return Flex::conv2d(x, weight, None, options);
    };
    let [h_out, w_out] = g.size_out();
    let shape = [g.batch, g.c_out, h_out, w_out];
    match x.dtype() {
        DType::F32 => flex(
            kernels::forward::<f32>(&g, &host(&x), &host(&weight)),
            shape,
        ),
        DType::F64 => flex(
            kernels::forward::<f64>(&g, &host(&x), &host(&weight)),
            shape,
        ),
        _ => Flex::conv2d(x, weight, None, options),
    }
}

/// Gradients of the forward with respect to `x` and `weight`, each when `want` asks.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`,
///   `dy`: `[batch, c_out, h_out, w_out]`
/// - output: `dx` like `x`, `dweight` like `weight`
fn flex_backward(
    x: FlexTensor,
    weight: FlexTensor,
    dy: FlexTensor,
    options: ConvOptions<2>,
    want: [bool; 2],
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (xs, ws) = (x.shape().dims::<4>(), weight.shape().dims::<4>());
    fn run<T: Real + burn::tensor::Element + bytemuck::Pod>(
        g: &ConvGeometry,
        tensors: [&FlexTensor; 3],
        want: [bool; 2],
        shapes: [[usize; 4]; 2],
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        let [x, weight, dy] = tensors;
        let (dx, dw) = kernels::backward::<T>(g, &host(x), &host(weight), &host(dy), want);
        (
            dx.map(|v| flex(v, shapes[0])),
            dw.map(|v| flex(v, shapes[1])),
        )
    }
    let same_dtype = x.dtype() == weight.dtype() && x.dtype() == dy.dtype();
    match geometry(&xs, &ws, &options).filter(|_| same_dtype) {
        Some(g) if x.dtype() == DType::F32 => run::<f32>(&g, [&x, &weight, &dy], want, [xs, ws]),
        Some(g) if x.dtype() == DType::F64 => run::<f64>(&g, [&x, &weight, &dy], want, [xs, ws]),
        _ => (
            want[0].then(|| {
                Flex::conv2d_x_backward(x.clone(), weight.clone(), dy.clone(), options.clone())
            }),
            want[1].then(|| Flex::conv2d_weight_backward(x, weight, dy, options)),
        ),
    }
}

impl ShiftConv for Flex {
    fn shift_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        flex_forward(x, weight, options)
    }
}

/// The backward step of [`ShiftConv::shift_conv2d`] under autodiff.
#[derive(Debug)]
struct ShiftConvBackward;

impl Backward<Flex, 2> for ShiftConvBackward {
    type State = (FlexTensor, FlexTensor, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, options) = ops.state;
        let want = [node_x.is_some(), node_weight.is_some()];
        let (dx, dw) = flex_backward(x, weight, dy, options, want);
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (node_weight, dw) {
            grads.register::<Flex>(node.id, dw);
        }
    }
}

impl<C: CheckpointStrategy> ShiftConv for Autodiff<Flex, C> {
    fn shift_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match ShiftConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.primitive().clone(), weight.primitive().clone());
                let y = flex_forward(x.clone(), weight.clone(), options.clone());
                prep.finish((x, weight, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
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

/// Whether `WEAKALIGN_CONV=burn` turned the seam off (read once).
fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("WEAKALIGN_CONV").is_ok_and(|v| v == "burn"))
}

/// `conv.forward(x)`, through the shifted-product kernels where they apply (module docs).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`
/// - output: `[batch, c_out, h_out, w_out]`, as `Conv2d::forward`
pub fn forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let padding = [0, 1].map(|a| padding_pair(&conv.padding, a, [h, w][a], conv));
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
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
    let on_flex = matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_));
    if disabled() || !on_flex || options.dilation != [1, 1] {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let y = Tensor::<4>::from_dispatch(Dispatch::shift_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ));
    match bias {
        Some(bias) => {
            let c_out = bias.dims()[0];
            y + bias.reshape([1, c_out, 1, 1])
        }
        None => y,
    }
}
