//! Video on the wire: H.264 (openh264) and VP8 (libvpx), whichever the
//! peer negotiated. Chromium offers both and gets H.264; Firefox without
//! Cisco's OpenH264 plug-in offers only VP8 (and VP9, AV1) and gets VP8.
//!
//! Out, the encoder is made at the first frame for its size and the
//! bitrate congestion control allows, and follows that bitrate: VP8 in
//! place, H.264 by remaking its encoder (which starts with a keyframe), at
//! most every 2 s. A recorded call always gets H.264 (MP4 holds no VP8):
//! the wire's own when the peer takes H.264, a second encoder's otherwise.
//! In, each frame is decoded by the decoder of its codec, and a frame is
//! handed on at most [`VIDEO_IN_FPS`] times a second.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::Mid;
use tete_kernels::vp8;

/// Video frames handed to perception per second, at most.
pub const VIDEO_IN_FPS: f64 = 5.0;
/// The replica's video rate.
pub const VIDEO_OUT_FPS: u32 = 25;
/// The video bitrate before congestion control has an estimate.
pub const VIDEO_START_BPS: u32 = 1_000_000;
/// The range congestion control moves the video bitrate in.
pub const VIDEO_BPS: std::ops::RangeInclusive<u32> = 150_000..=2_500_000;
/// libvpx's real-time speed for VP8 (`--bench edge` measures it).
pub const VP8_CPU_USED: i32 = -8;

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("H.264: {0}")]
    H264(String),
    #[error("VP8: {0}")]
    Vp8(#[from] vp8::Vp8Error),
    #[error("{0:?} is not packed I420 of even size ≥ 16")]
    BadFrame(VideoFrame),
}

/// The codecs video goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Vp8,
}

/// A video frame, I420 with its planes packed (Y, then U, then V).
#[derive(Clone, PartialEq)]
pub struct VideoFrame {
    pub width: usize,
    pub height: usize,
    pub i420: Vec<u8>,
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VideoFrame({}x{})", self.width, self.height)
    }
}

impl VideoFrame {
    /// A frame of one colour (`y`, `u`, `v`), e.g. the placeholder before a replica renders.
    pub fn solid(width: usize, height: usize, (y, u, v): (u8, u8, u8)) -> Self {
        let luma = width * height;
        let chroma = (width / 2) * (height / 2);
        let mut i420 = vec![y; luma + 2 * chroma];
        i420[luma..luma + chroma].fill(u);
        i420[luma + chroma..].fill(v);
        Self { width, height, i420 }
    }

    /// The frame in RGB (BT.601, limited range, as the decoders give it),
    /// for perception. Chroma is shared by each 2×2 block.
    pub fn to_rgb(&self) -> tete_engine::face::RgbImage {
        let (w, h) = (self.width, self.height);
        let mut rgb = vec![0u8; w * h * 3];
        if self.is_valid() {
            let (luma, chroma) = (w * h, (w / 2) * (h / 2));
            let (u_plane, v_plane) = (&self.i420[luma..luma + chroma], &self.i420[luma + chroma..]);
            for (k, px) in rgb.chunks_exact_mut(3).enumerate() {
                let (x, y) = (k % w, k / w);
                let c = (y / 2) * (w / 2) + x / 2;
                let luma = (f32::from(self.i420[k]) - 16.0) * (255.0 / 219.0);
                let (u, v) = (f32::from(u_plane[c]) - 128.0, f32::from(v_plane[c]) - 128.0);
                let scale = 255.0 / 224.0;
                px[0] = (luma + scale * 1.402 * v).round().clamp(0.0, 255.0) as u8;
                px[1] = (luma - scale * (0.344_136 * u + 0.714_136 * v)).round().clamp(0.0, 255.0) as u8;
                px[2] = (luma + scale * 1.772 * u).round().clamp(0.0, 255.0) as u8;
            }
        }
        tete_engine::face::RgbImage::from_raw(w as u32, h as u32, rgb).unwrap_or_default()
    }

