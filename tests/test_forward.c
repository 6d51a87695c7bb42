/* Forward pass: against a plain scalar transformer written here (llama MHA/GQA, qwen2 biases, qwen3 q/k
 * norms, NeoX RoPE, F32/F16/Q8_0 weights, tied classifier), batch == token-by-token, all-logits rows ==
 * last-only, chunking, truncate-then-recompute == never computed (bitwise), the self-draft sequence, and
 * the errors (context overflow, bad token ids). Models are written with the GGUF writer into a temp dir. */
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/model.h"
#include "target/sampler.h"
#include "tests/test.h"
#include "tests/test_util.h"

/* ---- deterministic test weights ---- */
static uint64_t rng_state;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0) - 1.0);
}

static uint16_t f2h(float f) { /* truncating float -> half (only needs to be exact on the way back) */
    uint32_t x; memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, e = (x >> 23) & 0xff, m = x & 0x7fffff;
    int ne = (int)e - 127 + 15;
    if (e == 0 || ne <= 0) return (uint16_t)sign; /* flush tiny values to zero */
    if (ne >= 31) return (uint16_t)(sign | 0x7bff);
    return (uint16_t)(sign | (uint32_t)ne << 10 | m >> 13);
}

/* A test model: config, F32 reference weights (exactly what the stored type dequantizes to). */
typedef struct cfg {
    const char *arch;  /* "llama", "qwen2", "qwen3" */
    int dim, layers, heads, kv_heads, head_dim, ffn, vocab, ctx;
    int type;          /* SD_F32, SD_F16, SD_Q8_0 */
    bool tied;
} cfg;

typedef struct rlayer { float *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *qn, *kn, *ffn_norm, *wg, *wu, *wd; } rlayer;
typedef struct ref {
    cfg c;
    float *embd, *out_norm, *out;
    rlayer *L;
} ref;

/* Makes a rows×cols matrix, stores it in the writer with type t, and keeps the dequantized copy. */
static float *add_matrix(gguf_writer *w, const char *name, int rows, int cols, int t, float scale) {
    size_t n = (size_t)rows * cols;
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = frand() * scale;
    int64_t ne[2] = {cols, rows};
    if (t == SD_F32) {
        gguf_w_tensor(w, name, SD_F32, 2, ne, f);
    } else if (t == SD_F16) {
        uint16_t *h = malloc(n * 2);
        for (size_t i = 0; i < n; i++) { h[i] = f2h(f[i]); f[i] = h2f(h[i]); }
        gguf_w_tensor(w, name, SD_F16, 2, ne, h);
        free(h);
    } else {
        size_t nb = n / SD_QK8_0;
        sd_block_q8_0 *b = malloc(nb * sizeof *b);
        for (size_t k = 0; k < nb; k++) {
            float *x = f + k * SD_QK8_0, amax = 0;
            for (int j = 0; j < SD_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
            b[k].d = f2h(amax / 127);
            float d = h2f(b[k].d);
            for (int j = 0; j < SD_QK8_0; j++) {
                int q = d > 0 ? (int)lrintf(x[j] / d) : 0;
                q = q > 127 ? 127 : q < -127 ? -127 : q;
                b[k].qs[j] = (int8_t)q;
                x[j] = d * q;
            }
        }
        gguf_w_tensor(w, name, SD_Q8_0, 2, ne, b);
        free(b);
    }
    return f;
}

static float *add_vector(gguf_writer *w, const char *name, int n, float base, float noise) {
    float *f = malloc(n * sizeof *f);
    for (int i = 0; i < n; i++) f[i] = base + frand() * noise;
    int64_t ne[1] = {n};
    gguf_w_tensor(w, name, SD_F32, 1, ne, f);
    return f;
}

static void add_vocab(gguf_writer *w, int vocab) {
    char **tok = malloc(vocab * sizeof *tok);
    float *score = malloc(vocab * sizeof *score);
    int32_t *type = malloc(vocab * sizeof *type);
    for (int i = 0; i < vocab; i++) {
        tok[i] = malloc(16);
        score[i] = -(float)i;
        type[i] = SD_TT_NORMAL;
        if (i == 0) { strcpy(tok[i], "<unk>"); type[i] = SD_TT_UNKNOWN; }
        else if (i == 1) { strcpy(tok[i], "<s>"); type[i] = SD_TT_CONTROL; }
        else if (i == 2) { strcpy(tok[i], "</s>"); type[i] = SD_TT_CONTROL; }
        else if (i < 3 + 256) { snprintf(tok[i], 16, "<0x%02X>", i - 3); type[i] = SD_TT_BYTE; }
        else snprintf(tok[i], 16, "\xe2\x96\x81w%d", i);
    }
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, vocab);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", score, vocab);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, vocab);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    for (int i = 0; i < vocab; i++) free(tok[i]);
    free(tok); free(score); free(type);
}

