//! Level `sigma`: SIGMA's nonlinear algorithms as tract ops, evaluated through the SUF
//! descriptors of compiler/approx (suf_fixed::sigma holds the arithmetic).
//!
//! - `SufSigmaActivation` (GELU, SiLU): one descriptor evaluated per element.
//! - `SufSigmaRow` (Softmax, LayerNorm, RMSNorm): row-wise over the last axis.
//!
//! Inputs arrive as f32 values; they are encoded at scale f with the node's rounding (the
//! ring values upstream nodes produced are on the grid, so this is exact for them).

use super::{string_attr, SufAttrs};
use crate::{approx, stats, SUF_SIGMA_ACTIVATION, SUF_SIGMA_ROW};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use suf_fixed::descriptor::Descriptor;
use suf_fixed::sigma::{
    layernorm_row_traced, rmsnorm_row_traced, softmax_row_traced, SoftmaxTables,
};
use suf_fixed::{pow2, FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

fn table(node: &NodeProto, attr: &str) -> TractResult<Arc<Descriptor>> {
    let name = string_attr(node, attr)
        .with_context(|| format!("SUF node {}: missing attribute {attr}", node.name))?;
    approx::descriptor(&name).map_err(|e| anyhow!("SUF node {}: {e:#}", node.name))
}

fn encode(fixed: FixedPoint, rounding: Rounding, xs: &[f32], node: &str) -> TractResult<Vec<i64>> {
    let mut q = vec![0f64; xs.len()];
    fixed
        .encode_slice_f32(xs, rounding, &mut q)
        .map_err(|e| anyhow!("SUF node {node}: {e} (the fixed-point input must be finite)"))?;
    Ok(q.into_iter().map(|v| v as i64).collect())
}

fn record_input(node: &str, fixed: FixedPoint, xs: &[f32]) {
    if stats::enabled() {
        let (max_abs, overflows) = stats::scan_f32(xs, fixed.real_bound());
        stats::record(node, |s| {
            s.max_abs = s.max_abs.max(max_abs);
            s.overflows += overflows;
            s.elements += xs.len();
        });
    }
}

// ---- activations ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct SufSigmaActivation {
    pub node: String,
    pub fixed: FixedPoint,
    pub rounding: Rounding,
    pub table: Arc<Descriptor>,
}

impl Eq for SufSigmaActivation {}

impl ElementWiseMiniOp for SufSigmaActivation {
    fn name(&self) -> String {
        SUF_SIGMA_ACTIVATION.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} v{} n_bits={} frac_bits={}",
            self.table.name,
            self.table.version,
            self.fixed.n_bits(),
            self.fixed.frac_bits()
        )])
    }

    fn eval_in_place(&self, t: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        ensure!(
            t.datum_type() == DatumType::F32,
            "SUF node {}: expects f32",
            self.node
        );
        let mut plain = t.try_as_plain_ram_mut()?;
        let xs = plain.as_slice_mut::<f32>()?;
        record_input(&self.node, self.fixed, xs);
        let q = encode(self.fixed, self.rounding, xs, &self.node)?;
        let inv = pow2(-(self.fixed.frac_bits() as i32));
        for (x, q) in xs.iter_mut().zip(q) {
            let y = self.fixed.wrap(self.table.eval(q) as i128);
            *x = (y as f64 * inv) as f32;
        }
        Ok(())
    }

    fn eval_out_of_place(&self, t: &Tensor, out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let mut t = t.clone();
        self.eval_in_place(&mut t, out_dt)?;
        Ok(t)
    }
}

pub(super) fn parse_activation(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = SufAttrs::parse(node)?;
    let op = SufSigmaActivation {
        node: attrs.node,
        fixed: attrs.fixed,
        rounding: attrs.rounding,
        table: table(node, "descriptor")?,
    };
    Ok((expand(ElementWiseOp(Box::new(op))), vec![]))
}

// ---- row operations -----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum RowKind {
    Softmax(Arc<SoftmaxTables>),
    LayerNorm(Arc<Descriptor>),
    RmsNorm(Arc<Descriptor>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SufSigmaRow {
    pub node: String,
    pub fixed: FixedPoint,
    pub rounding: Rounding,
    pub kind: RowKind,
}

impl Eq for SufSigmaRow {}

impl Hash for SufSigmaRow {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.node.hash(state);
    }
}

impl SufSigmaRow {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            RowKind::Softmax(_) => "softmax",
            RowKind::LayerNorm(_) => "layernorm",
            RowKind::RmsNorm(_) => "rmsnorm",
        }
    }

    fn param(&self, t: &TValue, scale_bits: u32, what: &str) -> TractResult<Vec<i64>> {
        let t = t.cast_to::<f32>()?;
        let plain = t.try_as_plain_ram()?;
        plain
            .as_slice::<f32>()?
            .iter()
            .map(|&v| self.fixed.encode_at(v as f64, self.rounding, scale_bits))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("SUF node {}: {what}: {e}", self.node))
    }
}

