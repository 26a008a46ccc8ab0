//! The replica's face on a call: alive (idle loop or portrait, blinks,
//! breathing, head sway) and, on the conversation loop, speaking: each
//! frame is rendered for the playback time it will be shown at, with the
//! mouth of the sound playing then. Frames are rendered on a thread of
//! their own at the edge's frame rate, so the peer's network task only
//! picks up the newest one. When the executor is overloaded the face
//! drops to half its frame rate before any audio is late.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tete_engine::session::FaceCue;

use tete_engine::face::animate::{Performer, idle_frame};
use tete_engine::face::{Replica, Rig, render_i420_cpu};

use super::SessionMedia;
use super::conversation::PlaybackClock;
use super::messages::ClientMessage;
use super::peer::{VIDEO_OUT_FPS, VideoFrame};

/// What ties the face to a live conversation.
pub struct Live {
    pub clock: Arc<PlaybackClock>,
    pub cues: crossbeam_channel::Receiver<FaceCue>,
    /// The executor is overloaded: render fewer frames.
    pub busy: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// Frames are rendered this far ahead of the playback clock: they are
/// picked up and sent up to a frame period after they are made.
const LEAD: f64 = 0.5 / VIDEO_OUT_FPS as f64;

/// A trained replica's face, rendered live.
pub struct ReplicaMedia {
    frames: Receiver<VideoFrame>,
    last: Option<VideoFrame>,
}

impl ReplicaMedia {
    /// Loads the replica saved in `dir`, at `size` × `size` (resampled
    /// when it was saved at another size), and starts rendering it; the
    /// thread ends when this is dropped.
    pub fn start(dir: &Path, seed: u64, size: u32) -> Result<Self, tete_engine::face::ReplicaError> {
        Self::start_live(dir, seed, size, None)
    }

    /// Like [`ReplicaMedia::start`], speaking what `live` says is playing.
    pub fn start_live(
        dir: &Path,
        seed: u64,
        size: u32,
        live: Option<Live>,
    ) -> Result<Self, tete_engine::face::ReplicaError> {
        let replica = Replica::load(dir)?.resized(size)?;
        let (tx, rx) = sync_channel(2);
        std::thread::Builder::new()
            .name("replica-face".into())
            .spawn(move || render(replica, seed, tx, live))
            .map_err(|e| tete_engine::face::ReplicaError::Files {
                path: dir.display().to_string(),
                reason: format!("starting the render thread: {e}"),
            })?;
        Ok(Self { frames: rx, last: None })
    }
}

/// Renders frames at the edge's rate until the receiving side is gone.
fn render(replica: Replica, seed: u64, tx: SyncSender<VideoFrame>, live: Option<Live>) {
    // The idle loop's frames when the replica has one, else the portrait.
    let stills: Vec<Replica> = if replica.idle.is_empty() { vec![replica] } else { replica.idle };
    let rigs: Vec<Rig> = stills.iter().map(Rig::new).collect();
    let mut performer = Performer::new(seed);
    let period = Duration::from_secs(1) / VIDEO_OUT_FPS;
    let started = Instant::now();
    let mut next = started;
    let mut tick = 0u64;
    loop {
        tick += 1;
        let t = match &live {
            Some(live) => {
                for cue in live.cues.try_iter() {
                    match cue {
                        FaceCue::Visemes(events) => performer.speak_visemes(events),
                        FaceCue::Audio { start, pcm, sample_rate } => performer.speak_audio(start, &pcm, sample_rate),
                        FaceCue::Interrupt { at } => performer.interrupt(at),
                    }
                }
                live.clock.seconds_at(next) + LEAD
            }
            None => next.duration_since(started).as_secs_f64(),
        };
        if tick.is_multiple_of(2) && live.as_ref().is_some_and(|l| (l.busy)()) {
            // Overloaded: the receiving side repeats the last frame.
            next += period;
            pace(&mut next);
            continue;
        }
        let k = idle_frame(t, f64::from(VIDEO_OUT_FPS), stills.len());
        let (still, rig) = (&stills[k], &rigs[k]);
        let frame = render_i420_cpu(still, rig, &performer.pose_at(t)).map(|i420| VideoFrame {
            width: still.size as usize,
            height: still.size as usize,
            i420,
        });
        match frame {
            Ok(frame) => match tx.try_send(frame) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return,
            },
            Err(e) => {
                tracing::error!("rendering the replica: {e}");
                return;
            }
        }
        next += period;
        pace(&mut next);
    }
}

/// Sleeps until `next`; when behind (a busy host), skips ahead rather than
/// render a backlog.
fn pace(next: &mut Instant) {
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else {
        *next = now;
    }
}

impl SessionMedia for ReplicaMedia {
    fn next_audio(&mut self) -> Option<Vec<f32>> {
        None
    }

    /// The newest rendered frame (the last one again if none is new).
    fn next_video(&mut self) -> Option<VideoFrame> {
        while let Ok(frame) = self.frames.try_recv() {
            self.last = Some(frame);
        }
        self.last.clone()
    }

    fn heard(&mut self, _: &[f32]) {}
    fn seen(&mut self, _: &VideoFrame) {}
    fn message(&mut self, _: ClientMessage) {}
    fn presence(&mut self, _: bool) {}
}
