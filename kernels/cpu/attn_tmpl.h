/* The SIMD attention kernels (sd_cpu_kernels.attn_load, attn_chunk; kernels/cpu/attention.c drives them),
 * written once for the 256-bit levels (AVX: integer steps in 128-bit halves; AVX2) and AVX-512. A kernel
 * file includes this after its macros (mm_tmpl.h lists them: TGT, V, VW, VLOAD, VSTORE, VFMA, VMUL, VSET1,
 * VHSUM, WF16, VADD) and before mm_tmpl.h, whose table names these functions.
 *
 * One query against a chunk of positions, rows of hdp floats (a multiple of 16, zero past head_dim):
 *  - scores: VW positions at a time, one accumulator each summing lane-wise over the head dimension, then
 *    one transposing reduction gives the VW scores in a vector (no horizontal sum per position);
 *  - softmax: the online update of kernels/softmax.h, exp as a vector polynomial (below);
 *  - values: acc += p_t * v_t, alternate positions into two accumulator sets (twice the independent FMA
 *    chains), added at the end of the chunk.
 * Every step depends only on the query, the chunk's rows and n: never on the other queries of a tile. */

#include <math.h>

#include "kernels/softmax.h"

#define AT_PV 4 /* value accumulators per set: 2 x 4 vectors + 2 broadcasts fit 16 registers */

#if VW == 16
#define AT_MAX(a, b) _mm512_max_ps(a, b)
#define AT_SUB(a, b) _mm512_sub_ps(a, b)

TGT static inline float at_hmax(__m512 v) { return _mm512_reduce_max_ps(v); } /* max is order-free */

/* Lanes n.. of s (0 < n < 16) set to -inf: positions past the query's own. */
TGT static inline __m512 at_tail(__m512 s, int n) {
    return _mm512_mask_mov_ps(s, (__mmask16)(0xffffu << n), _mm512_set1_ps(-INFINITY));
}

/* Lane i = the sum of the 16 lanes of a[i]: halves, then quarters across vector pairs, then the 4 lanes
 * of each 128-bit group by unpacks; 45 instructions for 16 sums. */
TGT static inline __m512 at_sum16(const __m512 a[16]) {
    __m512 c[8], e[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) { /* pairs (a_i, a_i+4) and (a_i+8, a_i+12): quarters 0+2, 1+3 of each */
        int x = i < 4 ? i : i + 4;
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[x], a[x + 4], 0x44), _mm512_shuffle_f32x4(a[x], a[x + 4], 0xee));
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m512 *cc = c + 4 * h;
        __m512 d01 = _mm512_add_ps(_mm512_unpacklo_ps(cc[0], cc[1]), _mm512_unpackhi_ps(cc[0], cc[1]));
        __m512 d23 = _mm512_add_ps(_mm512_unpacklo_ps(cc[2], cc[3]), _mm512_unpackhi_ps(cc[2], cc[3]));
        __m512d p = _mm512_castps_pd(d01), q = _mm512_castps_pd(d23);
        e[h] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(p, q)), _mm512_castpd_ps(_mm512_unpackhi_pd(p, q)));
    }
    return _mm512_add_ps(_mm512_shuffle_f32x4(e[0], e[1], 0x88), _mm512_shuffle_f32x4(e[0], e[1], 0xdd));
}
#define AT_SUM(a) at_sum16(a)

