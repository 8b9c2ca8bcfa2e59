//! `SufRingAdd` and `SufRingMul`: elementwise arithmetic between ring tensors (numpy
//! broadcasting), for the residual Adds, embedding sums and elementwise products that sit
//! between SUF nodes. A float operand is encoded with the node's rounding first.
//!
//! - Add: Wrap(a + b), or Wrap(a - b) with `sub = 1`.
//! - Mul: Ars(Wrap(a * b), f): the product is formed at scale 2f and truncated by floor,
//!   as the protocols do; `reciprocal_b = 1` multiplies by Enc(1 / b) (a Div by a constant).

use super::infer::{Infer, ShapeRule};
use super::ring_io::{record_output, ring_tensor, ring_values};
use super::{opt_int_attr, SufAttrs};
use crate::options::Emulation;
use crate::{stats, SUF_RING_ADD, SUF_RING_MUL};
use suf_fixed::{ars, pow2, FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::broadcast::multi_broadcast;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::expand;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    /// a * Enc(1 / b).
    MulReciprocal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SufRingBinary {
    pub node: String,
    pub fixed: FixedPoint,
    pub level: Emulation,
    pub rounding: Rounding,
    pub kind: BinaryKind,
}

impl Op for SufRingBinary {
    fn name(&self) -> StaticName {
        match self.kind {
            BinaryKind::Add | BinaryKind::Sub => SUF_RING_ADD.into(),
            _ => SUF_RING_MUL.into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} n_bits={} frac_bits={}",
            self.kind,
            self.fixed.n_bits(),
            self.fixed.frac_bits()
        )])
    }

    op_as_typed_op!();
}

impl SufRingBinary {
    fn operand(
        &self,
        t: &Tensor,
        shape: &[usize],
        reciprocal: bool,
        what: &str,
    ) -> TractResult<Vec<i64>> {
        let t = if t.shape() == shape {
            std::borrow::Cow::Borrowed(t)
        } else {
            std::borrow::Cow::Owned(t.broadcast_to_shape(shape)?)
        };
        if reciprocal {
            ensure!(
                t.datum_type() != DatumType::I64,
                "SUF node {}: the divisor of a ring division must be a float constant",
                self.node
            );
            let t = t.cast_to::<f64>()?;
            let plain = t.try_as_plain_ram()?;
            return plain
                .as_slice::<f64>()?
                .iter()
                .map(|&v| self.fixed.encode(1.0 / v, self.rounding))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("SUF node {}: {what}: 1 / divisor: {e}", self.node));
        }
        let f = self.fixed.frac_bits();
        ring_values(&t, self.fixed, self.rounding, f, &self.node, what)
    }
}

impl EvalOp for SufRingBinary {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 2,
            "SUF node {}: takes two operands, got {}",
            self.node,
            inputs.len()
        );
        let shape: TVec<usize> = multi_broadcast(&[inputs[0].shape(), inputs[1].shape()])
            .with_context(|| format!("SUF node {}: operands do not broadcast", self.node))?;
        let reciprocal = self.kind == BinaryKind::MulReciprocal;
        let a = self.operand(&inputs[0], &shape, false, "operand A")?;
        let b = self.operand(&inputs[1], &shape, reciprocal, "operand B")?;
        let n = self.fixed.n_bits();
        let f = self.fixed.frac_bits();
        let mut max_exact = 0u128;
        let mut overflows = 0usize;
        let half = 1u128 << (n - 1);
        let out: Vec<i64> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| {
                let exact = match self.kind {
                    BinaryKind::Add => x as i128 + y as i128,
                    BinaryKind::Sub => x as i128 - y as i128,
                    BinaryKind::Mul | BinaryKind::MulReciprocal => x as i128 * y as i128,
                };
                max_exact = max_exact.max(exact.unsigned_abs());
                overflows += (exact >= half as i128 || exact < -(half as i128)) as usize;
                let wrapped = self.fixed.wrap(exact);
                match self.kind {
                    BinaryKind::Add | BinaryKind::Sub => wrapped,
                    _ => ars(wrapped, f, n),
                }
            })
            .collect();
        if stats::enabled() {
            let product = matches!(self.kind, BinaryKind::Mul | BinaryKind::MulReciprocal);
            let scale = if product { 2 * f } else { f };
            let real = max_exact as f64 * pow2(-(scale as i32));
            stats::record(&self.node, |s| {
                if product {
                    s.max_abs_2f = Some(s.max_abs_2f.unwrap_or(0.0).max(real));
                    s.overflows_2f += overflows;
                } else {
                    s.max_abs = s.max_abs.max(real);
                    s.overflows += overflows;
                }
                s.elements += out.len();
            });
        }
        record_output(&self.node, self.level, self.fixed, &out);
        Ok(tvec!(ring_tensor(out, &shape)?))
    }
}

impl TypedOp for SufRingBinary {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = multi_broadcast(&[inputs[0].shape.to_tvec(), inputs[1].shape.to_tvec()])?;
        Ok(tvec!(i64::fact(shape)))
    }

    as_op!();
}

pub(super) fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = SufAttrs::parse(node)?;
    let kind = match node.op_type.as_str() {
        SUF_RING_ADD if opt_int_attr(node, "sub").unwrap_or(0) != 0 => BinaryKind::Sub,
        SUF_RING_ADD => BinaryKind::Add,
        _ if opt_int_attr(node, "reciprocal_b").unwrap_or(0) != 0 => BinaryKind::MulReciprocal,
        _ => BinaryKind::Mul,
    };
    let name = if matches!(kind, BinaryKind::Add | BinaryKind::Sub) {
        SUF_RING_ADD
    } else {
        SUF_RING_MUL
    };
    let op = SufRingBinary {
        node: attrs.node,
        fixed: attrs.fixed,
        level: attrs.emulation,
        rounding: attrs.rounding,
        kind,
    };
    Ok((
        expand(Infer {
            op,
            name,
            output: DatumType::I64,
            shape: ShapeRule::Broadcast,
            inputs: 2..=2,
        }),
        vec![],
    ))
}
