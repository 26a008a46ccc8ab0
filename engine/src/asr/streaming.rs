//! Streaming recognition of one utterance, sans-IO: the caller pushes audio
//! as it arrives, calls [`StreamingTranscriber::step`] when it likes (each
//! step that finds at least half a second of new audio decodes the whole
//! utterance so far and returns a [`Partial`]), and
//! [`StreamingTranscriber::finish`] at the endpoint.
//!
//! A word is committed once `agreement` decodes in a row (two by default)
//! agree on it and on every word before it, compared without case and
//! punctuation; committed words are never taken back in the partials.
//! Every decode after the first takes the previous decode's tokens as its
//! draft (see `decode::greedy`): what has not changed is confirmed in one
//! batched pass, so a step costs the encoder plus the decoder steps of the
//! new words. The final is the one-shot transcription of the whole utterance
//! (the same greedy tokens); when no audio came after the last step it is
//! that step's decode, returned at once.

use super::whisper::{Whisper, WindowTokens};
use super::{AsrError, SAMPLE_RATE, TranscribeOptions, Transcription};

/// When a session re-decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingConfig {
    /// New samples needed before a step decodes again (8000: 0.5 s).
    pub step_samples: usize,
    /// Consecutive decodes that must agree on a word to commit it (2).
    pub agreement: usize,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self { step_samples: SAMPLE_RATE as usize / 2, agreement: 2 }
    }
}

/// The recogniser's view of the utterance so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// Increases with every partial of the session, across utterances.
    pub seq: u64,
    /// Words the last decodes agreed on; only ever grows within an utterance.
    pub committed_text: String,
    /// The rest of the latest decode, which may still change.
    pub tentative_text: String,
    /// Mean log-probability of the latest decode's tokens (hallucinations
    /// on short or non-speech audio score low, below about −1).
    pub avg_logprob: f64,
    /// The highest "no speech here" probability among its segments.
    pub no_speech_prob: f64,
    /// Decoded at a pause in the speech, over everything heard until it:
    /// the final transcript, should the pause end the turn.
    pub at_pause: bool,
}

/// One session's streaming state: the utterance's audio and what its
/// decodes said. The model is passed in; the session holds no weights.
#[derive(Debug, Clone)]
pub struct StreamingTranscriber {
    config: StreamingConfig,
    options: TranscribeOptions,
    audio: Vec<f32>,
    /// Samples the last decode covered.
    decoded: usize,
    last: Option<(Transcription, Vec<WindowTokens>)>,
    /// The words of the latest decodes, newest last, as compared (see `key`).
    recent: Vec<Vec<String>>,
    committed: Vec<String>,
    seq: u64,
}

impl StreamingTranscriber {
    pub fn new(options: TranscribeOptions, config: StreamingConfig) -> Self {
        Self {
            config,
            options,
            audio: Vec::new(),
            decoded: 0,
            last: None,
            recent: Vec::new(),
            committed: Vec::new(),
            seq: 0,
        }
    }

    /// Appends 16 kHz mono samples. Refuses (and keeps none of) a chunk with
    /// a sample that is not finite.
    pub fn push(&mut self, pcm: &[f32]) -> Result<(), AsrError> {
        if let Some(i) = pcm.iter().position(|s| !s.is_finite()) {
            return Err(AsrError::Audio(format!("sample {i} of the chunk is {}; audio must be finite", pcm[i])));
        }
        self.audio.extend_from_slice(pcm);
        Ok(())
    }

    /// Seconds of audio in the current utterance.
    pub fn duration(&self) -> f64 {
        self.audio.len() as f64 / f64::from(SAMPLE_RATE)
    }

    /// Decodes the utterance so far if enough new audio came since the last
    /// decode; returns the new partial, or `None` when it did not decode.
    pub fn step(&mut self, model: &Whisper) -> Result<Option<Partial>, AsrError> {
        if self.audio.len() < self.decoded + self.config.step_samples {
            return Ok(None);
        }
        self.step_now(model)
    }

