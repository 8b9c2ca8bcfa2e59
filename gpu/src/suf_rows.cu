// Level `sigma`'s row ops (SufSigmaRow: softmax, LayerNorm, RMSNorm) as CUDA kernels: one
// thread block per row. Appended to suf.cu (kernels.rs compiles the two as one program).
//
// Each row function restates suf_fixed::sigma (fixed/src/sigma.rs) on 128-bit integers, so its
// outputs equal the CPU's bit for bit, and tracks the same "need" (the smallest ring holding
// every value the algorithm wrapped). The functions are written for a block of threads that
// stride over the row; the block reductions (max, sums) are the only cooperation, and with
// SUF_HOST_TEST they are the identity, so tests/kernel_arithmetic.rs runs the very same row
// functions on the host with one thread and compares them with suf_fixed::sigma.

typedef __int128 i128;
typedef unsigned __int128 u128;

#ifdef SUF_HOST_TEST
#define ROW_TID 0
#define ROW_THREADS 1
#define ROW_SYNC()
#else
#define ROW_TID ((int)threadIdx.x)
#define ROW_THREADS ((int)blockDim.x)
#define ROW_SYNC() __syncthreads()
#endif

__device__ __forceinline__ int clz128(u128 v) {
    u64 hi = (u64)(v >> 64), lo = (u64)v;
    if (hi != 0) return __clzll((i64)hi);
    return lo != 0 ? 64 + __clzll((i64)lo) : 128;
}

// suf_fixed::sigma's Ring::wrap: the bits a signed value needs, then Wrap_n of it.
__device__ __forceinline__ i64 wrap_need(i128 v, int n, unsigned *need) {
    u128 magnitude = v < 0 ? ~(u128)v : (u128)v;
    unsigned bits = 129 - clz128(magnitude);
    if (bits > *need) *need = bits;
    return wrap_i64((i64)(u64)v, n);
}

// Ring::wrap_unsigned: the bits |v| needs, then the low n bits read as unsigned.
__device__ __forceinline__ u64 wrap_unsigned_need(i128 v, int n, unsigned *need) {
    u128 a = v < 0 ? (u128)0 - (u128)v : (u128)v;
    unsigned bits = 128 - clz128(a);
    if (bits > *need) *need = bits;
    u64 w = (u64)wrap_i64((i64)(u64)v, n);
    return n == 64 ? w : (w & ((1ull << n) - 1));
}

// A descriptor packed as kernels.rs's FlatDescriptor::packed writes it:
// [pieces, lo, hi, cuts (pieces), offsets (pieces + 1), coefficients].
__device__ __forceinline__ i64 packed_eval(const i64 *p, i64 x) {
    int pieces = (int)p[0];
    const i64 *cuts = p + 3;
    const i64 *offsets = cuts + pieces;
    const i64 *coeffs = offsets + pieces + 1;
    return descriptor_eval(x, cuts, offsets, coeffs, pieces, p[1], p[2]);
}

// suf_fixed::sigma::rsqrt_index: the 13-bit float code of an unsigned sum of squares.
__device__ __forceinline__ i64 rsqrt_index(u64 s) {
    if (s == 0) return 0;
    int k = 63 - __clzll((i64)s);
    u64 m = k >= 7 ? (s >> (k - 7)) & 127 : (s << (7 - k)) & 127;
    return (i64)k * 128 + (i64)m;
}

// ---------------------------------------------------------------- block reductions
#define SIGN_BIT 0x8000000000000000ull

#ifdef SUF_HOST_TEST
__device__ __forceinline__ u128 block_sum(u128 v) { return v; }
__device__ __forceinline__ i64 block_max(i64 v) { return v; }
#else
// Every thread of the block calls these with its value and gets the block's result.
__device__ u128 block_sum(u128 v) {
    __shared__ u128 part[32];
    __shared__ u128 total;
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        u64 lo = __shfl_down_sync(0xffffffffu, (u64)v, offset);
        u64 hi = __shfl_down_sync(0xffffffffu, (u64)(v >> 64), offset);
        v += ((u128)hi << 64) | lo;
    }
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    __syncthreads();  // the previous call's readers are done with `part` and `total`
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        u128 t = 0;
        for (int w = 0; w < (int)(blockDim.x + WARP - 1) / WARP; w++) t += part[w];
        total = t;
    }
    __syncthreads();
    return total;
}

