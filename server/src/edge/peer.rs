//! One WebRTC peer, sans-IO: a str0m `Rtc` plus the media work around it.
//! It never reads a clock or a socket: the driver hands it datagrams and
//! the time, writes what [`Peer::poll`] gives back and sleeps until the
//! deadline it returns.
//!
//! In: the user's Opus audio is decoded (48 kHz, packet loss concealed
//! when a packet is missing) and resampled to 16 kHz mono for the engine;
//! the user's video (H.264 or VP8) is decoded and handed on at most
//! [`VIDEO_IN_FPS`] frames a second, for perception.
//! Out: 20 ms frames of the replica's 48 kHz audio are encoded to Opus and
//! its I420 frames to H.264 when the peer takes it, VP8 otherwise (see
//! [`super::video`]), both stamped from one clock (the first frame sent), so
//! lips and sound stay together; a keyframe goes out first and on every
//! PLI/FIR. The video bitrate follows str0m's congestion estimate (TWCC, or
//! REMB). Data-channel text comes out as it is; the driver parses it.
//!
//! The codecs offered are Opus, H.264 and VP8.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tete_engine::audio::StreamResampler;

use super::video::{Encoded, VideoIn, VideoOut};
pub use super::video::{
    EncodedFrame, VIDEO_BPS, VIDEO_IN_FPS, VIDEO_OUT_FPS, VIDEO_START_BPS, VideoCodec, VideoError, VideoFrame,
};

