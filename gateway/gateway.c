/* The HTTP gateway (gateway/gateway.h): libmicrohttpd with a thread per connection, so each request may
 * block on its daemon connection; a streamed request's SSE chunks are pulled from the daemon connection as
 * libmicrohttpd asks for more (gateway/gateway.c "streaming"). */
#include "gateway/gateway.h"

#include <arpa/inet.h>
#include <math.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "base/clock.h"
#include "gateway/metrics.h"
#include "gateway/openai.h"

enum { MAX_BODY_DEFAULT = 4 << 20, BODY_SECONDS_DEFAULT = 30, POOL_MAX = 16, MAX_CONNECTIONS = 256 };

/* A connection's deadline to deliver a whole request (headers and body). libmicrohttpd's own timeout only
 * counts idle time, so a client sending a byte a second would hold a connection (and its thread) forever;
 * the watchdog thread answers one past its deadline with a 408 and closes it ("connection deadlines"). */
typedef enum {
    W_RECEIVING, /* the request is arriving (or being answered: deadline INFINITY) */
    W_ANSWERED,  /* past its deadline: the 408 is sent and our side shut for writing; the rest of the body is dropped */
    W_CLOSING,   /* the linger after the 408 is over: the connection closes at its next event */
} watch_state;

typedef struct watch {
    int fd;          /* -1: slot free */
    double deadline; /* seconds (sd_now_s); INFINITY while the request is being answered */
    watch_state state;
    bool started;    /* a request line arrived since the connection opened or its last answer */
} watch;

struct sd_gateway {
    struct MHD_Daemon *mhd;
    char endpoint[512];
    char api_key[256];
    size_t max_body;
    int body_timeout_s;
    pthread_mutex_t lock;
    char model[256];              /* the served model's id, from `info` (empty until known) */
    specd_client *idle[POOL_MAX]; /* daemon connections between requests (under lock) */
    int n_idle;
    watch watches[MAX_CONNECTIONS]; /* under lock */
    char *timeout_reply;            /* the whole HTTP 408 response the watchdog sends (built once) */
    size_t timeout_reply_len;
    pthread_t watchdog;
    atomic_bool stopping;
    atomic_ullong n_requests, n_errors, n_streams, seq;
};

/* ---- per-request state ---- */
typedef struct stream stream;
typedef struct req {
    char *body;
    size_t len, cap;
    bool too_large;
} req;

static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *type, const char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *json) {
    enum MHD_Result ok = send_text(c, status, "application/json", json ? json : "{}");
    free(json);
    return ok;
}

static enum MHD_Result send_error(sd_gateway *g, struct MHD_Connection *c, const oai_error *e) {
    g->n_errors++;
    return send_json(c, e->status, oai_error_json(e));
}

/* A daemon connection: an idle one from the pool, else a new one. Connecting costs a ZeroMQ context, the
 * socket owner check and a ping (about a millisecond of every request's first token), so connections are
 * kept between requests; each serves one request at a time. */
static int connect_daemon(sd_gateway *g, specd_client **out, oai_error *e) {
    pthread_mutex_lock(&g->lock);
    *out = g->n_idle ? g->idle[--g->n_idle] : NULL;
    pthread_mutex_unlock(&g->lock);
    if (*out) return 0;
    /* the ping proving the daemon answers may wait behind a busy engine turn on loaded CPUs: seconds, not 1 s */
    specd_options o = {.endpoint = g->endpoint, .connect_timeout_ms = 5000, .timeout_ms = 120000};
    specd_error se;
    if (specd_connect(&o, out, &se) == 0) return 0;
    oai_errorf(e, 503, "service_unavailable", NULL, "the model is not ready: %s", se.message);
    return -1;
}

/* Back to the pool after a request that ended cleanly (a result, or an error reply of the daemon: nothing
 * of that request is still on its way); closed after a client-side failure (timeout, lost connection). */
static void release_daemon(sd_gateway *g, specd_client *cl, bool clean) {
    if (!cl) return;
    pthread_mutex_lock(&g->lock);
    if (clean && g->n_idle < POOL_MAX) {
        g->idle[g->n_idle++] = cl;
        cl = NULL;
    }
    pthread_mutex_unlock(&g->lock);
    specd_close(cl);
}

