//! Uploaded audio files to mono f32: WAV, FLAC, MP3 and Ogg-Vorbis through
//! symphonia, Ogg-Opus through the `ogg` crate and libopus.
//!
//! [`decode`] gives the samples at the file's own rate; [`decode_to`] streams
//! them through a [`StreamResampler`] as they are decoded, so a long 48 kHz
//! upload is never held at 48 kHz. Channels are averaged. Every failure is a
//! [`DecodeError`] that says what was wrong; a packet that does not decode
//! fails the file rather than leaving a silent gap, and a sample that is not
//! a finite number fails it too. Decoding stops as soon as the audio passes
//! `max_duration`. A WAV written as a stream (sizes 0xFFFFFFFF, as OpenAI's
//! and tete's `/v1/audio/speech` send it) holds audio to the end of the file.

use std::io::Cursor;
use std::time::Duration;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::audio::well_known as codecs;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::well_known as formats;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::ogg_opus;
use super::resample::{MAX_RATE, MIN_RATE, ResampleError, StreamResampler};

/// Container and codec of a decoded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Wav,
    Flac,
    Mp3,
    OggOpus,
    OggVorbis,
    OggFlac,
}

impl std::fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Wav => "WAV",
            Self::Flac => "FLAC",
            Self::Mp3 => "MP3",
            Self::OggOpus => "Ogg-Opus",
            Self::OggVorbis => "Ogg-Vorbis",
            Self::OggFlac => "Ogg-FLAC",
        })
    }
}

/// Mono audio out of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Samples in [-1, 1] as the file holds them (a file's gain may exceed it).
    pub samples: Vec<f32>,
    /// Rate of `samples`, in Hz.
    pub sample_rate: u32,
    /// Rate of the file (Opus: 48 kHz, the rate it decodes at).
    pub source_rate: u32,
    pub format: AudioFormat,
}

impl Decoded {
    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the file is empty")]
    Empty,
    #[error("the file holds no audio samples")]
    NoAudio,
    #[error("the file is cut short: {0}")]
    Truncated(String),
    #[error("the file is damaged: {0}")]
    Corrupt(String),
    #[error("unsupported audio: {0} (WAV, FLAC, MP3, Ogg-Opus and Ogg-Vorbis are)")]
    Unsupported(String),
    #[error("the audio is longer than the limit of {limit_seconds} s")]
    TooLong { limit_seconds: f64 },
    /// A third-party decoder panicked; the panic was contained.
    #[error("the decoder failed on this file: {0}")]
    DecoderPanic(String),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// Where decoded mono samples go.
trait Sink {
    fn start(&mut self, rate: u32) -> Result<(), DecodeError>;
    fn push(&mut self, mono: &[f32]) -> Result<(), DecodeError>;
}

/// Keeps the samples at the file's rate.
#[derive(Default)]
struct Collect {
    samples: Vec<f32>,
}

impl Sink for Collect {
    fn start(&mut self, _rate: u32) -> Result<(), DecodeError> {
        Ok(())
    }

    fn push(&mut self, mono: &[f32]) -> Result<(), DecodeError> {
        self.samples.extend_from_slice(mono);
        Ok(())
    }
}

/// Resamples as samples arrive.
struct ResampleTo {
    target: u32,
    resampler: Option<StreamResampler>,
    samples: Vec<f32>,
}

impl Sink for ResampleTo {
    fn start(&mut self, rate: u32) -> Result<(), DecodeError> {
        self.resampler = Some(StreamResampler::new(rate, self.target)?);
        Ok(())
    }

    fn push(&mut self, mono: &[f32]) -> Result<(), DecodeError> {
        let r = self.resampler.as_mut().ok_or_else(|| DecodeError::Corrupt("audio before its format".into()))?;
        Ok(r.push_into(mono, &mut self.samples)?)
    }
}

/// The decoders' output: counts frames against the limit, checks them,
/// mixes channels down and hands mono samples to the sink.
pub(super) struct Output<'a> {
    sink: &'a mut dyn Sink,
    limit: Duration,
    rate: u32,
    max_frames: u64,
    frames: u64,
    mono: Vec<f32>,
}

