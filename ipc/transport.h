/* ZeroMQ plumbing shared by the daemon and its clients: where the daemon listens, how sockets are set
 * up (limits, heartbeats), and whether a live daemon already answers on an endpoint.
 * Depends on libzmq, ipc/protocol.h and base/err.h only. */
#ifndef SD_TRANSPORT_H
#define SD_TRANSPORT_H
#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

#define SD_ENDPOINT_MAX 512

/* ZMTP heartbeats (both sides): a peer silent this long is dropped by ZeroMQ. */
#define SD_HEARTBEAT_IVL_MS 1000
#define SD_HEARTBEAT_TIMEOUT_MS 5000

/* The default socket lives in a directory only its user can write, so no one else can bind the name
 * first: $XDG_RUNTIME_DIR when set (and not empty), else /tmp/specd-$UID (made 0700 by the daemon). */
void sd_default_socket_dir(char *out, size_t cap);
/* The default Unix socket path: sd_default_socket_dir()/specd.sock. */
void sd_default_socket_path(char *out, size_t cap);
/* Makes sure dir is a directory only this user can write: created 0700 when missing and create is set;
 * refused, with an error naming the directory and what is wrong, when it is a symbolic link or not a
 * directory, belongs to another user, or is writable by group or others. */
int sd_private_dir(const char *dir, bool create, sd_err *err);

/* Who listens on the Unix socket at path, checked before a client sends anything: the socket file's owner
 * and the listening process's user (SO_PEERCRED) must be the user in $SPECD_DAEMON_UID (a uid or a name)
 * when that is set, else this user or root. 0 when they are; -1 with an error naming the uid found otherwise; -2 when
 * nothing accepts connections there (a stale socket file: the caller reports no daemon). */
#define SD_DAEMON_UID_ENV "SPECD_DAEMON_UID"
int sd_check_daemon_peer(const char *path, sd_err *err);

/* Resolves the endpoint from the --socket / --tcp options (either may be NULL; tcp wins when both).
 *   socket_path "x.sock"   -> "ipc://x.sock", *path = "x.sock"
 *   tcp "HOST:PORT"        -> "tcp://HOST:PORT"; tcp "PORT" or ":PORT" -> "tcp://127.0.0.1:PORT"
 *   neither                -> the default socket path
 * path (cap path_cap) receives the socket file path for ipc endpoints, "" for tcp. Fails (message names
 * the option) on an empty or over-long path, or a bad port. */
int sd_endpoint_resolve(const char *socket_path, const char *tcp, char *endpoint, size_t cap, char *path,
                        size_t path_cap, sd_err *err);

/* A DEALER socket connected to endpoint, with linger 0, ZMQ_MAXMSGSIZE and heartbeats set.
 * NULL + err on failure. */
void *sd_client_connect(void *zctx, const char *endpoint, sd_err *err);
/* The same with CURVE (ipc/curve.h) when curve is not NULL: the daemon's public key and the client's keys. */
struct sd_curve_client;
void *sd_client_connect_curve(void *zctx, const char *endpoint, const struct sd_curve_client *curve, sd_err *err);

/* Sends one ping on a fresh DEALER and waits up to timeout_ms for the pong.
 * Returns 1 when a daemon answered, 0 when nothing answered in time. */
int sd_ping_endpoint(void *zctx, const char *endpoint, int timeout_ms);

/* Sends one message (a single frame) on a DEALER. 0 or -1 with err. */
int sd_send(void *sock, const void *buf, size_t len, sd_err *err);
/* Receives one message into a malloc'd buffer, waiting up to timeout_ms (< 0: forever).
 * Returns 1 with *buf and *len set, 0 on timeout, -1 on error (err). */
int sd_recv(void *sock, int timeout_ms, char **buf, size_t *len, sd_err *err);

/* Parses an octal mode string ("600", "0660"); -1 when not a valid mode in 0..0777. */
int sd_parse_mode(const char *s);

#endif
