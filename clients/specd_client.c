/* The specd client library: requests are encoded and replies decoded by ipc/protocol.c (the same code the
 * daemon uses), sockets come from ipc/transport.c; this file adds waiting with timeouts, noticing a
 * daemon that is absent or goes away, and the per-op calls. */
#include "clients/specd_client.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <zmq.h>

#include "ipc/protocol.h"
#include "ipc/curve.h"
#include "ipc/transport.h"
#include "base/clock.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_TIMEOUT_MS 60000

struct specd_client {
    void *zctx;
    void *sock;
    void *mon;          /* PAIR socket receiving the DEALER's connection events */
    char endpoint[SD_ENDPOINT_MAX];
    uint64_t next_id;
    int timeout_ms;
    int connected;      /* the DEALER has a live connection (from the monitor) */
    int lost;           /* it had one and lost it */
    char *rbuf;         /* the last reply's bytes: a decoded sd_reply's strings point into them */
    int local;          /* ipc:// endpoint: the daemon shares our monotonic clock */
};

static int fail(specd_error *e, specd_err_kind kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(specd_error *e, specd_err_kind kind, const char *fmt, ...) {
    if (!e) return -1;
    e->kind = kind;
    e->code[0] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int no_daemon(specd_client *c, specd_error *e, const char *why) {
    return fail(e, SPECD_ERR_CONNECT, "no daemon at %s: is `specd serve` running? (%s)", c->endpoint, why);
}

int specd_resolve_endpoint(const char *socket_path, const char *tcp, char *buf, size_t n, specd_error *e) {
    sd_err se = {{0}};
    if (sd_endpoint_resolve(socket_path, tcp, buf, n, NULL, 0, &se)) return fail(e, SPECD_ERR_ARG, "%s", se.msg);
    return 0;
}

/* ---- connection events (zmq_socket_monitor): a refused connect or a drop fails the wait at once ---- */

/* Reads one monitor event; returns its ZMQ_EVENT_* code, 0 when none is pending. */
static int read_event(specd_client *c) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, c->mon, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&m); return 0; }
    uint16_t ev = 0;
    if (zmq_msg_size(&m) >= 2) memcpy(&ev, zmq_msg_data(&m), 2);
    while (zmq_msg_more(&m)) { /* the second frame: the endpoint */
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->mon, 0) < 0) break;
    }
    zmq_msg_close(&m);
    if (ev == ZMQ_EVENT_CONNECTED) c->connected = 1;
    if (ev == ZMQ_EVENT_DISCONNECTED && c->connected) { c->connected = 0; c->lost = 1; }
    return ev;
}

/* Waits up to timeout_ms (< 0: forever) for one message. 1: buf and len set; 0: timeout; -1: error (e set).
 * A connection refused before any reply (want_connect), or a connection lost, ends the wait at once. */
static int wait_msg(specd_client *c, int timeout_ms, char **buf, size_t *len, int want_connect, specd_error *e) {
    double end = timeout_ms < 0 ? 0 : sd_now_ms() + timeout_ms;
    for (;;) {
        int left = -1;
        if (timeout_ms >= 0) {
            left = (int)ceil(end - sd_now_ms());
            if (left < 0) left = 0;
        }
        zmq_pollitem_t it[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->mon, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(it, 2, left);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            return fail(e, SPECD_ERR_CONNECT, "poll: %s", zmq_strerror(zmq_errno()));
        }
        if (it[0].revents & ZMQ_POLLIN) {
            sd_err se = {{0}};
            int r = sd_recv(c->sock, 0, buf, len, &se);
            if (r < 0) return fail(e, SPECD_ERR_CONNECT, "%s: %s", c->endpoint, se.msg);
            if (r == 1) return 1;
        }
        if (it[1].revents & ZMQ_POLLIN) {
            int ev = read_event(c);
            if (c->lost) return fail(e, SPECD_ERR_CONNECT, "the daemon at %s closed the connection", c->endpoint);
            if (want_connect && !c->connected && ev == ZMQ_EVENT_CONNECT_RETRIED)
                return no_daemon(c, e, "connection refused");
            continue;
        }
        if (rc == 0 && timeout_ms >= 0 && sd_now_ms() >= end) return 0;
    }
}

