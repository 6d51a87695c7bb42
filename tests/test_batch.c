/* Continuous batching through the engine (target/step.c): requests stepped together in one target batch
 * per turn, joining as others finish, give exactly the tokens and text they give alone, at concurrency
 * 1, 2, 4, 8 and 16, with plain and speculative requests, different k, greedy and seeded sampling,
 * different prompt lengths, chunked prefill, draft confidence floors and mid-stream cancels in the same
 * batches; a draft model and self-drafting (their drafts batched per round) and lookup; sampling on the
 * host and on the backend (the CPU backend given the reference sample_rows/spec_accept, so kept rows
 * and batches split by the kept-logits room are exercised). Models: ../shared aidreams260K and its draft. */
#include <stdint.h>

#include "kernels/sample_ref.h"
#include "target/engine.h"
#include "target/engine_internal.h"
#include "test.h"
#include "tests/engine_fixture.h"
#include "tests/test_util.h"

static const char *prompts[] = {
    "Once upon a time", "The robot", "Data flows", "In the quiet of the night, when the stars came out and the",
    "The", "A little", "Light", "She said",
};
#define N_PROMPTS (int)(sizeof prompts / sizeof *prompts)

enum { N_JOBS = 24 };

/* One request of the mix. */
typedef struct job {
    int prompt;
    sd_gen_params p;
    int cancel_after; /* cancel once this many tokens came out (0: never) */
} job;

static job jobs[N_JOBS];

static void make_jobs(void) {
    for (int i = 0; i < N_JOBS; i++) {
        job *j = &jobs[i];
        j->prompt = (i * 5) % N_PROMPTS;
        int k = 1 + (i * 3) % 8;
        j->p = eng_params(i % 3 == 2 ? SD_MODE_PLAIN : SD_MODE_SPEC, i % 2 ? 1 : k, k, 12 + (i * 7) % 40);
        if (i % 4 == 3) {
            j->p.sampling.temperature = 0.9f;
            j->p.sampling.top_k = i % 8 == 7 ? 40 : 0;
            j->p.sampling.seed = 1000 + (uint64_t)i;
        }
        j->cancel_after = i % 5 == 4 ? 6 : 0;
        if (i % 6 == 1) j->p.draft_p_min = 0.6f; /* model proposers stop early, at different rounds */
    }
}

/* A request in flight: its generation and what came out so far. */
typedef struct flight {
    sd_gen *g;
    int job;
    eng_result r;
} flight;

/* Appends g's last step to r; cancels when the job says so. */
static void collect(flight *f) {
    const int32_t *ids;
    int ni;
    const char *text;
    size_t tl;
    sd_gen_last(f->g, &ids, &ni, &text, &tl);
    for (int i = 0; i < ni && f->r.n < ENG_MAXTOK; i++) f->r.ids[f->r.n++] = ids[i];
    if (f->r.len + tl < sizeof f->r.text) memcpy(f->r.text + f->r.len, text, tl), f->r.len += tl;
    int c = jobs[f->job].cancel_after;
    if (c && f->r.n >= c) sd_gen_cancel(f->g);
}

static int start(sd_session *s, int32_t **toks, int *ntok, int j, flight *f) {
    memset(f, 0, sizeof *f);
    f->job = j;
    sd_err err = {{0}};
    if (sd_gen_start(s, toks[jobs[j].prompt], ntok[jobs[j].prompt], &jobs[j].p, &f->g, &err)) {
        fprintf(stderr, "  start job %d: %s\n", j, err.msg);
        return -1;
    }
    return 0;
}

static void end(flight *f, eng_result *out) {
    f->r.text[f->r.len] = 0;
    f->r.fin = sd_gen_finish(f->g);
    sd_gen_get_stats(f->g, &f->r.st);
    *out = f->r;
    sd_gen_free(f->g);
    f->g = NULL;
}

/* Runs every job with up to `conc` at once on conc sessions: each turn steps all in flight in one batch
 * (prefill chunks within batch_tokens rows); a finished request's session takes the next job. */
