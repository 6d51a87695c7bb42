/* Attention benchmark: the CPU backend's attention op alone over a paged KV cache, for query rows x
 * cached positions, GQA, head sizes and KV types; reports time per call, the K/V bytes it must read
 * (every cached position of every kv head once) per second, and multiply-add throughput (scores and
 * weighted values: 2 x 2 flops per query head, position and dimension, causal).
 *
 *   build/bench_attn [-t THREADS] [--rows 1,8,64] [--pos 128,512,2048,4096] [--hd 64,128] [--kv f16,f32]
 *                    [--kv-heads 4] [--group 4] [--seqs 1] [--ms 150]
 *
 * --seqs S: S sequences side by side in one pass, each with --rows rows after --pos cached positions (a
 * decode batch is --rows 1 --seqs 8). Each figure is the best of 5 timed batches of calls (each batch at
 * least --ms / 5 ms), so a neighbour's burst on a shared machine inflates it less; "cpu GFLOP/s" divides
 * by the process's CPU time instead of wall time (all threads, their spinning included): the kernels'
 * own speed, which other work on the machine changes less. Built by `make build/bench_attn`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "kernels/backend.h"

#define MAXV 16

typedef struct opts {
    int threads, kv_heads, group, seqs, ms;
    int rows[MAXV], n_rows, pos[MAXV], n_pos, hd[MAXV], n_hd, kv[MAXV], n_kv;
} opts;

static int parse_list(const char *s, int *out) {
    int n = 0;
    for (const char *p = s; *p && n < MAXV;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || v > 1 << 20) return -1;
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static int parse_kv(const char *s, int *out) {
    int n = 0;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *t = strtok(buf, ","); t && n < MAXV; t = strtok(NULL, ",")) {
        if (!strcmp(t, "f16")) out[n++] = SD_F16;
        else if (!strcmp(t, "f32")) out[n++] = SD_F32;
        else return -1;
    }
    return n;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_attn [-t THREADS] [--rows 1,8,64] [--pos 128,512,2048,4096] [--hd 64,128] "
                    "[--kv f16,f32] [--kv-heads N] [--group G] [--seqs S] [--ms MS]\n");
    return 2;
}

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.threads = 0, .kv_heads = 4, .group = 4, .seqs = 1, .ms = 150};
    o->n_rows = parse_list("1,8,64", o->rows);
    o->n_pos = parse_list("128,512,2048,4096", o->pos);
    o->n_hd = parse_list("64,128", o->hd);
    o->n_kv = parse_kv("f16,f32", o->kv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        int bad = 0;
        if (!strcmp(a, "-t")) o->threads = atoi(v);
        else if (!strcmp(a, "--rows")) bad = (o->n_rows = parse_list(v, o->rows)) <= 0;
        else if (!strcmp(a, "--pos")) bad = (o->n_pos = parse_list(v, o->pos)) <= 0;
        else if (!strcmp(a, "--hd")) bad = (o->n_hd = parse_list(v, o->hd)) <= 0;
        else if (!strcmp(a, "--kv")) bad = (o->n_kv = parse_kv(v, o->kv)) <= 0;
        else if (!strcmp(a, "--kv-heads")) bad = (o->kv_heads = atoi(v)) <= 0;
        else if (!strcmp(a, "--group")) bad = (o->group = atoi(v)) <= 0;
        else if (!strcmp(a, "--seqs")) bad = (o->seqs = atoi(v)) <= 0 || o->seqs > 256;
        else if (!strcmp(a, "--ms")) bad = (o->ms = atoi(v)) <= 0;
        else return usage();
        if (bad) {
            fprintf(stderr, "bench_attn: bad value for %s: %s\n", a, v);
            return 2;
        }
        i++;
    }
    return 0;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *dev_random(sd_backend *b, size_t n, float amp) {
    float *h = malloc(n * sizeof(float)), *d = b->alloc(b, n, NULL);
    if (!h || !d) {
        free(h);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) h[i] = frand() * amp;
    b->from_host(b, d, h, n);
    free(h);
    return d;
}

/* One configuration: seqs sequences, each `rows` query rows at positions pos..pos+rows-1 over `pos` cached
 * positions. Prints one table line; -1 when memory ran out. */
