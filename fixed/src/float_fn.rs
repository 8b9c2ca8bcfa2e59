//! Level `ring`'s nonlinear functions: the exact float function of the ring value, in f64,
//! its output encoded back into the ring (docs/ring-transport.md).
//!
//! The formulas and their evaluation order are part of the contract (a model-level
//! reference re-implements them), so every sum runs left to right and the transcendental
//! functions come from `libm`, not the platform's maths library.

use crate::{FixedError, FixedPoint, Rounding};

/// The largest |q| whose f64 reading is exact (2^53).
const EXACT_F64: i64 = 1 << 53;

/// One of level `ring`'s float functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloatFn {
    GeluErf,
    GeluTanh,
    Silu,
    Softmax,
    LayerNorm { eps: f64 },
    RmsNorm { eps: f64 },
}

impl FloatFn {
    pub fn name(self) -> &'static str {
        match self {
            FloatFn::GeluErf => "gelu_erf",
            FloatFn::GeluTanh => "gelu_tanh",
            FloatFn::Silu => "silu",
            FloatFn::Softmax => "softmax",
            FloatFn::LayerNorm { .. } => "layernorm",
            FloatFn::RmsNorm { .. } => "rmsnorm",
        }
    }

    /// True for the functions of a whole row (the last axis).
    pub fn is_row(self) -> bool {
        matches!(
            self,
            FloatFn::Softmax | FloatFn::LayerNorm { .. } | FloatFn::RmsNorm { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FloatFnError {
    #[error("ring value {0} is beyond f64's exact range (2^53): the float function's input would be rounded")]
    Inexact(i64),
    #[error("{0}")]
    Fixed(#[from] FixedError),
    #[error("{what} has {got} values for rows of {want}")]
    Length {
        what: &'static str,
        got: usize,
        want: usize,
    },
}

/// The real a ring value stands for, refusing values an f64 cannot hold exactly.
#[inline(always)]
fn real(fixed: FixedPoint, q: i64) -> Result<f64, FloatFnError> {
    if q.unsigned_abs() > EXACT_F64 as u64 {
        return Err(FloatFnError::Inexact(q));
    }
    Ok(fixed.decode(q))
}

/// An elementwise function of one real.
pub fn activation(kind: FloatFn, x: f64) -> f64 {
    match kind {
        FloatFn::GeluErf => 0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2)),
        FloatFn::GeluTanh => {
            0.5 * x * (1.0 + libm::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
        }
        FloatFn::Silu => x / (1.0 + libm::exp(-x)),
        _ => unreachable!("{} is a row function", kind.name()),
    }
}

/// Evaluates an elementwise function on ring values, in place.
pub fn activation_slice(
    kind: FloatFn,
    fixed: FixedPoint,
    rounding: Rounding,
    q: &mut [i64],
) -> Result<(), FloatFnError> {
    for v in q.iter_mut() {
        *v = fixed.encode(activation(kind, real(fixed, *v)?), rounding)?;
    }
    Ok(())
}

/// The parameters of a row function: a norm's scale and shift as reals on the grid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowParams {
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
}

/// Evaluates a row function over one row of ring values; `masked` marks softmax entries
/// that take no part (they output 0).
pub fn row(
    kind: FloatFn,
    fixed: FixedPoint,
    rounding: Rounding,
    q: &[i64],
    masked: Option<&[bool]>,
    params: &RowParams,
) -> Result<Vec<i64>, FloatFnError> {
    let mut out = Vec::with_capacity(q.len());
    row_into(
        kind,
        fixed,
        rounding,
        q,
        masked,
        params,
        &mut Vec::new(),
        &mut out,
    )?;
    Ok(out)
}

/// `row`, appending the row's outputs to `out` and working in `scratch` (reused from row
/// to row: no allocation per row). On an error `out` may hold part of the row.
#[allow(clippy::too_many_arguments)]
pub fn row_into(
    kind: FloatFn,
    fixed: FixedPoint,
    rounding: Rounding,
    q: &[i64],
    masked: Option<&[bool]>,
    params: &RowParams,
    scratch: &mut Vec<f64>,
    out: &mut Vec<i64>,
) -> Result<(), FloatFnError> {
    scratch.clear();
    for &v in q {
        scratch.push(real(fixed, v)?);
    }
    let x = &mut scratch[..];
    let len = x.len();
    let c = len as f64;
    let check = |what, v: &[f64]| {
        if v.len() == len {
            Ok(())
        } else {
            Err(FloatFnError::Length {
                what,
                got: v.len(),
                want: len,
            })
        }
    };
    let mut emit = |y: f64| -> Result<(), FloatFnError> {
        out.push(fixed.encode(y, rounding)?);
        Ok(())
    };
    match kind {
        FloatFn::Softmax => {
            let live = |i: usize| masked.is_none_or(|m| !m[i]);
            let m = (0..len)
                .filter(|&i| live(i))
                .map(|i| x[i])
                .fold(f64::NEG_INFINITY, f64::max);
            // x becomes e in place, then every e / s is encoded.
            for (i, xi) in x.iter_mut().enumerate() {
                *xi = if live(i) { libm::exp(*xi - m) } else { 0.0 };
            }
            let s: f64 = x.iter().fold(0.0, |acc, v| acc + v);
            for &v in x.iter() {
                emit(if s > 0.0 { v / s } else { 0.0 })?;
            }
        }
        FloatFn::LayerNorm { eps } => {
            check("gamma", &params.gamma)?;
            check("beta", &params.beta)?;
            let mu = x.iter().fold(0.0, |acc, v| acc + v) / c;
            let v = x.iter().fold(0.0, |acc, xi| acc + (xi - mu) * (xi - mu)) / c;
            let sd = libm::sqrt(v + eps);
            for (xi, (g, b)) in x.iter().zip(params.gamma.iter().zip(&params.beta)) {
                emit((xi - mu) / sd * g + b)?;
            }
        }
        FloatFn::RmsNorm { eps } => {
            check("gamma", &params.gamma)?;
            let ms = x.iter().fold(0.0, |acc, xi| acc + xi * xi) / c;
            let r = libm::sqrt(ms + eps);
            for (xi, g) in x.iter().zip(&params.gamma) {
                emit(xi / r * g)?;
            }
        }
        _ => {
            for &v in x.iter() {
                emit(activation(kind, v))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx() -> FixedPoint {
        FixedPoint::new(37, 12).unwrap()
    }

    #[test]
    fn gelu_of_one_is_the_rounded_exact_value() {
        let mut q = [4096i64, -4096, 0];
        activation_slice(FloatFn::GeluErf, fx(), Rounding::Round, &mut q).unwrap();
        // GELU(1) = 0.8413447460685429, GELU(-1) = -0.15865525393145707 (erf form).
        assert_eq!(q, [3446, -650, 0]);
    }

    #[test]
    fn softmax_leaves_masked_entries_out() {
        let q = [4096, 8192, 4096 * 100];
        let y = row(
            FloatFn::Softmax,
            fx(),
            Rounding::Round,
            &q,
            Some(&[false, false, true]),
            &RowParams::default(),
        )
        .unwrap();
        // e^-1 / (1 + e^-1) = 0.2689414213699951 -> 1101.58 -> 1102.
        assert_eq!(y, [1102, 2994, 0]);
    }

    #[test]
    fn layernorm_normalises_with_epsilon() {
        let q = [4096, 8192, 12288, 16384];
        let p = RowParams {
            gamma: vec![1.0; 4],
            beta: vec![0.0; 4],
        };
        let y = row(
            FloatFn::LayerNorm { eps: 1e-12 },
            fx(),
            Rounding::Round,
            &q,
            None,
            &p,
        )
        .unwrap();
        // (x - 2.5) / sqrt(1.25): -1.3416, -0.4472, 0.4472, 1.3416.
        assert_eq!(y, [-5495, -1832, 1832, 5495]);
    }

    /// The GPU kernels (gpu/src/suf_ring_fn.cu) take erf(z) = +-1 for |z| >= 6 and
    /// tanh(u) = +-1 for |u| >= 22 without calling a function: libm must agree everywhere
    /// beyond those cuts, from the cut itself (and the doubles just above it) to infinity.
    #[test]
    fn erf_and_tanh_are_exactly_one_beyond_the_gpu_cuts() {
        for (cut, function) in [(6.0f64, libm::erf as fn(f64) -> f64), (22.0, libm::tanh)] {
            let mut points = vec![cut, f64::INFINITY, f64::MAX];
            let mut v = cut;
            for _ in 0..1000 {
                v = f64::from_bits(v.to_bits() + 1);
                points.push(v);
            }
            let mut v = cut;
            while v < 1e300 {
                points.push(v);
                v *= 1.0001;
            }
            for p in points {
                assert_eq!(function(p), 1.0, "at {p}");
                assert_eq!(function(-p), -1.0, "at -{p}");
            }
        }
    }

    #[test]
    fn values_beyond_f64_are_refused() {
        let fixed = FixedPoint::new(64, 12).unwrap();
        let mut q = [(1i64 << 53) + 1];
        let e = activation_slice(FloatFn::Silu, fixed, Rounding::Round, &mut q).unwrap_err();
        assert!(matches!(e, FloatFnError::Inexact(_)));
    }
}
