//! Piper's VITS voice (the "medium" architecture) in candle: text encoder
//! with windowed relative-position attention, stochastic duration predictor
//! (run in reverse, with its rational-quadratic spline flows), the residual
//! coupling flow and the HiFi-GAN decoder.
//!
//! Weights are the ONNX initializers as `tete models` stores them. The export
//! removed weight norm and left the flow's WaveNet convolution weights under
//! anonymous `onnx::Conv_NNNN` names; [`FLOW_CONV_IDS`] names them from the
//! pinned graph (each one is the weight of the `Conv` whose bias is named).
//!
//! Batch size is one and every input position is real, so the masks of the
//! reference implementation are all ones and are left out.
//!
//! On the CPU the full (non-depthwise) convolutions, the flow's WaveNet
//! stacks and the whole decoder run on `tete_kernels::conv1d`'s direct
//! convolutions, which read their taps from zero-padded rows and fuse the
//! residual adds and leaky ReLUs into their output tiles; candle does the
//! rest (attention, layer norms, the depthwise convolutions). The
//! decoder always runs on the CPU: its output is host samples anyway.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{LayerNorm, Module};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tete_kernels::conv1d::{self as kernels, Residual, Signal};

mod decoder;
mod duration;
mod encoder;
mod flow;

use decoder::Decoder;
use duration::DurationPredictor;
use encoder::TextEncoder;
use flow::Flow;

/// Output samples per latent frame (8 · 8 · 4 upsampling).
pub const HOP: usize = 256;

const VOCAB: usize = 256;
const HIDDEN: usize = 192;
const FILTER: usize = 768;
const HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const WINDOW: usize = 4;
const ENCODER_LAYERS: usize = 6;
const LATENT: usize = 192;
const HALF: usize = LATENT / 2;
const WN_LAYERS: usize = 4;
const WN_KERNEL: usize = 5;
const SPLINE_BINS: usize = 10;
const SPLINE_PARAMS: usize = 3 * SPLINE_BINS - 1;
const TAIL_BOUND: f32 = 5.0;
const MIN_BIN: f32 = 1e-3;
const MIN_DERIVATIVE: f32 = 1e-3;
const LN_EPS: f64 = 1e-5;
/// (stride, kernel) of the decoder's three transposed convolutions.
const UPSAMPLES: [(usize, usize); 3] = [(8, 16), (8, 16), (4, 8)];
const UP_CHANNELS: [usize; 4] = [256, 128, 64, 32];
const RES_KERNELS: [usize; 3] = [3, 5, 7];
const RES_DILATIONS: [[usize; 2]; 3] = [[1, 2], [2, 6], [3, 12]];

/// `onnx::Conv_N` ids of the flow's WaveNet weights in en_US-joe-medium.onnx,
/// indexed `[flow / 2][layer]` as `(in_layers weight, res_skip_layers weight)`.
/// The export emitted the flows last to first, six ids per layer pair.
const FLOW_CONV_IDS: [[(u32, u32); WN_LAYERS]; 4] = {
    let mut ids = [[(0, 0); WN_LAYERS]; 4];
    let mut flow = 0;
    while flow < 4 {
        let mut layer = 0;
        while layer < WN_LAYERS {
            let id = 8168 + 24 * (3 - flow as u32) + 6 * layer as u32;
            ids[flow][layer] = (id, id + 3);
            layer += 1;
        }
        flow += 1;
    }
    ids
};

