/* Builtins of the chat-template interpreter: Jinja's filters and tests that chat templates use, the
 * Python str/dict methods they call, and the globals Hugging Face adds (raise_exception, strftime_now).
 * Case mapping (lower/upper/title) is ASCII-only; other characters pass unchanged. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/tmpl_internal.h"

enum {
    F_RAISE, F_STRFTIME, F_RANGE, F_NAMESPACE, F_DICT,
    M_STRIP, M_LSTRIP, M_RSTRIP, M_SPLIT, M_STARTSWITH, M_ENDSWITH, M_LOWER, M_UPPER, M_TITLE, M_CAPITALIZE,
    M_REPLACE, M_FIND, M_COUNT, M_JOIN, M_GET, M_ITEMS, M_KEYS, M_VALUES, M_CYCLE,
};

/* ---- arguments ---- */
typedef struct {
    tm_value *args, *kwargs;
    const char **kwnames;
    int nargs, nkw;
    const char *fname;
    int line;
} argv_t;

/* The argument at position pos or named name, or NULL. */
static tm_value *arg(const argv_t *c, int pos, const char *name) {
    if (pos >= 0 && pos < c->nargs) return &c->args[pos];
    for (int k = 0; name && k < c->nkw; k++)
        if (!strcmp(c->kwnames[k], name)) return &c->kwargs[k];
    return NULL;
}

/* Fails on more than max positional arguments or a keyword not in the comma-separated list allowed. */
static void check_args(tm_state *S, const argv_t *c, int max, const char *allowed) {
    if (c->nargs > max)
        tm_fail(S->a, "TypeError: line %d: %s takes at most %d argument(s) (%d given)", c->line, c->fname, max, c->nargs);
    for (int k = 0; k < c->nkw; k++) {
        size_t l = strlen(c->kwnames[k]);
        const char *p = allowed;
        bool ok = false;
        while (p && *p && !ok) {
            const char *e = strchr(p, ',');
            size_t pl = e ? (size_t)(e - p) : strlen(p);
            ok = pl == l && !memcmp(p, c->kwnames[k], l);
            p = e ? e + 1 : NULL;
        }
        if (!ok)
            tm_fail(S->a, "TypeError: line %d: %s got an unexpected keyword argument '%s'", c->line, c->fname, c->kwnames[k]);
    }
}

static tm_value need_str(tm_state *S, const argv_t *c, tm_value *v, const char *what) {
    if (!v || v->kind != V_STR)
        tm_fail(S->a, "TypeError: line %d: %s: %s must be a string, not %s", c->line, c->fname, what,
                v ? tm_type_name(*v) : "missing");
    return *v;
}

static int64_t need_int(tm_state *S, const argv_t *c, tm_value *v, int64_t dflt, const char *what) {
    if (!v || v->kind == V_NONE) return dflt;
    if (v->kind == V_INT) return v->i;
    if (v->kind == V_BOOL) return v->b;
    tm_fail(S->a, "TypeError: line %d: %s: %s must be an integer, not %s", c->line, c->fname, what, tm_type_name(*v));
}

static tm_value str_of(tm_state *S, tm_value v) { return tm_str_value(S->a, v); }
static tm_value empty_str(void) { return tm_strn("", 0); }
static tm_value buf_value(tm_buf *b) { return tm_strn(b->p ? b->p : "", b->n); }

static size_t char_count(tm_value s) {
    size_t c = 0;
    for (size_t i = 0; i < s.str.n; i++) c += ((unsigned char)s.str.s[i] & 0xC0) != 0x80;
    return c;
}

static tm_value new_list(tm_state *S, size_t cap, tm_list **l) {
    *l = tm_list_new(S->a, cap);
    return tm_list_value(*l);
}

static tm_value pair(tm_state *S, tm_value k, tm_value v) {
    tm_list *l;
    tm_value t = new_list(S, 2, &l);
    tm_list_push(S->a, l, k);
    tm_list_push(S->a, l, v);
    l->tuple = true;
    return t;
}

/* ---- string helpers ---- */
static bool in_chars(const char *set, size_t setn, const char *c, size_t cn) {
    for (size_t i = 0; i + cn <= setn;) {
        size_t k = 1;
        while (i + k < setn && ((unsigned char)set[i + k] & 0xC0) == 0x80) k++;
        if (k == cn && !memcmp(set + i, c, cn)) return true;
        i += k;
    }
    return false;
}

/* Python's strip/lstrip/rstrip: whitespace, or the characters of chars. */
static tm_value strip(tm_value s, const tm_value *chars, bool left, bool right) {
    const char *p = s.str.s;
    size_t n = s.str.n;
    if (!chars || chars->kind == V_NONE) {
        size_t lead = left ? tm_lstrip_len(p, n) : 0;
        p += lead;
        n -= lead;
        if (right) n = tm_rstrip_len(p, n);
        return tm_strn(p, n);
    }
    while (left && n) {
        size_t k = 1;
        while (k < n && ((unsigned char)p[k] & 0xC0) == 0x80) k++;
        if (!in_chars(chars->str.s, chars->str.n, p, k)) break;
        p += k;
        n -= k;
    }
    while (right && n) {
        size_t st = n - 1;
        while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
        if (!in_chars(chars->str.s, chars->str.n, p + st, n - st)) break;
        n = st;
    }
    return tm_strn(p, n);
}

static tm_value map_case(tm_state *S, tm_value s, int mode) { /* 0 lower, 1 upper, 2 title, 3 capitalize */
    char *o = tm_strdup(S->a, s.str.s, s.str.n);
    bool prev_alpha = false;
    for (size_t i = 0; i < s.str.n; i++) {
        unsigned char c = (unsigned char)o[i];
        bool alpha = isalpha(c);
        if (mode == 0) o[i] = (char)tolower(c);
        else if (mode == 1) o[i] = (char)toupper(c);
        else if (mode == 2) o[i] = (char)(prev_alpha ? tolower(c) : toupper(c));
        else o[i] = (char)(i == 0 ? toupper(c) : tolower(c));
        prev_alpha = alpha || (c >= 0x80 && mode == 2 && prev_alpha);
    }
    return tm_strn(o, s.str.n);
}

