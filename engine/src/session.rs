//! One live conversation on the executor: the dialogue, the session's
//! queue of work and results, and the replica's audio as it plays.
//!
//! Nothing here waits on compute. The network side calls
//! [`LiveSession::heard`] with the user's audio and
//! [`LiveSession::next_audio`] every 20 ms; results from the executor are
//! taken at each call. The replica's audio is placed on the playback clock
//! (48 kHz samples pulled so far); the mouth shapes of each phrase are moved
//! onto the same clock and handed to the renderer as [`FaceCue`]s, so the
//! frame shown at a playback time shows the mouth of the sound played then.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::audio::resample::{StreamResampler, resample};
use crate::dialogue::{Action, Dialogue, DialogueConfig, Interaction, ReplyEnd};
use crate::hearing::HearingEvent;
use crate::llm::PhraseChunker;
use crate::llm::context::ConversationContext;
use crate::llm::openai::{ChatClient, ChatEvent, Message};
use crate::llm::tools::Call;
use crate::scheduler::{Executor, FALLBACK_LINE, Output, SessionHandle, SessionSetup, Work};
use crate::tts::viseme::VisemeEvent;

/// The playback rate.
pub const RATE: u32 = 48_000;
/// Samples in one 20 ms frame of playback.
pub const FRAME: usize = 960;
/// The hearing rate.
const HEARING_RATE: u32 = 16_000;

/// What the renderer is told, on the playback clock (seconds).
#[derive(Debug, Clone, PartialEq)]
pub enum FaceCue {
    /// Mouth shapes of a phrase of the resident voice.
    Visemes(Vec<VisemeEvent>),
    /// Audio without timings (an echo of audio), played from `start`.
    Audio { start: f64, pcm: Vec<f32>, sample_rate: u32 },
    /// Nothing after `at` will be heard.
    Interrupt { at: f64 },
}

/// When each step of one reply happened (wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnTimings {
    /// The user's last voiced audio arrived (from the VAD's offset).
    pub speech_end: Option<Instant>,
    /// Hearing decided the turn was over (with its final transcript).
    pub end_of_turn: Instant,
    /// The reply's first phrase was composed.
    pub first_phrase: Option<Instant>,
    /// Its first speech chunk was ready.
    pub first_audio: Option<Instant>,
    /// Its first audio was handed to the network.
    pub first_played: Instant,
    /// The reply was started before the end of the turn and kept.
    pub speculative: bool,
    /// How long after its audio arrived the end of the turn was decided:
    /// the executor's processing and queueing, apart from the silence the
    /// decision waited for.
    pub decision_lag: Duration,
}

/// A phrase's audio on the playback clock.
#[derive(Debug, Clone, Copy)]
struct Segment {
    turn: u64,
    seq: u32,
    start: u64,
    end: u64,
    /// All its audio has come.
    complete: bool,
    started: bool,
}

/// A persona's own LLM (`layers.llm.base_url`): replies are composed there,
/// streamed on `runtime`, instead of on the resident model.
#[derive(Debug, Clone)]
pub struct RemoteLlm {
    pub client: ChatClient,
    /// The persona's tools, passed through as OpenAI function schemas.
    pub tools: Option<Vec<Value>>,
    pub runtime: tokio::runtime::Handle,
}

/// What a remote reply's stream gave.
enum Remote {
    Text(u64, String),
    Done(u64, ReplyEnd),
}

/// The remote LLM and the reply it is composing.
struct RemoteReplies {
    llm: RemoteLlm,
    results: crossbeam_channel::Receiver<Remote>,
    sender: crossbeam_channel::Sender<Remote>,
    /// The reply being streamed, its phrase chunker and its task.
    current: Option<(u64, PhraseChunker, tokio::task::JoinHandle<()>)>,
}

