/* Quantized GGUF types against llama.cpp's own files (../shared/quant): base-f32.gguf and the same model
 * quantized by llama-quantize to every supported type, each with float64 reference logits computed on
 * the weights as gguf-py's numpy code dequantizes them.
 *  - dequantization: every quantized tensor of every file, decoded by kernels/quant_k.h, is close to the
 *    F32 source tensor (a per-type bound on the relative RMS error: a decoder with a wrong bit order or
 *    scale layout is off by the tensor's own magnitude), and for the legacy types each element is within
 *    half a quantization step of its source;
 *  - forward: logits after every prompt token within a tolerance of the reference (LOGIT_TOL for F16, or
 *    for the quantized types' 8-bit activations Q8_ACT_TOL_FRAC), at the scalar and the best SIMD level, and the greedy continuation
 *    equal wherever the reference's top-two margin exceeds twice that tolerance. */
#include <math.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/quant_k.h"
#include "model/gguf.h"
#include "model/model.h"
#include "tests/test.h"

static const char *const k_files[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k_m",
                                      "q4_k_m", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs", "f16"};
#define N_FILES (sizeof k_files / sizeof k_files[0])

/* Largest relative RMS error (RMS(deq - src) / RMS(src)) a correct decoder shows on these Gaussian-like
 * weights: about the type's step size over the weights' spread, with a margin of ~1.5x over what
 * llama-quantize's files measure. A wrong decoder lands near 1 or above. */
static double rel_rmse_bound(int type) {
    switch (type) {
    case SD_F16: return 1e-3;
    case SD_Q8_0: return 0.01;
    case SD_Q6_K: return 0.03;
    case SD_Q5_0: case SD_Q5_1: case SD_Q5_K: return 0.06;
    case SD_Q4_0: case SD_Q4_1: case SD_Q4_K: case SD_IQ4_NL: case SD_IQ4_XS: return 0.12;
    case SD_Q3_K: return 0.25;
    case SD_Q2_K: return 0.45;
    default: return 0;
    }
}

static gguf_file *open_shared(const char *name) {
    char rel[128];
    snprintf(rel, sizeof rel, "quant/base-%s.gguf", name);
    const char *p = shared_path(rel);
    gguf_file *f = NULL;
    sd_err err = {{0}};
    if (p && gguf_open(p, &f, &err)) fprintf(stderr, "  %s: %s\n", p, err.msg);
    return f;
}

/* Q4_0 / Q5_0 / Q8_0 (symmetric levels -qmax*d .. qpos*d): each element within half a step of its source,
 * plus the F16 rounding of the scale times the level (levels are chosen with the unrounded scale), or,
 * beyond the last positive level, clamped to it. */
static int legacy_elem_violations(int type, const uint8_t *blk, const float *src, const float *deq) {
    uint16_t dh;
    memcpy(&dh, blk, 2);
    double d = fabs((double)sd_fp16_to_fp32(dh));
    double qmax = type == SD_Q4_0 ? 8 : type == SD_Q5_0 ? 16 : 127, qpos = type == SD_Q8_0 ? 127 : qmax - 1;
    double slack = qmax * d * ldexp(1.01, -11) + 1e-9;
    int bad = 0;
    for (int i = 0; i < 32; i++) {
        double a = fabs(src[i]), allowed = 0.5 * d + slack;
        if (a > (qpos + 0.5) * d) allowed = a - qpos * d + slack;
        if (fabs((double)deq[i] - src[i]) > allowed) bad++;
    }
    return bad;
}

/* Returns the tensor's relative RMS error. */
static double check_tensor(const char *file, const gguf_tensor_info *q, const gguf_tensor_info *src) {
    int64_t n = q->ne[0] * q->ne[1];
    float *deq = malloc((size_t)n * sizeof *deq);
    const float *x = src->data;
    sd_dequant_row((int)q->type, q->data, deq, n);
    double se = 0, ss = 0;
    int legacy_bad = 0;
    bool legacy = q->type == SD_Q4_0 || q->type == SD_Q5_0 || q->type == SD_Q8_0;
    for (int64_t i = 0; i < n; i++) {
        se += ((double)deq[i] - x[i]) * ((double)deq[i] - x[i]);
        ss += (double)x[i] * x[i];
    }
    if (legacy)
        for (int64_t b = 0; b < n / 32; b++)
            legacy_bad += legacy_elem_violations((int)q->type, (const uint8_t *)q->data + b * sd_dtype_block_bytes((int)q->type),
                                                 x + b * 32, deq + b * 32);
    double rel = sqrt(se / ss);
    CHECKF(rel <= rel_rmse_bound((int)q->type), "%s %s (%s): relative RMSE %.4g > %.4g", file, q->name,
           sd_dtype_name((int)q->type), rel, rel_rmse_bound((int)q->type));
    CHECKF(legacy_bad == 0, "%s %s: %d elements more than half a step from the source", file, q->name, legacy_bad);
    free(deq);
    return rel;
}

static void test_dequant_vs_source(void) {
    gguf_file *base = open_shared("f32");
    if (!base) SKIP("../shared/quant/base-f32.gguf not found");
    int checked = 0;
    for (size_t fi = 0; fi < N_FILES; fi++) {
        gguf_file *f = open_shared(k_files[fi]);
        REQUIRE(f);
        double worst = 0;
        for (uint64_t t = 0; t < f->n_tensors; t++) {
            const gguf_tensor_info *q = &f->tensors[t], *src = gguf_find_tensor(base, q->name);
            REQUIRE(src && src->type == SD_F32 && src->ne[0] == q->ne[0] && src->ne[1] == q->ne[1]);
            if (q->type == SD_F32) continue;
            CHECKF(sd_dtype_loadable((int)q->type), "%s: %s", q->name, sd_dtype_name((int)q->type));
            worst = fmax(worst, check_tensor(k_files[fi], q, src));
            checked++;
        }
        printf("# %-7s worst relative RMSE of a tensor %.4f\n", k_files[fi], worst);
        gguf_close(f);
    }
    gguf_close(base);
    printf("# %d quantized tensors decoded\n", checked);
    CHECK(checked >= 12 * 16);
}

/* ---- the reference file: a few number arrays out of a small JSON document ---- */

/* Numbers of the array after the occurrence-th `"key": [` in text; returns the count (at most cap). */
static int json_array(const char *text, const char *key, int occurrence, double *out, int cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": [", key);
    const char *p = text;
    for (int i = 0; i <= occurrence; i++) {
        p = strstr(p, pat);
        if (!p) return -1;
        p += strlen(pat);
    }
    int n = 0;
    while (n < cap) {
        char *end;
        double v = strtod(p, &end);
        if (end == p) break;
        out[n++] = v;
        p = end;
        while (*p == ' ' || *p == '\n' || *p == ',') p++;
    }
    return n;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = 0;
    if (len) *len = got;
    return buf;
}

