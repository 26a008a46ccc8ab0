//! `POST /v1/audio/speech`: OpenAI's text-to-speech endpoint on the resident
//! voice, and `GET /v2/voices`, the voices this host speaks with.
//!
//! The request is OpenAI's JSON (`model`, `input`, `voice`, `speed`,
//! `response_format`, `stream_format`); the body streams as the speech is
//! synthesised (chunked transfer), so the first audio leaves after the
//! voice's first chunk rather than after the whole text. Synthesis runs on a
//! blocking thread that hands encoded bytes over a small bounded channel; a
//! client that goes away closes the channel, and the thread drops the speech
//! at its next chunk. A bounded number run at once and a bounded number
//! wait; past that the answer is 429.
//!
//! Differences from OpenAI, all refused with a 400 that says so rather than
//! silently changed:
//! - `response_format`: `wav`, `pcm` and `opus` only (no `mp3`, `aac`,
//!   `flac`); omitted means `wav`, not OpenAI's `mp3`.
//! - `speed`: 0.5–2.0 (OpenAI takes 0.25–4.0).
//! - `instructions` cannot steer this voice.
//! - `voice`: an id from `GET /v2/voices`; OpenAI's voice names (`alloy`,
//!   `nova`, …) and an omitted voice all mean the default voice.

pub mod encode;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tete_engine::tts::{Speaker, TtsError, Voice, VoiceSettings};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use utoipa::ToSchema;

use super::audio::{OpenAiError, OpenAiErrorBody, require_key};
use super::{Api, ApiError, ApiQuery, Page};
use encode::{Container, EncodeError, Encoder};

/// Longest `input`, in characters (OpenAI's limit).
pub const MAX_INPUT_CHARS: usize = 4096;
/// Largest request body: 4096 characters even when every one is escaped.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// OpenAI's model names; each means the resident voice.
pub const OPENAI_MODELS: [&str; 3] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];
/// OpenAI's voice names; each means the default voice.
pub const OPENAI_VOICES: [&str; 13] =
    ["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"];
/// The speeds this voice takes (`VoiceSettings::speed`).
pub const SPEED_RANGE: (f32, f32) = (0.5, 2.0);
/// The speeds OpenAI takes; outside them a request is simply invalid.
const OPENAI_SPEED_RANGE: (f32, f32) = (0.25, 4.0);

/// A voice as `GET /v2/voices` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoiceInfo {
    /// What `voice` names in `/v1/audio/speech` (the model id: a Piper model is one voice).
    pub voice_id: String,
    /// The voice's own name, e.g. `joe`.
    pub name: String,
    /// BCP 47, e.g. `en-US`.
    pub language: String,
    /// The rate the voice is synthesised at, in Hz (responses are resampled: `pcm`/`wav` 24 kHz, `opus` 48 kHz).
    pub sample_rate: u32,
    /// The model id in models.toml.
    pub model: String,
    /// Whether an omitted voice (or an OpenAI voice name) means this one.
    pub default: bool,
}

impl VoiceInfo {
    /// Describes the Piper voice fetched as `model_id` into `dir`, from its `*.onnx.json`.
    pub fn read(model_id: &str, dir: &Path) -> Result<Self, TtsError> {
        #[derive(Deserialize)]
        struct Raw {
            audio: RawAudio,
            #[serde(default)]
            dataset: Option<String>,
            #[serde(default)]
            language: Option<RawLanguage>,
        }
        #[derive(Deserialize)]
        struct RawAudio {
            sample_rate: u32,
        }
        #[derive(Deserialize)]
        struct RawLanguage {
            code: String,
        }
        let error = |path: &Path, reason: String| TtsError::Config { path: path.to_path_buf(), reason };
        let path = std::fs::read_dir(dir)
            .map_err(|e| error(dir, e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(".onnx.json"))
            .ok_or_else(|| error(dir, "no *.onnx.json voice config".into()))?;
        let text = std::fs::read_to_string(&path).map_err(|e| error(&path, e.to_string()))?;
        let raw: Raw = serde_json::from_str(&text).map_err(|e| error(&path, e.to_string()))?;
        Ok(Self {
            voice_id: model_id.to_string(),
            name: raw.dataset.unwrap_or_else(|| model_id.to_string()),
            language: raw.language.map(|l| l.code.replace('_', "-")).unwrap_or_else(|| "und".into()),
            sample_rate: raw.audio.sample_rate,
            model: model_id.to_string(),
            default: true,
        })
    }
}

/// The resident voice and the limits on its use.
#[derive(Clone)]
pub struct Synthesiser {
    voice: Arc<Voice>,
    info: Arc<VoiceInfo>,
    /// Syntheses admitted: running or waiting to run.
    admitted: Arc<Semaphore>,
    /// Syntheses running.
    running: Arc<Semaphore>,
    /// Syntheses stopped because their client went away.
    cancelled: Arc<AtomicU64>,
    /// Samples (48 kHz) synthesised, over all requests.
    said: Arc<AtomicU64>,
}

impl std::fmt::Debug for Synthesiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synthesiser")
            .field("voice", &self.info.voice_id)
            .field("running_free", &self.running.available_permits())
            .field("admitted_free", &self.admitted.available_permits())
            .finish()
    }
}

