//! Level `ring`'s float-function kernels (gpu/src/suf_ring_fn.cu) checked against
//! suf_fixed::float_fn on machines without a GPU: the very functions the kernels call,
//! compiled for the host (host_harness/), with the transcendental results moved by a set
//! number of ulps to stand in for CUDA's functions. What must hold:
//! - the bound each output carries covers the moved result's distance from libm's (and is 0
//!   only where both are the same double);
//! - every output the kernels certify equals suf_fixed's, bit for bit;
//! - few ordinary outputs go uncertified (else the GPU path would be the CPU path);
//! - moved by far more than the bound allows, certified outputs do differ (the comparison
//!   can fail);
//! - the norms, with no transcendental function, equal suf_fixed's everywhere.

mod host_harness;

use host_harness::{ask_lines, build_host_harness, next, rule_code};
use suf_fixed::float_fn::{self, FloatFn, FloatFnError, RowParams};
use suf_fixed::{FixedPoint, Rounding};

fn hex(v: impl IntoIterator<Item = i64>) -> String {
    v.into_iter()
        .map(|x| format!("{:x}", x as u64))
        .collect::<Vec<_>>()
        .join(" ")
}

const KINDS: [(FloatFn, u32); 3] = [
    (FloatFn::GeluErf, 0),
    (FloatFn::GeluTanh, 1),
    (FloatFn::Silu, 2),
];

/// The ordinary inputs (|x| < 6, where activations live) that come first in
/// `activation_inputs`. (Beyond, GELU under trunc puts y just below an integer where erf
/// rounds to about 1, and leaves many outputs to the CPU.)
const ORDINARY: usize = 4000;

/// Inputs of an activation: ordinary reals, wide ones, and values at the cuts.
fn activation_inputs(state: &mut u64, fixed: FixedPoint) -> Vec<i64> {
    let f = fixed.frac_bits();
    let mut q: Vec<i64> = (0..ORDINARY)
        .map(|_| (next(state) % (12 << f)) as i64 - (6 << f))
        .collect();
    let top = (fixed.n_bits() - 1).min(53);
    for _ in 0..500 {
        let bits = next(state) % top as u64;
        let v = (next(state) >> (64 - bits.max(1))) as i64;
        q.push(if next(state) & 1 == 0 { v } else { -v });
    }
    // around erf's cut |x / sqrt 2| = 6, tanh's |u| = 22 and exp's range
    for centre in [8.485_281_374_238_57, 7.82, 708.4, 745.2, 709.8] {
        let c = (centre * (1u64 << f) as f64) as i64;
        for d in -40..40 {
            q.push(c + d);
            q.push(-(c + d));
        }
    }
    q
}

struct Activation {
    y: f64,
    bound: f64,
    q: i64,
    certified: bool,
}

fn activations(
    exe: &std::path::Path,
    ulps: i64,
    kind: u32,
    fixed: FixedPoint,
    rule: Rounding,
    q: &[i64],
) -> Vec<Activation> {
    let mut requests = vec![format!("K {:x}", ulps as u64)];
    for &v in q {
        requests.push(format!(
            "G {kind:x} {:x} {:x} {:x} {:x}",
            v as u64,
            fixed.n_bits(),
            fixed.frac_bits(),
            rule_code(rule)
        ));
    }
    ask_lines(exe, &requests)
        .into_iter()
        .skip(1)
        .map(|w| Activation {
            y: f64::from_bits(w[0]),
            bound: f64::from_bits(w[1]),
            q: w[2] as i64,
            certified: w[3] == 0,
        })
        .collect()
}

#[test]
fn certified_activations_equal_suf_fixed_and_their_bounds_hold() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let mut s = 5u64;
    let mut checked = 0usize;
    for n in [37u32, 50, 64] {
        let fixed = FixedPoint::new(n, 12).unwrap();
        let q = activation_inputs(&mut s, fixed);
        for (kind, code) in KINDS {
            for rule in [Rounding::Round, Rounding::Trunc] {
                let mut expected = q.clone();
                float_fn::activation_slice(kind, fixed, rule, &mut expected).unwrap();
                // 12 ulps of the result: within the kernels' assumed difference (2^-48).
                for ulps in [0i64, 12, -12] {
                    let got = activations(&exe, ulps, code, fixed, rule, &q);
                    let mut uncertified = 0;
                    for (i, ((a, &e), &v)) in got.iter().zip(&expected).zip(&q).enumerate() {
                        let cpu = float_fn::activation(kind, fixed.decode(v));
                        let what = format!("{} n={n} {rule:?} ulps={ulps} q={v}", kind.name());
                        if a.bound == 0.0 {
                            assert_eq!(a.y.to_bits(), cpu.to_bits(), "{what}: bound 0");
                        } else {
                            assert!((a.y - cpu).abs() <= a.bound, "{what}: bound {}", a.bound);
                        }
                        if a.certified {
                            assert_eq!(a.q, e, "{what}: certified but differs");
                            checked += 1;
                        } else if i < ORDINARY {
                            uncertified += 1;
                        }
                    }
                    // (Outputs near the cuts and wide ones under trunc sit on integers.)
                    assert!(
                        uncertified * 1000 < ORDINARY,
                        "{}: {uncertified} of {ORDINARY} ordinary outputs uncertified",
                        kind.name()
                    );
                }
            }
        }
    }
    assert!(checked > 100_000, "{checked}");
}

