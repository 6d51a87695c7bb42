/* Template evaluator: walks the AST with Jinja's scoping (a for loop's body gets a fresh scope every
 * iteration, a macro call a fresh scope over the one it was defined in, `if` none) and Python's operator
 * semantics, and the public entry points of chat/template.h. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/template.h"
#include "chat/tmpl_internal.h"

enum {
    MAX_EVAL_DEPTH = 1500,        /* C recursion of the evaluator (macro recursion included) */
    MAX_CALL_DEPTH = 200,         /* nested macro calls */
    MAX_VALUE_DEPTH = 100,        /* nesting of the JSON input */
};
static const int64_t k_max_steps = 5 * 1000 * 1000;  /* evaluation steps: stops runaway loops */
static const size_t k_max_output = 16u << 20;        /* bytes of rendered text */
static const size_t k_max_memory = 256u << 20;       /* arena bytes of one render */

struct sd_tmpl {
    tm_arena arena;
    tm_node *root;
};

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static void count_step(tm_state *S) {
    if (--S->steps_left < 0) tm_fail(S->a, "RuntimeError: template exceeded %lld evaluation steps", (long long)k_max_steps);
}

_Noreturn void tm_raise_undef(tm_state *S, tm_value u) {
    tm_fail(S->a, "UndefinedError: %s", u.undef ? u.undef : "undefined value");
}

