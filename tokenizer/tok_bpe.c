/* Byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"): the text is split by the model's pre-tokenizer
 * (tokenizer/pretok.c); each piece's bytes start as the tokens of their GPT-2 stand-in characters and are
 * merged pair by pair, always the pair of lowest merge rank first (leftmost among equals), until no pair
 * of neighbours has a rank. Merges run on a linked list of symbols with a binary heap of candidate pairs,
 * so a piece of n bytes costs O(n log n) — pre-tokenizer pieces can be huge (a 100 KB run of one letter
 * is one piece). Stale heap entries (a side already merged away) are recognised by their ids and skipped.
 * Decoding needs nothing here: tokenizer.c maps each token's characters back to bytes at load. */
#include <stdlib.h>
#include <string.h>

#include "base/heap.h"
#include "tokenizer/pretok.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

typedef struct bpe_state {
    sd_pretok_kind pre;
    int32_t byte_tok[256];  /* token of each byte's stand-in character, -1 when the vocabulary lacks it */
    int32_t *merged;        /* merge rank -> id of the merged token */
    int n_merges;
    /* Llama 3's tokenizer.json has "ignore_merges": a piece that is itself a token is taken whole. */
    bool ignore_merges;
} bpe_state;

/* ---- setup ---- */

static int load_merges(sd_tokenizer *t, bpe_state *st, const gguf_file *f, sd_err *err) {
    const gguf_kv *kv = gguf_find(f, "tokenizer.ggml.merges");
    if (!kv) return sd_errf(err, "%s: byte-level BPE vocabulary without tokenizer.ggml.merges", f->path);
    if (kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING)
        return sd_errf(err, "%s: tokenizer.ggml.merges is not an array of strings", f->path);
    if (kv->arr_n > INT32_MAX) return sd_errf(err, "%s: too many merges (%llu)", f->path, (unsigned long long)kv->arr_n);
    st->merged = malloc((kv->arr_n + 1) * sizeof *st->merged);
    char *buf = malloc((size_t)t->max_text_len * 2 + 8);
    if (!st->merged || !buf) { free(buf); return sd_errf(err, "out of memory (BPE merges)"); }
    int rc = 0;
    for (uint64_t r = 0; r < kv->arr_n && rc == 0; r++) {
        const gguf_str *m = &kv->arr_strs[r];
        /* "left right": the separator is the first space after the first byte (token texts of a
         * byte-level vocabulary contain no raw space; a merge of bad shape is skipped) */
        const char *sp = m->len > 1 ? memchr(m->ptr + 1, ' ', m->len - 1) : NULL;
        st->merged[r] = -1;
        if (!sp) continue;
        size_t ll = (size_t)(sp - m->ptr), rl = m->len - ll - 1;
        if (ll + rl > (size_t)t->max_text_len) continue; /* the result would be no token */
        int32_t l = sd_tok_find(t, m->ptr, ll), rr = sd_tok_find(t, sp + 1, rl);
        memcpy(buf, m->ptr, ll);
        memcpy(buf + ll, sp + 1, rl);
        int32_t res = sd_tok_find(t, buf, ll + rl);
        /* every side and the result must be tokens; a repeated pair keeps its first (lowest) rank */
        if (l < 0 || rr < 0 || res < 0 || sd_pairmap_get(&t->merges, l, rr) >= 0) continue;
        st->merged[r] = res;
        rc = sd_pairmap_put(&t->merges, l, rr, (int32_t)r, err);
    }
    st->n_merges = (int)kv->arr_n;
    free(buf);
    return rc;
}

/* The Llama 3 family's tokenizer.json sets "ignore_merges" (llama.cpp: these pre names); DBRX and Smaug
 * share the split but not this. */
static bool takes_whole_pieces(const char *pre) {
    static const char *const names[] = {"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral",
                                        "midm-2.0", "lfm2"};
    for (size_t i = 0; pre && i < sizeof names / sizeof *names; i++)
        if (!strcmp(pre, names[i])) return true;
    return false;
}

