/* Pre-tokenizers: each splitting regex of each supported tokenizer, written out as a matcher.
 *
 * The text is decoded once into code points with their category flags; a pre-tokenizer is a list of
 * stages, each splitting every piece of the previous stage. Within a piece, a stage scans like a regex
 * "find all": at position i the matcher returns the length of the match that starts there (0 = none);
 * unmatched characters between matches stay pieces of their own. Lookahead and `$` see the piece's
 * end, not the text's, as in Hugging Face tokenizers and llama.cpp where each regex runs per piece.
 *
 * The regexes (as the models' tokenizer.json files and llama.cpp's llama-vocab list them):
 *   gpt2:    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   llama3:  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *            \s*[\r\n]+|\s+(?!\S)|\s+            (qwen2: \p{N} instead of \p{N}{1,3})
 *   gpt-4o:  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|...|'d)?|
 *            [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|...|'d)?|
 *            \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   deepseek-llm:   [\r\n] / \s?[cased letters]+ / \s?[!-/:-~！-／：-～‘-‟　-。]+ / \s+$ / [一-龥ࠀ-一가-퟿]+ / \p{N}+
 *   deepseek-coder: [\r\n] / \s?\p{L}+ / \s?\p{P}+ / [一-龥ࠀ-一가-퟿]+ / \p{N}
 *   falcon:    [\p{P}\$\+<=>\^~\|`]+ / gpt2 / [0-9][0-9][0-9]
 *   starcoder: \p{N} / gpt2        (also refact, smollm, command-r, codeshell, exaone)
 *   default:   [\p{P}\$\+<=>\^~\|]+ / gpt2 / \p{N}+ / [0-9][0-9][0-9]
 * \s is the White_Space property; (?i) on these ASCII letters also matches U+017F (long s) for 's', as
 * Unicode simple case folding does. */
#include "tokenizer/pretok.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/unicode.h"

typedef struct ctx {
    const uint32_t *cp;
    const uint16_t *fl;
} ctx;

/* ---- character classes ---- */

typedef enum cls {
    C_L, C_N, C_P, C_DIGIT, C_DS_LETTER, C_DS_PUNCT, C_CJK, C_FALCON_P, C_DEFAULT_P
} cls;

typedef struct range { uint32_t lo, hi; } range;