__device__ i64 block_max(i64 v) {
    __shared__ i64 part[32];
    __shared__ i64 total;
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        i64 o = __shfl_down_sync(0xffffffffu, v, offset);
        if (o > v) v = o;
    }
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        i64 t = part[0];
        for (int w = 1; w < (int)(blockDim.x + WARP - 1) / WARP; w++) if (part[w] > t) t = part[w];
        total = t;
    }
    __syncthreads();
    return total;
}
#endif

// Unsigned maxima and minima through the signed one (flipping the sign bit keeps the order).
__device__ __forceinline__ u64 block_max_u64(u64 v) {
    return (u64)block_max((i64)(v ^ SIGN_BIT)) ^ SIGN_BIT;
}

__device__ __forceinline__ u64 block_min_u64(u64 v) { return ~block_max_u64(~v); }

// What a thread saw over its rows; reduced over the grid at the end of a kernel.
struct RowScan {
    u64 bad;       // the smallest flat index of an unusable mask entry
    u64 in_abs;    // max |input ring value|
    u64 out_abs;   // max |output ring value|
};

// What one row needed (the block's reduced values; every thread gets them).
struct RowResult {
    unsigned need;  // the ring its intermediates needed (suf_fixed's `Traced`)
    u64 live;       // softmax: the unmasked entries
};

__device__ __forceinline__ void note_abs(u64 *slot, i64 q) {
    u64 a = q < 0 ? 0ull - (u64)q : (u64)q;
    if (a > *slot) *slot = a;
}

// The mask of a softmax row: the f32 attention-mask bias of each score, read through strides
// (0 on broadcast axes), classified as the CPU op's encode_mask does.
struct RowMask {
    const float *bias;  // null: no mask
    i64 base;           // the offset of the row's first entry
    i64 step;           // the stride along the row
    double bound;       // the ring's real bound: below -bound is a mask fill
    double scale;       // 2^f
    int rule;           // the node's rounding
};

// Score j of a softmax row: its value with the bias added (wrapped), or masked.
__device__ __forceinline__ i64 biased_score(const i64 *x, int j, const RowMask *m, int n,
                                            bool *masked, bool *bad) {
    i64 v = x[j];
    *masked = false;
    *bad = false;
    if (m->bias == 0) return v;
    double b = (double)m->bias[m->base + (i64)j * m->step];
    if (b < -m->bound) {
        *masked = true;
        return 0;
    }
    if (b == 0.0) return wrap_i64(v, n);
    if (!(b < m->bound)) {  // NaN, +inf, or a value the ring cannot hold
        *bad = true;
        *masked = true;
        return 0;
    }
    return wrap_i64((i64)((u64)v + (u64)encode1(b, m->scale, m->rule, n)), n);
}

#define NEXP_CLIP ((i64)(1 << 16) - 1)

// e_j of SIGMA's softmax: nExp(max - x_j) by the two 8-bit tables, truncated by 12.
__device__ __forceinline__ i64 softmax_exp(i64 max, i64 v, const i64 *nexp_hi,
                                           const i64 *nexp_lo, int n, unsigned *need) {
    i64 d = wrap_need((i128)max - (i128)v, n, need);
    d = d < 0 ? 0 : (d > NEXP_CLIP ? NEXP_CLIP : d);
    i128 prod = (i128)packed_eval(nexp_hi, d >> 8) * (i128)packed_eval(nexp_lo, d & 255);
    return ars(wrap_need(prod, n, need), 12, n);
}