/// One live conversation.
pub struct LiveSession {
    dialogue: Dialogue,
    handle: SessionHandle,
    epoch: Instant,
    /// Replica audio not played yet; `queue[0]` plays at sample `queued_at`.
    queue: VecDeque<f32>,
    queued_at: u64,
    /// Samples handed to the network so far: the playback clock.
    played: u64,
    segments: VecDeque<Segment>,
    /// Speaker-clock → playback-clock offset of each phrase (seconds), and
    /// the mouth shapes placed for it so far.
    offsets: HashMap<(u64, u32), (f64, Vec<VisemeEvent>)>,
    /// Replies up to this turn are cancelled: their late results are dropped.
    cancelled: u64,
    to_hearing: StreamResampler,
    events: VecDeque<(&'static str, Value)>,
    utterances: VecDeque<(&'static str, String)>,
    cues: VecDeque<FaceCue>,
    /// User audio pushes: (16 kHz samples so far, when).
    pushes: VecDeque<(u64, Instant)>,
    heard: u64,
    speech_end: Option<Instant>,
    /// The last end of the user's turn not answered yet: (speech end, decision).
    turn_end: Option<(Option<Instant>, Instant, Duration)>,
    /// Recent replies' marks, by turn.
    replies: HashMap<u64, ReplyMarks>,
    timings: Vec<TurnTimings>,
    underruns: u64,
    remote: Option<RemoteReplies>,
}

/// When a reply started and its first phrase and audio came.
#[derive(Debug, Clone, Copy)]
struct ReplyMarks {
    started: Instant,
    first_phrase: Option<Instant>,
    first_audio: Option<Instant>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession").field("state", &self.dialogue.state()).finish_non_exhaustive()
    }
}

impl LiveSession {
    /// Opens a session on `executor`.
    pub fn start(
        executor: &Executor,
        setup: SessionSetup,
        config: DialogueConfig,
        context: ConversationContext,
        now: Instant,
    ) -> Result<Self, crate::audio::resample::ResampleError> {
        let to_hearing = StreamResampler::new(RATE, HEARING_RATE)?;
        Ok(Self {
            dialogue: Dialogue::new(config, context),
            handle: executor.open(setup),
            epoch: now,
            queue: VecDeque::new(),
            queued_at: 0,
            played: 0,
            segments: VecDeque::new(),
            offsets: HashMap::new(),
            cancelled: 0,
            to_hearing,
            events: VecDeque::new(),
            utterances: VecDeque::new(),
            cues: VecDeque::new(),
            pushes: VecDeque::new(),
            heard: 0,
            speech_end: None,
            turn_end: None,
            replies: HashMap::new(),
            timings: Vec::new(),
            underruns: 0,
            remote: None,
        })
    }

    /// Composes replies on the persona's own LLM from now on.
    pub fn with_remote(mut self, llm: RemoteLlm) -> Self {
        let (sender, results) = crossbeam_channel::unbounded();
        self.remote = Some(RemoteReplies { llm, results, sender, current: None });
        self
    }

    fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    pub fn state(&self) -> crate::dialogue::State {
        self.dialogue.state()
    }

    /// The user is on the call: the greeting.
    pub fn joined(&mut self, now: Instant) {
        self.dialogue.joined(self.since(now));
        self.act(now);
    }

    /// The user's audio at 16 kHz.
    pub fn heard(&mut self, now: Instant, pcm: &[f32]) {
        self.heard += pcm.len() as u64;
        self.pushes.push_back((self.heard, now));
        while self.pushes.len() > 500 {
            self.pushes.pop_front();
        }
        self.handle.push(Work::Hear(pcm.to_vec()));
        self.poll(now);
    }

    /// A client message.
    pub fn interaction(&mut self, now: Instant, message: Interaction) {
        self.dialogue.interaction(self.since(now), message);
        self.act(now);
    }

    /// A perception note about the user.
    pub fn noticed(&mut self, note: &str) {
        self.dialogue.noticed(note);
    }

    /// The replica's next 20 ms at 48 kHz; `None` when it is silent.
    pub fn next_audio(&mut self, now: Instant) -> Option<Vec<f32>> {
        self.poll(now);
        let silent = self.queue.is_empty();
        let n = self.queue.len().min(FRAME);
        // Short of a frame with a phrase still being made: it fell behind.
        if n < FRAME && self.segments.iter().any(|s| !s.complete && (s.started || n > 0)) {
            self.underruns += 1;
        }
        let mut frame: Vec<f32> = self.queue.drain(..n).collect();
        frame.resize(FRAME, 0.0);
        self.played += FRAME as u64;
        self.queued_at = self.played;
        // The echo gate hears what plays, silence included, so its clock
        // stays with the microphone's.
        match self.to_hearing.push(&frame) {
            Ok(pcm) => self.handle.push(Work::Played(pcm)),
            Err(e) => tracing::warn!("resampling played audio for the echo gate: {e}"),
        }
        self.advance(now);
        (!silent).then_some(frame)
    }

