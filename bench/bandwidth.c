#include "bench/bandwidth.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "kernels/cpu/threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

typedef struct bw_job {
    const uint8_t *buf;
    size_t bytes;
    double sink[64];
    int use_avx;
} bw_job;

#ifdef HAVE_X86
/* Four independent 256-bit accumulators keep enough loads in flight to saturate the memory system. */
__attribute__((target("avx"))) static double read_avx(const uint8_t *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps((const float *)(p + i)));
        a1 = _mm256_add_ps(a1, _mm256_load_ps((const float *)(p + i + 32)));
        a2 = _mm256_add_ps(a2, _mm256_load_ps((const float *)(p + i + 64)));
        a3 = _mm256_add_ps(a3, _mm256_load_ps((const float *)(p + i + 96)));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float t[8];
    _mm256_storeu_ps(t, s);
    return (double)t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif

static double read_plain(const uint8_t *p, size_t n) {
    uint64_t a[4] = {0, 0, 0, 0};
    for (size_t i = 0; i + 32 <= n; i += 32) {
        uint64_t v[4];
        memcpy(v, p + i, 32);
        a[0] += v[0];
        a[1] ^= v[1];
        a[2] += v[2];
        a[3] ^= v[3];
    }
    return (double)(a[0] + a[1] + a[2] + a[3]);
}

static void bw_worker(void *v, int ith, int nth) {
    bw_job *j = v;
    /* contiguous parts, 128-byte aligned */
    size_t per = j->bytes / (size_t)nth / 128 * 128, off = per * (size_t)ith;
    double s;
#ifdef HAVE_X86
    if (j->use_avx) s = read_avx(j->buf + off, per);
    else
#endif
        s = read_plain(j->buf + off, per);
    j->sink[ith % 64] += s;
}

struct sd_bw_probe {
    sd_pool *pool;
    bw_job job;
    size_t total; /* bytes one pass reads (the parts of all threads) */
};

sd_bw_probe *sd_bw_probe_new(int n_threads, size_t bytes) {
    sd_bw_probe *p = calloc(1, sizeof *p);
    if (bytes < 1 << 20) bytes = 1 << 20;
    void *buf = NULL;
    if (!p || sd_pool_new(n_threads, &p->pool, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (posix_memalign(&buf, 4096, bytes) != 0) {
        sd_bw_probe_free(p);
        return NULL;
    }
    /* Fill with small floats (no denormals or NaNs to slow the adds), which also faults every page in. */
    float *f = buf;
    for (size_t i = 0; i < bytes / sizeof(float); i++) f[i] = (float)(i & 1023) * 1e-3f;
    p->job = (bw_job){.buf = buf, .bytes = bytes};
#ifdef HAVE_X86
    __builtin_cpu_init();
    p->job.use_avx = __builtin_cpu_supports("avx");
#endif
    int nth = sd_pool_size(p->pool);
    p->total = bytes / (size_t)nth / 128 * 128 * (size_t)nth;
    sd_pool_run(p->pool, bw_worker, &p->job); /* warm-up: wakes the workers, settles page tables */
    return p;
}

double sd_bw_probe_pass(sd_bw_probe *p) {
    double t0 = sd_now_s();
    sd_pool_run(p->pool, bw_worker, &p->job);
    return (double)p->total / (sd_now_s() - t0) / 1e9;
}

void sd_bw_probe_free(sd_bw_probe *p) {
    if (!p) return;
    free((void *)p->job.buf);
    if (p->pool) sd_pool_free(p->pool);
    free(p);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double sd_median(double *v, int n) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double sd_bench_read_bandwidth(int n_threads, size_t bytes, int passes) {
    sd_bw_probe *p = sd_bw_probe_new(n_threads, bytes);
    if (!p) return -1;
    if (passes < 1) passes = 1;
    double *v = malloc((size_t)passes * sizeof *v);
    double med = -1;
    if (v) {
        for (int i = 0; i < passes; i++) v[i] = sd_bw_probe_pass(p);
        med = sd_median(v, passes);
    }
    free(v);
    sd_bw_probe_free(p);
    return med;
}