static int send_req(specd_client *c, sd_request *r, specd_error *e) {
    if (c->lost) { /* an earlier request saw the connection drop: go on only if ZeroMQ reconnected */
        while (read_event(c)) {}
        if (!c->connected) return fail(e, SPECD_ERR_CONNECT, "lost the connection to the daemon at %s", c->endpoint);
        c->lost = 0;
    }
    char *buf = NULL;
    size_t len = 0;
    sd_err se = {{0}};
    if (sd_request_encode(r, &buf, &len, &se)) return fail(e, SPECD_ERR_ARG, "%s", se.msg);
    int rc = sd_send(c->sock, buf, len, &se);
    free(buf);
    if (rc) return fail(e, SPECD_ERR_CONNECT, "%s: %s", c->endpoint, se.msg);
    return 0;
}

static int reply_error(const sd_reply *rep, specd_error *e) {
    if (rep->type == SD_REPLY_ERROR) {
        fail(e, SPECD_ERR_DAEMON, "%s", rep->message);
        if (e) snprintf(e->code, sizeof e->code, "%s", rep->code);
        return -1;
    }
    return fail(e, SPECD_ERR_PROTOCOL, "unexpected '%s' reply", sd_reply_type_name(rep->type));
}

/* Receives the next reply that belongs to request `id` (heartbeats and replies to other, earlier requests
 * are skipped). 0 with *rep filled (caller frees), -1 on error/timeout. */
static int recv_reply(specd_client *c, uint64_t id, int want_connect, int timeout_ms, sd_reply *rep,
                      specd_error *e) {
    for (;;) {
        char *buf = NULL;
        size_t len = 0;
        free(c->rbuf); /* the previous reply has been freed by now: one decoded reply lives at a time */
        c->rbuf = NULL;
        int r = wait_msg(c, timeout_ms, &buf, &len, want_connect, e);
        if (r < 0) return -1;
        if (r == 0) {
            if (want_connect) return no_daemon(c, e, "no answer");
            return fail(e, SPECD_ERR_TIMEOUT, "timed out after %d ms waiting for the daemon at %s", timeout_ms,
                        c->endpoint);
        }
        sd_err se = {{0}};
        int d = sd_reply_decode(buf, len, rep, &se);
        c->rbuf = buf;
        if (d) return fail(e, SPECD_ERR_PROTOCOL, "bad reply from %s: %s", c->endpoint, se.msg);
        if (rep->type != SD_REPLY_HEARTBEAT && rep->has_id && rep->id == id) return 0;
        if (rep->type == SD_REPLY_ERROR && !rep->has_id) { /* the daemon could not read our request */
            reply_error(rep, e);
            sd_reply_free(rep);
            return -1;
        }
        sd_reply_free(rep);
    }
}

/* One request answered by one `result`: sends r, waits for its reply, checks it is a result. */
static int simple_call(specd_client *c, sd_request *r, sd_reply *rep, specd_error *e) {
    if (send_req(c, r, e)) return -1;
    if (recv_reply(c, r->id, 0, c->timeout_ms, rep, e)) return -1;
    if (rep->type != SD_REPLY_RESULT) {
        reply_error(rep, e);
        sd_reply_free(rep);
        return -1;
    }
    return 0;
}

