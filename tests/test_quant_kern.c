/* The integer kernels of the quantized types beyond Q8_0 (SD_MM_QUANT, kernels/cpu/quant_tmpl.h) at every
 * SIMD level this CPU has, against an exact reference: the weights as their blocks define them
 * (sd_unpack_block: scale * level + offset, in double) times the activations as the backend quantizes
 * them (sd_quant_act_q8: d_x * level, in double), summed in double.
 *
 * Tolerance: the kernels' integer block sums are exact; what remains is float rounding of d_w * d_x, of
 * the offsets, and of the accumulation (per group of 256 columns; the scalar reference rounds per product
 * and per block of 32), each relative to the magnitudes involved. So |out - ref| <= (8 + cols / 16) *
 * 2^-24 * M, with M = sum over columns of (|scale * level| + |offset|) * |d_x * level_x| (the offset
 * counted separately: it may cancel the scaled level). A wrong bit, level, scale or minimum moves a result
 * by a fraction of M, orders of magnitude beyond that. */
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/quant_k.h"
#include "model/gguf.h"
#include "tests/test.h"
#include "tests/test_util.h"

static const int qtypes[] = {SD_Q4_0, SD_Q4_1, SD_Q5_0, SD_Q5_1, SD_IQ4_NL, SD_Q2_K,
                             SD_Q3_K, SD_Q4_K, SD_Q5_K, SD_Q6_K, SD_IQ4_XS};
#define N_QTYPES (sizeof qtypes / sizeof *qtypes)

static float frand(void) { return (float)(rand_u32() % 2000001) / 1000000.0f - 1.0f; } /* [-1, 1] */

/* An F16 scale: mostly ordinary, sometimes extreme (largest finite, subnormal, zero), either sign. */
static uint16_t rand_scale(void) {
    uint32_t r = rand_u32() % 16;
    float v = r == 0 ? 65504.0f : r == 1 ? ldexpf(1, -24) * (float)(1 + rand_u32() % 1023) : r == 2 ? 0.0f
                                                                                                 : frand() * 0.05f;
    return sd_fp32_to_fp16(rand_u32() & 1 ? -v : v);
}

/* A row with every quant bit random (all bit patterns occur) and random scales. */
static void random_row(int type, uint8_t *row, int64_t cols) {
    int bb = sd_quant_block_bytes(type);
    size_t nb = (size_t)(cols / sd_quant_block(type));
    for (size_t i = 0; i < nb * (size_t)bb; i++) row[i] = (uint8_t)rand_u32();
    for (size_t b = 0; b < nb; b++)
        for (const int *f = sd_quant_scale_fields(type); *f >= 0; f++) {
            uint16_t h = rand_scale();
            memcpy(row + b * (size_t)bb + *f, &h, 2);
        }
}

/* Activations: blocks of ordinary values, tiny or large ones, zeros, and lone outliers. */
static void random_acts(float *x, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++) {
        uint32_t kind = rand_u32() % 8;
        float scale = kind == 0 ? 1e-20f : kind == 1 ? 1e4f : kind == 2 ? 0.0f : 1.0f;
        for (int i = 0; i < 32; i++) x[b * 32 + i] = frand() * scale;
        if (kind == 3) x[b * 32 + rand_u32() % 32] = 300.0f;
    }
}

/* Reference out[i * rows + r] and its bound M (see the top), from the blocks and quantized activations. */
static void reference(int type, const uint8_t *w, int64_t rows, int64_t cols, const float *x, int n, double *ref,
                      double *mag) {
    int qk = sd_quant_block(type), bb = sd_quant_block_bytes(type);
    size_t rb = sd_dtype_row_bytes(type, cols);
    int8_t *xq = malloc((size_t)(n * cols));
    float *xd = malloc(sizeof(float) * (size_t)(n * cols / 32));
    for (int i = 0; i < n; i++) sd_quant_act_q8(x + i * cols, cols, xq + i * cols, xd + i * cols / 32, NULL);
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) {
            double s = 0, m = 0;
            for (int64_t b = 0; b < cols / qk; b++) {
                sd_qunpacked u;
                sd_unpack_block(type, w + rb * (size_t)r + (size_t)(b * bb), &u);
                for (int e = 0; e < qk; e++) {
                    int64_t c = b * qk + e;
                    double xv = (double)xd[i * cols / 32 + c / 32] * xq[i * cols + c];
                    double wv = (double)u.sc[e / 16] * u.q[e];
                    s += (wv + u.off[e / 16]) * xv;
                    m += (fabs(wv) + fabs((double)u.off[e / 16])) * fabs(xv);
                }
            }
            ref[i * rows + r] = s;
            mag[i * rows + r] = m;
        }
    free(xq);
    free(xd);
}

