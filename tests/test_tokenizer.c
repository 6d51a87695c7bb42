/* Tokenizer (common part and SentencePiece-style BPE): llama.cpp's conformance vectors for llama-spm and
 * phi-3 (through the library and through `specd tokenize`), the llama2.c tokenizer against a direct
 * re-implementation of llama2.c's encoder, decode round trips, the streaming decoder, special-token parsing,
 * the end-of-generation set, the draft/target compatibility check and malformed tokenizer metadata. */
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tests/test.h"
#include "tests/test_util.h"
#include "tests/tok_fixture.h"

/* ---------------------------------------------------------------- conformance vectors */

/* base.inp / base.out */
static int load_vecs(const char *base, vecs *v) {
    char pi[1024], po[1024];
    snprintf(pi, sizeof pi, "%s.inp", base);
    snprintf(po, sizeof po, "%s.out", base);
    return load_vecs_files(pi, po, v);
}

/* Every string of the .inp gives exactly its .out ids (no BOS, special text as plain text); decoding
 * after BOS gives the string back. */
static void check_vocab_vectors(const char *name) {
    char rel[320];
    snprintf(rel, sizeof rel, "vocab/%s", name);
    const char *path = shared_path(rel);
    if (!path) SKIP("../shared/vocab/%.60s not found", name);
    vecs v;
    REQUIRE(load_vecs(path, &v) == 0);
    CHECK(v.n >= 40);
    sd_tokenizer *t = tok_load_path(path);
    REQUIRE(t);
    CHECK_EQ_INT(sd_tok_kind_of(t), SD_TOK_SPM);
    for (int i = 0; i < v.n; i++) {
        int32_t want[2048], *got = NULL;
        int nw = parse_ids(v.ids[i], want, 2048), ng = 0;
        sd_err err = {{0}};
        REQUIRE(sd_tok_encode(t, v.str[i], v.len[i], 0, &got, &ng, &err) == 0);
        CHECKF(ids_equal(got, ng, want, nw), "%s string %d (\"%.*s\")", name, i, (int)v.len[i], v.str[i]);
        if (!ids_equal(got, ng, want, nw)) {
            print_ids("want", want, nw);
            print_ids("got ", got, ng);
        }
        free(got);
        /* round trip: BOS + ids decode to the text */
        REQUIRE(sd_tok_encode(t, v.str[i], v.len[i], SD_TOK_ADD_BOS, &got, &ng, &err) == 0);
        char *dec = malloc(v.len[i] * 2 + 64);
        size_t nd = 0;
        for (int k = 1; k < ng; k++) {
            size_t full;
            nd += sd_tok_decode(t, got[k - 1], got[k], dec + nd, v.len[i] * 2 + 64 - nd, &full);
        }
        CHECKF(nd == v.len[i] && !memcmp(dec, v.str[i], nd), "%s string %d does not decode back", name, i);
        free(dec);
        free(got);
    }
    sd_tok_free(t);
    free_vecs(&v);
}

static void test_vocab_llama_spm(void) { check_vocab_vectors("ggml-vocab-llama-spm.gguf"); }
static void test_vocab_phi3(void) { check_vocab_vectors("ggml-vocab-phi-3.gguf"); }

/* `specd tokenize --no-bos --file F` gives the .out ids for a selection of strings (incl. empty, tabs,
 * newlines, emoji). */
