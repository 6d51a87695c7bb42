/* mkmodel: presets and shapes load back, output is deterministic, F16/Q8_0 encode the same values as F32
 * (Q8_0 exactly as GGML defines it, across the writer's streaming chunks), the synthetic vocabulary
 * round-trips text, --vocab-from copies a tokenizer, and a pair's agreement follows --agreement. */
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "kernels/backend.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/quantize.h"
#include "model/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tests/test.h"
#include "tests/test_util.h"
#include "tools/mkmodel.h"

static sd_mk_opts small_opts(int type) {
    sd_mk_opts o;
    sd_mk_defaults(&o);
    o.type = type;
    return o;
}

static void test_tiny_preset(void) {
    sd_mk_opts o = small_opts(SD_F32);
    REQUIRE(sd_mk_preset("tiny", &o.shape) == 0);
    CHECK(sd_mk_preset("no-such", &o.shape) == -1);
    const char *p = tmp_path("tiny.gguf");
    sd_err err = {{0}};
    REQUIRE(sd_mk_write(&o, p, &err) == 0);
    struct stat st;
    REQUIRE(stat(p, &st) == 0);
    CHECK(st.st_size < 1000000);
    sd_backend *be;
    REQUIRE(sd_backend_cpu_new(1, &be, &err) == 0);
    sd_model *m = NULL;
    CHECKF(sd_model_load(p, NULL, be, &m, &err) == 0, "%s", err.msg);
    if (m) {
        CHECK_EQ_INT(m->hp.dim, o.shape.dim);
        CHECK_EQ_INT(m->hp.n_layers, o.shape.layers);
        CHECK_EQ_INT(m->hp.n_heads, o.shape.heads);
        CHECK_EQ_INT(m->hp.n_kv_heads, o.shape.kv_heads);
        CHECK_EQ_INT(m->hp.ffn, o.shape.ffn);
        CHECK_EQ_INT(m->hp.vocab, o.shape.vocab);
        CHECK_EQ_INT(m->hp.ctx, o.shape.ctx);
        CHECK(m->output.host != m->tok_embd.host);
        CHECK_EQ_INT(sd_tok_vocab_size(m->tok), o.shape.vocab);
        /* text round-trips through the synthetic vocabulary */
        const char *text = "hello world, kato mesu! 42 <s> \xc3\xa9t\xc3\xa9";
        int32_t *ids = NULL;
        int n = 0;
        CHECK(sd_tok_encode(m->tok, text, strlen(text), 0, &ids, &n, &err) == 0);
        char out[512] = {0}, piece[SD_TOK_MAX_PIECE + 16];
        sd_detok d;
        sd_detok_init(&d, m->tok, sd_tok_bos(m->tok)); /* the leading-space convention: as after BOS */
        for (int i = 0; i < n; i++) strcat(out, (sd_detok_push(&d, ids[i], piece, sizeof piece), piece));
        sd_detok_flush(&d, piece, sizeof piece);
        strcat(out, piece);
        CHECK_STR_EQ(out, text);
        free(ids);
        sd_model_free(m);
    }
    be->destroy(be);
}

static void test_deterministic(void) {
    sd_mk_opts o = small_opts(SD_F16);
    sd_err err;
    REQUIRE(sd_mk_write(&o, tmp_path("a.gguf"), &err) == 0);
    REQUIRE(sd_mk_write(&o, tmp_path("b.gguf"), &err) == 0);
    o.seed = 2;
    REQUIRE(sd_mk_write(&o, tmp_path("c.gguf"), &err) == 0);
    size_t na, nb, nc;
    uint8_t *a = (uint8_t *)read_all(tmp_path("a.gguf"), &na);
    uint8_t *b = (uint8_t *)read_all(tmp_path("b.gguf"), &nb);
    uint8_t *c = (uint8_t *)read_all(tmp_path("c.gguf"), &nc);
    REQUIRE(a && b && c);
    CHECK(na == nb && !memcmp(a, b, na));
    CHECK(na == nc && memcmp(a, c, na) != 0);
    free(a);
    free(b);
    free(c);
}

/* The same seed in F32, F16 and Q8_0: F16 is the rounded value, Q8_0 follows GGML's definition. Uses a
 * 32000-token vocabulary so the q8_0 embedding (4.3 MB) spans several of the writer's 4 MiB chunks. */
