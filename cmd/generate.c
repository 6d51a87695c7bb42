/* `specd generate`: local generation through the engine (target/engine.h), the same decode loop the
 * daemon and `specd bench` use. Streams the prompt and then the generated text to stdout, statistics to
 * stderr; or, with --json, one JSON object on stdout. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_out.h"
#include "target/engine.h"
#include "base/args.h"
#include "cmd/commands.h"

#define MAX_STOP 16

typedef struct gen_opts {
    sd_engine_config cfg;
    sd_gen_params gp;
    const char *prompt;
    const char *stop[MAX_STOP];
    bool json;
    int n_proposers; /* -md, --lookup, --draft-layers given (at most one) */
} gen_opts;

static void usage(void) {
    fprintf(stderr,
        "usage: specd generate -m MODEL [-z TOKENIZER] -p PROMPT [options]\n"
        "  -m FILE            target model (GGUF, or llama2.c .bin with -z)\n"
        "  -z FILE            llama2.c tokenizer file (for .bin models)\n"
        "  -p TEXT            prompt (BOS is added as the model asks)\n"
        "  -n N               tokens to generate (default 128)\n"
        "  --temp T           temperature, 0 = greedy (default 0)\n"
        "  --top-k K          keep the K most likely tokens (default 0 = off)\n"
        "  --top-p P          nucleus sampling (default 1 = off)\n"
        "  --min-p M          drop tokens below M x the top probability (default 0 = off)\n"
        "  --seed S           sampling seed (default 1); same seed, same output\n"
        "  -t N               CPU threads (default: online CPUs)\n"
        "  --device D         auto | cpu | cuda | cuda:N (default auto)\n"
        "  --ctx N            context length (default: the model's)\n"
        "  --stop STR         stop string, not printed (repeatable, up to %d)\n"
        "  --json             print one JSON object instead of streaming text\n"
        "speculative decoding (pick one proposer; output equals the target's alone):\n"
        "  -md FILE           draft model (-zd FILE: its llama2.c tokenizer, default -z)\n"
        "  --lookup N         n-gram lookup in prompt and output, n-gram length N\n"
        "  --draft-layers L   self-draft with the target's first L layers\n"
        "  --draft-max K      most tokens drafted per step\n"
        "  --draft-min K      fewest tokens drafted per step\n"
        "  --draft-p-min P    the draft stops proposing below this top probability\n"
        "  --plain            plain decoding even when a proposer is given\n",
        MAX_STOP);
}

/* Parses one option at argv[*i] (advancing *i past its value). 0 ok, -1 usage error (message printed). */
static int parse_opt(gen_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int bad = 0;
#define WANT() do { if (!v) { fprintf(stderr, "generate: %s needs a value\n", a); return -1; } (*i)++; } while (0)
    if (!strcmp(a, "--json")) o->json = true;
    else if (!strcmp(a, "--plain")) o->gp.mode = SD_MODE_PLAIN;
    else if (!strcmp(a, "-m")) { WANT(); o->cfg.target_path = v; }
    else if (!strcmp(a, "-z")) { WANT(); o->cfg.target_tok = v; }
    else if (!strcmp(a, "-md")) { WANT(); o->cfg.draft_path = v; o->n_proposers++; }
    else if (!strcmp(a, "-zd")) { WANT(); o->cfg.draft_tok = v; }
    else if (!strcmp(a, "-p")) { WANT(); o->prompt = v; }
    else if (!strcmp(a, "-n")) { WANT(); bad = sd_arg_int(v, 0, INT_MAX, &o->gp.max_tokens); }
    else if (!strcmp(a, "-t")) { WANT(); bad = sd_arg_int(v, 1, 1024, &o->cfg.n_threads); }
    else if (!strcmp(a, "--ctx")) { WANT(); bad = sd_arg_int(v, 1, INT_MAX, &o->cfg.ctx); }
    else if (!strcmp(a, "--device")) { WANT(); o->cfg.device = v; }
    else if (!strcmp(a, "--temp")) { WANT(); bad = sd_arg_float(v, 0, 1e6, &o->gp.sampling.temperature); }
    else if (!strcmp(a, "--top-k")) { WANT(); bad = sd_arg_int(v, 0, INT_MAX, &o->gp.sampling.top_k); }
    else if (!strcmp(a, "--top-p")) { WANT(); bad = sd_arg_float(v, 0, 1, &o->gp.sampling.top_p); }
    else if (!strcmp(a, "--min-p")) { WANT(); bad = sd_arg_float(v, 0, 1, &o->gp.sampling.min_p); }
    else if (!strcmp(a, "--seed")) { WANT(); bad = sd_arg_u64(v, &o->gp.sampling.seed); }
    else if (!strcmp(a, "--lookup")) { WANT(); bad = sd_arg_int(v, 1, 64, &o->cfg.lookup_n); o->n_proposers++; }
    else if (!strcmp(a, "--draft-layers")) {
        WANT(); bad = sd_arg_int(v, 1, 100000, &o->cfg.draft_layers); o->n_proposers++;
    }
    else if (!strcmp(a, "--draft-max")) { WANT(); bad = sd_arg_int(v, 1, 256, &o->gp.draft_max); }
    else if (!strcmp(a, "--draft-min")) { WANT(); bad = sd_arg_int(v, 0, 256, &o->gp.draft_min); }
    else if (!strcmp(a, "--draft-p-min")) { WANT(); bad = sd_arg_float(v, 0, 1, &o->gp.draft_p_min); }
    else if (!strcmp(a, "--stop")) {
        WANT();
        if (o->gp.n_stop >= MAX_STOP) { fprintf(stderr, "generate: at most %d --stop strings\n", MAX_STOP); return -1; }
        if (!*v) { fprintf(stderr, "generate: --stop needs a non-empty string\n"); return -1; }
        o->stop[o->gp.n_stop++] = v;
    } else {
        fprintf(stderr, "generate: unknown option '%s'\n", a);
        return -1;
    }
#undef WANT
    if (bad) fprintf(stderr, "generate: bad value for %s: '%s'\n", a, v);
    return bad ? -1 : 0;
}

