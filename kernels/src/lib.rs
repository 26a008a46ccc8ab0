//! Custom compute kernels.
//!
//! Each kernel has a CPU reference implementation (in [`cpu`]) that defines
//! its exact output; the GPU versions — CUDA sources in `kernels/cuda/`,
//! compiled through NVRTC with the `cuda` feature, and WGSL shaders in
//! `shaders/` run through wgpu by the engine — are tested against it.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

/// CUDA C sources of the project's kernels, by name.
pub const CUDA_SOURCES: &[(&str, &str)] = &[("rgba_to_i420", include_str!("../cuda/rgba_to_i420.cu"))];

/// Errors from kernel argument checks and the CUDA layer.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("frame size {width}x{height} is not supported: {reason}")]
    BadFrameSize { width: u32, height: u32, reason: &'static str },
    #[error("buffer holds {actual} elements, the {what} of a {width}x{height} frame needs {expected}")]
    BadBufferLength { what: &'static str, width: u32, height: u32, expected: usize, actual: usize },
    #[error("the CUDA driver library (libcuda) was not found: no NVIDIA driver is installed on this machine")]
    NoCudaDriver,
    #[error(
        "the NVRTC library (libnvrtc) was not found; install the CUDA toolkit or the nvidia-cuda-nvrtc wheel and put its lib folder on LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    #[error("CUDA kernel {name} failed to compile: {log}")]
    Compile { name: String, log: String },
    #[error("CUDA error: {0}")]
    Cuda(String),
}
