/* ZeroMQ endpoint resolution and socket helpers shared by daemon and clients. */
#include "ipc/transport.h"

#include "ipc/curve.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc/protocol.h"
#include "base/clock.h"

void sd_default_socket_dir(char *out, size_t cap) {
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg)
        snprintf(out, cap, "%s", xdg);
    else
        snprintf(out, cap, "/tmp/specd-%u", (unsigned)getuid());
}

void sd_default_socket_path(char *out, size_t cap) {
    char dir[SD_ENDPOINT_MAX];
    sd_default_socket_dir(dir, sizeof dir);
    if ((size_t)snprintf(out, cap, "%s/specd.sock", dir) >= cap) out[0] = 0; /* too long: resolving fails */
}

int sd_private_dir(const char *dir, bool create, sd_err *err) {
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return sd_errf(err, "cannot create the socket directory %s: %s", dir, strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0) return sd_errf(err, "socket directory %s: %s", dir, strerror(errno));
    const char *why = S_ISLNK(st.st_mode) ? "is a symbolic link" : !S_ISDIR(st.st_mode) ? "is not a directory" : NULL;
    char buf[96];
    if (!why && st.st_uid != getuid()) {
        snprintf(buf, sizeof buf, "belongs to uid %u, not to you (uid %u)", (unsigned)st.st_uid, (unsigned)getuid());
        why = buf;
    } else if (!why && (st.st_mode & 022)) {
        snprintf(buf, sizeof buf, "has mode %04o: others could bind a socket there", (unsigned)(st.st_mode & 07777));
        why = buf;
    }
    if (why)
        return sd_errf(err, "refusing the socket directory %s: it %s (remove it, or give --socket in a directory "
                       "only you can write)", dir, why);
    return 0;
}

/* The uid a daemon must run as: $SPECD_DAEMON_UID (a uid or a user name, e.g. the systemd unit's
 * dynamic user "specd"), else -1 (this user or root). */
static long expected_daemon_uid(sd_err *err) {
    const char *s = getenv(SD_DAEMON_UID_ENV);
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*end && !errno && v >= 0 && v <= (long)UINT32_MAX - 1) return v;
    const struct passwd *pw = getpwnam(s);
    if (pw) return (long)pw->pw_uid;
    return sd_errf(err, "%s='%s' is neither a uid nor a known user name", SD_DAEMON_UID_ENV, s), -2;
}

static bool trusted_uid(uid_t uid, long want) {
    return want >= 0 ? (long)uid == want : uid == getuid() || uid == 0;
}

static int untrusted(const char *path, const char *what, uid_t uid, long want, sd_err *err) {
    char expect[64];
    if (want >= 0) snprintf(expect, sizeof expect, "uid %ld (%s)", want, SD_DAEMON_UID_ENV);
    else snprintf(expect, sizeof expect, "you (uid %u) or root", (unsigned)getuid());
    return sd_errf(err, "refusing to talk to %s: %s is uid %u, expected %s; another user may have taken the "
                   "socket (set %s to trust a daemon of another user)", path, what, (unsigned)uid, expect,
                   SD_DAEMON_UID_ENV);
}

int sd_check_daemon_peer(const char *path, sd_err *err) {
    long want = expected_daemon_uid(err);
    if (want == -2) return -1;
    struct stat st;
    if (lstat(path, &st) != 0) return sd_errf(err, "%s: %s", path, strerror(errno));
    if (!S_ISSOCK(st.st_mode)) return sd_errf(err, "%s is not a socket", path);
    if (!trusted_uid(st.st_uid, want)) return untrusted(path, "the socket file's owner", st.st_uid, want, err);
    /* the file's owner is who bound it; SO_PEERCRED names the process listening now */
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) return sd_errf(err, "%s: path too long for a Unix socket", path);
    memcpy(a.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return sd_errf(err, "socket: %s", strerror(errno));
    struct ucred cr;
    socklen_t cl = sizeof cr;
    int rc = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) rc = sd_errf(err, "%s: %s", path, strerror(errno)) - 1;
    else if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0)
        rc = sd_errf(err, "%s: cannot read the daemon's credentials: %s", path, strerror(errno));
    else if (!trusted_uid(cr.uid, want))
        rc = untrusted(path, "the listening process", cr.uid, want, err);
    close(fd);
    return rc;
}

static int parse_port(const char *s, sd_err *err) {
    char *end;
    errno = 0;
    long p = strtol(s, &end, 10);
    if (!*s || *end || errno || p < 1 || p > 65535)
        return sd_errf(err, "--tcp: '%s' is not a port number (1..65535)", s);
    return (int)p;
}

