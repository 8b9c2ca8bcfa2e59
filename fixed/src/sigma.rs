//! SIGMA's cleartext nonlinear algorithms on ring values, bit for bit (REFERENCES.md
//! section 2). Every table is a [`Descriptor`], so a file can replace any of them.
//!
//! Where SIGMA's GPU protocol computes mod 2^n we wrap with [`wrap_i64`]; its cleartext
//! C++ `modbw` leaves values below -2^(n-1) unwrapped, but the GPU (the protocol) wraps
//! properly and that is the behaviour emulated here. Inputs are read as signed n-bit values.

use crate::descriptor::Descriptor;
use crate::ring::{ars, wrap_i128, wrap_i64};
use crate::tables;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SigmaError {
    #[error("{op}: row is empty")]
    EmptyRow { op: &'static str },
    #[error("{op}: `{what}` has length {got}, the row has {want}")]
    LengthMismatch {
        op: &'static str,
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error(
        "softmax: {unmasked} unmasked entries, but the {bits}-bit reciprocal table `{table}` \
         covers rows of at most {max} (SIGMA sizes it ceil(log2 L) + 6 bits: supply a larger one)"
    )]
    RowTooLong {
        unmasked: usize,
        bits: u32,
        max: usize,
        table: String,
    },
    #[error("{op}: table `{table}` does not fit: {problem}")]
    TableMismatch {
        op: &'static str,
        table: String,
        problem: String,
    },
    #[error("n_bits = {n_bits}, frac_bits = {frac_bits}: need frac_bits < n_bits <= 64")]
    Bits { n_bits: u32, frac_bits: u32 },
}

/// SIGMA's `TrFloor`: floor(v / 2^shift), an exact arithmetic shift in the n-bit ring.
#[inline]
pub fn tr_floor(v: i64, shift: u32, n_bits: u32) -> i64 {
    ars(v, shift, n_bits)
}

/// GELU by reduce, clip, table (`sigma-gelu.json`): the whole construction lives in the
/// descriptor's pieces, so this only evaluates it.
#[inline]
pub fn gelu(q: i64, table: &Descriptor) -> i64 {
    table.eval(q)
}

/// SiLU, the same construction with a 10-bit clip (`sigma-silu.json`).
#[inline]
pub fn silu(q: i64, table: &Descriptor) -> i64 {
    table.eval(q)
}

/// The three tables of SIGMA's softmax, checked against each other once.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxTables {
    // Private: `recip_bits` is derived from `reciprocal` and must stay in step with it.
    nexp_hi: Descriptor,
    nexp_lo: Descriptor,
    reciprocal: Descriptor,
    recip_bits: u32,
}

impl SoftmaxTables {
    /// Checks that the reciprocal table is indexed by `bits`-bit values (domain [0, 2^bits)).
    pub fn new(
        nexp_hi: Descriptor,
        nexp_lo: Descriptor,
        reciprocal: Descriptor,
    ) -> Result<Self, SigmaError> {
        let size = reciprocal.input.max.wrapping_add(1);
        if reciprocal.input.min != 0 || size <= 0 || !(size as u64).is_power_of_two() {
            return Err(SigmaError::TableMismatch {
                op: "softmax",
                table: reciprocal.name.clone(),
                problem: format!(
                    "input domain [{}, {}] is not [0, 2^bits - 1]",
                    reciprocal.input.min, reciprocal.input.max
                ),
            });
        }
        let recip_bits = (size as u64).trailing_zeros();
        Ok(SoftmaxTables {
            nexp_hi,
            nexp_lo,
            reciprocal,
            recip_bits,
        })
    }

    /// SIGMA's own tables (13-bit reciprocal: rows of up to 128 entries).
    pub fn sigma() -> Self {
        Self::new(
            tables::nexp_hi(),
            tables::nexp_lo(),
            tables::reciprocal(13).expect("13 is a valid reciprocal width"),
        )
        .expect("the shipped tables fit together")
    }

    pub fn nexp_hi(&self) -> &Descriptor {
        &self.nexp_hi
    }

    pub fn nexp_lo(&self) -> &Descriptor {
        &self.nexp_lo
    }

    pub fn reciprocal(&self) -> &Descriptor {
        &self.reciprocal
    }

    pub fn recip_bits(&self) -> u32 {
        self.recip_bits
    }

    /// The longest row (unmasked entries) whose denominator the reciprocal table covers:
    /// den/64 <= L * 64 must stay <= 2^bits, where 2^bits wraps to index 0 = 2^18 / 2^bits.
    pub fn max_row_len(&self) -> usize {
        1usize << self.recip_bits.saturating_sub(6)
    }