#[derive(Debug, thiserror::Error)]
pub enum VitsError {
    #[error("loading {path}: {source}")]
    Load { path: String, source: candle_core::Error },
    #[error("voice weights lack {0}")]
    Missing(String),
    #[error("voice weight {name} has shape {actual:?}, expected {expected:?}")]
    Shape { name: String, actual: Vec<usize>, expected: Vec<usize> },
    #[error("phoneme id {0} is outside the voice's vocabulary of {VOCAB}")]
    UnknownId(i64),
    #[error("no phoneme ids to synthesise")]
    Empty,
    #[error("scale {name} = {value} is out of range")]
    Scale { name: &'static str, value: f32 },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Piper's inference parameters (`inference` in the voice JSON).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scales {
    /// Spread of the latent around the text encoder's mean: variation of
    /// timbre and intonation between runs. 0 gives one fixed rendition.
    pub noise_scale: f32,
    /// Duration multiplier: above 1 speaks slower, below 1 faster.
    pub length_scale: f32,
    /// Noise into the duration predictor: variation of rhythm. 0 is fixed.
    pub noise_w: f32,
}

impl Scales {
    pub const DETERMINISTIC: Scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };

    fn check(&self) -> Result<(), VitsError> {
        let checks = [
            ("noise_scale", self.noise_scale, 0.0..=2.0),
            ("length_scale", self.length_scale, 0.1..=10.0),
            ("noise_w", self.noise_w, 0.0..=2.0),
        ];
        for (name, value, range) in checks {
            if !range.contains(&value) {
                return Err(VitsError::Scale { name, value });
            }
        }
        Ok(())
    }
}

struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, VitsError> {
        let tensor = self.tensors.remove(name).ok_or_else(|| VitsError::Missing(name.to_string()))?;
        if tensor.dims() != shape {
            return Err(VitsError::Shape {
                name: name.into(),
                actual: tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }

    /// A convolution `prefix.weight` `[out, in / groups, kernel]` with `prefix.bias`,
    /// padded to keep the length ("same").
    fn conv(&mut self, prefix: &str, shape: [usize; 3], dilation: usize, groups: usize) -> Result<Conv1d, VitsError> {
        let weight = self.take(&format!("{prefix}.weight"), &shape)?;
        self.conv_with(weight, Some(&format!("{prefix}.bias")), dilation, groups)
    }

    fn conv_with(
        &mut self,
        weight: Tensor,
        bias: Option<&str>,
        dilation: usize,
        groups: usize,
    ) -> Result<Conv1d, VitsError> {
        let (out, _, _) = weight.dims3()?;
        let bias = bias.map(|name| self.take(name, &[out])).transpose()?;
        Ok(Conv1d::new(&weight, bias, dilation, groups)?)
    }

    fn norm(&mut self, prefix: &str) -> Result<ChannelNorm, VitsError> {
        let gamma = self.take(&format!("{prefix}.gamma"), &[HIDDEN])?;
        let beta = self.take(&format!("{prefix}.beta"), &[HIDDEN])?;
        Ok(ChannelNorm(LayerNorm::new(gamma, beta, LN_EPS)))
    }
}

/// A "same"-padded 1-D convolution over `(1, C, L)`. On the CPU it is the
/// kernels crate's direct convolution. Elsewhere it is one matrix product:
/// the taps of the zero-padded input are stacked by rows (contiguous row
/// copies) and multiplied by the weight laid out tap-major, which gives the
/// output directly in `(C_out, L)` order. Depthwise convolutions (one group
/// per channel) are a sum of shifted, per-channel scaled inputs. All of these
/// avoid candle's element-wise im2col and its transposed result.
struct Conv1d {
    /// `(C_out, kernel · C_in)` tap-major; for a depthwise conv `(kernel, C, 1)`.
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    dilation: usize,
    depthwise: bool,
    /// The packed weights, for a full convolution whose weights are on the CPU.
    direct: Option<kernels::Conv1d>,
}

impl Conv1d {
    fn new(weight: &Tensor, bias: Option<Tensor>, dilation: usize, groups: usize) -> candle_core::Result<Self> {
        let (out, per_group, kernel) = weight.dims3()?;
        let depthwise = groups > 1;
        if depthwise && (groups != out || per_group != 1) {
            candle_core::bail!("only depthwise grouped convolutions are supported, got {groups} groups");
        }
        let direct = if !depthwise && weight.device().is_cpu() {
            let w = weight.flatten_all()?.to_vec1::<f32>()?;
            let b = bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;
            Some(kernels::Conv1d::new(&w, b.as_deref(), out, per_group, kernel, dilation))
        } else {
            None
        };
        let weight = if depthwise {
            weight.permute((2, 0, 1))?.contiguous()? // (kernel, C, 1)
        } else {
            weight.permute((0, 2, 1))?.contiguous()?.reshape((out, kernel * per_group))?
        };
        let bias = bias.map(|b| b.reshape((out, 1))).transpose()?;
        Ok(Self { weight, bias, kernel, dilation, depthwise, direct })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(direct) = self.direct.as_ref().filter(|_| x.device().is_cpu()) {
            let (_, channels, len) = x.dims3()?;
            let input = Signal::from_rows(&x.flatten_all()?.to_vec1::<f32>()?, channels, len, direct.same_pad());
            let mut out = Signal::zeros(direct.c_out(), len, 0);
            direct.forward_into(&input, &mut out);
            return Tensor::from_vec(out.to_rows(), (1, direct.c_out(), len), x.device());
        }
        let x = x.squeeze(0)?;
        let len = x.dim(1)?;
        let pad = self.dilation * (self.kernel - 1) / 2;
        let padded = if pad > 0 { x.pad_with_zeros(1, pad, pad)? } else { x };
        let tap = |j: usize| padded.narrow(1, j * self.dilation, len);
        let y = if self.depthwise {
            let mut y = tap(0)?.broadcast_mul(&self.weight.get(0)?)?;
            for j in 1..self.kernel {
                y = (y + tap(j)?.broadcast_mul(&self.weight.get(j)?)?)?;
            }
            y
        } else if self.kernel == 1 {
            self.weight.matmul(&padded)?
        } else {
            let taps = (0..self.kernel).map(tap).collect::<candle_core::Result<Vec<_>>>()?;
            self.weight.matmul(&Tensor::cat(&taps, 0)?)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        y.unsqueeze(0)
    }
}

/// Layer norm over the channels of a `(1, C, T)` tensor.
struct ChannelNorm(LayerNorm);

impl ChannelNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(&x.transpose(1, 2)?)?.transpose(1, 2)?.contiguous()
    }
}

/// Multi-head self-attention with relative position embeddings shared by the
#[derive(Debug, Clone)]
pub struct Prepared {
    prior: Tensor,
    /// Output frames ([`HOP`] samples each) per input phoneme id.
    pub durations: Vec<u32>,
}

impl Prepared {
    pub fn frames(&self) -> usize {
        self.prior.dim(2).unwrap_or(0)
    }
}

/// The Piper voice's network.
pub struct Vits {
    encoder: TextEncoder,
    durations: DurationPredictor,
    flow: Flow,
    decoder: Decoder,
    device: Device,
}

impl std::fmt::Debug for Vits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vits").field("device", &self.device).finish_non_exhaustive()
    }
}

