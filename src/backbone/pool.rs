//! Max pooling on the CPU: VGG-16's four 2×2 pools and ResNet-101's 3×3 stride-2 pool, through
//! one pass over the input that also records where each maximum came from.
//!
//! Why: burn 0.22's CPU backend (flex) pools at about half PyTorch's speed forward and a third
//! backward (its backward scatters through a generic index tensor, one element at a time); on
//! VGG-16, whose first pool reads a `[8, 64, 240, 240]` activation, the pools were several
//! percent of a training step (issue 11, `perf` on `make bench`). [`max_pool2d`] computes the
//! same values as `MaxPool2d::forward` (same window rule, first maximum wins ties, NaN
//! propagates as in PyTorch), keeps the argmax of each window as a `u32` offset in its plane,
//! and its backward adds each output's gradient at that offset.
//!
//! Where it applies: flex tensors (with or without autodiff), f32 or f64, dilation 1, floor
//! mode, `Valid` or explicit padding of at most half the kernel (PyTorch's rule, so that every
//! window holds an input pixel). Everything else takes burn's module unchanged, as does
//! `WEAKALIGN_CONV=burn` (the switch of [`super::conv`]). Tested in `tests/pool.rs`: outputs and
//! gradients against burn's `MaxPool2d`, and gradients against central finite differences in
//! f64.

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::{DType, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::conv::kernels::Real;
use super::conv::{flex, host, own_kernels_apply};

/// The windows of one max pooling: kernel, stride and `(begin, end)` zero padding per spatial
/// axis (height, width); dilation 1, floor mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Padding `(begin, end)` per axis; a padded pixel never wins.
    pub padding: [(usize, usize); 2],
}

impl PoolWindow {
    /// The output side on `axis` for an input side `size`, if the windows fit: floor mode, every
    /// window holding an input pixel (padding at most half the kernel).
    fn size_out(&self, axis: usize, size: usize) -> Option<usize> {
        let (k, s, (p0, p1)) = (self.kernel[axis], self.stride[axis], self.padding[axis]);
        let fits = k > 0 && s > 0 && 2 * p0.max(p1) <= k && size + p0 + p1 >= k;
        fits.then(|| (size + p0 + p1 - k) / s + 1)
    }

    /// Output height and width for an input of side `[h, w]`, if the windows fit.
    pub fn output(&self, [h, w]: [usize; 2]) -> Option<[usize; 2]> {
        Some([self.size_out(0, h)?, self.size_out(1, w)?])
    }

    /// The input rows (or columns, `axis` 1) of output row `o`: `[from, to)`, clipped to the
    /// input.
    fn span(&self, axis: usize, o: usize, size: usize) -> (usize, usize) {
        let start = o * self.stride[axis];
        let p = self.padding[axis].0;
        (
            start.saturating_sub(p),
            (start + self.kernel[axis]).saturating_sub(p).min(size),
        )
    }
}

