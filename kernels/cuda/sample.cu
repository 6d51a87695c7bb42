/* Sampling on the device: the filtered distribution of each row (temperature, top-k, top-p, min-p), a
 * draw from it, and speculative acceptance with the residual draw, so only token ids cross to the host.
 *
 * One block per row, the algorithm of kernels/sample_ref.c pass for pass on the shared helpers of
 * kernels/sample_math.h: thresholds by radix select (integer histograms: exact, whatever the order of
 * the atomic adds), sums of floats by a fixed-shape tree, draws by an exact fixed-point scan in id order.
 * So a seed gives the same tokens run to run, and a draw equals the reference's draw on the same probs. */
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

/* Index of the largest element (kernels/quant.h's order: lowest index on ties, NaN last). */
static __device__ int32_t block_argmax(const float *x, int width, blk &s) {
    float best = NAN;
    int32_t bi = INT32_MAX;
    for (int32_t i = threadIdx.x; i < width; i += SB)
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

/* The id of the n-th element (1-based, id order) whose key is thr; INT32_MAX when there are fewer. */
static __device__ int32_t block_nth_tie(const float *x, int width, int mode, uint32_t thr, uint64_t n, blk &s) {
    if (n == 0) return INT32_MAX;
    uint64_t seen = 0;
    for (int base = 0; base < width; base += SB) {
        int i = base + threadIdx.x;
        u64 flag = 0;
        if (i < width) {
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

/* sample_ref.c's radix_select: the smallest prefix of the order (key descending, id ascending) whose
 * amount reaches need, as a threshold key and the last tie kept. */
static __device__ cutv radix_select(const float *x, int width, int mode, uint64_t need, blk &s) {
    const cutv no_cut = {0, INT32_MAX};
    if (threadIdx.x == 0) {
        s.prefix = 0;
        s.need = need;
        s.fail = 0;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < SD_RADIX_BINS; i += SB) s.hist[i] = 0;
        __syncthreads();
        uint32_t prefix = s.prefix;
        for (int i = threadIdx.x; i < width; i += SB) {
            uint32_t key;
            uint64_t amount;
            element(x, mode, i, key, amount);
            if (amount && sd_radix_match(key, prefix, shift))
                atomicAdd((u64 *)&s.hist[(key >> shift) & 0xFF], (u64)amount);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            uint64_t above;
            int d = sd_radix_pick(s.hist, s.need, &above);
            if (d < 0) {
                s.fail = 1;
            } else {
                s.prefix |= (uint32_t)d << shift;
                s.need -= above;
            }
        }
        __syncthreads();
        if (s.fail) return no_cut; /* everything together falls short: keep it all */
    }
    uint32_t thr = s.prefix;
    uint64_t unit = mode == BY_COUNT_OF_LOGITS ? 1 : sd_mass_fp(sd_bits_f32(thr));
    uint64_t ties = sd_ties_needed(s.need, unit);
    __syncthreads(); /* s is reused below */
    cutv c = {thr, block_nth_tie(x, width, mode, thr, ties, s)};
    return c;
}

static __device__ uint64_t draw_mass(const float *p, const float *q, int32_t x, bool residual, int32_t i) {
    return sd_mass_fp(residual ? sd_residual_at(p, q, x, i) : p[i]);
}

/* sample_ref.c's draw_mass: inverse CDF in id order over p (or the residual); -1 when it is empty. */
static __device__ int32_t block_draw(const float *p, const float *q, int32_t x, bool residual, int width, float u, blk &s) {
    u64 part = 0, total;
    for (int32_t i = threadIdx.x; i < width; i += SB) part += draw_mass(p, q, x, residual, i);
    block_scan(part, &total, s);
    if (total == 0) return -1;
    uint64_t target = sd_draw_target(u, total), cum = 0;
    for (int base = 0; base < width; base += SB) {
        int32_t i = base + threadIdx.x;
        u64 m = i < width ? draw_mass(p, q, x, residual, i) : 0, chunk;
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
    return -1; /* not reached: target < total */
}

/* ---- kernels ---- */

typedef struct row_uniforms {
    float u[SD_SAMPLE_MAX_K];
} row_uniforms;

/* sample_ref.c's sd_sample_ref_row (and a draw when draw != 0), one block per row. Every branch below
 * depends only on block-wide values, so the barriers inside are reached by all threads. */
__global__ void __launch_bounds__(SB) k_sample_rows(int32_t *ids, float *probs, const float *logits, int width,
                                                    sd_sample_cfg cfg, row_uniforms u, int draw) {
    __shared__ blk s;
    const float *lr = logits + (size_t)blockIdx.x * width;
    float *pr = probs + (size_t)blockIdx.x * width;
    int32_t best = block_argmax(lr, width, s);
    bool ok = !sd_sample_greedy(&cfg);
    if (ok) {
        cutv k = {0, INT32_MAX};
        if (cfg.top_k > 0 && cfg.top_k < width) k = radix_select(lr, width, BY_COUNT_OF_LOGITS, (uint64_t)cfg.top_k, s);
        float maxv = lr[best];
        double part = 0.0;
        for (int32_t i = threadIdx.x; i < width; i += SB) {
            float l = lr[i];
            bool keep = l == l && sd_keep_ranked(sd_logit_key(l), i, k.thr, k.last);
            float e = keep ? expf((l - maxv) / cfg.temperature) : 0.0f;
            pr[i] = e;
            part += e;
        }
        double sum = block_sum(part, s);
        ok = sum > 0.0 && isfinite(sum);
        if (ok) {
            float inv = (float)(1.0 / sum);
            for (int32_t i = threadIdx.x; i < width; i += SB) pr[i] *= inv;
            __syncthreads();
            cutv p = {0, INT32_MAX};
            if (cfg.top_p < 1.0f) p = radix_select(pr, width, BY_MASS_OF_PROBS, sd_top_p_need(cfg.top_p), s);
            float bound = cfg.min_p > 0.0f ? cfg.min_p * pr[best] : 0.0f;
            __syncthreads(); /* everyone has read pr[best] before it is rewritten */
            double kept = 0.0;
            for (int32_t i = threadIdx.x; i < width; i += SB) {
                float v = pr[i];
                if (!(v > 0.0f && v >= bound && sd_keep_ranked(sd_prob_key(v), i, p.thr, p.last))) v = 0.0f;
                pr[i] = v;
                kept += v;
            }
            kept = block_sum(kept, s);
            ok = kept > 0.0;
            if (ok) {
                float inv2 = (float)(1.0 / kept);
                for (int32_t i = threadIdx.x; i < width; i += SB) pr[i] *= inv2;
            }
        }
    }
    if (!ok) /* greedy, or unusable logits: the one-hot argmax */
        for (int32_t i = threadIdx.x; i < width; i += SB) pr[i] = i == best ? 1.0f : 0.0f;
    __syncthreads();
    if (!draw) return;
    int32_t t = block_draw(pr, NULL, -1, false, width, u.u[blockIdx.x], s);
    if (t < 0) t = block_argmax(pr, width, s);
    if (threadIdx.x == 0) ids[blockIdx.x] = t;
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
    if (t < 0) t = block_argmax(row, width, s);
    if (threadIdx.x == 0) {
        out[0] = acc;
        out[1] = t;
    }
}

/* ---- host side ---- */

void cuda_sample_rows(cuda_ctx *c, int32_t *ids, float *probs, const float *logits, int rows, int width,
                      const sd_sample_cfg *cfg, const float *u) {
    if (rows <= 0) return;
    int32_t *d_ids = NULL;
    if (ids && !(d_ids = cuda_ids(c, (size_t)rows))) {
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
        k_sample_rows<<<n, SB, 0, c->stream>>>(ids ? d_ids + r0 : NULL, probs + off, logits + off, width, *cfg, ru,
                                               ids != NULL);
        if (!CUDA_LAUNCHED(c, "sample_rows")) break;
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
