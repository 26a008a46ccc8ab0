//! The resident LLM's own CPU forward pass (llama and qwen2 GGUF files).
//!
//! Weights are read once into [`QMatrix`] blocks: Q4_1 and Q8_0 tensors as
//! the file has them, every other format dequantized and requantized to
//! Q8_0 at load. Q, K and V are stacked into one matrix, and gate and up
//! into another, so a layer is four quantized products ([`QMatrix::matmul`]:
//! activations quantized to 8 bits once per product, integer block dot
//! products, rows split across threads).
//!
//! The model is read-only and shared; a conversation's state is its
//! [`Cache`] (keys and values per layer, f32). A cache can be frozen into a
//! shared prefix: every cache forked from it reads the prefix in place and
//! appends to its own part, so a persona's prompt is prefilled once for all
//! its conversations. A cache can be cut back to any length, so a prompt
//! that changes after some point is prefilled only from there.
//!
//! [`Transformer::forward`] runs any number of sequences at once — one long
//! one (a prompt) or one token each of many (batched decode) — through the
//! same products, and returns each sequence's next-token logits.

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;
use tete_kernels::quant::{BLOCK, QActs, QMatrix};
use tete_kernels::vecmath::{axpy, dot, softmax, swiglu, tile_dot};

use super::LlmError;
use super::gguf;
use super::model::Arch;

/// Positions per key tile.
const TILE: usize = tete_kernels::vecmath::TILE;

/// Multiply-adds of attention below which it runs on one thread.
const PARALLEL_ATTENTION: usize = 1 << 14;

/// The model's shape, from the GGUF metadata (`{arch}.*`).
#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    /// `block_count`
    pub layers: usize,
    /// `embedding_length`
    pub dim: usize,
    /// `feed_forward_length`
    pub ff: usize,
    /// `attention.head_count`
    pub heads: usize,
    /// `attention.head_count_kv`
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `attention.layer_norm_rms_epsilon`
    pub eps: f32,
    /// `rope.freq_base`
    pub rope_base: f32,
    pub vocab: usize,
}

