//! Integer arithmetic in Z_(2^n), as the FSS protocols compute it.

/// Wrap_n(v): the low `n_bits` bits of `v`, read as a signed two's-complement number.
/// `n_bits` must be in 1..=64.
#[inline(always)]
pub fn wrap_i64(v: i64, n_bits: u32) -> i64 {
    debug_assert!((1..=64).contains(&n_bits));
    let shift = 64 - n_bits;
    (v << shift) >> shift
}

/// Wrap_n of a wide integer (products at scale 2f are formed in i128).
#[inline(always)]
pub fn wrap_i128(v: i128, n_bits: u32) -> i64 {
    wrap_i64(v as i64, n_bits)
}

/// Arithmetic right shift by `shift` bits of a ring value, then wrapped: SIGMA's `TrFloor`
/// (floor(v / 2^shift)). The shift is taken on the signed n-bit reading of `v`.
#[inline(always)]
pub fn ars(v: i64, shift: u32, n_bits: u32) -> i64 {
    wrap_i64(wrap_i64(v, n_bits) >> shift.min(63), n_bits)
}