int sd_endpoint_resolve(const char *socket_path, const char *tcp, char *endpoint, size_t cap, char *path,
                        size_t path_cap, sd_err *err) {
    if (path && path_cap) path[0] = 0;
    if (tcp) {
        const char *colon = strrchr(tcp, ':');
        char host[256] = "127.0.0.1";
        const char *port = tcp;
        if (colon) {
            size_t hn = (size_t)(colon - tcp);
            if (hn >= sizeof host) return sd_errf(err, "--tcp: host name too long");
            if (hn > 0) { memcpy(host, tcp, hn); host[hn] = 0; }
            port = colon + 1;
        }
        int p = parse_port(port, err);
        if (p < 0) return -1;
        if ((size_t)snprintf(endpoint, cap, "tcp://%s:%d", host, p) >= cap) return sd_errf(err, "--tcp: too long");
        return 0;
    }
    char def[SD_ENDPOINT_MAX];
    if (!socket_path) {
        sd_default_socket_path(def, sizeof def);
        socket_path = def;
    }
    if (!*socket_path) return sd_errf(err, "--socket: empty path");
    /* sockaddr_un.sun_path holds 108 bytes including the NUL */
    if (strlen(socket_path) > 107) return sd_errf(err, "--socket: path '%s' is longer than 107 bytes", socket_path);
    if ((size_t)snprintf(endpoint, cap, "ipc://%s", socket_path) >= cap) return sd_errf(err, "--socket: too long");
    if (path && (size_t)snprintf(path, path_cap, "%s", socket_path) >= path_cap) return sd_errf(err, "--socket: too long");
    return 0;
}

void *sd_client_connect(void *zctx, const char *endpoint, sd_err *err) {
    return sd_client_connect_curve(zctx, endpoint, NULL, err);
}

void *sd_client_connect_curve(void *zctx, const char *endpoint, const sd_curve_client *curve, sd_err *err) {
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    if (!s) { sd_errf(err, "zmq_socket: %s", zmq_strerror(zmq_errno())); return NULL; }
    int linger = 0, ivl = SD_HEARTBEAT_IVL_MS, to = SD_HEARTBEAT_TIMEOUT_MS, hwm = 0;
    int64_t maxmsg = SD_PROTO_MAX_MSG_BYTES;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &to, sizeof to);
    zmq_setsockopt(s, ZMQ_HEARTBEAT_TTL, &to, sizeof to);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm); /* a reader never drops replies it has not read yet */
    if (curve && sd_curve_client_setup(s, curve, err)) {
        zmq_close(s);
        return NULL;
    }
    if (zmq_connect(s, endpoint) != 0) {
        sd_errf(err, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

int sd_send(void *sock, const void *buf, size_t len, sd_err *err) {
    while (zmq_send(sock, buf, len, 0) < 0) {
        if (zmq_errno() == EINTR) continue;
        return sd_errf(err, "send: %s", zmq_strerror(zmq_errno()));
    }
    return 0;
}

int sd_recv(void *sock, int timeout_ms, char **buf, size_t *len, sd_err *err) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    for (;;) {
        int rc = zmq_poll(&it, 1, timeout_ms);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            return sd_errf(err, "poll: %s", zmq_strerror(zmq_errno()));
        }
        if (rc == 0) return 0;
        break;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&m);
        if (e == EAGAIN) return 0;
        return sd_errf(err, "recv: %s", zmq_strerror(e));
    }
    size_t n = zmq_msg_size(&m);
    char *b = malloc(n ? n : 1);
    if (!b) { zmq_msg_close(&m); return sd_errf(err, "recv: out of memory"); }
    memcpy(b, zmq_msg_data(&m), n);
    zmq_msg_close(&m);
    *buf = b;
    *len = n;
    return 1;
}

int sd_ping_endpoint(void *zctx, const char *endpoint, int timeout_ms) {
    void *s = sd_client_connect(zctx, endpoint, NULL);
    if (!s) return 0;
    sd_request r;
    sd_request_init(&r, SD_OP_PING, 1);
    char *buf = NULL;
    size_t len = 0;
    int alive = 0;
    if (sd_request_encode(&r, &buf, &len, NULL) == 0 && sd_send(s, buf, len, NULL) == 0) {
        double end = sd_now_ms() + timeout_ms;
        for (;;) {
            int left = (int)(end - sd_now_ms());
            if (left <= 0) break;
            char *rb = NULL;
            size_t rl = 0;
            if (sd_recv(s, left, &rb, &rl, NULL) != 1) break;
            sd_reply rep;
            if (sd_reply_decode(rb, rl, &rep, NULL) == 0) {
                /* any v1 reply (pong, or even an error) proves a live daemon */
                if (rep.type != SD_REPLY_HEARTBEAT) alive = 1;
                sd_reply_free(&rep);
            }
            free(rb);
            if (alive) break;
        }
    }
    free(buf);
    zmq_close(s);
    return alive;
}

int sd_parse_mode(const char *s) {
    if (!s || !*s) return -1;
    char *end;
    long m = strtol(s, &end, 8);
    if (*end || m < 0 || m > 0777) return -1;
    return (int)m;
}
