//! `POST /v1/audio/speech` and `GET /v2/voices` on the real resident voice
//! (`tete models fetch piper-en_US-joe-medium`), in process and over
//! loopback TCP; and the external-voice client of `tete_engine::tts::external`
//! against tete's own endpoint and against local servers that fail in each
//! way it must report.
//!
//! The reference for every format is the same text said by a `Speaker`
//! directly: synthesis is seeded, so the endpoint must give those samples
//! (resampled and quantised for `pcm`/`wav`, through Opus for `opus`).

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use common::{KEY, TestApp, app_with, eventually};
use serde_json::{Value, json};
use tete_engine::models::{Manifest, Store, default_home};
use tete_engine::tts::external::{ExternalSpeaker, ExternalTtsError, ExternalVoice, ExternalVoiceConfig, Timeouts};
use tete_engine::tts::{OUTPUT_RATE, Speaker, Voice, VoiceSettings};
use tete_server::api::speech::{Synthesiser, VoiceInfo};
use tower::ServiceExt;

const VOICE_ID: &str = "piper-en_US-joe-medium";
const SENTENCE: &str = "The quick brown fox jumps over the lazy dog.";
const LONG: Duration = Duration::from_secs(120);

fn voice() -> (Arc<Voice>, VoiceInfo) {
    static VOICE: OnceLock<(Arc<Voice>, VoiceInfo)> = OnceLock::new();
    VOICE
        .get_or_init(|| {
            let manifest = Manifest::embedded().unwrap();
            let dir = Store::new(default_home()).model_dir(&manifest.model(VOICE_ID).unwrap().id);
            let voice = Voice::load(&dir, &candle_core::Device::Cpu).unwrap_or_else(missing);
            (Arc::new(voice), VoiceInfo::read(VOICE_ID, &dir).unwrap_or_else(missing))
        })
        .clone()
}

fn missing<T>(e: impl std::fmt::Display) -> T {
    panic!("{e}: run `tete models fetch {VOICE_ID}`")
}

/// `text` said by a speaker directly, at 48 kHz.
fn reference(text: &str) -> Vec<f32> {
    let mut speaker = Speaker::new(voice().0).unwrap();
    let mut audio = Vec::new();
    for chunk in speaker.say(text, VoiceSettings::default()).unwrap() {
        audio.extend(chunk.unwrap().audio);
    }
    audio
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&s| s as f64 * s as f64).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

struct Fixture {
    app: TestApp,
    synth: Synthesiser,
    _dir: tempfile::TempDir,
}

async fn fixture_with(running: usize, waiting: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = tete_server::db::Db::sqlite_url(dir.path());
    let (voice, info) = voice();
    let synth = Synthesiser::with_limits(voice, info, running, waiting);
    let s = synth.clone();
    let app = app_with(&url, move |c| c.voice = Some(s)).await;
    Fixture { app, synth, _dir: dir }
}

async fn fixture() -> Fixture {
    fixture_with(2, 6).await
}

/// Posts `body` (JSON, or raw text when a string) with the test key; returns status, content type and body.
async fn post(app: &TestApp, body: Value, auth: Option<(&str, String)>) -> (StatusCode, String, Vec<u8>) {
    let raw = match &body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut req = Request::post("/v1/audio/speech").header(header::CONTENT_TYPE, "application/json");
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let response = app.router.clone().oneshot(req.body(Body::from(raw)).unwrap()).await.unwrap();
    let status = response.status();
    let ct = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = to_bytes(response.into_body(), 1 << 26).await.unwrap();
    (status, ct, bytes.to_vec())
}

fn key() -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {KEY}")))
}