static const char *msgf(tm_state *S, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *msgf(tm_state *S, const char *fmt, ...) {
    char tmp[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return tm_strdup(S->a, tmp, strlen(tmp));
}

/* Jinja's object_type_repr: "None", "dict object", "list object", ... */
static const char *type_repr(tm_value v) {
    switch (v.kind) {
    case V_NONE: return "None";
    case V_BOOL: return "bool object";
    case V_INT: return "int object";
    case V_FLOAT: return "float object";
    case V_STR: return "str object";
    case V_LIST: return v.list->gen ? "generator object" : v.list->tuple ? "tuple object" : "list object";
    case V_DICT: return "dict object";
    case V_NS: return "jinja2.utils.Namespace object";
    default: return "object";
    }
}

static const char *repr_text(tm_state *S, tm_value v) {
    tm_buf b = {0};
    tm_repr(S->a, &b, v);
    if (b.n > 200) b.p[200] = '\0';
    return b.p;
}

static tm_value missing_attr(tm_state *S, tm_value obj, tm_value name) {
    if (obj.kind == V_NONE || name.kind == V_STR)
        return tm_undef(msgf(S, "'%s' has no attribute %s", type_repr(obj), repr_text(S, name)));
    return tm_undef(msgf(S, "%s has no element %s", type_repr(obj), repr_text(S, name)));
}

/* ---- strings by code point (Python indexes characters, not bytes) ---- */
static size_t utf8_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}
static size_t utf8_offset(const char *s, size_t n, size_t chars) { /* byte offset of character `chars` */
    size_t i = 0;
    for (; i < n && chars; chars--) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    return i;
}

static bool as_index(tm_value k, int64_t *i) {
    if (k.kind == V_INT) *i = k.i;
    else if (k.kind == V_BOOL) *i = k.b;
    else return false;
    return true;
}

tm_value tm_getitem(tm_state *S, tm_value obj, tm_value key) {
    int64_t i;
    switch (obj.kind) {
    case V_UNDEF: tm_raise_undef(S, obj);
    case V_DICT: case V_NS: {
        tm_value *v = tm_dict_get(obj.dict, key);
        if (v) return *v;
        break;
    }
    case V_LIST:
        if (as_index(key, &i) && !obj.list->gen) {
            int64_t n = (int64_t)obj.list->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return obj.list->items[i];
        }
        break;
    case V_STR:
        if (as_index(key, &i)) {
            int64_t n = (int64_t)utf8_count(obj.str.s, obj.str.n);
            if (i < 0) i += n;
            if (i >= 0 && i < n) {
                size_t at = utf8_offset(obj.str.s, obj.str.n, (size_t)i);
                size_t end = utf8_offset(obj.str.s + at, obj.str.n - at, 1) + at;
                return tm_strn(obj.str.s + at, end - at);
            }
        }
        break;
    default: break;
    }
    if (key.kind == V_STR) { /* obj["items"] falls back to the attribute, as in Jinja */
        tm_value m = tm_method(S, obj, key.str.s, key.str.n);
        if (m.kind != V_UNDEF) return m;
    }
    return missing_attr(S, obj, key);
}

tm_value tm_getattr(tm_state *S, tm_value obj, const char *name, size_t n) {
    if (obj.kind == V_UNDEF) tm_raise_undef(S, obj);
    tm_value m = tm_method(S, obj, name, n);
    if (m.kind != V_UNDEF) return m;
    tm_value key = tm_strn(name, n);
    if (obj.kind == V_DICT || obj.kind == V_NS) {
        tm_value *v = tm_dict_get(obj.dict, key);
        if (v) return *v;
    }
    return missing_attr(S, obj, key);
}

static int64_t clamp_slice(int64_t v, int64_t n, bool neg_step) {
    if (v < 0) v += n;
    if (v < 0) return neg_step ? -1 : 0;
    if (v >= n) return neg_step ? n - 1 : n;
    return v;
}

static tm_value slice(tm_state *S, tm_value obj, tm_value *start, tm_value *stop, tm_value *step, int line) {
    if (obj.kind == V_UNDEF) tm_raise_undef(S, obj);
    if ((obj.kind != V_LIST && obj.kind != V_STR) || (obj.kind == V_LIST && obj.list->gen))
        tm_fail(S->a, "TypeError: line %d: '%s' object is not subscriptable", line, tm_type_name(obj));
    int64_t st = 1, n = obj.kind == V_LIST ? (int64_t)obj.list->n : (int64_t)utf8_count(obj.str.s, obj.str.n);
    tm_value *parts[3] = {start, stop, step};
    for (int k = 0; k < 3; k++)
        if (parts[k] && parts[k]->kind != V_NONE && parts[k]->kind != V_INT)
            tm_fail(S->a, "TypeError: line %d: slice indices must be integers or None", line);
    if (step && step->kind == V_INT) st = step->i;
    if (st == 0) tm_fail(S->a, "ValueError: line %d: slice step cannot be zero", line);
    bool neg = st < 0;
    int64_t lo = start && start->kind == V_INT ? clamp_slice(start->i, n, neg) : neg ? n - 1 : 0;
    int64_t hi = stop && stop->kind == V_INT ? clamp_slice(stop->i, n, neg) : neg ? -1 : n;
    tm_list *l = tm_list_new(S->a, 4);
    tm_buf b = {0};
    for (int64_t i = lo; neg ? i > hi : i < hi; i += st) {
        tm_value item = tm_getitem(S, obj, tm_int(i));
        if (obj.kind == V_LIST) tm_list_push(S->a, l, item);
        else tm_buf_put(S->a, &b, item.str.s, item.str.n);
    }
    if (obj.kind == V_STR) return tm_strn(b.p ? b.p : "", b.n);
    l->tuple = obj.list->tuple;
    return tm_list_value(l);
}

tm_list *tm_iter(tm_state *S, tm_value v, int line) {
    tm_list *l;
    switch (v.kind) {
    case V_UNDEF: return tm_list_new(S->a, 1);
    case V_LIST: return v.list;
    case V_DICT:
        l = tm_list_new(S->a, v.dict->n);
        for (size_t i = 0; i < v.dict->n; i++) tm_list_push(S->a, l, v.dict->keys[i]);
        return l;
    case V_STR:
        l = tm_list_new(S->a, v.str.n);
        for (size_t i = 0; i < v.str.n;) {
            size_t k = utf8_offset(v.str.s + i, v.str.n - i, 1);
            tm_list_push(S->a, l, tm_strn(v.str.s + i, k));
            i += k;
        }
        return l;
    default:
        tm_fail(S->a, "TypeError: line %d: '%s' object is not iterable", line, tm_type_name(v));
    }
}

/* ---- scopes ---- */
static tm_scope *scope_new(tm_state *S, tm_scope *parent) {
    tm_scope *sc = tm_alloc(S->a, sizeof *sc);
    sc->vars = tm_dict_new(S->a);
    sc->parent = parent;
    return sc;
}

static void scope_set(tm_state *S, tm_scope *sc, const char *name, tm_value v) {
    tm_dict_set(S->a, sc->vars, tm_strn(name, strlen(name)), v);
}

static tm_value lookup(tm_state *S, tm_scope *sc, const char *name) {
    size_t n = strlen(name);
    for (; sc; sc = sc->parent) {
        tm_value *v = tm_dict_gets(sc->vars, name, n);
        if (v) return *v;
    }
    tm_value g = tm_global(name);
    if (g.kind != V_UNDEF) return g;
    return tm_undef(msgf(S, "'%s' is undefined", name));
}

/* ---- operators ---- */
static bool is_num(tm_value v) { return v.kind == V_INT || v.kind == V_FLOAT || v.kind == V_BOOL; }
static double fnum(tm_value v) { return v.kind == V_FLOAT ? v.f : v.kind == V_INT ? (double)v.i : v.b; }
static int64_t inum(tm_value v) { return v.kind == V_INT ? v.i : v.b; }

static const char *op_text(int op) {
    switch (op) {
    case 'F': return "//";
    case 'P': return "**";
    case '+': return "+";
    case '-': return "-";
    case '*': return "*";
    case '/': return "/";
    case '%': return "%";
    default: return "?";
    }
}

_Noreturn static void bad_operands(tm_state *S, int op, tm_value x, tm_value y, int line) {
    if (op == '+' && (x.kind == V_STR || (x.kind == V_LIST && !x.list->gen)))
        tm_fail(S->a, "TypeError: line %d: can only concatenate %s (not \"%s\") to %s", line, tm_type_name(x),
                tm_type_name(y), tm_type_name(x));
    tm_fail(S->a, "TypeError: line %d: unsupported operand type(s) for %s: '%s' and '%s'", line, op_text(op),
            tm_type_name(x), tm_type_name(y));
}

static tm_value repeat(tm_state *S, tm_value seq, int64_t times) {
    size_t unit = seq.kind == V_STR ? seq.str.n : seq.list->n;
    if (times < 0) times = 0;
    if (unit && (uint64_t)times > S->out_limit / unit)
        tm_fail(S->a, "MemoryError: repetition result larger than %zu", S->out_limit);
    if (seq.kind == V_STR) {
        tm_buf b = {0};
        for (int64_t i = 0; i < times; i++) tm_buf_put(S->a, &b, seq.str.s, seq.str.n);
        return tm_strn(b.p ? b.p : "", b.n);
    }
    tm_list *l = tm_list_new(S->a, unit * (size_t)times + 1);
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < unit; k++) tm_list_push(S->a, l, seq.list->items[k]);
    l->tuple = seq.list->tuple;
    return tm_list_value(l);
}

