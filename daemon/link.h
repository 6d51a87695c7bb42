/* The hand-off between the daemon's two threads (inproc ZeroMQ PAIR sockets, one each):
 *   socket thread -> engine thread: requests (decoded), cancels, "this client is gone";
 *   engine thread -> socket thread: replies addressed to a client, each tagged with its request id and
 *                                   whether it is that request's last one, and "exit" at the end.
 * Every request the socket thread hands over ends with exactly one final message from the engine (with a
 * body, or without one when its client is gone), so the socket thread always knows what is in flight. */
#ifndef SD_LINK_H
#define SD_LINK_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "ipc/protocol.h"

#define SD_RID_MAX 255 /* ZeroMQ routing ids are at most 255 bytes */
#define SD_LINK_ENDPOINT "inproc://specd-engine"

typedef enum sd_link_kind {
    SD_LINK_REQUEST = 1, /* up: a request for the engine (generate, chat, tokenize, detokenize) */
    SD_LINK_CANCEL,      /* up: end request `target` of this client (already answered) */
    SD_LINK_GONE,        /* up: this client vanished or stopped reading: end all its requests */
    SD_LINK_REPLY,       /* down: a reply body for the client */
    SD_LINK_END,         /* down: the request ended without a reply (its client is gone) */
    SD_LINK_EXIT,        /* down: the engine has shut down; nothing follows */
} sd_link_kind;

/* Who sent a request, as the engine scopes cached prompts and statistics: one tenant per Unix user on
 * the socket file, per CURVE key on TCP, per connection on unauthenticated TCP. 0: none. */
typedef uint64_t sd_tenant;

/* A client connection as the engine addresses it. */
typedef struct sd_peer {
    unsigned char rid[SD_RID_MAX];
    int rid_len;
    sd_tenant tenant;
} sd_peer;

/* An upward message (heap-allocated; the receiver frees it with sd_link_up_free). */
typedef struct sd_link_up {
    sd_link_kind kind;
    sd_peer from;
    uint64_t target;  /* SD_LINK_CANCEL: the request to end */
    char why[48];     /* SD_LINK_GONE: "has disconnected", "is not reading its replies" */
    sd_request q;     /* SD_LINK_REQUEST: the decoded request (owned) */
} sd_link_up;

/* A downward message's first frame; the second frame is the reply body (empty for END and EXIT). */
typedef struct sd_link_down {
    sd_link_kind kind;
    bool final;       /* REPLY: the request's last reply */
    int rid_len;
    uint64_t id;
    unsigned char rid[SD_RID_MAX];
} sd_link_down;

/* Sends u (ownership passes to the engine thread). -1 when the link is closed (u is freed). */
int sd_link_send_up(void *sock, sd_link_up *u);
/* Receives one upward message without waiting; NULL when there is none. */
sd_link_up *sd_link_recv_up(void *sock);
void sd_link_up_free(sd_link_up *u);

/* Sends a reply body (taken from sb, which is left empty) or, with sb NULL, an END / EXIT. */
int sd_link_send_down(void *sock, sd_link_kind kind, const unsigned char *rid, int rid_len, uint64_t id, bool final,
                      msgpack_sbuffer *sb);
/* Receives one downward message without waiting: 1 with *d and body (a zmq_msg_t the caller closes)
 * filled, 0 when there is none. */
int sd_link_recv_down(void *sock, sd_link_down *d, void *body_msg);

#endif
