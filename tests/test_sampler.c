/* Sampler: RNG determinism, greedy/argmax, each filter against a plain reference implementation, large
 * vocabularies (the fast paths), and draw statistics (chi-square). */
#include "target/sampler.h"
#include "tests/test.h"

/* ---- reference: the filters written the obvious way (full sort, doubles) ---- */
typedef struct { double p; int id; } ref_c;
static int ref_cmp(const void *a, const void *b) {
    const ref_c *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}
/* Writes the reference filtered distribution into out[vocab]; returns the number kept. */
static int ref_probs(const sd_sampling *s, const float *logits, int vocab, double *out) {
    ref_c *c = malloc(sizeof *c * vocab);
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < vocab; i++) if (logits[i] > mx) mx = logits[i];
    for (int i = 0; i < vocab; i++) { c[i].p = exp((logits[i] - mx) / s->temperature); c[i].id = i; sum += c[i].p; }
    for (int i = 0; i < vocab; i++) c[i].p /= sum;
    qsort(c, vocab, sizeof *c, ref_cmp);
    int n = vocab;
    if (s->top_k > 0 && s->top_k < n) n = s->top_k;
    sum = 0; for (int i = 0; i < n; i++) sum += c[i].p;
    for (int i = 0; i < n; i++) c[i].p /= sum;
    if (s->top_p < 1) {
        double cum = 0; int keep = n;
        for (int i = 0; i < n; i++) { cum += c[i].p; if (cum >= s->top_p) { keep = i + 1; break; } }
        n = keep;
    }
    if (s->min_p > 0) { int keep = 1; while (keep < n && c[keep].p >= s->min_p * c[0].p) keep++; n = keep; }
    sum = 0; for (int i = 0; i < n; i++) sum += c[i].p;
    for (int i = 0; i < vocab; i++) out[i] = 0;
    for (int i = 0; i < n; i++) out[c[i].id] = c[i].p / sum;
    free(c);
    return n;
}

static void random_logits(float *l, int n, uint64_t seed, float scale) {
    sd_rng r; sd_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) l[i] = (sd_rng_f32(&r) - 0.5f) * scale;
}

/* Checks d against the reference: same support, probabilities within tol, ids in descending order. */
static void check_against_ref(const sd_sampling *s, const float *l, int vocab, double tol) {
    sd_probs d; REQUIRE(sd_probs_init(&d, vocab) == 0);
    double *ref = malloc(sizeof *ref * vocab);
    sd_sampling_probs(s, l, vocab, &d);
    int n = ref_probs(s, l, vocab, ref);
    CHECK_EQ_INT(d.n, n);
    int bad = 0; double sum = 0;
    for (int i = 0; i < vocab; i++) {
        sum += d.p[i];
        if ((d.p[i] > 0) != (ref[i] > 0) || fabs(d.p[i] - ref[i]) > tol) bad++;
    }
    CHECKF(bad == 0, "%d tokens differ from the reference (T=%g k=%d p=%g minp=%g)", bad, s->temperature,
           s->top_k, s->top_p, s->min_p);
    CHECK_NEAR(sum, 1.0, 1e-4);
    for (int i = 1; i < d.n; i++) CHECK(d.p[d.ids[i - 1]] >= d.p[d.ids[i]]);
    for (int i = 0; i < d.n; i++) CHECK(d.p[d.ids[i]] > 0);
    free(ref); sd_probs_free(&d);
}

static void test_rng_reproducible(void) {
    sd_rng a, b, c;
    sd_rng_seed(&a, 42); sd_rng_seed(&b, 42); sd_rng_seed(&c, 43);
    int same = 1, differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = sd_rng_u64(&a), y = sd_rng_u64(&b), z = sd_rng_u64(&c);
        if (x != y) same = 0;
        if (x != z) differ++;
    }
    CHECK(same);
    CHECK(differ > 990);
    sd_rng_seed(&a, 7);
    double mean = 0; int out_of_range = 0;
    for (int i = 0; i < 100000; i++) { float u = sd_rng_f32(&a); if (u < 0 || u >= 1) out_of_range++; mean += u; }
    CHECK_EQ_INT(out_of_range, 0);
    CHECK_NEAR(mean / 100000, 0.5, 0.01); /* sd of the mean is 0.0009 */
}

