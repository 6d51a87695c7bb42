/* AVX2 kernels: as the AVX ones, with 256-bit integer conversions for BF16 and Q8_0. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
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
#define WBF16(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define R_FEW 1
#define R_MANY 2
#define N_MAX 5
#define QR_FEW 1
#define QR_MANY 1
#define QN_MAX 6
#define KNAME sd_kernels_avx2
#define KLEVEL SD_SIMD_AVX2
#define KSTR "avx2"

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
