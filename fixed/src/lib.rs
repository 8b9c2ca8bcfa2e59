//! The fixed-point semantics of suf, in one place (SPEC.md section 2).
//!
//! A real `x` is held as an integer `q` at scale `f` in the ring Z_(2^n), read as a signed
//! n-bit two's-complement value:
//!
//! ```text
//! Wrap_n(q) = ((q + 2^(n-1)) mod 2^n) - 2^(n-1)        x_hat = Wrap_n(q) / 2^f
//! ```
//!
//! Everything here is exact: ring values are `i64`/`i128`, reals are `f64` and every scaling
//! is by a power of two (exact in binary floating point). `f32` never holds a ring value.
//! The compiler (which rewrites initializers and emits SUF nodes) and the runner (which
//! executes those nodes inside tract) both call this crate, so the two cannot drift apart.

pub mod descriptor;
pub mod float_fn;
mod json_layout;
pub mod matmul;
mod ring;
pub mod sigma;
pub mod tables;

pub use ring::{ars, wrap_i128, wrap_i64};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Largest ring supported: values live in `i64`.
pub const MAX_N_BITS: u32 = 64;
/// The fractional bits SIGMA and FuseFSS use everywhere.
pub const DEFAULT_FRAC_BITS: u32 = 12;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FixedError {
    #[error("n_bits = {n_bits} is out of range: need frac_bits < n_bits <= 64 (frac_bits = {frac_bits})")]
    BitsOutOfRange { n_bits: u32, frac_bits: u32 },
    #[error("cannot encode non-finite value {0} in fixed point")]
    NonFinite(f64),
    #[error("unknown rounding rule `{0}` (expected round, trunc or floor)")]
    UnknownRounding(String),
}

/// How a real is turned into an integer at scale `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// Nearest integer, ties to even (what `torch.round` does; FuseFSS's "SUF" column).
    #[default]
    Round,
    /// Toward zero (a C cast: SIGMA's encoding, FuseFSS's "MPC" column).
    Trunc,
    /// Toward minus infinity (an arithmetic right shift).
    Floor,
}

impl Rounding {
    /// Applies the rule to a real; exact for every finite `f64`.
    ///
    /// Bit-identical to `round_ties_even`, `trunc` and `floor` (signed zeros included), but
    /// without their libm calls on baseline x86-64 (no SSE4.1 `roundsd`): below 2^52,
    /// adding and removing 2^52 rounds |v| to the nearest integer, ties to even; from 2^52
    /// on (and for NaN and infinities) `v` is already its own rounding.
    #[inline(always)]
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must take the early return
    pub fn apply(self, v: f64) -> f64 {
        const TWO_52: f64 = 4503599627370496.0;
        let a = v.abs();
        if !(a < TWO_52) {
            return v;
        }
        let r = (a + TWO_52) - TWO_52;
        match self {
            Rounding::Round => r.copysign(v),
            Rounding::Trunc => (if r > a { r - 1.0 } else { r }).copysign(v),
            Rounding::Floor => {
                let r = r.copysign(v);
                if r > v {
                    r - 1.0
                } else {
                    r
                }
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rounding::Round => "round",
            Rounding::Trunc => "trunc",
            Rounding::Floor => "floor",
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Rounding {
    type Err = FixedError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round" => Ok(Rounding::Round),
            "trunc" => Ok(Rounding::Trunc),
            "floor" => Ok(Rounding::Floor),
            other => Err(FixedError::UnknownRounding(other.to_string())),
        }
    }
}

/// A validated fixed-point format: ring of `n_bits`, `frac_bits` fractional bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedPoint {
    n_bits: u32,
    frac_bits: u32,
}

impl FixedPoint {
    /// Checks `frac_bits < n_bits <= 64`.
    pub fn new(n_bits: u32, frac_bits: u32) -> Result<Self, FixedError> {
        if n_bits > MAX_N_BITS || frac_bits >= n_bits {
            return Err(FixedError::BitsOutOfRange { n_bits, frac_bits });
        }
        Ok(FixedPoint { n_bits, frac_bits })
    }

