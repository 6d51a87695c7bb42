/* tokenizer/pretok: each pre-tokenizer's splits on inputs where the regex semantics matter (alternation
 * order, backtracking of \s+(?!\S) and \s*[\r\n]+, \p{N}{1,3}, case-insensitive contractions, the
 * per-piece `$`), unknown names, and properties on random bytes: pieces are non-empty, in order, cover
 * the input exactly (invalid UTF-8 included), and long runs split in linear time. */
#include <stdint.h>
#include <time.h>

#include "tokenizer/pretok.h"
#include "tests/test.h"

/* The pieces of text joined with '|' (the inputs below contain no '|'). */
static const char *split(const char *name, const char *text) {
    static char buf[4096];
    sd_pretok_kind k;
    static sd_err err;
    if (sd_pretok_find(name, &k, &err)) return err.msg;
    sd_span *sp;
    size_t n;
    if (sd_pretok_split(k, text, strlen(text), &sp, &n, &err)) return err.msg;
    size_t o = 0;
    for (size_t i = 0; i < n && o + sp[i].len + 2 < sizeof buf; i++) {
        if (i) buf[o++] = '|';
        memcpy(buf + o, text + sp[i].off, sp[i].len);
        o += sp[i].len;
    }
    buf[o] = 0;
    free(sp);
    return buf;
}

static void test_gpt2(void) {
    CHECK_STR_EQ(split("gpt2", "Hello world"), "Hello| world");
    CHECK_STR_EQ(split("gpt-2", "  Hello"), " | Hello");
    CHECK_STR_EQ(split("gpt2", "I've 'told he's"), "I|'ve| '|told| he|'s");
    CHECK_STR_EQ(split("gpt2", "'RE 'Ve"), "'|RE| '|Ve");   /* case-sensitive contractions */
    CHECK_STR_EQ(split("gpt2", "x  "), "x|  ");             /* \s+(?!\S) at the end takes all */
    CHECK_STR_EQ(split("gpt2", "x   y"), "x|  | y");        /* ... and leaves one space to the word */
    CHECK_STR_EQ(split("gpt2", "\t\tx"), "\t|\t|x");        /* only ' ' joins a word */
    CHECK_STR_EQ(split("gpt2", "3333 3.3"), "3333| 3|.|3");
    CHECK_STR_EQ(split("gpt2", " ...!!x"), " ...!!|x");
    CHECK_STR_EQ(split("gpt2", "a\n\nb"), "a|\n|\n|b");
    CHECK_STR_EQ(split("mpt", "Führer"), "Führer");
    CHECK_STR_EQ(split("gpt2", "\xe4\xbd\xa0\xe5\xa5\xbd 123"), "\xe4\xbd\xa0\xe5\xa5\xbd| 123");
}

static void test_llama3_qwen2(void) {
    CHECK_STR_EQ(split("llama-bpe", "Hello world"), "Hello| world");
    CHECK_STR_EQ(split("llama-bpe", "\t\tx"), "\t|\tx");          /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    CHECK_STR_EQ(split("llama-bpe", "3333333"), "333|333|3");      /* \p{N}{1,3} */
    CHECK_STR_EQ(split("qwen2", "3333"), "3|3|3|3");              /* \p{N} */
    CHECK_STR_EQ(split("llama-bpe", "I'VE 'Re"), "I|'VE| '|Re");  /* (?i:...) contractions */
    CHECK_STR_EQ(split("llama-bpe", "x'\xc5\xbf"), "x|'\xc5\xbf"); /* 's matches 'ſ case-insensitively */
    CHECK_STR_EQ(split("llama-bpe", "a \n\n b"), "a| \n\n| b");   /* \s*[\r\n]+ ends at the last newline */
    CHECK_STR_EQ(split("llama-bpe", "Hello\n\n\nWorld"), "Hello|\n\n\n|World");
    CHECK_STR_EQ(split("llama-bpe", "x   y"), "x|  | y");
    CHECK_STR_EQ(split("llama-bpe", "x  "), "x|  ");
    CHECK_STR_EQ(split("llama-bpe", " ...\n\nx"), " ...\n\n|x");   /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    CHECK_STR_EQ(split("llama3", "x\n ("), "x|\n| (");
}

static void test_gpt4o(void) {
    CHECK_STR_EQ(split("gpt-4o", "HelloWorld"), "Hello|World");
    CHECK_STR_EQ(split("gpt-4o", "HTTPServer ABC"), "HTTPServer| ABC");
    CHECK_STR_EQ(split("gpt-4o", " don't"), " don't");            /* contraction joins the word */
    CHECK_STR_EQ(split("gpt-4o", "DON'T"), "DON'T");
    CHECK_STR_EQ(split("gpt-4o", "1234567"), "123|456|7");
    CHECK_STR_EQ(split("gpt-4o", "a/b ..//\nc"), "a|/b| ..//\n|c");
    CHECK_STR_EQ(split("gpt-4o", "e\xcc\x81t\xc3\xa9"), "e\xcc\x81t\xc3\xa9"); /* marks stay in the word */
}

