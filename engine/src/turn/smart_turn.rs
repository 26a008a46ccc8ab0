//! Smart Turn v3.2 in candle: is the user done speaking? A Whisper-tiny
//! style encoder (two convolutions, 4 pre-norm transformer layers, d = 384,
//! 6 heads) over 8 s of 80-bin log-mel, attention pooling over time
//! (Linear 384→256, tanh, Linear 256→1, softmax), then a classifier
//! (Linear 384→256, LayerNorm, GELU, Linear 256→64, GELU, Linear 64→1,
//! sigmoid) giving P(end of turn).
//!
//! The weights come from `smart-turn-v3.2-cpu.onnx` (int8, dequantized to
//! f32 by `tete models`). The exporter left the encoder's projection
//! matrices under anonymous names (`val_NNN`, stored transposed as
//! `[in, out]`); [`ANONYMOUS`] names them, read off that graph (the file is
//! pinned by sha256 in models.toml). The graph also quantizes activations
//! to uint8 at 78 points with stored per-tensor scales, and the model's
//! verdicts depend on it (on read speech, f32 activations moved some
//! probabilities by more than 0.5): [`FakeQuant`] rounds at the same points
//! with the same scales. What remains is the order of float sums, which can
//! land a value one uint8 step off; near the threshold that moves a verdict
//! as much as onnxruntime's own two ways of running the graph differ (the
//! tests state the bound).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm, Linear};
use tete_kernels::mel::N_MELS;

use crate::features::LogMelCpu;

/// Audio the model looks at: the last 8 s at 16 kHz.
pub const WINDOW_SAMPLES: usize = 8 * 16_000;
/// Mel frames in the window.
pub const FRAMES: usize = 800;
const D_MODEL: usize = 384;
const HEADS: usize = 6;
const LAYERS: usize = 4;
const FFN: usize = 1536;
const LN_EPS: f64 = 1e-5;

/// Activation quantization points of each encoder layer, in graph order:
/// attention norm, k, q (before bias), v (before bias), v by head,
/// q·scale, k·scale, scores, softmax, attention, attention merged,
/// out (before bias), feed-forward norm, fc1 (before bias), GELU, fc2 (before bias).
const LAYER_POINTS: [[&str; 16]; LAYERS] = [
    [
        "layer_norm",
        "linear_1",
        "val_18",
        "val_33",
        "transpose_2",
        "val_64",
        "val_67",
        "val_68",
        "val_69",
        "scaled_dot_product_attention",
        "_unsafe_view",
        "val_76",
        "layer_norm_1",
        "val_80",
        "gelu_2",
        "val_89",
    ],
    [
        "layer_norm_2",
        "linear_7",
        "val_93",
        "val_108",
        "transpose_6",
        "val_137",
        "val_140",
        "val_141",
        "val_142",
        "scaled_dot_product_attention_1",
        "_unsafe_view_1",
        "val_149",
        "layer_norm_3",
        "val_153",
        "gelu_3",
        "val_162",
    ],
    [
        "layer_norm_4",
        "linear_13",
        "val_166",
        "val_181",
        "transpose_10",
        "val_210",
        "val_213",
        "val_214",
        "val_215",
        "scaled_dot_product_attention_2",
        "_unsafe_view_2",
        "val_222",
        "layer_norm_5",
        "val_226",
        "gelu_4",
        "val_235",
    ],
    [
        "layer_norm_6",
        "linear_19",
        "val_239",
        "val_254",
        "transpose_14",
        "val_283",
        "val_286",
        "val_287",
        "val_288",
        "scaled_dot_product_attention_3",
        "_unsafe_view_3",
        "val_295",
        "layer_norm_7",
        "val_299",
        "gelu_5",
        "val_308",
    ],
];

/// Encoder projections by layer: (q, k, v, out, fc1, fc2), as `val_NNN`
/// initializers of the pinned graph, each `[in, out]`.
const ANONYMOUS: [[u32; 6]; LAYERS] = [
    [17, 25, 32, 75, 79, 88],
    [92, 100, 107, 148, 152, 161],
    [165, 173, 180, 221, 225, 234],
    [238, 246, 253, 294, 298, 307],
];
/// Attention pooling: Linear 384→256 and 256→1, `[in, out]`.
const POOL: [u32; 2] = [311, 313];

