/* Server-wide counters and latency histograms, reported by the `stats` op. */
#ifndef SD_DSTATS_H
#define SD_DSTATS_H
#include <msgpack.h>
#include <stdint.h>

#define SD_HIST_BUCKETS 17 /* SD_HIST_BOUNDS bounds + one overflow bucket */

typedef struct sd_hist {
    uint64_t counts[SD_HIST_BUCKETS];
    double sum_ms; /* of every value added (Prometheus' _sum) */
} sd_hist;

typedef struct sd_srv_stats {
    double t_start;
    uint64_t total, completed, cancelled, errors, busy, vanished, other;
    uint64_t tok_prompt, tok_prefilled, tok_generated, tok_drafted, tok_accepted;
    uint64_t tok_decoded, target_passes; /* tokens after each request's first, and the target passes that made them */
    sd_hist ms_per_token, ttft_ms, queue_ms, total_ms;
} sd_srv_stats;

/* KV cache use at the moment of asking: positions the sessions hold (busy or keeping a cached prefix)
 * against the positions allocated, and the same in bytes. */
typedef struct sd_kv_use {
    uint64_t used_positions, total_positions, used_bytes, total_bytes;
} sd_kv_use;

void sd_hist_add(sd_hist *h, double ms);
/* Packs the `stats` result fields (everything after v/id/type/op): 8 key/value pairs. */
#define SD_STATS_N_FIELDS 8
void sd_stats_pack(msgpack_packer *pk, const sd_srv_stats *s, double now, int active, int queued, int pool,
                   int pool_busy, const sd_kv_use *kv);

#endif
