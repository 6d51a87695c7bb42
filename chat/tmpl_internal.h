/* Internals of the chat-template interpreter shared by its files: the arena, the value type, the AST and
 * the render state. Every allocation of a parse or a render comes from one arena freed at once, and every
 * error unwinds with longjmp to the entry point (so no partial state needs freeing on the way up). */
#ifndef SD_TMPL_INTERNAL_H
#define SD_TMPL_INTERNAL_H
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/utf8.h"

/* ---- arena + fatal errors ---- */
typedef struct tm_chunk tm_chunk;
typedef struct {
    tm_chunk *head;
    size_t used, limit; /* bytes taken from malloc so far, and the most allowed */
    jmp_buf *fail;      /* where an error unwinds to */
    sd_err *err;
} tm_arena;

void *tm_alloc(tm_arena *a, size_t n); /* zeroed; unwinds with an error past the limit */
char *tm_strdup(tm_arena *a, const char *s, size_t n);
void tm_arena_free(tm_arena *a);
/* Formats the message into a->err and unwinds. */
_Noreturn void tm_fail(tm_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- growable byte buffer in the arena ---- */
typedef struct {
    char *p;
    size_t n, cap, limit;
} tm_buf;
void tm_buf_put(tm_arena *a, tm_buf *b, const char *s, size_t n);
void tm_buf_putc(tm_arena *a, tm_buf *b, char c);
void tm_buf_printf(tm_arena *a, tm_buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- values ---- */
typedef enum {
    V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_MACRO, V_FUNC, V_LOOP
} tm_kind;

typedef struct tm_list tm_list;
typedef struct tm_dict tm_dict;
typedef struct tm_func tm_func;
typedef struct tm_macro tm_macro;
typedef struct tm_loop tm_loop;

typedef struct tm_value {
    tm_kind kind;
    bool markup; /* V_STR marked safe (|safe): `+` with a plain string HTML-escapes the plain one, as Markup does */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s;
            size_t n;
        } str;
        tm_list *list;  /* V_LIST (also tuples) */
        tm_dict *dict;  /* V_DICT, V_NS */
        tm_func *fn;    /* V_FUNC: a builtin, maybe bound to a receiver */
        tm_macro *mac;  /* V_MACRO */
        tm_loop *loop;  /* V_LOOP */
        const char *undef; /* V_UNDEF: why ("'x' is undefined"), NULL for a plain missing value */
    };
} tm_value;

struct tm_list {
    tm_value *items;
    size_t n, cap;
    bool tuple;
    bool gen; /* a generator in Jinja (map, select, ...): always true, no len, not JSON, not indexable */
};
struct tm_dict { /* insertion-ordered; linear lookup (chat data is small) */
    tm_value *keys, *vals;
    size_t n, cap;
};

static inline tm_value tm_undef(const char *why) { tm_value v = {.kind = V_UNDEF}; v.undef = why; return v; }
static inline tm_value tm_none(void) { return (tm_value){.kind = V_NONE}; }
static inline tm_value tm_bool(bool b) { tm_value v = {.kind = V_BOOL}; v.b = b; return v; }
static inline tm_value tm_int(int64_t i) { tm_value v = {.kind = V_INT}; v.i = i; return v; }
static inline tm_value tm_float(double f) { tm_value v = {.kind = V_FLOAT}; v.f = f; return v; }
static inline tm_value tm_strn(const char *s, size_t n) { tm_value v = {.kind = V_STR}; v.str.s = s; v.str.n = n; return v; }

tm_list *tm_list_new(tm_arena *a, size_t cap);
void tm_list_push(tm_arena *a, tm_list *l, tm_value v);
tm_value tm_list_value(tm_list *l);
tm_dict *tm_dict_new(tm_arena *a);
/* Sets key to val (replacing an equal key in place, keeping its position). */
void tm_dict_set(tm_arena *a, tm_dict *d, tm_value key, tm_value val);
/* The value stored under key, or NULL. */
tm_value *tm_dict_get(const tm_dict *d, tm_value key);
tm_value *tm_dict_gets(const tm_dict *d, const char *key, size_t n);

const char *tm_type_name(tm_value v); /* Python's name: "str", "int", "list", "dict", ... */
bool tm_truthy(tm_value v);
bool tm_equal(tm_value a, tm_value b);
/* Python ordering for numbers and strings (and lists of them); unwinds with a TypeError otherwise. */
int tm_compare(tm_arena *a, tm_value x, tm_value y, const char *op);
/* str(v) appended to b (strings as they are, others as Python prints them). */
void tm_to_str(tm_arena *a, tm_buf *b, tm_value v);
tm_value tm_str_value(tm_arena *a, tm_value v);
void tm_repr(tm_arena *a, tm_buf *b, tm_value v);
/* json.dumps(v, ensure_ascii, indent, separators, sort_keys), as Hugging Face's `tojson` calls it. */
typedef struct tm_json_opts {
    const char *indent;             /* NULL: one line */
    const char *item_sep, *key_sep; /* NULL: Python's defaults, ", " (or "," with an indent) and ": " */
    bool ascii, sort_keys;          /* non-ASCII as \uXXXX; dict keys in order */
} tm_json_opts;
void tm_tojson(tm_arena *a, tm_buf *b, tm_value v, const tm_json_opts *o, int depth);
void tm_float_repr(double f, char out[32]);

