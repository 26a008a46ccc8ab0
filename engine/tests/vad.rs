//! Silero VAD in candle against onnxruntime on real read speech
//! (LibriVox, from Debian's pocketsphinx-testdata): the same probabilities
//! chunk by chunk, streaming equal to one-shot, and speech segments where
//! the reader speaks.

use std::sync::Arc;

use candle_core::Device;
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::vad::{CHUNK, SileroVad, VadConfig, VadEvent, VadSession};

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav";

fn model() -> Arc<SileroVad> {
    let manifest = Manifest::embedded().unwrap();
    let store = Store::new(default_home());
    let path = store.model_dir(&manifest.model("silero-vad").unwrap().id).join(OUTPUT);
    Arc::new(SileroVad::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{e}: run `tete models fetch` first")))
}

/// The clip as f32 in [-1, 1] (16 kHz mono 16-bit WAV: 44-byte header).
fn clip() -> Vec<f32> {
    let bytes = std::fs::read(CLIP).unwrap_or_else(|e| panic!("{CLIP}: {e} (apt-get install pocketsphinx-testdata)"));
    assert_eq!(&bytes[..4], b"RIFF");
    let data = bytes.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    bytes[data..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect()
}

fn reference() -> Vec<f32> {
    let text = include_str!("fixtures/silero_vad_0870.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["probs"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap() as f32).collect()
}

#[test]
fn probabilities_match_onnxruntime() {
    let mut session = VadSession::new(model(), VadConfig::default()).unwrap();
    let (_, probs) = session.push(&clip()).unwrap();
    let expected = reference();
    assert_eq!(probs.len(), expected.len());
    let max = probs.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{} chunks, max |candle - onnxruntime| = {max:e}", probs.len());
    // Tolerance 1e-4: f32 convolutions summed in a different order.
    for (i, (got, want)) in probs.iter().zip(&expected).enumerate() {
        assert!((got - want).abs() < 1e-4, "chunk {i}: candle {got} vs onnxruntime {want}");
    }
}

#[test]
fn streaming_in_odd_pieces_equals_one_shot_and_reset_starts_over() {
    let audio = clip();
    let mut one = VadSession::new(model(), VadConfig::default()).unwrap();
    let (events_one, probs_one) = one.push(&audio).unwrap();
    let mut streamed = VadSession::new(model(), VadConfig::default()).unwrap();
    let (mut events, mut probs) = (Vec::new(), Vec::new());
    for piece in audio.chunks(317) {
        let (e, p) = streamed.push(piece).unwrap();
        events.extend(e);
        probs.extend(p);
    }
    assert_eq!(probs, probs_one);
    assert_eq!(events, events_one);
    streamed.reset().unwrap();
    let (_, again) = streamed.push(&audio).unwrap();
    assert_eq!(again, probs_one);
}

#[test]
fn speech_segments_cover_the_reading() {
    let mut session = VadSession::new(model(), VadConfig::default()).unwrap();
    let (events, _) = session.push(&clip()).unwrap();
    let starts = events.iter().filter(|e| matches!(e, VadEvent::SpeechStarted { .. })).count();
    assert!(starts >= 1, "{events:?}");
    let VadEvent::SpeechStarted { at } = events[0] else { panic!("{events:?}") };
    // The reader starts within the first second.
    assert!(at < 16_000, "{events:?}");
    // Silence and garbage are not speech.
    let mut quiet = VadSession::new(model(), VadConfig::default()).unwrap();
    let (events, probs) = quiet.push(&vec![0.0; CHUNK * 30]).unwrap();
    assert!(events.is_empty() && probs.iter().all(|&p| p < 0.2), "{probs:?}");
    let (_, probs) = quiet.push(&vec![f32::NAN; CHUNK * 2]).unwrap();
    assert!(probs.iter().all(|p| p.is_finite()));
}
