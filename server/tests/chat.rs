//! `POST /v1/chat/completions` on the resident SmolLM2 (`tete models fetch`
//! leaves it in the default home), and the client a persona with its own
//! LLM uses, against tete's own endpoint served on 127.0.0.1 and against
//! small local servers that fail in each way a remote LLM can: 500, a hang,
//! malformed SSE, a stream cut short, a closed port. Tool calls streamed in
//! fragments are assembled, and a call made by the resident model goes
//! round trip through that client.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use common::{KEY, TestApp, app_with};
use serde_json::{Value, json};
use tete_engine::llm::LlmModel;
use tete_engine::llm::openai::{ChatClient, ChatEndpoint, ChatError, ChatEvent, Message, Timeouts};
use tete_engine::models::{Manifest, Store, default_home};
use tete_server::api::chat::ChatModel;

const MODEL_ID: &str = "smollm2-135m-instruct";

fn model() -> Arc<LlmModel> {
    static MODEL: OnceLock<Arc<LlmModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let manifest = Manifest::embedded().unwrap();
            let dir = Store::new(default_home()).model_dir(&manifest.model(MODEL_ID).unwrap().id);
            let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
            Arc::new(LlmModel::load(&path, &candle_core::Device::Cpu).expect("run `tete models fetch` first"))
        })
        .clone()
}

struct Fixture {
    app: TestApp,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = tete_server::db::Db::sqlite_url(dir.path());
    let chat = ChatModel::new(model(), MODEL_ID);
    let app = app_with(&url, move |c| c.chat = Some(chat)).await;
    Fixture { app, _dir: dir }
}

/// Serves `router` on a free 127.0.0.1 port; returns its `/v1` base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/v1")
}

fn endpoint(base_url: &str) -> ChatEndpoint {
    ChatEndpoint {
        base_url: base_url.into(),
        api_key: Some(KEY.into()),
        model: MODEL_ID.into(),
        headers: vec![("x-trace".into(), "chat-test".into())],
        extra_body: Default::default(),
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            first_event: Duration::from_millis(800),
            idle: Duration::from_millis(800),
            connect_retries: 2,
        },
    }
}

fn question() -> Vec<Message> {
    vec![Message::new("system", "You answer in one short sentence."), Message::new("user", "What colour is the sky?")]
}

