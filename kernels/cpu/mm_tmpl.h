/* The SIMD matmul kernels (attention: attn_tmpl.h), written once and instantiated per instruction set: a kernel file
 * defines the vector type and operations below, then includes this file (no include guard on purpose).
 *
 * Required macros:
 *   TGT             __attribute__((target(...))) of every function here
 *   V, VW           vector of floats and its lane count (8 or 16; divides 32)
 *   VZERO() VLOAD(p) VSTORE(p, v) VFMA(a, b, c) VMUL(a, b) VSET1(f) VHSUM(v)
 *   WF16(p) WBF16(p)    VW weights from F16 / BF16 bits at p, as floats
 *   VADD(a, b)          lane-wise sum
 *   R_FEW, R_MANY       rows per register tile when n <= 2 / when n > 2
 *   N_MAX               most activation vectors per register tile
 *   QR_FEW, QR_MANY, QN_MAX           the register tile of the Q8_0 kernel
 *   Q8_DOT8(b, x, xs)   the exact integer sums of the 8 blocks at b with the activations at x, as 8 floats
 *                       (xs: the sums of those activation blocks, sd_mm_job.xs)
 *   Q8_DOT1(b, x, xs)   the exact integer sum of one block, as an int (xs: its activation sum)
 *   KNAME, KLEVEL       name of the sd_cpu_kernels table defined here and its level
 *
 * Shape of the work: a tile of R weight rows x N activation vectors keeps R*N vector accumulators in
 * registers; each weight vector is loaded (and converted) once and multiplied into all N activations, so
 * a weight row is streamed from memory once whatever n is. Each accumulator sums its lanes in column
 * order, then a horizontal sum and a scalar tail (columns past the last full vector): the arithmetic of
 * one output element never depends on R, on the tile or on the thread that computes it. */

#include <immintrin.h>
#include <limits.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/quant_k.h"

#define BLK 32 /* columns per step: one Q8_0 block, 32 / VW vectors */

/* Access pattern. With n <= 2 (decode) a tile is one row (R_FEW = QR_FEW = 1): the weights are then read
 * in address order, one sequential stream per thread, which the hardware prefetchers follow at full
 * memory bandwidth. Interleaving 4 rows (4 streams a row apart) reached only 50-60% of it, software
 * prefetch or not (docs/benchmarks.md). With more activations a tile takes several rows so that each
 * activation vector loaded serves several rows; those interleaved streams get a software prefetch of the
 * rows the next row group will read, at the same offset as the current step. Prefetching past the end
 * of the matrix is harmless (prefetches never fault). */
#ifndef PF_GROUPS
#define PF_GROUPS 2 /* how many row groups ahead */
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T0
#endif
#define PREFETCH(p, len)                                                                          \
    do {                                                                                          \
        const char *pf_ = (const char *)(p);                                                      \
        _mm_prefetch(pf_, PF_HINT);                                                               \
        if ((len) > 64) _mm_prefetch(pf_ + 64, PF_HINT);                                          \
    } while (0)

TGT static inline __attribute__((always_inline)) void wvec(int type, const uint8_t *row, int64_t c, int k, V d,
                                                           V *out) {
    switch (type) {
    case SD_MM_F32: *out = VLOAD((const float *)row + c + k * VW); break;
    case SD_MM_F16: *out = WF16((const uint16_t *)row + c + k * VW); break;
    case SD_MM_BF16: *out = WBF16((const uint16_t *)row + c + k * VW); break;
    default: *out = d; break; /* Q8_0 has its own kernel below */
    }
}

/* Register-tile columns [c0, c1) (a multiple of `step` = BLK, or VW for the whole vectors after the last
 * full block): acc[a][b] += weights of row a times activation b, one FMA per vector in column order. */