/* Writes the model to path and returns its reference weights. */
static int write_model(const cfg *c, const char *path, ref *r, sd_err *err) {
    memset(r, 0, sizeof *r);
    r->c = *c;
    rng_state = 0x1234 + (uint64_t)c->dim * 31 + c->layers;
    gguf_writer *w = gguf_writer_new(32);
    char key[128];
    gguf_w_str(w, "general.architecture", c->arch);
    gguf_w_str(w, "general.name", "test_forward");
#define KEY(k) (snprintf(key, sizeof key, "%s." k, c->arch), key)
    gguf_w_u32(w, KEY("context_length"), c->ctx);
    gguf_w_u32(w, KEY("embedding_length"), c->dim);
    gguf_w_u32(w, KEY("block_count"), c->layers);
    gguf_w_u32(w, KEY("feed_forward_length"), c->ffn);
    gguf_w_u32(w, KEY("attention.head_count"), c->heads);
    gguf_w_u32(w, KEY("attention.head_count_kv"), c->kv_heads);
    gguf_w_u32(w, KEY("attention.key_length"), c->head_dim);
    gguf_w_u32(w, KEY("attention.value_length"), c->head_dim);
    gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    gguf_w_f32(w, KEY("rope.freq_base"), 10000.0f);
    gguf_w_u32(w, KEY("rope.dimension_count"), c->head_dim);
#undef KEY
    add_vocab(w, c->vocab);
    int qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
    bool qwen2 = !strcmp(c->arch, "qwen2"), qwen3 = !strcmp(c->arch, "qwen3");
    r->embd = add_matrix(w, "token_embd.weight", c->vocab, c->dim, c->type, 1.0f);
    r->out_norm = add_vector(w, "output_norm.weight", c->dim, 1.0f, 0.2f);
    r->out = c->tied ? r->embd : add_matrix(w, "output.weight", c->vocab, c->dim, c->type, 1.0f);
    r->L = calloc(c->layers, sizeof *r->L);
    for (int l = 0; l < c->layers; l++) {
        rlayer *L = &r->L[l];
        char n[64];
#define NM(s) (snprintf(n, sizeof n, "blk.%d." s, l), n)
        float sd = 1.0f / sqrtf((float)c->dim), sf = 1.0f / sqrtf((float)c->ffn), sq = 1.0f / sqrtf((float)qd);
        L->attn_norm = add_vector(w, NM("attn_norm.weight"), c->dim, 1.0f, 0.2f);
        L->wq = add_matrix(w, NM("attn_q.weight"), qd, c->dim, c->type, 2 * sd);
        L->wk = add_matrix(w, NM("attn_k.weight"), kvd, c->dim, c->type, 2 * sd);
        L->wv = add_matrix(w, NM("attn_v.weight"), kvd, c->dim, c->type, sd);
        L->wo = add_matrix(w, NM("attn_output.weight"), c->dim, qd, c->type, sq);
        if (qwen2) {
            L->bq = add_vector(w, NM("attn_q.bias"), qd, 0, 0.3f);
            L->bk = add_vector(w, NM("attn_k.bias"), kvd, 0, 0.3f);
            L->bv = add_vector(w, NM("attn_v.bias"), kvd, 0, 0.3f);
        }
        if (qwen3) {
            L->qn = add_vector(w, NM("attn_q_norm.weight"), c->head_dim, 1.0f, 0.3f);
            L->kn = add_vector(w, NM("attn_k_norm.weight"), c->head_dim, 1.0f, 0.3f);
        }
        L->ffn_norm = add_vector(w, NM("ffn_norm.weight"), c->dim, 1.0f, 0.2f);
        L->wg = add_matrix(w, NM("ffn_gate.weight"), c->ffn, c->dim, c->type, 2 * sd);
        L->wu = add_matrix(w, NM("ffn_up.weight"), c->ffn, c->dim, c->type, 2 * sd);
        L->wd = add_matrix(w, NM("ffn_down.weight"), c->dim, c->ffn, c->type, sf);
#undef NM
    }
    int rc = gguf_writer_save(w, path, err);
    gguf_writer_free(w);
    return rc;
}

static void ref_free(ref *r) {
    free(r->embd); free(r->out_norm);
    if (!r->c.tied) free(r->out);
    for (int l = 0; l < r->c.layers; l++) {
        rlayer *L = &r->L[l];
        float *p[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->qn, L->kn, L->ffn_norm, L->wg, L->wu, L->wd};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    }
    free(r->L);
}

/* ---- the scalar reference transformer ---- */
static void r_rmsnorm(float *o, const float *x, const float *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / n + 1e-5));
    for (int i = 0; i < n; i++) o[i] = x[i] * s * w[i];
}
static void r_matvec(float *o, const float *w, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += (double)w[(size_t)r * cols + c] * x[c];
        o[r] = (float)s;
    }
}
static void r_rope(float *v, int heads, int hd, int pos, bool neox) {
    for (int h = 0; h < heads; h++) {
        float *x = v + h * hd;
        for (int j = 0; j < hd / 2; j++) {
            double a = pos * pow(10000.0, -2.0 * j / hd);
            int i0 = neox ? j : 2 * j, i1 = neox ? j + hd / 2 : 2 * j + 1;
            double x0 = x[i0], x1 = x[i1];
            x[i0] = (float)(x0 * cos(a) - x1 * sin(a));
            x[i1] = (float)(x0 * sin(a) + x1 * cos(a));
        }
    }
}

/* The reference stores K and V rounded to half, as an F16 cache does (--kv-type f16). */
static bool ref_kv_f16;
static void ref_round_f16(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = sd_fp16_to_fp32(sd_fp32_to_fp16(x[i]));
}

/* Logits of every position for tokens[0..n) using the first n_layers layers: out is n × vocab. */
static void ref_forward(const ref *r, const int32_t *tok, int n, int n_layers, float *out) {
    const cfg *c = &r->c;
    int qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim, hd = c->head_dim;
    bool neox = strcmp(c->arch, "llama") != 0;
    float *K = malloc(sizeof(float) * n_layers * n * kvd), *V = malloc(sizeof(float) * n_layers * n * kvd);
    float *x = malloc(4 * c->dim), *xb = malloc(4 * c->dim), *q = malloc(4 * qd), *att = malloc(4 * qd);
    float *hb = malloc(4 * c->ffn), *hb2 = malloc(4 * c->ffn), *sc = malloc(4 * n), *tmp = malloc(4 * c->dim);
    for (int p = 0; p < n; p++) {
        memcpy(x, r->embd + (size_t)tok[p] * c->dim, 4 * c->dim);
        for (int l = 0; l < n_layers; l++) {
            const rlayer *L = &r->L[l];
            float *k = K + ((size_t)l * n + p) * kvd, *v = V + ((size_t)l * n + p) * kvd;
            r_rmsnorm(xb, x, L->attn_norm, c->dim);
            r_matvec(q, L->wq, xb, qd, c->dim);
            r_matvec(k, L->wk, xb, kvd, c->dim);
            r_matvec(v, L->wv, xb, kvd, c->dim);
            if (L->bq) for (int i = 0; i < qd; i++) q[i] += L->bq[i];
            if (L->bk) for (int i = 0; i < kvd; i++) { k[i] += L->bk[i]; v[i] += L->bv[i]; }
            if (L->qn) {
                for (int h = 0; h < c->heads; h++) r_rmsnorm(q + h * hd, q + h * hd, L->qn, hd);
                for (int h = 0; h < c->kv_heads; h++) r_rmsnorm(k + h * hd, k + h * hd, L->kn, hd);
            }
            r_rope(q, c->heads, hd, p, neox);
            r_rope(k, c->kv_heads, hd, p, neox);
            if (ref_kv_f16) {
                ref_round_f16(k, kvd);
                ref_round_f16(v, kvd);
            }
            for (int h = 0; h < c->heads; h++) {
                int kh = h / (c->heads / c->kv_heads);
                double mx = -1e30, sum = 0;
                for (int t = 0; t <= p; t++) {
                    const float *kt = K + ((size_t)l * n + t) * kvd + kh * hd;
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += (double)q[h * hd + i] * kt[i];
                    sc[t] = (float)(s / sqrt(hd));
                    if (sc[t] > mx) mx = sc[t];
                }
                for (int t = 0; t <= p; t++) { sc[t] = (float)exp(sc[t] - mx); sum += sc[t]; }
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int t = 0; t <= p; t++) a += sc[t] * V[((size_t)l * n + t) * kvd + kh * hd + i];
                    att[h * hd + i] = (float)(a / sum);
                }
            }
            r_matvec(tmp, L->wo, att, c->dim, qd);
            for (int i = 0; i < c->dim; i++) x[i] += tmp[i];
            r_rmsnorm(xb, x, L->ffn_norm, c->dim);
            r_matvec(hb, L->wg, xb, c->ffn, c->dim);
            r_matvec(hb2, L->wu, xb, c->ffn, c->dim);
            for (int i = 0; i < c->ffn; i++) hb[i] = hb[i] / (1.0f + expf(-hb[i])) * hb2[i];
            r_matvec(tmp, L->wd, hb, c->dim, c->ffn);
            for (int i = 0; i < c->dim; i++) x[i] += tmp[i];
        }
        r_rmsnorm(xb, x, r->out_norm, c->dim);
        r_matvec(out + (size_t)p * c->vocab, r->out, xb, c->vocab, c->dim);
    }
    free(K); free(V); free(x); free(xb); free(q); free(att); free(hb); free(hb2); free(sc); free(tmp);
}

