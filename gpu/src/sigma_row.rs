//! Level `sigma`'s row sites on the GPU: `SufSigmaRow` (SIGMA's softmax with an optional
//! attention-mask bias, LayerNorm, RMSNorm) over i64 ring tensors, one block per row
//! (suf_rows.cu), with the CPU op's statistics and errors. The tables are packed into one
//! device buffer, uploaded once.

use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use suf_compiler::stats;
use suf_compiler::tract_ops::{Algorithm, SufNonlinear};
use suf_fixed::descriptor::Descriptor;
use suf_fixed::sigma::{check_norm, SoftmaxTables};
use tract_core::internal::*;
use tract_gpu::tensor::{DeviceTensor, DeviceTensorExt, IntoDevice};
use tract_gpu::turn_handler::make_tensor_for_node;

use crate::kernels::{FlatDescriptor, MAX_RANK};
use crate::ring::{record_output, ring_operand};
use crate::row_kernels::{self, MaskArg, RowRing, RowStatus};

#[derive(Debug, Clone)]
enum RowKind {
    Softmax(Arc<SoftmaxTables>),
    LayerNorm(Arc<Descriptor>),
    RmsNorm(Arc<Descriptor>),
}

#[derive(Debug, Clone)]
pub struct GpuSufSigmaRow {
    pub op: SufNonlinear,
    kind: RowKind,
    /// The packed descriptors (softmax: nExp-hi, nExp-lo, reciprocal; norms: rsqrt) and
    /// where each starts.
    tables: Arc<Vec<i64>>,
    at: [i64; 3],
    device: Arc<OnceLock<std::result::Result<DeviceTensor, String>>>,
}

/// Element strides of a mask of shape `src` read at the coordinates of `shape`: 0 where it
/// broadcasts; None when it does not broadcast.
pub fn mask_strides(src: &[usize], shape: &[usize]) -> Option<Vec<usize>> {
    if src.len() > shape.len() {
        return None;
    }
    let mut padded = vec![1usize; shape.len() - src.len()];
    padded.extend_from_slice(src);
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        if padded[d] != 1 && padded[d] != shape[d] {
            return None;
        }
        strides[d] = if padded[d] == 1 && shape[d] != 1 {
            0
        } else {
            acc
        };
        acc *= padded[d];
    }
    Some(strides)
}

/// A softmax node's attention-mask bias (its second input, if any) on the device, with its
/// strides at the scores' coordinates.
pub(crate) fn device_mask<'a>(
    node: &str,
    inputs: &'a TVec<TValue>,
    x: &DeviceTensor,
) -> TractResult<Option<MaskArg<'a>>> {
    let Some(m) = inputs.get(1) else {
        return Ok(None);
    };
    let bias = m.to_device_tensor()?;
    ensure!(
        bias.datum_type() == DatumType::F32,
        "SUF node {node}: the mask bias must be f32 on the device, got {:?}",
        bias.datum_type()
    );
    let strides = mask_strides(bias.shape(), x.shape())
        .with_context(|| format!("SUF node {node}: mask bias does not broadcast"))?;
    Ok(Some(MaskArg { bias, strides }))
}

impl GpuSufSigmaRow {
    /// The device op for a SIGMA row node whose inputs the kernels read (x ring or f32;
    /// mask, gamma, beta f32); None otherwise.
    pub fn new(op: &SufNonlinear, inputs: &[&TypedFact]) -> TractResult<Option<Self>> {
        let dt = |ix: usize| inputs.get(ix).map(|f| f.datum_type);
        let x_ok = matches!(dt(0), Some(DatumType::I64 | DatumType::F32));
        let rest_f32 = (1..inputs.len()).all(|ix| dt(ix) == Some(DatumType::F32));
        if !x_ok || !rest_f32 || inputs.iter().any(|f| f.rank() > MAX_RANK) {
            return Ok(None);
        }
        let (kind, flat) = match &op.algorithm {
            Algorithm::SigmaSoftmax(t) if inputs.len() <= 2 => {
                let flat = [t.nexp_hi(), t.nexp_lo(), t.reciprocal()]
                    .map(FlatDescriptor::new)
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                (RowKind::Softmax(t.clone()), flat)
            }
            Algorithm::SigmaLayerNorm(d) if (2..=3).contains(&inputs.len()) => {
                (RowKind::LayerNorm(d.clone()), vec![FlatDescriptor::new(d)?])
            }
            Algorithm::SigmaRmsNorm(d) if inputs.len() == 2 => {
                (RowKind::RmsNorm(d.clone()), vec![FlatDescriptor::new(d)?])
            }
            _ => return Ok(None),
        };
        let mut tables = vec![];
        let mut at = [0i64; 3];
        for (slot, d) in at.iter_mut().zip(&flat) {
            *slot = tables.len() as i64;
            tables.extend(d.packed());
        }
        Ok(Some(GpuSufSigmaRow {
            op: op.clone(),
            kind,
            tables: Arc::new(tables),
            at,
            device: Arc::new(OnceLock::new()),
        }))
    }

    fn ring(&self) -> RowRing {
        RowRing {
            n_bits: self.op.fixed.n_bits(),
            frac_bits: self.op.fixed.frac_bits(),
            rounding: self.op.rounding,
        }
    }