impl Output<'_> {
    /// Sets the rate every later sample is at.
    pub(super) fn start(&mut self, rate: u32) -> Result<(), DecodeError> {
        if rate == 0 {
            return Err(DecodeError::Corrupt("the sample rate is 0 Hz".into()));
        }
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(DecodeError::Unsupported(format!("a sample rate of {rate} Hz ({MIN_RATE}–{MAX_RATE} Hz are)")));
        }
        self.rate = rate;
        self.max_frames = (self.limit.as_secs_f64() * rate as f64).floor() as u64;
        self.sink.start(rate)
    }

    /// Takes one block of planar audio (one `Vec` per channel, equal lengths).
    fn push_planes(&mut self, planes: &[Vec<f32>]) -> Result<(), DecodeError> {
        match planes {
            [] => Ok(()),
            [mono] => self.push_mono(mono),
            _ => {
                let n = planes[0].len();
                let scale = 1.0 / planes.len() as f32;
                let mut mono = std::mem::take(&mut self.mono);
                mono.clear();
                mono.resize(n, 0.0);
                for plane in planes {
                    for (m, &s) in mono.iter_mut().zip(plane) {
                        *m += s;
                    }
                }
                mono.iter_mut().for_each(|m| *m *= scale);
                let result = self.push_mono(&mono);
                self.mono = mono;
                result
            }
        }
    }

    /// Takes mono samples at the rate given to `start`.
    pub(super) fn push_mono(&mut self, mono: &[f32]) -> Result<(), DecodeError> {
        if mono.is_empty() {
            return Ok(());
        }
        if self.rate == 0 {
            return Err(DecodeError::Corrupt("audio before its format".into()));
        }
        if let Some(i) = mono.iter().position(|s| !s.is_finite()) {
            return Err(DecodeError::Corrupt(format!("sample {} is not a finite number", self.frames + i as u64)));
        }
        self.frames += mono.len() as u64;
        if self.frames > self.max_frames {
            return Err(DecodeError::TooLong { limit_seconds: self.limit.as_secs_f64() });
        }
        self.sink.push(mono)
    }
}

/// Decodes a file into mono f32 at its own rate. The whole file is held at
/// that rate: for long files that a stage wants at a lower one, use
/// [`decode_to`].
pub fn decode(bytes: &[u8], max_duration: Duration) -> Result<Decoded, DecodeError> {
    let mut sink = Collect::default();
    let (format, rate) = run(bytes, max_duration, &mut sink)?;
    Ok(Decoded { samples: sink.samples, sample_rate: rate, source_rate: rate, format })
}

/// Decodes a file into mono f32 at `target_rate`, resampling as it goes.
pub fn decode_to(bytes: &[u8], target_rate: u32, max_duration: Duration) -> Result<Decoded, DecodeError> {
    // Refuse a bad target before decoding anything.
    super::resample::check_rate(target_rate)?;
    let mut sink = ResampleTo { target: target_rate, resampler: None, samples: Vec::new() };
    let (format, rate) = run(bytes, max_duration, &mut sink)?;
    let mut samples = sink.samples;
    if let Some(mut r) = sink.resampler {
        r.flush_into(&mut samples)?;
    }
    Ok(Decoded { samples, sample_rate: target_rate, source_rate: rate, format })
}

/// Picks the decoder, contains any panic of the third-party ones, and checks
/// that something was decoded. Returns the format and the file's rate.
fn run(bytes: &[u8], max_duration: Duration, sink: &mut dyn Sink) -> Result<(AudioFormat, u32), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let sized = sized_streaming_wav(bytes);
    let bytes = sized.as_deref().unwrap_or(bytes);
    let mut out = Output { sink, limit: max_duration, rate: 0, max_frames: 0, frames: 0, mono: Vec::new() };
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if ogg_opus::is_ogg_opus(bytes) {
            ogg_opus::decode(bytes, &mut out).map(|()| AudioFormat::OggOpus)
        } else {
            decode_symphonia(bytes, &mut out)
        }
    }));
    let format = match decoded {
        Ok(result) => result?,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!("audio decoder panicked: {what}");
            return Err(DecodeError::DecoderPanic(what));
        }
    };
    if out.frames == 0 {
        return Err(DecodeError::NoAudio);
    }
    Ok((format, out.rate))
}