TGT static inline __attribute__((always_inline)) void mm_cols(const sd_mm_job *j, int type, const uint8_t *const *rows,
                                                              const float *const *xs, V acc[4][8], const int R,
                                                              const int N, int64_t c0, int64_t c1, const int step,
                                                              const int xreg) {
    const int esz = type == SD_MM_F32 ? 4 : 2;
    for (int64_t c = c0; c < c1; c += step) {
#pragma GCC unroll 4
        for (int a = 0; a < R; a++)
            if (R > 1 && step == BLK) PREFETCH(rows[a] + (size_t)(PF_GROUPS * R) * j->row_bytes + (size_t)c * esz, esz * BLK);
#pragma GCC unroll 4
        for (int k = 0; k < step / VW; k++) {
            V w[4];
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) {
                wvec(type, rows[a], c, k, VZERO(), &w[a]);
                if (xreg && N > 1) __asm__("" : "+v"(w[a]));
            }
#pragma GCC unroll 8
            for (int b = 0; b < N; b++) {
                V xv = VLOAD(xs[b] + c + k * VW);
                /* xreg: w and x in registers, each loaded once for the R x N products (GCC otherwise folds
                 * a load into each FMA when registers run short, and the loads then bound the blocked
                 * loop; the small-row path, bound by memory, measured faster without) */
                if (xreg && R > 1) __asm__("" : "+v"(xv));
#pragma GCC unroll 4
                for (int a = 0; a < R; a++) acc[a][b] = VFMA(w[a], xv, acc[a][b]);
            }
        }
    }
}

/* The end of every output element of a tile whose full blocks are in acc: the whole vectors past the last
 * block, the horizontal sum, the single columns past the last vector, stored. */
TGT static inline __attribute__((always_inline)) void mm_finish(const sd_mm_job *j, int type, int64_t r, int i0,
                                                                const uint8_t *const *rows, const float *const *xs,
                                                                V acc[4][8], const int R, const int N) {
    int64_t cols = j->cols, cb = cols / BLK * BLK, cv = cols / VW * VW;
    mm_cols(j, type, rows, xs, acc, R, N, cb, cv, VW, 0);
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            float s = VHSUM(acc[a][b]);
            for (int64_t t = cv; t < cols; t++) s += sd_row_get(type == SD_MM_F32 ? SD_F32 : type == SD_MM_F16 ? SD_F16 : SD_BF16, rows[a], t) * xs[b][t];
            j->out[(int64_t)(i0 + b) * j->out_stride + r + a] = s;
        }
}

TGT static inline __attribute__((always_inline)) void mm_tile_ptrs(const sd_mm_job *j, int64_t r, int i0, const int R,
                                                                   const int N, const uint8_t **rows, const float **xs) {
#pragma GCC unroll 4
    for (int a = 0; a < R; a++) rows[a] = j->w + (size_t)(r + a) * j->row_bytes;
#pragma GCC unroll 8
    for (int b = 0; b < N; b++) xs[b] = j->x + (int64_t)(i0 + b) * j->cols;
}

TGT static inline __attribute__((always_inline)) void mm_tile(const sd_mm_job *j, int type, int64_t r, int i0,
                                                              const int R, const int N) {
    V acc[4][8];
    const uint8_t *rows[4];
    const float *xs[8];
    mm_tile_ptrs(j, r, i0, R, N, rows, xs);
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) acc[a][b] = VZERO();
    mm_cols(j, type, rows, xs, acc, R, N, 0, j->cols / BLK * BLK, BLK, 0);
    mm_finish(j, type, r, i0, rows, xs, acc, R, N);
}

/* Q8_0, the blocks in groups of 8: the exact integer sums of 8 consecutive blocks go to the 8 lanes of
 * one vector, converted and scaled by d_w * d_x of those blocks (8 weight scales converted at once), so
 * the float work and the accumulator's dependency chain are per 8 blocks instead of per block. Lane l sums
 * the blocks k = l mod 8 in order, then a horizontal sum; the blocks past the last group (cols / 32 mod 8
 * of them) follow one by one in a scalar sum, added last. Every tile shape runs this same sequence per
 * output element. */
