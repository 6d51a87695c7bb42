/* `specd quantize` (see quantize_model.h): the per-tensor type rules of llama.cpp's llama-quantize for
 * the targets specd computes, and the rewrite of a GGUF file, tensor data streamed through the writer's
 * fill callback (rows dequantized to float, quantized on all CPUs, a chunk at a time). */
#include "model/quantize_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernels/backend.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/quant_k.h"
#include "kernels/quantize.h"
#include "model/gguf.h"

/* The mixes (llama.cpp's file types): which rule set a target follows. */
enum { MIX_NONE, MIX_LEGACY, MIX_Q2_K, MIX_Q3_K_M, MIX_Q4_K_M, MIX_Q5_K_M, MIX_Q6_K, MIX_IQ4 };

/* ftype values are llama.cpp's LLAMA_FTYPE_MOSTLY_*; the bare K types are one type everywhere ("pure"). */
static const sd_qtarget k_targets[] = {
    {"f32", SD_F32, 0, MIX_NONE},          {"f16", SD_F16, 1, MIX_NONE},          {"bf16", SD_BF16, 32, MIX_NONE},
    {"q8_0", SD_Q8_0, 7, MIX_LEGACY},      {"q4_0", SD_Q4_0, 2, MIX_LEGACY},      {"q4_1", SD_Q4_1, 3, MIX_LEGACY},
    {"q5_0", SD_Q5_0, 8, MIX_LEGACY},      {"q5_1", SD_Q5_1, 9, MIX_LEGACY},      {"q2_k", SD_Q2_K, 10, MIX_Q2_K},
    {"q3_k_m", SD_Q3_K, 12, MIX_Q3_K_M},   {"q4_k_m", SD_Q4_K, 15, MIX_Q4_K_M},   {"q5_k_m", SD_Q5_K, 17, MIX_Q5_K_M},
    {"q6_k", SD_Q6_K, 18, MIX_Q6_K},       {"iq4_nl", SD_IQ4_NL, 25, MIX_IQ4},    {"iq4_xs", SD_IQ4_XS, 30, MIX_IQ4},
    {"q3_k", SD_Q3_K, 12, MIX_NONE},       {"q4_k", SD_Q4_K, 15, MIX_NONE},       {"q5_k", SD_Q5_K, 17, MIX_NONE},
};
#define N_TARGETS (sizeof k_targets / sizeof k_targets[0])

const sd_qtarget *sd_qtarget_find(const char *name) {
    for (size_t i = 0; name && i < N_TARGETS; i++)
        if (!strcasecmp(name, k_targets[i].name)) return &k_targets[i];
    return NULL;
}

int sd_ftype_of_type(int type) {
    for (size_t i = 0; i < N_TARGETS; i++)
        if (k_targets[i].base_type == type) return k_targets[i].ftype;
    return 0;
}

const char *sd_qtarget_list(void) {
    return "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_m, q4_k_m, q5_k_m, q6_k, iq4_nl, iq4_xs "
           "(mixes as llama-quantize makes them), q3_k, q4_k, q5_k (that type for every matrix)";
}

/* ---- which tensors are quantized, and to what ---- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* llama.cpp quantizes 2-D tensors named *weight except norms. */
static bool quantizable(const char *name, int n_dims) {
    return n_dims >= 2 && ends_with(name, "weight") && !strstr(name, "_norm.weight");
}

/* Layers that get more bits in the _M mixes: the first and last eighth, and every third between. */
static bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* A type whose block does not divide the row falls back as llama.cpp's does. */
static int fallback(int type, int64_t ne0) {
    if (ne0 % sd_dtype_block(type) == 0) return type;
    int to = type == SD_IQ4_XS ? SD_IQ4_NL
             : type == SD_Q2_K || type == SD_Q3_K ? SD_Q4_0
             : type == SD_Q4_K ? SD_Q5_0
             : type == SD_Q5_K ? SD_Q5_1
             : type == SD_Q6_K ? SD_Q8_0
                               : SD_F16;
    return ne0 % sd_dtype_block(to) == 0 ? to : SD_F16;
}