impl Synthesiser {
    /// Two syntheses at once (each streams for as long as its speech lasts), six more waiting.
    pub fn new(voice: Arc<Voice>, info: VoiceInfo) -> Self {
        Self::with_limits(voice, info, 2, 6)
    }

    /// `running` syntheses at once (at least one) and `waiting` queued behind them.
    pub fn with_limits(voice: Arc<Voice>, info: VoiceInfo, running: usize, waiting: usize) -> Self {
        let running = running.max(1);
        Self {
            voice,
            info: Arc::new(info),
            admitted: Arc::new(Semaphore::new(running + waiting)),
            running: Arc::new(Semaphore::new(running)),
            cancelled: Arc::new(AtomicU64::new(0)),
            said: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn voices(&self) -> &[VoiceInfo] {
        std::slice::from_ref(&self.info)
    }

    /// Syntheses stopped early because the client disconnected.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Seconds of speech synthesised so far, over all requests.
    pub fn seconds_said(&self) -> f64 {
        self.said.load(Ordering::Relaxed) as f64 / f64::from(tete_engine::tts::OUTPUT_RATE)
    }
}

/// `/v1/audio/speech`, with its auth and body limit.
pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/v1/audio/speech", post(speech))
        // Route layers: unknown paths stay 404 for everyone.
        .route_layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_key))
        .with_state(api)
}

/// `/v2/voices` (nested under `/v2` with its auth).
pub fn voice_routes() -> Router<Api> {
    Router::new().route("/voices", get(list_voices))
}

/// The request body, in OpenAI's shape.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpeechRequest {
    /// The resident voice's model id, or `tts-1`, `tts-1-hd`, `gpt-4o-mini-tts`; omitted = the resident voice.
    pub model: Option<String>,
    /// The text to say, 1–4096 characters.
    pub input: String,
    /// A `voice_id` from `GET /v2/voices`; omitted or an OpenAI voice name (`alloy`, `nova`, …) = the default voice.
    pub voice: Option<String>,
    /// Not supported: this voice cannot be steered by a prompt.
    pub instructions: Option<String>,
    /// `wav` (default; 24 kHz 16-bit mono with streaming sizes), `pcm` (24 kHz 16-bit LE mono, no header) or `opus` (Ogg-Opus, 48 kHz).
    pub response_format: Option<String>,
    /// 0.5–2.0 (default 1).
    pub speed: Option<f32>,
    /// `audio` (default: the audio itself) or `sse` (`speech.audio.delta` events with base64 audio, then `speech.audio.done`).
    pub stream_format: Option<String>,
}

/// A checked request.
#[derive(Debug)]
struct Job {
    text: String,
    container: Container,
    speed: f32,
    sse: bool,
}

