//! The nonlinear sites as tract ops on ring tensors: GELU, SiLU (elementwise) and Softmax,
//! LayerNorm, RMSNorm (row-wise over the last axis).
//!
//! - Level `sigma` (`SufSigmaActivation`, `SufSigmaRow`): SIGMA's algorithms through the SUF
//!   descriptors of compiler/approx (suf_fixed::sigma holds the arithmetic).
//! - Level `ring` (`SufRingFunction`): the exact function in f64 of the ring value,
//!   re-encoded (suf_fixed::float_fn).
//!
//! Inputs: x (ring or float), then gamma [, beta] for the norms, or an optional float mask
//! bias for softmax (docs/ring-transport.md). The output is an i64 ring tensor.

use super::ring_io::{record_output, ring_tensor, ring_values};
use super::{float_attr, string_attr, SufAttrs};
use crate::options::Emulation;
use crate::{approx, stats, SUF_RING_FUNCTION, SUF_SIGMA_ACTIVATION, SUF_SIGMA_ROW};
use std::sync::Arc;
use suf_fixed::descriptor::Descriptor;
use suf_fixed::float_fn::{self, FloatFn, RowParams};
use suf_fixed::sigma::{
    layernorm_row_traced, rmsnorm_row_traced, softmax_row_traced, SoftmaxTables,
};
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

/// What a nonlinear SUF node computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// SIGMA's GELU/SiLU: one descriptor evaluated per element.
    SigmaActivation(Arc<Descriptor>),
    SigmaSoftmax(Arc<SoftmaxTables>),
    SigmaLayerNorm(Arc<Descriptor>),
    SigmaRmsNorm(Arc<Descriptor>),
    /// Level `ring`: the float function of the ring value.
    Float(FloatFn),
}

impl Algorithm {
    fn is_row(&self) -> bool {
        match self {
            Algorithm::SigmaActivation(_) => false,
            Algorithm::Float(k) => k.is_row(),
            _ => true,
        }
    }

    fn is_norm(&self) -> bool {
        matches!(
            self,
            Algorithm::SigmaLayerNorm(_)
                | Algorithm::SigmaRmsNorm(_)
                | Algorithm::Float(FloatFn::LayerNorm { .. } | FloatFn::RmsNorm { .. })
        )
    }

    fn is_softmax(&self) -> bool {
        matches!(
            self,
            Algorithm::SigmaSoftmax(_) | Algorithm::Float(FloatFn::Softmax)
        )
    }

    fn label(&self) -> String {
        match self {
            Algorithm::SigmaActivation(d) => format!("sigma {} v{}", d.name, d.version),
            Algorithm::SigmaSoftmax(_) => "sigma softmax".into(),
            Algorithm::SigmaLayerNorm(d) => format!("sigma layernorm ({})", d.name),
            Algorithm::SigmaRmsNorm(d) => format!("sigma rmsnorm ({})", d.name),
            Algorithm::Float(k) => format!("float {}", k.name()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SufNonlinear {
    pub node: String,
    pub op_type: &'static str,
    pub fixed: FixedPoint,
    pub level: Emulation,
    pub rounding: Rounding,
    pub algorithm: Algorithm,
}

impl Eq for SufNonlinear {}

impl std::hash::Hash for SufNonlinear {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.node.hash(state);
    }
}

impl Op for SufNonlinear {
    fn name(&self) -> StaticName {
        self.op_type.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} n_bits={} frac_bits={}",
            self.algorithm.label(),
            self.fixed.n_bits(),
            self.fixed.frac_bits()
        )])
    }

    op_as_typed_op!();
}

/// A softmax mask: entries (masked, or the encoded bias) in the mask's own layout and, per
/// axis of the scores, the stride to step through them (0 where the mask broadcasts).
struct MaskView {
    entries: Vec<Option<i64>>,
    strides: Vec<usize>,
}

/// Row-major strides of a `src` shape read at the coordinates of `shape` (same rank): 0 on
/// every axis where `src` broadcasts (size 1 against a larger one).
fn strides_of(src: &[usize], shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; src.len()];
    let mut acc = 1;
    for d in (0..src.len()).rev() {
        strides[d] = if src[d] == 1 && shape[d] != 1 { 0 } else { acc };
        acc *= src[d];
    }
    strides
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

