//! The WebRTC edge: WHIP (RFC 9725) at `{conversation_url}/whip` and one
//! str0m peer per participant, each driven by a thin tokio task that owns
//! its UDP socket and the clock ([`peer::Peer`] itself is sans-IO).
//!
//! `GET /c/{id}` is the meeting page (camera and microphone preview, the
//! replica's video and audio, captions, mute and leave, clear messages
//! when permissions are denied or the conversation is over).
//! `POST /c/{id}/whip` with an `application/sdp` offer answers `201
//! Created`, the SDP answer and a `Location`; `DELETE` there leaves. The
//! conversation must exist (404) and be active (410), the meeting token is
//! checked when the conversation requires auth (401 without, 403 wrong), and
//! a conversation takes [`EdgeConfig::max_peers`] participants (409 past
//! that). The one ICE candidate is a host candidate on the configured
//! address.
//!
//! Media goes through a [`SessionMedia`] per peer: the replica's audio is
//! pulled from it every 20 ms and its video 25 times a second; the user's
//! audio, camera frames, data-channel messages, presence and what
//! perception notices are pushed to it; the events it has for the client
//! go out on the data channel and its transcript lines into the
//! conversation's transcript. On a host with the conversation loop
//! ([`conversation::conversation_media`]) that is a live session on the
//! executor; without, the replica's idle face and silence. A host whose
//! executor is at capacity refuses new peers (503) rather than put its
//! calls off their deadlines.

pub mod conversation;
pub mod face;
pub mod messages;
pub mod peer;
pub mod perception;
pub mod video;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::api::Api;
use crate::conversations::Signal;
use crate::recording::{Recorder, RecordingStore};
use messages::{ClientMessage, error_event};
use peer::{FRAME, Peer, PeerEvent, Poll, VIDEO_OUT_FPS, VideoFrame};
use perception::{PerceptionAsks, PerceptionConfig, Watched, Watcher};

/// How the edge binds and admits peers.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The address peers' UDP sockets bind to and advertise.
    pub bind_ip: IpAddr,
    /// Participants at once in one conversation.
    pub max_peers: usize,
    /// Where the calls of conversations with `enable_recording` are kept
    /// (without, such calls are not recorded and the join says so in the log).
    pub recordings: Option<RecordingStore>,
    /// Perception of the user's camera (without, calls are not looked at).
    pub perception: Option<PerceptionConfig>,
    /// The executor the calls' conversation loop runs on, if this host runs it.
    pub executor: Option<Arc<tete_engine::scheduler::Executor>>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self { bind_ip: IpAddr::from([127, 0, 0, 1]), max_peers: 1, recordings: None, perception: None, executor: None }
    }
}

/// The user's audio louder than this (RMS, full scale 1) counts as their
/// voice for the conversation's `participant_absent_timeout`.
pub const VOICE_RMS: f32 = 0.01;
/// How often a participant who is seen or heard is reported active.
const ACTIVE_EVERY: Duration = Duration::from_secs(1);

/// A peer's media, as the session sees it.
pub trait SessionMedia: Send + 'static {
    /// The replica's next 20 ms (960 samples at 48 kHz); `None` is silence.
    fn next_audio(&mut self) -> Option<Vec<f32>>;
    /// The replica's next video frame (asked [`peer::VIDEO_OUT_FPS`] times a
    /// second); `None` sends nothing this time.
    fn next_video(&mut self) -> Option<VideoFrame>;
    /// The user's audio at 16 kHz, in order.
    fn heard(&mut self, pcm: &[f32]);
    /// A frame of the user's camera, a few a second.
    fn seen(&mut self, frame: &VideoFrame);
    /// A checked data-channel message.
    fn message(&mut self, message: ClientMessage);
    /// The peer is connected (`true`) or gone (`false`).
    fn presence(&mut self, connected: bool);
    /// Events for the client's data channel (whole JSON messages).
    fn events(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// Lines for the conversation's transcript: (role, text).
    fn utterances(&mut self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Perception noticed something about the user.
    fn noticed(&mut self, _note: &str) {}
}

/// Who a new peer joins: the conversation, its replica if it has one, its
/// stored document and its persona's.
#[derive(Debug, Clone, Copy)]
pub struct Joining<'a> {
    pub conversation: &'a str,
    pub replica: Option<&'a str>,
    pub document: &'a serde_json::Value,
    pub persona: Option<&'a serde_json::Value>,
}

