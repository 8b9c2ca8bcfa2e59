use super::*;
use crate::tables;
use proptest::prelude::*;
use std::sync::LazyLock;

/// Built once: building measures the error over 2^17 inputs.
static GELU: LazyLock<crate::descriptor::Descriptor> = LazyLock::new(tables::gelu);

const N: u32 = 50;
const F: u32 = 12;

/// SIGMA's encoding: a C cast, truncating toward zero.
fn q(x: f64) -> i64 {
    (x * 4096.0) as i64
}

fn layernorm_plain(xs: &[f64], n_bits: u32) -> Vec<i64> {
    let c = xs.len();
    let row: Vec<i64> = xs.iter().map(|&x| q(x)).collect();
    let rsqrt = tables::rsqrt(c as i64).unwrap();
    layernorm_row(&row, &vec![4096; c], &vec![0; c], &rsqrt, n_bits, F).unwrap()
}

#[test]
fn gelu_matches_sigma_cleartext() {
    let g = &*GELU;
    for (x, want) in [
        (-1.0, -649),
        (0.5, 1417),
        (1.0, 3447),
        (3.0, 12272),
        (-4.0, 0),
    ] {
        assert_eq!(gelu(q(x), g), want, "GELU({x})");
    }
}

#[test]
fn silu_matches_sigma_cleartext() {
    let s = tables::silu();
    for (x, want) in [(-4.0, -294), (1.0, 2995)] {
        assert_eq!(silu(q(x), &s), want, "SiLU({x})");
    }
}

#[test]
fn softmax_matches_sigma_cleartext() {
    let t = SoftmaxTables::sigma();
    let row: Vec<i64> = [1.0, 2.0, 3.0, 4.0].iter().map(|&x| q(x)).collect();
    let out = softmax_row(&row, &[false; 4], &t, N, F).unwrap();
    assert_eq!(out, vec![131, 358, 973, 2647]);
}

#[test]
fn softmax_zeroes_entries_far_below_the_max() {
    let t = SoftmaxTables::sigma();
    // 8.3125 below the max is the last nonzero step; further down e rounds to 0.
    let row = vec![0, -q(8.3125), -q(8.375), -q(20.0)];
    let out = softmax_row(&row, &[false; 4], &t, N, F).unwrap();
    assert_eq!(out[1], 1);
    assert_eq!(&out[2..], &[0, 0]);
}

#[test]
fn softmax_masked_entries_are_zero_and_excluded() {
    let t = SoftmaxTables::sigma();
    let row: Vec<i64> = [1.0, 9.0, 2.0, 3.0, 9.0, 4.0]
        .iter()
        .map(|&x| q(x))
        .collect();
    let mask = [false, true, false, false, true, false];
    let out = softmax_row(&row, &mask, &t, N, F).unwrap();
    assert_eq!(out, vec![131, 0, 358, 973, 0, 2647]);
    let all = softmax_row(&row, &[true; 6], &t, N, F).unwrap();
    assert_eq!(all, vec![0; 6]);
}

#[test]
fn softmax_full_row_of_maxima_wraps_to_entry_zero() {
    let t = SoftmaxTables::sigma();
    assert_eq!(t.max_row_len(), 128);
    // den = 128 * 4096, den/64 = 2^13 wraps to index 0 = 2^18 / 2^13 = 32 = 4096 / 128.
    let out = softmax_row(&[7; 128], &[false; 128], &t, N, F).unwrap();
    assert!(out.iter().all(|&v| v == 32), "{out:?}");
}

#[test]
fn softmax_rejects_rows_the_reciprocal_table_cannot_cover() {
    let t = SoftmaxTables::sigma();
    let err = softmax_row(&[0; 129], &[false; 129], &t, N, F).unwrap_err();
    assert!(matches!(
        err,
        SigmaError::RowTooLong {
            unmasked: 129,
            max: 128,
            ..
        }
    ));
    assert!(err.to_string().contains("sigma-reciprocal-13"), "{err}");
    // Masked entries do not count.
    let mut mask = vec![false; 129];
    mask[0] = true;
    assert!(softmax_row(&[0; 129], &mask, &t, N, F).is_ok());
    let err = softmax_row(&[0; 3], &[false; 2], &t, N, F).unwrap_err();
    assert!(err.to_string().contains("`masked` has length 2"), "{err}");
    // Tables for another scale are refused, not silently misused.
    assert!(softmax_row(&[0; 3], &[false; 3], &t, N, 13).is_err());
}