fn check(synth: &Synthesiser, request: SpeechRequest) -> Result<Job, OpenAiError> {
    let info = &synth.info;
    if let Some(model) = request.model.as_deref().filter(|m| !m.is_empty())
        && model != info.model
        && !OPENAI_MODELS.contains(&model)
    {
        return Err(OpenAiError::not_found(
            Some("model"),
            "model_not_found",
            format!("model {model:?} is not served here; the resident voice is {:?} (or say tts-1)", info.model),
        ));
    }
    if let Some(voice) = request.voice.as_deref().filter(|v| !v.is_empty())
        && voice != info.voice_id
        && !OPENAI_VOICES.iter().any(|known| known.eq_ignore_ascii_case(voice))
    {
        return Err(OpenAiError::invalid(
            Some("voice"),
            "invalid_value",
            format!(
                "voice {voice:?} is not on this host: use {:?} (GET /v2/voices lists them), or an OpenAI voice name for the default voice",
                info.voice_id
            ),
        ));
    }
    if request.instructions.as_deref().is_some_and(|i| !i.trim().is_empty()) {
        return Err(OpenAiError::invalid(
            Some("instructions"),
            "unsupported_value",
            "instructions are not supported: this voice cannot be steered by a prompt",
        ));
    }
    let text = request.input;
    if text.trim().is_empty() {
        return Err(OpenAiError::invalid(Some("input"), "invalid_value", "input is empty: give the text to say"));
    }
    let chars = text.chars().count();
    if chars > MAX_INPUT_CHARS {
        return Err(OpenAiError::invalid(
            Some("input"),
            "string_above_max_length",
            format!("input is {chars} characters; the most is {MAX_INPUT_CHARS}"),
        ));
    }
    let container = match request.response_format.as_deref() {
        None | Some("wav") => Container::Wav,
        Some("pcm") => Container::Pcm,
        Some("opus") => Container::OggOpus,
        Some(other @ ("mp3" | "aac" | "flac")) => {
            return Err(OpenAiError::invalid(
                Some("response_format"),
                "unsupported_value",
                format!("response_format {other:?} is not supported here: use wav, pcm or opus"),
            ));
        }
        Some(other) => {
            return Err(OpenAiError::invalid(
                Some("response_format"),
                "invalid_value",
                format!("response_format {other:?} is not a format: use wav, pcm or opus"),
            ));
        }
    };
    let speed = request.speed.unwrap_or(1.0);
    let (lo, hi) = SPEED_RANGE;
    if !(lo..=hi).contains(&speed) {
        let (code, why) = if (OPENAI_SPEED_RANGE.0..=OPENAI_SPEED_RANGE.1).contains(&speed) {
            ("unsupported_value", "this voice speaks at 0.5–2.0 times its own rate")
        } else {
            ("invalid_value", "speed is 0.25–4.0 in OpenAI's API, and this voice takes 0.5–2.0")
        };
        return Err(OpenAiError::invalid(Some("speed"), code, format!("speed {speed} is out of range: {why}")));
    }
    let sse = match request.stream_format.as_deref() {
        None | Some("audio") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(OpenAiError::invalid(
                Some("stream_format"),
                "invalid_value",
                format!("stream_format {other:?}: use audio or sse"),
            ));
        }
    };
    Ok(Job { text, container, speed, sse })
}

fn content_type(job: &Job) -> &'static str {
    match (job.sse, job.container) {
        (true, _) => "text/event-stream",
        (false, Container::Wav) => "audio/wav",
        (false, Container::Pcm) => "audio/pcm",
        (false, Container::OggOpus) => "audio/ogg; codecs=opus",
    }
}

/// A message from the synthesis thread: bytes of the body, or the failure
/// that ends it (an error response when nothing has been sent yet).
type Piece = Result<Vec<u8>, OpenAiError>;

/// Says `input` in the resident voice, streaming the audio as it is made.
#[utoipa::path(post, path = "/v1/audio/speech", tag = "audio",
    request_body = SpeechRequest,
    responses(
        (status = 200, description = "the audio (audio/wav, audio/pcm, audio/ogg; codecs=opus), or text/event-stream with stream_format sse; chunked as it is synthesised"),
        (status = 400, description = "bad JSON, an unknown voice, an unsupported format or speed, an empty or too long input", body = OpenAiErrorBody),
        (status = 401, body = OpenAiErrorBody),
        (status = 404, description = "an unknown model", body = OpenAiErrorBody),
        (status = 413, body = OpenAiErrorBody),
        (status = 429, description = "too many syntheses running and waiting", body = OpenAiErrorBody),
        (status = 503, description = "no voice is loaded on this host", body = OpenAiErrorBody)))]
pub async fn speech(State(api): State<Api>, body: Result<Bytes, BytesRejection>) -> Result<Response, OpenAiError> {
    let synth = api.config.voice.clone().ok_or_else(|| {
        OpenAiError::server(StatusCode::SERVICE_UNAVAILABLE, "model_not_loaded", "no voice is loaded on this host")
    })?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OpenAiError::invalid(None, "request_too_large", format!("the request body exceeds {MAX_BODY_BYTES} bytes"))
        } else {
            OpenAiError::invalid(None, "invalid_request", format!("reading the request body: {}", e.body_text()))
        }
    })?;
    let request: SpeechRequest = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::invalid(None, "invalid_json", format!("the request body: {e}")))?;
    let job = check(&synth, request)?;
    let admitted = synth
        .admitted
        .clone()
        .try_acquire_owned()
        .map_err(|_| OpenAiError::rate_limited("too many speech requests are running or waiting; retry shortly"))?;
    let running = synth.running.clone().acquire_owned().await.map_err(|_| {
        OpenAiError::server(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the voice is shutting down")
    })?;
    let content_type = content_type(&job);
    let (tx, mut rx) = mpsc::channel::<Piece>(4);
    let worker = synth.clone();
    tokio::task::spawn_blocking(move || worker.run(job, (admitted, running), tx));
    // The first piece decides the status: audio, or an error response.
    let first = match rx.recv().await {
        Some(piece) => piece?,
        None => {
            return Err(OpenAiError::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "speech synthesis failed"));
        }
    };
    let rest = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let body = futures_util::stream::once(std::future::ready(Ok(first)))
        .chain(rest)
        // A failure after the status has left can only cut the body short.
        .map(|piece| piece.map(Bytes::from).map_err(|_| std::io::Error::other("speech synthesis failed")));
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// How a synthesis ended, when it did not fail.
enum Ended {
    Finished,
    Cancelled,
}

