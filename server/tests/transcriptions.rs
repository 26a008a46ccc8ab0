//! `POST /v1/audio/transcriptions` in process (axum `oneshot`), on a test
//! recogniser that measures what it is given: the number of 16 kHz samples,
//! their level per one-second segment, and the options it was passed. The
//! files are made by real encoders (flac, lame, opusenc, oggenc: installed by
//! scripts/setup-system.sh), so each format's length survives decoding and
//! resampling exactly as the test computes it from the samples it wrote.

mod common;

use std::f64::consts::PI;
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use common::{KEY, TestApp, app_with};
use serde_json::Value;
use tete_engine::asr::{AsrError, Segment, SpeechToText, TranscribeOptions, Transcription};
use tete_server::api::audio::Recogniser;
use tower::ServiceExt;

/// Reports what it received: `"{n} samples"`, one segment per second with
/// that second's RMS level, and the language it was asked for.
#[derive(Default)]
struct Measure {
    last_options: Mutex<Option<TranscribeOptions>>,
    gate: Option<Gate>,
}

/// Holds each call: it signals on `entered`, then waits for `release`.
struct Gate {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl SpeechToText for Measure {
    fn model_id(&self) -> &str {
        "measure"
    }

    fn transcribe(&self, pcm: &[f32], options: &TranscribeOptions) -> Result<Transcription, AsrError> {
        if let Some(gate) = &self.gate {
            gate.entered.lock().unwrap().send(()).unwrap();
            gate.release.lock().unwrap().recv().unwrap();
        }
        *self.last_options.lock().unwrap() = Some(options.clone());
        if options.language.as_deref() == Some("xx") {
            return Err(AsrError::Language("xx".into()));
        }
        let rate = tete_engine::asr::SAMPLE_RATE as usize;
        let segments = pcm
            .chunks(rate)
            .enumerate()
            .map(|(id, chunk)| {
                let rms = (chunk.iter().map(|&s| s as f64 * s as f64).sum::<f64>() / chunk.len() as f64).sqrt();
                Segment {
                    id,
                    start: (id * rate) as f64 / rate as f64,
                    end: (id * rate + chunk.len()) as f64 / rate as f64,
                    text: format!("rms {rms:.3}"),
                    tokens: vec![chunk.len() as u32],
                    avg_logprob: rms.max(1e-12).ln(),
                    no_speech_prob: if rms < 1e-3 { 1.0 } else { 0.0 },
                }
            })
            .collect();
        Ok(Transcription {
            text: format!("{} samples", pcm.len()),
            language: options.language.clone().unwrap_or_else(|| "en".into()),
            duration: pcm.len() as f64 / rate as f64,
            segments,
        })
    }
}

struct Fixture {
    app: TestApp,
    model: Arc<Measure>,
    _dir: tempfile::TempDir,
}

async fn fixture_with(model: Option<Arc<Measure>>, running: usize, waiting: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = tete_server::db::Db::sqlite_url(dir.path());
    let m = model.clone().unwrap_or_default();
    let speech = model.map(|m| Recogniser::with_limits(m as Arc<dyn SpeechToText>, running, waiting));
    let app = app_with(&url, move |c| c.speech = speech).await;
    Fixture { app, model: m, _dir: dir }
}

async fn fixture() -> Fixture {
    fixture_with(Some(Arc::new(Measure::default())), 1, 4).await
}

fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<f32> {
    (0..n).map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32).collect()
}

/// A 16-bit PCM WAV file of interleaved `samples`.
fn wav(rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
    let data_len = samples.len() as u32 * 2;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
    b.extend_from_slice(&(channels * 2).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        b.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes());
    }
    b
}

/// Runs a real encoder on a WAV file.
fn encode(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.wav"), dir.path().join("out"));
    std::fs::write(&src, input).unwrap();
    let mut cmd = Command::new(tool);
    cmd.args(args);
    match tool {
        "flac" | "oggenc" => cmd.arg("-o").arg(&dst).arg(&src),
        _ => cmd.arg(&src).arg(&dst),
    };
    let out = cmd.output().unwrap_or_else(|e| panic!("running {tool} ({e}): install it with scripts/setup-system.sh"));
    assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&dst).unwrap()
}

/// Samples at 16 kHz that `n` samples at `rate` become.
fn at_16k(n: usize, rate: u32) -> usize {
    (n as u64 * 16_000).div_ceil(rate as u64) as usize
}

