//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016): each 2×2 output tile is
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` from its 4×4 input patch `d`, so the sum over input channels
//! becomes 16 matrix products of depth `c_in` per tile instead of 9 per output pixel: 2.25× fewer
//! multiplications, for two passes over the input and the output (the transforms). That pays
//! where channels are many and planes large: VGG-16 from conv2_2 on ([`super::Algorithm`] says
//! where it runs; issue 11).
//!
//! Layout, per group of images and chunk of whole tile rows (a tile = image, tile row, column):
//! `V[ξ, c_in, tile]` (input transform), `U[ξ, c_out, c_in]` (weight transform, once per call),
//! `M[ξ] = U[ξ] · V[ξ]` (16 products), then the output transform writes each tile's 2×2 pixels
//! through the [`Epilogue`]. The input gradient of a 3×3 stride-1 convolution is again one
//! ([`input_gradient`]): the output gradient convolved with the kernel rotated by 180° and its
//! channels swapped, padded `2 − p` on each side.
//!
//! Rounding differs from direct summation by a few ulps times the transforms' small constants
//! (entries 0, ±½, ±1). Tested in `tests/conv.rs` against the shifted products (output and every
//! gradient, f64, each activation) and, at a size where it is chosen, against burn's convolution.

use core::mem::MaybeUninit;

use super::{ConvGeometry, Epilogue, Real, View, forward_groups, plan, product};

/// Whether Winograd's algorithm can run this convolution: dense 3×3, stride 1, padding at most 2
/// on each side (the input gradient's padding is `2 − p`). Whether it is faster is
/// [`super::Algorithm::choose`]'s question.
pub(super) fn fits(g: &ConvGeometry) -> bool {
    !g.depthwise
        && g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.padding.iter().all(|&(b, e)| b <= 2 && e <= 2)
}

/// `G g Gᵀ` for one 3×3 kernel `g` (`at(i, j)`), 16 values row-major.
fn kernel_transform<T: Real>(at: impl Fn(usize, usize) -> T) -> [T; 16] {
    let half = T::HALF;
    // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]], applied to the rows, then the columns.
    let rows = |c: usize| -> [T; 4] {
        let (a, b, d) = (at(0, c), at(1, c), at(2, c));
        [a, half * (a + b + d), half * (a - b + d), d]
    };
    let cols = [rows(0), rows(1), rows(2)];
    let mut u = [T::default(); 16];
    for r in 0..4 {
        let (a, b, d) = (cols[0][r], cols[1][r], cols[2][r]);
        u[r * 4..r * 4 + 4].copy_from_slice(&[a, half * (a + b + d), half * (a - b + d), d]);
    }
    u
}

/// The transformed weight `U[ξ, o, i] = (G W[o, i] Gᵀ)[ξ]`, from `at(o, i, row, col)`.
///
/// # Shapes
/// - output: `[16, c_out, c_in]`
fn weight_transform<T: Real>(
    c_out: usize,
    c_in: usize,
    at: impl Fn(usize, usize, usize, usize) -> T,
) -> Vec<T> {
    let mut u = vec![T::default(); 16 * c_out * c_in];
    for o in 0..c_out {
        for i in 0..c_in {
            let t = kernel_transform(|r, c| at(o, i, r, c));
            for (xi, &v) in t.iter().enumerate() {
                u[(xi * c_out + o) * c_in + i] = v;
            }
        }
    }
    u
}

/// [`super::forward`] for a convolution that [`fits`], on the prepared weight
/// (`[c_out, 3, 3, c_in]`).
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `weight`: prepared, the epilogue's as in [`super::forward`]
/// - output: `[batch, c_out, h_out, w_out]`
pub(super) fn forward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    weight: &[T],
    epi: &Epilogue<T>,
) -> Vec<T> {
    let u = weight_transform(g.c_out, g.c_in, |o, i, r, c| {
        weight[(o * 9 + r * 3 + c) * g.c_in + i]
    });
    convolve(g, x, &u, epi)
}

/// The input gradient of a convolution that [`fits`]: `dv` convolved with the
/// prepared weight rotated by 180° and transposed (`W'[i, o, r, c] = W[o, i, 2 − r, 2 − c]`),
/// padded `2 − p` on each side.
///
/// # Shapes
/// - `weight`: prepared (`[c_out, 3, 3, c_in]`), `dv`: `[batch, c_out, h_out, w_out]`
/// - output: `[batch, c_in, h, w]`
pub(super) fn input_gradient<T: Real>(g: &ConvGeometry, weight: &[T], dv: &[T]) -> Vec<T> {
    let u = weight_transform(g.c_in, g.c_out, |i, o, r, c| {
        weight[(o * 9 + (2 - r) * 3 + (2 - c)) * g.c_in + i]
    });
    let transposed = ConvGeometry {
        c_in: g.c_out,
        c_out: g.c_in,
        size_in: g.size_out(),
        padding: g.padding.map(|(b, e)| (2 - b, 2 - e)),
        ..*g
    };
    convolve(&transposed, dv, &u, &Epilogue::NONE)
}

