//! Convolution as shifted matrix products, on host slices (NCHW, row-major, groups 1, dilation 1).
//!
//! The padded input of one image is stored split into stride phases: phase `(a, b)` holds the
//! padded pixels `(u·s_h + a, v·s_w + b)` as a `[c_in, h_q, w_q]` block. In phase space every
//! kernel tap `(i, j)` is a *unit-stride* shift: output `q = y·w_q + x` reads phase
//! `(i mod s_h, j mod s_w)` at flat offset `q + (i div s_h)·w_q + (j div s_w)`. So each tap is one
//! matrix product with a strided view (no im2col buffer), for the forward
//! (`Y[c_out, q] += W_ij[c_out, c_in] · P[c_in, q + off]`), the input gradient
//! (`dP[c_in, q + off] += W_ijᵀ · dY`) and the weight gradient (`dW_ij += dY · P[·, q + off]ᵀ`).
//! The columns `q` with `x ≥ w_out` are junk: computed and dropped (forward), zero (backward).
//! A 1×1 convolution at stride 1 without padding needs no phases: one product per image, in place.
//! With few input channels (the stems, `c_in` = 3) the taps' shifted rows are gathered into one
//! `[kh·kw·c_in, n_ext]` matrix first, so that the forward and the weight gradient are each one
//! product of useful depth rather than `kh·kw` products of depth 3.
//!
//! Around the products: the weight is scaled per output channel and laid out `[c_out, kh, kw,
//! c_in]` once per call (`prepare_weight`); the forward's [`Epilogue`] adds the bias and the
//! residual and applies the activation as it writes each output row; the backward reads the
//! output gradient through the activation ([`Upstream`]) and sums the bias gradient as it lays it
//! out, image by image. Outputs and input gradients are written whole, so their buffers are not
//! zero-filled first.
//!
//! The products run on the `gemm` crate (the kernels burn's CPU backend uses), images in
//! parallel on rayon's pool.

use core::mem::MaybeUninit;

use rayon::prelude::*;

mod winograd;

/// The element types the kernels run on.
pub trait Real:
    Copy
    + Default
    + Send
    + Sync
    + PartialOrd
    + core::ops::AddAssign
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
    + core::fmt::Debug
    + 'static
{
    /// One.
    const ONE: Self;
    /// ReLU6's ceiling.
    const SIX: Self;
    /// One half.
    const HALF: Self;

    /// Whether this is NaN.
    fn is_nan(self) -> bool;
}

impl Real for f32 {
    const ONE: Self = 1.0;
    const SIX: Self = 6.0;
    const HALF: Self = 0.5;

    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Real for f64 {
    const ONE: Self = 1.0;
    const SIX: Self = 6.0;
    const HALF: Self = 0.5;

    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// The pointwise function applied to a convolution's output (after its bias and residual).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// None: `a(v) = v`.
    #[default]
    Identity,
    /// `a(v) = max(v, 0)`.
    Relu,
    /// `a(v) = min(max(v, 0), 6)` (EfficientNet-Lite).
    Relu6,
}

impl Activation {
    /// `a(v)`; NaN stays NaN (a diverging run must still be seen to diverge).
    pub fn apply<T: Real>(self, v: T) -> T {
        match self {
            Activation::Identity => v,
            Activation::Relu if v <= T::default() => T::default(),
            Activation::Relu6 if v <= T::default() => T::default(),
            Activation::Relu6 if v >= T::SIX => T::SIX,
            _ => v,
        }
    }

    /// Whether the gradient passes at an output `a(v) = y`: everywhere for the identity, where
    /// `y > 0` for ReLU and `0 < y < 6` for ReLU6 (PyTorch's convention at the kinks).
    pub fn passes<T: Real>(self, y: T) -> bool {
        match self {
            Activation::Identity => true,
            Activation::Relu => y > T::default(),
            Activation::Relu6 => y > T::default() && y < T::SIX,
        }
    }

    /// The gradient before the activation, `d · a'(v)`, from the gradient `d` after it and the
    /// output `y = a(v)`.
    pub fn gradient<T: Real>(self, y: T, d: T) -> T {
        if self.passes(y) { d } else { T::default() }
    }
}

/// What the forward applies to each output element `v` of the convolution, in the pass that
/// writes it: `a(v + bias[c_out] + residual)`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a, T> {
    /// `[c_out]`, or none.
    pub bias: Option<&'a [T]>,
    /// Like the output (`[batch, c_out, h_out, w_out]`), or none.
    pub residual: Option<&'a [T]>,
    /// The activation `a`.
    pub activation: Activation,
}

impl<T: Real> Epilogue<'_, T> {
    /// Nothing after the convolution.
    pub const NONE: Epilogue<'static, T> = Epilogue {
        bias: None,
        residual: None,
        activation: Activation::Identity,
    };

    /// Writes output channel `c` of image `b` (every element of it) from its extended row:
    /// `a(ext + bias[c] + residual)` for each valid column (the junk ones, `x ≥ w_out`, are
    /// dropped).
    ///
    /// # Shapes
    /// - `out_b`: image `b`'s output, `[c_out, h_out, w_out]`; `ext`: `[n_ext]`
    fn write_channel(
        &self,
        g: &ConvGeometry,
        out_b: &mut [MaybeUninit<T>],
        ext: &[T],
        c: usize,
        b: usize,
    ) {
        let [h_out, w_out] = g.size_out();
        let wq = g.phase_size()[1];
        for y in 0..h_out {
            let at = (c * h_out + y) * w_out;
            let (out, ext) = (&mut out_b[at..at + w_out], &ext[y * wq..y * wq + w_out]);
            self.write_row(out, ext, c, b * g.c_out * h_out * w_out + at);
        }
    }

    /// `out ← a(src + bias[c] + residual[at..])`, every element written (`at` = where `out`
    /// starts in the whole output, `c` its output channel).
    ///
    /// # Shapes
    /// - `out`, `src`: part of one row of output channel `c`, the same length
    fn write_row(&self, out: &mut [MaybeUninit<T>], src: &[T], c: usize, at: usize) {
        let bias = self.bias.map_or(T::default(), |bias| bias[c]);
        let a = self.activation;
        match self.residual {
            Some(r) => {
                for ((o, &v), &r) in out.iter_mut().zip(src).zip(&r[at..at + src.len()]) {
                    let mut s = v;
                    s += bias;
                    s += r;
                    o.write(a.apply(s));
                }
            }
            None => {
                for (o, &v) in out.iter_mut().zip(src) {
                    let mut s = v;
                    s += bias;
                    o.write(a.apply(s));
                }
            }
        }
    }

    /// `out ← a(out + bias[c] + residual[at..])` (`at` = where `out` starts in the whole output,
    /// `c` its output channel).
    ///
    /// # Shapes
    /// - `out`: part of one row of output channel `c`
    fn apply_in_place(&self, out: &mut [T], c: usize, at: usize) {
        let b = self.bias.map_or(T::default(), |bias| bias[c]);
        let a = self.activation;
        match self.residual {
            Some(r) => {
                let r = &r[at..at + out.len()];
                for (o, &r) in out.iter_mut().zip(r) {
                    let mut s = *o;
                    s += b;
                    s += r;
                    *o = a.apply(s);
                }
            }
            None if self.bias.is_none() && a == Activation::Identity => {}
            None => {
                for o in out.iter_mut() {
                    let mut s = *o;
                    s += b;
                    *o = a.apply(s);
                }
            }
        }
    }
}

