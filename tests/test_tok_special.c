/* Special-token splitting (tokenizer/tok_special.c): the one-scan trie version against the literal rule it
 * replaces (one left-to-right search of every still-raw fragment per special token, in priority order),
 * on texts built from the special texts of real vocabularies — whole, cut, overlapping, glued together —
 * with and without parse_special; and its speed on deepseek-llm's 2,398 user-defined tokens. */
#include <stdint.h>
#include <string.h>

#include "base/clock.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"
#include "tests/test.h"
#include "tests/test_util.h"
#include "tests/tok_fixture.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

/* The literal rule: for each special token in priority order, split every raw fragment on it. */
static void naive_partition(const sd_tokenizer *t, const char *text, size_t len, bool parse_special,
                            sd_frag_list *res) {
    sd_frag_list other = {0};
    res->n = 0;
    sd_frag_push(res, 0, len, -1, NULL);
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && t->type[id] != SD_TT_USER) continue;
        const char *s = t->text[id];
        size_t sl = t->text_len[id];
        other.n = 0;
        for (size_t i = 0; i < res->n; i++) {
            sd_frag f = res->v[i];
            if (f.id >= 0 || f.len < sl) {
                sd_frag_push(&other, f.off, f.len, f.id, NULL);
                continue;
            }
            size_t pos = f.off, end = f.off + f.len;
            for (const char *hit; (hit = memmem(text + pos, end - pos, s, sl)) != NULL;) {
                size_t h = (size_t)(hit - text);
                if (h > pos) sd_frag_push(&other, pos, h - pos, -1, NULL);
                sd_frag_push(&other, h, sl, id, NULL);
                pos = h + sl;
            }
            if (pos < end) sd_frag_push(&other, pos, end - pos, -1, NULL);
        }
        sd_frag_list tmp = *res;
        *res = other;
        other = tmp;
    }
    free(other.v);
}

/* A text of pieces: special texts whole or cut at either end, glued or separated by random bytes. */
static size_t random_text(const sd_tokenizer *t, char *buf, size_t cap) {
    size_t n = 0;
    int pieces = 1 + (int)(rnd() % 12);
    for (int p = 0; p < pieces && n < cap - 300; p++) {
        if (rnd() % 4 == 0 || t->n_special == 0) {
            int k = 1 + (int)(rnd() % 4);
            for (int i = 0; i < k; i++) buf[n++] = "ab <|>\n_ "[rnd() % 9];
            continue;
        }
        int32_t id = t->special[rnd() % (uint32_t)t->n_special];
        size_t sl = t->text_len[id], a = 0, b = sl;
        if (sl > 1 && rnd() % 3 == 0) a = rnd() % sl;
        if (sl > 1 && rnd() % 3 == 0) b = a + 1 + rnd() % (sl - a);
        if (b - a > 250) b = a + 250;
        memcpy(buf + n, t->text[id] + a, b - a);
        n += b - a;
    }
    return n;
}

static bool same(const sd_frag_list *x, const sd_frag_list *y) {
    if (x->n != y->n) return false;
    for (size_t i = 0; i < x->n; i++)
        if (x->v[i].off != y->v[i].off || x->v[i].len != y->v[i].len || x->v[i].id != y->v[i].id) return false;
    return true;
}

static void differential(const char *name) {
    sd_tokenizer *t = tok_load_vocab(name);
    if (!t) {
        SKIP("../shared/vocab/ggml-vocab-%s.gguf not found", name);
        return;
    }
    /* the priority rule only: whitespace swallowed by a token (Phi-3's rstrip) is test_tokenizer's */
    free(t->strip);
    t->strip = NULL;
    char buf[4096];
    sd_frag_list got = {0}, want = {0};
    int bad = 0, with_special = 0, cases = 3000;
    for (int c = 0; c < cases; c++) {
        size_t len = random_text(t, buf, sizeof buf);
        if (len == 0) continue;
        bool ps = c % 2;
        sd_err err = {{0}};
        CHECKF(sd_tok_partition(t, buf, len, ps, &got, &err) == 0, "%s", err.msg);
        naive_partition(t, buf, len, ps, &want);
        for (size_t i = 0; i < want.n; i++) with_special += want.v[i].id >= 0;
        if (!same(&got, &want) && bad++ < 3)
            fprintf(stderr, "  %s case %d (parse_special %d): %zu fragments, literal rule %zu: %.*s\n", name, c, ps,
                    got.n, want.n, (int)(len < 200 ? len : 200), buf);
    }
    CHECKF(bad == 0, "%s: %d of %d texts split differently from the literal rule", name, bad, cases);
    CHECKF(with_special > cases, "%s: only %d special tokens found in %d texts: the test is too weak", name,
           with_special, cases);
    free(got.v);
    free(want.v);
    sd_tok_free(t);
}

static void test_same_as_literal_rule(void) {
    const char *names[] = {"deepseek-llm", "deepseek-coder", "llama-spm", "phi-3", "gpt-2", "starcoder"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) differential(names[i]);
}

/* Synthetic vocabularies of short texts over a 3-letter alphabet, so that special tokens overlap and nest
 * all the time and priority decides almost every split. */
