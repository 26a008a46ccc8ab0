//! Speaking: text → phonemes → Piper VITS audio, with phoneme/viseme timings.
pub mod external;
pub mod phonemize;
pub mod speaker;
pub mod viseme;
pub mod vits;

pub use speaker::{
    CHUNK_FRAMES, EMOTIONS, OUTPUT_RATE, Speaker, Speech, SpeechChunk, SpeechJob, TtsError, Voice, VoiceConfig,
    VoiceSettings,
};

/// Latent frames in the first streamed chunk of a sentence (16 · 256 samples,
/// 186 ms at 22.05 kHz): small, so the first audio leaves early.
pub const FIRST_CHUNK_FRAMES: usize = CHUNK_FRAMES[0];