    pub(super) fn is_valid(&self) -> bool {
        self.width >= 16
            && self.height >= 16
            && self.width.is_multiple_of(2)
            && self.height.is_multiple_of(2)
            && self.i420.len() == self.width * self.height * 3 / 2
    }
}

/// A frame of the replica's video in H.264 (Annex B), for the recording,
/// and its place on the media clock.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub at: Duration,
    pub width: usize,
    pub height: usize,
    pub annex_b: Vec<u8>,
    /// An IDR picture: decoding can start here.
    pub keyframe: bool,
}

/// One encoder, with what it was made for.
struct Encoder {
    codec: VideoCodec,
    width: usize,
    height: usize,
    bps: u32,
    made: Instant,
    inner: Inner,
}

/// Boxed: openh264's encoder is 7 KB inline and libvpx's config 1 KB.
enum Inner {
    H264(Box<openh264::encoder::Encoder>),
    Vp8(Box<vp8::Encoder>),
}

impl Encoder {
    fn new(codec: VideoCodec, frame: &VideoFrame, bps: u32, now: Instant) -> Result<Self, VideoError> {
        let inner = match codec {
            VideoCodec::H264 => {
                let config = openh264::encoder::EncoderConfig::new()
                    .bitrate(openh264::encoder::BitRate::from_bps(bps))
                    .max_frame_rate(openh264::encoder::FrameRate::from_hz(VIDEO_OUT_FPS as f32))
                    .usage_type(openh264::encoder::UsageType::CameraVideoRealTime)
                    .profile(openh264::encoder::Profile::Baseline)
                    .num_threads(1);
                let api = openh264::OpenH264API::from_source();
                Inner::H264(Box::new(
                    openh264::encoder::Encoder::with_api_config(api, config)
                        .map_err(|e| VideoError::H264(e.to_string()))?,
                ))
            }
            VideoCodec::Vp8 => Inner::Vp8(Box::new(vp8::Encoder::new(vp8::EncoderConfig {
                width: frame.width,
                height: frame.height,
                bitrate_bps: bps,
                fps: VIDEO_OUT_FPS,
                cpu_used: VP8_CPU_USED,
            })?)),
        };
        Ok(Self { codec, width: frame.width, height: frame.height, bps, made: now, inner })
    }

    /// Whether this encoder can take `frame` at `bps` as it is: same size,
    /// and for H.264 a bitrate within 30 % (or remade under 2 s ago). VP8
    /// moves its bitrate in place.
    fn fits(&mut self, frame: &VideoFrame, bps: u32, now: Instant) -> Result<bool, VideoError> {
        if (self.width, self.height) != (frame.width, frame.height) {
            return Ok(false);
        }
        let off = f64::from(bps) / f64::from(self.bps);
        match &mut self.inner {
            Inner::Vp8(encoder) if !(0.9..=1.1).contains(&off) => {
                encoder.set_bitrate(bps)?;
                self.bps = bps;
                Ok(true)
            }
            Inner::Vp8(_) => Ok(true),
            Inner::H264(_) => {
                Ok((0.77..=1.3).contains(&off) || now.saturating_duration_since(self.made) < Duration::from_secs(2))
            }
        }
    }

    /// The frame's bitstream (H.264 Annex B or one VP8 frame; empty when
    /// the encoder skipped it) and whether it is a keyframe.
    fn encode(&mut self, frame: &VideoFrame, keyframe: bool) -> Result<(Vec<u8>, bool), VideoError> {
        match &mut self.inner {
            Inner::H264(encoder) => {
                if keyframe {
                    encoder.force_intra_frame();
                }
                let yuv = openh264::formats::YUVBuffer::from_vec(frame.i420.clone(), frame.width, frame.height);
                let encoded = encoder.encode(&yuv).map_err(|e| VideoError::H264(e.to_string()))?;
                Ok((encoded.to_vec(), encoded.frame_type() == openh264::encoder::FrameType::IDR))
            }
            Inner::Vp8(encoder) => {
                let mut frames = encoder.encode(&frame.i420, keyframe)?;
                // Without lag, one frame in gives at most one out.
                Ok(frames.pop().map_or((Vec::new(), false), |f| (f.data, f.keyframe)))
            }
        }
    }
}

