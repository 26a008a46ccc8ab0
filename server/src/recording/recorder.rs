//! One peer's recording, made on a thread of its own: the replica's audio
//! and the user's voice mixed into one Opus track (48 kHz mono), the
//! replica's H.264 as it went out, muxed into an MP4 (muxide, moov first,
//! so browsers start playing at once).
//!
//! Everything is placed by its time on the peer's media clock, the clock
//! that stamps what the browser plays, so the recording keeps the call's
//! lip-sync. The file starts at the first keyframe. The replica's audio
//! arrives every 20 ms without gaps (silence included) and is the mix's
//! clock; the user's 16 kHz audio is brought to 48 kHz and laid in from
//! its arrival time, then sample after sample. A stretch of it that
//! arrives after its place was already written goes in at the first free
//! place instead, so nothing heard is lost.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use muxide::api::{AudioCodec, Muxer, MuxerBuilder, VideoCodec};
use tete_engine::audio::StreamResampler;

use crate::edge::peer::{EncodedFrame, VIDEO_OUT_FPS};

/// The mix's rate and its frames (20 ms).
const RATE: u32 = 48_000;
const FRAME: usize = 960;
/// How far behind the replica's audio the mix is written: room for the
/// user's audio, which comes over the network, to arrive.
const LAG: u64 = RATE as u64 / 2;
/// The user's audio is laid in again from its arrival time when it has
/// drifted further than this from where counting put it.
const REANCHOR: u64 = RATE as u64 / 4;
const OPUS_BPS: i32 = 64_000;
/// How long a recording waits for the replica's first keyframe.
pub const VIDEO_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("muxing MP4: {0}")]
    Mux(#[from] muxide::api::MuxerError),
    #[error("Opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("resampling: {0}")]
    Resample(#[from] tete_engine::audio::ResampleError),
    #[error("nothing was recorded (no media went out)")]
    Empty,
    #[error("the recording thread stopped: {0}")]
    Thread(String),
}

/// A finished recording, on local disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub path: PathBuf,
    /// Seconds, from the first frame to the end of the last sound or picture.
    pub duration: f64,
    pub bytes: u64,
    pub video_frames: u64,
    /// Pictures the muxer refused (each is logged).
    pub pictures_refused: u64,
    /// Stretches of the user's audio laid in later than their arrival
    /// time (they came after their place was written).
    pub late_stretches: u64,
}

enum Item {
    Replica(Duration, Vec<f32>),
    Heard(Duration, Vec<f32>),
    Video(EncodedFrame),
}

/// The recording of one peer; [`Recorder::finish`] writes the file.
pub struct Recorder {
    tx: mpsc::Sender<Item>,
    thread: JoinHandle<Result<Recorded, RecordError>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts recording into `path`. The file starts at the replica's
    /// first keyframe; with no picture in the first [`VIDEO_WAIT`] of
    /// sound, it is audio only.
    pub fn start(path: PathBuf) -> Result<Self, RecordError> {
        let (tx, rx) = mpsc::channel();
        let mut mix = Mix::new(path)?;
        let thread = std::thread::Builder::new()
            .name("tete-record".into())
            .spawn(move || {
                for item in rx {
                    mix.take(item)?;
                }
                mix.finish()
            })
            .map_err(|e| RecordError::Thread(e.to_string()))?;
        Ok(Self { tx, thread })
    }

    /// A 20 ms frame of the replica's audio (48 kHz), at its media time.
    pub fn replica_audio(&self, at: Duration, pcm: &[f32]) {
        let _ = self.tx.send(Item::Replica(at, pcm.to_vec()));
    }

    /// The user's audio (16 kHz) as it arrived, at its media time.
    pub fn heard(&self, at: Duration, pcm: &[f32]) {
        let _ = self.tx.send(Item::Heard(at, pcm.to_vec()));
    }

    /// A frame of the replica's video as it went out.
    pub fn video(&self, frame: EncodedFrame) {
        let _ = self.tx.send(Item::Video(frame));
    }

    /// Writes what is left and closes the file (blocking: call it off the
    /// async threads).
    pub fn finish(self) -> Result<Recorded, RecordError> {
        drop(self.tx);
        self.thread.join().map_err(|_| RecordError::Thread("it panicked".into()))?
    }
}

