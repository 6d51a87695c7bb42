/* The batch draft-length rule (target/batch_k.c) under synthetic cost models: the cost table's
 * interpolation, k = the adaptive k while passes are memory-bound or nothing is measured, k = 0 when
 * every row costs a full token's time, more drafts for the request that accepts more. */
#include "target/batch_k.h"
#include "test.h"

/* A cost table of t(rows) = fixed + per_row * rows, measured at every bucket. */
static sd_pass_cost model(double fixed, double per_row, double draft_round) {
    sd_pass_cost c = {.draft_round = 0};
    for (int b = 0; b < SD_COST_BUCKETS; b++) sd_pass_cost_record(&c, 1 << b, fixed + per_row * (1 << b));
    sd_pass_cost_record_draft(&c, draft_round);
    return c;
}

static void test_cost_table(void) {
    sd_pass_cost c = {.draft_round = 0};
    CHECK(sd_pass_cost_at(&c, 5) == 0);
    sd_pass_cost_record(&c, 4, 0.010);
    CHECK_NEAR(sd_pass_cost_at(&c, 1), 0.010, 1e-12); /* flat below and above the only measurement */
    CHECK_NEAR(sd_pass_cost_at(&c, 100), 0.010, 1e-12);
    sd_pass_cost_record(&c, 16, 0.030);
    CHECK_NEAR(sd_pass_cost_at(&c, 10), 0.020, 1e-12); /* linear between buckets 4 and 16 */
    sd_pass_cost_record(&c, 5, 0.020);                /* bucket 4..7: EWMA toward the new figure */
    CHECK(sd_pass_cost_at(&c, 4) > 0.010 && sd_pass_cost_at(&c, 4) < 0.020);
    sd_pass_cost_record(&c, 0, 1.0);                  /* nonsense is ignored */
    sd_pass_cost_record(&c, 3, -1.0);
    CHECK(sd_pass_cost_at(&c, 1) < 0.020);
}

/* Beyond the largest measured bucket the last segment's slope goes on (not flat: rows there are not
 * free), and a bucket measured below a smaller one (noise) is ignored rather than read as negative cost;
 * so 8 requests whose batch was measured up to 8 rows, compute-bound from 4, do not draft (a flat tail
 * made every draft look free). */
static void test_cost_beyond_and_noise(void) {
    sd_pass_cost c = {.draft_round = 0};
    const double t[4] = {0.010, 0.0102, 0.011, 0.020}; /* rows 1, 2, 4, 8 */
    for (int b = 0; b < 4; b++) sd_pass_cost_record(&c, 1 << b, t[b]);
    CHECK_NEAR(sd_pass_cost_at(&c, 16), 0.020 + 8 * 0.00225, 1e-12);
    CHECK_NEAR(sd_pass_cost_at(&c, 9) - sd_pass_cost_at(&c, 8), 0.00225, 1e-12);
    sd_pass_cost_record_draft(&c, 0.001);
    double alpha[8] = {0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6};
    int kmax[8] = {4, 4, 4, 4, 4, 4, 4, 4}, k[8];
    sd_batch_k(&c, 0, 0, 8, alpha, kmax, k);
    for (int i = 0; i < 8; i++) CHECKF(k[i] == 0, "request %d drafts %d", i, k[i]);
    sd_pass_cost dip = c;
    sd_pass_cost_record(&dip, 16, 0.015); /* noise: 16 rows measured cheaper than 8 */
    sd_pass_cost_record(&dip, 32, 0.040);
    CHECK_NEAR(sd_pass_cost_at(&dip, 16), 0.020 + 0.020 * 8 / 24, 1e-12);
    for (int r = 1; r < 64; r++) CHECK(sd_pass_cost_at(&dip, r + 1) >= sd_pass_cost_at(&dip, r));
}

static void test_rule(void) {
    double alpha[4] = {0.7, 0.7, 0.7, 0.7};
    int kmax[4] = {8, 8, 8, 8}, k[4];
    sd_pass_cost none = {.draft_round = 0};
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

int main(void) {
    RUN(test_cost_table);
    RUN(test_rule);
    RUN(test_cost_beyond_and_noise);
    return TEST_DONE();
}
