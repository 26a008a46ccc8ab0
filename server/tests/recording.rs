//! Call recordings (`enable_recording`) end to end: an aiortc peer (PyPI
//! `aiortc`, `whip_client.py`) joins a conversation over WHIP on
//! 127.0.0.1 and talks (a 1200 Hz tone) while the replica's side (a test
//! stand-in) beeps at 440 Hz for 300 ms each second and brightens the top
//! of its picture for exactly as long. When the peer leaves, the recording
//! must be kept, announced by `application.recording_ready`, and readable
//! by FFmpeg (PyAV, `probe_media.py`): H.264 and Opus in MP4, both voices
//! in it, and the beeps heard within one frame of when they are seen.
//! The aiortc client, too, hears the beeps when it sees them, on the RTP
//! clocks of the two tracks. Headless Chromium then plays the file. A second run keeps the
//! recording in an S3-compatible bucket: moto's server (PyPI `moto`) on
//! 127.0.0.1; its client offers only VP8, so the call goes out in VP8 and
//! the file still gets H.264.

mod common;

use std::f64::consts::TAU;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{TestApp, app};
use serde_json::{Value, json};
use tete_server::api::Api;
use tete_server::edge::messages::ClientMessage;
use tete_server::edge::peer::VideoFrame;
use tete_server::edge::{Edge, EdgeConfig, SessionMedia};
use tete_server::recording::{RecordingStore, S3Config};

const REPLICA_HZ: f64 = 440.0;
const USER_HZ: f64 = 1200.0;
/// A frequency neither side sends: the noise floor.
const QUIET_HZ: f64 = 2500.0;

/// Beeps for the first 300 ms of every second of the call.
fn beeping(t: f64) -> bool {
    t.rem_euclid(1.0) < 0.3
}

/// The replica's side: a beep and a bright band at the same moments, both
/// decided from the wall clock when the edge asks for them (which is when
/// it stamps and sends them).
struct Beeper {
    start: Option<Instant>,
}

impl Beeper {
    fn now(&mut self) -> f64 {
        self.start.get_or_insert_with(Instant::now).elapsed().as_secs_f64()
    }
}

impl SessionMedia for Beeper {
    fn next_audio(&mut self) -> Option<Vec<f32>> {
        let t0 = self.now();
        Some(
            (0..960)
                .map(|i| {
                    let t = t0 + i as f64 / 48_000.0;
                    if beeping(t) { (0.4 * (TAU * REPLICA_HZ * t).sin()) as f32 } else { 0.0 }
                })
                .collect(),
        )
    }
    fn next_video(&mut self) -> Option<VideoFrame> {
        let top = if beeping(self.now()) { 220 } else { 30 };
        let mut frame = VideoFrame::solid(512, 512, (128, 128, 128));
        frame.i420[..256 * 512].fill(top);
        Some(frame)
    }
    fn heard(&mut self, _: &[f32]) {}
    fn seen(&mut self, _: &VideoFrame) {}
    fn message(&mut self, _: ClientMessage) {}
    fn presence(&mut self, _: bool) {}
}

struct Fixture {
    base: String,
    app: TestApp,
    edge: Arc<Edge>,
}

