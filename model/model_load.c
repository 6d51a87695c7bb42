/* Model loading entry point and the GGUF loader: llama, qwen2 and qwen3 architectures, hyperparameters
 * from `<arch>.*` metadata, tensors under llama.cpp's names, every shape checked against the
 * hyperparameters before anything is uploaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/quant_k.h"
#include "model/model_internal.h"

typedef struct arch_desc {
    const char *name;
    sd_arch arch;
    bool neox;      /* NeoX-style RoPE pairs */
    bool qkv_bias;  /* attn_q/k/v.bias required */
    bool qk_norm;   /* attn_q_norm/attn_k_norm required */
} arch_desc;

static const arch_desc k_archs[] = {
    {"llama", SD_ARCH_LLAMA, false, false, false},
    {"qwen2", SD_ARCH_QWEN2, true, true, false},
    {"qwen3", SD_ARCH_QWEN3, true, false, true},
};

const char *sd_arch_name(sd_arch a) {
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (k_archs[i].arch == a) return k_archs[i].name;
    return "?";
}

/* ---- metadata ---- */

/* An `<arch>.<suffix>` integer: *out = def when absent (or an error when required). */
static int arch_int(const sd_model *m, const char *arch, const char *suffix, bool required, int def, int *out,
                    sd_err *err) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!gguf_find(m->gguf, key)) {
        if (required) return sd_errf(err, "%s: missing metadata key '%s'", m->path, key);
        *out = def;
        return 0;
    }
    uint32_t v;
    if (gguf_get_u32(m->gguf, key, &v, err)) return -1;
    if (v > (uint32_t)SD_MAX_CTX * 64) return sd_errf(err, "%s: absurd value %u for '%s'", m->path, v, key);
    *out = (int)v;
    return 0;
}

static int arch_float(const sd_model *m, const char *arch, const char *suffix, bool required, float def,
                      float *out, sd_err *err) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!gguf_find(m->gguf, key)) {
        if (required) return sd_errf(err, "%s: missing metadata key '%s'", m->path, key);
        *out = def;
        return 0;
    }
    return gguf_get_f32(m->gguf, key, out, err);
}

/* rope.scaling.type: none / linear (factor) / llama3 (factor, low/high frequency factors, original
 * context); an older file may give only rope.scale_linear. */
static int read_rope_scaling(sd_model *m, const char *arch, sd_err *err) {
    sd_hparams *hp = &m->hp;
    char key[160], *type = NULL;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (gguf_find(m->gguf, key) && gguf_get_str(m->gguf, key, &type, err)) return -1;
    if (arch_float(m, arch, "rope.scaling.factor", false, 0, &hp->rope_factor, err)) goto fail;
    if (hp->rope_factor == 0 && arch_float(m, arch, "rope.scale_linear", false, 0, &hp->rope_factor, err))
        goto fail;
    if (!type) hp->rope_scaling = hp->rope_factor != 0 && hp->rope_factor != 1 ? 1 : 0;
    else if (!strcmp(type, "none")) hp->rope_scaling = 0;
    else if (!strcmp(type, "linear")) hp->rope_scaling = 1;
    else if (!strcmp(type, "llama3")) hp->rope_scaling = 2;
    else {
        sd_errf(err, "%s: rope scaling type '%s' is not supported (none, linear, llama3 are)", m->path, type);
        goto fail;
    }
    free(type);
    if (hp->rope_scaling == 0) return 0;
    if (hp->rope_scaling == 2 && hp->rope_factor == 0) hp->rope_factor = 8;
    if (arch_float(m, arch, "rope.scaling.low_freq_factor", false, 1, &hp->rope_low_freq, err) ||
        arch_float(m, arch, "rope.scaling.high_freq_factor", false, 4, &hp->rope_high_freq, err) ||
        arch_int(m, arch, "rope.scaling.original_context_length", false, 8192, &hp->rope_orig_ctx, err))
        return -1;
    return 0;
fail:
    free(type);
    return -1;
}

