/* Adaptive draft length: picks k in [k_min, k_max] from a request's running acceptance, by maximising
 * Leviathan et al.'s expected speedup (docs/speculation.md gives the rule and its rationale).
 *
 * The rule depends on acceptance counts only, never on timings, so a seeded request draws the same
 * block sizes (and therefore the same random numbers) on every run. */
#ifndef SD_DRAFT_LEN_H
#define SD_DRAFT_LEN_H

typedef struct sd_draft_len {
    int k_min, k_max, k;
    double cost;         /* draft cost per token / target pass, plus the verify cost per extra token */
    double acc, rej;     /* decayed counts of accepted drafts and of rejections */
} sd_draft_len;

/* Leviathan et al. 2023: expected walltime improvement of k drafts per pass with per-token acceptance
 * alpha and draft cost c per token (relative to a target pass): (1 - a^(k+1)) / ((1 - a)(k c + 1)). */
double sd_spec_expected_speedup(double alpha, int k, double c);
/* Expected tokens one verify pass yields: (1 - a^(k+1)) / (1 - a). */
double sd_spec_expected_tokens(double alpha, int k);

/* draft_cost: the proposer's cost per drafted token relative to one target decode pass. */
void sd_draft_len_init(sd_draft_len *d, int k_min, int k_max, double draft_cost);
/* After a block: drafted tokens, of which `accepted` were accepted (in order, before any rejection). */
void sd_draft_len_update(sd_draft_len *d, int drafted, int accepted);
/* The acceptance estimate the rule uses. */
double sd_draft_len_alpha(const sd_draft_len *d);

#endif
