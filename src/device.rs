//! The one place that names the tensor backends, and the user's choice among them.
//!
//! burn 0.22 dispatches on a runtime [`Device`]. The CPU backend is `flex`; with the `cuda` cargo
//! feature the CUDA backend (burn-cuda) is compiled in too, and with the `wgpu` feature the wgpu
//! backend (burn-wgpu: Vulkan, Metal or DirectX 12). Both GPU backends run the same cubecl kernels
//! and differ in the last compilation step. Gradients come from wrapping any of them in autodiff. Everything else in the crate takes a `&Device` or reads the device of its inputs
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

/// Where a command runs: `"cpu"`, `"cuda"` (the first GPU), `"cuda:N"`, `"wgpu"` (the adapter
/// wgpu picks) or `"wgpu:N"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// burn's `flex` backend on the CPU.
    #[default]
    Cpu,
    /// CUDA GPU number N (needs a build with the `cuda` feature).
    Cuda(usize),
    /// A wgpu adapter (needs a build with the `wgpu` feature): `None` is the one wgpu picks (a
    /// GPU before a software device), `Some(n)` the n-th of those burn lists on the graphics API
    /// it settles on (`weakalign devices` prints them).
    Wgpu(Option<usize>),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        let index = |prefix: &str| name.strip_prefix(prefix).and_then(|n| n.parse().ok());
        match name {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "wgpu" => Ok(DeviceChoice::Wgpu(None)),
            _ => index("cuda:")
                .map(DeviceChoice::Cuda)
                .or_else(|| index("wgpu:").map(|n| DeviceChoice::Wgpu(Some(n))))
                .ok_or_else(|| {
                    format!("{name:?}: use \"cpu\", \"cuda\", \"cuda:N\", \"wgpu\" or \"wgpu:N\"")
                }),
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
            DeviceChoice::Wgpu(None) => write!(f, "wgpu"),
            DeviceChoice::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Whether this is the CPU (the default, left out of configuration files and hashes).
    pub fn is_cpu(&self) -> bool {
        *self == DeviceChoice::Cpu
    }

    /// The inference device, after checking that it can be used: a CUDA device needs a build
    /// with the `cuda` feature, the NVIDIA driver, NVRTC and the GPU itself; a wgpu device a
    /// build with the `wgpu` feature and a Vulkan, Metal or DirectX 12 adapter.
    pub fn inference(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(inference()),
            DeviceChoice::Cuda(n) => cuda::device(n),
            DeviceChoice::Wgpu(n) => wgpu::device(n),
        }
    }

    /// The training device ([`DeviceChoice::inference`] with autodiff).
    pub fn training(self) -> Result<Device> {
        Ok(self.inference()?.autodiff())
    }

    /// A line for run records: the backend and where it runs (for wgpu, the adapter and its
    /// graphics API once [`DeviceChoice::inference`] has opened it).
    pub fn describe(self) -> String {
        match self {
            DeviceChoice::Cpu => "flex (CPU) + autodiff".into(),
            DeviceChoice::Cuda(n) => format!("cuda:{n} (burn-cuda, NVRTC kernels) + autodiff"),
            DeviceChoice::Wgpu(n) => format!(
                "{self} (burn-wgpu, WGSL kernels{}) + autodiff",
                wgpu::adapter(n).map_or(String::new(), |a| format!("; {a}"))
            ),
        }
    }
}

/// The devices this binary can use on this machine, one line each, and what is not built in
/// (`weakalign devices`). Opens every wgpu adapter it lists.
pub fn available() -> Vec<String> {
    let mut lines = vec![format!(
        "cpu  {} ({} threads)",
        DeviceChoice::Cpu.describe(),
        rayon::current_num_threads()
    )];
    lines.extend(cuda::listing());
    match wgpu::adapters() {
        Ok(found) if cfg!(feature = "wgpu") && found.is_empty() => {
            lines.push("wgpu: no adapter found".into())
        }
        Ok(found) => lines.extend(found),
        Err(e) => lines.push(e.to_string()),
    }
    lines
}