TGT static inline __attribute__((always_inline)) __m256 q8_dscale8(const sd_block_q8_0 *b) {
    /* The 8 F16 scales sit 34 bytes apart: packed in general-purpose registers, then one vector convert.
     * The empty asm keeps the packing scalar (the vectorizer's shuffle version measured slower). */
    uint64_t d0 = b[0].d, d1 = b[1].d, d2 = b[2].d, d3 = b[3].d, d4 = b[4].d, d5 = b[5].d, d6 = b[6].d, d7 = b[7].d;
    __asm__("" : "+r"(d0), "+r"(d1), "+r"(d2), "+r"(d3), "+r"(d4), "+r"(d5), "+r"(d6), "+r"(d7));
    uint64_t lo = d0 | d1 << 16 | d2 << 32 | d3 << 48, hi = d4 | d5 << 16 | d6 << 32 | d7 << 48;
    __asm__("" : "+r"(lo), "+r"(hi));
    return _mm256_cvtph_ps(_mm_insert_epi64(_mm_cvtsi64_si128((long long)lo), (long long)hi, 1));
}

/* Register-tile groups of 8 blocks [k0, k1) (block indices, k1 - k0 a multiple of 8) into acc. */
TGT static inline __attribute__((always_inline)) void mmq_cols(const sd_mm_job *j, const sd_block_q8_0 *const *rows,
                                                               int i0, __m256 acc[4][8], const int R, const int N,
                                                               int64_t k0, int64_t k1) {
    int64_t nb = j->cols / BLK;
    for (int64_t k = k0; k < k1; k += 8) {
        __m256 dw[4];
#pragma GCC unroll 4
        for (int a = 0; a < R; a++) dw[a] = q8_dscale8(rows[a] + k);
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            const int8_t *xq = j->xq + (int64_t)(i0 + b) * j->cols + k * BLK;
            __m256 dx = _mm256_loadu_ps(j->xd + (int64_t)(i0 + b) * nb + k);
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) /* the group's 272 bytes of the rows ahead, spread over the N steps */
                if (R > 1)
                    for (int l = b * 64; l < 8 * (int)sizeof(sd_block_q8_0); l += N * 64)
                        _mm_prefetch((const char *)(rows[a] + k) + (size_t)(PF_GROUPS * R) * j->row_bytes + l, PF_HINT);
#pragma GCC unroll 4
            for (int a = 0; a < R; a++)
                acc[a][b] = _mm256_fmadd_ps(Q8_DOT8(rows[a] + k, xq, j->xs + (int64_t)(i0 + b) * nb + k), _mm256_mul_ps(dw[a], dx), acc[a][b]);
        }
    }
}

/* The end of every output element of a tile whose groups of 8 blocks are in acc: the last blocks one by
 * one into a scalar sum, added to the horizontal sum, stored. */
TGT static inline __attribute__((always_inline)) void mmq_finish(const sd_mm_job *j, int64_t r, int i0,
                                                                 const sd_block_q8_0 *const *rows, __m256 acc[4][8],
                                                                 const int R, const int N) {
    int64_t nb = j->cols / BLK;
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            float tail = 0;
            for (int64_t k = nb / 8 * 8; k < nb; k++) {
                const int8_t *xq = j->xq + (int64_t)(i0 + b) * j->cols + k * BLK;
                __m128 s = _mm_set_ss(_cvtsh_ss(rows[a][k].d) * j->xd[(int64_t)(i0 + b) * nb + k]);
                __m128 p = _mm_cvtsi32_ss(_mm_setzero_ps(), Q8_DOT1(rows[a] + k, xq, j->xs[(int64_t)(i0 + b) * nb + k]));
                tail = _mm_cvtss_f32(_mm_fmadd_ss(p, s, _mm_set_ss(tail)));
            }
            j->out[(int64_t)(i0 + b) * j->out_stride + r + a] = hsum8(acc[a][b]) + tail;
        }
}

TGT static inline __attribute__((always_inline)) void mmq_tile_ptrs(const sd_mm_job *j, int64_t r, const int R,
                                                                    const sd_block_q8_0 **rows) {
#pragma GCC unroll 4
    for (int a = 0; a < R; a++) rows[a] = (const sd_block_q8_0 *)(j->w + (size_t)(r + a) * j->row_bytes);
}

