/* Start-up calibration of the batch rule's cost curves; see calibrate.h. */
#include "target/calibrate.h"

#include "base/clock.h"

/* Row counts measured: every count where a CPU pass's cost may jump (the matmul's register tiles change
 * at small counts), sparser above; interpolation fills the rest. */
static const int k_rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32};
#define N_ROWS (int)(sizeof k_rows / sizeof k_rows[0])
/* After a warm-up pass, each count twice, all counts once before any twice (drift hits all alike); the
 * faster of the two counts. */
#define REPS 2

/* Seconds of one forward batch of `rows` rows of s from position 0, every row's argmax (as a verify
 * block asks); -1 when it cannot run (no KV room). */
static double time_pass(sd_seq *s, int rows) {
    sd_row r[32];
    int32_t ids[32];
    int vocab = s->m->hp.vocab;
    sd_seq_truncate(s, 0);
    for (int i = 0; i < rows; i++)
        r[i] = (sd_row){.seq = s, .token = (3 + 7 * i) % vocab, .pos = i, .out = SD_OUT_ARGMAX, .id = &ids[i]};
    sd_err err;
    double t0 = sd_now_s();
    if (sd_forward_batch(s->m, r, rows, &err)) return -1;
    return sd_now_s() - t0;
}

static void calibrate_model(sd_model *m, int n_layers, int ctx, sd_cost_curve *c, double budget) {
    sd_seq *s;
    sd_err err;
    if (ctx > 32) ctx = 32;
    if (sd_seq_new(m, ctx, n_layers, &s, &err)) return;
    double best[N_ROWS] = {0}, t0 = sd_now_s(), last = time_pass(s, 1); /* warm-up: weights into caches */
    if (last < 0) goto done;
    for (int rep = 0; rep < REPS; rep++)
        for (int i = 0; i < N_ROWS && k_rows[i] <= ctx; i++) {
            double est = best[i] > 0 ? best[i] : last; /* rows only grow within a rep */
            if (sd_now_s() - t0 + est > budget) goto done;
            double dt = time_pass(s, k_rows[i]);
            if (dt < 0) goto done;
            last = dt;
            if (best[i] == 0 || dt < best[i]) best[i] = dt;
        }
done:
    for (int i = 0; i < N_ROWS; i++) sd_cost_record(c, k_rows[i], best[i]);
    sd_seq_free(s);
}

void sd_engine_calibrate(sd_engine *e, sd_model *draft, int draft_layers) {
    if (e->cost.calibrated) return;
    e->cost.calibrated = true;
    double budget = SD_CALIBRATE_BUDGET_S;
    if (draft) { /* the draft model is small: a fifth of the budget at most */
        calibrate_model(draft, draft_layers, e->ctx, &e->cost.draft, budget / 5);
        budget -= budget / 5;
    }
    calibrate_model(e->target, 0, e->ctx, &e->cost.target, budget);
}
