//! TFLite flatbuffer → tensors: every tensor of every subgraph that has
//! constant data in a buffer, under its TFLite name, in its stored type
//! (mediapipe's fp16 models stay f16; the loader decides).
//!
//! A small reader for the few tables needed (schema.fbs field numbers):
//! Model { 2: subgraphs, 4: buffers }, SubGraph { 0: tensors },
//! Tensor { 0: shape, 1: type, 2: buffer, 3: name }, Buffer { 0: data,
//! 1: offset, 2: size }. Every offset is bounds-checked.

use safetensors::Dtype;

use super::bytes::Reader;
use super::{Converted, Tensor};

const WHAT: &str = "TFLite file";

/// A flatbuffer table: its position and its vtable's.
#[derive(Clone, Copy)]
struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'a> Table<'a> {
    fn at(buf: &'a [u8], pos: usize) -> Result<Self, String> {
        let soffset = Reader::at(buf, pos, WHAT)?.i32()? as i64;
        let vtable =
            usize::try_from(pos as i64 - soffset).map_err(|_| format!("{WHAT}: bad vtable offset at {pos}"))?;
        let vtable_len = Reader::at(buf, vtable, WHAT)?.u16()? as usize;
        Ok(Self { buf, pos, vtable, vtable_len })
    }

    /// The position of field `index`, or `None` when absent.
    fn field(&self, index: usize) -> Result<Option<usize>, String> {
        let entry = 4 + 2 * index;
        if entry + 2 > self.vtable_len {
            return Ok(None);
        }
        let off = Reader::at(self.buf, self.vtable + entry, WHAT)?.u16()? as usize;
        Ok((off != 0).then_some(self.pos + off))
    }

    /// Follows the u32 offset stored at field `index`.
    fn indirect(&self, index: usize) -> Result<Option<usize>, String> {
        match self.field(index)? {
            Some(p) => Ok(Some(p + Reader::at(self.buf, p, WHAT)?.u32()? as usize)),
            None => Ok(None),
        }
    }

    fn u8(&self, index: usize) -> Result<u8, String> {
        self.field(index)?.map_or(Ok(0), |p| Reader::at(self.buf, p, WHAT)?.u8())
    }

    fn u32(&self, index: usize) -> Result<u32, String> {
        self.field(index)?.map_or(Ok(0), |p| Reader::at(self.buf, p, WHAT)?.u32())
    }

    fn u64(&self, index: usize) -> Result<u64, String> {
        self.field(index)?.map_or(Ok(0), |p| Reader::at(self.buf, p, WHAT)?.u64())
    }

    /// A vector field: (position of the first element, length).
    fn vector(&self, index: usize) -> Result<(usize, usize), String> {
        match self.indirect(index)? {
            Some(p) => Ok((p + 4, Reader::at(self.buf, p, WHAT)?.u32()? as usize)),
            None => Ok((0, 0)),
        }
    }

    fn bytes(&self, index: usize) -> Result<&'a [u8], String> {
        let (start, len) = self.vector(index)?;
        Reader::at(self.buf, start, WHAT)?.take(len)
    }

    fn string(&self, index: usize) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.bytes(index)?).into_owned())
    }

    fn tables(&self, index: usize) -> Result<Vec<Table<'a>>, String> {
        let (start, len) = self.vector(index)?;
        (0..len)
            .map(|i| {
                let p = start + 4 * i;
                Table::at(self.buf, p + Reader::at(self.buf, p, WHAT)?.u32()? as usize)
            })
            .collect()
    }

    fn i32s(&self, index: usize) -> Result<Vec<i32>, String> {
        let (start, len) = self.vector(index)?;
        let mut r = Reader::at(self.buf, start, WHAT)?;
        (0..len).map(|_| r.i32()).collect()
    }
}

fn dtype(t: u8) -> Result<(Dtype, usize), String> {
    Ok(match t {
        0 => (Dtype::F32, 4),
        1 => (Dtype::F16, 2),
        2 => (Dtype::I32, 4),
        3 => (Dtype::U8, 1),
        4 => (Dtype::I64, 8),
        6 => (Dtype::BOOL, 1),
        7 => (Dtype::I16, 2),
        9 => (Dtype::I8, 1),
        10 => (Dtype::F64, 8),
        other => return Err(format!("{WHAT}: unsupported tensor type {other}")),
    })
}

