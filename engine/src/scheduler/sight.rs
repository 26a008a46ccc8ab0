//! The executor's seeing lane: perception of every session's camera, at
//! low priority. Any rayon work of its models runs on a one-thread pool
//! of its own, so perception never takes a worker of the pool the LLM's
//! products run on. Its thread is not niced: candle runs the tensor ops
//! of every model in the process through one shared worker pool behind a
//! lock, so a niced perception op holding it would make the hearing lane's
//! Whisper and Smart Turn wait on a starved thread (measured: it added
//! ~180 ms to the end-of-turn decision). A session hands in one frame at a time
//! ([`Viewer::look`]); the lane takes every frame queued at that moment
//! and looks at them as one batch (faces and landmarks frame by frame,
//! the expressions of all of them in one forward). It starts a batch only
//! while no other lane is running an item, so a pause's decode or a
//! reply's prefill never shares the cores with it from the start. Under
//! load it skips instead of falling behind: a frame that waited past its
//! budget (for the other lanes to be idle, or behind other frames), or any
//! frame while the executor's busiest lane is over [`MAX_LOAD`], comes back
//! as [`Seen::Skipped`], so the session simply looks less often.
//!
//! Each session's looks are full ones (the detector over the whole frame
//! and its tiles, counting everyone) every [`FULL_LOOK_EVERY`], and quick
//! ones (the whole frame only) between: a third of the cost, and the
//! tracker takes their counts as lower bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, unbounded};

use super::{MAX_LOAD, StageCounters, StageFigures};
use crate::face::RgbImage;
use crate::perception::{Detail, Observation, Perceiver};

/// What the seeing lane reads of the executor before each batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExecutorState {
    /// The busiest lane's busy share over the last seconds (0–1).
    pub load: f32,
    /// Lanes running an item right now.
    pub running: u32,
}

/// Reads the executor's state (see [`super::Executor::load_probe`]).
pub type LoadProbe = Arc<dyn Fn() -> ExecutorState + Send + Sync>;

/// How long a frame may wait for the lane before it is skipped.
pub const SIGHT_BUDGET: Duration = Duration::from_millis(500);
/// Seconds on a session's clock between its full looks.
pub const FULL_LOOK_EVERY: f64 = 2.0;
/// How often a waiting batch checks whether the other lanes are idle.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// What became of a frame handed to the lane.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Looked at: what it showed, or why it could not be read.
    Looked { t: f64, observation: Result<Observation, String>, took: Duration },
    /// Not looked at, and why.
    Skipped { t: f64, why: Skip },
}

/// Why a frame was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// It waited longer than [`SIGHT_BUDGET`].
    Stale,
    /// The executor was over [`MAX_LOAD`].
    Overloaded,
}

impl Skip {
    pub fn name(self) -> &'static str {
        match self {
            Skip::Stale => "stale",
            Skip::Overloaded => "overloaded",
        }
    }
}

struct Look {
    t: f64,
    image: RgbImage,
    detail: Detail,
    enqueued: Instant,
    out: Sender<Seen>,
}

struct Shared {
    counters: StageCounters,
    skipped: AtomicU64,
}

/// The seeing lane.
pub struct Sight {
    looks: Option<Sender<Look>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sight").field("figures", &self.figures()).finish()
    }
}

impl Sight {
    /// Starts the lane with `perceiver`'s models. With a `load` probe it
    /// skips frames while the executor is overloaded; without one (a host
    /// that only perceives) it looks at every frame that is not stale.
    pub fn start(perceiver: Perceiver, load: Option<LoadProbe>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { counters: StageCounters::default(), skipped: AtomicU64::new(0) });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "executor-seeing-pool".into())
            .build()
            .map_err(std::io::Error::other)?;
        let (looks, rx) = unbounded();
        let for_lane = shared.clone();
        let thread = std::thread::Builder::new()
            .name("executor-seeing".into())
            .spawn(move || run(&perceiver, &pool, load.as_deref(), &for_lane, &rx))?;
        Ok(Self { looks: Some(looks), shared, thread: Some(thread) })
    }

    /// A new session's end of the lane.
    pub fn viewer(&self) -> Viewer {
        let (out, results) = unbounded();
        Viewer {
            looks: self.looks.clone(),
            out,
            results,
            ready: Vec::new(),
            in_flight: false,
            full_due: f64::NEG_INFINITY,
        }
    }

    /// Figures of the frames looked at.
    pub fn figures(&self) -> StageFigures {
        self.shared.counters.figures()
    }

    /// Frames skipped since the lane started.
    pub fn skipped(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }
}