TGT static inline __attribute__((always_inline)) void mmq_tile(const sd_mm_job *j, int64_t r, int i0, const int R,
                                                               const int N) {
    __m256 acc[4][8];
    const sd_block_q8_0 *rows[4];
    mmq_tile_ptrs(j, r, R, rows);
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) acc[a][b] = _mm256_setzero_ps();
    mmq_cols(j, rows, i0, acc, R, N, 0, j->cols / BLK / 8 * 8);
    mmq_finish(j, r, i0, rows, acc, R, N);
}

/* All N-tiles of one group of R rows (the rows stay in L1 while later tiles reuse them). */
#define TILE(NT)                                                                                  \
    case NT:                                                                                      \
        if (type == SD_MM_Q8_0) mmq_tile(j, r, i0, R, NT);                                        \
        else mm_tile(j, type, r, i0, R, NT);                                                      \
        break;

TGT static inline __attribute__((always_inline)) void mm_group(const sd_mm_job *j, int type, int64_t r, const int R) {
    const int nmax = type == SD_MM_Q8_0 ? QN_MAX : N_MAX;
    int n = j->n, tiles = (n + nmax - 1) / nmax;
    int base = n / tiles, extra = n % tiles; /* tiles of equal size (+1), decided by n alone */
    for (int t = 0, i0 = 0; t < tiles; t++) {
        int nt = base + (t < extra);
        switch (nt) {
            TILE(1)
            TILE(2)
            TILE(3)
            TILE(4)
            TILE(5)
#if N_MAX >= 6 || QN_MAX >= 6
            TILE(6)
#endif
#if N_MAX >= 7 || QN_MAX >= 7
            TILE(7)
#endif
#if N_MAX >= 8 || QN_MAX >= 8
            TILE(8)
#endif
        default: break;
        }
        i0 += nt;
    }
}

/* Cache blocking for many activations (n >= block_min: prefill chunks, batches of requests, long verify
 * blocks). The small-row path above re-reads a whole tile of activations (N x cols floats, far more than
 * L1) for every group of R weight rows. Here the columns go in panels, and per chunk of rows:
 *   rows in blocks of MB_ROWS (their accumulators wait in `keep`, MB_ACTS x MB_ROWS vectors, in L2)
 *     activations in groups of at most MB_ACTS (equal sizes decided by n alone)
 *       columns in panels of MB_COLS (the block's weights of a panel, MB_ROWS x MB_COLS, stay in L2)
 *         activation tiles of at most MB_N (N x MB_COLS floats stay in L1 for the whole block)
 *           register tiles of MB_R rows: accumulators from keep, the panel's columns, back to keep
 *     then each element's end (mm_finish with R = N = 1).
 * Bitwise the small path's result: each accumulator runs the same FMA sequence over the same columns in
 * the same order, and keeping it in memory between panels changes no bit (batch invariance, tests).
 * Q8_0 has its own blocked product (q8b_tmpl.h: weights packed once per row block, no per-block
 * reductions), since its tiles here could only run the small path's integer sums. */
/* Activations from which the blocked path runs by default, per weight type (INT_MAX: never; a kernel file
 * sets what `bench_kernels --rows` measured for its level, docs/benchmarks.md). */
#ifndef MB_MIN_F16 /* F16 and BF16 */
#define MB_MIN_F16 INT_MAX
#endif
#ifndef MB_MIN_F32
#define MB_MIN_F32 INT_MAX
#endif
#ifndef MB_MIN_Q8
#define MB_MIN_Q8 INT_MAX
#endif
#ifndef MB_R
#define MB_R R_MANY
#endif
#ifndef MB_N
#define MB_N N_MAX
#endif
#ifndef MB_ROWS
#define MB_ROWS 16
#endif
#define MB_ACTS 32
#ifndef MB_COLS
#define MB_COLS 256 /* a multiple of every type's unit */
#endif

TGT static inline __attribute__((always_inline)) void mmb_tile(const sd_mm_job *j, int type, int64_t r, int i0,
                                                               const int R, const int N, int64_t c0, int64_t c1,
                                                               float *keep) {
    V acc[4][8];
    const uint8_t *rows[4];
    const float *xs[8];
    mm_tile_ptrs(j, r, i0, R, N, rows, xs);
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) acc[a][b] = VLOAD(keep + (b * MB_ROWS + a) * VW);
    mm_cols(j, type, rows, xs, acc, R, N, c0, c1, BLK, 1);
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) VSTORE(keep + (b * MB_ROWS + a) * VW, acc[a][b]);
}

