/* build/specd-cli: a thin command-line client of `specd serve`, built on clients/specd_client.h. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/cli.h"
#include "base/json_out.h"
#include "base/clock.h"

static const char usage_text[] =
    "usage: specd-cli [--socket PATH | --tcp HOST:PORT] [--json] [--timeout SEC] <command> [options] [args]\n"
    "\n"
    "commands:\n"
    "  generate PROMPT      stream the generated text to stdout\n"
    "      -n N  --temp T  --top-k K  --top-p P  --min-p P  --seed S  --stop STR (repeatable)\n"
    "      --plain (no speculation)  --spec  --draft-max K  --echo (print the prompt first)\n"
    "      -v (a summary line on stderr: tokens, tokens/s, time to first token, acceptance)\n"
    "  tokenize TEXT        print the token ids (--no-bos: without the BOS token)\n"
    "  detokenize ID...     print the text of token ids\n"
    "  info                 models, vocabulary, backend, limits, defaults, version\n"
    "  stats                the daemon's counters and latency histograms\n"
    "  ping [-c N] [-i MS]  round-trip time of N pings (default 1), MS apart (default 0)\n"
    "  cancel ID            cancel request ID (protocol v1: only requests of the same connection,\n"
    "                       so from a separate specd-cli this reports 'not found')\n"
    "  bench                prompts through the daemon, plain and speculative interleaved: per-token\n"
    "                       latency p50/p95, time to first token, tokens/s, speedup\n"
    "      --prompts FILE (one prompt a line)  -n N (64)  --runs R (3)  --concurrency C (1)\n"
    "      --ipc (also measure the streaming overhead per token)  and the sampling options of generate\n"
    "\n"
    "options for every command:\n"
    "  --socket PATH        the daemon's Unix socket (default $XDG_RUNTIME_DIR/specd.sock,\n"
    "                       else /tmp/specd-$UID.sock, as `specd serve`)\n"
    "  --tcp HOST:PORT      a daemon listening on TCP (PORT alone: 127.0.0.1)\n"
    "  --json               print one JSON object on stdout instead of text\n"
    "  --timeout SEC        give up when the daemon is silent this long (default 60; 0: never)\n"
    "  --connect-timeout MS how long connecting may take (default 2000)\n"
    "\n"
    "exit status: 0 ok; 1 the daemon answered with an error (or cancel: id not found); 2 usage error;\n"
    "3 no daemon at the endpoint, connection lost or timed out; 130 interrupted (Ctrl-C cancels the\n"
    "request and prints what was generated).\n";

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "specd-cli: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(specd-cli --help for usage)\n");
    return CLI_USAGE;
}

int cli_fail(const specd_error *e) {
    if (e->kind == SPECD_ERR_DAEMON)
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
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "specd-cli: %s: expected an integer in %ld..%ld, got '%s'\n", opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "specd-cli: %s: expected a number in %g..%g, got '%s'\n", opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* Options are accepted before or after the command; "--" ends them. Returns CLI_OK or CLI_USAGE. */
static int parse_args(int argc, char **argv, cli_opts *o, const char **cmd) {
    const char *sock = NULL, *tcp = NULL;
    int n_pos = 0, opts_done = 0;
    o->args = calloc((size_t)argc + 1, sizeof *o->args);
    if (!o->args) return CLI_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l;
        double d;
        if (opts_done || a[0] != '-' || !a[1]) {
            if (!*cmd) *cmd = a; else o->args[n_pos++] = (char *)a;
            continue;
        }
#define NEEDV() do { if (!v) return usage_error("option %s needs a value", a); i++; } while (0)
        if (!strcmp(a, "--")) opts_done = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_text, stdout); exit(CLI_OK); }
        else if (!strcmp(a, "--socket")) { NEEDV(); sock = v; }
        else if (!strcmp(a, "--tcp")) { NEEDV(); tcp = v; }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else if (!strcmp(a, "--echo")) o->echo = 1;
        else if (!strcmp(a, "--no-bos")) o->no_bos = 1;
        else if (!strcmp(a, "--plain")) o->gen.mode = "plain";
        else if (!strcmp(a, "--spec")) o->gen.mode = "spec";
        else if (!strcmp(a, "--ipc")) o->ipc = 1;
        else if (!strcmp(a, "--timeout")) {
            NEEDV();
            if (parse_num(a, v, 0, 1e6, &d)) return CLI_USAGE;
            o->conn.timeout_ms = d == 0 ? -1 : (int)(d * 1000 + 0.5);
            if (o->conn.timeout_ms == 0) o->conn.timeout_ms = 1;
        } else if (!strcmp(a, "--connect-timeout")) {
            NEEDV();
            if (parse_int(a, v, 1, 3600000, &l)) return CLI_USAGE;
            o->conn.connect_timeout_ms = (int)l;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            NEEDV();
            if (parse_int(a, v, 1, 1 << 20, &l)) return CLI_USAGE;
            o->gen.max_tokens = (int)l;
        } else if (!strcmp(a, "--temp")) { NEEDV(); if (parse_num(a, v, 0, 100, &o->gen.temperature)) return CLI_USAGE; }
        else if (!strcmp(a, "--top-k")) {
            NEEDV();
            if (parse_int(a, v, 0, 1 << 20, &l)) return CLI_USAGE;
            o->gen.top_k = (int)l;
        } else if (!strcmp(a, "--top-p")) { NEEDV(); if (parse_num(a, v, 1e-9, 1, &o->gen.top_p)) return CLI_USAGE; }
        else if (!strcmp(a, "--min-p")) { NEEDV(); if (parse_num(a, v, 0, 1, &o->gen.min_p)) return CLI_USAGE; }
        else if (!strcmp(a, "--seed")) {
            NEEDV();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (!*v || *end || errno || v[0] == '-') return usage_error("--seed: expected an unsigned integer, got '%s'", v);
            o->gen.seed = s;
            o->gen.has_seed = 1;
        } else if (!strcmp(a, "--stop")) {
            NEEDV();
            if (o->gen.n_stop >= CLI_MAX_STOP) return usage_error("--stop: at most 16 stop strings%s", "");
            if (!*v) return usage_error("--stop: empty stop string%s", "");
            o->stop[o->gen.n_stop++] = v;
        } else if (!strcmp(a, "--draft-max")) {
            NEEDV();
            if (parse_int(a, v, 1, 64, &l)) return CLI_USAGE;
            o->gen.draft_max = (int)l;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--count")) {
            NEEDV();
            if (parse_int(a, v, 1, 10000000, &l)) return CLI_USAGE;
            o->count = (int)l;
        } else if (!strcmp(a, "-i") || !strcmp(a, "--interval")) {
            NEEDV();
            if (parse_num(a, v, 0, 3600000, &o->interval_ms)) return CLI_USAGE;
        } else if (!strcmp(a, "--prompts")) { NEEDV(); o->prompts_file = v; }
        else if (!strcmp(a, "--runs")) {
            NEEDV();
            if (parse_int(a, v, 1, 1000, &l)) return CLI_USAGE;
            o->runs = (int)l;
        } else if (!strcmp(a, "--concurrency")) {
            NEEDV();
            if (parse_int(a, v, 1, 1024, &l)) return CLI_USAGE;
            o->concurrency = (int)l;
        } else return usage_error("unknown option '%s'", a);
