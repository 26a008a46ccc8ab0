//! Speech recognition: Whisper on candle, one-shot and streaming.
//!
//! The types here are the stage's contract with the rest of tete (the
//! conversation loop, `/v1/audio/transcriptions`): 16 kHz mono f32 in,
//! text with segment timestamps out.

mod decode;
mod model;
pub mod streaming;
mod weights;
mod whisper;
mod window;

pub use streaming::{Partial, StreamingConfig, StreamingTranscriber};
pub use whisper::{DEFAULT_PAD_FRAMES, DecoderWeights, EncoderWindow, Whisper, WhisperConfig, WhisperOptions};

/// Sample rate every recogniser takes.
pub const SAMPLE_RATE: u32 = 16_000;

/// What a caller may ask of one transcription.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranscribeOptions {
    /// ISO 639-1 code ("en"); `None` lets a multilingual model detect it.
    pub language: Option<String>,
    /// Text that came before (earlier turns), given to the decoder as a prompt.
    pub prompt: Option<String>,
}

/// One stretch of recognised speech, timed in seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub id: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    /// Mean log-probability of the segment's tokens.
    pub avg_logprob: f64,
    /// Probability the model gave to "no speech here".
    pub no_speech_prob: f64,
}

/// A whole transcription.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    pub text: String,
    pub language: String,
    /// Length of the audio, in seconds.
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// Why a transcription failed.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("speech model: {0}")]
    Model(String),
    #[error("speech model tensor math: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("language {0:?} is not one this model knows")]
    Language(String),
    #[error("audio: {0}")]
    Audio(String),
}

/// A resident recogniser, shared read-only by every caller.
pub trait SpeechToText: Send + Sync {
    /// The model id of models.toml ("whisper-tiny.en").
    fn model_id(&self) -> &str;
    /// Transcribes 16 kHz mono samples in [-1, 1].
    fn transcribe(&self, pcm: &[f32], options: &TranscribeOptions) -> Result<Transcription, AsrError>;
}
