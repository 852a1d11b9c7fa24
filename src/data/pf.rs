//! Proposal Flow benchmarks: PF-WILLOW (keypoint `.mat` files or `test_pairs_pf.csv`) and
//! PF-PASCAL (`test_pairs_pf_pascal.csv` / `val_pairs_pf_pascal.csv`).
//!
//! Keypoints are 1-based pixel coordinates of the original images; padding entries (−1) and
//! non-finite values are dropped when read, so they never enter a bounding box or a count.
//!
//! ## Reference
//! weakalign: `data/pf_dataset.py` `PFDataset`, `PFPascalDataset` (weakalign-reference §10, §11).

use std::path::{Path, PathBuf};

use super::csv::{expect_header, read};
use crate::error::{Error, Result};

/// A keypoint `(x, y)` in 1-based pixels.
pub type Point = (f64, f64);

/// A test pair with corresponding keypoints (same order in both images).
#[derive(Clone, Debug, PartialEq)]
pub struct KeypointPair {
    /// Source image path relative to the dataset root.
    pub source: PathBuf,
    /// Target image path relative to the dataset root.
    pub target: PathBuf,
    /// Category name (PF-WILLOW sub-class, PF-PASCAL class index as text).
    pub class: String,
    /// Source keypoints `(x, y)`, 1-based pixels.
    pub source_points: Vec<(f64, f64)>,
    /// Target keypoints `(x, y)`, 1-based pixels, in the same order.
    pub target_points: Vec<(f64, f64)>,
}

/// Keypoints per PF-WILLOW image.
pub const WILLOW_KEYPOINTS: usize = 10;

/// Images per PF-WILLOW sub-class (100 in all: 900 ordered test pairs).
pub const WILLOW_IMAGES_PER_CLASS: usize = 10;

/// The PF-WILLOW sub-classes.
pub const WILLOW_CLASSES: [&str; 10] = [
    "car(G)",
    "car(M)",
    "car(S)",
    "duck(S)",
    "motorbike(G)",
    "motorbike(M)",
    "motorbike(S)",
    "winebottle(M)",
    "winebottle(wC)",
    "winebottle(woC)",
];

/// Drops padding (−1) and non-finite keypoints, pairwise.
fn valid_pairs(a: Vec<Point>, b: Vec<Point>) -> (Vec<Point>, Vec<Point>) {
    let ok = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite() && p.0 != -1.0 && p.1 != -1.0;
    a.into_iter().zip(b).filter(|(p, q)| ok(p) && ok(q)).unzip()
}

/// Reads `pts_coord` (2 × 10: row 0 = x, row 1 = y) from a PF-WILLOW MATLAB v5 file.
pub fn read_willow_mat(path: &Path) -> Result<Vec<(f64, f64)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mat = matfile::MatFile::parse(file)
        .map_err(|e| Error::data(path, None, format!("not a readable MATLAB v5 file: {e:?}")))?;
    let array = mat
        .find_by_name("pts_coord")
        .ok_or_else(|| Error::data(path, None, "no variable `pts_coord`"))?;
    let size = array.size();
    if size.len() != 2 || size[0] != 2 {
        return Err(Error::data(
            path,
            None,
            format!("`pts_coord` has size {size:?}, expected [2, n]"),
        ));
    }
    let values: Vec<f64> = match array.data() {
        matfile::NumericData::Double { real, .. } => real.clone(),
        matfile::NumericData::Single { real, .. } => real.iter().map(|&v| v as f64).collect(),
        other => {
            return Err(Error::data(
                path,
                None,
                format!("`pts_coord` is not floating point: {other:?}"),
            ));
        }
    };
    // Column-major: element (r, c) at r + 2c.
    Ok((0..size[1])
        .map(|c| (values[2 * c], values[2 * c + 1]))
        .collect())
}

/// All PF-WILLOW test pairs from the `.mat` files under `root/PF-dataset/<class>/`: every ordered
/// pair of distinct images within each sub-class (10 × 90 = 900), images sorted by name.
pub fn willow_pairs_from_mat(root: &Path) -> Result<Vec<KeypointPair>> {
    let mut pairs = Vec::new();
    for class in WILLOW_CLASSES {
        let dir = root.join("PF-dataset").join(class);
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let with = |ext: &str| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = files
                .iter()
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .cloned()
                .collect();
            v.sort();
            v
        };
        let images = with("png");
        // Keypoints without their image: the image is missing (scoring the rest would quietly
        // report a different benchmark).
        if let Some(mat) = with("mat")
            .into_iter()
            .find(|m| !m.with_extension("png").is_file())
        {
            return Err(Error::data(
                mat.with_extension("png"),
                None,
                format!("missing image (its keypoints {} exist)", mat.display()),
            ));
        }
        if images.len() != WILLOW_IMAGES_PER_CLASS {
            eprintln!(
                "warning: {}: {} images where PF-WILLOW has {WILLOW_IMAGES_PER_CLASS}: the \
                 benchmark scores {} pairs of this class instead of {}",
                dir.display(),
                images.len(),
                images.len() * images.len().saturating_sub(1),
                WILLOW_IMAGES_PER_CLASS * (WILLOW_IMAGES_PER_CLASS - 1)
            );
        }
        let points: Vec<Vec<(f64, f64)>> = images
            .iter()
            .map(|p| read_willow_mat(&p.with_extension("mat")))
            .collect::<Result<_>>()?;
        for (i, a) in images.iter().enumerate() {
            for (j, b) in images.iter().enumerate() {
                if i != j {
                    let (sp, tp) = valid_pairs(points[i].clone(), points[j].clone());
                    pairs.push(KeypointPair {
                        source: a.strip_prefix(root).unwrap_or(a).to_path_buf(),
                        target: b.strip_prefix(root).unwrap_or(b).to_path_buf(),
                        class: class.to_string(),
                        source_points: sp,
                        target_points: tp,
                    });
                }
            }
        }
    }
    Ok(pairs)
}

