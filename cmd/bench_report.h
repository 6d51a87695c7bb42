/* Figures and output of `specd bench` (cmd/bench.c): per-configuration accumulators, the derived
 * figures, text and JSON output and the SVG plot. */
#ifndef SD_BENCH_REPORT_H
#define SD_BENCH_REPORT_H
#include <stdbool.h>
#include <stdio.h>

#include "base/err.h"
#include "target/engine.h"

typedef struct bench_acc {
    double *lat; /* per-token latencies (s) */
    int n_lat, cap;
    double t_decode;
    long drafted, accepted, passes, blocks, rejections;
    double t_draft, t_target;
} bench_acc;

int bench_acc_init(bench_acc *a);
void bench_acc_free(bench_acc *a);
/* A step of dt seconds that emitted n tokens: each token's latency is dt / n. */
void bench_acc_step(bench_acc *a, double dt, int n);
double bench_median(double *x, int n); /* sorts x */
double bench_quantile(double *x, int n, double q); /* q in [0, 1]; sorts x */

/* `specd bench --concurrency` (cmd/bench_conc.c): C requests at once stepped in one batch per turn,
 * plain then speculative at each C of concs; every request stream runs `per` prompts (cycling) with gp.
 * The figures go to f (NULL: nowhere, e.g. a warm-up), as JSON when json. */
int bench_concurrency(sd_engine *e, int32_t *const *ptoks, const int *pn, int n_prompts, const sd_gen_params *gp,
                      int per, const int *concs, int n_conc, int batch_tokens, bool json, FILE *f, sd_err *err);

typedef struct bench_config {
    const char *mode; /* "plain" or the proposer */
    sd_gen_params gp;
    bool fixed_k;
    int draft_max;
    bench_acc acc;
    double verify_cost; /* T(k+1) / T(1) for this configuration's k */
    /* derived by bench_finish */
    double ms_mean, ms_p50, ms_p95, tps, acceptance, alpha, k_mean, cost, tokens_per_pass, speedup, predicted;
} bench_config;

typedef struct bench_report {
    const char *target, *draft, *proposer, *backend;
    int n_prompts, n_tokens, repeat, threads;
    bench_config *configs; /* configs[0] is plain */
    int n_configs;
} bench_report;

void bench_finish(bench_report *r);
void bench_print_text(const bench_report *r, FILE *f);
void bench_print_json(const bench_report *r, FILE *f);
int bench_plot_svg(const bench_report *r, const char *path, sd_err *err);

#endif