static int read_hparams(sd_model *m, const arch_desc *a, sd_err *err) {
    sd_hparams *hp = &m->hp;
    const char *n = a->name;
    hp->arch = a->arch;
    hp->rope_neox = a->neox;
    if (arch_int(m, n, "context_length", true, 0, &hp->ctx, err) ||
        arch_int(m, n, "embedding_length", true, 0, &hp->dim, err) ||
        arch_int(m, n, "block_count", true, 0, &hp->n_layers, err) ||
        arch_int(m, n, "feed_forward_length", true, 0, &hp->ffn, err) ||
        arch_int(m, n, "attention.head_count", true, 0, &hp->n_heads, err) ||
        arch_int(m, n, "attention.head_count_kv", false, hp->n_heads, &hp->n_kv_heads, err) ||
        arch_float(m, n, "attention.layer_norm_rms_epsilon", true, 0, &hp->eps, err) ||
        arch_float(m, n, "rope.freq_base", false, 10000.0f, &hp->rope_base, err))
        return -1;
    if (hp->n_heads <= 0) return sd_errf(err, "%s: absurd hyperparameter attention.head_count = 0", m->path);
    int def_hd = hp->dim % hp->n_heads ? 0 : hp->dim / hp->n_heads;
    if (arch_int(m, n, "attention.key_length", false, def_hd, &hp->head_dim, err)) return -1;
    if (hp->head_dim == 0)
        return sd_errf(err, "%s: attention.head_count %d does not divide embedding_length %d", m->path,
                       hp->n_heads, hp->dim);
    int vlen;
    if (arch_int(m, n, "attention.value_length", false, hp->head_dim, &vlen, err)) return -1;
    if (vlen != hp->head_dim)
        return sd_errf(err, "%s: attention.value_length %d differs from key_length %d (not supported)", m->path,
                       vlen, hp->head_dim);
    if (arch_int(m, n, "rope.dimension_count", false, hp->head_dim, &hp->n_rot, err)) return -1;
    return read_rope_scaling(m, n, err);
}

/* ---- tensors ---- */

/* Norm and bias vectors are F32 for every backend; a file storing them otherwise gets a converted copy. */
static int vector_to_f32(sd_model *m, sd_tensor *t, sd_err *err) {
    if (t->type == SD_F32 || !sd_dtype_loadable(t->type)) return 0; /* not loadable: described, never run */
    size_t n = (size_t)t->cols * (size_t)t->rows;
    float *out = sd_model_own(m, n * sizeof *out, err);
    if (!out) return -1;
    sd_dequant_row(t->type, t->host, out, (int64_t)n);
    t->host = out;
    t->type = SD_F32;
    return 0;
}

/* Binds tensor `name` of shape [cols, rows] (rows == 1: a vector) to t. Optional tensors that are
 * absent leave t->rows == 0. */
static int bind(sd_model *m, const char *name, int64_t cols, int64_t rows, bool required, sd_tensor *t,
                sd_err *err) {
    const gguf_tensor_info *ti = gguf_find_tensor(m->gguf, name);
    memset(t, 0, sizeof *t);
    if (!ti) return required ? sd_errf(err, "%s: missing tensor '%s'", m->path, name) : 0;
    if (ti->ne[0] != cols || ti->ne[1] != rows || ti->ne[2] != 1 || ti->ne[3] != 1)
        return sd_errf(err, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld] but the hyperparameters say [%lld, %lld]",
                       m->path, name, (long long)ti->ne[0], (long long)ti->ne[1], (long long)ti->ne[2],
                       (long long)ti->ne[3], (long long)cols, (long long)rows);
    if (!m->describe_only && !sd_dtype_loadable((int)ti->type))
        return sd_errf(err, "%s: tensor '%s' has type %s, which is not supported (%s are)", m->path, name,
                       sd_dtype_name((int)ti->type), sd_dtype_loadable_list());
    t->type = (sd_dtype)ti->type;
    t->data_type = t->type;
    t->cols = cols;
    t->rows = rows;
    t->host = ti->data;
    t->name = ti->name;
    return rows == 1 ? vector_to_f32(m, t, err) : 0;
}

/* Whether the architecture requires a table row's tensor (absent optional tensors stay empty). */
static bool needed(const arch_desc *a, sd_need need) {
    return need == SD_NEED_ALWAYS || (need == SD_NEED_QKV_BIAS && a->qkv_bias) || (need == SD_NEED_QK_NORM && a->qk_norm);
}

static int bind_layer(sd_model *m, const arch_desc *a, int l, sd_err *err) {
    for (int i = 0; i < SD_LAYER_TENSORS; i++) {
        const sd_layer_tensor *r = &sd_layer_tensors[i];
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", l, r->suffix);
        if (bind(m, name, sd_dim_size(&m->hp, r->cols), sd_dim_size(&m->hp, r->rows), needed(a, r->need),
                 sd_layer_tensor_at(&m->layers[l], i), err))
            return -1;
    }
    return 0;
}

/* Vocabulary size: the embedding's rows; the tokenizer may not name more tokens than that. */
static int read_vocab(sd_model *m, sd_err *err) {
    const gguf_tensor_info *e = gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!e) return sd_errf(err, "%s: missing tensor 'token_embd.weight'", m->path);
    if (e->ne[1] > SD_MAX_VOCAB) return sd_errf(err, "%s: absurd vocabulary size %lld", m->path, (long long)e->ne[1]);
    m->hp.vocab = (int)e->ne[1];
    const gguf_kv *toks = gguf_find(m->gguf, "tokenizer.ggml.tokens");
    if (toks && toks->arr_n > (uint64_t)m->hp.vocab)
        return sd_errf(err, "%s: the tokenizer has %llu tokens but token_embd.weight only %d rows", m->path,
                       (unsigned long long)toks->arr_n, m->hp.vocab);
    return 0;
}

