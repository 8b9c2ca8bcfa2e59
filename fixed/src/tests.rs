use super::*;
use proptest::prelude::*;

fn fp(n: u32, f: u32) -> FixedPoint {
    FixedPoint::new(n, f).unwrap()
}

#[test]
fn parameter_checks() {
    assert!(FixedPoint::new(37, 12).is_ok());
    assert!(FixedPoint::new(64, 12).is_ok());
    assert!(FixedPoint::new(13, 12).is_ok());
    for (n, f) in [(12, 12), (11, 12), (65, 12), (0, 0), (128, 12)] {
        let err = FixedPoint::new(n, f).unwrap_err();
        assert_eq!(
            err,
            FixedError::BitsOutOfRange {
                n_bits: n,
                frac_bits: f
            }
        );
        assert!(err.to_string().contains(&format!("n_bits = {n}")), "{err}");
    }
}

#[test]
fn encode_rounding_rules_by_hand() {
    let p = fp(37, 12);
    // 1.5 / 4096 -> 1.5 at scale f: ties to even -> 2; trunc -> 1; floor -> 1.
    let x = 1.5 / 4096.0;
    assert_eq!(p.encode(x, Rounding::Round).unwrap(), 2);
    assert_eq!(p.encode(x, Rounding::Trunc).unwrap(), 1);
    assert_eq!(p.encode(x, Rounding::Floor).unwrap(), 1);
    // 2.5 ulp -> ties to even gives 2, not 3.
    assert_eq!(p.encode(2.5 / 4096.0, Rounding::Round).unwrap(), 2);
    // Negative ties: -1.5 -> -2 (even), trunc -> -1, floor -> -2.
    let x = -1.5 / 4096.0;
    assert_eq!(p.encode(x, Rounding::Round).unwrap(), -2);
    assert_eq!(p.encode(x, Rounding::Trunc).unwrap(), -1);
    assert_eq!(p.encode(x, Rounding::Floor).unwrap(), -2);
    // -0.3 ulp: round -> 0, trunc -> 0, floor -> -1.
    let x = -0.3 / 4096.0;
    assert_eq!(p.encode(x, Rounding::Round).unwrap(), 0);
    assert_eq!(p.encode(x, Rounding::Trunc).unwrap(), 0);
    assert_eq!(p.encode(x, Rounding::Floor).unwrap(), -1);
    // A plain value: 1.0 -> 4096, -3.25 -> -13312.
    assert_eq!(p.encode(1.0, Rounding::Round).unwrap(), 4096);
    assert_eq!(p.encode(-3.25, Rounding::Trunc).unwrap(), -13312);
}

#[test]
fn ring_edges_wrap_around() {
    // n = 20, f = 12: reals in [-128, 128) survive; 128 wraps to -128.
    let p = fp(20, 12);
    assert_eq!(p.real_bound(), 128.0);
    assert_eq!(p.ring_min(), -(1 << 19));
    assert_eq!(p.ring_max(), (1 << 19) - 1);
    assert_eq!(
        p.quantize(127.999755859375, Rounding::Round).unwrap(),
        127.999755859375
    );
    assert_eq!(p.quantize(-128.0, Rounding::Round).unwrap(), -128.0);
    assert_eq!(p.quantize(128.0, Rounding::Round).unwrap(), -128.0);
    assert_eq!(p.quantize(129.5, Rounding::Round).unwrap(), -126.5);
    assert_eq!(
        p.quantize(-128.000244140625, Rounding::Round).unwrap(),
        127.999755859375
    );
    // Two full turns of the ring land on the same value.
    assert_eq!(p.quantize(3.0 + 512.0, Rounding::Round).unwrap(), 3.0);
    // Rounding up into the bound wraps: 127.99999 rounds to 128 -> -128.
    assert_eq!(p.quantize(127.99999, Rounding::Round).unwrap(), -128.0);
    assert_eq!(
        p.quantize(127.99999, Rounding::Trunc).unwrap(),
        127.999755859375
    );
}

