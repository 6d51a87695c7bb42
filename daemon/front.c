/* The socket thread (daemon/front.h): the ROUTER socket, every client's state, and the answers that need
 * no engine. */
#include "daemon/front.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "base/clock.h"
#include "daemon/link.h"
#include "daemon/log.h"
#include "daemon/srv.h"
#include "ipc/protocol.h"

#define HEARTBEAT_AFTER_S 1.0   /* a client with requests in flight hears from us at least this often */
#define HEARTBEAT_CHECK_S 0.25
#define PROBE_S 0.5             /* how long to probe clients after a connection closed */
#define PROBE_EVERY_S 0.05
#define IDLE_POLL_MS 50
#define BUSY_POLL_MS 2          /* while some client's output waits: retry that often */
#define N_BUCKETS 256
#define MAX_TENANTS 4096        /* distinct identities remembered (Unix users, CURVE keys) */

typedef struct out_msg {
    zmq_msg_t body;
    struct out_msg *next;
} out_msg;

typedef struct inflight {
    uint64_t id;
    bool gen;                   /* a generate / chat (counts against admission) */
} inflight;

/* One connection, from its first message until it has nothing in flight and nothing to send. */
typedef struct client {
    unsigned char rid[SD_RID_MAX];
    int rid_len;
    sd_tenant tenant;
    inflight *fl;               /* requests handed to the engine, not yet ended */
    int n_fl, cap_fl;
    out_msg *out_head, *out_tail; /* replies ZeroMQ would not take yet, in order */
    size_t out_bytes;
    double t_last_send;
    bool dropped;               /* gone or not reading: replies are discarded until its requests end */
    bool pinned;                /* being answered: maybe_forget leaves it */
    struct client *next;        /* hash chain */
} client;

struct sd_front {
    sd_front_cfg c;
    client *buckets[N_BUCKETS];
    int n_clients, n_waiting;   /* clients; clients with queued output */
    int n_gen;                  /* generate / chat requests in flight (running or queued in the engine) */
    char *tenant_names[MAX_TENANTS];
    int n_tenants;
    msgpack_sbuffer sb;
    double probe_until, last_probe, last_hb;
    bool engine_done;
};

/* ------------------------------------------------------------------ clients */

static unsigned hash_rid(const unsigned char *rid, int len) {
    unsigned h = 2166136261u;
    for (int i = 0; i < len; i++) h = (h ^ rid[i]) * 16777619u;
    return h % N_BUCKETS;
}

static client *find_client(sd_front *F, const unsigned char *rid, int len) {
    for (client *c = F->buckets[hash_rid(rid, len)]; c; c = c->next)
        if (c->rid_len == len && !memcmp(c->rid, rid, (size_t)len)) return c;
    return NULL;
}

static client *add_client(sd_front *F, const unsigned char *rid, int len, sd_tenant t) {
    client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    memcpy(c->rid, rid, (size_t)len);
    c->rid_len = len;
    c->tenant = t;
    c->t_last_send = sd_now_s();
    unsigned h = hash_rid(rid, len);
    c->next = F->buckets[h];
    F->buckets[h] = c;
    F->n_clients++;
    return c;
}

static void clear_output(sd_front *F, client *c) {
    if (c->out_head) F->n_waiting--;
    for (out_msg *m = c->out_head, *nx; m; m = nx) {
        nx = m->next;
        zmq_msg_close(&m->body);
        free(m);
    }
    c->out_head = c->out_tail = NULL;
    c->out_bytes = 0;
}

/* Forgets c once nothing is in flight or waiting for it. */
static void maybe_forget(sd_front *F, client *c) {
    if (c->n_fl || c->out_head || c->pinned) return;
    client **pp = &F->buckets[hash_rid(c->rid, c->rid_len)];
    while (*pp && *pp != c) pp = &(*pp)->next;
    if (*pp) *pp = c->next;
    free(c->fl);
    free(c);
    F->n_clients--;
}

static int fl_find(const client *c, uint64_t id) {
    for (int i = 0; i < c->n_fl; i++)
        if (c->fl[i].id == id) return i;
    return -1;
}

static int fl_add(sd_front *F, client *c, uint64_t id, bool gen) {
    if (c->n_fl == c->cap_fl) {
        int cap = c->cap_fl ? 2 * c->cap_fl : 4;
        inflight *n = realloc(c->fl, (size_t)cap * sizeof *n);
        if (!n) return -1;
        c->fl = n;
        c->cap_fl = cap;
    }
    c->fl[c->n_fl++] = (inflight){id, gen};
    F->n_gen += gen;
    return 0;
}

