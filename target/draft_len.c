/* The adaptive draft length rule; see draft_len.h and docs/speculation.md. */
#include "target/draft_len.h"

#include <math.h>

/* A verify pass over k+1 tokens costs a little more than a one-token pass (decode is memory-bound, so
 * the extra tokens mostly reuse weights already read): this much of a pass per extra token. Measured with
 * `specd bench` on the bench-shape F16 target on this project's CPU: T(5)/T(1) = 1.30, T(9)/T(1) = 1.8. */
#define VERIFY_COST_PER_TOKEN 0.08
/* Prior: acceptance 0.6 worth 2 observations, so the first blocks are neither timid nor reckless. */
#define PRIOR_ALPHA 0.6
#define PRIOR_WEIGHT 2.0
/* Older blocks count less (per block), so k follows a request whose predictability changes. */
#define DECAY 0.9

double sd_spec_expected_tokens(double a, int k) {
    if (a >= 1.0) return k + 1;
    return (1.0 - pow(a, k + 1)) / (1.0 - a);
}

double sd_spec_expected_speedup(double a, int k, double c) {
    return sd_spec_expected_tokens(a, k) / (k * c + 1.0);
}

double sd_draft_len_alpha(const sd_draft_len *d) {
    /* Per-token acceptance is a geometric process: each block tests drafts until the first rejection,
     * so the estimate is accepted / (accepted + rejections); drafts after a rejection were never tested. */
    return (d->acc + PRIOR_ALPHA * PRIOR_WEIGHT) / (d->acc + d->rej + PRIOR_WEIGHT);
}

static int best_k(const sd_draft_len *d) {
    double a = sd_draft_len_alpha(d), best = -1;
    int bk = d->k_min;
    for (int k = d->k_min; k <= d->k_max; k++) {
        double s = sd_spec_expected_speedup(a, k, d->cost);
        if (s > best + 1e-12) {
            best = s;
            bk = k;
        }
    }
    return bk;
}

void sd_draft_len_init(sd_draft_len *d, int k_min, int k_max, double draft_cost) {
    d->k_min = k_min < 1 ? 1 : k_min;
    d->k_max = k_max < d->k_min ? d->k_min : k_max;
    d->cost = (draft_cost > 0 ? draft_cost : 0) + VERIFY_COST_PER_TOKEN;
    d->acc = d->rej = 0;
    d->k = best_k(d);
}

void sd_draft_len_update(sd_draft_len *d, int drafted, int accepted) {
    if (drafted <= 0) return;
    d->acc = d->acc * DECAY + accepted;
    d->rej = d->rej * DECAY + (accepted < drafted ? 1 : 0);
    d->k = best_k(d);
}