/// Latent frames of context the decoder needs on each side of a chunk (its
/// receptive field is about ±11 frames), so chunks join without seams.
pub const DECODER_CONTEXT: usize = 12;
/// The same for the flow: four coupling layers of four kernel-5 convolutions.
pub const FLOW_CONTEXT: usize = 4 * WN_LAYERS * (WN_KERNEL / 2);

impl Vits {
    /// Loads `model.safetensors` as converted by `tete models fetch piper-en_US-joe-medium`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, VitsError> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|source| VitsError::Load { path: path.display().to_string(), source })?;
        Self::from_tensors(tensors, device)
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self, VitsError> {
        let mut w = Weights { tensors };
        Ok(Self {
            encoder: TextEncoder::load(&mut w)?,
            durations: DurationPredictor::load(&mut w)?,
            flow: Flow::load(&mut w, device)?,
            decoder: Decoder::load(&mut w)?,
            device: device.clone(),
        })
    }

    /// Text encoder, durations and flow for one phoneme-id sequence. Noise
    /// comes from `seed`, so a seed and scales always give the same audio.
    pub fn prepare(&self, ids: &[i64], scales: Scales, seed: u64) -> Result<Prepared, VitsError> {
        scales.check()?;
        if ids.is_empty() {
            return Err(VitsError::Empty);
        }
        let ids: Vec<u32> = ids
            .iter()
            .map(|&id| u32::try_from(id).ok().filter(|&i| (i as usize) < VOCAB).ok_or(VitsError::UnknownId(id)))
            .collect::<Result<_, _>>()?;
        let t = ids.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut noise = |n: usize, scale: f32| -> Vec<f32> {
            (0..n).map(|_| StandardNormal.sample(&mut rng)).map(|v: f32| v * scale).collect()
        };

        let encoded = self.encoder.forward(&Tensor::from_vec(ids, t, &self.device)?)?;
        let log_durations =
            self.durations.reverse(&encoded.hidden, [noise(t, scales.noise_w), noise(t, scales.noise_w)])?;
        let durations: Vec<u32> =
            log_durations.iter().map(|&l| (l.exp() * scales.length_scale).ceil().clamp(0.0, 1e4) as u32).collect();

        let frames: Vec<u32> =
            durations.iter().enumerate().flat_map(|(i, &d)| std::iter::repeat_n(i as u32, d as usize)).collect();
        let frames = if frames.is_empty() { vec![0] } else { frames };
        let n = frames.len();
        let index = Tensor::from_vec(frames, n, &self.device)?;
        let mean = encoded.mean.index_select(&index, 2)?;
        let std = encoded.log_std.index_select(&index, 2)?.exp()?;
        let eps = Tensor::from_vec(noise(LATENT * n, scales.noise_scale), (1, LATENT, n), &self.device)?;
        let z_p = (mean + (eps * std)?)?;
        Ok(Prepared { prior: z_p, durations })
    }

