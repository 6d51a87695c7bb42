/* The CUDA backend against the CPU backend: every op, every weight type, logits of a whole forward pass,
 * the out-of-memory error. Built twice: test_cuda runs the kernels on a CUDA device (skipped where there is
 * none); test_cuda_emu runs them in the CPU emulation of CUDA (tests/cuda_emu), on every `make test`, with
 * the sweeps cut to small shapes unless SPECD_EMU_FULL=1. */
#include <stdint.h>
#include <stdlib.h>

#include "kernels/backend.h"
#include "kernels/quant.h"
#include "kernels/quant_k.h"
#include "kernels/quantize.h"
#include "kernels/sample_ref.h"
#include "model/model.h"
#include "target/engine.h"
#include "tests/test.h"
#include "tests/engine_fixture.h"
#include "tools/mkmodel.h"

static sd_backend *gpu, *cpu;
static char no_gpu_reason[512];
#ifdef SD_CUDA_EMU
static const char *const kernels_run = "emulated";
#else
static const char *const kernels_run = "cuda";
#endif
static bool quick; /* emulated without SPECD_EMU_FULL=1: small shapes, so the suite fits every change */

/* Row counts of the matmul sweep: the path boundaries (8/9, 16/17, 64/65 rows) and, in a full run, rows
 * between them. */
static int next_rows(int n) {
    if (quick) return n < 3 ? n + 1 : n < 8 ? 8 : n < 9 ? 9 : n < 16 ? 16 : n < 17 ? 17 : n < 65 ? 65 : 66;
    return n + (n < 9 ? 1 : n < 16 ? 3 : n < 20 ? 1 : n < 33 ? 13 : n < 64 ? 31 : 1);
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* A host tensor of random values in the given type (F32 values quantized through the type). */
static void *make_weights(int type, int64_t rows, int64_t cols) {
    size_t bytes = sd_dtype_row_bytes(type, cols) * (size_t)rows;
    uint8_t *p = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)(frand() * 127.0f);
    if (type == SD_F32) for (size_t i = 0; i < (size_t)(rows * cols); i++) ((float *)p)[i] = frand();
    if (type == SD_F16 || type == SD_BF16) /* keep exponents sane: random mantissa, exponent around 1 */
        for (size_t i = 0; i < (size_t)(rows * cols); i++)
            ((uint16_t *)p)[i] = (uint16_t)((type == SD_F16 ? 0x3800 : 0x3f00) | (((uint16_t *)p)[i] & 0x80ff));
    if (type == SD_Q8_0)
        for (size_t b = 0; b < (size_t)(rows * cols / 32); b++) ((sd_block_q8_0 *)p)[b].d = 0x2000; /* 2^-7 */
    return p;
}

static float *dev_copy(sd_backend *b, const float *host, size_t n) {
    float *d = b->alloc(b, n, NULL);
    b->from_host(b, d, host, n);
    return d;
}

static double max_rel_err(const float *a, const float *b, size_t n) {
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]) / scale);
    return worst;
}

/* The exact product of the weights the file describes (dequantized, in double) with x: the reference
 * every backend approximates. */
static void exact_matmul(const sd_tensor *t, const float *x, int n, double *out) {
    size_t rb = sd_dtype_row_bytes(t->type, t->cols);
    float *wr = malloc(sizeof(float) * (size_t)t->cols);
    for (int64_t r = 0; r < t->rows; r++) {
        sd_dequant_row(t->type, (const char *)t->host + (size_t)r * rb, wr, t->cols);
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int64_t c = 0; c < t->cols; c++) s += (double)wr[c] * x[(size_t)j * t->cols + c];
            out[(size_t)j * t->rows + r] = s;
        }
    }
    free(wr);
}

static double max_rel_err_d(const float *a, const double *ref, size_t n) {
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - ref[i]) / scale);
    return worst;
}

/* Every weight type, n = 1..20, 33, 64, 65 rows (the F32 matrix-vector kernels up to 16, or tensor cores up to
 * 64 for F16/BF16 with SPECD_CUDA_TC=1; cuBLAS or row chunks past them), against the exact dequantized product.
 * Tolerances, relative to the largest output:
 *  - F16/BF16 weights, n <= 16, F32 kernels (the default): F32 activations and accumulation, 1e-5;
 *  - tensor cores (SPECD_CUDA_TC=1) round x to TF32 (11 significant bits), cuBLAS (n > 16, or 64 with
 *    tensor cores) to F16, and F32 weights become F16 on the GPU (2^-11 relative per weight): 4e-3;
 *  - Q8_0 quantizes the activations per block of 32 to int8 as the CPU backend does (error up to d_x / 2 =
 *    amax / 254 per element): 2e-2 against the exact product, and up to 16 rows 1e-4 against the CPU
 *    backend, whose activations are quantized bit for bit the same way (only float summation order
 *    differs); past 16 rows its tiles are dequantized to F16 for cuBLAS like the other quantized types. */
static void test_matmul_all_types(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int types[] = {SD_F32, SD_F16, SD_BF16, SD_Q8_0};
    const int64_t shapes[][2] = {{64, 64}, {96, 256}, {1000, 512}, {37, 4096}};
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t si = 0; si < 4; si++)
            for (int n = 1; n <= 65 && !(quick && si == 2); n = next_rows(n)) {
                int64_t rows = shapes[si][0], cols = shapes[si][1];
                void *w = make_weights(types[ti], rows, cols);
                sd_tensor tc = {.type = types[ti], .cols = cols, .rows = rows, .host = w, .name = "w"};
                sd_tensor tg = tc;
                REQUIRE(cpu->upload_weight(cpu, &tc, NULL) == 0);
                REQUIRE(gpu->upload_weight(gpu, &tg, NULL) == 0);
                size_t nx = (size_t)n * cols, no = (size_t)n * rows;
                float *x = malloc(nx * 4), *oc = malloc(no * 4), *og = malloc(no * 4);
                double *ref = malloc(no * sizeof(double));
                for (size_t i = 0; i < nx; i++) x[i] = frand();
                float *xc = dev_copy(cpu, x, nx), *xg = dev_copy(gpu, x, nx);
                float *dc = cpu->alloc(cpu, no, NULL), *dg = gpu->alloc(gpu, no, NULL);
                cpu->matmul(cpu, dc, &tc, xc, n);
                gpu->matmul(gpu, dg, &tg, xg, n);
                cpu->to_host(cpu, oc, dc, no);
                gpu->to_host(gpu, og, dg, no);
                exact_matmul(&tc, x, n, ref);
                bool q8 = types[ti] == SD_Q8_0;
                const char *tc_env = getenv("SPECD_CUDA_TC");
                bool exact_f32 = !(tc_env && !strcmp(tc_env, "1")) && n <= 16 && types[ti] != SD_F32;
                double tol = q8 ? 2e-2 : exact_f32 ? 1e-5 : 4e-3;
                double e = max_rel_err_d(og, ref, no);
                CHECKF(e <= tol, "type %s rows %lld cols %lld n %d: rel err %g against the exact product",
                       sd_dtype_name(types[ti]), (long long)rows, (long long)cols, n, e);
                if (q8 && n <= 16) { /* past 16 rows F16 tiles and cuBLAS: F16 activations, not int8 */
                    double ec = max_rel_err(og, oc, no);
                    CHECKF(ec <= 1e-4, "q8_0 rows %lld cols %lld n %d: rel err %g against the CPU backend",
                           (long long)rows, (long long)cols, n, ec);
                }
                cpu->release(cpu, xc); cpu->release(cpu, dc); gpu->release(gpu, xg); gpu->release(gpu, dg);
                cpu->free_weight(cpu, &tc); gpu->free_weight(gpu, &tg);
                free(x); free(oc); free(og); free(w); free(ref);
            }
    CHECK(!gpu->failed);
}

static const int quant_types[] = {SD_Q4_0, SD_Q4_1, SD_Q5_0, SD_Q5_1, SD_Q2_K, SD_Q3_K,
                                  SD_Q4_K, SD_Q5_K, SD_Q6_K, SD_IQ4_NL, SD_IQ4_XS};
#define N_QUANT_TYPES (sizeof quant_types / sizeof *quant_types)

/* Random weights quantized to a GGML type by the project's quantizer (every scale field sane). */
static void *make_quant_weights(int type, int64_t rows, int64_t cols) {
    size_t rb = sd_dtype_row_bytes(type, cols);
    uint8_t *p = malloc(rb * (size_t)rows);
    float *row = malloc(sizeof(float) * (size_t)cols);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) row[c] = frand() * (1.0f + (float)(c % 7)); /* uneven sub-blocks */
        if (sd_quantize_row(type, row, p + (size_t)r * rb, cols) != 0) {
            free(p);
            p = NULL;
            break;
        }
    }
    free(row);
    return p;
}

/* x rounded through the int8 activations the quantized kernels use (per block of 32, as sd_quant_act_q8). */
static void quantized_activations(const float *x, int64_t count, float *xr) {
    int8_t *q = malloc((size_t)count);
    float *d = malloc(sizeof(float) * (size_t)(count / 32));
    int32_t *sums = malloc(sizeof(int32_t) * (size_t)(count / 32));
    sd_quant_act_q8(x, count, q, d, sums);
    for (int64_t i = 0; i < count; i++) xr[i] = d[i / 32] * (float)q[i];
    free(q); free(d); free(sums);
}

/* GGML's quantized types (matmul_q.cu) for n = 1..17 and past: the matrix-vector kernels (n <= 16) decode
 * the blocks in registers and multiply int8 activations exactly (dp4a), so against the exact product of
 * the dequantized weights with the int8-rounded activations only float summation differs (2e-5 of the
 * largest output), and against the exact product with the F32 activations the activation rounding shows
 * (up to amax / 254 per element, as for Q8_0: 2e-2). n > 16 dequantizes to F16 for cuBLAS with F16
 * activations (2^-11 relative per weight and activation: 4e-3 of the exact product). Also checks that the
 * rows of an n-row product are bitwise the one-row products (a verify block equals single steps). */
