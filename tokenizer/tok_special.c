/* Special-token splitting: finds the control, user-defined and unknown tokens written literally in a text
 * and cuts the text into raw fragments and those tokens.
 *
 * The rule is the reference tokenizers': take the special tokens one at a time in priority order (longest
 * text first, then lowest id), and split every still-raw fragment on each occurrence of that token, left
 * to right without overlaps. Done literally that is one search of the whole text per special token, which
 * a vocabulary with thousands of added tokens (deepseek-llm has 2,398) makes slow. Here one scan with a
 * byte trie finds every occurrence of every special token, and the rule is then replayed on that list:
 * by priority, an occurrence is taken when none of its bytes is taken already. That gives the same result,
 * because an occurrence lies inside one raw fragment exactly when none of its bytes belongs to a token
 * taken before it, and within one token, left to right, a later occurrence that overlaps an earlier taken
 * one is exactly the one a left-to-right search skips. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* ---------------------------------------------------------------- the trie */

typedef struct trie_node {
    int32_t child;   /* first child, -1 when none */
    int32_t sibling; /* next child of the same parent, -1 when none */
    int32_t rank;    /* index in t->special of the first token with this text, -1 when none */
    int32_t rank_user; /* the same among user-defined tokens only (matched without parse_special) */
    uint8_t byte;
} trie_node;

struct sd_special_trie {
    int32_t root[256]; /* node for each first byte, -1 when none (a table: the root has the most children) */
    trie_node *nodes;
    int32_t n, cap;
};

static int32_t node_new(sd_special_trie *tr, uint8_t byte) {
    if (tr->n == tr->cap) {
        int32_t cap = tr->cap ? tr->cap * 2 : 256;
        trie_node *v = realloc(tr->nodes, (size_t)cap * sizeof *v);
        if (!v) return -1;
        tr->nodes = v;
        tr->cap = cap;
    }
    tr->nodes[tr->n] = (trie_node){-1, -1, -1, -1, byte};
    return tr->n++;
}

static int32_t child_of(const sd_special_trie *tr, int32_t node, uint8_t byte) {
    for (int32_t c = tr->nodes[node].child; c >= 0; c = tr->nodes[c].sibling)
        if (tr->nodes[c].byte == byte) return c;
    return -1;
}

/* The node for s[0..len), created as needed; -1 when out of memory. */
static int32_t trie_path(sd_special_trie *tr, const uint8_t *s, size_t len) {
    int32_t cur = tr->root[s[0]];
    if (cur < 0 && (cur = tr->root[s[0]] = node_new(tr, s[0])) < 0) return -1;
    for (size_t i = 1; i < len; i++) {
        int32_t next = child_of(tr, cur, s[i]);
        if (next < 0) {
            if ((next = node_new(tr, s[i])) < 0) return -1;
            tr->nodes[next].sibling = tr->nodes[cur].child; /* realloc above: index, don't hold pointers */
            tr->nodes[cur].child = next;
        }
        cur = next;
    }
    return cur;
}

void sd_special_trie_free(sd_special_trie *tr) {
    if (!tr) return;
    free(tr->nodes);
    free(tr);
}

int sd_special_trie_build(sd_tokenizer *t, sd_err *err) {
    sd_special_trie *tr = calloc(1, sizeof *tr);
    if (!tr) return sd_errf(err, "out of memory (special-token trie)");
    memset(tr->root, 0xff, sizeof tr->root);
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        int32_t node = trie_path(tr, (const uint8_t *)t->text[id], t->text_len[id]);
        if (node < 0) {
            sd_special_trie_free(tr);
            return sd_errf(err, "out of memory (special-token trie)");
        }
        /* two tokens with the same text: the first in priority order is the one a split would find */
        if (tr->nodes[node].rank < 0) tr->nodes[node].rank = k;
        if (tr->nodes[node].rank_user < 0 && t->type[id] == SD_TT_USER) tr->nodes[node].rank_user = k;
    }
    t->strie = tr;
    return 0;
}

/* ---------------------------------------------------------------- fragments */

int sd_frag_push(sd_frag_list *l, size_t off, size_t len, int32_t id, sd_err *err) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        sd_frag *v = realloc(l->v, cap * sizeof *v);
        if (!v) return sd_errf(err, "out of memory (special-token split)");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (sd_frag){off, len, id};
    return 0;
}

/* An occurrence of special token special[rank] at byte offset pos. */
typedef struct occ {
    size_t pos;
    int32_t rank;
} occ;

