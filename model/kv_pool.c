/* The K/V pool of a model: n_blocks blocks of SD_KV_BLOCK positions (every layer, K and V) in backend
 * memory, handed to sequences as their positions are written and taken back when they are dropped.
 * Free blocks are a stack, lowest ids first, so a lightly used pool touches (and on the CPU commits) only
 * its first blocks. */
#include <stdlib.h>

#include "model/model_internal.h"

struct sd_kv_pool {
    sd_kv_mem mem;
    int n_free;
    int32_t *free_ids; /* [n_blocks]: free_ids[0..n_free) are free, the top is free_ids[n_free - 1] */
};

size_t sd_model_kv_block_bytes(const sd_model *m) {
    return SD_KV_BLOCK * sd_model_kv_bytes_per_token(m, m->hp.n_layers);
}

size_t sd_kv_default_bytes(sd_backend *be, size_t bytes_per_position) {
    size_t avail = be->mem_available ? be->mem_available(be) : 0;
    size_t bytes = avail ? avail / 2 : (size_t)1 << 30;
    size_t cap = (size_t)SD_KV_DEFAULT_POSITIONS * bytes_per_position;
    return bytes < cap ? bytes : cap;
}

int sd_model_kv_init(sd_model *m, size_t bytes, sd_err *err) {
    const char *name = m->path ? m->path : "model";
    if (!m->be) return sd_errf(err, "%s: loaded for description only; it cannot run", name);
    if (m->kv) return sd_errf(err, "%s: the KV pool exists already", name);
    if (!m->be->kv_mem_alloc) return sd_errf(err, "backend %s has no KV pool", m->be->name ? m->be->name : "?");
    if (!bytes) bytes = sd_kv_default_bytes(m->be, sd_model_kv_bytes_per_token(m, m->hp.n_layers));
    size_t per = sd_model_kv_block_bytes(m), n = bytes / per;
    if (n < 1) n = 1;
    if (n > INT32_MAX / 2) n = INT32_MAX / 2;
    sd_kv_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->free_ids = malloc(n * sizeof *p->free_ids))) {
        free(p);
        return sd_errf(err, "out of memory (KV pool of %zu blocks)", n);
    }
    if (m->be->kv_mem_alloc(m->be, &p->mem, m->hp.n_layers, m->hp.n_kv_heads * m->hp.head_dim, (int)n, m->kv_type,
                            err)) {
        free(p->free_ids);
        free(p);
        return sd_err_prefix(err, "%s: KV pool of %zu blocks (%.1f MiB)", name, n, (double)(n * per) / 1048576.0);
    }
    for (size_t i = 0; i < n; i++) p->free_ids[i] = (int32_t)(n - 1 - i);
    p->n_free = (int)n;
    m->kv = p;
    return 0;
}

void sd_model_kv_free(sd_model *m) {
    if (!m->kv) return;
    m->be->kv_mem_free(m->be, &m->kv->mem);
    free(m->kv->free_ids);
    free(m->kv);
    m->kv = NULL;
}

void sd_model_kv_blocks(const sd_model *m, int *total, int *free_now) {
    *total = m->kv ? m->kv->mem.n_blocks : 0;
    *free_now = m->kv ? m->kv->n_free : 0;
}

sd_kv_mem *sd_kv_pool_mem(const sd_model *m) { return &m->kv->mem; }

int sd_seq_blocks_needed(const sd_seq *s, int end) {
    int want = (end + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    return want > s->n_blocks ? want - s->n_blocks : 0;
}

int sd_seq_reserve(sd_seq *s, int end, sd_err *err) {
    int need = sd_seq_blocks_needed(s, end);
    sd_kv_pool *p = s->m->kv;
    if (need > p->n_free)
        return sd_errf(err, "KV pool full: %d more blocks of %d positions wanted, %d of %d free", need, SD_KV_BLOCK,
                       p->n_free, p->mem.n_blocks);
    for (int i = 0; i < need; i++) s->table[s->n_blocks++] = p->free_ids[--p->n_free];
    return 0;
}

void sd_seq_release(sd_seq *s, int pos) {
    int keep = (pos + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    sd_kv_pool *p = s->m->kv;
    while (s->n_blocks > keep) p->free_ids[p->n_free++] = s->table[--s->n_blocks];
}
