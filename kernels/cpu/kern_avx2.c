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
#define R_FEW 4
#define R_MANY 2
#define N_MAX 5
#define QR_FEW 2
#define QR_MANY 1
#define QN_MAX 6
#define KNAME sd_kernels_avx2
#define KLEVEL SD_SIMD_AVX2
#define KSTR "avx2"

TGT static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Q8_0 block dot: |w| (unsigned) times x with w's sign, pairs summed to int16 (at most 2*128*127, no
 * saturation since |x| <= 127), then to int32. */
typedef struct qwb {
    __m256i a, s;
} qwb;

TGT static inline qwb q8_wprep(const int8_t *p) {
    __m256i w = _mm256_loadu_si256((const __m256i *)p);
    return (qwb){_mm256_sign_epi8(w, w), w};
}

TGT static inline __m256 q8_dot(qwb w, const int8_t *x) {
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    __m256i p = _mm256_maddubs_epi16(w.a, _mm256_sign_epi8(xv, w.s));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

#define Q8_XPREP(p) (p)
#define Q8_DOT(w, xp) q8_dot(w, xp)

#include "kernels/cpu/mm_tmpl.h"
#endif
