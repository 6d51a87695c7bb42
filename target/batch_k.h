/* Speculation that knows the batch: draft lengths chosen for the whole turn from measured pass costs.
 *
 * Verifying k drafts for each of B requests costs B·(k+1) target rows. While a pass is memory-bound
 * (small batches) extra rows are almost free and every request should draft its adaptive k; once the
 * batch is large enough that a pass is compute-bound, extra rows cost real time and drafting must pay for
 * it. The rule (docs/speculation.md, "Draft lengths in a batch") maximises the turn's expected tokens per
 * second: starting from k = 0 for every request, it adds one draft at a time to the request whose next
 * draft brings the most expected tokens (alpha^(k+1)) per second it adds (the target pass's growth with
 * one more row, plus a draft round when it lengthens the longest draft), while that beats the turn's
 * current tokens per second. Costs are measured on the fly (EWMA per batch-size bucket); before anything
 * is measured the rule leaves every k at its adaptive value. */
#ifndef SD_BATCH_K_H
#define SD_BATCH_K_H

#define SD_COST_BUCKETS 12 /* rows 1, 2, 4, ... 2048 */

typedef struct sd_pass_cost {
    double t[SD_COST_BUCKETS]; /* seconds of a target pass whose rows fall in bucket b (0: not measured) */
    double draft_round;        /* seconds of one draft round (0: not measured) */
} sd_pass_cost;

/* A target pass of `rows` rows took `seconds`. */
void sd_pass_cost_record(sd_pass_cost *c, int rows, double seconds);
/* A draft round took `seconds`. */
void sd_pass_cost_record_draft(sd_pass_cost *c, double seconds);
/* Estimated seconds of a target pass of `rows` rows: linear between measured buckets, never decreasing
 * (a bucket measured below a smaller one is ignored), flat below the smallest and with the last
 * segment's slope above the largest (flat when only one is measured); 0 when nothing is measured. */
double sd_pass_cost_at(const sd_pass_cost *c, int rows);

/* Chooses k[i] in 0..kmax[i] for n speculating requests with acceptance estimates alpha[i] in a turn that
 * also holds base_rows other rows expected to give base_tokens tokens. */
void sd_batch_k(const sd_pass_cost *c, int base_rows, double base_tokens, int n, const double *alpha,
                const int *kmax, int *k);

#endif
