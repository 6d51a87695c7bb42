/* The SIMD matmul and attention kernels, written once and instantiated per instruction set: a kernel file
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
 *   qwb, q8_wprep(p)    Q8_0: a block of 32 weights prepared for dot products
 *   Q8_XPREP(p)         32 int8 activations at p prepared (once for all rows of a tile)
 *   Q8_DOT(w, xp)       their exact integer dot product as 8 float lanes (partial sums) in a __m256
 *   QR_FEW, QR_MANY, QN_MAX           the register tile of the Q8_0 kernel
 * Optional, instead of Q8_XPREP and Q8_DOT (the Q8_0 blocks then go in groups of 8, see below):
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

TGT static inline __attribute__((always_inline)) void mm_tile(const sd_mm_job *j, int type, int64_t r, int i0,
                                                              const int R, const int N) {
    V acc[4][8];
    const uint8_t *rows[4];
    const float *xs[8];
#pragma GCC unroll 4
    for (int a = 0; a < R; a++) rows[a] = j->w + (size_t)(r + a) * j->row_bytes;
#pragma GCC unroll 8
    for (int b = 0; b < N; b++) xs[b] = j->x + (int64_t)(i0 + b) * j->cols;
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) acc[a][b] = VZERO();
    int64_t cols = j->cols, c = 0;
    const int esz = type == SD_MM_F32 ? 4 : 2;
    for (; c + BLK <= cols; c += BLK) {
#pragma GCC unroll 4
        for (int a = 0; a < R; a++) if (R > 1) PREFETCH(rows[a] + (size_t)(PF_GROUPS * R) * j->row_bytes + (size_t)c * esz, esz * BLK);
#pragma GCC unroll 4
        for (int k = 0; k < BLK / VW; k++) {
            V w[4];
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) wvec(type, rows[a], c, k, VZERO(), &w[a]);
#pragma GCC unroll 8
            for (int b = 0; b < N; b++) {
                V xv = VLOAD(xs[b] + c + k * VW);
#pragma GCC unroll 4
                for (int a = 0; a < R; a++) acc[a][b] = VFMA(w[a], xv, acc[a][b]);
            }
        }
    }
    for (; c + VW <= cols; c += VW) { /* remaining whole vectors, then single columns */
        V w[4];
#pragma GCC unroll 4
        for (int a = 0; a < R; a++) wvec(type, rows[a], c, 0, VZERO(), &w[a]);
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            V xv = VLOAD(xs[b] + c);
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) acc[a][b] = VFMA(w[a], xv, acc[a][b]);
        }
    }
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            float s = VHSUM(acc[a][b]);
            for (int64_t t = c; t < cols; t++) s += sd_row_get(type == SD_MM_F32 ? SD_F32 : type == SD_MM_F16 ? SD_F16 : SD_BF16, rows[a], t) * xs[b][t];
            j->out[(int64_t)(i0 + b) * j->out_stride + r + a] = s;
        }
}

#ifndef Q8_DOT8
/* Q8_0: per block and (row, activation), an exact integer dot product, converted to float and scaled by
 * d_w * d_x into float accumulators. */
TGT static inline __attribute__((always_inline)) void mmq_tile(const sd_mm_job *j, int64_t r, int i0, const int R,
                                                               const int N) {
    __m256 acc[4][8];
    const sd_block_q8_0 *rows[4];
    int64_t nb = j->cols / BLK;
#pragma GCC unroll 4
    for (int a = 0; a < R; a++) rows[a] = (const sd_block_q8_0 *)(j->w + (size_t)(r + a) * j->row_bytes);
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) acc[a][b] = _mm256_setzero_ps();
    for (int64_t k = 0; k < nb; k++) {
        qwb w[4];
        __m256 dw[4];
#pragma GCC unroll 4
        for (int a = 0; a < R; a++) {
            if (R > 1) PREFETCH((const uint8_t *)(rows[a] + k) + (size_t)(PF_GROUPS * R) * j->row_bytes, (int)sizeof(sd_block_q8_0));
            w[a] = q8_wprep(rows[a][k].qs);
            dw[a] = _mm256_set1_ps(_cvtsh_ss(rows[a][k].d));
        }
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            const int8_t *xq = j->xq + (int64_t)(i0 + b) * j->cols + k * BLK;
            __m256 dx = _mm256_set1_ps(j->xd[(int64_t)(i0 + b) * nb + k]);
            __typeof__(Q8_XPREP(xq)) xp = Q8_XPREP(xq);
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) acc[a][b] = _mm256_fmadd_ps(Q8_DOT(w[a], xp), _mm256_mul_ps(dw[a], dx), acc[a][b]);
        }
    }
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) j->out[(int64_t)(i0 + b) * j->out_stride + r + a] = hsum8(acc[a][b]);
}
#else
/* Q8_0 with the blocks in groups of 8 (kernels that define Q8_DOT8): the exact integer sums of 8
 * consecutive blocks go to the 8 lanes of one vector, converted and scaled by d_w * d_x of those blocks
 * (8 weight scales converted at once), so the float work and the accumulator's dependency chain are per
 * 8 blocks instead of per block. Lane l sums the blocks k = l mod 8 in order, then a horizontal sum; the
 * blocks past the last group (cols / 32 mod 8 of them) follow one by one in a scalar sum, added last.
 * Every tile shape runs this same sequence per output element. */
