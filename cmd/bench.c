/* `specd bench`: plain and speculative decoding on the same prompts in one run, interleaved (each prompt
 * runs under every configuration before the next prompt, so drift in machine load hits all alike).
 * Per configuration: ms/token (mean, p50, p95), tokens/s, acceptance, tokens per target pass, speedup
 * vs plain, and the speedup Leviathan et al.'s formula predicts from the measured acceptance and
 * draft/target cost ratio, so the gap between theory and practice shows. Also the cost of a verify pass
 * over k+1 tokens relative to a one-token decode.
 *
 * Per-token latency: a step's wall time spread over the tokens it emitted (a speculative step emits
 * several at once); the first token (from the prefill) is not counted. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/bench_report.h"
#include "base/clock.h"
#include "target/draft_len.h"
#include "cmd/commands.h"
#include "cmd/options.h"

#define MAX_CONFIGS 17
#define MAX_PROMPTS 256

static const char *default_prompts[] = {
    "Once upon a time",
    "The robot",
    "Data flows",
    "In the morning the little girl",
};

/* bench's own options; the engine and request options come from target/options.h. */
enum { O_PROMPTS = SD_O_COUNT, O_REPEAT, O_SWEEP, O_CONCURRENCY, O_BATCH_TOKENS, O_JSON, O_PLOT, O_N };
static const sd_opt k_own[] = {
    {O_PROMPTS, "--prompts", NULL, SD_OPT_STR, 0, 0, NULL, "FILE", SD_CMD_BENCH, "one prompt per line; unset: 4 built-in prompts"},
    {O_REPEAT, "--repeat", NULL, SD_OPT_INT, 1, 1000, "1", "R", SD_CMD_BENCH, "run every prompt R times"},
    {O_SWEEP, "--sweep", NULL, SD_OPT_STR, 0, 0, NULL, "K1,K2,..", SD_CMD_BENCH,
     "one configuration per fixed k instead of adaptive k (draft-min = draft-max = k)"},
    {O_CONCURRENCY, "--concurrency", NULL, SD_OPT_STR, 0, 0, NULL, "C1,C2,..", SD_CMD_BENCH,
     "instead: C requests at once (each running every prompt R times), stepped in one batch per turn; "
     "plain and speculative aggregate tokens/s, latency, TTFT per C"},
    {O_BATCH_TOKENS, "--batch-tokens", NULL, SD_OPT_INT, 0, 1 << 20, "128", "N", SD_CMD_BENCH,
     "with --concurrency: rows of a turn that prompt prefill may fill (as specd serve)"},
    {O_JSON, "--json", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_BENCH, "one JSON object on stdout"},
    {O_PLOT, "--plot", NULL, SD_OPT_STR, 0, 0, NULL, "FILE.svg", SD_CMD_BENCH, "measured and predicted speedup against k"},
};
static const sd_opt_table k_own_table = {"bench", k_own, (int)(sizeof k_own / sizeof k_own[0])};
static const sd_opt_table *const k_tables[] = {&k_own_table, &sd_engine_options, &sd_request_options};
static const sd_args_spec k_spec = {.prog = "specd bench", .usage = "specd bench -m TARGET (-md DRAFT | --lookup N | --draft-layers L) [options]\n"
                                    "Plain and speculative decoding on the same prompts in one run, interleaved.",
                                    .tables = k_tables, .n_tables = 3, .cmd = SD_CMD_BENCH};

typedef struct bench_opts {
    sd_optval v[O_N];
    sd_engine_config cfg;
    sd_gen_params gp;
    const char *prompts_file, *plot;
    int n_tokens, repeat;
    int sweep[MAX_CONFIGS], n_sweep;
    int conc[MAX_CONFIGS], n_conc, batch_tokens;
    bool json;
} bench_opts;

/* A comma-separated list of at most `max` integers in lo..hi. */
static int parse_ints(const char *s, int lo, int hi, int *out, int max, int *n) {
    char buf[256];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n >= max || sd_arg_int(t, lo, hi, &out[*n])) return -1;
        (*n)++;
    }
    return *n > 0 ? 0 : -1;
}

