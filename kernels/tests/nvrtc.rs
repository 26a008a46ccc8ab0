//! The project's CUDA kernels compile to PTX through NVRTC (loaded at run
//! time; the nvidia-cuda-nvrtc wheel provides it with no GPU), and where a
//! CUDA device exists they match the CPU reference exactly.
#![cfg(feature = "cuda")]

use tete_kernels::{CUDA_ENTRY_POINTS, CUDA_SOURCES, cpu, cuda};

/// Set by the README's test command, which installs NVRTC: without it the
/// compile check cannot be skipped.
fn nvrtc_required() -> bool {
    std::env::var_os("TETE_REQUIRE_NVRTC").is_some_and(|v| v == "1")
}

#[test]
fn every_kernel_compiles_to_ptx() {
    if !cuda::nvrtc_present() {
        assert!(
            !nvrtc_required(),
            "TETE_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded: is its lib folder on LD_LIBRARY_PATH?"
        );
        eprintln!("libnvrtc not found: compile check not run (set TETE_REQUIRE_NVRTC=1 to make this an error)");
        return;
    }
    assert_eq!(CUDA_SOURCES.len(), CUDA_ENTRY_POINTS.len());
    for (name, entries) in CUDA_ENTRY_POINTS {
        let ptx = cuda::compile(name).unwrap_or_else(|e| panic!("{e}"));
        let src = ptx.to_src();
        for entry in *entries {
            assert!(src.contains(&format!(".entry {entry}")), "PTX of {name} has no entry point {entry}:\n{src}");
        }
    }
}

#[test]
fn compile_errors_carry_the_nvrtc_log() {
    if !cuda::nvrtc_present() {
        assert!(!nvrtc_required(), "TETE_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded");
        return;
    }
    let err = cuda::compile("no_such_kernel").unwrap_err().to_string();
    assert!(err.contains("no such kernel source"), "{err}");
}

#[test]
fn opening_a_device_without_a_driver_is_an_error_not_a_panic() {
    if cuda::driver_present() {
        return; // covered by the GPU test below
    }
    let err = cuda::CudaKernels::open(0).unwrap_err().to_string();
    assert!(err.contains("no NVIDIA driver"), "{err}");
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on a GPU host"]
fn rgba_to_i420_kernel_matches_the_cpu_reference() {
    let kernels = cuda::CudaKernels::open(0).expect("a CUDA device");
    for (w, h) in [(8u32, 2u32), (520, 66), (512, 512)] {
        let rgba: Vec<u32> = (0..w * h).map(|i| i.wrapping_mul(2654435761)).collect();
        let expected = cpu::rgba_to_i420(&rgba, w, h).unwrap();
        let got = kernels.rgba_to_i420(&rgba, w, h).unwrap();
        if let Some(i) = got.iter().zip(&expected).position(|(a, b)| a != b) {
            panic!("{w}x{h}: byte {i}: CUDA {} vs CPU {}", got[i], expected[i]);
        }
    }
}
