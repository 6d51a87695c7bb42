/* The daemon (docs/protocol.md): two threads. The socket thread (daemon/front.c) owns the ROUTER socket
 * and answers what needs no engine; the engine thread (this file) owns the engine and the scheduler. Each
 * turn it takes what the socket thread handed over (requests, cancels, vanished clients), then advances
 * every running request one step in one forward batch, and hands the replies back. */
#include "daemon/server.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "daemon/front.h"
#include "daemon/zap.h"
#include "ipc/curve.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/srv.h"
#include "daemon/scheduler.h"
#include "daemon/stats.h"
#include "ipc/protocol.h"
#include "ipc/transport.h"
#include "base/clock.h"


/* ------------------------------------------------------------------ sending */

/* The socket thread says client rid vanished or stopped reading: its requests end at the next safe point. */
static void mark_gone(srv *S, const unsigned char *rid, int rid_len, const char *why) {
    int n = 0;
    sd_sched *sc = &S->sched;
    for (int i = 0; i < sc->max_active; i++) {
        sd_dreq *r = sc->active[i];
        if (r && !r->gone && r->from.rid_len == rid_len && !memcmp(r->from.rid, rid, (size_t)rid_len)) { r->gone = true; n++; }
    }
    for (sd_dreq *r = sc->q_head; r; r = r->next)
        if (!r->gone && r->from.rid_len == rid_len && !memcmp(r->from.rid, rid, (size_t)rid_len)) { r->gone = true; n++; }
    if (n) {
        char hex[40];
        sd_log_rid(rid, rid_len, hex, sizeof hex);
    }
}

/* No reply may exceed the message limit (clients set it as ZMQ_MAXMSGSIZE and would drop the
 * connection): an answer that would is replaced by an error reply for its request. */
static void cap_reply(srv *S, const sd_peer *to, uint64_t id) {
    if (S->sb.size <= SD_PROTO_MAX_MSG_BYTES) return;
    char msg[256];
    snprintf(msg, sizeof msg, "the reply would be %zu bytes, above the %u-byte message limit: ask for less "
             "(fewer ids, a shorter text, or stream)", S->sb.size, SD_PROTO_MAX_MSG_BYTES);
    sd_log(SD_LOG_WARN, "request %llu: %s", (unsigned long long)id, msg);
    sd_board_update(S->board, to->tenant, sd_board_count_error, NULL);
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_error(&S->sb, true, id, SD_E_REPLY_TOO_LARGE, NULL, msg);
}

void srv_post(srv *S, const sd_peer *to, uint64_t id, bool final) {
    cap_reply(S, to, id);
    if (sd_link_send_down(S->link, SD_LINK_REPLY, to->rid, to->rid_len, id, final, &S->sb))
        sd_log(SD_LOG_ERROR, "request %llu: the link to the socket thread failed", (unsigned long long)id);
}

/* The request ended without a reply (its client is gone). */
static void post_end(srv *S, const sd_peer *to, uint64_t id) {
    sd_link_send_down(S->link, SD_LINK_END, to->rid, to->rid_len, id, true, NULL);
}

void srv_error(srv *S, const sd_peer *to, bool has_id, uint64_t id, const char *code, const char *field,
               const char *msg) {
    sd_board_update(S->board, to->tenant, sd_board_count_error, NULL);
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_error(&S->sb, has_id, id, code, field, msg);
    char hex[40];
    sd_log_rid(to->rid, to->rid_len, hex, sizeof hex);
    srv_post(S, to, id, true);
}

/* The load figures `stats` and `busy` report, and the backend's health, for the socket thread. */
static void publish_load(srv *S) {
    sd_board *b = S->board;
    const sd_backend *be = S->e->be;
    sd_kv_use kv;
    sd_sched_kv_use(&S->sched, &kv);
    pthread_mutex_lock(&b->mu);
    b->kv = kv;
    b->active = S->sched.n_active;
    b->queued = S->sched.n_queued;
    b->pool = S->sched.n_pool;
    b->pool_busy = sd_sched_pool_busy(&S->sched);
    if (be && be->failed && !b->failed) {
        b->failed = true;
        snprintf(b->fail_msg, sizeof b->fail_msg, "%.*s", (int)sizeof b->fail_msg - 1, be->fail_msg);
    }
    pthread_mutex_unlock(&b->mu);
}

/* ------------------------------------------------------------------ request completion */

static sd_gen_mode_p used_mode(const srv *S, const sd_dreq *r) {
    return (S->e->proposer == SD_PROP_NONE || r->params.mode == SD_MODE_PLAIN) ? SD_PMODE_PLAIN : SD_PMODE_SPEC;
}