    /// Audio samples (22.05 kHz) of frames `start..end`: the flow and the
    /// decoder run on the range with their context each side, so consecutive
    /// ranges concatenate to the whole decode and the first audio of a long
    /// sentence costs only its own frames.
    pub fn decode_range(&self, prepared: &Prepared, start: usize, end: usize) -> Result<Vec<f32>, VitsError> {
        let frames = prepared.frames();
        let end = end.min(frames);
        if start >= end {
            return Ok(Vec::new());
        }
        let window =
            |from: usize, to: usize, context: usize| (from.saturating_sub(context), (to + context).min(frames));
        let (dec_from, dec_to) = window(start, end, DECODER_CONTEXT);
        let (flow_from, flow_to) = window(dec_from, dec_to, FLOW_CONTEXT);
        let latent = self.flow.reverse(&prepared.prior.narrow(2, flow_from, flow_to - flow_from)?.contiguous()?)?;
        let latent = latent.narrow(2, dec_from - flow_from, dec_to - dec_from)?;
        let audio = self.decoder.forward(&latent)?;
        Ok(audio[(start - dec_from) * HOP..][..(end - start) * HOP].to_vec())
    }

    /// The whole sentence in one pass.
    pub fn decode(&self, prepared: &Prepared) -> Result<Vec<f32>, VitsError> {
        let latent = self.flow.reverse(&prepared.prior)?;
        Ok(self.decoder.forward(&latent)?)
    }

    /// Phoneme ids → audio at 22.05 kHz and the frames per id.
    pub fn synthesize(&self, ids: &[i64], scales: Scales, seed: u64) -> Result<(Vec<f32>, Vec<u32>), VitsError> {
        let prepared = self.prepare(ids, scales, seed)?;
        Ok((self.decode(&prepared)?, prepared.durations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_conv_ids_follow_the_export_order() {
        assert_eq!(FLOW_CONV_IDS[3][0], (8168, 8171));
        assert_eq!(FLOW_CONV_IDS[2][3], (8210, 8213));
        assert_eq!(FLOW_CONV_IDS[0][3], (8258, 8261));
    }
}
