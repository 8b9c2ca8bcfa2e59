//! Level `ring`'s nonlinear sites on the GPU: `SufRingFunction` (the f64 function of the ring
//! value, suf_fixed::float_fn) over i64 ring tensors (suf_ring_fn.cu).
//!
//! The level is defined with libm's erf/tanh/exp, which a GPU does not have; the kernels use
//! CUDA's and bound the difference, so each output is either certified to round as the CPU's
//! does or counted. A tensor with any uncertified output is computed again, whole, by the CPU
//! op on host copies of the inputs, and that result is the output: exact either way. The
//! recomputation is rare (an output within about 2^-30 of a rounding boundary) and counted
//! (`host_recomputed`).

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::anyhow;
use suf_compiler::stats;
use suf_compiler::tract_ops::{Algorithm, SufNonlinear};
use suf_fixed::float_fn::FloatFn;
use tract_core::internal::*;
use tract_gpu::tensor::{DeviceTensor, DeviceTensorExt, IntoDevice};
use tract_gpu::turn_handler::make_tensor_for_node;

use crate::kernels::{RingStatus, MAX_RANK};
use crate::ring::{record_output, ring_operand};
use crate::ring_fn_kernels::{self, RingFnStatus};
use crate::row_kernels::RowRing;
use crate::sigma_row::device_mask;

static HOST_RECOMPUTED: AtomicU64 = AtomicU64::new(0);

/// Tensors of level `ring`'s functions this process recomputed on the CPU because an output
/// could not be certified on the GPU.
pub fn host_recomputed() -> u64 {
    HOST_RECOMPUTED.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpuSufRingFunction {
    pub op: SufNonlinear,
    kind: FloatFn,
}

impl GpuSufRingFunction {
    /// The device op for a level-`ring` function node whose inputs the kernels read (x ring
    /// or f32; mask, gamma, beta f32); None otherwise.
    pub fn new(op: &SufNonlinear, inputs: &[&TypedFact]) -> TractResult<Option<Self>> {
        let Algorithm::Float(kind) = op.algorithm else {
            return Ok(None);
        };
        let dt = |ix: usize| inputs.get(ix).map(|f| f.datum_type);
        let x_ok = matches!(dt(0), Some(DatumType::I64 | DatumType::F32));
        let rest_f32 = (1..inputs.len()).all(|ix| dt(ix) == Some(DatumType::F32));
        let arity = match kind {
            FloatFn::GeluErf | FloatFn::GeluTanh | FloatFn::Silu => inputs.len() == 1,
            FloatFn::Softmax => inputs.len() <= 2,
            FloatFn::LayerNorm { .. } => (2..=3).contains(&inputs.len()),
            FloatFn::RmsNorm { .. } => inputs.len() == 2,
        };
        if !x_ok || !rest_f32 || !arity || inputs.iter().any(|f| f.rank() > MAX_RANK) {
            return Ok(None);
        }
        Ok(Some(GpuSufRingFunction {
            op: op.clone(),
            kind,
        }))
    }

    fn ring(&self) -> RowRing {
        RowRing {
            n_bits: self.op.fixed.n_bits(),
            frac_bits: self.op.fixed.frac_bits(),
            rounding: self.op.rounding,
        }
    }

    fn launch(
        &self,
        inputs: &TVec<TValue>,
        x: &DeviceTensor,
        y: &DeviceTensor,
    ) -> TractResult<RingFnStatus> {
        let op = &self.op;
        let node = &op.node;
        let f = op.fixed.frac_bits();
        let at_node = |e: anyhow::Error| anyhow!("SUF node {node}: {e:#}");
        match self.kind {
            FloatFn::GeluErf | FloatFn::GeluTanh | FloatFn::Silu => {
                ring_fn_kernels::activation(self.ring(), self.kind, x, y).map_err(at_node)
            }
            FloatFn::Softmax => {
                let mask = device_mask(node, inputs, x)?;
                ring_fn_kernels::softmax(self.ring(), x, mask.as_ref(), y).map_err(at_node)
            }
            FloatFn::LayerNorm { eps } | FloatFn::RmsNorm { eps } => {
                let c = x.shape().last().copied().unwrap_or(0);
                let param = |ix: usize, what: &str| -> TractResult<Option<DeviceTensor>> {
                    let Some(t) = inputs.get(ix) else {
                        return Ok(None);
                    };
                    let t = t.to_device_tensor()?;
                    ensure!(
                        t.datum_type() == DatumType::F32,
                        "SUF node {node}: {what} must be a float parameter"
                    );
                    ensure!(
                        t.len() == c,
                        "SUF node {node}: {what} has {} values for rows of {c}",
                        t.len()
                    );
                    ring_operand(node, what, op.fixed, op.rounding, f, t)
                };
                let gamma = param(1, "gamma")?
                    .with_context(|| format!("SUF node {node}: a norm takes x, gamma [, beta]"))?;
                let center = matches!(self.kind, FloatFn::LayerNorm { .. });
                // The CPU's RMSNorm has no beta (the arity check admits none).
                let beta = if center { param(2, "beta")? } else { None };
                ring_fn_kernels::norm(self.ring(), center, eps, x, &gamma, beta.as_ref(), y)
                    .map_err(at_node)
            }
        }
    }

    /// The CPU op on host copies of the inputs, its output back on the device.
    fn on_host(&self, inputs: &TVec<TValue>) -> TractResult<TValue> {
        let mut host = tvec![];
        for input in inputs {
            host.push(match input.as_device_tensor() {
                Some(t) => t.to_host()?.into_tvalue(),
                None => input.clone(),
            });
        }
        let out = self.op.eval_on_host(host)?;
        let y = out
            .into_iter()
            .next()
            .with_context(|| format!("SUF node {}: no output", self.op.node))?;
        HOST_RECOMPUTED.fetch_add(1, Ordering::Relaxed);
        Ok(y.into_tensor().into_device()?.into_tensor().into_tvalue())
    }
}

impl Eq for GpuSufRingFunction {}

impl std::hash::Hash for GpuSufRingFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.op.node.hash(state);
    }
}

