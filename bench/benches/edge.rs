//! The WebRTC edge's cost per session, in process (a str0m client and the
//! server-side peer joined by an in-memory network, no sockets), for a
//! client that takes H.264 (Chromium) and one that takes only VP8 (Firefox
//! without OpenH264): time from the offer to the first decoded video frame
//! at the client, video encode + packetize time per 512×512 frame (openh264
//! or libvpx, one thread), the same for a recorded VP8 call (which also
//! encodes H.264 for the file), Opus encode + packetize per 20 ms of audio,
//! and what a session's media out costs at 30 fps in share of one core.
//! Then libvpx's real-time speed settings side by side (`cpu-used`), the
//! figures behind [`VP8_CPU_USED`].
//!
//! The frames are a moving test pattern (a gradient with a sliding bar), so
//! the encoder sees motion as it would with a talking head.
//!
//! Run: `cargo bench -p tete-bench --bench edge` (under `cargo test` it
//! makes a short run of a few frames).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tete_kernels::vp8;
use tete_server::edge::peer::{FRAME, Peer, PeerEvent, Poll, VideoCodec, VideoFrame};
use tete_server::edge::video::VP8_CPU_USED;

const SIZE: usize = 512;

/// Frame `n` of the test video: a textured picture (two waves and fine
/// grain) panning 2 pixels a frame, with a bar sliding across it faster,
/// so the encoder has detail to predict and motion to search.
fn pattern(n: usize) -> VideoFrame {
    let mut frame = VideoFrame::solid(SIZE, SIZE, (0, 128, 128));
    for y in 0..SIZE {
        for x in 0..SIZE {
            let bar = (x + 4 * n) % SIZE < 48;
            let (u, v) = ((x + 2 * n) as f32, y as f32);
            let grain = ((u as u32).wrapping_mul(2_654_435_761) ^ (y as u32).wrapping_mul(40_503)) >> 28;
            let texture = 128.0 + 50.0 * (u * 0.05 + v * 0.03).sin() + 25.0 * (u * 0.21 - v * 0.17).sin();
            frame.i420[y * SIZE + x] = if bar { 235 } else { (texture + grain as f32).clamp(16.0, 235.0) as u8 };
        }
    }
    frame
}

