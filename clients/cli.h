/* Internal to build/specd-cli (clients/cli.c, clients/cli_bench.c): parsed options, exit codes, output. */
#ifndef SPECD_CLI_H
#define SPECD_CLI_H
#include <stdio.h>

#include "base/args.h"
#include "clients/specd_client.h"

/* Exit codes (documented in --help and README "Clients"). */
enum {
    CLI_OK = 0,
    CLI_ERR = 1,      /* the daemon answered with an error, or a request failed */
    CLI_USAGE = 2,    /* bad command line */
    CLI_CONNECT = 3,  /* no daemon at the endpoint, connection lost, or timed out */
    CLI_INTERRUPTED = 130,
};

typedef struct cli_opts {
    specd_options conn;
    char endpoint[512];
    int json, verbose, echo, no_bos, special;
    const char *system;     /* chat --system */
    specd_gen gen;
    const char *stop[SD_OPT_MAX_LIST];  /* --stop values (the option table bounds them: SD_MAX_STOP) */
    int count;              /* ping -c */
    double interval_ms;     /* ping -i */
    const char *prompts_file;
    int runs, concurrency, ipc;
    char **args;            /* positional arguments after the command */
    int n_args;
} cli_opts;

/* Exit code for a library error, after printing "specd-cli: message" to stderr. */
int cli_fail(const specd_error *e);

int cli_bench(cli_opts *o);
int cli_chat(cli_opts *o); /* clients/cli_chat.c */

#endif
