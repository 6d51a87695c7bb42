/* kernels/softmax.h: online-softmax partial states and their merge, the math the CUDA attention's split
 * path (one partial per chunk of positions, then a merge) and the CPU attention share. Checked against a
 * double-precision softmax-weighted sum of the whole sequence. */
#include <stdint.h>

#include "kernels/softmax.h"
#include "tests/test.h"
#include "tests/test_util.h"

static float frand(void) { return (float)(rand_u32() % 2000001) / 1000000.0f - 1.0f; } /* [-1, 1] */

#define DIM 24

typedef struct part {
    float m, l, acc[DIM];
} part;

static part empty_part(void) {
    part p = {.m = -INFINITY, .l = 0};
    memset(p.acc, 0, sizeof p.acc);
    return p;
}

/* The state of scores s[b..e) with value rows v, built as the CUDA split kernel does: batches of `batch`
 * positions, the state moved to a batch's larger max with sd_softmax_rescale, then exp(s - m) added. */
static part chunk_part(const float *s, const float *v, int b, int e, int batch) {
    part p = empty_part();
    for (int i = b; i < e; i += batch) {
        int n = e - i < batch ? e - i : batch;
        float bm = -INFINITY;
        for (int u = 0; u < n; u++) bm = fmaxf(bm, s[i + u]);
        if (bm > p.m) {
            float r = sd_softmax_rescale(p.m, bm);
            p.l *= r;
            for (int d = 0; d < DIM; d++) p.acc[d] *= r;
            p.m = bm;
        }
        for (int u = 0; u < n; u++) {
            float w = expf(s[i + u] - p.m);
            p.l += w;
            for (int d = 0; d < DIM; d++) p.acc[d] += w * v[(size_t)(i + u) * DIM + d];
        }
    }
    return p;
}

/* sum_i softmax(s)_i * v_i in double. */
static void reference(const float *s, const float *v, int n, double *out) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, s[i]);
    for (int d = 0; d < DIM; d++) out[d] = 0;
    for (int i = 0; i < n; i++) {
        double w = exp(s[i] - mx);
        sum += w;
        for (int d = 0; d < DIM; d++) out[d] += w * v[(size_t)i * DIM + d];
    }
    for (int d = 0; d < DIM; d++) out[d] /= sum;
}

