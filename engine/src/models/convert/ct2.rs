//! CTranslate2 `model.bin` (binary versions 2–6) → tensors.
//!
//! Layout: i32 version; spec name and i32 spec revision (v ≥ 2); u32 variable
//! count; per variable: name, u8 rank, u32 dims, then (v ≥ 4) u8 dtype id or
//! (v < 4) u8 item size, u32 byte count, data; (v ≥ 3) u32 alias count and
//! alias → variable name pairs. Strings are u16 length + bytes ending in NUL.
//! Aliases (Whisper's output projection tied to the token embedding) are kept
//! as metadata, not duplicated.

use safetensors::Dtype;

use super::bytes::Reader;
use super::{Converted, Tensor};

fn string(r: &mut Reader) -> Result<String, String> {
    let len = r.u16()? as usize;
    let raw = r.take(len)?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8(raw.to_vec()).map_err(|e| format!("model.bin: a name is not UTF-8: {e}"))
}

fn dtype(id: u8) -> Result<(Dtype, usize), String> {
    Ok(match id {
        0 => (Dtype::F32, 4),
        1 => (Dtype::I8, 1),
        2 => (Dtype::I16, 2),
        3 => (Dtype::I32, 4),
        4 => (Dtype::F16, 2),
        5 => (Dtype::BF16, 2),
        other => return Err(format!("model.bin: unknown data type id {other}")),
    })
}

pub(crate) fn convert(buf: &[u8]) -> Result<Converted, String> {
    let mut r = Reader::new(buf, "model.bin");
    let version = r.i32()?;
    if !(2..=6).contains(&version) {
        return Err(format!("model.bin: binary version {version} is not supported (2 to 6)"));
    }
    let mut out = Converted::default();
    out.metadata.insert("ct2_spec".into(), string(&mut r)?);
    out.metadata.insert("ct2_spec_revision".into(), r.i32()?.to_string());
    out.metadata.insert("ct2_binary_version".into(), version.to_string());
    let count = r.u32()?;
    for _ in 0..count {
        let name = string(&mut r)?;
        let rank = r.u8()? as usize;
        let shape = (0..rank).map(|_| r.u32().map(|d| d as usize)).collect::<Result<Vec<_>, _>>()?;
        let (dtype, size) = if version >= 4 {
            dtype(r.u8()?)?
        } else {
            match r.u8()? {
                1 => (Dtype::I8, 1),
                2 => (Dtype::F16, 2),
                4 => (Dtype::F32, 4),
                other => return Err(format!("model.bin: variable {name}: item size {other}")),
            }
        };
        let bytes = r.u32()? as usize;
        let elements: usize = shape.iter().product();
        if elements * size != bytes {
            return Err(format!(
                "model.bin: variable {name}: shape {shape:?} needs {} bytes, file says {bytes}",
                elements * size
            ));
        }
        let data = r.take(bytes)?.to_vec();
        out.tensors.insert(name, Tensor { dtype, shape, data });
    }
    if version >= 3 {
        let aliases = r.u32()?;
        for _ in 0..aliases {
            let alias = string(&mut r)?;
            let target = string(&mut r)?;
            if !out.tensors.contains_key(&target) {
                return Err(format!("model.bin: alias {alias} points at unknown variable {target}"));
            }
            out.metadata.insert(format!("alias:{alias}"), target);
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put_string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    /// A tiny CTranslate2 v6 file: one f16 matrix, one i8 scalar, one alias.
    pub(crate) fn tiny_model_bin() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6i32.to_le_bytes());
        put_string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3i32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        put_string(&mut b, "decoder/embeddings/weight");
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&12u32.to_le_bytes());
        for v in [1.0f32, -2.0, 0.5, 0.0, 3.0, -0.25] {
            b.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
        put_string(&mut b, "decoder/activation");
        b.push(0);
        b.push(1);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(7);
        b.extend_from_slice(&1u32.to_le_bytes());
        put_string(&mut b, "decoder/projection/weight");
        put_string(&mut b, "decoder/embeddings/weight");
        b
    }

    #[test]
    fn reads_variables_and_aliases() {
        let out = convert(&tiny_model_bin()).unwrap();
        let emb = &out.tensors["decoder/embeddings/weight"];
        assert_eq!((emb.dtype, emb.shape.clone()), (Dtype::F16, vec![2, 3]));
        assert_eq!(half::f16::from_le_bytes([emb.data[2], emb.data[3]]).to_f32(), -2.0);
        assert_eq!(out.tensors["decoder/activation"].data, vec![7]);
        assert_eq!(out.metadata["alias:decoder/projection/weight"], "decoder/embeddings/weight");
        assert_eq!(out.metadata["ct2_spec"], "WhisperSpec");
    }

    #[test]
    fn truncated_or_bad_files_are_errors() {
        let full = tiny_model_bin();
        for cut in [0, 3, 10, 40, full.len() - 1] {
            assert!(convert(&full[..cut]).is_err(), "cut at {cut} was accepted");
        }
        let mut bad_version = full.clone();
        bad_version[0] = 99;
        assert!(convert(&bad_version).unwrap_err().contains("binary version 99"));
    }
}