/* The model id: the target file's name, learned from `info` once. */
static const char *model_id(sd_gateway *g, specd_client *c) {
    pthread_mutex_lock(&g->lock);
    if (!g->model[0]) {
        char *info;
        specd_error se;
        if (specd_info(c, &info, &se) == 0) {
            json_t *j = json_loads(info, 0, NULL);
            const char *path = json_string_value(json_object_get(json_object_get(j, "target"), "path"));
            const char *base = path ? strrchr(path, '/') : NULL;
            snprintf(g->model, sizeof g->model, "%s", base ? base + 1 : path ? path : "specd");
            json_decref(j);
            free(info);
        }
    }
    pthread_mutex_unlock(&g->lock);
    return g->model;
}

/* ---- simple endpoints ---- */
static enum MHD_Result get_health(sd_gateway *g, struct MHD_Connection *c) {
    specd_client *cl;
    oai_error e;
    if (connect_daemon(g, &cl, &e)) return send_text(c, 503, "application/json", "{\"status\":\"loading\"}");
    specd_error se;
    int rc = specd_ping(cl, NULL, &se);
    release_daemon(g, cl, rc == 0 || se.kind == SPECD_ERR_DAEMON);
    return rc ? send_text(c, 503, "application/json", "{\"status\":\"unavailable\"}")
              : send_text(c, 200, "application/json", "{\"status\":\"ok\"}");
}

static void model_not_found(oai_error *e, const char *want, const char *have) {
    oai_errorf(e, 404, "invalid_request_error", "model", "the model '%.100s' does not exist (this server has '%s')", want,
               have);
    snprintf(e->code, sizeof e->code, "model_not_found");
}

/* GET /v1/models (want NULL: the list) or /v1/models/{want} (the model object, or 404). */
static enum MHD_Result get_models(sd_gateway *g, struct MHD_Connection *c, const char *want) {
    specd_client *cl;
    oai_error e;
    if (connect_daemon(g, &cl, &e)) return send_error(g, c, &e);
    const char *id = model_id(g, cl);
    release_daemon(g, cl, true);
    if (want && strcmp(want, id)) {
        model_not_found(&e, want, id);
        return send_error(g, c, &e);
    }
    json_t *m = json_pack("{s:s, s:s, s:i, s:s}", "id", id, "object", "model", "created", 0, "owned_by", "specd");
    json_t *j = want ? m : json_pack("{s:s, s:[o]}", "object", "list", "data", m);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return send_json(c, 200, text);
}

/* Prometheus text from the daemon's stats and the gateway's own counters (gateway/metrics.c). */
static enum MHD_Result get_metrics(sd_gateway *g, struct MHD_Connection *c) {
    specd_client *cl;
    oai_error e;
    if (connect_daemon(g, &cl, &e)) return send_error(g, c, &e);
    char *stats;
    specd_error se;
    int rc = specd_stats(cl, &stats, &se);
    release_daemon(g, cl, rc == 0 || se.kind == SPECD_ERR_DAEMON);
    if (rc) {
        oai_from_specd_error(&se, &e);
        return send_error(g, c, &e);
    }
    gw_counters k = {g->n_requests, g->n_errors, g->n_streams};
    char *text = gw_metrics_text(stats, &k);
    free(stats);
    if (!text) {
        oai_errorf(&e, 500, "server_error", NULL, "the daemon's stats reply could not be read");
        return send_error(g, c, &e);
    }
    enum MHD_Result ok = send_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
    return ok;
}

/* ---- streaming ---- */
/* A streamed request, pulled by libmicrohttpd: each time the client's socket takes more, read_stream
 * reads the next token event from the daemon (blocking in this connection's own thread) and hands over its
 * SSE chunk. No second thread: a token goes daemon -> this thread -> the client's socket. */
struct stream {
    sd_gateway *g;
    oai_request rq;
    specd_client *cl;
    specd_stream st;
    char id[64];
    long created;
    char *buf;           /* SSE bytes produced, not yet handed over */
    size_t len, off;
    bool ended, failed, first_delta;
    bool lost;           /* the daemon connection failed on the client side: not reusable */
    oai_error err;       /* failed: why */
};

static void set_buf(stream *s, char *text) {
    free(s->buf);
    s->buf = text;
    s->len = text ? strlen(text) : 0;
    s->off = 0;
}

