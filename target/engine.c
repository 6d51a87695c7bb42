/* The generation engine: engine, sessions and requests (bookkeeping; the invariant between steps is in
 * engine_internal.h). The algorithm parts live beside it: step.c (advancing requests in batches),
 * verify.c (acceptance), draft_len.c (adaptive k), textout.c (stop strings), draft/ (proposers). */
#include "base/clock.h"
#include "target/engine.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "target/engine_internal.h"


/* ---------------------------------------------------------------- engine */

static int pick_proposer(const sd_engine_config *c, sd_proposer_kind *k, sd_err *err) {
    int n = (c->draft_path != NULL) + (c->lookup_n != 0) + (c->draft_layers != 0);
    if (n > 1) return sd_errf(err, "choose one proposer: a draft model, --lookup N or --draft-layers L");
    *k = c->draft_path ? SD_PROP_DRAFT : c->lookup_n ? SD_PROP_LOOKUP : c->draft_layers ? SD_PROP_SELF
                                                                                    : SD_PROP_NONE;
    if (c->lookup_n < 0 || c->lookup_n > SD_LOOKUP_MAX)
        return sd_errf(err, "--lookup %d: the n-gram length must be in 1..%d", c->lookup_n, SD_LOOKUP_MAX);
    return 0;
}

/* The target (and draft) on the engine's backend. */
static int load_models(sd_engine *e, sd_err *err) {
    const sd_engine_config *cfg = &e->cfg;
    if (sd_model_load(cfg->target_path, cfg->target_tok, e->be, &e->target, err)) return -1;
    if (e->proposer == SD_PROP_DRAFT &&
        sd_model_load(cfg->draft_path, cfg->draft_tok ? cfg->draft_tok : cfg->target_tok, e->be, &e->draft, err))
        return -1;
    return 0;
}

/* With --device auto, models the GPU cannot hold or compute with (its memory, a weight type the CUDA backend
 * has no kernel for) run on the CPU instead, and the backend note says why. */
void sd_engine_kv_use(const sd_engine *e, uint64_t *used_positions, uint64_t *total_positions) {
    int total, free_now;
    sd_model_kv_blocks(e->target, &total, &free_now);
    *used_positions = (uint64_t)(total - free_now) * SD_KV_BLOCK;
    *total_positions = (uint64_t)total * SD_KV_BLOCK;
}

/* --kv-type: the models' K/V element type. */
static int set_kv_type(sd_engine *e, sd_err *err) {
    const char *t = e->cfg.kv_type ? e->cfg.kv_type : "f16";
    int type = sd_dtype_by_name(t);
    if (type != SD_F16 && type != SD_F32) return sd_errf(err, "--kv-type %s: K/V types are f16 and f32", t);
    e->target->kv_type = (sd_dtype)type;
    if (e->draft) e->draft->kv_type = (sd_dtype)type;
    return 0;
}

/* The K/V pools: --kv-mem (or the default) split between target and draft in proportion to their bytes
 * per position, so both hold the same number of positions. Self-drafting's share is the target's shallow
 * pool (blocks of its L layers). */
static int init_kv(sd_engine *e, sd_err *err) {
    size_t pt = sd_model_kv_bytes_per_token(e->target, e->target->hp.n_layers);
    size_t pd = sd_engine_kv_bytes_per_token(e) - pt;
    size_t total = e->cfg.kv_mem ? e->cfg.kv_mem : sd_kv_default_bytes(e->be, pt + pd);
    size_t positions = total / (pt + pd);
    if (sd_model_kv_init(e->target, positions * pt, err)) return -1;
    if (e->proposer == SD_PROP_SELF) /* its sequences take blocks of their layers only */
        return sd_model_kv_init_shallow(e->target, e->cfg.draft_layers, positions * pd, err);
    return e->draft ? sd_model_kv_init(e->draft, positions * pd, err) : 0;
}

static int load_or_fall_back(sd_engine *e, bool auto_device, sd_err *err) {
    if (load_models(e, err) == 0) return 0;
    if (!auto_device || strcmp(e->be->name, "cuda") != 0) return -1;
    snprintf(e->backend_note, sizeof e->backend_note, "using cpu: the models do not load on the GPU (%.200s)",
             err->msg);
    sd_model_free(e->draft);
    sd_model_free(e->target);
    e->draft = e->target = NULL;
    e->be->destroy(e->be);
    e->be = NULL;
    if (sd_backend_cpu_new(e->cfg.n_threads, &e->be, err)) return -1;
    return load_models(e, err);
}

