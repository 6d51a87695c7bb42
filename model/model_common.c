/* What every loader does the same way once it has filled hyperparameters and tensors: validation of the
 * hyperparameters, the RoPE inverse-frequency table (with linear or llama3-style scaling), uploading the
 * weights to the backend, and counting bytes and parameters. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_internal.h"

typedef struct owned_list {
    void **bufs;
    size_t n, cap;
} owned_list;

void *sd_model_own(sd_model *m, size_t bytes, sd_err *err) {
    owned_list *o = m->owned;
    if (!o && !(o = m->owned = calloc(1, sizeof *o))) return sd_errf(err, "out of memory"), NULL;
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 16;
        void **nb = realloc(o->bufs, cap * sizeof *nb);
        if (!nb) return sd_errf(err, "out of memory"), NULL;
        o->bufs = nb;
        o->cap = cap;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) return sd_errf(err, "out of memory (%zu bytes)", bytes), NULL;
    o->bufs[o->n++] = p;
    return p;
}

void sd_model_free_owned(sd_model *m) {
    owned_list *o = m->owned;
    if (!o) return;
    for (size_t i = 0; i < o->n; i++) free(o->bufs[i]);
    free(o->bufs);
    free(o);
    m->owned = NULL;
}

static int range(const sd_model *m, const char *what, long v, long lo, long hi, sd_err *err) {
    if (v < lo || v > hi)
        return sd_errf(err, "%s: absurd hyperparameter %s = %ld (expected %ld to %ld)", m->path, what, v, lo, hi);
    return 0;
}

int sd_model_check_hparams(const sd_model *m, sd_err *err) {
    const sd_hparams *hp = &m->hp;
    if (range(m, "embedding_length", hp->dim, 1, SD_MAX_DIM, err) ||
        range(m, "block_count", hp->n_layers, 1, SD_MAX_LAYERS, err) ||
        range(m, "attention.head_count", hp->n_heads, 1, SD_MAX_HEADS, err) ||
        range(m, "attention.head_count_kv", hp->n_kv_heads, 1, hp->n_heads, err) ||
        range(m, "head dimension", hp->head_dim, 1, SD_MAX_DIM, err) ||
        range(m, "feed_forward_length", hp->ffn, 1, SD_MAX_FFN, err) ||
        range(m, "vocabulary size", hp->vocab, 1, SD_MAX_VOCAB, err) ||
        range(m, "context_length", hp->ctx, 1, SD_MAX_CTX, err) ||
        range(m, "rope.dimension_count", hp->n_rot, 2, hp->head_dim, err))
        return -1;
    if (hp->n_heads % hp->n_kv_heads)
        return sd_errf(err, "%s: attention.head_count %d is not a multiple of attention.head_count_kv %d", m->path,
                       hp->n_heads, hp->n_kv_heads);
    if (hp->n_rot % 2) return sd_errf(err, "%s: rope.dimension_count %d is odd", m->path, hp->n_rot);
    if (!(hp->eps > 0 && hp->eps < 1))
        return sd_errf(err, "%s: absurd layer_norm_rms_epsilon %g", m->path, (double)hp->eps);
    if (!(hp->rope_base > 1 && isfinite(hp->rope_base)))
        return sd_errf(err, "%s: absurd rope.freq_base %g", m->path, (double)hp->rope_base);
    if (hp->rope_scaling && !(hp->rope_factor > 0 && isfinite(hp->rope_factor)))
        return sd_errf(err, "%s: absurd rope.scaling.factor %g", m->path, (double)hp->rope_factor);
    if (hp->rope_scaling == 2 && !(hp->rope_high_freq > hp->rope_low_freq && hp->rope_low_freq > 0 &&
                                   hp->rope_orig_ctx > 0))
        return sd_errf(err, "%s: inconsistent llama3 rope scaling (low %g, high %g, original context %d)", m->path,
                       (double)hp->rope_low_freq, (double)hp->rope_high_freq, hp->rope_orig_ctx);
    return 0;
}

/* llama3-style scaling: long wavelengths are slowed by `factor`, short ones kept, and the band between
 * low_freq_factor and high_freq_factor (relative to the original context) is interpolated smoothly. */
static float llama3_scale(const sd_hparams *hp, float freq) {
    double orig = hp->rope_orig_ctx;
    double low_wavelen = orig / hp->rope_low_freq, high_wavelen = orig / hp->rope_high_freq;
    double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) return freq;
    if (wavelen > low_wavelen) return (float)(freq / hp->rope_factor);
    double smooth = (orig / wavelen - hp->rope_low_freq) / (hp->rope_high_freq - hp->rope_low_freq);
    return (float)((1 - smooth) * freq / hp->rope_factor + smooth * freq);
}

void sd_rope_inv_freq(const sd_hparams *hp, const float *freq_factors, float *inv_freq) {
    int half = hp->n_rot / 2;
    for (int j = 0; j < half; j++) {
        double f = pow((double)hp->rope_base, -2.0 * j / hp->n_rot);
        if (freq_factors) f /= freq_factors[j];
        else if (hp->rope_scaling == 1) f /= hp->rope_factor;
        else if (hp->rope_scaling == 2) f = llama3_scale(hp, (float)f);
        inv_freq[j] = (float)f;
    }
}