/// Shapes and options of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images.
    pub batch: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height and width.
    pub size_in: [usize; 2],
    /// Output channels.
    pub c_out: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width), non-zero.
    pub stride: [usize; 2],
    /// Zero padding `(begin, end)` per spatial axis (height, width).
    pub padding: [(usize, usize); 2],
    /// Depthwise (`groups = c_in = c_out`, weight `[c, 1, kh, kw]`): each channel convolved with
    /// its own kernel.
    pub depthwise: bool,
}

impl ConvGeometry {
    /// Padded input side on `axis`.
    fn padded(&self, axis: usize) -> usize {
        self.padding[axis].0 + self.size_in[axis] + self.padding[axis].1
    }

    /// Output height and width.
    pub fn size_out(&self) -> [usize; 2] {
        [0, 1].map(|a| (self.padded(a) - self.kernel[a]) / self.stride[a] + 1)
    }

    /// Whether the kernel fits the padded input (otherwise there is no output).
    pub fn is_valid(&self) -> bool {
        [0, 1]
            .iter()
            .all(|&a| self.stride[a] > 0 && self.kernel[a] > 0 && self.padded(a) >= self.kernel[a])
    }

    /// Phase-plane height and width: `ceil(padded / stride)`.
    fn phase_size(&self) -> [usize; 2] {
        [0, 1].map(|a| self.padded(a).div_ceil(self.stride[a]))
    }

    /// Elements of one phase-split padded image.
    fn phase_image_len(&self) -> usize {
        let [hq, wq] = self.phase_size();
        self.stride[0] * self.stride[1] * self.c_in * hq * wq
    }

    /// Columns of the extended output (`q` up to the last valid output).
    fn n_ext(&self) -> usize {
        let [h_out, w_out] = self.size_out();
        (h_out - 1) * self.phase_size()[1] + w_out
    }

    /// Where tap `(i, j)` reads: the start of its phase block plus its shift.
    fn tap_offset(&self, i: usize, j: usize) -> usize {
        let [hq, wq] = self.phase_size();
        let [sh, sw] = self.stride;
        let phase = (i % sh) * sw + (j % sw);
        phase * self.c_in * hq * wq + (i / sh) * wq + (j / sw)
    }

    /// A 1×1 convolution at stride 1 without padding (each image is its own phase plane and its
    /// output's extended layout).
    fn is_pointwise(&self) -> bool {
        !self.depthwise
            && self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.padding == [(0, 0), (0, 0)]
    }

    /// Whether the dense kernels gather the taps' rows into one `[kh·kw·c_in, n_ext]` matrix
    /// and run one product of depth `kh·kw·c_in` instead of one of depth `c_in` per tap: the
    /// stems (`c_in` = 3: VGG's 3×3 conv1_1, ResNet's 7×7, EfficientNet's 3×3 stride 2), where
    /// a depth-3 product runs at a tenth of the machine's speed.
    fn gathers_taps(&self) -> bool {
        !self.depthwise && self.c_in <= GATHER_MAX_C_IN && !self.is_pointwise()
    }

    /// Writes the taps' rows of the phase-split image into `cols` (`[kh·kw·c_in, n_ext]`, row
    /// `(i·kw + j)·c_in + c` = channel `c` shifted by tap `(i, j)`: the rows of the prepared
    /// weight's columns, [`prepared_index`]).
    fn gather_taps<T: Real>(&self, phases: &[T], cols: &mut [T]) {
        let [hq, wq] = self.phase_size();
        let n_ext = self.n_ext();
        let mut rows = cols.chunks_mut(n_ext.max(1));
        for i in 0..self.kernel[0] {
            for j in 0..self.kernel[1] {
                for c in 0..self.c_in {
                    let at = self.tap_offset(i, j) + c * hq * wq;
                    if let Some(row) = rows.next() {
                        row.copy_from_slice(&phases[at..at + n_ext]);
                    }
                }
            }
        }
    }

    /// Input channels each output channel sees.
    fn c_in_per_group(&self) -> usize {
        if self.depthwise { 1 } else { self.c_in }
    }

    /// Elements of the input, weight and output.
    pub fn lens(&self) -> [usize; 3] {
        let [h, w] = self.size_in;
        let [h_out, w_out] = self.size_out();
        [
            self.batch * self.c_in * h * w,
            self.c_out * self.c_in_per_group() * self.kernel[0] * self.kernel[1],
            self.batch * self.c_out * h_out * w_out,
        ]
    }

    /// Visits the pixels of one image in runs `(from, step, to, len)`: input elements
    /// `from + k·step` sit at `to + k` in the phase-split padded image, `k < len`. One run per
    /// input row and column phase (one per row at stride 1).
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let [h, w] = self.size_in;
        let [hq, wq] = self.phase_size();
        let [sh, sw] = self.stride;
        let (top, left) = (self.padding[0].0, self.padding[1].0);
        for c in 0..self.c_in {
            for r in 0..h {
                let (pr, row_in_phase) = ((r + top) % sh, (r + top) / sh);
                for pc in 0..sw {
                    // The input columns whose padded column falls in phase column `pc`.
                    let col0 = (pc + sw - left % sw) % sw;
                    if col0 >= w {
                        continue;
                    }
                    let len = (w - col0).div_ceil(sw);
                    let phase = pr * sw + pc;
                    let to =
                        ((phase * self.c_in + c) * hq + row_in_phase) * wq + (col0 + left) / sw;
                    f((c * h + r) * w + col0, sw, to, len);
                }
            }
        }
    }

    /// Writes one image (`[c_in, h, w]`) into `phases`. The padding's places are never written:
    /// a buffer zeroed once keeps them zero from image to image.
    fn split_phases<T: Real>(&self, image: &[T], phases: &mut [T]) {
        self.for_each_run(|from, step, to, len| {
            if step == 1 {
                phases[to..to + len].copy_from_slice(&image[from..from + len]);
            } else {
                for (k, v) in phases[to..to + len].iter_mut().enumerate() {
                    *v = image[from + k * step];
                }
            }
        });
    }

    /// Writes one image's gradient (`[c_in, h, w]`, every element) from its phase-split padded
    /// gradient (the padding's share is dropped).
    fn merge_phases<T: Real>(&self, phases: &[T], image: &mut [MaybeUninit<T>]) {
        self.for_each_run(|from, step, to, len| {
            for (k, &v) in phases[to..to + len].iter().enumerate() {
                image[from + k * step].write(v);
            }
        });
    }
}

