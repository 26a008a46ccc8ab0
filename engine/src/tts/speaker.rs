//! Streaming speech from text: a resident [`Voice`] (Piper VITS weights and
//! its config) and a per-session [`Speaker`] that turns each phrase the LLM
//! hands over into 48 kHz audio chunks for Opus, with phoneme and viseme
//! timings on the same clock.
//!
//! A sentence is decoded in chunks of growing size (16, 32, 64, then 128
//! latent frames: 186 ms, then 0.37, 0.74 and 1.49 s of audio), so the first
//! audio leaves after the text encoder and one small chunk while the next
//! chunk is computed in less time than the previous one plays. Chunks join
//! exactly (see `Vits::decode_range`). [`Speech`] is a pull iterator: the
//! caller takes chunks as it needs them, and dropping it (barge-in) drops
//! everything not yet synthesised at once.
//!
//! The clock: seconds since the speaker's first phrase, counted in output
//! samples, so timings of later phrases follow on from earlier ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use serde::Deserialize;

use super::phonemize::{MAX_PIECE_CHARS, PhonemeIdMap, PhonemizeError, Phonemizer, split_text};
use super::viseme::{PhonemeTiming, VisemeEvent, timeline};
use super::vits::{HOP, Scales, Vits, VitsError};
use crate::audio::{ResampleError, StreamResampler};
use crate::models::convert::OUTPUT;

/// The rate of the audio a [`Speaker`] gives (Opus's).
pub const OUTPUT_RATE: u32 = 48_000;
/// Latent frames of each chunk of a sentence, the last size repeating.
pub const CHUNK_FRAMES: [usize; 4] = [16, 32, 64, 128];

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("reading the voice config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(transparent)]
    Phonemize(#[from] PhonemizeError),
    #[error(transparent)]
    Model(#[from] VitsError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error("unknown emotion {0:?}: one of flat, calm, neutral, warm, lively, excited")]
    Emotion(String),
    #[error("voice setting {name} = {value} is out of range {range}")]
    Setting { name: &'static str, value: f32, range: &'static str },
}

/// A Piper voice config (`*.onnx.json`): what inference needs of it.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    pub sample_rate: u32,
    /// espeak-ng voice for the phonemes, e.g. "en-us".
    pub espeak_voice: String,
    /// The voice's default scales.
    pub scales: Scales,
    pub phoneme_ids: PhonemeIdMap,
}

impl VoiceConfig {
    pub fn load(path: &Path) -> Result<Self, TtsError> {
        #[derive(Deserialize)]
        struct Raw {
            audio: Audio,
            espeak: Espeak,
            inference: Inference,
            phoneme_id_map: PhonemeIdMap,
        }
        #[derive(Deserialize)]
        struct Audio {
            sample_rate: u32,
        }
        #[derive(Deserialize)]
        struct Espeak {
            voice: String,
        }
        #[derive(Deserialize)]
        struct Inference {
            noise_scale: f32,
            length_scale: f32,
            noise_w: f32,
        }
        let error = |reason: String| TtsError::Config { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let raw: Raw = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        if raw.audio.sample_rate as usize * 2 != 44_100 {
            return Err(error(format!("sample rate {} (this decoder is 22 050 Hz)", raw.audio.sample_rate)));
        }
        let i = raw.inference;
        Ok(Self {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.voice,
            scales: Scales { noise_scale: i.noise_scale, length_scale: i.length_scale, noise_w: i.noise_w },
            phoneme_ids: raw.phoneme_id_map,
        })
    }
}

/// What a persona's voice settings change. Each maps to one model input:
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceSettings {
    /// Speaking rate relative to the voice's own, 0.5–2.0: divides
    /// `length_scale`, so every phoneme's duration (pauses included).
    pub speed: f32,
    /// 0–2, 1 being the voice's defaults: multiplies `noise_scale` (variation
    /// of timbre and pitch contour around the encoder's mean) and `noise_w`
    /// (variation of rhythm). 0 is flat and the same every time; above 1 is
    /// livelier and less stable. It does not choose an emotion: this voice
    /// was not trained with emotion labels.
    pub expressiveness: f32,
    /// Seed of the noise, so a phrase can be reproduced.
    pub seed: u64,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self { speed: 1.0, expressiveness: 1.0, seed: 0 }
    }
}

/// The persona's `voice_settings.emotion` values and the expressiveness each
/// stands for. They set how much the voice varies, not a trained emotion.
pub const EMOTIONS: [(&str, f32); 6] =
    [("flat", 0.0), ("calm", 0.5), ("neutral", 1.0), ("warm", 1.2), ("lively", 1.4), ("excited", 1.6)];

impl VoiceSettings {
    /// Settings from a persona's `voice_settings`: `speed` as given and
    /// `emotion` through [`EMOTIONS`] (absent = neutral).
    pub fn from_persona(speed: Option<f32>, emotion: Option<&str>, seed: u64) -> Result<Self, TtsError> {
        let expressiveness = match emotion {
            None => 1.0,
            Some(name) => EMOTIONS
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(name.trim()))
                .map(|&(_, e)| e)
                .ok_or_else(|| TtsError::Emotion(name.to_string()))?,
        };
        let settings = Self { speed: speed.unwrap_or(1.0), expressiveness, seed };
        settings.scales(Scales::DETERMINISTIC)?; // range checks
        Ok(settings)
    }

    fn scales(&self, base: Scales) -> Result<Scales, TtsError> {
        let check = |name, value: f32, lo, hi, range| {
            if (lo..=hi).contains(&value) { Ok(value) } else { Err(TtsError::Setting { name, value, range }) }
        };
        let speed = check("speed", self.speed, 0.5, 2.0, "0.5–2.0")?;
        let expressiveness = check("expressiveness", self.expressiveness, 0.0, 2.0, "0–2")?;
        Ok(Scales {
            noise_scale: base.noise_scale * expressiveness,
            length_scale: base.length_scale / speed,
            noise_w: base.noise_w * expressiveness,
        })
    }
}

