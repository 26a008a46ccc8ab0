//! A call's media when the conversation loop drives it: the user's audio
//! and messages go to a [`LiveSession`] on the host's executor, the
//! replica's voice comes back from it, and its face is rendered on the
//! playback clock with the mouth shapes of what is playing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tete_engine::dialogue::DialogueConfig;
use tete_engine::hearing::HearingConfig;
use tete_engine::llm::chat::ToolSet;
use tete_engine::llm::context::ConversationContext;
use tete_engine::llm::openai::{ChatClient, ChatEndpoint};
use tete_engine::scheduler::{Executor, SessionSetup};
use tete_engine::session::{FaceCue, LiveSession, RATE, RemoteLlm};
use tete_engine::tts::VoiceSettings;
use tete_engine::turn::{Level, TurnMode};

use super::face::{Live, ReplicaMedia};
use super::messages::ClientMessage;
use super::peer::VideoFrame;
use super::{Joining, MediaFactory, SessionMedia};
use crate::api::personas::{self, Persona, PipelineMode};

/// The playback clock, shared by a call's network task (which moves it)
/// and its renderer (which reads it).
#[derive(Debug)]
pub struct PlaybackClock {
    epoch: Instant,
    samples: AtomicU64,
    /// When it last moved, in µs since `epoch`.
    moved_us: AtomicU64,
}

impl PlaybackClock {
    pub fn new(now: Instant) -> Self {
        Self { epoch: now, samples: AtomicU64::new(0), moved_us: AtomicU64::new(0) }
    }

    /// `samples` (at 48 kHz) have been handed to the network by `now`.
    pub fn set(&self, samples: u64, now: Instant) {
        self.samples.store(samples, Ordering::Release);
        self.moved_us.store(now.saturating_duration_since(self.epoch).as_micros() as u64, Ordering::Release);
    }

    /// The playback time at `now`: the last position plus the time since
    /// it moved (at most one 20 ms frame's worth ahead).
    pub fn seconds_at(&self, now: Instant) -> f64 {
        let samples = self.samples.load(Ordering::Acquire);
        let moved = self.moved_us.load(Ordering::Acquire) as f64 / 1e6;
        let since = (now.saturating_duration_since(self.epoch).as_secs_f64() - moved).clamp(0.0, 0.02);
        samples as f64 / f64::from(RATE) + since
    }
}

/// A call's settings, from its persona and conversation.
#[derive(Debug, Clone)]
pub struct CallSetup {
    pub session: SessionSetup,
    pub dialogue: DialogueConfig,
    pub context: ConversationContext,
    /// The persona's own LLM (`layers.llm.base_url`) and its tools.
    pub remote: Option<(ChatEndpoint, Option<Vec<Value>>)>,
}

/// The settings of a call from its persona and conversation.
pub fn call_setup(persona: Option<&Value>, conversation: &Value, seed: u64) -> CallSetup {
    let persona: Persona = persona.and_then(|doc| serde_json::from_value(doc.clone()).ok()).unwrap_or_default();
    let layers = persona.layers.clone().unwrap_or_default();
    let llm = layers.llm.clone().unwrap_or_default();
    let flow = layers.conversational_flow.clone().unwrap_or_default();
    let level = |l: Option<personas::Level>| match l {
        Some(personas::Level::Low) => Level::Low,
        Some(personas::Level::High) => Level::High,
        _ => Level::Medium,
    };
    let hearing = HearingConfig {
        turn_mode: match flow.turn_detection_model {
            Some(personas::TurnDetection::Silence) => TurnMode::Silence,
            _ => TurnMode::Smart,
        },
        patience: level(flow.turn_taking_patience),
        interruptibility: level(flow.replica_interruptibility),
        ..Default::default()
    };
    let settings = layers.tts.as_ref().and_then(|t| t.voice_settings.clone()).unwrap_or_default();
    let voice = VoiceSettings::from_persona(settings.speed, settings.emotion.as_deref(), seed).unwrap_or_default();
    let tools = match llm.tools.as_deref() {
        Some(tools) if !tools.is_empty() => ToolSet::parse(Some(tools), None).unwrap_or_else(|e| {
            tracing::warn!("the persona's tools are not offered: {e}");
            ToolSet::default()
        }),
        _ => ToolSet::default(),
    };
    let system_prompt = persona.system_prompt.clone().unwrap_or_default();
    let persona_context = persona.context.clone().unwrap_or_default();
    let conversational = conversation["conversational_context"].as_str().unwrap_or_default();
    let context = ConversationContext::new(&system_prompt, &persona_context, conversational);
    let remote = llm.base_url.clone().map(|base_url| {
        let endpoint = ChatEndpoint {
            base_url,
            api_key: llm.api_key.clone(),
            model: llm.model.clone().unwrap_or_default(),
            headers: llm.headers.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
            extra_body: llm.extra_body.clone().unwrap_or_default(),
            timeouts: Default::default(),
        };
        (endpoint, llm.tools.clone().filter(|t| !t.is_empty()))
    });
    CallSetup {
        session: SessionSetup { hearing, persona: context.persona_messages(), tools, voice },
        dialogue: DialogueConfig {
            greeting: conversation["custom_greeting"].as_str().map(str::to_string),
            echo_only: matches!(persona.pipeline_mode, Some(PipelineMode::Echo)),
            speculative: llm.speculative_inference.unwrap_or(true),
        },
        context,
        remote,
    }
}