int sd_quant_tensor_type(const sd_qtarget *t, sd_qrule_state *st, const char *name, int n_dims, int64_t ne0,
                         int type) {
    if (!quantizable(name, n_dims)) return type;
    int nt = t->base_type, mix = t->mix;
    if (sd_dtype_block(nt) == 1) return nt; /* F32 / F16 / BF16: no rules */
    bool output = !strcmp(name, "output.weight") || (st->tied && !strcmp(name, "token_embd.weight"));
    if (mix != MIX_NONE && output) {
        nt = ne0 % sd_dtype_block(nt) ? SD_Q8_0 : nt != SD_Q8_0 ? SD_Q6_K : nt;
    } else if (mix != MIX_NONE && strstr(name, "attn_v.weight")) {
        if (mix == MIX_Q2_K) nt = st->n_gqa >= 4 ? SD_Q4_K : SD_Q3_K;
        else if (mix == MIX_Q3_K_M) nt = st->i_attn_v < 2 ? SD_Q5_K : SD_Q4_K;
        else if (mix == MIX_IQ4 && st->n_gqa >= 4) nt = SD_Q5_K;
        else if ((mix == MIX_Q4_K_M || mix == MIX_Q5_K_M) && more_bits(st->i_attn_v, st->n_attn_v)) nt = SD_Q6_K;
        /* 8 query heads share each V head there, so attn_v is 8x smaller than attn_q: more bits cost little */
        if (st->is_70b && (nt == SD_Q3_K || nt == SD_Q4_K)) nt = SD_Q5_K;
        st->i_attn_v++;
    } else if (mix != MIX_NONE && strstr(name, "ffn_down")) {
        int i = st->i_ffn_down, n = st->n_ffn_down;
        if (mix == MIX_Q2_K) nt = SD_Q3_K;
        else if (mix == MIX_Q3_K_M) nt = i < n / 16 ? SD_Q5_K : SD_Q4_K;
        else if (mix == MIX_Q4_K_M && more_bits(i, n)) nt = SD_Q6_K;
        else if (mix == MIX_IQ4 && i < n / 8) nt = SD_Q5_K;
        else if (mix == MIX_Q5_K_M && more_bits(i, n)) nt = SD_Q6_K;
        st->i_ffn_down++;
    } else if (mix != MIX_NONE && strstr(name, "attn_output.weight")) {
        if (mix == MIX_Q2_K) nt = SD_Q3_K;
        else if (mix == MIX_Q3_K_M) nt = SD_Q4_K;
    }
    return fallback(nt, ne0);
}

/* ---- the rewrite ---- */

typedef struct tensor_job {
    const gguf_tensor_info *src;
    int from, to;
    int64_t ne0, rows;
    size_t out_row, out_bytes;
    uint8_t *rowbuf; /* quantized rows of the chunk in progress */
    sd_pool *pool;
    bool failed;
    int index, count;
    const sd_quant_opts *o;
} tensor_job;

typedef struct rows_task {
    tensor_job *j;
    int64_t r0; /* first row of the chunk; rowbuf holds rows r0.. */
} rows_task;

/* Rows [b, e) of a chunk: source row to floats, then to the target type. */
static void quantize_rows(void *arg, int64_t b, int64_t e) {
    rows_task *t = arg;
    tensor_job *j = t->j;
    float *f = malloc((size_t)j->ne0 * sizeof *f);
    if (!f) {
        j->failed = true;
        return;
    }
    size_t in_row = sd_dtype_row_bytes(j->from, j->ne0);
    for (int64_t r = t->r0 + b; r < t->r0 + e; r++) {
        sd_dequant_row(j->from, (const uint8_t *)j->src->data + (size_t)r * in_row, f, j->ne0);
        if (sd_quantize_row(j->to, f, j->rowbuf + (size_t)(r - t->r0) * j->out_row, j->ne0)) j->failed = true;
    }
    free(f);
}

static void fill_quantized(void *ctx, void *buf, size_t off, size_t n) {
    tensor_job *j = ctx;
    int64_t r0 = (int64_t)(off / j->out_row), r1 = (int64_t)((off + n + j->out_row - 1) / j->out_row);
    if (!j->rowbuf) j->rowbuf = malloc(((size_t)(4u << 20) / j->out_row + 2) * j->out_row);
    if (!j->rowbuf) {
        j->failed = true;
        memset(buf, 0, n);
        return;
    }
    rows_task t = {j, r0};
    sd_pool_for(j->pool, r1 - r0, 1 + (r1 - r0) / 64, quantize_rows, &t);
    memcpy(buf, j->rowbuf + (off - (size_t)r0 * j->out_row), n);
    if (off + n == j->out_bytes) {
        free(j->rowbuf);
        j->rowbuf = NULL;
        if (j->o && j->o->progress)
            j->o->progress(j->o->ctx, j->index, j->count, j->src->name, j->from, j->to, j->src->nbytes, j->out_bytes);
    }
}

static void fill_copy(void *ctx, void *buf, size_t off, size_t n) {
    tensor_job *j = ctx;
    memcpy(buf, (const uint8_t *)j->src->data + off, n);
    if (off + n == j->out_bytes && j->o && j->o->progress)
        j->o->progress(j->o->ctx, j->index, j->count, j->src->name, j->from, j->to, j->src->nbytes, j->out_bytes);
}

static bool kept(const sd_quant_opts *o, const char *name) {
    for (int i = 0; o && i < o->n_keep; i++)
        if (strstr(name, o->keep[i])) return true;
    return false;
}

