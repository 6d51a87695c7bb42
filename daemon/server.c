/* The daemon loop (docs/protocol.md): one thread owns the ROUTER socket and the engine. Each turn it
 * drains the socket (quick ops answered at once, generates admitted or queued), then advances one active
 * request by one step, round robin. A send that fails because the client is gone (ROUTER_MANDATORY)
 * marks that client's requests, which are cancelled at the top of the next turn. */
#include "daemon/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/srv.h"
#include "daemon/scheduler.h"
#include "daemon/stats.h"
#include "ipc/protocol.h"
#include "ipc/transport.h"
#include "base/clock.h"


/* ------------------------------------------------------------------ sending */

static void mark_gone(srv *S, const unsigned char *rid, int rid_len, const char *why) {
    int n = 0;
    sd_sched *sc = &S->sched;
    for (int i = 0; i < sc->max_active; i++) {
        sd_dreq *r = sc->active[i];
        if (r && !r->gone && r->rid_len == rid_len && !memcmp(r->rid, rid, (size_t)rid_len)) { r->gone = true; n++; }
    }
    for (sd_dreq *r = sc->q_head; r; r = r->next)
        if (!r->gone && r->rid_len == rid_len && !memcmp(r->rid, rid, (size_t)rid_len)) { r->gone = true; n++; }
    if (n) {
        char hex[40];
        sd_log_rid(rid, rid_len, hex, sizeof hex);
        sd_log(SD_LOG_INFO, "client %s %s: cancelling its %d request(s)", hex, why, n);
    }
}

/* No reply may exceed the message limit (clients set it as ZMQ_MAXMSGSIZE and would drop the
 * connection): an answer that would is replaced by an error reply for its request. */
static void cap_reply(srv *S) {
    if (S->sb.size <= SD_PROTO_MAX_MSG_BYTES) return;
    sd_reply r;
    bool has_id = false;
    uint64_t id = 0;
    if (sd_reply_decode(S->sb.data, S->sb.size, &r, NULL) == 0) {
        has_id = r.has_id;
        id = r.id;
        sd_reply_free(&r);
    }
    char msg[256];
    snprintf(msg, sizeof msg, "the reply would be %zu bytes, above the %u-byte message limit: ask for less "
             "(fewer ids, a shorter text, or stream)", S->sb.size, SD_PROTO_MAX_MSG_BYTES);
    sd_log(SD_LOG_WARN, "request %llu: %s", (unsigned long long)id, msg);
    S->st.errors++;
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_error(&S->sb, has_id, id, SD_E_REPLY_TOO_LARGE, NULL, msg);
}

