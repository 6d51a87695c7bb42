/* Sampling on the device: the filtered distribution of each row (temperature, top-k, top-p, min-p), a
 * draw from it, and speculative acceptance with the residual draw, so only token ids cross to the host.
 *
 * The algorithm of kernels/sample_ref.c pass for pass on the shared helpers of kernels/sample_math.h:
 * thresholds by radix select (integer histograms: exact, whatever the order of the atomic adds), sums of
 * floats by a fixed-shape tree, draws by an exact fixed-point scan in id order. So a seed gives the same
 * tokens run to run, and a draw equals the reference's draw on the same probs.
 *
 * sample_rows splits each row into segments, one block each (one block walking a 32000-word row pass
 * after pass cost 0.66 ms per token on the H200), and runs every pass as two launches: the segments'
 * partial results (argmax, histogram digits, sums, tie counts, masses) into device memory, then one block
 * per row merging them in segment order into the row's state for the next pass. The launch boundary
 * orders the memory: no block ever reads what another block of the same launch wrote. (Merging in "the
 * last block to finish" instead passed the emulation and drew wrong ids on the H200.) spec_accept is one
 * block (one row of acceptance a verify). */
#include <stdio.h>

#include "kernels/cuda/cuda_internal.h"
#include "kernels/sample_math.h"

#define SB 512       /* threads per block */
#define SW (SB / 32) /* warps per block */

typedef unsigned long long u64; /* the type CUDA's atomics and shuffles take */

typedef struct blk {
    uint64_t hist[SD_RADIX_BINS];
    double dsum[SB];
    u64 wsum[SW];
    float bv[SB];
    int32_t bi[SB];
    uint32_t prefix;
    uint64_t need;
    int fail;
    int32_t hit;
} blk;

typedef struct cutv {
    uint32_t thr;
    int32_t last;
} cutv;

enum { BY_COUNT_OF_LOGITS, BY_MASS_OF_PROBS };

/* ---- block-wide building blocks (every thread of the block calls them) ---- */

/* Exclusive prefix sum of v over the block in thread order; *total = the block's sum. Integers: exact. */
static __device__ u64 block_scan(u64 v, u64 *total, blk &s) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    u64 x = v;
    for (int o = 1; o < 32; o <<= 1) {
        u64 y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) s.wsum[w] = x;
    __syncthreads();
    u64 before = 0, all = 0;
    for (int i = 0; i < SW; i++) {
        if (i < w) before += s.wsum[i];
        all += s.wsum[i];
    }
    __syncthreads();
    *total = all;
    return before + x - v;
}

/* Sum over the block by a fixed tree: the same rounding every run. */
static __device__ double block_sum(double v, blk &s) {
    s.dsum[threadIdx.x] = v;
    __syncthreads();
    for (int step = SB / 2; step > 0; step >>= 1) {
        if (threadIdx.x < step) s.dsum[threadIdx.x] += s.dsum[threadIdx.x + step];
        __syncthreads();
    }
    double r = s.dsum[0];
    __syncthreads();
    return r;
}

/* Index of the largest element of x[lo, hi) (kernels/quant.h's order: lowest index on ties, NaN last);
 * INT32_MAX for an empty range. */
static __device__ int32_t block_argmax(const float *x, int lo, int hi, blk &s) {
    float best = NAN;
    int32_t bi = INT32_MAX;
    for (int32_t i = lo + threadIdx.x; i < hi; i += SB)
        if (bi == INT32_MAX || sd_argmax_prefers(x[i], i, best, bi)) {
            best = x[i];
            bi = i;
        }
    s.bv[threadIdx.x] = best;
    s.bi[threadIdx.x] = bi;
    __syncthreads();
    for (int step = SB / 2; step > 0; step >>= 1) {
        if (threadIdx.x < step) {
            int o = threadIdx.x + step;
            if (s.bi[o] != INT32_MAX &&
                (s.bi[threadIdx.x] == INT32_MAX || sd_argmax_prefers(s.bv[o], s.bi[o], s.bv[threadIdx.x], s.bi[threadIdx.x]))) {
                s.bv[threadIdx.x] = s.bv[o];
                s.bi[threadIdx.x] = s.bi[o];
            }
        }
        __syncthreads();
    }
    int32_t r = s.bi[0];
    __syncthreads();
    return r;
}

