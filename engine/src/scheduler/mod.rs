//! The frame scheduler: one compute executor per device owns the resident
//! models and every session's model state (hearing, KV cache, speaker).
//! Sessions never call a model: they push work items with deadlines onto a
//! lock-free queue (crossbeam) and read results from their own queue, so
//! the network side never waits on compute.
//!
//! The executor has two lanes, each a thread with its own queue: hearing
//! (VAD, turn detection, ASR, the echo gate) and replying (prefill,
//! decode, speech), so a turn's end is decided while another session's
//! reply is composed and spoken, and a speculative reply is composed while
//! the turn detector still weighs the pause. Each lane runs its most urgent
//! item first (earliest deadline, then the order they came in). A reply is composed one token per item, so
//! hearing and speech of other sessions interleave with it, and the decode
//! steps of every session composing at that moment run as one batched
//! forward. Each item's enqueue, start and end times feed per-stage
//! figures (run time, queueing delay, deadline misses) and metrics
//! histograms; the busy share of the executor tells the host whether it
//! can take another session. Perception runs beside them on a third,
//! low-priority lane ([`Sight`]) that skips camera frames under load.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, unbounded};

use crate::dialogue::ReplyEnd;
use crate::hearing::{HearingConfig, HearingEvent, HearingModels, HearingSession};
use crate::llm::chat::{self, ToolSet};
use crate::llm::openai::Message;
use crate::llm::{FinishReason, LlmModel, LlmSession, Prefix, Step};
use crate::tts::{Speaker, SpeechChunk, Voice, VoiceSettings};
use crate::turn::{Interruptibility, Patience};

mod resident;
mod session;
mod sight;
pub use resident::{LoadError, ResidentIds, gguf_path};
use session::{Next, Session, finish_composing, run_work, speak_next};
pub use sight::{ExecutorState, LoadProbe, SIGHT_BUDGET, Seen, Sight, Skip, Viewer};

/// What the replica says when its model fails mid-conversation.
pub const FALLBACK_LINE: &str = "Sorry, I lost my train of thought. Could you say that again?";
/// Tokens a spoken reply may take.
pub const MAX_REPLY_TOKENS: usize = 160;

/// The models the executor owns, shared read-only by every session.
#[derive(Clone)]
pub struct Resident {
    pub hearing: HearingModels,
    pub llm: Arc<LlmModel>,
    pub voice: Arc<Voice>,
}

/// How a session is set up on the executor.
#[derive(Debug, Clone, Default)]
pub struct SessionSetup {
    pub hearing: HearingConfig,
    /// The persona's messages: prefilled once per persona, shared by its sessions.
    pub persona: Vec<Message>,
    pub tools: ToolSet,
    pub voice: VoiceSettings,
}

/// The stages the executor runs, for its figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// 20 ms of the user's audio through VAD, turn detection and ASR.
    Hear,
    /// The replica's played audio into the echo gate.
    Echo,
    /// A reply's prompt into the KV cache.
    Prefill,
    /// One token of every composing session.
    Decode,
    /// A phrase to speech.
    Speak,
}

pub const STAGES: [Stage; 5] = [Stage::Hear, Stage::Echo, Stage::Prefill, Stage::Decode, Stage::Speak];

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Hear => "hear",
            Stage::Echo => "echo",
            Stage::Prefill => "prefill",
            Stage::Decode => "decode",
            Stage::Speak => "speak",
        }
    }

    /// How long an item of the stage may wait before it is late.
    fn budget(self) -> Duration {
        Duration::from_millis(match self {
            Stage::Hear | Stage::Echo => 100,
            Stage::Prefill => 150,
            Stage::Decode => 40,
            Stage::Speak => 60,
        })
    }

    fn index(self) -> usize {
        STAGES.iter().position(|s| *s == self).unwrap_or(0)
    }

    fn lane(self) -> Lane {
        match self {
            Stage::Hear | Stage::Echo => Lane::Hearing,
            Stage::Prefill | Stage::Decode | Stage::Speak => Lane::Reply,
        }
    }
}

