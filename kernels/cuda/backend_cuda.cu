/* The CUDA backend: the sd_backend interface on one device. Weights are uploaded once (F16, BF16 as they
 * are; F32 matrices converted to F16; Q8_0 repacked for aligned loads), KV caches and activations live in
 * device memory, every op runs on one stream, and only to_host()/sync() wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.h"

/* ---- allocation bookkeeping: pointer → bytes and kind, for the memory report ---- */

enum { MEM_WEIGHTS, MEM_KV, MEM_WORK };

typedef struct alloc_rec {
    void *p;
    size_t bytes;
    int kind;
} alloc_rec;

#define GRAPH_KEY_MAX 32
#define GRAPH_CACHE 256 /* step shapes (1..16 rows, with and without logits) x sessions x (target + draft) */

/* A recorded step, keyed by everything that shapes its ops (see graph_begin in backend.h). */
typedef struct graph_rec {
    uint64_t key[GRAPH_KEY_MAX];
    int key_len;
    cudaGraphExec_t exec;
    uint64_t last_use;
} graph_rec;

typedef struct cuda_backend {
    cuda_ctx c;
    alloc_rec *recs;
    int n_recs, cap_recs;
    graph_rec graphs[GRAPH_CACHE];
    int n_graphs;
    uint64_t tick;
    bool capturing;
    uint64_t capture_key[GRAPH_KEY_MAX];
    int capture_key_len;
} cuda_backend;

static cuda_backend *cb_of(sd_backend *b) { return (cuda_backend *)b->impl; }
/* Every entry point but matmul reaches the context through ctx_of, which forgets the converted activations
 * of the last products (int8 for the quantized kernels, F16 for cuBLAS; matmul.cu): any op may rewrite them,
 * so only back-to-back products on the same input (q/k/v, gate/up) reuse them. */
static cuda_ctx *ctx_of(sd_backend *b) {
    cuda_forget_inputs(&cb_of(b)->c);
    return &cb_of(b)->c;
}

/* ---- the sticky error ---- */

void cuda_fail(cuda_ctx *c, cudaError_t e, const char *what, const char *file, int line) {
    fprintf(stderr, "specd: cuda: %s failed at %s:%d: %s\n", what, file, line, cudaGetErrorString(e));
    if (c->err != cudaSuccess) return; /* the first failure is the cause; later ones are its echoes */
    c->err = e;
    snprintf(c->err_msg, sizeof c->err_msg, "cuda: %s failed: %s (%s)", what, cudaGetErrorString(e),
             cudaGetErrorName(e));
    if (c->owner) sd_backend_fail(c->owner, "%s", c->err_msg);
}

bool cuda_launched(cuda_ctx *c, const char *name, const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && c->fail_after > 0 && ++c->launches == c->fail_after) e = cudaErrorLaunchFailure;
    if (e == cudaSuccess && c->sync_each && !c->stepping) e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) return true;
    cuda_fail(c, e, name, file, line);
    return false;
}

int32_t *cuda_ids(cuda_ctx *c, size_t n) {
    if (n <= c->ids_cap) return c->ids;
    if (c->stepping) { /* a recorded graph would keep the old address: never grow while recording */
        cuda_fail(c, cudaErrorStreamCaptureUnsupported, "growing the id buffer inside a step", __FILE__, __LINE__);
        return NULL;
    }
    size_t cap = n < 256 ? 256 : n;
    CUDA_CK(c, cudaStreamSynchronize(c->stream));
    if (c->ids) cudaFree(c->ids);
    c->ids = NULL;
    c->bytes_work -= c->ids_cap * sizeof(int32_t);
    c->ids_cap = 0;
    cudaError_t e = cudaMalloc((void **)&c->ids, cap * sizeof(int32_t));
    if (e != cudaSuccess) {
        cuda_fail(c, e, "allocating the id buffer", __FILE__, __LINE__);
        return NULL;
    }
    c->ids_cap = cap;
    c->bytes_work += cap * sizeof(int32_t);
    return c->ids;
}

/* ---- the pass's descriptors (cuda_internal.h) ---- */

