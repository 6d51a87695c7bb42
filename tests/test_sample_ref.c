/* The device-sampling algorithm's plain-C reference (kernels/sample_ref.c, the math the CUDA kernels
 * share): its filtered distributions equal the host sampler's (target/sampler.c), its draws follow them,
 * and its speculative acceptance gives exactly target sampling's law (chi-square, with a deliberately
 * broken residual as the control that the test can fail). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/sample_math.h"
#include "kernels/sample_ref.h"
#include "target/sampler.h"
#include "test.h"
#include "tests/test_util.h"

/* Random logits of one of several shapes: smooth, coarse (many exact ties), with -inf and NaN holes. */
static void random_logits(sd_rng *r, float *x, int n, int shape) {
    for (int i = 0; i < n; i++) {
        float g = (sd_rng_f32(r) + sd_rng_f32(r) + sd_rng_f32(r) - 1.5f) * 6.0f;
        if (shape == 1) g = floorf(g * 2.0f) * 0.5f; /* ties */
        if (shape == 2 && sd_rng_f32(r) < 0.1f) g = -INFINITY;
        if (shape == 2 && sd_rng_f32(r) < 0.02f) g = NAN;
        x[i] = g;
    }
}

static void test_filter_matches_host(void) {
    const int widths[] = {5, 37, 300, 1500, 5000}; /* 1500, 5000: the host sorts by radix over 1024 */
    const float temps[] = {0.4f, 0.8f, 1.0f, 1.7f}, top_ps[] = {1.0f, 0.93f, 0.61f, 0.27f}, min_ps[] = {0.0f, 0.03f, 0.3f};
    const int top_ks[] = {0, 1, 3, 17, 200};
    sd_rng r;
    sd_rng_seed(&r, 11);
    float *logits = malloc(5000 * sizeof(float)), *ref = malloc(5000 * sizeof(float));
    sd_probs hosts[5];
    for (int i = 0; i < 5; i++) REQUIRE(sd_probs_init(&hosts[i], widths[i]) == 0);
    int cases = 0, bad_support = 0, bad_value = 0, partial = 0; /* partial: cases that filtered something */
    double worst = 0;
    for (int trial = 0; trial < 1500; trial++) {
        int n = widths[trial % 5];
        random_logits(&r, logits, n, trial / 5 % 3);
        sd_sampling s = {.temperature = temps[trial % 4], .top_k = top_ks[trial / 4 % 5],
                         .top_p = top_ps[trial / 3 % 4], .min_p = min_ps[trial / 7 % 3]};
        if (trial % 11 == 0) s.top_k = n - 1; /* the k-th value is the smallest: the tie rule decides */
        sd_sample_cfg c = sd_sampling_cfg(&s);
        sd_probs host = hosts[trial % 5];
        sd_sampling_probs(&s, logits, n, &host);
        sd_sample_ref_row(ref, logits, n, &c);
        cases++;
        partial += host.n > 1 && host.n < n;
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += ref[i];
            if ((ref[i] > 0) != (host.p[i] > 0)) {
                if (bad_support++ < 5)
                    printf("# support differs: trial %d n %d id %d ref %g host %g (T %g k %d p %g m %g)\n", trial,
                           n, i, ref[i], host.p[i], s.temperature, s.top_k, s.top_p, s.min_p);
                continue;
            }
            double d = fabs((double)ref[i] - host.p[i]);
            if (d > worst) worst = d;
            if (d > 1e-6 + 2e-6 * host.p[i]) bad_value++;
        }
        CHECKF(fabs(sum - 1.0) < 1e-5, "trial %d: sum %g", trial, sum);
    }
    printf("# %d cases (%d with a partial support), largest |ref - host| %.3g\n", cases, partial, worst);
    CHECK(partial > cases / 2);
    CHECK_EQ_INT(bad_support, 0);
    CHECK_EQ_INT(bad_value, 0);
    free(logits);
    free(ref);
    for (int i = 0; i < 5; i++) sd_probs_free(&hosts[i]);
}

