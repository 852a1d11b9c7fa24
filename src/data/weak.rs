//! Weakly-supervised image pairs: the authors' CSV format, their random crop and flip, and a
//! builder of same-category pair lists from a class-folder tree (e.g. Caltech-101).
//!
//! ## Reference
//! weakalign: `data/weak_dataset.py` `ImagePairDataset`, `training_data/pf-pascal-flip/*.csv`
//! (weakalign-reference §8.5).

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use rand::Rng;
use rand::seq::SliceRandom;

use super::csv::{expect_header, read};
use super::image::{RgbImage, load_rgb};
use super::rng::{Stream, sample_rng};
use crate::backbone::Normalization;
use crate::error::{Error, Result};

/// One row of a weak-pair CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeakPair {
    /// Source image path, relative to the dataset root.
    pub source: PathBuf,
    /// Target image path, relative to the dataset root.
    pub target: PathBuf,
    /// Category (as written in the file).
    pub class: String,
    /// Mirror both images horizontally.
    pub flip: bool,
}

/// The CSV header of weak-pair files.
pub const HEADER: [&str; 4] = ["source_image", "target_image", "class", "flip"];

/// Reads `source_image,target_image,class,flip` rows; errors name the file and line.
pub fn read_pairs(path: &Path) -> Result<Vec<WeakPair>> {
    let (header, rows) = read(path, true)?;
    expect_header(path, &header, &HEADER)?;
    rows.iter()
        .map(|row| {
            let flip: i64 = row.parse(path, 3, "flip")?;
            if flip != 0 && flip != 1 {
                return Err(Error::data(
                    path,
                    Some(row.line),
                    format!("column `flip`: {flip} is not 0 or 1"),
                ));
            }
            Ok(WeakPair {
                source: PathBuf::from(row.get(path, 0, "source_image")?),
                target: PathBuf::from(row.get(path, 1, "target_image")?),
                class: row.get(path, 2, "class")?.to_string(),
                flip: flip == 1,
            })
        })
        .collect()
}

/// Writes pairs in the same format, atomically.
pub fn write_pairs(path: &Path, pairs: &[WeakPair]) -> Result<()> {
    let mut text = HEADER.join(",") + "\n";
    for p in pairs {
        text += &format!(
            "{},{},{},{}\n",
            p.source.display(),
            p.target.display(),
            p.class,
            u8::from(p.flip)
        );
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// The reference's random crop of one image: `top = randint(h/4)`,
/// `bottom = 3h/4 + randint(h/4)` (same for columns): keeps 50–100 % of each side.
pub fn random_crop(image: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let (h, w) = (image.height, image.width);
    let draw = |rng: &mut _, n: usize| {
        if n / 4 == 0 {
            0
        } else {
            Rng::random_range(rng, 0..n / 4)
        }
    };
    let top = draw(rng, h);
    let bottom = (3 * h / 4 + draw(rng, h)).clamp(top + 1, h);
    let left = draw(rng, w);
    let right = (3 * w / 4 + draw(rng, w)).clamp(left + 1, w);
    crop(image, top, bottom, left, right)
}

/// Rows `top..bottom`, columns `left..right`.
pub fn crop(image: &RgbImage, top: usize, bottom: usize, left: usize, right: usize) -> RgbImage {
    let mut pixels = Vec::with_capacity((bottom - top) * (right - left) * 3);
    for y in top..bottom {
        let row = &image.pixels[(y * image.width + left) * 3..(y * image.width + right) * 3];
        pixels.extend_from_slice(row);
    }
    RgbImage {
        height: bottom - top,
        width: right - left,
        pixels,
    }
}

/// Mirrors an image horizontally.
pub fn flip_horizontal(image: &RgbImage) -> RgbImage {
    let mut pixels = Vec::with_capacity(image.pixels.len());
    for y in 0..image.height {
        for x in (0..image.width).rev() {
            let i = (y * image.width + x) * 3;
            pixels.extend_from_slice(&image.pixels[i..i + 3]);
        }
    }
    RgbImage {
        height: image.height,
        width: image.width,
        pixels,
    }
}

/// One training pair as network input: each image cropped independently (if `augment`), both
/// flipped if the row says so, resized and normalized. Randomness is a pure function of
/// `(seed, epoch, index)`.
///
/// # Shapes
/// - output: (`source`, `target`), each `[1, 3, size, size]`
#[allow(clippy::too_many_arguments)]
pub fn load_pair(
    root: &Path,
    pair: &WeakPair,
    augment: bool,
    size: usize,
    norm: Normalization,
    (seed, epoch, index): (u64, u64, u64),
    device: &Device,
) -> Result<(Tensor<4>, Tensor<4>)> {
    let mut rng = sample_rng(seed, Stream::Augment, epoch, index);
    let mut prepare = |path: &Path| -> Result<Tensor<4>> {
        let mut image = load_rgb(&root.join(path))?;
        if augment {
            image = random_crop(&image, &mut rng);
        }
        if pair.flip {
            image = flip_horizontal(&image);
        }
        Ok(image.network_input(size, norm, device))
    };
    Ok((prepare(&pair.source)?, prepare(&pair.target)?))
}

/// Splits and pairs for a class-folder tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairLists {
    /// Training pairs.
    pub train: Vec<WeakPair>,
    /// Validation pairs (images disjoint from training).
    pub validation: Vec<WeakPair>,
}

/// Builds same-category pair lists from `root/<class>/<image>`: each class's images are split
/// (seeded) into training and validation images (`validation_fraction`, at least one each), and
/// `pairs_per_class` ordered pairs of distinct images are drawn per class and split (balanced
/// over classes; fewer where a class has too few images). Classes named in `exclude` are skipped.
pub fn build_pair_lists(
    root: &Path,
    pairs_per_class: usize,
    validation_fraction: f64,
    seed: u64,
    exclude: &[&str],
) -> Result<PairLists> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter(|p| {
            !exclude
                .iter()
                .any(|x| p.file_name().is_some_and(|n| n == *x))
        })
        .collect();
    classes.sort();
    let mut lists = PairLists::default();
    for (ci, class_dir) in classes.iter().enumerate() {
        let class = class_dir.file_name().unwrap().to_string_lossy().to_string();
        let mut images: Vec<PathBuf> = std::fs::read_dir(class_dir)
            .map_err(|e| Error::io(class_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| {
                    let x = x.to_ascii_lowercase();
                    x == "jpg" || x == "jpeg" || x == "png"
                })
            })
            .map(|p| PathBuf::from(&class).join(p.file_name().unwrap()))
            .collect();
        images.sort();
        if images.len() < 4 {
            continue;
        }
        let mut rng = sample_rng(seed, Stream::Split, 0, ci as u64);
        images.shuffle(&mut rng);
        let n_val = ((images.len() as f64 * validation_fraction).round() as usize)
            .clamp(2, images.len() - 2);
        let (val, train) = images.split_at(n_val);
        for (part, out, n) in [
            (train, &mut lists.train, pairs_per_class),
            (
                val,
                &mut lists.validation,
                (pairs_per_class as f64 * validation_fraction).ceil() as usize,
            ),
        ] {
            let max = part.len() * (part.len() - 1);
            let mut seen = std::collections::HashSet::new();
            while seen.len() < n.min(max) {
                let a = rng.random_range(0..part.len());
                let b = rng.random_range(0..part.len());
                if a != b && seen.insert((a, b)) {
                    out.push(WeakPair {
                        source: part[a].clone(),
                        target: part[b].clone(),
                        class: class.clone(),
                        flip: false,
                    });
                }
            }
        }
    }
    Ok(lists)
}

