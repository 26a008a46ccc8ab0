//! The WebRTC edge against peers no one here wrote: an aiortc client
//! (`whip_client.py`, PyPI `aiortc`) joins over WHIP on 127.0.0.1, sends a
//! 300 Hz tone as its microphone and data-channel messages, and records what
//! the replica's side (here a 440 Hz test tone standing in for the replica)
//! sends back. Refusals (content type, unknown, ended and full
//! conversations, meeting tokens, malformed offers) use offers made by str0m
//! acting as the client. Headless Chromium joins from the meeting page.
//! Everything binds and talks to 127.0.0.1 only: the edge drops offered
//! candidates that are not loopback, aiortc is given 127.0.0.1 alone and no
//! STUN server, and Chromium resolves no names (its WebRTC stack still
//! `connect`s a UDP socket towards 8.8.8.8 to learn its default route,
//! which sends nothing).

mod common;

use std::f64::consts::PI;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{TestApp, app};
use serde_json::{Value, json};
use str0m::media::{Direction, MediaKind};
use tete_server::api::Api;
use tete_server::edge::messages::ClientMessage;
use tete_server::edge::peer::VideoFrame;
use tete_server::edge::{Edge, EdgeConfig, SessionMedia};

#[derive(Default)]
struct Recorded {
    heard: Vec<f32>,
    /// (width, height, mean luma of the top half, of the bottom half) of each frame seen.
    seen: Vec<(usize, usize, f64, f64)>,
    messages: Vec<ClientMessage>,
    presence: Vec<bool>,
}

/// The test's replica: a 440 Hz tone out, and a record of what comes in.
struct ToneMedia {
    phase: f64,
    recorded: Arc<Mutex<Recorded>>,
}

impl SessionMedia for ToneMedia {
    fn next_audio(&mut self) -> Option<Vec<f32>> {
        let frame =
            (0..960).map(|i| (0.3 * (self.phase + 2.0 * PI * 440.0 * i as f64 / 48_000.0).sin()) as f32).collect();
        self.phase = (self.phase + 2.0 * PI * 440.0 * 960.0 / 48_000.0) % (2.0 * PI);
        Some(frame)
    }
    /// 512×512: the top half dark, the bottom half bright (the client's camera is the other way round).
    fn next_video(&mut self) -> Option<VideoFrame> {
        let mut frame = VideoFrame::solid(512, 512, (40, 128, 128));
        frame.i420[256 * 512..512 * 512].fill(210);
        Some(frame)
    }
    fn seen(&mut self, frame: &VideoFrame) {
        let half = frame.width * frame.height / 2;
        let mean = |plane: &[u8]| plane.iter().map(|&v| f64::from(v)).sum::<f64>() / plane.len() as f64;
        let (top, bottom) = (mean(&frame.i420[..half]), mean(&frame.i420[half..2 * half]));
        self.recorded.lock().unwrap().seen.push((frame.width, frame.height, top, bottom));
    }
    fn heard(&mut self, pcm: &[f32]) {
        self.recorded.lock().unwrap().heard.extend_from_slice(pcm);
    }
    fn message(&mut self, message: ClientMessage) {
        self.recorded.lock().unwrap().messages.push(message);
    }
    fn presence(&mut self, connected: bool) {
        self.recorded.lock().unwrap().presence.push(connected);
    }
}

struct Fixture {
    edge: Arc<Edge>,
    base: String,
    recorded: Arc<Mutex<Recorded>>,
    app: TestApp,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&tete_server::db::Db::sqlite_url(dir.path())).await;
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let for_media = recorded.clone();
    let edge = Edge::new(
        EdgeConfig::default(),
        Some(Arc::new(move |_: tete_server::edge::Joining<'_>| {
            Box::new(ToneMedia { phase: 0.0, recorded: for_media.clone() }) as Box<dyn SessionMedia>
        })),
    );
    edge.follow(&app.api.host);
    let api = Api { edge: Some(edge.clone()), ..app.api.clone() };
    let router = tete_server::api::router(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Fixture { edge, base, recorded, app, _dir: dir }
}