static void fl_remove(sd_front *F, client *c, uint64_t id) {
    int i = fl_find(c, id);
    if (i < 0) return;
    F->n_gen -= c->fl[i].gen;
    c->fl[i] = c->fl[--c->n_fl];
}

/* ------------------------------------------------------------------ tenants */

/* The tenant of a message: the Unix user of an ipc peer (ZeroMQ reports SO_PEERCRED in the peer address
 * as "...:uid:gid:pid"), the CURVE key on TCP (the ZAP handler's user id), else one shared tenant for
 * unauthenticated TCP (loopback only: the daemon warned at start-up). */
static void identity_of(zmq_msg_t *m, char *out, size_t cap) {
    const char *user = zmq_msg_gets(m, "User-Id");
    if (user && *user) { snprintf(out, cap, "key:%s", user); return; }
    const char *peer = zmq_msg_gets(m, "Peer-Address");
    const char *p = peer ? strrchr(peer, ':') : NULL;  /* ":pid" */
    int colons = 0;
    while (p && p > peer && colons < 2) {
        p--;
        if (*p == ':') colons++;
    }
    if (p && colons == 2 && *p == ':') {
        unsigned long uid = strtoul(p + 1, NULL, 10);
        snprintf(out, cap, "uid:%lu", uid);
        return;
    }
    snprintf(out, cap, "tcp");
}

static sd_tenant intern_tenant(sd_front *F, const char *name) {
    for (int i = 0; i < F->n_tenants; i++)
        if (!strcmp(F->tenant_names[i], name)) return (sd_tenant)i + 1;
    if (F->n_tenants == MAX_TENANTS) return 0;
    char *s = strdup(name);
    if (!s) return 0;
    F->tenant_names[F->n_tenants++] = s;
    return (sd_tenant)F->n_tenants;
}

/* ------------------------------------------------------------------ sending */

static void link_up(sd_front *F, sd_link_kind kind, const client *c, uint64_t target, const char *why,
                    sd_request *q) {
    sd_link_up *u = calloc(1, sizeof *u);
    if (!u) { sd_log(SD_LOG_ERROR, "out of memory handing a message to the engine"); return; }
    u->kind = kind;
    memcpy(u->from.rid, c->rid, (size_t)c->rid_len);
    u->from.rid_len = c->rid_len;
    u->from.tenant = c->tenant;
    u->target = target;
    if (why) snprintf(u->why, sizeof u->why, "%s", why);
    if (q) { u->q = *q; sd_request_init(q, SD_OP_NONE, 0); }
    else sd_request_init(&u->q, SD_OP_NONE, 0);
    if (sd_link_send_up(F->c.link, u)) sd_log(SD_LOG_ERROR, "the engine link is closed");
}

/* The client stopped reading or vanished: its requests end, its output is discarded. */
static void drop_client(sd_front *F, client *c, const char *why) {
    if (c->dropped) return;
    c->dropped = true;
    char hex[40];
    sd_log_rid(c->rid, c->rid_len, hex, sizeof hex);
    if (c->out_bytes)
        sd_log(SD_LOG_WARN, "client %s %s: dropping it with %zu bytes of replies unsent, cancelling its %d request(s)",
               hex, why, c->out_bytes, c->n_fl);
    else if (c->n_fl)
        sd_log(SD_LOG_INFO, "client %s %s: cancelling its %d request(s)", hex, why, c->n_fl);
    clear_output(F, c);
    if (c->n_fl) link_up(F, SD_LINK_GONE, c, 0, why, NULL);
}