static void test_matmul_quant_types(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int64_t shapes[][2] = {{37, 256}, {70, 768}, {300, 4096}};
    size_t n_shapes = quick ? 2 : 3;
    for (size_t ti = 0; ti < N_QUANT_TYPES; ti++)
        for (size_t si = 0; si < n_shapes; si++) {
            int type = quant_types[ti];
            int64_t rows = shapes[si][0], cols = shapes[si][1];
            void *w = make_quant_weights(type, rows, cols);
            REQUIRE(w);
            sd_tensor tc = {.type = type, .cols = cols, .rows = rows, .host = w, .name = "w"}, tg = tc;
            REQUIRE(gpu->upload_weight(gpu, &tg, NULL) == 0);
            const int nmax = 40;
            size_t nx = (size_t)nmax * cols, no = (size_t)nmax * rows;
            float *x = malloc(nx * 4), *xr = malloc(nx * 4), *og = malloc(no * 4), *one = malloc((size_t)rows * 4);
            double *ref = malloc(no * sizeof(double)), *refq = malloc(no * sizeof(double));
            for (size_t i = 0; i < nx; i++) x[i] = frand();
            quantized_activations(x, (int64_t)nx, xr);
            exact_matmul(&tc, x, nmax, ref);
            exact_matmul(&tc, xr, nmax, refq);
            float *xg = dev_copy(gpu, x, nx), *dg = gpu->alloc(gpu, no, NULL);
            int bitwise_bad = 0;
            for (int n = 1; n <= nmax; n += n < 17 ? 1 : 23) {
                if (quick && si == 1 && n > 2 && n != 9 && n != 16 && n != 17) continue;
                gpu->matmul(gpu, dg, &tg, xg, n);
                gpu->to_host(gpu, og, dg, (size_t)n * rows);
                double e = max_rel_err_d(og, ref, (size_t)n * rows);
                CHECKF(e <= (n <= 16 ? 2e-2 : 4e-3), "%s %lldx%lld n %d: rel err %g against the exact product",
                       sd_dtype_name(type), (long long)rows, (long long)cols, n, e);
                if (n <= 16) {
                    double eq = max_rel_err_d(og, refq, (size_t)n * rows);
                    CHECKF(eq <= 2e-5, "%s %lldx%lld n %d: rel err %g against the int8-activation product",
                           sd_dtype_name(type), (long long)rows, (long long)cols, n, eq);
                    for (int j = 1; j < n; j += quick ? 7 : 1) { /* row 0 is the n = 1 case itself */
                        gpu->matmul(gpu, dg, &tg, xg + (size_t)j * cols, 1);
                        gpu->to_host(gpu, one, dg, (size_t)rows);
                        if (memcmp(one, og + (size_t)j * rows, sizeof(float) * (size_t)rows)) bitwise_bad++;
                    }
                }
            }
            CHECKF(bitwise_bad == 0, "%s %lldx%lld: %d rows of n-row products differ from one-row products",
                   sd_dtype_name(type), (long long)rows, (long long)cols, bitwise_bad);
            gpu->release(gpu, xg); gpu->release(gpu, dg); gpu->free_weight(gpu, &tg);
            free(x); free(xr); free(og); free(one); free(ref); free(refq); free(w);
        }
    CHECK(!gpu->failed);
}

/* Activations past F16's range (65504; some models have them at w_down's input) into an F16 matrix: tensor
 * cores round x to TF32 (F32's range); cuBLAS (n > 64) scales x by a power of two on the device. Either way
 * the result is finite and as exact as for ordinary activations (4e-3). */
static void test_matmul_large_activations(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int64_t rows = 256, cols = 512;
    const int ns[] = {24, 80}; /* tensor cores (F32 range), cuBLAS past 64 rows (scaled F16) */
    void *w = make_weights(SD_F16, rows, cols);
    sd_tensor tg = {.type = SD_F16, .cols = cols, .rows = rows, .host = w, .name = "w"};
    REQUIRE(gpu->upload_weight(gpu, &tg, NULL) == 0);
    for (int k = 0; k < 2; k++) {
        int n = ns[k];
        size_t nx = (size_t)n * cols, no = (size_t)n * rows;
        float *x = malloc(nx * 4), *og = malloc(no * 4);
        double *ref = malloc(no * sizeof(double));
        for (size_t i = 0; i < nx; i++) x[i] = frand() * (i % 97 == 0 ? 3e5f : 1.0f);
        float *xg = dev_copy(gpu, x, nx), *dg = gpu->alloc(gpu, no, NULL);
        gpu->matmul(gpu, dg, &tg, xg, n);
        gpu->to_host(gpu, og, dg, no);
        exact_matmul(&tg, x, n, ref);
        int finite = 1;
        for (size_t i = 0; i < no; i++) finite &= isfinite(og[i]);
        CHECKF(finite, "n %d: non-finite outputs", n);
        double e = max_rel_err_d(og, ref, no);
        CHECKF(e <= 4e-3, "n %d: rel err %g with activations up to 3e5", n, e);
        gpu->release(gpu, xg); gpu->release(gpu, dg);
        free(x); free(og); free(ref);
    }
    gpu->free_weight(gpu, &tg);
    free(w);
}

/* A model unloaded and another loaded in its place may get the same addresses, so the step-graph keys of
 * the new one can equal keys recorded for the old one (the H200 replayed an F32 model's graphs for the BF16
 * model loaded after it, with SPECD_CUDA_TC=1: logits off by 6-22). Freeing weights must forget the graphs:
 * the same key after a free records anew and computes with the new weights. */
static void test_graphs_forgotten_when_weights_freed(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    REQUIRE(gpu->graph_begin && gpu->graph_end);
    const int64_t rows = 48, cols = 256;
    const int types[] = {SD_F16, SD_BF16}; /* the old model's type, the new one's */
    const uint64_t key[] = {0x5eed, 6, 1};
    const int32_t tok = 1;
    float x[256], og[48];
    double ref[48];
    for (int i = 0; i < cols; i++) x[i] = frand();
    float *xg = dev_copy(gpu, x, (size_t)cols), *dg = gpu->alloc(gpu, (size_t)rows, NULL);
    for (int k = 0; k < 2; k++) {
        void *w = make_weights(types[k], rows, cols);
        sd_tensor tg = {.type = types[k], .cols = cols, .rows = rows, .host = w, .name = "w"};
        REQUIRE(gpu->upload_weight(gpu, &tg, NULL) == 0);
        int replayed = gpu->graph_begin(gpu, key, 3, &tok, 1, 0);
        CHECKF(!replayed, "%s: a graph recorded before the weights were freed was replayed", sd_dtype_name(types[k]));
        if (!replayed) {
            gpu->matmul(gpu, dg, &tg, xg, 1);
            if (gpu->graph_end(gpu) != 0) gpu->matmul(gpu, dg, &tg, xg, 1);
        }
        gpu->to_host(gpu, og, dg, (size_t)rows);
        exact_matmul(&tg, x, 1, ref);
        CHECKF(max_rel_err_d(og, ref, (size_t)rows) <= 4e-3, "%s: rel err %g", sd_dtype_name(types[k]),
               max_rel_err_d(og, ref, (size_t)rows));
        gpu->free_weight(gpu, &tg);
        free(w);
    }
    gpu->release(gpu, xg); gpu->release(gpu, dg);
    CHECK(!gpu->failed);
}

/* Rows of an n-row product are bitwise the rows of n one-row products for every n the matrix-vector or
 * tensor-core kernels take: a verify block computes exactly what single decode steps would (greedy spec
 * == plain), and a request's rows in a batch what it would compute alone. */
static void test_matmul_rows_bitwise(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int types[] = {SD_F16, SD_BF16, SD_Q8_0};
    const int64_t rows = quick ? 40 : 300, cols = quick ? 512 : 1536;
    for (size_t ti = 0; ti < 3; ti++) {
        void *w = make_weights(types[ti], rows, cols);
        sd_tensor tg = {.type = types[ti], .cols = cols, .rows = rows, .host = w, .name = "w"};
        REQUIRE(gpu->upload_weight(gpu, &tg, NULL) == 0);
        const char *tc_env = getenv("SPECD_CUDA_TC");
        /* cuBLAS past 16 rows without tensor cores, and for Q8_0 */
        const int nmax = tc_env && !strcmp(tc_env, "1") && types[ti] != SD_Q8_0 ? 40 : 16;
        float *x = malloc(sizeof(float) * nmax * cols), *one = malloc(sizeof(float) * rows),
              *all = malloc(sizeof(float) * nmax * rows);
        for (int64_t i = 0; i < nmax * cols; i++) x[i] = frand();
        float *xg = dev_copy(gpu, x, (size_t)nmax * cols), *dg = gpu->alloc(gpu, (size_t)nmax * rows, NULL);
        int bad = 0;
        for (int n = 2; n <= nmax; n += n < 17 ? 1 : 23) {
            gpu->matmul(gpu, dg, &tg, xg, n);
            gpu->to_host(gpu, all, dg, (size_t)n * rows);
            for (int j = 0; j < n; j++) {
                gpu->matmul(gpu, dg, &tg, xg + (size_t)j * cols, 1);
                gpu->to_host(gpu, one, dg, (size_t)rows);
                if (memcmp(one, all + (size_t)j * rows, sizeof(float) * rows)) bad++;
            }
        }
        CHECKF(bad == 0, "%s: %d rows of n-row products differ from one-row products", sd_dtype_name(types[ti]), bad);
        gpu->release(gpu, xg); gpu->release(gpu, dg); gpu->free_weight(gpu, &tg);
        free(x); free(one); free(all); free(w);
    }
}

/* An injected device failure (SPECD_FAIL_AFTER, the test hook) ends the request with an error naming the
 * op, never garbage tokens; the backend reports itself failed from then on. */
static void test_injected_fault_ends_request(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *t = shared_path("models/aidreams260K.gguf");
    if (!t) SKIP("../shared/models/aidreams260K.gguf not found");
    setenv("SPECD_FAIL_AFTER", "40", 1);
    sd_engine_config cfg = {.target_path = t, .device = "cuda"};
    sd_engine *e = NULL;
    sd_err err = {{0}};
    int rc = sd_engine_open(&cfg, &e, &err);
    unsetenv("SPECD_FAIL_AFTER");
    REQUIRE(rc == 0);
    sd_session *s = NULL;
    sd_gen *g = NULL;
    REQUIRE(sd_session_new(e, &s, &err) == 0);
    sd_gen_params p = sd_gen_params_default();
    p.max_tokens = 50;
    const int32_t prompt[] = {1, 403, 407, 261, 378};
    REQUIRE(sd_gen_start(s, prompt, 5, &p, &g, &err) == 0);
    int steps = 0, rc_step = 0;
    while (sd_gen_finish(g) == SD_FINISH_NONE && steps++ < 100)
        if ((rc_step = sd_gen_step(g, &err)) != 0) break;
    CHECKF(rc_step != 0, "generation finished without noticing the injected fault");
    CHECKF(strstr(err.msg, "cuda") && strstr(err.msg, "failed"), "error: %s", err.msg);
    CHECK(e->be->failed);
    sd_gen_free(g);
    sd_session_free(s);
    sd_engine_free(e);
}

/* A pool of n_layers layers holding one sequence of `total` positions whose blocks are scrambled (block i
 * is pool block 1 + 3i mod n_blocks, n_blocks not a multiple of 3), with K/V rows k, v (host) stored into
 * `layer`; the table stays in *table (free it). */