static tm_value split(tm_state *S, tm_value s, tm_value *sep, int64_t maxsplit, int line) {
    tm_list *l;
    tm_value out = new_list(S, 4, &l);
    const char *p = s.str.s, *end = s.str.s + s.str.n;
    if (!sep || sep->kind == V_NONE) { /* runs of whitespace, no empty strings */
        for (;;) {
            p += tm_lstrip_len(p, (size_t)(end - p));
            if (p == end) break;
            const char *q = p;
            if (maxsplit >= 0 && (int64_t)l->n == maxsplit) {
                tm_list_push(S->a, l, tm_strn(p, tm_rstrip_len(p, (size_t)(end - p))));
                break;
            }
            while (q < end && tm_lstrip_len(q, (size_t)(end - q)) == 0) {
                q++;
                while (q < end && ((unsigned char)*q & 0xC0) == 0x80) q++;
            }
            tm_list_push(S->a, l, tm_strn(p, (size_t)(q - p)));
            p = q;
        }
        return out;
    }
    if (sep->kind != V_STR) tm_fail(S->a, "TypeError: line %d: must be str or None, not %s", line, tm_type_name(*sep));
    if (!sep->str.n) tm_fail(S->a, "ValueError: line %d: empty separator", line);
    for (;;) {
        const char *q = maxsplit >= 0 && (int64_t)l->n == maxsplit
                            ? NULL
                            : memmem(p, (size_t)(end - p), sep->str.s, sep->str.n);
        if (!q) {
            tm_list_push(S->a, l, tm_strn(p, (size_t)(end - p)));
            return out;
        }
        tm_list_push(S->a, l, tm_strn(p, (size_t)(q - p)));
        p = q + sep->str.n;
    }
}

static tm_value replace(tm_state *S, tm_value s, tm_value old, tm_value new, int64_t count) {
    tm_buf b = {0};
    const char *p = s.str.s, *end = s.str.s + s.str.n;
    int64_t done = 0;
    if (!old.str.n) { /* between every character and at both ends */
        while (count < 0 || done < count) {
            tm_buf_put(S->a, &b, new.str.s, new.str.n);
            done++;
            if (p == end) break;
            const char *q = p + 1;
            while (q < end && ((unsigned char)*q & 0xC0) == 0x80) q++;
            tm_buf_put(S->a, &b, p, (size_t)(q - p));
            p = q;
        }
        tm_buf_put(S->a, &b, p, (size_t)(end - p));
        return buf_value(&b);
    }
    while (count < 0 || done < count) {
        const char *q = memmem(p, (size_t)(end - p), old.str.s, old.str.n);
        if (!q) break;
        tm_buf_put(S->a, &b, p, (size_t)(q - p));
        tm_buf_put(S->a, &b, new.str.s, new.str.n);
        p = q + old.str.n;
        done++;
    }
    tm_buf_put(S->a, &b, p, (size_t)(end - p));
    return buf_value(&b);
}

static bool affix(tm_value s, tm_value fix, bool start) {
    if (fix.str.n > s.str.n) return false;
    return !memcmp(start ? s.str.s : s.str.s + s.str.n - fix.str.n, fix.str.s, fix.str.n);
}

static bool starts_ends(tm_state *S, const argv_t *c, tm_value s, bool start) {
    tm_value *x = arg(c, 0, NULL);
    if (x && x->kind == V_LIST && x->list->tuple) {
        for (size_t i = 0; i < x->list->n; i++)
            if (affix(s, need_str(S, c, &x->list->items[i], "prefix"), start)) return true;
        return false;
    }
    return affix(s, need_str(S, c, x, "prefix"), start);
}

/* ---- globals and methods ---- */
static tm_func k_globals[] = {{F_RAISE, {0}}, {F_STRFTIME, {0}}, {F_RANGE, {0}}, {F_NAMESPACE, {0}}, {F_DICT, {0}}};

tm_value tm_global(const char *name) {
    static const char *const names[] = {"raise_exception", "strftime_now", "range", "namespace", "dict"};
    for (int k = 0; k < 5; k++)
        if (!strcmp(name, names[k])) {
            tm_value v = {.kind = V_FUNC};
            v.fn = &k_globals[k];
            return v;
        }
    return tm_undef(NULL);
}

tm_value tm_method(tm_state *S, tm_value self, const char *name, size_t n) {
    static const struct {
        tm_kind kind;
        const char *name;
        int id;
    } methods[] = {
        {V_STR, "strip", M_STRIP}, {V_STR, "lstrip", M_LSTRIP}, {V_STR, "rstrip", M_RSTRIP},
        {V_STR, "split", M_SPLIT}, {V_STR, "startswith", M_STARTSWITH}, {V_STR, "endswith", M_ENDSWITH},
        {V_STR, "lower", M_LOWER}, {V_STR, "upper", M_UPPER}, {V_STR, "title", M_TITLE},
        {V_STR, "capitalize", M_CAPITALIZE}, {V_STR, "replace", M_REPLACE}, {V_STR, "find", M_FIND},
        {V_STR, "count", M_COUNT}, {V_STR, "join", M_JOIN}, {V_DICT, "get", M_GET}, {V_DICT, "items", M_ITEMS},
        {V_DICT, "keys", M_KEYS}, {V_DICT, "values", M_VALUES}, {V_LOOP, "cycle", M_CYCLE},
    };
    for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++)
        if (methods[k].kind == self.kind && strlen(methods[k].name) == n && !memcmp(methods[k].name, name, n)) {
            tm_func *f = tm_alloc(S->a, sizeof *f);
            f->id = methods[k].id;
            f->self = self;
            tm_value v = {.kind = V_FUNC};
            v.fn = f;
            return v;
        }
    if (self.kind == V_LOOP) {
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(n < 60 ? n : 60), name);
        return tm_loop_attr(S, self.loop, tmp);
    }
    return tm_undef(NULL);
}

