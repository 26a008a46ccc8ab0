//! An external voice: any OpenAI-compatible `POST {base_url}/audio/speech`
//! server, for a persona whose `layers.tts.tts_engine` is `http`.
//!
//! The client asks for `response_format: "pcm"` (OpenAI's: 24 kHz, 16-bit
//! little-endian, mono, no header) and turns the body into 48 kHz chunks as
//! it arrives, on the same clock convention as the resident
//! [`Speaker`](super::Speaker): seconds since the speaker's first phrase,
//! counted in output samples. External audio comes without phoneme timings;
//! the face derives its visemes from the audio.
//!
//! Failures are typed ([`ExternalTtsError`]) and bounded: the connection
//! ([`Timeouts::connect`]), the wait from sending the request to the first
//! audio bytes ([`Timeouts::first_byte`]) and the gap between two pieces of
//! the body ([`Timeouts::idle`]). Only a failure to connect is retried, a
//! couple of times with a short backoff; nothing is retried once a response
//! has begun, so audio is never repeated.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::OUTPUT_RATE;
use crate::audio::{ResampleError, StreamResampler};
use crate::remote::{SendError, error_chain};

/// The rate of OpenAI's `pcm` response format.
pub const PCM_RATE: u32 = 24_000;

/// Where the external voice is and how to ask it (`layers.tts`).
#[derive(Debug, Clone)]
pub struct ExternalVoiceConfig {
    /// Base URL up to and including `/v1`, e.g. `https://api.openai.com/v1`;
    /// requests go to `{base_url}/audio/speech`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer`.
    pub api_key: Option<String>,
    /// The server's model, e.g. `tts-1` or `gpt-4o-mini-tts`.
    pub model: String,
    /// The server's voice (`layers.tts.external_voice_id`), e.g. `alloy`.
    pub voice: String,
    /// OpenAI's `speed` (0.25–4.0 there); `None` leaves the server's default.
    pub speed: Option<f32>,
    /// Added to every request.
    pub headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
}

/// How long the client waits, and how often it retries a failed connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Establishing the TCP (and TLS) connection: 3 s.
    pub connect: Duration,
    /// From sending the request to the first bytes of audio, headers
    /// included: 10 s (a cold remote model may take a while).
    pub first_byte: Duration,
    /// Between two pieces of the body once audio has begun: 10 s.
    pub idle: Duration,
    /// Extra attempts after a failure to connect: 2, after 100 ms, then 200 ms.
    pub connect_retries: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(10),
            connect_retries: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExternalTtsError {
    #[error("bad external TTS configuration: {0}")]
    Config(String),
    #[error("cannot reach the TTS server at {url} ({attempts} attempts): {reason}")]
    Connect { url: String, attempts: u32, reason: String },
    #[error("the TTS server at {url} answered {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("the TTS server at {url} sent nothing for {waited:?} ({stage})")]
    Timeout { url: String, stage: &'static str, waited: Duration },
    #[error("the TTS server at {url} sent bad audio: {reason}")]
    Malformed { url: String, reason: String },
    #[error("the connection to the TTS server at {url} broke: {reason}")]
    Broken { url: String, reason: String },
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// The body of the request, in OpenAI's shape.
#[derive(Debug, Serialize)]
struct SpeechRequest<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f32>,
}

/// A client for one external voice; cheap to clone and shared by sessions.
#[derive(Debug, Clone)]
pub struct ExternalVoice {
    config: Arc<ExternalVoiceConfig>,
    http: reqwest::Client,
    url: String,
}

impl ExternalVoice {
    pub fn new(config: ExternalVoiceConfig) -> Result<Self, ExternalTtsError> {
        if config.model.trim().is_empty() || config.voice.trim().is_empty() {
            return Err(ExternalTtsError::Config("model and voice must both be set".into()));
        }
        let (http, url) =
            crate::remote::client(&config.base_url, "audio/speech", &config.headers, config.timeouts.connect)
                .map_err(ExternalTtsError::Config)?;
        Ok(Self { url, config: Arc::new(config), http })
    }

    /// Where requests go.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the request, retrying only failures to connect; returns the
    /// response once its status is known to be a success.
    async fn request(&self, text: &str, deadline: Instant) -> Result<reqwest::Response, ExternalTtsError> {
        let config = &self.config;
        let body = SpeechRequest {
            model: &config.model,
            input: text,
            voice: &config.voice,
            response_format: "pcm",
            speed: config.speed,
        };
        let timeouts = config.timeouts;
        let build = || {
            let builder = self.http.post(&self.url).json(&body);
            match &config.api_key {
                Some(key) => builder.bearer_auth(key),
                None => builder,
            }
        };
        let url = || self.url.clone();
        let response = crate::remote::send(build, deadline, timeouts.connect_retries, timeouts.idle).await.map_err(
            |e| match e {
                SendError::Timeout => self.timeout("response headers", timeouts.first_byte),
                SendError::Connect { attempts, reason } => ExternalTtsError::Connect { url: url(), attempts, reason },
                SendError::Broken(reason) => ExternalTtsError::Broken { url: url(), reason },
                SendError::Status { status, message } => ExternalTtsError::Status { url: url(), status, message },
            },
        )?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/json") || content_type.starts_with("text/") {
            return Err(self.malformed(format!("the answer is {content_type}, not pcm audio")));
        }
        Ok(response)
    }

    fn timeout(&self, stage: &'static str, waited: Duration) -> ExternalTtsError {
        ExternalTtsError::Timeout { url: self.url.clone(), stage, waited }
    }

    fn malformed(&self, reason: impl Into<String>) -> ExternalTtsError {
        ExternalTtsError::Malformed { url: self.url.clone(), reason: reason.into() }
    }
}

