/* Advancing requests: one step of every request of a turn, with all their target work in one forward
 * batch (model.h's sd_forward_batch), so the target's weights are read once per turn however many
 * requests run. A step is planned (cancellation, limits, drafting, the rows it needs), its rows join the
 * batch, and after the batch its results are taken (acceptance, sampling, emission) and the caches
 * settled. Each request owns its RNG and every row's logits are bitwise what the request alone would
 * get, so a request's output does not depend on what shares its batch. */
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "target/calibrate.h"
#include "target/engine_internal.h"
#include "target/verify.h"

/* A prefilling request gets at least this many rows per turn, so decode rows alone can never starve it. */
#define SD_PREFILL_MIN_ROWS 4

/* ---------------------------------------------------------------- emission */

/* Appends one token to the output, applying the limits. Returns 1 when the request is now finished
 * (the token that ends it is the last one emitted; an end-of-generation token is not emitted). */
static int emit(sd_gen *g, int32_t t, sd_err *err) {
    sd_session *s = g->s;
    if (sd_tok_is_eog(s->e->target->tok, t)) {
        g->finish = SD_FINISH_STOP;
        g->stop_token = t;
        return 1;
    }
    s->hist[s->n_hist++] = t;
    g->st.generated++;
    size_t n = sd_detok_push(&g->detok, t, g->piece, sizeof g->piece);
    int r = sd_textout_push(&g->text, g->piece, n, err);
    if (r < 0) return -1;
    if (r == 1) {
        g->finish = SD_FINISH_STOP;
        return 1;
    }
    if (g->st.generated >= g->p.max_tokens || s->n_hist >= s->e->ctx) {
        g->finish = SD_FINISH_LENGTH;
        return 1;
    }
    return 0;
}

static int emit_all(sd_gen *g, const int32_t *t, int n, sd_err *err) {
    for (int i = 0; i < n; i++) {
        int r = emit(g, t[i], err);
        if (r) return r;
    }
    return 0;
}

/* ---------------------------------------------------------------- planning */

/* True when verification of up to k drafts can run on the backend: it samples and accepts, and the
 * k + 1 rows of logits stay in backend memory. */
static bool verify_on_backend(const sd_gen *g, int k) {
    const sd_backend *be = g->s->e->be;
    return g->dev_probs && be->spec_accept && k <= SD_SAMPLE_MAX_K && k + 1 <= sd_model_keep_rows(g->s->e->target);
}

/* A speculative step's plan up to drafting: k (never past max_tokens or the context: a block yields up
 * to k + 1 tokens) and where verification may run; drafting follows for all requests at once. */
static void plan_spec(sd_gen *g) {
    sd_session *s = g->s;
    int budget = g->p.max_tokens - g->st.generated;
    if (budget > s->e->ctx - s->n_hist) budget = s->e->ctx - s->n_hist;
    int k = g->dl.k < budget - 1 ? g->dl.k : budget - 1;
    g->k_cap = g->p.draft_max < budget - 1 ? g->p.draft_max : budget - 1;
    g->verify_dev = !g->greedy && verify_on_backend(g, k);
    g->draft_k = k;
    g->drafting = false;
    g->dopts = (sd_draft_opts){.sampling = &g->p.sampling, .p_min = g->p.draft_p_min, .rng = &g->rng,
                               .dev = g->verify_dev ? s->e->be : NULL, .dev_width = s->e->target->hp.vocab,
                               .root = sd_kv_chain_root(g->p.tenant)};
    memset(&g->pr, 0, sizeof g->pr);
    g->kind = SD_STEP_DRAFT;
    g->n_rows = (k > 0 ? k : 0) + 1; /* at most; the prefill budget counts it */
}

/* After drafting: a verify block of the drafts the target can verify (a draft vocabulary may be larger
 * than the target's), or a plain step when there are none (a block with no drafts is a plain step). */
