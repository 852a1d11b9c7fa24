//! Synthetic training pairs for strong supervision (CNNGeometric): a random θ warps an image.
//!
//! Each image is resized to 480×640, normalized, mirror-padded by half its size on every side
//! (the padded image spans `[-2, 2]` in the original's normalized coordinates), and sampled on the
//! central 9/16 crop: `source(p) = padded(0.28125·p)`, `target(p) = padded(0.28125·T_θ(p))`, so
//! `target(p) = source(T_θ(p))` in crop coordinates, with mirrored content where `T_θ(p)` leaves
//! the crop. θ is a pure function of `(seed, epoch, index)`.
//!
//! ## Reference
//! weakalign: `data/synth_dataset.py` (random_sample=True), `geotnf/transformation.py`
//! `SynthPairTnf` (weakalign-reference §7.1).

use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;

use super::ground_truth::SampleTruth;
use super::rng::{Stream, sample_rng};
use crate::error::Result;
use crate::geometry::theta::{AFFINE_IDENTITY, TPS_IDENTITY};
use crate::geometry::{
    AffineTheta, GridFactors, SYNTH_CROP_FACTOR, SYNTH_PADDING_FACTOR, Theta, Tps, TpsTheta,
    identity_grid, sample, sampling_grid,
};

/// Which transform the synthetic pairs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthModel {
    /// Random affine θ (6 parameters).
    Affine,
    /// Random TPS θ (18 parameters).
    Tps,
}

/// Parameters of the random θ distributions (reference defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SynthConfig {
    /// Rotation range: α ∈ ±π·`random_alpha` (reference 1/6 → ±30°).
    pub random_alpha: f64,
    /// Scale-factor range: each of the 4 linear entries is scaled by `1 ± random_s`.
    pub random_s: f64,
    /// Translation range: `t ∈ ±random_t`.
    pub random_t: f64,
    /// TPS control-point jitter: each coordinate `± tps_range`.
    pub tps_range: f64,
    /// Network input side of the generated pairs.
    pub output_size: usize,
    /// Size every image is resized to before padding, `(h, w)` (reference 480×640).
    pub resize: (usize, usize),
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            random_alpha: 1.0 / 6.0,
            random_s: 0.5,
            random_t: 0.5,
            tps_range: 0.4,
            output_size: 240,
            resize: (480, 640),
        }
    }
}

/// A random affine θ: `α = (U−½)·2π·random_alpha`; `a11 = (1+(U0−½)·2s)·cos α`,
/// `a12 = (1+(U1−½)·2s)·(−sin α)`, `a21 = (1+(U3−½)·2s)·sin α`, `a22 = (1+(U4−½)·2s)·cos α`,
/// `tx = (U2−½)·2t`, `ty = (U5−½)·2t`.
pub fn random_affine(rng: &mut impl Rng, config: &SynthConfig) -> [f64; 6] {
    let alpha = (rng.random::<f64>() - 0.5) * 2.0 * std::f64::consts::PI * config.random_alpha;
    let u: [f64; 6] = rng.random();
    let scale = |v: f64| 1.0 + (v - 0.5) * 2.0 * config.random_s;
    let shift = |v: f64| (v - 0.5) * 2.0 * config.random_t;
    [
        scale(u[0]) * alpha.cos(),
        scale(u[1]) * -alpha.sin(),
        shift(u[2]),
        scale(u[3]) * alpha.sin(),
        scale(u[4]) * alpha.cos(),
        shift(u[5]),
    ]
}

/// A random TPS θ: the identity control points plus `U(−tps_range, tps_range)` per coordinate.
pub fn random_tps(rng: &mut impl Rng, config: &SynthConfig) -> [f64; 18] {
    let mut theta = TPS_IDENTITY;
    for v in &mut theta {
        *v += (rng.random::<f64>() - 0.5) * 2.0 * config.tps_range;
    }
    theta
}

/// The θ of sample `index` in `epoch`: a pure function of its arguments.
pub fn sample_truth(
    model: SynthModel,
    config: &SynthConfig,
    seed: u64,
    epoch: u64,
    index: u64,
) -> SampleTruth {
    let mut rng = sample_rng(seed, Stream::SyntheticTheta, epoch, index);
    match model {
        SynthModel::Affine => SampleTruth::Affine(random_affine(&mut rng, config)),
        SynthModel::Tps => SampleTruth::Tps(random_tps(&mut rng, config)),
    }
}

/// [`sample_truth`]'s parameters, row-major.
pub fn sample_theta(
    model: SynthModel,
    config: &SynthConfig,
    seed: u64,
    epoch: u64,
    index: u64,
) -> Vec<f64> {
    sample_truth(model, config, seed, epoch, index)
        .values()
        .to_vec()
}

/// Identity parameters of a model (for tests and baselines).
pub fn identity_theta(model: SynthModel) -> Vec<f64> {
    match model {
        SynthModel::Affine => AFFINE_IDENTITY.to_vec(),
        SynthModel::Tps => TPS_IDENTITY.to_vec(),
    }
}