impl Config {
    fn from_gguf(content: &Content, arch: Arch) -> Result<Self, LlmError> {
        let prefix = match arch {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        };
        let num = |key: &str| -> Result<usize, LlmError> {
            let v = gguf::meta(content, &format!("{prefix}.{key}"))?;
            v.to_u32().map(|v| v as usize).map_err(|e| LlmError::Metadata(format!("{prefix}.{key}: {e}")))
        };
        let float = |key: &str, default: f32| -> Result<f32, LlmError> {
            match content.metadata.get(&format!("{prefix}.{key}")) {
                None => Ok(default),
                Some(v) => v.to_f32().map_err(|e| LlmError::Metadata(format!("{prefix}.{key}: {e}"))),
            }
        };
        let (dim, heads, kv_heads) =
            (num("embedding_length")?, num("attention.head_count")?, num("attention.head_count_kv")?);
        if heads == 0 || kv_heads == 0 || dim % heads != 0 || heads % kv_heads != 0 {
            return Err(LlmError::Metadata(format!(
                "{heads} heads, {kv_heads} key/value heads and width {dim} do not fit"
            )));
        }
        let head_dim = dim / heads;
        if let Ok(rot) = num("rope.dimension_count")
            && rot != head_dim
        {
            return Err(LlmError::Unsupported(format!("rotary dimension {rot} differs from the head size {head_dim}")));
        }
        if head_dim % 2 != 0 || dim % BLOCK != 0 {
            return Err(LlmError::Unsupported(format!("head size {head_dim} / width {dim}")));
        }
        Ok(Self {
            arch,
            layers: num("block_count")?,
            dim,
            ff: num("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_base: float("rope.freq_base", 10_000.0)?,
            vocab: 0,
        })
    }

    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V stacked: `dim + 2·kv_dim` rows.
    qkv: QMatrix,
    /// Q, K and V biases stacked (qwen2).
    qkv_bias: Option<Vec<f32>>,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    /// Gate and up stacked: `2·ff` rows.
    gate_up: QMatrix,
    down: QMatrix,
}

/// The weights, read-only, shared by every session.
pub struct Transformer {
    cfg: Config,
    embed: QMatrix,
    /// `None`: the output projection is the embedding (tied).
    output: Option<QMatrix>,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    /// `rope_base^(−2i/head_dim)` for each rotated pair.
    inv_freq: Vec<f32>,
}

impl Transformer {
    /// Reads the weights named in `content` from `reader`.
    pub fn from_gguf<R: Read + Seek>(content: &Content, reader: &mut R, arch: Arch) -> Result<Self, LlmError> {
        let mut cfg = Config::from_gguf(content, arch)?;
        let mut tensor = |name: &str| -> Result<QTensor, LlmError> {
            content.tensor(reader, name, &Device::Cpu).map_err(|e| LlmError::Gguf(format!("{name}: {e}")))
        };
        let embed = matrix(&tensor("token_embd.weight")?, "token_embd.weight")?;
        cfg.vocab = embed.rows();
        if embed.cols() != cfg.dim {
            return Err(LlmError::Gguf(format!(
                "token_embd.weight has {} columns, width is {}",
                embed.cols(),
                cfg.dim
            )));
        }
        let output = match content.tensor_infos.contains_key("output.weight") {
            true => {
                let output = matrix(&tensor("output.weight")?, "output.weight")?;
                if (output.rows(), output.cols()) != (embed.rows(), embed.cols()) {
                    return Err(LlmError::Gguf(format!(
                        "output.weight is {}x{}, token_embd.weight {}x{}",
                        output.rows(),
                        output.cols(),
                        embed.rows(),
                        embed.cols()
                    )));
                }
                Some(output)
            }
            false => None,
        };
        let norm = vector(&tensor("output_norm.weight")?, cfg.dim, "output_norm.weight")?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let mut get = |part: &str| {
                let name = format!("blk.{l}.{part}");
                tensor(&name).map(|t| (t, name))
            };
            let mut mat = |part: &str, rows: usize, cols: usize| -> Result<QMatrix, LlmError> {
                let (t, name) = get(part)?;
                let m = matrix(&t, &name)?;
                if (m.rows(), m.cols()) != (rows, cols) {
                    return Err(LlmError::Gguf(format!("{name} is {}x{}, expected {rows}x{cols}", m.rows(), m.cols())));
                }
                Ok(m)
            };
            let (dim, kv, ff) = (cfg.dim, cfg.kv_dim(), cfg.ff);
            let qkv = [mat("attn_q.weight", dim, dim)?, mat("attn_k.weight", kv, dim)?, mat("attn_v.weight", kv, dim)?];
            let gate_up = [mat("ffn_gate.weight", ff, dim)?, mat("ffn_up.weight", ff, dim)?];
            let wo = mat("attn_output.weight", dim, dim)?;
            let down = mat("ffn_down.weight", dim, ff)?;
            let mut vec = |part: &str, len: usize| get(part).and_then(|(t, name)| vector(&t, len, &name));
            let qkv_bias = match arch {
                Arch::Llama => None,
                Arch::Qwen2 => {
                    let mut b = vec("attn_q.bias", dim)?;
                    b.extend(vec("attn_k.bias", kv)?);
                    b.extend(vec("attn_v.bias", kv)?);
                    Some(b)
                }
            };
            layers.push(Layer {
                attn_norm: vec("attn_norm.weight", dim)?,
                ffn_norm: vec("ffn_norm.weight", dim)?,
                qkv: QMatrix::concat_rows(&qkv).map_err(kernel)?,
                qkv_bias,
                wo,
                gate_up: QMatrix::concat_rows(&gate_up).map_err(kernel)?,
                down,
            });
        }
        let half = cfg.head_dim / 2;
        let inv_freq = (0..half).map(|i| cfg.rope_base.powf(-((2 * i) as f32) / cfg.head_dim as f32)).collect();
        Ok(Self { cfg, embed, output, norm, layers, inv_freq })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Bytes of weights held.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize =
            self.layers.iter().map(|l| l.qkv.bytes() + l.wo.bytes() + l.gate_up.bytes() + l.down.bytes()).sum();
        layers + self.embed.bytes() + self.output.as_ref().map_or(0, QMatrix::bytes)
    }

    /// An empty cache for this model.
    pub fn cache(&self) -> Cache {
        Cache { shared: None, own: KvCache::new(self.cfg.layers, self.cfg.kv_dim()) }
    }