/* One connection attempt (see specd_connect). */
static int connect_once(const specd_options *opts, specd_client **out, specd_error *e) {
    *out = NULL;
    specd_options o = opts ? *opts : (specd_options){0};
    specd_client *c = calloc(1, sizeof *c);
    if (!c) return fail(e, SPECD_ERR_ARG, "out of memory");
    c->next_id = 1;
    c->timeout_ms = o.timeout_ms == 0 ? DEFAULT_TIMEOUT_MS : o.timeout_ms;
    int cto = o.connect_timeout_ms > 0 ? o.connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    if (o.endpoint) {
        if ((size_t)snprintf(c->endpoint, sizeof c->endpoint, "%s", o.endpoint) >= sizeof c->endpoint) {
            free(c);
            return fail(e, SPECD_ERR_ARG, "endpoint is too long");
        }
    } else if (specd_resolve_endpoint(NULL, NULL, c->endpoint, sizeof c->endpoint, e)) {
        free(c);
        return -1;
    }
    if (strncmp(c->endpoint, "ipc://", 6) && strncmp(c->endpoint, "tcp://", 6)) {
        int r = fail(e, SPECD_ERR_ARG, "endpoint '%s': expected ipc://PATH or tcp://HOST:PORT", c->endpoint);
        free(c);
        return r;
    }
    c->local = !strncmp(c->endpoint, "ipc://", 6);
    /* A missing socket file needs no network round trip to diagnose. */
    struct stat st;
    if (!strncmp(c->endpoint, "ipc://", 6)) {
        const char *why = stat(c->endpoint + 6, &st) ? (errno == ENOENT ? "no socket file" : strerror(errno))
                          : !S_ISSOCK(st.st_mode) ? "the file is not a socket" : NULL;
        if (why) {
            int r = no_daemon(c, e, why);
            free(c);
            return r;
        }
        /* nothing is sent to a daemon of another user: it could be an impostor that bound the name first */
        sd_err pe = {{0}};
        int pr = sd_check_daemon_peer(c->endpoint + 6, &pe);
        if (pr) {
            int r = pr == -2 ? no_daemon(c, e, "nothing listens on the socket file")
                             : fail(e, SPECD_ERR_CONNECT, "%s", pe.msg);
            free(c);
            return r;
        }
    }
    c->zctx = zmq_ctx_new();
    sd_err se = {{0}};
    if ((o.curve_server != NULL) != (o.curve_key != NULL)) {
        int r = fail(e, SPECD_ERR_ARG, "CURVE needs both the daemon's public key file and this client's key file");
        specd_close(c);
        return r;
    }
    sd_curve_client curve = {o.curve_server, o.curve_key};
    if (c->zctx) c->sock = sd_client_connect_curve(c->zctx, c->endpoint, o.curve_server ? &curve : NULL, &se);
    if (c->zctx && !c->sock && o.curve_server) {
        int r = fail(e, SPECD_ERR_ARG, "%s", se.msg);
        specd_close(c);
        return r;
    }
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://specd-client-mon-%p", (void *)c);
    if (c->sock && zmq_socket_monitor(c->sock, mon_ep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED |
                                                          ZMQ_EVENT_DISCONNECTED) == 0) {
        c->mon = zmq_socket(c->zctx, ZMQ_PAIR);
        if (c->mon && zmq_connect(c->mon, mon_ep)) { zmq_close(c->mon); c->mon = NULL; }
    }
    if (!c->mon) {
        int r = fail(e, SPECD_ERR_CONNECT, "%s: %s", c->endpoint, se.msg[0] ? se.msg : zmq_strerror(zmq_errno()));
        specd_close(c);
        return r;
    }
    /* Prove a v1 daemon answers: a ping within the connect timeout. */
    sd_request r;
    sd_request_init(&r, SD_OP_PING, c->next_id++);
    sd_reply rep;
    if (send_req(c, &r, e) || recv_reply(c, r.id, 1, cto, &rep, e)) {
        specd_close(c);
        return -1;
    }
    sd_reply_free(&rep);
    *out = c;
    return 0;
}

int specd_connect(const specd_options *opts, specd_client **out, specd_error *e) {
    double end = sd_now_ms() + (opts && opts->wait_ms > 0 ? opts->wait_ms : 0);
    specd_error mine;
    if (!e) e = &mine;
    for (;;) {
        int rc = connect_once(opts, out, e);
        if (rc == 0 || e->kind != SPECD_ERR_CONNECT || sd_now_ms() + 100 > end) return rc;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void specd_close(specd_client *c) {
    if (!c) return;
    if (c->sock) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->sock);
    }
    if (c->mon) zmq_close(c->mon);
    if (c->zctx) zmq_ctx_term(c->zctx);
    free(c->rbuf);
    free(c);
}

const char *specd_endpoint(const specd_client *c) { return c->endpoint; }

specd_gen specd_gen_default(void) {
    return (specd_gen){.max_tokens = -1, .temperature = -1, .top_k = -1, .top_p = -1, .min_p = -1,
                       .draft_max = -1, .stream = 1, .add_bos = -1, .add_generation_prompt = -1};
}

