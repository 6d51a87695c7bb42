/* Daemon logging to stderr: leveled lines with a timestamp, and the one-line-per-request summary. */
#ifndef SD_DLOG_H
#define SD_DLOG_H
#include <stdbool.h>
#include <stdint.h>

typedef enum sd_log_level { SD_LOG_ERROR = 0, SD_LOG_WARN = 1, SD_LOG_INFO = 2, SD_LOG_DEBUG = 3 } sd_log_level;

/* "error", "warn", "info", "debug" -> level; -1 when unknown. */
int sd_log_parse_level(const char *s);
void sd_log_set_level(sd_log_level l);
bool sd_log_enabled(sd_log_level l);
void sd_log(sd_log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Formats a ZeroMQ routing id as hex (at most 16 bytes shown) into out (cap >= 40). */
void sd_log_rid(const unsigned char *rid, int len, char *out, int cap);

#endif
