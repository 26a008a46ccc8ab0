//! Whisper on candle: the model `tete models fetch` leaves in
//! `$TETE_HOME/models/<id>/` (CTranslate2 weights converted to
//! `model.safetensors`, CT2's `config.json`, the Hugging Face
//! `tokenizer.json`), transcribing as OpenAI's `transcribe` does at
//! temperature 0: 30 s windows one after another, each decoded greedily with
//! timestamps, the next starting at the last complete segment's end, the text
//! so far given as the next window's prompt, windows without speech skipped.
//!
//! Unlike OpenAI's, a window shorter than 30 s is not padded to 30 s: the
//! encoder runs on the frames there are plus a little silence (whisper.cpp's
//! `audio_ctx`), see [`EncoderWindow`].

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use tete_kernels::mel::{HOP, N_MELS};
use tokenizers::Tokenizer;

use super::decode::{self, LogitRules, SpecialTokens};
use super::model::Model;
use super::{AsrError, SAMPLE_RATE, Segment, SpeechToText, TranscribeOptions, Transcription, weights, window};

/// A window whose no-speech probability is above this…
const NO_SPEECH_THRESHOLD: f64 = 0.6;
/// …and whose tokens' mean log-probability is below this holds no speech.
const LOGPROB_THRESHOLD: f64 = -1.0;
/// Text that zlib shrinks more than this is a repetition loop.
const COMPRESSION_RATIO_THRESHOLD: f64 = 2.4;
/// Silence after the audio in a short window, in mel frames (10 ms each):
/// 5 s. The shorter the window, the more often tiny.en loops (on 25 cuts of
/// the LibriVox clips, 8-bit decoder: 9 of 25 with 0.5 s, 4 with 1 s, 1 with
/// 1.5–3 s, none with 5 or 8 s), and a loop costs a second decode on the
/// whole 30 s.
pub const DEFAULT_PAD_FRAMES: usize = 500;

/// CTranslate2's `config.json` beside a Whisper model.
#[derive(Debug, Clone, Deserialize)]
pub struct WhisperConfig {
    /// Token ids never sampled (Hugging Face's `suppress_tokens`).
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    /// Token ids not sampled first (`begin_suppress_tokens`: a blank, end-of-text).
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
    /// Language token ids of a multilingual model.
    #[serde(default)]
    pub lang_ids: Vec<u32>,
}

/// How much audio the encoder sees when a window holds less than 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderWindow {
    /// The window's frames plus `pad_frames` of silence, rounded up to an
    /// even count for the stride-2 convolution (whisper.cpp's `audio_ctx`):
    /// the encoder's cost follows the audio's length.
    Fit { pad_frames: usize },
    /// Always 30 s, the rest silence: what Whisper was trained on.
    Full,
}

impl Default for EncoderWindow {
    fn default() -> Self {
        Self::Fit { pad_frames: DEFAULT_PAD_FRAMES }
    }
}

/// A window may hold this many tokens per second of audio (and 16 more);
/// a decode that reaches it is looping. Fast speech is under 8.
const MAX_TOKENS_PER_SECOND: usize = 12;

/// How the decoder's per-token matrices (attention, MLP, output projection)
/// are held on the CPU. The encoder and the cross-attention keys and values
/// are f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderWeights {
    /// f32, widened from the checkpoint's fp16: exact.
    F32,
    /// 8-bit blocks (GGML's Q8_0, what whisper.cpp runs): a decoder step
    /// reads every matrix for one token, so it runs about as fast as bytes
    /// arrive, and these are a quarter of the bytes.
    #[default]
    Q8,
}

/// How to load and run a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WhisperOptions {
    pub window: EncoderWindow,
    pub decoder: DecoderWeights,
}

/// The tokens one window decoded to, keyed by where the window started; a
/// later decode of the same audio, grown, takes them as its draft.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowTokens {
    pub seek: usize,
    pub tokens: Vec<u32>,
}

