//! The Piper voice (en_US joe medium) on candle against onnxruntime, with the
//! real weights `tete models fetch piper-en_US-joe-medium` converts.
//!
//! With both noise scales at 0 the voice is deterministic, so the port must
//! give the same durations (frames per phoneme id, exactly) and the same
//! waveform as the ONNX graph (fixture from
//! `fixtures/piper_vits_reference.py`).
//!
//! Then the streaming speaker: intelligibility through Whisper base (`tete
//! models fetch whisper-base`), chunk timing, cancellation and bad input.

mod common;

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use candle_core::Device;
use common::{missing, model_dir, model_path, normalise, word_errors};
use tete_engine::asr::{SpeechToText, TranscribeOptions, Whisper};
use tete_engine::audio::resample;
use tete_engine::tts::phonemize::{PhonemizeError, Phonemizer};
use tete_engine::tts::viseme::Viseme;
use tete_engine::tts::vits::{HOP, Scales, Vits, VitsError};
use tete_engine::tts::{OUTPUT_RATE, Speaker, SpeechChunk, TtsError, Voice, VoiceSettings};

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
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(c["audio_f32le_base64"].as_str().unwrap()).unwrap();
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

// The streaming speaker: espeak-ng phonemes, chunked synthesis, 48 kHz.

fn speaker() -> Speaker {
    static VOICE: OnceLock<Arc<Voice>> = OnceLock::new();
    let voice = VOICE.get_or_init(|| {
        Arc::new(Voice::load(&model_dir("piper-en_US-joe-medium"), &Device::Cpu).unwrap_or_else(missing))
    });
    Speaker::new(voice.clone()).unwrap()
}

fn say(speaker: &mut Speaker, text: &str, settings: VoiceSettings) -> Vec<SpeechChunk> {
    speaker.say(text, settings).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Ten sentences a replica might say, synthesised with the voice's default
/// noise and transcribed back by Whisper base: word error rate ≤ 10 %.
#[test]
fn speech_is_intelligible_to_whisper() {
    const SENTENCES: [&str; 10] = [
        "Good morning, how can I help you today?",
        "The meeting has been moved to Thursday afternoon.",
        "I think that is a really interesting question.",
        "Could you tell me a little more about your project?",
        "The weather should be sunny for the rest of the week.",
        "Please remember to send the report before Friday.",
        "We can start with the first page and go from there.",
        "It sounds like you had a busy weekend.",
        "Let me check that for you, it will only take a moment.",
        "Thank you for your time, and have a wonderful evening.",
    ];
    let whisper = Whisper::load(&model_dir("whisper-base"), &Device::Cpu).unwrap_or_else(missing);
    let mut speaker = speaker();
    let (mut errors, mut words) = (0, 0);
    for (i, text) in SENTENCES.iter().enumerate() {
        let settings = VoiceSettings { seed: i as u64, ..VoiceSettings::default() };
        let audio: Vec<f32> = say(&mut speaker, text, settings).into_iter().flat_map(|c| c.audio).collect();
        let audio = resample(&audio, OUTPUT_RATE, 16_000).unwrap();
        let heard = whisper.transcribe(&audio, &TranscribeOptions::default()).unwrap().text;
        let (reference, hypothesis) = (normalise(text), normalise(&heard));
        let e = word_errors(&reference, &hypothesis);
        println!("{e} errors: {text:?} → {heard:?}");
        errors += e;
        words += reference.len();
    }
    let wer = errors as f64 / words as f64;
    println!("WER {:.1} % ({errors} of {words} words)", 100.0 * wer);
    assert!(wer <= 0.10, "WER {:.1} %", 100.0 * wer);
}

#[test]
fn streamed_chunks_follow_one_clock_with_visemes_ahead() {
    let mut speaker = speaker();
    let text = "Streaming starts early. The second sentence follows right after the first one ends.";
    let chunks = say(&mut speaker, text, VoiceSettings { expressiveness: 0.0, ..VoiceSettings::default() });
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    // The first chunk is small: 16 frames of 256 samples at 22.05 kHz.
    let first = chunks[0].audio.len() as f64 / f64::from(OUTPUT_RATE);
    assert!(first < 0.2, "first chunk {first} s");
    for pair in chunks.windows(2) {
        assert!((pair[1].start - pair[0].end()).abs() < 1e-9, "gap between chunks at {}", pair[0].end());
    }
    let end = chunks.last().unwrap().end();
    assert!((speaker.clock() - end).abs() < 1e-9);
    // Two sentences: two chunks carry timings, each before its audio plays.
    let with_visemes: Vec<&SpeechChunk> = chunks.iter().filter(|c| !c.visemes.is_empty()).collect();
    assert_eq!(with_visemes.len(), 2);
    for chunk in &with_visemes {
        assert!(chunk.visemes[0].start >= chunk.start - 1e-9);
        assert!(chunk.visemes.windows(2).all(|w| w[0].end <= w[1].start + 1e-9));
        assert!(chunk.visemes.last().unwrap().end <= end + 1e-6);
        assert!(chunk.visemes.iter().any(|v| v.viseme != Viseme::Sil), "a sentence moves the mouth");
    }
    // The whole sentence's audio equals the model's one-pass decode.
    let voice = Voice::load(&model_dir("piper-en_US-joe-medium"), &Device::Cpu).unwrap();
    let mut phonemizer = Phonemizer::new("en-us").unwrap();
    let sentence = &phonemizer.phonemize("Streaming starts early.").unwrap()[0];
    let ids = voice.config.phoneme_ids.encode(&sentence.phonemes).ids;
    let scales = Scales { noise_scale: 0.0, noise_w: 0.0, ..voice.config.scales };
    // The speaker seeds sentence k with seed + k; with the noise off it does not matter.
    let (whole, _) = voice.model.synthesize(&ids, scales, 1).unwrap();
    let whole = resample(&whole, 22_050, OUTPUT_RATE).unwrap();
    let streamed: Vec<f32> =
        chunks.iter().take_while(|c| c.start < with_visemes[1].start).flat_map(|c| c.audio.clone()).collect();
    assert_eq!(streamed.len(), whole.len());
    let max = streamed.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-4, "streamed sentence differs from the whole by {max}");
}

