//! Levels `ring` and `sigma` on the GPU: the SUF ops that move and combine ring values
//! (`SufEncode`, `SufRingDecode`, `SufRingAdd`/`SufRingMul`, `SufRingMatMul`) on i64 device
//! tensors, with the CPU ops' statistics, carried maxima and errors. Each computes what its
//! CPU op in suf_compiler::tract_ops computes, bit for bit (suf.cu says how).

use anyhow::anyhow;
use suf_compiler::stats;
use suf_compiler::tract_ops::{BinaryKind, SufEncode, SufRingBinary, SufRingDecode, SufRingMatMul};
use suf_compiler::Emulation;
use suf_fixed::{FixedPoint, Rounding};
use tract_core::internal::*;
use tract_gpu::tensor::{DeviceTensor, DeviceTensorExt};
use tract_gpu::turn_handler::make_tensor_for_node;

use crate::kernels::{self, GemmShape, Grid, RingBinary, RingStatus};

fn real(q: u64, frac_bits: u32) -> f64 {
    q as f64 * (-(frac_bits as f64)).exp2()
}

/// suf_compiler's `record_output`: the largest |value| the node carried.
pub(crate) fn record_output(node: &str, level: Emulation, fixed: FixedPoint, status: &RingStatus) {
    let max_abs = real(status.max_out, fixed.frac_bits());
    stats::note_carried(level, max_abs);
    if stats::enabled() {
        stats::record(node, |s| s.max_abs_carried = s.max_abs_carried.max(max_abs));
    }
}

/// The ring values (scale `scale_bits`) an op reads from a device input: an i64 tensor as it
/// is (at scale f), an f32 one encoded with the node's rounding into a temporary.
pub(crate) fn ring_operand(
    node: &str,
    what: &str,
    fixed: FixedPoint,
    rounding: Rounding,
    scale_bits: u32,
    t: &DeviceTensor,
) -> TractResult<Option<DeviceTensor>> {
    match t.datum_type() {
        DatumType::I64 => {
            ensure!(
                scale_bits == fixed.frac_bits(),
                "SUF node {node}: {what} is a ring tensor at scale f, expected a float at scale {scale_bits}"
            );
            Ok(None)
        }
        DatumType::F32 => {
            let q = DeviceTensor::uninitialized_dt(DatumType::I64, t.shape())?;
            let grid = Grid {
                n_bits: fixed.n_bits(),
                frac_bits: fixed.frac_bits(),
                rounding,
            };
            if t.len() > 0 {
                let status = kernels::encode_f32(grid, scale_bits, t, &q)
                    .map_err(|e| anyhow!("SUF node {node}: {what}: {e:#}"))?;
                if let Some(i) = status.bad_at {
                    bail!("SUF node {node}: {what}: non-finite value at flat index {i} (the fixed-point input must be finite)");
                }
            }
            Ok(Some(q))
        }
        dt => bail!(
            "SUF node {node}: {what} must be a ring (i64) or f32 tensor on the device, got {dt:?}"
        ),
    }
}

/// The output fact of an op that maps its first input to a ring tensor of the same shape,
/// on the device.
pub(crate) fn ring_fact_of_first(inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
    tract_gpu::utils::facts_to_device_facts(inputs, |f| Ok(tvec!(i64::fact(f[0].shape.clone()))))
}

fn device_input<'a>(
    inputs: &'a TVec<TValue>,
    ix: usize,
    node: &str,
) -> TractResult<&'a DeviceTensor> {
    inputs
        .get(ix)
        .with_context(|| format!("SUF node {node}: missing input {ix}"))?
        .to_device_tensor()
}

macro_rules! device_op {
    ($gpu:ident, $name:literal) => {
        impl Op for $gpu {
            fn name(&self) -> StaticName {
                $name.into()
            }
            fn info(&self) -> TractResult<Vec<String>> {
                Ok(vec![format!("node={}", self.0.node)])
            }
            op_as_typed_op!();
        }
    };
}

/// `SufEncode` of an f32 tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuSufEncode(pub SufEncode);
device_op!(GpuSufEncode, "GpuSufEncode");

