/* Matmul bandwidth benchmark: how close the CPU backend's matrix products come to the machine's memory
 * read bandwidth, for F16 and Q8_0 weights (or the --types given) on a set of matrices far larger than the
 * last-level cache, with n = 1 (decode) and n = 5 (verifying 4 drafted tokens), and T(5)/T(1).
 *
 *   build/bench_kernels [-t THREADS] [--params MILLIONS] [--reps N] [--types f16,q8_0,q4_K,...]
 *   build/bench_kernels --cache     in-cache compute throughput of every SIMD level (1 thread, CPU time)
 *
 * Every figure comes from this one run, so the ratios hold even when other work shares the machine.
 * Built by `make build/bench_kernels`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bandwidth.h"
#include "kernels/backend.h"
#include "base/clock.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/quant.h"
#include "kernels/quantize.h"


static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* Matrices alternate between 4096 x 1024 and 1024 x 4096 (rows x cols): short and long rows, as the
 * projections of a 1B-class model have. */
typedef struct bench_set {
    int count;
    sd_tensor *w;
    void *mem;
} bench_set;

/* The other quantized types: one matrix quantized by sd_quantize_row from random values (so its scales
 * are what real files hold), copied `count` times; rows of `cols` columns. */
static void quant_fill(int type, uint8_t *p, int64_t cols, size_t mat_bytes, int count) {
    float *row = malloc(sizeof(float) * (size_t)cols);
    size_t rb = sd_dtype_row_bytes(type, cols);
    for (size_t r = 0; r < mat_bytes / rb; r++) {
        for (int64_t c = 0; c < cols; c++) row[c] = (float)((int)(rnd() % 2001) - 1000) * 1e-4f;
        sd_quantize_row(type, row, p + r * rb, cols);
    }
    for (int i = 1; i < count; i++) memcpy(p + mat_bytes * (size_t)i, p, mat_bytes);
    free(row);
}

