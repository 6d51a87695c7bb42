/* `specd generate`: local generation through the engine (target/engine.h), the same decode loop the
 * daemon and `specd bench` use. Streams the prompt and then the generated text to stdout, statistics to
 * stderr; or, with --json, one JSON object on stdout. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json_out.h"
#include "cmd/commands.h"
#include "cmd/options.h"

/* generate's own options; the engine and request options come from target/options.h. */
enum { O_PROMPT = SD_O_COUNT, O_JSON, O_N };
static const sd_opt k_own[] = {
    {O_PROMPT, "--prompt", "-p", SD_OPT_STR, 0, 0, NULL, "TEXT", SD_CMD_GENERATE, "prompt (BOS is added as the model asks)"},
    {O_JSON, "--json", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_GENERATE, "print one JSON object instead of streaming text"},
};
static const sd_opt_table k_own_table = {"generate", k_own, (int)(sizeof k_own / sizeof k_own[0])};
static const sd_opt_table *const k_tables[] = {&k_own_table, &sd_engine_options, &sd_request_options};
static const sd_args_spec k_spec = {.prog = "specd generate", .usage = "specd generate -m MODEL [-z TOKENIZER] -p PROMPT [options]\n"
                                    "Streams the prompt and the generated text; with a proposer (-md, --lookup or\n"
                                    "--draft-layers) decoding is speculative and the output equals the target's alone.",
                                    .tables = k_tables, .n_tables = 3, .cmd = SD_CMD_GENERATE};

typedef struct gen_opts {
    sd_optval v[O_N];
    sd_engine_config cfg;
    sd_gen_params gp;
    const char *prompt;
    bool json;
} gen_opts;

/* Returns 0 to go on, else the exit status (0 after --help, 2 on a usage error). */
static int parse_args(gen_opts *o, int argc, char **argv, int *go_on) {
    int rc = cmd_parse_options(&k_spec, argc, argv, o->v, O_N, go_on);
    if (!*go_on) return rc;
    *go_on = 0;
    cmd_engine_config(o->v, &o->cfg);
    cmd_gen_params(o->v, &o->gp);
    o->prompt = o->v[O_PROMPT].s;
    o->json = o->v[O_JSON].i;
    const char *bad = !o->cfg.target_path ? "-m MODEL is required"
                      : !o->prompt ? "-p PROMPT is required"
                      : cmd_n_proposers(o->v) > 1 ? "-md, --lookup and --draft-layers are alternatives: give one"
                      : o->gp.draft_min > o->gp.draft_max ? "--draft-min is above --draft-max"
                                                          : NULL;
    if (bad) {
        fprintf(stderr, "specd generate: %s\n(specd generate --help for usage)\n", bad);
        return 2;
    }
    *go_on = 1;
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
    static gen_opts o;
    int go_on, prc = parse_args(&o, argc, argv, &go_on);
    if (!go_on) return prc;
    sd_err err = {{0}};
    sd_engine *e = NULL;
    sd_session *sess = NULL;
    sd_gen *g = NULL;
    int32_t *prompt = NULL;
    int n_prompt = 0, rc = 1;
    if (sd_engine_open(&o.cfg, &e, &err) != 0) goto out;
    if (e->warning[0]) fprintf(stderr, "warning: %s\n", e->warning);
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
    if (rc && o.json) { /* --json: one object on stdout whatever happened */
        fputs("{\"error\":{\"message\":", stdout);
        const char *m = err.msg[0] ? err.msg : "failed";
        sd_json_str(stdout, m, strlen(m));
        fputs("}}\n", stdout);
    } else if (rc) fprintf(stderr, "specd generate: %s\n", err.msg[0] ? err.msg : "failed");
    if (g) sd_gen_free(g);
    if (sess) sd_session_free(sess);
    free(prompt);
    if (e) sd_engine_free(e);
    return rc;
}
