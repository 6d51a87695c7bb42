/* Matmul bandwidth benchmark: how close the CPU backend's matrix products come to the machine's memory
 * read bandwidth, for F16 and Q8_0 weights (or the --types given) on a set of matrices far larger than the
 * last-level cache, with n = 1 (decode) and n = 5 (verifying 4 drafted tokens), and T(5)/T(1).
 *
 *   build/bench_kernels [-t THREADS] [--params MILLIONS] [--reps N] [--types f16,q8_0,q4_K,...]
 *   build/bench_kernels --cache [--types ..]   in-cache compute throughput of every SIMD level up to
 *                                   SPECD_SIMD's (1 thread, CPU time)
 *   build/bench_kernels --rows [--types f16,..]   GFLOPS by activation rows (1..64) per SIMD level and
 *                                   weight type (f16, bf16, f32, q8_0), weights from memory, 1 thread, CPU
 *                                   time, against the FMA peak measured beside it
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
#include "kernels/cpu/simd.h"
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
    if (type == SD_F16 || type == SD_BF16) {
        uint16_t *h = s->mem;
        for (size_t i = 0; i < mat_bytes * (size_t)s->count / 2; i++) {
            float v = (float)((int)(rnd() % 2001) - 1000) * 1e-4f;
            h[i] = type == SD_F16 ? sd_fp32_to_fp16(v) : sd_fp32_to_bf16(v);
        }
    } else if (type == SD_F32) {
        float *f = s->mem;
        for (size_t i = 0; i < mat_bytes * (size_t)s->count / 4; i++) f[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-4f;
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
        if (b && b->upload_weight(b, &s->w[i], &err) != 0) {
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
static int bench_cache(const int *types, int n_types) {
    static const int ns[] = {1, 2, 5, 9};
    const int64_t rows = 512, cols = 1024;
    printf("in-cache matmul throughput, %lld x %lld weights, 1 thread, GB/s of weights per CPU-second\n",
           (long long)rows, (long long)cols);
    for (int lv = 0; lv <= (int)sd_simd_default(); lv++) {
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

/* The FMA peak of one core at a level, in GFLOPS (one FMA = 2 flops per lane): 12 independent chains,
 * enough to cover the FMA latency on every x86 core this runs on, timed in CPU time. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PEAK_ITERS 20000000L
__attribute__((target("avx,fma"))) static double fma_peak_256(void) {
    __m256 a[12], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    double t0 = cpu_now_s();
    for (long it = 0; it < PEAK_ITERS; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
    double t = cpu_now_s() - t0;
    float sink[8];
    for (int i = 1; i < 12; i++) a[0] = _mm256_add_ps(a[0], a[i]);
    _mm256_storeu_ps(sink, a[0]);
    if (sink[0] == 12345.f) printf(" ");
    return 2.0 * 8 * 12 * PEAK_ITERS / t / 1e9;
}
__attribute__((target("avx512f"))) static double fma_peak_512(void) {
    __m512 a[12], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
    double t0 = cpu_now_s();
    for (long it = 0; it < PEAK_ITERS / 2; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
    double t = cpu_now_s() - t0;
    float sink[16];
    for (int i = 1; i < 12; i++) a[0] = _mm512_add_ps(a[0], a[i]);
    _mm512_storeu_ps(sink, a[0]);
    if (sink[0] == 12345.f) printf(" ");
    return 2.0 * 16 * 12 * (PEAK_ITERS / 2) / t / 1e9;
}
static double fma_peak(sd_simd lv) {
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double g = lv >= SD_SIMD_AVX512 ? fma_peak_512() : lv >= SD_SIMD_AVX ? fma_peak_256() : 0;
        if (g > best) best = g;
    }
    return best;
}
#else
static double fma_peak(sd_simd lv) { return 0; }
#endif

/* One pass of a kernel over every matrix of the set on this thread, by path; CPU seconds. */
static double kernel_pass(const sd_cpu_kernels *k, const bench_set *s, int n, int path, const float *x,
                          const int8_t *xq, const float *xd, const int32_t *xs, const sd_act_group *xg, float *out) {
    double t0 = cpu_now_s();
    for (int i = 0; i < s->count; i++) {
        const sd_tensor *w = &s->w[i];
        int ti = w->type == SD_F32 ? SD_MM_F32 : w->type == SD_F16 ? SD_MM_F16 : w->type == SD_BF16 ? SD_MM_BF16 : SD_MM_Q8_0;
        sd_mm_job j = {.out = out, .out_stride = w->rows, .w = w->host, .row_bytes = sd_dtype_row_bytes(w->type, w->cols),
                       .cols = w->cols, .x = x, .xq = xq, .xd = xd, .xs = xs, .xg = xg, .n = n, .type = w->type, .path = path};
        k->mm[ti](&j, 0, w->rows);
    }
    return cpu_now_s() - t0;
}

/* Matmul throughput by the number of activation rows, weights streamed from memory (8 matrices of
 * 4096 x 1024 and 1024 x 4096, twice the L3 in F16), the kernels called directly on 1 thread, CPU time,
 * best of 3, small-row and blocked paths interleaved, as GFLOPS and as a fraction of the FMA peak of the
 * same level measured in the same run (Q8_0's int8 products counted alike). The kernel's crossover
 * (block_min) picks between the two columns. Every level from AVX up, or only SPECD_SIMD's when set. */