fn assert_error(got: &(StatusCode, String, Vec<u8>), want: StatusCode, kind: &str, param: Option<&str>, code: &str) {
    let body: Value =
        serde_json::from_slice(&got.2).unwrap_or_else(|_| panic!("{:?}", String::from_utf8_lossy(&got.2)));
    assert_eq!(got.0, want, "{body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["param"], param.map_or(Value::Null, |p| Value::String(p.into())), "{body}");
    assert_eq!(e["code"], code, "{body}");
}

fn pcm16(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|p| f32::from(i16::from_le_bytes([p[0], p[1]])) / 32767.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_gives_the_voices_speech() {
    let f = fixture().await;
    let want = reference(SENTENCE);
    let seconds = want.len() as f64 / f64::from(OUTPUT_RATE);
    assert!(seconds > 1.5 && rms(&want) > 0.02, "the reference is {seconds} s at rms {}", rms(&want));
    let want_24k = tete_engine::audio::resample(&want, OUTPUT_RATE, 24_000).unwrap();

    // pcm: OpenAI's raw 24 kHz 16-bit, the reference resampled and quantised.
    let pcm =
        post(&f.app, json!({"model": "tts-1", "input": SENTENCE, "voice": "alloy", "response_format": "pcm"}), key())
            .await;
    assert_eq!(pcm.0, StatusCode::OK, "{}", String::from_utf8_lossy(&pcm.2));
    assert_eq!(pcm.1, "audio/pcm");
    assert_eq!(pcm.2.len() % 2, 0);
    let samples = pcm16(&pcm.2);
    assert_eq!(samples.len(), want_24k.len(), "pcm samples at 24 kHz");
    let worst = samples.iter().zip(&want_24k).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 2e-4, "pcm differs from the reference by up to {worst}");

    // wav: the same samples behind a streaming header, readable by a decoder.
    let wav =
        post(&f.app, json!({"model": VOICE_ID, "input": SENTENCE, "voice": VOICE_ID, "response_format": "wav"}), key())
            .await;
    assert_eq!(wav.0, StatusCode::OK);
    assert_eq!(wav.1, "audio/wav");
    assert_eq!(&wav.2[..4], b"RIFF");
    assert_eq!(&wav.2[4..8], &[0xff; 4], "RIFF size of a stream");
    assert_eq!(&wav.2[40..44], &[0xff; 4], "data size of a stream");
    assert_eq!(&wav.2[44..], &pcm.2[..], "wav data = pcm");
    let decoded = tete_engine::audio::decode(&wav.2, LONG).unwrap();
    assert_eq!((decoded.sample_rate, decoded.samples.len()), (24_000, want_24k.len()));

    // opus: Ogg-Opus at 48 kHz, as long as the reference and close to it.
    let opus = post(&f.app, json!({"input": SENTENCE, "response_format": "opus"}), key()).await;
    assert_eq!(opus.0, StatusCode::OK);
    assert_eq!(opus.1, "audio/ogg; codecs=opus");
    let decoded = tete_engine::audio::decode(&opus.2, LONG).unwrap();
    assert!(decoded.format.to_string().to_lowercase().contains("opus"), "{}", decoded.format);
    assert_eq!((decoded.sample_rate, decoded.samples.len()), (OUTPUT_RATE, want.len()));
    // Lossy, but the level of each 100 ms follows the reference's.
    for (i, (got, want)) in decoded.samples.chunks(4800).zip(want.chunks(4800)).enumerate() {
        let (g, w) = (rms(got), rms(want));
        assert!((g - w).abs() < 0.25 * w + 0.01, "100 ms block {i}: rms {g} vs {w}");
    }
    let bytes_per_second = opus.2.len() as f64 / seconds;
    println!("opus: {} bytes for {seconds:.2} s ({:.1} kbit/s)", opus.2.len(), bytes_per_second * 8.0 / 1000.0);
    assert!(bytes_per_second < 8_000.0, "{bytes_per_second} bytes/s");
}

#[tokio::test]
async fn sse_events_carry_the_same_audio() {
    let f = fixture().await;
    let text = "Hello there.";
    let plain = post(&f.app, json!({"input": text, "response_format": "pcm"}), key()).await;
    let sse = post(&f.app, json!({"input": text, "response_format": "pcm", "stream_format": "sse"}), key()).await;
    assert_eq!((sse.0, sse.1.as_str()), (StatusCode::OK, "text/event-stream"));
    let text = String::from_utf8(sse.2).unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e:?}"))).unwrap())
        .collect();
    let (done, deltas) = events.split_last().unwrap();
    assert_eq!(done["type"], "speech.audio.done", "{done}");
    assert_eq!(done["usage"]["total_tokens"], 0, "{done}");
    assert!(!deltas.is_empty());
    let mut audio = Vec::new();
    for d in deltas {
        assert_eq!(d["type"], "speech.audio.delta", "{d}");
        audio.extend(base64::engine::general_purpose::STANDARD.decode(d["audio"].as_str().unwrap()).unwrap());
    }
    assert_eq!(audio, plain.2);
}

