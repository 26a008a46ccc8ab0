//! The Piper voice (en_US joe medium) on candle against onnxruntime, with the
//! real weights `tete models fetch piper-en_US-joe-medium` converts.
//!
//! With both noise scales at 0 the voice is deterministic, so the port must
//! give the same durations (frames per phoneme id, exactly) and the same
//! waveform as the ONNX graph (fixture from
//! `fixtures/piper_vits_reference.py`).

mod common;

use std::sync::OnceLock;

use base64::Engine as _;
use candle_core::Device;
use common::{missing, model_path};
use tete_engine::tts::vits::{HOP, Scales, Vits, VitsError};

fn voice() -> &'static Vits {
    static VOICE: OnceLock<Vits> = OnceLock::new();
    VOICE.get_or_init(|| Vits::load(&model_path("piper-en_US-joe-medium"), &Device::Cpu).unwrap_or_else(missing))
}

struct Case {
    phonemes: String,
    ids: Vec<i64>,
    durations: Vec<u32>,
    audio: Vec<f32>,
}

fn reference() -> Vec<Case> {
    let text = include_str!("fixtures/piper_vits_reference.json");
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(json["scales"], serde_json::json!([0.0, 1.0, 0.0]));
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(c["audio_f32le_base64"].as_str().unwrap()).unwrap();
            Case {
                phonemes: c["phonemes"].as_str().unwrap().to_string(),
                ids: c["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect(),
                durations: c["durations"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
                audio: bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            }
        })
        .collect()
}

#[test]
fn matches_onnxruntime_with_noise_off() {
    for case in reference() {
        let (audio, durations) = voice().synthesize(&case.ids, Scales::DETERMINISTIC, 0).unwrap();
        assert_eq!(durations, case.durations, "durations of {}", case.phonemes);
        assert_eq!(audio.len(), case.audio.len());
        let max = audio.iter().zip(&case.audio).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let err: f32 = audio.iter().zip(&case.audio).map(|(a, b)| (a - b) * (a - b)).sum();
        let energy: f32 = case.audio.iter().map(|b| b * b).sum();
        let snr = 10.0 * (energy / err.max(f32::MIN_POSITIVE)).log10();
        println!("{}: max |diff| {max:.2e}, SNR {snr:.1} dB", case.phonemes);
        assert!(max < 2e-4, "max |diff| {max} for {}", case.phonemes);
        assert!(snr > 70.0, "SNR {snr} dB for {}", case.phonemes);
    }
}

#[test]
fn chunked_decoding_joins_without_seams() {
    let case = &reference()[1];
    let prepared = voice().prepare(&case.ids, Scales::DETERMINISTIC, 0).unwrap();
    let whole = voice().decode(&prepared).unwrap();
    let frames = prepared.frames();
    let mut joined = Vec::new();
    // Uneven chunk sizes, the first one short as streaming starts it.
    let mut start = 0;
    for size in [7, 16, 33, 64, 64, 64].iter().cycle() {
        if start >= frames {
            break;
        }
        let end = (start + size).min(frames);
        let chunk = voice().decode_range(&prepared, start, end).unwrap();
        assert_eq!(chunk.len(), (end - start) * HOP);
        joined.extend(chunk);
        start = end;
    }
    assert_eq!(joined.len(), whole.len());
    let max = joined.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("chunked vs whole: max |diff| {max:.2e}");
    assert!(max < 1e-6, "chunk joins differ from the whole decode by {max}");
}

#[test]
fn noise_and_speed_change_what_they_should() {
    let ids = &reference()[0].ids;
    let base = Scales { noise_scale: 0.667, length_scale: 1.0, noise_w: 0.8 };
    let (a, da) = voice().synthesize(ids, base, 1).unwrap();
    let (b, _) = voice().synthesize(ids, base, 1).unwrap();
    assert_eq!(a, b, "same seed, same audio");
    let (c, _) = voice().synthesize(ids, base, 2).unwrap();
    assert_ne!(a, c, "another seed varies the rendition");
    let slow = Scales { length_scale: 1.5, ..base };
    let (_, ds) = voice().synthesize(ids, slow, 1).unwrap();
    let (total, total_slow) = (da.iter().sum::<u32>() as f32, ds.iter().sum::<u32>() as f32);
    assert!(total_slow > 1.3 * total, "length_scale 1.5 gave {total_slow} frames against {total}");
}

#[test]
fn bad_ids_and_scales_are_errors() {
    assert!(matches!(voice().prepare(&[], Scales::DETERMINISTIC, 0), Err(VitsError::Empty)));
    assert!(matches!(voice().prepare(&[1, 256, 2], Scales::DETERMINISTIC, 0), Err(VitsError::UnknownId(256))));
    assert!(matches!(voice().prepare(&[1, -3, 2], Scales::DETERMINISTIC, 0), Err(VitsError::UnknownId(-3))));
    let bad = Scales { length_scale: f32::NAN, ..Scales::DETERMINISTIC };
    assert!(matches!(voice().prepare(&[1, 2], bad, 0), Err(VitsError::Scale { name: "length_scale", .. })));
}