/* Appends the closing events of a finished request. */
static char *closing(stream *s, const specd_result *res) {
    char *parts[4] = {NULL, NULL, NULL, NULL};
    int n = 0;
    if (s->rq.kind == OAI_CHAT && !s->first_delta) /* the role arrives even with an empty reply */
        parts[n++] = oai_chunk_delta(&s->rq, s->id, s->created, "", 0, true, 0);
    parts[n++] = oai_chunk_finish(&s->rq, s->id, s->created, oai_finish_reason(res->finish_reason));
    if (s->rq.include_usage) parts[n++] = oai_chunk_usage(&s->rq, s->id, s->created, res);
    parts[n++] = strdup("data: [DONE]\n\n");
    size_t total = 1;
    for (int i = 0; i < n; i++) total += parts[i] ? strlen(parts[i]) : 0;
    char *out = malloc(total), *p = out;
    for (int i = 0; i < n; i++) {
        if (out && parts[i]) p = stpcpy(p, parts[i]);
        free(parts[i]);
    }
    if (out) *p = '\0';
    return out;
}

/* Reads events until one yields bytes (a text delta, or the end). false when nothing more will come. */
static bool pull(stream *s) {
    while (!s->ended) {
        specd_token tok;
        specd_result res;
        specd_error se;
        int rc = specd_stream_next(s->cl, &s->st, &tok, &res, &se);
        if (rc == 1) {
            if (!tok.len) continue;
            set_buf(s, oai_chunk_delta(&s->rq, s->id, s->created, tok.text, tok.len, !s->first_delta, tok.time_us));
            s->first_delta = true;
            return s->buf != NULL;
        }
        s->ended = true;
        if (rc == 0) {
            set_buf(s, closing(s, &res));
            specd_result_free(&res);
            return s->buf != NULL;
        }
        oai_from_specd_error(&se, &s->err);
        s->failed = true;
        s->lost = se.kind != SPECD_ERR_DAEMON;
    }
    return false;
}

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *s = cls;
    if (s->off == s->len && !pull(s))
        return s->failed ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->buf + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

/* The end of a stream, whether it finished or the client went away: a request still running is
 * cancelled and drained (its `done` arrives within a step), then everything is freed. */
static void free_stream(void *cls) {
    stream *s = cls;
    specd_error se;
    if (!s->ended && specd_stream_cancel(s->cl, &s->st, &se) == 0)
        while (!s->ended) pull(s);
    specd_stream_end(&s->st);
    release_daemon(s->g, s->cl, s->ended && !s->lost);
    oai_request_free(&s->rq);
    free(s->buf);
    free(s);
}

static enum MHD_Result start_stream(sd_gateway *g, struct MHD_Connection *c, oai_request *rq, specd_client *cl,
                                    const char *id, long created) {
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        specd_close(cl);
        oai_request_free(rq);
        return MHD_NO;
    }
    s->g = g;
    s->rq = *rq;
    s->cl = cl;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->created = created;
    specd_error se;
    if (specd_stream_begin(cl, rq->kind == OAI_CHAT, &s->rq.g, &s->st, &se)) {
        oai_from_specd_error(&se, &s->err);
        s->ended = s->failed = true;
        s->lost = se.kind != SPECD_ERR_DAEMON;
    } else {
        pull(s); /* errors before the first token (busy, a template error...) get their HTTP status */
    }
    if (s->failed && s->len == 0) {
        oai_error e = s->err;
        free_stream(s);
        return send_error(g, c, &e);
    }
    g->n_streams++;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_stream, s, free_stream);
    if (!r) {
        free_stream(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- completions ---- */
static enum MHD_Result post_completion(sd_gateway *g, struct MHD_Connection *c, oai_kind kind, const req *q) {
    oai_request rq;
    oai_error e;
    if (oai_parse(kind, q->body ? q->body : "", q->len, &rq, &e)) {
        oai_request_free(&rq);
        return send_error(g, c, &e);
    }
    specd_client *cl;
    if (connect_daemon(g, &cl, &e)) {
        oai_request_free(&rq);
        return send_error(g, c, &e);
    }
    const char *model = model_id(g, cl);
    if (rq.model && model[0] && strcmp(rq.model, model)) {
        model_not_found(&e, rq.model, model);
        release_daemon(g, cl, true);
        oai_request_free(&rq);
        return send_error(g, c, &e);
    }
    rq.model = model;
    char id[64];
    snprintf(id, sizeof id, "%s-%llu", kind == OAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)++g->seq);
    long created = (long)time(NULL);
    if (rq.stream) return start_stream(g, c, &rq, cl, id, created);
    specd_result res;
    specd_error se;
    rq.g.stream = 0;
    int rc = kind == OAI_CHAT ? specd_chat(cl, &rq.g, NULL, NULL, &res, &se) : specd_generate(cl, &rq.g, NULL, NULL, &res, &se);
    release_daemon(g, cl, rc == 0 || se.kind == SPECD_ERR_DAEMON);
    enum MHD_Result ok;
    if (rc) {
        oai_from_specd_error(&se, &e);
        ok = send_error(g, c, &e);
    } else {
        ok = send_json(c, 200, oai_response(&rq, &res, id, created));
        specd_result_free(&res);
    }
    oai_request_free(&rq);
    return ok;
}

/* ---- routing ---- */
static bool authorized(sd_gateway *g, struct MHD_Connection *c) {
    if (!g->api_key[0]) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return h && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, g->api_key);
}