#undef NEEDV
    }
    o->n_args = n_pos;
    o->gen.stop = o->stop;
    if (!*cmd) return usage_error("no command given%s", "");
    specd_error e;
    if (specd_resolve_endpoint(sock, tcp, o->endpoint, sizeof o->endpoint, &e)) return usage_error("%s", e.message);
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
    fprintf(f, "]\n");
}

static int cmd_generate(cli_opts *o) {
    if (want_args(o, "generate", 1, 1, "one PROMPT argument (quote it)")) return CLI_USAGE;
    specd_client *c;
    int rc = connect_or_fail(o, &c);
    if (rc) return rc;
    o->gen.prompt = o->args[0];
    o->gen.stream = 1;
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
    if (specd_tokenize(c, o->args[0], !o->no_bos, &ids, &n, &e)) {
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
    rc = specd_detokenize(c, ids, o->n_args, &text, &e);
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
    cli_opts o = {.gen = specd_gen_default(), .runs = 3, .concurrency = 1};
    const char *cmd = NULL;
    if (argc < 2) {
        fputs(usage_text, stderr);
        return CLI_USAGE;
    }
    int rc = parse_args(argc, argv, &o, &cmd);
    if (rc == CLI_OK) {
        if (!strcmp(cmd, "generate")) rc = cmd_generate(&o);
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
