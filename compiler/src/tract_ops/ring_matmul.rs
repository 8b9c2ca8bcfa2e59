//! `SufRingMatMul`: a MatMul/Gemm (and its bias) computed in the ring, levels `ring` and
//! `sigma`. Operands are ring tensors (i64) or floats encoded at scale f, multiplied
//! exactly at 2f, the bias is added at 2f, the sum wraps to n bits and is truncated by
//! `shift` bits (suf_fixed::matmul). The output is an i64 ring tensor.

use super::ring_io::{record_output, ring_tensor, ring_values, ring_values_cow};
use super::{opt_int_attr, SufAttrs};
use crate::options::Emulation;
use crate::{stats, SUF_RING_MATMUL};
use std::borrow::Cow;
use std::sync::Arc;
use suf_fixed::matmul::{ProductStats, RingMatMul, Strided};
use suf_fixed::{pow2, FixedPoint, Rounding};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};
use tract_onnx::tract_hir::ops::matmul::compute_shapes;

#[derive(Debug, Clone)]
pub struct SufRingMatMul {
    pub node: String,
    pub fixed: FixedPoint,
    pub level: Emulation,
    /// Encoding of operands that are not already on the grid, and of the bias at 2f.
    pub encoding: Rounding,
    /// How the 2f sum returns to scale f.
    pub truncation: Rounding,
    pub shift: u32,
    /// B is stored [N, K] (Gemm's transB).
    pub trans_b: bool,
    /// Multiplier applied after truncation, then truncated by f again: SIGMA's
    /// `T(2^f / sqrt(d))` for attention heads whose sqrt(d) is not a power of two.
    pub post_multiplier: Option<i64>,
    /// B encoded once when it is a constant (the weights), instead of at every run: the
    /// ring values and their f64 copy for the exact f64 GEMM.
    pub b_encoded: Option<Arc<(Vec<i64>, Vec<f64>)>>,
}

impl PartialEq for SufRingMatMul {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.node,
            self.fixed,
            self.encoding,
            self.truncation,
            self.shift,
            self.trans_b,
            self.post_multiplier,
        ) == (
            &o.node,
            o.fixed,
            o.encoding,
            o.truncation,
            o.shift,
            o.trans_b,
            o.post_multiplier,
        )
    }
}

impl Eq for SufRingMatMul {}

impl std::hash::Hash for SufRingMatMul {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.node.hash(state);
        self.shift.hash(state);
    }
}

impl SufRingMatMul {
    pub fn from_node(node: &NodeProto) -> TractResult<Self> {
        let attrs = SufAttrs::parse(node)?;
        let f = attrs.fixed.frac_bits();
        let shift = opt_int_attr(node, "shift").unwrap_or(f as i64);
        let shift = u32::try_from(shift)
            .ok()
            .filter(|s| *s < attrs.fixed.n_bits())
            .with_context(|| format!("SUF node {}: shift {shift} out of range", node.name))?;
        let truncation = super::string_attr(node, "truncation")
            .map(|s| s.parse::<Rounding>())
            .transpose()
            .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?
            .unwrap_or(Rounding::Floor);
        Ok(SufRingMatMul {
            node: attrs.node,
            fixed: attrs.fixed,
            level: attrs.emulation,
            encoding: attrs.rounding,
            truncation,
            shift,
            trans_b: opt_int_attr(node, "trans_b").unwrap_or(0) != 0,
            post_multiplier: opt_int_attr(node, "post_multiplier"),
            b_encoded: None,
        })
    }

    fn encode<'t>(&self, t: &'t Tensor, what: &str) -> TractResult<Cow<'t, [i64]>> {
        let f = self.fixed.frac_bits();
        ring_values_cow(t, self.fixed, self.encoding, f, &self.node, what)
    }

    fn encode_weights(&self, t: &Tensor) -> TractResult<Arc<(Vec<i64>, Vec<f64>)>> {
        let q = self.encode(t, "operand B")?.into_owned();
        let f = q.iter().map(|&v| v as f64).collect();
        Ok(Arc::new((q, f)))
    }
}