impl Op for GpuSufRingFunction {
    fn name(&self) -> StaticName {
        "GpuSufRingFunction".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("node={} {}", self.op.node, self.kind.name())])
    }
    op_as_typed_op!();
}

impl EvalOp for GpuSufRingFunction {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let op = &self.op;
        let node = &op.node;
        let x = inputs
            .first()
            .with_context(|| format!("SUF node {node}: no input"))?
            .to_device_tensor()?;
        let f = op.fixed.frac_bits();
        if self.kind.is_row() {
            let c = *x
                .shape()
                .last()
                .with_context(|| format!("SUF node {node}: a row op needs rank >= 1"))?;
            ensure!(
                c > 0,
                "SUF node {node}: rows of width 0 have nothing to normalise"
            );
        }
        let encoded = ring_operand(node, "input", op.fixed, op.rounding, f, x)?;
        let x = encoded.as_ref().unwrap_or(x);
        let y = make_tensor_for_node(ctx, DatumType::I64, x.shape())?;
        if x.len() == 0 {
            return Ok(tvec!(y.into_tensor().into_tvalue()));
        }
        let status = self.launch(&inputs, x, &y)?;
        if let Some(i) = status.bad_mask_at {
            let bound = op.fixed.real_bound();
            bail!("SUF node {node}: the attention-mask bias of score {i} is neither a mask fill (below -{bound}) nor a value the ring holds");
        }
        if let Some(i) = status.inexact_at {
            bail!("SUF node {node}: the ring value at flat index {i} is beyond f64's exact range (2^53): the float function's input would be rounded");
        }
        if let Some(i) = status.nonfinite_at {
            bail!("SUF node {node}: output {i} of the float function is not finite");
        }
        if status.uncertified > 0 {
            // The CPU op records this node's statistics itself.
            return Ok(tvec!(self.on_host(&inputs)?));
        }
        if stats::enabled() {
            let max_abs = status.max_in as f64 * (-(f as f64)).exp2();
            stats::record(node, |s| {
                s.max_abs = s.max_abs.max(max_abs);
                s.elements += x.len();
            });
        }
        let carried = RingStatus {
            max_out: status.max_out,
            ..Default::default()
        };
        record_output(node, op.level, op.fixed, &carried);
        Ok(tvec!(y.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufRingFunction {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        crate::ring::ring_fact_of_first(inputs)
    }
    as_op!();
}