static void test_types_agree(void) {
    const char *voc = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    sd_mk_opts o = small_opts(SD_F32);
    o.shape.dim = 128;
    o.shape.heads = 4;
    o.shape.kv_heads = 2;
    o.shape.layers = 1;
    o.vocab_from = voc; /* NULL: synthetic 512 tokens, still checks values */
    sd_err err;
    REQUIRE(sd_mk_write(&o, tmp_path("f32.gguf"), &err) == 0);
    o.type = SD_F16;
    REQUIRE(sd_mk_write(&o, tmp_path("f16.gguf"), &err) == 0);
    o.type = SD_Q8_0;
    CHECKF(sd_mk_write(&o, tmp_path("q8.gguf"), &err) == 0, "%s", err.msg);
    gguf_file *a, *b, *c;
    REQUIRE(gguf_open(tmp_path("f32.gguf"), &a, &err) == 0);
    REQUIRE(gguf_open(tmp_path("f16.gguf"), &b, &err) == 0);
    REQUIRE(gguf_open(tmp_path("q8.gguf"), &c, &err) == 0);
    CHECK_EQ_INT(a->n_tensors, c->n_tensors);
    long checked = 0;
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const gguf_tensor_info *ta = &a->tensors[i], *tb = gguf_find_tensor(b, ta->name),
                               *tc = gguf_find_tensor(c, ta->name);
        REQUIRE(tb && tc);
        CHECK(ta->ne[0] == tc->ne[0] && ta->ne[1] == tc->ne[1]);
        if (ta->ne[1] == 1) { /* norms stay f32 */
            CHECK(tb->type == SD_F32 && tc->type == SD_F32);
            continue;
        }
        CHECK(tb->type == SD_F16 && tc->type == SD_Q8_0);
        int64_t n = ta->ne[0] * ta->ne[1];
        const float *x = ta->data;
        const uint16_t *h = tb->data;
        const sd_block_q8_0 *q = tc->data;
        for (int64_t j = 0; j < n; j++) {
            float f16 = h2f(h[j]);
            if (fabsf(f16 - x[j]) > fabsf(x[j]) * (1.0f / 1024) + 6e-8f) { CHECK_NEAR(f16, x[j], fabsf(x[j]) / 1024); break; }
        }
        for (int64_t blk = 0; blk < n / 32; blk++) {
            float amax = 0;
            for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(x[blk * 32 + k]));
            float d = h2f(q[blk].d);
            bool ok = fabsf(d - amax / 127) <= amax / 127 / 1024 + 1e-9f;
            for (int k = 0; k < 32 && ok; k++) {
                float want = amax ? roundf(x[blk * 32 + k] * (127 / amax)) : 0;
                ok = fabsf(q[blk].qs[k] - want) <= 1; /* 1/d is computed before d is rounded to f16 */
                ok = ok && fabsf(q[blk].qs[k] * d - x[blk * 32 + k]) <= d * 0.51f + amax * 1e-3f;
            }
            if (!ok) { CHECKF(ok, "%s block %lld", ta->name, (long long)blk); break; }
            checked++;
        }
    }
    CHECK(checked > 1000);
    if (voc) {
        const gguf_kv *src_toks = NULL;
        gguf_file *v;
        REQUIRE(gguf_open(voc, &v, &err) == 0);
        src_toks = gguf_find(v, "tokenizer.ggml.tokens");
        const gguf_kv *toks = gguf_find(c, "tokenizer.ggml.tokens");
        REQUIRE(src_toks && toks);
        CHECK(toks->raw_len == src_toks->raw_len && !memcmp(toks->raw, src_toks->raw, toks->raw_len));
        CHECK_EQ_INT(gguf_find_tensor(c, "token_embd.weight")->ne[1], 32000);
        gguf_close(v);
    }
    gguf_close(a);
    gguf_close(b);
    gguf_close(c);
}

