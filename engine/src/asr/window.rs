//! The pieces of one 30 s window that are not the network: its log-mel
//! input (silence past the audio), its tokens split into timed segments as
//! OpenAI's `transcribe` does, and the repetition test on its text.

use candle_core::{Device, Tensor};
use tete_kernels::mel::{HOP, N_MELS};

use super::AsrError;
use super::SAMPLE_RATE;
use super::decode::TIME_PRECISION;
use crate::features::LogMelCpu;

/// Log-mel features of the audio and what follows it: silence.
pub(crate) struct Mel {
    features: Tensor,
    /// The value of a silent frame: the floor `finish` clamps every value to.
    silence: f32,
}

impl Mel {
    /// `audio` must end with at least four frames of zeros.
    pub(crate) fn new(audio: &[f32], device: &Device) -> Result<Self, AsrError> {
        let values = LogMelCpu::new().compute(audio, false);
        let silence = values.iter().copied().fold(f32::INFINITY, f32::min);
        let features = Tensor::from_vec(values, (N_MELS, audio.len() / HOP), device)?;
        Ok(Self { features, silence })
    }

    /// (1, n_mels, frames) from `seek`, silence past the end.
    pub(crate) fn window(&self, seek: usize, frames: usize) -> Result<Tensor, AsrError> {
        let available = self.features.dim(1)?.saturating_sub(seek).min(frames);
        let mut window = self.features.narrow(1, seek, available)?;
        if available < frames {
            let rest = Tensor::full(self.silence, (N_MELS, frames - available), self.features.device())?;
            window = Tensor::cat(&[&window, &rest], 1)?;
        }
        Ok(window.contiguous()?.unsqueeze(0)?)
    }
}

/// Mel frames per encoder position: the second convolution has stride 2.
pub(crate) const INPUT_STRIDE: usize = 2;

/// One segment of a window: its tokens, and its start and end in seconds from the window's start.
pub(crate) struct Piece {
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
}

/// Splits a window's tokens into segments at consecutive timestamps, as
/// OpenAI's `transcribe` does; returns them and how many mel frames to
/// advance (to the last complete segment's end, or the whole window).
pub(crate) fn split(tokens: &[u32], size: usize, ts_begin: u32) -> (Vec<Piece>, usize) {
    let time = |t: u32| f64::from(t - ts_begin) * TIME_PRECISION;
    let is_ts: Vec<bool> = tokens.iter().map(|&t| t >= ts_begin).collect();
    let single_ending = is_ts.len() >= 2 && !is_ts[is_ts.len() - 2] && is_ts[is_ts.len() - 1];
    let mut cuts: Vec<usize> = (1..tokens.len()).filter(|&i| is_ts[i] && is_ts[i - 1]).collect();
    if cuts.is_empty() {
        // One segment: to the last timestamp if there is one past zero, else the whole window.
        let window = (size * HOP) as f64 / f64::from(SAMPLE_RATE);
        let end = match tokens.iter().rev().find(|&&t| t > ts_begin) {
            Some(&t) => time(t),
            None => window,
        };
        let pieces =
            if tokens.is_empty() { Vec::new() } else { vec![Piece { tokens: tokens.to_vec(), start: 0.0, end }] };
        return (pieces, size);
    }
    if single_ending {
        cuts.push(tokens.len());
    }
    let mut pieces = Vec::new();
    let mut last = 0;
    for &cut in &cuts {
        let tokens = tokens[last..cut].to_vec();
        // Each piece starts and ends with a timestamp (the first token always is one).
        let (start, end) = (time(tokens[0].max(ts_begin)), time(tokens[tokens.len() - 1].max(ts_begin)));
        pieces.push(Piece { tokens, start, end });
        last = cut;
    }
    let advance = if single_ending { size } else { (tokens[last - 1] - ts_begin) as usize * INPUT_STRIDE };
    (pieces, advance)
}

/// How much zlib shrinks the text (OpenAI's `compression_ratio`).
pub(crate) fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = zlib.write_all(text.as_bytes()).and_then(|()| zlib.finish()).map_or(0, |v| v.len());
    text.len() as f64 / compressed.max(1) as f64
}
