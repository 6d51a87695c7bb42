/* SentencePiece-style BPE encoding (tokenizer.ggml.model = "llama" and llama2.c tokenizers).
 * Start from the UTF-8 characters of the text (spaces written as "▁", with a "▁" prefix), then keep merging
 * the adjacent pair whose concatenation is a vocabulary token with the highest score (ties: leftmost).
 * Candidate pairs sit in a max-heap; entries made stale by earlier merges are skipped when popped, so the
 * work is O(n log n) rather than a rescan per merge. Characters left that are not tokens fall back to their
 * bytes (<0xXX>), or to the unknown token when the vocabulary has no byte tokens. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct sym {
    uint32_t off, n; /* bytes in the escaped text; n == 0 once merged into its left neighbour */
    int prev, next;  /* neighbours in the chain, -1 at the ends */
} sym;

typedef struct bigram {
    float score;
    int left, right;
    uint32_t size; /* byte length of the merged text when queued: detects stale entries */
} bigram;

typedef struct heap {
    bigram *v;
    size_t n, cap;
} heap;

/* a comes out before b: higher score, then the leftmost pair */
static bool before(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(heap *h, bigram b, sd_err *err) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        bigram *v = realloc(h->v, cap * sizeof *v);
        if (!v) return sd_errf(err, "out of memory (tokenizer queue)");
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = b;
    return 0;
}

static bigram heap_pop(heap *h) {
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c])) c++;
        if (!before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct spm_state {
    const sd_tokenizer *t;
    const char *text;
    sym *syms;
    heap q;
} spm_state;

/* Queues the pair (left, right) when their joined text is a token. */
static int try_pair(spm_state *s, int left, int right, sd_err *err) {
    if (left < 0 || right < 0) return 0;
    uint32_t size = s->syms[left].n + s->syms[right].n;
    int32_t id = sd_tok_find(s->t, s->text + s->syms[left].off, size);
    if (id < 0) return 0;
    return heap_push(&s->q, (bigram){s->t->score[id], left, right, size}, err);
}

/* The escaped text: optional "▁" prefix, every ' ' as "▁". */
static char *escape(const sd_tokenizer *t, const char *text, size_t len, bool first, size_t *out_len) {
    size_t spaces = 0;
    for (size_t i = 0; i < len; i++) spaces += text[i] == ' ';
    bool prefix = first && t->add_space_prefix;
    char *buf = malloc(len + 2 * spaces + (prefix ? 3 : 0) + 1);
    if (!buf) return NULL;
    size_t o = 0;
    if (prefix) { memcpy(buf, "\xe2\x96\x81", 3); o = 3; }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') { memcpy(buf + o, "\xe2\x96\x81", 3); o += 3; }
        else buf[o++] = text[i];
    }
    *out_len = o;
    return buf;
}

/* Length of the character a byte starts, as the reference splits text (malformed input included). */
static uint32_t char_len(unsigned char c) {
    static const uint8_t by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return by_high_nibble[c >> 4];
}

static int emit_symbol(const spm_state *s, const sym *y, sd_ids *out, sd_err *err) {
    const sd_tokenizer *t = s->t;
    const char *p = s->text + y->off;
    int32_t id = sd_tok_find(t, p, y->n);
    if (id >= 0) return sd_ids_push(out, id, err);
    /* only single characters get here (every merge makes a token): spell them in bytes */
    for (uint32_t k = 0; k < y->n; k++) {
        int32_t b = t->byte_id[(unsigned char)p[k]];
        if (b < 0) {
            if (t->unk < 0) return sd_errf(err, "cannot encode byte 0x%02X: no byte token and no unknown token",
                                           (unsigned char)p[k]);
            if (sd_ids_push(out, t->unk, err)) return -1;
            break; /* one unknown token per character */
        }
        if (sd_ids_push(out, b, err)) return -1;
    }
    return 0;
}

static int merge_all(spm_state *s, size_t len, sd_ids *out, sd_err *err) {
    int n = 0;
    for (size_t off = 0; off < len; n++) {
        uint32_t l = char_len((unsigned char)s->text[off]);
        if (l > len - off) l = (uint32_t)(len - off);
        s->syms[n] = (sym){(uint32_t)off, l, n - 1, off + l == len ? -1 : n + 1};
        off += l;
    }
    for (int i = 1; i < n; i++)
        if (try_pair(s, i - 1, i, err)) return -1;
    while (s->q.n) {
        bigram b = heap_pop(&s->q);
        sym *l = &s->syms[b.left], *r = &s->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = b.left;
        if (try_pair(s, l->prev, b.left, err) || try_pair(s, b.left, l->next, err)) return -1;
    }
    for (int i = n ? 0 : -1; i >= 0; i = s->syms[i].next)
        if (emit_symbol(s, &s->syms[i], out, err)) return -1;
    return 0;
}

int sd_tok_spm_encode(const sd_tokenizer *t, const char *text, size_t len, bool first, sd_ids *out, sd_err *err) {
    if (len == 0) return 0;
    size_t n;
    char *esc = escape(t, text, len, first, &n);
    spm_state s = {t, esc, esc ? malloc(n * sizeof *s.syms) : NULL, {0}};
    int rc = esc && s.syms ? merge_all(&s, n, out, err) : sd_errf(err, "out of memory (%zu bytes of text)", len);
    free(s.q.v);
    free(s.syms);
    free(esc);
    return rc;
}
