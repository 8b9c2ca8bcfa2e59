//! The shipped files against the generators, their stated bounds, and formulas recomputed
//! here independently from REFERENCES.md section 2.

use super::*;
use crate::descriptor::Descriptor;
use std::path::PathBuf;

fn approx_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../compiler/approx")
}

fn shipped_file(name: &str) -> Descriptor {
    let path = approx_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Descriptor::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn shipped_files_are_what_the_generators_produce_now() {
    let generated = shipped();
    for d in &generated {
        let path = approx_dir().join(format!("{}.json", d.name));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text == d.to_json_pretty(),
            "{} is stale: regenerate with `{GENERATOR}`",
            path.display()
        );
        assert_eq!(&Descriptor::from_json(&text).unwrap(), d);
    }
    // Files added by hand (no generator) must at least be valid descriptors.
    for entry in std::fs::read_dir(approx_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Descriptor::from_json(&text) {
                panic!("{}: {e}", path.display());
            }
        }
    }
}

/// Decoded output error of `d` at input `x` against `exact`, in the file's metric.
fn err(d: &Descriptor, x: i64, exact: f64) -> f64 {
    let e = (d.eval(x) as f64 / 2f64.powi(d.output_scale_bits as i32) - exact).abs();
    match d.error.metric {
        ErrorMetric::Abs => e,
        ErrorMetric::Rel => e / exact.abs(),
    }
}

/// Integer inputs whose decoded value lies in the stated real domain.
fn domain(d: &Descriptor) -> std::ops::RangeInclusive<i64> {
    let s = 2f64.powi(d.input.scale_bits as i32);
    ((d.error.over[0] * s).ceil() as i64)..=((d.error.over[1] * s).floor() as i64)
}

fn check_bound(d: &Descriptor, exact: impl Fn(f64) -> f64) -> f64 {
    let s = 2f64.powi(d.input.scale_bits as i32);
    let worst = domain(d)
        .map(|x| err(d, x, exact(x as f64 / s)))
        .fold(0.0, f64::max);
    assert!(
        worst <= d.error.max,
        "{}: measured {worst} > stated {}",
        d.name,
        d.error.max
    );
    worst
}

#[test]
fn gelu_and_silu_files_keep_their_bounds() {
    let g = shipped_file("sigma-gelu");
    assert_eq!(g.error.over, [-16.0, 16.0]);
    let erf_gelu = |x: f64| x * 0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2));
    let worst = check_bound(&g, erf_gelu);
    // The bound is the measurement rounded up to 2 digits: it is tight.
    assert!(
        g.error.max < worst * 1.1 + 1e-12,
        "{} vs {worst}",
        g.error.max
    );
    let s = shipped_file("sigma-silu");
    check_bound(&s, |x| x * (1.0 / (1.0 + (-x).exp())));
}

#[test]
fn nexp_and_reciprocal_files_keep_their_bounds() {
    for name in ["sigma-nexp-hi", "sigma-nexp-lo"] {
        let d = shipped_file(name);
        assert_eq!(*domain(&d).start(), 0);
        assert_eq!(*domain(&d).end(), 255);
        check_bound(&d, |x| (-x).exp());
    }
    let r = shipped_file("sigma-reciprocal-13");
    assert_eq!(domain(&r), 64..=8191);
    check_bound(&r, |x| 1.0 / x);
}

#[test]
fn rsqrt_files_keep_their_bounds_on_random_sums_of_squares() {
    // A fixed LCG: S log-uniform over the stated variance range (not the generator's samples).
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for c in DEFAULT_RSQRT_C {
        let d = shipped_file(&format!("sigma-rsqrt-{c}"));
        assert_eq!(d.params.get("C"), Some(&c));
        let [lo, hi] = d.error.over;
        for _ in 0..20_000 {
            let var = lo * (hi / lo).powf(next());
            let s = (var * c as f64 * 16777216.0).round() as u64;
            let var = s as f64 / (c as f64 * 16777216.0);
            let e = err(&d, crate::sigma::rsqrt_index(s), 1.0 / var.sqrt());
            assert!(e <= d.error.max, "C = {c}, S = {s}: {e} > {}", d.error.max);
        }
    }
}