int sd_tok_bpe_init(sd_tokenizer *t, const gguf_file *f, sd_err *err) {
    bpe_state *st = calloc(1, sizeof *st);
    if (!st) return sd_errf(err, "out of memory");
    t->bpe = st;
    if (sd_pretok_find(t->pre, &st->pre, err)) return sd_err_prefix(err, "%s", f->path);
    st->ignore_merges = takes_whole_pieces(t->pre);
    if (!t->map.slots) return sd_errf(err, "byte-level BPE setup needs the token map (tokenizer.c builds it first)");
    for (int b = 0; b < 256; b++) {
        char u[4];
        int n = sd_utf8_encode(sd_uni_byte_to_cp((uint8_t)b), u);
        st->byte_tok[b] = sd_tok_find(t, u, (size_t)n);
    }
    return load_merges(t, st, f, err);
}

void sd_tok_bpe_free(sd_tokenizer *t) {
    bpe_state *st = t->bpe;
    if (!st) return;
    free(st->merged);
    free(st);
    t->bpe = NULL;
}

/* ---- merging ---- */

typedef struct cand {   /* a candidate merge of neighbours left, right holding ids lid, rid */
    int32_t rank, lid, rid;
    uint32_t left, right;
} cand;

typedef struct work {
    int32_t *id;        /* per symbol (indexed by its first byte): token id, -1 once merged away */
    uint32_t *prev, *next;
    cand *heap;
    size_t n_heap, cap;  /* cap: symbols the arrays hold */
    size_t heap_cap;
    char *buf;           /* the piece as stand-in characters (for the whole-piece lookup) */
} work;

#define NONE UINT32_MAX

/* Merge order: lowest rank first, leftmost first among equal ranks. */
static bool merges_first(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static int heap_push(work *w, cand c) {
    if (w->n_heap == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 256;
        cand *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return -1;
        w->heap = h;
        w->heap_cap = cap;
    }
    w->heap[w->n_heap] = c;
    sd_heap_up(w->heap, w->n_heap++, sizeof c, merges_first);
    return 0;
}

static cand heap_pop(work *w) {
    cand top = w->heap[0];
    w->heap[0] = w->heap[--w->n_heap];
    sd_heap_down(w->heap, w->n_heap, 0, sizeof top, merges_first);
    return top;
}

static int try_pair(const sd_tokenizer *t, work *w, uint32_t l, uint32_t r) {
    if (l == NONE || r == NONE || w->id[l] < 0 || w->id[r] < 0) return 0;
    int32_t rank = sd_pairmap_get(&t->merges, w->id[l], w->id[r]);
    if (rank < 0) return 0;
    return heap_push(w, (cand){rank, w->id[l], w->id[r], l, r});
}

static int work_reserve(work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < n) cap *= 2;
    int32_t *id = realloc(w->id, cap * sizeof *id);
    if (id) w->id = id;
    uint32_t *pv = realloc(w->prev, cap * sizeof *pv);
    if (pv) w->prev = pv;
    uint32_t *nx = realloc(w->next, cap * sizeof *nx);
    if (nx) w->next = nx;
    char *b = realloc(w->buf, cap * 2);
    if (b) w->buf = b;
    if (!id || !pv || !nx || !b) return -1;
    w->cap = cap;
    return 0;
}

static void work_free(work *w) {
    free(w->id); free(w->prev); free(w->next); free(w->heap); free(w->buf);
}

/* Appends the token of byte sequence s[0..n) taken whole, if the vocabulary has it; returns 1 then. */
static int whole_piece(const sd_tokenizer *t, work *w, const unsigned char *s, size_t n, sd_ids *out, sd_err *err,
                       int *rc) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += (size_t)sd_utf8_encode(sd_uni_byte_to_cp(s[i]), w->buf + m);
    int32_t id = sd_tok_find(t, w->buf, m);
    if (id < 0) return 0;
    *rc = sd_ids_push(out, id, err);
    return 1;
}