/* Sends S->sb to client rid. -1 when the client is gone (its requests are marked). */
int srv_send(srv *S, const unsigned char *rid, int rid_len) {
    cap_reply(S);
    if (zmq_send(S->sock, rid, (size_t)rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        mark_gone(S, rid, rid_len, e == EAGAIN ? "is not reading its replies" : "has disconnected");
        return -1;
    }
    if (zmq_send(S->sock, S->sb.data, S->sb.size, ZMQ_DONTWAIT) < 0) {
        mark_gone(S, rid, rid_len, "could not be sent to");
        return -1;
    }
    return 0;
}

void srv_error(srv *S, const unsigned char *rid, int rid_len, bool has_id, uint64_t id, const char *code,
                        const char *field, const char *msg) {
    S->st.errors++;
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_error(&S->sb, has_id, id, code, field, msg);
    char hex[40];
    sd_log_rid(rid, rid_len, hex, sizeof hex);
    sd_log(SD_LOG_DEBUG, "client %s id %llu: error %s: %s", hex, (unsigned long long)id, code, msg);
    srv_send(S, rid, rid_len);
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

static void account(srv *S, const sd_dreq *r, const sd_done_stats *d, const char *reason) {
    sd_srv_stats *st = &S->st;
    if (!strcmp(reason, SD_FINISH_STR_CANCELLED)) st->cancelled++; else st->completed++;
    st->tok_prompt += (uint64_t)d->prompt_tokens;
    st->tok_prefilled += (uint64_t)d->prefilled;
    st->tok_generated += (uint64_t)d->generated;
    st->tok_drafted += (uint64_t)d->drafted;
    st->tok_accepted += (uint64_t)d->accepted;
    if (d->generated > 1 && d->target_passes > 0) {
        st->tok_decoded += (uint64_t)(d->generated - 1);
        st->target_passes += (uint64_t)d->target_passes;
    }
    if (d->generated > 1) sd_hist_add(&st->ms_per_token, d->ms_per_token);
    if (r->t_first > 0) sd_hist_add(&st->ttft_ms, d->ttft_ms);
    sd_hist_add(&st->queue_ms, d->queue_ms);
    sd_hist_add(&st->total_ms, d->total_ms);
    char hex[40];
    sd_log_rid(r->rid, r->rid_len, hex, sizeof hex);
    sd_log(SD_LOG_INFO, "req %s/%llu %s prompt=%d prefilled=%d gen=%d accept=%.2f (%d/%d) ms/tok=%.2f ttft=%.1fms "
           "queue=%.1fms finish=%s", hex, (unsigned long long)r->id, d->mode == SD_PMODE_PLAIN ? "plain" : "spec",
           d->prompt_tokens, d->prefilled, d->generated, d->acceptance, d->accepted, d->drafted, d->ms_per_token,
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
    srv_send(S, r->rid, r->rid_len);
    r->sent_bytes += tb;
    r->sent_ids += ni;
}

/* Ends r with `done` (reason from the engine unless forced) or `error`, and frees it. */
static void complete(srv *S, sd_dreq *r, const char *force_reason) {
    double now = sd_now_s();
    sd_finish f = r->gen ? sd_gen_finish(r->gen) : SD_FINISH_CANCELLED;
    if (!r->gone && f == SD_FINISH_ERROR && !force_reason) {
        srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_INTERNAL, NULL, "generation failed");
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
        if (!r->gone) srv_send(S, r->rid, r->rid_len);
        account(S, r, &d, reason);
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
        S->st.vanished++;
        S->st.cancelled++;
        sd_sched_finish(sc, r);
        sd_dreq_free(r);
    }
    for (sd_dreq *r = sc->q_head, *nx; r; r = nx) {
        nx = r->next;
        if (!r->gone) continue;
        sd_sched_dequeue(sc, r);
        S->st.vanished++;
        S->st.cancelled++;
        sd_dreq_free(r);
    }
}

/* ------------------------------------------------------------------ stepping */

static void start_or_fail(srv *S, sd_dreq *r) {
    sd_err err = {{0}};
    r->t_start = sd_now_s();
    if (sd_sched_start(&S->sched, r, &err)) {
        srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_OUT_OF_RANGE, NULL, err.msg);
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
        srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_INTERNAL, NULL, why);
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
        if (srv_send(S, r->rid, r->rid_len) == 0) r->t_last_send = now;
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

/* Sends a heartbeat to clients with requests in flight that heard nothing for HEARTBEAT_AFTER_S (or to
 * all of them when force): a client that is gone fails the send and its requests are marked. */
static void heartbeats(srv *S, bool force) {
    double now = sd_now_s();
    double quiet = force ? 0.0 : HEARTBEAT_AFTER_S;
    sd_sched *sc = &S->sched;
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_heartbeat(&S->sb);
    for (int i = 0; i < sc->max_active; i++) {
        sd_dreq *r = sc->active[i];
        if (r && !r->gone && now - r->t_last_send >= quiet) {
            r->t_last_send = now;
            srv_send(S, r->rid, r->rid_len);
        }
    }
    for (sd_dreq *r = sc->q_head; r; r = r->next)
        if (!r->gone && now - r->t_last_send >= quiet) {
            r->t_last_send = now;
            srv_send(S, r->rid, r->rid_len);
        }
}

/* ------------------------------------------------------------------ ops */

static void op_cancel(srv *S, const unsigned char *rid, int rid_len, sd_request *q) {
    sd_dreq *r = sd_sched_find(&S->sched, rid, rid_len, q->target);
    if (r && r->gone) r = NULL;
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_result_cancel(&S->sb, q->id, q->target, r != NULL);
    srv_send(S, rid, rid_len);
    if (!r) return;
    if (sd_sched_dequeue(&S->sched, r)) {
        complete(S, r, SD_FINISH_STR_CANCELLED);
    } else {
        sd_gen_cancel(r->gen);
        complete(S, r, SD_FINISH_STR_CANCELLED);
    }
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
            srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_INTERNAL, "prompt", err.msg);
            return -1;
        }
    } else {
        if (srv_check_vocab(S, g->tokens, g->n_tokens, "tokens", field, sizeof field, msg, sizeof msg)) {
            srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_OUT_OF_RANGE, field, msg);
            return -1;
        }
        r->prompt = g->tokens;
        r->n_prompt = g->n_tokens;
        g->tokens = NULL;
        g->n_tokens = 0;
    }
    if (r->n_prompt == 0) {
        srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_OUT_OF_RANGE, fname,
                    "field 'prompt': the prompt has no tokens (empty text without BOS)");
        return -1;
    }
    if (r->n_prompt + 1 > S->e->ctx) {
        snprintf(msg, sizeof msg, "field '%s': the prompt is %d tokens; the context holds %d (prompt + 1 needed)",
                 fname, r->n_prompt, S->e->ctx);
        srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_TOO_LONG, fname, msg);
        return -1;
    }
    /* max_tokens beyond what the context holds means "at most": generation ends at the context's end
     * with finish_reason "length" */
    if ((g->set & SD_GF_DRAFT_MAX) && g->draft_max > SD_DRAFT_LIMIT) {
        snprintf(msg, sizeof msg, "field 'draft_max': %d is above this daemon's limit of %d", g->draft_max,
                 SD_DRAFT_LIMIT);
        srv_error(S, r->rid, r->rid_len, true, r->id, SD_E_OUT_OF_RANGE, "draft_max", msg);
        return -1;
    }
    return 0;
}

