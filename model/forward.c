/* The transformer forward pass over a batch of rows (llama, qwen2, qwen3), written only against the
 * backend interface. A batch holds rows of any number of sequences of one model: every weight matrix is
 * read once per internal pass for all of its rows (the matmul takes n rows), while RoPE, the KV store
 * and attention run per *span* (consecutive rows of one sequence) against that sequence's own cache.
 * Each row's result is therefore what its sequence alone would compute. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "model/model_internal.h"

/* Rows one internal pass takes by default. The workspace is the model's (shared by all its sequences),
 * sized for this many rows: 128 keeps prefill matrix-matrix products efficient (weights are read once
 * per 128 tokens) at about 24 MB for an 8B model. Longer batches run in passes of this many rows. */
#define SD_MAX_BATCH 128
/* Cap on each logits buffer (floats, 16 MB): with a 150k vocabulary that is 27 rows, more than a
 * verification block needs; more delivered rows compute the classifier in slices. */
#define SD_LOGITS_FLOATS (4u << 20)

/* The model's forward workspace (backend memory unless noted). */
struct sd_fwd_ws {
    int rows;        /* capacity of one pass */
    int logit_rows;  /* rows of each logits buffer */
    float *x, *xb;   /* [rows][dim] */
    float *q, *att;  /* [rows][n_heads*head_dim] */
    float *k, *v;    /* [rows][n_kv_heads*head_dim] */
    float *hb, *hb2; /* [rows][ffn] */
    float *logits;   /* [logit_rows][vocab]: rows on their way to the host */
    float *kept;     /* [logit_rows][vocab]: SD_OUT_KEEP rows, valid until the model's next forward */
    float *host_rows;/* host [logit_rows][vocab], for argmax on backends without argmax_rows (lazy) */
    int32_t *tokens; /* host [rows] */
    int32_t *ids;    /* host [logit_rows] */
    int *order;      /* host [rows]: output rows of a pass, kept ones first */
    sd_kv_span *spans; /* host [rows]: the pass's spans (consecutive rows of one sequence) */
    int n_spans;
};

static int q_width(const sd_hparams *hp) { return hp->n_heads * hp->head_dim; }
static int kv_width(const sd_hparams *hp) { return hp->n_kv_heads * hp->head_dim; }

static int logit_rows_for(const sd_model *m, int rows) {
    long r = (long)(SD_LOGITS_FLOATS / (unsigned)m->hp.vocab);
    if (r < 1) r = 1;
    return r > rows ? rows : (int)r;
}

void sd_forward_ws_free(sd_model *m) {
    sd_fwd_ws *w = m->ws;
    if (!w) return;
    sd_backend *be = m->be;
    float *bufs[] = {w->x, w->xb, w->q, w->att, w->k, w->v, w->hb, w->hb2, w->logits, w->kept};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->release(be, bufs[i]);
    free(w->host_rows);
    free(w->tokens);
    free(w->ids);
    free(w->order);
    free(w->spans);
    free(w);
    m->ws = NULL;
}

/* The workspace for passes of m->batch_rows rows (SD_MAX_BATCH when unset), made on first use. */
static int ws_get(sd_model *m, sd_fwd_ws **out, sd_err *err) {
    int rows = m->batch_rows > 0 ? m->batch_rows : SD_MAX_BATCH;
    if (m->ws && m->ws->rows == rows) {
        *out = m->ws;
        return 0;
    }
    sd_forward_ws_free(m);
    const sd_hparams *hp = &m->hp;
    sd_backend *be = m->be;
    sd_fwd_ws *w = calloc(1, sizeof *w);
    if (!w) return sd_errf(err, "out of memory (forward workspace)");
    m->ws = w;
    w->rows = rows;
    w->logit_rows = logit_rows_for(m, rows);
    size_t r = (size_t)rows, lr = (size_t)w->logit_rows;
    struct { float **p; size_t n; } want[] = {
        {&w->x, r * hp->dim},       {&w->xb, r * hp->dim},      {&w->q, r * q_width(hp)},
        {&w->att, r * q_width(hp)}, {&w->k, r * kv_width(hp)},  {&w->v, r * kv_width(hp)},
        {&w->hb, r * hp->ffn},      {&w->hb2, r * hp->ffn},     {&w->logits, lr * hp->vocab},
        {&w->kept, lr * hp->vocab},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        *want[i].p = be->alloc(be, want[i].n, err);
        if (!*want[i].p) {
            sd_forward_ws_free(m);
            return sd_err_prefix(err, "forward workspace (%zu floats)", want[i].n);
        }
    }
    w->tokens = malloc(r * sizeof *w->tokens);
    w->ids = malloc(lr * sizeof *w->ids);
    w->order = malloc(r * sizeof *w->order);
    w->spans = malloc(r * sizeof *w->spans);
    if (!w->tokens || !w->ids || !w->order || !w->spans) {
        sd_forward_ws_free(m);
        return sd_errf(err, "out of memory (forward workspace)");
    }
    *out = w;
    return 0;
}