// suf_fixed::sigma::softmax_row_traced for one row of c scores at x (output at y).
__device__ RowResult softmax_row(const i64 *x, i64 *y, int c, const RowMask *mask,
                                 const i64 *nexp_hi, const i64 *nexp_lo, const i64 *recip,
                                 int recip_bits, int n, u64 flat0, RowScan *scan) {
    unsigned need = 0;
    i64 local_max = (i64)(1ull << 63);
    u64 live = 0;
    for (int j = ROW_TID; j < c; j += ROW_THREADS) {
        note_abs(&scan->in_abs, x[j]);
        bool masked, bad;
        i64 v = wrap_i64(biased_score(x, j, mask, n, &masked, &bad), n);
        if (bad && flat0 + j < scan->bad) scan->bad = flat0 + j;
        if (!masked) {
            live += 1;
            if (v > local_max) local_max = v;
        }
    }
    RowResult result = {0, (u64)block_sum((u128)live)};
    i64 max = block_max(local_max);
    if (result.live == 0) {
        for (int j = ROW_TID; j < c; j += ROW_THREADS) y[j] = 0;
        return result;
    }
    u128 den_part = 0;
    for (int j = ROW_TID; j < c; j += ROW_THREADS) {
        bool masked, bad;
        i64 v = wrap_i64(biased_score(x, j, mask, n, &masked, &bad), n);
        if (!masked) den_part += (u128)(i128)softmax_exp(max, v, nexp_hi, nexp_lo, n, &need);
    }
    i128 den = (i128)block_sum(den_part);
    i64 den6 = ars(wrap_need(den, n, &need), 6, n);
    i64 inv = packed_eval(recip, den6 & ((1ll << recip_bits) - 1));
    for (int j = ROW_TID; j < c; j += ROW_THREADS) {
        bool masked, bad;
        i64 v = wrap_i64(biased_score(x, j, mask, n, &masked, &bad), n);
        i64 out = 0;
        if (!masked) {
            i64 e = softmax_exp(max, v, nexp_hi, nexp_lo, n, &need);
            out = ars(wrap_need((i128)e * (i128)inv, n, &need), 12, n);
        }
        note_abs(&scan->out_abs, out);
        y[j] = out;
    }
    result.need = (unsigned)block_max((i64)need);
    return result;
}

// suf_fixed::sigma::layernorm_row_traced (center = 1) and rmsnorm_row_traced (center = 0,
// beta null) for one row of c values: gamma at scale f, beta at scale 2f.
__device__ RowResult norm_row(const i64 *x, i64 *y, int c, const i64 *gamma, const i64 *beta,
                              const i64 *rsqrt, int center, int n, int f, RowScan *scan) {
    unsigned need = 0;
    i64 mu = 0;
    if (center) {
        u128 part = 0;
        for (int j = ROW_TID; j < c; j += ROW_THREADS) part += (u128)(i128)wrap_i64(x[j], n);
        i64 sum = wrap_need((i128)block_sum(part), n, &need);
        if ((c & (c - 1)) == 0) {
            mu = ars(sum, 63 - __clzll((i64)c), n);
        } else {
            i64 inv_c = ((i64)1 << f) / c;
            mu = ars(wrap_need((i128)sum * (i128)inv_c, n, &need), f, n);
        }
    }
    u128 sq_part = 0;  // wrapping: only the low n bits matter
    for (int j = ROW_TID; j < c; j += ROW_THREADS) {
        note_abs(&scan->in_abs, x[j]);
        i64 centred = wrap_need((i128)wrap_i64(x[j], n) - (i128)mu, n, &need);
        sq_part += (u128)((i128)centred * (i128)centred);
    }
    u64 s = wrap_unsigned_need((i128)block_sum(sq_part), n, &need);
    i64 r = packed_eval(rsqrt, rsqrt_index(s));
    for (int j = ROW_TID; j < c; j += ROW_THREADS) {
        i64 centred = wrap_need((i128)wrap_i64(x[j], n) - (i128)mu, n, &need);
        i64 z = ars(wrap_need((i128)centred * (i128)r, n, &need), f, n);
        i128 y2f = (i128)z * (i128)gamma[j] + (i128)(beta ? beta[j] : 0);
        i64 out = ars(wrap_need(y2f, n, &need), f, n);
        note_abs(&scan->out_abs, out);
        y[j] = out;
    }
    RowResult result = {(unsigned)block_max((i64)need), 0};
    return result;
}

