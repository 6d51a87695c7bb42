/* Sampling without a sort: the per-element math shared by the plain-C reference (kernels/sample_ref.c)
 * and the CUDA kernels (kernels/cuda/sample.cu), so the CPU tests cover what the GPU computes.
 *
 * The filters keep a prefix of the order "value descending, id ascending" (target/sampler.c's order), so
 * each is a threshold: the kept set is every element above a value plus the first few ties at it in id
 * order. The threshold is found by a radix select from the top digit of an order key (8 bits a pass, a
 * histogram per pass); top-k counts elements, top-p sums masses. Masses are fixed point (p * 2^38 as an
 * integer), so sums are exact whatever the order of the additions: a GPU block gets the same threshold
 * and the same draw as this reference, run to run. A draw walks the ids in ascending order. */
#ifndef SD_SAMPLE_MATH_H
#define SD_SAMPLE_MATH_H
#include <stdbool.h>
#include <stdint.h>

#include "kernels/quant.h"

#define SD_RADIX_BINS 256       /* 8-bit digits: 4 passes over a 32-bit key */
#define SD_MASS_ONE 274877906944.0 /* 2^38: probability 1 in fixed point; sums of masses stay below 2^40 */

static inline SD_HD bool sd_sample_greedy(const sd_sample_cfg *c) { return c->temperature <= 0.0f || c->top_k == 1; }

/* Unsigned order key of a logit: key(a) > key(b) iff a > b (NaN lowest, -0 == +0). */
static inline SD_HD uint32_t sd_logit_key(float x) {
    if (x != x) return 0;
    if (x == 0.0f) x = 0.0f;
    uint32_t b = sd_f32_bits(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* Order key of a probability (>= 0): the float bits, which order like the values. */
static inline SD_HD uint32_t sd_prob_key(float p) { return p > 0.0f ? sd_f32_bits(p) : 0u; }

/* Fixed-point mass of a probability, rounded to nearest. */
static inline SD_HD uint64_t sd_mass_fp(float p) { return p > 0.0f ? (uint64_t)((double)p * SD_MASS_ONE + 0.5) : 0; }

/* Fixed-point mass that top-p must reach: cumulative >= top_p, so the ceiling; at least 1 (keep one). */
static inline SD_HD uint64_t sd_top_p_need(float top_p) {
    double x = (double)top_p * SD_MASS_ONE;
    uint64_t n = (uint64_t)x;
    if ((double)n < x) n++;
    return n ? n : 1;
}

/* One digit of a radix select from the top: hist[d] is the amount (count or mass) of the candidates
 * whose current digit is d. Returns the digit at which the amount from the top first reaches need and
 * the amount in higher digits in *above; -1 when the total falls short. */
static inline SD_HD int sd_radix_pick(const uint64_t *hist, uint64_t need, uint64_t *above) {
    uint64_t acc = 0;
    for (int d = SD_RADIX_BINS - 1; d >= 0; d--) {
        if (acc + hist[d] >= need) {
            *above = acc;
            return d;
        }
        acc += hist[d];
    }
    *above = acc;
    return -1;
}

/* The candidates that share the selected key's digits above `shift` (shift 24: all of them). */
static inline SD_HD bool sd_radix_match(uint32_t key, uint32_t prefix, int shift) {
    return shift >= 24 || (key >> (shift + 8)) == (prefix >> (shift + 8));
}

/* Ties at the threshold to keep: the remaining need over the amount of one tie (1, or its mass). */
static inline SD_HD uint64_t sd_ties_needed(uint64_t rest, uint64_t unit) { return unit ? (rest + unit - 1) / unit : rest; }

/* Kept by a threshold filter: above the threshold key, or a tie no later in id order than last_tie. */
static inline SD_HD bool sd_keep_ranked(uint32_t key, int32_t id, uint32_t thr, int32_t last_tie) {
    return key > thr || (key == thr && id <= last_tie);
}

/* Speculative acceptance of draft x: u < p(x)/q(x) without the division. q(x) = 0 cannot come from a
 * draw of q; then accept exactly when the target allows x. */
static inline SD_HD bool sd_spec_accepts(float px, float qx, float u) {
    if (qx <= 0.0f) return px > 0.0f;
    return u * qx < px;
}

/* The residual distribution's unnormalised value at y after draft x was rejected: max(0, p - q), with
 * q the point mass at x when the draft has no distribution (qrow NULL). */
static inline SD_HD float sd_residual_at(const float *prow, const float *qrow, int32_t x, int32_t y) {
    float q = qrow ? qrow[y] : (y == x ? 1.0f : 0.0f);
    float r = prow[y] - q;
    return r > 0.0f ? r : 0.0f;
}

/* Inverse CDF in fixed point: the draw is the element whose cumulative interval [before, before + mass)
 * holds target = floor(u * total), u with 24 bits (sd_rng_f32's resolution). total < 2^40 keeps the
 * product in 64 bits. */
static inline SD_HD uint64_t sd_draw_target(float u, uint64_t total) {
    float s = u * 16777216.0f;
    uint64_t m = s > 0.0f ? (s < 16777215.0f ? (uint64_t)s : 16777215u) : 0;
    return (m * total) >> 24;
}

static inline SD_HD bool sd_draw_hit(uint64_t before, uint64_t mass, uint64_t target) {
    return mass > 0 && before <= target && target - before < mass;
}

#endif