/* A usage error: prints it and returns 2. */
static int usage_error(const char *msg) {
    fprintf(stderr, "specd bench: %s\n(specd bench --help for usage)\n", msg);
    return 2;
}

/* Returns 0 to go on, else the exit status (0 after --help, 2 on a usage error). */
static int parse_args(bench_opts *o, int argc, char **argv, int *go_on) {
    memset(o, 0, sizeof *o);
    int rc = cmd_parse_options(&k_spec, argc, argv, o->v, O_N, go_on);
    if (!*go_on) return rc;
    *go_on = 0;
    const sd_optval *v = o->v;
    cmd_engine_config(v, &o->cfg);
    cmd_gen_params(v, &o->gp);
    o->n_tokens = o->gp.max_tokens;
    o->repeat = (int)v[O_REPEAT].i;
    o->prompts_file = v[O_PROMPTS].s;
    o->plot = v[O_PLOT].s;
    o->json = v[O_JSON].i;
    if (v[O_SWEEP].set && parse_ints(v[O_SWEEP].s, 1, SD_DRAFT_LIMIT, o->sweep, MAX_CONFIGS - 1, &o->n_sweep))
        return usage_error("--sweep needs a comma-separated list of k in 1..16 (at most 16)");
    if (v[O_CONCURRENCY].set && parse_ints(v[O_CONCURRENCY].s, 1, 1024, o->conc, MAX_CONFIGS, &o->n_conc))
        return usage_error("--concurrency needs a comma-separated list of request counts in 1..1024 (at most 17)");
    o->batch_tokens = (int)v[O_BATCH_TOKENS].i;
    if (!o->cfg.target_path) return usage_error("-m TARGET is required");
    if (cmd_n_proposers(v) != 1) return usage_error("give one proposer: -md DRAFT, --lookup N or --draft-layers L");
    if (o->n_tokens < 2) return usage_error("-n must be at least 2 (the first token comes from the prefill)");
    if (o->gp.draft_min > o->gp.draft_max) return usage_error("--draft-min is above --draft-max");
    *go_on = 1;
    return 0;
}

/* Prompts from a file (one per non-empty line) or the built-in ones. */
static int load_prompts(const char *path, char ***out, int *n, sd_err *err) {
    *n = 0;
    *out = calloc(MAX_PROMPTS, sizeof **out);
    if (!*out) return sd_errf(err, "out of memory");
    if (!path) {
        for (size_t i = 0; i < sizeof default_prompts / sizeof *default_prompts; i++)
            (*out)[(*n)++] = strdup(default_prompts[i]);
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) return sd_errf(err, "%s: %s", path, strerror(errno));
    char line[8192];
    while (*n < MAX_PROMPTS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0]) (*out)[(*n)++] = strdup(line);
    }
    fclose(f);
    return *n ? 0 : sd_errf(err, "%s: no prompts (one per line)", path);
}

/* One request under one configuration; appends per-token latencies and adds to the totals. */
static int run_one(sd_session *s, const int32_t *prompt, int n_prompt, const sd_gen_params *gp, bench_acc *acc,
                   sd_err *err) {
    sd_gen *g;
    if (sd_gen_start(s, prompt, n_prompt, gp, &g, err)) return -1;
    sd_gen_stats before, after;
    bool first = true;
    while (sd_gen_finish(g) == SD_FINISH_NONE) {
        sd_gen_get_stats(g, &before);
        double t0 = sd_now_s();
        if (sd_gen_step(g, err)) {
            sd_gen_free(g);
            return -1;
        }
        double dt = sd_now_s() - t0;
        sd_gen_get_stats(g, &after);
        int emitted = after.generated - before.generated;
        if (!first && emitted > 0) bench_acc_step(acc, dt, emitted);
        if (after.drafted > before.drafted) {
            int nd = after.drafted - before.drafted, na = after.accepted - before.accepted;
            acc->blocks++;
            acc->rejections += na < nd;
        }
        first = false;
    }
    sd_gen_get_stats(g, &after);
    acc->drafted += after.drafted;
    acc->accepted += after.accepted;
    acc->passes += after.target_passes;
    acc->t_draft += after.t_draft;
    acc->t_target += after.t_target;
    sd_gen_free(g);
    return 0;
}

