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

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::dialogue::ReplyEnd;
use crate::hearing::{HearingConfig, HearingEvent, HearingModels};
use crate::llm::LlmModel;
use crate::llm::chat::ToolSet;
use crate::llm::openai::Message;
use crate::tts::{SpeechChunk, Voice, VoiceSettings};
use crate::turn::{Interruptibility, Patience};

mod lane;
mod resident;
mod session;
mod sight;
use lane::Run;
pub use resident::{LoadError, ResidentIds, gguf_path};
pub use sight::{ExecutorState, FULL_LOOK_EVERY, LoadProbe, SIGHT_BUDGET, Seen, Sight, Skip, Viewer};

/// What the replica says when its model fails mid-conversation.
pub const FALLBACK_LINE: &str = "Sorry, I lost my train of thought. Could you say that again?";
/// Tokens a spoken reply may take.
pub const MAX_REPLY_TOKENS: usize = 160;
/// The repetition penalty of spoken replies, llama.cpp's default: greedy
/// decoding of a small model otherwise falls into a phrase it repeats
/// until `MAX_REPLY_TOKENS`.
pub const REPLY_REPEAT_PENALTY: f32 = 1.1;

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
