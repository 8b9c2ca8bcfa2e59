// The SUF ops' arithmetic as CUDA kernels, compiled at run time by NVRTC (kernels.rs).
//
// Each function here restates a function of suf_fixed (fixed/src/lib.rs, ring.rs) on the same
// IEEE operations, so a kernel's output equals the CPU op's bit for bit:
// - the scaling by 2^f is exact (a power of two), rint/trunc/floor are exact IEEE functions
//   (Rounding::apply computes the same integers with a magic-number trick);
// - integer conversions are the round-to-nearest-even ones Rust's `as` uses;
// - the program is compiled with --fmad=false, so no a*b+c is contracted into an FMA.
//
// Every kernel reports into a 4-word status block (RingStatus in kernels.rs):
//   [0] the smallest flat index of a bad input (non-finite; for a decode, inexact), u64::MAX if none,
//   [1] the largest |input| seen, as the bits of an f64 (non-negative doubles order like their
//       bits; the unit is per kernel),
//   [2] the count of values that wrapped,
//   [3] the largest |output ring value| (ring kernels).

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


// suf_fixed::matmul::truncate: v / 2^shift rounded by rule (0 round half to even, 1 trunc,
// 2 floor), on exact integers.
__device__ __forceinline__ i64 truncate_rule(i64 v, int shift, int rule) {
    if (shift == 0) return v;
    i64 fl = v >> shift;
    i64 rem = v - (i64)((u64)fl << shift);
    if (rule == 2) return fl;
    if (rule == 1) return fl + ((v < 0 && rem != 0) ? 1 : 0);
    i64 half = (i64)1 << (shift - 1);
    int up = rem > half || (rem == half && (fl & 1) == 1);
    return fl + up;
}

// suf_fixed::ars: floor(Wrap(v) / 2^shift), wrapped.
__device__ __forceinline__ i64 ars(i64 v, int shift, int n) {
    return wrap_i64(wrap_i64(v, n) >> (shift < 63 ? shift : 63), n);
}

// |v| for a 128-bit two's complement (hi, lo), correctly rounded to a double (Rust's
// `u128 as f64`): the top 64 significant bits with a sticky bit below them round as the
// whole number does.
__device__ double abs128_to_double(i64 hi, u64 lo) {
    u64 h = (u64)hi;
    if (hi < 0) {
        lo = ~lo + 1ull;
        h = ~h + (lo == 0 ? 1ull : 0ull);
    }
    if (h == 0) return __ull2double_rn(lo);
    int lead = 64 - __clzll((i64)h);  // bits used in the high word, 1..64
    u64 top = lead == 64 ? h : ((h << (64 - lead)) | (lo >> lead));
    u64 dropped = lead == 64 ? lo : (lo << (64 - lead));
    if (dropped != 0) top |= 1ull;
    return __dmul_rn(__ull2double_rn(top), ldexp(1.0, lead));
}

// Significant bits of |q| (0 for 0): a float of m mantissa bits holds q exactly iff <= m.
__device__ __forceinline__ int significant_bits(i64 q) {
    u64 a = q < 0 ? 0ull - (u64)q : (u64)q;
    if (a == 0) return 0;
    return 64 - __clzll((i64)a) - __ffsll((i64)a) + 1;
}

// Enc_s: R(x * 2^s) wrapped (suf_fixed encode_at), x finite.
__device__ __forceinline__ i64 encode1(double x, double scale, int rule, int n) {
    return wrap_integral(round_rule(__dmul_rn(x, scale), rule), n);
}


// suf_fixed::Descriptor::eval: clamp to [lo, hi], the interval whose start is the last cut
// <= x, its polynomial by Horner in wrapping 64-bit arithmetic. cuts[0] == lo; the
// coefficients of piece p are coeffs[offsets[p] .. offsets[p + 1]], c0 first.
__device__ i64 descriptor_eval(i64 x, const i64 *cuts, const i64 *offsets, const i64 *coeffs,
                               int pieces, i64 lo, i64 hi) {
    i64 v = x < lo ? lo : (x > hi ? hi : x);
    int a = 0, b = pieces;  // the answer is in [a, b): cuts[a] <= v
    while (b - a > 1) {
        int mid = a + (b - a) / 2;
        if (cuts[mid] <= v) a = mid; else b = mid;
    }
    u64 acc = 0;
    for (i64 j = offsets[a + 1] - 1; j >= offsets[a]; j--) acc = acc * (u64)v + (u64)coeffs[j];
    return (i64)acc;
}

