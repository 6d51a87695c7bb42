/* Start-up calibration of the batch draft-length rule's costs (batch_k.h): before the rule first
 * chooses, the target's pass time is measured at 1..32 rows and, for a model proposer, its model's round
 * time likewise, so the first turns are not guesses. After that the curves follow real turns (EWMA). */
#ifndef SD_CALIBRATE_H
#define SD_CALIBRATE_H
#include "target/engine.h"

/* Wall-clock budget of one calibration: passes stop once the next would exceed it (the first of each
 * model always runs: one decode step's time). */
#define SD_CALIBRATE_BUDGET_S 0.6

/* Fills e->cost (target curve; draft curve from `draft` truncated to draft_layers when draft is not
 * NULL), once per engine: e->cost.calibrated is set whatever happens. A model whose KV pool has no room
 * for the 2 blocks a pass of 32 rows takes is left to the measurements of real turns. */
void sd_engine_calibrate(sd_engine *e, sd_model *draft, int draft_layers);

#endif