/// A resident voice: shared read-only by every session's [`Speaker`].
pub struct Voice {
    pub model: Vits,
    pub config: VoiceConfig,
}

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice").field("espeak_voice", &self.config.espeak_voice).finish_non_exhaustive()
    }
}

impl Voice {
    /// Loads a fetched Piper voice folder: the converted weights and the one
    /// `*.onnx.json` config beside them.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, TtsError> {
        let config_path = std::fs::read_dir(dir)
            .map_err(|e| TtsError::Config { path: dir.to_path_buf(), reason: e.to_string() })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(".onnx.json"))
            .ok_or_else(|| TtsError::Config {
                path: dir.to_path_buf(),
                reason: "no *.onnx.json voice config".into(),
            })?;
        let config = VoiceConfig::load(&config_path)?;
        Ok(Self { model: Vits::load(&dir.join(OUTPUT), device)?, config })
    }
}

/// A piece of speech: 48 kHz audio starting at `start`, and the timings of
/// what is said in it.
#[derive(Debug, Clone, Default)]
pub struct SpeechChunk {
    pub audio: Vec<f32>,
    /// Seconds on the speaker's clock of `audio[0]`.
    pub start: f64,
    /// The sentence's phonemes and mouth shapes, on the same clock: all of a
    /// sentence's come with its first chunk, ahead of the audio they match.
    pub phonemes: Vec<PhonemeTiming>,
    pub visemes: Vec<VisemeEvent>,
}

impl SpeechChunk {
    pub fn end(&self) -> f64 {
        self.start + self.audio.len() as f64 / f64::from(OUTPUT_RATE)
    }
}

/// One session's speech: its espeak-ng process, resampler and clock.
pub struct Speaker {
    voice: Arc<Voice>,
    phonemizer: Phonemizer,
    resampler: StreamResampler,
    /// Output samples given so far: the clock.
    clock: u64,
}

impl Speaker {
    pub fn new(voice: Arc<Voice>) -> Result<Self, TtsError> {
        let phonemizer = Phonemizer::new(&voice.config.espeak_voice)?;
        Self::with_phonemizer(voice, phonemizer)
    }

    pub fn with_phonemizer(voice: Arc<Voice>, phonemizer: Phonemizer) -> Result<Self, TtsError> {
        let resampler = StreamResampler::new(voice.config.sample_rate, OUTPUT_RATE)?;
        Ok(Self { voice, phonemizer, resampler, clock: 0 })
    }

    /// Seconds of audio given so far.
    pub fn clock(&self) -> f64 {
        self.clock as f64 / f64::from(OUTPUT_RATE)
    }

