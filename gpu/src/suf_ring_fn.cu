// Level `ring`'s float functions (SufRingFunction: GELU, SiLU, softmax, LayerNorm, RMSNorm,
// suf_fixed::float_fn) as CUDA kernels. Appended to suf.cu and suf_rows.cu (kernels.rs
// compiles the three as one program).
//
// The level's definition is the f64 formula with libm's erf/tanh/exp (docs/ring-transport.md).
// CUDA's erf/tanh/exp are not libm's: they differ by a few units in the last place (the CUDA
// Math API documents at most 2 ulp for erf, 1 ulp for exp and tanh; libm is below 1 ulp). Every
// other operation is IEEE and evaluated in the CPU's order (+, -, *, /, sqrt are correctly
// rounded on both, the program is compiled with --fmad=false). So each output comes with a
// bound B on |y_gpu - y_cpu|, derived below (with a factor 2 to spare) from RELATIVE, the
// difference assumed between the two functions (over 5 times the documented 3 ulp), and the
// output is *certified* when R(t) is the same integer for every t
// within B * 2^f of y_gpu * 2^f (R the node's rounding rule). An output that is not certified
// is counted; the op then recomputes the whole tensor on the CPU with the CPU op (ring_fn.rs).
// Outputs of the norms, and those where both sides provably compute the same doubles (|z| >= 6
// in erf, exp below 2^-60 in SiLU), have B = 0.
//
// The rows run one thread per row, left to right as the CPU sums.

// The relative difference assumed between CUDA's and libm's exp, erf and tanh (normal range).
#define RELATIVE 3.552713678800501e-15  // 2^-48
// Below this, libm's erf is exactly +-1 (tested in fixed/src/float_fn.rs) and so is ours.
#define ERF_ONE 6.0
// Above this, libm's tanh is exactly +-1 (tested likewise).
#define TANH_ONE 22.0
// 2^53: the largest |q| an f64 holds exactly.
#define EXACT_F64 9007199254740992ull

#ifndef RING_FN_PERTURB
#define RING_FN_PERTURB(v) (v)
#endif

// What a thread saw; reduced over the grid at the end of a kernel (ring_fn.rs's layout).
struct RingFnScan {
    u64 bad;          // the first unusable mask entry (flat index)
    u64 in_abs;       // max |input ring value|
    u64 uncertified;  // outputs whose rounding the bound cannot certify
    u64 out_abs;      // max |output ring value|
    u64 inexact;      // the first input beyond 2^53 (flat index)
    u64 nonfinite;    // the first non-finite output (flat index)
};

__device__ __forceinline__ void ring_fn_scan_init(RingFnScan *s) {
    s->bad = ~0ull;
    s->in_abs = 0ull;
    s->uncertified = 0ull;
    s->out_abs = 0ull;
    s->inexact = ~0ull;
    s->nonfinite = ~0ull;
}

__device__ __forceinline__ bool exact_f64(i64 q) {
    u64 a = q < 0 ? 0ull - (u64)q : (u64)q;
    return a <= EXACT_F64;
}

// Whether R(t') = R(t) for every real t' with |t' - t| <= bt.
__device__ __forceinline__ bool rounds_alike(double t, double bt, int rule) {
    if (bt == 0.0) return true;
    double a = fabs(t);
    // No other double lies within bt of t: the CPU's t is t itself.
    if (bt < a - nextafter(a, 0.0)) return true;
    double dist;
    if (rule == 0) {  // half to even: boundaries at k + 1/2
        dist = fabs(fabs(t - floor(t)) - 0.5);
    } else if (rule == 1 && a < 1.0) {  // toward zero: (-1, 1) all rounds to 0
        dist = 1.0 - a;
    } else {  // toward zero or floor: boundaries at the integers
        double fr = t - floor(t);
        dist = fr < 1.0 - fr ? fr : 1.0 - fr;
    }
    // dist carries a rounding error far below bt's margin; 2 * bt keeps it safe.
    return dist > 2.0 * bt;
}

// Encodes y with its bound b, noting the output, the uncertified and the non-finite.
__device__ __forceinline__ i64 ring_fn_emit(double y, double b, double scale, double slack, int rule,
                                            int n, u64 index, RingFnScan *s) {
    if (!(fabs(y) <= 1.7976931348623157e308)) {
        if (index < s->nonfinite) s->nonfinite = index;
        return 0;
    }
    double t = __dmul_rn(y, scale);
    if (!rounds_alike(t, __dmul_rn(__dmul_rn(b, scale), slack), rule)) s->uncertified += 1;
    i64 q = encode1(y, scale, rule, n);
    u64 a = q < 0 ? 0ull - (u64)q : (u64)q;
    if (a > s->out_abs) s->out_abs = a;
    return q;
}

__device__ __forceinline__ void ring_fn_note_in(i64 q, u64 index, RingFnScan *s) {
    u64 a = q < 0 ? 0ull - (u64)q : (u64)q;
    if (a > s->in_abs) s->in_abs = a;
    if (a > EXACT_F64 && index < s->inexact) s->inexact = index;
}

