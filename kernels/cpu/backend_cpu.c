/* The CPU backend: host memory, weights used in place in the file mapping, ops spread over a persistent
 * thread pool, inner loops from the SIMD level chosen at start-up (kernels/cpu/simd.h).
 * KV pool layout: F16 or F32, [layer][block][SD_KV_BLOCK][kv_dim] for K and for V, in an anonymous mapping
 * committed as blocks are first written. */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/backend.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/quant_k.h"

typedef struct cpu_impl {
    sd_pool *pool;
    const sd_cpu_kernels *k;
    size_t kv_bytes, work_bytes;
    const sd_kv_span *spans; /* kv_spans: this pass's spans, and the span of each row */
    int n_spans, rows, *row_span, row_span_cap;
    int8_t *xq; /* Q8_0 products: activations quantized per block (grows to the largest n x cols seen) */
    float *xd;
    int32_t *xs;
    sd_act_group *xg; /* SD_MM_QUANT products: the same by group (xg_cap records) */
    size_t xq_cap, xg_cap;
    sd_attn_ws attn; /* attention scratch */
    char device[64];
    long fail_after, matmuls; /* SPECD_FAIL_AFTER=N (test hook): the N-th matmul fails */
} cpu_impl;

static cpu_impl *impl_of(sd_backend *b) { return (cpu_impl *)b->impl; }

/* Element-wise ops smaller than this run on the calling thread: waking workers costs more. */
#define PAR_MIN_ELEMS 32768
#define ELEM_GRAIN 16384

/* ---------------------------------------------------------------- memory */

/* Every allocation carries its size in a 64-byte header (keeps the data 64-byte aligned) for mem_usage.
 * Large ones are anonymous mappings: the kernel hands out zero pages as they are first written, so a
 * buffer sized for the largest pass (the forward workspace's 128 rows of logits: 16 MB at a 32000-word
 * vocabulary) costs no zeroing, and no time on the first request, for the rows a pass never reaches. */
#define ALLOC_HDR 64
#define ALLOC_MAP_MIN ((size_t)256 << 10)

static float *raw_alloc(size_t n_floats, sd_err *err) {
    void *p = NULL;
    size_t bytes = (n_floats ? n_floats : 1) * sizeof(float);
    if (n_floats > (SIZE_MAX - ALLOC_HDR) / sizeof(float)) p = NULL;
    else if (bytes >= ALLOC_MAP_MIN) {
        p = mmap(NULL, bytes + ALLOC_HDR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) p = NULL;
    } else if (posix_memalign(&p, 64, bytes + ALLOC_HDR) == 0) memset(p, 0, bytes + ALLOC_HDR);
    else p = NULL;
    if (!p) {
        sd_errf(err, "cpu backend: cannot allocate %zu floats", n_floats);
        return NULL;
    }
    *(size_t *)p = bytes;
    return (float *)((char *)p + ALLOC_HDR);
}

/* Frees a raw_alloc block and returns its size. */
static size_t raw_free(void *p) {
    if (!p) return 0;
    void *base = (char *)p - ALLOC_HDR;
    size_t bytes = *(size_t *)base;
    if (bytes >= ALLOC_MAP_MIN) munmap(base, bytes + ALLOC_HDR);
    else free(base);
    return bytes;
}

static float *cpu_alloc(sd_backend *b, size_t n_floats, sd_err *err) {
    float *p = raw_alloc(n_floats, err);
    if (p) impl_of(b)->work_bytes += *(size_t *)((char *)p - ALLOC_HDR);
    return p;
}

static void cpu_release(sd_backend *b, void *p) { impl_of(b)->work_bytes -= raw_free(p); }

static void cpu_mem_usage(sd_backend *b, size_t *weights, size_t *kv, size_t *work) {
    if (weights) *weights = 0; /* weights stay in the file mapping */
    if (kv) *kv = impl_of(b)->kv_bytes;
    if (work) *work = impl_of(b)->work_bytes;
}

