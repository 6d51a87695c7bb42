/* tokenizer/unicode: general categories and White_Space from the generated tables (spot checks in several
 * scripts, then every entry of the system's UnicodeData.txt), UTF-8 decoding edge cases, the GPT-2 byte
 * mapping. */
#include <stdint.h>

#include "tokenizer/unicode.h"
#include "tests/test.h"

static int cat_of(const char *name) {
    for (int c = 0; c < SD_UC_COUNT; c++)
        if (!strcmp(sd_uni_cat_name(c), name)) return c;
    return -1;
}

#define CHECK_CAT(cp, name) CHECKF(sd_uni_cat(cp) == cat_of(name), "U+%04X is %s, expected %s", (unsigned)(cp), \
                                   sd_uni_cat_name(sd_uni_cat(cp)), name)

static void test_spot_categories(void) {
    CHECK_CAT('A', "Lu"); CHECK_CAT('z', "Ll"); CHECK_CAT(0x01C5, "Lt"); CHECK_CAT(0x02B0, "Lm");
    CHECK_CAT(0x00E9, "Ll"); CHECK_CAT(0x0416, "Lu");  /* é, Ж */
    CHECK_CAT(0x05D0, "Lo"); CHECK_CAT(0x0627, "Lo");  /* Hebrew alef, Arabic alef */
    CHECK_CAT(0x0915, "Lo"); CHECK_CAT(0x0E01, "Lo");  /* Devanagari ka, Thai ko kai */
    CHECK_CAT(0x4E00, "Lo"); CHECK_CAT(0x9FA5, "Lo"); CHECK_CAT(0x20000, "Lo"); /* CJK, ext. B (a range) */
    CHECK_CAT(0xAC00, "Lo"); CHECK_CAT(0xD7A3, "Lo"); CHECK_CAT(0xD7A4, "Cn");  /* Hangul range end */
    CHECK_CAT(0x0301, "Mn"); CHECK_CAT(0x0903, "Mc"); CHECK_CAT(0x20DD, "Me"); CHECK_CAT(0x0E31, "Mn");
    CHECK_CAT('7', "Nd"); CHECK_CAT(0x0663, "Nd"); CHECK_CAT(0x0966, "Nd"); CHECK_CAT(0xFF13, "Nd");
    CHECK_CAT(0x2160, "Nl"); CHECK_CAT(0x00BD, "No"); CHECK_CAT(0x00B2, "No");
    CHECK_CAT('_', "Pc"); CHECK_CAT('-', "Pd"); CHECK_CAT('(', "Ps"); CHECK_CAT(')', "Pe");
    CHECK_CAT(0x00AB, "Pi"); CHECK_CAT(0x00BB, "Pf"); CHECK_CAT('!', "Po"); CHECK_CAT(0x3002, "Po");
    CHECK_CAT('+', "Sm"); CHECK_CAT('$', "Sc"); CHECK_CAT('^', "Sk"); CHECK_CAT(0x00A9, "So");
    CHECK_CAT(0x1F600, "So"); CHECK_CAT(0x1F999, "So");
    CHECK_CAT(' ', "Zs"); CHECK_CAT(0x3000, "Zs"); CHECK_CAT(0x2028, "Zl"); CHECK_CAT(0x2029, "Zp");
    CHECK_CAT('\n', "Cc"); CHECK_CAT(0x200B, "Cf"); CHECK_CAT(0xD800, "Cs"); CHECK_CAT(0xE000, "Co");
    CHECK_CAT(0x0378, "Cn"); CHECK_CAT(0x10FFFF, "Cn"); CHECK_CAT(0x110000, "Cn"); CHECK_CAT(0xFFFFFFFFu, "Cn");

    unsigned f = sd_uni_flags(0x0416);
    CHECK((f & SD_UF_L) && (f & SD_UF_LU) && !(f & SD_UF_LL));
    CHECK(sd_uni_flags(0x0301) & SD_UF_M);
    CHECK(sd_uni_flags(0x2160) & SD_UF_N);
    CHECK(sd_uni_flags(0x3002) & SD_UF_P);
    CHECK(sd_uni_flags('$') & SD_UF_S);
    CHECK(sd_uni_flags(0xE000) & SD_UF_C);
}