int sd_engine_open(const sd_engine_config *cfg, sd_engine **out, sd_err *err) {
    *out = NULL;
    if (!cfg->target_path) return sd_errf(err, "no target model given");
    sd_engine *e = calloc(1, sizeof *e);
    if (!e) return sd_errf(err, "out of memory");
    e->cfg = *cfg;
    if (pick_proposer(cfg, &e->proposer, err)) goto fail;
    bool auto_device = !cfg->device || !strcmp(cfg->device, "auto");
    if (sd_backend_open(auto_device ? "auto" : cfg->device, cfg->n_threads, &e->be, e->backend_note,
                        sizeof e->backend_note, err))
        goto fail;
    if (load_or_fall_back(e, auto_device, err) || set_kv_type(e, err)) goto fail;
    if (e->proposer == SD_PROP_SELF && (cfg->draft_layers < 1 || cfg->draft_layers >= e->target->hp.n_layers)) {
        sd_errf(err, "--draft-layers %d: the target has %d layers, so L must be in 1..%d", cfg->draft_layers,
                e->target->hp.n_layers, e->target->hp.n_layers - 1);
        goto fail;
    }
    if (init_kv(e, err)) goto fail;
    if (cfg->ctx < 0 || cfg->ctx > SD_CTX_LIMIT) {
        sd_errf(err, "context length %d is out of range (1..%d)", cfg->ctx, SD_CTX_LIMIT);
        goto fail;
    }
    /* the model's own context length is a default, held to the limit an asked-for one has */
    e->ctx = cfg->ctx > 0 ? cfg->ctx : e->target->hp.ctx < SD_CTX_LIMIT ? e->target->hp.ctx : SD_CTX_LIMIT;
    if (e->ctx < 2) {
        sd_errf(err, "%s: context length %d is too small", cfg->target_path, e->ctx);
        goto fail;
    }
    if (e->target->hp.ctx > 0 && e->ctx > e->target->hp.ctx)
        snprintf(e->warning, sizeof e->warning, "--ctx %d is above the %d positions %s was trained for: output "
                 "past them may degrade", e->ctx, e->target->hp.ctx, cfg->target_path);
    if (e->proposer == SD_PROP_DRAFT) {
        if (sd_tok_compatible(e->draft->tok, e->target->tok, err)) {
            sd_err_prefix(err, "%s and %s", cfg->draft_path, cfg->target_path);
            goto fail;
        }
    }
    *out = e;
    return 0;
fail:
    sd_engine_free(e);
    return -1;
}

size_t sd_engine_kv_bytes_per_token(const sd_engine *e) {
    size_t b = sd_model_kv_bytes_per_token(e->target, e->target->hp.n_layers);
    if (e->proposer == SD_PROP_DRAFT) b += sd_model_kv_bytes_per_token(e->draft, e->draft->hp.n_layers);
    /* self-drafting: the target's shallow pool, blocks of its first L layers */
    if (e->proposer == SD_PROP_SELF) b += sd_model_kv_bytes_per_token(e->target, e->cfg.draft_layers);
    return b;
}

void sd_engine_memory_report(const sd_engine *e, char *buf, size_t len) {
    size_t w = 0, kv = 0, work = 0;
    if (e->be->mem_usage) e->be->mem_usage(e->be, &w, &kv, &work);
    /* the CPU backend reads weights in place from the file mappings and holds none of its own */
    const char *where = w ? "on the device" : "mapped";
    if (!w) w = e->target->weight_bytes + (e->draft ? e->draft->weight_bytes : 0);
    int blocks, free_now;
    sd_model_kv_blocks(e->target, &blocks, &free_now);
    snprintf(buf, len, "backend %s: weights %.1f MiB %s, KV pool %.1f MiB (%s, %zu bytes per position, %d "
             "positions in %d blocks of %d), workspace %.1f MiB",
             e->be->device ? e->be->device : e->be->name, w / 1048576.0, where, kv / 1048576.0,
             sd_dtype_name(e->target->kv_type), sd_engine_kv_bytes_per_token(e), blocks * SD_KV_BLOCK, blocks,
             SD_KV_BLOCK, work / 1048576.0);
}

void sd_engine_free(sd_engine *e) {
    if (!e) return;
    sd_model_free(e->draft);
    sd_model_free(e->target);
    if (e->be) e->be->destroy(e->be);
    free(e);
}

/* ---------------------------------------------------------------- sessions */