impl Synthesiser {
    /// The synthesis thread: holds its permits until it ends. The channel
    /// closes without an error only after the last bytes, so a failure (a
    /// panic included) never passes for a short but whole answer.
    fn run(&self, job: Job, permits: (OwnedSemaphorePermit, OwnedSemaphorePermit), tx: mpsc::Sender<Piece>) {
        let _permits = permits;
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.synthesise(&job, &tx)))
            .unwrap_or_else(|_| {
                tracing::error!("speech synthesis panicked");
                Err(OpenAiError::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "speech synthesis failed"))
            });
        match ended {
            Ok(Ended::Finished) => {}
            Ok(Ended::Cancelled) => {
                self.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("speech cancelled: the client went away");
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
    }

    fn synthesise(&self, job: &Job, tx: &mpsc::Sender<Piece>) -> Result<Ended, OpenAiError> {
        let mut speaker = Speaker::new(self.voice.clone()).map_err(synthesis_failed)?;
        let settings = VoiceSettings { speed: job.speed, ..VoiceSettings::default() };
        let speech = speaker.say(&job.text, settings).map_err(synthesis_failed)?;
        let mut encoder = Encoder::new(job.container).map_err(encoding_failed)?;
        let mut said = false;
        for chunk in speech {
            let chunk = chunk.map_err(synthesis_failed)?;
            if chunk.audio.is_empty() {
                continue;
            }
            said = true;
            self.said.fetch_add(chunk.audio.len() as u64, Ordering::Relaxed);
            encoder.push(&chunk.audio).map_err(encoding_failed)?;
            let bytes = encoder.take();
            // Dropping `speech` on the way out stops the synthesis.
            if !bytes.is_empty() && tx.blocking_send(Ok(frame(bytes, job.sse))).is_err() {
                return Ok(Ended::Cancelled);
            }
        }
        if !said {
            return Err(OpenAiError::invalid(
                Some("input"),
                "invalid_value",
                "the input has nothing this voice can say (no words it can pronounce)",
            ));
        }
        encoder.finish().map_err(encoding_failed)?;
        let mut last = frame(encoder.take(), job.sse);
        if job.sse {
            last.extend_from_slice(&sse_event(&SpeechEvent::Done { usage: Usage::default() }));
        }
        if tx.blocking_send(Ok(last)).is_err() {
            return Ok(Ended::Cancelled);
        }
        Ok(Ended::Finished)
    }
}

fn synthesis_failed(e: TtsError) -> OpenAiError {
    tracing::error!("speech synthesis: {e}");
    OpenAiError::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "speech synthesis failed")
}

fn encoding_failed(e: EncodeError) -> OpenAiError {
    tracing::error!("encoding speech: {e}");
    OpenAiError::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "encoding the audio failed")
}

/// OpenAI's speech stream events.
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
enum SpeechEvent {
    /// Base64 of the next bytes of audio in the requested format.
    #[serde(rename = "speech.audio.delta")]
    Delta { audio: String },
    /// The end. This host counts no tokens: `usage` is zeros, present because OpenAI's clients expect it.
    #[serde(rename = "speech.audio.done")]
    Done { usage: Usage },
}

#[derive(Debug, Default, Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

fn sse_event(event: &SpeechEvent) -> Vec<u8> {
    let json = serde_json::to_string(event).unwrap_or_default();
    format!("data: {json}\n\n").into_bytes()
}

/// The bytes to send for `audio`: as they are, or as an SSE delta event.
fn frame(audio: Vec<u8>, sse: bool) -> Vec<u8> {
    match (sse, audio.is_empty()) {
        (false, _) => audio,
        (true, true) => Vec::new(),
        (true, false) => {
            sse_event(&SpeechEvent::Delta { audio: base64::engine::general_purpose::STANDARD.encode(audio) })
        }
    }
}

/// Lists the voices this host speaks with.
#[utoipa::path(get, path = "/v2/voices", tag = "voices", params(Page),
    responses((status = 200, description = "{data: [VoiceInfo], total_count}", body = [VoiceInfo]),
        (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody)))]
pub async fn list_voices(State(api): State<Api>, ApiQuery(page): ApiQuery<Page>) -> Result<Response, ApiError> {
    let (limit, offset) = page.limit_offset()?;
    let voices = api.config.voice.as_ref().map(Synthesiser::voices).unwrap_or_default();
    let data: Vec<VoiceInfo> = voices.iter().skip(offset as usize).take(limit as usize).cloned().collect();
    Ok(super::list(data, voices.len() as i64).into_response())
}
