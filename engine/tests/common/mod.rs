//! What the engine's model tests share: where the fetched models are, real
//! speech from Debian's packages, and sentences spoken by espeak-ng.

#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;
use std::process::Command;

use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};

/// The LibriVox clips of pocketsphinx-testdata (16 kHz mono 16-bit WAV).
pub const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";

/// The folder of a fetched model.
pub fn model_dir(id: &str) -> PathBuf {
    let manifest = Manifest::embedded().unwrap();
    Store::new(default_home()).model_dir(&manifest.model(id).unwrap().id)
}

/// The converted weights of a fetched model.
pub fn model_path(id: &str) -> PathBuf {
    model_dir(id).join(OUTPUT)
}

/// For `unwrap_or_else` on a model load: says how to get the models.
pub fn missing<T>(e: impl std::fmt::Display) -> T {
    panic!("{e}: run `tete models fetch` first")
}

/// A 16 kHz mono 16-bit WAV file as f32 in [-1, 1].
pub fn wav_16k(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (apt-get install pocketsphinx-testdata)"));
    let data = bytes.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    bytes[data..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect()
}

/// `text` spoken by espeak-ng (run as a process), at 16 kHz.
pub fn speak(text: &str) -> Vec<f32> {
    let out = Command::new("espeak-ng")
        .args(["--stdout", text])
        .output()
        .unwrap_or_else(|e| panic!("espeak-ng: {e} (scripts/setup-system.sh installs it)"));
    assert!(out.status.success(), "espeak-ng failed: {}", String::from_utf8_lossy(&out.stderr));
    let wav = &out.stdout;
    let rate = u32::from_le_bytes(wav[24..28].try_into().unwrap());
    let data = wav.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    let pcm: Vec<f32> =
        wav[data..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).collect();
    tete_engine::audio::resample(&pcm, rate, 16_000).unwrap()
}

/// Words for scoring: lower case, punctuation and hyphens as spaces, "mr"
/// as "mister" (as Whisper's English normaliser does).
pub fn normalise(text: &str) -> Vec<String> {
    let lower: String =
        text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' }).collect();
    lower.split_whitespace().map(|w| if w == "mr" { "mister".to_string() } else { w.to_string() }).collect()
}

/// Word-level edit distance.
pub fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let next = (diagonal + usize::from(r != h)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[hypothesis.len()]
}

/// Largest |a - b| and where.
pub fn max_diff(got: &[f32], want: &[f32]) -> (f32, usize) {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold((0.0, 0), |m, (i, d)| if d > m.0 { (d, i) } else { m })
}