static int run_all(sd_engine *e, int32_t **toks, int *ntok, int conc, int batch_tokens, eng_result *res) {
    sd_session *ss[16] = {0};
    flight fl[16];
    sd_gen *gens[16];
    int next = 0, active = 0, rc = 0;
    sd_err err = {{0}};
    for (int i = 0; i < conc; i++) {
        fl[i].g = NULL;
        if (sd_session_new(e, &ss[i], &err)) {
            fprintf(stderr, "  session: %s\n", err.msg);
            rc = -1;
            goto out;
        }
    }
    for (;;) {
        for (int i = 0; i < conc && next < N_JOBS; i++)
            if (!fl[i].g) {
                if (start(ss[i], toks, ntok, next, &fl[i])) { rc = -1; goto out; }
                next++;
                active++;
            }
        if (!active) break;
        int n = 0;
        for (int i = 0; i < conc; i++)
            if (fl[i].g) gens[n++] = fl[i].g;
        if (sd_gen_step_batch(gens, n, batch_tokens, &err)) {
            fprintf(stderr, "  step: %s\n", err.msg);
            rc = -1;
            goto out;
        }
        for (int i = 0; i < conc; i++) {
            if (!fl[i].g) continue;
            collect(&fl[i]);
            if (sd_gen_finish(fl[i].g) == SD_FINISH_NONE) continue;
            if (sd_gen_error(fl[i].g)) fprintf(stderr, "  job %d: %s\n", fl[i].job, sd_gen_error(fl[i].g));
            end(&fl[i], &res[fl[i].job]);
            active--;
        }
    }
out:
    for (int i = 0; i < conc; i++) {
        if (fl[i].g) sd_gen_free(fl[i].g);
        sd_session_free(ss[i]);
    }
    return rc;
}

static bool same(const eng_result *a, const eng_result *b) {
    return eng_same_ids(a, b) && a->len == b->len && !memcmp(a->text, b->text, a->len) && a->fin == b->fin;
}

/* prop: 'd' the draft model, 's' self-drafting with 3 layers, 'l' 2-gram lookup. */
static void check_concurrency(bool backend_sampling, char prop) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    const char *draft = shared_path("models/aidreams-draft.bin");
    if (!target || !tok || !draft) SKIP("../shared/models/aidreams260K.bin, aidreams-draft.bin or tok512.bin not found");
    eng_fx f;
    REQUIRE(eng_open(&f, target, tok, prop == 'd' ? draft : NULL, prop == 'l' ? 2 : 0, prop == 's' ? 3 : 0) == 0);
    if (backend_sampling) {
        f.e->be->sample_rows = sd_sample_rows_ref;
        f.e->be->spec_accept = sd_spec_accept_ref;
    }
    make_jobs();
    int32_t *toks[N_PROMPTS];
    int ntok[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) REQUIRE((ntok[i] = eng_encode(f.e, prompts[i], &toks[i])) > 0);
    static eng_result solo[N_JOBS], bat[N_JOBS];
    /* alone: one request at a time, whole prompts */
    REQUIRE(run_all(f.e, toks, ntok, 1, 0, solo) == 0);
    int cancelled = 0, sampled_spec = 0;
    for (int j = 0; j < N_JOBS; j++) {
        cancelled += solo[j].fin == SD_FINISH_CANCELLED;
        sampled_spec += jobs[j].p.sampling.temperature > 0 && solo[j].st.drafted > 0;
        CHECKF(solo[j].n > 0, "job %d produced nothing", j);
    }
    CHECKF(cancelled >= 3, "only %d jobs were cancelled mid-stream", cancelled);
    if (prop != 'l') CHECKF(sampled_spec >= 2, "only %d sampled jobs speculated", sampled_spec);
    const int concs[] = {1, 2, 4, 8, 16}, budgets[] = {5, 0, 7, 16, 24};
    for (int c = 0; c < 5; c++) {
        memset(bat, 0, sizeof bat);
        REQUIRE(run_all(f.e, toks, ntok, concs[c], budgets[c], bat) == 0);
        int bad = 0;
        for (int j = 0; j < N_JOBS; j++)
            if (!same(&solo[j], &bat[j])) {
                bad++;
                fprintf(stderr, "  concurrency %d, job %d: differs at token %d (%d vs %d tokens, finish %d vs %d)\n",
                        concs[c], j, eng_first_diff(&solo[j], &bat[j]), solo[j].n, bat[j].n, solo[j].fin,
                        bat[j].fin);
            }
        CHECKF(bad == 0, "proposer %c, %s sampling, concurrency %d (prefill rows %d): %d of %d requests differ from alone",
               prop, backend_sampling ? "backend" : "host", concs[c], budgets[c], bad, N_JOBS);
    }
    for (int i = 0; i < N_PROMPTS; i++) free(toks[i]);
    eng_close(&f);
}

