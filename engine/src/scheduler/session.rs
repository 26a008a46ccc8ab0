//! One session's state on the executor and the work run on it: hearing,
//! a reply's prefill and composing, and its speech chunk by chunk.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::{FALLBACK_LINE, MAX_REPLY_TOKENS, Output, REPLY_REPEAT_PENALTY, Resident, Stage, Work};
use crate::dialogue::ReplyEnd;
use crate::hearing::HearingSession;
use crate::llm::chat::{self, CompletionOptions, ToolSet};
use crate::llm::openai::Message;
use crate::llm::tools::ToolChoice;
use crate::llm::{FinishReason, GenerateConfig, Generator, LlmSession, PhraseChunker};
use crate::tts::{Speaker, SpeechChunk, SpeechJob, VoiceSettings};

/// A reply being composed one token at a time.
pub(super) struct Composing {
    pub(super) turn: u64,
    pub(super) generator: Generator,
    pub(super) chunker: PhraseChunker,
    pub(super) phrases: usize,
}

/// One session's state on the executor.
pub(super) struct Session {
    pub(super) out: Sender<Output>,
    pub(super) cancelled: Arc<AtomicU64>,
    pub(super) hearing: Option<HearingSession>,
    pub(super) llm: Option<LlmSession>,
    pub(super) tools: ToolSet,
    pub(super) composing: Option<Composing>,
    pub(super) speaker: Option<Speaker>,
    /// Phrases to say, in order; the first is being said.
    pub(super) speech: VecDeque<Phrase>,
    pub(super) voice: VoiceSettings,
}

/// A phrase to say, and its speech once started.
pub(super) struct Phrase {
    pub(super) turn: u64,
    pub(super) seq: u32,
    pub(super) text: String,
    pub(super) job: Option<SpeechJob>,
}

/// What an item leaves to do.
pub(super) enum Next {
    /// The reply of this turn composes its next token.
    Decode(u64),
    /// The session's speech goes on, within this time.
    Speak(Duration),
}

impl Session {
    pub(super) fn is_cancelled(&self, turn: u64) -> bool {
        turn <= self.cancelled.load(Ordering::Acquire)
    }

    pub(super) fn send(&self, output: Output) {
        let _ = self.out.send(output);
    }

    pub(super) fn failed(&self, stage: Stage, error: impl std::fmt::Display) {
        self.send(Output::Failed { stage, error: error.to_string() });
    }
}

/// Ends a reply's composing after an error: `Composed` with the error and
/// the line the replica says instead.
pub(super) fn fail_composing(session: &mut Session, turn: u64, error: impl std::fmt::Display) {
    session.composing = None;
    session.send(Output::Composed { turn, end: failed(error) });
}

/// A reply that failed: the error, and the line the replica says instead.
fn failed(error: impl std::fmt::Display) -> ReplyEnd {
    ReplyEnd::Failed { error: error.to_string(), fallback: FALLBACK_LINE.into() }
}

/// Ends a reply's composing: the chunker's last phrase, then `Composed`.
pub(super) fn finish_composing(session: &mut Session, reason: FinishReason) {
    let Some(mut composing) = session.composing.take() else { return };
    if reason == FinishReason::Cancelled {
        return;
    }
    let rest = composing.generator.flush();
    let mut phrases = composing.chunker.push(&rest);
    phrases.extend(composing.chunker.finish());
    for phrase in phrases {
        session.send(Output::Phrase { turn: composing.turn, text: phrase });
    }
    session.send(Output::Composed { turn: composing.turn, end: ReplyEnd::Done });
}

/// Runs one item's work for `session`; says what it leaves to do.
pub(super) fn run_work(resident: &Resident, session: &mut Session, work: Work) -> Option<Next> {
    match work {
        Work::Hear(pcm) => {
            let hearing = session.hearing.as_mut()?;
            match hearing.push_heard(&resident.hearing, &pcm) {
                Ok(events) => events.into_iter().for_each(|e| session.send(Output::Heard(e))),
                Err(e) => session.failed(Stage::Hear, e),
            }
        }
        Work::Played(pcm) => {
            if let Some(hearing) = session.hearing.as_mut() {
                hearing.push_played(&pcm);
            }
        }
        Work::ReplicaSpeaking(speaking) => {
            if let Some(hearing) = session.hearing.as_mut() {
                for e in hearing.replica_speaking(speaking) {
                    session.send(Output::Heard(e));
                }
            }
        }
        Work::Sensitivity { patience, interruptibility } => {
            if let Some(hearing) = session.hearing.as_mut() {
                hearing.set_sensitivity(patience, interruptibility);
            }
        }
        Work::Reply { turn, messages } => {
            if session.is_cancelled(turn) {
                return None;
            }
            session.composing = None;
            if session.tools.choice != ToolChoice::None && !session.tools.tools.is_empty() {
                complete_with_tools(resident, session, turn, &messages);
                return None;
            }
            match prefill(resident, session, &messages) {
                Ok(max_tokens) => {
                    let config = GenerateConfig {
                        max_tokens,
                        repeat_penalty: REPLY_REPEAT_PENALTY,
                        ..GenerateConfig::default()
                    };
                    session.composing = Some(Composing {
                        turn,
                        generator: Generator::new(&config),
                        chunker: PhraseChunker::new(),
                        phrases: 0,
                    });
                    return Some(Next::Decode(turn));
                }
                Err(e) => session.send(Output::Composed { turn, end: failed(e) }),
            }
        }
        Work::Speak { turn, seq, text } => {
            if session.is_cancelled(turn) {
                return None;
            }
            session.speech.push_back(Phrase { turn, seq, text, job: None });
            if session.speech.len() == 1 {
                return Some(Next::Speak(Stage::Speak.budget()));
            }
        }
    }
    None
}

