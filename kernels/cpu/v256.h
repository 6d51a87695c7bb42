/* The 256-bit vector operations the AVX and AVX2 kernels share (hsum8 and, with V256_AVX2 defined, the
 * int32 8x8 reduction, which AVX-512 uses too).
 * Included by a kernel file after it defines TGT (its target attribute). */
#ifndef SD_V256_H
#define SD_V256_H
#include <immintrin.h>

#define V256_ZERO() _mm256_setzero_ps()
#define V256_LOAD(p) _mm256_loadu_ps(p)
#define V256_STORE(p, v) _mm256_storeu_ps(p, v)
#define V256_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V256_MUL(a, b) _mm256_mul_ps(a, b)
#define V256_SET1(f) _mm256_set1_ps(f)
#define V256_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))

/* A fixed pairwise order, so a sum never depends on the compiler's choice of reduction. */
TGT static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#ifdef V256_AVX2
/* Lane i of the result = the sum of the 8 int32 lanes of s[i], exact: unpacks and adds within the 128-bit
 * lanes, then the two halves (phaddd would cost several multiply-pipe slots). Needs AVX2. */
TGT static inline __attribute__((always_inline)) __m256i v256_sum8x8_epi32(const __m256i s[8]) {
    __m256i u[4], v[2];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* per 128-bit lane: s2i s2i+1 s2i s2i+1 */
        u[i] = _mm256_add_epi32(_mm256_unpacklo_epi32(s[2 * i], s[2 * i + 1]), _mm256_unpackhi_epi32(s[2 * i], s[2 * i + 1]));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* per 128-bit lane: s4i .. s4i+3 */
        v[i] = _mm256_add_epi32(_mm256_unpacklo_epi64(u[2 * i], u[2 * i + 1]), _mm256_unpackhi_epi64(u[2 * i], u[2 * i + 1]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(v[0], v[1], 0x20), _mm256_permute2x128_si256(v[0], v[1], 0x31));
}
#endif
#endif
