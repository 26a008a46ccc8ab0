//! Whisper's encoder–decoder transformer in candle, on the tensors of a
//! CTranslate2 checkpoint (see [`super::weights`]): fused self-attention
//! Q/K/V, fused cross-attention K/V, stored sinusoidal positions, the output
//! projection tied to the token embedding.
//!
//! It follows candle-transformers' `models/whisper/model.rs` block for block
//! (pre-norm residual attention blocks, GELU MLPs, two convolutions in front
//! of the encoder), with what the engine needs on top: the weights are read
//! only (`&self`) and each decode's keys and values live in a
//! [`DecoderState`] the caller owns; the decoder caches its self-attention
//! keys and values, so a step runs one token, not the whole sequence again;
//! the decoder's per-token matrices may be kept in 8-bit blocks (`Dense`);
//! and the encoder takes any even number of mel frames up to 30 s.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm, Linear, VarBuilder};

/// Sizes of one model, read off its tensors (names as in OpenAI's `ModelDimensions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    pub n_mels: usize,
    /// Encoder positions: 1500 for 30 s.
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_vocab: usize,
    /// Decoder positions: 448.
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
}

fn linear(vb: VarBuilder, out: usize, inp: usize) -> Result<Linear> {
    Ok(Linear::new(vb.get((out, inp), "weight")?, Some(vb.get(out, "bias")?)))
}

/// A linear layer kept in f32, or with its matrix in 8-bit blocks (GGML's
/// Q8_0: 32 weights and one scale). A decoder step multiplies one token by
/// every matrix, so it is bound by the bytes it reads: a quarter as many.
enum Dense {
    F32(Linear),
    Q8 { weight: QMatMul, bias: Option<Tensor> },
}

impl Dense {
    fn new(weight: Tensor, bias: Option<Tensor>, q8: bool) -> Result<Self> {
        let blocks = GgmlDType::Q8_0.block_size();
        if q8 && weight.dim(D::Minus1)?.is_multiple_of(blocks) {
            let weight = QMatMul::from_qtensor(QTensor::quantize(&weight, GgmlDType::Q8_0)?)?;
            Ok(Self::Q8 { weight, bias })
        } else {
            Ok(Self::F32(Linear::new(weight, bias)))
        }
    }

    fn load(vb: VarBuilder, out: usize, inp: usize, q8: bool) -> Result<Self> {
        Self::new(vb.get((out, inp), "weight")?, Some(vb.get(out, "bias")?), q8)
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::F32(linear) => linear.forward(x),
            Self::Q8 { weight, bias } => {
                let y = weight.forward(x)?;
                match bias {
                    Some(bias) => y.broadcast_add(bias),
                    None => Ok(y),
                }
            }
        }
    }
}

fn layer_norm(vb: VarBuilder, n: usize) -> Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(n, "gamma")?, vb.get(n, "beta")?, 1e-5))
}

/// (1, t, d) → (1, heads, t, d / heads), contiguous.
fn split_heads(x: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, n_head, d / n_head))?.transpose(1, 2)?.contiguous()
}

/// Scaled dot-product attention over heads; returns (1, tq, d).
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, tq, hd) = q.dims4()?;
    let mut w = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
    if let Some(mask) = mask {
        w = w.broadcast_add(mask)?;
    }
    let w = candle_nn::ops::softmax_last_dim(&w)?;
    w.matmul(v)?.transpose(1, 2)?.reshape((b, tq, h * hd))
}

struct Mlp {
    fc1: Dense,
    fc2: Dense,
}

