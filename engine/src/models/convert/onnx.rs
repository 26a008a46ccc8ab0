//! ONNX → tensors: every initializer (in the main graph and in subgraphs of
//! `If`/`Loop` nodes) and every tensor-valued `Constant`, under its ONNX
//! name. `DequantizeLinear` nodes over constant int8/uint8 inputs are folded
//! at conversion: their f32 output is stored under the node's output name,
//! so loaders see plain float weights.
//!
//! The protobuf messages below declare only the ONNX fields the converter
//! reads (field numbers from onnx.proto); prost skips the rest.

use std::collections::BTreeMap;

use prost::Message;
use safetensors::Dtype;

use super::{Converted, Tensor};

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    g: Option<GraphProto>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

fn tensor(t: &TensorProto) -> Result<Tensor, String> {
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {}: negative dimension {d}", t.name)))
        .collect::<Result<Vec<_>, _>>()?;
    if t.data_location == 1 {
        return Err(format!("tensor {}: external data is not supported", t.name));
    }
    // onnx.proto TensorProto.DataType
    let (dtype, size) = match t.data_type {
        1 => (Dtype::F32, 4),
        2 => (Dtype::U8, 1),
        3 => (Dtype::I8, 1),
        4 => (Dtype::U16, 2),
        5 => (Dtype::I16, 2),
        6 => (Dtype::I32, 4),
        7 => (Dtype::I64, 8),
        9 => (Dtype::BOOL, 1),
        10 => (Dtype::F16, 2),
        11 => (Dtype::F64, 8),
        16 => (Dtype::BF16, 2),
        other => {
            return Err(format!("tensor {}: unsupported ONNX data type {other}", t.name));
        }
    };
    let count: usize = shape.iter().product();
    let data = if !t.raw_data.is_empty() {
        t.raw_data.clone()
    } else {
        match t.data_type {
            1 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            7 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            11 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            6 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            // Narrow types are stored one per int32 (f16/bf16 as their bit patterns).
            2 | 3 | 9 => t.int32_data.iter().map(|&v| v as u8).collect(),
            4 | 5 | 10 | 16 => t.int32_data.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
            _ => Vec::new(),
        }
    };
    if data.len() != count * size {
        return Err(format!("tensor {}: shape {shape:?} needs {} bytes, has {}", t.name, count * size, data.len()));
    }
    Ok(Tensor { dtype, shape, data })
}

fn walk(graph: &GraphProto, out: &mut BTreeMap<String, Tensor>, dequant: &mut Vec<NodeProto>) -> Result<(), String> {
    for init in &graph.initializer {
        out.insert(init.name.clone(), tensor(init)?);
    }
    for node in &graph.node {
        for attr in &node.attribute {
            if let (Some(t), "Constant") = (&attr.t, node.op_type.as_str())
                && let Some(name) = node.output.first()
            {
                out.insert(name.clone(), tensor(t)?);
            }
            if let Some(g) = &attr.g {
                walk(g, out, dequant)?;
            }
            for g in &attr.graphs {
                walk(g, out, dequant)?;
            }
        }
        if node.op_type == "DequantizeLinear" {
            dequant.push(node.clone());
        }
    }
    Ok(())
}

fn as_f32s(t: &Tensor) -> Option<Vec<f32>> {
    (t.dtype == Dtype::F32)
        .then(|| t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// y = (x - zero_point) * scale, per tensor or per slice along `axis`.
fn dequantize(node: &NodeProto, tensors: &BTreeMap<String, Tensor>) -> Result<Option<Tensor>, String> {
    let get = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| tensors.get(n));
    let (Some(x), Some(scale)) = (get(0), get(1)) else {
        return Ok(None); // not over constants: a runtime quantization, left to the graph
    };
    let values: Vec<f32> = match x.dtype {
        Dtype::I8 => x.data.iter().map(|&b| b as i8 as f32).collect(),
        Dtype::U8 => x.data.iter().map(|&b| b as f32).collect(),
        Dtype::I32 => x.data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        _ => return Ok(None),
    };
    let scales = as_f32s(scale).ok_or_else(|| format!("DequantizeLinear {:?}: scale is not f32", node.output))?;
    let zeros: Vec<f32> = match get(2) {
        Some(z) if z.dtype == Dtype::I8 => z.data.iter().map(|&b| b as i8 as f32).collect(),
        Some(z) if z.dtype == Dtype::U8 => z.data.iter().map(|&b| b as f32).collect(),
        Some(z) if z.dtype == Dtype::I32 => {
            z.data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect()
        }
        Some(_) => {
            return Err(format!("DequantizeLinear {:?}: unsupported zero point type", node.output));
        }
        None => vec![0.0; scales.len()],
    };
    if zeros.len() != scales.len() || scales.is_empty() {
        return Err(format!(
            "DequantizeLinear {:?}: {} scales, {} zero points",
            node.output,
            scales.len(),
            zeros.len()
        ));
    }
    let rank = x.shape.len() as i64;
    let axis = node.attribute.iter().find(|a| a.name == "axis").map(|a| a.i).unwrap_or(1);
    let axis = if axis < 0 { axis + rank } else { axis };
    let (outer_len, inner) = if scales.len() == 1 {
        (1usize, values.len())
    } else {
        if axis < 0 || axis >= rank || x.shape[axis as usize] != scales.len() {
            return Err(format!(
                "DequantizeLinear {:?}: {} scales do not fit axis {axis} of {:?}",
                node.output,
                scales.len(),
                x.shape
            ));
        }
        (x.shape[axis as usize], x.shape[axis as usize + 1..].iter().product())
    };
    let out: Vec<f32> = values
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let c = (i / inner) % outer_len;
            (q - zeros[c]) * scales[c]
        })
        .collect();
    Ok(Some(Tensor::f32(x.shape.clone(), &out)))
}