/// One session's external speech: its resampler and clock.
#[derive(Debug)]
pub struct ExternalSpeaker {
    voice: ExternalVoice,
    resampler: StreamResampler,
    /// Output samples given so far: the clock.
    clock: u64,
}

/// A piece of external speech: 48 kHz mono audio starting at `start`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExternalChunk {
    pub audio: Vec<f32>,
    /// Seconds on the speaker's clock of `audio[0]`.
    pub start: f64,
}

impl ExternalChunk {
    pub fn end(&self) -> f64 {
        self.start + self.audio.len() as f64 / f64::from(OUTPUT_RATE)
    }
}

impl ExternalSpeaker {
    pub fn new(voice: ExternalVoice) -> Result<Self, ExternalTtsError> {
        Ok(Self { voice, resampler: StreamResampler::new(PCM_RATE, OUTPUT_RATE)?, clock: 0 })
    }

    /// Seconds of audio given so far.
    pub fn clock(&self) -> f64 {
        self.clock as f64 / f64::from(OUTPUT_RATE)
    }

    /// Asks the server to say `text`; returns once it has answered with a
    /// success status. The audio is read as [`ExternalSpeech::next`] is called;
    /// dropping the speech closes the connection.
    pub async fn say(&mut self, text: &str) -> Result<ExternalSpeech<'_>, ExternalTtsError> {
        let deadline = Instant::now() + self.voice.config.timeouts.first_byte;
        let response = self.voice.request(text, deadline).await?;
        self.resampler.reset();
        Ok(ExternalSpeech { speaker: self, response, deadline, started: false, pcm: Pcm16::default(), done: false })
    }
}

/// The audio of one [`ExternalSpeaker::say`], read as it arrives.
#[derive(Debug)]
pub struct ExternalSpeech<'a> {
    speaker: &'a mut ExternalSpeaker,
    response: reqwest::Response,
    /// When the first audio bytes are due.
    deadline: Instant,
    started: bool,
    pcm: Pcm16,
    /// The end (or a failure) has been read: nothing more is read.
    done: bool,
}

impl ExternalSpeech<'_> {
    /// The next chunk of audio, `None` after the last. A body that ends on
    /// an odd byte, or ends before any audio, is an error.
    pub async fn next(&mut self) -> Option<Result<ExternalChunk, ExternalTtsError>> {
        if self.done {
            return None;
        }
        let result = self.read().await;
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result.transpose()
    }

    async fn read(&mut self) -> Result<Option<ExternalChunk>, ExternalTtsError> {
        let voice = self.speaker.voice.clone();
        let timeouts = voice.config.timeouts;
        let mut samples = Vec::new();
        loop {
            let piece = if self.started {
                tokio::time::timeout(timeouts.idle, self.response.chunk())
                    .await
                    .map_err(|_| voice.timeout("between chunks of audio", timeouts.idle))?
            } else {
                tokio::time::timeout_at(self.deadline, self.response.chunk())
                    .await
                    .map_err(|_| voice.timeout("first bytes of audio", timeouts.first_byte))?
            };
            let piece =
                piece.map_err(|e| ExternalTtsError::Broken { url: voice.url.clone(), reason: error_chain(&e) })?;
            let mut audio = Vec::new();
            match piece {
                Some(bytes) => {
                    self.started |= !bytes.is_empty();
                    self.pcm.push(&bytes, &mut samples);
                    self.speaker.resampler.push_into(&samples, &mut audio)?;
                    samples.clear();
                }
                None => {
                    if !self.started {
                        return Err(voice.malformed("the answer has no audio"));
                    }
                    if self.pcm.pending_byte() {
                        return Err(voice.malformed(format!(
                            "the audio ends on an odd byte ({} bytes): 16-bit samples come in pairs",
                            self.pcm.bytes
                        )));
                    }
                    self.speaker.resampler.flush_into(&mut audio)?;
                    if audio.is_empty() {
                        return Ok(None);
                    }
                }
            }
            if !audio.is_empty() {
                let chunk = ExternalChunk { start: self.speaker.clock(), audio };
                self.speaker.clock += chunk.audio.len() as u64;
                return Ok(Some(chunk));
            }
        }
    }
}