/// Samples in one 20 ms frame at 48 kHz, the unit of audio out.
pub const FRAME: usize = 960;
/// The engine's rate.
pub const ENGINE_RATE: u32 = 16_000;
const OPUS_RATE: u32 = 48_000;
/// A connected peer that sends nothing for this long is gone: browsers send
/// audio every 20 ms (silence included) and consent checks every few seconds.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(6);
/// Largest SDP offer accepted.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the offer is not valid SDP: {0}")]
    Sdp(String),
    #[error("the offer cannot be answered: {0}")]
    Offer(String),
    #[error("the offer has no audio the replica can hear (Opus)")]
    NoAudio,
    #[error("WebRTC: {0}")]
    Rtc(#[from] str0m::RtcError),
    #[error("video: {0}")]
    Video(#[from] VideoError),
    #[error("Opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("resampling: {0}")]
    Resample(#[from] tete_engine::audio::ResampleError),
}

/// What a peer tells the session.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media flows.
    Connected,
    /// The user's audio: 16 kHz mono, in order, gaps concealed.
    Audio(Vec<f32>),
    /// A frame of the user's camera (at most [`VIDEO_IN_FPS`] a second).
    Video(VideoFrame),
    /// A text message on the data channel.
    Data(String),
    /// The peer is gone (ICE disconnected, or it closed).
    Closed,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Poll {
    Transmit {
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Event(PeerEvent),
    /// Nothing more until this time or new input.
    Wait(Instant),
}

/// The user's audio track and its decoder.
struct AudioIn {
    mid: Mid,
    decoder: opus::Decoder,
    resampler: StreamResampler,
    /// The RTP time the next packet should carry (48 kHz units).
    expected: Option<u64>,
    scratch: Vec<f32>,
}

/// The replica's audio track and its encoder.
struct AudioOut {
    mid: Mid,
    encoder: opus::Encoder,
    /// 48 kHz samples sent so far: the media clock.
    clock: u64,
    started: Option<Instant>,
}

pub struct Peer {
    rtc: Rtc,
    local: SocketAddr,
    audio_in: Option<AudioIn>,
    audio_out: Option<AudioOut>,
    video_in: Option<VideoIn>,
    video_out: Option<VideoOut>,
    /// The call is recorded: [`Peer::send_video`] gives back H.264 for it.
    recording: bool,
    /// When the first media went out: time zero of both media clocks.
    epoch: Option<Instant>,
    channel: Option<ChannelId>,
    /// The last datagram from the peer (once connected).
    last_heard: Option<Instant>,
    /// Silent past [`SILENCE_TIMEOUT`]: reported as closed at the next poll.
    vanished: bool,
    /// The latest time the driver gave (the peer has no clock of its own).
    now: Instant,
    closed: bool,
}

impl Peer {
    /// Answers `offer` for a peer reached at `local` (the UDP socket the
    /// driver bound, advertised as the one host candidate).
    pub fn accept(offer: &str, local: SocketAddr, now: Instant) -> Result<(Self, String), PeerError> {
        if offer.len() > MAX_OFFER_BYTES {
            return Err(PeerError::Sdp(format!("it is over {MAX_OFFER_BYTES} bytes")));
        }
        let offer = &reachable_only(offer, local.ip());
        let has_opus = offer.lines().any(|l| l.starts_with("m=audio"))
            && offer.lines().any(|l| l.starts_with("a=rtpmap:") && l.to_ascii_lowercase().contains("opus/48000"));
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| PeerError::Sdp(e.to_string()))?;
        if !has_opus {
            return Err(PeerError::NoAudio);
        }
        // str0m asserts on some malformed offers (e.g. a payload type listed
        // twice panics with "Pt locked multiple times"); that is bad input,
        // so it is caught here and refused like any other.
        let negotiated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rtc = RtcConfig::new()
                .clear_codecs()
                .enable_opus(true, false)
                .enable_h264(true)
                .enable_vp8(true)
                .enable_bwe(Some(Bitrate::bps(u64::from(VIDEO_START_BPS))))
                .build(now);
            rtc.bwe()
                .set_bitrate(Bitrate::bps(u64::from(*VIDEO_BPS.start())), Bitrate::bps(u64::from(*VIDEO_BPS.end())));
            let candidate = Candidate::host(local, "udp").map_err(|e| PeerError::Offer(e.to_string()))?;
            rtc.add_local_candidate(candidate);
            let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| PeerError::Offer(e.to_string()))?;
            Ok::<_, PeerError>((rtc, answer))
        }));
        let (rtc, answer) = negotiated.map_err(|_| PeerError::Offer("the offer is inconsistent".into()))??;
        let peer = Self {
            rtc,
            local,
            audio_in: None,
            audio_out: None,
            video_in: None,
            video_out: None,
            recording: false,
            epoch: None,
            channel: None,
            last_heard: None,
            vanished: false,
            now,
            closed: false,
        };
        Ok((peer, answer.to_sdp_string()))
    }

    /// Sets up the first audio line as the offer negotiated it (the
    /// direction is ours: `SendRecv` hears and speaks).
    fn add_audio(&mut self, mid: Mid, direction: Direction) -> Result<(), PeerError> {
        if self.audio_in.is_some() || self.audio_out.is_some() {
            return Ok(());
        }
        if matches!(direction, Direction::RecvOnly | Direction::SendRecv) {
            self.audio_in = Some(AudioIn {
                mid,
                decoder: opus::Decoder::new(OPUS_RATE, opus::Channels::Mono)?,
                resampler: StreamResampler::new(OPUS_RATE, ENGINE_RATE)?,
                expected: None,
                scratch: vec![0.0; FRAME * 6],
            });
        }
        if matches!(direction, Direction::SendOnly | Direction::SendRecv) {
            let mut encoder = opus::Encoder::new(OPUS_RATE, opus::Channels::Mono, opus::Application::Voip)?;
            encoder.set_bitrate(opus::Bitrate::Bits(32_000))?;
            self.audio_out = Some(AudioOut { mid, encoder, clock: 0, started: None });
        }
        Ok(())
    }

    /// Sets up the first video line, like [`Peer::add_audio`].
    fn add_video(&mut self, mid: Mid, direction: Direction) -> Result<(), PeerError> {
        if self.video_in.is_some() || self.video_out.is_some() {
            return Ok(());
        }
        if matches!(direction, Direction::RecvOnly | Direction::SendRecv) {
            self.video_in = Some(VideoIn::new(mid));
        }
        if matches!(direction, Direction::SendOnly | Direction::SendRecv) {
            self.video_out = Some(VideoOut::new(mid));
        }
        Ok(())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn is_closed(&self) -> bool {
        self.closed || !self.rtc.is_alive()
    }

    /// A datagram that arrived on the peer's socket from `source`.
    pub fn receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.now = self.now.max(now);
        // A loopback edge talks to loopback only: a connectivity check from
        // another address (a browser's socket on a real interface probing
        // our loopback candidate) gets no answer, as that answer would leave
        // loopback.
        if self.local.ip().is_loopback() && !source.ip().is_loopback() {
            return;
        }
        let Ok(contents) = contents.try_into() else { return }; // not STUN/DTLS/RTP: ignored
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination: self.local, contents });
        if !self.rtc.accepts(&input) {
            return;
        }
        if self.last_heard.is_some() {
            self.last_heard = Some(now);
        }
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!("peer input refused: {e}");
        }
    }

    /// The time has come for a deadline `poll` gave.
    pub fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.last_heard.is_some_and(|last| now.saturating_duration_since(last) >= SILENCE_TIMEOUT) {
            self.vanished = true;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!("peer timeout: {e}");
        }
    }

    /// The next thing to do. Call until it says [`Poll::Wait`], after every
    /// input and every frame written.
    pub fn poll(&mut self) -> Poll {
        loop {
            if self.closed {
                return Poll::Wait(self.now + Duration::from_secs(3600));
            }
            if std::mem::take(&mut self.vanished) {
                self.closed = true;
                return Poll::Event(PeerEvent::Closed);
            }
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(e) => {
                    tracing::debug!("peer failed: {e}");
                    self.closed = true;
                    return Poll::Event(PeerEvent::Closed);
                }
            };
            match output {
                Output::Timeout(at) => {
                    let silence = self.last_heard.map(|last| last + SILENCE_TIMEOUT);
                    return Poll::Wait(silence.map_or(at, |s| s.min(at)));
                }
                Output::Transmit(t) => {
                    return Poll::Transmit { destination: t.destination, contents: t.contents.to_vec() };
                }
                Output::Event(event) => {
                    if let Some(event) = self.event(event) {
                        return Poll::Event(event);
                    }
                }
            }
        }
    }

    fn event(&mut self, event: Event) -> Option<PeerEvent> {
        match event {
            Event::Connected => {
                // Silence is counted from the connection on.
                self.last_heard = Some(self.now);
                Some(PeerEvent::Connected)
            }
            Event::MediaAdded(added) => {
                let set_up = match added.kind {
                    MediaKind::Audio => self.add_audio(added.mid, added.direction),
                    MediaKind::Video => self.add_video(added.mid, added.direction),
                };
                if let Err(e) = set_up {
                    tracing::warn!("setting up a {:?} track: {e}", added.kind);
                }
                None
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. }) => {
                if let Some(video) = self.video_out.as_mut() {
                    // Room for the audio and overhead, within the range.
                    let bps = (estimate.as_u64() * 85 / 100).saturating_sub(40_000);
                    video.target_bps = bps.clamp(u64::from(*VIDEO_BPS.start()), u64::from(*VIDEO_BPS.end())) as u32;
                }
                None
            }
            Event::KeyframeRequest(request) => {
                if let Some(video) = self.video_out.as_mut().filter(|v| v.mid == request.mid) {
                    video.keyframe = true;
                }
                None
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.closed = true;
                Some(PeerEvent::Closed)
            }
            Event::MediaData(data) if self.video_in.as_ref().is_some_and(|v| v.mid == data.mid) => {
                let video = self.video_in.as_mut()?;
                video.decode(data.network_time, data.params.spec().codec, &data.data).map(PeerEvent::Video)
            }
            Event::MediaData(data) => {
                let audio = self.audio_in.as_mut().filter(|a| a.mid == data.mid)?;
                let is_opus = data.params.spec().codec == Codec::Opus;
                if !is_opus {
                    return None;
                }
                audio.decode(data.time, &data.data)
            }
            Event::ChannelOpen(id, _) => {
                self.channel = Some(id);
                None
            }
            Event::ChannelData(d) if !d.binary => Some(PeerEvent::Data(String::from_utf8_lossy(&d.data).into_owned())),
            Event::ChannelData(_) => Some(PeerEvent::Data(String::new())),
            Event::ChannelClose(id) if Some(id) == self.channel => {
                self.channel = None;
                None
            }
            _ => None,
        }
    }

    /// Sends one 20 ms frame (960 samples at 48 kHz) of the replica's audio,
    /// and says where on the media clock it went. Before the connection is
    /// up, or without an outgoing audio track, it does nothing (`None`).
    pub fn send_audio(&mut self, now: Instant, frame: &[f32]) -> Result<Option<Duration>, PeerError> {
        let Some(out) = self.audio_out.as_mut() else { return Ok(None) };
        let Some(writer) = self.rtc.writer(out.mid) else { return Ok(None) };
        let Some(pt) = writer.payload_params().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt()) else {
            return Ok(None);
        };
        let mut packet = [0u8; 1500];
        let n = out.encoder.encode_float(frame, &mut packet)?;
        let epoch = *self.epoch.get_or_insert(now);
        let started = *out.started.get_or_insert(now);
        // Audio joins the shared clock at the moment its first frame is sent.
        let offset = (started - epoch).as_micros() as u64 * u64::from(OPUS_RATE) / 1_000_000;
        let wallclock = started + Duration::from_micros(out.clock * 1_000_000 / u64::from(OPUS_RATE));
        let rtp = MediaTime::new(offset + out.clock, Frequency::FORTY_EIGHT_KHZ);
        writer.write(pt, wallclock, rtp, packet[..n].to_vec())?;
        let at = Duration::from_micros((offset + out.clock) * 1_000_000 / u64::from(OPUS_RATE));
        out.clock += frame.len() as u64;
        Ok(Some(at))
    }

    /// Asks [`Peer::send_video`] for the video in H.264 for a recording
    /// (`true`) or not.
    pub fn record_video(&mut self, on: bool) {
        self.recording = on;
    }

    /// Sends one frame of the replica's video (call at [`VIDEO_OUT_FPS`]);
    /// when recording, gives back the frame in H.264 for the recording.
    /// Before the connection is up, or without an outgoing video track, it
    /// does nothing (`None`); a frame that is not even-sized I420 is an error.
    pub fn send_video(&mut self, now: Instant, frame: &VideoFrame) -> Result<Option<EncodedFrame>, PeerError> {
        let Some(out) = self.video_out.as_mut() else { return Ok(None) };
        if !frame.is_valid() {
            return Err(VideoError::BadFrame(frame.clone()).into());
        }
        let Some(writer) = self.rtc.writer(out.mid) else { return Ok(None) };
        let params: Vec<_> = writer.payload_params().collect();
        // H.264 constrained baseline, packetization mode 1 (what openh264
        // makes), if offered; then any H.264 in mode 1; then VP8.
        let h264 = |p: &&str0m::format::PayloadParams| {
            p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1)
        };
        let chosen = params
            .iter()
            .find(|p| h264(p) && p.spec().format.profile_level_id == Some(0x42e01f))
            .or_else(|| params.iter().find(|p| h264(p)))
            .map(|p| (p.pt(), VideoCodec::H264))
            .or_else(|| params.iter().find(|p| p.spec().codec == Codec::Vp8).map(|p| (p.pt(), VideoCodec::Vp8)));
        let Some((pt, codec)) = chosen else { return Ok(None) };
        let Encoded { wire, record } = out.encode(now, frame, codec, self.recording)?;
        let epoch = *self.epoch.get_or_insert(now);
        let at = now.saturating_duration_since(epoch);
        let rtp = MediaTime::new(at.as_micros() as u64 * 90 / 1_000, Frequency::NINETY_KHZ);
        if let Some((bitstream, _)) = wire {
            writer.write(pt, now, rtp, bitstream)?;
        }
        Ok(record.map(|(annex_b, keyframe)| EncodedFrame {
            at,
            width: frame.width,
            height: frame.height,
            annex_b,
            keyframe,
        }))
    }

    /// Where `now` falls on the media clock of what this peer sends (`None`
    /// before its first media went out).
    pub fn media_time(&self, now: Instant) -> Option<Duration> {
        self.epoch.map(|epoch| now.saturating_duration_since(epoch))
    }

    /// The codec the video goes out in (once the first frame went out).
    pub fn video_codec(&self) -> Option<VideoCodec> {
        self.video_out.as_ref()?.codec()
    }

    /// The bitrate the video encoder runs at (after congestion control).
    pub fn video_bitrate(&self) -> Option<u32> {
        self.video_out.as_ref()?.bitrate()
    }

    /// Sends a text message on the data channel, if one is open.
    pub fn send_text(&mut self, text: &str) -> bool {
        let Some(id) = self.channel else { return false };
        self.rtc.channel(id).is_some_and(|mut c| c.write(false, text.as_bytes()).unwrap_or(false))
    }

    pub fn close(&mut self) {
        self.rtc.disconnect();
        self.closed = true;
    }
}