static void plan_block(sd_gen *g) {
    sd_session *s = g->s;
    int vocab = s->e->target->hp.vocab, nd = 0;
    while (nd < g->pr.n && g->pr.tokens[nd] >= 0 && g->pr.tokens[nd] < vocab) nd++;
    g->kind = nd ? SD_STEP_VERIFY : SD_STEP_PLAIN;
    g->n_rows = nd + 1;
    /* sampled rows stay on the backend when it accepts there with q there too (or point masses) */
    g->keep_rows = nd ? g->verify_dev && !g->pr.q : g->dev_probs != NULL;
    g->block[0] = s->hist[s->n_hist - 1];
    if (nd) memcpy(g->block + 1, g->pr.tokens, (size_t)nd * sizeof *g->block);
}

/* Before prefilling: takes the cached blocks of its history (any session's, same tenant) instead of
 * computing them; a fresh prompt's last token is always computed (its logits give the first token). */
static void share(sd_gen *g) {
    sd_session *s = g->s;
    if (g->prefilled >= g->n_fill || g->prefilled != s->seq->pos) return;
    int lim = g->resumed ? g->n_fill : g->n_fill - 1;
    int got = sd_seq_share_prefix(s->seq, sd_kv_chain_root(g->p.tenant), s->hist, lim);
    g->prefilled += got;
    if (!g->st.preempted) g->st.reused += got;
}

/* Decides g's step: what it needs from the batch (g->kind, g->n_rows), drafting when it speculates.
 * prefill_rows bounds a prefill chunk (<= 0: the whole prompt). */
static void plan(sd_gen *g, int prefill_rows) {
    g->step_from = g->s->n_hist;
    g->step_text = NULL;
    g->step_text_len = 0;
    g->n_rows = 0;
    if (g->finish != SD_FINISH_NONE) {
        g->kind = SD_STEP_IDLE;
        return;
    }
    g->kind = SD_STEP_SETTLE;
    if (atomic_load(&g->cancel)) {
        g->finish = SD_FINISH_CANCELLED;
        return;
    }
    if (!g->started) {
        g->started = true;
        if (g->p.max_tokens == 0 || g->n_prompt >= g->s->e->ctx) {
            g->finish = SD_FINISH_LENGTH;
            return;
        }
    }
    share(g);
    if (g->prefilled < g->n_fill) {
        int n = g->n_fill - g->prefilled;
        if (prefill_rows > 0 && n > prefill_rows) n = prefill_rows;
        g->kind = SD_STEP_PREFILL;
        g->n_rows = n;
        g->last_chunk = g->prefilled + n == g->n_fill;
        g->keep_rows = g->dev_probs != NULL;
        return;
    }
    if (!g->spec) {
        g->kind = SD_STEP_PLAIN;
        g->n_rows = 1;
        g->block[0] = g->s->hist[g->s->n_hist - 1];
        g->keep_rows = g->dev_probs != NULL;
        return;
    }
    plan_spec(g);
}

/* Rows of the batch that want output, kept on the backend. */
static int kept_rows(const sd_gen *g) {
    if (!g->keep_rows) return 0;
    return g->kind == SD_STEP_VERIFY ? g->n_rows : g->kind == SD_STEP_PREFILL && !g->last_chunk ? 0 : 1;
}

/* Output of a row that wants one: the argmax id (greedy), logits kept on the backend, or host logits. */
static void row_out(sd_gen *g, sd_row *r, int i) {
    if (g->greedy) {
        r->out = SD_OUT_ARGMAX;
        r->id = &g->chosen[i];
    } else if (g->keep_rows) {
        r->out = SD_OUT_KEEP;
        r->kept = &g->kept[i];
    } else {
        r->out = SD_OUT_LOGITS;
        r->logits = g->logits + (size_t)i * g->s->e->target->hp.vocab;
    }
}

/* g's rows into rows[0..g->n_rows). */
static void add_rows(sd_gen *g, sd_row *rows) {
    sd_session *s = g->s;
    const int32_t *tok = g->kind == SD_STEP_PREFILL ? s->hist + g->prefilled : g->block;
    for (int i = 0; i < g->n_rows; i++) {
        rows[i] = (sd_row){.seq = s->seq, .token = tok[i], .pos = s->seq->pos + i};
        if (g->kind == SD_STEP_VERIFY) row_out(g, &rows[i], i);
    }
    if (g->kind == SD_STEP_PLAIN || (g->kind == SD_STEP_PREFILL && g->last_chunk)) row_out(g, &rows[g->n_rows - 1], 0);
}

/* ---------------------------------------------------------------- results */