/// The router on a loopback port; returns its base URL.
async fn serve_router(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

fn speech_request(base: &str, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(format!("{base}/v1/audio/speech")).bearer_auth(KEY).json(&body)
}

/// Several sentences: the first bytes arrive while the rest is still being
/// said, and a client that leaves after them stops the synthesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_streams_as_it_is_said_and_stops_when_the_client_leaves() {
    let f = fixture_with(1, 0).await;
    let base = serve_router(f.app.router.clone()).await;

    let six = "Hello, how are you today?";
    let sent = Instant::now();
    let mut response = speech_request(&base, json!({"input": six, "response_format": "pcm"})).send().await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    let ttfb = sent.elapsed();
    let mut total = first.len();
    while let Some(piece) = response.chunk().await.unwrap() {
        total += piece.len();
    }
    println!(
        "6 words: first {} bytes after {:.0} ms, all {total} bytes ({:.2} s of audio) after {:.0} ms",
        first.len(),
        ttfb.as_secs_f64() * 1e3,
        total as f64 / 48_000.0,
        sent.elapsed().as_secs_f64() * 1e3
    );
    assert!(first.len() < total, "the whole answer came in one piece");

    let paragraph = [SENTENCE; 12].join(" ");
    let said_before = f.synth.seconds_said();
    let sent = Instant::now();
    let mut response =
        speech_request(&base, json!({"input": paragraph, "response_format": "pcm"})).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.headers().get("transfer-encoding").unwrap(), "chunked");
    let first = response.chunk().await.unwrap().unwrap();
    println!("12 sentences: first {} bytes after {:.0} ms", first.len(), sent.elapsed().as_secs_f64() * 1e3);
    // 2 bytes per 24 kHz sample: as many bytes as 48 kHz samples.
    let whole = reference(SENTENCE).len() * 12;
    assert!(first.len() * 4 < whole, "the first piece holds {} of {whole} bytes", first.len());

    // The one slot is taken and none may wait: another request is refused.
    let refused = speech_request(&base, json!({"input": "Hi."})).send().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");

    // Leaving stops the synthesis long before the twelfth sentence and frees the slot.
    assert_eq!(f.synth.cancelled(), 0);
    drop(response);
    let cancelled = eventually(LONG, || async { (f.synth.cancelled() == 1).then_some(()) }).await;
    assert!(cancelled.is_some(), "the synthesis was not cancelled");
    let said = f.synth.seconds_said() - said_before;
    let all = whole as f64 / 48_000.0;
    println!("cancelled after {said:.1} s of the paragraph's {all:.1} s");
    assert!(said < 0.5 * all, "{said:.1} s of the paragraph's {all:.1} s were said after the client left");
    let again = speech_request(&base, json!({"input": "Hi."})).send().await.unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::OK);
    assert!(!again.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let f = fixture().await;
    let a = &f.app;
    let ok = |extra: Value| {
        let mut body = json!({"input": "Hi."});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let bad_request = StatusCode::BAD_REQUEST;
    let invalid = "invalid_request_error";
    assert_error(&post(a, Value::String("{not json".into()), key()).await, bad_request, invalid, None, "invalid_json");
    assert_error(&post(a, json!({"voice": "alloy"}), key()).await, bad_request, invalid, None, "invalid_json");
    assert_error(&post(a, ok(json!({"temperature": 1})), key()).await, bad_request, invalid, None, "invalid_json");
    assert_error(
        &post(a, ok(json!({"voice": "nobody"})), key()).await,
        bad_request,
        invalid,
        Some("voice"),
        "invalid_value",
    );
    assert_error(
        &post(a, ok(json!({"model": "eleven_turbo"})), key()).await,
        StatusCode::NOT_FOUND,
        invalid,
        Some("model"),
        "model_not_found",
    );
    for format in ["mp3", "aac", "flac"] {
        let got = post(a, ok(json!({"response_format": format})), key()).await;
        assert_error(&got, bad_request, invalid, Some("response_format"), "unsupported_value");
        assert!(
            String::from_utf8_lossy(&got.2).contains("use wav, pcm or opus"),
            "{}",
            String::from_utf8_lossy(&got.2)
        );
    }
    assert_error(
        &post(a, ok(json!({"response_format": "ogg"})), key()).await,
        bad_request,
        invalid,
        Some("response_format"),
        "invalid_value",
    );
    assert_error(
        &post(a, ok(json!({"speed": 0.3})), key()).await,
        bad_request,
        invalid,
        Some("speed"),
        "unsupported_value",
    );
    assert_error(
        &post(a, ok(json!({"speed": 2.5})), key()).await,
        bad_request,
        invalid,
        Some("speed"),
        "unsupported_value",
    );
    assert_error(
        &post(a, ok(json!({"speed": 4.5})), key()).await,
        bad_request,
        invalid,
        Some("speed"),
        "invalid_value",
    );
    assert_error(
        &post(a, ok(json!({"stream_format": "chunks"})), key()).await,
        bad_request,
        invalid,
        Some("stream_format"),
        "invalid_value",
    );
    assert_error(
        &post(a, ok(json!({"instructions": "Speak like a pirate"})), key()).await,
        bad_request,
        invalid,
        Some("instructions"),
        "unsupported_value",
    );
    assert_error(&post(a, json!({"input": "  \n"}), key()).await, bad_request, invalid, Some("input"), "invalid_value");
    let too_long = "a".repeat(4097);
    assert_error(
        &post(a, json!({"input": too_long}), key()).await,
        bad_request,
        invalid,
        Some("input"),
        "string_above_max_length",
    );
    // Characters, not bytes: 4096 three-byte characters pass the length check (then fail on speed).
    let wide = "€".repeat(4096);
    assert_error(
        &post(a, json!({"input": wide, "speed": 9}), key()).await,
        bad_request,
        invalid,
        Some("speed"),
        "invalid_value",
    );

    let unauthorised = StatusCode::UNAUTHORIZED;
    assert_error(&post(a, ok(json!({})), None).await, unauthorised, invalid, None, "invalid_api_key");
    assert_error(
        &post(a, ok(json!({})), Some(("x-api-key", "wrong".into()))).await,
        unauthorised,
        invalid,
        None,
        "invalid_api_key",
    );
    // Nothing was synthesised for any of them, and the slots are all free.
    assert_eq!(f.synth.cancelled(), 0);
    let (status, _, body) = post(a, ok(json!({"speed": 2.0, "voice": "NOVA"})), Some(("x-api-key", KEY.into()))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn without_a_voice_speech_is_503_and_the_list_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(&tete_server::db::Db::sqlite_url(dir.path()), |_| {}).await;
    let got = post(&app, json!({"input": "Hi."}), key()).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "server_error", None, "model_not_loaded");
    let (status, body) = app.call("GET", "/v2/voices", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": [], "total_count": 0}));
}

#[tokio::test]
async fn voices_are_listed_with_paging() {
    let f = fixture().await;
    let (status, body) = f.app.call("GET", "/v2/voices", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"data": [{"voice_id": VOICE_ID, "name": "joe", "language": "en-US", "sample_rate": 22050,
            "model": VOICE_ID, "default": true}], "total_count": 1})
    );
    let (_, page2) = f.app.call("GET", "/v2/voices?limit=1&page=2", None).await;
    assert_eq!(page2, json!({"data": [], "total_count": 1}));
    let (status, _) = f.app.call("GET", "/v2/voices?limit=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = f.app.send(Request::get("/v2/voices").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, doc) = f.app.send(Request::get("/v2/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    for code in ["200", "400", "401", "404", "429", "503"] {
        assert!(doc["paths"]["/v1/audio/speech"]["post"]["responses"].get(code).is_some(), "no {code}");
    }
    assert!(doc["paths"]["/v2/voices"]["get"].is_object());
}

// ---- the external-voice client ----

fn external(base: &str, timeouts: Timeouts) -> ExternalVoice {
    ExternalVoice::new(ExternalVoiceConfig {
        base_url: format!("{base}/v1"),
        api_key: Some(KEY.into()),
        model: "tts-1".into(),
        voice: "alloy".into(),
        speed: None,
        headers: vec![("x-test".into(), "1".into())],
        timeouts,
    })
    .unwrap()
}

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        first_byte: Duration::from_millis(500),
        idle: Duration::from_millis(500),
        connect_retries: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_client_speaks_through_tetes_own_endpoint() {
    let f = fixture().await;
    let base = serve_router(f.app.router.clone()).await;
    let mut speaker = ExternalSpeaker::new(external(&base, Timeouts::default())).unwrap();
    let want = reference(SENTENCE);
    let mut clock = 0.0;
    for round in 0..2 {
        let mut speech = speaker.say(SENTENCE).await.unwrap();
        let mut audio = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = speech.next().await {
            let chunk = chunk.unwrap();
            assert!((chunk.start - clock).abs() < 1e-9, "round {round}: chunk at {} after {clock}", chunk.start);
            clock = chunk.end();
            audio.extend(chunk.audio);
            chunks += 1;
        }
        // 48 kHz → 24 kHz on the wire → 48 kHz: the length survives to a sample.
        assert!(audio.len().abs_diff(want.len()) <= 1, "round {round}: {} samples vs {}", audio.len(), want.len());
        assert!(chunks > 1, "round {round}: the audio came in {chunks} chunk(s)");
        let (g, w) = (rms(&audio), rms(&want));
        assert!((g - w).abs() < 0.05 * w, "round {round}: rms {g} vs {w}");
    }
    assert!((speaker.clock() - 2.0 * want.len() as f64 / 48_000.0).abs() < 1e-3);
}

/// A server for the client tests: `handler` answers every POST to `/v1/audio/speech`.
async fn fake<H, T>(handler: H) -> String
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    serve_router(axum::Router::new().route("/v1/audio/speech", axum::routing::post(handler))).await
}