static int mm_type_index(int type) {
    switch (type) {
    case SD_F32: return SD_MM_F32;
    case SD_F16: return SD_MM_F16;
    case SD_BF16: return SD_MM_BF16;
    case SD_Q8_0: return SD_MM_Q8_0;
    default: return sd_quant_block(type) ? SD_MM_QUANT : -1;
    }
}

/* Maps the pages of [p, p + bytes) now, at load, so the first request does not take the weights' page
 * faults (tens of ms for a few hundred MB). The file's pages may be shared with other tensors or
 * outside the file mapping's reach (a tensor in host memory): madvise then fails harmlessly, and a read
 * of one byte a page does the same. */
static void populate(const void *p, size_t bytes) {
    const size_t page = 4096;
    uintptr_t a = (uintptr_t)p / page * page, e = (uintptr_t)p + bytes;
#ifdef MADV_POPULATE_READ
    if (madvise((void *)a, e - a, MADV_POPULATE_READ) == 0) return;
#endif
    volatile const char *c = p;
    char sink = 0;
    for (size_t i = 0; i < bytes; i += page) sink ^= c[i];
    (void)sink;
}

static int cpu_upload_weight(sd_backend *b, sd_tensor *t, sd_err *err) {
    const char *name = t->name ? t->name : "(unnamed)";
    if (mm_type_index(t->type) < 0) {
        const char *tn = sd_dtype_name(t->type);
        return sd_errf(err, "tensor %s: type %s is not supported by the cpu backend", name, tn ? tn : "unknown");
    }
    if (t->cols <= 0 || t->rows <= 0 || t->cols % sd_dtype_block(t->type) != 0)
        return sd_errf(err, "tensor %s: bad shape %lld x %lld for type %s", name, (long long)t->rows,
                       (long long)t->cols, sd_dtype_name(t->type));
    if (!t->host) return sd_errf(err, "tensor %s: no data", name);
    t->data = (void *)t->host; /* the mapping is used in place: no copy */
    populate(t->data, sd_dtype_row_bytes(t->type, t->cols) * (size_t)t->rows);
    t->data_type = t->type;
    return 0;
}

static void cpu_free_weight(sd_backend *b, sd_tensor *t) { t->data = NULL; }

static void cpu_copy(sd_backend *b, float *dst, const float *src, size_t n) {
    if (n && dst != src) memmove(dst, src, n * sizeof(float));
}

/* The KV pool is an anonymous mapping: the kernel hands out zero pages as blocks are first written (blocks
 * are handed out lowest first), so a large pool costs resident memory for the positions used. */
static void *kv_map(size_t bytes, sd_err *err) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        sd_errf(err, "cpu backend: cannot map %zu bytes", bytes);
        return NULL;
    }
    return p;
}

static size_t kv_bytes(const sd_kv_mem *kv) { return (size_t)kv->n_layers * sd_kv_layer_bytes(kv); }

static int cpu_kv_mem_alloc(sd_backend *b, sd_kv_mem *kv, int n_layers, int kv_dim, int n_blocks, sd_dtype type,
                            sd_err *err) {
    if (sd_kv_mem_shape(kv, n_layers, kv_dim, n_blocks, type, err)) return -1;
    kv->k = kv_map(kv_bytes(kv), err);
    kv->v = kv->k ? kv_map(kv_bytes(kv), err) : NULL;
    if (!kv->v) {
        if (kv->k) munmap(kv->k, kv_bytes(kv));
        kv->k = NULL;
        return sd_err_prefix(err, "kv pool (%d layers x %d blocks x %d)", n_layers, n_blocks, kv_dim);
    }
    impl_of(b)->kv_bytes += 2 * kv_bytes(kv);
    return 0;
}

static void cpu_kv_mem_free(sd_backend *b, sd_kv_mem *kv) {
    if (kv->k) munmap(kv->k, kv_bytes(kv));
    if (kv->v) munmap(kv->v, kv_bytes(kv));
    if (kv->k || kv->v) impl_of(b)->kv_bytes -= 2 * kv_bytes(kv);
    kv->k = kv->v = NULL;
}

/* MemAvailable from /proc/meminfo. */
static size_t cpu_mem_available(sd_backend *b) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb * 1024;
}