/* The token after a plain step or a prefill: the argmax (greedy), a draw on the backend from the kept
 * row, or a draw on the host; one uniform from the request's RNG when sampling. */
static int pick(sd_gen *g, int32_t *t, sd_err *err) {
    sd_engine *e = g->s->e;
    int vocab = e->target->hp.vocab;
    if (g->greedy) {
        *t = g->chosen[0];
        return 0;
    }
    if (g->keep_rows) {
        sd_sample_cfg c = sd_sampling_cfg(&g->p.sampling);
        float u = sd_rng_f32(&g->rng);
        e->be->sample_rows(e->be, t, g->dev_probs, g->kept[0], 1, vocab, &c, &u);
        return sd_backend_check(e->be, err);
    }
    sd_sampling_probs(&g->p.sampling, g->logits, vocab, &g->probs);
    *t = sd_probs_draw(&g->probs, sd_rng_f32(&g->rng));
    return 0;
}

/* Acceptance of the block's nd drafts: greedy on the ids, sampled on the backend (the kept rows filtered
 * there, k + 1 uniforms from the request's RNG as the host path takes) or on the host. */
static int accept(sd_gen *g, int nd, int32_t *next, int *a, sd_err *err) {
    sd_backend *be = g->s->e->be;
    int vocab = g->s->e->target->hp.vocab;
    if (g->greedy) {
        *a = sd_verify_greedy(g->chosen, g->block + 1, nd, next);
        return 0;
    }
    if (g->keep_rows) { /* the kept rows of one request are consecutive */
        sd_sample_cfg c = sd_sampling_cfg(&g->p.sampling);
        be->sample_rows(be, NULL, g->dev_probs, g->kept[0], nd + 1, vocab, &c, NULL);
        float u[SD_SAMPLE_MAX_K + 1];
        for (int i = 0; i <= nd; i++) u[i] = sd_rng_f32(&g->rng);
        *a = be->spec_accept(be, next, g->dev_probs, g->pr.q_dev, g->block + 1, nd, vocab, u);
        return sd_backend_check(be, err);
    }
    *a = sd_verify_sampled(&g->p.sampling, g->logits, vocab, g->block + 1, g->pr.q, nd, &g->rng, &g->probs, next);
    return 0;
}

/* Takes the results of g's rows (dt: the seconds its batch took). */
static int take(sd_gen *g, double dt, sd_err *err) {
    int32_t t;
    if (g->kind == SD_STEP_PREFILL) {
        g->prefilled += g->n_rows;
        if (!g->st.preempted) g->st.prefilled += g->n_rows;
        g->st.t_prefill += dt;
        if (!g->last_chunk || g->resumed) return 0; /* a resumed request's next token is pending already */
        return pick(g, &t, err) || emit(g, t, err) < 0 ? -1 : 0;
    }
    g->st.target_passes++;
    g->st.t_target += dt;
    if (g->kind == SD_STEP_PLAIN) return pick(g, &t, err) || emit(g, t, err) < 0 ? -1 : 0;
    int nd = g->n_rows - 1, a;
    if (accept(g, nd, &t, &a, err)) return -1;
    g->st.drafted += nd;
    g->st.accepted += a;
    sd_draft_len_update(&g->dl, nd, a);
    g->st.draft_k = g->dl.k;
    int r = emit_all(g, g->block + 1, a, err);
    if (r == 0) r = emit(g, t, err);
    return r < 0 ? -1 : 0;
}

/* After a step: cut the caches back to the history (rejected drafts, tokens past a limit) and release
 * the text that is now safe to show. */
static void settle(sd_gen *g) {
    sd_session *s = g->s;
    int keep = g->prefilled < g->n_fill ? g->prefilled : s->n_hist - 1;
    if (s->seq->pos > keep) sd_seq_truncate(s->seq, keep);
    sd_seq_cache_prefix(s->seq, sd_kv_chain_root(g->p.tenant), s->hist, keep); /* final tokens only */
    if (s->prop && g->prefilled >= g->n_fill) s->prop->rollback(s->prop, s->hist, s->n_hist);
    bool final = g->finish != SD_FINISH_NONE;
    if (final && !g->text.matched) {
        size_t n = sd_detok_flush(&g->detok, g->piece, sizeof g->piece);
        if (n && sd_textout_push(&g->text, g->piece, n, &g->err) < 0) g->finish = SD_FINISH_ERROR;
    }
    g->step_text = sd_textout_release(&g->text, final, &g->step_text_len);
}

