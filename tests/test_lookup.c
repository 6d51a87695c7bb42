/* N-gram lookup proposer (draft/lookup.c): what it proposes, against a brute-force reference, under
 * incremental growth and rollbacks. */
#include <stdint.h>

#include "draft/proposer.h"
#include "test.h"

/* Reference: the tokens after the most recent earlier occurrence of the last n tokens, continuing into
 * the proposal itself when the match runs into the present. */
static int ref_propose(const int32_t *h, int len, int n, int k, int32_t *out) {
    if (len <= n) return 0;
    for (int j = len - 2; j >= n - 1; j--) {
        if (memcmp(h + j - n + 1, h + len - n, (size_t)n * sizeof *h)) continue;
        int32_t ext[4096];
        memcpy(ext, h, (size_t)len * sizeof *h);
        for (int i = 0; i < k; i++) out[i] = ext[len + i] = ext[j + 1 + i];
        return k;
    }
    return 0;
}

static int propose(sd_proposer *p, const int32_t *h, int len, int k, int32_t *out) {
    sd_sampling g = sd_sampling_greedy();
    sd_draft_opts o = {.sampling = &g};
    sd_proposal pr;
    sd_err err;
    if (p->propose(p, h, len, k, &o, &pr, &err)) return -1;
    CHECK(pr.q == NULL);
    memcpy(out, pr.tokens, (size_t)pr.n * sizeof *out);
    return pr.n;
}

static void test_lookup_examples(void) {
    sd_proposer *p;
    sd_err err;
    REQUIRE(sd_prop_lookup_new(2, 8, &p, &err) == 0);
    int32_t h[] = {10, 11, 12, 13, 10, 11}; /* "10 11" occurred at 0..1, followed by 12 13 10 11 */
    int32_t out[8];
    CHECK_EQ_INT(propose(p, h, 6, 4, out), 4);
    CHECK(out[0] == 12 && out[1] == 13 && out[2] == 10 && out[3] == 11);
    CHECK_EQ_INT(propose(p, h, 6, 6, out), 6); /* continues the repeating pattern */
    CHECK(out[4] == 12 && out[5] == 13);
    int32_t h2[] = {1, 2, 9, 1, 2, 7, 1, 2}; /* most recent earlier occurrence wins: 7 */
    p->invalidate(p, 0); /* a different history from here on */
    CHECK_EQ_INT(propose(p, h2, 8, 1, out), 1);
    CHECK_EQ_INT(out[0], 7);
    int32_t h3[] = {1, 2, 3, 4};
    p->invalidate(p, 0);
    CHECK_EQ_INT(propose(p, h3, 4, 4, out), 0); /* no earlier occurrence */
    CHECK_EQ_INT(propose(p, h3, 2, 4, out), 0); /* history no longer than n */
    sd_proposer_free(p);
    CHECK(sd_prop_lookup_new(0, 8, &p, &err) == -1);
    CHECK(strstr(err.msg, "n-gram") != NULL);
}

static void test_lookup_vs_reference(void) {
    sd_rng r;
    sd_rng_seed(&r, 42);
    for (int n = 1; n <= 4; n++) {
        sd_proposer *p;
        sd_err err;
        REQUIRE(sd_prop_lookup_new(n, 8, &p, &err) == 0);
        int32_t h[3000];
        int len = 1, mismatches = 0;
        h[0] = 0;
        for (int step = 0; step < 2500; step++) {
            int action = (int)(sd_rng_u64(&r) % 100);
            if (action < 3 && len > 2) { /* a new request that shares a prefix: cut back */
                len = 1 + (int)(sd_rng_u64(&r) % (uint64_t)(len - 1));
                p->invalidate(p, len);
            }
            int add = 1 + (int)(sd_rng_u64(&r) % 3);
            for (int i = 0; i < add && len < 2990; i++) h[len++] = (int32_t)(sd_rng_u64(&r) % 4);
            if (action >= 97 && len > 1) { /* the last token rewritten (after saying so) */
                p->invalidate(p, len - 1);
                h[len - 1] = (h[len - 1] + 1) % 4;
            }
            int k = 1 + (int)(sd_rng_u64(&r) % 8);
            int32_t a[8], b[8];
            int na = propose(p, h, len, k, a), nb = ref_propose(h, len, n, k, b);
            if (na != nb || memcmp(a, b, (size_t)na * sizeof *a)) mismatches++;
            if (len >= 2990) len = 1;
        }
        CHECKF(mismatches == 0, "n=%d: %d proposals differ from the reference", n, mismatches);
        sd_proposer_free(p);
    }
}

/* A long history is indexed incrementally: proposing after each of 200000 tokens stays fast (a rescan
 * per step would be quadratic: ~10^10 token comparisons). */
static void test_lookup_long(void) {
    sd_proposer *p;
    sd_err err;
    REQUIRE(sd_prop_lookup_new(3, 8, &p, &err) == 0);
    enum { N = 200000 };
    int32_t *h = malloc(N * sizeof *h);
    REQUIRE(h);
    sd_rng r;
    sd_rng_seed(&r, 1);
    for (int i = 0; i < N; i++) h[i] = (int32_t)(sd_rng_u64(&r) % 1000);
    int32_t out[8];
    int hits = 0;
    for (int len = 1; len <= N; len++) hits += propose(p, h, len, 4, out) > 0;
    CHECK(hits > 0);
    /* the last 3 tokens copied from earlier must find that place */
    p->invalidate(p, N - 3);
    memcpy(h + N - 3, h + 100, 3 * sizeof *h);
    CHECK_EQ_INT(propose(p, h, N, 4, out), 4);
    CHECK_EQ_INT(out[0], h[103]);
    free(h);
    sd_proposer_free(p);
}

int main(void) {
    RUN(test_lookup_examples);
    RUN(test_lookup_vs_reference);
    RUN(test_lookup_long);
    return TEST_DONE();
}
