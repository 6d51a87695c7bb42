/* Stop strings and held-back text; see textout.h. */
#include "target/textout.h"

#include <stdlib.h>
#include <string.h>

int sd_textout_init(sd_textout *t, const char *const *stop, int n_stop, sd_err *err) {
    memset(t, 0, sizeof *t);
    t->cap = 256;
    t->buf = malloc(t->cap);
    t->stop = calloc(n_stop > 0 ? (size_t)n_stop : 1, sizeof *t->stop);
    t->stop_len = calloc(n_stop > 0 ? (size_t)n_stop : 1, sizeof *t->stop_len);
    if (!t->buf || !t->stop || !t->stop_len) {
        sd_textout_free(t);
        return sd_errf(err, "out of memory for the output text");
    }
    t->buf[0] = 0;
    for (int i = 0; i < n_stop; i++) {
        if (!stop[i] || !stop[i][0]) {
            sd_textout_free(t);
            return sd_errf(err, "stop string %d is empty", i + 1);
        }
        t->stop[i] = strdup(stop[i]);
        if (!t->stop[i]) {
            sd_textout_free(t);
            return sd_errf(err, "out of memory for the stop strings");
        }
        t->n_stop = i + 1;
        t->stop_len[i] = strlen(stop[i]);
        if (t->stop_len[i] > t->max_stop) t->max_stop = t->stop_len[i];
    }
    return 0;
}

void sd_textout_free(sd_textout *t) {
    for (int i = 0; t->stop && i < t->n_stop; i++) free(t->stop[i]);
    free(t->stop);
    free(t->stop_len);
    free(t->buf);
    memset(t, 0, sizeof *t);
}

int sd_textout_push(sd_textout *t, const char *s, size_t n, sd_err *err) {
    if (t->matched) return 1;
    if (t->len + n + 1 > t->cap) {
        size_t cap = 2 * (t->len + n + 1);
        char *b = realloc(t->buf, cap);
        if (!b) return sd_errf(err, "out of memory for the output text");
        t->buf = b;
        t->cap = cap;
    }
    size_t old = t->len;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
    if (!t->n_stop) return 0;
    /* A new match ends in the new text and starts in the held part (released text never ends with the
     * beginning of a stop string), so only that window is searched; the earliest start wins. */
    size_t from = old + 1 > t->max_stop ? old + 1 - t->max_stop : 0;
    if (from < t->shown) from = t->shown;
    size_t cut = t->len;
    for (int i = 0; i < t->n_stop; i++) {
        char *m = memmem(t->buf + from, t->len - from, t->stop[i], t->stop_len[i]);
        if (m && (size_t)(m - t->buf) < cut) {
            cut = (size_t)(m - t->buf);
            t->which = i;
        }
    }
    if (cut == t->len) return 0;
    t->len = cut;
    t->buf[cut] = 0;
    t->matched = true;
    return 1;
}

/* Bytes at the end of the text that are the beginning of some stop string. */
static size_t held_suffix(const sd_textout *t) {
    size_t hold = 0, avail = t->len - t->shown;
    for (int i = 0; i < t->n_stop; i++) {
        size_t l = t->stop_len[i] - 1;
        if (l > avail) l = avail;
        for (; l > hold; l--)
            if (!memcmp(t->buf + t->len - l, t->stop[i], l)) {
                hold = l;
                break;
            }
    }
    return hold;
}

const char *sd_textout_release(sd_textout *t, bool final, size_t *n) {
    size_t end = t->len;
    if (!final && !t->matched) {
        end -= held_suffix(t);
        /* never split a UTF-8 character (a stop string could begin with a continuation byte) */
        while (end > t->shown && ((unsigned char)t->buf[end] & 0xC0) == 0x80) end--;
    }
    const char *s = t->buf + t->shown;
    *n = end > t->shown ? end - t->shown : 0;
    if (end > t->shown) t->shown = end;
    return s;
}
