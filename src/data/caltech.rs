//! Caltech-101 pair lists with object polygons (`test_pairs_caltech_with_category.csv`).
//!
//! Columns: image A, image B, category (1-based), polygon X of A, polygon Y of A, polygon X of B,
//! polygon Y of B; each polygon coordinate list is `,`-separated inside its (quoted) field, in
//! absolute pixel coordinates. Images are present here; the annotations may not be.
//!
//! ## Reference
//! weakalign: `data/caltech_dataset.py` (weakalign-reference §10.3, §11).

use std::path::{Path, PathBuf};

use super::csv::read;
use crate::error::{Error, Result};

/// One Caltech-101 test pair.
#[derive(Clone, Debug, PartialEq)]
pub struct CaltechPair {
    /// Image A (source) relative to the dataset root.
    pub source: PathBuf,
    /// Image B (target).
    pub target: PathBuf,
    /// 1-based category index.
    pub category: usize,
    /// Polygon of A, `(x, y)` pixels.
    pub source_polygon: Vec<(f64, f64)>,
    /// Polygon of B.
    pub target_polygon: Vec<(f64, f64)>,
}

/// Reads the pair list (header row expected, as the authors' file).
pub fn read_pairs(path: &Path) -> Result<Vec<CaltechPair>> {
    let (_, rows) = read(path, true)?;
    rows.iter()
        .map(|row| {
            let list = |i: usize, name: &str| row.floats(path, i, name, ',');
            let polygon = |x: Vec<f64>, y: Vec<f64>, name: &str| -> Result<Vec<(f64, f64)>> {
                if x.len() != y.len() || x.len() < 3 {
                    return Err(Error::data(
                        path,
                        Some(row.line),
                        format!(
                            "polygon {name}: {} x and {} y values (need equal counts ≥ 3)",
                            x.len(),
                            y.len()
                        ),
                    ));
                }
                Ok(x.into_iter().zip(y).collect())
            };
            Ok(CaltechPair {
                source: PathBuf::from(row.get(path, 0, "image A")?),
                target: PathBuf::from(row.get(path, 1, "image B")?),
                category: row.parse(path, 2, "category")?,
                source_polygon: polygon(list(3, "XA")?, list(4, "YA")?, "A")?,
                target_polygon: polygon(list(5, "XB")?, list(6, "YB")?, "B")?,
            })
        })
        .collect()
}