static void test_white_space(void) {
    const uint32_t yes[] = {'\t', '\n', 0x0B, 0x0C, '\r', ' ', 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028,
                            0x2029, 0x202F, 0x205F, 0x3000};
    const uint32_t no[] = {0, 0x08, 0x0E, 'a', 0x1F, 0x200B, 0x180E, 0xFEFF, 0x2060, 0x10FFFF};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        CHECKF(sd_uni_is_space(yes[i]), "U+%04X should be White_Space", (unsigned)yes[i]);
        CHECK(sd_uni_flags(yes[i]) & SD_UF_SPACE);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        CHECKF(!sd_uni_is_space(no[i]) && !(sd_uni_flags(no[i]) & SD_UF_SPACE), "U+%04X is not White_Space",
               (unsigned)no[i]);
}

/* Every code point UnicodeData.txt lists (ranges "<..., First>"/"<..., Last>" included) has the category
 * the file gives, and code points it does not list are Cn. */
static void test_against_unicodedata(void) {
    const char *path = "/usr/share/unicode/UnicodeData.txt";
    FILE *f = fopen(path, "r");
    if (!f) SKIP("%s missing (Debian package unicode-data)", path);
    static unsigned char listed[0x110000];
    memset(listed, 0, sizeof listed);
    char line[512];
    unsigned first = 0, n_lines = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        char *name = strchr(line, ';'), *gc = name ? strchr(name + 1, ';') : NULL;
        if (!gc) continue;
        unsigned cp = (unsigned)strtoul(line, NULL, 16);
        char cat[3] = {gc[1], gc[2], 0};
        int want = cat_of(cat);
        unsigned lo = cp;
        if (strstr(name, ", First>")) { first = cp; continue; }
        if (strstr(name, ", Last>")) lo = first;
        for (unsigned c = lo; c <= cp; c++) {
            listed[c] = 1;
            if (sd_uni_cat(c) != want && bad++ < 10)
                CHECKF(0, "U+%04X: table says %s, UnicodeData %s", c, sd_uni_cat_name(sd_uni_cat(c)), cat);
        }
        n_lines++;
    }
    fclose(f);
    CHECK(n_lines > 30000);
    for (unsigned c = 0; c < 0x110000; c++)
        if (!listed[c] && sd_uni_cat(c) != SD_UC_Cn && bad++ < 10)
            CHECKF(0, "U+%04X is not in UnicodeData but has category %s", c, sd_uni_cat_name(sd_uni_cat(c)));
    CHECK_EQ_INT(bad, 0);
}

static size_t dec(const char *s, size_t n, uint32_t *cp, int *valid) {
    return sd_utf8_decode((const unsigned char *)s, n, cp, valid);
}

static void test_utf8_decode(void) {
    uint32_t cp;
    int v;
    CHECK(dec("A", 1, &cp, &v) == 1 && cp == 'A' && v);
    CHECK(dec("\0", 1, &cp, &v) == 1 && cp == 0 && v);
    CHECK(dec("\xC3\xA9", 2, &cp, &v) == 2 && cp == 0xE9 && v);
    CHECK(dec("\xE2\x82\xAC", 3, &cp, &v) == 3 && cp == 0x20AC && v);
    CHECK(dec("\xF0\x9F\x98\x80", 4, &cp, &v) == 4 && cp == 0x1F600 && v);
    CHECK(dec("\xF4\x8F\xBF\xBF", 4, &cp, &v) == 4 && cp == 0x10FFFF && v);
    CHECK(dec("\xEF\xBF\xBD", 3, &cp, &v) == 3 && cp == 0xFFFD && v);
    /* invalid: one byte consumed, U+FFFD, marked invalid */
    const char *bad[] = {
        "\x80",             /* lone continuation */
        "\xBF",
        "\xC0\x80",         /* overlong NUL */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\x80",     /* overlong 3-byte */
        "\xE0\x9F\xBF",     /* overlong (< U+0800) */
        "\xF0\x80\x80\x80", /* overlong 4-byte */
        "\xF0\x8F\xBF\xBF", /* overlong (< U+10000) */
        "\xED\xA0\x80",     /* surrogate U+D800 */
        "\xED\xBF\xBF",     /* surrogate U+DFFF */
        "\xF4\x90\x80\x80", /* U+110000 */
        "\xF5\x80\x80\x80", /* bad lead */
        "\xFF", "\xFE",
        "\xC3\x28",         /* continuation missing */
        "\xE2\x82\x28",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t n = strlen(bad[i]);
        CHECKF(dec(bad[i], n, &cp, &v) == 1 && cp == SD_UTF8_REPLACEMENT && !v, "case %zu", i);
        CHECKF(!sd_utf8_valid(bad[i], n), "case %zu", i); /* the validator is the decoder */
    }
    /* sanitize: invalid bytes (a cut character too) become '?', valid ones stay */
    char msg[] = "ok \xc3\xa9 \xff x \xe2\x82";
    sd_utf8_sanitize(msg);
    CHECK_STR_EQ(msg, "ok \xc3\xa9 ? x ??");
    CHECK(sd_utf8_lead_len('A') == 1 && sd_utf8_lead_len(0xC2) == 2 && sd_utf8_lead_len(0xEF) == 3);
    CHECK(sd_utf8_lead_len(0xF4) == 4 && !sd_utf8_lead_len(0x80) && !sd_utf8_lead_len(0xC1) && !sd_utf8_lead_len(0xF5));
    /* truncated at the end of the buffer: never reads past len */
    CHECK(dec("\xE2\x82", 2, &cp, &v) == 1 && !v);
    CHECK(dec("\xF0\x9F\x98", 3, &cp, &v) == 1 && !v);
    CHECK(dec("\xC3", 1, &cp, &v) == 1 && !v);
    /* a decode of random bytes always advances and stays in bounds */
    unsigned char buf[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) { x = x * 1103515245u + 12345u; buf[i] = (unsigned char)(x >> 16); }
    size_t pos = 0, steps = 0;
    while (pos < sizeof buf) {
        size_t k = sd_utf8_decode(buf + pos, sizeof buf - pos, &cp, &v);
        CHECK(k >= 1 && k <= 4 && pos + k <= sizeof buf);
        pos += k;
        steps++;
    }
    CHECK(pos == sizeof buf && steps > 0);
}

