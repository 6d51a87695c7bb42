/* The cache-blocked Q8_0 product for many activations (n >= the level's MB_MIN_Q8: prefill chunks,
 * batches of requests). Included by mm_tmpl.h once per instruction set, after quant_tmpl.h (the integer
 * vectors of kernels/cpu/qi.h and the activation records, sd_act_group, that the backend builds once per
 * product).
 *
 * The small-row path (mm_tmpl.h, mmq_*) reduces each block's 8 partial sums to one lane for every
 * (row, activation) pair: the reduction costs as much as the products. Here a block of Q8B_ROWS weight
 * rows is packed once, each group of 8 blocks (256 columns) transposed in 32-bit words (word k of vector
 * v = word v of block k), which is how the activation records are interleaved too: one byte-dot of
 * vector v with the activation's vector v then adds to all 8 block sums at once, lane k holding block
 * k's, and no reduction is left. Per group of 8 blocks and (row, activation) that is 8 byte-dots (one
 * vpdpbusd each with VNNI, else vpsignb + vpmaddubsw + vpmaddwd + vpaddd), then as in the small path
 * acc += float(S) * (d_w * d_x) with the 8 blocks' scales in the lanes.
 *
 *   rows in blocks of Q8B_ROWS, packed (pk) once per block when their full groups fit (up to 4096
 *   columns), else once per activation group and panel of columns
 *     activations in groups of at most Q8B_ACTS (their 8-lane accumulators wait in keep)
 *       columns in panels of whole groups (all of them when they fit in pk)
 *         activation tiles of at most Q8B_N (their records stay in L1 across the block's rows)
 *           register tiles of Q8B_R rows x the tile's activations: int32 sums in registers
 *     then each element's end, mmq_finish: the horizontal sum and the blocks past the last full group.
 *
 * Bitwise the small path's result: the integer sums are exact whichever instructions make them, and every
 * accumulator lane takes the same float operations in the same group order (tests/test_kernels.c
 * test_matmul_blocked_paths). With VNNI the weights are packed offset to unsigned (w ^ 0x80 = w + 128)
 * and 128 times the activation block's level sum is taken back off, as in the small path; without it
 * vpmaddubsw takes |w| and x with w's sign (pairs at most 2 * 128 * 127, no saturation). */

#ifndef Q8B_R
#define Q8B_R 2 /* rows per register tile */
#endif
#ifndef Q8B_N
#define Q8B_N 4 /* activations per register tile */
#endif
#define Q8B_ROWS 16  /* rows per block (SD_MM_ROW_ALIGN: a thread's rows are whole blocks) */
#define Q8B_ACTS 64  /* activations per group: keep is Q8B_ACTS x Q8B_ROWS x 8 floats (32 KiB) */
#define Q8B_PACK 256 /* packed groups: Q8B_ROWS rows x 4096 columns (72 KiB) */
#ifndef Q8B_PANEL
#define Q8B_PANEL 4 /* groups a register tile runs through before the next activation tile */
#endif

/* Keeps a vector in registers (GCC otherwise folds a load into each use when registers run short). */
#ifndef Q8B_PIN
#ifdef QI_HALVES
#define Q8B_PIN(v) __asm__("" : "+x"((v).l), "+x"((v).h))
#else
#define Q8B_PIN(v) __asm__("" : "+v"(v))
#endif
#endif

/* One packed group of 8 blocks of one row. */
typedef struct q8b_grp {
    int8_t q[256]; /* the levels transposed in words (with VNNI offset to unsigned: w ^ 0x80) */
    float d[8];    /* the 8 blocks' scales */
} q8b_grp;

