//! Device selection: the one place that turns `--device auto|cpu|cuda[:N]|wgpu`
//! into a candle [`candle_core::Device`] for model math, a wgpu [`Gpu`] for
//! rendering and pre/post-processing, and (with the `cuda` feature) the
//! project's CUDA kernels — and says what it picked and why.

use std::fmt;
use std::str::FromStr;

use crate::gpu::{AdapterKind, Gpu};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CUDA if compiled in and present, else a hardware wgpu adapter, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Wgpu,
}

impl FromStr for DeviceRequest {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceError::Parse(s.to_string());
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Wgpu => f.write_str("wgpu"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected auto, cpu, cuda, cuda:N or wgpu")]
    Parse(String),
    #[error(
        "CUDA was requested but this build has no CUDA support: rebuild with `--features cuda` (custom kernels) or `--features candle-cuda` (also candle's CUDA backend, needs nvcc)"
    )]
    CudaNotCompiled,
    #[error("CUDA device {ordinal} was requested but cannot be used: {source}")]
    Cuda { ordinal: usize, source: tete_kernels::KernelError },
    #[error(
        "no {kind:?} wgpu adapter found (adapters seen: {seen}); on a machine without a GPU install Mesa's lavapipe (Debian: mesa-vulkan-drivers libvulkan1)"
    )]
    NoAdapter { kind: AdapterKind, seen: String },
    #[error("wgpu: {0}")]
    Wgpu(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Kernel(tete_kernels::KernelError),
}

/// The primary compute device chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primary {
    Cuda(usize),
    Wgpu(String),
    Cpu,
}

/// What the engine runs on.
#[derive(Debug)]
pub struct Devices {
    pub primary: Primary,
    /// Where model math runs.
    pub candle: candle_core::Device,
    /// Where rendering and pre/post-processing shaders run; `None` only when
    /// no wgpu adapter exists at all (then the renderer cannot start).
    pub gpu: Option<Gpu>,
    /// The project's CUDA kernels, when running on CUDA.
    #[cfg(feature = "cuda")]
    pub cuda: Option<tete_kernels::cuda::CudaKernels>,
    /// One line a decision, for the start-up log.
    pub report: Vec<String>,
}

impl Devices {
    /// Selects devices for a request. An explicit request that cannot be met
    /// is an error; `auto` falls back and says why.
    pub fn select(request: DeviceRequest) -> Result<Self, DeviceError> {
        let mut report = vec![format!("device request: {request}")];
        match request {
            DeviceRequest::Cpu => {
                let gpu = render_gpu(&mut report, AdapterKind::Any);
                report.push("model math: CPU (requested)".into());
                Ok(Self::cpu(gpu, report))
            }
            DeviceRequest::Wgpu => {
                let gpu = Gpu::open(AdapterKind::Any)?;
                report.push(format!("wgpu adapter: {}", gpu.describe()));
                report.push("model math: CPU (candle has no wgpu backend; shaders run on the adapter)".into());
                Ok(Self { primary: Primary::Wgpu(gpu.describe()), ..Self::cpu(Some(gpu), report) })
            }
            DeviceRequest::Cuda(ordinal) => {
                let gpu = render_gpu(&mut report, AdapterKind::Any);
                Self::cuda(ordinal, gpu, report)
            }
            DeviceRequest::Auto => {
                if cfg!(feature = "cuda") {
                    match Self::cuda(0, None, report.clone()) {
                        Ok(mut devices) => {
                            devices.gpu = render_gpu(&mut devices.report, AdapterKind::Any);
                            return Ok(devices);
                        }
                        Err(e) => report.push(format!("CUDA not used: {e}")),
                    }
                } else {
                    report.push("CUDA not used: this build has no `cuda` feature".into());
                }
                match Gpu::open(AdapterKind::Hardware) {
                    Ok(gpu) => {
                        report.push(format!("hardware wgpu adapter: {}", gpu.describe()));
                        report.push("model math: CPU (candle has no wgpu backend)".into());
                        Ok(Self { primary: Primary::Wgpu(gpu.describe()), ..Self::cpu(Some(gpu), report) })
                    }
                    Err(e) => {
                        report.push(format!("no hardware GPU: {e}"));
                        let gpu = render_gpu(&mut report, AdapterKind::Any);
                        report.push("model math: CPU".into());
                        Ok(Self::cpu(gpu, report))
                    }
                }
            }
        }
    }

    fn cpu(gpu: Option<Gpu>, report: Vec<String>) -> Self {
        Self {
            primary: Primary::Cpu,
            candle: candle_core::Device::Cpu,
            gpu,
            #[cfg(feature = "cuda")]
            cuda: None,
            report,
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(_ordinal: usize, _gpu: Option<Gpu>, _report: Vec<String>) -> Result<Self, DeviceError> {
        Err(DeviceError::CudaNotCompiled)
    }

    #[cfg(feature = "cuda")]
    fn cuda(ordinal: usize, gpu: Option<Gpu>, mut report: Vec<String>) -> Result<Self, DeviceError> {
        let kernels =
            tete_kernels::cuda::CudaKernels::open(ordinal).map_err(|source| DeviceError::Cuda { ordinal, source })?;
        report.push(format!("CUDA device {ordinal}: {}", kernels.device_name()));
        let candle = if cfg!(feature = "candle-cuda") {
            report.push(format!("model math: candle CUDA backend on device {ordinal}"));
            candle_core::Device::new_cuda(ordinal)?
        } else {
            report.push(
                "model math: CPU (candle's CUDA backend not compiled: build with `--features candle-cuda`)".into(),
            );
            candle_core::Device::Cpu
        };
        Ok(Self { primary: Primary::Cuda(ordinal), candle, gpu, cuda: Some(kernels), report })
    }
}

/// Opens a wgpu adapter for rendering, recording the outcome; rendering is
/// needed on every device, so a software adapter is accepted.
fn render_gpu(report: &mut Vec<String>, kind: AdapterKind) -> Option<Gpu> {
    match Gpu::open(kind) {
        Ok(gpu) => {
            report.push(format!("render adapter: {}", gpu.describe()));
            Some(gpu)
        }
        Err(e) => {
            report.push(format!("render adapter: none ({e})"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceRequest>().unwrap(), DeviceRequest::Auto);
        assert_eq!("CPU".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!("cuda".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cuda(3));
        assert_eq!("wgpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Wgpu);
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda:-1", "metal"] {
            let err = bad.parse::<DeviceRequest>().unwrap_err().to_string();
            assert!(err.contains("expected auto, cpu, cuda"), "{bad:?} gave {err}");
        }
    }

    #[test]
    fn cuda_request_without_a_driver_is_a_clear_error() {
        let result = Devices::select(DeviceRequest::Cuda(0));
        #[cfg(feature = "cuda")]
        if tete_kernels::cuda::driver_present() {
            // A GPU host: the request must succeed and say so.
            let devices = result.expect("CUDA device 0 on a host with a driver");
            assert_eq!(devices.primary, Primary::Cuda(0));
            return;
        }
        let msg = result.unwrap_err().to_string();
        if cfg!(feature = "cuda") {
            assert!(msg.contains("no NVIDIA driver"), "{msg}");
        } else {
            assert!(msg.contains("no CUDA support"), "{msg}");
        }
    }
}
