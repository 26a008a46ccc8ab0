//! Whisper on candle with the real models `tete models fetch` leaves in
//! `$TETE_HOME` (whisper-base too: `tete models fetch whisper-base`), on read
//! speech: the five LibriVox clips of Debian's pocketsphinx-testdata and
//! their reference transcription.
//!
//! Word error rates are printed for both encoder windows (the audio's own
//! length, and 30 s as Whisper was trained) and for the exact f32 decoder
//! beside the default 8-bit one; run with `--nocapture` to see them. Scoring lower-cases, turns punctuation and hyphens into spaces and
//! writes "mr" as "mister" (as Whisper's English normaliser does).

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use candle_core::Device;
use common::{LIBRIVOX, normalise, word_errors};
use tete_engine::asr::{
    AsrError, DecoderWeights, EncoderWindow, SAMPLE_RATE, SpeechToText, StreamingConfig, StreamingTranscriber,
    TranscribeOptions, Transcription, Whisper, WhisperOptions,
};
use tete_engine::models::{Manifest, ModelState, Store, default_home};

/// The model folder of `id`, checked against models.toml's checksums.
fn model_dir(id: &str) -> std::path::PathBuf {
    let manifest = Manifest::embedded().unwrap();
    let store = Store::new(default_home());
    let model = manifest.model(id).unwrap();
    let state = store.state(model).unwrap();
    assert_eq!(
        state,
        ModelState::Verified,
        "{id} is {state} in {}: run `tete models fetch {id}` first",
        store.home().display()
    );
    store.model_dir(id)
}

fn load(id: &str, options: WhisperOptions) -> Whisper {
    let dir = model_dir(id);
    let start = Instant::now();
    let model = Whisper::load_with(&dir, &Device::Cpu, options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    eprintln!("{id} loaded in {:.2} s", start.elapsed().as_secs_f64());
    model
}

/// whisper-tiny.en with the default options (the audio's length, 8-bit decoder).
fn tiny() -> &'static Whisper {
    static MODEL: OnceLock<Whisper> = OnceLock::new();
    MODEL.get_or_init(|| load("whisper-tiny.en", WhisperOptions::default()))
}

/// A 16 kHz mono 16-bit WAV as f32 in [-1, 1].
fn wav(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (apt-get install pocketsphinx-testdata)"));
    assert_eq!(&bytes[..4], b"RIFF", "{path}");
    let data = bytes.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    bytes[data..].chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect()
}

/// (clip id, audio, reference text) of the five clips, from the `transcription` file.
fn clips() -> Vec<(String, Vec<f32>, String)> {
    let listing = std::fs::read_to_string(format!("{LIBRIVOX}/transcription")).unwrap();
    listing
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (text, id) = line.rsplit_once(" (").expect("text (id)");
            let id = id.trim_end_matches(')').to_string();
            let text = text.replace("<s>", "").replace("</s>", "").trim().to_string();
            let audio = wav(&format!("{LIBRIVOX}/{id}.wav"));
            (id, audio, text)
        })
        .collect()
}

/// Transcribes every clip; returns the corpus WER and the seconds spent.
fn corpus_wer(model: &Whisper, label: &str) -> (f64, f64) {
    let (mut errors, mut words, mut seconds) = (0, 0, 0.0);
    for (id, audio, reference) in clips() {
        let start = Instant::now();
        let got = model.transcribe(&audio, &TranscribeOptions::default()).unwrap();
        seconds += start.elapsed().as_secs_f64();
        let (r, h) = (normalise(&reference), normalise(&got.text));
        let e = word_errors(&r, &h);
        eprintln!("[{label}] {id}: {e}/{} errors: {:?}", r.len(), got.text);
        assert_eq!(got.language, "en");
        assert!(got.segments.iter().all(|s| s.start <= s.end && s.end <= got.duration + 1e-9), "{:?}", got.segments);
        errors += e;
        words += r.len();
    }
    (errors as f64 / words as f64, seconds)
}

#[test]
fn tiny_en_word_error_rate_on_librivox_with_and_without_audio_ctx() {
    let (fit, fit_s) = corpus_wer(tiny(), "audio_ctx");
    let full_model = load("whisper-tiny.en", WhisperOptions { window: EncoderWindow::Full, ..Default::default() });
    let (full, full_s) = corpus_wer(&full_model, "30 s");
    drop(full_model);
    let exact = load("whisper-tiny.en", WhisperOptions { decoder: DecoderWeights::F32, ..Default::default() });
    let (f32_wer, f32_s) = corpus_wer(&exact, "audio_ctx, f32 decoder");
    eprintln!(
        "whisper-tiny.en WER: {:.1} % with audio_ctx ({fit_s:.2} s), {:.1} % padded to 30 s ({full_s:.2} s): \
         audio_ctx costs {:+.1} points; {:.1} % with the f32 decoder ({f32_s:.2} s)",
        fit * 100.0,
        full * 100.0,
        (fit - full) * 100.0,
        f32_wer * 100.0,
    );
    assert!(fit <= 0.10, "WER {:.1} % with audio_ctx, over 10 %", fit * 100.0);
    assert!(full <= 0.10, "WER {:.1} % padded to 30 s, over 10 %", full * 100.0);
    assert!(f32_wer <= 0.10, "WER {:.1} % with the f32 decoder, over 10 %", f32_wer * 100.0);
}

