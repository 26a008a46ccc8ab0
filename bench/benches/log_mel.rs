//! Whisper log-mel features of 8 s of audio (Smart Turn's input, 80 × 800):
//! the f64 CPU reference, the engine's CPU path (real FFT, sparse filters)
//! and the WGSL shader on the wgpu adapter
//! (upload, three dispatches and readback; the readback waits for the
//! device, so the clock stops after the work is done).
//!
//! Run: `cargo bench -p tete-bench --bench log_mel`

use criterion::{Criterion, criterion_group, criterion_main};
use tete_engine::gpu::{AdapterKind, Gpu, LogMel};
use tete_kernels::mel;

fn bench(c: &mut Criterion) {
    let audio: Vec<f32> = (0..128_000)
        .map(|i| ((i as f32) * 0.031).sin() * 0.2 + ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.05)
        .collect();
    let mut group = c.benchmark_group("log_mel_8s");
    group.sample_size(10);
    group.bench_function("cpu_reference_f64", |b| b.iter(|| mel::log_mel(&audio, true)));
    let mut fast = tete_engine::features::LogMelCpu::new();
    group.bench_function("cpu_realfft", |b| b.iter(|| fast.compute(&audio, true)));
    let gpu = Gpu::open(AdapterKind::Any).expect("a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("wgpu adapter: {}", gpu.describe());
    let log_mel = LogMel::new(&gpu);
    group.bench_function("wgsl", |b| b.iter(|| log_mel.compute(&gpu, &audio, true).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