TGT QI_AI void q8b_pack(const sd_block_q8_0 *b, q8b_grp *g) {
    qi m[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) m[k] = qi_load(b[k].qs);
    qi_transpose8(m);
#pragma GCC unroll 8
    for (int v = 0; v < 8; v++) {
#ifdef QI_VNNI
        m[v] = qi_sub8(m[v], qi_set8(0x80)); /* w - (-128) = w + 128: the byte w ^ 0x80 */
#endif
        qi_store(g->q + 32 * v, m[v]);
    }
    _mm256_storeu_ps(g->d, q8_dscale8(b));
}

/* Packs rows [rb, re) x groups [p0, p1) into pk, row r's group p at pk[(r - rb) * (p1 - p0) + p - p0].
 * pf: also prefetch the same bytes of the next block's rows (up to rend), which then arrive from memory
 * while this block computes instead of stalling its packing. */
TGT QI_AI void q8b_pack_panel(const sd_mm_job *j, int64_t rb, int64_t re, int64_t p0, int64_t p1, q8b_grp *pk,
                              int64_t rend) {
    const size_t span = (size_t)(p1 - p0) * 8 * sizeof(sd_block_q8_0);
    for (int64_t r = rb; r < re; r++) {
        const sd_block_q8_0 *row = (const sd_block_q8_0 *)(j->w + (size_t)r * j->row_bytes);
        for (int64_t p = p0; p < p1; p++) q8b_pack(row + 8 * p, pk++);
        if (r + Q8B_ROWS < rend)
            for (size_t o = 0; o < span; o += 64)
                _mm_prefetch((const char *)(row + 8 * p0) + (size_t)Q8B_ROWS * j->row_bytes + o, _MM_HINT_T1);
    }
}

/* Register tile: packed rows w[0..R) (rstride groups apart) x activations [i0, i0 + N) over groups
 * [p0, p1), into the accumulators keep[(b * Q8B_ROWS + a) * 8] of activation b and row a. */
TGT QI_AI void q8b_tile(const sd_mm_job *j, const q8b_grp *w, int64_t rstride, int i0, const int R, const int N,
                        int64_t p0, int64_t p1, float *keep) {
    for (int64_t p = p0; p < p1; p++, w++) {
        const sd_act_group *x = j->xg + p * j->n + i0;
        qi S[Q8B_R][Q8B_N];
#pragma GCC unroll 4
        for (int a = 0; a < R; a++)
#pragma GCC unroll 8
            for (int b = 0; b < N; b++) S[a][b] = qi_zero();
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) {
            qi wv[Q8B_R], wa[Q8B_R];
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) {
                wv[a] = qi_load(w[a * rstride].q + 32 * v);
#ifndef QI_VNNI
                wa[a] = qi_abs8(wv[a]);
#else
                wa[a] = wv[a];
#endif
                Q8B_PIN(wa[a]); /* each weight vector loaded once for the N products */
            }
#pragma GCC unroll 8
            for (int b = 0; b < N; b++) {
                qi xv = qi_load(x[b].q + 32 * v);
                if (R > 1) Q8B_PIN(xv); /* and each activation vector once for the R rows */
#pragma GCC unroll 4
                for (int a = 0; a < R; a++) {
#ifdef QI_VNNI
                    S[a][b] = qi_dot_acc(S[a][b], wa[a], xv);
#else
                    S[a][b] = qi_dot_acc(S[a][b], wa[a], qi_sign8(xv, wv[a]));
#endif
                }
            }
        }
        __m256 dw[Q8B_R];
#pragma GCC unroll 4
        for (int a = 0; a < R; a++) dw[a] = _mm256_loadu_ps(w[a * rstride].d);
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            __m256 dx = _mm256_loadu_ps(x[b].d);
#ifdef QI_VNNI
            qi off = qi_slli32(qi_load(x[b].s), 7);
#endif
#pragma GCC unroll 4
            for (int a = 0; a < R; a++) {
                float *k = keep + (b * Q8B_ROWS + a) * 8;
#ifdef QI_VNNI
                __m256 s = qi_cvt(qi_sub32(S[a][b], off));
#else
                __m256 s = qi_cvt(S[a][b]);
#endif
                _mm256_store_ps(k, _mm256_fmadd_ps(s, _mm256_mul_ps(dw[a], dx), _mm256_load_ps(k)));
            }
        }
    }
}