    /// Seconds of playback so far.
    pub fn playback_seconds(&self) -> f64 {
        self.played as f64 / f64::from(RATE)
    }

    /// Times the replica's audio ran dry in the middle of a phrase.
    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// Events for the client: (`event_type`, `properties`).
    pub fn take_events(&mut self) -> Vec<(&'static str, Value)> {
        self.events.drain(..).collect()
    }

    /// Transcript lines: (role, text).
    pub fn take_utterances(&mut self) -> Vec<(&'static str, String)> {
        self.utterances.drain(..).collect()
    }

    /// What the renderer should know.
    pub fn take_cues(&mut self) -> Vec<FaceCue> {
        self.cues.drain(..).collect()
    }

    /// Timings of replies that started playing.
    pub fn take_timings(&mut self) -> Vec<TurnTimings> {
        std::mem::take(&mut self.timings)
    }

    /// Takes the executor's results and acts on them.
    pub fn poll(&mut self, now: Instant) {
        while let Some(output) = self.handle.try_next() {
            self.take(now, output);
        }
        for output in self.remote_outputs() {
            self.take(now, output);
        }
        self.act(now);
    }

    /// What the remote LLM streamed since the last call, as the executor's
    /// outputs: phrases, then the end of the reply.
    fn remote_outputs(&mut self) -> Vec<Output> {
        let Some(remote) = &mut self.remote else { return Vec::new() };
        let mut outputs = Vec::new();
        while let Ok(result) = remote.results.try_recv() {
            let Some((turn, chunker, _)) = remote.current.as_mut() else { continue };
            match result {
                Remote::Text(t, delta) if t == *turn => {
                    outputs.extend(chunker.push(&delta).into_iter().map(|text| Output::Phrase { turn: t, text }));
                }
                Remote::Done(t, end) if t == *turn => {
                    outputs.extend(chunker.finish().map(|text| Output::Phrase { turn: t, text }));
                    outputs.push(Output::Composed { turn: t, end });
                    remote.current = None;
                }
                _ => {}
            }
        }
        outputs
    }

    /// Streams reply `turn` from the remote LLM.
    fn compose_remotely(&mut self, turn: u64, messages: Vec<Message>) {
        let Some(remote) = &mut self.remote else { return };
        if let Some((_, _, task)) = remote.current.take() {
            task.abort();
        }
        let (client, tools, sender) = (remote.llm.client.clone(), remote.llm.tools.clone(), remote.sender.clone());
        let task = remote.llm.runtime.spawn(async move {
            let failed = |error: String| Remote::Done(turn, ReplyEnd::Failed { error, fallback: FALLBACK_LINE.into() });
            let mut stream = match client.stream(messages, tools).await {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = sender.send(failed(e.to_string()));
                    return;
                }
            };
            let end = loop {
                match stream.next().await {
                    Some(Ok(ChatEvent::Text(delta))) => {
                        let _ = sender.send(Remote::Text(turn, delta));
                    }
                    Some(Ok(ChatEvent::ToolCalls(calls))) => {
                        if let Some(call) = calls.into_iter().next() {
                            let (name, arguments) = (call.function.name, call.function.arguments);
                            break Remote::Done(turn, ReplyEnd::Call(Call { name, arguments }));
                        }
                    }
                    Some(Ok(ChatEvent::Finish(_))) | None => break Remote::Done(turn, ReplyEnd::Done),
                    Some(Err(e)) => break failed(e.to_string()),
                }
            };
            let _ = sender.send(end);
        });
        remote.current = Some((turn, PhraseChunker::new(), task));
    }

