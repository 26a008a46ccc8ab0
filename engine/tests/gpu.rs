//! The WGSL shaders run for real on a wgpu adapter (Mesa's lavapipe on
//! machines without a GPU) and must match their CPU references exactly.
//! With no adapter these tests fail: they never pass silently.

use tete_engine::gpu::{AdapterKind, Gpu, RgbaToI420};
use tete_engine::{DeviceRequest, Devices, Primary};
use tete_kernels::cpu;

fn gpu() -> Gpu {
    Gpu::open(AdapterKind::Any).unwrap_or_else(|e| panic!("no wgpu adapter: {e}"))
}

/// A deterministic frame with gradients, saturated colours and noise, so
/// every branch of the conversion (clamping included) is exercised.
fn frame(width: u32, height: u32, seed: u32) -> Vec<u32> {
    let mut state = seed.wrapping_mul(2654435761) | 1;
    (0..width * height)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let (x, y) = (i % width, i / width);
            match (x / 8 + y / 8) % 4 {
                0 => state,                                                         // noise
                1 => (x * 255 / width) | ((y * 255 / height) << 8) | (0x80 << 16),  // gradient
                2 => [0x0000ff, 0x00ff00, 0xff0000, 0xffffff, 0][(i % 5) as usize], // primaries
                _ => state & 0x00ff00ff,
            }
        })
        .collect()
}

fn assert_same(gpu_out: &[u8], cpu_out: &[u8], what: &str) {
    assert_eq!(gpu_out.len(), cpu_out.len(), "{what}: lengths differ");
    if let Some(i) = gpu_out.iter().zip(cpu_out).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}: GPU {} vs CPU reference {}", gpu_out[i], cpu_out[i]);
    }
}

#[test]
fn rgba_to_i420_shader_matches_the_cpu_reference() {
    let gpu = gpu();
    eprintln!("adapter: {}", gpu.describe());
    let conv = RgbaToI420::new(&gpu);
    // Tolerance: zero. Both sides use the same integer arithmetic.
    for (w, h, seed) in [(8, 2, 1), (64, 48, 2), (520, 66, 3), (512, 512, 4)] {
        let rgba = frame(w, h, seed);
        let expected = cpu::rgba_to_i420(&rgba, w, h).unwrap();
        let got = conv.convert(&gpu, &rgba, w, h).unwrap();
        assert_same(&got, &expected, &format!("{w}x{h}"));
    }
}

#[test]
fn shader_rejects_frames_it_cannot_convert() {
    let gpu = gpu();
    let conv = RgbaToI420::new(&gpu);
    let err = conv.convert(&gpu, &[0; 12], 6, 2).unwrap_err().to_string();
    assert!(err.contains("multiple of 8"), "{err}");
    let err = conv.convert(&gpu, &[0; 10], 8, 2).unwrap_err().to_string();
    assert!(err.contains("needs 16"), "{err}");
}

#[test]
fn device_selection_reports_its_choice() {
    let devices = Devices::select(DeviceRequest::Cpu).unwrap();
    assert_eq!(devices.primary, Primary::Cpu);
    assert!(devices.candle.is_cpu());
    let gpu = devices.gpu.as_ref().expect("a render adapter is opened even for --device cpu");
    assert!(
        devices.report.iter().any(|l| l.starts_with("render adapter:") && l.contains(&gpu.info.name)),
        "{:?}",
        devices.report
    );

    let wgpu = Devices::select(DeviceRequest::Wgpu).unwrap();
    assert!(matches!(wgpu.primary, Primary::Wgpu(_)));

    // auto on a machine without CUDA or a hardware GPU: CPU, and it says why.
    let auto = Devices::select(DeviceRequest::Auto).unwrap();
    let report = auto.report.join("\n");
    assert!(report.contains("CUDA not used"), "{report}");
    if gpu.is_software() {
        assert_eq!(auto.primary, Primary::Cpu, "{report}");
        assert!(report.contains("no hardware GPU"), "{report}");
    }
}