static __device__ void element(const float *x, int mode, int i, uint32_t &key, uint64_t &amount) {
    if (mode == BY_COUNT_OF_LOGITS) {
        key = sd_logit_key(x[i]);
        amount = 1;
    } else {
        key = sd_prob_key(x[i]);
        amount = sd_mass_fp(x[i]);
    }
}

/* The id of the n-th element (1-based, id order) of x[lo, hi) whose key is thr; INT32_MAX when there are
 * fewer. */
static __device__ int32_t block_nth_tie(const float *x, int lo, int hi, int mode, uint32_t thr, uint64_t n, blk &s) {
    if (n == 0) return INT32_MAX;
    uint64_t seen = 0;
    for (int base = lo; base < hi; base += SB) {
        int i = base + threadIdx.x;
        u64 flag = 0;
        if (i < hi) {
            uint32_t key;
            uint64_t amount;
            element(x, mode, i, key, amount);
            flag = key == thr;
        }
        u64 total, before = block_scan(flag, &total, s);
        if (seen + total >= n) { /* the same decision in every thread: total is the block's */
            if (flag && seen + before + 1 == n) s.hit = i;
            __syncthreads();
            int32_t r = s.hit;
            __syncthreads();
            return r;
        }
        seen += total;
    }
    return INT32_MAX;
}

static __device__ uint64_t draw_mass(const float *p, const float *q, int32_t x, bool residual, int32_t i) {
    return sd_mass_fp(residual ? sd_residual_at(p, q, x, i) : p[i]);
}

/* Total mass of x[lo, hi) (p, or the residual). */
static __device__ uint64_t block_mass(const float *p, const float *q, int32_t x, bool residual, int lo, int hi, blk &s) {
    u64 part = 0, total;
    for (int32_t i = lo + threadIdx.x; i < hi; i += SB) part += draw_mass(p, q, x, residual, i);
    block_scan(part, &total, s);
    return total;
}

/* The id in [lo, hi) whose cumulative interval, counting cum before lo, holds target (sd_draw_hit); -1
 * when the range ends first. */
static __device__ int32_t block_draw_in(const float *p, const float *q, int32_t x, bool residual, int lo, int hi,
                                        uint64_t cum, uint64_t target, blk &s) {
    for (int base = lo; base < hi; base += SB) {
        int32_t i = base + threadIdx.x;
        u64 m = i < hi ? draw_mass(p, q, x, residual, i) : 0, chunk;
        u64 before = block_scan(m, &chunk, s);
        if (cum + chunk > target) {
            if (sd_draw_hit(cum + before, m, target)) s.hit = i;
            __syncthreads();
            int32_t r = s.hit;
            __syncthreads();
            return r;
        }
        cum += chunk;
    }
    return -1;
}

/* sample_ref.c's draw_mass: inverse CDF in id order over p (or the residual); -1 when it is empty. */
static __device__ int32_t block_draw(const float *p, const float *q, int32_t x, bool residual, int width, float u, blk &s) {
    uint64_t total = block_mass(p, q, x, residual, 0, width, s);
    if (total == 0) return -1;
    return block_draw_in(p, q, x, residual, 0, width, 0, sd_draw_target(u, total), s);
}

/* ---- sample_rows: partial launches (a block per segment of a row) and merges (a block per row) ---- */

typedef struct row_uniforms {
    float u[SD_SAMPLE_MAX_K];
} row_uniforms;