#[test]
fn whisper_base_detects_english_or_takes_the_given_language() {
    let base = load("whisper-base", WhisperOptions::default());
    assert!(base.is_multilingual());
    let (_, audio, reference) = clips().remove(0);
    let detected = base.transcribe(&audio, &TranscribeOptions::default()).unwrap();
    eprintln!("whisper-base, detected {}: {:?}", detected.language, detected.text);
    assert_eq!(detected.language, "en");
    let wer =
        word_errors(&normalise(&reference), &normalise(&detected.text)) as f64 / normalise(&reference).len() as f64;
    assert!(wer <= 0.15, "whisper-base WER {:.1} %", wer * 100.0);

    let given = base.transcribe(&audio, &TranscribeOptions { language: Some("en".into()), ..Default::default() });
    assert_eq!(given.unwrap().text, detected.text);
    let unknown = base.transcribe(&audio, &TranscribeOptions { language: Some("xx".into()), ..Default::default() });
    assert!(matches!(unknown, Err(AsrError::Language(ref l)) if l == "xx"), "{unknown:?}");
    // An English-only model takes English or nothing.
    let french = tiny().transcribe(&audio, &TranscribeOptions { language: Some("fr".into()), ..Default::default() });
    assert!(matches!(french, Err(AsrError::Language(_))), "{french:?}");
}

fn same_transcript(streamed: &Transcription, one_shot: &Transcription) {
    assert_eq!(streamed.text, one_shot.text);
    let timed = |t: &Transcription| t.segments.iter().map(|s| (s.text.clone(), s.start, s.end)).collect::<Vec<_>>();
    assert_eq!(timed(streamed), timed(one_shot));
}

#[test]
fn streaming_final_equals_one_shot() {
    let model = tiny();
    let piece = SAMPLE_RATE as usize / 10; // 100 ms of audio per push
    let mut session = StreamingTranscriber::new(TranscribeOptions::default(), StreamingConfig::default());
    let mut last_seq = 0;
    for (id, audio, _) in clips() {
        let start = Instant::now();
        let one_shot = model.transcribe(&audio, &TranscribeOptions::default()).unwrap();
        let one_shot_s = start.elapsed().as_secs_f64();

        let mut committed = String::new();
        let mut steps = 0;
        // The last 300 ms arrive with the endpoint, after the last step (which
        // itself may be up to 500 ms behind): finish decodes what is new.
        let tail = audio.len() - 3 * piece;
        for chunk in audio[..tail].chunks(piece) {
            session.push(chunk).unwrap();
            if let Some(partial) = session.step(model).unwrap() {
                assert!(partial.seq > last_seq, "seq {} after {last_seq}", partial.seq);
                assert!(partial.committed_text.starts_with(&committed), "{committed:?} → {partial:?}");
                last_seq = partial.seq;
                committed = partial.committed_text;
                steps += 1;
            }
        }
        session.push(&audio[tail..]).unwrap();
        let start = Instant::now();
        let streamed = session.finish(model).unwrap();
        let finish_s = start.elapsed().as_secs_f64();
        eprintln!(
            "{id}: {steps} steps, committed {committed:?}; finish {:.0} ms (one-shot {:.0} ms)",
            finish_s * 1e3,
            one_shot_s * 1e3
        );
        same_transcript(&streamed, &one_shot);
        let held = normalise(&committed).iter().zip(normalise(&one_shot.text)).take_while(|(a, b)| **a == *b).count();
        eprintln!("  {held} of {} committed words begin the final", normalise(&committed).len());
        assert!(steps >= 2, "{id}: {steps} steps");
        assert_eq!(session.duration(), 0.0, "finish leaves the session empty");
    }
    // With nothing new since the last step, finish returns that decode.
    let (_, audio, _) = clips().remove(1);
    session.push(&audio).unwrap();
    session.step(model).unwrap().expect("a decode");
    let start = Instant::now();
    let again = session.finish(model).unwrap();
    eprintln!("finish with no new audio: {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
    same_transcript(&again, &model.transcribe(&audio, &TranscribeOptions::default()).unwrap());
    // Reset drops the utterance; a step needs half a second of audio.
    session.push(&audio).unwrap();
    session.reset();
    session.push(&audio[..1000]).unwrap();
    assert!(session.step(model).unwrap().is_none());
}

fn white_noise(samples: usize, amplitude: f32) -> Vec<f32> {
    let mut state = 0x2545_f491u32;
    (0..samples)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            amplitude * (state as f32 / u32::MAX as f32 * 2.0 - 1.0)
        })
        .collect()
}

