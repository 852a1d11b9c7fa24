//! The one place that names the tensor backends, and the user's choice among them.
//!
//! burn 0.22 dispatches on a runtime [`Device`]. The CPU backend is `flex`; with the `cuda` cargo
//! feature the CUDA backend (burn-cuda) is compiled in too. Gradients come from wrapping either
//! in autodiff. Everything else in the crate takes a `&Device` or reads the device of its inputs
//! (a model's device is [`crate::model::TwoStage::device`]).
//!
//! Data preparation (decoding, synthetic warps, augmentation) always runs on the CPU; batches
//! move to the training device. Parameters are always initialized on the CPU from the seeded RNG
//! and then moved, so a CPU and a GPU run of one configuration start from identical weights.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The CPU inference device: burn's `flex` backend.
pub fn inference() -> Device {
    Device::flex()
}

/// The CPU training device: `flex` with autodiff.
pub fn training() -> Device {
    inference().autodiff()
}

/// Reads a tensor back to the host as f64 values: the one place for this conversion.
///
/// # Shapes
/// - `t`: any `[d0, d1, …]`
/// - output: its `d0·d1·…` elements, row-major
pub fn read_f64<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("data converted to f64 reads back as f64")
}

/// Where a command runs: `"cpu"`, `"cuda"` (the first GPU) or `"cuda:N"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// burn's `flex` backend on the CPU.
    #[default]
    Cpu,
    /// CUDA GPU number N (needs a build with the `cuda` feature).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        match name {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("{other:?}: use \"cpu\", \"cuda\" or \"cuda:N\"")),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;

    fn try_from(name: String) -> std::result::Result<Self, String> {
        name.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Whether this is the CPU (the default, left out of configuration files and hashes).
    pub fn is_cpu(&self) -> bool {
        *self == DeviceChoice::Cpu
    }

    /// The inference device, after checking that it can be used: a CUDA device needs a build
    /// with the `cuda` feature, the NVIDIA driver, NVRTC and the GPU itself.
    pub fn inference(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(inference()),
            DeviceChoice::Cuda(n) => cuda::device(n),
        }
    }

    /// The training device ([`DeviceChoice::inference`] with autodiff).
    pub fn training(self) -> Result<Device> {
        Ok(self.inference()?.autodiff())
    }

    /// A line for run records: the backend and where it runs.
    pub fn describe(self) -> String {
        match self {
            DeviceChoice::Cpu => "flex (CPU) + autodiff".into(),
            DeviceChoice::Cuda(n) => format!("cuda:{n} (burn-cuda, NVRTC kernels) + autodiff"),
        }
    }
}

/// Makes burn's own default device the CPU. burn picks CUDA as its default whenever it is
/// compiled in, even on a machine without a GPU, and uses the default when it loads optimizer
/// state (the state moves to the parameters' device on the next step). Call first in `main`.
pub fn pin_default_to_cpu() {
    #[cfg(feature = "cuda")]
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: called at the start of `main`, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    pub fn device(n: usize) -> Result<Device> {
        Err(Error::Argument {
            op: "device",
            arg: "device",
            reason: format!(
                "cuda:{n}: this binary was built without CUDA; build it with `make build-cuda` \
                 (cargo build --release --features cuda; see README)"
            ),
        })
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! Checks that CUDA can run before burn touches it (burn panics where it cannot): the driver
    //! library, NVRTC (kernels are compiled at run time) and the GPU number.

    use super::*;

    fn unavailable(n: usize, what: String) -> Error {
        Error::Argument {
            op: "device",
            arg: "device",
            reason: format!("cuda:{n}: {what}"),
        }
    }

    /// Loads the first of `names` that the dynamic loader finds.
    fn load(names: &[&str]) -> Option<libloading::Library> {
        // SAFETY: loading NVIDIA's libraries runs only their (trusted) initializers.
        names
            .iter()
            .find_map(|name| unsafe { libloading::Library::new(name) }.ok())
    }

    /// Number of GPUs the driver sees.
    fn gpu_count(driver: &libloading::Library) -> std::result::Result<i32, String> {
        type CuInit = unsafe extern "C" fn(u32) -> i32;
        type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
        // SAFETY: the symbols have these C signatures in every CUDA driver API version.
        unsafe {
            let init = driver
                .get::<CuInit>(b"cuInit\0")
                .map_err(|e| e.to_string())?;
            let count = driver
                .get::<CuDeviceGetCount>(b"cuDeviceGetCount\0")
                .map_err(|e| e.to_string())?;
            let status = init(0);
            if status != 0 {
                return Err(format!("cuInit failed with CUDA error {status}"));
            }
            let mut n = 0;
            let status = count(&mut n);
            if status != 0 {
                return Err(format!("cuDeviceGetCount failed with CUDA error {status}"));
            }
            Ok(n)
        }
    }

    pub fn device(n: usize) -> Result<Device> {
        let driver = load(&["libcuda.so.1", "libcuda.so"]).ok_or_else(|| {
            unavailable(
                n,
                "the NVIDIA driver (libcuda.so.1) is not installed or not on the library path"
                    .into(),
            )
        })?;
        let nvrtc = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];
        if load(&nvrtc).is_none() {
            return Err(unavailable(
                n,
                "NVRTC (libnvrtc.so.13) is not on the library path: add the CUDA toolkit's lib64 \
                 to LD_LIBRARY_PATH and set CUDA_PATH to the toolkit (its include/ is needed)"
                    .into(),
            ));
        }
        let count = gpu_count(&driver).map_err(|e| unavailable(n, e))?;
        if n >= count as usize {
            return Err(unavailable(n, format!("the driver sees {count} GPU(s)")));
        }
        Ok(Device::cuda(n))
    }
}