/// Up to how many input channels the dense kernels gather the taps ([`ConvGeometry::gathers_taps`]).
const GATHER_MAX_C_IN: usize = 4;

/// How the images are shared out: contiguous groups run in parallel (one per thread) when there
/// are at least as many images as threads, each product then single-threaded; otherwise one
/// group, each product on every thread. The grouping depends only on the batch and the thread
/// count, so results are the same run to run.
fn plan(batch: usize) -> (Vec<core::ops::Range<usize>>, gemm::Parallelism) {
    let threads = rayon::current_num_threads().max(1);
    if threads > 1 && batch >= threads {
        let per = batch.div_ceil(threads);
        let groups = (0..batch)
            .step_by(per)
            .map(|s| s..(s + per).min(batch))
            .collect();
        (groups, gemm::Parallelism::None)
    } else if threads > 1 {
        (
            std::iter::once(0..batch).collect(),
            gemm::Parallelism::Rayon(threads),
        )
    } else {
        (std::iter::once(0..batch).collect(), gemm::Parallelism::None)
    }
}

/// Splits `data` (`batch` equal images) into the groups' slices.
fn split_groups<'a, T>(
    data: &'a mut [T],
    groups: &[core::ops::Range<usize>],
    per_image: usize,
) -> Vec<&'a mut [T]> {
    let mut rest = data;
    groups
        .iter()
        .map(|r| {
            let (head, tail) = core::mem::take(&mut rest).split_at_mut(r.len() * per_image);
            rest = tail;
            head
        })
        .collect()
}

/// The groups' slices of `data` where there is one (the input gradient, when asked for), else
/// one `None` per group.
fn optional_groups<'a, T>(
    data: Option<&'a mut [T]>,
    groups: &[core::ops::Range<usize>],
    per_image: usize,
) -> Vec<Option<&'a mut [T]>> {
    match data {
        Some(data) => split_groups(data, groups, per_image)
            .into_iter()
            .map(Some)
            .collect(),
        None => groups.iter().map(|_| None).collect(),
    }
}

