//! Level `output`'s SUF nodes on the GPU: `SufQuantize` and `SufQuantizeBias` reading and
//! writing device tensors, with the CPU ops' statistics and errors.

use anyhow::anyhow;
use suf_compiler::stats;
use suf_compiler::tract_ops::SufQuantize;
use tract_core::internal::*;
use tract_gpu::tensor::{DeviceTensor, DeviceTensorExt};

use crate::kernels::{self, Grid, RingStatus};

/// `SufQuantize` (bias: false) or `SufQuantizeBias` (bias: true) on the device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuSufQuantize {
    pub quantize: SufQuantize,
    pub bias: bool,
}

impl GpuSufQuantize {
    fn grid(&self) -> Grid {
        Grid {
            n_bits: self.quantize.fixed.n_bits(),
            frac_bits: self.quantize.fixed.frac_bits(),
            rounding: self.quantize.rounding,
        }
    }

    /// The CPU op's error for a non-finite input, and its statistics.
    fn account(&self, status: RingStatus, elements: usize) -> TractResult<()> {
        let node = &self.quantize.node;
        if let Some(i) = status.bad_at {
            bail!(
                "SUF node {node}: non-finite value at flat index {i} (the fixed-point input must be finite)"
            );
        }
        if stats::enabled() {
            stats::record(node, |s| {
                s.max_abs = s.max_abs.max(status.max_in);
                s.overflows += status.overflows as usize;
                s.elements += elements;
            });
        }
        Ok(())
    }
}

impl Op for GpuSufQuantize {
    fn name(&self) -> StaticName {
        if self.bias {
            "GpuSufQuantizeBias".into()
        } else {
            "GpuSufQuantize".into()
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "node={} n_bits={} frac_bits={} rounding={}",
            self.quantize.node,
            self.quantize.fixed.n_bits(),
            self.quantize.fixed.frac_bits(),
            self.quantize.rounding
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for GpuSufQuantize {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs
            .first()
            .context("GpuSufQuantize takes x")?
            .to_device_tensor()?;
        ensure!(
            x.datum_type() == DatumType::F32,
            "SUF node {}: expects f32 on the device, got {:?}",
            self.quantize.node,
            x.datum_type()
        );
        let bias: Option<&DeviceTensor> = if self.bias {
            Some(
                inputs
                    .get(1)
                    .context("GpuSufQuantizeBias takes x and bias")?
                    .to_device_tensor()?,
            )
        } else {
            None
        };
        let y = tract_gpu::turn_handler::make_tensor_for_node(ctx, DatumType::F32, x.shape())?;
        if x.len() > 0 {
            let status = kernels::quantize_f32(self.grid(), x, bias, &y)
                .map_err(|e| anyhow!("SUF node {}: {e:#}", self.quantize.node))?;
            self.account(status, x.len())?;
        }
        Ok(tvec!(y.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        tract_gpu::utils::facts_to_device_facts(inputs, |facts| {
            ensure!(
                facts[0].datum_type == DatumType::F32,
                "{} takes f32",
                self.name()
            );
            Ok(tvec!(f32::fact(facts[0].shape.clone())))
        })
    }

    as_op!();
}
