/* `specd serve`: parses options, loads the models once, and runs the daemon until SIGINT/SIGTERM/SIGQUIT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/server.h"
#include "ipc/transport.h"
#include "cmd/commands.h"
#include "gateway/gateway.h"
#include "cmd/options.h"

/* Signals: SIGTERM, SIGINT and SIGQUIT stop the daemon gracefully; SIGHUP and SIGUSR1 log a line of
 * statistics; SIGALRM, SIGUSR2 and SIGPIPE are ignored. Every other signal that would end the process
 * removes the socket file first (while the server holds it), so only SIGKILL leaves one behind, and the
 * next `specd serve` replaces that stale file. */
static volatile sig_atomic_t g_stop, g_report, g_bound;
static char g_sock_path[SD_ENDPOINT_MAX];
static void on_signal(int sig) { (void)sig; g_stop = 1; }
static void on_report(int sig) { (void)sig; g_report = 1; }
static void on_fatal(int sig) {
    if (g_bound && g_sock_path[0]) unlink(g_sock_path);
    raise(sig); /* SA_RESETHAND restored the default action: it ends the process when this returns */
}

static void handle(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void install_signals(void) {
    handle(SIGTERM, on_signal, 0);
    handle(SIGINT, on_signal, 0);
    handle(SIGQUIT, on_signal, 0);
    handle(SIGHUP, on_report, SA_RESTART);
    handle(SIGUSR1, on_report, SA_RESTART);
    handle(SIGALRM, SIG_IGN, 0);
    handle(SIGUSR2, SIG_IGN, 0);
    handle(SIGPIPE, SIG_IGN, 0);
    static const int fatal[] = {SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGSTKFLT, SIGPWR, SIGIO, SIGSYS,
                                SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
        struct sigaction old;
        /* a sanitizer's crash handler stays: its report matters more than the file */
        if (sigaction(fatal[i], NULL, &old) == 0 && old.sa_handler != SIG_DFL) continue;
        handle(fatal[i], on_fatal, SA_RESETHAND);
    }
    for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++) handle(sig, on_fatal, SA_RESETHAND);
}

/* serve's own options; the engine and request options (the defaults of requests) come from
 * target/options.h. */
enum { O_SOCKET = SD_O_COUNT, O_TCP, O_SOCKET_MODE, O_MAX_SESSIONS, O_QUEUE, O_BATCH_TOKENS, O_GRACE, O_LOG_LEVEL, O_CHAT_TEMPLATE,
       O_HTTP, O_API_KEY, O_HTTP_TIMEOUT, O_CURVE_SECRET, O_CURVE_CLIENTS, O_N };
