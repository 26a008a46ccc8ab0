//! End to end: the served binary, a conversation with the stock replica
//! and a persona, and headless Chromium on the meeting page speaking a
//! LibriVox clip through its fake microphone. The page must get the
//! replica's answer — audio our own ASR hears as words, video whose mouth
//! moves, and the utterance events — and ending the call must deliver
//! `system.shutdown` and `application.transcription_ready`, with the
//! exchange in the transcript, to the webhook receiver.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::KEY;
use serde_json::{Value, json};

const CLIP: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav";

/// The microphone: 2 s of silence while the call connects, the clip, then
/// silence, as 48 kHz 16-bit WAV.
fn microphone(path: &std::path::Path) {
    let bytes = std::fs::read(CLIP).unwrap_or_else(|e| panic!("{CLIP}: {e} (apt-get install pocketsphinx-testdata)"));
    let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    let clip: Vec<f32> =
        bytes[data..].chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
    let mut pcm = vec![0.0; 2 * 48_000];
    pcm.extend(tete_engine::audio::resample(&clip, 16_000, 48_000).unwrap());
    pcm.extend(vec![0.0; 48_000 * 25]);
    common::wav_48k(path, &pcm);
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let response =
        reqwest::Client::new().post(format!("{base}{path}")).header("x-api-key", KEY).json(&body).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The mouth's box in a 64 × 64 thumbnail of the stock replica, from its
/// saved FaceMesh landmarks (lip corners 61 and 291, lips 0 and 17).
fn mouth_box() -> (usize, usize, usize, usize) {
    let dir = tete_engine::models::default_home().join("replicas").join("rstockastronaut");
    let replica = tete_engine::face::Replica::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let scale = 64.0 / replica.size as f32;
    let points = [61, 291, 0, 17].map(|i| replica.landmarks[i]);
    let (x0, x1) = points.iter().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p[0]), b.max(p[0])));
    let (y0, y1) = points.iter().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p[1]), b.max(p[1])));
    let px = |v: f32| ((v * scale).round().max(0.0) as usize).min(63);
    (px(x0), px(x1) + 1, px(y0 - 2.0 / scale), px(y1 + 2.0 / scale) + 1)
}