// The kernels proper; tests/kernel_arithmetic.rs compiles the functions above on the host
// (with SUF_HOST_TEST) and checks them against suf_fixed.
#ifndef SUF_HOST_TEST

struct RingScan {
    u64 in_bits;
    u64 overflows;
    u64 out_abs;
    u64 bad;
};

__device__ void publish_ring(RingScan s, u64 *status) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        u64 m = __shfl_down_sync(0xffffffffu, s.in_bits, offset);
        u64 o = __shfl_down_sync(0xffffffffu, s.overflows, offset);
        u64 q = __shfl_down_sync(0xffffffffu, s.out_abs, offset);
        u64 b = __shfl_down_sync(0xffffffffu, s.bad, offset);
        if (m > s.in_bits) s.in_bits = m;
        s.overflows += o;
        if (q > s.out_abs) s.out_abs = q;
        if (b < s.bad) s.bad = b;
    }
    if ((threadIdx.x & (WARP - 1)) == 0) {
        if (s.bad != ~0ull) atomicMin(&status[0], s.bad);
        atomicMax(&status[1], s.in_bits);
        if (s.overflows) atomicAdd(&status[2], s.overflows);
        atomicMax(&status[3], s.out_abs);
    }
}

__device__ __forceinline__ void note_in(RingScan *s, double a) {
    u64 bits = (u64)__double_as_longlong(a);
    if (bits > s->in_bits) s->in_bits = bits;
}

__device__ __forceinline__ void note_out(RingScan *s, i64 q) {
    u64 a = q < 0 ? 0ull - (u64)q : (u64)q;
    if (a > s->out_abs) s->out_abs = a;
}

// A float input's scan: non-finite values by index, max |x| (real), the count of |x| >= bound.
__device__ __forceinline__ void scan_value(RingScan *s, float x, double bound, u64 index) {
    double a = fabs((double)x);
    // NaN fails every comparison: not-below-the-largest-double catches NaN and infinity.
    if (!(a <= 1.7976931348623157e308)) {
        if (index < s->bad) s->bad = index;
        return;
    }
    note_in(s, a);
    if (a >= bound) s->overflows += 1;
}

// SufQuantize (level `output`): y = quantize(x) element by element.
extern "C" __global__ void suf_quantize_f32(const float *x, float *y, u64 len, double scale,
                                            double inv_scale, int rule, int n, double bound,
                                            u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    // Every thread of a warp runs the same number of trips so the shuffles see the whole warp.
    u64 start = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for (u64 i = start; i < len; i += stride) {
        float v = x[i];
        scan_value(&s, v, bound, i);
        y[i] = quantize1(v, scale, inv_scale, rule, n);
    }
    publish_ring(s, status);
}

// SufQuantizeBias (level `output`): y = quantize(quantize(x) + bias[i mod c]), the f32
// addition a separate Add would compute; both encodings are scanned, as on the CPU.
extern "C" __global__ void suf_quantize_bias_f32(const float *x, const float *bias, float *y,
                                                 u64 len, u64 c, double scale, double inv_scale,
                                                 int rule, int n, double bound, u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    u64 start = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for (u64 i = start; i < len; i += stride) {
        float v = x[i];
        scan_value(&s, v, bound, i);
        float biased = __fadd_rn(quantize1(v, scale, inv_scale, rule, n), bias[i % c]);
        scan_value(&s, biased, bound, i);
        y[i] = quantize1(biased, scale, inv_scale, rule, n);
    }
    publish_ring(s, status);
}