void specd_result_free(specd_result *r) {
    if (!r) return;
    free(r->text);
    free(r->ids);
    free(r->json);
    memset(r, 0, sizeof *r);
}

/* chat: the messages, borrowed as for fill_generate; the array of sd_chat_msg is the caller's to free. */
static int fill_chat(sd_request *r, const specd_gen *g, specd_error *e) {
    if (g->prompt || g->tokens) return fail(e, SPECD_ERR_ARG, "chat: give messages, not prompt or tokens");
    if (!g->messages || g->n_messages <= 0) return fail(e, SPECD_ERR_ARG, "chat: no messages");
    r->messages = calloc((size_t)g->n_messages, sizeof *r->messages);
    if (!r->messages) return fail(e, SPECD_ERR_ARG, "out of memory");
    r->n_messages = g->n_messages;
    for (int i = 0; i < g->n_messages; i++) {
        if (!g->messages[i].role || !g->messages[i].content)
            return fail(e, SPECD_ERR_ARG, "chat: message %d has no role or content", i);
        r->messages[i] = (sd_chat_msg){(char *)g->messages[i].role, (char *)g->messages[i].content,
                                       strlen(g->messages[i].content)};
    }
    if (g->add_generation_prompt >= 0) {
        r->add_generation_prompt = g->add_generation_prompt != 0;
        r->gen.set |= SD_GF_ADD_GEN_PROMPT;
    }
    return 0;
}

static int fill_generate(sd_request *r, const specd_gen *g, specd_error *e) {
    sd_req_generate *q = &r->gen;
    if (r->op == SD_OP_GENERATE && !!g->prompt == !!g->tokens)
        return fail(e, SPECD_ERR_ARG, "generate: give exactly one of prompt and tokens");
    /* the request only borrows the caller's strings and arrays; it is never passed to sd_request_free */
    q->prompt = (char *)g->prompt;
    q->prompt_len = g->prompt ? strlen(g->prompt) : 0;
    q->tokens = (int32_t *)g->tokens;
    q->n_tokens = g->n_tokens;
    if (g->prompt && g->add_bos >= 0) { q->add_bos = g->add_bos != 0; q->set |= SD_GF_ADD_BOS; }
    if (g->prompt && g->special) { q->special = true; q->set |= SD_GF_SPECIAL; }
    if (g->max_tokens >= 0) { q->max_tokens = g->max_tokens; q->set |= SD_GF_MAX_TOKENS; }
    if (g->temperature >= 0) { q->temperature = (float)g->temperature; q->set |= SD_GF_TEMPERATURE; }
    if (g->top_k >= 0) { q->top_k = g->top_k; q->set |= SD_GF_TOP_K; }
    if (g->top_p >= 0) { q->top_p = (float)g->top_p; q->set |= SD_GF_TOP_P; }
    if (g->min_p >= 0) { q->min_p = (float)g->min_p; q->set |= SD_GF_MIN_P; }
    if (g->has_seed) { q->seed = g->seed; q->set |= SD_GF_SEED; }
    if (g->n_stop > 0) { q->stop = (char **)g->stop; q->n_stop = g->n_stop; q->set |= SD_GF_STOP; }
    if (g->mode) {
        if (strcmp(g->mode, "spec") && strcmp(g->mode, "plain"))
            return fail(e, SPECD_ERR_ARG, "generate: mode '%s': expected spec or plain", g->mode);
        q->mode = strcmp(g->mode, "plain") ? SD_PMODE_SPEC : SD_PMODE_PLAIN;
        q->set |= SD_GF_MODE;
    }
    if (g->draft_max >= 0) { q->draft_max = g->draft_max; q->set |= SD_GF_DRAFT_MAX; }
    q->stream = g->stream != 0;
    q->set |= SD_GF_STREAM;
    return 0;
}

