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
/// heads over a window of ±[`WINDOW`] positions (zero beyond it).
struct Attention {
    q: Conv1d,
    k: Conv1d,
    v: Conv1d,
    o: Conv1d,
    rel_k: Tensor,
    rel_v: Tensor,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let t = x.dim(2)?;
        let heads = |conv: &Conv1d| conv.forward(x)?.reshape((HEADS, HEAD_DIM, t))?.transpose(1, 2)?.contiguous();
        let q = (heads(&self.q)? / (HEAD_DIM as f64).sqrt())?;
        let k = heads(&self.k)?;
        let v = heads(&self.v)?;
        let device = x.device();
        let span = 2 * WINDOW + 1;

        let rel_k = self.rel_k.unsqueeze(0)?.broadcast_as((HEADS, span, HEAD_DIM))?;
        let rel_logits = q.matmul(&rel_k.t()?)?; // (H, T, span)
        let local = gather_padded(&rel_logits, &key_offsets(t, device)?)?; // (H, T, T)
        let scores = (q.matmul(&k.t()?)? + local)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;

        let out = probs.matmul(&v)?;
        let rel_probs = gather_padded(&probs, &value_offsets(t, device)?)?; // (H, T, span)
        let rel_v = self.rel_v.unsqueeze(0)?.broadcast_as((HEADS, span, HEAD_DIM))?.contiguous()?;
        let out = (out + rel_probs.matmul(&rel_v)?)?;
        self.o.forward(&out.transpose(1, 2)?.reshape((1, HIDDEN, t))?)
    }
}

/// `x` (H, T, N) with a zero column appended, gathered along the last axis.
fn gather_padded(x: &Tensor, index: &Tensor) -> candle_core::Result<Tensor> {
    let (h, t, _) = x.dims3()?;
    let padded = Tensor::cat(&[x, &Tensor::zeros((h, t, 1), x.dtype(), x.device())?], 2)?;
    let index = index.unsqueeze(0)?.broadcast_as((h, t, index.dim(1)?))?.contiguous()?;
    padded.gather(&index, 2)
}

/// For query i and key j: the relative-logit column `j − i + WINDOW`, or the
/// zero column past the window.
fn key_offsets(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let zero = (2 * WINDOW + 1) as u32;
    let index: Vec<u32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if i.abs_diff(j) <= WINDOW { (j + WINDOW - i) as u32 } else { zero }))
        .collect();
    Tensor::from_vec(index, (t, t), device)
}

/// For query i and window slot w: the key `i + w − WINDOW`, or the zero
/// column outside the sequence.
fn value_offsets(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let span = 2 * WINDOW + 1;
    let index: Vec<u32> = (0..t)
        .flat_map(|i| {
            (0..span).map(move |w| match (i + w).checked_sub(WINDOW) {
                Some(j) if j < t => j as u32,
                _ => t as u32,
            })
        })
        .collect();
    Tensor::from_vec(index, (t, span), device)
}

struct EncoderLayer {
    attn: Attention,
    norm1: ChannelNorm,
    ffn1: Conv1d,
    ffn2: Conv1d,
    norm2: ChannelNorm,
}

struct TextEncoder {
    embedding: Tensor,
    layers: Vec<EncoderLayer>,
    proj: Conv1d,
}

/// What the text encoder gives for one phoneme sequence, each `(1, C, T)`.
struct Encoded {
    hidden: Tensor,
    mean: Tensor,
    log_std: Tensor,
}

