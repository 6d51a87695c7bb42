/* Python's printf-style string formatting for templates: `'%s: %d' % (a, b)`, `'%(name)s' % d` and the
 * `format` filter. Conversions d i u o x X e E f F g G c r s a and %%, flags `#0- +`, width and precision
 * (numbers or `*`), Python's errors word for word; widths and precisions count characters, not bytes. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "chat/tmpl_internal.h"

typedef struct {
    bool left, zero, plus, space, alt;
    int64_t width, prec; /* -1: not given */
} spec;

/* The arguments: a tuple consumed in order, or one value; a dict also serves %(name)s. */
typedef struct {
    tm_value all;
    const tm_list *tuple; /* all is a tuple */
    size_t next;
    bool one_used;
} fargs;

static size_t chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static tm_value next_arg(tm_state *S, fargs *a) {
    if (a->tuple) {
        if (a->next < a->tuple->n) return a->tuple->items[a->next++];
    } else if (!a->one_used) {
        a->one_used = true;
        return a->all;
    }
    tm_fail(S->a, "TypeError: not enough arguments for format string");
}

/* Appends text with the spec's width: spaces on the left, or on the right with '-'. */
static void pad(tm_state *S, tm_buf *b, const spec *sp, const char *s, size_t n) {
    size_t w = chars(s, n);
    if (!sp->left)
        for (int64_t i = (int64_t)w; i < sp->width; i++) tm_buf_putc(S->a, b, ' ');
    tm_buf_put(S->a, b, s, n);
    if (sp->left)
        for (int64_t i = (int64_t)w; i < sp->width; i++) tm_buf_putc(S->a, b, ' ');
}

/* A number: sign, prefix ("0x"...), digits; zeros after the prefix with '0', else spaces. */
static void pad_number(tm_state *S, tm_buf *b, const spec *sp, bool neg, const char *prefix, const char *digits) {
    char head[8];
    snprintf(head, sizeof head, "%s%s", neg ? "-" : sp->plus ? "+" : sp->space ? " " : "", prefix);
    int64_t len = (int64_t)(strlen(head) + strlen(digits));
    if (sp->zero && !sp->left) {
        tm_buf_put(S->a, b, head, strlen(head));
        for (int64_t i = len; i < sp->width; i++) tm_buf_putc(S->a, b, '0');
        tm_buf_put(S->a, b, digits, strlen(digits));
        return;
    }
    tm_buf t = {0};
    tm_buf_put(S->a, &t, head, strlen(head));
    tm_buf_put(S->a, &t, digits, strlen(digits));
    pad(S, b, sp, t.p, t.n);
}

static bool is_number(tm_value v) { return v.kind == V_INT || v.kind == V_FLOAT || v.kind == V_BOOL; }

static void format_int(tm_state *S, tm_buf *b, spec *sp, char conv, tm_value v) {
    if (!is_number(v)) {
        if (conv == 'd' || conv == 'i' || conv == 'u')
            tm_fail(S->a, "TypeError: %%%c format: a real number is required, not %s", conv, tm_type_name(v));
        tm_fail(S->a, "TypeError: %%%c format: an integer is required, not %s", conv, tm_type_name(v));
    }
    if (v.kind == V_FLOAT && conv != 'd' && conv != 'i' && conv != 'u')
        tm_fail(S->a, "TypeError: %%%c format: an integer is required, not float", conv);
    if (v.kind == V_FLOAT && !isfinite(v.f))
        tm_fail(S->a, "%s: cannot convert float %s to integer", isnan(v.f) ? "ValueError" : "OverflowError",
                isnan(v.f) ? "NaN" : "infinity");
    if (v.kind == V_FLOAT && fabs(v.f) >= 9.2e18) tm_fail(S->a, "OverflowError: %%%c: integer outside 64 bits", conv);
    int64_t i = v.kind == V_INT ? v.i : v.kind == V_BOOL ? v.b : (int64_t)v.f; /* int() truncates */
    bool neg = i < 0;
    uint64_t u = neg ? 0 - (uint64_t)i : (uint64_t)i;
    char digits[96];
    const char *fmt = conv == 'o' ? "%llo" : conv == 'x' ? "%llx" : conv == 'X' ? "%llX" : "%llu";
    int n = snprintf(digits, sizeof digits, fmt, (unsigned long long)u);
    if (sp->prec > n) { /* '%.3d' % 5 is '005' */
        if (sp->prec > 64) tm_fail(S->a, "ValueError: precision too big");
        memmove(digits + (sp->prec - n), digits, (size_t)n + 1);
        memset(digits, '0', (size_t)(sp->prec - n));
    }
    const char *prefix = !sp->alt ? "" : conv == 'o' ? "0o" : conv == 'x' ? "0x" : conv == 'X' ? "0X" : "";
    pad_number(S, b, sp, neg, prefix, digits);
}

