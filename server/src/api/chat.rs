//! `POST /v1/chat/completions`: OpenAI's chat endpoint on the resident LLM,
//! streamed (SSE `chat.completion.chunk` events ending in `data: [DONE]`)
//! or whole (`chat.completion`), with function calling (`tools`,
//! `tool_choice`; a call comes back as `tool_calls`, its arguments valid
//! JSON for the tool's schema). Generation runs on a blocking thread; a
//! client that goes away stops it within one decode step. A bounded number
//! run at once and a bounded number wait; past that the answer is 429.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::json;
use tete_engine::llm::LlmModel;
use tete_engine::llm::chat::{Completion, CompletionError, CompletionOptions, ToolSet, complete};
use tete_engine::llm::openai::{ChatChunk, ChatRequest, ChunkChoice, Delta, FunctionDelta, ToolCallDelta};
use tete_engine::llm::tools::Call;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Api;
use super::audio::{OpenAiError, require_key};

/// The resident LLM and the limits on its use.
#[derive(Clone)]
pub struct ChatModel {
    model: Arc<LlmModel>,
    id: String,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ChatModel {
    /// One generation at a time (each uses every core), eight more waiting.
    pub fn new(model: Arc<LlmModel>, id: impl Into<String>) -> Self {
        Self { model, id: id.into(), admitted: Arc::new(Semaphore::new(1 + 8)), running: Arc::new(Semaphore::new(1)) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// `/v1/chat/completions`, with its auth and body limit.
pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route_layer(DefaultBodyLimit::max(super::MAX_JSON_BYTES))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_key))
        .with_state(api)
}

impl From<CompletionError> for OpenAiError {
    fn from(e: CompletionError) -> Self {
        match e {
            CompletionError::Invalid { param, message } => OpenAiError::invalid(Some(param), "invalid_value", message),
            CompletionError::TooLong { .. } => {
                OpenAiError::invalid(Some("messages"), "context_length_exceeded", e.to_string())
            }
            CompletionError::Model(e) => {
                tracing::error!("chat completion: {e}");
                OpenAiError::server(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the model failed on this request")
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a request may do, checked before any work.
fn check(chat: &ChatModel, request: &ChatRequest) -> Result<(CompletionOptions, ToolSet), OpenAiError> {
    if !request.model.is_empty() && request.model != chat.id {
        return Err(OpenAiError::not_found(
            Some("model"),
            "model_not_found",
            format!("model {:?} is not served here; the resident model is {:?}", request.model, chat.id),
        ));
    }
    if let Some(n) = request.extra.get("n").and_then(|n| n.as_u64()).filter(|&n| n != 1) {
        return Err(OpenAiError::invalid(Some("n"), "unsupported_value", format!("n = {n}: only one choice")));
    }
    let options = CompletionOptions {
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        temperature: request.temperature,
        top_p: request.top_p,
        seed: request.seed,
    };
    tete_engine::llm::chat::template_messages(&request.messages)?;
    let tools = ToolSet::parse(request.tools.as_deref(), request.tool_choice.as_ref())?;
    Ok((options, tools))
}

/// A call's id, as OpenAI shapes it.
fn call_id() -> String {
    format!("call_{:016x}", rand::random::<u64>())
}

async fn completions(
    State(api): State<Api>,
    body: Result<axum::Json<ChatRequest>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let axum::Json(request) =
        body.map_err(|e| OpenAiError::invalid(None, "invalid_json", format!("the request body: {}", e.body_text())))?;
    let chat = api.config.chat.clone().ok_or_else(|| {
        OpenAiError::server(StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "no resident LLM is loaded")
    })?;
    let (options, tools) = check(&chat, &request)?;
    let admitted =
        chat.admitted.clone().try_acquire_owned().map_err(|_| {
            OpenAiError::rate_limited("too many chat completions are running or waiting; retry shortly")
        })?;
    let id = format!("chatcmpl-{:016x}", rand::random::<u64>());
    let created = unix_now();
    let job = Job { stream: request.stream == Some(true), chat, request, options, tools, admitted, id, created };
    if job.stream { Ok(stream(job).into_response()) } else { whole(job).await }
}

/// An admitted request, checked, with the id and time its answer carries.
struct Job {
    chat: ChatModel,
    request: ChatRequest,
    options: CompletionOptions,
    tools: ToolSet,
    admitted: OwnedSemaphorePermit,
    stream: bool,
    id: String,
    created: u64,
}

async fn whole(job: Job) -> Result<Response, OpenAiError> {
    let Job { chat, request, options, tools, admitted, id, created, .. } = job;
    let running = chat.running.clone().acquire_owned().await.map_err(|_| closed())?;
    let model = chat.model.clone();
    // Dropped with the request (client gone): the flag stops generation.
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let completion = tokio::task::spawn_blocking(move || {
        let _permits = (admitted, running);
        complete(&model, &request.messages, &options, &tools, &cancel, |_| {})
    })
    .await
    .map_err(|_| closed())??;
    let Completion { text, call, finish_reason, prompt_tokens, completion_tokens } = completion;
    let message = match call {
        Some(Call { name, arguments }) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}],
        }),
        None => json!({"role": "assistant", "content": text}),
    };
    Ok(axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": chat.id,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response())
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn closed() -> OpenAiError {
    OpenAiError::server(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down")
}

/// What the generation thread sends the SSE stream.
enum Piece {
    Text(String),
    Done(Result<Completion, CompletionError>),
}

fn stream(job: Job) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let Job { chat, request, options, tools, admitted, id, created, .. } = job;
    let include_usage = request.extra.get("stream_options").and_then(|o| o.get("include_usage")) == Some(&json!(true));
    let (tx, rx) = mpsc::channel::<Piece>(64);
    let model = chat.model.clone();
    let running = chat.running.clone();
    tokio::spawn(async move {
        let Ok(running) = running.acquire_owned().await else { return };
        let cancel = Arc::new(AtomicBool::new(false));
        let task = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            let on_text = |text: &str| {
                // The receiver is gone when the client disconnected: stop.
                if tx.blocking_send(Piece::Text(text.to_string())).is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
            };
            let result = complete(&model, &request.messages, &options, &tools, &cancel, on_text);
            let _ = tx.blocking_send(Piece::Done(result));
        });
        if let Err(e) = task.await {
            tracing::error!("chat generation thread: {e}");
        }
    });

    let chunk = move |delta: Delta, finish: Option<&str>| ChatChunk {
        id: id.clone(),
        object: "chat.completion.chunk".into(),
        created,
        model: chat.id.clone(),
        choices: vec![ChunkChoice { index: 0, delta, finish_reason: finish.map(Into::into) }],
    };
    let first = chunk(Delta { role: Some("assistant".into()), content: Some(String::new()), ..Delta::default() }, None);
    let events = tokio_stream_of(rx).flat_map(move |piece| {
        let events: Vec<Event> = match piece {
            Piece::Text(text) => vec![json_event(&chunk(Delta { content: Some(text), ..Delta::default() }, None))],
            Piece::Done(Ok(done)) => {
                let mut events = Vec::new();
                if let Some(Call { name, arguments }) = &done.call {
                    // The whole call in one fragment: id, type and name, and the arguments.
                    let fragment = ToolCallDelta {
                        index: 0,
                        id: Some(call_id()),
                        kind: Some("function".into()),
                        function: Some(FunctionDelta { name: Some(name.clone()), arguments: Some(arguments.clone()) }),
                    };
                    events.push(json_event(&chunk(Delta { tool_calls: vec![fragment], ..Delta::default() }, None)));
                }
                events.push(json_event(&chunk(Delta::default(), Some(done.finish_reason))));
                if include_usage {
                    let mut usage = serde_json::to_value(chunk(Delta::default(), None)).unwrap_or_default();
                    usage["choices"] = json!([]);
                    usage["usage"] = json!({
                        "prompt_tokens": done.prompt_tokens,
                        "completion_tokens": done.completion_tokens,
                        "total_tokens": done.prompt_tokens + done.completion_tokens,
                    });
                    events.push(Event::default().data(usage.to_string()));
                }
                events.push(Event::default().data("[DONE]"));
                events
            }
            // Headers are sent: the failure goes in the stream, in OpenAI's error shape.
            Piece::Done(Err(e)) => {
                let body =
                    json!({"error": {"message": e.to_string(), "type": "server_error", "param": null, "code": null}});
                vec![Event::default().data(body.to_string())]
            }
        };
        futures_util::stream::iter(events.into_iter().map(Ok))
    });
    let all = futures_util::stream::once(async move { Ok(json_event(&first)) }).chain(events);
    Sse::new(all).keep_alive(KeepAlive::default())
}

fn json_event(chunk: &ChatChunk) -> Event {
    Event::default().data(serde_json::to_string(chunk).unwrap_or_default())
}

fn tokio_stream_of<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
