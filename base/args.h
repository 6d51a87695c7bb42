/* Command-line options: strict number parsing, and the one option parser every command uses.
 *
 * An option is a row of a table (sd_opt): long name, short alias, kind, range, default, help. A command
 * passes its tables (its own options and the shared engine/request table, target/options.h) with the bit
 * that says which rows it takes; sd_args_parse fills one sd_optval per option id, in this order:
 * the row's default, then the environment variable SPECD_<NAME> (--draft-max: SPECD_DRAFT_MAX), then the
 * command line. --help prints the command's options from the same rows (sd_args_help). */
#ifndef SD_ARGS_H
#define SD_ARGS_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"

/* Strict numbers: the whole string must be a number within range. Each returns 0 and stores the value,
 * or -1 (leaving *out alone) so the caller can name the option and the bad value in its message. */
/* A decimal integer in [lo, hi]. */
int sd_arg_int(const char *s, long lo, long hi, int *out);
/* A decimal number in [lo, hi] (the range is checked before rounding to float; NaN never passes). */
int sd_arg_float(const char *s, double lo, double hi, float *out);
/* A non-negative integer (decimal, 0x hex or 0 octal) that fits 64 bits. */
int sd_arg_u64(const char *s, uint64_t *out);

typedef enum sd_opt_kind {
    SD_OPT_FLAG,  /* no value; env: 1/true/yes or 0/false/no */
    SD_OPT_INT,   /* in [lo, hi] */
    SD_OPT_FLOAT, /* in [lo, hi] */
    SD_OPT_U64,   /* any 64-bit unsigned integer */
    SD_OPT_STR,   /* non-empty text */
    SD_OPT_LIST,  /* repeatable text, at most hi values */
} sd_opt_kind;

#define SD_OPT_MAX_LIST 16

typedef struct sd_opt {
    int id;            /* index into the values array */
    const char *name;  /* "--draft-max" */
    const char *alias; /* "-n", or NULL */
    sd_opt_kind kind;
    double lo, hi;     /* numbers: the accepted range; lists: hi = most values */
    const char *def;   /* the default, as it would be typed (parsed like a value); NULL: unset */
    const char *arg;   /* the value's name in --help ("K") */
    unsigned cmds;     /* bits of the commands that take this option (the caller's choice of bits) */
    const char *help;
} sd_opt;

typedef struct sd_opt_table {
    const char *title; /* heading in --help */
    const sd_opt *opts;
    int n;
} sd_opt_table;

typedef struct sd_optval {
    bool set;   /* has a value (default, environment or command line) */
    bool given; /* from the environment or the command line, not the default */
    bool on_cmdline;
    long i;     /* FLAG (0/1), INT */
    double f;   /* FLOAT */
    uint64_t u; /* U64 */
    const char *s;
    const char *list[SD_OPT_MAX_LIST];
    int n_list;
} sd_optval;

typedef struct sd_args_spec {
    const char *prog;           /* "specd generate": prefixes messages and --help */
    const char *usage;          /* the usage line after "usage: " */
    const sd_opt_table *const *tables; /* searched in order */
    int n_tables;
    unsigned cmd;               /* this command's bit: rows without it are unknown options */
    const char **pos;           /* positional arguments go here (NULL: none allowed) */
    int max_pos;
    bool no_help;               /* --help/-h are rows of the caller's table (help depends on positionals) */
} sd_args_spec;

/* Parses argv[1..argc) into vals (n_vals of them, indexed by id; *n_pos gets the positional count when
 * the spec takes them; "--" ends options). Returns 0, 1 when --help/-h was given (help printed to
 * stdout), or -1 with a message naming the option, variable or value in err. */
int sd_args_parse(const sd_args_spec *spec, int argc, char **argv, sd_optval *vals, int n_vals, int *n_pos,
                  sd_err *err);
/* Prints "usage: ..." and every option the command takes, by table, with its default. */
void sd_args_help(const sd_args_spec *spec, FILE *f);
/* SPECD_<NAME> for an option name ("--draft-max" -> "SPECD_DRAFT_MAX") into buf. */
void sd_args_env_name(const char *name, char *buf, size_t cap);

#endif
