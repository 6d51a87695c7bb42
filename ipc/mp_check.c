/* MessagePack structure check (see mp_check.h): walks the encoding without building anything. */
#include "ipc/mp_check.h"

#include <stdint.h>
#include <stdio.h>

typedef struct walk {
    const uint8_t *p;
    size_t len, off;
    char *why;
    size_t why_cap;
} walk;

static int fail(walk *w, const char *what) {
    snprintf(w->why, w->why_cap, "%s at byte %zu", what, w->off);
    return -1;
}

/* The big-endian unsigned integer of n bytes at the cursor (n <= 4: lengths and counts). */
static int be_uint(walk *w, int n, uint64_t *v) {
    if ((size_t)n > w->len - w->off) return fail(w, "truncated header");
    *v = 0;
    for (int i = 0; i < n; i++) *v = *v << 8 | w->p[w->off + i];
    w->off += (size_t)n;
    return 0;
}

static int skip(walk *w, uint64_t n) {
    if (n > w->len - w->off) return fail(w, "a length runs past the end of the message");
    w->off += (size_t)n;
    return 0;
}

static int object(walk *w, int depth);

/* n elements (maps pass 2 x entries): each takes at least one byte, so more than remain is malformed. */
static int elements(walk *w, uint64_t n, int depth) {
    if (n > w->len - w->off) return fail(w, "truncated message: an array or map claims more elements than bytes remain");
    if (depth >= SD_MP_MAX_DEPTH) return fail(w, "arrays or maps nested too deeply");
    for (uint64_t i = 0; i < n; i++)
        if (object(w, depth + 1)) return -1;
    return 0;
}

static int object(walk *w, int depth) {
    if (w->off >= w->len) return fail(w, "truncated message");
    uint8_t b = w->p[w->off++];
    uint64_t n;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 0; /* fixint, nil, bool */
    if (b >= 0x80 && b <= 0x8f) return elements(w, 2u * (b & 0x0f), depth);
    if (b >= 0x90 && b <= 0x9f) return elements(w, b & 0x0f, depth);
    if (b >= 0xa0 && b <= 0xbf) return skip(w, b & 0x1f);
    switch (b) {
    case 0xc4: case 0xd9: return be_uint(w, 1, &n) || skip(w, n);          /* bin8, str8 */
    case 0xc5: case 0xda: return be_uint(w, 2, &n) || skip(w, n);          /* bin16, str16 */
    case 0xc6: case 0xdb: return be_uint(w, 4, &n) || skip(w, n);          /* bin32, str32 */
    case 0xc7: return be_uint(w, 1, &n) || skip(w, n + 1);                 /* ext8: length, type, data */
    case 0xc8: return be_uint(w, 2, &n) || skip(w, n + 1);
    case 0xc9: return be_uint(w, 4, &n) || skip(w, n + 1);
    case 0xca: return skip(w, 4);                                          /* float32 */
    case 0xcb: return skip(w, 8);                                          /* float64 */
    case 0xcc: case 0xd0: return skip(w, 1);
    case 0xcd: case 0xd1: return skip(w, 2);
    case 0xce: case 0xd2: return skip(w, 4);
    case 0xcf: case 0xd3: return skip(w, 8);
    case 0xd4: return skip(w, 2);                                          /* fixext 1..16: type + data */
    case 0xd5: return skip(w, 3);
    case 0xd6: return skip(w, 5);
    case 0xd7: return skip(w, 9);
    case 0xd8: return skip(w, 17);
    case 0xdc: return be_uint(w, 2, &n) || elements(w, n, depth);          /* array16 */
    case 0xdd: return be_uint(w, 4, &n) || elements(w, n, depth);          /* array32 */
    case 0xde: return be_uint(w, 2, &n) || elements(w, 2 * n, depth);      /* map16 */
    case 0xdf: return be_uint(w, 4, &n) || elements(w, 2 * n, depth);      /* map32 */
    default: w->off--; return fail(w, "invalid type byte 0xc1");
    }
}

int sd_mp_check(const void *buf, size_t len, char *why, size_t why_cap) {
    walk w = {buf, len, 0, why, why_cap};
    if (object(&w, 0)) return -1;
    if (w.off != len) {
        snprintf(why, why_cap, "%zu trailing bytes after the MessagePack object", len - w.off);
        return -1;
    }
    return 0;
}