/// A vector of `len` elements that `init` writes, without zeroing it first (the kernels'
/// outputs and input gradients: zero-filling them was about 4 % of a ResNet-101 training step,
/// `perf`, issue 11).
///
/// # Safety
/// `init` writes every element of the slice it is given.
unsafe fn written_by<T>(len: usize, init: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    init(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the first `len` elements are initialized (the caller's contract).
    unsafe { v.set_len(len) };
    v
}

/// The elements `product` wrote, as a slice.
///
/// # Safety
/// Every element of `slice` has been written.
unsafe fn assume_written<T>(slice: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and every element is initialized.
    unsafe { core::slice::from_raw_parts_mut(slice.as_mut_ptr().cast::<T>(), slice.len()) }
}

/// Runs `run_group(images, their output)` on the plan's groups in parallel and returns the
/// output (`[batch, per_image]`).
///
/// # Safety
/// `run_group` writes every element of the output slice it is given.
unsafe fn forward_groups<T: Real>(
    groups: Vec<core::ops::Range<usize>>,
    per_image: usize,
    run_group: impl Fn(core::ops::Range<usize>, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    let batch = groups.last().map_or(0, |r| r.end);
    let fill = |out: &mut [MaybeUninit<T>]| {
        let slices = split_groups(out, &groups, per_image);
        groups
            .clone()
            .into_par_iter()
            .zip(slices)
            .for_each(|(range, out_g)| run_group(range, out_g));
    };
    // SAFETY: the groups cover the batch, and each run writes its whole slice (the contract).
    unsafe { written_by(batch * per_image, fill) }
}

/// Runs `run_group(images, their input gradient if asked for)` on the plan's groups in
/// parallel; each returns its parts of the weight and bias gradients (where asked for). Returns
/// the input gradient (`[batch, x_per_image]`) and the groups' parts summed in group order, so
/// the result does not depend on which thread finishes first.
///
/// # Safety
/// `run_group` writes every element of the input-gradient slice it is given.
unsafe fn backward_groups<T: Real>(
    groups: Vec<core::ops::Range<usize>>,
    want_dx: bool,
    x_per_image: usize,
    run_group: impl Fn(core::ops::Range<usize>, Option<&mut [MaybeUninit<T>]>) -> [Option<Vec<T>>; 2]
    + Sync
    + Send,
) -> (Option<Vec<T>>, [Option<Vec<T>>; 2]) {
    let batch = groups.last().map_or(0, |r| r.end);
    let mut parts = Vec::new();
    let mut run = |dx: Option<&mut [MaybeUninit<T>]>| {
        let dx_slices = optional_groups(dx, &groups, x_per_image);
        parts = groups
            .clone()
            .into_par_iter()
            .zip(dx_slices)
            .map(|(range, dx_g)| run_group(range, dx_g))
            .collect();
    };
    // SAFETY: the groups cover the batch, and each run writes its whole slice (the contract).
    let dx = want_dx.then(|| unsafe { written_by(batch * x_per_image, |dx| run(Some(dx))) });
    if !want_dx {
        run(None);
    }
    let (mut dw, mut db) = (Vec::new(), Vec::new());
    for [w, b] in parts {
        dw.extend(w);
        db.extend(b);
    }
    (dx, [sum_parts(dw), sum_parts(db)])
}

/// A strided matrix view for [`product`]: element `(r, c)` at `ptr + r·rs + c·cs`.
#[derive(Clone, Copy)]
struct View<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` (`accumulate` keeps what `dst` holds).
///
/// # Safety
/// Every element the three views address for these sizes lies in a live allocation, and `dst`
/// does not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn product<T: Real>(
    [m, n, k]: [usize; 3],
    dst: *mut T,
    [dst_rs, dst_cs]: [isize; 2],
    accumulate: bool,
    lhs: View<T>,
    rhs: View<T>,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Where the products read weight element `(c_out, c_in, tap)`: `[c_out, kh, kw, c_in]` for
/// dense convolutions, so that each tap's `[c_out, c_in]` matrix has contiguous rows (packing
/// then reads rows, not every ninth element); as given (`[c, 1, kh, kw]`) for depthwise ones.
fn prepared_index(g: &ConvGeometry, oc: usize, ic: usize, t: usize) -> usize {
    let taps = g.kernel[0] * g.kernel[1];
    if g.depthwise {
        oc * taps + t
    } else {
        (oc * taps + t) * g.c_in + ic
    }
}

/// The weight the products use: `weight · scale` (per output channel, where there is a scale),
/// at [`prepared_index`].
///
/// # Shapes
/// - `weight`: `[c_out, c_in / groups, kh, kw]`, `scale`: `[c_out]`
/// - output: the same elements, rearranged
fn prepare_weight<'a, T: Real>(
    g: &ConvGeometry,
    weight: &'a [T],
    scale: Option<&[T]>,
) -> std::borrow::Cow<'a, [T]> {
    let (taps, c_in) = (g.kernel[0] * g.kernel[1], g.c_in_per_group());
    let same_layout = g.depthwise || taps == 1;
    if same_layout && scale.is_none() {
        return std::borrow::Cow::Borrowed(weight);
    }
    // One row of `c_in · taps` elements per output channel, in both layouts.
    let per_out = (c_in * taps).max(1);
    let permute = |out: &mut [MaybeUninit<T>]| {
        out.par_chunks_mut(per_out)
            .zip(weight.par_chunks(per_out))
            .enumerate()
            .for_each(|(oc, (o, w))| {
                let s = scale.map_or(T::ONE, |s| s[oc]);
                if same_layout {
                    for (o, &w) in o.iter_mut().zip(w) {
                        o.write(w * s);
                    }
                    return;
                }
                for ic in 0..c_in {
                    for t in 0..taps {
                        o[prepared_index(g, 0, ic, t)].write(w[ic * taps + t] * s);
                    }
                }
            });
    };
    // SAFETY: `prepared_index` maps each output channel's `c_in · taps` elements one to one
    // onto its row, so every element is written.
    std::borrow::Cow::Owned(unsafe { written_by(weight.len(), permute) })
}

/// The weight and scale gradients from the prepared weight's (`dW'`, at [`prepared_index`]):
/// `dW = dW' · s` in `[c_out, c_in / groups, kh, kw]`, and `ds[c] = Σ dW'[c, …] · W[c, …]`
/// where there is a scale.
///
/// # Shapes
/// - `d_prepared`: like the prepared weight; `weight`: `[c_out, c_in / groups, kh, kw]`;
///   `scale`: `[c_out]`
/// - output: `dW` like `weight`, `ds`: `[c_out]`
fn weight_gradients<T: Real>(
    g: &ConvGeometry,
    d_prepared: &[T],
    weight: &[T],
    scale: Option<&[T]>,
) -> (Vec<T>, Option<Vec<T>>) {
    let (taps, c_in) = (g.kernel[0] * g.kernel[1], g.c_in_per_group());
    let per_out = (c_in * taps).max(1);
    let mut dw = vec![T::default(); weight.len()];
    let sums: Vec<T> = dw
        .par_chunks_mut(per_out)
        .zip(weight.par_chunks(per_out))
        .enumerate()
        .map(|(oc, (dw, w))| {
            let s = scale.map_or(T::ONE, |s| s[oc]);
            let mut acc = T::default();
            if g.depthwise || taps == 1 {
                // The prepared layout is the weight's.
                let d_row = &d_prepared[oc * per_out..(oc + 1) * per_out];
                for ((dw, &d), &w) in dw.iter_mut().zip(d_row).zip(w) {
                    *dw = d * s;
                    acc += d * w;
                }
                return acc;
            }
            for ic in 0..c_in {
                for t in 0..taps {
                    let d = d_prepared[prepared_index(g, oc, ic, t)];
                    dw[ic * taps + t] = d * s;
                    acc += d * w[ic * taps + t];
                }
            }
            acc
        })
        .collect();
    (dw, scale.map(|_| sums))
}

/// The weight of tap `(i, j)` as a `[c_out, c_in]` view into the prepared weight of a dense
/// convolution (`[c_out, kh, kw, c_in]`, [`prepared_index`]).
fn tap_weight<T>(g: &ConvGeometry, prepared: &[T], i: usize, j: usize) -> View<T> {
    let taps = g.kernel[0] * g.kernel[1];
    View {
        ptr: prepared[(i * g.kernel[1] + j) * g.c_in..].as_ptr(),
        rs: (taps * g.c_in) as isize,
        cs: 1,
    }
}

/// How a dense 3×3 stride-1 convolution's forward and input gradient are computed (every other
/// convolution has one way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// One product per kernel tap (module docs).
    ShiftedProducts,
    /// Winograd's F(2×2, 3×3): 16 products on transformed 2×2 output tiles (`winograd.rs`).
    Winograd,
}

impl Algorithm {
    /// The faster one for `g`, as measured with `make bench-conv` (issue 11): Winograd for 3×3
    /// stride-1 convolutions with at least 128 channels in and out and
    /// `min(c_in, c_out) · h_out · w_out ≥ 256 · 30²` (VGG-16 from conv2_2 on: 10–40 % faster
    /// forward, 5–15 % backward); shifted products elsewhere (ResNet-101's 3×3 layers, 64–256
    /// channels on 60²–15² planes, where the transforms cost about what they save).
    pub fn choose(g: &ConvGeometry) -> Self {
        let [h_out, w_out] = g.size_out();
        let channels = g.c_in.min(g.c_out);
        if winograd::fits(g) && channels >= 128 && channels * h_out * w_out >= 256 * 30 * 30 {
            Algorithm::Winograd
        } else {
            Algorithm::ShiftedProducts
        }
    }
}

/// The convolution's output, with the epilogue applied: `a(conv(x, weight · scale) + bias +
/// residual)` (the scale per output channel: batch normalization folded into the weight).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]` (flat, row-major),
///   `scale`: `[c_out]`; the epilogue's `bias`: `[c_out]`, `residual`: like the output
/// - output: `[batch, c_out, h_out, w_out]`
pub fn forward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    scale: Option<&[T]>,
    epi: &Epilogue<T>,
) -> Vec<T> {
    forward_by(Algorithm::choose(g), g, x, weight, scale, epi)
}

/// [`forward`] by `algorithm` where it applies (a convolution Winograd's algorithm does not fit
/// runs by shifted products).
///
/// # Shapes
/// - as [`forward`]
pub fn forward_by<T: Real>(
    algorithm: Algorithm,
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    scale: Option<&[T]>,
    epi: &Epilogue<T>,
) -> Vec<T> {
    let [x_len, w_len, y_len] = g.lens();
    assert!(g.is_valid() && x.len() == x_len && weight.len() == w_len);
    assert!(scale.is_none_or(|s| s.len() == g.c_out));
    assert!(epi.bias.is_none_or(|b| b.len() == g.c_out));
    assert!(epi.residual.is_none_or(|r| r.len() == y_len));
    let weight = &*prepare_weight(g, weight, scale);
    if g.depthwise {
        depthwise_forward(g, x, weight, epi)
    } else if g.is_pointwise() {
        pointwise_forward(g, x, weight, epi)
    } else if algorithm == Algorithm::Winograd && winograd::fits(g) {
        winograd::forward(g, x, weight, epi)
    } else {
        dense_forward(g, x, weight, epi)
    }
}

/// [`forward`] for a dense convolution, on the prepared weight (`[c_out, kh, kw, c_in]`): one
/// product per tap, or one in all for few input channels ([`ConvGeometry::gathers_taps`]).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: prepared ([`prepared_index`]), the epilogue's as in
///   [`forward`]
/// - output: `[batch, c_out, h_out, w_out]`
fn dense_forward<T: Real>(g: &ConvGeometry, x: &[T], weight: &[T], epi: &Epilogue<T>) -> Vec<T> {
    let [h_out, w_out] = g.size_out();
    let wq = g.phase_size()[1];
    let (n_ext, plane_out) = (g.n_ext(), h_out * w_out);
    let (x_img, out_img) = (g.c_in * g.size_in[0] * g.size_in[1], g.c_out * plane_out);
    let (groups, inner) = plan(g.batch);
    let run_group = |range: core::ops::Range<usize>, out_g: &mut [MaybeUninit<T>]| {
        let mut phases = vec![T::default(); g.phase_image_len()];
        let mut ext = vec![T::default(); g.c_out * n_ext];
        let depth = g.kernel[0] * g.kernel[1] * g.c_in;
        let mut cols = vec![T::default(); if g.gathers_taps() { depth * n_ext } else { 0 }];
        for (b, out_b) in range.zip(out_g.chunks_mut(out_img.max(1))) {
            g.split_phases(&x[b * x_img..(b + 1) * x_img], &mut phases);
            if g.gathers_taps() {
                g.gather_taps(&phases, &mut cols);
                let (lhs, rhs) = (
                    View {
                        ptr: weight.as_ptr(),
                        rs: depth as isize,
                        cs: 1,
                    },
                    View {
                        ptr: cols.as_ptr(),
                        rs: n_ext as isize,
                        cs: 1,
                    },
                );
                // SAFETY: `ext` is [c_out, n_ext], the prepared weight [c_out, depth] and
                // `cols` [depth, n_ext], all row-major.
                unsafe {
                    product(
                        [g.c_out, n_ext, depth],
                        ext.as_mut_ptr(),
                        [n_ext as isize, 1],
                        false,
                        lhs,
                        rhs,
                        inner,
                    )
                }
                for (co, row) in ext.chunks(n_ext).enumerate() {
                    epi.write_channel(g, out_b, row, co, b);
                }
                continue;
            }
            for i in 0..g.kernel[0] {
                for j in 0..g.kernel[1] {
                    let rhs = View {
                        ptr: phases[g.tap_offset(i, j)..].as_ptr(),
                        rs: (g.phase_size()[0] * wq) as isize,
                        cs: 1,
                    };
                    // SAFETY: `ext` is [c_out, n_ext]; the tap view reads c_in rows of n_ext
                    // columns inside `phases` (module docs: the last valid q plus the largest
                    // shift stays in its phase plane); the weight view stays inside `weight`.
                    unsafe {
                        product(
                            [g.c_out, n_ext, g.c_in],
                            ext.as_mut_ptr(),
                            [n_ext as isize, 1],
                            i + j > 0,
                            tap_weight(g, weight, i, j),
                            rhs,
                            inner,
                        )
                    }
                }
            }
            for (co, row) in ext.chunks(n_ext).enumerate() {
                epi.write_channel(g, out_b, row, co, b);
            }
        }
    };
    // SAFETY: each image's channels are all written by `write_channel`.
    unsafe { forward_groups(groups, out_img, run_group) }
}

/// [`forward`] for a 1×1 convolution at stride 1 without padding: the image is its own phase
/// plane, so one product per image writes the output in place.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: prepared ([`prepared_index`]), the epilogue's as in
///   [`forward`]
/// - output: `[batch, c_out, h_out, w_out]`
fn pointwise_forward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    epi: &Epilogue<T>,
) -> Vec<T> {
    let plane = g.size_in[0] * g.size_in[1];
    let (x_img, out_img) = (g.c_in * plane, g.c_out * plane);
    let (groups, inner) = plan(g.batch);
    let run_group = |range: core::ops::Range<usize>, out_g: &mut [MaybeUninit<T>]| {
        for (b, out_b) in range.zip(out_g.chunks_mut(out_img.max(1))) {
            let lhs = View {
                ptr: weight.as_ptr(),
                rs: g.c_in as isize,
                cs: 1,
            };
            let rhs = View {
                ptr: x[b * x_img..].as_ptr(),
                rs: plane as isize,
                cs: 1,
            };
            // SAFETY: `out_b` is [c_out, plane], the weight [c_out, c_in] and image b of `x`
            // [c_in, plane], all row-major; the product writes every element of `out_b`
            // without reading it (`accumulate` false).
            let out_b = unsafe {
                product(
                    [g.c_out, plane, g.c_in],
                    out_b.as_mut_ptr().cast::<T>(),
                    [plane as isize, 1],
                    false,
                    lhs,
                    rhs,
                    inner,
                );
                assume_written(out_b)
            };
            for (co, row) in out_b.chunks_mut(plane.max(1)).enumerate() {
                epi.apply_in_place(row, co, (b * g.c_out + co) * plane);
            }
        }
    };
    // SAFETY: each image's product writes its whole output (above).
    unsafe { forward_groups(groups, out_img, run_group) }
}

