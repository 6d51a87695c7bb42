/* Model loading: the real aidreams files (GGUF and llama2.c give the same model), synthetic llama/qwen2/
 * qwen3 GGUFs written here, RoPE tables, size accounting, and every malformed-model case (each fails with
 * a message naming the file and the problem; nothing leaks: a counting backend checks every upload and
 * allocation is returned). */
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "kernels/backend.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/model_internal.h"
#include "tests/test.h"
#include "tests/test_util.h"

/* ---- a counting backend: weights alias the mapping, allocations are host memory ---- */
static int g_uploaded, g_allocs, g_fail_upload_at = -1, g_upload_calls;

static float *mock_alloc(sd_backend *b, size_t n, sd_err *err) {
    float *p = calloc(n ? n : 1, sizeof *p);
    if (p) g_allocs++;
    else sd_errf(err, "mock alloc failed");
    return p;
}
static void mock_release(sd_backend *b, void *p) { free(p); g_allocs--; }
static int mock_upload(sd_backend *b, sd_tensor *t, sd_err *err) {
    if (g_upload_calls++ == g_fail_upload_at) return sd_errf(err, "mock upload refused");
    t->data = (void *)t->host;
    t->data_type = t->type;
    g_uploaded++;
    return 0;
}
static void mock_free_weight(sd_backend *b, sd_tensor *t) { t->data = NULL; g_uploaded--; }
static void mock_copy(sd_backend *b, float *dst, const float *src, size_t n) { memcpy(dst, src, n * sizeof *dst); }

static sd_backend g_be = {.name = "mock", .n_threads = 1, .alloc = mock_alloc, .release = mock_release,
                          .upload_weight = mock_upload, .free_weight = mock_free_weight,
                          .to_host = mock_copy, .from_host = mock_copy};

/* ---- a synthetic GGUF model with knobs for breaking it ---- */
typedef struct spec {
    const char *arch;
    int dim, layers, heads, kv_heads, ffn, vocab, ctx, head_dim;
    bool tied;
    const char *skip;        /* tensor to leave out */
    const char *wrong_shape; /* tensor written with one row too many */
    const char *q4;          /* tensor written as mxfp4 (a GGML type specd does not compute) */
    const char *drop_key;    /* metadata suffix to leave out */
    const char *rope_type;   /* rope.scaling.type */
    float rope_factor;
    int bad_ints;            /* 1: block_count 0; 2: head_count 3; 3: head_count_kv 3; 4: ctx 0 */
    int vec_type;            /* type of norm vectors (0: f32) */
} spec;

static spec base_spec(const char *arch) {
    return (spec){.arch = arch, .dim = 64, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 96, .vocab = 272,
                  .ctx = 64, .head_dim = 16};
}

static void fill_det(void *ctx, void *buf, size_t offset, size_t nbytes) {
    /* small F32 values from a hash of the position: deterministic, cheap */
    float *f = buf;
    for (size_t i = 0; i < nbytes / 4; i++) {
        uint32_t x = (uint32_t)((offset / 4 + i) * 2654435761u) ^ (uint32_t)(uintptr_t)ctx;
        f[i] = ((float)(x % 2001) - 1000.0f) * 1e-4f;
    }
}

static void add_tensor(gguf_writer *w, const spec *s, const char *name, int64_t cols, int64_t rows) {
    if (s->skip && !strcmp(s->skip, name)) return;
    int64_t ne[2] = {cols, rows + (s->wrong_shape && !strcmp(s->wrong_shape, name))};
    int nd = rows == 1 && ne[1] == 1 ? 1 : 2;
    if (s->q4 && !strcmp(s->q4, name)) {
        gguf_w_tensor_fn(w, name, 39 /* GGML_TYPE_MXFP4 */, nd, ne, fill_det, (void *)1);
        return;
    }
    int type = nd == 1 && s->vec_type ? s->vec_type : SD_F32;
    gguf_w_tensor_fn(w, name, (uint32_t)type, nd, ne, fill_det, (void *)(uintptr_t)strlen(name));
}

static void key_u32(gguf_writer *w, const spec *s, const char *suffix, uint32_t v) {
    if (s->drop_key && !strcmp(s->drop_key, suffix)) return;
    char k[128];
    snprintf(k, sizeof k, "%s.%s", s->arch, suffix);
    gguf_w_u32(w, k, v);
}

static void key_f32(gguf_writer *w, const spec *s, const char *suffix, float v) {
    if (s->drop_key && !strcmp(s->drop_key, suffix)) return;
    char k[128];
    snprintf(k, sizeof k, "%s.%s", s->arch, suffix);
    gguf_w_f32(w, k, v);
}

