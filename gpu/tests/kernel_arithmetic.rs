//! The SUF kernels' arithmetic (gpu/src/suf.cu) checked against suf_fixed on machines without
//! a GPU: the device functions are compiled for the host with a C++ compiler (the CUDA
//! intrinsics they use are IEEE operations with host equivalents, see the shim below, and
//! contraction is off as in the NVRTC build) and fed values of every magnitude. The kernels'
//! loops and reductions themselves run on the GPU only (scripts/gpu_check.sh).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use suf_fixed::{FixedPoint, Rounding};

const SHIM: &str = r#"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
#define __device__
#define __forceinline__ inline
#define SUF_HOST_TEST 1
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __double2float_rn(double d) { return (float)d; }
static inline double __ll2double_rn(long long q) { return (double)q; }
static inline float __ll2float_rn(long long q) { return (float)q; }
static inline double __ull2double_rn(unsigned long long q) { return (double)q; }
static inline long long __double_as_longlong(double v) { long long b; std::memcpy(&b, &v, 8); return b; }
static inline int __clzll(long long v) { return __builtin_clzll((unsigned long long)v); }
static inline int __ffsll(long long v) { return __builtin_ffsll(v); }
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
using std::rint; using std::trunc; using std::floor; using std::fabs; using std::ldexp;
#include "suf.cu"
// One request per line: an op letter and its operands (hex words); one hex answer per line.
static std::vector<long long> cuts, offsets, coeffs;
static int pieces;
static long long lo, hi;
int main() {
    char op;
    while (std::scanf(" %c", &op) == 1) {
        unsigned long long a, b, c, d;
        if (op == 'q') {  // quantize1(x f32 bits, rule, n, f)
            std::scanf("%llx %llx %llx %llx", &a, &b, &c, &d);
            unsigned bits = (unsigned)a; float x; std::memcpy(&x, &bits, 4);
            float y = quantize1(x, std::ldexp(1.0, (int)d), std::ldexp(1.0, -(int)d), (int)b, (int)c);
            unsigned out; std::memcpy(&out, &y, 4);
            std::printf("%x\n", out);
        } else if (op == 't') {  // truncate_rule(v, shift, rule)
            std::scanf("%llx %llx %llx", &a, &b, &c);
            std::printf("%llx\n", (unsigned long long)truncate_rule((long long)a, (int)b, (int)c));
        } else if (op == 'a') {  // ars(v, shift, n)
            std::scanf("%llx %llx %llx", &a, &b, &c);
            std::printf("%llx\n", (unsigned long long)ars((long long)a, (int)b, (int)c));
        } else if (op == 'w') {  // abs128_to_double(hi, lo) bits
            std::scanf("%llx %llx", &a, &b);
            double r = abs128_to_double((long long)a, b);
            std::printf("%llx\n", (unsigned long long)__double_as_longlong(r));
        } else if (op == 's') {  // significant_bits(q)
            std::scanf("%llx", &a);
            std::printf("%x\n", significant_bits((long long)a));
        } else if (op == 'e') {  // encode1(x f64 bits, scale bits, rule, n)
            std::scanf("%llx %llx %llx %llx", &a, &b, &c, &d);
            double x; std::memcpy(&x, &a, 8);
            std::printf("%llx\n", (unsigned long long)encode1(x, std::ldexp(1.0, (int)b), (int)c, (int)d));
        } else if (op == 'D') {  // load a descriptor: pieces, coefficients, lo, hi, arrays
            std::scanf("%llx %llx %llx %llx", &a, &b, &c, &d);
            pieces = (int)a; lo = (long long)c; hi = (long long)d;
            cuts.assign(a, 0); offsets.assign(a + 1, 0); coeffs.assign(b ? b : 1, 0);
            for (auto &v : cuts) { std::scanf("%llx", &a); v = (long long)a; }
            for (auto &v : offsets) { std::scanf("%llx", &a); v = (long long)a; }
            for (unsigned long long j = 0; j < b; j++) { std::scanf("%llx", &a); coeffs[j] = (long long)a; }
            std::printf("0\n");
        } else if (op == 'x') {  // descriptor_eval(q) with the loaded descriptor
            std::scanf("%llx", &a);
            long long r = descriptor_eval((long long)a, cuts.data(), offsets.data(), coeffs.data(), pieces, lo, hi);
            std::printf("%llx\n", (unsigned long long)r);
        } else {
            return 2;
        }
    }
    return 0;
}
"#;

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

fn build_host_harness(dir: &Path) -> PathBuf {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = dir.join("harness.cpp");
    std::fs::write(&main, SHIM).unwrap();
    let exe = dir.join("harness");
    let out = Command::new(compiler())
        .args([
            "-O2",
            "-std=c++17",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-I",
        ])
        .arg(&src_dir)
        .arg(&main)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("this test needs a C++ compiler ({}): {e}", compiler()));
    assert!(
        out.status.success(),
        "compiling suf.cu for the host failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// splitmix64, so the inputs are the same on every run.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

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

/// Sends one request per line to the host-compiled kernel functions; their hex answers.
fn ask(exe: &Path, requests: &[String]) -> Vec<u64> {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = requests.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "harness failed");
    let answers: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| u64::from_str_radix(l, 16).unwrap())
        .collect();
    assert_eq!(answers.len(), requests.len());
    answers
}

/// Every answer of the host-compiled kernel functions equals suf_fixed's.
fn assert_answers(exe: &Path, requests: &[String], expected: &[u64]) {
    let got = ask(exe, requests);
    let bad: Vec<String> = requests
        .iter()
        .zip(got.iter().zip(expected))
        .filter(|(_, (g, e))| g != e)
        .map(|(r, (g, e))| format!("{}: device {g:x}, suf_fixed {e:x}", &r[..r.len().min(60)]))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        requests.len(),
        bad[..bad.len().min(10)].join("\n")
    );
}

fn rule_code(r: Rounding) -> i32 {
    match r {
        Rounding::Round => 0,
        Rounding::Trunc => 1,
        Rounding::Floor => 2,
    }
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
