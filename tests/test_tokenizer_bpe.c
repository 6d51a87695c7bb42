/* Byte-level BPE (tokenizer.ggml.model = gpt2): llama.cpp's conformance vectors of every BPE vocabulary in
 * ../shared/vocab through the library and through `specd tokenize --no-bos --file`, decode round trips of
 * random text (multi-byte, emoji, CJK, combining marks, control characters, invalid UTF-8), the streaming
 * decoder over tokens that end inside characters, special-token parsing, merge order on a synthetic
 * vocabulary, ignore_merges, long single-letter runs, and bad metadata (unknown pre-tokenizer, merges). */
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tests/test.h"
#include "tests/test_util.h"
#include "tests/tok_fixture.h"

/* decode(ids) concatenated, no BOS involved. *n gets the length; the buffer is malloc'd. */
static char *decode_all(const sd_tokenizer *t, const int32_t *ids, int n, size_t *len) {
    size_t cap = 64 + (size_t)n * (SD_TOK_MAX_PIECE + 1), o = 0;
    char *b = malloc(cap);
    for (int i = 0; b && i < n; i++) {
        size_t full;
        o += sd_tok_decode(t, i ? ids[i - 1] : -1, ids[i], b + o, cap - o, &full);
    }
    *len = o;
    return b;
}

/* ---------------------------------------------------------------- conformance vectors */

/* The conformance vectors of ../shared/vocab/ggml-vocab-<name>.gguf; -1 when missing. */
static int load_vecs(const char *name, vecs *v) {
    char rel[256];
    memset(v, 0, sizeof *v);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.inp", name);
    const char *pi = shared_path(rel);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
    const char *po = shared_path(rel);
    if (!pi || !po) return -1;
    return load_vecs_files(pi, po, v);
}

/* Every string gives exactly its ids and decodes back to itself. */
static void check_vectors(const char *name) {
    vecs v;
    if (load_vecs(name, &v)) SKIP("../shared/vocab/ggml-vocab-%s.gguf{,.inp,.out} not found", name);
    sd_tokenizer *t = tok_load_vocab(name);
    REQUIRE(t);
    CHECK_EQ_INT(sd_tok_kind_of(t), SD_TOK_BPE);
    CHECK(v.n >= 40);
    int bad = 0;
    for (int i = 0; i < v.n; i++) {
        int32_t want[2048], *got = NULL;
        int nw = parse_ids(v.ids[i], want, 2048), ng = 0;
        sd_err err = {{0}};
        REQUIRE(sd_tok_encode(t, v.str[i], v.len[i], 0, &got, &ng, &err) == 0);
        if (!ids_equal(got, ng, want, nw) && bad++ < 3) {
            CHECKF(0, "%s string %d (\"%.*s\")", name, i, (int)v.len[i], v.str[i]);
            print_ids("want", want, nw);
            print_ids("got ", got, ng);
        }
        size_t nd;
        char *dec = decode_all(t, got, ng, &nd);
        CHECKF(dec && nd == v.len[i] && !memcmp(dec, v.str[i], nd), "%s string %d does not decode back", name, i);
        free(dec);
        free(got);
    }
    CHECK_EQ_INT(bad, 0);
    sd_tok_free(t);
    free_vecs(&v);
}

static void test_vocab_gpt2(void) { check_vectors("gpt-2"); }
static void test_vocab_deepseek_coder(void) { check_vectors("deepseek-coder"); }
static void test_vocab_deepseek_llm(void) { check_vectors("deepseek-llm"); }
static void test_vocab_falcon(void) { check_vectors("falcon"); }
static void test_vocab_mpt(void) { check_vectors("mpt"); }
static void test_vocab_refact(void) { check_vectors("refact"); }
static void test_vocab_starcoder(void) { check_vectors("starcoder"); }

/* `specd tokenize -m ggml-vocab-gpt-2.gguf --no-bos --file F` prints every string's .out ids. */
static void test_cli_gpt2(void) {
    const char *path = shared_path("vocab/ggml-vocab-gpt-2.gguf");
    vecs v;
    if (!path || load_vecs("gpt-2", &v)) SKIP("../shared/vocab/ggml-vocab-gpt-2.gguf{,.inp,.out} not found");
    const char *bin = specd_bin();
    if (!bin) { free_vecs(&v); SKIP("build/specd not built"); }
    char cmd[2048];
    static char out[1 << 16];
    for (int i = 0; i < v.n; i++) {
        const char *f = tmp_path("cli.txt");
        REQUIRE(write_all(f, v.str[i], v.len[i]) == 0);
        snprintf(cmd, sizeof cmd, "%s tokenize -m %s --no-bos --file %s", bin, path, f);
        CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 0);
        int32_t want[2048], got[2048];
        int nw = parse_ids(v.ids[i], want, 2048), ng = parse_ids(out, got, 2048);
        CHECKF(ids_equal(got, ng, want, nw), "specd tokenize, gpt-2 string %d", i);
    }
    free_vecs(&v);
}

