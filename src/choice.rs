//! Named choices: every enum a user picks by name (in an experiment file, with `--set`, or on the
//! command line) spells its names once, as serde names on the enum. These two functions read and
//! write those names outside serde, so the CLI parses `--backbone resnet101` with the same table
//! the TOML reader uses.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::de::value::{Error as ValueError, StrDeserializer};

/// The value named `name` (its serde name), or the deserializer's message listing the names.
pub fn parse<T: DeserializeOwned>(name: &str) -> Result<T, String> {
    T::deserialize(StrDeserializer::<ValueError>::new(name)).map_err(|e| e.to_string())
}

/// The serde name of a unit-like choice (`"pf-willow"`, `"last:2"`).
pub fn name<T: Serialize>(value: &T) -> String {
    match toml::Value::try_from(value) {
        Ok(toml::Value::String(s)) => s,
        other => panic!("a choice serializes to a string, got {other:?}"),
    }
}
