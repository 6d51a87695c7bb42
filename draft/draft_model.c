/* A model proposer: runs a model (a separate draft model, or the target truncated to its first layers)
 * autoregressively on its own KV cache. See proposer.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "draft/proposer.h"

/* Where the prediction after the fed tokens goes: the argmax id (greedy without a confidence floor: no
 * logits leave the backend), logits kept in backend memory for sampling there, or host logits. */
typedef enum feed_mode { FEED_ARGMAX, FEED_KEEP, FEED_HOST } feed_mode;

/* A proposal in progress (between begin and the last next). */
typedef struct round_state {
    sd_draft_opts o;
    int k;                /* drafts wanted */
    int n_hist;           /* the history's length: the cache agrees with it after the first round */
    bool greedy, first;
    feed_mode mode;
    const int32_t *feed;  /* the rows pending: tokens to feed (the history's tail, then the last draft) */
    int n_feed;
    int32_t chosen;       /* FEED_ARGMAX: the prediction */
    const float *dev;     /* FEED_KEEP: the prediction's logits on the backend */
} round_state;

typedef struct model_prop {
    sd_seq *seq;
    int vocab, max_k;
    int32_t *cached; /* the tokens the sequence's cache holds: cached[0..seq->pos) */
    int valid;       /* cached[0..valid) is known to equal the history (the rest are drafts) */
    uint64_t root;   /* the prefix cache's root for the current request (0: none yet, offer nothing) */
    int32_t *out;    /* proposed tokens */
    float *logits;   /* host, vocab floats: the prediction after the last fed token */
    sd_probs *q;     /* max_k distributions (filled only when sampling on the host) */
    float *q_dev;    /* backend memory, max_k rows of vocab: the distributions when sampling on the backend */
    round_state rs;  /* the proposal in progress */
} model_prop;

/* Top probability of softmax(logits) at temperature 1: the draft's confidence, whatever the sampler. */
static float top_prob(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)(x[i] - mx));
    return (float)(1.0 / z);
}

/* Keeps the cache's agreement with hist[0..n), comparing only past the known-valid prefix. */
static int agree(model_prop *mp, const int32_t *hist, int n) {
    if (mp->valid > n) mp->valid = n;
    int v = mp->valid;
    int c = v + sd_tokens_lcp(mp->cached + v, mp->seq->pos - v, hist + v, n - v);
    if (c < mp->seq->pos) sd_seq_truncate(mp->seq, c);
    if (c > mp->seq->pos) c = mp->seq->pos; /* a shared block is dropped whole */
    mp->valid = c;
    return c;
}

/* Extends the cache with the prefix cache's blocks of hist[0..n) (other sessions' drafts computed them). */
static int share(model_prop *mp, const int32_t *hist, int n) {
    int from = mp->seq->pos;
    int got = mp->root ? sd_seq_share_prefix(mp->seq, mp->root, hist, n) : 0;
    memcpy(mp->cached + from, hist + from, (size_t)got * sizeof *hist);
    mp->valid = from + got;
    return got;
}

static void mp_rollback(sd_proposer *p, const int32_t *hist, int n) {
    model_prop *mp = p->impl;
    agree(mp, hist, n);
    if (mp->root) sd_seq_cache_prefix(mp->seq, mp->root, hist, mp->valid);
}

static void mp_invalidate(sd_proposer *p, int n) {
    model_prop *mp = p->impl;
    if (mp->valid > n) mp->valid = n;
    mp->root = 0;
}

/* Sampling on the backend when the verifier does too and takes our rows: the same backend, the same
 * vocabulary, and no confidence floor (top_prob needs the logits on the host). */
static bool sample_on_backend(model_prop *mp, const sd_draft_opts *o, sd_err *err, int *failed) {
    sd_backend *be = mp->seq->m->be;
    *failed = 0;
    if (!o->dev || o->dev != be || !be->sample_rows || o->dev_width != mp->vocab || o->p_min > 0) return false;
    if (!mp->q_dev && !(mp->q_dev = be->alloc(be, (size_t)mp->max_k * mp->vocab, err))) {
        *failed = 1;
        return false;
    }
    return true;
}

