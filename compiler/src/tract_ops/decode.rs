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

/// The first q (index, value) that `F` cannot hold: exact when the integer survives the
/// round trip (through i128: an i64 cast would saturate 2^63 back to i64::MAX and call it
/// exact). `mantissa`: F's significand bits; every |q| up to 2^mantissa is exact unchecked.
fn first_inexact<F: Copy>(
    q: &[i64],
    mantissa: u32,
    to: impl Fn(i64) -> F,
    back: impl Fn(F) -> i128,
) -> Option<(usize, i64)> {
    let exact = 1u64 << mantissa;
    q.iter()
        .position(|&v| v.unsigned_abs() > exact && back(to(v)) != i128::from(v))
        .map(|i| (i, q[i]))
}

/// q * 2^-f in `F`, or the first value `F` cannot hold. Scaling by 2^-f is exact in binary
/// floating point (no ring value is small enough to go subnormal).
fn decode_as<F: Copy + std::ops::Mul<Output = F>>(
    q: &[i64],
    inv: F,
    mantissa: u32,
    to: impl Fn(i64) -> F,
    back: impl Fn(F) -> i128,
) -> Result<Vec<F>, (usize, i64)> {
    // The check first, in its own loop (branch-predictable, no stores), then one pass that
    // only converts: collecting a slice's map sizes the output once.
    if let Some(bad) = first_inexact(q, mantissa, &to, back) {
        return Err(bad);
    }
    Ok(q.iter().map(|&v| to(v) * inv).collect())
}

/// `decode_f64` in place: an i64 and an f64 are both 8 bytes, so a ring tensor the op owns
/// (a graph output's logits: hundreds of MB) becomes its f64 tensor without a second buffer.
fn decode_f64_in_place(t: &mut Tensor, inv: f64) -> TractResult<Result<(), (usize, i64)>> {
    {
        let mut plain = t.try_as_plain_ram_mut()?;
        let q = plain.as_slice_mut::<i64>()?;
        if let Some(bad) = first_inexact(q, f64::MANTISSA_DIGITS, |v| v as f64, |x| x as i128) {
            return Ok(Err(bad));
        }
        for v in q.iter_mut() {
            *v = ((*v as f64) * inv).to_bits() as i64;
        }
    }
    // SAFETY: every element was just rewritten as the bits of an f64, and the two types
    // share size and alignment.
    unsafe { t.set_datum_type(DatumType::F64) };
    Ok(Ok(()))
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
        let x = inputs
            .into_iter()
            .next()
            .context("SufRingDecode takes one input")?;
        ensure!(
            x.datum_type() == DatumType::I64,
            "SUF node {}: expects a ring (i64) tensor, got {:?}",
            self.node,
            x.datum_type()
        );
        let fail = |(i, v): (usize, i64), what: &str| {
            anyhow!(
                "SUF node {}: ring value {v} (real {}) at flat index {i} cannot be carried \
                 exactly in {what}",
                self.node,
                self.fixed.decode(v)
            )
        };
        if self.to == DatumType::F64 {
            // The plan hands over a tensor no other op reads without a copy.
            let mut t = x.into_tensor();
            let inv = pow2(-(self.fixed.frac_bits() as i32));
            decode_f64_in_place(&mut t, inv)?.map_err(|e| fail(e, "f64"))?;
            return Ok(tvec!(t.into_tvalue()));
        }
        let plain = x.try_as_plain_ram()?;
        let q = plain.as_slice::<i64>()?;
        // The decoded Vec becomes the tensor's storage (no copy).
        let y = self
            .decode(q)
            .map_err(|e| fail(e, "f32 into the float op that reads it"))?;
        let y = tract_ndarray::ArrayD::from_shape_vec(x.shape(), y)?.into_tensor();
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

    #[test]
    fn in_place_decoding_equals_the_copying_one() {
        let d = op(64, DatumType::F64);
        let q = [0i64, -1, 3, i64::MIN, (1 << 53) - 1, -(1 << 40) + 7];
        let mut t = tensor1(&q);
        decode_f64_in_place(&mut t, 1.0 / 4096.0).unwrap().unwrap();
        assert_eq!(t.datum_type(), DatumType::F64);
        let got: Vec<u64> = t
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let want: Vec<u64> = d
            .decode_f64(&q)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(got, want);
        let mut bad = tensor1(&[1i64, i64::MAX]);
        assert_eq!(
            decode_f64_in_place(&mut bad, 1.0 / 4096.0).unwrap(),
            Err((1, i64::MAX))
        );
    }
}
