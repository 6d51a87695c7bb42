/* Template lexer: splits source into text and tag tokens the way Jinja's lexer does, whitespace control
 * included (`{%-`/`-%}`, trim_blocks eating the newline after a block tag, lstrip_blocks removing the
 * indentation before a block or comment tag), and tokenizes the expressions inside tags. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "chat/tmpl_lex.h"
#include "base/utf8.h"

static void push(tm_arena *a, tm_toks *ts, tm_tok t) {
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 256;
        tm_tok *v = tm_alloc(a, cap * sizeof *v);
        if (ts->n) memcpy(v, ts->v, ts->n * sizeof *v);
        ts->v = v;
        ts->cap = cap;
    }
    ts->v[ts->n++] = t;
}

/* Jinja joins source.splitlines() with "\n": \r\n and \r become \n, and one trailing newline goes. */
static char *normalize(tm_arena *a, const char *src, size_t n, size_t *out_n) {
    char *o = tm_alloc(a, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            o[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            o[k++] = src[i];
        }
    }
    if (k && o[k - 1] == '\n') k--;
    o[k] = '\0';
    *out_n = k;
    return o;
}

static int count_lines(const char *s, size_t n) {
    int c = 0;
    for (size_t i = 0; i < n; i++) c += s[i] == '\n';
    return c;
}

/* Decodes a string literal's body as Python's unicode-escape does (after Jinja's backslashreplace). */
static tm_value unescape(tm_arena *a, const char *s, size_t n, int line) {
    char *o = tm_alloc(a, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[k++] = s[i];
            continue;
        }
        char c = s[++i];
        const char *simple = strchr("\\'\"abfnrtv\n", c);
        if (simple && c) {
            static const char map[] = "\\'\"\a\b\f\n\r\t\v";
            if (c != '\n') o[k++] = map[simple - "\\'\"abfnrtv\n"];
            continue;
        }
        int hex = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
        if (hex) {
            uint32_t cp = 0;
            for (int j = 0; j < hex; j++) {
                char h = i + 1 + j < n ? s[i + 1 + j] : 0;
                if (!isxdigit((unsigned char)h))
                    tm_fail(a, "TemplateSyntaxError: line %d: truncated \\%c escape in a string", line, c);
                cp = cp * 16 + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
            }
            i += (size_t)hex;
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                tm_fail(a, "TemplateSyntaxError: line %d: escape \\%c of an invalid code point", line, c);
            k += (size_t)sd_utf8_encode(cp, o + k);
            continue;
        }
        if (c >= '0' && c <= '7') {
            uint32_t cp = 0;
            int j = 0;
            for (; j < 3 && i + j < n && s[i + j] >= '0' && s[i + j] <= '7'; j++) cp = cp * 8 + (uint32_t)(s[i + j] - '0');
            i += (size_t)j - 1;
            k += (size_t)sd_utf8_encode(cp, o + k);
            continue;
        }
        if (c == 'N') tm_fail(a, "TemplateSyntaxError: line %d: unsupported construct \\N{...} escape", line);
        o[k++] = '\\'; /* unknown escapes stay as written */
        o[k++] = c;
    }
    return tm_strn(o, k);
}

static const char *const k_ops[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]",
                                    "(", ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";"};

/* An end marker at s: "}}"/"%}"/"#}" possibly after '-' or '+'. Returns its length (0 if none) and how
 * the text after it is to be trimmed in *strip: '-' all whitespace, 'n' one newline, 0 nothing. */
static size_t end_marker(const char *s, size_t left, char close, int kind, char *strip) {
    size_t k = 0;
    char sign = 0;
    if (left >= 1 && (s[0] == '-' || s[0] == '+')) {
        sign = s[0];
        k = 1;
    }
    if (left < k + 2 || s[k] != close || s[k + 1] != '}') return 0;
    *strip = sign == '-' ? '-' : sign == '+' || kind == T_VAR_BEGIN ? 0 : 'n';
    return k + 2;
}

