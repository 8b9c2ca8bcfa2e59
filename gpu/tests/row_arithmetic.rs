//! The row kernels' arithmetic (gpu/src/suf_rows.cu: SIGMA's softmax, LayerNorm, RMSNorm)
//! checked against suf_fixed::sigma on machines without a GPU: the very row functions the
//! kernels call, compiled for the host with one thread (host_harness/), on ordinary rows, rows
//! of values near the ring's edge, rows whose sum of squares wraps, and masked rows. The
//! outputs, the `need` each row reports and the scans must all be equal.

mod host_harness;

use std::path::Path;

use host_harness::{ask_lines, build_host_harness, next, rule_code};
use suf_fixed::sigma::{
    layernorm_row_traced, rmsnorm_row_traced, softmax_row_traced, SigmaError, SoftmaxTables,
};
use suf_fixed::{FixedPoint, Rounding};
use suf_gpu::kernels::FlatDescriptor;

fn hex(v: impl IntoIterator<Item = i64>) -> String {
    v.into_iter()
        .map(|x| format!("{:x}", x as u64))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Packs descriptors as the op uploads them; where each starts.
fn pack(tables: &[&suf_fixed::descriptor::Descriptor]) -> (String, Vec<i64>) {
    let mut words = vec![];
    let mut at = vec![];
    for d in tables {
        at.push(words.len() as i64);
        words.extend(FlatDescriptor::new(d).unwrap().packed());
    }
    (format!("P {:x} {}", words.len(), hex(words)), at)
}

/// A row generator: `kind` picks the regime.
fn row(state: &mut u64, c: usize, kind: u64, fixed: FixedPoint) -> Vec<i64> {
    let f = fixed.frac_bits();
    let edge = 1i64 << (fixed.n_bits() - 2);
    (0..c)
        .map(|_| {
            let r = next(state);
            match kind {
                // ordinary: |x| < 8 real
                0 => (r % (16 << f)) as i64 - (8 << f),
                // near the ring's edge (wrapping differences, sums of squares that wrap)
                1 => fixed.wrap((r as i64 >> 3) as i128) / 2 + edge * ((r & 1) as i64),
                // raw 64-bit words: the op reads them as signed n-bit values
                2 => r as i64,
                // a few distinct values (ties)
                _ => ((r % 3) as i64 - 1) << f,
            }
        })
        .collect()
}

/// The device's answer for a row: need, live, bad, max |in|, max |out|, outputs.
struct Answer {
    need: u64,
    live: u64,
    bad: u64,
    in_abs: u64,
    out_abs: u64,
    y: Vec<i64>,
}

fn answers(exe: &Path, requests: &[String]) -> Vec<Answer> {
    ask_lines(exe, requests)
        .into_iter()
        .skip(1) // the table load
        .map(|w| Answer {
            need: w[0],
            live: w[1],
            bad: w[2],
            in_abs: w[3],
            out_abs: w[4],
            y: w[5..].iter().map(|&v| v as i64).collect(),
        })
        .collect()
}

fn max_abs(v: &[i64]) -> u64 {
    v.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0)
}

/// The CPU op's mask handling (SufNonlinear::encode_mask, eval_rows): masked below -bound,
/// else the encoded bias added in the ring; None for a bias the ring cannot hold.
fn biased(q: &[i64], bias: &[f32], fixed: FixedPoint) -> Option<(Vec<i64>, Vec<bool>)> {
    let bound = fixed.real_bound();
    let mut row = vec![];
    let mut masked = vec![];
    for (&v, &b) in q.iter().zip(bias) {
        let b = b as f64;
        if b < -bound {
            row.push(0);
            masked.push(true);
        } else if b.is_nan() || b >= bound {
            return None;
        } else {
            let e = fixed.encode(b, Rounding::Round).unwrap();
            row.push(fixed.wrap(v as i128 + e as i128));
            masked.push(false);
        }
    }
    Some((row, masked))
}