static void write_vocab(gguf_writer *w, int n) {
    char **toks = malloc((size_t)n * sizeof *toks);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    for (int i = 0; i < n; i++) {
        toks[i] = malloc(16);
        if (i < 3) snprintf(toks[i], 16, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259) snprintf(toks[i], 16, "<0x%02X>", i - 3);
        else snprintf(toks[i], 16, "%c%c", 'a' + (i - 259) % 26, 'a' + (i - 259) / 26);
        scores[i] = i < 259 ? 0.0f : -(float)i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
    }
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, (size_t)n);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    for (int i = 0; i < n; i++) free(toks[i]);
    free(toks);
    free(scores);
    free(types);
}

static int write_model(const spec *s, const char *path) {
    gguf_writer *w = gguf_writer_new(32);
    gguf_w_str(w, "general.architecture", s->arch);
    key_u32(w, s, "context_length", s->bad_ints == 4 ? 0 : (uint32_t)s->ctx);
    key_u32(w, s, "embedding_length", (uint32_t)s->dim);
    key_u32(w, s, "block_count", s->bad_ints == 1 ? 0 : (uint32_t)s->layers);
    key_u32(w, s, "feed_forward_length", (uint32_t)s->ffn);
    key_u32(w, s, "attention.head_count", s->bad_ints == 2 ? 3 : (uint32_t)s->heads);
    key_u32(w, s, "attention.head_count_kv", s->bad_ints == 3 ? 3 : (uint32_t)s->kv_heads);
    key_f32(w, s, "attention.layer_norm_rms_epsilon", 1e-6f);
    key_f32(w, s, "rope.freq_base", 500000.0f);
    if (s->head_dim != s->dim / s->heads) key_u32(w, s, "attention.key_length", (uint32_t)s->head_dim);
    if (s->rope_type) {
        char k[128];
        snprintf(k, sizeof k, "%s.rope.scaling.type", s->arch);
        gguf_w_str(w, k, s->rope_type);
        key_f32(w, s, "rope.scaling.factor", s->rope_factor);
    }
    write_vocab(w, s->vocab);
    int64_t q = (int64_t)s->heads * s->head_dim, kv = (int64_t)s->kv_heads * s->head_dim;
    add_tensor(w, s, "token_embd.weight", s->dim, s->vocab);
    add_tensor(w, s, "output_norm.weight", s->dim, 1);
    if (!s->tied) add_tensor(w, s, "output.weight", s->dim, s->vocab);
    bool qwen2 = !strcmp(s->arch, "qwen2"), qwen3 = !strcmp(s->arch, "qwen3");
    for (int l = 0; l < s->layers; l++) {
        char n[64];
#define T(suffix, c, r) (snprintf(n, sizeof n, "blk.%d.%s", l, suffix), add_tensor(w, s, n, c, r))
        T("attn_norm.weight", s->dim, 1);
        T("attn_q.weight", s->dim, q);
        T("attn_k.weight", s->dim, kv);
        T("attn_v.weight", s->dim, kv);
        T("attn_output.weight", q, s->dim);
        if (qwen2) { T("attn_q.bias", q, 1); T("attn_k.bias", kv, 1); T("attn_v.bias", kv, 1); }
        if (qwen3) { T("attn_q_norm.weight", s->head_dim, 1); T("attn_k_norm.weight", s->head_dim, 1); }
        T("ffn_norm.weight", s->dim, 1);
        T("ffn_gate.weight", s->dim, s->ffn);
        T("ffn_up.weight", s->dim, s->ffn);
        T("ffn_down.weight", s->ffn, s->dim);
#undef T
    }
    sd_err err;
    int rc = gguf_writer_save(w, path, &err);
    if (rc) fprintf(stderr, "  write_model: %s\n", err.msg);
    gguf_writer_free(w);
    return rc;
}

/* ---- helpers ---- */

static size_t tbytes(const sd_tensor *t) { return sd_dtype_row_bytes(t->type, t->cols) * (size_t)t->rows; }

/* weight_bytes / bytes_per_token / n_params recomputed from the tensors, independently of the loader. */
static void check_accounting(const sd_model *m) {
    size_t all = 0, per_layer = 0;
    uint64_t params = 0;
    for (int l = 0; l < m->hp.n_layers; l++) {
        const sd_layer *L = &m->layers[l];
        const sd_tensor *t[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq, &L->bk, &L->bv,
                                &L->q_norm, &L->k_norm, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            per_layer += tbytes(t[i]);
            params += (uint64_t)t[i]->cols * (uint64_t)t[i]->rows;
            CHECK(t[i]->rows == 0 || t[i]->data != NULL);
        }
    }
    bool tied = m->output.host == m->tok_embd.host;
    all = per_layer + tbytes(&m->tok_embd) + tbytes(&m->out_norm) + (tied ? 0 : tbytes(&m->output));
    params += (uint64_t)m->hp.dim * (uint64_t)m->hp.vocab * (tied ? 1 : 2) + (uint64_t)m->hp.dim;
    CHECK_EQ_INT(m->weight_bytes, all);
    CHECK_EQ_INT(m->n_params, params);
    CHECK_EQ_INT(m->bytes_per_token, per_layer + tbytes(&m->out_norm) + tbytes(&m->output) +
                                         sd_dtype_row_bytes(m->tok_embd.type, m->hp.dim));
    CHECK(m->output.data != NULL && m->tok_embd.data != NULL && m->out_norm.data != NULL);
}

