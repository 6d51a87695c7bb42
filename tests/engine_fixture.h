/* The engine/session/prompt loop the engine tests share: an engine opened on the CPU with one session, a
 * prompt encoded once, requests run to the end with every step's output checked against the request's
 * totals. Include after tests/test.h; everything is static inline (a program may use part of it). */
#ifndef SD_ENGINE_FIXTURE_H
#define SD_ENGINE_FIXTURE_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target/engine.h"

#define ENG_MAXTOK 512

/* What one request produced, gathered step by step. */
typedef struct eng_result {
    int32_t ids[ENG_MAXTOK];
    int n;
    char text[8192];
    size_t len;
    sd_finish fin;
    sd_gen_stats st;
} eng_result;

typedef struct eng_fx {
    sd_engine *e;
    sd_session *s;
    int32_t *prompt; /* [n]: the last prompt eng_prompt encoded */
    int n;
} eng_fx;

/* Opens an engine (device "cpu" and 1 thread unless c says otherwise) and one session on it; prints the
 * engine's message and returns -1 when either fails. */
static inline int eng_open_cfg(eng_fx *f, sd_engine_config c) {
    memset(f, 0, sizeof *f);
    if (!c.device) c.device = "cpu";
    if (!c.n_threads) c.n_threads = 1;
    sd_err err = {{0}};
    if (sd_engine_open(&c, &f->e, &err) || sd_session_new(f->e, &f->s, &err)) {
        fprintf(stderr, "  engine: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* The usual engine: a target (with a separate tokenizer file for llama2.c checkpoints), and at most one
 * proposer: a draft model, n-gram lookup of order `lookup`, or self-drafting with `layers` layers. */
static inline int eng_open(eng_fx *f, const char *target, const char *tok, const char *draft, int lookup, int layers) {
    return eng_open_cfg(f, (sd_engine_config){.target_path = target, .target_tok = tok, .draft_path = draft,
                                              .draft_tok = tok, .lookup_n = lookup, .draft_layers = layers});
}

static inline void eng_close(eng_fx *f) {
    sd_session_free(f->s);
    sd_engine_free(f->e);
    free(f->prompt);
    memset(f, 0, sizeof *f);
}

/* Token ids of text in *ids (malloc'd); their count, -1 on failure. */
static inline int eng_encode(sd_engine *e, const char *text, int32_t **ids) {
    int n = 0;
    if (sd_tok_encode(e->target->tok, text, strlen(text), SD_TOK_DEFAULT_SPECIALS, ids, &n, NULL)) return -1;
    return n;
}

/* Encodes text as the fixture's prompt; its token count, -1 on failure. */
static inline int eng_prompt(eng_fx *f, const char *text) {
    free(f->prompt);
    f->prompt = NULL;
    f->n = eng_encode(f->e, text, &f->prompt);
    return f->n;
}

/* Default parameters with a mode, a draft length range and a token budget. */
static inline sd_gen_params eng_params(sd_mode mode, int kmin, int kmax, int max_tokens) {
    sd_gen_params p = sd_gen_params_default();
    p.mode = mode;
    p.draft_min = kmin;
    p.draft_max = kmax;
    p.max_tokens = max_tokens;
    return p;
}

/* Runs a request to the end on session s, checking that what the steps report adds up to the totals. */
static inline int eng_run_on(sd_session *s, const int32_t *prompt, int n, const sd_gen_params *p, eng_result *r) {
    memset(r, 0, sizeof *r);
    sd_gen *g;
    sd_err err = {{0}};
    if (sd_gen_start(s, prompt, n, p, &g, &err)) {
        fprintf(stderr, "  start: %s\n", err.msg);
        return -1;
    }
    while (sd_gen_finish(g) == SD_FINISH_NONE) {
        if (sd_gen_step(g, &err)) {
            fprintf(stderr, "  step: %s\n", err.msg);
            sd_gen_free(g);
            return -1;
        }
        const int32_t *ids;
        int ni;
        const char *text;
        size_t tl;
        sd_gen_last(g, &ids, &ni, &text, &tl);
        for (int i = 0; i < ni && r->n < ENG_MAXTOK; i++) r->ids[r->n++] = ids[i];
        if (r->len + tl < sizeof r->text) memcpy(r->text + r->len, text, tl), r->len += tl;
    }
    r->text[r->len] = 0;
    int nt;
    const int32_t *all = sd_gen_tokens(g, &nt);
    size_t tl;
    const char *txt = sd_gen_text(g, &tl);
    CHECK(nt == r->n && !memcmp(all, r->ids, (size_t)nt * sizeof *all));
    CHECK(tl == r->len && !memcmp(txt, r->text, tl));
    r->fin = sd_gen_finish(g);
    sd_gen_get_stats(g, &r->st);
    sd_gen_free(g);
    return 0;
}

/* Runs the fixture's prompt on its session. */
static inline int eng_run(eng_fx *f, const sd_gen_params *p, eng_result *r) {
    return eng_run_on(f->s, f->prompt, f->n, p, r);
}

static inline bool eng_same_ids(const eng_result *a, const eng_result *b) {
    return a->n == b->n && !memcmp(a->ids, b->ids, (size_t)a->n * sizeof *a->ids);
}

/* Index of the first token where a and b differ (the shorter length when one is a prefix). */
static inline int eng_first_diff(const eng_result *a, const eng_result *b) {
    int i = 0;
    while (i < a->n && i < b->n && a->ids[i] == b->ids[i]) i++;
    return i;
}
#endif
