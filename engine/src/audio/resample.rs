//! Sample-rate conversion with an anti-aliasing filter, one stream at a time.
//!
//! [`StreamResampler`] turns mono f32 at one rate into mono f32 at another:
//! `push` takes whatever arrives (a 20 ms WebRTC frame, a decoded packet,
//! one sample) and returns the output it can compute so far; `flush` ends the
//! stream and returns the rest; `reset` starts over. The filter's start-up
//! delay is removed, so output sample `k` sits at time `k / to` like input
//! sample `n` sits at `n / from`, and a stream of `n` samples ends as
//! `ceil(n · to / from)` samples whatever the chunking. [`resample`] is the
//! one-shot form of the same thing.
//!
//! Underneath is rubato's synchronous FFT resampler: each block of input is
//! transformed, its spectrum cut below the lower of the two Nyquist
//! frequencies with a Blackman-Harris transition band, and transformed back
//! at the output rate. A block holds a whole number of `from / gcd(from, to)`
//! samples, so for the usual rates (8, 11.025, 16, 22.05, 24, 32, 44.1, 48,
//! 96 kHz to 16 or 48 kHz) it is about [`CHUNK`] samples and the stream lags
//! by half a block (~10 ms at 48 kHz); an odd rate such as 44 101 Hz needs a
//! block of about two seconds, which is fine for files and never happens on
//! the live path (WebRTC audio is 48 kHz). The block always holds an even
//! number of input samples: with an odd one rubato's delay is half an input
//! sample off the `output_delay` it reports, and the output would lead the
//! input.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

/// Lowest sample rate accepted, in Hz.
pub const MIN_RATE: u32 = 1_000;
/// Highest sample rate accepted, in Hz.
pub const MAX_RATE: u32 = 384_000;

/// Smallest input block: the FFT block is the first multiple of
/// `from / gcd(from, to)` samples at or above it that is even.
pub const CHUNK: usize = 1024;

/// Why a resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("sample rate {0} Hz is outside {MIN_RATE}–{MAX_RATE} Hz")]
    Rate(u32),
    #[error("resampler: {0}")]
    Rubato(String),
}

/// A mono resampler for one stream (one session, one upload).
pub struct StreamResampler {
    from: u32,
    to: u32,
    /// `None` when the rates are equal: samples pass through untouched.
    inner: Option<Fft<f32>>,
    /// Input waiting for a whole processing chunk.
    pending: Vec<f32>,
    /// Scratch output of one processing call.
    scratch: Vec<f32>,
    /// Output frames of start-up delay still to drop.
    to_trim: usize,
    /// Input samples taken since the last reset.
    taken: u64,
    /// Output samples given since the last reset.
    given: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("pending", &self.pending.len())
            .field("taken", &self.taken)
            .field("given", &self.given)
            .finish()
    }
}

