/* AVX + FMA + F16C kernels (no AVX2: integer work stays in 128-bit halves). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#define TGT __attribute__((target("avx,fma,f16c")))
#define V __m256
#define VW 8
#include "kernels/cpu/v256.h"
#define VZERO() V256_ZERO()
#define VLOAD(p) V256_LOAD(p)
#define VSTORE(p, v) V256_STORE(p, v)
#define VFMA(a, b, c) V256_FMA(a, b, c)
#define VMUL(a, b) V256_MUL(a, b)
#define VSET1(f) V256_SET1(f)
#define VHSUM(v) hsum8(v)
#define WF16(p) V256_F16(p)
#define WBF16(p) bf16x8((const uint16_t *)(p))
#define R_FEW 1
#define R_MANY 2
#define N_MAX 5
#define QR_FEW 1
#define QR_MANY 1
#define QN_MAX 6
#define KNAME sd_kernels_avx
#define KLEVEL SD_SIMD_AVX
#define KSTR "avx"

/* bf16 -> f32 is a 16-bit shift: interleaving zeros below each value does it without AVX2. */
TGT static inline __m256 bf16x8(const uint16_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p), z = _mm_setzero_si128();
    __m128i lo = _mm_unpacklo_epi16(z, v), hi = _mm_unpackhi_epi16(z, v);
    return _mm256_castsi256_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}


/* Q8_0 block dot in 128-bit halves (no AVX2): |w| times x with w's sign, pairs to int16 (no saturation
 * since |x| <= 127), then to int32. */
typedef struct qwb {
    __m128i a0, a1, s0, s1;
} qwb;

TGT static inline qwb q8_wprep(const int8_t *p) {
    __m128i w0 = _mm_loadu_si128((const __m128i *)p), w1 = _mm_loadu_si128((const __m128i *)(p + 16));
    return (qwb){_mm_sign_epi8(w0, w0), _mm_sign_epi8(w1, w1), w0, w1};
}

TGT static inline __m256 q8_dot(qwb w, const int8_t *x) {
    __m128i x0 = _mm_loadu_si128((const __m128i *)x), x1 = _mm_loadu_si128((const __m128i *)(x + 16));
    __m128i one = _mm_set1_epi16(1);
    __m128i p0 = _mm_madd_epi16(_mm_maddubs_epi16(w.a0, _mm_sign_epi8(x0, w.s0)), one);
    __m128i p1 = _mm_madd_epi16(_mm_maddubs_epi16(w.a1, _mm_sign_epi8(x1, w.s1)), one);
    return _mm256_cvtepi32_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(p0), p1, 1));
}

#define Q8_XPREP(p) (p)
#define Q8_DOT(w, xp) q8_dot(w, xp)

#include "kernels/cpu/mm_tmpl.h"
#endif