/// Index map of numpy's `'symmetric'` padding (edge repeated): `[b a | a b c d | d c]`.
fn symmetric_indices(len: usize, pad: usize) -> Vec<i64> {
    (-(pad as i64)..(len + pad) as i64)
        .map(|i| {
            let n = len as i64;
            let mut i = i;
            // Reflect until inside (pad ≤ len keeps this to one step; loop for safety).
            while i < 0 || i >= n {
                i = if i < 0 { -i - 1 } else { 2 * n - i - 1 };
            }
            i
        })
        .collect()
}

/// Mirror-pads the last two axes by `(pad_h, pad_w)` on each side (numpy `'symmetric'`).
///
/// # Shapes
/// - `images`: `[batch, channels, h, w]`
/// - output: `[batch, channels, h + 2·pad_h, w + 2·pad_w]`
pub fn pad_symmetric(images: Tensor<4>, pad_h: usize, pad_w: usize) -> Tensor<4> {
    let [_, _, h, w] = images.dims();
    let device = images.device();
    let rows = Tensor::<1, Int>::from_data(
        TensorData::new(symmetric_indices(h, pad_h), [h + 2 * pad_h]),
        &device,
    );
    let cols = Tensor::<1, Int>::from_data(
        TensorData::new(symmetric_indices(w, pad_w), [w + 2 * pad_w]),
        &device,
    );
    images.select(2, rows).select(3, cols)
}

/// A synthetic (source, target) pair from normalized, resized images and θ.
///
/// # Shapes
/// - `images`: `[batch, 3, h, w]` (normalized, at `config.resize`)
/// - `theta`: `[batch, 6]` or `[batch, 18]` values for `model`, row-major
/// - output: (`source`, `target`), each `[batch, 3, S, S]` with `S = config.output_size`
pub fn synth_pair(
    images: Tensor<4>,
    model: SynthModel,
    theta: &[f64],
    tps: &Tps,
    config: &SynthConfig,
) -> Result<(Tensor<4>, Tensor<4>)> {
    let [batch, _, h, w] = images.dims();
    let (device, dtype) = (images.device(), images.dtype());
    let padded = pad_symmetric(
        images,
        (h as f64 * SYNTH_PADDING_FACTOR) as usize,
        (w as f64 * SYNTH_PADDING_FACTOR) as usize,
    );
    let s = config.output_size;
    let factor = SYNTH_PADDING_FACTOR * SYNTH_CROP_FACTOR;
    let source_grid = identity_grid(batch, [s, s], &device, dtype).mul_scalar(factor);
    let factors = GridFactors {
        offset: 1.0,
        padding_crop: factor,
    };
    let target_grid = match model {
        SynthModel::Affine => sampling_grid(
            &AffineTheta::from_values(theta, &device, dtype)?,
            [s, s],
            factors,
        )?,
        SynthModel::Tps => {
            let theta = TpsTheta::from_values(theta, &device, dtype)?;
            sampling_grid(&tps.warp(&theta), [s, s], factors)?
        }
    };
    Ok((
        sample(padded.clone(), source_grid)?,
        sample(padded, target_grid)?,
    ))
}

/// Synthetic pairs from a list of images (decoded once) as a [`super::loader::PairSource`]:
/// sample `i` of epoch `e` warps image `i` by `sample_theta(model, config, seed, e, i)`.
pub struct SynthPairs {
    /// Decoded images (shared: both strong stages warp the same ones).
    pub images: std::sync::Arc<Vec<super::image::RgbImage>>,
    /// Transform model.
    pub model: SynthModel,
    /// θ distributions and sizes.
    pub config: SynthConfig,
    /// Spline used for TPS θ (reference: λ = 0).
    pub tps: Tps,
    /// Seed of the θ draws.
    pub seed: u64,
    /// Backbone normalization.
    pub norm: crate::backbone::Normalization,
}

impl super::loader::PairSource for SynthPairs {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn sample(&self, index: usize, epoch: u64) -> Result<super::loader::PairSample> {
        use super::image::{normalize, resize};
        let device = crate::device::inference();
        let (h, w) = self.config.resize;
        let raw = self.images[index].to_tensor(&device, burn::tensor::DType::F32);
        let image = normalize(resize(raw, [h, w]), self.norm);
        let truth = sample_truth(self.model, &self.config, self.seed, epoch, index as u64);
        let (source, target) =
            synth_pair(image, self.model, truth.values(), &self.tps, &self.config)?;
        Ok(super::loader::PairSample {
            source: source.into_data(),
            target: target.into_data(),
            truth: Some(truth),
        })
    }
}

/// The images of a folder (recursively; `.jpg`, `.jpeg`, `.png`), sorted by path.
pub fn image_paths_in(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| crate::Error::io(&d, e))? {
            let path = entry.map_err(|e| crate::Error::io(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| {
                let x = x.to_ascii_lowercase();
                x == "jpg" || x == "jpeg" || x == "png"
            }) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The images of a single-column list (`image` header, paths relative to `root`), as the
/// reference's `pascal-random/{train,test}.csv`.
pub fn image_paths_from_csv(
    csv: &std::path::Path,
    root: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>> {
    let (header, rows) = super::csv::read(csv, true)?;
    super::csv::expect_header(csv, &header, &["image"])?;
    rows.iter()
        .map(|r| Ok(root.join(r.get(csv, 0, "image")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_padding_repeats_the_edge() {
        assert_eq!(symmetric_indices(4, 2), vec![1, 0, 0, 1, 2, 3, 3, 2]);
    }
}
