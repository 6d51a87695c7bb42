/* Server counters and fixed-bucket latency histograms. */
#include "daemon/stats.h"

#include "ipc/protocol.h"

static const double bounds[SD_HIST_BUCKETS - 1] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100,
                                                   250, 500, 1000, 2500, 10000};

void sd_hist_add(sd_hist *h, double ms) {
    int i = 0;
    while (i < SD_HIST_BUCKETS - 1 && ms > bounds[i]) i++;
    h->counts[i]++;
    h->sum_ms += ms;
}

static void pack_hist(msgpack_packer *pk, const char *name, const sd_hist *h) {
    sd_pack_cstr(pk, name);
    msgpack_pack_map(pk, 3);
    sd_pack_kv_double(pk, "sum_ms", h->sum_ms);
    sd_pack_cstr(pk, "bounds_ms");
    msgpack_pack_array(pk, SD_HIST_BUCKETS - 1);
    for (int i = 0; i < SD_HIST_BUCKETS - 1; i++) msgpack_pack_double(pk, bounds[i]);
    sd_pack_cstr(pk, "counts");
    msgpack_pack_array(pk, SD_HIST_BUCKETS);
    for (int i = 0; i < SD_HIST_BUCKETS; i++) msgpack_pack_uint64(pk, h->counts[i]);
}

void sd_stats_pack(msgpack_packer *pk, const sd_srv_stats *s, double now, int active, int queued, int pool,
                   int pool_busy, const sd_kv_use *kv) {
    sd_pack_kv_double(pk, "uptime_s", now - s->t_start);
    sd_pack_cstr(pk, "requests");
    msgpack_pack_map(pk, 9);
    sd_pack_kv_uint(pk, "total", s->total);
    sd_pack_kv_int(pk, "active", active);
    sd_pack_kv_int(pk, "queued", queued);
    sd_pack_kv_uint(pk, "completed", s->completed);
    sd_pack_kv_uint(pk, "cancelled", s->cancelled);
    sd_pack_kv_uint(pk, "errors", s->errors);
    sd_pack_kv_uint(pk, "busy", s->busy);
    sd_pack_kv_uint(pk, "vanished", s->vanished);
    sd_pack_kv_uint(pk, "other", s->other);
    sd_pack_cstr(pk, "tokens");
    msgpack_pack_map(pk, 6);
    sd_pack_kv_uint(pk, "prompt", s->tok_prompt);
    sd_pack_kv_uint(pk, "prefilled", s->tok_prefilled);
    sd_pack_kv_uint(pk, "generated", s->tok_generated);
    sd_pack_kv_uint(pk, "drafted", s->tok_drafted);
    sd_pack_kv_uint(pk, "accepted", s->tok_accepted);
    sd_pack_kv_uint(pk, "target_passes", s->target_passes);
    sd_pack_kv_double(pk, "acceptance", s->tok_drafted ? (double)s->tok_accepted / (double)s->tok_drafted : 0.0);
    /* as sd_gen_stats_tokens_per_pass, over all finished requests: the prefill pass's first token aside */
    sd_pack_kv_double(pk, "tokens_per_pass", s->target_passes ? (double)s->tok_decoded / (double)s->target_passes : 0.0);
    sd_pack_cstr(pk, "kv");
    msgpack_pack_map(pk, 4);
    sd_pack_kv_uint(pk, "used_positions", kv->used_positions);
    sd_pack_kv_uint(pk, "total_positions", kv->total_positions);
    sd_pack_kv_uint(pk, "used_bytes", kv->used_bytes);
    sd_pack_kv_uint(pk, "total_bytes", kv->total_bytes);
    sd_pack_cstr(pk, "sessions");
    msgpack_pack_map(pk, 2);
    sd_pack_kv_int(pk, "pool", pool);
    sd_pack_kv_int(pk, "busy", pool_busy);
    sd_pack_cstr(pk, "histograms");
    msgpack_pack_map(pk, 4);
    pack_hist(pk, "ms_per_token", &s->ms_per_token);
    pack_hist(pk, "ttft_ms", &s->ttft_ms);
    pack_hist(pk, "queue_ms", &s->queue_ms);
    pack_hist(pk, "total_ms", &s->total_ms);
}
