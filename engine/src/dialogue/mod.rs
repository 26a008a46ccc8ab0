//! One conversation's turn-taking, sans-IO: what the replica does when the
//! user speaks, stops, interrupts or sends an interaction message, and the
//! events the client is told. Driven with the session's time (`now`); it
//! asks for work ([`Action`]) and is told what came of it.
//!
//! States: listening → user speaking → thinking → replica speaking →
//! listening. A reply's text is only committed to the prompt once its first
//! phrase is heard; a reply cancelled before that leaves the user's words
//! to be answered with whatever they say next. A reply cut short keeps only
//! the phrases that were playing or played. With speculation on, a reply
//! starts on the transcript of the user's pause and is kept (its phrases
//! released) when the final transcript says the same.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

use crate::asr::Partial;
use crate::hearing::HearingEvent;
use crate::llm::context::ConversationContext;
use crate::llm::openai::Message;
use crate::llm::tools::Call;
use crate::turn::{BargeInDecision, Interruptibility, Patience};

/// A client → replica message (API.md "Interactions"), checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Interaction {
    /// Speak exactly this text.
    EchoText(String),
    /// Play this audio (`sample_rate` Hz, 16-bit mono).
    EchoAudio {
        pcm: Vec<i16>,
        sample_rate: u32,
    },
    /// As if the user had said `text`.
    Respond(String),
    Interrupt,
    OverwriteContext(String),
    AppendContext(String),
    /// `conversation.sensitivity`: the properties as sent.
    Sensitivity(Value),
}

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Listening,
    UserSpeaking,
    Thinking,
    ReplicaSpeaking,
}

/// A conversation's turn-taking settings (persona and conversation).
#[derive(Debug, Clone, Default)]
pub struct DialogueConfig {
    /// Said when the user joins (`custom_greeting`).
    pub greeting: Option<String>,
    /// `pipeline_mode: echo`: the replica says only what it is sent.
    pub echo_only: bool,
    /// `speculative_inference`: start replying on the pause's transcript.
    pub speculative: bool,
}

/// Work the dialogue asks of the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Compose reply `turn` to this prompt, phrase by phrase.
    Reply { turn: u64, messages: Vec<Message> },
    /// Stop reply `turn`: its composing, its speech, its queued audio.
    Cancel { turn: u64 },
    /// Say `text`, phrase `seq` of reply `turn`.
    Speak { turn: u64, seq: u32, text: String },
    /// Play this audio as reply `turn` (an echo of audio).
    Play { turn: u64, pcm: Vec<f32>, sample_rate: u32 },
    /// Tell hearing whether the replica is speaking (barge-in, echo gate).
    ReplicaSpeaking(bool),
    /// New turn-taking sensitivity for hearing.
    Sensitivity { patience: Option<Patience>, interruptibility: Option<Interruptibility> },
    /// A `conversation.*` event for the client (`event_type`, `properties`).
    Event { event_type: &'static str, properties: Value },
    /// A line of the transcript.
    Utterance { role: &'static str, text: String },
    /// A client message that could not be acted on (why).
    Refused(String),
}

/// How a reply's composing ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEnd {
    /// All its phrases were given.
    Done,
    /// The model called a function instead of answering.
    Call(Call),
    /// The model failed; the replica says `fallback` instead.
    Failed { error: String, fallback: String },
}

/// The reply being composed or spoken.
#[derive(Debug, Clone)]
struct Reply {
    turn: u64,
    /// What the user said that this answers (empty for an echo or greeting).
    answering: String,
    /// Speculative and not confirmed yet: its phrases are held back.
    speculative: bool,
    held: Vec<String>,
    /// Phrases given to speech, in order.
    phrases: Vec<String>,
    /// Phrases whose audio has started playing.
    playing: usize,
    /// Phrases whose audio has all played.
    played: usize,
    composed: bool,
    /// It goes into the prompt as the assistant's turn (not for echoes).
    in_prompt: bool,
    started_at: Option<Duration>,
    /// An echo of audio: nothing to compose, the audio is its one phrase.
    audio: bool,
}