/// The mixer and the muxer of one recording.
struct Mix {
    path: PathBuf,
    /// The file has a video track.
    video: bool,
    muxer: Option<Muxer<BufWriter<File>>>,
    /// The media time the file starts at (its first keyframe, or its first
    /// sound without video).
    origin: Option<Duration>,
    /// Audio that came before the origin was known, and the media time of
    /// the replica's first sound among it.
    early: Vec<Item>,
    first_sound: Option<Duration>,
    /// Samples not yet written, starting at sample `written`.
    pending: VecDeque<f32>,
    written: u64,
    /// Where the replica's audio ends, and where the user's next sample goes.
    replica_end: u64,
    user_next: Option<u64>,
    upsample: StreamResampler,
    encoder: opus::Encoder,
    /// The 20 ms being encoded, and its packet.
    frame: Vec<f32>,
    packet: Vec<u8>,
    last_video: Option<f64>,
    video_frames: u64,
    pictures_refused: u64,
    late_stretches: u64,
}

impl Mix {
    fn new(path: PathBuf) -> Result<Self, RecordError> {
        let mut encoder = opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(OPUS_BPS))?;
        Ok(Self {
            path,
            video: false,
            muxer: None,
            origin: None,
            early: Vec::new(),
            first_sound: None,
            pending: VecDeque::new(),
            written: 0,
            replica_end: 0,
            user_next: None,
            upsample: StreamResampler::new(crate::edge::peer::ENGINE_RATE, RATE)?,
            encoder,
            frame: vec![0.0; FRAME],
            packet: vec![0; 4000],
            last_video: None,
            video_frames: 0,
            pictures_refused: 0,
            late_stretches: 0,
        })
    }

    fn open(&mut self, video: Option<(usize, usize)>) -> Result<(), RecordError> {
        let file = File::create(&self.path).map_err(|source| RecordError::Io { path: self.path.clone(), source })?;
        let mut builder = MuxerBuilder::new(BufWriter::new(file)).audio(AudioCodec::Opus, RATE, 1);
        if let Some((width, height)) = video {
            builder = builder.video(VideoCodec::H264, width as u32, height as u32, f64::from(VIDEO_OUT_FPS));
        }
        self.video = video.is_some();
        self.muxer = Some(builder.build()?);
        Ok(())
    }

    fn begin(&mut self, origin: Duration, video: Option<(usize, usize)>) -> Result<(), RecordError> {
        self.origin = Some(origin);
        self.open(video)
    }

    /// Takes the sound that came before the file began.
    fn replay(&mut self) -> Result<(), RecordError> {
        for early in std::mem::take(&mut self.early) {
            self.take(early)?;
        }
        Ok(())
    }

    /// The sample position of media time `at` (negative before the origin).
    fn position(&self, origin: Duration, at: Duration) -> i64 {
        ((at.as_secs_f64() - origin.as_secs_f64()) * f64::from(RATE)).round() as i64
    }

    fn take(&mut self, item: Item) -> Result<(), RecordError> {
        let Some(origin) = self.origin else {
            match item {
                Item::Video(frame) if frame.keyframe => {
                    let (at, size) = (frame.at, (frame.width, frame.height));
                    self.begin(at, Some(size))?;
                    self.take(Item::Video(frame))?;
                    self.replay()?;
                }
                // Pictures before the first keyframe cannot be decoded.
                Item::Video(_) => {}
                audio => {
                    let waited = match &audio {
                        Item::Replica(at, _) => at.saturating_sub(*self.first_sound.get_or_insert(*at)) >= VIDEO_WAIT,
                        _ => false,
                    };
                    self.early.push(audio);
                    if let (true, Some(first)) = (waited, self.first_sound) {
                        self.begin(first, None)?;
                        self.replay()?;
                    }
                }
            }
            return Ok(());
        };
        match item {
            Item::Video(frame) => self.picture(origin, frame)?,
            Item::Replica(at, pcm) => {
                let start = self.position(origin, at);
                if start + pcm.len() as i64 > 0 {
                    self.lay(start, &pcm);
                    self.replica_end = self.replica_end.max((start + pcm.len() as i64) as u64);
                }
                self.write_until(self.replica_end.saturating_sub(LAG))?;
            }
            Item::Heard(at, pcm) => {
                let pcm = self.upsample.push(&pcm)?;
                // It arrived at `at`: it started that long before.
                let arrived = self.position(origin, at) - pcm.len() as i64;
                if arrived + pcm.len() as i64 <= 0 {
                    return Ok(());
                }
                let counted = self.user_next.map_or(arrived, |n| n as i64);
                let mut start = if counted.abs_diff(arrived) > REANCHOR { arrived } else { counted };
                if start < self.written as i64 {
                    if self.user_next.is_some() {
                        self.late_stretches += 1;
                    }
                    start = self.written as i64;
                }
                self.lay(start, &pcm);
                self.user_next = Some((start + pcm.len() as i64) as u64);
            }
        }
        Ok(())
    }

    /// Adds `pcm` into the mix from sample `start` (clipped at the origin).
    fn lay(&mut self, start: i64, pcm: &[f32]) {
        let skip = (-start).max(0) as usize;
        let start = start.max(0) as u64;
        if start < self.written {
            // Only the replica can come this late (a send burst); its place
            // was written with silence there: keep the rest.
            let behind = (self.written - start) as usize;
            self.lay(self.written as i64, pcm.get(skip + behind..).unwrap_or_default());
            return;
        }
        let at = (start - self.written) as usize;
        let end = at + pcm.len().saturating_sub(skip);
        if self.pending.len() < end {
            self.pending.resize(end, 0.0);
        }
        for (slot, &s) in self.pending.range_mut(at..end).zip(&pcm[skip.min(pcm.len())..]) {
            *slot += s;
        }
    }

    /// Encodes and writes whole frames of the mix up to sample `until`.
    fn write_until(&mut self, until: u64) -> Result<(), RecordError> {
        while self.written + FRAME as u64 <= until {
            for s in &mut self.frame {
                *s = self.pending.pop_front().unwrap_or(0.0).clamp(-1.0, 1.0);
            }
            let n = self.encoder.encode_float(&self.frame, &mut self.packet)?;
            let pts = self.written as f64 / f64::from(RATE);
            if let Some(muxer) = self.muxer.as_mut() {
                muxer.write_audio(pts, &self.packet[..n])?;
            }
            self.written += FRAME as u64;
        }
        Ok(())
    }

    fn picture(&mut self, origin: Duration, frame: EncodedFrame) -> Result<(), RecordError> {
        let pts = frame.at.saturating_sub(origin).as_secs_f64();
        if self.last_video.is_some_and(|last| pts <= last) || frame.at < origin {
            tracing::debug!("recording: a picture at {pts:.3} s out of order, left out");
            return Ok(());
        }
        let Some(muxer) = self.muxer.as_mut().filter(|_| self.video) else {
            if self.pictures_refused == 0 {
                tracing::warn!("recording: pictures came after the recording began as sound only; they are left out");
            }
            self.pictures_refused += 1;
            return Ok(());
        };
        // A picture the muxer refuses is left out; the recording goes on.
        match muxer.write_video(pts, &frame.annex_b, frame.keyframe) {
            Ok(()) => {
                self.last_video = Some(pts);
                self.video_frames += 1;
            }
            Err(e) => {
                self.pictures_refused += 1;
                tracing::warn!("recording: a picture at {pts:.3} s was left out: {e}");
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Recorded, RecordError> {
        if self.origin.is_none() {
            // No picture came: keep the sound.
            let Some(first) = self.first_sound else { return Err(RecordError::Empty) };
            self.begin(first, None)?;
            self.replay()?;
        }
        let end = self.replica_end.max(self.user_next.unwrap_or(0)).max(self.written + self.pending.len() as u64);
        let end = end.div_ceil(FRAME as u64) * FRAME as u64;
        self.write_until(end)?;
        let video_end = self.last_video.map_or(0.0, |last| last + 1.0 / f64::from(VIDEO_OUT_FPS));
        let duration = video_end.max(self.written as f64 / f64::from(RATE));
        let Some(muxer) = self.muxer.take() else { return Err(RecordError::Empty) };
        if self.video_frames == 0 && self.written == 0 {
            return Err(RecordError::Empty);
        }
        let writer = {
            let mut muxer = muxer;
            muxer.finish_in_place()?;
            muxer.into_writer()
        };
        writer.into_inner().map_err(|e| RecordError::Io { path: self.path.clone(), source: e.into_error() })?;
        let bytes = file_size(&self.path)?;
        Ok(Recorded {
            path: self.path,
            duration,
            bytes,
            video_frames: self.video_frames,
            pictures_refused: self.pictures_refused,
            late_stretches: self.late_stretches,
        })
    }
}

fn file_size(path: &Path) -> Result<u64, RecordError> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|source| RecordError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(at: f64, n: usize, hz: f64) -> Vec<f32> {
        (0..n).map(|i| (0.3 * (std::f64::consts::TAU * hz * (at + i as f64 / 48_000.0)).sin()) as f32).collect()
    }

    /// `seconds` of the replica's 20 ms frames from media time `from`.
    fn replica(recorder: &Recorder, from: f64, seconds: f64) {
        for k in 0..(seconds * 50.0).round() as usize {
            let at = from + k as f64 * 0.02;
            recorder.replica_audio(Duration::from_secs_f64(at), &tone(at, FRAME, 440.0));
        }
    }

    fn encoded(encoder: &mut openh264::encoder::Encoder, at: f64, keyframe: bool) -> EncodedFrame {
        if keyframe {
            encoder.force_intra_frame();
        }
        let yuv = openh264::formats::YUVBuffer::new(64, 64);
        let bitstream = encoder.encode(&yuv).unwrap();
        let keyframe = bitstream.frame_type() == openh264::encoder::FrameType::IDR;
        EncodedFrame { at: Duration::from_secs_f64(at), width: 64, height: 64, annex_b: bitstream.to_vec(), keyframe }
    }

    /// (video samples, audio samples) of an MP4 file, as mp4parse reads it.
    fn tracks(path: &Path) -> (usize, usize) {
        let context = mp4parse::read_mp4(&mut std::io::Cursor::new(std::fs::read(path).unwrap())).unwrap();
        let count = |kind: mp4parse::TrackType| {
            context
                .tracks
                .iter()
                .filter(|t| t.track_type == kind)
                .map(|t| t.stsz.as_ref().map_or(0, |s| s.sample_sizes.len().max(s.sample_size as usize)))
                .sum()
        };
        (count(mp4parse::TrackType::Video), count(mp4parse::TrackType::Audio))
    }

    #[test]
    fn without_pictures_the_recording_is_sound_only() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::start(dir.path().join("a.mp4")).unwrap();
        replica(&recorder, 0.5, 3.0);
        let recorded = recorder.finish().unwrap();
        assert_eq!(recorded.video_frames, 0);
        assert!((recorded.duration - 3.0).abs() < 0.03, "{recorded:?}");
        let (video, audio) = tracks(&recorded.path);
        assert_eq!((video, audio), (0, 150));
    }

    #[test]
    fn the_file_starts_at_the_first_keyframe() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::start(dir.path().join("v.mp4")).unwrap();
        let mut encoder = openh264::encoder::Encoder::new().unwrap();
        let _ = encoded(&mut encoder, 0.0, true);
        // A picture that cannot start the file, then the keyframe at 0.08 s.
        recorder.video(encoded(&mut encoder, 0.04, false));
        recorder.video(encoded(&mut encoder, 0.08, true));
        for k in 3..50 {
            recorder.video(encoded(&mut encoder, k as f64 * 0.04, false));
        }
        replica(&recorder, 0.0, 2.0);
        let recorded = recorder.finish().unwrap();
        assert_eq!(recorded.video_frames, 48);
        // Sound before the keyframe is cut: 2 s from 0.08 s.
        assert!((recorded.duration - 1.92).abs() < 0.03, "{recorded:?}");
        let (video, audio) = tracks(&recorded.path);
        assert_eq!(video, 48);
        assert_eq!(audio, 96);
    }

    #[test]
    fn the_users_late_audio_goes_in_at_the_first_free_place() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::start(dir.path().join("u.mp4")).unwrap();
        replica(&recorder, 0.0, 0.02);
        recorder.heard(Duration::from_secs_f64(0.1), &vec![0.1; 1600]);
        replica(&recorder, 0.02, 2.98);
        // The next 100 ms of the user's audio, stamped at 0.3 s, comes after
        // 3 s of the replica: its place (0.1–0.2 s) is long written.
        recorder.heard(Duration::from_secs_f64(0.3), &vec![0.1; 1600]);
        let recorded = recorder.finish().unwrap();
        assert_eq!(recorded.late_stretches, 1);
        assert!((recorded.duration - 3.0).abs() < 0.03, "{recorded:?}");
    }

    #[test]
    fn nothing_sent_is_nothing_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::start(dir.path().join("n.mp4")).unwrap();
        recorder.heard(Duration::from_secs(1), &[0.0; 320]);
        assert!(matches!(recorder.finish(), Err(RecordError::Empty)));
    }
}
