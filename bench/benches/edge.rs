//! The WebRTC edge's cost per session, in process (a str0m client and the
//! server-side peer joined by an in-memory network, no sockets):
//! time from the offer to the first decoded video frame at the client,
//! H.264 encode + packetize time per 512×512 frame (openh264, one thread),
//! Opus encode + packetize per 20 ms of audio, and what a session's media
//! out costs at 30 fps in share of one core.
//!
//! The frames are a moving test pattern (a gradient with a sliding bar), so
//! the encoder sees motion as it would with a talking head.
//!
//! Run: `cargo bench -p tete-bench --bench edge`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tete_server::edge::peer::{FRAME, Peer, PeerEvent, Poll, VideoFrame};

const SIZE: usize = 512;
const FRAMES: usize = 300;

fn pattern(n: usize) -> VideoFrame {
    let mut frame = VideoFrame::solid(SIZE, SIZE, (0, 128, 128));
    for y in 0..SIZE {
        for x in 0..SIZE {
            let bar = (x + 4 * n) % SIZE < 48;
            frame.i420[y * SIZE + x] = if bar { 235 } else { ((x + y) / 4) as u8 };
        }
    }
    frame
}

/// Moves every datagram between the two, with no delay, until both wait.
fn exchange(
    client: &mut Rtc,
    server: &mut Peer,
    now: Instant,
    decoder: &mut openh264::decoder::Decoder,
) -> Option<Instant> {
    let (client_addr, server_addr): (SocketAddr, SocketAddr) =
        ("127.0.0.1:6000".parse().unwrap(), "127.0.0.1:5000".parse().unwrap());
    let mut decoded = None;
    loop {
        let mut moved = false;
        while let Ok(output) = client.poll_output() {
            match output {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    server.receive(now, client_addr, &t.contents);
                    moved = true;
                }
                Output::Event(Event::MediaData(data)) if data.params.spec().codec == str0m::format::Codec::H264 => {
                    if decoded.is_none() && matches!(decoder.decode(&data.data), Ok(Some(_))) {
                        decoded = Some(Instant::now());
                    }
                }
                Output::Event(_) => {}
            }
        }
        loop {
            match server.poll() {
                Poll::Wait(_) => break,
                Poll::Transmit { contents, .. } => {
                    let receive = Receive {
                        proto: Protocol::Udp,
                        source: server_addr,
                        destination: client_addr,
                        contents: contents.as_slice().try_into().unwrap(),
                    };
                    client.handle_input(Input::Receive(now, receive)).unwrap();
                    moved = true;
                }
                Poll::Event(PeerEvent::Closed) => panic!("the peer closed"),
                Poll::Event(_) => {}
            }
        }
        if !moved {
            return decoded;
        }
    }
}

fn main() {
    let started = Instant::now();
    let mut client = RtcConfig::new().build(started);
    client.add_local_candidate(Candidate::host("127.0.0.1:6000".parse().unwrap(), "udp").unwrap());
    let mut change = client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let (mut server, answer) =
        Peer::accept(&offer.to_sdp_string(), "127.0.0.1:5000".parse().unwrap(), Instant::now()).unwrap();
    client.sdp_api().accept_answer(pending, str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    let mut decoder = openh264::decoder::Decoder::new().unwrap();

    // Handshake, then frames until the client decodes one.
    let mut first_decoded = None;
    let mut n = 0;
    while first_decoded.is_none() && started.elapsed() < Duration::from_secs(20) {
        let now = Instant::now();
        client.handle_input(Input::Timeout(now)).unwrap();
        server.tick(now);
        server.send_video(now, &pattern(n)).unwrap();
        n += 1;
        first_decoded = exchange(&mut client, &mut server, now, &mut decoder);
    }
    let first = first_decoded.expect("no frame decoded within 20 s").duration_since(started);
    println!(
        "offer to first decoded 512x512 frame at the client: {:.1} ms (in process, no network delay)",
        first.as_secs_f64() * 1e3
    );

    let mut video = Vec::with_capacity(FRAMES);
    for i in 0..FRAMES {
        let frame = pattern(n + i);
        let now = Instant::now();
        server.send_video(now, &frame).unwrap();
        while let Poll::Transmit { .. } = server.poll() {}
        video.push(now.elapsed());
        exchange(&mut client, &mut server, Instant::now(), &mut decoder);
    }
    let mut audio = Vec::with_capacity(FRAMES);
    let tone: Vec<f32> = (0..FRAME).map(|i| 0.3 * (i as f32 * 0.057).sin()).collect();
    for _ in 0..FRAMES {
        let now = Instant::now();
        server.send_audio(now, &tone).unwrap();
        while let Poll::Transmit { .. } = server.poll() {}
        audio.push(now.elapsed());
        exchange(&mut client, &mut server, Instant::now(), &mut decoder);
    }
    let stats = |mut d: Vec<Duration>| {
        d.sort();
        let mean = d.iter().sum::<Duration>().as_secs_f64() / d.len() as f64;
        (mean * 1e3, d[d.len() * 95 / 100].as_secs_f64() * 1e3)
    };
    let (video_mean, video_p95) = stats(video);
    let (audio_mean, audio_p95) = stats(audio);
    println!("H.264 encode + packetize, 512x512: mean {video_mean:.2} ms, p95 {video_p95:.2} ms per frame");
    println!("Opus encode + packetize, 20 ms: mean {audio_mean:.3} ms, p95 {audio_p95:.3} ms per frame");
    let core = (video_mean * 30.0 + audio_mean * 50.0) / 1e3;
    println!("media out per session at 30 fps: {:.1} % of one core", core * 100.0);
}