static void test_greedy_is_argmax(void) {
    float l[100];
    random_logits(l, 100, 5, 10);
    int32_t am = sd_argmax(l, 100);
    for (int i = 0; i < 100; i++) CHECK(l[i] <= l[am]);
    sd_probs d; REQUIRE(sd_probs_init(&d, 100) == 0);
    sd_sampling g = sd_sampling_greedy();
    CHECK(sd_sampling_is_greedy(&g));
    sd_sampling_probs(&g, l, 100, &d);
    CHECK_EQ_INT(d.n, 1);
    CHECK_EQ_INT(d.ids[0], am);
    CHECK(d.p[am] == 1.0f);
    for (float u = 0; u < 1; u += 0.1f) CHECK_EQ_INT(sd_probs_draw(&d, u), am);
    /* top_k = 1 is greedy too */
    sd_sampling k1 = {.temperature = 1, .top_k = 1, .top_p = 1};
    sd_sampling_probs(&k1, l, 100, &d);
    CHECK_EQ_INT(d.n, 1); CHECK_EQ_INT(d.ids[0], am);
    sd_probs_free(&d);
}

static void test_ties_and_nan(void) {
    float l[6] = {1, 3, 3, NAN, 3, 0};
    CHECK_EQ_INT(sd_argmax(l, 6), 1);
    float n2[3] = {NAN, -1, NAN};
    CHECK_EQ_INT(sd_argmax(n2, 3), 1);
    /* top-k at a tie boundary keeps the lower ids; ids of equal probability come in ascending order */
    float t[5] = {2, 5, 5, 5, 1};
    sd_probs d; REQUIRE(sd_probs_init(&d, 5) == 0);
    sd_sampling s = {.temperature = 1, .top_k = 2, .top_p = 1};
    sd_sampling_probs(&s, t, 5, &d);
    CHECK_EQ_INT(d.n, 2); CHECK_EQ_INT(d.ids[0], 1); CHECK_EQ_INT(d.ids[1], 2);
    CHECK_NEAR(d.p[1], 0.5, 1e-6);
    s.top_k = 0;
    sd_sampling_probs(&s, t, 5, &d);
    CHECK_EQ_INT(d.n, 5); CHECK_EQ_INT(d.ids[0], 1); CHECK_EQ_INT(d.ids[1], 2); CHECK_EQ_INT(d.ids[2], 3);
    sd_probs_free(&d);
}

static void test_temperature(void) {
    float l[50];
    random_logits(l, 50, 11, 8);
    float temps[] = {0.3f, 1.0f, 2.5f};
    for (int i = 0; i < 3; i++) {
        sd_sampling s = {.temperature = temps[i], .top_p = 1};
        check_against_ref(&s, l, 50, 1e-6);
    }
    /* higher temperature flattens: the top probability falls */
    sd_probs a, b; REQUIRE(sd_probs_init(&a, 50) == 0); REQUIRE(sd_probs_init(&b, 50) == 0);
    sd_sampling s1 = {.temperature = 0.5f, .top_p = 1}, s2 = {.temperature = 2, .top_p = 1};
    sd_sampling_probs(&s1, l, 50, &a); sd_sampling_probs(&s2, l, 50, &b);
    CHECK(a.p[a.ids[0]] > b.p[b.ids[0]]);
    CHECK_EQ_INT(a.ids[0], b.ids[0]);
    sd_probs_free(&a); sd_probs_free(&b);
}

