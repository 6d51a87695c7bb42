/* Template parser: tokens to an AST, by recursive descent with Jinja's operator precedence
 * (or < and < not < comparisons < + - < ~ < * / // % < ** < unary, with filters, tests and calls binding
 * tightest). Nesting is bounded so a hostile template cannot exhaust the stack. What the interpreter does
 * not support fails here with the construct's name and line. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/tmpl_lex.h"

enum { MAX_DEPTH = 96 };

typedef struct {
    tm_arena *a;
    tm_tok *t;
    size_t i, n;
    int depth;
} parser;

static tm_tok *peek(parser *p) { return &p->t[p->i]; }
static tm_tok *peek2(parser *p) { return &p->t[p->i + 1 < p->n ? p->i + 1 : p->i]; }
static tm_tok *next(parser *p) { tm_tok *t = &p->t[p->i]; if (p->i + 1 < p->n) p->i++; return t; }

static bool is_op(const tm_tok *t, const char *op) {
    return t->type == T_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n);
}
static bool is_name(const tm_tok *t, const char *name) {
    return t->type == T_NAME && t->n == strlen(name) && !memcmp(t->s, name, t->n);
}

static const char *describe(const tm_tok *t, char buf[64]) {
    switch (t->type) {
    case T_NAME: case T_OP: snprintf(buf, 64, "'%.*s'", (int)(t->n < 40 ? t->n : 40), t->s); return buf;
    case T_STRING: return "a string";
    case T_INT: case T_FLOAT: return "a number";
    case T_VAR_END: return "end of print statement";
    case T_BLOCK_END: return "end of statement block";
    case T_EOF: return "end of template";
    default: return "text";
    }
}

_Noreturn static void syntax(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void syntax(parser *p, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tm_fail(p->a, "TemplateSyntaxError: line %d: %s", peek(p)->line, msg);
}

static void expect_op(parser *p, const char *op) {
    char b[64];
    if (!is_op(peek(p), op)) syntax(p, "expected '%s', got %s", op, describe(peek(p), b));
    next(p);
}

static const char *expect_name(parser *p) {
    char b[64];
    tm_tok *t = peek(p);
    if (t->type != T_NAME) syntax(p, "expected a name, got %s", describe(t, b));
    next(p);
    return tm_strdup(p->a, t->s, t->n);
}

static tm_node *node(parser *p, tm_ntype type) {
    tm_node *n = tm_alloc(p->a, sizeof *n);
    n->type = type;
    n->line = peek(p)->line;
    return n;
}

/* Growable child and name lists while parsing. */
static void add_kid(parser *p, tm_node *n, tm_node *kid, int *cap) {
    if (n->nkids == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        tm_node **k = tm_alloc(p->a, (size_t)*cap * sizeof *k);
        if (n->nkids) memcpy(k, n->kids, (size_t)n->nkids * sizeof *k);
        n->kids = k;
    }
    n->kids[n->nkids++] = kid;
}
static void add_name(parser *p, tm_node *n, const char *name, int *cap) {
    if (n->nnames == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        const char **k = tm_alloc(p->a, (size_t)*cap * sizeof *k);
        if (n->nnames) memcpy(k, n->names, (size_t)n->nnames * sizeof *k);
        n->names = k;
    }
    n->names[n->nnames++] = name;
}

static void enter(parser *p) {
    if (++p->depth > MAX_DEPTH) syntax(p, "template nested more than %d levels deep", MAX_DEPTH);
}

/* ---- expressions ---- */
static tm_node *parse_expr(parser *p);
static tm_node *parse_or(parser *p);
static tm_node *parse_unary(parser *p, bool with_filter);