static void expect_load_fail(const char *path, const char *tok, const char *what) {
    sd_model *m = NULL;
    sd_err err = {{0}};
    int allocs = g_allocs, uploaded = g_uploaded;
    int rc = sd_model_load(path, tok, &g_be, &m, &err);
    CHECKF(rc == -1 && m == NULL, "%s: loaded", what);
    CHECKF(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    CHECKF(strstr(err.msg, what) != NULL, "'%s' not in: %s", what, err.msg);
    CHECK_EQ_INT(g_allocs, allocs);
    CHECK_EQ_INT(g_uploaded, uploaded);
    if (getenv("MODEL_TEST_VERBOSE")) fprintf(stderr, "  [%s] %s\n", what, err.msg);
    if (m) sd_model_free(m);
}

/* ---- tests ---- */

static void test_aidreams_gguf_and_bin_agree(void) {
    const char *gg = shared_path("models/aidreams260K.gguf"), *bin = shared_path("models/aidreams260K.bin"),
               *tok = shared_path("models/tok512.bin");
    if (!gg || !bin || !tok) SKIP("aidreams260K.{gguf,bin} or tok512.bin not in ../shared/models");
    sd_model *a = NULL, *b = NULL;
    sd_err err = {{0}};
    CHECKF(sd_model_load(gg, NULL, &g_be, &a, &err) == 0, "%s", err.msg);
    CHECKF(sd_model_load(bin, tok, &g_be, &b, &err) == 0, "%s", err.msg);
    REQUIRE(a && b);
    /* shared/README.md: dim 64, FFN 172, 4 layers, 4 heads, 4 KV heads, vocab 512, context 128 */
    CHECK_EQ_INT(a->hp.dim, 64);
    CHECK_EQ_INT(a->hp.ffn, 172);
    CHECK_EQ_INT(a->hp.n_layers, 4);
    CHECK_EQ_INT(a->hp.n_heads, 4);
    CHECK_EQ_INT(a->hp.n_kv_heads, 4);
    CHECK_EQ_INT(a->hp.vocab, 512);
    CHECK_EQ_INT(a->hp.ctx, 128);
    CHECK(a->hp.arch == SD_ARCH_LLAMA && !a->hp.rope_neox);
    const sd_hparams *x = &a->hp, *y = &b->hp;
    CHECK(x->arch == y->arch && x->dim == y->dim && x->n_layers == y->n_layers && x->n_heads == y->n_heads &&
          x->n_kv_heads == y->n_kv_heads && x->head_dim == y->head_dim && x->ffn == y->ffn &&
          x->vocab == y->vocab && x->ctx == y->ctx && x->n_rot == y->n_rot && x->rope_neox == y->rope_neox &&
          x->rope_scaling == y->rope_scaling);
    CHECK_NEAR(x->eps, y->eps, 0);
    CHECK_NEAR(x->rope_base, y->rope_base, 0);
    /* the same weights: the converter copies them in llama2.c's layout */
    for (int l = 0; l < x->n_layers; l++) {
        CHECK(!memcmp(a->layers[l].wq.host, b->layers[l].wq.host, tbytes(&a->layers[l].wq)));
        CHECK(!memcmp(a->layers[l].w_down.host, b->layers[l].w_down.host, tbytes(&a->layers[l].w_down)));
        CHECK(!memcmp(a->layers[l].w_up.host, b->layers[l].w_up.host, tbytes(&a->layers[l].w_up)));
        CHECK(!memcmp(a->layers[l].ffn_norm.host, b->layers[l].ffn_norm.host, tbytes(&a->layers[l].ffn_norm)));
    }
    CHECK(!memcmp(a->output.host, b->output.host, tbytes(&a->output)));
    CHECK(b->output.host == b->tok_embd.host); /* the .bin shares its classifier */
    CHECK(b->tok != NULL && a->tok != NULL);
    /* the .bin is mmapped, not copied */
    CHECK((const char *)b->tok_embd.host == (const char *)b->map + 28);
    check_accounting(a);
    check_accounting(b);
    CHECK_EQ_INT(b->n_params + (uint64_t)64 * 512, a->n_params); /* the .gguf stores the classifier twice */
    sd_model_free(a);
    sd_model_free(b);
    CHECK_EQ_INT(g_uploaded, 0);
    CHECK_EQ_INT(g_allocs, 0);
}

static void test_aidreams_draft(void) {
    const char *gg = shared_path("models/aidreams-draft.gguf"), *bin = shared_path("models/aidreams-draft.bin"),
               *tok = shared_path("models/tok512.bin");
    if (!gg || !bin || !tok) SKIP("aidreams-draft.{gguf,bin} or tok512.bin not in ../shared/models");
    sd_model *a = NULL, *b = NULL;
    sd_err err = {{0}};
    CHECKF(sd_model_load(gg, NULL, &g_be, &a, &err) == 0, "%s", err.msg);
    CHECKF(sd_model_load(bin, tok, &g_be, &b, &err) == 0, "%s", err.msg);
    REQUIRE(a && b);
    CHECK_EQ_INT(a->hp.dim, 32); /* shared/README.md: dim 32, FFN 88, 2 layers, 2 heads */
    CHECK_EQ_INT(a->hp.ffn, 88);
    CHECK_EQ_INT(a->hp.n_layers, 2);
    CHECK_EQ_INT(b->hp.n_heads, 2);
    CHECK_EQ_INT(b->hp.vocab, 512);
    CHECK(a->hp.dim == b->hp.dim && a->hp.ctx == b->hp.ctx && a->hp.n_kv_heads == b->hp.n_kv_heads);
    sd_model_free(a);
    sd_model_free(b);
}

static void test_synthetic_archs(void) {
    const char *archs[] = {"llama", "qwen2", "qwen3"};
    for (int i = 0; i < 3; i++) {
        spec s = base_spec(archs[i]);
        s.tied = i == 1;
        if (i == 2) s.head_dim = 32; /* qwen3: key_length != dim / heads */
        const char *p = tmp_path("syn.gguf");
        REQUIRE(write_model(&s, p) == 0);
        sd_model *m = NULL;
        sd_err err = {{0}};
        CHECKF(sd_model_load(p, NULL, &g_be, &m, &err) == 0, "%s: %s", archs[i], err.msg);
        if (!m) continue;
        CHECK_EQ_INT(m->hp.arch, i + 1);
        CHECK_STR_EQ(sd_arch_name(m->hp.arch), archs[i]); /* the name info and the daemon report */
        CHECK_EQ_INT(m->hp.rope_neox, i > 0);
        CHECK_EQ_INT(m->hp.head_dim, s.head_dim);
        CHECK_EQ_INT(m->hp.n_rot, s.head_dim);
        CHECK_EQ_INT(m->hp.n_kv_heads, 2);
        CHECK_EQ_INT(m->hp.vocab, 272);
        CHECK_NEAR(m->hp.eps, 1e-6, 1e-12);
        CHECK_NEAR(m->hp.rope_base, 500000, 0);
        CHECK_EQ_INT(m->layers[1].bq.rows != 0, i == 1);
        CHECK_EQ_INT(m->layers[1].bk.cols, i == 1 ? 2 * s.head_dim : 0);
        CHECK_EQ_INT(m->layers[0].q_norm.rows != 0, i == 2);
        CHECK_EQ_INT(m->layers[0].k_norm.cols, i == 2 ? s.head_dim : 0);
        CHECK_EQ_INT(m->layers[0].wq.rows, 4 * s.head_dim);
        CHECK_EQ_INT(m->layers[0].wo.cols, 4 * s.head_dim);
        CHECK_EQ_INT(m->output.host == m->tok_embd.host, s.tied);
        check_accounting(m);
        sd_model_free(m);
        CHECK_EQ_INT(g_uploaded, 0);
        CHECK_EQ_INT(g_allocs, 0);
    }
}

/* Norm vectors stored as f16 or bf16 are converted to f32 copies holding the same values. */
static void test_vectors_converted(void) {
    int types[2] = {SD_F16, SD_BF16};
    for (int k = 0; k < 2; k++) {
        spec s = base_spec("qwen3");
        s.vec_type = types[k];
        const char *p = tmp_path("vec.gguf");
        REQUIRE(write_model(&s, p) == 0);
        sd_model *m = NULL;
        sd_err err = {{0}};
        CHECKF(sd_model_load(p, NULL, &g_be, &m, &err) == 0, "%s", err.msg);
        if (!m) continue;
        const sd_tensor *vs[3] = {&m->out_norm, &m->layers[1].ffn_norm, &m->layers[0].k_norm};
        for (int i = 0; i < 3; i++) {
            const gguf_tensor_info *ti = gguf_find_tensor(m->gguf, vs[i]->name);
            REQUIRE(ti && (int)ti->type == types[k]);
            CHECK(vs[i]->type == SD_F32 && vs[i]->host != ti->data);
            const uint16_t *raw = ti->data;
            const float *got = vs[i]->host;
            for (int64_t j = 0; j < ti->ne[0]; j++) {
                float want;
                if (types[k] == SD_F16) want = h2f(raw[j]);
                else { uint32_t b = (uint32_t)raw[j] << 16; memcpy(&want, &b, 4); }
                if (!(got[j] == want || (isnan(got[j]) && isnan(want)))) { CHECKF(0, "%s[%lld]", vs[i]->name, (long long)j); break; }
            }
        }
        CHECK(m->layers[0].wq.type == SD_F32);
        sd_model_free(m);
    }
}

static void test_rope_tables(void) {
    sd_hparams hp = {.n_rot = 64, .rope_base = 500000.0f};
    float a[32], b[32];
    sd_rope_inv_freq(&hp, NULL, a);
    for (int j = 0; j < 32; j++) CHECK_NEAR(a[j], 1.0 / pow(500000.0, j / 32.0), 1e-6 * a[j]);
    hp.rope_scaling = 1;
    hp.rope_factor = 4;
    sd_rope_inv_freq(&hp, NULL, b);
    for (int j = 0; j < 32; j++) CHECK_NEAR(b[j], a[j] / 4, 1e-6 * a[j]);
    /* llama3: high frequencies kept, low ones divided by the factor, the band between interpolated */
    hp.rope_scaling = 2;
    hp.rope_factor = 8;
    hp.rope_low_freq = 1;
    hp.rope_high_freq = 4;
    hp.rope_orig_ctx = 8192;
    sd_rope_inv_freq(&hp, NULL, b);
    int kept = 0, slowed = 0, between = 0;
    for (int j = 0; j < 32; j++) {
        double wl = 2 * M_PI / a[j];
        if (wl < 8192 / 4.0) { CHECK_NEAR(b[j], a[j], 1e-7); kept++; }
        else if (wl > 8192) { CHECK_NEAR(b[j], a[j] / 8, 1e-7); slowed++; }
        else { CHECK(b[j] < a[j] && b[j] > a[j] / 8); between++; }
        if (j) CHECK(b[j] < b[j - 1]); /* still monotonic */
    }
    CHECK(kept > 0 && slowed > 0 && between > 0);
    float ff[32];
    for (int j = 0; j < 32; j++) ff[j] = 1.0f + j;
    sd_rope_inv_freq(&hp, ff, b);
    for (int j = 0; j < 32; j++) CHECK_NEAR(b[j], a[j] / ff[j], 1e-6 * a[j]);
}

static void test_rope_scaling_metadata(void) {
    spec s = base_spec("llama");
    s.rope_type = "linear";
    s.rope_factor = 2;
    const char *p = tmp_path("rope.gguf");
    REQUIRE(write_model(&s, p) == 0);
    sd_model *m = NULL;
    sd_err err = {{0}};
    CHECKF(sd_model_load(p, NULL, &g_be, &m, &err) == 0, "%s", err.msg);
    REQUIRE(m);
    CHECK_EQ_INT(m->hp.rope_scaling, 1);
    float host[8];
    g_be.to_host(&g_be, host, m->rope_inv_freq, 8);
    CHECK_NEAR(host[1], pow(500000.0, -2.0 / 16) / 2, 1e-9);
    sd_model_free(m);
    s.rope_type = "llama3";
    s.rope_factor = 8;
    REQUIRE(write_model(&s, p) == 0);
    CHECKF(sd_model_load(p, NULL, &g_be, &m, &err) == 0, "%s", err.msg);
    REQUIRE(m);
    CHECK_EQ_INT(m->hp.rope_scaling, 2);
    CHECK_NEAR(m->hp.rope_factor, 8, 0);
    CHECK_EQ_INT(m->hp.rope_orig_ctx, 8192);
    sd_model_free(m);
    s.rope_type = "yarn";
    REQUIRE(write_model(&s, p) == 0);
    expect_load_fail(p, NULL, "rope scaling type 'yarn'");
}

static void test_broken_models(void) {
    struct { const char *arch, *skip, *wrong, *q4, *drop; int bad; const char *what; } cases[] = {
        {"llama", "blk.1.ffn_up.weight", NULL, NULL, NULL, 0, "missing tensor 'blk.1.ffn_up.weight'"},
        {"llama", "token_embd.weight", NULL, NULL, NULL, 0, "missing tensor 'token_embd.weight'"},
        {"llama", "output_norm.weight", NULL, NULL, NULL, 0, "missing tensor 'output_norm.weight'"},
        {"qwen2", "blk.0.attn_k.bias", NULL, NULL, NULL, 0, "missing tensor 'blk.0.attn_k.bias'"},
        {"qwen3", "blk.1.attn_q_norm.weight", NULL, NULL, NULL, 0, "missing tensor 'blk.1.attn_q_norm.weight'"},
        {"llama", NULL, "blk.0.attn_k.weight", NULL, NULL, 0, "tensor 'blk.0.attn_k.weight' has shape"},
        {"llama", NULL, "blk.1.ffn_down.weight", NULL, NULL, 0, "tensor 'blk.1.ffn_down.weight' has shape"},
        {"llama", NULL, "output.weight", NULL, NULL, 0, "tensor 'output.weight' has shape"},
        {"llama", NULL, NULL, "blk.0.attn_v.weight", NULL, 0, "tensor 'blk.0.attn_v.weight' has type mxfp4, which is not supported (f32, f16, bf16, q8_0, q4_0"},
        {"llama", NULL, NULL, NULL, "block_count", 0, "missing metadata key 'llama.block_count'"},
        {"llama", NULL, NULL, NULL, "attention.layer_norm_rms_epsilon", 0, "layer_norm_rms_epsilon"},
        {"llama", NULL, NULL, NULL, "embedding_length", 0, "llama.embedding_length"},
        {"llama", NULL, NULL, NULL, NULL, 1, "block_count = 0"},
        {"llama", NULL, NULL, NULL, NULL, 2, "does not divide"},
        {"llama", NULL, NULL, NULL, NULL, 3, "head_count_kv"},
        {"llama", NULL, NULL, NULL, NULL, 4, "context_length = 0"},
        {"gpt2", NULL, NULL, NULL, NULL, 0, "architecture 'gpt2' is not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        spec s = base_spec(cases[i].arch);
        s.skip = cases[i].skip;
        s.wrong_shape = cases[i].wrong;
        s.q4 = cases[i].q4;
        s.drop_key = cases[i].drop;
        s.bad_ints = cases[i].bad;
        const char *p = tmp_path("broken.gguf");
        REQUIRE(write_model(&s, p) == 0);
        expect_load_fail(p, NULL, cases[i].what);
    }
    /* a vocabulary-only GGUF is not a model */
    const char *voc = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    if (voc) expect_load_fail(voc, NULL, "missing tensor 'token_embd.weight'");
    expect_load_fail(tmp_path("no-such-file.gguf"), NULL, "cannot open");
}

/* A model claiming 16M positions costs nothing until they are used: K/V memory is the pool's (--kv-mem),
 * a sequence's context only its block table. A backend without a KV pool is refused by name, not crashed. */
static void test_context_against_memory(void) {
    spec s = base_spec("llama");
    s.layers = 16;
    s.ctx = 1 << 24;
    const char *p = tmp_path("bigctx.gguf");
    REQUIRE(write_model(&s, p) == 0);
    sd_model *m = NULL;
    sd_err err;
    REQUIRE(sd_model_load(p, NULL, &g_be, &m, &err) == 0);
    sd_seq *q = NULL;
    CHECK(sd_seq_new(m, 0, 0, &q, &err) == -1 && q == NULL); /* the mock backend has no kv_mem_alloc */
    CHECKF(strstr(err.msg, "has no KV pool"), "%s", err.msg);
    sd_model_free(m);
}

/* Upload failing at every point of the load leaves nothing uploaded or allocated behind. */
static void test_upload_failure_cleans_up(void) {
    spec s = base_spec("qwen2");
    const char *p = tmp_path("up.gguf");
    REQUIRE(write_model(&s, p) == 0);
    int n_tensors = 3 + 12 * s.layers; /* qwen2: 12 per layer (with biases) + embedding, norm, output */
    for (int at = 0; at < n_tensors; at++) {
        g_fail_upload_at = at;
        g_upload_calls = 0;
        expect_load_fail(p, NULL, "mock upload refused");
    }
    g_fail_upload_at = n_tensors;
    g_upload_calls = 0;
    sd_model *m = NULL;
    sd_err err;
    CHECK(sd_model_load(p, NULL, &g_be, &m, &err) == 0);
    CHECK_EQ_INT(g_uploaded, n_tensors);
    sd_model_free(m);
    g_fail_upload_at = -1;
}

static int copy_prefix(const char *src, const char *dst, long len, long extra) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    if (!a || !b) { if (a) fclose(a); if (b) fclose(b); return -1; }
    for (long i = 0; i < len; i++) {
        int c = fgetc(a);
        if (c == EOF) break;
        fputc(c, b);
    }
    for (long i = 0; i < extra; i++) fputc(0, b);
    fclose(a);
    return fclose(b);
}

static void test_broken_llama2c(void) {
    const char *bin = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    if (!bin || !tok) SKIP("aidreams260K.bin or tok512.bin not in ../shared/models");
    struct stat st;
    REQUIRE(stat(bin, &st) == 0);
    const char *p = tmp_path("broken.bin");
    REQUIRE(copy_prefix(bin, p, st.st_size - 4, 0) == 0);
    expect_load_fail(p, tok, "does not match its header");
    REQUIRE(copy_prefix(bin, p, st.st_size, 4) == 0);
    expect_load_fail(p, tok, "does not match its header");
    REQUIRE(copy_prefix(bin, p, 20, 0) == 0);
    expect_load_fail(p, tok, "too short");
    expect_load_fail(bin, NULL, "tokenizer");
    /* header corruptions: n_heads 0, dim not a multiple of heads, absurd layers, kv heads not dividing */
    int32_t hdr[7];
    FILE *f = fopen(bin, "rb");
    REQUIRE(f && fread(hdr, 4, 7, f) == 7);
    fclose(f);
    struct { int field; int32_t value; const char *what; } cases[] = {
        {3, 0, "n_heads = 0"}, {0, 66, "not a positive multiple"}, {2, 1 << 30, "block_count"},
        {4, 3, "head_count_kv"}, {5, 0, "vocabulary size"}, {5, INT32_MIN, "vocabulary size"},
        {6, -5, "context_length"}, {1, 0, "feed_forward"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        REQUIRE(copy_prefix(bin, p, st.st_size, 0) == 0);
        FILE *g = fopen(p, "r+b");
        REQUIRE(g);
        fseek(g, cases[i].field * 4, SEEK_SET);
        fwrite(&cases[i].value, 4, 1, g);
        fclose(g);
        expect_load_fail(p, tok, cases[i].what);
    }
    /* a separate classifier (negative vocab) with the extra bytes present loads */
    REQUIRE(copy_prefix(bin, p, st.st_size, (long)hdr[0] * hdr[5] * 4) == 0);
    FILE *g = fopen(p, "r+b");
    int32_t neg = -hdr[5];
    fseek(g, 5 * 4, SEEK_SET);
    fwrite(&neg, 4, 1, g);
    fclose(g);
    sd_model *m = NULL;
    sd_err err;
    CHECKF(sd_model_load(p, tok, &g_be, &m, &err) == 0, "%s", err.msg);
    if (m) {
        CHECK(m->output.host != m->tok_embd.host);
        CHECK_EQ_INT((const char *)m->output.host - (const char *)m->map, st.st_size);
        check_accounting(m);
        sd_model_free(m);
    }
}

static void test_info_command(void) {
    char bin[512], out[8192], args[1024];
    snprintf(bin, sizeof bin, "%s/specd", getenv("BUILD") ? getenv("BUILD") : "build");
    if (access(bin, X_OK)) SKIP("specd binary not built");
    CHECK_EQ_INT(run_specd_out("info", out, sizeof out), 2);
    CHECK(strstr(out, "-m MODEL is required") != NULL && strstr(out, "specd info --help") != NULL);
    CHECK_EQ_INT(run_specd_out("info -m", out, sizeof out), 2);
    CHECK_EQ_INT(run_specd_out("info -m x.gguf --bogus", out, sizeof out), 2);
    /* a corrupt file: exit 1, message naming the file */
    const char *bad = tmp_path("corrupt.gguf");
    FILE *f = fopen(bad, "wb");
    REQUIRE(f);
    fwrite("GGUF\x03\0\0\0\xff\xff", 1, 10, f);
    fclose(f);
    snprintf(args, sizeof args, "info -m '%s'", bad);
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 1);
    CHECK(strstr(out, bad) != NULL && strstr(out, "truncated") != NULL);
    /* a good synthetic model: exit 0 and the figures printed */
    spec s = base_spec("qwen2");
    const char *good = tmp_path("info.gguf");
    REQUIRE(write_model(&s, good) == 0);
    snprintf(args, sizeof args, "info -m '%s'", good);
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 0);
    CHECK(strstr(out, "qwen2") != NULL);
    CHECK(strstr(out, "feed-forward:       96") != NULL);
    CHECK(strstr(out, "bytes read / token") != NULL);
    /* a file with a type specd does not compute is still described, and says which tensor stops it */
    s.q4 = "blk.1.attn_q.weight";
    REQUIRE(write_model(&s, good) == 0);
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 0);
    CHECK(strstr(out, "mxfp4: 1") != NULL);
    CHECKF(strstr(out, "not computable:     tensor 'blk.1.attn_q.weight' has type mxfp4") != NULL, "%s", out);
    /* tokenize reads the vocabulary size from a llama2.c header: INT32_MIN (whose negation overflows) is
     * an error, not undefined behaviour */
    const char *l2c = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    if (!l2c || !tok) return;
    const char *hb = tmp_path("intmin.bin");
    f = fopen(hb, "wb");
    REQUIRE(f);
    int32_t h[7] = {64, 172, 4, 4, 4, INT32_MIN, 128};
    fwrite(h, 4, 7, f);
    fclose(f);
    snprintf(args, sizeof args, "tokenize -m '%s' -z '%s' hello", hb, tok);
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 1);
    CHECKF(strstr(out, "header") != NULL, "%s", out);
}