/* UTF-8 helpers over Python's notion of whitespace. */
size_t tm_lstrip_len(const char *s, size_t n); /* bytes of leading whitespace */
size_t tm_rstrip_len(const char *s, size_t n); /* length without trailing whitespace */
bool tm_is_space_str(const char *s, size_t n);

/* ---- AST ---- */
typedef enum {
    /* statements */
    N_BODY, N_DATA, N_OUTPUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE, N_CALLBLOCK,
    N_FILTERBLOCK, N_WITH,
    /* expressions */
    N_CONST, N_NAME, N_LIST, N_TUPLE, N_DICT, N_GETATTR, N_GETITEM, N_SLICE, N_CALL, N_FILTER, N_TEST,
    N_BINOP, N_NEG, N_POS, N_NOT, N_AND, N_OR, N_COMPARE, N_COND, N_NSREF
} tm_ntype;

typedef struct tm_node tm_node;
struct tm_node {
    tm_ntype type;
    int line;
    int op;                    /* N_BINOP/N_COMPARE operator token; N_TEST: negated; N_FOR: recursive;
                                  N_MACRO: the MACRO_* names its body uses */
    tm_node *a, *b, *c, *d;    /* children, by node type (see tmpl_parse.c) */
    tm_node **kids;            /* statements of a body, items, call arguments */
    int nkids;
    const char **names;        /* keyword names of a call, for targets, macro parameters */
    int nnames;
    const char *name;          /* name, attribute, filter or test */
    tm_value v;                /* N_CONST; N_DATA text */
};

/* The special names a macro body may use (N_MACRO op bits): `caller` (a {% call %} block's body),
 * `varargs` (extra positional arguments), `kwargs` (extra keyword arguments). */
enum { MACRO_CALLER = 1, MACRO_VARARGS = 2, MACRO_KWARGS = 4 };

tm_node *tm_parse(tm_arena *a, const char *src, size_t n);

/* ---- render state ---- */
typedef struct tm_scope tm_scope;
struct tm_scope {
    tm_dict *vars;
    tm_scope *parent;
};

struct tm_macro {
    const tm_node *def;
    tm_scope *closure;
};

typedef struct {
    tm_arena *a;
    tm_buf *out;           /* where output goes now (a macro call swaps in its own) */
    int64_t steps_left;    /* evaluation budget against runaway loops */
    int call_depth;
    int depth;             /* C recursion of the evaluator */
    size_t out_limit;
} tm_state;

tm_value tm_eval(tm_state *S, tm_scope *sc, const tm_node *n);
tm_value tm_call_value(tm_state *S, tm_value fn, tm_value *args, int nargs, const char **kwnames,
                       tm_value *kwargs, int nkw, int line);
tm_value tm_getattr(tm_state *S, tm_value obj, const char *name, size_t n);
tm_value tm_getitem(tm_state *S, tm_value obj, tm_value key);
/* Iterates v as Jinja does (lists, dict keys, string characters; undefined is empty). */
tm_list *tm_iter(tm_state *S, tm_value v, int line);

/* Builtins (tmpl_builtins.c). */
tm_value tm_filter(tm_state *S, tm_scope *sc, const char *name, tm_value x, tm_value *args, int nargs,
                   const char **kwnames, tm_value *kwargs, int nkw, int line);
bool tm_test(tm_state *S, const char *name, tm_value x, tm_value *args, int nargs, int line);
bool tm_has_filter(const char *name);
bool tm_has_test(const char *name);
/* A method of a str/dict/list/loop value (x.strip), as a bound function; V_UNDEF when there is none. */
tm_value tm_method(tm_state *S, tm_value self, const char *name, size_t n);
tm_value tm_global(const char *name);
struct tm_loop {
    tm_list *items;       /* what the loop runs over (after its filter) */
    size_t index0;
    int depth0;           /* 0 at the top, +1 each `loop(...)` of a recursive loop */
    const tm_node *node;  /* the for statement, and the scope it runs in: `loop(...)` runs it again */
    tm_scope *scope;
};
/* `loop(items)` in a recursive for loop: the loop's body over items one level deeper, as a string. */
tm_value tm_loop_call(tm_state *S, const tm_loop *l, tm_value *args, int nargs, int nkw, int line);

/* Python's printf-style formatting, `fmt % args` (args: a tuple, a dict for %(name)s, or one value). */
tm_value tm_percent_format(tm_state *S, tm_value fmt, tm_value args, int line);
tm_value tm_loop_attr(tm_state *S, const tm_loop *l, const char *name);

struct tm_func {
    int id;
    tm_value self;
};
tm_value tm_call_builtin(tm_state *S, const tm_func *f, tm_value *args, int nargs, const char **kwnames,
                         tm_value *kwargs, int nkw, int line);

/* Raising errors the way Jinja names them. */
_Noreturn void tm_raise_undef(tm_state *S, tm_value u);

#endif