static enum MHD_Result route(sd_gateway *g, struct MHD_Connection *c, const char *url, const char *method, const req *q) {
    oai_error e;
    g->n_requests++;
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health") && get) return get_health(g, c);
    if (!authorized(g, c)) {
        oai_errorf(&e, 401, "invalid_request_error", NULL, "a valid API key is required (Authorization: Bearer KEY)");
        snprintf(e.code, sizeof e.code, "invalid_api_key");
        return send_error(g, c, &e);
    }
    if (q->too_large) {
        oai_errorf(&e, 413, "invalid_request_error", NULL, "the request body is larger than %zu bytes", g->max_body);
        return send_error(g, c, &e);
    }
    if (!strcmp(url, "/v1/models") && get) return get_models(g, c, NULL);
    if (!strncmp(url, "/v1/models/", 11) && get) return get_models(g, c, url + 11);
    if (!strcmp(url, "/metrics") && get) return get_metrics(g, c);
    if (!strcmp(url, "/v1/chat/completions") && post) return post_completion(g, c, OAI_CHAT, q);
    if (!strcmp(url, "/v1/completions") && post) return post_completion(g, c, OAI_COMPLETION, q);
    static const char *const known[] = {"/health", "/v1/models", "/metrics", "/v1/chat/completions", "/v1/completions"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(url, known[i])) {
            oai_errorf(&e, 405, "invalid_request_error", NULL, "%s does not take %s", url, method);
            return send_error(g, c, &e);
        }
    oai_errorf(&e, 404, "invalid_request_error", NULL, "no such endpoint: %s %.200s", method, url);
    return send_error(g, c, &e);
}

/* ---- connection deadlines ----
 * A request must arrive whole within body_timeout_s of its connection opening (or of the previous answer
 * on a kept-alive connection). Past it the client gets 408 Request Timeout in OpenAI's error shape and the
 * connection closes. libmicrohttpd has no way to answer then: MHD_queue_response() is refused while a
 * request is still arriving (its state must be HEADERS_PROCESSED or FULL_REQ_RECEIVED, in 0.9.75 as in
 * 1.0.1; "The response cannot be queued when this callback is called to process the client upload data",
 * microhttpd.h), and it has no whole-request timeout. So the watchdog writes the one fixed 408 response
 * on the socket itself: libmicrohttpd writes nothing to a connection while it is reading its request
 * (its `100 Continue` goes out right after the headers, long before a deadline), so the bytes cannot mix
 * with its own. It then shuts our side for writing (the client reads the reply and an end of stream),
 * drops whatever body still drips in, and a second later shuts the socket, at which libmicrohttpd closes
 * the connection (closing at once would reset it, and a reset can destroy the reply before the client
 * reads it). A connection on which no request line arrived (a new one, or a kept-alive one between
 * requests) is closed without a reply: a client reusing it must not take a 408 for its next request.
 * libmicrohttpd's own idle timeout is set past deadline and linger, so the watchdog always decides first.
 * A slot is freed when libmicrohttpd reports the connection closed, before it closes the descriptor, so
 * the watchdog never touches a descriptor that was reused. */
enum { LINGER_S = 1 };

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context, enum MHD_ConnectionNotificationCode code) {
    sd_gateway *g = cls;
    pthread_mutex_lock(&g->lock);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        for (int i = 0; ci && i < MAX_CONNECTIONS; i++)
            if (g->watches[i].fd < 0) {
                g->watches[i] = (watch){ci->connect_fd, sd_now_s() + g->body_timeout_s, W_RECEIVING, false};
                *socket_context = &g->watches[i];
                break;
            }
    } else if (*socket_context) {
        ((watch *)*socket_context)->fd = -1;
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&g->lock);
}

