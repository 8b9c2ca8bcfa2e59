//! `SufRingDecode`: a ring tensor leaves the ring as f32, for a graph output or a float
//! island (an op of the original model computed in float). f32 holds q * 2^-f exactly only
//! while q has at most 24 significant bits, so any other value is an error naming the
//! node: a ring value is never rounded silently.

use super::infer::Infer;
use super::SufAttrs;
use crate::SUF_RING_DECODE;
use suf_fixed::{pow2, FixedPoint};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SufRingDecode {
    pub node: String,
    pub fixed: FixedPoint,
}

impl Op for SufRingDecode {
    fn name(&self) -> StaticName {
        SUF_RING_DECODE.into()
    }

    op_as_typed_op!();
}

impl SufRingDecode {
    /// q * 2^-f as f32, or the first value f32 cannot hold.
    pub fn decode(&self, q: &[i64]) -> Result<Vec<f32>, (usize, i64)> {
        let inv = pow2(-(self.fixed.frac_bits() as i32)) as f32;
        q.iter()
            .enumerate()
            .map(|(i, &v)| {
                let x = v as f32;
                // Exact when the integer survives the round trip; scaling by 2^-f is exact
                // in binary floating point (no ring value is small enough to go subnormal).
                if x as i64 == v && v != i64::MIN {
                    Ok(x * inv)
                } else {
                    Err((i, v))
                }
            })
            .collect()
    }
}

impl EvalOp for SufRingDecode {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs.first().context("SufRingDecode takes one input")?;
        ensure!(
            x.datum_type() == DatumType::I64,
            "SUF node {}: expects a ring (i64) tensor, got {:?}",
            self.node,
            x.datum_type()
        );
        let plain = x.try_as_plain_ram()?;
        let q = plain.as_slice::<i64>()?;
        let y = self.decode(q).map_err(|(i, v)| {
            anyhow!(
                "SUF node {}: ring value {v} (real {}) at flat index {i} cannot be carried \
                 exactly in f32 into the float op that reads it",
                self.node,
                self.fixed.decode(v)
            )
        })?;
        Ok(tvec!(tensor1(&y).into_shape(x.shape())?.into_tvalue()))
    }
}

impl TypedOp for SufRingDecode {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

pub(super) fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = SufAttrs::parse(node)?;
    let op = SufRingDecode {
        node: attrs.node,
        fixed: attrs.fixed,
    };
    Ok(Infer::unary(op, SUF_RING_DECODE, DatumType::F32))
}
