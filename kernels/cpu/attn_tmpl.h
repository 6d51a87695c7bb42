/* The SIMD attention kernels (sd_cpu_kernels.attn_load_k, attn_load_v, attn_row; kernels/cpu/attention.c
 * drives them), written once for the 256-bit levels (AVX: integer steps in 128-bit halves; AVX2) and
 * AVX-512. A kernel file includes this after its macros (mm_tmpl.h lists them: TGT, V, VW, VLOAD, VSTORE,
 * VFMA, VMUL, VSET1, VHSUM, WF16, VADD) and before mm_tmpl.h, whose table names these functions.
 *
 * A chunk of SD_ATT_CHUNK positions is loaded once per tile: K transposed (kt[d][t]: a vector holds VW
 * positions of one dimension), V as rows. The heads of one row (same positions) then go through it in
 * register tiles of AT_MR queries: scores as AT_MR x 4 vector accumulators over the dimensions (each K
 * vector loaded once for AT_MR queries, no horizontal sums), values as AT_MR x 4 accumulators over the
 * positions (each V vector loaded once for AT_MR queries). Each accumulator sums in one fixed order (over
 * d, or over t), so a query's result never depends on which queries share its tile. */

#include <math.h>

#include "kernels/cpu/simd.h"
#include "kernels/softmax.h"

#define AT_NB 4 /* vectors of positions (scores) or of dimensions (values) per register tile */

#if VW == 16
#define AT_MR 4 /* queries per register tile: 16 accumulators + 4 vectors of 32 registers */
#define AT_MAX(a, b) _mm512_max_ps(a, b)
#define AT_SUB(a, b) _mm512_sub_ps(a, b)

TGT static inline float at_hmax(__m512 v) { return _mm512_reduce_max_ps(v); } /* max is order-free */

/* Lanes n.. of s (0 < n < 16) set to -inf: positions past the query's own. */
TGT static inline __m512 at_tail(__m512 s, int n) {
    return _mm512_mask_mov_ps(s, (__mmask16)(0xffffu << n), _mm512_set1_ps(-INFINITY));
}

#define AT_ROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* 2^n for integral n in [-126, 0], as float bits. */
TGT static inline __m512 at_pow2(__m512 n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
#define AT_TINY(x) _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ)
#define AT_ZERO_WHERE(m, v) _mm512_maskz_mov_ps((__mmask16)~(m), v)
typedef __mmask16 at_mask;

/* r[i] <- column i of the 16 x 16 matrix whose rows are r[0..15]: 32-bit then 64-bit interleaves within
 * 128-bit lanes, then two rounds of 128-bit lane shuffles (64 shuffles). */
TGT static inline void at_transpose(__m512 r[16]) {
    __m512 a[16], b[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) { /* b[4i + j], 128-bit lane k: column 4k + j of rows 4i..4i+3 */
        __m512d p0 = _mm512_castps_pd(a[4 * i]), p1 = _mm512_castps_pd(a[4 * i + 1]);
        __m512d p2 = _mm512_castps_pd(a[4 * i + 2]), p3 = _mm512_castps_pd(a[4 * i + 3]);
        b[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(p0, p2));
        b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(p0, p2));
        b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(p1, p3));
        b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(p1, p3));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) { /* the 4 x 4 lanes of b[j], b[4+j], b[8+j], b[12+j] transposed */
        __m512 c0 = _mm512_shuffle_f32x4(b[j], b[4 + j], 0x44), c1 = _mm512_shuffle_f32x4(b[j], b[4 + j], 0xee);
        __m512 c2 = _mm512_shuffle_f32x4(b[8 + j], b[12 + j], 0x44), c3 = _mm512_shuffle_f32x4(b[8 + j], b[12 + j], 0xee);
        r[j] = _mm512_shuffle_f32x4(c0, c2, 0x88);
        r[4 + j] = _mm512_shuffle_f32x4(c0, c2, 0xdd);
        r[8 + j] = _mm512_shuffle_f32x4(c1, c3, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(c1, c3, 0xdd);
    }
}

