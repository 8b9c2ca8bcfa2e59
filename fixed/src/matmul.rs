//! Matrix products in the ring, as the FSS protocols compute them (SPEC.md section 2,
//! level `ring`): operands are ring values at scale f, their product is formed exactly at
//! scale 2f, the bias (at 2f) is added, the sum is wrapped to n bits, then truncated by f
//! bits (SIGMA's `TrFloor` when the rule is floor) and wrapped again.
//!
//! The products are exact. When every partial sum provably stays below 2^53 in magnitude
//! the product runs as an f64 GEMM on integer-valued operands (fast, and exact because
//! every intermediate is an integer an f64 holds); otherwise it falls back to wrapping
//! `i64` arithmetic, which is exact modulo 2^64 and so modulo 2^n.

use crate::{pow2, wrap_i64, FixedPoint, Rounding};

/// A strided matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl<T: Copy> Strided<'_, T> {
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> T {
        self.data[(i as isize * self.row_stride + j as isize * self.col_stride) as usize]
    }

    /// Every (i, j) addresses inside `data`: the precondition of the unsafe GEMM.
    fn check(&self, what: &'static str) -> Result<(), MatMulError> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let corners = [
            (0, 0),
            (self.rows - 1, 0),
            (0, self.cols - 1),
            (self.rows - 1, self.cols - 1),
        ];
        let inside = corners.iter().all(|&(i, j)| {
            let at = i as i128 * self.row_stride as i128 + j as i128 * self.col_stride as i128;
            at >= 0 && at < self.data.len() as i128
        });
        if inside {
            Ok(())
        } else {
            Err(MatMulError::OutOfBounds { what })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatMulError {
    #[error("ring product: {what}'s strides address outside its data")]
    OutOfBounds { what: &'static str },
    #[error("ring product: {what} has {got} values, expected {want}")]
    Shape {
        what: &'static str,
        got: usize,
        want: usize,
    },
}

/// What the products looked like before truncation: how close the ring came to wrapping.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProductStats {
    /// Largest |product + bias| at scale 2f, in real units (2^-2f per unit).
    pub max_abs_real: f64,
    /// Elements whose product + bias fell outside the n-bit ring at scale 2f (they wrapped).
    pub overflows: usize,
    /// Elements computed.
    pub elements: usize,
}

impl ProductStats {
    pub fn merge(&mut self, other: ProductStats) {
        self.max_abs_real = self.max_abs_real.max(other.max_abs_real);
        self.overflows += other.overflows;
        self.elements += other.elements;
    }
}

/// One ring matrix product with its truncation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingMatMul {
    pub fixed: FixedPoint,
    /// How the 2f-scale sum is brought back to scale f (floor = arithmetic right shift).
    pub truncation: Rounding,
    /// Bits dropped after the product: f, or f + 3 when SIGMA folds attention's 1/8 in.
    pub shift: u32,
}

const EXACT_F64: u128 = 1 << 53;

fn max_abs(data: &[i64]) -> u64 {
    data.iter().fold(0u64, |m, v| m.max(v.unsigned_abs()))
}

impl RingMatMul {
    /// `out[i * n + j]` = the ring value (scale f) of row i of `a` times column j of `b`,
    /// plus `bias_2f[j]`. `a` and `b` hold ring values at scale f. `b_f64`, when given, is
    /// `b.data` as f64 (weights converted once), used where the f64 GEMM is exact.
    pub fn run(
        &self,
        a: Strided<i64>,
        b: Strided<i64>,
        b_f64: Option<&[f64]>,
        bias_2f: Option<&[i64]>,
        out: &mut [i64],
    ) -> Result<ProductStats, MatMulError> {
        self.run_with(a, b, None, b_f64, bias_2f, out)
    }