/// Mean absolute change of the mouth box from one thumbnail to the next.
fn mouth_motion(frames: &[&Vec<u8>], (x0, x1, y0, y1): (usize, usize, usize, usize)) -> f64 {
    let mut total = 0.0;
    let mut n = 0;
    for pair in frames.windows(2) {
        for y in y0..y1 {
            for x in x0..x1 {
                total += (f64::from(pair[1][y * 64 + x]) - f64::from(pair[0][y * 64 + x])).abs();
                n += 1;
            }
        }
    }
    total / n.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_talks_with_the_replica_and_the_call_ends_with_its_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let db = tete_server::db::Db::sqlite_url(dir.path());
    let server = common::serve(&[
        "--database-url",
        &db,
        "--upload-root",
        dir.path().to_str().unwrap(),
        "--perception-fps",
        "0",
        "--video-size",
        "256",
    ]);
    let hooks = common::Receiver::start(0).await;
    let persona = post(
        &server.base,
        "/v2/personas",
        json!({"persona_name": "Ada", "system_prompt": "You are Ada, a friendly assistant on a video call. Answer in one or two short sentences."}),
    )
    .await;
    let conversation = post(
        &server.base,
        "/v2/conversations",
        json!({"replica_id": "rstockastronaut", "persona_id": persona["persona_id"], "callback_url": hooks.url}),
    )
    .await;
    let id = conversation["conversation_id"].as_str().unwrap().to_string();
    let wav = dir.path().join("mic.wav");
    microphone(&wav);

    let (mut chromium, rx) = common::chromium_tagged(
        dir.path(),
        &[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            &format!("--use-file-for-fake-audio-capture={}%noloop", wav.display()),
            &format!("{}/c/{id}?raw_audio=1&debug=1", server.base),
        ],
    );
    let (mut events, mut audio, mut frames) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answered = None;
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) else { continue };
        let value = &line["value"];
        match line["tag"].as_str() {
            Some("tete-event") => {
                let message = value["message"].clone();
                let t = value["t"].as_f64().unwrap_or(0.0);
                if message["event_type"] == "conversation.replica.stopped_speaking" && answered.is_none() {
                    answered = Some(Instant::now());
                }
                events.push((t, message));
            }
            Some("tete-audio") => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(value["pcm"].as_str().unwrap()).unwrap();
                let pcm: Vec<f32> =
                    bytes.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
                audio.push((value["t"].as_f64().unwrap_or(0.0), pcm));
            }
            Some("tete-frame") => {
                let px = base64::engine::general_purpose::STANDARD.decode(value["px"].as_str().unwrap()).unwrap();
                frames.push((value["t"].as_f64().unwrap_or(0.0), px));
            }
            _ => {}
        }
        // A second after the answer ended, for the last audio to be logged.
        if answered.is_some_and(|at| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    let types: Vec<&str> = events.iter().filter_map(|(_, m)| m["event_type"].as_str()).collect();
    println!("events: {types:?}");
    assert!(answered.is_some(), "the replica never finished an answer: {types:?}");
    let utterance = |role: &str| {
        events
            .iter()
            .find(|(_, m)| m["event_type"] == "conversation.utterance" && m["properties"]["role"] == role)
            .map(|(_, m)| m["properties"]["text"].as_str().unwrap_or_default().to_string())
    };
    let user = utterance("user").expect("a user utterance event");
    let replica = utterance("replica").expect("a replica utterance event");
    println!("user: {user:?}\nreplica: {replica:?}");
    let clip_words = ["might", "even", "have", "been", "made", "amiable", "himself"];
    let user_words = words(&user);
    assert!(clip_words.iter().filter(|w| user_words.iter().any(|u| u == *w)).count() >= 4, "heard {user:?}");
    for event in [
        "conversation.user.started_speaking",
        "conversation.replica.started_speaking",
        "conversation.utterance.streaming",
    ] {
        assert!(types.contains(&event), "no {event}: {types:?}");
    }

    // The audio the page played while the replica spoke (each half second
    // is logged as it ends), heard by our own ASR.
    let started = events.iter().find(|(_, m)| m["event_type"] == "conversation.replica.started_speaking").unwrap().0;
    let stopped = events.iter().find(|(_, m)| m["event_type"] == "conversation.replica.stopped_speaking").unwrap().0;
    let audio: Vec<f32> = audio
        .iter()
        .filter(|(t, _)| *t >= started - 500.0 && *t <= stopped + 1500.0)
        .flat_map(|(_, pcm)| pcm.iter().copied())
        .collect();
    let asr =
        tete_engine::asr::Whisper::load(&common::model_dir("whisper-tiny.en"), &candle_core::Device::Cpu).unwrap();
    use tete_engine::asr::SpeechToText as _;
    let heard = asr.transcribe(&audio, &tete_engine::asr::TranscribeOptions::default()).unwrap().text;
    println!("the page played {:.1} s; ASR hears {heard:?}", audio.len() as f64 / 16_000.0);
    let (said, got) = (words(&replica), words(&heard));
    let shared = said.iter().filter(|w| got.contains(w)).count();
    assert!(shared >= 2 && shared * 2 >= said.len(), "the replica said {said:?}, the page played {got:?}");

    // The mouth moves more while the replica speaks than while it listens.
    let (speaking, listening): (Vec<_>, Vec<_>) = frames.iter().partition(|(t, _)| *t >= started && *t <= stopped);
    let speaking: Vec<&Vec<u8>> = speaking.iter().map(|(_, px)| px).collect();
    let listening: Vec<&Vec<u8>> = listening.iter().filter(|(t, _)| *t < started).map(|(_, px)| px).collect();
    let mouth = mouth_box();
    let (moving, still) = (mouth_motion(&speaking, mouth), mouth_motion(&listening, mouth));
    println!(
        "mouth motion {moving:.2} speaking ({} frames), {still:.2} listening ({} frames)",
        speaking.len(),
        listening.len()
    );
    assert!(speaking.len() >= 10 && listening.len() >= 10, "too few frames");
    assert!(moving > 1.5 * still && moving > 0.5, "the mouth does not move with the speech");

    // Ending the call: the webhooks, with the exchange in the transcript.
    post(&server.base, &format!("/v2/conversations/{id}/end"), json!({})).await;
    let received = hooks.wait_for(3, Duration::from_secs(30)).await;
    chromium.kill();
    let of = |event: &str| received.iter().find(|r| r.body["event_type"] == event).map(|r| r.body.clone());
    assert!(of("system.replica_joined").is_some());
    let shutdown = of("system.shutdown").expect("system.shutdown");
    assert_eq!(shutdown["properties"]["shutdown_reason"], "end_conversation_endpoint_hit");
    let transcript = of("application.transcription_ready").expect("application.transcription_ready");
    let lines = transcript["properties"]["transcript"].as_array().unwrap();
    let roles: Vec<&str> = lines.iter().filter_map(|l| l["role"].as_str()).collect();
    assert_eq!(roles[..3], ["system", "user", "assistant"], "{transcript}");
    assert_eq!(lines[1]["content"], user.as_str());
    assert_eq!(lines[2]["content"], replica.as_str());
}