/* Before desc_host changes: the pending copies must have read it. */
static void desc_writable(cuda_ctx *c) {
    if (!c->desc_pending) return;
    CUDA_CK(c, cudaEventSynchronize(c->desc_copied));
    c->desc_pending = false;
}

static void desc_dirty(cuda_ctx *c, int lo, int hi) {
    int r = lo >= DESC_TABS;
    if (c->desc_lo[r] > lo) c->desc_lo[r] = lo;
    if (c->desc_hi[r] < hi) c->desc_hi[r] = hi;
}

void cuda_desc_set(cuda_ctx *c, int i, int v) {
    if (c->desc_host[i] == v) return;
    desc_writable(c);
    c->desc_host[i] = v;
    desc_dirty(c, i, i + 1);
}

void cuda_desc_put(cuda_ctx *c, int i, const int32_t *v, int n) {
    int a = 0, b = n; /* the changed part: [a, b) */
    while (a < b && c->desc_host[i + a] == v[a]) a++;
    while (b > a && c->desc_host[i + b - 1] == v[b - 1]) b--;
    if (a == b) return;
    desc_writable(c);
    memcpy(c->desc_host + i + a, v + a, sizeof(int) * (size_t)(b - a));
    desc_dirty(c, i + a, i + b);
}

void cuda_desc_flush(cuda_ctx *c) {
    for (int r = 0; r < 2; r++) {
        int lo = c->desc_lo[r], hi = c->desc_hi[r];
        if (lo >= hi) continue;
        c->desc_lo[r] = DESC_INTS;
        c->desc_hi[r] = 0;
        if (c->stepping) { /* a recorded graph would replay this copy with whatever desc_host then holds */
            cuda_fail(c, cudaErrorStreamCaptureUnsupported, "descriptors changed inside a step", __FILE__, __LINE__);
            return;
        }
        CUDA_CK(c, cudaMemcpyAsync(c->desc_dev + lo, c->desc_host + lo, sizeof(int) * (size_t)(hi - lo),
                                   cudaMemcpyHostToDevice, c->stream));
        CUDA_CK(c, cudaEventRecord(c->desc_copied, c->stream));
        c->desc_pending = true;
    }
}

/* The descriptor buffer and its mirror, both zero (so the mirror starts equal to the device). */
static cudaError_t desc_alloc(cuda_ctx *c) {
    size_t bytes = sizeof(int) * DESC_INTS;
    cudaError_t e = cudaMalloc((void **)&c->desc_dev, bytes);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&c->desc_host, bytes);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->desc_copied, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaMemsetAsync(c->desc_dev, 0, bytes, c->stream);
    if (e != cudaSuccess) return e;
    memset(c->desc_host, 0, bytes);
    c->desc_lo[0] = c->desc_lo[1] = DESC_INTS;
    c->desc_hi[0] = c->desc_hi[1] = 0;
    c->step_dev = c->desc_dev + DESC_STEP;
    c->kv_rows = c->desc_dev + DESC_ROWS;
    c->kv_tabs = c->desc_dev + DESC_TABS;
    c->bytes_work += bytes;
    return cudaSuccess;
}

static size_t *kind_counter(cuda_ctx *c, int kind) {
    return kind == MEM_WEIGHTS ? &c->bytes_weights : kind == MEM_KV ? &c->bytes_kv : &c->bytes_work;
}

static int oom(cuda_ctx *c, sd_err *err, size_t bytes, const char *what) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError(); /* clear the failed allocation's error state */
    cudaMemGetInfo(&free_b, &total_b);
    return sd_errf(err,
                   "cuda: out of GPU memory allocating %.1f MiB for %s (%.1f MiB free of %.1f MiB on %s; "
                   "held: weights %.1f MiB, KV %.1f MiB, workspace %.1f MiB)",
                   bytes / 1048576.0, what, free_b / 1048576.0, total_b / 1048576.0, c->name,
                   c->bytes_weights / 1048576.0, c->bytes_kv / 1048576.0, c->bytes_work / 1048576.0);
}