/* Copies a done reply into r. */
static int take_done(const sd_reply *rep, specd_result *r, specd_error *e) {
    r->text = malloc(rep->text_len + 1);
    r->ids = malloc(sizeof(int32_t) * (size_t)(rep->n_tokens > 0 ? rep->n_tokens : 1));
    r->json = sd_mp_to_json(rep->root);
    if (!r->text || !r->ids || !r->json) return fail(e, SPECD_ERR_ARG, "out of memory");
    memcpy(r->text, rep->text, rep->text_len);
    r->text[rep->text_len] = 0;
    r->text_len = rep->text_len;
    if (rep->n_tokens > 0) memcpy(r->ids, rep->tokens, sizeof(int32_t) * (size_t)rep->n_tokens);
    r->n_ids = rep->n_tokens;
    snprintf(r->finish_reason, sizeof r->finish_reason, "%s", rep->finish_reason);
    r->stop_token = rep->stop_token;
    snprintf(r->stop_string, sizeof r->stop_string, "%s", rep->stop_string);
    const sd_done_stats *s = &rep->stats;
    r->stats = (specd_gen_stats){s->prompt_tokens, s->generated, s->drafted, s->accepted, s->acceptance,
                                 s->queue_ms, s->ttft_ms, s->ms_per_token, s->total_ms, s->prefilled, s->reused,
                                 s->preempted};
    return 0;
}

int specd_stream_begin(specd_client *c, int chat, const specd_gen *g, specd_stream *s, specd_error *e) {
    memset(s, 0, sizeof *s);
    s->ttft_ms = -1;
    sd_request q;
    sd_request_init(&q, chat ? SD_OP_CHAT : SD_OP_GENERATE, c->next_id++);
    int bad = (chat && fill_chat(&q, g, e)) || fill_generate(&q, g, e);
    s->id = q.id;
    s->t0 = sd_now_ms();
    bad = bad || send_req(c, &q, e);
    free(q.messages); /* only the array: its strings are the caller's */
    if (!bad) s->held = calloc(1, sizeof(sd_reply));
    return bad ? -1 : s->held ? 0 : fail(e, SPECD_ERR_ARG, "out of memory");
}

static void release_held(specd_stream *s) {
    sd_reply *held = s->held;
    if (held && held->type != SD_REPLY_NONE) sd_reply_free(held);
    if (held) memset(held, 0, sizeof *held);
}

int specd_stream_next(specd_client *c, specd_stream *s, specd_token *tok, specd_result *r, specd_error *e) {
    release_held(s);
    sd_reply *rep = s->held;
    if (!rep) return fail(e, SPECD_ERR_ARG, "stream: not begun, or already ended");
    if (recv_reply(c, s->id, 0, c->timeout_ms, rep, e)) {
        memset(rep, 0, sizeof *rep);
        return -1;
    }
    double t = sd_now_ms() - s->t0;
    if (rep->type == SD_REPLY_TOKEN) {
        if (s->n_events++ == 0) s->ttft_ms = t;
        /* same machine (ipc://): the daemon's CLOCK_MONOTONIC stamp is comparable with ours */
        double dl = rep->time_us && c->local ? sd_now_ms() * 1e3 - (double)rep->time_us : -1;
        *tok = (specd_token){rep->text, rep->text_len, rep->tokens, rep->n_tokens, t, dl, rep->time_us};
        return 1;
    }
    int rc = -1;
    if (rep->type == SD_REPLY_DONE) {
        memset(r, 0, sizeof *r);
        r->id = s->id;
        r->n_events = s->n_events;
        r->client_total_ms = t;
        r->client_ttft_ms = s->ttft_ms < 0 ? t : s->ttft_ms;
        rc = take_done(rep, r, e);
        if (rc) specd_result_free(r);
    } else {
        reply_error(rep, e);
    }
    release_held(s);
    return rc;
}

int specd_stream_cancel(specd_client *c, specd_stream *s, specd_error *e) {
    if (s->cancelled) return 0;
    s->cancelled = 1;
    sd_request cq;
    sd_request_init(&cq, SD_OP_CANCEL, c->next_id++);
    cq.target = s->id;
    return send_req(c, &cq, e); /* its `result` is skipped by recv_reply */
}

void specd_stream_end(specd_stream *s) {
    release_held(s);
    free(s->held);
    s->held = NULL;
}