static void op_generate(srv *S, const unsigned char *rid, int rid_len, sd_request *q) {
    if (S->shutting) {
        srv_error(S, rid, rid_len, true, q->id, SD_E_SHUTTING_DOWN, NULL, "the daemon is shutting down");
        return;
    }
    sd_dreq *r = calloc(1, sizeof *r);
    if (!r) { srv_error(S, rid, rid_len, true, q->id, SD_E_INTERNAL, NULL, "out of memory"); return; }
    r->id = q->id;
    memcpy(r->rid, rid, (size_t)rid_len);
    r->rid_len = rid_len;
    r->req = *q;                       /* r takes ownership of the decoded request */
    sd_request_init(q, SD_OP_NONE, 0);
    r->slot = -1;
    r->t_arrive = r->t_last_send = sd_now_s();
    if (prepare_prompt(S, r)) { sd_dreq_free(r); return; }
    apply_params(S, r);
    if (sd_sched_can_start(&S->sched)) {
        S->st.total++;
        start_or_fail(S, r);
    } else if (sd_sched_can_queue(&S->sched)) {
        S->st.total++;
        sd_sched_enqueue(&S->sched, r);
    } else {
        S->st.busy++;
        S->st.errors++;
        msgpack_sbuffer_clear(&S->sb);
        sd_enc_busy(&S->sb, r->id, 100, S->sched.n_queued, S->sched.n_active);
        sd_log(SD_LOG_DEBUG, "request %llu: busy", (unsigned long long)r->id);
        srv_send(S, rid, rid_len);
        sd_dreq_free(r);
    }
}

/* A chat request: the template renders the messages into prompt text (its special-token text parsed, no
 * BOS added: templates write it themselves), which then runs as a generate request. */