#[test]
fn layernorm_matches_sigma_cleartext() {
    assert_eq!(
        layernorm_plain(&[1.0, 2.0, 3.0, 4.0], N),
        vec![-5495, -1832, 1831, 5494]
    );
    assert_eq!(layernorm_plain(&[1.0, 2.0, 3.0], N), vec![-5014, 2, 5018]);
    assert!(layernorm_plain(&[1.0; 768], N).iter().all(|&v| v == 4096));
    let alternating = |c: usize| -> Vec<f64> {
        (0..c)
            .map(|i| if i % 2 == 0 { 1.5 } else { -0.5 })
            .collect()
    };
    let out = layernorm_plain(&alternating(768), N);
    assert!(out.chunks(2).all(|p| p == [4224, -3968]), "{:?}", &out[..4]);
    let out = layernorm_plain(&alternating(128), N);
    assert!(out.chunks(2).all(|p| p == [4096, -4096]), "{:?}", &out[..4]);
}

#[test]
fn layernorm_applies_gamma_and_beta() {
    let row: Vec<i64> = [1.0, 2.0, 3.0, 4.0].iter().map(|&x| q(x)).collect();
    let rsqrt = tables::rsqrt(4).unwrap();
    // gamma 2.0, beta 0.5 (at scale 2f): y = floor((z * 8192 + 2^23) / 4096) = 2z + 2048.
    let out = layernorm_row(&row, &[8192; 4], &[1 << 23; 4], &rsqrt, N, F).unwrap();
    assert_eq!(
        out,
        vec![
            -5495 * 2 + 2048,
            -1832 * 2 + 2048,
            1831 * 2 + 2048,
            5494 * 2 + 2048
        ]
    );
}

#[test]
fn layernorm_zero_variance_reads_entry_zero() {
    // C = 4: the mean is exact, S = 0, so the output is beta whatever r is.
    let rsqrt = tables::rsqrt(4).unwrap();
    let out = layernorm_row(&[q(2.0); 4], &[4096; 4], &[5 << 12; 4], &rsqrt, N, F).unwrap();
    assert_eq!(out, vec![5; 4]);
    assert_eq!(rsqrt_index(0), 0);
}

#[test]
fn layernorm_sum_of_squares_wraps_at_small_rings() {
    // n = 37, C = 128: S = 128 * var * 2^24 must stay below 2^37 (unsigned), i.e. var < 64.
    let alternating =
        |a: f64| -> Vec<f64> { (0..128).map(|i| if i % 2 == 0 { a } else { -a }).collect() };
    assert_eq!(
        layernorm_plain(&alternating(7.0), 37),
        layernorm_plain(&alternating(7.0), 50)
    );
    let wide = layernorm_plain(&alternating(8.0), 50);
    assert!(
        wide.chunks(2).all(|p| p == [4096, -4096]),
        "{:?}",
        &wide[..2]
    );
    assert_ne!(
        layernorm_plain(&alternating(8.0), 37),
        wide,
        "variance 64: S = 2^37 wraps at n = 37"
    );
}

#[test]
fn traced_rows_report_the_ring_their_intermediates_need() {
    // The same rows as above: at var 64 the sum of squares is exactly 2^37 (38 unsigned bits),
    // at var 49 it is 49 * 2^31 < 2^37; every other intermediate is far smaller.
    let c = 128;
    let rsqrt = tables::rsqrt(c as i64).unwrap();
    let row = |a: f64| -> Vec<i64> { (0..c).map(|i| q(if i % 2 == 0 { a } else { -a })).collect() };
    let need = |a: f64, n: u32| {
        layernorm_row_traced(&row(a), &vec![4096; c], &vec![0; c], &rsqrt, n, F)
            .unwrap()
            .1
    };
    assert_eq!(need(8.0, 50), 38);
    assert_eq!(need(7.0, 50), 37);
    // In the ring that is too small the wrap shows (values after it are garbage, and may
    // need more still).
    assert!(need(8.0, 37) > 37);
    assert_eq!(need(7.0, 37), 37);
    // RMSNorm: the same sum of squares (the mean is 0 here).
    let rms = rmsnorm_row_traced(&row(8.0), &vec![4096; c], &rsqrt, 50, F)
        .unwrap()
        .1;
    assert_eq!(rms, 38);
    // Softmax of [1, 2, 3, 4]: the widest intermediate is e * inv (at most 4096 * 2^18 / 64).
    let t = SoftmaxTables::sigma();
    let (y, need) = softmax_row_traced(&[4096, 8192, 12288, 16384], &[false; 4], &t, N, F).unwrap();
    assert_eq!(y, [131, 358, 973, 2647]);
    assert!((20..=32).contains(&need), "{need}");
}