    /// Waits up to `timeout` for one result from the executor (for drivers
    /// that have nothing else to do, such as the latency harness).
    pub fn wait(&mut self, now: Instant, timeout: Duration) {
        if let Some(output) = self.handle.next_timeout(timeout) {
            self.take(now, output);
        }
        self.poll(now);
    }

    fn take(&mut self, now: Instant, output: Output) {
        let at = self.since(now);
        match output {
            Output::Heard(event) => {
                match &event {
                    HearingEvent::SpeechStopped { at } => self.speech_end = Some(self.when_heard(*at)),
                    HearingEvent::EndOfTurn { transcript, at, .. } if !transcript.text.trim().is_empty() => {
                        let lag = now.saturating_duration_since(self.when_heard(*at));
                        self.turn_end = Some((self.speech_end.take(), now, lag));
                    }
                    _ => {}
                }
                self.dialogue.heard(at, event);
                self.act(now);
            }
            Output::Phrase { turn, text } => {
                if turn > self.cancelled {
                    if let Some(marks) = self.replies.get_mut(&turn) {
                        marks.first_phrase.get_or_insert(now);
                    }
                    self.dialogue.phrase(at, turn, text);
                }
            }
            Output::Composed { turn, end } => {
                if turn > self.cancelled {
                    self.dialogue.composed(at, turn, end);
                }
            }
            Output::Speech { turn, seq, chunk, last } => {
                if turn <= self.cancelled {
                    return;
                }
                if !chunk.audio.is_empty()
                    && let Some(marks) = self.replies.get_mut(&turn)
                {
                    marks.first_audio.get_or_insert(now);
                }
                let position = self.queued_at + self.queue.len() as u64;
                let at = position as f64 / f64::from(RATE);
                let (offset, placed) = self.offsets.entry((turn, seq)).or_insert((at - chunk.start, Vec::new()));
                if at > chunk.start + *offset + 0.001 {
                    // The audio ran dry mid-phrase and silence went out: the
                    // rest of the phrase plays later than its mouth was
                    // placed, so the mouth is moved with it.
                    let (gap_at, shift) = (chunk.start + *offset, at - (chunk.start + *offset));
                    *offset += shift;
                    let rest: Vec<VisemeEvent> = placed
                        .iter()
                        .filter(|v| v.end > gap_at)
                        .map(|v| VisemeEvent { start: v.start.max(gap_at) + shift, end: v.end + shift, ..*v })
                        .collect();
                    self.cues.push_back(FaceCue::Interrupt { at: gap_at });
                    self.cues.push_back(FaceCue::Visemes(rest.clone()));
                    placed.retain(|v| v.end <= gap_at);
                    placed.extend(rest);
                }
                if !chunk.visemes.is_empty() {
                    let offset = *offset;
                    let visemes: Vec<VisemeEvent> = chunk
                        .visemes
                        .iter()
                        .map(|v| VisemeEvent { start: v.start + offset, end: v.end + offset, ..*v })
                        .collect();
                    placed.extend(visemes.iter().copied());
                    self.cues.push_back(FaceCue::Visemes(visemes));
                }
                self.queue.extend(chunk.audio.iter().copied());
                let end = self.queued_at + self.queue.len() as u64;
                match self.segments.iter_mut().find(|s| s.turn == turn && s.seq == seq) {
                    Some(segment) => {
                        segment.end = end;
                        segment.complete = last;
                    }
                    None => self.segments.push_back(Segment {
                        turn,
                        seq,
                        start: position,
                        end,
                        complete: last,
                        started: false,
                    }),
                }
                if last {
                    self.offsets.remove(&(turn, seq));
                }
            }
            Output::Failed { stage, error } => {
                tracing::warn!("{} failed: {error}", stage.name());
            }
        }
    }

    /// When 16 kHz sample `at` of the user's audio arrived.
    fn when_heard(&self, at: u64) -> Instant {
        let Some(&(end, when)) = self.pushes.iter().find(|(end, _)| *end >= at) else {
            return Instant::now();
        };
        when.checked_sub(Duration::from_secs_f64((end - at) as f64 / f64::from(HEARING_RATE))).unwrap_or(when)
    }