impl Op for SufRingMatMul {
    fn name(&self) -> StaticName {
        SUF_RING_MATMUL.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "n_bits={} frac_bits={} shift={} truncation={} trans_b={}",
            self.fixed.n_bits(),
            self.fixed.frac_bits(),
            self.shift,
            self.truncation,
            self.trans_b
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for SufRingMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            (2..=3).contains(&inputs.len()),
            "SUF node {}: ring MatMul takes A, B and an optional bias",
            self.node
        );
        let (a_shape, b_shape) = (inputs[0].shape().to_vec(), inputs[1].shape().to_vec());
        ensure!(
            a_shape.len() >= 2 && b_shape.len() >= 2,
            "SUF node {}: ring MatMul needs operands of rank >= 2, got {a_shape:?} x {b_shape:?}",
            self.node
        );
        let (a_full, b_full, _, c_shape) = compute_shapes(
            a_shape.clone().into(),
            b_shape.clone().into(),
            false,
            self.trans_b,
            false,
        )?;
        let a = self.encode(&inputs[0], "operand A")?;
        let (b, b_f64): (Cow<[i64]>, _) = match &self.b_encoded {
            Some(b) => (Cow::Borrowed(&b.0[..]), Some(&b.1[..])),
            None => (self.encode(&inputs[1], "operand B")?, None),
        };
        let bias = match inputs.get(2) {
            Some(t) => {
                ensure!(
                    t.datum_type() != DatumType::I64,
                    "SUF node {}: the bias must be a float tensor (it is encoded at scale 2f)",
                    self.node
                );
                let two_f = 2 * self.fixed.frac_bits();
                Some(ring_values(
                    t,
                    self.fixed,
                    self.encoding,
                    two_f,
                    &self.node,
                    "bias",
                )?)
            }
            None => None,
        };
        let rank = c_shape.len();
        let (m, k) = (a_full[rank - 2], a_full[rank - 1]);
        let n = c_shape[rank - 1];
        if let Some(bias) = &bias {
            ensure!(
                bias.len() == n,
                "SUF node {}: bias has {} values for {n} output columns",
                self.node,
                bias.len()
            );
        }
        let batch: Vec<usize> = c_shape[..rank - 2].to_vec();
        let a_strides = batch_strides(&a_full[..rank - 2], m * k);
        let b_strides = batch_strides(&b_full[..rank - 2], k * n);
        let op = RingMatMul {
            fixed: self.fixed,
            truncation: self.truncation,
            shift: self.shift,
        };
        let count: usize = batch.iter().product();
        let mut out = vec![0i64; count * m * n];
        let mut total = ProductStats::default();
        // B shared by every batch element (the weights): A's batch is contiguous, so the
        // whole batch is one product of count * m rows. Every element is the same exact
        // integer either way (suf_fixed::matmul is exact on both of its paths).
        let (count, m) = if count > 1 && b_strides.iter().all(|&s| s == 0) {
            (1, count * m)
        } else {
            (count, m)
        };
        let (batch, a_strides, b_strides) = if count == 1 {
            (vec![], vec![], vec![])
        } else {
            (batch, a_strides, b_strides)
        };
        // Both operands as f64 once for the whole batch, when the f64 GEMM is exact for
        // every batch element (otherwise `run_with` decides, and converts, per element).
        let max_abs = |q: &[i64]| q.iter().fold(0u64, |m, v| m.max(v.unsigned_abs()));
        let exact = (max_abs(&a) as u128) * (max_abs(&b) as u128) * (k as u128) < 1u128 << 53;
        let a_f64: Option<Vec<f64>> =
            (exact && count > 1).then(|| a.iter().map(|&v| v as f64).collect());
        let b_converted: Option<Vec<f64>> =
            (exact && count > 1 && b_f64.is_none()).then(|| b.iter().map(|&v| v as f64).collect());
        let b_f64 = b_f64.or(b_converted.as_deref());
        let mut index = vec![0usize; batch.len()];
        for (bi, chunk) in out.chunks_mut(m * n).enumerate() {
            let mut rem = bi;
            for d in (0..batch.len()).rev() {
                index[d] = rem % batch[d];
                rem /= batch[d];
            }
            let a_off: usize = index.iter().zip(&a_strides).map(|(i, s)| i * s).sum();
            let b_off: usize = index.iter().zip(&b_strides).map(|(i, s)| i * s).sum();
            let b_f = b_f64.map(|bf| &bf[b_off..b_off + k * n]);
            let a_f = a_f64.as_ref().map(|af| &af[a_off..a_off + m * k]);
            let av = Strided {
                data: &a[a_off..a_off + m * k],
                rows: m,
                cols: k,
                row_stride: k as isize,
                col_stride: 1,
            };
            let bv = if self.trans_b {
                Strided {
                    data: &b[b_off..b_off + k * n],
                    rows: k,
                    cols: n,
                    row_stride: 1,
                    col_stride: k as isize,
                }
            } else {
                Strided {
                    data: &b[b_off..b_off + k * n],
                    rows: k,
                    cols: n,
                    row_stride: n as isize,
                    col_stride: 1,
                }
            };
            let stats = op
                .run_with(av, bv, a_f, b_f, bias.as_deref(), chunk)
                .map_err(|e| anyhow!("SUF node {}: {e}", self.node))?;
            total.merge(stats);
        }
        if let Some(c) = self.post_multiplier {
            let f = self.fixed.frac_bits();
            for v in out.iter_mut() {
                let scaled = self.fixed.wrap(*v as i128 * c as i128);
                *v = self
                    .fixed
                    .wrap(suf_fixed::matmul::truncate(scaled, f, self.truncation) as i128);
            }
        }
        if stats::enabled() {
            let inv = pow2(-(self.fixed.frac_bits() as i32));
            let max_out = out.iter().fold(0f64, |m, &v| m.max((v as f64 * inv).abs()));
            stats::record(&self.node, |s| {
                s.max_abs = s.max_abs.max(max_out);
                // The output is a wrapped ring value: overflow shows at 2f, not here.
                s.max_abs_2f = Some(s.max_abs_2f.unwrap_or(0.0).max(total.max_abs_real));
                s.overflows_2f += total.overflows;
                s.elements += total.elements;
            });
        }
        record_output(&self.node, self.level, self.fixed, &out);
        Ok(tvec!(ring_tensor(out, &c_shape)?))
    }
}

