/* CPU attention: tiles of (sequence, kv head, consecutive rows), each K/V chunk converted once per tile,
 * the work of each row's heads in the SIMD level's attn_row (attention.h says why results never depend
 * on the tiling). */
#include "kernels/cpu/attention.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/softmax.h"

#define PART 512          /* positions per part: the unit a tile's work is split into across threads */
#define TILE_QUERIES 64   /* query vectors (rows x heads of a group) a tile aims at */
#define TILE_ROWS_MAX 16  /* rows of a tile at most (MHA: 16 rows x 1 head) */
#define SMALL_WORK 65536  /* multiply-adds below which the calling thread works alone (waking costs more) */

/* One unit of work: rows [row0, row0 + nrows) of the pass (all in one span) against kv head kvh, every
 * part folded here (part < 0), or one part whose states go to the parts buffer at `slot`. */
typedef struct attn_item {
    int span, kvh, row0, nrows, part;
    size_t slot;
} attn_item;

typedef struct attn_job {
    const sd_cpu_kernels *k;
    float *out;
    const float *q;
    const sd_kv_mem *kv;
    int layer, n_heads, group, hd, hdp;
    float scale;
    const sd_kv_span *spans;
    const attn_item *items;
    int n_items;
    sd_attn_ws *ws;
    atomic_int next;
} attn_job;

static size_t pad16(size_t n) { return (n + 15) / 16 * 16; }
static int imin(int a, int b) { return a < b ? a : b; }

/* Floats of one part's states for m queries: acc [m][hdp], then {m, l} per query. */
static size_t state_floats(int m, int hdp) { return pad16((size_t)m * hdp) + pad16(2 * (size_t)m); }

/* A thread's scratch for tiles of up to m queries: the queries, the rows' and a part's states, one chunk
 * of K (transposed) and of V, scores. */
typedef struct tile_scratch {
    float *q, *racc, *rml, *pacc, *pml, *kt, *vb, *s;
} tile_scratch;

static size_t scratch_floats(int m, int hdp) {
    return pad16((size_t)m * hdp) + 2 * state_floats(m, hdp) + 2 * (size_t)SD_ATT_CHUNK * hdp + 4 * SD_ATT_CHUNK;
}

static tile_scratch carve(float *p, int m, int hdp) {
    tile_scratch t;
    t.q = p, p += pad16((size_t)m * hdp);
    t.racc = p, p += pad16((size_t)m * hdp);
    t.rml = p, p += pad16(2 * (size_t)m);
    t.pacc = p, p += pad16((size_t)m * hdp);
    t.pml = p, p += pad16(2 * (size_t)m);
    t.kt = p, p += (size_t)SD_ATT_CHUNK * hdp;
    t.vb = p, p += (size_t)SD_ATT_CHUNK * hdp;
    t.s = p;
    return t;
}

/* Positions the first row of an item attends to (its own included); row r of the item sees first + r. */
static int item_first(const attn_job *j, const attn_item *it) {
    const sd_kv_span *sp = &j->spans[it->span];
    return sp->pos0 + (it->row0 - sp->row) + 1;
}

static void state_empty(float *ml, float *acc, int m, int hdp) {
    for (int i = 0; i < m; i++) ml[2 * i] = -INFINITY, ml[2 * i + 1] = 0;
    memset(acc, 0, sizeof(float) * (size_t)m * hdp);
}

/* Loads positions [c0, c0 + nc) of the item's kv head (c0 a multiple of SD_ATT_CHUNK) into kt and vb. */
static void load_chunk(const attn_job *j, const attn_item *it, int c0, int nc, float *kt, float *vb) {
    const sd_kv_mem *kv = j->kv;
    const int32_t *table = j->spans[it->span].table;
    int f16 = kv->type == SD_F16;
    size_t esz = f16 ? 2 : 4;
    for (int b = 0; b < nc; b += SD_KV_BLOCK) {
        size_t blk = (size_t)j->layer * kv->n_blocks + (size_t)table[(c0 + b) / SD_KV_BLOCK];
        size_t off = (blk * SD_KV_BLOCK * kv->kv_dim + (size_t)it->kvh * j->hd) * esz;
        int n = imin(SD_KV_BLOCK, nc - b);
        j->k->attn_load_k(kt, b, (const char *)kv->k + off, kv->kv_dim, n, j->hd, j->hdp, f16);
        j->k->attn_load_v(vb + (size_t)b * j->hdp, (const char *)kv->v + off, kv->kv_dim, n, j->hd, j->hdp, f16);
    }
}

