/* The inproc hand-off between the socket thread and the engine thread (daemon/link.h). Upward messages
 * carry a pointer (both threads share the address space); downward replies move the packed body into a
 * ZeroMQ message without copying it. */
#include "daemon/link.h"

#include <stdlib.h>
#include <string.h>

#include <zmq.h>

int sd_link_send_up(void *sock, sd_link_up *u) {
    if (zmq_send(sock, &u, sizeof u, 0) == (int)sizeof u) return 0;
    sd_link_up_free(u);
    return -1;
}

sd_link_up *sd_link_recv_up(void *sock) {
    sd_link_up *u = NULL;
    if (zmq_recv(sock, &u, sizeof u, ZMQ_DONTWAIT) != (int)sizeof u) return NULL;
    return u;
}

void sd_link_up_free(sd_link_up *u) {
    if (!u) return;
    sd_request_free(&u->q);
    free(u);
}

static void free_body(void *data, void *hint) {
    (void)hint;
    free(data);
}

int sd_link_send_down(void *sock, sd_link_kind kind, const unsigned char *rid, int rid_len, uint64_t id, bool final,
                      msgpack_sbuffer *sb) {
    sd_link_down d;
    memset(&d, 0, sizeof d);
    d.kind = kind;
    d.final = final;
    d.id = id;
    d.rid_len = rid_len < 0 ? 0 : rid_len > SD_RID_MAX ? SD_RID_MAX : rid_len;
    if (rid && d.rid_len) memcpy(d.rid, rid, (size_t)d.rid_len);
    zmq_msg_t body;
    if (sb && sb->size) {
        size_t n = sb->size;
        char *data = msgpack_sbuffer_release(sb);
        if (zmq_msg_init_data(&body, data, n, free_body, NULL)) { free(data); return -1; }
    } else {
        zmq_msg_init(&body);
    }
    if (zmq_send(sock, &d, sizeof d, ZMQ_SNDMORE) != (int)sizeof d || zmq_msg_send(&body, sock, 0) < 0) {
        zmq_msg_close(&body);
        return -1;
    }
    return 0;
}

int sd_link_recv_down(void *sock, sd_link_down *d, void *body_msg) {
    zmq_msg_t *body = body_msg;
    if (zmq_recv(sock, d, sizeof *d, ZMQ_DONTWAIT) != (int)sizeof *d) return 0;
    zmq_msg_init(body);
    if (zmq_msg_recv(body, sock, 0) < 0) { zmq_msg_close(body); zmq_msg_init(body); }
    return 1;
}