#[test]
fn layernorm_checks_its_inputs() {
    let rsqrt = tables::rsqrt(4).unwrap();
    let err = layernorm_row(&[0; 4], &[0; 3], &[0; 4], &rsqrt, N, F).unwrap_err();
    assert!(
        err.to_string()
            .contains("`gamma` has length 3, the row has 4"),
        "{err}"
    );
    let err = layernorm_row(&[0; 5], &[0; 5], &[0; 5], &rsqrt, N, F).unwrap_err();
    assert!(
        err.to_string()
            .contains("built for C = 4, the row has C = 5"),
        "{err}"
    );
    let err = layernorm_row(&[], &[], &[], &rsqrt, N, F).unwrap_err();
    assert_eq!(err, SigmaError::EmptyRow { op: "layernorm" });
    let err = layernorm_row(&[0; 4], &[0; 4], &[0; 4], &rsqrt, N, 10).unwrap_err();
    assert!(err.to_string().contains("output_scale_bits = 12"), "{err}");
}

#[test]
fn rmsnorm_is_layernorm_without_the_mean() {
    let rsqrt = tables::rsqrt(4).unwrap();
    let out = rmsnorm_row(&[q(1.0); 4], &[4096; 4], &rsqrt, N, F).unwrap();
    assert_eq!(out, vec![4096; 4]);
    // [1, -1, 1, -1] has mean 0: RMSNorm and LayerNorm agree.
    let row = vec![q(1.0), q(-1.0), q(1.0), q(-1.0)];
    let ln = layernorm_row(&row, &[4096; 4], &[0; 4], &rsqrt, N, F).unwrap();
    assert_eq!(rmsnorm_row(&row, &[4096; 4], &rsqrt, N, F).unwrap(), ln);
    assert!(rmsnorm_row(&row, &[4096; 3], &rsqrt, N, F).is_err());
}

#[test]
fn rsqrt_index_is_the_13_bit_float_code() {
    // 2^26 * 1.25 -> k = 26, mantissa 0100000 = 32.
    assert_eq!(rsqrt_index(83886080), 26 * 128 + 32);
    assert_eq!(rsqrt_index(1), 0);
    assert_eq!(rsqrt_index(3), 128 + 64);
    assert_eq!(rsqrt_index(255), 7 * 128 + 127);
    assert_eq!(rsqrt_index(u64::MAX), 63 * 128 + 127);
}

#[test]
fn tr_floor_matches_sigma_cleartext() {
    for (v, want) in [(-4097, -2), (-1, -1), (4095, 0)] {
        assert_eq!(tr_floor(v, 12, N), want, "ARS({v})");
    }
}

/// SIGMA's GELU written out directly, without a descriptor.
fn gelu_direct(q: i64) -> i64 {
    let table = |i: i64| {
        let x = i as f64 / 64.0;
        let g = 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()));
        ((x - g) * 4096.0).floor() as i64
    };
    let xt = q >> 6;
    let c = xt.abs().min(255);
    (if xt >= 0 { q } else { 0 }) - table(c)
}

proptest! {
    #[test]
    fn gelu_descriptor_equals_direct_algorithm(q in -(1i64 << 49)..(1i64 << 49)) {
        prop_assert_eq!(gelu(q, &GELU), gelu_direct(q));
    }

    #[test]
    fn gelu_descriptor_equals_direct_algorithm_near_zero(q in -20000i64..20000) {
        prop_assert_eq!(gelu(q, &GELU), gelu_direct(q));
    }
}

#[test]
fn softmax_tables_check_the_reciprocal_domain() {
    let mut odd = tables::reciprocal(13).unwrap();
    odd.input.max = 1000;
    let err = SoftmaxTables::new(tables::nexp_hi(), tables::nexp_lo(), odd).unwrap_err();
    assert!(err.to_string().contains("is not [0, 2^bits - 1]"), "{err}");
    let t = SoftmaxTables::new(
        tables::nexp_hi(),
        tables::nexp_lo(),
        tables::reciprocal(12).unwrap(),
    )
    .unwrap();
    assert_eq!((t.recip_bits(), t.max_row_len()), (12, 64));
    // Within its rows a narrower table gives SIGMA's 13-bit results exactly.
    let row: Vec<i64> = [1.0, 2.0, 3.0, 4.0].iter().map(|&x| q(x)).collect();
    assert_eq!(
        softmax_row(&row, &[false; 4], &t, N, F).unwrap(),
        vec![131, 358, 973, 2647]
    );
}
