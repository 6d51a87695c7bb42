/* CPU backend kernels: number formats, every op at every SIMD level this CPU has, against references
 * computed here in double precision; thread counts 1, 2, 3 must give bitwise identical results.
 *
 * Tolerances: every SIMD path computes the same F32 math as the reference (Q8_0 weights are dequantized
 * exactly, d * q fits a float), only the summation order differs, so a dot product of length K is checked
 * against |out - ref| <= 1e-5 * sum|w * x| + 1e-6 (float rounding grows ~ sqrt(K) * 2^-24 of that sum).
 * Quantized products quantize the activations to 8 bits per block of 32 first (as llama.cpp does; see
 * kernels/cpu/simd.h), which moves each x by at most d_x / 2 (d_x = block amax / 127): the reference is
 * still exact F32 math, and the tolerance adds sum_c |w_c| * d_x(c) / 2. */
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/quant_k.h"
#include "tests/test.h"
#include "tests/test_util.h"

static float frand(void) { return (float)(rand_u32() % 2000001) / 1000000.0f - 1.0f; } /* [-1, 1] */

static const int types[] = {SD_F32, SD_F16, SD_BF16, SD_Q8_0};
/* The types of the SD_MM_QUANT kernel (tests/test_quant_kern.c tests it in detail). */
static const int qtypes[] = {SD_Q4_0, SD_Q4_1, SD_Q5_0, SD_Q5_1, SD_IQ4_NL, SD_Q2_K, SD_Q3_K, SD_Q4_K, SD_Q5_K, SD_Q6_K, SD_IQ4_XS};

/* Independent half -> double: (-1)^s * 1.m * 2^(e-15), subnormals m * 2^-24. */
static double half_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_fp16_all_values(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_fp16_to_fp32((uint16_t)h);
        double r = half_ref((uint16_t)h);
        if (isnan(r)) {
            CHECKF(isnan(f), "h=%04x", h);
            CHECKF(isnan(sd_bits_f32(sd_f32_bits(f))) && (sd_fp32_to_fp16(f) & 0x7c00) == 0x7c00 &&
                       (sd_fp32_to_fp16(f) & 0x3ff),
                   "NaN h=%04x", h);
            continue;
        }
        CHECKF((double)f == r, "h=%04x: %g vs %g", h, f, r);
        CHECKF(sd_fp32_to_fp16(f) == h, "round trip h=%04x -> %04x", h, sd_fp32_to_fp16(f));
    }
}

static void test_fp16_rounding(void) {
    CHECK_EQ_INT(sd_fp32_to_fp16(65504.0f), 0x7bff);
    CHECK_EQ_INT(sd_fp32_to_fp16(65519.0f), 0x7bff);
    CHECK_EQ_INT(sd_fp32_to_fp16(65520.0f), 0x7c00);
    CHECK_EQ_INT(sd_fp32_to_fp16(-1e9f), 0xfc00);
    CHECK_EQ_INT(sd_fp32_to_fp16(ldexpf(1, -24)), 1);
    CHECK_EQ_INT(sd_fp32_to_fp16(ldexpf(1, -25)), 0);              /* tie to even: 0 */
    CHECK_EQ_INT(sd_fp32_to_fp16(ldexpf(3, -26)), 1);              /* 0.75 ulp rounds up */
    CHECK_EQ_INT(sd_fp32_to_fp16(ldexpf(3, -25)), 2);              /* 1.5 ulp: tie to even 2 */
    CHECK_EQ_INT(sd_fp32_to_fp16(1.0f + ldexpf(1, -11)), 0x3c00); /* tie to even */
    CHECK_EQ_INT(sd_fp32_to_fp16(1.0f + ldexpf(3, -11)), 0x3c02);
    /* Random floats: the result is a nearest half (no other half is closer). */
    for (int i = 0; i < 200000; i++) {
        float f = ldexpf(frand(), (int)(rand_u32() % 44) - 28);
        uint16_t h = sd_fp32_to_fp16(f);
        double err = fabs(half_ref(h) - f);
        uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
        if ((up & 0x7c00) != 0x7c00) CHECKF(err <= fabs(half_ref(up) - f), "%g -> %04x", f, h);
        if ((h & 0x7fff) != 0) CHECKF(err <= fabs(half_ref(dn) - f), "%g -> %04x", f, h);
    }
}

static void test_bf16(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_bf16_to_fp32((uint16_t)h);
        CHECKF(sd_f32_bits(f) == h << 16, "h=%04x", h);
        if (!isnan(f)) CHECKF(sd_fp32_to_bf16(f) == h, "round trip %04x", h);
        else CHECK(isnan(sd_bf16_to_fp32(sd_fp32_to_bf16(f))));
    }
    CHECK_EQ_INT(sd_fp32_to_bf16(sd_bits_f32(0x3f808000u)), 0x3f80); /* tie to even down */
    CHECK_EQ_INT(sd_fp32_to_bf16(sd_bits_f32(0x3f818000u)), 0x3f82); /* tie to even up */
    CHECK_EQ_INT(sd_fp32_to_bf16(sd_bits_f32(0x3f808001u)), 0x3f81);
    CHECK(isinf(sd_bf16_to_fp32(sd_fp32_to_bf16(INFINITY))));
}

static void test_q8_0(void) {
    for (int it = 0; it < 2000; it++) {
        float x[32], y[32];
        float mag = ldexpf(1, (int)(rand_u32() % 20) - 10);
        for (int i = 0; i < 32; i++) x[i] = frand() * mag;
        if (it == 0) memset(x, 0, sizeof x);
        sd_block_q8_0 b;
        sd_quant_q8_0(x, &b);
        sd_dequant_q8_0(&b, y);
        double d = half_ref(b.d), amax = 0;
        for (int i = 0; i < 32; i++) amax = fmax(amax, fabs(x[i]));
        double d_exact = amax / 127;
        for (int i = 0; i < 32; i++) {
            CHECKF((double)y[i] == d * b.qs[i], "dequant exact");
            /* half a step, plus 127 x the F16 rounding of the scale (q is chosen with the unrounded one) */
            CHECKF(fabs(y[i] - x[i]) <= 0.5 * d_exact * 1.0001 + 127 * fabs(d - d_exact) + 1e-30, "%g vs %g (d %g)",
                   y[i], x[i], d);
            CHECK_NEAR(sd_row_get(SD_Q8_0, &b, i), y[i], 0);
        }
    }
}

