/* `specd quantize` against llama.cpp's llama-quantize (../shared/quant): base-f32.gguf quantized to every
 * target gives each tensor the type llama.cpp chose (the mix rules), the bytes of llama.cpp's files for
 * Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 tensors, and for the K-quants and IQ4 an RMS error against the F32
 * source at most 1.02x that of llama.cpp's tensor. Then the command itself: usage errors, --keep, the
 * summary, and the output loading and running. */
#include <math.h>
#include <stdint.h>
#include <sys/wait.h>

#include "kernels/backend.h"
#include "kernels/quant_k.h"
#include "kernels/quantize.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/quantize_model.h"
#include "tests/test.h"
#include "tests/test_util.h"

static const char *const k_targets[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k_m",
                                        "q4_k_m", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs", "f16"};

static bool byte_exact_type(int t) { return t == SD_Q4_0 || t == SD_Q4_1 || t == SD_Q5_0 || t == SD_Q5_1 || t == SD_Q8_0; }

/* RMS of dequant(tensor) - source. */
static double rmse(const gguf_tensor_info *q, const float *src) {
    int64_t n = q->ne[0] * q->ne[1];
    float *d = malloc((size_t)n * sizeof *d);
    sd_dequant_row((int)q->type, q->data, d, n);
    double se = 0;
    for (int64_t i = 0; i < n; i++) se += ((double)d[i] - src[i]) * ((double)d[i] - src[i]);
    free(d);
    return sqrt(se / (double)n);
}

static void compare_file(const char *target, const gguf_file *base, const gguf_file *ref, const gguf_file *mine) {
    CHECK_EQ_INT(mine->n_tensors, ref->n_tensors);
    int exact = 0, rms = 0;
    double worst = 0;
    for (uint64_t i = 0; i < ref->n_tensors; i++) {
        const gguf_tensor_info *r = &ref->tensors[i], *m = gguf_find_tensor(mine, r->name), *s = gguf_find_tensor(base, r->name);
        REQUIRE(m && s);
        CHECKF(m->type == r->type, "%s %s: type %s, llama.cpp chose %s", target, r->name, sd_dtype_name((int)m->type),
               sd_dtype_name((int)r->type));
        if (m->type != r->type || r->type == SD_F32) continue;
        if (byte_exact_type((int)r->type) || r->type == SD_F16) {
            CHECKF(m->nbytes == r->nbytes && memcmp(m->data, r->data, r->nbytes) == 0, "%s %s (%s): bytes differ",
                   target, r->name, sd_dtype_name((int)r->type));
            exact++;
        } else {
            double a = rmse(m, s->data), b = rmse(r, s->data);
            CHECKF(a <= 1.02 * b, "%s %s (%s): RMSE %.6g > 1.02 x llama.cpp's %.6g", target, r->name,
                   sd_dtype_name((int)r->type), a, b);
            worst = fmax(worst, a / b);
            rms++;
        }
    }
    printf("# %-7s %2d tensors byte-equal, %2d by RMSE (worst ratio to llama.cpp %.4f)\n", target, exact, rms, worst);
}

static void test_quantize_vs_llama_cpp(void) {
    char bp[1024]; /* a copy: shared_path's buffers are reused */
    if (!shared_path("quant/base-f32.gguf")) SKIP("../shared/quant/base-f32.gguf not found");
    snprintf(bp, sizeof bp, "%s", shared_path("quant/base-f32.gguf"));
    gguf_file *base = NULL;
    sd_err err = {{0}};
    REQUIRE(gguf_open(bp, &base, &err) == 0);
    for (size_t i = 0; i < sizeof k_targets / sizeof *k_targets; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "quant/base-%s.gguf", k_targets[i]);
        const char *out = tmp_path("q.gguf");
        gguf_file *ref = NULL, *mine = NULL;
        sd_quant_stats st;
        const sd_qtarget *t = sd_qtarget_find(k_targets[i]);
        REQUIRE(t && shared_path(rel) && gguf_open(shared_path(rel), &ref, &err) == 0);
        CHECKF(sd_quantize_file(bp, out, t, NULL, &st, &err) == 0, "%s: %s", k_targets[i], err.msg);
        if (gguf_open(out, &mine, &err) == 0) {
            compare_file(k_targets[i], base, ref, mine);
            uint32_t ft = 0, qv = 0;
            CHECK(gguf_get_u32(mine, "general.file_type", &ft, &err) == 0 && (int)ft == t->ftype);
            CHECK(gguf_get_u32(mine, "general.quantization_version", &qv, &err) == 0 && qv == 2);
            CHECK(gguf_find(mine, "tokenizer.ggml.tokens") != NULL);
            gguf_close(mine);
        }
        gguf_close(ref);
    }
    gguf_close(base);
}