static tm_value int_arith(tm_state *S, int op, int64_t a, int64_t b, int line) {
    int64_t r;
    switch (op) {
    case '+': if (__builtin_add_overflow(a, b, &r)) break; return tm_int(r);
    case '-': if (__builtin_sub_overflow(a, b, &r)) break; return tm_int(r);
    case '*': if (__builtin_mul_overflow(a, b, &r)) break; return tm_int(r);
    case 'F': case '%': {
        if (b == 0) tm_fail(S->a, "ZeroDivisionError: line %d: integer division or modulo by zero", line);
        if (a == INT64_MIN && b == -1) break;
        int64_t q = a / b, m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) { q--; m += b; } /* Python floors */
        return tm_int(op == 'F' ? q : m);
    }
    case 'P': {
        if (b < 0) return tm_float(pow((double)a, (double)b));
        int64_t acc = 1;
        for (int64_t i = 0; i < b; i++) {
            if (__builtin_mul_overflow(acc, a, &acc)) goto overflow;
            if (acc == 0 || acc == 1) break; /* stays there; also bounds the loop */
            if (acc == -1 && a == -1) { acc = (b % 2) ? -1 : 1; break; }
        }
        return tm_int(acc);
    }
    }
overflow:
    tm_fail(S->a, "OverflowError: line %d: integer result outside 64 bits", line);
}

static tm_value float_arith(tm_state *S, int op, double a, double b, int line) {
    switch (op) {
    case '+': return tm_float(a + b);
    case '-': return tm_float(a - b);
    case '*': return tm_float(a * b);
    case '/':
        if (b == 0) tm_fail(S->a, "ZeroDivisionError: line %d: division by zero", line);
        return tm_float(a / b);
    case 'F': case '%': {
        if (b == 0) tm_fail(S->a, "ZeroDivisionError: line %d: float modulo", line);
        double m = fmod(a, b);
        if (m != 0 && ((m < 0) != (b < 0))) m += b;
        return tm_float(op == 'F' ? floor((a - m) / b + 0.5) : m);
    }
    default: return tm_float(pow(a, b));
    }
}

static tm_value html_escape(tm_state *S, tm_value s) {
    tm_buf b = {0};
    for (size_t i = 0; i < s.str.n; i++) {
        char c = s.str.s[i];
        const char *e = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;" : c == '\'' ? "&#39;" : NULL;
        if (e) tm_buf_put(S->a, &b, e, strlen(e));
        else tm_buf_putc(S->a, &b, c);
    }
    tm_value r = tm_strn(b.p ? b.p : "", b.n);
    r.markup = true;
    return r;
}

static tm_value binop(tm_state *S, int op, tm_value x, tm_value y, int line) {
    if (op == '~') {
        tm_buf b = {0};
        tm_to_str(S->a, &b, x);
        tm_to_str(S->a, &b, y);
        return tm_strn(b.p ? b.p : "", b.n);
    }
    if (op == '%' && x.kind == V_STR) return tm_percent_format(S, x, y, line); /* '%s' % undefined is '' */
    if (x.kind == V_UNDEF) tm_raise_undef(S, x);
    if (y.kind == V_UNDEF) tm_raise_undef(S, y);
    if (is_num(x) && is_num(y)) {
        if (op == '/') return float_arith(S, op, fnum(x), fnum(y), line);
        if (x.kind != V_FLOAT && y.kind != V_FLOAT) return int_arith(S, op, inum(x), inum(y), line);
        return float_arith(S, op, fnum(x), fnum(y), line);
    }
    if (op == '+' && x.kind == V_STR && y.kind == V_STR && x.markup != y.markup) { /* Markup escapes the other */
        tm_value r = binop(S, '+', x.markup ? x : html_escape(S, x), y.markup ? y : html_escape(S, y), line);
        r.markup = true;
        return r;
    }
    if (op == '+' && x.kind == V_STR && y.kind == V_STR) {
        if (x.str.n + y.str.n > S->out_limit) tm_fail(S->a, "MemoryError: string longer than %zu", S->out_limit);
        char *p = tm_alloc(S->a, x.str.n + y.str.n + 1);
        memcpy(p, x.str.s, x.str.n);
        memcpy(p + x.str.n, y.str.s, y.str.n);
        tm_value r = tm_strn(p, x.str.n + y.str.n);
        r.markup = x.markup;
        return r;
    }
    if (op == '+' && x.kind == V_LIST && y.kind == V_LIST && x.list->tuple == y.list->tuple && !x.list->gen &&
        !y.list->gen) {
        tm_list *l = tm_list_new(S->a, x.list->n + y.list->n);
        for (size_t i = 0; i < x.list->n; i++) tm_list_push(S->a, l, x.list->items[i]);
        for (size_t i = 0; i < y.list->n; i++) tm_list_push(S->a, l, y.list->items[i]);
        l->tuple = x.list->tuple;
        return tm_list_value(l);
    }
    bool xseq = x.kind == V_STR || (x.kind == V_LIST && !x.list->gen);
    bool yseq = y.kind == V_STR || (y.kind == V_LIST && !y.list->gen);
    if (op == '*' && xseq && (y.kind == V_INT || y.kind == V_BOOL))
        return repeat(S, x, inum(y));
    if (op == '*' && yseq && (x.kind == V_INT || x.kind == V_BOOL))
        return repeat(S, y, inum(x));
    bad_operands(S, op, x, y, line);
}