static tm_value call_global(tm_state *S, int id, argv_t *c) {
    switch (id) {
    case F_RAISE: {
        tm_value *m = arg(c, 0, NULL);
        tm_value s = m ? str_of(S, *m) : empty_str();
        tm_fail(S->a, "TemplateError: %.*s", (int)(s.str.n < 400 ? s.str.n : 400), s.str.s);
    }
    case F_STRFTIME: { /* the clock is fixed (2025-01-15) so renderings are reproducible */
        check_args(S, c, 1, "");
        tm_value fmt = need_str(S, c, arg(c, 0, NULL), "format");
        struct tm t = {.tm_year = 125, .tm_mon = 0, .tm_mday = 15, .tm_wday = 3, .tm_yday = 14};
        char f[256], out[512];
        snprintf(f, sizeof f, "%.*s", (int)(fmt.str.n < 255 ? fmt.str.n : 255), fmt.str.s);
        size_t n = f[0] ? strftime(out, sizeof out, f, &t) : 0;
        return tm_strn(tm_strdup(S->a, out, n), n);
    }
    case F_RANGE: {
        check_args(S, c, 3, "");
        int64_t lo = 0, hi, step = 1;
        if (c->nargs == 1) hi = need_int(S, c, arg(c, 0, NULL), 0, "stop");
        else {
            lo = need_int(S, c, arg(c, 0, NULL), 0, "start");
            hi = need_int(S, c, arg(c, 1, NULL), 0, "stop");
            step = need_int(S, c, arg(c, 2, NULL), 1, "step");
        }
        if (step == 0) tm_fail(S->a, "ValueError: line %d: range() arg 3 must not be zero", c->line);
        double count = ceil(((double)hi - (double)lo) / (double)step);
        if (count > 1e6) tm_fail(S->a, "OverflowError: line %d: range() longer than 1000000", c->line);
        tm_list *l;
        tm_value out = new_list(S, count > 0 ? (size_t)count : 1, &l);
        for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) tm_list_push(S->a, l, tm_int(i));
        return out;
    }
    case F_NAMESPACE: case F_DICT: {
        tm_value d = {.kind = id == F_NAMESPACE ? V_NS : V_DICT};
        d.dict = tm_dict_new(S->a);
        for (int k = 0; k < c->nargs; k++) { /* a mapping argument seeds it */
            if (c->args[k].kind != V_DICT)
                tm_fail(S->a, "TypeError: line %d: %s() positional argument must be a dict", c->line, c->fname);
            for (size_t i = 0; i < c->args[k].dict->n; i++)
                tm_dict_set(S->a, d.dict, c->args[k].dict->keys[i], c->args[k].dict->vals[i]);
        }
        for (int k = 0; k < c->nkw; k++)
            tm_dict_set(S->a, d.dict, tm_strn(c->kwnames[k], strlen(c->kwnames[k])), c->kwargs[k]);
        return d;
    }
    }
    return tm_none();
}

static tm_value call_method(tm_state *S, int id, tm_value self, argv_t *c) {
    tm_list *l;
    tm_value out;
    switch (id) {
    case M_STRIP: case M_LSTRIP: case M_RSTRIP: {
        check_args(S, c, 1, "");
        tm_value *chars = arg(c, 0, NULL);
        if (chars && chars->kind != V_NONE) need_str(S, c, chars, "chars");
        return strip(self, chars, id != M_RSTRIP, id != M_LSTRIP);
    }
    case M_SPLIT:
        check_args(S, c, 2, "sep,maxsplit");
        return split(S, self, arg(c, 0, "sep"), need_int(S, c, arg(c, 1, "maxsplit"), -1, "maxsplit"), c->line);
    case M_STARTSWITH: case M_ENDSWITH:
        check_args(S, c, 1, "");
        return tm_bool(starts_ends(S, c, self, id == M_STARTSWITH));
    case M_LOWER: case M_UPPER: case M_TITLE: case M_CAPITALIZE:
        check_args(S, c, 0, "");
        return map_case(S, self, id - M_LOWER);
    case M_REPLACE:
        check_args(S, c, 3, "");
        return replace(S, self, need_str(S, c, arg(c, 0, NULL), "old"), need_str(S, c, arg(c, 1, NULL), "new"),
                       need_int(S, c, arg(c, 2, NULL), -1, "count"));
    case M_FIND: case M_COUNT: {
        check_args(S, c, 1, "");
        tm_value sub = need_str(S, c, arg(c, 0, NULL), "sub");
        if (id == M_FIND) {
            const char *q = memmem(self.str.s, self.str.n, sub.str.s, sub.str.n);
            return tm_int(q ? (int64_t)char_count(tm_strn(self.str.s, (size_t)(q - self.str.s))) : -1);
        }
        if (!sub.str.n) return tm_int((int64_t)char_count(self) + 1);
        int64_t n = 0;
        for (const char *p = self.str.s, *end = p + self.str.n, *q; (q = memmem(p, (size_t)(end - p), sub.str.s, sub.str.n)); p = q + sub.str.n) n++;
        return tm_int(n);
    }
    case M_JOIN: {
        check_args(S, c, 1, "");
        tm_value *it = arg(c, 0, NULL);
        tm_list *items = tm_iter(S, it ? *it : tm_none(), c->line);
        tm_buf b = {0};
        for (size_t i = 0; i < items->n; i++) {
            if (items->items[i].kind != V_STR)
                tm_fail(S->a, "TypeError: line %d: sequence item %zu: expected str instance, %s found", c->line, i,
                        tm_type_name(items->items[i]));
            if (i) tm_buf_put(S->a, &b, self.str.s, self.str.n);
            tm_buf_put(S->a, &b, items->items[i].str.s, items->items[i].str.n);
        }
        return buf_value(&b);
    }
    case M_GET: {
        check_args(S, c, 2, "");
        tm_value *k = arg(c, 0, NULL), *d = arg(c, 1, NULL);
        if (!k) tm_fail(S->a, "TypeError: line %d: get expected at least 1 argument, got 0", c->line);
        tm_value *v = tm_dict_get(self.dict, *k);
        return v ? *v : d ? *d : tm_none();
    }
    case M_ITEMS: case M_KEYS: case M_VALUES:
        check_args(S, c, 0, "");
        out = new_list(S, self.dict->n, &l);
        for (size_t i = 0; i < self.dict->n; i++)
            tm_list_push(S->a, l, id == M_KEYS ? self.dict->keys[i] : id == M_VALUES ? self.dict->vals[i]
                                                                             : pair(S, self.dict->keys[i], self.dict->vals[i]));
        return out;
    case M_CYCLE:
        if (!c->nargs) tm_fail(S->a, "TypeError: line %d: no items for cycling given", c->line);
        return c->args[self.loop->index0 % (size_t)c->nargs];
    }
    return tm_none();
}

