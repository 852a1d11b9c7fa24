//! A user's point list: CSV rows `x,y` in 1-based pixels, an optional header line.

use std::path::Path;

use crate::error::{Error, Result};

/// Reads `x,y` rows (blank lines skipped; a first line that is not two numbers is a header).
pub fn read_points_csv(path: &Path) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut points = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        let parse = |k: usize| fields.get(k).and_then(|s| s.trim().parse::<f64>().ok());
        match (parse(0), parse(1)) {
            (Some(x), Some(y)) if !(x.is_finite() && y.is_finite()) => {
                return Err(Error::data(
                    path,
                    Some(i + 1),
                    format!("point ({x}, {y}) is not finite"),
                ));
            }
            (Some(x), Some(y)) => points.push((x, y)),
            _ if i == 0 => {} // header
            _ => {
                return Err(Error::data(
                    path,
                    Some(i + 1),
                    format!("expected two numbers `x,y`, found {:?}", line.trim()),
                ));
            }
        }
    }
    Ok(points)
}
