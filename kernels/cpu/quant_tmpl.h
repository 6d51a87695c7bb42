/* The SD_MM_QUANT kernels: GGML's quantized types beyond Q8_0 (Q4_0 ... Q6_K, IQ4_NL, IQ4_XS) times the
 * activations quantized per block of 32 as for Q8_0 (int8 levels, a float scale and the level sum per
 * block, k_quant_act below, in records by group of 256 columns: sd_act_group), in integer arithmetic.
 * Included by mm_tmpl.h once per instruction set (kernels/cpu/qi.h gives the 32-byte integer vectors of
 * that set).
 *
 * Work unit: a group of 256 columns, one K-quant super-block or 8 blocks of 32, which is 8 activation
 * blocks. A weight group is unpacked once (prep: the 32 weight bytes of each activation block as unsigned
 * magnitudes, their signs where the levels are signed, int16 scales for the types that scale per 16, and
 * 8 float lanes of scale d_w and of offset per activation block), transposed in 32-bit words so that the
 * activations, interleaved the same way in their records, meet it with one byte-dot per vector that adds
 * to all 8 block sums, and then dotted with up to QN activation vectors held in registers (so the n-row
 * product reads a weight block once for n <= QN; more activations go in chunks over blocks of rows, whose
 * weights come from the cache again). Per activation block an exact int32 sum S (vpmaddubsw + vpmaddwd, or
 * vpdpbusd), the 8 sums of a group in the 8 lanes of a vector, then in float: acc += S * (d_w * d_x),
 * plus, for the types with a minimum, offset times d_x * the activation block's level sum (ds in the
 * record; for Q2_K's per-16 minimums, an integer sum of min * x). Signed levels take vpsignb: |w| times x with w's
 * sign. Q4_0 and Q5_0 keep their levels unsigned (q + 8, q + 16) and take 8 or 16 times the activation sum
 * off in integers.
 *
 * Per output element the order is fixed by the column alone (lanes in group order, then a horizontal sum),
 * so results do not depend on n, on the tile or on the thread. */

#include "kernels/cpu/qi.h"

#ifndef QN
#define QN 5 /* activation vectors dotted with one unpacked weight group, in registers (3 to 6) */
#endif
#ifndef QC
#define QC(N) ((N) == 1 ? 2 : 1) /* independent int32 sums per activation (<= 4): shorter dependency chains */
#endif

/* How a type's weights meet the activations. */
enum {
    QK_U,   /* unsigned levels, one scale per 32 */
    QK_S,   /* signed levels, one scale per 32 */
    QK_S16, /* signed levels, int16 scales per 16 (k) */
    QK_U16, /* unsigned levels, int16 scales per 16 (k) and minimums per 16 (k2): Q2_K */
};
enum { QM_NONE, QM_XS, QM_DOT }; /* the minimum term: none, offset * level sum, offset * sum(k2 * x) */

QI_AI int qkind(int t) {
    switch (t) {
    case SD_IQ4_NL: case SD_IQ4_XS: return QK_S;
    case SD_Q3_K: case SD_Q6_K: return QK_S16;
    case SD_Q2_K: return QK_U16;
    default: return QK_U;
    }
}

QI_AI int qmin(int t) {
    switch (t) {
    case SD_Q4_1: case SD_Q5_1: case SD_Q4_K: case SD_Q5_K: return QM_XS;
    case SD_Q2_K: return QM_DOT;
    default: return QM_NONE;
    }
}

/* log2 of the integer offset of unsigned levels (Q4_0: q + 8, Q5_0: q + 16), 0 for none. */
QI_AI int qzero_shift(int t) { return t == SD_Q4_0 ? 3 : t == SD_Q5_0 ? 4 : 0; }

/* An unpacked group. Unpacked, w[c] and s[c] hold block c; a whole group is then transposed in dwords
 * (qgrp_transpose), so that dword c of w[v] is dword v of block c: with the activations in the same
 * order (sd_act_group), one byte-dot per vector adds to all 8 block sums at once, lane c holding
 * block c's, and no per-activation reduction is needed. */
