/* The SIMD matmul and attention kernels, written once and instantiated per instruction set: a kernel file
 * defines the vector type and operations below, then includes this file (no include guard on purpose).
 *
 * Required macros:
 *   TGT             __attribute__((target(...))) of every function here
 *   V, VW           vector of floats and its lane count (8 or 16; divides 32)
 *   VZERO() VLOAD(p) VSTORE(p, v) VFMA(a, b, c) VMUL(a, b) VSET1(f) VHSUM(v)
 *   WF16(p) WBF16(p)    VW weights from F16 / BF16 bits at p, as floats
 *   WQ8(p)              VW int8 weights at p, as floats (unscaled)
 *   R_FEW, R_MANY       rows per register tile when n <= 2 / when n > 2
 *   N_MAX               most activation vectors per register tile
 *   KNAME, KLEVEL       name of the sd_cpu_kernels table defined here and its level
 *
 * Shape of the work: a tile of R weight rows x N activation vectors keeps R*N vector accumulators in
 * registers; each weight vector is loaded (and converted) once and multiplied into all N activations, so
 * a weight row is streamed from memory once whatever n is. Each accumulator sums its lanes in column
 * order, then a horizontal sum and a scalar tail (columns past the last full vector): the arithmetic of
 * one output element never depends on R, on the tile or on the thread that computes it. */

#include <immintrin.h>

#include "kernels/cpu/simd.h"
#include "kernels/quant.h"

#define BLK 32 /* columns per step: one Q8_0 block, 32 / VW vectors */

TGT static inline __attribute__((always_inline)) void wvec(int type, const uint8_t *row, int64_t c, int k, V d,
                                                           V *out) {
    switch (type) {
    case SD_MM_F32: *out = VLOAD((const float *)row + c + k * VW); break;
    case SD_MM_F16: *out = WF16((const uint16_t *)row + c + k * VW); break;
    case SD_MM_BF16: *out = WBF16((const uint16_t *)row + c + k * VW); break;
    default: *out = VMUL(WQ8(((const sd_block_q8_0 *)row)[c / BLK].qs + k * VW), d); break;
    }
}

TGT static inline __attribute__((always_inline)) void mm_tile(const sd_mm_job *j, int type, int64_t r, int i0,
                                                              const int R, const int N) {
    V acc[4][N_MAX];
    const uint8_t *rows[4];
    const float *xs[N_MAX];
#pragma GCC unroll 4
    for (int a = 0; a < R; a++) rows[a] = j->w + (size_t)(r + a) * j->row_bytes;
#pragma GCC unroll 8
    for (int b = 0; b < N; b++) xs[b] = j->x + (int64_t)(i0 + b) * j->cols;
#pragma GCC unroll 4
    for (int a = 0; a < R; a++)
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) acc[a][b] = VZERO();
    int64_t cols = j->cols, c = 0;
    for (; c + BLK <= cols; c += BLK) {
        V d[4];
#pragma GCC unroll 4
        for (int a = 0; a < R; a++)
            d[a] = type == SD_MM_Q8_0 ? VSET1(_cvtsh_ss(((const sd_block_q8_0 *)rows[a])[c / BLK].d)) : VZERO();
#pragma GCC unroll 4
        for (int k = 0; k < BLK / VW; k++) {
            V w[4];
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) wvec(type, rows[a], c, k, d[a], &w[a]);
#pragma GCC unroll 8
            for (int b = 0; b < N; b++) {
                V xv = VLOAD(xs[b] + c + k * VW);
#pragma GCC unroll 4
                for (int a = 0; a < R; a++) acc[a][b] = VFMA(w[a], xv, acc[a][b]);
            }
        }
    }
    if (type != SD_MM_Q8_0) { /* float types: remaining whole vectors, then single columns */
        for (; c + VW <= cols; c += VW) {
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

/* All N-tiles of one group of R rows (the rows stay in L1 while later tiles reuse them). */
TGT static inline __attribute__((always_inline)) void mm_group(const sd_mm_job *j, int type, int64_t r, const int R) {
    int n = j->n, tiles = (n + N_MAX - 1) / N_MAX;
    int base = n / tiles, extra = n % tiles; /* tiles of equal size (+1), decided by n alone */
    for (int t = 0, i0 = 0; t < tiles; t++) {
        int nt = base + (t < extra);
        switch (nt) {
        case 1: mm_tile(j, type, r, i0, R, 1); break;
        case 2: mm_tile(j, type, r, i0, R, 2); break;
        case 3: mm_tile(j, type, r, i0, R, 3); break;
        case 4: mm_tile(j, type, r, i0, R, 4); break;
        case 5: mm_tile(j, type, r, i0, R, 5); break;
#if N_MAX >= 6
        case 6: mm_tile(j, type, r, i0, R, 6); break;
#endif
#if N_MAX >= 7
        case 7: mm_tile(j, type, r, i0, R, 7); break;
#endif
#if N_MAX >= 8
        case 8: mm_tile(j, type, r, i0, R, 8); break;
#endif
        default: break;
        }
        i0 += nt;
    }
}

TGT static inline __attribute__((always_inline)) void mm_rows(const sd_mm_job *j, int type, int64_t r0, int64_t r1) {
    int64_t r = r0;
    if (j->n <= 2) {
        for (; r + R_FEW <= r1; r += R_FEW) mm_group(j, type, r, R_FEW);
    } else {
        for (; r + R_MANY <= r1; r += R_MANY) mm_group(j, type, r, R_MANY);
    }
    for (; r < r1; r++) mm_group(j, type, r, 1);
}

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

const sd_cpu_kernels KNAME = {
    .level = KLEVEL,
    .name = KSTR,
    .mm = {mm_f32, mm_f16, mm_bf16, mm_q8_0},
    .dot = k_dot,
    .axpy = k_axpy,
    .scale = k_scale,
};