#[test]
fn entries_match_the_formulas_recomputed_here() {
    // GELU/SiLU: T[i] = floor((ReLU(i/64) - g(i/64)) * 2^12); q = 64 i reads T[i] on both sides.
    let gelu_t = |i: i64| {
        let x = i as f64 / 64.0;
        ((x - x * 0.5 * (1.0 + libm::erf(x / 2f64.sqrt()))) * 4096.0).floor() as i64
    };
    let silu_t = |i: i64| {
        let x = i as f64 / 64.0;
        ((x - x / (1.0 + (-x).exp())) * 4096.0).floor() as i64
    };
    let g = shipped_file("sigma-gelu");
    let s = shipped_file("sigma-silu");
    for i in [0, 1, 2, 17, 63, 64, 100, 128, 200, 254, 255] {
        assert_eq!(g.eval(64 * i), 64 * i - gelu_t(i), "GELU q = {}", 64 * i);
        assert_eq!(g.eval(64 * i + 63), 64 * i + 63 - gelu_t(i));
        assert_eq!(g.eval(-64 * i), -gelu_t(i), "GELU q = {}", -64 * i);
    }
    assert_eq!(g.eval(-64 * 1000), -gelu_t(255));
    for i in [0, 1, 64, 255, 256, 700, 1022, 1023] {
        assert_eq!(s.eval(64 * i), 64 * i - silu_t(i), "SiLU q = {}", 64 * i);
        assert_eq!(s.eval(-64 * i - 1), -silu_t((i + 1).min(1023)));
    }
    // nExp: trunc(e^(-i/16) 2^12), trunc(e^(-i/4096) 2^12); values SIGMA's softmax relies on.
    let hi = shipped_file("sigma-nexp-hi");
    let lo = shipped_file("sigma-nexp-lo");
    for i in 0..256 {
        assert_eq!(
            hi.eval(i),
            ((-(i as f64) / 16.0).exp() * 4096.0) as i64,
            "E_hi[{i}]"
        );
        assert_eq!(
            lo.eval(i),
            ((-(i as f64) / 4096.0).exp() * 4096.0) as i64,
            "E_lo[{i}]"
        );
    }
    assert_eq!(
        [hi.eval(0), hi.eval(16), hi.eval(32), hi.eval(48)],
        [4096, 1506, 554, 203]
    );
    // Reciprocal: 2^18 / i, entry 0 = 2^18 / 2^13.
    let r = shipped_file("sigma-reciprocal-13");
    assert_eq!(r.eval(0), 32);
    for i in [1, 2, 63, 64, 99, 1000, 4097, 8191] {
        assert_eq!(r.eval(i), 262144 / i);
    }
    // rsqrt: trunc(2^24 / sqrt((128 + m) 2^(k-7) / C)).
    for c in DEFAULT_RSQRT_C {
        let d = shipped_file(&format!("sigma-rsqrt-{c}"));
        for (k, m) in [(0, 0), (7, 5), (25, 64), (26, 32), (40, 127), (63, 127)] {
            let s = (128 + m) as f64 * 2f64.powi(k - 7);
            let want = (16777216.0 / (s / c as f64).sqrt()).trunc() as i64;
            assert_eq!(
                d.eval(k as i64 * 128 + m),
                want,
                "C = {c}, k = {k}, m = {m}"
            );
        }
    }
    assert_eq!(rsqrt(4).unwrap().eval(26 * 128 + 32), 3663);
}

#[test]
fn generator_arguments_are_checked() {
    assert_eq!(reciprocal(6).unwrap_err(), TableError::RecipBits(6));
    assert!(reciprocal(19).is_err());
    assert!(rsqrt(0).unwrap_err().to_string().contains("C = 0"));
    assert_eq!(reciprocal(7).unwrap().input.max, 127);
}

#[test]
fn bounds_round_up_to_two_significant_digits() {
    assert_eq!(round_up_2sig(0.0076), 0.0076);
    assert_eq!(round_up_2sig(0.00751), 0.0076);
    assert_eq!(round_up_2sig(0.000244140625), 0.00025);
    assert_eq!(round_up_2sig(0.03), 0.03);
    assert_eq!(round_up_2sig(1.01), 1.1);
    assert_eq!(round_up_2sig(123.0), 130.0);
    assert_eq!(round_up_2sig(0.0), 0.0);
    for v in [1e-9, 3.3333e-5, 0.1 + 0.2, 9.99, 99.5] {
        let r = round_up_2sig(v);
        assert!(r >= v && r <= v * 1.11, "{v} -> {r}");
    }
}