/* Asks for positions [c0, c0 + nc) of the item's kv head ahead of load_chunk: a chunk's rows lie in
 * blocks anywhere in the pool, a head's slice of each row a fraction of it, which the hardware's
 * prefetchers do not follow. */
static void prefetch_chunk(const attn_job *j, const attn_item *it, int c0, int nc) {
    const sd_kv_mem *kv = j->kv;
    const int32_t *table = j->spans[it->span].table;
    size_t esz = kv->type == SD_F16 ? 2 : 4, bytes = (size_t)j->hd * esz;
    for (int t = c0; t < c0 + nc; t++) {
        size_t blk = (size_t)j->layer * kv->n_blocks + (size_t)table[t / SD_KV_BLOCK];
        size_t off = ((blk * SD_KV_BLOCK + (size_t)(t % SD_KV_BLOCK)) * kv->kv_dim + (size_t)it->kvh * j->hd) * esz;
        for (size_t b = 0; b < bytes; b += 64) {
            __builtin_prefetch((const char *)kv->k + off + b);
            __builtin_prefetch((const char *)kv->v + off + b);
        }
    }
}

/* Part `part` of an item: the online-softmax states (ml, acc) of its queries over the part's positions,
 * for the rows that reach into it (the others' states are left alone). */
static void tile_part(const attn_job *j, const attn_item *it, int part, const tile_scratch *t, float *ml,
                      float *acc) {
    int first = item_first(j, it), last = first + it->nrows - 1, g = j->group, hdp = j->hdp;
    int p0 = part * PART, p1 = imin(p0 + PART, last);
    for (int r = 0; r < it->nrows; r++)
        if (first + r > p0) state_empty(ml + 2 * r * g, acc + (size_t)r * g * hdp, g, hdp);
    for (int c0 = p0; c0 < p1; c0 += SD_ATT_CHUNK) {
        int nc = imin(SD_ATT_CHUNK, p1 - c0);
        load_chunk(j, it, c0, nc, t->kt, t->vb);
        if (c0 + nc < p1) prefetch_chunk(j, it, c0 + nc, imin(SD_ATT_CHUNK, p1 - c0 - nc));
        for (int r = 0; r < it->nrows; r++) {
            if (first + r <= c0) continue;
            int m = r * g;
            j->k->attn_row(t->q + (size_t)m * hdp, g, t->kt, t->vb, imin(nc, first + r - c0), hdp, j->scale,
                           ml + 2 * m, acc + (size_t)m * hdp, t->s);
        }
    }
}

/* Merges part `part`'s states into the rows' states, for the rows that reach into it. */
static void fold_part(const attn_job *j, const attn_item *it, int part, const float *pml, const float *pacc,
                      float *rml, float *racc) {
    int first = item_first(j, it), g = j->group;
    for (int r = 0; r < it->nrows; r++) {
        if (first + r <= part * PART) continue;
        for (int m = r * g; m < (r + 1) * g; m++)
            sd_softmax_merge_acc(&rml[2 * m], &rml[2 * m + 1], racc + (size_t)m * j->hdp, pml[2 * m],
                                 pml[2 * m + 1], pacc + (size_t)m * j->hdp, j->hd);
    }
}

static void write_out(const attn_job *j, const attn_item *it, const float *rml, const float *racc) {
    for (int r = 0; r < it->nrows; r++)
        for (int h = 0; h < j->group; h++) {
            int m = r * j->group + h;
            float *o = j->out + ((size_t)(it->row0 + r) * j->n_heads + (size_t)it->kvh * j->group + h) * j->hd;
            float il = 1.0f / rml[2 * m + 1];
            for (int d = 0; d < j->hd; d++) o[d] = racc[(size_t)m * j->hdp + d] * il;
        }
}