/// The executor's lanes: a thread and a queue each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Hearing,
    Reply,
}

const LANES: [Lane; 2] = [Lane::Hearing, Lane::Reply];

/// Work a session asks for.
#[derive(Debug, Clone)]
pub enum Work {
    /// The user's audio (16 kHz).
    Hear(Vec<f32>),
    /// The replica's audio as it played (16 kHz), for the echo gate.
    Played(Vec<f32>),
    ReplicaSpeaking(bool),
    Sensitivity {
        patience: Option<Patience>,
        interruptibility: Option<Interruptibility>,
    },
    /// Compose reply `turn` to this prompt.
    Reply {
        turn: u64,
        messages: Vec<Message>,
    },
    /// Say phrase `seq` of reply `turn`.
    Speak {
        turn: u64,
        seq: u32,
        text: String,
    },
}

impl Work {
    fn stage(&self) -> Stage {
        match self {
            Work::Hear(_) | Work::ReplicaSpeaking(_) | Work::Sensitivity { .. } => Stage::Hear,
            Work::Played(_) => Stage::Echo,
            Work::Reply { .. } => Stage::Prefill,
            Work::Speak { .. } => Stage::Speak,
        }
    }
}

/// What a session gets back.
#[derive(Debug, Clone)]
pub enum Output {
    Heard(HearingEvent),
    /// A phrase of reply `turn`, ready to be spoken.
    Phrase {
        turn: u64,
        text: String,
    },
    Composed {
        turn: u64,
        end: ReplyEnd,
    },
    /// Speech of phrase `seq` of reply `turn`; `last` ends the phrase.
    Speech {
        turn: u64,
        seq: u32,
        chunk: SpeechChunk,
        last: bool,
    },
    /// A stage failed for this session (the session goes on).
    Failed {
        stage: Stage,
        error: String,
    },
}

/// Per-stage figures since the executor started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageFigures {
    pub items: u64,
    pub run_total: Duration,
    pub run_max: Duration,
    pub queued_total: Duration,
    pub queued_max: Duration,
    /// Items that ended after their deadline.
    pub late: u64,
}

#[derive(Default)]
struct StageCounters {
    items: AtomicU64,
    run_us: AtomicU64,
    run_max_us: AtomicU64,
    queued_us: AtomicU64,
    queued_max_us: AtomicU64,
    late: AtomicU64,
}

impl StageCounters {
    /// Counts an item of `stage` that waited `queued` and ran for `run`.
    fn record(&self, stage: &'static str, queued: Duration, run: Duration, late: bool) {
        self.items.fetch_add(1, Ordering::Relaxed);
        self.run_us.fetch_add(run.as_micros() as u64, Ordering::Relaxed);
        self.run_max_us.fetch_max(run.as_micros() as u64, Ordering::Relaxed);
        self.queued_us.fetch_add(queued.as_micros() as u64, Ordering::Relaxed);
        self.queued_max_us.fetch_max(queued.as_micros() as u64, Ordering::Relaxed);
        metrics::histogram!("tete_stage_seconds", "stage" => stage).record(run.as_secs_f64());
        metrics::histogram!("tete_queue_seconds", "stage" => stage).record(queued.as_secs_f64());
        if late {
            self.late.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tete_deadline_misses_total", "stage" => stage).increment(1);
        }
    }

    fn figures(&self) -> StageFigures {
        let us = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::Relaxed));
        StageFigures {
            items: self.items.load(Ordering::Relaxed),
            run_total: us(&self.run_us),
            run_max: us(&self.run_max_us),
            queued_total: us(&self.queued_us),
            queued_max: us(&self.queued_max_us),
            late: self.late.load(Ordering::Relaxed),
        }
    }
}

