//! Perception on a peer's call: the user's camera looked at a few times a
//! second on the executor's seeing lane (low priority, shared by every
//! call), never in the way of the media. A frame that arrives while the
//! previous one is still out is skipped (and counted), and the lane skips
//! frames itself under load, so a busy host sees less often instead of
//! falling behind. What it sees builds the session's [`UserView`]: notes
//! when the user's state changes, the persona's live questions answered,
//! and at the end of the call the analysis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tete_engine::perception::{Analysis, Note, SignalConfig, UserView};
use tete_engine::scheduler::{SIGHT_BUDGET, Seen, Sight, Viewer};

use super::peer::VideoFrame;

/// How perception runs on calls.
#[derive(Debug, Clone)]
pub struct PerceptionConfig {
    /// The executor's seeing lane, shared by every call.
    pub sight: Arc<Sight>,
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

/// One peer's perception: frames out to the seeing lane, the user's view
/// built from what comes back.
#[derive(Debug)]
pub struct Watcher {
    viewer: Viewer,
    view: UserView,
    /// Notes not yet taken.
    fresh: Vec<Note>,
    started: Instant,
    period: f64,
    last_handed: Option<f64>,
    looked: u64,
    failed: u64,
    skipped: u64,
    busy: Duration,
    asks: PerceptionAsks,
}

/// What a call's perception cost and saw, for the log and the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub analysis: Analysis,
    pub frames_looked_at: u64,
    /// Frames not looked at: the last one was still out, or the lane
    /// skipped it (stale or overloaded).
    pub frames_skipped: u64,
    pub frames_failed: u64,
    /// Mean time to look at one frame.
    pub mean_look: Duration,
}

impl Watcher {
    /// Starts looking for a call whose persona asks `asks`.
    pub fn start(config: &PerceptionConfig, asks: PerceptionAsks) -> Self {
        Self {
            viewer: config.sight.viewer(),
            view: UserView::new(SignalConfig::default(), &asks.visual_awareness_queries),
            fresh: Vec::new(),
            started: Instant::now(),
            period: 1.0 / config.fps.max(0.1),
            last_handed: None,
            looked: 0,
            failed: 0,
            skipped: 0,
            busy: Duration::ZERO,
            asks,
        }
    }

    /// A camera frame that arrived at `now`: handed to the seeing lane if
    /// it is time and the last frame is back, else skipped.
    pub fn frame(&mut self, now: Instant, frame: &VideoFrame) {
        self.take_seen();
        let t = now.saturating_duration_since(self.started).as_secs_f64();
        if self.last_handed.is_some_and(|last| t - last < self.period) {
            return;
        }
        if self.viewer.busy() {
            self.skipped += 1;
            metrics::counter!("tete_perception_frames_skipped_total", "why" => "busy").increment(1);
            return;
        }
        if self.viewer.look(t, frame.to_rgb()) {
            self.last_handed = Some(t);
        }
    }

    /// Notes since the last call (for the conversation's context).
    pub fn take_notes(&mut self) -> Vec<Note> {
        self.take_seen();
        std::mem::take(&mut self.fresh)
    }

    /// A face is in view now.
    pub fn present(&mut self) -> bool {
        self.take_seen();
        self.view.present()
    }

    /// What the lane sent back, into the view.
    fn take_seen(&mut self) {
        let seen = self.viewer.seen();
        self.account(seen);
    }

    fn account(&mut self, seen: Vec<Seen>) {
        for s in seen {
            match s {
                Seen::Looked { observation: Ok(observation), took, .. } => {
                    self.looked += 1;
                    self.busy += took;
                    let notes = self.view.observe(&observation);
                    self.fresh.extend(notes);
                }
                Seen::Looked { observation: Err(e), took, .. } => {
                    if self.failed == 0 {
                        tracing::warn!("perception could not read a camera frame: {e}");
                    }
                    self.failed += 1;
                    self.busy += took;
                }
                Seen::Skipped { .. } => self.skipped += 1,
            }
        }
    }

    /// Stops looking and answers the persona's analysis queries (waiting
    /// for a frame still being looked at, within the lane's budget).
    pub fn finish(mut self) -> Watched {
        let seen = self.viewer.seen_waiting(2 * SIGHT_BUDGET);
        self.account(seen);
        Watched {
            analysis: self.view.analysis(&self.asks.perception_analysis_queries),
            frames_looked_at: self.looked,
            frames_skipped: self.skipped,
            frames_failed: self.failed,
            mean_look: self.busy / (self.looked + self.failed).max(1) as u32,
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
