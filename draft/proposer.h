/* Draft proposers behind one interface: a second model (draft_model.c), n-gram lookup in prompt + output
 * (lookup.c) and the target's own first L layers (self_draft.c). The engine owns one proposer per session.
 *
 * A proposer is handed the token history each time, and keeps itself in sync with it: what it cached
 * beyond the point where its own drafts and the history part ways is dropped (that is the rollback
 * after a rejection), and only tokens it has not seen are fed (accepted positions are never recomputed).
 * The history only grows between calls, except where invalidate() says it changed, so syncing compares
 * just the new tail: O(k) per step, not a rescan of the history. */
#ifndef SD_PROPOSER_H
#define SD_PROPOSER_H
#include <stdint.h>

#include "base/err.h"
#include "model/model.h"
#include "target/sampler.h"

typedef struct sd_draft_opts {
    const sd_sampling *sampling; /* greedy: propose argmax tokens; else draw from q filtered like p */
    float p_min;                 /* a model proposer stops before a token whose top probability is lower */
    sd_rng *rng;                 /* the request's RNG (sampling only) */
    sd_backend *dev;             /* not NULL: the verifier samples on this backend (sample_rows, spec_accept),
                                    so a model proposer on it may give q there (q_dev) */
    int dev_width;               /* the width of q_dev rows the verifier takes (the target's vocabulary) */
    uint64_t root;               /* the prefix cache's chain root of the request (sd_kv_chain_root of its
                                    tenant): a model proposer takes the history's cached full blocks from
                                    its model's pool instead of computing them, and offers its own; 0: neither */
} sd_draft_opts;

typedef struct sd_proposal {
    const int32_t *tokens; /* n proposed tokens, valid until the next call on the proposer */
    int n;
    const sd_probs *q;     /* n draft distributions when sampled from a model; NULL: point masses */
    const float *q_dev;    /* instead of q: the n distributions as rows of dev_width floats in the memory of
                              sd_draft_opts.dev (only when that was given); both NULL: point masses */
} sd_proposal;

typedef struct sd_proposer sd_proposer;
struct sd_proposer {
    const char *name; /* "draft", "lookup", "self" */
    double cost;      /* cost of drafting one token relative to one target decode pass (0 for lookup) */
    void *impl;
    /* Proposes up to k tokens to follow hist[0..n) (n >= 1). Fewer (even 0) is fine. */
    int (*propose)(sd_proposer *p, const int32_t *hist, int n, int k, const sd_draft_opts *o,
                   sd_proposal *out, sd_err *err);
    /* Optional (model proposers; NULL for the others): the same proposal in rounds, so the drafts of many
     * requests share draft forward batches on `model` (target/step.c). begin takes propose's arguments
     * (o is copied) and returns 1 when rows are pending, 0 when *out is already final (nothing to draft),
     * -1 on error. While rows are pending: rows(p, NULL) counts them, rows(p, r) writes them into a batch
     * on `model` (rows of one sequence, at its next positions), the caller runs the batch, and next()
     * takes the results before the model's next forward: 1 = another round pending, 0 = *out final.
     * propose() itself runs these rounds alone, so both ways give the same tokens. */
    sd_model *model;
    sd_seq *seq;      /* model proposers: the draft cache (blocks of model's pool; the engine preempts it) */
    int (*begin)(sd_proposer *p, const int32_t *hist, int n, int k, const sd_draft_opts *o, sd_proposal *out,
                 sd_err *err);
    int (*rows)(sd_proposer *p, sd_row *rows);
    int (*next)(sd_proposer *p, sd_proposal *out, sd_err *err);
    /* The history is now hist[0..n): drop whatever was cached beyond what agrees with it (and offer the
     * full blocks that agree to the prefix cache, under the root of the request's last begin). */
    void (*rollback)(sd_proposer *p, const int32_t *hist, int n);
    /* The history may differ from what the proposer saw from position n on (a new request: nothing is
     * offered to the prefix cache until its first begin). */
    void (*invalidate)(sd_proposer *p, int n);
    void (*destroy)(sd_proposer *p);
};

void sd_proposer_free(sd_proposer *p);

/* N-gram lookup with n-grams of n tokens (n >= 1). */
int sd_prop_lookup_new(int n, int max_k, sd_proposer **out, sd_err *err);
/* A draft model on its own KV cache of ctx positions; cost: its bytes per token / the target's. */
int sd_prop_draft_new(sd_model *draft, const sd_model *target, int ctx, int max_k, sd_proposer **out,
                      sd_err *err);
/* The target's first n_layers layers with its output head, on a second sequence of the same model. */
int sd_prop_self_new(sd_model *target, int n_layers, int ctx, int max_k, sd_proposer **out, sd_err *err);

/* Shared by draft_model.c and self_draft.c: a proposer running model m truncated to n_layers. */
int sd_prop_model_new(const char *name, sd_model *m, int n_layers, int ctx, int max_k, double cost,
                      sd_proposer **out, sd_err *err);

/* Length of the longest common prefix of a[0..na) and b[0..nb). */
int sd_tokens_lcp(const int32_t *a, int na, const int32_t *b, int nb);

#endif