static bool contains(tm_state *S, tm_value needle, tm_value hay, int line) {
    switch (hay.kind) {
    case V_UNDEF: return false;
    case V_STR:
        if (needle.kind == V_UNDEF) tm_raise_undef(S, needle);
        if (needle.kind != V_STR)
            tm_fail(S->a, "TypeError: line %d: 'in <string>' requires string as left operand, not %s", line,
                    tm_type_name(needle));
        return needle.str.n == 0 || memmem(hay.str.s, hay.str.n, needle.str.s, needle.str.n) != NULL;
    case V_LIST:
        for (size_t i = 0; i < hay.list->n; i++)
            if (tm_equal(hay.list->items[i], needle)) return true;
        return false;
    case V_DICT: case V_NS: return tm_dict_get(hay.dict, needle) != NULL;
    default:
        tm_fail(S->a, "TypeError: line %d: argument of type '%s' is not iterable", line, tm_type_name(hay));
    }
}

static bool compare(tm_state *S, const char *op, tm_value x, tm_value y, int line) {
    if (!strcmp(op, "==")) return tm_equal(x, y);
    if (!strcmp(op, "!=")) return !tm_equal(x, y);
    if (!strcmp(op, "in")) return contains(S, x, y, line);
    if (!strcmp(op, "notin")) return !contains(S, x, y, line);
    if (x.kind == V_UNDEF) tm_raise_undef(S, x);
    if (y.kind == V_UNDEF) tm_raise_undef(S, y);
    int c = tm_compare(S->a, x, y, op);
    if (!strcmp(op, "<")) return c < 0;
    if (!strcmp(op, ">")) return c > 0;
    if (!strcmp(op, "<=")) return c <= 0;
    return c >= 0;
}

/* ---- calls ---- */
typedef struct {
    tm_value *args, *kwargs;
    const char **kwnames;
    int nargs, nkw;
} call_args;

static call_args eval_args(tm_state *S, tm_scope *sc, const tm_node *n) {
    call_args c = {.nkw = n->nnames, .nargs = n->nkids - n->nnames, .kwnames = n->names};
    c.args = tm_alloc(S->a, ((size_t)n->nkids + 1) * sizeof *c.args);
    for (int i = 0; i < n->nkids; i++) c.args[i] = tm_eval(S, sc, n->kids[i]);
    c.kwargs = c.args + c.nargs;
    return c;
}

static int exec_body(tm_state *S, tm_scope *sc, const tm_node *body);

/* Binds a macro's arguments as Jinja's Macro.__call__ does: positional, then keyword, then defaults;
 * `caller` (a call block's body), `varargs` and `kwargs` catch the rest where the body uses them. */
static void bind_macro_args(tm_state *S, tm_scope *sc, const tm_node *def, tm_value *args, int nargs,
                            const char **kwnames, tm_value *kwargs, int nkw) {
    int special = def->op;
    if (nargs > def->nnames && !(special & MACRO_VARARGS))
        tm_fail(S->a, "TypeError: macro '%s' takes not more than %d argument(s)", def->name, def->nnames);
    tm_dict *extra = tm_dict_new(S->a);
    tm_value caller = tm_undef("No caller defined");
    for (int k = 0; k < nkw; k++) {
        int p = 0;
        while (p < def->nnames && strcmp(def->names[p], kwnames[k])) p++;
        if (p < def->nnames && p < nargs)
            tm_fail(S->a, "TypeError: macro '%s' got multiple values for argument '%s'", def->name, kwnames[k]);
        if (p < def->nnames) scope_set(S, sc, kwnames[k], kwargs[k]);
        else if (!strcmp(kwnames[k], "caller") && (special & MACRO_CALLER)) caller = kwargs[k];
        else tm_dict_set(S->a, extra, tm_strn(kwnames[k], strlen(kwnames[k])), kwargs[k]);
    }
    if (extra->n && !(special & MACRO_KWARGS)) {
        if (tm_dict_gets(extra, "caller", 6))
            tm_fail(S->a, "TypeError: macro '%s' was invoked with two values for the special caller argument. This is "
                          "most likely a bug.", def->name);
        tm_fail(S->a, "TypeError: macro '%s' takes no keyword argument '%.*s'", def->name, (int)extra->keys[0].str.n,
                extra->keys[0].str.s);
    }
    for (int p = 0; p < def->nnames; p++) {
        if (p < nargs) scope_set(S, sc, def->names[p], args[p]);
        else if (tm_dict_gets(sc->vars, def->names[p], strlen(def->names[p]))) continue;
        else if (def->kids[p]) scope_set(S, sc, def->names[p], tm_eval(S, sc, def->kids[p]));
        else scope_set(S, sc, def->names[p], tm_undef(msgf(S, "parameter '%s' was not provided", def->names[p])));
    }
    if (special & MACRO_CALLER) scope_set(S, sc, "caller", caller);
    if (special & MACRO_KWARGS) scope_set(S, sc, "kwargs", (tm_value){.kind = V_DICT, .dict = extra});
    if (special & MACRO_VARARGS) {
        tm_list *rest = tm_list_new(S->a, 4);
        for (int p = def->nnames; p < nargs; p++) tm_list_push(S->a, rest, args[p]);
        rest->tuple = true;
        scope_set(S, sc, "varargs", tm_list_value(rest));
    }
}