#define SEG_MIN 1024 /* words of a row per block at least */
#define SEG_MAX 64   /* blocks per row at most */

typedef struct seg_part { /* one segment's result of the current pass (written by its block only) */
    float bv;
    int32_t bi;
    double sum;
    u64 amount;
} seg_part;

/* A row's state (device memory, SD_SAMPLE_MAX_K of them). Partial launches write only seg[] and add into
 * hist; merges write the rest and zero hist again. */
typedef struct row_st {
    u64 hist[SD_RADIX_BINS]; /* the current radix digit's histogram, added by the row's blocks */
    seg_part seg[SEG_MAX];
    int32_t best;            /* argmax of the logits */
    int ok;                  /* the distribution is usable (else the one-hot argmax) */
    float maxv, inv, bound;  /* max logit; 1 / sum of the current weights; min-p's bound */
    uint32_t prefix;         /* radix select in progress: the digits so far, the amount still needed */
    u64 need;
    int fail;                /* everything together falls short: keep it all */
    uint32_t thr[2];         /* the cuts, [0] top-k over logits, [1] top-p over probabilities: */
    int32_t last[2];         /* threshold key and last tie kept */
} row_st;

/* Segment k of a row of width words cut into n: [lo, hi). */
static __device__ void seg_range(int width, int n, int k, int &lo, int &hi) {
    int len = (width + n - 1) / n;
    lo = min(width, k * len);
    hi = min(width, lo + len);
}

/* The argmax of each segment. */
__global__ void __launch_bounds__(SB) k_samp_argmax(const float *logits, int width, row_st *sts) {
    __shared__ blk s;
    const float *lr = logits + (size_t)blockIdx.y * width;
    int lo, hi;
    seg_range(width, gridDim.x, blockIdx.x, lo, hi);
    int32_t b = block_argmax(lr, lo, hi, s);
    if (threadIdx.x == 0) {
        seg_part *sp = &sts[blockIdx.y].seg[blockIdx.x];
        sp->bi = b;
        sp->bv = b != INT32_MAX ? lr[b] : NAN;
    }
}

/* One digit of a radix select (sample_ref.c's radix_select) over logits (BY_COUNT_OF_LOGITS) or
 * probabilities (BY_MASS_OF_PROBS) into the row's histogram; shift 24 starts it. scale: first multiply the
 * segment's weights by the row's 1 / sum (the probabilities top-p selects over). */
__global__ void __launch_bounds__(SB) k_samp_digit(float *xs, int width, row_st *sts, int mode, int shift, int scale) {
    __shared__ blk s;
    row_st *st = sts + blockIdx.y;
    if (!st->ok || (shift < 24 && st->fail)) return; /* the same answer in every block of the row */
    float *x = xs + (size_t)blockIdx.y * width;
    uint32_t prefix = shift == 24 ? 0 : st->prefix;
    int lo, hi;
    seg_range(width, gridDim.x, blockIdx.x, lo, hi);
    if (scale)
        for (int i = lo + threadIdx.x; i < hi; i += SB) x[i] *= st->inv;
    for (int i = threadIdx.x; i < SD_RADIX_BINS; i += SB) s.hist[i] = 0;
    __syncthreads();
    for (int i = lo + threadIdx.x; i < hi; i += SB) {
        uint32_t key;
        uint64_t amount;
        element(x, mode, i, key, amount);
        if (amount && sd_radix_match(key, prefix, shift))
            atomicAdd((u64 *)&s.hist[(key >> shift) & 0xFF], (u64)amount);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < SD_RADIX_BINS; i += SB)
        if (s.hist[i]) atomicAdd(&st->hist[i], (u64)s.hist[i]);
}

/* Ties still needed at the end of a select: the amount still needed over one tie's amount; 0 when the
 * select fell short. */