    pub fn n_bits(self) -> u32 {
        self.n_bits
    }

    pub fn frac_bits(self) -> u32 {
        self.frac_bits
    }

    /// 2^f as a real.
    pub fn scale(self) -> f64 {
        pow2(self.frac_bits as i32)
    }

    /// Smallest ring value, -2^(n-1).
    pub fn ring_min(self) -> i64 {
        ((-1i128) << (self.n_bits - 1)) as i64
    }

    /// Largest ring value, 2^(n-1) - 1.
    pub fn ring_max(self) -> i64 {
        ((1i128 << (self.n_bits - 1)) - 1) as i64
    }

    /// Reals in `[-bound, bound)` survive encoding without wrapping: bound = 2^(n-1-f).
    pub fn real_bound(self) -> f64 {
        pow2(self.n_bits as i32 - 1 - self.frac_bits as i32)
    }

    /// Reals at scale 2f (products before truncation) wrap from 2^(n-1-2f) on; may be < 1.
    pub fn product_bound(self) -> f64 {
        pow2(self.n_bits as i32 - 1 - 2 * self.frac_bits as i32)
    }

    /// Wrap_n of an integer.
    #[inline(always)]
    pub fn wrap(self, v: i128) -> i64 {
        wrap_i128(v, self.n_bits)
    }

    /// R(x * 2^f), wrapped into the ring. Exact for every finite `x`, however large.
    #[inline]
    pub fn encode(self, x: f64, rounding: Rounding) -> Result<i64, FixedError> {
        self.encode_at(x, rounding, self.frac_bits)
    }

    /// R(x * 2^scale_bits) wrapped into the ring (biases are encoded at scale 2f in SIGMA).
    #[inline]
    pub fn encode_at(self, x: f64, rounding: Rounding, scale_bits: u32) -> Result<i64, FixedError> {
        if !x.is_finite() {
            return Err(FixedError::NonFinite(x));
        }
        let v = rounding.apply(x * pow2(scale_bits as i32));
        Ok(wrap_integral_f64(v, self.n_bits))
    }

    /// The real a ring value stands for: q / 2^f.
    #[inline(always)]
    pub fn decode(self, q: i64) -> f64 {
        q as f64 * pow2(-(self.frac_bits as i32))
    }

    /// decode(encode(x)): the real a SUF node outputs for input `x` (emulation level `output`).
    pub fn quantize(self, x: f64, rounding: Rounding) -> Result<f64, FixedError> {
        Ok(self.decode(self.encode(x, rounding)?))
    }

    /// True when `x` is a value a SUF node can output: on the 2^-f grid and inside the ring.
    pub fn on_grid(self, x: f64) -> bool {
        let v = x * self.scale();
        x.is_finite()
            && v.fract() == 0.0
            && v >= self.ring_min() as f64
            && v <= self.ring_max() as f64
    }

    /// Quantizes a tensor in place: the fused encode + wrap + decode pass of a SUF node.
    ///
    /// The main loop is branch-free f64 arithmetic that vectorises on baseline x86-64 (no
    /// `roundsd`): rounding by the 1.5 * 2^52 magic number, the wrap as
    /// `v - 2^n * floor((v + 2^(n-1)) / 2^n)`, both exact on integers below 2^51. A tensor
    /// holding a larger |x * 2^f| takes the exact element-by-element path. A non-finite
    /// element is an error naming its flat index (the tensor is then partly rewritten).
    pub fn quantize_slice_f32(self, xs: &mut [f32], rounding: Rounding) -> Result<(), NonFiniteAt> {
        // Blocks small enough for L1: the range check and the rounding then read each
        // element from memory once.
        const BLOCK: usize = 2048;
        for (b, block) in xs.chunks_mut(BLOCK).enumerate() {
            self.quantize_block(block, rounding)
                .map_err(|NonFiniteAt(i)| NonFiniteAt(b * BLOCK + i))?;
        }
        Ok(())
    }

