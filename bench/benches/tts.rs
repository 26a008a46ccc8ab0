//! The Piper voice (en_US joe medium) on candle: time to first audio for a
//! six-word sentence and the real-time factor of a paragraph, on the CPU
//! with rayon's thread count (`RAYON_NUM_THREADS`, else every core), which
//! both candle and the kernels crate's direct convolutions (every full
//! convolution of the voice, the flow's WaveNet and the whole HiFi-GAN
//! decoder) run on. Each figure is the best of five passes after a warm-up.
//!
//! It synthesises the phoneme ids Piper itself produced for the same texts,
//! so both sides run the same model on the same input: run
//! `python3 bench/piper_tts.py` first (piper-tts on onnxruntime, 2 threads;
//! it writes `$TETE_HOME/bench/piper_tts.json`), and this prints tete's
//! times against Piper's.
//!
//! Time to first audio is the text encoder and durations for the sentence
//! plus the flow and decoder over the first streamed chunk (with their
//! context); Piper's is its whole first sentence, which is when it returns
//! audio.
//!
//! Run: `cargo bench -p tete-bench --bench tts`

use std::time::Instant;

use candle_core::Device;
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::tts::vits::{HOP, Scales, Vits};
use tete_engine::tts::FIRST_CHUNK_FRAMES;

const PASSES: usize = 5;
const SAMPLE_RATE: f64 = 22_050.0;
/// Piper's defaults for this voice.
const SCALES: Scales = Scales { noise_scale: 0.667, length_scale: 1.0, noise_w: 0.8 };

fn best<T>(mut run: impl FnMut() -> T) -> (f64, T) {
    let mut out = run(); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..PASSES {
        let start = Instant::now();
        out = run();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, out)
}

fn ids(json: &serde_json::Value, name: &str) -> Vec<Vec<i64>> {
    json[name]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
        .collect()
}

fn main() {
    let manifest = Manifest::embedded().unwrap();
    let dir = Store::new(default_home()).model_dir(&manifest.model("piper-en_US-joe-medium").unwrap().id);
    let voice = Vits::load(&dir.join(OUTPUT), &Device::Cpu).expect("run `tete models fetch` first");
    let path = default_home().join("bench").join("piper_tts.json");
    let piper: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("{}: run `python3 bench/piper_tts.py` first", path.display()));
    println!("Piper en_US joe medium on candle, {} threads", candle_core::utils::get_num_threads());

    let sentence = &ids(&piper, "sentence")[0];
    let (prepare, prepared) = best(|| voice.prepare(sentence, SCALES, 7).unwrap());
    let (first_chunk, _) = best(|| voice.decode_range(&prepared, 0, FIRST_CHUNK_FRAMES).unwrap());
    let (whole, _) = best(|| voice.decode(&voice.prepare(sentence, SCALES, 7).unwrap()).unwrap());
    let first = prepare + first_chunk;
    let piper_first = piper["sentence"]["first_audio_seconds"].as_f64().unwrap();
    println!(
        "sentence ({} ids, {:.2} s of audio): encoder+durations {:.1} ms, first chunk ({} frames) {:.1} ms",
        sentence.len(),
        (prepared.frames() * HOP) as f64 / SAMPLE_RATE,
        prepare * 1e3,
        FIRST_CHUNK_FRAMES,
        first_chunk * 1e3
    );
    println!(
        "  time to first audio {:.1} ms (goal ≤ 100 ms); whole sentence {:.1} ms; Piper/onnxruntime {:.1} ms; ratio tete/Piper {:.2}",
        first * 1e3,
        whole * 1e3,
        piper_first * 1e3,
        first / piper_first
    );

    let paragraph = ids(&piper, "paragraph");
    let (seconds, samples) = best(|| {
        paragraph.iter().map(|s| voice.synthesize(s, SCALES, 7).unwrap().0.len()).sum::<usize>()
    });
    let audio = samples as f64 / SAMPLE_RATE;
    let piper_rtf = piper["paragraph"]["rtf"].as_f64().unwrap();
    println!(
        "paragraph ({} sentences, {audio:.2} s of audio): {:.0} ms, RTF {:.3}; Piper/onnxruntime RTF {:.3}; ratio tete/Piper {:.2} (goal ≤ 1.0)",
        paragraph.len(),
        seconds * 1e3,
        seconds / audio,
        piper_rtf,
        (seconds / audio) / piper_rtf
    );
}