/* 1 sent, 0 ZeroMQ's queue for c is full, -1 c is gone. */
static int try_send(sd_front *F, client *c, zmq_msg_t *body) {
    if (zmq_send(F->c.router, c->rid, (size_t)c->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return zmq_errno() == EAGAIN ? 0 : -1;
    if (zmq_msg_send(body, F->c.router, ZMQ_DONTWAIT) < 0) return -1;
    c->t_last_send = sd_now_s();
    return 1;
}

/* Sends body to c, or queues it behind what already waits; takes body. */
static void deliver(sd_front *F, client *c, zmq_msg_t *body) {
    if (c->dropped) { zmq_msg_close(body); return; }
    if (!c->out_head) {
        int rc = try_send(F, c, body);
        if (rc != 0) {
            zmq_msg_close(body);
            if (rc < 0) drop_client(F, c, "has disconnected");
            return;
        }
    }
    size_t n = zmq_msg_size(body);
    if (c->out_bytes + n > SD_CLIENT_OUT_MAX) {
        zmq_msg_close(body);
        char why[96];
        snprintf(why, sizeof why, "is not reading its replies (over %u bytes waiting)", SD_CLIENT_OUT_MAX);
        drop_client(F, c, why);
        return;
    }
    out_msg *m = malloc(sizeof *m);
    if (!m) { zmq_msg_close(body); drop_client(F, c, "could not be queued to (out of memory)"); return; }
    zmq_msg_init(&m->body);
    zmq_msg_move(&m->body, body);
    zmq_msg_close(body);
    m->next = NULL;
    if (!c->out_head) F->n_waiting++;
    if (c->out_tail) c->out_tail->next = m; else c->out_head = m;
    c->out_tail = m;
    c->out_bytes += n;
}

/* Sends S->sb (the packed reply) to c. */
static void answer(sd_front *F, client *c) {
    zmq_msg_t m;
    if (zmq_msg_init_size(&m, F->sb.size)) return;
    memcpy(zmq_msg_data(&m), F->sb.data, F->sb.size);
    deliver(F, c, &m);
}

static void answer_error(sd_front *F, client *c, bool has_id, uint64_t id, const char *code, const char *field,
                         const char *msg) {
    sd_board_update(F->c.board, c->tenant, sd_board_count_error, NULL);
    msgpack_sbuffer_clear(&F->sb);
    sd_enc_error(&F->sb, has_id, id, code, field, msg);
    answer(F, c);
}

/* Moves what waits for each client into ZeroMQ's queues, as far as they take it. */
static void flush_waiting(sd_front *F) {
    for (int b = 0; b < N_BUCKETS && F->n_waiting; b++)
        for (client *c = F->buckets[b], *nx; c; c = nx) {
            nx = c->next;
            while (c->out_head) {
                out_msg *m = c->out_head;
                size_t n = zmq_msg_size(&m->body);
                int rc = try_send(F, c, &m->body);
                if (rc == 0) break;
                if (rc < 0) { drop_client(F, c, "has disconnected"); break; }
                c->out_head = m->next;
                if (!c->out_head) { c->out_tail = NULL; F->n_waiting--; }
                c->out_bytes -= n;
                zmq_msg_close(&m->body);
                free(m);
            }
            maybe_forget(F, c);
        }
}

/* ------------------------------------------------------------------ requests */

static void op_ping(sd_front *F, client *c, uint64_t id) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char why[256];
    sd_board *b = F->c.board;
    pthread_mutex_lock(&b->mu);
    bool failed = b->failed;
    snprintf(why, sizeof why, "%s", b->fail_msg);
    pthread_mutex_unlock(&b->mu);
    msgpack_sbuffer_clear(&F->sb);
    sd_enc_result_pong(&F->sb, id, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u,
                       failed ? why : NULL);
    answer(F, c);
}

static void op_stats(sd_front *F, client *c, uint64_t id) {
    msgpack_sbuffer_clear(&F->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &F->sb, msgpack_sbuffer_write);
    sd_enc_result_begin(&pk, id, SD_OP_STATS, SD_STATS_N_FIELDS);
    sd_board_pack(F->c.board, c->tenant, &pk, sd_now_s());
    answer(F, c);
}

static void drain_link(sd_front *F);

/* Answered at once; the engine ends the request before its next step. What the engine made before goes
 * out first, so after the answer the client sees only the tokens of a step that was already running. */
static void op_cancel(sd_front *F, client *c, const sd_request *q) {
    int i = fl_find(c, q->target);
    bool found = i >= 0 && c->fl[i].gen;
    if (found) {
        c->pinned = true; /* the drain may end its last request */
        drain_link(F);
        c->pinned = false;
    }
    msgpack_sbuffer_clear(&F->sb);
    sd_enc_result_cancel(&F->sb, q->id, q->target, found);
    answer(F, c);
    if (found) link_up(F, SD_LINK_CANCEL, c, q->target, NULL, NULL);
}

/* Generate and chat requests beyond the running and queued limits are refused here, at once. */
static bool admit(sd_front *F, client *c, uint64_t id) {
    const sd_server_opts *o = F->c.o;
    if (F->n_gen < o->max_sessions + o->queue) return true;
    sd_board_update(F->c.board, c->tenant, sd_board_count_busy, NULL);
    int active = F->n_gen < o->max_sessions ? F->n_gen : o->max_sessions;
    msgpack_sbuffer_clear(&F->sb);
    sd_enc_busy(&F->sb, id, 100, F->n_gen - active, active);
    answer(F, c);
    return false;
}

static void dispatch(sd_front *F, client *c, sd_request *q) {
    bool gen = q->op == SD_OP_GENERATE || q->op == SD_OP_CHAT;
    if (!gen) sd_board_update(F->c.board, c->tenant, sd_board_count_other, NULL);
    if (fl_find(c, q->id) >= 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "request id %llu is already in flight on this connection", (unsigned long long)q->id);
        answer_error(F, c, true, q->id, SD_E_DUPLICATE_ID, "id", msg);
        return;
    }
    switch (q->op) {
    case SD_OP_PING: op_ping(F, c, q->id); return;
    case SD_OP_STATS: op_stats(F, c, q->id); return;
    case SD_OP_INFO:
        srv_pack_info(&F->sb, F->c.e, F->c.o, F->c.chat, q->id);
        answer(F, c);
        return;
    case SD_OP_CANCEL: op_cancel(F, c, q); return;
    default: break;
    }
    if (gen && !admit(F, c, q->id)) return;
    if (fl_add(F, c, q->id, gen)) {
        answer_error(F, c, true, q->id, SD_E_INTERNAL, NULL, "out of memory");
        return;
    }
    link_up(F, SD_LINK_REQUEST, c, 0, NULL, q);
}

