/* `specd bench --concurrency C1,C2,..`: the engine under C requests at once, every running request
 * advanced one step per turn in one forward batch (target/step.c), as the daemon runs them, without the
 * IPC. Per concurrency and mode (plain, then speculative): aggregate tokens/s, per-token latency p50/p95
 * (a step's wall time spread over the tokens it emitted, first token excluded), time to first token
 * p50/p95 (from the request's start, including turns spent waiting for its prefill chunks) and
 * acceptance, and tokens per CPU second of the process (what a shared machine's load distorts least).
 * Each "client" runs its prompts one after another, as specd-cli bench does. The two modes
 * alternate which runs first from one concurrency to the next. Then the batch draft-length rule's cost
 * curves (target pass and draft round, ms by rows) as calibrated and followed during the runs. */
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "cmd/bench_report.h"

/* Figures of one (concurrency, mode) run. */
typedef struct conc_fig {
    int conc, requests;
    const char *mode;
    long tokens, drafted, accepted;
    double wall, tps, tok_p50, tok_p95, ttft_p50, ttft_p95;
    double cpu, cpu_tps; /* the process's CPU seconds over the run; tokens per CPU second */
} conc_fig;

/* CPU seconds the process has used (every thread): on a shared machine, what a run cost in work rather
 * than in waiting for cores (with several threads it includes their spinning between ops). */
static double cpu_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One client: its session, its current request and when it started. */
typedef struct client {
    sd_session *s;
    sd_gen *g;
    int done, generated;
    double t_start, t_step;
    bool first;
} client;

static int client_start(client *c, int idx, int32_t *const *ptoks, const int *pn, int n_prompts,
                        const sd_gen_params *gp, sd_err *err) {
    int p = (idx + c->done) % n_prompts;
    if (sd_gen_start(c->s, ptoks[p], pn[p], gp, &c->g, err)) return -1;
    c->t_start = sd_now_s();
    c->first = true;
    c->generated = 0;
    return 0;
}

/* Runs conc clients of `per` requests each to the end; fills fig. */
static int run_conc(sd_engine *e, client *cl, int conc, int32_t *const *ptoks, const int *pn, int n_prompts,
                    const sd_gen_params *gp, int per, int batch_tokens, conc_fig *fig, sd_err *err) {
    int cap = 1024, n_lat = 0, n_ttft = 0, rc = -1;
    double *lat = malloc(sizeof(double) * (size_t)cap), *ttft = malloc(sizeof(double) * (size_t)(conc * per + 1));
    sd_gen **gens = malloc(sizeof *gens * (size_t)conc);
    if (!lat || !ttft || !gens) goto out;
    double t0 = sd_now_s(), c0 = cpu_now_s();
    for (int i = 0; i < conc; i++) {
        cl[i].done = 0;
        if (client_start(&cl[i], i, ptoks, pn, n_prompts, gp, err)) goto out;
    }
    for (;;) {
        int n = 0;
        for (int i = 0; i < conc; i++)
            if (cl[i].g) gens[n++] = cl[i].g;
        if (!n) break;
        double ts = sd_now_s();
        if (sd_gen_step_batch(gens, n, batch_tokens, err)) goto out;
        double now = sd_now_s(), dt = now - ts;
        for (int i = 0; i < conc; i++) {
            client *c = &cl[i];
            if (!c->g) continue;
            sd_gen_stats st;
            sd_gen_get_stats(c->g, &st);
            int emitted = st.generated - c->generated;
            c->generated = st.generated;
            if (emitted > 0 && c->first) {
                ttft[n_ttft++] = now - c->t_start;
                c->first = false;
            } else if (emitted > 0) {
                for (int k = 0; k < emitted; k++) {
                    if (n_lat == cap) {
                        double *nl = realloc(lat, sizeof(double) * (size_t)(cap *= 2));
                        if (!nl) goto out;
                        lat = nl;
                    }
                    lat[n_lat++] = dt / emitted;
                }
            }
            if (sd_gen_finish(c->g) == SD_FINISH_NONE) continue;
            if (sd_gen_error(c->g)) {
                sd_errf(err, "request failed: %s", sd_gen_error(c->g));
                goto out;
            }
            fig->tokens += st.generated;
            fig->drafted += st.drafted;
            fig->accepted += st.accepted;
            fig->requests++;
            sd_gen_free(c->g);
            c->g = NULL;
            if (++c->done < per && client_start(c, i, ptoks, pn, n_prompts, gp, err)) goto out;
        }
    }
    fig->wall = sd_now_s() - t0;
    fig->tps = fig->wall > 0 ? fig->tokens / fig->wall : 0;
    fig->cpu = cpu_now_s() - c0;
    fig->cpu_tps = fig->cpu > 0 ? fig->tokens / fig->cpu : 0;
    fig->tok_p50 = 1e3 * bench_quantile(lat, n_lat, 0.5);
    fig->tok_p95 = 1e3 * bench_quantile(lat, n_lat, 0.95);
    fig->ttft_p50 = 1e3 * bench_quantile(ttft, n_ttft, 0.5);
    fig->ttft_p95 = 1e3 * bench_quantile(ttft, n_ttft, 0.95);
    rc = 0;
out:
    for (int i = 0; i < conc; i++)
        if (cl[i].g) {
            sd_gen_free(cl[i].g);
            cl[i].g = NULL;
        }
    free(lat);
    free(ttft);
    free(gens);
    return rc;
}