/* NaN and infinite values (a broken model's weights or activations) quantize without undefined
 * conversions: their blocks give codes in range, and finite neighbours of a NaN keep their codes. */
static void test_q8_0_non_finite(void) {
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16);
    x[3] = NAN;
    x[7] = INFINITY;
    x[9] = -INFINITY;
    sd_block_q8_0 b;
    sd_quant_q8_0(x, &b);
    int8_t q[32];
    float d;
    int32_t sum;
    sd_quant_act_q8(x, 32, q, &d, &sum);
    for (int i = 0; i < 32; i++) CHECK(q[i] >= -127 && q[i] <= 127 && b.qs[i] >= -127 && b.qs[i] <= 127);
    x[7] = x[9] = 0; /* only a NaN: amax ignores it, the others quantize as usual */
    sd_quant_act_q8(x, 32, q, &d, &sum);
    CHECK_EQ_INT(q[3], 0);
    CHECK_EQ_INT(q[31], 119); /* 15 / 16 * 127 */
    CHECK_EQ_INT(q[0], -127);
}

/* A row of a quantized type with every quant bit random (all bit patterns occur) and small random
 * F16 scales (so the products stay finite). */
static void random_quant_row(int type, uint8_t *row, int64_t cols, float scale) {
    int bb = sd_quant_block_bytes(type);
    size_t nb = (size_t)(cols / sd_quant_block(type));
    for (size_t i = 0; i < nb * (size_t)bb; i++) row[i] = (uint8_t)rand_u32();
    for (size_t b = 0; b < nb; b++)
        for (const int *f = sd_quant_scale_fields(type); *f >= 0; f++) {
            uint16_t h = sd_fp32_to_fp16(frand() * scale * 0.05f);
            memcpy(row + b * (size_t)bb + *f, &h, 2);
        }
}

/* Random weights of a type (rows x cols) and their exact F32 values. */
static void *make_weights(int type, int64_t rows, int64_t cols, float *exact) {
    size_t rb = sd_dtype_row_bytes(type, cols);
    uint8_t *w = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = w + rb * (size_t)r;
        if (type != SD_Q8_0 && sd_quant_block(type)) {
            random_quant_row(type, row, cols, ldexpf(1, (int)(r % 5) - 2));
            sd_dequant_row(type, row, exact + r * cols, cols);
            continue;
        }
        float scale = ldexpf(1, (int)(r % 5) - 2);
        for (int64_t c = 0; c < cols; c++) {
            float v = frand() * scale;
            if (type == SD_F32) ((float *)row)[c] = v;
            if (type == SD_F16) ((uint16_t *)row)[c] = sd_fp32_to_fp16(v);
            if (type == SD_BF16) ((uint16_t *)row)[c] = sd_fp32_to_bf16(v);
            if (type == SD_Q8_0) exact[r * cols + c] = v;
        }
        if (type == SD_Q8_0)
            for (int64_t c = 0; c < cols; c += 32)
                sd_quant_q8_0(exact + r * cols + c, (sd_block_q8_0 *)row + c / 32);
        for (int64_t c = 0; c < cols; c++) exact[r * cols + c] = sd_row_get(type, row, c);
    }
    return w;
}

static sd_backend *open_cpu(int threads, sd_simd s) {
    sd_backend *b = NULL;
    sd_err err = {{0}};
    if (sd_backend_cpu_new_simd(threads, s, &b, &err) != 0) fprintf(stderr, "  %s\n", err.msg);
    return b;
}

/* One matmul on a fresh backend; returns malloc'd [n][rows]. */
static float *run_matmul(sd_backend *b, sd_tensor *t, const float *x, int n) {
    sd_err err = {{0}};
    if (b->upload_weight(b, t, &err) != 0) {
        fprintf(stderr, "  upload: %s\n", err.msg);
        return NULL;
    }
    float *xb = b->alloc(b, (size_t)n * t->cols, &err), *ob = b->alloc(b, (size_t)n * t->rows, &err);
    b->from_host(b, xb, x, (size_t)n * t->cols);
    b->matmul(b, ob, t, xb, n);
    float *o = malloc(sizeof(float) * (size_t)n * t->rows);
    b->to_host(b, o, ob, (size_t)n * t->rows);
    b->release(b, xb);
    b->release(b, ob);
    b->free_weight(b, t);
    return o;
}

static void check_matmul_shape(int type, int64_t rows, int64_t cols, int n) {
    float *exact = malloc(sizeof(float) * (size_t)(rows * cols));
    void *w = make_weights(type, rows, cols, exact);
    float *x = malloc(sizeof(float) * (size_t)(n * cols));
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand();
    sd_tensor t = {.type = type, .cols = cols, .rows = rows, .host = w, .name = "w"};
    for (int s = 0; s <= (int)sd_simd_detect(); s++) {
        float *first = NULL;
        for (int th = 1; th <= 3; th++) {
            sd_backend *b = open_cpu(th, (sd_simd)s);
            REQUIRE(b);
            float *o = run_matmul(b, &t, x, n);
            b->destroy(b);
            REQUIRE(o);
            if (!first) {
                for (int i = 0; i < n; i++)
                    for (int64_t r = 0; r < rows; r++) {
                        double ref = 0, mag = 0, qerr = 0;
                        for (int64_t c = 0; c < cols; c++) {
                            ref += (double)exact[r * cols + c] * x[i * cols + c];
                            mag += fabs((double)exact[r * cols + c] * x[i * cols + c]);
                        }
                        if (sd_quant_block(type)) /* every quantized type quantizes the activations */
                            for (int64_t c0 = 0; c0 < cols; c0 += 32) {
                                double amax = 0;
                                for (int k = 0; k < 32; k++) amax = fmax(amax, fabs(x[i * cols + c0 + k]));
                                for (int k = 0; k < 32; k++) qerr += fabs(exact[r * cols + c0 + k]) * amax / 127 * 0.5001;
                            }
                        double got = o[i * rows + r];
                        CHECKF(fabs(got - ref) <= 1e-5 * mag + 1e-6 + qerr, "%s %s %lldx%lld n=%d [%d][%lld]: %.9g vs %.9g",
                               sd_simd_name((sd_simd)s), sd_dtype_name(type), (long long)rows, (long long)cols, n, i,
                               (long long)r, got, ref);
                    }
                first = o;
            } else {
                CHECKF(memcmp(first, o, sizeof(float) * (size_t)(n * rows)) == 0,
                       "%s %s %lldx%lld n=%d: %d threads differ from 1 thread", sd_simd_name((sd_simd)s),
                       sd_dtype_name(type), (long long)rows, (long long)cols, n, th);
                free(o);
            }
        }
        free(first);
    }
    free(x);
    free(w);
    free(exact);
}