/// A resident Whisper model: weights, tokenizer and decoding rules, shared
/// read-only; every call keeps its own decoder state.
pub struct Whisper {
    id: String,
    model: Model,
    tokenizer: Tokenizer,
    rules: LogitRules,
    /// (code, token id) of each language; empty for an English-only model.
    languages: Vec<(String, u32)>,
    options: WhisperOptions,
    device: Device,
}

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper")
            .field("id", &self.id)
            .field("dims", &self.model.dims)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Whisper {
    /// Loads the model in `dir` (`$TETE_HOME/models/whisper-tiny.en`) with
    /// the default options; its id is the folder's name.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, AsrError> {
        Self::load_with(dir, device, WhisperOptions::default())
    }

    pub fn load_with(dir: &Path, device: &Device, options: WhisperOptions) -> Result<Self, AsrError> {
        let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let config_path = dir.join("config.json");
        let config: WhisperConfig = std::fs::read_to_string(&config_path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|e| AsrError::Model(format!("{}: {e}", config_path.display())))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| AsrError::Model(format!("{}: {e}", tokenizer_path.display())))?;
        let q8 = options.decoder == DecoderWeights::Q8 && device.is_cpu();
        let model = weights::load(&dir.join(crate::models::convert::OUTPUT), device, q8)?;
        Self::new(id, model, tokenizer, &config, options, device)
    }

    fn new(
        id: String,
        model: Model,
        tokenizer: Tokenizer,
        config: &WhisperConfig,
        options: WhisperOptions,
        device: &Device,
    ) -> Result<Self, AsrError> {
        if model.dims.n_mels != N_MELS {
            return Err(AsrError::Model(format!(
                "{id} takes {} mel bins; the front end computes {N_MELS}",
                model.dims.n_mels
            )));
        }
        let token = |name: &str| {
            tokenizer.token_to_id(name).ok_or_else(|| AsrError::Model(format!("{id}: the tokenizer has no {name}")))
        };
        let no_timestamps = token("<|notimestamps|>")?;
        let tokens = SpecialTokens {
            eot: token("<|endoftext|>")?,
            sot: token("<|startoftranscript|>")?,
            transcribe: tokenizer.token_to_id("<|transcribe|>"),
            sot_prev: token("<|startofprev|>")?,
            no_speech: token("<|nospeech|>").or_else(|_| token("<|nocaptions|>"))?,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
        };
        // OpenAI's rule: a vocabulary of 51865 or more is the multilingual one.
        let multilingual = model.dims.n_vocab >= 51865;
        let languages = if multilingual {
            config
                .lang_ids
                .iter()
                .map(|&id| {
                    let name = tokenizer.id_to_token(id).unwrap_or_default();
                    let code = name.trim_start_matches("<|").trim_end_matches("|>").to_string();
                    (code, id)
                })
                .collect()
        } else {
            Vec::new()
        };
        if multilingual && (languages.is_empty() || tokens.transcribe.is_none()) {
            return Err(AsrError::Model(format!("{id}: multilingual, but no language or task tokens")));
        }
        // Every special token but end-of-text is never sampled, besides the config's list.
        let mut suppress = config.suppress_ids.clone();
        suppress.extend(tokens.eot + 1..tokens.timestamp_begin);
        suppress.sort_unstable();
        suppress.dedup();
        let rules = LogitRules { tokens, suppress, suppress_begin: config.suppress_ids_begin.clone() };
        Ok(Self { id, model, tokenizer, rules, languages, options, device: device.clone() })
    }

    pub fn options(&self) -> WhisperOptions {
        self.options
    }

    /// Whether the model knows languages other than English.
    pub fn is_multilingual(&self) -> bool {
        !self.languages.is_empty()
    }

    /// Transcribes, taking the tokens an earlier decode of a shorter stretch
    /// of the same audio produced as drafts; returns each window's tokens.
    pub(crate) fn transcribe_drafted(
        &self,
        pcm: &[f32],
        options: &TranscribeOptions,
        drafts: &[WindowTokens],
    ) -> Result<(Transcription, Vec<WindowTokens>), AsrError> {
        if let Some(i) = pcm.iter().position(|s| !s.is_finite()) {
            return Err(AsrError::Audio(format!("sample {i} is {}; audio must be finite", pcm[i])));
        }
        let mut language = self.requested_language(options)?;
        let duration = pcm.len() as f64 / f64::from(SAMPLE_RATE);
        let n_frames = 2 * self.model.dims.n_audio_ctx; // 3000: 30 s
        let content_frames = pcm.len() / HOP;
        // Silence after the audio for the last window; past it, windows are
        // filled with the value of silence (see `Mel`).
        let pad_frames = match self.options.window {
            EncoderWindow::Full => 0,
            EncoderWindow::Fit { pad_frames } => pad_frames.min(n_frames),
        };
        let mut audio = Vec::with_capacity(pcm.len() + (pad_frames + 4) * HOP);
        audio.extend_from_slice(pcm);
        audio.resize(pcm.len() + (pad_frames + 4) * HOP, 0.0);
        let mel = window::Mel::new(&audio, &self.device)?;

        let mut context = match options.prompt.as_deref().map(str::trim) {
            Some(prompt) if !prompt.is_empty() => self.encode(&format!(" {prompt}"))?,
            _ => Vec::new(),
        };
        let mut segments = Vec::new();
        let mut windows = Vec::new();
        let mut seek = 0;
        while seek < content_frames {
            let size = n_frames.min(content_frames - seek);
            let draft = drafts.iter().find(|d| d.seek == seek).map_or(&[][..], |d| &d.tokens[..]);
            let decoded = self.decode_window(&mel, seek, size, &context, &mut language, draft)?;
            windows.push(WindowTokens { seek, tokens: decoded.tokens.clone() });
            if decoded.no_speech_prob > NO_SPEECH_THRESHOLD && decoded.avg_logprob < LOGPROB_THRESHOLD {
                seek += size;
                continue;
            }
            let time_offset = (seek * HOP) as f64 / f64::from(SAMPLE_RATE);
            let (pieces, advance) = window::split(&decoded.tokens, size, self.rules.tokens.timestamp_begin);
            for piece in pieces {
                let text = self.text(&piece.tokens)?;
                context.extend_from_slice(&piece.tokens);
                if text.trim().is_empty() {
                    continue;
                }
                let start = (time_offset + piece.start).min(duration);
                segments.push(Segment {
                    id: segments.len(),
                    start,
                    end: (time_offset + piece.end).clamp(start, duration),
                    text,
                    tokens: piece.tokens,
                    avg_logprob: decoded.avg_logprob,
                    no_speech_prob: decoded.no_speech_prob,
                });
            }
            seek += advance.max(1);
        }
        let text = segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
        let language = match language {
            Some(i) => self.languages[i].0.clone(),
            // English-only, or no audio to detect a language in.
            None => "en".into(),
        };
        Ok((Transcription { text, language, duration, segments }, windows))
    }

    /// Decodes the window of `size` mel frames at `seek` (detecting the
    /// language first if it is still unknown). When the decode loops
    /// (OpenAI's compression-ratio test, or more tokens than the audio can
    /// hold), it is tried again with the whole 30 s window, then without
    /// the previous text as prompt: where OpenAI would raise the
    /// temperature, this stays greedy.
    fn decode_window(
        &self,
        mel: &window::Mel,
        seek: usize,
        size: usize,
        context: &[u32],
        language: &mut Option<usize>,
        draft: &[u32],
    ) -> Result<decode::Decoded, AsrError> {
        let dims = &self.model.dims;
        let full = 2 * dims.n_audio_ctx;
        let fit = match self.options.window {
            EncoderWindow::Full => full,
            EncoderWindow::Fit { pad_frames } => (size + pad_frames).next_multiple_of(window::INPUT_STRIDE).min(full),
        };
        let max_tokens = (dims.n_text_ctx / 2).min(16 + size * MAX_TOKENS_PER_SECOND / 100);
        let mut attempts = vec![(fit, true), (full, true), (full, false)];
        attempts.dedup();
        attempts.retain(|&(_, prompted)| prompted || !context.is_empty());
        let mut encoded: Option<(usize, Tensor)> = None;
        let mut decoded = None;
        for (frames, prompted) in attempts {
            if encoded.as_ref().is_none_or(|(f, _)| *f != frames) {
                encoded = Some((frames, self.model.encoder.forward(&mel.window(seek, frames)?)?));
            }
            let Some((_, audio)) = &encoded else { break };
            let lang = self.language(audio, language)?;
            let (prompt, sot_index) = self.prompt(if prompted { context } else { &[] }, lang);
            let request = decode::Request { prompt: &prompt, sot_index, max_tokens, draft };
            let attempt = decode::greedy(&self.model.decoder, audio, &self.rules, request)?;
            let looped = attempt.tokens.len() >= max_tokens
                || window::compression_ratio(&self.text(&attempt.tokens)?) > COMPRESSION_RATIO_THRESHOLD;
            decoded = Some(attempt);
            if !looped {
                break;
            }
        }
        decoded.ok_or_else(|| AsrError::Model("no decode attempt ran".into()))
    }

    /// The language to decode in: the caller's, else the one detected in
    /// this window's audio (then kept for the rest); `None` for an
    /// English-only model.
    fn language(&self, audio: &Tensor, language: &mut Option<usize>) -> Result<Option<usize>, AsrError> {
        if !self.is_multilingual() {
            return Ok(None);
        }
        if let Some(lang) = *language {
            return Ok(Some(lang));
        }
        let ids: Vec<u32> = self.languages.iter().map(|(_, id)| *id).collect();
        let found = decode::detect_language(&self.model.decoder, audio, self.rules.tokens.sot, &ids)?;
        let found = found.ok_or_else(|| AsrError::Model("language detection found none".into()))?;
        Ok(Some(*language.insert(found)))
    }

    /// The language the caller asked for, as an index into `languages`;
    /// `None` to detect it. An English-only model takes "en" or nothing.
    fn requested_language(&self, options: &TranscribeOptions) -> Result<Option<usize>, AsrError> {
        match options.language.as_deref() {
            None => Ok(None),
            Some(code) if !self.is_multilingual() && code.eq_ignore_ascii_case("en") => Ok(None),
            Some(code) => self
                .languages
                .iter()
                .position(|(c, _)| c.eq_ignore_ascii_case(code))
                .map(Some)
                .ok_or_else(|| AsrError::Language(code.to_string())),
        }
    }

    /// The decoder's initial tokens: the previous text (at most half the
    /// context) after start-of-previous, then the start-of-transcript
    /// sequence; and where start-of-transcript is.
    fn prompt(&self, context: &[u32], language: Option<usize>) -> (Vec<u32>, usize) {
        let t = &self.rules.tokens;
        let mut prompt = Vec::new();
        if !context.is_empty() {
            let keep = self.model.dims.n_text_ctx / 2 - 1;
            prompt.push(t.sot_prev);
            prompt.extend_from_slice(&context[context.len().saturating_sub(keep)..]);
        }
        let sot_index = prompt.len();
        prompt.push(t.sot);
        if let (Some((_, lang)), Some(transcribe)) = (language.and_then(|i| self.languages.get(i)), t.transcribe) {
            prompt.extend([*lang, transcribe]);
        }
        (prompt, sot_index)
    }

    /// The text of some tokens (timestamps and special tokens dropped).
    fn text(&self, tokens: &[u32]) -> Result<String, AsrError> {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.rules.tokens.eot).collect();
        self.tokenizer.decode(&text, true).map_err(|e| AsrError::Model(format!("tokenizer: {e}")))
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, AsrError> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| AsrError::Model(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

impl SpeechToText for Whisper {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn transcribe(&self, pcm: &[f32], options: &TranscribeOptions) -> Result<Transcription, AsrError> {
        Ok(self.transcribe_drafted(pcm, options, &[])?.0)
    }
}
