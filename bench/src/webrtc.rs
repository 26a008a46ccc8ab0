//! The WebRTC client of the latency harness: `tete serve` in this process
//! on 127.0.0.1, and for each session a str0m peer on a loopback UDP
//! socket that joins a conversation over WHIP as a browser does, speaks
//! each utterance as Opus in real time and times the replica's answer as
//! it arrives: its audio decoded from Opus, its events from the data
//! channel. What the client sees is all it reports: utterance-to-utterance
//! at the client, when the turn's user utterance event arrives (end of
//! turn and final transcript), and audio packets that came over 60 ms
//! after the one before (the server sends a packet every 20 ms, silence
//! included). Underruns inside the server are not visible from here.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use crate::harness::{REPLY_LIMIT, Report, Turn, between, cpu_time, rss, speech_end};
use crate::in_process::PERSONA;

const KEY: &str = "bench-key";
/// 20 ms at 48 kHz.
const FRAME: usize = 960;
/// The longest a turn may take to be answered and spoken.
const TURN_LIMIT: Duration = Duration::from_secs(20);
/// A received frame this loud is the replica speaking.
const AUDIBLE: f32 = 0.02;
/// An audio packet this long after the one before came late.
const LATE: Duration = Duration::from_millis(60);

/// `tete serve` running in this process.
pub struct Served {
    pub base: String,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts the server on a free loopback port (CPU, its own database,
    /// `max_sessions` calls, perception at `perception_fps`), and waits
    /// until it is ready.
    pub fn start(max_sessions: usize, perception_fps: f64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let bind = format!("127.0.0.1:{port}");
        let database = tete_server::db::Db::sqlite_url(dir.path());
        let args: Vec<String> = [
            "tete",
            "--database-url",
            &database,
            "serve",
            "--device",
            "cpu",
            "--bind",
            &bind,
            "--api-key",
            KEY,
            "--upload-root",
            dir.path().to_str().expect("a UTF-8 path"),
            "--max-sessions",
            &max_sessions.to_string(),
            "--perception-fps",
            &perception_fps.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cli = tete_server::cli::Cli::parse_from(args);
        std::thread::spawn(move || {
            if let Err(e) = tete_server::cli::run(cli) {
                eprintln!("tete serve stopped: {e:#}");
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let base = format!("http://{bind}");
        let ready = runtime.block_on(async {
            for _ in 0..600 {
                if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
                    && r.status().is_success()
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            false
        });
        assert!(ready, "tete serve was not ready within 5 minutes");
        Self { base, runtime, _dir: dir }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(format!("{}{path}", self.base))
                .header("x-api-key", KEY)
                .json(&body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        })
    }

    /// Posts an SDP offer to `url`: the answer.
    fn whip(&self, url: &str, offer: String) -> String {
        self.runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/sdp")
                .body(offer)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert_eq!(status.as_u16(), 201, "WHIP {url}: {text}");
            text
        })
    }
}

/// Runs `sessions` calls at once against `served`, each saying every one of `utterances`.
pub fn run(served: &Served, sessions: usize, utterances: &[(String, Vec<f32>)]) -> Report {
    let persona = served.post("/v2/personas", json!({"persona_name": "Ada", "system_prompt": PERSONA}));
    let persona = persona["persona_id"].as_str().expect("a persona id").to_string();
    let (cpu0, rss0, wall0) = (cpu_time(), rss(), Instant::now());
    let calls: Vec<(Vec<Option<Turn>>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..sessions)
            .map(|k| {
                let persona = persona.as_str();
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(700 * k as u64));
                    one_call(served, persona, utterances)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a call thread")).collect()
    });
    let (cpu, wall) = (cpu_time().saturating_sub(cpu0), wall0.elapsed());
    let mut report = Report {
        client: "WebRTC",
        sessions,
        cpu_share_per_session: cpu.as_secs_f64() / wall.as_secs_f64() / sessions as f64,
        rss_per_session_mb: rss().saturating_sub(rss0) as f64 / sessions as f64 / 1e6,
        ..Default::default()
    };
    let mut late = 0;
    for (turns, late_packets) in calls {
        late += late_packets;
        for turn in turns {
            match turn {
                Some(turn) => report.turns.push(turn),
                None => report.unanswered += 1,
            }
        }
    }
    report.late_packets = Some(late);
    report
}

/// A str0m peer on a loopback socket.
struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio: Mid,
    channel: Option<ChannelId>,
    connected: bool,
    encoder: opus::Encoder,
    decoder: opus::Decoder,
    sent: u64,
    started: Instant,
    last_audio: Option<Instant>,
    late_packets: u64,
}

/// What arrived over the socket and the peer since last taken, each with
/// the instant its datagrams were read (the socket is read every 2 ms or
/// sooner, so that is when it arrived to within a pass).
#[derive(Default)]
struct Arrived {
    /// Decoded 20 ms frames of the replica's audio.
    audio: Vec<(Instant, Vec<f32>)>,
    events: Vec<(Instant, Value)>,
}

impl Client {
    fn join(served: &Served, url: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
        socket.set_nonblocking(true).expect("a non-blocking socket");
        let local = socket.local_addr().expect("its address");
        let started = Instant::now();
        let mut rtc = RtcConfig::new().clear_codecs().enable_opus(true, false).build(started);
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("a host candidate"));
        let mut change = rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        change.add_channel("tete".into());
        let (offer, pending) = change.apply().expect("an offer");
        let answer = served.whip(&format!("{url}/whip"), offer.to_sdp_string());
        let answer = SdpAnswer::from_sdp_string(&answer).expect("an SDP answer");
        rtc.sdp_api().accept_answer(pending, answer).expect("the answer accepted");
        Self {
            rtc,
            socket,
            local,
            audio,
            channel: None,
            connected: false,
            encoder: opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("Opus"),
            decoder: opus::Decoder::new(48_000, opus::Channels::Mono).expect("Opus"),
            sent: 0,
            started,
            last_audio: None,
            late_packets: 0,
        }
    }

