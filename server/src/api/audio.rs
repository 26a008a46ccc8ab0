//! `POST /v1/audio/transcriptions`: OpenAI's speech-to-text endpoint on the
//! resident recogniser. Multipart in (`file`, `model`, `language`, `prompt`,
//! `response_format`, `temperature`), OpenAI shapes out, errors as
//! `{"error": {message, type, param, code}}`. The upload is decoded
//! (WAV, FLAC, MP3, Ogg-Opus, Ogg-Vorbis), resampled to 16 kHz and
//! transcribed on a blocking thread; a bounded number run at once and a
//! bounded number wait, past that the answer is 429.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use tete_engine::asr::{AsrError, SAMPLE_RATE, SpeechToText, TranscribeOptions, Transcription};
use tete_engine::audio::DecodeError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use super::Api;

/// Largest audio upload, as OpenAI's (the host's `max_upload_bytes` may lower it).
pub const MAX_AUDIO_BYTES: usize = 25 << 20;
/// Longest audio accepted; decoding stops past it.
pub const MAX_AUDIO_DURATION: Duration = Duration::from_secs(30 * 60);
/// Room for the form's other fields and boundaries around the file.
const FORM_OVERHEAD: usize = 64 * 1024;
/// The model name OpenAI clients send; it means the resident recogniser.
const OPENAI_MODEL_ALIAS: &str = "whisper-1";

/// The resident recogniser and the limits on its use.
#[derive(Clone)]
pub struct Recogniser {
    model: Arc<dyn SpeechToText>,
    /// Transcriptions admitted: running or waiting to run.
    admitted: Arc<Semaphore>,
    /// Transcriptions running.
    running: Arc<Semaphore>,
}

impl std::fmt::Debug for Recogniser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recogniser")
            .field("model", &self.model.model_id())
            .field("running_free", &self.running.available_permits())
            .field("admitted_free", &self.admitted.available_permits())
            .finish()
    }
}

impl Recogniser {
    /// One transcription at a time (each uses every core), four more waiting.
    pub fn new(model: Arc<dyn SpeechToText>) -> Self {
        Self::with_limits(model, 1, 4)
    }

    /// `running` transcriptions at once (at least one) and `waiting` queued behind them.
    pub fn with_limits(model: Arc<dyn SpeechToText>, running: usize, waiting: usize) -> Self {
        let running = running.max(1);
        Self {
            model,
            admitted: Arc::new(Semaphore::new(running + waiting)),
            running: Arc::new(Semaphore::new(running)),
        }
    }

    pub fn model_id(&self) -> &str {
        self.model.model_id()
    }
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `server_error`, `requests`.
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl OpenAiError {
    pub(crate) fn invalid(param: Option<&'static str>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: Some(code),
        }
    }

    pub(crate) fn server(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind: "server_error", param: None, code: Some(code) }
    }

    pub(crate) fn not_found(param: Option<&'static str>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: Some(code),
        }
    }

    pub(crate) fn rate_limited(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
            kind: "requests",
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the upload exceeds {limit} bytes"),
            kind: "invalid_request_error",
            param: Some("file"),
            code: Some("file_too_large"),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let error = OpenAiErrorDetail {
            message: self.message,
            kind: self.kind.into(),
            param: self.param.map(Into::into),
            code: self.code.map(Into::into),
        };
        (self.status, axum::Json(OpenAiErrorBody { error })).into_response()
    }
}

impl From<super::ApiError> for OpenAiError {
    fn from(e: super::ApiError) -> Self {
        match e.status {
            StatusCode::UNAUTHORIZED => Self {
                status: e.status,
                message: format!("{} (or Authorization: Bearer)", e.message),
                kind: "invalid_request_error",
                param: None,
                code: Some("invalid_api_key"),
            },
            status => Self::server(status, e.error, e.message),
        }
    }
}

impl From<DecodeError> for OpenAiError {
    fn from(e: DecodeError) -> Self {
        let code = match &e {
            DecodeError::Empty => "empty_file",
            DecodeError::NoAudio => "no_audio",
            DecodeError::Truncated(_) => "truncated_file",
            DecodeError::Corrupt(_) | DecodeError::DecoderPanic(_) => "corrupt_file",
            DecodeError::Unsupported(_) => "unsupported_file",
            DecodeError::TooLong { .. } => "audio_too_long",
            DecodeError::Resample(e) => {
                tracing::error!("resampling an upload: {e}");
                return Self::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "resampling the audio failed");
            }
        };
        Self::invalid(Some("file"), code, e.to_string())
    }
}