static void test_cli_tokenize(void) {
    const char *path = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!path) SKIP("../shared/vocab/ggml-vocab-llama-spm.gguf not found");
    const char *bin = specd_bin();
    if (!bin) SKIP("build/specd not built");
    char cmd[2048], out[65536];
    vecs v;
    REQUIRE(load_vecs(path, &v) == 0);
    int picks[] = {0, 2, 5, 7, 10, 18, 21, 30, 33, 45};
    for (size_t k = 0; k < sizeof picks / sizeof picks[0]; k++) {
        int i = picks[k];
        if (i >= v.n) continue;
        const char *f = tmp_path("cli.txt");
        REQUIRE(write_all(f, v.str[i], v.len[i]) == 0);
        snprintf(cmd, sizeof cmd, "%s tokenize -m %s --no-bos --file %s", bin, path, f);
        int rc = run_cmd(cmd, out, sizeof out);
        CHECK_EQ_INT(rc, 0);
        int32_t want[2048], got[2048];
        int nw = parse_ids(v.ids[i], want, 2048), ng = parse_ids(out, got, 2048);
        CHECKF(ids_equal(got, ng, want, nw), "cli string %d", i);
        CHECK(strchr(out, '\n') == out + strlen(out) - 1); /* one line */
    }
    /* BOS by default, usage errors exit 2, model errors exit 1 */
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s 'Hello world'", bin, path);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 0);
    CHECK_STR_EQ(out, "1 15043 3186\n");
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s 2>/dev/null", bin, path);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s tokenize --bogus 2>/dev/null", bin);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s/nonexistent.gguf x 2>&1", bin, g_dir);
    CHECK_EQ_INT(run_cmd(cmd, out, sizeof out), 1);
    CHECK(strstr(out, "nonexistent.gguf") != NULL);
    free_vecs(&v);
}

/* ---------------------------------------------------------------- llama2.c tokenizer */

/* llama2.c run.c's encoder, written out directly (linear lookups, rescan per merge): the reference. */
static int ref_lookup(const sd_tokenizer *t, const char *s, size_t n) {
    for (int i = 0; i < sd_tok_vocab_size(t); i++) {
        const char *x = sd_tok_text(t, i);
        if (strlen(x) == n && !memcmp(x, s, n)) return i;
    }
    return -1;
}

static int ref_encode_llama2c(const sd_tokenizer *t, const float *scores, const char *text, int32_t *ids) {
    int n = 0;
    char buf[4096];
    /* llama2.c keeps spaces in its pieces; our texts carry SentencePiece's "▁" instead */
    if (*text) ids[n++] = ref_lookup(t, "\xe2\x96\x81", 3);
    for (const char *c = text; *c;) {
        size_t l = 1;
        while (c[l] && ((unsigned char)c[l] & 0xC0) == 0x80 && l < 4) l++;
        int id = *c == ' ' ? ref_lookup(t, "\xe2\x96\x81", 3) : ref_lookup(t, c, l);
        if (id >= 0) ids[n++] = id;
        else for (size_t k = 0; k < l; k++) ids[n++] = (unsigned char)c[k] + 3;
        c += l;
    }
    for (;;) {
        float best = -1e10f;
        int best_id = -1, best_i = -1;
        for (int i = 0; i + 1 < n; i++) {
            snprintf(buf, sizeof buf, "%s%s", sd_tok_text(t, ids[i]), sd_tok_text(t, ids[i + 1]));
            int id = ref_lookup(t, buf, strlen(buf));
            if (id >= 0 && scores[id] > best) { best = scores[id]; best_id = id; best_i = i; }
        }
        if (best_i < 0) break;
        ids[best_i] = best_id;
        memmove(ids + best_i + 1, ids + best_i + 2, (size_t)(n - best_i - 2) * sizeof *ids);
        n--;
    }
    return n;
}

/* Scores straight from the file (our tokenizer keeps them private). */
static int read_llama2c_scores(const char *path, float *scores, int n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int32_t max_len, len;
    char buf[4096];
    int ok = fread(&max_len, 4, 1, f) == 1;
    for (int i = 0; ok && i < n; i++) {
        ok = fread(&scores[i], 4, 1, f) == 1 && fread(&len, 4, 1, f) == 1 && len >= 0 && len < 4096 &&
             fread(buf, 1, (size_t)len, f) == (size_t)len;
    }
    fclose(f);
    return ok ? 0 : -1;
}

static const char *k_texts[] = {
    "Once upon a time", "The robot", "In the quiet of the night", "Hello, world!", "a", " leading space",
    "two  spaces", "tabs\tand\nnewlines", "caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac 5", "\xe6\x97\xa5\xe6\x9c\xac",
    "emoji \xf0\x9f\x98\x80!", "The quick brown fox jumps over the lazy dog.", "1234567890",
};