/* Degenerate rows: greedy configurations, all -inf, a NaN everywhere but one. */
static void test_filter_edges(void) {
    float x[6] = {1, 5, 5, -2, 0, 3}, p[6];
    sd_sample_cfg greedy = {.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0};
    sd_sample_ref_row(p, x, 6, &greedy);
    CHECK(p[1] == 1.0f && p[2] == 0.0f);
    sd_sample_cfg k2 = {.temperature = 1, .top_k = 2, .top_p = 1, .min_p = 0};
    sd_sample_ref_row(p, x, 6, &k2); /* the two 5s */
    CHECK(p[1] == 0.5f && p[2] == 0.5f && p[5] == 0.0f);
    sd_sample_cfg k1tie = {.temperature = 1, .top_k = 3, .top_p = 1, .min_p = 0};
    float y[6] = {2, 1, 1, 1, 0, 1};
    sd_sample_ref_row(p, y, 6, &k1tie); /* 2, then the first two 1s in id order */
    CHECK(p[0] > 0 && p[1] > 0 && p[2] > 0 && p[3] == 0 && p[5] == 0);
    float inf[3] = {-INFINITY, -INFINITY, -INFINITY};
    sd_sample_ref_row(p, inf, 3, &k2);
    CHECK(p[0] == 1.0f);
    float nan[3] = {NAN, 0.5f, NAN};
    sd_sample_ref_row(p, nan, 3, &k2);
    CHECK(p[1] == 1.0f && p[0] == 0.0f);
    /* keys order like the floats */
    CHECK(sd_logit_key(-1.0f) < sd_logit_key(-0.5f) && sd_logit_key(-0.0f) == sd_logit_key(0.0f));
    CHECK(sd_logit_key(NAN) < sd_logit_key(-INFINITY) && sd_logit_key(1e-30f) > sd_logit_key(0.0f));
    /* draws: u = 0 takes the first id with mass, u just below 1 the last */
    float d[4] = {0, 0.25f, 0.5f, 0.25f};
    CHECK_EQ_INT(sd_sample_ref_draw(d, 4, 0.0f), 1);
    CHECK_EQ_INT(sd_sample_ref_draw(d, 4, 0.3f), 2);
    CHECK_EQ_INT(sd_sample_ref_draw(d, 4, 0.9999999f), 3);
}

static void test_draws_follow_distribution(void) {
    enum { N = 40, TRIALS = 60000 };
    float logits[N], p[N];
    sd_rng r;
    sd_rng_seed(&r, 5);
    random_logits(&r, logits, N, 0);
    sd_sample_cfg c = {.temperature = 0.9f, .top_k = 20, .top_p = 0.95f, .min_p = 0.01f};
    sd_sample_ref_row(p, logits, N, &c);
    int count[N] = {0};
    for (int t = 0; t < TRIALS; t++) count[sd_sample_ref_draw(p, N, sd_rng_f32(&r))]++;
    double pd[N];
    for (int i = 0; i < N; i++) pd[i] = p[i];
    int df;
    double chi = chi2_counts(count, pd, N, TRIALS, &df), crit = chi2_crit(df, 3.0902);
    CHECKF(chi >= 0 && chi < crit, "draws: chi2 %.1f (df %d, critical %.1f at 0.001)", chi, df, crit);
}

/* Speculative sampling on a Markov chain (as tests/test_verify.c does for the host rules): target rows
 * P, draft rows Q, the joint law of the first 3 tokens must be plain sampling's. */
enum { MV = 6, MT = 3, CHAIN_TRIALS = 30000 };
static float P[MV][MV], Q[MV][MV];

typedef int (*accept_fn)(sd_backend *, int32_t *, const float *, const float *, const int32_t *, int, int,
                         const float *);

/* The control: a broken residual (draws from p instead of max(0, p - q) after a rejection). */
static int broken_accept(sd_backend *b, int32_t *next, const float *p, const float *q, const int32_t *draft, int k,
                         int width, const float *u) {
    for (int i = 0; i < k; i++) {
        const float *pi = p + (size_t)i * width;
        if (sd_spec_accepts(pi[draft[i]], q ? q[(size_t)i * width + draft[i]] : 1.0f, u[i])) continue;
        *next = sd_sample_ref_draw(pi, width, u[k]);
        return i;
    }
    *next = sd_sample_ref_draw(p + (size_t)k * width, width, u[k]);
    return k;
}