impl TextEncoder {
    fn load(w: &mut Weights) -> Result<Self, VitsError> {
        let mut layers = Vec::with_capacity(ENCODER_LAYERS);
        for i in 0..ENCODER_LAYERS {
            let p = format!("enc_p.encoder.attn_layers.{i}");
            let square = [HIDDEN, HIDDEN, 1];
            layers.push(EncoderLayer {
                attn: Attention {
                    q: w.conv(&format!("{p}.conv_q"), square, 1, 1)?,
                    k: w.conv(&format!("{p}.conv_k"), square, 1, 1)?,
                    v: w.conv(&format!("{p}.conv_v"), square, 1, 1)?,
                    o: w.conv(&format!("{p}.conv_o"), square, 1, 1)?,
                    rel_k: w.take(&format!("{p}.emb_rel_k"), &[1, 2 * WINDOW + 1, HEAD_DIM])?.squeeze(0)?,
                    rel_v: w.take(&format!("{p}.emb_rel_v"), &[1, 2 * WINDOW + 1, HEAD_DIM])?.squeeze(0)?,
                },
                norm1: w.norm(&format!("enc_p.encoder.norm_layers_1.{i}"))?,
                ffn1: w.conv(&format!("enc_p.encoder.ffn_layers.{i}.conv_1"), [FILTER, HIDDEN, 3], 1, 1)?,
                ffn2: w.conv(&format!("enc_p.encoder.ffn_layers.{i}.conv_2"), [HIDDEN, FILTER, 3], 1, 1)?,
                norm2: w.norm(&format!("enc_p.encoder.norm_layers_2.{i}"))?,
            });
        }
        Ok(Self {
            // The export names the phoneme embedding `sid`.
            embedding: w.take("sid", &[VOCAB, HIDDEN])?,
            layers,
            proj: w.conv("enc_p.proj", [2 * LATENT, HIDDEN, 1], 1, 1)?,
        })
    }

    fn forward(&self, ids: &Tensor) -> candle_core::Result<Encoded> {
        let mut x = (self.embedding.embedding(ids)? * (HIDDEN as f64).sqrt())?.t()?.unsqueeze(0)?.contiguous()?;
        for layer in &self.layers {
            x = layer.norm1.forward(&(&x + layer.attn.forward(&x)?)?)?;
            let y = layer.ffn2.forward(&layer.ffn1.forward(&x)?.relu()?)?;
            x = layer.norm2.forward(&(x + y)?)?;
        }
        let stats = self.proj.forward(&x)?;
        Ok(Encoded { mean: stats.narrow(1, 0, LATENT)?, log_std: stats.narrow(1, LATENT, LATENT)?, hidden: x })
    }
}

/// Dilated depth-separable convolutions (the duration predictor's network).
struct DdsConv {
    separable: Vec<Conv1d>,
    norms1: Vec<ChannelNorm>,
    pointwise: Vec<Conv1d>,
    norms2: Vec<ChannelNorm>,
}

impl DdsConv {
    fn load(w: &mut Weights, prefix: &str) -> Result<Self, VitsError> {
        let mut dds = Self { separable: vec![], norms1: vec![], pointwise: vec![], norms2: vec![] };
        for i in 0..3 {
            let dilation = 3usize.pow(i as u32);
            dds.separable.push(w.conv(&format!("{prefix}.convs_sep.{i}"), [HIDDEN, 1, 3], dilation, HIDDEN)?);
            dds.norms1.push(w.norm(&format!("{prefix}.norms_1.{i}"))?);
            dds.pointwise.push(w.conv(&format!("{prefix}.convs_1x1.{i}"), [HIDDEN, HIDDEN, 1], 1, 1)?);
            dds.norms2.push(w.norm(&format!("{prefix}.norms_2.{i}"))?);
        }
        Ok(dds)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for i in 0..self.separable.len() {
            let y = self.norms1[i].forward(&self.separable[i].forward(&x)?)?.gelu_erf()?;
            let y = self.norms2[i].forward(&self.pointwise[i].forward(&y)?)?.gelu_erf()?;
            x = (x + y)?;
        }
        Ok(x)
    }
}

/// A coupling flow whose second channel goes through a monotonic
/// rational-quadratic spline conditioned on the first.
struct ConvFlow {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
}

impl ConvFlow {
    fn load(w: &mut Weights, prefix: &str) -> Result<Self, VitsError> {
        Ok(Self {
            pre: w.conv(&format!("{prefix}.pre"), [HIDDEN, 1, 1], 1, 1)?,
            convs: DdsConv::load(w, &format!("{prefix}.convs"))?,
            proj: w.conv(&format!("{prefix}.proj"), [SPLINE_PARAMS, HIDDEN, 1], 1, 1)?,
        })
    }