static const sd_opt k_own[] = {
    {O_SOCKET, "--socket", NULL, SD_OPT_STR, 0, 0, NULL, "PATH", SD_CMD_SERVE,
     "Unix socket; unset: $XDG_RUNTIME_DIR/specd.sock, else /tmp/specd-$UID.sock"},
    {O_TCP, "--tcp", NULL, SD_OPT_STR, 0, 0, NULL, "[HOST:]PORT", SD_CMD_SERVE, "listen on TCP instead (host 127.0.0.1 unless named)"},
    {O_CURVE_SECRET, "--curve-secret", NULL, SD_OPT_STR, 0, 0, NULL, "FILE", SD_CMD_SERVE,
     "TCP with CURVE: this daemon's key file (specd keygen); required beyond loopback"},
    {O_CURVE_CLIENTS, "--curve-clients", NULL, SD_OPT_STR, 0, 0, NULL, "DIR", SD_CMD_SERVE,
     "TCP with CURVE: the *.pub key files of the clients let in"},
    {O_SOCKET_MODE, "--socket-mode", NULL, SD_OPT_STR, 0, 0, "0600", "MODE", SD_CMD_SERVE, "socket file mode, octal"},
    {O_MAX_SESSIONS, "--max-sessions", NULL, SD_OPT_INT, 1, 1024, "4", "N", SD_CMD_SERVE,
     "requests running at once, each with its own KV caches"},
    {O_QUEUE, "--queue", NULL, SD_OPT_INT, 0, 1 << 20, "64", "N", SD_CMD_SERVE, "requests waiting beyond that; more are answered `busy`"},
    {O_BATCH_TOKENS, "--batch-tokens", NULL, SD_OPT_INT, 0, 1 << 20, "128", "N", SD_CMD_SERVE,
     "rows of a turn's batch that prompt prefill may fill (chunked prefill; 0: whole prompts)"},
    {O_GRACE, "--grace", NULL, SD_OPT_FLOAT, 0, 86400, "0", "S", SD_CMD_SERVE,
     "on SIGTERM, let running requests finish for S seconds"},
    {O_LOG_LEVEL, "--log-level", NULL, SD_OPT_STR, 0, 0, "info", "L", SD_CMD_SERVE, "error, warn, info or debug"},
    {O_CHAT_TEMPLATE, "--chat-template", NULL, SD_OPT_STR, 0, 0, NULL, "FILE", SD_CMD_SERVE,
     "Jinja chat template for `chat` requests; unset: the model's tokenizer.chat_template"},
    {O_HTTP, "--http", NULL, SD_OPT_STR, 0, 0, NULL, "[HOST:]PORT", SD_CMD_SERVE,
     "also serve the OpenAI HTTP API there (host 127.0.0.1 unless named)"},
    {O_API_KEY, "--api-key", NULL, SD_OPT_STR, 0, 0, NULL, "KEY", SD_CMD_SERVE,
     "HTTP clients must send Authorization: Bearer KEY (required beyond loopback)"},
    {O_HTTP_TIMEOUT, "--http-timeout", NULL, SD_OPT_INT, 1, 3600, "30", "S", SD_CMD_SERVE,
     "an HTTP request (headers and body) not complete S seconds after its connection opened gets 408 and is closed; idle connections close after S too"},
};
static const sd_opt_table k_own_table = {"serve", k_own, (int)(sizeof k_own / sizeof k_own[0])};
static const sd_opt_table *const k_tables[] = {&k_own_table, &sd_engine_options, &sd_request_options};
static const sd_args_spec k_spec = {.prog = "specd serve", .usage = "specd serve -m TARGET [-md DRAFT | --lookup N | --draft-layers L] [options]\n"
                                    "Loads the models once and answers clients over ZeroMQ (docs/protocol.md);\n"
                                    "the sampling and speculation options are the defaults of requests that give none.",
                                    .tables = k_tables, .n_tables = 3, .cmd = SD_CMD_SERVE};

typedef struct serve_args {
    sd_optval v[O_N];
    sd_engine_config ec;
    sd_server_opts so;
    int log_level;
} serve_args;

/* A usage error: prints it and returns 2. */
static int usage_error(const char *msg) {
    fprintf(stderr, "specd serve: %s\n(specd serve --help for usage)\n", msg);
    return 2;
}