/* ---- helpers ---- */

/* Largest |a-b| over n, relative to the largest |b| (at least 1). */
static double rel_diff(const float *a, const float *b, size_t n) {
    double md = 0, mb = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d; /* NaN propagates as a failure */
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

static sd_backend *g_be;
static sd_backend *backend(void) {
    if (!g_be) {
        sd_err err = {{0}};
        if (sd_backend_cpu_new(2, &g_be, &err) != 0) fprintf(stderr, "cpu backend: %s\n", err.msg);
    }
    return g_be;
}

static void make_tokens(int32_t *t, int n, int vocab, uint64_t seed) {
    rng_state = seed;
    t[0] = 1;
    for (int i = 1; i < n; i++) t[i] = 3 + (int32_t)((frand() + 1) * 0.5f * (vocab - 4));
}

/* The checks every configuration gets. tol: allowed relative difference against the reference. */
static void check_config(const cfg *c, double tol) {
    sd_err err = {{0}};
    ref r;
    const char *path = tmp_path("m.gguf");
    REQUIRE(path && write_model(c, path, &r, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(backend());
    if (sd_model_load(path, NULL, g_be, &m, &err) != 0) {
        fprintf(stderr, "  load %s: %s\n", c->arch, err.msg);
        ref_free(&r);
        REQUIRE(0);
    }
    enum { N = 20 };
    int V = c->vocab;
    int32_t tok[N];
    make_tokens(tok, N, V, 77);
    float *want = malloc(sizeof(float) * N * V), *all = malloc(sizeof(float) * N * V);
    float *one = malloc(sizeof(float) * N * V), *last = malloc(sizeof(float) * V);
    static const sd_dtype kv_types[] = {SD_F16, SD_F32}; /* the default first */
    for (int ti = 0; ti < 2; ti++) {
        sd_model_kv_free(m); /* the pool takes the type it is made with */
        m->kv_type = kv_types[ti];
        m->batch_rows = 0;
        ref_kv_f16 = kv_types[ti] == SD_F16;
        const char *kt = sd_dtype_name(kv_types[ti]);
        ref_forward(&r, tok, N, c->layers, want);

        /* n tokens at once, all logits, against the reference */
        sd_seq *s = NULL;
        REQUIRE(sd_seq_new(m, 0, 0, &s, &err) == 0);
        CHECK(sd_forward(s, tok, N, true, all, &err) == 0);
        CHECK_EQ_INT(s->pos, N);
        double d = rel_diff(all, want, (size_t)N * V);
        CHECKF(d <= tol, "%s %s kv %s: batch vs reference %.3g > %.3g", c->arch, sd_dtype_name(c->type), kt, d, tol);

        /* one token at a time == all at once */
        sd_seq_truncate(s, 0);
        CHECK_EQ_INT(s->pos, 0);
        for (int i = 0; i < N; i++) CHECK(sd_forward(s, tok + i, 1, false, one + (size_t)i * V, &err) == 0);
        d = rel_diff(one, all, (size_t)N * V);
        CHECKF(d <= tol, "%s %s kv %s: 1-by-1 vs batch %.3g", c->arch, sd_dtype_name(c->type), kt, d);

        /* last-only logits == the last row of all logits; chunked (max_batch 3) == unchunked */
        sd_seq_truncate(s, 0);
        CHECK(sd_forward(s, tok, N, false, last, &err) == 0);
        CHECK(rel_diff(last, all + (size_t)(N - 1) * V, V) <= 1e-5);
        sd_seq_truncate(s, 0);
        m->batch_rows = 3;
        CHECK(sd_forward(s, tok, N, true, one, &err) == 0);
        d = rel_diff(one, all, (size_t)N * V);
        CHECKF(d <= tol, "kv %s: chunked vs batch %.3g", kt, d);

        /* self-draft: the first layer only */
        sd_seq *s1 = NULL;
        REQUIRE(sd_seq_new(m, 0, 1, &s1, &err) == 0);
        ref_forward(&r, tok, N, 1, want);
        CHECK(sd_forward(s1, tok, N, true, all, &err) == 0);
        d = rel_diff(all, want, (size_t)N * V);
        CHECKF(d <= tol, "kv %s: 1-layer sequence vs reference %.3g", kt, d);
        sd_seq_free(s1);
        sd_seq_free(s);
    }
    ref_kv_f16 = false;
    sd_model_free(m);
    free(want); free(all); free(one); free(last);
    ref_free(&r);
    remove(path);
}

static const cfg base = {"llama", 64, 2, 4, 4, 16, 96, 300, 64, SD_F32, false};

static void test_llama_f32(void) { check_config(&base, 1e-4); }
static void test_llama_gqa_f16_tied(void) {
    cfg c = base; c.kv_heads = 2; c.type = SD_F16; c.tied = true;
    check_config(&c, 5e-3); /* activations may be rounded to F16 */
}
static void test_llama_q8_0(void) {
    cfg c = base; c.kv_heads = 1; c.type = SD_Q8_0;
    check_config(&c, 3e-2); /* the backend may quantize activations to 8 bits as well */
}
static void test_qwen2_biases_neox(void) {
    cfg c = base; c.arch = "qwen2"; c.kv_heads = 2;
    check_config(&c, 1e-4);
}
static void test_qwen3_qk_norm(void) {
    cfg c = base; c.arch = "qwen3"; c.kv_heads = 2; c.head_dim = 32; /* q width 128 != dim */
    check_config(&c, 1e-4);
}
static void test_qwen3_q8_0(void) {
    cfg c = base; c.arch = "qwen3"; c.kv_heads = 2; c.type = SD_Q8_0; c.layers = 3;
    check_config(&c, 3e-2);
}

/* Truncate, then compute other tokens: bitwise equal to a sequence that never saw the dropped ones. */
static void test_truncate_exact(void) {
    sd_err err = {{0}};
    ref r;
    cfg c = base; c.kv_heads = 2;
    const char *path = tmp_path("t.gguf");
    REQUIRE(write_model(&c, path, &r, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0);
    int V = c.vocab;
    int32_t a[12], u[5];
    make_tokens(a, 12, V, 5);
    make_tokens(u, 5, V, 6);
    u[0] = 40;
    float *la = malloc(sizeof(float) * 5 * V), *lb = malloc(sizeof(float) * 5 * V), *junk = malloc(sizeof(float) * 12 * V);
    sd_seq *A = NULL, *B = NULL;
    REQUIRE(sd_seq_new(m, 32, 0, &A, &err) == 0 && sd_seq_new(m, 32, 0, &B, &err) == 0);
    /* A: 7 tokens, 5 more (to be rejected), truncate to 7, then u. B: 7 tokens, then u. */
    CHECK(sd_forward(A, a, 7, false, junk, &err) == 0);
    CHECK(sd_forward(A, a + 7, 5, true, junk, &err) == 0);
    sd_seq_truncate(A, 7);
    CHECK_EQ_INT(A->pos, 7);
    CHECK(sd_forward(A, u, 5, true, la, &err) == 0);
    CHECK(sd_forward(B, a, 7, false, junk, &err) == 0);
    CHECK(sd_forward(B, u, 5, true, lb, &err) == 0);
    CHECK(memcmp(la, lb, sizeof(float) * 5 * V) == 0);
    /* truncating past the end changes nothing; to 0 restarts */
    sd_seq_truncate(A, 100);
    CHECK_EQ_INT(A->pos, 12);
    sd_seq_truncate(A, 0);
    CHECK_EQ_INT(A->pos, 0);
    sd_seq_free(A); sd_seq_free(B);
    sd_model_free(m);
    free(la); free(lb); free(junk);
    ref_free(&r);
    remove(path);
}

static void test_errors(void) {
    sd_err err = {{0}};
    ref r;
    cfg c = base;
    const char *path = tmp_path("e.gguf");
    REQUIRE(write_model(&c, path, &r, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0);
    sd_seq *s = NULL;
    CHECK(sd_seq_new(m, 0, c.layers + 1, &s, &err) != 0); /* more layers than the model has */
    CHECK(s == NULL);
    REQUIRE(sd_seq_new(m, 16, 0, &s, &err) == 0);
    CHECK_EQ_INT(s->ctx, 16);
    int32_t tok[17];
    make_tokens(tok, 17, c.vocab, 9);
    float *lg = malloc(sizeof(float) * 17 * c.vocab), *lg2 = malloc(sizeof(float) * c.vocab);
    err.msg[0] = 0;
    CHECK(sd_forward(s, tok, 17, false, lg, &err) != 0);
    CHECK(strstr(err.msg, "context") != NULL);
    CHECK_EQ_INT(s->pos, 0);
    CHECK(sd_forward(s, tok, 10, false, lg, &err) == 0);
    CHECK(sd_forward(s, tok + 10, 7, false, lg, &err) != 0); /* 10 + 7 > 16: nothing changes */
    CHECK_EQ_INT(s->pos, 10);
    CHECK(sd_forward(s, tok + 10, 6, false, lg, &err) == 0); /* exactly full */
    CHECK_EQ_INT(s->pos, 16);
    CHECK(sd_forward(s, tok, 1, false, lg, &err) != 0);
    /* after the failed calls, results equal a fresh sequence's */
    sd_seq *f = NULL;
    REQUIRE(sd_seq_new(m, 16, 0, &f, &err) == 0);
    CHECK(sd_forward(f, tok, 16, false, lg2, &err) == 0);
    CHECK(memcmp(lg, lg2, sizeof(float) * c.vocab) == 0 || rel_diff(lg, lg2, c.vocab) < 1e-5);
    /* bad token ids and empty input */
    sd_seq_truncate(s, 0);
    int32_t bad[2] = {5, c.vocab};
    err.msg[0] = 0;
    CHECK(sd_forward(s, bad, 2, false, lg, &err) != 0);
    CHECK(strstr(err.msg, "vocabulary") != NULL);
    bad[1] = -1;
    CHECK(sd_forward(s, bad, 2, false, lg, &err) != 0);
    CHECK(sd_forward(s, bad, 0, false, lg, &err) != 0);
    CHECK_EQ_INT(s->pos, 0);
    sd_seq_free(s); sd_seq_free(f);
    sd_model_free(m);
    free(lg); free(lg2);
    ref_free(&r);
    remove(path);
}

/* The real models: batch == one at a time; the self-draft sequence runs. */
static void check_real(const char *model, const char *tokf) {
    sd_err err = {{0}};
    sd_model *m = NULL;
    REQUIRE(backend());
    if (sd_model_load(model, tokf, g_be, &m, &err) != 0) {
        fprintf(stderr, "  %s: %s\n", model, err.msg);
        REQUIRE(0);
    }
    int V = m->hp.vocab, N = 24;
    int32_t tok[24];
    make_tokens(tok, N, V, 3);
    float *all = malloc(sizeof(float) * N * V), *one = malloc(sizeof(float) * N * V);
    sd_seq *s = NULL;
    REQUIRE(sd_seq_new(m, 0, 0, &s, &err) == 0);
    CHECK(sd_forward(s, tok, N, true, all, &err) == 0);
    sd_seq_truncate(s, 0);
    for (int i = 0; i < N; i++) CHECK(sd_forward(s, tok + i, 1, false, one + (size_t)i * V, &err) == 0);
    double d = rel_diff(one, all, (size_t)N * V);
    CHECKF(d < 1e-4, "%s: 1-by-1 vs batch %.3g", model, d);
    sd_seq_free(s);
    if (m->hp.n_layers > 1) {
        REQUIRE(sd_seq_new(m, 0, m->hp.n_layers / 2, &s, &err) == 0);
        CHECK(sd_forward(s, tok, N, true, all, &err) == 0);
        int finite = 1;
        for (int i = 0; i < N * V; i++) finite &= isfinite(all[i]) != 0;
        CHECK(finite);
        sd_seq_free(s);
    }
    sd_model_free(m);
    free(all); free(one);
}

/* Models written by `specd mkmodel` (the tiny preset, F16 and Q8_0): the same consistency checks. */
static void test_mkmodel_tiny(void) {
    const char *b = getenv("BUILD") ? getenv("BUILD") : "build";
    char exe[512], cmd[2048];
    snprintf(exe, sizeof exe, "%s/specd", b);
    if (access(exe, X_OK) != 0) SKIP("%s not built", exe);
    const char *types[] = {"f16", "q8_0"};
    for (int i = 0; i < 2; i++) {
        const char *path = tmp_path(i ? "mk_q8_0.gguf" : "mk_f16.gguf");
        snprintf(cmd, sizeof cmd, "%s mkmodel --preset tiny --type %s -o %s >/dev/null 2>&1", exe, types[i], path);
        CHECKF(system(cmd) == 0, "%s", cmd);
        check_real(path, NULL);
        remove(path);
    }
}

static void test_shared_models(void) {
    const char *g = shared_path("models/aidreams260K.gguf"), *b = shared_path("models/aidreams260K.bin");
    const char *t = shared_path("models/tok512.bin"), *dg = shared_path("models/aidreams-draft.gguf");
    if (!g || !b || !t) SKIP("../shared/models/aidreams260K.{gguf,bin} or tok512.bin missing");
    check_real(g, NULL);
    check_real(b, t);
    if (dg) check_real(dg, NULL);
}

/* sd_forward_greedy picks exactly the argmax of sd_forward's logits, for the last row and for all rows,
 * through the backend's argmax_rows and through the host fallback of a backend without it. */
static void test_forward_greedy_ids(void) {
    const char *path = shared_path("models/aidreams260K.gguf");
    if (!path) SKIP("../shared/models/aidreams260K.gguf not found");
    for (int fallback = 0; fallback <= 1; fallback++) {
        sd_backend *be = NULL;
        sd_err err = {{0}};
        REQUIRE(sd_backend_cpu_new(2, &be, &err) == 0);
        REQUIRE(be->argmax_rows != NULL);
        if (fallback) be->argmax_rows = NULL;
        sd_model *m = NULL;
        REQUIRE(sd_model_load(path, NULL, be, &m, &err) == 0);
        sd_seq *a = NULL, *b = NULL;
        REQUIRE(sd_seq_new(m, 0, 0, &a, &err) == 0 && sd_seq_new(m, 0, 0, &b, &err) == 0);
        int vocab = m->hp.vocab;
        float *lg = malloc(sizeof(float) * 6 * (size_t)vocab);
        int32_t toks[6] = {1, 403, 407, 261, 378, 280}, ids[6] = {-1, -1, -1, -1, -1, -1}, id = -1;
        REQUIRE(sd_forward(a, toks, 3, false, lg, &err) == 0 && sd_forward_greedy(b, toks, 3, false, &id, &err) == 0);
        CHECK_EQ_INT(id, sd_argmax(lg, vocab));
        REQUIRE(sd_forward(a, toks + 3, 3, true, lg, &err) == 0 && sd_forward_greedy(b, toks + 3, 3, true, ids, &err) == 0);
        for (int r = 0; r < 3; r++) CHECK_EQ_INT(ids[r], sd_argmax(lg + (size_t)r * vocab, vocab));
        CHECK_EQ_INT(b->pos, 6);
        free(lg);
        sd_seq_free(a);
        sd_seq_free(b);
        sd_model_free(m);
        be->destroy(be);
    }
}

/* ---- batches of several sequences ---- */

/* What one sequence asks of a batch: its prefix (computed before), then `n` rows with output `out` on
 * every row (all) or the last. */
typedef struct bjob {
    int prefix, n;
    sd_row_out out;
    bool all;
} bjob;

/* Output of a job's rows, as host data: logits rows or ids. */
typedef struct bres {
    float *logits;
    int32_t ids[16];
    const float *kept[16];
} bres;

static void bres_alloc(bres *r, int V) { memset(r, 0, sizeof *r); r->logits = calloc((size_t)16 * V, sizeof(float)); }

/* Rows of job j for sequence s into rows (positions from s->pos + already) and its result slots. */
static int job_rows(const bjob *j, sd_seq *s, const int32_t *tok, int from, int count, sd_row *rows, bres *r, int V) {
    for (int i = from; i < from + count; i++) {
        bool want = j->all || i == j->n - 1;
        sd_row row = {.seq = s, .token = tok[j->prefix + i], .pos = s->pos + i, .out = want ? j->out : SD_OUT_NONE,
                      .logits = r->logits + (size_t)i * V, .id = &r->ids[i], .kept = &r->kept[i]};
        rows[i - from] = row;
    }
    return count;
}

/* The kept rows of a finished job, copied to host logits (they live until the model's next forward). */
static void bres_fetch(const bjob *j, bres *r, sd_backend *be, int V) {
    if (j->out != SD_OUT_KEEP) return;
    for (int i = 0; i < j->n; i++)
        if (r->kept[i]) be->to_host(be, r->logits + (size_t)i * V, r->kept[i], (size_t)V);
}

static bool bres_equal(const bjob *j, const bres *a, const bres *b, int V) {
    for (int i = 0; i < j->n; i++) {
        if (!(j->all || i == j->n - 1) || j->out == SD_OUT_NONE) continue;
        if (j->out == SD_OUT_ARGMAX ? a->ids[i] != b->ids[i]
                                    : memcmp(a->logits + (size_t)i * V, b->logits + (size_t)i * V, sizeof(float) * V))
            return false;
    }
    return true;
}

/* Every sequence of a mixed batch (prefill, decode rows, verify blocks, kept rows; passes of `pass_rows`
 * rows that split spans; one sequence in two spans) gets bitwise what it gets alone. */
static void check_batch_exact(const cfg *c, int pass_rows) {
    sd_err err = {{0}};
    ref r;
    const char *path = tmp_path("b.gguf");
    REQUIRE(path && write_model(c, path, &r, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0);
    int V = c->vocab;
    enum { J = 5 };
    const bjob jobs[J] = {
        {5, 1, SD_OUT_LOGITS, false}, /* a decode step */
        {0, 9, SD_OUT_ARGMAX, false}, /* a prefill */
        {12, 5, SD_OUT_LOGITS, true}, /* a verify block */
        {3, 3, SD_OUT_KEEP, true},    /* a sampled verify block kept on the backend */
        {7, 4, SD_OUT_ARGMAX, true},  /* a greedy verify block, split over two spans below */
    };
    int32_t tok[J][32];
    sd_seq *solo[J], *bat[J];
    bres rs[J], rb[J];
    float *junk = malloc(sizeof(float) * V);
    for (int j = 0; j < J; j++) {
        make_tokens(tok[j], 32, V, 100 + (uint64_t)j);
        REQUIRE(sd_seq_new(m, 40, 0, &solo[j], &err) == 0 && sd_seq_new(m, 40, 0, &bat[j], &err) == 0);
        if (jobs[j].prefix) {
            REQUIRE(sd_forward(solo[j], tok[j], jobs[j].prefix, false, junk, &err) == 0);
            REQUIRE(sd_forward(bat[j], tok[j], jobs[j].prefix, false, junk, &err) == 0);
        }
        bres_alloc(&rs[j], V);
        bres_alloc(&rb[j], V);
    }
    /* alone (passes of the default size) */
    sd_row rows[64];
    for (int j = 0; j < J; j++) {
        int n = job_rows(&jobs[j], solo[j], tok[j], 0, jobs[j].n, rows, &rs[j], V);
        CHECKF(sd_forward_batch(m, rows, n, &err) == 0, "%s", err.msg);
        bres_fetch(&jobs[j], &rs[j], g_be, V);
    }
    /* together: job 4's rows in two spans around the others */
    m->batch_rows = pass_rows;
    int n = job_rows(&jobs[4], bat[4], tok[4], 0, 2, rows, &rb[4], V);
    for (int j = 0; j < 4; j++) n += job_rows(&jobs[j], bat[j], tok[j], 0, jobs[j].n, rows + n, &rb[j], V);
    n += job_rows(&jobs[4], bat[4], tok[4], 2, 2, rows + n, &rb[4], V);
    CHECKF(sd_forward_batch(m, rows, n, &err) == 0, "%s", err.msg);
    for (int j = 0; j < J; j++) {
        bres_fetch(&jobs[j], &rb[j], g_be, V);
        CHECKF(bres_equal(&jobs[j], &rs[j], &rb[j], V), "%s %s, passes of %d rows: job %d differs from alone", c->arch,
               sd_dtype_name(c->type), pass_rows, j);
        CHECK_EQ_INT(bat[j]->pos, solo[j]->pos);
    }
    m->batch_rows = 0;
    for (int j = 0; j < J; j++) {
        sd_seq_free(solo[j]);
        sd_seq_free(bat[j]);
        free(rs[j].logits);
        free(rb[j].logits);
    }
    free(junk);
    sd_model_free(m);
    ref_free(&r);
    remove(path);
}

static void test_batch_exact(void) {
    cfg c = base; c.kv_heads = 2;
    check_batch_exact(&c, 0);  /* one pass */
    check_batch_exact(&c, 5);  /* passes of 5 rows split spans */
    c.arch = "qwen3"; c.type = SD_Q8_0; c.head_dim = 32;
    check_batch_exact(&c, 0);
    c.arch = "qwen2"; c.type = SD_F16; c.head_dim = 16;
    check_batch_exact(&c, 7);
}

/* A bad batch fails before any work, naming the row, and changes no sequence. */
static void test_batch_errors(void) {
    sd_err err = {{0}};
    ref r;
    cfg c = base;
    const char *path = tmp_path("be.gguf");
    REQUIRE(write_model(&c, path, &r, &err) == 0);
    sd_model *m = NULL, *m2 = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0 && sd_model_load(path, NULL, g_be, &m2, &err) == 0);
    sd_seq *a = NULL, *b = NULL, *o = NULL, *h = NULL;
    REQUIRE(sd_seq_new(m, 8, 0, &a, &err) == 0 && sd_seq_new(m, 8, 0, &b, &err) == 0);
    REQUIRE(sd_seq_new(m2, 8, 0, &o, &err) == 0 && sd_seq_new(m, 8, 1, &h, &err) == 0);
    int32_t id;
    const float *kept;
    sd_row ok[2] = {{.seq = a, .token = 1, .pos = 0}, {.seq = b, .token = 1, .pos = 0, .out = SD_OUT_ARGMAX, .id = &id}};
    struct { const char *label, *want; sd_row r; } bad[] = {
        {"position gap", "continues at 0", {.seq = a, .token = 1, .pos = 1}},
        {"other model", "another model", {.seq = o, .token = 1, .pos = 0}},
        {"token", "outside the vocabulary", {.seq = a, .token = 300, .pos = 0}},
        {"no place", "no place", {.seq = a, .token = 1, .pos = 0, .out = SD_OUT_LOGITS}},
        {"depth", "one depth", {.seq = h, .token = 1, .pos = 0}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sd_row rows[3] = {ok[0], ok[1], bad[i].r};
        if (bad[i].r.seq == a) rows[0].seq = b, rows[1].pos = 1; /* keep the good rows valid */
        err.msg[0] = 0;
        CHECKF(sd_forward_batch(m, rows, 3, &err) != 0, "%s accepted", bad[i].label);
        CHECKF(strstr(err.msg, bad[i].want) != NULL, "%s: \"%s\"", bad[i].label, err.msg);
        CHECK(strstr(err.msg, "row 2") != NULL || strstr(err.msg, "index 2") != NULL);
        CHECK_EQ_INT(a->pos, 0);
        CHECK_EQ_INT(b->pos, 0);
    }
    /* context overflow: 9 rows into 8 positions */
    sd_row many[9];
    for (int i = 0; i < 9; i++) many[i] = (sd_row){.seq = a, .token = 1, .pos = i};
    CHECK(sd_forward_batch(m, many, 9, &err) != 0 && strstr(err.msg, "context overflow"));
    CHECK_EQ_INT(a->pos, 0);
    /* more kept rows than the model keeps */
    m->batch_rows = 2;
    CHECK_EQ_INT(sd_model_keep_rows(m), 2);
    for (int i = 0; i < 3; i++) many[i] = (sd_row){.seq = a, .token = 1, .pos = i, .out = SD_OUT_KEEP, .kept = &kept};
    CHECK(sd_forward_batch(m, many, 3, &err) != 0 && strstr(err.msg, "to keep"));
    CHECK(sd_forward_batch(m, many, 2, &err) == 0);
    CHECK_EQ_INT(a->pos, 2);
    CHECK(sd_forward_batch(m, NULL, 0, &err) != 0);
    sd_seq_free(a); sd_seq_free(b); sd_seq_free(o); sd_seq_free(h);
    sd_model_free(m);
    sd_model_free(m2);
    ref_free(&r);
    remove(path);
}

/* Resident memory of this process in bytes (/proc/self/statm), 0 when unknown. */
static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* A cache for a long context costs resident memory for the positions used, not for the whole context:
 * 131072 positions (128 MiB of K and V here) on a 4-token request grow the process by far less. */
static void test_kv_committed_as_used(void) {
    sd_err err = {{0}};
    ref r;
    cfg c = base;
    const char *path = tmp_path("kv.gguf");
    REQUIRE(write_model(&c, path, &r, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0);
    int32_t tok[4] = {1, 5, 9, 11};
    int32_t id;
    sd_seq *warm = NULL, *s = NULL; /* a first forward makes the model's workspace: not counted */
    REQUIRE(sd_seq_new(m, 16, 0, &warm, &err) == 0 && sd_forward_greedy(warm, tok, 4, false, &id, &err) == 0);
    size_t before = rss_bytes();
    if (!before) SKIP("/proc/self/statm unreadable");
    REQUIRE(sd_seq_new(m, 131072, 0, &s, &err) == 0);
    size_t reserved = 0;
    g_be->mem_usage(g_be, NULL, &reserved, NULL);
    CHECKF(reserved >= (size_t)131072 * sd_model_kv_bytes_per_token(m, 2), "KV reported %zu bytes", reserved);
    REQUIRE(sd_forward_greedy(s, tok, 4, false, &id, &err) == 0);
    size_t grew = rss_bytes() - before;
    CHECKF(grew < (size_t)16 << 20, "a 4-token request on a 131072-position cache grew RSS by %zu bytes", grew);
    sd_seq_free(s);
    sd_seq_free(warm);
    sd_model_free(m);
    ref_free(&r);
    remove(path);
}

/* The shallow pool (self-drafting): a sequence of L layers takes blocks of L layers there (as many more
 * blocks for the same bytes), leaving the full pool alone, and computes bitwise what it computes on full
 * blocks; a full-depth sequence stays on the full pool; bad depths and a second shallow pool are refused. */
static void test_kv_shallow_pool(void) {
    sd_err err = {{0}};
    ref r;
    cfg c = base;
    c.layers = 3;
    const char *path = tmp_path("shallow.gguf");
    REQUIRE(write_model(&c, path, &r, &err) == 0);
    sd_model *m = NULL, *plain = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0);
    REQUIRE(sd_model_load(path, NULL, g_be, &plain, &err) == 0);
    size_t bb = sd_model_kv_block_bytes(m);
    REQUIRE(sd_model_kv_init(m, 4 * bb, &err) == 0);
    CHECK(sd_model_kv_init_shallow(m, 0, bb, &err) == -1);
    CHECK(sd_model_kv_init_shallow(m, 3, bb, &err) == -1);
    CHECKF(strstr(err.msg, "3 layers") != NULL, "%s", err.msg);
    REQUIRE(sd_model_kv_init_shallow(m, 1, 4 * bb, &err) == 0);
    CHECK(sd_model_kv_init_shallow(m, 1, 4 * bb, &err) == -1);
    int total, free_now, V = c.vocab;
    sd_model_kv_blocks_at(m, 1, &total, &free_now);
    CHECK_EQ_INT(total, 12); /* blocks of 1 layer in the bytes of 4 blocks of 3 */
    int32_t tok[40];
    make_tokens(tok, 40, V, 5);
    float *want = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    sd_seq *ref_seq = NULL, *s = NULL, *full = NULL;
    REQUIRE(sd_seq_new(plain, 64, 1, &ref_seq, &err) == 0); /* no shallow pool: full blocks */
    CHECK(sd_forward(ref_seq, tok, 33, false, want, &err) == 0);
    CHECK(!sd_seq_in_shallow_pool(ref_seq));
    REQUIRE(sd_seq_new(m, 64, 1, &s, &err) == 0);
    CHECK(sd_forward(s, tok, 33, false, got, &err) == 0);
    CHECK(sd_seq_in_shallow_pool(s));
    CHECK(memcmp(want, got, sizeof(float) * V) == 0);
    sd_model_kv_blocks_at(m, 1, &total, &free_now);
    CHECK_EQ_INT(free_now, 9);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK(total == 4 && free_now == 4);
    REQUIRE(sd_seq_new(m, 64, 0, &full, &err) == 0);
    CHECK(sd_forward(full, tok, 20, false, got, &err) == 0);
    CHECK(!sd_seq_in_shallow_pool(full));
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 2);
    sd_seq_free(s);
    sd_seq_free(full);
    sd_seq_free(ref_seq);
    sd_model_kv_blocks_at(m, 1, &total, &free_now);
    CHECK_EQ_INT(free_now, 12);
    free(want);
    free(got);
    sd_model_free(m);
    sd_model_free(plain);
    ref_free(&r);
    remove(path);
}

/* The pool: blocks are taken as positions are written and returned on truncate/free; a forward whose
 * blocks the pool cannot give fails before any work, changing nothing ("KV pool full"); a sequence on
 * recycled, scattered blocks computes bitwise what it computes on fresh ones; --kv-mem too small for even
 * one block still gives one. */
static void test_kv_pool(void) {
    sd_err err = {{0}};
    ref r;
    cfg c = base;
    c.kv_heads = 2;
    const char *path = tmp_path("pool.gguf");
    REQUIRE(write_model(&c, path, &r, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0);
    REQUIRE(sd_model_kv_init(m, 6 * sd_model_kv_block_bytes(m), &err) == 0);
    CHECK(sd_model_kv_init(m, 0, &err) == -1); /* one pool per model */
    int total, free_now, V = c.vocab;
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(total, 6);
    CHECK_EQ_INT(free_now, 6);
    int32_t tok[40];
    make_tokens(tok, 40, V, 9);
    float *want = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    sd_seq *a = NULL, *b = NULL, *cs = NULL;
    REQUIRE(sd_seq_new(m, 64, 0, &cs, &err) == 0);
    CHECK(sd_forward(cs, tok, 33, false, want, &err) == 0); /* on blocks 0, 1, 2 */
    CHECK_EQ_INT(cs->n_blocks, 3);
    sd_seq_truncate(cs, 0);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 6);

    REQUIRE(sd_seq_new(m, 64, 0, &a, &err) == 0 && sd_seq_new(m, 64, 0, &b, &err) == 0);
    CHECK(sd_forward(a, tok, 20, false, got, &err) == 0);
    CHECK_EQ_INT(a->n_blocks, 2);
    CHECK(sd_forward(b, tok, 40, false, got, &err) == 0);
    CHECK_EQ_INT(b->n_blocks, 3);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 1);
    CHECK_EQ_INT(sd_seq_blocks_needed(cs, 33), 3);
    CHECK(sd_forward(cs, tok, 33, false, got, &err) == -1);
    CHECKF(strstr(err.msg, "KV pool full") != NULL, "%s", err.msg);
    CHECK(cs->pos == 0 && cs->n_blocks == 0);
    /* a batch of a's next row (no new block) and 17 of cs's (2 blocks): all or nothing */
    sd_row rows[18];
    int32_t id;
    rows[0] = (sd_row){.seq = a, .token = 7, .pos = 20, .out = SD_OUT_ARGMAX, .id = &id};
    for (int i = 0; i < 17; i++) rows[1 + i] = (sd_row){.seq = cs, .token = tok[i], .pos = i};
    CHECK(sd_forward_batch(m, rows, 18, &err) == -1);
    CHECK(a->pos == 20 && a->n_blocks == 2 && cs->pos == 0 && cs->n_blocks == 0);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 1);
    /* truncating b returns its blocks past the kept positions (a partial block stays) */
    sd_seq_truncate(b, 17);
    CHECK_EQ_INT(b->n_blocks, 2);
    sd_seq_truncate(b, 10);
    CHECK_EQ_INT(b->n_blocks, 1);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 3);
    /* cs now gets recycled blocks in another order: the same logits, bitwise */
    CHECK(sd_forward(cs, tok, 33, false, got, &err) == 0);
    CHECK(cs->table[0] != 0 || cs->table[1] != 1 || cs->table[2] != 2);
    CHECK(memcmp(want, got, sizeof(float) * V) == 0);
    sd_seq_free(a);
    sd_seq_free(b);
    sd_seq_free(cs);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 6);
    sd_model_kv_free(m);
    REQUIRE(sd_model_kv_init(m, 1, &err) == 0);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(total, 1);
    free(want);
    free(got);
    sd_model_free(m);
    ref_free(&r);
    remove(path);
}

/* The prefix cache: a sequence takes another's cached full blocks of the same tokens and root (read-only,
 * shared) and computes bitwise what a cold one does; other roots and other tokens get nothing; blocks
 * stay cached after their sequences end until fresh blocks run out (then the least recently used go);
 * truncating into a cached block drops it whole. */
static void test_prefix_cache(void) {
    sd_err err = {{0}};
    ref r;
    cfg c = base;
    c.kv_heads = 2;
    const char *path = tmp_path("prefix.gguf");
    REQUIRE(write_model(&c, path, &r, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(backend() && sd_model_load(path, NULL, g_be, &m, &err) == 0);
    REQUIRE(sd_model_kv_init(m, 8 * sd_model_kv_block_bytes(m), &err) == 0);
    int V = c.vocab, total, free_now;
    int32_t tok[48], other[48];
    make_tokens(tok, 48, V, 21);
    make_tokens(other, 48, V, 22);
    float *cold = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    uint64_t root = sd_kv_chain_root(0), root2 = sd_kv_chain_root(7);
    sd_seq *a = NULL, *b = NULL, *x = NULL;
    REQUIRE(sd_seq_new(m, 64, 0, &x, &err) == 0);
    CHECK(sd_forward(x, tok, 40, false, cold, &err) == 0); /* cold, never offered */
    sd_seq_free(x);
    REQUIRE(sd_seq_new(m, 64, 0, &a, &err) == 0 && sd_seq_new(m, 64, 0, &b, &err) == 0);
    CHECK(sd_forward(a, tok, 36, false, got, &err) == 0);
    sd_seq_cache_prefix(a, root, tok, 36); /* blocks 0 and 1 */
    CHECK_EQ_INT(a->n_cached, 2);
    CHECK_EQ_INT(sd_seq_share_prefix(b, root2, tok, 39), 0); /* another tenant: nothing */
    CHECK_EQ_INT(sd_seq_share_prefix(b, root, other, 39), 0); /* other tokens: nothing */
    CHECK_EQ_INT(sd_seq_share_prefix(b, root, tok, 39), 32);
    CHECK(b->pos == 32 && b->table[0] == a->table[0] && b->table[1] == a->table[1]);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 5); /* a: 3 blocks, b shares 2 */
    CHECK(sd_forward(b, tok + 32, 8, false, got, &err) == 0);
    CHECK(memcmp(cold, got, sizeof(float) * V) == 0);
    /* a ends; b keeps the shared blocks; then b ends too: its blocks stay cached */
    sd_seq_free(a);
    sd_seq_cache_prefix(b, root, tok, 40);
    sd_seq_truncate(b, 20); /* inside cached block 1, which b alone holds: kept, no longer cached */
    CHECK(b->pos == 20 && b->n_cached == 1);
    sd_seq_free(b);
    sd_model_kv_blocks(m, &total, &free_now);
    CHECK_EQ_INT(free_now, 8);
    REQUIRE(sd_seq_new(m, 64, 0, &a, &err) == 0);
    CHECK_EQ_INT(sd_seq_share_prefix(a, root, tok, 47), 16); /* block 1 left the cache when b wrote into it */
    CHECK(sd_forward(a, tok + 16, 24, false, got, &err) == 0);
    CHECK(memcmp(cold, got, sizeof(float) * V) == 0);
    sd_seq_free(a);
    /* 8 fresh blocks for other tokens: the cached ones are reused (least recently used first) */
    REQUIRE(sd_seq_new(m, 128, 0, &x, &err) == 0);
    int32_t many[128];
    make_tokens(many, 128, V, 23);
    CHECK(sd_forward(x, many, 128, false, got, &err) == 0);
    sd_seq_free(x);
    REQUIRE(sd_seq_new(m, 64, 0, &a, &err) == 0);
    CHECK_EQ_INT(sd_seq_share_prefix(a, root, tok, 47), 0);
    CHECK(sd_forward(a, tok, 40, false, got, &err) == 0);
    CHECK(memcmp(cold, got, sizeof(float) * V) == 0);
    sd_seq_free(a);
    free(cold);
    free(got);
    sd_model_free(m);
    ref_free(&r);
    remove(path);
}

int main(void) {
    if (make_tmpdir("specd_test_forward_")) return 1;
    RUN(test_llama_f32);
    RUN(test_forward_greedy_ids);
    RUN(test_llama_gqa_f16_tied);
    RUN(test_llama_q8_0);
    RUN(test_qwen2_biases_neox);
    RUN(test_qwen3_qk_norm);
    RUN(test_qwen3_q8_0);
    RUN(test_truncate_exact);
    RUN(test_errors);
    RUN(test_batch_exact);
    RUN(test_batch_errors);
    RUN(test_kv_committed_as_used);
    RUN(test_kv_pool);
    RUN(test_kv_shallow_pool);
    RUN(test_prefix_cache);
    RUN(test_mkmodel_tiny);
    RUN(test_shared_models);
    if (g_be) g_be->destroy(g_be);
    remove_tmpdir();
    return TEST_DONE();
}