static void fill_done_stats(srv *S, sd_dreq *r, double now, sd_done_stats *d) {
    memset(d, 0, sizeof *d);
    sd_gen_stats gs;
    memset(&gs, 0, sizeof gs);
    if (r->gen) sd_gen_get_stats(r->gen, &gs);
    d->prompt_tokens = r->gen ? gs.prompt_tokens : r->n_prompt;
    d->prefilled = gs.prefilled;
    d->reused = gs.reused;
    d->preempted = gs.preempted;
    d->generated = gs.generated;
    d->drafted = gs.drafted;
    d->accepted = gs.accepted;
    d->target_passes = gs.target_passes;
    d->draft_k = gs.draft_k;
    d->acceptance = gs.drafted ? (double)gs.accepted / gs.drafted : 0.0;
    double start = r->t_start > 0 ? r->t_start : now;
    d->queue_ms = (start - r->t_arrive) * 1e3;
    d->ttft_ms = r->t_first > 0 ? (r->t_first - r->t_arrive) * 1e3 : 0.0;
    d->total_ms = (now - r->t_arrive) * 1e3;
    d->ms_per_token = (gs.generated > 1 && r->t_first > 0) ? (now - r->t_first) * 1e3 / (gs.generated - 1) : 0.0;
    d->mode = used_mode(S, r);
    d->seed = r->seed;
}

typedef struct done_rec {
    const sd_done_stats *d;
    const char *reason;
    bool first;             /* a first token was produced */
} done_rec;

static void count_done(sd_srv_stats *st, const void *arg) {
    const done_rec *x = arg;
    const sd_done_stats *d = x->d;
    if (!strcmp(x->reason, SD_FINISH_STR_CANCELLED)) st->cancelled++; else st->completed++;
    st->tok_prompt += (uint64_t)d->prompt_tokens;
    st->tok_prefilled += (uint64_t)d->prefilled;
    st->tok_reused += (uint64_t)d->reused;
    st->preemptions += (uint64_t)d->preempted;
    st->tok_generated += (uint64_t)d->generated;
    st->tok_drafted += (uint64_t)d->drafted;
    st->tok_accepted += (uint64_t)d->accepted;
    if (d->generated > 1 && d->target_passes > 0) {
        st->tok_decoded += (uint64_t)(d->generated - 1);
        st->target_passes += (uint64_t)d->target_passes;
    }
    if (d->generated > 1) sd_hist_add(&st->ms_per_token, d->ms_per_token);
    if (x->first) sd_hist_add(&st->ttft_ms, d->ttft_ms);
    sd_hist_add(&st->queue_ms, d->queue_ms);
    sd_hist_add(&st->total_ms, d->total_ms);
}

static void account(srv *S, const sd_dreq *r, const sd_done_stats *d, const char *reason) {
    done_rec x = {d, reason, r->t_first > 0};
    sd_board_update(S->board, r->from.tenant, count_done, &x);
    char hex[40];
    sd_log_rid(r->from.rid, r->from.rid_len, hex, sizeof hex);
    sd_log(SD_LOG_INFO, "req %s/%llu %s prompt=%d prefilled=%d reused=%d preempted=%d gen=%d accept=%.2f (%d/%d) ms/tok=%.2f ttft=%.1fms "
           "queue=%.1fms finish=%s", hex, (unsigned long long)r->id, d->mode == SD_PMODE_PLAIN ? "plain" : "spec",
           d->prompt_tokens, d->prefilled, d->reused, d->preempted, d->generated, d->acceptance, d->accepted, d->drafted, d->ms_per_token,
           d->ttft_ms, d->queue_ms, reason);
}

/* Sends whatever the token events have not carried yet (engine text held back until the end), so the
 * concatenated events always equal `done`. */
static void flush_stream(srv *S, sd_dreq *r, const char *text, size_t len, const int32_t *ids, int n) {
    if (!r->stream || r->gone) return;
    if (len <= r->sent_bytes && n <= r->sent_ids) return;
    size_t tb = len > r->sent_bytes ? len - r->sent_bytes : 0;
    int ni = n > r->sent_ids ? n - r->sent_ids : 0;
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_token(&S->sb, r->id, text + r->sent_bytes, tb, ids + r->sent_ids, ni);
    srv_post(S, &r->from, r->id, false);
    r->sent_bytes += tb;
    r->sent_ids += ni;
}