static watch *watch_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* After an answer: the next request on the connection has body_timeout_s from now, once it starts. */
static void await_next_request(sd_gateway *g, struct MHD_Connection *c) {
    watch *w = watch_of(c);
    pthread_mutex_lock(&g->lock);
    if (w && w->state == W_RECEIVING) {
        w->deadline = sd_now_s() + g->body_timeout_s;
        w->started = false;
    }
    pthread_mutex_unlock(&g->lock);
}

/* libmicrohttpd's URI log hook: a request line arrived (its headers and body may still be on the way). */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)uri;
    sd_gateway *g = cls;
    watch *w = watch_of(c);
    pthread_mutex_lock(&g->lock);
    if (w) w->started = true;
    pthread_mutex_unlock(&g->lock);
    return NULL; /* the access handler's first call still finds *con_cls NULL */
}

/* Where the request of connection c stands (W_RECEIVING while it has time left). */
static watch_state request_state(sd_gateway *g, struct MHD_Connection *c) {
    watch *w = watch_of(c);
    pthread_mutex_lock(&g->lock);
    watch_state st = w ? w->state : W_RECEIVING;
    pthread_mutex_unlock(&g->lock);
    return st;
}

/* Before the gateway answers a request itself: false when the watchdog answered it (408) first; else its
 * deadline is lifted, as answering may take as long as generation does. One step under the lock, so the
 * client never gets two answers. */
static bool claim_answer(sd_gateway *g, struct MHD_Connection *c) {
    watch *w = watch_of(c);
    pthread_mutex_lock(&g->lock);
    bool mine = !w || w->state == W_RECEIVING;
    if (w && mine) w->deadline = INFINITY;
    pthread_mutex_unlock(&g->lock);
    return mine;
}

/* The 408 response, headers and OpenAI's error body, sent as it is by the watchdog. */
static int build_timeout_reply(sd_gateway *g) {
    oai_error e;
    oai_errorf(&e, 408, "invalid_request_error", NULL,
               "the request did not arrive whole within %d s (--http-timeout): send the headers and body sooner",
               g->body_timeout_s);
    snprintf(e.code, sizeof e.code, "request_timeout");
    char *body = oai_error_json(&e);
    if (!body) return -1;
    int n = asprintf(&g->timeout_reply,
                     "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s", strlen(body), body);
    free(body);
    if (n < 0) {
        g->timeout_reply = NULL;
        return -1;
    }
    g->timeout_reply_len = (size_t)n;
    return 0;
}

static void expire(sd_gateway *g, watch *w, double now) {
    if (w->state == W_RECEIVING && w->started) {
        ssize_t sent = send(w->fd, g->timeout_reply, g->timeout_reply_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent; /* a client gone or not reading: it is closed all the same */
        shutdown(w->fd, SHUT_WR);
        g->n_errors++;
        w->state = W_ANSWERED;
        w->deadline = now + LINGER_S;
    } else { /* the linger after the 408 is over, or no request on it: closed without (another) reply */
        shutdown(w->fd, SHUT_RDWR);
        w->state = W_CLOSING;
        w->deadline = INFINITY;
    }
}

static void *watchdog(void *arg) {
    sd_gateway *g = arg;
    while (!g->stopping) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        double now = sd_now_s();
        pthread_mutex_lock(&g->lock);
        for (int i = 0; i < MAX_CONNECTIONS; i++)
            if (g->watches[i].fd >= 0 && now > g->watches[i].deadline) expire(g, &g->watches[i], now);
        pthread_mutex_unlock(&g->lock);
    }
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **con_cls) {
    (void)version;
    sd_gateway *g = cls;
    req *q = *con_cls;
    watch_state st = request_state(g, c);
    if (st == W_CLOSING) return MHD_NO; /* answered 408 by the watchdog ("connection deadlines"), lingered: close */
    if (st == W_ANSWERED) { /* answered 408: what still drips in is dropped, and no second answer follows */
        bool more = *data_size != 0;
        *data_size = 0;
        return more ? MHD_YES : MHD_NO;
    }
    if (!q) { /* first call: headers only */
        q = calloc(1, sizeof *q);
        if (!q) return MHD_NO;
        *con_cls = q;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > g->max_body) { /* refused before the body is sent */
            if (!claim_answer(g, c)) return MHD_NO;
            oai_error e;
            oai_errorf(&e, 413, "invalid_request_error", NULL, "the request body is larger than %zu bytes", g->max_body);
            return send_error(g, c, &e);
        }
        return MHD_YES;
    }
    if (*data_size) { /* a piece of the body */
        if (!q->too_large && q->len + *data_size > g->max_body) {
            q->too_large = true;
            free(q->body);
            q->body = NULL;
            q->len = q->cap = 0;
        }
        if (!q->too_large) {
            if (q->len + *data_size + 1 > q->cap) {
                size_t cap = (q->len + *data_size + 1) * 2;
                char *b = realloc(q->body, cap);
                if (!b) return MHD_NO;
                q->body = b;
                q->cap = cap;
            }
            memcpy(q->body + q->len, data, *data_size);
            q->len += *data_size;
            q->body[q->len] = '\0';
        }
        *data_size = 0;
        return MHD_YES;
    }
    if (!claim_answer(g, c)) return MHD_NO; /* complete, but the watchdog answered first */
    return route(g, c, url, method, q);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)toe;
    await_next_request(cls, c); /* keep-alive */
    req *q = *con_cls;
    if (q) {
        free(q->body);
        free(q);
    }
    *con_cls = NULL;
}