/// Makes burn's own default device the CPU. burn picks CUDA or wgpu as its default whenever one
/// is compiled in, even on a machine without a GPU, and uses the default when it loads optimizer
/// state (the state moves to the parameters' device on the next step). Call first in `main`.
pub fn pin_default_to_cpu() {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
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

    pub fn listing() -> Vec<String> {
        vec!["cuda: not built in (make build-cuda)".into()]
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

    pub fn listing() -> Vec<String> {
        let Some(driver) = load(&["libcuda.so.1", "libcuda.so"]) else {
            return vec!["cuda: no NVIDIA driver (libcuda.so.1) found".into()];
        };
        match gpu_count(&driver) {
            Ok(count) => (0..count).map(|i| format!("cuda:{i}")).collect(),
            Err(e) => vec![format!("cuda: {e}")],
        }
    }
}

#[cfg(not(feature = "wgpu"))]
mod wgpu {
    use super::*;

    pub fn device(n: Option<usize>) -> Result<Device> {
        Err(Error::Argument {
            op: "device",
            arg: "device",
            reason: format!(
                "{}: this binary was built without wgpu; build it with `make build-wgpu` \
                 (cargo build --release --features wgpu; see README)",
                DeviceChoice::Wgpu(n)
            ),
        })
    }

    pub fn adapter(_: Option<usize>) -> Option<String> {
        None
    }

    pub fn adapters() -> Result<Vec<String>> {
        Ok(vec!["wgpu: not built in (make build-wgpu)".into()])
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    //! Opens a wgpu adapter through burn's fallible initialization (burn's lazy device panics
    //! where no adapter exists; we give an error naming what to install), once per choice: burn
    //! refuses to initialize one adapter twice, so the opened device is kept and handed out again.

    use std::sync::Mutex;

    use burn::backend::{CubeDevice, DispatchDevice, WgpuDeviceKind};
    use burn::tensor::wgpu::wgpu::{AdapterInfo, Backend};
    use burn::tensor::wgpu::{WgpuBackend, WgpuInitError};
    use burn::tensor::{DeviceKind, DeviceType};

    use super::*;

    /// What to install where wgpu finds no usable adapter.
    const INSTALL: &str = "wgpu needs a Vulkan driver (Linux: the GPU vendor's, or Mesa's \
        `mesa-vulkan-drivers` with the loader `libvulkan1`, whose lavapipe is a Vulkan device on \
        the CPU), Metal (macOS) or DirectX 12 (Windows)";

    /// The devices opened so far, with their adapters.
    static OPENED: Mutex<Vec<(Option<usize>, Device, AdapterInfo)>> = Mutex::new(Vec::new());

    fn unavailable(n: Option<usize>, what: String) -> Error {
        Error::Argument {
            op: "device",
            arg: "device",
            reason: format!("{}: {what}", DeviceChoice::Wgpu(n)),
        }
    }

    /// An adapter in one line: name, graphics API, kind and driver.
    fn line(a: &AdapterInfo) -> String {
        format!(
            "{}, {:?}, {:?}, {} {}",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        )
    }

    /// The adapters burn lists, in its order: how to select each, and the graphics API.
    fn listed() -> Vec<(DeviceKind, WgpuBackend)> {
        Device::enumerate(DeviceType::Wgpu)
            .iter()
            .filter_map(|d| match d.as_dispatch() {
                DispatchDevice::Cube(CubeDevice::Wgpu(w)) => {
                    let kind = match w.kind {
                        WgpuDeviceKind::DiscreteGpu(i) => DeviceKind::DiscreteGpu(i),
                        WgpuDeviceKind::IntegratedGpu(i) => DeviceKind::IntegratedGpu(i),
                        WgpuDeviceKind::VirtualGpu(i) => DeviceKind::VirtualGpu(i),
                        WgpuDeviceKind::Cpu => DeviceKind::Cpu,
                        _ => return None,
                    };
                    Some((kind, w.backend))
                }
                _ => None,
            })
            .collect()
    }

    /// Opens `n` (see [`DeviceChoice::Wgpu`]) and reads its adapter.
    fn open(n: Option<usize>) -> Result<(Device, AdapterInfo)> {
        let options = match n {
            None => Device::wgpu_options(),
            Some(i) => {
                let adapters = listed();
                let (kind, api) = adapters.get(i).cloned().ok_or_else(|| {
                    unavailable(
                        n,
                        format!(
                            "wgpu lists {} adapter(s) here (`weakalign devices` prints them){}",
                            adapters.len(),
                            if adapters.is_empty() {
                                format!("; {INSTALL}")
                            } else {
                                String::new()
                            }
                        ),
                    )
                })?;
                Device::wgpu_options().device_kind(kind).graphics_api(api)
            }
        };
        let (device, setup) = options.init_with_setup().map_err(|e| match e {
            WgpuInitError::AdapterUnavailable { .. } => {
                unavailable(n, format!("no graphics adapter found ({e}); {INSTALL}"))
            }
            other => unavailable(n, other.to_string()),
        })?;
        let adapter = setup.adapter.get_info();
        // wgpu's OpenGL backend is a fallback with limited compute support, and our checks run on
        // Vulkan: refuse it rather than train on it silently.
        if adapter.backend == Backend::Gl {
            return Err(unavailable(
                n,
                format!(
                    "the only adapter wgpu found is an OpenGL one ({}); {INSTALL}",
                    line(&adapter)
                ),
            ));
        }
        Ok((device, adapter))
    }

    pub fn device(n: Option<usize>) -> Result<Device> {
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, d, _)) = opened.iter().find(|(m, _, _)| *m == n) {
            return Ok(d.clone());
        }
        let (device, adapter) = open(n)?;
        opened.push((n, device.clone(), adapter));
        Ok(device)
    }

    pub fn adapter(n: Option<usize>) -> Option<String> {
        let opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        opened
            .iter()
            .find(|(m, _, _)| *m == n)
            .map(|(_, _, a)| line(a))
    }

    pub fn adapters() -> Result<Vec<String>> {
        (0..listed().len())
            .map(|i| {
                device(Some(i))?;
                Ok(format!(
                    "wgpu:{i}  {}",
                    adapter(Some(i)).unwrap_or_default()
                ))
            })
            .collect()
    }
}
