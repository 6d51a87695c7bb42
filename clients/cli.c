/* build/specd-cli: a thin command-line client of `specd serve`, built on clients/specd_client.h. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/cli.h"
#include "base/args.h"
#include "base/clock.h"
#include "base/json_out.h"
#include "base/version.h"
#include "ipc/protocol.h"
#include "target/options.h"

/* Command bits beyond the generate/bench ones of target/options.h, for rows of specd-cli's own table. */
enum { CLI_ALL = 1 << 8, CLI_TOKENIZE = 1 << 9, CLI_PING = 1 << 10, CLI_CHAT = 1 << 11, CLI_SPECIAL = 1 << 12,
       CLI_NO_BOS = 1 << 13 };

typedef struct cli_command {
    const char *name, *usage, *help;
    unsigned bit;
} cli_command;

static const cli_command k_commands[] = {
    {"generate", "generate [options] PROMPT", "stream the generated text to stdout",
     SD_CMD_CLI_GENERATE | CLI_SPECIAL | CLI_NO_BOS},
    {"chat", "chat [options]", "a conversation with the model's chat template: a message a line, the reply\n"
                               "                       streams back; history kept; Ctrl-C cancels a reply; /reset, /exit",
     SD_CMD_CLI_GENERATE | CLI_CHAT},
    {"tokenize", "tokenize [--no-bos] [--special] TEXT", "print the token ids", CLI_TOKENIZE | CLI_SPECIAL | CLI_NO_BOS},
    {"detokenize", "detokenize [--special] ID...", "print the text of token ids", CLI_SPECIAL},
    {"info", "info", "models, vocabulary, backend, limits, defaults, version", 0},
    {"stats", "stats", "the daemon's counters and latency histograms", 0},
    {"ping", "ping [-c N] [-i MS]", "round-trip time of N pings, MS apart", CLI_PING},
    {"cancel", "cancel ID", "cancel request ID (protocol v1: only requests of the same connection, so from\n"
                            "                       a separate specd-cli this reports 'not found')", 0},
    {"bench", "bench [options]", "prompts through the daemon, plain and speculative interleaved: per-token\n"
                                 "                       latency p50/p95, time to first token, tokens/s, speedup", SD_CMD_CLI_BENCH},
};
#define N_COMMANDS (int)(sizeof k_commands / sizeof k_commands[0])

enum { O_SOCKET = SD_O_COUNT, O_TCP, O_CURVE_SERVER, O_CURVE_KEY, O_JSON, O_TIMEOUT, O_CONNECT_TIMEOUT, O_WAIT, O_HELP, O_VERSION, O_VERBOSE, O_ECHO,
       O_SPEC, O_NO_BOS, O_COUNT, O_INTERVAL, O_PROMPTS, O_RUNS, O_CONCURRENCY, O_IPC, O_SPECIAL, O_SYSTEM, O_N };
