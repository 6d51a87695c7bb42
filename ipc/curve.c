/* CURVE key files and client setup (ipc/curve.h). */
#include "ipc/curve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

bool sd_curve_available(void) { return zmq_has("curve") != 0; }

static int write_new(const char *path, int mode, const char *text, sd_err *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) return sd_errf(err, "cannot create %s: %s", path, strerror(errno));
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n;
    if (close(fd) || !ok) return sd_errf(err, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

int sd_curve_keygen(const char *base, sd_err *err) {
    if (!sd_curve_available()) return sd_errf(err, "this libzmq has no CURVE support (zmq_has(\"curve\") is false)");
    char pub[SD_Z85_KEY], sec[SD_Z85_KEY], path[4096], text[200];
    if (zmq_curve_keypair(pub, sec)) return sd_errf(err, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    snprintf(text, sizeof text, "public = %s\nsecret = %s\n", pub, sec);
    if ((size_t)snprintf(path, sizeof path, "%s.key", base) >= sizeof path) return sd_errf(err, "key path too long");
    if (write_new(path, 0600, text, err)) return -1;
    snprintf(text, sizeof text, "public = %s\n", pub);
    snprintf(path, sizeof path, "%s.pub", base);
    if (write_new(path, 0644, text, err)) return -1;
    return 0;
}

/* The value of a `name = Z85` line into out; 0, or -1 when the file has no such line. */
static int find_key(const char *text, const char *name, char out[SD_Z85_KEY]) {
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, name, nl)) continue;
        const char *q = p + nl;
        while (*q == ' ' || *q == '\t') q++;
        if (*q++ != '=') continue;
        while (*q == ' ' || *q == '\t') q++;
        size_t k = strcspn(q, " \t\r\n");
        if (k != SD_Z85_KEY - 1) return -1;
        memcpy(out, q, k);
        out[k] = 0;
        uint8_t bin[32];
        return zmq_z85_decode(bin, out) ? 0 : -1;
    }
    return -1;
}

int sd_curve_read(const char *path, char pub[SD_Z85_KEY], char sec[SD_Z85_KEY], sd_err *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sd_errf(err, "cannot open key file %s: %s", path, strerror(errno));
    struct stat st;
    char text[1024];
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, text, sizeof text - 1) : -1;
    close(fd);
    if (n < 0) return sd_errf(err, "key file %s: not a readable regular file", path);
    text[n] = 0;
    if (find_key(text, "public", pub))
        return sd_errf(err, "key file %s: no valid `public = <40 Z85 characters>` line (write keys with specd keygen)",
                       path);
    if (!sec) return 0;
    if (st.st_mode & 077)
        return sd_errf(err, "secret key file %s is readable by group or others (mode %03o): chmod 600 it", path,
                       (unsigned)(st.st_mode & 0777));
    if (find_key(text, "secret", sec))
        return sd_errf(err, "key file %s: no valid `secret = ...` line (a .pub file holds no secret key; give the .key)",
                       path);
    return 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

int sd_curve_read_dir(const char *dir, char (**keys)[SD_Z85_KEY], int *n, sd_err *err) {
    *keys = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return sd_errf(err, "cannot read the client key directory %s: %s", dir, strerror(errno));
    int cap = 0, rc = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!ends_with(e->d_name, ".pub")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            char(*nk)[SD_Z85_KEY] = realloc(*keys, (size_t)cap * sizeof **keys);
            if (!nk) { rc = sd_errf(err, "out of memory reading %s", dir); break; }
            *keys = nk;
        }
        if ((rc = sd_curve_read(path, (*keys)[*n], NULL, err))) break;
        (*n)++;
    }
    closedir(d);
    if (rc) { free(*keys); *keys = NULL; *n = 0; }
    return rc;
}

int sd_curve_client_setup(void *sock, const sd_curve_client *c, sd_err *err) {
    if (!c->server_pub || !c->client_key)
        return sd_errf(err, "CURVE needs both the daemon's public key file and this client's key file");
    if (!sd_curve_available()) return sd_errf(err, "this libzmq has no CURVE support (zmq_has(\"curve\") is false)");
    char server[SD_Z85_KEY], pub[SD_Z85_KEY], sec[SD_Z85_KEY];
    if (sd_curve_read(c->server_pub, server, NULL, err) || sd_curve_read(c->client_key, pub, sec, err)) return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, SD_Z85_KEY - 1) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, SD_Z85_KEY - 1) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, SD_Z85_KEY - 1))
        return sd_errf(err, "setting CURVE keys: %s", zmq_strerror(zmq_errno()));
    return 0;
}

bool sd_host_is_loopback(const char *host) {
    if (!strcmp(host, "localhost") || !strcmp(host, "::1") || !strcmp(host, "[::1]")) return true;
    unsigned a, b, c, d;
    char tail;
    return sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 && a == 127 && b < 256 && c < 256 && d < 256;
}