/* Logit tolerance. The reference is float64 on the same dequantized weights; with F16 weights activations
 * stay float32 (no activation quantization), so the differences are float32 rounding: dot products of up to
 * 768 terms (relative error ~ sqrt(768) * 2^-24 ~ 2e-6 of the sum of |terms|), compounded through 2 layers
 * of norms, attention and residual adds. On these random-weight models the sums of |terms| of a logit are
 * ~50x the logit scale (~3), so the expected error is ~1e-4 to 1e-3; 5e-3 leaves a margin of 5-50x while
 * being 100x below a near-tie margin that matters (a misdecoded tensor moves logits by O(1)). */
#define LOGIT_TOL 5e-3
/* Quantized matrices (Q8_0 and every other quantized type, as llama.cpp does) multiply 8-bit activations
 * (per block of 32: step amax/127, so each input carries a relative RMS error of ~1/(sqrt(12) * 127 / 2.5)
 * ~ 0.6%). Fifteen such products in series (seven per
 * layer and the classifier), each error amplified by the random weights of the residual stream, put a
 * few percent of the logits' RMS into a logit; the tolerance is 10% of the reference logits' RMS (0.48
 * here; measured 0.2-0.27 for every type). Decoding errors are caught before this by test_dequant_vs_source
 * and tests/test_quant_kern.c, which compare each tensor and each kernel exactly. */
#define Q8_ACT_TOL_FRAC 0.1
typedef struct ref_case {
    int n_prompt[2], n_greedy[2];
    int32_t prompt[2][64], greedy[2][64];
    double margin[2][64];
    float *logits; /* rows = n_prompt[0] + n_prompt[1], 512 columns */
} ref_case;

