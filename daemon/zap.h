/* The daemon's ZAP handler (ZeroMQ's authentication protocol, RFC 27) for CURVE on TCP: a connecting
 * client's public key is admitted when it is one of the --curve-clients keys; the key (Z85) becomes the
 * connection's user id, which the socket thread uses as the client's tenant. Runs in the socket thread. */
#ifndef SD_ZAP_H
#define SD_ZAP_H

#include "base/err.h"
#include "ipc/curve.h"

typedef struct sd_zap {
    void *sock;                 /* REP, bound to inproc://zeromq.zap.01 before the ROUTER binds */
    char (*keys)[SD_Z85_KEY];   /* admitted client keys */
    int n_keys;
} sd_zap;

/* Loads the keys of dir and binds the handler in zctx. */
int sd_zap_open(sd_zap *z, void *zctx, const char *dir, sd_err *err);
/* Answers every pending authentication request. */
void sd_zap_answer(sd_zap *z);
void sd_zap_close(sd_zap *z);

#endif
