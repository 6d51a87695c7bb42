/* GET /metrics: the daemon's `stats` reply (JSON text, as specd_stats gives it) and the gateway's own
 * counters in Prometheus' text exposition format (version 0.0.4): a HELP and a TYPE line before each
 * metric, counters ending in _total, latency histograms in seconds with cumulative buckets, +Inf, _sum and
 * _count. A figure the daemon does not report is left out rather than shown as 0. */
#ifndef SD_GW_METRICS_H
#define SD_GW_METRICS_H
#include <stdint.h>

typedef struct gw_counters {
    uint64_t http_requests, http_errors, http_streams;
} gw_counters;

/* The exposition text (malloc'd), or NULL when stats_json is not a JSON object or memory runs out. */
char *gw_metrics_text(const char *stats_json, const gw_counters *c);

#endif