static void *dev_alloc(sd_backend *b, size_t bytes, int kind, const char *what, sd_err *err) {
    cuda_backend *cb = cb_of(b);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        oom(&cb->c, err, bytes, what);
        return NULL;
    }
    if (cb->n_recs == cb->cap_recs) {
        int cap = cb->cap_recs ? cb->cap_recs * 2 : 64;
        alloc_rec *r = (alloc_rec *)realloc(cb->recs, sizeof *r * (size_t)cap);
        if (!r) {
            cudaFree(p);
            sd_errf(err, "out of host memory");
            return NULL;
        }
        cb->recs = r;
        cb->cap_recs = cap;
    }
    cb->recs[cb->n_recs++] = (alloc_rec){p, bytes, kind};
    *kind_counter(&cb->c, kind) += bytes;
    return p;
}

static void dev_free(sd_backend *b, void *p) {
    if (!p) return;
    cuda_backend *cb = cb_of(b);
    CUDA_CK(&cb->c, cudaStreamSynchronize(cb->c.stream));
    for (int i = 0; i < cb->n_recs; i++) {
        if (cb->recs[i].p != p) continue;
        *kind_counter(&cb->c, cb->recs[i].kind) -= cb->recs[i].bytes;
        cb->recs[i] = cb->recs[--cb->n_recs];
        break;
    }
    CUDA_CK(&cb->c, cudaFree(p));
}

/* ---- memory ops ---- */

static float *c_alloc(sd_backend *b, size_t n_floats, sd_err *err) {
    size_t bytes = n_floats * sizeof(float);
    float *p = (float *)dev_alloc(b, bytes, MEM_WORK, "activations", err);
    if (p) CUDA_CK(ctx_of(b), cudaMemsetAsync(p, 0, bytes, ctx_of(b)->stream));
    return p;
}

static void c_release(sd_backend *b, void *p) { dev_free(b, p); }

/* Q8_0 blocks (34 bytes: F16 scale + 32 int8) → all quants, then all scales (see cuda_internal.h). */
static void repack_q8_0(uint8_t *dst, const sd_tensor *t) {
    size_t nb_row = (size_t)t->cols / SD_QK8_0;
    const sd_block_q8_0 *src = (const sd_block_q8_0 *)t->host;
    int8_t *q = (int8_t *)dst;
    uint16_t *s = (uint16_t *)(dst + q8_repacked_scales_offset(t->rows, t->cols));
    for (size_t r = 0; r < (size_t)t->rows; r++)
        for (size_t blk = 0; blk < nb_row; blk++) {
            const sd_block_q8_0 *bl = &src[r * nb_row + blk];
            memcpy(q + (r * nb_row + blk) * SD_QK8_0, bl->qs, SD_QK8_0);
            s[r * nb_row + blk] = bl->d;
        }
}