/// Shared between the executor and its handles: figures, load, cancels.
struct Shared {
    stages: [StageCounters; 5],
    /// Busy share of each lane over the last seconds, in thousandths.
    load: [AtomicU32; 2],
    sessions: AtomicU32,
    next_session: AtomicU64,
    /// Lanes running an item now.
    running: AtomicU32,
}

impl Shared {
    fn max_load(&self) -> f32 {
        self.load.iter().map(|l| l.load(Ordering::Relaxed)).max().unwrap_or(0) as f32 / 1000.0
    }
}

enum Command {
    Open { id: u64, setup: Box<SessionSetup>, out: Sender<Output>, cancelled: Arc<AtomicU64> },
    Close { id: u64 },
    Work { id: u64, work: Work, enqueued: Instant },
    Stop,
}

/// The executor of one device.
pub struct Executor {
    /// One queue per lane.
    commands: [Sender<Command>; 2],
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Sessions it takes at most.
    pub max_sessions: u32,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("sessions", &self.sessions()).field("load", &self.load()).finish()
    }
}

/// Load above which no new session is taken.
pub const MAX_LOAD: f32 = 0.85;

impl Executor {
    /// Starts the executor's lanes with `resident` models.
    pub fn start(resident: Resident, max_sessions: u32) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            stages: Default::default(),
            load: Default::default(),
            sessions: AtomicU32::new(0),
            next_session: AtomicU64::new(1),
            running: AtomicU32::new(0),
        });
        let (hearing, hearing_rx) = unbounded();
        let (reply, reply_rx) = unbounded();
        let mut threads = Vec::new();
        for (lane, rx) in LANES.into_iter().zip([hearing_rx, reply_rx]) {
            let run = Run::new(lane, resident.clone(), shared.clone());
            let name = match lane {
                Lane::Hearing => "executor-hearing",
                Lane::Reply => "executor-reply",
            };
            threads.push(std::thread::Builder::new().name(name.into()).spawn(move || run.run(rx))?);
        }
        Ok(Self { commands: [hearing, reply], shared, threads, max_sessions })
    }

    /// Opens a session; its results come on the handle.
    pub fn open(&self, setup: SessionSetup) -> SessionHandle {
        let id = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let (out, results) = unbounded();
        let cancelled = Arc::new(AtomicU64::new(0));
        self.shared.sessions.fetch_add(1, Ordering::Relaxed);
        for commands in &self.commands {
            let command =
                Command::Open { id, setup: Box::new(setup.clone()), out: out.clone(), cancelled: cancelled.clone() };
            let _ = commands.send(command);
        }
        SessionHandle { id, commands: self.commands.clone(), results, cancelled, shared: self.shared.clone() }
    }

    /// Busy share of the executor's busiest lane over the last seconds (0–1).
    pub fn load(&self) -> f32 {
        self.shared.max_load()
    }

    /// A probe of [`Self::load`] and of the lanes running an item now, for
    /// a lane that runs beside the executor (the seeing lane waits for the
    /// others to be idle and skips frames while the executor is overloaded).
    pub fn load_probe(&self) -> LoadProbe {
        let shared = self.shared.clone();
        Arc::new(move || ExecutorState { load: shared.max_load(), running: shared.running.load(Ordering::Relaxed) })
    }

    pub fn sessions(&self) -> u32 {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    /// Whether a new session can be taken without putting the running ones
    /// off their deadlines.
    pub fn accepting(&self) -> bool {
        self.sessions() < self.max_sessions && self.load() < MAX_LOAD
    }

    /// Figures of one stage.
    pub fn figures(&self, stage: Stage) -> StageFigures {
        self.shared.stages[stage.index()].figures()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        for commands in &self.commands {
            let _ = commands.send(Command::Stop);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A session's end of the executor.
pub struct SessionHandle {
    id: u64,
    commands: [Sender<Command>; 2],
    results: Receiver<Output>,
    /// Replies up to this turn are cancelled.
    cancelled: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// Queues work; never waits.
    pub fn push(&self, work: Work) {
        let lane = work.stage().lane() as usize;
        let _ = self.commands[lane].send(Command::Work { id: self.id, work, enqueued: Instant::now() });
    }

    /// Cancels reply `turn` (and every earlier one) at once: composing
    /// stops within one token, speech within one chunk.
    pub fn cancel(&self, turn: u64) {
        self.cancelled.fetch_max(turn, Ordering::AcqRel);
    }

    /// The next result, if one is ready.
    pub fn try_next(&self) -> Option<Output> {
        self.results.try_recv().ok()
    }

    /// The next result, waiting at most `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Output> {
        self.results.recv_timeout(timeout).ok()
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.shared.sessions.fetch_sub(1, Ordering::Relaxed);
        for commands in &self.commands {
            let _ = commands.send(Command::Close { id: self.id });
        }
    }
}

/// A queued item.
struct Item {
    session: u64,
    stage: Stage,
    work: Option<Work>,
    /// For decode items: the reply's turn.
    turn: u64,
    enqueued: Instant,
    deadline: Instant,
    order: u64,
}

impl Item {
    fn key(&self) -> (Instant, u64) {
        (self.deadline, self.order)
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The state of one lane's thread.
struct Run {
    lane: Lane,
    resident: Resident,
    shared: Arc<Shared>,
    sessions: HashMap<u64, Session>,
    /// Persona prompts prefilled once, by their rendered text.
    prefixes: HashMap<String, Prefix>,
    queue: BinaryHeap<Reverse<Item>>,
    order: u64,
    busy_since_sample: Duration,
    sample_started: Instant,
    never: AtomicBool,
}

impl Run {
    fn new(lane: Lane, resident: Resident, shared: Arc<Shared>) -> Self {
        Self {
            lane,
            resident,
            shared,
            sessions: HashMap::new(),
            prefixes: HashMap::new(),
            queue: BinaryHeap::new(),
            order: 0,
            busy_since_sample: Duration::ZERO,
            sample_started: Instant::now(),
            never: AtomicBool::new(false),
        }
    }

    fn run(mut self, commands: Receiver<Command>) {
        loop {
            // Take everything queued, then run the most urgent item.
            loop {
                let command = if self.queue.is_empty() {
                    match commands.recv_timeout(Duration::from_millis(250)) {
                        Ok(c) => c,
                        Err(RecvTimeoutError::Timeout) => {
                            self.account(Duration::ZERO);
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                } else {
                    match commands.try_recv() {
                        Ok(c) => c,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                };
                if !self.take(command) {
                    return;
                }
            }
            if let Some(Reverse(item)) = self.queue.pop() {
                let started = Instant::now();
                self.shared.running.fetch_add(1, Ordering::Relaxed);
                self.execute(item, started);
                self.shared.running.fetch_sub(1, Ordering::Relaxed);
                self.account(started.elapsed());
            }
        }
    }

    /// Updates the busy share with `busy` more time; every second or so.
    fn account(&mut self, busy: Duration) {
        self.busy_since_sample += busy;
        let window = self.sample_started.elapsed();
        if window >= Duration::from_secs(1) {
            let share = (self.busy_since_sample.as_secs_f64() / window.as_secs_f64()).min(1.0);
            let load = &self.shared.load[self.lane as usize];
            let smoothed = 0.5 * f64::from(load.load(Ordering::Relaxed)) / 1000.0 + 0.5 * share;
            load.store((smoothed * 1000.0) as u32, Ordering::Relaxed);
            let lane = match self.lane {
                Lane::Hearing => "hearing",
                Lane::Reply => "reply",
            };
            metrics::gauge!("tete_executor_load", "lane" => lane).set(smoothed);
            self.busy_since_sample = Duration::ZERO;
            self.sample_started = Instant::now();
        }
    }

    fn enqueue(&mut self, session: u64, stage: Stage, work: Option<Work>, turn: u64, enqueued: Instant) {
        self.push(Item { session, stage, work, turn, enqueued, deadline: enqueued + stage.budget(), order: 0 });
    }

    /// Queues `item` after every item of the same deadline.
    fn push(&mut self, item: Item) {
        self.order += 1;
        self.queue.push(Reverse(Item { order: self.order, ..item }));
    }

    /// Takes a command; false to stop.
    fn take(&mut self, command: Command) -> bool {
        match command {
            Command::Open { id, setup, out, cancelled } => {
                let session = self.open(*setup, out, cancelled);
                self.sessions.insert(id, session);
            }
            Command::Close { id } => {
                self.sessions.remove(&id);
                let queue = std::mem::take(&mut self.queue);
                self.queue = queue.into_iter().filter(|Reverse(item)| item.session != id).collect();
            }
            Command::Work { id, work, enqueued } => {
                let stage = work.stage();
                self.enqueue(id, stage, Some(work), 0, enqueued);
            }
            Command::Stop => return false,
        }
        true
    }

    fn open(&mut self, setup: SessionSetup, out: Sender<Output>, cancelled: Arc<AtomicU64>) -> Session {
        let SessionSetup { hearing, persona, tools, voice } = setup;
        let mut session = Session {
            out,
            cancelled,
            hearing: None,
            llm: None,
            tools,
            composing: None,
            speaker: None,
            speech: VecDeque::new(),
            voice,
        };
        if self.lane == Lane::Hearing {
            match HearingSession::new(&self.resident.hearing, hearing) {
                Ok(h) => session.hearing = Some(h),
                Err(e) => session.failed(Stage::Hear, format!("hearing cannot start: {e}")),
            }
            return session;
        }
        match Speaker::new(self.resident.voice.clone()) {
            Ok(s) => session.speaker = Some(s),
            Err(e) => session.failed(Stage::Speak, format!("the voice cannot start: {e}")),
        }
        match self.persona_session(&persona) {
            Ok(llm) => session.llm = Some(llm),
            Err(e) => session.failed(Stage::Prefill, format!("the persona prompt cannot be prefilled: {e}")),
        }
        session
    }

    /// A KV cache holding the persona's prompt: prefilled the first time
    /// the persona is seen, forked after.
    fn persona_session(&mut self, persona: &[Message]) -> Result<LlmSession, String> {
        let model = &self.resident.llm;
        let messages = chat::template_messages(persona).map_err(|e| e.to_string())?;
        let text = model.template().render(&messages, false).map_err(|e| e.to_string())?;
        if let Some(prefix) = self.prefixes.get(&text) {
            return prefix.fork().map_err(|e| e.to_string());
        }
        let tokens = model.tokenizer().encode(&text).map_err(|e| e.to_string())?;
        match model.prefix(&tokens) {
            Ok(prefix) => {
                let session = prefix.fork().map_err(|e| e.to_string());
                self.prefixes.insert(text, prefix);
                session
            }
            // Backbones that cannot fork start each session from nothing.
            Err(_) => model.session().map_err(|e| e.to_string()),
        }
    }

    /// Runs one item (with the decode items batched with it) and counts it.
    fn execute(&mut self, item: Item, started: Instant) {
        let stage = item.stage;
        let mut items = vec![item];
        if stage == Stage::Decode {
            // Every composing session's next token in one forward.
            let queue = std::mem::take(&mut self.queue);
            let (decodes, rest): (Vec<_>, Vec<_>) = queue.into_iter().partition(|Reverse(i)| i.stage == Stage::Decode);
            self.queue = rest.into_iter().collect();
            items.extend(decodes.into_iter().map(|Reverse(i)| i));
            self.decode(&items);
        } else if let Some(session) = self.sessions.get_mut(&items[0].session) {
            let id = items[0].session;
            let next = match items[0].work.take() {
                Some(work) => run_work(&self.resident, session, work),
                // A speech item: the next chunk of the session's speech.
                None => speak_next(session).map(Next::Speak),
            };
            let now = Instant::now();
            match next {
                Some(Next::Decode(turn)) => self.enqueue(id, Stage::Decode, None, turn, now),
                Some(Next::Speak(within)) => self.push(Item {
                    session: id,
                    stage: Stage::Speak,
                    work: None,
                    turn: 0,
                    enqueued: now,
                    deadline: now + within,
                    order: 0,
                }),
                None => {}
            }
        }
        let ended = Instant::now();
        for item in &items {
            let queued = started.saturating_duration_since(item.enqueued);
            self.shared.stages[item.stage.index()].record(
                item.stage.name(),
                queued,
                ended - started,
                ended > item.deadline,
            );
        }
    }

    /// One token for each composing session in `items`, in one forward.
    fn decode(&mut self, items: &[Item]) {
        let model = self.resident.llm.clone();
        let never = &self.never;
        let mut chosen: Vec<(u64, u32)> = Vec::new();
        for item in items {
            let Some(session) = self.sessions.get_mut(&item.session) else { continue };
            let cancelled = session.is_cancelled(item.turn);
            let Some(composing) = session.composing.as_mut().filter(|c| c.turn == item.turn) else { continue };
            if cancelled {
                session.composing = None;
                continue;
            }
            let Some(llm) = session.llm.as_ref() else { continue };
            match composing.generator.choose(&model, llm, never) {
                Ok(Ok(id)) => chosen.push((item.session, id)),
                Ok(Err(step)) => {
                    let reason = match step {
                        Step::Done(reason) => reason,
                        Step::Token { .. } => FinishReason::Stop,
                    };
                    finish_composing(session, reason);
                }
                Err(e) => {
                    session.composing = None;
                    session.send(Output::Composed {
                        turn: item.turn,
                        end: ReplyEnd::Failed { error: e.to_string(), fallback: FALLBACK_LINE.into() },
                    });
                }
            }
        }
        if chosen.is_empty() {
            return;
        }
        // Feed every chosen token in one batched forward.
        let ids: Vec<u64> = chosen.iter().map(|(id, _)| *id).collect();
        let mut sessions: Vec<(u64, &mut Session)> =
            self.sessions.iter_mut().filter(|(id, _)| ids.contains(id)).map(|(id, s)| (*id, s)).collect();
        sessions.sort_by_key(|(id, _)| ids.iter().position(|x| x == id));
        let fed = {
            let mut steps: Vec<(&mut LlmSession, u32)> = Vec::with_capacity(sessions.len());
            for ((_, session), (_, token)) in sessions.iter_mut().zip(&chosen) {
                if let Some(llm) = session.llm.as_mut() {
                    steps.push((llm, *token));
                }
            }
            model.step_batch(&mut steps)
        };
        let now = Instant::now();
        let mut again = Vec::new();
        for ((id, session), (_, token)) in sessions.into_iter().zip(&chosen) {
            let Some(composing) = session.composing.as_mut() else { continue };
            let turn = composing.turn;
            if let Err(e) = &fed {
                session.composing = None;
                session.send(Output::Composed {
                    turn,
                    end: ReplyEnd::Failed { error: e.to_string(), fallback: FALLBACK_LINE.into() },
                });
                continue;
            }
            let text = composing.generator.accept(&model, *token);
            for phrase in composing.chunker.push(&text) {
                composing.phrases += 1;
                let _ = session.out.send(Output::Phrase { turn, text: phrase });
            }
            again.push((id, turn, composing.phrases == 0));
        }
        for (id, turn, first_phrase_pending) in again {
            // Until its first phrase is out a reply is as urgent as speech.
            let at = if first_phrase_pending { now } else { now + Duration::from_millis(60) };
            self.enqueue(id, Stage::Decode, None, turn, at);
        }
    }
}
