/* `specd keygen -o NAME`: a CURVE key pair for authenticated TCP (ipc/curve.h): NAME.key (secret, 0600)
 * and NAME.pub (public). A daemon uses its .key with --curve-secret and lists clients' .pub files in its
 * --curve-clients directory; a client uses its own .key and the daemon's .pub. */
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "ipc/curve.h"

static int usage(int rc) {
    fprintf(rc ? stderr : stdout, "usage: specd keygen -o NAME\n"
            "Writes a new CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public).\n"
            "Daemon: specd serve --tcp HOST:PORT --curve-secret server.key --curve-clients DIR (clients' .pub files)\n"
            "Client: specd-cli --tcp HOST:PORT --curve-server server.pub --curve-key client.key ...\n");
    return rc;
}

int cmd_keygen(int argc, char **argv) {
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(0);
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else {
            fprintf(stderr, "specd keygen: unexpected argument '%s'\n", argv[i]);
            return usage(2);
        }
    }
    if (!out || !*out) {
        fprintf(stderr, "specd keygen: -o NAME is required\n");
        return usage(2);
    }
    sd_err err = {{0}};
    if (sd_curve_keygen(out, &err)) {
        fprintf(stderr, "specd keygen: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s.key (secret) and %s.pub (public)\n", out, out);
    return 0;
}