static void cpu_sync(sd_backend *b) {}

/* ---------------------------------------------------------------- ops */

static void cpu_embed(sd_backend *b, float *out, const sd_tensor *t, const int32_t *ids, int n) {
    size_t rb = sd_dtype_row_bytes(t->type, t->cols);
    const uint8_t *base = t->data ? t->data : t->host;
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * t->cols;
        if (ids[i] < 0 || ids[i] >= t->rows) { /* the model validates ids; never read outside the table */
            memset(o, 0, (size_t)t->cols * sizeof(float));
            continue;
        }
        const uint8_t *row = base + (size_t)ids[i] * rb;
        if (t->type == SD_F32) memcpy(o, row, (size_t)t->cols * sizeof(float));
        else sd_dequant_row(t->type, row, o, t->cols);
    }
}

typedef struct rms_job {
    float *out;
    const float *x;
    const sd_tensor *w;
    int width;
    float eps;
} rms_job;

static void rms_rows(void *v, int64_t r0, int64_t r1) {
    const rms_job *j = v;
    const void *w = j->w->data ? j->w->data : j->w->host;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * j->width;
        float *o = j->out + r * j->width;
        double ss = 0; /* double, as ggml does: the sum of thousands of squares loses digits in float */
        for (int c = 0; c < j->width; c++) ss += (double)x[c] * x[c];
        float s = 1.0f / sqrtf((float)(ss / j->width) + j->eps);
        if (j->w->type == SD_F32) {
            const float *wf = w;
            for (int c = 0; c < j->width; c++) o[c] = x[c] * s * wf[c];
        } else {
            for (int c = 0; c < j->width; c++) o[c] = x[c] * s * sd_row_get(j->w->type, w, c);
        }
    }
}

static void cpu_rmsnorm(sd_backend *b, float *out, const float *x, const sd_tensor *w, int rows, int width,
                        float eps) {
    rms_job j = {out, x, w, width, eps};
    int64_t grain = width > 0 ? (PAR_MIN_ELEMS + width - 1) / width : 1;
    sd_pool_for(impl_of(b)->pool, rows, grain, rms_rows, &j);
}

typedef struct mm_task {
    sd_mm_job job;
    sd_mm_rows_fn fn;
} mm_task;

static void mm_range(void *v, int64_t r0, int64_t r1) {
    const mm_task *t = v;
    t->fn(&t->job, r0, r1);
}

