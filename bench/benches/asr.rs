//! Whisper tiny.en on the five LibriVox clips of Debian's
//! pocketsphinx-testdata (24.7 s of read speech), on the CPU with candle's
//! thread count (`RAYON_NUM_THREADS`, else every core: the reference
//! machine has 2). Prints, for each encoder window (the audio's length,
//! whisper.cpp's `audio_ctx`; and 30 s as OpenAI pads) and each decoder
//! (8-bit, f32), the best of three passes and its real-time factor; and for
//! the defaults, the streaming endpoint: how long `finish` takes when the
//! last 300 ms arrive with the endpoint.
//!
//! With `python3 bench/faster_whisper.py` run first (CTranslate2 int8,
//! cpu_threads=2, same model files and clips; it writes
//! `$TETE_HOME/bench/faster_whisper.json`), it also prints tete's time
//! against faster-whisper's.
//!
//! Needs the models (`tete models fetch`) and `pocketsphinx-testdata`.
//! Run: `cargo bench -p tete-bench --bench asr`

use std::time::Instant;

use candle_core::Device;
use tete_engine::asr::{
    DecoderWeights, EncoderWindow, SAMPLE_RATE, SpeechToText, StreamingConfig, StreamingTranscriber, TranscribeOptions,
    Whisper, WhisperOptions,
};
use tete_engine::models::{Manifest, Store, default_home};

const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";
const PASSES: usize = 3;

/// The clips as f32 (16 kHz mono 16-bit WAV), sorted by name.
fn clips() -> Vec<(String, Vec<f32>)> {
    let mut paths: Vec<_> = std::fs::read_dir(LIBRIVOX)
        .unwrap_or_else(|e| panic!("{LIBRIVOX}: {e} (apt-get install pocketsphinx-testdata)"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let data = bytes.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
            let pcm = bytes[data..].chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0);
            (path.file_name().unwrap().to_string_lossy().into_owned(), pcm.collect())
        })
        .collect()
}

/// Best total seconds over `PASSES` passes of transcribing every clip.
fn best_pass(model: &Whisper, clips: &[(String, Vec<f32>)]) -> f64 {
    let options = TranscribeOptions::default();
    model.transcribe(&clips[0].1, &options).unwrap(); // warm-up
    (0..PASSES)
        .map(|_| {
            let start = Instant::now();
            for (_, pcm) in clips {
                model.transcribe(pcm, &options).unwrap();
            }
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Streams each clip in 100 ms pieces, stepping after each; the last
/// 300 ms come with the endpoint. Returns each clip's `finish` seconds.
fn endpoint_latencies(model: &Whisper, clips: &[(String, Vec<f32>)]) -> Vec<f64> {
    let piece = SAMPLE_RATE as usize / 10;
    let mut session = StreamingTranscriber::new(TranscribeOptions::default(), StreamingConfig::default());
    clips
        .iter()
        .map(|(_, pcm)| {
            let tail = pcm.len() - 3 * piece;
            for chunk in pcm[..tail].chunks(piece) {
                session.push(chunk).unwrap();
                session.step(model).unwrap();
            }
            session.push(&pcm[tail..]).unwrap();
            let start = Instant::now();
            session.finish(model).unwrap();
            start.elapsed().as_secs_f64()
        })
        .collect()
}

/// faster-whisper's total seconds from `bench/faster_whisper.py`'s output, if it ran.
fn faster_whisper_seconds() -> Option<(f64, String)> {
    let path = default_home().join("bench").join("faster_whisper.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    Some((json["seconds"].as_f64()?, path.display().to_string()))
}

fn main() {
    let manifest = Manifest::embedded().unwrap();
    let dir = Store::new(default_home()).model_dir(&manifest.model("whisper-tiny.en").unwrap().id);
    let clips = clips();
    let audio: f64 = clips.iter().map(|(_, pcm)| pcm.len() as f64).sum::<f64>() / f64::from(SAMPLE_RATE);
    println!(
        "whisper-tiny.en, {} clips, {audio:.2} s of audio, {} threads",
        clips.len(),
        candle_core::utils::get_num_threads()
    );

    let mut seconds_by = Vec::new();
    for window in [EncoderWindow::default(), EncoderWindow::Full] {
        for decoder in [DecoderWeights::Q8, DecoderWeights::F32] {
            let options = WhisperOptions { window, decoder };
            let model = Whisper::load_with(&dir, &Device::Cpu, options).expect("run `tete models fetch` first");
            let seconds = best_pass(&model, &clips);
            println!("  {window:?}, decoder {decoder:?}: {seconds:.3} s, real-time factor {:.4}", seconds / audio);
            if options == WhisperOptions::default() {
                let latencies = endpoint_latencies(&model, &clips);
                let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
                let max = latencies.iter().copied().fold(0.0, f64::max);
                println!("  streaming endpoint: finish {:.0} ms mean, {:.0} ms max", mean * 1e3, max * 1e3);
            }
            seconds_by.push((options, seconds));
        }
    }
    match faster_whisper_seconds() {
        Some((fw, path)) => {
            println!(
                "faster-whisper (int8, 2 threads, 30 s windows): {fw:.3} s, real-time factor {:.4} ({path})",
                fw / audio
            );
            for (options, seconds) in seconds_by {
                println!("  tete {:?} / faster-whisper = {:.2}", options, seconds / fw);
            }
        }
        None => println!("faster-whisper: no result; run `python3 bench/faster_whisper.py` first for the ratio"),
    }
}