/// A copy of a WAV written as a stream, with the sizes it could not know
/// when its header left (0xFFFFFFFF) set to what the file holds: the data
/// runs to the end, cut to whole blocks. `None` for any other file, so a
/// WAV that states its size and is cut short is still reported truncated.
fn sized_streaming_wav(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let read_u32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut at = 12;
    let mut block_align = 1;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), read_u32(at + 4)) {
        let body = at + 8;
        if id == b"data" {
            if size != u32::MAX {
                return None;
            }
            let len = bytes.len() - body;
            let len = len - len % block_align;
            let mut sized = bytes[..body + len].to_vec();
            sized[at + 4..body].copy_from_slice(&u32::try_from(len).ok()?.to_le_bytes());
            let riff = u32::try_from(sized.len() - 8).ok()?;
            sized[4..8].copy_from_slice(&riff.to_le_bytes());
            return Some(sized);
        }
        if id == b"fmt "
            && let Some(b) = bytes.get(body + 12..body + 14)
        {
            block_align = usize::from(u16::from_le_bytes([b[0], b[1]])).max(1);
        }
        at = body.checked_add(size as usize + (size as usize & 1))?;
    }
    None
}

fn symphonia_error(e: SymphoniaError) -> DecodeError {
    match e {
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated("the data ends in the middle of a block".into())
        }
        SymphoniaError::IoError(io) => DecodeError::Corrupt(io.to_string()),
        SymphoniaError::DecodeError(what) => DecodeError::Corrupt(what.into()),
        SymphoniaError::Unsupported(what) => DecodeError::Unsupported(what.into()),
        SymphoniaError::LimitError(what) => DecodeError::Corrupt(format!("past a decoder limit: {what}")),
        SymphoniaError::ResetRequired => DecodeError::Unsupported("a stream that changes format midway".into()),
        other => DecodeError::Corrupt(other.to_string()),
    }
}