static void cpu_matmul(sd_backend *b, float *out, const sd_tensor *w, const float *x, int n) {
    cpu_impl *im = impl_of(b);
    int ti = mm_type_index(w->type);
    if (n <= 0) return;
    if (im->fail_after > 0 && ++im->matmuls == im->fail_after)
        sd_backend_fail(b, "injected fault in matmul %ld (SPECD_FAIL_AFTER)", im->matmuls);
    if (ti < 0) { /* upload_weight refused this type already; never read bytes we cannot interpret */
        sd_backend_fail(b, "matmul of %s: type %d has no kernel", w->name ? w->name : "a tensor", (int)w->type);
        for (size_t i = 0; i < (size_t)n * (size_t)w->rows; i++) out[i] = NAN;
        return;
    }
    mm_task t = {
        .job = {.out = out, .out_stride = w->rows, .w = w->data ? w->data : w->host,
                .row_bytes = sd_dtype_row_bytes(w->type, w->cols), .cols = w->cols, .x = x, .n = n,
                .type = w->type},
        .fn = im->k->mm[ti],
    };
    if (ti == SD_MM_Q8_0 || ti == SD_MM_QUANT) { /* integer kernels: activations quantized per block */
        size_t need = (size_t)n * (size_t)w->cols, ngrp = (size_t)n * (size_t)((w->cols + 255) / 256);
        if (need > im->xq_cap || ngrp > im->xg_cap) {
            need = need > im->xq_cap ? need : im->xq_cap, ngrp = ngrp > im->xg_cap ? ngrp : im->xg_cap;
            int8_t *q = realloc(im->xq, need);
            float *d = q ? realloc(im->xd, need / SD_QK8_0 * sizeof(float)) : NULL;
            if (q) im->xq = q;
            if (d) im->xd = d;
            int32_t *sums = d ? realloc(im->xs, need / SD_QK8_0 * sizeof(int32_t)) : NULL;
            if (sums) im->xs = sums;
            sd_act_group *g = sums ? realloc(im->xg, ngrp * sizeof *g) : NULL;
            if (g) im->xg = g;
            if (!q || !d || !sums || !g) { /* out of memory: no product rather than a crash */
                sd_backend_fail(b, "out of memory quantizing %zu activations", need);
                for (size_t i = 0; i < (size_t)n * (size_t)w->rows; i++) out[i] = NAN;
                return;
            }
            im->xq_cap = need, im->xg_cap = ngrp;
        }
        /* the records by group: SD_MM_QUANT always, Q8_0 where its blocked product runs */
        int groups = ti == SD_MM_QUANT || n >= im->k->block_min[ti];
        for (int i = 0; i < n; i++) {
            size_t o = (size_t)i * (size_t)w->cols, ob = (size_t)i * (size_t)(w->cols / SD_QK8_0);
            im->k->quant_act(x + o, w->cols, im->xq + o, im->xd + ob, im->xs + ob);
            if (groups) im->k->act_groups(im->xq + o, im->xd + ob, im->xs + ob, w->cols, im->xg + i, n);
        }
        t.job.xq = im->xq;
        t.job.xg = groups ? im->xg : NULL;
        t.job.xd = im->xd;
        t.job.xs = im->xs;
    }
    /* Chunks of whole row groups, several per thread so a thread slowed by a neighbour on a shared
     * machine does not hold up the others; large enough to stream from memory efficiently. */
    int nth = sd_pool_size(im->pool);
    int64_t grain = w->rows / ((int64_t)nth * 8);
    grain = (grain + SD_MM_ROW_ALIGN - 1) / SD_MM_ROW_ALIGN * SD_MM_ROW_ALIGN;
    if (grain < SD_MM_ROW_ALIGN) grain = SD_MM_ROW_ALIGN;
    /* Tiny products are not worth waking the pool. */
    if ((double)w->rows * (double)w->cols * n < 65536.0) grain = w->rows;
    sd_pool_for(im->pool, w->rows, grain, mm_range, &t);
}

static void cpu_add_bias(sd_backend *b, float *x, const sd_tensor *bias, int n) {
    const void *bp = bias->data ? bias->data : bias->host;
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * bias->cols;
        for (int64_t c = 0; c < bias->cols; c++) r[c] += sd_row_get(bias->type, bp, c);
    }
}

typedef struct rope_job {
    float *x;
    int n_heads, head_dim, n_rot, pos0;
    const float *inv_freq;
    bool neox;
    const cpu_impl *im; /* pos0 == SD_POS_SPANS: the rows' positions from its spans */
} rope_job;

/* Position of row i of the pass (kv_spans). */
static int span_pos(const cpu_impl *im, int64_t i) {
    const sd_kv_span *sp = &im->spans[im->row_span[i]];
    return sp->pos0 + (int)(i - sp->row);
}

static void rope_tokens(void *v, int64_t i0, int64_t i1) {
    const rope_job *j = v;
    int half = j->n_rot / 2;
    for (int64_t i = i0; i < i1; i++) {
        float *xt = j->x + i * (int64_t)j->n_heads * j->head_dim;
        int pos = j->pos0 == SD_POS_SPANS ? span_pos(j->im, i) : j->pos0 + (int)i;
        for (int p = 0; p < half; p++) {
            float a = sd_rope_angle(pos, j->inv_freq[p]), c = cosf(a), s = sinf(a);
            int ia = j->neox ? p : 2 * p, ib = j->neox ? p + half : 2 * p + 1;
            for (int h = 0; h < j->n_heads; h++) {
                float *xh = xt + (int64_t)h * j->head_dim;
                sd_rope_rotate(&xh[ia], &xh[ib], c, s);
            }
        }
    }
}