static void test_llama2c(void) {
    const char *tp = shared_path("models/tok512.bin");
    if (!tp) SKIP("../shared/models/tok512.bin not found");
    sd_err err = {{0}};
    sd_tokenizer *t = NULL;
    REQUIRE(sd_tok_from_llama2c(tp, 512, &t, &err) == 0);
    CHECK_EQ_INT(sd_tok_vocab_size(t), 512);
    CHECK_EQ_INT(sd_tok_bos(t), 1);
    CHECK_EQ_INT(sd_tok_eos(t), 2);
    CHECK_STR_EQ(sd_tok_text(t, 1), "<s>");
    CHECK_STR_EQ(sd_tok_text(t, 2), "</s>");
    CHECK_STR_EQ(sd_tok_text(t, 3 + 0x41), "<0x41>");
    CHECK(sd_tok_is_eog(t, 2) && !sd_tok_is_eog(t, 1));
    float scores[512];
    REQUIRE(read_llama2c_scores(tp, scores, 512) == 0);
    for (size_t k = 0; k < sizeof k_texts / sizeof k_texts[0]; k++) {
        const char *s = k_texts[k];
        int32_t want[512], *got = NULL;
        int nw = ref_encode_llama2c(t, scores, s, want), ng = 0;
        REQUIRE(sd_tok_encode(t, s, strlen(s), 0, &got, &ng, &err) == 0);
        CHECKF(ids_equal(got, ng, want, nw), "llama2.c encode of \"%s\"", s);
        free(got);
        /* with BOS (the default for this format), decoding gives the text back */
        REQUIRE(sd_tok_encode(t, s, strlen(s), SD_TOK_DEFAULT_SPECIALS, &got, &ng, &err) == 0);
        REQUIRE(ng >= 1);
        CHECK_EQ_INT(got[0], 1);
        char dec[1024];
        size_t nd = 0;
        for (int i = 1; i < ng; i++) nd += sd_tok_decode(t, got[i - 1], got[i], dec + nd, sizeof dec - nd, NULL);
        CHECKF(nd == strlen(s) && !memcmp(dec, s, nd), "decode of \"%s\" gave \"%.*s\"", s, (int)nd, dec);
        free(got);
    }
    /* the same tokenizer from the GGUF conversion encodes identically and is compatible */
    const char *gp = shared_path("models/aidreams260K.gguf");
    if (gp) {
        sd_tokenizer *g = tok_load_path(gp);
        REQUIRE(g);
        CHECKF(sd_tok_compatible(t, g, &err) == 0, "%s", err.msg);
        for (size_t k = 0; k < sizeof k_texts / sizeof k_texts[0]; k++) {
            int32_t *a = NULL, *b = NULL;
            int na = 0, nb = 0;
            REQUIRE(sd_tok_encode(t, k_texts[k], strlen(k_texts[k]), SD_TOK_DEFAULT_SPECIALS, &a, &na, &err) == 0);
            REQUIRE(sd_tok_encode(g, k_texts[k], strlen(k_texts[k]), SD_TOK_DEFAULT_SPECIALS, &b, &nb, &err) == 0);
            CHECKF(ids_equal(a, na, b, nb), "bin vs gguf encode of \"%s\"", k_texts[k]);
            free(a);
            free(b);
        }
        sd_tok_free(g);
    }
    sd_tok_free(t);
}

/* Vocabulary size from the tokenizer file alone (vocab_size <= 0); truncated files fail cleanly. */
static void test_llama2c_malformed(void) {
    const char *tp = shared_path("models/tok512.bin");
    if (!tp) SKIP("../shared/models/tok512.bin not found");
    sd_err err = {{0}};
    sd_tokenizer *t = NULL;
    REQUIRE(sd_tok_from_llama2c(tp, 0, &t, &err) == 0);
    CHECK_EQ_INT(sd_tok_vocab_size(t), 512);
    sd_tok_free(t);
    t = NULL;
    CHECK(sd_tok_from_llama2c(tp, 600, &t, &err) == -1 && t == NULL);
    CHECKF(strstr(err.msg, "truncated") && strstr(err.msg, "tok512.bin"), "%s", err.msg);
    size_t n;
    char *b = read_all(tp, &n);
    REQUIRE(b);
    const char *cut = tmp_path("cut.bin");
    REQUIRE(write_all(cut, b, n / 2) == 0);
    CHECK(sd_tok_from_llama2c(cut, 512, &t, &err) == -1);
    CHECKF(strstr(err.msg, "cut.bin") && strstr(err.msg, "truncated"), "%s", err.msg);
    int32_t bad = -5;
    memcpy(b, &bad, 4); /* max_token_length */
    REQUIRE(write_all(cut, b, n) == 0);
    CHECK(sd_tok_from_llama2c(cut, 512, &t, &err) == -1);
    CHECKF(strstr(err.msg, "max_token_length"), "%s", err.msg);
    CHECK(sd_tok_from_llama2c(tmp_path("missing.bin"), 512, &t, &err) == -1);
    CHECKF(strstr(err.msg, "missing.bin"), "%s", err.msg);
    free(b);
}