/// Makes the media of each new peer of a conversation.
pub type MediaFactory = Arc<dyn Fn(Joining<'_>) -> Box<dyn SessionMedia> + Send + Sync>;

/// The host's media until the conversation loop drives it: the
/// conversation's replica, if trained and saved under `replicas_dir`,
/// rendered live at `size` × `size` with silence; otherwise a grey frame.
pub fn replica_media(replicas_dir: std::path::PathBuf, size: u32) -> MediaFactory {
    Arc::new(move |joining: Joining<'_>| {
        let silent = Silent { size: size as usize };
        let Some(replica) = joining.replica else { return Box::new(silent) as Box<dyn SessionMedia> };
        let seed = joining.conversation.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        match face::ReplicaMedia::start(&replicas_dir.join(replica), seed, size) {
            Ok(media) => Box::new(media),
            Err(e) => {
                tracing::info!(conversation = joining.conversation, "replica {replica} cannot be shown yet: {e}");
                Box::new(silent)
            }
        }
    })
}

/// Silence and a grey frame out, nothing kept: the host's media until the
/// replica pipeline speaks and renders.
struct Silent {
    pub(super) size: usize,
}

impl SessionMedia for Silent {
    fn next_audio(&mut self) -> Option<Vec<f32>> {
        None
    }
    fn next_video(&mut self) -> Option<VideoFrame> {
        Some(VideoFrame::solid(self.size, self.size, (96, 128, 128)))
    }
    fn heard(&mut self, _: &[f32]) {}
    fn seen(&mut self, _: &VideoFrame) {}
    fn message(&mut self, _: ClientMessage) {}
    fn presence(&mut self, _: bool) {}
}

struct Session {
    conversation: String,
    stop: Option<oneshot::Sender<()>>,
}

