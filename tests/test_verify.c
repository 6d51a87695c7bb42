/* Acceptance rules of speculative decoding (target/verify.c) and the adaptive draft length rule
 * (target/draft_len.c), without models. */
#include <math.h>
#include <stdint.h>

#include "target/draft_len.h"
#include "target/verify.h"
#include "test.h"
#include "tests/test_util.h"

/* A distribution set directly (p dense, ids in descending probability). */
static void set_probs(sd_probs *d, const float *p, int vocab) {
    d->n = 0;
    for (int i = 0; i < vocab; i++) {
        d->p[i] = p[i];
        if (p[i] > 0) d->ids[d->n++] = i;
    }
    for (int i = 1; i < d->n; i++)
        for (int j = i; j > 0 && d->p[d->ids[j]] > d->p[d->ids[j - 1]]; j--) {
            int32_t t = d->ids[j];
            d->ids[j] = d->ids[j - 1];
            d->ids[j - 1] = t;
        }
}

static void test_greedy_verify(void) {
    enum { V = 5, K = 4 };
    float lg[(K + 1) * V];
    int32_t argmax[K + 1] = {3, 1, 4, 0, 2};
    for (int r = 0; r <= K; r++)
        for (int i = 0; i < V; i++) lg[r * V + i] = i == argmax[r] ? 2.0f : -(float)i;
    int32_t am[K + 1]; /* what the target's rows choose, as the forward pass reports them */
    for (int r = 0; r <= K; r++) am[r] = sd_argmax(lg + r * V, V);
    int32_t next = -1;
    int32_t d1[K] = {3, 1, 2, 0}; /* third draft wrong */
    CHECK_EQ_INT(sd_verify_greedy(am, d1, K, &next), 2);
    CHECK_EQ_INT(next, 4);
    int32_t d2[K] = {3, 1, 4, 0}; /* all right: the target's token after them */
    CHECK_EQ_INT(sd_verify_greedy(am, d2, K, &next), K);
    CHECK_EQ_INT(next, 2);
    int32_t d3[K] = {0, 1, 4, 0}; /* first wrong */
    CHECK_EQ_INT(sd_verify_greedy(am, d3, K, &next), 0);
    CHECK_EQ_INT(next, 3);
    CHECK_EQ_INT(sd_verify_greedy(am, d3, 0, &next), 0); /* no drafts: a plain step */
    CHECK_EQ_INT(next, 3);
}

static void test_accept_and_residual(void) {
    enum { V = 4 };
    sd_probs p, q;
    REQUIRE(sd_probs_init(&p, V) == 0 && sd_probs_init(&q, V) == 0);
    set_probs(&p, (float[]){0.5f, 0.2f, 0.3f, 0.0f}, V);
    set_probs(&q, (float[]){0.1f, 0.4f, 0.1f, 0.4f}, V);
    /* p(1)/q(1) = 0.5 */
    CHECK(sd_spec_accept(&p, &q, 1, 0.49f));
    CHECK(!sd_spec_accept(&p, &q, 1, 0.51f));
    CHECK(sd_spec_accept(&p, &q, 0, 0.999f)); /* p >= q: always */
    CHECK(!sd_spec_accept(&p, &q, 3, 0.0f));  /* p = 0: never */
    /* point mass at x: accept with probability p(x) */
    CHECK(sd_spec_accept(&p, NULL, 2, 0.29f));
    CHECK(!sd_spec_accept(&p, NULL, 2, 0.31f));
    /* residual max(0, p - q) = {0.4, 0, 0.2, 0} -> {2/3, 0, 1/3, 0} */
    CHECK_EQ_INT(sd_spec_residual_draw(&p, &q, 1, 0.0f), 0);
    CHECK_EQ_INT(sd_spec_residual_draw(&p, &q, 1, 0.66f), 0);
    CHECK_EQ_INT(sd_spec_residual_draw(&p, &q, 1, 0.67f), 2);
    CHECK_EQ_INT(sd_spec_residual_draw(&p, &q, 1, 0.9999f), 2);
    /* point mass at 0: residual is p without token 0 = {0, 0.4, 0.6, 0} */
    CHECK_EQ_INT(sd_spec_residual_draw(&p, NULL, 0, 0.39f), 2); /* ids in descending p: 2 first */
    CHECK_EQ_INT(sd_spec_residual_draw(&p, NULL, 0, 0.61f), 1);
    /* p == q: empty residual falls back to p */
    int32_t y = sd_spec_residual_draw(&p, &p, 0, 0.1f);
    CHECK(p.p[y] > 0);
    sd_probs_free(&p);
    sd_probs_free(&q);
}

/* ---- exactness of speculative sampling, by simulation ----
 * Target and draft are Markov chains over V tokens (the next-token distribution depends on the previous
 * token, so a bonus token drawn from the wrong row or a wrong residual changes the output law). From a
 * fixed start token, the joint law of the first 3 generated tokens under speculative sampling must equal
 * plain sampling's: prod p(t_i | t_{i-1}) with p filtered exactly as the sampler filters it.
 * Chi-square over the V^3 = 216 cells, significance 0.001, 40000 trials per configuration. */
enum { MV = 6, MT = 3, TRIALS = 40000 };

static float P[MV][MV], Q[MV][MV];

