//! `SufQuantize`: the fused encode + wrap + decode after an op (every level's workhorse).

use super::SufAttrs;
use crate::{stats, SUF_QUANTIZE, SUF_QUANTIZE_BIAS};
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

/// The fused encode + wrap + decode of emulation level `output`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// q(q(x) + bias) over the last axis: a linear layer's product and bias encodings in one
/// pass (see `fuse`). The f32 addition is the one a separate Add would compute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SufQuantizeBias(pub SufQuantize);

impl Op for SufQuantizeBias {
    fn name(&self) -> StaticName {
        SUF_QUANTIZE_BIAS.into()
    }

    op_as_typed_op!();
}

impl EvalOp for SufQuantizeBias {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let q = &self.0;
        let bias = inputs.pop().context("SufQuantizeBias takes x and bias")?;
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let mut t = inputs
            .pop()
            .context("SufQuantizeBias takes x and bias")?
            .into_tensor();
        ensure!(
            t.datum_type() == DatumType::F32,
            "SUF node {}: expects f32",
            q.node
        );
        let c = *t.shape().last().unwrap_or(&1);
        ensure!(
            bias.len() == c,
            "SUF node {}: bias of {} for rows of {c}",
            q.node,
            bias.len()
        );
        {
            let mut plain = t.try_as_plain_ram_mut()?;
            let xs = plain.as_slice_mut::<f32>()?;
            let fail = |e| {
                anyhow!(
                    "SUF node {}: {e} (the fixed-point input must be finite)",
                    q.node
                )
            };
            for (r, row) in xs.chunks_mut(c).enumerate() {
                let at = |suf_fixed::NonFiniteAt(i)| suf_fixed::NonFiniteAt(r * c + i);
                // Both encodings are recorded: the product's own range (before its wrap) and
                // the biased sum's, so a product that wraps is visible even if the bias hides it.
                let before = stats::enabled().then(|| stats::scan_f32(row, q.fixed.real_bound()));
                q.fixed
                    .quantize_slice_f32(row, q.rounding)
                    .map_err(at)
                    .map_err(fail)?;
                row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
                if let Some((max_product, product_overflows)) = before {
                    let (max_abs, overflows) = stats::scan_f32(row, q.fixed.real_bound());
                    stats::record(&q.node, |s| {
                        s.max_abs = s.max_abs.max(max_abs).max(max_product);
                        s.overflows += overflows + product_overflows;
                        s.elements += row.len();
                    });
                }
                q.fixed
                    .quantize_slice_f32(row, q.rounding)
                    .map_err(at)
                    .map_err(fail)?;
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for SufQuantizeBias {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct QuantizeBiasInference(SufQuantizeBias);

impl Expansion for QuantizeBiasInference {
    fn name(&self) -> StaticName {
        SUF_QUANTIZE_BIAS.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

pub(super) fn parse_bias(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let op = SufQuantizeBias(SufQuantize::from_node(node)?);
    Ok((expand(QuantizeBiasInference(op)), vec![]))
}
