//! Canonical parameter ids in checkpoint files, so that identical model and optimizer state give
//! byte-identical files (checkpoints can be compared and deduplicated by hash).
//!
//! burn gives every parameter a random 64-bit id when it is created, writes it next to each
//! tensor of a model record, and keys the optimizer's per-parameter state by it (tensor names
//! `"{id}.{field}"`, scalar and path entries `"{id}…"`), in the order of a hash map. Two runs of
//! one configuration therefore wrote different bytes for the same numbers. After burn has written
//! both files, [`canonicalize`] rewrites them: the model's `k`-th tensor (record order, which
//! follows the module's fields) gets id `k + 1`, the optimizer's entries are renamed to match and
//! sorted. Loading keeps the ids of the file, so a resumed model and its optimizer state agree,
//! exactly as they did with burn's random ids.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn_pack::{Reader, Tensor, Writer};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// What one burnpack file holds.
struct Pack {
    tensors: Vec<Tensor>,
    metadata: BTreeMap<String, String>,
    scalars: BTreeMap<String, burn_pack::Scalar>,
}

fn unreadable(path: &Path, e: impl std::fmt::Debug) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        reason: format!("cannot rewrite with canonical parameter ids: {e:?}"),
    }
}

fn read(path: &Path) -> Result<Pack> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let reader = Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(bytes))
        .map_err(|e| unreadable(path, e))?;
    let metadata = reader.metadata().clone();
    let scalars = reader.scalars().clone();
    let tensors = reader.into_tensors().map_err(|e| unreadable(path, e))?;
    Ok(Pack {
        tensors,
        metadata,
        scalars,
    })
}

fn write(path: &Path, pack: Pack) -> Result<()> {
    let mut writer = Writer::new(pack.tensors);
    for (k, v) in &pack.metadata {
        writer = writer.with_metadata(k, v);
    }
    for (k, v) in pack.scalars {
        writer = writer.with_scalar(&k, v);
    }
    let bytes = writer.into_bytes().map_err(|e| unreadable(path, e))?;
    write_atomic(path, &bytes)
}

/// `key` with a leading `"{id}"` (alone or before a `.`) replaced by its canonical id; keys that
/// start with no known id are kept.
fn rename(key: &str, ids: &HashMap<u64, u64>) -> String {
    let (head, rest) = key
        .split_once('.')
        .map_or((key, None), |(h, r)| (h, Some(r)));
    match head.parse::<u64>().ok().and_then(|id| ids.get(&id)) {
        Some(canonical) => match rest {
            Some(rest) => format!("{canonical}.{rest}"),
            None => canonical.to_string(),
        },
        None => key.to_string(),
    }
}

/// Rewrites the model record at `model` and the optimizer state at `optimizer` (both burnpack
/// files written by burn) with canonical parameter ids; see the module documentation.
pub fn canonicalize(model: &Path, optimizer: &Path) -> Result<()> {
    let mut pack = read(model)?;
    let mut ids = HashMap::new();
    for (k, t) in pack.tensors.iter_mut().enumerate() {
        if let Some(id) = t.param_id {
            let canonical = k as u64 + 1;
            ids.insert(id, canonical);
            t.param_id = Some(canonical);
        }
    }
    write(model, pack)?;

    let mut pack = read(optimizer)?;
    for t in &mut pack.tensors {
        t.name = rename(&t.name, &ids);
        t.param_id = t.param_id.map(|id| ids.get(&id).copied().unwrap_or(id));
    }
    pack.tensors.sort_by(|a, b| {
        let key = |t: &Tensor| {
            let head = t.name.split('.').next().and_then(|h| h.parse::<u64>().ok());
            (head, t.name.clone())
        };
        key(a).cmp(&key(b))
    });
    pack.scalars = std::mem::take(&mut pack.scalars)
        .into_iter()
        .map(|(k, v)| (rename(&k, &ids), v))
        .collect();
    pack.metadata = std::mem::take(&mut pack.metadata)
        .into_iter()
        .map(|(k, v)| (rename(&k, &ids), v))
        .collect();
    write(optimizer, pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_renamed_only_where_they_start_with_a_known_id() {
        let ids = HashMap::from([(987_654_321u64, 3u64)]);
        assert_eq!(rename("987654321.moment_1", &ids), "3.moment_1");
        assert_eq!(rename("987654321", &ids), "3");
        assert_eq!(rename("111.moment_1", &ids), "111.moment_1");
        assert_eq!(rename("lr", &ids), "lr");
    }
}
