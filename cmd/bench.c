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
#include "target/engine.h"
#include "base/args.h"
#include "cmd/commands.h"

#define MAX_CONFIGS 17
#define MAX_PROMPTS 256

static const char *default_prompts[] = {
    "Once upon a time",
    "The robot",
    "Data flows",
    "In the morning the little girl",
};

typedef struct bench_opts {
    sd_engine_config cfg;
    sd_gen_params gp;
    const char *prompts_file, *plot;
    int n_tokens, repeat;
    int sweep[MAX_CONFIGS], n_sweep;
    bool json;
} bench_opts;

static void usage(void) {
    fprintf(stderr,
        "usage: specd bench -m TARGET (-md DRAFT | --lookup N | --draft-layers L) [options]\n"
        "  -m FILE / -z FILE   target model / its llama2.c tokenizer\n"
        "  -md FILE / -zd FILE draft model / its llama2.c tokenizer (default -z)\n"
        "  --lookup N          n-gram lookup proposer instead of a draft model\n"
        "  --draft-layers L    self-draft proposer (the target's first L layers)\n"
        "  --prompts FILE      one prompt per line (default: 4 built-in prompts)\n"
        "  -n N                tokens per request (default 64)\n"
        "  --repeat R          run every prompt R times (default 1)\n"
        "  --draft-max K       adaptive k up to K (default 4)\n"
        "  --draft-min K       adaptive k from K (default 1)\n"
        "  --draft-p-min P     draft stops below this top probability (default 0)\n"
        "  --sweep K1,K2,...   one configuration per fixed k instead (draft-min = draft-max = k)\n"
        "  --temp T --seed S   sampling (default greedy)\n"
        "  -t N --device D --ctx N   threads, backend, context length\n"
        "  --json              one JSON object on stdout\n"
        "  --plot FILE.svg     measured and predicted speedup against k\n");
}

static int parse_sweep(const char *s, bench_opts *o) {
    char buf[256];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    o->n_sweep = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->n_sweep >= MAX_CONFIGS - 1 || sd_arg_int(t, 1, 16, &o->sweep[o->n_sweep])) return -1;
        o->n_sweep++;
    }
    return o->n_sweep > 0 ? 0 : -1;
}

static int parse_args(bench_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->gp = sd_gen_params_default();
    o->gp.draft_max = 4;
    o->gp.draft_min = 1;
    o->n_tokens = 64;
    o->repeat = 1;
    int n_prop = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--json")) { o->json = true; continue; }
        if (!v) { fprintf(stderr, "bench: %s needs a value\n", a); return -1; }
        i++;
        if (!strcmp(a, "-m")) o->cfg.target_path = v;
        else if (!strcmp(a, "-z")) o->cfg.target_tok = v;
        else if (!strcmp(a, "-md")) { o->cfg.draft_path = v; n_prop++; }
        else if (!strcmp(a, "-zd")) o->cfg.draft_tok = v;
        else if (!strcmp(a, "--lookup")) { bad = sd_arg_int(v, 1, 64, &o->cfg.lookup_n); n_prop++; }
        else if (!strcmp(a, "--draft-layers")) { bad = sd_arg_int(v, 1, 100000, &o->cfg.draft_layers); n_prop++; }
        else if (!strcmp(a, "--prompts")) o->prompts_file = v;
        else if (!strcmp(a, "-n")) bad = sd_arg_int(v, 2, 1 << 20, &o->n_tokens);
        else if (!strcmp(a, "--repeat")) bad = sd_arg_int(v, 1, 1000, &o->repeat);
        else if (!strcmp(a, "--draft-max")) bad = sd_arg_int(v, 1, 16, &o->gp.draft_max);
        else if (!strcmp(a, "--draft-min")) bad = sd_arg_int(v, 0, 16, &o->gp.draft_min);
        else if (!strcmp(a, "--draft-p-min")) bad = sd_arg_float(v, 0, 1, &o->gp.draft_p_min);
        else if (!strcmp(a, "--sweep")) bad = parse_sweep(v, o);
        else if (!strcmp(a, "--temp")) bad = sd_arg_float(v, 0, 1e6, &o->gp.sampling.temperature);
        else if (!strcmp(a, "--seed")) bad = sd_arg_u64(v, &o->gp.sampling.seed);
        else if (!strcmp(a, "-t")) bad = sd_arg_int(v, 1, 1024, &o->cfg.n_threads);
        else if (!strcmp(a, "--device")) o->cfg.device = v;
        else if (!strcmp(a, "--ctx")) bad = sd_arg_int(v, 2, 1 << 20, &o->cfg.ctx);
        else if (!strcmp(a, "--plot")) o->plot = v;
        else { fprintf(stderr, "bench: unknown option '%s'\n", a); return -1; }
        if (bad) { fprintf(stderr, "bench: bad value for %s: '%s'\n", a, v); return -1; }
    }
    if (!o->cfg.target_path) { fprintf(stderr, "bench: -m TARGET is required\n"); return -1; }
    if (n_prop != 1) { fprintf(stderr, "bench: give one proposer: -md DRAFT, --lookup N or --draft-layers L\n"); return -1; }
    if (o->gp.draft_min > o->gp.draft_max) { fprintf(stderr, "bench: --draft-min > --draft-max\n"); return -1; }
    if (o->cfg.draft_path && !o->cfg.draft_tok) o->cfg.draft_tok = o->cfg.target_tok;
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
    bench_opts o;
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage();
        return 0;
    }
    if (parse_args(&o, argc, argv)) {
        usage();
        return 2;
    }
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
