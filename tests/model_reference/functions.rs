//! The nonlinear sites, re-implemented from their written definitions:
//! - level `ring`: the f64 formulas of docs/ring-transport.md ("Level ring"), libm's
//!   erf/tanh/exp, output Enc (round half to even);
//! - level `sigma`: SIGMA's algorithms from REFERENCES.md section 2 (tables built from the
//!   formulas there; fixed/src/tables.rs was read only to settle how each table entry is
//!   computed in f64, e.g. `x / SQRT_2` in the GELU table and the rsqrt bucket formula).

use crate::ring::Ring;

// ---- level ring: f64 formulas, output Enc ---------------------------------------------

pub fn ring_gelu_erf(ring: &Ring, q: i64) -> i64 {
    let x = ring.real(q);
    ring.enc(0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2)))
}

pub fn ring_gelu_tanh(ring: &Ring, q: i64) -> i64 {
    let x = ring.real(q);
    ring.enc(0.5 * x * (1.0 + libm::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))))
}

/// Softmax of one row; masked entries take no part and output 0.
pub fn ring_softmax(ring: &Ring, q: &[i64], masked: &[bool]) -> Vec<i64> {
    let x: Vec<f64> = q.iter().map(|&v| ring.real(v)).collect();
    let live = || x.iter().zip(masked).filter(|(_, &m)| !m).map(|(&v, _)| v);
    let m = live().fold(f64::NEG_INFINITY, f64::max);
    assert!(m.is_finite(), "softmax row with every entry masked");
    let e: Vec<f64> = x.iter().map(|&v| libm::exp(v - m)).collect();
    let mut s = 0.0;
    for (&v, &mk) in e.iter().zip(masked) {
        if !mk {
            s += v;
        }
    }
    e.iter()
        .zip(masked)
        .map(|(&v, &mk)| if mk { 0 } else { ring.enc(v / s) })
        .collect()
}

/// LayerNorm of one row; `g`, `b` are Enc(gamma), Enc(beta) (scale f).
pub fn ring_layernorm(ring: &Ring, q: &[i64], g: &[i64], b: &[i64], eps: f64) -> Vec<i64> {
    let c = q.len() as f64;
    let x: Vec<f64> = q.iter().map(|&v| ring.real(v)).collect();
    let mut sum = 0.0;
    for &v in &x {
        sum += v;
    }
    let mu = sum / c;
    let mut sq = 0.0;
    for &v in &x {
        sq += (v - mu) * (v - mu);
    }
    let var = sq / c;
    let sd = (var + eps).sqrt();
    x.iter()
        .zip(g.iter().zip(b))
        .map(|(&v, (&gq, &bq))| ring.enc((v - mu) / sd * ring.real(gq) + ring.real(bq)))
        .collect()
}

// ---- level sigma: SIGMA's algorithms --------------------------------------------------

/// SIGMA's tables, built once per ring from REFERENCES.md section 2's formulas.
pub struct SigmaTables {
    /// reluSubGelu: T[i] = floor((ReLU(i/64) - GELU(i/64)) * 2^12), i in [0, 255].
    gelu: Vec<i64>,
    /// E_hi[i] = trunc(e^(-i/16) * 2^12), E_lo[i] = trunc(e^(-i/4096) * 2^12).
    exp_hi: Vec<i64>,
    exp_lo: Vec<i64>,
}

/// The reciprocal table's width: ceil(log2 L) + 6 bits for rows of L = 128.
const RECIP_BITS: u32 = 13;

impl SigmaTables {
    pub fn new() -> Self {
        let gelu_exact = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let gelu = (0..=255)
            .map(|i| {
                let x = i as f64 / 64.0;
                ((x - gelu_exact(x)) * 4096.0).floor() as i64
            })
            .collect();
        let exp_table = |step: f64| -> Vec<i64> {
            (0..256)
                .map(|i| (libm::exp(-(i as f64) * step) * 4096.0).trunc() as i64)
                .collect()
        };
        SigmaTables {
            gelu,
            exp_hi: exp_table(1.0 / 16.0),
            exp_lo: exp_table(1.0 / 4096.0),
        }
    }