static int kv_fill(sd_backend *be, sd_kv_mem *kv, int n_layers, int layer, int kvd, int total, sd_dtype type,
                   const float *k, const float *v, int32_t **table) {
    int nb = (total + SD_KV_BLOCK - 1) / SD_KV_BLOCK, n_blocks = nb + 2;
    while (n_blocks % 3 == 0) n_blocks++;
    *table = malloc(sizeof(int32_t) * (size_t)nb);
    for (int i = 0; i < nb; i++) (*table)[i] = (1 + 3 * i) % n_blocks;
    if (be->kv_mem_alloc(be, kv, n_layers, kvd, n_blocks, type, NULL)) return -1;
    size_t nkv = (size_t)total * kvd;
    float *kd = dev_copy(be, k, nkv), *vd = dev_copy(be, v, nkv);
    /* in passes of at most 1024 rows, as the forward pass stores (CUDA takes at most 4096 rows a pass) */
    for (int p0 = 0; p0 < total; p0 += 1024) {
        int m = total - p0 < 1024 ? total - p0 : 1024;
        sd_kv_span sp = {.row = 0, .n = m, .pos0 = p0, .cap = total, .table = *table};
        be->kv_spans(be, &sp, 1, m);
        be->kv_store(be, kv, layer, kd + (size_t)p0 * kvd, vd + (size_t)p0 * kvd);
    }
    be->sync(be);
    be->release(be, kd);
    be->release(be, vd);
    return 0;
}

static void test_row_ops(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int n = 5, n_heads = 8, n_kv = 2, hd = 64, dim = n_heads * hd, kvd = n_kv * hd, ctx = 64, pos0 = 20;
    float *wn = make_weights(SD_F32, 1, dim);
    sd_tensor nc = {.type = SD_F32, .cols = dim, .rows = 1, .host = wn}, ng = nc;
    REQUIRE(cpu->upload_weight(cpu, &nc, NULL) == 0 && gpu->upload_weight(gpu, &ng, NULL) == 0);
    size_t nx = (size_t)n * dim;
    float *x = malloc(nx * 4), *y = malloc(nx * 4), *a = malloc(nx * 4), *b = malloc(nx * 4);
    for (size_t i = 0; i < nx; i++) { x[i] = frand() * 3; y[i] = frand(); }
    float *xc = dev_copy(cpu, x, nx), *xg = dev_copy(gpu, x, nx), *yc = dev_copy(cpu, y, nx), *yg = dev_copy(gpu, y, nx);

    cpu->rmsnorm(cpu, xc, xc, &nc, n, dim, 1e-5f);
    gpu->rmsnorm(gpu, xg, xg, &ng, n, dim, 1e-5f);
    cpu->to_host(cpu, a, xc, nx); gpu->to_host(gpu, b, xg, nx);
    CHECKF(max_rel_err(b, a, nx) < 1e-5, "rmsnorm %g", max_rel_err(b, a, nx));
    { /* a real model's width launches the widest block (1024 threads), which a kernel's registers can outgrow */
        const int wide = 4096, wn2 = 3;
        float *ww = make_weights(SD_F32, 1, wide), *xw = malloc((size_t)wn2 * wide * 4);
        sd_tensor wc = {.type = SD_F32, .cols = wide, .rows = 1, .host = ww}, wg = wc;
        REQUIRE(cpu->upload_weight(cpu, &wc, NULL) == 0 && gpu->upload_weight(gpu, &wg, NULL) == 0);
        for (int i = 0; i < wn2 * wide; i++) xw[i] = frand() * 3;
        float *wxc = dev_copy(cpu, xw, (size_t)wn2 * wide), *wxg = dev_copy(gpu, xw, (size_t)wn2 * wide);
        cpu->rmsnorm(cpu, wxc, wxc, &wc, wn2, wide, 1e-5f);
        gpu->rmsnorm(gpu, wxg, wxg, &wg, wn2, wide, 1e-5f);
        float *wa = malloc((size_t)wn2 * wide * 4), *wb = malloc((size_t)wn2 * wide * 4);
        cpu->to_host(cpu, wa, wxc, (size_t)wn2 * wide); gpu->to_host(gpu, wb, wxg, (size_t)wn2 * wide);
        sd_err err = {{0}};
        CHECKF(sd_backend_check(gpu, &err) == 0, "rmsnorm width %d: %s", wide, err.msg);
        CHECKF(max_rel_err(wb, wa, (size_t)wn2 * wide) < 1e-5, "rmsnorm width %d %g", wide,
               max_rel_err(wb, wa, (size_t)wn2 * wide));
        cpu->release(cpu, wxc); gpu->release(gpu, wxg);
        cpu->free_weight(cpu, &wc); gpu->free_weight(gpu, &wg);
        free(ww); free(xw); free(wa); free(wb);
    }

    float inv[32];
    for (int j = 0; j < hd / 2; j++) inv[j] = powf(10000.0f, -2.0f * j / hd);
    float *ic = dev_copy(cpu, inv, hd / 2), *ig = dev_copy(gpu, inv, hd / 2);
    for (int neox = 0; neox <= 1; neox++) {
        cpu->rope(cpu, xc, n, n_heads, hd, hd, pos0, ic, neox);
        gpu->rope(gpu, xg, n, n_heads, hd, hd, pos0, ig, neox);
        cpu->to_host(cpu, a, xc, nx); gpu->to_host(gpu, b, xg, nx);
        CHECKF(max_rel_err(b, a, nx) < 1e-5, "rope neox=%d %g", neox, max_rel_err(b, a, nx));
    }
    cpu->swiglu(cpu, xc, xc, yc, nx); gpu->swiglu(gpu, xg, xg, yg, nx);
    cpu->add(cpu, xc, yc, nx); gpu->add(gpu, xg, yg, nx);
    cpu->to_host(cpu, a, xc, nx); gpu->to_host(gpu, b, xg, nx);
    CHECKF(max_rel_err(b, a, nx) < 1e-5, "swiglu+add %g", max_rel_err(b, a, nx));

    /* attention: fill the cache with pos0 positions of random K/V, then n queries */
    (void)ctx;
    sd_kv_mem kc, kg;
    int32_t *tc, *tg;
    size_t nkv = (size_t)(pos0 + n) * kvd;
    float *k = malloc(nkv * 4), *v = malloc(nkv * 4);
    for (size_t i = 0; i < nkv; i++) { k[i] = frand(); v[i] = frand(); }
    REQUIRE(kv_fill(cpu, &kc, 2, 1, kvd, pos0 + n, SD_F16, k, v, &tc) == 0 &&
            kv_fill(gpu, &kg, 2, 1, kvd, pos0 + n, SD_F16, k, v, &tg) == 0);
    sd_kv_span sp = {.row = 0, .n = n, .pos0 = pos0, .cap = pos0 + n, .table = tc};
    cpu->kv_spans(cpu, &sp, 1, n);
    gpu->kv_spans(gpu, &sp, 1, n);
    cpu->attention(cpu, yc, xc, &kc, 1, n_heads, n_kv, hd);
    gpu->attention(gpu, yg, xg, &kg, 1, n_heads, n_kv, hd);
    cpu->to_host(cpu, a, yc, nx); gpu->to_host(gpu, b, yg, nx);
    CHECKF(max_rel_err(b, a, nx) < 1e-4, "attention %g", max_rel_err(b, a, nx));
    cpu->kv_mem_free(cpu, &kc); gpu->kv_mem_free(gpu, &kg);
    free(tc); free(tg);
    float *bufs[2][3] = {{xc, yc, ic}, {xg, yg, ig}};
    for (int i = 0; i < 3; i++) { cpu->release(cpu, bufs[0][i]); gpu->release(gpu, bufs[1][i]); }
    free(x); free(y); free(a); free(b); free(k); free(v); free(wn);
}

/* Attention of n queries at each pos0 in pos0s over a cache of ctx positions of random K/V, GPU vs CPU.
 * graphs: the first pos0 is recorded as a step graph and the others replay it (pos0 read on the device),
 * so the split path's plan must hold at positions other than the recorded one. */
static sd_dtype g_kv_type = SD_F16; /* of attention_case's caches (both backends) */
static void attention_case(int n, int n_heads, int n_kv, int hd, int ctx, const int *pos0s, int n_pos, bool graphs) {
    int dim = n_heads * hd, kvd = n_kv * hd;
    size_t nq = (size_t)n * dim, nkv = (size_t)ctx * kvd;
    float *qh = malloc(nq * 4), *k = malloc(nkv * 4), *v = malloc(nkv * 4), *a = malloc(nq * 4), *b = malloc(nq * 4);
    for (size_t i = 0; i < nq; i++) qh[i] = frand() * 4; /* peaky enough that the max matters */
    for (size_t i = 0; i < nkv; i++) { k[i] = frand(); v[i] = frand(); }
    sd_kv_mem kc, kg;
    int32_t *table, *tg;
    REQUIRE(kv_fill(cpu, &kc, 1, 0, kvd, ctx, g_kv_type, k, v, &table) == 0 &&
            kv_fill(gpu, &kg, 1, 0, kvd, ctx, g_kv_type, k, v, &tg) == 0);
    free(tg);
    float *qc = dev_copy(cpu, qh, nq), *qg = dev_copy(gpu, qh, nq);
    float *oc = cpu->alloc(cpu, nq, NULL), *og = gpu->alloc(gpu, nq, NULL);
    static uint64_t case_id; /* buffers of a new case may reuse an old one's addresses: keys must differ */
    const uint64_t key[3] = {0xa77e5111ull, ++case_id, (uint64_t)n};
    const int32_t toks[8] = {0};
    for (int i = 0; i < n_pos; i++) {
        int pos0 = pos0s[i];
        REQUIRE(pos0 + n <= ctx);
        sd_kv_span sp = {.row = 0, .n = n, .pos0 = pos0, .cap = ctx, .table = table};
        cpu->kv_spans(cpu, &sp, 1, n);
        gpu->kv_spans(gpu, &sp, 1, n); /* before the graph: a replay reads the spans given last */
        cpu->attention(cpu, oc, qc, &kc, 0, n_heads, n_kv, hd);
        if (graphs) {
            REQUIRE(gpu->graph_begin && gpu->graph_end);
            int replayed = gpu->graph_begin(gpu, key, 3, toks, n, pos0);
            CHECKF(replayed == (i > 0), "pos0 %d: graph_begin %d", pos0, replayed);
            if (!replayed) {
                gpu->attention(gpu, og, qg, &kg, 0, n_heads, n_kv, hd);
                CHECK(gpu->graph_end(gpu) == 0);
            }
        } else {
            gpu->attention(gpu, og, qg, &kg, 0, n_heads, n_kv, hd);
        }
        cpu->to_host(cpu, a, oc, nq);
        gpu->to_host(gpu, b, og, nq);
        double e = max_rel_err(b, a, nq);
        CHECKF(e < 1e-4, "n %d heads %d/%d hd %d ctx %d pos0 %d graphs %d kv %s: rel err %g", n, n_heads, n_kv, hd,
               ctx, pos0, graphs, sd_dtype_name(g_kv_type), e);
    }
    cpu->release(cpu, qc); cpu->release(cpu, oc);
    gpu->release(gpu, qg); gpu->release(gpu, og);
    cpu->kv_mem_free(cpu, &kc); gpu->kv_mem_free(gpu, &kg);
    free(table);
    free(qh); free(k); free(v); free(a); free(b);
}