static void test_matmul_all_levels(void) {
    printf("# simd levels: scalar..%s\n", sd_simd_name(sd_simd_detect()));
    static const int64_t rows_set[] = {1, 3, 16, 17, 40, 67};
    static const int64_t cols_q[] = {32, 96, 288, 1056};
    static const int64_t cols_f[] = {1, 7, 16, 33, 100, 288, 1029};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        int type = types[ti];
        const int64_t *cs = type == SD_Q8_0 ? cols_q : cols_f;
        size_t ncs = type == SD_Q8_0 ? 4 : 7;
        for (size_t ci = 0; ci < ncs; ci++)
            for (size_t ri = 0; ri < sizeof rows_set / sizeof *rows_set; ri++)
                for (int n = 1; n <= 9; n++)
                    if ((ri + ci + (size_t)n) % 3 == 0 || n <= 2 || n == 5) check_matmul_shape(type, rows_set[ri], cs[ci], n);
    }
}

/* The other quantized types, every level against the float64 product of the dequantized weights (and
 * so against each other): fewer shapes per type than above, but every tile size and row remainder. */
static void test_matmul_quant_levels(void) {
    static const int64_t rows_set[] = {1, 5, 17, 34};
    for (size_t ti = 0; ti < sizeof qtypes / sizeof *qtypes; ti++) {
        int type = qtypes[ti], qk = sd_quant_block(type);
        const int64_t cols[] = {qk, 3 * qk, qk == 32 ? 1056 : 1280};
        for (size_t ci = 0; ci < 3; ci++)
            for (size_t ri = 0; ri < sizeof rows_set / sizeof *rows_set; ri++)
                for (int n = 1; n <= 9; n++)
                    if ((ri + ci + (size_t)n) % 4 == 0 || n == 1 || n == 6) check_matmul_shape(type, rows_set[ri], cols[ci], n);
    }
}

/* Row i of a product of n activations is bitwise the product of that activation alone: verifying k
 * drafted tokens in one call computes exactly what decoding them one by one would. */
static void test_matmul_n_consistent(void) {
    int all_types[sizeof types / sizeof *types + sizeof qtypes / sizeof *qtypes];
    size_t nt = 0;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) all_types[nt++] = types[i];
    for (size_t i = 0; i < sizeof qtypes / sizeof *qtypes; i++) all_types[nt++] = qtypes[i];
    for (size_t ti = 0; ti < nt; ti++) {
        int64_t rows = 37, cols = sd_quant_block(all_types[ti]) == SD_QK_K ? 512 : 320;
        float *exact = malloc(sizeof(float) * (size_t)(rows * cols));
        void *w = make_weights(all_types[ti], rows, cols, exact);
        float *x = malloc(sizeof(float) * 40 * (size_t)cols);
        for (int64_t i = 0; i < 40 * cols; i++) x[i] = frand();
        sd_tensor t = {.type = all_types[ti], .cols = cols, .rows = rows, .host = w, .name = "w"};
        for (int s = 0; s <= (int)sd_simd_detect(); s++) {
            sd_backend *b = open_cpu(2, (sd_simd)s);
            REQUIRE(b);
            static const int ns[] = {2, 3, 4, 5, 6, 7, 8, 9, 16, 40};
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                int n = ns[ni];
                float *all = run_matmul(b, &t, x, n);
                REQUIRE(all);
                for (int i = 0; i < n; i++) {
                    float *one = run_matmul(b, &t, x + i * cols, 1);
                    REQUIRE(one);
                    CHECKF(memcmp(one, all + i * rows, sizeof(float) * (size_t)rows) == 0, "%s %s n=%d row %d",
                           sd_simd_name((sd_simd)s), sd_dtype_name(all_types[ti]), n, i);
                    free(one);
                }
                free(all);
            }
            b->destroy(b);
        }
        free(x);
        free(w);
        free(exact);
    }
}

/* The cache-blocked path (mm_tmpl.h) against the small-row path, bitwise, called directly at every level
 * whatever its default crossover: rows past a row block and odd counts, columns past a panel and not a
 * multiple of a vector or of 8 Q8_0 blocks, activations past an activation group (1..70), and the rows
 * handed out in chunks of SD_MM_ROW_ALIGN as the thread pool does. Both paths are checked against the
 * exact product by the tests above (the backend picks by n), so equal bits make both right. */
static void run_path(const sd_cpu_kernels *k, int ti, sd_mm_job j, int path, int64_t rows, int64_t chunk) {
    j.path = path;
    for (int64_t r = 0; r < rows; r += chunk) k->mm[ti](&j, r, r + chunk < rows ? r + chunk : rows);
}

