//! Voice activity: Silero VAD scores every 32 ms of 16 kHz audio, and a
//! hysteresis segmenter turns the scores into speech start and stop events.
//! Sans-IO: time is the sample count of the session's audio.

mod silero;

pub use silero::{CHUNK, CONTEXT, SileroState, SileroVad, VadError};

use std::sync::Arc;

/// Sample rate the VAD works at.
pub const SAMPLE_RATE: u32 = 16_000;

/// When speech starts and stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// P(speech) at or above which a chunk counts as speech.
    pub start_threshold: f32,
    /// P(speech) below which a chunk counts as silence (lower: hysteresis).
    pub stop_threshold: f32,
    /// Speech must last this long (ms) before it is reported.
    pub min_speech_ms: u32,
    /// Silence must last this long (ms) before speech is reported over.
    pub min_silence_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self { start_threshold: 0.5, stop_threshold: 0.35, min_speech_ms: 96, min_silence_ms: 160 }
    }
}

/// What the VAD reports. Times are in samples since the session began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VadEvent {
    SpeechStarted { at: u64 },
    SpeechStopped { at: u64 },
}

/// Turns per-chunk probabilities into events with hysteresis.
#[derive(Debug, Clone)]
pub struct Segmenter {
    config: VadConfig,
    speaking: bool,
    /// Where the current run of the opposite state began, if one is under way.
    candidate: Option<u64>,
}

fn samples(ms: u32) -> u64 {
    u64::from(ms) * u64::from(SAMPLE_RATE) / 1000
}

impl Segmenter {
    pub fn new(config: VadConfig) -> Self {
        Self { config, speaking: false, candidate: None }
    }

    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Feeds the probability of the chunk that starts at sample `at` and lasts `len`.
    pub fn step(&mut self, prob: f32, at: u64, len: u64) -> Option<VadEvent> {
        let end = at + len;
        let (flips, min) = if self.speaking {
            (prob < self.config.stop_threshold, samples(self.config.min_silence_ms))
        } else {
            (prob >= self.config.start_threshold, samples(self.config.min_speech_ms))
        };
        // Between the thresholds while speaking, or below start while silent: the run continues.
        let keeps_state = if self.speaking { prob >= self.config.start_threshold } else { !flips };
        if !flips {
            if keeps_state || !self.speaking {
                self.candidate = None;
            }
            return None;
        }
        let since = *self.candidate.get_or_insert(at);
        if end - since < min {
            return None;
        }
        self.candidate = None;
        self.speaking = !self.speaking;
        Some(if self.speaking { VadEvent::SpeechStarted { at: since } } else { VadEvent::SpeechStopped { at: since } })
    }

    pub fn reset(&mut self) {
        self.speaking = false;
        self.candidate = None;
    }
}

/// One session's VAD: buffers audio into 512-sample chunks, scores them
/// with the shared model, and segments.
#[derive(Debug)]
pub struct VadSession {
    model: Arc<SileroVad>,
    state: SileroState,
    segmenter: Segmenter,
    pending: Vec<f32>,
    /// Samples consumed into chunks so far.
    position: u64,
    last_prob: f32,
}

impl VadSession {
    pub fn new(model: Arc<SileroVad>, config: VadConfig) -> Result<Self, VadError> {
        let state = model.new_state()?;
        Ok(Self {
            model,
            state,
            segmenter: Segmenter::new(config),
            pending: Vec::with_capacity(CHUNK),
            position: 0,
            last_prob: 0.0,
        })
    }

    /// Feeds 16 kHz mono samples in [-1, 1] of any length; returns the
    /// events of every chunk completed, with the probabilities scored.
    pub fn push(&mut self, samples: &[f32]) -> Result<(Vec<VadEvent>, Vec<f32>), VadError> {
        let mut events = Vec::new();
        let mut probs = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (CHUNK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == CHUNK {
                let chunk: &[f32; CHUNK] = self.pending.as_slice().try_into().expect("pending holds exactly one chunk");
                let p = self.model.step(chunk, &mut self.state)?;
                self.pending.clear();
                events.extend(self.segmenter.step(p, self.position, CHUNK as u64));
                self.position += CHUNK as u64;
                self.last_prob = p;
                probs.push(p);
            }
        }
        Ok((events, probs))
    }

    pub fn is_speaking(&self) -> bool {
        self.segmenter.is_speaking()
    }

    pub fn last_probability(&self) -> f32 {
        self.last_prob
    }

    /// Back to the state of a new session.
    pub fn reset(&mut self) -> Result<(), VadError> {
        self.state = self.model.new_state()?;
        self.segmenter.reset();
        self.pending.clear();
        self.position = 0;
        self.last_prob = 0.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = CHUNK as u64;

    fn run(probs: &[f32]) -> Vec<VadEvent> {
        let mut s = Segmenter::new(VadConfig::default());
        probs.iter().enumerate().filter_map(|(i, &p)| s.step(p, i as u64 * C, C)).collect()
    }

    #[test]
    fn speech_needs_min_duration_and_silence_needs_min_duration() {
        // 96 ms = 1536 samples = 3 chunks of speech before a start.
        assert_eq!(run(&[0.9, 0.9, 0.1]), vec![]);
        assert_eq!(run(&[0.1, 0.9, 0.9, 0.9]), vec![VadEvent::SpeechStarted { at: C }]);
        // 160 ms = 2560 samples = 5 chunks of silence before a stop.
        let mut p = vec![0.9; 4];
        p.extend([0.1; 4]);
        assert_eq!(run(&p), vec![VadEvent::SpeechStarted { at: 0 }]);
        p.push(0.1);
        assert_eq!(run(&p), vec![VadEvent::SpeechStarted { at: 0 }, VadEvent::SpeechStopped { at: 4 * C }]);
    }

    #[test]
    fn hysteresis_keeps_speech_between_the_thresholds() {
        let mut p = vec![0.9; 4];
        p.extend([0.4; 20]); // below start, above stop: still speaking
        assert_eq!(run(&p), vec![VadEvent::SpeechStarted { at: 0 }]);
        // A short dip below stop does not end speech when speech resumes.
        let mut p = vec![0.9; 4];
        p.extend([0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1]);
        assert_eq!(run(&p), vec![VadEvent::SpeechStarted { at: 0 }]);
    }
}