/// Whether `rate` is one a resampler takes.
pub fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) { Ok(()) } else { Err(ResampleError::Rate(rate)) }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The rubato resampler for a pair of (different, checked) rates.
fn build(from: u32, to: u32) -> Result<Fft<f32>, ResampleError> {
    let min_block = (from as u64 / gcd(from as u64, to as u64)) as usize;
    let mut blocks = CHUNK.div_ceil(min_block);
    if min_block % 2 == 1 && blocks % 2 == 1 {
        blocks += 1;
    }
    // One FFT block per processing call (`sub_chunks` = 1), fixed on the input side.
    Fft::<f32>::new_custom(
        from as usize,
        to as usize,
        blocks * min_block,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|e| ResampleError::Rubato(e.to_string()))
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz, both within [`MIN_RATE`]..=[`MAX_RATE`].
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        check_rate(from)?;
        check_rate(to)?;
        let inner = if from == to { None } else { Some(build(from, to)?) };
        let (scratch, to_trim) = match &inner {
            Some(r) => (vec![0.0; r.output_frames_max()], r.output_delay()),
            None => (Vec::new(), 0),
        };
        Ok(Self { from, to, inner, pending: Vec::with_capacity(CHUNK), scratch, to_trim, taken: 0, given: 0 })
    }

    pub fn from_rate(&self) -> u32 {
        self.from
    }

    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Resamples `input` (the next samples of the stream) and returns the
    /// output that is ready. The rest comes with later pushes or `flush`.
    pub fn push(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::with_capacity(self.expected_total(input.len() as u64) as usize);
        self.push_into(input, &mut out)?;
        Ok(out)
    }

    /// Like [`push`](Self::push), appending to `out`.
    pub fn push_into(&mut self, mut input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        self.taken += input.len() as u64;
        let Some(inner) = self.inner.as_ref() else {
            out.extend_from_slice(input);
            self.given += input.len() as u64;
            return Ok(());
        };
        let need = inner.input_frames_next();
        if !self.pending.is_empty() {
            let take = (need - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < need {
                return Ok(());
            }
            let chunk = std::mem::take(&mut self.pending);
            let result = self.process(&chunk, need, out);
            self.pending = chunk;
            self.pending.clear();
            result?;
        }
        loop {
            let need = self.inner.as_ref().map_or(usize::MAX, |r| r.input_frames_next());
            if input.len() < need {
                break;
            }
            self.process(&input[..need], need, out)?;
            input = &input[need..];
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// Ends the stream: returns the output still held back (the filter's
    /// tail and any partial chunk), so that the whole stream gave
    /// `ceil(n · to / from)` samples for `n` pushed. Then resets.
    pub fn flush(&mut self) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        self.flush_into(&mut out)?;
        Ok(out)
    }

    /// Like [`flush`](Self::flush), appending to `out`.
    pub fn flush_into(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let expected = self.expected_total(self.taken);
        let start = out.len();
        if self.inner.is_some() {
            let pending = std::mem::take(&mut self.pending);
            if !pending.is_empty() {
                self.process(&pending, pending.len(), out)?;
            }
            // Zeros push the filter's tail out. Each call yields at least one
            // block within a few calls; the bound only guards against a bug.
            let mut calls = 0;
            while self.given < expected {
                calls += 1;
                if calls > 64 {
                    return Err(ResampleError::Rubato(format!("flush produced {} of {expected} samples", self.given)));
                }
                self.process(&[], 0, out)?;
            }
            let extra = (self.given - expected) as usize;
            out.truncate(out.len() - extra.min(out.len() - start));
        }
        self.reset();
        Ok(())
    }

    /// Forgets the stream: the next push starts a new one.
    pub fn reset(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.reset();
            self.to_trim = inner.output_delay();
        }
        self.pending.clear();
        self.taken = 0;
        self.given = 0;
    }

    /// Output length of a stream of `n` input samples.
    fn expected_total(&self, n: u64) -> u64 {
        (n as u128 * self.to as u128).div_ceil(self.from as u128) as u64
    }

    /// Runs one processing call on `input` (`len` frames, fewer than the
    /// chunk only at the end of the stream) and appends what survives the
    /// delay trim to `out`.
    fn process(&mut self, input: &[f32], len: usize, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let Some(inner) = self.inner.as_mut() else { return Ok(()) };
        let need = inner.input_frames_next();
        let run_err = |e: rubato::ResampleError| ResampleError::Rubato(e.to_string());
        let adapter_err = |e: rubato::audioadapter_buffers::SizeError| ResampleError::Rubato(e.to_string());
        let capacity = self.scratch.len();
        let mut output = InterleavedSlice::new_mut(&mut self.scratch, 1, capacity).map_err(adapter_err)?;
        let (_, written) = if len < need {
            let indexing = Indexing::new().partial_len(len);
            let input = InterleavedSlice::new(input, 1, len).map_err(adapter_err)?;
            inner.process_into_buffer(&input, &mut output, Some(&indexing)).map_err(run_err)?
        } else {
            let input = InterleavedSlice::new(input, 1, need).map_err(adapter_err)?;
            inner.process_into_buffer(&input, &mut output, None).map_err(run_err)?
        };
        let trim = self.to_trim.min(written);
        self.to_trim -= trim;
        out.extend_from_slice(&self.scratch[trim..written]);
        self.given += (written - trim) as u64;
        Ok(())
    }
}

