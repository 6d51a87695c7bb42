/* The batch draft-length rule (target/batch_k.c) under synthetic cost models: the cost curves'
 * interpolation, k = the bound while passes are memory-bound or nothing is measured, k = 0 when every
 * row costs a full token's time, more drafts for the request that accepts more, drafting past a jump in
 * the cost that a first extra row does not pay for, fewer drafts when draft rounds cost more; and the
 * calibration (target/calibrate.c) on a real engine. */
#include <string.h>

#include "base/clock.h"
#include "target/batch_k.h"
#include "target/calibrate.h"
#include "test.h"
#include "engine_fixture.h"

/* Cost curves of t(rows) = fixed + per_row * rows measured at 1, 2, 4, ... 2048 rows, and draft rounds of
 * draft_round seconds whatever their rows. */
static sd_pass_cost model(double fixed, double per_row, double draft_round) {
    sd_pass_cost c = {0};
    for (int r = 1; r <= 2048; r *= 2) sd_cost_record(&c.target, r, fixed + per_row * r);
    sd_cost_record(&c.draft, 1, draft_round);
    return c;
}

static void test_cost_table(void) {
    sd_cost_curve c = {{0}, {0}};
    CHECK(sd_cost_at(&c, 5) == 0 && !sd_cost_measured(&c));
    sd_cost_record(&c, 4, 0.010);
    CHECK(sd_cost_measured(&c));
    CHECK_NEAR(sd_cost_at(&c, 1), 0.010, 1e-12); /* flat below and above the only measurement */
    CHECK_NEAR(sd_cost_at(&c, 100), 0.010, 1e-12);
    sd_cost_record(&c, 16, 0.030);
    CHECK_NEAR(sd_cost_at(&c, 10), 0.020, 1e-12); /* linear between 4 and 16 rows */
    sd_cost_record(&c, 5, 0.020);                 /* up to 32 rows every count is its own bucket */
    CHECK_NEAR(sd_cost_at(&c, 4), 0.010, 1e-12);
    CHECK_NEAR(sd_cost_at(&c, 5), 0.020, 1e-12);
    sd_cost_record(&c, 4, 0.020); /* the same count again: EWMA toward the new figure */
    CHECK(sd_cost_at(&c, 4) > 0.010 && sd_cost_at(&c, 4) < 0.020);
    sd_cost_record(&c, 40, 0.040); /* above 32 rows, buckets of powers of two at their mean rows */
    sd_cost_record(&c, 60, 0.060);
    double at = sd_cost_at(&c, 48);
    CHECKF(at > 0.040 && at < 0.060, "t(48) %g", at);
    sd_cost_record(&c, 0, 1.0); /* nonsense is ignored */
    sd_cost_record(&c, 3, -1.0);
    CHECK(sd_cost_at(&c, 1) < 0.020);
}

/* Beyond the largest measured bucket the last rising segment's slope goes on (not flat: rows there are
 * not free), and a bucket measured below a smaller one (noise) is pooled with it (isotonic fit) rather
 * than read as negative cost;
 * so 8 requests whose batch was measured up to 8 rows, compute-bound from 4, do not draft (a flat tail
 * made every draft look free). */
static void test_cost_beyond_and_noise(void) {
    sd_pass_cost c = {0};
    const double t[4] = {0.010, 0.0102, 0.011, 0.020}; /* rows 1, 2, 4, 8 */
    for (int b = 0; b < 4; b++) sd_cost_record(&c.target, 1 << b, t[b]);
    CHECK_NEAR(sd_cost_at(&c.target, 16), 0.020 + 8 * 0.00225, 1e-12);
    CHECK_NEAR(sd_cost_at(&c.target, 9) - sd_cost_at(&c.target, 8), 0.00225, 1e-12);
    sd_cost_record(&c.draft, 8, 0.001);
    double alpha[8] = {0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6};
    int kmax[8] = {4, 4, 4, 4, 4, 4, 4, 4}, k[8];
    sd_batch_k(&c, 0, 0, 8, alpha, kmax, k);
    for (int i = 0; i < 8; i++) CHECKF(k[i] == 0, "request %d drafts %d", i, k[i]);
    sd_pass_cost dip = c;
    sd_cost_record(&dip.target, 16, 0.015); /* noise: 16 rows measured cheaper than 8 */
    sd_cost_record(&dip.target, 32, 0.040);
    CHECK_NEAR(sd_cost_at(&dip.target, 8), 0.0175, 1e-12); /* pooled with 8 rows: their mean */
    CHECK_NEAR(sd_cost_at(&dip.target, 16), 0.0175, 1e-12);
    CHECK_NEAR(sd_cost_at(&dip.target, 64), 0.040 + 32 * (0.040 - 0.0175) / 16, 1e-12);
    sd_pass_cost early = {0}; /* an early bucket out of line: pooled, the tail still rises */
    sd_cost_record(&early.target, 1, 0.030);
    sd_cost_record(&early.target, 2, 0.010);
    sd_cost_record(&early.target, 4, 0.014);
    CHECK_NEAR(sd_cost_at(&early.target, 2), 0.018, 1e-12);
    CHECK_NEAR(sd_cost_at(&early.target, 8), 0.018, 1e-12); /* all three pooled: flat, as one measurement */
    for (int r = 1; r < 64; r++) CHECK(sd_cost_at(&dip.target, r + 1) >= sd_cost_at(&dip.target, r));
}

