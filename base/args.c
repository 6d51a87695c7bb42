/* Strict number parsing and the table-driven option parser (see args.h). */
#include "base/args.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sd_arg_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int sd_arg_float(const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = (float)v;
    return 0;
}

int sd_arg_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-') return -1; /* strtoull would wrap "-1" */
    *out = v;
    return 0;
}

void sd_args_env_name(const char *name, char *buf, size_t cap) {
    size_t o = 0;
    const char *p = name + strspn(name, "-");
    for (const char *q = "SPECD_"; *q && o + 1 < cap; q++) buf[o++] = *q;
    for (; *p && o + 1 < cap; p++) buf[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[o] = 0;
}

/* What a value must look like, for messages. */
static void expected(const sd_opt *o, char *buf, size_t cap) {
    switch (o->kind) {
    case SD_OPT_INT: snprintf(buf, cap, "an integer in %.0f..%.0f", o->lo, o->hi); break;
    case SD_OPT_FLOAT: snprintf(buf, cap, "a number in %g..%g", o->lo, o->hi); break;
    case SD_OPT_U64: snprintf(buf, cap, "an unsigned 64-bit integer"); break;
    case SD_OPT_FLAG: snprintf(buf, cap, "1, true, yes, 0, false or no"); break;
    default: snprintf(buf, cap, "a non-empty value"); break;
    }
}

/* Stores text v as o's value; -1 when it is not a valid value (the caller names where it came from). */
static int set_value(const sd_opt *o, const char *v, sd_optval *val) {
    int iv;
    float fv;
    switch (o->kind) {
    case SD_OPT_FLAG:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) val->i = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) val->i = 0;
        else return -1;
        break;
    case SD_OPT_INT:
        if (sd_arg_int(v, (long)o->lo, (long)o->hi, &iv)) return -1;
        val->i = iv;
        break;
    case SD_OPT_FLOAT:
        if (sd_arg_float(v, o->lo, o->hi, &fv)) return -1;
        val->f = strtod(v, NULL);
        break;
    case SD_OPT_U64:
        if (sd_arg_u64(v, &val->u)) return -1;
        break;
    case SD_OPT_STR:
        if (!*v) return -1;
        val->s = v;
        break;
    case SD_OPT_LIST:
        if (!*v || val->n_list >= (int)o->hi || val->n_list >= SD_OPT_MAX_LIST) return -1;
        val->list[val->n_list++] = v;
        break;
    }
    val->set = true;
    return 0;
}

static int bad_value(const sd_opt *o, const char *where, const char *v, const sd_args_spec *spec, sd_err *err) {
    char want[96];
    expected(o, want, sizeof want);
    if (o->kind == SD_OPT_LIST && *v) snprintf(want, sizeof want, "at most %.0f values", o->hi);
    return sd_errf(err, "%s: %s needs %s, got '%s'", spec->prog, where, want, v);
}

/* Calls fn on every row the command takes; stops at the first nonzero result and returns it. */
typedef int (*row_fn)(const sd_opt *o, void *ctx);
static int each_row(const sd_args_spec *spec, row_fn fn, void *ctx) {
    for (int t = 0; t < spec->n_tables; t++)
        for (int i = 0; i < spec->tables[t]->n; i++) {
            const sd_opt *o = &spec->tables[t]->opts[i];
            if (!(o->cmds & spec->cmd)) continue;
            int rc = fn(o, ctx);
            if (rc) return rc;
        }
    return 0;
}

typedef struct parse_ctx {
    const sd_args_spec *spec;
    sd_optval *vals;
    int n_vals;
    const char *arg; /* lookup: the argument being matched */
    const sd_opt *found;
    sd_err *err;
} parse_ctx;

static int init_row(const sd_opt *o, void *p) {
    parse_ctx *c = p;
    if (o->id < 0 || o->id >= c->n_vals) return sd_errf(c->err, "%s: option %s has id %d, beyond the %d values", c->spec->prog, o->name, o->id, c->n_vals);
    sd_optval *v = &c->vals[o->id];
    if (o->def && set_value(o, o->def, v)) return bad_value(o, "the default of", o->def, c->spec, c->err);
    char env[64];
    sd_args_env_name(o->name, env, sizeof env);
    const char *e = getenv(env);
    if (!e) return 0;
    if (o->kind == SD_OPT_LIST) v->n_list = 0; /* the environment replaces a list default */
    if (set_value(o, e, v)) return bad_value(o, env, e, c->spec, c->err);
    v->given = true;
    return 0;
}