static int item_parts(const attn_job *j, const attn_item *it) {
    return (item_first(j, it) + it->nrows - 1 + PART - 1) / PART;
}

static void run_item(const attn_job *j, const attn_item *it, float *scratch) {
    int m = it->nrows * j->group, hdp = j->hdp;
    tile_scratch t = carve(scratch, m, hdp);
    for (int r = 0; r < it->nrows; r++)
        for (int h = 0; h < j->group; h++) {
            const float *src = j->q + ((size_t)(it->row0 + r) * j->n_heads + (size_t)it->kvh * j->group + h) * j->hd;
            float *dst = t.q + (size_t)(r * j->group + h) * hdp;
            memcpy(dst, src, sizeof(float) * (size_t)j->hd);
            memset(dst + j->hd, 0, sizeof(float) * (size_t)(hdp - j->hd));
        }
    if (it->part >= 0) { /* split: this part's states for the merge after the pass */
        float *acc = j->ws->parts + it->slot;
        tile_part(j, it, it->part, &t, acc + pad16((size_t)m * hdp), acc);
        return;
    }
    state_empty(t.rml, t.racc, m, hdp);
    for (int p = 0, np = item_parts(j, it); p < np; p++) {
        tile_part(j, it, p, &t, t.pml, t.pacc);
        fold_part(j, it, p, t.pml, t.pacc, t.rml, t.racc);
    }
    write_out(j, it, t.rml, t.racc);
}

static void attn_worker(void *arg, int ith, int nth) {
    attn_job *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->n_items;) run_item(j, &j->items[i], j->ws->thread[ith]);
}

/* Split tiles: each group of items (the parts of one tile, consecutive) merged in order and written. */
static void merge_parts(const attn_job *j, float *scratch) {
    for (int i = 0; i < j->n_items;) {
        const attn_item *it = &j->items[i];
        int m = it->nrows * j->group, np = item_parts(j, it);
        tile_scratch t = carve(scratch, m, j->hdp);
        state_empty(t.rml, t.racc, m, j->hdp);
        for (int p = 0; p < np; p++) {
            const float *acc = j->ws->parts + it[p].slot;
            fold_part(j, it, p, acc + pad16((size_t)m * j->hdp), acc, t.rml, t.racc);
        }
        write_out(j, it, t.rml, t.racc);
        i += np;
    }
}

/* Scratch for n_thread threads of `floats` each, items, parts: grown, never shrunk. */
static int ws_reserve(sd_attn_ws *ws, int n_thread, size_t floats, int items, size_t parts) {
    if (n_thread > ws->n_thread) {
        float **t = realloc(ws->thread, sizeof *t * (size_t)n_thread);
        if (!t) return -1;
        ws->thread = t;
        size_t *c = realloc(ws->thread_cap, sizeof *c * (size_t)n_thread);
        if (!c) return -1;
        ws->thread_cap = c;
        for (int i = ws->n_thread; i < n_thread; i++) ws->thread[i] = NULL, ws->thread_cap[i] = 0;
        ws->n_thread = n_thread;
    }
    for (int i = 0; i < n_thread; i++)
        if (ws->thread_cap[i] < floats) {
            free(ws->thread[i]);
            void *p = NULL;
            ws->thread[i] = posix_memalign(&p, 64, floats * sizeof(float)) == 0 ? p : NULL;
            ws->thread_cap[i] = ws->thread[i] ? floats : 0;
            if (!p) return -1;
            memset(p, 0, floats * sizeof(float)); /* kernels read a chunk's unloaded tail (then masked) */
        }
    if (items > ws->items_cap) {
        attn_item *it = realloc(ws->items, sizeof *it * (size_t)items);
        if (!it) return -1;
        ws->items = it;
        ws->items_cap = items;
    }
    if (parts > ws->parts_cap) {
        float *p = realloc(ws->parts, sizeof *p * parts);
        if (!p) return -1;
        ws->parts = p;
        ws->parts_cap = parts;
    }
    return 0;
}

