//! Audio in: decoding uploaded files and resampling any rate to what a stage needs.

pub mod decode;
mod ogg_opus;
pub mod resample;

pub use decode::{AudioFormat, DecodeError, Decoded, decode, decode_to};
pub use resample::{ResampleError, StreamResampler, resample};

/// Test measurements shared by the audio modules' tests.
#[cfg(test)]
pub(crate) mod measure {
    use std::f64::consts::PI;

    /// Amplitude and phase lag (in samples) of the `freq` component of `x`:
    /// one DFT bin with a Hann window, scaled so that a full-scale sine at
    /// `freq` reads amplitude 1.
    pub(crate) fn tone(x: &[f32], rate: u32, freq: f64) -> (f64, f64) {
        let n = x.len();
        let (mut re, mut im, mut wsum) = (0.0, 0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos();
            let ph = 2.0 * PI * freq * i as f64 / rate as f64;
            re += w * v as f64 * ph.cos();
            im += w * v as f64 * ph.sin();
            wsum += w;
        }
        let lag = -re.atan2(im) / (2.0 * PI * freq) * rate as f64;
        (2.0 * (re * re + im * im).sqrt() / wsum, lag)
    }
}
