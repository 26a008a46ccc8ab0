//! The text encoder: phoneme embeddings through six transformer layers
//! with windowed relative-position attention, then the prior's mean and
//! log-deviation.

use super::*;

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
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
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

pub(super) struct TextEncoder {
    embedding: Tensor,
    layers: Vec<EncoderLayer>,
    proj: Conv1d,
}

/// What the text encoder gives for one phoneme sequence, each `(1, C, T)`.
pub(super) struct Encoded {
    pub(super) hidden: Tensor,
    pub(super) mean: Tensor,
    pub(super) log_std: Tensor,
}

impl TextEncoder {
    pub(super) fn load(w: &mut Weights) -> Result<Self, VitsError> {
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

    pub(super) fn forward(&self, ids: &Tensor) -> candle_core::Result<Encoded> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