#define ANY (CLI_ALL | SD_CMD_CLI_GENERATE | SD_CMD_CLI_BENCH | CLI_TOKENIZE | CLI_PING | CLI_CHAT | CLI_SPECIAL | CLI_NO_BOS)
static const sd_opt k_own[] = {
    {O_SOCKET, "--socket", NULL, SD_OPT_STR, 0, 0, NULL, "PATH", ANY,
     "the daemon's Unix socket; unset: $XDG_RUNTIME_DIR/specd.sock, else /tmp/specd-$UID.sock"},
    {O_TCP, "--tcp", NULL, SD_OPT_STR, 0, 0, NULL, "HOST:PORT", ANY, "a daemon listening on TCP (PORT alone: 127.0.0.1)"},
    {O_CURVE_SERVER, "--curve-server", NULL, SD_OPT_STR, 0, 0, NULL, "FILE", ANY,
     "TCP with CURVE: the daemon's public key file (NAME.pub of specd keygen)"},
    {O_CURVE_KEY, "--curve-key", NULL, SD_OPT_STR, 0, 0, NULL, "FILE", ANY, "TCP with CURVE: this client's key file (NAME.key)"},
    {O_JSON, "--json", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, ANY, "print one JSON object on stdout instead of text"},
    {O_TIMEOUT, "--timeout", NULL, SD_OPT_FLOAT, 0, 1e6, "60", "SEC", ANY, "give up when the daemon is silent this long; 0: never"},
    {O_CONNECT_TIMEOUT, "--connect-timeout", NULL, SD_OPT_INT, 1, 3600000, "2000", "MS", ANY, "how long connecting may take"},
    {O_WAIT, "--wait", NULL, SD_OPT_FLOAT, 0, 86400, "0", "SEC", ANY,
     "a daemon still starting (loading its models): retry connecting for up to SEC seconds"},
    {O_HELP, "--help", "-h", SD_OPT_FLAG, 0, 0, NULL, NULL, ANY, "this help; after a command, the command's"},
    {O_VERSION, "--version", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, ANY, "print the version"},
    {O_VERBOSE, "--verbose", "-v", SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_CLI_GENERATE,
     "a summary line on stderr: tokens, tokens/s, time to first token, acceptance"},
    {O_ECHO, "--echo", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_CLI_GENERATE, "print the prompt first"},
    {O_SPEC, "--spec", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_CLI_GENERATE | SD_CMD_CLI_BENCH, "speculative decoding (the daemon's default)"},
    {O_NO_BOS, "--no-bos", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, CLI_NO_BOS, "without the BOS token"},
    {O_SPECIAL, "--special", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, CLI_SPECIAL,
     "special tokens as text: \"<|eot_id|>\" in the text is that token; detokenize shows them"},
    {O_SYSTEM, "--system", NULL, SD_OPT_STR, 0, 0, NULL, "TEXT", CLI_CHAT, "a system message to start the conversation"},
    {O_COUNT, "--count", "-c", SD_OPT_INT, 1, 10000000, "1", "N", CLI_PING, "pings"},
    {O_INTERVAL, "--interval", "-i", SD_OPT_FLOAT, 0, 3600000, "0", "MS", CLI_PING, "time between pings"},
    {O_PROMPTS, "--prompts", NULL, SD_OPT_STR, 0, 0, NULL, "FILE", SD_CMD_CLI_BENCH, "one prompt a line"},
    {O_RUNS, "--runs", NULL, SD_OPT_INT, 1, 1000, "3", "R", SD_CMD_CLI_BENCH, "runs over the prompts"},
    {O_CONCURRENCY, "--concurrency", NULL, SD_OPT_INT, 1, 1024, "1", "C", SD_CMD_CLI_BENCH, "clients at once"},
    {O_IPC, "--ipc", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_CLI_BENCH, "also measure the streaming overhead per token"},
};
static const sd_opt_table k_own_table = {"specd-cli", k_own, (int)(sizeof k_own / sizeof k_own[0])};
static const sd_opt_table *const k_tables[] = {&k_own_table, &sd_request_options};

static const char k_exit_text[] =
    "exit status: 0 ok; 1 the daemon answered with an error (or cancel: id not found); 2 usage error;\n"
    "3 no daemon at the endpoint, connection lost or timed out; 130 interrupted (Ctrl-C cancels the\n"
    "request and prints what was generated).\n";

/* specd-cli --help: the commands, the options of every command, the exit codes. */
static void usage_all(FILE *f) {
    fprintf(f, "usage: specd-cli [--socket PATH | --tcp HOST:PORT] [--json] [--timeout SEC] <command> [options] [args]\n"
               "\ncommands (specd-cli COMMAND --help: its options):\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-20s %s\n", k_commands[i].name, k_commands[i].help);
    fprintf(f, "\noptions for every command:\n");
    for (int i = 0; i < k_own_table.n; i++)
        if (k_own[i].cmds & CLI_ALL) {
            const sd_opt *o = &k_own[i];
            char left[64];
            snprintf(left, sizeof left, "%s%s%s %s", o->alias ? o->alias : "", o->alias ? ", " : "", o->name,
                     o->kind == SD_OPT_FLAG ? "" : o->arg);
            fprintf(f, "  %-28s %s\n", left, o->help);
        }
    fprintf(f, "\n%s", k_exit_text);
}