/* ---------------------------------------------------------------- streaming decoder */

/* The bytes a valid UTF-8 sequence may have at position k (Unicode table 3-7), by lead byte. */
static bool utf8_ok_at(unsigned char lead, int k, unsigned char c) {
    if (k == 1) {
        if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
        if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
        if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
        if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
    }
    return c >= 0x80 && c <= 0xBF;
}

static int utf8_need(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
}

/* Reference: invalid input replaced by U+FFFD per maximal invalid subpart. Returns the output length. */
static size_t sanitize(const unsigned char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int need = utf8_need(s[i]), k = 1;
        if (need == 0) { memcpy(out + o, "\xef\xbf\xbd", 3); o += 3; i++; continue; }
        while (k < need && i + (size_t)k < n && utf8_ok_at(s[i], k, s[i + k])) k++;
        if (k == need) memcpy(out + o, s + i, (size_t)k), o += (size_t)k;
        else memcpy(out + o, "\xef\xbf\xbd", 3), o += 3;
        i += (size_t)k;
    }
    return o;
}

static bool valid_utf8(const char *s, size_t n) {
    char tmp[8192];
    return n <= 2048 && sanitize((const unsigned char *)s, n, tmp) == n && !memcmp(tmp, s, n);
}

/* Random token sequences (many byte tokens, so characters split across tokens, plus broken sequences):
 * every chunk is valid UTF-8 and the chunks concatenate to the sanitized whole decode. */
static void test_detok_stream(void) {
    const char *path = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!path) SKIP("../shared/vocab/ggml-vocab-llama-spm.gguf not found");
    sd_tokenizer *t = tok_load_path(path);
    REQUIRE(t);
    int nv = sd_tok_vocab_size(t);
    /* byte tokens <0xXX> are ids 3..258 in this vocabulary: checked rather than assumed */
    REQUIRE(strcmp(sd_tok_text(t, 3 + 0xE2), "<0xE2>") == 0);
    static const unsigned char multibyte[][4] = {
        {0xE2, 0x82, 0xAC, 0}, {0xF0, 0x9F, 0x98, 0x80}, {0xC3, 0xA9, 0, 0}, {0xE6, 0x97, 0xA5, 0}};
    for (int iter = 0; iter < 300; iter++) {
        int32_t ids[64];
        int n = 0;
        int len = 1 + (int)(rand_u32() % 40);
        ids[n++] = rand_u32() % 4 == 0 ? 1 : (int32_t)(3 + rand_u32() % 256);
        while (n < len) {
            uint32_t r = rand_u32() % 10;
            if (r < 4) ids[n++] = (int32_t)(rand_u32() % (uint32_t)nv);
            else if (r < 6) ids[n++] = (int32_t)(3 + rand_u32() % 256);
            else { /* a whole multi-byte character in byte tokens, sometimes cut short */
                const unsigned char *m = multibyte[rand_u32() % 4];
                int ml = m[3] ? 4 : m[2] ? 3 : 2;
                if (rand_u32() % 4 == 0) ml--;
                for (int k = 0; k < ml && n < 64; k++) ids[n++] = 3 + m[k];
            }
        }
        unsigned char raw[65536];
        size_t nraw = 0;
        for (int i = 0; i < n; i++)
            nraw += sd_tok_decode(t, i ? ids[i - 1] : -1, ids[i], (char *)raw + nraw, sizeof raw - nraw, NULL);
        char want[200000], got[200000];
        size_t nwant = sanitize(raw, nraw, want), ngot = 0;
        sd_detok d;
        sd_detok_init(&d, t, -1);
        bool chunks_ok = true;
        for (int i = 0; i <= n; i++) {
            char chunk[SD_TOK_MAX_PIECE + 16];
            size_t c = i < n ? sd_detok_push(&d, ids[i], chunk, sizeof chunk) : sd_detok_flush(&d, chunk, sizeof chunk);
            chunks_ok &= valid_utf8(chunk, c) && chunk[c] == '\0';
            memcpy(got + ngot, chunk, c);
            ngot += c;
        }
        CHECKF(chunks_ok, "iteration %d: a chunk is not valid UTF-8", iter);
        CHECKF(ngot == nwant && !memcmp(got, want, ngot), "iteration %d: chunks differ from the whole decode", iter);
        if (t_failed_checks) break;
    }
    sd_tok_free(t);
}

