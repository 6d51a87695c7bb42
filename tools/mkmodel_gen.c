/* Weight generation for synthetic models (see tools/mkmodel.h for the construction). Every weight is a
 * pure function of (seed, tensor, row, column), so the writer asks for any byte range of any tensor at
 * save time and the model is streamed to disk row by row, never held in memory. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/quantize.h"
#include "model/quantize_model.h"
#include "model/gguf.h"
#include "tools/mkmodel.h"

#define N_SUCC 3
static const float k_succ_weight[N_SUCC] = {1.0f, 0.8f, 0.6f};
#define LOGIT_TOP 12.0f  /* logit of the strongest successor when layers do not interfere */
#define EMB_NOISE 0.1f   /* norm of an embedding's part outside the language dims */

enum { K_EMB, K_OUT, K_NORM, K_MAT, K_MAT_OUT };

typedef struct mk_gen {
    const sd_mk_opts *o;
    int ds;          /* language dims */
    float gain;      /* classifier scale */
    int32_t *pred[N_SUCC]; /* pred[i][v]: the token whose i-th successor is v, -1 for none */
} mk_gen;

typedef struct mk_tensor {
    mk_gen *g;
    int kind, type;
    uint64_t key;    /* seeds this tensor's values */
    int64_t cols, rows;
    float std;       /* random matrices: standard deviation */
} mk_tensor;

