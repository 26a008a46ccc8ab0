//! Speaking: text → phonemes → Piper VITS audio, with phoneme/viseme timings.
pub mod vits;
