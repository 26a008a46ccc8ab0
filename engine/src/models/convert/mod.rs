//! Converters: what a model's fetched files become for the engine to load.
//! Each writes one `model.safetensors` next to the source files (through the
//! staging folder) and records its sha256; GGUF and plain files are loaded
//! as they are.

mod bytes;
mod ct2;
mod onnx;
mod tfjs;
mod tflite;

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;

use super::manifest::{Converter, Model};
use super::store::{ConversionRecord, HashingWriter, Store};
use super::{ModelError, sha256_file};

/// The file every converter writes.
pub const OUTPUT: &str = "model.safetensors";

/// The version of a converter's output format; `None` for models loaded as
/// fetched. Bump a version when a converter's output changes, so that
/// models converted by an older one are converted again.
pub fn version(converter: Converter) -> Option<u32> {
    match converter {
        Converter::Gguf | Converter::Copy | Converter::Builtin => None,
        Converter::Onnx | Converter::Ct2 | Converter::Tflite | Converter::Tfjs => Some(2),
    }
}

/// One tensor ready for safetensors: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self { dtype: Dtype::F32, shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }
}

/// Tensors by name, plus string metadata stored in the safetensors header.
#[derive(Debug, Default)]
pub struct Converted {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

/// Runs a model's converter and records its output.
pub(crate) fn run(store: &Store, model: &Model) -> Result<(), ModelError> {
    let dir = store.model_dir(&model.id);
    let fail = |detail: String| ModelError::Convert { model: model.id.clone(), detail };
    let source = |suffix: &str| {
        model
            .files
            .iter()
            .find(|f| f.name.ends_with(suffix))
            .map(|f| dir.join(&f.name))
            .ok_or_else(|| fail(format!("no file ending in {suffix}")))
    };
    let converted = match model.converter {
        Converter::Builtin | Converter::Copy => return Ok(()),
        Converter::Gguf => return check_gguf(&source(".gguf")?).map_err(fail),
        Converter::Onnx => {
            onnx::convert(&std::fs::read(source(".onnx")?).map_err(ModelError::io("reading the ONNX file"))?)
        }
        Converter::Ct2 => {
            ct2::convert(&std::fs::read(source("model.bin")?).map_err(ModelError::io("reading model.bin"))?)
        }
        Converter::Tflite => {
            tflite::convert(&std::fs::read(source(".tflite")?).map_err(ModelError::io("reading the TFLite file"))?)
        }
        Converter::Tfjs => {
            let manifest_path = source("weights_manifest.json")?;
            let manifest = std::fs::read(&manifest_path).map_err(ModelError::io("reading the tfjs manifest"))?;
            tfjs::convert(&manifest, |shard| {
                std::fs::read(dir.join(shard)).map_err(|e| format!("reading shard {shard}: {e}"))
            })
        }
    }
    .map_err(fail)?;
    let mut metadata = converted.metadata.clone();
    metadata.insert("converter".into(), format!("{:?}", model.converter).to_lowercase());
    metadata.insert("source_model".into(), model.id.clone());
    let bytes = serialize(&converted.tensors, metadata).map_err(fail)?;
    let staged = store.stage()?;
    let mut out = HashingWriter::new(staged);
    std::io::Write::write_all(&mut out, &bytes).map_err(ModelError::io("writing model.safetensors"))?;
    let (staged, sha, _) = out.finish();
    let path = store.commit(staged, &model.id, OUTPUT)?;
    debug_assert_eq!(sha256_file(&path).ok().as_deref(), Some(sha.as_str()));
    let record = ConversionRecord {
        converter: format!("{:?}", model.converter).to_lowercase(),
        converter_version: version(model.converter).unwrap_or(0),
        outputs: vec![(OUTPUT.to_string(), sha)],
    };
    store.write_record(model, &record)
}

/// Widens the types candle cannot load (I8 → I16, BOOL → U8), so that
/// every converted file loads with `candle_core::safetensors::load`.
fn loadable(t: &Tensor) -> std::borrow::Cow<'_, Tensor> {
    match t.dtype {
        Dtype::I8 => std::borrow::Cow::Owned(Tensor {
            dtype: Dtype::I16,
            shape: t.shape.clone(),
            data: t.data.iter().flat_map(|&b| (b as i8 as i16).to_le_bytes()).collect(),
        }),
        Dtype::BOOL => std::borrow::Cow::Owned(Tensor { dtype: Dtype::U8, ..t.clone() }),
        _ => std::borrow::Cow::Borrowed(t),
    }
}

fn serialize(tensors: &BTreeMap<String, Tensor>, metadata: BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let tensors: Vec<(&String, std::borrow::Cow<'_, Tensor>)> = tensors.iter().map(|(n, t)| (n, loadable(t))).collect();
    let views = tensors
        .iter()
        .map(|(name, t)| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (name.to_string(), v))
                .map_err(|e| format!("tensor {name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata.into_iter().collect())).map_err(|e| e.to_string())
}

/// Reads a GGUF file's header and metadata with candle's reader: the same
/// code the LLM loader uses, so a file that passes here loads there.
fn check_gguf(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file)
        .map_err(|e| format!("{} is not valid GGUF: {e}", path.display()))?;
    if content.tensor_infos.is_empty() {
        return Err(format!("{} holds no tensors", path.display()));
    }
    Ok(())
}