typedef struct qgrp {
    qi w[8];  /* the weight levels, unsigned or |level| */
    qi s[8];  /* the signed levels (QK_S, QK_S16) */
    qi k[2];  /* QK_S16, QK_U16: int16 scale of each block's first 16 columns (dwords 0-3), then last 16 */
    qi k2[2]; /* QK_U16: the same for the minimums */
    __m256 dw, mw; /* per block: weight scale, offset (QM_XS, QM_DOT) */
} qgrp;

/* The F16 at byte offset off of each of nb (<= 8) blocks bb bytes apart, as 8 floats (0 past nb). Packed
 * in general-purpose registers, then one vector conversion (8 narrow stores and a wide load would stall
 * store forwarding). */
TGT QI_AI __m256 f16_gather8(const uint8_t *p, int bb, int off, int nb) {
    uint64_t lo = 0, hi = 0;
#pragma GCC unroll 8
    for (int i = 0; i < nb; i++) {
        uint16_t h;
        memcpy(&h, p + (size_t)i * bb + off, 2);
        if (i < 4) lo |= (uint64_t)h << (16 * i);
        else hi |= (uint64_t)h << (16 * (i - 4));
    }
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)hi, (long long)lo));
}

/* ---- prep: one group of nb (<= 8) blocks of 32 columns at p */

TGT QI_AI void prep_legacy(const uint8_t *p, int nb, const int t, qgrp *g) {
    const int bb = sd_quant_block_bytes(t);
#pragma GCC unroll 8
    for (int i = 0; i < nb; i++) {
        const uint8_t *b = p + (size_t)i * bb;
        switch (t) {
        case SD_Q4_0: {
            const sd_block_q4_0 *x = (const sd_block_q4_0 *)b;
            g->w[i] = qi_nib16(x->qs);
        } break;
        case SD_Q4_1: {
            const sd_block_q4_1 *x = (const sd_block_q4_1 *)b;
            g->w[i] = qi_nib16(x->qs);
        } break;
        case SD_Q5_0: {
            const sd_block_q5_0 *x = (const sd_block_q5_0 *)b;
            uint32_t h;
            memcpy(&h, x->qh, 4);
            g->w[i] = qi_or(qi_nib16(x->qs), qi_bits32(h, 16));
        } break;
        case SD_Q5_1: {
            const sd_block_q5_1 *x = (const sd_block_q5_1 *)b;
            uint32_t h;
            memcpy(&h, x->qh, 4);
            g->w[i] = qi_or(qi_nib16(x->qs), qi_bits32(h, 16));
        } break;
        case SD_IQ4_NL: {
            const sd_block_iq4_nl *x = (const sd_block_iq4_nl *)b;
            g->s[i] = qi_lut16(sd_iq4nl_values, qi_nib16(x->qs));
        } break;
        default: break;
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* a partial group's missing blocks */
        if (i >= nb) g->w[i] = g->s[i] = qi_zero();
    g->dw = f16_gather8(p, bb, 0, nb); /* d, then m where there is one (offset 2) */
    if (qmin(t) == QM_XS) g->mw = f16_gather8(p, bb, 2, nb);
}

/* Q4_K and Q5_K: sub-block c (32 columns) takes the low nibbles of qs[32 * (c / 2) ...] for even c, the
 * high ones for odd c; Q5_K's fifth bit of column l of sub-block c is bit c of qh[l]. The 6-bit scales
 * and minimums (sd_k4_scale_min's layout) are unpacked 4 at a time in 32-bit words: bytes 0-3 hold scales
 * 0-3 and the top bits of scales 4-7, bytes 4-7 the same for the minimums, bytes 8-11 the low nibbles of
 * scales 4-7 and (high nibbles) of minimums 4-7. */
TGT QI_AI void prep_k4(const uint16_t *dd, const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, qgrp *g) {
    uint32_t w[3];
    memcpy(w, scales, 12);
    uint32_t sc_hi = (w[2] & 0x0f0f0f0fu) | ((w[0] >> 6) & 0x03030303u) << 4;
    uint32_t m_hi = ((w[2] >> 4) & 0x0f0f0f0fu) | ((w[1] >> 6) & 0x03030303u) << 4;
    __m256 sc = qi_u8x8_ps((w[0] & 0x3f3f3f3fu) | (uint64_t)sc_hi << 32);
    __m256 m = qi_u8x8_ps((w[1] & 0x3f3f3f3fu) | (uint64_t)m_hi << 32);
    g->dw = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(dd[0])), sc); /* d * sc and -(dmin * m), as sd_k4_affine */
    g->mw = _mm256_mul_ps(_mm256_set1_ps(-_cvtsh_ss(dd[1])), m);
    qi h = qh ? qi_load(qh) : qi_zero();
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        qi v = qi_load(qs + 32 * i);
        g->w[2 * i] = qi_and(v, qi_set8(15));
        g->w[2 * i + 1] = qi_and(qi_srli16(v, 4), qi_set8(15));
        if (qh) {
            qi b0 = qi_set8(1 << (2 * i)), b1 = qi_set8(1 << (2 * i + 1));
            g->w[2 * i] = qi_or(g->w[2 * i], qi_and(qi_cmpeq8(qi_and(h, b0), b0), qi_set8(16)));
            g->w[2 * i + 1] = qi_or(g->w[2 * i + 1], qi_and(qi_cmpeq8(qi_and(h, b1), b1), qi_set8(16)));
        }
    }
}

