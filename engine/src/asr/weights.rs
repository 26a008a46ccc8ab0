//! Whisper's CTranslate2 checkpoint as `tete models fetch` leaves it in
//! `model.safetensors`: the CT2 variable names ("encoder/layer_0/
//! self_attention/linear_0/weight"), fp16 weights, integer scalars (head
//! counts, activation) and the aliases as metadata
//! (`alias:decoder/projection/weight` → `decoder/embeddings/weight`).
//!
//! The weights go into a candle `VarBuilder` under the same names with `/`
//! written as `.`, widened to f32 as they are read; the model's sizes are
//! read off the tensors' shapes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use safetensors::{Dtype, SafeTensors};

use super::AsrError;
use super::model::{Dims, Model};

/// CT2's activation id for the exact GELU (1 is the tanh approximation).
const GELU: i64 = 3;

/// Reads `model.safetensors` and builds the model on `device` (with the
/// decoder's per-token matrices in 8-bit blocks when `q8`).
pub(crate) fn load(path: &Path, device: &Device, q8: bool) -> Result<Model, AsrError> {
    let fail = |detail: String| AsrError::Model(format!("{}: {detail}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it ({e}); run `tete models fetch`")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| fail(format!("not a safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    match metadata.get("ct2_spec").map(String::as_str) {
        Some("WhisperSpec") => {}
        other => return Err(fail(format!("not a CTranslate2 Whisper checkpoint (ct2_spec {other:?})"))),
    }
    let file = SafeTensors::deserialize(&bytes).map_err(|e| fail(format!("not a safetensors file: {e}")))?;

    let mut weights = HashMap::new();
    let mut scalars = HashMap::new();
    for (name, view) in file.iter() {
        let dtype = match view.dtype() {
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F32 => DType::F32,
            Dtype::I8 | Dtype::I16 | Dtype::I32 if view.shape().is_empty() => {
                scalars.insert(name.to_string(), scalar(view.dtype(), view.data()));
                continue;
            }
            other => return Err(fail(format!("tensor {name} has type {other:?}; expected float weights"))),
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)?;
        weights.insert(name.replace('/', "."), tensor);
    }

    let dims = dims(&weights, &scalars).map_err(fail)?;
    if let Some(&activation) = scalars.get("decoder/activation")
        && activation != GELU
    {
        return Err(fail(format!("decoder activation {activation}; only GELU ({GELU}) is supported")));
    }
    // The output projection: a tensor of its own, else the one its alias names.
    let projection = if weights.contains_key("decoder.projection.weight") {
        "projection.weight".to_string()
    } else {
        let target = metadata
            .get("alias:decoder/projection/weight")
            .ok_or_else(|| fail("no decoder/projection/weight and no alias for it".into()))?;
        let target = target.replace('/', ".");
        target
            .strip_prefix("decoder.")
            .ok_or_else(|| fail(format!("the output projection is an alias of {target}, outside the decoder")))?
            .to_string()
    };
    let vb = VarBuilder::from_tensors(weights, DType::F32, device);
    Model::new(dims, vb, &projection, q8).map_err(|e| fail(format!("{e}")))
}

/// A little-endian integer scalar (shape `[]`), as CT2 stores its options.
fn scalar(dtype: Dtype, data: &[u8]) -> i64 {
    match (dtype, data) {
        (Dtype::I8, [a, ..]) => i64::from(*a as i8),
        (Dtype::I16, [a, b, ..]) => i64::from(i16::from_le_bytes([*a, *b])),
        (Dtype::I32, [a, b, c, d, ..]) => i64::from(i32::from_le_bytes([*a, *b, *c, *d])),
        _ => i64::MIN,
    }
}

/// The model's sizes from the shapes of a few tensors and the head counts.
fn dims(weights: &HashMap<String, Tensor>, scalars: &HashMap<String, i64>) -> Result<Dims, String> {
    let shape = |name: &str| -> Result<&[usize], String> {
        weights.get(name).map(|t| t.dims()).ok_or_else(|| format!("missing tensor {}", name.replace('.', "/")))
    };
    let layers = |side: &str| {
        (0..).take_while(|i| weights.contains_key(&format!("{side}.layer_{i}.ffn.linear_0.weight"))).count()
    };
    let heads = |side: &str| -> Result<usize, String> {
        match scalars.get(&format!("{side}/num_heads")) {
            Some(&h) if h > 0 => Ok(h as usize),
            other => Err(format!("{side}/num_heads is {other:?}")),
        }
    };
    let (n_mels, n_audio_state) = match shape("encoder.conv1.weight")? {
        &[state, mels, 3] => (mels, state),
        other => return Err(format!("encoder/conv1/weight has shape {other:?}")),
    };
    let (n_audio_ctx, n_vocab, n_text_ctx, n_text_state) =
        match (shape("encoder.position_encodings.encodings")?, shape("decoder.embeddings.weight")?) {
            (&[audio_ctx, _], &[vocab, text_state]) => {
                (audio_ctx, vocab, shape("decoder.position_encodings.encodings")?[0], text_state)
            }
            (a, e) => return Err(format!("unexpected position {a:?} / embedding {e:?} shapes")),
        };
    let dims = Dims {
        n_mels,
        n_audio_ctx,
        n_audio_state,
        n_audio_head: heads("encoder")?,
        n_audio_layer: layers("encoder"),
        n_vocab,
        n_text_ctx,
        n_text_state,
        n_text_head: heads("decoder")?,
        n_text_layer: layers("decoder"),
    };
    if dims.n_audio_layer == 0 || dims.n_text_layer == 0 {
        return Err(format!("no transformer layers found ({dims:?})"));
    }
    if !dims.n_audio_state.is_multiple_of(dims.n_audio_head) || !dims.n_text_state.is_multiple_of(dims.n_text_head) {
        return Err(format!("widths do not split into heads ({dims:?})"));
    }
    Ok(dims)
}