int sd_session_new(sd_engine *e, sd_session **out, sd_err *err) {
    *out = NULL;
    sd_session *s = calloc(1, sizeof *s);
    if (!s) return sd_errf(err, "out of memory for a session");
    s->e = e;
    s->hist = malloc((size_t)e->ctx * sizeof *s->hist);
    if (!s->hist) {
        sd_session_free(s);
        return sd_errf(err, "out of memory for a session of %d positions", e->ctx);
    }
    s->next = e->sessions; /* linked first: sd_session_free unlinks on failure too */
    if (s->next) s->next->prev = s;
    e->sessions = s;
    if (sd_seq_new(e->target, e->ctx, 0, &s->seq, err)) goto fail;
    int rc = 0;
    switch (e->proposer) {
    case SD_PROP_DRAFT: rc = sd_prop_draft_new(e->draft, e->target, e->ctx, SD_DRAFT_LIMIT, &s->prop, err); break;
    case SD_PROP_LOOKUP: rc = sd_prop_lookup_new(e->cfg.lookup_n, SD_DRAFT_LIMIT, &s->prop, err); break;
    case SD_PROP_SELF:
        rc = sd_prop_self_new(e->target, e->cfg.draft_layers, e->ctx, SD_DRAFT_LIMIT, &s->prop, err);
        break;
    case SD_PROP_NONE: break;
    }
    if (rc) goto fail;
    *out = s;
    return 0;
fail:
    sd_session_free(s);
    return -1;
}

void sd_session_free(sd_session *s) {
    if (!s) return;
    if (s->prev) s->prev->next = s->next;
    else if (s->e->sessions == s) s->e->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    if (s->active) sd_gen_free(s->active);
    sd_proposer_free(s->prop);
    sd_seq_free(s->seq);
    if (s->dev_probs) s->e->be->release(s->e->be, s->dev_probs);
    free(s->hist);
    free(s);
}

const int32_t *sd_session_tokens(const sd_session *s, int *n) {
    *n = s->seq->pos;
    return s->hist;
}

/* ---------------------------------------------------------------- requests */

sd_gen_params sd_gen_params_default(void) {
    sd_gen_params p;
    memset(&p, 0, sizeof p);
    p.sampling = sd_sampling_greedy();
    p.sampling.seed = SD_DEFAULT_SEED;
    p.max_tokens = SD_DEFAULT_MAX_TOKENS;
    p.mode = SD_MODE_SPEC;
    p.draft_max = SD_DEFAULT_DRAFT_MAX;
    p.draft_min = SD_DEFAULT_DRAFT_MIN;
    p.draft_p_min = 0.0f;
    return p;
}

const char *sd_finish_name(sd_finish f) {
    switch (f) {
    case SD_FINISH_NONE: return "none";
    case SD_FINISH_STOP: return "stop";
    case SD_FINISH_LENGTH: return "length";
    case SD_FINISH_CANCELLED: return "cancelled";
    case SD_FINISH_ERROR: return "error";
    }
    return "unknown";
}

static int check_params(const sd_gen_params *p, bool has_proposer, sd_err *err) {
    const sd_sampling *s = &p->sampling;
    if (!(s->temperature == s->temperature) || s->temperature > SD_TEMP_MAX)
        return sd_errf(err, "temperature %g is out of range (0..%d)", s->temperature, SD_TEMP_MAX);
    if (!(s->top_p > 0) || s->top_p != s->top_p) return sd_errf(err, "top-p %g must be > 0", s->top_p);
    if (!(s->min_p <= 1) || s->min_p != s->min_p) return sd_errf(err, "min-p %g must be <= 1", s->min_p);
    if (p->max_tokens < 0) return sd_errf(err, "max tokens %d must be >= 0", p->max_tokens);
    if (p->n_stop < 0 || (p->n_stop > 0 && !p->stop)) return sd_errf(err, "bad stop string list");
    if (p->mode != SD_MODE_SPEC && p->mode != SD_MODE_PLAIN) return sd_errf(err, "unknown decoding mode %d", p->mode);
    if (p->mode == SD_MODE_SPEC && has_proposer) { /* without a proposer the draft bounds are unused */
        if (p->draft_max < 1 || p->draft_max > SD_DRAFT_LIMIT)
            return sd_errf(err, "--draft-max %d is out of range (1..%d)", p->draft_max, SD_DRAFT_LIMIT);
        if (p->draft_min < 0 || p->draft_min > p->draft_max)
            return sd_errf(err, "--draft-min %d is out of range (0..draft-max %d)", p->draft_min, p->draft_max);
        if (!(p->draft_p_min >= 0 && p->draft_p_min <= 1))
            return sd_errf(err, "--draft-p-min %g is out of range (0..1)", p->draft_p_min);
    }
    return 0;
}