static void op_chat(srv *S, const unsigned char *rid, int rid_len, sd_request *q) {
    if (!S->chat) {
        srv_error(S, rid, rid_len, true, q->id, SD_E_UNSUPPORTED, "messages",
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
        srv_error(S, rid, rid_len, true, q->id, SD_E_TEMPLATE, "messages", err.msg);
        return;
    }
    q->gen.prompt = text;
    q->gen.prompt_len = len;
    q->gen.add_bos = false;
    q->gen.special = true;
    op_generate(S, rid, rid_len, q);
}

/* Every reply carries its request's id, so no request of any op may reuse the id of a generate still in
 * flight on the same connection: the client would see two final replies with one id. */
static bool id_in_flight(srv *S, const unsigned char *rid, int rid_len, uint64_t id) {
    sd_dreq *dup = sd_sched_find(&S->sched, rid, rid_len, id);
    if (!dup || dup->gone) return false;
    char msg[128];
    snprintf(msg, sizeof msg, "request id %llu is already in flight on this connection", (unsigned long long)id);
    srv_error(S, rid, rid_len, true, id, SD_E_DUPLICATE_ID, "id", msg);
    return true;
}

static void dispatch(srv *S, const unsigned char *rid, int rid_len, sd_request *q) {
    if (q->op != SD_OP_GENERATE && q->op != SD_OP_CHAT) S->st.other++;
    if (id_in_flight(S, rid, rid_len, q->id)) return;
    switch (q->op) {
    case SD_OP_PING: {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        msgpack_sbuffer_clear(&S->sb);
        const sd_backend *be = S->e->be;
        sd_enc_result_pong(&S->sb, q->id, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u,
                           be && be->failed ? be->fail_msg : NULL);
        srv_send(S, rid, rid_len);
        break;
    }
    case SD_OP_INFO: srv_op_info(S, q->id); srv_send(S, rid, rid_len); break;
    case SD_OP_STATS: srv_op_stats(S, q->id); srv_send(S, rid, rid_len); break;
    case SD_OP_TOKENIZE: srv_op_tokenize(S, rid, rid_len, q); break;
    case SD_OP_DETOKENIZE: srv_op_detokenize(S, rid, rid_len, q); break;
    case SD_OP_CANCEL: op_cancel(S, rid, rid_len, q); break;
    case SD_OP_GENERATE: op_generate(S, rid, rid_len, q); break;
    case SD_OP_CHAT: op_chat(S, rid, rid_len, q); break;
    default: break;
    }
}

/* ------------------------------------------------------------------ receiving */

/* Receives one routed message (identity + frames) and handles it. Returns 0 when there was none. */
static int handle_one(srv *S) {
    unsigned char rid[SD_RID_MAX];
    int rl = zmq_recv(S->sock, rid, sizeof rid, ZMQ_DONTWAIT);
    if (rl < 0) return 0;
    if (rl > SD_RID_MAX) rl = SD_RID_MAX;
    zmq_msg_t body;
    zmq_msg_init(&body);
    int frames = 0, more = 1;
    size_t ml = sizeof more;
    zmq_getsockopt(S->sock, ZMQ_RCVMORE, &more, &ml);
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, S->sock, 0) < 0) { zmq_msg_close(&m); break; }
        frames++;
        more = zmq_msg_more(&m);
        if (frames == 1) zmq_msg_move(&body, &m);
        zmq_msg_close(&m);
    }
    if (frames != 1) {
        char msg[96];
        snprintf(msg, sizeof msg, "a request is exactly one frame (one MessagePack map), got %d frames", frames);
        srv_error(S, rid, rl, false, 0, SD_E_BAD_MESSAGE, NULL, msg);
        zmq_msg_close(&body);
        return 1;
    }
    sd_request q;
    sd_proto_err pe;
    if (sd_request_decode(zmq_msg_data(&body), zmq_msg_size(&body), &q, &pe)) {
        zmq_msg_close(&body);
        srv_error(S, rid, rl, pe.has_id, pe.id, pe.code, pe.field, pe.message);
        return 1;
    }
    zmq_msg_close(&body);
    dispatch(S, rid, rl, &q);
    sd_request_free(&q);
    return 1;
}

/* Socket monitor: logs dropped connections (a client closing, or ZeroMQ dropping one that sent a message
 * over ZMQ_MAXMSGSIZE: no reply can be addressed then). */