static int cmp_priority(const void *a, const void *b, void *ctx) {
    const sd_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void test_overlapping_synthetic(void) {
    int bad = 0, cases = 0;
    for (int v = 0; v < 40; v++) {
        sd_tokenizer t = {0};
        int n = 3 + (int)(rnd() % 14);
        t.n_vocab = n;
        t.text = calloc((size_t)n, sizeof *t.text);
        t.text_len = calloc((size_t)n, sizeof *t.text_len);
        t.type = calloc((size_t)n, sizeof *t.type);
        t.special = calloc((size_t)n, sizeof *t.special);
        REQUIRE(t.text && t.text_len && t.type && t.special);
        for (int i = 0; i < n; i++) {
            t.text[i] = calloc(8, 1);
            REQUIRE(t.text[i]);
            t.text_len[i] = 1 + rnd() % 4;
            for (uint32_t c = 0; c < t.text_len[i]; c++) t.text[i][c] = "abc"[rnd() % 3];
            t.type[i] = rnd() % 2 ? SD_TT_USER : SD_TT_CONTROL;
            t.special[i] = i; /* duplicates of a text are fine: the first in priority wins in both */
        }
        t.n_special = n;
        qsort_r(t.special, (size_t)n, sizeof *t.special, cmp_priority, &t);
        sd_err err = {{0}};
        REQUIRE(sd_special_trie_build(&t, &err) == 0);
        char buf[64];
        sd_frag_list got = {0}, want = {0};
        for (int c = 0; c < 300; c++, cases++) {
            size_t len = 1 + rnd() % 40;
            for (size_t i = 0; i < len; i++) buf[i] = "abcd"[rnd() % 4];
            bool ps = c % 2;
            CHECKF(sd_tok_partition(&t, buf, len, ps, &got, &err) == 0, "%s", err.msg);
            naive_partition(&t, buf, len, ps, &want);
            if (!same(&got, &want) && bad++ < 3)
                fprintf(stderr, "  vocabulary %d, text %.*s (parse_special %d): %zu fragments, literal rule %zu\n", v,
                        (int)len, buf, ps, got.n, want.n);
        }
        free(got.v);
        free(want.v);
        sd_special_trie_free(t.strie);
        for (int i = 0; i < n; i++) free(t.text[i]);
        free(t.text);
        free(t.text_len);
        free(t.type);
        free(t.special);
    }
    CHECKF(bad == 0, "%d of %d texts split differently from the literal rule", bad, cases);
}

/* A vocabulary without special tokens (e.g. tokenizer.ggml.token_type all one value): the text is one
 * plain fragment, and nothing is sorted (qsort of a NULL array was undefined behaviour). */
static void test_no_special_tokens(void) {
    sd_tokenizer t = {0};
    sd_frag_list got = {0};
    sd_err err = {{0}};
    for (int ps = 0; ps < 2; ps++) {
        CHECKF(sd_tok_partition(&t, "abc", 3, ps, &got, &err) == 0, "%s", err.msg);
        CHECK(got.n == 1 && got.v[0].off == 0 && got.v[0].len == 3 && got.v[0].id == -1);
    }
    free(got.v);
}

/* Priority, hand-made: a longer token wins over an earlier-starting shorter one it overlaps. */
static void test_priority_cases(void) {
    sd_tokenizer *t = tok_load_vocab("deepseek-llm");
    if (!t) {
        SKIP("../shared/vocab/ggml-vocab-deepseek-llm.gguf not found");
        return;
    }
    /* the two longest user-defined texts, glued twice, and each after a raw prefix */
    int32_t a = -1;
    for (int k = 0; k < t->n_special && a < 0; k++)
        if (t->type[t->special[k]] == SD_TT_USER) a = t->special[k];
    REQUIRE(a >= 0);
    char buf[1024];
    size_t la = t->text_len[a], n = 0;
    memcpy(buf + n, "x", 1), n += 1;
    memcpy(buf + n, t->text[a], la), n += la;
    memcpy(buf + n, t->text[a], la), n += la;
    sd_frag_list got = {0};
    sd_err err = {{0}};
    REQUIRE(sd_tok_partition(t, buf, n, false, &got, &err) == 0);
    CHECKF(got.n == 3 && got.v[0].id == -1 && got.v[1].id == a && got.v[2].id == a && got.v[2].off == 1 + la,
           "x + 2 x token %d: %zu fragments", a, got.n);
    free(got.v);
    sd_tok_free(t);
}

static void test_speed(void) {
    sd_tokenizer *t = tok_load_vocab("deepseek-llm");
    if (!t) {
        SKIP("../shared/vocab/ggml-vocab-deepseek-llm.gguf not found");
        return;
    }
    size_t len = 1 << 20;
    char *buf = malloc(len);
    REQUIRE(buf);
    for (size_t n = 0; n < len - 4096;) n += random_text(t, buf + n, 4096);
    memset(buf + len - 4096, 'a', 4096);
    sd_frag_list got = {0};
    sd_err err = {{0}};
    double t0 = sd_now_s();
    CHECK(sd_tok_partition(t, buf, len, true, &got, &err) == 0);
    double s = sd_now_s() - t0;
    fprintf(stderr, "  1 MB split on %d special tokens in %.1f ms (%zu fragments)\n", t->n_special, 1e3 * s, got.n);
    sd_frag_list want = {0};
    t0 = sd_now_s();
    naive_partition(t, buf, len / 8, true, &want);
    double s8 = sd_now_s() - t0;
    fprintf(stderr, "  the literal rule: 128 KB in %.1f ms\n", 1e3 * s8);
    CHECKF(s < 0.5 && got.n > 1000, "splitting 1 MB took %.2f s into %zu fragments", s, got.n);
    free(want.v);
    free(got.v);
    free(buf);
    sd_tok_free(t);
}

int main(void) {
    RUN(test_same_as_literal_rule);
    RUN(test_overlapping_synthetic);
    RUN(test_priority_cases);
    RUN(test_no_special_tokens);
    RUN(test_speed);
    return TEST_DONE();
}