impl EvalOp for GpuSufEncode {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let op = &self.0;
        let x = device_input(&inputs, 0, &op.node)?;
        ensure!(
            x.datum_type() == DatumType::F32,
            "SUF node {}: expects f32",
            op.node
        );
        let q = make_tensor_for_node(ctx, DatumType::I64, x.shape())?;
        let grid = Grid {
            n_bits: op.fixed.n_bits(),
            frac_bits: op.fixed.frac_bits(),
            rounding: op.rounding,
        };
        let status = if x.len() > 0 {
            kernels::encode_f32(grid, op.fixed.frac_bits(), x, &q)
                .map_err(|e| anyhow!("SUF node {}: {e:#}", op.node))?
        } else {
            RingStatus::default()
        };
        if let Some(i) = status.bad_at {
            bail!("SUF node {}: input: non-finite value at flat index {i} (the fixed-point input must be finite)", op.node);
        }
        if stats::enabled() {
            stats::record(&op.node, |s| {
                s.max_abs = s.max_abs.max(status.max_in);
                s.overflows += status.overflows as usize;
                s.elements += x.len();
            });
        }
        record_output(&op.node, op.level, op.fixed, &status);
        Ok(tvec!(q.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufEncode {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        crate::ring::ring_fact_of_first(inputs)
    }
    as_op!();
}

/// `SufRingDecode` (f32 for a float island, f64 for a graph output).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuSufRingDecode(pub SufRingDecode);
device_op!(GpuSufRingDecode, "GpuSufRingDecode");

impl EvalOp for GpuSufRingDecode {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let op = &self.0;
        let q = device_input(&inputs, 0, &op.node)?;
        ensure!(
            q.datum_type() == DatumType::I64,
            "SUF node {}: expects a ring (i64) tensor, got {:?}",
            op.node,
            q.datum_type()
        );
        let y = make_tensor_for_node(ctx, op.to, q.shape())?;
        if q.len() == 0 {
            return Ok(tvec!(y.into_tensor().into_tvalue()));
        }
        let status = kernels::decode(op.fixed.frac_bits(), q, &y)
            .map_err(|e| anyhow!("SUF node {}: {e:#}", op.node))?;
        if let Some(i) = status.bad_at {
            // The error path only: the value itself comes from the host copy.
            let host = q.to_host()?;
            let v = host
                .try_as_plain_ram()?
                .as_slice::<i64>()?
                .get(i as usize)
                .copied()
                .unwrap_or_default();
            let what = if op.to == DatumType::F64 {
                "f64"
            } else {
                "f32 into the float op that reads it"
            };
            bail!(
                "SUF node {}: ring value {v} (real {}) at flat index {i} cannot be carried exactly in {what}",
                op.node,
                op.fixed.decode(v)
            );
        }
        Ok(tvec!(y.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufRingDecode {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let to = self.0.to;
        tract_gpu::utils::facts_to_device_facts(inputs, |f| Ok(tvec!(to.fact(f[0].shape.clone()))))
    }
    as_op!();
}

/// Element strides of an operand of shape `dims` read at every index of `out` (numpy
/// broadcasting: right-aligned, 0 along an axis the operand does not have or has as 1).
pub fn broadcast_strides(dims: &[usize], out: &[usize]) -> TractResult<Vec<usize>> {
    ensure!(
        dims.len() <= out.len(),
        "operand of rank {} for output rank {}",
        dims.len(),
        out.len()
    );
    let pad = out.len() - dims.len();
    let mut strides = vec![0usize; out.len()];
    let mut acc = 1usize;
    for d in (0..dims.len()).rev() {
        let (size, want) = (dims[d], out[pad + d]);
        ensure!(
            size == want || size == 1,
            "operand {dims:?} does not broadcast to {out:?}"
        );
        strides[pad + d] = if size == 1 && want != 1 { 0 } else { acc };
        acc *= size;
    }
    Ok(strides)
}

/// `SufRingAdd` / `SufRingMul` (not the reciprocal form, whose divisor is encoded on the CPU).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuSufRingBinary(pub SufRingBinary);
device_op!(GpuSufRingBinary, "GpuSufRingBinary");

impl EvalOp for GpuSufRingBinary {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let op = &self.0;
        ensure!(
            inputs.len() == 2,
            "SUF node {}: takes two operands, got {}",
            op.node,
            inputs.len()
        );
        let (a, b) = (
            device_input(&inputs, 0, &op.node)?,
            device_input(&inputs, 1, &op.node)?,
        );
        let shape: TVec<usize> = tract_core::broadcast::multi_broadcast(&[a.shape(), b.shape()])
            .with_context(|| format!("SUF node {}: operands do not broadcast", op.node))?;
        let f = op.fixed.frac_bits();
        let a_enc = ring_operand(&op.node, "operand A", op.fixed, op.rounding, f, a)?;
        let b_enc = ring_operand(&op.node, "operand B", op.fixed, op.rounding, f, b)?;
        let (a, b) = (a_enc.as_ref().unwrap_or(a), b_enc.as_ref().unwrap_or(b));
        let kind = match op.kind {
            BinaryKind::Add => RingBinary::Add,
            BinaryKind::Sub => RingBinary::Sub,
            BinaryKind::Mul => RingBinary::Mul,
            BinaryKind::MulReciprocal => bail!(
                "SUF node {}: the reciprocal product runs on the CPU",
                op.node
            ),
        };
        let y = make_tensor_for_node(ctx, DatumType::I64, &shape)?;
        let status = if y.len() > 0 {
            kernels::ring_binary(
                kind,
                op.fixed.n_bits(),
                f,
                a,
                b,
                &y,
                &broadcast_strides(a.shape(), &shape)?,
                &broadcast_strides(b.shape(), &shape)?,
            )
            .map_err(|e| anyhow!("SUF node {}: {e:#}", op.node))?
        } else {
            RingStatus::default()
        };
        if stats::enabled() {
            let product = kind == RingBinary::Mul;
            let scale = if product { 2 * f } else { f };
            let real = status.max_in * (-(scale as f64)).exp2();
            stats::record(&op.node, |s| {
                if product {
                    s.max_abs_2f = Some(s.max_abs_2f.unwrap_or(0.0).max(real));
                    s.overflows_2f += status.overflows as usize;
                } else {
                    s.max_abs = s.max_abs.max(real);
                    s.overflows += status.overflows as usize;
                }
                s.elements += y.len();
            });
        }
        record_output(&op.node, op.level, op.fixed, &status);
        Ok(tvec!(y.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufRingBinary {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        tract_gpu::utils::facts_to_device_facts(inputs, |f| {
            let shape = tract_core::broadcast::multi_broadcast(&[
                f[0].shape.to_tvec(),
                f[1].shape.to_tvec(),
            ])?;
            Ok(tvec!(i64::fact(shape)))
        })
    }
    as_op!();
}

/// The product's geometry: the output shape and the kernel's view of both operands.
pub fn gemm_shape(a: &[usize], b: &[usize], trans_b: bool) -> TractResult<(Vec<usize>, GemmShape)> {
    ensure!(
        a.len() >= 2 && b.len() >= 2,
        "ring MatMul needs operands of rank >= 2, got {a:?} x {b:?}"
    );
    let (ra, rb) = (a.len(), b.len());
    let (m, k) = (a[ra - 2], a[ra - 1]);
    let (kb, n) = if trans_b {
        (b[rb - 1], b[rb - 2])
    } else {
        (b[rb - 2], b[rb - 1])
    };
    ensure!(
        k == kb,
        "ring MatMul of {a:?} x {b:?}: inner dimensions {k} and {kb}"
    );
    let batch: Vec<usize> = tract_core::broadcast::multi_broadcast(&[&a[..ra - 2], &b[..rb - 2]])
        .with_context(|| format!("ring MatMul of {a:?} x {b:?}: batch axes do not broadcast"))?
        .to_vec();
    let scaled = |dims: &[usize], matrix: usize| -> TractResult<Vec<usize>> {
        Ok(broadcast_strides(dims, &batch)?
            .into_iter()
            .map(|s| s * matrix)
            .collect())
    };
    let shape = GemmShape {
        m,
        n,
        k,
        trans_b,
        a_strides: scaled(&a[..ra - 2], m * k)?,
        b_strides: scaled(&b[..rb - 2], k * n)?,
        batch: batch.clone(),
    };
    let mut c = batch;
    c.extend([m, n]);
    Ok((c, shape))
}

/// `SufRingMatMul`: the exact product in wrapping 64-bit arithmetic, then the CPU op's finish.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuSufRingMatMul(pub SufRingMatMul);
device_op!(GpuSufRingMatMul, "GpuSufRingMatMul");

impl EvalOp for GpuSufRingMatMul {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let op = &self.0;
        let node = &op.node;
        ensure!(
            (2..=3).contains(&inputs.len()),
            "SUF node {node}: ring MatMul takes A, B and an optional bias"
        );
        let (a, b) = (
            device_input(&inputs, 0, node)?,
            device_input(&inputs, 1, node)?,
        );
        let (c_shape, geometry) = gemm_shape(a.shape(), b.shape(), op.trans_b)
            .map_err(|e| anyhow!("SUF node {node}: {e:#}"))?;
        let f = op.fixed.frac_bits();
        let a_enc = ring_operand(node, "operand A", op.fixed, op.encoding, f, a)?;
        let b_enc = ring_operand(node, "operand B", op.fixed, op.encoding, f, b)?;
        let (a, b) = (a_enc.as_ref().unwrap_or(a), b_enc.as_ref().unwrap_or(b));
        let bias = match inputs.get(2) {
            Some(t) => {
                let t = t.to_device_tensor()?;
                ensure!(
                    t.datum_type() != DatumType::I64,
                    "SUF node {node}: the bias must be a float tensor (it is encoded at scale 2f)"
                );
                ensure!(
                    t.len() == geometry.n,
                    "SUF node {node}: bias has {} values for {} output columns",
                    t.len(),
                    geometry.n
                );
                ring_operand(node, "bias", op.fixed, op.encoding, 2 * f, t)?
            }
            None => None,
        };
        let c = make_tensor_for_node(ctx, DatumType::I64, &c_shape)?;
        // FP64 where the computed bound proves it exact, else the 64-bit integer kernel.
        let exact_f64 = crate::dgemm::enabled()
            && c.len() > 0
            && crate::dgemm::try_product(&geometry, a, b, &c)
                .map_err(|e| anyhow!("SUF node {node}: {e:#}"))?;
        if !exact_f64 {
            kernels::ring_gemm(&geometry, a, b, &c)
                .map_err(|e| anyhow!("SUF node {node}: {e:#}"))?;
        }
        let status = if c.len() > 0 {
            kernels::ring_finish(
                op.fixed.n_bits(),
                f,
                op.shift,
                op.truncation,
                op.post_multiplier,
                &c,
                bias.as_ref(),
                geometry.n,
            )
            .map_err(|e| anyhow!("SUF node {node}: {e:#}"))?
        } else {
            RingStatus::default()
        };
        if stats::enabled() {
            let max_out = real(status.max_out, f);
            let max_2f = status.max_in * (-(2.0 * f as f64)).exp2();
            stats::record(node, |s| {
                s.max_abs = s.max_abs.max(max_out);
                s.max_abs_2f = Some(s.max_abs_2f.unwrap_or(0.0).max(max_2f));
                s.overflows_2f += status.overflows as usize;
                s.elements += c.len();
            });
        }
        record_output(node, op.level, op.fixed, &status);
        Ok(tvec!(c.into_tensor().into_tvalue()))
    }
}

impl TypedOp for GpuSufRingMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let trans_b = self.0.trans_b;
        tract_gpu::utils::facts_to_device_facts(inputs, |f| {
            let concrete = |t: &TypedFact| {
                t.shape
                    .as_concrete()
                    .map(|s| s.to_vec())
                    .with_context(|| format!("{:?} is not concrete", t.shape))
            };
            let (c, _) = gemm_shape(&concrete(f[0])?, &concrete(f[1])?, trans_b)?;
            Ok(tvec!(i64::fact(c)))
        })
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_strides_are_numpys() {
        assert_eq!(broadcast_strides(&[2, 3], &[2, 3]).unwrap(), vec![3, 1]);
        assert_eq!(broadcast_strides(&[3], &[2, 3]).unwrap(), vec![0, 1]);
        assert_eq!(broadcast_strides(&[2, 1], &[2, 3]).unwrap(), vec![1, 0]);
        assert_eq!(broadcast_strides(&[1, 1], &[1, 4]).unwrap(), vec![1, 0]);
        assert!(broadcast_strides(&[2], &[2, 3]).is_err());
    }

    #[test]
    fn gemm_geometry_of_attention_and_linear_layers() {
        // Linear layer: [b, s, k] x [k, n], weights shared by the batch.
        let (c, g) = gemm_shape(&[2, 5, 4], &[4, 3], false).unwrap();
        assert_eq!(c, vec![2, 5, 3]);
        assert_eq!((g.m, g.n, g.k), (5, 3, 4));
        assert_eq!(
            (g.a_strides.clone(), g.b_strides.clone()),
            (vec![20], vec![0])
        );
        // Attention scores: [b, h, s, d] x [b, h, d, s].
        let (c, g) = gemm_shape(&[2, 3, 5, 4], &[2, 3, 4, 5], false).unwrap();
        assert_eq!(c, vec![2, 3, 5, 5]);
        assert_eq!((g.a_strides, g.b_strides), (vec![60, 20], vec![60, 20]));
        // Gemm's transB: B stored [n, k].
        let (c, g) = gemm_shape(&[5, 4], &[3, 4], true).unwrap();
        assert_eq!((c, g.n, g.k), (vec![5, 3], 3, 4));
        assert!(gemm_shape(&[5, 4], &[5, 3], false).is_err());
    }
}
