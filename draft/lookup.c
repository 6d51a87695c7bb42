/* N-gram lookup ("prompt lookup decoding"): proposes the tokens that followed the most recent earlier
 * occurrence of the last n tokens of prompt + output. No model at all; strong when the output copies
 * from its context (code, agents, summaries).
 *
 * Index: an open-addressing hash table from an n-gram to the position where its most recent occurrence
 * ends. It is updated incrementally as the history grows (each new position inserts one n-gram), so a
 * step costs O(n + k), not a rescan. When the history is cut back (a new request on a session that
 * diverges from what was indexed) the table is rebuilt once from the kept prefix. */
#include <stdlib.h>
#include <string.h>

#include "draft/proposer.h"

typedef struct lookup {
    int n, max_k;
    int32_t *toks;    /* the indexed history (plus room for proposals): toks[0..n_toks) */
    int n_toks, cap;
    int n_indexed;    /* n-grams ending at positions < n_indexed are in the table */
    int32_t *slot;    /* end position of an n-gram, -1 empty */
    uint32_t n_slots; /* power of two */
    uint32_t used;
    int32_t *out;
} lookup;

static uint32_t ngram_hash(const int32_t *g, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        h ^= (uint32_t)g[i];
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

/* The slot holding the n-gram that ends at `end` (or the empty slot where it would go). */
static uint32_t find_slot(const lookup *L, int end) {
    const int32_t *g = L->toks + end - L->n + 1;
    uint32_t mask = L->n_slots - 1, i = ngram_hash(g, L->n) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t e = L->slot[i];
        if (e < 0 || !memcmp(L->toks + e - L->n + 1, g, (size_t)L->n * sizeof *g)) return i;
    }
}

static int grow_table(lookup *L, uint32_t n_slots) {
    int32_t *s = malloc((size_t)n_slots * sizeof *s);
    if (!s) return -1;
    memset(s, 0xff, (size_t)n_slots * sizeof *s);
    int32_t *old = L->slot;
    uint32_t n_old = L->n_slots;
    L->slot = s;
    L->n_slots = n_slots;
    for (uint32_t i = 0; i < n_old; i++)
        if (old[i] >= 0) L->slot[find_slot(L, old[i])] = old[i];
    free(old);
    return 0;
}

/* Inserts the n-gram ending at position end, replacing an older occurrence of the same n-gram. */
static int insert(lookup *L, int end) {
    if ((L->used + 1) * 2 > L->n_slots && grow_table(L, L->n_slots * 2)) return -1;
    uint32_t i = find_slot(L, end);
    if (L->slot[i] < 0) L->used++;
    L->slot[i] = end;
    return 0;
}

static void clear(lookup *L) {
    memset(L->slot, 0xff, (size_t)L->n_slots * sizeof *L->slot);
    L->used = 0;
    L->n_indexed = 0;
}

/* Forgets the indexed tokens from position c on. */
static void cut(lookup *L, int c) {
    if (c < L->n_toks) {
        L->n_toks = c;
        if (L->n_indexed > c) clear(L); /* entries may point past the cut: rebuild on the next sync */
    }
}

/* Indexed tokens are history (never drafts), so a growing history needs no rollback. */
static void lk_rollback(sd_proposer *p, const int32_t *hist, int n) { cut(p->impl, n); }

static void lk_invalidate(sd_proposer *p, int n) { cut(p->impl, n); }

/* Brings the index up to date with hist[0..n): every n-gram ending before the last position is indexed
 * (the one ending at the last position is the query, and must only find *earlier* occurrences). */
static int sync(lookup *L, const int32_t *hist, int n, sd_err *err) {
    cut(L, n);
    if (n + L->max_k > L->cap) {
        int cap = 2 * (n + L->max_k);
        int32_t *t = realloc(L->toks, (size_t)cap * sizeof *t);
        if (!t) return sd_errf(err, "out of memory for the lookup index");
        L->toks = t;
        L->cap = cap;
    }
    memcpy(L->toks + L->n_toks, hist + L->n_toks, (size_t)(n - L->n_toks) * sizeof *hist);
    L->n_toks = n;
    if (L->n_indexed < L->n - 1) L->n_indexed = L->n - 1; /* the first n-gram ends at position n-1 */
    for (; L->n_indexed < n - 1; L->n_indexed++)
        if (insert(L, L->n_indexed)) return sd_errf(err, "out of memory for the lookup index");
    return 0;
}

static int lk_propose(sd_proposer *p, const int32_t *hist, int n, int k, const sd_draft_opts *o,
                      sd_proposal *out, sd_err *err) {
    lookup *L = p->impl;
    out->tokens = L->out;
    out->n = 0;
    out->q = NULL;
    if (sync(L, hist, n, err)) return -1;
    if (n <= L->n) return 0; /* the query n-gram has no earlier position to occur at */
    if (k > L->max_k) k = L->max_k;
    int32_t j = L->slot[find_slot(L, n - 1)];
    if (j < 0) return 0;
    /* Copy what followed the match; when that runs into the present, keep reading the proposal itself
     * (a repeating pattern continues). toks has room for max_k tokens past the history. */
    for (int i = 0; i < k; i++) {
        int32_t t = L->toks[j + 1 + i];
        L->toks[n + i] = t;
        L->out[out->n++] = t;
    }
    return 0;
}

static void lk_destroy(sd_proposer *p) {
    lookup *L = p->impl;
    if (L) {
        free(L->toks);
        free(L->slot);
        free(L->out);
        free(L);
    }
    free(p);
}

int sd_prop_lookup_new(int n, int max_k, sd_proposer **out, sd_err *err) {
    *out = NULL;
    if (n < 1 || n > 64) return sd_errf(err, "--lookup %d: the n-gram length must be in 1..64", n);
    sd_proposer *p = calloc(1, sizeof *p);
    lookup *L = calloc(1, sizeof *L);
    if (!p || !L) {
        free(p);
        free(L);
        return sd_errf(err, "out of memory for the lookup proposer");
    }
    p->name = "lookup";
    p->cost = 0.0;
    p->impl = L;
    p->propose = lk_propose;
    p->rollback = lk_rollback;
    p->invalidate = lk_invalidate;
    p->destroy = lk_destroy;
    L->n = n;
    L->max_k = max_k;
    L->out = malloc((size_t)max_k * sizeof *L->out);
    if (!L->out || grow_table(L, 1024)) {
        lk_destroy(p);
        return sd_errf(err, "out of memory for the lookup proposer");
    }
    *out = p;
    return 0;
}