tm_value tm_call_builtin(tm_state *S, const tm_func *f, tm_value *args, int nargs, const char **kwnames,
                         tm_value *kwargs, int nkw, int line) {
    static const char *const names[] = {"raise_exception", "strftime_now", "range", "namespace", "dict"};
    argv_t c = {.args = args, .kwargs = kwargs, .kwnames = kwnames, .nargs = nargs, .nkw = nkw, .line = line,
                .fname = f->id <= F_DICT ? names[f->id] : "method"};
    if (f->id <= F_DICT) return call_global(S, f->id, &c);
    if (f->id != M_GET && f->id != M_SPLIT && nkw) check_args(S, &c, 99, "");
    return call_method(S, f->id, f->self, &c);
}

/* ---- tests ---- */
static const char *const k_tests[] = {
    "defined", "undefined", "none", "string", "mapping", "iterable", "sequence", "number", "integer", "float",
    "boolean", "true", "false", "callable", "odd", "even", "divisibleby", "equalto", "eq", "==", "ne", "!=",
    "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "greaterthan", "lessthan", "in", "sameas", "lower", "upper",
    NULL};

bool tm_has_test(const char *name) {
    for (int k = 0; k_tests[k]; k++)
        if (!strcmp(k_tests[k], name)) return true;
    return false;
}

static bool is(const char *a, const char *b) { return !strcmp(a, b); }

bool tm_test(tm_state *S, const char *name, tm_value x, tm_value *args, int nargs, int line) {
    tm_value y = nargs > 0 ? args[0] : tm_undef("missing test argument");
    if (is(name, "defined")) return x.kind != V_UNDEF;
    if (is(name, "undefined")) return x.kind == V_UNDEF;
    if (is(name, "none")) return x.kind == V_NONE;
    if (is(name, "string")) return x.kind == V_STR;
    if (is(name, "mapping")) return x.kind == V_DICT;
    if (is(name, "iterable")) return x.kind == V_UNDEF || x.kind == V_STR || x.kind == V_LIST || x.kind == V_DICT;
    if (is(name, "sequence")) return x.kind == V_UNDEF || x.kind == V_STR || x.kind == V_LIST || x.kind == V_DICT;
    if (is(name, "number")) return x.kind == V_INT || x.kind == V_FLOAT || x.kind == V_BOOL;
    if (is(name, "integer")) return x.kind == V_INT;
    if (is(name, "float")) return x.kind == V_FLOAT;
    if (is(name, "boolean")) return x.kind == V_BOOL;
    if (is(name, "true")) return x.kind == V_BOOL && x.b;
    if (is(name, "false")) return x.kind == V_BOOL && !x.b;
    if (is(name, "callable")) return x.kind == V_MACRO || x.kind == V_FUNC || x.kind == V_LOOP;
    if (is(name, "lower") || is(name, "upper")) {
        if (x.kind != V_STR) return false;
        bool cased = false;
        for (size_t i = 0; i < x.str.n; i++) {
            unsigned char ch = (unsigned char)x.str.s[i];
            if (is(name, "lower") ? isupper(ch) : islower(ch)) return false;
            cased |= isalpha(ch) != 0;
        }
        return cased;
    }
    if (is(name, "odd") || is(name, "even") || is(name, "divisibleby")) {
        if (x.kind == V_UNDEF) tm_raise_undef(S, x);
        if (x.kind != V_INT && x.kind != V_BOOL)
            tm_fail(S->a, "TypeError: line %d: test '%s' needs an integer, not %s", line, name, tm_type_name(x));
        int64_t v = x.kind == V_INT ? x.i : x.b;
        if (is(name, "divisibleby")) {
            if (y.kind != V_INT || y.i == 0)
                tm_fail(S->a, "TypeError: line %d: divisibleby needs a nonzero integer", line);
            return v % y.i == 0;
        }
        return (v % 2 != 0) == is(name, "odd");
    }
    if (is(name, "sameas")) return x.kind == y.kind && (x.kind == V_NONE || x.kind == V_UNDEF || tm_equal(x, y));
    if (is(name, "in")) {
        if (y.kind == V_STR && x.kind == V_STR) return memmem(y.str.s, y.str.n, x.str.s, x.str.n) != NULL || !x.str.n;
        tm_list *items = tm_iter(S, y, line);
        for (size_t i = 0; i < items->n; i++)
            if (tm_equal(items->items[i], x)) return true;
        return false;
    }
    if (is(name, "equalto") || is(name, "eq") || is(name, "==")) return tm_equal(x, y);
    if (is(name, "ne") || is(name, "!=")) return !tm_equal(x, y);
    if (x.kind == V_UNDEF) tm_raise_undef(S, x);
    if (y.kind == V_UNDEF) tm_raise_undef(S, y);
    int c = tm_compare(S->a, x, y, name);
    if (is(name, "lt") || is(name, "<") || is(name, "lessthan")) return c < 0;
    if (is(name, "le") || is(name, "<=")) return c <= 0;
    if (is(name, "gt") || is(name, ">") || is(name, "greaterthan")) return c > 0;
    return c >= 0;
}