static void cpu_rope(sd_backend *b, float *x, int n, int n_heads, int head_dim, int n_rot, int pos0,
                     const float *inv_freq, bool neox) {
    cpu_impl *im = impl_of(b);
    if (pos0 == SD_POS_SPANS && n != im->rows) {
        sd_backend_fail(b, "rope of %d rows at the spans' positions, but the pass has %d", n, im->rows);
        return;
    }
    rope_job j = {x, n_heads, head_dim, n_rot, pos0, inv_freq, neox, im};
    sd_pool_for(impl_of(b)->pool, n, 4, rope_tokens, &j);
}

static void cpu_kv_spans(sd_backend *b, const sd_kv_span *spans, int n_spans, int rows) {
    cpu_impl *im = impl_of(b);
    if (rows > im->row_span_cap) {
        int *r = realloc(im->row_span, (size_t)rows * sizeof *r);
        if (!r) {
            sd_backend_fail(b, "out of memory (spans of %d rows)", rows);
            im->n_spans = im->rows = 0;
            return;
        }
        im->row_span = r;
        im->row_span_cap = rows;
    }
    im->spans = spans;
    im->n_spans = n_spans;
    im->rows = rows;
    for (int i = 0; i < n_spans; i++)
        for (int r = spans[i].row; r < spans[i].row + spans[i].n && r < rows; r++) im->row_span[r] = i;
}

/* Element offset of position pos of a sequence (block table) in one layer of the pool. */
static size_t kv_off(const sd_kv_mem *kv, const int32_t *table, int layer, int pos) {
    size_t blk = (size_t)layer * kv->n_blocks + (size_t)table[pos / SD_KV_BLOCK];
    return (blk * SD_KV_BLOCK + (size_t)(pos % SD_KV_BLOCK)) * kv->kv_dim;
}

static void cpu_kv_store(sd_backend *b, sd_kv_mem *kv, int layer, const float *k, const float *v) {
    const cpu_impl *im = impl_of(b);
    if (layer < 0 || layer >= kv->n_layers) return;
    for (int r = 0; r < im->rows; r++) {
        const sd_kv_span *sp = &im->spans[im->row_span[r]];
        size_t off = kv_off(kv, sp->table, layer, sp->pos0 + r - sp->row), d = (size_t)kv->kv_dim;
        const float *kr = k + (size_t)r * d, *vr = v + (size_t)r * d;
        if (kv->type == SD_F32) {
            memcpy((float *)kv->k + off, kr, d * sizeof(float));
            memcpy((float *)kv->v + off, vr, d * sizeof(float));
            continue;
        }
        uint16_t *kh = (uint16_t *)kv->k + off, *vh = (uint16_t *)kv->v + off;
        for (size_t i = 0; i < d; i++) {
            kh[i] = sd_fp32_to_fp16(kr[i]);
            vh[i] = sd_fp32_to_fp16(vr[i]);
        }
    }
}

static void cpu_attention(sd_backend *b, float *out, const float *q, const sd_kv_mem *kv, int layer, int n_heads,
                          int n_kv_heads, int head_dim) {
    cpu_impl *im = impl_of(b);
    if (im->rows <= 0 || n_kv_heads <= 0 || head_dim <= 0 || n_heads % n_kv_heads != 0 || layer < 0 ||
        layer >= kv->n_layers || n_kv_heads * head_dim > kv->kv_dim)
        return; /* the model checks shapes; never read outside the pool */
    if (sd_cpu_attention(&im->attn, im->pool, im->k, out, q, kv, layer, n_heads, n_kv_heads, head_dim, im->spans,
                         im->n_spans, im->rows) != 0)
        sd_backend_fail(b, "out of memory (attention scratch for %d rows)", im->rows);
}

typedef struct ew_job {
    float *out;
    const float *a, *b;
} ew_job;

static void swiglu_range(void *v, int64_t b, int64_t e) {
    const ew_job *j = v;
    for (int64_t i = b; i < e; i++) j->out[i] = sd_silu(j->a[i]) * j->b[i];
}

