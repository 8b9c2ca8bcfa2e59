//! The SUF kernels' elementwise arithmetic (gpu/src/suf.cu) checked against suf_fixed on
//! machines without a GPU, through the host-compiled harness (host_harness/), on values of
//! every magnitude. The kernels' loops and reductions themselves run on the GPU only
//! (scripts/gpu_check.sh).

mod host_harness;

use host_harness::{ask, assert_answers, build_host_harness, next, rule_code};
use suf_fixed::{FixedPoint, Rounding};

/// Finite f32 values of every magnitude: random bit patterns, grid points, ties, ring edges.
fn inputs(fixed: FixedPoint) -> Vec<f32> {
    let mut v = vec![
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
    ];
    let mut s = 17u64;
    while v.len() < 6000 {
        let x = f32::from_bits(next(&mut s) as u32);
        if x.is_finite() {
            v.push(x);
        }
    }
    let step = 2f32.powi(-(fixed.frac_bits() as i32));
    let edge = fixed.real_bound() as f32;
    for k in -40i32..40 {
        let g = k as f32 * step;
        v.extend([g, g + step / 2.0, g - step / 2.0, g + step / 4.0]);
        v.extend([edge + g, -edge + g, 2.0 * edge + g, 1e6 + g, -3.3e9 + g]);
    }
    v
}