#[tokio::test]
async fn the_external_client_reports_the_servers_error() {
    let base = fake(|| async {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "the voice farm is on fire", "type": "server_error"}})),
        )
    })
    .await;
    let mut speaker = ExternalSpeaker::new(external(&base, quick())).unwrap();
    let e = speaker.say("Hi.").await.unwrap_err();
    assert!(
        matches!(&e, ExternalTtsError::Status { status: 500, message, .. } if message == "the voice farm is on fire"),
        "{e}"
    );
    assert!(e.to_string().contains("500") && e.to_string().contains("on fire"), "{e}");
}

#[tokio::test]
async fn the_external_client_gives_up_on_a_server_that_hangs() {
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = requests.clone();
    // Never answers.
    let silent = fake(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>()
    })
    .await;
    let mut speaker = ExternalSpeaker::new(external(&silent, quick())).unwrap();
    let e = speaker.say("Hi.").await.unwrap_err();
    assert!(matches!(e, ExternalTtsError::Timeout { stage: "response headers", .. }), "{e}");
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a request that was answered late is not retried"
    );

    // Answers, sends some audio, then stalls.
    let stalls = fake(|| async {
        let audio = futures_util::stream::iter([Ok::<_, std::io::Error>(vec![0u8; 4800])]);
        Body::from_stream(futures_util::StreamExt::chain(audio, futures_util::stream::pending()))
    })
    .await;
    let mut speaker = ExternalSpeaker::new(external(&stalls, quick())).unwrap();
    let mut speech = speaker.say("Hi.").await.unwrap();
    let mut got = 0;
    let e = loop {
        match speech.next().await.expect("an error, not the end") {
            Ok(chunk) => got += chunk.audio.len(),
            Err(e) => break e,
        }
    };
    assert!(matches!(e, ExternalTtsError::Timeout { stage: "between chunks of audio", .. }), "{e}");
    assert!(got > 0, "the audio before the stall was given");
    assert!(speech.next().await.is_none(), "nothing after the error");

    // Answers with headers but never any audio.
    let mute =
        fake(|| async { Body::from_stream(futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>()) }).await;
    let mut speaker = ExternalSpeaker::new(external(&mute, quick())).unwrap();
    let mut speech = speaker.say("Hi.").await.unwrap();
    let e = speech.next().await.unwrap().unwrap_err();
    assert!(matches!(e, ExternalTtsError::Timeout { stage: "first bytes of audio", .. }), "{e}");
}