/* A character split over byte tokens comes out whole, once complete; after BOS the leading space goes. */
static void test_detok_basic(void) {
    const char *path = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!path) SKIP("../shared/vocab/ggml-vocab-llama-spm.gguf not found");
    sd_tokenizer *t = tok_load_path(path);
    REQUIRE(t);
    sd_detok d;
    char out[SD_TOK_MAX_PIECE + 16];
    sd_detok_init(&d, t, -1);
    CHECK_EQ_INT(sd_detok_push(&d, 3 + 0xF0, out, sizeof out), 0);
    CHECK_EQ_INT(sd_detok_push(&d, 3 + 0x9F, out, sizeof out), 0);
    CHECK_EQ_INT(sd_detok_push(&d, 3 + 0x98, out, sizeof out), 0);
    CHECK_EQ_INT(sd_detok_push(&d, 3 + 0x80, out, sizeof out), 4);
    CHECK_STR_EQ(out, "\xf0\x9f\x98\x80");
    CHECK_EQ_INT(sd_detok_push(&d, 3 + 0xE2, out, sizeof out), 0);
    CHECK_EQ_INT(sd_detok_flush(&d, out, sizeof out), 3);
    CHECK_STR_EQ(out, "\xef\xbf\xbd");
    int32_t *ids = NULL;
    int n = 0;
    sd_err err = {{0}};
    REQUIRE(sd_tok_encode(t, "Hello world", 11, SD_TOK_DEFAULT_SPECIALS, &ids, &n, &err) == 0);
    REQUIRE(n == 3);
    sd_detok_init(&d, t, -1);
    char all[64] = "";
    for (int i = 0; i < n; i++) {
        sd_detok_push(&d, ids[i], out, sizeof out);
        strcat(all, out);
    }
    CHECK_STR_EQ(all, "Hello world");
    /* without BOS before it, the piece keeps its space */
    CHECK_EQ_INT(sd_tok_decode(t, -1, ids[1], out, sizeof out, NULL), 6);
    size_t full = 0;
    CHECK_EQ_INT(sd_tok_decode(t, -1, ids[1], out, 2, &full), 2); /* truncated to cap */
    CHECK_EQ_INT(full, 6);
    CHECK_EQ_INT(sd_tok_decode(t, -1, 1, out, sizeof out, NULL), 0); /* control: nothing */
    CHECK_EQ_INT(sd_tok_decode(t, -1, 999999, out, sizeof out, NULL), 0);
    free(ids);
    sd_tok_free(t);
}

/* ---------------------------------------------------------------- special tokens, EOG */

static int encode_list(const sd_tokenizer *t, const char *s, int flags, int32_t *ids, int cap) {
    int32_t *v = NULL;
    int n = 0;
    sd_err err = {{0}};
    if (sd_tok_encode(t, s, strlen(s), flags, &v, &n, &err)) return -1;
    if (n > cap) n = cap;
    memcpy(ids, v, (size_t)n * sizeof *ids);
    free(v);
    return n;
}