/* ---- deterministic randomness ---- */

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform in [-sqrt(3), sqrt(3)) (unit variance) from 24 bits. */
static float bits24(uint64_t b) { return ((float)(b & 0xffffff) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * 1.7320508f; }

/* Value i of stream `key`: one hash gives values 2j and 2j+1. */
static float unit(uint64_t key, uint64_t i) {
    uint64_t h = mix(key + (i >> 1));
    return bits24(i & 1 ? h : h >> 40);
}

/* n consecutive values of stream `key` from index start, times scale (one hash per two values). */
static void unit_run(uint64_t key, uint64_t start, int64_t n, float scale, float *out) {
    int64_t c = 0;
    if (start & 1) out[c++] = scale * unit(key, start);
    for (; c + 1 < n; c += 2) {
        uint64_t h = mix(key + ((start + (uint64_t)c) >> 1));
        out[c] = scale * bits24(h >> 40);
        out[c + 1] = scale * bits24(h);
    }
    if (c < n) out[c] = scale * unit(key, start + (uint64_t)c);
}

static uint64_t tensor_key(uint64_t seed, const char *name) {
    uint64_t h = mix(seed);
    for (const char *p = name; *p; p++) h = mix(h ^ (uint8_t)*p);
    return h;
}

/* ---- the language: successor maps over the ordinary tokens ---- */

static void shuffle(int32_t *a, int n, uint64_t key) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(mix(key ^ mix((uint64_t)i)) % (uint64_t)(i + 1));
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* succ_0 follows one random cycle through every ordinary token; succ_1.. are random permutations. */
static int build_lang(mk_gen *g, int vocab, sd_err *err) {
    bool *ord = sd_mk_ordinary(g->o->vocab_from, vocab, err);
    if (!ord) return -1;
    int32_t *ids = malloc((size_t)vocab * sizeof *ids), *perm = malloc((size_t)vocab * sizeof *perm);
    int n = 0;
    for (int i = 0; i < vocab; i++)
        if (ord[i]) ids[n++] = i;
    free(ord);
    for (int k = 0; k < N_SUCC; k++) {
        g->pred[k] = malloc((size_t)vocab * sizeof *g->pred[k]);
        if (!g->pred[k] || !ids || !perm) {
            free(ids);
            free(perm);
            return sd_errf(err, "out of memory");
        }
        for (int i = 0; i < vocab; i++) g->pred[k][i] = -1;
        memcpy(perm, ids, (size_t)n * sizeof *perm);
        shuffle(perm, n, mix(g->o->lang_seed * 31 + (uint64_t)k));
        for (int j = 0; j < n; j++) {
            if (k == 0) g->pred[k][perm[(j + 1) % n]] = perm[j]; /* perm[j] -> perm[j+1] */
            else g->pred[k][perm[j]] = ids[j];                   /* ids[j] -> perm[j] */
        }
    }
    free(ids);
    free(perm);
    return 0;
}

/* u_t[c]: the language's unit vector for token t. */
static float lang_u(const mk_gen *g, int64_t t, int c) {
    return unit(g->o->lang_seed ^ 0x5eedull, (uint64_t)t * (uint64_t)g->ds + (uint64_t)c) / sqrtf((float)g->ds);
}

/* ---- rows ---- */

static void gen_row(const mk_tensor *t, int64_t r, float *out) {
    const mk_gen *g = t->g;
    int64_t cols = t->cols;
    switch (t->kind) {
    case K_EMB:
        for (int64_t c = 0; c < cols; c++)
            out[c] = c < g->ds ? lang_u(g, r, (int)c)
                               : unit(t->key, (uint64_t)(r * cols + c)) * EMB_NOISE / sqrtf((float)(cols - g->ds));
        break;
    case K_OUT:
        for (int64_t c = 0; c < cols; c++) out[c] = 0;
        for (int k = 0; k < N_SUCC; k++) {
            int32_t p = g->pred[k][r];
            if (p < 0) continue;
            for (int c = 0; c < g->ds; c++) out[c] += g->gain * k_succ_weight[k] * lang_u(g, p, c);
        }
        break;
    case K_NORM:
        for (int64_t c = 0; c < cols; c++) out[c] = 1.0f;
        break;
    default:
        unit_run(t->key, (uint64_t)(r * cols), cols, t->std, out);
    }
}

static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int exp = (int)((x >> 23) & 0xff);
    if (exp == 255) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int e = exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { /* subnormal or zero: round to nearest even */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* a carry into the exponent is still right */
    return (uint16_t)(sign | h);
}

/* Q8_0 as GGML defines it: per 32 values, d = max|x| / 127 stored as F16, q = round(x / d). */
static void quantize_q8_0(const float *x, int64_t n, sd_block_q8_0 *out) {
    for (int64_t b = 0; b < n / SD_QK8_0; b++) {
        const float *v = x + b * SD_QK8_0;
        float amax = 0;
        for (int i = 0; i < SD_QK8_0; i++) amax = fmaxf(amax, fabsf(v[i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        out[b].d = f32_to_f16(d);
        for (int i = 0; i < SD_QK8_0; i++) out[b].qs[i] = (int8_t)roundf(v[i] * id);
    }
}

static void encode(int type, const float *x, int64_t n, uint8_t *out) {
    if (type == SD_F32) memcpy(out, x, (size_t)n * 4);
    else if (type == SD_F16)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = f32_to_f16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
    else if (type == SD_Q8_0) quantize_q8_0(x, n, (sd_block_q8_0 *)out);
    else sd_quantize_row(type, x, out, n); /* the other types as ggml's reference quantizers make them */
}

/* Rows [r0, r1) of the chunk [offset, offset+nbytes) of a tensor, into buf; row and bytes are scratch. */
typedef struct fill_job {
    mk_tensor *t;
    uint8_t *buf;
    size_t offset, nbytes, r0, r1;
} fill_job;

static void *fill_rows(void *arg) {
    fill_job *j = arg;
    mk_tensor *t = j->t;
    size_t rb = sd_dtype_row_bytes(t->type, t->cols);
    float *row = malloc((size_t)t->cols * sizeof *row);       /* [cols] */
    uint8_t *bytes = malloc((size_t)t->cols * 4);               /* one encoded row */
    if (!row || !bytes) abort(); /* a few KB; the writer has no error path from a fill callback */
    for (size_t r = j->r0; r < j->r1; r++) {
        gen_row(t, (int64_t)r, row);
        encode(t->type, row, t->cols, bytes);
        size_t lo = r * rb < j->offset ? j->offset - r * rb : 0;
        size_t hi = (r + 1) * rb > j->offset + j->nbytes ? j->offset + j->nbytes - r * rb : rb;
        memcpy(j->buf + r * rb + lo - j->offset, bytes + lo, hi - lo);
    }
    free(row);
    free(bytes);
    return NULL;
}

/* gguf_fill_fn: bytes [offset, offset+nbytes) of the tensor, made row by row. Every value is a pure
 * function of its position, so the rows are split over the CPUs (multi-GB presets on a GPU machine). */
static void fill(void *ctx, void *buf, size_t offset, size_t nbytes) {
    mk_tensor *t = ctx;
    size_t rb = sd_dtype_row_bytes(t->type, t->cols);
    size_t r0 = offset / rb, r1 = (offset + nbytes + rb - 1) / rb;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = ncpu < 1 ? 1 : ncpu > 32 ? 32 : (size_t)ncpu;
    if (nt > (r1 - r0) / 16) nt = (r1 - r0) / 16 ? (r1 - r0) / 16 : 1; /* small chunks: not worth a thread */
    fill_job jobs[32];
    pthread_t th[32];
    size_t started = 0;
    for (size_t i = 0; i < nt; i++) {
        jobs[i] = (fill_job){t, buf, offset, nbytes, r0 + (r1 - r0) * i / nt, r0 + (r1 - r0) * (i + 1) / nt};
        if (i > 0 && pthread_create(&th[i], NULL, fill_rows, &jobs[i]) == 0) started |= (size_t)1 << i;
        else if (i > 0) fill_rows(&jobs[i]);
    }
    fill_rows(&jobs[0]);
    for (size_t i = 1; i < nt; i++)
        if (started & ((size_t)1 << i)) pthread_join(th[i], NULL);
}

/* ---- the model ---- */

static void add(gguf_writer *w, mk_tensor *t, mk_gen *g, const char *name, int kind, int64_t cols, int64_t rows,
                float std) {
    *t = (mk_tensor){.g = g, .kind = kind, .cols = cols, .rows = rows, .std = std,
                     .type = kind == K_NORM ? SD_F32 : g->o->type, .key = tensor_key(g->o->seed, name)};
    int64_t ne[2] = {cols, rows};
    gguf_w_tensor_fn(w, name, (uint32_t)t->type, rows == 1 ? 1 : 2, ne, fill, t);
}

static void add_layers(gguf_writer *w, mk_tensor *t, mk_gen *g) {
    const sd_mk_shape *s = &g->o->shape;
    int64_t dim = s->dim, hd = s->dim / s->heads, q = hd * s->heads, kv = hd * s->kv_heads, ffn = s->ffn;
    /* outputs of a block (wo, w_down) sized so each block moves the residual by about layer_scale */
    float out_std_attn = g->o->layer_scale / sqrtf((float)dim * (float)q);
    float out_std_ffn = g->o->layer_scale / sqrtf((float)dim * (float)ffn) * 2.0f;
    char n[64];
    for (int l = 0; l < s->layers; l++) {
#define T(suffix, kind, c, r, sd) (snprintf(n, sizeof n, "blk.%d." suffix, l), add(w, t++, g, n, kind, c, r, sd))
        T("attn_norm.weight", K_NORM, dim, 1, 0);
        T("attn_q.weight", K_MAT, dim, q, 1 / sqrtf((float)dim));
        T("attn_k.weight", K_MAT, dim, kv, 1 / sqrtf((float)dim));
        T("attn_v.weight", K_MAT, dim, kv, 1 / sqrtf((float)dim));
        T("attn_output.weight", K_MAT_OUT, q, dim, out_std_attn);
        T("ffn_norm.weight", K_NORM, dim, 1, 0);
        T("ffn_gate.weight", K_MAT, dim, ffn, 1 / sqrtf((float)dim));
        T("ffn_up.weight", K_MAT, dim, ffn, 1 / sqrtf((float)dim));
        T("ffn_down.weight", K_MAT_OUT, ffn, dim, out_std_ffn);
#undef T
    }
}

static void write_hparams(gguf_writer *w, const sd_mk_opts *o) {
    const sd_mk_shape *s = &o->shape;
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_str(w, "general.name", o->name ? o->name : "specd synthetic");
    gguf_w_u32(w, "general.file_type", (uint32_t)sd_ftype_of_type(o->type));
    gguf_w_u32(w, "llama.context_length", (uint32_t)s->ctx);
    gguf_w_u32(w, "llama.embedding_length", (uint32_t)s->dim);
    gguf_w_u32(w, "llama.block_count", (uint32_t)s->layers);
    gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)s->ffn);
    gguf_w_u32(w, "llama.attention.head_count", (uint32_t)s->heads);
    gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)s->kv_heads);
    gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_w_f32(w, "llama.rope.freq_base", 10000.0f);
    gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)(s->dim / s->heads));
    gguf_w_u32(w, "llama.vocab_size", (uint32_t)s->vocab);
}

