/* Internals shared by daemon/server.c (the loop, generate) and daemon/ops.c (the quick ops). */
#ifndef SD_SRV_H
#define SD_SRV_H
#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

#include "base/version.h"
#include "chat/chat.h"
#include "daemon/scheduler.h"
#include "daemon/server.h"
#include "daemon/stats.h"
#include "ipc/protocol.h"
#include "target/engine.h"

#define SD_VERSION_STR "specd " SD_VERSION
#define HEARTBEAT_AFTER_S 1.0   /* a client with requests in flight hears from us at least this often */
#define PROBE_S 0.5             /* how long to probe clients after a connection closed */
#define PROBE_EVERY_S 0.05
#define IDLE_POLL_MS 50         /* poll timeout with nothing to step (bounds signal/heartbeat latency) */
#define SNDHWM 100000           /* queued outgoing messages per client before it counts as not reading */

typedef struct srv {
    sd_engine *e;
    const sd_server_opts *o;
    void *zctx, *sock, *mon;
    sd_sched sched;
    sd_srv_stats st;
    msgpack_sbuffer sb;
    bool shutting;
    double deadline;
    double probe_until;     /* after a disconnect: probe every in-flight client until then */
    uint64_t seed_state;
    sd_chat *chat;          /* the chat template, NULL when the model has none (chat requests fail) */
} srv;

/* Sends S->sb to client rid; -1 when the client is gone (its requests are marked for cancelling). */
int srv_send(srv *S, const unsigned char *rid, int rid_len);
/* Sends an `error` reply (and counts it). */
void srv_error(srv *S, const unsigned char *rid, int rid_len, bool has_id, uint64_t id, const char *code,
               const char *field, const char *msg);
const char *srv_proposer_name(sd_proposer_kind k);
/* Checks ids against the vocabulary; on the first bad one fills fname ("tokens[3]") and msg, returns -1. */
int srv_check_vocab(srv *S, const int32_t *ids, int n, const char *field, char *fname, size_t fcap, char *msg,
                    size_t mcap);
/* Pack the result into S->sb (info, stats) or answer directly (tokenize, detokenize). */
void srv_op_info(srv *S, uint64_t id);
void srv_op_stats(srv *S, uint64_t id);
void srv_op_tokenize(srv *S, const unsigned char *rid, int rid_len, sd_request *q);
void srv_op_detokenize(srv *S, const unsigned char *rid, int rid_len, sd_request *q);

#endif
