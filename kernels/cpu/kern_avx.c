/* AVX + FMA + F16C kernels (no AVX2: integer work stays in 128-bit halves). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#define TGT __attribute__((target("avx,fma,f16c")))
#define V __m256
#define VW 8
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VSET1(f) _mm256_set1_ps(f)
#define VHSUM(v) hsum8(v)
#define WF16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define WBF16(p) bf16x8((const uint16_t *)(p))
#define WQ8(p) q8x8((const int8_t *)(p))
#define R_FEW 4
#define R_MANY 2
#define N_MAX 5
#define KNAME sd_kernels_avx
#define KLEVEL SD_SIMD_AVX
#define KSTR "avx"

TGT static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* bf16 -> f32 is a 16-bit shift: interleaving zeros below each value does it without AVX2. */
TGT static inline __m256 bf16x8(const uint16_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p), z = _mm_setzero_si128();
    __m128i lo = _mm_unpacklo_epi16(z, v), hi = _mm_unpackhi_epi16(z, v);
    return _mm256_castsi256_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

TGT static inline __m256 q8x8(const int8_t *p) {
    __m128i v = _mm_loadl_epi64((const __m128i *)p);
    __m128i lo = _mm_cvtepi8_epi32(v), hi = _mm_cvtepi8_epi32(_mm_srli_si128(v, 4));
    return _mm256_cvtepi32_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

#include "kernels/cpu/mm_tmpl.h"
#endif