static bool contains(const int32_t *ids, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

static void test_special_parsing(void) {
    const char *path = shared_path("vocab/ggml-vocab-phi-3.gguf");
    if (!path) SKIP("../shared/vocab/ggml-vocab-phi-3.gguf not found");
    sd_tokenizer *t = tok_load_path(path);
    REQUIRE(t);
    int32_t user = -1, end = -1, a[256], b[256], c[256];
    for (int i = 0; i < sd_tok_vocab_size(t); i++) {
        if (!strcmp(sd_tok_text(t, i), "<|user|>")) user = i;
        if (!strcmp(sd_tok_text(t, i), "<|end|>")) end = i;
    }
    REQUIRE(user >= 0 && end >= 0);
    const char *s = "<|user|>\nHi there<|end|>";
    int n_on = encode_list(t, s, SD_TOK_PARSE_SPECIAL, a, 256);
    int n_off = encode_list(t, s, 0, b, 256);
    REQUIRE(n_on > 2 && n_off > 2);
    CHECK_EQ_INT(a[0], user);
    CHECK_EQ_INT(a[n_on - 1], end);
    /* between the specials: the plain encoding of the text in between, space prefix included; Phi-3's
     * <|user|> swallows the whitespace after it (Hugging Face's rstrip, which llama.cpp sets by model name) */
    int nc = encode_list(t, "Hi there", 0, c, 256);
    CHECK(n_on == nc + 2 && !memcmp(a + 1, c, (size_t)nc * sizeof *c));
    /* "</s> <|endoftext|>": </s> swallows the space, so no lone "▁" between; <|endoftext|> does not */
    int n_pair = encode_list(t, "</s> <|endoftext|>", SD_TOK_PARSE_SPECIAL, a, 256);
    CHECK(n_pair == 2 && a[0] == 2 && a[1] == sd_tok_eos(t));
    int n_keep = encode_list(t, "<|endoftext|> x", SD_TOK_PARSE_SPECIAL, a, 256);
    int n_x = encode_list(t, " x", 0, c, 256);
    CHECK(n_keep == n_x + 1 && !memcmp(a + 1, c, (size_t)n_x * sizeof *c));
    CHECK(!contains(b, n_off, user) && !contains(b, n_off, end));
    CHECK(n_off > n_on);
    /* longest match first: "<|endoftext|>" is not read as "<|end|>" + rest */
    int n_eot = encode_list(t, "<|endoftext|>", SD_TOK_PARSE_SPECIAL, a, 256);
    CHECK(n_eot == 1 && a[0] == sd_tok_eos(t));
    sd_tok_free(t);

    const char *lp = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!lp) return;
    t = tok_load_path(lp);
    REQUIRE(t);
    int n1 = encode_list(t, "x</s>", SD_TOK_PARSE_SPECIAL, a, 256);
    CHECK(n1 >= 2 && a[n1 - 1] == 2);
    int n2 = encode_list(t, "x</s>", 0, b, 256);
    CHECK(n2 >= 2 && !contains(b, n2, 2));
    int n3 = encode_list(t, "x", SD_TOK_ADD_BOS | SD_TOK_ADD_EOS, c, 256);
    CHECK(n3 >= 3 && c[0] == 1 && c[n3 - 1] == 2);
    CHECK_EQ_INT(encode_list(t, "", SD_TOK_DEFAULT_SPECIALS, c, 256), 1); /* BOS only */
    CHECK_EQ_INT(encode_list(t, "", 0, c, 256), 0);
    sd_tok_free(t);
}

static void test_eog(void) {
    const char *pp = shared_path("vocab/ggml-vocab-phi-3.gguf"), *lp = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!pp || !lp) SKIP("../shared/vocab phi-3 / llama-spm not found");
    sd_tokenizer *p = tok_load_path(pp), *l = tok_load_path(lp);
    REQUIRE(p && l);
    for (int i = 0; i < sd_tok_vocab_size(p); i++) {
        const char *x = sd_tok_text(p, i);
        bool want = !strcmp(x, "<|endoftext|>") || !strcmp(x, "<|end|>");
        CHECKF(sd_tok_is_eog(p, i) == want, "phi-3 token %d \"%s\"", i, x);
    }
    CHECK(sd_tok_is_eog(l, 2) && !sd_tok_is_eog(l, 1) && !sd_tok_is_eog(l, 0) && !sd_tok_is_eog(l, 100));
    CHECK(!sd_tok_is_eog(l, -1) && !sd_tok_is_eog(l, 1 << 30));
    sd_tok_free(p);
    sd_tok_free(l);
}

