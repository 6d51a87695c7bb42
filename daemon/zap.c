/* ZAP handler: CURVE client keys against the --curve-clients directory (daemon/zap.h). */
#include "daemon/zap.h"

#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "daemon/log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01" /* fixed by RFC 27 */

int sd_zap_open(sd_zap *z, void *zctx, const char *dir, sd_err *err) {
    memset(z, 0, sizeof *z);
    if (sd_curve_read_dir(dir, &z->keys, &z->n_keys, err)) return -1;
    if (z->n_keys == 0) sd_log(SD_LOG_WARN, "no client keys (*.pub) in %s: no client can connect yet", dir);
    z->sock = zmq_socket(zctx, ZMQ_REP);
    int zero = 0;
    if (!z->sock) return sd_errf(err, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(z->sock, ZAP_ENDPOINT)) return sd_errf(err, "cannot bind the ZAP handler: %s", zmq_strerror(zmq_errno()));
    return 0;
}

void sd_zap_close(sd_zap *z) {
    if (z->sock) zmq_close(z->sock);
    free(z->keys);
    memset(z, 0, sizeof *z);
}

static bool admitted(const sd_zap *z, const char *key) {
    for (int i = 0; i < z->n_keys; i++)
        if (!strcmp(z->keys[i], key)) return true;
    return false;
}

static void send_str(void *s, const char *v, int more) { zmq_send(s, v, strlen(v), more ? ZMQ_SNDMORE : 0); }

/* One request: version, request id, domain, address, routing id, mechanism, credentials (the client's
 * 32-byte public key for CURVE). */
static void answer_one(sd_zap *z) {
    zmq_msg_t f[7];
    int n = 0, more = 1;
    while (more && n < 7) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], z->sock, n ? 0 : ZMQ_DONTWAIT) < 0) { zmq_msg_close(&f[n]); break; }
        more = zmq_msg_more(&f[n]);
        n++;
    }
    if (n == 0) return;
    while (more) { /* more frames than a CURVE request has: drain them */
        zmq_msg_t x;
        zmq_msg_init(&x);
        if (zmq_msg_recv(&x, z->sock, 0) < 0) more = 0; else more = zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    char key[SD_Z85_KEY] = "";
    bool ok = n == 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
              zmq_msg_size(&f[6]) == 32 && zmq_z85_encode(key, zmq_msg_data(&f[6]), 32) && admitted(z, key);
    if (!ok) sd_log(SD_LOG_WARN, "refused a TCP client: its CURVE key %s is not among the --curve-clients keys",
                    key[0] ? key : "(none)");
    send_str(z->sock, "1.0", 1);
    if (n >= 2) zmq_send(z->sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else send_str(z->sock, "", 1);
    send_str(z->sock, ok ? "200" : "400", 1);
    send_str(z->sock, ok ? "OK" : "unknown client key", 1);
    send_str(z->sock, ok ? key : "", 1);
    send_str(z->sock, "", 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

void sd_zap_answer(sd_zap *z) {
    for (int i = 0; i < 64; i++) {
        int ev = 0;
        size_t len = sizeof ev;
        if (zmq_getsockopt(z->sock, ZMQ_EVENTS, &ev, &len) || !(ev & ZMQ_POLLIN)) return;
        answer_one(z);
    }
}
