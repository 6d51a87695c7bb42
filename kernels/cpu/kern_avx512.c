/* AVX-512 kernels: 16 lanes and 32 registers, so larger register tiles. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define V __m512
#define VW 16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VSET1(f) _mm512_set1_ps(f)
#define VHSUM(v) hsum16(v)
#define WF16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define WBF16(p) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define R_FEW 1
#define R_MANY 4
#define N_MAX 6
#define QR_FEW 1
#define QR_MANY 2
#define QN_MAX 6
#define KNAME sd_kernels_avx512
#define KLEVEL SD_SIMD_AVX512
#define KSTR "avx512"

/* A fixed pairwise order (not _mm512_reduce_add_ps, whose order is the compiler's business). */
TGT static inline float hsum16(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#include "kernels/cpu/v256.h"

/* Q8_0 block dot with VNNI. vpdpbusd multiplies unsigned by signed bytes, so the activations are offset
 * to u = x + 128 (x ^ 0x80), and the accumulator starts at -128 * sum(w), computed once per weight block:
 * -128 * sum(w) + sum((x + 128) * w) = sum(x * w), exact in int32 (no saturation in vpdpbusd). */
typedef struct qwb {
    __m256i w, neg_corr;
} qwb;

TGT static inline qwb q8_wprep(const int8_t *p) {
    __m256i w = _mm256_loadu_si256((const __m256i *)p);
    __m256i corr = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), w);
    return (qwb){w, _mm256_sub_epi32(_mm256_setzero_si256(), corr)};
}

#define Q8_XPREP(p) _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p)), _mm256_set1_epi8((char)0x80))
#define Q8_DOT(qw, xp) _mm256_cvtepi32_ps(_mm256_dpbusd_epi32((qw).neg_corr, xp, (qw).w))

#include "kernels/cpu/mm_tmpl.h"
#endif