    /// Inverts the flow in place; `z` is `[channel 0, channel 1]`.
    fn reverse(&self, z: &mut [Vec<f32>; 2], cond: &Tensor) -> candle_core::Result<()> {
        let t = z[0].len();
        let x0 = Tensor::from_slice(&z[0], (1, 1, t), cond.device())?;
        let h = (self.pre.forward(&x0)? + cond)?;
        let params = self.proj.forward(&self.convs.forward(&h)?)?.i(0)?.t()?.to_vec2::<f32>()?; // (T, 29)
        for (value, p) in z[1].iter_mut().zip(&params) {
            *value = spline_inverse(*value, p);
        }
        Ok(())
    }
}

/// The inverse of the unconstrained rational-quadratic spline with linear
/// tails (Durkan et al. 2019, as in VITS), for one value and its 29 raw
/// parameters (10 widths, 10 heights, 9 interior derivatives).
fn spline_inverse(y: f32, params: &[f32]) -> f32 {
    if !(-TAIL_BOUND..=TAIL_BOUND).contains(&y) {
        return y;
    }
    let scale = 1.0 / (HIDDEN as f32).sqrt();
    let knots = |raw: &[f32]| -> [f32; SPLINE_BINS + 1] {
        let max = raw.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
        let exp: Vec<f32> = raw.iter().map(|&v| (v * scale - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let mut knots = [0.0; SPLINE_BINS + 1];
        let mut cumulative = 0.0f32;
        for (k, e) in exp.iter().enumerate() {
            cumulative += MIN_BIN + (1.0 - MIN_BIN * SPLINE_BINS as f32) * (e / sum);
            knots[k + 1] = 2.0 * TAIL_BOUND * cumulative - TAIL_BOUND;
        }
        knots[0] = -TAIL_BOUND;
        knots[SPLINE_BINS] = TAIL_BOUND;
        knots
    };
    let xs = knots(&params[..SPLINE_BINS]);
    let ys = knots(&params[SPLINE_BINS..2 * SPLINE_BINS]);
    // The boundary derivatives are fixed so the spline meets the linear tails
    // with slope one: softplus(ln(e^(1 − min) − 1)) + min.
    let boundary = softplus(((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln()) + MIN_DERIVATIVE;
    let derivative = |k: usize| {
        if k == 0 || k == SPLINE_BINS { boundary } else { softplus(params[2 * SPLINE_BINS + k - 1]) + MIN_DERIVATIVE }
    };

    // The last knot is nudged up so y = TAIL_BOUND falls in the last bin.
    let bin = (0..=SPLINE_BINS)
        .filter(|&k| y >= if k == SPLINE_BINS { ys[k] + 1e-6 } else { ys[k] })
        .count()
        .clamp(1, SPLINE_BINS)
        - 1;
    let (x0, width) = (xs[bin], xs[bin + 1] - xs[bin]);
    let (y0, height) = (ys[bin], ys[bin + 1] - ys[bin]);
    let (d0, d1) = (derivative(bin), derivative(bin + 1));
    let delta = height / width;
    let dy = y - y0;
    let a = dy * (d0 + d1 - 2.0 * delta) + height * (delta - d0);
    let b = height * d0 - dy * (d0 + d1 - 2.0 * delta);
    let c = -delta * dy;
    let discriminant = (b * b - 4.0 * a * c).max(0.0);
    let root = (2.0 * c) / (-b - discriminant.sqrt());
    root * width + x0
}

fn softplus(x: f32) -> f32 {
    // torch's softplus switches to the identity above 20.
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The stochastic duration predictor, run from noise to log-durations.
struct DurationPredictor {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
    /// Flows 7, 5 and 3; flow 1 is skipped in reverse, as in VITS.
    flows: Vec<ConvFlow>,
    affine_mean: [f32; 2],
    /// exp(−logs) of the elementwise affine flow, folded by the export.
    affine_scale: [f32; 2],
}

impl DurationPredictor {
    fn load(w: &mut Weights) -> Result<Self, VitsError> {
        let pair = |t: Tensor| -> Result<[f32; 2], VitsError> {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            Ok([v[0], v[1]])
        };
        Ok(Self {
            pre: w.conv("dp.pre", [HIDDEN, HIDDEN, 1], 1, 1)?,
            convs: DdsConv::load(w, "dp.convs")?,
            proj: w.conv("dp.proj", [HIDDEN, HIDDEN, 1], 1, 1)?,
            flows: [7, 5, 3].iter().map(|i| ConvFlow::load(w, &format!("dp.flows.{i}"))).collect::<Result<_, _>>()?,
            affine_mean: pair(w.take("dp.flows.0.m", &[2, 1])?)?,
            affine_scale: pair(w.take("/dp/flows.0/Exp_output_0", &[2, 1])?)?,
        })
    }

    /// Log-durations (in frames) per input position, from `noise` `[2][T]`.
    fn reverse(&self, hidden: &Tensor, mut z: [Vec<f32>; 2]) -> candle_core::Result<Vec<f32>> {
        let cond = self.proj.forward(&self.convs.forward(&self.pre.forward(hidden)?)?)?;
        for flow in &self.flows {
            z.swap(0, 1);
            flow.reverse(&mut z, &cond)?;
        }
        z.swap(0, 1);
        for (channel, values) in z.iter_mut().enumerate() {
            for v in values {
                *v = (*v - self.affine_mean[channel]) * self.affine_scale[channel];
            }
        }
        let [log_durations, _] = z;
        Ok(log_durations)
    }
}

/// WaveNet-style gated residual stack (no conditioning).
struct WaveNet {
    input: Vec<Conv1d>,
    res_skip: Vec<Conv1d>,
    /// On the CPU, per layer: the residual half of `res_skip` (none in the
    /// last layer) and its skip half, apart, so each accumulates straight
    /// into its sum.
    direct: Option<Vec<(Option<kernels::Conv1d>, kernels::Conv1d)>>,
}

impl WaveNet {
    fn new(input: Vec<Conv1d>, res_skip: Vec<Conv1d>, weights: &[(Vec<f32>, Vec<f32>)]) -> Self {
        let direct = input.iter().all(|c| c.direct.is_some()).then(|| {
            let last = weights.len() - 1;
            let half = |w: &[f32], b: &[f32], part: usize| {
                kernels::Conv1d::new(
                    &w[part * LATENT * LATENT..][..LATENT * LATENT],
                    Some(&b[part * LATENT..][..LATENT]),
                    LATENT,
                    LATENT,
                    1,
                    1,
                )
            };
            weights
                .iter()
                .enumerate()
                .map(|(i, (w, b))| if i < last { (Some(half(w, b, 0)), half(w, b, 1)) } else { (None, half(w, b, 0)) })
                .collect()
        });
        Self { input, res_skip, direct }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        let mut out: Option<Tensor> = None;
        let last = self.input.len() - 1;
        for (i, (input, res_skip)) in self.input.iter().zip(&self.res_skip).enumerate() {
            let h = input.forward(&x)?;
            let acts = (h.narrow(1, 0, LATENT)?.tanh()? * candle_nn::ops::sigmoid(&h.narrow(1, LATENT, LATENT)?)?)?;
            let rs = res_skip.forward(&acts)?;
            let skip = if i < last {
                x = (x + rs.narrow(1, 0, LATENT)?)?;
                rs.narrow(1, LATENT, LATENT)?
            } else {
                rs
            };
            out = Some(match out {
                Some(o) => (o + skip)?,
                None => skip,
            });
        }
        out.ok_or_else(|| candle_core::Error::Msg("empty WaveNet".into()))
    }

    /// The same on the CPU; `x` padded for the kernel-5 convolutions.
    fn forward_direct(&self, mut x: Signal, direct: &[(Option<kernels::Conv1d>, kernels::Conv1d)]) -> Signal {
        let len = x.len();
        let mut out = Signal::zeros(LATENT, len, 0);
        let mut acts = Signal::zeros(LATENT, len, 0);
        for (input, (res, skip)) in self.input.iter().zip(direct) {
            let Some(input) = &input.direct else { unreachable!("checked in WaveNet::new") };
            let mut h = Signal::zeros(2 * LATENT, len, 0);
            input.forward_into(&x, &mut h);
            acts.for_each_row(|c, a| tete_kernels::gate::tanh_sigmoid(h.row(c), h.row(LATENT + c), a));
            if let Some(res) = res {
                res.forward_into(&acts, &mut x);
            }
            skip.forward_into(&acts, &mut out);
        }
        out
    }
}

/// Mean-only affine coupling layer.
struct Coupling {
    pre: Conv1d,
    net: WaveNet,
    post: Conv1d,
}

struct Flow {
    /// Coupling layers 0, 2, 4, 6, each followed by a channel flip.
    couplings: Vec<Coupling>,
    flip: Tensor,
}

impl Flow {
    fn load(w: &mut Weights, device: &Device) -> Result<Self, VitsError> {
        let mut couplings = Vec::new();
        for (n, ids) in FLOW_CONV_IDS.iter().enumerate() {
            let p = format!("flow.flows.{}", 2 * n);
            let mut input = Vec::new();
            let mut res_skip = Vec::new();
            let mut res_skip_weights = Vec::new();
            for (layer, &(in_id, rs_id)) in ids.iter().enumerate() {
                let weight = w.take(&format!("onnx::Conv_{in_id}"), &[2 * LATENT, LATENT, WN_KERNEL])?;
                input.push(w.conv_with(weight, Some(&format!("{p}.enc.in_layers.{layer}.bias")), 1, 1)?);
                let out = if layer + 1 < WN_LAYERS { 2 * LATENT } else { LATENT };
                let weight = w.take(&format!("onnx::Conv_{rs_id}"), &[out, LATENT, 1])?;
                let bias_name = format!("{p}.enc.res_skip_layers.{layer}.bias");
                let bias = w.tensors.get(&bias_name).map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
                res_skip_weights.push((weight.flatten_all()?.to_vec1::<f32>()?, bias.unwrap_or_default()));
                res_skip.push(w.conv_with(weight, Some(&bias_name), 1, 1)?);
            }
            couplings.push(Coupling {
                pre: w.conv(&format!("{p}.pre"), [LATENT, HALF, 1], 1, 1)?,
                net: WaveNet::new(input, res_skip, &res_skip_weights),
                post: w.conv(&format!("{p}.post"), [HALF, LATENT, 1], 1, 1)?,
            });
        }
        let flip = Tensor::from_vec((0..LATENT as u32).rev().collect::<Vec<_>>(), LATENT, device)?;
        Ok(Self { couplings, flip })
    }

    fn reverse(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        if z.device().is_cpu() {
            if let Some(z) = self.reverse_direct(z)? {
                return Ok(z);
            }
        }
        let mut z = z.clone();
        for c in self.couplings.iter().rev() {
            z = z.index_select(&self.flip, 1)?;
            let x0 = z.narrow(1, 0, HALF)?;
            let mean = c.post.forward(&c.net.forward(&c.pre.forward(&x0)?)?)?;
            z = Tensor::cat(&[&x0, &(z.narrow(1, HALF, HALF)? - mean)?], 1)?;
        }
        Ok(z)
    }

    /// The same on the CPU with the kernels crate, if every layer has its
    /// direct form.
    fn reverse_direct(&self, z: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (_, channels, len) = z.dims3()?;
        let mut rows: Vec<Vec<f32>> = z.squeeze(0)?.to_vec2::<f32>()?;
        for c in self.couplings.iter().rev() {
            let (Some(pre), Some(post), Some(direct)) = (&c.pre.direct, &c.post.direct, &c.net.direct) else {
                return Ok(None);
            };
            rows.reverse();
            let x0 = Signal::from_rows(&rows[..HALF].concat(), HALF, len, 0);
            let mut h = Signal::zeros(LATENT, len, WN_KERNEL / 2);
            pre.forward_into(&x0, &mut h);
            let h = c.net.forward_direct(h, direct);
            let mut mean = Signal::zeros(HALF, len, 0);
            post.forward_into(&h, &mut mean);
            for (c, row) in rows[HALF..].iter_mut().enumerate() {
                row.iter_mut().zip(mean.row(c)).for_each(|(z, m)| *z -= m);
            }
        }
        Ok(Some(Tensor::from_vec(rows.concat(), (1, channels, len), z.device())?))
    }
}

/// HiFi-GAN generator with type-2 residual blocks, on the CPU with the
/// kernels crate's direct convolutions (whatever the voice's device: its
/// long, narrow signals are what those are made for).
struct Decoder {
    pre: kernels::Conv1d,
    ups: Vec<kernels::ConvTranspose1d>,
    /// Three resblocks per upsampling, two convolutions each.
    blocks: Vec<[kernels::Conv1d; 2]>,
    post: kernels::Conv1d,
}

/// Padding of the resblocks' inputs: the widest reach, kernel 7 at dilation 12.
const RES_PAD: usize = 36;

impl Decoder {
    fn load(w: &mut Weights) -> Result<Self, VitsError> {
        let mut conv = |name: &str, shape: [usize; 3], dilation: usize, bias: bool| -> Result<_, VitsError> {
            let weight = w.take(&format!("{name}.weight"), &shape)?.flatten_all()?.to_vec1::<f32>()?;
            let bias = if bias { Some(w.take(&format!("{name}.bias"), &shape[..1])?.to_vec1::<f32>()?) } else { None };
            let [c_out, c_in, kernel] = shape;
            Ok(kernels::Conv1d::new(&weight, bias.as_deref(), c_out, c_in, kernel, dilation))
        };
        let pre = conv("dec.conv_pre", [UP_CHANNELS[0], LATENT, 7], 1, true)?;
        let mut blocks = Vec::new();
        for (i, (&cout, &(stride, kernel))) in UP_CHANNELS[1..].iter().zip(&UPSAMPLES).enumerate() {
            for (j, (&k, dilations)) in RES_KERNELS.iter().zip(&RES_DILATIONS).enumerate() {
                let p = format!("dec.resblocks.{}", 3 * i + j);
                blocks.push([
                    conv(&format!("{p}.convs.0"), [cout, cout, k], dilations[0], true)?,
                    conv(&format!("{p}.convs.1"), [cout, cout, k], dilations[1], true)?,
                ]);
            }
            debug_assert_eq!(kernel, 2 * stride);
        }
        let post = conv("dec.conv_post", [1, UP_CHANNELS[3], 7], 1, false)?;
        let mut ups = Vec::new();
        for (i, &(stride, kernel)) in UPSAMPLES.iter().enumerate() {
            let (cin, cout) = (UP_CHANNELS[i], UP_CHANNELS[i + 1]);
            let weight =
                w.take(&format!("dec.ups.{i}.weight"), &[cin, cout, kernel])?.flatten_all()?.to_vec1::<f32>()?;
            let bias = w.take(&format!("dec.ups.{i}.bias"), &[cout])?.to_vec1::<f32>()?;
            // The export pads by (kernel − stride) / 2 = stride / 2, the crop
            // the kernel applies.
            ups.push(kernels::ConvTranspose1d::new(&weight, &bias, cin, cout, stride));
        }
        Ok(Self { pre, ups, blocks, post })
    }

    /// Audio (`frames · HOP` samples in [−1, 1]) from a latent `(1, 192, frames)`.
    fn forward(&self, z: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (_, channels, frames) = z.dims3()?;
        let latent = z.to_device(&Device::Cpu)?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let latent = Signal::from_rows(&latent, channels, frames, self.pre.same_pad());
        let mut x = Signal::for_overwrite(UP_CHANNELS[0], frames, 0);
        self.pre.forward_fused(&latent, Residual::Overwrite, &mut x, None);
        // `x` is the sum of the previous stage's resblocks (its mean times
        // `parts`), or the pre-convolution's output.
        let mut parts = 1.0;
        for (i, up) in self.ups.iter().enumerate() {
            let mut act = Signal::for_overwrite(x.channels(), x.len(), 1);
            act.map_rows(&x, |a, x| leaky_relu_mean(a, x, parts, 0.1));
            let (channels, len) = (UP_CHANNELS[i + 1], UPSAMPLES[i].0 * x.len());
            let mut y = Signal::for_overwrite(channels, len, 0);
            up.forward_into(&act, &mut y);
            // Each resblock: h ← h + conv(leaky(h)) twice, from h = y; their
            // sum, with the element-wise work fused into the convolutions.
            let mut first = Signal::for_overwrite(channels, len, RES_PAD);
            first.map_rows(&y, |a, y| leaky_relu_mean(a, y, 1.0, 0.1));
            let mut second = Signal::for_overwrite(channels, len, RES_PAD);
            let mut h = Signal::for_overwrite(channels, len, 0);
            let mut sum = Signal::for_overwrite(channels, len, 0);
            for (b, [conv1, conv2]) in self.blocks[3 * i..3 * i + 3].iter().enumerate() {
                conv1.forward_fused(&first, Residual::From(&y), &mut h, Some((&mut second, 0.1)));
                let residual = if b == 0 { Residual::From(&h) } else { Residual::Add(&h) };
                conv2.forward_fused(&second, residual, &mut sum, None);
            }
            x = sum;
            parts = RES_KERNELS.len() as f32;
        }
        let mut act = Signal::for_overwrite(x.channels(), x.len(), self.post.same_pad());
        act.map_rows(&x, |a, x| leaky_relu_mean(a, x, parts, 0.01));
        let mut audio = Signal::zeros(1, x.len(), 0);
        self.post.forward_into(&act, &mut audio);
        Ok(audio.row(0).iter().map(|v| v.tanh()).collect())
    }
}

/// `out = leaky_relu(x / parts)`, as `max(v, slope · v)` (slope < 1).
fn leaky_relu_mean(out: &mut [f32], x: &[f32], parts: f32, slope: f32) {
    for (o, &x) in out.iter_mut().zip(x) {
        let v = if parts == 1.0 { x } else { x / parts };
        *o = v.max(v * slope);
    }
}

/// A sentence ready to decode: the latent prior (before the flow) and the
/// frames given to each id.
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
    fn spline_is_identity_outside_the_tails_and_monotonic_inside() {
        let params: Vec<f32> = (0..SPLINE_PARAMS).map(|i| ((i * 7 % 11) as f32 - 5.0) * 3.0).collect();
        assert_eq!(spline_inverse(6.0, &params), 6.0);
        assert_eq!(spline_inverse(-7.5, &params), -7.5);
        let mut last = f32::NEG_INFINITY;
        for k in 0..=200 {
            let y = -TAIL_BOUND + k as f32 * (2.0 * TAIL_BOUND / 200.0);
            let x = spline_inverse(y, &params);
            assert!(x.is_finite() && x >= last - 1e-5, "not monotonic at y = {y}: {x} after {last}");
            assert!((-TAIL_BOUND - 1e-4..=TAIL_BOUND + 1e-4).contains(&x));
            last = x;
        }
        // Knots map onto knots: the ends stay put.
        assert!((spline_inverse(-TAIL_BOUND, &params) + TAIL_BOUND).abs() < 1e-4);
        assert!((spline_inverse(TAIL_BOUND, &params) - TAIL_BOUND).abs() < 1e-3);
    }

    #[test]
    fn zero_parameters_give_the_identity() {
        // Equal bins and unit derivatives: the spline is the straight line.
        let mut params = vec![0.0f32; SPLINE_PARAMS];
        let unit = ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln();
        params[2 * SPLINE_BINS..].fill(unit);
        for y in [-4.9f32, -1.0, 0.0, 0.37, 2.5, 4.99] {
            assert!((spline_inverse(y, &params) - y).abs() < 1e-4, "{y}");
        }
    }

    #[test]
    fn relative_offsets_stay_in_the_window() {
        let device = Device::Cpu;
        let keys = key_offsets(12, &device).unwrap().to_vec2::<u32>().unwrap();
        assert_eq!(keys[5][5], WINDOW as u32);
        assert_eq!(keys[5][1], 0);
        assert_eq!(keys[5][9], 2 * WINDOW as u32);
        assert_eq!(keys[5][0], 2 * WINDOW as u32 + 1);
        let values = value_offsets(12, &device).unwrap().to_vec2::<u32>().unwrap();
        assert_eq!(values[0][..WINDOW], [12; WINDOW]);
        assert_eq!(values[0][WINDOW], 0);
        assert_eq!(values[11][2 * WINDOW], 12);
        assert_eq!(values[6][0], 2);
    }

    #[test]
    fn flow_conv_ids_follow_the_export_order() {
        assert_eq!(FLOW_CONV_IDS[3][0], (8168, 8171));
        assert_eq!(FLOW_CONV_IDS[2][3], (8210, 8213));
        assert_eq!(FLOW_CONV_IDS[0][3], (8258, 8261));
    }
}