    /// Decodes whatever came since the last decode, however little (at a
    /// pause, so the end of the turn finds its final ready); `None` when
    /// nothing came.
    pub fn step_now(&mut self, model: &Whisper) -> Result<Option<Partial>, AsrError> {
        if self.audio.is_empty() || self.audio.len() == self.decoded {
            return Ok(None);
        }
        let transcription = self.decode(model)?;
        let words: Vec<&str> = transcription.text.split_whitespace().collect();
        let keys: Vec<String> = words.iter().map(|w| key(w)).collect();
        self.recent.push(keys);
        if self.recent.len() > self.config.agreement.max(1) {
            self.recent.remove(0);
        }
        let latest = &self.recent[self.recent.len() - 1];
        if self.recent.len() == self.config.agreement.max(1) {
            let agreed = self.recent.iter().map(|other| common_prefix(other, latest)).min().unwrap_or(0);
            let consistent = self.committed.len() <= latest.len()
                && self.committed.iter().zip(latest).all(|(word, k)| key(word) == *k);
            if agreed > self.committed.len() && consistent {
                // Keep the words as first committed (the text only ever grows).
                let new = &words[self.committed.len()..agreed];
                self.committed.extend(new.iter().map(|w| w.to_string()));
            }
        }
        let tentative = words.get(self.committed.len()..).unwrap_or_default().join(" ");
        self.seq += 1;
        let segments = &transcription.segments;
        let avg_logprob = if segments.is_empty() {
            0.0
        } else {
            segments.iter().map(|s| s.avg_logprob).sum::<f64>() / segments.len() as f64
        };
        let no_speech_prob = segments.iter().map(|s| s.no_speech_prob).fold(0.0, f64::max);
        Ok(Some(Partial {
            seq: self.seq,
            committed_text: self.committed.join(" "),
            tentative_text: tentative,
            avg_logprob,
            no_speech_prob,
            at_pause: false,
        }))
    }

    /// The utterance is over: its transcription, equal to a one-shot
    /// transcription of all its audio. The session is then empty, ready for
    /// the next utterance.
    pub fn finish(&mut self, model: &Whisper) -> Result<Transcription, AsrError> {
        let done = match self.last.take() {
            Some((transcription, _)) if self.decoded == self.audio.len() => transcription,
            last => {
                self.last = last;
                self.decode(model)?
            }
        };
        self.reset();
        Ok(done)
    }

    /// Samples in the current utterance.
    pub fn len(&self) -> usize {
        self.audio.len()
    }

    pub fn is_empty(&self) -> bool {
        self.audio.is_empty()
    }

    /// [`finish`](Self::finish) for the utterance's first `len` samples: what
    /// came after (the silence that ended the turn) is dropped. When the
    /// last decode covered exactly those samples, its result returns at once.
    pub fn finish_until(&mut self, model: &Whisper, len: usize) -> Result<Transcription, AsrError> {
        self.audio.truncate(len);
        if self.decoded > self.audio.len() {
            self.decoded = 0;
        }
        self.finish(model)
    }

    /// Drops the utterance (barge-in, a cancelled turn) without decoding it.
    pub fn reset(&mut self) {
        self.audio.clear();
        self.decoded = 0;
        self.last = None;
        self.recent.clear();
        self.committed.clear();
    }

    fn decode(&mut self, model: &Whisper) -> Result<Transcription, AsrError> {
        let drafts = self.last.as_ref().map_or(&[][..], |(_, windows)| &windows[..]);
        let (transcription, windows) = model.transcribe_drafted(&self.audio, &self.options, drafts)?;
        self.decoded = self.audio.len();
        self.last = Some((transcription.clone(), windows));
        Ok(transcription)
    }
}

/// A word as decodes are compared: lower case, letters and digits only.
fn key(word: &str) -> String {
    word.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

fn common_prefix(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