/// Everything a stream gives until it ends or fails.
async fn drain(client: &ChatClient) -> (Vec<ChatEvent>, Option<ChatError>) {
    let mut stream = match client.stream(question(), None).await {
        Ok(stream) => stream,
        Err(e) => return (vec![], Some(e)),
    };
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => events.push(event),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

async fn post_json(app: &TestApp, body: Value) -> (StatusCode, String) {
    let request = Request::post("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.router.clone(), request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn whole_completion_in_openai_shape() {
    let f = fixture().await;
    let body = json!({"model": MODEL_ID, "messages": question(), "max_tokens": 24});
    let (status, text) = post_json(&f.app, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL_ID);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    println!("answer: {answer:?}");
    assert!(!answer.trim().is_empty());
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(matches!(v["choices"][0]["finish_reason"].as_str(), Some("stop" | "length")));
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    // Greedy by default: the same request gives the same answer.
    let (_, again) = post_json(&f.app, json!({"model": MODEL_ID, "messages": question(), "max_tokens": 24})).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["choices"][0]["message"]["content"], answer);
}

#[tokio::test]
async fn streamed_completion_is_sse_ending_in_done() {
    let f = fixture().await;
    let body = json!({"model": MODEL_ID, "messages": question(), "max_tokens": 24, "stream": true,
                      "stream_options": {"include_usage": true}});
    let (status, text) = post_json(&f.app, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert!(!content.trim().is_empty());
    let finish = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect::<Vec<_>>();
    assert_eq!(finish.len(), 1, "one finish reason");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    // The stream says what the whole answer says.
    let (_, whole) = post_json(&f.app, json!({"model": MODEL_ID, "messages": question(), "max_tokens": 24})).await;
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], content);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let f = fixture().await;
    let cases = [
        (json!({"model": "gpt-4o", "messages": question()}), StatusCode::NOT_FOUND, "model_not_found"),
        (json!({"model": MODEL_ID, "messages": []}), StatusCode::BAD_REQUEST, "invalid_value"),
        (
            json!({"model": MODEL_ID, "messages": [{"role": "wizard", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "invalid_value",
        ),
        (
            json!({"model": MODEL_ID, "messages": question(), "tools": [{"type": "function", "function": {"name": "a b"}}]}),
            StatusCode::BAD_REQUEST,
            "invalid_value",
        ),
        (
            json!({"model": MODEL_ID, "messages": question(), "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            StatusCode::BAD_REQUEST,
            "invalid_value",
        ),
        (json!({"model": MODEL_ID, "messages": question(), "max_tokens": 0}), StatusCode::BAD_REQUEST, "invalid_value"),
        (
            json!({"model": MODEL_ID, "messages": question(), "temperature": 9}),
            StatusCode::BAD_REQUEST,
            "invalid_value",
        ),
        (json!({"model": MODEL_ID, "messages": question(), "n": 3}), StatusCode::BAD_REQUEST, "unsupported_value"),
        (json!({"messages": "not a list"}), StatusCode::BAD_REQUEST, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (got, text) = post_json(&f.app, body.clone()).await;
        assert_eq!(got, status, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {text}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let request = Request::post("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"messages": question()}).to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(f.app.router.clone(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn own_llm_client_streams_from_tetes_endpoint() {
    let f = fixture().await;
    let base = serve(f.app.router.clone()).await;
    let client = ChatClient::new(ChatEndpoint {
        timeouts: Timeouts {
            first_event: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            ..Timeouts::default()
        },
        extra_body: [("max_tokens".to_string(), json!(24))].into_iter().collect(),
        ..endpoint(&base)
    })
    .unwrap();
    let (events, error) = drain(&client).await;
    assert!(error.is_none(), "{error:?}");
    let text: String =
        events.iter().filter_map(|e| if let ChatEvent::Text(t) = e { Some(t.as_str()) } else { None }).collect();
    assert!(!text.trim().is_empty());
    assert!(matches!(events.last(), Some(ChatEvent::Finish(reason)) if reason == "stop" || reason == "length"));
    // A wrong key is the server's 401, with its message.
    let wrong = ChatClient::new(ChatEndpoint { api_key: Some("wrong".into()), ..endpoint(&base) }).unwrap();
    let (_, error) = drain(&wrong).await;
    assert!(matches!(error, Some(ChatError::Status { status: 401, .. })), "{error:?}");
}

#[tokio::test]
async fn remote_failures_are_clear_errors() {
    // 500 with OpenAI's error body.
    let failing = serve(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": {"message": "model overloaded"}})))
        }),
    ))
    .await;
    let (_, error) = drain(&ChatClient::new(endpoint(&failing)).unwrap()).await;
    match error {
        Some(ChatError::Status { status: 500, message, .. }) => assert_eq!(message, "model overloaded"),
        other => panic!("{other:?}"),
    }

    // Headers, then nothing: the first-event timeout fires.
    let hanging = serve(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let stream = futures_util::stream::pending::<Result<String, std::io::Error>>();
            ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(stream))
        }),
    ))
    .await;
    let (_, error) = drain(&ChatClient::new(endpoint(&hanging)).unwrap()).await;
    assert!(matches!(error, Some(ChatError::Timeout { stage: "first event", .. })), "{error:?}");

    // No response at all: the same bound applies to the headers.
    let silent = serve(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    ))
    .await;
    let (_, error) = drain(&ChatClient::new(endpoint(&silent)).unwrap()).await;
    assert!(matches!(error, Some(ChatError::Timeout { stage: "response headers", .. })), "{error:?}");

    // Malformed SSE data.
    let garbage = sse_server("data: {\"choices\": [{\"delta\": {\"content\": \"Hi\"}}]}\n\ndata: {not json\n\n").await;
    let (events, error) = drain(&ChatClient::new(endpoint(&garbage)).unwrap()).await;
    assert_eq!(events, vec![ChatEvent::Text("Hi".into())]);
    assert!(matches!(error, Some(ChatError::Malformed { .. })), "{error:?}");

    // An error object in the stream.
    let mid = sse_server("data: {\"error\": {\"message\": \"quota exceeded\"}}\n\n").await;
    let (_, error) = drain(&ChatClient::new(endpoint(&mid)).unwrap()).await;
    assert!(
        matches!(&error, Some(ChatError::Malformed { reason, .. }) if reason.contains("quota exceeded")),
        "{error:?}"
    );

    // Cut short: text, then the connection closes without a finish.
    let cut = sse_server("data: {\"choices\": [{\"delta\": {\"content\": \"Hel\"}}]}\n\n").await;
    let (events, error) = drain(&ChatClient::new(endpoint(&cut)).unwrap()).await;
    assert_eq!(events, vec![ChatEvent::Text("Hel".into())]);
    assert!(matches!(error, Some(ChatError::Ended { .. })), "{error:?}");

    // A closed port: a connect error after the retries.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/v1")
    };
    let (_, error) = drain(&ChatClient::new(endpoint(&closed)).unwrap()).await;
    assert!(matches!(error, Some(ChatError::Connect { .. })), "{error:?}");
}

/// A server whose completions endpoint streams `body` and closes.
async fn sse_server(body: &'static str) -> String {
    serve(Router::new().route(
        "/v1/chat/completions",
        post(move || async move { ([(header::CONTENT_TYPE, "text/event-stream")], body) }),
    ))
    .await
}

#[tokio::test]
async fn streamed_tool_calls_are_assembled() {
    // Two calls, their names and arguments split across chunks as OpenAI streams them.
    let body = concat!(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Oslo\\\"}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let base = sse_server(body).await;
    let (events, error) = drain(&ChatClient::new(endpoint(&base)).unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    let [ChatEvent::ToolCalls(calls), ChatEvent::Finish(reason)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(reason, "tool_calls");
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].id.as_str(), calls[0].function.name.as_str()), ("call_a", "get_weather"));
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(args, json!({"city": "Oslo"}));
    assert_eq!((calls[1].id.as_str(), calls[1].function.name.as_str()), ("call_b", "get_time"));
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    }})
}