static int check_opts(const sd_mk_opts *o, sd_err *err) {
    const sd_mk_shape *s = &o->shape;
    if (s->dim < 1 || s->layers < 1 || s->heads < 1 || s->kv_heads < 1 || s->ffn < 1 || s->ctx < 1)
        return sd_errf(err, "every dimension must be positive (dim %d, layers %d, heads %d, kv-heads %d, ffn %d, ctx %d)",
                       s->dim, s->layers, s->heads, s->kv_heads, s->ffn, s->ctx);
    if (s->dim % s->heads) return sd_errf(err, "--heads %d does not divide --dim %d", s->heads, s->dim);
    if (s->heads % s->kv_heads) return sd_errf(err, "--kv-heads %d does not divide --heads %d", s->kv_heads, s->heads);
    if ((s->dim / s->heads) % 2) return sd_errf(err, "head dimension %d must be even (RoPE)", s->dim / s->heads);
    if (!sd_quantize_supported(o->type)) return sd_errf(err, "type must be one of %s", sd_dtype_loadable_list());
    int qk = sd_dtype_block(o->type);
    if (s->dim % qk || s->ffn % qk)
        return sd_errf(err, "%s needs --dim and --ffn to be multiples of %d", sd_dtype_name(o->type), qk);
    if (o->shared_dims < 0 || o->shared_dims > s->dim)
        return sd_errf(err, "shared dims %d must be between 1 and --dim %d", o->shared_dims, s->dim);
    if (!(o->layer_scale >= 0 && o->layer_scale < 100)) return sd_errf(err, "layer scale %g out of range", (double)o->layer_scale);
    return 0;
}