/// The gradient arriving at the convolution's output: `dy`, or, when the fused output pass
/// applied an activation, `dy` through it: `dv = dy ⊙ a'(y)` from the pass's output `y`
/// (computed image by image as the kernels read it, never stored whole).
#[derive(Clone, Copy, Debug)]
pub struct Upstream<'a, T> {
    /// `[batch, c_out, h_out, w_out]`.
    pub dy: &'a [T],
    /// The activation and the output `y` (like `dy`), or none.
    pub through: Option<(Activation, &'a [T])>,
}

impl<T: Real> Upstream<'_, T> {
    /// Whether `dv` is `dy` as given.
    fn is_plain(&self) -> bool {
        self.through.is_none()
    }

    /// Image `b`'s `dv` laid out on the extended columns (`dst`, `[c_out, n_ext]`, its junk
    /// columns left as they are: zero), and its sums per channel added to `db`.
    ///
    /// # Shapes
    /// - `dst`: `[c_out, n_ext]`, `db`: `[c_out]`
    fn extend_into(&self, g: &ConvGeometry, b: usize, dst: &mut [T], mut db: Option<&mut [T]>) {
        let [h_out, w_out] = g.size_out();
        let (wq, n_ext) = (g.phase_size()[1], g.n_ext());
        let image = g.c_out * h_out * w_out;
        for co in 0..g.c_out {
            let mut sum = T::default();
            for y in 0..h_out {
                let from = b * image + (co * h_out + y) * w_out;
                let to = co * n_ext + y * wq;
                let (dst, dy) = (&mut dst[to..to + w_out], &self.dy[from..from + w_out]);
                match self.through {
                    Some((a, out)) => {
                        for ((d, &v), &y) in dst.iter_mut().zip(dy).zip(&out[from..from + w_out]) {
                            *d = a.gradient(y, v);
                            sum += *d;
                        }
                    }
                    None => {
                        dst.copy_from_slice(dy);
                        if db.is_some() {
                            for &v in dy {
                                sum += v;
                            }
                        }
                    }
                }
            }
            if let Some(db) = db.as_deref_mut() {
                db[co] += sum;
            }
        }
    }
}