/* --kv-type: the start-up report gives the K/V type and bytes per position (F16 half of F32: 2 x layers x
 * kv_dim x 2 bytes); a type that is not f16/f32 is refused by name; --ctx above the training context warns. */
static void test_kv_type_option(void) {
    char bin[512], out[8192], args[1024];
    snprintf(bin, sizeof bin, "%s/specd", getenv("BUILD") ? getenv("BUILD") : "build");
    if (access(bin, X_OK)) SKIP("specd binary not built");
    const char *m = shared_path("models/aidreams260K.gguf");
    if (!m) SKIP("shared model aidreams260K.gguf missing");
    sd_err err = {{0}};
    sd_model *md = NULL;
    REQUIRE(sd_model_describe(m, NULL, &md, &err) == 0);
    size_t per = 2 * (size_t)md->hp.n_layers * (size_t)md->hp.n_kv_heads * (size_t)md->hp.head_dim;
    int train = md->hp.ctx;
    sd_model_free(md);
    static const char *types[] = {"f16", "f32"};
    char want[128];
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "generate -m '%s' --device cpu -n 2 --kv-type %s -p hi", m, types[i]);
        CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 0);
        snprintf(want, sizeof want, "(%s, %zu bytes per position", types[i], per * (i ? 4 : 2));
        CHECKF(strstr(out, want) != NULL, "no '%s' in: %s", want, out);
        CHECK(strstr(out, "warning") == NULL);
    }
    snprintf(args, sizeof args, "generate -m '%s' --device cpu -n 2 --kv-type q8_0 -p hi", m);
    CHECK(run_specd_out(args, out, sizeof out) != 0);
    CHECKF(strstr(out, "--kv-type q8_0") != NULL, "%s", out);
    snprintf(args, sizeof args, "generate -m '%s' --device cpu -n 2 --ctx %d -p hi", m, 2 * train);
    CHECK_EQ_INT(run_specd_out(args, out, sizeof out), 0);
    snprintf(want, sizeof want, "warning: --ctx %d is above the %d positions", 2 * train, train);
    CHECKF(strstr(out, want) != NULL, "%s", out);
}