static bool load_ref(const char *name, ref_case *rc) {
    char rel[128];
    snprintf(rel, sizeof rel, "quant/base-%s.ref.json", name);
    char *json = slurp(shared_path(rel), NULL);
    snprintf(rel, sizeof rel, "quant/base-%s.logits.f32", name);
    size_t ln = 0;
    char *lg = slurp(shared_path(rel), &ln);
    if (!json || !lg) {
        free(json);
        free(lg);
        return false;
    }
    double v[64];
    for (int p = 0; p < 2; p++) {
        rc->n_prompt[p] = json_array(json, "prompt_ids", p, v, 64);
        for (int i = 0; i < rc->n_prompt[p]; i++) rc->prompt[p][i] = (int32_t)v[i];
        rc->n_greedy[p] = json_array(json, "greedy_ids", p, v, 64);
        for (int i = 0; i < rc->n_greedy[p]; i++) rc->greedy[p][i] = (int32_t)v[i];
        int nm = json_array(json, "margins", p, rc->margin[p], 64);
        if (nm != rc->n_greedy[p]) rc->n_greedy[p] = -1;
    }
    free(json);
    rc->logits = (float *)lg;
    return rc->n_prompt[0] > 0 && rc->n_prompt[1] > 0 && rc->n_greedy[0] > 0 && rc->n_greedy[1] > 0 &&
           ln == (size_t)(rc->n_prompt[0] + rc->n_prompt[1]) * 512 * sizeof(float);
}

/* Max |logit - reference| over the prompt rows, and the greedy continuation checked step by step. */
static void check_model(const char *name, sd_simd level, const ref_case *rc) {
    char rel[128];
    snprintf(rel, sizeof rel, "quant/base-%s.gguf", name);
    sd_backend *be = NULL;
    sd_model *m = NULL;
    sd_seq *s = NULL;
    sd_err err = {{0}};
    REQUIRE(sd_backend_cpu_new_simd(2, level, &be, &err) == 0);
    if (sd_model_load(shared_path(rel), NULL, be, &m, &err) || sd_seq_new(m, 64, 0, &s, &err)) {
        CHECKF(0, "%s: %s", name, err.msg);
        sd_model_free(m);
        be->destroy(be);
        return;
    }
    double worst = 0, tol = LOGIT_TOL;
    const float *ref = rc->logits;
    if (sd_quant_block(m->layers[0].wq.type)) { /* quantized activations (every type but F16) */
        int rows = rc->n_prompt[0] + rc->n_prompt[1];
        double ss = 0;
        for (int i = 0; i < rows * 512; i++) ss += (double)ref[i] * ref[i];
        tol = Q8_ACT_TOL_FRAC * sqrt(ss / (rows * 512));
    }
    float *lg = malloc(64 * 512 * sizeof *lg);
    for (int p = 0; p < 2; p++) {
        sd_seq_truncate(s, 0);
        REQUIRE(sd_forward(s, rc->prompt[p], rc->n_prompt[p], true, lg, &err) == 0);
        for (int i = 0; i < rc->n_prompt[p] * 512; i++) worst = fmax(worst, fabs((double)lg[i] - ref[i]));
        ref += rc->n_prompt[p] * 512;
        /* greedy: equal while the reference's margins exceed 2 * LOGIT_TOL; a step inside it may flip,
         * and after a flip the continuations are different texts (nothing more to compare) */
        int32_t id;
        sd_seq_truncate(s, 0);
        REQUIRE(sd_forward_greedy(s, rc->prompt[p], rc->n_prompt[p], false, &id, &err) == 0);
        for (int t = 0; t < rc->n_greedy[p]; t++) {
            if (id != rc->greedy[p][t]) {
                CHECKF(rc->margin[p][t] <= 2 * tol, "%s %s prompt %d step %d: id %d, reference %d (margin %.4g)",
                       name, sd_simd_name(level), p, t, id, rc->greedy[p][t], rc->margin[p][t]);
                break;
            }
            if (t + 1 < rc->n_greedy[p]) REQUIRE(sd_forward_greedy(s, &id, 1, false, &id, &err) == 0);
        }
    }
    printf("# %-7s %-6s max |logit - ref| = %.3g (tolerance %.3g)\n", name, sd_simd_name(level), worst, tol);
    CHECKF(worst <= tol, "%s %s: logits differ from the reference by %.4g", name, sd_simd_name(level), worst);
    free(lg);
    sd_seq_free(s);
    sd_model_free(m);
    be->destroy(be);
}

static void test_logits_vs_reference(void) {
    if (!shared_path("quant/base-q4_0.ref.json")) SKIP("../shared/quant not found");
    for (size_t fi = 0; fi < N_FILES; fi++) {
        ref_case rc;
        REQUIRE(load_ref(k_files[fi], &rc));
        check_model(k_files[fi], SD_SIMD_SCALAR, &rc);
        if (sd_simd_detect() != SD_SIMD_SCALAR) check_model(k_files[fi], sd_simd_detect(), &rc);
        free(rc.logits);
    }
}

int main(void) {
    RUN(test_dequant_vs_source);
    RUN(test_logits_vs_reference);
    return TEST_DONE();
}
