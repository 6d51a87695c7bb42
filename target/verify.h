/* Verification of a draft block against the target's distributions: the acceptance rules of speculative
 * decoding as pure functions (no models, no state beyond the RNG), so they are unit-testable.
 *
 * Greedy: accept drafts while each equals the target's argmax, then emit the target's own token.
 * Sampling (Leviathan et al. 2023; Chen et al. 2023): accept draft x with probability min(1, p(x)/q(x));
 * at the first rejection draw from normalize(max(0, p - q)); when every draft is accepted draw a bonus
 * token from the target's last distribution. The output is then distributed exactly as target sampling. */
#ifndef SD_VERIFY_H
#define SD_VERIFY_H
#include <stdbool.h>
#include <stdint.h>

#include "target/sampler.h"

/* A proposal made without a distribution (n-gram lookup) is a point mass: pass q = NULL for it. */

/* True when draft token x is accepted given target distribution p, draft distribution q (NULL: point
 * mass at x) and u uniform in [0,1): u < p(x)/q(x). */
bool sd_spec_accept(const sd_probs *p, const sd_probs *q, int32_t x, float u);

/* Draws from normalize(max(0, p - q)) with u uniform in [0,1) after x (drawn from q, or the point mass
 * when q is NULL) was rejected. When the residual is empty (p <= q everywhere, only possible by rounding)
 * it draws from p. */
int32_t sd_spec_residual_draw(const sd_probs *p, const sd_probs *q, int32_t x, float u);

/* Greedy verification of k drafts. argmax: k+1 target tokens, entry i the target's greedy choice after
 * the i-th block token (entry 0 follows the last accepted token). Returns the number of drafts accepted
 * (0..k) and sets *next to the target's token after them. */
int sd_verify_greedy(const int32_t *argmax, const int32_t *draft, int k, int32_t *next);

/* Speculative sampling over k drafts. q: k draft distributions (NULL: every proposal is a point mass).
 * p: scratch for the target distribution (initialised for vocab). Exactly k + 1 draws come from rng (one per
 * draft, the last for the final token), so a seeded request is reproducible and the RNG advances as on
 * a backend that verifies on the device (backend.h's spec_accept). Returns the
 * number accepted and sets *next to the residual or bonus token. */
int sd_verify_sampled(const sd_sampling *s, const float *logits, int vocab, const int32_t *draft,
                      const sd_probs *q, int k, sd_rng *rng, sd_probs *p, int32_t *next);

#endif