impl Fixture {
    /// A new active conversation: (id, meeting token when `require_auth`).
    async fn conversation(&self, require_auth: bool) -> (String, Option<String>) {
        let body = json!({"replica_id": "rstockastronaut", "require_auth": require_auth});
        let (status, c) = self.app.call("POST", "/v2/conversations", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        (c["conversation_id"].as_str().unwrap().to_string(), c["meeting_token"].as_str().map(String::from))
    }

    fn whip(&self, id: &str) -> String {
        format!("{}/c/{id}/whip", self.base)
    }
}

/// An offer from str0m acting as the client: audio (send and receive) and a data channel.
fn offer(kinds: &[MediaKind]) -> String {
    let mut rtc = str0m::RtcConfig::new().build(Instant::now());
    let mut change = rtc.sdp_api();
    for &kind in kinds {
        change.add_media(kind, Direction::SendRecv, None, None, None);
    }
    change.add_channel("tete".into());
    let (offer, _pending) = change.apply().unwrap();
    offer.to_sdp_string()
}

async fn post(
    url: &str,
    content_type: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, String, String) {
    let mut request = reqwest::Client::new().post(url).header("content-type", content_type).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    (status, location, response.text().await.unwrap())
}

fn rms(pcm: &[f32]) -> f64 {
    (pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

fn zero_crossing_hz(pcm: &[f32], rate: f64) -> f64 {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
    crossings as f64 / 2.0 / (pcm.len() as f64 / rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_peer_talks_and_listens_over_whip() {
    let f = fixture().await;
    let (id, _) = f.conversation(false).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("mic.wav");
    common::tone_wav(&wav, 300.0, 6.0);
    let respond = json!({"message_type": "conversation", "event_type": "conversation.respond",
                         "conversation_id": id, "properties": {"text": "hello"}});
    let mut command = common::whip_client(&f.whip(&id), &wav, 3.0);
    command.args(["--message", &respond.to_string(), "--message", "{not json"]);
    let client = common::run_client(command).await.unwrap();
    println!("client: {client}");
    assert_eq!(client["join_status"], 201, "{client}");
    assert_eq!(client["connected"], true, "{client}");
    assert_eq!(client["leave_status"], 200, "{client}");

    // What the client heard: the replica's 440 Hz tone, continuous.
    assert!(client["audio_seconds"].as_f64().unwrap() > 2.0, "{client}");
    assert!(client["audio_rms"].as_f64().unwrap() > 0.1, "{client}");
    let hz = client["audio_hz"].as_f64().unwrap();
    assert!((hz - 440.0).abs() < 20.0, "client heard {hz} Hz");

    // What the server heard: the client's 300 Hz tone at 16 kHz.
    common::eventually(Duration::from_secs(5), || async { (f.edge.peers(&id) == 0).then_some(()) })
        .await
        .expect("the peer is gone after DELETE");
    {
        let recorded = f.recorded.lock().unwrap();
        let heard = &recorded.heard;
        assert!(heard.len() > 16_000 * 2, "server heard {} samples", heard.len());
        let steady = &heard[heard.len() / 4..];
        assert!(rms(steady) > 0.1, "server heard rms {}", rms(steady));
        let hz = zero_crossing_hz(steady, 16_000.0);
        assert!((hz - 300.0).abs() < 20.0, "server heard {hz} Hz");

        // Video both ways: the replica's frames decoded by the client, the
        // client's camera decoded here, a few frames a second, the right way up.
        let video = &client["video"];
        assert!(video["frames"].as_u64().unwrap() >= 25, "{video}");
        assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(512), Some(512)), "{video}");
        let (top, bottom) = (video["top_luma"].as_f64().unwrap(), video["bottom_luma"].as_f64().unwrap());
        assert!(top < 60.0 && bottom > 190.0, "client saw top {top}, bottom {bottom}");
        assert!(recorded.seen.len() >= 5, "server saw {} frames", recorded.seen.len());
        let (w, h, top, bottom) = *recorded.seen.last().unwrap();
        assert_eq!((w, h), (320, 240));
        assert!(top > 180.0 && bottom < 70.0, "server saw top {top}, bottom {bottom}");

        // The data channel: the valid message arrived, the malformed one was answered.
        assert_eq!(recorded.messages, [ClientMessage::Respond("hello".into())]);
        let replies: Vec<Value> = client["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| serde_json::from_str(m.as_str().unwrap()).unwrap())
            .collect();
        assert!(replies.iter().any(|r| r["event_type"] == "conversation.error"), "{replies:?}");
        assert_eq!(recorded.presence, [true, false]);
    }

    // The conversation heard the participant join: the replica is in the call.
    let joined = common::eventually(Duration::from_secs(5), || async {
        let (_, c) = f.app.call("GET", &format!("/v2/conversations/{id}?verbose=true"), None).await;
        c["events"].as_array()?.iter().any(|e| e["event_type"] == "system.replica_joined").then_some(())
    })
    .await;
    assert!(joined.is_some(), "no system.replica_joined after the peer connected");
}

#[tokio::test]
async fn bad_joins_are_refused_clearly() {
    let f = fixture().await;
    let (id, _) = f.conversation(false).await;
    let audio = offer(&[MediaKind::Audio]);

    let (status, _, body) = post(&f.whip(&id), "text/plain", None, audio.clone()).await;
    assert_eq!(status, 415, "{body}");
    let (status, _, _) = post(&f.whip("cnotthere"), "application/sdp", None, audio.clone()).await;
    assert_eq!(status, 404);
    for bad in ["v=0\r\nthis is not sdp", "", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"] {
        let (status, _, body) = post(&f.whip(&id), "application/sdp", None, bad).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let (status, _, body) = post(&f.whip(&id), "application/sdp", None, vec![0xff_u8, 0xfe, 0x00]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = post(&f.whip(&id), "application/sdp", None, offer(&[MediaKind::Video])).await;
    assert_eq!((status, body.contains("no audio")), (400, true), "{body}");

    // One participant per conversation; leaving frees the place.
    let (status, location, answer) = post(&f.whip(&id), "application/sdp", None, audio.clone()).await;
    assert_eq!(status, 201, "{answer}");
    assert!(answer.starts_with("v=0") && answer.contains("a=candidate") && answer.contains("127.0.0.1"), "{answer}");
    assert!(location.starts_with(&format!("/c/{id}/whip/")), "{location}");
    let (status, _, _) = post(&f.whip(&id), "application/sdp", None, audio.clone()).await;
    assert_eq!(status, 409);
    let client = reqwest::Client::new();
    let left = client.delete(format!("{}{location}", f.base)).send().await.unwrap().status();
    assert_eq!(left, 200);
    common::eventually(Duration::from_secs(5), || async { (f.edge.peers(&id) == 0).then_some(()) }).await.unwrap();
    assert_eq!(client.delete(format!("{}{location}", f.base)).send().await.unwrap().status(), 404);

    // An ended conversation is gone.
    let (status, _) = f.app.call("POST", &format!("/v2/conversations/{id}/end"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = post(&f.whip(&id), "application/sdp", None, audio.clone()).await;
    assert_eq!(status, 410);

    // A conversation that requires auth wants its meeting token.
    let (secure, token) = f.conversation(true).await;
    let token = token.expect("a meeting token");
    assert_eq!(post(&f.whip(&secure), "application/sdp", None, audio.clone()).await.0, 401);
    assert_eq!(post(&f.whip(&secure), "application/sdp", Some("wrong"), audio.clone()).await.0, 403);
    let (status, location, _) = post(&f.whip(&secure), "application/sdp", Some(&token), audio.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(client.delete(format!("{}{location}", f.base)).send().await.unwrap().status(), 200);
}

/// The last stats a meeting page logged (its `getStats` figures), once it
/// has decoded 25 frames and received more than `samples` audio samples,
/// or when `within` runs out.
fn page_stats(rx: &std::sync::mpsc::Receiver<Value>, within: Duration, samples: u64) -> Value {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(stats) = rx.recv_timeout(Duration::from_millis(500)) {
            last = stats;
            if last["framesDecoded"].as_u64().unwrap_or(0) >= 25
                && last["audioSamplesReceived"].as_u64().unwrap_or(0) > samples
            {
                break;
            }
        }
    }
    last
}

/// Headless Chromium opens the meeting page: its fake microphone (a WAV)
/// and camera reach the server, and it decodes the replica's video and
/// plays its audio (the page's `getStats` figures, logged to the console).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_joins_from_the_meeting_page() {
    let f = fixture().await;
    let (id, _) = f.conversation(false).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("mic.wav");
    common::tone_wav(&wav, 300.0, 10.0);
    let (status, page) = {
        let response = reqwest::get(format!("{}/c/{id}", f.base)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(page.contains("/whip") && !page.contains("https://"), "the page is self-contained");

    let (mut chromium, rx) = common::chromium(
        dir.path(),
        &[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            &format!("--use-file-for-fake-audio-capture={}", wav.display()),
            &format!("{}/c/{id}?raw_audio=1", f.base),
        ],
        "tete-stats",
    );
    let last = page_stats(&rx, Duration::from_secs(45), 48_000);
    // The browser vanishes without leaving: ICE consent stops, the edge notices.
    chromium.kill();
    let killed = Instant::now();
    let gone = common::eventually(Duration::from_secs(40), || async { (f.edge.peers(&id) == 0).then_some(()) }).await;
    println!("page: {last}; the vanished peer was dropped after {:.1} s", killed.elapsed().as_secs_f64());
    assert!(gone.is_some(), "a vanished browser is still a participant");
    assert_eq!(last["state"], "connected", "{last}");
    assert!(last["framesDecoded"].as_u64().unwrap_or(0) >= 25, "{last}");
    assert!(last["audioSamplesReceived"].as_u64().unwrap_or(0) > 48_000, "{last}");

    let recorded = f.recorded.lock().unwrap();
    let steady = &recorded.heard[recorded.heard.len() / 4..];
    assert!(recorded.heard.len() > 16_000, "server heard {} samples", recorded.heard.len());
    let hz = zero_crossing_hz(steady, 16_000.0);
    assert!(rms(steady) > 0.05 && (hz - 300.0).abs() < 30.0, "server heard rms {} at {hz} Hz", rms(steady));
    assert!(!recorded.seen.is_empty(), "server saw no camera frame");
    assert_eq!(recorded.presence, [true, false]);
    println!("server saw {} camera frames of {}x{}", recorded.seen.len(), recorded.seen[0].0, recorded.seen[0].1);
}

/// Headless Firefox (ESR, without Cisco's OpenH264 plug-in, so it offers
/// VP8, VP9 and AV1 but no H.264) opens the meeting page: the edge decodes
/// its VP8 camera and Opus microphone (Firefox's fake devices: a 1 kHz
/// tone), and Firefox decodes the replica's video, which went out in VP8,
/// and plays its audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_joins_from_the_meeting_page() {
    let f = fixture().await;
    let (id, _) = f.conversation(false).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut firefox, rx) = common::firefox(dir.path(), &format!("{}/c/{id}?raw_audio=1", f.base), "tete-stats");
    let last = page_stats(&rx, Duration::from_secs(60), 48_000);
    firefox.kill();
    let gone = common::eventually(Duration::from_secs(40), || async { (f.edge.peers(&id) == 0).then_some(()) }).await;
    println!("page: {last}");
    assert!(gone.is_some(), "a vanished browser is still a participant");
    assert_eq!(last["state"], "connected", "{last}");
    assert!(last["framesDecoded"].as_u64().unwrap_or(0) >= 25, "Firefox decoded too few VP8 frames: {last}");
    assert!(last["audioSamplesReceived"].as_u64().unwrap_or(0) > 48_000, "{last}");

    let recorded = f.recorded.lock().unwrap();
    assert!(recorded.heard.len() > 16_000, "server heard {} samples", recorded.heard.len());
    let steady = &recorded.heard[recorded.heard.len() / 4..];
    let hz = zero_crossing_hz(steady, 16_000.0);
    println!("server heard rms {:.3} at {hz:.0} Hz", rms(steady));
    assert!(rms(steady) > 0.01 && (hz - 1000.0).abs() < 50.0, "server heard rms {} at {hz} Hz", rms(steady));
    assert!(!recorded.seen.is_empty(), "server decoded no VP8 camera frame");
    let (w, h, top, bottom) = recorded.seen[recorded.seen.len() - 1];
    println!("server saw {} camera frames of {w}x{h} (mean luma {top:.0}/{bottom:.0})", recorded.seen.len());
    assert!(w >= 16 && h >= 16);
    assert_eq!(recorded.presence, [true, false]);
}

/// The meeting page embedded in an iframe of another origin (a page on
/// another 127.0.0.1 port that grants it camera, microphone and autoplay):
/// headless Chromium joins from inside the frame and decodes the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meeting_page_works_inside_an_iframe() {
    let f = fixture().await;
    let (id, _) = f.conversation(false).await;
    let embedding = format!(
        "<!doctype html><title>an embedding site</title>\
         <iframe src=\"{}/c/{id}?raw_audio=1\" allow=\"camera; microphone; autoplay\" width=640 height=480></iframe>",
        f.base
    );
    let site =
        axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(embedding) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site_url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, site).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("mic.wav");
    common::tone_wav(&wav, 300.0, 10.0);
    let (mut chromium, rx) = common::chromium(
        dir.path(),
        &[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            &format!("--use-file-for-fake-audio-capture={}", wav.display()),
            &site_url,
        ],
        "tete-stats",
    );
    let last = page_stats(&rx, Duration::from_secs(45), 0);
    chromium.kill();
    println!("framed page: {last}");
    assert_eq!(last["state"], "connected", "{last}");
    assert!(last["framesDecoded"].as_u64().unwrap_or(0) >= 25, "{last}");
    assert!(f.recorded.lock().unwrap().heard.len() > 8_000, "the framed page's microphone reached the server");
}