/* Tokenizes the expression inside a tag starting at *pos, up to and including its end marker. */
static void lex_tag(tm_arena *a, tm_toks *ts, const char *s, size_t n, size_t *pos, int *line, int kind) {
    char close = kind == T_VAR_BEGIN ? '}' : '%';
    int depth = 0; /* open brackets: "}}" inside a dict literal is not the end */
    size_t i = *pos;
    int start_line = *line;
    for (;;) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v'))
            *line += s[i++] == '\n';
        if (i >= n)
            tm_fail(a, "TemplateSyntaxError: line %d: unexpected end of template, expected '%c}'", start_line, close);
        char strip;
        size_t m = depth == 0 ? end_marker(s + i, n - i, close, kind, &strip) : 0;
        if (m) {
            i += m;
            if (strip == '-') {
                while (i < n && isspace((unsigned char)s[i])) *line += s[i++] == '\n';
            } else if (strip == 'n' && i < n && s[i] == '\n') {
                i++;
                (*line)++;
            }
            push(a, ts, (tm_tok){.type = kind == T_VAR_BEGIN ? T_VAR_END : T_BLOCK_END, .line = *line,
                                 .ends_line = i > 0 && s[i - 1] == '\n'});
            *pos = i;
            return;
        }
        tm_tok t = {.line = *line, .s = s + i};
        char c = s[i];
        if (isalpha((unsigned char)c) || c == '_') {
            size_t j = i;
            while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
            t.type = T_NAME;
            t.n = j - i;
            i = j;
        } else if (c == '\'' || c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != c) j += s[j] == '\\' ? 2 : 1;
            if (j >= n) tm_fail(a, "TemplateSyntaxError: line %d: unterminated string", *line);
            t.type = T_STRING;
            t.v = unescape(a, s + i + 1, j - i - 1, *line);
            *line += count_lines(s + i, j - i);
            i = j + 1;
        } else if (isdigit((unsigned char)c)) {
            size_t j = i;
            bool is_float = false;
            while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) j++;
            if (j + 1 < n && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
                is_float = true;
                for (j++; j < n && (isdigit((unsigned char)s[j]) || s[j] == '_');) j++;
            }
            if (j < n && (s[j] == 'e' || s[j] == 'E')) {
                size_t e = j + 1;
                if (e < n && (s[e] == '+' || s[e] == '-')) e++;
                if (e < n && isdigit((unsigned char)s[e])) {
                    is_float = true;
                    for (j = e; j < n && (isdigit((unsigned char)s[j]) || s[j] == '_');) j++;
                }
            }
            char buf[64];
            size_t k = 0;
            for (size_t x = i; x < j && k < sizeof buf - 1; x++)
                if (s[x] != '_') buf[k++] = s[x];
            buf[k] = '\0';
            if (is_float) {
                t.type = T_FLOAT;
                t.v = tm_float(strtod(buf, NULL));
            } else {
                char *end;
                unsigned long long u = strtoull(buf, &end, 10);
                if (k >= 19 && (u > INT64_MAX || k > 19))
                    tm_fail(a, "TemplateSyntaxError: line %d: integer literal too large", *line);
                t.type = T_INT;
                t.v = tm_int((int64_t)u);
            }
            i = j;
        } else {
            size_t nops = sizeof k_ops / sizeof k_ops[0], k;
            for (k = 0; k < nops; k++) {
                size_t l = strlen(k_ops[k]);
                if (i + l <= n && !memcmp(s + i, k_ops[k], l)) break;
            }
            if (k == nops) { /* the whole character, not its first byte (the source is valid UTF-8) */
                int w = sd_utf8_lead_len((unsigned char)c);
                tm_fail(a, "TemplateSyntaxError: line %d: unexpected character '%.*s'", *line, w ? w : 1, s + i);
            }
            t.type = T_OP;
            t.n = strlen(k_ops[k]);
            if (strchr("([{", c)) {
                if (++depth > 200) tm_fail(a, "TemplateSyntaxError: line %d: brackets nested too deeply", *line);
            } else if (strchr(")]}", c)) {
                if (depth == 0) tm_fail(a, "TemplateSyntaxError: line %d: unexpected '%c'", *line, c);
                depth--;
            }
            i += t.n;
        }
        push(a, ts, t);
    }
}

/* Applies `{%-` stripping or lstrip_blocks to the text before a tag. */
static size_t strip_before(const char *text, size_t len, char sign, int kind, bool line_starting) {
    if (sign == '-') return tm_rstrip_len(text, len);
    if (sign == '+' || kind == T_VAR_BEGIN) return len;
    size_t l = len;
    while (l > 0 && text[l - 1] != '\n') l--;
    if ((l > 0 || line_starting) && tm_is_space_str(text + l, len - l)) return l;
    return len;
}

void tm_lex(tm_arena *a, const char *src, size_t srcn, tm_toks *ts) {
    size_t n;
    const char *s = normalize(a, src, srcn, &n);
    size_t pos = 0;
    int line = 1;
    bool line_starting = true;
    while (pos <= n) {
        const char *open = NULL;
        for (const char *p = s + pos; (p = memchr(p, '{', (size_t)(s + n - p))) && p + 1 < s + n; p++)
            if (p[1] == '{' || p[1] == '%' || p[1] == '#') {
                open = p;
                break;
            }
        size_t text_end = open ? (size_t)(open - s) : n;
        int kind = !open ? 0 : open[1] == '{' ? T_VAR_BEGIN : open[1] == '%' ? T_BLOCK_BEGIN : T_COMMENT;
        char sign = open && open + 2 < s + n && (open[2] == '-' || open[2] == '+') ? open[2] : 0;
        size_t keep = open ? strip_before(s + pos, text_end - pos, sign, kind, line_starting) : text_end - pos;
        if (keep) push(a, ts, (tm_tok){.type = T_DATA, .line = line, .v = tm_strn(s + pos, keep)});
        line += count_lines(s + pos, text_end - pos);
        if (!open) break;
        pos = text_end + 2 + (sign != 0);
        if (kind == T_COMMENT) {
            const char *end = NULL;
            for (const char *p = s + pos; p + 1 < s + n; p++)
                if (p[0] == '#' && p[1] == '}') {
                    end = p;
                    break;
                }
            if (!end) tm_fail(a, "TemplateSyntaxError: line %d: missing end of comment tag", line);
            bool minus = end > s + pos && end[-1] == '-', plus = end > s + pos && end[-1] == '+';
            line += count_lines(s + pos, (size_t)(end - s) - pos);
            pos = (size_t)(end - s) + 2;
            if (minus) {
                while (pos < n && isspace((unsigned char)s[pos])) line += s[pos++] == '\n';
            } else if (!plus && pos < n && s[pos] == '\n') {
                pos++;
                line++;
            }
            line_starting = s[pos - 1] == '\n';
            continue;
        }
        push(a, ts, (tm_tok){.type = kind, .line = line});
        lex_tag(a, ts, s, n, &pos, &line, kind);
        line_starting = ts->v[ts->n - 1].ends_line;
    }
    push(a, ts, (tm_tok){.type = T_EOF, .line = line});
}
