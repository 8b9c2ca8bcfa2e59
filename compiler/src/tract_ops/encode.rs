//! `SufEncode`: a float tensor enters the ring (levels `ring` and `sigma`): Enc(x) as an
//! i64 tensor. After an embedding Gather, and wherever a float value joins ring values.

use super::infer::Infer;
use super::ring_io::{record_output, ring_tensor, ring_values};
use super::SufAttrs;
use crate::options::Emulation;
use crate::{stats, SUF_ENCODE};
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SufEncode {
    pub node: String,
    pub fixed: FixedPoint,
    pub level: Emulation,
    pub rounding: Rounding,
}

impl Op for SufEncode {
    fn name(&self) -> StaticName {
        SUF_ENCODE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "n_bits={} frac_bits={} rounding={}",
            self.fixed.n_bits(),
            self.fixed.frac_bits(),
            self.rounding
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for SufEncode {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs.first().context("SufEncode takes one input")?;
        if stats::enabled() && x.datum_type() != DatumType::I64 {
            let x = x.cast_to::<f32>()?;
            let plain = x.try_as_plain_ram()?;
            let xs = plain.as_slice::<f32>()?;
            let (max_abs, overflows) = stats::scan_f32(xs, self.fixed.real_bound());
            stats::record(&self.node, |s| {
                s.max_abs = s.max_abs.max(max_abs);
                s.overflows += overflows;
                s.elements += xs.len();
            });
        }
        let f = self.fixed.frac_bits();
        let q = ring_values(x, self.fixed, self.rounding, f, &self.node, "input")?;
        record_output(&self.node, self.level, self.fixed, &q);
        Ok(tvec!(ring_tensor(q, x.shape())?))
    }
}

impl TypedOp for SufEncode {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i64::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

pub(super) fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = SufAttrs::parse(node)?;
    let op = SufEncode {
        node: attrs.node,
        fixed: attrs.fixed,
        level: attrs.emulation,
        rounding: attrs.rounding,
    };
    Ok(Infer::unary(op, SUF_ENCODE, DatumType::I64))
}
