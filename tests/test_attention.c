/* CPU attention (kernels/cpu/attention.c) at every SIMD level this CPU has: against an exact reference in
 * double over many shapes (rows, positions across block, chunk and part boundaries, GQA ratios, head
 * sizes, F16 and F32 caches), and a row's result bitwise the same whatever else is in the pass (alone,
 * with its span, with other sequences) and whatever the thread count.
 *
 * Tolerance: the kernels compute in F32 (exp by a polynomial within 2e-7 relative); outputs are convex
 * combinations of V rows, checked as |out - ref| <= 1e-4 |ref| + 2e-5 max|v|. An F16 cache is checked
 * against the reference over K/V rounded to half, as storage is the only difference. */
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/quant.h"
#include "tests/test.h"
#include "tests/test_util.h"

static float frand(void) { return (float)(rand_u32() % 2000001) / 1000000.0f - 1.0f; } /* [-1, 1] */

#define MAXS 8
#define LAYER 1 /* of a 2-layer pool: layer offsets are exercised */

/* Sequences in one pool: K and V of `total` positions each (host, [total][kvd], already rounded to half
 * for an F16 pool), blocks handed out interleaved across sequences and scrambled. */
typedef struct fixture {
    int n_seq, heads, kvh, hd;
    sd_dtype type;
    int total[MAXS];
    float *k[MAXS], *v[MAXS];
    int32_t *table[MAXS];
    int n_blocks;
} fixture;

static void fixture_init(fixture *f, int n_seq, const int *total, int heads, int kvh, int hd, sd_dtype type) {
    *f = (fixture){.n_seq = n_seq, .heads = heads, .kvh = kvh, .hd = hd, .type = type};
    int kvd = kvh * hd, nb_all = 0;
    for (int s = 0; s < n_seq; s++) nb_all += (total[s] + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    f->n_blocks = nb_all + 3;
    while (f->n_blocks % 7 == 0) f->n_blocks++; /* 7 invertible mod n_blocks: a permutation */
    int next = 0;
    for (int s = 0; s < n_seq; s++) {
        f->total[s] = total[s];
        int nb = (total[s] + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
        f->table[s] = malloc(sizeof(int32_t) * (size_t)nb);
        for (int i = 0; i < nb; i++) f->table[s][i] = (int32_t)((3 + 7 * (int64_t)next++) % f->n_blocks);
        size_t n = (size_t)total[s] * kvd;
        f->k[s] = malloc(sizeof(float) * n);
        f->v[s] = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) {
            f->k[s][i] = frand() * 2.5f;
            f->v[s][i] = frand();
            if (type == SD_F16) {
                f->k[s][i] = sd_fp16_to_fp32(sd_fp32_to_fp16(f->k[s][i]));
                f->v[s][i] = sd_fp16_to_fp32(sd_fp32_to_fp16(f->v[s][i]));
            }
        }
    }
}

static void fixture_free(fixture *f) {
    for (int s = 0; s < f->n_seq; s++) free(f->k[s]), free(f->v[s]), free(f->table[s]);
}

static sd_backend *open_cpu(int threads, sd_simd s) {
    sd_backend *b = NULL;
    sd_err err = {{0}};
    if (sd_backend_cpu_new_simd(threads, s, &b, &err) != 0) fprintf(stderr, "  %s\n", err.msg);
    return b;
}

/* Stores every sequence's K/V into a new pool on b. */
static int fixture_store(sd_backend *b, const fixture *f, sd_kv_mem *kv) {
    sd_err err = {{0}};
    int kvd = f->kvh * f->hd;
    if (b->kv_mem_alloc(b, kv, 2, kvd, f->n_blocks, f->type, &err) != 0) {
        fprintf(stderr, "  %s\n", err.msg);
        return -1;
    }
    for (int s = 0; s < f->n_seq; s++) {
        size_t n = (size_t)f->total[s] * kvd;
        float *k = b->alloc(b, n, &err), *v = b->alloc(b, n, &err);
        b->from_host(b, k, f->k[s], n);
        b->from_host(b, v, f->v[s], n);
        sd_kv_span sp = {.row = 0, .n = f->total[s], .pos0 = 0, .cap = f->total[s], .table = f->table[s]};
        b->kv_spans(b, &sp, 1, f->total[s]);
        b->kv_store(b, kv, LAYER, k, v);
        b->release(b, k);
        b->release(b, v);
    }
    return 0;
}

/* One pass: rows of q ([rows][heads*hd], host) at the spans (span.table is filled from the fixture by
 * sequence index `seq[i]`), output to out (host). */
static void run_pass(sd_backend *b, const fixture *f, sd_kv_mem *kv, sd_kv_span *spans, const int *seq, int n_spans,
                     int rows, const float *q, float *out) {
    size_t qn = (size_t)rows * f->heads * f->hd;
    for (int i = 0; i < n_spans; i++) {
        spans[i].table = f->table[seq[i]];
        spans[i].cap = f->total[seq[i]];
    }
    sd_err err = {{0}};
    float *qd = b->alloc(b, qn, &err), *od = b->alloc(b, qn, &err);
    b->from_host(b, qd, q, qn);
    b->kv_spans(b, spans, n_spans, rows);
    b->attention(b, od, qd, kv, LAYER, f->heads, f->kvh, f->hd);
    b->to_host(b, out, od, qn);
    b->release(b, qd);
    b->release(b, od);
}

/* Exact attention of one query (hd floats) of head h over positions 0..np-1 of sequence s. */
static void ref_query(const fixture *f, int s, int h, int np, const float *q, double *out) {
    int kvd = f->kvh * f->hd, kh = h / (f->heads / f->kvh);
    double *sc = malloc(sizeof(double) * (size_t)np), mx = -INFINITY, sum = 0;
    for (int t = 0; t < np; t++) {
        double d = 0;
        for (int i = 0; i < f->hd; i++) d += (double)q[i] * f->k[s][(size_t)t * kvd + kh * f->hd + i];
        sc[t] = d / sqrt(f->hd);
        mx = fmax(mx, sc[t]);
    }
    for (int t = 0; t < np; t++) sum += (sc[t] = exp(sc[t] - mx));
    for (int i = 0; i < f->hd; i++) {
        double a = 0;
        for (int t = 0; t < np; t++) a += sc[t] * f->v[s][(size_t)t * kvd + kh * f->hd + i];
        out[i] = a / sum;
    }
    free(sc);
}

/* Checks out (the pass's rows) against the reference; returns the number of bad elements (first few
 * reported). */
static int check_ref(const fixture *f, const sd_kv_span *spans, const int *seq, int n_spans, const float *q,
                     const float *out, const char *what) {
    int bad = 0, hd = f->hd;
    double *r = malloc(sizeof(double) * (size_t)hd);
    for (int i = 0; i < n_spans; i++)
        for (int row = spans[i].row; row < spans[i].row + spans[i].n; row++)
            for (int h = 0; h < f->heads; h++) {
                size_t o = ((size_t)row * f->heads + h) * hd;
                ref_query(f, seq[i], h, spans[i].pos0 + (row - spans[i].row) + 1, q + o, r);
                for (int d = 0; d < hd; d++)
                    if (!(fabs(out[o + d] - r[d]) <= 1e-4 * fabs(r[d]) + 2e-5) && bad++ < 4)
                        fprintf(stderr, "  %s: row %d head %d [%d]: %.9g vs %.9g\n", what, row, h, d, out[o + d], r[d]);
            }
    free(r);
    return bad;
}

static float *rand_q(int rows, const fixture *f) {
    size_t n = (size_t)rows * f->heads * f->hd;
    float *q = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) q[i] = frand() * 2;
    return q;
}