static void format_float(tm_state *S, tm_buf *b, spec *sp, char conv, tm_value v) {
    if (!is_number(v)) tm_fail(S->a, "TypeError: must be real number, not %s", tm_type_name(v));
    double f = v.kind == V_FLOAT ? v.f : v.kind == V_INT ? (double)v.i : v.b;
    int prec = sp->prec < 0 ? 6 : (int)sp->prec;
    if (prec > 300) tm_fail(S->a, "ValueError: precision too big");
    char fmt[16], digits[512];
    snprintf(fmt, sizeof fmt, "%%%s.*%c", sp->alt ? "#" : "", conv);
    if (isnan(f)) snprintf(digits, sizeof digits, "%s", conv >= 'a' ? "nan" : "NAN"); /* no "-nan" */
    else snprintf(digits, sizeof digits, fmt, prec, fabs(f));
    spec no_zero = *sp;
    no_zero.zero = sp->zero && isfinite(f); /* Python pads inf and nan with spaces */
    pad_number(S, b, &no_zero, signbit(f) && !isnan(f), "", digits);
}

static void format_char(tm_state *S, tm_buf *b, spec *sp, tm_value v) {
    if (v.kind == V_STR && chars(v.str.s, v.str.n) == 1) {
        pad(S, b, sp, v.str.s, v.str.n);
        return;
    }
    if (v.kind != V_INT && v.kind != V_BOOL) tm_fail(S->a, "TypeError: %%c requires int or char");
    int64_t cp = v.kind == V_INT ? v.i : v.b;
    if (cp < 0 || cp > 0x10FFFF) tm_fail(S->a, "OverflowError: %%c arg not in range(0x110000)");
    char u[4];
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (size_t k = n - 1; k > 0; k--, cp >>= 6) u[k] = (char)(0x80 | (cp & 0x3F));
    u[0] = (char)(n == 1 ? cp : (lead[n] | cp));
    pad(S, b, sp, u, n);
}

/* str(v) or repr(v), cut to the precision in characters. */
static void format_text(tm_state *S, tm_buf *b, spec *sp, char conv, tm_value v) {
    tm_buf t = {0};
    if (conv == 's') tm_to_str(S->a, &t, v);
    else tm_repr(S->a, &t, v);
    size_t n = t.n;
    if (sp->prec >= 0) {
        size_t i = 0;
        for (int64_t c = 0; i < n && c < sp->prec; c++) {
            i++;
            while (i < n && ((unsigned char)t.p[i] & 0xC0) == 0x80) i++;
        }
        n = i;
    }
    pad(S, b, sp, t.p ? t.p : "", n);
}

/* A width or precision: digits, or '*' taking the next argument. */
static int64_t number_or_star(tm_state *S, const char *f, size_t n, size_t *i, fargs *a, bool *given, const char *what) {
    if (*i < n && f[*i] == '*') {
        (*i)++;
        tm_value v = next_arg(S, a);
        if (v.kind != V_INT && v.kind != V_BOOL) tm_fail(S->a, "TypeError: * wants int");
        *given = true;
        return v.kind == V_INT ? v.i : v.b;
    }
    int64_t x = 0;
    while (*i < n && f[*i] >= '0' && f[*i] <= '9') {
        x = x * 10 + (f[(*i)++] - '0');
        if (x > 1000000) tm_fail(S->a, "ValueError: %s too big", what);
        *given = true;
    }
    return x;
}