    /// `run`, with `a_f64` (when given, `a.data` as f64: converted once for a whole batch).
    pub fn run_with(
        &self,
        a: Strided<i64>,
        b: Strided<i64>,
        a_f64: Option<&[f64]>,
        b_f64: Option<&[f64]>,
        bias_2f: Option<&[i64]>,
        out: &mut [i64],
    ) -> Result<ProductStats, MatMulError> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let shape = |what, got, want| {
            if got == want {
                Ok(())
            } else {
                Err(MatMulError::Shape { what, got, want })
            }
        };
        shape("B's rows", b.rows, k)?;
        shape("the output", out.len(), m * n)?;
        if let Some(bias) = bias_2f {
            shape("the bias", bias.len(), n)?;
        }
        if let Some(af) = a_f64 {
            shape("A as f64", af.len(), a.data.len())?;
        }
        if let Some(bf) = b_f64 {
            shape("B as f64", bf.len(), b.data.len())?;
        }
        a.check("A")?;
        b.check("B")?;
        // Every partial sum of integer products is bounded by this; below 2^53 the f64
        // GEMM computes each one exactly.
        let bound = max_abs(a.data) as u128 * max_abs(b.data) as u128 * k as u128;
        if bound < EXACT_F64 {
            let (a_converted, b_converted);
            let af = match a_f64 {
                Some(af) => af,
                None => {
                    a_converted = a.data.iter().map(|&v| v as f64).collect::<Vec<f64>>();
                    &a_converted
                }
            };
            let bf = match b_f64 {
                Some(bf) => bf,
                None => {
                    b_converted = b.data.iter().map(|&v| v as f64).collect::<Vec<f64>>();
                    &b_converted
                }
            };
            // The GEMM writes its f64 products straight into `out`'s memory (beta = 0: the
            // old contents are never read); `finish` reads them back as f64.
            let c = out.as_mut_ptr() as *mut f64;
            if m > 0 && n > 0 && k > 0 {
                // SAFETY: `check` proved every (i, j) of both views addresses inside their
                // slices (af/bf have the views' layouts); `out` holds m x n i64s, the size
                // and alignment of m x n f64s, row-major, and nothing else reads it meanwhile.
                unsafe {
                    matrixmultiply::dgemm(
                        m,
                        k,
                        n,
                        1.0,
                        af.as_ptr(),
                        a.row_stride,
                        a.col_stride,
                        bf.as_ptr(),
                        b.row_stride,
                        b.col_stride,
                        0.0,
                        c,
                        n as isize,
                        1,
                    );
                }
            } else {
                // k = 0: every product is the empty sum (0.0 has the bit pattern 0).
                out.fill(0);
            }
            return Ok(self.finish(out, n, bias_2f, true));
        }
        wrapping_product(a, b, out);
        Ok(self.finish(out, n, bias_2f, false))
    }

    /// Adds the bias, records overflow, wraps, truncates: the step after every product.
    /// `from_f64`: `out` holds the f64 GEMM's integer-valued products as f64 bit patterns.
    fn finish(
        &self,
        out: &mut [i64],
        n: usize,
        bias_2f: Option<&[i64]>,
        from_f64: bool,
    ) -> ProductStats {
        let shift = self.shift;
        // One loop per rule, so the rule is not matched per element.
        match self.truncation {
            Rounding::Floor => self.finish_with(out, n, bias_2f, from_f64, |v| {
                truncate(v, shift, Rounding::Floor)
            }),
            Rounding::Trunc => self.finish_with(out, n, bias_2f, from_f64, |v| {
                truncate(v, shift, Rounding::Trunc)
            }),
            Rounding::Round => self.finish_with(out, n, bias_2f, from_f64, |v| {
                truncate(v, shift, Rounding::Round)
            }),
        }
    }

    #[inline(always)]
    fn finish_with(
        &self,
        out: &mut [i64],
        n: usize,
        bias_2f: Option<&[i64]>,
        from_f64: bool,
        trunc: impl Fn(i64) -> i64,
    ) -> ProductStats {
        let bits = self.fixed.n_bits();
        // |product + bias| over the elements whose sum fits an i64, and over those (never
        // seen in practice) whose exact sum, formed in i128, does not.
        let (mut max_abs, mut max_abs_wide) = (0u64, 0u128);
        let mut overflows = 0usize;
        let mut step = |o: &mut i64, b: i64| {
            let p = if from_f64 {
                f64::from_bits(*o as u64) as i64
            } else {
                *o
            };
            // The wrapping sum is the exact sum mod 2^64, so wrapping it to n bits is
            // exact either way; only the statistics need the exact sum.
            let (sum, carry) = p.overflowing_add(b);
            let wrapped = wrap_i64(sum, bits);
            if carry {
                // |p + b| >= 2^63 >= 2^(n-1): outside the ring.
                max_abs_wide = max_abs_wide.max((p as i128 + b as i128).unsigned_abs());
                overflows += 1;
            } else {
                max_abs = max_abs.max(sum.unsigned_abs());
                // Outside [-2^(n-1), 2^(n-1)) exactly when wrapping changes it.
                overflows += (wrapped != sum) as usize;
            }
            *o = wrap_i64(trunc(wrapped), bits);
        };
        match bias_2f {
            Some(bias) if n > 0 => {
                for row in out.chunks_mut(n) {
                    for (o, &b) in row.iter_mut().zip(bias) {
                        step(o, b);
                    }
                }
            }
            _ => {
                for o in out.iter_mut() {
                    step(o, 0);
                }
            }
        }
        let max_abs = max_abs_wide.max(max_abs as u128);
        ProductStats {
            max_abs_real: max_abs as f64 * pow2(-2 * self.fixed.frac_bits() as i32),
            overflows,
            elements: out.len(),
        }
    }
}