/* Call arguments after '(' up to ')': positional first, then name=value. */
static void parse_args(parser *p, tm_node *n) {
    int kcap = 0, ncap = 0;
    expect_op(p, "(");
    while (!is_op(peek(p), ")")) {
        if (n->nkids) expect_op(p, ",");
        if (is_op(peek(p), ")")) break;
        if (peek(p)->type == T_NAME && is_op(peek2(p), "=")) {
            add_name(p, n, expect_name(p), &ncap);
            next(p);
        } else if (n->nnames) {
            syntax(p, "positional argument after keyword argument");
        } else if (is_op(peek(p), "*") || is_op(peek(p), "**")) {
            syntax(p, "unsupported construct '*args' in a call");
        }
        add_kid(p, n, parse_expr(p), &kcap);
    }
    next(p);
}

static tm_node *parse_primary(parser *p) {
    char b[64];
    tm_tok *t = peek(p);
    tm_node *n;
    if (t->type == T_NAME) {
        next(p);
        n = node(p, N_CONST);
        n->line = t->line;
        if (is_name(t, "true") || is_name(t, "True")) n->v = tm_bool(true);
        else if (is_name(t, "false") || is_name(t, "False")) n->v = tm_bool(false);
        else if (is_name(t, "none") || is_name(t, "None")) n->v = tm_none();
        else {
            n->type = N_NAME;
            n->name = tm_strdup(p->a, t->s, t->n);
        }
        return n;
    }
    if (t->type == T_STRING) { /* adjacent literals concatenate */
        tm_buf buf = {0};
        n = node(p, N_CONST);
        while (peek(p)->type == T_STRING) {
            tm_tok *s = next(p);
            tm_buf_put(p->a, &buf, s->v.str.s, s->v.str.n);
        }
        n->v = tm_strn(buf.p ? buf.p : "", buf.n);
        return n;
    }
    if (t->type == T_INT || t->type == T_FLOAT) {
        n = node(p, N_CONST);
        n->v = next(p)->v;
        return n;
    }
    if (is_op(t, "(")) { /* parenthesized expression or tuple */
        next(p);
        n = node(p, N_TUPLE);
        int cap = 0;
        bool comma = false;
        while (!is_op(peek(p), ")")) {
            if (n->nkids) {
                expect_op(p, ",");
                comma = true;
                if (is_op(peek(p), ")")) break;
            }
            add_kid(p, n, parse_expr(p), &cap);
        }
        next(p);
        return n->nkids == 1 && !comma ? n->kids[0] : n;
    }
    if (is_op(t, "[") || is_op(t, "{")) {
        bool dict = is_op(t, "{");
        next(p);
        n = node(p, dict ? N_DICT : N_LIST);
        int cap = 0;
        while (!is_op(peek(p), dict ? "}" : "]")) {
            if (n->nkids) {
                expect_op(p, ",");
                if (is_op(peek(p), dict ? "}" : "]")) break;
            }
            add_kid(p, n, parse_expr(p), &cap);
            if (dict) {
                expect_op(p, ":");
                add_kid(p, n, parse_expr(p), &cap);
            }
        }
        next(p);
        return n;
    }
    syntax(p, "unexpected %s in an expression", describe(t, b));
}

static tm_node *parse_subscript(parser *p, tm_node *obj) {
    next(p); /* '[' */
    tm_node *parts[3] = {0};
    int np = 0;
    bool slice = false;
    for (;;) {
        if (!is_op(peek(p), ":") && !is_op(peek(p), "]")) parts[np] = parse_expr(p);
        if (is_op(peek(p), ":")) {
            if (np == 2) syntax(p, "too many ':' in a slice");
            slice = true;
            np++;
            next(p);
            continue;
        }
        break;
    }
    if (is_op(peek(p), ",")) syntax(p, "unsupported construct: tuple subscript");
    expect_op(p, "]");
    tm_node *n = node(p, slice ? N_SLICE : N_GETITEM);
    n->line = obj->line;
    n->a = obj;
    if (!slice) {
        if (!parts[0]) syntax(p, "empty subscript");
        n->b = parts[0];
    } else {
        n->b = parts[0], n->c = parts[1], n->d = parts[2];
    }
    return n;
}

