/* Daemon logging: one timestamped line per event on stderr, filtered by --log-level. */
#include "daemon/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static sd_log_level g_level = SD_LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};

int sd_log_parse_level(const char *s) {
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, names[i])) return i;
    return -1;
}

void sd_log_set_level(sd_log_level l) { g_level = l; }
bool sd_log_enabled(sd_log_level l) { return l <= g_level; }

void sd_log(sd_log_level l, const char *fmt, ...) {
    if (l > g_level) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld specd %-5s ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[l]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* one write per line so concurrent writers (test harness, other processes) do not interleave */
    fprintf(stderr, "%s\n", line);
}

void sd_log_rid(const unsigned char *rid, int len, char *out, int cap) {
    int n = len > 16 ? 16 : len, o = 0;
    out[0] = 0;
    for (int i = 0; i < n && o + 3 < cap; i++) o += snprintf(out + o, (size_t)(cap - o), "%02x", rid[i]);
}