#define ROW(suffix, field, cols, rows, need) {suffix, offsetof(sd_layer, field), SD_DIM_##cols, SD_DIM_##rows, SD_NEED_##need}
const sd_layer_tensor sd_layer_tensors[SD_LAYER_TENSORS] = {
    ROW("attn_norm.weight", attn_norm, MODEL, ONE, ALWAYS),
    ROW("attn_q.weight", wq, MODEL, Q, ALWAYS),
    ROW("attn_k.weight", wk, MODEL, KV, ALWAYS),
    ROW("attn_v.weight", wv, MODEL, KV, ALWAYS),
    ROW("attn_output.weight", wo, Q, MODEL, ALWAYS),
    ROW("attn_q.bias", bq, Q, ONE, QKV_BIAS),
    ROW("attn_k.bias", bk, KV, ONE, QKV_BIAS),
    ROW("attn_v.bias", bv, KV, ONE, QKV_BIAS),
    ROW("attn_q_norm.weight", q_norm, HEAD, ONE, QK_NORM),
    ROW("attn_k_norm.weight", k_norm, HEAD, ONE, QK_NORM),
    ROW("ffn_norm.weight", ffn_norm, MODEL, ONE, ALWAYS),
    ROW("ffn_gate.weight", w_gate, MODEL, FFN, ALWAYS),
    ROW("ffn_up.weight", w_up, MODEL, FFN, ALWAYS),
    ROW("ffn_down.weight", w_down, FFN, MODEL, ALWAYS),
};
#undef ROW

int64_t sd_dim_size(const sd_hparams *hp, sd_dim d) {
    switch (d) {
    case SD_DIM_MODEL: return hp->dim;
    case SD_DIM_Q: return (int64_t)hp->n_heads * hp->head_dim;
    case SD_DIM_KV: return (int64_t)hp->n_kv_heads * hp->head_dim;
    case SD_DIM_HEAD: return hp->head_dim;
    case SD_DIM_FFN: return hp->ffn;
    default: return 1;
    }
}

int sd_layer_tensor_find(const char *suffix) {
    for (int i = 0; i < SD_LAYER_TENSORS; i++)
        if (!strcmp(sd_layer_tensors[i].suffix, suffix)) return i;
    return -1;
}

int sd_model_tensors(sd_model *m, sd_tensor **list) {
    int n = 0;
    list[n++] = &m->tok_embd;
    list[n++] = &m->out_norm;
    if (m->output.host != m->tok_embd.host) list[n++] = &m->output;
    for (int l = 0; l < m->hp.n_layers; l++)
        for (int i = 0; i < SD_LAYER_TENSORS; i++) {
            sd_tensor *t = sd_layer_tensor_at(&m->layers[l], i);
            if (t->rows) list[n++] = t; /* absent optional tensors have no rows */
        }
    return n;
}

static size_t tensor_bytes(const sd_tensor *t) { return sd_dtype_row_bytes(t->type, t->cols) * (size_t)t->rows; }

static void count_sizes(sd_model *m, sd_tensor **list, int n) {
    m->weight_bytes = 0;
    m->n_params = 0;
    for (int i = 0; i < n; i++) {
        m->weight_bytes += tensor_bytes(list[i]);
        m->n_params += (uint64_t)list[i]->cols * (uint64_t)list[i]->rows;
    }
    /* a decode step reads every layer, the final norm, the whole classifier and one embedding row */
    m->bytes_per_token = m->weight_bytes - tensor_bytes(&m->tok_embd) +
                         sd_dtype_row_bytes(m->tok_embd.type, m->tok_embd.cols);
    if (m->output.host == m->tok_embd.host) m->bytes_per_token += tensor_bytes(&m->tok_embd);
}

static int make_rope(sd_model *m, const float *freq_factors, sd_err *err) {
    int half = m->hp.n_rot / 2;
    float *host = malloc((size_t)half * sizeof *host);
    if (!host) return sd_errf(err, "out of memory");
    sd_rope_inv_freq(&m->hp, freq_factors, host);
    m->rope_inv_freq = m->be->alloc(m->be, (size_t)half, err);
    if (!m->rope_inv_freq) {
        free(host);
        return sd_err_prefix(err, "%s: RoPE table", m->path);
    }
    m->be->from_host(m->be, m->rope_inv_freq, host, (size_t)half);
    free(host);
    return 0;
}

int sd_model_finish(sd_model *m, const float *freq_factors, sd_err *err) {
    sd_tensor **list = malloc(SD_MODEL_MAX_TENSORS(m->hp.n_layers) * sizeof *list);
    if (!list) return sd_errf(err, "out of memory");
    bool tied = m->output.host == m->tok_embd.host;
    int n = sd_model_tensors(m, list);
    count_sizes(m, list, n);
    if (m->describe_only) { /* nothing to upload, no RoPE table: sizes are all a description needs */
        free(list);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        list[i]->data_type = list[i]->type;
        if (m->be->upload_weight(m->be, list[i], err)) {
            const char *name = list[i]->name ? list[i]->name : "?";
            free(list);
            return sd_err_prefix(err, "%s: tensor '%s'", m->path, name);
        }
    }
    free(list);
    if (tied) m->output = m->tok_embd;
    return make_rope(m, freq_factors, err);
}

void sd_model_release_weights(sd_model *m) {
    if (!m->be) return;
    if (m->layers) {
        sd_tensor **list = malloc(SD_MODEL_MAX_TENSORS(m->hp.n_layers) * sizeof *list);
        if (list) {
            int n = sd_model_tensors(m, list);
            for (int i = 0; i < n; i++)
                if (list[i]->data) m->be->free_weight(m->be, list[i]);
            free(list);
        }
    }
    if (m->rope_inv_freq) m->be->release(m->be, m->rope_inv_freq);
    m->rope_inv_freq = NULL;
}
