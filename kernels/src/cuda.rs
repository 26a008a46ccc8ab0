//! The CUDA layer: NVRTC compilation of the project's `.cu` sources and
//! kernel launches through cudarc. The driver and NVRTC are loaded at run
//! time, so this builds on machines without a CUDA toolkit and reports a
//! clear error where the libraries are missing.
//!
//! All `unsafe` in the project lives here and in the rest of `kernels/`.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileError, Ptx};

use crate::{CUDA_SOURCES, KernelError, cpu};

/// Whether libcuda (the NVIDIA driver) can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: is_culib_present only tries to dlopen the library by name and
    // drops the handle; it calls no function of the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether libnvrtc can be loaded on this machine.
pub fn nvrtc_present() -> bool {
    // SAFETY: as for `driver_present`: a dlopen probe only.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one of the project's kernels (by name, see [`CUDA_SOURCES`]) to PTX.
pub fn compile(name: &str) -> Result<Ptx, KernelError> {
    if !nvrtc_present() {
        return Err(KernelError::NoNvrtc);
    }
    let (_, src) = CUDA_SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| KernelError::Compile { name: name.into(), log: "no such kernel source".into() })?;
    cudarc::nvrtc::compile_ptx(src).map_err(|e| KernelError::Compile {
        name: name.into(),
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        },
    })
}

/// One CUDA device with the project's kernels loaded.
pub struct CudaKernels {
    stream: Arc<CudaStream>,
    rgba_to_i420: CudaFunction,
    face_warp: CudaFunction,
    name: String,
}

impl std::fmt::Debug for CudaKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKernels").field("device", &self.name).finish()
    }
}

fn cuda_err(e: impl std::fmt::Display) -> KernelError {
    KernelError::Cuda(e.to_string())
}

impl CudaKernels {
    /// Opens CUDA device `ordinal` and loads the kernels. Fails with
    /// [`KernelError::NoCudaDriver`] where no driver is installed (instead of
    /// cudarc's panic), and with a CUDA error where the ordinal does not exist.
    pub fn open(ordinal: usize) -> Result<Self, KernelError> {
        if !driver_present() {
            return Err(KernelError::NoCudaDriver);
        }
        let count = CudaContext::device_count().map_err(cuda_err)?;
        if ordinal >= count.max(0) as usize {
            return Err(KernelError::Cuda(format!("CUDA device {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
        let name = ctx.name().map_err(cuda_err)?;
        let module = ctx.load_module(compile("rgba_to_i420")?).map_err(cuda_err)?;
        let rgba_to_i420 = module.load_function("rgba_to_i420").map_err(cuda_err)?;
        let module = ctx.load_module(compile("face_warp")?).map_err(cuda_err)?;
        let face_warp = module.load_function("face_warp").map_err(cuda_err)?;
        Ok(Self { stream: ctx.default_stream(), rgba_to_i420, face_warp, name })
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// RGBA8 → I420 on the device; same contract as [`cpu::rgba_to_i420`].
    pub fn rgba_to_i420(&self, rgba: &[u32], width: u32, height: u32) -> Result<Vec<u8>, KernelError> {
        cpu::check_i420_frame(width, height)?;
        let pixels = width as usize * height as usize;
        if rgba.len() != pixels {
            return Err(KernelError::BadBufferLength {
                what: "RGBA input",
                width,
                height,
                expected: pixels,
                actual: rgba.len(),
            });
        }
        let input = self.stream.clone_htod(rgba).map_err(cuda_err)?;
        let mut output = self.stream.alloc_zeros::<u8>(cpu::i420_len(width, height)).map_err(cuda_err)?;
        let (cw, ch) = (width / 2, height / 2);
        let cfg = LaunchConfig {
            grid_dim: (cw.div_ceil(16), ch.div_ceil(16), 1),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        };
        let (w, h) = (width as i32, height as i32);
        let mut launch = self.stream.launch_builder(&self.rgba_to_i420);
        launch.arg(&input).arg(&mut output).arg(&w).arg(&h);
        // SAFETY: the kernel reads width*height u32 from `input` (its length was
        // checked above) and writes i420_len(width, height) bytes to `output`
        // (allocated with that length); threads outside the (width/2, height/2)
        // chroma grid return before touching memory, so the rounded-up grid
        // never indexes past either buffer.
        unsafe { launch.launch(cfg) }.map_err(cuda_err)?;
        self.stream.clone_dtoh(&output).map_err(cuda_err)
    }

    /// The talking-head warp on the device; same contract as [`crate::warp::render`].
    pub fn face_warp(&self, record: &[u32], portrait: &[u32]) -> Result<Vec<u32>, KernelError> {
        let pixels = portrait.len();
        let (width, height) = crate::warp::check(record, pixels, pixels)?;
        let record_d = self.stream.clone_htod(record).map_err(cuda_err)?;
        let portrait_d = self.stream.clone_htod(portrait).map_err(cuda_err)?;
        let mut output = self.stream.alloc_zeros::<u32>(pixels).map_err(cuda_err)?;
        let cfg = LaunchConfig {
            grid_dim: (width.div_ceil(16), height.div_ceil(16), 1),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.face_warp);
        launch.arg(&record_d).arg(&portrait_d).arg(&mut output);
        // SAFETY: `check` verified the record holds RECORD_WORDS words with at
        // most MAX_POINTS points and MAX_MOUTH vertices (the kernel reads no
        // further), and that portrait and output hold width*height pixels;
        // threads outside the frame return before touching memory, and every
        // sample index is clamped into the frame.
        unsafe { launch.launch(cfg) }.map_err(cuda_err)?;
        self.stream.clone_dtoh(&output).map_err(cuda_err)
    }
}
