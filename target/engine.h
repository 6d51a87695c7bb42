/* The generation engine: a target model, an optional draft proposer, and requests decoded on sessions.
 * Used by `specd generate`, `specd bench` and the daemon alike, so all three produce the same tokens.
 *
 * A session owns the KV caches (target, and draft when there is one) and the tokens they hold. A new
 * request on a session keeps the longest common prefix of what the session holds and its prompt, so
 * requests sharing a long prompt prefill only what differs.
 *
 * A request advances one *step* at a time (first steps: prefill, in chunks when a row budget asks; then
 * one plain token, or one draft-and-verify block); a scheduler steps every running request each turn in
 * one forward batch (sd_gen_step_batch). */
#ifndef SD_ENGINE_H
#define SD_ENGINE_H
#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "target/batch_k.h"
#include "target/limits.h"
#include "target/sampler.h"

typedef enum sd_proposer_kind {
    SD_PROP_NONE = 0,   /* plain decoding only */
    SD_PROP_DRAFT = 1,  /* a second, smaller model */
    SD_PROP_LOOKUP = 2, /* n-gram lookup in prompt + output */
    SD_PROP_SELF = 3,   /* the target's first L layers */
} sd_proposer_kind;

typedef struct sd_engine_config {
    const char *target_path, *target_tok; /* tok: llama2.c tokenizer file for .bin models */
    const char *draft_path, *draft_tok;   /* SD_PROP_DRAFT */
    int lookup_n;                         /* SD_PROP_LOOKUP: n-gram length (>= 1) */
    int draft_layers;                     /* SD_PROP_SELF */
    const char *device;                   /* "auto", "cpu", "cuda[:N]"; NULL = auto */
    int n_threads;                        /* <= 0: online CPUs */
    int ctx;                              /* <= 0: the target's context length */
    const char *kv_type;                  /* K/V element type "f16" | "f32"; NULL: f16 */
    size_t kv_mem;                        /* K/V pools (target + draft) in bytes; 0: sd_kv_default_bytes */
} sd_engine_config;

typedef struct sd_engine {
    sd_engine_config cfg;
    sd_proposer_kind proposer;
    sd_backend *be;
    sd_model *target;
    sd_model *draft; /* SD_PROP_DRAFT only */
    int ctx;
    char backend_note[256]; /* why this backend (e.g. "no CUDA device: running on the CPU") */
    char warning[256];      /* for the start-up log when not empty (a --ctx above the training context) */
    sd_pass_cost cost;      /* measured target pass and draft round times (step.c, batch_k.h) */
    struct sd_session *sessions; /* every open session (their idle caches give way under KV pressure) */
    uint64_t n_started;     /* requests started: a request's age (the newest is preempted first) */
} sd_engine;

int sd_engine_open(const sd_engine_config *cfg, sd_engine **out, sd_err *err);
void sd_engine_free(sd_engine *e);
/* One line on where the models live: the backend's device and the memory it holds by kind (weights, KV
 * caches, workspace), e.g. for start-up logs. */
void sd_engine_memory_report(const sd_engine *e, char *buf, size_t len);
/* KV cache bytes one position costs a session in the engine's K/V type: the target, plus the draft model
 * or, self-drafting, the target's first L layers (its sequence takes blocks of the target's shallow pool). */
size_t sd_engine_kv_bytes_per_token(const sd_engine *e);
/* Positions of the target's KV pool in blocks taken (by running requests and idle sessions' cached
 * prefixes) and in all. */
void sd_engine_kv_use(const sd_engine *e, uint64_t *used_positions, uint64_t *total_positions);

typedef enum sd_mode { SD_MODE_SPEC = 0, SD_MODE_PLAIN = 1 } sd_mode;

typedef struct sd_gen_params {
    sd_sampling sampling;
    int max_tokens;          /* tokens to generate; the context length also bounds it */
    const char *const *stop; /* stop strings (not emitted), n_stop of them */
    int n_stop;
    sd_mode mode;            /* SPEC falls back to PLAIN when the engine has no proposer */
    int draft_max, draft_min;/* bounds of the adaptive draft length k */
    float draft_p_min;       /* the draft model stops proposing below this top probability */
    uint64_t tenant;         /* whose request (0: no one's): a session's cached tokens are reused only by a
                                request of the same tenant, so none learns another's prompt from `prefilled` */
} sd_gen_params;
sd_gen_params sd_gen_params_default(void);