static __device__ uint64_t ties_needed(const row_st *st, int mode) {
    if (st->fail) return 0;
    uint64_t unit = mode == BY_COUNT_OF_LOGITS ? 1 : sd_mass_fp(sd_bits_f32(st->prefix));
    return sd_ties_needed(st->need, unit);
}

/* The end of a select: each segment's count of elements at the threshold key. */
__global__ void __launch_bounds__(SB) k_samp_ties(const float *xs, int width, row_st *sts, int mode) {
    __shared__ blk s;
    row_st *st = sts + blockIdx.y;
    if (!st->ok || ties_needed(st, mode) == 0) return;
    const float *x = xs + (size_t)blockIdx.y * width;
    uint32_t thr = st->prefix;
    int lo, hi;
    seg_range(width, gridDim.x, blockIdx.x, lo, hi);
    u64 part = 0, total;
    for (int i = lo + threadIdx.x; i < hi; i += SB) {
        uint32_t key;
        uint64_t amount;
        element(x, mode, i, key, amount);
        part += key == thr;
    }
    block_scan(part, &total, s);
    if (threadIdx.x == 0) st->seg[blockIdx.x].amount = total;
}

/* Weights exp((l - max) / t) of the logits top-k keeps (has_k), and each segment's sum. */
__global__ void __launch_bounds__(SB) k_samp_exp(float *probs, const float *logits, int width, row_st *sts,
                                                 sd_sample_cfg cfg, int has_k) {
    __shared__ blk s;
    row_st *st = sts + blockIdx.y;
    if (!st->ok) return;
    const float *lr = logits + (size_t)blockIdx.y * width;
    float *pr = probs + (size_t)blockIdx.y * width;
    uint32_t kthr = has_k ? st->thr[0] : 0;
    int32_t klast = has_k ? st->last[0] : INT32_MAX;
    float maxv = st->maxv;
    int lo, hi;
    seg_range(width, gridDim.x, blockIdx.x, lo, hi);
    double part = 0.0;
    for (int32_t i = lo + threadIdx.x; i < hi; i += SB) {
        float l = lr[i];
        bool keep = l == l && sd_keep_ranked(sd_logit_key(l), i, kthr, klast);
        float e = keep ? expf((l - maxv) / cfg.temperature) : 0.0f;
        pr[i] = e;
        part += e;
    }
    double sum = block_sum(part, s);
    if (threadIdx.x == 0) st->seg[blockIdx.x].sum = sum;
}

/* Top-p (has_p: the cut over the probabilities) and min-p, each segment's kept sum. scale: the weights
 * are not normalised yet (no top-p select did it). */
__global__ void __launch_bounds__(SB) k_samp_filter(float *probs, int width, row_st *sts, int has_p, int scale) {
    __shared__ blk s;
    row_st *st = sts + blockIdx.y;
    if (!st->ok) return;
    float *pr = probs + (size_t)blockIdx.y * width, bound = st->bound, inv = st->inv;
    uint32_t pthr = has_p ? st->thr[1] : 0;
    int32_t plast = has_p ? st->last[1] : INT32_MAX;
    int lo, hi;
    seg_range(width, gridDim.x, blockIdx.x, lo, hi);
    double kept = 0.0;
    for (int32_t i = lo + threadIdx.x; i < hi; i += SB) {
        float v = scale ? pr[i] * inv : pr[i];
        if (!(v > 0.0f && v >= bound && sd_keep_ranked(sd_prob_key(v), i, pthr, plast))) v = 0.0f;
        pr[i] = v;
        kept += v;
    }
    kept = block_sum(kept, s);
    if (threadIdx.x == 0) st->seg[blockIdx.x].sum = kept;
}

/* The final probabilities: kept ones times 1 / their sum, or, for greedy or unusable rows, the one-hot
 * argmax; each segment's mass for the draw. */