/// Gradients of `Σ dv ⊙ conv(x, weight · scale)` (`dv`: the upstream gradient, through the
/// fused pass's activation where there was one) with respect to the input, the weight, the
/// scale and the fused pass's bias (`Σ dv` per channel), each only when asked for.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: `[c_out, c_in / groups, kh, kw]`, `scale`: `[c_out]`,
///   `up.dy` (and `y`): `[batch, c_out, h_out, w_out]` (flat, row-major)
/// - output: `dx` like `x`, `dweight` like `weight`, `dscale` like `scale` (none without a
///   scale), `dbias`: `[c_out]`
pub fn backward<T: Real>(
    g: &ConvGeometry,
    [x, weight]: [&[T]; 2],
    scale: Option<&[T]>,
    up: Upstream<T>,
    want: [bool; 4],
) -> [Option<Vec<T>>; 4] {
    backward_by(Algorithm::choose(g), g, [x, weight], scale, up, want)
}

/// [`backward`] with the input gradient by `algorithm` where it applies (the weight's is
/// always by shifted products).
///
/// # Shapes
/// - as [`backward`]
pub fn backward_by<T: Real>(
    algorithm: Algorithm,
    g: &ConvGeometry,
    [x, weight]: [&[T]; 2],
    scale: Option<&[T]>,
    up: Upstream<T>,
    [want_dx, want_dw, want_ds, want_db]: [bool; 4],
) -> [Option<Vec<T>>; 4] {
    let [x_len, w_len, out_len] = g.lens();
    assert!(g.is_valid() && x.len() == x_len && weight.len() == w_len && up.dy.len() == out_len);
    assert!(up.through.is_none_or(|(_, y)| y.len() == out_len));
    assert!(scale.is_none_or(|s| s.len() == g.c_out));
    let prepared = &*prepare_weight(g, weight, scale);
    let want = Want {
        dx: want_dx,
        d_prepared: want_dw || (want_ds && scale.is_some()),
        db: want_db,
    };
    let (dx, [d_prepared, db]) = if g.depthwise {
        depthwise_backward(g, x, prepared, up, want)
    } else if g.is_pointwise() {
        pointwise_backward(g, x, prepared, up, want)
    } else if want.dx && algorithm == Algorithm::Winograd && winograd::fits(g) {
        // The input gradient by Winograd's algorithm from the whole `dv`; the weight and bias
        // gradients by the shifted products.
        let dv = match up.through {
            Some((a, y)) => std::borrow::Cow::Owned(through_activation(a, y, up.dy)),
            None => std::borrow::Cow::Borrowed(up.dy),
        };
        let dx = winograd::input_gradient(g, prepared, &dv);
        let rest = Want { dx: false, ..want };
        let up = Upstream {
            dy: &dv,
            through: None,
        };
        let (_, grads) = dense_backward(g, x, prepared, up, rest);
        (Some(dx), grads)
    } else {
        dense_backward(g, x, prepared, up, want)
    };
    let (dw, ds) = match d_prepared {
        Some(d) => weight_gradients(g, &d, weight, scale),
        None => (Vec::new(), None),
    };
    [dx, want_dw.then_some(dw), ds.filter(|_| want_ds), db]
}

/// Which gradients a backward variant computes.
#[derive(Clone, Copy)]
struct Want {
    dx: bool,
    /// The prepared weight's ([`prepare_weight`]).
    d_prepared: bool,
    db: bool,
}

/// What each backward variant returns: the input gradient, and the prepared weight's and the
/// bias's gradients.
type Grads<T> = (Option<Vec<T>>, [Option<Vec<T>>; 2]);