    /// What [`softmax_row`] checks before any row: the ring and the tables' scales (for a
    /// backend that computes the rows elsewhere).
    pub fn check(&self, n_bits: u32, frac_bits: u32) -> Result<(), SigmaError> {
        check_bits(n_bits, frac_bits)?;
        self.check_scales(frac_bits)
    }

    /// The error of a row with `unmasked` entries past [`Self::max_row_len`].
    pub fn row_too_long(&self, unmasked: usize) -> SigmaError {
        SigmaError::RowTooLong {
            unmasked,
            bits: self.recip_bits,
            max: self.max_row_len(),
            table: self.reciprocal.name.clone(),
        }
    }

    fn check_scales(&self, f: u32) -> Result<(), SigmaError> {
        // d (scale f) is split as hi = d >> 8, lo = d & 255: lo is at scale f, hi at f - 8.
        let want = [
            (
                &self.nexp_lo,
                "input.scale_bits",
                self.nexp_lo.input.scale_bits,
                f,
            ),
            (
                &self.nexp_hi,
                "input.scale_bits",
                self.nexp_hi.input.scale_bits + 8,
                f,
            ),
            (
                &self.reciprocal,
                "output_scale_bits",
                self.reciprocal.output_scale_bits,
                f,
            ),
        ];
        for (table, field, got, want) in want {
            if got != want {
                return Err(SigmaError::TableMismatch {
                    op: "softmax",
                    table: table.name.clone(),
                    problem: format!("{field} does not match frac_bits = {want}"),
                });
            }
        }
        Ok(())
    }
}

fn check_bits(n_bits: u32, frac_bits: u32) -> Result<(), SigmaError> {
    if n_bits > 64 || frac_bits >= n_bits || 2 * frac_bits >= 63 {
        return Err(SigmaError::Bits { n_bits, frac_bits });
    }
    Ok(())
}

/// d = m - x is clipped here: 2^16 - 1 at scale 12 is 16.0, past which e^-d is 0 anyway.
const NEXP_CLIP: i64 = (1 << 16) - 1;

/// The n-bit ring an algorithm computes in, noting how wide its intermediates get: `need`
/// is the smallest ring that would hold every value it wrapped exactly (the node statistics'
/// "internal bits"; a sum of squares read as unsigned counts its bit length).
struct Ring {
    n: u32,
    need: u32,
}

impl Ring {
    fn new(n: u32) -> Self {
        Ring { n, need: 0 }
    }

    #[inline(always)]
    fn wrap(&mut self, v: i128) -> i64 {
        let magnitude = if v < 0 { !v } else { v };
        self.need = self.need.max(129 - magnitude.leading_zeros());
        wrap_i128(v, self.n)
    }

    #[inline(always)]
    fn wrap_unsigned(&mut self, v: i128) -> u64 {
        self.need = self.need.max(128 - v.unsigned_abs().leading_zeros());
        unsigned_n(wrap_i128(v, self.n), self.n)
    }
}

/// A row's output and the ring size its intermediates needed ([`Ring`]).
pub type Traced = (Vec<i64>, u32);

/// SIGMA's softmax of one row (`gpu_softmax.cu`, `gpu_nexp.cu`, `gpu_inverse.cu`).
///
/// Masked entries take no part and output 0 (causal rows run over the lower triangle only).
pub fn softmax_row(
    q: &[i64],
    masked: &[bool],
    tables: &SoftmaxTables,
    n_bits: u32,
    f: u32,
) -> Result<Vec<i64>, SigmaError> {
    softmax_row_traced(q, masked, tables, n_bits, f).map(|(y, _)| y)
}

