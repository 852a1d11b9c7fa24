//! TSS (Taniai, Sinha, Sato, CVPR 2016): pair folders, Middlebury `.flo` flow files, masks and
//! `flip_gt.txt`.
//!
//! Per pair folder: `image1.png image2.png flow1.flo flow2.flo mask1.png mask2.png flip_gt.txt`.
//! `flow1.flo` is defined on image 1's pixel grid and points into image 2 (so for flow 1 the
//! *target* is image 1 and the *source* image 2); ground truth is 1e10 outside the annotation.
//!
//! ## Reference
//! weakalign: `data/tss_dataset.py`, `geotnf/flow.py`; TSS evaluation kit (weakalign-reference
//! §10.4, §17).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The `.flo` magic number (`PIEH` as a little-endian f32).
pub const FLO_MAGIC: f32 = 202021.25;

/// Values at or above this are "unknown flow" (the kit uses 1e9).
pub const UNKNOWN_FLOW: f32 = 1e9;

/// A dense flow field `(u, v)` per pixel, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `u, v` interleaved, `height · width · 2` values.
    pub uv: Vec<f32>,
}

impl Flow {
    /// `(u, v)` at `(x, y)` (0-based).
    pub fn at(&self, x: usize, y: usize) -> (f32, f32) {
        let i = 2 * (y * self.width + x);
        (self.uv[i], self.uv[i + 1])
    }
}

/// Reads a Middlebury `.flo` file; a wrong magic, size or length is an error naming the file.
pub fn read_flo(path: &Path) -> Result<Flow> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::data(path, None, msg);
    if bytes.len() < 12 {
        return Err(bad(format!(
            "{} bytes: too short for a .flo header",
            bytes.len()
        )));
    }
    let magic = f32::from_le_bytes(bytes[0..4].try_into().unwrap());
    if magic != FLO_MAGIC {
        return Err(bad(format!(
            "magic {magic}, expected {FLO_MAGIC} (not a .flo file)"
        )));
    }
    let width = i32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let height = i32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if !(1..=100_000).contains(&width) || !(1..=100_000).contains(&height) {
        return Err(bad(format!("implausible size {width}×{height}")));
    }
    let (w, h) = (width as usize, height as usize);
    let expected = 12 + 8 * w * h;
    if bytes.len() != expected {
        return Err(bad(format!(
            "{} bytes, expected {expected} for {w}×{h}",
            bytes.len()
        )));
    }
    let uv = bytes[12..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Ok(Flow {
        height: h,
        width: w,
        uv,
    })
}

/// Writes a Middlebury `.flo` file atomically.
pub fn write_flo(path: &Path, flow: &Flow) -> Result<()> {
    let mut bytes = Vec::with_capacity(12 + 4 * flow.uv.len());
    bytes.extend(FLO_MAGIC.to_le_bytes());
    bytes.extend((flow.width as i32).to_le_bytes());
    bytes.extend((flow.height as i32).to_le_bytes());
    for v in &flow.uv {
        bytes.extend(v.to_le_bytes());
    }
    crate::fsutil::write_atomic(path, &bytes)
}

/// A binary mask (foreground = true), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Foreground flags.
    pub fg: Vec<bool>,
}

/// Reads a mask PNG (any channel > 127 in the luma image is foreground).
pub fn read_mask(path: &Path) -> Result<Mask> {
    let img = image::open(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let luma = img.to_luma8();
    Ok(Mask {
        height: luma.height() as usize,
        width: luma.width() as usize,
        fg: luma.pixels().map(|p| p.0[0] > 127).collect(),
    })
}

/// One TSS pair folder.
#[derive(Clone, Debug, PartialEq)]
pub struct TssPair {
    /// The folder, e.g. `TSS_CVPR2016/FG3DCar/001_005`.
    pub dir: PathBuf,
    /// Subset name (`FG3DCar`, `JODS`, `PASCAL`).
    pub subset: String,
    /// `flip_gt.txt`: the two images face opposite directions.
    pub flip: bool,
}

impl TssPair {
    /// `image1.png` or `image2.png`.
    pub fn image(&self, k: u8) -> PathBuf {
        self.dir.join(format!("image{k}.png"))
    }
    /// `flow1.flo` or `flow2.flo`.
    pub fn flow(&self, k: u8) -> PathBuf {
        self.dir.join(format!("flow{k}.flo"))
    }
    /// `mask1.png` or `mask2.png`.
    pub fn mask(&self, k: u8) -> PathBuf {
        self.dir.join(format!("mask{k}.png"))
    }
}

/// Reads `flip_gt.txt` (a single 0 or 1).
pub fn read_flip(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(Error::data(
            path,
            Some(1),
            format!("expected 0 or 1, found {other:?}"),
        )),
    }
}

/// Every pair folder under `root/<subset>/<pair>/` (subsets sorted, pairs sorted).
pub fn tss_pairs(root: &Path) -> Result<Vec<TssPair>> {
    let mut pairs = Vec::new();
    let mut subsets: Vec<PathBuf> = list_dirs(root)?;
    subsets.sort();
    for subset in subsets {
        let mut dirs = list_dirs(&subset)?;
        dirs.sort();
        for dir in dirs {
            let flip = read_flip(&dir.join("flip_gt.txt"))?;
            pairs.push(TssPair {
                subset: subset.file_name().unwrap().to_string_lossy().to_string(),
                dir,
                flip,
            });
        }
    }
    Ok(pairs)
}

fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect())
}