/* Heads per KV head, from `<arch>.attention.head_count[_kv]` (1 when absent). */
/* The model facts the rules read: heads per KV head, and whether llama.cpp calls it a 70B (llama, 80 layers,
 * fewer KV heads than heads; 80 layers with as many KV heads is its 65B). */
static void read_shape(const gguf_file *f, sd_qrule_state *st) {
    char *arch = NULL, key[160];
    sd_err e;
    st->n_gqa = 1;
    if (gguf_get_str(f, "general.architecture", &arch, &e)) return;
    uint32_t h = 1, kv = 0, layers = 0;
    snprintf(key, sizeof key, "%s.attention.head_count", arch);
    if (gguf_find(f, key)) gguf_get_u32(f, key, &h, &e);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    if (gguf_find(f, key)) gguf_get_u32(f, key, &kv, &e);
    snprintf(key, sizeof key, "%s.block_count", arch);
    if (gguf_find(f, key)) gguf_get_u32(f, key, &layers, &e);
    if (kv) st->n_gqa = (int)(h / kv);
    st->is_70b = !strcmp(arch, "llama") && layers == 80 && kv && kv != h;
    free(arch);
}

static void copy_metadata(const gguf_file *f, gguf_writer *w, const sd_qtarget *t) {
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (!strcmp(kv->key, "general.file_type") || !strcmp(kv->key, "general.quantization_version") ||
            !strcmp(kv->key, "general.alignment"))
            continue;
        gguf_w_raw(w, kv->key, kv->type, kv->raw, (size_t)kv->raw_len);
    }
    gguf_w_u32(w, "general.quantization_version", 2);
    gguf_w_u32(w, "general.file_type", (uint32_t)t->ftype);
}

/* Types of every tensor, checked before anything is written. */
static int plan(const gguf_file *f, const sd_qtarget *t, const sd_quant_opts *o, tensor_job *jobs, sd_err *err) {
    sd_qrule_state st = {.tied = gguf_find_tensor(f, "output.weight") == NULL};
    read_shape(f, &st);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        st.n_attn_v += strstr(f->tensors[i].name, "attn_v.weight") != NULL;
        st.n_ffn_down += strstr(f->tensors[i].name, "ffn_down") != NULL;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor_info *ti = &f->tensors[i];
        tensor_job *j = &jobs[i];
        int from = (int)ti->type;
        int to = kept(o, ti->name) ? from : sd_quant_tensor_type(t, &st, ti->name, (int)ti->n_dims, ti->ne[0], from);
        *j = (tensor_job){.src = ti, .from = from, .to = to, .ne0 = ti->ne[0],
                          .rows = (int64_t)(ti->nbytes / sd_dtype_row_bytes(from, ti->ne[0])),
                          .out_row = sd_dtype_row_bytes(to, ti->ne[0]), .index = (int)i, .count = (int)f->n_tensors,
                          .o = o};
        j->out_bytes = j->out_row * (size_t)j->rows;
        if (to != from && !sd_dtype_loadable(from))
            return sd_errf(err, "tensor '%s' has type %s, which specd cannot read to requantize (%s can be)",
                           ti->name, sd_dtype_name(from), sd_dtype_loadable_list());
    }
    return 0;
}

int sd_quantize_file(const char *in, const char *out, const sd_qtarget *t, const sd_quant_opts *o,
                     sd_quant_stats *stats, sd_err *err) {
    memset(stats, 0, sizeof *stats);
    gguf_file *f = NULL;
    if (gguf_open(in, &f, err)) return -1;
    tensor_job *jobs = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *jobs);
    sd_pool *pool = NULL;
    gguf_writer *w = NULL;
    int rc = -1;
    if (!jobs) {
        sd_errf(err, "out of memory");
        goto done;
    }
    if (plan(f, t, o, jobs, err)) {
        sd_err_prefix(err, "%s", in);
        goto done;
    }
    if (sd_pool_new(0, &pool, err)) goto done;
    w = gguf_writer_new((uint32_t)f->alignment);
    copy_metadata(f, w, t);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        tensor_job *j = &jobs[i];
        j->pool = pool;
        const gguf_tensor_info *ti = j->src;
        gguf_w_tensor_fn(w, ti->name, (uint32_t)j->to, (int)ti->n_dims, ti->ne, j->to == j->from ? fill_copy : fill_quantized, j);
        stats->in_bytes += ti->nbytes;
        stats->out_bytes += j->out_bytes;
        stats->n_tensors++;
        stats->n_quantized += j->to != j->from;
        if (j->to >= 0 && j->to < 64) stats->count_by_type[j->to]++;
    }
    if (gguf_writer_save(w, out, err)) goto done;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (jobs[i].failed) {
            remove(out);
            sd_errf(err, "%s: tensor '%s': out of memory while quantizing", out, jobs[i].src->name);
            goto done;
        }
    rc = 0;
done:
    gguf_writer_free(w);
    if (pool) sd_pool_free(pool);
    free(jobs);
    gguf_close(f);
    return rc;
}
