/* Prometheus text from the daemon's `stats` (gateway/metrics.h). One table names every scalar figure:
 * where it sits in the stats reply (docs/protocol.md "stats"), its metric name, type and help. */
#include "gateway/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct metric {
    const char *section, *key; /* section NULL: a top-level field */
    const char *name, *type, *help;
} metric;

static const metric k_metrics[] = {
    {"requests", "total", "specd_requests_total", "counter", "Generate and chat requests accepted."},
    {"requests", "completed", "specd_requests_completed_total", "counter", "Requests that ended with stop or length."},
    {"requests", "cancelled", "specd_requests_cancelled_total", "counter", "Requests cancelled (by the client or because it went away)."},
    {"requests", "vanished", "specd_requests_vanished_total", "counter", "Requests cancelled because their client disappeared."},
    {"requests", "errors", "specd_request_errors_total", "counter", "Error replies of any operation."},
    {"requests", "busy", "specd_requests_busy_total", "counter", "Requests refused because sessions and queue were full."},
    {"requests", "active", "specd_requests_active", "gauge", "Requests running now."},
    {"requests", "queued", "specd_queue_depth", "gauge", "Requests waiting for a session."},
    {"requests", "preemptions", "specd_preemptions_total", "counter", "Times requests' KV blocks were taken back for older ones (then recomputed)."},
    {"tokens", "prompt", "specd_prompt_tokens_total", "counter", "Prompt tokens of finished requests."},
    {"tokens", "prefilled", "specd_prefilled_tokens_total", "counter", "Prompt tokens computed (the rest came from a cached prefix)."},
    {"tokens", "reused", "specd_reused_tokens_total", "counter", "Prompt tokens taken from KV caches (a shared or cached prefix) instead of computed."},
    {"tokens", "generated", "specd_generated_tokens_total", "counter", "Tokens generated."},
    {"tokens", "drafted", "specd_drafted_tokens_total", "counter", "Tokens proposed by the speculative proposer."},
    {"tokens", "accepted", "specd_accepted_tokens_total", "counter", "Proposed tokens the target accepted."},
    {"tokens", "target_passes", "specd_target_passes_total", "counter", "Target forward passes after prefill."},
    {NULL, "acceptance", "specd_acceptance_ratio", "gauge", "Accepted over drafted tokens since start."},
    {NULL, "tokens_per_pass", "specd_tokens_per_pass", "gauge", "Tokens per target pass after prefill since start (1 without speculation)."},
    {"sessions", "pool", "specd_sessions", "gauge", "Engine sessions allocated."},
    {"sessions", "busy", "specd_sessions_busy", "gauge", "Engine sessions running a request."},
    {"kv", "used_positions", "specd_kv_used_positions", "gauge", "KV cache positions holding tokens."},
    {"kv", "total_positions", "specd_kv_total_positions", "gauge", "KV cache positions allocated."},
    {"kv", "used_bytes", "specd_kv_used_bytes", "gauge", "KV cache bytes holding tokens."},
    {"kv", "total_bytes", "specd_kv_total_bytes", "gauge", "KV cache bytes allocated."},
    {NULL, "uptime_s", "specd_uptime_seconds", "gauge", "Seconds since the daemon started."},
};

/* The daemon's histograms (milliseconds) and their names here (seconds). */
static const struct {
    const char *key, *name, *help;
} k_hists[] = {
    {"ttft_ms", "specd_time_to_first_token_seconds", "Arrival to first token, per request."},
    {"ms_per_token", "specd_time_per_output_token_seconds", "Mean time per token after the first, per request."},
    {"queue_ms", "specd_queue_seconds", "Time waiting for a session, per request."},
    {"total_ms", "specd_request_duration_seconds", "Arrival to done, per request."},
};

static void put_header(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_value(FILE *f, const json_t *v) {
    if (json_is_integer(v)) fprintf(f, "%lld\n", (long long)json_integer_value(v));
    else fprintf(f, "%.9g\n", json_number_value(v));
}

/* Buckets made cumulative; a histogram whose arrays do not have the documented shape is left out. */
static void put_hist(FILE *f, const json_t *h, const char *name, const char *help) {
    const json_t *bounds = json_object_get(h, "bounds_ms"), *counts = json_object_get(h, "counts");
    const json_t *sum = json_object_get(h, "sum_ms");
    size_t nb = json_array_size(bounds);
    if (!json_is_array(counts) || json_array_size(counts) != nb + 1 || !json_is_number(sum)) return;
    put_header(f, name, "histogram", help);
    long long acc = 0;
    for (size_t i = 0; i <= nb; i++) {
        acc += (long long)json_integer_value(json_array_get(counts, i));
        if (i < nb) fprintf(f, "%s_bucket{le=\"%g\"} %lld\n", name, json_number_value(json_array_get(bounds, i)) / 1e3, acc);
        else fprintf(f, "%s_bucket{le=\"+Inf\"} %lld\n", name, acc);
    }
    fprintf(f, "%s_sum %.9g\n%s_count %lld\n", name, json_number_value(sum) / 1e3, name, acc);
}

char *gw_metrics_text(const char *stats_json, const gw_counters *c) {
    json_t *j = json_loads(stats_json, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) {
        json_decref(j);
        return NULL;
    }
    for (size_t i = 0; i < sizeof k_metrics / sizeof k_metrics[0]; i++) {
        const metric *m = &k_metrics[i];
        const json_t *v = json_object_get(m->section ? json_object_get(j, m->section) : j, m->key);
        if (!json_is_number(v)) continue;
        put_header(f, m->name, m->type, m->help);
        fprintf(f, "%s ", m->name);
        put_value(f, v);
    }
    const json_t *hists = json_object_get(j, "histograms");
    for (size_t i = 0; i < sizeof k_hists / sizeof k_hists[0]; i++)
        put_hist(f, json_object_get(hists, k_hists[i].key), k_hists[i].name, k_hists[i].help);
    put_header(f, "specd_http_requests_total", "counter", "HTTP requests received by the gateway.");
    fprintf(f, "specd_http_requests_total %llu\n", (unsigned long long)c->http_requests);
    put_header(f, "specd_http_errors_total", "counter", "HTTP error responses sent by the gateway.");
    fprintf(f, "specd_http_errors_total %llu\n", (unsigned long long)c->http_errors);
    put_header(f, "specd_http_streams_total", "counter", "Streamed (SSE) responses started by the gateway.");
    fprintf(f, "specd_http_streams_total %llu\n", (unsigned long long)c->http_streams);
    json_decref(j);
    if (fclose(f)) {
        free(out);
        return NULL;
    }
    return out;
}