/* One sequence, rows at pos0.., over many shapes; every level, 1 and 3 threads (3: tiles split across
 * threads for the long decode rows), against the reference and bitwise across thread counts. */
static void test_attention_shapes(void) {
    static const int cfg[][5] = {/* rows, heads, kv heads, head_dim, pos0 */
                                 {1, 4, 4, 64, 0},    {1, 8, 2, 64, 1500}, {5, 8, 1, 128, 509}, {17, 4, 1, 64, 40},
                                 {40, 8, 2, 64, 100}, {33, 2, 2, 256, 30}, {3, 16, 2, 128, 1030}, {7, 6, 2, 12, 70},
                                 {2, 3, 1, 7, 17},    {24, 4, 1, 80, 0},   {1, 32, 4, 128, 700}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof *cfg; ci++)
        for (int ti = 0; ti < 2; ti++) {
            int rows = cfg[ci][0], pos0 = cfg[ci][4], total = pos0 + rows;
            fixture f;
            fixture_init(&f, 1, &total, cfg[ci][1], cfg[ci][2], cfg[ci][3], ti ? SD_F16 : SD_F32);
            float *q = rand_q(rows, &f);
            size_t qn = (size_t)rows * f.heads * f.hd;
            float *o1 = malloc(sizeof(float) * qn), *o3 = malloc(sizeof(float) * qn);
            int seq = 0;
            for (int s = 0; s <= (int)sd_simd_detect(); s++) {
                char what[96];
                snprintf(what, sizeof what, "%s %s rows %d pos0 %d hd %d gqa %d", sd_simd_name((sd_simd)s),
                         ti ? "f16" : "f32", rows, pos0, f.hd, f.heads / f.kvh);
                for (int th = 1; th <= 3; th += 2) {
                    sd_backend *b = open_cpu(th, (sd_simd)s);
                    REQUIRE(b);
                    sd_kv_mem kv;
                    REQUIRE(fixture_store(b, &f, &kv) == 0);
                    sd_kv_span sp = {.row = 0, .n = rows, .pos0 = pos0};
                    run_pass(b, &f, &kv, &sp, &seq, 1, rows, q, th == 1 ? o1 : o3);
                    CHECKF(sd_backend_check(b, NULL) == 0, "%s: backend failed", what);
                    b->kv_mem_free(b, &kv);
                    b->destroy(b);
                }
                CHECKF(check_ref(&f, &(sd_kv_span){.row = 0, .n = rows, .pos0 = pos0}, &seq, 1, q, o1, what) == 0,
                       "%s", what);
                CHECKF(memcmp(o1, o3, sizeof(float) * qn) == 0, "%s: 3 threads differ from 1", what);
            }
            free(q);
            free(o1);
            free(o3);
            fixture_free(&f);
        }
}