#define AT_ROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* 2^n for integral n in [-126, 0], as float bits. */
TGT static inline __m512 at_pow2(__m512 n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
#define AT_TINY(x) _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ)
#define AT_ZERO_WHERE(m, v) _mm512_maskz_mov_ps((__mmask16)~(m), v)
typedef __mmask16 at_mask;

#else /* 256 bits */
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

/* Lane i = the sum of the 8 lanes of a[i]: pairwise horizontal adds within 128-bit halves, then the
 * halves. */
TGT static inline __m256 at_sum8(const __m256 a[8]) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#define AT_SUM(a) at_sum8(a)

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

/* n rows of K or V (hd elements, F16 bits or F32, `stride` elements apart) to 16 rows of hdp floats:
 * zero past hd and past row n. */
TGT static void k_attn_load(float *dst, const void *src, size_t stride, int n, int hd, int hdp, int f16) {
    for (int r = 0; r < 16; r++) {
        float *o = dst + (size_t)r * hdp;
        int d = 0;
        if (r < n && f16) {
            const uint16_t *h = (const uint16_t *)src + (size_t)r * stride;
            for (; d + VW <= hd; d += VW) VSTORE(o + d, WF16(h + d));
            for (; d < hd; d++) o[d] = sd_fp16_to_fp32(h[d]);
        } else if (r < n) {
            const float *f = (const float *)src + (size_t)r * stride;
            for (; d + VW <= hd; d += VW) VSTORE(o + d, VLOAD(f + d));
            for (; d < hd; d++) o[d] = f[d];
        }
        for (; d < hdp; d++) o[d] = 0;
    }
}

TGT static void k_attn_chunk(const float *q, const float *k, const float *v, int n, int hdp, float scale, float *ml,
                             float *acc, float *s) {
    int ng = (n + VW - 1) / VW;
    V vmax = VSET1(-INFINITY);
    for (int g = 0; g < ng; g++) {
        const float *kg = k + (size_t)g * VW * hdp;
        V a[VW];
#pragma GCC unroll 16
        for (int i = 0; i < VW; i++) a[i] = VZERO();
        for (int d = 0; d < hdp; d += VW) {
            V qv = VLOAD(q + d);
#pragma GCC unroll 16
            for (int i = 0; i < VW; i++) a[i] = VFMA(qv, VLOAD(kg + (size_t)i * hdp + d), a[i]);
        }
        V sc = VMUL(AT_SUM(a), VSET1(scale));
        if (g == ng - 1 && n % VW) sc = at_tail(sc, n % VW);
        VSTORE(s + g * VW, sc);
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
    int d0 = 0;
    for (; d0 + AT_PV * VW <= hdp; d0 += AT_PV * VW) {
        V a0[AT_PV], a1[AT_PV];
#pragma GCC unroll 4
        for (int b = 0; b < AT_PV; b++) a0[b] = VLOAD(acc + d0 + b * VW), a1[b] = VZERO();
        int t = 0;
        for (; t + 1 < n; t += 2) {
            const float *v0 = v + (size_t)t * hdp + d0, *v1 = v0 + hdp;
            V p0 = VSET1(s[t]), p1 = VSET1(s[t + 1]);
#pragma GCC unroll 4
            for (int b = 0; b < AT_PV; b++) {
                a0[b] = VFMA(p0, VLOAD(v0 + b * VW), a0[b]);
                a1[b] = VFMA(p1, VLOAD(v1 + b * VW), a1[b]);
            }
        }
        if (t < n) {
            V p0 = VSET1(s[t]);
#pragma GCC unroll 4
            for (int b = 0; b < AT_PV; b++) a0[b] = VFMA(p0, VLOAD(v + (size_t)t * hdp + d0 + b * VW), a0[b]);
        }
#pragma GCC unroll 4
        for (int b = 0; b < AT_PV; b++) VSTORE(acc + d0 + b * VW, VADD(a0[b], a1[b]));
    }
    for (; d0 < hdp; d0 += VW) { /* hdp not a multiple of AT_PV vectors: one vector at a time */
        V a0 = VLOAD(acc + d0), a1 = VZERO();
        int t = 0;
        for (; t + 1 < n; t += 2) {
            a0 = VFMA(VSET1(s[t]), VLOAD(v + (size_t)t * hdp + d0), a0);
            a1 = VFMA(VSET1(s[t + 1]), VLOAD(v + (size_t)(t + 1) * hdp + d0), a1);
        }
        if (t < n) a0 = VFMA(VSET1(s[t]), VLOAD(v + (size_t)t * hdp + d0), a0);
        VSTORE(acc + d0, VADD(a0, a1));
    }
}
