/* The transformer forward pass of one sequence (llama, qwen2, qwen3), written only against the backend
 * interface: activations live in backend memory and every step is one backend op over all n rows, so a
 * weight matrix is read once per call however many tokens it carries. */
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"
#include "model/model.h"

/* Tokens one internal step takes. Every sequence (each daemon session has one or two) holds scratch for
 * this many rows: 128 keeps prefill matrix-matrix products efficient (weights are read once per 128
 * tokens) at about 24 MB per sequence for an 8B model. */
#define SD_MAX_BATCH 128
/* Cap on the logits scratch (floats, 16 MB): with a 150k vocabulary that is 27 rows, more than a
 * verification block needs; longer all-logits inputs compute the classifier in slices. */
#define SD_LOGITS_FLOATS (4u << 20)

static int q_width(const sd_hparams *hp) { return hp->n_heads * hp->head_dim; }
static int kv_width(const sd_hparams *hp) { return hp->n_kv_heads * hp->head_dim; }

/* Rows of logits the scratch holds: at least 1, at most max_batch. */
static int logit_rows(const sd_seq *s) {
    int vocab = s->m->hp.vocab;
    long rows = (long)(SD_LOGITS_FLOATS / (unsigned)vocab);
    if (rows < 1) rows = 1;
    if (rows > s->max_batch) rows = s->max_batch;
    return (int)rows;
}

static void release_scratch(sd_seq *s) {
    sd_backend *be = s->m->be;
    float **bufs[] = {&s->x, &s->xb, &s->q, &s->k, &s->v, &s->att, &s->hb, &s->hb2, &s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->release(be, *bufs[i]);
        *bufs[i] = NULL;
    }
}

static int alloc_scratch(sd_seq *s, sd_err *err) {
    const sd_hparams *hp = &s->m->hp;
    sd_backend *be = s->m->be;
    size_t mb = (size_t)s->max_batch;
    struct { float **p; size_t n; } want[] = {
        {&s->x, mb * hp->dim},       {&s->xb, mb * hp->dim},      {&s->q, mb * q_width(hp)},
        {&s->k, mb * kv_width(hp)},  {&s->v, mb * kv_width(hp)},  {&s->att, mb * q_width(hp)},
        {&s->hb, mb * hp->ffn},      {&s->hb2, mb * hp->ffn},
        {&s->logits, (size_t)logit_rows(s) * hp->vocab},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        *want[i].p = be->alloc(be, want[i].n, err);
        if (!*want[i].p) return sd_err_prefix(err, "sequence scratch (%zu floats)", want[i].n);
    }
    return 0;
}