/// The offer without the ICE candidates this edge must not send to: on a
/// loopback edge every candidate that is not loopback, and everywhere the
/// mDNS (`.local`) names it cannot resolve. Connectivity checks then go only
/// where the edge itself listens.
fn reachable_only(offer: &str, local: std::net::IpAddr) -> String {
    let keep = |line: &str| {
        let Some(candidate) = line.strip_prefix("a=candidate:") else { return true };
        // foundation component transport priority address port typ …
        let Some(address) = candidate.split_whitespace().nth(4) else { return false };
        match address.parse::<std::net::IpAddr>() {
            Ok(ip) => !local.is_loopback() || ip.is_loopback(),
            Err(_) => false,
        }
    };
    let mut out = String::with_capacity(offer.len());
    for line in offer.split_inclusive('\n') {
        if keep(line.trim_end()) {
            out.push_str(line);
        }
    }
    out
}

impl AudioIn {
    /// Decodes one Opus packet at RTP time `time`; a gap before it is
    /// filled by Opus's loss concealment first.
    fn decode(&mut self, time: MediaTime, packet: &[u8]) -> Option<PeerEvent> {
        let at = time.rebase(Frequency::FORTY_EIGHT_KHZ).numer();
        let mut pcm = Vec::new();
        if self.expected.is_some_and(|expected| at < expected) {
            // Late: its time was already concealed (or played); drop it.
            return None;
        }
        if let Some(expected) = self.expected {
            // Up to 120 ms concealed; a longer gap is a pause, not loss.
            let missing = at.saturating_sub(expected).min(6 * FRAME as u64) as usize;
            let mut left = missing;
            while left > 0 {
                let n = left.min(FRAME);
                match self.decoder.decode_float(&[], &mut self.scratch[..n], false) {
                    Ok(got) => pcm.extend_from_slice(&self.scratch[..got]),
                    Err(_) => break,
                }
                left -= n;
            }
        }
        match self.decoder.decode_float(packet, &mut self.scratch, false) {
            Ok(n) => {
                pcm.extend_from_slice(&self.scratch[..n]);
                self.expected = Some(at + n as u64);
            }
            Err(e) => {
                tracing::debug!("undecodable Opus packet: {e}");
                return None;
            }
        }
        let out = self.resampler.push(&pcm).ok()?;
        (!out.is_empty()).then_some(PeerEvent::Audio(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reachable_candidates_stay() {
        let offer = "v=0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n\
                     a=candidate:2 1 udp 2122260223 10.0.0.7 50001 typ host\r\n\
                     a=candidate:3 1 udp 2122260223 abcd-ef.local 50002 typ host\r\n\
                     a=candidate:bad\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        let loopback = reachable_only(offer, [127, 0, 0, 1].into());
        assert!(loopback.contains("127.0.0.1 50000"));
        assert!(!loopback.contains("10.0.0.7") && !loopback.contains(".local") && !loopback.contains("candidate:bad"));
        assert!(loopback.starts_with("v=0\r\n") && loopback.ends_with("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        let public = reachable_only(offer, [10, 0, 0, 2].into());
        assert!(public.contains("10.0.0.7") && public.contains("127.0.0.1") && !public.contains(".local"));
    }
}