#[test]
fn results_moved_beyond_the_bound_are_caught_by_the_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let mut s = 9u64;
    let fixed = FixedPoint::new(50, 12).unwrap();
    let q = activation_inputs(&mut s, fixed);
    let mut expected = q.clone();
    float_fn::activation_slice(FloatFn::GeluErf, fixed, Rounding::Round, &mut expected).unwrap();
    let got = activations(&exe, 1 << 30, 0, fixed, Rounding::Round, &q);
    let wrong = got
        .iter()
        .zip(&expected)
        .filter(|(a, &e)| a.certified && a.q != e)
        .count();
    assert!(wrong > 0, "a 2^30-ulp error went unnoticed");
}

/// The device's answer for a ring-function row.
struct RowAnswer {
    bad: u64,
    uncertified: u64,
    inexact: u64,
    nonfinite: u64,
    y: Vec<i64>,
}

fn row_answers(exe: &std::path::Path, requests: &[String]) -> Vec<RowAnswer> {
    ask_lines(exe, requests)
        .into_iter()
        .skip(1) // the perturbation
        .map(|w| RowAnswer {
            bad: w[0],
            uncertified: w[2],
            inexact: w[4],
            nonfinite: w[5],
            y: w[6..].iter().map(|&v| v as i64).collect(),
        })
        .collect()
}

fn ring_row(state: &mut u64, c: usize, kind: u64, fixed: FixedPoint) -> Vec<i64> {
    let f = fixed.frac_bits();
    (0..c)
        .map(|_| {
            let r = next(state);
            match kind {
                0 => (r % (16 << f)) as i64 - (8 << f),
                1 => (r % (4000 << f)) as i64 - (2000 << f),
                // up to 2^53 (the largest exact f64 reading) where the ring holds it
                2 => {
                    let top = (fixed.n_bits() - 1).min(53);
                    let v = (r >> (64 - top)) as i64;
                    if r & 1 == 0 {
                        v
                    } else {
                        -v
                    }
                }
                _ => ((r % 3) as i64 - 1) << f,
            }
        })
        .collect()
}

/// The CPU op's masking (SufNonlinear::eval_rows): masked entries are 0 in the row.
fn masked_row(q: &[i64], bias: &[f32], fixed: FixedPoint) -> (Vec<i64>, Vec<bool>) {
    let bound = fixed.real_bound();
    q.iter()
        .zip(bias)
        .map(|(&v, &b)| {
            let b = b as f64;
            if b < -bound {
                (0, true)
            } else {
                let e = fixed.encode(b, Rounding::Round).unwrap();
                (fixed.wrap(v as i128 + e as i128), false)
            }
        })
        .unzip()
}