static double max_err(const part *p, const double *ref) {
    double worst = 0;
    for (int d = 0; d < DIM; d++) {
        double e = fabs(p->acc[d] / p->l - ref[d]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e; /* fmax would drop a NaN */
    }
    return worst;
}

static void test_rescale_edges(void) {
    CHECK(sd_softmax_rescale(-INFINITY, -INFINITY) == 0.0f); /* exp(-inf - -inf) would be NaN */
    CHECK(sd_softmax_rescale(-INFINITY, 3.0f) == 0.0f);
    CHECK(sd_softmax_rescale(2.5f, 2.5f) == 1.0f);
    CHECK_NEAR(sd_softmax_rescale(1.0f, 3.0f), exp(-2.0), 1e-7);
    CHECK(sd_softmax_scaled(0.0f, NAN) == 0.0f);
    CHECK(sd_softmax_scaled(0.5f, 4.0f) == 2.0f);
}

/* Random chunkings (empty chunks included, as the CUDA kernels write past the query's last position)
 * merged left to right, and pairwise as a tree, equal the unsplit sum. */
static void test_merge_random_chunks(void) {
    enum { N = 3000 };
    static float s[N], v[(size_t)N * DIM];
    double ref[DIM];
    for (int trial = 0; trial < 60; trial++) {
        int n = 1 + (int)(rand_u32() % N);
        float spread = trial % 3 == 0 ? 1.0f : trial % 3 == 1 ? 20.0f : 200.0f; /* 200: most weights underflow */
        for (int i = 0; i < n; i++) s[i] = frand() * spread + (trial % 5 == 0 ? 0.001f * (float)i : 0.0f);
        for (size_t i = 0; i < (size_t)n * DIM; i++) v[i] = frand();
        reference(s, v, n, ref);
        /* cut points: sorted random positions in [0, n], repeats give empty chunks */
        int n_cuts = (int)(rand_u32() % 40), cuts[42];
        cuts[0] = 0;
        for (int c = 1; c <= n_cuts; c++) cuts[c] = (int)(rand_u32() % (uint32_t)(n + 1));
        cuts[n_cuts + 1] = n;
        for (int a = 1; a <= n_cuts; a++)
            for (int b = a + 1; b <= n_cuts; b++)
                if (cuts[b] < cuts[a]) { int x = cuts[a]; cuts[a] = cuts[b]; cuts[b] = x; }
        int n_parts = n_cuts + 1 + 3; /* plus three empty chunks past the end */
        part parts[44];
        int batch = 1 + (int)(rand_u32() % 9);
        for (int c = 0; c <= n_cuts; c++) parts[c] = chunk_part(s, v, cuts[c], cuts[c + 1], batch);
        for (int c = n_cuts + 1; c < n_parts; c++) {
            parts[c] = empty_part();
            parts[c].acc[0] = NAN; /* an empty partial's accumulator is never read as a number */
        }
        part all = empty_part();
        for (int c = 0; c < n_parts; c++) sd_softmax_merge_acc(&all.m, &all.l, all.acc, parts[c].m, parts[c].l, parts[c].acc, DIM);
        CHECKF(max_err(&all, ref) < 2e-5, "trial %d n %d cuts %d: err %g", trial, n, n_cuts, max_err(&all, ref));
        /* the same partials merged as a tree (order must not matter) */
        for (int width = 1; width < n_parts; width *= 2)
            for (int c = 0; c + width < n_parts; c += 2 * width)
                sd_softmax_merge_acc(&parts[c].m, &parts[c].l, parts[c].acc, parts[c + width].m, parts[c + width].l,
                                     parts[c + width].acc, DIM);
        CHECKF(max_err(&parts[0], ref) < 2e-5, "tree trial %d: err %g", trial, max_err(&parts[0], ref));
        /* and the unsplit online state */
        part one = chunk_part(s, v, 0, n, batch);
        CHECKF(max_err(&one, ref) < 2e-5, "unsplit trial %d: err %g", trial, max_err(&one, ref));
    }
}

static void test_merge_empty(void) {
    part a = empty_part(), b = empty_part();
    b.acc[3] = NAN;
    sd_softmax_merge_acc(&a.m, &a.l, a.acc, b.m, b.l, b.acc, DIM);
    CHECK(a.m == -INFINITY && a.l == 0.0f);
    for (int d = 0; d < DIM; d++) CHECKF(a.acc[d] == 0.0f, "acc[%d] = %g", d, a.acc[d]);
    /* empty + a one-element state = that state, on either side */
    float s1 = 0.75f, v1[DIM];
    for (int d = 0; d < DIM; d++) v1[d] = frand();
    part one = chunk_part(&s1, v1, 0, 1, 1), x = empty_part(), y = one;
    sd_softmax_merge_acc(&x.m, &x.l, x.acc, one.m, one.l, one.acc, DIM);
    sd_softmax_merge_acc(&y.m, &y.l, y.acc, b.m, b.l, b.acc, DIM);
    CHECK(x.m == 0.75f && x.l == 1.0f && y.m == 0.75f && y.l == 1.0f);
    for (int d = 0; d < DIM; d++) CHECK(x.acc[d] == v1[d] && y.acc[d] == v1[d]);
}

/* The CUDA split plan: chunks of `chunk` positions over a span larger than the query's context (graph
 * steps plan for the whole cache); merging only the chunks up to the last position, or all of them
 * (the later ones empty), gives the unsplit result. */
static void test_split_over_cache(void) {
    enum { CTX = 4096 };
    static float s[CTX], v[(size_t)CTX * DIM];
    for (int i = 0; i < CTX; i++) s[i] = frand() * 8;
    for (size_t i = 0; i < (size_t)CTX * DIM; i++) v[i] = frand();
    const int lasts[] = {0, 1, 63, 64, 65, 700, 3000, CTX - 1};
    for (size_t li = 0; li < sizeof lasts / sizeof *lasts; li++) {
        int last = lasts[li], n_chunks = 64, chunk = (CTX + n_chunks - 1) / n_chunks;
        int used = (last / chunk + 1) < n_chunks ? last / chunk + 1 : n_chunks;
        double ref[DIM];
        reference(s, v, last + 1, ref);
        part some = empty_part(), all = empty_part();
        for (int c = 0; c < n_chunks; c++) {
            int b = c * chunk, e = b + chunk < last + 1 ? b + chunk : last + 1;
            part p = e > b ? chunk_part(s, v, b, e, 8) : empty_part();
            CHECK((c < used) == (p.l > 0));
            if (c < used) sd_softmax_merge_acc(&some.m, &some.l, some.acc, p.m, p.l, p.acc, DIM);
            sd_softmax_merge_acc(&all.m, &all.l, all.acc, p.m, p.l, p.acc, DIM);
        }
        CHECKF(max_err(&some, ref) < 2e-5 && max_err(&all, ref) < 2e-5, "last %d: err %g / %g", last,
               max_err(&some, ref), max_err(&all, ref));
    }
}

int main(void) {
    RUN(test_rescale_edges);
    RUN(test_merge_empty);
    RUN(test_merge_random_chunks);
    RUN(test_split_over_cache);
    return TEST_DONE();
}