/// [`backward`] for a 1×1 convolution at stride 1 without padding: per image one product for
/// the input gradient (written in place) and one for the weight's.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: prepared ([`prepared_index`]), `up.dy`:
///   `[batch, c_out, h_out, w_out]`
/// - output: `dx` like `x`, the prepared weight's gradient like `weight`, the bias's `[c_out]`
fn pointwise_backward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    up: Upstream<T>,
    want: Want,
) -> Grads<T> {
    let plane = g.size_in[0] * g.size_in[1];
    let (x_img, dy_img, w_len) = (g.c_in * plane, g.c_out * plane, g.c_out * g.c_in);
    // `dv` is read where it is, unless it has to be computed (or summed) first.
    let direct = up.is_plain() && !want.db;
    let (groups, inner) = plan(g.batch);
    let run_group = |range: core::ops::Range<usize>, mut dx_g: Option<&mut [MaybeUninit<T>]>| {
        let mut dw = want.d_prepared.then(|| vec![T::default(); w_len]);
        let mut db = want.db.then(|| vec![T::default(); g.c_out]);
        let mut dv = vec![T::default(); if direct { 0 } else { dy_img }];
        for (n, b) in range.enumerate() {
            if !direct {
                up.extend_into(g, b, &mut dv, db.as_deref_mut());
            }
            let dv_view = View {
                ptr: if direct {
                    up.dy[b * dy_img..].as_ptr()
                } else {
                    dv.as_ptr()
                },
                rs: plane as isize,
                cs: 1,
            };
            if let Some(dx_g) = dx_g.as_deref_mut() {
                let w_t = View {
                    ptr: weight.as_ptr(),
                    rs: 1,
                    cs: g.c_in as isize,
                };
                // SAFETY: image n of the group's `dx` is [c_in, plane], written whole
                // (`accumulate` false); `weight` is [c_out, c_in] (read transposed), `dv_view`
                // [c_out, plane].
                unsafe {
                    product(
                        [g.c_in, plane, g.c_out],
                        dx_g[n * x_img..].as_mut_ptr().cast::<T>(),
                        [plane as isize, 1],
                        false,
                        w_t,
                        dv_view,
                        inner,
                    )
                }
            }
            if let Some(dw) = dw.as_mut() {
                let x_t = View {
                    ptr: x[b * x_img..].as_ptr(),
                    rs: 1,
                    cs: plane as isize,
                };
                // SAFETY: `dw` is [c_out, c_in]; image b of `x` is [c_in, plane] (read
                // transposed), `dv_view` [c_out, plane].
                unsafe {
                    product(
                        [g.c_out, g.c_in, plane],
                        dw.as_mut_ptr(),
                        [g.c_in as isize, 1],
                        true,
                        dv_view,
                        x_t,
                        inner,
                    )
                }
            }
        }
        [dw, db]
    };
    // SAFETY: each image's input-gradient product writes its whole slice (above).
    unsafe { backward_groups(groups, want.dx, x_img, run_group) }
}

/// [`backward`] for a dense convolution on the prepared weight (`[c_out, kh, kw, c_in]`): per
/// image one product per tap for the input gradient and one for the weight's.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: prepared ([`prepared_index`]), `up.dy`:
///   `[batch, c_out, h_out, w_out]`
/// - output: `dx` like `x`, the prepared weight's gradient like `weight`, the bias's `[c_out]`
fn dense_backward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    up: Upstream<T>,
    want: Want,
) -> Grads<T> {
    let [x_len, w_len, _] = g.lens();
    let [hq, wq] = g.phase_size();
    let n_ext = g.n_ext();
    let x_img = x_len / g.batch.max(1);
    let taps: Vec<(usize, usize)> = (0..g.kernel[0])
        .flat_map(|i| (0..g.kernel[1]).map(move |j| (i, j)))
        .collect();
    let (groups, inner) = plan(g.batch);
    let run_group = |range: core::ops::Range<usize>, mut dx_g: Option<&mut [MaybeUninit<T>]>| {
        // The input's phases (padding zero once, `split_phases`) and the input gradient's
        // (accumulated tap by tap: zeroed per image).
        let mut phases = vec![
            T::default();
            if want.d_prepared {
                g.phase_image_len()
            } else {
                0
            }
        ];
        let mut d_phases = vec![T::default(); if want.dx { g.phase_image_len() } else { 0 }];
        let mut dw = want.d_prepared.then(|| vec![T::default(); w_len]);
        let mut db = want.db.then(|| vec![T::default(); g.c_out]);
        // Zero once: the junk columns stay zero, the others are rewritten per image.
        let mut dv_ext = vec![T::default(); g.c_out * n_ext];
        let gather = want.d_prepared && g.gathers_taps();
        let mut cols = vec![T::default(); if gather { w_len / g.c_out * n_ext } else { 0 }];
        for (n, b) in range.enumerate() {
            up.extend_into(g, b, &mut dv_ext, db.as_deref_mut());
            let dv_view = View {
                ptr: dv_ext.as_ptr(),
                rs: n_ext as isize,
                cs: 1,
            };
            if let Some(dx_g) = dx_g.as_deref_mut() {
                d_phases.fill(T::default());
                for &(i, j) in &taps {
                    let w = tap_weight(g, weight, i, j);
                    let w_t = View {
                        ptr: w.ptr,
                        rs: w.cs,
                        cs: w.rs,
                    };
                    // SAFETY: the destination view addresses c_in rows of n_ext columns at the
                    // tap's offset inside `d_phases` (the elements the forward's tap view reads);
                    // the sources are `weight` and `dv_ext` ([c_out, n_ext]).
                    unsafe {
                        product(
                            [g.c_in, n_ext, g.c_out],
                            d_phases[g.tap_offset(i, j)..].as_mut_ptr(),
                            [(hq * wq) as isize, 1],
                            true,
                            w_t,
                            dv_view,
                            inner,
                        )
                    }
                }
                let dx_b = &mut dx_g[n * x_img..(n + 1) * x_img];
                g.merge_phases(&d_phases, dx_b);
            }
            if let Some(dw) = dw.as_mut().filter(|_| gather) {
                g.split_phases(&x[b * x_img..(b + 1) * x_img], &mut phases);
                g.gather_taps(&phases, &mut cols);
                let depth = w_len / g.c_out;
                let cols_t = View {
                    ptr: cols.as_ptr(),
                    rs: 1,
                    cs: n_ext as isize,
                };
                // SAFETY: `dw` (prepared) is [c_out, depth], `dv_view` [c_out, n_ext] and
                // `cols` [depth, n_ext] (read transposed), all row-major.
                unsafe {
                    product(
                        [g.c_out, depth, n_ext],
                        dw.as_mut_ptr(),
                        [depth as isize, 1],
                        true,
                        dv_view,
                        cols_t,
                        inner,
                    )
                }
            } else if let Some(dw) = dw.as_mut() {
                g.split_phases(&x[b * x_img..(b + 1) * x_img], &mut phases);
                for &(i, j) in &taps {
                    let p_t = View {
                        ptr: phases[g.tap_offset(i, j)..].as_ptr(),
                        rs: 1,
                        cs: (hq * wq) as isize,
                    };
                    let t = i * g.kernel[1] + j;
                    let row = (taps.len() * g.c_in) as isize;
                    // SAFETY: `dw`'s tap view is [c_out, c_in] with strides (kh·kw·c_in, 1)
                    // from the tap's first element; `p_t` reads the forward's tap elements
                    // transposed.
                    unsafe {
                        product(
                            [g.c_out, g.c_in, n_ext],
                            dw[t * g.c_in..].as_mut_ptr(),
                            [row, 1],
                            true,
                            dv_view,
                            p_t,
                            inner,
                        )
                    }
                }
            }
        }
        [dw, db]
    };
    // SAFETY: `merge_phases` writes each image's whole input gradient.
    unsafe { backward_groups(groups, want.dx, x_img, run_group) }
}