/* Receives one routed message (routing id + frames) and handles it. 0 when there was none. */
static int receive_one(sd_front *F) {
    unsigned char rid[SD_RID_MAX];
    int rl = zmq_recv(F->c.router, rid, sizeof rid, ZMQ_DONTWAIT);
    if (rl < 0) return 0;
    if (rl > SD_RID_MAX) rl = SD_RID_MAX;
    zmq_msg_t body;
    zmq_msg_init(&body);
    int frames = 0, more = 1;
    size_t ml = sizeof more;
    zmq_getsockopt(F->c.router, ZMQ_RCVMORE, &more, &ml);
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, F->c.router, 0) < 0) { zmq_msg_close(&m); break; }
        frames++;
        more = zmq_msg_more(&m);
        if (frames == 1) zmq_msg_move(&body, &m);
        zmq_msg_close(&m);
    }
    client *c = find_client(F, rid, rl);
    if (!c) {
        char ident[128];
        identity_of(&body, ident, sizeof ident);
        c = add_client(F, rid, rl, intern_tenant(F, ident));
        if (!c) { zmq_msg_close(&body); return 1; }
    }
    if (c->dropped) { /* it does not read what we send: nothing is done for it until its requests have ended */
        zmq_msg_close(&body);
        maybe_forget(F, c);
        return 1;
    }
    if (frames != 1) {
        char msg[96];
        snprintf(msg, sizeof msg, "a request is exactly one frame (one MessagePack map), got %d frames", frames);
        answer_error(F, c, false, 0, SD_E_BAD_MESSAGE, NULL, msg);
    } else {
        sd_request q;
        sd_proto_err pe;
        if (sd_request_decode(zmq_msg_data(&body), zmq_msg_size(&body), &q, &pe)) {
            answer_error(F, c, pe.has_id, pe.id, pe.code, pe.field, pe.message);
        } else {
            dispatch(F, c, &q);
            sd_request_free(&q);
        }
    }
    zmq_msg_close(&body);
    maybe_forget(F, c);
    return 1;
}

/* ------------------------------------------------------------------ the engine's side */

static void from_engine(sd_front *F, const sd_link_down *d, zmq_msg_t *body) {
    if (d->kind == SD_LINK_EXIT) { F->engine_done = true; return; }
    client *c = find_client(F, d->rid, d->rid_len);
    if (!c) return; /* forgotten: cannot happen while a request of it is in flight */
    if (d->kind == SD_LINK_REPLY && zmq_msg_size(body)) deliver(F, c, body);
    if (d->final || d->kind == SD_LINK_END) fl_remove(F, c, d->id);
    maybe_forget(F, c);
}

static void drain_link(sd_front *F) {
    for (int i = 0; i < 4096; i++) {
        sd_link_down d;
        zmq_msg_t body;
        if (!sd_link_recv_down(F->c.link, &d, &body)) return;
        from_engine(F, &d, &body);
        zmq_msg_close(&body);
    }
}

/* ------------------------------------------------------------------ liveness */

