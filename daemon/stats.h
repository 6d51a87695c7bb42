/* Server-wide counters and latency histograms, reported by the `stats` op. */
#ifndef SD_DSTATS_H
#define SD_DSTATS_H
#include <msgpack.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/link.h"

#define SD_HIST_BUCKETS 17 /* SD_HIST_BOUNDS bounds + one overflow bucket */

typedef struct sd_hist {
    uint64_t counts[SD_HIST_BUCKETS];
    double sum_ms; /* of every value added (Prometheus' _sum) */
} sd_hist;

typedef struct sd_srv_stats {
    double t_start;
    uint64_t total, completed, cancelled, errors, busy, vanished, other;
    uint64_t preemptions; /* of finished requests: times their KV blocks were taken back (then recomputed) */
    uint64_t tok_prompt, tok_prefilled, tok_reused, tok_generated, tok_drafted, tok_accepted;
    uint64_t tok_decoded, target_passes; /* tokens after each request's first, and the target passes that made them */
    sd_hist ms_per_token, ttft_ms, queue_ms, total_ms;
} sd_srv_stats;

/* KV pool use at the moment of asking: positions in blocks taken (busy or keeping a cached prefix)
 * against the pool's positions, and the same in bytes. */
typedef struct sd_kv_use {
    uint64_t used_positions, total_positions, used_bytes, total_bytes;
} sd_kv_use;

void sd_hist_add(sd_hist *h, double ms);
/* Packs the `stats` result fields (everything after v/id/type/op): 8 key/value pairs. */
#define SD_STATS_N_FIELDS 8
void sd_stats_pack(msgpack_packer *pk, const sd_srv_stats *s, double now, int active, int queued, int pool,
                   int pool_busy, const sd_kv_use *kv);

/* What both daemon threads share: the counters (whole daemon, and per tenant: a client's `stats` shows its
 * own tenant's requests, tokens and latencies, so it learns nothing of another tenant's prompts), the load
 * (running, queued, sessions) and the backend's health. Every access holds mu. */
typedef struct sd_board_tenant {
    sd_tenant t;
    sd_srv_stats st;
} sd_board_tenant;

typedef struct sd_board {
    pthread_mutex_t mu;
    sd_srv_stats all;
    sd_board_tenant *tenants;
    int n_tenants, cap_tenants;
    int active, queued, pool, pool_busy;
    sd_kv_use kv;
    bool failed;
    char fail_msg[256];
} sd_board;

int sd_board_init(sd_board *b, double t_start);
void sd_board_free(sd_board *b);
/* Applies fn to the whole daemon's counters and to tenant t's (created on first use), under the lock. */
typedef void (*sd_board_fn)(sd_srv_stats *st, const void *arg);
void sd_board_update(sd_board *b, sd_tenant t, sd_board_fn fn, const void *arg);
/* Ready-made fns: arg is ignored. */
void sd_board_count_error(sd_srv_stats *st, const void *arg);
void sd_board_count_busy(sd_srv_stats *st, const void *arg);
void sd_board_count_other(sd_srv_stats *st, const void *arg);
void sd_board_count_total(sd_srv_stats *st, const void *arg);
void sd_board_count_vanished(sd_srv_stats *st, const void *arg);
/* Packs tenant t's `stats` fields (SD_STATS_N_FIELDS pairs) with the daemon's load. */
void sd_board_pack(sd_board *b, sd_tenant t, msgpack_packer *pk, double now);

#endif