TGT static inline __attribute__((always_inline)) void mmb_finish(const sd_mm_job *j, int type, int64_t r, int i,
                                                                 const float *keep) {
    V acc[4][8];
    const uint8_t *rows[4];
    const float *xs[8];
    mm_tile_ptrs(j, r, i, 1, 1, rows, xs);
    acc[0][0] = VLOAD(keep);
    mm_finish(j, type, r, i, rows, xs, acc, 1, 1);
}

#define MBT(NT)                                                                                   \
    case NT:                                                                                      \
        for (; r + R <= re; r += R) mmb_tile(j, type, r, i0, R, NT, c0, c1, keep + ((i0 - g0) * MB_ROWS + r - rb) * VW); \
        break;

/* One activation tile of nt over rows [rb + ..., re) of the block, in register tiles of R rows from r. */
TGT static inline __attribute__((always_inline)) int64_t mmb_rows(const sd_mm_job *j, int type, int64_t rb, int64_t r,
                                                                  int64_t re, const int R, int g0, int i0, int nt,
                                                                  int64_t c0, int64_t c1, float *keep) {
    switch (nt) {
        MBT(1)
        MBT(2)
        MBT(3)
        MBT(4)
        MBT(5)
#if MB_N >= 6
        MBT(6)
#endif
#if MB_N >= 7
        MBT(7)
#endif
#if MB_N >= 8
        MBT(8)
#endif
    default: break;
    }
    return r;
}

TGT static inline __attribute__((always_inline)) void mm_blocked(const sd_mm_job *j, int type, int64_t r0, int64_t r1) {
    float keep[MB_ROWS * MB_ACTS * VW] __attribute__((aligned(64)));
    const int R = MB_R, nmax = MB_N;
    int n = j->n, groups = (n + MB_ACTS - 1) / MB_ACTS;
    int64_t span = j->cols / BLK * BLK; /* the accumulators' columns (the rest: each element's end) */
    for (int64_t rb = r0; rb < r1; rb += MB_ROWS) {
        int64_t re = rb + MB_ROWS < r1 ? rb + MB_ROWS : r1;
        for (int g = 0, g0 = 0; g < groups; g++) {
            int ng = n / groups + (g < n % groups), tiles = (ng + nmax - 1) / nmax;
            memset(keep, 0, sizeof(float) * VW * MB_ROWS * (size_t)ng);
            for (int64_t c0 = 0; c0 < span; c0 += MB_COLS) {
                int64_t c1 = c0 + MB_COLS < span ? c0 + MB_COLS : span;
                for (int t = 0, i0 = g0; t < tiles; t++) {
                    int nt = ng / tiles + (t < ng % tiles);
                    int64_t r = mmb_rows(j, type, rb, rb, re, R, g0, i0, nt, c0, c1, keep);
                    mmb_rows(j, type, rb, r, re, 1, g0, i0, nt, c0, c1, keep);
                    i0 += nt;
                }
            }
            for (int i = g0; i < g0 + ng; i++) /* along the output rows (one activation's rows: 4 KiB apart) */
                for (int64_t r = rb; r < re; r++) mmb_finish(j, type, r, i, keep + ((i - g0) * MB_ROWS + r - rb) * VW);
            g0 += ng;
        }
    }
}

TGT static inline __attribute__((always_inline)) void mm_rows(const sd_mm_job *j, int type, int64_t r0, int64_t r1) {
    int64_t r = r0;
    int block_min = type == SD_MM_F32 ? MB_MIN_F32 : MB_MIN_F16;
    if (type != SD_MM_Q8_0 && (j->path == SD_MM_BLOCKED || (j->path == SD_MM_AUTO && j->n >= block_min))) {
        mm_blocked(j, type, r0, r1);
        return;
    }
    if (type == SD_MM_Q8_0) {
        if (j->n <= 2)
            for (; r + QR_FEW <= r1; r += QR_FEW) mm_group(j, type, r, QR_FEW);
        else
            for (; r + QR_MANY <= r1; r += QR_MANY) mm_group(j, type, r, QR_MANY);
    } else if (j->n <= 2) {
        for (; r + R_FEW <= r1; r += R_FEW) mm_group(j, type, r, R_FEW);
    } else {
        for (; r + R_MANY <= r1; r += R_MANY) mm_group(j, type, r, R_MANY);
    }
    for (; r < r1; r++) mm_group(j, type, r, 1);
}