#[tokio::test]
async fn the_external_client_refuses_malformed_audio() {
    // An odd number of bytes: the last sample is cut in half.
    let odd = fake(|| async { ([(header::CONTENT_TYPE, "audio/pcm")], vec![1u8; 4801]) }).await;
    let mut speaker = ExternalSpeaker::new(external(&odd, quick())).unwrap();
    let mut speech = speaker.say("Hi.").await.unwrap();
    let mut results = Vec::new();
    while let Some(r) = speech.next().await {
        results.push(r);
    }
    let e = results.pop().unwrap().unwrap_err();
    assert!(matches!(&e, ExternalTtsError::Malformed { reason, .. } if reason.contains("odd byte")), "{e}");
    assert!(results.iter().all(Result::is_ok));

    // JSON where audio should be.
    let json_body = fake(|| async { axum::Json(json!({"audio": "not here"})) }).await;
    let mut speaker = ExternalSpeaker::new(external(&json_body, quick())).unwrap();
    let e = speaker.say("Hi.").await.unwrap_err();
    assert!(matches!(&e, ExternalTtsError::Malformed { reason, .. } if reason.contains("application/json")), "{e}");

    // Success with no audio at all.
    let empty = fake(|| async { ([(header::CONTENT_TYPE, "audio/pcm")], Vec::<u8>::new()) }).await;
    let mut speaker = ExternalSpeaker::new(external(&empty, quick())).unwrap();
    let mut speech = speaker.say("Hi.").await.unwrap();
    let e = speech.next().await.unwrap().unwrap_err();
    assert!(matches!(&e, ExternalTtsError::Malformed { reason, .. } if reason.contains("no audio")), "{e}");
}