async fn fixture(db_dir: &Path, recordings: RecordingStore) -> Fixture {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("tete_server=info").try_init();
    let app = app(&tete_server::db::Db::sqlite_url(db_dir)).await;
    let edge = Edge::new(
        EdgeConfig { recordings: Some(recordings), ..EdgeConfig::default() },
        Some(Arc::new(|_: tete_server::edge::Joining<'_>| Box::new(Beeper { start: None }) as Box<dyn SessionMedia>)),
    );
    edge.follow(&app.api.host);
    let api = Api { edge: Some(edge.clone()), ..app.api.clone() };
    let router = tete_server::api::router(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Fixture { base, app, edge }
}

/// Runs a recorded call of about `seconds` with the aiortc peer (offering
/// only `video_codec` when given) and returns the
/// `application.recording_ready` properties and what the client reported.
async fn recorded_call(f: &Fixture, dir: &Path, seconds: f64, video_codec: Option<&str>) -> (Value, Value) {
    let body = json!({"replica_id": "rstockastronaut", "properties": {"enable_recording": true}});
    let (status, c) = f.app.call("POST", "/v2/conversations", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let id = c["conversation_id"].as_str().unwrap().to_string();
    let wav = dir.join("mic.wav");
    common::tone_wav(&wav, USER_HZ, seconds + 2.0);
    let mut command = common::whip_client(&format!("{}/c/{id}/whip", f.base), &wav, seconds);
    if let Some(codec) = video_codec {
        command.args(["--video-codec", codec]);
    }
    let client = common::run_client(command).await.unwrap();
    assert_eq!(client["connected"], true, "{client}");
    println!("video codecs answered: {}", client["video_codecs"]);
    assert!(client["video"]["frames"].as_u64().unwrap_or(0) > 25, "the client saw too little video: {client}");

    let ready = common::eventually(Duration::from_secs(30), || async {
        let (_, c) = f.app.call("GET", &format!("/v2/conversations/{id}?verbose=true"), None).await;
        c["events"].as_array()?.iter().find(|e| e["event_type"] == "application.recording_ready").cloned()
    })
    .await
    .expect("application.recording_ready after the peer left");
    assert!(f.edge.recordings_kept(Duration::from_secs(1)).await);
    println!("recording_ready: {ready}");
    let properties = ready["properties"].clone();
    assert_eq!(properties["replica_id"], "rstockastronaut");
    let duration = properties["duration"].as_f64().unwrap();
    assert!(duration > seconds - 1.0 && duration < seconds + 3.0, "duration {duration} for a {seconds} s call");
    assert!(properties["storage_uri"].as_str().unwrap().ends_with(".mp4"), "{properties}");
    (properties, client)
}

/// Audio − video at each beep: for every time the picture turned bright,
/// the nearest time the sound turned loud.
fn av_offsets(seen: &[f64], heard: &[f64]) -> Vec<f64> {
    seen.iter().filter_map(|&s| heard.iter().map(|&h| h - s).min_by(|a, b| a.abs().total_cmp(&b.abs()))).collect()
}

/// What FFmpeg reads in a recording.
fn probe(path: &Path) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe_media.py");
    let python = std::env::var("TETE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = std::process::Command::new(python)
        .args([script, path.to_str().unwrap()])
        .args([REPLICA_HZ, USER_HZ, QUIET_HZ].map(|f| f.to_string()))
        .output()
        .expect("python3 with PyAV (aiortc's venv has it)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Times where `values` (one per `times`) rises through `threshold`.
fn onsets(times: &[f64], values: &[f64], threshold: f64) -> Vec<f64> {
    values.windows(2).zip(&times[1..]).filter(|(v, _)| v[0] < threshold && v[1] >= threshold).map(|(_, &t)| t).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The recording at `path` holds the call: H.264 512×512 and mono Opus,
/// the replica's beeps and the user's voice, and the beeps heard when
/// seen.
fn check_recording(path: &Path, duration: f64) {
    let p = probe(path);
    println!("format {}, duration {}, streams {}", p["format"], p["duration"], p["streams"]);
    assert!(p["format"].as_str().unwrap().contains("mp4"), "{}", p["format"]);
    let streams = p["streams"].as_array().unwrap();
    assert!(streams.iter().any(|s| s["codec"] == "h264" && s["width"] == 512 && s["height"] == 512), "{streams:?}");
    assert!(streams.iter().any(|s| s["codec"] == "opus" && s["rate"] == 48_000), "{streams:?}");
    let file_duration = p["duration"].as_f64().unwrap();
    assert!((file_duration - duration).abs() < 0.5, "the file lasts {file_duration} s, the webhook says {duration}");

    let pictures = p["pictures"].as_array().unwrap();
    assert!(pictures.len() as f64 >= 20.0 * duration, "{} pictures in {duration} s", pictures.len());
    let (times, tops): (Vec<f64>, Vec<f64>) =
        pictures.iter().map(|q| (q[0].as_f64().unwrap(), q[1].as_f64().unwrap())).unzip();
    let seen = onsets(&times, &tops, 125.0);

    let audio = &p["audio"];
    let window = audio["window"].as_f64().unwrap();
    let power: Vec<[f64; 3]> =
        audio["power"].as_array().unwrap().iter().map(|w| [0, 1, 2].map(|k| w[k].as_f64().unwrap())).collect();
    let middle = &power[power.len() / 4..3 * power.len() / 4];
    let user = median(middle.iter().map(|w| w[1]).collect());
    let quiet = median(middle.iter().map(|w| w[2]).collect());
    println!("user's voice {user:.4} against a floor of {quiet:.5}");
    assert!(user > 0.02 && user > 20.0 * quiet, "the user is not in the recording: {user} against {quiet}");
    let beep: Vec<f64> = power.iter().map(|w| w[0]).collect();
    let loud = beep.iter().cloned().fold(0.0, f64::max);
    let heard = onsets(&(0..beep.len()).map(|k| k as f64 * window).collect::<Vec<_>>(), &beep, loud / 2.0);
    println!("beeps seen at {seen:.2?}, heard at {heard:.2?}");
    assert!(seen.len() as f64 >= duration - 2.0 && heard.len() as f64 >= duration - 2.0, "too few beeps");
    // A beep starts somewhere within a picture's 40 ms, so it is seen from
    // the next picture on: heard up to one frame (and a window) earlier.
    let offsets: Vec<f64> =
        seen.iter().filter_map(|&s| heard.iter().map(|&h| h - s).min_by(|a, b| a.abs().total_cmp(&b.abs()))).collect();
    let offset = median(offsets.clone());
    println!("audio − video at the beeps: {offsets:.3?}, median {offset:.3}");
    assert!((-0.06..=0.02).contains(&offset), "beeps heard {offset:.3} s from when they are seen");
}

/// Chromium plays the file: it knows its length and size, and decodes
/// pictures and sound.
fn plays_in_chromium(path: &Path, dir: &Path) {
    let page = dir.join("play.html");
    std::fs::write(
        &page,
        format!(
            r#"<!doctype html><video id=v src="{}" autoplay muted></video><script>
const v = document.getElementById('v');
v.addEventListener('error', () => console.log('tete-play ' + JSON.stringify({{error: v.error && v.error.message}})));
v.addEventListener('playing', () => setTimeout(() => console.log('tete-play ' + JSON.stringify({{
  duration: v.duration, width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
  frames: v.getVideoPlaybackQuality().totalVideoFrames, audio_bytes: v.webkitAudioDecodedByteCount}})), 1500));
</script>"#,
            url::Url::from_file_path(path).unwrap()
        ),
    )
    .unwrap();
    let url = url::Url::from_file_path(&page).unwrap().to_string();
    let (mut chromium, rx) = common::chromium(dir, &["--allow-file-access-from-files", &url], "tete-play");
    let played = rx.recv_timeout(Duration::from_secs(40));
    chromium.kill();
    let played = played.expect("Chromium did not report playing the recording");
    println!("Chromium: {played}");
    assert!(played["error"].is_null(), "{played}");
    assert_eq!((played["width"].as_u64(), played["height"].as_u64()), (Some(512), Some(512)), "{played}");
    assert!(played["duration"].as_f64().is_some_and(|d| d.is_finite() && d > 1.0), "{played}");
    assert!(played["time"].as_f64().unwrap_or(0.0) > 0.5, "{played}");
    assert!(played["frames"].as_u64().unwrap_or(0) >= 10, "{played}");
    assert!(played["audio_bytes"].as_u64().unwrap_or(0) > 0, "{played}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_is_kept_locally_and_plays() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordingStore::local(dir.path().join("recordings")).unwrap();
    let f = fixture(dir.path(), store).await;
    let (properties, client) = recorded_call(&f, dir.path(), 5.0, None).await;
    // At the client, on the RTP clocks the edge stamps both tracks from:
    // the beeps are heard when they are seen (as in the recording).
    let times =
        |k: &str| -> Vec<f64> { client["onsets"][k].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect() };
    let (seen, heard) = (times("seen"), times("heard"));
    let offsets = av_offsets(&seen, &heard);
    println!("client: beeps seen at {seen:.3?}, heard at {heard:.3?}; audio − video {offsets:.3?}");
    assert!(offsets.len() >= 3, "too few beeps at the client: {client}");
    let offset = median(offsets);
    assert!((-0.06..=0.02).contains(&offset), "the client hears the beeps {offset:.3} s from when it sees them");
    assert_eq!(properties["storage_provider"], "local");
    let uri = url::Url::parse(properties["storage_uri"].as_str().unwrap()).unwrap();
    let path = uri.to_file_path().unwrap();
    assert!(path.starts_with(dir.path().join("recordings")), "{}", path.display());
    let partial: Vec<_> = std::fs::read_dir(dir.path().join("recordings/.partial")).unwrap().collect();
    assert!(partial.is_empty(), "left in .partial: {partial:?}");
    check_recording(&path, properties["duration"].as_f64().unwrap());
    plays_in_chromium(&path, dir.path());
}

/// moto's S3 server on a free loopback port, killed when dropped.
struct Moto(std::process::Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // scripts/test.sh installs moto in its own venv and names it here.
    let server = std::env::var("TETE_TEST_MOTO").unwrap_or_else(|_| "moto_server".into());
    let moto = Moto(
        std::process::Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server (scripts/test.sh installs it)"),
        port,
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return moto;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not listen on 127.0.0.1:{port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_goes_to_an_s3_bucket() {
    let moto = moto();
    let endpoint = format!("http://127.0.0.1:{}", moto.1);
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("calls")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    let created = reqwest::Client::new().put(format!("{endpoint}/calls")).send().await.unwrap();
    assert!(created.status().is_success(), "creating the bucket: {}", created.status());
    let dir = tempfile::tempdir().unwrap();
    let config = S3Config {
        bucket: "calls".into(),
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        prefix: "recordings/".into(),
        credentials: Some(("testing".into(), "testing".into())),
    };
    let store = RecordingStore::s3(dir.path().join("spool"), config).unwrap();
    let f = fixture(dir.path(), store).await;
    // This client takes only VP8: the call goes out in VP8 and the file
    // gets H.264 from a second encoder.
    let (properties, client) = recorded_call(&f, dir.path(), 4.0, Some("vp8")).await;
    assert_eq!(client["video_codecs"], json!(["VP8"]), "{client}");
    assert_eq!(properties["storage_provider"], "s3", "{properties}");
    let uri = properties["storage_uri"].as_str().unwrap();
    let key = uri.strip_prefix("s3://calls/").unwrap_or_else(|| panic!("{uri}"));
    assert!(key.starts_with("recordings/"), "{uri}");
    // The object is the recording, and nothing stayed in the spool.
    use object_store::ObjectStoreExt as _;
    let object = bucket.get(&key.into()).await.expect("the recording's object");
    let content_type = object.attributes.get(&object_store::Attribute::ContentType).map(|v| v.to_string());
    assert_eq!(content_type.as_deref(), Some("video/mp4"));
    let bytes = object.bytes().await.unwrap();
    let path = dir.path().join("downloaded.mp4");
    std::fs::write(&path, &bytes).unwrap();
    let left: Vec<_> = walk(&dir.path().join("spool"));
    assert!(left.is_empty(), "left on local disk: {left:?}");
    check_recording(&path, properties["duration"].as_f64().unwrap());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}