/* Long contexts take the split path (chunks of positions, partials merged); short ones the single pass.
 * Each path runs with F16 and F32 caches (n = 1 F16, n = 5 F32; the prefill cases alternate). */
static void test_attention_long_context(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    static const int cfg[][4] = {/* heads, kv heads, head_dim, ctx */
                                 {32, 8, 64, 4096}, {32, 8, 128, 4096}, {8, 8, 64, 3100}, {8, 8, 128, 4096},
                                 {28, 4, 128, 3008}, {4, 4, 256, 5000}};
    static const int small_cfg[][4] = {{8, 2, 64, 1100}, {4, 4, 128, 1100}, {2, 2, 256, 1100}};
    const int pos0s[] = {3000, 2999, 511, 500, 64, 0}, small_pos0s[] = {1000, 999, 511, 500, 64, 0};
    const int *pos = quick ? small_pos0s : pos0s, ctx = quick ? 1100 : 3100;
    size_t n_cfg = quick ? sizeof small_cfg / sizeof *small_cfg : sizeof cfg / sizeof *cfg;
    for (size_t ci = 0; ci < n_cfg; ci++)
        for (int n = 1; n <= 5; n += 4) {
            const int *c = quick ? small_cfg[ci] : cfg[ci];
            g_kv_type = n == 1 ? SD_F16 : SD_F32;
            attention_case(n, c[0], c[1], c[2], c[3], pos, 6, false);
        }
    g_kv_type = SD_F16;
    /* many queries: the single pass up to 16, the tiled prefill kernel past it (tiles of 16 queries and 32
     * positions: a partial last tile, queries of one block seeing different numbers of positions) */
    attention_case(12, 8, 2, 64, ctx, pos, 2, false);
    const int prefill_pos0s[] = {0, 37, 1000};
    attention_case(40, 8, 2, 64, ctx, prefill_pos0s, 3, false);
    g_kv_type = SD_F32;
    attention_case(17, 4, 4, 128, ctx, prefill_pos0s, 3, false);
    g_kv_type = SD_F16;
    attention_case(33, 4, 2, 256, 1200, prefill_pos0s, 3, false);
    /* head_dim 36: rows not whole 16-byte loads of halves, so the tile is staged element by element */
    attention_case(20, 4, 2, 36, 1200, prefill_pos0s, 3, false);
}

/* A step graph recorded at one position and replayed at others, before and after: the split plan comes
 * from the cache capacity, and chunks past the replayed position are empty. */
static void test_attention_graph_replay(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *g = getenv("SPECD_CUDA_GRAPHS");
    if (g && !strcmp(g, "0")) SKIP("SPECD_CUDA_GRAPHS=0");
    const int pos0s[] = {3000, 1234, 3090, 7, 0, 2048}, small_pos0s[] = {1000, 600, 1090, 7, 0, 520};
    if (quick) {
        attention_case(1, 8, 2, 128, 1100, small_pos0s, 6, true);
        g_kv_type = SD_F32;
        attention_case(5, 4, 4, 64, 1100, small_pos0s, 6, true);
        g_kv_type = SD_F16;
    } else {
        attention_case(1, 32, 8, 128, 4096, pos0s, 6, true);
        attention_case(5, 32, 8, 64, 4096, pos0s, 6, true);
        attention_case(5, 8, 8, 128, 3100, pos0s, 6, true);
    }
    const int short_pos0s[] = {250, 7, 0, 100};
    attention_case(8, 8, 2, 64, 300, short_pos0s, 4, true); /* a short cache: the single pass, replayed */
    attention_case(3, 4, 2, 256, quick ? 600 : 3100, quick ? short_pos0s : pos0s, 4, true); /* head_dim 256 */
}

/* Several sequences in one attention call (the pass's spans), each with its own scrambled blocks of one
 * pool: a pass of more rows than a step (a long span tiled, short spans by the single pass around it) and
 * one of few rows at long positions (the split path, each row its own length), GPU vs CPU. */
static void spans_case(const int (*sp)[2], int n_spans, int n_heads, int n_kv, int hd) {
    int kvd = n_kv * hd, rows = 0, blocks = 0;
    for (int i = 0; i < n_spans; i++) {
        rows += sp[i][1];
        blocks += (sp[i][0] + sp[i][1] + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    }
    int n_blocks = blocks + 1;
    while (n_blocks % 7 == 0) n_blocks++;
    sd_kv_mem kc, kg;
    REQUIRE(cpu->kv_mem_alloc(cpu, &kc, 1, kvd, n_blocks, g_kv_type, NULL) == 0 &&
            gpu->kv_mem_alloc(gpu, &kg, 1, kvd, n_blocks, g_kv_type, NULL) == 0);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)blocks);
    for (int i = 0; i < blocks; i++) ids[i] = (7 * i + 2) % n_blocks; /* distinct, scrambled */
    sd_kv_span spans[8];
    int row = 0, b0 = 0;
    for (int i = 0; i < n_spans; i++) { /* fill each sequence's positions 0..pos0+n-1 */
        int len = sp[i][0] + sp[i][1];
        size_t nkv = (size_t)len * kvd;
        float *k = malloc(nkv * 4), *v = malloc(nkv * 4);
        for (size_t j = 0; j < nkv; j++) { k[j] = frand(); v[j] = frand(); }
        float *kdc = dev_copy(cpu, k, nkv), *vdc = dev_copy(cpu, v, nkv), *kdg = dev_copy(gpu, k, nkv), *vdg = dev_copy(gpu, v, nkv);
        sd_kv_span all = {.row = 0, .n = len, .pos0 = 0, .cap = len, .table = ids + b0};
        cpu->kv_spans(cpu, &all, 1, len); cpu->kv_store(cpu, &kc, 0, kdc, vdc);
        gpu->kv_spans(gpu, &all, 1, len); gpu->kv_store(gpu, &kg, 0, kdg, vdg);
        gpu->sync(gpu);
        cpu->release(cpu, kdc); cpu->release(cpu, vdc); gpu->release(gpu, kdg); gpu->release(gpu, vdg);
        free(k); free(v);
        spans[i] = (sd_kv_span){.row = row, .n = sp[i][1], .pos0 = sp[i][0], .cap = len, .table = ids + b0};
        row += sp[i][1];
        b0 += (len + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    }
    size_t nq = (size_t)rows * n_heads * hd;
    float *qh = malloc(nq * 4), *a = malloc(nq * 4), *b = malloc(nq * 4);
    for (size_t i = 0; i < nq; i++) qh[i] = frand() * 4;
    float *qc = dev_copy(cpu, qh, nq), *qg = dev_copy(gpu, qh, nq);
    float *oc = cpu->alloc(cpu, nq, NULL), *og = gpu->alloc(gpu, nq, NULL);
    cpu->kv_spans(cpu, spans, n_spans, rows);
    gpu->kv_spans(gpu, spans, n_spans, rows);
    cpu->attention(cpu, oc, qc, &kc, 0, n_heads, n_kv, hd);
    gpu->attention(gpu, og, qg, &kg, 0, n_heads, n_kv, hd);
    cpu->to_host(cpu, a, oc, nq);
    gpu->to_host(gpu, b, og, nq);
    double e = max_rel_err(b, a, nq);
    CHECKF(e < 1e-4, "%d spans, %d rows, kv %s: rel err %g", n_spans, rows, sd_dtype_name(g_kv_type), e);
    cpu->release(cpu, qc); cpu->release(cpu, oc); gpu->release(gpu, qg); gpu->release(gpu, og);
    cpu->kv_mem_free(cpu, &kc); gpu->kv_mem_free(gpu, &kg);
    free(ids); free(qh); free(a); free(b);
}

static void test_attention_spans(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    static const int many[][2] = {{40, 3}, {5, 20}, {100, 1}, {0, 2}}; /* pos0, rows of each span */
    static const int few[][2] = {{600, 1}, {530, 4}, {17, 2}, {900, 1}};
    g_kv_type = SD_F16;
    spans_case(many, 4, 8, 2, 64);
    spans_case(few, 4, 8, 2, 64);
    g_kv_type = SD_F32;
    spans_case(many, 4, 4, 4, 32);
    spans_case(few, 4, 4, 1, 128);
    g_kv_type = SD_F16;
}

/* The fused residual add + RMSNorm gives bitwise the add then the norm (x and the output, the output
 * aliasing y as the forward pass uses it), at a narrow and a real model's width. */
static void test_add_rmsnorm_fused(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    REQUIRE(gpu->add_rmsnorm);
    const int widths[] = {200, 202, 4096}, rows = 3; /* 202: not float4 rows, the generic kernel */
    for (int wi = 0; wi < 3; wi++) {
        int width = widths[wi];
        size_t nx = (size_t)rows * width;
        float *wn = make_weights(SD_F32, 1, width), *h = malloc(2 * nx * 4), *a = malloc(2 * nx * 4), *b = malloc(2 * nx * 4);
        sd_tensor t = {.type = SD_F32, .cols = width, .rows = 1, .host = wn};
        REQUIRE(gpu->upload_weight(gpu, &t, NULL) == 0);
        for (size_t i = 0; i < 2 * nx; i++) h[i] = frand() * 3;
        float *d1 = dev_copy(gpu, h, 2 * nx), *d2 = dev_copy(gpu, h, 2 * nx), *o = gpu->alloc(gpu, nx, NULL);
        gpu->add(gpu, d1, d1 + nx, nx); /* x = d[0..nx), y = d[nx..2nx) */
        gpu->rmsnorm(gpu, o, d1, &t, rows, width, 1e-5f);
        gpu->from_host(gpu, d1 + nx, h + nx, nx);
        gpu->to_host(gpu, a, d1, nx);
        gpu->to_host(gpu, a + nx, o, nx);
        gpu->add_rmsnorm(gpu, d2 + nx, d2, d2 + nx, &t, rows, width, 1e-5f); /* out over y */
        gpu->to_host(gpu, b, d2, 2 * nx);
        CHECKF(memcmp(a, b, 2 * nx * 4) == 0, "width %d: fused add + rmsnorm differs from add then rmsnorm", width);
        gpu->release(gpu, d1); gpu->release(gpu, d2); gpu->release(gpu, o);
        gpu->free_weight(gpu, &t);
        free(wn); free(h); free(a); free(b);
    }
}

/* The descriptors (positions, block tables) a pass leaves on the device are reused by the next one, which
 * uploads only what changed: a sequence of passes that change them in every way (a decode step replayed as
 * a graph across block boundaries, a batch whose sequences grow, drop out and come back in another order,
 * a verify block, capacities too large to keep each table at its own offset) stores K/V and attends, GPU vs
 * CPU on one pool each. */