/// The peers this host serves.
pub struct Edge {
    config: EdgeConfig,
    media: MediaFactory,
    sessions: Mutex<HashMap<String, Session>>,
    /// Recordings being finished and kept (their calls have ended).
    keeping: tokio::sync::watch::Sender<usize>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Edge {
    pub fn new(config: EdgeConfig, media: Option<MediaFactory>) -> Arc<Self> {
        let media =
            media.unwrap_or_else(|| Arc::new(|_: Joining<'_>| Box::new(Silent { size: 512 }) as Box<dyn SessionMedia>));
        Arc::new(Self {
            config,
            media,
            sessions: Mutex::new(HashMap::new()),
            keeping: tokio::sync::watch::channel(0).0,
        })
    }

    /// Waits (at most `timeout`) until every ended call's recording is kept
    /// and its webhook queued; false if some are still going.
    pub async fn recordings_kept(&self, timeout: Duration) -> bool {
        let mut keeping = self.keeping.subscribe();
        tokio::time::timeout(timeout, keeping.wait_for(|n| *n == 0)).await.is_ok_and(|r| r.is_ok())
    }

    /// The executor the calls run on, if this host runs the conversation loop.
    pub fn executor(&self) -> Option<&tete_engine::scheduler::Executor> {
        self.config.executor.as_deref()
    }

    /// Peers connected (or connecting) to `conversation`.
    pub fn peers(&self, conversation: &str) -> usize {
        self.lock().values().filter(|s| s.conversation == conversation).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the calls of every conversation `host` ends, from now on.
    pub fn follow(self: &Arc<Self>, host: &crate::conversations::Host) {
        let (edge, mut ended) = (Arc::downgrade(self), host.ended_conversations());
        tokio::spawn(async move {
            loop {
                match ended.recv().await {
                    Ok(id) => match edge.upgrade() {
                        Some(edge) => edge.close_conversation(&id),
                        None => return,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::error!(
                            "the edge missed {missed} ended conversations; their calls stay open until they leave"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Ends every peer of `conversation` (it ended).
    pub fn close_conversation(&self, conversation: &str) {
        for session in self.lock().values_mut().filter(|s| s.conversation == conversation) {
            if let Some(stop) = session.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// The meeting page: self-contained (no CDN), embeddable in an iframe.
const MEETING_PAGE: &str = include_str!("meeting.html");

/// The meeting page at the conversation URL and the WHIP routes under it.
pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/c/{id}", get(page))
        .route("/c/{id}/whip", post(join))
        .route("/c/{id}/whip/{session}", delete(leave))
        .layer(DefaultBodyLimit::max(peer::MAX_OFFER_BYTES))
        .with_state(api)
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], MEETING_PAGE)
        .into_response()
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.into()).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

async fn join(State(api): State<Api>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(edge) = api.edge.clone() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "this host has no WebRTC edge");
    };
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp")));
    if !is_sdp {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the offer as Content-Type: application/sdp");
    }
    let row = match api.db().conversation(&id).await {
        Ok(Some(row)) => row,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, format!("no conversation {id}")),
        Err(e) => {
            tracing::error!("WHIP lookup of {id}: {e}");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the conversation could not be read");
        }
    };
    if row.status != "active" {
        return refuse(StatusCode::GONE, format!("conversation {id} has ended"));
    }
    if row.meeting_token_hash.is_some() {
        let Some(token) = bearer(&headers) else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this conversation needs its meeting token (Authorization: Bearer)",
            );
        };
        match api.db().meeting_token_ok(&id, Some(token)).await {
            Ok(true) => {}
            Ok(false) => return refuse(StatusCode::FORBIDDEN, "wrong meeting token"),
            Err(e) => {
                tracing::error!("WHIP token check of {id}: {e}");
                return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the meeting token could not be checked");
            }
        }
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    let socket = match UdpSocket::bind(SocketAddr::new(edge.config.bind_ip, 0)).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!("binding a peer socket: {e}");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "no UDP port for the peer");
        }
    };
    let Ok(local) = socket.local_addr() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "no UDP port for the peer");
    };
    let (peer, answer) = match Peer::accept(offer, local, Instant::now()) {
        Ok(accepted) => accepted,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(executor) = &edge.config.executor
        && !executor.accepting()
    {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "this host is at capacity; try another host");
    }
    let persona = match &row.persona_id {
        None => None,
        Some(persona) => match api.db().persona(persona).await {
            Ok(persona) => persona.map(|p| p.document),
            Err(e) => {
                tracing::error!(conversation = %id, "reading persona {persona}: {e}");
                return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the conversation's persona could not be read");
            }
        },
    };
    // Replica files are read and a render thread started: off the async threads.
    let (factory, conversation, replica) = (edge.media.clone(), id.clone(), row.replica_id.clone());
    let (document, persona_doc) = (row.document.clone(), persona.clone());
    let made = tokio::task::spawn_blocking(move || {
        factory(Joining {
            conversation: &conversation,
            replica: replica.as_deref(),
            document: &document,
            persona: persona_doc.as_ref(),
        })
    });
    let media = match made.await {
        Ok(media) => media,
        Err(e) => {
            tracing::error!("making the media of a peer of {id}: {e}");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the replica's media could not be started");
        }
    };
    let session = crate::ids::random_token(12);
    let record_to = record_to(&edge, &row, &session);
    let asks = edge.config.perception.as_ref().and_then(|_| PerceptionAsks::from_persona(persona.as_ref()));
    let watch_for = edge.config.perception.clone().zip(asks);
    let (stop, stopped) = oneshot::channel();
    {
        let mut sessions = edge.lock();
        if sessions.values().filter(|s| s.conversation == id).count() >= edge.config.max_peers {
            return refuse(StatusCode::CONFLICT, format!("conversation {id} already has its participant"));
        }
        sessions.insert(session.clone(), Session { conversation: id.clone(), stop: Some(stop) });
    }
    let transcript = conversation::transcript_writer(api.clone(), id.clone());
    let driver = Driver {
        transcript,
        peer,
        socket,
        media,
        record_to,
        recorder: None,
        watch_for,
        watcher: None,
        last_active: None,
        conversation: id.clone(),
        session: session.clone(),
    };
    tokio::spawn(driver.run(api.clone(), edge, stopped));
    let location = format!("/c/{id}/whip/{session}");
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/sdp".to_string()), (header::LOCATION, location)], answer)
        .into_response()
}

/// Where a new peer's call is recorded, when its conversation asked for it.
fn record_to(edge: &Edge, row: &crate::db::ConversationRow, session: &str) -> Option<std::path::PathBuf> {
    if row.document["properties"]["enable_recording"].as_bool() != Some(true) {
        return None;
    }
    let Some(store) = &edge.config.recordings else {
        tracing::warn!(conversation = %row.id, "enable_recording is set but this host keeps no recordings");
        return None;
    };
    Some(store.partial(&format!("{}-{session}", row.id)))
}

async fn leave(State(api): State<Api>, Path((id, session)): Path<(String, String)>) -> Response {
    let Some(edge) = api.edge.clone() else {
        return refuse(StatusCode::NOT_FOUND, "no such session");
    };
    let stop = edge.lock().get_mut(&session).filter(|s| s.conversation == id).map(|s| s.stop.take());
    match stop {
        Some(stop) => {
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
            StatusCode::OK.into_response()
        }
        None => refuse(StatusCode::NOT_FOUND, "no such session"),
    }
}

/// One peer's task: its socket, its clock, its media.
struct Driver {
    /// Where the call's transcript lines go.
    transcript: tokio::sync::mpsc::UnboundedSender<(&'static str, String)>,
    peer: Peer,
    socket: UdpSocket,
    media: Box<dyn SessionMedia>,
    /// Where the call is recorded (from when it connects), if it is.
    record_to: Option<std::path::PathBuf>,
    recorder: Option<Recorder>,
    /// How to look and what the persona asks (from when the call connects), if it looks.
    watch_for: Option<(PerceptionConfig, PerceptionAsks)>,
    watcher: Option<Watcher>,
    /// When the participant was last reported seen or heard.
    last_active: Option<Instant>,
    conversation: String,
    session: String,
}

impl Driver {
    async fn run(mut self, api: Api, edge: Arc<Edge>, mut stopped: oneshot::Receiver<()>) {
        let mut buf = vec![0u8; 2048];
        let mut frames = tokio::time::interval(Duration::from_millis(20));
        frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut video = tokio::time::interval(Duration::from_secs(1) / VIDEO_OUT_FPS);
        video.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut connected = false;
        let mut watched_at_end = None;
        'session: loop {
            // Drain everything the peer has to say before waiting again.
            let deadline = loop {
                match self.peer.poll() {
                    Poll::Transmit { destination, contents } => {
                        if let Err(e) = self.socket.send_to(&contents, destination).await {
                            tracing::debug!("peer send: {e}");
                        }
                    }
                    Poll::Event(PeerEvent::Closed) => break 'session,
                    Poll::Event(event) => {
                        let was = connected;
                        self.handle(&api, event, &mut connected).await;
                        if connected && !was {
                            // Media starts now: ticks missed while connecting
                            // would otherwise burst out, stamping the sound
                            // ahead of the pictures for the whole call.
                            frames.reset_immediately();
                            video.reset_immediately();
                        }
                    }
                    Poll::Wait(at) => break at,
                }
            };
            tokio::select! {
                _ = &mut stopped => {
                    // The call ended while the user is here: they get its analysis first.
                    if let Some(watcher) = self.watcher.take() {
                        let watched = tokio::task::block_in_place(|| watcher.finish());
                        let event = serde_json::json!({
                            "message_type": "conversation",
                            "event_type": "conversation.perception_analysis",
                            "conversation_id": self.conversation,
                            "properties": {"analysis": perception::analysis_json(&watched.analysis)},
                        });
                        self.peer.send_text(&event.to_string());
                        self.flush().await;
                        watched_at_end = Some(watched);
                    }
                    self.peer.close();
                    break;
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.peer.receive(Instant::now(), source, &buf[..n]),
                    Err(e) => tracing::debug!("peer receive: {e}"),
                },
                _ = tokio::time::sleep_until(deadline.into()) => self.peer.tick(Instant::now()),
                _ = frames.tick(), if connected => {
                    let frame = self.media.next_audio().filter(|f| f.len() == FRAME).unwrap_or_else(|| vec![0.0; FRAME]);
                    match self.peer.send_audio(Instant::now(), &frame) {
                        Ok(Some(at)) => if let Some(r) = &self.recorder { r.replica_audio(at, &frame) },
                        Ok(None) => {}
                        Err(e) => tracing::debug!("peer audio out: {e}"),
                    }
                    self.exchange();
                }
                _ = video.tick(), if connected => {
                    if self.watcher.as_mut().is_some_and(Watcher::present) {
                        self.active(&api).await;
                    }
                    if let Some(frame) = self.media.next_video() {
                        // Encoding takes milliseconds: off the async threads.
                        let sent = tokio::task::block_in_place(|| self.peer.send_video(Instant::now(), &frame));
                        match sent {
                            Ok(Some(encoded)) => if let Some(r) = &self.recorder { r.video(encoded) },
                            Ok(None) => {}
                            Err(e) => tracing::debug!("peer video out: {e}"),
                        }
                    }
                }
            }
        }
        edge.lock().remove(&self.session);
        if connected {
            self.media.presence(false);
            api.host.signal(&self.conversation, Signal::ParticipantLeft).await;
        }
        if let Some(watcher) = self.watcher.take() {
            watched_at_end = tokio::task::spawn_blocking(move || watcher.finish()).await.ok();
        }
        if let Some(watched) = watched_at_end {
            analysed(&api, &self.conversation, &watched).await;
        }
        if let (Some(recorder), Some(store)) = (self.recorder.take(), edge.config.recordings.clone()) {
            edge.keeping.send_modify(|n| *n += 1);
            let name = format!("{}-{}", self.conversation, self.session);
            keep(&api, &store, recorder, &self.conversation, &name).await;
            edge.keeping.send_modify(|n| *n -= 1);
        }
    }

    /// The session's events out to the client, its transcript lines to
    /// the transcript, and what perception noticed in.
    fn exchange(&mut self) {
        for event in self.media.events() {
            self.peer.send_text(&event);
        }
        for line in self.media.utterances() {
            let _ = self.transcript.send(line);
        }
        if let Some(watcher) = &mut self.watcher {
            for note in watcher.take_notes() {
                self.media.noticed(&note.text);
            }
        }
    }

    /// Sends what the peer has to send now.
    async fn flush(&mut self) {
        while let Poll::Transmit { destination, contents } = self.peer.poll() {
            if let Err(e) = self.socket.send_to(&contents, destination).await {
                tracing::debug!("peer send: {e}");
            }
        }
    }

    /// The participant was seen or heard: tells the conversation's
    /// lifecycle, at most every [`ACTIVE_EVERY`].
    async fn active(&mut self, api: &Api) {
        let now = Instant::now();
        if self.last_active.is_none_or(|last| now.duration_since(last) >= ACTIVE_EVERY) {
            self.last_active = Some(now);
            api.host.signal(&self.conversation, Signal::ParticipantActive).await;
        }
    }

    async fn handle(&mut self, api: &Api, event: PeerEvent, connected: &mut bool) {
        match event {
            PeerEvent::Connected => {
                *connected = true;
                if let Some(path) = self.record_to.take() {
                    match Recorder::start(path) {
                        Ok(recorder) => {
                            self.recorder = Some(recorder);
                            self.peer.record_video(true);
                        }
                        Err(e) => {
                            tracing::error!(conversation = %self.conversation, "the call cannot be recorded: {e}")
                        }
                    }
                }
                if let Some((config, asks)) = self.watch_for.take() {
                    self.watcher = Some(Watcher::start(&config, asks));
                }
                self.media.presence(true);
                api.host.signal(&self.conversation, Signal::ParticipantJoined).await;
            }
            PeerEvent::Audio(pcm) => {
                if let (Some(r), Some(at)) = (&self.recorder, self.peer.media_time(Instant::now())) {
                    r.heard(at, &pcm);
                }
                let rms = (pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len().max(1) as f32).sqrt();
                if rms > VOICE_RMS {
                    self.active(api).await;
                }
                self.media.heard(&pcm);
            }
            PeerEvent::Video(frame) => {
                if let Some(watcher) = &mut self.watcher {
                    watcher.frame(Instant::now(), &frame);
                }
                self.media.seen(&frame);
            }
            PeerEvent::Data(text) => match messages::parse(&text, &self.conversation) {
                Ok(message) => self.media.message(message),
                Err(why) => {
                    self.peer.send_text(&error_event(&self.conversation, &why));
                }
            },
            PeerEvent::Closed => {}
        }
    }
}

/// Finishes a call's recording, keeps it, and queues
/// `application.recording_ready`.
async fn keep(api: &Api, store: &RecordingStore, recorder: Recorder, conversation: &str, name: &str) {
    let recorded = match tokio::task::spawn_blocking(move || recorder.finish()).await {
        Ok(Ok(recorded)) => recorded,
        Ok(Err(e)) => {
            tracing::error!(conversation, "the call's recording could not be written: {e}");
            return;
        }
        Err(e) => {
            tracing::error!(conversation, "the call's recording stopped: {e}");
            return;
        }
    };
    let stored = match store.keep(&recorded, conversation, name).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(conversation, "the recording {} could not be kept: {e}", recorded.path.display());
            return;
        }
    };
    tracing::info!(
        conversation,
        "recorded {:.1} s ({} bytes, {} pictures) to {}",
        recorded.duration,
        recorded.bytes,
        recorded.video_frames,
        stored.uri
    );
    let properties = |row: &crate::db::ConversationRow| {
        serde_json::json!({
            "replica_id": row.replica_id,
            "storage_provider": stored.provider,
            "storage_uri": stored.uri,
            "duration": (recorded.duration * 100.0).round() / 100.0,
        })
    };
    if !api.host.emit_later(conversation, "application.recording_ready", properties).await {
        tracing::error!(conversation, "the recording is at {}", stored.uri);
    }
}

/// Logs what a call's perception cost and queues
/// `application.perception_analysis`.
async fn analysed(api: &Api, conversation: &str, watched: &Watched) {
    tracing::info!(
        conversation,
        "perception looked at {} frames ({} skipped, {} unreadable), {:.1} ms each",
        watched.frames_looked_at,
        watched.frames_skipped,
        watched.frames_failed,
        watched.mean_look.as_secs_f64() * 1e3
    );
    let analysis = perception::analysis_json(&watched.analysis);
    let properties =
        |row: &crate::db::ConversationRow| serde_json::json!({"replica_id": row.replica_id, "analysis": analysis});
    api.host.emit_later(conversation, "application.perception_analysis", properties).await;
}