/* ---------------------------------------------------------------- round trips */

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Random text from interesting pieces: ASCII words and code, spaces/tabs/newlines runs, control
 * characters, Latin-1, combining marks, CJK, Hangul, Thai, Devanagari, emoji (with ZWJ and variation
 * selectors), and (when invalid) bytes that are not UTF-8. */
static size_t random_text(char *b, size_t cap, int invalid) {
    static const char *atoms[] = {
        "the", " quick", "Brown", " fox", "'s", "'LL", " 42", "3.14159", "x+=1;", "\t", "\n", "\r\n", "  ",
        "    ", " ", "\x01", "\x1b[0m", "\x7f", "\xc2\x85", "\xc2\xa0", "caf\xc3\xa9", "F\xc3\xbchrer", "e\xcc\x81",
        "a\xcc\x88\xcc\x81", "\xe4\xbd\xa0\xe5\xa5\xbd", "\xe4\xb8\x96\xe7\x95\x8c", "\xea\xb0\x80\xeb\x82\x98",
        "\xe0\xb8\x81\xe0\xb8\xb1", "\xe0\xa4\x95\xe0\xa4\xbf", "\xf0\x9f\x98\x80", "\xf0\x9f\xa6\x99",
        "\xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab\xef\xb8\x8f", "\xe2\x9c\x85", "\xd0\xbf\xd1\x80\xd0\xb8",
        "\xe3\x80\x80", "\xef\xbc\x81", "<|endoftext|>", "<|", "\xc5\xbf", "\xe2\x80\xa8", "\xcd\x8f",
    };
    static const char *bad[] = {"\xff", "\xc3", "\xe4\xbd", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80",
                                "\x80\x80", "\xf0\x9f\x98"};
    size_t n = 0, want = rnd() % 200;
    while (n < want) {
        const char *a = invalid && rnd() % 5 == 0 ? bad[rnd() % (sizeof bad / sizeof *bad)]
                                                  : atoms[rnd() % (sizeof atoms / sizeof *atoms)];
        size_t l = strlen(a);
        if (n + l >= cap) break;
        memcpy(b + n, a, l);
        n += l;
    }
    if (rnd() % 10 == 0 && n + 1 < cap) b[n++] = '\0'; /* a NUL byte inside the text */
    return n;
}

/* Byte-level BPE loses nothing: decode(encode(text)) == text byte for byte, for valid UTF-8 and, where the
 * vocabulary has a normal token for each of the 256 byte stand-ins (gpt-2), for any other bytes too.
 * exact = 0: only that encoding never fails and gives ids in range (some vocabularies lack the stand-ins
 * of bytes that never occur in UTF-8, or have them as user-defined tokens that decode as text). */
static void check_roundtrip(const char *name, int invalid, int iters, int exact) {
    sd_tokenizer *t = tok_load_vocab(name);
    if (!t) SKIP("../shared/vocab/ggml-vocab-%s.gguf not loadable", name);
    char text[1024];
    int bad = 0;
    for (int it = 0; it < iters; it++) {
        size_t n = random_text(text, sizeof text, invalid);
        int32_t *ids = NULL;
        int ni = 0;
        sd_err err = {{0}};
        REQUIRE(sd_tok_encode(t, text, n, 0, &ids, &ni, &err) == 0);
        size_t nd;
        char *dec = decode_all(t, ids, ni, &nd);
        if (exact && !(dec && nd == n && !memcmp(dec, text, n)) && bad++ < 3)
            CHECKF(0, "%s: round trip %d differs (%zu bytes in, %zu out)", name, it, n, nd);
        for (int k = 0; k < ni; k++) CHECK(ids[k] >= 0 && ids[k] < sd_tok_vocab_size(t));
        free(dec);
        free(ids);
    }
    CHECK_EQ_INT(bad, 0);
    sd_tok_free(t);
}