impl Drop for Sight {
    fn drop(&mut self) {
        drop(self.looks.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One session's end of the seeing lane: one frame in flight at a time.
#[derive(Debug)]
pub struct Viewer {
    looks: Option<Sender<Look>>,
    out: Sender<Seen>,
    results: Receiver<Seen>,
    /// Results taken off the queue but not yet asked for.
    ready: Vec<Seen>,
    in_flight: bool,
    /// The session time from which the next look is a full one.
    full_due: f64,
}

impl Viewer {
    /// Hands the lane `image`, shown at `t` seconds on the session's clock;
    /// false (and nothing handed) while the last frame is still out or the
    /// lane has stopped. The look is a full one when the last full look
    /// that came back is [`FULL_LOOK_EVERY`] old (or none did), else quick.
    pub fn look(&mut self, t: f64, image: RgbImage) -> bool {
        self.take_results();
        if self.in_flight {
            return false;
        }
        let Some(looks) = &self.looks else { return false };
        let detail = if t >= self.full_due { Detail::Full } else { Detail::Quick };
        let look = Look { t, image, detail, enqueued: Instant::now(), out: self.out.clone() };
        if looks.send(look).is_err() {
            self.looks = None;
            return false;
        }
        self.in_flight = true;
        true
    }

    /// Whether a frame is out.
    pub fn busy(&self) -> bool {
        self.in_flight
    }

    /// What came back since the last call.
    pub fn seen(&mut self) -> Vec<Seen> {
        self.take_results();
        std::mem::take(&mut self.ready)
    }

    /// What came back, waiting up to `timeout` for a frame still out.
    pub fn seen_waiting(&mut self, timeout: Duration) -> Vec<Seen> {
        let mut seen = self.seen();
        if self.in_flight
            && let Ok(s) = self.results.recv_timeout(timeout)
        {
            self.came_back(&s);
            seen.push(s);
        }
        seen
    }

    fn take_results(&mut self) {
        while let Ok(s) = self.results.try_recv() {
            self.came_back(&s);
            self.ready.push(s);
        }
    }

    fn came_back(&mut self, seen: &Seen) {
        self.in_flight = false;
        if let Seen::Looked { observation: Ok(o), .. } = seen
            && !o.quick
        {
            self.full_due = o.t + FULL_LOOK_EVERY;
        }
    }
}

/// The lane's loop: every frame queued at once, skipped or looked at as one batch.
fn run(
    perceiver: &Perceiver,
    pool: &rayon::ThreadPool,
    load: Option<&(dyn Fn() -> ExecutorState + Send + Sync)>,
    shared: &Shared,
    rx: &Receiver<Look>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        // Frames wait here while another lane runs an item.
        let overloaded = loop {
            loop {
                match rx.try_recv() {
                    Ok(look) => batch.push(look),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let state = load.map(|load| load()).unwrap_or_default();
            let oldest = batch.iter().map(|l| l.enqueued).min().unwrap_or_else(Instant::now);
            if state.load >= MAX_LOAD || state.running == 0 || oldest.elapsed() > SIGHT_BUDGET {
                break state.load >= MAX_LOAD;
            }
            std::thread::sleep(IDLE_POLL);
        };
        let started = Instant::now();
        let (batch, skipped): (Vec<Look>, Vec<Look>) =
            batch.into_iter().partition(|l| !overloaded && started - l.enqueued <= SIGHT_BUDGET);
        for look in skipped {
            let why = if overloaded { Skip::Overloaded } else { Skip::Stale };
            shared.skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tete_perception_frames_skipped_total", "why" => why.name()).increment(1);
            let _ = look.out.send(Seen::Skipped { t: look.t, why });
        }
        if batch.is_empty() {
            continue;
        }
        let frames: Vec<(&RgbImage, f64, Detail)> = batch.iter().map(|l| (&l.image, l.t, l.detail)).collect();
        let observations = pool.install(|| perceiver.observe_batch(&frames));
        let ended = Instant::now();
        // Each frame is charged its share of the batch.
        let took = (ended - started) / batch.len() as u32;
        for (look, observation) in batch.iter().zip(observations) {
            let queued = started.saturating_duration_since(look.enqueued);
            shared.counters.record("see", queued, took, ended > look.enqueued + SIGHT_BUDGET);
            let observation = observation.map_err(|e| e.to_string());
            let _ = look.out.send(Seen::Looked { t: look.t, observation, took });
        }
    }
}
