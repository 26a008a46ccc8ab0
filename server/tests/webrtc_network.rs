//! The edge's peer over a simulated network, in virtual time (no sockets,
//! no clock): a str0m client and the server-side [`Peer`] exchange
//! datagrams through a queue that delays, jitters, reorders and drops them.
//! With 10 % loss, up to 40 ms of jitter and garbage datagrams now and then,
//! the user's audio keeps flowing
//! to the engine (gaps concealed, late packets dropped, nothing stalls), the
//! replica's audio and video keep reaching the client and congestion control
//! lowers the video bitrate; when the client falls silent the peer closes
//! itself after [`SILENCE_TIMEOUT`]. And the offer handler takes hundreds of
//! damaged offers without a panic.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};
use tete_server::edge::peer::{
    ENGINE_RATE, FRAME, Peer, PeerEvent, Poll, SILENCE_TIMEOUT, VIDEO_BPS, VIDEO_START_BPS, VideoFrame,
};

const CLIENT: &str = "127.0.0.1:6000";
const SERVER: &str = "127.0.0.1:5000";

/// A datagram in flight, ordered by delivery time (earliest first).
struct Flight {
    at: Instant,
    seq: u64,
    to_server: bool,
    contents: Vec<u8>,
}

impl PartialEq for Flight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Flight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Network {
    queue: BinaryHeap<Flight>,
    rng: StdRng,
    /// Drop probability; 0 until both ends are connected, so the handshake
    /// (whose retransmission timers are seconds long) takes the same time
    /// on every run and the media time that follows is fixed.
    loss: f64,
    jitter_ms: u64,
    seq: u64,
    sent: u64,
    dropped: u64,
}

impl Network {
    fn send(&mut self, now: Instant, to_server: bool, contents: Vec<u8>) {
        self.sent += 1;
        if self.rng.random_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        let delay = Duration::from_millis(20 + self.rng.random_range(0..=self.jitter_ms));
        self.seq += 1;
        self.queue.push(Flight { at: now + delay, seq: self.seq, to_server, contents });
    }
}

fn tone_frame(hz: f64, start: u64) -> Vec<f32> {
    (0..FRAME as u64)
        .map(|i| (0.3 * (2.0 * std::f64::consts::PI * hz * (start + i) as f64 / 48_000.0).sin()) as f32)
        .collect()
}