static int bpe_piece(const sd_tokenizer *t, const bpe_state *st, work *w, const unsigned char *s, size_t n,
                     sd_ids *out, sd_err *err) {
    if (n == 0) return 0;
    if (n >= NONE) return sd_errf(err, "byte-level BPE: a piece of %zu bytes is too long", n);
    if (work_reserve(w, n)) return sd_errf(err, "out of memory (BPE, piece of %zu bytes)", n);
    int rc = 0;
    if (st->ignore_merges && n > 1 && (size_t)t->max_text_len >= n && whole_piece(t, w, s, n, out, err, &rc))
        return rc;
    for (size_t i = 0; i < n; i++) {
        w->id[i] = st->byte_tok[s[i]];
        w->prev[i] = i ? (uint32_t)(i - 1) : NONE;
        w->next[i] = i + 1 < n ? (uint32_t)(i + 1) : NONE;
    }
    w->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (try_pair(t, w, (uint32_t)i, (uint32_t)(i + 1))) return sd_errf(err, "out of memory (BPE heap)");
    while (w->n_heap) {
        cand c = heap_pop(w);
        if (w->next[c.left] != c.right || w->id[c.left] != c.lid || w->id[c.right] != c.rid) continue; /* stale */
        /* merge: the left symbol becomes the merged token, the right one leaves the list */
        w->id[c.left] = st->merged[c.rank];
        w->id[c.right] = -1;
        uint32_t nx = w->next[c.right];
        w->next[c.left] = nx;
        if (nx != NONE) w->prev[nx] = c.left;
        if (try_pair(t, w, w->prev[c.left], c.left) || try_pair(t, w, c.left, nx))
            return sd_errf(err, "out of memory (BPE heap)");
    }
    for (uint32_t i = 0; i != NONE && rc == 0; i = w->next[i]) {
        /* a byte whose stand-in is not in the vocabulary (falcon lacks some control bytes, several
         * vocabularies the bytes that never occur in UTF-8) is dropped, as llama.cpp does: mapping it to
         * the unknown id would put <|endoftext|> into the text of vocabularies whose unk is that */
        if (w->id[i] >= 0) rc = sd_ids_push(out, w->id[i], err);
    }
    return rc;
}

/* Pieces repeat (words of a text): a cache for the length of one encode call maps a short piece's bytes
 * to the ids its first occurrence produced (kept in `out` itself, which only grows during the call). */
#define CACHE_MAX_PIECE 48
typedef struct cache_entry {
    uint32_t hash, len;
    size_t off;          /* the piece in the text */
    int ids, n;          /* its ids: out->v[ids .. ids + n) */
} cache_entry;

typedef struct cache {
    cache_entry *e;      /* len == 0: empty */
    uint32_t mask, used;
} cache;

static uint32_t piece_hash(const unsigned char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

/* The entry for the piece, or the empty slot where it belongs (NULL when the cache is off or full). */
static cache_entry *cache_slot(cache *c, const char *text, size_t off, size_t n, uint32_t h) {
    if (!c->e) return NULL;
    for (uint32_t i = h & c->mask;; i = (i + 1) & c->mask) {
        cache_entry *e = &c->e[i];
        if (e->len == 0) return c->used * 4 < (c->mask + 1) * 3 ? e : NULL;
        if (e->hash == h && e->len == n && !memcmp(text + e->off, text + off, n)) return e;
    }
}

int sd_tok_bpe_encode(const sd_tokenizer *t, const char *text, size_t len, bool first, sd_ids *out, sd_err *err) {
    (void)first;
    const bpe_state *st = t->bpe;
    if (!st) return sd_errf(err, "byte-level BPE tokenizer not initialised");
    sd_span *sp;
    size_t n_sp;
    if (sd_pretok_split(st->pre, text, len, &sp, &n_sp, err)) return -1;
    work w = {0};
    cache c = {0};
    if (n_sp > 64) { /* worth it for more than a few pieces; without memory it just stays off */
        uint32_t cap = 256;
        while (cap < n_sp * 2 && cap < (1u << 16)) cap *= 2;
        c.e = calloc(cap, sizeof *c.e);
        c.mask = cap - 1;
    }
    int rc = 0;
    for (size_t k = 0; k < n_sp && rc == 0; k++) {
        const unsigned char *p = (const unsigned char *)text + sp[k].off;
        size_t n = sp[k].len;
        cache_entry *e = NULL;
        uint32_t h = 0;
        if (n <= CACHE_MAX_PIECE) {
            h = piece_hash(p, n);
            e = cache_slot(&c, text, sp[k].off, n, h);
            if (e && e->len) { /* seen before: copy its ids */
                for (int i = 0; i < e->n && rc == 0; i++) rc = sd_ids_push(out, out->v[e->ids + i], err);
                continue;
            }
        }
        int start = out->n;
        rc = bpe_piece(t, st, &w, p, n, out, err);
        if (e && rc == 0) {
            *e = (cache_entry){h, (uint32_t)n, sp[k].off, start, out->n - start};
            c.used++;
        }
    }
    free(c.e);
    work_free(&w);
    free(sp);
    return rc;
}