/* ---- filters ---- */
static const char *const k_filters[] = {
    "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "first", "float", "format", "indent", "int", "items",
    "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse",
    "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper",
    NULL};

bool tm_has_filter(const char *name) {
    for (int k = 0; k_filters[k]; k++)
        if (!strcmp(k_filters[k], name)) return true;
    return false;
}

/* Jinja's attribute getter: "a.b" walks items/attributes; undefined where missing. */
static tm_value get_path(tm_state *S, tm_value x, tm_value path) {
    const char *p = path.str.s, *end = p + path.str.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *e = dot ? dot : end;
        tm_value key = tm_strn(p, (size_t)(e - p));
        bool digits = e > p;
        for (const char *q = p; q < e; q++) digits &= isdigit((unsigned char)*q) != 0;
        if (digits) key = tm_int(strtoll(p, NULL, 10));
        if (x.kind == V_UNDEF) return x;
        x = tm_getitem(S, x, key);
        if (!dot) break;
        p = dot + 1;
    }
    return x;
}

static tm_value items_of(tm_state *S, tm_value x, int line) {
    tm_list *l;
    if (x.kind == V_UNDEF) {
        tm_value empty = new_list(S, 1, &l);
        l->gen = true;
        return empty;
    }
    if (x.kind != V_DICT) tm_fail(S->a, "TypeError: line %d: Can only get item pairs from a mapping.", line);
    tm_value out = new_list(S, x.dict->n, &l);
    for (size_t i = 0; i < x.dict->n; i++) tm_list_push(S->a, l, pair(S, x.dict->keys[i], x.dict->vals[i]));
    l->gen = true;
    return out;
}

static tm_value indent(tm_state *S, tm_value s, const argv_t *c) {
    tm_value *w = arg(c, 0, "width");
    tm_value pad;
    if (w && w->kind == V_STR) pad = *w;
    else {
        int64_t n = need_int(S, c, w, 4, "width");
        if (n < 0 || n > 1000) n = n < 0 ? 0 : 1000;
        char *p = tm_alloc(S->a, (size_t)n + 1);
        memset(p, ' ', (size_t)n);
        pad = tm_strn(p, (size_t)n);
    }
    tm_value *first = arg(c, 1, "first"), *blank = arg(c, 2, "blank");
    /* Jinja: lines of (s + "\n") by splitlines; the first as is, the others indented unless blank */
    tm_buf src = {0}, b = {0};
    tm_buf_put(S->a, &src, s.str.s, s.str.n);
    tm_buf_putc(S->a, &src, '\n');
    const char *p = src.p, *end = p + src.n;
    if (first && tm_truthy(*first)) tm_buf_put(S->a, &b, pad.str.s, pad.str.n);
    for (bool line0 = true; p < end; line0 = false) {
        const char *q = p;
        while (*q != '\n' && *q != '\r') q++; /* src ends with a newline */
        size_t len = (size_t)(q - p);
        if (!line0) {
            tm_buf_putc(S->a, &b, '\n');
            if (len || (blank && tm_truthy(*blank))) tm_buf_put(S->a, &b, pad.str.s, pad.str.n);
        }
        tm_buf_put(S->a, &b, p, len);
        if (*q == '\r' && q + 1 < end && q[1] == '\n') q++;
        p = q + 1;
    }
    return buf_value(&b);
}

/* Hugging Face's tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False), which
 * replaces Jinja's own (its positional order, not Jinja's `tojson(indent)`). */
static tm_value tojson(tm_state *S, tm_value x, const argv_t *c) {
    check_args(S, c, 4, "ensure_ascii,indent,separators,sort_keys");
    tm_value *ascii = arg(c, 0, "ensure_ascii"), *ind = arg(c, 1, "indent"), *seps = arg(c, 2, "separators");
    tm_value *sort = arg(c, 3, "sort_keys");
    tm_json_opts o = {.ascii = ascii && tm_truthy(*ascii), .sort_keys = sort && tm_truthy(*sort)};
    if (ind && ind->kind == V_STR) o.indent = tm_strdup(S->a, ind->str.s, ind->str.n);
    else if (ind && ind->kind != V_NONE) {
        int64_t n = need_int(S, c, ind, 0, "indent");
        if (n < 0) n = 0;
        if (n > 100) n = 100;
        char *p = tm_alloc(S->a, (size_t)n + 1);
        memset(p, ' ', (size_t)n);
        o.indent = p;
    }
    if (seps && seps->kind != V_NONE) {
        if (seps->kind != V_LIST || seps->list->gen || seps->list->n != 2 || seps->list->items[0].kind != V_STR ||
            seps->list->items[1].kind != V_STR)
            tm_fail(S->a, "TypeError: line %d: tojson: separators must be a pair of strings (item, key)", c->line);
        o.item_sep = tm_strdup(S->a, seps->list->items[0].str.s, seps->list->items[0].str.n);
        o.key_sep = tm_strdup(S->a, seps->list->items[1].str.s, seps->list->items[1].str.n);
    }
    tm_buf b = {0};
    tm_tojson(S->a, &b, x, &o, 0);
    return buf_value(&b);
}