/* Every quantizer on rows of every kind (zeros, constants, one spike, mixed magnitudes): the decoded row
 * is close to the source (relative RMSE under the type's bound), never NaN. */
static void test_quantize_rows(void) {
    static const int types[] = {SD_Q4_0, SD_Q4_1, SD_Q5_0, SD_Q5_1, SD_Q8_0, SD_Q2_K, SD_Q3_K,
                                SD_Q4_K, SD_Q5_K, SD_Q6_K, SD_IQ4_NL, SD_IQ4_XS};
    static const double bound[] = {0.15, 0.1, 0.07, 0.05, 0.01, 0.5, 0.3, 0.1, 0.05, 0.03, 0.15, 0.15};
    float x[512], y[512];
    uint8_t buf[1024];
    for (int kind = 0; kind < 4; kind++) {
        for (int i = 0; i < 512; i++) {
            uint32_t h = (uint32_t)i * 2654435761u;
            float g = ((float)(h >> 8) / 16777216.0f - 0.5f) + ((float)((h * 7u) >> 8) / 16777216.0f - 0.5f);
            x[i] = kind == 0 ? 0 : kind == 1 ? 0.25f : kind == 2 ? (i == 77 ? 5.0f : g * 1e-3f) : g * (float)(1 + i % 7);
        }
        for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
            REQUIRE(sd_quantize_row(types[t], x, buf, 512) == 0);
            sd_dequant_row(types[t], buf, y, 512);
            double se = 0, ss = 0;
            for (int i = 0; i < 512; i++) {
                CHECK(y[i] == y[i]);
                se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                ss += (double)x[i] * x[i];
            }
            if (kind == 0) CHECKF(se == 0, "%s: zeros decode to RMS %g", sd_dtype_name(types[t]), sqrt(se / 512));
            else if (kind != 2) /* one spike among tiny values: the block of the spike decodes the tiny ones as 0 */
                CHECKF(sqrt(se / ss) <= bound[t], "%s kind %d: relative RMSE %g", sd_dtype_name(types[t]), kind, sqrt(se / ss));
        }
    }
    CHECK(sd_quantize_row(SD_Q4_K, x, buf, 100) == -1); /* not whole blocks */
    CHECK(sd_quantize_row(16, x, buf, 256) == -1);      /* iq2_xxs: not produced */
}

/* llama.cpp's 70B rule: a llama of 80 layers with grouped KV heads gets Q5_K for attn_v wherever its mix
 * would give Q3_K or Q4_K (Q6_K layers keep Q6_K); any other model keeps the mix's choice. */