#[derive(Debug, thiserror::Error)]
pub enum TurnModelError {
    #[error("loading Smart Turn weights from {path}: {source}")]
    Load { path: String, source: candle_core::Error },
    #[error("Smart Turn weights lack {0} (is this smart-turn-v3.2-cpu converted by `tete models`?)")]
    Missing(String),
    #[error("Smart Turn tensor {name} has shape {actual:?}, expected {expected:?}")]
    Shape { name: String, actual: Vec<usize>, expected: Vec<usize> },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Round-trip through uint8 as the graph's QuantizeLinear/DequantizeLinear
/// pairs do: `(clamp(round_half_even(x / scale) + zero, 0, 255) − zero) · scale`.
/// One pass over the buffer on the CPU; composed tensor ops elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct FakeQuant {
    scale: f32,
    zero: f32,
}

impl FakeQuant {
    pub fn new(scale: f32, zero: u8) -> Self {
        Self { scale, zero: f32::from(zero) }
    }

    fn round_trip(&self, x: f32) -> f32 {
        // As DequantizeLinear computes it: (q − zero) · scale, q and zero whole numbers.
        (((x / self.scale).round_ties_even() + self.zero).clamp(0.0, 255.0) - self.zero) * self.scale
    }

    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            x.contiguous()?.apply_op1_no_bwd(self)
        } else {
            self.apply_composed(x)
        }
    }

    /// The same with candle's tensor ops: any device, and the reference the
    /// one-pass CPU version is tested against.
    pub fn apply_composed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (s, z) = (f64::from(self.scale), f64::from(self.zero));
        let y = (x / s)?;
        // Ties round to even, as QuantizeLinear specifies.
        let tie = (&y - y.floor()?)?.eq(0.5)?;
        let rounded = tie.where_cond(&((&y * 0.5)?.round()? * 2.0)?, &y.round()?)?;
        ((rounded + z)?.clamp(0.0, 255.0)? - z)? * s
    }
}