static int match_row(const sd_opt *o, void *p) {
    parse_ctx *c = p;
    if (strcmp(c->arg, o->name) && !(o->alias && !strcmp(c->arg, o->alias))) return 0;
    c->found = o;
    return 1;
}

int sd_args_parse(const sd_args_spec *spec, int argc, char **argv, sd_optval *vals, int n_vals, int *n_pos,
                  sd_err *err) {
    memset(vals, 0, (size_t)n_vals * sizeof *vals);
    if (n_pos) *n_pos = 0;
    parse_ctx c = {spec, vals, n_vals, NULL, NULL, err};
    if (each_row(spec, init_row, &c)) return -1;
    bool opts_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || !a[1]) {
            if (!spec->pos || !n_pos || *n_pos >= spec->max_pos)
                return sd_errf(err, "%s: unexpected argument '%s'", spec->prog, a);
            spec->pos[(*n_pos)++] = a;
            continue;
        }
        if (!strcmp(a, "--")) { opts_done = true; continue; }
        if (!spec->no_help && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            sd_args_help(spec, stdout);
            return 1;
        }
        c.arg = a;
        c.found = NULL;
        if (!each_row(spec, match_row, &c)) return sd_errf(err, "%s: unknown option '%s'", spec->prog, a);
        const sd_opt *o = c.found;
        sd_optval *v = &vals[o->id];
        const char *value = "1";
        if (o->kind != SD_OPT_FLAG) {
            if (i + 1 >= argc) return sd_errf(err, "%s: %s needs a value", spec->prog, a);
            value = argv[++i];
        }
        if (o->kind == SD_OPT_LIST && !v->on_cmdline) v->n_list = 0; /* replaces the environment's value */
        if (set_value(o, value, v)) return bad_value(o, a, value, spec, err);
        v->given = v->on_cmdline = true;
    }
    return 0;
}

static int help_row(const sd_opt *o, void *p) {
    FILE *f = p;
    char left[64], range[64] = "", def[80] = "";
    const char *arg = o->kind == SD_OPT_FLAG ? "" : o->arg ? o->arg : "X";
    if (o->alias) snprintf(left, sizeof left, "%s, %s %s", o->alias, o->name, arg);
    else snprintf(left, sizeof left, "%s %s", o->name, arg);
    if (o->kind == SD_OPT_INT) snprintf(range, sizeof range, "%.0f..%.0f", o->lo, o->hi);
    if (o->kind == SD_OPT_FLOAT) snprintf(range, sizeof range, "%g..%g", o->lo, o->hi);
    if (o->def && o->kind != SD_OPT_FLAG) snprintf(def, sizeof def, "%sdefault %s", range[0] ? ", " : "", o->def);
    fprintf(f, "  %-28s %s", left, o->help);
    if (range[0] || def[0]) fprintf(f, " (%s%s)", range, def);
    fputc('\n', f);
    return 0;
}

void sd_args_help(const sd_args_spec *spec, FILE *f) {
    fprintf(f, "usage: %s\n", spec->usage);
    for (int t = 0; t < spec->n_tables; t++) {
        sd_args_spec one = *spec;
        one.tables = &spec->tables[t];
        one.n_tables = 1;
        bool any = false;
        for (int i = 0; i < spec->tables[t]->n; i++) any |= (spec->tables[t]->opts[i].cmds & spec->cmd) != 0;
        if (!any) continue;
        fprintf(f, "\n%s:\n", spec->tables[t]->title);
        each_row(&one, help_row, f);
    }
    fprintf(f, "\nEvery option can also be set in the environment as SPECD_<NAME> (--draft-max: SPECD_DRAFT_MAX);\n"
               "the command line wins.\n");
}