static void test_roundtrip_valid(void) {
    check_roundtrip("gpt-2", 0, 400, 1);
    check_roundtrip("deepseek-llm", 0, 200, 1);
    check_roundtrip("deepseek-coder", 0, 100, 1);
    check_roundtrip("falcon", 0, 100, 1);
    check_roundtrip("mpt", 0, 100, 1);
    check_roundtrip("starcoder", 0, 100, 1);
    check_roundtrip("refact", 0, 100, 1);
}
static void test_roundtrip_invalid_utf8(void) {
    check_roundtrip("gpt-2", 1, 400, 1);
    check_roundtrip("deepseek-llm", 1, 100, 0);
    check_roundtrip("falcon", 1, 100, 0);
}

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int v;
        i += sd_utf8_decode((const unsigned char *)s + i, n - i, &cp, &v);
        if (!v) return 0;
    }
    return 1;
}

/* Tokens of emoji and CJK end inside characters; the streaming decoder still hands out only whole,
 * valid characters, and the chunks add up to the text. */
static void test_streaming_decoder(void) {
    sd_tokenizer *t = tok_load_vocab("gpt-2");
    if (!t) SKIP("../shared/vocab/ggml-vocab-gpt-2.gguf not loadable");
    char text[1024];
    for (int it = 0; it < 200; it++) {
        size_t n = random_text(text, sizeof text, 0);
        if (memchr(text, 0, n)) n = strlen(text);
        int32_t *ids = NULL;
        int ni = 0;
        REQUIRE(sd_tok_encode(t, text, n, 0, &ids, &ni, NULL) == 0);
        sd_detok d;
        sd_detok_init(&d, t, -1);
        char all[4096], chunk[SD_TOK_MAX_PIECE + 32];
        size_t na = 0;
        int split_chars = 0;
        for (int i = 0; i <= ni; i++) {
            size_t c = i < ni ? sd_detok_push(&d, ids[i], chunk, sizeof chunk) : sd_detok_flush(&d, chunk, sizeof chunk);
            CHECK(valid_utf8(chunk, c));
            if (i < ni && c == 0) split_chars++;
            if (na + c < sizeof all) memcpy(all + na, chunk, c);
            na += c;
        }
        CHECKF(na == n && !memcmp(all, text, n), "streamed decode %d differs", it);
        free(ids);
    }
    /* a text known to split a character across tokens: the first two tokens of 🚀 give no output */
    int32_t *ids = NULL;
    int ni = 0;
    REQUIRE(sd_tok_encode(t, "\xf0\x9f\x9a\x80", 4, 0, &ids, &ni, NULL) == 0);
    CHECK(ni >= 2);
    sd_detok d;
    sd_detok_init(&d, t, -1);
    char chunk[SD_TOK_MAX_PIECE + 32];
    size_t total = 0;
    for (int i = 0; i < ni; i++) {
        size_t c = sd_detok_push(&d, ids[i], chunk, sizeof chunk);
        if (i + 1 < ni) CHECK_EQ_INT(c, 0);
        total += c;
    }
    CHECK_EQ_INT(total, 4);
    free(ids);
    sd_tok_free(t);
}

/* ---------------------------------------------------------------- specials */

static int32_t find_text(const sd_tokenizer *t, const char *s) {
    for (int i = 0; i < sd_tok_vocab_size(t); i++)
        if (!strcmp(sd_tok_text(t, i), s)) return i;
    return -1;
}

static int count_id(const int32_t *ids, int n, int32_t id) {
    int c = 0;
    for (int i = 0; i < n; i++) c += ids[i] == id;
    return c;
}

/* "<|endoftext|>" is one token with SD_TOK_PARSE_SPECIAL and plain text without; the text around it is
 * encoded as if alone. */
static void test_special_tokens(void) {
    sd_tokenizer *t = tok_load_vocab("gpt-2");
    if (!t) SKIP("../shared/vocab/ggml-vocab-gpt-2.gguf not loadable");
    int32_t eot = find_text(t, "<|endoftext|>");
    REQUIRE(eot >= 0);
    CHECK(sd_tok_is_eog(t, eot));
    const char *s = "Hi<|endoftext|> there";
    int32_t *a = NULL, *b = NULL, *hi = NULL, *there = NULL;
    int na = 0, nb = 0, nhi = 0, nthere = 0;
    REQUIRE(sd_tok_encode(t, s, strlen(s), SD_TOK_PARSE_SPECIAL, &a, &na, NULL) == 0);
    REQUIRE(sd_tok_encode(t, s, strlen(s), 0, &b, &nb, NULL) == 0);
    REQUIRE(sd_tok_encode(t, "Hi", 2, 0, &hi, &nhi, NULL) == 0);
    REQUIRE(sd_tok_encode(t, " there", 6, 0, &there, &nthere, NULL) == 0);
    CHECK_EQ_INT(count_id(a, na, eot), 1);
    CHECK(na == nhi + 1 + nthere && ids_equal(a, nhi, hi, nhi) && a[nhi] == eot &&
          ids_equal(a + nhi + 1, nthere, there, nthere));
    CHECK_EQ_INT(count_id(b, nb, eot), 0);
    CHECK(nb > na);
    size_t nd;
    char *dec = decode_all(t, b, nb, &nd);
    CHECK(dec && nd == strlen(s) && !memcmp(dec, s, nd));
    free(dec);
    free(a); free(b); free(hi); free(there);
    sd_tok_free(t);
}