static void test_concurrency_draft_model(void) { check_concurrency(false, 'd'); }
static void test_concurrency_draft_model_backend_sampling(void) { check_concurrency(true, 'd'); }
static void test_concurrency_self_draft_backend_sampling(void) { check_concurrency(true, 's'); }
static void test_concurrency_lookup(void) { check_concurrency(false, 'l'); }

/* A KV pool that holds two requests at most (10 blocks of 16 positions each for target and draft; a
 * request needs up to 5), 8 at once: the newest are preempted and recomputed later, every request gives
 * exactly its solo tokens, text and finish (plain and speculative, greedy and seeded sampling, cancels),
 * some were preempted, none failed. */
static void test_preemption(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    const char *draft = shared_path("models/aidreams-draft.bin");
    if (!target || !tok || !draft) SKIP("../shared/models/aidreams260K.bin, aidreams-draft.bin or tok512.bin not found");
    eng_fx big, small;
    REQUIRE(eng_open(&big, target, tok, draft, 0, 0) == 0);
    size_t per = sd_engine_kv_bytes_per_token(big.e) * SD_KV_BLOCK;
    REQUIRE(eng_open_cfg(&small, (sd_engine_config){.target_path = target, .target_tok = tok, .draft_path = draft,
                                                    .draft_tok = tok, .kv_mem = 10 * per}) == 0);
    int total, free_now;
    sd_model_kv_blocks(small.e->target, &total, &free_now);
    CHECK_EQ_INT(total, 10);
    sd_model_kv_blocks(small.e->draft, &total, &free_now);
    CHECK_EQ_INT(total, 10);
    make_jobs();
    int32_t *toks[N_PROMPTS];
    int ntok[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) REQUIRE((ntok[i] = eng_encode(big.e, prompts[i], &toks[i])) > 0);
    static eng_result solo[N_JOBS], bat[N_JOBS];
    REQUIRE(run_all(big.e, toks, ntok, 1, 0, solo) == 0);
    REQUIRE(run_all(small.e, toks, ntok, 8, 7, bat) == 0);
    int bad = 0, preempted = 0, resumed_sampled = 0;
    for (int j = 0; j < N_JOBS; j++) {
        CHECKF(bat[j].fin != SD_FINISH_ERROR, "job %d failed", j);
        preempted += bat[j].st.preempted;
        resumed_sampled += bat[j].st.preempted && jobs[j].p.sampling.temperature > 0;
        if (!same(&solo[j], &bat[j])) {
            bad++;
            fprintf(stderr, "  job %d (preempted %d): differs at token %d (%d vs %d tokens)\n", j, bat[j].st.preempted,
                    eng_first_diff(&solo[j], &bat[j]), solo[j].n, bat[j].n);
        }
    }
    CHECKF(bad == 0, "%d of %d requests differ from alone under preemption", bad, N_JOBS);
    CHECKF(preempted >= 4, "only %d preemptions", preempted);
    fprintf(stderr, "# %d preemptions over %d requests (%d of them seeded sampling)\n", preempted, N_JOBS,
            resumed_sampled);
    for (int i = 0; i < N_PROMPTS; i++) free(toks[i]);
    eng_close(&big);
    eng_close(&small);
}

/* Prefix sharing across sessions: a request whose prompt's full blocks another session computed takes
 * them (prefilled is only the rest) and gives exactly a cold engine's output; another tenant reuses
 * nothing. */
