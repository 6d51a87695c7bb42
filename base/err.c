#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int sd_errf(sd_err *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int sd_err_prefix(sd_err *err, const char *fmt, ...) {
    if (!err) return -1;
    char joined[sizeof err->msg * 2];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(joined, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof err->msg - 1) n = (int)sizeof err->msg - 1;
    snprintf(joined + n, sizeof joined - (size_t)n, ": %s", err->msg);
    memcpy(err->msg, joined, sizeof err->msg - 1);
    err->msg[sizeof err->msg - 1] = '\0';
    return -1;
}