static tm_node *parse_postfix(parser *p, tm_node *n) {
    for (;;) {
        tm_tok *t = peek(p);
        if (is_op(t, ".")) {
            next(p);
            tm_node *g = node(p, N_GETATTR);
            g->a = n;
            if (peek(p)->type == T_INT) { /* x.0 is x[0] */
                g->type = N_GETITEM;
                g->b = node(p, N_CONST);
                g->b->v = next(p)->v;
            } else {
                g->name = expect_name(p);
            }
            n = g;
        } else if (is_op(t, "[")) {
            n = parse_subscript(p, n);
        } else if (is_op(t, "(")) {
            tm_node *c = node(p, N_CALL);
            c->a = n;
            parse_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

/* filter name, dotted names joined */
static const char *dotted_name(parser *p) {
    const char *name = expect_name(p);
    while (is_op(peek(p), ".")) {
        next(p);
        const char *part = expect_name(p);
        size_t l = strlen(name) + strlen(part) + 2;
        char *j = tm_alloc(p->a, l);
        snprintf(j, l, "%s.%s", name, part);
        name = j;
    }
    return name;
}

static tm_node *parse_filter_expr(parser *p, tm_node *n) {
    for (;;) {
        tm_tok *t = peek(p);
        if (is_op(t, "|")) {
            next(p);
            tm_node *f = node(p, N_FILTER);
            f->a = n;
            f->name = dotted_name(p);
            if (!tm_has_filter(f->name)) syntax(p, "unsupported construct: filter '%s'", f->name);
            if (is_op(peek(p), "(")) parse_args(p, f);
            n = f;
        } else if (is_name(t, "is")) {
            next(p);
            tm_node *f = node(p, N_TEST);
            f->a = n;
            if (is_name(peek(p), "not")) {
                next(p);
                f->op = 1;
            }
            f->name = dotted_name(p);
            if (!tm_has_test(f->name)) syntax(p, "unsupported construct: test '%s'", f->name);
            tm_tok *q = peek(p);
            if (is_op(q, "(")) {
                parse_args(p, f);
            } else if ((q->type == T_NAME || q->type == T_STRING || q->type == T_INT || q->type == T_FLOAT ||
                        is_op(q, "[") || is_op(q, "{")) &&
                       !is_name(q, "else") && !is_name(q, "or") && !is_name(q, "and")) {
                /* one argument without parentheses: `x is divisibleby 3`, `x is sameas none` */
                tm_node *arg = parse_postfix(p, parse_primary(p));
                f->kids = tm_alloc(p->a, sizeof *f->kids);
                f->kids[0] = arg;
                f->nkids = 1;
            }
            n = f;
        } else if (is_op(t, "(")) {
            tm_node *c = node(p, N_CALL);
            c->a = n;
            parse_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

/* `f(args)|g...` of a filter block or a filtered set block: N_FILTER nodes (without `a`) added to n's
 * kids, applied in order. */
static void parse_filter_chain(parser *p, tm_node *n) {
    int cap = 0;
    for (;;) {
        tm_node *f = node(p, N_FILTER);
        f->name = dotted_name(p);
        if (!tm_has_filter(f->name)) syntax(p, "unsupported construct: filter '%s'", f->name);
        if (is_op(peek(p), "(")) parse_args(p, f);
        add_kid(p, n, f, &cap);
        if (!is_op(peek(p), "|")) return;
        next(p);
    }
}

static tm_node *parse_unary(parser *p, bool with_filter) {
    enter(p);
    tm_node *n;
    if (is_op(peek(p), "-") || is_op(peek(p), "+")) {
        n = node(p, is_op(next(p), "-") ? N_NEG : N_POS);
        n->a = parse_unary(p, false);
    } else {
        n = parse_postfix(p, parse_primary(p));
    }
    if (with_filter) n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}

static tm_node *binop(parser *p, int op, tm_node *l, tm_node *r) {
    tm_node *n = node(p, N_BINOP);
    n->op = op;
    n->a = l;
    n->b = r;
    n->line = l->line;
    return n;
}

static tm_node *parse_pow(parser *p) {
    tm_node *n = parse_unary(p, true);
    while (is_op(peek(p), "**")) {
        next(p);
        n = binop(p, 'P', n, parse_unary(p, true));
    }
    return n;
}

static tm_node *parse_math2(parser *p) {
    tm_node *n = parse_pow(p);
    for (;;) {
        tm_tok *t = peek(p);
        int op = is_op(t, "*") ? '*' : is_op(t, "/") ? '/' : is_op(t, "//") ? 'F' : is_op(t, "%") ? '%' : 0;
        if (!op) return n;
        next(p);
        n = binop(p, op, n, parse_pow(p));
    }
}

static tm_node *parse_concat(parser *p) {
    tm_node *n = parse_math2(p);
    while (is_op(peek(p), "~")) {
        next(p);
        n = binop(p, '~', n, parse_math2(p));
    }
    return n;
}

static tm_node *parse_math1(parser *p) {
    tm_node *n = parse_concat(p);
    for (;;) {
        int op = is_op(peek(p), "+") ? '+' : is_op(peek(p), "-") ? '-' : 0;
        if (!op) return n;
        next(p);
        n = binop(p, op, n, parse_concat(p));
    }
}

static tm_node *parse_compare(parser *p) {
    tm_node *first = parse_math1(p), *n = NULL;
    int kcap = 0, ncap = 0;
    for (;;) {
        tm_tok *t = peek(p);
        const char *op = NULL;
        static const char *const ops[] = {"==", "!=", "<", ">", "<=", ">="};
        for (int k = 0; k < 6; k++)
            if (is_op(t, ops[k])) op = ops[k];
        if (is_name(t, "in")) op = "in";
        if (is_name(t, "not") && is_name(peek2(p), "in")) {
            next(p);
            op = "notin";
        }
        if (!op) break;
        next(p);
        if (!n) {
            n = node(p, N_COMPARE);
            n->line = first->line;
            add_kid(p, n, first, &kcap);
        }
        add_name(p, n, op, &ncap);
        add_kid(p, n, parse_math1(p), &kcap);
    }
    return n ? n : first;
}

static tm_node *parse_not(parser *p) {
    if (is_name(peek(p), "not")) {
        enter(p);
        tm_node *n = node(p, N_NOT);
        next(p);
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static tm_node *parse_and(parser *p) {
    tm_node *n = parse_not(p);
    while (is_name(peek(p), "and")) {
        next(p);
        tm_node *m = node(p, N_AND);
        m->a = n;
        m->b = parse_not(p);
        n = m;
    }
    return n;
}

static tm_node *parse_or(parser *p) {
    tm_node *n = parse_and(p);
    while (is_name(peek(p), "or")) {
        next(p);
        tm_node *m = node(p, N_OR);
        m->a = n;
        m->b = parse_and(p);
        n = m;
    }
    return n;
}

/* `a if b else c` (else optional: undefined when missing). */
static tm_node *parse_expr(parser *p) {
    enter(p);
    tm_node *n = parse_or(p);
    while (is_name(peek(p), "if")) {
        next(p);
        tm_node *c = node(p, N_COND);
        c->b = n;
        c->a = parse_or(p);
        if (is_name(peek(p), "else")) {
            next(p);
            c->c = parse_expr(p);
        }
        n = c;
    }
    p->depth--;
    return n;
}

/* An expression or a bare tuple `a, b` (for-loop iterables, set values). */
static tm_node *parse_tuple(parser *p, bool with_cond) {
    tm_node *first = with_cond ? parse_expr(p) : parse_or(p);
    if (!is_op(peek(p), ",")) return first;
    tm_node *t = node(p, N_TUPLE);
    int cap = 0;
    add_kid(p, t, first, &cap);
    while (is_op(peek(p), ",")) {
        next(p);
        if (peek(p)->type == T_BLOCK_END || is_name(peek(p), "if") || is_name(peek(p), "recursive")) break;
        add_kid(p, t, with_cond ? parse_expr(p) : parse_or(p), &cap);
    }
    return t;
}

/* ---- statements ---- */
static tm_node *parse_body(parser *p, const char *const *ends);

static void expect_block_end(parser *p) {
    char b[64];
    if (peek(p)->type != T_BLOCK_END) syntax(p, "expected end of statement block, got %s", describe(peek(p), b));
    next(p);
}

/* Consumes `{% name` when the next tag is that statement. */
static bool at_tag(parser *p, const char *name) {
    return peek(p)->type == T_BLOCK_BEGIN && is_name(peek2(p), name);
}

static void end_tag(parser *p, const char *name) {
    if (!at_tag(p, name)) syntax(p, "expected '{%% %s %%}'", name);
    next(p);
    next(p);
    expect_block_end(p);
}

/* The statements up to `{% end %}`, consumed too. */
static tm_node *block_body(parser *p, const char *end) {
    const char *const ends[] = {end, NULL};
    tm_node *body = parse_body(p, ends);
    end_tag(p, end);
    return body;
}

static tm_node *parse_if(parser *p) {
    tm_node *n = node(p, N_IF);
    n->a = parse_tuple(p, true);
    expect_block_end(p);
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    n->b = parse_body(p, ends);
    if (at_tag(p, "elif")) {
        next(p);
        next(p);
        n->c = parse_if(p); /* consumes through endif */
        return n;
    }
    if (at_tag(p, "else")) {
        next(p);
        next(p);
        expect_block_end(p);
        static const char *const endif[] = {"endif", NULL};
        n->c = parse_body(p, endif);
    }
    end_tag(p, "endif");
    return n;
}

static tm_node *parse_for(parser *p) {
    tm_node *n = node(p, N_FOR);
    int ncap = 0;
    bool paren = is_op(peek(p), "(");
    if (paren) next(p);
    add_name(p, n, expect_name(p), &ncap);
    while (is_op(peek(p), ",")) {
        next(p);
        add_name(p, n, expect_name(p), &ncap);
    }
    if (paren) expect_op(p, ")");
    if (!is_name(peek(p), "in")) syntax(p, "expected 'in' in a for loop");
    next(p);
    n->a = parse_tuple(p, false);
    if (is_name(peek(p), "if")) {
        next(p);
        n->d = parse_expr(p);
    }
    if (is_name(peek(p), "recursive")) { /* `loop(items)` in the body runs it again over items */
        next(p);
        n->op = 1;
    }
    expect_block_end(p);
    static const char *const ends[] = {"else", "endfor", NULL};
    n->b = parse_body(p, ends);
    if (at_tag(p, "else")) {
        next(p);
        next(p);
        expect_block_end(p);
        static const char *const endfor[] = {"endfor", NULL};
        n->c = parse_body(p, endfor);
    }
    end_tag(p, "endfor");
    return n;
}

static tm_node *parse_set(parser *p) {
    tm_node *n = node(p, N_SET);
    int ncap = 0;
    const char *first = expect_name(p);
    if (is_op(peek(p), ".")) { /* namespace attribute */
        next(p);
        n->op = 1;
        n->name = first;
        add_name(p, n, expect_name(p), &ncap);
    } else {
        add_name(p, n, first, &ncap);
        while (is_op(peek(p), ",")) {
            next(p);
            add_name(p, n, expect_name(p), &ncap);
        }
    }
    bool filtered = is_op(peek(p), "|") && n->nnames == 1 && !n->op;
    if ((peek(p)->type == T_BLOCK_END || filtered) && n->nnames == 1 && !n->op) { /* {% set x [| filters] %}...{% endset %} */
        if (filtered) {
            next(p);
            parse_filter_chain(p, n);
        }
        expect_block_end(p);
        n->type = N_SETBLOCK;
        n->b = block_body(p, "endset");
        return n;
    }
    expect_op(p, "=");
    n->b = parse_tuple(p, true);
    expect_block_end(p);
    return n;
}

/* `(a, b=default, ...)` of a macro or a call block's caller: names, and kids the defaults (NULL: none). */
static void parse_params(parser *p, tm_node *n) {
    int ncap = 0, kcap = 0;
    expect_op(p, "(");
    while (!is_op(peek(p), ")")) {
        if (n->nnames) expect_op(p, ",");
        add_name(p, n, expect_name(p), &ncap);
        tm_node *def = NULL;
        if (is_op(peek(p), "=")) {
            next(p);
            def = parse_expr(p);
        } else if (n->nkids && n->kids[n->nkids - 1]) {
            syntax(p, "non-default argument follows default argument");
        }
        add_kid(p, n, def, &kcap);
    }
    next(p);
}

/* The MACRO_* names a macro body uses (macros defined inside it have their own). */
static int special_names(const tm_node *n) {
    if (!n || n->type == N_MACRO) return 0;
    int f = 0;
    if (n->type == N_NAME)
        f = !strcmp(n->name, "caller") ? MACRO_CALLER : !strcmp(n->name, "varargs") ? MACRO_VARARGS
            : !strcmp(n->name, "kwargs") ? MACRO_KWARGS : 0;
    f |= special_names(n->a) | special_names(n->b) | special_names(n->c) | special_names(n->d);
    for (int i = 0; i < n->nkids; i++) f |= special_names(n->kids[i]);
    if (n->type == N_CALLBLOCK) f |= special_names(n->b->b); /* a call block's caller body sees the macro's names */
    return f;
}

static tm_node *parse_macro(parser *p) {
    tm_node *n = node(p, N_MACRO);
    n->name = expect_name(p);
    parse_params(p, n);
    expect_block_end(p);
    static const char *const ends[] = {"endmacro", NULL};
    n->b = parse_body(p, ends);
    if (!at_tag(p, "endmacro")) syntax(p, "expected '{%% endmacro %%}'");
    next(p);
    next(p);
    if (peek(p)->type == T_NAME) next(p); /* {% endmacro name %} */
    expect_block_end(p);
    n->op = special_names(n->b);
    return n;
}

/* {% call [(params)] macro(args) %}body{% endcall %}: the macro runs with `caller` a macro whose body is
 * the block's (a: the call, b: the caller, an N_MACRO). */
static tm_node *parse_call_block(parser *p) {
    tm_node *n = node(p, N_CALLBLOCK), *caller = node(p, N_MACRO);
    caller->name = "caller";
    if (is_op(peek(p), "(")) parse_params(p, caller);
    n->a = parse_expr(p);
    if (n->a->type != N_CALL) syntax(p, "expected a call after 'call'");
    expect_block_end(p);
    caller->b = block_body(p, "endcall");
    caller->op = special_names(caller->b);
    n->b = caller;
    return n;
}

/* {% filter f(args)|g %}body{% endfilter %}: the body's output through the filters. */
static tm_node *parse_filter_block(parser *p) {
    tm_node *n = node(p, N_FILTERBLOCK);
    parse_filter_chain(p, n);
    expect_block_end(p);
    n->b = block_body(p, "endfilter");
    return n;
}

/* {% with a = x, b = y %}body{% endwith %}: the body in a scope of its own (values: kids, names: names). */
static tm_node *parse_with(parser *p) {
    tm_node *n = node(p, N_WITH);
    int ncap = 0, kcap = 0;
    while (peek(p)->type != T_BLOCK_END) {
        if (n->nnames) expect_op(p, ",");
        add_name(p, n, expect_name(p), &ncap);
        expect_op(p, "=");
        add_kid(p, n, parse_expr(p), &kcap);
    }
    expect_block_end(p);
    n->b = block_body(p, "endwith");
    return n;
}

static tm_node *parse_statement(parser *p) {
    char b[64];
    next(p); /* '{%' */
    tm_tok *t = peek(p);
    if (t->type != T_NAME) syntax(p, "expected a statement name, got %s", describe(t, b));
    next(p);
    if (is_name(t, "if")) return parse_if(p);
    if (is_name(t, "for")) return parse_for(p);
    if (is_name(t, "set")) return parse_set(p);
    if (is_name(t, "macro")) return parse_macro(p);
    if (is_name(t, "call")) return parse_call_block(p);
    if (is_name(t, "filter")) return parse_filter_block(p);
    if (is_name(t, "with")) return parse_with(p);
    if (is_name(t, "break") || is_name(t, "continue")) {
        tm_node *n = node(p, is_name(t, "break") ? N_BREAK : N_CONTINUE);
        expect_block_end(p);
        return n;
    }
    if (is_name(t, "generation")) { /* Hugging Face's marker of assistant text (for training masks): renders its body */
        expect_block_end(p);
        return block_body(p, "endgeneration");
    }
    /* other templates (chat templates are one file: Hugging Face renders them without a loader), template
     * inheritance, and extensions Hugging Face does not enable */
    static const char *const known[] = {"include", "import", "from", "extends", "block", "raw", "do", "autoescape",
                                        "trans", NULL};
    for (int k = 0; known[k]; k++)
        if (is_name(t, known[k])) {
            p->i--;
            syntax(p, "unsupported construct '%s'", known[k]);
        }
    p->i--;
    syntax(p, "unknown tag '%.*s'", (int)(t->n < 40 ? t->n : 40), t->s);
}

/* Statements up to (not including) a `{% end %}` tag named in ends, or to the end of the template. */
static tm_node *parse_body(parser *p, const char *const *ends) {
    enter(p);
    tm_node *body = node(p, N_BODY);
    int cap = 0;
    for (;;) {
        tm_tok *t = peek(p);
        if (t->type == T_EOF) {
            if (ends) syntax(p, "unexpected end of template, expected '%s'", ends[0]);
            break;
        }
        if (t->type == T_DATA) {
            tm_node *d = node(p, N_DATA);
            d->v = next(p)->v;
            add_kid(p, body, d, &cap);
        } else if (t->type == T_VAR_BEGIN) {
            next(p);
            tm_node *o = node(p, N_OUTPUT);
            o->a = parse_tuple(p, true);
            char b[64];
            if (peek(p)->type != T_VAR_END) syntax(p, "expected end of print statement, got %s", describe(peek(p), b));
            next(p);
            add_kid(p, body, o, &cap);
        } else {
            tm_tok *name = peek2(p);
            for (int k = 0; ends && ends[k]; k++)
                if (is_name(name, ends[k])) {
                    p->depth--;
                    return body;
                }
            static const char *const stray[] = {"endif", "endfor", "elif", "else", "endmacro", "endset", "endgeneration",
                                                "endcall", "endfilter", "endwith", NULL};
            for (int k = 0; stray[k]; k++)
                if (is_name(name, stray[k])) {
                    next(p);
                    syntax(p, "unexpected '%s'", stray[k]);
                }
            add_kid(p, body, parse_statement(p), &cap);
        }
    }
    p->depth--;
    return body;
}

tm_node *tm_parse(tm_arena *a, const char *src, size_t n) {
    tm_toks ts = {0};
    tm_lex(a, src, n, &ts);
    parser p = {.a = a, .t = ts.v, .n = ts.n};
    return parse_body(&p, NULL);
}