static int desc_replays;
static float *desc_inv_c, *desc_inv_g; /* rope's inverse frequencies on each backend */
/* One pass of the spans (rope at the rows' positions, K/V store, attention), GPU vs CPU. With gin ([q | k
 * | v] of up to 16 rows) and gout: the GPU side as a step graph on those fixed buffers, keyed by its rows
 * and largest capacity (as forward.c keys them), replayed at the new positions. */
static void desc_pass(sd_kv_mem *kc, sd_kv_mem *kg, const sd_kv_span *spans, int n_spans, int n_heads, int n_kv,
                      int hd, float *gin, float *gout) {
    int rows = 0, cap = 0;
    for (int i = 0; i < n_spans; i++) {
        rows += spans[i].n;
        cap = spans[i].cap > cap ? spans[i].cap : cap;
    }
    size_t nq = (size_t)rows * n_heads * hd, nkv = (size_t)rows * n_kv * hd;
    float *h = malloc(sizeof(float) * (nq + 2 * nkv)), *a = malloc(nq * 4), *b = malloc(nq * 4);
    for (size_t i = 0; i < nq + 2 * nkv; i++) h[i] = frand() * (i < nq ? 4.0f : 1.0f);
    float *dc = dev_copy(cpu, h, nq + 2 * nkv), *oc = cpu->alloc(cpu, nq, NULL);
    bool graph = gin && rows <= 16;
    float *dg = graph ? gin : gpu->alloc(gpu, nq + 2 * nkv, NULL), *og = graph ? gout : gpu->alloc(gpu, nq, NULL);
    if (graph) { /* the fixed buffer's layout: [16 rows of q | 16 of k | 16 of v] */
        gpu->from_host(gpu, dg, h, nq);
        gpu->from_host(gpu, dg + (size_t)16 * n_heads * hd, h + nq, 2 * nkv);
    } else {
        gpu->from_host(gpu, dg, h, nq + 2 * nkv);
    }
    float *gk = graph ? dg + (size_t)16 * n_heads * hd : dg + nq, *gv = gk + nkv;
    cpu->kv_spans(cpu, spans, n_spans, rows);
    cpu->rope(cpu, dc, rows, n_heads, hd, hd, SD_POS_SPANS, desc_inv_c, false);
    cpu->rope(cpu, dc + nq, rows, n_kv, hd, hd, SD_POS_SPANS, desc_inv_c, false);
    cpu->kv_store(cpu, kc, 0, dc + nq, dc + nq + nkv);
    cpu->attention(cpu, oc, dc, kc, 0, n_heads, n_kv, hd);
    gpu->kv_spans(gpu, spans, n_spans, rows);
    const uint64_t key[5] = {0xde5c0002ull, (uintptr_t)gin, (uintptr_t)gout, (uint64_t)rows, (uint64_t)cap};
    static const int32_t toks[16] = {0};
    if (graph && gpu->graph_begin(gpu, key, 5, toks, rows, spans[0].pos0)) {
        desc_replays++;
    } else {
        gpu->rope(gpu, dg, rows, n_heads, hd, hd, SD_POS_SPANS, desc_inv_g, false);
        gpu->rope(gpu, gk, rows, n_kv, hd, hd, SD_POS_SPANS, desc_inv_g, false);
        gpu->kv_store(gpu, kg, 0, gk, gv);
        gpu->attention(gpu, og, dg, kg, 0, n_heads, n_kv, hd);
        if (graph) CHECK(gpu->graph_end(gpu) == 0);
    }
    cpu->to_host(cpu, a, oc, nq);
    gpu->to_host(gpu, b, og, nq);
    double e = max_rel_err(b, a, nq);
    CHECKF(e < 1e-4, "%d spans, first at %d (%d rows), graph %d: rel err %g", n_spans, spans[0].pos0, spans[0].n,
           graph, e);
    cpu->release(cpu, dc); cpu->release(cpu, oc);
    if (!graph) {
        gpu->release(gpu, dg);
        gpu->release(gpu, og);
    }
    free(h); free(a); free(b);
}

static void test_descriptors_follow_passes(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    enum { SEQS = 3, NB = 40, H = 4, KVH = 2, HD = 32, LEN = 24 };
    sd_kv_mem kc, kg;
    REQUIRE(cpu->kv_mem_alloc(cpu, &kc, 1, KVH * HD, NB * SEQS + 1, SD_F16, NULL) == 0 &&
            gpu->kv_mem_alloc(gpu, &kg, 1, KVH * HD, NB * SEQS + 1, SD_F16, NULL) == 0);
    int32_t tab[SEQS][NB];
    for (int s = 0; s < SEQS; s++)
        for (int i = 0; i < NB; i++) tab[s][i] = (7 * (s * NB + i) + 3) % (NB * SEQS + 1); /* scrambled */
    int pos[SEQS] = {0, 0, 0}, cap = NB * SD_KV_BLOCK;
    float inv[HD / 2];
    for (int j = 0; j < HD / 2; j++) inv[j] = powf(10000.0f, -2.0f * (float)j / HD);
    desc_inv_c = dev_copy(cpu, inv, HD / 2);
    desc_inv_g = dev_copy(gpu, inv, HD / 2);
    /* each sequence's first LEN positions in one pass each */
    for (int s = 0; s < SEQS; s++) {
        sd_kv_span sp = {.row = 0, .n = LEN, .pos0 = 0, .cap = cap, .table = tab[s]};
        desc_pass(&kc, &kg, &sp, 1, H, KVH, HD, NULL, NULL);
        pos[s] = LEN;
    }
    /* sequence 0 decodes through a graph across the block boundary at 32; the batches below replay graphs
     * of 2 and 3 rows at new positions */
    const char *g = getenv("SPECD_CUDA_GRAPHS");
    bool graphs = !(g && !strcmp(g, "0"));
    float *gin = gpu->alloc(gpu, 16 * (H + 2 * KVH) * HD, NULL), *gout = gpu->alloc(gpu, 16 * H * HD, NULL);
    desc_replays = 0;
    for (int i = 0; i < 12; i++) {
        sd_kv_span sp = {.row = 0, .n = 1, .pos0 = pos[0]++, .cap = cap, .table = tab[0]};
        desc_pass(&kc, &kg, &sp, 1, H, KVH, HD, graphs ? gin : NULL, graphs ? gout : NULL);
    }
    CHECK_EQ_INT(desc_replays, graphs ? 11 : 0);
    /* batches: all three growing, then two in another order, then all again, then a verify block */
    static const int order[][SEQS] = {{0, 1, 2}, {0, 1, 2}, {2, 0, -1}, {2, 0, -1}, {1, 2, 0}};
    for (int step = 0; step < 14; step++) {
        const int *o = order[step < 4 ? 0 : step < 8 ? 2 : 4];
        sd_kv_span sp[SEQS];
        int n = 0;
        for (int j = 0; j < SEQS && o[j] >= 0; j++, n++)
            sp[n] = (sd_kv_span){.row = n, .n = 1, .pos0 = pos[o[j]]++, .cap = cap, .table = tab[o[j]]};
        desc_pass(&kc, &kg, sp, n, H, KVH, HD, graphs ? gin : NULL, graphs ? gout : NULL);
    }
    sd_kv_span v[2] = {{.row = 0, .n = 5, .pos0 = pos[1], .cap = cap, .table = tab[1]},
                       {.row = 5, .n = 1, .pos0 = pos[2], .cap = cap, .table = tab[2]}};
    desc_pass(&kc, &kg, v, 2, H, KVH, HD, graphs ? gin : NULL, graphs ? gout : NULL);
    pos[1] += 5;
    pos[2] += 1;
    /* capacities whose tables do not fit at their own offsets: packed instead */
    sd_kv_span big[2] = {{.row = 0, .n = 1, .pos0 = pos[2], .cap = 1 << 24, .table = tab[2]},
                         {.row = 1, .n = 1, .pos0 = pos[0], .cap = 1 << 24, .table = tab[0]}};
    desc_pass(&kc, &kg, big, 2, H, KVH, HD, graphs ? gin : NULL, graphs ? gout : NULL);
    /* and sequence 0 alone again, replaying its graph after all that */
    sd_kv_span sp = {.row = 0, .n = 1, .pos0 = pos[0]++, .cap = cap, .table = tab[0]};
    desc_pass(&kc, &kg, &sp, 1, H, KVH, HD, graphs ? gin : NULL, graphs ? gout : NULL);
    /* replays: 11 decode steps, 3 + 3 + 6 batch steps (3, 2, then 3 rows again), the last decode step */
    CHECK_EQ_INT(desc_replays, graphs ? 24 : 0);
    cpu->release(cpu, desc_inv_c);
    gpu->release(gpu, desc_inv_g);
    gpu->release(gpu, gin);
    gpu->release(gpu, gout);
    cpu->kv_mem_free(cpu, &kc);
    gpu->kv_mem_free(gpu, &kg);
}

static void test_argmax_rows_matches_cpu(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int rows = 9, width = 50000;
    float *x = malloc(sizeof(float) * rows * width);
    for (int i = 0; i < rows * width; i++) x[i] = frand();
    x[1 * width + 7] = x[1 * width + 9000] = 5.0f; /* a tie: the lower index wins */
    x[2 * width + 3] = NAN;                           /* NaN never wins */
    float *xc = dev_copy(cpu, x, (size_t)rows * width), *xg = dev_copy(gpu, x, (size_t)rows * width);
    int32_t a[9], b[9];
    cpu->argmax_rows(cpu, a, xc, rows, width);
    gpu->argmax_rows(gpu, b, xg, rows, width);
    for (int r = 0; r < rows; r++) CHECK_EQ_INT(b[r], a[r]);
    CHECK_EQ_INT(a[1], 7);
    cpu->release(cpu, xc);
    gpu->release(gpu, xg);
    free(x);
}

static void test_out_of_memory_error(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    sd_err err = {{0}};
    float *p = gpu->alloc(gpu, (size_t)1 << 42, &err); /* 16 TiB */
    CHECK(p == NULL);
    CHECKF(strstr(err.msg, "out of GPU memory") != NULL, "message: %s", err.msg);
    /* the backend still works afterwards */
    float *q = gpu->alloc(gpu, 16, &err);
    CHECK(q != NULL);
    gpu->release(gpu, q);
}

static void test_backend_open_reports_reason(void) {
    sd_backend *b = NULL;
    char why[256] = "";
    sd_err err = {{0}};
    REQUIRE(sd_backend_open("auto", 1, &b, why, sizeof why, &err) == 0);
    if (!gpu) {
        CHECK_STR_EQ(b->name, "cpu");
        CHECKF(why[0] != 0, "auto fell back to the CPU without saying why");
        sd_err e2 = {{0}};
        sd_backend *c = NULL;
        CHECK(sd_backend_open("cuda", 1, &c, why, sizeof why, &e2) != 0);
        CHECK(e2.msg[0] != 0);
    } else {
        CHECK_STR_EQ(b->name, "cuda");
    }
    b->destroy(b);
}