int sd_gen_start(sd_session *s, const int32_t *prompt, int n_prompt, const sd_gen_params *p, sd_gen **out,
                 sd_err *err) {
    *out = NULL;
    sd_engine *e = s->e;
    int vocab = e->target->hp.vocab;
    if (s->active) return sd_errf(err, "the session already runs a request");
    if (n_prompt < 1) return sd_errf(err, "the prompt is empty (at least one token, e.g. BOS, is needed)");
    if (n_prompt > e->ctx)
        return sd_errf(err, "the prompt has %d tokens but the context holds %d", n_prompt, e->ctx);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= vocab)
            return sd_errf(err, "prompt token %d (at position %d) is outside the vocabulary (0..%d)", prompt[i],
                           i, vocab - 1);
    if (check_params(p, s->prop != NULL, err)) return -1;

    sd_gen *g = calloc(1, sizeof *g);
    if (!g) return sd_errf(err, "out of memory for a request");
    g->s = s;
    g->p = *p;
    g->p.stop = NULL;
    g->stop_token = -1;
    g->spec = p->mode == SD_MODE_SPEC && s->prop != NULL;
    g->greedy = sd_sampling_is_greedy(&p->sampling);
    int rows = g->spec ? p->draft_max + 1 : 1;
    g->logits = malloc((size_t)rows * vocab * sizeof *g->logits);
    g->block = malloc((size_t)rows * sizeof *g->block);
    g->chosen = malloc((size_t)rows * sizeof *g->chosen);
    if (!g->logits || !g->block || !g->chosen || sd_probs_init(&g->probs, vocab)) {
        sd_gen_free(g);
        return sd_errf(err, "out of memory for a request");
    }
    if (sd_textout_init(&g->text, p->stop, p->n_stop, err)) {
        sd_gen_free(g);
        return -1;
    }
    sd_backend *be = e->be;
    if (!g->greedy && be->sample_rows) { /* once per session: device allocations are slow */
        if (!s->dev_probs && !(s->dev_probs = be->alloc(be, (size_t)(SD_DRAFT_LIMIT + 1) * vocab, err))) {
            sd_gen_free(g);
            return sd_err_prefix(err, "sampling buffer");
        }
        g->dev_probs = s->dev_probs;
    }
    sd_rng_seed(&g->rng, p->sampling.seed);
    if (g->spec) sd_draft_len_init(&g->dl, p->draft_min, p->draft_max, s->prop->cost);

    /* Keep the longest common prefix of the cache and the prompt (only the same tenant's); at least the
     * last prompt token is recomputed because its logits give the first token. */
    int c = s->tenant == p->tenant ? sd_tokens_lcp(s->hist, s->seq->pos, prompt, n_prompt) : 0;
    s->tenant = p->tenant;
    if (c > n_prompt - 1) c = n_prompt - 1;
    if (s->seq->pos > c) sd_seq_truncate(s->seq, c);
    c = s->seq->pos; /* a cached block is kept whole or not at all */
    if (s->prop) s->prop->invalidate(s->prop, c);
    memcpy(s->hist, prompt, (size_t)n_prompt * sizeof *prompt);
    s->n_hist = n_prompt;
    g->n_prompt = n_prompt;
    g->prefilled = c;
    g->n_fill = n_prompt;
    g->order = e->n_started++;
    g->step_from = n_prompt;
    g->st.prompt_tokens = n_prompt;
    g->st.reused = c;
    g->st.draft_k = g->spec ? g->dl.k : 0;
    atomic_init(&g->cancel, false);
    sd_detok_init(&g->detok, e->target->tok, prompt[n_prompt - 1]);
    s->active = g;
    *out = g;
    return 0;
}

void sd_gen_last(const sd_gen *g, const int32_t **ids, int *n_ids, const char **text, size_t *text_len) {
    *ids = g->s->hist + g->step_from;
    *n_ids = g->s->n_hist - g->step_from;
    *text = g->step_text ? g->step_text : "";
    *text_len = g->step_text_len;
}

sd_finish sd_gen_finish(const sd_gen *g) { return g->finish; }

void sd_gen_stop_cause(const sd_gen *g, int32_t *token, int *stop_index) {
    *token = g->finish == SD_FINISH_STOP ? g->stop_token : -1;
    *stop_index = g->finish == SD_FINISH_STOP && g->text.matched ? g->text.which : -1;
}

void sd_gen_cancel(sd_gen *g) { atomic_store(&g->cancel, true); }

const int32_t *sd_gen_tokens(const sd_gen *g, int *n) {
    *n = g->s->n_hist - g->n_prompt;
    return g->s->hist + g->n_prompt;
}

const char *sd_gen_text(const sd_gen *g, size_t *len) {
    *len = g->text.shown;
    return g->text.buf ? g->text.buf : "";
}

void sd_gen_get_stats(const sd_gen *g, sd_gen_stats *st) { *st = g->st; }

double sd_gen_stats_acceptance(const sd_gen_stats *st) {
    return st->drafted > 0 ? (double)st->accepted / st->drafted : 0.0;
}

double sd_gen_stats_tokens_per_pass(const sd_gen_stats *st) {
    return st->target_passes > 0 && st->generated > 1 ? (double)(st->generated - 1) / st->target_passes : 1.0;
}

void sd_gen_free(sd_gen *g) {
    if (!g) return;
    if (g->s && g->s->active == g) g->s->active = NULL;
    sd_textout_free(&g->text);
    sd_probs_free(&g->probs);
    free(g->logits);
    free(g->block);
    free(g->chosen);
    free(g);
}