void sd_attn_ws_free(sd_attn_ws *ws) {
    for (int i = 0; i < ws->n_thread; i++) free(ws->thread[i]);
    free(ws->thread);
    free(ws->thread_cap);
    free(ws->items);
    free(ws->parts);
    *ws = (sd_attn_ws){0};
}

/* Rows of span s inside the pass. */
static int span_rows(const sd_kv_span *sp, int rows) {
    int n = imin(sp->n, rows - sp->row);
    return n > 0 ? n : 0;
}

int sd_cpu_attention(sd_attn_ws *ws, sd_pool *pool, const sd_cpu_kernels *k, float *out, const float *q,
                     const sd_kv_mem *kv, int layer, int n_heads, int n_kv_heads, int head_dim,
                     const sd_kv_span *spans, int n_spans, int rows) {
    int g = n_heads / n_kv_heads, hdp = (int)pad16((size_t)head_dim), nth = sd_pool_size(pool);
    int tile = imin(TILE_ROWS_MAX, TILE_QUERIES / g > 1 ? TILE_QUERIES / g : 1);
    attn_job j = {.k = k, .out = out, .q = q, .kv = kv, .layer = layer, .n_heads = n_heads, .group = g,
                  .hd = head_dim, .hdp = hdp, .scale = 1.0f / sqrtf((float)head_dim),
                  .spans = spans, .ws = ws};
    /* Tiles, their parts and the work: split the parts across threads when tiles alone are too few to
     * keep every thread busy (several per thread, as a neighbour may slow one down). */
    int tiles = 0, split_parts = 0, max_m = 1;
    double work = 0;
    for (int s = 0; s < n_spans; s++) {
        int n = span_rows(&spans[s], rows), last = spans[s].pos0 + n;
        for (int r = 0; r < n; r += tile) {
            tiles += n_kv_heads;
            split_parts += n_kv_heads * ((spans[s].pos0 + imin(r + tile, n) + PART - 1) / PART);
            max_m = imin(n, tile) * g > max_m ? imin(n, tile) * g : max_m;
        }
        work += (double)n * last * n_heads * head_dim;
    }
    bool split = nth > 1 && work >= SMALL_WORK && tiles < 4 * nth && split_parts > tiles;
    int n_items = split ? split_parts : tiles;
    size_t parts = split ? (size_t)split_parts * state_floats(max_m, hdp) : 0;
    int n_run = work < SMALL_WORK ? 1 : nth;
    if (ws_reserve(ws, nth, scratch_floats(max_m, hdp), n_items, parts) != 0) return -1;
    /* Items: a span's tiles of one kv head together (that head's K/V stays in the core's cache from one to
     * the next), longest first (the last rows), so the pool's dynamic hand-out ends on short ones. */
    attn_item *it = ws->items;
    size_t slot = 0;
    for (int s = 0; s < n_spans; s++) {
        int n = span_rows(&spans[s], rows);
        for (int h = 0; h < n_kv_heads; h++)
            for (int r = (n - 1) / tile * tile; n > 0 && r >= 0; r -= tile) {
                attn_item base = {.span = s, .kvh = h, .row0 = spans[s].row + r, .nrows = imin(tile, n - r),
                                  .part = -1};
                if (!split) {
                    *it++ = base;
                    continue;
                }
                for (int p = 0, np = item_parts(&j, &base); p < np; p++) {
                    *it = base;
                    it->part = p;
                    it->slot = slot;
                    slot += state_floats(base.nrows * g, hdp);
                    it++;
                }
            }
    }
    j.items = ws->items;
    j.n_items = (int)(it - ws->items);
    atomic_init(&j.next, 0);
    if (n_run == 1) attn_worker(&j, 0, 1);
    else sd_pool_run(pool, attn_worker, &j);
    if (split) merge_parts(&j, ws->thread[0]);
    return 0;
}
