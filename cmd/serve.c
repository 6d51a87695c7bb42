/* `specd serve`: parses options, loads the models once, and runs the daemon until SIGINT/SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/server.h"
#include "ipc/transport.h"
#include "target/engine.h"
#include "base/args.h"
#include "cmd/commands.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void usage(void) {
    fprintf(stderr,
            "usage: specd serve -m TARGET [-z TOK] [-md DRAFT [-zd TOK] | --lookup N | --draft-layers L]\n"
            "                   [--socket PATH | --tcp [HOST:]PORT] [--socket-mode MODE] [--max-sessions N]\n"
            "                   [--queue N] [--ctx N] [--grace S] [--log-level L] [-t N] [--device D]\n"
            "                   [--temp T] [--top-k K] [--top-p P] [--min-p P] [-n N] [--draft-max K] [--draft-min K]\n"
            "\n"
            "  -m TARGET          target model (GGUF, or llama2.c .bin with -z)\n"
            "  -z TOK             llama2.c tokenizer file for a .bin target\n"
            "  -md DRAFT, -zd TOK draft model (and its tokenizer) for speculative decoding\n"
            "  --lookup N         n-gram lookup proposer instead of a draft model\n"
            "  --draft-layers L   self-drafting with the target's first L layers\n"
            "  --socket PATH      Unix socket (default $XDG_RUNTIME_DIR/specd.sock, else /tmp/specd-$UID.sock)\n"
            "  --tcp [HOST:]PORT  listen on TCP instead (host 127.0.0.1 unless named)\n"
            "  --socket-mode MODE socket file mode, octal (default 0600)\n"
            "  --max-sessions N   requests running at once, each with its own KV caches (default 4)\n"
            "  --queue N          requests waiting beyond that; more are answered `busy` (default 64)\n"
            "  --ctx N            context length (default: the target's)\n"
            "  --grace S          on SIGTERM, let running requests finish for S seconds (default 0)\n"
            "  --log-level L      error, warn, info (default), debug\n"
            "  -t N, --device D   CPU threads; backend auto|cpu|cuda[:N]\n"
            "  generation defaults (requests override them): --temp (0) --top-k (0) --top-p (1) --min-p (0)\n"
            "                     -n max tokens (256) --draft-max --draft-min\n"
            "See docs/protocol.md for the protocol.\n");
}

/* Number options: the shared strict parser, and a message naming the option and the accepted range. */
static int num_int(const char *opt, const char *v, long lo, long hi, int *out) {
    if (v && sd_arg_int(v, lo, hi, out) == 0) return 0;
    fprintf(stderr, "specd serve: %s needs an integer in %ld..%ld, got '%s'\n", opt, lo, hi, v ? v : "");
    return -1;
}

static int num_float(const char *opt, const char *v, double lo, double hi, float *out) {
    if (v && sd_arg_float(v, lo, hi, out) == 0) return 0;
    fprintf(stderr, "specd serve: %s needs a number in %g..%g, got '%s'\n", opt, lo, hi, v ? v : "");
    return -1;
}

typedef struct serve_args {
    sd_engine_config ec;
    sd_server_opts so;
    const char *socket, *tcp;
    float grace;
    int log_level;
} serve_args;

