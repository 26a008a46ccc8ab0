//! tfjs layers/graph weights (a JSON manifest plus binary shards) → tensors.
//! Quantized weights (`quantization: {dtype: uint8|uint16, scale, min}`) are
//! dequantized to f32 as `q * scale + min`, as tfjs itself does.

use safetensors::Dtype;
use serde::Deserialize;

use super::{Converted, Tensor};

#[derive(Deserialize)]
struct Group {
    paths: Vec<String>,
    weights: Vec<Weight>,
}

#[derive(Deserialize)]
struct Weight {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    quantization: Option<Quantization>,
}

#[derive(Deserialize)]
struct Quantization {
    dtype: String,
    scale: f32,
    min: f32,
}

pub(crate) fn convert(
    manifest: &[u8],
    mut read_shard: impl FnMut(&str) -> Result<Vec<u8>, String>,
) -> Result<Converted, String> {
    let groups: Vec<Group> = serde_json::from_slice(manifest).map_err(|e| format!("weights manifest: {e}"))?;
    let mut out = Converted::default();
    for group in groups {
        let mut data = Vec::new();
        for path in &group.paths {
            if path.contains(['/', '\\']) || path.starts_with('.') {
                return Err(format!("weights manifest: shard path {path:?} leaves the model folder"));
            }
            data.extend(read_shard(path)?);
        }
        let mut pos = 0usize;
        for w in group.weights {
            let count: usize = w.shape.iter().product();
            let stored = w.quantization.as_ref().map(|q| q.dtype.as_str()).unwrap_or(w.dtype.as_str());
            let size = match stored {
                "float32" | "int32" => 4,
                "uint16" | "float16" => 2,
                "uint8" | "bool" => 1,
                other => return Err(format!("weight {}: unsupported dtype {other}", w.name)),
            };
            let bytes = data.get(pos..pos + count * size).ok_or_else(|| {
                format!("weight {}: shards end at {} bytes, need {}", w.name, data.len(), pos + count * size)
            })?;
            pos += count * size;
            let tensor = match (&w.quantization, w.dtype.as_str()) {
                (Some(q), "float32") => {
                    let values: Vec<f32> = match q.dtype.as_str() {
                        "uint8" => bytes.iter().map(|&b| b as f32 * q.scale + q.min).collect(),
                        "uint16" => bytes
                            .chunks_exact(2)
                            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32 * q.scale + q.min)
                            .collect(),
                        other => {
                            return Err(format!("weight {}: unsupported quantization {other}", w.name));
                        }
                    };
                    Tensor::f32(w.shape, &values)
                }
                (Some(_), other) => {
                    return Err(format!("weight {}: quantized {other} is not supported", w.name));
                }
                (None, "float32") => Tensor { dtype: Dtype::F32, shape: w.shape, data: bytes.to_vec() },
                (None, "int32") => Tensor { dtype: Dtype::I32, shape: w.shape, data: bytes.to_vec() },
                (None, "bool") => Tensor { dtype: Dtype::U8, shape: w.shape, data: bytes.to_vec() },
                (None, other) => {
                    return Err(format!("weight {}: unsupported dtype {other}", w.name));
                }
            };
            out.tensors.insert(w.name, tensor);
        }
        if pos != data.len() {
            return Err(format!("weights manifest describes {pos} bytes, shards hold {}", data.len()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"[{"paths": ["m.bin"], "weights": [
        {"name": "conv/filters", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "fc/bias", "shape": [2], "dtype": "float32"}
    ]}]"#;

    fn shard() -> Vec<u8> {
        let mut b = vec![0u8, 1, 2, 255];
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-3.0f32).to_le_bytes());
        b
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    #[test]
    fn dequantizes_uint8_weights() {
        let out = convert(MANIFEST.as_bytes(), |_| Ok(shard())).unwrap();
        assert_eq!(f32s(&out.tensors["conv/filters"]), vec![-1.0, -0.5, 0.0, 126.5]);
        assert_eq!(f32s(&out.tensors["fc/bias"]), vec![1.5, -3.0]);
        assert_eq!(out.tensors["conv/filters"].shape, vec![2, 2]);
    }

    #[test]
    fn short_long_or_malformed_shards_are_errors() {
        let short = convert(MANIFEST.as_bytes(), |_| Ok(shard()[..10].to_vec())).unwrap_err();
        assert!(short.contains("fc/bias"), "{short}");
        let mut long = shard();
        long.push(0);
        assert!(convert(MANIFEST.as_bytes(), |_| Ok(long.clone())).unwrap_err().contains("shards hold"));
        assert!(convert(b"{not json", |_| Ok(shard())).is_err());
        let escape = MANIFEST.replace("m.bin", "../m.bin");
        assert!(convert(escape.as_bytes(), |_| Ok(shard())).unwrap_err().contains("leaves the model folder"));
    }
}