/* ---------------------------------------------------------------- synthetic vocabularies */

/* Writes a byte-level vocabulary: the 256 byte stand-ins, then extra tokens (normal type), then
 * "<|end|>" (control); merges as given (merges == NULL: no merges key at all). */
static const char *write_vocab(const char *file, const char *pre, const char *const *extra, int n_extra,
                               const char *const *merges, int n_merges) {
    const char *path = tmp_path(file);
    int n = 256 + n_extra + 1;
    char **tok = calloc((size_t)n, sizeof *tok);
    int32_t *type = calloc((size_t)n, sizeof *type);
    for (int b = 0; b < 256; b++) {
        tok[b] = calloc(8, 1);
        sd_utf8_encode(sd_uni_byte_to_cp((uint8_t)b), tok[b]);
        type[b] = SD_TT_NORMAL;
    }
    for (int i = 0; i < n_extra; i++) { tok[256 + i] = strdup(extra[i]); type[256 + i] = SD_TT_NORMAL; }
    tok[n - 1] = strdup("<|end|>");
    type[n - 1] = SD_TT_CONTROL;
    gguf_writer *w = gguf_writer_new(32);
    gguf_w_str(w, "general.architecture", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre) gguf_w_str(w, "tokenizer.ggml.pre", pre);
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (size_t)n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, (size_t)n);
    if (merges) gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, (size_t)n_merges);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(n - 1));
    sd_err err = {{0}};
    int rc = gguf_writer_save(w, path, &err);
    if (rc) fprintf(stderr, "  %s\n", err.msg);
    gguf_writer_free(w);
    for (int i = 0; i < n; i++) free(tok[i]);
    free(tok);
    free(type);
    return rc ? NULL : path;
}

