#include "bench/bandwidth.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/clock.h"
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

double sd_bench_read_bandwidth(int n_threads, size_t bytes) {
    sd_pool *pool;
    if (bytes < 1 << 20) bytes = 1 << 20;
    if (sd_pool_new(n_threads, &pool, NULL) != 0) return -1;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, bytes) != 0) {
        sd_pool_free(pool);
        return -1;
    }
    /* Fill with small floats (no denormals or NaNs to slow the adds), which also faults every page in. */
    float *f = buf;
    for (size_t i = 0; i < bytes / sizeof(float); i++) f[i] = (float)(i & 1023) * 1e-3f;
    bw_job j = {.buf = buf, .bytes = bytes};
#ifdef HAVE_X86
    __builtin_cpu_init();
    j.use_avx = __builtin_cpu_supports("avx");
#endif
    double best = 0;
    size_t per = bytes / (size_t)sd_pool_size(pool) / 128 * 128, total = per * (size_t)sd_pool_size(pool);
    sd_pool_run(pool, bw_worker, &j); /* warm-up: wakes the workers, settles page tables */
    for (int rep = 0; rep < 7; rep++) {
        double t0 = sd_now_s();
        sd_pool_run(pool, bw_worker, &j);
        double gbs = (double)total / (sd_now_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    sd_pool_free(pool);
    return best;
}