static void test_prefix_sharing(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    if (!target || !tok) SKIP("../shared/models/aidreams260K.bin or tok512.bin not found");
    eng_fx cold, warm;
    REQUIRE(eng_open(&cold, target, tok, NULL, 0, 0) == 0 && eng_open(&warm, target, tok, NULL, 0, 0) == 0);
    const char *text = "In the quiet of the night, when the stars came out and the wind was soft over the hills, the";
    REQUIRE(eng_prompt(&cold, text) > 40);
    sd_gen_params p = eng_params(SD_MODE_PLAIN, 1, 1, 24);
    eng_result want, first, again, other;
    REQUIRE(eng_run_on(cold.s, cold.prompt, cold.n, &p, &want) == 0);
    sd_session *s2 = NULL;
    sd_err err = {{0}};
    REQUIRE(sd_session_new(warm.e, &s2, &err) == 0);
    REQUIRE(eng_run_on(warm.s, cold.prompt, cold.n, &p, &first) == 0);
    REQUIRE(eng_run_on(s2, cold.prompt, cold.n, &p, &again) == 0);
    CHECK(eng_same_ids(&want, &first) && eng_same_ids(&want, &again));
    int reused = again.st.reused;
    CHECKF(reused >= cold.n / SD_KV_BLOCK * SD_KV_BLOCK - SD_KV_BLOCK && reused % SD_KV_BLOCK == 0 && reused > 0 &&
               reused + again.st.prefilled == again.st.prompt_tokens,
           "reused %d, prefilled %d of %d prompt tokens", reused, again.st.prefilled, cold.n);
    CHECK_EQ_INT(first.st.prefilled, first.st.prompt_tokens);
    CHECK_EQ_INT(first.st.reused, 0);
    sd_session *s3 = NULL;
    REQUIRE(sd_session_new(warm.e, &s3, &err) == 0);
    p.tenant = 42;
    REQUIRE(eng_run_on(s3, cold.prompt, cold.n, &p, &other) == 0);
    CHECK_EQ_INT(other.st.prefilled, other.st.prompt_tokens);
    CHECK_EQ_INT(other.st.reused, 0);
    CHECK(eng_same_ids(&want, &other));
    sd_session_free(s2);
    sd_session_free(s3);
    eng_close(&cold);
    eng_close(&warm);
}

/* Blocks of the draft model's pool referenced by sequences (cached free ones aside). */
static int draft_blocks_held(const sd_engine *e) {
    int total, free_now;
    sd_model_kv_blocks(e->draft, &total, &free_now);
    return total - free_now;
}

/* Self-drafting takes blocks of its own layers from the target's shallow pool: after a speculative
 * request the target's full pool holds only the target cache's blocks, the shallow pool the draft's, and a
 * session's KV position costs the target plus 3 of its layers (not 2 full copies). */
static void test_self_draft_shallow_pool(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    if (!target || !tok) SKIP("../shared/models/aidreams260K.bin or tok512.bin not found");
    eng_fx f;
    REQUIRE(eng_open(&f, target, tok, NULL, 0, 3) == 0);
    REQUIRE(eng_prompt(&f, "Once upon a time there was a little dog who liked to run in the park") > 8);
    sd_gen_params p = eng_params(SD_MODE_SPEC, 1, 4, 24);
    eng_result r;
    REQUIRE(eng_run(&f, &p, &r) == 0);
    CHECK(r.n > 0 && r.st.drafted > 0);
    const sd_seq *ds = f.s->prop->seq;
    CHECK(sd_seq_in_shallow_pool(ds) && !sd_seq_in_shallow_pool(f.s->seq));
    int total, free_now;
    sd_model_kv_blocks(f.e->target, &total, &free_now);
    CHECK_EQ_INT(total - free_now, f.s->seq->n_blocks);
    sd_model_kv_blocks_at(f.e->target, 3, &total, &free_now);
    CHECK(ds->n_blocks > 0 && total - free_now == ds->n_blocks);
    const sd_model *m = f.e->target;
    CHECK(sd_engine_kv_bytes_per_token(f.e) == sd_model_kv_bytes_per_token(m, m->hp.n_layers) +
                                                   sd_model_kv_bytes_per_token(m, 3));
    eng_close(&f);
}

/* The draft model shares prefixes too, through its own pool: a second session speculating on the same
 * prompt takes the first one's cached draft blocks (the draft pool grows by its private blocks only) and
 * drafts, accepts and outputs exactly what a cold engine does; another tenant takes none. */
