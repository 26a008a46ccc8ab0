//! Audio features for the hearing stages on the CPU: Whisper's log-mel
//! front end with a real FFT and sparse mel filters. Same contract as the
//! f64 reference `tete_kernels::mel::log_mel` (its tests compare the two);
//! the GPU path is `gpu::LogMel`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use tete_kernels::mel::{self, HOP, N_BINS, N_FFT, N_MELS};

/// A mel filter: its first non-zero bin and weights from there.
#[derive(Debug, Clone)]
struct Filter {
    start: usize,
    weights: Vec<f32>,
}

/// Reusable log-mel state: the FFT plan, window, filters and scratch buffers.
pub struct LogMelCpu {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    filters: Vec<Filter>,
    frame: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
}

impl std::fmt::Debug for LogMelCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMelCpu").finish_non_exhaustive()
    }
}

impl Default for LogMelCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMelCpu {
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        let dense = mel::mel_filters();
        let filters = (0..N_MELS)
            .map(|m| {
                let row = &dense[m * N_BINS..(m + 1) * N_BINS];
                let start = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w > 0.0).map_or(start, |e| e + 1);
                Filter { start, weights: row[start..end].iter().map(|&w| w as f32).collect() }
            })
            .collect();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self {
            window: mel::hann().iter().map(|&w| w as f32).collect(),
            filters,
            frame: fft.make_input_vec(),
            spectrum,
            scratch,
            power: vec![0.0; N_BINS],
            fft,
        }
    }

    /// log10 mel energies of one windowed frame of `N_FFT` samples, into `out` (`N_MELS`).
    fn frame(&mut self, samples: &[f32], out: &mut [f32]) {
        for (n, x) in self.frame.iter_mut().enumerate() {
            *x = samples[n] * self.window[n];
        }
        // Sizes come from the plan itself, so processing cannot fail.
        let _ = self.fft.process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch);
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        for (m, f) in self.filters.iter().enumerate() {
            let e: f32 = f.weights.iter().zip(&self.power[f.start..]).map(|(w, p)| w * p).sum();
            out[m] = e.max(1e-10).log10();
        }
    }

    /// Log-mel features of 16 kHz audio, `N_MELS` rows of
    /// `mel::frames(audio.len())` values (empty for 200 samples or fewer).
    pub fn compute(&mut self, audio: &[f32], normalize_first: bool) -> Vec<f32> {
        if audio.len() <= N_FFT / 2 {
            return Vec::new();
        }
        let audio = if normalize_first { mel::normalize(audio) } else { audio.to_vec() };
        let padded = mel::reflect_pad(&audio);
        let n_frames = mel::frames(audio.len());
        let mut out = vec![0.0f32; N_MELS * n_frames];
        let mut column = [0.0f32; N_MELS];
        for t in 0..n_frames {
            self.frame(&padded[t * HOP..t * HOP + N_FFT], &mut column);
            for (m, v) in column.iter().enumerate() {
                out[m * n_frames + t] = *v;
            }
        }
        mel::finish(&mut out);
        out
    }
}

/// Log-mel frames as audio arrives: each frame of log10 mel energies is
/// computed once its window is complete, so a streaming stage never redoes
/// the front end of audio it has seen. [`finish`](Self::finish) adds the
/// frames that need the end's reflection and scales everything as
/// [`LogMelCpu::compute`] does (the scaling depends on the whole
/// utterance's maximum); the result equals the one-shot computation.
#[derive(Debug, Default)]
pub struct LogMelStream {
    mel: LogMelCpu,
    audio: Vec<f32>,
    /// Frames done so far, each `N_MELS` log10 energies.
    frames: Vec<[f32; N_MELS]>,
}

impl LogMelStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends samples; returns how many frames are complete now.
    pub fn push(&mut self, samples: &[f32]) -> usize {
        self.audio.extend_from_slice(samples);
        let pad = N_FFT / 2;
        if self.audio.len() <= pad {
            return self.frames.len();
        }
        // Frame t covers padded[t·HOP, t·HOP + N_FFT): audio up to t·HOP + pad.
        let mut window = vec![0.0f32; N_FFT];
        while self.frames.len() * HOP + pad <= self.audio.len() {
            let t = self.frames.len();
            for (i, w) in window.iter_mut().enumerate() {
                let at = (t * HOP + i) as isize - pad as isize;
                *w = self.audio[at.unsigned_abs()]; // reflection at the start
            }
            let mut column = [0.0f32; N_MELS];
            self.mel.frame(&window, &mut column);
            self.frames.push(column);
        }
        self.frames.len()
    }

    /// The utterance's features, `N_MELS` rows (as [`LogMelCpu::compute`]);
    /// the stream is then empty.
    pub fn finish(&mut self) -> Vec<f32> {
        let audio = std::mem::take(&mut self.audio);
        let mut done = std::mem::take(&mut self.frames);
        if audio.len() <= N_FFT / 2 {
            return Vec::new();
        }
        let n_frames = mel::frames(audio.len());
        let padded = mel::reflect_pad(&audio);
        done.truncate(n_frames);
        while done.len() < n_frames {
            let t = done.len();
            let mut column = [0.0f32; N_MELS];
            self.mel.frame(&padded[t * HOP..t * HOP + N_FFT], &mut column);
            done.push(column);
        }
        let mut out = vec![0.0f32; N_MELS * n_frames];
        for (t, column) in done.iter().enumerate() {
            for (m, v) in column.iter().enumerate() {
                out[m * n_frames + t] = *v;
            }
        }
        mel::finish(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_f64_reference() {
        // Speech-like test signal: two tones and noise, 2 s.
        let mut state = 12345u32;
        let audio: Vec<f32> = (0..32_000)
            .map(|i| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                let t = i as f32 / 16_000.0;
                0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                    + 0.1 * (2.0 * std::f32::consts::PI * 3100.0 * t).sin()
                    + 0.05 * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect();
        let mut fast = LogMelCpu::new();
        for normalize in [false, true] {
            let want = mel::log_mel(&audio, normalize);
            let got = fast.compute(&audio, normalize);
            assert_eq!(got.len(), want.len());
            let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            // Tolerance 1e-4 as for the GPU path: f32 FFT against the f64 DFT.
            assert!(max < 1e-4, "normalize={normalize}: max difference {max}");
        }
        assert!(fast.compute(&[0.0; 100], false).is_empty());
    }

    #[test]
    fn streamed_frames_equal_the_whole_computation() {
        let mut state = 99u32;
        let audio: Vec<f32> = (0..24_123)
            .map(|i| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                0.2 * ((i as f32) * 0.031).sin() + 0.05 * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect();
        let whole = LogMelCpu::new().compute(&audio, false);
        for sizes in [&[1usize][..], &[2], &[3], &[160], &[401], &[7, 333, 1, 160, 2048]] {
            let mut stream = LogMelStream::new();
            let (mut at, mut k) = (0, 0);
            while at < audio.len() {
                let n = sizes[k % sizes.len()].min(audio.len() - at);
                stream.push(&audio[at..at + n]);
                at += n;
                k += 1;
            }
            let streamed = stream.finish();
            assert_eq!(streamed.len(), whole.len());
            for (i, (a, b)) in streamed.iter().zip(&whole).enumerate() {
                assert!((a - b).abs() <= 1e-5, "chunks {sizes:?}: value {i}: streamed {a}, whole {b}");
            }
        }
    }
}