impl Op for SufSigmaRow {
    fn name(&self) -> StaticName {
        SUF_SIGMA_ROW.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} n_bits={} frac_bits={}",
            self.kind_name(),
            self.fixed.n_bits(),
            self.fixed.frac_bits()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for SufSigmaRow {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].cast_to::<f32>()?;
        let shape = x.shape().to_vec();
        let c = *shape.last().context("SufSigmaRow needs rank >= 1")?;
        let plain = x.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        let (n, f) = (self.fixed.n_bits(), self.fixed.frac_bits());
        let mut out = vec![0f32; xs.len()];
        let inv = pow2(-(f as i32));
        let err = |e: suf_fixed::sigma::SigmaError| anyhow!("SUF node {}: {e}", self.node);
        let mut internal = Internal::default();
        match &self.kind {
            RowKind::Softmax(tables) => {
                // A mask fill (finfo.min, -inf) reaches the softmax in float, outside the ring:
                // those entries take no part, as causal entries take none in SIGMA.
                let bound = -self.fixed.real_bound();
                let finite: Vec<f32> = xs
                    .iter()
                    .map(|&v| if v < bound as f32 { 0.0 } else { v })
                    .collect();
                record_input(&self.node, self.fixed, &finite);
                let q = encode(self.fixed, self.rounding, &finite, &self.node)?;
                for ((row, qrow), orow) in xs.chunks(c).zip(q.chunks(c)).zip(out.chunks_mut(c)) {
                    let masked: Vec<bool> = row.iter().map(|&v| (v as f64) < bound).collect();
                    let (y, need) = softmax_row_traced(qrow, &masked, tables, n, f).map_err(err)?;
                    internal.note(need, n);
                    for (o, y) in orow.iter_mut().zip(y) {
                        *o = (y as f64 * inv) as f32;
                    }
                }
            }
            RowKind::LayerNorm(rsqrt) | RowKind::RmsNorm(rsqrt) => {
                record_input(&self.node, self.fixed, xs);
                let q = encode(self.fixed, self.rounding, xs, &self.node)?;
                let gamma = self.param(&inputs[1], f, "gamma")?;
                ensure!(
                    gamma.len() == c,
                    "SUF node {}: gamma has {} values for rows of {c}",
                    self.node,
                    gamma.len()
                );
                let beta = match (&self.kind, inputs.get(2)) {
                    (RowKind::LayerNorm(_), Some(b)) => self.param(b, 2 * f, "beta")?,
                    _ => vec![0; c],
                };
                for (qrow, orow) in q.chunks(c).zip(out.chunks_mut(c)) {
                    let (y, need) = match &self.kind {
                        RowKind::LayerNorm(_) => {
                            layernorm_row_traced(qrow, &gamma, &beta, rsqrt, n, f)
                        }
                        _ => rmsnorm_row_traced(qrow, &gamma, rsqrt, n, f),
                    }
                    .map_err(err)?;
                    internal.note(need, n);
                    for (o, y) in orow.iter_mut().zip(y) {
                        *o = (y as f64 * inv) as f32;
                    }
                }
            }
        }
        if stats::enabled() {
            stats::record(&self.node, |s| {
                s.internal_bits = s.internal_bits.max(Some(internal.need));
                s.internal_overflows += internal.overflows;
            });
        }
        Ok(tvec!(tensor1(&out).into_shape(&shape)?.into_tvalue()))
    }
}

/// The widest intermediate over a tensor's rows, and the rows that wrapped.
#[derive(Default)]
struct Internal {
    need: u32,
    overflows: usize,
}

impl Internal {
    fn note(&mut self, need: u32, n_bits: u32) {
        self.need = self.need.max(need);
        self.overflows += usize::from(need > n_bits);
    }
}

impl TypedOp for SufSigmaRow {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RowInference(SufSigmaRow);

impl Expansion for RowInference {
    fn name(&self) -> StaticName {
        SUF_SIGMA_ROW.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
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

pub(super) fn parse_row(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = SufAttrs::parse(node)?;
    let kind = match string_attr(node, "function").as_deref() {
        Some("softmax") => {
            let tables = SoftmaxTables::new(
                (*table(node, "nexp_hi")?).clone(),
                (*table(node, "nexp_lo")?).clone(),
                (*table(node, "reciprocal")?).clone(),
            )
            .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?;
            RowKind::Softmax(Arc::new(tables))
        }
        Some("layernorm") => RowKind::LayerNorm(table(node, "rsqrt")?),
        Some("rmsnorm") => RowKind::RmsNorm(table(node, "rsqrt")?),
        other => bail!("SUF node {}: unknown row function {other:?}", node.name),
    };
    let op = SufSigmaRow {
        node: attrs.node,
        fixed: attrs.fixed,
        rounding: attrs.rounding,
        kind,
    };
    Ok((expand(RowInference(op)), vec![]))
}