/* Q6_K: per half of 128 columns, sub-block s (0-3) takes the nibble of ql[32 * (s & 1) + l] (low for
 * s < 2) and bits [2s, 2s + 2) of qh[l], minus 32; scales per 16 columns. */
TGT QI_AI void prep_q6_K(const sd_block_q6_K *b, qgrp *g) {
    g->dw = _mm256_set1_ps(_cvtsh_ss(b->d));
    qi lo4 = qi_set8(15), hi2 = qi_set8(0x30), off = qi_set8(32);
#pragma GCC unroll 2
    for (int half = 0; half < 2; half++) {
        qi l0 = qi_load(b->ql + 64 * half), l1 = qi_load(b->ql + 64 * half + 32), h = qi_load(b->qh + 32 * half);
        qi q[4] = {
            qi_or(qi_and(l0, lo4), qi_and(qi_slli16(h, 4), hi2)),
            qi_or(qi_and(l1, lo4), qi_and(qi_slli16(h, 2), hi2)),
            qi_or(qi_and(qi_srli16(l0, 4), lo4), qi_and(h, hi2)),
            qi_or(qi_and(qi_srli16(l1, 4), lo4), qi_and(qi_srli16(h, 2), hi2)),
        };
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            int c = 4 * half + s;
            g->s[c] = qi_sub8(q[s], off);
        }
    }
    __m128i sc = _mm_loadu_si128((const __m128i *)b->scales);
    g->k[0] = qi_k16_pairs(sc, 0), g->k[1] = qi_k16_pairs(sc, 1);
}

