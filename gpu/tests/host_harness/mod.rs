//! The host harness of the kernel tests: suf.cu and suf_rows.cu compiled for the host with a
//! C++ compiler (the CUDA intrinsics they use are IEEE operations with host equivalents, see
//! the shim, and contraction is off as in the NVRTC build), answering requests on stdin.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use suf_fixed::Rounding;

/// The CUDA intrinsics the kernels use, as the host's IEEE operations.
macro_rules! intrinsics {
    () => {
        r#"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
#define __device__
#define __forceinline__ inline
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __double2float_rn(double d) { return (float)d; }
static inline double __ll2double_rn(long long q) { return (double)q; }
static inline float __ll2float_rn(long long q) { return (float)q; }
static inline double __ull2double_rn(unsigned long long q) { return (double)q; }
static inline long long __double_as_longlong(double v) { long long b; std::memcpy(&b, &v, 8); return b; }
static inline int __clzll(long long v) { return v ? __builtin_clzll((unsigned long long)v) : 64; }
static inline int __ffsll(long long v) { return __builtin_ffsll(v); }
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
using std::rint; using std::trunc; using std::floor; using std::fabs; using std::ldexp;
using std::erf; using std::tanh; using std::exp; using std::sqrt; using std::nextafter;
"#
    };
}

/// Every kernel of the three programs, compiled for the host with CUDA's thread builtins
/// stubbed: a syntax and type check of the kernels proper (NVRTC compiles them only on a
/// GPU machine), not a run.
pub const KERNEL_CHECK: &str = concat!(
    intrinsics!(),
    r#"
#define __global__
#define __shared__ static
struct Dim3 { unsigned x, y, z; };
static Dim3 threadIdx, blockIdx, blockDim, gridDim;
template <class T> static T __shfl_down_sync(unsigned, T v, int) { return v; }
template <class T> static T atomicMin(T *a, T v) { T o = *a; if (v < o) *a = v; return o; }
template <class T> static T atomicMax(T *a, T v) { T o = *a; if (v > o) *a = v; return o; }
template <class T> static T atomicAdd(T *a, T v) { T o = *a; *a = o + v; return o; }
static void __syncthreads() {}
static inline long long __double2ll_rn(double v) { return (long long)std::rint(v); }
#include "suf.cu"
#include "suf_rows.cu"
#include "suf_ring_fn.cu"
"#
);

