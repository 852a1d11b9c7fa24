//! Identity grids and the one bilinear sampling call site.

use burn::tensor::ops::{GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::error::{Dim, Result, check_shape};

/// `linspace(-1, 1, n)` in f64, as `np.linspace` (a single point sits at −1).
pub fn linspace(n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![-1.0],
        _ => (0..n)
            .map(|i| -1.0 + 2.0 * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

/// The pixel centres of an `h × w` image as a point set, in row-major order
/// (point `i = y·w + x`), i.e. the flattened identity sampling grid.
///
/// # Shapes
/// - output: `[1, 2, h·w]`
pub fn identity_points(size: [usize; 2], device: &Device, dtype: DType) -> Tensor<3> {
    let [h, w] = size;
    let (xs, ys) = (linspace(w), linspace(h));
    let mut values = Vec::with_capacity(2 * h * w);
    values.extend(ys.iter().flat_map(|_| xs.iter().copied()));
    values.extend(ys.iter().flat_map(|&y| std::iter::repeat_n(y, w)));
    Tensor::from_data(TensorData::new(values, [1, 2, h * w]), (device, dtype))
}

/// The identity sampling grid.
///
/// # Shapes
/// - output: `[batch, h, w, 2]`
pub fn identity_grid(batch: usize, size: [usize; 2], device: &Device, dtype: DType) -> Tensor<4> {
    let [h, w] = size;
    identity_points(size, device, dtype)
        .swap_dims(1, 2)
        .reshape([1, h, w, 2])
        .repeat_dim(0, batch)
}

/// Lays a point set produced from [`identity_points`] out as a sampling grid.
///
/// # Shapes
/// - `points`: `[batch, 2, h·w]`
/// - output: `[batch, h, w, 2]`
pub fn points_to_grid(points: Tensor<3>, size: [usize; 2]) -> Result<Tensor<4>> {
    let [batch, _, _] = points.dims();
    check_shape(
        "points_to_grid",
        "points",
        &points.dims(),
        &[
            Dim::Any("batch"),
            Dim::Is(2),
            Dim::Same("h·w", size[0] * size[1]),
        ],
    )?;
    Ok(points.swap_dims(1, 2).reshape([batch, size[0], size[1], 2]))
}

/// Flattens a sampling grid into a point set (the inverse of [`points_to_grid`]).
///
/// # Shapes
/// - `grid`: `[batch, h, w, 2]`
/// - output: `[batch, 2, h·w]`
pub fn grid_to_points(grid: Tensor<4>) -> Tensor<3> {
    let [batch, h, w, _] = grid.dims();
    grid.reshape([batch, h * w, 2]).swap_dims(1, 2)
}

/// Bilinear sampling of `image` at `grid`: `out[b, :, i, j] = image[b, :, grid[b, i, j]]`, zero
/// outside `[-1, 1]`, `align_corners = true`.
///
/// This is the crate's only call of burn's `grid_sample_2d`; every option is set explicitly
/// because burn's defaults (`align_corners = false`) differ from the reference.
/// Differentiable with respect to both `image` and `grid`.
///
/// The grid is handed over as a contiguous tensor: burn-cubecl 0.22.1's bilinear kernel (CUDA
/// and wgpu, outside autodiff, so every GPU evaluation) reads a point's `y` as the element after
/// its `x` whatever the grid's strides, and the grids of [`points_to_grid`] are strided views
/// (`swap_dims` then `reshape`): sampled as they are, a GPU warps with the wrong coordinates.
/// The copy is made on every backend (same values and gradients; it is one `[batch, h, w, 2]`
/// copy). Minimal reproduction and its effect: `docs/burn-grid-sample-strides.md`.
///
/// # Shapes
/// - `image`: `[batch, channels, h_in, w_in]`
/// - `grid`: `[batch, h_out, w_out, 2]`
/// - output: `[batch, channels, h_out, w_out]`
pub fn sample(image: Tensor<4>, grid: Tensor<4>) -> Result<Tensor<4>> {
    let [batch, _, _, _] = image.dims();
    check_shape(
        "sample",
        "grid",
        &grid.dims(),
        &[
            Dim::Same("batch", batch),
            Dim::Any("h_out"),
            Dim::Any("w_out"),
            Dim::Is(2),
        ],
    )?;
    let options = GridSampleOptions::new(InterpolateMode::Bilinear)
        .with_padding_mode(GridSamplePaddingMode::Zeros)
        .with_align_corners(true);
    Ok(image.grid_sample_2d(contiguous(grid), options))
}

/// The same tensor laid out contiguously: a flat (1-D) reshape of a strided view cannot be a
/// view, so every backend copies it in row-major order, and the reshape back is a view of that.
///
/// # Shapes
/// - `t`: any `[d0, d1, d2, d3]`
/// - output: the same
fn contiguous(t: Tensor<4>) -> Tensor<4> {
    let dims = t.dims();
    t.reshape([dims.iter().product::<usize>()]).reshape(dims)
}