/* Returns the chi-square statistic (and sets *df), or -1 when a cell of probability 0 was observed. */
static double run_chain(const sd_sampling *s, int k, bool point_mass, uint64_t seed, int *df) {
    static int count[MV * MV * MV];
    memset(count, 0, sizeof count);
    sd_probs p, qd[8], row;
    sd_probs_init(&p, MV);
    sd_probs_init(&row, MV);
    for (int i = 0; i < 8; i++) sd_probs_init(&qd[i], MV);
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    float logits[9 * MV];
    for (int t = 0; t < TRIALS; t++) {
        int32_t out[MT + 9];
        int n = 0, prev = 0;
        while (n < MT) {
            int32_t d[8];
            int c = prev;
            for (int i = 0; i < k; i++) { /* draft k tokens from the draft chain (or a fixed guess) */
                if (point_mass) {
                    d[i] = (c + 1) % MV;
                } else {
                    sd_sampling_probs(s, Q[c], MV, &qd[i]);
                    d[i] = sd_probs_draw(&qd[i], sd_rng_f32(&rng));
                }
                c = d[i];
            }
            c = prev;
            for (int i = 0; i <= k; i++) { /* target rows: after prev, then after each draft */
                memcpy(logits + i * MV, P[c], sizeof P[c]);
                if (i < k) c = d[i];
            }
            int32_t next;
            int a = sd_verify_sampled(s, logits, MV, d, point_mass ? NULL : qd, k, &rng, &p, &next);
            for (int i = 0; i < a; i++) out[n++] = d[i];
            out[n++] = next;
            prev = next;
        }
        count[(out[0] * MV + out[1]) * MV + out[2]]++;
    }
    /* expected: the law of plain sampling with the same filters */
    static double law[MV * MV * MV];
    for (int a = 0; a < MV; a++)
        for (int b = 0; b < MV; b++)
            for (int c = 0; c < MV; c++) {
                sd_sampling_probs(s, P[0], MV, &row);
                double e = row.p[a];
                sd_sampling_probs(s, P[a], MV, &row);
                e *= row.p[b];
                sd_sampling_probs(s, P[b], MV, &row);
                law[(a * MV + b) * MV + c] = e * row.p[c];
            }
    double chi = chi2_counts(count, law, MV * MV * MV, TRIALS, df);
    sd_probs_free(&p);
    sd_probs_free(&row);
    for (int i = 0; i < 8; i++) sd_probs_free(&qd[i]);
    return chi;
}

static void test_sampling_exact(void) {
    spec_chains(MV, &P[0][0], &Q[0][0]);
    sd_sampling plain = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f};
    sd_sampling filt = {.temperature = 0.7f, .top_k = 4, .top_p = 0.95f, .min_p = 0.02f};
    const sd_sampling *ss[] = {&plain, &filt};
    int ks[] = {1, 2, 4};
    for (int si = 0; si < 2; si++)
        for (int ki = 0; ki < 3; ki++)
            for (int pm = 0; pm < 2; pm++) {
                int df;
                double chi = run_chain(ss[si], ks[ki], pm, 1000 + si * 10 + ki * 2 + pm, &df);
                double crit = chi2_crit(df, 3.0902); /* upper 0.001 point */
                CHECKF(chi >= 0 && chi < crit, "sampling %d k=%d %s: chi2 %.1f (df %d, critical %.1f at 0.001)",
                       si, ks[ki], pm ? "point-mass drafts" : "drafts from q", chi, df, crit);
            }
}

static void test_draft_len(void) {
    /* Leviathan's formula at known points */
    CHECK_NEAR(sd_spec_expected_speedup(0.5, 1, 0.0), 1.5, 1e-12);
    CHECK_NEAR(sd_spec_expected_speedup(0.8, 4, 0.1), (1 - pow(0.8, 5)) / (0.2 * 1.4), 1e-12);
    CHECK_NEAR(sd_spec_expected_tokens(1.0, 4), 5.0, 1e-12);
    sd_draft_len d;
    sd_draft_len_init(&d, 1, 8, 0.05);
    CHECK(d.k >= 1 && d.k <= 8);
    for (int i = 0; i < 30; i++) sd_draft_len_update(&d, d.k, d.k); /* everything accepted */
    CHECK_EQ_INT(d.k, 8);
    CHECK(sd_draft_len_alpha(&d) > 0.9);
    for (int i = 0; i < 30; i++) sd_draft_len_update(&d, d.k, 0); /* everything rejected */
    CHECK_EQ_INT(d.k, 1);
    CHECK(sd_draft_len_alpha(&d) < 0.4);
    /* bounds hold and a costly draft drafts less than a free one at the same acceptance */
    sd_draft_len cheap, dear;
    sd_draft_len_init(&cheap, 2, 6, 0.0);
    sd_draft_len_init(&dear, 2, 6, 0.5);
    for (int i = 0; i < 30; i++) {
        sd_draft_len_update(&cheap, 4, i % 3 ? 4 : 1);
        sd_draft_len_update(&dear, 4, i % 3 ? 4 : 1);
    }
    CHECK(cheap.k >= 2 && cheap.k <= 6 && dear.k >= 2 && dear.k <= 6);
    CHECK(dear.k < cheap.k);
}

int main(void) {
    RUN(test_greedy_verify);
    RUN(test_accept_and_residual);
    RUN(test_sampling_exact);
    RUN(test_draft_len);
    return TEST_DONE();
}