/// Scratch for the transforms of one tile row: a zero-padded input row, the even and odd
/// columns of the 4 patch rows, the 4 column sums of the output transform and its 2 output rows.
struct TileRow<T> {
    /// Tiles in the row.
    tiles: usize,
    padded: Vec<T>,
    even: [Vec<T>; 4],
    odd: [Vec<T>; 4],
    cols: [Vec<T>; 4],
    rows: [Vec<T>; 2],
}

impl<T: Real> TileRow<T> {
    fn new(tiles: usize) -> Self {
        let zeros = |n: usize| vec![T::default(); n];
        TileRow {
            tiles,
            padded: zeros(2 * tiles + 2),
            even: [(); 4].map(|_| zeros(tiles + 1)),
            odd: [(); 4].map(|_| zeros(tiles + 1)),
            cols: [(); 4].map(|_| zeros(tiles)),
            rows: [(); 2].map(|_| zeros(2 * tiles)),
        }
    }

    /// `Bᵀ d B` for every tile of tile row `ty` of one input plane (padding `top`, `left`;
    /// zero outside the plane): value `ξ` of tile `k` goes to `v[v_at(ξ) + k]`.
    ///
    /// # Shapes
    /// - `plane`: `[h, w]`; `v`: the chunk's `[16, c_in, chunk]`
    fn input(
        &mut self,
        plane: &[T],
        [h, w]: [usize; 2],
        [top, left]: [usize; 2],
        ty: usize,
        v: &mut [T],
        v_at: impl Fn(usize) -> usize,
    ) {
        let tiles = self.tiles;
        for r in 0..4 {
            // Padded row 2·ty + r is input row 2·ty + r − top (zero outside).
            let iy = (2 * ty + r).checked_sub(top).filter(|&iy| iy < h);
            self.padded.fill(T::default());
            if let Some(iy) = iy {
                self.padded[left..left + w].copy_from_slice(&plane[iy * w..(iy + 1) * w]);
            }
            for (k, pair) in self.padded.chunks_exact(2).enumerate() {
                (self.even[r][k], self.odd[r][k]) = (pair[0], pair[1]);
            }
        }
        // Bᵀ on the patch rows, then on the columns of each tile.
        for half in [&mut self.even, &mut self.odd] {
            let [r0, r1, r2, r3] = half;
            for k in 0..=tiles {
                let (a, b, e, f) = (r0[k], r1[k], r2[k], r3[k]);
                (r0[k], r1[k], r2[k], r3[k]) = (a - e, b + e, e - b, b - f);
            }
        }
        for r in 0..4 {
            let (e, o) = (&self.even[r], &self.odd[r]);
            let row = |s: usize| v_at(r * 4 + s);
            let v0 = &mut v[row(0)..row(0) + tiles];
            for k in 0..tiles {
                v0[k] = e[k] - e[k + 1];
            }
            let v1 = &mut v[row(1)..row(1) + tiles];
            for k in 0..tiles {
                v1[k] = o[k] + e[k + 1];
            }
            let v2 = &mut v[row(2)..row(2) + tiles];
            for k in 0..tiles {
                v2[k] = e[k + 1] - o[k];
            }
            let v3 = &mut v[row(3)..row(3) + tiles];
            for k in 0..tiles {
                v3[k] = o[k] - o[k + 1];
            }
        }
    }

    /// `Aᵀ M A` for every tile of one tile row of one output channel, value `ξ` of tile `k` read
    /// at `m[m_at(ξ) + k]`: the two output rows (`2·tiles` pixels each, the last maybe past
    /// `w_out`).
    ///
    /// # Shapes
    /// - `m`: the chunk's `[16, c_out, chunk]`; output: 2 rows of `[2·tiles]`
    fn output(&mut self, m: &[T], m_at: impl Fn(usize) -> usize) -> &[Vec<T>; 2] {
        let tiles = self.tiles;
        let part = |r: usize, s: usize| &m[m_at(r * 4 + s)..m_at(r * 4 + s) + tiles];
        // Aᵀ on the tile rows (t0 = m0 + m1 + m2, t1 = m1 − m2 − m3 per column s), then on the
        // columns: output rows 2·ty and 2·ty + 1.
        for (y, row) in self.rows.iter_mut().enumerate() {
            for (s, t) in self.cols.iter_mut().enumerate() {
                let (m0, m1, m2, m3) = (part(0, s), part(1, s), part(2, s), part(3, s));
                if y == 0 {
                    for k in 0..tiles {
                        t[k] = m0[k] + m1[k] + m2[k];
                    }
                } else {
                    for k in 0..tiles {
                        t[k] = m1[k] - m2[k] - m3[k];
                    }
                }
            }
            let [t0, t1, t2, t3] = &self.cols;
            for k in 0..tiles {
                row[2 * k] = t0[k] + t1[k] + t2[k];
                row[2 * k + 1] = t1[k] - t2[k] - t3[k];
            }
        }
        &self.rows
    }
}

