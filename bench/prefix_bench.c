/* Prefix sharing benchmark (issue 10 §3): S sessions whose prompts share one long system prompt.
 *
 *   build/prefix_bench -m TARGET [-md DRAFT] [-t THREADS] [--prefix N] [--sessions S] [--suffix N] [-n N]
 *
 * Session 0 runs system prompt + its own suffix cold; sessions 1..S-1 then run the same system prompt
 * with their own suffixes, one after another, each on its own session, all keeping their caches. Reports:
 * the KV blocks held (target and draft pools; cached free blocks not counted) by one session and by all S,
 * and their ratio (issue target: <= 1.2x); the time to first token of session 0 (cold: the whole prompt),
 * of the later sessions (median, max), and of a cold prompt of the suffix alone (another tenant, so nothing
 * is shared), the target being later sessions ~ suffix alone. Prompts are deterministic
 * pseudo-random token ids (BOS first), so any model's vocabulary works. Greedy, plain or speculative
 * (with -md). Built by `make build/prefix_bench`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "bench/pct.h"
#include "target/engine.h"
#include "tokenizer/tokenizer.h"

typedef struct opts {
    const char *target, *draft;
    int threads, prefix, sessions, suffix, n;
} opts;

static int usage(void) {
    fprintf(stderr, "usage: prefix_bench -m TARGET [-md DRAFT] [-t THREADS] [--prefix N] [--sessions S] "
                    "[--suffix N] [-n TOKENS]\n");
    return 2;
}

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.prefix = 2000, .sessions = 32, .suffix = 8, .n = 8};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *num = !strcmp(a, "-t")           ? &o->threads
                   : !strcmp(a, "--prefix")   ? &o->prefix
                   : !strcmp(a, "--sessions") ? &o->sessions
                   : !strcmp(a, "--suffix")   ? &o->suffix
                   : !strcmp(a, "-n")         ? &o->n
                                              : NULL;
        if (!v) return usage();
        if (!strcmp(a, "-m")) o->target = v;
        else if (!strcmp(a, "-md")) o->draft = v;
        else if (num) *num = atoi(v);
        else return usage();
        i++;
    }
    if (!o->target || o->prefix < 1 || o->sessions < 1 || o->sessions > 1024 || o->suffix < 1 || o->n < 1) {
        fprintf(stderr, "prefix_bench: -m is required; --prefix, --suffix, -n >= 1, --sessions in 1..1024\n");
        return 2;
    }
    return 0;
}

/* A deterministic token id in [16, vocab) from (stream, i). */
static int32_t tok_at(uint64_t stream, int i, int vocab) {
    uint64_t x = stream * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull + 1;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    return 16 + (int32_t)(x % (uint64_t)(vocab - 16));
}

/* Runs prompt on s to the end; *ttft: seconds from the start to the first token. */
static int run(sd_session *s, const int32_t *prompt, int n, const sd_gen_params *p, double *ttft, sd_gen_stats *st,
               sd_err *err) {
    sd_gen *g = NULL;
    double t0 = sd_now_s();
    *ttft = 0;
    if (sd_gen_start(s, prompt, n, p, &g, err)) return -1;
    while (sd_gen_finish(g) == SD_FINISH_NONE) {
        if (sd_gen_step(g, err)) {
            sd_gen_free(g);
            return -1;
        }
        sd_gen_get_stats(g, st);
        if (!*ttft && st->generated > 0) *ttft = sd_now_s() - t0;
    }
    sd_gen_get_stats(g, st);
    sd_gen_free(g);
    return 0;
}

/* Blocks of m's pool referenced by sequences (cached free blocks are free). */
static int held(const sd_model *m) {
    int total, free_now;
    if (!m) return 0;
    sd_model_kv_blocks(m, &total, &free_now);
    return total - free_now;
}