/// Element strides of each batch axis of a contiguous [batch.., rows, cols] tensor, zero
/// where the axis is broadcast (size 1).
fn batch_strides(dims: &[usize], matrix: usize) -> Vec<usize> {
    let mut strides = vec![0; dims.len()];
    let mut acc = matrix;
    for d in (0..dims.len()).rev() {
        strides[d] = if dims[d] == 1 { 0 } else { acc };
        acc *= dims[d];
    }
    strides
}

impl TypedOp for SufRingMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (_, _, _, c) = compute_shapes(
            inputs[0].shape.to_tvec(),
            inputs[1].shape.to_tvec(),
            false,
            self.trans_b,
            false,
        )?;
        Ok(tvec!(i64::fact(c)))
    }

    as_op!();
}

/// The inference-time face of the op: shape rules, then the typed op above.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RingMatMulInference(SufRingMatMul);

impl Expansion for RingMatMulInference {
    fn name(&self) -> StaticName {
        SUF_RING_MATMUL.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i64::datum_type())?;
        let trans_b = self.0.trans_b;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            let (_, _, _, c) = compute_shapes(a, b, false, trans_b, false)?;
            s.equals(&outputs[0].shape, c)
        })?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut op = self.0.clone();
        if let Some(k) = model.outlet_fact(inputs[1])?.konst.clone() {
            op.b_encoded = Some(op.encode_weights(&k)?);
        }
        model.wire_node(prefix, op, inputs)
    }
}

pub(super) fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    ensure!(
        (2..=3).contains(&node.input.len()),
        "SUF node {}: SufRingMatMul takes A, B and an optional bias",
        node.name
    );
    let op = SufRingMatMul::from_node(node)?;
    Ok((expand(RingMatMulInference(op)), vec![]))
}