/* select/reject/selectattr/rejectattr: keep items whose test (or truth) matches. */
static tm_value select_items(tm_state *S, tm_value x, const argv_t *c, bool attr, bool keep) {
    tm_list *items = tm_truthy(x) ? tm_iter(S, x, c->line) : tm_list_new(S->a, 1), *l; /* Jinja: `if seq:` */
    tm_value out = new_list(S, items->n, &l);
    int first = 0;
    tm_value path = {0};
    if (attr) path = need_str(S, c, arg(c, first++, NULL), "attribute");
    tm_value *tname = arg(c, first, NULL);
    const char *test = NULL;
    if (tname) {
        tm_value t = need_str(S, c, tname, "test name");
        test = tm_strdup(S->a, t.str.s, t.str.n);
        if (!tm_has_test(test)) tm_fail(S->a, "TemplateRuntimeError: line %d: no test named '%s'", c->line, test);
    }
    for (size_t i = 0; i < items->n; i++) {
        tm_value v = attr ? get_path(S, items->items[i], path) : items->items[i];
        bool ok = test ? tm_test(S, test, v, c->args + first + 1, c->nargs - first - 1, c->line) : tm_truthy(v);
        if (ok == keep) tm_list_push(S->a, l, items->items[i]);
    }
    l->gen = true;
    return out;
}

static tm_value map_items(tm_state *S, tm_scope *sc, tm_value x, const argv_t *c) {
    tm_list *items = tm_truthy(x) ? tm_iter(S, x, c->line) : tm_list_new(S->a, 1), *l; /* Jinja: `if seq:` */
    tm_value out = new_list(S, items->n, &l);
    tm_value *attribute = arg(c, -1, "attribute"), *dflt = arg(c, -1, "default");
    for (size_t i = 0; i < items->n; i++) {
        tm_value v;
        if (attribute) {
            v = get_path(S, items->items[i], need_str(S, c, attribute, "attribute"));
            if (v.kind == V_UNDEF && dflt) v = *dflt;
        } else {
            tm_value f = need_str(S, c, arg(c, 0, NULL), "filter name");
            const char *fname = tm_strdup(S->a, f.str.s, f.str.n);
            if (!tm_has_filter(fname)) tm_fail(S->a, "TemplateRuntimeError: line %d: no filter named '%s'", c->line, fname);
            v = tm_filter(S, sc, fname, items->items[i], c->args + 1, c->nargs - 1, c->kwnames, c->kwargs, c->nkw, c->line);
        }
        tm_list_push(S->a, l, v);
    }
    l->gen = true;
    return out;
}

/* Case-insensitive key for unique/sort, as Jinja compares strings by default. */
static tm_value fold(tm_state *S, tm_value v, bool case_sensitive) {
    return v.kind == V_STR && !case_sensitive ? map_case(S, v, 0) : v;
}

static tm_value unique(tm_state *S, tm_value x, const argv_t *c) {
    check_args(S, c, 2, "case_sensitive,attribute");
    tm_value *cs = arg(c, 0, "case_sensitive"), *attr = arg(c, 1, "attribute");
    tm_list *items = tm_iter(S, x, c->line), *l, *seen = tm_list_new(S->a, items->n);
    tm_value out = new_list(S, items->n, &l);
    for (size_t i = 0; i < items->n; i++) {
        tm_value k = attr ? get_path(S, items->items[i], need_str(S, c, attr, "attribute")) : items->items[i];
        k = fold(S, k, cs && tm_truthy(*cs));
        bool dup = false;
        for (size_t j = 0; j < seen->n && !dup; j++) dup = tm_equal(seen->items[j], k);
        if (dup) continue;
        tm_list_push(S->a, seen, k);
        tm_list_push(S->a, l, items->items[i]);
    }
    l->gen = true;
    return out;
}

static tm_value sort_items(tm_state *S, tm_value x, const argv_t *c) {
    check_args(S, c, 3, "reverse,case_sensitive,attribute");
    tm_value *rev = arg(c, 0, "reverse"), *cs = arg(c, 1, "case_sensitive"), *attr = arg(c, 2, "attribute");
    tm_list *items = tm_iter(S, x, c->line), *l;
    tm_value out = new_list(S, items->n, &l);
    tm_value *keys = tm_alloc(S->a, (items->n + 1) * sizeof *keys);
    for (size_t i = 0; i < items->n; i++) {
        tm_value k = attr ? get_path(S, items->items[i], need_str(S, c, attr, "attribute")) : items->items[i];
        keys[i] = fold(S, k, cs && tm_truthy(*cs));
        tm_list_push(S->a, l, items->items[i]);
    }
    bool desc = rev && tm_truthy(*rev);
    for (size_t i = 1; i < l->n; i++) /* insertion sort: stable, and chat lists are short */
        for (size_t j = i; j > 0; j--) {
            int cmp = tm_compare(S->a, keys[j - 1], keys[j], "<");
            if (desc ? cmp >= 0 : cmp <= 0) break;
            tm_value t = keys[j]; keys[j] = keys[j - 1]; keys[j - 1] = t;
            t = l->items[j]; l->items[j] = l->items[j - 1]; l->items[j - 1] = t;
        }
    return out;
}

static tm_value to_number(tm_state *S, tm_value x, const argv_t *c, bool is_int) {
    tm_value *dflt = arg(c, 0, "default");
    tm_value d = dflt ? *dflt : is_int ? tm_int(0) : tm_float(0);
    switch (x.kind) {
    case V_INT: return is_int ? x : tm_float((double)x.i);
    case V_BOOL: return is_int ? tm_int(x.b) : tm_float(x.b);
    case V_FLOAT:
        if (!is_int) return x;
        if (!isfinite(x.f) || fabs(x.f) >= 9.2e18) return d;
        return tm_int((int64_t)x.f);
    case V_STR: {
        char buf[64];
        tm_value t = strip(x, NULL, true, true);
        if (!t.str.n || t.str.n >= sizeof buf) return d;
        memcpy(buf, t.str.s, t.str.n);
        buf[t.str.n] = '\0';
        char *end;
        if (is_int) {
            int64_t base = need_int(S, c, arg(c, 1, "base"), 10, "base");
            if (base < 0 || base == 1 || base > 36) base = 10;
            long long v = strtoll(buf, &end, (int)base);
            if (*end == '\0') return tm_int(v);
        }
        double f = strtod(buf, &end);
        if (*end != '\0') return d;
        if (is_int) return isfinite(f) && fabs(f) < 9.2e18 ? tm_int((int64_t)f) : d;
        return tm_float(f);
    }
    default: return d;
    }
}