impl candle_core::CustomOp1 for FakeQuant {
    fn name(&self) -> &'static str {
        "fake-quant-u8"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let data = storage.as_slice::<f32>()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fake-quant-u8 takes a contiguous tensor")
        };
        let out: Vec<f32> = data[start..end].iter().map(|&x| self.round_trip(x)).collect();
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, TurnModelError> {
        let tensor = self.tensors.remove(name).ok_or_else(|| TurnModelError::Missing(name.to_string()))?;
        if tensor.dims() != shape {
            return Err(TurnModelError::Shape {
                name: name.into(),
                actual: tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }

    fn quant(&mut self, point: &str) -> Result<FakeQuant, TurnModelError> {
        let scale = self.take(&format!("{point}_scale"), &[])?.to_scalar::<f32>()?;
        let zero = self.take(&format!("{point}_zero_point"), &[])?.to_scalar::<f32>()?;
        if !scale.is_finite() || scale <= 0.0 || !(0.0..=255.0).contains(&zero) || zero.fract() != 0.0 {
            return Err(TurnModelError::Missing(format!("a positive {point}_scale and a uint8 {point}_zero_point")));
        }
        Ok(FakeQuant::new(scale, zero as u8))
    }

    /// A linear layer whose matmul output is quantized before the bias is added.
    fn quantized(
        &mut self,
        id: u32,
        input: usize,
        output: usize,
        bias: Option<&str>,
        point: &str,
    ) -> Result<QLinear, TurnModelError> {
        let inner = self.projection(id, input, output, None)?;
        let bias = bias.map(|name| self.take(name, &[output])).transpose()?;
        Ok(QLinear { inner, quant: self.quant(point)?, bias })
    }

    /// A named linear layer stored as torch does: weight `[out, in]`.
    fn linear(&mut self, prefix: &str, input: usize, output: usize) -> Result<Linear, TurnModelError> {
        let w = self.take(&format!("{prefix}.weight_DequantizeLinear_Output"), &[output, input])?;
        let b = self.take(&format!("{prefix}.bias"), &[output])?;
        Ok(Linear::new(w, Some(b)))
    }

    /// An anonymous projection `[in, out]` with an optional named bias.
    fn projection(
        &mut self,
        id: u32,
        input: usize,
        output: usize,
        bias: Option<&str>,
    ) -> Result<Linear, TurnModelError> {
        let w = self.take(&format!("val_{id}_DequantizeLinear_Output"), &[input, output])?.t()?.contiguous()?;
        let b = bias.map(|name| self.take(name, &[output])).transpose()?;
        Ok(Linear::new(w, b))
    }

    fn layer_norm(&mut self, prefix: &str, dim: usize) -> Result<LayerNorm, TurnModelError> {
        let w = self.take(&format!("{prefix}.weight"), &[dim])?;
        let b = self.take(&format!("{prefix}.bias"), &[dim])?;
        Ok(LayerNorm::new(w, b, LN_EPS))
    }

    fn conv(&mut self, prefix: &str, cin: usize, stride: usize) -> Result<Conv1d, TurnModelError> {
        let w = self.take(&format!("{prefix}.weight_DequantizeLinear_Output"), &[D_MODEL, cin, 3])?;
        let b = self.take(&format!("{prefix}.bias"), &[D_MODEL])?;
        let config = Conv1dConfig { padding: 1, stride, ..Default::default() };
        Ok(Conv1d::new(w, Some(b), config))
    }
}

/// Matmul, uint8 round trip, then bias: the graph's `MatMul → Q/DQ → Add`.
struct QLinear {
    inner: Linear,
    quant: FakeQuant,
    bias: Option<Tensor>,
}

impl QLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.quant.apply(&self.inner.forward(x)?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A layer's remaining quantization points (see [`LAYER_POINTS`]).
struct LayerQuant {
    attn_norm: FakeQuant,
    v_heads: FakeQuant,
    q_scaled: FakeQuant,
    k_scaled: FakeQuant,
    scores: FakeQuant,
    probs: FakeQuant,
    attended: FakeQuant,
    merged: FakeQuant,
    ffn_norm: FakeQuant,
    gelu: FakeQuant,
}

struct Layer {
    attn_norm: LayerNorm,
    q: QLinear,
    k: QLinear,
    v: QLinear,
    out: QLinear,
    ffn_norm: LayerNorm,
    fc1: QLinear,
    fc2: QLinear,
    quant: LayerQuant,
}

impl Layer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let head = D_MODEL / HEADS;
        let fq = &self.quant;
        let h = fq.attn_norm.apply(&self.attn_norm.forward(x)?)?;
        let split = |y: Tensor| y.reshape((b, t, HEADS, head))?.transpose(1, 2)?.contiguous();
        // q and k are each scaled by head^-1/4, as the exported graph does.
        let scale = (head as f64).powf(-0.25);
        let q = fq.q_scaled.apply(&(split(self.q.forward(&h)?)? * scale)?)?;
        let k = fq.k_scaled.apply(&(split(self.k.forward(&h)?)? * scale)?)?;
        let v = fq.v_heads.apply(&split(self.v.forward(&h)?)?)?;
        let scores = fq.scores.apply(&q.matmul(&k.t()?)?)?;
        let weights = fq.probs.apply(&candle_nn::ops::softmax_last_dim(&scores)?)?;
        let attended = fq.attended.apply(&weights.matmul(&v)?)?.transpose(1, 2)?.reshape((b, t, D_MODEL))?;
        let x = (x + self.out.forward(&fq.merged.apply(&attended)?)?)?;
        let h = fq.ffn_norm.apply(&self.ffn_norm.forward(&x)?)?;
        let h = fq.gelu.apply(&self.fc1.forward(&h)?.gelu_erf()?)?;
        x + self.fc2.forward(&h)?
    }
}

/// The front end's and the head's quantization points.
struct HeadQuant {
    input: FakeQuant,
    conv1: FakeQuant,
    gelu1: FakeQuant,
    conv2: FakeQuant,
    final_norm: FakeQuant,
    tanh: FakeQuant,
    pooled: FakeQuant,
    cls1: FakeQuant,
    gelu_cls1: FakeQuant,
    cls2: FakeQuant,
    gelu_cls2: FakeQuant,
    cls3: FakeQuant,
}

/// The model: weights only, shared read-only by every session.
pub struct SmartTurn {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    pool1: QLinear,
    pool2: QLinear,
    quant: HeadQuant,
    cls1: Linear,
    cls_norm: LayerNorm,
    cls2: Linear,
    cls3: Linear,
    device: Device,
}

impl std::fmt::Debug for SmartTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurn").field("device", &self.device).finish_non_exhaustive()
    }
}