/* DeepSeek LLM's letter class: the cased letters it lists (A-Za-zµÀ-ÖØ-öø-ƺ ... 𞤀-𞥃). */
static const range ds_letters[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
    {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D}, {0x37F, 0x37F},
    {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
    {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A},
    {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57},
    {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4},
    {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139},
    {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B},
    {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B},
    {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06},
    {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3},
    {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
/* DeepSeek LLM's punctuation class [!-/:-~！-／：-～‘-‟　-。] (sorted). */
static const range ds_punct[] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};
/* [一-龥ࠀ-一가-퟿]: U+0800..U+9FA5 (the first two ranges overlap at 一) and Hangul U+AC00..U+D7FF. */
static const range cjk[] = {{0x0800, 0x9FA5}, {0xAC00, 0xD7FF}};

static int in_ranges(const range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}
#define IN(tab, cp) in_ranges(tab, sizeof tab / sizeof tab[0], cp)

static int ascii_in(uint32_t cp, const char *set) { return cp < 128 && cp && strchr(set, (int)cp) != NULL; }

static int in_cls(const ctx *c, size_t i, cls k) {
    uint32_t cp = c->cp[i];
    unsigned f = c->fl[i];
    switch (k) {
    case C_L: return (f & SD_UF_L) != 0;
    case C_N: return (f & SD_UF_N) != 0;
    case C_P: return (f & SD_UF_P) != 0;
    case C_DIGIT: return cp >= '0' && cp <= '9';
    case C_DS_LETTER: return IN(ds_letters, cp);
    case C_DS_PUNCT: return IN(ds_punct, cp);
    case C_CJK: return IN(cjk, cp);
    case C_FALCON_P: return (f & SD_UF_P) || ascii_in(cp, "$+<=>^~|`");
    case C_DEFAULT_P: return (f & SD_UF_P) || ascii_in(cp, "$+<=>^~|");
    }
    return 0;
}

static int is_L(const ctx *c, size_t i) { return (c->fl[i] & SD_UF_L) != 0; }
static int is_N(const ctx *c, size_t i) { return (c->fl[i] & SD_UF_N) != 0; }
static int is_sp(const ctx *c, size_t i) { return (c->fl[i] & SD_UF_SPACE) != 0; }
static int is_crlf(const ctx *c, size_t i) { return c->cp[i] == '\r' || c->cp[i] == '\n'; }
/* [^\s\p{L}\p{N}] */
static int is_other(const ctx *c, size_t i) { return !(c->fl[i] & (SD_UF_L | SD_UF_N | SD_UF_SPACE)); }
/* gpt-4o's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}] */
static int is_up(const ctx *c, size_t i) { return (c->fl[i] & (SD_UF_LU | SD_UF_LT | SD_UF_LM | SD_UF_LO | SD_UF_M)) != 0; }
static int is_lo(const ctx *c, size_t i) { return (c->fl[i] & (SD_UF_LL | SD_UF_LM | SD_UF_LO | SD_UF_M)) != 0; }

typedef int (*pred)(const ctx *, size_t);
/* End of the run of characters satisfying p from i (i when none). */
static size_t run(const ctx *c, size_t i, size_t end, pred p) {
    while (i < end && p(c, i)) i++;
    return i;
}
static size_t run_cls(const ctx *c, size_t i, size_t end, cls k) {
    while (i < end && in_cls(c, i, k)) i++;
    return i;
}

/* ---- shared pieces of the regexes ---- */

static uint32_t fold(uint32_t cp) {
    if (cp >= 'A' && cp <= 'Z') return cp + 32;
    if (cp == 0x17F) return 's';  /* LATIN SMALL LETTER LONG S folds to s */
    return cp;
}

/* 's|'t|'re|'ve|'m|'ll|'d (icase: the (?i:...) form). Returns the match length or 0. */
static size_t contraction(const ctx *c, size_t i, size_t end, int icase) {
    if (i + 1 >= end || c->cp[i] != '\'') return 0;
    uint32_t a = c->cp[i + 1], b = i + 2 < end ? c->cp[i + 2] : 0;
    if (icase) { a = fold(a); b = fold(b); }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* The whitespace tail shared by the GPT-style regexes, at i (a space character):
 * [\s*[\r\n]+ when crlf_alt] | \s+(?!\S) | \s+ */
static size_t ws_tail(const ctx *c, size_t i, size_t end, int crlf_alt) {
    size_t e = run(c, i, end, is_sp);
    if (crlf_alt) {
        /* \s*[\r\n]+ : greedy \s* backs off to the last CR/LF of the run; the match ends after it */
        for (size_t p = e; p > i; p--)
            if (is_crlf(c, p - 1)) return p - i;
    }
    if (e == end) return e - i;      /* \s+ to the piece's end: nothing non-space follows */
    if (e - i >= 2) return e - i - 1; /* leave the last space to the following word */
    return 1;                         /* \s+ */
}

/* ---- the matchers: length of the match starting at i within [i, end), 0 when none. *skip may be set
 * past i + 1 when the matcher knows no match can start before it. ---- */

static size_t m_gpt2(const ctx *c, size_t i, size_t end, size_t *skip) {
    (void)skip;
    size_t k = contraction(c, i, end, 0);
    if (k) return k;
    /* " ?X+" for X in \p{L}, \p{N}, [^\s\p{L}\p{N}]: the space helps only when X follows it */
    size_t j = (c->cp[i] == ' ' && i + 1 < end) ? i + 1 : i;
    if (is_L(c, j)) return run(c, j, end, is_L) - i;
    if (is_N(c, j)) return run(c, j, end, is_N) - i;
    if (is_other(c, j)) return run(c, j, end, is_other) - i;
    if (is_sp(c, i)) return ws_tail(c, i, end, 0);
    return 0;
}

static size_t llama3_like(const ctx *c, size_t i, size_t end, size_t nmax) {
    size_t k = contraction(c, i, end, 1);
    if (k) return k;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (is_L(c, i)) return run(c, i, end, is_L) - i;
    if (!is_crlf(c, i) && !is_N(c, i) && i + 1 < end && is_L(c, i + 1)) return run(c, i + 1, end, is_L) - i;
    /* \p{N}{1,nmax} */
    if (is_N(c, i)) {
        size_t e = i;
        while (e < end && e - i < nmax && is_N(c, e)) e++;
        return e - i;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t j = (c->cp[i] == ' ' && i + 1 < end && is_other(c, i + 1)) ? i + 1 : i;
    if (is_other(c, j)) return run(c, run(c, j, end, is_other), end, is_crlf) - i;
    if (is_sp(c, i)) return ws_tail(c, i, end, 1);
    return 0;
}
static size_t m_llama3(const ctx *c, size_t i, size_t end, size_t *skip) { (void)skip; return llama3_like(c, i, end, 3); }
static size_t m_qwen2(const ctx *c, size_t i, size_t end, size_t *skip) { (void)skip; return llama3_like(c, i, end, 1); }

/* gpt-4o's words from s; returns the end or 0 when there is no match.
 * first form: U* W+ C?   second form: U+ W* C?   (U, W: is_up, is_lo; C: (?i) contraction) */
static size_t o200k_first(const ctx *c, size_t s, size_t end) {
    size_t q = run(c, s, end, is_up);
    for (size_t t = q;; t--) {  /* U* gives characters back one by one until W+ can match */
        size_t r = run(c, t, end, is_lo);
        if (r > t) return r + contraction(c, r, end, 1);
        if (t == s) return 0;
    }
}
static size_t o200k_second(const ctx *c, size_t s, size_t end) {
    if (s >= end || !is_up(c, s)) return 0;
    size_t r = run(c, run(c, s, end, is_up), end, is_lo);
    return r + contraction(c, r, end, 1);
}

static size_t m_gpt4o(const ctx *c, size_t i, size_t end, size_t *skip) {
    (void)skip;
    /* [^\r\n\p{L}\p{N}]? before either form: tried with the character first, then without */
    int a = !is_crlf(c, i) && !is_L(c, i) && !is_N(c, i) && i + 1 < end;
    size_t r;
    if (a && (r = o200k_first(c, i + 1, end))) return r - i;
    if ((r = o200k_first(c, i, end))) return r - i;
    if (a && (r = o200k_second(c, i + 1, end))) return r - i;
    if ((r = o200k_second(c, i, end))) return r - i;
    if (is_N(c, i)) {
        size_t e = i;
        while (e < end && e - i < 3 && is_N(c, e)) e++;
        return e - i;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n/]* */
    size_t j = (c->cp[i] == ' ' && i + 1 < end && is_other(c, i + 1)) ? i + 1 : i;
    if (is_other(c, j)) {
        size_t e = run(c, j, end, is_other);
        while (e < end && (is_crlf(c, e) || c->cp[e] == '/')) e++;
        return e - i;
    }
    if (is_sp(c, i)) return ws_tail(c, i, end, 1);
    return 0;
}

/* ---- generic stages ---- */

typedef enum stage_kind {
    S_GPT2, S_LLAMA3, S_QWEN2, S_GPT4O,
    S_CRLF,       /* [\r\n] */
    S_WS_OPT_RUN, /* \s?X+ */
    S_RUN,        /* X+ */
    S_ONE,        /* X */
    S_THREE,      /* XXX */
    S_WS_END,     /* \s+$ */
} stage_kind;

typedef struct stage {
    stage_kind kind;
    cls k;
} stage;

static size_t m_stage(const ctx *c, const stage *st, size_t i, size_t end, size_t *skip) {
    switch (st->kind) {
    case S_GPT2: return m_gpt2(c, i, end, skip);
    case S_LLAMA3: return m_llama3(c, i, end, skip);
    case S_QWEN2: return m_qwen2(c, i, end, skip);
    case S_GPT4O: return m_gpt4o(c, i, end, skip);
    case S_CRLF: return is_crlf(c, i) ? 1 : 0;
    case S_WS_OPT_RUN:
        if (is_sp(c, i) && i + 1 < end && in_cls(c, i + 1, st->k)) return run_cls(c, i + 1, end, st->k) - i;
        return run_cls(c, i, end, st->k) - i;
    case S_RUN: return run_cls(c, i, end, st->k) - i;
    case S_ONE: return in_cls(c, i, st->k) ? 1 : 0;
    case S_THREE:
        return i + 3 <= end && in_cls(c, i, st->k) && in_cls(c, i + 1, st->k) && in_cls(c, i + 2, st->k) ? 3 : 0;
    case S_WS_END: {
        size_t e = run(c, i, end, is_sp);
        if (e > i && e == end) return e - i;
        /* every start inside this run fails the same way: skip it (keeps the scan linear) */
        if (e > i + 1) *skip = e;
        return 0;
    }
    }
    return 0;
}

#define MAX_STAGES 6
#define MAX_NAMES 12
typedef struct pretok_def {
    /* tokenizer.ggml.pre values using this split (as llama.cpp maps them); the first is the canonical */
    const char *names[MAX_NAMES];
    int n_stages;
    stage stages[MAX_STAGES];
} pretok_def;

static const pretok_def defs[SD_PRETOK_COUNT] = {
    [SD_PRETOK_DEFAULT] = {{"default"}, 4,
                           {{S_RUN, C_DEFAULT_P}, {S_GPT2, 0}, {S_RUN, C_N}, {S_THREE, C_DIGIT}}},
    [SD_PRETOK_GPT2] = {{"gpt2", "gpt-2", "mpt", "olmo", "jais", "phi-2", "trillion", "granite-docling", "exaone4",
                         "gigachat", "mellum", "a.x-4.0"},
                        1, {{S_GPT2, 0}}},
    [SD_PRETOK_LLAMA3] = {{"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                           "dbrx", "smaug-bpe", "glm4", "chatglm-bpe"},
                          1, {{S_LLAMA3, 0}}},
    [SD_PRETOK_QWEN2] = {{"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "kormo", "hunyuan", "grok-2"}, 1,
                         {{S_QWEN2, 0}}},
    [SD_PRETOK_DEEPSEEK_LLM] = {{"deepseek-llm"}, 6,
                                {{S_CRLF, 0}, {S_WS_OPT_RUN, C_DS_LETTER}, {S_WS_OPT_RUN, C_DS_PUNCT},
                                 {S_WS_END, 0}, {S_RUN, C_CJK}, {S_RUN, C_N}}},
    [SD_PRETOK_DEEPSEEK_CODER] = {{"deepseek-coder"}, 5,
                                  {{S_CRLF, 0}, {S_WS_OPT_RUN, C_L}, {S_WS_OPT_RUN, C_P}, {S_RUN, C_CJK},
                                   {S_ONE, C_N}}},
    [SD_PRETOK_FALCON] = {{"falcon"}, 3, {{S_RUN, C_FALCON_P}, {S_GPT2, 0}, {S_THREE, C_DIGIT}}},
    [SD_PRETOK_STARCODER] = {{"starcoder", "refact", "smollm", "command-r", "codeshell", "exaone", "minerva-7b"}, 2,
                             {{S_ONE, C_N}, {S_GPT2, 0}}},
    [SD_PRETOK_GPT4O] = {{"gpt-4o", "llama4", "minimax-m2"}, 1, {{S_GPT4O, 0}}},
};

int sd_pretok_find(const char *name, sd_pretok_kind *kind, sd_err *err) {
    if (!name || !*name) name = "default";
    for (int k = 0; k < SD_PRETOK_COUNT; k++)
        for (int j = 0; j < MAX_NAMES && defs[k].names[j]; j++)
            if (strcmp(defs[k].names[j], name) == 0) {
                *kind = (sd_pretok_kind)k;
                return 0;
            }
    return sd_errf(err, "unknown BPE pre-tokenizer \"%s\" (tokenizer.ggml.pre)", name);
}

const char *sd_pretok_name(sd_pretok_kind kind) {
    return kind >= 0 && kind < SD_PRETOK_COUNT ? defs[kind].names[0] : "?";
}

/* ---- the split driver ---- */

typedef struct cuts {
    size_t *v;
    size_t n, cap;
} cuts;

static int cut(cuts *a, size_t x) {
    if (a->n && a->v[a->n - 1] == x) return 0;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        size_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

/* Splits every piece of `in` by one stage into `out` (both are sorted cut positions from 0 to n). */
static int run_stage(const ctx *c, const stage *st, const cuts *in, cuts *out) {
    out->n = 0;
    for (size_t p = 0; p + 1 < in->n; p++) {
        size_t s = in->v[p], e = in->v[p + 1], i = s;
        if (cut(out, s)) return -1;
        while (i < e) {
            size_t skip = i + 1;
            size_t m = m_stage(c, st, i, e, &skip);
            if (m) {
                if (cut(out, i) || cut(out, i + m)) return -1;
                i += m;
            } else {
                i = skip;
            }
        }
    }
    return in->n ? cut(out, in->v[in->n - 1]) : 0;
}

int sd_pretok_split(sd_pretok_kind kind, const char *text, size_t len, sd_span **spans, size_t *n_spans,
                    sd_err *err) {
    *spans = NULL;
    *n_spans = 0;
    if (kind < 0 || kind >= SD_PRETOK_COUNT) return sd_errf(err, "pre-tokenizer: bad kind %d", (int)kind);
    if (len == 0) return 0;
    uint32_t *cp = malloc(len * sizeof *cp);
    uint16_t *fl = malloc(len * sizeof *fl);
    size_t *off = malloc((len + 1) * sizeof *off);
    cuts a = {0}, b = {0};
    int rc = -1;
    if (!cp || !fl || !off) goto done;
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len; n++) {
        int valid;
        off[n] = i;
        i += sd_utf8_decode(s + i, len - i, &cp[n], &valid);
        fl[n] = (uint16_t)sd_uni_flags(cp[n]);
    }
    off[n] = len;
    ctx c = {cp, fl};
    if (cut(&a, 0) || cut(&a, n)) goto done;
    const pretok_def *d = &defs[kind];
    for (int k = 0; k < d->n_stages; k++) {
        if (run_stage(&c, &d->stages[k], &a, &b)) goto done;
        cuts t = a; a = b; b = t;
    }
    sd_span *sp = malloc((a.n - 1) * sizeof *sp);
    if (!sp) goto done;
    for (size_t p = 0; p + 1 < a.n; p++) {
        sp[p].off = off[a.v[p]];
        sp[p].len = off[a.v[p + 1]] - off[a.v[p]];
    }
    *spans = sp;
    *n_spans = a.n - 1;
    rc = 0;
done:
    if (rc) sd_errf(err, "pre-tokenizer: out of memory for %zu bytes of text", len);
    free(cp); free(fl); free(off); free(a.v); free(b.v);
    return rc;
}