/// A function call round trip through tete's own endpoint with the client
/// a persona with its own LLM uses: the resident model calls the tool
/// (streamed `tool_calls`, arguments valid for its schema), the client
/// sends the call and its result back, and the model answers in text. The
/// non-streamed answer carries the call in OpenAI's shape.
#[tokio::test]
async fn tool_calls_round_trip_through_the_resident_model() {
    let f = fixture().await;
    let base = serve(f.app.router.clone()).await;
    let long = Timeouts { first_event: Duration::from_secs(60), idle: Duration::from_secs(60), ..Timeouts::default() };
    let client = |extra: Value| {
        let extra = extra.as_object().unwrap().clone().into_iter().collect();
        ChatClient::new(ChatEndpoint { timeouts: long, extra_body: extra, ..endpoint(&base) }).unwrap()
    };
    let mut messages = vec![
        Message::new("system", "You are a helpful assistant."),
        Message::new("user", "What is the weather in Oslo right now?"),
    ];
    let calling = client(json!({"tool_choice": "required", "max_tokens": 64}));
    let mut stream = calling.stream(messages.clone(), Some(vec![weather_tool()])).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.unwrap());
    }
    let [ChatEvent::ToolCalls(calls), ChatEvent::Finish(reason)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(reason, "tool_calls");
    assert_eq!(calls[0].function.name, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    println!("the resident model called get_weather({args})");
    assert!(args["city"].is_string(), "{args}");
    assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap_or("")), "{args}");
    assert_eq!(args.as_object().unwrap().len(), 2, "no other arguments: {args}");

    let mut answer = Message::new("assistant", "");
    answer.content = None;
    answer.tool_calls = calls.clone();
    messages.push(answer);
    let mut result = Message::new("tool", r#"{"temperature": 7, "sky": "light rain"}"#);
    result.tool_call_id = Some(calls[0].id.clone());
    messages.push(result);
    // The answer is asked for in text (`tool_choice: none`): the 135M model
    // left to choose tends to call again.
    let answering = client(json!({"max_tokens": 32, "tool_choice": "none"}));
    let mut stream = answering.stream(messages, Some(vec![weather_tool()])).await.unwrap();
    let (mut text, mut finish) = (String::new(), None);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            ChatEvent::Text(t) => text.push_str(&t),
            ChatEvent::Finish(reason) => finish = Some(reason),
            ChatEvent::ToolCalls(calls) => println!("called again: {calls:?}"),
        }
    }
    println!("then answered: {text:?} ({finish:?})");
    assert!(matches!(finish.as_deref(), Some("stop" | "length")), "{finish:?}");
    assert!(!text.trim().is_empty(), "no answer after the tool's result");

    let named = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Weather in Rome?"}],
        "tools": [weather_tool()],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 64,
    });
    let (status, body) = post_json(&f.app, named).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("get_weather")));
    assert!(call["id"].as_str().is_some_and(|id| id.starts_with("call_")), "{call}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
}