    /// Feeds each sequence's tokens after what its cache holds and returns
    /// each sequence's next-token logits (`vocab` floats each). Token ids
    /// must be below the vocabulary size; empty sequences get no logits.
    pub fn forward(&self, seqs: &mut [Sequence<'_>]) -> Vec<Vec<f32>> {
        // On a pool thread, each of the ~150 parallel products of a step
        // costs ~3 µs to hand out instead of ~15 µs from outside the pool
        // (measured: `cargo bench -p tete-bench --bench quant`).
        rayon::scope(|_| self.forward_in_pool(seqs))
    }

    fn forward_in_pool(&self, seqs: &mut [Sequence<'_>]) -> Vec<Vec<f32>> {
        let cfg = &self.cfg;
        let (dim, kv_dim, ff) = (cfg.dim, cfg.kv_dim(), cfg.ff);
        let qkv_rows = dim + 2 * kv_dim;
        // Where each token goes: its sequence and position.
        let places: Vec<(usize, usize)> = seqs
            .iter()
            .enumerate()
            .flat_map(|(s, seq)| (0..seq.tokens.len()).map(move |i| (s, seq.cache.len() + i)))
            .collect();
        let n = places.len();
        if n == 0 {
            return Vec::new();
        }
        let mut x = vec![0.0f32; n * dim];
        for (row, &token) in x.chunks_exact_mut(dim).zip(seqs.iter().flat_map(|s| s.tokens)) {
            self.embed.dequantize_row(token as usize, row);
        }
        let (mut h, mut attn) = (vec![0.0f32; n * dim], vec![0.0f32; n * dim]);
        let mut qkv = vec![0.0f32; n * qkv_rows];
        let mut gate_up = vec![0.0f32; n * 2 * ff];
        let mut act = vec![0.0f32; n * ff];
        let mut acts = QActs::new();
        let rope: Vec<(f32, f32)> =
            places.iter().flat_map(|&(_, p)| self.inv_freq.iter().map(move |f| (p as f32 * f).sin_cos())).collect();
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, cfg.eps, &mut h);
            acts.quantize(&h, n, dim);
            layer.qkv.matmul(&acts, &mut qkv);
            for (t, row) in qkv.chunks_exact_mut(qkv_rows).enumerate() {
                if let Some(bias) = &layer.qkv_bias {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
                let angles = &rope[t * self.inv_freq.len()..(t + 1) * self.inv_freq.len()];
                for head in row[..dim + kv_dim].chunks_exact_mut(cfg.head_dim) {
                    rotate(head, angles, cfg.arch);
                }
            }
            // New keys and values into their caches, then attention over them.
            let mut t = 0;
            for seq in seqs.iter_mut() {
                for _ in 0..seq.tokens.len() {
                    let row = &qkv[t * qkv_rows..(t + 1) * qkv_rows];
                    seq.cache.own.push(l, &row[dim..dim + kv_dim], &row[dim + kv_dim..]);
                    t += 1;
                }
            }
            let caches: Vec<&Cache> = seqs.iter().map(|s| &*s.cache).collect();
            self.attention(l, &caches, &places, &qkv, &mut attn);
            acts.quantize(&attn, n, dim);
            layer.wo.matmul(&acts, &mut h);
            x.iter_mut().zip(&h).for_each(|(x, o)| *x += o);

            rms_norm(&x, &layer.ffn_norm, cfg.eps, &mut h);
            acts.quantize(&h, n, dim);
            layer.gate_up.matmul(&acts, &mut gate_up);
            for (a, gu) in act.chunks_exact_mut(ff).zip(gate_up.chunks_exact(2 * ff)) {
                let (g, u) = gu.split_at(ff);
                swiglu(g, u, a);
            }
            acts.quantize(&act, n, ff);
            layer.down.matmul(&acts, &mut h);
            x.iter_mut().zip(&h).for_each(|(x, o)| *x += o);
        }
        for seq in seqs.iter_mut() {
            seq.cache.own.len += seq.tokens.len();
        }

        // Logits for each sequence's last token only.
        let lasts: Vec<usize> = seqs
            .iter()
            .scan(0, |end, s| {
                *end += s.tokens.len();
                Some((*end, s.tokens.len()))
            })
            .filter(|&(_, len)| len > 0)
            .map(|(end, _)| end - 1)
            .collect();
        let mut last = vec![0.0f32; lasts.len() * dim];
        for (row, &t) in last.chunks_exact_mut(dim).zip(&lasts) {
            row.copy_from_slice(&x[t * dim..(t + 1) * dim]);
        }
        let mut normed = vec![0.0f32; last.len()];
        rms_norm(&last, &self.norm, cfg.eps, &mut normed);
        acts.quantize(&normed, lasts.len(), dim);
        let output = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0.0f32; lasts.len() * cfg.vocab];
        output.matmul(&acts, &mut logits);
        let mut out: Vec<Vec<f32>> = logits.chunks_exact(cfg.vocab).map(<[f32]>::to_vec).collect();
        // Empty sequences get empty logits, in their place.
        let mut it = out.drain(..);
        seqs.iter().map(|s| if s.tokens.is_empty() { Vec::new() } else { it.next().unwrap_or_default() }).collect()
    }

