/* Admission (running set + bounded FIFO queue) and the session pool with prefix reuse. */
#include "daemon/scheduler.h"

#include "draft/proposer.h"

#include <stdlib.h>
#include <string.h>

int sd_sched_init(sd_sched *s, sd_engine *e, int max_active, int queue_max, sd_err *err) {
    memset(s, 0, sizeof *s);
    s->e = e;
    s->max_active = max_active;
    s->queue_max = queue_max;
    s->active = calloc((size_t)max_active, sizeof *s->active);
    s->pool = calloc((size_t)max_active, sizeof *s->pool);
    s->turn = calloc((size_t)max_active, sizeof *s->turn);
    s->gens = calloc((size_t)max_active, sizeof *s->gens);
    if (!s->active || !s->pool || !s->turn || !s->gens) {
        sd_sched_free(s);
        return sd_errf(err, "scheduler: out of memory for %d sessions", max_active);
    }
    return 0;
}

void sd_sched_free(sd_sched *s) {
    if (s->pool)
        for (int i = 0; i < s->max_active; i++)
            if (s->pool[i].s) sd_session_free(s->pool[i].s);
    free(s->pool);
    free(s->active);
    free(s->turn);
    free(s->gens);
    memset(s, 0, sizeof *s);
}

void sd_dreq_free(sd_dreq *r) {
    if (!r) return;
    if (r->gen) sd_gen_free(r->gen);
    sd_request_free(&r->req);
    free(r->prompt);
    free(r);
}

static bool same_client(const sd_dreq *r, const unsigned char *rid, int rid_len) {
    return r->from.rid_len == rid_len && memcmp(r->from.rid, rid, (size_t)rid_len) == 0;
}

sd_dreq *sd_sched_find(sd_sched *s, const unsigned char *rid, int rid_len, uint64_t id) {
    for (int i = 0; i < s->max_active; i++) {
        sd_dreq *r = s->active[i];
        if (r && r->id == id && same_client(r, rid, rid_len)) return r;
    }
    for (sd_dreq *r = s->q_head; r; r = r->next)
        if (r->id == id && same_client(r, rid, rid_len)) return r;
    return NULL;
}

bool sd_sched_can_start(const sd_sched *s) { return s->n_active < s->max_active && s->n_queued == 0; }
bool sd_sched_can_queue(const sd_sched *s) { return s->n_queued < s->queue_max; }

void sd_sched_enqueue(sd_sched *s, sd_dreq *r) {
    r->next = NULL;
    if (s->q_tail) s->q_tail->next = r; else s->q_head = r;
    s->q_tail = r;
    s->n_queued++;
}

bool sd_sched_dequeue(sd_sched *s, sd_dreq *r) {
    sd_dreq *prev = NULL;
    for (sd_dreq *q = s->q_head; q; prev = q, q = q->next) {
        if (q != r) continue;
        if (prev) prev->next = q->next; else s->q_head = q->next;
        if (s->q_tail == q) s->q_tail = prev;
        s->n_queued--;
        q->next = NULL;
        return true;
    }
    return false;
}

sd_dreq *sd_sched_pop(sd_sched *s) {
    sd_dreq *r = s->q_head;
    if (r) sd_sched_dequeue(s, r);
    return r;
}

/* Picks a slot: the idle session of this tenant with the longest shared prefix; with none sharing
 * anything, a fresh slot while the pool is not full (so other cached prompts survive), else the least
 * recently used. */
static int pick_slot(sd_sched *s, sd_tenant t, const int32_t *prompt, int n) {
    int best = -1, best_lcp = 0, empty = -1, lru = -1;
    for (int i = 0; i < s->max_active; i++) {
        sd_pool_slot *p = &s->pool[i];
        if (p->busy) continue;
        if (!p->s) { if (empty < 0) empty = i; continue; }
        int nt = 0;
        const int32_t *toks = sd_session_tokens(p->s, &nt);
        int lcp = p->tenant == t ? sd_tokens_lcp(toks, nt, prompt, n) : 0;
        if (lcp > best_lcp) { best_lcp = lcp; best = i; }
        if (lru < 0 || p->last_used < s->pool[lru].last_used) lru = i;
    }
    if (best >= 0) return best;
    if (empty >= 0) return empty;
    return lru;
}

int sd_sched_start(sd_sched *s, sd_dreq *r, sd_err *err) {
    int slot = pick_slot(s, r->from.tenant, r->prompt, r->n_prompt);
    if (slot < 0) return sd_errf(err, "scheduler: no free session");
    sd_pool_slot *p = &s->pool[slot];
    if (!p->s) {
        if (sd_session_new(s->e, &p->s, err)) return -1;
        s->n_pool++;
    }
    if (sd_gen_start(p->s, r->prompt, r->n_prompt, &r->params, &r->gen, err)) {
        r->gen = NULL;
        return -1;
    }
    p->busy = true;
    p->tenant = r->from.tenant;
    r->slot = slot;
    for (int i = 0; i < s->max_active; i++)
        if (!s->active[i]) { s->active[i] = r; break; }
    s->n_active++;
    return 0;
}

void sd_sched_finish(sd_sched *s, sd_dreq *r) {
    if (r->gen) { sd_gen_free(r->gen); r->gen = NULL; }
    if (r->slot >= 0) {
        s->pool[r->slot].busy = false;
        s->pool[r->slot].last_used = ++s->tick;
        r->slot = -1;
    }
    for (int i = 0; i < s->max_active; i++)
        if (s->active[i] == r) { s->active[i] = NULL; s->n_active--; break; }
}

int sd_sched_pool_busy(const sd_sched *s) {
    int n = 0;
    for (int i = 0; i < s->max_active; i++) n += s->pool[i].busy;
    return n;
}

/* The engine's KV pool: positions in blocks taken (whole blocks) and in all. */
void sd_sched_kv_use(const sd_sched *s, sd_kv_use *out) {
    uint64_t per = sd_engine_kv_bytes_per_token(s->e);
    memset(out, 0, sizeof *out);
    sd_engine_kv_use(s->e, &out->used_positions, &out->total_positions);
    out->used_bytes = out->used_positions * per;
    out->total_bytes = out->total_positions * per;
}