static float *matmul(int type, const void *w, int64_t rows, int64_t cols, const float *x, int n, sd_simd level,
                     int threads) {
    sd_backend *b = NULL;
    sd_err err = {{0}};
    if (sd_backend_cpu_new_simd(threads, level, &b, &err) != 0) {
        fprintf(stderr, "  %s\n", err.msg);
        return NULL;
    }
    sd_tensor t = {.type = type, .cols = cols, .rows = rows, .host = w, .name = "w"};
    float *o = NULL;
    if (b->upload_weight(b, &t, &err) == 0) {
        float *xb = b->alloc(b, (size_t)(n * cols), &err), *ob = b->alloc(b, (size_t)(n * rows), &err);
        b->from_host(b, xb, x, (size_t)(n * cols));
        b->matmul(b, ob, &t, xb, n);
        o = malloc(sizeof(float) * (size_t)(n * rows));
        b->to_host(b, o, ob, (size_t)(n * rows));
        b->release(b, xb);
        b->release(b, ob);
        b->free_weight(b, &t);
    } else {
        fprintf(stderr, "  upload: %s\n", err.msg);
    }
    b->destroy(b);
    return o;
}

/* Largest |out - ref| / tolerance over a product; > 1 fails. */
static double worst_ratio(const float *o, const double *ref, const double *mag, int64_t rows, int64_t cols, int n) {
    double worst = 0;
    for (int64_t k = 0; k < rows * n; k++) {
        double tol = (8.0 + (double)cols / 16) * ldexp(1, -24) * mag[k] + 1e-37;
        double e = fabs((double)o[k] - ref[k]) / tol;
        if (!(e <= worst)) worst = e; /* NaN counts as a failure */
    }
    return worst;
}

/* Every level, n = 1..17 (each against the reference, and bitwise equal to the same rows of the n = 17
 * product: a verification of k tokens computes what k single steps would), 1 and 3 threads bitwise. */
static void check_type_shape(int type, int64_t rows, int64_t cols) {
    const int nmax = 17;
    size_t rb = sd_dtype_row_bytes(type, cols);
    uint8_t *w = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) random_row(type, w + rb * (size_t)r, cols);
    float *x = malloc(sizeof(float) * (size_t)(nmax * cols));
    random_acts(x, nmax * cols);
    double *ref = malloc(sizeof(double) * (size_t)(nmax * rows)), *mag = malloc(sizeof(double) * (size_t)(nmax * rows));
    reference(type, w, rows, cols, x, nmax, ref, mag);
    for (int s = 0; s <= (int)sd_simd_detect(); s++) {
        float *all = matmul(type, w, rows, cols, x, nmax, (sd_simd)s, 3);
        REQUIRE(all);
        double worst = worst_ratio(all, ref, mag, rows, cols, nmax);
        CHECKF(worst <= 1, "%s %s %lldx%lld n=%d: error %.3g x the tolerance", sd_simd_name((sd_simd)s),
               sd_dtype_name(type), (long long)rows, (long long)cols, nmax, worst);
        for (int n = 1; n < nmax; n++) {
            float *o = matmul(type, w, rows, cols, x, n, (sd_simd)s, n % 2 ? 1 : 2);
            REQUIRE(o);
            CHECKF(memcmp(o, all, sizeof(float) * (size_t)(n * rows)) == 0, "%s %s %lldx%lld: n=%d differs from n=%d",
                   sd_simd_name((sd_simd)s), sd_dtype_name(type), (long long)rows, (long long)cols, n, nmax);
            free(o);
        }
        free(all);
    }
    free(ref);
    free(mag);
    free(x);
    free(w);
}

/* Shapes with partial groups of 256 columns (the 32-column types) and rows past a multiple of 16. */
static void test_random_blocks_all_levels(void) {
    printf("# simd levels: scalar..%s\n", sd_simd_name(sd_simd_detect()));
    for (size_t ti = 0; ti < N_QTYPES; ti++) {
        int type = qtypes[ti];
        if (sd_quant_block(type) == SD_QK) {
            check_type_shape(type, 5, 32);
            check_type_shape(type, 19, 288);
            check_type_shape(type, 37, 1056);
        } else {
            check_type_shape(type, 5, 256);
            check_type_shape(type, 37, 1280);
        }
    }
}