/* ---------------------------------------------------------------- drafting */

static void fail(sd_gen *g, const sd_err *err) {
    g->finish = SD_FINISH_ERROR;
    g->kind = SD_STEP_SETTLE;
    g->drafting = false;
    if (err != &g->err) g->err = *err;
}

/* Starts g's proposal: proposers without rounds (lookup) propose at once; model proposers begin. */
static void draft_begin(sd_gen *g) {
    sd_proposer *p = g->s->prop;
    if (g->draft_k < 1) {
        plan_block(g);
        return;
    }
    double t0 = sd_now_s();
    int rc = p->begin ? p->begin(p, g->s->hist, g->s->n_hist, g->draft_k, &g->dopts, &g->pr, &g->err)
                      : p->propose(p, g->s->hist, g->s->n_hist, g->draft_k, &g->dopts, &g->pr, &g->err);
    g->st.t_draft += sd_now_s() - t0;
    if (rc < 0) fail(g, &g->err);
    else if (rc == 1 && p->begin) g->drafting = true;
    else plan_block(g);
}

/* Rows of every drafting request on the first drafter's model into *rows (grown as needed), as long as
 * the kept rows fit the model's room; the requests into batch. Returns the batch's size. */
static int draft_round_rows(sd_gen **gens, int n, sd_gen **batch, sd_row **rows, int *cap, int *total, sd_model **m) {
    int nb = 0, kept = 0;
    *total = 0;
    *m = NULL;
    for (int i = 0; i < n; i++) {
        sd_gen *g = gens[i];
        if (!g->drafting) continue;
        sd_proposer *p = g->s->prop;
        if (!*m) *m = p->model;
        if (p->model != *m) continue; /* another model: a later batch */
        int c = p->rows(p, NULL);
        if (*total + c > *cap) {
            int nc = (*total + c) * 2;
            sd_row *r = realloc(*rows, (size_t)nc * sizeof *r);
            if (!r) {
                sd_err e;
                sd_errf(&e, "out of memory (%d draft rows)", nc);
                fail(g, &e);
                continue;
            }
            *rows = r;
            *cap = nc;
        }
        p->rows(p, *rows + *total);
        int k = 0;
        for (int j = 0; j < c; j++) k += (*rows)[*total + j].out == SD_OUT_KEEP;
        if (nb && kept + k > sd_model_keep_rows(*m)) continue; /* no room left this round */
        batch[nb++] = g;
        kept += k;
        *total += c;
    }
    return nb;
}

/* Drafting for every speculating request of the turn: model proposers in rounds, each round one draft
 * forward batch for all of them (round 0 feeds what each draft cache has not seen yet, round i the i-th
 * draft), so the draft model's weights too are read once per round however many requests speculate. */
static void draft_all(sd_gen **gens, int n) {
    for (int i = 0; i < n; i++)
        if (gens[i]->kind == SD_STEP_DRAFT) draft_begin(gens[i]);
    sd_gen **batch = malloc((size_t)n * sizeof *batch);
    sd_row *rows = NULL;
    int cap = 0, total, nb;
    sd_model *m;
    while (batch && (nb = draft_round_rows(gens, n, batch, &rows, &cap, &total, &m)) > 0) {
        double t0 = sd_now_s();
        sd_err err = {{0}};
        int rc = sd_forward_batch(m, rows, total, &err);
        for (int i = 0; i < nb; i++) {
            sd_gen *g = batch[i];
            sd_proposer *p = g->s->prop;
            int r = rc ? -1 : p->next(p, &g->pr, &g->err);
            if (r < 0) {
                fail(g, rc ? &err : &g->err);
            } else if (r == 0) {
                g->drafting = false;
                plan_block(g);
            }
        }
        double dt = sd_now_s() - t0;
        sd_cost_record(&gens[0]->s->e->cost.draft, total, dt);
        for (int i = 0; i < nb; i++) batch[i]->st.t_draft += dt;
    }
    if (!batch) /* out of memory: no drafting this turn, everyone fails rather than hangs */
        for (int i = 0; i < n; i++)
            if (gens[i]->kind == SD_STEP_DRAFT) fail(gens[i], &(sd_err){.msg = "out of memory (draft batch)"});
    free(batch);
    free(rows);
}

