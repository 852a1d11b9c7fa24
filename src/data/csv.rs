//! CSV reading with errors that name the file and line.

use std::path::Path;

use crate::error::{Error, Result};

/// One data row: its 1-based line number and fields.
pub struct Row {
    /// 1-based line in the file.
    pub line: usize,
    /// The fields.
    pub fields: Vec<String>,
}

impl Row {
    /// Field `i`, or an error naming the file, line and the column.
    pub fn get<'a>(&'a self, file: &Path, i: usize, name: &str) -> Result<&'a str> {
        self.fields.get(i).map(String::as_str).ok_or_else(|| {
            Error::data(
                file,
                Some(self.line),
                format!("missing column {} (`{name}`)", i + 1),
            )
        })
    }

    /// Field `i` parsed, or an error naming the file, line, column and value.
    pub fn parse<T: std::str::FromStr>(&self, file: &Path, i: usize, name: &str) -> Result<T> {
        let raw = self.get(file, i, name)?;
        raw.trim().parse().map_err(|_| {
            Error::data(
                file,
                Some(self.line),
                format!("column `{name}`: cannot parse {raw:?}"),
            )
        })
    }
}

impl Row {
    /// Field `i` as a list of numbers separated by `sep` (e.g. `1;2.5;3`), or an error naming the
    /// file, line, column and the offending value.
    pub fn floats(&self, file: &Path, i: usize, name: &str, sep: char) -> Result<Vec<f64>> {
        self.get(file, i, name)?
            .split(sep)
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse::<f64>().map_err(|_| {
                    Error::data(
                        file,
                        Some(self.line),
                        format!("column `{name}`: cannot parse {s:?}"),
                    )
                })
            })
            .collect()
    }
}

/// Reads a CSV file: the header (if `has_header`) and every data row with its line number.
pub fn read(path: &Path, has_header: bool) -> Result<(Vec<String>, Vec<Row>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(has_header)
        .flexible(true)
        .from_reader(file);
    let header = if has_header {
        reader
            .headers()
            .map_err(|e| Error::data(path, Some(1), e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize);
            Error::data(path, line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        rows.push(Row {
            line,
            fields: record.iter().map(str::to_string).collect(),
        });
    }
    Ok((header, rows))
}

/// Checks that the header starts with the expected columns.
pub fn expect_header(path: &Path, header: &[String], expected: &[&str]) -> Result<()> {
    let ok =
        header.len() >= expected.len() && header.iter().zip(expected).all(|(a, b)| a.trim() == *b);
    if ok {
        Ok(())
    } else {
        Err(Error::data(
            path,
            Some(1),
            format!("header {header:?}, expected columns {expected:?}"),
        ))
    }
}