impl From<AsrError> for OpenAiError {
    fn from(e: AsrError) -> Self {
        match e {
            AsrError::Language(_) => Self::invalid(Some("language"), "unsupported_language", e.to_string()),
            AsrError::Audio(_) => Self::invalid(Some("file"), "invalid_audio", e.to_string()),
            other => {
                tracing::error!("transcription: {other}");
                Self::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the recogniser failed on this audio")
            }
        }
    }
}

fn form_error(e: MultipartError, limit: usize) -> OpenAiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        OpenAiError::too_large(limit)
    } else {
        OpenAiError::invalid(None, "invalid_form", format!("reading the multipart form: {}", e.body_text()))
    }
}

/// The same keys as `/v2`, with OpenAI-shaped refusals.
pub(crate) async fn require_key(State(api): State<Api>, request: Request, next: Next) -> Response {
    match super::authenticate(&api, request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(e) => OpenAiError::from(e).into_response(),
    }
}

fn upload_limit(api: &Api) -> usize {
    MAX_AUDIO_BYTES.min(api.config.max_upload_bytes)
}

/// `/v1/audio/transcriptions`, with its auth and body limit.
pub fn routes(api: Api) -> Router {
    let limit = upload_limit(&api);
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        // Route layers: unknown paths stay 404 for everyone.
        .route_layer(DefaultBodyLimit::max(limit + FORM_OVERHEAD))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_key))
        .with_state(api)
}

/// The multipart form (documentation only: the handler reads it field by field).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TranscriptionForm {
    /// The audio: WAV, FLAC, MP3, Ogg-Opus or Ogg-Vorbis, at any sample rate.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// The resident recogniser's id, or `whisper-1`; omitted = the resident one.
    model: Option<String>,
    /// ISO 639-1 code of the speech; omitted = detected.
    language: Option<String>,
    /// Text that came before, to steer spelling and style.
    prompt: Option<String>,
    /// `json` (default), `text` or `verbose_json`.
    response_format: Option<String>,
    /// Only 0 (greedy decoding).
    temperature: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    VerboseJson,
}

/// What the form asked for.
struct Form {
    file: Option<Vec<u8>>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    format: Format,
}

/// Reads the form, holding the file in memory up to `limit` bytes.
async fn read_form(mut form: Multipart, limit: usize) -> Result<Form, OpenAiError> {
    let mut out = Form { file: None, model: None, language: None, prompt: None, format: Format::Json };
    let mut seen = std::collections::HashSet::new();
    while let Some(mut field) = form.next_field().await.map_err(|e| form_error(e, limit))? {
        let name = field.name().unwrap_or_default().to_string();
        let repeatable = name == "timestamp_granularities[]";
        if !repeatable && !seen.insert(name.clone()) {
            return Err(OpenAiError::invalid(None, "invalid_form", format!("the form has two {name:?} fields")));
        }
        if name == "file" {
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| form_error(e, limit))? {
                if bytes.len() + chunk.len() > limit {
                    return Err(OpenAiError::too_large(limit));
                }
                bytes.extend_from_slice(&chunk);
            }
            out.file = Some(bytes);
            continue;
        }
        let value = field.text().await.map_err(|e| form_error(e, limit))?;
        let value = value.trim();
        let text = || (!value.is_empty()).then(|| value.to_string());
        match name.as_str() {
            "model" => out.model = text(),
            "language" => out.language = text(),
            "prompt" => out.prompt = text(),
            "response_format" => {
                out.format = match value {
                    "json" | "" => Format::Json,
                    "text" => Format::Text,
                    "verbose_json" => Format::VerboseJson,
                    other => {
                        return Err(OpenAiError::invalid(
                            Some("response_format"),
                            "unsupported_value",
                            format!("response_format {other:?} is not supported here: use json, text or verbose_json"),
                        ));
                    }
                }
            }
            "temperature" => {
                let t: f64 = value.parse().map_err(|_| {
                    OpenAiError::invalid(
                        Some("temperature"),
                        "invalid_value",
                        format!("temperature {value:?} is not a number"),
                    )
                })?;
                if t != 0.0 {
                    return Err(OpenAiError::invalid(
                        Some("temperature"),
                        "unsupported_value",
                        "only temperature 0 is supported: the recogniser decodes greedily",
                    ));
                }
            }
            "timestamp_granularities[]" if value == "segment" => {}
            "timestamp_granularities[]" => {
                return Err(OpenAiError::invalid(
                    Some("timestamp_granularities"),
                    "unsupported_value",
                    format!("timestamp granularity {value:?} is not supported here: only segment"),
                ));
            }
            "stream" if value == "false" => {}
            other => {
                return Err(OpenAiError::invalid(
                    None,
                    "unknown_parameter",
                    format!("unknown or unsupported form field {other:?}"),
                ));
            }
        }
    }
    Ok(out)
}