/// Resamples a whole clip from `from` Hz to `to` Hz: `ceil(n · to / from)` samples.
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    let mut r = StreamResampler::new(from, to)?;
    let mut out = Vec::with_capacity(r.expected_total(input.len() as u64) as usize);
    r.push_into(input, &mut out)?;
    r.flush_into(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<f32> {
        (0..n).map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32).collect()
    }

    fn amplitude(x: &[f32], rate: u32, freq: f64) -> f64 {
        crate::audio::measure::tone(x, rate, freq).0
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    /// Frequency from upward zero crossings (interpolated), over the middle of `x`.
    fn zero_crossing_freq(x: &[f32], rate: u32) -> f64 {
        let mut crossings = Vec::new();
        for i in 1..x.len() {
            let (a, b) = (x[i - 1] as f64, x[i] as f64);
            if a < 0.0 && b >= 0.0 {
                crossings.push(i as f64 - 1.0 + a / (a - b));
            }
        }
        assert!(crossings.len() > 10, "only {} zero crossings", crossings.len());
        let (first, last) = (crossings[0], crossings[crossings.len() - 1]);
        (crossings.len() - 1) as f64 * rate as f64 / (last - first)
    }

    const RATES: [u32; 9] = [8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 44_101];

    #[test]
    fn a_sine_keeps_its_frequency_amplitude_and_timing_at_every_rate() {
        for to in [16_000u32, 48_000] {
            for from in RATES {
                let n = from as usize; // one second
                let out = resample(&sine(1000.0, from, n, 0.5), from, to).unwrap();
                let expected_len = (n as u64 * to as u64).div_ceil(from as u64) as usize;
                assert_eq!(out.len(), expected_len, "{from}→{to}: length");
                // Skip the edges, where the clip starts and stops abruptly.
                let mid = &out[to as usize / 10..out.len() - to as usize / 10];
                let f = zero_crossing_freq(mid, to);
                assert!((f - 1000.0).abs() < 0.5, "{from}→{to}: frequency {f}");
                let a = amplitude(mid, to, 1000.0);
                assert!((a - 0.5).abs() < 0.005, "{from}→{to}: amplitude {a}");
                // No delay: the output is in phase with the ideal sine at the output rate.
                let ideal = sine(1000.0, to, out.len(), 0.5);
                let lo = to as usize / 10;
                let err = out[lo..out.len() - lo]
                    .iter()
                    .zip(&ideal[lo..out.len() - lo])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < 2e-3, "{from}→{to}: differs from the ideal sine by {err}");
            }
        }
    }

    #[test]
    fn tones_above_the_output_nyquist_are_removed() {
        // 48 kHz → 16 kHz: without a filter 9, 10, 12 and 15 kHz would fold to
        // 7, 6, 4 and 1 kHz. With it nothing of them may remain (< -90 dB;
        // rubato's Blackman-Harris cut measures about -140 dB).
        for f in [9_000.0, 10_000.0, 12_000.0, 15_000.0] {
            let out = resample(&sine(f, 48_000, 48_000, 0.5), 48_000, 16_000).unwrap();
            let mid = &out[1600..out.len() - 1600];
            let alias = 16_000.0 - f;
            let a = amplitude(mid, 16_000, alias);
            assert!(a < 1e-5, "{f} Hz folded to {alias} Hz with amplitude {a}");
            assert!(rms(mid) < 1e-5, "{f} Hz: output rms {}", rms(mid));
        }
        // The same from 44.1 kHz, and from an odd rate (44.101 kHz: a two-second
        // block, whose ends leak a little more: ~1e-5, still -90 dB).
        for (from, max_rms) in [(44_100, 1e-5), (44_101, 5e-5)] {
            let out = resample(&sine(10_000.0, from, from as usize, 0.5), from, 16_000).unwrap();
            let mid = &out[1600..out.len() - 1600];
            assert!(rms(mid) < max_rms, "{from}: 10 kHz leaves rms {}", rms(mid));
        }
    }

    #[test]
    fn speech_band_tones_pass_the_filter() {
        // 7 kHz is below 16 kHz's Nyquist (the passband is flat to ~7.5 kHz):
        // it must come through whole.
        let out = resample(&sine(7_000.0, 48_000, 48_000, 0.5), 48_000, 16_000).unwrap();
        let a = amplitude(&out[1600..out.len() - 1600], 16_000, 7_000.0);
        assert!((a - 0.5).abs() < 0.005, "7 kHz came out at {a} of 0.5");
        // 3.4 kHz (the telephone band) is untouched.
        let out = resample(&sine(3_400.0, 48_000, 48_000, 0.5), 48_000, 16_000).unwrap();
        let a = amplitude(&out[1600..out.len() - 1600], 16_000, 3_400.0);
        assert!((a - 0.5).abs() < 0.005, "3.4 kHz came out at {a}");
    }

    /// A fixed-seed xorshift: the tests need reproducible noise, not quality.
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn chunked_pushes_equal_one_shot() {
        for (from, to) in [(48_000, 16_000), (44_100, 16_000), (8_000, 16_000), (16_000, 48_000), (44_101, 16_000)] {
            let input = noise(20_000, 7);
            let whole = resample(&input, from, to).unwrap();
            for sizes in [&[1usize][..], &[2], &[3], &[1, 2, 3], &[960], &[160, 7, 4099]] {
                let mut r = StreamResampler::new(from, to).unwrap();
                let mut out = Vec::new();
                let (mut i, mut k) = (0, 0);
                while i < input.len() {
                    let end = (i + sizes[k % sizes.len()]).min(input.len());
                    out.extend(r.push(&input[i..end]).unwrap());
                    i = end;
                    k += 1;
                }
                out.extend(r.flush().unwrap());
                assert_eq!(out.len(), whole.len(), "{from}→{to} chunks {sizes:?}: length");
                for (j, (a, b)) in out.iter().zip(&whole).enumerate() {
                    assert!((a - b).abs() < 1e-5, "{from}→{to} chunks {sizes:?}: sample {j}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn streaming_matches_rubatos_own_whole_clip_path() {
        // rubato's process_all trims the delay its own way; our buffering must agree.
        for (from, to) in [(48_000, 16_000), (22_050, 16_000), (44_100, 48_000), (16_000, 48_000), (44_101, 16_000)] {
            let input = noise(30_001, 11);
            let ours = resample(&input, from, to).unwrap();
            let mut reference = build(from, to).unwrap();
            let adapter = InterleavedSlice::new(&input[..], 1, input.len()).unwrap();
            let theirs = reference.process_all(&adapter, input.len(), None).unwrap().take_data();
            assert!(ours.len().abs_diff(theirs.len()) <= 1, "{from}→{to}: {} vs {}", ours.len(), theirs.len());
            for (j, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!((a - b).abs() < 1e-5, "{from}→{to}: sample {j}: ours {a}, rubato {b}");
            }
        }
    }

    #[test]
    fn output_length_follows_the_ratio_and_reset_starts_over() {
        for (from, to, n) in [(48_000, 16_000, 0), (48_000, 16_000, 1), (44_100, 16_000, 12_345), (8_000, 48_000, 77)] {
            let out = resample(&noise(n, 3), from, to).unwrap();
            assert_eq!(out.len() as u64, (n as u64 * to as u64).div_ceil(from as u64), "{from}→{to}, {n} in");
        }
        let input = noise(5000, 5);
        let mut r = StreamResampler::new(48_000, 16_000).unwrap();
        let mut first = r.push(&input).unwrap();
        first.extend(r.flush().unwrap());
        // flush resets; a half-pushed stream is forgotten by reset.
        r.push(&noise(777, 9)).unwrap();
        r.reset();
        let mut again = r.push(&input).unwrap();
        again.extend(r.flush().unwrap());
        assert_eq!(first, again);
        // Equal rates pass samples through untouched.
        assert_eq!(resample(&input, 16_000, 16_000).unwrap(), input);
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        assert!(matches!(StreamResampler::new(0, 16_000), Err(ResampleError::Rate(0))));
        assert!(matches!(StreamResampler::new(16_000, 1_000_000), Err(ResampleError::Rate(1_000_000))));
    }
}
