//! Perception on a peer's call: the user's camera looked at a few times a
//! second on a thread of its own, never in the way of the media. A frame
//! that arrives while the previous one is still being looked at is
//! skipped (and counted), so a busy host sees less often instead of
//! falling behind. What it sees builds the session's [`UserView`]: notes
//! when the user's state changes, the persona's live questions answered,
//! and at the end of the call the analysis.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tete_engine::perception::{Analysis, Note, Perceiver, SignalConfig, UserView};

use super::peer::VideoFrame;

/// How perception runs on calls.
#[derive(Debug, Clone)]
pub struct PerceptionConfig {
    pub perceiver: Perceiver,
    /// Camera frames looked at per second, at most.
    pub fps: f64,
}

/// What the persona asks of perception (`layers.perception`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerceptionAsks {
    pub visual_awareness_queries: Vec<String>,
    pub perception_analysis_queries: Vec<String>,
}

impl PerceptionAsks {
    /// From a persona document; `None` when it turns perception off.
    pub fn from_persona(persona: Option<&serde_json::Value>) -> Option<Self> {
        let layer = persona.map(|p| &p["layers"]["perception"]);
        if layer.is_some_and(|l| l["perception_model"] == "off") {
            return None;
        }
        let list = |key: &str| -> Vec<String> {
            layer
                .and_then(|l| l[key].as_array())
                .map(|a| a.iter().filter_map(|q| q.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        Some(Self {
            visual_awareness_queries: list("visual_awareness_queries"),
            perception_analysis_queries: list("perception_analysis_queries"),
        })
    }
}

/// What the looking thread shares with the peer's task.
#[derive(Debug)]
struct Shared {
    view: UserView,
    /// Notes not yet taken.
    fresh: Vec<Note>,
    looked: u64,
    failed: u64,
    busy: Duration,
}

/// One peer's perception.
#[derive(Debug)]
pub struct Watcher {
    tx: Option<SyncSender<(f64, VideoFrame)>>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
    period: f64,
    last_handed: Option<f64>,
    skipped: u64,
    asks: PerceptionAsks,
}

/// What a call's perception cost and saw, for the log and the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub analysis: Analysis,
    pub frames_looked_at: u64,
    pub frames_skipped: u64,
    pub frames_failed: u64,
    /// Mean time to look at one frame.
    pub mean_look: Duration,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watcher {
    /// Starts looking for a call whose persona asks `asks`.
    pub fn start(config: &PerceptionConfig, asks: PerceptionAsks) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            view: UserView::new(SignalConfig::default(), &asks.visual_awareness_queries),
            fresh: Vec::new(),
            looked: 0,
            failed: 0,
            busy: Duration::ZERO,
        }));
        let (tx, rx) = sync_channel::<(f64, VideoFrame)>(1);
        let (perceiver, for_thread) = (config.perceiver.clone(), shared.clone());
        let thread = std::thread::Builder::new().name("perception".into()).spawn(move || {
            for (t, frame) in rx {
                let began = Instant::now();
                let seen = perceiver.observe(&frame.to_rgb(), t);
                let took = began.elapsed();
                metrics::histogram!("tete_perception_frame_seconds").record(took.as_secs_f64());
                let mut shared = lock(&for_thread);
                shared.busy += took;
                match seen {
                    Ok(observation) => {
                        shared.looked += 1;
                        let notes = shared.view.observe(&observation);
                        shared.fresh.extend(notes);
                    }
                    Err(e) => {
                        if shared.failed == 0 {
                            tracing::warn!("perception could not read a camera frame: {e}");
                        }
                        shared.failed += 1;
                    }
                }
            }
        })?;
        Ok(Self {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            started: Instant::now(),
            period: 1.0 / config.fps.max(0.1),
            last_handed: None,
            skipped: 0,
            asks,
        })
    }

    /// A camera frame that arrived at `now`: looked at if it is time and
    /// the thread is free, else skipped.
    pub fn frame(&mut self, now: Instant, frame: &VideoFrame) {
        let t = now.saturating_duration_since(self.started).as_secs_f64();
        if self.last_handed.is_some_and(|last| t - last < self.period) {
            return;
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send((t, frame.clone())) {
            Ok(()) => self.last_handed = Some(t),
            Err(TrySendError::Full(_)) => {
                self.skipped += 1;
                metrics::counter!("tete_perception_frames_skipped_total").increment(1);
            }
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }

    /// Notes since the last call (for the conversation's context).
    pub fn take_notes(&self) -> Vec<Note> {
        std::mem::take(&mut lock(&self.shared).fresh)
    }

    /// A face is in view now.
    pub fn present(&self) -> bool {
        lock(&self.shared).view.present()
    }

    /// Stops looking and answers the persona's analysis queries (blocking
    /// until the frame being looked at is done).
    pub fn finish(mut self) -> Watched {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let shared = lock(&self.shared);
        Watched {
            analysis: shared.view.analysis(&self.asks.perception_analysis_queries),
            frames_looked_at: shared.looked,
            frames_skipped: self.skipped,
            frames_failed: shared.failed,
            mean_look: shared.busy / (shared.looked + shared.failed).max(1) as u32,
        }
    }
}

/// The analysis as `application.perception_analysis` and
/// `conversation.perception_analysis` carry it.
pub fn analysis_json(analysis: &Analysis) -> serde_json::Value {
    let s = &analysis.summary;
    serde_json::json!({
        "summary": s.describe(),
        "answers": analysis.answers.iter().map(|(q, a)| serde_json::json!({"question": q, "answer": a})).collect::<Vec<_>>(),
        "seconds_in_view": (s.seconds_in_view * 10.0).round() / 10.0,
        "attention_share": (s.attention_share * 100.0).round() / 100.0,
        "expressions": s.expressions.iter().map(|(e, share)| (e.label().to_string(), serde_json::json!((share * 100.0).round() / 100.0))).collect::<serde_json::Map<_, _>>(),
        "most_people": s.most_people,
        "timeline": analysis.timeline.iter().map(|n| serde_json::json!({"t": (n.t * 10.0).round() / 10.0, "note": n.text})).collect::<Vec<_>>(),
    })
}
