//! `SufQuantize`: the fused encode + wrap + decode after an op (every level's workhorse).

use super::SufAttrs;
use crate::{stats, SUF_QUANTIZE};
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_hir::ops::expandable::expand;

/// The fused encode + wrap + decode of emulation level `output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SufQuantize {
    pub node: String,
    pub fixed: FixedPoint,
    pub rounding: Rounding,
}

impl SufQuantize {
    /// Parses the attributes `suf-compile` writes (see `pass::suf_attributes`).
    pub fn from_node(node: &NodeProto) -> TractResult<Self> {
        let attrs = SufAttrs::parse(node)?;
        Ok(SufQuantize {
            node: attrs.node,
            fixed: attrs.fixed,
            rounding: attrs.rounding,
        })
    }
}

impl ElementWiseMiniOp for SufQuantize {
    fn name(&self) -> String {
        SUF_QUANTIZE.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "n_bits={} frac_bits={} rounding={}",
            self.fixed.n_bits(),
            self.fixed.frac_bits(),
            self.rounding
        )])
    }

    fn eval_in_place(&self, t: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        match t.datum_type() {
            DatumType::F32 => {
                let mut plain = t.try_as_plain_ram_mut()?;
                let xs = plain.as_slice_mut::<f32>()?;
                if stats::enabled() {
                    let (max_abs, overflows) = stats::scan_f32(xs, self.fixed.real_bound());
                    stats::record(&self.node, |s| {
                        s.max_abs = s.max_abs.max(max_abs);
                        s.overflows += overflows;
                        s.elements += xs.len();
                    });
                }
                self.fixed
                    .quantize_slice_f32(xs, self.rounding)
                    .map_err(|e| {
                        anyhow!(
                            "SUF node {}: {e} (the fixed-point input must be finite)",
                            self.node
                        )
                    })
            }
            DatumType::F64 => {
                let mut plain = t.try_as_plain_ram_mut()?;
                for x in plain.as_slice_mut::<f64>()? {
                    *x = self
                        .fixed
                        .quantize(*x, self.rounding)
                        .map_err(|e| anyhow!("SUF node {}: {e}", self.node))?;
                }
                Ok(())
            }
            dt => bail!("SUF node {}: expects float input, got {dt:?}", self.node),
        }
    }

    fn eval_out_of_place(&self, t: &Tensor, out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let mut t = t.clone();
        self.eval_in_place(&mut t, out_dt)?;
        Ok(t)
    }
}

pub(super) fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let op = SufQuantize::from_node(node)?;
    Ok((expand(ElementWiseOp(Box::new(op))), vec![]))
}