static int run_generate(specd_client *c, sd_op op, const specd_gen *g, specd_token_cb cb, void *user,
                        specd_result *r, specd_error *e) {
    memset(r, 0, sizeof *r);
    specd_stream s;
    if (specd_stream_begin(c, op == SD_OP_CHAT, g, &s, e)) {
        specd_stream_end(&s);
        return -1;
    }
    r->id = s.id;
    specd_token tok;
    int rc;
    while ((rc = specd_stream_next(c, &s, &tok, r, e)) == 1)
        if (cb && !s.cancelled && cb(&tok, user) && specd_stream_cancel(c, &s, e)) {
            rc = -1;
            break;
        }
    specd_stream_end(&s);
    return rc;
}

int specd_generate(specd_client *c, const specd_gen *g, specd_token_cb cb, void *user, specd_result *r,
                   specd_error *e) {
    return run_generate(c, SD_OP_GENERATE, g, cb, user, r, e);
}

int specd_chat(specd_client *c, const specd_gen *g, specd_token_cb cb, void *user, specd_result *r, specd_error *e) {
    return run_generate(c, SD_OP_CHAT, g, cb, user, r, e);
}

int specd_tokenize(specd_client *c, const char *text, int flags, int32_t **ids, int *n, specd_error *e) {
    *ids = NULL;
    *n = 0;
    if (!text) return fail(e, SPECD_ERR_ARG, "tokenize: text is NULL");
    sd_request r;
    sd_request_init(&r, SD_OP_TOKENIZE, c->next_id++);
    r.text = (char *)text;
    r.text_len = strlen(text);
    r.add_bos = (flags & SPECD_TOK_ADD_BOS) != 0;
    r.special = (flags & SPECD_TOK_SPECIAL) != 0;
    sd_reply rep;
    if (simple_call(c, &r, &rep, e)) return -1;
    *ids = rep.tokens; /* malloc'd by the decoder: hand it over */
    *n = rep.n_tokens;
    rep.tokens = NULL;
    if (!*ids) *ids = malloc(sizeof(int32_t));
    sd_reply_free(&rep);
    return 0;
}

int specd_detokenize(specd_client *c, const int32_t *ids, int n, char **text, specd_error *e) {
    return specd_detokenize_special(c, ids, n, 0, text, e);
}

int specd_detokenize_special(specd_client *c, const int32_t *ids, int n, int special, char **text, specd_error *e) {
    *text = NULL;
    sd_request r;
    sd_request_init(&r, SD_OP_DETOKENIZE, c->next_id++);
    r.tokens = (int32_t *)ids;
    r.n_tokens = n;
    r.special = special != 0;
    sd_reply rep;
    if (simple_call(c, &r, &rep, e)) return -1;
    *text = malloc(rep.text_len + 1);
    if (*text) {
        if (rep.text_len) memcpy(*text, rep.text, rep.text_len);
        (*text)[rep.text_len] = 0;
    }
    sd_reply_free(&rep);
    return *text ? 0 : fail(e, SPECD_ERR_ARG, "out of memory");
}

static int json_call(specd_client *c, sd_op op, char **json, specd_error *e) {
    *json = NULL;
    sd_request r;
    sd_request_init(&r, op, c->next_id++);
    sd_reply rep;
    if (simple_call(c, &r, &rep, e)) return -1;
    *json = sd_mp_to_json(rep.root);
    sd_reply_free(&rep);
    return *json ? 0 : fail(e, SPECD_ERR_ARG, "out of memory");
}

int specd_info(specd_client *c, char **json, specd_error *e) { return json_call(c, SD_OP_INFO, json, e); }
int specd_stats(specd_client *c, char **json, specd_error *e) { return json_call(c, SD_OP_STATS, json, e); }

int specd_cancel(specd_client *c, uint64_t id, int *found, specd_error *e) {
    sd_request r;
    sd_request_init(&r, SD_OP_CANCEL, c->next_id++);
    r.target = id;
    sd_reply rep;
    if (simple_call(c, &r, &rep, e)) return -1;
    if (found) *found = rep.found;
    sd_reply_free(&rep);
    return 0;
}

int specd_ping(specd_client *c, double *rtt_us, specd_error *e) {
    sd_request r;
    sd_request_init(&r, SD_OP_PING, c->next_id++);
    sd_reply rep;
    double t0 = sd_now_ms();
    if (simple_call(c, &r, &rep, e)) return -1;
    if (rtt_us) *rtt_us = (sd_now_ms() - t0) * 1e3;
    sd_reply_free(&rep);
    return 0;
}