#[test]
fn softmax_rows_on_the_device_equal_suf_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let tables = SoftmaxTables::sigma();
    let (load, at) = pack(&[tables.nexp_hi(), tables.nexp_lo(), tables.reciprocal()]);
    let mut s = 11u64;
    let (mut checked, mut wrapped, mut masked_rows, mut too_long) = (0, 0, 0, 0);
    for n in [37u32, 50, 64] {
        let fixed = FixedPoint::new(n, 12).unwrap();
        let mut requests = vec![load.clone()];
        let mut cases = vec![];
        for c in [1usize, 2, 7, 64, 128, 200] {
            for kind in 0..4 {
                for mask_kind in 0..4u64 {
                    let q = row(&mut s, c, kind, fixed);
                    // no mask; causal-style fills; finite biases; a bias the ring cannot hold
                    let bias: Option<Vec<f32>> = match mask_kind {
                        0 => None,
                        1 => Some(
                            (0..c)
                                .map(|j| if j % 3 == 2 { f32::NEG_INFINITY } else { 0.0 })
                                .collect(),
                        ),
                        2 => Some((0..c).map(|j| [0.0, -0.5, -3.4e38, 1.25][j % 4]).collect()),
                        _ => Some(
                            (0..c)
                                .map(|j| if j == c / 2 { f32::NAN } else { -1e4 })
                                .collect(),
                        ),
                    };
                    let mut req = format!(
                        "S {n:x} c {:x} {:x} {:x} {:x} {:x} {c:x} {:x} {}",
                        rule_code(Rounding::Round),
                        at[0],
                        at[1],
                        at[2],
                        tables.recip_bits(),
                        bias.is_some() as u8,
                        hex(q.iter().copied())
                    );
                    if let Some(b) = &bias {
                        req += " ";
                        req += &b
                            .iter()
                            .map(|x| format!("{:x}", x.to_bits()))
                            .collect::<Vec<_>>()
                            .join(" ");
                    }
                    requests.push(req);
                    cases.push((q, bias));
                }
            }
        }
        for ((q, bias), got) in cases.iter().zip(answers(&exe, &requests)) {
            assert_eq!(got.in_abs, max_abs(q), "max |input|");
            let (x, masked) = match bias {
                None => (q.clone(), vec![false; q.len()]),
                Some(b) => match biased(q, b, fixed) {
                    Some(r) => r,
                    None => {
                        let first = b
                            .iter()
                            .position(|v| v.is_nan() || *v as f64 >= fixed.real_bound());
                        assert_eq!(Some(got.bad as usize), first, "the bad mask entry");
                        continue;
                    }
                },
            };
            assert_eq!(got.bad, u64::MAX, "no bad mask entry");
            let live = masked.iter().filter(|m| !**m).count();
            assert_eq!(got.live as usize, live);
            masked_rows += usize::from(live < q.len());
            match softmax_row_traced(&x, &masked, &tables, n, 12) {
                Ok((y, need)) => {
                    assert_eq!(got.y, y, "n = {n}, row {q:?}, mask {bias:?}");
                    assert_eq!(got.need, need as u64, "need, n = {n}, row {q:?}");
                    assert_eq!(got.out_abs, max_abs(&y));
                    wrapped += usize::from(need > n);
                    checked += 1;
                }
                Err(SigmaError::RowTooLong { unmasked, .. }) => {
                    assert_eq!(got.live as usize, unmasked);
                    too_long += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(
        checked > 150 && wrapped > 10 && masked_rows > 50 && too_long > 0,
        "checked {checked}, wrapped {wrapped}, masked {masked_rows}, too long {too_long}"
    );
}

#[test]
fn norm_rows_on_the_device_equal_suf_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_host_harness(dir.path());
    let mut s = 23u64;
    let (mut checked, mut wrapped) = (0, 0);
    for c in [1usize, 3, 8, 64, 384, 768] {
        let rsqrt = suf_fixed::tables::rsqrt(c as i64).unwrap();
        let (load, at) = pack(&[&rsqrt]);
        for n in [37u32, 50, 64] {
            let fixed = FixedPoint::new(n, 12).unwrap();
            let mut requests = vec![load.clone()];
            let mut cases = vec![];
            for kind in 0..4 {
                for center in [true, false] {
                    let q = row(&mut s, c, kind, fixed);
                    let gamma: Vec<i64> = (0..c)
                        .map(|_| (next(&mut s) % 16384) as i64 - 8192)
                        .collect();
                    let beta: Option<Vec<i64>> = (center && kind != 3).then(|| {
                        (0..c)
                            .map(|_| (next(&mut s) % (1 << 30)) as i64 - (1 << 29))
                            .collect()
                    });
                    let mut req = format!(
                        "N {:x} {n:x} c {:x} {c:x} {:x} {} {}",
                        center as u8,
                        at[0],
                        beta.is_some() as u8,
                        hex(q.iter().copied()),
                        hex(gamma.iter().copied())
                    );
                    if let Some(b) = &beta {
                        req += " ";
                        req += &hex(b.iter().copied());
                    }
                    requests.push(req);
                    cases.push((q, gamma, beta, center));
                }
            }
            for ((q, gamma, beta, center), got) in cases.iter().zip(answers(&exe, &requests)) {
                let (y, need) = if *center {
                    let zeros = vec![0; c];
                    layernorm_row_traced(q, gamma, beta.as_ref().unwrap_or(&zeros), &rsqrt, n, 12)
                } else {
                    rmsnorm_row_traced(q, gamma, &rsqrt, n, 12)
                }
                .unwrap();
                assert_eq!(
                    got.y, y,
                    "c = {c}, n = {n}, center {center}, row kind of {q:?}"
                );
                assert_eq!(
                    got.need, need as u64,
                    "need, c = {c}, n = {n}, center {center}"
                );
                assert_eq!((got.in_abs, got.out_abs), (max_abs(q), max_abs(&y)));
                wrapped += usize::from(need > n);
                checked += 1;
            }
        }
    }
    assert!(
        checked > 100 && wrapped > 10,
        "checked {checked}, wrapped {wrapped}"
    );
}