#[tokio::test]
async fn resident_models_are_listed() {
    let f = fixture().await;
    let (status, list) = f.app.call("GET", "/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [MODEL_ID], "the fixture has the LLM only");
    assert_eq!(list["data"][0]["stage"], "llm");
    assert_eq!(list["data"][0]["object"], "model");
    let (status, one) = f.app.call("GET", &format!("/v1/models/{MODEL_ID}"), None).await;
    assert_eq!((status, one["id"].as_str()), (StatusCode::OK, Some(MODEL_ID)));
    let (status, missing) = f.app.call("GET", "/v1/models/gpt-4o", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "model_not_found");
    let anonymous = Request::get("/v1/models").body(Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(f.app.router.clone(), anonymous).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// A call's events for the client and its transcript lines.
type Heard = (Vec<(&'static str, Value)>, Vec<(&'static str, String)>);

/// Drives a live session in real time (in silence) until the replica has
/// said something or `seconds` have passed; gives its events and
/// transcript lines.
fn drive(mut session: tete_engine::session::LiveSession, seconds: f64) -> Heard {
    let (mut events, mut lines) = (Vec::new(), Vec::new());
    let start = std::time::Instant::now();
    for i in 0..(seconds * 50.0) as u64 {
        let due = start + Duration::from_millis(20 * i);
        while std::time::Instant::now() < due {
            session.wait(std::time::Instant::now(), due.saturating_duration_since(std::time::Instant::now()));
        }
        let now = std::time::Instant::now();
        session.heard(now, &[0.0; 320]);
        session.next_audio(now);
        events.extend(session.take_events());
        lines.extend(session.take_utterances());
        if lines.iter().any(|(role, _)| *role == "replica") {
            break;
        }
    }
    (events, lines)
}

/// A call whose persona has its own LLM composes there: through tete's own
/// endpoint the replica speaks the answer; with a server that answers 500
/// it says its fallback line and the client gets a `conversation.error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_composes_on_the_personas_own_llm() {
    use tete_engine::dialogue::Interaction;
    use tete_server::edge::conversation::{call_setup, live_session};
    let f = fixture().await;
    let base = serve(f.app.router.clone()).await;
    let failing = serve(
        Router::new()
            .route("/v1/chat/completions", post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "the model is down") })),
    )
    .await;
    let manifest = Manifest::embedded().unwrap();
    let resident = tete_engine::scheduler::Resident::load(
        &manifest,
        &Store::new(default_home()),
        &Default::default(),
        &candle_core::Device::Cpu,
    )
    .expect("run `tete models fetch` first");
    let executor = Arc::new(tete_engine::scheduler::Executor::start(resident, 4).unwrap());
    for (url, answers) in [(base, true), (failing, false)] {
        let persona = json!({
            "system_prompt": "You answer in one short sentence.",
            "layers": {"llm": {"base_url": url, "api_key": KEY, "model": MODEL_ID}},
        });
        let call = call_setup(Some(&persona), &json!({}), 1);
        assert!(call.remote.is_some());
        let mut session = live_session(&executor, call, std::time::Instant::now()).unwrap();
        session.interaction(std::time::Instant::now(), Interaction::Respond("What colour is the sky?".into()));
        let (events, lines) = tokio::task::spawn_blocking(move || drive(session, 90.0)).await.unwrap();
        let replica: Vec<&String> = lines.iter().filter(|(r, _)| *r == "replica").map(|(_, t)| t).collect();
        println!("{url}: {replica:?}");
        assert_eq!(replica.len(), 1, "{events:?}");
        let errors: Vec<&Value> = events.iter().filter(|(t, _)| *t == "conversation.error").map(|(_, p)| p).collect();
        if answers {
            assert!(errors.is_empty(), "{errors:?}");
            assert_ne!(replica[0], tete_engine::scheduler::FALLBACK_LINE);
            assert!(replica[0].split_whitespace().count() >= 2, "{replica:?}");
        } else {
            assert_eq!(replica[0], tete_engine::scheduler::FALLBACK_LINE);
            assert!(errors.iter().any(|e| e["message"].as_str().unwrap().contains("500")), "{errors:?}");
        }
    }
}