// suf_fixed::float_fn::activation (kind 0 gelu_erf, 1 gelu_tanh, 2 silu) and its bound.
__device__ __forceinline__ double ring_activation(int kind, double x, double *bound) {
    if (kind == 2) {
        double e = RING_FN_PERTURB(exp(-x));
        if (e <= 8.673617379884035e-19) {  // 2^-60: 1 + e is 1 on both sides
            *bound = 0.0;
            return x / (1.0 + e);
        }
        double y = x / (1.0 + e);
        // |e - e_cpu| <= RELATIVE * e, 1 + e and x / (1 + e) round once each. Beyond 1e300
        // the CPU's e may have overflowed where ours did not: both y are below 1e-290.
        *bound = e > 1e300 ? fabs(y) + 1e-300 : __dmul_rn(fabs(y), 2.0 * RELATIVE);
        return y;
    }
    double g;  // erf(x / sqrt(2)) or tanh(...), exactly +-1 beyond the cut
    if (kind == 0) {
        double z = x * 0.7071067811865476;  // std::f64::consts::FRAC_1_SQRT_2
        g = fabs(z) >= ERF_ONE ? (z < 0.0 ? -1.0 : 1.0) : RING_FN_PERTURB(erf(z));
        *bound = fabs(z) >= ERF_ONE ? 0.0 : -1.0;
    } else {
        double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        g = fabs(u) >= TANH_ONE ? (u < 0.0 ? -1.0 : 1.0) : RING_FN_PERTURB(tanh(u));
        *bound = fabs(u) >= TANH_ONE ? 0.0 : -1.0;
    }
    double h = 0.5 * x;
    double y = h * (1.0 + g);
    // |g - g_cpu| <= RELATIVE (|g| <= 1); 1 + g and h * (1 + g) round once each.
    if (*bound != 0.0) *bound = fabs(h) * 2.0 * RELATIVE + fabs(y) * RELATIVE;
    return y;
}

// suf_fixed::float_fn::row_into for a softmax row of c scores (masked entries output 0).
__device__ void ring_softmax_row(const i64 *x, i64 *y, int c, const RowMask *mask, int n,
                                 double scale, double inv_scale, double slack, int rule, u64 flat0,
                                 RingFnScan *s) {
    bool any = false;
    i64 m = 0;
    for (int j = 0; j < c; j++) {
        ring_fn_note_in(x[j], ~0ull, s);
        bool masked, bad;
        i64 v = biased_score(x, j, mask, n, &masked, &bad);
        if (bad && flat0 + j < s->bad) s->bad = flat0 + j;
        if (masked) continue;
        if (!exact_f64(v) && flat0 + j < s->inexact) s->inexact = flat0 + j;
        if (!any || v > m) m = v;
        any = true;
    }
    double mr = __dmul_rn(__ll2double_rn(m), inv_scale);
    double sum = 0.0;
    for (int j = 0; j < c && any; j++) {
        bool masked, bad;
        i64 v = biased_score(x, j, mask, n, &masked, &bad);
        if (!masked) sum = sum + RING_FN_PERTURB(exp(__dmul_rn(__ll2double_rn(v), inv_scale) - mr));
    }
    // Each e differs by RELATIVE * e from the CPU's (plus an absolute 2^-1070 below the
    // normal range), each side's sum rounds c times by 2^-53 and the quotient once: y = e / sum
    // differs by at most y * (2 RELATIVE + (c + 1) 2^-52) + 2^-1060; twice that is the bound.
    double rel = 4.0 * RELATIVE + (double)(c + 1) * 4.440892098500626e-16;  // 2^-51
    for (int j = 0; j < c; j++) {
        bool masked, bad;
        i64 v = biased_score(x, j, mask, n, &masked, &bad);
        double out = 0.0, b = 0.0;
        if (!masked && any) {
            double e = RING_FN_PERTURB(exp(__dmul_rn(__ll2double_rn(v), inv_scale) - mr));
            out = sum > 0.0 ? e / sum : 0.0;
            b = __dmul_rn(out, rel) + 1e-300;
        }
        y[j] = ring_fn_emit(out, b, scale, slack, rule, n, flat0 + j, s);
    }
}