static int mp_begin(sd_proposer *p, const int32_t *hist, int n, int k, const sd_draft_opts *o, sd_proposal *out,
                    sd_err *err) {
    model_prop *mp = p->impl;
    round_state *rs = &mp->rs;
    out->tokens = mp->out;
    out->n = 0;
    out->q = NULL;
    out->q_dev = NULL;
    rs->n_feed = 0;
    if (k > mp->max_k) k = mp->max_k;
    /* Room in the draft's cache: the history plus k - 1 fed drafts. */
    if (n + k - 1 > mp->seq->ctx) k = mp->seq->ctx - n + 1;
    if (k <= 0 || n > mp->seq->ctx) return 0;

    /* Sync: keep the common prefix, take what the prefix cache holds of the rest, feed the remainder (at
     * least the last token, whose logits we need). */
    int c = agree(mp, hist, n);
    if (c > n - 1) {
        sd_seq_truncate(mp->seq, n - 1);
        c = mp->valid = mp->seq->pos;
    }
    mp->root = o->root;
    c += share(mp, hist, n - 1);
    rs->greedy = sd_sampling_is_greedy(o->sampling);
    int failed = 0;
    rs->mode = rs->greedy && o->p_min <= 0                           ? FEED_ARGMAX
               : !rs->greedy && sample_on_backend(mp, o, err, &failed) ? FEED_KEEP
                                                                     : FEED_HOST;
    if (failed) return -1;
    rs->o = *o;
    rs->k = k;
    rs->n_hist = n;
    rs->first = true;
    rs->feed = hist + c;
    rs->n_feed = n - c;
    return 1;
}

static int mp_rows(sd_proposer *p, sd_row *rows) {
    model_prop *mp = p->impl;
    round_state *rs = &mp->rs;
    if (!rows) return rs->n_feed;
    for (int i = 0; i < rs->n_feed; i++) rows[i] = (sd_row){.seq = mp->seq, .token = rs->feed[i], .pos = mp->seq->pos + i};
    sd_row *last = &rows[rs->n_feed - 1];
    if (rs->mode == FEED_ARGMAX) *last = (sd_row){.seq = last->seq, .token = last->token, .pos = last->pos, .out = SD_OUT_ARGMAX, .id = &rs->chosen};
    else if (rs->mode == FEED_KEEP) *last = (sd_row){.seq = last->seq, .token = last->token, .pos = last->pos, .out = SD_OUT_KEEP, .kept = &rs->dev};
    else *last = (sd_row){.seq = last->seq, .token = last->token, .pos = last->pos, .out = SD_OUT_LOGITS, .logits = mp->logits};
    return rs->n_feed;
}

/* The draft after the prediction the last round gave, into out; 1 when it is to be fed (another round). */
static int mp_next(sd_proposer *p, sd_proposal *out, sd_err *err) {
    model_prop *mp = p->impl;
    round_state *rs = &mp->rs;
    memcpy(mp->cached + mp->seq->pos - rs->n_feed, rs->feed, (size_t)rs->n_feed * sizeof *rs->feed);
    if (rs->first) mp->valid = rs->n_hist;
    rs->first = false;
    rs->n_feed = 0;
    int i = out->n;
    /* Stop early when the draft is unsure; the first token is always proposed because verifying one more
     * token costs the target little compared with a pass of its own. */
    bool stop = i > 0 && rs->o.p_min > 0 && top_prob(mp->logits, mp->vocab) < rs->o.p_min;
    if (!stop) {
        int32_t t;
        sd_backend *be = mp->seq->m->be;
        if (rs->mode == FEED_ARGMAX) {
            t = rs->chosen;
        } else if (rs->greedy) {
            t = sd_argmax(mp->logits, mp->vocab);
        } else if (rs->mode == FEED_KEEP) {
            sd_sample_cfg cfg = sd_sampling_cfg(rs->o.sampling);
            float u = sd_rng_f32(rs->o.rng);
            be->sample_rows(be, &t, mp->q_dev + (size_t)i * mp->vocab, rs->dev, 1, mp->vocab, &cfg, &u);
            if (sd_backend_check(be, err)) return -1;
        } else {
            sd_sampling_probs(rs->o.sampling, mp->logits, mp->vocab, &mp->q[i]);
            t = sd_probs_draw(&mp->q[i], sd_rng_f32(rs->o.rng));
        }
        mp->out[out->n++] = t;
        if (out->n < rs->k) {
            rs->feed = &mp->out[i];
            rs->n_feed = 1;
            return 1;
        }
    }
    if (rs->mode == FEED_KEEP) out->q_dev = mp->q_dev;
    else if (!rs->greedy) out->q = mp->q;
    return 0;
}