size_t sd_model_kv_bytes_per_token(const sd_model *m, int n_layers) {
    return 2 * (size_t)n_layers * (size_t)kv_width(&m->hp) * sd_dtype_block_bytes(m->kv_type);
}

int sd_seq_new(sd_model *m, int ctx, int n_layers, sd_seq **out, sd_err *err) {
    *out = NULL;
    const sd_hparams *hp = &m->hp;
    if (!m->be) return sd_errf(err, "%s: loaded for description only; it cannot run", m->path ? m->path : "model");
    if (ctx <= 0) ctx = hp->ctx;
    if (ctx <= 0) return sd_errf(err, "%s: context length %d is not positive", m->path ? m->path : "model", ctx);
    if (n_layers <= 0) n_layers = hp->n_layers;
    if (n_layers > hp->n_layers)
        return sd_errf(err, "sequence asks for %d layers but the model has %d", n_layers, hp->n_layers);
    if (!m->kv && sd_model_kv_init(m, 0, err)) return -1;
    sd_seq *s = calloc(1, sizeof *s);
    size_t n_table = ((size_t)ctx + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
    if (!s || !(s->table = malloc(n_table * sizeof *s->table)) || !(s->keys = malloc(n_table * sizeof *s->keys))) {
        if (s) free(s->table);
        free(s);
        return sd_errf(err, "out of memory (sequence of %d positions)", ctx);
    }
    s->m = m;
    s->n_layers = n_layers;
    s->ctx = ctx;
    *out = s;
    return 0;
}

void sd_seq_free(sd_seq *s) {
    if (!s) return;
    sd_seq_release(s, 0);
    free(s->table);
    free(s->keys);
    free(s);
}

/* Positions >= pos are forgotten and their blocks go back to the pool: kv_store always writes a position
 * before attention reads it, and attention reads only positions up to its row's, so stale entries (in a
 * kept partial block) can never influence a later result. */
void sd_seq_truncate(sd_seq *s, int pos) {
    if (pos < 0) pos = 0;
    if (pos < s->pos) s->pos = pos;
    s->pos = sd_seq_uncache(s, s->pos);
    sd_seq_release(s, s->pos);
}

/* ---------------------------------------------------------------- one pass */

/* One internal pass: rows[0..n) (n <= ws->rows), of which n_keep kept and n_host delivered outputs;
 * w->order lists the output rows' indices, kept ones first; keep0 is the kept buffer row of the first. */
typedef struct pass {
    sd_model *m;
    sd_fwd_ws *w;
    const sd_row *rows;
    int n, n_layers;
    int n_keep, n_host, keep0;
} pass;

/* Length of the span (consecutive rows of one sequence) starting at row i. */
static int span_len(const pass *p, int i) {
    int j = i + 1;
    while (j < p->n && p->rows[j].seq == p->rows[i].seq) j++;
    return j - i;
}

/* x += y, then out = rmsnorm(x) with w over the pass's rows: one op where the backend fuses them. */
static void add_norm(const pass *p, float *out, const float *y, const sd_tensor *w) {
    const sd_hparams *hp = &p->m->hp;
    sd_backend *be = p->m->be;
    if (be->add_rmsnorm) {
        be->add_rmsnorm(be, out, p->w->x, y, w, p->n, hp->dim, hp->eps);
        return;
    }
    be->add(be, p->w->x, y, (size_t)p->n * hp->dim);
    be->rmsnorm(be, out, p->w->x, w, p->n, hp->dim, hp->eps);
}

/* Attention block of one layer for the pass's rows of w->x (w->xb holds them normed with attn_norm); adds
 * into w->x and leaves it normed with ffn_norm in w->xb. */
static void attention_block(const pass *p, int l) {
    const sd_model *m = p->m;
    const sd_hparams *hp = &m->hp;
    const sd_layer *L = &m->layers[l];
    sd_backend *be = m->be;
    sd_fwd_ws *w = p->w;
    int n = p->n;

    be->matmul(be, w->q, &L->wq, w->xb, n);
    be->matmul(be, w->k, &L->wk, w->xb, n);
    be->matmul(be, w->v, &L->wv, w->xb, n);
    if (L->bq.rows) be->add_bias(be, w->q, &L->bq, n);
    if (L->bk.rows) be->add_bias(be, w->k, &L->bk, n);
    if (L->bv.rows) be->add_bias(be, w->v, &L->bv, n);
    /* qwen3: RMSNorm of each head vector; [n][heads*hd] is [n*heads][hd] row-major. */
    if (L->q_norm.rows) be->rmsnorm(be, w->q, w->q, &L->q_norm, n * hp->n_heads, hp->head_dim, hp->eps);
    if (L->k_norm.rows) be->rmsnorm(be, w->k, w->k, &L->k_norm, n * hp->n_kv_heads, hp->head_dim, hp->eps);
    /* every row at its sequence's position (the spans) */
    be->rope(be, w->q, n, hp->n_heads, hp->head_dim, hp->n_rot, SD_POS_SPANS, m->rope_inv_freq, hp->rope_neox);
    be->rope(be, w->k, n, hp->n_kv_heads, hp->head_dim, hp->n_rot, SD_POS_SPANS, m->rope_inv_freq, hp->rope_neox);
    sd_kv_mem *kv = sd_kv_pool_mem(m, p->n_layers);
    be->kv_store(be, kv, l, w->k, w->v); /* every row at its sequence's position (the spans) */
    be->attention(be, w->att, w->q, kv, l, hp->n_heads, hp->n_kv_heads, hp->head_dim);
    be->matmul(be, w->xb, &L->wo, w->att, n);
    add_norm(p, w->xb, w->xb, &L->ffn_norm);
}

/* SwiGLU feed-forward block of one layer for the pass's rows of w->x (w->xb holds them normed with
 * ffn_norm); adds into w->x, and leaves it normed with the next layer's attn_norm in w->xb. */
static void ffn_block(const pass *p, int l) {
    const sd_hparams *hp = &p->m->hp;
    const sd_layer *L = &p->m->layers[l];
    sd_backend *be = p->m->be;
    sd_fwd_ws *w = p->w;
    int n = p->n;

    be->matmul(be, w->hb, &L->w_gate, w->xb, n);
    be->matmul(be, w->hb2, &L->w_up, w->xb, n);
    be->swiglu(be, w->hb, w->hb, w->hb2, (size_t)n * hp->ffn);
    be->matmul(be, w->xb, &L->w_down, w->hb, n);
    if (l + 1 < p->n_layers) add_norm(p, w->xb, w->xb, &p->m->layers[l + 1].attn_norm);
    else be->add(be, w->x, w->xb, (size_t)n * hp->dim); /* the classifier norms its rows itself */
}

/* Final norm of the output rows into w->xb in w->order (kept rows first), one rmsnorm per run of
 * consecutive rows; then the classifier of the kept rows into w->kept and of the first `host` delivered
 * rows into w->logits. */
static void classify_ops(const pass *p, int host) {
    const sd_model *m = p->m;
    const sd_hparams *hp = &m->hp;
    sd_backend *be = m->be;
    sd_fwd_ws *w = p->w;
    int n_out = p->n_keep + p->n_host;
    for (int j = 0; j < n_out;) {
        int r = 1;
        while (j + r < n_out && w->order[j + r] == w->order[j] + r && j + r != p->n_keep) r++;
        be->rmsnorm(be, w->xb + (size_t)j * hp->dim, w->x + (size_t)w->order[j] * hp->dim, &m->out_norm, r, hp->dim,
                    hp->eps);
        j += r;
    }
    if (p->n_keep) be->matmul(be, w->kept + (size_t)p->keep0 * hp->vocab, &m->output, w->xb, p->n_keep);
    if (host) be->matmul(be, w->logits, &m->output, w->xb + (size_t)p->n_keep * hp->dim, host);
}

/* The backend work of one pass, with the classifier of the first `host` delivered rows. */
static void pass_ops(const pass *p, int host) {
    sd_backend *be = p->m->be;
    const sd_hparams *hp = &p->m->hp;
    be->embed(be, p->w->x, &p->m->tok_embd, p->w->tokens, p->n);
    be->rmsnorm(be, p->w->xb, p->w->x, &p->m->layers[0].attn_norm, p->n, hp->dim, hp->eps);
    for (int l = 0; l < p->n_layers; l++) {
        attention_block(p, l);
        ffn_block(p, l);
    }
    classify_ops(p, host);
}

/* True when the output rows are one run of consecutive rows of one kind (a decode step's last row, a
 * verify block's rows): then order[0], n_keep and n_host say which rows the classifier reads. */
static bool one_run(const pass *p) {
    if (p->n_keep && p->n_host) return false;
    for (int j = 1; j < p->n_keep + p->n_host; j++)
        if (p->w->order[j] != p->w->order[0] + j) return false;
    return true;
}

/* Runs pass_ops, through a backend step graph when the backend has them and the pass has one run of
 * outputs: a decode or verify step, or a batch of them, issues the same ops on the same buffers every
 * time (only tokens and positions differ, and the ops read those from the backend's step state and
 * spans), so the backend records it once per shape and replays it, which matters for a small draft model
 * whose steps are dominated by launch costs. The key names everything that shapes the ops; not the
 * sequences (their positions and tables are the spans'), so sessions share a graph per shape. */
static void run_pass(const pass *p, int host) {
    sd_backend *be = p->m->be;
    const sd_row *r0 = &p->rows[0];
    const sd_kv_mem *kv = sd_kv_pool_mem(p->m, p->n_layers);
    if (!be->graph_begin || !one_run(p)) {
        pass_ops(p, host);
        return;
    }
    const sd_fwd_ws *w = p->w;
    int cap = 0; /* attention plans its grid from the largest capacity */
    for (int i = 0; i < w->n_spans; i++) cap = w->spans[i].cap > cap ? w->spans[i].cap : cap;
    const uint64_t key[] = {
        (uint64_t)cap,        (uintptr_t)p->m,       (uintptr_t)p->m->layers, (uintptr_t)w->x,
        (uintptr_t)w->xb,     (uintptr_t)w->q,       (uintptr_t)w->k,         (uintptr_t)w->v,
        (uintptr_t)w->att,    (uintptr_t)w->hb,      (uintptr_t)w->hb2,       (uintptr_t)w->logits,
        (uintptr_t)w->kept,   (uintptr_t)kv->k,     (uintptr_t)kv->v,      (uint64_t)p->n,
        (uint64_t)p->n_layers,
        (uint64_t)p->n_keep,  (uint64_t)p->keep0,    (uint64_t)host,
        (uint64_t)(p->n_keep + p->n_host ? w->order[0] : -1),
    };
    if (be->graph_begin(be, key, (int)(sizeof key / sizeof key[0]), w->tokens, p->n, r0->pos)) return;
    pass_ops(p, host);
    if (be->graph_end && be->graph_end(be) != 0) pass_ops(p, host);
}

/* The backends' argmax rule (lowest index on ties), on the host. */
static int32_t host_argmax(const float *row, int32_t n) {
    int32_t best = 0;
    for (int32_t v = 1; v < n; v++)
        if (sd_argmax_prefers(row[v], v, row[best], best)) best = v;
    return best;
}

/* Hands `rows` rows of w->logits (the delivered outputs from number `off` on) to their rows. */
static int deliver(const pass *p, int off, int rows, sd_err *err) {
    sd_backend *be = p->m->be;
    sd_fwd_ws *w = p->w;
    size_t vocab = (size_t)p->m->hp.vocab;
    const int *ord = w->order + p->n_keep + off;
    for (int j = 0; j < rows;) {
        const sd_row *r = &p->rows[ord[j]];
        if (r->out == SD_OUT_LOGITS) {
            be->to_host(be, r->logits, w->logits + (size_t)j * vocab, vocab);
            j++;
            continue;
        }
        int c = 1; /* a run of argmax rows: one call */
        while (j + c < rows && p->rows[ord[j + c]].out == SD_OUT_ARGMAX) c++;
        if (be->argmax_rows) {
            be->argmax_rows(be, w->ids, w->logits + (size_t)j * vocab, c, (int)vocab);
        } else {
            if (!w->host_rows && !(w->host_rows = malloc(sizeof(float) * vocab * (size_t)w->logit_rows)))
                return sd_errf(err, "out of memory (host logits)");
            be->to_host(be, w->host_rows, w->logits + (size_t)j * vocab, (size_t)c * vocab);
            for (int i = 0; i < c; i++) w->ids[i] = host_argmax(w->host_rows + (size_t)i * vocab, (int32_t)vocab);
        }
        for (int i = 0; i < c; i++) *p->rows[ord[j + i]].id = w->ids[i];
        j += c;
    }
    return sd_backend_check(be, err);
}

/* One pass over rows[0..n): the model, the classifier, the outputs. keep0: kept rows before this pass. */
static int forward_pass(sd_model *m, sd_fwd_ws *w, const sd_row *rows, int n, int n_layers, int keep0, sd_err *err) {
    pass p = {.m = m, .w = w, .rows = rows, .n = n, .n_layers = n_layers, .keep0 = keep0};
    for (int i = 0; i < n; i++) {
        w->tokens[i] = rows[i].token;
        if (rows[i].out == SD_OUT_KEEP) w->order[p.n_keep++] = i;
    }
    for (int i = 0; i < n; i++)
        if (rows[i].out == SD_OUT_LOGITS || rows[i].out == SD_OUT_ARGMAX) w->order[p.n_keep + p.n_host++] = i;
    int host = p.n_host < w->logit_rows ? p.n_host : w->logit_rows;
    w->n_spans = 0;
    for (int i = 0; i < n;) {
        int c = span_len(&p, i);
        w->spans[w->n_spans++] = (sd_kv_span){.row = i, .n = c, .pos0 = rows[i].pos, .cap = rows[i].seq->ctx,
                                              .table = rows[i].seq->table};
        i += c;
    }
    m->be->kv_spans(m->be, w->spans, w->n_spans, n); /* outside a step graph: its tables change */
    run_pass(&p, host);
    for (int i = 0; i < n; i++) {
        rows[i].seq->pos = rows[i].pos + 1;
        if (rows[i].out == SD_OUT_KEEP) *rows[i].kept = w->kept + (size_t)(keep0++) * m->hp.vocab;
    }
    if (host && deliver(&p, 0, host, err)) return -1;
    for (int off = host; off < p.n_host; off += w->logit_rows) { /* more delivered rows than the buffer */
        int c = p.n_host - off < w->logit_rows ? p.n_host - off : w->logit_rows;
        m->be->matmul(m->be, w->logits, &m->output, w->xb + (size_t)(p.n_keep + off) * m->hp.dim, c);
        if (deliver(&p, off, c, err)) return -1;
    }
    return sd_backend_check(m->be, err);
}

/* ---------------------------------------------------------------- the batch */

/* The position row i must have: one past its sequence's previous row in the batch, else seq->pos. */
static int expected_pos(const sd_row *rows, int i) {
    for (int j = i - 1; j >= 0; j--)
        if (rows[j].seq == rows[i].seq) return rows[j].pos + 1;
    return rows[i].seq->pos;
}

static int check_batch(const sd_model *m, const sd_row *rows, int n, int *n_keep, sd_err *err) {
    if (n <= 0 || !rows) return sd_errf(err, "forward: empty batch (%d rows)", n);
    *n_keep = 0;
    for (int i = 0; i < n; i++) {
        const sd_row *r = &rows[i];
        if (!r->seq || r->seq->m != m) return sd_errf(err, "forward: row %d belongs to another model", i);
        if (r->seq->n_layers != rows[0].seq->n_layers)
            return sd_errf(err, "forward: row %d runs %d layers, row 0 %d (one batch, one depth)", i,
                           r->seq->n_layers, rows[0].seq->n_layers);
        if (r->token < 0 || r->token >= m->hp.vocab)
            return sd_errf(err, "forward: token id %d at index %d is outside the vocabulary (%d tokens)",
                           (int)r->token, i, m->hp.vocab);
        int want = expected_pos(rows, i);
        if (r->pos != want)
            return sd_errf(err, "forward: row %d is at position %d but its sequence continues at %d", i, r->pos,
                           want);
        if (r->pos >= r->seq->ctx)
            return sd_errf(err, "context overflow: %d positions held + %d new > context length %d", r->seq->pos,
                           r->pos - r->seq->pos + 1, r->seq->ctx);
        bool ok = r->out == SD_OUT_NONE || (r->out == SD_OUT_LOGITS && r->logits) ||
                  (r->out == SD_OUT_ARGMAX && r->id) || (r->out == SD_OUT_KEEP && r->kept);
        if (!ok) return sd_errf(err, "forward: row %d wants output %d but gives no place for it", i, (int)r->out);
        *n_keep += r->out == SD_OUT_KEEP;
    }
    return 0;
}

/* The blocks every sequence's rows need, all or none (on failure each keeps the blocks of its pos). */
static int reserve_blocks(const sd_row *rows, int n, sd_err *err) {
    for (int i = 0; i < n; i++) {
        if (i + 1 < n && rows[i + 1].seq == rows[i].seq) continue; /* a span's last row */
        if (sd_seq_reserve(rows[i].seq, rows[i].pos + 1, err)) {
            for (int j = 0; j < i; j++) sd_seq_release(rows[j].seq, rows[j].seq->pos);
            return -1;
        }
    }
    return 0;
}

int sd_forward_batch(sd_model *m, const sd_row *rows, int n, sd_err *err) {
    int n_keep = 0;
    sd_fwd_ws *w = NULL;
    if (check_batch(m, rows, n, &n_keep, err) || ws_get(m, &w, err)) return -1;
    if (n_keep > w->logit_rows)
        return sd_errf(err, "forward: %d rows of logits to keep do not fit the model's %d", n_keep, w->logit_rows);
    if (reserve_blocks(rows, n, err)) return -1;
    int keep0 = 0;
    for (int done = 0; done < n;) {
        int c = n - done < w->rows ? n - done : w->rows;
        if (forward_pass(m, w, rows + done, c, rows[0].seq->n_layers, keep0, err)) return -1;
        for (int i = done; i < done + c; i++) keep0 += rows[i].out == SD_OUT_KEEP;
        done += c;
    }
    return 0;
}

int sd_model_keep_rows(sd_model *m) {
    int rows = m->batch_rows > 0 ? m->batch_rows : SD_MAX_BATCH;
    return logit_rows_for(m, rows);
}

/* ---------------------------------------------------------------- one sequence */

/* A one-sequence batch: n tokens from s->pos, output like `proto` on every row (all) or the last;
 * logit rows `logit_stride` floats apart, ids consecutive. */
static int forward_seq(sd_seq *s, const int32_t *tokens, int n, bool all, sd_row proto, size_t logit_stride,
                       sd_err *err) {
    if (n <= 0) return sd_errf(err, "forward: no tokens (n = %d)", n);
    if (!tokens) return sd_errf(err, "forward: NULL tokens");
    if (n > s->ctx - s->pos)
        return sd_errf(err, "context overflow: %d positions held + %d new > context length %d", s->pos, n, s->ctx);
    sd_row *rows = malloc((size_t)n * sizeof *rows);
    if (!rows) return sd_errf(err, "out of memory (%d batch rows)", n);
    int out_i = 0;
    for (int i = 0; i < n; i++) {
        bool want = all || i == n - 1;
        rows[i] = (sd_row){.seq = s, .token = tokens[i], .pos = s->pos + i, .out = want ? proto.out : SD_OUT_NONE};
        if (!want) continue;
        if (proto.logits) rows[i].logits = proto.logits + (size_t)out_i * logit_stride;
        if (proto.id) rows[i].id = proto.id + out_i;
        rows[i].kept = proto.kept;
        out_i++;
    }
    int rc = sd_forward_batch(s->m, rows, n, err);
    free(rows);
    return rc;
}

int sd_forward(sd_seq *s, const int32_t *tokens, int n, bool all_logits, float *logits, sd_err *err) {
    if (!logits) return sd_errf(err, "forward: NULL output buffer");
    sd_row p = {.out = SD_OUT_LOGITS, .logits = logits};
    return forward_seq(s, tokens, n, all_logits, p, (size_t)s->m->hp.vocab, err);
}

int sd_forward_greedy(sd_seq *s, const int32_t *tokens, int n, bool all, int32_t *ids, sd_err *err) {
    if (!ids) return sd_errf(err, "forward: NULL output buffer");
    return forward_seq(s, tokens, n, all, (sd_row){.out = SD_OUT_ARGMAX, .id = ids}, 0, err);
}

int sd_forward_keep(sd_seq *s, const int32_t *tokens, int n, bool all, const float **logits, sd_err *err) {
    const float *last = NULL; /* every kept row writes it: the last one stays */
    if (forward_seq(s, tokens, n, all, (sd_row){.out = SD_OUT_KEEP, .kept = &last}, 0, err)) return -1;
    /* the kept rows of one batch are consecutive in the kept buffer */
    *logits = all ? last - (size_t)(n - 1) * s->m->hp.vocab : last;
    return 0;
}
