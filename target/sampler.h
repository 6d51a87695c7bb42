/* Sampling: the filtered distribution (temperature, top-k, top-p, min-p) and draws from it.
 * Speculative sampling needs p (target) and q (draft) filtered identically, so the distribution is a
 * first-class result (sd_probs), not hidden inside a "sample" call. */
#ifndef SD_SAMPLER_H
#define SD_SAMPLER_H
#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"

typedef struct sd_sampling {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1: off */
    float min_p;       /* <= 0: off */
    uint64_t seed;
} sd_sampling;

sd_sampling sd_sampling_greedy(void);
/* The filters as a backend's sample_rows takes them (kernels/backend.h). */
sd_sample_cfg sd_sampling_cfg(const sd_sampling *s);
bool sd_sampling_is_greedy(const sd_sampling *s);

/* Deterministic RNG (xoshiro-style), same sequence on every machine and thread count. */
typedef struct sd_rng { uint64_t s[4]; } sd_rng;
void sd_rng_seed(sd_rng *r, uint64_t seed);
uint64_t sd_rng_u64(sd_rng *r);
float sd_rng_f32(sd_rng *r); /* uniform in [0, 1) */

/* A distribution over the vocabulary after filtering: p is dense (vocab entries, zeros for filtered
 * tokens, summing to 1); ids lists the n tokens with non-zero probability, in descending probability. */
typedef struct sd_probs {
    int vocab;
    float *p;
    int n;
    int32_t *ids;
} sd_probs;
int sd_probs_init(sd_probs *d, int vocab);
void sd_probs_free(sd_probs *d);

/* Fills d with the filtered distribution of logits. Greedy gives the one-hot argmax distribution.
 * Filters apply in the order: temperature, top-k, top-p, min-p (then renormalise). */
void sd_sampling_probs(const sd_sampling *s, const float *logits, int vocab, sd_probs *d);
/* Draws from d with u uniform in [0,1). */
int32_t sd_probs_draw(const sd_probs *d, float u);
/* Index of the largest logit (lowest index on ties). */
int32_t sd_argmax(const float *x, int n);

#endif