static void test_each_filter(void) {
    float l[200];
    random_logits(l, 200, 3, 12);
    sd_sampling cases[] = {
        {.temperature = 1, .top_k = 10, .top_p = 1},
        {.temperature = 1, .top_k = 0, .top_p = 0.5f},
        {.temperature = 1, .top_k = 0, .top_p = 0.9f},
        {.temperature = 1, .top_k = 0, .top_p = 1, .min_p = 0.05f},
        {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.02f},
        {.temperature = 1.3f, .top_k = 150, .top_p = 0.7f},
        {.temperature = 1, .top_k = 500, .top_p = 1}, /* k > vocab: off */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_against_ref(&cases[i], l, 200, 2e-6);
    /* the filters really remove tokens */
    sd_probs d; REQUIRE(sd_probs_init(&d, 200) == 0);
    sd_sampling_probs(&cases[0], l, 200, &d); CHECK_EQ_INT(d.n, 10);
    sd_sampling_probs(&cases[1], l, 200, &d); CHECK(d.n > 1 && d.n < 200);
    sd_sampling_probs(&cases[3], l, 200, &d); CHECK(d.n > 1 && d.n < 200);
    sd_probs_free(&d);
}

/* Vocabulary of 152k: the fast paths (prefilter, radix sort, heap top-k) against the reference. */
static void test_large_vocab(void) {
    int V = 152064;
    float *l = malloc(sizeof *l * V);
    random_logits(l, V, 99, 30);
    l[777] = 25; l[150000] = 24.5f; /* a peaked head, as real models have */
    sd_sampling cases[] = {
        {.temperature = 1, .top_p = 0.9f},
        {.temperature = 1, .top_k = 40, .top_p = 0.95f},
        {.temperature = 1.5f, .top_p = 1, .min_p = 0.1f},
        {.temperature = 1, .top_p = 1},
        {.temperature = 1, .top_k = 5000, .top_p = 0.99f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_against_ref(&cases[i], l, V, 1e-6);
    free(l);
}

/* Draws follow the filtered distribution: chi-square goodness of fit at significance 0.001. */
static void test_draw_statistics(void) {
    enum { V = 12, N = 200000 };
    float l[V];
    random_logits(l, V, 21, 4);
    sd_sampling cases[] = {{.temperature = 1, .top_p = 1}, {.temperature = 0.7f, .top_k = 6, .top_p = 0.9f}};
    /* chi-square critical values at p = 0.001 for df = 1..11 */
    const double crit[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26};
    for (int c = 0; c < 2; c++) {
        sd_probs d; REQUIRE(sd_probs_init(&d, V) == 0);
        sd_sampling_probs(&cases[c], l, V, &d);
        REQUIRE(d.n >= 2);
        long count[V] = {0};
        sd_rng r; sd_rng_seed(&r, 1234 + c);
        for (int i = 0; i < N; i++) count[sd_probs_draw(&d, sd_rng_f32(&r))]++;
        double chi = 0;
        int outside = 0;
        for (int i = 0; i < V; i++) {
            if (d.p[i] == 0) { outside += count[i] != 0; continue; }
            double e = d.p[i] * N;
            chi += (count[i] - e) * (count[i] - e) / e;
        }
        CHECK_EQ_INT(outside, 0); /* filtered tokens are never drawn */
        CHECKF(chi < crit[d.n - 1], "chi-square %.2f >= %.2f (df %d)", chi, crit[d.n - 1], d.n - 1);
        sd_probs_free(&d);
    }
}

static void test_seed_reproduces(void) {
    float l[300];
    random_logits(l, 300, 8, 6);
    sd_sampling s = {.temperature = 0.9f, .top_k = 50, .top_p = 0.95f, .seed = 77};
    sd_probs d; REQUIRE(sd_probs_init(&d, 300) == 0);
    sd_sampling_probs(&s, l, 300, &d);
    int32_t a[64], b[64];
    sd_rng r; sd_rng_seed(&r, s.seed);
    for (int i = 0; i < 64; i++) a[i] = sd_probs_draw(&d, sd_rng_f32(&r));
    sd_sampling_probs(&s, l, 300, &d); /* recomputing the distribution changes nothing */
    sd_rng_seed(&r, s.seed);
    for (int i = 0; i < 64; i++) b[i] = sd_probs_draw(&d, sd_rng_f32(&r));
    CHECK(memcmp(a, b, sizeof a) == 0);
    int distinct = 0;
    for (int i = 1; i < 64; i++) distinct += a[i] != a[0];
    CHECK(distinct > 0);
    sd_probs_free(&d);
}

int main(void) {
    RUN(test_rng_reproducible);
    RUN(test_greedy_is_argmax);
    RUN(test_ties_and_nan);
    RUN(test_temperature);
    RUN(test_each_filter);
    RUN(test_large_vocab);
    RUN(test_draw_statistics);
    RUN(test_seed_reproduces);
    return TEST_DONE();
}
