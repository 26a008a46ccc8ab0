//! Token-by-token generation: sampling, text deltas, stop tokens, cancellation.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};
use candle_transformers::utils::apply_repeat_penalty;

use super::LlmError;
use super::model::{LlmModel, LlmSession};
use super::tools::CallConstraint;

/// How the next token is picked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Softmax at `temperature`, then nucleus sampling over mass `top_p`.
    TopP {
        temperature: f64,
        top_p: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateConfig {
    pub sampling: Sampling,
    /// Seed of the sampling RNG (unused when greedy).
    pub seed: u64,
    pub max_tokens: usize,
    /// Logits of the tokens among the last [`REPEAT_WINDOW`] generated are
    /// divided by this (multiplied when negative); 1 leaves them alone.
    pub repeat_penalty: f32,
}

/// How many of the latest generated tokens `repeat_penalty` looks back over.
pub const REPEAT_WINDOW: usize = 64;

impl Default for GenerateConfig {
    fn default() -> Self {
        Self { sampling: Sampling::Greedy, seed: 0, max_tokens: 256, repeat_penalty: 1.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced a stop token.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The cancellation flag was set.
    Cancelled,
}

/// What one [`Generator::step`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A token was generated and fed; `text` is the newly complete UTF-8 (may be empty).
    Token {
        id: u32,
        text: String,
    },
    Done(FinishReason),
}

/// The summary of a finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub reason: FinishReason,
    pub tokens: Vec<u32>,
    pub text: String,
}

/// Bytes in, complete UTF-8 out: a character split across tokens is held
/// until its last byte arrives; invalid bytes become U+FFFD.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // valid_up_to bytes were just checked to be UTF-8.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Drives one answer over a session, one decode step per [`Generator::step`].
pub struct Generator {
    processor: LogitsProcessor,
    utf8: Utf8Stream,
    max_tokens: usize,
    repeat_penalty: f32,
    produced: Vec<u32>,
    done: Option<FinishReason>,
}

impl Generator {
    pub fn new(config: &GenerateConfig) -> Self {
        let sampling = match config.sampling {
            Sampling::Greedy => CandleSampling::ArgMax,
            Sampling::TopP { temperature, top_p } => CandleSampling::TopP { p: top_p, temperature },
        };
        Self {
            processor: LogitsProcessor::from_sampling(config.seed, sampling),
            utf8: Utf8Stream::default(),
            max_tokens: config.max_tokens,
            repeat_penalty: config.repeat_penalty,
            produced: Vec::new(),
            done: None,
        }
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.produced
    }

    /// Samples the next token from the session's logits and feeds it: one
    /// forward of one token. `cancel` is read first; once set, nothing more runs.
    pub fn step(&mut self, model: &LlmModel, session: &mut LlmSession, cancel: &AtomicBool) -> Result<Step, LlmError> {
        match self.choose(model, session, cancel)? {
            Ok(id) => self.feed(model, session, id),
            Err(done) => Ok(done),
        }
    }

    /// The next token, sampled from the session's logits but not fed, so
    /// several sessions can be fed in one batched forward
    /// ([`LlmModel::step_batch`]) before each [`Generator::accept`]s its
    /// token; `Err` with the final step when the generation is done.
    pub fn choose(
        &mut self,
        model: &LlmModel,
        session: &LlmSession,
        cancel: &AtomicBool,
    ) -> Result<Result<u32, Step>, LlmError> {
        if let Some(done) = self.before_step(cancel) {
            return Ok(Err(done));
        }
        let logits = session.logits().ok_or(LlmError::NoLogits)?;
        let id = if self.repeat_penalty == 1.0 || self.produced.is_empty() {
            self.processor.sample(logits)?
        } else {
            let recent = &self.produced[self.produced.len().saturating_sub(REPEAT_WINDOW)..];
            let logits = logits.to_dtype(DType::F32)?;
            self.processor.sample(&apply_repeat_penalty(&logits, self.repeat_penalty, recent)?)?
        };
        if model.stop_tokens().contains(&id) {
            return Ok(Err(self.finish(FinishReason::Stop)));
        }
        Ok(Ok(id))
    }

    /// Takes a [`Generator::choose`]n token as generated once the session
    /// has been fed it; returns its newly complete text.
    pub fn accept(&mut self, model: &LlmModel, id: u32) -> String {
        self.produced.push(id);
        self.utf8.push(model.tokenizer().token_bytes(id))
    }

    /// Like [`Generator::step`], but draws only a token `constraint`
    /// allows, and is done (`Stop`) once the constraint is complete.
    pub fn step_constrained(
        &mut self,
        model: &LlmModel,
        session: &mut LlmSession,
        cancel: &AtomicBool,
        constraint: &mut CallConstraint,
    ) -> Result<Step, LlmError> {
        if let Some(done) = self.before_step(cancel) {
            return Ok(done);
        }
        if constraint.is_complete() {
            return Ok(self.finish(FinishReason::Stop));
        }
        let constrained = |e: super::tools::ToolError| LlmError::Constraint(e.to_string());
        let mask = constraint.mask().map_err(constrained)?;
        let logits = session.logits().ok_or(LlmError::NoLogits)?;
        let mut values = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        for (id, value) in values.iter_mut().enumerate() {
            if id >= mask.len() || !mask.is_allowed(id as u32) {
                *value = f32::NEG_INFINITY;
            }
        }
        let n = values.len();
        let id = self.processor.sample(&Tensor::from_vec(values, n, logits.device())?)?;
        if id as usize >= mask.len() || !mask.is_allowed(id) {
            return Err(LlmError::Constraint("the grammar allows no token here".into()));
        }
        constraint.consume(id).map_err(constrained)?;
        self.feed(model, session, id)
    }

    /// Done already, cancelled, or at the length limit: the step to return.
    fn before_step(&mut self, cancel: &AtomicBool) -> Option<Step> {
        if let Some(reason) = self.done {
            return Some(Step::Done(reason));
        }
        if cancel.load(Ordering::Acquire) {
            return Some(self.finish(FinishReason::Cancelled));
        }
        if self.produced.len() >= self.max_tokens {
            return Some(self.finish(FinishReason::Length));
        }
        None
    }

    /// Takes `id` as generated: its text, and one forward.
    fn feed(&mut self, model: &LlmModel, session: &mut LlmSession, id: u32) -> Result<Step, LlmError> {
        session.step(id)?;
        let text = self.accept(model, id);
        Ok(Step::Token { id, text })
    }

    /// Steps until done, handing each text delta to `on_text` (the bytes
    /// held back for an unfinished character at the end); gives the reason
    /// and the whole text.
    pub fn run(
        &mut self,
        model: &LlmModel,
        session: &mut LlmSession,
        cancel: &AtomicBool,
        mut on_text: impl FnMut(&str),
    ) -> Result<(FinishReason, String), LlmError> {
        let mut text = String::new();
        let reason = loop {
            match self.step(model, session, cancel)? {
                Step::Token { text: delta, .. } => {
                    if !delta.is_empty() {
                        on_text(&delta);
                        text.push_str(&delta);
                    }
                }
                Step::Done(reason) => break reason,
            }
        };
        let rest = self.flush();
        if !rest.is_empty() {
            on_text(&rest);
            text.push_str(&rest);
        }
        Ok((reason, text))
    }

    fn finish(&mut self, reason: FinishReason) -> Step {
        self.done = Some(reason);
        Step::Done(reason)
    }

    /// Bytes held back for an unfinished character, flushed at the end.
    pub fn flush(&mut self) -> String {
        self.utf8.finish()
    }
}

/// Generates after whatever `session` holds until a stop token, the length
/// limit or `cancel`, handing each text delta to `on_text`.
pub fn generate(
    model: &LlmModel,
    session: &mut LlmSession,
    config: &GenerateConfig,
    cancel: &AtomicBool,
    on_text: impl FnMut(&str),
) -> Result<Finish, LlmError> {
    let mut generator = Generator::new(config);
    let (reason, text) = generator.run(model, session, cancel, on_text)?;
    Ok(Finish { reason, tokens: generator.produced, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let bytes = "é€😀".as_bytes();
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&s.push(std::slice::from_ref(b)));
        }
        assert_eq!(out, "é€😀");
        assert_eq!(s.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(s.push(&[0xe2, 0x82]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }
}