static int c_upload_weight(sd_backend *b, sd_tensor *t, sd_err *err) {
    cuda_ctx *c = ctx_of(b);
    const char *name = t->name ? t->name : "tensor";
    size_t count = (size_t)t->rows * (size_t)t->cols;
    /* the types this backend has kernels for (the CPU computes more: GGML's quantized types) */
    if (t->type != SD_F32 && t->type != SD_F16 && t->type != SD_BF16 && !sd_quant_block(t->type))
        return sd_errf(err, "cuda: tensor %s has type %s, which the CUDA backend cannot compute with "
                       "(it has kernels for f32, f16, bf16, q8_0 and GGML's q4_0..q6_K, iq4_nl, iq4_xs)", name,
                       sd_dtype_name(t->type) ? sd_dtype_name(t->type) : "unknown");
    if (t->type == SD_F32 && t->rows > 1) {
        /* matrices go to F16: half the bytes to read per token */
        __half *d = (__half *)dev_alloc(b, count * 2, MEM_WEIGHTS, name, err);
        float *staging = NULL;
        if (!d) return -1;
        if (cudaMalloc((void **)&staging, count * 4) != cudaSuccess) {
            dev_free(b, d);
            return oom(c, err, count * 4, "F32 staging");
        }
        /* copy and conversion on the one stream, in order; the wait is for the staging buffer's free */
        CUDA_CK(c, cudaMemcpyAsync(staging, t->host, count * 4, cudaMemcpyHostToDevice, c->stream));
        cuda_f32_to_f16(c, d, staging, count);
        CUDA_CK(c, cudaStreamSynchronize(c->stream));
        cudaFree(staging);
        t->data = d;
        t->data_type = SD_F16;
        return 0;
    }
    if (t->type == SD_Q8_0) {
        size_t bytes = q8_repacked_scales_offset(t->rows, t->cols) + count / SD_QK8_0 * 2;
        uint8_t *host = (uint8_t *)malloc(bytes);
        if (!host) return sd_errf(err, "out of host memory repacking %s", name);
        repack_q8_0(host, t);
        void *d = dev_alloc(b, bytes, MEM_WEIGHTS, name, err);
        if (!d) {
            free(host);
            return -1;
        }
        if (cuda_q8_reserve(c, t->cols)) {
            free(host);
            dev_free(b, d);
            return oom(c, err, (size_t)t->cols * MV_MAX_N * 2, "Q8_0 activation buffers");
        }
        CUDA_CK(c, cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, c->stream));
        CUDA_CK(c, cudaStreamSynchronize(c->stream)); /* before the host copy is freed */
        free(host);
        t->data = d;
        t->data_type = SD_Q8_0;
        return 0;
    }
    size_t bytes = sd_dtype_row_bytes(t->type, t->cols) * (size_t)t->rows;
    if (sd_quant_block(t->type) && t->rows > 1 && t->cols % 32 == 0 && cuda_q8_reserve(c, t->cols))
        return oom(c, err, (size_t)t->cols * MV_MAX_N * 2, "int8 activation buffers");
    void *d = dev_alloc(b, bytes, MEM_WEIGHTS, name, err);
    if (!d) return -1;
    CUDA_CK(c, cudaMemcpyAsync(d, t->host, bytes, cudaMemcpyHostToDevice, c->stream));
    CUDA_CK(c, cudaStreamSynchronize(c->stream)); /* the mapping may be unmapped once loading ends */
    t->data = d;
    t->data_type = t->type;
    return c->err ? sd_errf(err, "%s (uploading %s)", c->err_msg, name) : 0;
}

static void graphs_forget(cuda_backend *cb);

/* Freeing weights or a KV pool unloads a model: a model loaded after it may get the same host and device
 * addresses, so a step graph recorded for the old one would match its keys and replay the old kernels (the
 * old weight types) on the new memory. Session 6 saw this on the H200: a BF16 model's steps replayed graphs
 * recorded for the F32 model before it (logits off by a relative 6-22). */
static void c_free_weight(sd_backend *b, sd_tensor *t) {
    graphs_forget(cb_of(b));
    dev_free(b, t->data);
    t->data = NULL;
}