/* specd-cli COMMAND --help. */
static void usage_command(const cli_command *c, FILE *f) {
    char line[256];
    snprintf(line, sizeof line, "specd-cli [global options] %s\n%s", c->usage, c->help);
    sd_args_spec spec = {.prog = "specd-cli", .usage = line, .tables = k_tables, .n_tables = 2, .cmd = c->bit | CLI_ALL};
    sd_args_help(&spec, f);
    if (c->bit & (SD_CMD_CLI_GENERATE | SD_CMD_CLI_BENCH))
        fprintf(f, "Sampling and speculation options not given are not sent: the daemon's defaults apply\n"
                   "(`specd-cli info` shows them; the defaults above are `specd serve`'s own).\n");
    fprintf(f, "\n%s", k_exit_text);
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "specd-cli: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(specd-cli --help for usage)\n");
    return CLI_USAGE;
}

/* --json: errors are JSON on stdout too, so a script reads one object whatever happened. */
static int g_json_errors;

static const char *kind_name(specd_err_kind k) {
    static const char *const names[] = {"none", "connect", "timeout", "daemon", "protocol", "argument"};
    return k >= SPECD_ERR_NONE && k <= SPECD_ERR_ARG ? names[k] : "?";
}

int cli_fail(const specd_error *e) {
    if (g_json_errors) {
        printf("{\"error\":{\"kind\":\"%s\",\"code\":", kind_name(e->kind));
        sd_json_str(stdout, e->code, strlen(e->code));
        printf(",\"message\":");
        sd_json_str(stdout, e->message, strlen(e->message));
        printf("}}\n");
        fflush(stdout);
    } else if (e->kind == SPECD_ERR_DAEMON)
        fprintf(stderr, "specd-cli: daemon error %s: %s\n", e->code, e->message);
    else
        fprintf(stderr, "specd-cli: %s\n", e->message);
    switch (e->kind) {
    case SPECD_ERR_CONNECT:
    case SPECD_ERR_TIMEOUT: return CLI_CONNECT;
    case SPECD_ERR_ARG: return CLI_USAGE;
    default: return CLI_ERR;
    }
}

/* Human form of a JSON object: indented, two spaces a level (strings copied verbatim). */
static void print_indented(const char *j) {
    int depth = 0, in_str = 0;
    for (const char *p = j; *p; p++) {
        char ch = *p;
        if (in_str) {
            putchar(ch);
            if (ch == '\\' && p[1]) putchar(*++p);
            else if (ch == '"') in_str = 0;
            continue;
        }
        if (ch == '"') { in_str = 1; putchar(ch); }
        else if (ch == '{' || ch == '[') {
            /* short arrays of numbers stay on one line */
            const char *q = p + 1;
            while (ch == '[' && *q && *q != ']' && *q != '{' && *q != '[' && *q != '"') q++;
            if (ch == '[' && *q == ']' && q - p < 100) { fwrite(p, 1, (size_t)(q - p + 1), stdout); p = q; continue; }
            printf("%c\n%*s", ch, 2 * ++depth, "");
        } else if (ch == '}' || ch == ']') printf("\n%*s%c", 2 * --depth, "", ch);
        else if (ch == ',') printf(",\n%*s", 2 * depth, "");
        else if (ch == ':') printf(": ");
        else putchar(ch);
    }
    putchar('\n');
}

/* ---- option parsing ---- */

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    int v;
    if (!s || sd_arg_int(s, lo, hi, &v)) {
        fprintf(stderr, "specd-cli: %s: expected an integer in %ld..%ld, got '%s'\n", opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static const cli_command *find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(k_commands[i].name, name)) return &k_commands[i];
    return NULL;
}