/* rope_freqs.weight (llama 3.1 files): per-pair frequency divisors, already encoding llama3 scaling. */
static int read_freq_factors(sd_model *m, const float **out, sd_err *err) {
    *out = NULL;
    const gguf_tensor_info *ti = gguf_find_tensor(m->gguf, "rope_freqs.weight");
    if (!ti) return 0;
    if (ti->type != SD_F32 || ti->ne[0] != m->hp.n_rot / 2 || ti->ne[1] != 1)
        return sd_errf(err, "%s: tensor 'rope_freqs.weight' must be f32 of %d elements", m->path, m->hp.n_rot / 2);
    float *f = sd_model_own(m, (size_t)ti->ne[0] * sizeof *f, err); /* aligned copy of an unaligned-safe read */
    if (!f) return -1;
    memcpy(f, ti->data, (size_t)ti->ne[0] * sizeof *f);
    for (int64_t i = 0; i < ti->ne[0]; i++)
        if (!(f[i] > 0)) return sd_errf(err, "%s: rope_freqs.weight[%lld] = %g is not positive", m->path, (long long)i, (double)f[i]);
    *out = f;
    return 0;
}

static int load_gguf(sd_model *m, sd_err *err) {
    if (gguf_open(m->path, &m->gguf, err)) return -1;
    char *arch = NULL;
    if (gguf_get_str(m->gguf, "general.architecture", &arch, err)) return -1;
    const arch_desc *a = NULL;
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0]; i++)
        if (!strcmp(arch, k_archs[i].name)) a = &k_archs[i];
    if (!a) {
        sd_errf(err, "%s: architecture '%s' is not supported (llama, qwen2, qwen3 are)", m->path, arch);
        free(arch);
        return -1;
    }
    free(arch);
    const float *ff;
    if (read_hparams(m, a, err) || read_vocab(m, err) || sd_model_check_hparams(m, err) ||
        read_freq_factors(m, &ff, err))
        return -1;
    if (!(m->layers = calloc((size_t)m->hp.n_layers, sizeof *m->layers))) return sd_errf(err, "out of memory");
    if (bind(m, "token_embd.weight", m->hp.dim, m->hp.vocab, true, &m->tok_embd, err) ||
        bind(m, "output_norm.weight", m->hp.dim, 1, true, &m->out_norm, err) ||
        bind(m, "output.weight", m->hp.dim, m->hp.vocab, false, &m->output, err))
        return -1;
    if (!m->output.rows) m->output = m->tok_embd; /* tied classifier */
    for (int l = 0; l < m->hp.n_layers; l++)
        if (bind_layer(m, a, l, err)) return -1;
    if (sd_tok_from_gguf(m->gguf, &m->tok, err)) return sd_err_prefix(err, "%s", m->path);
    return sd_model_finish(m, ff, err);
}

/* ---- entry points ---- */

static int is_gguf(const char *path, bool *yes, sd_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sd_errf(err, "%s: cannot open: %m", path);
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    *yes = n == 4 && !memcmp(magic, "GGUF", 4);
    return 0;
}

static int load(const char *path, const char *tok_path, sd_backend *be, sd_model **out, sd_err *err) {
    *out = NULL;
    sd_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return sd_errf(err, "out of memory");
    }
    m->be = be;
    m->describe_only = be == NULL;
    m->kv_type = SD_F16;
    bool gguf = false;
    int rc = is_gguf(path, &gguf, err);
    if (!rc) rc = gguf ? load_gguf(m, err) : sd_llama2c_load(m, tok_path, err);
    if (rc) {
        sd_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int sd_model_load(const char *path, const char *tok_path, sd_backend *be, sd_model **out, sd_err *err) {
    if (!be) return sd_errf(err, "%s: no backend to load the model onto", path);
    return load(path, tok_path, be, out, err);
}

int sd_model_describe(const char *path, const char *tok_path, sd_model **out, sd_err *err) {
    return load(path, tok_path, NULL, out, err);
}

void sd_model_free(sd_model *m) {
    if (!m) return;
    sd_forward_ws_free(m);
    sd_model_kv_free(m);
    sd_model_release_weights(m);
    if (m->tok) sd_tok_free(m->tok);
    free(m->layers);
    if (m->gguf) gguf_close(m->gguf);
    if (m->map) munmap(m->map, m->map_size);
    sd_model_free_owned(m);
    free(m->path);
    free(m);
}