static int run_one(sd_backend *b, const opts *o, int rows, int pos, int hd, sd_dtype type) {
    int kvh = o->kv_heads, heads = kvh * o->group, kvd = kvh * hd, total = pos + rows, seqs = o->seqs;
    int nb = (total + SD_KV_BLOCK - 1) / SD_KV_BLOCK, prow = rows * seqs;
    sd_kv_mem kv;
    sd_err err = {{0}};
    if (b->kv_mem_alloc(b, &kv, 1, kvd, nb * seqs, type, &err) != 0) {
        fprintf(stderr, "bench_attn: %s\n", err.msg);
        return -1;
    }
    int32_t *table = malloc(sizeof(int32_t) * (size_t)nb * seqs);
    sd_kv_span *sp = malloc(sizeof *sp * (size_t)seqs);
    float *k = dev_random(b, (size_t)total * kvd, 1.0f), *v = dev_random(b, (size_t)total * kvd, 1.0f);
    float *q = dev_random(b, (size_t)prow * heads * hd, 1.0f), *out = b->alloc(b, (size_t)prow * heads * hd, &err);
    if (!table || !sp || !k || !v || !q || !out) return -1;
    for (int s = 0; s < seqs; s++) { /* sequences' blocks interleaved in the pool, as a busy pool has them */
        for (int i = 0; i < nb; i++) table[s * nb + i] = i * seqs + s;
        sd_kv_span fill = {.row = 0, .n = total, .pos0 = 0, .cap = total, .table = table + s * nb};
        b->kv_spans(b, &fill, 1, total);
        b->kv_store(b, &kv, 0, k, v);
        sp[s] = (sd_kv_span){.row = s * rows, .n = rows, .pos0 = pos, .cap = total, .table = table + s * nb};
    }
    b->kv_spans(b, sp, seqs, prow);
    b->attention(b, out, q, &kv, 0, heads, kvh, hd); /* warm-up: pages, caches, thread wake-up */
    b->sync(b);
    double best = INFINITY, best_cpu = INFINITY;
    for (int rep = 0; rep < 5; rep++) {
        int calls = 0;
        double t0 = sd_now_s(), c0 = cpu_s(), t;
        do {
            b->attention(b, out, q, &kv, 0, heads, kvh, hd);
            b->sync(b);
            calls++;
        } while ((t = sd_now_s() - t0) < o->ms * 1e-3 / 5);
        double c = cpu_s() - c0;
        if (t / calls < best) best = t / calls;
        if (c / calls < best_cpu) best_cpu = c / calls;
    }
    /* Bytes: K and V of every cached position of every kv head, once (the least any kernel reads). Flops:
     * each query head of row i sees pos + i + 1 positions; 2 multiply-adds per position and dimension. */
    double esz = type == SD_F16 ? 2 : 4, bytes = 2.0 * total * kvd * esz * seqs, pairs = 0;
    for (int i = 0; i < rows; i++) pairs += (double)(pos + i + 1);
    double flops = 4.0 * pairs * heads * hd * seqs;
    printf("%5d %4d %6d %4d %4s %3d  %9.3f %8.2f %8.2f %8.2f\n", rows, seqs, pos, hd, type == SD_F16 ? "f16" : "f32",
           o->group, best * 1e3, bytes / best / 1e9, flops / best / 1e9, flops / best_cpu / 1e9);
    fflush(stdout);
    b->release(b, k);
    b->release(b, v);
    b->release(b, q);
    b->release(b, out);
    free(table);
    free(sp);
    b->kv_mem_free(b, &kv);
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o)) return 2;
    sd_backend *b;
    sd_err err = {{0}};
    if (sd_backend_cpu_new(o.threads, &b, &err) != 0) {
        fprintf(stderr, "bench_attn: %s\n", err.msg);
        return 1;
    }
    printf("# %s, %d kv heads, %d query heads each\n", b->device, o.kv_heads, o.group);
    printf("# rows seqs    pos   hd   kv grp   ms/call  KV GB/s  GFLOP/s  cpu GFLOP/s\n");
    for (int ik = 0; ik < o.n_kv; ik++)
        for (int ih = 0; ih < o.n_hd; ih++)
            for (int ir = 0; ir < o.n_rows; ir++)
                for (int ip = 0; ip < o.n_pos; ip++)
                    if (run_one(b, &o, o.rows[ir], o.pos[ip], o.hd[ih], (sd_dtype)o.kv[ik]) != 0) {
                        b->destroy(b);
                        return 1;
                    }
    b->destroy(b);
    return 0;
}
