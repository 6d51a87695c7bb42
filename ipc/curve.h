/* CURVE keys for authenticated TCP (ZeroMQ's built-in CurveZMQ: encryption plus public-key
 * authentication, libsodium-backed in Debian's libzmq5).
 *
 * Key files are text, one `name = Z85` line per key (Z85: ZeroMQ's 40-character text form of a 32-byte key):
 *   NAME.key  (mode 0600)  public = ...  secret = ...   the secret file: a daemon's or a client's own keys
 *   NAME.pub  (any mode)   public = ...                 what the other side needs
 * `specd keygen -o NAME` writes both. A daemon admits the clients whose NAME.pub files lie in its
 * --curve-clients directory; a client names the daemon's .pub and its own .key. */
#ifndef SD_CURVE_H
#define SD_CURVE_H
#include <stdbool.h>

#include "base/err.h"

#define SD_Z85_KEY 41 /* 40 characters and the NUL */

/* true when this libzmq was built with CURVE (zmq_has("curve")). */
bool sd_curve_available(void);

/* Writes base.key (0600) and base.pub (0644) with a new key pair; refuses to overwrite either. */
int sd_curve_keygen(const char *base, sd_err *err);

/* Reads a key file: *pub always (from its `public` line), *sec when sec is not NULL (the file must then have
 * a `secret` line and be readable by its owner only). Errors name the file and what is wrong. */
int sd_curve_read(const char *path, char pub[SD_Z85_KEY], char sec[SD_Z85_KEY], sd_err *err);

/* The public keys of every *.pub file in dir (malloc'd array of n, freed by the caller; n may be 0). */
int sd_curve_read_dir(const char *dir, char (**keys)[SD_Z85_KEY], int *n, sd_err *err);

/* A client's CURVE settings: the daemon's public key file and the client's own key file. */
typedef struct sd_curve_client {
    const char *server_pub; /* NAME.pub of the daemon */
    const char *client_key; /* NAME.key of this client */
} sd_curve_client;

/* Sets CURVE on a client socket before it connects. */
int sd_curve_client_setup(void *sock, const sd_curve_client *c, sd_err *err);

/* Whether host (of a --tcp HOST:PORT) is a loopback address: 127.0.0.0/8, ::1, localhost. */
bool sd_host_is_loopback(const char *host);

#endif