/* Logits of a whole forward pass (prefill of several tokens, then single steps) on the GPU vs the CPU. */
static void test_forward_logits_match_cpu(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *path = shared_path("models/aidreams260K.gguf");
    if (!path) SKIP("../shared/models/aidreams260K.gguf not found");
    sd_err err = {{0}};
    sd_model *mc = NULL, *mg = NULL;
    REQUIRE(sd_model_load(path, NULL, cpu, &mc, &err) == 0);
    REQUIRE(sd_model_load(path, NULL, gpu, &mg, &err) == 0);
    sd_seq *sc = NULL, *sg = NULL;
    REQUIRE(sd_seq_new(mc, 0, 0, &sc, &err) == 0 && sd_seq_new(mg, 0, 0, &sg, &err) == 0);
    int vocab = mc->hp.vocab;
    int32_t toks[12] = {1, 403, 407, 261, 378, 280, 266, 311, 267, 289, 300, 270};
    float *lc = malloc(sizeof(float) * 12 * (size_t)vocab), *lg = malloc(sizeof(float) * 12 * (size_t)vocab);
    REQUIRE(sd_forward(sc, toks, 7, true, lc, &err) == 0 && sd_forward(sg, toks, 7, true, lg, &err) == 0);
    CHECKF(max_rel_err(lg, lc, 7 * (size_t)vocab) < 5e-3, "prefill logits rel err %g", max_rel_err(lg, lc, 7 * (size_t)vocab));
    for (int i = 7; i < 12; i++) {
        REQUIRE(sd_forward(sc, toks + i, 1, false, lc, &err) == 0 && sd_forward(sg, toks + i, 1, false, lg, &err) == 0);
        CHECKF(max_rel_err(lg, lc, (size_t)vocab) < 5e-3, "step %d rel err %g", i, max_rel_err(lg, lc, (size_t)vocab));
        CHECK_EQ_INT(sd_argmax(lg, vocab), sd_argmax(lc, vocab));
    }
    free(lc); free(lg);
    sd_seq_free(sc); sd_seq_free(sg);
    sd_model_free(mc); sd_model_free(mg);
}

/* Logits of a whole forward pass, CUDA vs CPU, on a synthetic model of each weight type written by mkmodel:
 * a 300-token prefill (cuBLAS for F16 and BF16, F16 tiles and cuBLAS for Q8_0; the tiled attention), then single
 * steps. */
static void test_forward_types_long_prefill(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int types[] = {SD_F16, SD_Q8_0, SD_F32, SD_BF16};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        char path[128];
        snprintf(path, sizeof path, "/tmp/specd-test-cuda-%d-%s.gguf", (int)getpid(), sd_dtype_name(types[ti]));
        sd_mk_opts o;
        sd_mk_defaults(&o);
        REQUIRE(sd_mk_preset("tiny", &o.shape) == 0);
        o.shape.dim = 256; o.shape.heads = 4; o.shape.kv_heads = 2; o.shape.ffn = 512; o.shape.ctx = 512;
        o.type = types[ti];
        sd_err err = {{0}};
        REQUIRE(sd_mk_write(&o, path, &err) == 0);
        sd_model *mc = NULL, *mg = NULL;
        REQUIRE(sd_model_load(path, NULL, cpu, &mc, &err) == 0);
        REQUIRE(sd_model_load(path, NULL, gpu, &mg, &err) == 0);
        sd_seq *sc = NULL, *sg = NULL;
        REQUIRE(sd_seq_new(mc, 0, 0, &sc, &err) == 0 && sd_seq_new(mg, 0, 0, &sg, &err) == 0);
        int vocab = mc->hp.vocab, n = quick ? 24 : 300;
        int32_t toks[310];
        for (int i = 0; i < 310; i++) toks[i] = (int32_t)((i * 7919 + 13) % vocab);
        float *lc = malloc(sizeof(float) * (size_t)vocab), *lg = malloc(sizeof(float) * (size_t)vocab);
        REQUIRE(sd_forward(sc, toks, n, false, lc, &err) == 0 && sd_forward(sg, toks, n, false, lg, &err) == 0);
        double tol = types[ti] == SD_Q8_0 ? 2e-2 : 1e-2; /* F16 activations in cuBLAS prefill; int8 activations */
        CHECKF(max_rel_err(lg, lc, (size_t)vocab) < tol, "%s: logits after a %d-token prefill, rel err %g",
               sd_dtype_name(types[ti]), n, max_rel_err(lg, lc, (size_t)vocab));
        for (int i = n; i < n + 8; i++) {
            REQUIRE(sd_forward(sc, toks + i, 1, false, lc, &err) == 0 && sd_forward(sg, toks + i, 1, false, lg, &err) == 0);
            CHECKF(max_rel_err(lg, lc, (size_t)vocab) < tol, "%s step %d rel err %g", sd_dtype_name(types[ti]), i,
                   max_rel_err(lg, lc, (size_t)vocab));
        }
        free(lc); free(lg);
        sd_seq_free(sc); sd_seq_free(sg);
        sd_model_free(mc); sd_model_free(mg);
        unlink(path);
    }
}

static int g_draft_max = 4;

/* Tokens each generation test asks for (fewer when quick). */
static int gen_cap(void) { return quick ? 16 : 60; }

/* The GGML quantized types on the GPU (matmul_q.cu: the weights stay in the file's blocks): llama.cpp's own
 * files of the shared base model, each type and the _M mixes, logits of a 20-token prefill and 4 decode
 * steps against the CPU backend. Both multiply the same weights; decode steps quantize the activations to
 * 8 bits per block of 32 on both (kernels/cpu/quant_tmpl.h, matmul_q.cu), but the GPU's prefill (n > 16)
 * multiplies F16 weights and activations in cuBLAS, and the difference carries into the steps through the
 * KV cache: logits may differ by the activation quantization, a few percent of their RMS (tests/test_quant.c measures 0.2-0.27 against a float64 reference on these files, RMS ~4.8), so within
 * 10% of the RMS (Q8_ACT_TOL), and the greedy pick equal where the CPU's top-two margin exceeds twice that.
 * --device auto keeps such a model on the GPU. */
#define Q8_ACT_TOL 0.1
static void check_act_quant_logits(const char *what, int step, const float *lg, const float *lc, int vocab, int rows) {
    double ss = 0, worst = 0;
    for (size_t i = 0; i < (size_t)vocab * rows; i++) {
        ss += (double)lc[i] * lc[i];
        worst = fmax(worst, fabs((double)lg[i] - lc[i]));
    }
    double tol = Q8_ACT_TOL * sqrt(ss / ((double)vocab * rows));
    CHECKF(worst <= tol, "%s step %d: |gpu - cpu| %g > %g", what, step, worst, tol);
    const float *last = lc + (size_t)vocab * (rows - 1);
    int top = sd_argmax(last, vocab);
    double second = -INFINITY;
    for (int v = 0; v < vocab; v++) if (v != top) second = fmax(second, last[v]);
    if (last[top] - second > 2 * tol) CHECK_EQ_INT(sd_argmax(lg + (size_t)vocab * (rows - 1), vocab), top);
}

static void test_forward_quant_files(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    static const char *const all[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m", "q4_k_m",
                                      "q5_k_m", "q6_k", "iq4_nl", "iq4_xs"};
    static const char *const few[] = {"q4_0", "q4_k_m", "iq4_xs"}; /* q4_k_m mixes in q6_K */
    const char *const *files = quick ? few : all;
    size_t n_files = quick ? sizeof few / sizeof *few : sizeof all / sizeof *all;
    int found = 0;
    for (size_t fi = 0; fi < n_files; fi++) {
        char rel[64];
        snprintf(rel, sizeof rel, "quant/base-%s.gguf", files[fi]);
        const char *path = shared_path(rel);
        if (!path) continue;
        found++;
        sd_err err = {{0}};
        sd_model *mc = NULL, *mg = NULL;
        REQUIRE(sd_model_load(path, NULL, cpu, &mc, &err) == 0);
        if (sd_model_load(path, NULL, gpu, &mg, &err) != 0) {
            CHECKF(0, "%s on the GPU: %s", files[fi], err.msg);
            sd_model_free(mc);
            continue;
        }
        sd_seq *sc = NULL, *sg = NULL;
        REQUIRE(sd_seq_new(mc, 0, 0, &sc, &err) == 0 && sd_seq_new(mg, 0, 0, &sg, &err) == 0);
        int vocab = mc->hp.vocab, n = 20;
        int32_t toks[24];
        for (int i = 0; i < 24; i++) toks[i] = (int32_t)(i == 0 ? 1 : (i * 37 + 11) % vocab);
        float *lc = malloc(sizeof(float) * (size_t)vocab * n), *lg = malloc(sizeof(float) * (size_t)vocab * n);
        REQUIRE(sd_forward(sc, toks, n, true, lc, &err) == 0 && sd_forward(sg, toks, n, true, lg, &err) == 0);
        check_act_quant_logits(files[fi], 0, lg, lc, vocab, n);
        for (int i = n; i < n + 4; i++) {
            REQUIRE(sd_forward(sc, toks + i, 1, false, lc, &err) == 0 && sd_forward(sg, toks + i, 1, false, lg, &err) == 0);
            check_act_quant_logits(files[fi], i, lg, lc, vocab, 1);
        }
        free(lc); free(lg);
        sd_seq_free(sc); sd_seq_free(sg);
        sd_model_free(mc); sd_model_free(mg);
    }
    if (!found) SKIP("../shared/quant not found");
    CHECK(!gpu->failed);
}

/* Generates up to cap tokens after prompt: greedy, or sampling with seed when seed is not 0. */
static int generate(sd_engine *e, const int32_t *prompt, int n_prompt, sd_mode mode, uint64_t seed, int32_t *out,
                    int cap) {
    sd_session *s = NULL;
    sd_gen *g = NULL;
    sd_err err = {{0}};
    if (sd_session_new(e, &s, &err) != 0) return -1;
    sd_gen_params p = sd_gen_params_default();
    p.max_tokens = cap;
    p.mode = mode;
    p.draft_max = g_draft_max;
    if (seed) p.sampling = (sd_sampling){.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .min_p = 0.0f, .seed = seed};
    if (sd_gen_start(s, prompt, n_prompt, &p, &g, &err) != 0) { sd_session_free(s); return -1; }
    while (sd_gen_finish(g) == SD_FINISH_NONE)
        if (sd_gen_step(g, &err) != 0) break;
    int n = 0;
    const int32_t *ids = sd_gen_tokens(g, &n);
    memcpy(out, ids, sizeof(int32_t) * (size_t)n);
    sd_gen_free(g);
    sd_session_free(s);
    return n;
}

