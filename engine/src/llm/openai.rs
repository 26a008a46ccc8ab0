//! OpenAI chat completions on the wire, defined once: the request and
//! streamed-chunk shapes tete serves at `/v1/chat/completions`, and the
//! client a persona with its own LLM (`layers.llm.base_url`) talks to any
//! OpenAI-compatible server with.
//!
//! The client streams (SSE, `data: {chunk}` lines ending in `data: [DONE]`),
//! retries only failures to connect, bounds the wait for the first event and
//! between events, and assembles streamed `tool_calls` fragments into whole
//! calls. Every failure is a typed [`ChatError`] that says what happened,
//! so a turn never hangs on a remote model.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::remote::{SendError, error_chain, error_message};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

/// A chat message as OpenAI's API carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool` (`developer` is read as `system`).
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "content_text")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.to_string(), content: Some(content.into()), ..Self::default() }
    }
}

/// `content` as a string, or OpenAI's list of parts of which the text parts
/// are joined.
fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        text: Option<String>,
    }
    Ok(match Option::<Content>::deserialize(d)? {
        None => None,
        Some(Content::Text(text)) => Some(text),
        Some(Content::Parts(parts)) => {
            Some(parts.into_iter().filter(|p| p.kind == "text").filter_map(|p| p.text).collect::<Vec<_>>().join(""))
        }
    })
}

/// A whole function call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

fn function_type() -> String {
    "function".to_string()
}

/// The body of `POST /v1/chat/completions`; fields tete does not use are
/// kept in `extra` and passed through to a remote server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// OpenAI function schemas, passed through as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One streamed `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A fragment of a streamed tool call: the first carries `id` and the name,
/// later ones more of `arguments`, all under one `index`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on the first fragment.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Where a persona's own LLM is and how to talk to it (`layers.llm`).
#[derive(Debug, Clone)]
pub struct ChatEndpoint {
    /// Base URL up to and including `/v1`, e.g. `https://api.example.com/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub headers: Vec<(String, String)>,
    /// Merged into every request body (`layers.llm.extra_body`).
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request to the first streamed event.
    pub first_event: Duration,
    /// Between two streamed events.
    pub idle: Duration,
    /// Extra attempts after a failure to connect (never once a response began).
    pub connect_retries: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            first_event: Duration::from_secs(15),
            idle: Duration::from_secs(10),
            connect_retries: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("bad LLM endpoint configuration: {0}")]
    Config(String),
    #[error("cannot reach the LLM at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the LLM at {url} answered {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("the LLM at {url} sent nothing for {waited:?} ({stage})")]
    Timeout { url: String, stage: &'static str, waited: Duration },
    #[error("the LLM at {url} sent a malformed stream: {reason}")]
    Malformed { url: String, reason: String },
    #[error("the LLM at {url} closed the stream before finishing")]
    Ended { url: String },
}

/// What the stream gives, in order: text deltas, then (when the model calls
/// tools) the whole calls, then the finish reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    Text(String),
    ToolCalls(Vec<ToolCall>),
    Finish(String),
}

/// A client for one OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct ChatClient {
    endpoint: ChatEndpoint,
    http: reqwest::Client,
    url: String,
}

