//! Whisper's log-mel front end (CPU reference): 16 kHz audio → 80 mel bins
//! every 10 ms, as Whisper and Smart Turn expect. Computed in f64; the GPU
//! versions (`shaders/log_mel.wgsl`, `cuda/log_mel.cu`) work in f32 and are
//! compared against this.
//!
//! Steps: optional zero-mean unit-variance normalisation of the waveform;
//! centred frames (reflect padding of n_fft/2) of 400 samples every 160,
//! periodic Hann window; power spectrum (201 bins); Slaney-normalised
//! triangular mel filters; log10 with a 1e-10 floor; the last frame
//! dropped; values clamped to (max − 8); then (x + 4) / 4.

/// Samples per FFT frame.
pub const N_FFT: usize = 400;
/// Samples between frames (10 ms).
pub const HOP: usize = 160;
/// Frequency bins of the power spectrum.
pub const N_BINS: usize = N_FFT / 2 + 1;
/// Mel bins.
pub const N_MELS: usize = 80;
const SAMPLE_RATE: f64 = 16_000.0;

fn hz_to_mel(f: f64) -> f64 {
    if f >= 1000.0 { 15.0 + (f / 1000.0).ln() * (27.0 / 6.4f64.ln()) } else { 3.0 * f / 200.0 }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= 15.0 { 1000.0 * ((6.4f64.ln() / 27.0) * (m - 15.0)).exp() } else { 200.0 * m / 3.0 }
}

/// Slaney-normalised mel filters, `N_MELS` rows of `N_BINS` weights.
pub fn mel_filters() -> Vec<f64> {
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2.0));
    let edges: Vec<f64> = (0..N_MELS + 2).map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64)).collect();
    let fft_freq = |k: usize| k as f64 * (SAMPLE_RATE / 2.0) / (N_BINS - 1) as f64;
    let mut out = vec![0.0; N_MELS * N_BINS];
    for m in 0..N_MELS {
        let enorm = 2.0 / (edges[m + 2] - edges[m]);
        for k in 0..N_BINS {
            let f = fft_freq(k);
            let down = (f - edges[m]) / (edges[m + 1] - edges[m]);
            let up = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
            out[m * N_BINS + k] = down.min(up).max(0.0) * enorm;
        }
    }
    out
}

/// The periodic Hann window of `N_FFT` samples.
pub fn hann() -> Vec<f64> {
    (0..N_FFT).map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()).collect()
}

/// Frames the features of `samples` samples have: one per hop.
pub fn frames(samples: usize) -> usize {
    samples / HOP
}

/// `audio` with n_fft/2 reflected samples on each side (numpy's "reflect").
/// Needs more than n_fft/2 samples.
pub fn reflect_pad(audio: &[f32]) -> Vec<f32> {
    let pad = N_FFT / 2;
    let n = audio.len();
    let mut out = Vec::with_capacity(n + 2 * pad);
    out.extend((1..=pad).rev().map(|i| audio[i]));
    out.extend_from_slice(audio);
    out.extend((1..=pad).map(|i| audio[n - 1 - i]));
    out
}

/// Zero-mean, unit-variance waveform (variance floor 1e-7), in f32 as the reference does.
pub fn normalize(audio: &[f32]) -> Vec<f32> {
    let n = audio.len().max(1) as f64;
    let mean = audio.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = audio.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    let scale = 1.0 / (var + 1e-7).sqrt();
    audio.iter().map(|&x| ((f64::from(x) - mean) * scale) as f32).collect()
}

/// Scales log10 mel energies in place: clamp to (max − 8), then (x + 4) / 4.
pub fn finish(log_mel: &mut [f32]) {
    let max = log_mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in log_mel.iter_mut() {
        *v = (v.max(max - 8.0) + 4.0) / 4.0;
    }
}

/// Log-mel features of 16 kHz audio: `N_MELS` rows of `frames(audio.len())`
/// values (row-major by mel bin). Needs at least 201 samples.
pub fn log_mel(audio: &[f32], normalize_first: bool) -> Vec<f32> {
    let audio = if normalize_first { normalize(audio) } else { audio.to_vec() };
    if audio.len() <= N_FFT / 2 {
        return Vec::new();
    }
    let padded = reflect_pad(&audio);
    let n_frames = frames(audio.len());
    let window = hann();
    let filters = mel_filters();
    let (cos, sin): (Vec<f64>, Vec<f64>) = (0..N_FFT)
        .map(|i| {
            let a = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
            (a.cos(), a.sin())
        })
        .unzip();
    let mut out = vec![0.0f32; N_MELS * n_frames];
    let mut frame = vec![0.0f64; N_FFT];
    let mut power = vec![0.0f64; N_BINS];
    for t in 0..n_frames {
        for (n, x) in frame.iter_mut().enumerate() {
            *x = f64::from(padded[t * HOP + n]) * window[n];
        }
        for (k, p) in power.iter_mut().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            for (n, &x) in frame.iter().enumerate() {
                let i = (k * n) % N_FFT;
                re += x * cos[i];
                im -= x * sin[i];
            }
            *p = re * re + im * im;
        }
        for m in 0..N_MELS {
            let e: f64 = filters[m * N_BINS..(m + 1) * N_BINS].iter().zip(&power).map(|(w, p)| w * p).sum();
            out[m * n_frames + t] = e.max(1e-10).log10() as f32;
        }
    }
    finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_slaney_triangles() {
        let f = mel_filters();
        // Every filter has some weight, peaks once, and the bank covers 0–8 kHz.
        for m in 0..N_MELS {
            let row = &f[m * N_BINS..(m + 1) * N_BINS];
            assert!(row.iter().any(|&w| w > 0.0), "filter {m} is empty");
            assert!(row.iter().all(|&w| w >= 0.0));
        }
        assert_eq!(f[0], 0.0, "no weight at DC for the first filter's left edge");
        // Slaney normalisation: area ≈ 2 / bandwidth × bandwidth / 2 = constant in Hz terms.
        assert!((hz_to_mel(mel_to_hz(37.5)) - 37.5).abs() < 1e-9);
        assert!((mel_to_hz(hz_to_mel(440.0)) - 440.0).abs() < 1e-9);
    }

    #[test]
    fn a_pure_tone_lights_its_mel_bin() {
        let tone: Vec<f32> =
            (0..16_000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin() * 0.5).collect();
        let mel = log_mel(&tone, false);
        let n = frames(tone.len());
        assert_eq!(mel.len(), N_MELS * n);
        let mid = n / 2;
        let loudest = (0..N_MELS).max_by(|&a, &b| mel[a * n + mid].total_cmp(&mel[b * n + mid])).unwrap();
        let f = mel_filters();
        let peak_bin = 1000 * (N_BINS - 1) / 8000; // bin 25 = 1000 Hz
        let expected =
            (0..N_MELS).max_by(|&a, &b| f[a * N_BINS + peak_bin].total_cmp(&f[b * N_BINS + peak_bin])).unwrap();
        assert_eq!(loudest, expected);
    }

    #[test]
    fn short_input_gives_no_frames_instead_of_panicking() {
        assert!(log_mel(&[0.1; 150], false).is_empty());
        assert!(log_mel(&[], true).is_empty());
    }
}