impl SmartTurn {
    /// Loads `model.safetensors` as converted by `tete models fetch smart-turn-v3.2`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, TurnModelError> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|source| TurnModelError::Load { path: path.display().to_string(), source })?;
        Self::from_tensors(tensors, device)
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self, TurnModelError> {
        let mut w = Weights { tensors };
        let conv1 = w.conv("inner.encoder.conv1", N_MELS, 1)?;
        let conv2 = w.conv("inner.encoder.conv2", D_MODEL, 2)?;
        let positions = w.take("inner.encoder.embed_positions.weight", &[FRAMES / 2, D_MODEL])?;
        let mut layers = Vec::with_capacity(LAYERS);
        for (i, (ids, points)) in ANONYMOUS.iter().zip(&LAYER_POINTS).enumerate() {
            let p = format!("inner.encoder.layers.{i}");
            let bias = |name: &str| format!("{p}.{name}.bias");
            layers.push(Layer {
                attn_norm: w.layer_norm(&format!("{p}.self_attn_layer_norm"), D_MODEL)?,
                k: w.quantized(ids[1], D_MODEL, D_MODEL, None, points[1])?,
                q: w.quantized(ids[0], D_MODEL, D_MODEL, Some(&bias("self_attn.q_proj")), points[2])?,
                v: w.quantized(ids[2], D_MODEL, D_MODEL, Some(&bias("self_attn.v_proj")), points[3])?,
                out: w.quantized(ids[3], D_MODEL, D_MODEL, Some(&bias("self_attn.out_proj")), points[11])?,
                ffn_norm: w.layer_norm(&format!("{p}.final_layer_norm"), D_MODEL)?,
                fc1: w.quantized(ids[4], D_MODEL, FFN, Some(&bias("fc1")), points[13])?,
                fc2: w.quantized(ids[5], FFN, D_MODEL, Some(&bias("fc2")), points[15])?,
                quant: LayerQuant {
                    attn_norm: w.quant(points[0])?,
                    v_heads: w.quant(points[4])?,
                    q_scaled: w.quant(points[5])?,
                    k_scaled: w.quant(points[6])?,
                    scores: w.quant(points[7])?,
                    probs: w.quant(points[8])?,
                    attended: w.quant(points[9])?,
                    merged: w.quant(points[10])?,
                    ffn_norm: w.quant(points[12])?,
                    gelu: w.quant(points[14])?,
                },
            });
        }
        let quant = HeadQuant {
            input: w.quant("input_features")?,
            conv1: w.quant("conv1d")?,
            gelu1: w.quant("gelu")?,
            conv2: w.quant("conv1d_1")?,
            final_norm: w.quant("layer_norm_8")?,
            tanh: w.quant("tanh")?,
            pooled: w.quant("sum_1")?,
            cls1: w.quant("linear_26")?,
            gelu_cls1: w.quant("gelu_6")?,
            cls2: w.quant("linear_27")?,
            gelu_cls2: w.quant("gelu_7")?,
            cls3: w.quant("linear_28")?,
        };
        Ok(Self {
            conv1,
            conv2,
            positions,
            layers,
            final_norm: w.layer_norm("inner.encoder.layer_norm", D_MODEL)?,
            pool1: w.quantized(POOL[0], D_MODEL, 256, Some("inner.pool_attention.0.bias"), "val_312")?,
            pool2: w.quantized(POOL[1], 256, 1, Some("inner.pool_attention.2.bias"), "val_314")?,
            quant,
            cls1: w.linear("inner.classifier.0", D_MODEL, 256)?,
            cls_norm: w.layer_norm("inner.classifier.1", 256)?,
            cls2: w.linear("inner.classifier.4", 256, 64)?,
            cls3: w.linear("inner.classifier.6", 64, 1)?,
            device: device.clone(),
        })
    }