/* One option (with its value at argv[*i + 1]); returns 0, -1 (bad value) or 1 (unknown option). */
static int parse_opt(serve_args *a, int argc, char **argv, int *i) {
    const char *o = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    sd_gen_params *d = &a->so.defaults;
    int rc = 0;
#define IS(s) (!strcmp(o, s))
    if (IS("-m")) a->ec.target_path = v;
    else if (IS("-z")) a->ec.target_tok = v;
    else if (IS("-md")) a->ec.draft_path = v;
    else if (IS("-zd")) a->ec.draft_tok = v;
    else if (IS("--lookup")) rc = num_int(o, v, 1, 16, &a->ec.lookup_n);
    else if (IS("--draft-layers")) rc = num_int(o, v, 1, 1024, &a->ec.draft_layers);
    else if (IS("--socket")) a->socket = v;
    else if (IS("--tcp")) a->tcp = v;
    else if (IS("--socket-mode")) {
        a->so.socket_mode = sd_parse_mode(v);
        if (a->so.socket_mode < 0) { fprintf(stderr, "specd serve: --socket-mode needs an octal mode like 0660\n"); rc = -1; }
    }
    else if (IS("--max-sessions")) rc = num_int(o, v, 1, 1024, &a->so.max_sessions);
    else if (IS("--queue")) rc = num_int(o, v, 0, 1 << 20, &a->so.queue);
    else if (IS("--ctx")) rc = num_int(o, v, 2, 1 << 24, &a->ec.ctx);
    else if (IS("--grace")) rc = num_float(o, v, 0, 86400, &a->grace);
    else if (IS("--log-level")) {
        a->log_level = sd_log_parse_level(v);
        if (a->log_level < 0) { fprintf(stderr, "specd serve: --log-level is error, warn, info or debug\n"); rc = -1; }
    }
    else if (IS("-t")) rc = num_int(o, v, 1, 1024, &a->ec.n_threads);
    else if (IS("--device")) a->ec.device = v;
    else if (IS("--temp")) rc = num_float(o, v, 0, 100, &d->sampling.temperature);
    else if (IS("--top-k")) rc = num_int(o, v, 0, 1 << 20, &d->sampling.top_k);
    else if (IS("--top-p")) rc = num_float(o, v, 1e-6, 1, &d->sampling.top_p);
    else if (IS("--min-p")) rc = num_float(o, v, 0, 1, &d->sampling.min_p);
    else if (IS("-n")) rc = num_int(o, v, 1, 1 << 20, &a->so.max_tokens);
    else if (IS("--draft-max")) rc = num_int(o, v, 1, 16, &d->draft_max);
    else if (IS("--draft-min")) rc = num_int(o, v, 0, 16, &d->draft_min);
    else return 1;
#undef IS
    if (!v) { fprintf(stderr, "specd serve: %s needs a value\n", o); return -1; }
    (*i)++;
    return rc;
}

static int parse_args(serve_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->so.socket_mode = 0600;
    a->so.max_sessions = 4;
    a->so.queue = 64;
    a->so.max_tokens = 256;
    a->so.defaults = sd_gen_params_default();
    a->so.defaults.sampling.temperature = 0;
    a->so.defaults.sampling.top_k = 0;
    a->so.defaults.sampling.top_p = 1;
    a->so.defaults.sampling.min_p = 0;
    a->log_level = SD_LOG_INFO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(); return 1; }
        int rc = parse_opt(a, argc, argv, &i);
        if (rc > 0) fprintf(stderr, "specd serve: unknown option '%s'\n", argv[i]);
        if (rc) return -1;
    }
    if (!a->ec.target_path) { fprintf(stderr, "specd serve: -m TARGET is required\n"); return -1; }
    int props = (a->ec.draft_path != NULL) + (a->ec.lookup_n > 0) + (a->ec.draft_layers > 0);
    if (props > 1) { fprintf(stderr, "specd serve: give one of -md, --lookup, --draft-layers\n"); return -1; }
    if (a->so.defaults.draft_min > a->so.defaults.draft_max) {
        fprintf(stderr, "specd serve: --draft-min is above --draft-max\n");
        return -1;
    }
    a->so.grace_s = a->grace;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    serve_args a;
    int prc = parse_args(&a, argc, argv);
    if (prc > 0) return 0;
    if (prc < 0) { usage(); return 2; }
    sd_log_set_level((sd_log_level)a.log_level);
    char endpoint[SD_ENDPOINT_MAX], path[SD_ENDPOINT_MAX];
    sd_err err = {{0}};
    if (sd_endpoint_resolve(a.socket, a.tcp, endpoint, sizeof endpoint, path, sizeof path, &err)) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        return 2;
    }
    a.so.endpoint = endpoint;
    a.so.socket_path = path;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    sd_engine *e = NULL;
    if (sd_engine_open(&a.ec, &e, &err)) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        return 1;
    }
    if (e->backend_note[0]) sd_log(SD_LOG_INFO, "%s", e->backend_note);
    char mem[512];
    sd_engine_memory_report(e, mem, sizeof mem);
    sd_log(SD_LOG_INFO, "%s", mem);
    int rc = sd_server_run(e, &a.so, &g_stop, &err);
    sd_engine_free(e);
    if (rc) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        return 1;
    }
    return 0;
}