/// Writes `train_pairs.csv` and `val_pairs.csv` into `dir`.
pub fn write_pair_lists(dir: &Path, lists: &PairLists) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_pairs(&dir.join("train_pairs.csv"), &lists.train)?;
    write_pairs(&dir.join("val_pairs.csv"), &lists.validation)?;
    let mut summary = Vec::new();
    writeln!(
        summary,
        "train {} pairs, validation {} pairs",
        lists.train.len(),
        lists.validation.len()
    )
    .ok();
    Ok(())
}

/// Weak pairs read from disk as a [`super::loader::PairSource`].
pub struct WeakPairs {
    /// Dataset root the CSV paths are relative to.
    pub root: PathBuf,
    /// The pairs.
    pub pairs: Vec<WeakPair>,
    /// Random crops (training) or not (validation).
    pub augment: bool,
    /// Network input side.
    pub size: usize,
    /// Backbone normalization.
    pub norm: Normalization,
    /// Seed of the crops.
    pub seed: u64,
}

impl super::loader::PairSource for WeakPairs {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn sample(&self, index: usize, epoch: u64) -> Result<super::loader::PairSample> {
        let device = crate::device::inference();
        let key = (self.seed, epoch, index as u64);
        let (source, target) = load_pair(
            &self.root,
            &self.pairs[index],
            self.augment,
            self.size,
            self.norm,
            key,
            &device,
        )?;
        Ok(super::loader::PairSample {
            source: source.into_data(),
            target: target.into_data(),
            truth: None,
        })
    }
}

/// `pairs`, followed by each of them again mirrored when `flip` (the reference's
/// `pf-pascal-flip` list: the unflipped rows, then the same rows with `flip = 1`).
pub fn with_mirrored(pairs: Vec<WeakPair>, flip: bool) -> Vec<WeakPair> {
    if !flip {
        return pairs;
    }
    let mirrored: Vec<WeakPair> = pairs
        .iter()
        .map(|p| WeakPair {
            flip: true,
            ..p.clone()
        })
        .collect();
    pairs.into_iter().chain(mirrored).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_pairs_follow_the_unflipped_ones_in_order() {
        let pair = |s: &str| WeakPair {
            source: s.into(),
            target: "t.jpg".into(),
            class: "c".into(),
            flip: false,
        };
        let pairs = vec![pair("a.jpg"), pair("b.jpg")];
        assert_eq!(with_mirrored(pairs.clone(), false), pairs);
        let doubled = with_mirrored(pairs.clone(), true);
        assert_eq!(doubled.len(), 4);
        assert_eq!(doubled[..2], pairs[..]);
        for (m, p) in doubled[2..].iter().zip(&pairs) {
            assert!(m.flip);
            assert_eq!(
                (&m.source, &m.target, &m.class),
                (&p.source, &p.target, &p.class)
            );
        }
    }
}
