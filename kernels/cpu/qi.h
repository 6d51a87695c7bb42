/* 32-byte integer vectors for the quantized-type kernels (kernels/cpu/quant_tmpl.h): one __m256i with
 * AVX2, two __m128i halves with AVX alone (element i of 32 is byte i either way, so the kernels are written
 * once). Included by a kernel file after it defines TGT; QI_HALVES selects the AVX form, QI_VNNI makes the
 * unsigned x signed byte dot one vpdpbusd (AVX-512 VNNI with VL) instead of vpmaddubsw + vpmaddwd.
 *
 * The byte products never saturate: every weight operand is at most 127 in magnitude and every activation
 * at most 127 (sd_quant_act_q8), so a pair sums to at most 2 * 127 * 127 < 32767 and all three forms give
 * the same exact int32 sums. */
#ifndef SD_QI_H
#define SD_QI_H
#include <immintrin.h>
#include <stdint.h>

#define QI_AI static inline __attribute__((always_inline))

#ifdef QI_HALVES
typedef struct qi {
    __m128i l, h; /* bytes 0-15, 16-31 */
} qi;

#define QI_MAP1(e) ((qi){_mm_##e(a.l), _mm_##e(a.h)})
#define QI_MAP2(e) ((qi){_mm_##e(a.l, b.l), _mm_##e(a.h, b.h)})
TGT QI_AI qi qi_load(const void *p) {
    return (qi){_mm_loadu_si128((const __m128i *)p), _mm_loadu_si128((const __m128i *)p + 1)};
}
TGT QI_AI void qi_store(void *p, qi a) {
    _mm_storeu_si128((__m128i *)p, a.l), _mm_storeu_si128((__m128i *)p + 1, a.h);
}
TGT QI_AI qi qi_zero(void) { return (qi){_mm_setzero_si128(), _mm_setzero_si128()}; }
TGT QI_AI qi qi_load2(const void *lo, const void *hi) {
    return (qi){_mm_loadu_si128((const __m128i *)lo), _mm_loadu_si128((const __m128i *)hi)};
}
TGT QI_AI qi qi_set8(int c) { return (qi){_mm_set1_epi8((char)c), _mm_set1_epi8((char)c)}; }
TGT QI_AI qi qi_and(qi a, qi b) { return QI_MAP2(and_si128); }
TGT QI_AI qi qi_or(qi a, qi b) { return QI_MAP2(or_si128); }
TGT QI_AI qi qi_sub8(qi a, qi b) { return QI_MAP2(sub_epi8); }
TGT QI_AI qi qi_cmpeq8(qi a, qi b) { return QI_MAP2(cmpeq_epi8); }
TGT QI_AI qi qi_sign8(qi a, qi b) { return QI_MAP2(sign_epi8); }
TGT QI_AI qi qi_sub32(qi a, qi b) { return QI_MAP2(sub_epi32); }
TGT QI_AI qi qi_abs8(qi a) { return QI_MAP1(abs_epi8); }
TGT QI_AI qi qi_srli16(qi a, int n) { return (qi){_mm_srli_epi16(a.l, n), _mm_srli_epi16(a.h, n)}; }
TGT QI_AI qi qi_slli16(qi a, int n) { return (qi){_mm_slli_epi16(a.l, n), _mm_slli_epi16(a.h, n)}; }
TGT QI_AI qi qi_slli32(qi a, int n) { return (qi){_mm_slli_epi32(a.l, n), _mm_slli_epi32(a.h, n)}; }

/* 16 bytes at p as 32 nibbles: low nibbles are elements 0-15, high nibbles 16-31 (the Q4_0 order). */
TGT QI_AI qi qi_nib16(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(15);
    return (qi){_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16(v, 4), m)};
}

/* Byte i: val where bit i of h is set, else 0. */
TGT QI_AI qi qi_bits32(uint32_t h, int val) {
    __m128i v = _mm_set1_epi32((int)h), bit = _mm_set1_epi64x((long long)0x8040201008040201ull), c = _mm_set1_epi8((char)val);
    __m128i l = _mm_shuffle_epi8(v, _mm_set_epi64x(0x0101010101010101ll, 0)),
            hh = _mm_shuffle_epi8(v, _mm_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll));
    l = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(l, bit), bit), c);
    hh = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hh, bit), bit), c);
    return (qi){l, hh};
}

