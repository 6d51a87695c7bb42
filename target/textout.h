/* The text a request shows: decoded text accumulates here; a stop string cuts it where the stop string
 * begins; text that could still turn out to be the start of a stop string is held back until it cannot. */
#ifndef SD_TEXTOUT_H
#define SD_TEXTOUT_H
#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

typedef struct sd_textout {
    char *buf;          /* all decoded text (NUL-terminated), cut at a stop string once one matched */
    size_t len, cap;
    size_t shown;       /* buf[0..shown) has been released */
    char **stop;        /* copies of the stop strings */
    size_t *stop_len;
    int n_stop;
    size_t max_stop;
    bool matched;
    int which;          /* the stop string that matched (index), when matched */
} sd_textout;

/* Fails on an empty stop string (naming which). */
int sd_textout_init(sd_textout *t, const char *const *stop, int n_stop, sd_err *err);
void sd_textout_free(sd_textout *t);
/* Appends decoded text (valid UTF-8). Returns 1 when a stop string is now complete (the text is cut
 * where it begins and later pushes are ignored), 0 otherwise, -1 when out of memory. */
int sd_textout_push(sd_textout *t, const char *s, size_t n, sd_err *err);
/* Releases what can no longer be part of a stop string (everything when final); returns the start of
 * the newly released text and its length via *n. */
const char *sd_textout_release(sd_textout *t, bool final, size_t *n);

#endif