/// out = a x b in wrapping i64 arithmetic (exact modulo 2^64, hence modulo 2^n), walking
/// both operands along their contiguous axis: dot products when b's columns are contiguous
/// (Gemm's transB weights), row updates when its rows are, so the inner loops vectorise.
fn wrapping_product(a: Strided<i64>, b: Strided<i64>, out: &mut [i64]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let row_of_a = |i: usize| -> Vec<i64> { (0..k).map(|l| a.at(i, l)).collect() };
    if b.row_stride == 1 {
        let columns: Vec<Vec<i64>> = (0..n)
            .map(|j| (0..k).map(|l| b.at(l, j)).collect())
            .collect();
        for i in 0..m {
            let x = row_of_a(i);
            for (o, col) in out[i * n..(i + 1) * n].iter_mut().zip(&columns) {
                *o = x
                    .iter()
                    .zip(col)
                    .fold(0i64, |acc, (&p, &q)| acc.wrapping_add(p.wrapping_mul(q)));
            }
        }
    } else {
        let rows: Vec<Vec<i64>> = (0..k)
            .map(|l| (0..n).map(|j| b.at(l, j)).collect())
            .collect();
        for i in 0..m {
            let x = row_of_a(i);
            let acc = &mut out[i * n..(i + 1) * n];
            acc.fill(0);
            for (&p, row) in x.iter().zip(&rows) {
                if p != 0 {
                    for (o, &q) in acc.iter_mut().zip(row) {
                        *o = o.wrapping_add(p.wrapping_mul(q));
                    }
                }
            }
        }
    }
}