typedef enum sd_finish {
    SD_FINISH_NONE = 0,      /* still running */
    SD_FINISH_STOP = 1,      /* end-of-generation token or a stop string */
    SD_FINISH_LENGTH = 2,    /* max_tokens or the context length */
    SD_FINISH_CANCELLED = 3,
    SD_FINISH_ERROR = 4,
} sd_finish;
const char *sd_finish_name(sd_finish f); /* "stop", "length", "cancelled", "error" */

typedef struct sd_gen_stats {
    int prompt_tokens, prefilled;   /* prefilled: prompt tokens computed by the request's first prefill */
    int reused;                     /* prompt tokens taken from caches instead: the session's own, or full
                                       blocks any session of the tenant computed (prefix sharing); without a
                                       preemption prefilled + reused = prompt_tokens (after one, what the
                                       first attempt did) */
    int generated;
    int drafted, accepted;          /* speculation: tokens proposed and accepted */
    int target_passes;              /* target forward calls after prefill */
    int draft_k;                    /* the current adaptive draft length */
    int preempted;                  /* times its KV blocks were taken back for older requests (recomputed
                                       later, with the same output) */
    double t_prefill, t_draft, t_target, t_total; /* seconds */
} sd_gen_stats;

typedef struct sd_session sd_session;
int sd_session_new(sd_engine *e, sd_session **out, sd_err *err);
void sd_session_free(sd_session *s);
/* Tokens the session's caches hold (for prefix matching by a scheduler). */
const int32_t *sd_session_tokens(const sd_session *s, int *n);

typedef struct sd_gen sd_gen;
/* Starts a request on a session (one request per session at a time). Fails when the prompt does not fit
 * in the context or parameters are out of range (message names which). */
int sd_gen_start(sd_session *s, const int32_t *prompt, int n_prompt, const sd_gen_params *p, sd_gen **out,
                 sd_err *err);
/* Advances one step. Returns 0 (check sd_gen_finish) or -1 on an internal error (the request then
 * finished with SD_FINISH_ERROR; err says why). */
int sd_gen_step(sd_gen *g, sd_err *err);
/* Advances every request of gens[0..n) (one engine; distinct sessions) one step, with all their target
 * rows in one forward batch: one row for a plain step, k + 1 for a verify block, and prefill in chunks
 * that share what decode and verify rows leave of batch_tokens rows (<= 0: whole prompts at once; each
 * prefilling request gets at least 4 rows a turn). Model proposers draft in rounds before it, one draft
 * forward batch per round for all speculating requests (proposer.h's begin/rows/next). Each
 * request's tokens are exactly those it gets stepped alone. Requests that fail end with
 * SD_FINISH_ERROR (sd_gen_error says why) without affecting the others; -1 only for bad arguments. */
int sd_gen_step_batch(sd_gen **gens, int n, int batch_tokens, sd_err *err);
/* Why the request ended with SD_FINISH_ERROR, else NULL. */
const char *sd_gen_error(const sd_gen *g);
/* What the last step emitted: token ids and the text that is now safe to show (valid UTF-8, never a
 * possible prefix of a stop string, never past a stop). Valid until the next step. */
void sd_gen_last(const sd_gen *g, const int32_t **ids, int *n_ids, const char **text, size_t *text_len);
sd_finish sd_gen_finish(const sd_gen *g);
/* Why a request finished with SD_FINISH_STOP: the end-of-generation token (else -1) or the index of the
 * stop string that matched (else -1). Both -1 for any other finish. */
void sd_gen_stop_cause(const sd_gen *g, int32_t *token, int *stop_index);
void sd_gen_cancel(sd_gen *g);
/* Everything emitted so far. */
const int32_t *sd_gen_tokens(const sd_gen *g, int *n);
const char *sd_gen_text(const sd_gen *g, size_t *len);
void sd_gen_get_stats(const sd_gen *g, sd_gen_stats *st);
/* Derived figures, so every front end reports them the same way. acceptance: accepted / drafted (0 when
 * nothing was drafted). tokens_per_pass: tokens per target pass after prefill (the prefill pass yields
 * the first token), (generated - 1) / target_passes; 1 for plain decoding. */
double sd_gen_stats_acceptance(const sd_gen_stats *st);
double sd_gen_stats_tokens_per_pass(const sd_gen_stats *st);
/* Ends the request; the session keeps its caches for the next one. */
void sd_gen_free(sd_gen *g);

#endif