fn decode_symphonia(bytes: &[u8], out: &mut Output<'_>) -> Result<AudioFormat, DecodeError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut reader = symphonia::default::get_probe()
        .probe(&Hint::new(), source, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => DecodeError::Unsupported("not a recognised audio file".into()),
            other => symphonia_error(other),
        })?;
    let container = reader.format_info().format;
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(|| DecodeError::Unsupported("a file with no audio track".into()))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .cloned()
        .ok_or_else(|| DecodeError::Unsupported("a track without audio codec parameters".into()))?;
    let format = match (container, params.codec) {
        (formats::FORMAT_ID_WAVE, _) => AudioFormat::Wav,
        (formats::FORMAT_ID_FLAC, _) => AudioFormat::Flac,
        (formats::FORMAT_ID_MP3, _) => AudioFormat::Mp3,
        (formats::FORMAT_ID_OGG, codecs::CODEC_ID_VORBIS) => AudioFormat::OggVorbis,
        (formats::FORMAT_ID_OGG, codecs::CODEC_ID_FLAC) => AudioFormat::OggFlac,
        _ => {
            let name = reader.format_info().long_name;
            return Err(DecodeError::Unsupported(format!("this codec in {name}")));
        }
    };
    // WAV and FLAC headers state the exact length. An MP3's is exact when it
    // comes from a Xing/Info frame with a LAME tag (symphonia then also knows
    // the encoder delay) and an estimate from the bit rate otherwise.
    let declared = match format {
        AudioFormat::Wav | AudioFormat::Flac => track.num_frames.filter(|&n| n > 0),
        AudioFormat::Mp3 if track.delay.is_some() => track.num_frames.filter(|&n| n > 0),
        _ => None,
    };
    let track_id = track.id;
    let rate = params.sample_rate.ok_or_else(|| DecodeError::Corrupt("no sample rate".into()))?;
    let options = AudioDecoderOptions::default().verify(true);
    let mut decoder =
        symphonia::default::get_codecs().make_audio_decoder(&params, &options).map_err(symphonia_error)?;
    out.start(rate)?;
    let mut planes: Vec<Vec<f32>> = Vec::new();
    while let Some(packet) = reader.next_packet().map_err(symphonia_error)? {
        if packet.track_id != track_id {
            continue;
        }
        let audio = decoder.decode(&packet).map_err(symphonia_error)?;
        audio.copy_to_vecs_planar::<f32>(&mut planes);
        out.push_planes(&planes)?;
    }
    if decoder.finalize().verify_ok == Some(false) {
        return Err(DecodeError::Corrupt("the decoded audio does not match the checksum the encoder stored".into()));
    }
    if let Some(n) = declared
        && out.frames < n
    {
        return Err(DecodeError::Truncated(format!("{} of the {n} samples its header declares", out.frames)));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::measure::tone;
    use std::f64::consts::PI;
    use std::path::Path;
    use std::process::Command;

    const LIMIT: Duration = Duration::from_secs(600);
    const SPEECH: &str = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";

    fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<f32> {
        (0..n).map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32).collect()
    }

    /// A WAV file: 16-bit PCM, or 32-bit float when `float`; `samples` interleaved.
    fn wav(rate: u32, channels: u16, samples: &[f32], float: bool) -> Vec<u8> {
        let (tag, bits): (u16, u16) = if float { (3, 32) } else { (1, 16) };
        let data_len = samples.len() as u32 * bits as u32 / 8;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * channels as u32 * bits as u32 / 8).to_le_bytes());
        b.extend_from_slice(&(channels * bits / 8).to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        for &s in samples {
            if float {
                b.extend_from_slice(&s.to_le_bytes());
            } else {
                b.extend_from_slice(&((s * 32767.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes());
            }
        }
        b
    }

    /// Runs a real encoder (installed by scripts/setup-system.sh) on a WAV file.
    fn encode(tool: &str, args: &[&str], input: &[u8], out_name: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("in.wav"), dir.path().join(out_name));
        std::fs::write(&src, input).unwrap();
        let mut cmd = Command::new(tool);
        cmd.args(args);
        match tool {
            "flac" | "oggenc" => cmd.arg("-o").arg(&dst).arg(&src),
            _ => cmd.arg(&src).arg(&dst),
        };
        let status =
            cmd.output().unwrap_or_else(|e| panic!("running {tool} ({e}): install it with scripts/setup-system.sh"));
        assert!(status.status.success(), "{tool}: {}", String::from_utf8_lossy(&status.stderr));
        std::fs::read(&dst).unwrap()
    }

    fn flac(w: &[u8]) -> Vec<u8> {
        encode("flac", &["--silent", "--best", "--no-padding"], w, "out.flac")
    }
    fn mp3(w: &[u8]) -> Vec<u8> {
        encode("lame", &["--quiet", "-b", "128"], w, "out.mp3")
    }
    fn opus(w: &[u8]) -> Vec<u8> {
        encode("opusenc", &["--quiet", "--bitrate", "96"], w, "out.opus")
    }
    fn vorbis(w: &[u8]) -> Vec<u8> {
        encode("oggenc", &["--quiet", "-q", "6"], w, "out.ogg")
    }

    fn speech() -> (Vec<u8>, Vec<f32>) {
        let bytes = std::fs::read(SPEECH).expect("pocketsphinx-testdata is installed by scripts/setup-system.sh");
        // The file is canonical 16-bit mono PCM: 44-byte header, then samples.
        let pcm = bytes[44..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0).collect();
        (bytes, pcm)
    }

    #[test]
    fn wav_pcm_float_and_stereo_decode_exactly() {
        let x = sine(440.0, 22_050, 5_000, 0.5);
        let d = decode(&wav(22_050, 1, &x, true), LIMIT).unwrap();
        assert_eq!((d.format, d.sample_rate, d.source_rate), (AudioFormat::Wav, 22_050, 22_050));
        assert_eq!(d.samples, x);
        let d = decode(&wav(22_050, 1, &x, false), LIMIT).unwrap();
        for (i, (a, b)) in d.samples.iter().zip(&x).enumerate() {
            assert!((a - b).abs() <= 1.0 / 32768.0, "sample {i}: {a} vs {b}");
        }
        // Stereo is averaged: L = s, R = -s/2 gives s/4.
        let lr: Vec<f32> = x.iter().flat_map(|&s| [s, -0.5 * s]).collect();
        let d = decode(&wav(22_050, 2, &lr, true), LIMIT).unwrap();
        assert_eq!(d.samples.len(), x.len());
        for (i, (a, b)) in d.samples.iter().zip(&x).enumerate() {
            assert!((a - 0.25 * b).abs() < 1e-7, "sample {i}: {a} vs {}", 0.25 * b);
        }
    }

    #[test]
    fn a_streamed_wav_holds_audio_to_the_end_of_the_file() {
        let x = sine(440.0, 24_000, 5_001, 0.5);
        let mut w = wav(24_000, 1, &x, false);
        let data = w.windows(4).position(|c| c == b"data").unwrap();
        w[4..8].copy_from_slice(&[0xff; 4]);
        w[data + 4..data + 8].copy_from_slice(&[0xff; 4]);
        let d = decode(&w, LIMIT).unwrap();
        assert_eq!(d.samples.len(), x.len());
        // Cut mid-sample: the whole samples before the cut.
        let d = decode(&w[..w.len() - 3], LIMIT).unwrap();
        assert_eq!(d.samples.len(), x.len() - 2);
        // A stated size that the file falls short of is still truncation.
        let mut stated = wav(24_000, 1, &x, false);
        stated.truncate(stated.len() - 100);
        assert!(matches!(decode(&stated, LIMIT), Err(DecodeError::Truncated(_))));
    }

    #[test]
    fn real_speech_wav_and_its_flac_decode_to_the_same_samples() {
        let (bytes, pcm) = speech();
        let d = decode(&bytes, LIMIT).unwrap();
        assert_eq!((d.format, d.sample_rate), (AudioFormat::Wav, 16_000));
        assert_eq!(d.samples, pcm);
        let f = decode(&flac(&bytes), LIMIT).unwrap();
        assert_eq!((f.format, f.sample_rate), (AudioFormat::Flac, 16_000));
        assert_eq!(f.samples, pcm, "FLAC is lossless");
    }

    #[test]
    fn mp3_keeps_length_pitch_and_level() {
        let x = sine(1000.0, 44_100, 44_100, 0.5);
        let d = decode(&mp3(&wav(44_100, 1, &x, false)), LIMIT).unwrap();
        assert_eq!((d.format, d.sample_rate), (AudioFormat::Mp3, 44_100));
        // The LAME tag's encoder delay and padding are trimmed: same length, no shift.
        assert_eq!(d.samples.len(), x.len());
        let (amp, lag) = tone(&d.samples[4410..39_690], 44_100, 1000.0);
        // Lossy: LAME at 128 kbit/s gives back 0.475 of 0.5 (-0.45 dB).
        assert!((amp - 0.5).abs() < 0.04, "amplitude {amp}");
        assert!(lag.abs() < 0.5, "shifted by {lag} samples");
    }

    #[test]
    fn ogg_vorbis_keeps_length_pitch_and_level() {
        let x = sine(1000.0, 22_050, 22_050, 0.5);
        let d = decode(&vorbis(&wav(22_050, 1, &x, false)), LIMIT).unwrap();
        assert_eq!((d.format, d.sample_rate), (AudioFormat::OggVorbis, 22_050));
        assert_eq!(d.samples.len(), x.len());
        let (amp, lag) = tone(&d.samples[2205..19_845], 22_050, 1000.0);
        assert!((amp - 0.5).abs() < 0.02, "amplitude {amp}");
        assert!(lag.abs() < 0.5, "shifted by {lag} samples");
    }

    #[test]
    fn ogg_opus_honours_pre_skip_granule_and_output_gain() {
        for rate in [48_000, 16_000] {
            let x = sine(1000.0, rate, rate as usize, 0.25);
            let file = opus(&wav(rate, 1, &x, false));
            let d = decode(&file, LIMIT).unwrap();
            assert_eq!((d.format, d.sample_rate), (AudioFormat::OggOpus, 48_000));
            // The last granule position trims the padding: exactly one second at 48 kHz.
            assert_eq!(d.samples.len(), 48_000, "from {rate} Hz");
            let (amp, lag) = tone(&d.samples[4800..43_200], 48_000, 1000.0);
            assert!((amp - 0.25).abs() < 0.01, "from {rate} Hz: amplitude {amp}");
            // Without the pre-skip (312 samples for opusenc) the tone would be late:
            // it starts at the first sample and stays in phase.
            assert!(lag.abs() < 2.0, "from {rate} Hz: shifted by {lag} samples (modulo 48)");
            let onset = d.samples.iter().position(|s| s.abs() > 0.05).unwrap();
            assert!(onset < 12, "from {rate} Hz: the tone starts at sample {onset}");

            // Set OpusHead's output gain to +6.02 dB (×2) and fix the page CRC.
            let mut loud = file.clone();
            let head = 27 + loud[26] as usize;
            loud[head + 16..head + 18].copy_from_slice(&1541i16.to_le_bytes());
            fix_first_page_crc(&mut loud);
            let d = decode(&loud, LIMIT).unwrap();
            let (amp, _) = tone(&d.samples[4800..43_200], 48_000, 1000.0);
            assert!((amp - 0.5).abs() < 0.02, "from {rate} Hz with +6 dB gain: amplitude {amp}");
        }
        // Stereo is averaged too.
        let lr: Vec<f32> = sine(1000.0, 48_000, 48_000, 0.25).iter().flat_map(|&s| [s, s]).collect();
        let d = decode(&opus(&wav(48_000, 2, &lr, false)), LIMIT).unwrap();
        let (amp, _) = tone(&d.samples[4800..43_200], 48_000, 1000.0);
        assert!((amp - 0.25).abs() < 0.01, "stereo amplitude {amp}");
    }

    fn ogg_crc(data: &[u8]) -> u32 {
        let mut crc = 0u32;
        for &b in data {
            crc ^= (b as u32) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
            }
        }
        crc
    }

    fn fix_first_page_crc(file: &mut [u8]) {
        let segments = file[26] as usize;
        let len = 27 + segments + file[27..27 + segments].iter().map(|&s| s as usize).sum::<usize>();
        file[22..26].fill(0);
        let crc = ogg_crc(&file[..len]);
        file[22..26].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn decode_to_resamples_while_decoding_like_one_shot() {
        let x = sine(1000.0, 44_100, 30_000, 0.5);
        let file = wav(44_100, 1, &x, true);
        let d = decode_to(&file, 16_000, LIMIT).unwrap();
        assert_eq!((d.sample_rate, d.source_rate), (16_000, 44_100));
        let whole = crate::audio::resample(&x, 44_100, 16_000).unwrap();
        assert_eq!(d.samples.len(), whole.len());
        assert_eq!(d.samples.len(), (30_000u64 * 16_000).div_ceil(44_100) as usize);
        for (i, (a, b)) in d.samples.iter().zip(&whole).enumerate() {
            assert!((a - b).abs() < 1e-5, "sample {i}: {a} vs {b}");
        }
        // Opus at 48 kHz to the hearing rate: a third of the samples.
        let d = decode_to(&opus(&wav(16_000, 1, &sine(1000.0, 16_000, 8_000, 0.25), false)), 16_000, LIMIT).unwrap();
        assert_eq!((d.samples.len(), d.source_rate), (8_000, 48_000));
    }

    #[test]
    fn bad_files_get_the_error_that_says_why() {
        let x = sine(440.0, 16_000, 16_000, 0.5);
        let w = wav(16_000, 1, &x, false);
        assert!(matches!(decode(&[], LIMIT), Err(DecodeError::Empty)));
        assert!(matches!(decode(b"this is not audio at all, just some text", LIMIT), Err(DecodeError::Unsupported(_))));
        assert!(matches!(decode(&wav(16_000, 1, &[], false), LIMIT), Err(DecodeError::NoAudio)));
        let e = decode(&w, Duration::from_millis(500)).unwrap_err();
        assert!(matches!(e, DecodeError::TooLong { limit_seconds } if limit_seconds == 0.5), "{e}");
        let mut nan = x.clone();
        nan[100] = f32::NAN;
        let e = decode(&wav(16_000, 1, &nan, true), LIMIT).unwrap_err();
        assert!(matches!(&e, DecodeError::Corrupt(m) if m.contains("sample 100")), "{e}");
        let e = decode(&w[..w.len() / 2], LIMIT).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated(_)), "half a WAV: {e}");

        let f = flac(&w);
        let e = decode(&f[..f.len() * 2 / 3], LIMIT).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated(_)), "two thirds of a FLAC: {e}");
        // (No PADDING block, so the middle of the file is audio.)
        let mut damaged = f.clone();
        let mid = damaged.len() / 2;
        damaged[mid..mid + 16].iter_mut().for_each(|b| *b ^= 0x5a);
        let e = decode(&damaged, LIMIT).unwrap_err();
        assert!(matches!(e, DecodeError::Corrupt(_)), "damaged FLAC: {e}");

        let m = mp3(&w);
        let e = decode(&m[..m.len() / 2], LIMIT).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated(_)), "half an MP3 with a LAME tag: {e}");

        let o = opus(&w);
        let e = decode(&o[..o.len() - 10], LIMIT).unwrap_err();
        assert!(matches!(e, DecodeError::Truncated(_)), "Ogg-Opus without its last bytes: {e}");
        let mut damaged = o.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        let e = decode(&damaged, LIMIT).unwrap_err();
        assert!(matches!(&e, DecodeError::Corrupt(m) if m.contains("CRC")), "damaged Ogg page: {e}");
        let e = decode_to(&w, 10, LIMIT).unwrap_err();
        assert!(matches!(e, DecodeError::Resample(ResampleError::Rate(10))), "{e}");
    }

    /// A fixed-seed xorshift.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Decodes `bytes`; whatever the outcome, no decoder may have panicked
    /// and every sample must be finite.
    fn survives(bytes: &[u8], what: &str) {
        match decode(bytes, Duration::from_secs(30)) {
            Ok(d) => assert!(d.samples.iter().all(|s| s.is_finite()), "{what}: non-finite sample"),
            Err(DecodeError::DecoderPanic(p)) => panic!("{what}: a decoder panicked: {p}"),
            Err(_) => {}
        }
    }

    #[test]
    fn random_bytes_truncations_and_bit_flips_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let x = sine(440.0, 16_000, 8_000, 0.5);
        let w = wav(16_000, 1, &x, false);
        let files =
            [("wav", w.clone()), ("flac", flac(&w)), ("mp3", mp3(&w)), ("opus", opus(&w)), ("vorbis", vorbis(&w))];
        // Random bytes, bare and behind each format's magic.
        let magics: [&[u8]; 6] =
            [b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS\x00\x02", b"ID3\x04\x00", b"\xff\xfb"];
        for i in 0..400 {
            let mut bytes = magics[i % magics.len()].to_vec();
            let n = rng.below(3000);
            bytes.extend((0..n).map(|_| rng.next() as u8));
            survives(&bytes, &format!("random input {i}"));
        }
        for (name, file) in &files {
            for _ in 0..60 {
                let cut = rng.below(file.len());
                survives(&file[..cut], &format!("{name} cut at {cut}"));
            }
            for k in 0..60 {
                let mut damaged = file.clone();
                for _ in 0..1 + k % 4 {
                    let at = rng.below(damaged.len());
                    damaged[at] ^= 1 << rng.below(8);
                }
                survives(&damaged, &format!("{name} with flipped bits ({k})"));
            }
        }
        // The untouched files decode.
        for (name, file) in &files {
            assert!(decode(file, LIMIT).is_ok(), "{name}");
        }
        assert!(Path::new(SPEECH).exists());
    }
}