__global__ void __launch_bounds__(SB) k_samp_final(float *probs, int width, row_st *sts, int draw) {
    __shared__ blk s;
    row_st *st = sts + blockIdx.y;
    float *pr = probs + (size_t)blockIdx.y * width, inv = st->inv;
    int32_t best = st->best;
    bool ok = st->ok;
    int lo, hi;
    seg_range(width, gridDim.x, blockIdx.x, lo, hi);
    for (int32_t i = lo + threadIdx.x; i < hi; i += SB) pr[i] = ok ? pr[i] * inv : i == best ? 1.0f : 0.0f;
    if (!draw) return;
    __syncthreads(); /* block_mass reads what other threads of the block wrote */
    uint64_t m = block_mass(pr, NULL, -1, false, lo, hi, s);
    if (threadIdx.x == 0) st->seg[blockIdx.x].amount = m;
}

enum { MERGE_ARGMAX, MERGE_DIGIT, MERGE_TIES, MERGE_EXP, MERGE_FILTER, MERGE_DRAW };

typedef struct merge_args {
    int what;      /* MERGE_* */
    int segs;      /* the partial launch's blocks per row */
    int mode;      /* MERGE_DIGIT, MERGE_TIES: BY_COUNT_OF_LOGITS or BY_MASS_OF_PROBS */
    int shift;     /* MERGE_DIGIT */
    u64 need;      /* MERGE_DIGIT at shift 24: the amount the select needs */
    int which;     /* MERGE_TIES: into cut 0 (top-k) or 1 (top-p) */
    int greedy;    /* MERGE_ARGMAX */
    float min_p;   /* MERGE_EXP */
} merge_args;

/* The row's argmax from its segments' (in segment order: lowest index on ties). */
static __device__ void merge_argmax(row_st *st, const merge_args &a, const float *lr) {
    if (threadIdx.x) return;
    int32_t best = INT32_MAX;
    float bv = NAN;
    for (int k = 0; k < a.segs; k++) {
        int32_t ci = st->seg[k].bi;
        float cv = st->seg[k].bv;
        if (ci != INT32_MAX && (best == INT32_MAX || sd_argmax_prefers(cv, ci, bv, best))) {
            best = ci;
            bv = cv;
        }
    }
    st->best = best;
    st->maxv = lr[best];
    st->ok = !a.greedy;
}

/* The digit picked from the row's histogram (zeroed for the next digit). */
static __device__ void merge_digit(row_st *st, const merge_args &a, blk &s) {
    for (int i = threadIdx.x; i < SD_RADIX_BINS; i += SB) {
        s.hist[i] = st->hist[i];
        st->hist[i] = 0;
    }
    __syncthreads();
    if (threadIdx.x) return;
    if (a.shift < 24 && st->fail) return;
    uint32_t prefix = a.shift == 24 ? 0 : st->prefix;
    uint64_t above, need = a.shift == 24 ? a.need : st->need;
    int d = sd_radix_pick(s.hist, need, &above);
    st->fail = d < 0;
    if (d >= 0) {
        st->prefix = prefix | (uint32_t)d << a.shift;
        st->need = need - above;
    }
}

/* The cut: the threshold key and the n-th tie in id order (found in the segment that holds it). */
static __device__ void merge_ties(row_st *st, const merge_args &a, const float *x, int width, blk &s) {
    uint64_t ties = ties_needed(st, a.mode), seen = 0;
    int32_t last = INT32_MAX;
    for (int k = 0; ties && k < a.segs; k++) { /* the same walk in every thread */
        uint64_t c = st->seg[k].amount;
        if (seen + c >= ties) {
            int lo, hi;
            seg_range(width, a.segs, k, lo, hi);
            last = block_nth_tie(x, lo, hi, a.mode, st->prefix, ties - seen, s);
            break;
        }
        seen += c;
    }
    if (threadIdx.x) return;
    st->thr[a.which] = st->fail ? 0 : st->prefix;
    st->last[a.which] = last;
}