#ifndef SUF_HOST_TEST

// The row kernels' status block: [0] the first bad mask entry (flat index), [1] max |input|
// as the bits of a double (integer units), [2] the rows whose intermediates wrapped, [3] max
// |output|, [4] the widest intermediate (bits), [5] the most unmasked entries of a row.
__device__ void publish_rows(RowScan s, u64 overflows, u64 need, u64 live, u64 *status) {
    u64 in_abs = block_max_u64(s.in_abs);
    u64 out_abs = block_max_u64(s.out_abs);
    u64 bad = block_min_u64(s.bad);
    if (threadIdx.x == 0) {
        if (bad != ~0ull) atomicMin(&status[0], bad);
        atomicMax(&status[1], (u64)__double_as_longlong(__ull2double_rn(in_abs)));
        if (overflows) atomicAdd(&status[2], overflows);
        atomicMax(&status[3], out_abs);
        atomicMax(&status[4], need);
        atomicMax(&status[5], live);
    }
}

// The mask of softmax row `row` of scores of shape `shape` (rank `rank`): where its entries
// start and their stride along the row, read through `mask_strides` (0 on broadcast axes).
__device__ RowMask row_mask(const float *bias, u64 row, int rank, Dims shape, Dims mask_strides,
                            double bound, double scale, int rule) {
    RowMask mask = {bias, 0, 0, bound, scale, rule};
    if (bias) {
        u64 rem = row;
        for (int d = rank - 2; d >= 0; d--) {
            mask.base += (i64)(rem % (u64)shape.d[d]) * mask_strides.d[d];
            rem /= (u64)shape.d[d];
        }
        mask.step = mask_strides.d[rank - 1];
    }
    return mask;
}

// Softmax over rows of c scores; the mask (if any) of rank `rank`, read at the scores'
// coordinates through `mask_strides` (shape of the scores: `shape`).
extern "C" __global__ void suf_sigma_softmax(const i64 *x, const float *bias, i64 *y, u64 rows,
                                             int c, int rank, Dims shape, Dims mask_strides,
                                             const i64 *tables, i64 hi_at, i64 lo_at,
                                             i64 recip_at, int recip_bits, int n, double bound,
                                             double scale, int rule, u64 *status) {
    RowScan scan = {~0ull, 0ull, 0ull};
    u64 overflows = 0, need = 0, live = 0;
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        RowMask mask = row_mask(bias, row, rank, shape, mask_strides, bound, scale, rule);
        u64 at = row * (u64)c;
        RowResult r = softmax_row(x + at, y + at, c, &mask, tables + hi_at, tables + lo_at,
                                  tables + recip_at, recip_bits, n, at, &scan);
        if (r.need > (unsigned)n) overflows += 1;
        if (r.need > need) need = r.need;
        if (r.live > live) live = r.live;
    }
    publish_rows(scan, overflows, need, live, status);
}

// LayerNorm (center = 1) or RMSNorm (center = 0) over rows of c values.
extern "C" __global__ void suf_sigma_norm(const i64 *x, const i64 *gamma, const i64 *beta, i64 *y,
                                          u64 rows, int c, const i64 *rsqrt, int center, int n,
                                          int f, u64 *status) {
    RowScan scan = {~0ull, 0ull, 0ull};
    u64 overflows = 0, need = 0;
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        u64 at = row * (u64)c;
        RowResult r = norm_row(x + at, y + at, c, gamma, beta, rsqrt, center, n, f, &scan);
        if (r.need > (unsigned)n) overflows += 1;
        if (r.need > need) need = r.need;
    }
    publish_rows(scan, overflows, need, 0, status);
}

#endif  // SUF_HOST_TEST
