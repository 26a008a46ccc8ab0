//! Silero VAD, one 32 ms chunk (512 samples at 16 kHz) per step, on the
//! real converted weights: the time of a step against the 32 ms of audio
//! it scores (the real-time factor is printed).
//!
//! Needs the models (`tete models fetch`). Run: `cargo bench -p tete-bench --bench vad`

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::vad::{CHUNK, SileroVad};

fn bench(c: &mut Criterion) {
    let manifest = Manifest::embedded().unwrap();
    let path = Store::new(default_home()).model_dir(&manifest.model("silero-vad").unwrap().id).join(OUTPUT);
    let model = Arc::new(SileroVad::load(&path, &candle_core::Device::Cpu).expect("run `tete models fetch` first"));
    let chunk: [f32; CHUNK] = std::array::from_fn(|i| ((i as f32) * 0.05).sin() * 0.3);
    let mut state = model.new_state().unwrap();
    c.bench_function("silero_vad_step_512", |b| b.iter(|| model.step(&chunk, &mut state).unwrap()));

    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        model.step(&chunk, &mut state).unwrap();
    }
    let per_step = start.elapsed().as_secs_f64() / n as f64;
    println!("silero VAD: {:.3} ms per 32 ms chunk, real-time factor {:.4}", per_step * 1e3, per_step / 0.032);
}

criterion_group!(benches, bench);
criterion_main!(benches);