static tm_value call_macro(tm_state *S, const tm_macro *m, tm_value *args, int nargs, const char **kwnames,
                           tm_value *kwargs, int nkw, int line) {
    if (++S->call_depth > MAX_CALL_DEPTH)
        tm_fail(S->a, "RecursionError: line %d: macro calls nested more than %d deep", line, MAX_CALL_DEPTH);
    tm_scope *sc = scope_new(S, m->closure);
    bind_macro_args(S, sc, m->def, args, nargs, kwnames, kwargs, nkw);
    tm_buf *saved = S->out, out = {.limit = S->out_limit};
    S->out = &out;
    exec_body(S, sc, m->def->b);
    S->out = saved;
    S->call_depth--;
    return tm_strn(out.p ? out.p : "", out.n);
}

tm_value tm_call_value(tm_state *S, tm_value fn, tm_value *args, int nargs, const char **kwnames,
                       tm_value *kwargs, int nkw, int line) {
    if (fn.kind == V_MACRO) return call_macro(S, fn.mac, args, nargs, kwnames, kwargs, nkw, line);
    if (fn.kind == V_FUNC) return tm_call_builtin(S, fn.fn, args, nargs, kwnames, kwargs, nkw, line);
    if (fn.kind == V_LOOP) return tm_loop_call(S, fn.loop, args, nargs, nkw, line);
    if (fn.kind == V_UNDEF) tm_raise_undef(S, fn);
    tm_fail(S->a, "TypeError: line %d: '%s' object is not callable", line, tm_type_name(fn));
}

/* ---- expressions ---- */
static tm_value eval_compare(tm_state *S, tm_scope *sc, const tm_node *n) {
    tm_value left = tm_eval(S, sc, n->kids[0]);
    for (int k = 0; k < n->nnames; k++) {
        tm_value right = tm_eval(S, sc, n->kids[k + 1]);
        if (!compare(S, n->names[k], left, right, n->line)) return tm_bool(false);
        left = right;
    }
    return tm_bool(true);
}

static tm_value eval_inner(tm_state *S, tm_scope *sc, const tm_node *n) {
    switch (n->type) {
    case N_CONST: return n->v;
    case N_NAME: return lookup(S, sc, n->name);
    case N_LIST: case N_TUPLE: {
        tm_list *l = tm_list_new(S->a, (size_t)n->nkids);
        for (int i = 0; i < n->nkids; i++) tm_list_push(S->a, l, tm_eval(S, sc, n->kids[i]));
        l->tuple = n->type == N_TUPLE;
        return tm_list_value(l);
    }
    case N_DICT: {
        tm_value d = {.kind = V_DICT};
        d.dict = tm_dict_new(S->a);
        for (int i = 0; i + 1 < n->nkids; i += 2) {
            tm_value k = tm_eval(S, sc, n->kids[i]);
            if (k.kind == V_LIST && !k.list->tuple) tm_fail(S->a, "TypeError: line %d: unhashable type: 'list'", n->line);
            if (k.kind == V_DICT) tm_fail(S->a, "TypeError: line %d: unhashable type: 'dict'", n->line);
            tm_dict_set(S->a, d.dict, k, tm_eval(S, sc, n->kids[i + 1]));
        }
        return d;
    }
    case N_GETATTR: return tm_getattr(S, tm_eval(S, sc, n->a), n->name, strlen(n->name));
    case N_GETITEM: {
        tm_value obj = tm_eval(S, sc, n->a);
        return tm_getitem(S, obj, tm_eval(S, sc, n->b));
    }
    case N_SLICE: {
        tm_value obj = tm_eval(S, sc, n->a), parts[3];
        const tm_node *pn[3] = {n->b, n->c, n->d};
        for (int k = 0; k < 3; k++) parts[k] = pn[k] ? tm_eval(S, sc, pn[k]) : tm_none();
        return slice(S, obj, &parts[0], &parts[1], &parts[2], n->line);
    }
    case N_CALL: {
        tm_value fn = tm_eval(S, sc, n->a);
        call_args c = eval_args(S, sc, n);
        return tm_call_value(S, fn, c.args, c.nargs, c.kwnames, c.kwargs, c.nkw, n->line);
    }
    case N_FILTER: {
        tm_value x = tm_eval(S, sc, n->a);
        call_args c = eval_args(S, sc, n);
        return tm_filter(S, sc, n->name, x, c.args, c.nargs, c.kwnames, c.kwargs, c.nkw, n->line);
    }
    case N_TEST: {
        tm_value x = tm_eval(S, sc, n->a);
        call_args c = eval_args(S, sc, n);
        if (c.nkw) tm_fail(S->a, "TypeError: line %d: test '%s' takes no keyword arguments", n->line, n->name);
        return tm_bool(tm_test(S, n->name, x, c.args, c.nargs, n->line) != (n->op != 0));
    }
    case N_BINOP: {
        tm_value x = tm_eval(S, sc, n->a);
        return binop(S, n->op, x, tm_eval(S, sc, n->b), n->line);
    }
    case N_NEG: case N_POS: {
        tm_value x = tm_eval(S, sc, n->a);
        if (x.kind == V_UNDEF) tm_raise_undef(S, x);
        if (x.kind == V_FLOAT) return tm_float(n->type == N_NEG ? -x.f : x.f);
        if (x.kind == V_INT || x.kind == V_BOOL) {
            int64_t i = inum(x);
            if (n->type == N_NEG && i == INT64_MIN) tm_fail(S->a, "OverflowError: line %d: integer negation", n->line);
            return tm_int(n->type == N_NEG ? -i : i);
        }
        tm_fail(S->a, "TypeError: line %d: bad operand type for unary %c: '%s'", n->line,
                n->type == N_NEG ? '-' : '+', tm_type_name(x));
    }
    case N_NOT: return tm_bool(!tm_truthy(tm_eval(S, sc, n->a)));
    case N_AND: {
        tm_value x = tm_eval(S, sc, n->a);
        return tm_truthy(x) ? tm_eval(S, sc, n->b) : x;
    }
    case N_OR: {
        tm_value x = tm_eval(S, sc, n->a);
        return tm_truthy(x) ? x : tm_eval(S, sc, n->b);
    }
    case N_COMPARE: return eval_compare(S, sc, n);
    case N_COND:
        if (tm_truthy(tm_eval(S, sc, n->a))) return tm_eval(S, sc, n->b);
        return n->c ? tm_eval(S, sc, n->c) : tm_undef("the inline if-expression evaluated to false and no else section was defined.");
    default:
        tm_fail(S->a, "TemplateError: line %d: statement where an expression was expected", n->line);
    }
}

