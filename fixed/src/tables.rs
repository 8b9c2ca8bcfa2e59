//! Generators that build each shipped descriptor (`compiler/approx/*.json`) from its formula
//! in REFERENCES.md section 2, and measure the error bound the file states.
//!
//! Exact functions are computed in f64 with the `libm` crate (pure Rust), so a generated
//! file is the same on every platform: the tests compare the shipped files with these.

use crate::descriptor::{Descriptor, ErrorBound, ErrorMetric, InputDomain, Predicate, FORMAT};
use crate::pow2;
use crate::sigma::rsqrt_index;
use std::collections::BTreeMap;

/// The command that regenerates every shipped file.
pub const GENERATOR: &str = "cargo run -p suf-fixed --example gen_descriptors -- compiler/approx";

/// SIGMA's scale everywhere; the tables below are built for it.
pub const F: u32 = 12;

/// rsqrt tables shipped by default: LayerNorm widths of the Table-4 models, MiniLM (384),
/// SmolLM2 (576) and the test fixtures (8, 32).
pub const DEFAULT_RSQRT_C: [i64; 9] = [8, 32, 128, 256, 384, 576, 768, 1024, 2048];

/// The reciprocal width shipped: ceil(log2 L) + 6 for rows up to L = 128.
pub const DEFAULT_RECIP_BITS: u32 = 13;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TableError {
    #[error(
        "reciprocal table width {0} bits is out of range (need 7..=18: 2^18 / i must be >= 1)"
    )]
    RecipBits(u32),
    #[error("rsqrt table for C = {0}: C must be in 1..=2^20")]
    RsqrtC(i64),
}