/// [`softmax_row`] and the ring size its intermediates needed.
pub fn softmax_row_traced(
    q: &[i64],
    masked: &[bool],
    tables: &SoftmaxTables,
    n_bits: u32,
    f: u32,
) -> Result<Traced, SigmaError> {
    check_bits(n_bits, f)?;
    tables.check_scales(f)?;
    if masked.len() != q.len() {
        return Err(SigmaError::LengthMismatch {
            op: "softmax",
            what: "masked",
            got: masked.len(),
            want: q.len(),
        });
    }
    let unmasked = masked.iter().filter(|&&m| !m).count();
    if unmasked > tables.max_row_len() {
        return Err(tables.row_too_long(unmasked));
    }
    let mut ring = Ring::new(n_bits);
    let x: Vec<i64> = q.iter().map(|&v| wrap_i64(v, n_bits)).collect();
    let live = || x.iter().zip(masked).filter(|(_, &m)| !m).map(|(&v, _)| v);
    let Some(max) = live().max() else {
        return Ok((vec![0; q.len()], 0));
    };
    let e: Vec<i64> = x
        .iter()
        .zip(masked)
        .map(|(&v, &m)| {
            if m {
                return 0;
            }
            // Non-negative for inputs inside n - f bits (SIGMA's assumption); clip both ends.
            let d = ring.wrap(max as i128 - v as i128).clamp(0, NEXP_CLIP);
            let prod = tables.nexp_hi.eval(d >> 8) as i128 * tables.nexp_lo.eval(d & 255) as i128;
            tr_floor(ring.wrap(prod), 12, n_bits)
        })
        .collect();
    let den = ring.wrap(e.iter().map(|&v| v as i128).sum());
    let den6 = tr_floor(den, 6, n_bits);
    // The table is indexed by the low `bits` bits: den6 == 2^bits (all entries at the max) wraps to 0.
    let index = den6 & ((1i64 << tables.recip_bits) - 1);
    let inv = tables.reciprocal.eval(index);
    let y = e
        .iter()
        .zip(masked)
        .map(|(&v, &m)| {
            if m {
                0
            } else {
                tr_floor(ring.wrap(v as i128 * inv as i128), 12, n_bits)
            }
        })
        .collect();
    Ok((y, ring.need))
}

/// The 13-bit float code of an unsigned sum of squares: k = floor(log2 S) (6 bits), then
/// the 7 mantissa bits after the leading one, truncated (shifted left when k < 7).
/// S == 0 gives code 0, the entry SIGMA's GPU reads.
pub fn rsqrt_index(s: u64) -> i64 {
    if s == 0 {
        return 0;
    }
    let k = 63 - s.leading_zeros();
    let m = if k >= 7 {
        (s >> (k - 7)) & 127
    } else {
        (s << (7 - k)) & 127
    };
    (k as i64) * 128 + m as i64
}

/// S = sum of squares read as an unsigned n-bit value (the protocol's view of the ring).
fn unsigned_n(v: i64, n_bits: u32) -> u64 {
    let mask = if n_bits == 64 {
        u64::MAX
    } else {
        (1u64 << n_bits) - 1
    };
    (v as u64) & mask
}

fn check_rsqrt(rsqrt: &Descriptor, op: &'static str, c: usize, f: u32) -> Result<(), SigmaError> {
    let bad = |problem: String| SigmaError::TableMismatch {
        op,
        table: rsqrt.name.clone(),
        problem,
    };
    if rsqrt.output_scale_bits != f {
        return Err(bad(format!(
            "output_scale_bits = {} but frac_bits = {f}",
            rsqrt.output_scale_bits
        )));
    }
    match rsqrt.params.get("C") {
        Some(&tc) if tc != c as i64 => Err(bad(format!("built for C = {tc}, the row has C = {c}"))),
        _ => Ok(()),
    }
}

/// What [`layernorm_row`] and [`rmsnorm_row`] check of the ring and the rsqrt table before
/// any row of width `c` (for a backend that computes the rows elsewhere).
pub fn check_norm(
    rsqrt: &Descriptor,
    op: &'static str,
    c: usize,
    n_bits: u32,
    f: u32,
) -> Result<(), SigmaError> {
    check_bits(n_bits, f)?;
    if c == 0 {
        return Err(SigmaError::EmptyRow { op });
    }
    check_rsqrt(rsqrt, op, c, f)
}

fn check_len(op: &'static str, what: &'static str, v: &[i64], c: usize) -> Result<(), SigmaError> {
    if v.len() != c {
        return Err(SigmaError::LengthMismatch {
            op,
            what,
            got: v.len(),
            want: c,
        });
    }
    Ok(())
}

/// SIGMA's mean: a shift when C is a power of two, else a multiply by floor(2^f / C)
/// (biased: for C = 768 it is 5/4096, i.e. 0.9375 of the true mean).
fn mean(x: &[i64], ring: &mut Ring, f: u32) -> i64 {
    let c = x.len();
    let n_bits = ring.n;
    let sum = ring.wrap(x.iter().map(|&v| v as i128).sum());
    if c.is_power_of_two() {
        tr_floor(sum, c.trailing_zeros(), n_bits)
    } else {
        let inv_c = ((1i128 << f) / c as i128) as i64;
        tr_floor(ring.wrap(sum as i128 * inv_c as i128), f, n_bits)
    }
}

