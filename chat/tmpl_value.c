/* The interpreter's arena, buffers and value type: containers, Python's equality/ordering/truth, and the
 * three ways a value becomes text (str, repr, json.dumps) exactly as Python writes them. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/tmpl_internal.h"
#include "tokenizer/unicode.h"

/* ---- arena ---- */
struct tm_chunk {
    tm_chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

_Noreturn void tm_fail(tm_arena *a, const char *fmt, ...) {
    if (a->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(a->err->msg, sizeof a->err->msg, fmt, ap);
        va_end(ap);
        sd_utf8_sanitize(a->err->msg); /* it may quote template bytes, or be cut: clients get UTF-8 */
    }
    longjmp(*a->fail, 1);
}

void *tm_alloc(tm_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    tm_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > 60000 ? n : 60000;
        if (a->used + size > a->limit) tm_fail(a, "MemoryError: template rendering needs more than %zu MB", a->limit >> 20);
        c = malloc(sizeof *c + size);
        if (!c) tm_fail(a, "MemoryError: out of memory");
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->used += size;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *tm_strdup(tm_arena *a, const char *s, size_t n) {
    char *p = tm_alloc(a, n + 1);
    if (n) memcpy(p, s, n);
    return p;
}

void tm_arena_free(tm_arena *a) {
    for (tm_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- buffers ---- */
void tm_buf_put(tm_arena *a, tm_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t limit = b->limit ? b->limit : a->limit;
        if (b->n + n > limit) tm_fail(a, "MemoryError: template output exceeds %zu bytes", limit);
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = tm_alloc(a, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void tm_buf_putc(tm_arena *a, tm_buf *b, char c) { tm_buf_put(a, b, &c, 1); }

void tm_buf_printf(tm_arena *a, tm_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    tm_buf_put(a, b, tmp, n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- containers ---- */
tm_list *tm_list_new(tm_arena *a, size_t cap) {
    tm_list *l = tm_alloc(a, sizeof *l);
    l->cap = cap ? cap : 4;
    l->items = tm_alloc(a, l->cap * sizeof *l->items);
    return l;
}

void tm_list_push(tm_arena *a, tm_list *l, tm_value v) {
    if (l->n == l->cap) {
        tm_value *items = tm_alloc(a, 2 * l->cap * sizeof *items);
        memcpy(items, l->items, l->n * sizeof *items);
        l->items = items;
        l->cap *= 2;
    }
    l->items[l->n++] = v;
}

tm_value tm_list_value(tm_list *l) {
    tm_value v = {.kind = V_LIST};
    v.list = l;
    return v;
}

tm_dict *tm_dict_new(tm_arena *a) {
    tm_dict *d = tm_alloc(a, sizeof *d);
    d->cap = 4;
    d->keys = tm_alloc(a, d->cap * sizeof *d->keys);
    d->vals = tm_alloc(a, d->cap * sizeof *d->vals);
    return d;
}

tm_value *tm_dict_get(const tm_dict *d, tm_value key) {
    for (size_t i = 0; i < d->n; i++)
        if (tm_equal(d->keys[i], key)) return &d->vals[i];
    return NULL;
}

tm_value *tm_dict_gets(const tm_dict *d, const char *key, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].kind == V_STR && d->keys[i].str.n == n && !memcmp(d->keys[i].str.s, key, n))
            return &d->vals[i];
    return NULL;
}

void tm_dict_set(tm_arena *a, tm_dict *d, tm_value key, tm_value val) {
    tm_value *slot = tm_dict_get(d, key);
    if (slot) {
        *slot = val;
        return;
    }
    if (d->n == d->cap) {
        tm_value *k = tm_alloc(a, 2 * d->cap * sizeof *k), *v = tm_alloc(a, 2 * d->cap * sizeof *v);
        memcpy(k, d->keys, d->n * sizeof *k);
        memcpy(v, d->vals, d->n * sizeof *v);
        d->keys = k;
        d->vals = v;
        d->cap *= 2;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
}

/* ---- Python semantics ---- */
const char *tm_type_name(tm_value v) {
    switch (v.kind) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return v.list->gen ? "generator" : v.list->tuple ? "tuple" : "list";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_MACRO: return "Macro";
    case V_FUNC: return "function";
    case V_LOOP: return "LoopContext";
    }
    return "object";
}

bool tm_truthy(tm_value v) {
    switch (v.kind) {
    case V_UNDEF: case V_NONE: return false;
    case V_BOOL: return v.b;
    case V_INT: return v.i != 0;
    case V_FLOAT: return v.f != 0;
    case V_STR: return v.str.n != 0;
    case V_LIST: return v.list->gen || v.list->n != 0;
    case V_DICT: return v.dict->n != 0;
    default: return true;
    }
}

static bool is_num(tm_value v) { return v.kind == V_BOOL || v.kind == V_INT || v.kind == V_FLOAT; }
static double num(tm_value v) { return v.kind == V_FLOAT ? v.f : v.kind == V_INT ? (double)v.i : v.b; }

/* Values can nest (a namespace may even hold itself): recursion over them stops at this depth. */
enum { MAX_NEST = 200 };

static bool equal_d(tm_value a, tm_value b, int depth) {
    if (depth > MAX_NEST) return false;
    if (is_num(a) && is_num(b)) {
        if (a.kind != V_FLOAT && b.kind != V_FLOAT)
            return (a.kind == V_INT ? a.i : a.b) == (b.kind == V_INT ? b.i : b.b);
        return num(a) == num(b);
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
    case V_UNDEF: case V_NONE: return true;
    case V_STR: return a.str.n == b.str.n && !memcmp(a.str.s, b.str.s, a.str.n);
    case V_LIST:
        if (a.list->gen || b.list->gen) return a.list == b.list;
        if (a.list->tuple != b.list->tuple || a.list->n != b.list->n) return false;
        for (size_t i = 0; i < a.list->n; i++)
            if (!equal_d(a.list->items[i], b.list->items[i], depth + 1)) return false;
        return true;
    case V_DICT:
        if (a.dict->n != b.dict->n) return false;
        for (size_t i = 0; i < a.dict->n; i++) {
            tm_value *o = tm_dict_get(b.dict, a.dict->keys[i]);
            if (!o || !equal_d(a.dict->vals[i], *o, depth + 1)) return false;
        }
        return true;
    case V_NS: return a.dict == b.dict;
    case V_MACRO: return a.mac == b.mac;
    case V_FUNC: return a.fn == b.fn;
    case V_LOOP: return a.loop == b.loop;
    default: return false;
    }
}

bool tm_equal(tm_value a, tm_value b) { return equal_d(a, b, 0); }

static int cmp_raw(tm_value x, tm_value y, bool *ok, int depth) {
    if (depth > MAX_NEST) {
        *ok = false;
        return 0;
    }
    if (is_num(x) && is_num(y)) {
        if (x.kind != V_FLOAT && y.kind != V_FLOAT) {
            int64_t a = x.kind == V_INT ? x.i : x.b, b = y.kind == V_INT ? y.i : y.b;
            return (a > b) - (a < b);
        }
        double a = num(x), b = num(y);
        return (a > b) - (a < b);
    }
    if (x.kind == V_STR && y.kind == V_STR) { /* UTF-8 byte order is code point order */
        size_t m = x.str.n < y.str.n ? x.str.n : y.str.n;
        int c = memcmp(x.str.s, y.str.s, m);
        if (c) return c < 0 ? -1 : 1;
        return (x.str.n > y.str.n) - (x.str.n < y.str.n);
    }
    if (x.kind == V_LIST && y.kind == V_LIST && x.list->tuple == y.list->tuple && !x.list->gen && !y.list->gen) {
        size_t m = x.list->n < y.list->n ? x.list->n : y.list->n;
        for (size_t i = 0; i < m; i++) {
            if (tm_equal(x.list->items[i], y.list->items[i])) continue;
            return cmp_raw(x.list->items[i], y.list->items[i], ok, depth + 1);
        }
        return (x.list->n > y.list->n) - (x.list->n < y.list->n);
    }
    *ok = false;
    return 0;
}

int tm_compare(tm_arena *a, tm_value x, tm_value y, const char *op) {
    bool ok = true;
    int c = cmp_raw(x, y, &ok, 0);
    if (!ok)
        tm_fail(a, "TypeError: '%s' not supported between instances of '%s' and '%s'", op, tm_type_name(x),
                tm_type_name(y));
    return c;
}

/* ---- whitespace (Python's str.isspace over UTF-8) ---- */
static bool py_space(uint32_t cp) {
    return (cp >= 0x1c && cp <= 0x1f) || sd_uni_is_space(cp);
}

size_t tm_lstrip_len(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int valid;
        size_t k = sd_utf8_decode((const unsigned char *)s + i, n - i, &cp, &valid);
        if (!valid || !py_space(cp)) break;
        i += k;
    }
    return i;
}

size_t tm_rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t start = n - 1; /* back up to the lead byte of the last character */
        while (start > 0 && n - start < 4 && ((unsigned char)s[start] & 0xC0) == 0x80) start--;
        uint32_t cp;
        int valid;
        size_t k = sd_utf8_decode((const unsigned char *)s + start, n - start, &cp, &valid);
        if (!valid || start + k != n || !py_space(cp)) break;
        n = start;
    }
    return n;
}

bool tm_is_space_str(const char *s, size_t n) { return n > 0 && tm_lstrip_len(s, n) == n; }

/* ---- text forms ---- */
/* Python's float repr: the shortest digits that read back exactly, in positional notation when the
 * exponent is in [-4, 16), with ".0" on integral values. */
void tm_float_repr(double f, char out[32]) {
    if (isnan(f)) { strcpy(out, "nan"); return; }
    if (isinf(f)) { strcpy(out, f < 0 ? "-inf" : "inf"); return; }
    char e[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e = [-]d[.ddd]e[+-]XX: split digits and exponent */
    char digits[24];
    int nd = 0, neg = e[0] == '-';
    const char *p = e + neg;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    char *o = out;
    if (neg) *o++ = '-';
    if (exp >= 16 || exp < -4) {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        sprintf(o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        return;
    }
    if (exp < 0) {
        o += sprintf(o, "0.");
        for (int i = 0; i < -exp - 1; i++) *o++ = '0';
        memcpy(o, digits, (size_t)nd);
        o += nd;
    } else {
        for (int i = 0; i <= exp; i++) *o++ = i < nd ? digits[i] : '0';
        *o++ = '.';
        if (nd > exp + 1) {
            memcpy(o, digits + exp + 1, (size_t)(nd - exp - 1));
            o += nd - exp - 1;
        } else {
            *o++ = '0';
        }
    }
    *o = '\0';
}

static bool py_printable(uint32_t cp) {
    if (cp == ' ') return true;
    int c = sd_uni_cat(cp);
    return !(c == SD_UC_Cc || c == SD_UC_Cf || c == SD_UC_Cs || c == SD_UC_Co || c == SD_UC_Cn ||
             c == SD_UC_Zl || c == SD_UC_Zp || c == SD_UC_Zs);
}

static void repr_str(tm_arena *a, tm_buf *b, const char *s, size_t n) {
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    tm_buf_putc(a, b, q);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int valid;
        size_t k = sd_utf8_decode((const unsigned char *)s + i, n - i, &cp, &valid);
        if (!valid) cp = (unsigned char)s[i]; /* not reachable for UTF-8 input; shows the byte */
        if (cp == (uint32_t)q || cp == '\\') tm_buf_printf(a, b, "\\%c", (char)cp);
        else if (cp == '\n') tm_buf_put(a, b, "\\n", 2);
        else if (cp == '\r') tm_buf_put(a, b, "\\r", 2);
        else if (cp == '\t') tm_buf_put(a, b, "\\t", 2);
        else if (valid && py_printable(cp)) tm_buf_put(a, b, s + i, k);
        else if (cp < 0x100) tm_buf_printf(a, b, "\\x%02x", cp);
        else if (cp < 0x10000) tm_buf_printf(a, b, "\\u%04x", cp);
        else tm_buf_printf(a, b, "\\U%08x", cp);
        i += k;
    }
    tm_buf_putc(a, b, q);
}

static void repr_d(tm_arena *a, tm_buf *b, tm_value v, int depth) {
    if (depth > MAX_NEST) tm_fail(a, "RecursionError: value nested too deeply to print");
    switch (v.kind) {
    case V_STR: repr_str(a, b, v.str.s, v.str.n); return;
    case V_LIST: {
        if (v.list->gen) {
            tm_buf_put(a, b, "<generator object>", 18);
            return;
        }
        tm_buf_putc(a, b, v.list->tuple ? '(' : '[');
        for (size_t i = 0; i < v.list->n; i++) {
            if (i) tm_buf_put(a, b, ", ", 2);
            repr_d(a, b, v.list->items[i], depth + 1);
        }
        if (v.list->tuple && v.list->n == 1) tm_buf_putc(a, b, ',');
        tm_buf_putc(a, b, v.list->tuple ? ')' : ']');
        return;
    }
    case V_DICT: case V_NS:
        if (v.kind == V_NS) tm_buf_put(a, b, "<Namespace ", 11);
        tm_buf_putc(a, b, '{');
        for (size_t i = 0; i < v.dict->n; i++) {
            if (i) tm_buf_put(a, b, ", ", 2);
            repr_d(a, b, v.dict->keys[i], depth + 1);
            tm_buf_put(a, b, ": ", 2);
            repr_d(a, b, v.dict->vals[i], depth + 1);
        }
        tm_buf_putc(a, b, '}');
        if (v.kind == V_NS) tm_buf_putc(a, b, '>');
        return;
    case V_UNDEF: tm_buf_put(a, b, "Undefined", 9); return;
    default: tm_to_str(a, b, v); return;
    }
}

void tm_repr(tm_arena *a, tm_buf *b, tm_value v) { repr_d(a, b, v, 0); }

void tm_to_str(tm_arena *a, tm_buf *b, tm_value v) {
    char tmp[32];
    switch (v.kind) {
    case V_UNDEF: return;
    case V_NONE: tm_buf_put(a, b, "None", 4); return;
    case V_BOOL: tm_buf_put(a, b, v.b ? "True" : "False", v.b ? 4 : 5); return;
    case V_INT: tm_buf_printf(a, b, "%lld", (long long)v.i); return;
    case V_FLOAT: tm_float_repr(v.f, tmp); tm_buf_put(a, b, tmp, strlen(tmp)); return;
    case V_STR: tm_buf_put(a, b, v.str.s, v.str.n); return;
    case V_MACRO: tm_buf_printf(a, b, "<Macro '%s'>", v.mac->def->name); return;
    case V_FUNC: tm_buf_put(a, b, "<built-in function>", 19); return;
    case V_LOOP: tm_buf_put(a, b, "<LoopContext>", 13); return;
    default: tm_repr(a, b, v); return;
    }
}

tm_value tm_str_value(tm_arena *a, tm_value v) {
    if (v.kind == V_STR) return v;
    tm_buf b = {0};
    tm_to_str(a, &b, v);
    return tm_strn(b.p ? b.p : "", b.n);
}

static void json_str(tm_arena *a, tm_buf *b, const char *s, size_t n, bool ascii) {
    tm_buf_putc(a, b, '"');
    size_t run = 0; /* bytes copied through in one go */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[16];
        if (ascii && c >= 0x80) { /* one character as \uXXXX, beyond U+FFFF as a surrogate pair */
            uint32_t cp;
            int valid;
            size_t k = sd_utf8_decode((const unsigned char *)s + i, n - i, &cp, &valid);
            if (!valid) cp = 0xFFFD;
            if (cp > 0xFFFF) snprintf(u, sizeof u, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF));
            else snprintf(u, sizeof u, "\\u%04x", cp);
            tm_buf_put(a, b, s + run, i - run);
            tm_buf_put(a, b, u, strlen(u));
            i += (k ? k : 1) - 1;
            run = i + 1;
            continue;
        }
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) { snprintf(u, sizeof u, "\\u%04x", c); esc = u; }
        if (!esc) continue;
        tm_buf_put(a, b, s + run, i - run);
        tm_buf_put(a, b, esc, strlen(esc));
        run = i + 1;
    }
    tm_buf_put(a, b, s + run, n - run);
    tm_buf_putc(a, b, '"');
}

static void json_newline(tm_arena *a, tm_buf *b, const char *indent, int depth) {
    tm_buf_putc(a, b, '\n');
    for (int i = 0; i < depth; i++) tm_buf_put(a, b, indent, strlen(indent));
}

static void json_key(tm_arena *a, tm_buf *b, tm_value k, bool ascii) {
    char tmp[32];
    switch (k.kind) {
    case V_STR: json_str(a, b, k.str.s, k.str.n, ascii); return;
    case V_NONE: tm_buf_put(a, b, "\"null\"", 6); return;
    case V_BOOL: tm_buf_put(a, b, k.b ? "\"true\"" : "\"false\"", k.b ? 6 : 7); return;
    case V_INT: tm_buf_printf(a, b, "\"%lld\"", (long long)k.i); return;
    case V_FLOAT: tm_float_repr(k.f, tmp); tm_buf_printf(a, b, "\"%s\"", tmp); return;
    default: tm_fail(a, "TypeError: keys must be str, int, float, bool or None, not %s", tm_type_name(k));
    }
}

/* The order a dict's items are written in: as inserted, or by key (sort_keys: Python's ordering, so
 * keys of mixed types raise its TypeError). Insertion sort: template dicts are small. */
static size_t *key_order(tm_arena *a, const tm_dict *d, bool sort) {
    size_t *ord = tm_alloc(a, d->n * sizeof *ord);
    for (size_t i = 0; i < d->n; i++) {
        size_t j = i;
        for (; sort && j > 0 && tm_compare(a, d->keys[i], d->keys[ord[j - 1]], "<") < 0; j--) ord[j] = ord[j - 1];
        ord[j] = i;
    }
    return ord;
}

void tm_tojson(tm_arena *a, tm_buf *b, tm_value v, const tm_json_opts *o, int depth) {
    char tmp[32];
    const char *indent = o->indent, *isep = o->item_sep ? o->item_sep : indent ? "," : ", ";
    const char *ksep = o->key_sep ? o->key_sep : ": ";
    if (depth > MAX_NEST) tm_fail(a, "RecursionError: value nested too deeply for tojson");
    switch (v.kind) {
    case V_NONE: tm_buf_put(a, b, "null", 4); return;
    case V_BOOL: tm_buf_put(a, b, v.b ? "true" : "false", v.b ? 4 : 5); return;
    case V_INT: tm_buf_printf(a, b, "%lld", (long long)v.i); return;
    case V_FLOAT:
        if (isnan(v.f)) tm_buf_put(a, b, "NaN", 3);
        else if (isinf(v.f)) tm_buf_put(a, b, v.f < 0 ? "-Infinity" : "Infinity", v.f < 0 ? 9 : 8);
        else { tm_float_repr(v.f, tmp); tm_buf_put(a, b, tmp, strlen(tmp)); }
        return;
    case V_STR: json_str(a, b, v.str.s, v.str.n, o->ascii); return;
    case V_LIST:
        if (v.list->gen) tm_fail(a, "TypeError: Object of type generator is not JSON serializable");
        if (!v.list->n) { tm_buf_put(a, b, "[]", 2); return; }
        tm_buf_putc(a, b, '[');
        for (size_t i = 0; i < v.list->n; i++) {
            if (i) tm_buf_put(a, b, isep, strlen(isep));
            if (indent) json_newline(a, b, indent, depth + 1);
            tm_tojson(a, b, v.list->items[i], o, depth + 1);
        }
        if (indent) json_newline(a, b, indent, depth);
        tm_buf_putc(a, b, ']');
        return;
    case V_DICT: {
        if (!v.dict->n) { tm_buf_put(a, b, "{}", 2); return; }
        size_t *ord = key_order(a, v.dict, o->sort_keys);
        tm_buf_putc(a, b, '{');
        for (size_t i = 0; i < v.dict->n; i++) {
            if (i) tm_buf_put(a, b, isep, strlen(isep));
            if (indent) json_newline(a, b, indent, depth + 1);
            json_key(a, b, v.dict->keys[ord[i]], o->ascii);
            tm_buf_put(a, b, ksep, strlen(ksep));
            tm_tojson(a, b, v.dict->vals[ord[i]], o, depth + 1);
        }
        if (indent) json_newline(a, b, indent, depth);
        tm_buf_putc(a, b, '}');
        return;
    }
    default:
        tm_fail(a, "TypeError: Object of type %s is not JSON serializable", tm_type_name(v));
    }
}