/* Ends r with `done` (reason from the engine unless forced) or `error`, and frees it. */
static void complete(srv *S, sd_dreq *r, const char *force_reason) {
    double now = sd_now_s();
    sd_finish f = r->gen ? sd_gen_finish(r->gen) : SD_FINISH_CANCELLED;
    if (!r->gone && f == SD_FINISH_ERROR && !force_reason) {
        srv_error(S, &r->from, true, r->id, SD_E_INTERNAL, NULL, "generation failed");
    } else if (!r->gone) {
        const char *reason = force_reason ? force_reason
                             : f == SD_FINISH_STOP ? SD_FINISH_STR_STOP
                             : f == SD_FINISH_LENGTH ? SD_FINISH_STR_LENGTH : SD_FINISH_STR_CANCELLED;
        size_t len = 0;
        int n = 0;
        const char *text = r->gen ? sd_gen_text(r->gen, &len) : "";
        const int32_t *ids = r->gen ? sd_gen_tokens(r->gen, &n) : NULL;
        flush_stream(S, r, text, len, ids, n);
        sd_done_stats d;
        fill_done_stats(S, r, now, &d);
        int32_t stop_token = -1;
        int stop_index = -1;
        if (r->gen && !force_reason) sd_gen_stop_cause(r->gen, &stop_token, &stop_index);
        msgpack_sbuffer_clear(&S->sb);
        sd_enc_done_stop(&S->sb, r->id, text, len, ids, n, reason, &d, stop_token,
                         stop_index >= 0 ? r->req.gen.stop[stop_index] : NULL);
        account(S, r, &d, reason); /* before the reply: a `stats` after the `done` counts it */
        srv_post(S, &r->from, r->id, true);
    } else {
        post_end(S, &r->from, r->id);
    }
    sd_sched_finish(&S->sched, r);
    sd_dreq_free(r);
}

/* Cancels and frees every request whose client vanished. */
static void reap_gone(srv *S) {
    sd_sched *sc = &S->sched;
    for (int i = 0; i < sc->max_active; i++) {
        sd_dreq *r = sc->active[i];
        if (!r || !r->gone) continue;
        if (r->gen) sd_gen_cancel(r->gen);
        sd_board_update(S->board, r->from.tenant, sd_board_count_vanished, NULL);
        post_end(S, &r->from, r->id);
        sd_sched_finish(sc, r);
        sd_dreq_free(r);
    }
    for (sd_dreq *r = sc->q_head, *nx; r; r = nx) {
        nx = r->next;
        if (!r->gone) continue;
        sd_sched_dequeue(sc, r);
        sd_board_update(S->board, r->from.tenant, sd_board_count_vanished, NULL);
        post_end(S, &r->from, r->id);
        sd_dreq_free(r);
    }
}

/* ------------------------------------------------------------------ stepping */

static void start_or_fail(srv *S, sd_dreq *r) {
    sd_err err = {{0}};
    r->t_start = sd_now_s();
    if (sd_sched_start(&S->sched, r, &err)) {
        srv_error(S, &r->from, true, r->id, SD_E_OUT_OF_RANGE, NULL, err.msg);
        sd_log(SD_LOG_WARN, "request %llu could not start: %s", (unsigned long long)r->id, err.msg);
        sd_dreq_free(r);
    }
}

static void fill_from_queue(srv *S) {
    while (S->sched.n_active < S->sched.max_active && S->sched.n_queued > 0) start_or_fail(S, sd_sched_pop(&S->sched));
}

/* After a turn: r's step output to its client (stream events), its end when it finished. */
static void after_step(srv *S, sd_dreq *r) {
    const char *why = sd_gen_error(r->gen);
    if (why) {
        sd_log(SD_LOG_ERROR, "request %llu: engine step failed: %s", (unsigned long long)r->id, why);
        srv_error(S, &r->from, true, r->id, SD_E_INTERNAL, NULL, why);
        sd_sched_finish(&S->sched, r);
        sd_dreq_free(r);
        return;
    }
    const int32_t *ids;
    int n_ids;
    const char *text;
    size_t tl;
    sd_gen_last(r->gen, &ids, &n_ids, &text, &tl);
    double now = sd_now_s();
    if (n_ids > 0 && r->t_first == 0) r->t_first = now;
    if (r->stream && (n_ids > 0 || tl > 0) && !r->gone) {
        msgpack_sbuffer_clear(&S->sb);
        sd_enc_token_t(&S->sb, r->id, text, tl, ids, n_ids, (uint64_t)(now * 1e6));
        srv_post(S, &r->from, r->id, false);
        r->sent_bytes += tl;
        r->sent_ids += n_ids;
    }
    if (sd_gen_finish(r->gen) != SD_FINISH_NONE) complete(S, r, NULL);
}

