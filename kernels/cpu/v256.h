/* The 256-bit float vector operations the AVX and AVX2 kernels share (and hsum8, which AVX-512 uses too).
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
#endif