#[test]
fn full_width_ring_and_huge_values_are_exact() {
    let p = fp(64, 12);
    assert_eq!(p.encode(-1.0, Rounding::Round).unwrap(), -4096);
    // 2^70 * 2^12 = 2^82 = 0 mod 2^64.
    assert_eq!(p.encode(2f64.powi(70), Rounding::Round).unwrap(), 0);
    // 2^51 + 1 at scale 12 -> 2^63 + 2^12 mod 2^64 -> -2^63 + 4096.
    assert_eq!(
        p.encode(2f64.powi(51) + 1.0, Rounding::Round).unwrap(),
        i64::MIN + 4096
    );
    let q = fp(50, 12);
    // f32::MIN (the attention-mask fill) wraps to a defined ring value, no panic, no NaN.
    let w = q.encode(f32::MIN as f64, Rounding::Round).unwrap();
    assert!(w >= q.ring_min() && w <= q.ring_max());
    assert_eq!(w, 0, "-(2-2^-23)*2^127*2^12 is a multiple of 2^50");
}

#[test]
fn non_finite_is_an_error() {
    let p = fp(37, 12);
    assert!(matches!(
        p.encode(f64::NAN, Rounding::Round),
        Err(FixedError::NonFinite(_))
    ));
    assert!(matches!(
        p.encode(f64::INFINITY, Rounding::Trunc),
        Err(FixedError::NonFinite(_))
    ));
    let mut xs = [1.0f32, 2.0, f32::NAN, 3.0];
    assert_eq!(
        p.quantize_slice_f32(&mut xs, Rounding::Round),
        Err(NonFiniteAt(2))
    );
    assert_eq!(xs[0], 1.0);
}

#[test]
fn ars_floors() {
    // SIGMA's checked values (REFERENCES.md section 2): -4097 -> -2, -1 -> -1, 4095 -> 0.
    assert_eq!(ars(-4097, 12, 37), -2);
    assert_eq!(ars(-1, 12, 37), -1);
    assert_eq!(ars(4095, 12, 37), 0);
    assert_eq!(ars(4096, 12, 37), 1);
    // The shift reads the n-bit value: 2^36 in a 37-bit ring is -2^36.
    assert_eq!(ars(1 << 36, 12, 37), -(1 << 24));
}

#[test]
fn wrap_matches_the_definition() {
    for n in [2u32, 13, 37, 50, 63, 64] {
        for v in [
            0i128,
            1,
            -1,
            1 << (n - 1),
            -(1 << (n - 1)),
            (1 << (n - 1)) - 1,
            12345678901234567,
        ] {
            let m = 1i128 << n;
            let expect = ((v + (m >> 1)).rem_euclid(m)) - (m >> 1);
            assert_eq!(wrap_i128(v, n) as i128, expect, "n={n} v={v}");
        }
    }
}

#[test]
fn slice_pass_handles_huge_values_exactly() {
    let p = fp(50, 12);
    let mut xs = [1.2345f32, f32::MIN, 3.0e20, -7.5];
    let expect: Vec<f32> = xs
        .iter()
        .map(|&x| p.quantize(x as f64, Rounding::Round).unwrap() as f32)
        .collect();
    p.quantize_slice_f32(&mut xs, Rounding::Round).unwrap();
    assert_eq!(xs.to_vec(), expect);
}

/// Reference: the definition with i128 arithmetic on an exactly decomposed f32.
fn reference_quantize(x: f32, n: u32, f: u32, r: Rounding) -> f64 {
    // x = m * 2^e exactly (f32 has a 24-bit mantissa); x * 2^f = m * 2^(e+f).
    let v = x as f64 * 2f64.powi(f as i32);
    let rounded = r.apply(v) as i128; // |x| < 2^40 in the strategy: fits i128 exactly
    let m = 1i128 << n;
    let w = (rounded + (m >> 1)).rem_euclid(m) - (m >> 1);
    w as f64 / 2f64.powi(f as i32)
}

fn rounding() -> impl Strategy<Value = Rounding> {
    prop_oneof![
        Just(Rounding::Round),
        Just(Rounding::Trunc),
        Just(Rounding::Floor)
    ]
}