/// A live session on `executor` for a call set up as `call`, composing on
/// the persona's own LLM when it has one.
pub fn live_session(executor: &Executor, call: CallSetup, now: Instant) -> Result<LiveSession, String> {
    let session =
        LiveSession::start(executor, call.session, call.dialogue, call.context, now).map_err(|e| e.to_string())?;
    let Some((endpoint, tools)) = call.remote else { return Ok(session) };
    let client = ChatClient::new(endpoint).map_err(|e| e.to_string())?;
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|e| format!("no runtime for the persona's LLM: {e}"))?;
    Ok(session.with_remote(RemoteLlm { client, tools, runtime }))
}

/// The host's media when it runs the conversation loop: every call gets a
/// live session on `executor` and its replica's face (a grey frame when
/// the conversation has no trained replica).
pub fn conversation_media(replicas_dir: PathBuf, size: u32, executor: Arc<Executor>) -> MediaFactory {
    Arc::new(move |joining: Joining<'_>| {
        let seed = joining.conversation.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let now = Instant::now();
        let session = match live_session(&executor, call_setup(joining.persona, joining.document, seed), now) {
            Ok(session) => session,
            Err(e) => {
                tracing::error!(conversation = joining.conversation, "the call's session cannot start: {e}");
                return Box::new(super::Silent { size: size as usize }) as Box<dyn SessionMedia>;
            }
        };
        let clock = Arc::new(PlaybackClock::new(now));
        let (cues, cues_rx) = crossbeam_channel::unbounded();
        let busy = {
            let executor = executor.clone();
            Arc::new(move || executor.load() > tete_engine::scheduler::MAX_LOAD) as Arc<dyn Fn() -> bool + Send + Sync>
        };
        let face = joining.replica.and_then(|replica| {
            let live = Live { clock: clock.clone(), cues: cues_rx, busy };
            ReplicaMedia::start_live(&replicas_dir.join(replica), seed, size, Some(live))
                .map_err(|e| {
                    tracing::info!(conversation = joining.conversation, "replica {replica} cannot be shown: {e}")
                })
                .ok()
        });
        Box::new(ConversationMedia {
            session,
            face,
            cues,
            clock,
            size: size as usize,
            conversation: joining.conversation.to_string(),
        })
    })
}

/// One call's media on the conversation loop.
pub struct ConversationMedia {
    session: LiveSession,
    face: Option<ReplicaMedia>,
    cues: crossbeam_channel::Sender<FaceCue>,
    clock: Arc<PlaybackClock>,
    size: usize,
    conversation: String,
}

impl SessionMedia for ConversationMedia {
    fn next_audio(&mut self) -> Option<Vec<f32>> {
        let now = Instant::now();
        let audio = self.session.next_audio(now);
        self.clock.set((self.session.playback_seconds() * f64::from(RATE)).round() as u64, now);
        for cue in self.session.take_cues() {
            let _ = self.cues.send(cue);
        }
        audio
    }

    fn next_video(&mut self) -> Option<VideoFrame> {
        match &mut self.face {
            Some(face) => face.next_video(),
            None => Some(VideoFrame::solid(self.size, self.size, (96, 128, 128))),
        }
    }

    fn heard(&mut self, pcm: &[f32]) {
        self.session.heard(Instant::now(), pcm);
    }

    fn seen(&mut self, _: &VideoFrame) {}

    fn message(&mut self, message: ClientMessage) {
        self.session.interaction(Instant::now(), message);
    }

    fn presence(&mut self, connected: bool) {
        if connected {
            self.session.joined(Instant::now());
        }
    }

    fn events(&mut self) -> Vec<String> {
        self.session
            .take_events()
            .into_iter()
            .map(|(event_type, properties)| {
                json!({
                    "message_type": "conversation",
                    "event_type": event_type,
                    "conversation_id": self.conversation,
                    "properties": properties,
                })
                .to_string()
            })
            .collect()
    }

    fn utterances(&mut self) -> Vec<(&'static str, String)> {
        self.session.take_utterances()
    }

    fn noticed(&mut self, note: &str) {
        self.session.noticed(note);
    }
}

/// Writes a call's transcript lines in order as they come.
pub fn transcript_writer(
    api: crate::api::Api,
    conversation: String,
) -> tokio::sync::mpsc::UnboundedSender<(&'static str, String)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, String)>();
    tokio::spawn(async move {
        while let Some((role, content)) = rx.recv().await {
            let now = crate::db::rfc3339(crate::db::now_us());
            let row = crate::db::UtteranceRow {
                seq: 0,
                // The transcript speaks OpenAI's roles.
                role: if role == "replica" { "assistant".into() } else { role.into() },
                content,
                started_at: now.clone(),
                ended_at: now,
                interrupted: false,
            };
            if let Err(e) = api.db().append_utterance(&conversation, &row).await {
                tracing::error!(conversation, "a transcript line was not kept: {e}");
            }
        }
    });
    tx
}
