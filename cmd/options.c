/* Engine commands and the option table (see options.h). */
#include "cmd/options.h"

#include <string.h>

int cmd_parse_options(const sd_args_spec *spec, int argc, char **argv, sd_optval *vals, int n_vals, int *go_on) {
    sd_err err = {{0}};
    int rc = sd_args_parse(spec, argc, argv, vals, n_vals, NULL, &err);
    *go_on = rc == 0;
    if (rc < 0) fprintf(stderr, "%s\n(%s --help for usage)\n", err.msg, spec->prog);
    return rc < 0 ? 2 : 0;
}

void cmd_engine_config(const sd_optval *v, sd_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->target_path = v[SD_O_MODEL].s;
    c->target_tok = v[SD_O_TOKENIZER].s;
    c->draft_path = v[SD_O_DRAFT].s;
    c->draft_tok = v[SD_O_DRAFT_TOKENIZER].set ? v[SD_O_DRAFT_TOKENIZER].s : c->target_tok;
    c->lookup_n = (int)v[SD_O_LOOKUP].i;
    c->draft_layers = (int)v[SD_O_DRAFT_LAYERS].i;
    c->n_threads = (int)v[SD_O_THREADS].i;
    c->device = v[SD_O_DEVICE].s;
    c->ctx = (int)v[SD_O_CTX].i;
    c->kv_type = v[SD_O_KV_TYPE].s;
    c->kv_mem = (size_t)v[SD_O_KV_MEM].i << 20;
}

void cmd_gen_params(const sd_optval *v, sd_gen_params *p) {
    *p = sd_gen_params_default();
    p->max_tokens = (int)v[SD_O_MAX_TOKENS].i;
    p->sampling.temperature = (float)v[SD_O_TEMP].f;
    p->sampling.top_k = (int)v[SD_O_TOP_K].i;
    p->sampling.top_p = (float)v[SD_O_TOP_P].f;
    p->sampling.min_p = (float)v[SD_O_MIN_P].f;
    p->sampling.seed = v[SD_O_SEED].u;
    p->stop = v[SD_O_STOP].list;
    p->n_stop = v[SD_O_STOP].n_list;
    p->draft_max = (int)v[SD_O_DRAFT_MAX].i;
    p->draft_min = (int)v[SD_O_DRAFT_MIN].i;
    p->draft_p_min = (float)v[SD_O_DRAFT_P_MIN].f;
    p->mode = v[SD_O_PLAIN].i ? SD_MODE_PLAIN : SD_MODE_SPEC;
}

int cmd_n_proposers(const sd_optval *v) {
    return v[SD_O_DRAFT].set + v[SD_O_LOOKUP].set + v[SD_O_DRAFT_LAYERS].set;
}