#else /* 256 bits */
#define AT_MR 2 /* 8 accumulators + 4 vectors + a broadcast of 16 registers */
#define AT_MAX(a, b) _mm256_max_ps(a, b)
#define AT_SUB(a, b) _mm256_sub_ps(a, b)

TGT static inline float at_hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

TGT static inline __m256 at_tail(__m256 s, int n) {
    static const int32_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    __m256 lane = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)idx));
    __m256 past = _mm256_cmp_ps(lane, _mm256_set1_ps((float)n), _CMP_GE_OQ);
    return _mm256_blendv_ps(s, _mm256_set1_ps(-INFINITY), past);
}

#define AT_ROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
TGT static inline __m256 at_pow2(__m256 n) {
    __m256i i = _mm256_cvtps_epi32(n);
#ifdef V256_AVX2
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(i, _mm256_set1_epi32(127)), 23);
#else /* AVX: integer lanes in 128-bit halves */
    __m128i b = _mm_set1_epi32(127);
    __m128i lo = _mm_slli_epi32(_mm_add_epi32(_mm256_castsi256_si128(i), b), 23);
    __m128i hi = _mm_slli_epi32(_mm_add_epi32(_mm256_extractf128_si256(i, 1), b), 23);
    __m256i e = _mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1);
#endif
    return _mm256_castsi256_ps(e);
}
#define AT_TINY(x) _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ)
#define AT_ZERO_WHERE(m, v) _mm256_andnot_ps(m, v)
typedef __m256 at_mask;

/* r[i] <- column i of the 8 x 8 matrix whose rows are r[0..7]: unpacks and shuffles within 128-bit
 * halves, then the halves (24 shuffles). */
