//! The known transforms of synthetic pairs, typed by model so an affine θ cannot be read as a
//! TPS θ: per sample ([`SampleTruth`]) and per batch ([`GroundTruth`]).

use burn::tensor::{DType, Device};

use crate::error::{Error, Result};
use crate::geometry::{AffineTheta, Theta, TpsTheta};

/// The θ a synthetic pair was made with (target → source).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleTruth {
    /// An affine θ.
    Affine([f64; 6]),
    /// A TPS θ (control-point coordinates).
    Tps([f64; 18]),
}

impl SampleTruth {
    /// The parameters, row-major.
    pub fn values(&self) -> &[f64] {
        match self {
            SampleTruth::Affine(v) => v,
            SampleTruth::Tps(v) => v,
        }
    }
}

/// The known transforms of a batch: weak pairs have none, synthetic ones one θ each.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum GroundTruth {
    /// Weak (image-level) pairs.
    #[default]
    None,
    /// One affine θ per pair.
    Affine(Vec<[f64; 6]>),
    /// One TPS θ per pair.
    Tps(Vec<[f64; 18]>),
}

impl GroundTruth {
    /// The batch's truth from its samples' (all of one kind, or all without).
    pub fn collect(samples: &[Option<SampleTruth>]) -> Result<Self> {
        let known: Vec<SampleTruth> = samples.iter().flatten().copied().collect();
        let affine = known.iter().filter_map(|t| match t {
            SampleTruth::Affine(v) => Some(*v),
            SampleTruth::Tps(_) => None,
        });
        let tps = known.iter().filter_map(|t| match t {
            SampleTruth::Tps(v) => Some(*v),
            SampleTruth::Affine(_) => None,
        });
        let truth = match known.first() {
            None => GroundTruth::None,
            Some(SampleTruth::Affine(_)) => GroundTruth::Affine(affine.collect()),
            Some(SampleTruth::Tps(_)) => GroundTruth::Tps(tps.collect()),
        };
        let whole = match &truth {
            GroundTruth::None => true,
            GroundTruth::Affine(v) => v.len() == samples.len(),
            GroundTruth::Tps(v) => v.len() == samples.len(),
        };
        if !whole {
            return Err(Error::Argument {
                op: "GroundTruth::collect",
                arg: "samples",
                reason: "a batch mixes pairs with and without, or with different, ground truth"
                    .into(),
            });
        }
        Ok(truth)
    }

    fn missing(&self, wanted: &str) -> Error {
        Error::Argument {
            op: "GroundTruth",
            arg: "batch",
            reason: format!("the batch has no {wanted} ground truth ({self:?})"),
        }
    }

    /// The affine θ of every pair.
    ///
    /// # Shapes
    /// - output: `[batch, 6]`
    pub fn affine(&self, device: &Device, dtype: DType) -> Result<AffineTheta> {
        match self {
            GroundTruth::Affine(v) => AffineTheta::from_values(v.as_flattened(), device, dtype),
            _ => Err(self.missing("affine")),
        }
    }

    /// The TPS θ of every pair.
    ///
    /// # Shapes
    /// - output: `[batch, 18]`
    pub fn tps(&self, device: &Device, dtype: DType) -> Result<TpsTheta> {
        match self {
            GroundTruth::Tps(v) => TpsTheta::from_values(v.as_flattened(), device, dtype),
            _ => Err(self.missing("TPS")),
        }
    }
}