/// Exact GELU (erf form).
pub fn gelu_exact(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// Exact SiLU, x * sigmoid(x).
pub fn silu_exact(x: f64) -> f64 {
    x / (1.0 + libm::exp(-x))
}

/// Rounds a measured error up to two significant digits (the bound a file states).
pub fn round_up_2sig(v: f64) -> f64 {
    // NaN and infinities pass through; zero and below state no error.
    if v.is_nan() || v.is_infinite() {
        return v;
    }
    if v <= 0.0 {
        return 0.0;
    }
    let e = v.log10().floor() as i32;
    // Divide by an exact power of ten so the result is the double nearest the decimal.
    let to_int = |k: f64| {
        if e >= 1 {
            k * 10f64.powi(e - 1)
        } else {
            k / 10f64.powi(1 - e)
        }
    };
    let scaled = if e >= 1 {
        v / 10f64.powi(e - 1)
    } else {
        v * 10f64.powi(1 - e)
    };
    let mut k = scaled.ceil();
    // Floating error in `scaled` may land one step low (or high); fix up to the smallest
    // two-digit decimal that is >= v.
    while to_int(k) < v {
        k += 1.0;
    }
    while k > 1.0 && to_int(k - 1.0) >= v {
        k -= 1.0;
    }
    to_int(k)
}

fn base(
    name: &str,
    function: &str,
    source: &str,
    input: InputDomain,
    error: ErrorBound,
) -> Descriptor {
    Descriptor {
        format: FORMAT.to_string(),
        name: name.to_string(),
        version: 1,
        function: function.to_string(),
        source: source.to_string(),
        generator: GENERATOR.to_string(),
        params: BTreeMap::new(),
        input,
        output_scale_bits: F,
        cuts: Vec::new(),
        polys: Vec::new(),
        predicates: Vec::new(),
        error,
    }
}

/// A degree-0 table over [0, values.len()): one constant per index, equal runs merged.
fn fill_table(d: &mut Descriptor, values: &[i64]) {
    d.cuts = (0..values.len() as i64).collect();
    d.polys = values.iter().map(|&v| vec![v]).collect();
    d.merge_equal_pieces();
}

/// Max |approx - exact| (or relative) over samples of (input, exact) against `d`.
fn measure(d: &Descriptor, metric: ErrorMetric, samples: impl Iterator<Item = (i64, f64)>) -> f64 {
    let out_scale = pow2(-(d.output_scale_bits as i32));
    samples
        .map(|(x, exact)| {
            let err = (d.eval(x) as f64 * out_scale - exact).abs();
            match metric {
                ErrorMetric::Abs => err,
                ErrorMetric::Rel => err / exact.abs(),
            }
        })
        .fold(0.0, f64::max)
}

/// ReLU(x) - g(x) at scale f, floored: the table of SIGMA's GELU/SiLU (`*_sub_relu(t, 6, 12)`).
fn relu_sub_table(exact: fn(f64) -> f64, clip: i64) -> Vec<i64> {
    (0..=clip)
        .map(|i| {
            let x = i as f64 / 64.0;
            ((x.max(0.0) - exact(x)) * pow2(F as i32)).floor() as i64
        })
        .collect()
}

/// The pieces of (q >= 0 ? q : 0) - T[min(|floor(q / 64)|, clip)] over every i64 q.
///
/// For q < 0, floor(q / 64) = -j on [-64 j, -64 j + 63], so |Xt| = j (= ceil(|q| / 64)):
/// one constant -T[min(j, clip)] per j, everything below -64 (clip - 1) sharing -T[clip].
/// For q >= 0 the piece [64 i, 64 i + 63] is q - T[i], and q >= 64 clip is q - T[clip].
fn relu_sub_pieces(d: &mut Descriptor, t: &[i64]) {
    let clip = (t.len() - 1) as i64;
    d.cuts.clear();
    d.polys.clear();
    d.cuts.push(i64::MIN);
    d.polys.push(vec![-t[clip as usize]]);
    for j in (1..clip).rev() {
        d.cuts.push(-64 * j);
        d.polys.push(vec![-t[j as usize]]);
    }
    for i in 0..=clip {
        d.cuts.push(64 * i);
        d.polys.push(vec![-t[i as usize], 1]);
    }
    d.merge_equal_pieces();
}

fn relu_sub(
    name: &str,
    label: &str,
    exact: fn(f64) -> f64,
    clip: i64,
    source: &str,
    reference: &str,
) -> Descriptor {
    let function = format!(
        "y = (q >= 0 ? q : 0) - T[min(|floor(q / 64)|, {clip})], T[i] = floor((ReLU(i/64) - {label}(i/64)) * 2^12); q and y at scale 12"
    );
    let input = InputDomain {
        scale_bits: F,
        min: i64::MIN,
        max: i64::MAX,
    };
    let error = ErrorBound {
        metric: ErrorMetric::Abs,
        over: [-16.0, 16.0],
        max: 0.0,
        reference: reference.to_string(),
    };
    let mut d = base(name, &function, source, input, error);
    relu_sub_pieces(&mut d, &relu_sub_table(exact, clip));
    // The sign bit selects q or 0 in SIGMA's protocol (d = dReLU(Xt) = not msb).
    d.predicates = vec![Predicate::Msb];
    let scale = pow2(F as i32);
    let span = (16.0 * scale) as i64;
    let measured = measure(
        &d,
        ErrorMetric::Abs,
        (-span..=span).map(|q| (q, exact(q as f64 / scale))),
    );
    d.error.max = round_up_2sig(measured);
    d
}

/// SIGMA's GELU: 6-bit reduction, 8-bit clip, 256-entry `reluSubGelu` table.
pub fn gelu() -> Descriptor {
    relu_sub(
        "sigma-gelu",
        "GELU",
        gelu_exact,
        255,
        "REFERENCES.md section 2 GELU; SIGMA fss/gpu_gelu.cu l.103-157, fss/gpu_lut.h l.54-76, backend/sigma.h l.110-111",
        "GELU(x) = x/2 * (1 + erf(x / sqrt 2))",
    )
}

/// SIGMA's SiLU: the GELU construction with a 10-bit clip and a 1024-entry `reluSubSilu` table.
pub fn silu() -> Descriptor {
    relu_sub(
        "sigma-silu",
        "SiLU",
        silu_exact,
        1023,
        "REFERENCES.md section 2 GELU (SiLU paragraph); SIGMA fss/gpu_gelu.cu, fss/gpu_lut.h",
        "SiLU(x) = x / (1 + e^-x)",
    )
}

/// e^(-x) table over 256 indices at input scale `scale_bits`, entries trunc(e^(-i/2^s) * 2^12).
fn nexp(name: &str, part: &str, scale_bits: u32) -> Descriptor {
    let step = pow2(-(scale_bits as i32));
    let values: Vec<i64> = (0..256)
        .map(|i| (libm::exp(-(i as f64) * step) * pow2(F as i32)).trunc() as i64)
        .collect();
    let function = format!(
        "E_{part}[i] = trunc(e^(-i / 2^{scale_bits}) * 2^12), i in [0, 255]; softmax's e = floor(E_hi[d >> 8] * E_lo[d & 255] / 2^12)"
    );
    let input = InputDomain {
        scale_bits,
        min: 0,
        max: 255,
    };
    let error = ErrorBound {
        metric: ErrorMetric::Abs,
        over: [0.0, 255.0 * step],
        max: 0.0,
        reference: "e^(-x)".to_string(),
    };
    let mut d = base(
        name,
        &function,
        "REFERENCES.md section 2 Softmax step 4; SIGMA fss/gpu_nexp.cu, tables in gpu_mha.h l.57-63",
        input,
        error,
    );
    fill_table(&mut d, &values);
    let measured = measure(
        &d,
        ErrorMetric::Abs,
        (0..256).map(|i| (i, libm::exp(-(i as f64) * step))),
    );
    d.error.max = round_up_2sig(measured);
    d
}

/// nExp high part: d >> 8 of a scale-12 difference is at scale 4.
pub fn nexp_hi() -> Descriptor {
    nexp("sigma-nexp-hi", "hi", 4)
}

/// nExp low part: d & 255 at scale 12.
pub fn nexp_lo() -> Descriptor {
    nexp("sigma-nexp-lo", "lo", 12)
}

/// Softmax's reciprocal: RECIP[i] = trunc(2^18 / i), RECIP[0] = 2^18 / 2^bits (the sum of a
/// full row of maxima, L * 64 = 2^bits, wraps to index 0). Input den/64 (scale 6), output scale 12.
pub fn reciprocal(bits: u32) -> Result<Descriptor, TableError> {
    if !(7..=18).contains(&bits) {
        return Err(TableError::RecipBits(bits));
    }
    let size = 1i64 << bits;
    let values: Vec<i64> = (0..size)
        .map(|i| {
            if i == 0 {
                (1 << 18) / size
            } else {
                (1 << 18) / i
            }
        })
        .collect();
    let function = format!(
        "RECIP[i] = trunc(2^18 / i) for i in [1, 2^{bits}), RECIP[0] = 2^18 / 2^{bits}; i = floor(den / 64) mod 2^{bits}, den at scale 12"
    );
    let input = InputDomain {
        scale_bits: 6,
        min: 0,
        max: size - 1,
    };
    let error = ErrorBound {
        metric: ErrorMetric::Rel,
        over: [1.0, (size - 1) as f64 / 64.0],
        max: 0.0,
        reference: "1 / x, x = i / 64 (relative error of RECIP[i] vs 2^18 / i, i in [64, 2^bits))"
            .to_string(),
    };
    let mut d = base(
        &format!("sigma-reciprocal-{bits}"),
        &function,
        "REFERENCES.md section 2 Softmax steps 6-7; SIGMA fss/gpu_inverse.cu, tables in gpu_mha.h l.57-63",
        input,
        error,
    );
    d.params.insert("bits".to_string(), bits as i64);
    fill_table(&mut d, &values);
    let measured = measure(
        &d,
        ErrorMetric::Rel,
        (64..size).map(|i| (i, 64.0 / i as f64)),
    );
    d.error.max = round_up_2sig(measured);
    Ok(d)
}

/// The real variance range the rsqrt bound is stated over: std in [2^-6, 2^6].
pub const RSQRT_VAR_RANGE: [f64; 2] = [1.0 / 4096.0, 4096.0];

/// Sums of squares S (scale 2f) sampled for the rsqrt bound: the first, middle and last S of
/// every 13-bit float bucket, where the truncation error peaks, inside `var_range` for C.
pub fn rsqrt_samples(c: i64, var_range: [f64; 2]) -> Vec<u64> {
    let to_s = |var: f64| var * c as f64 * pow2(2 * F as i32);
    let (lo, hi) = (to_s(var_range[0]), to_s(var_range[1]));
    let mut out = Vec::new();
    for k in 0u32..64 {
        for m in 0u128..128 {
            // Bucket [(128 + m) 2^(k-7), (129 + m) 2^(k-7)) of integers, k < 7 included.
            let first = ((128 + m) << k).div_ceil(128);
            let last = ((129 + m) << k).div_ceil(128) - 1;
            if first > last {
                continue;
            }
            for s in [first, (first + last) / 2, last] {
                if (s as f64) >= lo && (s as f64) <= hi && s <= u64::MAX as u128 {
                    out.push(s as u64);
                }
            }
        }
    }
    out.dedup();
    out
}

/// LayerNorm's rsqrt for row width C: RSQRT_C[k * 128 + m] = trunc(2^24 / sqrt((128 + m) *
/// 2^(k - 7) / C)), i.e. 1/sqrt(var) at scale 12 for S = sum (x - mu)^2 at scale 24.
pub fn rsqrt(c: i64) -> Result<Descriptor, TableError> {
    if !(1..=1 << 20).contains(&c) {
        return Err(TableError::RsqrtC(c));
    }
    let values: Vec<i64> = (0..8192i64)
        .map(|idx| {
            let (k, m) = (idx / 128, idx % 128);
            let s = (128 + m) as f64 * pow2(k as i32 - 7);
            (pow2(2 * F as i32) / libm::sqrt(s / c as f64)).trunc() as i64
        })
        .collect();
    let function = format!(
        "RSQRT[k*128 + m] = trunc(2^24 / sqrt((128 + m) * 2^(k-7) / {c})); index = 13-bit float code of S = sum (x - mu)^2 \
         (scale 24, read unsigned): k = floor(log2 S), m = next 7 bits truncated; S = 0 reads index 0"
    );
    let input = InputDomain {
        scale_bits: 0,
        min: 0,
        max: 8191,
    };
    let error = ErrorBound {
        metric: ErrorMetric::Rel,
        over: RSQRT_VAR_RANGE,
        max: 0.0,
        reference: format!(
            "1 / sqrt(var), var = S / ({c} * 2^24); sampled at the first, middle and last S of every index bucket with var in `over`"
        ),
    };
    let mut d = base(
        &format!("sigma-rsqrt-{c}"),
        &function,
        "REFERENCES.md section 2 LayerNorm steps 3-4; SIGMA fss/gpu_layernorm.cu l.190-228, ext/sytorch/ext/llama/api.cpp Rsqrt l.2630",
        input,
        error,
    );
    d.params.insert("C".to_string(), c);
    fill_table(&mut d, &values);
    let scale2 = pow2(2 * F as i32);
    let samples = rsqrt_samples(c, RSQRT_VAR_RANGE);
    let measured = measure(
        &d,
        ErrorMetric::Rel,
        samples.iter().map(|&s| {
            (
                rsqrt_index(s),
                1.0 / (s as f64 / (c as f64 * scale2)).sqrt(),
            )
        }),
    );
    d.error.max = round_up_2sig(measured);
    Ok(d)
}

/// Every descriptor shipped in `compiler/approx/`, in file order.
pub fn shipped() -> Vec<Descriptor> {
    let mut out = vec![
        gelu(),
        silu(),
        nexp_hi(),
        nexp_lo(),
        reciprocal(DEFAULT_RECIP_BITS).expect("default width is valid"),
    ];
    out.extend(
        DEFAULT_RSQRT_C
            .iter()
            .map(|&c| rsqrt(c).expect("default widths are valid")),
    );
    out
}

#[cfg(test)]
#[path = "tables_tests.rs"]
mod tests;
