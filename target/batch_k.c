/* The batch draft-length rule and its cost table; see batch_k.h. */
#include "target/batch_k.h"

#include <math.h>
#include <stdbool.h>

/* Weight of a new measurement: a few turns follow a change of load, one odd turn does not. */
#define EWMA 0.2

static int bucket(int rows) {
    int b = 0;
    while (b + 1 < SD_COST_BUCKETS && (1 << (b + 1)) <= rows) b++;
    return b;
}

static void ewma(double *x, double v) { *x = *x > 0 ? *x + EWMA * (v - *x) : v; }

void sd_pass_cost_record(sd_pass_cost *c, int rows, double seconds) {
    if (rows > 0 && seconds > 0) ewma(&c->t[bucket(rows)], seconds);
}

void sd_pass_cost_record_draft(sd_pass_cost *c, double seconds) {
    if (seconds > 0) ewma(&c->draft_round, seconds);
}

/* The measured buckets that keep the cost non-decreasing in rows, into b[] (ascending); their count. A
 * bucket measured lower than a smaller one (a noisy turn) is left out rather than read as rows that cost
 * less than none, which would make drafting look free. */
static int monotone(const sd_pass_cost *c, int *b) {
    int n = 0;
    for (int i = 0; i < SD_COST_BUCKETS; i++)
        if (c->t[i] > 0 && (n == 0 || c->t[i] >= c->t[b[n - 1]])) b[n++] = i;
    return n;
}

double sd_pass_cost_at(const sd_pass_cost *c, int rows) {
    int b[SD_COST_BUCKETS], n = monotone(c, b), hi = 0;
    if (n == 0) return 0;
    if (n == 1 || rows <= (1 << b[0])) return c->t[b[0]];
    while (hi < n - 1 && (1 << b[hi]) < rows) hi++; /* beyond the largest: the last segment's slope goes on */
    double x0 = 1 << b[hi - 1], x1 = 1 << b[hi], y0 = c->t[b[hi - 1]], y1 = c->t[b[hi]];
    return y0 + (y1 - y0) * (rows - x0) / (x1 - x0);
}

void sd_batch_k(const sd_pass_cost *c, int base_rows, double base_tokens, int n, const double *alpha,
                const int *kmax, int *k) {
    bool measured = false;
    for (int b = 0; b < SD_COST_BUCKETS; b++) measured |= c->t[b] > 0;
    for (int i = 0; i < n; i++) k[i] = measured ? 0 : kmax[i];
    if (!measured) return;
    int rows = base_rows + n, longest = 0;
    double tokens = base_tokens + n; /* every request's pass yields at least its target token */
    double secs = sd_pass_cost_at(c, rows);
    for (;;) {
        int best = -1;
        double best_rate = tokens / (secs > 0 ? secs : 1e-9), gain_b = 0, cost_b = 0;
        for (int i = 0; i < n; i++) {
            if (k[i] >= kmax[i]) continue;
            double a = alpha[i] < 0 ? 0 : alpha[i] > 1 ? 1 : alpha[i];
            double gain = pow(a, k[i] + 1);
            double cost = sd_pass_cost_at(c, rows + 1) - sd_pass_cost_at(c, rows);
            if (k[i] + 1 > longest) cost += c->draft_round;
            if (cost < 0) cost = 0;
            double rate = (tokens + gain) / (secs + cost > 0 ? secs + cost : 1e-9);
            if (rate > best_rate * (1 + 1e-9)) {
                best_rate = rate;
                best = i;
                gain_b = gain;
                cost_b = cost;
            }
        }
        if (best < 0) return;
        k[best]++;
        if (k[best] > longest) longest = k[best];
        rows++;
        tokens += gain_b;
        secs += cost_b;
    }
}
