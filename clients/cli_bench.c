/* `specd-cli bench`: a prompt set through the daemon in plain and in speculative mode, interleaved in one
 * run, from C parallel streaming clients.
 *
 * Each run has one phase per mode (plain, spec; the order alternates between runs so drift in machine
 * load hits both modes alike). In a phase every client sends every prompt, one request at a time; the
 * phase's wall time gives the aggregate tokens/s. Per-token latency: the gap between two token events,
 * divided over the ids the later event carries (a speculative block delivers several tokens at once).
 * Greedy by default (temperature 0 sent), so both modes must produce the same text: bench checks it. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clients/cli.h"
#include "base/json_out.h"
#include "base/clock.h"

enum { M_PLAIN, M_SPEC, M_NOSTREAM, N_MODES };
static const char *const mode_name[N_MODES] = {"plain", "spec", "plain-nostream"};

typedef struct rec {
    int ok;
    double ttft_ms, total_ms;
    int n_tok;
    double *lat;   /* per-token latencies, n_lat of them */
    int n_lat, cap_lat;
    double *dl;    /* per-event delivery times (daemon step -> client), microseconds */
    int n_dl, cap_dl;
    double last_t;
    specd_gen_stats st;
    char *text;
} rec;

typedef struct bench {
    cli_opts *o;
    char **prompts;
    int n_prompts;
    int n_modes;                 /* 2, or 3 with --ipc */
    pthread_barrier_t bar;
    rec *recs;                   /* [run][mode][client][prompt] */
    int errors;
    char first_error[600];
    pthread_mutex_t mu;
} bench;

typedef struct worker { bench *b; int idx; } worker;

static rec *rec_at(bench *b, int run, int mode, int client, int prompt) {
    size_t i = (((size_t)run * N_MODES + (size_t)mode) * (size_t)b->o->concurrency + (size_t)client) *
                   (size_t)b->n_prompts + (size_t)prompt;
    return &b->recs[i];
}

static int mode_of(int run, int phase) {
    static const int order[2][N_MODES] = {{M_PLAIN, M_SPEC, M_NOSTREAM}, {M_SPEC, M_PLAIN, M_NOSTREAM}};
    return order[run % 2][phase];
}

/* Appends v to a growable array; -1 when out of memory. */
static int push(double **a, int *n, int *cap, double v) {
    if (*n == *cap) {
        int c = *cap * 2 + 16;
        double *p = realloc(*a, sizeof(double) * (size_t)c);
        if (!p) return -1;
        *a = p;
        *cap = c;
    }
    (*a)[(*n)++] = v;
    return 0;
}

static int on_token(const specd_token *t, void *user) {
    rec *r = user;
    if (t->delivery_us >= 0 && push(&r->dl, &r->n_dl, &r->cap_dl, t->delivery_us)) return 1;
    if (r->ttft_ms < 0) {
        r->ttft_ms = t->t_ms;
    } else {
        double per = (t->t_ms - r->last_t) / (t->n_ids > 0 ? t->n_ids : 1);
        for (int i = 0; i < t->n_ids; i++)
            if (push(&r->lat, &r->n_lat, &r->cap_lat, per)) return 1;
    }
    r->last_t = t->t_ms;
    return 0;
}

static void note_error(bench *b, const char *what, const specd_error *e) {
    pthread_mutex_lock(&b->mu);
    if (!b->errors++) snprintf(b->first_error, sizeof b->first_error, "%s: %s%s%s", what, e->code,
                               e->code[0] ? ": " : "", e->message);
    pthread_mutex_unlock(&b->mu);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    bench *b = w->b;
    specd_client *c = NULL;
    specd_error e;
    if (specd_connect(&b->o->conn, &c, &e)) { note_error(b, "connect", &e); c = NULL; }
    for (int run = 0; run < b->o->runs; run++) {
        for (int ph = 0; ph < b->n_modes; ph++) {
            int mode = mode_of(run, ph);
            pthread_barrier_wait(&b->bar);
            for (int p = 0; c && p < b->n_prompts; p++) {
                rec *r = rec_at(b, run, mode, w->idx, p);
                specd_gen g = b->o->gen;
                g.prompt = b->prompts[p];
                g.mode = mode == M_SPEC ? "spec" : "plain";
                g.stream = mode != M_NOSTREAM;
                r->ttft_ms = -1;
                specd_result res;
                if (specd_generate(c, &g, on_token, r, &res, &e)) {
                    note_error(b, mode_name[mode], &e);
                    if (e.kind == SPECD_ERR_CONNECT || e.kind == SPECD_ERR_TIMEOUT) { specd_close(c); c = NULL; }
                    continue;
                }
                r->ok = 1;
                r->ttft_ms = res.client_ttft_ms;
                r->total_ms = res.client_total_ms;
                r->n_tok = res.n_ids;
                r->st = res.stats;
                r->text = res.text;
                res.text = NULL;
                specd_result_free(&res);
            }
            pthread_barrier_wait(&b->bar);
        }
    }
    specd_close(c);
    return NULL;
}