/* A heartbeat to every client with requests in flight that heard nothing for HEARTBEAT_AFTER_S (all of
 * them when force): a vanished client fails the send, and its requests end. */
static void heartbeats(sd_front *F, bool force) {
    double now = sd_now_s();
    msgpack_sbuffer_clear(&F->sb);
    sd_enc_heartbeat(&F->sb);
    for (int b = 0; b < N_BUCKETS; b++)
        for (client *c = F->buckets[b]; c; c = c->next)
            if (c->n_fl && !c->dropped && !c->out_head && (force || now - c->t_last_send >= HEARTBEAT_AFTER_S))
                answer(F, c);
}

/* Socket monitor: a connection closed (a client went away, or ZeroMQ dropped one that sent a message over
 * ZMQ_MAXMSGSIZE). The event does not say which client: probe them all for a while (the ROUTER forgets the
 * peer only once its pipe is torn down, shortly after the event). */
static void drain_monitor(sd_front *F) {
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, F->c.monitor, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&ev); return; }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 6) memcpy(&event, zmq_msg_data(&ev), 2);
        zmq_msg_init(&addr);
        if (zmq_msg_more(&ev)) zmq_msg_recv(&addr, F->c.monitor, 0);
        if (event == ZMQ_EVENT_DISCONNECTED) {
            sd_log(SD_LOG_INFO, "a client connection closed (the client went away, or ZeroMQ dropped it for a "
                   "message over %u bytes)", SD_PROTO_MAX_MSG_BYTES);
            F->probe_until = sd_now_s() + PROBE_S;
        }
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
    }
}

static void liveness(sd_front *F) {
    double now = sd_now_s();
    if (now < F->probe_until && now - F->last_probe > PROBE_EVERY_S) {
        heartbeats(F, true);
        F->last_probe = now;
    } else if (now - F->last_hb > HEARTBEAT_CHECK_S) {
        heartbeats(F, false);
        F->last_hb = now;
    }
}

/* ------------------------------------------------------------------ loop */

static void poll_once(sd_front *F, int timeout_ms) {
    zmq_pollitem_t items[4] = {{F->c.router, 0, ZMQ_POLLIN, 0}, {F->c.link, 0, ZMQ_POLLIN, 0}};
    int n = 2, mon = -1, zap = -1;
    if (F->c.monitor) { mon = n; items[n++] = (zmq_pollitem_t){F->c.monitor, 0, ZMQ_POLLIN, 0}; }
    if (F->c.zap) { zap = n; items[n++] = (zmq_pollitem_t){F->c.zap->sock, 0, ZMQ_POLLIN, 0}; }
    if (zmq_poll(items, n, timeout_ms) <= 0) return;
    if (items[1].revents & ZMQ_POLLIN) drain_link(F);
    if (items[0].revents & ZMQ_POLLIN)
        for (int i = 0; i < 1000 && receive_one(F); i++) {}
    if (mon >= 0 && (items[mon].revents & ZMQ_POLLIN)) drain_monitor(F);
    if (zap >= 0 && (items[zap].revents & ZMQ_POLLIN)) sd_zap_answer(F->c.zap);
}

static void free_front(sd_front *F) {
    for (int b = 0; b < N_BUCKETS; b++)
        for (client *c = F->buckets[b], *nx; c; c = nx) {
            nx = c->next;
            clear_output(F, c);
            free(c->fl);
            free(c);
        }
    for (int i = 0; i < F->n_tenants; i++) free(F->tenant_names[i]);
    msgpack_sbuffer_destroy(&F->sb);
    free(F);
}

void sd_front_run(const sd_front_cfg *cfg) {
    sd_front *F = calloc(1, sizeof *F);
    if (!F) { sd_log(SD_LOG_ERROR, "out of memory for the socket thread"); return; }
    F->c = *cfg;
    msgpack_sbuffer_init(&F->sb);
    F->last_hb = sd_now_s();
    while (!F->engine_done) {
        poll_once(F, F->n_waiting ? BUSY_POLL_MS : IDLE_POLL_MS);
        if (F->n_waiting) flush_waiting(F);
        liveness(F);
    }
    /* what is still queued for slow readers gets a second to leave (ZMQ_LINGER covers ZeroMQ's queues) */
    double end = sd_now_s() + 1.0;
    while (F->n_waiting && sd_now_s() < end) {
        flush_waiting(F);
        zmq_poll(NULL, 0, BUSY_POLL_MS);
    }
    free_front(F);
}