    /// Moves datagrams both ways and takes what arrived, until the peer waits.
    fn pump(&mut self, arrived: &mut Arrived) {
        let now = Instant::now();
        let mut buf = [0u8; 2000];
        while let Ok((n, source)) = self.socket.recv_from(&mut buf) {
            let Ok(contents) = buf[..n].try_into() else { continue };
            let receive = Receive { proto: Protocol::Udp, source, destination: self.local, contents };
            let _ = self.rtc.handle_input(Input::Receive(now, receive));
        }
        let _ = self.rtc.handle_input(Input::Timeout(now));
        while let Ok(output) = self.rtc.poll_output() {
            match output {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::ChannelOpen(id, _)) => self.channel = Some(id),
                Output::Event(Event::MediaData(data)) if data.mid == self.audio => {
                    if self.last_audio.is_some_and(|last| now - last > LATE) {
                        self.late_packets += 1;
                    }
                    self.last_audio = Some(now);
                    let mut pcm = vec![0.0f32; 5760];
                    if let Ok(n) = self.decoder.decode_float(&data.data, &mut pcm, false) {
                        pcm.truncate(n);
                        arrived.audio.push((now, pcm));
                    }
                }
                Output::Event(Event::ChannelData(d)) => {
                    if let Ok(event) = serde_json::from_slice::<Value>(&d.data) {
                        arrived.events.push((now, event));
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Sends a message on the data channel.
    fn send(&mut self, message: &Value) {
        let Some(mut channel) = self.channel.and_then(|id| self.rtc.channel(id)) else { return };
        let _ = channel.write(false, message.to_string().as_bytes());
    }

    /// Sends 20 ms of the microphone (48 kHz).
    fn speak(&mut self, frame: &[f32]) {
        let Some(writer) = self.rtc.writer(self.audio) else { return };
        let Some(pt) = writer.payload_params().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt()) else {
            return;
        };
        let mut packet = [0u8; 1500];
        let Ok(n) = self.encoder.encode_float(frame, &mut packet) else { return };
        let wallclock = self.started + Duration::from_micros(self.sent * 20_000);
        let rtp = MediaTime::new(self.sent * FRAME as u64, str0m::media::Frequency::FORTY_EIGHT_KHZ);
        let _ = writer.write(pt, wallclock, rtp, packet[..n].to_vec());
        self.sent += 1;
    }
}

/// One call: join, a second of silence, every utterance, leave. Its
/// turns, and its late audio packets.
fn one_call(served: &Served, persona: &str, utterances: &[(String, Vec<f32>)]) -> (Vec<Option<Turn>>, u64) {
    let conversation =
        served.post("/v2/conversations", json!({"replica_id": "rstockastronaut", "persona_id": persona}));
    let url = conversation["conversation_url"].as_str().expect("a conversation url").to_string();
    let id = conversation["conversation_id"].as_str().expect("a conversation id").to_string();
    let mut client = Client::join(served, &url);
    let mut arrived = Arrived::default();
    let joined = Instant::now() + Duration::from_secs(10);
    while !client.connected && Instant::now() < joined {
        client.pump(&mut arrived);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(client.connected, "the call did not connect within 10 s");
    let mut clock = Clock { start: Instant::now(), frame: 0 };
    for _ in 0..50 {
        clock.frame(&mut client, &[0.0; FRAME], &mut arrived);
    }
    let turns = utterances
        .iter()
        .map(|(name, pcm)| {
            let pcm = tete_engine::audio::resample(pcm, 16_000, 48_000).expect("resampling to 48 kHz");
            one_turn(&mut client, &mut clock, name, &pcm)
        })
        .collect();
    let _ = served.post(&format!("/v2/conversations/{id}/end"), json!({}));
    (turns, client.late_packets)
}

/// Real time, 20 ms a frame.
struct Clock {
    start: Instant,
    frame: u64,
}

impl Clock {
    /// Waits for the next frame's time (moving datagrams meanwhile) and
    /// sends `heard`: the instant it went.
    fn frame(&mut self, client: &mut Client, heard: &[f32], arrived: &mut Arrived) -> Instant {
        let due = self.start + Duration::from_millis(20 * self.frame);
        self.frame += 1;
        loop {
            client.pump(arrived);
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(2)));
        }
        client.speak(heard);
        Instant::now()
    }
}

/// One utterance and its answer, as the client saw them.
fn one_turn(client: &mut Client, clock: &mut Clock, name: &str, pcm: &[f32]) -> Option<Turn> {
    let end = speech_end(pcm);
    let mut arrived = Arrived::default();
    let (mut speech_end_at, mut user_utterance, mut first_audio) = (None, None, None);
    let (mut heard, mut reply) = (None, None);
    let (mut speaking, mut stopped, mut cut) = (false, false, false);
    let mut sample = 0;
    let limit = Instant::now() + TURN_LIMIT + Duration::from_secs_f64(pcm.len() as f64 / 48_000.0);
    while Instant::now() < limit && !(stopped && sample > pcm.len()) {
        let mut frame = pcm.get(sample..(sample + FRAME).min(pcm.len())).unwrap_or_default().to_vec();
        frame.resize(FRAME, 0.0);
        let now = clock.frame(client, &frame, &mut arrived);
        sample += FRAME;
        if speech_end_at.is_none() && sample >= end {
            speech_end_at = Some(now);
        }
        let Some(ended) = speech_end_at else {
            arrived = Arrived::default();
            continue;
        };
        for (at, event) in arrived.events.drain(..).filter(|(at, _)| *at >= ended) {
            match event["event_type"].as_str().unwrap_or_default() {
                "conversation.utterance" if event["properties"]["role"] == "user" => {
                    user_utterance.get_or_insert(at);
                    heard = event["properties"]["text"].as_str().map(str::to_string);
                }
                "conversation.utterance" if event["properties"]["role"] == "replica" => {
                    reply = event["properties"]["text"].as_str().map(str::to_string);
                }
                "conversation.replica.started_speaking" => speaking = true,
                "conversation.replica.stopped_speaking" if speaking => stopped = true,
                _ => {}
            }
        }
        let mut audio = arrived.audio.drain(..).filter(|(at, _)| *at >= ended);
        if let Some((at, _)) = audio.find(|(_, pcm)| pcm.iter().any(|s| s.abs() > AUDIBLE)) {
            first_audio.get_or_insert(at);
        }
        if !cut && speaking && !stopped && first_audio.is_some_and(|first| now - first > REPLY_LIMIT) {
            client.send(&json!({"message_type": "conversation", "event_type": "conversation.interrupt"}));
            cut = true;
        }
    }
    Some(Turn {
        utterance: name.to_string(),
        heard,
        reply,
        endpoint: between(speech_end_at, user_utterance),
        utterance_to_utterance: between(speech_end_at, Some(first_audio?)),
        ..Default::default()
    })
}