int sd_mk_write(const sd_mk_opts *opts, const char *path, sd_err *err) {
    sd_mk_opts o = *opts;
    gguf_writer *w = gguf_writer_new(32);
    mk_gen g = {.o = &o};
    mk_tensor *ts = NULL;
    int rc = -1;
    if (!w) return sd_errf(err, "out of memory");
    if (o.vocab_from ? sd_mk_copy_vocab(w, o.vocab_from, &o.shape.vocab, err) : 0) goto done;
    if (check_opts(&o, err)) goto done;
    write_hparams(w, &o);
    if (!o.vocab_from && sd_mk_synth_vocab(w, o.shape.vocab, err)) goto done;
    g.ds = o.shared_dims ? o.shared_dims : (o.shape.dim < 256 ? o.shape.dim : 256);
    g.gain = LOGIT_TOP / sqrtf((float)o.shape.dim);
    ts = calloc(3 + 9 * (size_t)o.shape.layers, sizeof *ts);
    if (!ts) {
        sd_errf(err, "out of memory");
        goto done;
    }
    if (build_lang(&g, o.shape.vocab, err)) goto done;
    add(w, &ts[0], &g, "token_embd.weight", K_EMB, o.shape.dim, o.shape.vocab, 0);
    add(w, &ts[1], &g, "output_norm.weight", K_NORM, o.shape.dim, 1, 0);
    add(w, &ts[2], &g, "output.weight", K_OUT, o.shape.dim, o.shape.vocab, 0);
    add_layers(w, ts + 3, &g);
    rc = gguf_writer_save(w, path, err);
done:
    gguf_writer_free(w);
    for (int k = 0; k < N_SUCC; k++) free(g.pred[k]);
    free(ts);
    return rc;
}