/* ---------------------------------------------------------------- batch-aware k */

/* True when g's draft length is the batch rule's to choose: greedy (its tokens do not depend on k; a
 * seeded sampled request's do, so its k stays its own), adaptive (draft-min < draft-max). */
static bool k_by_batch(const sd_gen *g) {
    return g->kind == SD_STEP_DRAFT && g->greedy && g->p.draft_min < g->p.draft_max && g->draft_k > 0;
}

/* Sets the draft lengths of the turn's greedy speculating requests to what pays in this batch
 * (batch_k.h), up to each one's draft_max, when at least two of them share it (a lone request keeps its
 * adaptive k, which depends on acceptance only: its runs are reproducible to the drafted counts); the
 * other rows of the turn are the rule's base. Costs are calibrated before the first choice. */
static void batch_k(sd_gen **gens, int n) {
    int m = 0, base_rows = 0;
    double base_tokens = 0;
    for (int i = 0; i < n; i++) m += k_by_batch(gens[i]);
    if (m < 2) return;
    sd_engine *e = gens[0]->s->e;
    if (!e->cost.calibrated) {
        const sd_proposer *p = NULL;
        for (int i = 0; i < n && !p; i++)
            if (k_by_batch(gens[i])) p = gens[i]->s->prop;
        sd_engine_calibrate(e, p->model, p->seq ? p->seq->n_layers : 0);
    }
    double *alpha = malloc(sizeof(double) * (size_t)m);
    int *kmax = malloc(sizeof(int) * (size_t)m), *k = malloc(sizeof(int) * (size_t)m);
    if (!alpha || !kmax || !k) goto out;
    m = 0;
    for (int i = 0; i < n; i++) {
        sd_gen *g = gens[i];
        if (k_by_batch(g)) {
            alpha[m] = sd_draft_len_alpha(&g->dl);
            kmax[m++] = g->k_cap;
        } else if (g->kind >= SD_STEP_DRAFT) {
            base_rows += g->n_rows;
            base_tokens += g->kind == SD_STEP_PREFILL ? g->last_chunk
                           : g->kind == SD_STEP_DRAFT ? sd_spec_expected_tokens(sd_draft_len_alpha(&g->dl), g->draft_k)
                                                      : 1;
        }
    }
    sd_batch_k(&e->cost, base_rows, base_tokens, m, alpha, kmax, k);
    m = 0;
    for (int i = 0; i < n; i++)
        if (k_by_batch(gens[i])) {
            gens[i]->draft_k = k[m++];
            gens[i]->n_rows = gens[i]->draft_k + 1;
        }
out:
    free(alpha);
    free(kmax);
    free(k);
}

/* ---------------------------------------------------------------- KV admission */

/* The KV blocks a request's step may take this turn, per pool: its target rows, and a model proposer's
 * drafting (what its cache has not seen plus k drafts, at most). `t` counts blocks of the target's pool,
 * `d` of the proposer's: the draft model's, or the target's shallow pool when self-drafting. */
typedef struct kv_need {
    int t, d;
} kv_need;

static void add_blocks(const sd_engine *e, const sd_seq *q, int n, kv_need *k) {
    if (q->m == e->target && !sd_seq_in_shallow_pool(q)) k->t += n;
    else k->d += n;
}

static kv_need step_need(const sd_gen *g) {
    const sd_session *s = g->s;
    kv_need k = {0, 0};
    if (g->kind < SD_STEP_DRAFT || g->finish != SD_FINISH_NONE) return k;
    k.t = sd_seq_blocks_needed(s->seq, s->seq->pos + g->n_rows);
    const sd_seq *ds = s->prop ? s->prop->seq : NULL;
    if (g->kind == SD_STEP_DRAFT && ds && g->draft_k > 0)
        add_blocks(s->e, ds, sd_seq_blocks_needed(ds, s->n_hist + g->draft_k), &k);
    return k;
}