// ---------------------------------------------------------------- levels ring and sigma
// SufEncode and every float operand of a ring op: q = Enc_s(x). [1] is max |x| (real),
// [2] the count of |x| >= bound.
extern "C" __global__ void suf_encode_f32(const float *x, i64 *q, u64 len, double scale, int rule,
                                          int n, double bound, u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        u64 bad = s.bad;
        scan_value(&s, x[i], bound, i);
        if (s.bad != bad) {
            q[i] = 0;
            continue;
        }
        i64 r = encode1((double)x[i], scale, rule, n);
        note_out(&s, r);
        q[i] = r;
    }
    publish_ring(s, status);
}

// SufRingDecode: y = q * 2^-f in f32 (to_f64 = 0) or f64; [0] is the first q the float type
// cannot hold exactly.
extern "C" __global__ void suf_decode(const i64 *q, void *y, u64 len, double inv_scale, int to_f64,
                                      u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    int mantissa = to_f64 ? 53 : 24;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        i64 v = q[i];
        if (significant_bits(v) > mantissa && i < s.bad) s.bad = i;
        if (to_f64) {
            ((double *)y)[i] = __dmul_rn(__ll2double_rn(v), inv_scale);
        } else {
            ((float *)y)[i] = __fmul_rn(__ll2float_rn(v), (float)inv_scale);
        }
    }
    publish_ring(s, status);
}

#define MAX_RANK 8
struct Dims {
    i64 d[MAX_RANK];
};

// SufRingAdd / SufRingMul on ring tensors, numpy broadcasting through strides (0 on a
// broadcast axis). kind: 0 add, 1 sub, 2 mul (Ars(Wrap(a * b), f)). [1] is max |exact|
// (integer units), [2] the exact results outside the ring.
extern "C" __global__ void suf_ring_binary(const i64 *a, const i64 *b, i64 *y, u64 len, int rank,
                                           Dims shape, Dims a_strides, Dims b_strides, int kind,
                                           int n, int f, u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        u64 rem = i;
        i64 ai = 0, bi = 0;
        for (int d = rank - 1; d >= 0; d--) {
            u64 idx = rem % (u64)shape.d[d];
            rem /= (u64)shape.d[d];
            ai += (i64)idx * a_strides.d[d];
            bi += (i64)idx * b_strides.d[d];
        }
        i64 x = a[ai], z = b[bi];
        i64 hi;
        u64 lo;
        if (kind == 2) {
            lo = (u64)x * (u64)z;
            hi = __mul64hi(x, z);
        } else {
            // The exact 65-bit sum as 128 bits: the sign extensions plus the carry.
            if (kind == 0) {
                lo = (u64)x + (u64)z;
                hi = (x >> 63) + (z >> 63) + (lo < (u64)x ? 1 : 0);
            } else {
                lo = (u64)x - (u64)z;
                hi = (x >> 63) - (z >> 63) - ((u64)x < (u64)z ? 1 : 0);
            }
        }
        note_in(&s, abs128_to_double(hi, lo));
        // outside [-2^(n-1), 2^(n-1)) exactly when wrapping the 128-bit value changes it
        i64 w = wrap_i64((i64)lo, n);
        bool fits = (hi == (w < 0 ? -1 : 0)) && ((u64)w == lo);
        if (!fits) s.overflows += 1;
        i64 r = kind == 2 ? ars(w, f, n) : w;
        note_out(&s, r);
        y[i] = r;
    }
    publish_ring(s, status);
}

