/* Internals of the daemon's engine thread, shared by daemon/server.c (the loop, generate) and
 * daemon/ops.c (tokenize, detokenize, info). The socket thread (daemon/front.c) owns the socket; the
 * engine thread answers through it (daemon/link.h). */
#ifndef SD_SRV_H
#define SD_SRV_H
#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

#include "base/version.h"
#include "chat/chat.h"
#include "daemon/link.h"
#include "daemon/scheduler.h"
#include "daemon/server.h"
#include "daemon/stats.h"
#include "ipc/protocol.h"
#include "target/engine.h"

#define SD_VERSION_STR "specd " SD_VERSION
#define IDLE_WAIT_MS 50 /* with nothing to step, wait this long for a request (bounds signal latency) */

typedef struct srv {
    sd_engine *e;
    const sd_server_opts *o;
    void *link;             /* the engine's end of the link to the socket thread */
    sd_board *board;        /* counters and load, shared with the socket thread */
    sd_sched sched;
    msgpack_sbuffer sb;
    bool shutting;
    double deadline;
    uint64_t seed_state;
    sd_chat *chat;          /* the chat template, NULL when the model has none (chat requests fail) */
    int delay_ms;           /* SPECD_TURN_DELAY_MS: the test hook that makes every turn this much slower */
} srv;

/* Hands S->sb to the socket thread as a reply to request id of client `to`; final: its last reply.
 * A reply over the message limit is replaced by a `reply_too_large` error. */
void srv_post(srv *S, const sd_peer *to, uint64_t id, bool final);
/* Sends an `error` reply (final) and counts it. */
void srv_error(srv *S, const sd_peer *to, bool has_id, uint64_t id, const char *code, const char *field,
               const char *msg);
const char *srv_proposer_name(sd_proposer_kind k);
/* Checks ids against the vocabulary; on the first bad one fills fname ("tokens[3]") and msg, returns -1. */
int srv_check_vocab(const sd_engine *e, const int32_t *ids, int n, const char *field, char *fname, size_t fcap,
                    char *msg, size_t mcap);
/* Packs the `info` result into sb (read-only use of the engine: the socket thread calls it). */
void srv_pack_info(msgpack_sbuffer *sb, const sd_engine *e, const sd_server_opts *o, const sd_chat *chat,
                   uint64_t id);
/* Answer tokenize / detokenize. */
void srv_op_tokenize(srv *S, const sd_peer *to, sd_request *q);
void srv_op_detokenize(srv *S, const sd_peer *to, sd_request *q);

#endif