// suf_fixed::float_fn::row_into for LayerNorm (center = 1) or RMSNorm (center = 0) over one
// row: the CPU's operations in its order, so the bound is 0. gamma and beta (LayerNorm only;
// null: 0) are ring values at scale f.
__device__ void ring_norm_row(const i64 *x, i64 *y, int c, const i64 *gamma, const i64 *beta,
                              int center, double eps, int n, double scale, double inv_scale,
                              int rule, u64 flat0, RingFnScan *s) {
    for (int j = 0; j < c; j++) ring_fn_note_in(x[j], flat0 + j, s);
    double cd = (double)c;
#define RING_X(j) __dmul_rn(__ll2double_rn(x[j]), inv_scale)
#define RING_P(p, j) __dmul_rn(__ll2double_rn((p)[j]), inv_scale)
    if (center) {
        double acc = 0.0;
        for (int j = 0; j < c; j++) acc = acc + RING_X(j);
        double mu = acc / cd;
        double var = 0.0;
        for (int j = 0; j < c; j++) {
            double d = RING_X(j) - mu;
            var = var + d * d;
        }
        double sd = sqrt(var / cd + eps);
        for (int j = 0; j < c; j++) {
            double b = beta ? RING_P(beta, j) : 0.0;
            double out = (RING_X(j) - mu) / sd * RING_P(gamma, j) + b;
            y[j] = ring_fn_emit(out, 0.0, scale, 1.0, rule, n, flat0 + j, s);
        }
    } else {
        double acc = 0.0;
        for (int j = 0; j < c; j++) acc = acc + RING_X(j) * RING_X(j);
        double r = sqrt(acc / cd + eps);
        for (int j = 0; j < c; j++) {
            double out = RING_X(j) / r * RING_P(gamma, j);
            y[j] = ring_fn_emit(out, 0.0, scale, 1.0, rule, n, flat0 + j, s);
        }
    }
#undef RING_X
#undef RING_P
}

#ifndef SUF_HOST_TEST

// The status block: [0] first bad mask entry, [1] max |input| (integer units), [2] uncertified
// outputs, [3] max |output|, [4] first input beyond 2^53, [5] first non-finite output.
__device__ void publish_ring_fn(RingFnScan s, u64 *status) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        u64 bad = __shfl_down_sync(0xffffffffu, s.bad, offset);
        u64 in_abs = __shfl_down_sync(0xffffffffu, s.in_abs, offset);
        u64 unc = __shfl_down_sync(0xffffffffu, s.uncertified, offset);
        u64 out_abs = __shfl_down_sync(0xffffffffu, s.out_abs, offset);
        u64 inexact = __shfl_down_sync(0xffffffffu, s.inexact, offset);
        u64 nonfinite = __shfl_down_sync(0xffffffffu, s.nonfinite, offset);
        if (bad < s.bad) s.bad = bad;
        if (in_abs > s.in_abs) s.in_abs = in_abs;
        s.uncertified += unc;
        if (out_abs > s.out_abs) s.out_abs = out_abs;
        if (inexact < s.inexact) s.inexact = inexact;
        if (nonfinite < s.nonfinite) s.nonfinite = nonfinite;
    }
    if ((threadIdx.x & (WARP - 1)) == 0) {
        if (s.bad != ~0ull) atomicMin(&status[0], s.bad);
        atomicMax(&status[1], s.in_abs);
        if (s.uncertified) atomicAdd(&status[2], s.uncertified);
        atomicMax(&status[3], s.out_abs);
        if (s.inexact != ~0ull) atomicMin(&status[4], s.inexact);
        if (s.nonfinite != ~0ull) atomicMin(&status[5], s.nonfinite);
    }
}

extern "C" __global__ void suf_ring_activation(const i64 *x, i64 *y, u64 len, int kind, int n,
                                               double scale, double inv_scale, double slack,
                                               int rule, u64 *status) {
    RingFnScan s;
    ring_fn_scan_init(&s);
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride) {
        ring_fn_note_in(x[i], i, &s);
        double b;
        double out = ring_activation(kind, __dmul_rn(__ll2double_rn(x[i]), inv_scale), &b);
        y[i] = ring_fn_emit(out, b, scale, slack, rule, n, i, &s);
    }
    publish_ring_fn(s, status);
}

// Softmax over rows of c scores, one thread per row; the mask as suf_sigma_softmax reads it.
extern "C" __global__ void suf_ring_softmax(const i64 *x, const float *bias, i64 *y, u64 rows,
                                            int c, int rank, Dims shape, Dims mask_strides, int n,
                                            double bound, double scale, double inv_scale,
                                            double slack, int rule, u64 *status) {
    RingFnScan s;
    ring_fn_scan_init(&s);
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 row = (u64)blockIdx.x * blockDim.x + threadIdx.x; row < rows; row += stride) {
        RowMask mask = row_mask(bias, row, rank, shape, mask_strides, bound, scale, rule);
        u64 at = row * (u64)c;
        ring_softmax_row(x + at, y + at, c, &mask, n, scale, inv_scale, slack, rule, at, &s);
    }
    publish_ring_fn(s, status);
}

// LayerNorm (center = 1) or RMSNorm (center = 0) over rows of c values, one thread per row.
extern "C" __global__ void suf_ring_norm(const i64 *x, const i64 *gamma, const i64 *beta, i64 *y,
                                         u64 rows, int c, int center, double eps, int n,
                                         double scale, double inv_scale, int rule, u64 *status) {
    RingFnScan s;
    ring_fn_scan_init(&s);
    u64 stride = (u64)blockDim.x * gridDim.x;
    for (u64 row = (u64)blockIdx.x * blockDim.x + threadIdx.x; row < rows; row += stride) {
        u64 at = row * (u64)c;
        ring_norm_row(x + at, y + at, c, gamma, beta, center, eps, n, scale, inv_scale, rule, at,
                      &s);
    }
    publish_ring_fn(s, status);
}

#endif  // SUF_HOST_TEST