static void check_paths(int type, int64_t rows, int64_t cols, int n) {
    float *exact = malloc(sizeof(float) * (size_t)(rows * cols)), *x = malloc(sizeof(float) * (size_t)(n * cols));
    float *small = malloc(sizeof(float) * (size_t)(n * rows)), *blocked = malloc(sizeof(float) * (size_t)(n * rows));
    void *w = make_weights(type, rows, cols, exact);
    int64_t nb = cols / SD_QK8_0;
    int8_t *xq = malloc((size_t)(n * cols));
    float *xd = malloc(sizeof(float) * (size_t)(n * nb + 1));
    int32_t *xsum = malloc(sizeof(int32_t) * (size_t)(n * nb + 1));
    sd_act_group *xg = malloc(sizeof(sd_act_group) * (size_t)(n * ((cols + 255) / 256)));
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand();
    if (type == SD_Q8_0)
        for (int i = 0; i < n; i++) {
            sd_quant_act_q8(x + i * cols, cols, xq + i * cols, xd + i * nb, xsum + i * nb);
            sd_act_groups_ref(xq + i * cols, xd + i * nb, xsum + i * nb, cols, xg + i, n);
        }
    int ti = type == SD_F32 ? SD_MM_F32 : type == SD_F16 ? SD_MM_F16 : type == SD_BF16 ? SD_MM_BF16 : SD_MM_Q8_0;
    sd_mm_job j = {.out_stride = rows, .w = w, .row_bytes = sd_dtype_row_bytes(type, cols), .cols = cols, .x = x,
                   .xq = xq, .xd = xd, .xs = xsum, .xg = xg, .n = n, .type = type};
    for (int s = 0; s <= (int)sd_simd_detect(); s++) {
        const sd_cpu_kernels *k = sd_simd_kernels((sd_simd)s);
        j.out = small;
        run_path(k, ti, j, SD_MM_SMALL, rows, rows);
        j.out = blocked;
        run_path(k, ti, j, SD_MM_BLOCKED, rows, SD_MM_ROW_ALIGN);
        CHECKF(memcmp(small, blocked, sizeof(float) * (size_t)(n * rows)) == 0, "%s %s %lldx%lld n=%d: blocked differs",
               sd_simd_name((sd_simd)s), sd_dtype_name(type), (long long)rows, (long long)cols, n);
    }
    free(exact), free(x), free(small), free(blocked), free(w), free(xq), free(xd), free(xsum), free(xg);
}

static void test_matmul_blocked_paths(void) {
    static const int64_t rows_set[] = {1, 17, 40, 70};
    static const int64_t cols_f[] = {7, 33, 300, 1029};
    static const int64_t cols_q[] = {32, 288, 544, 2080}; /* 1, 9, 17, 65 blocks */
    static const int ns[] = {1, 2, 5, 8, 9, 12, 16, 17, 33, 40, 64, 70};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (size_t ri = 0; ri < sizeof rows_set / sizeof *rows_set; ri++)
            for (size_t ci = 0; ci < 4; ci++)
                for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
                    if ((ri + ci + ni) % 2 == 0 || ns[ni] >= 33)
                        check_paths(types[ti], rows_set[ri], types[ti] == SD_Q8_0 ? cols_q[ci] : cols_f[ci], ns[ni]);
    /* Q8_0 rows longer than its packed panel (17 groups of 8 blocks and one block), two activation groups */
    check_paths(SD_Q8_0, 21, 4384, 67);
    /* every activation count 1..70 on one shape per type */
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (int n = 1; n <= 70; n++) check_paths(types[ti], 19, types[ti] == SD_Q8_0 ? 288 : 289, n);
}

/* A matrix big enough that the pool splits it into many chunks (a multiple-of-16 boundary and a tail). */
static void test_matmul_large_threads(void) {
    check_matmul_shape(SD_Q8_0, 1000, 512, 5);
    check_matmul_shape(SD_F16, 523, 640, 1);
    check_matmul_shape(SD_F16, 300, 256, 12);
    check_matmul_shape(SD_F32, 300, 256, 17);
    check_matmul_shape(SD_Q4_K, 600, 512, 5);
    check_matmul_shape(SD_Q4_0, 333, 256, 1);
}

/* Runs `fn` on backends of every level and thread count; fn fills out[] (len floats) from the backend. */
typedef void (*op_fn)(sd_backend *b, float *out);
static void check_op(const char *name, op_fn fn, size_t len, const double *ref, double rtol, double atol) {
    float *first = malloc(len * sizeof(float)), *o = malloc(len * sizeof(float));
    for (int s = 0; s <= (int)sd_simd_detect(); s++)
        for (int th = 1; th <= 3; th++) {
            sd_backend *b = open_cpu(th, (sd_simd)s);
            REQUIRE(b);
            fn(b, th == 1 ? first : o);
            b->destroy(b);
            if (th == 1) {
                int bad = 0;
                for (size_t i = 0; i < len && bad < 5; i++)
                    if (!(fabs(first[i] - ref[i]) <= rtol * fabs(ref[i]) + atol)) {
                        bad++;
                        CHECKF(0, "%s %s [%zu]: %.9g vs %.9g", name, sd_simd_name((sd_simd)s), i, first[i], ref[i]);
                    }
            } else {
                CHECKF(memcmp(first, o, len * sizeof(float)) == 0, "%s %s: %d threads differ", name,
                       sd_simd_name((sd_simd)s), th);
            }
        }
    free(first);
    free(o);
}

/* Shared inputs of the op tests. */
static float *g_x, *g_y, *g_w;
static int g_rows, g_width, g_n, g_heads, g_kvh, g_hd, g_rot, g_pos0;
static bool g_neox;
static float *g_inv;
static sd_tensor g_t;
static int32_t g_ids[7];

static float *to_dev(sd_backend *b, const float *h, size_t n) {
    float *d = b->alloc(b, n, NULL);
    b->from_host(b, d, h, n);
    return d;
}

static void op_rmsnorm(sd_backend *b, float *out) {
    size_t n = (size_t)g_rows * g_width;
    float *x = to_dev(b, g_x, n);
    sd_tensor w = {.type = SD_F32, .cols = g_width, .rows = 1, .host = g_w, .name = "norm"};
    b->upload_weight(b, &w, NULL);
    b->rmsnorm(b, x, x, &w, g_rows, g_width, 1e-5f); /* in place */
    b->to_host(b, out, x, n);
    b->release(b, x);
}

/* Every level's activation quantization is bitwise sd_quant_act_q8: random blocks of several scales,
 * ties (x / d exactly k + 0.5), -0, NaN and infinities, all-zero blocks. */
