/* AVX-512 kernels: 16 lanes and 32 registers, so larger register tiles. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#include "kernels/quant.h"

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
#define VADD(a, b) _mm512_add_ps(a, b)
#define R_FEW 1
#define R_MANY 4
#define N_MAX 6
#define QR_FEW 1
#define QR_MANY 2
#define QN_MAX 6
#define MB_MIN_Q8 9 /* Q8_0 blocked (q8b_tmpl.h) from 9 activations: 1.3-2x the small path at 12-64 */
#define KNAME sd_kernels_avx512
#define KLEVEL SD_SIMD_AVX512
#define KSTR "avx512"
#define QI_VNNI /* qi.h: byte dot products with vpdpbusd */
#define QN 6      /* quant_tmpl.h: activations per register tile (32 registers) */

/* A fixed pairwise order (not _mm512_reduce_add_ps, whose order is the compiler's business). */
TGT static inline float hsum16(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define V256_AVX2 /* v256.h: the integer helpers too */
#include "kernels/cpu/v256.h"

/* Q8_0 block dot with VNNI. vpdpbusd multiplies unsigned by signed bytes, so the weights are offset to
 * u = w + 128 (w ^ 0x80) and the activations stay signed: sum(u * x) = sum(w * x) + 128 * sum(x), exact in
 * int32 (no saturation in vpdpbusd), and sum(x) per activation block comes with the job (xs). */
TGT static inline __attribute__((always_inline)) __m256i q8_part8(const sd_block_q8_0 *b, const int8_t *x) {
    __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)b->qs), _mm256_set1_epi8((char)0x80));
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, _mm256_loadu_si256((const __m256i *)x));
}

/* The exact int32 sums of 8 blocks (lane i: block i), minus 128 * sum(x) of each block. */
TGT static inline __attribute__((always_inline)) __m256 q8_dot8(const sd_block_q8_0 *b, const int8_t *x, const int32_t *xs) {
    __m256i s[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) s[i] = q8_part8(b + i, x + 32 * i);
    __m256i t = v256_sum8x8_epi32(s);
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(t, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)xs), 7)));
}

TGT static inline __attribute__((always_inline)) int q8_dot1(const sd_block_q8_0 *b, const int8_t *x, int32_t xs) {
    __m256i s = q8_part8(b, x);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 1))) - 128 * xs;
}

#define Q8_DOT8(b, x, xs) q8_dot8(b, x, xs)
#define Q8_DOT1(b, x, xs) q8_dot1(b, x, xs)

#include "kernels/cpu/attn_tmpl.h"
#include "kernels/cpu/mm_tmpl.h"
#endif