/* Q3_K: Q2_K's order; the third bit of column l in sub-block c is bit c of hmask[l] (clear: minus 4). */
TGT QI_AI void prep_q3_K(const sd_block_q3_K *b, qgrp *g) {
    g->dw = _mm256_set1_ps(_cvtsh_ss(b->d));
    qi hm = qi_load(b->hmask), three = qi_set8(3), four = qi_set8(4);
#pragma GCC unroll 2
    for (int half = 0; half < 2; half++) {
        qi v = qi_load(b->qs + 32 * half);
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            int c = 4 * half + s;
            qi bit = qi_set8(1 << c);
            qi hi = qi_and(qi_cmpeq8(qi_and(hm, bit), bit), four);
            g->s[c] = qi_sub8(qi_or(qi_and(qi_srli16(v, 2 * s), three), hi), four);
        }
    }
    int8_t sc[16];
    for (int k = 0; k < 16; k++) sc[k] = (int8_t)sd_q3k_scale(b->scales, k);
    __m128i scv = _mm_loadu_si128((const __m128i *)sc);
    g->k[0] = qi_k16_pairs(scv, 0), g->k[1] = qi_k16_pairs(scv, 1);
}

/* Q2_K: column l of sub-block c = 4 * half + s is bits [2s, 2s + 2) of qs[32 * half + l]; per 16 columns
 * a 4-bit scale (low) and minimum (high). */
TGT QI_AI void prep_q2_K(const sd_block_q2_K *b, qgrp *g) {
    g->dw = _mm256_set1_ps(_cvtsh_ss(b->d));
    g->mw = _mm256_set1_ps(-_cvtsh_ss(b->dmin));
#pragma GCC unroll 2
    for (int half = 0; half < 2; half++) {
        qi v = qi_load(b->qs + 32 * half);
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            int c = 4 * half + s;
            g->w[c] = qi_and(qi_srli16(v, 2 * s), qi_set8(3));
        }
    }
    __m128i sm = _mm_loadu_si128((const __m128i *)b->scales), lo = _mm_set1_epi8(15);
    __m128i sc = _mm_and_si128(sm, lo), mn = _mm_and_si128(_mm_srli_epi16(sm, 4), lo);
    g->k[0] = qi_k16_pairs(sc, 0), g->k[1] = qi_k16_pairs(sc, 1);
    g->k2[0] = qi_k16_pairs(mn, 0), g->k2[1] = qi_k16_pairs(mn, 1);
}

TGT QI_AI void prep_iq4_xs(const sd_block_iq4_xs *b, qgrp *g) {
    float d = _cvtsh_ss(b->d), dw[8];
#pragma GCC unroll 8
    for (int c = 0; c < 8; c++) {
        dw[c] = d * (float)sd_iq4xs_scale(b, c);
        g->s[c] = qi_lut16(sd_iq4nl_values, qi_nib16(b->qs + 16 * c));
    }
    g->dw = _mm256_loadu_ps(dw);
}

TGT QI_AI void qprep(const uint8_t *p, int nb, const int t, qgrp *g) {
    switch (t) {
    case SD_Q2_K: prep_q2_K((const sd_block_q2_K *)p, g); break;
    case SD_Q3_K: prep_q3_K((const sd_block_q3_K *)p, g); break;
    case SD_Q4_K: {
        const sd_block_q4_K *b = (const sd_block_q4_K *)p;
        prep_k4(&b->d, b->scales, b->qs, NULL, g);
    } break;
    case SD_Q5_K: {
        const sd_block_q5_K *b = (const sd_block_q5_K *)p;
        prep_k4(&b->d, b->scales, b->qs, b->qh, g);
    } break;
    case SD_Q6_K: prep_q6_K((const sd_block_q6_K *)p, g); break;
    case SD_IQ4_XS: prep_iq4_xs((const sd_block_iq4_xs *)p, g); break;
    default: prep_legacy(p, nb, t, g); break;
    }
}

/* Q4_0, Q4_1 and IQ4_NL straight into the transposed order: the 16 packed bytes of blocks i and i + 4 in
 * the halves of one vector, a 4 x 4 transpose of words within each half (word v of block c to word c of
 * vector v), then the low nibbles are word v of the unpacked blocks and the high nibbles word v + 4. */
