/* Speculation that knows the batch: draft lengths chosen for the whole turn from measured pass costs.
 *
 * Verifying k drafts for each of B requests costs B·(k+1) target rows. While a pass is memory-bound
 * (small batches) extra rows are almost free and every request should draft; once the batch is large
 * enough that a pass is compute-bound, extra rows cost real time and drafting must pay for it. The rule
 * (docs/speculation.md, "Draft lengths in a batch") maximises the turn's expected tokens per second over
 * every number of extra rows: the drafts most likely to be accepted (alpha^j for a request's j-th) go in
 * first, and each total is costed with the target pass at its row count plus the draft rounds it needs.
 * Costs are curves of seconds against rows, for target passes and draft rounds: calibrated when first
 * needed (target/calibrate.c) and followed on the fly (EWMA per bucket of row counts). Row counts up to
 * SD_COST_EXACT have a bucket each: a CPU pass's cost can jump between neighbouring counts (where the
 * matmul changes its register tiles), which interpolation between powers of two would smooth away. */
#ifndef SD_BATCH_K_H
#define SD_BATCH_K_H
#include <stdbool.h>

#define SD_COST_EXACT 32                   /* rows 1..32: a bucket each */
#define SD_COST_BUCKETS (SD_COST_EXACT + 6) /* then rows (32, 64], (64, 128], ... (1024, 2048] and above */

/* Seconds against rows: per bucket the EWMA of the rows measured in it and of their seconds. */
typedef struct sd_cost_curve {
    double rows[SD_COST_BUCKETS], t[SD_COST_BUCKETS]; /* t 0: not measured */
} sd_cost_curve;

typedef struct sd_pass_cost {
    sd_cost_curve target; /* one target forward batch */
    sd_cost_curve draft;  /* one draft round (a forward batch of the proposers' model) */
    bool calibrated;      /* calibration ran (or found no room to): it runs once */
} sd_pass_cost;

/* A pass of `rows` rows took `seconds` (ignored unless both are positive). */
void sd_cost_record(sd_cost_curve *c, int rows, double seconds);
/* Estimated seconds of a pass of `rows` rows: linear between the measured buckets' times fitted never
 * decreasing (isotonic least squares: a bucket measured out of line, a noisy turn, is pooled with its
 * neighbours), flat below the smallest and with the last rising segment's slope above the largest (flat
 * when only one is measured); 0 when nothing is measured. */
double sd_cost_at(const sd_cost_curve *c, int rows);
bool sd_cost_measured(const sd_cost_curve *c);

/* Chooses k[i] in 0..kmax[i] for n speculating requests with acceptance estimates alpha[i] in a turn that
 * also holds base_rows other rows expected to give base_tokens tokens. Nothing measured: k = kmax. */
void sd_batch_k(const sd_pass_cost *c, int base_rows, double base_tokens, int n, const double *alpha,
                const int *kmax, int *k);

#endif