#[tokio::test]
async fn the_external_client_retries_a_closed_port_then_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut speaker = ExternalSpeaker::new(external(&base, quick())).unwrap();
    let e = speaker.say("Hi.").await.unwrap_err();
    assert!(matches!(e, ExternalTtsError::Connect { attempts: 3, .. }), "{e}");
    assert!(e.to_string().contains("cannot reach") && e.to_string().contains(&base), "{e}");
}

// ---- the served binary ----

/// `tete serve` loads the voice named by `--tts-model` (the default here),
/// lists it (and the other resident models) and speaks with it to the
/// external client over loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_voice_speaks_to_the_external_client() {
    let dir = tempfile::tempdir().unwrap();
    let db = tete_server::db::Db::sqlite_url(dir.path());
    let server = common::serve(&["--database-url", &db, "--upload-root", dir.path().to_str().unwrap()]);
    let voices: Value = reqwest::Client::new()
        .get(format!("{}/v2/voices", server.base))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(voices["data"][0]["voice_id"], VOICE_ID, "{voices}");
    // The served host has its three resident models: LLM, ASR and this voice.
    let models: Value = reqwest::Client::new()
        .get(format!("{}/v1/models", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut stages: Vec<&str> =
        models["data"].as_array().unwrap().iter().map(|m| m["stage"].as_str().unwrap()).collect();
    stages.sort_unstable();
    assert_eq!(stages, ["asr", "llm", "tts"], "{models}");
    let mut speaker = ExternalSpeaker::new(external(&server.base, Timeouts::default())).unwrap();
    let mut speech = speaker.say(SENTENCE).await.unwrap();
    let mut audio = Vec::new();
    while let Some(chunk) = speech.next().await {
        audio.extend(chunk.unwrap().audio);
    }
    let want = reference(SENTENCE);
    assert!(audio.len().abs_diff(want.len()) <= 1, "{} samples vs {}", audio.len(), want.len());
    assert!(rms(&audio) > 0.5 * rms(&want), "rms {} vs {}", rms(&audio), rms(&want));
}

/// `--tts-model` must name a fetched model of the tts stage.
#[test]
fn serve_refuses_a_tts_model_that_is_not_a_voice() {
    let dir = tempfile::tempdir().unwrap();
    let db = tete_server::db::Db::sqlite_url(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tete"))
        .args(["serve", "--device", "cpu", "--bind", "127.0.0.1:0", "--database-url", &db])
        .args(["--upload-root", dir.path().to_str().unwrap(), "--tts-model", "whisper-tiny.en"])
        .env("TETE_API_KEY", KEY)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("--tts-model whisper-tiny.en: that model is for the asr stage"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tete"))
        .args(["serve", "--device", "cpu", "--bind", "127.0.0.1:0", "--database-url", &db])
        .args(["--upload-root", dir.path().to_str().unwrap(), "--tts-model", "no-such-voice"])
        .env("TETE_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-voice"), "{}", String::from_utf8_lossy(&out.stderr));
}