#[test]
fn quantize_on_the_device_equals_suf_fixed_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let mut checked = 0usize;
    for n_bits in [16u32, 24, 37, 50, 64] {
        for rounding in [Rounding::Round, Rounding::Trunc, Rounding::Floor] {
            let fixed = FixedPoint::new(n_bits, 12).unwrap();
            let xs = inputs(fixed);
            let requests: Vec<String> = xs
                .iter()
                .map(|x| {
                    format!(
                        "q {:x} {:x} {:x} c",
                        x.to_bits(),
                        rule_code(rounding),
                        n_bits
                    )
                })
                .collect();
            let device: Vec<u32> = ask(&exe, &requests).into_iter().map(|v| v as u32).collect();
            assert_eq!(device.len(), xs.len());
            // The CPU op's own path (the slice routine and its fast paths), element by
            // element and as one tensor.
            let mut whole = xs.clone();
            fixed.quantize_slice_f32(&mut whole, rounding).unwrap();
            for (i, &x) in xs.iter().enumerate() {
                let mut one = [x];
                fixed.quantize_slice_f32(&mut one, rounding).unwrap();
                assert_eq!(
                    (one[0].to_bits(), whole[i].to_bits()),
                    (device[i], device[i]),
                    "x = {x:e} (bits {:08x}), n = {n_bits}, {rounding}: cpu {} / {}, device {}",
                    x.to_bits(),
                    one[0],
                    whole[i],
                    f32::from_bits(device[i])
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 90_000, "{checked}");
}

/// Ring values of every size: small, random 64-bit words, the ring edges.
fn ring_words() -> Vec<i64> {
    let mut v = vec![
        0i64,
        1,
        -1,
        2,
        -2,
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MIN + 1,
    ];
    for b in 0..64 {
        let p = 1i64.wrapping_shl(b);
        v.extend([
            p,
            p.wrapping_sub(1),
            p.wrapping_neg(),
            p.wrapping_add(1),
            (p >> 1) * 3,
        ]);
    }
    let mut s = 5u64;
    while v.len() < 3000 {
        let r = next(&mut s) as i64;
        v.extend([r, r >> (next(&mut s) % 64)]);
    }
    v
}

#[test]
fn ring_arithmetic_on_the_device_equals_suf_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let words = ring_words();
    let mut requests = vec![];
    let mut expected = vec![];
    for &v in &words {
        for shift in [0u32, 1, 12, 15, 24, 40, 63] {
            for rule in [Rounding::Round, Rounding::Trunc, Rounding::Floor] {
                requests.push(format!("t {:x} {shift:x} {:x}", v as u64, rule_code(rule)));
                expected.push(suf_fixed::matmul::truncate(v, shift, rule) as u64);
            }
        }
        for (shift, n) in [(12u32, 37u32), (12, 50), (24, 64), (3, 16)] {
            requests.push(format!("a {:x} {shift:x} {n:x}", v as u64));
            expected.push(suf_fixed::ars(v, shift, n) as u64);
        }
        // significant bits: f32 holds q iff at most 24, f64 iff at most 53 (SufRingDecode).
        requests.push(format!("s {:x}", v as u64));
        let bits = if v == 0 {
            0
        } else {
            let a = v.unsigned_abs();
            64 - a.leading_zeros() - a.trailing_zeros()
        };
        expected.push(bits as u64);
        let f32_exact = (v as f32) as i128 == v as i128;
        assert_eq!(f32_exact, bits <= 24, "{v}");
        let f64_exact = (v as f64) as i128 == v as i128;
        assert_eq!(f64_exact, bits <= 53, "{v}");
    }
    // |128-bit integer| as f64, rounded as Rust's u128 -> f64.
    for (i, &hi) in words.iter().enumerate() {
        let lo = words[(i * 7 + 3) % words.len()] as u64;
        requests.push(format!("w {:x} {lo:x}", hi as u64));
        let v = ((hi as i128) << 64) | lo as i128;
        expected.push((v.unsigned_abs() as f64).to_bits());
        requests.push(format!(
            "w {:x} {lo:x}",
            if (lo as i64) < 0 { u64::MAX } else { 0 }
        ));
        let small = lo as i64 as i128;
        expected.push((small.unsigned_abs() as f64).to_bits());
    }
    // Enc_s of f64 values (the f32 operands and biases at scale f and 2f).
    for x in inputs(FixedPoint::new(50, 12).unwrap()) {
        for (scale, n) in [(12u32, 37u32), (12, 50), (24, 50), (24, 64)] {
            for rule in [Rounding::Round, Rounding::Trunc, Rounding::Floor] {
                let fixed = FixedPoint::new(n, 12).unwrap();
                requests.push(format!(
                    "e {:x} {scale:x} {:x} {n:x}",
                    (x as f64).to_bits(),
                    rule_code(rule)
                ));
                expected.push(fixed.encode_at(x as f64, rule, scale).unwrap() as u64);
            }
        }
    }
    assert_answers(&exe, &requests, &expected);
    assert!(requests.len() > 100_000, "{}", requests.len());
}

#[test]
fn descriptors_on_the_device_equal_suf_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let mut requests = vec![];
    let mut expected = vec![];
    let words = ring_words();
    for d in [suf_fixed::tables::gelu(), suf_fixed::tables::silu()] {
        let flat = suf_gpu::kernels::FlatDescriptor::new(&d).unwrap();
        let ncoeffs = *flat.offsets.last().unwrap();
        let hex = |v: &[i64]| {
            v.iter()
                .map(|x| format!("{:x}", *x as u64))
                .collect::<Vec<_>>()
                .join(" ")
        };
        requests.push(format!(
            "D {:x} {:x} {:x} {:x} {} {} {}",
            flat.cuts.len(),
            ncoeffs,
            d.input.min as u64,
            d.input.max as u64,
            hex(&flat.cuts),
            hex(&flat.offsets),
            hex(&flat.coeffs[..ncoeffs as usize])
        ));
        expected.push(0);
        // Every interval start and its neighbours, and ring values of every size.
        let mut xs: Vec<i64> = d.cuts.iter().flat_map(|&c| [c - 1, c, c + 1]).collect();
        xs.extend(&words);
        xs.extend((-5000..5000).map(|i| i * 7));
        for x in xs {
            requests.push(format!("x {:x}", x as u64));
            expected.push(d.eval(x) as u64);
        }
    }
    assert_answers(&exe, &requests, &expected);
}