/// Makes or remakes `slot`'s encoder when it does not fit `frame`; says
/// whether it is new (its first frame is a keyframe).
fn ready(
    slot: &mut Option<Encoder>,
    codec: VideoCodec,
    frame: &VideoFrame,
    bps: u32,
    now: Instant,
) -> Result<bool, VideoError> {
    if let Some(encoder) = slot.as_mut().filter(|e| e.codec == codec)
        && encoder.fits(frame, bps, now)?
    {
        return Ok(false);
    }
    *slot = Some(Encoder::new(codec, frame, bps, now)?);
    Ok(true)
}

/// What one frame became.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    /// For the wire, and whether it is a keyframe (`None`: nothing to send).
    pub wire: Option<(Vec<u8>, bool)>,
    /// For the recording, when recording.
    pub record: Option<(Vec<u8>, bool)>,
}

/// The replica's video track and its encoders (made at the first frame).
pub(super) struct VideoOut {
    pub mid: Mid,
    wire: Option<Encoder>,
    /// H.264 for the recording, when the wire is VP8.
    record: Option<Encoder>,
    pub frames: u64,
    /// The next frame on the wire is a keyframe (join, PLI/FIR).
    pub keyframe: bool,
    /// The bitrate congestion control allows the video.
    pub target_bps: u32,
}

impl VideoOut {
    pub fn new(mid: Mid) -> Self {
        Self { mid, wire: None, record: None, frames: 0, keyframe: true, target_bps: VIDEO_START_BPS }
    }

    /// Encodes `frame` for the wire in `codec`, and in H.264 for the
    /// recording when `recording`.
    pub fn encode(
        &mut self,
        now: Instant,
        frame: &VideoFrame,
        codec: VideoCodec,
        recording: bool,
    ) -> Result<Encoded, VideoError> {
        if !frame.is_valid() {
            return Err(VideoError::BadFrame(frame.clone()));
        }
        if ready(&mut self.wire, codec, frame, self.target_bps, now)? {
            self.keyframe = true;
        }
        let keyframe = std::mem::take(&mut self.keyframe);
        let Some(wire) = self.wire.as_mut() else { return Ok(Encoded::default()) };
        let (bitstream, key) = wire.encode(frame, keyframe)?;
        self.frames += 1;
        let mut encoded = Encoded::default();
        if recording {
            if codec == VideoCodec::H264 {
                encoded.record = (!bitstream.is_empty()).then(|| (bitstream.clone(), key));
            } else {
                let new = ready(&mut self.record, VideoCodec::H264, frame, self.target_bps, now)?;
                if let Some(record) = self.record.as_mut() {
                    let (annex_b, key) = record.encode(frame, new)?;
                    encoded.record = (!annex_b.is_empty()).then_some((annex_b, key));
                }
            }
        } else {
            self.record = None;
        }
        encoded.wire = (!bitstream.is_empty()).then_some((bitstream, key));
        Ok(encoded)
    }

    /// The bitrate the wire's encoder runs at.
    pub fn bitrate(&self) -> Option<u32> {
        self.wire.as_ref().map(|e| e.bps)
    }

    /// The codec on the wire (once the first frame went out).
    pub fn codec(&self) -> Option<VideoCodec> {
        self.wire.as_ref().map(|e| e.codec)
    }
}

enum Decoder {
    H264(openh264::decoder::Decoder),
    Vp8(vp8::Decoder),
}