/* ---------------------------------------------------------------- compatibility */

static void test_compatible(void) {
    const char *a = shared_path("models/aidreams260K.gguf"), *d = shared_path("models/aidreams-draft.gguf");
    const char *l = shared_path("vocab/ggml-vocab-llama-spm.gguf"), *p = shared_path("vocab/ggml-vocab-phi-3.gguf");
    if (!a || !d || !l || !p) SKIP("../shared models or vocab files not found");
    sd_tokenizer *ta = tok_load_path(a), *td = tok_load_path(d), *tl = tok_load_path(l), *tp = tok_load_path(p);
    REQUIRE(ta && td && tl && tp);
    sd_err err = {{0}};
    CHECKF(sd_tok_compatible(td, ta, &err) == 0, "%s", err.msg);
    /* llama-spm and phi-3 share all 32000 texts; they differ in the end-of-sequence token */
    CHECK(sd_tok_compatible(tl, tp, &err) == -1);
    CHECK_STR_EQ(err.msg, "draft and target special tokens differ: eos is 2 \"</s>\" in the draft, "
                          "32000 \"<|endoftext|>\" in the target");
    /* aidreams (512 tokens) against llama-spm: token 259 is where they part */
    CHECK(sd_tok_compatible(td, tl, &err) == -1);
    char want[256];
    snprintf(want, sizeof want, "draft and target vocabularies differ at token 259: \"%s\" vs \"%s\"",
             sd_tok_text(td, 259), sd_tok_text(tl, 259));
    CHECK_STR_EQ(err.msg, want);
    CHECK(strcmp(sd_tok_text(td, 259), sd_tok_text(tl, 259)) != 0);
    for (int i = 0; i < 259; i++) CHECK_STR_EQ(sd_tok_text(td, i), sd_tok_text(tl, i));
    sd_tok_free(ta);
    sd_tok_free(td);
    sd_tok_free(tl);
    sd_tok_free(tp);
}

/* ---------------------------------------------------------------- malformed metadata */

/* Writes a small SPM vocabulary GGUF; which parts are broken is chosen by `bad`. */
enum { OK_FILE, NO_TOKENS, SHORT_SCORES, BAD_BOS, BAD_MODEL, BAD_TYPE, NO_MODEL };

static int write_vocab(const char *path, int bad, sd_err *err) {
    const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab"};
    float scores[] = {0, 0, 0, -1, -2, -3, -0.5f, -0.25f};
    int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1};
    gguf_writer *w = gguf_writer_new(32);
    if (!w) return -1;
    gguf_w_str(w, "general.architecture", "llama");
    if (bad != NO_MODEL) gguf_w_str(w, "tokenizer.ggml.model", bad == BAD_MODEL ? "wordpiece" : "llama");
    if (bad != NO_TOKENS) gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 8);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, bad == SHORT_SCORES ? 7 : 8);
    if (bad == BAD_TYPE) types[5] = 9;
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, 8);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", bad == BAD_BOS ? 8 : 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_u32(w, "tokenizer.ggml.padding_token_id", 0xFFFFFFFFu); /* "none", as converters write it */
    int rc = gguf_writer_save(w, path, err);
    gguf_writer_free(w);
    return rc;
}

static void test_malformed_metadata(void) {
    struct { int bad; const char *want; } cases[] = {
        {NO_TOKENS, "tokenizer.ggml.tokens is missing"},
        {SHORT_SCORES, "tokenizer.ggml.scores has 7 entries, expected 8"},
        {BAD_BOS, "tokenizer.ggml.bos_token_id = 8 is out of range"},
        {BAD_MODEL, "tokenizer.ggml.model 'wordpiece' is not supported"},
        {BAD_TYPE, "tokenizer.ggml.token_type[5] = 9"},
        {NO_MODEL, "tokenizer.ggml.model"},
    };
    sd_err err = {{0}};
    const char *path = tmp_path("vocab.gguf");
    /* the well-formed file loads and encodes by score */
    REQUIRE(write_vocab(path, OK_FILE, &err) == 0);
    sd_tokenizer *t = tok_load_path(path);
    REQUIRE(t);
    int32_t ids[16];
    int n = encode_list(t, "ab a", 0, ids, 16);
    /* "▁ab▁a": "ab" (-0.25) merges before "▁a" (-0.5); then "▁", "ab", "▁a" */
    CHECK(n == 3 && ids[0] == 3 && ids[1] == 7 && ids[2] == 6);
    n = encode_list(t, "c", 0, ids, 16); /* no byte tokens: the unknown token */
    CHECK(n == 2 && ids[0] == 3 && ids[1] == 0);
    sd_tok_free(t);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        REQUIRE(write_vocab(path, cases[k].bad, &err) == 0);
        gguf_file *f = NULL;
        REQUIRE(gguf_open(path, &f, &err) == 0);
        t = NULL;
        CHECK(sd_tok_from_gguf(f, &t, &err) == -1 && t == NULL);
        CHECKF(strstr(err.msg, cases[k].want) && strstr(err.msg, "vocab.gguf"), "case %zu: %s", k, err.msg);
        gguf_close(f);
    }
}

