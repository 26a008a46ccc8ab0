//! One lane of the executor: its thread, its earliest-deadline-first
//! queue, the sessions' state it owns, and the items it runs (decode items
//! of every composing session batched into one forward).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::session::{Next, Session, fail_composing, finish_composing, run_work, speak_next};
use super::{Command, Lane, Output, Resident, SessionSetup, Shared, Stage, Work};
use crate::hearing::HearingSession;
use crate::llm::chat;
use crate::llm::openai::Message;
use crate::llm::{FinishReason, LlmSession, Prefix, Step};
use crate::tts::Speaker;

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
pub(super) struct Run {
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
    pub(super) fn new(lane: Lane, resident: Resident, shared: Arc<Shared>) -> Self {
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

    pub(super) fn run(mut self, commands: Receiver<Command>) {
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
                Err(e) => fail_composing(session, item.turn, e),
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
                fail_composing(session, turn, e);
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