/* Returns 0 to go on, else the exit status (0 after --help, 2 on a usage error). */
static int parse_args(serve_args *a, int argc, char **argv, int *go_on) {
    memset(a, 0, sizeof *a);
    int rc = cmd_parse_options(&k_spec, argc, argv, a->v, O_N, go_on);
    if (!*go_on) return rc;
    *go_on = 0;
    const sd_optval *v = a->v;
    cmd_engine_config(v, &a->ec);
    cmd_gen_params(v, &a->so.defaults);
    a->so.max_tokens = a->so.defaults.max_tokens;
    a->so.max_sessions = (int)v[O_MAX_SESSIONS].i;
    a->so.queue = (int)v[O_QUEUE].i;
    a->so.batch_tokens = (int)v[O_BATCH_TOKENS].i;
    a->so.grace_s = (float)v[O_GRACE].f;
    a->so.socket_mode = sd_parse_mode(v[O_SOCKET_MODE].s);
    a->log_level = sd_log_parse_level(v[O_LOG_LEVEL].s);
    a->so.chat_template = v[O_CHAT_TEMPLATE].s;
    a->so.curve_secret = v[O_CURVE_SECRET].s;
    a->so.curve_clients = v[O_CURVE_CLIENTS].s;
    if (a->so.curve_secret && v[O_HTTP].s)
        return usage_error("--http with CURVE is not supported yet (the gateway has no client key)");
    if (a->so.socket_mode < 0) return usage_error("--socket-mode needs an octal mode like 0660");
    if (a->log_level < 0) return usage_error("--log-level is error, warn, info or debug");
    if (!a->ec.target_path) return usage_error("-m TARGET is required");
    if (cmd_n_proposers(v) > 1) return usage_error("give one of -md, --lookup, --draft-layers");
    if (a->so.defaults.draft_min > a->so.defaults.draft_max) return usage_error("--draft-min is above --draft-max");
    *go_on = 1;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    static serve_args a;
    int go_on, prc = parse_args(&a, argc, argv, &go_on);
    if (!go_on) return prc;
    sd_log_set_level((sd_log_level)a.log_level);
    char endpoint[SD_ENDPOINT_MAX], path[SD_ENDPOINT_MAX];
    sd_err err = {{0}};
    if (sd_endpoint_resolve(a.v[O_SOCKET].s, a.v[O_TCP].s, endpoint, sizeof endpoint, path, sizeof path, &err)) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        return 2;
    }
    a.so.endpoint = endpoint;
    a.so.socket_path = path;
    if (!a.v[O_SOCKET].s && !a.v[O_TCP].s) { /* the default socket: its directory must be ours alone */
        char dir[SD_ENDPOINT_MAX];
        sd_default_socket_dir(dir, sizeof dir);
        if (sd_private_dir(dir, true, &err)) {
            fprintf(stderr, "specd serve: %s\n", err.msg);
            return 1;
        }
    }

    snprintf(g_sock_path, sizeof g_sock_path, "%s", path);
    a.so.report = &g_report;
    a.so.bound = &g_bound;
    install_signals();

    if (sd_server_check_endpoint(&a.so, &err)) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        return 1;
    }
    /* the gateway is up while the models load: /health answers 503 until the daemon answers */
    sd_gateway *gw = NULL;
    sd_gateway_opts go = {.listen = a.v[O_HTTP].s, .endpoint = endpoint, .api_key = a.v[O_API_KEY].s,
                          .body_timeout_s = (int)a.v[O_HTTP_TIMEOUT].i};
    if (go.listen && sd_gateway_start(&go, &gw, &err)) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        return 2;
    }
    if (gw) sd_log(SD_LOG_INFO, "OpenAI HTTP API on http://%s/v1", go.listen);
    const char *load_delay = getenv("SPECD_LOAD_DELAY_MS"); /* test hook: a slow load (/health answers 503 meanwhile) */
    if (load_delay) usleep((useconds_t)atoi(load_delay) * 1000);
    sd_engine *e = NULL;
    if (sd_engine_open(&a.ec, &e, &err)) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        sd_gateway_stop(gw);
        return 1;
    }
    if (e->backend_note[0]) sd_log(SD_LOG_INFO, "%s", e->backend_note);
    if (e->warning[0]) sd_log(SD_LOG_WARN, "%s", e->warning);
    char mem[512];
    sd_engine_memory_report(e, mem, sizeof mem);
    sd_log(SD_LOG_INFO, "%s", mem);
    int rc = sd_server_run(e, &a.so, &g_stop, &err);
    sd_gateway_stop(gw);
    sd_engine_free(e);
    if (rc) {
        fprintf(stderr, "specd serve: %s\n", err.msg);
        return 1;
    }
    return 0;
}
