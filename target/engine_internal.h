/* The engine's private structures, shared by target/engine.c (engine, sessions, requests) and
 * target/step.c (advancing requests, many at once, one target batch per turn). Not for use elsewhere.
 *
 * Invariant between steps: the session's history hist[0..n_hist) is the prompt plus the emitted tokens,
 * and the target's cache holds hist[0..n_hist - 1): the last token is *pending*. A plain step runs the
 * pending token; a speculative step runs it together with k drafts, whose k + 1 rows of logits verify
 * the drafts. Either way the cache is then cut back to n_hist - 1. While a request prefills in chunks
 * (a turn's row budget), the cache holds hist[0..prefilled). */
#ifndef SD_ENGINE_INTERNAL_H
#define SD_ENGINE_INTERNAL_H
#include <stdatomic.h>

#include "draft/proposer.h"
#include "target/draft_len.h"
#include "target/engine.h"
#include "target/textout.h"

struct sd_session {
    sd_engine *e;
    sd_seq *seq;
    sd_proposer *prop; /* NULL without a proposer */
    int32_t *hist;     /* e->ctx entries */
    int n_hist;
    uint64_t tenant;   /* whose tokens the caches hold (sd_gen_params.tenant) */
    sd_gen *active;
    float *dev_probs; /* backend memory, SD_DRAFT_LIMIT + 1 rows of vocab for sampling on the backend;
                         allocated by the session's first sampled request there, then reused */
    sd_session *prev, *next; /* the engine's list */
};

/* What a request's step puts into a turn's batch. */
typedef enum sd_step_kind {
    SD_STEP_IDLE = 0,  /* finished before this step: nothing at all */
    SD_STEP_SETTLE,    /* no rows (cancelled, a limit, an error): only settles */
    SD_STEP_DRAFT,     /* speculative, drafting (then SD_STEP_VERIFY, or SD_STEP_PLAIN with no drafts) */
    SD_STEP_PREFILL,   /* a chunk of the prompt; its last row gives the first token when it ends the prompt */
    SD_STEP_PLAIN,     /* the pending token: one row */
    SD_STEP_VERIFY,    /* the pending token and nd drafts: nd + 1 rows */
} sd_step_kind;

struct sd_gen {
    sd_session *s;
    sd_gen_params p;
    int n_prompt;
    int prefilled;       /* history tokens in the cache so far (reused, then chunks) */
    int n_fill;          /* history tokens to prefill: the prompt, or after a preemption everything but the
                            pending token (then the last chunk yields nothing: `resumed`) */
    bool resumed;
    uint64_t order;      /* the engine's start count: its age */
    bool admitted;       /* this turn: its KV blocks were considered (target/step.c admit) */
    bool started, spec, greedy;
    sd_finish finish;
    int32_t stop_token;  /* the end-of-generation token that ended it (-1: none) */
    sd_err err;          /* why finish is SD_FINISH_ERROR */
    atomic_bool cancel;
    sd_rng rng;
    sd_probs probs;
    sd_draft_len dl;
    sd_detok detok;
    sd_textout text;
    float *logits;  /* (draft_max + 1) rows of vocab */
    int32_t *block; /* pending token + drafts */
    int32_t *chosen; /* greedy: the target's token after each block row (only ids leave the backend) */
    float *dev_probs; /* the session's dev_probs when the backend samples (sample_rows): the target's
                         filtered distributions; NULL: sampling on the host */
    /* this step (target/step.c) */
    sd_step_kind kind;
    int n_rows;        /* rows in the batch */
    bool last_chunk;   /* SD_STEP_PREFILL: the chunk ends the prompt */
    bool keep_rows;    /* the rows' logits stay on the backend (sampling there) */
    int draft_k;       /* SD_STEP_DRAFT: drafts asked for */
    int k_cap;         /* SD_STEP_DRAFT: the most drafts the step may take (draft_max, max_tokens, context) */
    bool verify_dev;   /* SD_STEP_DRAFT: verification may run on the backend (q there too) */
    bool drafting;     /* SD_STEP_DRAFT: the proposer has rows pending in the draft rounds */
    sd_draft_opts dopts; /* SD_STEP_DRAFT: what the proposer was asked */
    sd_proposal pr;    /* SD_STEP_VERIFY: the drafts (pr.n >= n_rows - 1) */
    const float *kept[SD_DRAFT_LIMIT + 1]; /* the kept rows, when keep_rows */
    int step_from;  /* hist index of this step's first emitted token */
    const char *step_text;
    size_t step_text_len;
    sd_gen_stats st;
    char piece[SD_TOK_MAX_PIECE + 16];
};

#endif