impl Mlp {
    fn new(vb: VarBuilder, n: usize, q8: bool) -> Result<Self> {
        Ok(Self {
            fc1: Dense::load(vb.pp("linear_0"), 4 * n, n, q8)?,
            fc2: Dense::load(vb.pp("linear_1"), n, 4 * n, q8)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Whisper's nn.GELU is the exact (erf) one.
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }
}

/// Self-attention with one fused Q/K/V projection (CT2 `linear_0`).
struct SelfAttention {
    qkv: Dense,
    out: Dense,
    n_head: usize,
    n_state: usize,
}

impl SelfAttention {
    fn new(vb: VarBuilder, n: usize, n_head: usize, q8: bool) -> Result<Self> {
        Ok(Self {
            qkv: Dense::load(vb.pp("linear_0"), 3 * n, n, q8)?,
            out: Dense::load(vb.pp("linear_1"), n, n, q8)?,
            n_head,
            n_state: n,
        })
    }

    fn project(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let qkv = self.qkv.forward(x)?;
        let part = |i: usize| split_heads(&qkv.narrow(D::Minus1, i * self.n_state, self.n_state)?, self.n_head);
        Ok((part(0)?, part(1)?, part(2)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (q, k, v) = self.project(x)?;
        self.out.forward(&attend(&q, &k, &v, None)?)
    }

    /// Attends over the cached positions and `x`'s, appending `x`'s keys and values to `cache`.
    fn forward_cached(&self, x: &Tensor, cache: &mut SelfCache, pos: usize, mask: Option<&Tensor>) -> Result<Tensor> {
        let (q, k, v) = self.project(x)?;
        let t = q.dim(2)?;
        cache.k.slice_set(&k, 2, pos)?;
        cache.v.slice_set(&v, 2, pos)?;
        let k = cache.k.narrow(2, 0, pos + t)?;
        let v = cache.v.narrow(2, 0, pos + t)?;
        self.out.forward(&attend(&q, &k, &v, mask)?)
    }
}

/// Cross-attention: query from the text, fused K/V (CT2 `linear_1`) from the audio.
struct CrossAttention {
    q: Dense,
    /// Runs once per window over every audio position: kept in f32.
    kv: Linear,
    out: Dense,
    n_head: usize,
    n_state: usize,
}

impl CrossAttention {
    fn new(vb: VarBuilder, n: usize, n_head: usize, q8: bool) -> Result<Self> {
        Ok(Self {
            q: Dense::load(vb.pp("linear_0"), n, n, q8)?,
            kv: linear(vb.pp("linear_1"), 2 * n, n)?,
            out: Dense::load(vb.pp("linear_2"), n, n, q8)?,
            n_head,
            n_state: n,
        })
    }

    fn keys_values(&self, audio: &Tensor) -> Result<(Tensor, Tensor)> {
        let kv = self.kv.forward(audio)?;
        let k = split_heads(&kv.narrow(D::Minus1, 0, self.n_state)?, self.n_head)?;
        let v = split_heads(&kv.narrow(D::Minus1, self.n_state, self.n_state)?, self.n_head)?;
        Ok((k, v))
    }

    fn forward(&self, x: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let q = split_heads(&self.q.forward(x)?, self.n_head)?;
        self.out.forward(&attend(&q, k, v, None)?)
    }
}

struct EncoderBlock {
    attn_ln: LayerNorm,
    attn: SelfAttention,
    mlp_ln: LayerNorm,
    mlp: Mlp,
}

impl EncoderBlock {
    fn new(vb: VarBuilder, n: usize, n_head: usize) -> Result<Self> {
        Ok(Self {
            attn_ln: layer_norm(vb.pp("self_attention.layer_norm"), n)?,
            attn: SelfAttention::new(vb.pp("self_attention"), n, n_head, false)?,
            mlp_ln: layer_norm(vb.pp("ffn.layer_norm"), n)?,
            mlp: Mlp::new(vb.pp("ffn"), n, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.attn_ln.forward(x)?)?)?;
        &x + self.mlp.forward(&self.mlp_ln.forward(&x)?)?
    }
}

struct DecoderBlock {
    attn_ln: LayerNorm,
    attn: SelfAttention,
    cross_ln: LayerNorm,
    cross: CrossAttention,
    mlp_ln: LayerNorm,
    mlp: Mlp,
}

impl DecoderBlock {
    fn new(vb: VarBuilder, n: usize, n_head: usize, q8: bool) -> Result<Self> {
        Ok(Self {
            attn_ln: layer_norm(vb.pp("self_attention.layer_norm"), n)?,
            attn: SelfAttention::new(vb.pp("self_attention"), n, n_head, q8)?,
            cross_ln: layer_norm(vb.pp("attention.layer_norm"), n)?,
            cross: CrossAttention::new(vb.pp("attention"), n, n_head, q8)?,
            mlp_ln: layer_norm(vb.pp("ffn.layer_norm"), n)?,
            mlp: Mlp::new(vb.pp("ffn"), n, q8)?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut LayerCache, pos: usize, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.forward_cached(&self.attn_ln.forward(x)?, &mut cache.this, pos, mask)?)?;
        let x = (&x + self.cross.forward(&self.cross_ln.forward(&x)?, &cache.cross_k, &cache.cross_v)?)?;
        &x + self.mlp.forward(&self.mlp_ln.forward(&x)?)?
    }
}

/// The audio encoder: two convolutions (the second halves the frame rate),
/// positions, transformer blocks.
pub struct Encoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    blocks: Vec<EncoderBlock>,
    ln_post: LayerNorm,
}

impl Encoder {
    fn new(vb: VarBuilder, dims: &Dims) -> Result<Self> {
        let n = dims.n_audio_state;
        let conv = |name: &str, inp: usize, stride: usize| -> Result<Conv1d> {
            let vb = vb.pp(name);
            let config = Conv1dConfig { padding: 1, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None };
            Ok(Conv1d::new(vb.get((n, inp, 3), "weight")?, Some(vb.get(n, "bias")?), config))
        };
        Ok(Self {
            conv1: conv("conv1", dims.n_mels, 1)?,
            conv2: conv("conv2", n, 2)?,
            positions: vb.get((dims.n_audio_ctx, n), "position_encodings.encodings")?,
            blocks: (0..dims.n_audio_layer)
                .map(|i| EncoderBlock::new(vb.pp(format!("layer_{i}")), n, dims.n_audio_head))
                .collect::<Result<_>>()?,
            ln_post: layer_norm(vb.pp("layer_norm"), n)?,
        })
    }

    /// (1, n_mels, frames) log-mel → (1, frames / 2, n_audio_state). `frames`
    /// must be even and at most twice the encoder's positions (3000).
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(mel)?.gelu_erf()?;
        let x = self.conv2.forward(&x)?.gelu_erf()?.transpose(1, 2)?;
        let (_, positions, _) = x.dims3()?;
        if positions > self.positions.dim(0)? {
            candle_core::bail!("{positions} encoder positions, the model has {}", self.positions.dim(0)?);
        }
        let mut x = x.broadcast_add(&self.positions.narrow(0, 0, positions)?)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.ln_post.forward(&x)
    }
}

/// One layer's self-attention keys and values, preallocated for the whole text context.
struct SelfCache {
    k: Tensor,
    v: Tensor,
}

struct LayerCache {
    this: SelfCache,
    cross_k: Tensor,
    cross_v: Tensor,
}

/// One decode's state: the cross-attention keys and values of its audio and
/// the self-attention cache of the tokens fed so far.
pub struct DecoderState {
    layers: Vec<LayerCache>,
    len: usize,
}

impl DecoderState {
    /// Tokens fed so far.
    pub fn fed(&self) -> usize {
        self.len
    }

    /// Forgets every token after the first `len` (a rejected draft).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// The text decoder.
pub struct Decoder {
    embedding: Tensor,
    positions: Tensor,
    blocks: Vec<DecoderBlock>,
    ln: LayerNorm,
    projection: Dense,
    n_head: usize,
}

impl Decoder {
    fn new(vb: VarBuilder, dims: &Dims, projection: &str, q8: bool) -> Result<Self> {
        let n = dims.n_text_state;
        Ok(Self {
            embedding: vb.get((dims.n_vocab, n), "embeddings.weight")?,
            positions: vb.get((dims.n_text_ctx, n), "position_encodings.encodings")?,
            blocks: (0..dims.n_text_layer)
                .map(|i| DecoderBlock::new(vb.pp(format!("layer_{i}")), n, dims.n_text_head, q8))
                .collect::<Result<_>>()?,
            ln: layer_norm(vb.pp("layer_norm"), n)?,
            projection: Dense::new(vb.get((dims.n_vocab, n), projection)?, None, q8)?,
            n_head: dims.n_text_head,
        })
    }

    /// A fresh state for decoding against `audio` (the encoder's output).
    pub fn state(&self, audio: &Tensor) -> Result<DecoderState> {
        let (ctx, n) = self.positions.dims2()?;
        let hd = n / self.n_head;
        let layers = self
            .blocks
            .iter()
            .map(|block| {
                let (cross_k, cross_v) = block.cross.keys_values(audio)?;
                let zeros = || Tensor::zeros((1, self.n_head, ctx, hd), DType::F32, audio.device());
                Ok(LayerCache { this: SelfCache { k: zeros()?, v: zeros()? }, cross_k, cross_v })
            })
            .collect::<Result<_>>()?;
        Ok(DecoderState { layers, len: 0 })
    }

    /// Feeds `tokens` after the state's tokens; returns their final hidden
    /// states, (tokens, n_text_state).
    pub fn forward(&self, tokens: &[u32], state: &mut DecoderState) -> Result<Tensor> {
        let (pos, t) = (state.len, tokens.len());
        let ctx = self.positions.dim(0)?;
        if t == 0 || pos + t > ctx {
            candle_core::bail!("{t} tokens after {pos} do not fit the decoder's {ctx} positions");
        }
        let device = self.embedding.device();
        let ids = Tensor::new(tokens, device)?;
        let x = self.embedding.index_select(&ids, 0)?.add(&self.positions.narrow(0, pos, t)?)?;
        let mut x = x.unsqueeze(0)?;
        let mask = if t > 1 { Some(causal_mask(pos, t, device)?) } else { None };
        for (block, cache) in self.blocks.iter().zip(&mut state.layers) {
            x = block.forward(&x, cache, pos, mask.as_ref())?;
        }
        state.len = pos + t;
        self.ln.forward(&x)?.squeeze(0)
    }

    /// Positions the decoder has (448).
    pub fn context(&self) -> usize {
        self.positions.dims().first().copied().unwrap_or(0)
    }

    /// Logits over the vocabulary of some hidden states: (rows, n_vocab).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.projection.forward(hidden)
    }
}

/// (t, pos + t): token i of the new ones sees the `pos` cached ones and new ones up to itself.
fn causal_mask(pos: usize, t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..t).flat_map(|i| (0..pos + t).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (t, pos + t), device)
}

/// The whole model: weights only, shared by every decode.
pub struct Model {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub dims: Dims,
}

impl Model {
    /// Builds the model from a VarBuilder over the CT2 names with `/` written
    /// as `.`; `projection` names the output projection (the embedding when
    /// tied). With `q8`, the decoder's per-token matrices are kept in 8-bit
    /// blocks; the rest is f32.
    pub fn new(dims: Dims, vb: VarBuilder, projection: &str, q8: bool) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), &dims)?,
            decoder: Decoder::new(vb.pp("decoder"), &dims, projection, q8)?,
            dims,
        })
    }
}