TGT static inline void at_transpose(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { /* u[4h + j], 128-bit half k: column 4k + j of rows 4h..4h+3 */
        u[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xee);
        u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}
#endif

/* exp(x) for x <= 0 (a score minus the running maximum): x = n ln2 + r with |r| <= ln2/2 (ln2 in two
 * parts, so n ln2 is exact), e^r by its Taylor polynomial to degree 6 (error below 2e-7 relative), times
 * 2^n from the exponent bits. Below -87 (e^x < 2e-38, and -inf: masked positions) it is 0. */
TGT static inline V at_exp(V x) {
    at_mask tiny = AT_TINY(x);
    x = AT_MAX(x, VSET1(-87.0f));
    V n = AT_ROUND(VMUL(x, VSET1(1.44269504f)));
    V r = VFMA(n, VSET1(-0.693145751953125f), x); /* ln2's upper bits: n * them is exact */
    r = VFMA(n, VSET1(-1.42860682e-6f), r);
    V p = VSET1(1.0f / 720);
    p = VFMA(p, r, VSET1(1.0f / 120));
    p = VFMA(p, r, VSET1(1.0f / 24));
    p = VFMA(p, r, VSET1(1.0f / 6));
    p = VFMA(p, r, VSET1(0.5f));
    p = VFMA(p, r, VSET1(1.0f));
    p = VFMA(p, r, VSET1(1.0f));
    return AT_ZERO_WHERE(tiny, VMUL(p, at_pow2(n)));
}

/* Element d of row r of a K or V block (0 past hd or past row n). */
static inline float at_elem(const void *src, size_t stride, int n, int hd, int f16, int r, int d) {
    if (r >= n || d >= hd) return 0;
    if (f16) return sd_fp16_to_fp32(((const uint16_t *)src)[(size_t)r * stride + d]);
    return ((const float *)src)[(size_t)r * stride + d];
}

/* VW dims d0.. of row r as floats (the dims exist: d0 + VW <= hd; 0 past row n). */
TGT static inline V at_row(const void *src, size_t stride, int n, int f16, int r, int d0) {
    if (r >= n) return VZERO();
    if (f16) return WF16((const uint16_t *)src + (size_t)r * stride + d0);
    return VLOAD((const float *)src + (size_t)r * stride + d0);
}

TGT static void k_attn_load_k(float *kt, int col, const void *src, size_t stride, int n, int hd, int hdp, int f16) {
    for (int d0 = 0; d0 < hdp; d0 += VW)
        for (int r0 = 0; r0 < 16; r0 += VW) {
            if (d0 + VW > hd) { /* a head size that is not a multiple of VW: its last dims one by one */
                for (int i = 0; i < VW; i++)
                    for (int r = 0; r < VW; r++)
                        kt[(size_t)(d0 + i) * SD_ATT_CHUNK + col + r0 + r] = at_elem(src, stride, n, hd, f16, r0 + r, d0 + i);
                continue;
            }
            V rows[VW];
#pragma GCC unroll 16
            for (int r = 0; r < VW; r++) rows[r] = at_row(src, stride, n, f16, r0 + r, d0);
            at_transpose(rows);
#pragma GCC unroll 16
            for (int i = 0; i < VW; i++) VSTORE(kt + (size_t)(d0 + i) * SD_ATT_CHUNK + col + r0, rows[i]);
        }
}

TGT static void k_attn_load_v(float *dst, const void *src, size_t stride, int n, int hd, int hdp, int f16) {
    for (int r = 0; r < 16; r++) {
        float *o = dst + (size_t)r * hdp;
        int d = 0;
        for (; d + VW <= hd; d += VW) VSTORE(o + d, at_row(src, stride, n, f16, r, d));
        for (; d < hdp; d++) o[d] = at_elem(src, stride, n, hd, f16, r, d);
    }
}

/* Scores of MR queries (q: [MR][hdp]) for the 4 position vectors p0.. of the chunk: s[m][t] = scale *
 * sum over d of q[m][d] * kt[d][t], summed in d order. */
TGT static inline __attribute__((always_inline)) void at_scores(const float *q, int mr_, const float *kt, int p0,
                                                                int hdp, float scale, float *s) {
    const int mr = mr_;
    V a[AT_MR][AT_NB];
#pragma GCC unroll 4
    for (int m = 0; m < AT_MR; m++)
#pragma GCC unroll 4
        for (int b = 0; b < AT_NB; b++) a[m][b] = VZERO();
    for (int d = 0; d < hdp; d++) {
        const float *kd = kt + (size_t)d * SD_ATT_CHUNK + p0 * VW;
        V k[AT_NB];
#pragma GCC unroll 4
        for (int b = 0; b < AT_NB; b++) k[b] = VLOAD(kd + b * VW);
#pragma GCC unroll 4
        for (int m = 0; m < AT_MR; m++) {
            if (m >= mr) break;
            V qd = VSET1(q[(size_t)m * hdp + d]);
#pragma GCC unroll 4
            for (int b = 0; b < AT_NB; b++) a[m][b] = VFMA(qd, k[b], a[m][b]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < AT_MR; m++) {
        if (m >= mr) break;
#pragma GCC unroll 4
        for (int b = 0; b < AT_NB; b++) VSTORE(s + (size_t)m * SD_ATT_CHUNK + (p0 + b) * VW, VMUL(a[m][b], VSET1(scale)));
    }
}

/* acc[m][d0 + ..nb vectors] += sum over t < n of p[m][t] * v[t][...], in t order, for MR queries. */
TGT static inline __attribute__((always_inline)) void at_values(const float *p, int mr_, const float *v, int n, int d0,
                                                                int nb_, int hdp, float *acc) {
    const int mr = mr_, nb = nb_;
    V a[AT_MR][AT_NB];
#pragma GCC unroll 4
    for (int m = 0; m < AT_MR; m++) {
        if (m >= mr) break;
#pragma GCC unroll 4
        for (int b = 0; b < AT_NB; b++)
            if (b < nb) a[m][b] = VLOAD(acc + (size_t)m * hdp + d0 + b * VW);
    }
    for (int t = 0; t < n; t++) {
        const float *vt = v + (size_t)t * hdp + d0;
        V x[AT_NB];
#pragma GCC unroll 4
        for (int b = 0; b < AT_NB; b++)
            if (b < nb) x[b] = VLOAD(vt + b * VW);
#pragma GCC unroll 4
        for (int m = 0; m < AT_MR; m++) {
            if (m >= mr) break;
            V pt = VSET1(p[(size_t)m * SD_ATT_CHUNK + t]);
#pragma GCC unroll 4
            for (int b = 0; b < AT_NB; b++)
                if (b < nb) a[m][b] = VFMA(pt, x[b], a[m][b]);
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < AT_MR; m++) {
        if (m >= mr) break;
#pragma GCC unroll 4
        for (int b = 0; b < AT_NB; b++)
            if (b < nb) VSTORE(acc + (size_t)m * hdp + d0 + b * VW, a[m][b]);
    }
}

/* The online-softmax step of one query over its n scores s[0..n): new maximum (the state rescaled), the
 * scores replaced by their weights exp(s - m), l += their sum. */
TGT static void at_softmax(float *s, int n, float *ml, float *acc, int hdp) {
    int ng = (n + VW - 1) / VW;
    V vmax = VSET1(-INFINITY);
    for (int g = 0; g < ng; g++) {
        V sc = VLOAD(s + g * VW);
        if (g == ng - 1 && n % VW) VSTORE(s + g * VW, sc = at_tail(sc, n % VW));
        vmax = AT_MAX(vmax, sc);
    }
    float m = ml[0], l = ml[1], bm = at_hmax(vmax);
    if (bm > m) { /* move the state to the new maximum */
        float r = sd_softmax_rescale(m, bm);
        l *= r;
        for (int d = 0; d < hdp; d += VW) VSTORE(acc + d, VMUL(VLOAD(acc + d), VSET1(r)));
        m = bm;
    }
    V vm = VSET1(m), vl = VZERO();
    for (int g = 0; g < ng; g++) {
        V p = at_exp(AT_SUB(VLOAD(s + g * VW), vm));
        VSTORE(s + g * VW, p);
        vl = VADD(vl, p);
    }
    ml[0] = m;
    ml[1] = l + VHSUM(vl);
}

/* One register tile's queries (mr, a constant after inlining) through a chunk: scores, softmax, values. */
TGT static inline __attribute__((always_inline)) void at_tile(const float *q, int mr, const float *kt, const float *v,
                                                              int n, int hdp, float scale, float *ml, float *acc,
                                                              float *s) {
    int nv = (n + VW - 1) / VW; /* position vectors holding the n positions */
    for (int p0 = 0; p0 < nv; p0 += AT_NB) at_scores(q, mr, kt, p0, hdp, scale, s);
    for (int m = 0; m < mr; m++) at_softmax(s + (size_t)m * SD_ATT_CHUNK, n, ml + 2 * m, acc + (size_t)m * hdp, hdp);
    int d0 = 0;
    for (; d0 + AT_NB * VW <= hdp; d0 += AT_NB * VW) at_values(s, mr, v, n, d0, AT_NB, hdp, acc);
    for (; d0 < hdp; d0 += VW) at_values(s, mr, v, n, d0, 1, hdp, acc);
}

TGT static void k_attn_row(const float *q, int g, const float *kt, const float *v, int n, int hdp, float scale,
                           float *ml, float *acc, float *s) {
    for (int m0 = 0; m0 < g; m0 += AT_MR) {
        const float *qm = q + (size_t)m0 * hdp;
        float *mlm = ml + 2 * m0, *am = acc + (size_t)m0 * hdp;
        switch (g - m0 >= AT_MR ? AT_MR : g - m0) { /* each tile height its own code: accumulators in registers */
        case 1: at_tile(qm, 1, kt, v, n, hdp, scale, mlm, am, s); break;
        case 2: at_tile(qm, 2, kt, v, n, hdp, scale, mlm, am, s); break;
#if AT_MR > 2
        case 3: at_tile(qm, 3, kt, v, n, hdp, scale, mlm, am, s); break;
        case 4: at_tile(qm, 4, kt, v, n, hdp, scale, mlm, am, s); break;
#endif
        }
    }
}
