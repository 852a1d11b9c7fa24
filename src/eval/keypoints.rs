//! Keypoint benchmarks in memory, and PCK of a model on them.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;

use super::pck::{Prediction, bounding_box_size, mean_over_pairs, pck, transfer};
use crate::backbone::Normalization;
use crate::data::embedded::{EmbeddedDataset, Split, keypoint_pairs};
use crate::data::image::{RgbImage, load_rgb};
use crate::data::pf::{KeypointPair, willow_pairs_from_mat};
use crate::error::Result;
use crate::geometry::{Theta, Tps};
use crate::model::{TransformKind, TwoStage};

/// Pairs with keypoints and their decoded images.
#[derive(Clone, Debug)]
pub struct KeypointSet {
    /// Decoded images by relative path.
    pub images: HashMap<PathBuf, RgbImage>,
    /// The pairs.
    pub pairs: Vec<KeypointPair>,
}

impl KeypointSet {
    /// A split of the embedded dataset.
    pub fn embedded(dataset: &EmbeddedDataset, split: Split) -> Self {
        let pairs = keypoint_pairs(dataset, split);
        let images = dataset
            .instances
            .iter()
            .map(|i| (crate::data::embedded::image_path(i), i.image.clone()))
            .collect();
        Self { images, pairs }
    }

    /// PF-WILLOW's 900 pairs from `root` (images decoded once).
    pub fn pf_willow(root: &Path) -> Result<Self> {
        Self::load(root, willow_pairs_from_mat(root)?)
    }

    /// Pairs whose images live under `root` (decoded once); a missing image is an error naming it.
    pub fn load(root: &Path, pairs: Vec<KeypointPair>) -> Result<Self> {
        let mut images = HashMap::new();
        for p in &pairs {
            for path in [&p.source, &p.target] {
                if !images.contains_key(path) {
                    images.insert(path.clone(), load_rgb(&root.join(path))?);
                }
            }
        }
        Ok(Self { images, pairs })
    }

    /// The first `n` pairs (all for 0), spread evenly over the set.
    pub fn subset(&self, n: usize) -> Self {
        if n == 0 || n >= self.pairs.len() {
            return self.clone();
        }
        let step = self.pairs.len() as f64 / n as f64;
        let pairs = (0..n)
            .map(|i| self.pairs[(i as f64 * step) as usize].clone())
            .collect();
        Self {
            images: self.images.clone(),
            pairs,
        }
    }

    fn size(&self, path: &Path) -> (usize, usize) {
        let i = &self.images[path];
        (i.height, i.width)
    }
}

/// How PCK's reference length is chosen; named after PF-PASCAL's two protocols (`"pf"`,
/// `"scnet"`) on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Procedure {
    /// Larger side of the source keypoints' bounding box (PF-WILLOW; PF-PASCAL 'pf').
    #[serde(rename = "pf")]
    BoundingBox,
    /// Keypoints rescaled to a 224×224 frame of their own image, `L = 224` (PF-PASCAL 'scnet',
    /// the camera-ready protocol).
    #[serde(rename = "scnet")]
    ImageSize224,
}

/// PCK of one pair under a prediction kind and under the identity (`None`: no keypoints).
#[derive(Clone, Debug, PartialEq)]
pub struct PairScore {
    /// The pair's class.
    pub class: String,
    /// The model's PCK.
    pub model: Option<f64>,
    /// The identity transform's PCK.
    pub identity: Option<f64>,
}

/// Result of an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct PckResult {
    /// Mean over pairs of the model's PCK.
    pub model: f64,
    /// Mean over pairs of the identity transform's PCK.
    pub identity: f64,
    /// Pairs scored.
    pub pairs: usize,
}