static void test_deepseek(void) {
    CHECK_STR_EQ(split("deepseek-coder", "ab 12\r\n"), "ab| |1|2|\r|\n");
    CHECK_STR_EQ(split("deepseek-coder", "x = foo(1);"), "x| =| foo|(|1|);");
    CHECK_STR_EQ(split("deepseek-llm", "a  \n"), "a|  |\n");        /* \s+$ at the piece's end */
    CHECK_STR_EQ(split("deepseek-llm", "ab  12"), "ab|  |12");
    CHECK_STR_EQ(split("deepseek-llm", "\xe6\x88\x91\xe6\x83\xb3" "abc"), "\xe6\x88\x91\xe6\x83\xb3|abc");
}

static void test_falcon_starcoder_default(void) {
    CHECK_STR_EQ(split("falcon", "a,b 12345"), "a|,|b| |123|45"); /* [0-9]{3} splits " 12345" */
    CHECK_STR_EQ(split("falcon", "x+=`y`"), "x|+=`|y|`");
    CHECK_STR_EQ(split("starcoder", "ab 123"), "ab| |1|2|3");
    CHECK_STR_EQ(split("refact", "x1"), "x|1");
    CHECK_STR_EQ(split("smollm", " 42"), " |4|2");
    CHECK_STR_EQ(split("default", "1234 a.b"), "123|4| a|.|b");
    CHECK_STR_EQ(split(NULL, "x"), "x");
}

static void test_unknown_name(void) {
    sd_pretok_kind k;
    sd_err err = {{0}};
    CHECK(sd_pretok_find("no-such-pre", &k, &err) == -1);
    CHECK(strstr(err.msg, "no-such-pre") != NULL);
    CHECK(sd_pretok_find("", &k, NULL) == 0 && k == SD_PRETOK_DEFAULT);
    for (int i = 0; i < SD_PRETOK_COUNT; i++) {
        CHECK(sd_pretok_find(sd_pretok_name((sd_pretok_kind)i), &k, NULL) == 0);
        CHECK_EQ_INT(k, i);
    }
}

/* Random byte strings (biased towards interesting characters) for every pre-tokenizer: the pieces
 * tile the input exactly. */
static void test_random_cover(void) {
    static const char *atoms[] = {"a", "Z", " ", "  ", "\n", "\r\n", "\t", "'", "'s", "3", "12345", ".", ",",
                                  "é", "\xcc\x81", "\xe4\xbd\xa0", "\xf0\x9f\x98\x80", "\xe3\x80\x80", "\xff",
                                  "\xc3", "\xed\xa0\x80", "\xc2\x85", "$", "|", "`", "/", "\xd9\xa3", "\0"};
    uint32_t x = 7;
    char text[512];
    for (int iter = 0; iter < 400; iter++) {
        size_t len = 0;
        while (len < 400) {
            x = x * 1664525u + 1013904223u;
            const char *a = atoms[(x >> 8) % (sizeof atoms / sizeof *atoms)];
            size_t al = (x >> 8) % (sizeof atoms / sizeof *atoms) == sizeof atoms / sizeof *atoms - 1 ? 1 : strlen(a);
            memcpy(text + len, a, al);
            len += al;
        }
        for (int k = 0; k < SD_PRETOK_COUNT; k++) {
            sd_span *sp;
            size_t n, pos = 0;
            REQUIRE(sd_pretok_split((sd_pretok_kind)k, text, len, &sp, &n, NULL) == 0);
            int ok = 1;
            for (size_t i = 0; i < n; i++) {
                ok &= sp[i].off == pos && sp[i].len > 0;
                pos += sp[i].len;
            }
            CHECKF(ok && pos == len, "%s: pieces do not tile the input", sd_pretok_name((sd_pretok_kind)k));
            free(sp);
        }
    }
}

/* Long runs that regex engines handle quadratically (\s+$ failing at every start, \s+(?!\S) backing
 * off, one 200 KB word) stay linear: all together well under a second. */
static void test_long_runs(void) {
    size_t n = 200000;
    char *s = malloc(n + 3);
    REQUIRE(s);
    const char fill[] = {'a', ' ', '3', '.', '\n'};
    clock_t t0 = clock();
    for (size_t f = 0; f < sizeof fill; f++) {
        s[0] = 'x';
        memset(s + 1, fill[f], n);
        s[n + 1] = 'y';
        for (int k = 0; k < SD_PRETOK_COUNT; k++) {
            sd_span *sp;
            size_t np;
            REQUIRE(sd_pretok_split((sd_pretok_kind)k, s, n + 2, &sp, &np, NULL) == 0);
            CHECK(np >= 1);
            free(sp);
        }
    }
    double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECKF(sec < 5.0, "%.2f s", sec); /* quadratic behaviour would take minutes */
    free(s);
}

int main(void) {
    RUN(test_gpt2);
    RUN(test_llama3_qwen2);
    RUN(test_gpt4o);
    RUN(test_deepseek);
    RUN(test_falcon_starcoder_default);
    RUN(test_unknown_name);
    RUN(test_random_cover);
    RUN(test_long_runs);
    return TEST_DONE();
}
