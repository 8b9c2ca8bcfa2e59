//! Level `sigma`'s elementwise nonlinear sites on the GPU: `SufSigmaActivation` (SIGMA's GELU
//! and SiLU) evaluates its SUF descriptor, uploaded once as data, per element.

use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use suf_compiler::stats;
use suf_compiler::tract_ops::{Algorithm, SufNonlinear};
use tract_core::internal::*;
use tract_gpu::tensor::DeviceTensorExt;
use tract_gpu::turn_handler::make_tensor_for_node;

use crate::kernels::{self, DeviceDescriptor, FlatDescriptor, RingStatus};
use crate::ring::{record_output, ring_operand};

#[derive(Debug, Clone)]
pub struct GpuSufSigmaActivation {
    pub op: SufNonlinear,
    table: Arc<FlatDescriptor>,
    /// Uploaded on first use (the device context exists by then), shared by clones.
    device: Arc<OnceLock<std::result::Result<DeviceDescriptor, String>>>,
}

impl GpuSufSigmaActivation {
    /// The device op for a SIGMA activation node; None for the other algorithms.
    pub fn new(op: &SufNonlinear) -> TractResult<Option<Self>> {
        let Algorithm::SigmaActivation(d) = &op.algorithm else {
            return Ok(None);
        };
        Ok(Some(GpuSufSigmaActivation {
            op: op.clone(),
            table: Arc::new(FlatDescriptor::new(d)?),
            device: Arc::new(OnceLock::new()),
        }))
    }
}

/// The impls every level-sigma device op shares: equal when the CPU op and the uploaded
/// tables are, hashed by node, named, described by its `info_line`.
macro_rules! sigma_device_op {
    ($ty:ident, $name:literal, $tables:ident) => {
        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.op == other.op && self.$tables == other.$tables
            }
        }

        impl Eq for $ty {}

        impl std::hash::Hash for $ty {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.op.node.hash(state);
            }
        }

        impl Op for $ty {
            fn name(&self) -> StaticName {
                $name.into()
            }
            fn info(&self) -> TractResult<Vec<String>> {
                Ok(vec![self.info_line()])
            }
            op_as_typed_op!();
        }
    };
}
pub(crate) use sigma_device_op;

sigma_device_op!(GpuSufSigmaActivation, "GpuSufSigmaActivation", table);

impl GpuSufSigmaActivation {
    fn info_line(&self) -> String {
        format!("node={} pieces={}", self.op.node, self.table.cuts.len())
    }
}

impl EvalOp for GpuSufSigmaActivation {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let op = &self.op;
        let x = inputs
            .first()
            .with_context(|| format!("SUF node {}: no input", op.node))?
            .to_device_tensor()?;
        let f = op.fixed.frac_bits();
        let encoded = ring_operand(&op.node, "input", op.fixed, op.rounding, f, x)?;
        let x = encoded.as_ref().unwrap_or(x);
        let table = self
            .device
            .get_or_init(|| DeviceDescriptor::upload(&self.table).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("SUF node {}: uploading its descriptor: {e}", op.node))?;
        let y = make_tensor_for_node(ctx, DatumType::I64, x.shape())?;
        let status = if x.len() > 0 {
            kernels::sigma_activation(op.fixed.n_bits(), table, x, &y)
                .map_err(|e| anyhow!("SUF node {}: {e:#}", op.node))?
        } else {
            RingStatus::default()
        };
        if stats::enabled() {
            let max_abs = status.max_in * (-(f as f64)).exp2();
            stats::record(&op.node, |s| {
                s.max_abs = s.max_abs.max(max_abs);
                s.elements += x.len();
            });
        }
        record_output(&op.node, op.level, op.fixed, &status);
        Ok(tvec!(y.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufSigmaActivation {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        crate::ring::ring_fact_of_first(inputs)
    }
    as_op!();
}
