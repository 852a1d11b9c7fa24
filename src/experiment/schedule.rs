//! Learning-rate schedules over a stage: a pure function of the step, so a resume continues on
//! the same curve.

use serde::{Deserialize, Serialize};

/// How the learning rate moves over a stage (`"constant"` or `"cosine"` in files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Cosine annealing from the base rate to base/100 over the stage.
    Cosine,
}

impl Schedule {
    /// The rate at step `local` of a stage of `length` steps with base rate `base`.
    pub fn lr_at(self, base: f64, local: u64, length: u64) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let t = local as f64 / length.max(1) as f64;
                let floor = base / 100.0;
                floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_the_base_and_ends_at_a_hundredth() {
        assert_eq!(Schedule::Cosine.lr_at(1e-3, 0, 100), 1e-3);
        assert!((Schedule::Cosine.lr_at(1e-3, 100, 100) - 1e-5).abs() < 1e-18);
        assert!((Schedule::Cosine.lr_at(1e-3, 50, 100) - 0.5 * (1e-3 + 1e-5)).abs() < 1e-15);
        assert_eq!(Schedule::Constant.lr_at(1e-3, 50, 100), 1e-3);
    }
}