const SHIM: &str = concat!(
    intrinsics!(),
    "#define SUF_HOST_TEST 1\n",
    r#"
// The ring functions' transcendental results moved by a set number of ulps: a stand-in for
// CUDA's functions, which differ from libm's by a few.
static long long perturb_ulps = 0;
static double ring_fn_perturb(double v) {
    if (v == 0.0 || !std::isfinite(v)) return v;
    double ulp = std::nextafter(std::fabs(v), INFINITY) - std::fabs(v);
    // The sign follows a bit of v, so the moves differ from value to value (a uniform move
    // would cancel in a softmax's quotients).
    long long bits; std::memcpy(&bits, &v, 8);
    double k = (double)perturb_ulps * (((bits >> 17) & 1) ? 1.0 : -1.0);
    return v + k * ulp;
}
#define RING_FN_PERTURB(v) ring_fn_perturb(v)
#include "suf.cu"
#include "suf_rows.cu"
#include "suf_ring_fn.cu"
static void print_ring_fn(const RingFnScan &s, const std::vector<long long> &y) {
    std::printf("%llx %llx %llx %llx %llx %llx", s.bad, s.in_abs, s.uncertified, s.out_abs, s.inexact, s.nonfinite);
    for (long long v : y) std::printf(" %llx", (unsigned long long)v);
    std::printf("\n");
}
// One request per line: an op letter and its operands (hex words); one hex answer per line.
static std::vector<long long> cuts, offsets, coeffs;
static int pieces;
static long long lo, hi;
static std::vector<long long> packed;
static std::vector<long long> read_words(unsigned long long count) {
    std::vector<long long> v(count);
    for (auto &w : v) { unsigned long long a; std::scanf("%llx", &a); w = (long long)a; }
    return v;
}
static void print_row(unsigned need, unsigned long long live, const RowScan &scan, const std::vector<long long> &y) {
    std::printf("%x %llx %llx %llx %llx", need, live, scan.bad, scan.in_abs, scan.out_abs);
    for (long long v : y) std::printf(" %llx", (unsigned long long)v);
    std::printf("\n");
}
int main() {
    char op;
    while (std::scanf(" %c", &op) == 1) {
        unsigned long long a, b, c, d, op_arg;
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
        } else if (op == 'P') {  // load packed descriptors: the word count, the words
            std::scanf("%llx", &a);
            packed = read_words(a);
            std::printf("0\n");
        } else if (op == 'S') {  // softmax_row: n f rule hi_at lo_at recip_at recip_bits c has_mask x.. mask..
            unsigned long long p[9];
            for (auto &w : p) std::scanf("%llx", &w);
            int n = (int)p[0], f = (int)p[1], c = (int)p[7];
            std::vector<long long> x = read_words(c), y(c, 0);
            std::vector<float> m(c);
            if (p[8]) for (auto &v : m) { unsigned bits; std::scanf("%x", &bits); std::memcpy(&v, &bits, 4); }
            RowMask mask = {p[8] ? m.data() : nullptr, 0, 1, std::ldexp(1.0, n - 1 - f), std::ldexp(1.0, f), (int)p[2]};
            RowScan scan = {~0ull, 0ull, 0ull};
            RowResult r = softmax_row(x.data(), y.data(), c, &mask, packed.data() + p[3], packed.data() + p[4],
                                      packed.data() + p[5], (int)p[6], n, 0, &scan);
            print_row(r.need, r.live, scan, y);
        } else if (op == 'N') {  // norm_row: center n f rsqrt_at c has_beta x.. gamma.. beta..
            unsigned long long p[6];
            for (auto &w : p) std::scanf("%llx", &w);
            int c = (int)p[4];
            std::vector<long long> x = read_words(c), g = read_words(c), y(c, 0);
            std::vector<long long> b = p[5] ? read_words(c) : std::vector<long long>();
            RowScan scan = {~0ull, 0ull, 0ull};
            RowResult r = norm_row(x.data(), y.data(), c, g.data(), p[5] ? b.data() : nullptr,
                                   packed.data() + p[3], (int)p[0], (int)p[1], (int)p[2], &scan);
            print_row(r.need, r.live, scan, y);
        } else if (op == 'K') {  // the perturbation of the ring functions, in ulps (signed)
            std::scanf("%llx", &a);
            perturb_ulps = (long long)a;
            std::printf("0\n");
        } else if (op == 'G') {  // ring_activation + emit: kind q n f rule -> y bits, bound bits, q, uncertified
            std::scanf("%llx %llx %llx %llx %llx", &a, &b, &c, &d, &op_arg);
            double bound;
            double f2 = std::ldexp(1.0, (int)d);
            double y = ring_activation((int)a, (double)(long long)b * std::ldexp(1.0, -(int)d), &bound);
            RingFnScan s; ring_fn_scan_init(&s);
            long long q = ring_fn_emit(y, bound, f2, 1.0, (int)op_arg, (int)c, 0, &s);
            std::printf("%llx %llx %llx %llx\n", (unsigned long long)__double_as_longlong(y),
                        (unsigned long long)__double_as_longlong(bound), (unsigned long long)q, s.uncertified);
        } else if (op == 'M') {  // ring_softmax_row: n f rule c has_mask x.. mask..
            unsigned long long p[5];
            for (auto &w : p) std::scanf("%llx", &w);
            int n = (int)p[0], f = (int)p[1], c = (int)p[3];
            std::vector<long long> x = read_words(c), y(c, 0);
            std::vector<float> m(c);
            if (p[4]) for (auto &v : m) { unsigned bits; std::scanf("%x", &bits); std::memcpy(&v, &bits, 4); }
            RowMask mask = {p[4] ? m.data() : nullptr, 0, 1, std::ldexp(1.0, n - 1 - f), std::ldexp(1.0, f), (int)p[2]};
            RingFnScan s; ring_fn_scan_init(&s);
            ring_softmax_row(x.data(), y.data(), c, &mask, n, std::ldexp(1.0, f), std::ldexp(1.0, -f), 1.0, (int)p[2], 0, &s);
            print_ring_fn(s, y);
        } else if (op == 'L') {  // ring_norm_row: center n f rule eps_bits c has_beta x.. gamma.. beta..
            unsigned long long p[7];
            for (auto &w : p) std::scanf("%llx", &w);
            int n = (int)p[1], f = (int)p[2], c = (int)p[5];
            double eps; std::memcpy(&eps, &p[4], 8);
            std::vector<long long> x = read_words(c), g = read_words(c), y(c, 0);
            std::vector<long long> bt = p[6] ? read_words(c) : std::vector<long long>();
            RingFnScan s; ring_fn_scan_init(&s);
            ring_norm_row(x.data(), y.data(), c, g.data(), p[6] ? bt.data() : nullptr, (int)p[0], eps, n,
                          std::ldexp(1.0, f), std::ldexp(1.0, -f), (int)p[3], 0, &s);
            print_ring_fn(s, y);
        } else {
            return 2;
        }
    }
    return 0;
}
"#
);

pub fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// Compiles KERNEL_CHECK with the host compiler (syntax and types only); its diagnostics.
pub fn check_kernels_compile(dir: &Path) -> Result<(), String> {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = dir.join("kernels.cpp");
    std::fs::write(&main, KERNEL_CHECK).unwrap();
    let out = Command::new(compiler())
        .args([
            "-fsyntax-only",
            "-std=c++17",
            "-Wall",
            "-Wno-unused-function",
            "-I",
        ])
        .arg(&src_dir)
        .arg(&main)
        .output()
        .unwrap_or_else(|e| panic!("this test needs a C++ compiler ({}): {e}", compiler()));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn build_host_harness(dir: &Path) -> PathBuf {
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
pub fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sends one request per line to the host-compiled kernel functions; their hex answers.
pub fn ask(exe: &Path, requests: &[String]) -> Vec<u64> {
    ask_lines(exe, requests)
        .into_iter()
        .map(|words| {
            assert_eq!(words.len(), 1, "one answer per request");
            words[0]
        })
        .collect()
}

/// One line of hex words per request.
pub fn ask_lines(exe: &Path, requests: &[String]) -> Vec<Vec<u64>> {
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
    let answers: Vec<Vec<u64>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| u64::from_str_radix(w, 16).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(answers.len(), requests.len());
    answers
}

/// Every answer of the host-compiled kernel functions equals suf_fixed's.
pub fn assert_answers(exe: &Path, requests: &[String], expected: &[u64]) {
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

pub fn rule_code(r: Rounding) -> i32 {
    match r {
        Rounding::Round => 0,
        Rounding::Trunc => 1,
        Rounding::Floor => 2,
    }
}