static void test_quant_act_levels(void) {
    enum { N = 32 * 64 };
    static float x[N];
    static int8_t q0[N], q1[N];
    float d0[N / 32], d1[N / 32];
    int32_t s0[N / 32], s1[N / 32];
    for (int i = 0; i < N; i++) x[i] = ldexpf(frand(), (int)(rand_u32() % 40) - 20);
    for (int i = 0; i < 32; i++) x[32 + i] = 0.5f * (float)(i - 16); /* amax 8: x / d = 15.875 * k / 2 */
    for (int i = 0; i < 32; i++) x[64 + i] = (float)(i % 3 - 1) * 127.0f + 0.5f * (float)(i % 2);
    for (int i = 0; i < 32; i++) x[96 + i] = 0.0f;
    x[128] = -0.0f, x[129] = NAN, x[130] = INFINITY, x[131] = -INFINITY, x[160] = NAN, x[200] = -0.0f;
    for (int i = 192; i < 224; i++) x[i] = -0.0f;
    sd_quant_act_q8(x, N, q0, d0, s0);
    for (int s = 0; s <= (int)sd_simd_detect(); s++) {
        const sd_cpu_kernels *k = sd_simd_kernels((sd_simd)s);
        memset(q1, 0x55, sizeof q1);
        k->quant_act(x, N, q1, d1, s1);
        CHECKF(memcmp(q0, q1, sizeof q0) == 0, "%s: levels differ", k->name);
        CHECKF(memcmp(d0, d1, sizeof d0) == 0, "%s: scales differ", k->name);
        CHECKF(memcmp(s0, s1, sizeof s0) == 0, "%s: sums differ", k->name);
        k->quant_act(x, N, q1, d1, NULL); /* sums are optional */
        CHECK(memcmp(q0, q1, sizeof q0) == 0);
    }
}

static void test_rmsnorm(void) {
    g_rows = 37;
    g_width = 1031;
    size_t n = (size_t)g_rows * g_width;
    g_x = malloc(n * sizeof(float));
    g_w = malloc((size_t)g_width * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) g_x[i] = frand() * 3;
    for (int i = 0; i < g_width; i++) g_w[i] = frand();
    for (int r = 0; r < g_rows; r++) {
        double ss = 0;
        for (int c = 0; c < g_width; c++) ss += (double)g_x[r * g_width + c] * g_x[r * g_width + c];
        double s = 1 / sqrt(ss / g_width + 1e-5);
        for (int c = 0; c < g_width; c++) ref[r * g_width + c] = g_x[r * g_width + c] * s * g_w[c];
    }
    check_op("rmsnorm", op_rmsnorm, n, ref, 1e-5, 1e-6);
    free(ref);
    free(g_x);
    free(g_w);
}

static void op_rope(sd_backend *b, float *out) {
    size_t n = (size_t)g_n * g_heads * g_hd;
    float *x = to_dev(b, g_x, n), *inv = to_dev(b, g_inv, (size_t)g_rot / 2);
    b->rope(b, x, g_n, g_heads, g_hd, g_rot, g_pos0, inv, g_neox);
    b->to_host(b, out, x, n);
    b->release(b, x);
    b->release(b, inv);
}

static void test_rope(void) {
    for (int variant = 0; variant < 4; variant++) {
        g_n = 1 + variant * 2;
        g_heads = 3;
        g_hd = variant == 3 ? 10 : 16;
        g_rot = variant == 2 ? 8 : g_hd;
        g_pos0 = variant * 37;
        g_neox = variant & 1;
        size_t n = (size_t)g_n * g_heads * g_hd;
        g_x = malloc(n * sizeof(float));
        g_inv = malloc(sizeof(float) * (size_t)g_rot / 2);
        double *ref = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) g_x[i] = frand();
        for (int j = 0; j < g_rot / 2; j++) g_inv[j] = powf(10000.0f, -2.0f * j / g_rot);
        for (size_t i = 0; i < n; i++) ref[i] = g_x[i];
        for (int i = 0; i < g_n; i++)
            for (int h = 0; h < g_heads; h++)
                for (int j = 0; j < g_rot / 2; j++) {
                    double a = (double)(g_pos0 + i) * g_inv[j];
                    size_t base = ((size_t)i * g_heads + h) * g_hd;
                    size_t ia = base + (g_neox ? j : 2 * j), ib = base + (g_neox ? j + g_rot / 2 : 2 * j + 1);
                    ref[ia] = g_x[ia] * cos(a) - g_x[ib] * sin(a);
                    ref[ib] = g_x[ia] * sin(a) + g_x[ib] * cos(a);
                }
        /* float angles: pos * inv_freq rounds to 2^-24 relative, so large positions move a little */
        check_op("rope", op_rope, n, ref, 1e-5, 2e-5 * (1 + g_pos0 + g_n));
        free(ref);
        free(g_x);
        free(g_inv);
    }
}

/* Attention: q [n][heads*hd], K/V of positions 0..pos0+n-1 written by kv_store in two passes, in a pool
 * whose blocks the sequence holds in scrambled order (block i of the sequence is pool block 3 + 5i mod
 * n_blocks), after another sequence's span filled the blocks it does not hold with junk. */