tm_value tm_eval(tm_state *S, tm_scope *sc, const tm_node *n) {
    count_step(S);
    if (++S->depth > MAX_EVAL_DEPTH) tm_fail(S->a, "RecursionError: line %d: template evaluation nested too deeply", n->line);
    tm_value v = eval_inner(S, sc, n);
    S->depth--;
    return v;
}

/* ---- statements ---- */
static void assign_targets(tm_state *S, tm_scope *sc, const char **names, int nnames, tm_value v, int line) {
    if (nnames == 1) {
        scope_set(S, sc, names[0], v);
        return;
    }
    tm_list *items = tm_iter(S, v, line);
    if ((int)items->n != nnames)
        tm_fail(S->a, "ValueError: line %d: %s values to unpack (expected %d, got %zu)", line,
                (int)items->n > nnames ? "too many" : "not enough", nnames, items->n);
    for (int k = 0; k < nnames; k++) scope_set(S, sc, names[k], items->items[k]);
}

/* Runs for-statement n over `over` in scope sc (depth0: how many `loop(...)` calls deep). */
static void run_for(tm_state *S, tm_scope *sc, const tm_node *n, tm_value over, int depth0) {
    tm_list *all = tm_iter(S, over, n->line), *items = all;
    tm_scope *body = scope_new(S, sc);
    if (n->d) { /* the loop filter runs first: loop.length counts what passes */
        items = tm_list_new(S->a, all->n);
        for (size_t i = 0; i < all->n; i++) {
            body->vars->n = 0;
            assign_targets(S, body, n->names, n->nnames, all->items[i], n->line);
            if (tm_truthy(tm_eval(S, body, n->d))) tm_list_push(S->a, items, all->items[i]);
        }
    }
    tm_loop *loop = tm_alloc(S->a, sizeof *loop);
    *loop = (tm_loop){.items = items, .depth0 = depth0, .node = n, .scope = sc};
    tm_value lv = {.kind = V_LOOP};
    lv.loop = loop;
    for (size_t i = 0; i < items->n; i++) {
        count_step(S);
        body->vars->n = 0; /* a fresh scope every iteration */
        loop->index0 = i;
        scope_set(S, body, "loop", lv);
        assign_targets(S, body, n->names, n->nnames, items->items[i], n->line);
        if (exec_body(S, body, n->b) == FLOW_BREAK) break;
    }
    if (!items->n && n->c) exec_body(S, scope_new(S, sc), n->c);
}

static int exec_for(tm_state *S, tm_scope *sc, const tm_node *n) {
    run_for(S, sc, n, tm_eval(S, sc, n->a), 0);
    return FLOW_NEXT;
}

tm_value tm_loop_call(tm_state *S, const tm_loop *l, tm_value *args, int nargs, int nkw, int line) {
    if (!l->node->op) tm_fail(S->a, "TypeError: The loop must have the 'recursive' marker to be called recursively.");
    if (nargs != 1 || nkw) tm_fail(S->a, "TypeError: line %d: loop() takes one argument, the items", line);
    if (++S->call_depth > MAX_CALL_DEPTH)
        tm_fail(S->a, "RecursionError: line %d: recursive loop nested more than %d deep", line, MAX_CALL_DEPTH);
    tm_buf *saved = S->out, out = {.limit = S->out_limit};
    S->out = &out;
    run_for(S, l->scope, l->node, args[0], l->depth0 + 1);
    S->out = saved;
    S->call_depth--;
    return tm_strn(out.p ? out.p : "", out.n);
}

