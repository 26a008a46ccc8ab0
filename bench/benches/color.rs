//! RGBA → I420 for the H.264 encoder, 512×512 (the default video size):
//! the CPU reference against the WGSL shader on the wgpu adapter (lavapipe
//! on machines without a GPU). The GPU figure includes upload, dispatch and
//! readback, and the readback waits for the device, so the clock is read
//! only after the work is done.
//!
//! Run: `cargo bench -p tete-bench --bench color`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tete_engine::gpu::{AdapterKind, Gpu, RgbaToI420};
use tete_kernels::cpu;

const W: u32 = 512;
const H: u32 = 512;

fn frame() -> Vec<u32> {
    (0..W * H).map(|i| i.wrapping_mul(2654435761)).collect()
}

fn bench(c: &mut Criterion) {
    let rgba = frame();
    let mut group = c.benchmark_group("rgba_to_i420_512");
    group.throughput(Throughput::Elements(u64::from(W * H)));
    group.bench_function("cpu_reference", |b| b.iter(|| cpu::rgba_to_i420(&rgba, W, H).unwrap()));
    let gpu = Gpu::open(AdapterKind::Any).expect("a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("wgpu adapter: {}", gpu.describe());
    let conv = RgbaToI420::new(&gpu);
    group.bench_function("wgpu_shader_with_readback", |b| b.iter(|| conv.convert(&gpu, &rgba, W, H).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