/* The cost of verifying k+1 tokens in one pass relative to a one-token pass, for each configuration's k
 * (median of reps), at a context of 64 positions (about where the benchmark's requests decode). */
static int verify_costs(sd_engine *e, bench_config *cfgs, int n_cfg, sd_err *err) {
    sd_seq *seq;
    if (sd_seq_new(e->target, e->ctx, 0, &seq, err)) return -1;
    int vocab = e->target->hp.vocab, base = 64, kmax = 16, rc = -1;
    if (base + kmax + 1 > e->ctx) base = e->ctx - kmax - 1 > 0 ? e->ctx - kmax - 1 : 0;
    float *logits = malloc((size_t)(kmax + 1) * vocab * sizeof *logits);
    int32_t *toks = calloc((size_t)(base + kmax + 1), sizeof *toks);
    enum { REPS = 7 };
    double t1[REPS], tk[REPS];
    if (!logits || !toks) goto out;
    for (int i = 0; i < base + kmax + 1; i++) toks[i] = (int32_t)(1 + (i * 7919) % (vocab - 1));
    if (base && sd_forward(seq, toks, base, false, logits, err)) goto out;
    for (int c = 1; c < n_cfg; c++) {
        int k = cfgs[c].gp.draft_max;
        if (base + k + 1 > e->ctx) k = e->ctx - base - 1;
        for (int rep = 0; rep < REPS; rep++) { /* alternate, so load changes hit both alike */
            double t0 = sd_now_s();
            if (sd_forward(seq, toks + base, 1, false, logits, err)) goto out;
            t1[rep] = sd_now_s() - t0;
            sd_seq_truncate(seq, base);
            t0 = sd_now_s();
            if (sd_forward(seq, toks + base, k + 1, true, logits, err)) goto out;
            tk[rep] = sd_now_s() - t0;
            sd_seq_truncate(seq, base);
        }
        cfgs[c].verify_cost = bench_median(tk, REPS) / bench_median(t1, REPS);
    }
    rc = 0;
out:
    free(logits);
    free(toks);
    sd_seq_free(seq);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    static bench_opts o;
    int go_on, prc = parse_args(&o, argc, argv, &go_on);
    if (!go_on) return prc;
    sd_err err = {{0}};
    sd_engine *e = NULL;
    char **prompts = NULL;
    int n_prompts = 0, rc = 1, n_cfg = 0;
    int32_t **ptoks = NULL;
    int *pn = NULL;
    sd_session *sess[MAX_CONFIGS] = {0};
    bench_config cfgs[MAX_CONFIGS];
    memset(cfgs, 0, sizeof cfgs);
    if (load_prompts(o.prompts_file, &prompts, &n_prompts, &err)) goto out;
    if (sd_engine_open(&o.cfg, &e, &err)) goto out;
    ptoks = calloc((size_t)n_prompts, sizeof *ptoks);
    pn = calloc((size_t)n_prompts, sizeof *pn);
    if (!ptoks || !pn) goto out;
    for (int i = 0; i < n_prompts; i++)
        if (sd_tok_encode(e->target->tok, prompts[i], strlen(prompts[i]), SD_TOK_DEFAULT_SPECIALS, &ptoks[i], &pn[i],
                          &err))
            goto out;

    if (o.n_conc) { /* the batch under concurrency instead */
        o.gp.max_tokens = o.n_tokens;
        if (!o.json)
            fprintf(stderr, "bench: concurrency %d..%d, %d prompts x %d repeats per request stream, %d tokens each\n",
                    o.conc[0], o.conc[o.n_conc - 1], n_prompts, o.repeat, o.n_tokens);
        /* warm-up at the largest concurrency, both modes (page in the weights and the KV blocks the largest
         * batch takes, settle the thread pool, give the batch draft-length rule pass costs up to the
         * largest batches), not reported */
        int cmax = o.conc[0];
        for (int i = 1; i < o.n_conc; i++) cmax = o.conc[i] > cmax ? o.conc[i] : cmax;
        if (bench_concurrency(e, ptoks, pn, n_prompts, &o.gp, 1, &cmax, 1, o.batch_tokens, false, NULL, &err)) goto out;
        if (bench_concurrency(e, ptoks, pn, n_prompts, &o.gp, n_prompts * o.repeat, o.conc, o.n_conc, o.batch_tokens,
                              o.json, stdout, &err))
            goto out;
        rc = 0;
        goto out;
    }
    /* configurations: plain, then the proposer at each k (or adaptive up to draft-max) */
    const char *pname = e->proposer == SD_PROP_DRAFT ? "draft" : e->proposer == SD_PROP_LOOKUP ? "lookup" : "self";
    cfgs[n_cfg++] = (bench_config){.mode = "plain", .gp = o.gp};
    cfgs[0].gp.mode = SD_MODE_PLAIN;
    int n_k = o.n_sweep ? o.n_sweep : 1;
    for (int i = 0; i < n_k; i++) {
        bench_config *c = &cfgs[n_cfg++];
        c->mode = pname;
        c->gp = o.gp;
        if (o.n_sweep) c->gp.draft_min = c->gp.draft_max = o.sweep[i];
        c->fixed_k = o.n_sweep > 0;
    }
    for (int c = 0; c < n_cfg; c++) {
        cfgs[c].gp.max_tokens = o.n_tokens;
        cfgs[c].draft_max = cfgs[c].gp.mode == SD_MODE_PLAIN ? 0 : cfgs[c].gp.draft_max;
        if (sd_session_new(e, &sess[c], &err) || bench_acc_init(&cfgs[c].acc)) goto out;
    }
    if (!o.json) fprintf(stderr, "bench: %d prompts x %d repeats x %d configurations, %d tokens each\n", n_prompts,
                         o.repeat, n_cfg, o.n_tokens);
    /* warm-up (page in the weights, settle the thread pool), not measured */
    {
        bench_acc w;
        if (bench_acc_init(&w)) goto out;
        for (int c = 0; c < n_cfg; c++)
            if (run_one(sess[c], ptoks[0], pn[0], &cfgs[c].gp, &w, &err)) { bench_acc_free(&w); goto out; }
        bench_acc_free(&w);
    }
    for (int r = 0; r < o.repeat; r++)
        for (int p = 0; p < n_prompts; p++)
            for (int c = 0; c < n_cfg; c++)
                if (run_one(sess[c], ptoks[p], pn[p], &cfgs[c].gp, &cfgs[c].acc, &err)) goto out;

    bench_report rep = {.target = o.cfg.target_path, .draft = o.cfg.draft_path, .proposer = pname,
                        .n_prompts = n_prompts, .n_tokens = o.n_tokens, .repeat = o.repeat,
                        .backend = e->be->name, .threads = e->be->n_threads, .configs = cfgs, .n_configs = n_cfg};
    if (verify_costs(e, cfgs, n_cfg, &err)) goto out;
    bench_finish(&rep);
    if (o.json) bench_print_json(&rep, stdout);
    else bench_print_text(&rep, stdout);
    if (o.plot && bench_plot_svg(&rep, o.plot, &err)) goto out;
    rc = 0;
out:
    if (rc) fprintf(stderr, "specd bench: %s\n", err.msg[0] ? err.msg : "failed");
    for (int c = 0; c < MAX_CONFIGS; c++) {
        sd_session_free(sess[c]);
        bench_acc_free(&cfgs[c].acc);
    }
    for (int i = 0; i < n_prompts; i++) {
        free(prompts[i]);
        if (ptoks) free(ptoks[i]);
    }
    free(prompts);
    free(ptoks);
    free(pn);
    sd_engine_free(e);
    return rc;
}
