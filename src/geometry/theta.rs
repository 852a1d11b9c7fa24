//! Typed transformation parameters: an affine θ cannot be passed where a TPS θ is expected.

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::error::{Dim, Result, check_arg, check_shape};

/// A batch of transformation parameters of one geometric model.
///
/// The parameter count is a compile-time constant of the type; constructors check it.
pub trait Theta: Clone + Sized {
    /// Number of parameters per batch element.
    const PARAMS: usize;
    /// Human-readable model name for messages.
    const NAME: &'static str;
    /// The identity transform's parameters (`PARAMS` values).
    const IDENTITY: &'static [f64];

    /// Wraps a tensor whose shape has already been checked.
    #[doc(hidden)]
    fn wrap_unchecked(params: Tensor<2>) -> Self;

    /// The parameters.
    ///
    /// # Shapes
    /// - output: `[batch, PARAMS]`
    fn tensor(&self) -> &Tensor<2>;

    /// The parameters, by value.
    ///
    /// # Shapes
    /// - output: `[batch, PARAMS]`
    fn into_tensor(self) -> Tensor<2>;

    /// Wraps `params` after checking its shape.
    ///
    /// # Shapes
    /// - `params`: `[batch, PARAMS]`
    fn new(params: Tensor<2>) -> Result<Self> {
        check_shape(
            Self::NAME,
            "params",
            &params.dims(),
            &[Dim::Any("batch"), Dim::Is(Self::PARAMS)],
        )?;
        Ok(Self::wrap_unchecked(params))
    }

    /// Builds θ from row-major values, `PARAMS` per batch element.
    fn from_values(values: &[f64], device: &Device, dtype: DType) -> Result<Self> {
        check_arg(
            !values.is_empty() && values.len().is_multiple_of(Self::PARAMS),
            Self::NAME,
            "values",
            || {
                format!(
                    "{} values is not a positive multiple of {}",
                    values.len(),
                    Self::PARAMS
                )
            },
        )?;
        let batch = values.len() / Self::PARAMS;
        let data = TensorData::new(values.to_vec(), [batch, Self::PARAMS]);
        Ok(Self::wrap_unchecked(Tensor::from_data(
            data,
            (device, dtype),
        )))
    }

    /// The identity transform, repeated `batch` times.
    fn identity(batch: usize, device: &Device, dtype: DType) -> Self {
        let one = Self::IDENTITY;
        let values: Vec<f64> = (0..batch).flat_map(|_| one.iter().copied()).collect();
        let data = TensorData::new(values, [batch, Self::PARAMS]);
        Self::wrap_unchecked(Tensor::from_data(data, (device, dtype)))
    }
}

/// Affine θ = `[a11, a12, tx, a21, a22, ty]` (row-major 2×3):
/// `x' = a11·x + a12·y + tx`, `y' = a21·x + a22·y + ty`.
///
/// # Shapes
/// - `[batch, 6]`
#[derive(Clone, Debug)]
pub struct AffineTheta(Tensor<2>);

/// Thin-plate-spline θ on a 3×3 control grid: the 9 control-point x then the 9 y, in source
/// coordinates, control points in X-major order (`P_X = [-1,-1,-1,0,0,0,1,1,1]`,
/// `P_Y = [-1,0,1,-1,0,1,-1,0,1]`).
///
/// # Shapes
/// - `[batch, 18]`
#[derive(Clone, Debug)]
pub struct TpsTheta(Tensor<2>);

/// The identity TPS θ: the control points themselves.
pub const TPS_IDENTITY: [f64; 18] = [
    -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, //
    -1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0,
];

/// The identity affine θ.
pub const AFFINE_IDENTITY: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

impl Theta for AffineTheta {
    const PARAMS: usize = 6;
    const NAME: &'static str = "AffineTheta";
    const IDENTITY: &'static [f64] = &AFFINE_IDENTITY;
    fn wrap_unchecked(params: Tensor<2>) -> Self {
        Self(params)
    }
    fn tensor(&self) -> &Tensor<2> {
        &self.0
    }
    fn into_tensor(self) -> Tensor<2> {
        self.0
    }
}

impl Theta for TpsTheta {
    const PARAMS: usize = 18;
    const NAME: &'static str = "TpsTheta";
    const IDENTITY: &'static [f64] = &TPS_IDENTITY;
    fn wrap_unchecked(params: Tensor<2>) -> Self {
        Self(params)
    }
    fn tensor(&self) -> &Tensor<2> {
        &self.0
    }
    fn into_tensor(self) -> Tensor<2> {
        self.0
    }
}

macro_rules! inherent_batch {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// Batch size.
            pub fn batch(&self) -> usize {
                self.0.dims()[0]
            }
        }
    )*};
}
inherent_batch!(AffineTheta, TpsTheta);
