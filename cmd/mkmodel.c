/* `specd mkmodel`: writes GGUF models with synthetic weights (presets tiny .. 8b, any shape), or a
 * draft/target pair of one synthetic "language" with a controllable agreement (tools/mkmodel.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "base/args.h"
#include "cmd/commands.h"
#include "tools/mkmodel.h"

static void usage(void) {
    fprintf(stderr,
            "usage: specd mkmodel [--preset NAME] [shape options] [--type T] [--seed S] -o FILE [--pair DRAFT_OUT ...]\n"
            "Writes a standard GGUF (llama architecture) with deterministic SYNTHETIC weights: not a trained model.\n"
            "  --preset NAME       shape preset (default tiny):\n");
    sd_mk_shape sh;
    const char *name, *what;
    for (int i = 0; (name = sd_mk_preset_at(i, &sh, &what)); i++)
        fprintf(stderr, "                        %-10s dim %d, %d layers, %d/%d heads, ffn %d, vocab %d  (%s)\n",
                name, sh.dim, sh.layers, sh.heads, sh.kv_heads, sh.ffn, sh.vocab, what);
    fprintf(stderr,
            "  --dim N --layers N --heads N --kv-heads N --ffn N --vocab N --ctx N   override the preset's shape\n"
            "  --type T            type of the weight matrices: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K\n"
            "                      q5_K q6_K iq4_nl iq4_xs (default f16; norms stay f32)\n"
            "  --seed S            seed of the weights and of the synthetic language (default 1)\n"
            "  --vocab-from FILE   copy the tokenizer (tokenizer.ggml.*) from another GGUF instead of a synthetic\n"
            "                      SentencePiece-style vocabulary; --vocab then follows that file\n"
            "  --layer-scale X     how strongly each layer perturbs the embedding->classifier path\n"
            "  -o FILE             output file\n"
            "draft/target pair (both share the synthetic language: embeddings' shared subspace and classifier):\n"
            "  --pair DRAFT_OUT    also write a draft model for the target written to -o (default preset demo,\n"
            "                      draft demo-draft; other targets get a draft of about 1/4 width, 1/6 depth)\n"
            "  --agreement A       wanted greedy per-token agreement of draft and target, 0..1 (default 0.7)\n"
            "  --draft-preset NAME, --draft-dim N --draft-layers N --draft-heads N --draft-kv-heads N --draft-ffn N\n");
}

typedef struct cli {
    sd_mk_opts t;
    const char *out, *pair, *preset, *draft_preset;
    int shape_set[7], draft_set[5];
    sd_mk_shape over, dover;
    float agreement;
    bool scale_given;
} cli;

/* Integer options: name -> slot in a shape (dim, layers, heads, kv_heads, ffn, vocab, ctx). */
static int shape_opt(const char *name, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

static int *shape_field(sd_mk_shape *s, int i) {
    int *f[] = {&s->dim, &s->layers, &s->heads, &s->kv_heads, &s->ffn, &s->vocab, &s->ctx};
    return f[i];
}

static int parse_args(int argc, char **argv, cli *c) {
    static const char *const shape_names[] = {"--dim", "--layers", "--heads", "--kv-heads", "--ffn", "--vocab", "--ctx"};
    static const char *const draft_names[] = {"--draft-dim", "--draft-layers", "--draft-heads", "--draft-kv-heads",
                                              "--draft-ffn"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int k;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 1;
        if (a[0] != '-' && !c->preset && i == 1) { c->preset = a; continue; } /* `mkmodel tiny -o x` */
        if (!v) return fprintf(stderr, "specd mkmodel: missing value for '%s'\n", a), -1;
        i++;
        if ((k = shape_opt(a, shape_names, 7)) >= 0) {
            if (sd_arg_int(v, 1, 1 << 24, shape_field(&c->over, k))) goto bad;
            c->shape_set[k] = 1;
        } else if ((k = shape_opt(a, draft_names, 5)) >= 0) {
            if (sd_arg_int(v, 1, 1 << 24, shape_field(&c->dover, k))) goto bad;
            c->draft_set[k] = 1;
        } else if (!strcmp(a, "--preset")) c->preset = v;
        else if (!strcmp(a, "--draft-preset")) c->draft_preset = v;
        else if (!strcmp(a, "-o")) c->out = v;
        else if (!strcmp(a, "--pair")) c->pair = v;
        else if (!strcmp(a, "--vocab-from")) c->t.vocab_from = v;
        else if (!strcmp(a, "--agreement")) { if (sd_arg_float(v, 0, 1, &c->agreement)) goto bad; }
        else if (!strcmp(a, "--layer-scale")) {
            if (sd_arg_float(v, 0, 50, &c->t.layer_scale)) goto bad;
            c->scale_given = true;
        } else if (!strcmp(a, "--seed")) {
            if (sd_arg_u64(v, &c->t.seed)) goto bad;
            c->t.lang_seed = c->t.seed;
        } else if (!strcmp(a, "--type")) {
            c->t.type = sd_dtype_by_name(v);
            if (c->t.type < 0 || !sd_dtype_loadable(c->t.type)) goto bad;
        } else return fprintf(stderr, "specd mkmodel: unknown option '%s'\n", a), -1;
        continue;
    bad:
        return fprintf(stderr, "specd mkmodel: bad value '%s' for %s\n", v, a), -1;
    }
    if (!c->out) return fprintf(stderr, "specd mkmodel: -o FILE is required\n"), -1;
    return 0;
}

/* A draft for an arbitrary target: about 1/4 the width and 1/6 the depth, head dim 64 where possible. */
static void derive_draft(const sd_mk_shape *t, sd_mk_shape *d) {
    *d = *t;
    d->dim = t->dim / 4 < 64 ? (t->dim < 64 ? t->dim : 64) : t->dim / 4 / 32 * 32;
    d->layers = t->layers / 6 > 0 ? t->layers / 6 : 1;
    d->heads = d->dim % 64 == 0 ? d->dim / 64 : 1;
    d->kv_heads = d->heads % 2 == 0 ? d->heads / 2 : d->heads;
    d->ffn = 2 * d->dim;
}

static int resolve(cli *c, sd_mk_opts *draft) {
    const char *p = c->preset ? c->preset : c->pair ? "demo" : "tiny";
    if (sd_mk_preset(p, &c->t.shape)) return fprintf(stderr, "specd mkmodel: unknown preset '%s'\n", p), -1;
    for (int k = 0; k < 7; k++)
        if (c->shape_set[k]) *shape_field(&c->t.shape, k) = *shape_field(&c->over, k);
    if (!c->pair) return 0;
    if (!c->scale_given) c->t.layer_scale = sd_mk_scale_for_agreement(c->agreement);
    *draft = c->t;
    const char *dp = c->draft_preset ? c->draft_preset : !strcmp(p, "demo") ? "demo-draft" : NULL;
    if (dp && sd_mk_preset(dp, &draft->shape)) return fprintf(stderr, "specd mkmodel: unknown preset '%s'\n", dp), -1;
    if (!dp) derive_draft(&c->t.shape, &draft->shape);
    for (int k = 0; k < 5; k++)
        if (c->draft_set[k]) *shape_field(&draft->shape, k) = *shape_field(&c->dover, k);
    draft->shape.vocab = c->t.shape.vocab; /* one vocabulary, one context */
    draft->shape.ctx = c->t.shape.ctx;
    /* the language lives in dims both models have; the draft's own layers barely disturb it */
    int ds = draft->shape.dim < c->t.shape.dim ? draft->shape.dim : c->t.shape.dim;
    c->t.shared_dims = draft->shared_dims = ds < 256 ? ds : 256;
    draft->seed = c->t.seed + 0x1000;
    draft->layer_scale = 0.05f;
    draft->name = "specd synthetic draft";
    c->t.name = "specd synthetic target";
    return 0;
}

static int write_one(const sd_mk_opts *o, const char *path) {
    sd_err err = {{0}};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (sd_mk_write(o, path, &err)) {
        fprintf(stderr, "specd mkmodel: %s\n", err.msg);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    const sd_mk_shape *s = &o->shape;
    fprintf(stderr, "wrote %s: dim %d, %d layers, %d/%d heads, ffn %d, vocab %d, ctx %d, %s, %.2f s\n", path, s->dim,
            s->layers, s->heads, s->kv_heads, s->ffn, s->vocab, s->ctx, sd_dtype_name(o->type),
            (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9);
    return 0;
}

int cmd_mkmodel(int argc, char **argv) {
    cli c = {.agreement = 0.7f};
    sd_mk_defaults(&c.t);
    int rc = parse_args(argc, argv, &c);
    if (rc) {
        usage();
        return rc > 0 ? 0 : 2;
    }
    sd_mk_opts draft;
    if (resolve(&c, &draft)) {
        usage();
        return 2;
    }
    if (write_one(&c.t, c.out)) return 1;
    if (c.pair && write_one(&draft, c.pair)) return 1;
    return 0;
}