/* Greedy speculative decoding on the GPU emits exactly the GPU's plain greedy tokens. */
static void test_greedy_spec_equals_plain_on_gpu(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *t = shared_path("models/aidreams260K.gguf"), *d = shared_path("models/aidreams-draft.gguf");
    if (!t || !d) SKIP("../shared/models aidreams GGUF pair not found");
    sd_engine_config cfg = {.target_path = t, .draft_path = d, .device = "cuda"};
    sd_engine *e = NULL;
    sd_err err = {{0}};
    REQUIRE(sd_engine_open(&cfg, &e, &err) == 0);
    CHECK_STR_EQ(e->be->name, "cuda");
    const int32_t prompt[] = {1, 403, 407, 261, 378};
    int32_t a[64], b[64];
    int na = generate(e, prompt, 5, SD_MODE_PLAIN, 0, a, gen_cap());
    int nb = generate(e, prompt, 5, SD_MODE_SPEC, 0, b, gen_cap());
    CHECK(na > 0);
    CHECK_EQ_INT(na, nb);
    CHECK(na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
    /* the largest verify block: 15 drafts + 1 (16 rows, still the matrix-vector kernels and a graph) */
    g_draft_max = 15;
    nb = generate(e, prompt, 5, SD_MODE_SPEC, 0, b, gen_cap());
    g_draft_max = 4;
    CHECK(na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
    sd_engine_free(e);
}

/* Device sampling against the plain-C reference (kernels/sample_ref.c) on the same logits: the filtered
 * distributions agree within rounding (expf differs by an ulp or two), a draw equals the reference's draw
 * on the device's own probabilities exactly (fixed-point scan), and a second run is bit-identical. */
static void test_sample_rows_matches_ref(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const int widths[] = {7, 1000, 32000, 151936};
    const sd_sample_cfg cfgs[] = {
        {1.0f, 0, 1.0f, 0.0f},  {0.7f, 40, 1.0f, 0.0f},  {1.0f, 0, 0.9f, 0.0f},   {1.2f, 0, 1.0f, 0.05f},
        {0.8f, 50, 0.95f, 0.02f}, {0.0f, 0, 1.0f, 0.0f}, {1.5f, 3, 0.5f, 0.0f},
    };
    enum { ROWS = 3 };
    int support_diff = 0, value_diff = 0, id_diff_ref = 0;
    for (int wi = 0; wi < (quick ? 3 : 4); wi++)
        for (int ci = 0; ci < (int)(sizeof cfgs / sizeof cfgs[0]); ci++) {
            int w = widths[wi];
            size_t n = (size_t)ROWS * w;
            float *lg = malloc(n * sizeof *lg), *gp = malloc(n * sizeof *gp), *rp = malloc(n * sizeof *rp);
            float *gp2 = malloc(n * sizeof *gp2), u[ROWS];
            for (size_t i = 0; i < n; i++) {
                float x = frand() * 8.0f;
                lg[i] = ci % 2 ? floorf(x * 2.0f) * 0.5f : x; /* odd configurations: many exact ties */
            }
            for (int r = 0; r < ROWS; r++) u[r] = (frand() + 1.0f) * 0.4999f;
            float *dl = dev_copy(gpu, lg, n), *dp = gpu->alloc(gpu, n, NULL);
            int32_t ids[ROWS], ids2[ROWS], rids[ROWS];
            gpu->sample_rows(gpu, ids, dp, dl, ROWS, w, &cfgs[ci], u);
            gpu->to_host(gpu, gp, dp, n);
            gpu->sample_rows(gpu, ids2, dp, dl, ROWS, w, &cfgs[ci], u);
            gpu->to_host(gpu, gp2, dp, n);
            CHECKF(memcmp(gp, gp2, n * sizeof *gp) == 0 && memcmp(ids, ids2, sizeof ids) == 0,
                   "width %d cfg %d: a second run differs", w, ci);
            sd_sample_rows_ref(NULL, rids, rp, lg, ROWS, w, &cfgs[ci], u);
            for (size_t i = 0; i < n; i++) {
                if ((gp[i] > 0) != (rp[i] > 0)) support_diff++;
                else if (fabsf(gp[i] - rp[i]) > 1e-6f + 1e-5f * rp[i]) value_diff++;
            }
            for (int r = 0; r < ROWS; r++) {
                CHECKF(ids[r] == sd_sample_ref_draw(gp + (size_t)r * w, w, u[r]), "width %d cfg %d row %d: draw %d",
                       w, ci, r, ids[r]);
                id_diff_ref += ids[r] != rids[r];
            }
            gpu->release(gpu, dl);
            gpu->release(gpu, dp);
            free(lg); free(gp); free(rp); free(gp2);
        }
    printf("# sample_rows vs reference: %d support differences, %d values off, %d ids differ (rounding)\n",
           support_diff, value_diff, id_diff_ref);
    CHECK(support_diff <= 2 && value_diff == 0 && id_diff_ref <= 2);
}

/* spec_accept on the device equals the reference on the same p, q, drafts and uniforms, exactly. */
static void test_spec_accept_matches_ref(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    enum { W = 5000, K = 4 };
    sd_sample_cfg c = {0.9f, 0, 0.95f, 0.0f};
    float *lg = malloc(sizeof(float) * W), *p = malloc(sizeof(float) * W * (K + 1)), *q = malloc(sizeof(float) * W * K);
    for (int r = 0; r <= K; r++) {
        for (int i = 0; i < W; i++) lg[i] = frand() * 6.0f;
        sd_sample_ref_row(p + (size_t)r * W, lg, W, &c);
        if (r == K) break;
        for (int i = 0; i < W; i++) lg[i] = lg[i] * 0.8f + frand(); /* a draft close to the target */
        sd_sample_ref_row(q + (size_t)r * W, lg, W, &c);
    }
    float *dp = dev_copy(gpu, p, (size_t)W * (K + 1)), *dq = dev_copy(gpu, q, (size_t)W * K);
    int accepted = 0, same = 0, trials = 300;
    for (int t = 0; t < trials; t++) {
        int32_t draft[K];
        float u[K + 1];
        for (int i = 0; i < K; i++) draft[i] = sd_sample_ref_draw(q + (size_t)i * W, W, (frand() + 1.0f) * 0.4999f);
        for (int i = 0; i <= K; i++) u[i] = (frand() + 1.0f) * 0.4999f;
        bool point = t % 3 == 0;
        int32_t gn = -1, rn = -2;
        int ga = gpu->spec_accept(gpu, &gn, dp, point ? NULL : dq, draft, K, W, u);
        int ra = sd_spec_accept_ref(NULL, &rn, p, point ? NULL : q, draft, K, W, u);
        same += ga == ra && gn == rn;
        accepted += ra;
    }
    printf("# spec_accept: %d/%d identical to the reference, %d drafts accepted\n", same, trials, accepted);
    CHECK_EQ_INT(same, trials);
    CHECK(accepted > 0 && accepted < trials * K);
    gpu->release(gpu, dp);
    gpu->release(gpu, dq);
    free(lg); free(p); free(q);
}

/* Steps requests a (on session sa) and b (on sb), all in one batch per turn (prefill chunks of 8 rows),
 * until both have finished; their tokens into ra, rb. */
static void run_pair(sd_session *sa, sd_session *sb, const int32_t *pa, int na, const int32_t *pb, int nb,
                     const sd_gen_params *qa, const sd_gen_params *qb, sd_gen **g, eng_result *r) {
    sd_err err = {{0}};
    memset(r, 0, 2 * sizeof *r);
    REQUIRE(sd_gen_start(sa, pa, na, qa, &g[0], &err) == 0 && sd_gen_start(sb, pb, nb, qb, &g[1], &err) == 0);
    for (int turn = 0; turn < 200; turn++) {
        sd_gen *live[2];
        bool was[2];
        int n = 0;
        for (int i = 0; i < 2; i++)
            if ((was[i] = sd_gen_finish(g[i]) == SD_FINISH_NONE)) live[n++] = g[i];
        if (!n) break;
        REQUIRE(sd_gen_step_batch(live, n, 8, &err) == 0);
        for (int i = 0; i < 2; i++) {
            if (!was[i]) continue; /* its last step is an earlier turn's */
            const int32_t *ids;
            int ni;
            const char *text;
            size_t tl;
            sd_gen_last(g[i], &ids, &ni, &text, &tl);
            for (int j = 0; j < ni && r[i].n < ENG_MAXTOK; j++) r[i].ids[r[i].n++] = ids[j];
        }
    }
}

/* The paged pool on the GPU running out mid-session (the small draft model as the target, to stay quick
 * in the emulation): a pool of 2 blocks (32 positions), an older request (12-token prompt, up to 40 more)
 * and a newer one (14 + 4), stepped together. The newer one, needing a second block first, is preempted
 * and recomputed later; the older one ends with the pool's error at position 32 as it could never fit.
 * Neither emits a token it would not have emitted with a pool large enough for both (rows do not depend
 * on their batch): the failed one's tokens are a prefix of that run's, the preempted one's are that run's. */
static void test_kv_pool_exhausted_on_gpu(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *target = shared_path("models/aidreams-draft.bin"), *tok = shared_path("models/tok512.bin");
    if (!target || !tok) SKIP("../shared/models/aidreams-draft.bin or tok512.bin not found");
    eng_fx big, small;
    REQUIRE(eng_open_cfg(&small, (sd_engine_config){.target_path = target, .target_tok = tok, .device = "cuda"}) == 0);
    size_t per = sd_engine_kv_bytes_per_token(small.e) * SD_KV_BLOCK;
    eng_close(&small);
    REQUIRE(eng_open_cfg(&big, (sd_engine_config){.target_path = target, .target_tok = tok, .device = "cuda",
                                                  .kv_mem = 8 * per}) == 0);
    REQUIRE(eng_open_cfg(&small, (sd_engine_config){.target_path = target, .target_tok = tok, .device = "cuda",
                                                    .kv_mem = 2 * per}) == 0);
    const int32_t pa[] = {1, 403, 407, 261, 378, 280, 266, 311, 267, 403, 407, 261};
    const int32_t pb[] = {1, 378, 280, 266, 311, 267, 403, 407, 261, 378, 280, 266, 311, 267};
    sd_gen_params qa = eng_params(SD_MODE_PLAIN, 0, 0, 40), qb = eng_params(SD_MODE_PLAIN, 0, 0, 4);
    sd_gen_params qa_ref = eng_params(SD_MODE_PLAIN, 0, 0, 24); /* more than the small pool lets it emit */
    sd_session *bb = NULL, *sb = NULL;
    sd_err err = {{0}};
    REQUIRE(sd_session_new(big.e, &bb, &err) == 0 && sd_session_new(small.e, &sb, &err) == 0);
    sd_gen *ref[2], *g[2];
    eng_result rr[2], r[2];
    run_pair(big.s, bb, pa, 12, pb, 14, &qa_ref, &qb, ref, rr);
    CHECK(rr[0].n == 24 && rr[1].n == 4);
    run_pair(small.s, sb, pa, 12, pb, 14, &qa, &qb, g, r);
    const char *why = sd_gen_error(g[0]);
    CHECKF(sd_gen_finish(g[0]) == SD_FINISH_ERROR && why && strstr(why, "KV pool"), "the large request: finish %d, %s",
           sd_gen_finish(g[0]), why ? why : "no error");
    CHECKF(r[0].n == 21 && eng_first_diff(&r[0], &rr[0]) == r[0].n,
           "the large request: %d tokens, the first %d as with a large pool", r[0].n, eng_first_diff(&r[0], &rr[0]));
    sd_gen_stats st;
    sd_gen_get_stats(g[1], &st);
    CHECKF(sd_gen_finish(g[1]) != SD_FINISH_ERROR && eng_same_ids(&r[1], &rr[1]),
           "the small request: finish %d, %d tokens, first difference at %d", sd_gen_finish(g[1]), r[1].n,
           eng_first_diff(&r[1], &rr[1]));
    CHECKF(st.preempted >= 1, "the small request was never preempted");
    CHECK(!gpu->failed);
    for (int i = 0; i < 2; i++) {
        sd_gen_free(ref[i]);
        sd_gen_free(g[i]);
    }
    sd_session_free(bb);
    sd_session_free(sb);
    eng_close(&small);
    eng_close(&big);
}

/* Two requests stepped together (passes of two sequences, recorded and replayed as step graphs of their
 * shape) give the same tokens with graphs on and off (SPECD_CUDA_GRAPHS=0). */
static void test_batch_graphs_on_off_same_tokens(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *target = shared_path("models/aidreams-draft.bin"), *tok = shared_path("models/tok512.bin");
    if (!target || !tok) SKIP("../shared/models/aidreams-draft.bin or tok512.bin not found");
    const int32_t pa[] = {1, 403, 407, 261, 378}, pb[] = {1, 378, 280, 266, 311, 267, 403};
    sd_gen_params qa = eng_params(SD_MODE_PLAIN, 0, 0, 12), qb = eng_params(SD_MODE_PLAIN, 0, 0, 9);
    eng_result r[2][2];
    for (int pass = 0; pass < 2; pass++) {
        setenv("SPECD_CUDA_GRAPHS", pass ? "0" : "1", 1);
        eng_fx f;
        sd_session *s2 = NULL;
        sd_err err = {{0}};
        REQUIRE(eng_open_cfg(&f, (sd_engine_config){.target_path = target, .target_tok = tok, .device = "cuda"}) == 0);
        REQUIRE(sd_session_new(f.e, &s2, &err) == 0);
        sd_gen *g[2];
        run_pair(f.s, s2, pa, 5, pb, 7, &qa, &qb, g, r[pass]);
        for (int i = 0; i < 2; i++) sd_gen_free(g[i]);
        sd_session_free(s2);
        eng_close(&f);
    }
    unsetenv("SPECD_CUDA_GRAPHS");
    CHECK(r[0][0].n == 12 && r[0][1].n == 9);
    for (int i = 0; i < 2; i++)
        CHECKF(eng_same_ids(&r[0][i], &r[1][i]), "request %d: graphs on and off differ at token %d", i,
               eng_first_diff(&r[0][i], &r[1][i]));
}

/* Sampled plain and speculative generation on the GPU (sampling on the device) repeat by seed. */
static void test_sampled_spec_reproducible_on_gpu(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *t = shared_path("models/aidreams260K.gguf"), *d = shared_path("models/aidreams-draft.gguf");
    if (!t || !d) SKIP("../shared/models aidreams GGUF pair not found");
    sd_engine_config cfg = {.target_path = t, .draft_path = d, .device = "cuda"};
    sd_engine *e = NULL;
    sd_err err = {{0}};
    REQUIRE(sd_engine_open(&cfg, &e, &err) == 0);
    REQUIRE(e->be->sample_rows && e->be->spec_accept);
    const int32_t prompt[] = {1, 403, 407, 261, 378};
    for (int mode = 0; mode < 2; mode++) {
        sd_mode m = mode ? SD_MODE_SPEC : SD_MODE_PLAIN;
        int32_t a[64], b[64], c[64];
        int na = generate(e, prompt, 5, m, 7, a, gen_cap()), nb = generate(e, prompt, 5, m, 7, b, gen_cap());
        int nc = generate(e, prompt, 5, m, 8, c, gen_cap());
        CHECK(na > 10);
        CHECKF(na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0, "%s: the same seed differs",
               mode ? "spec" : "plain");
        CHECK(nc != na || memcmp(a, c, sizeof(int32_t) * (size_t)na) != 0);
    }
    sd_engine_free(e);
}

/* forward.c's step bracket, on the CPU: a backend that offers graphs but whose recording fails once must
 * still give exactly the plain CPU logits, and graph_begin must see each step's tokens and position. */
static int gb_calls, ge_calls, gb_last_pos0, gb_last_n;
static int32_t gb_last_tok;
static int fake_graph_begin(sd_backend *b, const uint64_t *key, int key_len, const int32_t *tokens, int n, int pos0) {
    gb_calls++;
    gb_last_pos0 = pos0;
    gb_last_n = n;
    gb_last_tok = tokens[n - 1];
    return 0;
}
static int fake_graph_end(sd_backend *b) { return ++ge_calls == 2 ? -1 : 0; }

static void test_step_bracket_on_cpu(void) {
    const char *path = shared_path("models/aidreams260K.gguf");
    if (!path) SKIP("../shared/models/aidreams260K.gguf not found");
    sd_backend *fake = NULL;
    sd_err err = {{0}};
    REQUIRE(sd_backend_cpu_new(1, &fake, &err) == 0);
    fake->graph_begin = fake_graph_begin;
    fake->graph_end = fake_graph_end;
    sd_model *ma = NULL, *mb = NULL;
    REQUIRE(sd_model_load(path, NULL, cpu, &ma, &err) == 0 && sd_model_load(path, NULL, fake, &mb, &err) == 0);
    sd_seq *sa = NULL, *sb = NULL;
    REQUIRE(sd_seq_new(ma, 0, 0, &sa, &err) == 0 && sd_seq_new(mb, 0, 0, &sb, &err) == 0);
    int vocab = ma->hp.vocab;
    float *la = malloc(sizeof(float) * 5 * (size_t)vocab), *lb = malloc(sizeof(float) * 5 * (size_t)vocab);
    int32_t toks[9] = {1, 403, 407, 261, 378, 280, 266, 311, 267};
    REQUIRE(sd_forward(sa, toks, 4, false, la, &err) == 0 && sd_forward(sb, toks, 4, false, lb, &err) == 0);
    CHECK(memcmp(la, lb, sizeof(float) * (size_t)vocab) == 0);
    CHECK_EQ_INT(gb_last_pos0, 0);
    CHECK_EQ_INT(gb_last_n, 4);
    for (int i = 4; i < 9; i++) {
        bool all = i % 2;
        REQUIRE(sd_forward(sa, toks + i, 1, all, la, &err) == 0 && sd_forward(sb, toks + i, 1, all, lb, &err) == 0);
        CHECKF(memcmp(la, lb, sizeof(float) * (size_t)vocab) == 0, "step %d differs", i);
        CHECK_EQ_INT(gb_last_pos0, i);
        CHECK_EQ_INT(gb_last_tok, toks[i]);
    }
    CHECK_EQ_INT(gb_calls, 6);
    CHECK_EQ_INT(ge_calls, 6);
    free(la); free(lb);
    sd_seq_free(sa); sd_seq_free(sb);
    sd_model_free(ma); sd_model_free(mb);
    fake->destroy(fake);
}

/* Recorded step graphs replay to the same tokens as issuing every op (SPECD_CUDA_GRAPHS=0). */
static void test_graphs_on_off_same_tokens(void) {
    if (!gpu) SKIP("%s", no_gpu_reason);
    const char *t = shared_path("models/aidreams260K.gguf"), *d = shared_path("models/aidreams-draft.gguf");
    if (!t || !d) SKIP("../shared/models aidreams GGUF pair not found");
    const int32_t prompt[] = {1, 403, 407, 261, 378};
    int32_t a[64], b[64];
    int na = -1, nb = -2;
    for (int pass = 0; pass < 2; pass++) {
        setenv("SPECD_CUDA_GRAPHS", pass ? "0" : "1", 1);
        sd_engine_config cfg = {.target_path = t, .draft_path = d, .device = "cuda"};
        sd_engine *e = NULL;
        sd_err err = {{0}};
        REQUIRE(sd_engine_open(&cfg, &e, &err) == 0);
        if (pass) nb = generate(e, prompt, 5, SD_MODE_SPEC, 0, b, gen_cap());
        else na = generate(e, prompt, 5, SD_MODE_SPEC, 0, a, gen_cap());
        sd_engine_free(e);
    }
    unsetenv("SPECD_CUDA_GRAPHS");
    CHECK(na > 0);
    CHECK(na == nb && memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
}

int main(void) {
    sd_err err = {{0}};
    if (sd_backend_cuda_new(0, &gpu, &err) != 0) {
        snprintf(no_gpu_reason, sizeof no_gpu_reason, "no CUDA device (%.400s)", err.msg);
        gpu = NULL;
    }
    if (sd_backend_cpu_new(2, &cpu, &err) != 0) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    const char *full = getenv("SPECD_EMU_FULL");
    quick = !strcmp(kernels_run, "emulated") && !(full && strcmp(full, "0"));
    printf("# test_cuda: %s%s\n", gpu ? kernels_run : "no device",
           gpu && quick ? " (small shapes; SPECD_EMU_FULL=1 runs the full sweep)" : "");
    RUN(test_matmul_all_types);
    RUN(test_matmul_rows_bitwise);
    RUN(test_graphs_forgotten_when_weights_freed);
    RUN(test_matmul_quant_types);
    RUN(test_matmul_large_activations);
    RUN(test_injected_fault_ends_request);
    RUN(test_row_ops);
    RUN(test_add_rmsnorm_fused);
    RUN(test_argmax_rows_matches_cpu);
    RUN(test_attention_long_context);
    RUN(test_attention_graph_replay);
    RUN(test_attention_spans);
    RUN(test_descriptors_follow_passes);
    RUN(test_out_of_memory_error);
    RUN(test_forward_logits_match_cpu);
    RUN(test_forward_types_long_prefill);
    RUN(test_forward_quant_files);
    RUN(test_greedy_spec_equals_plain_on_gpu);
    RUN(test_graphs_on_off_same_tokens);
    RUN(test_sample_rows_matches_ref);
    RUN(test_spec_accept_matches_ref);
    RUN(test_sampled_spec_reproducible_on_gpu);
    RUN(test_kv_pool_exhausted_on_gpu);
    RUN(test_batch_graphs_on_off_same_tokens);
    RUN(test_step_bracket_on_cpu);
    RUN(test_backend_open_reports_reason);
    if (gpu) gpu->destroy(gpu);
    cpu->destroy(cpu);
    return TEST_DONE();
}