/* A level's product of every quantized matrix of llama.cpp's files (../shared/quant) with 3 activation
 * vectors, against the reference. */
static void test_llama_cpp_files(void) {
    static const char *const files[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m", "q4_k_m",
                                        "q5_k_m", "q6_k", "iq4_nl", "iq4_xs"};
    int checked = 0, seen[64] = {0};
    for (size_t fi = 0; fi < sizeof files / sizeof *files; fi++) {
        char rel[64];
        snprintf(rel, sizeof rel, "quant/base-%s.gguf", files[fi]);
        const char *p = shared_path(rel);
        if (!p) SKIP("../shared/quant not found");
        gguf_file *f = NULL;
        sd_err err = {{0}};
        REQUIRE(gguf_open(p, &f, &err) == 0);
        for (uint64_t t = 0; t < f->n_tensors; t++) {
            const gguf_tensor_info *q = &f->tensors[t];
            int type = (int)q->type;
            if (type == SD_Q8_0 || !sd_quant_block(type) || q->ne[1] <= 1) continue;
            int64_t rows = q->ne[1], cols = q->ne[0];
            const int n = 3;
            float *x = malloc(sizeof(float) * (size_t)(n * cols));
            for (int64_t i = 0; i < n * cols; i++) x[i] = frand();
            double *ref = malloc(sizeof(double) * (size_t)(n * rows)), *mag = malloc(sizeof(double) * (size_t)(n * rows));
            reference(type, q->data, rows, cols, x, n, ref, mag);
            for (int s = 0; s <= (int)sd_simd_detect(); s++) {
                float *o = matmul(type, q->data, rows, cols, x, n, (sd_simd)s, 2);
                REQUIRE(o);
                double worst = worst_ratio(o, ref, mag, rows, cols, n);
                CHECKF(worst <= 1, "%s %s (%s) %s: error %.3g x the tolerance", files[fi], q->name, sd_dtype_name(type),
                       sd_simd_name((sd_simd)s), worst);
                free(o);
            }
            free(x);
            free(ref);
            free(mag);
            seen[type]++;
            checked++;
        }
        gguf_close(f);
    }
    printf("# %d quantized matrices multiplied at every level\n", checked);
    for (size_t ti = 0; ti < N_QTYPES; ti++) CHECKF(seen[qtypes[ti]] > 0, "no %s matrix in the files", sd_dtype_name(qtypes[ti]));
}

/* Every level's activation records (sd_cpu_kernels.act_groups) bitwise equal to the plain C form, two
 * vectors' records interleaved (gstride 2), with a partial last group; and the records hold what they
 * should: the interleaved words, the scales and sums, zeros past a row's end. */
static void test_act_groups_levels(void) {
    enum { COLS = 800, NG = 4 }; /* 3 whole groups of 256 and one of a block */
    float x[COLS];
    random_acts(x, COLS);
    static int8_t q[COLS];
    static float d[COLS / 32];
    static int32_t sums[COLS / 32];
    static sd_act_group g0[2 * NG], g1[2 * NG];
    sd_quant_act_q8(x, COLS, q, d, sums);
    memset(g0, 0x55, sizeof g0);
    sd_act_groups_ref(q, d, sums, COLS, g0 + 1, 2);
    for (int s = 1; s <= (int)sd_simd_detect(); s++) {
        const sd_cpu_kernels *k = sd_simd_kernels((sd_simd)s);
        memset(g1, 0x55, sizeof g1);
        k->act_groups(q, d, sums, COLS, g1 + 1, 2);
        CHECKF(memcmp(g0, g1, sizeof g0) == 0, "%s: activation records differ from sd_act_groups_ref's", k->name);
    }
    /* word 1 of block 2 at word 8 + 2 of group 0; the partial group in order, zeros after */
    CHECK(memcmp(g0[1].q + 40, q + 68, 4) == 0 && g0[1].d[3] == d[3] && g0[1].s[7] == sums[7]);
    CHECK(memcmp(g0[7].q, q + 768, 32) == 0 && g0[7].q[32] == 0 && g0[7].d[1] == 0 && g0[6].q[0] == 0x55);
}

int main(void) {
    RUN(test_act_groups_levels);
    RUN(test_random_blocks_all_levels);
    RUN(test_llama_cpp_files);
    return TEST_DONE();
}
