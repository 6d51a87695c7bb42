/* The daemon's socket thread: it alone owns the ROUTER socket. It decodes every request, answers ping,
 * info, stats and cancel itself, refuses what is invalid, a duplicate id or over the admission limit, and
 * hands the rest to the engine thread (daemon/link.h); the engine's replies come back to it and it sends
 * them. So a request is answered or queued while a batch runs, never behind it.
 *
 * It also owns everything about a client connection: its tenant (SO_PEERCRED's user on the Unix socket,
 * the CURVE key on TCP), heartbeats, noticing a vanished client, and a bounded output queue per client: a
 * client that does not read its replies is dropped (its requests cancelled, a log line) once more than
 * SD_CLIENT_OUT_MAX bytes wait for it, so it can never grow the daemon. */
#ifndef SD_FRONT_H
#define SD_FRONT_H
#include <stdbool.h>

#include "chat/chat.h"
#include "daemon/server.h"
#include "daemon/stats.h"
#include "daemon/zap.h"
#include "target/engine.h"

/* Per client: at most SD_CLIENT_PIPE_MSGS messages in ZeroMQ's queue (ZMQ_SNDHWM), then at most
 * SD_CLIENT_OUT_MAX bytes in the daemon's own queue (so bursts wait, and one message of the 4 MiB limit
 * always fits) before the client counts as not reading. */
#define SD_CLIENT_PIPE_MSGS 16
#define SD_CLIENT_OUT_MAX (8u << 20)

typedef struct sd_front sd_front;

typedef struct sd_front_cfg {
    void *zctx, *router, *monitor, *link; /* monitor may be NULL */
    sd_zap *zap;                          /* CURVE's client check, or NULL */
    const sd_server_opts *o;
    const sd_engine *e;                   /* read-only here: info */
    const sd_chat *chat;
    sd_board *board;
} sd_front_cfg;

/* Runs the socket thread's loop until the engine sends EXIT, then gives pending output up to a second. */
void sd_front_run(const sd_front_cfg *cfg);

#endif
