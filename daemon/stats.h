/* Server-wide counters and latency histograms, reported by the `stats` op. */
#ifndef SD_DSTATS_H
#define SD_DSTATS_H
#include <msgpack.h>
#include <stdint.h>

#define SD_HIST_BUCKETS 17 /* SD_HIST_BOUNDS bounds + one overflow bucket */

typedef struct sd_hist {
    uint64_t counts[SD_HIST_BUCKETS];
} sd_hist;

typedef struct sd_srv_stats {
    double t_start;
    uint64_t total, completed, cancelled, errors, busy, vanished, other;
    uint64_t tok_prompt, tok_prefilled, tok_generated, tok_drafted, tok_accepted;
    sd_hist ms_per_token, ttft_ms, queue_ms, total_ms;
} sd_srv_stats;

void sd_hist_add(sd_hist *h, double ms);
/* Packs the `stats` result fields (everything after v/id/type/op): 6 key/value pairs. */
#define SD_STATS_N_FIELDS 6
void sd_stats_pack(msgpack_packer *pk, const sd_srv_stats *s, double now, int active, int queued, int pool,
                   int pool_busy);

#endif