static int bench_rows(const int *types, int n_types) {
    static const int ns[] = {1, 4, 8, 12, 16, 24, 40, 64};
    const int n_ns = (int)(sizeof ns / sizeof ns[0]), nmax = 64, cols = 4096;
    const char *cap = getenv("SPECD_SIMD");
    sd_simd top = sd_simd_default(), lo = cap && *cap ? top : SD_SIMD_AVX;
    float *x = malloc(sizeof(float) * nmax * cols), *out = malloc(sizeof(float) * nmax * cols);
    int8_t *xq = malloc((size_t)nmax * cols);
    float *xd = malloc(sizeof(float) * nmax * cols / 32);
    int32_t *xs = malloc(sizeof(int32_t) * nmax * cols / 32);
    sd_act_group *xg = malloc(sizeof(sd_act_group) * nmax * cols / 256);
    for (int i = 0; i < nmax * cols; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
    printf("matmul GFLOPS by activation rows (small-row path / blocked path, %% of the level's FMA peak for the\n"
           "faster; * marks the path the kernel's crossover takes): weights from memory, 1 thread, CPU time\n");
    for (int lv = (int)lo; lv <= (int)top; lv++) {
        const sd_cpu_kernels *k = sd_simd_kernels((sd_simd)lv);
        double peak = fma_peak((sd_simd)lv);
        printf("%-7s FMA peak %.1f GFLOPS\n", sd_simd_name((sd_simd)lv), peak);
        for (int ti = 0; ti < n_types; ti++) {
            bench_set s = {0};
            if (types[ti] != SD_F16 && types[ti] != SD_BF16 && types[ti] != SD_F32 && types[ti] != SD_Q8_0) continue;
            if (make_set(NULL, types[ti], 8 * 4.194304, &s) != 0) return 1;
            int mi = types[ti] == SD_F32 ? SD_MM_F32 : types[ti] == SD_F16 ? SD_MM_F16 : types[ti] == SD_BF16 ? SD_MM_BF16 : SD_MM_Q8_0;
            printf("%-7s %-5s", sd_simd_name((sd_simd)lv), sd_dtype_name(types[ti]));
            for (int a = 0; a < n_ns; a++) {
                int n = ns[a];
                /* quantized at 4096 columns; the 1024-column matrices read them at their own stride (timing only) */
                for (int i = 0; i < n; i++) {
                    sd_quant_act_q8(x + (size_t)i * cols, cols, xq + (size_t)i * cols, xd + (size_t)i * cols / 32, xs + (size_t)i * cols / 32);
                    sd_act_groups_ref(xq + (size_t)i * cols, xd + (size_t)i * cols / 32, xs + (size_t)i * cols / 32, cols, xg + i, n);
                }
                double best[2] = {1e30, 1e30};
                for (int r = 0; r < 3; r++)
                    for (int p = 0; p < 2; p++) {
                        double t = kernel_pass(k, &s, n, p ? SD_MM_BLOCKED : SD_MM_SMALL, x, xq, xd, xs, xg, out);
                        if (t < best[p]) best[p] = t;
                    }
                double g[2], flops = 2.0 * s.count * 4096 * 1024 * n;
                for (int p = 0; p < 2; p++) g[p] = flops / best[p] / 1e9;
                int auto_blocked = n >= k->block_min[mi];
                printf("  n=%d %5.1f%s/%5.1f%s (%2.0f%%)", n, g[0], auto_blocked ? "" : "*", g[1], auto_blocked ? "*" : "",
                       peak > 0 ? 100 * (g[0] > g[1] ? g[0] : g[1]) / peak : 0);
            }
            printf("\n");
            fflush(stdout);
            free(s.w);
            free(s.mem);
        }
    }
    free(x), free(out), free(xq), free(xd), free(xs), free(xg);
    return 0;
}

int main(int argc, char **argv) {
    int threads = 0, reps = 9, types[16] = {SD_F16, SD_Q8_0}, n_types = 2, rows = 0, cache = 0, types_given = 0;
    double params_m = 300;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--params") == 0 && i + 1 < argc) params_m = atof(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cache") == 0) cache = 1;
        else if (strcmp(argv[i], "--rows") == 0) rows = 1;
        else if (strcmp(argv[i], "--types") == 0 && i + 1 < argc) {
            n_types = 0, types_given = 1;
            for (char *t = strtok(argv[++i], ","); t && n_types < 16; t = strtok(NULL, ",")) {
                types[n_types] = sd_dtype_by_name(t);
                if (types[n_types] < 0 || !sd_quantize_supported(types[n_types])) {
                    fprintf(stderr, "bench_kernels: unknown type '%s'\n", t);
                    return 2;
                }
                n_types++;
            }
        } else {
            fprintf(stderr, "usage: bench_kernels [-t THREADS] [--params MILLIONS] [--reps N] [--types T,T..] | --cache | --rows\n");
            return 2;
        }
    }
    if (cache) {
        static const int cache_types[] = {SD_F32, SD_F16, SD_BF16, SD_Q8_0, SD_Q4_0, SD_Q4_1, SD_Q5_0, SD_Q5_1,
                                          SD_IQ4_NL, SD_Q2_K, SD_Q3_K, SD_Q4_K, SD_Q5_K, SD_Q6_K, SD_IQ4_XS};
        return types_given ? bench_cache(types, n_types) : bench_cache(cache_types, 15);
    }
    if (rows) {
        static const int row_types[] = {SD_F16, SD_BF16, SD_F32, SD_Q8_0};
        return types_given ? bench_rows(types, n_types) : bench_rows(row_types, 4);
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