/// The user's video track and its decoder (made for the codec of the
/// first frame, remade if the codec changes).
pub(super) struct VideoIn {
    pub mid: Mid,
    decoder: Option<Decoder>,
    last_handed: Option<Instant>,
}

impl VideoIn {
    pub fn new(mid: Mid) -> Self {
        Self { mid, decoder: None, last_handed: None }
    }

    /// Decodes one frame (an H.264 access unit or a VP8 frame) received at
    /// `at`; hands it on when the last one handed is older than
    /// 1 / [`VIDEO_IN_FPS`]. Undecodable data is logged and skipped.
    pub fn decode(&mut self, at: Instant, codec: Codec, data: &[u8]) -> Option<VideoFrame> {
        let fits = matches!(
            (&self.decoder, codec),
            (Some(Decoder::H264(_)), Codec::H264) | (Some(Decoder::Vp8(_)), Codec::Vp8)
        );
        if !fits {
            let made = match codec {
                Codec::H264 => openh264::decoder::Decoder::new().map(Decoder::H264).map_err(|e| e.to_string()),
                Codec::Vp8 => vp8::Decoder::new().map(Decoder::Vp8).map_err(|e| e.to_string()),
                _ => return None,
            };
            match made {
                Ok(decoder) => self.decoder = Some(decoder),
                Err(e) => {
                    tracing::warn!("no {codec} decoder: {e}");
                    return None;
                }
            }
        }
        // Every frame is decoded (later ones depend on it); few are handed on.
        let due =
            self.last_handed.is_none_or(|last| at.saturating_duration_since(last).as_secs_f64() >= 1.0 / VIDEO_IN_FPS);
        let frame = match self.decoder.as_mut()? {
            Decoder::H264(decoder) => match decoder.decode(data) {
                Ok(Some(decoded)) if due => Some(packed_h264(&decoded)),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("undecodable H.264: {e}");
                    None
                }
            },
            Decoder::Vp8(decoder) => match decoder.decode(data) {
                Ok(Some(picture)) if due => {
                    Some(VideoFrame { width: picture.width, height: picture.height, i420: picture.i420 })
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("undecodable VP8: {e}");
                    None
                }
            },
        }?;
        self.last_handed = Some(at);
        Some(frame)
    }
}