#define Q8B_TILE(NT)                                                                              \
    case NT:                                                                                      \
        for (; a + R <= nr; a += R)                                                               \
            q8b_tile(j, pk + a * ps, ps, i0, R, NT, p0, p1, keep + ((i0 - a0) * Q8B_ROWS + a) * 8); \
        break;

/* One activation tile of nt (from i0; its group starts at a0) over block rows [a, nr) in register tiles
 * of R rows; returns the first row left. */
TGT QI_AI int q8b_rows_tile(const sd_mm_job *j, const q8b_grp *pk, int64_t ps, int a, int nr, const int R, int a0,
                            int i0, int nt, int64_t p0, int64_t p1, float *keep) {
    switch (nt) {
        Q8B_TILE(1)
        Q8B_TILE(2)
        Q8B_TILE(3)
#if Q8B_N >= 4
        Q8B_TILE(4)
#endif
#if Q8B_N >= 5
        Q8B_TILE(5)
#endif
#if Q8B_N >= 6
        Q8B_TILE(6)
#endif
    default: break;
    }
    return a;
}

TGT static void q8b_mm(const sd_mm_job *j, int64_t r0, int64_t r1) {
    q8b_grp pk[Q8B_PACK] __attribute__((aligned(64)));
    float keep[Q8B_ACTS * Q8B_ROWS * 8] __attribute__((aligned(64)));
    const int64_t ng = j->cols / 256, pg = ng < Q8B_PACK / Q8B_ROWS ? ng : Q8B_PACK / Q8B_ROWS;
    const int n = j->n, groups = (n + Q8B_ACTS - 1) / Q8B_ACTS;
    for (int64_t rb = r0; rb < r1; rb += Q8B_ROWS) {
        int nr = (int)(rb + Q8B_ROWS < r1 ? Q8B_ROWS : r1 - rb);
        for (int g = 0, a0 = 0; g < groups; g++) {
            int na = n / groups + (g < n % groups), tiles = (na + Q8B_N - 1) / Q8B_N;
            memset(keep, 0, sizeof(float) * 8 * Q8B_ROWS * (size_t)na);
            for (int64_t p0 = 0; p0 < ng; p0 += pg) {
                int64_t p1 = p0 + pg < ng ? p0 + pg : ng, ps = p1 - p0;
                if (g == 0 || pg < ng) q8b_pack_panel(j, rb, rb + nr, p0, p1, pk, g == groups - 1 ? r1 : rb);
                for (int64_t c0 = p0; c0 < p1; c0 += Q8B_PANEL) { /* a tile's records and rows stay in L1 */
                    int64_t c1 = c0 + Q8B_PANEL < p1 ? c0 + Q8B_PANEL : p1;
                    for (int t = 0, i0 = a0; t < tiles; t++) {
                        int nt = na / tiles + (t < na % tiles);
                        int a = q8b_rows_tile(j, pk + (c0 - p0), ps, 0, nr, Q8B_R, a0, i0, nt, c0, c1, keep);
                        q8b_rows_tile(j, pk + (c0 - p0), ps, a, nr, 1, a0, i0, nt, c0, c1, keep);
                        i0 += nt;
                    }
                }
            }
            for (int i = a0; i < a0 + na; i++) /* each element's end: the horizontal sum and the last blocks */
                for (int a = 0; a < nr; a++) {
                    __m256 acc[4][8];
                    const sd_block_q8_0 *rows[4];
                    mmq_tile_ptrs(j, rb + a, 1, rows);
                    acc[0][0] = _mm256_load_ps(keep + ((i - a0) * Q8B_ROWS + a) * 8);
                    mmq_finish(j, rb + a, i, rows, acc, 1, 1);
                }
            a0 += na;
        }
    }
}