/// A multipart form: text fields, then the file (when given).
fn form(fields: &[(&str, &str)], file: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "tete-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    if let Some(file) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Posts a form with `auth` as a header (`None`: no key); returns status, content type and body.
async fn post(
    t: &TestApp,
    auth: Option<(&str, String)>,
    fields: &[(&str, &str)],
    file: Option<&[u8]>,
) -> (StatusCode, String, Value) {
    let (content_type, body) = form(fields, file);
    let mut req = Request::post("/v1/audio/transcriptions").header(header::CONTENT_TYPE, content_type);
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let response = t.router.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let ct = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, ct, value)
}

fn key() -> Option<(&'static str, String)> {
    Some(("x-api-key", KEY.to_string()))
}

/// Asserts an OpenAI-shaped error.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str, param: Option<&str>, code: &str) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(e["type"], kind, "{body}");
    assert_eq!(e["param"], param.map_or(Value::Null, |p| Value::String(p.into())), "{body}");
    assert_eq!(e["code"], code, "{body}");
}

#[tokio::test]
async fn every_format_arrives_at_16k_with_its_length() {
    let f = fixture().await;
    let speech_path = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";
    let speech = std::fs::read(speech_path).expect("pocketsphinx-testdata is installed by scripts/setup-system.sh");
    let speech_samples = (speech.len() - 44) / 2;
    let s44 = wav(44_100, 1, &sine(440.0, 44_100, 30_000, 0.5));
    let lr: Vec<f32> = sine(440.0, 8_000, 9_001, 0.5).iter().flat_map(|&s| [s, -s]).collect();
    let s22 = wav(22_050, 1, &sine(440.0, 22_050, 20_000, 0.5));
    let s48 = wav(48_000, 1, &sine(440.0, 48_000, 24_000, 0.5));
    let s16 = wav(16_000, 1, &sine(440.0, 16_000, 12_345, 0.5));
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("real speech WAV, 16 kHz", speech.clone(), speech_samples),
        ("WAV 44.1 kHz", s44.clone(), at_16k(30_000, 44_100)),
        ("WAV 8 kHz stereo", wav(8_000, 2, &lr), at_16k(9_001, 8_000)),
        ("FLAC 22.05 kHz", encode("flac", &["--silent"], &s22), at_16k(20_000, 22_050)),
        ("FLAC of real speech", encode("flac", &["--silent"], &speech), speech_samples),
        // LAME's encoder delay and padding are trimmed (its LAME tag says how much).
        ("MP3 44.1 kHz", encode("lame", &["--quiet"], &s44), at_16k(30_000, 44_100)),
        // Opus decodes at 48 kHz; pre-skip and the final granule make the length exact.
        ("Ogg-Opus from 48 kHz", encode("opusenc", &["--quiet"], &s48), at_16k(24_000, 48_000)),
        ("Ogg-Opus from 16 kHz", encode("opusenc", &["--quiet"], &s16), 12_345),
        ("Ogg-Vorbis 22.05 kHz", encode("oggenc", &["--quiet"], &s22), at_16k(20_000, 22_050)),
    ];
    for (what, file, expected) in cases {
        let (status, _, body) = post(&f.app, key(), &[("model", "whisper-1")], Some(&file)).await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        assert_eq!(body["text"], format!("{expected} samples"), "{what}");
    }
    // The level survives too: a sine of amplitude 0.5 has an RMS of 0.3536.
    let (_, _, body) = post(&f.app, key(), &[("response_format", "verbose_json")], Some(&s44)).await;
    let rms: f64 = body["segments"][0]["text"].as_str().and_then(|t| t.strip_prefix("rms ")?.parse().ok()).unwrap();
    assert!((rms - 0.3536).abs() < 0.002, "rms {rms}");
}