/* 1 / the sum of the segments' sums (in segment order), whether it is usable, and min-p's bound (min_p
 * times the argmax's probability). */
static __device__ void merge_sum(row_st *st, const merge_args &a, const float *pr) {
    if (threadIdx.x) return;
    double total = 0.0;
    for (int k = 0; k < a.segs; k++) total += st->seg[k].sum;
    if (a.what == MERGE_EXP) {
        st->ok = total > 0.0 && isfinite(total);
        st->inv = (float)(1.0 / total);
        st->bound = a.min_p > 0.0f ? a.min_p * (pr[st->best] * st->inv) : 0.0f;
    } else {
        st->ok = total > 0.0;
        st->inv = (float)(1.0 / total);
    }
}

/* The draw: the segment whose masses hold the target, then the id in it; the argmax of the probabilities
 * when they hold no mass. */
static __device__ void merge_draw(row_st *st, const merge_args &a, const float *pr, int width, float u, int32_t *id,
                                  blk &s) {
    uint64_t total = 0;
    for (int k = 0; k < a.segs; k++) total += st->seg[k].amount;
    int32_t t = -1;
    if (total) {
        uint64_t target = sd_draw_target(u, total), cum = 0;
        for (int k = 0; k < a.segs; k++) {
            uint64_t m = st->seg[k].amount;
            if (cum + m > target) {
                int lo, hi;
                seg_range(width, a.segs, k, lo, hi);
                t = block_draw_in(pr, NULL, -1, false, lo, hi, cum, target, s);
                break;
            }
            cum += m;
        }
    }
    if (t < 0) t = block_argmax(pr, 0, width, s);
    if (threadIdx.x == 0) *id = t;
}

/* One block per row: the partial launch's results into the row's state. Every branch depends only on
 * block-wide values, so the barriers inside are reached by all threads. */
__global__ void __launch_bounds__(SB) k_samp_merge(const float *xs, int width, row_st *sts, merge_args a,
                                                   row_uniforms u, int32_t *ids) {
    __shared__ blk s;
    row_st *st = sts + blockIdx.x;
    const float *x = xs + (size_t)blockIdx.x * width;
    if (a.what == MERGE_ARGMAX) merge_argmax(st, a, x);
    else if (a.what == MERGE_DRAW) merge_draw(st, a, x, width, u.u[blockIdx.x], ids + blockIdx.x, s);
    else if (!st->ok) return;
    else if (a.what == MERGE_DIGIT) merge_digit(st, a, s);
    else if (a.what == MERGE_TIES) merge_ties(st, a, x, width, s);
    else merge_sum(st, a, x);
}

typedef struct spec_args {
    int32_t draft[SD_SAMPLE_MAX_K];
    float u[SD_SAMPLE_MAX_K + 1];
} spec_args;

/* sample_ref.c's sd_spec_accept_ref in one block: out[0] = drafts accepted, out[1] = the next token. */
__global__ void __launch_bounds__(SB) k_spec_accept(int32_t *out, const float *p, const float *q, int k, int width,
                                                    spec_args a) {
    __shared__ blk s;
    int acc = k; /* every thread runs the k tests itself: the same reads, the same answer */
    for (int i = 0; i < k; i++) {
        int32_t x = a.draft[i];
        bool in = x >= 0 && x < width;
        float px = in ? p[(size_t)i * width + x] : 0.0f;
        float qx = q ? (in ? q[(size_t)i * width + x] : 0.0f) : 1.0f;
        if (!sd_spec_accepts(px, qx, a.u[i])) {
            acc = i;
            break;
        }
    }
    const float *row = p + (size_t)acc * width;
    int32_t t = -1;
    if (acc < k) t = block_draw(row, q ? q + (size_t)acc * width : NULL, a.draft[acc], true, width, a.u[k], s);
    if (t < 0) t = block_draw(row, NULL, -1, false, width, a.u[k], s);
    if (t < 0) t = block_argmax(row, 0, width, s);
    if (threadIdx.x == 0) {
        out[0] = acc;
        out[1] = t;
    }
}