static double run_chain(accept_fn accept, const sd_sample_cfg *c, int k, bool point_mass, uint64_t seed, int *df) {
    static int count[MV * MV * MV];
    memset(count, 0, sizeof count);
    float prow[5][MV], qrow[4][MV], u[5];
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    for (int t = 0; t < CHAIN_TRIALS; t++) {
        int32_t out[MT + 6];
        int n = 0, prev = 0;
        while (n < MT) {
            int32_t d[4];
            int cur = prev;
            for (int i = 0; i < k; i++) {
                if (point_mass) {
                    d[i] = (cur + 1) % MV;
                } else {
                    sd_sample_ref_row(qrow[i], Q[cur], MV, c);
                    d[i] = sd_sample_ref_draw(qrow[i], MV, sd_rng_f32(&rng));
                }
                cur = d[i];
            }
            cur = prev;
            for (int i = 0; i <= k; i++) {
                sd_sample_ref_row(prow[i], P[cur], MV, c);
                if (i < k) cur = d[i];
            }
            for (int i = 0; i <= k; i++) u[i] = sd_rng_f32(&rng);
            int32_t next;
            int a = accept(NULL, &next, prow[0], point_mass ? NULL : qrow[0], d, k, MV, u);
            for (int i = 0; i < a; i++) out[n++] = d[i];
            out[n++] = next;
            prev = next;
        }
        count[(out[0] * MV + out[1]) * MV + out[2]]++;
    }
    /* expected: plain sampling's law, filtered by the host sampler (an independent implementation) */
    static double law[MV * MV * MV];
    sd_probs row;
    sd_probs_init(&row, MV);
    sd_sampling s = {.temperature = c->temperature, .top_k = c->top_k, .top_p = c->top_p, .min_p = c->min_p};
    double pr[MV][MV];
    for (int a = 0; a < MV; a++) {
        sd_sampling_probs(&s, P[a], MV, &row);
        for (int b = 0; b < MV; b++) pr[a][b] = row.p[b];
    }
    sd_probs_free(&row);
    for (int a = 0; a < MV; a++)
        for (int b = 0; b < MV; b++)
            for (int e = 0; e < MV; e++) law[(a * MV + b) * MV + e] = pr[0][a] * pr[a][b] * pr[b][e];
    return chi2_counts(count, law, MV * MV * MV, CHAIN_TRIALS, df);
}

static void test_spec_accept_law(void) {
    spec_chains(MV, &P[0][0], &Q[0][0]);
    sd_sample_cfg plain = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f};
    sd_sample_cfg filt = {.temperature = 0.7f, .top_k = 4, .top_p = 0.95f, .min_p = 0.02f};
    const sd_sample_cfg *cs[] = {&plain, &filt};
    for (int ci = 0; ci < 2; ci++)
        for (int k = 1; k <= 4; k += 3)
            for (int pm = 0; pm < 2; pm++) {
                int df;
                double chi = run_chain(sd_spec_accept_ref, cs[ci], k, pm, 100 + ci * 10 + k * 2 + pm, &df);
                double crit = chi2_crit(df, 3.0902);
                CHECKF(chi >= 0 && chi < crit, "cfg %d k=%d %s: chi2 %.1f (df %d, critical %.1f at 0.001)", ci, k,
                       pm ? "point masses" : "drafts from q", chi, df, crit);
            }
    /* the control: with a broken residual the same test must fail, for q and for point masses */
    for (int pm = 0; pm < 2; pm++) {
        int df;
        double chi = run_chain(broken_accept, &plain, 1, pm, 999, &df);
        CHECKF(chi < 0 || chi > 3 * chi2_crit(df, 3.0902), "broken residual (%s) passed: chi2 %.1f df %d",
               pm ? "point masses" : "q", chi, df);
    }
}

int main(void) {
    RUN(test_filter_matches_host);
    RUN(test_filter_edges);
    RUN(test_draws_follow_distribution);
    RUN(test_spec_accept_law);
    return TEST_DONE();
}