impl ChatClient {
    pub fn new(endpoint: ChatEndpoint) -> Result<Self, ChatError> {
        let (http, url) =
            crate::remote::client(&endpoint.base_url, "chat/completions", &endpoint.headers, endpoint.timeouts.connect)
                .map_err(ChatError::Config)?;
        Ok(Self { url, endpoint, http })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `messages` (and `tools`) with `stream: true` and returns the
    /// event stream once the server has answered 200.
    pub async fn stream(
        &self,
        messages: Vec<Message>,
        tools: Option<Vec<serde_json::Value>>,
    ) -> Result<ChatStream, ChatError> {
        let request = ChatRequest {
            model: self.endpoint.model.clone(),
            messages,
            stream: Some(true),
            tools,
            extra: self.endpoint.extra_body.clone(),
            ..ChatRequest::default()
        };
        let timeouts = self.endpoint.timeouts;
        let build = || {
            let builder = self.http.post(&self.url).json(&request);
            match &self.endpoint.api_key {
                Some(key) => builder.bearer_auth(key),
                None => builder,
            }
        };
        let deadline = tokio::time::Instant::now() + timeouts.first_event;
        let url = || self.url.clone();
        let response = crate::remote::send(build, deadline, timeouts.connect_retries, timeouts.idle).await.map_err(
            |e| match e {
                SendError::Timeout => self.timeout("response headers", timeouts.first_event),
                SendError::Connect { reason, .. } | SendError::Broken(reason) => {
                    ChatError::Connect { url: url(), reason }
                }
                SendError::Status { status, message } => ChatError::Status { url: url(), status, message },
            },
        )?;
        Ok(ChatStream {
            events: Box::pin(response.bytes_stream().eventsource()),
            url: self.url.clone(),
            timeouts,
            started: false,
            calls: BTreeMap::new(),
            queue: VecDeque::new(),
            done: false,
        })
    }

    fn timeout(&self, stage: &'static str, waited: Duration) -> ChatError {
        ChatError::Timeout { url: self.url.clone(), stage, waited }
    }
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// The streamed answer; [`ChatStream::next`] gives one [`ChatEvent`] at a
/// time and `None` after the finish.
pub struct ChatStream {
    events: Events,
    url: String,
    timeouts: Timeouts,
    started: bool,
    /// Tool call fragments by index, assembled until the finish.
    calls: BTreeMap<u32, ToolCall>,
    /// Events read but not given yet.
    queue: VecDeque<ChatEvent>,
    /// The finish (or a failure) has been read: nothing more is read.
    done: bool,
}

impl ChatStream {
    pub async fn next(&mut self) -> Option<Result<ChatEvent, ChatError>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let (wait, stage) = if self.started {
                (self.timeouts.idle, "between events")
            } else {
                (self.timeouts.first_event, "first event")
            };
            let event = match tokio::time::timeout(wait, self.events.next()).await {
                Err(_) => {
                    return Some(Err(self.fail(ChatError::Timeout { url: self.url.clone(), stage, waited: wait })));
                }
                Ok(None) => return Some(Err(self.fail(ChatError::Ended { url: self.url.clone() }))),
                Ok(Some(Err(e))) => {
                    let reason = error_chain(&e);
                    return Some(Err(self.fail(ChatError::Malformed { url: self.url.clone(), reason })));
                }
                Ok(Some(Ok(event))) => event,
            };
            self.started = true;
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                // [DONE] without a finish reason: what was streamed is the answer.
                let calls = self.take_calls();
                let reason = if calls.is_some() { "tool_calls" } else { "stop" };
                self.queue.extend(calls.map(ChatEvent::ToolCalls));
                self.queue.push_back(ChatEvent::Finish(reason.into()));
                self.done = true;
                continue;
            }
            let malformed = |reason: String| ChatError::Malformed { url: self.url.clone(), reason };
            let value: serde_json::Value = match serde_json::from_str(data) {
                Ok(value) => value,
                Err(e) => {
                    let reason = format!("{e} in {:?}", data.chars().take(200).collect::<String>());
                    return Some(Err(self.fail(malformed(reason))));
                }
            };
            // An error object mid-stream is the server's failure, not a chunk.
            if value.get("error").is_some() {
                return Some(Err(self.fail(malformed(format!("error event: {}", error_message(data))))));
            }
            let chunk: ChatChunk = match serde_json::from_value(value) {
                Ok(chunk) => chunk,
                Err(e) => return Some(Err(self.fail(malformed(format!("not a chat.completion.chunk: {e}"))))),
            };
            let Some(choice) = chunk.choices.into_iter().next() else { continue };
            for fragment in choice.delta.tool_calls {
                if let Err(reason) = self.add_fragment(fragment) {
                    return Some(Err(self.fail(ChatError::Malformed { url: self.url.clone(), reason })));
                }
            }
            self.queue.extend(choice.delta.content.filter(|t| !t.is_empty()).map(ChatEvent::Text));
            if let Some(reason) = choice.finish_reason {
                // The answer is complete; a trailing [DONE] need not be awaited.
                let calls = self.take_calls();
                self.queue.extend(calls.map(ChatEvent::ToolCalls));
                self.queue.push_back(ChatEvent::Finish(reason));
                self.done = true;
            }
        }
    }

    fn fail(&mut self, error: ChatError) -> ChatError {
        self.done = true;
        error
    }

    fn add_fragment(&mut self, fragment: ToolCallDelta) -> Result<(), String> {
        let function = fragment.function.unwrap_or_default();
        let call = self.calls.entry(fragment.index).or_insert_with(|| ToolCall {
            id: String::new(),
            kind: function_type(),
            function: FunctionCall { name: String::new(), arguments: String::new() },
        });
        if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
            if !call.id.is_empty() && call.id != id {
                return Err(format!("tool call {} changed its id from {} to {id}", fragment.index, call.id));
            }
            call.id = id;
        }
        if let Some(name) = function.name {
            call.function.name.push_str(&name);
        }
        if let Some(arguments) = function.arguments {
            call.function.arguments.push_str(&arguments);
        }
        Ok(())
    }

    /// The assembled calls, if any; a call without a name is malformed and
    /// left out rather than guessed.
    fn take_calls(&mut self) -> Option<Vec<ToolCall>> {
        let calls: Vec<ToolCall> =
            std::mem::take(&mut self.calls).into_values().filter(|c| !c.function.name.is_empty()).collect();
        (!calls.is_empty()).then_some(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_parts_and_unknown_fields_are_read() {
        let request: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{}},{"type":"text","text":"b"}]}],
                "stream":true,"logprobs":false}"#,
        )
        .unwrap();
        assert_eq!(request.messages[0].content.as_deref(), Some("ab"));
        assert_eq!(request.extra.get("logprobs"), Some(&serde_json::Value::Bool(false)));
        let back = serde_json::to_value(&request).unwrap();
        assert_eq!(back["logprobs"], false);
        assert!(back.get("tools").is_none());
    }

    #[test]
    fn endpoints_are_checked() {
        let endpoint = |base: &str| ChatEndpoint {
            base_url: base.into(),
            api_key: None,
            model: "m".into(),
            headers: vec![],
            extra_body: Default::default(),
            timeouts: Timeouts::default(),
        };
        assert!(matches!(ChatClient::new(endpoint("ftp://x/v1")), Err(ChatError::Config(_))));
        assert!(matches!(ChatClient::new(endpoint("not a url")), Err(ChatError::Config(_))));
        let client = ChatClient::new(endpoint("http://127.0.0.1:9/v1/")).unwrap();
        assert_eq!(client.url(), "http://127.0.0.1:9/v1/chat/completions");
        let bad_header = ChatEndpoint { headers: vec![("bad header".into(), "v".into())], ..endpoint("http://h/v1") };
        assert!(matches!(ChatClient::new(bad_header), Err(ChatError::Config(_))));
    }
}