static float *g_k, *g_v;
static sd_dtype g_kv_type;
static void op_attention(sd_backend *b, float *out) {
    int kvd = g_kvh * g_hd, total = g_pos0 + g_n, layer = 1;
    int nb = (total + SD_KV_BLOCK - 1) / SD_KV_BLOCK, n_blocks = 2 * nb + 3;
    while (n_blocks % 5 == 0) n_blocks++; /* 5 must be invertible mod n_blocks: distinct blocks */
    int32_t *table = malloc(sizeof(int32_t) * (size_t)nb), *other = malloc(sizeof(int32_t) * (size_t)n_blocks);
    int n_other = 0;
    for (int i = 0; i < nb; i++) table[i] = (3 + 5 * i) % n_blocks;
    for (int j = 0; j < n_blocks; j++) {
        bool used = false;
        for (int i = 0; i < nb; i++) used |= table[i] == j;
        if (!used) other[n_other++] = j;
    }
    sd_kv_mem kv;
    sd_err err = {{0}};
    if (b->kv_mem_alloc(b, &kv, 2, kvd, n_blocks, g_kv_type, &err) != 0) return;
    /* junk in every block the sequence does not hold, and in its positions past the last */
    int junk_rows = n_other * SD_KV_BLOCK;
    float *junk = malloc(sizeof(float) * (size_t)(junk_rows + SD_KV_BLOCK) * kvd);
    for (size_t i = 0; i < (size_t)(junk_rows + SD_KV_BLOCK) * kvd; i++) junk[i] = 1e4f;
    float *jd = to_dev(b, junk, (size_t)(junk_rows + SD_KV_BLOCK) * kvd);
    if (n_other) {
        sd_kv_span js = {.row = 0, .n = junk_rows, .pos0 = 0, .cap = junk_rows, .table = other};
        b->kv_spans(b, &js, 1, junk_rows);
        b->kv_store(b, &kv, layer, jd, jd);
    }
    int tail = nb * SD_KV_BLOCK - total;
    if (tail) {
        sd_kv_span ts = {.row = 0, .n = tail, .pos0 = total, .cap = nb * SD_KV_BLOCK, .table = table};
        b->kv_spans(b, &ts, 1, tail);
        b->kv_store(b, &kv, layer, jd, jd);
    }
    float *k = to_dev(b, g_k, (size_t)total * kvd), *v = to_dev(b, g_v, (size_t)total * kvd);
    sd_kv_span s0 = {.row = 0, .n = g_pos0, .pos0 = 0, .cap = total, .table = table};
    if (g_pos0) {
        b->kv_spans(b, &s0, 1, g_pos0);
        b->kv_store(b, &kv, layer, k, v);
    }
    sd_kv_span s1 = {.row = 0, .n = g_n, .pos0 = g_pos0, .cap = total, .table = table};
    b->kv_spans(b, &s1, 1, g_n);
    b->kv_store(b, &kv, layer, k + (size_t)g_pos0 * kvd, v + (size_t)g_pos0 * kvd);
    size_t qn = (size_t)g_n * g_heads * g_hd;
    float *q = to_dev(b, g_x, qn), *o = b->alloc(b, qn, &err);
    b->attention(b, o, q, &kv, layer, g_heads, g_kvh, g_hd);
    b->to_host(b, out, o, qn);
    b->release(b, q);
    b->release(b, o);
    b->release(b, k);
    b->release(b, v);
    b->release(b, jd);
    free(junk);
    free(table);
    free(other);
    b->kv_mem_free(b, &kv);
}

/* Exact attention of g_x over K/V (double). */
static void attn_ref(double *ref, const float *k, const float *v) {
    int kvd = g_kvh * g_hd;
    double *sc = malloc(sizeof(double) * (size_t)(g_pos0 + g_n));
    for (int i = 0; i < g_n; i++)
        for (int h = 0; h < g_heads; h++) {
            int kh = h / (g_heads / g_kvh), np = g_pos0 + i + 1;
            double mx = -1e300, sum = 0;
            for (int t = 0; t < np; t++) {
                double s = 0;
                for (int d = 0; d < g_hd; d++)
                    s += (double)g_x[((size_t)i * g_heads + h) * g_hd + d] * k[(size_t)t * kvd + kh * g_hd + d];
                sc[t] = s / sqrt(g_hd);
                if (sc[t] > mx) mx = sc[t];
            }
            for (int t = 0; t < np; t++) sum += (sc[t] = exp(sc[t] - mx));
            for (int d = 0; d < g_hd; d++) {
                double a = 0;
                for (int t = 0; t < np; t++) a += sc[t] * v[(size_t)t * kvd + kh * g_hd + d];
                ref[((size_t)i * g_heads + h) * g_hd + d] = a / sum;
            }
        }
    free(sc);
}

/* F32 and F16 caches. An F16 cache must equal the exact attention over K/V rounded to half (storage is
 * the only difference), at the F32 tolerance; and it stays within the rounding's bound of the exact F32
 * result: each K element moves by at most 2^-11 relative, so a score moves by at most
 * ds = 2^-11 * sum|q||k| / sqrt(hd), each softmax weight by a factor within e^(+-2 ds), and the output by at
 * most max|v| * (e^(2 ds) - 1) plus V's own rounding, 2^-11 max|v|. */
static void test_attention(void) {
    static const int cfg[][5] = {/* n, heads, kv heads, head_dim, pos0 */
                                 {1, 4, 4, 16, 0}, {5, 4, 2, 16, 3}, {3, 6, 2, 12, 200}, {9, 2, 1, 64, 1},
                                 {2, 8, 8, 7, 300}, {4, 4, 1, 32, 129}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof *cfg; ci++) {
        g_n = cfg[ci][0];
        g_heads = cfg[ci][1];
        g_kvh = cfg[ci][2];
        g_hd = cfg[ci][3];
        g_pos0 = cfg[ci][4];
        int kvd = g_kvh * g_hd, total = g_pos0 + g_n;
        size_t qn = (size_t)g_n * g_heads * g_hd, kn = (size_t)total * kvd;
        g_x = malloc(qn * sizeof(float));
        g_k = malloc(sizeof(float) * kn);
        g_v = malloc(sizeof(float) * kn);
        float *kh = malloc(sizeof(float) * kn), *vh = malloc(sizeof(float) * kn);
        double *ref = malloc(qn * sizeof(double)), *ref16 = malloc(qn * sizeof(double));
        for (size_t i = 0; i < qn; i++) g_x[i] = frand() * 2;
        for (size_t i = 0; i < kn; i++) {
            g_k[i] = frand() * 2;
            g_v[i] = frand();
            kh[i] = sd_fp16_to_fp32(sd_fp32_to_fp16(g_k[i]));
            vh[i] = sd_fp16_to_fp32(sd_fp32_to_fp16(g_v[i]));
        }
        attn_ref(ref, g_k, g_v);
        attn_ref(ref16, kh, vh);
        g_kv_type = SD_F32;
        check_op("attention f32", op_attention, qn, ref, 1e-4, 1e-5);
        g_kv_type = SD_F16;
        check_op("attention f16", op_attention, qn, ref16, 1e-4, 1e-5);
        double qk = 0, vmax = 0; /* the bound above */
        for (size_t i = 0; i < kn; i++) vmax = fmax(vmax, fabs(g_v[i]));
        for (int i = 0; i < g_n * g_heads; i++) {
            double s = 0;
            for (int d = 0; d < g_hd; d++) s += fabs(g_x[(size_t)i * g_hd + d]) * 2.0; /* |k| <= 2 */
            qk = fmax(qk, s);
        }
        double ds = ldexp(qk, -11) / sqrt(g_hd), bound = vmax * (expm1(2 * ds) + ldexp(1, -11)) + 1e-5;
        check_op("attention f16 vs f32", op_attention, qn, ref, 0, bound);
        free(ref);
        free(ref16);
        free(kh);
        free(vh);
        free(g_x);
        free(g_k);
        free(g_v);
    }
}