static int load_prompts(bench *b) {
    static const char *const builtin[] = {"Once upon a time", "The robot", "Data flows",
                                          "The little girl looked at the sky and"};
    if (!b->o->prompts_file) {
        b->n_prompts = 4;
        b->prompts = malloc(sizeof(char *) * 4);
        for (int i = 0; b->prompts && i < 4; i++) b->prompts[i] = strdup(builtin[i]);
        return b->prompts ? 0 : -1;
    }
    FILE *f = fopen(b->o->prompts_file, "r");
    if (!f) {
        fprintf(stderr, "specd-cli bench: cannot open --prompts file '%s'\n", b->o->prompts_file);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        char **p = realloc(b->prompts, sizeof(char *) * (size_t)(b->n_prompts + 1));
        if (!p) break;
        b->prompts = p;
        b->prompts[b->n_prompts++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (b->n_prompts == 0) {
        fprintf(stderr, "specd-cli bench: --prompts file '%s' has no prompts\n", b->o->prompts_file);
        return -1;
    }
    return 0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double pct(double *v, int n, double q) {
    if (n == 0) return NAN;
    return v[(int)((n - 1) * q + 0.5)];
}

typedef struct summary {
    int requests, tokens, drafted, accepted;
    double wall_ms, tps, ttft50, ttft95, lat50, lat95, acceptance, client_ms, server_ms_per_tok;
    double dl50, dl95; /* IPC delivery per token event, microseconds */
} summary;

static summary summarise(bench *b, int mode, const double *wall) {
    summary s = {0};
    int cap = 0, cap_dl = 0, n_lat = 0, n_dl = 0, n_ttft = 0;
    for (int run = 0; run < b->o->runs; run++)
        for (int c = 0; c < b->o->concurrency; c++)
            for (int p = 0; p < b->n_prompts; p++) {
                cap += rec_at(b, run, mode, c, p)->n_lat;
                cap_dl += rec_at(b, run, mode, c, p)->n_dl;
            }
    double *lat = malloc(sizeof(double) * (size_t)(cap + 1));
    double *dl = malloc(sizeof(double) * (size_t)(cap_dl + 1));
    double *ttft = malloc(sizeof(double) * (size_t)(b->o->runs * b->o->concurrency * b->n_prompts + 1));
    double server_ms = 0;
    int server_tok = 0;
    for (int run = 0; run < b->o->runs; run++)
        for (int c = 0; c < b->o->concurrency; c++)
            for (int p = 0; p < b->n_prompts; p++) {
                rec *r = rec_at(b, run, mode, c, p);
                if (!r->ok) continue;
                s.requests++;
                s.tokens += r->n_tok;
                s.drafted += r->st.drafted > 0 ? r->st.drafted : 0;
                s.accepted += r->st.accepted > 0 ? r->st.accepted : 0;
                s.client_ms += r->total_ms;
                if (r->st.generated > 1) {
                    server_ms += r->st.ms_per_token * (r->st.generated - 1);
                    server_tok += r->st.generated - 1;
                }
                ttft[n_ttft++] = r->ttft_ms;
                if (r->n_lat) memcpy(lat + n_lat, r->lat, sizeof(double) * (size_t)r->n_lat);
                n_lat += r->n_lat;
                if (r->n_dl) memcpy(dl + n_dl, r->dl, sizeof(double) * (size_t)r->n_dl);
                n_dl += r->n_dl;
            }
    qsort(lat, (size_t)n_lat, sizeof *lat, cmp_d);
    qsort(ttft, (size_t)n_ttft, sizeof *ttft, cmp_d);
    qsort(dl, (size_t)n_dl, sizeof *dl, cmp_d);
    s.dl50 = pct(dl, n_dl, 0.5);
    s.dl95 = pct(dl, n_dl, 0.95);
    s.wall_ms = wall[mode];
    s.tps = s.wall_ms > 0 ? s.tokens / (s.wall_ms / 1000) : 0;
    /* unstreamed requests have no first token to time */
    s.ttft50 = mode == M_NOSTREAM ? NAN : pct(ttft, n_ttft, 0.5);
    s.ttft95 = mode == M_NOSTREAM ? NAN : pct(ttft, n_ttft, 0.95);
    s.lat50 = pct(lat, n_lat, 0.5);
    s.lat95 = pct(lat, n_lat, 0.95);
    s.acceptance = s.drafted ? (double)s.accepted / s.drafted : NAN;
    s.server_ms_per_tok = server_tok ? server_ms / server_tok : NAN;
    free(lat);
    free(dl);
    free(ttft);
    return s;
}

/* p50 of n ping round trips (microseconds); NAN when the pings fail. */
static double ping_p50(cli_opts *o, int n) {
    specd_client *c;
    specd_error e;
    if (specd_connect(&o->conn, &c, &e)) return NAN;
    double *v = malloc(sizeof(double) * (size_t)n);
    int k = 0;
    while (v && k < n && specd_ping(c, &v[k], &e) == 0) k++;
    specd_close(c);
    double r = NAN;
    if (k == n) {
        qsort(v, (size_t)n, sizeof *v, cmp_d);
        r = v[(n - 1) / 2];
    }
    free(v);
    return r;
}

static void jnum(const char *key, double v, int comma) {
    if (isfinite(v)) printf("\"%s\":%.4f%s", key, v, comma ? "," : "");
    else printf("\"%s\":null%s", key, comma ? "," : "");
}

static void print_mode_json(const char *name, const summary *s) {
    printf("\"%s\":{\"requests\":%d,\"tokens\":%d,", name, s->requests, s->tokens);
    jnum("wall_ms", s->wall_ms, 1);
    jnum("tokens_per_s", s->tps, 1);
    jnum("ttft_ms_p50", s->ttft50, 1);
    jnum("ttft_ms_p95", s->ttft95, 1);
    jnum("token_ms_p50", s->lat50, 1);
    jnum("token_ms_p95", s->lat95, 1);
    jnum("server_ms_per_token", s->server_ms_per_tok, 1);
    jnum("delivery_us_p50", s->dl50, 1);
    jnum("delivery_us_p95", s->dl95, 1);
    printf("\"drafted\":%d,\"accepted\":%d,", s->drafted, s->accepted);
    jnum("acceptance", s->acceptance, 0);
    printf("}");
}

static void print_mode_row(const char *name, const summary *s) {
    printf("%-15s %8d %7d %10.1f", name, s->requests, s->tokens, s->tps);
    if (isfinite(s->ttft50)) printf(" %9.3f %9.3f", s->ttft50, s->ttft95); else printf(" %9s %9s", "-", "-");
    if (isfinite(s->lat50)) printf(" %9.4f %9.4f", s->lat50, s->lat95); else printf(" %9s %9s", "-", "-");
    if (isfinite(s->acceptance)) printf(" %10.3f\n", s->acceptance); else printf(" %10s\n", "-");
}

int cli_bench(cli_opts *o) {
    if (o->n_args) {
        fprintf(stderr, "specd-cli bench: unexpected argument '%s' (prompts come from --prompts FILE)\n", o->args[0]);
        return CLI_USAGE;
    }
    bench b = {.o = o, .n_modes = o->ipc ? 3 : 2};
    int greedy = o->gen.temperature <= 0;
    if (o->gen.temperature < 0) o->gen.temperature = 0;
    if (load_prompts(&b)) return CLI_USAGE;
    /* fail early and clearly when there is no daemon */
    specd_client *probe;
    specd_error e;
    if (specd_connect(&o->conn, &probe, &e)) return cli_fail(&e);
    specd_close(probe);
    double p50 = ping_p50(o, 200);

    int C = o->concurrency;
    size_t n_recs = (size_t)o->runs * N_MODES * (size_t)C * (size_t)b.n_prompts;
    b.recs = calloc(n_recs, sizeof *b.recs);
    worker *ws = calloc((size_t)C, sizeof *ws);
    pthread_t *th = calloc((size_t)C, sizeof *th);
    if (!b.recs || !ws || !th) return CLI_ERR;
    pthread_mutex_init(&b.mu, NULL);
    pthread_barrier_init(&b.bar, NULL, (unsigned)C + 1);
    for (int i = 0; i < C; i++) {
        ws[i] = (worker){&b, i};
        pthread_create(&th[i], NULL, worker_main, &ws[i]);
    }
    double wall[N_MODES] = {0};
    for (int run = 0; run < o->runs; run++)
        for (int ph = 0; ph < b.n_modes; ph++) {
            pthread_barrier_wait(&b.bar);
            double t0 = sd_now_ms();
            pthread_barrier_wait(&b.bar);
            wall[mode_of(run, ph)] += sd_now_ms() - t0;
        }
    for (int i = 0; i < C; i++) pthread_join(th[i], NULL);

    summary s[N_MODES];
    for (int m = 0; m < b.n_modes; m++) s[m] = summarise(&b, m, wall);
    double speedup = s[M_PLAIN].tps > 0 ? s[M_SPEC].tps / s[M_PLAIN].tps : NAN;
    /* greedy: speculative output must equal plain output, request by request */
    int compared = 0, same = 0;
    for (int run = 0; greedy && run < o->runs; run++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < b.n_prompts; p++) {
                rec *a = rec_at(&b, run, M_PLAIN, c, p), *z = rec_at(&b, run, M_SPEC, c, p);
                if (!a->ok || !z->ok) continue;
                compared++;
                same += strcmp(a->text, z->text) == 0;
            }
    /* streaming overhead: the extra wall time of the streamed plain phases over the same requests
     * unstreamed, per streamed token (with C clients: per token of the aggregate stream) */
    double ipc_us = NAN;
    if (o->ipc && s[M_PLAIN].tokens > 0 && s[M_PLAIN].requests == s[M_NOSTREAM].requests)
        ipc_us = (s[M_PLAIN].wall_ms - s[M_NOSTREAM].wall_ms) * 1e3 / s[M_PLAIN].tokens;

    if (o->json) {
        printf("{\"endpoint\":");
        sd_json_str(stdout, o->endpoint, strlen(o->endpoint));
        printf(",\"prompts\":%d,\"runs\":%d,\"concurrency\":%d,\"max_tokens\":%d,\"greedy\":%s,", b.n_prompts,
               o->runs, C, o->gen.max_tokens, greedy ? "true" : "false");
        for (int m = 0; m < b.n_modes; m++) { print_mode_json(mode_name[m], &s[m]); printf(","); }
        jnum("speedup", speedup, 1);
        printf("\"compared\":%d,\"identical\":%d,", compared, same);
        jnum("ping_p50_us", p50, 1);
        jnum("ipc_us_per_token", ipc_us, 1);
        printf("\"errors\":%d,\"first_error\":", b.errors);
        sd_json_str(stdout, b.first_error, strlen(b.first_error));
        printf("}\n");
    } else {
        printf("bench: %d prompts x %d runs x %d client%s, up to %d tokens, %s, %s\n", b.n_prompts, o->runs, C,
               C > 1 ? "s" : "", o->gen.max_tokens, greedy ? "greedy" : "sampled", o->endpoint);
        printf("%-15s %8s %7s %10s %9s %9s %9s %9s %10s\n", "mode", "requests", "tokens", "tokens/s", "ttft p50",
               "ttft p95", "tok p50", "tok p95", "acceptance");
        printf("%-15s %8s %7s %10s %9s %9s %9s %9s %10s\n", "", "", "", "", "ms", "ms", "ms", "ms", "");
        for (int m = 0; m < b.n_modes; m++) print_mode_row(mode_name[m], &s[m]);
        printf("speedup (spec / plain tokens/s): %.2fx\n", speedup);
        if (greedy) printf("greedy outputs identical in both modes: %d of %d requests\n", same, compared);
        printf("ping round trip p50: %.1f us\n", p50);
        if (isfinite(s[M_PLAIN].dl50))
            printf("token delivery, daemon step -> client (IPC path): plain p50 %.1f us p95 %.1f us, "
                   "spec p50 %.1f us p95 %.1f us\n", s[M_PLAIN].dl50, s[M_PLAIN].dl95, s[M_SPEC].dl50, s[M_SPEC].dl95);
        if (o->ipc) printf("streaming overhead per token (streamed - unstreamed plain): %.1f us\n", ipc_us);
        if (b.errors) printf("errors: %d (first: %s)\n", b.errors, b.first_error);
    }
    for (size_t i = 0; i < n_recs; i++) { free(b.recs[i].lat); free(b.recs[i].dl); free(b.recs[i].text); }
    for (int i = 0; i < b.n_prompts; i++) free(b.prompts[i]);
    free(b.prompts);
    free(b.recs);
    free(ws);
    free(th);
    pthread_barrier_destroy(&b.bar);
    pthread_mutex_destroy(&b.mu);
    if (b.errors) return CLI_ERR;
    return greedy && same != compared ? CLI_ERR : CLI_OK;
}