#[test]
fn certified_softmax_rows_equal_suf_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let mut s = 21u64;
    let (mut rows, mut uncertified_rows) = (0usize, 0usize);
    for ulps in [0i64, 12, -12, 1 << 40] {
        let mut wrong_certified = 0;
        for n in [37u32, 50, 64] {
            let fixed = FixedPoint::new(n, 12).unwrap();
            let mut requests = vec![format!("K {:x}", ulps as u64)];
            let mut expected = vec![];
            for c in [1usize, 2, 7, 128, 200] {
                for kind in 0..4 {
                    for masked in [false, true] {
                        let q = ring_row(&mut s, c, kind, fixed);
                        let bias: Vec<f32> = (0..c)
                            .map(|j| [0.0, -0.5, f32::NEG_INFINITY, 1.25][j % 4])
                            .collect();
                        let mut req = format!(
                            "M {n:x} c {:x} {c:x} {:x} {}",
                            rule_code(Rounding::Round),
                            masked as u8,
                            hex(q.iter().copied())
                        );
                        let (row, mask) = if masked {
                            for b in &bias {
                                req += &format!(" {:x}", b.to_bits());
                            }
                            masked_row(&q, &bias, fixed)
                        } else {
                            (q.clone(), vec![false; c])
                        };
                        requests.push(req);
                        expected.push(float_fn::row(
                            FloatFn::Softmax,
                            fixed,
                            Rounding::Round,
                            &row,
                            Some(&mask),
                            &RowParams::default(),
                        ));
                    }
                }
            }
            for (a, e) in row_answers(&exe, &requests).iter().zip(&expected) {
                assert_eq!(a.bad, u64::MAX);
                match e {
                    Err(FloatFnError::Inexact(_)) => assert_ne!(a.inexact, u64::MAX),
                    Err(other) => panic!("unexpected CPU error {other}"),
                    Ok(y) => {
                        assert_eq!(a.inexact, u64::MAX);
                        assert_eq!(a.nonfinite, u64::MAX);
                        if ulps.abs() > 16 {
                            wrong_certified += (a.uncertified == 0 && &a.y != y) as usize;
                            continue;
                        }
                        rows += 1;
                        if a.uncertified == 0 {
                            assert_eq!(&a.y, y, "n={n} ulps={ulps}");
                        } else {
                            uncertified_rows += 1;
                        }
                    }
                }
            }
        }
        if ulps.abs() > 16 {
            assert!(wrong_certified > 0, "a 2^40-ulp error went unnoticed");
        }
    }
    assert!(rows > 300, "{rows}");
    assert!(
        uncertified_rows * 100 < rows,
        "{uncertified_rows} of {rows}"
    );
}

#[test]
fn norm_rows_equal_suf_fixed_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let mut s = 33u64;
    let mut checked = 0;
    for n in [37u32, 50, 64] {
        let fixed = FixedPoint::new(n, 12).unwrap();
        let f = fixed.frac_bits();
        let mut requests = vec!["K 0".to_string()];
        let mut expected = vec![];
        for c in [1usize, 3, 64, 384, 768] {
            for kind in 0..4 {
                for (center, beta) in [(true, false), (true, true), (false, false)] {
                    for eps in [1e-5f64, 1e-12, 0.0] {
                        let q = ring_row(&mut s, c, kind, fixed);
                        let gamma: Vec<i64> = (0..c)
                            .map(|_| (next(&mut s) % (4 << f)) as i64 - (2 << f))
                            .collect();
                        let b: Vec<i64> = (0..c)
                            .map(|_| (next(&mut s) % (2 << f)) as i64 - (1 << f))
                            .collect();
                        let mut req = format!(
                            "L {:x} {n:x} c {:x} {:x} {c:x} {:x} {} {}",
                            center as u8,
                            rule_code(Rounding::Round),
                            eps.to_bits(),
                            beta as u8,
                            hex(q.iter().copied()),
                            hex(gamma.iter().copied())
                        );
                        if beta {
                            req += &format!(" {}", hex(b.iter().copied()));
                        }
                        requests.push(req);
                        let params = RowParams {
                            gamma: gamma.iter().map(|&g| fixed.decode(g)).collect(),
                            beta: if beta {
                                b.iter().map(|&v| fixed.decode(v)).collect()
                            } else {
                                vec![0.0; c]
                            },
                        };
                        let function = if center {
                            FloatFn::LayerNorm { eps }
                        } else {
                            FloatFn::RmsNorm { eps }
                        };
                        expected.push(float_fn::row(
                            function,
                            fixed,
                            Rounding::Round,
                            &q,
                            None,
                            &params,
                        ));
                    }
                }
            }
        }
        for (a, e) in row_answers(&exe, &requests).iter().zip(&expected) {
            assert_eq!(a.uncertified, 0);
            match e {
                Ok(y) => {
                    assert_eq!(a.inexact, u64::MAX);
                    assert_eq!(a.nonfinite, u64::MAX);
                    assert_eq!(&a.y, y, "n={n}");
                    checked += 1;
                }
                Err(FloatFnError::Inexact(_)) => assert_ne!(a.inexact, u64::MAX),
                Err(FloatFnError::Fixed(_)) => assert_ne!(a.nonfinite, u64::MAX),
                Err(other) => panic!("unexpected CPU error {other}"),
            }
        }
    }
    assert!(checked > 300, "{checked}");
}