TGT QI_AI void prep_nib_t(const uint8_t *p, const int t, qgrp *g) {
    const int bb = sd_quant_block_bytes(t), off = t == SD_Q4_1 ? 4 : 2;
    qi y[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) y[i] = qi_load2(p + (size_t)i * bb + off, p + (size_t)(i + 4) * bb + off);
    qi_t4x2(y);
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
        qi lo = qi_and(y[v], qi_set8(15)), hi = qi_and(qi_srli16(y[v], 4), qi_set8(15));
        if (t == SD_IQ4_NL) {
            g->s[v] = qi_lut16(sd_iq4nl_values, lo), g->s[v + 4] = qi_lut16(sd_iq4nl_values, hi);
            g->w[v] = qi_abs8(g->s[v]), g->w[v + 4] = qi_abs8(g->s[v + 4]);
        } else {
            g->w[v] = lo, g->w[v + 4] = hi;
        }
    }
    g->dw = f16_gather8(p, bb, 0, 8);
    if (qmin(t) == QM_XS) g->mw = f16_gather8(p, bb, 2, 8);
}

/* A whole group unpacked and transposed (see qgrp); the magnitudes of signed levels taken after. */
TGT QI_AI void qprep_t(const uint8_t *p, const int t, qgrp *g) {
    if (t == SD_Q4_0 || t == SD_Q4_1 || t == SD_IQ4_NL) {
        prep_nib_t(p, t, g);
        return;
    }
    qprep(p, 8, t, g);
    if (qkind(t) == QK_S || qkind(t) == QK_S16) {
        qi_transpose8(g->s);
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) g->w[v] = qi_abs8(g->s[v]);
    } else {
        qi_transpose8(g->w);
    }
}

/* acc += the group's products from its exact block sums S (lane c: block c) and, for QM_DOT, the integer
 * minimum sums M, with the activation blocks' scales and level sums from their record a (0 past a row's
 * end, so the missing lanes of a partial group add nothing). */
TGT QI_AI void qfinish(const qgrp *g, const int t, qi S, qi M, const sd_act_group *a, __m256 *acc) {
    __m256 dx = _mm256_loadu_ps(a->d);
    if (qzero_shift(t)) S = qi_sub32(S, qi_slli32(qi_load(a->s), qzero_shift(t)));
    *acc = _mm256_fmadd_ps(qi_cvt(S), _mm256_mul_ps(g->dw, dx), *acc);
    if (qmin(t) == QM_XS) *acc = _mm256_fmadd_ps(g->mw, _mm256_loadu_ps(a->ds), *acc);
    if (qmin(t) == QM_DOT) *acc = _mm256_fmadd_ps(qi_cvt(M), _mm256_mul_ps(g->mw, dx), *acc);
}

/* How many vpmaddubsw results (int16 pairs) of a type may be added in int16 before they are widened: a
 * pair is at most 2 * 127 * the largest weight magnitude (15: 3810, 31 or Q6_K's 32: 8128), so 8 or 4 of
 * them stay below 32767; one widening (vpmaddwd) then serves them all. The runs also line up with the
 * per-16 scales (k[v / 4]). */
QI_AI int qrun(int t) {
    switch (t) {
    case SD_Q4_0: case SD_Q4_1: case SD_Q4_K: return 8;
    case SD_IQ4_NL: case SD_IQ4_XS: return 1;
    default: return 4;
    }
}

/* A transposed group times N activation vectors (cols apart) in the same order: each weight vector is
 * taken once into a register for all N products. With VNNI the unsigned/signed byte dot is one vpdpbusd
 * per vector; otherwise (and for the types scaled per 16) the vpmaddubsw pairs of a run (qrun) are summed
 * in int16 and widened once. A lone activation sums in two chains (shorter dependency chains). The
 * integer sums are exact, so the result is the same for every N and every order. */