/// Max pooling of each plane of `x`, and where each maximum is: its offset in its input plane.
/// The first maximum in row-major window order wins ties; a NaN wins over everything (PyTorch's
/// rule: the last NaN of a window), so a diverging run still shows.
///
/// # Shapes
/// - `x`: `[planes, h, w]` (flat, row-major; planes = batch · channels)
/// - output: `y` `[planes, h_out, w_out]`, `argmax` the same (empty unless `want_argmax`)
pub fn forward<T: Real>(
    x: &[T],
    [h, w]: [usize; 2],
    window: &PoolWindow,
    want_argmax: bool,
) -> (Vec<T>, Vec<u32>) {
    let [h_out, w_out] = window
        .output([h, w])
        .expect("the caller checked the window");
    let (plane_in, plane_out) = (h * w, h_out * w_out);
    assert!(plane_in > 0 && x.len().is_multiple_of(plane_in) && plane_in <= u32::MAX as usize);
    let planes = x.len() / plane_in;
    let mut y = vec![T::default(); planes * plane_out];
    let mut argmax = vec![0u32; if want_argmax { planes * plane_out } else { 0 }];
    let rows: Vec<(usize, usize)> = (0..h_out).map(|o| window.span(0, o, h)).collect();
    let cols: Vec<(usize, usize)> = (0..w_out).map(|o| window.span(1, o, w)).collect();
    // 2×2 windows side by side, unpadded (VGG's): a branch-free path.
    let halving =
        window.kernel == [2, 2] && window.stride == [2, 2] && window.padding == [(0, 0), (0, 0)];
    let pool_plane = |x: &[T], y: &mut [T], mut at: Option<&mut [u32]>| {
        for (oy, &(r0, r1)) in rows.iter().enumerate() {
            let y_row = &mut y[oy * w_out..(oy + 1) * w_out];
            let mut at_row = at
                .as_deref_mut()
                .map(|a| &mut a[oy * w_out..(oy + 1) * w_out]);
            if halving {
                // 2×2 windows side by side: four candidates, compared without branches.
                let (top, bottom) = (&x[r0 * w..r0 * w + 2 * w_out], &x[(r0 + 1) * w..]);
                for (ox, (y, (t, b))) in y_row
                    .iter_mut()
                    .zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
                    .enumerate()
                {
                    let (mut best, mut max) = (r0 * w + 2 * ox, t[0]);
                    let candidates = [(t[1], best + 1), (b[0], best + w), (b[1], best + w + 1)];
                    for (v, i) in candidates {
                        (best, max) = pick((best, max), (i, v));
                    }
                    *y = max;
                    if let Some(at) = at_row.as_deref_mut() {
                        at[ox] = best as u32;
                    }
                }
                continue;
            }
            for (ox, &(c0, c1)) in cols.iter().enumerate() {
                let (mut best, mut max) = (r0 * w + c0, x[r0 * w + c0]);
                for r in r0..r1 {
                    for (i, &v) in x[r * w + c0..r * w + c1].iter().enumerate() {
                        (best, max) = pick((best, max), (r * w + c0 + i, v));
                    }
                }
                y_row[ox] = max;
                if let Some(at) = at_row.as_deref_mut() {
                    at[ox] = best as u32;
                }
            }
        }
    };
    if want_argmax {
        y.par_chunks_mut(plane_out)
            .zip(argmax.par_chunks_mut(plane_out))
            .zip(x.par_chunks(plane_in))
            .for_each(|((y, at), x)| pool_plane(x, y, Some(at)));
    } else {
        y.par_chunks_mut(plane_out)
            .zip(x.par_chunks(plane_in))
            .for_each(|(y, x)| pool_plane(x, y, None));
    }
    (y, argmax)
}

/// The running maximum after seeing `(i, v)`: `v` wins if it is greater or NaN (PyTorch's
/// rule; so the first of equal maxima stays, and a NaN propagates).
#[inline(always)]
fn pick<T: Real>((best, max): (usize, T), (i, v): (usize, T)) -> (usize, T) {
    let take = v > max || v.is_nan();
    (if take { i } else { best }, if take { v } else { max })
}

/// The input gradient of max pooling: each output's gradient added at its window's maximum.
///
/// # Shapes
/// - `dy`, `argmax`: `[planes, h_out, w_out]` (flat); `plane_in` = `h · w`
/// - output: `[planes, h, w]`
pub fn backward<T: Real>(dy: &[T], argmax: &[u32], planes: usize, plane_in: usize) -> Vec<T> {
    assert!(dy.len() == argmax.len() && planes > 0 && dy.len().is_multiple_of(planes));
    let plane_out = dy.len() / planes;
    let mut dx = vec![T::default(); planes * plane_in];
    dx.par_chunks_mut(plane_in.max(1))
        .zip(dy.par_chunks(plane_out.max(1)))
        .zip(argmax.par_chunks(plane_out.max(1)))
        .for_each(|((dx, dy), at)| {
            for (&d, &i) in dy.iter().zip(at) {
                dx[i as usize] += d;
            }
        });
    dx
}