pub(crate) fn convert(buf: &[u8]) -> Result<Converted, String> {
    if buf.get(4..8) != Some(b"TFL3") {
        return Err(format!("{WHAT}: no TFL3 identifier (not a TFLite model)"));
    }
    let root = Reader::new(buf, WHAT).u32()? as usize;
    let model = Table::at(buf, root)?;
    let buffers = model.tables(4)?;
    let mut out = Converted::default();
    out.metadata.insert("tflite_version".into(), model.u32(0)?.to_string());
    out.metadata.insert("tflite_description".into(), model.string(3)?);
    for (g, subgraph) in model.tables(2)?.iter().enumerate() {
        for tensor in subgraph.tables(0)? {
            let index = tensor.u32(2)? as usize;
            let Some(buffer) = buffers.get(index) else {
                return Err(format!("{WHAT}: tensor refers to buffer {index} of {}", buffers.len()));
            };
            let mut data = buffer.bytes(0)?;
            let (offset, size) = (buffer.u64(1)? as usize, buffer.u64(2)? as usize);
            if data.is_empty() && offset > 1 {
                data = Reader::at(buf, offset, WHAT)?.take(size)?;
            }
            if data.is_empty() {
                continue; // an activation, not a weight
            }
            let name = tensor.string(3)?;
            let shape = tensor
                .i32s(0)?
                .into_iter()
                .map(|d| usize::try_from(d).map_err(|_| format!("{WHAT}: tensor {name} has dimension {d}")))
                .collect::<Result<Vec<_>, _>>()?;
            let (dtype, size) = dtype(tensor.u8(1)?)?;
            let count: usize = shape.iter().product();
            if count * size != data.len() {
                return Err(format!(
                    "{WHAT}: tensor {name} {shape:?} needs {} bytes, its buffer has {}",
                    count * size,
                    data.len()
                ));
            }
            let key = if g == 0 { name } else { format!("subgraph{g}/{name}") };
            out.tensors.insert(key, Tensor { dtype, shape, data: data.to_vec() });
        }
    }
    if out.tensors.is_empty() {
        return Err(format!("{WHAT}: no constant tensors"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a flatbuffer by hand, front to back: a table is [soffset to
    /// its vtable][fields], a vtable [len][table len][field offsets]; every
    /// reference is a u32 forward offset from where it is stored, patched
    /// once its target is written. Model → 1 subgraph → 1 tensor → buffer 1.
    fn tiny() -> Vec<u8> {
        fn u32_(b: &mut Vec<u8>, v: u32) -> usize {
            b.extend_from_slice(&v.to_le_bytes());
            b.len() - 4
        }
        fn u16s(b: &mut Vec<u8>, vs: &[u16]) -> usize {
            let at = b.len();
            vs.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
            at
        }
        fn patch(b: &mut [u8], at: usize) {
            let v = (b.len() - at) as u32;
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn table(b: &mut Vec<u8>, vt: usize) -> usize {
            let pos = b.len();
            b.extend_from_slice(&((pos - vt) as i32).to_le_bytes());
            pos
        }
        let mut b = vec![0u8; 8];
        b[4..8].copy_from_slice(b"TFL3");
        let vt_model = u16s(&mut b, &[14, 12, 0, 0, 4, 0, 8]); // fields 2 (subgraphs), 4 (buffers)
        let vt_one = u16s(&mut b, &[6, 8, 4]); // field 0 only
        let vt_tensor = u16s(&mut b, &[12, 20, 4, 8, 12, 16]); // shape, type, buffer, name
        let vt_empty = u16s(&mut b, &[4, 4]);
        let model = table(&mut b, vt_model);
        b[0..4].copy_from_slice(&(model as u32).to_le_bytes());
        let subs_ref = u32_(&mut b, 0);
        let bufs_ref = u32_(&mut b, 0);
        patch(&mut b, subs_ref);
        u32_(&mut b, 1);
        let sub_elem = u32_(&mut b, 0);
        patch(&mut b, sub_elem);
        table(&mut b, vt_one);
        let tensors_ref = u32_(&mut b, 0);
        patch(&mut b, tensors_ref);
        u32_(&mut b, 1);
        let tensor_elem = u32_(&mut b, 0);
        patch(&mut b, tensor_elem);
        table(&mut b, vt_tensor);
        let shape_ref = u32_(&mut b, 0);
        u32_(&mut b, 0); // type FLOAT32 (one byte, padded)
        u32_(&mut b, 1); // buffer index
        let name_ref = u32_(&mut b, 0);
        patch(&mut b, shape_ref);
        u32_(&mut b, 1);
        u32_(&mut b, 2);
        patch(&mut b, name_ref);
        u32_(&mut b, 1);
        b.extend_from_slice(b"w\0\0\0");
        patch(&mut b, bufs_ref);
        u32_(&mut b, 2);
        let buf0_elem = u32_(&mut b, 0);
        let buf1_elem = u32_(&mut b, 0);
        patch(&mut b, buf0_elem);
        table(&mut b, vt_empty);
        patch(&mut b, buf1_elem);
        table(&mut b, vt_one);
        let data_ref = u32_(&mut b, 0);
        patch(&mut b, data_ref);
        u32_(&mut b, 8);
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2.0f32).to_le_bytes());
        b
    }

    #[test]
    fn reads_constant_tensors() {
        let out = convert(&tiny()).unwrap();
        let w = &out.tensors["w"];
        assert_eq!((w.dtype, w.shape.clone()), (Dtype::F32, vec![2]));
        assert_eq!(&w.data[..4], &1.5f32.to_le_bytes());
        assert_eq!(out.tensors.len(), 1);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let full = tiny();
        assert!(convert(b"12345678").unwrap_err().contains("TFL3"));
        for cut in (8..full.len()).step_by(7) {
            let _ = convert(&full[..cut]); // must not panic
        }
        let mut bad_root = full.clone();
        bad_root[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(convert(&bad_root).is_err());
    }
}
