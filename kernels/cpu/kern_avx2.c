/* AVX2 kernels: as the AVX ones, with 256-bit integer conversions for BF16 and Q8_0. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
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
#define WBF16(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define WQ8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define R_FEW 4
#define R_MANY 2
#define N_MAX 5
#define KNAME sd_kernels_avx2
#define KLEVEL SD_SIMD_AVX2
#define KSTR "avx2"

TGT static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#include "kernels/cpu/mm_tmpl.h"
#endif