    /// Playback moved: phrases that started or ended playing.
    fn advance(&mut self, now: Instant) {
        let at = self.since(now);
        let played = self.played;
        let mut started = Vec::new();
        for segment in self.segments.iter_mut().filter(|s| !s.started && s.start < played.max(1)) {
            segment.started = true;
            started.push((segment.turn, segment.seq));
        }
        for (turn, seq) in started {
            if let Some(marks) = self.replies.remove(&turn)
                && let Some((speech_end, end_of_turn, decision_lag)) = self.turn_end.take()
            {
                self.timings.push(TurnTimings {
                    speech_end,
                    end_of_turn,
                    first_phrase: marks.first_phrase,
                    first_audio: marks.first_audio,
                    first_played: now,
                    speculative: marks.started < end_of_turn,
                    decision_lag,
                });
            }
            self.dialogue.playing(at, turn, seq);
        }
        while let Some(segment) = self.segments.front().copied() {
            if !(segment.complete && segment.end <= played) {
                break;
            }
            self.segments.pop_front();
            self.dialogue.played_out(at, segment.turn, segment.seq);
        }
        self.act(now);
    }

    /// Does what the dialogue asked.
    fn act(&mut self, now: Instant) {
        while let Some(action) = self.dialogue.poll_action() {
            match action {
                Action::Reply { turn, messages } => {
                    self.replies.insert(turn, ReplyMarks { started: now, first_phrase: None, first_audio: None });
                    self.replies.retain(|t, _| *t + 4 > turn);
                    if self.remote.is_some() {
                        self.compose_remotely(turn, messages);
                    } else {
                        self.handle.push(Work::Reply { turn, messages });
                    }
                }
                Action::Cancel { turn } => self.cancel(turn),
                Action::Speak { turn, seq, text } => self.handle.push(Work::Speak { turn, seq, text }),
                Action::Play { turn, pcm, sample_rate } => self.play(turn, pcm, sample_rate),
                Action::ReplicaSpeaking(speaking) => self.handle.push(Work::ReplicaSpeaking(speaking)),
                Action::Sensitivity { patience, interruptibility } => {
                    self.handle.push(Work::Sensitivity { patience, interruptibility })
                }
                Action::Event { event_type, properties } => self.events.push_back((event_type, properties)),
                Action::Utterance { role, text } => self.utterances.push_back((role, text)),
                Action::Refused(why) => self.events.push_back(("conversation.error", json!({"message": why}))),
            }
        }
    }

    /// Stops reply `turn`: its work on the executor, its queued audio, its mouth.
    fn cancel(&mut self, turn: u64) {
        self.handle.cancel(turn);
        if let Some(remote) = &mut self.remote
            && remote.current.as_ref().is_some_and(|(t, _, _)| *t <= turn)
            && let Some((_, _, task)) = remote.current.take()
        {
            task.abort();
        }
        self.cancelled = self.cancelled.max(turn);
        self.segments.retain(|s| s.turn > turn);
        self.offsets.retain(|(t, _), _| *t > turn);
        if self.segments.is_empty() {
            self.queue.clear();
        }
        self.cues.push_back(FaceCue::Interrupt { at: self.playback_seconds() });
    }

    /// An echo of audio: resampled to the playback rate and queued as the
    /// reply's one phrase.
    fn play(&mut self, turn: u64, pcm: Vec<f32>, sample_rate: u32) {
        let audio = match resample(&pcm, sample_rate, RATE) {
            Ok(audio) => audio,
            Err(e) => {
                self.events.push_back(("conversation.error", json!({"message": format!("the echo audio: {e}")})));
                self.dialogue.played_out(self.since(Instant::now()), turn, 0);
                return;
            }
        };
        let start = self.queued_at + self.queue.len() as u64;
        self.cues.push_back(FaceCue::Audio {
            start: start as f64 / f64::from(RATE),
            pcm: audio.clone(),
            sample_rate: RATE,
        });
        self.queue.extend(audio);
        let end = self.queued_at + self.queue.len() as u64;
        self.segments.push_back(Segment { turn, seq: 0, start, end, complete: true, started: false });
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        if let Some((_, _, task)) = self.remote.as_mut().and_then(|r| r.current.take()) {
            task.abort();
        }
    }
}