static kv_need held(const sd_session *s) {
    kv_need k = {s->seq->n_blocks, 0};
    if (s->prop && s->prop->seq) add_blocks(s->e, s->prop->seq, s->prop->seq->n_blocks, &k);
    return k;
}

/* Drops a session's caches (target and draft): their blocks go back to the pools. */
static void drop_caches(sd_session *s) {
    sd_seq_truncate(s->seq, 0);
    if (s->prop) {
        s->prop->invalidate(s->prop, 0);
        s->prop->rollback(s->prop, s->hist, 0);
    }
}

/* Takes g's blocks back for older requests: its history stays, and it prefills it again when blocks
 * free up (everything but the pending token once it has emitted any; a row's result does not depend on
 * its batch, so the cache comes back bitwise and the output is unchanged). */
static void preempt(sd_gen *g) {
    sd_session *s = g->s;
    kv_need h = held(s);
    if (h.t || h.d) g->st.preempted++; /* else it only waits */
    drop_caches(s);
    g->resumed = s->n_hist > g->n_prompt;
    g->n_fill = g->resumed ? s->n_hist - 1 : g->n_prompt;
    g->prefilled = 0;
    g->kind = SD_STEP_SETTLE;
    g->n_rows = 0;
    g->drafting = false;
}

/* Idle sessions' caches (kept for prefix reuse) give way first. */
static void drop_idle(sd_engine *e) {
    for (sd_session *s = e->sessions; s; s = s->next)
        if (!s->active || s->active->finish != SD_FINISH_NONE) drop_caches(s);
}

/* Blocks of the target's pool (draft false) or the proposer's (true; 0, 0 without one) in all and free. */
static void pool_blocks(const sd_engine *e, bool draft, int *total, int *free_now) {
    *total = *free_now = 0;
    if (!draft) sd_model_kv_blocks(e->target, total, free_now);
    else if (e->draft) sd_model_kv_blocks(e->draft, total, free_now);
    else if (e->proposer == SD_PROP_SELF) sd_model_kv_blocks_at(e->target, e->cfg.draft_layers, total, free_now);
}

static int free_blocks(const sd_engine *e, bool draft) {
    int total, free_now;
    pool_blocks(e, draft, &total, &free_now);
    return free_now;
}

/* The newest request of gens that holds blocks and is newer than `than`, or NULL. */
static sd_gen *newest_holder(sd_gen **gens, int n, const sd_gen *than) {
    sd_gen *v = NULL;
    for (int i = 0; i < n; i++) {
        sd_gen *g = gens[i];
        kv_need h = held(g->s);
        if (g->finish != SD_FINISH_NONE || g->order <= than->order || (!h.t && !h.d)) continue;
        if (!v || g->order > v->order) v = g;
    }
    return v;
}

/* Gives the turn's steps their KV blocks, oldest request first: when the pools cannot, idle sessions'
 * caches are dropped, then the newest requests are preempted; a request that cannot fit even then waits
 * (preempted itself), or fails when the pool could never hold it. */
static void admit(sd_gen **gens, int n) {
    sd_engine *e = gens[0]->s->e;
    kv_need taken = {0, 0};
    bool idle_dropped = false;
    for (;;) {
        sd_gen *g = NULL; /* the oldest request not yet looked at */
        for (int i = 0; i < n; i++)
            if (!gens[i]->admitted && (!g || gens[i]->order < g->order)) g = gens[i];
        if (!g) return;
        g->admitted = true;
        for (;;) {
            kv_need k = step_need(g);
            int ft = free_blocks(e, false) - taken.t, fd = free_blocks(e, true) - taken.d;
            if (k.t <= ft && k.d <= fd) {
                taken.t += k.t;
                taken.d += k.d;
                break;
            }
            if (!idle_dropped) {
                drop_idle(e);
                idle_dropped = true;
                continue;
            }
            sd_gen *v = newest_holder(gens, n, g);
            if (v) {
                preempt(v);
                continue;
            }
            int total_t, total_d, f;
            pool_blocks(e, false, &total_t, &f);
            pool_blocks(e, true, &total_d, &f);
            kv_need h = held(g->s);
            if (h.t + k.t > total_t || h.d + k.d > total_d) {
                sd_err err;
                sd_errf(&err, "the KV pool is too small for this request: it needs %d positions, the pool holds %d "
                        "(raise --kv-mem)", (h.t + k.t) * SD_KV_BLOCK, total_t * SD_KV_BLOCK);
                fail(g, &err);
            } else {
                preempt(g); /* waits for older requests to free blocks */
            }
            break;
        }
    }
}