/* The tensor table (model.h) holds every field of sd_layer once, and its names find their rows. */
static void test_tensor_table(void) {
    CHECK_EQ_INT(SD_LAYER_TENSORS * sizeof(sd_tensor), sizeof(sd_layer));
    bool seen[SD_LAYER_TENSORS] = {0};
    for (int i = 0; i < SD_LAYER_TENSORS; i++) {
        size_t f = sd_layer_tensors[i].field;
        REQUIRE(f % sizeof(sd_tensor) == 0 && f / sizeof(sd_tensor) < SD_LAYER_TENSORS);
        CHECKF(!seen[f / sizeof(sd_tensor)], "%s: a field named twice", sd_layer_tensors[i].suffix);
        seen[f / sizeof(sd_tensor)] = true;
        CHECK_EQ_INT(sd_layer_tensor_find(sd_layer_tensors[i].suffix), i);
    }
    CHECK_EQ_INT(sd_layer_tensor_find("attn_qkv.weight"), -1);
    sd_layer L;
    CHECK(sd_layer_tensor_at(&L, sd_layer_tensor_find("ffn_down.weight")) == &L.w_down);
    sd_hparams hp = {.dim = 64, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32, .ffn = 96};
    CHECK_EQ_INT(sd_dim_size(&hp, SD_DIM_Q), 128);
    CHECK_EQ_INT(sd_dim_size(&hp, SD_DIM_KV), 64);
}

int main(void) {
    if (make_tmpdir("specd_test_model_")) return 1;
    RUN(test_tensor_table);
    RUN(test_aidreams_gguf_and_bin_agree);
    RUN(test_aidreams_draft);
    RUN(test_synthetic_archs);
    RUN(test_vectors_converted);
    RUN(test_rope_tables);
    RUN(test_rope_scaling_metadata);
    RUN(test_broken_models);
    RUN(test_upload_failure_cleans_up);
    RUN(test_broken_llama2c);
    RUN(test_context_against_memory);
    RUN(test_info_command);
    RUN(test_kv_type_option);
    remove_tmpdir();
    return TEST_DONE();
}