/// PCK@α of `model` (an inference copy) on `set`, in batches of `batch` (bounding-box
/// procedure); gives way between batches when `stop()` says so (`None`): a training run's final
/// test evaluation yields to SIGTERM.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_unless(
    model: &TwoStage,
    set: &KeypointSet,
    scored: TransformKind,
    norm: Normalization,
    alpha: f64,
    tps: &Tps,
    batch: usize,
    affine_passes: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Option<PckResult>> {
    let Some(mut per_kind) = evaluate_pairs(
        model,
        set,
        &[scored],
        norm,
        alpha,
        tps,
        batch,
        affine_passes,
        Procedure::BoundingBox,
        &mut |_| {
            if stop() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?
    else {
        return Ok(None);
    };
    let per_pair = per_kind.remove(0);
    Ok(Some(PckResult {
        model: mean_over_pairs(per_pair.iter().map(|p| p.model)).unwrap_or(0.0),
        identity: mean_over_pairs(per_pair.iter().map(|p| p.identity)).unwrap_or(0.0),
        pairs: set.pairs.len(),
    }))
}

/// Rows of a tensor on the host.
///
/// # Shapes
/// - `t`: `[batch, n]`
/// - output: `batch` rows of `n` values
fn rows(t: Tensor<2>) -> Vec<Vec<f64>> {
    let [b, n] = t.dims();
    let v = crate::device::read_f64(t);
    (0..b).map(|i| v[i * n..(i + 1) * n].to_vec()).collect()
}

/// The predictions of each of `kinds` for a batch, per kind then per pair. One two-stage
/// forward serves both `Affine` and `AffineTps` (its θ_aff is the affine stage's, after
/// `affine_passes` passes: [`TwoStage::forward_refined`]); the TPS head alone needs a pass of its
/// own.
///
/// # Shapes
/// - `source`, `target`: `[batch, 3, S, S]`
fn predict(
    model: &TwoStage,
    kinds: &[TransformKind],
    source: Tensor<4>,
    target: Tensor<4>,
    affine_passes: usize,
) -> Result<Vec<Vec<Prediction>>> {
    let (mut aff, mut aff_tps, mut tps) = (None, None, None);
    if kinds.contains(&TransformKind::AffineTps) || affine_passes > 1 {
        let out = model.forward_refined(source.clone(), target.clone(), affine_passes)?;
        let a = rows(out.theta_aff.into_tensor());
        let q = rows(out.theta_tps.into_tensor());
        aff_tps = Some(
            a.iter()
                .cloned()
                .zip(q)
                .map(|(a, q)| Prediction::AffineTps(a, q))
                .collect(),
        );
        aff = Some(a.into_iter().map(Prediction::Affine).collect());
    } else if kinds.contains(&TransformKind::Affine) {
        let theta = model.forward_affine(source.clone(), target.clone())?.theta;
        aff = Some(
            rows(theta.into_tensor())
                .into_iter()
                .map(Prediction::Affine)
                .collect(),
        );
    }
    if kinds.contains(&TransformKind::Tps) {
        let theta = model.forward_tps(source, target)?.theta;
        tps = Some(
            rows(theta.into_tensor())
                .into_iter()
                .map(Prediction::Tps)
                .collect(),
        );
    }
    Ok(kinds
        .iter()
        .map(|k| {
            match k {
                TransformKind::Affine => aff.clone(),
                TransformKind::Tps => tps.clone(),
                TransformKind::AffineTps => aff_tps.clone(),
            }
            .expect("every requested kind was predicted")
        })
        .collect())
}

/// Per-pair PCK (and the identity's) of each of `kinds` of `model` on `set`, one list per kind,
/// the affine head run `affine_passes` times ([`TwoStage::forward_refined`]; 1 = the paper);
/// `progress` is called after each batch with the number of pairs done, and stops the evaluation
/// (`None`) when it breaks.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_pairs(
    model: &TwoStage,
    set: &KeypointSet,
    kinds: &[TransformKind],
    norm: Normalization,
    alpha: f64,
    tps: &Tps,
    batch: usize,
    affine_passes: usize,
    procedure: Procedure,
    progress: &mut dyn FnMut(usize) -> ControlFlow<()>,
) -> Result<Option<Vec<Vec<PairScore>>>> {
    let device = model.device();
    let size = model.image_size;
    let input = |path: &Path| set.images[path].network_input(size, norm, &device);
    let mut out: Vec<Vec<PairScore>> = vec![Vec::new(); kinds.len()];
    let mut done = 0;
    for chunk in set.pairs.chunks(batch.max(1)) {
        let source = Tensor::cat(chunk.iter().map(|p| input(&p.source)).collect(), 0);
        let target = Tensor::cat(chunk.iter().map(|p| input(&p.target)).collect(), 0);
        for (scores, predictions) in
            out.iter_mut()
                .zip(predict(model, kinds, source, target, affine_passes)?)
        {
            for (p, pred) in chunk.iter().zip(&predictions) {
                let (ss, ts) = (set.size(&p.source), set.size(&p.target));
                scores.push(pair_pck(pred, p, ss, ts, procedure, alpha, tps)?);
            }
        }
        done += chunk.len();
        if progress(done).is_break() {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// PCK of one pair for a prediction and for the identity, under a procedure: keypoints in the
/// images' pixels (`BoundingBox`) or rescaled to a 224×224 frame of their own image
/// (`ImageSize224`, `L = 224`). Sizes are `(h, w)`.
pub fn pair_pck(
    prediction: &Prediction,
    pair: &KeypointPair,
    source_size: (usize, usize),
    target_size: (usize, usize),
    procedure: Procedure,
    alpha: f64,
    tps: &Tps,
) -> Result<PairScore> {
    let frame = |pts: &[(f64, f64)], (h, w): (usize, usize)| -> Vec<(f64, f64)> {
        match procedure {
            Procedure::BoundingBox => pts.to_vec(),
            Procedure::ImageSize224 => pts
                .iter()
                .map(|&(x, y)| (x * 224.0 / w as f64, y * 224.0 / h as f64))
                .collect(),
        }
    };
    let (src, tgt) = (
        frame(&pair.source_points, source_size),
        frame(&pair.target_points, target_size),
    );
    let (ss, ts, reference) = match procedure {
        Procedure::BoundingBox => (source_size, target_size, bounding_box_size(&src)),
        Procedure::ImageSize224 => ((224, 224), (224, 224), 224.0),
    };
    let moved = transfer(prediction, &tgt, ts, ss, tps)?;
    let still = transfer(&Prediction::Identity, &tgt, ts, ss, tps)?;
    Ok(PairScore {
        class: pair.class.clone(),
        model: pck(&moved, &src, alpha, reference),
        identity: pck(&still, &src, alpha, reference),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scnet_and_pf_procedures_on_a_hand_built_pair() {
        // Source 100×200 (h×w), target 200×400: the identity maps target (x, y) to about (x/2, y/2).
        let pair = KeypointPair {
            source: "s".into(),
            target: "t".into(),
            class: "c".into(),
            source_points: vec![(50.0, 50.0), (150.0, 60.0), (100.0, 90.0)],
            target_points: vec![(100.0, 100.0), (300.0, 120.0), (260.0, 180.0)],
        };
        let tps = Tps::new(0.0).unwrap();
        let id = Prediction::Identity;
        // 'pf': L = max side of the source keypoint box = 100; α·L = 10 px. Transferred points are
        // ≈ (50.25, 50.25), (150.2, 60.2), (130.2, 90.2): two within 10 px, the third 30 px off.
        let score = pair_pck(
            &id,
            &pair,
            (100, 200),
            (200, 400),
            Procedure::BoundingBox,
            0.1,
            &tps,
        )
        .unwrap();
        assert_eq!(score.model, Some(2.0 / 3.0));
        assert_eq!(score.identity, score.model);
        // 'scnet': 224 frame, L = 224, α·L = 22.4 in that frame; the third point's error is
        // 30·224/200 = 33.6 > 22.4, so still 2/3; with α = 0.2 (44.8) all three pass.
        let m = pair_pck(
            &id,
            &pair,
            (100, 200),
            (200, 400),
            Procedure::ImageSize224,
            0.1,
            &tps,
        )
        .unwrap()
        .model;
        assert_eq!(m, Some(2.0 / 3.0));
        let m = pair_pck(
            &id,
            &pair,
            (100, 200),
            (200, 400),
            Procedure::ImageSize224,
            0.2,
            &tps,
        )
        .unwrap()
        .model;
        assert_eq!(m, Some(1.0));
    }
}