/// Moves every datagram between the two, with no delay, until both wait.
fn exchange(client: &mut Rtc, server: &mut Peer, now: Instant, decoder: &mut Decoder) -> Option<Instant> {
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
                Output::Event(Event::MediaData(data)) => {
                    if decoded.is_none() && decoder.decodes(data.params.spec().codec, &data.data) {
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

/// The client's video decoder, for the codec it offered.
enum Decoder {
    H264(openh264::decoder::Decoder),
    Vp8(vp8::Decoder),
}

impl Decoder {
    /// Whether `data` decoded to a picture.
    fn decodes(&mut self, codec: Codec, data: &[u8]) -> bool {
        match (self, codec) {
            (Decoder::H264(d), Codec::H264) => matches!(d.decode(data), Ok(Some(_))),
            (Decoder::Vp8(d), Codec::Vp8) => matches!(d.decode(data), Ok(Some(_))),
            _ => false,
        }
    }
}

fn stats(mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let mean = d.iter().sum::<Duration>().as_secs_f64() / d.len() as f64;
    (mean * 1e3, d[d.len() * 95 / 100].as_secs_f64() * 1e3)
}

/// One session with a client that offers only `codec` for video.
fn session(codec: VideoCodec, frames: usize) {
    let started = Instant::now();
    let config = RtcConfig::new().clear_codecs().enable_opus(true, false);
    let (config, mut decoder) = match codec {
        VideoCodec::H264 => (config.enable_h264(true), Decoder::H264(openh264::decoder::Decoder::new().unwrap())),
        VideoCodec::Vp8 => (config.enable_vp8(true), Decoder::Vp8(vp8::Decoder::new().unwrap())),
    };
    let mut client = config.build(started);
    client.add_local_candidate(Candidate::host("127.0.0.1:6000".parse().unwrap(), "udp").unwrap());
    let mut change = client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let (mut server, answer) =
        Peer::accept(&offer.to_sdp_string(), "127.0.0.1:5000".parse().unwrap(), Instant::now()).unwrap();
    client.sdp_api().accept_answer(pending, str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

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
    assert_eq!(server.video_codec(), Some(codec));
    println!("{codec:?} client:");
    println!(
        "  offer to first decoded 512x512 frame at the client: {:.1} ms (in process, no network delay)",
        first.as_secs_f64() * 1e3
    );

    // From here the peers run on a virtual clock, one frame interval per
    // frame, so the pacer releases what was written (they read no clock);
    // only the encode + packetize work is timed.
    let mut clock = Instant::now();
    let mut step = |server: &mut Peer, client: &mut Rtc, decoder: &mut Decoder, interval: Duration| {
        clock += interval;
        client.handle_input(Input::Timeout(clock)).unwrap();
        server.tick(clock);
        exchange(client, server, clock, decoder);
        clock
    };
    let mut video = Vec::with_capacity(frames);
    let mut recorded = Vec::with_capacity(frames);
    for i in 0..2 * frames {
        let frame = pattern(n + i);
        let at = step(&mut server, &mut client, &mut decoder, Duration::from_millis(40));
        server.record_video(i >= frames);
        let started = Instant::now();
        server.send_video(at, &frame).unwrap();
        while let Poll::Transmit { .. } = server.poll() {}
        if i < frames { &mut video } else { &mut recorded }.push(started.elapsed());
    }
    server.record_video(false);
    let mut audio = Vec::with_capacity(frames);
    let tone: Vec<f32> = (0..FRAME).map(|i| 0.3 * (i as f32 * 0.057).sin()).collect();
    for _ in 0..frames {
        let at = step(&mut server, &mut client, &mut decoder, Duration::from_millis(20));
        let started = Instant::now();
        server.send_audio(at, &tone).unwrap();
        while let Poll::Transmit { .. } = server.poll() {}
        audio.push(started.elapsed());
    }
    let (video_mean, video_p95) = stats(video);
    let (recorded_mean, recorded_p95) = stats(recorded);
    let (audio_mean, audio_p95) = stats(audio);
    println!("  {codec:?} encode + packetize, 512x512: mean {video_mean:.2} ms, p95 {video_p95:.2} ms per frame");
    println!(
        "  the same while recording: mean {recorded_mean:.2} ms, p95 {recorded_p95:.2} ms per frame ({:.2}x)",
        recorded_mean / video_mean
    );
    println!("  Opus encode + packetize, 20 ms: mean {audio_mean:.3} ms, p95 {audio_p95:.3} ms per frame");
    let core = (video_mean * 30.0 + audio_mean * 50.0) / 1e3;
    println!("  media out per session at 30 fps: {:.1} % of one core", core * 100.0);
}

/// libvpx's VP8 encoder alone at 512×512 for each real-time speed setting:
/// ms per frame and bytes per frame at 1 Mbit/s.
fn vp8_speeds(frames: usize) {
    println!("VP8 (libvpx, one thread) at 512x512, 1 Mbit/s, by cpu-used (the edge uses {VP8_CPU_USED}):");
    for cpu_used in [-4, -6, -8, -12, -16] {
        let config = vp8::EncoderConfig { width: SIZE, height: SIZE, bitrate_bps: 1_000_000, fps: 25, cpu_used };
        let mut encoder = vp8::Encoder::new(config).unwrap();
        let mut times = Vec::with_capacity(frames);
        let mut bytes = 0;
        for n in 0..frames {
            let frame = pattern(n);
            let now = Instant::now();
            let out = encoder.encode(&frame.i420, n == 0).unwrap();
            times.push(now.elapsed());
            bytes += out.iter().map(|f| f.data.len()).sum::<usize>();
        }
        let (mean, p95) = stats(times);
        println!("  cpu-used {cpu_used:>3}: mean {mean:.2} ms, p95 {p95:.2} ms, {} bytes a frame", bytes / frames);
    }
}

fn main() {
    let frames = if std::env::args().any(|a| a == "--bench") { 300 } else { 10 };
    session(VideoCodec::H264, frames);
    session(VideoCodec::Vp8, frames);
    vp8_speeds(frames);
}