static void test_rule(void) {
    double alpha[4] = {0.7, 0.7, 0.7, 0.7};
    int kmax[4] = {8, 8, 8, 8}, k[4];
    sd_pass_cost none = {0};
    sd_batch_k(&none, 0, 0, 4, alpha, kmax, k); /* nothing measured: every request keeps its k */
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(k[i], 8);
    sd_pass_cost flat = model(0.010, 0, 0);     /* memory-bound, drafting free: all of k */
    sd_batch_k(&flat, 2, 2, 4, alpha, kmax, k);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(k[i], 8);
    sd_pass_cost steep = model(0, 0.010, 0.001); /* compute-bound: a row costs a whole token's time */
    sd_batch_k(&steep, 2, 2, 4, alpha, kmax, k);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(k[i], 0);
    /* in between: drafting pays a little, and more for the request whose drafts are accepted more */
    double mixed[4] = {0.9, 0.3, 0.9, 0.3};
    sd_pass_cost mid = model(0.020, 0.002, 0.002);
    sd_batch_k(&mid, 0, 0, 4, mixed, kmax, k);
    CHECKF(k[0] > k[1] && k[2] > k[3], "k %d %d %d %d", k[0], k[1], k[2], k[3]);
    CHECK(k[0] >= 1 && k[0] <= 8 && k[1] <= k[0]);
    int small[2] = {2, 0}, k2[2];
    sd_batch_k(&flat, 0, 0, 2, alpha, small, k2); /* never above a request's own bound */
    CHECK_EQ_INT(k2[0], 2);
    CHECK_EQ_INT(k2[1], 0);
}

/* A CPU-like curve: 2 rows cost as much as 1, 3 to 8 rows 60% more (the matmul's tiles change), then a
 * row costs 30% of a one-row pass. One draft each does not pay for the jump, three each do: the rule
 * weighs every total of extra rows, not only the next one. */
static void test_rule_past_a_jump(void) {
    sd_pass_cost c = {0};
    for (int r = 1; r <= 32; r++) sd_cost_record(&c.target, r, r <= 2 ? 0.010 : r <= 8 ? 0.016 : 0.016 + 0.003 * (r - 8));
    double alpha[2] = {0.9, 0.9};
    int kmax[2] = {8, 8}, k[2];
    sd_batch_k(&c, 0, 0, 2, alpha, kmax, k);
    CHECKF(k[0] == 3 && k[1] == 3, "k %d %d (want 3 3: 8 rows)", k[0], k[1]);
}

/* Flat target passes: free draft rounds let every request draft its bound; rounds of 20% of a pass
 * shorten the drafts; rounds dearer than a pass stop drafting. */
static void test_rule_draft_rounds(void) {
    double alpha[2] = {0.9, 0.9};
    int kmax[2] = {8, 8}, k[2];
    sd_pass_cost free_rounds = model(0.010, 0, 0);
    sd_batch_k(&free_rounds, 0, 0, 2, alpha, kmax, k);
    CHECK(k[0] == 8 && k[1] == 8);
    sd_pass_cost some = model(0.010, 0, 0.002);
    sd_batch_k(&some, 0, 0, 2, alpha, kmax, k);
    CHECKF(k[0] + k[1] < 16 && k[0] + k[1] >= 8, "k %d %d with rounds of 20%% of a pass", k[0], k[1]);
    sd_pass_cost dear = model(0.010, 0, 0.050);
    sd_batch_k(&dear, 0, 0, 2, alpha, kmax, k);
    CHECK(k[0] == 0 && k[1] == 0);
}

/* Calibration on a real engine (the tiny target and its draft model): both curves measured from 1 to 32
 * rows, the KV pools hold what they held before, and a second call changes nothing. */
static void test_calibrate(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    const char *draft = shared_path("models/aidreams-draft.bin");
    if (!target || !tok || !draft) SKIP("../shared/models/aidreams260K.bin, aidreams-draft.bin or tok512.bin not found");
    eng_fx f;
    REQUIRE(eng_open(&f, target, tok, draft, 0, 0) == 0);
    int total, free_t, free_d, after;
    sd_model_kv_blocks(f.e->target, &total, &free_t);
    sd_model_kv_blocks(f.e->draft, &total, &free_d);
    double t0 = sd_now_s();
    sd_engine_calibrate(f.e, f.e->draft, 0);
    double dt = sd_now_s() - t0;
    const sd_pass_cost *c = &f.e->cost;
    CHECK(c->calibrated);
    CHECKF(dt < 10 * SD_CALIBRATE_BUDGET_S, "calibration took %.2f s", dt);
    /* a pass of this model takes microseconds: every count fits the budget, unless the machine stalls */
    CHECKF(c->target.t[0] > 0 && c->target.t[SD_COST_EXACT - 1] > 0, "target t(1) %g t(32) %g", c->target.t[0],
           c->target.t[SD_COST_EXACT - 1]);
    CHECKF(c->draft.t[0] > 0 && c->draft.t[SD_COST_EXACT - 1] > 0, "draft t(1) %g t(32) %g", c->draft.t[0],
           c->draft.t[SD_COST_EXACT - 1]);
    CHECK(c->target.rows[0] == 1 && c->target.rows[SD_COST_EXACT - 1] == 32);
    sd_model_kv_blocks(f.e->target, &total, &after);
    CHECK_EQ_INT(after, free_t);
    sd_model_kv_blocks(f.e->draft, &total, &after);
    CHECK_EQ_INT(after, free_d);
    sd_pass_cost before = *c;
    sd_engine_calibrate(f.e, f.e->draft, 0);
    CHECK(memcmp(&before, c, sizeof before) == 0);
    eng_close(&f);
}

int main(void) {
    RUN(test_cost_table);
    RUN(test_rule_past_a_jump);
    RUN(test_rule_draft_rounds);
    RUN(test_rule);
    RUN(test_cost_beyond_and_noise);
    RUN(test_calibrate);
    return TEST_DONE();
}