#[tokio::test]
async fn each_response_format_has_openais_shape() {
    let f = fixture().await;
    let n = 40_000; // 2.5 s at 16 kHz
    let file = wav(16_000, 1, &sine(300.0, 16_000, n, 0.25));

    let (status, ct, body) = post(&f.app, key(), &[("response_format", "json")], Some(&file)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(body, serde_json::json!({"text": "40000 samples"}));

    let (status, ct, body) = post(&f.app, key(), &[("response_format", "text")], Some(&file)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(body, Value::String("40000 samples".into()));

    let fields = [
        ("model", "measure"),
        ("language", "fr"),
        ("prompt", "Bonjour."),
        ("response_format", "verbose_json"),
        ("temperature", "0"),
        ("timestamp_granularities[]", "segment"),
    ];
    let (status, _, body) = post(&f.app, key(), &fields, Some(&file)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["task"], "transcribe");
    assert_eq!(body["language"], "fr");
    assert_eq!(body["duration"], 2.5);
    assert_eq!(body["text"], "40000 samples");
    let segments = body["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 3);
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s["id"], i);
        assert_eq!(s["start"], i as f64);
        for field in ["end", "text", "tokens", "avg_logprob", "no_speech_prob"] {
            assert!(s.get(field).is_some(), "segment {i} has no {field}: {s}");
        }
        assert_eq!(s["no_speech_prob"], 0.0);
    }
    assert_eq!(segments[2]["end"], 2.5);
    assert_eq!(segments[2]["tokens"], serde_json::json!([8000]));
    let options = f.model.last_options.lock().unwrap().clone().unwrap();
    assert_eq!(options, TranscribeOptions { language: Some("fr".into()), prompt: Some("Bonjour.".into()) });
}

#[tokio::test]
async fn the_api_key_is_required_in_either_header() {
    let f = fixture().await;
    let file = wav(16_000, 1, &sine(300.0, 16_000, 1600, 0.25));
    let (status, _, body) = post(&f.app, None, &[], Some(&file)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_request_error", None, "invalid_api_key");
    let (status, _, body) = post(&f.app, Some(("x-api-key", "wrong".into())), &[], Some(&file)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_request_error", None, "invalid_api_key");
    let (status, _, body) = post(&f.app, Some(("authorization", "Bearer wrong".into())), &[], Some(&file)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = post(&f.app, Some(("authorization", format!("Bearer {KEY}"))), &[], Some(&file)).await;
    assert_eq!((status, body["text"].as_str()), (StatusCode::OK, Some("1600 samples")));
    let (status, _, _) = post(&f.app, key(), &[], Some(&file)).await;
    assert_eq!(status, StatusCode::OK);
    // Stored keys work too.
    let (_, secret) = f.app.api.db().create_api_key("client").await.unwrap();
    let (status, _, _) = post(&f.app, Some(("authorization", format!("Bearer {secret}"))), &[], Some(&file)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_uploads_and_parameters_are_400_with_the_reason() {
    let f = fixture().await;
    let good = wav(16_000, 1, &sine(300.0, 16_000, 16_000, 0.25));
    let invalid = "invalid_request_error";
    // What, form fields, file, and the error's param and code.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<Vec<u8>>, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "random bytes",
            vec![],
            Some((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
            Some("file"),
            "unsupported_file",
        ),
        ("text", vec![], Some(b"hello, this is not audio".to_vec()), Some("file"), "unsupported_file"),
        ("empty file", vec![], Some(Vec::new()), Some("file"), "empty_file"),
        ("half a WAV", vec![], Some(good[..good.len() / 2].to_vec()), Some("file"), "truncated_file"),
        ("no file", vec![("model", "whisper-1")], None, Some("file"), "missing_file"),
        ("srt", vec![("response_format", "srt")], Some(good.clone()), Some("response_format"), "unsupported_value"),
        ("temperature", vec![("temperature", "0.4")], Some(good.clone()), Some("temperature"), "unsupported_value"),
        (
            "word timestamps",
            vec![("timestamp_granularities[]", "word")],
            Some(good.clone()),
            Some("timestamp_granularities"),
            "unsupported_value",
        ),
        ("other model", vec![("model", "gpt-4o-transcribe")], Some(good.clone()), Some("model"), "model_not_found"),
        ("unknown field", vec![("colour", "blue")], Some(good.clone()), None, "unknown_parameter"),
        (
            "language the model lacks",
            vec![("language", "xx")],
            Some(good.clone()),
            Some("language"),
            "unsupported_language",
        ),
    ];
    for (what, fields, file, param, code) in cases {
        let (status, _, body) = post(&f.app, key(), &fields, file.as_deref()).await;
        eprintln!("{what}: {body}");
        assert_error(status, &body, StatusCode::BAD_REQUEST, invalid, param, code);
    }
    // A damaged FLAC (bytes flipped mid-stream; no PADDING block, so that is
    // audio) fails its checksum.
    let mut flac = encode("flac", &["--silent", "--no-padding"], &good);
    let mid = flac.len() / 2;
    flac[mid..mid + 8].iter_mut().for_each(|b| *b ^= 0xa5);
    let (status, _, body) = post(&f.app, key(), &[], Some(&flac)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, invalid, Some("file"), "corrupt_file");
    // Not multipart at all.
    let req = Request::post("/v1/audio/transcriptions")
        .header("x-api-key", KEY)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = f.app.send(req).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, invalid, None, "invalid_form");
}

#[tokio::test]
async fn uploads_past_the_limit_are_413() {
    // The test host allows 1 MiB uploads (common::app_with).
    let f = fixture().await;
    let limit = f.app.api.config.max_upload_bytes;
    // Just past the limit: refused while streaming the file field.
    let (status, _, body) = post(&f.app, key(), &[], Some(&vec![0u8; limit + 1])).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("file"), "file_too_large");
    // Far past it: refused by the body limit.
    let (status, _, body) = post(&f.app, key(), &[], Some(&vec![0u8; 3 * limit])).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("file"), "file_too_large");
    // A file right at the limit is read (and then refused for what it holds).
    let (status, _, body) = post(&f.app, key(), &[], Some(&vec![0u8; limit])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn without_a_recogniser_the_answer_is_503() {
    let f = fixture_with(None, 1, 0).await;
    let file = wav(16_000, 1, &sine(300.0, 16_000, 1600, 0.25));
    let (status, _, body) = post(&f.app, key(), &[], Some(&file)).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "server_error", None, "model_not_loaded");
    // Auth still comes first.
    let (status, _, _) = post(&f.app, None, &[], Some(&file)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn past_the_running_and_waiting_bound_the_answer_is_429() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let model = Arc::new(Measure {
        last_options: Mutex::new(None),
        gate: Some(Gate { entered: Mutex::new(entered_tx), release: Mutex::new(release_rx) }),
    });
    // One running, none waiting.
    let f = fixture_with(Some(model), 1, 0).await;
    let file = wav(16_000, 1, &sine(300.0, 16_000, 1600, 0.25));
    let router = f.app.router.clone();
    let (content_type, body) = form(&[], Some(&file));
    let first = tokio::spawn(async move {
        let req = Request::post("/v1/audio/transcriptions")
            .header("x-api-key", KEY)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        router.oneshot(req).await.unwrap().status()
    });
    // Wait (on a blocking thread) until the first is inside the recogniser.
    let entered_rx = tokio::task::spawn_blocking(move || {
        entered_rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
        entered_rx
    })
    .await
    .unwrap();
    let (status, _, body) = post(&f.app, key(), &[], Some(&file)).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "requests", None, "rate_limit_exceeded");
    release_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // The slot is free again.
    release_tx.send(()).unwrap();
    let (status, _, body) = post(&f.app, key(), &[], Some(&file)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(entered_rx.try_iter().count(), 1);
}

#[tokio::test]
async fn the_endpoint_is_in_the_openapi_document() {
    let f = fixture().await;
    let (status, doc) = f.app.send(Request::get("/v2/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let op = &doc["paths"]["/v1/audio/transcriptions"]["post"];
    let form = &op["requestBody"]["content"]["multipart/form-data"]["schema"];
    assert!(form.is_object(), "{op}");
    let schema = if let Some(r) = form["$ref"].as_str() {
        &doc["components"]["schemas"][r.rsplit('/').next().unwrap()]
    } else {
        form
    };
    assert_eq!(schema["properties"]["file"]["format"], "binary", "{schema}");
    for code in ["200", "400", "401", "413", "429", "503"] {
        assert!(op["responses"].get(code).is_some(), "no {code} in {op}");
    }
}

/// The served binary loads the resident Whisper and transcribes read speech
/// (a LibriVox clip of Debian's pocketsphinx-testdata) sent by an HTTP client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_recogniser_transcribes_read_speech() {
    let dir = tempfile::tempdir().unwrap();
    let db = tete_server::db::Db::sqlite_url(dir.path());
    let server = common::serve(&["--database-url", &db, "--upload-root", dir.path().to_str().unwrap()]);
    let clip = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav";
    let wav = std::fs::read(clip).unwrap_or_else(|e| panic!("{clip}: {e} (apt-get install pocketsphinx-testdata)"));
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(wav).file_name("clip.wav"))
        .text("model", "whisper-1")
        .text("response_format", "verbose_json");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/audio/transcriptions", server.base))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let text = body["text"].as_str().unwrap().to_lowercase();
    println!("{body}");
    // The clip's line in the test data's `transcription` file; its longer words must be heard.
    let expected = std::fs::read_to_string("/usr/share/pocketsphinx/test/data/librivox/transcription").unwrap();
    let line = expected.lines().find(|l| l.contains("0930")).expect("the clip's transcript");
    let reference: Vec<String> =
        line.split('(').next().unwrap().split_whitespace().map(|w| w.to_lowercase()).filter(|w| w.len() > 4).collect();
    let heard = reference.iter().filter(|w| text.contains(w.as_str())).count();
    assert!(heard * 10 >= reference.len() * 8, "{heard} of {reference:?} in {text:?}");
    assert!(body["segments"].as_array().is_some_and(|s| !s.is_empty()), "{body}");
    assert_eq!(body["language"], "en");
}
