/* Fuzz target: one reply message through the client's decoder and the JSON conversion `--json` prints. */
#include "tests/fuzz/fuzz.h"

#include "ipc/protocol.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    sd_reply r;
    sd_err err;
    if (sd_reply_decode(data, size, &r, &err)) return 0;
    free(sd_mp_to_json(r.root));
    sd_reply_free(&r);
    return 0;
}
