//! The Piper voice (en_US joe medium) on candle: time to first audio for a
//! six-word sentence and the real-time factor of a paragraph, on the CPU
//! with rayon's thread count (`RAYON_NUM_THREADS`, else every core), which
//! both candle and the kernels crate's direct convolutions (every full
//! convolution of the voice, the flow's WaveNet and the whole HiFi-GAN
//! decoder) run on. Each figure is the best of five passes after a warm-up.
//!
//! With `python3 bench/piper_tts.py` run first (piper-tts on onnxruntime,
//! 2 threads; it writes `$TETE_HOME/bench/piper_tts.json`) it synthesises the
//! phoneme ids Piper itself produced for the same texts, so both sides run
//! the same model on the same input, and prints tete's times against
//! Piper's. Without it, the ids come from tete's own phonemizer and only
//! tete's times are printed.
//!
//! Time to first audio is the text encoder and durations for the sentence
//! plus the flow and decoder over the first streamed chunk (with their
//! context); Piper's is its whole first sentence, which is when it returns
//! audio.
//!
//! Run: `cargo bench -p tete-bench --bench tts`

use std::time::Instant;

use candle_core::Device;
use tete_engine::models::{Manifest, Store, default_home};
use tete_engine::tts::FIRST_CHUNK_FRAMES;
use tete_engine::tts::Voice;
use tete_engine::tts::phonemize::Phonemizer;
use tete_engine::tts::vits::{HOP, Scales};

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

/// The texts `bench/piper_tts.py` speaks.
const SENTENCE: &str = "Nice to meet you, my friend.";
const PARAGRAPH: &str = "Thanks for joining the call today. I looked at the numbers you sent over last week, \
    and the picture is better than I expected. Sales in the northern region grew by a fifth, while costs stayed \
    almost flat. If we keep this pace through the winter, we can hire two more people in the spring. Let me know \
    which of these points you would like to go through first.";

/// Piper's ids for `name` from its run, else tete's own for `text`.
fn ids(piper: Option<&serde_json::Value>, name: &str, text: &str, voice: &Voice) -> Vec<Vec<i64>> {
    if let Some(json) = piper {
        return json[name]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
            .collect();
    }
    let mut phonemizer = Phonemizer::new(&voice.config.espeak_voice).expect("espeak-ng");
    let sentences = phonemizer.phonemize(text).unwrap();
    sentences.iter().map(|s| voice.config.phoneme_ids.encode(&s.phonemes).ids).collect()
}

/// " against Piper's …" when Piper ran, else nothing.
fn against(piper: Option<&serde_json::Value>, what: impl FnOnce(&serde_json::Value) -> String) -> String {
    piper.map(what).unwrap_or_default()
}

fn main() {
    let manifest = Manifest::embedded().unwrap();
    let dir = Store::new(default_home()).model_dir(&manifest.model("piper-en_US-joe-medium").unwrap().id);
    let loaded = Voice::load(&dir, &Device::Cpu).expect("run `tete models fetch` first");
    let voice = &loaded.model;
    let path = default_home().join("bench").join("piper_tts.json");
    let piper: Option<serde_json::Value> =
        std::fs::read_to_string(&path).ok().and_then(|text| serde_json::from_str(&text).ok());
    println!("Piper en_US joe medium on candle, {} threads", candle_core::utils::get_num_threads());
    if piper.is_none() {
        println!("({} is missing: run `python3 bench/piper_tts.py` for Piper's figures)", path.display());
    }
    let piper = piper.as_ref();

    let sentence = &ids(piper, "sentence", SENTENCE, &loaded)[0];
    let (prepare, prepared) = best(|| voice.prepare(sentence, SCALES, 7).unwrap());
    let (first_chunk, _) = best(|| voice.decode_range(&prepared, 0, FIRST_CHUNK_FRAMES).unwrap());
    let (whole, _) = best(|| voice.decode(&voice.prepare(sentence, SCALES, 7).unwrap()).unwrap());
    let first = prepare + first_chunk;
    println!(
        "sentence ({} ids, {:.2} s of audio): encoder+durations {:.1} ms, first chunk ({} frames) {:.1} ms",
        sentence.len(),
        (prepared.frames() * HOP) as f64 / SAMPLE_RATE,
        prepare * 1e3,
        FIRST_CHUNK_FRAMES,
        first_chunk * 1e3
    );
    let vs_piper = against(piper, |p| {
        let piper_first = p["sentence"]["first_audio_seconds"].as_f64().unwrap();
        format!("; Piper/onnxruntime {:.1} ms; ratio tete/Piper {:.2}", piper_first * 1e3, first / piper_first)
    });
    println!(
        "  time to first audio {:.1} ms (goal ≤ 100 ms); whole sentence {:.1} ms{vs_piper}",
        first * 1e3,
        whole * 1e3,
    );

    let paragraph = ids(piper, "paragraph", PARAGRAPH, &loaded);
    let (seconds, samples) =
        best(|| paragraph.iter().map(|s| voice.synthesize(s, SCALES, 7).unwrap().0.len()).sum::<usize>());
    let audio = samples as f64 / SAMPLE_RATE;
    let rtf = seconds / audio;
    let vs_piper = against(piper, |p| {
        let piper_rtf = p["paragraph"]["rtf"].as_f64().unwrap();
        format!("; Piper/onnxruntime RTF {piper_rtf:.3}; ratio tete/Piper {:.2} (goal ≤ 1.0)", rtf / piper_rtf)
    });
    println!(
        "paragraph ({} sentences, {audio:.2} s of audio): {:.0} ms, RTF {rtf:.3}{vs_piper}",
        paragraph.len(),
        seconds * 1e3,
    );
}