static void cpu_swiglu(sd_backend *b, float *out, const float *gate, const float *up, size_t count) {
    ew_job j = {out, gate, up};
    sd_pool_for(impl_of(b)->pool, (int64_t)count, count < PAR_MIN_ELEMS ? (int64_t)count : ELEM_GRAIN,
                swiglu_range, &j);
}

static void add_range(void *v, int64_t b, int64_t e) {
    const ew_job *j = v;
    for (int64_t i = b; i < e; i++) j->out[i] += j->a[i];
}

static void cpu_add(sd_backend *b, float *x, const float *y, size_t count) {
    ew_job j = {x, y, NULL};
    sd_pool_for(impl_of(b)->pool, (int64_t)count, count < 4 * PAR_MIN_ELEMS ? (int64_t)count : 4 * ELEM_GRAIN,
                add_range, &j);
}

/* ---------------------------------------------------------------- lifetime */

static void cpu_destroy(sd_backend *b) {
    if (!b) return;
    sd_pool_free(impl_of(b)->pool);
    free(impl_of(b)->xq);
    free(impl_of(b)->xd);
    free(impl_of(b)->xs);
    free(impl_of(b)->xg);
    free(impl_of(b)->row_span);
    sd_attn_ws_free(&impl_of(b)->attn);
    free(b->impl);
    free(b);
}

static void cpu_argmax_rows(sd_backend *b, int32_t *ids, const float *x, int rows, int width) {
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * (size_t)width;
        int32_t best = 0;
        for (int32_t i = 1; i < width; i++)
            if (sd_argmax_prefers(row[i], i, row[best], best)) best = i;
        ids[r] = best;
    }
}

int sd_backend_cpu_new_simd(int n_threads, sd_simd level, sd_backend **out, sd_err *err) {
    *out = NULL;
    const sd_cpu_kernels *k = sd_simd_kernels(level);
    if (!k) return sd_errf(err, "cpu backend: unknown SIMD level %d", (int)level);
    if (level > sd_simd_detect())
        return sd_errf(err, "cpu backend: this CPU does not support %s (best: %s)", sd_simd_name(level),
                       sd_simd_name(sd_simd_detect()));
    sd_backend *b = calloc(1, sizeof *b);
    cpu_impl *im = calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        return sd_errf(err, "cpu backend: out of memory");
    }
    if (sd_pool_new(n_threads, &im->pool, err) != 0) {
        free(b);
        free(im);
        return sd_err_prefix(err, "cpu backend");
    }
    im->k = k;
    const char *fa = getenv("SPECD_FAIL_AFTER");
    im->fail_after = fa ? strtol(fa, NULL, 10) : 0;
    snprintf(im->device, sizeof im->device, "cpu (%s, %d threads)", k->name, sd_pool_size(im->pool));
    *b = (sd_backend){
        .name = "cpu", .device = im->device, .mem_usage = cpu_mem_usage, .n_threads = sd_pool_size(im->pool), .impl = im, .destroy = cpu_destroy,
        .alloc = cpu_alloc, .release = cpu_release, .upload_weight = cpu_upload_weight,
        .free_weight = cpu_free_weight, .to_host = cpu_copy, .from_host = cpu_copy, .kv_mem_alloc = cpu_kv_mem_alloc,
        .kv_mem_free = cpu_kv_mem_free, .mem_available = cpu_mem_available, .kv_spans = cpu_kv_spans, .sync = cpu_sync, .argmax_rows = cpu_argmax_rows, .embed = cpu_embed, .rmsnorm = cpu_rmsnorm,
        .matmul = cpu_matmul, .add_bias = cpu_add_bias, .rope = cpu_rope, .kv_store = cpu_kv_store,
        .attention = cpu_attention, .swiglu = cpu_swiglu, .add = cpu_add,
    };
    *out = b;
    return 0;
}

int sd_backend_cpu_new(int n_threads, sd_backend **out, sd_err *err) {
    return sd_backend_cpu_new_simd(n_threads, sd_simd_default(), out, err);
}

sd_simd sd_backend_cpu_simd(const sd_backend *b) { return ((const cpu_impl *)b->impl)->k->level; }