int sd_seq_new(sd_model *m, int ctx, int n_layers, sd_seq **out, sd_err *err) {
    *out = NULL;
    const sd_hparams *hp = &m->hp;
    if (ctx <= 0) ctx = hp->ctx;
    if (ctx <= 0) return sd_errf(err, "%s: context length %d is not positive", m->path ? m->path : "model", ctx);
    if (n_layers <= 0) n_layers = hp->n_layers;
    if (n_layers > hp->n_layers)
        return sd_errf(err, "sequence asks for %d layers but the model has %d", n_layers, hp->n_layers);
    sd_seq *s = calloc(1, sizeof *s);
    if (!s) return sd_errf(err, "out of memory (sequence)");
    s->m = m;
    s->n_layers = n_layers;
    s->ctx = ctx;
    s->max_batch = ctx < SD_MAX_BATCH ? ctx : SD_MAX_BATCH;
    if (m->be->kv_alloc(m->be, &s->kv, n_layers, ctx, kv_width(hp), err) != 0) {
        free(s);
        return sd_err_prefix(err, "KV cache (%d layers x %d positions)", n_layers, ctx);
    }
    if (alloc_scratch(s, err) != 0) {
        sd_seq_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void sd_seq_free(sd_seq *s) {
    if (!s) return;
    release_scratch(s);
    free(s->host_rows);
    if (s->kv.k || s->kv.v) s->m->be->kv_free(s->m->be, &s->kv);
    free(s);
}

/* Positions >= pos are simply forgotten: kv_store always writes a position before attention reads it,
 * and attention reads only positions < pos0 + n, so stale entries can never influence a later result. */
void sd_seq_truncate(sd_seq *s, int pos) {
    if (pos < 0) pos = 0;
    if (pos < s->pos) s->pos = pos;
}

/* Attention block of one layer for n rows of s->x at positions [pos0, pos0+n); adds into s->x. */
static void attention_block(sd_seq *s, int l, int pos0, int n) {
    const sd_model *m = s->m;
    const sd_hparams *hp = &m->hp;
    const sd_layer *L = &m->layers[l];
    sd_backend *be = m->be;

    be->rmsnorm(be, s->xb, s->x, &L->attn_norm, n, hp->dim, hp->eps);
    be->matmul(be, s->q, &L->wq, s->xb, n);
    be->matmul(be, s->k, &L->wk, s->xb, n);
    be->matmul(be, s->v, &L->wv, s->xb, n);
    if (L->bq.rows) be->add_bias(be, s->q, &L->bq, n);
    if (L->bk.rows) be->add_bias(be, s->k, &L->bk, n);
    if (L->bv.rows) be->add_bias(be, s->v, &L->bv, n);
    /* qwen3: RMSNorm of each head vector; [n][heads*hd] is [n*heads][hd] row-major. */
    if (L->q_norm.rows) be->rmsnorm(be, s->q, s->q, &L->q_norm, n * hp->n_heads, hp->head_dim, hp->eps);
    if (L->k_norm.rows) be->rmsnorm(be, s->k, s->k, &L->k_norm, n * hp->n_kv_heads, hp->head_dim, hp->eps);
    be->rope(be, s->q, n, hp->n_heads, hp->head_dim, hp->n_rot, pos0, m->rope_inv_freq, hp->rope_neox);
    be->rope(be, s->k, n, hp->n_kv_heads, hp->head_dim, hp->n_rot, pos0, m->rope_inv_freq, hp->rope_neox);
    be->kv_store(be, &s->kv, l, pos0, n, s->k, s->v);
    be->attention(be, s->att, s->q, &s->kv, l, pos0, n, hp->n_heads, hp->n_kv_heads, hp->head_dim);
    be->matmul(be, s->xb, &L->wo, s->att, n);
    be->add(be, s->x, s->xb, (size_t)n * hp->dim);
}

/* SwiGLU feed-forward block of one layer for n rows of s->x; adds into s->x. */
static void ffn_block(sd_seq *s, int l, int n) {
    const sd_model *m = s->m;
    const sd_hparams *hp = &m->hp;
    const sd_layer *L = &m->layers[l];
    sd_backend *be = m->be;

    be->rmsnorm(be, s->xb, s->x, &L->ffn_norm, n, hp->dim, hp->eps);
    be->matmul(be, s->hb, &L->w_gate, s->xb, n);
    be->matmul(be, s->hb2, &L->w_up, s->xb, n);
    be->swiglu(be, s->hb, s->hb, s->hb2, (size_t)n * hp->ffn);
    be->matmul(be, s->xb, &L->w_down, s->hb, n);
    be->add(be, s->x, s->xb, (size_t)n * hp->dim);
}

/* Final norm and classifier for the last `rows` rows of the chunk, into s->logits (rows fit the scratch). */
static void classify_rows(sd_seq *s, int n, int rows) {
    const sd_model *m = s->m;
    const sd_hparams *hp = &m->hp;
    sd_backend *be = m->be;
    be->rmsnorm(be, s->xb, s->x + (size_t)(n - rows) * hp->dim, &m->out_norm, rows, hp->dim, hp->eps);
    be->matmul(be, s->logits, &m->output, s->xb, rows);
}

/* Where a forward call's results go: logits rows to host memory, only each row's argmax id, or nowhere
 * (keep: they stay in s->logits for the caller to sample on the backend). */
typedef struct fwd_out {
    float *logits;
    int32_t *ids;
    bool keep;
} fwd_out;

/* Delivers `rows` rows of s->logits to out (at row offset r). */
static int deliver(sd_seq *s, int rows, fwd_out out, size_t r, sd_err *err) {
    sd_backend *be = s->m->be;
    size_t vocab = (size_t)s->m->hp.vocab;
    if (out.keep) return sd_backend_check(be, err);
    if (out.logits) {
        be->to_host(be, out.logits + r * vocab, s->logits, (size_t)rows * vocab);
        return sd_backend_check(be, err);
    }
    if (be->argmax_rows) {
        be->argmax_rows(be, out.ids + r, s->logits, rows, (int)vocab);
        return sd_backend_check(be, err);
    }
    if (!s->host_rows && !(s->host_rows = malloc(sizeof(float) * vocab * (size_t)logit_rows(s))))
        return sd_errf(err, "out of memory (host logits)");
    be->to_host(be, s->host_rows, s->logits, (size_t)rows * vocab);
    if (sd_backend_check(be, err)) return -1;
    for (int i = 0; i < rows; i++) {
        const float *row = s->host_rows + (size_t)i * vocab;
        int32_t best = 0;
        for (int32_t v = 1; v < (int32_t)vocab; v++)
            if (sd_argmax_prefers(row[v], v, row[best], best)) best = v;
        out.ids[r + (size_t)i] = best;
    }
    return 0;
}

/* All n rows when they do not fit the logits scratch at once: the classifier in slices. */
static int classify_sliced(sd_seq *s, int n, fwd_out out, sd_err *err) {
    const sd_model *m = s->m;
    const sd_hparams *hp = &m->hp;
    sd_backend *be = m->be;
    be->rmsnorm(be, s->xb, s->x, &m->out_norm, n, hp->dim, hp->eps);
    int step = logit_rows(s);
    for (int r = 0; r < n; r += step) {
        int rows = n - r < step ? n - r : step;
        be->matmul(be, s->logits, &m->output, s->xb + (size_t)r * hp->dim, rows);
        if (deliver(s, rows, out, (size_t)r, err)) return -1;
    }
    return 0;
}

/* The backend work of one chunk, up to `rows` rows of logits in s->logits (0: none). */
static void chunk_ops(sd_seq *s, const int32_t *tokens, int n, int pos0, int rows) {
    sd_backend *be = s->m->be;
    be->embed(be, s->x, &s->m->tok_embd, tokens, n);
    for (int l = 0; l < s->n_layers; l++) {
        attention_block(s, l, pos0, n);
        ffn_block(s, l, n);
    }
    if (rows) classify_rows(s, n, rows);
}

/* Runs chunk_ops, through a backend step graph when the backend has them: a decode or verify step issues
 * the same ops on the same buffers every time (only tokens and pos0 differ), so the backend can record it
 * once and replay it, which matters for a small draft model whose steps are dominated by launch costs.
 * The key names everything that shapes the ops. */
static void run_chunk(sd_seq *s, const int32_t *tokens, int n, int pos0, int rows) {
    sd_backend *be = s->m->be;
    if (!be->graph_begin) {
        chunk_ops(s, tokens, n, pos0, rows);
        return;
    }
    const uint64_t key[] = {
        (uintptr_t)s,        (uintptr_t)s->m,     (uintptr_t)s->m->layers, (uintptr_t)s->x,
        (uintptr_t)s->xb,    (uintptr_t)s->q,     (uintptr_t)s->k,         (uintptr_t)s->v,
        (uintptr_t)s->att,   (uintptr_t)s->hb,    (uintptr_t)s->hb2,       (uintptr_t)s->logits,
        (uintptr_t)s->kv.k,  (uintptr_t)s->kv.v,  (uint64_t)n,             (uint64_t)rows,
        (uint64_t)s->n_layers, (uint64_t)s->kv.ctx, /* attention plans its grid from the capacity */
    };
    if (be->graph_begin(be, key, (int)(sizeof key / sizeof key[0]), tokens, n, pos0)) return;
    chunk_ops(s, tokens, n, pos0, rows);
    if (be->graph_end && be->graph_end(be) != 0) chunk_ops(s, tokens, n, pos0, rows);
}

/* One chunk of at most max_batch tokens at positions [s->pos, s->pos+n). */
static int forward_chunk(sd_seq *s, const int32_t *tokens, int n, bool all, bool want, fwd_out out, sd_err *err) {
    int rows = !want ? 0 : !all ? 1 : n <= logit_rows(s) ? n : 0;
    run_chunk(s, tokens, n, s->pos, rows);
    s->pos += n;
    if (rows) return deliver(s, rows, out, 0, err);
    return want ? classify_sliced(s, n, out, err) : 0;
}

static int forward(sd_seq *s, const int32_t *tokens, int n, bool all, fwd_out out, sd_err *err) {
    const sd_hparams *hp = &s->m->hp;
    if (n <= 0) return sd_errf(err, "forward: no tokens (n = %d)", n);
    if (!tokens || (!out.logits && !out.ids && !out.keep)) return sd_errf(err, "forward: NULL tokens or output buffer");
    if (out.keep && all && n > logit_rows(s))
        return sd_errf(err, "forward: %d rows of logits do not fit the sequence's %d", n, logit_rows(s));
    if (n > s->ctx - s->pos)
        return sd_errf(err, "context overflow: %d positions held + %d new > context length %d", s->pos, n,
                       s->ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->vocab)
            return sd_errf(err, "forward: token id %d at index %d is outside the vocabulary (%d tokens)",
                           (int)tokens[i], i, hp->vocab);
    for (int done = 0; done < n;) {
        int c = n - done < s->max_batch ? n - done : s->max_batch;
        bool last = done + c == n;
        fwd_out o = out;
        if (all && o.logits) o.logits += (size_t)done * hp->vocab;
        if (all && o.ids) o.ids += done;
        if (forward_chunk(s, tokens + done, c, all, all || last, o, err)) return -1;
        done += c;
    }
    return 0;
}

int sd_forward(sd_seq *s, const int32_t *tokens, int n, bool all_logits, float *logits, sd_err *err) {
    return forward(s, tokens, n, all_logits, (fwd_out){.logits = logits}, err);
}

int sd_forward_greedy(sd_seq *s, const int32_t *tokens, int n, bool all, int32_t *ids, sd_err *err) {
    return forward(s, tokens, n, all, (fwd_out){.ids = ids}, err);
}

int sd_forward_keep(sd_seq *s, const int32_t *tokens, int n, bool all, const float **logits, sd_err *err) {
    if (forward(s, tokens, n, all, (fwd_out){.keep = true}, err)) return -1;
    *logits = s->logits;
    return 0;
}

int sd_seq_logit_rows(const sd_seq *s) { return logit_rows(s); }