static void test_prefix_sharing_draft(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    const char *draft = shared_path("models/aidreams-draft.bin");
    if (!target || !tok || !draft) SKIP("../shared/models/aidreams260K.bin, aidreams-draft.bin or tok512.bin not found");
    eng_fx cold, warm;
    REQUIRE(eng_open(&cold, target, tok, draft, 0, 0) == 0 && eng_open(&warm, target, tok, draft, 0, 0) == 0);
    const char *text = "In the quiet of the night, when the stars came out and the wind was soft over the hills, the";
    REQUIRE(eng_prompt(&cold, text) > 40);
    sd_gen_params p = eng_params(SD_MODE_SPEC, 3, 3, 20);
    eng_result want, first, again, other;
    REQUIRE(eng_run_on(cold.s, cold.prompt, cold.n, &p, &want) == 0);
    REQUIRE(eng_run_on(warm.s, cold.prompt, cold.n, &p, &first) == 0);
    int held1 = draft_blocks_held(warm.e), full = cold.n / SD_KV_BLOCK;
    sd_session *s2 = NULL, *s3 = NULL;
    sd_err err = {{0}};
    REQUIRE(sd_session_new(warm.e, &s2, &err) == 0 && sd_session_new(warm.e, &s3, &err) == 0);
    REQUIRE(eng_run_on(s2, cold.prompt, cold.n, &p, &again) == 0);
    int held2 = draft_blocks_held(warm.e);
    CHECK(eng_same_ids(&want, &first) && eng_same_ids(&want, &again));
    CHECKF(again.st.drafted == want.st.drafted && again.st.accepted == want.st.accepted,
           "drafted/accepted %d/%d, cold %d/%d", again.st.drafted, again.st.accepted, want.st.drafted,
           want.st.accepted);
    CHECKF(full >= 2 && held2 - held1 <= held1 - full + 1, "draft pool: one session holds %d blocks, two hold %d "
           "(%d full prompt blocks to share)", held1, held2, full);
    p.tenant = 42;
    REQUIRE(eng_run_on(s3, cold.prompt, cold.n, &p, &other) == 0);
    CHECK(eng_same_ids(&want, &other));
    CHECKF(draft_blocks_held(warm.e) - held2 >= held1, "another tenant's draft took shared blocks (%d -> %d)", held2,
           draft_blocks_held(warm.e));
    sd_session_free(s2);
    sd_session_free(s3);
    eng_close(&cold);
    eng_close(&warm);
}

/* Prefix sharing under memory pressure: the 24 requests' prompts all start with the same 48-token text, 8
 * run at once on pools of 12 blocks (target and draft), so shared blocks are taken, released, evicted
 * and reused while other requests read them, and requests are preempted: every request still gives
 * exactly what it gives alone on a roomy engine, and reports the prefix it reused. */
static void test_prefix_pressure(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    const char *draft = shared_path("models/aidreams-draft.bin");
    if (!target || !tok || !draft) SKIP("../shared/models/aidreams260K.bin, aidreams-draft.bin or tok512.bin not found");
    eng_fx big, small;
    REQUIRE(eng_open(&big, target, tok, draft, 0, 0) == 0);
    size_t per = sd_engine_kv_bytes_per_token(big.e) * SD_KV_BLOCK;
    REQUIRE(eng_open_cfg(&small, (sd_engine_config){.target_path = target, .target_tok = tok, .draft_path = draft,
                                                    .draft_tok = tok, .kv_mem = 12 * per}) == 0);
    make_jobs();
    const char *sys = "You are a helpful storyteller. Tell short stories about animals, the sea and the stars, "
                      "with happy endings and simple words for children. ";
    int32_t *toks[N_PROMPTS];
    int ntok[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        char text[512];
        snprintf(text, sizeof text, "%s%s", sys, prompts[i]);
        REQUIRE((ntok[i] = eng_encode(big.e, text, &toks[i])) > 48);
        if (ntok[i] > 72) ntok[i] = 72; /* room for up to 51 generated tokens in the 128-position context */
    }
    static eng_result solo[N_JOBS], bat[N_JOBS];
    REQUIRE(run_all(big.e, toks, ntok, 1, 0, solo) == 0);
    REQUIRE(run_all(small.e, toks, ntok, 8, 7, bat) == 0);
    int bad = 0, preempted = 0, reused = 0;
    for (int j = 0; j < N_JOBS; j++) {
        CHECKF(bat[j].fin != SD_FINISH_ERROR, "job %d failed", j);
        preempted += bat[j].st.preempted;
        reused += bat[j].st.reused > 0;
        if (!same(&solo[j], &bat[j])) {
            bad++;
            fprintf(stderr, "  job %d (preempted %d, reused %d): differs at token %d\n", j, bat[j].st.preempted,
                    bat[j].st.reused, eng_first_diff(&solo[j], &bat[j]));
        }
    }
    CHECKF(bad == 0, "%d of %d requests differ from alone with shared prefixes under pressure", bad, N_JOBS);
    CHECKF(preempted >= 2 && reused >= 8, "%d preemptions, %d requests reused a prefix", preempted, reused);
    fprintf(stderr, "# %d preemptions, %d of %d requests reused a shared prefix\n", preempted, reused, N_JOBS);
    for (int i = 0; i < N_PROMPTS; i++) free(toks[i]);
    eng_close(&big);
    eng_close(&small);
}

