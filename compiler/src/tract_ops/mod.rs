//! SUF nodes as tract ops, so rewritten models run in tract.
//!
//! tract's ONNX op registry is keyed by op type alone (the domain is ignored), hence the
//! `Suf` prefix. The arithmetic is `suf_fixed`'s: these modules only adapt it to tensors.

mod binary;
mod decode;
mod encode;
mod infer;
mod nonlinear;
mod quantize;
mod ring_io;
mod ring_matmul;

pub use binary::{BinaryKind, SufRingBinary};
pub use decode::SufRingDecode;
pub use encode::SufEncode;
pub use nonlinear::{Algorithm, SufNonlinear};
pub use quantize::{SufQuantize, SufQuantizeBias};
pub use ring_matmul::SufRingMatMul;

use crate::options::Emulation;
use crate::{
    SUF_ENCODE, SUF_QUANTIZE, SUF_QUANTIZE_BIAS, SUF_RING_ADD, SUF_RING_DECODE, SUF_RING_FUNCTION,
    SUF_RING_MATMUL, SUF_RING_MUL, SUF_SIGMA_ACTIVATION, SUF_SIGMA_ROW,
};
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// tract's ONNX framework with the SUF ops registered. Use it for original and rewritten
/// models alike (it is a superset of `tract_onnx::onnx()`).
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert(SUF_QUANTIZE, quantize::parse);
    onnx.op_register
        .insert(SUF_QUANTIZE_BIAS, quantize::parse_bias);
    onnx.op_register.insert(SUF_RING_MATMUL, ring_matmul::parse);
    onnx.op_register
        .insert(SUF_SIGMA_ACTIVATION, nonlinear::parse);
    onnx.op_register.insert(SUF_SIGMA_ROW, nonlinear::parse);
    onnx.op_register.insert(SUF_RING_FUNCTION, nonlinear::parse);
    onnx.op_register.insert(SUF_ENCODE, encode::parse);
    onnx.op_register.insert(SUF_RING_DECODE, decode::parse);
    onnx.op_register.insert(SUF_RING_ADD, binary::parse);
    onnx.op_register.insert(SUF_RING_MUL, binary::parse);
    onnx
}

/// The attributes every SUF node carries (see `pass::suf_attributes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SufAttrs {
    pub node: String,
    pub fixed: FixedPoint,
    pub rounding: Rounding,
    pub emulation: Emulation,
}

impl SufAttrs {
    pub fn parse(node: &NodeProto) -> TractResult<Self> {
        let n_bits = u32::try_from(int_attr(node, "n_bits")?)?;
        let frac_bits = u32::try_from(int_attr(node, "frac_bits")?)?;
        let fixed = FixedPoint::new(n_bits, frac_bits)
            .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?;
        let rounding = string_attr(node, "rounding")
            .map(|s| s.parse::<Rounding>())
            .transpose()
            .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?
            .unwrap_or_default();
        let emulation = string_attr(node, "emulation")
            .map(|s| s.parse::<Emulation>())
            .transpose()
            .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?
            .unwrap_or_default();
        Ok(SufAttrs {
            node: node.name.clone(),
            fixed,
            rounding,
            emulation,
        })
    }
}

pub(crate) fn int_attr(node: &NodeProto, name: &str) -> TractResult<i64> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.i)
        .with_context(|| format!("SUF node {}: missing attribute {name}", node.name))
}

pub(crate) fn opt_int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

pub(crate) fn float_attr(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

pub(crate) fn string_attr(node: &NodeProto, name: &str) -> Option<String> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}