// SufRingMatMul's product: c = a x b in wrapping 64-bit arithmetic (exact modulo 2^64, hence
// modulo 2^n), tiled through shared memory. a: [batch] x [m, k] row-major at a_off per batch
// element; b: [k, n] row-major, or [n, k] (trans_b). Batch offsets come from the batch index
// through per-axis strides (0 for a broadcast axis).
#define TILE 16
extern "C" __global__ void suf_ring_gemm(const i64 *a, const i64 *b, i64 *c, int m, int n, int k,
                                         int trans_b, int batch_rank, Dims batch, Dims a_strides,
                                         Dims b_strides) {
    __shared__ u64 ta[TILE][TILE];
    __shared__ u64 tb[TILE][TILE];
    u64 bi = blockIdx.z;
    i64 a_off = 0, b_off = 0;
    u64 rem = bi;
    for (int d = batch_rank - 1; d >= 0; d--) {
        u64 idx = rem % (u64)batch.d[d];
        rem /= (u64)batch.d[d];
        a_off += (i64)idx * a_strides.d[d];
        b_off += (i64)idx * b_strides.d[d];
    }
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    u64 acc = 0;
    for (int t = 0; t < k; t += TILE) {
        int ka = t + threadIdx.x, kb = t + threadIdx.y;
        ta[threadIdx.y][threadIdx.x] = (row < m && ka < k) ? (u64)a[a_off + (i64)row * k + ka] : 0ull;
        u64 vb = 0ull;
        if (col < n && kb < k) {
            vb = trans_b ? (u64)b[b_off + (i64)col * k + kb] : (u64)b[b_off + (i64)kb * n + col];
        }
        tb[threadIdx.y][threadIdx.x] = vb;
        __syncthreads();
        for (int l = 0; l < TILE; l++) acc += ta[threadIdx.y][l] * tb[l][threadIdx.x];
        __syncthreads();
    }
    if (row < m && col < n) c[(i64)bi * m * n + (i64)row * n + col] = (i64)acc;
}

// The step after every ring product (suf_fixed::matmul finish_with): + bias at 2f, wrap,
// truncate by shift, wrap; then the optional post-multiplier: Wrap(T(Wrap(v * c), f)).
// [1] is max |product + bias| (integer units at 2f), [2] the sums outside the ring.
extern "C" __global__ void suf_ring_finish(i64 *c, const i64 *bias, u64 len, u64 cols, int n,
                                           int shift, int rule, int has_post, i64 post, int f,
                                           u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        i64 p = c[i];
        i64 bb = bias ? bias[i % cols] : 0;
        u64 sum_u = (u64)p + (u64)bb;
        i64 sum = (i64)sum_u;
        bool carry = ((p ^ sum) & (bb ^ sum)) < 0;
        i64 w = wrap_i64(sum, n);
        if (carry) {
            // |p + b| >= 2^63: the exact 65-bit sum's high word is its sign.
            note_in(&s, abs128_to_double(p < 0 ? -1 : 0, sum_u));
            s.overflows += 1;
        } else {
            u64 mag = sum < 0 ? 0ull - (u64)sum : (u64)sum;
            note_in(&s, __ull2double_rn(mag));
            if (w != sum) s.overflows += 1;
        }
        i64 r = wrap_i64(truncate_rule(w, shift, rule), n);
        if (has_post) {
            i64 scaled = wrap_i64((i64)((u64)r * (u64)post), n);
            r = wrap_i64(truncate_rule(scaled, f, rule), n);
        }
        note_out(&s, r);
        c[i] = r;
    }
    publish_ring(s, status);
}

// SufSigmaActivation (SIGMA's GELU, SiLU): y = Wrap(descriptor(q)). [1] is max |q| as a
// double (integer units).
extern "C" __global__ void suf_sigma_activation(const i64 *x, i64 *y, u64 len, const i64 *cuts,
                                                const i64 *offsets, const i64 *coeffs, int pieces,
                                                i64 lo, i64 hi, int n, u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        i64 q = x[i];
        note_in(&s, __ull2double_rn(q < 0 ? 0ull - (u64)q : (u64)q));
        i64 r = wrap_i64(descriptor_eval(q, cuts, offsets, coeffs, pieces, lo, hi), n);
        note_out(&s, r);
        y[i] = r;
    }
    publish_ring(s, status);
}

// The f64 product path (dgemm.rs): ring values to doubles, recording max |q| in [3] (the
// conversion is exact for |q| < 2^53, which the caller's bound requires), and back.
extern "C" __global__ void suf_i64_to_f64(const i64 *x, double *y, u64 len, u64 *status) {
    RingScan s = {0ull, 0ull, 0ull, ~0ull};
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        i64 q = x[i];
        note_out(&s, q);
        y[i] = __ll2double_rn(q);
    }
    publish_ring(s, status);
}

// An exact integral double (|v| < 2^53) to its integer.
extern "C" __global__ void suf_f64_to_i64(const double *x, i64 *y, u64 len) {
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        y[i] = __double2ll_rn(x[i]);
    }
}

#endif  // SUF_HOST_TEST