/* Several sequences with different spans in one pass (decode rows, a verify block, prefill chunks, one
 * long context): each row's result is bitwise the one it gets in a pass of its span alone and in a pass
 * of that row alone, at any thread count, and matches the reference. */
static void test_attention_rows_independent(void) {
    /* sequence, rows, pos0 of each span of the mixed pass */
    static const int sp_cfg[][3] = {{0, 1, 37}, {1, 5, 600}, {2, 23, 3}, {3, 1, 1300}, {4, 17, 150}};
    int n_spans = 5, totals[5], seq[5], rows = 0;
    sd_kv_span spans[5];
    for (int i = 0; i < n_spans; i++) {
        seq[i] = sp_cfg[i][0];
        totals[i] = sp_cfg[i][2] + sp_cfg[i][1];
        spans[i] = (sd_kv_span){.row = rows, .n = sp_cfg[i][1], .pos0 = sp_cfg[i][2]};
        rows += sp_cfg[i][1];
    }
    for (int ti = 0; ti < 2; ti++) {
        fixture f;
        fixture_init(&f, n_spans, totals, 8, 2, 64, ti ? SD_F16 : SD_F32);
        float *q = rand_q(rows, &f);
        size_t qn = (size_t)rows * f.heads * f.hd, rq = (size_t)f.heads * f.hd;
        float *all = malloc(sizeof(float) * qn), *o = malloc(sizeof(float) * qn);
        for (int s = 0; s <= (int)sd_simd_detect(); s++)
            for (int th = 1; th <= 3; th++) {
                char what[64];
                snprintf(what, sizeof what, "%s %s %d threads", sd_simd_name((sd_simd)s), ti ? "f16" : "f32", th);
                sd_backend *b = open_cpu(th, (sd_simd)s);
                REQUIRE(b);
                sd_kv_mem kv;
                REQUIRE(fixture_store(b, &f, &kv) == 0);
                sd_kv_span mixed[5];
                memcpy(mixed, spans, sizeof spans);
                run_pass(b, &f, &kv, mixed, seq, n_spans, rows, q, th == 1 ? all : o);
                if (th == 1) CHECKF(check_ref(&f, mixed, seq, n_spans, q, all, what) == 0, "%s", what);
                else CHECKF(memcmp(all, o, sizeof(float) * qn) == 0, "%s: mixed pass differs from 1 thread", what);
                for (int i = 0; i < n_spans; i++) { /* the span alone, then each of its rows alone */
                    sd_kv_span one = {.row = 0, .n = spans[i].n, .pos0 = spans[i].pos0};
                    run_pass(b, &f, &kv, &one, &seq[i], 1, spans[i].n, q + spans[i].row * rq, o);
                    CHECKF(memcmp(o, all + spans[i].row * rq, sizeof(float) * rq * spans[i].n) == 0,
                           "%s: span %d alone differs from the mixed pass", what, i);
                    for (int r = 0; r < spans[i].n; r++) {
                        sd_kv_span row = {.row = 0, .n = 1, .pos0 = spans[i].pos0 + r};
                        run_pass(b, &f, &kv, &row, &seq[i], 1, 1, q + (spans[i].row + r) * rq, o);
                        CHECKF(memcmp(o, all + (spans[i].row + r) * rq, sizeof(float) * rq) == 0,
                               "%s: span %d row %d alone differs from the mixed pass", what, i, r);
                    }
                }
                b->kv_mem_free(b, &kv);
                b->destroy(b);
            }
        free(q);
        free(all);
        free(o);
        fixture_free(&f);
    }
}

int main(void) {
    RUN(test_attention_shapes);
    RUN(test_attention_rows_independent);
    return TEST_DONE();
}