static void op_embed(sd_backend *b, float *out) {
    sd_tensor t = g_t;
    b->upload_weight(b, &t, NULL);
    float *o = b->alloc(b, (size_t)7 * t.cols, NULL);
    b->embed(b, o, &t, g_ids, 7);
    b->to_host(b, out, o, (size_t)7 * t.cols);
    b->release(b, o);
}

static void test_embed(void) {
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        int64_t rows = 11, cols = 96;
        float *exact = malloc(sizeof(float) * (size_t)(rows * cols));
        void *w = make_weights(types[ti], rows, cols, exact);
        g_t = (sd_tensor){.type = types[ti], .cols = cols, .rows = rows, .host = w, .name = "embd"};
        double *ref = malloc(sizeof(double) * 7 * (size_t)cols);
        for (int i = 0; i < 7; i++) {
            g_ids[i] = (int32_t)(rand_u32() % rows);
            for (int64_t c = 0; c < cols; c++) ref[i * cols + c] = exact[g_ids[i] * cols + c];
        }
        check_op("embed", op_embed, 7 * (size_t)cols, ref, 0, 0);
        free(ref);
        free(w);
        free(exact);
    }
}

static size_t g_count;
static void op_swiglu_add(sd_backend *b, float *out) {
    float *g = to_dev(b, g_x, g_count), *u = to_dev(b, g_y, g_count), *o = b->alloc(b, 2 * g_count, NULL);
    b->swiglu(b, o, g, u, g_count);
    b->from_host(b, o + g_count, g_y, g_count);
    b->add(b, o + g_count, g, g_count);
    b->swiglu(b, g, g, u, g_count); /* in place (out == gate) equals the out-of-place result */
    b->add(b, g, o, g_count);       /* g = 2 * swiglu */
    b->to_host(b, out, o, 2 * g_count);
    float *h = malloc(g_count * sizeof(float));
    b->to_host(b, h, g, g_count);
    for (size_t i = 0; i < g_count; i++)
        if (h[i] != 2 * out[i]) out[i] = NAN;
    free(h);
    b->release(b, g);
    b->release(b, u);
    b->release(b, o);
}

static void test_swiglu_add(void) {
    static const size_t counts[] = {1, 13, 100000};
    for (size_t ci = 0; ci < 3; ci++) {
        g_count = counts[ci];
        g_x = malloc(g_count * sizeof(float));
        g_y = malloc(g_count * sizeof(float));
        double *ref = malloc(2 * g_count * sizeof(double));
        for (size_t i = 0; i < g_count; i++) {
            g_x[i] = frand() * 8;
            g_y[i] = frand();
            ref[i] = g_x[i] / (1 + exp(-(double)g_x[i])) * g_y[i];
            ref[g_count + i] = (double)g_y[i] + g_x[i];
        }
        check_op("swiglu/add", op_swiglu_add, 2 * g_count, ref, 1e-6, 1e-7);
        free(ref);
        free(g_x);
        free(g_y);
    }
}

static void op_add_bias(sd_backend *b, float *out) {
    size_t n = (size_t)g_n * g_width;
    float *x = to_dev(b, g_x, n);
    sd_tensor t = {.type = SD_F32, .cols = g_width, .rows = 1, .host = g_w, .name = "bias"};
    b->upload_weight(b, &t, NULL);
    b->add_bias(b, x, &t, g_n);
    b->to_host(b, out, x, n);
    b->release(b, x);
}

static void test_add_bias(void) {
    g_n = 5;
    g_width = 77;
    size_t n = (size_t)g_n * g_width;
    g_x = malloc(n * sizeof(float));
    g_w = malloc((size_t)g_width * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    for (int i = 0; i < g_width; i++) g_w[i] = frand();
    for (size_t i = 0; i < n; i++) {
        g_x[i] = frand();
        ref[i] = (double)g_x[i] + g_w[i % g_width];
    }
    check_op("add_bias", op_add_bias, n, ref, 1e-7, 1e-7);
    free(ref);
    free(g_x);
    free(g_w);
}

static void bump(void *v, int64_t b, int64_t e) {
    _Atomic int *cnt = v;
    for (int64_t i = b; i < e; i++) cnt[i]++;
}

static void test_pool_for(void) {
    for (int th = 1; th <= 4; th++) {
        sd_pool *p;
        REQUIRE(sd_pool_new(th, &p, NULL) == 0);
        CHECK_EQ_INT(sd_pool_size(p), th);
        for (int64_t n = 0; n < 300; n += 1 + n / 3)
            for (int64_t g = 1; g < 40; g += 7) {
                _Atomic int *cnt = calloc((size_t)n + 1, sizeof *cnt);
                for (int rep = 0; rep < 3; rep++) sd_pool_for(p, n, g, bump, (void *)cnt);
                for (int64_t i = 0; i < n; i++) CHECKF(cnt[i] == 3, "threads %d n %lld grain %lld item %lld: %d", th, (long long)n, (long long)g, (long long)i, (int)cnt[i]);
                free((void *)cnt);
            }
        sd_pool_free(p);
    }
}

static void count_ith(void *v, int ith, int nth) {
    _Atomic int *cnt = v;
    cnt[ith]++;
    cnt[nth]++;
}

/* Many tiny jobs on more threads than cores: workers wake late, find jobs finished and new ones
 * started; every chunk must still run exactly once per job and nothing may touch a finished job. */
static void test_pool_stress(void) {
    sd_pool *p;
    REQUIRE(sd_pool_new(6, &p, NULL) == 0);
    enum { JOBS = 20000, N = 37 };
    _Atomic int *cnt = calloc(N, sizeof *cnt), *ith = calloc(7, sizeof *ith);
    REQUIRE(cnt && ith);
    for (int j = 0; j < JOBS; j++) {
        if (j % 5 == 4) sd_pool_run(p, count_ith, (void *)ith);
        else sd_pool_for(p, N, 1 + j % 4, bump, (void *)cnt);
    }
    int for_jobs = JOBS - JOBS / 5, run_jobs = JOBS / 5, bad = 0;
    for (int i = 0; i < N; i++) bad += cnt[i] != for_jobs;
    for (int i = 0; i < 6; i++) bad += ith[i] != run_jobs;
    CHECKF(bad == 0 && ith[6] == 6 * run_jobs, "%d counters off (item 0: %d of %d; ith 0: %d of %d)", bad,
           (int)cnt[0], for_jobs, (int)ith[0], run_jobs);
    free((void *)cnt);
    free((void *)ith);
    sd_pool_free(p);
}

static void test_upload_rejects(void) {
    sd_backend *b = open_cpu(1, SD_SIMD_SCALAR);
    REQUIRE(b);
    uint8_t buf[64] = {0};
    sd_err err = {{0}};
    sd_tensor t = {.type = (sd_dtype)16 /* iq2_xxs */, .cols = 256, .rows = 1, .host = buf, .name = "blk.0.attn_q.weight"};
    CHECK(b->upload_weight(b, &t, &err) != 0);
    CHECK(strstr(err.msg, "blk.0.attn_q.weight") && strstr(err.msg, "iq2_xxs"));
    t = (sd_tensor){.type = SD_Q4_K, .cols = 128, .rows = 1, .host = buf, .name = "short"};
    CHECK(b->upload_weight(b, &t, &err) != 0); /* 128 is not a whole Q4_K super-block */
    CHECK(strstr(err.msg, "short") != NULL);
    t = (sd_tensor){.type = SD_Q8_0, .cols = 33, .rows = 1, .host = buf, .name = "odd"};
    CHECK(b->upload_weight(b, &t, &err) != 0);
    CHECK(strstr(err.msg, "odd") != NULL);
    b->destroy(b);
}

/* Backend memory is zero-filled, 64-byte aligned and counted, small or large (large buffers are mappings
 * that the kernel zeroes page by page on first write), and a released block is counted off again. */
static void test_alloc_zeroed(void) {
    sd_backend *b = open_cpu(1, SD_SIMD_SCALAR);
    REQUIRE(b);
    sd_err err = {{0}};
    size_t work0 = 0, work = 0, sizes[] = {1, 100, 65535, 65536, (size_t)3 << 20};
    b->mem_usage(b, NULL, NULL, &work0);
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            float *p = b->alloc(b, sizes[i], &err);
            REQUIRE(p);
            CHECK(((uintptr_t)p & 63) == 0);
            size_t nonzero = 0;
            for (size_t k = 0; k < sizes[i]; k++) nonzero += p[k] != 0.0f;
            CHECK_EQ_INT(nonzero, 0);
            b->mem_usage(b, NULL, NULL, &work);
            CHECK(work >= work0 + sizes[i] * sizeof(float));
            for (size_t k = 0; k < sizes[i]; k++) p[k] = 1.5f; /* dirty: the next round must see zeros again */
            b->release(b, p);
            b->mem_usage(b, NULL, NULL, &work);
            CHECK_EQ_INT(work, work0);
        }
    b->destroy(b);
}