#[test]
fn dropping_the_speech_cancels_the_rest() {
    let mut speaker = speaker();
    // 5 000 characters: only the first piece is phonemised before audio starts.
    let long = "This is a long answer that keeps going, with clauses and sentences. ".repeat(74);
    assert!(long.len() > 5_000);
    let mut speech = speaker.say(&long, VoiceSettings::default()).unwrap();
    let first = speech.next().unwrap().unwrap();
    let second = speech.next().unwrap().unwrap();
    assert!(!first.audio.is_empty() && !second.audio.is_empty());
    drop(speech); // barge-in
    let after = speaker.clock();
    assert!(after < 1.0, "only what was taken is on the clock: {after} s");
    // The next phrase follows on the clock, from a clean resampler.
    let next = say(&mut speaker, "Sorry, go ahead.", VoiceSettings::default());
    assert!((next[0].start - after).abs() < 1e-9);
}

#[test]
fn text_with_nothing_to_say_gives_no_audio() {
    let mut speaker = speaker();
    for text in ["", "   ", "?!...", "🙂🙂", "\u{0}\u{1}"] {
        let chunks = say(&mut speaker, text, VoiceSettings::default());
        let audio: usize = chunks.iter().map(|c| c.audio.len()).sum();
        assert_eq!(audio, 0, "{text:?} gave {audio} samples");
    }
    // Other scripts and emoji inside English: the English is spoken.
    let chunks = say(&mut speaker, "Hello 🙂 мир 世界 world.", VoiceSettings::default());
    assert!(chunks.iter().map(|c| c.audio.len()).sum::<usize>() > OUTPUT_RATE as usize / 2);
}

#[test]
fn voice_settings_are_checked_and_change_the_rate() {
    let mut speaker = speaker();
    for bad in [
        VoiceSettings { speed: 0.1, ..VoiceSettings::default() },
        VoiceSettings { speed: f32::NAN, ..VoiceSettings::default() },
        VoiceSettings { expressiveness: -1.0, ..VoiceSettings::default() },
    ] {
        assert!(matches!(speaker.say("Hello.", bad), Err(TtsError::Setting { .. })), "{bad:?}");
    }
    let persona = VoiceSettings::from_persona(Some(1.2), Some("Calm"), 3).unwrap();
    assert_eq!((persona.speed, persona.expressiveness, persona.seed), (1.2, 0.5, 3));
    assert_eq!(VoiceSettings::from_persona(None, None, 0).unwrap().expressiveness, 1.0);
    assert!(matches!(VoiceSettings::from_persona(None, Some("furious"), 0), Err(TtsError::Emotion(_))));
    assert!(matches!(VoiceSettings::from_persona(Some(3.0), None, 0), Err(TtsError::Setting { name: "speed", .. })));
    let text = "We will go through the plan step by step.";
    let flat = VoiceSettings { expressiveness: 0.0, ..VoiceSettings::default() };
    let length = |chunks: Vec<SpeechChunk>| chunks.iter().map(|c| c.audio.len()).sum::<usize>() as f64;
    let normal = length(say(&mut speaker, text, flat));
    let fast = length(say(&mut speaker, text, VoiceSettings { speed: 1.5, ..flat }));
    assert!(fast < 0.8 * normal, "speed 1.5 gave {fast} samples against {normal}");
}

#[test]
fn a_missing_espeak_is_a_clear_error() {
    let voice = Arc::new(Voice::load(&model_dir("piper-en_US-joe-medium"), &Device::Cpu).unwrap());
    let err = Phonemizer::with_binary("/nonexistent/espeak-ng", &voice.config.espeak_voice).err().unwrap();
    assert!(matches!(err, PhonemizeError::MissingBinary { .. }), "{err}");
    assert!(err.to_string().contains("espeak-ng"));
}
