/* Errors travel as return codes (0 ok, -1 failure) with a message in an sd_err the caller owns.
 * Every layer uses this one mechanism; a NULL sd_err* is allowed and drops the message. */
#ifndef SD_ERR_H
#define SD_ERR_H
#include <stddef.h>

typedef struct sd_err {
    char msg[512];
} sd_err;

/* Formats the message into err (if not NULL) and returns -1, so callers can `return sd_errf(...)`. */
int sd_errf(sd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to an existing message (e.g. the file name) and returns -1. */
int sd_err_prefix(sd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