static void test_quantize_70b_attn_v(void) {
    static const struct { const char *target; int plain_first, plain_mid, big_first, big_mid; } cases[] = {
        {"q4_k_m", SD_Q6_K, SD_Q4_K, SD_Q6_K, SD_Q5_K},
        {"q3_k_m", SD_Q5_K, SD_Q4_K, SD_Q5_K, SD_Q5_K},
        {"q2_k", SD_Q4_K, SD_Q4_K, SD_Q5_K, SD_Q5_K},
        {"q5_k_m", SD_Q6_K, SD_Q5_K, SD_Q6_K, SD_Q5_K},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const sd_qtarget *t = sd_qtarget_find(cases[c].target);
        REQUIRE(t);
        for (int big = 0; big <= 1; big++) {
            sd_qrule_state st = {.n_attn_v = 80, .n_ffn_down = 80, .n_gqa = 8, .is_70b = big};
            int got[80];
            for (int i = 0; i < 80; i++)
                got[i] = sd_quant_tensor_type(t, &st, "blk.N.attn_v.weight", 2, 8192, SD_F16);
            int want_first = big ? cases[c].big_first : cases[c].plain_first;
            int want_mid = big ? cases[c].big_mid : cases[c].plain_mid;
            /* layer 0 is in the first eighth (more bits in the _M mixes); layer 11 = 10 + 1 is not */
            CHECKF(got[0] == want_first, "%s 70b=%d layer 0: %s, want %s", cases[c].target, big,
                   sd_dtype_name(got[0]), sd_dtype_name(want_first));
            CHECKF(got[11] == want_mid, "%s 70b=%d layer 11: %s, want %s", cases[c].target, big,
                   sd_dtype_name(got[11]), sd_dtype_name(want_mid));
        }
    }
}

static void test_quantize_command(void) {
    char bin[512], out[8192], args[1536];
    snprintf(bin, sizeof bin, "%s/specd", getenv("BUILD") ? getenv("BUILD") : "build");
    if (access(bin, X_OK)) SKIP("specd binary not built");
    const char *src = shared_path("quant/base-f32.gguf");
    if (!src) SKIP("../shared/quant/base-f32.gguf not found");
    CHECK_EQ_INT(run_specd_out("quantize", out, sizeof out), 2);
    CHECK(strstr(out, "usage: specd quantize") != NULL);
    snprintf(args, sizeof args, "quantize '%s' '%s' q4_k_x", src, tmp_path("x.gguf"));
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 2);
    CHECK(strstr(out, "unknown type 'q4_k_x'") && strstr(out, "q4_k_m"));
    snprintf(args, sizeof args, "quantize '%s' '%s' q4_0", tmp_path("missing.gguf"), tmp_path("x.gguf"));
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 1);
    CHECK(strstr(out, "missing.gguf") != NULL);
    /* --keep: the FFN down projections stay F32; the summary counts types and bytes */
    const char *q = tmp_path("keep.gguf");
    snprintf(args, sizeof args, "quantize '%s' '%s' Q4_K_M --keep ffn_down -q", src, q);
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 0);
    CHECKF(strstr(out, "tensor data: 7.35 MB -> 2.43 MB") && strstr(out, "f32 7 q4_K 12 q6_K 2"), "%s", out);
    gguf_file *f = NULL;
    sd_err err = {{0}};
    REQUIRE(gguf_open(q, &f, &err) == 0);
    CHECK(gguf_find_tensor(f, "blk.1.ffn_down.weight")->type == SD_F32);
    CHECK(gguf_find_tensor(f, "blk.1.ffn_up.weight")->type == SD_Q4_K);
    gguf_close(f);
    /* the output runs, and the progress bar went to stderr */
    snprintf(args, sizeof args, "quantize '%s' '%s' iq4_xs", src, q);
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 0);
    CHECK(strstr(out, "21/21") != NULL);
    sd_backend *be = NULL;
    sd_model *m = NULL;
    REQUIRE(sd_backend_cpu_new(1, &be, &err) == 0);
    CHECKF(sd_model_load(q, NULL, be, &m, &err) == 0, "%s", err.msg);
    sd_model_free(m);
    be->destroy(be);
}

int main(void) {
    if (make_tmpdir("specd_test_quantize_")) return 1;
    RUN(test_quantize_rows);
    RUN(test_quantize_vs_llama_cpp);
    RUN(test_quantize_70b_attn_v);
    RUN(test_quantize_command);
    remove_tmpdir();
    return TEST_DONE();
}