/* ---- host side ---- */

/* The row states, allocated (zeroed) on first use; sampling is never captured into a graph (it waits). */
static row_st *row_states(cuda_ctx *c) {
    if (!c->samp_ws) {
        size_t bytes = sizeof(row_st) * SD_SAMPLE_MAX_K;
        if (cudaMalloc(&c->samp_ws, bytes) != cudaSuccess) {
            cudaGetLastError();
            c->samp_ws = NULL;
            cuda_fail(c, cudaErrorMemoryAllocation, "sampling state", __FILE__, __LINE__);
            return NULL;
        }
        c->bytes_work += bytes;
        CUDA_CK(c, cudaMemsetAsync(c->samp_ws, 0, bytes, c->stream));
    }
    return (row_st *)c->samp_ws;
}

/* The launches of one sample_rows call of n rows: a partial launch (segs blocks per row) is followed by
 * the merge of its results (one block per row). */
typedef struct samp_run {
    cuda_ctx *c;
    dim3 grid; /* segs x n */
    int width;
    row_st *st;
} samp_run;

static bool merge(const samp_run &r, const float *x, merge_args a, const row_uniforms &u = row_uniforms(),
                  int32_t *ids = NULL) {
    a.segs = (int)r.grid.x;
    k_samp_merge<<<r.grid.y, SB, 0, r.c->stream>>>(x, r.width, r.st, a, u, ids);
    return CUDA_LAUNCHED(r.c, "sample_rows (merge)");
}

/* sample_ref.c's radix select over the rows' logits (top-k) or probabilities (top-p, which also
 * normalises them first) into cut `which`. */
static bool select_cut(const samp_run &r, float *x, int mode, u64 need, int which) {
    for (int shift = 24; shift >= 0; shift -= 8) {
        int scale = mode == BY_MASS_OF_PROBS && shift == 24;
        k_samp_digit<<<r.grid, SB, 0, r.c->stream>>>(x, r.width, r.st, mode, shift, scale);
        merge_args a = {};
        a.what = MERGE_DIGIT;
        a.mode = mode;
        a.shift = shift;
        a.need = need;
        if (!CUDA_LAUNCHED(r.c, "sample_rows (radix digit)") || !merge(r, x, a)) return false;
    }
    k_samp_ties<<<r.grid, SB, 0, r.c->stream>>>(x, r.width, r.st, mode);
    merge_args a = {};
    a.what = MERGE_TIES;
    a.mode = mode;
    a.which = which;
    return CUDA_LAUNCHED(r.c, "sample_rows (ties)") && merge(r, x, a);
}