    fn tables(&self) -> TractResult<&DeviceTensor> {
        self.device
            .get_or_init(|| {
                Tensor::from_shape(&[self.tables.len()], &self.tables)
                    .and_then(|t| t.into_device())
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("SUF node {}: uploading its tables: {e}", self.op.node))
    }

    fn softmax(
        &self,
        tables: &SoftmaxTables,
        inputs: &TVec<TValue>,
        x: &DeviceTensor,
        y: &DeviceTensor,
    ) -> TractResult<RowStatus> {
        let node = &self.op.node;
        let (n, f) = (self.op.fixed.n_bits(), self.op.fixed.frac_bits());
        tables
            .check(n, f)
            .map_err(|e| anyhow!("SUF node {node}: {e}"))?;
        let mask = device_mask(node, inputs, x)?;
        let status = row_kernels::sigma_softmax(
            self.ring(),
            self.tables()?,
            self.at,
            tables.recip_bits(),
            x,
            mask.as_ref(),
            y,
        )
        .map_err(|e| anyhow!("SUF node {node}: {e:#}"))?;
        if let Some(i) = status.bad_at {
            let bound = self.op.fixed.real_bound();
            bail!("SUF node {node}: the attention-mask bias of score {i} is neither a mask fill (below -{bound}) nor a value the ring holds");
        }
        if status.max_live as usize > tables.max_row_len() {
            bail!(
                "SUF node {node}: {}",
                tables.row_too_long(status.max_live as usize)
            );
        }
        Ok(status)
    }

    fn norm(
        &self,
        rsqrt: &Descriptor,
        center: bool,
        inputs: &TVec<TValue>,
        x: &DeviceTensor,
        y: &DeviceTensor,
    ) -> TractResult<RowStatus> {
        let op = &self.op;
        let (n, f) = (op.fixed.n_bits(), op.fixed.frac_bits());
        let c = x.shape().last().copied().unwrap_or(0);
        let label = if center { "layernorm" } else { "rmsnorm" };
        check_norm(rsqrt, label, c, n, f).map_err(|e| anyhow!("SUF node {}: {e}", op.node))?;
        let param = |ix: usize, what: &str, scale: u32| -> TractResult<Option<DeviceTensor>> {
            let Some(t) = inputs.get(ix) else {
                return Ok(None);
            };
            let t = t.to_device_tensor()?;
            ensure!(
                t.datum_type() == DatumType::F32,
                "SUF node {}: {what} must be a float parameter",
                op.node
            );
            ensure!(
                t.len() == c,
                "SUF node {}: {what} has {} values for rows of {c}",
                op.node,
                t.len()
            );
            ring_operand(&op.node, what, op.fixed, op.rounding, scale, t)
        };
        let gamma = param(1, "gamma", f)?
            .with_context(|| format!("SUF node {}: a norm takes x, gamma [, beta]", op.node))?;
        let beta = param(2, "beta", 2 * f)?;
        row_kernels::sigma_norm(
            self.ring(),
            self.tables()?,
            center,
            x,
            &gamma,
            beta.as_ref(),
            y,
        )
        .map_err(|e| anyhow!("SUF node {}: {e:#}", op.node))
    }
}

crate::sigma::sigma_device_op!(GpuSufSigmaRow, "GpuSufSigmaRow", tables);

impl GpuSufSigmaRow {
    fn info_line(&self) -> String {
        let what = match self.kind {
            RowKind::Softmax(_) => "softmax",
            RowKind::LayerNorm(_) => "layernorm",
            RowKind::RmsNorm(_) => "rmsnorm",
        };
        format!("node={} {what}", self.op.node)
    }
}

impl EvalOp for GpuSufSigmaRow {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let op = &self.op;
        let x = inputs
            .first()
            .with_context(|| format!("SUF node {}: no input", op.node))?
            .to_device_tensor()?;
        let f = op.fixed.frac_bits();
        let c = *x
            .shape()
            .last()
            .with_context(|| format!("SUF node {}: a row op needs rank >= 1", op.node))?;
        ensure!(
            c > 0,
            "SUF node {}: rows of width 0 have nothing to normalise",
            op.node
        );
        let encoded = ring_operand(&op.node, "input", op.fixed, op.rounding, f, x)?;
        let x = encoded.as_ref().unwrap_or(x);
        let y = make_tensor_for_node(ctx, DatumType::I64, x.shape())?;
        let status = if x.len() == 0 {
            RowStatus::default()
        } else {
            match &self.kind {
                RowKind::Softmax(t) => self.softmax(t, &inputs, x, &y)?,
                RowKind::LayerNorm(d) => self.norm(d, true, &inputs, x, &y)?,
                RowKind::RmsNorm(d) => self.norm(d, false, &inputs, x, &y)?,
            }
        };
        if stats::enabled() {
            let max_abs = status.max_in * (-(f as f64)).exp2();
            stats::record(&op.node, |s| {
                s.max_abs = s.max_abs.max(max_abs);
                s.elements += x.len();
                s.internal_bits = s.internal_bits.max(Some(status.need));
                s.internal_overflows += status.overflow_rows as usize;
            });
        }
        record_output(&op.node, op.level, op.fixed, &status.ring());
        Ok(tvec!(y.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufSigmaRow {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        crate::ring::ring_fact_of_first(inputs)
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_strides_are_zero_where_the_mask_broadcasts() {
        // scores [2, 3, 4, 4], mask [2, 1, 1, 4] (a padding mask)
        assert_eq!(
            mask_strides(&[2, 1, 1, 4], &[2, 3, 4, 4]),
            Some(vec![4, 0, 0, 1])
        );
        // a causal mask [4, 4] against [2, 3, 4, 4]
        assert_eq!(mask_strides(&[4, 4], &[2, 3, 4, 4]), Some(vec![0, 0, 4, 1]));
        assert_eq!(mask_strides(&[3], &[2, 4]), None);
        assert_eq!(mask_strides(&[1, 2, 4], &[2, 4]), None);
    }
}