/* "[HOST:]PORT" into an IPv4 address; loopback tells whether it is 127.0.0.0/8. */
static int parse_listen(const char *s, struct sockaddr_in *sa, bool *loopback, sd_err *err) {
    char host[256] = "127.0.0.1";
    const char *colon = strrchr(s, ':'), *port = colon ? colon + 1 : s;
    if (colon) {
        size_t n = (size_t)(colon - s);
        if (n >= sizeof host) return sd_errf(err, "--http %s: host too long", s);
        memcpy(host, s, n);
        host[n] = '\0';
        if (!n) snprintf(host, sizeof host, "127.0.0.1");
    }
    if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 1 || p > 65535) return sd_errf(err, "--http %s: the port must be 1..65535", s);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)p);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return sd_errf(err, "--http %s: '%s' is not an IPv4 address", s, host);
    *loopback = (ntohl(sa->sin_addr.s_addr) >> 24) == 127;
    return 0;
}

int sd_gateway_start(const sd_gateway_opts *o, sd_gateway **out, sd_err *err) {
    *out = NULL;
    struct sockaddr_in sa;
    bool loopback;
    if (parse_listen(o->listen, &sa, &loopback, err)) return -1;
    if (!loopback && !(o->api_key && *o->api_key))
        return sd_errf(err, "--http %s: serving beyond loopback needs --api-key KEY", o->listen);
    sd_gateway *g = calloc(1, sizeof *g);
    if (!g) return sd_errf(err, "out of memory");
    snprintf(g->endpoint, sizeof g->endpoint, "%s", o->endpoint);
    snprintf(g->api_key, sizeof g->api_key, "%s", o->api_key ? o->api_key : "");
    g->max_body = o->max_body ? o->max_body : MAX_BODY_DEFAULT;
    g->body_timeout_s = o->body_timeout_s > 0 ? o->body_timeout_s : BODY_SECONDS_DEFAULT;
    pthread_mutex_init(&g->lock, NULL);
    for (int i = 0; i < MAX_CONNECTIONS; i++) g->watches[i].fd = -1;
    if (build_timeout_reply(g) || pthread_create(&g->watchdog, NULL, watchdog, g)) {
        pthread_mutex_destroy(&g->lock);
        free(g->timeout_reply);
        free(g);
        return sd_errf(err, "--http: out of memory or cannot start a thread");
    }
    g->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                              0, NULL, NULL, on_request, g, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_NOTIFY_CONNECTION, on_connection, g,
                              MHD_OPTION_URI_LOG_CALLBACK, on_request_line, g,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(g->body_timeout_s + LINGER_S + 1), MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)MAX_CONNECTIONS, MHD_OPTION_END);
    if (!g->mhd) {
        sd_gateway_stop(g);
        return sd_errf(err, "--http %s: cannot listen there (port in use?)", o->listen);
    }
    *out = g;
    return 0;
}

void sd_gateway_stop(sd_gateway *g) {
    if (!g) return;
    g->stopping = true;
    pthread_join(g->watchdog, NULL);
    if (g->mhd) MHD_stop_daemon(g->mhd);
    while (g->n_idle) specd_close(g->idle[--g->n_idle]);
    pthread_mutex_destroy(&g->lock);
    free(g->timeout_reply);
    free(g);
}