impl SufNonlinear {
    fn param(&self, t: &Tensor, scale_bits: u32, what: &str) -> TractResult<Vec<i64>> {
        ensure!(
            t.datum_type() != DatumType::I64,
            "SUF node {}: {what} must be a float parameter",
            self.node
        );
        ring_values(t, self.fixed, self.rounding, scale_bits, &self.node, what)
    }

    /// Per score: masked, or the encoded bias to add (docs/ring-transport.md).
    fn mask(&self, t: &Tensor, shape: &[usize]) -> TractResult<Vec<Option<i64>>> {
        let t = t
            .broadcast_to_shape(shape)
            .with_context(|| format!("SUF node {}: mask bias does not broadcast", self.node))?;
        self.encode_mask(&t)
    }

    /// The mask entries of `t`, in its own layout.
    fn encode_mask(&self, t: &Tensor) -> TractResult<Vec<Option<i64>>> {
        let t = t.cast_to::<f64>()?;
        let plain = t.try_as_plain_ram()?;
        let bound = self.fixed.real_bound();
        let xs = plain.as_slice::<f64>()?;
        let mut out = Vec::with_capacity(xs.len());
        for &b in xs {
            out.push(if b < -bound {
                None
            } else if b == 0.0 {
                Some(0)
            } else if b.is_nan() || b >= bound {
                bail!(
                    "SUF node {}: attention-mask bias {b} is neither a mask fill (below -{bound}) nor a value the ring holds",
                    self.node
                )
            } else {
                Some(
                    self.fixed
                        .encode(b, self.rounding)
                        .map_err(|e| anyhow!("SUF node {}: mask bias: {e}", self.node))?,
                )
            });
        }
        Ok(out)
    }

    /// The mask encoded once at its own (broadcast) shape, read through strides, instead
    /// of an entry per score: the same entries, in the same order of first use, so the
    /// same values and the same first error as `mask`. A mask that does not broadcast
    /// (or is not a float) takes `mask` itself, for its error.
    fn mask_view(&self, t: &Tensor, shape: &[usize]) -> TractResult<MaskView> {
        let rank = shape.len();
        let fits = t.rank() <= rank
            && t.datum_type().is_float()
            && t.shape()
                .iter()
                .zip(&shape[rank - t.rank()..])
                .all(|(&s, &d)| s == 1 || s == d);
        if !fits {
            return Ok(MaskView {
                entries: self.mask(t, shape)?,
                strides: strides_of(shape, shape),
            });
        }
        let mut src = vec![1usize; rank];
        src[rank - t.rank()..].copy_from_slice(t.shape());
        Ok(MaskView {
            entries: self.encode_mask(t)?,
            strides: strides_of(&src, shape),
        })
    }