/* An option given on the command line that the command does not take: its name, else NULL. */
static const char *foreign_option(const sd_optval *v, unsigned bit) {
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < k_tables[t]->n; i++) {
            const sd_opt *o = &k_tables[t]->opts[i];
            if (v[o->id].on_cmdline && !(o->cmds & (bit | CLI_ALL))) return o->name;
        }
    return NULL;
}

/* The request fields the user gave (the rest stay unset, so the daemon's defaults apply). */
static void gen_from_options(const sd_optval *v, cli_opts *o) {
    specd_gen *g = &o->gen;
    if (v[SD_O_MAX_TOKENS].given) g->max_tokens = (int)v[SD_O_MAX_TOKENS].i;
    if (v[SD_O_TEMP].given) g->temperature = v[SD_O_TEMP].f;
    if (v[SD_O_TOP_K].given) g->top_k = (int)v[SD_O_TOP_K].i;
    if (v[SD_O_TOP_P].given) g->top_p = v[SD_O_TOP_P].f;
    if (v[SD_O_MIN_P].given) g->min_p = v[SD_O_MIN_P].f;
    if (v[SD_O_SEED].given) { g->seed = v[SD_O_SEED].u; g->has_seed = 1; }
    if (v[SD_O_DRAFT_MAX].given) g->draft_max = (int)v[SD_O_DRAFT_MAX].i;
    for (int i = 0; i < v[SD_O_STOP].n_list; i++) o->stop[i] = v[SD_O_STOP].list[i];
    g->n_stop = v[SD_O_STOP].n_list;
    g->stop = o->stop;
    if (v[SD_O_PLAIN].i) g->mode = "plain";
    if (v[O_SPEC].i) g->mode = "spec";
}

/* Options are accepted before or after the command; "--" ends them. Returns CLI_OK, CLI_USAGE, or -1 when
 * --help / --version was answered (exit 0). */
static int parse_args(int argc, char **argv, cli_opts *o, const char **cmd) {
    static sd_optval v[O_N];
    o->args = calloc((size_t)argc + 1, sizeof *o->args);
    if (!o->args) return CLI_USAGE;
    sd_args_spec spec = {.prog = "specd-cli", .usage = "", .tables = k_tables, .n_tables = 2, .cmd = ANY,
                         .pos = (const char **)o->args, .max_pos = argc, .no_help = true};
    sd_err err = {{0}};
    int n_pos = 0;
    if (sd_args_parse(&spec, argc, argv, v, O_N, &n_pos, &err)) return usage_error("%s", err.msg + strlen("specd-cli: "));
    const cli_command *c = n_pos > 0 ? find_command(o->args[0]) : NULL;
    if (v[O_VERSION].i) { printf("specd-cli %s (protocol %d)\n", SD_VERSION, SD_PROTO_VERSION); return -1; }
    if (v[O_HELP].i) {
        if (c) usage_command(c, stdout); else usage_all(stdout);
        return -1;
    }
    if (n_pos == 0) return usage_error("no command given%s", "");
    if (!c) return usage_error("unknown command '%s'", o->args[0]);
    *cmd = o->args[0];
    o->n_args = n_pos - 1;
    memmove(o->args, o->args + 1, (size_t)o->n_args * sizeof *o->args);
    const char *foreign = foreign_option(v, c->bit);
    if (foreign) {
        fprintf(stderr, "specd-cli %s: %s does not apply to this command\n(specd-cli %s --help for its options)\n",
                c->name, foreign, c->name);
        return CLI_USAGE;
    }
    o->json = (int)v[O_JSON].i;
    g_json_errors = o->json;
    o->verbose = (int)v[O_VERBOSE].i;
    o->echo = (int)v[O_ECHO].i;
    o->no_bos = (int)v[O_NO_BOS].i;
    o->special = (int)v[O_SPECIAL].i;
    o->system = v[O_SYSTEM].s;
    o->ipc = (int)v[O_IPC].i;
    o->count = (int)v[O_COUNT].i;
    o->interval_ms = v[O_INTERVAL].f;
    o->prompts_file = v[O_PROMPTS].s;
    o->runs = (int)v[O_RUNS].i;
    o->concurrency = (int)v[O_CONCURRENCY].i;
    o->conn.connect_timeout_ms = (int)v[O_CONNECT_TIMEOUT].i;
    o->conn.wait_ms = (int)(v[O_WAIT].f * 1000 + 0.5);
    o->conn.curve_server = v[O_CURVE_SERVER].s;
    o->conn.curve_key = v[O_CURVE_KEY].s;
    double t = v[O_TIMEOUT].f;
    o->conn.timeout_ms = t == 0 ? -1 : (int)(t * 1000 + 0.5);
    if (o->conn.timeout_ms == 0) o->conn.timeout_ms = 1;
    gen_from_options(v, o);
    if (c->bit == SD_CMD_CLI_BENCH && !v[SD_O_MAX_TOKENS].given) o->gen.max_tokens = (int)v[SD_O_MAX_TOKENS].i;
    specd_error e;
    if (specd_resolve_endpoint(v[O_SOCKET].s, v[O_TCP].s, o->endpoint, sizeof o->endpoint, &e))
        return usage_error("%s", e.message);
    o->conn.endpoint = o->endpoint;
    return CLI_OK;
}