/// The convolution of `x` with the transformed weight `u`, in groups of images and chunks of
/// whole tile rows, through the epilogue. Both transforms run a tile row at a time on
/// even/odd-split rows, so that every step is a unit-stride pass the compiler vectorizes.
///
/// # Shapes
/// - `x`: `[batch, c_in, h, w]`, `u`: `[16, c_out, c_in]`
/// - output: `[batch, c_out, h_out, w_out]`
fn convolve<T: Real>(g: &ConvGeometry, x: &[T], u: &[T], epi: &Epilogue<T>) -> Vec<T> {
    let [h, w] = g.size_in;
    let [h_out, w_out] = g.size_out();
    let (tiles_h, tiles_w) = (h_out.div_ceil(2), w_out.div_ceil(2));
    let (top, left) = (g.padding[0].0, g.padding[1].0);
    let (x_img, out_img) = (g.c_in * h * w, g.c_out * h_out * w_out);
    // Tile rows per chunk: the chunk's V and M (16·(c_in + c_out) values per tile) about 8 MiB.
    let rows_per_chunk = ((2 << 20) / (16 * (g.c_in + g.c_out) * tiles_w)).max(1);
    let chunk = rows_per_chunk * tiles_w;
    let (groups, inner) = plan(g.batch);
    let run_group = |range: core::ops::Range<usize>, out_g: &mut [MaybeUninit<T>]| {
        let tile_rows = range.len() * tiles_h;
        let mut v = vec![T::default(); 16 * g.c_in * chunk];
        let mut m = vec![T::default(); 16 * g.c_out * chunk];
        let mut tile_row = TileRow::new(tiles_w);
        for row0 in (0..tile_rows).step_by(rows_per_chunk) {
            let n_rows = rows_per_chunk.min(tile_rows - row0);
            let n = n_rows * tiles_w;
            for c in 0..g.c_in {
                for q in 0..n_rows {
                    let (n_img, ty) = ((row0 + q) / tiles_h, (row0 + q) % tiles_h);
                    let plane = &x[(range.start + n_img) * x_img + c * h * w..][..h * w];
                    let at = q * tiles_w;
                    let v_at = |xi: usize| (xi * g.c_in + c) * chunk + at;
                    tile_row.input(plane, [h, w], [top, left], ty, &mut v, v_at);
                }
            }
            for xi in 0..16 {
                let lhs = View {
                    ptr: u[xi * g.c_out * g.c_in..].as_ptr(),
                    rs: g.c_in as isize,
                    cs: 1,
                };
                let rhs = View {
                    ptr: v[xi * g.c_in * chunk..].as_ptr(),
                    rs: chunk as isize,
                    cs: 1,
                };
                // SAFETY: `m[ξ]` is [c_out, chunk] (n columns used), `u[ξ]` [c_out, c_in] and
                // `v[ξ]` [c_in, chunk], all row-major inside their buffers.
                unsafe {
                    product(
                        [g.c_out, n, g.c_in],
                        m[xi * g.c_out * chunk..].as_mut_ptr(),
                        [chunk as isize, 1],
                        false,
                        lhs,
                        rhs,
                        inner,
                    )
                }
            }
            for o in 0..g.c_out {
                for q in 0..n_rows {
                    let (n_img, ty) = ((row0 + q) / tiles_h, (row0 + q) % tiles_h);
                    let at = q * tiles_w;
                    let rows = tile_row.output(&m, |xi| (xi * g.c_out + o) * chunk + at);
                    let b = range.start + n_img;
                    let out_b = &mut out_g[n_img * out_img..(n_img + 1) * out_img];
                    for (dy, row) in rows.iter().enumerate() {
                        let py = 2 * ty + dy;
                        if py < h_out {
                            let at = (o * h_out + py) * w_out;
                            let out = &mut out_b[at..at + w_out];
                            epi.write_row(out, &row[..w_out], o, b * out_img + at);
                        }
                    }
                }
            }
        }
    };
    // SAFETY: the tile rows cover every output row of every image of the group (the last one cut
    // at h_out), and each row is written whole (cut at w_out) once.
    unsafe { forward_groups(groups, out_img, run_group) }
}