#[test]
fn audio_survives_loss_jitter_and_reordering() {
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let start = Instant::now();
    let mut now = start;

    let mut client = RtcConfig::new().build(now);
    client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
    let mut change = client.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    change.add_channel("tete".into());
    let (offer, pending) = change.apply().unwrap();
    let (mut server, answer) = Peer::accept(&offer.to_sdp_string(), server_addr, now).unwrap();
    client.sdp_api().accept_answer(pending, str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    let mut net = Network {
        queue: BinaryHeap::new(),
        rng: StdRng::seed_from_u64(7),
        loss: 0.0,
        jitter_ms: 40,
        seq: 0,
        sent: 0,
        dropped: 0,
    };
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let (mut client_wait, mut server_wait);
    let (mut connected, mut client_connected) = (false, false);
    let mut heard: Vec<(Instant, usize)> = Vec::new();
    let mut client_received = 0usize;
    let mut video_received = 0usize;
    let mut written = 0u64;
    let mut garbage = 0u32;
    let mut sent_frames = 0u64;
    let media = Duration::from_secs(6);
    let mut end = start + Duration::from_secs(30);

    while now < end {
        // Each side says everything it has to say.
        loop {
            match client.poll_output().unwrap() {
                Output::Timeout(at) => {
                    client_wait = at;
                    break;
                }
                Output::Transmit(t) => net.send(now, true, t.contents.to_vec()),
                Output::Event(Event::Connected) => client_connected = true,
                Output::Event(Event::MediaData(data)) if data.params.spec().codec == Codec::H264 => {
                    video_received += data.data.len();
                }
                Output::Event(Event::MediaData(data)) => client_received += data.data.len(),
                Output::Event(_) => {}
            }
        }
        loop {
            match server.poll() {
                Poll::Wait(at) => {
                    server_wait = at;
                    break;
                }
                Poll::Transmit { contents, .. } => net.send(now, false, contents),
                Poll::Event(PeerEvent::Connected) => connected = true,
                Poll::Event(PeerEvent::Audio(pcm)) => heard.push((now, pcm.len())),
                Poll::Event(PeerEvent::Closed) => panic!("the peer closed under loss"),
                Poll::Event(_) => {}
            }
        }
        if connected && client_connected && net.loss == 0.0 {
            net.loss = 0.10;
            end = now + media;
        }
        // Media every 20 ms once both ends are up.
        let frame_due = start + Duration::from_millis(20 * (sent_frames + 1));
        let next = [client_wait, server_wait, frame_due, net.queue.peek().map_or(frame_due, |f| f.at)]
            .into_iter()
            .min()
            .unwrap()
            .max(now + Duration::from_micros(100));
        now = next;
        if now >= frame_due {
            if connected && client_connected {
                let samples = sent_frames * FRAME as u64;
                let mut packet = [0u8; 1500];
                let n = encoder.encode_float(&tone_frame(300.0, samples), &mut packet).unwrap();
                let writer = client.writer(mid).unwrap();
                let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Opus).unwrap().pt();
                writer
                    .write(pt, now, MediaTime::new(samples, Frequency::FORTY_EIGHT_KHZ), packet[..n].to_vec())
                    .unwrap();
                written += 1;
                server.send_audio(now, &tone_frame(440.0, samples)).unwrap();
                if sent_frames.is_multiple_of(2) {
                    let mut frame = VideoFrame::solid(128, 128, (40, 128, 128));
                    let bar = (sent_frames as usize * 2) % 128;
                    frame.i420.chunks_mut(128).take(128).for_each(|row| row[bar] = 230);
                    server.send_video(now, &frame).unwrap();
                }
            }
            sent_frames += 1;
        }
        // Garbage from the peer's address now and then: random bytes, some
        // shaped like RTP (version 2) or DTLS (content type 23).
        if net.rng.random_bool(0.02) {
            let mut junk: Vec<u8> = (0..net.rng.random_range(1..300)).map(|_| net.rng.random()).collect();
            match net.rng.random_range(0..3) {
                0 => junk[0] = 0x80 | (junk[0] & 0x3f),
                1 => junk[0] = 23,
                _ => {}
            }
            server.receive(now, client_addr, &junk);
            garbage += 1;
        }
        while net.queue.peek().is_some_and(|f| f.at <= now) {
            let flight = net.queue.pop().unwrap();
            if flight.to_server {
                server.receive(now, client_addr, &flight.contents);
            } else {
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: server_addr,
                        destination: client_addr,
                        contents: flight.contents.as_slice().try_into().unwrap(),
                    },
                );
                client.handle_input(input).unwrap();
            }
        }
        if now >= client_wait {
            client.handle_input(Input::Timeout(now)).unwrap();
        }
        if now >= server_wait {
            server.tick(now);
        }
    }

    assert!(connected && client_connected, "no connection through 10 % loss");
    assert!(net.dropped > 20, "the network dropped {} of {}", net.dropped, net.sent);
    let total: usize = heard.iter().map(|&(_, n)| n).sum();
    assert!(!heard.is_empty(), "the server heard nothing");
    assert!(garbage > 50, "only {garbage} garbage datagrams");
    println!(
        "dropped {} of {} datagrams; heard {:.2} s of the {:.2} s of audio sent; client got {client_received} bytes",
        net.dropped,
        net.sent,
        total as f64 / f64::from(ENGINE_RATE),
        written as f64 * 0.02
    );
    // Losses are concealed and late packets dropped: the engine gets as much
    // audio as time passed, no less and no more.
    let heard_seconds = total as f64 / f64::from(ENGINE_RATE);
    let sent_seconds = written as f64 * 0.02;
    assert!(
        heard_seconds > 0.85 * sent_seconds && heard_seconds < sent_seconds + 0.05,
        "heard {heard_seconds} s of the {sent_seconds} s sent"
    );
    // Nothing stalled: audio kept arriving to the end.
    let last = heard.last().unwrap().0;
    assert!(end - last < Duration::from_millis(300));
    assert!(client_received > 4_000, "the client received {client_received} bytes of the replica's audio");
    let bitrate = server.video_bitrate().expect("the video encoder runs");
    println!("video: the client received {video_received} bytes; the encoder runs at {bitrate} bit/s");
    assert!(video_received > 4_000 && VIDEO_BPS.contains(&bitrate));
    assert!(bitrate < VIDEO_START_BPS, "10 % loss should lower the video bitrate from its start");

    // The client vanishes (no datagram any more): the peer closes itself.
    let vanished = now;
    let closed_at = loop {
        match server.poll() {
            Poll::Event(PeerEvent::Closed) => break now,
            Poll::Wait(at) => {
                assert!(now - vanished < Duration::from_secs(30), "a silent peer is never closed");
                now = at.max(now + Duration::from_millis(1));
                server.tick(now);
            }
            _ => {}
        }
    };
    let after = closed_at - vanished;
    println!("the silent peer closed after {:.1} s of virtual time", after.as_secs_f64());
    assert!(after >= SILENCE_TIMEOUT - Duration::from_millis(300) && after <= SILENCE_TIMEOUT + Duration::from_secs(1));
}