/* Each byte (0-15) of idx looked up in the 16-byte table. */
TGT QI_AI qi qi_lut16(const int8_t *table, qi idx) {
    __m128i t = _mm_loadu_si128((const __m128i *)table);
    return (qi){_mm_shuffle_epi8(t, idx.l), _mm_shuffle_epi8(t, idx.h)};
}

/* int16 lanes: a for elements 0-15, b for 16-31 (a scale per 16 weights). */
TGT QI_AI qi qi_k16(int a, int b) { return (qi){_mm_set1_epi16((short)a), _mm_set1_epi16((short)b)}; }

/* Unsigned u times signed s, pairs weighted by the int16 lanes of k, summed to 8 int32 lanes. */
TGT QI_AI qi qi_dot16(qi u, qi s, qi k) {
    return (qi){_mm_madd_epi16(_mm_maddubs_epi16(u.l, s.l), k.l), _mm_madd_epi16(_mm_maddubs_epi16(u.h, s.h), k.h)};
}
/* The int16 pair sums of u times s (vpmaddubsw), their sum, and acc + those int16 lanes weighted by k in pairs. */
TGT QI_AI qi qi_pairs(qi u, qi s) { return (qi){_mm_maddubs_epi16(u.l, s.l), _mm_maddubs_epi16(u.h, s.h)}; }
TGT QI_AI qi qi_add16(qi a, qi b) { return QI_MAP2(add_epi16); }
TGT QI_AI qi qi_widen_acc(qi acc, qi p, qi k) {
    return (qi){_mm_add_epi32(acc.l, _mm_madd_epi16(p.l, k.l)), _mm_add_epi32(acc.h, _mm_madd_epi16(p.h, k.h))};
}
TGT QI_AI qi qi_dot(qi u, qi s) { return qi_dot16(u, s, qi_k16(1, 1)); }
TGT QI_AI qi qi_dot_acc(qi acc, qi u, qi s) {
    qi p = qi_dot(u, s);
    return (qi){_mm_add_epi32(acc.l, p.l), _mm_add_epi32(acc.h, p.h)};
}

TGT QI_AI __m128i qi_sum4(__m128i s0, __m128i s1, __m128i s2, __m128i s3) {
    __m128i u01 = _mm_add_epi32(_mm_unpacklo_epi32(s0, s1), _mm_unpackhi_epi32(s0, s1));
    __m128i u23 = _mm_add_epi32(_mm_unpacklo_epi32(s2, s3), _mm_unpackhi_epi32(s2, s3));
    return _mm_add_epi32(_mm_unpacklo_epi64(u01, u23), _mm_unpackhi_epi64(u01, u23));
}

/* Lane i of the result: the sum of the 8 int32 lanes of s[i]. */
TGT QI_AI qi qi_sum8(const qi s[8]) {
    __m128i t[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) t[i] = _mm_add_epi32(s[i].l, s[i].h);
    return (qi){qi_sum4(t[0], t[1], t[2], t[3]), qi_sum4(t[4], t[5], t[6], t[7])};
}

TGT QI_AI __m256 qi_cvt(qi a) {
    return _mm256_cvtepi32_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(a.l), a.h, 1));
}

TGT QI_AI qi qi_add32(qi a, qi b) { return QI_MAP2(add_epi32); }

/* int16 lanes 2i and 2i + 1 (dword i) = byte 2i + odd of b (sign-extended). */
TGT QI_AI qi qi_k16_pairs(__m128i b, int odd) {
    __m128i v = _mm_shuffle_epi8(b, _mm_add_epi8(_mm_set_epi8(14, 14, 12, 12, 10, 10, 8, 8, 6, 6, 4, 4, 2, 2, 0, 0),
                                                _mm_set1_epi8((char)odd)));
    return (qi){_mm_cvtepi8_epi16(v), _mm_cvtepi8_epi16(_mm_srli_si128(v, 8))};
}