static tm_value round_filter(tm_state *S, tm_value x, const argv_t *c) {
    check_args(S, c, 2, "precision,method");
    int64_t prec = need_int(S, c, arg(c, 0, "precision"), 0, "precision");
    tm_value *m = arg(c, 1, "method");
    const char *method = m && m->kind == V_STR ? m->str.s : "common";
    if (x.kind != V_INT && x.kind != V_FLOAT && x.kind != V_BOOL)
        tm_fail(S->a, "TypeError: line %d: round needs a number, not %s", c->line, tm_type_name(x));
    double v = x.kind == V_FLOAT ? x.f : x.kind == V_INT ? (double)x.i : x.b;
    if (prec < 0 || prec > 15) prec = prec < 0 ? 0 : 15;
    double scale = pow(10, (double)prec);
    if (!strncmp(method, "floor", 5)) return tm_float(floor(v * scale) / scale);
    if (!strncmp(method, "ceil", 4)) return tm_float(ceil(v * scale) / scale);
    if (x.kind != V_FLOAT) return x; /* round(int, n) stays an int */
    char buf[400];
    snprintf(buf, sizeof buf, "%.*f", (int)prec, v); /* correctly rounded, ties to even: Python's round */
    return tm_float(strtod(buf, NULL));
}

static tm_value agg(tm_state *S, tm_value x, const argv_t *c, int which) { /* 0 sum, 1 min, 2 max */
    tm_list *items = tm_iter(S, x, c->line);
    tm_value *attr = arg(c, -1, "attribute");
    if (which == 0) {
        tm_value *start = arg(c, 1, "start");
        tm_value acc = start ? *start : tm_int(0);
        for (size_t i = 0; i < items->n; i++) {
            tm_value v = attr ? get_path(S, items->items[i], need_str(S, c, attr, "attribute")) : items->items[i];
            if ((acc.kind != V_INT && acc.kind != V_FLOAT) || (v.kind != V_INT && v.kind != V_FLOAT && v.kind != V_BOOL))
                tm_fail(S->a, "TypeError: line %d: sum of %s and %s", c->line, tm_type_name(acc), tm_type_name(v));
            if (acc.kind == V_INT && v.kind != V_FLOAT) {
                int64_t r;
                if (__builtin_add_overflow(acc.i, v.kind == V_INT ? v.i : v.b, &r))
                    tm_fail(S->a, "OverflowError: line %d: sum outside 64 bits", c->line);
                acc = tm_int(r);
            } else {
                acc = tm_float((acc.kind == V_INT ? (double)acc.i : acc.f) + (v.kind == V_FLOAT ? v.f : v.kind == V_INT ? (double)v.i : v.b));
            }
        }
        return acc;
    }
    if (!items->n) return tm_undef("No aggregated item, sequence was empty.");
    tm_value *cs = arg(c, 0, "case_sensitive");
    size_t best = 0;
    tm_value bk = {0};
    for (size_t i = 0; i < items->n; i++) {
        tm_value v = attr ? get_path(S, items->items[i], need_str(S, c, attr, "attribute")) : items->items[i];
        v = fold(S, v, cs && tm_truthy(*cs));
        if (i == 0 || (which == 1 ? tm_compare(S->a, v, bk, "<") < 0 : tm_compare(S->a, v, bk, ">") > 0)) {
            best = i;
            bk = v;
        }
    }
    return items->items[best];
}

