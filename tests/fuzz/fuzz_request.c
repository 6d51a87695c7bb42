/* Fuzz target: one protocol request message through the daemon's decoder; a request that decodes is
 * encoded again and must decode to the same op and id (the encoder validates the way the decoder does). */
#include "tests/fuzz/fuzz.h"

#include "ipc/protocol.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    sd_request r, r2;
    sd_proto_err e;
    if (sd_request_decode(data, size, &r, &e)) {
        /* an error reply must be sendable: its strings are UTF-8 */
        if (!sd_utf8_valid(e.message, strlen(e.message)) || !sd_utf8_valid(e.field, strlen(e.field))) abort();
        return 0;
    }
    char *buf = NULL;
    size_t len = 0;
    sd_err err;
    if (sd_request_encode(&r, &buf, &len, &err) == 0) {
        if (sd_request_decode(buf, len, &r2, &e) || r2.op != r.op || r2.id != r.id) abort();
        sd_request_free(&r2);
    }
    free(buf);
    sd_request_free(&r);
    return 0;
}