    /// Causal grouped-query attention of every new token over its cache,
    /// one task per (token, key/value head) covering the query heads that
    /// share it, or per (token, query head) when there are too few tokens
    /// for the key/value heads to keep every thread busy (a decode step has
    /// three tasks for two threads otherwise).
    fn attention(&self, layer: usize, caches: &[&Cache], places: &[(usize, usize)], qkv: &[f32], out: &mut [f32]) {
        let cfg = &self.cfg;
        let (hd, kv_heads, kv_dim) = (cfg.head_dim, cfg.kv_heads, cfg.kv_dim());
        let qkv_rows = cfg.dim + 2 * kv_dim;
        let group = cfg.heads / kv_heads;
        let per = if places.len() * kv_heads >= 4 * rayon::current_num_threads() { group } else { 1 };
        let tasks = cfg.heads / per;
        let scale = 1.0 / (hd as f32).sqrt();
        let one = |scores: &mut Vec<f32>, (i, out): (usize, &mut [f32])| {
            let (t, head) = (i / tasks, (i % tasks) * per);
            let (seq, pos) = places[t];
            let n = pos + 1;
            let queries = &qkv[t * qkv_rows + head * hd..][..per * hd];
            let g = head / group;
            let kv = g * hd..(g + 1) * hd;
            scores.clear();
            scores.resize(per * n, 0.0);
            let mut first = 0;
            for part in caches[seq].segments(layer, n) {
                for (i, tile) in part.keys.chunks_exact(TILE * kv_dim).enumerate() {
                    let rows = &tile[kv.start * TILE..kv.end * TILE];
                    let take = (part.n - i * TILE).min(TILE);
                    for (r, q) in queries.chunks_exact(hd).enumerate() {
                        let s = tile_dot(q, rows);
                        let at = r * n + first + i * TILE;
                        scores[at..at + take].iter_mut().zip(s).for_each(|(o, s)| *o = s * scale);
                    }
                }
                first += part.n;
            }
            scores.chunks_exact_mut(n).for_each(softmax);
            out.fill(0.0);
            let mut p = 0;
            for part in caches[seq].segments(layer, n) {
                for v in part.values.chunks_exact(kv_dim) {
                    for (r, out) in out.chunks_exact_mut(hd).enumerate() {
                        axpy(scores[r * n + p], &v[kv.clone()], out);
                    }
                    p += 1;
                }
            }
        };
        // Spread over threads only when there is enough to spread.
        let work: usize = places.iter().map(|&(_, p)| p + 1).sum::<usize>() * cfg.heads * hd;
        if work < PARALLEL_ATTENTION {
            let mut scores = Vec::new();
            out.chunks_mut(per * hd).enumerate().for_each(|item| one(&mut scores, item));
        } else {
            out.par_chunks_mut(per * hd).enumerate().for_each_init(Vec::new, one);
        }
    }
}

/// One sequence of a [`Transformer::forward`] call: new tokens after its cache.
pub struct Sequence<'a> {
    pub cache: &'a mut Cache,
    pub tokens: &'a [u32],
}

/// Keys and values of some positions, per layer. Values are `kv_dim`
/// floats a position; keys are kept in tiles of [`TILE`] positions, each
/// tile `kv_dim` rows of `TILE` floats, so a query meets eight keys with
/// eight-wide multiply-adds and no sums across lanes.
#[derive(Debug, Clone)]
struct KvCache {
    kv_dim: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Positions complete in every layer.
    len: usize,
}

impl KvCache {
    fn new(layers: usize, kv_dim: usize) -> Self {
        Self { kv_dim, keys: vec![Vec::new(); layers], values: vec![Vec::new(); layers], len: 0 }
    }

    fn empty_like(&self) -> Self {
        Self::new(self.keys.len(), self.kv_dim)
    }

    /// Positions held in `layer` (ahead of `len` while a forward runs).
    fn positions(&self, layer: usize) -> usize {
        self.values[layer].len() / self.kv_dim
    }

    fn push(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let (p, kv_dim) = (self.positions(layer), self.kv_dim);
        let keys = &mut self.keys[layer];
        if p % TILE == 0 {
            keys.resize(keys.len() + TILE * kv_dim, 0.0);
        }
        let tile = &mut keys[(p / TILE) * TILE * kv_dim..][..TILE * kv_dim];
        for (f, &x) in k.iter().enumerate() {
            tile[f * TILE + p % TILE] = x;
        }
        self.values[layer].extend_from_slice(v);
    }

