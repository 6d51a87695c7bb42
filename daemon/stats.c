/* Server counters and fixed-bucket latency histograms. */
#include "daemon/stats.h"

#include <stdlib.h>
#include <string.h>

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
    msgpack_pack_map(pk, 10);
    sd_pack_kv_uint(pk, "total", s->total);
    sd_pack_kv_int(pk, "active", active);
    sd_pack_kv_int(pk, "queued", queued);
    sd_pack_kv_uint(pk, "completed", s->completed);
    sd_pack_kv_uint(pk, "cancelled", s->cancelled);
    sd_pack_kv_uint(pk, "errors", s->errors);
    sd_pack_kv_uint(pk, "busy", s->busy);
    sd_pack_kv_uint(pk, "vanished", s->vanished);
    sd_pack_kv_uint(pk, "other", s->other);
    sd_pack_kv_uint(pk, "preemptions", s->preemptions);
    sd_pack_cstr(pk, "tokens");
    msgpack_pack_map(pk, 7);
    sd_pack_kv_uint(pk, "prompt", s->tok_prompt);
    sd_pack_kv_uint(pk, "prefilled", s->tok_prefilled);
    sd_pack_kv_uint(pk, "reused", s->tok_reused);
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

/* ------------------------------------------------------------------ the board shared by both threads */

int sd_board_init(sd_board *b, double t_start) {
    memset(b, 0, sizeof *b);
    b->all.t_start = t_start;
    return pthread_mutex_init(&b->mu, NULL) ? -1 : 0;
}

void sd_board_free(sd_board *b) {
    pthread_mutex_destroy(&b->mu);
    free(b->tenants);
    memset(b, 0, sizeof *b);
}

/* Tenant t's counters, created zeroed on first use; NULL when out of memory (then only `all` counts).
 * Called with the lock held. */
static sd_srv_stats *tenant_stats(sd_board *b, sd_tenant t) {
    for (int i = 0; i < b->n_tenants; i++)
        if (b->tenants[i].t == t) return &b->tenants[i].st;
    if (b->n_tenants == b->cap_tenants) {
        int cap = b->cap_tenants ? 2 * b->cap_tenants : 8;
        sd_board_tenant *nt = realloc(b->tenants, (size_t)cap * sizeof *nt);
        if (!nt) return NULL;
        b->tenants = nt;
        b->cap_tenants = cap;
    }
    sd_board_tenant *e = &b->tenants[b->n_tenants++];
    memset(e, 0, sizeof *e);
    e->t = t;
    e->st.t_start = b->all.t_start;
    return &e->st;
}

void sd_board_update(sd_board *b, sd_tenant t, sd_board_fn fn, const void *arg) {
    pthread_mutex_lock(&b->mu);
    fn(&b->all, arg);
    sd_srv_stats *st = tenant_stats(b, t);
    if (st) fn(st, arg);
    pthread_mutex_unlock(&b->mu);
}

void sd_board_count_error(sd_srv_stats *st, const void *arg) { (void)arg; st->errors++; }
void sd_board_count_busy(sd_srv_stats *st, const void *arg) { (void)arg; st->busy++; st->errors++; }
void sd_board_count_other(sd_srv_stats *st, const void *arg) { (void)arg; st->other++; }
void sd_board_count_total(sd_srv_stats *st, const void *arg) { (void)arg; st->total++; }
void sd_board_count_vanished(sd_srv_stats *st, const void *arg) { (void)arg; st->vanished++; st->cancelled++; }

void sd_board_pack(sd_board *b, sd_tenant t, msgpack_packer *pk, double now) {
    pthread_mutex_lock(&b->mu);
    sd_srv_stats *st = tenant_stats(b, t);
    sd_srv_stats zero = {.t_start = b->all.t_start};
    sd_stats_pack(pk, st ? st : &zero, now, b->active, b->queued, b->pool, b->pool_busy, &b->kv);
    pthread_mutex_unlock(&b->mu);
}