/* One turn: every running request advances one step, their target work in one forward batch. */
static void step_all(srv *S) {
    sd_sched *sc = &S->sched;
    int n = 0;
    for (int i = 0; i < sc->max_active; i++)
        if (sc->active[i]) {
            sc->turn[n] = sc->active[i];
            sc->gens[n++] = sc->active[i]->gen;
        }
    if (!n) return;
    sd_err err = {{0}};
    if (sd_gen_step_batch(sc->gens, n, S->o->batch_tokens, &err)) { /* bad arguments: a bug, not a request's */
        sd_log(SD_LOG_ERROR, "engine turn failed: %s", err.msg);
        for (int i = 0; i < n; i++) sd_gen_cancel(sc->gens[i]);
        return;
    }
    for (int i = 0; i < n; i++) after_step(S, sc->turn[i]);
}

/* ------------------------------------------------------------------ ops */

/* The socket thread has answered the cancel; the request ends here, before its next step. */
static void cancel_request(srv *S, const sd_peer *from, uint64_t target) {
    sd_dreq *r = sd_sched_find(&S->sched, from->rid, from->rid_len, target);
    if (!r || r->gone) return;
    if (!sd_sched_dequeue(&S->sched, r)) sd_gen_cancel(r->gen);
    complete(S, r, SD_FINISH_STR_CANCELLED);
}