    // `!(a < b)` on purpose: NaN must count as out of range, in a form that vectorises.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn quantize_block(self, xs: &mut [f32], rounding: Rounding) -> Result<(), NonFiniteAt> {
        let scale = self.scale();
        // One branch-free pass (NaN compares false, so it counts as out of range).
        let outside = |limit: f64| {
            let limit = (limit / scale) as f32;
            xs.iter().fold(false, |bad, &x| bad | !(x.abs() < limit))
        };
        if self.n_bits > 23 && !outside(MAGIC32_LIMIT) {
            // Everything fits f32's magic-number range and the ring: round in f32, no wrap.
            let (s, inv) = (scale as f32, (1.0 / scale) as f32);
            match rounding {
                Rounding::Round => xs.iter_mut().for_each(|x| *x = round_magic32(*x * s) * inv),
                Rounding::Floor => xs.iter_mut().for_each(|x| *x = floor_magic32(*x * s) * inv),
                Rounding::Trunc => xs.iter_mut().for_each(|x| {
                    let v = *x * s;
                    let f = floor_magic32(v.abs());
                    // + 0.0: a negative value truncated to 0 is +0, as decode(0) is (and
                    // the GPU kernel's); -0 would differ in its bits.
                    *x = (if v < 0.0 { -f } else { f } + 0.0) * inv
                }),
            }
            return Ok(());
        }
        if outside(MAGIC_LIMIT) {
            return self.quantize_slice_exact(xs, rounding);
        }
        match rounding {
            Rounding::Round => self.quantize_fast(xs, round_magic),
            Rounding::Floor => self.quantize_fast(xs, floor_magic),
            Rounding::Trunc => self.quantize_fast(xs, |v| {
                let f = floor_magic(v.abs());
                // + 0.0: truncation to 0 gives +0 (see above).
                (if v < 0.0 { -f } else { f }) + 0.0
            }),
        }
        Ok(())
    }

    #[inline(always)]
    fn quantize_fast(self, xs: &mut [f32], rule: impl Fn(f64) -> f64) {
        let scale = self.scale();
        let inv = 1.0 / scale;
        // Values below 2^51 need no wrap when the ring holds them all (n - 1 >= 51).
        let wraps = self.n_bits <= 52;
        let modulus = pow2(self.n_bits as i32);
        let half = pow2(self.n_bits as i32 - 1);
        let inv_modulus = 1.0 / modulus;
        for x in xs.iter_mut() {
            let v = rule(*x as f64 * scale);
            let w = if wraps {
                v - modulus * floor_magic((v + half) * inv_modulus)
            } else {
                v
            };
            *x = (w * inv) as f32;
        }
    }

    /// Encodes a tensor to ring values (scale f) held as integer-valued `f64`, the operand
    /// form of `matmul::RingMatMul`. Exact, wrapping like `encode`.
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must fail the range check
    pub fn encode_slice_f32(
        self,
        xs: &[f32],
        rounding: Rounding,
        out: &mut [f64],
    ) -> Result<(), NonFiniteAt> {
        let scale = self.scale();
        let half = pow2(self.n_bits as i32 - 1);
        let limit = (MAGIC_LIMIT.min(half) / scale) as f32;
        if !xs.iter().fold(false, |bad, &x| bad | !(x.abs() < limit)) {
            // Every element is finite and inside the ring: round branch-free, no wrap.
            let rule = |v: f64| match rounding {
                Rounding::Round => round_magic(v),
                Rounding::Floor => floor_magic(v),
                Rounding::Trunc => v.signum() * floor_magic(v.abs()),
            };
            match rounding {
                Rounding::Round => out
                    .iter_mut()
                    .zip(xs)
                    .for_each(|(o, &x)| *o = round_magic(x as f64 * scale)),
                _ => out
                    .iter_mut()
                    .zip(xs)
                    .for_each(|(o, &x)| *o = rule(x as f64 * scale)),
            }
            return Ok(());
        }
        for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
            let v = rounding.apply(x as f64 * scale);
            *o = if v.abs() < half {
                v
            } else if v.is_finite() {
                wrap_integral_f64(v, self.n_bits) as f64
            } else {
                return Err(NonFiniteAt(i));
            };
        }
        Ok(())
    }

    fn quantize_slice_exact(self, xs: &mut [f32], rounding: Rounding) -> Result<(), NonFiniteAt> {
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(NonFiniteAt(i));
        }
        for x in xs.iter_mut() {
            *x = self
                .quantize(*x as f64, rounding)
                .expect("finite, checked above") as f32;
        }
        Ok(())
    }
}