/* The tokens' texts of encode(text), joined with '|'. */
static const char *pieces(const sd_tokenizer *t, const char *text) {
    static char buf[512];
    int32_t *ids = NULL;
    int n = 0;
    buf[0] = 0;
    if (sd_tok_encode(t, text, strlen(text), 0, &ids, &n, NULL)) return "(error)";
    size_t o = 0;
    for (int i = 0; i < n; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", i ? "|" : "", sd_tok_text(t, ids[i]));
    free(ids);
    return buf;
}

static void test_merge_order(void) {
    const char *extra[] = {"ab", "bc", "abc", "aa", "aaaa"};
    /* "b c" ranks before "a b": abc = a + bc */
    const char *m1[] = {"b c", "a bc", "a b", "a a", "aa aa"};
    const char *p = write_vocab("m1.gguf", "gpt2", extra, 5, m1, 5);
    REQUIRE(p);
    sd_err err = {{0}};
    sd_tokenizer *t = tok_load(p, &err);
    REQUIRE(t);
    CHECK_STR_EQ(pieces(t, "abc"), "abc");
    CHECK_STR_EQ(pieces(t, "aaa"), "aa|a");     /* equal ranks: leftmost first */
    CHECK_STR_EQ(pieces(t, "aaaaa"), "aaaa|a");
    CHECK_STR_EQ(pieces(t, "ab ab"), "ab|\xc4\xa0|ab"); /* the gpt2 split keeps "Ġ" apart from "ab" */
    sd_tok_free(t);
    /* "a b" first: ab + c, and "ab c" is no merge */
    const char *m2[] = {"a b", "b c", "a bc"};
    p = write_vocab("m2.gguf", "gpt2", extra, 5, m2, 3);
    REQUIRE(p);
    t = tok_load(p, &err);
    REQUIRE(t);
    CHECK_STR_EQ(pieces(t, "abc"), "ab|c");
    CHECK_STR_EQ(pieces(t, "bcab"), "bc|ab");
    sd_tok_free(t);
}

/* llama-bpe takes a piece that is itself a token whole (tokenizer.json "ignore_merges"); gpt2 merges. */
static void test_ignore_merges(void) {
    const char *extra[] = {"abc"};
    const char *p1 = write_vocab("im1.gguf", "llama-bpe", extra, 1, extra, 0);
    const char *p2 = write_vocab("im2.gguf", "gpt2", extra, 1, extra, 0);
    REQUIRE(p1 && p2);
    sd_tokenizer *a = tok_load(p1, NULL), *b = tok_load(p2, NULL);
    REQUIRE(a && b);
    CHECK_STR_EQ(pieces(a, "abc"), "abc");
    CHECK_STR_EQ(pieces(b, "abc"), "a|b|c");
    CHECK_STR_EQ(pieces(a, "abcabc"), "a|b|c|a|b|c"); /* only a whole piece is taken whole */
    sd_tok_free(a);
    sd_tok_free(b);
    /* Falcon 3 is of the Llama 3 family; DBRX shares the split but merges */
    const char *p3 = write_vocab("im3.gguf", "falcon3", extra, 1, extra, 0);
    const char *p4 = write_vocab("im4.gguf", "dbrx", extra, 1, extra, 0);
    REQUIRE(p3 && p4);
    a = tok_load(p3, NULL);
    b = tok_load(p4, NULL);
    REQUIRE(a && b);
    CHECK_STR_EQ(pieces(a, "abc"), "abc");
    CHECK_STR_EQ(pieces(b, "abc"), "a|b|c");
    sd_tok_free(a);
    sd_tok_free(b);
}

static void test_bad_metadata(void) {
    const char *extra[] = {"ab"}, *merges[] = {"a b", "no-space", "x y"};
    sd_err err = {{0}};
    const char *p = write_vocab("bad1.gguf", "no-such-pre", extra, 1, merges, 1);
    REQUIRE(p);
    CHECK(tok_load(p, &err) == NULL);
    CHECKF(strstr(err.msg, "no-such-pre") != NULL, "message: %s", err.msg);
    p = write_vocab("bad2.gguf", "gpt2", extra, 1, NULL, 0);
    REQUIRE(p);
    memset(&err, 0, sizeof err);
    CHECK(tok_load(p, &err) == NULL);
    CHECKF(strstr(err.msg, "merges") != NULL, "message: %s", err.msg);
    /* merges of bad shape or naming no tokens are skipped, the rest works */
    p = write_vocab("bad3.gguf", "gpt2", extra, 1, merges, 3);
    REQUIRE(p);
    sd_tokenizer *t = tok_load(p, &err);
    REQUIRE(t);
    CHECK_STR_EQ(pieces(t, "abxy"), "ab|x|y");
    sd_tok_free(t);
    /* no pre-tokenizer name: llama.cpp's default */
    p = write_vocab("nopre.gguf", NULL, extra, 1, merges, 1);
    REQUIRE(p);
    t = tok_load(p, &err);
    REQUIRE(t);
    CHECK_STR_EQ(pieces(t, "ab"), "ab");
    sd_tok_free(t);
}

/* A 100 KB run of one letter is one pre-tokenizer piece: merging it must not be quadratic. */
static void test_long_run(void) {
    sd_tokenizer *t = tok_load_vocab("gpt-2");
    if (!t) SKIP("../shared/vocab/ggml-vocab-gpt-2.gguf not loadable");
    size_t n = 100 * 1024;
    char *s = malloc(n);
    REQUIRE(s);
    memset(s, 'a', n);
    clock_t t0 = clock();
    int32_t *ids = NULL;
    int ni = 0;
    REQUIRE(sd_tok_encode(t, s, n, 0, &ids, &ni, NULL) == 0);
    double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(ni > 0 && (size_t)ni < n / 2);
    size_t nd;
    char *dec = decode_all(t, ids, ni, &nd);
    CHECK(dec && nd == n && !memcmp(dec, s, n));
    CHECKF(sec < 5.0, "%.2f s for 100 KB of one letter", sec); /* quadratic merging takes minutes */
    free(dec);
    free(ids);
    free(s);
    sd_tok_free(t);
}

int main(void) {
    if (make_tmpdir("specd-test-bpe-")) return 1;
    RUN(test_vocab_gpt2);
    RUN(test_vocab_deepseek_coder);
    RUN(test_vocab_deepseek_llm);
    RUN(test_vocab_falcon);
    RUN(test_vocab_mpt);
    RUN(test_vocab_refact);
    RUN(test_vocab_starcoder);
    RUN(test_cli_gpt2);
    RUN(test_roundtrip_valid);
    RUN(test_roundtrip_invalid_utf8);
    RUN(test_streaming_decoder);
    RUN(test_special_tokens);
    RUN(test_merge_order);
    RUN(test_ignore_merges);
    RUN(test_bad_metadata);
    RUN(test_long_run);
    remove_tmpdir();
    return TEST_DONE();
}
