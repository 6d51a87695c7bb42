/* The batch draft-length rule and its cost curves; see batch_k.h. */
#include "target/batch_k.h"

#include <math.h>
#include <stdlib.h>

/* Weight of a new measurement: a few turns follow a change of load, one odd turn does not. */
#define EWMA 0.2

static int bucket(int rows) {
    if (rows <= SD_COST_EXACT) return rows - 1;
    int b = SD_COST_EXACT, top = 2 * SD_COST_EXACT;
    while (b + 1 < SD_COST_BUCKETS && rows > top) {
        b++;
        top *= 2;
    }
    return b;
}

static void ewma(double *x, double v) { *x = *x > 0 ? *x + EWMA * (v - *x) : v; }

void sd_cost_record(sd_cost_curve *c, int rows, double seconds) {
    if (rows <= 0 || !(seconds > 0)) return;
    int b = bucket(rows);
    ewma(&c->rows[b], rows);
    ewma(&c->t[b], seconds);
}

bool sd_cost_measured(const sd_cost_curve *c) {
    for (int b = 0; b < SD_COST_BUCKETS; b++)
        if (c->t[b] > 0) return true;
    return false;
}

/* The measured buckets as points (x ascending) with a non-decreasing fit of their times: the closest in
 * least squares (isotonic regression, pool adjacent violators), so a bucket measured out of line (a noisy
 * turn on a shared machine) is averaged with its neighbours instead of making rows look free or dear
 * on its own. Returns the number of points. */
static int fit(const sd_cost_curve *c, double *x, double *y) {
    int n = 0, nb = 0, start[SD_COST_BUCKETS];
    double sum[SD_COST_BUCKETS];
    for (int i = 0; i < SD_COST_BUCKETS; i++) {
        if (!(c->t[i] > 0)) continue;
        x[n] = c->rows[i];
        start[nb] = n++;
        sum[nb++] = c->t[i];
        /* merge while the last block's mean is below the one before it */
        while (nb > 1 && sum[nb - 1] * (start[nb - 1] - start[nb - 2]) < sum[nb - 2] * (n - start[nb - 1])) {
            sum[nb - 2] += sum[nb - 1];
            nb--;
        }
    }
    for (int b = 0; b < nb; b++) {
        int end = b + 1 < nb ? start[b + 1] : n;
        for (int i = start[b]; i < end; i++) y[i] = sum[b] / (end - start[b]);
    }
    return n;
}

double sd_cost_at(const sd_cost_curve *c, int rows) {
    double x[SD_COST_BUCKETS], y[SD_COST_BUCKETS];
    int n = fit(c, x, y), hi = 0;
    if (n == 0 || rows <= 0) return 0;
    if (n == 1 || rows <= x[0]) return y[0];
    if (rows > x[n - 1]) { /* beyond the largest: the last rising segment's slope goes on (rows are not free) */
        int lo = n - 2;
        while (lo > 0 && y[lo] >= y[n - 1]) lo--;
        return y[n - 1] + (y[n - 1] - y[lo]) * (rows - x[n - 1]) / (x[n - 1] - x[lo]);
    }
    while (x[hi] < rows) hi++;
    return y[hi - 1] + (y[hi] - y[hi - 1]) * (rows - x[hi - 1]) / (x[hi] - x[hi - 1]);
}

/* The next draft to add: the request whose next draft is the likeliest to be accepted (alpha^(k+1),
 * ties to the shorter draft, then the lower index); -1 when every request is at its bound. A request's
 * gains fall with k, so the first E picks are the E likeliest drafts of the turn for every E. */
static int next_pick(int n, const double *alpha, const int *kmax, const int *k, double *gain) {
    int best = -1;
    double bg = -1;
    for (int i = 0; i < n; i++) {
        if (k[i] >= kmax[i]) continue;
        double a = alpha[i] < 0 ? 0 : alpha[i] > 1 ? 1 : alpha[i];
        double g = pow(a, k[i] + 1);
        if (best < 0 || g > bg || (g == bg && k[i] < k[best])) {
            best = i;
            bg = g;
        }
    }
    *gain = bg;
    return best;
}

void sd_batch_k(const sd_pass_cost *c, int base_rows, double base_tokens, int n, const double *alpha,
                const int *kmax, int *k) {
    bool measured = sd_cost_measured(&c->target);
    for (int i = 0; i < n; i++) k[i] = measured ? 0 : kmax[i];
    if (!measured || n <= 0) return;
    int total = 0, depth_max = 0;
    for (int i = 0; i < n; i++) {
        total += kmax[i] > 0 ? kmax[i] : 0;
        depth_max = kmax[i] > depth_max ? kmax[i] : depth_max;
    }
    int *pick = malloc(sizeof(int) * (size_t)(total + 1)), *depth = calloc((size_t)depth_max + 2, sizeof(int));
    if (!pick || !depth) goto out; /* out of memory: plain steps, correct if not fast */
    /* Every total E of extra rows, drafts in order of likelihood: the turn's expected tokens and seconds
     * (the target pass at its rows, plus one draft round per draft depth, each costing the round's rows
     * as the draft curve says); the best E wins. */
    double tokens = base_tokens + n, draft_s = 0, best_rate = 0;
    int best_e = 0;
    for (int e = 0;; e++) {
        double secs = sd_cost_at(&c->target, base_rows + n + e) + draft_s;
        double rate = tokens / (secs > 0 ? secs : 1e-12);
        if (e == 0 || rate > best_rate * (1 + 1e-9)) {
            best_rate = rate;
            best_e = e;
        }
        double gain;
        int i = e < total ? next_pick(n, alpha, kmax, k, &gain) : -1;
        if (i < 0) break;
        pick[e] = i;
        int d = ++k[i]; /* the round of depth d gets one more row */
        draft_s += sd_cost_at(&c->draft, depth[d] + 1) - sd_cost_at(&c->draft, depth[d]);
        depth[d]++;
        tokens += gain;
    }
    for (int i = 0; i < n; i++) k[i] = 0;
    for (int e = 0; e < best_e; e++) k[pick[e]]++;
out:
    free(pick);
    free(depth);
}