/* Output of a body, captured (a set block, a filter block). */
static tm_value capture(tm_state *S, tm_scope *sc, const tm_node *body) {
    tm_buf *saved = S->out, out = {.limit = S->out_limit};
    S->out = &out;
    exec_body(S, sc, body);
    S->out = saved;
    return tm_strn(out.p ? out.p : "", out.n);
}

/* x through the filter chain of a filter block or a filtered set block (n's kids). */
static tm_value apply_filters(tm_state *S, tm_scope *sc, const tm_node *n, tm_value x) {
    for (int i = 0; i < n->nkids; i++) {
        const tm_node *f = n->kids[i];
        call_args c = eval_args(S, sc, f);
        x = tm_filter(S, sc, f->name, x, c.args, c.nargs, c.kwnames, c.kwargs, c.nkw, f->line);
    }
    return x;
}

/* {% call %}: the macro call with `caller`, a macro of the block's body, added to its keyword arguments. */
static tm_value call_block(tm_state *S, tm_scope *sc, const tm_node *n) {
    const tm_node *call = n->a;
    tm_value fn = tm_eval(S, sc, call->a);
    call_args c = eval_args(S, sc, call);
    tm_macro *m = tm_alloc(S->a, sizeof *m);
    *m = (tm_macro){.def = n->b, .closure = sc};
    tm_value *kw = tm_alloc(S->a, ((size_t)c.nkw + 1) * sizeof *kw);
    const char **names = tm_alloc(S->a, ((size_t)c.nkw + 1) * sizeof *names);
    for (int k = 0; k < c.nkw; k++) kw[k] = c.kwargs[k], names[k] = c.kwnames[k];
    kw[c.nkw] = (tm_value){.kind = V_MACRO, .mac = m};
    names[c.nkw] = "caller";
    return tm_call_value(S, fn, c.args, c.nargs, names, kw, c.nkw + 1, n->line);
}

static int exec_with(tm_state *S, tm_scope *sc, const tm_node *n) {
    tm_scope *inner = scope_new(S, sc);
    tm_value *vals = tm_alloc(S->a, ((size_t)n->nkids + 1) * sizeof *vals);
    for (int i = 0; i < n->nkids; i++) vals[i] = tm_eval(S, sc, n->kids[i]); /* all in the outer scope, as Jinja */
    for (int i = 0; i < n->nkids; i++) scope_set(S, inner, n->names[i], vals[i]);
    return exec_body(S, inner, n->b);
}

static int exec_stmt(tm_state *S, tm_scope *sc, const tm_node *n) {
    switch (n->type) {
    case N_DATA: tm_buf_put(S->a, S->out, n->v.str.s, n->v.str.n); return FLOW_NEXT;
    case N_OUTPUT: tm_to_str(S->a, S->out, tm_eval(S, sc, n->a)); return FLOW_NEXT;
    case N_IF:
        if (tm_truthy(tm_eval(S, sc, n->a))) return exec_body(S, sc, n->b);
        if (!n->c) return FLOW_NEXT;
        return n->c->type == N_IF ? exec_stmt(S, sc, n->c) : exec_body(S, sc, n->c);
    case N_FOR: return exec_for(S, sc, n);
    case N_SET:
        if (n->op) { /* ns.attr = value */
            tm_value ns = lookup(S, sc, n->name);
            if (ns.kind != V_NS)
                tm_fail(S->a, "TemplateRuntimeError: line %d: cannot assign attribute on non-namespace object", n->line);
            tm_dict_set(S->a, ns.dict, tm_strn(n->names[0], strlen(n->names[0])), tm_eval(S, sc, n->b));
            return FLOW_NEXT;
        }
        assign_targets(S, sc, n->names, n->nnames, tm_eval(S, sc, n->b), n->line);
        return FLOW_NEXT;
    case N_SETBLOCK: scope_set(S, sc, n->names[0], apply_filters(S, sc, n, capture(S, sc, n->b))); return FLOW_NEXT;
    case N_FILTERBLOCK: tm_to_str(S->a, S->out, apply_filters(S, sc, n, capture(S, sc, n->b))); return FLOW_NEXT;
    case N_CALLBLOCK: tm_to_str(S->a, S->out, call_block(S, sc, n)); return FLOW_NEXT;
    case N_WITH: return exec_with(S, sc, n);
    case N_MACRO: {
        tm_macro *m = tm_alloc(S->a, sizeof *m);
        m->def = n;
        m->closure = sc;
        tm_value v = {.kind = V_MACRO};
        v.mac = m;
        scope_set(S, sc, n->name, v);
        return FLOW_NEXT;
    }
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    case N_BODY: return exec_body(S, sc, n);
    default: tm_fail(S->a, "TemplateError: line %d: expression where a statement was expected", n->line);
    }
}

static int exec_body(tm_state *S, tm_scope *sc, const tm_node *body) {
    if (++S->depth > MAX_EVAL_DEPTH) tm_fail(S->a, "RecursionError: line %d: template evaluation nested too deeply", body->line);
    int flow = FLOW_NEXT;
    for (int i = 0; i < body->nkids && flow == FLOW_NEXT; i++) {
        count_step(S);
        flow = exec_stmt(S, sc, body->kids[i]);
    }
    S->depth--;
    return flow;
}