/* Greedy target tokens and the draft's per-position agreement with them (teacher-forced). */
static int measure(const char *tp, const char *dp, int n_gen, double *agree, int *distinct) {
    sd_err err;
    sd_backend *be;
    if (sd_backend_cpu_new(1, &be, &err)) return -1;
    sd_model *t = NULL, *d = NULL;
    sd_seq *st = NULL, *sdq = NULL;
    int rc = -1;
    if (sd_model_load(tp, NULL, be, &t, &err) || sd_model_load(dp, NULL, be, &d, &err) ||
        sd_seq_new(t, 256, 0, &st, &err) || sd_seq_new(d, 256, 0, &sdq, &err)) {
        fprintf(stderr, "  %s\n", err.msg);
        goto out;
    }
    int V = t->hp.vocab;
    float *lt = malloc(sizeof(float) * V), *ld = malloc(sizeof(float) * (size_t)V * (n_gen + 1));
    int32_t toks[256];
    toks[0] = 1;
    int n = 1, hits = 0;
    bool seen[65536] = {0};
    *distinct = 0;
    for (int i = 0; i < n_gen; i++) {
        if (sd_forward(st, &toks[n - 1], 1, false, lt, &err)) goto out2;
        int best = 0;
        for (int v = 1; v < V; v++) if (lt[v] > lt[best]) best = v;
        toks[n++] = best;
        if (!seen[best]) { seen[best] = true; (*distinct)++; }
    }
    if (sd_forward(sdq, toks, n - 1, true, ld, &err)) goto out2;
    for (int i = 0; i < n - 1; i++) {
        const float *row = ld + (size_t)i * V;
        int best = 0;
        for (int v = 1; v < V; v++) if (row[v] > row[best]) best = v;
        hits += best == toks[i + 1];
    }
    *agree = (double)hits / (n - 1);
    rc = 0;
out2:
    free(lt);
    free(ld);
out:
    sd_seq_free(st);
    sd_seq_free(sdq);
    sd_model_free(t);
    sd_model_free(d);
    be->destroy(be);
    return rc;
}

/* --type of every quantized type: each matrix is the reference quantizer's output for the F32 model's
 * matrix (same seed), and the file loads and runs on the CPU backend. */
static void test_quant_types(void) {
    static const int types[] = {SD_Q4_0, SD_Q4_1, SD_Q5_0, SD_Q5_1, SD_Q2_K, SD_Q3_K, SD_Q4_K, SD_Q5_K, SD_Q6_K, SD_IQ4_NL, SD_IQ4_XS};
    sd_mk_opts o = small_opts(SD_F32);
    o.shape.dim = 256;
    o.shape.ffn = 512;
    o.shape.heads = 4;
    o.shape.kv_heads = 2;
    o.shape.layers = 1;
    sd_err err;
    REQUIRE(sd_mk_write(&o, tmp_path("base.gguf"), &err) == 0);
    gguf_file *a;
    REQUIRE(gguf_open(tmp_path("base.gguf"), &a, &err) == 0);
    sd_backend *be = NULL;
    REQUIRE(sd_backend_cpu_new(1, &be, &err) == 0);
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        o.type = types[t];
        gguf_file *q;
        REQUIRE(sd_mk_write(&o, tmp_path("q.gguf"), &err) == 0 && gguf_open(tmp_path("q.gguf"), &q, &err) == 0);
        const gguf_tensor_info *ta = gguf_find_tensor(a, "blk.0.ffn_down.weight"), *tq = gguf_find_tensor(q, ta->name);
        REQUIRE(tq && (int)tq->type == types[t]);
        uint8_t *want = malloc(tq->nbytes);
        CHECK(sd_quantize_row(types[t], ta->data, want, ta->ne[0] * ta->ne[1]) == 0);
        CHECKF(memcmp(want, tq->data, tq->nbytes) == 0, "%s", sd_dtype_name(types[t]));
        free(want);
        gguf_close(q);
        sd_model *m = NULL;
        sd_seq *s = NULL;
        int32_t tok[3] = {1, 2, 3}, id = -1;
        CHECKF(sd_model_load(tmp_path("q.gguf"), NULL, be, &m, &err) == 0 && sd_seq_new(m, 16, 0, &s, &err) == 0 &&
                   sd_forward_greedy(s, tok, 3, false, &id, &err) == 0,
               "%s: %s", sd_dtype_name(types[t]), err.msg);
        CHECK(id >= 0 && id < 512);
        sd_seq_free(s);
        sd_model_free(m);
    }
    be->destroy(be);
    gguf_close(a);
    o.type = SD_Q4_K;
    o.shape.ffn = 96;
    CHECK(sd_mk_write(&o, tmp_path("bad.gguf"), &err) != 0 && strstr(err.msg, "multiples of 256"));
}