static int want_args(const cli_opts *o, const char *cmd, int lo, int hi, const char *what) {
    if (o->n_args >= lo && (hi < 0 || o->n_args <= hi)) return 0;
    fprintf(stderr, "specd-cli %s: expected %s\n(specd-cli --help for usage)\n", cmd, what);
    return -1;
}

static int connect_or_fail(const cli_opts *o, specd_client **c) {
    specd_error e;
    if (specd_connect(&o->conn, c, &e)) return cli_fail(&e);
    return CLI_OK;
}

/* ---- generate ---- */

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends the process at once */
}

static int print_token(const specd_token *t, void *user) {
    const cli_opts *o = user;
    if (!o->json && t->len) {
        fwrite(t->text, 1, t->len, stdout);
        fflush(stdout);
    }
    return interrupted;
}

static void print_summary(FILE *f, const specd_result *r) {
    const specd_gen_stats *s = &r->stats;
    double tps = s->ms_per_token > 0 ? 1000.0 / s->ms_per_token : 0;
    fprintf(f, "[%d tokens, finish %s, %.1f tokens/s, first token %.2f ms (client %.2f ms), total %.1f ms",
            s->generated, r->finish_reason, tps, s->ttft_ms, r->client_ttft_ms, r->client_total_ms);
    if (s->drafted > 0) fprintf(f, ", acceptance %.3f (%d/%d)", s->acceptance, s->accepted, s->drafted);
    if (s->reused > 0) fprintf(f, ", prompt %d tokens of which %d reused", s->prompt_tokens, s->reused);
    if (s->preempted > 0) fprintf(f, ", preempted %d times", s->preempted);
    fprintf(f, "]\n");
}