/* A proposal alone: its rounds, each a batch of this one sequence. */
static int mp_propose(sd_proposer *p, const int32_t *hist, int n, int k, const sd_draft_opts *o,
                      sd_proposal *out, sd_err *err) {
    model_prop *mp = p->impl;
    int rc = mp_begin(p, hist, n, k, o, out, err);
    while (rc == 1) {
        int nr = mp_rows(p, NULL);
        sd_row *rows = malloc((size_t)nr * sizeof *rows);
        if (!rows) return sd_errf(err, "out of memory (%d draft rows)", nr);
        mp_rows(p, rows);
        rc = sd_forward_batch(mp->seq->m, rows, nr, err);
        free(rows);
        if (rc == 0) rc = mp_next(p, out, err);
    }
    return rc;
}

static void mp_destroy(sd_proposer *p) {
    model_prop *mp = p->impl;
    if (mp) {
        if (mp->q_dev) mp->seq->m->be->release(mp->seq->m->be, mp->q_dev);
        sd_seq_free(mp->seq);
        if (mp->q)
            for (int i = 0; i < mp->max_k; i++) sd_probs_free(&mp->q[i]);
        free(mp->q);
        free(mp->cached);
        free(mp->out);
        free(mp->logits);
        free(mp);
    }
    free(p);
}

int sd_prop_model_new(const char *name, sd_model *m, int n_layers, int ctx, int max_k, double cost,
                      sd_proposer **out, sd_err *err) {
    *out = NULL;
    sd_proposer *p = calloc(1, sizeof *p);
    model_prop *mp = calloc(1, sizeof *mp);
    if (!p || !mp) {
        free(p);
        free(mp);
        return sd_errf(err, "out of memory for the %s proposer", name);
    }
    p->name = name;
    p->cost = cost;
    p->impl = mp;
    p->propose = mp_propose;
    p->begin = mp_begin;
    p->rows = mp_rows;
    p->next = mp_next;
    p->model = m;
    p->rollback = mp_rollback;
    p->invalidate = mp_invalidate;
    p->destroy = mp_destroy;
    mp->vocab = m->hp.vocab;
    mp->max_k = max_k;
    if (sd_seq_new(m, ctx, n_layers, &mp->seq, err)) {
        mp_destroy(p);
        return sd_err_prefix(err, "%s proposer", name);
    }
    p->seq = mp->seq;
    mp->cached = malloc((size_t)mp->seq->ctx * sizeof *mp->cached);
    mp->out = malloc((size_t)max_k * sizeof *mp->out);
    mp->logits = malloc((size_t)mp->vocab * sizeof *mp->logits);
    mp->q = calloc((size_t)max_k, sizeof *mp->q);
    bool ok = mp->cached && mp->out && mp->logits && mp->q;
    for (int i = 0; ok && i < max_k; i++) ok = sd_probs_init(&mp->q[i], mp->vocab) == 0;
    if (!ok) {
        mp_destroy(p);
        return sd_errf(err, "out of memory for the %s proposer", name);
    }
    *out = p;
    return 0;
}

int sd_prop_draft_new(sd_model *draft, const sd_model *target, int ctx, int max_k, sd_proposer **out,
                      sd_err *err) {
    /* Decoding is memory-bound, so the bytes of weights read per token are the cost ratio. */
    double cost = target->bytes_per_token ? (double)draft->bytes_per_token / target->bytes_per_token : 0.1;
    return sd_prop_model_new("draft", draft, 0, ctx, max_k, cost, out, err);
}
