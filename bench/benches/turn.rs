//! Turn-taking costs on the real converted weights: one Smart Turn verdict
//! (features of the last 8 s, then the forward pass with the graph's uint8
//! activation round trips), and the endpoint detector's own bookkeeping per
//! 20 ms frame. Then the verdicts on the LibriVox clips as the silence
//! after them grows.
//! A verdict runs once per pause, not per frame; the printed figures put it
//! against the 200–300 ms endpoint budget.
//!
//! Needs the models (`tete models fetch`). Run: `cargo bench -p tete-bench --bench turn`

use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use tete_bench::harness::{clip, speech_end};
use tete_engine::features::LogMelCpu;
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::turn::{EndpointDetector, FRAMES, Patience, SmartTurn, TurnMode, window_features};

fn speech_like(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i as f32) * 0.07).sin() * 0.2 * ((i as f32) * 0.0005).sin().abs()).collect()
}

fn bench(c: &mut Criterion) {
    let manifest = Manifest::embedded().unwrap();
    let path = Store::new(default_home()).model_dir(&manifest.model("smart-turn-v3.2").unwrap().id).join(OUTPUT);
    let model = SmartTurn::load(&path, &Device::Cpu).expect("run `tete models fetch` first");
    let audio = speech_like(5 * 16_000);
    let mut mel = LogMelCpu::new();

    let mut group = c.benchmark_group("smart_turn");
    group.sample_size(10);
    group.bench_function("features_8s", |b| b.iter(|| window_features(&audio, &mut mel)));
    let features = Tensor::from_vec(window_features(&audio, &mut mel), (1, 80, FRAMES), &Device::Cpu).unwrap();
    group.bench_function("verdict", |b| b.iter(|| model.forward(&features).unwrap()));
    group.finish();

    c.bench_function("endpoint_detector_poll_20ms", |b| {
        let mut d = EndpointDetector::new(TurnMode::Smart, Patience::Medium);
        let mut now = 0u64;
        b.iter(|| {
            now += 320;
            if now.is_multiple_of(32_000) {
                d.speech_started();
            } else if now % 32_000 == 16_000 {
                d.speech_stopped(now);
            }
            d.poll(now)
        })
    });

    let n = 5;
    let start = Instant::now();
    for _ in 0..n {
        model.predict(&audio, &mut mel).unwrap();
    }
    let verdict = start.elapsed().as_secs_f64() / n as f64;
    println!(
        "smart turn: {:.1} ms per verdict (features + forward) = {:.0} % of a 250 ms endpoint budget; \
         amortised over 20 ms frames at one verdict per 400 ms of pause: {:.2} ms per frame",
        verdict * 1e3,
        verdict / 0.25 * 100.0,
        verdict * 1e3 * 20.0 / 400.0
    );
    clips_as_silence_grows(&model, &mut mel);
}

/// Smart Turn's P(end of turn) on each LibriVox clip the harness has, as
/// the silence after it grows: which clips a reader left unfinished.
fn clips_as_silence_grows(model: &SmartTurn, mel: &mut LogMelCpu) {
    const SILENCE_MS: [usize; 8] = [0, 96, 160, 192, 256, 400, 600, 800];
    println!("smart turn on the LibriVox clips, P(end of turn) after ms of silence {SILENCE_MS:?}:");
    for n in ["0870", "0880", "0890", "0920", "0930"] {
        let pcm = clip(&format!("sense_and_sensibility_01_austen_64kb-{n}.wav"));
        let speech = &pcm[..speech_end(&pcm)];
        let verdicts: Vec<String> = SILENCE_MS
            .iter()
            .map(|ms| {
                let mut audio = speech.to_vec();
                audio.resize(speech.len() + ms * 16, 0.0);
                format!("{:.2}", model.predict(&audio, mel).expect("verdict"))
            })
            .collect();
        println!("  {n}: {}", verdicts.join(" "));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
