//! The identity baseline of a keypoint benchmark: PCK@α when every target keypoint stays where
//! it is (rescaled to the source image) — the number every model must beat. Reads only the
//! annotations and image sizes; no model.

use std::path::Path;

use super::Benchmark;
use super::pck::{bounding_box_size, identity_transfer, mean_over_pairs, pck};
use crate::data::embedded::{EmbeddedDataset, Split, keypoint_pairs};
use crate::data::pf::{KeypointPair, willow_pairs_from_mat};
use crate::error::{Error, Result};

/// The identity's PCK on a benchmark.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdentityBaseline {
    /// Mean over pairs of the per-pair PCK.
    pub pck: f64,
    /// Pairs in the benchmark.
    pub pairs: usize,
}

/// `(h, w)` of an image file, read from its header.
fn image_size(path: &Path) -> Result<(usize, usize)> {
    let (w, h) = image::image_dimensions(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((h as usize, w as usize))
}

/// PCK@α of the identity on the embedded test split or on PF-WILLOW (under `willow_root`).
pub fn identity_pck(
    benchmark: Benchmark,
    willow_root: &Path,
    alpha: f64,
) -> Result<IdentityBaseline> {
    type Sizes = Vec<((usize, usize), (usize, usize))>;
    let (pairs, sizes): (Vec<KeypointPair>, Sizes) = match benchmark {
        Benchmark::Embedded => {
            let d = EmbeddedDataset::generate(Default::default());
            let n = d.config.size;
            let pairs = keypoint_pairs(&d, Split::Test);
            let sizes = vec![((n, n), (n, n)); pairs.len()];
            (pairs, sizes)
        }
        Benchmark::PfWillow => {
            let pairs = willow_pairs_from_mat(willow_root)?;
            let sizes = pairs
                .iter()
                .map(|p| {
                    Ok((
                        image_size(&willow_root.join(&p.source))?,
                        image_size(&willow_root.join(&p.target))?,
                    ))
                })
                .collect::<Result<Sizes>>()?;
            (pairs, sizes)
        }
        other => {
            return Err(Error::Argument {
                op: "identity-pck",
                arg: "dataset",
                reason: format!("{}: use embedded or pf-willow", other.name()),
            });
        }
    };
    let per_pair = pairs.iter().zip(&sizes).map(|(p, &(source, target))| {
        let moved = identity_transfer(&p.target_points, target, source);
        pck(
            &moved,
            &p.source_points,
            alpha,
            bounding_box_size(&p.source_points),
        )
    });
    let pck = mean_over_pairs(per_pair).ok_or_else(|| Error::Argument {
        op: "identity-pck",
        arg: "dataset",
        reason: "no pair with keypoints".into(),
    })?;
    Ok(IdentityBaseline {
        pck,
        pairs: pairs.len(),
    })
}