    /// Starts speaking `text` (a phrase or any length of text: it is cut into
    /// pieces and sentences and synthesised as the chunks are taken). Text
    /// with nothing to say yields no chunks.
    pub fn say<'a>(&'a mut self, text: &str, settings: VoiceSettings) -> Result<Speech<'a>, TtsError> {
        let job = self.start(text, settings)?;
        Ok(Speech { speaker: self, job })
    }

    /// Like [`Speaker::say`], but the speech is held apart from the
    /// speaker, so a scheduler can take its chunks one at a time between
    /// other work ([`Speaker::next_chunk`]). Starting another drops what
    /// the resampler held of the last.
    pub fn start(&mut self, text: &str, settings: VoiceSettings) -> Result<SpeechJob, TtsError> {
        let scales = settings.scales(self.voice.config.scales)?;
        let pieces = split_text(text, MAX_PIECE_CHARS).into_iter().map(str::to_string).collect::<Vec<_>>();
        self.resampler.reset();
        Ok(SpeechJob {
            scales,
            seed: settings.seed,
            pieces: pieces.into(),
            sentences: Default::default(),
            current: None,
        })
    }

    /// The next sentence of `job` with something to say, prepared; `None` at the end.
    fn next_sentence(&mut self, job: &mut SpeechJob) -> Result<Option<Sentence>, TtsError> {
        loop {
            while job.sentences.is_empty() {
                let Some(piece) = job.pieces.pop_front() else { return Ok(None) };
                let sentences = self.phonemizer.phonemize(&piece)?;
                job.sentences.extend(sentences.into_iter().map(|s| s.phonemes));
            }
            let Some(phonemes) = job.sentences.pop_front() else { continue };
            let voice = &self.voice;
            let encoded = voice.config.phoneme_ids.encode(&phonemes);
            if encoded.phonemes.iter().all(Option::is_none) {
                continue; // nothing the voice can say (emoji, unknown script)
            }
            job.seed = job.seed.wrapping_add(1);
            let prepared = voice.model.prepare(&encoded.ids, job.scales, job.seed)?;
            let samples: Vec<u32> = prepared.durations.iter().map(|&d| d * HOP as u32).collect();
            let t = timeline(&encoded.phonemes, &samples, voice.config.sample_rate, self.clock());
            return Ok(Some(Sentence { prepared, phonemes: t.phonemes, visemes: t.visemes, next: 0, chunk: 0 }));
        }
    }

    /// The next chunk of `job`; `None` when it is all said.
    pub fn next_chunk(&mut self, job: &mut SpeechJob) -> Result<Option<SpeechChunk>, TtsError> {
        loop {
            if job.current.is_none() {
                job.current = self.next_sentence(job)?;
                if job.current.is_none() {
                    return Ok(None);
                }
            }
            let Some(sentence) = job.current.as_mut() else { return Ok(None) };
            let frames = sentence.prepared.frames();
            let start = self.clock();
            let mut chunk = SpeechChunk {
                start,
                phonemes: std::mem::take(&mut sentence.phonemes),
                visemes: std::mem::take(&mut sentence.visemes),
                ..Default::default()
            };
            let size = CHUNK_FRAMES[sentence.chunk.min(CHUNK_FRAMES.len() - 1)];
            let end = (sentence.next + size).min(frames);
            let audio = self.voice.model.decode_range(&sentence.prepared, sentence.next, end)?;
            sentence.next = end;
            sentence.chunk += 1;
            self.resampler.push_into(&audio, &mut chunk.audio)?;
            if end >= frames {
                self.resampler.flush_into(&mut chunk.audio)?;
                job.current = None;
            }
            self.clock += chunk.audio.len() as u64;
            if !chunk.audio.is_empty() || !chunk.visemes.is_empty() {
                return Ok(Some(chunk));
            }
        }
    }
}

struct Sentence {
    prepared: super::vits::Prepared,
    phonemes: Vec<PhonemeTiming>,
    visemes: Vec<VisemeEvent>,
    /// Next latent frame to decode and the index of the next chunk size.
    next: usize,
    chunk: usize,
}

/// What is left to say of one text: its pieces, its sentences, and the
/// sentence being synthesised.
pub struct SpeechJob {
    scales: Scales,
    seed: u64,
    pieces: std::collections::VecDeque<String>,
    /// Phonemes of the current piece's sentences not started yet.
    sentences: std::collections::VecDeque<String>,
    current: Option<Sentence>,
}

/// The chunks of one [`Speaker::say`], synthesised as they are taken.
pub struct Speech<'a> {
    speaker: &'a mut Speaker,
    job: SpeechJob,
}

impl Iterator for Speech<'_> {
    type Item = Result<SpeechChunk, TtsError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.speaker.next_chunk(&mut self.job).transpose()
    }
}
