//! Ring tensors in and out of the SUF ops (docs/ring-transport.md): an i64 input is the
//! ring value itself; a float input (from a float island, a graph input or a constant) is
//! encoded at scale f with the node's rounding. Outputs are i64 ring tensors.

use crate::options::Emulation;
use crate::stats;
use std::borrow::Cow;
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::tract_hir::internal::*;

/// The ring values (scale `scale_bits`) a SUF op reads from `t`.
pub(crate) fn ring_values(
    t: &Tensor,
    fixed: FixedPoint,
    rounding: Rounding,
    scale_bits: u32,
    node: &str,
    what: &str,
) -> TractResult<Vec<i64>> {
    ring_values_cow(t, fixed, rounding, scale_bits, node, what).map(Cow::into_owned)
}

/// `ring_values`, borrowing an i64 input's storage instead of copying it.
pub(crate) fn ring_values_cow<'t>(
    t: &'t Tensor,
    fixed: FixedPoint,
    rounding: Rounding,
    scale_bits: u32,
    node: &str,
    what: &str,
) -> TractResult<Cow<'t, [i64]>> {
    let fail = |e: &dyn std::fmt::Display| {
        anyhow!("SUF node {node}: {what}: {e} (the fixed-point input must be finite)")
    };
    match t.datum_type() {
        DatumType::I64 => {
            ensure!(
                scale_bits == fixed.frac_bits(),
                "SUF node {node}: {what} is a ring tensor at scale f, expected a float at scale {scale_bits}"
            );
            Ok(Cow::Borrowed(t.try_as_plain_ram()?.as_slice::<i64>()?))
        }
        DatumType::F32 if scale_bits == fixed.frac_bits() => {
            let plain = t.try_as_plain_ram()?;
            let xs = plain.as_slice::<f32>()?;
            let mut q = vec![0f64; xs.len()];
            fixed
                .encode_slice_f32(xs, rounding, &mut q)
                .map_err(|e| fail(&e))?;
            Ok(Cow::Owned(q.into_iter().map(|v| v as i64).collect()))
        }
        DatumType::F32 | DatumType::F64 => {
            let t = t.cast_to::<f64>()?;
            let plain = t.try_as_plain_ram()?;
            let xs = plain.as_slice::<f64>()?;
            let mut q = Vec::with_capacity(xs.len());
            for &v in xs {
                q.push(
                    fixed
                        .encode_at(v, rounding, scale_bits)
                        .map_err(|e| fail(&e))?,
                );
            }
            Ok(Cow::Owned(q))
        }
        dt => bail!("SUF node {node}: {what} must be a ring (i64) or float tensor, got {dt:?}"),
    }
}

/// Folds the largest |value| a node carried (real units) into its level's maximum and,
/// when recording, its node statistics.
pub(crate) fn record_output(node: &str, level: Emulation, fixed: FixedPoint, q: &[i64]) {
    let max_q = q.iter().fold(0u64, |m, v| m.max(v.unsigned_abs()));
    // |i64::MIN| = 2^63 is an f64 exactly.
    let max_abs = max_q as f64 * suf_fixed::pow2(-(fixed.frac_bits() as i32));
    stats::note_carried(level, max_abs);
    if stats::enabled() {
        stats::record(node, |s| s.max_abs_carried = s.max_abs_carried.max(max_abs));
    }
}

/// An i64 ring tensor of `shape`.
pub(crate) fn ring_tensor(q: Vec<i64>, shape: &[usize]) -> TractResult<TValue> {
    Ok(tract_ndarray::ArrayD::from_shape_vec(shape, q)?
        .into_tensor()
        .into_tvalue())
}