#[test]
fn damaged_offers_never_panic() {
    let mut client = RtcConfig::new().build(Instant::now());
    let mut change = client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    change.add_channel("tete".into());
    let offer = change.apply().unwrap().0.to_sdp_string();
    let local: SocketAddr = SERVER.parse().unwrap();
    assert!(Peer::accept(&offer, local, Instant::now()).is_ok());
    let mut rng = StdRng::seed_from_u64(11);
    let lines: Vec<&str> = offer.split_inclusive('\n').collect();
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..600 {
        let damaged = match round % 4 {
            // Cut anywhere.
            0 => offer.chars().take(rng.random_range(0..offer.len())).collect::<String>(),
            // Flip bytes (kept valid UTF-8 by working on ASCII).
            1 => {
                let mut bytes = offer.clone().into_bytes();
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] = rng.random_range(0x20..0x7f);
                }
                String::from_utf8(bytes).unwrap()
            }
            // Drop, duplicate or swap lines.
            2 => {
                let mut l = lines.clone();
                let i = rng.random_range(0..l.len());
                match rng.random_range(0..3) {
                    0 => drop(l.remove(i)),
                    1 => l.insert(i, lines[rng.random_range(0..lines.len())]),
                    _ => l.swap(i, rng.random_range(0..lines.len())),
                }
                l.concat()
            }
            // Hostile values in attribute lines.
            _ => {
                let mut l = lines.clone();
                let i = rng.random_range(0..l.len());
                let hostile = [
                    "a=rtpmap:4294967296 opus/48000/2\r\n",
                    "m=audio 99999999 RTP 111\r\n",
                    "a=ssrc:-1 cname:x\r\n",
                    "a=candidate:1 1 udp 1 ::::: 9 typ host\r\n",
                    "a=fmtp:111 =;=;=\r\n",
                    "a=mid:\r\n",
                    "a=group:BUNDLE\r\n",
                    "c=IN IP4 999.1.1.1\r\n",
                ];
                l.insert(i, hostile[rng.random_range(0..hostile.len())]);
                l.concat()
            }
        };
        match Peer::accept(&damaged, local, Instant::now()) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    println!("600 damaged offers: {accepted} accepted, {refused} refused with an error");
    assert!(refused > 50, "the damage must be noticed sometimes");
}