static void test_backend_open(void) {
    sd_backend *b = NULL;
    sd_err err = {{0}};
    char why[256];
    REQUIRE(sd_backend_open("cpu", 2, &b, why, sizeof why, &err) == 0);
    CHECK_STR_EQ(b->name, "cpu");
    CHECK_EQ_INT(b->n_threads, 2);
    b->destroy(b);
    REQUIRE(sd_backend_open("auto", 1, &b, why, sizeof why, &err) == 0);
    if (strcmp(b->name, "cpu") == 0) CHECK(why[0] != 0); /* says why it is not CUDA */
    b->destroy(b);
    CHECK(sd_backend_open("bogus", 1, &b, why, sizeof why, &err) != 0 && strstr(err.msg, "bogus"));
    CHECK(b == NULL);
    CHECK(sd_backend_open("cuda:x", 1, &b, why, sizeof why, &err) != 0);
#ifndef SD_HAVE_CUDA
    CHECK(sd_backend_open("cuda", 1, &b, why, sizeof why, &err) != 0 && strstr(err.msg, "without CUDA"));
#endif
    REQUIRE(sd_backend_open("cpu", 0, &b, why, sizeof why, &err) == 0);
    CHECK_EQ_INT(b->n_threads, sd_online_cpus());
    b->destroy(b);
}

static void test_dtype_table(void) {
    CHECK_EQ_INT(sd_dtype_row_bytes(SD_Q8_0, 64), 68);
    CHECK_EQ_INT(sd_dtype_row_bytes(SD_F16, 7), 14);
    CHECK_EQ_INT(sd_dtype_block(SD_Q4_K), 256);
    CHECK(sd_dtype_name(99) == NULL);
    CHECK(sd_dtype_supported(SD_BF16) && !sd_dtype_supported(SD_Q4_0));
    CHECK(sd_dtype_loadable(SD_Q4_0) && sd_dtype_loadable(SD_IQ4_XS) && !sd_dtype_loadable(16));
    CHECK_EQ_INT(sd_dtype_by_name("Q4_K"), SD_Q4_K);
    CHECK_EQ_INT(sd_dtype_by_name("iq4_nl"), SD_IQ4_NL);
    CHECK_EQ_INT(sd_dtype_by_name("q4_k_m"), -1);
    /* the block geometry the kernels use (quant_k.h) is the table's */
    for (int t = 0; t < 64; t++)
        if (sd_dtype_loadable(t) && sd_dtype_block(t) > 1) {
            CHECK_EQ_INT(sd_quant_block(t), sd_dtype_block(t));
            CHECK_EQ_INT((size_t)sd_quant_block_bytes(t), sd_dtype_block_bytes(t));
        }
}

int main(void) {
    RUN(test_fp16_all_values);
    RUN(test_fp16_rounding);
    RUN(test_bf16);
    RUN(test_q8_0);
    RUN(test_q8_0_non_finite);
    RUN(test_dtype_table);
    RUN(test_pool_for);
    RUN(test_pool_stress);
    RUN(test_backend_open);
    RUN(test_upload_rejects);
    RUN(test_alloc_zeroed);
    RUN(test_matmul_all_levels);
    RUN(test_matmul_quant_levels);
    RUN(test_matmul_large_threads);
    RUN(test_matmul_n_consistent);
    RUN(test_matmul_blocked_paths);
    RUN(test_quant_act_levels);
    RUN(test_rmsnorm);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_embed);
    RUN(test_swiglu_add);
    RUN(test_add_bias);
    return TEST_DONE();
}
