//! Custom compute kernels.
//!
//! Each kernel has a CPU reference implementation (in [`cpu`]) that defines
//! its exact output; the GPU versions — CUDA sources in `kernels/cuda/`,
//! compiled through NVRTC with the `cuda` feature, and WGSL shaders in
//! `shaders/` run through wgpu by the engine — are tested against it.

pub mod blaze;
pub mod conv1d;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gate;
pub mod mel;
pub mod quant;
pub mod testdata;
pub mod vecmath;
#[cfg(feature = "vp8")]
pub mod vp8;
pub mod warp;

/// CUDA C sources of the project's kernels, by name.
pub const CUDA_SOURCES: &[(&str, &str)] = &[
    ("rgba_to_i420", include_str!("../cuda/rgba_to_i420.cu")),
    ("log_mel", include_str!("../cuda/log_mel.cu")),
    ("face_warp", include_str!("../cuda/face_warp.cu")),
];

/// Entry points of each CUDA source, checked in the compiled PTX.
pub const CUDA_ENTRY_POINTS: &[(&str, &[&str])] = &[
    ("rgba_to_i420", &["rgba_to_i420"]),
    ("log_mel", &["log_mel_frames", "log_mel_max", "log_mel_finish"]),
    ("face_warp", &["face_warp"]),
];

/// The tables the GPU log-mel kernels read: cos and sin of 2πi/400, the
/// Hann window, and the mel filters, as f32.
pub fn log_mel_tables() -> Vec<f32> {
    let mut t = Vec::with_capacity(3 * mel::N_FFT + mel::N_MELS * mel::N_BINS);
    let angle = |i: usize| 2.0 * std::f64::consts::PI * i as f64 / mel::N_FFT as f64;
    t.extend((0..mel::N_FFT).map(|i| angle(i).cos() as f32));
    t.extend((0..mel::N_FFT).map(|i| angle(i).sin() as f32));
    t.extend(mel::hann().iter().map(|&w| w as f32));
    t.extend(mel::mel_filters().iter().map(|&w| w as f32));
    t
}

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
    #[error("quantized matrix: {0}")]
    BadMatrix(String),
    #[error("depthwise convolution: {0}")]
    BadConvolution(String),
    #[error("bad frame record: {0}")]
    BadRecord(String),
    #[error("CUDA error: {0}")]
    Cuda(String),
}