/* ---- loop object ---- */
tm_value tm_loop_attr(tm_state *S, const tm_loop *l, const char *name) {
    size_t i = l->index0, n = l->items->n;
    if (!strcmp(name, "index")) return tm_int((int64_t)i + 1);
    if (!strcmp(name, "index0")) return tm_int((int64_t)i);
    if (!strcmp(name, "revindex")) return tm_int((int64_t)(n - i));
    if (!strcmp(name, "revindex0")) return tm_int((int64_t)(n - i - 1));
    if (!strcmp(name, "first")) return tm_bool(i == 0);
    if (!strcmp(name, "last")) return tm_bool(i + 1 == n);
    if (!strcmp(name, "length")) return tm_int((int64_t)n);
    if (!strcmp(name, "depth")) return tm_int(l->depth0 + 1);
    if (!strcmp(name, "depth0")) return tm_int(l->depth0);
    if (!strcmp(name, "previtem")) return i > 0 ? l->items->items[i - 1] : tm_undef("there is no previous item");
    if (!strcmp(name, "nextitem")) return i + 1 < n ? l->items->items[i + 1] : tm_undef("there is no next item");
    return tm_undef(msgf(S, "'LoopContext object' has no attribute '%s'", name));
}

/* ---- JSON input ---- */
static tm_value from_json(tm_state *S, const json_t *j, int depth) {
    if (depth > MAX_VALUE_DEPTH) tm_fail(S->a, "ValueError: input nested more than %d levels deep", MAX_VALUE_DEPTH);
    switch (json_typeof(j)) {
    case JSON_NULL: return tm_none();
    case JSON_TRUE: return tm_bool(true);
    case JSON_FALSE: return tm_bool(false);
    case JSON_INTEGER: return tm_int((int64_t)json_integer_value(j));
    case JSON_REAL: return tm_float(json_real_value(j));
    case JSON_STRING: return tm_strn(tm_strdup(S->a, json_string_value(j), json_string_length(j)), json_string_length(j));
    case JSON_ARRAY: {
        tm_list *l = tm_list_new(S->a, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++) tm_list_push(S->a, l, from_json(S, json_array_get(j, i), depth + 1));
        return tm_list_value(l);
    }
    case JSON_OBJECT: {
        tm_value d = {.kind = V_DICT};
        d.dict = tm_dict_new(S->a);
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val) {
            size_t kn = strlen(key);
            tm_dict_set(S->a, d.dict, tm_strn(tm_strdup(S->a, key, kn), kn), from_json(S, val, depth + 1));
        }
        return d;
    }
    }
    return tm_none();
}

/* ---- public API ---- */
/* The line of the first byte that does not start a valid UTF-8 character. */
static int bad_utf8_line(const char *src, size_t n) {
    int line = 1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int valid;
        size_t k = sd_utf8_decode((const unsigned char *)src + i, n - i, &cp, &valid);
        if (!valid) break;
        line += src[i] == '\n';
        i += k;
    }
    return line;
}

sd_tmpl *sd_tmpl_parse(const char *src, size_t n, sd_err *err) {
    sd_tmpl *volatile t = calloc(1, sizeof *t);
    if (!t) {
        sd_errf(err, "out of memory");
        return NULL;
    }
    jmp_buf jb;
    t->arena = (tm_arena){.limit = 64u << 20, .fail = &jb, .err = err};
    if (setjmp(jb)) {
        sd_tmpl_free(t);
        return NULL;
    }
    if (!sd_utf8_valid(src, n))
        tm_fail(&t->arena, "TemplateSyntaxError: line %d: the template is not valid UTF-8", bad_utf8_line(src, n));
    t->root = tm_parse(&t->arena, src, n);
    t->arena.fail = NULL;
    t->arena.err = NULL;
    return t;
}

void sd_tmpl_free(sd_tmpl *t) {
    if (!t) return;
    tm_arena_free(&t->arena);
    free(t);
}

int sd_tmpl_render(const sd_tmpl *t, const json_t *vars, char **out, size_t *out_len, sd_err *err) {
    *out = NULL;
    *out_len = 0;
    if (!json_is_object(vars)) return sd_errf(err, "TypeError: template variables must be a JSON object");
    jmp_buf jb;
    tm_arena a = {.limit = k_max_memory, .fail = &jb, .err = err};
    volatile int rc = -1;
    if (setjmp(jb) == 0) {
        tm_buf buf = {.limit = k_max_output};
        tm_state S = {.a = &a, .out = &buf, .steps_left = k_max_steps, .out_limit = k_max_output};
        tm_scope *globals = scope_new(&S, NULL);
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)vars, key, val) scope_set(&S, globals, key, from_json(&S, val, 0));
        exec_body(&S, scope_new(&S, globals), t->root);
        char *s = malloc(buf.n + 1);
        if (!s) tm_fail(&a, "MemoryError: out of memory");
        if (buf.n) memcpy(s, buf.p, buf.n);
        s[buf.n] = '\0';
        *out = s;
        *out_len = buf.n;
        rc = 0;
    }
    tm_arena_free(&a);
    return rc;
}