static int make_set(sd_backend *b, int type, double params_m, bench_set *s) {
    const int64_t big = 4096, small = 1024;
    s->count = (int)(params_m * 1e6 / (double)(big * small) + 0.5);
    if (s->count < 1) s->count = 1;
    size_t mat_bytes = sd_dtype_row_bytes(type, small) * big; /* same for both orientations */
    s->mem = malloc(mat_bytes * (size_t)s->count);
    s->w = calloc((size_t)s->count, sizeof *s->w);
    if (!s->mem || !s->w) return -1;
    uint8_t *p = s->mem;
    if (type == SD_F16) {
        uint16_t *h = s->mem;
        for (size_t i = 0; i < mat_bytes * (size_t)s->count / 2; i++)
            h[i] = sd_fp32_to_fp16((float)((int)(rnd() % 2001) - 1000) * 1e-4f);
    } else if (type != SD_Q8_0) {
        quant_fill(type, p, small, mat_bytes, s->count);
    } else {
        sd_block_q8_0 *q = s->mem;
        for (size_t i = 0; i < mat_bytes * (size_t)s->count / sizeof *q; i++) {
            q[i].d = sd_fp32_to_fp16((float)(rnd() % 100 + 1) * 1e-5f);
            for (int k = 0; k < SD_QK8_0; k++) q[i].qs[k] = (int8_t)(rnd() & 0xff);
        }
    }
    for (int i = 0; i < s->count; i++) {
        s->w[i] = (sd_tensor){.type = type, .rows = i % 2 ? small : big, .cols = i % 2 ? big : small,
                              .host = p + mat_bytes * (size_t)i, .name = "bench"};
        sd_err err;
        if (b->upload_weight(b, &s->w[i], &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

static size_t set_bytes(const bench_set *s) {
    size_t t = 0;
    for (int i = 0; i < s->count; i++) t += sd_dtype_row_bytes(s->w[i].type, s->w[i].cols) * (size_t)s->w[i].rows;
    return t;
}

/* Seconds of one pass over every matrix with n activation vectors. */
static double time_pass(sd_backend *b, const bench_set *s, int n, float *x, float *out) {
    double t0 = sd_now_s();
    for (int i = 0; i < s->count; i++) b->matmul(b, out, &s->w[i], x, n);
    b->sync(b);
    return sd_now_s() - t0;
}

/* Median figures of `reps` rounds of: probe, n = 1 pass, probe, n = 5 pass, probe. Each pass's bandwidth
 * is divided by the mean of the probe passes on either side of it (see bench/bandwidth.h). */
typedef struct pair_result {
    double gbs[2], frac[2], t5_t1, probe;
} pair_result;

static void measure_pairs(sd_backend *b, sd_bw_probe *probe, const bench_set *s, int reps, float *x, float *out,
                          pair_result *r) {
    double *v = calloc((size_t)reps * 6, sizeof *v), *g1 = v, *g5 = v + reps, *f1 = v + 2 * reps,
           *f5 = v + 3 * reps, *q = v + 4 * reps, *pr = v + 5 * reps;
    double bytes = (double)set_bytes(s);
    time_pass(b, s, 1, x, out); /* warm-up: pages, threads */
    double before = sd_bw_probe_pass(probe);
    for (int i = 0; i < reps; i++) {
        double t1 = time_pass(b, s, 1, x, out), mid = sd_bw_probe_pass(probe);
        double t5 = time_pass(b, s, 5, x, out), after = sd_bw_probe_pass(probe);
        g1[i] = bytes / t1 / 1e9;
        g5[i] = bytes / t5 / 1e9;
        f1[i] = g1[i] / (0.5 * (before + mid));
        f5[i] = g5[i] / (0.5 * (mid + after));
        q[i] = t5 / t1;
        pr[i] = mid;
        before = after;
    }
    *r = (pair_result){{sd_median(g1, reps), sd_median(g5, reps)}, {sd_median(f1, reps), sd_median(f5, reps)},
                       sd_median(q, reps), sd_median(pr, reps)};
    free(v);
}

static double cpu_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Kernel speed with the weights in L2 (512 x 1024), one thread, timed in CPU time so that other work on a
 * shared machine does not show: how much faster than memory each kernel could go. */
static int bench_cache(void) {
    static const int types[] = {SD_F32, SD_F16, SD_BF16, SD_Q8_0, SD_Q4_0, SD_Q4_1, SD_Q5_0, SD_Q5_1, SD_IQ4_NL,
                                SD_Q2_K, SD_Q3_K, SD_Q4_K, SD_Q5_K, SD_Q6_K, SD_IQ4_XS}, ns[] = {1, 2, 5, 9};
    const int n_types = (int)(sizeof types / sizeof types[0]);
    const int64_t rows = 512, cols = 1024;
    printf("in-cache matmul throughput, %lld x %lld weights, 1 thread, GB/s of weights per CPU-second\n",
           (long long)rows, (long long)cols);
    for (int lv = 0; lv <= (int)sd_simd_detect(); lv++) {
        sd_backend *b;
        sd_err err;
        if (sd_backend_cpu_new_simd(1, (sd_simd)lv, &b, &err) != 0) return 1;
        for (int ti = 0; ti < n_types; ti++) {
            size_t bytes = sd_dtype_row_bytes(types[ti], cols) * (size_t)rows;
            uint8_t *w = calloc(1, bytes);
            float *x = b->alloc(b, 9 * (size_t)cols, &err), *o = b->alloc(b, 9 * (size_t)rows, &err);
            for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)(rnd() & 0x3f); /* finite halves, small ints */
            for (int64_t i = 0; i < 9 * cols; i++) x[i] = (float)(rnd() % 100) * 0.01f;
            sd_tensor t = {.type = types[ti], .rows = rows, .cols = cols, .host = w, .name = "cache"};
            b->upload_weight(b, &t, &err);
            printf("%-7s %-6s", sd_simd_name((sd_simd)lv), sd_dtype_name(types[ti]));
            for (int k = 0; k < 4; k++) {
                int it = lv == 0 ? 2 : (int)(4e7 / (double)bytes) + 1;
                double best = 1e30;
                for (int r = 0; r < 3; r++) {
                    double t0 = cpu_now_s();
                    for (int i = 0; i < it; i++) b->matmul(b, o, &t, x, ns[k]);
                    double tt = (cpu_now_s() - t0) / it;
                    if (tt < best) best = tt;
                }
                printf("  n=%d %6.1f", ns[k], (double)bytes / best / 1e9);
            }
            printf("\n");
            free(w);
            b->release(b, x);
            b->release(b, o);
        }
        b->destroy(b);
    }
    return 0;
}

int main(int argc, char **argv) {
    int threads = 0, reps = 9, types[16] = {SD_F16, SD_Q8_0}, n_types = 2;
    double params_m = 300;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--params") == 0 && i + 1 < argc) params_m = atof(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cache") == 0) return bench_cache();
        else if (strcmp(argv[i], "--types") == 0 && i + 1 < argc) {
            n_types = 0;
            for (char *t = strtok(argv[++i], ","); t && n_types < 16; t = strtok(NULL, ",")) {
                types[n_types] = sd_dtype_by_name(t);
                if (types[n_types] < 0 || !sd_quantize_supported(types[n_types])) {
                    fprintf(stderr, "bench_kernels: unknown type '%s'\n", t);
                    return 2;
                }
                n_types++;
            }
        } else {
            fprintf(stderr, "usage: bench_kernels [-t THREADS] [--params MILLIONS] [--reps N] [--types T,T..] | --cache\n");
            return 2;
        }
    }
    sd_backend *b;
    sd_err err;
    if (sd_backend_cpu_new(threads, &b, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("matmul bandwidth: %s, %.0fM parameters per type, median of %d rounds, each pass paired with a\n"
           "read-bandwidth probe pass beside it (512 MiB buffer, same threads)\n", b->device, params_m, reps);
    sd_bw_probe *probe = sd_bw_probe_new(b->n_threads, (size_t)512 << 20);
    float *x = b->alloc(b, 8 * 4096, &err), *out = b->alloc(b, 8 * 4096, &err);
    if (!probe || !x || !out) {
        fprintf(stderr, "cannot allocate the probe buffer\n");
        return 1;
    }
    for (int i = 0; i < 8 * 4096; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    pair_result res[16];
    for (int ti = 0; ti < n_types; ti++) {
        bench_set s = {0};
        if (make_set(b, types[ti], params_m, &s) != 0) {
            fprintf(stderr, "cannot allocate the %s matrices\n", sd_dtype_name(types[ti]));
            return 1;
        }
        measure_pairs(b, probe, &s, reps, x, out, &res[ti]);
        printf("%-5s %3d matrices, %6.1f MB: n=1 %6.2f GB/s | n=5 %6.2f GB/s | probe %6.2f GB/s | T(5)/T(1) %.2f\n",
               sd_dtype_name(types[ti]), s.count, set_bytes(&s) / 1e6, res[ti].gbs[0], res[ti].gbs[1],
               res[ti].probe, res[ti].t5_t1);
        free(s.w);
        free(s.mem);
    }
    for (int ti = 0; ti < n_types; ti++)
        printf("RESULT %-5s n=1 %5.1f%% of read bandwidth (%.2f GB/s), n=5 %5.1f%%, T(5)/T(1) %.2f\n",
               sd_dtype_name(types[ti]), 100 * res[ti].frac[0], res[ti].probe, 100 * res[ti].frac[1], res[ti].t5_t1);
    sd_bw_probe_free(probe);
    b->release(b, x);
    b->release(b, out);
    b->destroy(b);
    return 0;
}

