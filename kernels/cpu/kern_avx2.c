/* AVX2 kernels: as the AVX ones, with 256-bit integer conversions for BF16 and Q8_0. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>

#include "kernels/quant.h"

#define TGT __attribute__((target("avx2,fma,f16c")))
#define V __m256
#define VW 8
#define V256_AVX2 /* v256.h: the integer helpers too */
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
#define VADD(a, b) _mm256_add_ps(a, b)
#define R_FEW 1
#define R_MANY 2
#define N_MAX 5
#define QR_FEW 1
#define QR_MANY 1
#define QN_MAX 6
#define MB_MIN_F16 9 /* blocked from 9 activations; F32 measured no faster blocked */
#define MB_R 3      /* blocked register tile 3 rows x 4 activations: 12 accumulators + 3 weight vectors + */
#define MB_N 4      /* one activation vector = the 16 registers (2 x 5 measured 5-10% slower, 2 x 6 too) */
#define MB_ROWS 24  /* rows per block: a multiple of MB_R */
#define MB_MIN_Q8 9 /* Q8_0 blocked (q8b_tmpl.h) from 9 activations: 1.3-2x the small path at 12-64 */
#define KNAME sd_kernels_avx2
#define KLEVEL SD_SIMD_AVX2
#define KSTR "avx2"

/* Q8_0 block dot: |w| (unsigned) times x with w's sign, pairs summed to int16 (at most 2*128*127, no
 * saturation since |x| <= 127), then to int32: 8 partial sums of a block. */
TGT static inline __attribute__((always_inline)) __m256i q8_part8(const sd_block_q8_0 *b, const int8_t *x) {
    __m256i w = _mm256_loadu_si256((const __m256i *)b->qs), xv = _mm256_loadu_si256((const __m256i *)x);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* The exact int32 sums of 8 blocks (lane i: block i). */
TGT static inline __attribute__((always_inline)) __m256 q8_dot8(const sd_block_q8_0 *b, const int8_t *x) {
    __m256i s[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) s[i] = q8_part8(b + i, x + 32 * i);
    return _mm256_cvtepi32_ps(v256_sum8x8_epi32(s));
}

TGT static inline __attribute__((always_inline)) int q8_dot1(const sd_block_q8_0 *b, const int8_t *x) {
    __m256i s = q8_part8(b, x);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 1)));
}

#define Q8_DOT8(b, x, xs) q8_dot8(b, x)
#define Q8_DOT1(b, x, xs) q8_dot1(b, x)

#include "kernels/cpu/attn_tmpl.h"
#include "kernels/cpu/mm_tmpl.h"
#endif