/// The first non-finite element of a tensor a SUF node was asked to quantize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("non-finite value at flat index {0}")]
pub struct NonFiniteAt(pub usize);

const FAST_LIMIT: f64 = 4611686018427387904.0; // 2^62
/// Below 2^51 in magnitude, adding and removing 1.5 * 2^52 rounds to the nearest integer
/// (ties to even, the default floating-point rounding mode).
const MAGIC_LIMIT: f64 = 2251799813685248.0; // 2^51
const MAGIC: f64 = 6755399441055744.0; // 1.5 * 2^52

/// The f32 counterparts: below 2^22, adding and removing 1.5 * 2^23 rounds to nearest even.
const MAGIC32_LIMIT: f64 = 4194304.0; // 2^22
const MAGIC32: f32 = 12582912.0; // 1.5 * 2^23

#[inline(always)]
fn round_magic32(v: f32) -> f32 {
    (v + MAGIC32) - MAGIC32
}

#[inline(always)]
fn floor_magic32(v: f32) -> f32 {
    let r = round_magic32(v);
    r - if r > v { 1.0 } else { 0.0 }
}

#[inline(always)]
fn round_magic(v: f64) -> f64 {
    (v + MAGIC) - MAGIC
}

#[inline(always)]
fn floor_magic(v: f64) -> f64 {
    let r = round_magic(v);
    r - if r > v { 1.0 } else { 0.0 }
}

/// The smallest ring size n whose signed range holds every real of magnitude up to
/// `max_abs` at `scale_bits` fractional bits: the integer ceil(max_abs * 2^scale_bits) and its
/// negation must lie in [-2^(n-1), 2^(n-1) - 1]. At least `scale_bits + 1`, at most 64 (a
/// demand beyond 64 bits reports 65, which no ring here has).
pub fn ring_bits_for(max_abs: f64, scale_bits: u32) -> u32 {
    let q = (max_abs.abs() * pow2(scale_bits as i32)).ceil();
    let need = if !q.is_finite() || q >= pow2(63) {
        65
    } else {
        // bit length of q, plus the sign bit.
        let q = q as u64;
        (64 - q.leading_zeros()) + 1
    };
    need.clamp(scale_bits + 1, 65)
}

/// 2^e as an `f64`, exact for -1022 <= e <= 1023.
#[inline(always)]
pub fn pow2(e: i32) -> f64 {
    f64::from_bits(((1023 + e) as u64) << 52)
}

/// Wrap_n of an integral `f64` of any magnitude, exactly (no saturation at 2^63).
#[inline]
fn wrap_integral_f64(v: f64, n_bits: u32) -> i64 {
    debug_assert!(v.is_finite() && v.fract() == 0.0);
    if v.abs() < FAST_LIMIT {
        return wrap_i64(v as i64, n_bits);
    }
    // v = ±m * 2^e with a 53-bit integer mantissa m and e >= 10: take m * 2^e mod 2^64.
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1075;
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let low = if exp >= 64 {
        0
    } else {
        mantissa.wrapping_shl(exp as u32)
    };
    let signed = if v < 0.0 { low.wrapping_neg() } else { low };
    wrap_i64(signed as i64, n_bits)
}

#[cfg(test)]
mod tests;