/* sample_ref.c's sd_sample_ref_row for n rows (and a draw each when ids), pass by pass. */
static bool launch_sample(cuda_ctx *c, int32_t *ids, float *probs, const float *logits, int n, int width,
                          const sd_sample_cfg *cfg, const row_uniforms &ru, row_st *st) {
    int segs = (width + SEG_MIN - 1) / SEG_MIN;
    samp_run r = {c, dim3((unsigned)(segs < 1 ? 1 : segs > SEG_MAX ? SEG_MAX : segs), (unsigned)n), width, st};
    merge_args a = {};
    k_samp_argmax<<<r.grid, SB, 0, c->stream>>>(logits, width, st);
    a.what = MERGE_ARGMAX;
    a.greedy = sd_sample_greedy(cfg);
    if (!CUDA_LAUNCHED(c, "sample_rows (argmax)") || !merge(r, logits, a)) return false;
    if (!a.greedy) {
        bool has_k = cfg->top_k > 0 && cfg->top_k < width, has_p = cfg->top_p < 1.0f;
        if (has_k && !select_cut(r, (float *)logits, BY_COUNT_OF_LOGITS, (u64)cfg->top_k, 0)) return false;
        k_samp_exp<<<r.grid, SB, 0, c->stream>>>(probs, logits, width, st, *cfg, has_k);
        a = merge_args();
        a.what = MERGE_EXP;
        a.min_p = cfg->min_p;
        if (!CUDA_LAUNCHED(c, "sample_rows (exp)") || !merge(r, probs, a)) return false;
        if (has_p && !select_cut(r, probs, BY_MASS_OF_PROBS, sd_top_p_need(cfg->top_p), 1)) return false;
        k_samp_filter<<<r.grid, SB, 0, c->stream>>>(probs, width, st, has_p, !has_p);
        a = merge_args();
        a.what = MERGE_FILTER;
        if (!CUDA_LAUNCHED(c, "sample_rows (filter)") || !merge(r, probs, a)) return false;
    }
    k_samp_final<<<r.grid, SB, 0, c->stream>>>(probs, width, st, ids != NULL);
    if (!CUDA_LAUNCHED(c, "sample_rows (final)")) return false;
    if (!ids) return true;
    a = merge_args();
    a.what = MERGE_DRAW;
    return merge(r, probs, a, ru, ids);
}

void cuda_sample_rows(cuda_ctx *c, int32_t *ids, float *probs, const float *logits, int rows, int width,
                      const sd_sample_cfg *cfg, const float *u) {
    if (rows <= 0) return;
    int32_t *d_ids = NULL;
    row_st *st = row_states(c);
    if (!st || (ids && !(d_ids = cuda_ids(c, (size_t)rows)))) {
        if (ids)
            for (int r = 0; r < rows; r++) ids[r] = 0;
        return;
    }
    for (int r0 = 0; r0 < rows; r0 += SD_SAMPLE_MAX_K) {
        int n = rows - r0 < SD_SAMPLE_MAX_K ? rows - r0 : SD_SAMPLE_MAX_K;
        row_uniforms ru;
        memset(&ru, 0, sizeof ru);
        if (ids)
            for (int j = 0; j < n; j++) ru.u[j] = u[r0 + j];
        size_t off = (size_t)r0 * width;
        if (!launch_sample(c, ids ? d_ids + r0 : NULL, probs + off, logits + off, n, width, cfg, ru, st)) break;
    }
    if (ids && !c->err)
        CUDA_CK(c, cudaMemcpyAsync(ids, d_ids, sizeof(int32_t) * (size_t)rows, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CK(c, cudaStreamSynchronize(c->stream));
    if (ids && c->err)
        for (int r = 0; r < rows; r++) ids[r] = 0;
}

int cuda_spec_accept(cuda_ctx *c, int32_t *next, const float *p, const float *q, const int32_t *draft, int k,
                     int width, const float *u) {
    if (k < 0 || k > SD_SAMPLE_MAX_K) { /* the engine never asks for more (backend.h) */
        fprintf(stderr, "specd: cuda: spec_accept of %d drafts (at most %d)\n", k, SD_SAMPLE_MAX_K);
        k = k < 0 ? 0 : SD_SAMPLE_MAX_K;
    }
    spec_args a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < k; i++) a.draft[i] = draft[i];
    for (int i = 0; i <= k; i++) a.u[i] = u[i];
    int32_t *d_out = cuda_ids(c, 2), out[2] = {0, 0};
    if (d_out) {
        k_spec_accept<<<1, SB, 0, c->stream>>>(d_out, p, q, k, width, a);
        if (CUDA_LAUNCHED(c, "spec_accept"))
            CUDA_CK(c, cudaMemcpyAsync(out, d_out, sizeof out, cudaMemcpyDeviceToHost, c->stream));
        CUDA_CK(c, cudaStreamSynchronize(c->stream));
    }
    if (c->err) out[0] = out[1] = 0; /* accept nothing the device did not decide */
    *next = out[1];
    return out[0];
}
