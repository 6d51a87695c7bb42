/* Figures and output of `specd bench`; see bench_report.h. */
#include "cmd/bench_report.h"
#include "base/json_out.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int bench_acc_init(bench_acc *a) {
    memset(a, 0, sizeof *a);
    a->cap = 1024;
    a->lat = malloc((size_t)a->cap * sizeof *a->lat);
    return a->lat ? 0 : -1;
}

void bench_acc_free(bench_acc *a) {
    free(a->lat);
    memset(a, 0, sizeof *a);
}

void bench_acc_step(bench_acc *a, double dt, int n) {
    a->t_decode += dt;
    for (int i = 0; i < n; i++) {
        if (a->n_lat == a->cap) {
            double *l = realloc(a->lat, (size_t)a->cap * 2 * sizeof *l);
            if (!l) return;
            a->lat = l;
            a->cap *= 2;
        }
        a->lat[a->n_lat++] = dt / n;
    }
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile_sorted(const double *x, int n, double q) {
    if (n <= 0) return 0;
    double pos = q * (n - 1);
    int i = (int)pos;
    if (i + 1 >= n) return x[n - 1];
    return x[i] + (pos - i) * (x[i + 1] - x[i]);
}

double bench_quantile(double *x, int n, double q) {
    qsort(x, (size_t)n, sizeof *x, cmp_d);
    return quantile_sorted(x, n, q);
}

double bench_median(double *x, int n) { return bench_quantile(x, n, 0.5); }

/* Leviathan's expected speedup for a real-valued mean draft length k. */
static double predicted_speedup(double a, double k, double c) {
    double tokens = a >= 1 ? k + 1 : (1 - pow(a, k + 1)) / (1 - a);
    return tokens / (k * c + 1);
}

void bench_finish(bench_report *r) {
    for (int i = 0; i < r->n_configs; i++) {
        bench_config *c = &r->configs[i];
        bench_acc *a = &c->acc;
        qsort(a->lat, (size_t)a->n_lat, sizeof *a->lat, cmp_d);
        c->ms_mean = a->n_lat ? 1e3 * a->t_decode / a->n_lat : 0;
        c->ms_p50 = 1e3 * quantile_sorted(a->lat, a->n_lat, 0.5);
        c->ms_p95 = 1e3 * quantile_sorted(a->lat, a->n_lat, 0.95);
        c->tps = c->ms_mean > 0 ? 1e3 / c->ms_mean : 0;
        c->acceptance = a->drafted ? (double)a->accepted / a->drafted : 0;
        /* per-token acceptance as Leviathan defines it: drafts are tested until the first rejection */
        c->alpha = a->accepted + a->rejections ? (double)a->accepted / (a->accepted + a->rejections) : 0;
        c->k_mean = a->blocks ? (double)a->drafted / a->blocks : 0;
        c->tokens_per_pass = a->passes ? (double)a->n_lat / a->passes : 1;
    }
    double plain_ms = r->configs[0].ms_mean;
    for (int i = 0; i < r->n_configs; i++) {
        bench_config *c = &r->configs[i];
        c->speedup = c->ms_mean > 0 ? plain_ms / c->ms_mean : 0;
        if (i == 0) {
            c->predicted = 1;
            continue;
        }
        /* c: drafting one token relative to one plain target pass (a plain step is one pass) */
        c->cost = c->acc.drafted && plain_ms > 0 ? (1e3 * c->acc.t_draft / c->acc.drafted) / plain_ms : 0;
        /* Steps where the proposer had nothing (lookup misses) are plain passes: mix them in. */
        double f = c->acc.passes ? (double)c->acc.blocks / c->acc.passes : 1;
        double spec_tokens = predicted_speedup(c->alpha, c->k_mean, 0), spec_cost = c->k_mean * c->cost + 1;
        c->predicted = (f * spec_tokens + (1 - f)) / (f * spec_cost + (1 - f));
    }
}

void bench_print_text(const bench_report *r, FILE *f) {
    fprintf(f, "target %s, %s %s, backend %s (%d threads), %d prompts x %d, %d tokens each\n", r->target,
            r->proposer, r->draft ? r->draft : "", r->backend, r->threads, r->n_prompts, r->repeat, r->n_tokens);
    fprintf(f, "%-8s %5s %9s %8s %8s %9s %6s %6s %6s %6s %8s %9s %9s\n", "mode", "k", "ms/tok", "p50", "p95",
            "tok/s", "accept", "alpha", "cost", "tok/ps", "speedup", "predicted", "verify");
    for (int i = 0; i < r->n_configs; i++) {
        const bench_config *c = &r->configs[i];
        char k[16];
        if (i == 0) snprintf(k, sizeof k, "-");
        else if (c->fixed_k) snprintf(k, sizeof k, "%d", c->draft_max);
        else snprintf(k, sizeof k, "%d-%d", c->gp.draft_min, c->draft_max);
        fprintf(f, "%-8s %5s %9.3f %8.3f %8.3f %9.1f %6.3f %6.3f %6.3f %6.2f %7.2fx %8.2fx", c->mode, k, c->ms_mean,
                c->ms_p50, c->ms_p95, c->tps, c->acceptance, c->alpha, c->cost, c->tokens_per_pass, c->speedup,
                c->predicted);
        if (i) fprintf(f, " %8.2fx", c->verify_cost);
        fputc('\n', f);
    }
    fprintf(f, "accept: accepted/drafted; alpha: accepted/(accepted+rejections), Leviathan's per-token acceptance;\n"
               "cost: draft time per token / plain ms per token; predicted = (1-alpha^(k+1))/((1-alpha)(k cost+1))\n"
               "with k the mean drafts per block (mixed with plain passes where nothing was proposed);\n"
               "verify: one pass over k+1 tokens / a one-token pass.\n");
}

static double jnum(double x) { return isfinite(x) ? x : 0; }

void bench_print_json(const bench_report *r, FILE *f) {
    fputs("{\"target\":", f);
    sd_json_str(f, r->target, r->target ? strlen(r->target) : 0);
    fputs(",\"draft\":", f);
    if (r->draft) sd_json_str(f, r->draft, strlen(r->draft));
    else fputs("null", f);
    fprintf(f, ",\"proposer\":\"%s\",\"backend\":\"%s\",\"threads\":%d,\"prompts\":%d,\"repeat\":%d,\"n\":%d,"
               "\"configs\":[",
            r->proposer, r->backend, r->threads, r->n_prompts, r->repeat, r->n_tokens);
    for (int i = 0; i < r->n_configs; i++) {
        const bench_config *c = &r->configs[i];
        fprintf(f, "%s{\"mode\":\"%s\",\"draft_max\":%d,\"ms_per_token\":%.6g,\"tokens_per_s\":%.6g,"
                   "\"acceptance\":%.6g,\"tokens_per_pass\":%.6g,\"speedup\":%.6g,\"predicted_speedup\":%.6g}",
                i ? "," : "", c->mode, c->draft_max, jnum(c->ms_mean), jnum(c->tps), jnum(c->acceptance),
                jnum(c->tokens_per_pass), jnum(c->speedup), jnum(c->predicted));
    }
    /* the rest of the figures, in the same order as configs */
    fputs("],\"details\":[", f);
    for (int i = 0; i < r->n_configs; i++) {
        const bench_config *c = &r->configs[i];
        fprintf(f, "%s{\"ms_p50\":%.6g,\"ms_p95\":%.6g,\"alpha\":%.6g,\"k_mean\":%.6g,\"draft_cost\":%.6g,"
                   "\"verify_cost\":%.6g,\"draft_min\":%d,\"fixed_k\":%s}",
                i ? "," : "", jnum(c->ms_p50), jnum(c->ms_p95), jnum(c->alpha), jnum(c->k_mean), jnum(c->cost),
                i ? jnum(c->verify_cost) : 1.0, i ? c->gp.draft_min : 0, c->fixed_k ? "true" : "false");
    }
    fputs("]}\n", f);
}

/* ---- SVG: speedup (measured and predicted) against k ---- */

int bench_plot_svg(const bench_report *r, const char *path, sd_err *err) {
    FILE *f = fopen(path, "w");
    if (!f) return sd_errf(err, "%s: %s", path, strerror(errno));
    const double W = 640, H = 400, L = 60, R = 20, T = 40, B = 50;
    int kmax = 1;
    double ymax = 1.5;
    for (int i = 1; i < r->n_configs; i++) {
        const bench_config *c = &r->configs[i];
        if (c->draft_max > kmax) kmax = c->draft_max;
        if (c->speedup > ymax) ymax = c->speedup;
        if (c->predicted > ymax) ymax = c->predicted;
    }
    ymax = ceil(ymax * 2) / 2;
#define X(k) (L + ((double)(k)) / kmax * (W - L - R))
#define Y(v) (H - B - (v) / ymax * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%g\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">speedup vs plain decoding (%s)</text>\n",
            W / 2, r->proposer);
    /* axes, grid, ticks */
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", L, T, L, H - B);
    for (double v = 0; v <= ymax + 1e-9; v += 0.5) {
        fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, Y(v), W - R, Y(v));
        fprintf(f, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%.1fx</text>\n", L - 6, Y(v) + 4, v);
    }
    for (int k = 0; k <= kmax; k++)
        fprintf(f, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%d</text>\n", X(k), H - B + 18, k);
    fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">draft length k</text>\n", (L + W - R) / 2, H - 12);
    fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"4 4\"/>\n", L,
            Y(1.0), W - R, Y(1.0));
    /* the two series */
    const char *color[2] = {"#1f77b4", "#d62728"}, *name[2] = {"measured", "predicted (Leviathan)"};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color[s],
                s ? " stroke-dasharray=\"6 3\"" : "");
        for (int i = 1; i < r->n_configs; i++) {
            const bench_config *c = &r->configs[i];
            fprintf(f, "%.1f,%.1f ", X(c->draft_max), Y(s ? c->predicted : c->speedup));
        }
        fputs("\"/>\n", f);
        for (int i = 1; i < r->n_configs; i++) {
            const bench_config *c = &r->configs[i];
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", X(c->draft_max),
                    Y(s ? c->predicted : c->speedup), color[s]);
        }
        fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"/>"
                   "<text x=\"%g\" y=\"%g\">%s</text>\n",
                L + 20, T + 10 + 18.0 * s, L + 45, T + 10 + 18.0 * s, color[s], L + 52, T + 14 + 18.0 * s, name[s]);
    }
#undef X
#undef Y
    fputs("</svg>\n", f);
    if (fclose(f)) return sd_errf(err, "%s: write failed", path);
    return 0;
}