#[test]
fn bad_input_is_handled() {
    let model = tiny();
    let options = TranscribeOptions::default();
    let second = SAMPLE_RATE as usize;

    let silence = model.transcribe(&vec![0.0; 5 * second], &options).unwrap();
    eprintln!("silence: {:?}", silence.text);
    assert!(normalise(&silence.text).len() <= 1, "silence gave {:?}", silence.text);
    let nothing = model.transcribe(&[], &options).unwrap();
    assert!(nothing.text.is_empty() && nothing.segments.is_empty() && nothing.duration == 0.0);
    let blip = model.transcribe(&[0.1; 100], &options).unwrap();
    assert!(blip.segments.is_empty(), "100 samples are less than one mel frame: {blip:?}");

    let noise = model.transcribe(&white_noise(5 * second, 0.5), &options).unwrap();
    eprintln!("white noise: {:?}", noise.text);

    // Overdriven: the clip amplified 8× and hard-clipped, and samples past ±1 as a float source may give.
    let (_, audio, reference) = clips().remove(0);
    let clipped: Vec<f32> = audio.iter().map(|s| (s * 8.0).clamp(-1.0, 1.0)).collect();
    let loud: Vec<f32> = audio.iter().map(|s| s * 8.0).collect();
    for (label, pcm) in [("clipped", clipped), ("beyond ±1", loud)] {
        let got = model.transcribe(&pcm, &options).unwrap();
        let e = word_errors(&normalise(&reference), &normalise(&got.text));
        eprintln!("{label}: {e} errors: {:?}", got.text);
        assert!(e * 4 <= normalise(&reference).len(), "{label}: {e} errors");
    }

    // Non-finite samples are refused, not cleaned up: they mean a broken source.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut pcm = vec![0.0; second];
        pcm[1234] = bad;
        let err = model.transcribe(&pcm, &options).unwrap_err();
        assert!(matches!(err, AsrError::Audio(ref m) if m.contains("sample 1234")), "{err}");
        let mut session = StreamingTranscriber::new(options.clone(), StreamingConfig::default());
        assert!(matches!(session.push(&pcm), Err(AsrError::Audio(_))));
        assert_eq!(session.duration(), 0.0, "a refused chunk is not kept");
    }
}

#[test]
fn a_minute_long_monologue_runs_window_after_window() {
    let model = tiny();
    let gap = vec![0.0; SAMPLE_RATE as usize * 3 / 10];
    let clips = clips();
    let (mut audio, mut reference) = (Vec::new(), String::new());
    // Three passes over the clips in different orders (78.7 s): verbatim
    // repeats would talk the decoder, prompted with the text so far, into
    // repeating the text instead of hearing the audio (faster-whisper too).
    for order in [[0, 1, 2, 3, 4], [3, 0, 4, 1, 2], [2, 4, 1, 0, 3]] {
        for i in order {
            audio.extend_from_slice(&clips[i].1);
            audio.extend_from_slice(&gap);
            reference.push_str(&clips[i].2);
            reference.push(' ');
        }
    }
    let start = Instant::now();
    let got = model.transcribe(&audio, &TranscribeOptions::default()).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let (r, h) = (normalise(&reference), normalise(&got.text));
    let wer = word_errors(&r, &h) as f64 / r.len() as f64;
    for s in &got.segments {
        eprintln!("{:6.2} {:6.2} {:?}", s.start, s.end, s.text);
    }
    eprintln!(
        "{:.1} s monologue in {seconds:.2} s: {} segments, WER {:.1} %",
        got.duration,
        got.segments.len(),
        wer * 100.0
    );
    assert!(got.segments.windows(2).all(|w| w[0].start <= w[1].start), "segments in order");
    assert!(got.segments.last().is_some_and(|s| s.end > 50.0 && s.end <= got.duration), "reaches the end");
    assert!(wer <= 0.25, "WER {:.1} % over the monologue", wer * 100.0);
}

#[test]
fn a_damaged_model_file_is_an_error_not_a_panic() {
    let source = model_dir("whisper-tiny.en");
    let real = std::fs::read(source.join("model.safetensors")).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("whisper-tiny.en");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    let header = u64::from_le_bytes(real[..8].try_into().unwrap()) as usize + 8;
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", real[..real.len() / 2].to_vec()),
        ("header only", real[..header].to_vec()),
        ("garbage", white_noise(4096, 1.0).iter().flat_map(|x| x.to_le_bytes()).collect()),
        ("empty", Vec::new()),
    ];
    for (label, bytes) in cases {
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        match Whisper::load(&dir, &Device::Cpu) {
            Err(AsrError::Model(message)) => {
                eprintln!("{label}: {message}");
                assert!(message.contains("model.safetensors"), "{label}: {message}");
            }
            other => panic!("{label}: {other:?}"),
        }
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let missing = Whisper::load(&dir, &Device::Cpu).unwrap_err();
    assert!(missing.to_string().contains("tete models fetch"), "{missing}");
}