    /// P(end of turn) for each item of a batch of log-mel windows `(batch, 80, 800)`.
    pub fn forward(&self, features: &Tensor) -> Result<Vec<f32>, TurnModelError> {
        let fq = &self.quant;
        let x = fq.input.apply(features)?;
        let x = fq.gelu1.apply(&fq.conv1.apply(&self.conv1.forward(&x)?)?.gelu_erf()?)?;
        let x = fq.conv2.apply(&self.conv2.forward(&x)?)?.gelu_erf()?.transpose(1, 2)?; // (b, 400, 384)
        let mut x = x.broadcast_add(&self.positions)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        let x = fq.final_norm.apply(&self.final_norm.forward(&x)?)?;
        let scores = self.pool2.forward(&fq.tanh.apply(&self.pool1.forward(&x)?.tanh()?)?)?; // (b, 400, 1)
        let weights = candle_nn::ops::softmax(&scores, 1)?;
        let pooled = fq.pooled.apply(&x.broadcast_mul(&weights)?.sum(1)?)?; // (b, 384)
        let h = self.cls_norm.forward(&fq.cls1.apply(&self.cls1.forward(&pooled)?)?)?;
        let h = fq.gelu_cls1.apply(&h.gelu_erf()?)?;
        let h = fq.gelu_cls2.apply(&fq.cls2.apply(&self.cls2.forward(&h)?)?.gelu_erf()?)?;
        let logit = fq.cls3.apply(&self.cls3.forward(&h)?)?.squeeze(D::Minus1)?;
        Ok(candle_nn::ops::sigmoid(&logit)?.to_vec1()?)
    }

    /// P(end of turn) for the audio of a turn so far (16 kHz): its last 8 s,
    /// zero-padded at the start when shorter, normalised and turned into
    /// log-mel as the model was trained.
    pub fn predict(&self, audio: &[f32], mel: &mut LogMelCpu) -> Result<f32, TurnModelError> {
        let features = window_features(audio, mel);
        let x = Tensor::from_vec(features, (1, N_MELS, FRAMES), &self.device)?;
        Ok(self.forward(&x)?[0])
    }
}

/// The model's input for a turn: the last 8 s of `audio`, zero-padded at
/// the start, non-finite samples replaced by silence, waveform normalised
/// to zero mean and unit variance, then log-mel `(80, 800)` row-major.
pub fn window_features(audio: &[f32], mel: &mut LogMelCpu) -> Vec<f32> {
    let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
    let mut window = vec![0.0f32; WINDOW_SAMPLES - tail.len()];
    window.extend(tail.iter().map(|&s| if s.is_finite() { s } else { 0.0 }));
    mel.compute(&window, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_fake_quant_equals_the_composed_ops() {
        let q = FakeQuant::new(0.05, 128);
        // Ties (x / scale = k + 0.5), saturation at both ends, and a strided view.
        let values: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.0125).collect();
        let x = Tensor::from_vec(values, (60, 100), &Device::Cpu).unwrap();
        for x in [x.clone(), x.t().unwrap()] {
            let fast = q.apply(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let reference = q.apply_composed(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
                assert!((a - b).abs() <= 1e-6, "index {i}: one pass {a}, composed {b}");
            }
        }
        let y = q.apply(&Tensor::new(&[0.075f32, 0.125, -100.0, 100.0], &Device::Cpu).unwrap()).unwrap();
        // 1.5 → 2 and 2.5 → 2 (ties to even); saturation at 0 and 255.
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0.1, 0.1, -6.4, 6.35]);
    }
}
