//! Silero VAD v5 (16 kHz) in candle, from the weights `tete models`
//! converts out of the ONNX file. One step scores 512 new samples (32 ms)
//! preceded by the previous step's last 64, as the upstream wrapper does:
//! a 256-point STFT by convolution with the stored basis (reflect-padded
//! by 64), four conv+ReLU blocks (strides 1, 2, 2, 1), an LSTM cell, and a
//! 1×1 convolution with a sigmoid.
//!
//! Weights are shared read-only; each session's LSTM state and audio
//! context live in [`SileroState`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor};

/// Samples scored per step at 16 kHz.
pub const CHUNK: usize = 512;
/// Samples of the previous step prepended to each chunk.
pub const CONTEXT: usize = 64;
const HIDDEN: usize = 128;
/// The 16 kHz branch of the ONNX graph.
const PREFIX: &str = "If_0_then_branch__Inline_0__";

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("loading Silero VAD weights from {path}: {source}")]
    Load { path: String, source: candle_core::Error },
    #[error("Silero VAD weights lack {0} (is this the 16 kHz Silero v5 model?)")]
    Missing(String),
    #[error("Silero VAD tensor {name} has shape {actual:?}, expected {expected:?}")]
    Shape { name: String, actual: Vec<usize>, expected: Vec<usize> },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv1d(&self.weight, 1, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1))?)?.relu()
    }
}

/// The model: weights only.
pub struct SileroVad {
    basis: Tensor,
    encoder: [Conv; 4],
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    device: Device,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").field("device", &self.device).finish()
    }
}

/// One session's state: the LSTM's (h, c) and the last 64 samples.
#[derive(Debug, Clone)]
pub struct SileroState {
    h: Tensor,
    c: Tensor,
    context: [f32; CONTEXT],
}

impl SileroVad {
    /// Loads `model.safetensors` as converted by `tete models fetch silero-vad`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, VadError> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|source| VadError::Load { path: path.display().to_string(), source })?;
        Self::from_tensors(tensors, device)
    }

    pub fn from_tensors(mut t: HashMap<String, Tensor>, device: &Device) -> Result<Self, VadError> {
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor, VadError> {
            let key = format!("{PREFIX}{name}");
            let tensor = t.remove(&key).ok_or_else(|| VadError::Missing(key.clone()))?;
            if tensor.dims() != shape {
                return Err(VadError::Shape { name: key, actual: tensor.dims().to_vec(), expected: shape.to_vec() });
            }
            Ok(tensor.to_dtype(DType::F32)?)
        };
        let basis = take("stft.forward_basis_buffer", &[258, 1, 256])?;
        let mut conv = |i: usize, cin: usize, cout: usize, stride: usize| -> Result<Conv, VadError> {
            Ok(Conv {
                weight: take(&format!("encoder.{i}.reparam_conv.weight"), &[cout, cin, 3])?,
                bias: take(&format!("encoder.{i}.reparam_conv.bias"), &[cout])?,
                stride,
            })
        };
        let encoder = [conv(0, 129, 128, 1)?, conv(1, 128, 64, 2)?, conv(2, 64, 64, 2)?, conv(3, 64, 128, 1)?];
        let w_ih = take("decoder.rnn.weight_ih", &[4 * HIDDEN, HIDDEN])?.t()?.contiguous()?;
        let w_hh = take("decoder.rnn.weight_hh", &[4 * HIDDEN, HIDDEN])?.t()?.contiguous()?;
        let bias = (take("decoder.rnn.bias_ih", &[4 * HIDDEN])? + take("decoder.rnn.bias_hh", &[4 * HIDDEN])?)?;
        let out_w = take("decoder.decoder.2.weight", &[1, HIDDEN, 1])?.reshape((HIDDEN, 1))?;
        let out_b = take("decoder.decoder.2.bias", &[1])?;
        Ok(Self { basis, encoder, w_ih, w_hh, bias, out_w, out_b, device: device.clone() })
    }

    /// A fresh session state (silence before the first chunk).
    pub fn new_state(&self) -> Result<SileroState, VadError> {
        let zeros = Tensor::zeros((1, HIDDEN), DType::F32, &self.device)?;
        Ok(SileroState { h: zeros.clone(), c: zeros, context: [0.0; CONTEXT] })
    }

    /// Scores one chunk of 512 samples (16 kHz, in [-1, 1]) and advances the
    /// session state. Returns P(speech).
    pub fn step(&self, chunk: &[f32; CHUNK], state: &mut SileroState) -> Result<f32, VadError> {
        // context + chunk, then reflect-pad 64 on the right: 640 samples.
        let mut x = Vec::with_capacity(CONTEXT + CHUNK + 64);
        x.extend_from_slice(&state.context);
        x.extend(chunk.iter().map(|s| if s.is_finite() { s.clamp(-1.0, 1.0) } else { 0.0 }));
        let n = x.len();
        for i in 0..64 {
            x.push(x[n - 2 - i]);
        }
        state.context.copy_from_slice(&x[n - CONTEXT..n]);
        let x = Tensor::from_vec(x, (1, 1, n + 64), &self.device)?;

        let spec = x.conv1d(&self.basis, 0, 128, 1, 1)?; // (1, 258, 4)
        let re = spec.narrow(1, 0, 129)?;
        let im = spec.narrow(1, 129, 129)?;
        let mut h = (re.sqr()? + im.sqr()?)?.sqrt()?;
        for conv in &self.encoder {
            h = conv.forward(&h)?;
        }
        let input = h.squeeze(D::Minus1)?; // (1, 128)

        let gates = input.matmul(&self.w_ih)?.add(&state.h.matmul(&self.w_hh)?)?.broadcast_add(&self.bias)?;
        let chunk4 = gates.chunk(4, 1)?; // PyTorch order: input, forget, cell, output
        let (i, f, g, o) = (sigmoid(&chunk4[0])?, sigmoid(&chunk4[1])?, chunk4[2].tanh()?, sigmoid(&chunk4[3])?);
        let c = ((f * &state.c)? + (i * g)?)?;
        let h = (o * c.tanh()?)?;
        let logit = h.relu()?.matmul(&self.out_w)?.broadcast_add(&self.out_b)?;
        let p = sigmoid(&logit)?.flatten_all()?.to_vec1::<f32>()?[0];
        state.h = h;
        state.c = c;
        Ok(p)
    }
}