tm_value tm_filter(tm_state *S, tm_scope *sc, const char *name, tm_value x, tm_value *args, int nargs,
                   const char **kwnames, tm_value *kwargs, int nkw, int line) {
    argv_t c = {.args = args, .kwargs = kwargs, .kwnames = kwnames, .nargs = nargs, .nkw = nkw, .fname = name, .line = line};
    tm_list *l, *items;
    tm_value out;
    if (is(name, "default") || is(name, "d")) {
        check_args(S, &c, 2, "default_value,boolean");
        tm_value *d = arg(&c, 0, "default_value"), *b = arg(&c, 1, "boolean");
        bool use = x.kind == V_UNDEF || (b && tm_truthy(*b) && !tm_truthy(x));
        return use ? (d ? *d : empty_str()) : x;
    }
    if (is(name, "tojson")) return tojson(S, x, &c);
    if (is(name, "format")) { /* "%s: %s"|format(a, b) is "%s: %s" % (a, b); with name=value, % {names: values} */
        if (nargs && nkw)
            tm_fail(S->a, "FilterArgumentError: line %d: can't handle positional and keyword arguments at the same time", line);
        tm_value all;
        if (nkw) {
            all = (tm_value){.kind = V_DICT, .dict = tm_dict_new(S->a)};
            for (int k = 0; k < nkw; k++) tm_dict_set(S->a, all.dict, tm_strn(kwnames[k], strlen(kwnames[k])), kwargs[k]);
        } else {
            tm_value out_t = new_list(S, (size_t)nargs + 1, &l);
            for (int k = 0; k < nargs; k++) tm_list_push(S->a, l, args[k]);
            l->tuple = true;
            all = out_t;
        }
        return tm_percent_format(S, str_of(S, x), all, line);
    }
    if (is(name, "safe") || is(name, "string")) {
        tm_value s = str_of(S, x);
        s.markup = is(name, "safe") || x.markup;
        return s;
    }
    if (is(name, "length") || is(name, "count")) {
        switch (x.kind) {
        case V_UNDEF: return tm_int(0);
        case V_STR: return tm_int((int64_t)char_count(x));
        case V_LIST:
            if (x.list->gen) break;
            return tm_int((int64_t)x.list->n);
        case V_DICT: return tm_int((int64_t)x.dict->n);
        default: break;
        }
        tm_fail(S->a, "TypeError: line %d: object of type '%s' has no len()", line, tm_type_name(x));
    }
    if (is(name, "items")) return items_of(S, x, line);
    if (is(name, "list")) {
        items = tm_iter(S, x, line);
        out = new_list(S, items->n, &l);
        for (size_t i = 0; i < items->n; i++) tm_list_push(S->a, l, items->items[i]);
        return out;
    }
    if (is(name, "join")) {
        check_args(S, &c, 2, "d,attribute");
        tm_value *sep = arg(&c, 0, "d"), *attr = arg(&c, 1, "attribute");
        tm_value sv = sep ? str_of(S, *sep) : empty_str();
        items = tm_iter(S, x, line);
        tm_buf b = {0};
        for (size_t i = 0; i < items->n; i++) {
            if (i) tm_buf_put(S->a, &b, sv.str.s, sv.str.n);
            tm_value v = attr ? get_path(S, items->items[i], need_str(S, &c, attr, "attribute")) : items->items[i];
            tm_to_str(S->a, &b, v);
        }
        return buf_value(&b);
    }
    if (is(name, "first") || is(name, "last")) {
        if (is(name, "last") && x.kind == V_LIST && x.list->gen)
            tm_fail(S->a, "TypeError: line %d: 'generator' object is not reversible", line);
        items = tm_iter(S, x, line);
        if (!items->n) return tm_undef(is(name, "first") ? "No first item, sequence was empty." : "No last item, sequence was empty.");
        return items->items[is(name, "first") ? 0 : items->n - 1];
    }
    if (is(name, "selectattr") || is(name, "rejectattr")) return select_items(S, x, &c, true, is(name, "selectattr"));
    if (is(name, "select") || is(name, "reject")) return select_items(S, x, &c, false, is(name, "select"));
    if (is(name, "map")) return map_items(S, sc, x, &c);
    if (is(name, "unique")) return unique(S, x, &c);
    if (is(name, "sort")) return sort_items(S, x, &c);
    if (is(name, "dictsort")) {
        if (x.kind != V_DICT) tm_fail(S->a, "TypeError: line %d: dictsort needs a mapping", line);
        tm_value pairs = items_of(S, x, line);
        argv_t none = {.fname = "sort", .line = line};
        tm_list *keys = tm_list_new(S->a, pairs.list->n); /* sort by key: pair order is key order here */
        for (size_t i = 0; i < pairs.list->n; i++) tm_list_push(S->a, keys, pairs.list->items[i]);
        return sort_items(S, tm_list_value(keys), &none);
    }
    if (is(name, "reverse")) {
        if (x.kind == V_STR) {
            tm_buf b = {0};
            for (size_t i = x.str.n; i > 0;) {
                size_t st = i - 1;
                while (st > 0 && ((unsigned char)x.str.s[st] & 0xC0) == 0x80) st--;
                tm_buf_put(S->a, &b, x.str.s + st, i - st);
                i = st;
            }
            return buf_value(&b);
        }
        items = tm_iter(S, x, line);
        out = new_list(S, items->n, &l);
        for (size_t i = items->n; i > 0; i--) tm_list_push(S->a, l, items->items[i - 1]);
        return out;
    }
    if (is(name, "sum")) return agg(S, x, &c, 0);
    if (is(name, "min")) return agg(S, x, &c, 1);
    if (is(name, "max")) return agg(S, x, &c, 2);
    if (is(name, "int") || is(name, "float")) return to_number(S, x, &c, is(name, "int"));
    if (is(name, "abs")) {
        if (x.kind == V_INT) {
            if (x.i == INT64_MIN) tm_fail(S->a, "OverflowError: line %d: abs outside 64 bits", line);
            return tm_int(x.i < 0 ? -x.i : x.i);
        }
        if (x.kind == V_FLOAT) return tm_float(fabs(x.f));
        if (x.kind == V_BOOL) return tm_int(x.b);
        tm_fail(S->a, "TypeError: line %d: bad operand type for abs(): '%s'", line, tm_type_name(x));
    }
    if (is(name, "round")) return round_filter(S, x, &c);
    if (is(name, "attr")) {
        tm_value a = need_str(S, &c, arg(&c, 0, NULL), "attribute");
        return tm_getattr(S, x, a.str.s, a.str.n);
    }
    if (is(name, "indent")) {
        check_args(S, &c, 3, "width,first,blank");
        return indent(S, str_of(S, x), &c);
    }
    /* string filters: the value as text first */
    tm_value s = str_of(S, x);
    if (is(name, "trim")) {
        check_args(S, &c, 1, "chars");
        tm_value *chars = arg(&c, 0, "chars");
        if (chars && chars->kind != V_NONE) need_str(S, &c, chars, "chars");
        return strip(s, chars, true, true);
    }
    if (is(name, "lower")) return map_case(S, s, 0);
    if (is(name, "upper")) return map_case(S, s, 1);
    if (is(name, "title")) return map_case(S, s, 2);
    if (is(name, "capitalize")) return map_case(S, s, 3);
    if (is(name, "replace")) {
        check_args(S, &c, 3, "old,new,count");
        tm_value *old = arg(&c, 0, "old"), *new = arg(&c, 1, "new");
        if (!old || !new) tm_fail(S->a, "TypeError: line %d: replace needs the old and the new text", line);
        return replace(S, s, str_of(S, *old), str_of(S, *new), need_int(S, &c, arg(&c, 2, "count"), -1, "count"));
    }
    tm_fail(S->a, "TemplateRuntimeError: line %d: no filter named '%s'", line, name);
}