/// 16-bit little-endian samples out of bytes split anywhere.
#[derive(Debug, Default)]
struct Pcm16 {
    /// The first byte of a sample whose second has not arrived.
    carry: Option<u8>,
    /// Bytes taken.
    bytes: u64,
}

impl Pcm16 {
    fn push(&mut self, mut bytes: &[u8], out: &mut Vec<f32>) {
        self.bytes += bytes.len() as u64;
        let sample = |lo: u8, hi: u8| f32::from(i16::from_le_bytes([lo, hi])) / 32768.0;
        if bytes.is_empty() {
            return;
        }
        if let (Some(lo), Some((&hi, rest))) = (self.carry, bytes.split_first()) {
            out.push(sample(lo, hi));
            self.carry = None;
            bytes = rest;
        }
        let pairs = bytes.chunks_exact(2);
        self.carry = pairs.remainder().first().copied();
        out.extend(pairs.map(|p| sample(p[0], p[1])));
    }

    fn pending_byte(&self) -> bool {
        self.carry.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base_url: &str) -> ExternalVoiceConfig {
        ExternalVoiceConfig {
            base_url: base_url.into(),
            api_key: None,
            model: "tts-1".into(),
            voice: "alloy".into(),
            speed: None,
            headers: vec![],
            timeouts: Timeouts::default(),
        }
    }

    #[test]
    fn samples_split_anywhere_read_the_same() {
        let values: Vec<i16> = vec![0, 1, -1, 32767, -32768, 1234, -4321, 256, -256];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let want: Vec<f32> = values.iter().map(|&v| f32::from(v) / 32768.0).collect();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut pcm = Pcm16::default();
                let mut got = Vec::new();
                for piece in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    pcm.push(piece, &mut got);
                }
                assert_eq!(got, want, "split at {a} and {b}");
                assert!(!pcm.pending_byte());
            }
        }
    }

    #[test]
    fn an_odd_byte_is_held_not_dropped() {
        let mut pcm = Pcm16::default();
        let mut got = Vec::new();
        pcm.push(&[1, 0, 7], &mut got);
        assert_eq!(got, vec![1.0 / 32768.0]);
        assert!(pcm.pending_byte());
        pcm.push(&[1], &mut got);
        assert_eq!(got, vec![1.0 / 32768.0, 263.0 / 32768.0]);
        assert!(!pcm.pending_byte());
    }

    #[test]
    fn the_url_and_configuration_are_checked() {
        assert_eq!(
            ExternalVoice::new(config("http://127.0.0.1:9/v1/")).unwrap().url(),
            "http://127.0.0.1:9/v1/audio/speech"
        );
        for bad in ["ftp://example.com/v1", "not a url"] {
            let e = ExternalVoice::new(config(bad)).unwrap_err();
            assert!(matches!(e, ExternalTtsError::Config(_)), "{bad}: {e}");
        }
        let mut c = config("http://127.0.0.1:9/v1");
        c.voice = " ".into();
        assert!(matches!(ExternalVoice::new(c), Err(ExternalTtsError::Config(_))));
        let mut c = config("http://127.0.0.1:9/v1");
        c.headers = vec![("bad header".into(), "x".into())];
        assert!(matches!(ExternalVoice::new(c), Err(ExternalTtsError::Config(_))));
    }

    #[test]
    fn the_request_is_openais_shape_asking_for_pcm() {
        let body = SpeechRequest { model: "tts-1", input: "hi", voice: "alloy", response_format: "pcm", speed: None };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "pcm"})
        );
    }
}
