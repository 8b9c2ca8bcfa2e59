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
#define __device__
#define __forceinline__ inline
#define SUF_HOST_TEST 1
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __double2float_rn(double d) { return (float)d; }
static inline double __ll2double_rn(long long q) { return (double)q; }
static inline long long __double_as_longlong(double v) { long long b; std::memcpy(&b, &v, 8); return b; }
using std::rint; using std::trunc; using std::floor; using std::fabs;
#include "suf.cu"
int main() {
    unsigned bits; int rule, n; unsigned f;
    while (std::scanf("%x %d %d %u", &bits, &rule, &n, &f) == 4) {
        float x; std::memcpy(&x, &bits, 4);
        double scale = std::ldexp(1.0, (int)f), inv = std::ldexp(1.0, -(int)f);
        float y = quantize1(x, scale, inv, rule, n);
        unsigned out; std::memcpy(&out, &y, 4);
        std::printf("%08x\n", out);
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
            let mut stdin = String::new();
            for x in &xs {
                stdin.push_str(&format!(
                    "{:08x} {} {} 12\n",
                    x.to_bits(),
                    rule_code(rounding),
                    n_bits
                ));
            }
            let mut child = Command::new(&exe)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            let device: Vec<u32> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| u32::from_str_radix(l, 16).unwrap())
                .collect();
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