impl Reply {
    fn new(turn: u64, answering: String) -> Self {
        Self {
            turn,
            answering,
            speculative: false,
            held: Vec::new(),
            phrases: Vec::new(),
            playing: 0,
            played: 0,
            composed: false,
            in_prompt: true,
            started_at: None,
            audio: false,
        }
    }

    fn spoken(&self) -> String {
        self.phrases[..self.playing.min(self.phrases.len())].join(" ")
    }
}

/// One conversation's dialogue.
#[derive(Debug)]
pub struct Dialogue {
    config: DialogueConfig,
    context: ConversationContext,
    state: State,
    next_turn: u64,
    reply: Option<Reply>,
    /// The user's words not answered yet (a reply to them was cancelled
    /// before it was heard, or none started).
    unanswered: String,
    /// Text of the partial the speculative reply started on.
    speculated: Option<String>,
    /// When the replica's audio started playing, while it plays.
    speaking_since: Option<Duration>,
    /// Perception notes since the user's last utterance event.
    notes: Vec<String>,
    actions: VecDeque<Action>,
}

/// Words compared for speculation: lowercase, letters and digits.
fn normalized(text: &str) -> String {
    text.split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn partial_text(p: &Partial) -> String {
    format!("{} {}", p.committed_text, p.tentative_text).trim().to_string()
}

impl Dialogue {
    pub fn new(config: DialogueConfig, context: ConversationContext) -> Self {
        Self {
            config,
            context,
            state: State::Listening,
            next_turn: 1,
            reply: None,
            unanswered: String::new(),
            speculated: None,
            speaking_since: None,
            notes: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn context(&self) -> &ConversationContext {
        &self.context
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn event(&mut self, event_type: &'static str, properties: Value) {
        self.actions.push_back(Action::Event { event_type, properties });
    }

    fn new_turn(&mut self) -> u64 {
        let turn = self.next_turn;
        self.next_turn += 1;
        turn
    }

    /// The user joined: the greeting, if there is one.
    pub fn joined(&mut self, now: Duration) {
        if let Some(greeting) = self.config.greeting.clone().filter(|g| !g.trim().is_empty()) {
            self.say(now, greeting, true);
        }
    }

    /// Says `text` as a reply of its own (greeting, echo).
    fn say(&mut self, now: Duration, text: String, in_prompt: bool) {
        self.stop(now);
        let turn = self.new_turn();
        let mut reply = Reply::new(turn, String::new());
        reply.in_prompt = in_prompt;
        reply.composed = true;
        self.reply = Some(reply);
        self.speak(text);
        self.state = State::Thinking;
    }

    fn speak(&mut self, text: String) {
        let Some(reply) = &mut self.reply else { return };
        let seq = reply.phrases.len() as u32;
        reply.phrases.push(text.clone());
        let turn = reply.turn;
        self.actions.push_back(Action::Speak { turn, seq, text: text.clone() });
        self.event(
            "conversation.utterance.streaming",
            json!({"role": "replica", "inference_id": turn.to_string(), "seq": seq, "text": text,
                   "final": false, "is_interrupted": false}),
        );
    }

    /// What hearing reported.
    pub fn heard(&mut self, now: Duration, event: HearingEvent) {
        match event {
            HearingEvent::SpeechStarted { .. } => {
                self.event("conversation.user.started_speaking", json!({}));
                if self.config.echo_only {
                    return;
                }
                match self.state {
                    State::Listening => self.state = State::UserSpeaking,
                    // They were not done: what was being composed answers too little.
                    State::Thinking => {
                        self.cancel_reply(false);
                        self.state = State::UserSpeaking;
                    }
                    State::UserSpeaking => {
                        if self.speculated.take().is_some() {
                            self.cancel_reply(false);
                        }
                    }
                    // Barge-in decides.
                    State::ReplicaSpeaking => {}
                }
            }
            HearingEvent::SpeechStopped { .. } => {
                self.event("conversation.user.stopped_speaking", json!({}));
            }
            HearingEvent::Partial(partial) => {
                // The pause's decode: at the VAD's pause, or just before it
                // when the hearing starts it early.
                if partial.at_pause
                    && self.config.speculative
                    && !self.config.echo_only
                    && self.state == State::UserSpeaking
                    && self.speculated.is_none()
                {
                    let text = partial_text(&partial);
                    if !normalized(&text).is_empty() {
                        self.start_reply(now, text.clone(), true);
                        self.speculated = Some(text);
                    }
                }
            }
            HearingEvent::EndOfTurn { transcript, .. } => {
                let text = transcript.text.trim().to_string();
                if self.config.echo_only {
                    return;
                }
                let speculated = self.speculated.take();
                if text.is_empty() {
                    if speculated.is_some() {
                        self.cancel_reply(false);
                    }
                    if self.state == State::UserSpeaking {
                        self.state = State::Listening;
                    }
                    return;
                }
                self.user_said(&text);
                let kept = speculated.is_some_and(|s| normalized(&s) == normalized(&text));
                if kept {
                    self.confirm_speculation(now);
                } else {
                    self.start_reply(now, text, false);
                }
            }
            HearingEvent::BargeIn { decision, .. } => {
                if decision == BargeInDecision::Interrupt {
                    self.interrupt(now);
                }
            }
        }
    }

    /// Starts a reply to the user's `text` (with anything left unanswered).
    fn start_reply(&mut self, now: Duration, text: String, speculative: bool) {
        self.cancel_reply(false);
        let answering = if self.unanswered.is_empty() { text } else { format!("{} {text}", self.unanswered) };
        let turn = self.new_turn();
        let mut context = self.context.clone();
        context.user(&answering);
        let mut reply = Reply::new(turn, answering);
        reply.speculative = speculative;
        reply.started_at = Some(now);
        self.reply = Some(reply);
        self.actions.push_back(Action::Reply { turn, messages: context.messages() });
        self.state = State::Thinking;
    }

    fn confirm_speculation(&mut self, now: Duration) {
        let Some(reply) = &mut self.reply else { return };
        reply.speculative = false;
        let held = std::mem::take(&mut reply.held);
        let composed = reply.composed;
        for phrase in held {
            self.speak(phrase);
        }
        self.state = State::Thinking;
        if composed {
            self.maybe_finish_at(now);
        }
    }

    /// Stops the current reply. `heard` marks what was spoken of it as said.
    fn cancel_reply(&mut self, interrupted: bool) {
        let Some(reply) = self.reply.take() else { return };
        self.actions.push_back(Action::Cancel { turn: reply.turn });
        self.speculated = None;
        if reply.playing == 0 {
            // Nothing of it was heard: the user's words are still unanswered
            // (a speculative reply's words come again in the final).
            if !reply.speculative && !reply.answering.is_empty() {
                self.unanswered = reply.answering.clone();
            }
            return;
        }
        self.end_spoken(&reply, interrupted);
    }

    /// The replica's part of a reply that was heard goes into the
    /// transcript, the prompt and the events.
    fn end_spoken(&mut self, reply: &Reply, interrupted: bool) {
        let spoken = reply.spoken();
        if reply.in_prompt && !spoken.is_empty() {
            self.context.assistant(&spoken, interrupted);
        }
        if !spoken.is_empty() {
            self.actions.push_back(Action::Utterance { role: "replica", text: spoken.clone() });
            self.event("conversation.utterance", json!({"role": "replica", "text": spoken}));
        }
        self.event(
            "conversation.utterance.streaming",
            json!({"role": "replica", "inference_id": reply.turn.to_string(), "seq": reply.phrases.len(),
                   "text": spoken, "final": true, "is_interrupted": interrupted}),
        );
    }

    /// Stops what the replica composes or says: an interruption when it is
    /// being heard.
    fn stop(&mut self, now: Duration) {
        if self.state == State::ReplicaSpeaking {
            self.interrupt(now);
        } else {
            self.cancel_reply(false);
        }
    }

    /// The user interrupts (barge-in or `conversation.interrupt`).
    fn interrupt(&mut self, now: Duration) {
        let speaking = self.state == State::ReplicaSpeaking;
        if self.reply.is_none() {
            return;
        }
        self.cancel_reply(true);
        if speaking {
            self.event("conversation.replica_interrupted", json!({}));
            self.stopped_speaking(now);
        }
        self.state = State::UserSpeaking;
    }

    fn stopped_speaking(&mut self, now: Duration) {
        self.actions.push_back(Action::ReplicaSpeaking(false));
        let duration = self.speaking_since.take().map_or(0.0, |t| now.saturating_sub(t).as_secs_f64());
        self.event("conversation.replica.stopped_speaking", json!({"duration": (duration * 1000.0).round() / 1000.0}));
    }

    /// A phrase of reply `turn` was composed.
    pub fn phrase(&mut self, _now: Duration, turn: u64, text: String) {
        let Some(reply) = self.reply.as_mut().filter(|r| r.turn == turn) else { return };
        if reply.speculative {
            reply.held.push(text);
        } else {
            self.speak(text);
        }
    }

    /// Reply `turn` is composed (or failed, or called a function).
    pub fn composed(&mut self, now: Duration, turn: u64, end: ReplyEnd) {
        let Some(reply) = self.reply.as_mut().filter(|r| r.turn == turn) else { return };
        reply.composed = true;
        match end {
            ReplyEnd::Done => {}
            ReplyEnd::Call(call) => {
                // The question goes into the prompt before the call it led to.
                let answering = std::mem::take(&mut reply.answering);
                if !answering.is_empty() {
                    self.context.user(&answering);
                    self.unanswered.clear();
                }
                let id = format!("call_{turn}");
                self.event(
                    "conversation.tool_call",
                    json!({"id": id, "name": call.name, "arguments": call.arguments.to_string()}),
                );
                self.context.assistant(&format!("(called {} with {})", call.name, call.arguments), false);
            }
            ReplyEnd::Failed { error, fallback } => {
                let speculative = reply.speculative;
                self.event("conversation.error", json!({"message": format!("the replica could not answer: {error}")}));
                if speculative {
                    // Nobody heard a word of it: try again on the final.
                    self.cancel_reply(false);
                    return;
                }
                self.speak(fallback);
            }
        }
        if self.reply.as_ref().is_some_and(|r| !r.speculative) {
            self.maybe_finish_at(now);
        }
    }

    /// The audio of phrase `seq` of reply `turn` started playing.
    pub fn playing(&mut self, now: Duration, turn: u64, seq: u32) {
        let Some(reply) = self.reply.as_mut().filter(|r| r.turn == turn) else { return };
        reply.playing = reply.playing.max(seq as usize + 1);
        if self.state != State::ReplicaSpeaking {
            self.state = State::ReplicaSpeaking;
            // The user's words are answered now: they go into the prompt.
            let answering = std::mem::take(&mut reply.answering);
            self.unanswered.clear();
            if !answering.is_empty() {
                self.context.user(&answering);
            }
            self.speaking_since = Some(now);
            self.actions.push_back(Action::ReplicaSpeaking(true));
            self.event("conversation.replica.started_speaking", json!({"inference_id": turn.to_string()}));
        }
    }

    /// The audio of phrases up to `seq` of reply `turn` has all played.
    pub fn played_out(&mut self, now: Duration, turn: u64, seq: u32) {
        if let Some(reply) = self.reply.as_mut().filter(|r| r.turn == turn) {
            reply.played = reply.played.max(seq as usize + 1);
            self.maybe_finish_at(now);
        }
    }

    fn maybe_finish_at(&mut self, now: Duration) {
        let Some(reply) = &self.reply else { return };
        if !reply.composed || reply.speculative {
            return;
        }
        if reply.played >= reply.phrases.len() {
            self.finish_reply(now);
        }
    }

    /// A reply composed and heard to its end.
    fn finish_reply(&mut self, now: Duration) {
        let Some(reply) = self.reply.take() else { return };
        let speaking = self.state == State::ReplicaSpeaking;
        if reply.playing > 0 {
            self.end_spoken(&reply, false);
        } else if !reply.answering.is_empty() {
            // Composed to nothing (a function call, an empty answer).
            self.context.user(&reply.answering);
            self.unanswered.clear();
        }
        if speaking {
            self.stopped_speaking(now);
        }
        self.state = State::Listening;
    }

    /// A message from the client.
    pub fn interaction(&mut self, now: Duration, message: Interaction) {
        match message {
            Interaction::EchoText(text) => {
                self.say(now, text, !self.config.echo_only);
            }
            Interaction::EchoAudio { pcm, sample_rate } => {
                self.stop(now);
                let turn = self.new_turn();
                let mut reply = Reply::new(turn, String::new());
                (reply.composed, reply.in_prompt, reply.audio) = (true, false, true);
                reply.phrases.push(String::new());
                self.reply = Some(reply);
                let pcm = pcm.iter().map(|&s| f32::from(s) / 32768.0).collect();
                self.actions.push_back(Action::Play { turn, pcm, sample_rate });
                self.state = State::Thinking;
            }
            Interaction::Respond(text) => {
                if self.config.echo_only {
                    self.actions.push_back(Action::Refused(
                        "conversation.respond needs a persona with pipeline_mode full (this one echoes)".into(),
                    ));
                    return;
                }
                if self.state == State::ReplicaSpeaking {
                    self.interrupt(now);
                }
                self.user_said(&text);
                self.start_reply(now, text, false);
            }
            Interaction::Interrupt => self.interrupt(now),
            Interaction::OverwriteContext(context) => self.context.overwrite(&context),
            Interaction::AppendContext(context) => self.context.append(&context),
            Interaction::Sensitivity(properties) => match sensitivity(&properties) {
                Ok((patience, interruptibility)) => {
                    self.actions.push_back(Action::Sensitivity { patience, interruptibility })
                }
                Err(why) => self.actions.push_back(Action::Refused(why)),
            },
        }
    }

    /// A perception note: into the prompt, and into the next user utterance event.
    pub fn noticed(&mut self, note: &str) {
        self.context.perceive(note);
        self.notes.push(note.to_string());
    }

    /// The user's utterance: into the transcript and out as an event, with
    /// what perception noticed since the last one.
    fn user_said(&mut self, text: &str) {
        self.actions.push_back(Action::Utterance { role: "user", text: text.to_string() });
        let mut properties = json!({"role": "user", "text": text});
        if !self.notes.is_empty() {
            properties["user_visual_analysis"] = json!(std::mem::take(&mut self.notes).join(" "));
        }
        self.event("conversation.utterance", properties);
    }
}

/// `conversation.sensitivity` properties: `participant_pause_sensitivity`
/// (how soon the replica takes its turn) and
/// `participant_interrupt_sensitivity` (how easily the user interrupts),
/// each `low | medium | high`.
fn sensitivity(p: &Value) -> Result<(Option<Patience>, Option<Interruptibility>), String> {
    let level = |key: &str| -> Result<Option<crate::turn::Level>, String> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|e| format!("properties.{key}: {e}")),
            Some(_) => Err(format!("properties.{key} must be low, medium or high")),
        }
    };
    // High pause sensitivity answers sooner: low patience.
    let patience = level("participant_pause_sensitivity")?.map(|l| match l {
        crate::turn::Level::Low => Patience::High,
        crate::turn::Level::Medium => Patience::Medium,
        crate::turn::Level::High => Patience::Low,
    });
    let interruptibility = level("participant_interrupt_sensitivity")?;
    if patience.is_none() && interruptibility.is_none() {
        return Err(
            "conversation.sensitivity needs participant_pause_sensitivity or participant_interrupt_sensitivity".into(),
        );
    }
    Ok((patience, interruptibility))
}

#[cfg(test)]
mod tests;