TGT QI_AI void qi_t4(__m128i *a0, __m128i *a1, __m128i *a2, __m128i *a3) {
    __m128i t0 = _mm_unpacklo_epi32(*a0, *a1), t1 = _mm_unpackhi_epi32(*a0, *a1);
    __m128i t2 = _mm_unpacklo_epi32(*a2, *a3), t3 = _mm_unpackhi_epi32(*a2, *a3);
    *a0 = _mm_unpacklo_epi64(t0, t2), *a1 = _mm_unpackhi_epi64(t0, t2);
    *a2 = _mm_unpacklo_epi64(t1, t3), *a3 = _mm_unpackhi_epi64(t1, t3);
}

/* Within each half: dword k of y[v] becomes dword v of y[k] (two 4 x 4 transposes). */
TGT QI_AI void qi_t4x2(qi y[4]) {
    qi_t4(&y[0].l, &y[1].l, &y[2].l, &y[3].l);
    qi_t4(&y[0].h, &y[1].h, &y[2].h, &y[3].h);
}

/* Transposes the 8 x 8 matrix of dwords: dword k of m[v] becomes dword v of m[k]. */
TGT QI_AI void qi_transpose8(qi m[8]) {
    __m128i a[4] = {m[0].l, m[1].l, m[2].l, m[3].l}, b[4] = {m[4].l, m[5].l, m[6].l, m[7].l};
    __m128i c[4] = {m[0].h, m[1].h, m[2].h, m[3].h}, d[4] = {m[4].h, m[5].h, m[6].h, m[7].h};
    qi_t4(&a[0], &a[1], &a[2], &a[3]);
    qi_t4(&b[0], &b[1], &b[2], &b[3]);
    qi_t4(&c[0], &c[1], &c[2], &c[3]);
    qi_t4(&d[0], &d[1], &d[2], &d[3]);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) m[i] = (qi){a[i], b[i]}, m[i + 4] = (qi){c[i], d[i]};
}

/* The 8 bytes of v (byte 0 first) as 8 floats. */
TGT QI_AI __m256 qi_u8x8_ps(uint64_t v) {
    __m128i l = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)(uint32_t)v)), h = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)(v >> 32)));
    return _mm256_cvtepi32_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(l), h, 1));
}
#else
typedef __m256i qi;

TGT QI_AI qi qi_load(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
TGT QI_AI void qi_store(void *p, qi a) { _mm256_storeu_si256((__m256i *)p, a); }
TGT QI_AI qi qi_zero(void) { return _mm256_setzero_si256(); }
TGT QI_AI qi qi_load2(const void *lo, const void *hi) {
    return _mm256_loadu2_m128i((const __m128i *)hi, (const __m128i *)lo);
}
TGT QI_AI qi qi_set8(int c) { return _mm256_set1_epi8((char)c); }
TGT QI_AI qi qi_and(qi a, qi b) { return _mm256_and_si256(a, b); }
TGT QI_AI qi qi_or(qi a, qi b) { return _mm256_or_si256(a, b); }
TGT QI_AI qi qi_sub8(qi a, qi b) { return _mm256_sub_epi8(a, b); }
TGT QI_AI qi qi_cmpeq8(qi a, qi b) { return _mm256_cmpeq_epi8(a, b); }
TGT QI_AI qi qi_sign8(qi a, qi b) { return _mm256_sign_epi8(a, b); }
TGT QI_AI qi qi_sub32(qi a, qi b) { return _mm256_sub_epi32(a, b); }
TGT QI_AI qi qi_abs8(qi a) { return _mm256_abs_epi8(a); }
TGT QI_AI qi qi_srli16(qi a, int n) { return _mm256_srli_epi16(a, n); }
TGT QI_AI qi qi_slli16(qi a, int n) { return _mm256_slli_epi16(a, n); }
TGT QI_AI qi qi_slli32(qi a, int n) { return _mm256_slli_epi32(a, n); }

TGT QI_AI qi qi_nib16(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
}

TGT QI_AI qi qi_bits32(uint32_t h, int val) {
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                    _mm256_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll, 0x0101010101010101ll, 0));
    __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8((char)val));
}

