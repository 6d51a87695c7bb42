/* Admission and session reuse for the daemon.
 *
 * At most max_sessions requests run at once, each on its own engine session (KV caches); beyond that a
 * FIFO wait queue of queue_max requests; a request arriving when both are full is refused (`busy`).
 * Sessions outlive requests: a new request takes the idle session of its own tenant whose cached tokens
 * share the longest prefix with its prompt, so long shared prompts (agent system prompts) are prefilled
 * once; another tenant's cached tokens are never reused (the engine checks it too, sd_gen_params.tenant). */
#ifndef SD_SCHEDULER_H
#define SD_SCHEDULER_H
#include <stdbool.h>
#include <stdint.h>

#include "daemon/link.h"
#include "daemon/stats.h"
#include "ipc/protocol.h"
#include "target/engine.h"

/* One generate request inside the daemon. */
typedef struct sd_dreq {
    uint64_t id;
    sd_peer from;            /* its client (connection and tenant) */
    sd_request req;          /* decoded request: owns prompt text, stop strings */
    int32_t *prompt;         /* prompt token ids (malloc'd) */
    int n_prompt;
    sd_gen_params params;
    uint64_t seed;
    bool stream;
    int slot;                /* pool slot while running, -1 otherwise */
    sd_gen *gen;             /* while running */
    double t_arrive, t_start, t_first; /* seconds, monotonic */
    size_t sent_bytes;       /* text streamed so far */
    int sent_ids;            /* ids streamed so far */
    bool gone;               /* its client vanished: end it at the next safe point */
    struct sd_dreq *next;    /* wait-queue link */
} sd_dreq;

typedef struct sd_pool_slot {
    sd_session *s;   /* NULL until first used */
    sd_tenant tenant; /* whose tokens its caches hold */
    bool busy;
    uint64_t last_used; /* tick of the last release, for least-recently-used choice */
} sd_pool_slot;

typedef struct sd_sched {
    sd_engine *e;
    int max_active, queue_max;
    sd_dreq **active;        /* max_active entries; NULL = free */
    int n_active;
    sd_dreq *q_head, *q_tail;
    int n_queued;
    sd_pool_slot *pool;      /* max_active slots */
    int n_pool;              /* sessions allocated */
    uint64_t tick;
    sd_dreq **turn;          /* max_active entries: the requests of the turn being stepped */
    sd_gen **gens;           /* max_active entries: their generations */
} sd_sched;

int sd_sched_init(sd_sched *s, sd_engine *e, int max_active, int queue_max, sd_err *err);
/* Frees the pool's sessions. Requests must have been ended by the caller first. */
void sd_sched_free(sd_sched *s);

/* Finds a running or queued request of client rid by id. */
sd_dreq *sd_sched_find(sd_sched *s, const unsigned char *rid, int rid_len, uint64_t id);

bool sd_sched_can_start(const sd_sched *s);
bool sd_sched_can_queue(const sd_sched *s);
void sd_sched_enqueue(sd_sched *s, sd_dreq *r);
/* Removes r from the queue; returns false when it was not queued. */
bool sd_sched_dequeue(sd_sched *s, sd_dreq *r);
sd_dreq *sd_sched_pop(sd_sched *s);

/* Takes a session for r (best cached prefix), starts its generation and makes r active.
 * -1 with err when the engine refuses (r stays inactive, its session is released). */
int sd_sched_start(sd_sched *s, sd_dreq *r, sd_err *err);
/* Ends r's generation (if any), releases its session and removes it from the active set. */
void sd_sched_finish(sd_sched *s, sd_dreq *r);

int sd_sched_pool_busy(const sd_sched *s);
/* KV cache use of the pool's sessions (the `stats` op's `kv`). */
void sd_sched_kv_use(const sd_sched *s, sd_kv_use *out);

void sd_dreq_free(sd_dreq *r);

#endif
