/* CUDA matrix-vector throughput against the device's own copy bandwidth, in one run: for the projections of
 * an 8B-class layer (4096 x 4096, 1024 x 4096, 14336 x 4096, 4096 x 14336) and its classifier (32000 x 4096),
 * in each weight type (default F16, Q8_0 and GGML's Q4_0, Q4_K, Q5_K, Q6_K), n = 1, 2, 4, 8, 9, 16, 32, 64
 * rows: microseconds per product, weight bytes read per second, and the ratio to a device-to-device copy's
 * (read + write) bandwidth measured beside it. Each matrix set is larger than the L2 cache (the shapes are
 * cycled), so the products stream from memory. The activations stay the same across a loop, so the int8
 * quantization of Q8_0's and the GGML types' inputs happens once (as for q/k/v or gate/up in a model);
 * n > 16 is cuBLAS (Q8_0 and the GGML types: each product dequantizes its weights to F16 first).
 *
 *   build/bench_cuda [--reps N] [--types f16,q8_0,q4_K,...]   (prints "skipped: ..." without a CUDA device)
 *   build/bench_cuda --sample   device sampling (sample_rows) against argmax_rows: 1 and 4 rows of 32000,
 *                               128256 and 151936 words, temperature with top-p, with top-k + top-p + min-p
 *   build/bench_cuda --steps    one decode step's attention (kv_spans, kv_store, attention of an 8B layer's
 *                               shape) at advancing positions, replayed as a step graph and issued op by op:
 *                               what the descriptors' upload and the graph launch cost per step
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

/* Byte offsets of the F16 scale fields (d, and dmin or m) in a block of a quantized type; -1: none. */
static void scale_fields(int type, int off[2]) {
    off[0] = 0;
    off[1] = -1;
    switch (type) {
    case SD_Q4_1: case SD_Q5_1: case SD_Q4_K: case SD_Q5_K: off[1] = 2; break;
    case SD_Q2_K: off[0] = 80; off[1] = 82; break;
    case SD_Q3_K: off[0] = 108; break;
    case SD_Q6_K: off[0] = 208; break;
    default: break;
    }
}

/* Host bytes of a rows x cols matrix with sane random values (no NaN/Inf) in type: random quants, scales
 * of 2^-7 (the kernels' speed does not depend on the values). */