static void drain_monitor(srv *S) {
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, S->mon, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); return; }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 6) memcpy(&event, zmq_msg_data(&ev), 2);
        zmq_msg_init(&addr);
        if (zmq_msg_more(&ev)) zmq_msg_recv(&addr, S->mon, 0);
        if (event == ZMQ_EVENT_DISCONNECTED) {
            sd_log(SD_LOG_INFO, "a client connection closed (the client went away, or ZeroMQ dropped it for a "
                   "message over %u bytes)", SD_PROTO_MAX_MSG_BYTES);
            /* the event does not say which client: probe them all for a little while (the ROUTER forgets
             * the peer only once its pipe is torn down, shortly after the event) */
            S->probe_until = sd_now_s() + PROBE_S;
        }
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
    }
}

static void poll_and_drain(srv *S, int timeout_ms) {
    zmq_pollitem_t items[2] = {{S->sock, 0, ZMQ_POLLIN, 0}, {S->mon, 0, ZMQ_POLLIN, 0}};
    int n = zmq_poll(items, S->mon ? 2 : 1, timeout_ms);
    if (n <= 0) return;
    if (items[0].revents & ZMQ_POLLIN)
        for (int i = 0; i < 1000 && handle_one(S); i++) {}
    if (S->mon && (items[1].revents & ZMQ_POLLIN)) drain_monitor(S);
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

int sd_server_check_endpoint(const sd_server_opts *o, sd_err *err) {
    void *zctx = zmq_ctx_new();
    if (!zctx) return sd_errf(err, "zmq_ctx_new failed");
    bool stale;
    int rc = check_socket_file(zctx, o, &stale, err);
    zmq_ctx_term(zctx);
    return rc;
}

static int bind_socket(srv *S, sd_err *err) {
    const sd_server_opts *o = S->o;
    const char *path = o->socket_path;
    bool stale;
    if (check_socket_file(S->zctx, o, &stale, err)) return -1; /* again: one may have started meanwhile */
    if (stale) {
        sd_log(SD_LOG_INFO, "replacing stale socket %s (no daemon answers on it)", path);
        if (unlink(path) != 0 && errno != ENOENT)
            return sd_errf(err, "cannot remove stale socket %s: %s", path, strerror(errno));
    }
    S->sock = zmq_socket(S->zctx, ZMQ_ROUTER);
    if (!S->sock) return sd_errf(err, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int one = 1, linger = 2000, hwm = SNDHWM, ivl = SD_HEARTBEAT_IVL_MS, to = SD_HEARTBEAT_TIMEOUT_MS;
    int64_t maxmsg = SD_PROTO_MAX_MSG_BYTES;
    zmq_setsockopt(S->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(S->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(S->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(S->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(S->sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(S->sock, ZMQ_HEARTBEAT_TIMEOUT, &to, sizeof to);
    zmq_setsockopt(S->sock, ZMQ_HEARTBEAT_TTL, &to, sizeof to);
    /* the socket file appears with no permissions beyond the owner's, then gets the requested mode */
    mode_t old = umask(0177);
    int rc = zmq_bind(S->sock, o->endpoint);
    int zerr = zmq_errno();
    umask(old);
    if (rc != 0) return sd_errf(err, "cannot bind %s: %s", o->endpoint, zmq_strerror(zerr));
    if (path && *path && chmod(path, (mode_t)o->socket_mode) != 0) {
        sd_errf(err, "chmod %o %s: %s", (unsigned)o->socket_mode, path, strerror(errno));
        unlink(path);
        return -1;
    }
    if (zmq_socket_monitor(S->sock, "inproc://specd-monitor", ZMQ_EVENT_DISCONNECTED) == 0) {
        S->mon = zmq_socket(S->zctx, ZMQ_PAIR);
        if (S->mon && zmq_connect(S->mon, "inproc://specd-monitor") != 0) { zmq_close(S->mon); S->mon = NULL; }
    }
    return 0;
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
    const sd_srv_stats *st = &S->st;
    sd_log(SD_LOG_INFO, "stats: up %.0f s, %llu requests (%llu completed, %llu cancelled, %llu errors, %llu busy), "
           "%d running, %d queued, %llu tokens generated", sd_now_s() - st->t_start, (unsigned long long)st->total,
           (unsigned long long)st->completed, (unsigned long long)st->cancelled, (unsigned long long)st->errors,
           (unsigned long long)st->busy, S->sched.n_active, S->sched.n_queued, (unsigned long long)st->tok_generated);
}

static void serve_loop(srv *S, volatile sig_atomic_t *stop) {
    double last_hb = sd_now_s(), last_probe = 0;
    for (;;) {
        if (S->o->report && *S->o->report) {
            *S->o->report = 0;
            log_stats(S);
        }
        if (*stop && !S->shutting) {
            S->shutting = true;
            S->deadline = sd_now_s() + S->o->grace_s;
            sd_log(SD_LOG_INFO, "shutting down: %d running, %d queued, grace %.1fs", S->sched.n_active,
                   S->sched.n_queued, S->o->grace_s);
        }
        reap_gone(S);
        if (S->shutting && ((S->sched.n_active == 0 && S->sched.n_queued == 0) || sd_now_s() >= S->deadline)) {
            cancel_all(S);
            return;
        }
        poll_and_drain(S, S->sched.n_active > 0 ? 0 : IDLE_POLL_MS);
        reap_gone(S);
        double now = sd_now_s();
        if (now < S->probe_until && now - last_probe > PROBE_EVERY_S) {
            heartbeats(S, true);
            last_probe = now;
            reap_gone(S);
        }
        if (now - last_hb > 0.25) { heartbeats(S, false); last_hb = now; reap_gone(S); }
        fill_from_queue(S);
        step_all(S);
    }
}

int sd_server_run(sd_engine *e, const sd_server_opts *o, volatile sig_atomic_t *stop, sd_err *err) {
    srv S;
    memset(&S, 0, sizeof S);
    S.e = e;
    S.o = o;
    S.st.t_start = sd_now_s();
    S.seed_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    msgpack_sbuffer_init(&S.sb);
    int rc = -1;
    bool bound = false;
    if (sd_chat_open(o->chat_template, e->target->gguf, &S.chat, err)) goto out;
    if (S.chat) sd_log(SD_LOG_INFO, "chat template from the %s", sd_chat_origin(S.chat));
    if (sd_sched_init(&S.sched, e, o->max_sessions, o->queue, err)) goto out;
    S.zctx = zmq_ctx_new();
    if (!S.zctx) { sd_errf(err, "zmq_ctx_new failed"); goto out; }
    if (bind_socket(&S, err)) goto out;
    bound = true;
    if (o->bound) *o->bound = 1;
    sd_log(SD_LOG_INFO, "serving on %s (%d sessions, queue %d, ctx %d, backend %s, proposer %s)", o->endpoint,
           o->max_sessions, o->queue, e->ctx, e->be && e->be->name ? e->be->name : "?", srv_proposer_name(e->proposer));
    /* models loaded and the socket bound: clients can connect now (systemd Type=notify) */
    char ready[600];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=serving on %s", o->endpoint);
    if (sd_notify_systemd(ready)) sd_log(SD_LOG_WARN, "could not notify systemd ($NOTIFY_SOCKET)");
    serve_loop(&S, stop);
    sd_notify_systemd("STOPPING=1");
    rc = 0;
    sd_log(SD_LOG_INFO, "stopped: %llu requests, %llu tokens generated", (unsigned long long)S.st.total,
           (unsigned long long)S.st.tok_generated);
out:
    if (S.mon) { zmq_socket_monitor(S.sock, NULL, 0); zmq_close(S.mon); }
    if (S.sock) zmq_close(S.sock);
    if (S.zctx) zmq_ctx_term(S.zctx);
    if (o->bound) *o->bound = 0;
    if (bound && o->socket_path && *o->socket_path) unlink(o->socket_path);
    sd_sched_free(&S.sched);
    sd_chat_free(S.chat);
    msgpack_sbuffer_destroy(&S.sb);
    return rc;
}