TGT QI_AI qi qi_lut16(const int8_t *table, qi idx) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)table)), idx);
}

TGT QI_AI qi qi_k16(int a, int b) { return _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a)); }

TGT QI_AI qi qi_dot16(qi u, qi s, qi k) { return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), k); }
TGT QI_AI qi qi_pairs(qi u, qi s) { return _mm256_maddubs_epi16(u, s); }
TGT QI_AI qi qi_add16(qi a, qi b) { return _mm256_add_epi16(a, b); }
#ifdef QI_VNNI
TGT QI_AI qi qi_widen_acc(qi acc, qi p, qi k) { return _mm256_dpwssd_epi32(acc, p, k); }
#else
TGT QI_AI qi qi_widen_acc(qi acc, qi p, qi k) { return _mm256_add_epi32(acc, _mm256_madd_epi16(p, k)); }
#endif
#ifdef QI_VNNI
TGT QI_AI qi qi_dot(qi u, qi s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }
TGT QI_AI qi qi_dot_acc(qi acc, qi u, qi s) { return _mm256_dpbusd_epi32(acc, u, s); }
#else
TGT QI_AI qi qi_dot(qi u, qi s) { return qi_dot16(u, s, _mm256_set1_epi16(1)); }
TGT QI_AI qi qi_dot_acc(qi acc, qi u, qi s) { return _mm256_add_epi32(acc, qi_dot(u, s)); }
#endif

TGT QI_AI qi qi_sum8(const qi s[8]) { return v256_sum8x8_epi32(s); }
TGT QI_AI qi qi_add32(qi a, qi b) { return _mm256_add_epi32(a, b); }

TGT QI_AI qi qi_k16_pairs(__m128i b, int odd) {
    __m128i v = _mm_shuffle_epi8(b, _mm_add_epi8(_mm_set_epi8(14, 14, 12, 12, 10, 10, 8, 8, 6, 6, 4, 4, 2, 2, 0, 0),
                                                _mm_set1_epi8((char)odd)));
    return _mm256_cvtepi8_epi16(v);
}

TGT QI_AI void qi_t4x2(qi y[4]) {
    __m256i t0 = _mm256_unpacklo_epi32(y[0], y[1]), t1 = _mm256_unpackhi_epi32(y[0], y[1]);
    __m256i t2 = _mm256_unpacklo_epi32(y[2], y[3]), t3 = _mm256_unpackhi_epi32(y[2], y[3]);
    y[0] = _mm256_unpacklo_epi64(t0, t2), y[1] = _mm256_unpackhi_epi64(t0, t2);
    y[2] = _mm256_unpacklo_epi64(t1, t3), y[3] = _mm256_unpackhi_epi64(t1, t3);
}

TGT QI_AI void qi_transpose8(qi m[8]) {
    __m256i t[8], u[8];
#pragma GCC unroll 2
    for (int h = 0; h < 8; h += 4) {
        t[h] = _mm256_unpacklo_epi32(m[h], m[h + 1]), t[h + 1] = _mm256_unpackhi_epi32(m[h], m[h + 1]);
        t[h + 2] = _mm256_unpacklo_epi32(m[h + 2], m[h + 3]), t[h + 3] = _mm256_unpackhi_epi32(m[h + 2], m[h + 3]);
        u[h] = _mm256_unpacklo_epi64(t[h], t[h + 2]), u[h + 1] = _mm256_unpackhi_epi64(t[h], t[h + 2]);
        u[h + 2] = _mm256_unpacklo_epi64(t[h + 1], t[h + 3]), u[h + 3] = _mm256_unpackhi_epi64(t[h + 1], t[h + 3]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        m[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        m[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}
TGT QI_AI __m256 qi_cvt(qi a) { return _mm256_cvtepi32_ps(a); }
TGT QI_AI __m256 qi_u8x8_ps(uint64_t v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v))); }
#endif

#endif