/// `{"text"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TranscriptionJson {
    pub text: String,
}

/// `verbose_json`: the text with its language, duration and timed segments.
#[derive(Debug, Serialize, ToSchema)]
pub struct TranscriptionVerbose {
    /// Always `transcribe`.
    pub task: String,
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub text: String,
    pub segments: Vec<SegmentJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentJson {
    pub id: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
}

fn respond(t: Transcription, format: Format) -> Response {
    match format {
        Format::Json => axum::Json(TranscriptionJson { text: t.text }).into_response(),
        Format::Text => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t.text).into_response(),
        Format::VerboseJson => {
            let segments = t
                .segments
                .into_iter()
                .map(|s| SegmentJson {
                    id: s.id,
                    start: s.start,
                    end: s.end,
                    text: s.text,
                    tokens: s.tokens,
                    avg_logprob: s.avg_logprob,
                    no_speech_prob: s.no_speech_prob,
                })
                .collect();
            axum::Json(TranscriptionVerbose {
                task: "transcribe".into(),
                language: t.language,
                duration: t.duration,
                text: t.text,
                segments,
            })
            .into_response()
        }
    }
}

/// Transcribes an uploaded audio file.
#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "audio",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "json: {text}; text: the text as text/plain; verbose_json: TranscriptionVerbose", body = TranscriptionJson),
        (status = 400, description = "a bad form, or a file that is empty, cut short, damaged, too long or not a supported format", body = OpenAiErrorBody),
        (status = 401, body = OpenAiErrorBody), (status = 413, body = OpenAiErrorBody),
        (status = 429, description = "too many transcriptions running and waiting", body = OpenAiErrorBody),
        (status = 503, description = "no recogniser is loaded on this host", body = OpenAiErrorBody)))]
pub async fn transcriptions(
    State(api): State<Api>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, OpenAiError> {
    let Some(recogniser) = api.config.speech.clone() else {
        return Err(OpenAiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_not_loaded",
            "no speech recogniser is loaded on this host",
        ));
    };
    // Admitted before the upload is read, so the uploads held in memory are bounded too.
    let admitted: OwnedSemaphorePermit = recogniser
        .admitted
        .clone()
        .try_acquire_owned()
        .map_err(|_| OpenAiError::rate_limited("too many transcriptions are running or waiting; retry shortly"))?;
    let form = form.map_err(|e| {
        OpenAiError::invalid(None, "invalid_form", format!("send multipart/form-data with a file: {}", e.body_text()))
    })?;
    let limit = upload_limit(&api);
    let form = read_form(form, limit).await?;
    let file = form.file.ok_or_else(|| OpenAiError::invalid(Some("file"), "missing_file", "the form has no file"))?;
    if let Some(model) = &form.model
        && model != recogniser.model_id()
        && model != OPENAI_MODEL_ALIAS
    {
        return Err(OpenAiError::invalid(
            Some("model"),
            "model_not_found",
            format!("model {model:?} is not loaded here; this host transcribes with {:?}", recogniser.model_id()),
        ));
    }
    let running = recogniser.running.clone().acquire_owned().await.map_err(|_| {
        OpenAiError::server(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the recogniser is shutting down")
    })?;
    let options = TranscribeOptions { language: form.language, prompt: form.prompt };
    let model = recogniser.model.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<Transcription, OpenAiError> {
        // Held until the work ends, even if the client has gone.
        let _permits = (admitted, running);
        let audio = tete_engine::audio::decode_to(&file, SAMPLE_RATE, MAX_AUDIO_DURATION)?;
        tracing::debug!("transcribing {:.1} s of {} at {} Hz", audio.duration(), audio.format, audio.source_rate);
        Ok(model.transcribe(&audio.samples, &options)?)
    });
    let transcription = work.await.map_err(|e| {
        tracing::error!("transcription task: {e}");
        OpenAiError::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the transcription failed")
    })??;
    Ok(respond(transcription, form.format))
}