static int cmd_generate(cli_opts *o) {
    if (want_args(o, "generate", 1, 1, "one PROMPT argument (quote it)")) return CLI_USAGE;
    specd_client *c;
    int rc = connect_or_fail(o, &c);
    if (rc) return rc;
    o->gen.prompt = o->args[0];
    o->gen.stream = 1;
    if (o->no_bos) o->gen.add_bos = 0;
    o->gen.special = o->special;
    if (o->echo && !o->json) { fputs(o->gen.prompt, stdout); fflush(stdout); }
    signal(SIGINT, on_sigint);
    specd_result r;
    specd_error e;
    if (specd_generate(c, &o->gen, print_token, o, &r, &e)) {
        if (!o->json) fflush(stdout);
        specd_close(c);
        return cli_fail(&e);
    }
    if (o->json) {
        /* the daemon's done map, plus what the client measured */
        size_t n = strlen(r.json);
        while (n && r.json[n - 1] != '}') n--;
        fwrite(r.json, 1, n ? n - 1 : 0, stdout);
        printf(",\"client\":{\"endpoint\":");
        sd_json_str(stdout, specd_endpoint(c), strlen(specd_endpoint(c)));
        printf(",\"ttft_ms\":%.3f,\"total_ms\":%.3f,\"events\":%d}}\n", r.client_ttft_ms, r.client_total_ms,
               r.n_events);
    } else if (r.text_len == 0 || r.text[r.text_len - 1] != '\n') {
        putchar('\n');
    }
    fflush(stdout); /* the summary (stderr) comes after the text */
    if (o->verbose) print_summary(stderr, &r);
    rc = interrupted ? CLI_INTERRUPTED : CLI_OK;
    specd_result_free(&r);
    specd_close(c);
    return rc;
}

/* ---- the short ops ---- */

static int cmd_tokenize(cli_opts *o) {
    if (want_args(o, "tokenize", 1, 1, "one TEXT argument (quote it)")) return CLI_USAGE;
    specd_client *c;
    int rc = connect_or_fail(o, &c);
    if (rc) return rc;
    int32_t *ids;
    int n;
    specd_error e;
    int flags = (o->no_bos ? 0 : SPECD_TOK_ADD_BOS) | (o->special ? SPECD_TOK_SPECIAL : 0);
    if (specd_tokenize(c, o->args[0], flags, &ids, &n, &e)) {
        specd_close(c);
        return cli_fail(&e);
    }
    if (o->json) {
        printf("{\"tokens\":");
        sd_json_ids(stdout, ids, n);
        printf(",\"n\":%d}\n", n);
    } else {
        for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
        putchar('\n');
    }
    free(ids);
    specd_close(c);
    return CLI_OK;
}

static int cmd_detokenize(cli_opts *o) {
    if (want_args(o, "detokenize", 1, -1, "one or more token ids")) return CLI_USAGE;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)o->n_args);
    if (!ids) return CLI_ERR;
    for (int i = 0; i < o->n_args; i++) {
        long v;
        if (parse_int("detokenize", o->args[i], 0, INT32_MAX, &v)) { free(ids); return CLI_USAGE; }
        ids[i] = (int32_t)v;
    }
    specd_client *c;
    int rc = connect_or_fail(o, &c);
    if (rc) { free(ids); return rc; }
    char *text;
    specd_error e;
    rc = specd_detokenize_special(c, ids, o->n_args, o->special, &text, &e);
    free(ids);
    specd_close(c);
    if (rc) return cli_fail(&e);
    if (o->json) {
        printf("{\"text\":");
        sd_json_str(stdout, text, strlen(text));
        printf("}\n");
    } else {
        printf("%s\n", text);
    }
    free(text);
    return CLI_OK;
}