proptest! {
    #[test]
    fn f64_and_integer_paths_agree(x in -1.0e12f32..1.0e12f32, n in 13u32..=64, r in rounding()) {
        let p = fp(n, 12);
        let expect = reference_quantize(x, n, 12, r);
        prop_assert_eq!(p.quantize(x as f64, r).unwrap(), expect);
        let mut xs = [x];
        p.quantize_slice_f32(&mut xs, r).unwrap();
        // Bits, not values: a truncation to zero must give +0 as decode(0) does (the GPU
        // kernel's value), not -0.
        prop_assert_eq!(xs[0].to_bits(), (expect as f32).to_bits(), "x = {}", x);
    }

    #[test]
    fn outputs_lie_on_the_grid(x in -1.0e6f64..1.0e6f64, n in 13u32..=64, f in 0u32..=12, r in rounding()) {
        prop_assume!(f < n);
        let p = fp(n, f);
        let y = p.quantize(x, r).unwrap();
        prop_assert!(p.on_grid(y));
        // Inside the ring, the error is at most one ulp (half for round).
        if x.abs() < p.real_bound() - 1.0 {
            let ulp = 1.0 / p.scale();
            let bound = if r == Rounding::Round { ulp / 2.0 } else { ulp };
            prop_assert!((y - x).abs() <= bound, "x={} y={}", x, y);
        }
    }

    #[test]
    fn quantize_is_idempotent(x in -1.0e9f64..1.0e9f64, n in 13u32..=64, r in rounding()) {
        let p = fp(n, 12);
        let y = p.quantize(x, r).unwrap();
        prop_assert_eq!(p.quantize(y, r).unwrap(), y);
    }
}

#[test]
fn ring_bits_for_is_the_smallest_ring_that_holds_the_value() {
    // 0.9 at f = 12 is q = 3687 < 2^11: n = 13 holds [-4096, 4095].
    assert_eq!(ring_bits_for(0.9, 12), 13);
    // 1.0 is q = 4096 = 2^12, one past n = 13's largest value.
    assert_eq!(ring_bits_for(1.0, 12), 14);
    // Zero (a node that only ever saw zeros) still needs the f bits and a sign.
    assert_eq!(ring_bits_for(0.0, 12), 13);
    // SIGMA's n = 37 at 2f = 24 holds products up to 4096 (exclusive).
    assert_eq!(ring_bits_for(4095.9, 24), 37);
    assert_eq!(ring_bits_for(4096.0, 24), 38);
    assert_eq!(ring_bits_for(1e30, 12), 65);
    assert_eq!(ring_bits_for(f64::INFINITY, 12), 65);
}

proptest! {
    #[test]
    fn ring_bits_for_agrees_with_the_encoder(x in 0.0f64..1.0e9, f in 0u32..=24) {
        let n = ring_bits_for(x, f);
        prop_assume!(n <= 64);
        // x (and -x), encoded at n bits, survive: Wrap_n leaves them alone.
        let p = fp(n, f);
        let q = (x * p.scale()).ceil() as i128;
        prop_assert_eq!(p.wrap(q) as i128, q);
        prop_assert_eq!(p.wrap(-q) as i128, -q);
        // One bit fewer does not hold it (unless n is already the smallest legal ring).
        if n > f + 1 {
            let smaller = fp(n - 1, f);
            prop_assert!(smaller.wrap(q) as i128 != q || smaller.wrap(-q) as i128 != -q);
        }
    }
}

/// `Rounding::apply` avoids libm's rint/trunc/floor; it must agree with them bit for bit.
fn assert_rounding_matches_std(v: f64) {
    let std = [v.round_ties_even(), v.trunc(), v.floor()];
    let ours = [
        Rounding::Round.apply(v),
        Rounding::Trunc.apply(v),
        Rounding::Floor.apply(v),
    ];
    for (s, o) in std.iter().zip(&ours) {
        assert!(
            s.to_bits() == o.to_bits() || (s.is_nan() && o.is_nan()),
            "{v:e}: std {s:e}, ours {o:e}"
        );
    }
}

#[test]
fn rounding_matches_std_at_the_edges() {
    let two52 = 2f64.powi(52);
    let mut cases = vec![
        0.0,
        0.3,
        0.5,
        0.7,
        1.0,
        1.5,
        2.5,
        3.5,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        two52,
        two52 - 0.5,
        two52 - 1.0,
        two52 + 1.0,
        2f64.powi(51) + 0.5,
        2f64.powi(53),
        f64::MAX,
        f64::INFINITY,
        f64::NAN,
        0.49999999999999994,
    ];
    let negated: Vec<f64> = cases.iter().map(|v| -v).collect();
    cases.extend(negated);
    for v in cases {
        assert_rounding_matches_std(v);
    }
}

proptest! {
    #[test]
    fn rounding_matches_std(bits in any::<u64>(), x in -1e6f64..1e6, h in -1000i64..1000) {
        assert_rounding_matches_std(f64::from_bits(bits));
        assert_rounding_matches_std(x);
        assert_rounding_matches_std(h as f64 * 0.5);
        assert_rounding_matches_std(h as f64 * 0.25 + 2f64.powi(51));
    }
}