static uint64_t next_seed(srv *S) {
    uint64_t z = (S->seed_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void apply_params(srv *S, sd_dreq *r) {
    const sd_req_generate *g = &r->req.gen;
    sd_gen_params p = S->o->defaults;
    p.max_tokens = (g->set & SD_GF_MAX_TOKENS) ? g->max_tokens : S->o->max_tokens;
    if (g->set & SD_GF_TEMPERATURE) p.sampling.temperature = g->temperature;
    if (g->set & SD_GF_TOP_K) p.sampling.top_k = g->top_k;
    if (g->set & SD_GF_TOP_P) p.sampling.top_p = g->top_p;
    if (g->set & SD_GF_MIN_P) p.sampling.min_p = g->min_p;
    r->seed = (g->set & SD_GF_SEED) ? g->seed : next_seed(S);
    p.sampling.seed = r->seed;
    if (g->set & SD_GF_MODE) p.mode = g->mode == SD_PMODE_PLAIN ? SD_MODE_PLAIN : SD_MODE_SPEC;
    if (g->set & SD_GF_DRAFT_MAX) {
        p.draft_max = g->draft_max;
        if (p.draft_min > p.draft_max) p.draft_min = p.draft_max;
    }
    p.stop = (const char *const *)g->stop;
    p.n_stop = g->n_stop;
    p.tenant = r->from.tenant;
    r->params = p;
    r->stream = g->stream;
}

/* Tokenizes and checks the prompt against the context. 0, or -1 after replying with the error. */
static int prepare_prompt(srv *S, sd_dreq *r) {
    sd_req_generate *g = &r->req.gen;
    char field[64], msg[320];
    sd_err err = {{0}};
    const char *fname = g->prompt ? "prompt" : "tokens";
    if (g->prompt) {
        int flags = (g->add_bos ? SD_TOK_ADD_BOS : 0) | (g->special ? SD_TOK_PARSE_SPECIAL : 0);
        if (sd_tok_encode(S->e->target->tok, g->prompt, g->prompt_len, flags, &r->prompt, &r->n_prompt, &err)) {
            srv_error(S, &r->from, true, r->id, SD_E_INTERNAL, "prompt", err.msg);
            return -1;
        }
    } else {
        if (srv_check_vocab(S->e, g->tokens, g->n_tokens, "tokens", field, sizeof field, msg, sizeof msg)) {
            srv_error(S, &r->from, true, r->id, SD_E_OUT_OF_RANGE, field, msg);
            return -1;
        }
        r->prompt = g->tokens;
        r->n_prompt = g->n_tokens;
        g->tokens = NULL;
        g->n_tokens = 0;
    }
    if (r->n_prompt == 0) {
        srv_error(S, &r->from, true, r->id, SD_E_OUT_OF_RANGE, fname,
                    "field 'prompt': the prompt has no tokens (empty text without BOS)");
        return -1;
    }
    if (r->n_prompt + 1 > S->e->ctx) {
        snprintf(msg, sizeof msg, "field '%s': the prompt is %d tokens; the context holds %d (prompt + 1 needed)",
                 fname, r->n_prompt, S->e->ctx);
        srv_error(S, &r->from, true, r->id, SD_E_TOO_LONG, fname, msg);
        return -1;
    }
    /* max_tokens beyond what the context holds means "at most": generation ends at the context's end
     * with finish_reason "length" */
    if ((g->set & SD_GF_DRAFT_MAX) && g->draft_max > SD_DRAFT_LIMIT) {
        snprintf(msg, sizeof msg, "field 'draft_max': %d is above this daemon's limit of %d", g->draft_max,
                 SD_DRAFT_LIMIT);
        srv_error(S, &r->from, true, r->id, SD_E_OUT_OF_RANGE, "draft_max", msg);
        return -1;
    }
    return 0;
}

static void op_generate(srv *S, const sd_peer *from, sd_request *q) {
    if (S->shutting) {
        srv_error(S, from, true, q->id, SD_E_SHUTTING_DOWN, NULL, "the daemon is shutting down");
        return;
    }
    sd_dreq *r = calloc(1, sizeof *r);
    if (!r) { srv_error(S, from, true, q->id, SD_E_INTERNAL, NULL, "out of memory"); return; }
    r->id = q->id;
    r->from = *from;
    r->req = *q;                       /* r takes ownership of the decoded request */
    sd_request_init(q, SD_OP_NONE, 0);
    r->slot = -1;
    r->t_arrive = sd_now_s();
    if (prepare_prompt(S, r)) { sd_dreq_free(r); return; }
    apply_params(S, r);
    if (sd_sched_can_start(&S->sched)) {
        sd_board_update(S->board, from->tenant, sd_board_count_total, NULL);
        start_or_fail(S, r);
    } else if (sd_sched_can_queue(&S->sched)) {
        sd_board_update(S->board, from->tenant, sd_board_count_total, NULL);
        sd_sched_enqueue(&S->sched, r);
    } else { /* the socket thread admits no more than fit: a safety net */
        sd_board_update(S->board, from->tenant, sd_board_count_busy, NULL);
        msgpack_sbuffer_clear(&S->sb);
        sd_enc_busy(&S->sb, r->id, 100, S->sched.n_queued, S->sched.n_active);
        srv_post(S, from, r->id, true);
        sd_dreq_free(r);
    }
}

/* A chat request: the template renders the messages into prompt text (its special-token text parsed, no
 * BOS added: templates write it themselves), which then runs as a generate request. */
static void op_chat(srv *S, const sd_peer *from, sd_request *q) {
    if (!S->chat) {
        srv_error(S, from, true, q->id, SD_E_UNSUPPORTED, "messages",
                  "the model has no chat template; start the daemon with --chat-template FILE");
        return;
    }
    const sd_tokenizer *tok = S->e->target->tok;
    int32_t bos = sd_tok_bos(tok), eos = sd_tok_eos(tok);
    char *text;
    size_t len;
    sd_err err = {{0}};
    if (sd_chat_render(S->chat, q->messages, q->n_messages, q->add_generation_prompt, bos >= 0 ? sd_tok_text(tok, bos) : "",
                       eos >= 0 ? sd_tok_text(tok, eos) : "", &text, &len, &err)) {
        srv_error(S, from, true, q->id, SD_E_TEMPLATE, "messages", err.msg);
        return;
    }
    q->gen.prompt = text;
    q->gen.prompt_len = len;
    q->gen.add_bos = false;
    q->gen.special = true;
    op_generate(S, from, q);
}

/* One message from the socket thread. */
static void from_socket(srv *S, sd_link_up *u) {
    switch (u->kind) {
    case SD_LINK_GONE: mark_gone(S, u->from.rid, u->from.rid_len, u->why); break;
    case SD_LINK_CANCEL: cancel_request(S, &u->from, u->target); break;
    case SD_LINK_REQUEST:
        switch (u->q.op) {
        case SD_OP_TOKENIZE: srv_op_tokenize(S, &u->from, &u->q); break;
        case SD_OP_DETOKENIZE: srv_op_detokenize(S, &u->from, &u->q); break;
        case SD_OP_GENERATE: op_generate(S, &u->from, &u->q); break;
        case SD_OP_CHAT: op_chat(S, &u->from, &u->q); break;
        default: srv_error(S, &u->from, true, u->q.id, SD_E_INTERNAL, NULL, "the engine does not answer this op"); break;
        }
        break;
    default: break;
    }
    sd_link_up_free(u);
}

/* Takes everything the socket thread has handed over, waiting up to timeout_ms for the first. */
static void take_messages(srv *S, int timeout_ms) {
    zmq_pollitem_t it = {S->link, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return;
    for (sd_link_up *u; (u = sd_link_recv_up(S->link));) from_socket(S, u);
}

/* ------------------------------------------------------------------ setup and shutdown */

/* 0 when the socket file is absent or stale (the caller may replace it), -1 when it is another file or a
 * live daemon answers on it. */
static int check_socket_file(void *zctx, const sd_server_opts *o, bool *stale, sd_err *err) {
    const char *path = o->socket_path;
    struct stat sb;
    *stale = false;
    if (!path || !*path || lstat(path, &sb) != 0) return 0;
    if (!S_ISSOCK(sb.st_mode)) return sd_errf(err, "%s exists and is not a socket; refusing to replace it", path);
    if (sd_ping_endpoint(zctx, o->endpoint, 500)) return sd_errf(err, "a specd daemon is already serving on %s", path);
    *stale = true;
    return 0;
}

/* TCP beyond loopback only with CURVE (anyone who reaches the port could otherwise generate, read model
 * information and cancel); CURVE's key files are checked here, before the models load. */
static int check_tcp_auth(const sd_server_opts *o, sd_err *err) {
    bool curve = o->curve_secret || o->curve_clients;
    if (strncmp(o->endpoint, "tcp://", 6)) {
        if (curve) return sd_errf(err, "--curve-secret and --curve-clients apply to --tcp only");
        return 0;
    }
    if (curve && !(o->curve_secret && o->curve_clients))
        return sd_errf(err, "CURVE needs both --curve-secret FILE and --curve-clients DIR");
    char host[SD_ENDPOINT_MAX];
    snprintf(host, sizeof host, "%s", o->endpoint + 6);
    char *colon = strrchr(host, ':');
    if (colon) *colon = 0;
    if (!curve && !sd_host_is_loopback(host))
        return sd_errf(err, "refusing to listen on %s without authentication: binding anything but loopback needs "
                       "CURVE (--curve-secret FILE --curve-clients DIR; keys from `specd keygen`)", o->endpoint);
    if (!curve) return 0;
    if (!sd_curve_available()) return sd_errf(err, "this libzmq has no CURVE support (zmq_has(\"curve\") is false)");
    char pub[SD_Z85_KEY], sec[SD_Z85_KEY];
    char (*keys)[SD_Z85_KEY];
    int n;
    if (sd_curve_read(o->curve_secret, pub, sec, err)) return -1;
    if (sd_curve_read_dir(o->curve_clients, &keys, &n, err)) return -1;
    free(keys);
    return 0;
}

int sd_server_check_endpoint(const sd_server_opts *o, sd_err *err) {
    if (check_tcp_auth(o, err)) return -1;
    void *zctx = zmq_ctx_new();
    if (!zctx) return sd_errf(err, "zmq_ctx_new failed");
    bool stale;
    int rc = check_socket_file(zctx, o, &stale, err);
    zmq_ctx_term(zctx);
    return rc;
}

/* The sockets of both threads. */
typedef struct sockets {
    void *zctx, *router, *monitor, *link_front, *link_engine;
    sd_zap zap;                 /* CURVE's client check (zap.sock NULL without CURVE) */
} sockets;

/* CURVE on the ROUTER: the daemon's secret key, and the ZAP handler that admits the listed clients. Without
 * it on TCP (loopback only, check_tcp_auth), every local user shares one tenant: say so. */
static int setup_curve(sockets *K, const sd_server_opts *o, sd_err *err) {
    if (!o->curve_secret) {
        if (!strncmp(o->endpoint, "tcp://", 6))
            sd_log(SD_LOG_WARN, "TCP without CURVE on %s: any local user can connect, and all of them share one "
                   "tenant (cached prompts, stats); use --curve-secret and --curve-clients", o->endpoint);
        return 0;
    }
    char pub[SD_Z85_KEY], sec[SD_Z85_KEY];
    if (sd_curve_read(o->curve_secret, pub, sec, err)) return -1;
    if (sd_zap_open(&K->zap, K->zctx, o->curve_clients, err)) return -1;
    int one = 1;
    if (zmq_setsockopt(K->router, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(K->router, ZMQ_CURVE_SECRETKEY, sec, SD_Z85_KEY - 1) ||
        zmq_setsockopt(K->router, ZMQ_ZAP_DOMAIN, "specd", 5))
        return sd_errf(err, "setting CURVE on the socket: %s", zmq_strerror(zmq_errno()));
    sd_log(SD_LOG_INFO, "CURVE on: server key %s, %d client key(s) from %s", pub, K->zap.n_keys, o->curve_clients);
    return 0;
}

static int bind_socket(sockets *K, const sd_server_opts *o, sd_err *err) {
    const char *path = o->socket_path;
    bool stale;
    if (check_socket_file(K->zctx, o, &stale, err)) return -1; /* again: one may have started meanwhile */
    if (stale) {
        sd_log(SD_LOG_INFO, "replacing stale socket %s (no daemon answers on it)", path);
        if (unlink(path) != 0 && errno != ENOENT)
            return sd_errf(err, "cannot remove stale socket %s: %s", path, strerror(errno));
    }
    K->router = zmq_socket(K->zctx, ZMQ_ROUTER);
    if (!K->router) return sd_errf(err, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int one = 1, linger = 2000, hwm = SD_CLIENT_PIPE_MSGS, ivl = SD_HEARTBEAT_IVL_MS, to = SD_HEARTBEAT_TIMEOUT_MS;
    int64_t maxmsg = SD_PROTO_MAX_MSG_BYTES;
    zmq_setsockopt(K->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(K->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(K->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(K->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(K->router, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(K->router, ZMQ_HEARTBEAT_TIMEOUT, &to, sizeof to);
    zmq_setsockopt(K->router, ZMQ_HEARTBEAT_TTL, &to, sizeof to);
    if (setup_curve(K, o, err)) return -1;
    /* the socket file appears with no permissions beyond the owner's, then gets the requested mode */
    mode_t old = umask(0177);
    int rc = zmq_bind(K->router, o->endpoint);
    int zerr = zmq_errno();
    umask(old);
    if (rc != 0) return sd_errf(err, "cannot bind %s: %s", o->endpoint, zmq_strerror(zerr));
    if (path && *path && chmod(path, (mode_t)o->socket_mode) != 0) {
        sd_errf(err, "chmod %o %s: %s", (unsigned)o->socket_mode, path, strerror(errno));
        unlink(path);
        return -1;
    }
    if (zmq_socket_monitor(K->router, "inproc://specd-monitor", ZMQ_EVENT_DISCONNECTED) == 0) {
        K->monitor = zmq_socket(K->zctx, ZMQ_PAIR);
        if (K->monitor && zmq_connect(K->monitor, "inproc://specd-monitor") != 0) { zmq_close(K->monitor); K->monitor = NULL; }
    }
    return 0;
}

/* The two ends of the link between the threads (no high-water mark: the engine never blocks on it, and
 * what it holds is bounded by the requests in flight and the per-client output bound). */
static int open_link(sockets *K, sd_err *err) {
    int zero = 0;
    K->link_front = zmq_socket(K->zctx, ZMQ_PAIR);
    K->link_engine = zmq_socket(K->zctx, ZMQ_PAIR);
    if (!K->link_front || !K->link_engine) return sd_errf(err, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    void *ends[2] = {K->link_front, K->link_engine};
    for (int i = 0; i < 2; i++) {
        zmq_setsockopt(ends[i], ZMQ_SNDHWM, &zero, sizeof zero);
        zmq_setsockopt(ends[i], ZMQ_RCVHWM, &zero, sizeof zero);
        zmq_setsockopt(ends[i], ZMQ_LINGER, &zero, sizeof zero);
    }
    if (zmq_bind(K->link_front, SD_LINK_ENDPOINT) || zmq_connect(K->link_engine, SD_LINK_ENDPOINT))
        return sd_errf(err, "cannot open the engine link: %s", zmq_strerror(zmq_errno()));
    return 0;
}

static void close_sockets(sockets *K) {
    if (K->monitor) { zmq_socket_monitor(K->router, NULL, 0); zmq_close(K->monitor); }
    if (K->router) zmq_close(K->router);
    sd_zap_close(&K->zap);
    if (K->link_front) zmq_close(K->link_front);
    if (K->link_engine) zmq_close(K->link_engine);
    if (K->zctx) zmq_ctx_term(K->zctx);
}

/* Ends every running and queued request with `done` (cancelled). */
static void cancel_all(srv *S) {
    sd_sched *sc = &S->sched;
    reap_gone(S);
    for (int i = 0; i < sc->max_active; i++)
        if (sc->active[i]) {
            sd_gen_cancel(sc->active[i]->gen);
            complete(S, sc->active[i], SD_FINISH_STR_CANCELLED);
        }
    for (sd_dreq *r; (r = sd_sched_pop(sc));) complete(S, r, SD_FINISH_STR_CANCELLED);
    reap_gone(S);
}

/* One line of the counters `stats` reports, for SIGHUP / SIGUSR1. */
static void log_stats(const srv *S) {
    sd_board *b = S->board;
    pthread_mutex_lock(&b->mu);
    sd_srv_stats st = b->all;
    pthread_mutex_unlock(&b->mu);
    sd_log(SD_LOG_INFO, "stats: up %.0f s, %llu requests (%llu completed, %llu cancelled, %llu errors, %llu busy), "
           "%d running, %d queued, %llu tokens generated", sd_now_s() - st.t_start, (unsigned long long)st.total,
           (unsigned long long)st.completed, (unsigned long long)st.cancelled, (unsigned long long)st.errors,
           (unsigned long long)st.busy, S->sched.n_active, S->sched.n_queued, (unsigned long long)st.tok_generated);
}

typedef struct engine_arg {
    srv *S;
    volatile sig_atomic_t *stop;
} engine_arg;

/* The engine thread: take what arrived, step every running request, repeat; on *stop, shut down as
 * docs/protocol.md §6 says and tell the socket thread. */
static void *engine_loop(void *arg) {
    srv *S = ((engine_arg *)arg)->S;
    volatile sig_atomic_t *stop = ((engine_arg *)arg)->stop;
    for (;;) {
        if (S->o->report && *S->o->report) {
            *S->o->report = 0;
            log_stats(S);
        }
        if (*stop && !S->shutting) {
            take_messages(S, 0); /* what the socket thread accepted before the signal still counts */
            S->shutting = true;
            S->deadline = sd_now_s() + S->o->grace_s;
            sd_log(SD_LOG_INFO, "shutting down: %d running, %d queued, grace %.1fs", S->sched.n_active,
                   S->sched.n_queued, S->o->grace_s);
        }
        take_messages(S, S->sched.n_active > 0 ? 0 : IDLE_WAIT_MS);
        reap_gone(S);
        if (S->shutting && ((S->sched.n_active == 0 && S->sched.n_queued == 0) || sd_now_s() >= S->deadline)) {
            cancel_all(S);
            break;
        }
        fill_from_queue(S);
        if (S->delay_ms > 0 && S->sched.n_active > 0) zmq_poll(NULL, 0, S->delay_ms);
        step_all(S);
        publish_load(S);
    }
    publish_load(S);
    sd_link_send_down(S->link, SD_LINK_EXIT, NULL, 0, 0, true, NULL);
    return NULL;
}

static void log_serving(const srv *S) {
    const sd_server_opts *o = S->o;
    const sd_engine *e = S->e;
    sd_log(SD_LOG_INFO, "serving on %s (%d sessions, queue %d, ctx %d, backend %s, proposer %s)", o->endpoint,
           o->max_sessions, o->queue, e->ctx, e->be && e->be->name ? e->be->name : "?", srv_proposer_name(e->proposer));
    /* models loaded and the socket bound: clients can connect now (systemd Type=notify) */
    char ready[600];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=serving on %s", o->endpoint);
    if (sd_notify_systemd(ready)) sd_log(SD_LOG_WARN, "could not notify systemd ($NOTIFY_SOCKET)");
}

/* Runs both threads until the engine has shut down. */
static int run_threads(srv *S, sockets *K, volatile sig_atomic_t *stop, sd_err *err) {
    S->link = K->link_engine;
    engine_arg ea = {S, stop};
    pthread_t th;
    if (pthread_create(&th, NULL, engine_loop, &ea)) return sd_errf(err, "cannot start the engine thread");
    sd_front_cfg fc = {.zctx = K->zctx, .router = K->router, .monitor = K->monitor, .link = K->link_front,
                       .zap = K->zap.sock ? &K->zap : NULL, .o = S->o, .e = S->e, .chat = S->chat, .board = S->board};
    sd_front_run(&fc);
    pthread_join(th, NULL);
    for (sd_link_up *u; (u = sd_link_recv_up(K->link_engine));) sd_link_up_free(u); /* arrived after the end */
    return 0;
}

int sd_server_run(sd_engine *e, const sd_server_opts *o, volatile sig_atomic_t *stop, sd_err *err) {
    srv S;
    sd_board board;
    sockets K;
    memset(&S, 0, sizeof S);
    memset(&K, 0, sizeof K);
    if (sd_board_init(&board, sd_now_s())) return sd_errf(err, "cannot initialise the statistics lock");
    S.e = e;
    S.o = o;
    S.board = &board;
    S.seed_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    const char *delay = getenv("SPECD_TURN_DELAY_MS");
    S.delay_ms = delay ? atoi(delay) : 0;
    msgpack_sbuffer_init(&S.sb);
    int rc = -1;
    bool bound = false;
    if (sd_chat_open(o->chat_template, e->target->gguf, &S.chat, err)) goto out;
    if (S.chat) sd_log(SD_LOG_INFO, "chat template from the %s", sd_chat_origin(S.chat));
    if (sd_sched_init(&S.sched, e, o->max_sessions, o->queue, err)) goto out;
    K.zctx = zmq_ctx_new();
    if (!K.zctx) { sd_errf(err, "zmq_ctx_new failed"); goto out; }
    if (open_link(&K, err) || bind_socket(&K, o, err)) goto out;
    bound = true;
    if (o->bound) *o->bound = 1;
    log_serving(&S);
    if (run_threads(&S, &K, stop, err)) goto out;
    sd_notify_systemd("STOPPING=1");
    rc = 0;
    sd_log(SD_LOG_INFO, "stopped: %llu requests, %llu tokens generated", (unsigned long long)board.all.total,
           (unsigned long long)board.all.tok_generated);
out:
    close_sockets(&K);
    if (o->bound) *o->bound = 0;
    if (bound && o->socket_path && *o->socket_path) unlink(o->socket_path);
    sd_sched_free(&S.sched);
    sd_chat_free(S.chat);
    msgpack_sbuffer_destroy(&S.sb);
    sd_board_free(&board);
    return rc;
}
