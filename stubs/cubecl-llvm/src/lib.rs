//! A stand-in for `cubecl-llvm` 0.11.3 with no LLVM behind it (see `Cargo.toml` for why).
//!
//! It exports the items `cubecl-cuda` names: the compiler type and its options and artifacts,
//! the PTX-version table lookup, and the device-feature narrowing of the LLVM path. With
//! cubecl's `cuda-cpp` feature the CUDA runtime compiles kernels through NVRTC and never calls
//! into this crate's compiler; if something does, it gets a compilation error saying so.

use cubecl_core::ir::DeviceProperties;
use cubecl_core::ir::amd::GfxArch;
#[cfg(feature = "nvptx")]
use cubecl_core::ir::nvidia::SmArch;
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::compiler::{CompilationError, Compiler};
use cubecl_runtime::kernel::{BufferIOAttr, KernelDefinition};

/// Where LLVM code would be generated for.
pub mod target {
    /// The LLVM targets of the real crate.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum LlvmTarget {
        /// Host code.
        #[default]
        Cpu,
        /// NVIDIA PTX.
        #[cfg(feature = "nvptx")]
        Nvptx,
    }
}

pub use target::LlvmTarget;

/// NVPTX specifics.
pub mod nvptx {
    /// PTX ISA versions.
    pub mod ptx_version {
        use std::fmt;

        /// A PTX ISA version (`ptx90` = 9.0).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct PtxVersion(pub u32);

        impl PtxVersion {
            /// The PTX version the LLVM backend would emit for a driver. Only the LLVM backend
            /// reads it, so the stand-in has no table and answers `None` (emit nothing special).
            pub fn for_driver(_driver: i32) -> Option<Self> {
                None
            }
        }

        impl fmt::Display for PtxVersion {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "ptx{}", self.0)
            }
        }
    }
}

/// Items shared by the real crate's targets.
pub mod shared {
    /// Device features the LLVM backend can lower.
    pub mod lowered_features {
        use super::super::DeviceProperties;

        /// The GPU target whose features would be narrowed.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            /// NVIDIA PTX.
            #[cfg(feature = "nvptx")]
            Nvptx,
        }

        /// The real crate removes the features its LLVM lowering lacks; the CUDA runtime calls it
        /// only when its LLVM backend is selected, which `cuda-cpp` never does. No change.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
    }
}

/// The compiler of the LLVM path.
#[derive(Clone, Debug)]
pub struct PlironCompiler {
    /// Target of the generated code.
    pub target: LlvmTarget,
}

/// Its options (the fields the CUDA runtime sets).
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMD architecture.
    pub arch: Option<GfxArch>,
    /// NVIDIA architecture.
    #[cfg(feature = "nvptx")]
    pub sm_arch: Option<SmArch>,
    /// PTX version to emit.
    #[cfg(feature = "nvptx")]
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    /// Pass scalars in the kernel parameter block.
    pub grid_constants: bool,
}

/// A compiled PTX module (never produced by the stand-in).
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX assembly.
    pub ptx: Vec<core::ffi::c_char>,
    /// Kernel entry point symbol.
    pub entrypoint: String,
    /// IR for logging and cache keys.
    pub ir: String,
    /// Shared memory per launch, in bytes.
    pub shared_memory_size: usize,
    /// Buffer access modes in binding order.
    pub io: Vec<BufferIOAttr>,
}

/// What the compiler produces.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    /// PTX.
    NvptxCode(NvptxModule),
    /// Any other target's code (kept so that matching code written for the real crate compiles).
    Other,
}

impl std::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlironArtifact::NvptxCode(m) => write!(f, "{}", m.ir),
            PlironArtifact::Other => write!(f, "<no code>"),
        }
    }
}

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &Self::CompilationOptions,
    ) -> Result<Self::Representation, CompilationError> {
        Err(CompilationError::Generic {
            reason: "this build has no LLVM kernel compiler (weakalign's offline CUDA build \
                     compiles kernels with NVRTC: cubecl's `cuda-cpp` feature)"
                .into(),
            backtrace: BackTrace::capture(),
        })
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}