/// The normalised row at scale f before the affine part: floor((x - mu) * r / 2^f).
fn normalise(x: &[i64], mu: i64, rsqrt: &Descriptor, ring: &mut Ring, f: u32) -> Vec<i64> {
    let n_bits = ring.n;
    let centred: Vec<i64> = x
        .iter()
        .map(|&v| ring.wrap(v as i128 - mu as i128))
        .collect();
    // Wrapping: only the low n bits matter, and n = 64 squares may overflow an i128 sum.
    let sum_sq = centred
        .iter()
        .fold(0i128, |acc, &v| acc.wrapping_add(v as i128 * v as i128));
    let s = ring.wrap_unsigned(sum_sq);
    let r = rsqrt.eval(rsqrt_index(s));
    centred
        .iter()
        .map(|&v| tr_floor(ring.wrap(v as i128 * r as i128), f, n_bits))
        .collect()
}

/// SIGMA's LayerNorm of one row (`gpu_layernorm.cu`): no epsilon, biased mean for C not a
/// power of two, 13-bit float rsqrt table. `gamma_q` is at scale f, `beta_q2f` at scale 2f.
pub fn layernorm_row(
    q: &[i64],
    gamma_q: &[i64],
    beta_q2f: &[i64],
    rsqrt: &Descriptor,
    n_bits: u32,
    f: u32,
) -> Result<Vec<i64>, SigmaError> {
    layernorm_row_traced(q, gamma_q, beta_q2f, rsqrt, n_bits, f).map(|(y, _)| y)
}

/// [`layernorm_row`] and the ring size its intermediates needed.
pub fn layernorm_row_traced(
    q: &[i64],
    gamma_q: &[i64],
    beta_q2f: &[i64],
    rsqrt: &Descriptor,
    n_bits: u32,
    f: u32,
) -> Result<Traced, SigmaError> {
    const OP: &str = "layernorm";
    check_bits(n_bits, f)?;
    let c = q.len();
    if c == 0 {
        return Err(SigmaError::EmptyRow { op: OP });
    }
    check_len(OP, "gamma", gamma_q, c)?;
    check_len(OP, "beta", beta_q2f, c)?;
    check_rsqrt(rsqrt, OP, c, f)?;
    let mut ring = Ring::new(n_bits);
    let x: Vec<i64> = q.iter().map(|&v| wrap_i64(v, n_bits)).collect();
    let mu = mean(&x, &mut ring, f);
    let y = normalise(&x, mu, rsqrt, &mut ring, f)
        .into_iter()
        .zip(gamma_q.iter().zip(beta_q2f))
        .map(|(z, (&g, &b))| {
            let y2f = z as i128 * g as i128 + b as i128;
            tr_floor(ring.wrap(y2f), f, n_bits)
        })
        .collect();
    Ok((y, ring.need))
}

/// RMSNorm of one row: NOT in SIGMA, our labelled extension for Llama-style models.
/// SIGMA's LayerNorm with mu = 0 and no beta: S = sum x^2, the same rsqrt table for C.
pub fn rmsnorm_row(
    q: &[i64],
    gamma_q: &[i64],
    rsqrt: &Descriptor,
    n_bits: u32,
    f: u32,
) -> Result<Vec<i64>, SigmaError> {
    rmsnorm_row_traced(q, gamma_q, rsqrt, n_bits, f).map(|(y, _)| y)
}

/// [`rmsnorm_row`] and the ring size its intermediates needed.
pub fn rmsnorm_row_traced(
    q: &[i64],
    gamma_q: &[i64],
    rsqrt: &Descriptor,
    n_bits: u32,
    f: u32,
) -> Result<Traced, SigmaError> {
    const OP: &str = "rmsnorm";
    check_bits(n_bits, f)?;
    let c = q.len();
    if c == 0 {
        return Err(SigmaError::EmptyRow { op: OP });
    }
    check_len(OP, "gamma", gamma_q, c)?;
    check_rsqrt(rsqrt, OP, c, f)?;
    let mut ring = Ring::new(n_bits);
    let x: Vec<i64> = q.iter().map(|&v| wrap_i64(v, n_bits)).collect();
    let y = normalise(&x, 0, rsqrt, &mut ring, f)
        .into_iter()
        .zip(gamma_q)
        .map(|(z, &g)| tr_floor(ring.wrap(z as i128 * g as i128), f, n_bits))
        .collect();
    Ok((y, ring.need))
}

#[cfg(test)]
#[path = "sigma_tests.rs"]
mod tests;