TGT QI_AI void qdot_t(const qgrp *g, const int t, const int N, const sd_act_group *a, __m256 *acc) {
    const int C = QC(N), R = qrun(t);
#ifdef QI_VNNI
    const int direct = qkind(t) == QK_U || qkind(t) == QK_S;
#else
    const int direct = 0;
#endif
    qi S[4 * QN], M[QN], P[QN], P2[QN];
#pragma GCC unroll 32
    for (int b = 0; b < N * C; b++) S[b] = qi_zero();
#pragma GCC unroll 8
    for (int b = 0; b < N; b++) M[b] = qi_zero();
#pragma GCC unroll 8
    for (int v = 0; v < 8; v++) {
        const int sgn = qkind(t) == QK_S || qkind(t) == QK_S16;
        qi w = g->w[v], sg = sgn ? g->s[v] : w;
#pragma GCC unroll 8
        for (int b = 0; b < N; b++) {
            qi x = qi_load(a[b].q + 32 * v), *sb = &S[b * C + (v & (C - 1))];
            if (sgn) x = qi_sign8(x, sg);
            if (direct) {
                *sb = qi_dot_acc(*sb, w, x);
                continue;
            }
            qi p = qi_pairs(w, x);
            P[b] = v % R ? qi_add16(P[b], p) : p;
            if (qkind(t) == QK_U16) {
                qi p2 = qi_pairs(qi_set8(1), x);
                P2[b] = v % R ? qi_add16(P2[b], p2) : p2;
            }
            if (v % R == R - 1) {
                int k16 = qkind(t) == QK_S16 || qkind(t) == QK_U16;
                *sb = qi_widen_acc(*sb, P[b], k16 ? g->k[v / 4] : qi_k16(1, 1));
                if (qkind(t) == QK_U16) M[b] = qi_widen_acc(M[b], P2[b], g->k2[v / 4]);
            }
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < N; b++) {
        qi sum = S[b * C];
#pragma GCC unroll 4
        for (int c = 1; c < C; c++) sum = qi_add32(sum, S[b * C + c]);
        qfinish(g, t, sum, M[b], &a[b], &acc[b]);
    }
}

/* A partial group (a 32-column type's last nb < 8 blocks of a row), not transposed, times one activation
 * vector's blocks in their natural order: each block's partial sums reduced to one lane. */
TGT QI_AI void qdot(const qgrp *g, const int t, const int nb, const sd_act_group *a, __m256 *acc) {
    qi s[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        s[i] = qi_zero();
        if (i >= nb) continue;
        qi x = qi_load(a->q + 32 * i);
        s[i] = qkind(t) == QK_S ? qi_dot(qi_abs8(g->s[i]), qi_sign8(x, g->s[i])) : qi_dot(g->w[i], x);
    }
    qfinish(g, t, qi_sum8(s), qi_zero(), a, acc);
}

/* Row r times activations [i0, i0 + N) (N <= QN, a constant): every group unpacked once and dotted with
 * each of them, the unpacked group and the N sums in registers. */
TGT QI_AI void mmqk_tile(const sd_mm_job *j, int64_t r, int i0, const int N, const int t) {
    const int64_t nblk = j->cols / 32, ngrp = (nblk + 7) / 8;
    const size_t gbytes = (size_t)sd_quant_block_bytes(t) * (size_t)(256 / sd_quant_block(t));
    const uint8_t *row = j->w + (size_t)r * j->row_bytes;
    qgrp g;
    __m256 acc[QN];
#pragma GCC unroll 8
    for (int b = 0; b < N; b++) acc[b] = _mm256_setzero_ps();
    for (int64_t gi = 0; gi < ngrp; gi++) {
        int nb = nblk - 8 * gi < 8 ? (int)(nblk - 8 * gi) : 8;
        const sd_act_group *a = j->xg + gi * j->n + i0;
        if (nb == 8) {
            qprep_t(row + (size_t)gi * gbytes, t, &g);
            qdot_t(&g, t, N, a, acc);
        } else if (sd_quant_block(t) == SD_QK) {
            qprep(row + (size_t)gi * gbytes, nb, t, &g);
#pragma GCC unroll 8
            for (int b = 0; b < N; b++) qdot(&g, t, nb, &a[b], &acc[b]);
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < N; b++) j->out[(int64_t)(i0 + b) * j->out_stride + r] = hsum8(acc[b]);
}

#define MMQ_TILE(N)                                                                               \
    case N:                                                                                       \
        for (int64_t r = rb; r < re; r++) mmqk_tile(j, r, i0, N, t);                              \
        break;

/* Rows [r0, r1) for weights of type t. Up to QN activations are one register tile and the weights are
 * streamed once. More go in equal chunks of at most QN (sizes decided by n alone) over blocks of 16 rows,
 * so that a block's weights, unpacked again for each chunk, come from the cache. */
TGT QI_AI void mmq_rows(const sd_mm_job *j, int64_t r0, int64_t r1, const int t) {
    const int chunks = (j->n + QN - 1) / QN;
    const int64_t rstep = chunks == 1 ? r1 - r0 : 16;
    for (int64_t rb = r0; rb < r1; rb += rstep) {
        int64_t re = rb + rstep < r1 ? rb + rstep : r1;
        for (int c = 0, i0 = 0; c < chunks; c++) {
            int m = j->n / chunks + (c < j->n % chunks);
            switch (m) {
                MMQ_TILE(1)
                MMQ_TILE(2)
                MMQ_TILE(3)
#if QN >= 4
                MMQ_TILE(4)
#endif
#if QN >= 5
                MMQ_TILE(5)
#endif
#if QN >= 6
                MMQ_TILE(6)
#endif
            default: break;
            }
            i0 += m;
        }
    }
}

#define MMQ_CASE(T)                                                                               \
    case T: mmq_rows(j, r0, r1, T); break;

TGT static void mm_quant(const sd_mm_job *j, int64_t r0, int64_t r1) {
    switch (j->type) {
        MMQ_CASE(SD_Q4_0)
        MMQ_CASE(SD_Q4_1)
        MMQ_CASE(SD_Q5_0)
        MMQ_CASE(SD_Q5_1)
        MMQ_CASE(SD_IQ4_NL)
        MMQ_CASE(SD_Q2_K)
        MMQ_CASE(SD_Q3_K)
        MMQ_CASE(SD_Q4_K)
        MMQ_CASE(SD_Q5_K)
        MMQ_CASE(SD_Q6_K)
        MMQ_CASE(SD_IQ4_XS)
    default: break;
    }
}

/* ---- the activation records (sd_cpu_kernels.act_groups, bitwise sd_act_groups_ref) */

TGT static void k_act_groups(const int8_t *q, const float *d, const int32_t *sums, int64_t cols, sd_act_group *g,
                             int64_t gstride) {
    for (int64_t c0 = 0; c0 < cols; c0 += 256, g += gstride) {
        if (cols - c0 < 256) { /* a partial group: the blocks in order, zeros after */
            int n = (int)(cols - c0) / 32;
            memset(g, 0, sizeof *g);
            memcpy(g->q, q + c0, (size_t)(cols - c0));
            memcpy(g->d, d + c0 / 32, sizeof(float) * (size_t)n);
            memcpy(g->s, sums + c0 / 32, sizeof(int32_t) * (size_t)n);
            for (int k = 0; k < n; k++) g->ds[k] = g->d[k] * (float)g->s[k];
            break;
        }
        qi m[8]; /* the interleave is a transpose of the group's 8 x 8 words */
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) m[k] = qi_load(q + c0 + 32 * k);
        qi_transpose8(m);
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) qi_store(g->q + 32 * v, m[v]);
        __m256 dv = _mm256_loadu_ps(d + c0 / 32);
        qi sv = qi_load(sums + c0 / 32);
        _mm256_storeu_ps(g->d, dv);
        qi_store(g->s, sv);
        _mm256_storeu_ps(g->ds, _mm256_mul_ps(dv, qi_cvt(sv)));
    }
}
