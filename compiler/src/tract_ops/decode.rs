//! `SufRingDecode`: a ring tensor leaves the ring as a float, for a graph output (f64,
//! attribute `to = "f64"`) or a float island (f32: the op of the original model computed in
//! float reads f32). f32 holds q * 2^-f exactly only while q has at most 24 significant bits,
//! f64 while it has at most 53 (every ring of n <= 54 bits); any other value is an error
//! naming the node: a ring value is never rounded silently.

use super::infer::Infer;
use super::{string_attr, SufAttrs};
use crate::SUF_RING_DECODE;
use suf_fixed::{pow2, FixedPoint};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SufRingDecode {
    pub node: String,
    pub fixed: FixedPoint,
    /// F32 or F64.
    pub to: DatumType,
}

/// q * 2^-f in `F`, or the first value `F` cannot hold. Exact when the integer survives
/// the round trip (through i128: an i64 cast would saturate 2^63 back to i64::MAX and call
/// it exact); scaling by 2^-f is exact in binary floating point (no ring value is small
/// enough to go subnormal).
/// `mantissa`: F's significand bits; every |q| up to 2^mantissa is exact without the check.
fn decode_as<F: Copy + std::ops::Mul<Output = F>>(
    q: &[i64],
    inv: F,
    mantissa: u32,
    to: impl Fn(i64) -> F,
    back: impl Fn(F) -> i128,
) -> Result<Vec<F>, (usize, i64)> {
    let exact = 1u64 << mantissa;
    // Sized up front: collecting through `Result` cannot, and regrew (and copied) logits
    // of hundreds of MB.
    let mut out = Vec::with_capacity(q.len());
    for (i, &v) in q.iter().enumerate() {
        let x = to(v);
        if v.unsigned_abs() > exact && back(x) != i128::from(v) {
            return Err((i, v));
        }
        out.push(x * inv);
    }
    Ok(out)
}

impl Op for SufRingDecode {
    fn name(&self) -> StaticName {
        SUF_RING_DECODE.into()
    }

    op_as_typed_op!();
}

impl SufRingDecode {
    /// q * 2^-f as f32, or the first value f32 cannot hold.
    pub fn decode(&self, q: &[i64]) -> Result<Vec<f32>, (usize, i64)> {
        let inv = pow2(-(self.fixed.frac_bits() as i32)) as f32;
        decode_as(q, inv, f32::MANTISSA_DIGITS, |v| v as f32, |x| x as i128)
    }

    /// q * 2^-f as f64, or the first value f64 cannot hold.
    pub fn decode_f64(&self, q: &[i64]) -> Result<Vec<f64>, (usize, i64)> {
        let inv = pow2(-(self.fixed.frac_bits() as i32));
        decode_as(q, inv, f64::MANTISSA_DIGITS, |v| v as f64, |x| x as i128)
    }
}

impl EvalOp for SufRingDecode {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs.first().context("SufRingDecode takes one input")?;
        ensure!(
            x.datum_type() == DatumType::I64,
            "SUF node {}: expects a ring (i64) tensor, got {:?}",
            self.node,
            x.datum_type()
        );
        let plain = x.try_as_plain_ram()?;
        let q = plain.as_slice::<i64>()?;
        let fail = |(i, v): (usize, i64), what: &str| {
            anyhow!(
                "SUF node {}: ring value {v} (real {}) at flat index {i} cannot be carried \
                 exactly in {what}",
                self.node,
                self.fixed.decode(v)
            )
        };
        // The decoded Vec becomes the tensor's storage (no copy).
        let y = if self.to == DatumType::F64 {
            let y = self.decode_f64(q).map_err(|e| fail(e, "f64"))?;
            tract_ndarray::ArrayD::from_shape_vec(x.shape(), y)?.into_tensor()
        } else {
            let y = self
                .decode(q)
                .map_err(|e| fail(e, "f32 into the float op that reads it"))?;
            tract_ndarray::ArrayD::from_shape_vec(x.shape(), y)?.into_tensor()
        };
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for SufRingDecode {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.to.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

pub(super) fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attrs = SufAttrs::parse(node)?;
    let to = match string_attr(node, "to").as_deref() {
        None | Some("f32") => DatumType::F32,
        Some("f64") => DatumType::F64,
        Some(other) => bail!(
            "SUF node {}: attribute to = \"{other}\"; expected \"f32\" or \"f64\"",
            node.name
        ),
    };
    let op = SufRingDecode {
        node: attrs.node,
        fixed: attrs.fixed,
        to,
    };
    Ok(Infer::unary(op, SUF_RING_DECODE, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n_bits: u32, to: DatumType) -> SufRingDecode {
        SufRingDecode {
            node: "d".into(),
            fixed: FixedPoint::new(n_bits, 12).unwrap(),
            to,
        }
    }

    #[test]
    fn f32_holds_24_bits_f64_holds_53() {
        let d = op(64, DatumType::F32);
        let small = (1i64 << 24) - 1;
        assert_eq!(d.decode(&[small]).unwrap(), vec![small as f32 / 4096.0]);
        assert_eq!(d.decode(&[small + 2]), Err((0, small + 2)));
        let big = (1i64 << 53) - 1;
        assert_eq!(
            d.decode_f64(&[3, big]).unwrap(),
            vec![3.0 / 4096.0, big as f64 / 4096.0]
        );
        assert_eq!(d.decode_f64(&[3, big + 2]), Err((1, big + 2)));
    }

    #[test]
    fn the_ring_edges_at_n_64() {
        // -2^63 is a power of two: exact in both. 2^63 - 1 rounds to 2^63, which an i64
        // cast saturates back to i64::MAX: it must still be refused.
        let d = op(64, DatumType::F64);
        assert_eq!(d.decode_f64(&[i64::MIN]).unwrap(), vec![-(2f64.powi(51))]);
        assert_eq!(d.decode_f64(&[i64::MAX]), Err((0, i64::MAX)));
        assert_eq!(d.decode(&[i64::MAX]), Err((0, i64::MAX)));
    }
}