TGT static inline __attribute__((always_inline)) __m256 q8_dscale8(const sd_block_q8_0 *b) {
    /* The 8 F16 scales sit 34 bytes apart: packed in general-purpose registers, then one vector convert.
     * The empty asm keeps the packing scalar (the vectorizer's shuffle version measured slower). */
    uint64_t d0 = b[0].d, d1 = b[1].d, d2 = b[2].d, d3 = b[3].d, d4 = b[4].d, d5 = b[5].d, d6 = b[6].d, d7 = b[7].d;
    __asm__("" : "+r"(d0), "+r"(d1), "+r"(d2), "+r"(d3), "+r"(d4), "+r"(d5), "+r"(d6), "+r"(d7));
    uint64_t lo = d0 | d1 << 16 | d2 << 32 | d3 << 48, hi = d4 | d5 << 16 | d6 << 32 | d7 << 48;
    __asm__("" : "+r"(lo), "+r"(hi));
    return _mm256_cvtph_ps(_mm_insert_epi64(_mm_cvtsi64_si128((long long)lo), (long long)hi, 1));
}

TGT static inline __attribute__((always_inline)) void mmq_tile(const sd_mm_job *j, int64_t r, int i0, const int R,
                                                               const int N) {
    __m256 acc[4][8];
    float tail[4][8];
    const sd_block_q8_0 *rows[4];
    int64_t nb = j->cols / BLK, k = 0;
#pragma GCC unroll 4
    for (int a = 0; a < R; a++) rows[a] = (const sd_block_q8_0 *)(j->w + (size_t)(r + a) * j->row_bytes);
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) acc[a][b] = _mm256_setzero_ps(), tail[a][b] = 0;
    for (; k + 8 <= nb; k += 8) {
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
    for (; k < nb; k++)
#pragma GCC unroll 4
        for (int a = 0; a < R; a++)
#pragma GCC unroll 8
            for (int b = 0; b < N; b++) {
                const int8_t *xq = j->xq + (int64_t)(i0 + b) * j->cols + k * BLK;
                __m128 s = _mm_set_ss(_cvtsh_ss(rows[a][k].d) * j->xd[(int64_t)(i0 + b) * nb + k]);
                __m128 p = _mm_cvtsi32_ss(_mm_setzero_ps(), Q8_DOT1(rows[a] + k, xq, j->xs[(int64_t)(i0 + b) * nb + k]));
                tail[a][b] = _mm_cvtss_f32(_mm_fmadd_ss(p, s, _mm_set_ss(tail[a][b])));
            }
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) j->out[(int64_t)(i0 + b) * j->out_stride + r + a] = hsum8(acc[a][b]) + tail[a][b];
}
#endif

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

TGT static inline __attribute__((always_inline)) void mm_rows(const sd_mm_job *j, int type, int64_t r0, int64_t r1) {
    int64_t r = r0;
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

TGT static void mm_f32(const sd_mm_job *j, int64_t r0, int64_t r1) { mm_rows(j, SD_MM_F32, r0, r1); }
TGT static void mm_f16(const sd_mm_job *j, int64_t r0, int64_t r1) { mm_rows(j, SD_MM_F16, r0, r1); }
TGT static void mm_bf16(const sd_mm_job *j, int64_t r0, int64_t r1) { mm_rows(j, SD_MM_BF16, r0, r1); }
TGT static void mm_q8_0(const sd_mm_job *j, int64_t r0, int64_t r1) { mm_rows(j, SD_MM_Q8_0, r0, r1); }

TGT static float k_dot(const float *a, const float *b, int64_t n) {
    V s0 = VZERO(), s1 = VZERO();
    int64_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        s0 = VFMA(VLOAD(a + i), VLOAD(b + i), s0);
        s1 = VFMA(VLOAD(a + i + VW), VLOAD(b + i + VW), s1);
    }
    for (; i + VW <= n; i += VW) s0 = VFMA(VLOAD(a + i), VLOAD(b + i), s0);
    float s = VHSUM(s0) + VHSUM(s1);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

TGT static void k_axpy(float *y, float a, const float *x, int64_t n) {
    V av = VSET1(a);
    int64_t i = 0;
    for (; i + VW <= n; i += VW) VSTORE(y + i, VFMA(av, VLOAD(x + i), VLOAD(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

TGT static void k_scale(float *y, float a, int64_t n) {
    V av = VSET1(a);
    int64_t i = 0;
    for (; i + VW <= n; i += VW) VSTORE(y + i, VMUL(av, VLOAD(y + i)));
    for (; i < n; i++) y[i] *= a;
}

/* F16 K/V rows: WF16 converts VW halves exactly, then the F32 loops' order. */
TGT static float k_dot_f16(const float *a, const uint16_t *b, int64_t n) {
    V s0 = VZERO(), s1 = VZERO();
    int64_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        s0 = VFMA(VLOAD(a + i), WF16(b + i), s0);
        s1 = VFMA(VLOAD(a + i + VW), WF16(b + i + VW), s1);
    }
    for (; i + VW <= n; i += VW) s0 = VFMA(VLOAD(a + i), WF16(b + i), s0);
    float s = VHSUM(s0) + VHSUM(s1);
    for (; i < n; i++) s += a[i] * sd_fp16_to_fp32(b[i]);
    return s;
}

TGT static void k_axpy_f16(float *y, float a, const uint16_t *x, int64_t n) {
    V av = VSET1(a);
    int64_t i = 0;
    for (; i + VW <= n; i += VW) VSTORE(y + i, VFMA(av, WF16(x + i), VLOAD(y + i)));
    for (; i < n; i++) y[i] += a * sd_fp16_to_fp32(x[i]);
}

const sd_cpu_kernels KNAME = {
    .level = KLEVEL,
    .name = KSTR,
    .mm = {mm_f32, mm_f16, mm_bf16, mm_q8_0, mm_quant},
    .dot = k_dot,
    .axpy = k_axpy,
    .scale = k_scale,
    .dot_f16 = k_dot_f16,
    .axpy_f16 = k_axpy_f16,
};