static int occ_by_rank(const void *a, const void *b) {
    const occ *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int occ_by_pos(const void *a, const void *b) {
    const occ *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Every occurrence of every eligible special token in text, in position order; *n = count. */
static occ *find_all(const sd_tokenizer *t, const uint8_t *text, size_t len, bool parse_special, size_t *n,
                     sd_err *err) {
    const sd_special_trie *tr = t->strie;
    occ *v = NULL;
    size_t cap = 0;
    *n = 0;
    for (size_t p = 0; p < len; p++) {
        int32_t node = tr->root[text[p]];
        for (size_t q = p + 1; node >= 0; q++) {
            int32_t rank = parse_special ? tr->nodes[node].rank : tr->nodes[node].rank_user;
            if (rank >= 0) {
                if (*n == cap) {
                    cap = cap ? cap * 2 : 64;
                    occ *w = realloc(v, cap * sizeof *w);
                    if (!w) {
                        free(v);
                        sd_errf(err, "out of memory (special-token split)");
                        return NULL;
                    }
                    v = w;
                }
                v[(*n)++] = (occ){p, rank};
            }
            if (q >= len) break;
            node = child_of(tr, node, text[q]);
        }
    }
    if (!v) v = malloc(sizeof *v); /* NULL means an error to the caller */
    if (!v) sd_errf(err, "out of memory (special-token split)");
    return v;
}

static bool span_free(const uint8_t *taken, size_t pos, size_t len) {
    for (size_t i = pos; i < pos + len; i++)
        if (taken[i >> 3] & (1u << (i & 7))) return false;
    return true;
}

static void span_take(uint8_t *taken, size_t pos, size_t len) {
    for (size_t i = pos; i < pos + len; i++) taken[i >> 3] |= (uint8_t)(1u << (i & 7));
}

/* A special token with SD_STRIP_RIGHT swallows the whitespace that follows it, SD_STRIP_LEFT the whitespace
 * before it (as llama.cpp's partition does: ASCII isspace); text fragments left empty are dropped. */
static void apply_strip(const sd_tokenizer *t, const char *text, sd_frag_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].id < 0) continue;
        uint8_t s = t->strip[l->v[i].id];
        if ((s & SD_STRIP_RIGHT) && i + 1 < l->n && l->v[i + 1].id < 0) {
            sd_frag *f = &l->v[i + 1];
            while (f->len && isspace((unsigned char)text[f->off])) f->off++, f->len--;
        }
        if ((s & SD_STRIP_LEFT) && i > 0 && l->v[i - 1].id < 0) {
            sd_frag *f = &l->v[i - 1];
            while (f->len && isspace((unsigned char)text[f->off + f->len - 1])) f->len--;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].id >= 0 || l->v[i].len) l->v[k++] = l->v[i];
    l->n = k;
}

int sd_tok_partition(const sd_tokenizer *t, const char *text, size_t len, bool parse_special, sd_frag_list *out,
                     sd_err *err) {
    out->n = 0;
    size_t n = 0, kept = 0;
    occ *o = t->strie && t->n_special ? find_all(t, (const uint8_t *)text, len, parse_special, &n, err) : NULL;
    if (t->strie && t->n_special && !o) return -1;
    uint8_t *taken = n ? calloc(len / 8 + 1, 1) : NULL;
    if (n && !taken) {
        free(o);
        return sd_errf(err, "out of memory (special-token split)");
    }
    /* replay the priority rule: token by token, left to right, keep occurrences on untaken bytes
     * (qsort only when there is something to sort: o is NULL when the vocabulary has no special token) */
    if (n) qsort(o, n, sizeof *o, occ_by_rank);
    for (size_t i = 0; i < n; i++) {
        size_t sl = t->text_len[t->special[o[i].rank]];
        if (!span_free(taken, o[i].pos, sl)) continue;
        span_take(taken, o[i].pos, sl);
        o[kept++] = o[i];
    }
    if (kept) qsort(o, kept, sizeof *o, occ_by_pos);
    size_t pos = 0;
    int rc = 0;
    for (size_t i = 0; i < kept && rc == 0; i++) {
        int32_t id = t->special[o[i].rank];
        if (o[i].pos > pos) rc = sd_frag_push(out, pos, o[i].pos - pos, -1, err);
        if (rc == 0) rc = sd_frag_push(out, o[i].pos, t->text_len[id], id, err);
        pos = o[i].pos + t->text_len[id];
    }
    if (rc == 0 && pos < len) rc = sd_frag_push(out, pos, len - pos, -1, err);
    if (rc == 0 && t->strip) apply_strip(t, text, out);
    free(taken);
    free(o);
    return rc;
}