int main(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o)) return 2;
    sd_err err = {{0}};
    sd_engine *e = NULL;
    sd_engine_config cfg = {.target_path = o.target, .draft_path = o.draft, .n_threads = o.threads,
                            .ctx = o.prefix + o.suffix + o.n + 1};
    if (sd_engine_open(&cfg, &e, &err)) {
        fprintf(stderr, "prefix_bench: %s\n", err.msg);
        return 1;
    }
    int vocab = e->target->hp.vocab, len = o.prefix + o.suffix, rc = 1;
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)len);
    sd_session **ss = calloc((size_t)o.sessions + 3, sizeof *ss);
    double *ttft = malloc(sizeof(double) * (size_t)o.sessions), t_suffix[3];
    if (!prompt || !ss || !ttft) goto out;
    sd_gen_params p = sd_gen_params_default();
    p.sampling = sd_sampling_greedy();
    p.max_tokens = o.n;
    p.mode = o.draft ? SD_MODE_SPEC : SD_MODE_PLAIN;
    sd_gen_stats st;
    prompt[0] = e->target->tok && sd_tok_bos(e->target->tok) >= 0 ? sd_tok_bos(e->target->tok) : 1;
    for (int i = 1; i < o.prefix; i++) prompt[i] = tok_at(0, i, vocab);
    /* Warm-up and the cold suffix-alone reference: other tenants, so nothing is shared. */
    for (int r = 0; r < 3; r++) {
        int32_t *q = prompt + o.prefix - 1; /* BOS + the suffix, written over the prefix's last token */
        int32_t keep = *q;
        for (int i = 0; i < o.suffix; i++) prompt[o.prefix + i] = tok_at(1000 + (uint64_t)r, i, vocab);
        *q = prompt[0];
        p.tenant = 1000 + (uint64_t)r;
        if (sd_session_new(e, &ss[o.sessions + r], &err) ||
            run(ss[o.sessions + r], q, o.suffix + 1, &p, &t_suffix[r], &st, &err))
            goto fail;
        *q = keep;
        sd_session_free(ss[o.sessions + r]);
        ss[o.sessions + r] = NULL;
    }
    p.tenant = 1;
    int held_t1 = 0, held_d1 = 0, reused_min = len, prefilled_max = 0;
    for (int s = 0; s < o.sessions; s++) {
        for (int i = 0; i < o.suffix; i++) prompt[o.prefix + i] = tok_at(2 + (uint64_t)s, i, vocab);
        if (sd_session_new(e, &ss[s], &err) || run(ss[s], prompt, len, &p, &ttft[s], &st, &err)) goto fail;
        if (s == 0) {
            held_t1 = held(e->target);
            held_d1 = held(e->draft);
        } else {
            if (st.reused < reused_min) reused_min = st.reused;
            if (st.prefilled > prefilled_max) prefilled_max = st.prefilled;
        }
    }
    int held_t = held(e->target), held_d = held(e->draft);
    double bt = (double)sd_model_kv_block_bytes(e->target), bd = e->draft ? (double)sd_model_kv_block_bytes(e->draft) : 0;
    double one = held_t1 * bt + held_d1 * bd, all = held_t * bt + held_d * bd;
    double first = ttft[0], later_max = 0, suffix_ms = 1e3 * pct(t_suffix, 3, 0.5);
    for (int s = 1; s < o.sessions; s++) later_max = ttft[s] > later_max ? ttft[s] : later_max;
    double later_med = o.sessions > 1 ? pct(ttft + 1, o.sessions - 1, 0.5) : 0;
    printf("model %s%s%s, %d threads; system prompt %d tokens (BOS included), suffix %d, %d generated, %s\n",
           o.target, o.draft ? " + draft " : "", o.draft ? o.draft : "", o.threads, o.prefix, o.suffix, o.n,
           o.draft ? "speculative" : "plain");
    printf("KV blocks of %d positions held (target + draft pools): one session %d + %d (%.2f MiB), %d sessions "
           "%d + %d (%.2f MiB): %.3fx one session's KV memory\n",
           SD_KV_BLOCK, held_t1, held_d1, one / 1048576.0, o.sessions, held_t, held_d, all / 1048576.0,
           one > 0 ? all / one : 0.0);
    printf("later sessions: reused >= %d prompt tokens, prefilled <= %d\n", o.sessions > 1 ? reused_min : 0,
           prefilled_max);
    printf("time to first token: session 0 (cold, %d tokens) %.1f ms; sessions 1..%d median %.1f ms, max %.1f ms; "
           "the suffix alone (%d tokens, cold, median of 3) %.1f ms: later / suffix alone %.2fx\n",
           len, 1e3 * first, o.sessions - 1, 1e3 * later_med, 1e3 * later_max, o.suffix + 1, suffix_ms,
           suffix_ms > 0 ? 1e3 * later_med / suffix_ms : 0.0);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "prefix_bench: %s\n", err.msg);
out:
    if (ss)
        for (int s = 0; s < o.sessions + 3; s++) sd_session_free(ss[s]);
    free(ss);
    free(prompt);
    free(ttft);
    sd_engine_free(e);
    return rc;
}