    /// Positions `0..n` of `layer`.
    fn part(&self, layer: usize, n: usize) -> Part<'_> {
        Part {
            keys: &self.keys[layer][..n.div_ceil(TILE) * TILE * self.kv_dim],
            values: &self.values[layer][..n * self.kv_dim],
            n,
        }
    }

    /// The key of position `p` in `layer`.
    fn key(&self, layer: usize, p: usize) -> Vec<f32> {
        let tile = &self.keys[layer][(p / TILE) * TILE * self.kv_dim..][..TILE * self.kv_dim];
        (0..self.kv_dim).map(|f| tile[f * TILE + p % TILE]).collect()
    }

    fn truncate(&mut self, len: usize) {
        for (k, v) in self.keys.iter_mut().zip(&mut self.values) {
            // Slots past `len` in the last tile are overwritten by the next push.
            k.truncate(len.div_ceil(TILE) * TILE * self.kv_dim);
            v.truncate(len * self.kv_dim);
        }
        self.len = self.len.min(len);
    }
}

/// Positions `0..n` of one part of a cache in one layer.
struct Part<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    n: usize,
}

/// A conversation's keys and values: a shared prefix read in place, then its own.
#[derive(Debug, Clone)]
pub struct Cache {
    shared: Option<Arc<KvCache>>,
    own: KvCache,
}

impl Cache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.shared_len() + self.own.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shared_len(&self) -> usize {
        self.shared.as_ref().map_or(0, |s| s.len)
    }

    /// Keeps the first `len` positions (a shared prefix cut back is copied).
    pub fn truncate(&mut self, len: usize) {
        let shared = self.shared_len();
        if len >= shared {
            self.own.truncate(len - shared);
            return;
        }
        let mut kept = self.shared.as_deref().cloned().unwrap_or_else(|| self.own.empty_like());
        kept.truncate(len);
        self.shared = None;
        self.own = kept;
    }

    /// Makes everything held a shared prefix: clones of the result share it.
    pub fn freeze(&mut self) {
        if self.own.len == 0 {
            return;
        }
        let empty = self.own.empty_like();
        let own = std::mem::replace(&mut self.own, empty);
        let merged = match self.shared.take() {
            None => own,
            Some(shared) => {
                let mut merged = Arc::unwrap_or_clone(shared);
                for l in 0..merged.keys.len() {
                    for p in 0..own.len {
                        let v = &own.values[l][p * own.kv_dim..(p + 1) * own.kv_dim];
                        merged.push(l, &own.key(l, p), v);
                    }
                }
                merged.len += own.len;
                merged
            }
        };
        self.shared = Some(Arc::new(merged));
    }

    /// The parts of layer `layer` covering positions `0..upto`.
    fn segments(&self, layer: usize, upto: usize) -> impl Iterator<Item = Part<'_>> {
        let shared = self.shared.as_deref().map(|s| s.part(layer, upto.min(s.len)));
        // The own part also holds this forward's new positions, pushed
        // layer by layer before `len` counts them.
        let own = self.own.part(layer, upto.saturating_sub(self.shared_len()).min(self.own.positions(layer)));
        shared.into_iter().chain(std::iter::once(own))
    }
}

fn matrix(t: &QTensor, name: &str) -> Result<QMatrix, LlmError> {
    let (rows, cols) = t.shape().dims2().map_err(|e| LlmError::Gguf(format!("{name}: {e}")))?;
    let data = t.data().map_err(|e| LlmError::Gguf(format!("{name}: {e}")))?;
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]);
    let result = match t.dtype() {
        GgmlDType::Q4_1 => {
            let blocks = data.chunks_exact(4 + BLOCK / 2);
            let d = blocks.clone().map(|b| f16(&b[0..2])).collect();
            let m = blocks.clone().map(|b| f16(&b[2..4])).collect();
            let codes = blocks.flat_map(|b| b[4..].iter().copied()).collect();
            QMatrix::q4_1(rows, cols, d, m, codes)
        }
        GgmlDType::Q8_0 => {
            let blocks = data.chunks_exact(2 + BLOCK);
            let d = blocks.clone().map(|b| f16(&b[0..2])).collect();
            let codes = blocks.flat_map(|b| b[2..].iter().map(|&c| c as i8)).collect();
            QMatrix::q8_0(rows, cols, d, codes)
        }
        _ => {
            let values = t.dequantize(&Device::Cpu).and_then(|v| v.flatten_all()?.to_vec1::<f32>());
            let values = values.map_err(|e| LlmError::Gguf(format!("{name}: {e}")))?;
            QMatrix::quantize_q8_0(rows, cols, &values)
        }
    };
    result.map_err(|e| LlmError::Gguf(format!("{name}: {e}")))
}