pub(crate) fn convert(buf: &[u8]) -> Result<Converted, String> {
    let model = ModelProto::decode(buf).map_err(|e| format!("not an ONNX model: {e}"))?;
    let graph = model.graph.ok_or("ONNX model has no graph")?;
    let mut out = Converted::default();
    let mut dequant = Vec::new();
    walk(&graph, &mut out.tensors, &mut dequant)?;
    if out.tensors.is_empty() {
        return Err("ONNX model has no weights".into());
    }
    let mut folded = Vec::new();
    for node in &dequant {
        if let (Some(t), Some(name)) = (dequantize(node, &out.tensors)?, node.output.first()) {
            out.tensors.insert(name.clone(), t);
            folded.extend(node.input.first().cloned());
        }
    }
    // The quantized inputs are replaced by their f32 values; keeping both
    // would only double the file.
    for name in folded {
        out.tensors.remove(&name);
    }
    out.metadata.insert("onnx_ir_version".into(), model.ir_version.to_string());
    out.metadata.insert("onnx_producer".into(), model.producer_name);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(name: &str, dims: Vec<i64>, data_type: i32, raw: Vec<u8>) -> TensorProto {
        TensorProto { name: name.into(), dims, data_type, raw_data: raw, ..Default::default() }
    }

    fn tiny() -> Vec<u8> {
        let w = init("w", vec![2, 2], 1, [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect());
        let q = init("q", vec![2, 2], 3, vec![10u8, 246, 0, 1]); // 10, -10, 0, 1 as i8
        let scale = init("s", vec![2], 1, [0.5f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect());
        let zp = init("z", vec![2], 3, vec![0, 1]);
        let sub_init = TensorProto {
            name: "inner".into(),
            dims: vec![1],
            data_type: 1,
            float_data: vec![7.5],
            ..Default::default()
        };
        let dq = NodeProto {
            input: vec!["q".into(), "s".into(), "z".into()],
            output: vec!["q_f32".into()],
            op_type: "DequantizeLinear".into(),
            attribute: vec![AttributeProto { name: "axis".into(), i: 0, ..Default::default() }],
        };
        let branch = GraphProto { node: vec![], initializer: vec![sub_init] };
        let iff = NodeProto {
            op_type: "If".into(),
            attribute: vec![AttributeProto { name: "then_branch".into(), g: Some(branch), ..Default::default() }],
            ..Default::default()
        };
        let graph = GraphProto { node: vec![dq, iff], initializer: vec![w, q, scale, zp] };
        ModelProto { ir_version: 8, producer_name: "test".into(), graph: Some(graph) }.encode_to_vec()
    }

    #[test]
    fn reads_initializers_subgraphs_and_folds_dequantize() {
        let out = convert(&tiny()).unwrap();
        assert_eq!(as_f32s(&out.tensors["w"]).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(as_f32s(&out.tensors["inner"]).unwrap(), vec![7.5]);
        // Row 0: scale 0.5, zero 0 → 5, -5. Row 1: scale 2, zero 1 → -2, 0.
        assert_eq!(as_f32s(&out.tensors["q_f32"]).unwrap(), vec![5.0, -5.0, -2.0, 0.0]);
        assert!(!out.tensors.contains_key("q"), "the folded int8 input is dropped");
        assert_eq!(out.tensors["z"].dtype, Dtype::I8);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let full = tiny();
        assert!(convert(b"\xff\xff\xff\xff garbage").is_err());
        assert!(convert(&full[..full.len() / 2]).is_err());
        let wrong_size = ModelProto {
            graph: Some(GraphProto { node: vec![], initializer: vec![init("w", vec![3], 1, vec![0; 8])] }),
            ..Default::default()
        };
        assert!(convert(&wrong_size.encode_to_vec()).unwrap_err().contains("needs 12 bytes"));
    }
}
