/* AVX + FMA + F16C kernels (no AVX2: integer work stays in 128-bit halves). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/quant.h"

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
#define VADD(a, b) _mm256_add_ps(a, b)
#define R_FEW 1
#define R_MANY 2
#define N_MAX 5
#define QR_FEW 1
#define QR_MANY 1
#define QN_MAX 6
#define MB_MIN_F16 9 /* blocked from 9 activations; F32 and Q8_0 measured no faster blocked */
#define MB_R 3      /* blocked register tile 3 rows x 4 activations: 12 accumulators + 3 weight vectors + */
#define MB_N 4      /* one activation vector = the 16 registers (2 x 5 measured 5-10% slower, 2 x 6 too) */
#define MB_ROWS 24  /* rows per block: a multiple of MB_R */
#define KNAME sd_kernels_avx
#define KLEVEL SD_SIMD_AVX
#define KSTR "avx"
#define QI_HALVES /* qi.h: integer vectors as two 128-bit halves */
#define QN 3      /* quant_tmpl.h: activations per register tile (halves take two registers each) */

/* bf16 -> f32 is a 16-bit shift: interleaving zeros below each value does it without AVX2. */
TGT static inline __m256 bf16x8(const uint16_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p), z = _mm_setzero_si128();
    __m128i lo = _mm_unpacklo_epi16(z, v), hi = _mm_unpackhi_epi16(z, v);
    return _mm256_castsi256_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}


/* Q8_0 block dot in 128-bit halves (no AVX2): |w| (unsigned) times x with w's sign, pairs to int16 (no
 * saturation since |x| <= 127), then to int32: 4 partial sums of a block. The loop is bound by its
 * instruction count (about 4 per cycle), so |w| and the sign take w straight from memory (vpabsb m128,
 * vpsignb m128; in C the compiler would load w once into a register: one instruction more per half).
 * |x| times w with x's sign would need no |w|, but w = -128 has no int8 negation; |w| and the signs by
 * min/sub/blend or xor/sub masks (ops off the multiply pipes) measured slower: more instructions. */
TGT static inline __attribute__((always_inline)) __m128i q8_half(const int8_t *w, const int8_t *x) {
    __m128i xv = _mm_loadu_si128((const __m128i *)x), aw, sx;
    __asm__("vpabsb %1, %0" : "=x"(aw) : "m"(*(const __m128i_u *)w));
    __asm__("vpsignb %2, %1, %0" : "=x"(sx) : "x"(xv), "m"(*(const __m128i_u *)w));
    return _mm_madd_epi16(_mm_maddubs_epi16(aw, sx), _mm_set1_epi16(1));
}

TGT static inline __attribute__((always_inline)) __m128i q8_part4(const sd_block_q8_0 *b, const int8_t *x) {
    return _mm_add_epi32(q8_half(b->qs, x), q8_half(b->qs + 16, x + 16));
}

/* 4 blocks' partial sums reduced to their 4 sums (lane i: block i), exact in int32, by a transpose with
 * unpacks and adds (phaddd costs several multiply-pipe slots). */
TGT static inline __attribute__((always_inline)) __m128i q8_sum4(const sd_block_q8_0 *b, const int8_t *x) {
    __m128i s0 = q8_part4(b, x), s1 = q8_part4(b + 1, x + 32), s2 = q8_part4(b + 2, x + 64),
            s3 = q8_part4(b + 3, x + 96);
    __m128i u01 = _mm_add_epi32(_mm_unpacklo_epi32(s0, s1), _mm_unpackhi_epi32(s0, s1)); /* s0 s1 s0 s1 */
    __m128i u23 = _mm_add_epi32(_mm_unpacklo_epi32(s2, s3), _mm_unpackhi_epi32(s2, s3));
    return _mm_add_epi32(_mm_unpacklo_epi64(u01, u23), _mm_unpackhi_epi64(u01, u23));
}

TGT static inline __attribute__((always_inline)) __m256 q8_dot8(const sd_block_q8_0 *b, const int8_t *x) {
    __m128i lo = q8_sum4(b, x), hi = q8_sum4(b + 4, x + 128);
    return _mm256_cvtepi32_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

TGT static inline __attribute__((always_inline)) int q8_dot1(const sd_block_q8_0 *b, const int8_t *x) {
    __m128i s = q8_part4(b, x);
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)));
}

#define Q8_DOT8(b, x, xs) q8_dot8(b, x)
#define Q8_DOT1(b, x, xs) q8_dot1(b, x)

#include "kernels/cpu/attn_tmpl.h"
#include "kernels/cpu/mm_tmpl.h"
#endif
