//! The ring Z_(2^n) of docs/ring-transport.md, written from the doc's formulas and nothing
//! else (no suf-fixed): Wrap on exact integers, Ars as a floor division, Enc with the
//! level's rounding.

/// Emulation level under test: decides the encoding rule and the nonlinear algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Products in the ring, nonlinear sites in f64, encoding rounds half to even.
    Ring,
    /// SIGMA's algorithms, encoding truncates toward zero.
    Sigma,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Ring => "ring",
            Level::Sigma => "sigma",
        }
    }
}

/// One ring: n bits, f fractional bits, and the level's encoding rule.
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    pub n: u32,
    pub f: u32,
    pub level: Level,
}

impl Ring {
    pub fn new(n: u32, f: u32, level: Level) -> Self {
        assert!(f < n && n <= 64, "n = {n}, f = {f}");
        Ring { n, f, level }
    }

    /// Wrap(v) = ((v + 2^(n-1)) mod 2^n) - 2^(n-1), on the exact integer.
    pub fn wrap(&self, v: i128) -> i64 {
        let modulus = 1i128 << self.n;
        let half = 1i128 << (self.n - 1);
        ((v + half).rem_euclid(modulus) - half) as i64
    }

    /// True when v lies outside the signed n-bit range (Wrap changes it).
    pub fn overflows(&self, v: i128) -> bool {
        let half = 1i128 << (self.n - 1);
        v < -half || v >= half
    }

    /// Ars(v, s) = floor(v / 2^s), v read as a signed n-bit value.
    pub fn ars(&self, v: i64, s: u32) -> i64 {
        let v = self.wrap(v as i128) as i128;
        self.wrap(v.div_euclid(1i128 << s))
    }

    /// R(x): the level's encoding rule on an exact f64.
    pub fn round(&self, v: f64) -> f64 {
        match self.level {
            Level::Ring => v.round_ties_even(),
            Level::Sigma => v.trunc(),
        }
    }

    /// Enc_s(x) = Wrap(R(x * 2^s)); x * 2^s is exact in f64 (a power-of-two scaling).
    pub fn enc_at(&self, x: f64, s: u32) -> i64 {
        assert!(x.is_finite(), "Enc of a non-finite value {x}");
        let v = self.round(x * 2f64.powi(s as i32));
        // Every value the models here encode is far below 2^126; past it an f64 -> i128
        // cast would saturate and the wrap would be wrong.
        assert!(
            v.abs() < 2f64.powi(126),
            "Enc of {x} at scale {s} is out of range"
        );
        self.wrap(v as i128)
    }

    /// Enc = Enc_f.
    pub fn enc(&self, x: f64) -> i64 {
        self.enc_at(x, self.f)
    }

    /// The real a ring value stands for, q * 2^-f (exact for |q| < 2^53).
    pub fn real(&self, q: i64) -> f64 {
        q as f64 * 2f64.powi(-(self.f as i32))
    }
}

/// A ring tensor: row-major i64 values with their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RingTensor {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

impl RingTensor {
    pub fn new(shape: Vec<usize>, data: Vec<i64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not hold {} values",
            data.len()
        );
        RingTensor { shape, data }
    }

    pub fn reshape(mut self, shape: Vec<usize>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), self.data.len());
        self.shape = shape;
        self
    }
}

/// Counts what the products saw: 2f sums that wrapped (the MPC run's overflow points).
#[derive(Debug, Default, Clone)]
pub struct ProductStats {
    pub sums: usize,
    pub wrapped: usize,
}

/// y = Wrap(Ars(Wrap(sum_k a_k b_k + bias), shift)) over one output element; a and b are
/// ring values at scale f, the bias at 2f. The sum is exact in i128 (wrapping adds keep
/// its low bits right even where it would not fit, which is all Wrap reads).
pub fn product(
    ring: &Ring,
    terms: impl Iterator<Item = (i64, i64)>,
    bias: i64,
    shift: u32,
    stats: &mut ProductStats,
) -> i64 {
    let s = terms.fold(bias as i128, |acc, (a, b)| {
        acc.wrapping_add(a as i128 * b as i128)
    });
    stats.sums += 1;
    stats.wrapped += usize::from(ring.overflows(s));
    ring.ars(ring.wrap(s), shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_ars_and_enc_follow_the_doc() {
        let r = Ring::new(37, 12, Level::Ring);
        assert_eq!(r.wrap(1 << 36), -(1 << 36));
        assert_eq!(r.wrap((1 << 36) - 1), (1 << 36) - 1);
        assert_eq!(r.wrap(-(1 << 36) - 1), (1 << 36) - 1);
        // REFERENCES.md section 2 (SIGMA's cleartext ARS): -4097 -> -2, -1 -> -1, 4095 -> 0.
        assert_eq!(r.ars(-4097, 12), -2);
        assert_eq!(r.ars(-1, 12), -1);
        assert_eq!(r.ars(4095, 12), 0);
        // Half to even at level ring, toward zero at level sigma.
        assert_eq!(r.enc(2.5 / 4096.0), 2);
        assert_eq!(r.enc(3.5 / 4096.0), 4);
        assert_eq!(r.enc(-2.5 / 4096.0), -2);
        let s = Ring::new(37, 12, Level::Sigma);
        assert_eq!(s.enc(-2.9 / 4096.0), -2);
        assert_eq!(s.enc(2.9 / 4096.0), 2);
        assert_eq!(s.enc_at(0.5, 24), 1 << 23);
    }
}