static int parse_args(gen_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->gp = sd_gen_params_default();
    o->gp.sampling = sd_sampling_greedy();
    o->gp.sampling.seed = 1;
    o->gp.max_tokens = 128;
    o->gp.stop = o->stop;
    o->gp.n_stop = 0;
    for (int i = 1; i < argc; i++)
        if (parse_opt(o, argc, argv, &i) != 0) return -1;
    if (!o->cfg.target_path) { fprintf(stderr, "generate: -m MODEL is required\n"); return -1; }
    if (!o->prompt) { fprintf(stderr, "generate: -p PROMPT is required\n"); return -1; }
    if (o->n_proposers > 1) {
        fprintf(stderr, "generate: -md, --lookup and --draft-layers are alternatives: give one\n");
        return -1;
    }
    if (o->gp.draft_min > o->gp.draft_max && o->gp.draft_max > 0) {
        fprintf(stderr, "generate: --draft-min %d > --draft-max %d\n", o->gp.draft_min, o->gp.draft_max);
        return -1;
    }
    if (o->cfg.draft_path && !o->cfg.draft_tok) o->cfg.draft_tok = o->cfg.target_tok;
    return 0;
}

/* ---- JSON output ---- */

/* A finite number for JSON (NaN/inf are not JSON). */
static double jnum(double x) { return isfinite(x) ? x : 0.0; }

typedef struct gen_figures {
    double prefill_tps, ms_per_token, tps, gbs;
    bool spec;
    double acceptance, tokens_per_pass;
} gen_figures;

/* Decode figures cover the tokens after the first: the first comes from the prefill's logits and its
 * time is counted as prefill. */
static gen_figures figures(const sd_engine *e, const sd_gen_stats *st) {
    gen_figures g = {0};
    double t_decode = st->t_total - st->t_prefill;
    int decoded = st->generated - 1;
    g.prefill_tps = st->t_prefill > 0 ? st->prefilled / st->t_prefill : 0;
    if (decoded > 0 && t_decode > 0) {
        g.ms_per_token = 1e3 * t_decode / decoded;
        g.tps = decoded / t_decode;
        g.gbs = (double)e->target->bytes_per_token * decoded / t_decode / 1e9;
    }
    g.spec = st->drafted > 0 || e->proposer != SD_PROP_NONE;
    g.acceptance = sd_gen_stats_acceptance(st);
    g.tokens_per_pass = sd_gen_stats_tokens_per_pass(st);
    return g;
}