static void c_to_host(sd_backend *b, float *dst, const float *src, size_t n) {
    cuda_ctx *c = ctx_of(b);
    CUDA_CK(c, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CK(c, cudaStreamSynchronize(c->stream));
}

static void c_from_host(sd_backend *b, float *dst, const float *src, size_t n) {
    cuda_ctx *c = ctx_of(b);
    CUDA_CK(c, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    CUDA_CK(c, cudaStreamSynchronize(c->stream)); /* src may be a stack buffer the caller reuses */
}

/* KV pool layout: [layer][block][SD_KV_BLOCK][kv_dim] F16 or F32 for K, the same for V. */
static int c_kv_mem_alloc(sd_backend *b, sd_kv_mem *kv, int n_layers, int kv_dim, int n_blocks, sd_dtype type,
                          sd_err *err) {
    if (sd_kv_mem_shape(kv, n_layers, kv_dim, n_blocks, type, err)) return -1;
    size_t bytes = (size_t)n_layers * sd_kv_layer_bytes(kv);
    kv->k = dev_alloc(b, bytes, MEM_KV, "KV pool (K)", err);
    if (!kv->k) return -1;
    kv->v = dev_alloc(b, bytes, MEM_KV, "KV pool (V)", err);
    if (!kv->v) {
        dev_free(b, kv->k);
        kv->k = NULL;
        return -1;
    }
    return 0;
}

static void c_kv_mem_free(sd_backend *b, sd_kv_mem *kv) {
    graphs_forget(cb_of(b));
    dev_free(b, kv->k);
    dev_free(b, kv->v);
    kv->k = kv->v = NULL;
}

static size_t c_mem_available(sd_backend *b) {
    size_t free_b = 0, total = 0;
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return free_b;
}

static void c_sync(sd_backend *b) { CUDA_CK(ctx_of(b), cudaStreamSynchronize(ctx_of(b)->stream)); }

static void c_mem_usage(sd_backend *b, size_t *weights, size_t *kv, size_t *work) {
    cuda_ctx *c = ctx_of(b);
    if (weights) *weights = c->bytes_weights;
    if (kv) *kv = c->bytes_kv;
    if (work) *work = c->bytes_work;
}

/* ---- ops ---- */

static void *kv_layer(const sd_kv_mem *kv, void *base, int layer) {
    return (char *)base + (size_t)layer * sd_kv_layer_bytes(kv);
}

static void c_embed(sd_backend *b, float *out, const sd_tensor *t, const int32_t *ids, int n) {
    cuda_embed(ctx_of(b), out, t, ids, n);
}
static void c_rmsnorm(sd_backend *b, float *out, const float *x, const sd_tensor *w, int rows, int width, float eps) {
    cuda_rmsnorm(ctx_of(b), out, x, w, rows, width, eps);
}
static void c_matmul(sd_backend *b, float *out, const sd_tensor *w, const float *x, int n) {
    cuda_matmul(&cb_of(b)->c, out, w, x, n);
}
static void c_add_rmsnorm(sd_backend *b, float *out, float *x, const float *y, const sd_tensor *w, int rows, int width,
                          float eps) {
    cuda_add_rmsnorm(ctx_of(b), out, x, y, w, rows, width, eps);
}
static void c_add_bias(sd_backend *b, float *x, const sd_tensor *bias, int n) {
    cuda_add_bias(ctx_of(b), x, bias, n);
}
static void c_rope(sd_backend *b, float *x, int n, int n_heads, int head_dim, int n_rot, int pos0,
                   const float *inv_freq, bool neox) {
    cuda_rope(ctx_of(b), x, n, n_heads, head_dim, n_rot, pos0, inv_freq, neox);
}
static void c_kv_spans(sd_backend *b, const sd_kv_span *spans, int n_spans, int rows) {
    cuda_kv_spans(ctx_of(b), spans, n_spans, rows);
}
static void c_kv_store(sd_backend *b, sd_kv_mem *kv, int layer, const float *k, const float *v) {
    cuda_kv_store(ctx_of(b), kv_layer(kv, kv->k, layer), kv_layer(kv, kv->v, layer), kv->type, k, v, kv->kv_dim);
}
static void c_attention(sd_backend *b, float *out, const float *q, const sd_kv_mem *kv, int layer, int n_heads,
                        int n_kv_heads, int head_dim) {
    cuda_attention(ctx_of(b), out, q, kv_layer(kv, kv->k, layer), kv_layer(kv, kv->v, layer), kv->type, n_heads,
                   n_kv_heads, head_dim, kv->kv_dim);
}
static void c_swiglu(sd_backend *b, float *out, const float *gate, const float *up, size_t count) {
    cuda_swiglu(ctx_of(b), out, gate, up, count);
}
static void c_argmax_rows(sd_backend *b, int32_t *ids, const float *x, int rows, int width) {
    cuda_argmax_rows(ctx_of(b), ids, x, rows, width);
}
static void c_sample_rows(sd_backend *b, int32_t *ids, float *probs, const float *logits, int rows, int width,
                          const sd_sample_cfg *cfg, const float *u) {
    cuda_sample_rows(ctx_of(b), ids, probs, logits, rows, width, cfg, u);
}
static int c_spec_accept(sd_backend *b, int32_t *next, const float *p, const float *q, const int32_t *draft, int k,
                         int width, const float *u) {
    return cuda_spec_accept(ctx_of(b), next, p, q, draft, k, width, u);
}
static void c_add(sd_backend *b, float *x, const float *y, size_t count) { cuda_add(ctx_of(b), x, y, count); }

/* ---- step graphs ---- */

static graph_rec *graph_find(cuda_backend *cb, const uint64_t *key, int key_len) {
    for (int i = 0; i < cb->n_graphs; i++)
        if (cb->graphs[i].key_len == key_len && !memcmp(cb->graphs[i].key, key, sizeof(uint64_t) * (size_t)key_len))
            return &cb->graphs[i];
    return NULL;
}

/* A free slot, evicting the least recently used graph when the cache is full. */
static graph_rec *graph_slot(cuda_backend *cb) {
    if (cb->n_graphs < GRAPH_CACHE) return &cb->graphs[cb->n_graphs++];
    graph_rec *old = &cb->graphs[0];
    for (int i = 1; i < cb->n_graphs; i++)
        if (cb->graphs[i].last_use < old->last_use) old = &cb->graphs[i];
    cudaGraphExecDestroy(old->exec);
    return old;
}

/* Drops every recorded graph (their kernels may be running: the stream is drained first). */
static void graphs_forget(cuda_backend *cb) {
    if (!cb->n_graphs) return;
    CUDA_CK(&cb->c, cudaStreamSynchronize(cb->c.stream));
    for (int i = 0; i < cb->n_graphs; i++) cudaGraphExecDestroy(cb->graphs[i].exec);
    cb->n_graphs = 0;
}

static int c_graph_begin(sd_backend *b, const uint64_t *key, int key_len, const int32_t *tokens, int n, int pos0) {
    cuda_backend *cb = cb_of(b);
    cuda_ctx *c = &cb->c;
    cuda_forget_inputs(c);
    if (!c->graphs_enabled || n < 1 || n > SD_CUDA_STEP_MAX || key_len > GRAPH_KEY_MAX) return 0;
    /* pos0 and the ids where the step's kernels read them, uploaded with the rows kv_spans changed (one
     * copy, before any recording starts) */
    cuda_desc_set(c, DESC_STEP, pos0);
    cuda_desc_put(c, DESC_STEP + 1, tokens, n);
    cuda_desc_flush(c);
    graph_rec *g = graph_find(cb, key, key_len);
    if (g) {
        g->last_use = ++cb->tick;
        CUDA_CK(c, cudaGraphLaunch(g->exec, c->stream));
        return 1;
    }
    if (cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    cb->capturing = true;
    c->stepping = true;
    memcpy(cb->capture_key, key, sizeof(uint64_t) * (size_t)key_len);
    cb->capture_key_len = key_len;
    return 0;
}

static int c_graph_end(sd_backend *b) {
    cuda_backend *cb = cb_of(b);
    cuda_ctx *c = &cb->c;
    cuda_forget_inputs(c);
    if (!cb->capturing) return 0;
    cb->capturing = false;
    c->stepping = false;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fprintf(stderr, "specd: cuda: recording a step graph failed (%s); graphs are off from now on\n",
                cudaGetErrorString(e));
        c->graphs_enabled = false;
        return -1;
    }
    graph_rec *g = graph_slot(cb);
    memcpy(g->key, cb->capture_key, sizeof(uint64_t) * (size_t)cb->capture_key_len);
    g->key_len = cb->capture_key_len;
    g->exec = exec;
    g->last_use = ++cb->tick;
    /* capturing recorded the ops without running them: run this step now */
    CUDA_CK(c, cudaGraphLaunch(exec, c->stream));
    return 0;
}

static void c_destroy(sd_backend *b) {
    if (!b) return;
    cuda_backend *cb = cb_of(b);
    cudaStreamSynchronize(cb->c.stream);
    for (int i = 0; i < cb->n_recs; i++) cudaFree(cb->recs[i].p);
    for (int i = 0; i < cb->n_graphs; i++) cudaGraphExecDestroy(cb->graphs[i].exec);
    if (cb->c.desc_copied) cudaEventDestroy(cb->c.desc_copied);
    cudaFree(cb->c.desc_dev);
    if (cb->c.desc_host) cudaFreeHost(cb->c.desc_host);
    if (cb->c.scratch) cudaFree(cb->c.scratch);
    if (cb->c.deq) cudaFree(cb->c.deq);
    cuda_attention_free(&cb->c);
    cudaFree(cb->c.q8_x);
    cudaFree(cb->c.q8_d);
    cudaFree(cb->c.ids);
    cudaFree(cb->c.samp_ws);
    cudaFree(cb->c.gemm_scal);
    cublasDestroy(cb->c.cublas);
    cudaStreamDestroy(cb->c.stream);
    free(cb->recs);
    free(cb);
    free(b);
}

extern "C" int sd_backend_cuda_new(int device, sd_backend **out, sd_err *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) return sd_errf(err, "no usable CUDA driver or device (%s)", cudaGetErrorString(e));
    if (count == 0) return sd_errf(err, "no CUDA device present");
    if (device < 0 || device >= count)
        return sd_errf(err, "CUDA device %d does not exist (%d device%s present)", device, count,
                       count == 1 ? "" : "s");
    if ((e = cudaSetDevice(device)) != cudaSuccess)
        return sd_errf(err, "cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
    cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return sd_errf(err, "cannot query CUDA device %d: %s", device, cudaGetErrorString(e));
    if (prop.major < 8)
        return sd_errf(err, "CUDA device %d (%s, sm_%d%d) is older than sm_80, which specd needs", device,
                       prop.name, prop.major, prop.minor);

    sd_backend *b = (sd_backend *)calloc(1, sizeof *b);
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!b || !cb) {
        free(b);
        free(cb);
        return sd_errf(err, "out of host memory");
    }
    cb->c.device = device;
    snprintf(cb->c.name, sizeof cb->c.name, "%.200s (cuda:%d, sm_%d%d)", prop.name, device, prop.major, prop.minor);
    if ((e = cudaStreamCreateWithFlags(&cb->c.stream, cudaStreamNonBlocking)) != cudaSuccess) {
        free(b);
        free(cb);
        return sd_errf(err, "cuda: cannot create a stream: %s", cudaGetErrorString(e));
    }
    if (cublasCreate(&cb->c.cublas) != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(cb->c.stream);
        free(b);
        free(cb);
        return sd_errf(err, "cuda: cannot initialise cuBLAS");
    }
    cublasSetStream(cb->c.cublas, cb->c.stream);
    if (desc_alloc(&cb->c) != cudaSuccess || cudaMalloc((void **)&cb->c.gemm_scal, sizeof(float) * 3) != cudaSuccess) {
        cudaGetLastError();
        b->impl = cb;
        c_destroy(b);
        return sd_errf(err, "cuda: cannot allocate the step state");
    }
    cuda_attention_init(&cb->c);
    const char *g = getenv("SPECD_CUDA_GRAPHS");
    cb->c.graphs_enabled = !(g && !strcmp(g, "0"));
    const char *sy = getenv("SPECD_CUDA_SYNC");
    cb->c.sync_each = sy && strcmp(sy, "0");
    const char *tc = getenv("SPECD_CUDA_TC");
    cb->c.tc = tc && !strcmp(tc, "1");
    const char *fa = getenv("SPECD_FAIL_AFTER");
    cb->c.fail_after = fa ? strtol(fa, NULL, 10) : 0;

    cb->c.owner = b;
    b->name = "cuda";
    b->device = cb->c.name;
    b->n_threads = 1;
    b->impl = cb;
    b->destroy = c_destroy;
    b->alloc = c_alloc;
    b->release = c_release;
    b->upload_weight = c_upload_weight;
    b->free_weight = c_free_weight;
    b->to_host = c_to_host;
    b->from_host = c_from_host;
    b->kv_mem_alloc = c_kv_mem_alloc;
    b->kv_mem_free = c_kv_mem_free;
    b->mem_available = c_mem_available;
    b->kv_spans = c_kv_spans;
    b->sync = c_sync;
    b->mem_usage = c_mem_usage;
    b->argmax_rows = c_argmax_rows;
    b->sample_rows = c_sample_rows;
    b->spec_accept = c_spec_accept;
    b->graph_begin = c_graph_begin;
    b->graph_end = c_graph_end;
    b->embed = c_embed;
    b->rmsnorm = c_rmsnorm;
    b->matmul = c_matmul;
    b->add_bias = c_add_bias;
    b->rope = c_rope;
    b->kv_store = c_kv_store;
    b->attention = c_attention;
    b->swiglu = c_swiglu;
    b->add = c_add;
    b->add_rmsnorm = c_add_rmsnorm;
    *out = b;
    return 0;
}