    /// GELU: Xt = floor(x * 2^6), c = min(|Xt|, 255), y = (x >= 0 ? x : 0) - T[c].
    pub fn gelu(&self, ring: &Ring, q: i64) -> i64 {
        assert_eq!(ring.f, 12, "SIGMA's tables are built for f = 12");
        let xt = (q as i128).div_euclid(64);
        let c = xt.unsigned_abs().min(255) as usize;
        let relu = if q >= 0 { q } else { 0 };
        ring.wrap(relu as i128 - self.gelu[c] as i128)
    }

    /// Softmax of one row: max, d = m - x clipped to 2^16 - 1, two-table nExp, den / 2^6
    /// into the 13-bit reciprocal table (index 0 reads 2^18 / 2^13), e * inv / 2^12.
    pub fn softmax(&self, ring: &Ring, q: &[i64], masked: &[bool]) -> Vec<i64> {
        let live = q.iter().zip(masked).filter(|(_, &m)| !m).map(|(&v, _)| v);
        let m = live.max().expect("softmax row with every entry masked");
        assert!(
            masked.iter().filter(|&&m| !m).count() <= 1 << (RECIP_BITS - 6),
            "row longer than the reciprocal table covers"
        );
        let e: Vec<i64> = q
            .iter()
            .zip(masked)
            .map(|(&v, &mk)| {
                if mk {
                    return 0;
                }
                let d = ring.wrap(m as i128 - v as i128).clamp(0, (1 << 16) - 1);
                let prod = self.exp_hi[(d >> 8) as usize] * self.exp_lo[(d & 255) as usize];
                ring.ars(ring.wrap(prod as i128), 12)
            })
            .collect();
        let den = ring.wrap(e.iter().map(|&v| v as i128).sum());
        let index = ring.ars(den, 6) & ((1 << RECIP_BITS) - 1);
        let inv = if index == 0 {
            (1i64 << 18) >> RECIP_BITS
        } else {
            (1i64 << 18) / index
        };
        e.iter()
            .zip(masked)
            .map(|(&v, &mk)| {
                if mk {
                    0
                } else {
                    ring.ars(ring.wrap(v as i128 * inv as i128), 12)
                }
            })
            .collect()
    }
}

/// rsqrt table entry for row width C: 2^24 / sqrt((128 + m) * 2^(k-7) / C), truncated,
/// where k = floor(log2 S) and m the 7 bits after S's leading one (S = 0 reads k = m = 0).
fn rsqrt_entry(s: u128, c: usize) -> i64 {
    let (k, m) = if s == 0 {
        (0i32, 0u128)
    } else {
        let k = 127 - s.leading_zeros() as i32;
        let m = if k >= 7 {
            (s >> (k - 7)) & 127
        } else {
            (s << (7 - k)) & 127
        };
        (k, m)
    };
    assert!(k < 64, "the 13-bit code holds a 6-bit exponent");
    let bucket = (128 + m) as f64 * 2f64.powi(k - 7);
    (2f64.powi(24) / (bucket / c as f64).sqrt()).trunc() as i64
}

/// What SIGMA's LayerNorm of one row saw: did the sum of squares leave n unsigned bits?
pub struct LayerNormRow {
    pub y: Vec<i64>,
    pub sum_sq_wrapped: bool,
    pub sum_wrapped: bool,
}