    fn eval_rows(&self, inputs: &[TValue], q: &[i64], c: usize) -> TractResult<Vec<i64>> {
        let (n, f) = (self.fixed.n_bits(), self.fixed.frac_bits());
        let sigma_err = |e: suf_fixed::sigma::SigmaError| anyhow!("SUF node {}: {e}", self.node);
        let float_err = |e: float_fn::FloatFnError| anyhow!("SUF node {}: {e}", self.node);
        let mut out = Vec::with_capacity(q.len());
        let mut internal = Internal::default();
        if self.algorithm.is_softmax() {
            let shape = inputs[0].shape();
            let mask = match inputs.get(1) {
                Some(m) => Some(self.mask_view(m, shape)?),
                None => None,
            };
            // Buffers reused from row to row.
            let (mut biased, mut masked) = (Vec::with_capacity(c), vec![false; c]);
            let mut scratch = Vec::with_capacity(c);
            let params = RowParams::default();
            let outer = &shape[..shape.len() - 1];
            let mut index = vec![0usize; outer.len()];
            for (r, row) in q.chunks(c).enumerate() {
                let row: &[i64] = match &mask {
                    Some(m) => {
                        let mut rem = r;
                        for d in (0..outer.len()).rev() {
                            index[d] = rem % outer[d];
                            rem /= outer[d];
                        }
                        let base: usize = index.iter().zip(&m.strides).map(|(i, s)| i * s).sum();
                        let step = m.strides[outer.len()];
                        biased.clear();
                        for (j, (&v, masked)) in row.iter().zip(masked.iter_mut()).enumerate() {
                            let (v, is_masked) = match m.entries[base + j * step] {
                                Some(b) => (self.fixed.wrap(v as i128 + b as i128), false),
                                None => (0, true),
                            };
                            biased.push(v);
                            *masked = is_masked;
                        }
                        &biased
                    }
                    None => row,
                };
                match &self.algorithm {
                    Algorithm::SigmaSoftmax(tables) => {
                        let (y, need) =
                            softmax_row_traced(row, &masked, tables, n, f).map_err(sigma_err)?;
                        internal.note(need, n);
                        out.extend(y);
                    }
                    Algorithm::Float(k) => float_fn::row_into(
                        *k,
                        self.fixed,
                        self.rounding,
                        row,
                        Some(&masked),
                        &params,
                        &mut scratch,
                        &mut out,
                    )
                    .map_err(float_err)?,
                    _ => unreachable!("softmax algorithms only"),
                }
            }
        } else {
            let gamma_t = inputs.get(1).with_context(|| {
                format!("SUF node {}: a norm takes x, gamma [, beta]", self.node)
            })?;
            let gamma = self.param(gamma_t, f, "gamma")?;
            ensure!(
                gamma.len() == c,
                "SUF node {}: gamma has {} values for rows of {c}",
                self.node,
                gamma.len()
            );
            let beta_scale = match self.algorithm {
                Algorithm::Float(_) => f,
                _ => 2 * f,
            };
            let beta = match inputs.get(2) {
                Some(b) => self.param(b, beta_scale, "beta")?,
                None => vec![0; c],
            };
            ensure!(
                beta.len() == c,
                "SUF node {}: beta has {} values for rows of {c}",
                self.node,
                beta.len()
            );
            let params = RowParams {
                gamma: gamma.iter().map(|&g| self.fixed.decode(g)).collect(),
                beta: beta.iter().map(|&b| self.fixed.decode(b)).collect(),
            };
            let mut scratch = Vec::with_capacity(c);
            for row in q.chunks(c) {
                match &self.algorithm {
                    Algorithm::SigmaLayerNorm(rsqrt) => {
                        let (y, need) = layernorm_row_traced(row, &gamma, &beta, rsqrt, n, f)
                            .map_err(sigma_err)?;
                        internal.note(need, n);
                        out.extend(y);
                    }
                    Algorithm::SigmaRmsNorm(rsqrt) => {
                        ensure!(
                            inputs.len() < 3,
                            "SUF node {}: SIGMA's RMSNorm takes no beta",
                            self.node
                        );
                        let (y, need) =
                            rmsnorm_row_traced(row, &gamma, rsqrt, n, f).map_err(sigma_err)?;
                        internal.note(need, n);
                        out.extend(y);
                    }
                    Algorithm::Float(k) => float_fn::row_into(
                        *k,
                        self.fixed,
                        self.rounding,
                        row,
                        None,
                        &params,
                        &mut scratch,
                        &mut out,
                    )
                    .map_err(float_err)?,
                    _ => unreachable!("norm algorithms only"),
                }
            }
        }
        if stats::enabled() && !matches!(self.algorithm, Algorithm::Float(_)) {
            stats::record(&self.node, |s| {
                s.internal_bits = s.internal_bits.max(Some(internal.need));
                s.internal_overflows += internal.overflows;
            });
        }
        Ok(out)
    }
}

impl EvalOp for SufNonlinear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.eval_on_host(inputs)
    }
}