static void test_utf8_roundtrip(void) {
    unsigned bad = 0;
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        char b[4];
        int n = sd_utf8_encode(c, b);
        uint32_t back;
        int v;
        size_t k = sd_utf8_decode((const unsigned char *)b, (size_t)n, &back, &v);
        int want = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
        if ((n != want || k != (size_t)n || back != c || !v) && bad++ < 5) CHECKF(0, "U+%04X", (unsigned)c);
    }
    CHECK_EQ_INT(bad, 0);
    char b[4];
    CHECK(sd_utf8_encode(0x110000, b) == 0);
}

static void test_byte_mapping(void) {
    static int seen[0x200];
    memset(seen, 0, sizeof seen);
    for (int b = 0; b < 256; b++) {
        uint32_t cp = sd_uni_byte_to_cp((uint8_t)b);
        CHECK(cp < 0x200);
        if (cp >= 0x200) continue;
        CHECKF(!seen[cp], "byte %d maps to U+%04X twice", b, (unsigned)cp);
        seen[cp] = 1;
        CHECK_EQ_INT(sd_uni_cp_to_byte(cp), b);
        /* the stand-in is printable: a letter, number, punctuation or symbol, never space or control */
        CHECK(!(sd_uni_flags(cp) & (SD_UF_SPACE | SD_UF_C | SD_UF_Z)));
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        if (printable) CHECK_EQ_INT(cp, b);
        else CHECK(cp >= 0x100 && cp < 0x144);
    }
    CHECK_EQ_INT(sd_uni_byte_to_cp(' '), 0x120);  /* "Ġ" */
    CHECK_EQ_INT(sd_uni_byte_to_cp('\n'), 0x10A); /* "Ċ" */
    CHECK_EQ_INT(sd_uni_byte_to_cp('\t'), 0x109);
    CHECK_EQ_INT(sd_uni_byte_to_cp(0x7F), 0x121);
    CHECK_EQ_INT(sd_uni_byte_to_cp(0xAD), 0x143);
    CHECK_EQ_INT(sd_uni_cp_to_byte(0x144), -1);
    CHECK_EQ_INT(sd_uni_cp_to_byte(' '), -1);
    CHECK_EQ_INT(sd_uni_cp_to_byte(0xAD), -1);
    CHECK_EQ_INT(sd_uni_cp_to_byte(0x4E00), -1);
}

int main(void) {
    RUN(test_spot_categories);
    RUN(test_white_space);
    RUN(test_against_unicodedata);
    RUN(test_utf8_decode);
    RUN(test_utf8_roundtrip);
    RUN(test_byte_mapping);
    return TEST_DONE();
}