/// Max pooling on the backend, with the argmax kept for the backward under autodiff.
#[backend_extension(Flex, Autodiff)]
pub trait MaxPool: Backend {
    /// Max pooling of `x` over `window`'s windows.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, h, w]`
    /// - output: `[batch, channels, h_out, w_out]`
    fn max_pool2d_windows(x: FloatTensor<Self>, window: PoolWindow) -> FloatTensor<Self>;
}

/// The pooling on a flex tensor: the output and, where asked for, the argmax.
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`
/// - output: `[batch, channels, h_out, w_out]`, the argmax `[batch · channels · h_out · w_out]`
fn flex_forward(x: &FlexTensor, window: &PoolWindow, want_argmax: bool) -> (FlexTensor, Vec<u32>) {
    fn run<T: Real + burn::tensor::Element + bytemuck::Pod>(
        x: &FlexTensor,
        window: &PoolWindow,
        want_argmax: bool,
    ) -> (FlexTensor, Vec<u32>) {
        let [b, c, h, w] = x.shape().dims::<4>();
        let [h_out, w_out] = window.output([h, w]).expect("checked by max_pool2d");
        let (y, argmax) = forward::<T>(&host::<T>(x), [h, w], window, want_argmax);
        (flex(y, [b, c, h_out, w_out]), argmax)
    }
    match x.dtype() {
        DType::F64 => run::<f64>(x, window, want_argmax),
        _ => run::<f32>(x, window, want_argmax),
    }
}

impl MaxPool for Flex {
    fn max_pool2d_windows(x: FloatTensor<Self>, window: PoolWindow) -> FloatTensor<Self> {
        flex_forward(&x, &window, false).0
    }
}

/// The backward step of [`MaxPool`] under autodiff; one parent, `x`.
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// The argmax of every output, and the input's shape.
    type State = (Arc<Vec<u32>>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let (argmax, [b, c, h, w]) = ops.state;
        fn run<T: Real + burn::tensor::Element + bytemuck::Pod>(
            dy: &FlexTensor,
            argmax: &[u32],
            shape: [usize; 4],
        ) -> FlexTensor {
            let [b, c, h, w] = shape;
            flex(backward::<T>(&host::<T>(dy), argmax, b * c, h * w), shape)
        }
        let dx = match dy.dtype() {
            DType::F64 => run::<f64>(&dy, &argmax, [b, c, h, w]),
            _ => run::<f32>(&dy, &argmax, [b, c, h, w]),
        };
        if let [Some(node)] = ops.parents {
            grads.register::<Flex>(node.id, dx);
        }
    }
}

impl<C: CheckpointStrategy> MaxPool for Autodiff<Flex, C> {
    fn max_pool2d_windows(x: FloatTensor<Self>, window: PoolWindow) -> FloatTensor<Self> {
        let prep = MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let input = x.primitive();
        match prep {
            OpsKind::Tracked(prep) => {
                let (y, argmax) = flex_forward(input, &window, true);
                let shape = input.shape().dims::<4>();
                prep.finish((Arc::new(argmax), shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(input, &window, false).0),
        }
    }
}

/// The windows of `pool` on an input of side `[h, w]`, where [`forward`] applies (module docs).
fn window_of(pool: &MaxPool2d, [h, w]: [usize; 2]) -> Option<PoolWindow> {
    let padding = match pool.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return None,
    };
    let window = PoolWindow {
        kernel: pool.kernel_size,
        stride: pool.stride,
        padding,
    };
    let plain = pool.dilation == [1, 1] && !pool.ceil_mode;
    (plain && window.output([h, w]).is_some()).then_some(window)
}

/// `pool.forward(x)`, in one pass that keeps the argmax where it applies (module docs).
///
/// # Shapes
/// - `x`: `[batch, channels, h, w]`
/// - output: `[batch, channels, h_out, w_out]`, as `MaxPool2d::forward`
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let own = own_kernels_apply(&x);
    let float = matches!(x.dtype(), DType::F32 | DType::F64);
    match window_of(pool, [h, w]) {
        Some(window) if own && float && h * w <= u32::MAX as usize => {
            Tensor::from_dispatch(Dispatch::max_pool2d_windows(x.into_dispatch(), window))
        }
        _ => pool.forward(x),
    }
}
