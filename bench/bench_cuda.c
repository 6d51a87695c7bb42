/* CUDA matrix-vector throughput against the device's own copy bandwidth, in one run: for the projections of
 * an 8B-class layer (4096 x 4096, 1024 x 4096, 14336 x 4096, 4096 x 14336) and its classifier (32000 x 4096),
 * F16 and Q8_0, n = 1, 2, 4, 8, 9, 16, 32, 64 rows: microseconds per product, weight bytes read per second, and the
 * ratio to a device-to-device copy's (read + write) bandwidth measured beside it. Each matrix set is larger
 * than the L2 cache (the shapes are cycled), so the products stream from memory.
 *
 *   build/bench_cuda [--reps N]          (prints "skipped: ..." without a CUDA device)
 *
 * Built by `make build/bench_cuda`; run on a GPU machine by tools/gpu_check.sh (step "matvec"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "kernels/backend.h"
#ifdef SD_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* Host bytes of a rows x cols matrix with sane random values (no NaN/Inf) in type. */
static void *host_matrix(int type, int64_t rows, int64_t cols) {
    size_t bytes = sd_dtype_row_bytes(type, cols) * (size_t)rows;
    uint8_t *p = malloc(bytes);
    if (!p) return NULL;
    if (type == SD_F16) {
        for (size_t i = 0; i < bytes / 2; i++) ((uint16_t *)p)[i] = (uint16_t)(0x3000 | (rnd() & 0x83ff));
    } else {
        for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rnd();
        for (size_t b = 0; b < bytes / sizeof(sd_block_q8_0); b++) ((sd_block_q8_0 *)p)[b].d = 0x2000;
    }
    return p;
}

/* Copy bandwidth (bytes read + written per second) of a 1 GiB device-to-device copy, best of 5. */
static double copy_gbs(void) {
#ifdef SD_HAVE_CUDA
    size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
    cudaMemset(a, 1, bytes);
    double best = 1e9;
    for (int i = 0; i < 6; i++) {
        cudaDeviceSynchronize();
        double t0 = sd_now_s();
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaDeviceSynchronize();
        double t = sd_now_s() - t0;
        if (i > 0 && t < best) best = t;
    }
    cudaFree(a);
    cudaFree(b);
    return 2.0 * (double)bytes / best / 1e9;
#else
    return 0;
#endif
}

int main(int argc, char **argv) {
    int reps = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_cuda [--reps N]\n");
            return 2;
        }
    }
    sd_backend *b = NULL;
    sd_err err = {{0}};
    if (sd_backend_cuda_new(0, &b, &err) != 0) {
        printf("skipped: bench_cuda: no CUDA device (%s)\n", err.msg);
        return 0;
    }
    double copy = copy_gbs();
    printf("device %s; copy bandwidth (read + write) %.0f GB/s\n", b->device, copy);
    static const int64_t shapes[][2] = {{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}, {32000, 4096}};
    static const int ns[] = {1, 2, 4, 8, 9, 16, 32, 64};
    const int types[] = {SD_F16, SD_Q8_0};
    enum { COPIES = 4 }; /* distinct matrices per shape, cycled, so repeated products miss the L2 */
    printf("%-6s %-13s %3s %10s %9s %7s %9s\n", "type", "rows x cols", "n", "us", "GB/s", "copy%", "T(n)/T(1)");
    for (int ti = 0; ti < 2; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            int64_t rows = shapes[si][0], cols = shapes[si][1];
            sd_tensor w[COPIES];
            void *host[COPIES];
            int ok = 1;
            for (int k = 0; k < COPIES; k++) {
                host[k] = host_matrix(types[ti], rows, cols);
                w[k] = (sd_tensor){.type = types[ti], .rows = rows, .cols = cols, .host = host[k], .name = "bench"};
                ok &= host[k] && b->upload_weight(b, &w[k], &err) == 0;
            }
            float *x = b->alloc(b, (size_t)64 * cols, &err), *out = b->alloc(b, (size_t)64 * rows, &err);
            if (!ok || !x || !out) {
                printf("error: %s\n", err.msg);
                return 1;
            }
            double t1 = 0;
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                int n = ns[ni];
                for (int k = 0; k < COPIES; k++) b->matmul(b, out, &w[k], x, n); /* warm-up */
                b->sync(b);
                double t0 = sd_now_s();
                for (int r = 0; r < reps; r++) b->matmul(b, out, &w[r % COPIES], x, n);
                b->sync(b);
                double us = (sd_now_s() - t0) / reps * 1e6;
                if (n == 1) t1 = us;
                double gbs = (double)sd_dtype_row_bytes(types[ti], cols) * (double)rows / us / 1e3;
                printf("%-6s %5lld x %-5lld %3d %10.1f %9.0f %6.1f%% %9.2f\n", sd_dtype_name(types[ti]),
                       (long long)rows, (long long)cols, n, us, gbs, copy > 0 ? 100.0 * gbs / copy : 0, us / t1);
            }
            for (int k = 0; k < COPIES; k++) {
                b->free_weight(b, &w[k]);
                free(host[k]);
            }
            b->release(b, x);
            b->release(b, out);
        }
    if (b->failed) printf("error: %s\n", b->fail_msg);
    b->destroy(b);
    return b->failed ? 1 : 0;
}