static void *host_matrix(int type, int64_t rows, int64_t cols) {
    size_t bytes = sd_dtype_row_bytes(type, cols) * (size_t)rows;
    uint8_t *p = malloc(bytes);
    if (!p) return NULL;
    if (type == SD_F16) {
        for (size_t i = 0; i < bytes / 2; i++) ((uint16_t *)p)[i] = (uint16_t)(0x3000 | (rnd() & 0x83ff));
        return p;
    }
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rnd();
    size_t bb = sd_dtype_block_bytes(type);
    int off[2];
    scale_fields(type, off);
    for (size_t b = 0; b < bytes / bb; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) memcpy(p + b * bb + off[k], &(uint16_t){0x2000}, 2);
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

/* Microseconds per call of sample_rows (or argmax_rows when cfg is NULL) on rows x width random logits. */
static double sample_us(sd_backend *b, int rows, int width, const sd_sample_cfg *cfg, int reps) {
    size_t n = (size_t)rows * width;
    float *h = malloc(n * sizeof *h), u[4] = {0.3f, 0.7f, 0.1f, 0.9f};
    if (!h) return 0;
    for (size_t i = 0; i < n; i++) h[i] = (float)(rnd() % 20000) * 1e-3f;
    float *lg = b->alloc(b, n, NULL), *pr = b->alloc(b, n, NULL);
    b->from_host(b, lg, h, n);
    int32_t ids[4];
    double best = 1e9;
    for (int r = 0; r <= reps; r++) {
        double t0 = sd_now_s();
        if (cfg) b->sample_rows(b, ids, pr, lg, rows, width, cfg, u);
        else b->argmax_rows(b, ids, lg, rows, width);
        double t = sd_now_s() - t0;
        if (r > 0 && t < best) best = t; /* the first call warms up */
    }
    b->release(b, lg);
    b->release(b, pr);
    free(h);
    return best * 1e6;
}

static void bench_sample(sd_backend *b, int reps) {
    static const int widths[] = {32000, 128256, 151936}, rows[] = {1, 4};
    static const sd_sample_cfg cfgs[] = {{0.8f, 0, 0.95f, 0.0f}, {0.8f, 40, 0.95f, 0.05f}};
    printf("%-7s %4s %12s %22s %22s\n", "width", "rows", "argmax us", "t0.8 top-p us (x)", "top-k+p+min-p us (x)");
    for (int wi = 0; wi < 3; wi++)
        for (int ri = 0; ri < 2; ri++) {
            double a = sample_us(b, rows[ri], widths[wi], NULL, reps);
            double s0 = sample_us(b, rows[ri], widths[wi], &cfgs[0], reps);
            double s1 = sample_us(b, rows[ri], widths[wi], &cfgs[1], reps);
            printf("sample %6d %4d %12.1f %14.1f (%5.2f) %14.1f (%5.2f)\n", widths[wi], rows[ri], a, s0, s0 / a, s1,
                   s1 / a);
        }
}

/* One layer's decode-step attention of an 8B-class model (32 heads, 8 kv heads of 128) at positions
 * 2000.., a new position each step as in decoding: through a replayed step graph and op by op. */
static void bench_steps(sd_backend *b, int reps) {
    enum { H = 32, KVH = 8, HD = 128, CTX = 4096, P0 = 2000 };
    sd_kv_mem kv;
    sd_err err = {{0}};
    if (b->kv_mem_alloc(b, &kv, 1, KVH * HD, CTX / SD_KV_BLOCK, SD_F16, &err)) {
        printf("error: %s\n", err.msg);
        return;
    }
    int32_t table[CTX / SD_KV_BLOCK];
    for (int i = 0; i < CTX / SD_KV_BLOCK; i++) table[i] = (i * 7) % (CTX / SD_KV_BLOCK);
    float *q = b->alloc(b, H * HD, NULL), *k = b->alloc(b, KVH * HD, NULL), *v = b->alloc(b, KVH * HD, NULL);
    float *o = b->alloc(b, H * HD, NULL);
    const uint64_t key[2] = {0xbe7c5u, (uintptr_t)q};
    const int32_t tok[1] = {0};
    for (int graphs = 1; graphs >= 0; graphs--) {
        if (graphs && !b->graph_begin) continue;
        double t0 = 0;
        for (int r = 0; r <= reps; r++) {
            if (r == 1) t0 = sd_now_s(); /* the first step records the graph */
            sd_kv_span sp = {.row = 0, .n = 1, .pos0 = P0 + r, .cap = CTX, .table = table};
            b->kv_spans(b, &sp, 1, 1);
            if (!(graphs && b->graph_begin(b, key, 2, tok, 1, P0 + r))) {
                b->kv_store(b, &kv, 0, k, v);
                b->attention(b, o, q, &kv, 0, H, KVH, HD);
                if (graphs) b->graph_end(b);
            }
            b->sync(b);
        }
        printf("step attention, %s: %.1f us per step (kv_spans + kv_store + attention + sync, positions %d..%d)\n",
               graphs ? "graph replay" : "op by op", (sd_now_s() - t0) / reps * 1e6, P0, P0 + reps);
    }
    b->release(b, q); b->release(b, k); b->release(b, v); b->release(b, o);
    b->kv_mem_free(b, &kv);
}

int main(int argc, char **argv) {
    int reps = 20, types[16], n_types = 0, mode = 0; /* 0 matvec, 1 sample, 2 steps */
    const char *type_list = "f16,q8_0,q4_0,q4_K,q5_K,q6_K";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--types") && i + 1 < argc) type_list = argv[++i];
        else if (!strcmp(argv[i], "--sample")) mode = 1;
        else if (!strcmp(argv[i], "--steps")) mode = 2;
        else {
            fprintf(stderr, "usage: bench_cuda [--reps N] [--types f16,q8_0,q4_K,...] [--sample | --steps]\n");
            return 2;
        }
    }
    char list[256];
    snprintf(list, sizeof list, "%s", type_list);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int ty = sd_dtype_by_name(t);
        if (ty < 0 || ty == SD_F32 || n_types == 16) {
            fprintf(stderr, "bench_cuda: bad type '%s' in --types (f16, bf16, q8_0 or a GGML quantized type)\n", t);
            return 2;
        }
        types[n_types++] = ty;
    }
    sd_backend *b = NULL;
    sd_err err = {{0}};
    if (sd_backend_cuda_new(0, &b, &err) != 0) {
        printf("skipped: bench_cuda: no CUDA device (%s)\n", err.msg);
        return 0;
    }
    if (mode) {
        printf("device %s\n", b->device);
        if (mode == 1) bench_sample(b, reps);
        else bench_steps(b, reps * 10);
        if (b->failed) printf("error: %s\n", b->fail_msg);
        int rc = b->failed ? 1 : 0;
        b->destroy(b);
        return rc;
    }
    double copy = copy_gbs();
    printf("device %s; copy bandwidth (read + write) %.0f GB/s\n", b->device, copy);
    static const int64_t shapes[][2] = {{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}, {32000, 4096}};
    static const int ns[] = {1, 2, 4, 8, 9, 16, 32, 64};
    enum { COPIES = 4 }; /* distinct matrices per shape, cycled, so repeated products miss the L2 */
    printf("%-7s %-13s %3s %10s %9s %7s %9s\n", "type", "rows x cols", "n", "us", "GB/s", "copy%", "T(n)/T(1)");
    for (int ti = 0; ti < n_types; ti++)
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
                printf("%-7s %5lld x %-5lld %3d %10.1f %9.0f %6.1f%% %9.2f\n", sd_dtype_name(types[ti]),
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
    int rc = b->failed ? 1 : 0;
    b->destroy(b);
    return rc;
}
