// The SUF ops' arithmetic as CUDA kernels, compiled at run time by NVRTC (kernels.rs).
//
// Each function here restates a function of suf_fixed (fixed/src/lib.rs, ring.rs) on the same
// IEEE operations, so a kernel's output equals the CPU op's bit for bit:
// - the scaling by 2^f is exact (a power of two), rint/trunc/floor are exact IEEE functions
//   (Rounding::apply computes the same integers with a magic-number trick);
// - integer conversions are the round-to-nearest-even ones Rust's `as` uses;
// - the program is compiled with --fmad=false, so no a*b+c is contracted into an FMA.
//
// Every kernel reports into a 4-word status block (see Status in kernels.rs):
//   [0] the smallest flat index of a non-finite input (u64::MAX when none),
//   [1] the largest |x| seen, as the bits of an f64 (non-negative doubles order like their bits),
//   [2] the count of |x| >= bound (values that wrapped),
//   [3] unused.

typedef long long i64;
typedef unsigned long long u64;

#define WARP 32

// Wrap_n: the low n bits, read as a signed n-bit integer (suf_fixed::ring::wrap_i64).
__device__ __forceinline__ i64 wrap_i64(i64 v, int n) {
    int s = 64 - n;
    return (i64)(((u64)v) << s) >> s;
}

// Wrap_n of an integral double of any magnitude (suf_fixed wrap_integral_f64): below 2^62 the
// conversion is exact; above, v = m * 2^e with a 53-bit mantissa m, and v mod 2^64 = m << e.
__device__ i64 wrap_integral(double v, int n) {
    if (fabs(v) < 4611686018427387904.0) {
        return wrap_i64((i64)v, n);
    }
    u64 bits = (u64)__double_as_longlong(v);
    int e = (int)((bits >> 52) & 0x7ff) - 1075;
    u64 m = (bits & ((1ull << 52) - 1)) | (1ull << 52);
    u64 low = e >= 64 ? 0ull : (m << e);
    if (v < 0.0) {
        low = 0ull - low;
    }
    return wrap_i64((i64)low, n);
}

// suf_fixed::Rounding, in the order kernels.rs passes it: 0 round (half to even), 1 trunc, 2 floor.
__device__ __forceinline__ double round_rule(double v, int rule) {
    if (rule == 0) return rint(v);
    if (rule == 1) return trunc(v);
    return floor(v);
}

// decode(encode(x)) read back as f32: the value a SUF node of level `output` outputs.
__device__ __forceinline__ float quantize1(float x, double scale, double inv_scale, int rule, int n) {
    double v = round_rule(__dmul_rn((double)x, scale), rule);
    i64 q = wrap_integral(v, n);
    return __double2float_rn(__dmul_rn(__ll2double_rn(q), inv_scale));
}

// The kernels proper; tests/kernel_arithmetic.rs compiles the functions above on the host
// (with SUF_HOST_TEST) and checks them against suf_fixed.
#ifndef SUF_HOST_TEST

struct Scan {
    u64 max_bits;
    u64 overflows;
    u64 bad;
};

__device__ __forceinline__ void scan_value(Scan *s, float x, double bound, u64 index) {
    double a = fabs((double)x);
    // NaN fails every comparison: not-below-the-largest-double catches NaN and infinity.
    if (!(a <= 1.7976931348623157e308)) {
        if (index < s->bad) s->bad = index;
        return;
    }
    u64 bits = (u64)__double_as_longlong(a);
    if (bits > s->max_bits) s->max_bits = bits;
    if (a >= bound) s->overflows += 1;
}

// One warp's scans folded, then one atomic per warp into the status block.
__device__ void publish(Scan s, u64 *status) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        u64 m = __shfl_down_sync(0xffffffffu, s.max_bits, offset);
        u64 o = __shfl_down_sync(0xffffffffu, s.overflows, offset);
        u64 b = __shfl_down_sync(0xffffffffu, s.bad, offset);
        if (m > s.max_bits) s.max_bits = m;
        s.overflows += o;
        if (b < s.bad) s.bad = b;
    }
    if ((threadIdx.x & (WARP - 1)) == 0) {
        if (s.bad != ~0ull) atomicMin(&status[0], s.bad);
        atomicMax(&status[1], s.max_bits);
        if (s.overflows) atomicAdd(&status[2], s.overflows);
    }
}

// SufQuantize (level `output`): y = quantize(x) element by element.
extern "C" __global__ void suf_quantize_f32(const float *x, float *y, u64 len, double scale,
                                            double inv_scale, int rule, int n, double bound,
                                            u64 *status) {
    Scan s = {0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    // Every thread of a warp runs the same number of trips so the shuffles see the whole warp.
    u64 start = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for (u64 i = start; i < len; i += stride) {
        float v = x[i];
        scan_value(&s, v, bound, i);
        y[i] = quantize1(v, scale, inv_scale, rule, n);
    }
    publish(s, status);
}

// SufQuantizeBias (level `output`): y = quantize(quantize(x) + bias[i mod c]), the f32
// addition a separate Add would compute; both encodings are scanned, as on the CPU.
extern "C" __global__ void suf_quantize_bias_f32(const float *x, const float *bias, float *y,
                                                 u64 len, u64 c, double scale, double inv_scale,
                                                 int rule, int n, double bound, u64 *status) {
    Scan s = {0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    u64 start = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for (u64 i = start; i < len; i += stride) {
        float v = x[i];
        scan_value(&s, v, bound, i);
        float biased = __fadd_rn(quantize1(v, scale, inv_scale, rule, n), bias[i % c]);
        scan_value(&s, biased, bound, i);
        y[i] = quantize1(biased, scale, inv_scale, rule, n);
    }
    publish(s, status);
}

#endif  // SUF_HOST_TEST