static int cmd_json_op(cli_opts *o, const char *name, int (*fn)(specd_client *, char **, specd_error *)) {
    if (want_args(o, name, 0, 0, "no arguments")) return CLI_USAGE;
    specd_client *c;
    int rc = connect_or_fail(o, &c);
    if (rc) return rc;
    char *json;
    specd_error e;
    rc = fn(c, &json, &e);
    specd_close(c);
    if (rc) return cli_fail(&e);
    if (o->json) printf("%s\n", json); else print_indented(json);
    free(json);
    return CLI_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_ping(cli_opts *o) {
    if (want_args(o, "ping", 0, 0, "no arguments (-c N for N pings)")) return CLI_USAGE;
    int n = o->count > 0 ? o->count : 1;
    double *rtt = malloc(sizeof(double) * (size_t)n);
    if (!rtt) return CLI_ERR;
    specd_client *c;
    int rc = connect_or_fail(o, &c);
    if (rc) { free(rtt); return rc; }
    specd_error e;
    for (int i = 0; i < n; i++) {
        if (specd_ping(c, &rtt[i], &e)) {
            specd_close(c);
            free(rtt);
            return cli_fail(&e);
        }
        if (!o->json && n <= 10) printf("pong from %s: %.1f us\n", specd_endpoint(c), rtt[i]);
        if (o->interval_ms > 0 && i + 1 < n) {
            struct timespec ts = {(time_t)(o->interval_ms / 1000), (long)(fmod(o->interval_ms, 1000) * 1e6)};
            nanosleep(&ts, NULL);
        }
    }
    double sum = 0;
    for (int i = 0; i < n; i++) sum += rtt[i];
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
    double p50 = rtt[(n - 1) / 2], p95 = rtt[(int)((n - 1) * 0.95)];
    if (o->json) {
        printf("{\"endpoint\":");
        sd_json_str(stdout, specd_endpoint(c), strlen(specd_endpoint(c)));
        printf(",\"count\":%d,\"rtt_us\":{\"min\":%.2f,\"p50\":%.2f,\"p95\":%.2f,\"max\":%.2f,\"mean\":%.2f}}\n", n,
               rtt[0], p50, p95, rtt[n - 1], sum / n);
    } else if (n > 1) {
        printf("%d pings: min %.1f us, p50 %.1f us, p95 %.1f us, max %.1f us, mean %.1f us\n", n, rtt[0], p50, p95,
               rtt[n - 1], sum / n);
    }
    free(rtt);
    specd_close(c);
    return CLI_OK;
}

static int cmd_cancel(cli_opts *o) {
    if (want_args(o, "cancel", 1, 1, "one request ID")) return CLI_USAGE;
    char *end;
    errno = 0;
    unsigned long long id = strtoull(o->args[0], &end, 10);
    if (!o->args[0][0] || *end || errno || o->args[0][0] == '-')
        return usage_error("cancel: '%s' is not a request id (an unsigned integer)", o->args[0]);
    specd_client *c;
    int rc = connect_or_fail(o, &c);
    if (rc) return rc;
    int found = 0;
    specd_error e;
    rc = specd_cancel(c, id, &found, &e);
    specd_close(c);
    if (rc) return cli_fail(&e);
    if (o->json) printf("{\"target\":%llu,\"found\":%s}\n", id, found ? "true" : "false");
    else if (found) printf("cancelled request %llu\n", id);
    else printf("request %llu: not queued or running on this connection\n", id);
    return found ? CLI_OK : CLI_ERR;
}

int main(int argc, char **argv) {
    cli_opts o = {.gen = specd_gen_default()};
    const char *cmd = NULL;
    if (argc < 2) {
        usage_all(stderr);
        return CLI_USAGE;
    }
    int rc = parse_args(argc, argv, &o, &cmd);
    if (rc < 0) rc = CLI_OK;
    else if (rc == CLI_OK) {
        if (!strcmp(cmd, "generate")) rc = cmd_generate(&o);
        else if (!strcmp(cmd, "chat")) rc = cli_chat(&o);
        else if (!strcmp(cmd, "tokenize")) rc = cmd_tokenize(&o);
        else if (!strcmp(cmd, "detokenize")) rc = cmd_detokenize(&o);
        else if (!strcmp(cmd, "info")) rc = cmd_json_op(&o, "info", specd_info);
        else if (!strcmp(cmd, "stats")) rc = cmd_json_op(&o, "stats", specd_stats);
        else if (!strcmp(cmd, "ping")) rc = cmd_ping(&o);
        else if (!strcmp(cmd, "cancel")) rc = cmd_cancel(&o);
        else if (!strcmp(cmd, "bench")) rc = cli_bench(&o);
        else rc = usage_error("unknown command '%s'", cmd);
    }
    free(o.args);
    return rc;
}