impl SufNonlinear {
    /// The op on host tensors: what `eval` computes; the GPU op of level `ring` calls it for a
    /// tensor whose rounding it cannot certify (suf-gpu's ring_fn.rs).
    pub fn eval_on_host(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs
            .first()
            .with_context(|| format!("SUF node {}: no input", self.node))?;
        let f = self.fixed.frac_bits();
        let mut q = ring_values(x, self.fixed, self.rounding, f, &self.node, "input")?;
        if stats::enabled() {
            let max_q = q.iter().fold(0u64, |m, v| m.max(v.unsigned_abs()));
            stats::record(&self.node, |s| {
                s.max_abs = s.max_abs.max(self.fixed.decode(max_q as i64).abs());
                s.elements += q.len();
            });
        }
        let out = if self.algorithm.is_row() {
            let c = *x
                .shape()
                .last()
                .with_context(|| format!("SUF node {}: a row op needs rank >= 1", self.node))?;
            ensure!(
                c > 0,
                "SUF node {}: rows of width 0 have nothing to normalise",
                self.node
            );
            self.eval_rows(&inputs, &q, c)?
        } else {
            match &self.algorithm {
                Algorithm::SigmaActivation(table) => {
                    for v in q.iter_mut() {
                        *v = self.fixed.wrap(table.eval(*v) as i128);
                    }
                }
                Algorithm::Float(k) => {
                    float_fn::activation_slice(*k, self.fixed, self.rounding, &mut q)
                        .map_err(|e| anyhow!("SUF node {}: {e}", self.node))?
                }
                _ => unreachable!("elementwise algorithms only"),
            }
            q
        };
        record_output(&self.node, self.level, self.fixed, &out);
        Ok(tvec!(ring_tensor(out, x.shape())?))
    }
}

impl TypedOp for SufNonlinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i64::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct NonlinearInference(SufNonlinear);

impl Expansion for NonlinearInference {
    fn name(&self) -> StaticName {
        self.0.op_type.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let a = &self.0.algorithm;
        let arity = if a.is_norm() {
            2..=3
        } else if a.is_softmax() {
            1..=2
        } else {
            1..=1
        };
        ensure!(
            arity.contains(&inputs.len()),
            "SUF node {}: {} takes {arity:?} inputs, got {}",
            self.0.node,
            self.0.op_type,
            inputs.len()
        );
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i64::datum_type())?;
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

fn table(node: &NodeProto, attr: &str) -> TractResult<Arc<Descriptor>> {
    let name = string_attr(node, attr)
        .with_context(|| format!("SUF node {}: missing attribute {attr}", node.name))?;
    approx::descriptor(&name).map_err(|e| anyhow!("SUF node {}: {e:#}", node.name))
}

fn eps(node: &NodeProto) -> TractResult<f64> {
    float_attr(node, "epsilon")
        .map(f64::from)
        .with_context(|| format!("SUF node {}: missing attribute epsilon", node.name))
}

fn algorithm(node: &NodeProto) -> TractResult<(&'static str, Algorithm)> {
    let function = string_attr(node, "function");
    Ok(match node.op_type.as_str() {
        SUF_SIGMA_ACTIVATION => (
            SUF_SIGMA_ACTIVATION,
            Algorithm::SigmaActivation(table(node, "descriptor")?),
        ),
        SUF_SIGMA_ROW => {
            let a = match function.as_deref() {
                Some("softmax") => {
                    let tables = SoftmaxTables::new(
                        (*table(node, "nexp_hi")?).clone(),
                        (*table(node, "nexp_lo")?).clone(),
                        (*table(node, "reciprocal")?).clone(),
                    )
                    .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?;
                    Algorithm::SigmaSoftmax(Arc::new(tables))
                }
                Some("layernorm") => Algorithm::SigmaLayerNorm(table(node, "rsqrt")?),
                Some("rmsnorm") => Algorithm::SigmaRmsNorm(table(node, "rsqrt")?),
                other => bail!("SUF node {}: unknown row function {other:?}", node.name),
            };
            (SUF_SIGMA_ROW, a)
        }
        _ => {
            let k = match function.as_deref() {
                Some("gelu_erf") => FloatFn::GeluErf,
                Some("gelu_tanh") => FloatFn::GeluTanh,
                Some("silu") => FloatFn::Silu,
                Some("softmax") => FloatFn::Softmax,
                Some("layernorm") => FloatFn::LayerNorm { eps: eps(node)? },
                Some("rmsnorm") => FloatFn::RmsNorm { eps: eps(node)? },
                other => bail!("SUF node {}: unknown float function {other:?}", node.name),
            };
            (SUF_RING_FUNCTION, Algorithm::Float(k))
        }
    })
}

pub(super) fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = SufAttrs::parse(node)?;
    let (op_type, algorithm) = algorithm(node)?;
    let op = SufNonlinear {
        node: attrs.node,
        op_type,
        fixed: attrs.fixed,
        level: attrs.emulation,
        rounding: attrs.rounding,
        algorithm,
    };
    Ok((expand(NonlinearInference(op)), vec![]))
}