/// SIGMA's LayerNorm: mu = floor(sum / C) (C a power of two) or floor(sum * floor(2^f/C)
/// / 2^f); S = sum (x - mu)^2 at 2f read as n unsigned bits, no epsilon; r from the rsqrt
/// table; y = floor((floor((x - mu) r / 2^f) * gamma + beta_2f) / 2^f).
pub fn sigma_layernorm(ring: &Ring, q: &[i64], gamma: &[i64], beta_2f: &[i64]) -> LayerNormRow {
    let c = q.len();
    let f = ring.f;
    let sum: i128 = q.iter().map(|&v| v as i128).sum();
    let sum_wrapped = ring.overflows(sum);
    let sum = ring.wrap(sum);
    let mu = if c.is_power_of_two() {
        ring.ars(sum, c.trailing_zeros())
    } else {
        let inv_c = (1i128 << f) / c as i128;
        ring.ars(ring.wrap(sum as i128 * inv_c), f)
    };
    let centred: Vec<i64> = q
        .iter()
        .map(|&v| ring.wrap(v as i128 - mu as i128))
        .collect();
    let true_sq: i128 = centred
        .iter()
        .fold(0i128, |acc, &v| acc.wrapping_add(v as i128 * v as i128));
    let sum_sq_wrapped = !(0..1i128 << ring.n).contains(&true_sq);
    let s = true_sq.rem_euclid(1i128 << ring.n) as u128;
    let r = rsqrt_entry(s, c);
    let y = centred
        .iter()
        .zip(gamma.iter().zip(beta_2f))
        .map(|(&v, (&g, &b))| {
            let z = ring.ars(ring.wrap(v as i128 * r as i128), f);
            ring.ars(ring.wrap(z as i128 * g as i128 + b as i128), f)
        })
        .collect();
    LayerNormRow {
        y,
        sum_sq_wrapped,
        sum_wrapped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Level;

    fn q(xs: &[f64]) -> Vec<i64> {
        xs.iter().map(|x| (x * 4096.0) as i64).collect()
    }

    /// Values measured by compiling and running SIGMA's cleartext code (REFERENCES.md
    /// section 2, "Checked by compiling and running"): the reference must reproduce them.
    #[test]
    fn sigma_algorithms_reproduce_sigmas_cleartext_outputs() {
        let ring = Ring::new(50, 12, Level::Sigma);
        let t = SigmaTables::new();
        let gelu: Vec<i64> = q(&[-1.0, 0.5, 1.0, 3.0, -4.0])
            .into_iter()
            .map(|v| t.gelu(&ring, v))
            .collect();
        assert_eq!(gelu, [-649, 1417, 3447, 12272, 0]);
        let row = q(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(t.softmax(&ring, &row, &[false; 4]), [131, 358, 973, 2647]);
        let ln = |xs: &[f64]| {
            let c = xs.len();
            sigma_layernorm(&ring, &q(xs), &vec![4096; c], &vec![0; c]).y
        };
        assert_eq!(ln(&[1.0, 2.0, 3.0, 4.0]), [-5495, -1832, 1831, 5494]);
        assert_eq!(ln(&[1.0, 2.0, 3.0]), [-5014, 2, 5018]);
        assert_eq!(ln(&[1.0; 768]), vec![4096; 768]);
        let alt: Vec<f64> = (0..768)
            .map(|i| if i % 2 == 0 { 1.5 } else { -0.5 })
            .collect();
        assert_eq!(&ln(&alt)[..2], [4224, -3968]);
        assert_eq!(&ln(&alt[..128])[..2], [4096, -4096]);
    }

    #[test]
    fn layernorm_sum_of_squares_wraps_at_the_predicted_variance() {
        // S = C * var * 2^24 read as n unsigned bits leaves them once var >= 2^(n-24) / C:
        // 64 for C = 128 (REFERENCES.md's measurement), 256 for BERT-tiny's C = 32, n = 37.
        let ring = Ring::new(37, 12, Level::Sigma);
        for (c, sd) in [(128usize, 8.0), (32, 16.0)] {
            let row = |sd: f64| -> Vec<i64> {
                q(&(0..c)
                    .map(|i| if i % 2 == 0 { sd } else { -sd })
                    .collect::<Vec<_>>())
            };
            let wrapped = |sd: f64| {
                sigma_layernorm(&ring, &row(sd), &vec![4096; c], &vec![0; c]).sum_sq_wrapped
            };
            assert!(!wrapped(sd - 0.01), "C = {c}");
            assert!(wrapped(sd), "C = {c}");
        }
    }
}