/// Writes pairs as `test_pairs_pf.csv`: `imageA,imageB,XA1..XA10,YA1..YA10,XB1..XB10,YB1..YB10`.
pub fn write_willow_csv(path: &Path, pairs: &[KeypointPair]) -> Result<()> {
    let n = WILLOW_KEYPOINTS;
    let mut header = vec!["imageA".to_string(), "imageB".to_string()];
    for (axis, image) in [("X", "A"), ("Y", "A"), ("X", "B"), ("Y", "B")] {
        header.extend((1..=n).map(|i| format!("{axis}{image}{i}")));
    }
    let mut text = header.join(",") + "\n";
    for p in pairs {
        if p.source_points.len() != n || p.target_points.len() != n {
            return Err(Error::data(
                path,
                None,
                format!("pair {} has not {n} keypoints", p.source.display()),
            ));
        }
        let mut fields = vec![
            p.source.display().to_string(),
            p.target.display().to_string(),
        ];
        for pts in [&p.source_points, &p.target_points] {
            fields.extend(pts.iter().map(|q| q.0.to_string()));
            fields.extend(pts.iter().map(|q| q.1.to_string()));
        }
        text += &(fields.join(",") + "\n");
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Reads `test_pairs_pf.csv` (header row, 42 columns); the class is the image's folder.
pub fn read_willow_csv(path: &Path) -> Result<Vec<KeypointPair>> {
    let n = WILLOW_KEYPOINTS;
    let (_, rows) = read(path, true)?;
    rows.iter()
        .map(|row| {
            if row.fields.len() != 2 + 4 * n {
                return Err(Error::data(
                    path,
                    Some(row.line),
                    format!("{} columns, expected {}", row.fields.len(), 2 + 4 * n),
                ));
            }
            let num = |i: usize| row.parse::<f64>(path, i, &format!("column {}", i + 1));
            let pts = |x0: usize| -> Result<Vec<(f64, f64)>> {
                (0..n)
                    .map(|k| Ok((num(x0 + k)?, num(x0 + n + k)?)))
                    .collect()
            };
            let source = PathBuf::from(row.get(path, 0, "imageA")?);
            let class = source
                .parent()
                .and_then(|p| p.file_name())
                .map(|c| c.to_string_lossy().to_string())
                .unwrap_or_default();
            let (sp, tp) = valid_pairs(pts(2)?, pts(2 + 2 * n)?);
            Ok(KeypointPair {
                source,
                target: PathBuf::from(row.get(path, 1, "imageB")?),
                class,
                source_points: sp,
                target_points: tp,
            })
        })
        .collect()
}

/// The PF-PASCAL pair-list header.
pub const PASCAL_HEADER: [&str; 7] = [
    "source_image",
    "target_image",
    "class",
    "XA",
    "YA",
    "XB",
    "YB",
];

/// Reads `test_pairs_pf_pascal.csv` / `val_pairs_pf_pascal.csv`: `;`-separated coordinate lists.
pub fn read_pascal_csv(path: &Path) -> Result<Vec<KeypointPair>> {
    let (header, rows) = read(path, true)?;
    expect_header(path, &header, &PASCAL_HEADER)?;
    rows.iter()
        .map(|row| {
            let list = |i: usize, name: &str| row.floats(path, i, name, ';');
            let (xa, ya, xb, yb) = (
                list(3, "XA")?,
                list(4, "YA")?,
                list(5, "XB")?,
                list(6, "YB")?,
            );
            if xa.len() != ya.len() || xa.len() != xb.len() || xb.len() != yb.len() {
                return Err(Error::data(
                    path,
                    Some(row.line),
                    format!(
                        "keypoint lists differ in length: XA {}, YA {}, XB {}, YB {}",
                        xa.len(),
                        ya.len(),
                        xb.len(),
                        yb.len()
                    ),
                ));
            }
            let (sp, tp) = valid_pairs(
                xa.into_iter().zip(ya).collect(),
                xb.into_iter().zip(yb).collect(),
            );
            Ok(KeypointPair {
                source: PathBuf::from(row.get(path, 0, "source_image")?),
                target: PathBuf::from(row.get(path, 1, "target_image")?),
                class: row.get(path, 2, "class")?.trim().to_string(),
                source_points: sp,
                target_points: tp,
            })
        })
        .collect()
}
