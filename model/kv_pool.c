/* The K/V pool of a model: n_blocks blocks of SD_KV_BLOCK positions (every layer, K and V) in backend
 * memory, handed to sequences as their positions are written and taken back when they are dropped. A
 * model may have a second, shallow pool whose blocks hold only its first L layers, for the sequences that
 * run only those (self-drafting), so they do not take blocks of every layer.
 * Free blocks are a stack, lowest ids first, so a lightly used pool touches (and on the CPU commits) only
 * its first blocks.
 *
 * Prefix cache (as vLLM's automatic prefix caching): a full block of final tokens gets a key, a hash of
 * the previous block's key (the chain's root for the first: the tenant) and its 16 tokens; a table maps
 * keys to blocks. A sequence starting with the same tokens of the same root takes those blocks read-only
 * (reference counts) instead of computing them. Only full blocks are shared and a sequence writes only
 * past its shared blocks, so no copy is ever needed. A cached block no sequence holds waits in an LRU
 * list and is reused (forgotten) only when no never-cached block is free. Lookups compare the parent key
 * and the tokens too, so a hash collision can never hand out another prefix's cache. */
#include <stdlib.h>
#include <string.h>

#include "model/model_internal.h"

struct sd_kv_pool {
    sd_kv_mem mem;     /* mem.n_layers: the depth of its blocks */
    int n_free;
    int32_t *free_ids; /* [n_blocks]: free_ids[0..n_free) are free, the top is free_ids[n_free - 1] */
    /* prefix cache, per block */
    int32_t *ref;      /* sequences holding it */
    uint64_t *key;     /* its chain key when cached, else 0 */
    uint64_t *parent;  /* the key before it in the chain */
    int32_t *toks;     /* [n_blocks][SD_KV_BLOCK] its tokens when cached */
    int32_t *prev, *next; /* LRU list of cached blocks no sequence holds (-1 ends) */
    int32_t lru_head, lru_tail;
    int n_lru;
    int32_t *slots;    /* open addressing, key -> block: -1 empty, -2 deleted; n_slots a power of two */
    size_t n_slots;
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

static void pool_free(sd_kv_pool *p) {
    if (!p) return;
    free(p->free_ids);
    free(p->ref);
    free(p->key);
    free(p->parent);
    free(p->toks);
    free(p->prev);
    free(p->next);
    free(p->slots);
    free(p);
}

static sd_kv_pool *pool_new(size_t n) {
    sd_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_slots = 16;
    while (p->n_slots < 2 * n) p->n_slots *= 2;
    p->free_ids = malloc(n * sizeof *p->free_ids);
    p->ref = calloc(n, sizeof *p->ref);
    p->key = calloc(n, sizeof *p->key);
    p->parent = calloc(n, sizeof *p->parent);
    p->toks = malloc(n * SD_KV_BLOCK * sizeof *p->toks);
    p->prev = malloc(n * sizeof *p->prev);
    p->next = malloc(n * sizeof *p->next);
    p->slots = malloc(p->n_slots * sizeof *p->slots);
    if (!p->free_ids || !p->ref || !p->key || !p->parent || !p->toks || !p->prev || !p->next || !p->slots) {
        pool_free(p);
        return NULL;
    }
    memset(p->slots, 0xff, p->n_slots * sizeof *p->slots); /* -1: empty */
    for (size_t i = 0; i < n; i++) p->free_ids[i] = (int32_t)(n - 1 - i);
    p->n_free = (int)n;
    p->lru_head = p->lru_tail = -1;
    return p;
}

/* A pool of `bytes` (0: the default) of blocks of n_layers layers for m, into *out. */
static int pool_make(sd_model *m, int n_layers, size_t bytes, sd_kv_pool **out, sd_err *err) {
    const char *name = m->path ? m->path : "model";
    if (!m->be) return sd_errf(err, "%s: loaded for description only; it cannot run", name);
    if (!m->be->kv_mem_alloc) return sd_errf(err, "backend %s has no KV pool", m->be->name ? m->be->name : "?");
    size_t per = SD_KV_BLOCK * sd_model_kv_bytes_per_token(m, n_layers);
    if (!bytes) bytes = sd_kv_default_bytes(m->be, per / SD_KV_BLOCK);
    size_t n = bytes / per;
    if (n < 1) n = 1;
    if (n > INT32_MAX / 4) n = INT32_MAX / 4;
    sd_kv_pool *p = pool_new(n);
    if (!p) return sd_errf(err, "out of memory (KV pool of %zu blocks)", n);
    if (m->be->kv_mem_alloc(m->be, &p->mem, n_layers, m->hp.n_kv_heads * m->hp.head_dim, (int)n, m->kv_type, err)) {
        pool_free(p);
        return sd_err_prefix(err, "%s: KV pool of %zu blocks (%.1f MiB)", name, n, (double)(n * per) / 1048576.0);
    }
    *out = p;
    return 0;
}

int sd_model_kv_init(sd_model *m, size_t bytes, sd_err *err) {
    if (m->kv) return sd_errf(err, "%s: the KV pool exists already", m->path ? m->path : "model");
    return pool_make(m, m->hp.n_layers, bytes, &m->kv, err);
}

int sd_model_kv_init_shallow(sd_model *m, int n_layers, size_t bytes, sd_err *err) {
    const char *name = m->path ? m->path : "model";
    if (m->kv_shallow) return sd_errf(err, "%s: the shallow KV pool exists already", name);
    if (n_layers < 1 || n_layers >= m->hp.n_layers)
        return sd_errf(err, "%s: a shallow KV pool of %d layers (the model has %d)", name, n_layers, m->hp.n_layers);
    return pool_make(m, n_layers, bytes, &m->kv_shallow, err);
}

static void pool_drop(sd_model *m, sd_kv_pool **p) {
    if (!*p) return;
    m->be->kv_mem_free(m->be, &(*p)->mem);
    pool_free(*p);
    *p = NULL;
}

void sd_model_kv_free(sd_model *m) {
    pool_drop(m, &m->kv);
    pool_drop(m, &m->kv_shallow);
}

/* The pool sequences of m running n_layers layers take blocks from: the shallow pool at its depth, else
 * the full one (NULL before it exists). */
static sd_kv_pool *pool_at(const sd_model *m, int n_layers) {
    return m->kv_shallow && n_layers == m->kv_shallow->mem.n_layers ? m->kv_shallow : m->kv;
}

static sd_kv_pool *pool_of(const sd_seq *s) { return pool_at(s->m, s->n_layers); }

void sd_model_kv_blocks_at(const sd_model *m, int n_layers, int *total, int *free_now) {
    const sd_kv_pool *p = pool_at(m, n_layers);
    *total = p ? p->mem.n_blocks : 0;
    *free_now = p ? p->n_free + p->n_lru : 0;
}

void sd_model_kv_blocks(const sd_model *m, int *total, int *free_now) {
    sd_model_kv_blocks_at(m, m->hp.n_layers, total, free_now);
}

bool sd_seq_in_shallow_pool(const sd_seq *s) { return s->m->kv_shallow && pool_of(s) == s->m->kv_shallow; }

sd_kv_mem *sd_kv_pool_mem(const sd_model *m, int n_layers) { return &pool_at(m, n_layers)->mem; }

/* ---------------------------------------------------------------- the prefix cache's table and list */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t sd_kv_chain_root(uint64_t tenant) { return mix64(tenant ^ 0x6b765f726f6f74ull) | 1; }

static uint64_t chain_key(uint64_t parent, const int32_t *t) {
    uint64_t h = parent;
    for (int i = 0; i < SD_KV_BLOCK; i++) h = mix64(h ^ (uint32_t)t[i]);
    return h ? h : 1; /* 0 means "not cached" */
}

static size_t slot_of(const sd_kv_pool *p, uint64_t key) { return (size_t)key & (p->n_slots - 1); }

/* The cached block with this key, parent and tokens, or -1. */
static int32_t lookup(const sd_kv_pool *p, uint64_t key, uint64_t parent, const int32_t *t) {
    for (size_t i = slot_of(p, key);; i = (i + 1) & (p->n_slots - 1)) {
        int32_t b = p->slots[i];
        if (b == -1) return -1;
        if (b >= 0 && p->key[b] == key && p->parent[b] == parent &&
            !memcmp(p->toks + (size_t)b * SD_KV_BLOCK, t, SD_KV_BLOCK * sizeof *t))
            return b;
    }
}

static void hash_insert(sd_kv_pool *p, int32_t b) {
    size_t i = slot_of(p, p->key[b]);
    while (p->slots[i] >= 0) i = (i + 1) & (p->n_slots - 1);
    p->slots[i] = b;
}

static void hash_remove(sd_kv_pool *p, int32_t b) {
    for (size_t i = slot_of(p, p->key[b]);; i = (i + 1) & (p->n_slots - 1))
        if (p->slots[i] == b) {
            p->slots[i] = -2;
            return;
        }
}

static void lru_unlink(sd_kv_pool *p, int32_t b) {
    if (p->prev[b] >= 0) p->next[p->prev[b]] = p->next[b];
    else p->lru_head = p->next[b];
    if (p->next[b] >= 0) p->prev[p->next[b]] = p->prev[b];
    else p->lru_tail = p->prev[b];
    p->n_lru--;
}

static void lru_append(sd_kv_pool *p, int32_t b) {
    p->prev[b] = p->lru_tail;
    p->next[b] = -1;
    if (p->lru_tail >= 0) p->next[p->lru_tail] = b;
    else p->lru_head = b;
    p->lru_tail = b;
    p->n_lru++;
}

/* A block for new positions: a never-cached free one, else the least recently used cached one (forgotten). */
static int32_t take(sd_kv_pool *p) {
    int32_t b;
    if (p->n_free) {
        b = p->free_ids[--p->n_free];
    } else {
        b = p->lru_head;
        lru_unlink(p, b);
        hash_remove(p, b);
        p->key[b] = 0;
    }
    p->ref[b] = 1;
    return b;
}

static void give(sd_kv_pool *p, int32_t b) {
    if (--p->ref[b] > 0) return;
    if (p->key[b]) lru_append(p, b);
    else p->free_ids[p->n_free++] = b;
}

/* ---------------------------------------------------------------- sequences */

int sd_seq_blocks_needed(const sd_seq *s, int end) {
    int want = (end + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    return want > s->n_blocks ? want - s->n_blocks : 0;
}

int sd_seq_reserve(sd_seq *s, int end, sd_err *err) {
    int need = sd_seq_blocks_needed(s, end);
    sd_kv_pool *p = pool_of(s);
    if (need > p->n_free + p->n_lru)
        return sd_errf(err, "KV pool full: %d more blocks of %d positions wanted, %d of %d free", need, SD_KV_BLOCK,
                       p->n_free + p->n_lru, p->mem.n_blocks);
    for (int i = 0; i < need; i++) s->table[s->n_blocks++] = take(p);
    return 0;
}

void sd_seq_release(sd_seq *s, int pos) {
    int keep = (pos + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    sd_kv_pool *p = pool_of(s);
    while (s->n_blocks > keep) give(p, s->table[--s->n_blocks]);
    if (s->n_cached > keep) s->n_cached = keep;
}

int sd_seq_uncache(sd_seq *s, int pos) {
    int i = pos / SD_KV_BLOCK;
    if (pos % SD_KV_BLOCK == 0 || i >= s->n_cached) return pos;
    sd_kv_pool *p = pool_of(s);
    int32_t b = s->table[i];
    if (p->ref[b] > 1) return i * SD_KV_BLOCK;
    if (p->key[b]) hash_remove(p, b);
    p->key[b] = 0;
    s->n_cached = i;
    return pos;
}

/* The chain key before block i of s (the root for the first). */
static uint64_t parent_of(const sd_seq *s, int i, uint64_t root) { return i ? s->keys[i - 1] : root; }

int sd_seq_share_prefix(sd_seq *s, uint64_t root, const int32_t *tokens, int n) {
    sd_kv_pool *p = pool_of(s);
    if (!p || s->n_layers != s->m->hp.n_layers || s->pos != s->n_cached * SD_KV_BLOCK) return 0;
    int got = 0;
    while (s->pos + SD_KV_BLOCK <= n && s->pos + SD_KV_BLOCK <= s->ctx) {
        uint64_t parent = parent_of(s, s->n_cached, root), key = chain_key(parent, tokens + s->pos);
        int32_t b = lookup(p, key, parent, tokens + s->pos);
        if (b < 0) break;
        if (p->ref[b]++ == 0) lru_unlink(p, b);
        s->keys[s->n_cached++] = key;
        s->table[s->n_blocks++] = b;
        s->pos += SD_KV_BLOCK;
        got += SD_KV_BLOCK;
    }
    return got;
}

void sd_seq_cache_prefix(sd_seq *s, uint64_t root, const int32_t *tokens, int n) {
    sd_kv_pool *p = pool_of(s);
    if (!p || s->n_layers != s->m->hp.n_layers) return; /* a shallow sequence's blocks lack layers */
    if (n > s->pos) n = s->pos;
    while ((s->n_cached + 1) * SD_KV_BLOCK <= n) {
        int i = s->n_cached;
        const int32_t *t = tokens + (size_t)i * SD_KV_BLOCK;
        uint64_t parent = parent_of(s, i, root), key = chain_key(parent, t);
        int32_t b = s->table[i];
        if (!p->key[b] && lookup(p, key, parent, t) < 0) { /* a twin cached elsewhere stays the one */
            p->key[b] = key;
            p->parent[b] = parent;
            memcpy(p->toks + (size_t)b * SD_KV_BLOCK, t, SD_KV_BLOCK * sizeof *t);
            hash_insert(p, b);
        }
        s->keys[s->n_cached++] = key;
    }
}
