//! Reading and writing the numbers inside ONNX `TensorProto`s.

use anyhow::{bail, Result};
use tract_onnx::pb::TensorProto;

/// ONNX `TensorProto.DataType` codes used here.
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const DOUBLE: i32 = 11;
}

/// The values of a float, double or integer tensor, as f64 (exact for all f32/i32 values).
/// True if any f32 value of a float tensor satisfies `pred` (read in place, no copy).
pub fn any_f32(t: &TensorProto, pred: impl Fn(f32) -> bool) -> bool {
    if t.raw_data.is_empty() {
        t.float_data.iter().any(|&v| pred(v))
    } else {
        t.raw_data
            .chunks_exact(4)
            .any(|b| pred(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    }
}

pub fn values_f64(t: &TensorProto) -> Option<Vec<f64>> {
    let raw = &t.raw_data;
    match t.data_type {
        dtype::FLOAT if !raw.is_empty() => Some(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect(),
        ),
        dtype::FLOAT => Some(t.float_data.iter().map(|&v| v as f64).collect()),
        dtype::DOUBLE if !raw.is_empty() => Some(
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")))
                .collect(),
        ),
        dtype::DOUBLE => Some(t.double_data.clone()),
        dtype::INT64 if !raw.is_empty() => Some(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f64)
                .collect(),
        ),
        dtype::INT64 => Some(t.int64_data.iter().map(|&v| v as f64).collect()),
        dtype::INT32 if !raw.is_empty() => Some(
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect(),
        ),
        dtype::INT32 => Some(t.int32_data.iter().map(|&v| v as f64).collect()),
        _ => None,
    }
}

/// The single value of a scalar (or one-element) tensor.
pub fn scalar_f64(t: &TensorProto) -> Option<f64> {
    let v = values_f64(t)?;
    (v.len() == 1).then(|| v[0])
}

/// Applies `f` to every element of a float tensor, keeping its storage layout.
pub fn map_f32(t: &mut TensorProto, mut f: impl FnMut(f32) -> Result<f32>) -> Result<()> {
    if t.data_type != dtype::FLOAT {
        bail!("tensor {} is not float32", t.name);
    }
    if !t.raw_data.is_empty() {
        for b in t.raw_data.chunks_exact_mut(4) {
            let y = f(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
            b.copy_from_slice(&y.to_le_bytes());
        }
    } else {
        for v in t.float_data.iter_mut() {
            *v = f(*v)?;
        }
    }
    Ok(())
}

/// A float32 tensor with raw little-endian storage.
pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: dtype::FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A float64 scalar tensor.
pub fn f64_scalar(name: &str, value: f64) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        data_type: dtype::DOUBLE,
        raw_data: value.to_le_bytes().to_vec(),
        ..Default::default()
    }
}

/// An int64 tensor with raw storage.
pub fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: dtype::INT64,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}