static void print_text(const conc_fig *f, int n, FILE *out) {
    fprintf(out, "%5s %-6s %8s %8s %10s %9s %9s %9s %9s %7s %9s %10s\n", "conc", "mode", "requests", "tokens", "tokens/s",
            "tok p50", "tok p95", "ttft p50", "ttft p95", "accept", "vs c=1", "tok/cpu-s");
    for (int i = 0; i < n; i++) {
        double base = 0;
        for (int j = 0; j < n; j++)
            if (f[j].conc == f[0].conc && !strcmp(f[j].mode, f[i].mode)) base = f[j].tps;
        fprintf(out, "%5d %-6s %8d %8ld %10.1f %7.2fms %7.2fms %7.1fms %7.1fms %7.3f %8.2fx %10.1f\n", f[i].conc,
                f[i].mode, f[i].requests, f[i].tokens, f[i].tps, f[i].tok_p50, f[i].tok_p95, f[i].ttft_p50, f[i].ttft_p95,
                f[i].drafted ? (double)f[i].accepted / f[i].drafted : 0.0, base > 0 ? f[i].tps / base : 0.0, f[i].cpu_tps);
    }
    for (int i = 0; i + 1 < n; i += 2)
        fprintf(out, "concurrency %d: speculative / plain aggregate tokens/s %.2fx (per CPU second %.2fx)\n", f[i].conc,
                f[i].tps > 0 ? f[i + 1].tps / f[i].tps : 0.0, f[i].cpu_tps > 0 ? f[i + 1].cpu_tps / f[i].cpu_tps : 0.0);
}

/* The batch rule's cost curves as they stand (calibrated, then followed on the fly): ms by rows. */
static void print_curve(const char *what, const sd_cost_curve *c, FILE *out) {
    if (!sd_cost_measured(c)) return;
    fprintf(out, "%s ms by rows:", what);
    for (int b = 0; b < SD_COST_BUCKETS; b++)
        if (c->t[b] > 0) fprintf(out, " %.0f:%.3f", c->rows[b], 1e3 * c->t[b]);
    fprintf(out, "\n");
}

static void print_json(const conc_fig *f, int n, FILE *out) {
    fprintf(out, "{\"concurrency\":[");
    for (int i = 0; i < n; i++)
        fprintf(out, "%s{\"concurrency\":%d,\"mode\":\"%s\",\"requests\":%d,\"tokens\":%ld,\"tokens_per_s\":%.6g,"
                     "\"token_ms_p50\":%.6g,\"token_ms_p95\":%.6g,\"ttft_ms_p50\":%.6g,\"ttft_ms_p95\":%.6g,"
                     "\"drafted\":%ld,\"accepted\":%ld,\"tokens_per_cpu_s\":%.6g}",
                i ? "," : "", f[i].conc, f[i].mode, f[i].requests, f[i].tokens, f[i].tps, f[i].tok_p50, f[i].tok_p95,
                f[i].ttft_p50, f[i].ttft_p95, f[i].drafted, f[i].accepted, f[i].cpu_tps);
    fprintf(out, "]}\n");
}

int bench_concurrency(sd_engine *e, int32_t *const *ptoks, const int *pn, int n_prompts, const sd_gen_params *gp,
                      int per, const int *concs, int n_conc, int batch_tokens, bool json, FILE *f, sd_err *err) {
    int cmax = 0, rc = -1;
    for (int i = 0; i < n_conc; i++) cmax = concs[i] > cmax ? concs[i] : cmax;
    client *cl = calloc((size_t)cmax, sizeof *cl);
    conc_fig *figs = calloc((size_t)n_conc * 2, sizeof *figs);
    if (!cl || !figs) {
        sd_errf(err, "out of memory");
        goto out;
    }
    for (int i = 0; i < cmax; i++)
        if (sd_session_new(e, &cl[i].s, err)) goto out;
    for (int i = 0; i < n_conc; i++)
        for (int j = 0; j < 2; j++) {
            int m = i % 2 ? 1 - j : j; /* plain first, then spec first, ...: drift in load or warmth favours neither */
            sd_gen_params p = *gp;
            p.mode = m ? SD_MODE_SPEC : SD_MODE_PLAIN;
            conc_fig *fg = &figs[2 * i + m];
            fg->conc = concs[i];
            fg->mode = m ? "spec" : "plain";
            if (run_conc(e, cl, concs[i], ptoks, pn, n_prompts, &p, per, batch_tokens, fg, err)) goto out;
        }
    if (f && json) {
        print_json(figs, 2 * n_conc, f);
    } else if (f) {
        print_text(figs, 2 * n_conc, f);
        print_curve("target pass", &e->cost.target, f);
        print_curve("draft round", &e->cost.draft, f);
    }
    rc = 0;
out:
    if (cl)
        for (int i = 0; i < cmax; i++) sd_session_free(cl[i].s);
    free(cl);
    free(figs);
    return rc;
}