/// An openh264 picture as packed I420.
fn packed_h264(decoded: &openh264::decoder::DecodedYUV<'_>) -> VideoFrame {
    use openh264::formats::YUVSource as _;
    let (width, height) = decoded.dimensions();
    let (y_stride, u_stride, v_stride) = decoded.strides();
    let mut i420 = Vec::with_capacity(width * height * 3 / 2);
    for row in 0..height {
        i420.extend_from_slice(&decoded.y()[row * y_stride..row * y_stride + width]);
    }
    for (plane, stride) in [(decoded.u(), u_stride), (decoded.v(), v_stride)] {
        for row in 0..height / 2 {
            i420.extend_from_slice(&plane[row * stride..row * stride + width / 2]);
        }
    }
    VideoFrame { width, height, i420 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bright square moving over a gradient.
    fn frame(t: usize) -> VideoFrame {
        let (width, height) = (128, 96);
        let mut frame = VideoFrame::solid(width, height, (16, 128, 128));
        for y in 0..height {
            for x in 0..width {
                let inside = (x + 6 * t) % width < 32 && y < 40;
                frame.i420[y * width + x] = if inside { 235 } else { (16 + (2 * x + y) % 200) as u8 };
            }
        }
        frame
    }

    fn at(start: Instant, t: usize) -> Instant {
        start + Duration::from_millis(40 * t as u64)
    }

    #[test]
    fn vp8_goes_out_with_h264_for_the_recording() {
        let mut out = VideoOut::new(Mid::from("1"));
        let start = Instant::now();
        let mut vp8 = vp8::Decoder::new().unwrap();
        let mut h264 = openh264::decoder::Decoder::new().unwrap();
        for t in 0..12 {
            let recording = t >= 4;
            if t == 8 {
                out.keyframe = true; // a PLI
            }
            let encoded = out.encode(at(start, t), &frame(t), VideoCodec::Vp8, recording).unwrap();
            let (wire, key) = encoded.wire.expect("a VP8 frame");
            assert_eq!(key, t == 0 || t == 8, "frame {t}");
            let picture = vp8.decode(&wire).unwrap().expect("a picture");
            assert_eq!((picture.width, picture.height), (128, 96));
            match encoded.record {
                Some((annex_b, key)) => {
                    assert!(recording, "frame {t} recorded while not recording");
                    assert_eq!(key, t == 4, "the recording starts with an IDR, frame {t}");
                    assert!(h264.decode(&annex_b).unwrap().is_some(), "frame {t}: the recording's H.264 decodes");
                }
                None => assert!(!recording, "frame {t} not recorded"),
            }
        }
        assert_eq!(out.codec(), Some(VideoCodec::Vp8));
        // VP8 follows congestion control in place: no keyframe.
        out.target_bps = 400_000;
        let encoded = out.encode(at(start, 12), &frame(12), VideoCodec::Vp8, false).unwrap();
        assert!(!encoded.wire.unwrap().1 && encoded.record.is_none());
        assert_eq!(out.bitrate(), Some(400_000));
        assert!(matches!(
            out.encode(at(start, 13), &VideoFrame::solid(15, 16, (0, 0, 0)), VideoCodec::Vp8, false),
            Err(VideoError::BadFrame(_))
        ));
    }

    #[test]
    fn h264_on_the_wire_is_the_recording() {
        let mut out = VideoOut::new(Mid::from("1"));
        let start = Instant::now();
        for t in 0..4 {
            let encoded = out.encode(at(start, t), &frame(t), VideoCodec::H264, true).unwrap();
            let (wire, key) = encoded.wire.unwrap();
            assert_eq!(encoded.record, Some((wire, key)), "frame {t}");
            assert_eq!(key, t == 0);
        }
        assert_eq!(out.codec(), Some(VideoCodec::H264));
    }

    #[test]
    fn either_codec_comes_in_at_the_handed_rate() {
        let start = Instant::now();
        let mut vp8 = vp8::Encoder::new(vp8::EncoderConfig {
            width: 128,
            height: 96,
            bitrate_bps: 500_000,
            fps: 25,
            cpu_used: VP8_CPU_USED,
        })
        .unwrap();
        let mut video_in = VideoIn::new(Mid::from("0"));
        // One second of VP8 at 25 fps: five frames handed on.
        let mut handed = 0;
        for t in 0..25 {
            let data = vp8.encode(&frame(t).i420, false).unwrap().remove(0).data;
            if let Some(got) = video_in.decode(at(start, t), Codec::Vp8, &data) {
                assert_eq!((got.width, got.height, got.i420.len()), (128, 96, 128 * 96 * 3 / 2));
                handed += 1;
            }
        }
        assert_eq!(handed, 5);
        // Garbage is skipped; the sender switching to H.264 gets an H.264 decoder.
        assert!(video_in.decode(at(start, 30), Codec::Vp8, &[0xff; 40]).is_none());
        let mut h264 = openh264::encoder::Encoder::new().unwrap();
        let f = frame(0);
        let yuv = openh264::formats::YUVBuffer::from_vec(f.i420.clone(), f.width, f.height);
        let annex_b = h264.encode(&yuv).unwrap().to_vec();
        let got = video_in.decode(at(start, 40), Codec::H264, &annex_b).expect("an H.264 frame");
        assert_eq!((got.width, got.height), (128, 96));
        assert!(video_in.decode(at(start, 50), Codec::Vp9, &annex_b).is_none(), "VP9 is not taken");
    }
}