fn vector(t: &QTensor, len: usize, name: &str) -> Result<Vec<f32>, LlmError> {
    let values = t.dequantize(&Device::Cpu).and_then(|v| v.flatten_all()?.to_vec1::<f32>());
    let values = values.map_err(|e| LlmError::Gguf(format!("{name}: {e}")))?;
    if values.len() != len {
        return Err(LlmError::Gguf(format!("{name} holds {} values, expected {len}", values.len())));
    }
    Ok(values)
}

fn kernel(e: tete_kernels::KernelError) -> LlmError {
    LlmError::Gguf(e.to_string())
}

/// `out = x / rms(x) · w` row by row.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (x, out) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        let ms = dot(x, x) / w.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        out.iter_mut().zip(x.iter().zip(w)).for_each(|(o, (&x, &w))| *o = x * inv * w);
    }
}

/// Rotary embedding of one head: llama GGUF files pair neighbours (their
/// Q/K rows were permuted for it at conversion), qwen2 pairs the halves.
fn rotate(head: &mut [f32], angles: &[(f32, f32)], arch: Arch) {
    let half = head.len() / 2;
    for (i, &(sin, cos)) in angles.iter().enumerate() {
        let (a, b) = match arch {
            Arch::Llama => (2 * i, 2 * i + 1),
            Arch::Qwen2 => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `n` positions whose key and value features encode (layer, position, feature).
    fn filled(cache: &mut Cache, from: usize, n: usize) {
        let kv_dim = cache.own.kv_dim;
        for l in 0..cache.own.keys.len() {
            for p in from..from + n {
                let k: Vec<f32> = (0..kv_dim).map(|f| (l * 100_000 + p * 100 + f) as f32).collect();
                let v: Vec<f32> = k.iter().map(|x| -x).collect();
                cache.own.push(l, &k, &v);
            }
        }
        cache.own.len += n;
    }

    /// Every position's key and value, read back through `segments`.
    fn read(cache: &Cache, layer: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        let kv_dim = cache.own.kv_dim;
        let mut out = Vec::new();
        for part in cache.segments(layer, cache.len()) {
            for p in 0..part.n {
                let tile = &part.keys[(p / TILE) * TILE * kv_dim..][..TILE * kv_dim];
                let k = (0..kv_dim).map(|f| tile[f * TILE + p % TILE]).collect();
                out.push((k, part.values[p * kv_dim..(p + 1) * kv_dim].to_vec()));
            }
        }
        out
    }

    fn expected(layer: usize, n: usize, kv_dim: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        (0..n)
            .map(|p| {
                let k: Vec<f32> = (0..kv_dim).map(|f| (layer * 100_000 + p * 100 + f) as f32).collect();
                let v = k.iter().map(|x| -x).collect();
                (k, v)
            })
            .collect()
    }

    #[test]
    fn shared_prefixes_merge_cut_and_grow() {
        let kv_dim = 6;
        let mut cache = Cache { shared: None, own: KvCache::new(2, kv_dim) };
        filled(&mut cache, 0, 11);
        cache.freeze();
        let mut fork = cache.clone();
        filled(&mut fork, 11, 10);
        // Freezing a fork merges its own positions after the shared ones (re-tiled: 11 is not a tile boundary).
        fork.freeze();
        assert_eq!(fork.len(), 21);
        for l in 0..2 {
            assert_eq!(read(&fork, l), expected(l, 21, kv_dim), "layer {l} after the merge");
            assert_eq!(read(&cache, l), expected(l, 11, kv_dim), "the first prefix is untouched");
        }
        // Cut inside the shared part, then grow again: the tail tile's stale slots are overwritten.
        fork.truncate(9);
        filled(&mut fork, 9, 7);
        assert_eq!(fork.len(), 16);
        assert_eq!(read(&fork, 1), expected(1, 16, kv_dim));
        // Cut in the own part.
        let mut other = cache.clone();
        filled(&mut other, 11, 3);
        other.truncate(12);
        filled(&mut other, 12, 1);
        assert_eq!(read(&other, 0), expected(0, 13, kv_dim));
    }
}