/* ---------------------------------------------------------------- the turn */

/* One forward batch over gens[0..n) (their rows already planned), then their results. */
static void run_batch(sd_gen **gens, int n, sd_row *rows) {
    int total = 0;
    for (int i = 0; i < n; i++) {
        add_rows(gens[i], rows + total);
        total += gens[i]->n_rows;
    }
    double t0 = sd_now_s();
    sd_err err = {{0}};
    if (sd_forward_batch(gens[0]->s->e->target, rows, total, &err)) {
        for (int i = 0; i < n; i++) fail(gens[i], &err);
        return;
    }
    double dt = sd_now_s() - t0;
    sd_cost_record(&gens[0]->s->e->cost.target, total, dt);
    for (int i = 0; i < n; i++) /* before the model's next forward: kept rows live until then */
        if (take(gens[i], dt, &gens[i]->err)) fail(gens[i], &gens[i]->err);
}

/* Plans every request (decode and verify steps first, prefill chunks in what is left of the row
 * budget), then runs their rows in as few batches as the kept-logits room allows (one, unless many
 * sampled blocks stay on the backend at once). */
int sd_gen_step_batch(sd_gen **gens, int n, int batch_tokens, sd_err *err) {
    double t0 = sd_now_s();
    int rows_used = 0, total = 0;
    for (int i = 0; i < n; i++) {
        if (!gens[i]) return sd_errf(err, "step: request %d is NULL", i);
        if (gens[i]->s->e != gens[0]->s->e) return sd_errf(err, "step: requests of different engines");
    }
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            sd_gen *g = gens[i];
            bool prefilling = g->finish == SD_FINISH_NONE && (!g->started || g->prefilled < g->n_fill);
            if (prefilling != (pass == 1)) continue;
            int left = batch_tokens - rows_used;
            plan(g, batch_tokens <= 0 ? 0 : left > SD_PREFILL_MIN_ROWS ? left : SD_PREFILL_MIN_ROWS);
            rows_used += g->n_rows;
        }
    batch_k(gens, n);
    for (int i = 0; i < n; i++) gens[i]->admitted = gens[i]->kind < SD_STEP_DRAFT;
    if (n) admit(gens, n);
    draft_all(gens, n);
    for (int i = 0; i < n; i++)
        if (gens[i]->kind >= SD_STEP_PREFILL) total += gens[i]->n_rows;
    sd_gen **batch = malloc((size_t)n * sizeof *batch);
    sd_row *rows = malloc((size_t)(total ? total : 1) * sizeof *rows);
    if (!batch || !rows) {
        free(batch);
        free(rows);
        return sd_errf(err, "out of memory (a batch of %d rows)", total);
    }
    int keep_room = n ? sd_model_keep_rows(gens[0]->s->e->target) : 0;
    int nb = 0, kept = 0;
    for (int i = 0; i <= n; i++) {
        sd_gen *g = i < n ? gens[i] : NULL;
        if (g && g->kind < SD_STEP_PREFILL) continue;
        if (nb && (!g || kept + kept_rows(g) > keep_room)) {
            run_batch(batch, nb, rows);
            nb = kept = 0;
        }
        if (g) {
            batch[nb++] = g;
            kept += kept_rows(g);
        }
    }
    double dt = sd_now_s() - t0;
    for (int i = 0; i < n; i++) {
        if (gens[i]->kind == SD_STEP_IDLE) continue;
        settle(gens[i]);
        gens[i]->st.t_total += dt;
    }
    free(batch);
    free(rows);
    return 0;
}

int sd_gen_step(sd_gen *g, sd_err *err) {
    if (sd_gen_step_batch(&g, 1, 0, err)) return -1;
    if (g->finish == SD_FINISH_ERROR && g->kind != SD_STEP_IDLE) {
        if (err) *err = g->err;
        return -1;
    }
    return 0;
}

const char *sd_gen_error(const sd_gen *g) { return g->finish == SD_FINISH_ERROR ? g->err.msg : NULL; }