/* ---------------------------------------------------------------- speed / robustness */

/* Long inputs: a 100 KB run of one letter and 200 KB of mixed text encode quickly (the merge loop is
 * not quadratic) and decode back; arbitrary bytes never crash. */
static void test_long_and_garbage(void) {
    const char *path = shared_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!path) SKIP("../shared/vocab/ggml-vocab-llama-spm.gguf not found");
    sd_tokenizer *t = tok_load_path(path);
    REQUIRE(t);
    size_t n = 200000;
    char *s = malloc(n + 1);
    REQUIRE(s);
    memset(s, 'a', 100000);
    s[100000] = '\0';
    clock_t c0 = clock();
    int32_t *ids = NULL;
    int ni = 0;
    sd_err err = {{0}};
    REQUIRE(sd_tok_encode(t, s, 100000, SD_TOK_ADD_BOS, &ids, &ni, &err) == 0);
    CHECK(ni > 1 && ni < 100000 / 2);
    size_t nd = 0;
    char *dec = malloc(n * 2);
    for (int i = 1; i < ni; i++) nd += sd_tok_decode(t, ids[i - 1], ids[i], dec + nd, n * 2 - nd, NULL);
    CHECK(nd == 100000 && !memcmp(dec, s, nd));
    free(ids);
    const char *words[] = {"the ", "quick ", "\xc3\xa9t\xc3\xa9 ", "x = f(y);\n", "\xe6\x97\xa5\xe6\x9c\xac ", "\t"};
    size_t o = 0;
    while (o + 16 < n) {
        const char *w = words[rand_u32() % 6];
        memcpy(s + o, w, strlen(w));
        o += strlen(w);
    }
    REQUIRE(sd_tok_encode(t, s, o, SD_TOK_ADD_BOS, &ids, &ni, &err) == 0);
    nd = 0;
    for (int i = 1; i < ni; i++) nd += sd_tok_decode(t, ids[i - 1], ids[i], dec + nd, n * 2 - nd, NULL);
    CHECK(nd == o && !memcmp(dec, s, nd));
    free(ids);
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    CHECKF(secs < 5.0, "300 KB took %.2f s", secs);
    for (int iter = 0; iter < 200; iter++) {
        size_t len = rand_u32() % 64;
        for (size_t k = 0; k < len; k++) s[k] = (char)(rand_u32() & 0xFF);
        REQUIRE(sd_tok_encode(t, s, len, SD_TOK_PARSE_SPECIAL, &ids, &ni, &err) == 0);
        for (int i = 0; i < ni; i++) CHECK(ids[i] >= 0 && ids[i] < sd_tok_vocab_size(t));
        free(ids);
    }
    free(dec);
    free(s);
    sd_tok_free(t);
}

int main(void) {
    if (make_tmpdir("specd-test-tok-")) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_vocab_llama_spm);
    RUN(test_vocab_phi3);
    RUN(test_cli_tokenize);
    RUN(test_llama2c);
    RUN(test_llama2c_malformed);
    RUN(test_detok_basic);
    RUN(test_detok_stream);
    RUN(test_special_parsing);
    RUN(test_eog);
    RUN(test_compatible);
    RUN(test_malformed_metadata);
    RUN(test_long_and_garbage);
    remove_tmpdir();
    return TEST_DONE();
}