static void test_pair_agreement(void) {
    sd_mk_opts t = small_opts(SD_F32), d;
    t.shape = (sd_mk_shape){256, 4, 4, 2, 512, 1024, 512};
    d = t;
    d.shape = (sd_mk_shape){64, 1, 2, 1, 128, 1024, 512};
    t.shared_dims = d.shared_dims = 64;
    d.seed = 99;
    d.layer_scale = 0.05f;
    sd_err err;
    REQUIRE(sd_mk_write(&d, tmp_path("pd.gguf"), &err) == 0);
    double agree[3];
    float wanted[3] = {1.0f, 0.8f, 0.3f};
    for (int i = 0; i < 3; i++) {
        t.layer_scale = sd_mk_scale_for_agreement(wanted[i]);
        REQUIRE(sd_mk_write(&t, tmp_path("pt.gguf"), &err) == 0);
        int distinct = 0;
        REQUIRE(measure(tmp_path("pt.gguf"), tmp_path("pd.gguf"), 48, &agree[i], &distinct) == 0);
        if (getenv("MK_VERBOSE")) fprintf(stderr, "  wanted %.2f: agreement %.3f, %d distinct tokens\n", wanted[i], agree[i], distinct);
        CHECKF(distinct >= 16, "%d distinct tokens in 48: degenerate text", distinct);
    }
    CHECK(agree[0] >= 0.9);          /* no perturbation: the draft follows the target */
    CHECK(agree[0] > agree[2]);      /* more perturbation, less agreement */
    CHECK(agree[1] > agree[2]);
    CHECK(agree[2] < 0.8);
}

static int run_specd(const char *args) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/specd mkmodel %s >/dev/null 2>&1", build, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void) {
    char bin[300], args[700];
    snprintf(bin, sizeof bin, "%s/specd", getenv("BUILD") ? getenv("BUILD") : "build");
    if (access(bin, X_OK)) SKIP("specd binary not built");
    CHECK_EQ_INT(run_specd(""), 2);                 /* no -o */
    CHECK_EQ_INT(run_specd("--preset nope -o x"), 2);
    CHECK_EQ_INT(run_specd("--type q4 -o x"), 2);
    CHECK_EQ_INT(run_specd("--dim abc -o x"), 2);
    CHECK_EQ_INT(run_specd("--agreement 1.5 -o x"), 2);
    CHECK_EQ_INT(run_specd("--help"), 0);
    snprintf(args, sizeof args, "--dim 60 --heads 4 -o '%s'", tmp_path("bad.gguf")); /* head dim 15: odd */
    CHECK_EQ_INT(run_specd(args), 1);
    snprintf(args, sizeof args, "--vocab-from '%s' -o '%s'", tmp_path("missing.gguf"), tmp_path("bad.gguf"));
    CHECK_EQ_INT(run_specd(args), 1);
    snprintf(args, sizeof args, "tiny --type q8_0 -o '%s' --pair '%s' --agreement 0.5", tmp_path("t.gguf"),
             tmp_path("d.gguf"));
    CHECK_EQ_INT(run_specd(args), 0);
    gguf_file *t, *d;
    sd_err err;
    REQUIRE(gguf_open(tmp_path("t.gguf"), &t, &err) == 0);
    REQUIRE(gguf_open(tmp_path("d.gguf"), &d, &err) == 0);
    uint32_t tdim = 0, ddim = 0;
    CHECK(gguf_get_u32(t, "llama.embedding_length", &tdim, &err) == 0 && tdim == 64);
    CHECK(gguf_get_u32(d, "llama.embedding_length", &ddim, &err) == 0 && ddim <= tdim);
    const gguf_kv *a = gguf_find(t, "tokenizer.ggml.tokens"), *b = gguf_find(d, "tokenizer.ggml.tokens");
    CHECK(a && b && a->raw_len == b->raw_len && !memcmp(a->raw, b->raw, a->raw_len));
    CHECK(gguf_find_tensor(t, "blk.0.attn_q.weight")->type == SD_Q8_0);
    gguf_close(t);
    gguf_close(d);
}

int main(void) {
    if (make_tmpdir("specd_test_mkmodel_")) return 1;
    RUN(test_tiny_preset);
    RUN(test_deterministic);
    RUN(test_types_agree);
    RUN(test_quant_types);
    RUN(test_pair_agreement);
    RUN(test_cli);
    remove_tmpdir();
    return TEST_DONE();
}