/* `%(name)` of a mapping key. */
static tm_value mapping_arg(tm_state *S, const char *f, size_t n, size_t *i, fargs *a) {
    size_t start = ++*i;
    int depth = 1;
    for (; *i < n && depth; (*i)++) depth += f[*i] == '(' ? 1 : f[*i] == ')' ? -1 : 0;
    if (depth) tm_fail(S->a, "ValueError: incomplete format key");
    if (a->all.kind != V_DICT && a->all.kind != V_NS) tm_fail(S->a, "TypeError: format requires a mapping");
    a->one_used = true;
    tm_value key = tm_strn(f + start, *i - 1 - start), *v = tm_dict_get(a->all.dict, key);
    if (!v) {
        tm_buf r = {0};
        tm_repr(S->a, &r, key);
        tm_fail(S->a, "KeyError: %.*s", (int)(r.n < 200 ? r.n : 200), r.p);
    }
    return *v;
}

/* One conversion, f[*i] just past its '%'. */
static void conversion(tm_state *S, tm_buf *b, const char *f, size_t n, size_t *i, fargs *a) {
    tm_value mapped = {.kind = V_UNDEF};
    bool has_key = *i < n && f[*i] == '(';
    if (has_key) mapped = mapping_arg(S, f, n, i, a);
    spec sp = {.width = -1, .prec = -1};
    for (; *i < n && strchr("-0+ #", f[*i]); (*i)++) {
        char c = f[*i];
        sp.left |= c == '-', sp.zero |= c == '0', sp.plus |= c == '+', sp.space |= c == ' ', sp.alt |= c == '#';
    }
    bool given = false;
    sp.width = number_or_star(S, f, n, i, a, &given, "width");
    if (sp.width < 0) sp.left = true, sp.width = -sp.width;
    if (*i < n && f[*i] == '.') {
        (*i)++;
        sp.prec = number_or_star(S, f, n, i, a, &given, "precision");
        if (sp.prec < 0) sp.prec = 0;
    }
    if ((uint64_t)sp.width > S->out_limit) tm_fail(S->a, "MemoryError: width larger than %zu", S->out_limit);
    while (*i < n && strchr("hlL", f[*i])) (*i)++;
    if (*i >= n) tm_fail(S->a, "ValueError: incomplete format");
    size_t at = (*i)++;
    char conv = f[at];
    if (conv == '%') {
        tm_buf_putc(S->a, b, '%');
        return;
    }
    if (!strchr("diuoxXeEfFgGcrsa", conv)) {
        unsigned char c = (unsigned char)conv;
        size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; /* the whole character (UTF-8 checked) */
        uint32_t cp = c < 0x80 ? c : (uint32_t)(c & (0x3F >> (k - 1)));
        for (size_t j = 1; j < k && at + j < n; j++) cp = (cp << 6) | ((unsigned char)f[at + j] & 0x3F);
        tm_fail(S->a, "ValueError: unsupported format character '%.*s' (0x%x) at index %zu", (int)k, f + at, cp,
                chars(f, at));
    }
    tm_value v = has_key ? mapped : next_arg(S, a);
    if (v.kind == V_UNDEF && conv != 's') tm_raise_undef(S, v);
    if (strchr("diuoxX", conv)) format_int(S, b, &sp, conv, v);
    else if (strchr("eEfFgG", conv)) format_float(S, b, &sp, conv, v);
    else if (conv == 'c') format_char(S, b, &sp, v);
    else format_text(S, b, &sp, conv == 's' ? 's' : 'r', v);
}

tm_value tm_percent_format(tm_state *S, tm_value fmt, tm_value args, int line) {
    (void)line;
    fargs a = {.all = args};
    if (args.kind == V_LIST && args.list->tuple) a.tuple = args.list;
    const char *f = fmt.str.s;
    size_t n = fmt.str.n;
    tm_buf b = {.limit = S->out_limit};
    for (size_t i = 0; i < n;) {
        const char *pct = memchr(f + i, '%', n - i);
        size_t upto = pct ? (size_t)(pct - f) : n;
        tm_buf_put(S->a, &b, f + i, upto - i);
        if (!pct) break;
        i = upto + 1;
        conversion(S, &b, f, n, &i, &a);
    }
    /* arguments left over: an error, except for a mapping (or anything Python takes as one: not a tuple or a string) */
    bool mapping = args.kind == V_DICT || args.kind == V_NS || (args.kind == V_LIST && !args.list->tuple && !args.list->gen);
    if ((a.tuple && a.next < a.tuple->n) || (!a.tuple && !a.one_used && !mapping))
        tm_fail(S->a, "TypeError: not all arguments converted during string formatting");
    tm_value r = tm_strn(b.p ? b.p : "", b.n);
    r.markup = fmt.markup;
    return r;
}