/// `acc[k] += a · x[k]`.
fn axpy<T: Real>(acc: &mut [T], a: T, x: &[T]) {
    for (y, &v) in acc.iter_mut().zip(x) {
        *y += a * v;
    }
}

/// `Σ a[k]·b[k]`.
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut s = T::default();
    for (&u, &v) in a.iter().zip(b) {
        s += u * v;
    }
    s
}

/// [`forward`] for a depthwise convolution: per channel, one scaled shifted row per tap.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: prepared ([`prepared_index`]), the epilogue's as in
///   [`forward`]
/// - output: `[batch, c_out, h_out, w_out]`
fn depthwise_forward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    epi: &Epilogue<T>,
) -> Vec<T> {
    let [h_out, w_out] = g.size_out();
    let [hq, wq] = g.phase_size();
    let (n_ext, taps) = (g.n_ext(), g.kernel[0] * g.kernel[1]);
    let (x_img, out_img) = (
        g.c_in * g.size_in[0] * g.size_in[1],
        g.c_out * h_out * w_out,
    );
    let (groups, _) = plan(g.batch);
    let run_group = |range: core::ops::Range<usize>, out_g: &mut [MaybeUninit<T>]| {
        let mut phases = vec![T::default(); g.phase_image_len()];
        let mut ext = vec![T::default(); n_ext];
        for (b, out_b) in range.zip(out_g.chunks_mut(out_img.max(1))) {
            g.split_phases(&x[b * x_img..(b + 1) * x_img], &mut phases);
            for c in 0..g.c_in {
                ext.fill(T::default());
                for i in 0..g.kernel[0] {
                    for j in 0..g.kernel[1] {
                        let at = g.tap_offset(i, j) + c * hq * wq;
                        axpy(
                            &mut ext,
                            weight[c * taps + i * g.kernel[1] + j],
                            &phases[at..at + n_ext],
                        );
                    }
                }
                epi.write_channel(g, out_b, &ext, c, b);
            }
        }
    };
    // SAFETY: each image's channels are all written by `write_channel`.
    unsafe { forward_groups(groups, out_img, run_group) }
}

/// [`backward`] for a depthwise convolution: per channel, one scaled shifted row per tap.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: prepared ([`prepared_index`]), `up.dy`:
///   `[batch, c_out, h_out, w_out]`
/// - output: `dx` like `x`, the prepared weight's gradient like `weight`, the bias's `[c_out]`
fn depthwise_backward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    up: Upstream<T>,
    want: Want,
) -> Grads<T> {
    let [x_len, w_len, _] = g.lens();
    let [hq, wq] = g.phase_size();
    let (n_ext, taps) = (g.n_ext(), g.kernel[0] * g.kernel[1]);
    let x_img = x_len / g.batch.max(1);
    let (groups, _) = plan(g.batch);
    let run_group = |range: core::ops::Range<usize>, mut dx_g: Option<&mut [MaybeUninit<T>]>| {
        let mut phases = vec![T::default(); g.phase_image_len()];
        let mut d_phases = vec![T::default(); if want.dx { g.phase_image_len() } else { 0 }];
        let mut dw = want.d_prepared.then(|| vec![T::default(); w_len]);
        let mut db = want.db.then(|| vec![T::default(); g.c_out]);
        let mut dv_ext = vec![T::default(); g.c_out * n_ext];
        for (n, b) in range.enumerate() {
            up.extend_into(g, b, &mut dv_ext, db.as_deref_mut());
            if want.d_prepared {
                g.split_phases(&x[b * x_img..(b + 1) * x_img], &mut phases);
            }
            d_phases.fill(T::default());
            for c in 0..g.c_in {
                let dv_c = &dv_ext[c * n_ext..(c + 1) * n_ext];
                for i in 0..g.kernel[0] {
                    for j in 0..g.kernel[1] {
                        let at = g.tap_offset(i, j) + c * hq * wq;
                        let k = c * taps + i * g.kernel[1] + j;
                        if want.dx {
                            axpy(&mut d_phases[at..at + n_ext], weight[k], dv_c);
                        }
                        if let Some(dw) = dw.as_mut() {
                            dw[k] += dot(dv_c, &phases[at..at + n_ext]);
                        }
                    }
                }
            }
            if let Some(dx_g) = dx_g.as_deref_mut() {
                let dx_b = &mut dx_g[n * x_img..(n + 1) * x_img];
                g.merge_phases(&d_phases, dx_b);
            }
        }
        [dw, db]
    };
    // SAFETY: `merge_phases` writes each image's whole input gradient.
    unsafe { backward_groups(groups, want.dx, x_img, run_group) }
}

/// The groups' parts summed in group order (none when no group has one).
fn sum_parts<T: Real>(parts: Vec<Vec<T>>) -> Option<Vec<T>> {
    let mut parts = parts.into_iter();
    let mut sum = parts.next()?;
    for part in parts {
        for (s, v) in sum.iter_mut().zip(part) {
            *s += v;
        }
    }
    Some(sum)
}

/// The gradient before the fused pass's activation, whole: `dy ⊙ a'(y)` from the output
/// `y = a(v)` (where it is needed as a tensor: the residual's gradient).
///
/// # Shapes
/// - `y`, `dy`: the same length (the convolution's output)
/// - output: like `dy`
pub fn through_activation<T: Real>(activation: Activation, y: &[T], dy: &[T]) -> Vec<T> {
    assert_eq!(y.len(), dy.len());
    const CHUNK: usize = 1 << 14;
    y.par_iter()
        .with_min_len(CHUNK)
        .zip(dy)
        .map(|(&y, &d)| activation.gradient(y, d))
        .collect()
}