static void print_json(const sd_engine *e, sd_gen *g, const gen_opts *o, const int32_t *prompt, int n_prompt) {
    sd_gen_stats st;
    sd_gen_get_stats(g, &st);
    gen_figures fg = figures(e, &st);
    size_t len;
    const char *text = sd_gen_text(g, &len);
    int n_tok;
    const int32_t *toks = sd_gen_tokens(g, &n_tok);
    size_t plen = strlen(o->prompt);
    char *all = malloc(plen + len + 1);
    if (all) {
        memcpy(all, o->prompt, plen);
        memcpy(all + plen, text, len);
    }
    FILE *f = stdout;
    fputs("{\"text\":", f);
    if (all) sd_json_str(f, all, plen + len); else fputs("\"\"", f);
    fputs(",\"prompt_tokens\":", f);
    sd_json_ids(f, prompt, n_prompt);
    fputs(",\"tokens\":", f);
    sd_json_ids(f, toks, n_tok);
    fprintf(f, ",\"finish\":\"%s\"", sd_finish_name(sd_gen_finish(g)));
    fprintf(f, ",\"stats\":{\"prompt_tokens\":%d,\"generated\":%d,\"ms_per_token\":%.6g,\"tokens_per_s\":%.6g,"
               "\"prefill_tokens_per_s\":%.6g,\"bandwidth_gbs\":%.6g,\"drafted\":%d,\"accepted\":%d,"
               "\"acceptance\":%.6g,\"tokens_per_pass\":%.6g}}\n",
            st.prompt_tokens, st.generated, jnum(fg.ms_per_token), jnum(fg.tps), jnum(fg.prefill_tps),
            jnum(fg.gbs), st.drafted, st.accepted, jnum(fg.acceptance), jnum(fg.tokens_per_pass));
    free(all);
}

static void print_stats(const sd_engine *e, sd_gen *g) {
    sd_gen_stats st;
    sd_gen_get_stats(g, &st);
    gen_figures fg = figures(e, &st);
    FILE *f = stderr;
    char mem[512];
    sd_engine_memory_report(e, mem, sizeof mem);
    fprintf(f, "\n\n%s\n", mem);
    if (e->backend_note[0]) fprintf(f, "note: %s\n", e->backend_note);
    fprintf(f, "prompt tokens: %d (%d prefilled), prefill %.1f tokens/s\n", st.prompt_tokens, st.prefilled,
            fg.prefill_tps);
    fprintf(f, "generated: %d tokens (%s), decode %.3f ms/token, %.2f tokens/s, bandwidth %.2f GB/s\n",
            st.generated, sd_finish_name(sd_gen_finish(g)), fg.ms_per_token, fg.tps, fg.gbs);
    if (fg.spec)
        fprintf(f, "speculation: drafted %d, accepted %d, acceptance %.3f, %.2f tokens per target pass\n",
                st.drafted, st.accepted, fg.acceptance, fg.tokens_per_pass);
}

/* Runs the request to the end, streaming text unless json. 0 ok, -1 error (message in err). */
static int run(sd_gen *g, bool json, sd_err *err) {
    while (sd_gen_finish(g) == SD_FINISH_NONE) {
        if (sd_gen_step(g, err) != 0) return -1;
        if (json) continue;
        const int32_t *ids;
        int n_ids;
        const char *text;
        size_t len;
        sd_gen_last(g, &ids, &n_ids, &text, &len);
        if (len) {
            fwrite(text, 1, len, stdout);
            fflush(stdout);
        }
    }
    if (sd_gen_finish(g) == SD_FINISH_ERROR) return sd_errf(err, "generation failed");
    return 0;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o;
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage();
        return 0;
    }
    if (parse_args(&o, argc, argv) != 0) {
        usage();
        return 2;
    }
    sd_err err = {{0}};
    sd_engine *e = NULL;
    sd_session *sess = NULL;
    sd_gen *g = NULL;
    int32_t *prompt = NULL;
    int n_prompt = 0, rc = 1;
    if (sd_engine_open(&o.cfg, &e, &err) != 0) goto out;
    if (sd_tok_encode(e->target->tok, o.prompt, strlen(o.prompt), SD_TOK_DEFAULT_SPECIALS, &prompt, &n_prompt,
                      &err) != 0)
        goto out;
    if (sd_session_new(e, &sess, &err) != 0) goto out;
    if (sd_gen_start(sess, prompt, n_prompt, &o.gp, &g, &err) != 0) goto out;
    if (!o.json) {
        fputs(o.prompt, stdout);
        fflush(stdout);
    }
    if (run(g, o.json, &err) != 0) goto out;
    if (o.json) print_json(e, g, &o, prompt, n_prompt);
    else print_stats(e, g);
    rc = 0;
out:
    if (rc) fprintf(stderr, "specd generate: %s\n", err.msg[0] ? err.msg : "failed");
    if (g) sd_gen_free(g);
    if (sess) sd_session_free(sess);
    free(prompt);
    if (e) sd_engine_free(e);
    return rc;
}
