/* Acceptance rules of speculative decoding; see verify.h. */
#include "target/verify.h"

#include <stddef.h>

static float q_of(const sd_probs *q, int32_t x, int32_t y) {
    if (!q) return y == x ? 1.0f : 0.0f;
    return q->p[y];
}

bool sd_spec_accept(const sd_probs *p, const sd_probs *q, int32_t x, float u) {
    float px = p->p[x], qx = q_of(q, x, x);
    if (qx <= 0.0f) return px > 0.0f; /* x could not have been drawn from q; never happens in practice */
    /* u < p/q without the division: accept with probability min(1, p/q) */
    return u * qx < px;
}

int32_t sd_spec_residual_draw(const sd_probs *p, const sd_probs *q, int32_t x, float u) {
    /* max(0, p - q) is zero wherever p is, so only p's support (p->ids) matters. Sums in double so
     * the cumulative walk and the total agree. */
    double z = 0.0;
    for (int i = 0; i < p->n; i++) {
        int32_t y = p->ids[i];
        double r = (double)p->p[y] - q_of(q, x, y);
        if (r > 0) z += r;
    }
    if (z <= 0.0) return sd_probs_draw(p, u);
    double target = (double)u * z, acc = 0.0;
    int32_t last = -1;
    for (int i = 0; i < p->n; i++) {
        int32_t y = p->ids[i];
        double r = (double)p->p[y] - q_of(q, x, y);
        if (r <= 0) continue;
        acc += r;
        last = y;
        if (target < acc) return y;
    }
    return last; /* rounding left target at the very end */
}

int sd_verify_greedy(const int32_t *argmax, const int32_t *draft, int k, int32_t *next) {
    int a = 0;
    while (a < k && argmax[a] == draft[a]) a++;
    *next = argmax[a];
    return a;
}

int sd_verify_sampled(const sd_sampling *s, const float *logits, int vocab, const int32_t *draft,
                      const sd_probs *q, int k, sd_rng *rng, sd_probs *p, int32_t *next) {
    /* k + 1 uniforms whatever happens: u[i] tests draft i, u[k] draws the final token (the device path,
     * backend.h's spec_accept, takes the same k + 1, so both leave the RNG in the same state) */
    for (int a = 0; a < k; a++) {
        sd_sampling_probs(s, logits + (size_t)a * vocab, vocab, p);
        const sd_probs *qa = q ? &q[a] : NULL;
        if (sd_spec_accept(p, qa, draft[a], sd_rng_f32(rng))) continue;
        for (int skip = a + 1; skip < k; skip++) sd_rng_f32(rng); /* the untested drafts' uniforms */
        *next = sd_spec_residual_draw(p, qa, draft[a], sd_rng_f32(rng));
        return a;
    }
    /* every draft accepted: the bonus token comes from the target's last distribution */
    sd_sampling_probs(s, logits + (size_t)k * vocab, vocab, p);
    *next = sd_probs_draw(p, sd_rng_f32(rng));
    return k;
}