/// v / 2^shift, rounded by `rule`, on exact integers.
#[inline(always)]
pub fn truncate(v: i64, shift: u32, rule: Rounding) -> i64 {
    if shift == 0 {
        return v;
    }
    let floor = v >> shift;
    let rem = v - (floor << shift);
    match rule {
        Rounding::Floor => floor,
        Rounding::Trunc => floor + (v < 0 && rem != 0) as i64,
        Rounding::Round => {
            let half = 1i64 << (shift - 1);
            let up = rem > half || (rem == half && floor & 1 == 1);
            floor + up as i64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(data: &[i64], rows: usize, cols: usize) -> Strided<'_, i64> {
        Strided {
            data,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    #[test]
    fn truncate_matches_each_rule() {
        for v in -40i64..40 {
            let exact = v as f64 / 8.0;
            assert_eq!(truncate(v, 3, Rounding::Floor), exact.floor() as i64);
            assert_eq!(truncate(v, 3, Rounding::Trunc), exact.trunc() as i64);
            assert_eq!(
                truncate(v, 3, Rounding::Round),
                exact.round_ties_even() as i64,
                "{v}"
            );
        }
        // SIGMA's ARS vectors (REFERENCES.md section 2).
        assert_eq!(truncate(-4097, 12, Rounding::Floor), -2);
        assert_eq!(truncate(-1, 12, Rounding::Floor), -1);
        assert_eq!(truncate(4095, 12, Rounding::Floor), 0);
    }

    #[test]
    fn product_wraps_at_2f_when_the_ring_is_small() {
        // n = 20, f = 12: products wrap from 2^(20-1-24) = 1/32 on; 0.5 * 1.0 = 2^23 at 2f
        // is 0 mod 2^20.
        let fixed = FixedPoint::new(20, 12).unwrap();
        let op = RingMatMul {
            fixed,
            truncation: Rounding::Floor,
            shift: 12,
        };
        let a = [2048];
        let b = [4096];
        let mut out = [0i64];
        let stats = op
            .run(view(&a, 1, 1), view(&b, 1, 1), None, None, &mut out)
            .unwrap();
        assert_eq!(out, [0]);
        assert_eq!(stats.overflows, 1);
        assert_eq!(stats.max_abs_real, 0.5);
    }

    #[test]
    fn strides_outside_the_data_are_an_error_not_a_read() {
        let fixed = FixedPoint::new(37, 12).unwrap();
        let op = RingMatMul {
            fixed,
            truncation: Rounding::Floor,
            shift: 12,
        };
        let a = [1i64, 2, 3, 4];
        let bad = Strided {
            data: &a,
            rows: 2,
            cols: 2,
            row_stride: 3,
            col_stride: 1,
        };
        let mut out = [0i64; 4];
        let e = op
            .run(bad, view(&a, 2, 2), None, None, &mut out)
            .unwrap_err();
        assert_eq!(e, MatMulError::OutOfBounds { what: "A" });
    }

    #[test]
    fn ring_values_beyond_2_53_stay_exact() {
        // n = 64: a single operand of 2^60 + 1 is not an f64; the product must still be exact.
        let fixed = FixedPoint::new(64, 12).unwrap();
        let op = RingMatMul {
            fixed,
            truncation: Rounding::Floor,
            shift: 0,
        };
        let a = [(1i64 << 60) + 1];
        let b = [1i64];
        let mut out = [0i64];
        op.run(view(&a, 1, 1), view(&b, 1, 1), None, None, &mut out)
            .unwrap();
        assert_eq!(out, [(1i64 << 60) + 1]);
    }

    proptest! {
        #[test]
        fn f64_path_equals_integer_reference(
            m in 1usize..5, k in 1usize..9, n in 1usize..5,
            seed in any::<u64>(), n_bits in 30u32..64, shift in 0u32..16,
        ) {
            let fixed = FixedPoint::new(n_bits, 12).unwrap();
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) as i64 % 200_000) - 100_000 };
            let a: Vec<i64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<i64> = (0..k * n).map(|_| next()).collect();
            let bias: Vec<i64> = (0..n).map(|_| next() * 1000).collect();
            for rule in [Rounding::Floor, Rounding::Trunc, Rounding::Round] {
                let op = RingMatMul { fixed, truncation: rule, shift };
                let mut out = vec![0i64; m * n];
                op.run(view(&a, m, k), view(&b, k, n), None, Some(&bias), &mut out).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let mut acc = bias[j] as i128;
                        for l in 0..k {
                            acc += a[i * k + l] as i128 * b[l * n + j] as i128;
                        }
                        let w = fixed.wrap(acc);
                        let expect = fixed.wrap(truncate(w, shift, rule) as i128);
                        prop_assert_eq!(out[i * n + j], expect);
                    }
                }
            }
        }

        #[test]
        fn the_wrapping_path_is_exact_mod_2_64_in_both_layouts(
            m in 1usize..4, k in 1usize..7, n in 1usize..5, seed in any::<u64>(),
        ) {
            let fixed = FixedPoint::new(64, 12).unwrap();
            let op = RingMatMul { fixed, truncation: Rounding::Floor, shift: 0 };
            let mut s = seed;
            // Operands near 2^40: their products overflow f64's 2^53, forcing the i64 path.
            let mut next = || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 20) as i64 % (1 << 41)) - (1 << 40)
            };
            let a: Vec<i64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<i64> = (0..k * n).map(|_| next()).collect();
            // b transposed: stored [n][k], read through strides as the same k x n matrix.
            let bt: Vec<i64> = (0..n).flat_map(|j| (0..k).map(move |l| (l, j))).map(|(l, j)| b[l * n + j]).collect();
            let bt_view = Strided { data: &bt, rows: k, cols: n, row_stride: 1, col_stride: k as isize };
            for bv in [view(&b, k, n), bt_view] {
                let mut out = vec![0i64; m * n];
                op.run(view(&a, m, k), bv, None, None, &mut out).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let exact: i128 = (0..k).map(|l| a[i * k + l] as i128 * b[l * n + j] as i128).sum();
                        prop_assert_eq!(out[i * n + j], exact as i64, "({}, {})", i, j);
                    }
                }
            }
        }

        #[test]
        fn wide_operands_take_the_exact_integer_path(a0 in -(1i64 << 40)..(1i64 << 40), b0 in -(1i64 << 40)..(1i64 << 40)) {
            let fixed = FixedPoint::new(64, 12).unwrap();
            let op = RingMatMul { fixed, truncation: Rounding::Floor, shift: 12 };
            let a = [a0, 3];
            let b = [b0, -5];
            let mut out = [0i64];
            op.run(view(&a, 1, 2), view(&b, 2, 1), None, None, &mut out).unwrap();
            let expect = a0.wrapping_mul(b0).wrapping_sub(15) >> 12;
            prop_assert_eq!(out[0], expect);
        }
    }
}