#include "kernels/cpu/quant_tmpl.h" /* mm_quant: the other quantized types (SD_MM_QUANT) */
#include "kernels/cpu/q8b_tmpl.h"   /* q8b_mm: Q8_0 for many activations */

TGT static void mm_f32(const sd_mm_job *j, int64_t r0, int64_t r1) { mm_rows(j, SD_MM_F32, r0, r1); }
TGT static void mm_f16(const sd_mm_job *j, int64_t r0, int64_t r1) { mm_rows(j, SD_MM_F16, r0, r1); }
TGT static void mm_bf16(const sd_mm_job *j, int64_t r0, int64_t r1) { mm_rows(j, SD_MM_BF16, r0, r1); }
/* Q8_0: the blocked product needs the activation records (xg), which the backend makes from MB_MIN_Q8 on. */
TGT static void mm_q8_0(const sd_mm_job *j, int64_t r0, int64_t r1) {
    if (j->xg && (j->path == SD_MM_BLOCKED || (j->path == SD_MM_AUTO && j->n >= MB_MIN_Q8))) q8b_mm(j, r0, r1);
    else mm_rows(j, SD_MM_Q8_0, r0, r1);
}

/* sd_quant_act_q8 per block of 32 in four 8-float vectors, the same operations in the same order per
 * value: amax (max of |x|; a NaN |x| never wins, as in the reference's `a > amax`), d = amax / 127,
 * x * (1 / d), NaN to 0, clamp to +-127, + (v >= 0 ? 0.5 : -0.5), truncation; then packed to int8 (in
 * range, so no saturation) and summed exactly. */
TGT static void k_quant_act(const float *x, int64_t n, int8_t *q, float *d, int32_t *sums) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256 plus = _mm256_set1_ps(0.5f), minus = _mm256_set1_ps(-0.5f), zero = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        __m256 v[4], m = zero;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + b * 32 + 8 * i);
            m = _mm256_max_ps(_mm256_and_ps(v[i], absmask), m); /* NaN first: m is kept */
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h), db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
        d[b] = db;
        __m256 idv = _mm256_set1_ps(id);
        __m128i w[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m256 t = _mm256_mul_ps(v[i], idv);
            t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q));
            t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
            t = _mm256_add_ps(t, _mm256_blendv_ps(minus, plus, _mm256_cmp_ps(t, zero, _CMP_GE_OQ)));
            __m256i qi = _mm256_cvttps_epi32(t);
            w[i] = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extractf128_si256(qi, 1));
        }
        _mm_storeu_si128((__m128i *)(q + b * 32), _mm_packs_epi16(w[0], w[1]));
        _mm_storeu_si128((__m128i *)(q + b * 32 + 16), _mm_packs_epi16(w[2], w[3]));
        if (sums) {
            const __m128i one = _mm_set1_epi16(1);
            __m128i s = _mm_add_epi32(_mm_add_epi32(_mm_madd_epi16(w[0], one), _mm_madd_epi16(w[1], one)),
                                      _mm_add_epi32(_mm_madd_epi16(w[2], one), _mm_madd_epi16(w[3], one)));
            s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            sums[b] = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)));
        }
    }
}

const sd_cpu_kernels KNAME = {
    .level = KLEVEL,
    .name = KSTR,
    .mm = {mm_f32, mm_f16, mm_bf16, mm_q8_0, mm_quant},
    .block_min = {MB_MIN_F32, MB_MIN_F16, MB_MIN_F16, MB_MIN_Q8, INT_MAX},
    .attn_load_k = k_attn_load_k,
    .attn_load_v = k_attn_load_v,
    .attn_row = k_attn_row,
    .quant_act = k_quant_act,
    .act_groups = k_act_groups,
};