/// Brings the session's KV cache to the reply's prompt, prefilling only
/// what it lacks (the persona and earlier turns are already there). The
/// oldest turns go when the prompt would not leave room for a reply.
/// Returns the tokens the reply may take.
fn prefill(resident: &Resident, session: &mut Session, messages: &[Message]) -> Result<usize, String> {
    let model = &resident.llm;
    let llm = session.llm.as_mut().ok_or("the LLM session did not start")?;
    let max = model.max_seq_len();
    let mut messages = messages.to_vec();
    let tokens = loop {
        let templated = chat::template_messages(&messages).map_err(|e| e.to_string())?;
        let prompt = model.template().render(&templated, true).map_err(|e| e.to_string())?;
        let tokens = model.tokenizer().encode(&prompt).map_err(|e| e.to_string())?;
        if tokens.len() + MAX_REPLY_TOKENS <= max {
            break tokens;
        }
        // Drop the oldest turn after the system messages; never the last.
        let first_turn = messages.iter().position(|m| m.role != "system");
        match first_turn {
            Some(i) if i + 1 < messages.len() => {
                messages.remove(i);
            }
            _ => return Err(format!("the prompt ({} tokens) does not fit the model's {max}", tokens.len())),
        }
    };
    llm.prefill_to(&tokens).map_err(|e| e.to_string())?;
    Ok(MAX_REPLY_TOKENS.min(max - tokens.len()))
}

/// A reply where the persona's tools may be called: composed whole, under
/// the call grammar when the model calls.
fn complete_with_tools(resident: &Resident, session: &mut Session, turn: u64, messages: &[Message]) {
    let cancel = AtomicBool::new(false);
    let mut chunker = PhraseChunker::new();
    let out = session.out.clone();
    let options = CompletionOptions { max_tokens: Some(MAX_REPLY_TOKENS as u32), ..Default::default() };
    let result = chat::complete(&resident.llm, messages, &options, &session.tools, &cancel, |text| {
        for phrase in chunker.push(text) {
            let _ = out.send(Output::Phrase { turn, text: phrase });
        }
    });
    if let Some(phrase) = chunker.finish() {
        session.send(Output::Phrase { turn, text: phrase });
    }
    let end = match result {
        Ok(completion) => completion.call.map_or(ReplyEnd::Done, ReplyEnd::Call),
        Err(e) => failed(e),
    };
    session.send(Output::Composed { turn, end });
}

/// Makes the next chunk of the session's speech and sends it; says how
/// soon the chunk after it is due (while this one plays), if there is one.
/// Phrases of cancelled replies are dropped unsaid.
pub(super) fn speak_next(session: &mut Session) -> Option<Duration> {
    let cancelled = session.cancelled.load(Ordering::Acquire);
    session.speech.retain(|p| p.turn > cancelled);
    let out = session.out.clone();
    let phrase = session.speech.front_mut()?;
    let (turn, seq) = (phrase.turn, phrase.seq);
    let done = |session: &mut Session| {
        session.speech.pop_front();
        let _ = out.send(Output::Speech { turn, seq, chunk: SpeechChunk::default(), last: true });
        (!session.speech.is_empty()).then(|| Stage::Speak.budget())
    };
    let Some(speaker) = session.speaker.as_mut() else { return done(session) };
    if phrase.job.is_none() {
        match speaker.start(&phrase.text, session.voice) {
            Ok(job) => phrase.job = Some(job),
            Err(e) => {
                let _ = out.send(Output::Failed { stage: Stage::Speak, error: e.to_string() });
                return done(session);
            }
        }
    }
    let Some(job) = phrase.job.as_mut() else { return done(session) };
    match speaker.next_chunk(job) {
        Ok(Some(chunk)) => {
            // The next chunk is due before this one has played out.
            let plays = Duration::from_secs_f64(chunk.audio.len() as f64 / f64::from(crate::tts::OUTPUT_RATE));
            let _ = out.send(Output::Speech { turn, seq, chunk, last: false });
            Some(plays.mul_f64(0.6).max(Duration::from_millis(10)))
        }
        Ok(None) => done(session),
        Err(e) => {
            let _ = out.send(Output::Failed { stage: Stage::Speak, error: e.to_string() });
            done(session)
        }
    }
}