/* Bad calls fail with a message; a batch of one finished request does nothing. */
static void test_step_batch_errors(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    if (!target || !tok) SKIP("../shared/models/aidreams260K.bin or tok512.bin not found");
    eng_fx a, b;
    REQUIRE(eng_open(&a, target, tok, NULL, 0, 0) == 0 && eng_open(&b, target, tok, NULL, 0, 0) == 0);
    REQUIRE(eng_prompt(&a, "The robot") > 0);
    sd_err err = {{0}};
    sd_gen_params p = eng_params(SD_MODE_PLAIN, 1, 1, 3);
    sd_gen *ga = NULL, *gb = NULL;
    REQUIRE(sd_gen_start(a.s, a.prompt, a.n, &p, &ga, &err) == 0 && sd_gen_start(b.s, a.prompt, a.n, &p, &gb, &err) == 0);
    sd_gen *mixed[2] = {ga, gb}, *none[1] = {NULL};
    CHECK(sd_gen_step_batch(mixed, 2, 0, &err) != 0 && strstr(err.msg, "different engines"));
    CHECK(sd_gen_step_batch(none, 1, 0, &err) != 0 && strstr(err.msg, "NULL"));
    while (sd_gen_finish(ga) == SD_FINISH_NONE) REQUIRE(sd_gen_step_batch(&ga, 1, 0, &err) == 0);
    int n;
    sd_gen_tokens(ga, &n);
    CHECK_EQ_INT(n, 3);
    CHECK(sd_gen_error(ga) == NULL);
    CHECK(sd_gen_step_batch(&ga, 1, 0, &err) == 0); /* finished: nothing happens */
    sd_gen_tokens(ga, &n);
    CHECK_EQ_INT(n, 3);
    sd_gen_free(ga);
    sd_gen_free(gb);
    eng_close(&a);
    eng_close(&b);
}

/* Counts the occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* `specd bench --concurrency`: one entry per (concurrency, mode) with every request counted (4 built-in
 * prompts per request stream), plain drafting nothing; bad lists refused. */
static void test_bench_concurrency(void) {
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    const char *draft = shared_path("models/aidreams-draft.bin"), *bin = specd_bin();
    if (!target || !tok || !draft) SKIP("../shared/models/aidreams260K.bin, aidreams-draft.bin or tok512.bin not found");
    if (!bin) SKIP("build/specd not built");
    char cmd[2048];
    int st;
    snprintf(cmd, sizeof cmd, "%s bench -m %s -z %s -md %s -n 8 -t 1 --concurrency 1,3 --json 2>/dev/null", bin, target,
             tok, draft);
    char *out = run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_EQ_INT(st, 0);
    CHECKF(count_of(out, "\"mode\":") == 4, "%s", out);
    CHECK(count_of(out, "\"concurrency\":3,\"mode\":\"plain\",\"requests\":12") == 1);
    CHECK(count_of(out, "\"concurrency\":1,\"mode\":\"spec\",\"requests\":4") == 1);
    CHECK(strstr(out, "\"drafted\":0,") != NULL); /* plain drafts nothing */
    free(out);
    snprintf(cmd, sizeof cmd, "%s bench -m %s -z %s -md %s --concurrency 0,x 2>&1", bin, target, tok, draft);
    out = run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_EQ_INT(st, 2);
    CHECKF(strstr(out, "--concurrency") != NULL, "%s", out);
    free(out);
}

int main(void) {
    RUN(test_concurrency_draft_model);
    RUN(test_concurrency_draft_model_backend_sampling);
    RUN(test_concurrency_self_draft_backend_sampling);
    RUN(test_concurrency_lookup);
    RUN(test_preemption);
    RUN(test_prefix_sharing);
    RUN(test_prefix_sharing_draft);
    RUN(test_self_draft_shallow_pool);
    RUN(test_prefix_pressure);
    RUN(test_step_batch_errors);
    RUN(test_bench_concurrency);
    return TEST_DONE();
}
