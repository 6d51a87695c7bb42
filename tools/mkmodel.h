/* Synthetic GGUF models (`specd mkmodel`): deterministic pseudo-random weights of any llama shape, a
 * synthetic SentencePiece-style vocabulary (or one copied from another GGUF), and draft/target pairs with
 * a controllable agreement. Used by the command, tests and benchmarks.
 *
 * How the weights make text (and agreement) possible: every model of one "language" (same lang_seed and
 * vocabulary) embeds token t as a random unit vector u_t in its first `shared_dims` dimensions, and its
 * classifier row for token v is gain * sum_i c_i u_{pred_i(v)}, where pred_i inverts fixed successor maps
 * (succ_1 is one random cycle over the ordinary tokens, so the text never collapses to a repeated token).
 * With no layers the model is a bigram chain; its layers add context-dependent perturbations to that
 * path, of a size set by layer_scale. A draft and a target built on the same language agree exactly where
 * the target's layers do not move the argmax, which --agreement controls. */
#ifndef SD_MKMODEL_H
#define SD_MKMODEL_H
#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"

typedef struct sd_mk_shape {
    int dim, layers, heads, kv_heads, ffn, vocab, ctx;
} sd_mk_shape;

typedef struct sd_mk_opts {
    sd_mk_shape shape;
    int type;               /* SD_F32, SD_F16 or SD_Q8_0 for matrices (norm vectors stay F32) */
    uint64_t seed;          /* layer weights */
    uint64_t lang_seed;     /* the shared "language": embedding subspace, successor maps, vocabulary */
    int shared_dims;        /* dims carrying the language (<= dim; 0: min(dim, 256)) */
    float layer_scale;      /* size of each layer's perturbation relative to the embedding */
    const char *vocab_from; /* copy tokenizer.ggml.* from this GGUF; NULL: synthetic vocabulary */
    const char *name;       /* general.name */
} sd_mk_opts;

/* Preset i (0, 1, ...): its name, shape and a few words on its use; NULL past the last. */
const char *sd_mk_preset_at(int i, sd_mk_shape *shape, const char **what);
/* Fills shape for a preset name: tiny, demo, demo-draft, bench, 1b, 8b. -1 when unknown. */
int sd_mk_preset(const char *name, sd_mk_shape *out);
/* Defaults for everything but the shape (seed 1, f16, default agreement). */
void sd_mk_defaults(sd_mk_opts *o);
/* The target layer_scale that gives roughly greedy per-token agreement a with a draft of the same
 * language (calibrated on the demo pair). */
float sd_mk_scale_for_agreement(float a);
/* Writes the model (streaming: memory use does not grow with the model). */
int sd_mk_write(const sd_mk_opts *o, const char *path, sd_err *err);

/* ---- internals shared by tools/mkmodel_*.c ---- */
typedef struct gguf_writer gguf_writer;
/* Synthetic vocabulary of n tokens: <unk> <s> </s>, 256 byte tokens, then printable pieces. */
int sd_mk_synth_vocab(gguf_writer *w, int n, sd_err *err);
/* Copies tokenizer.ggml.* from a GGUF; *n_vocab gets its token count. */
int sd_mk_copy_vocab(gguf_writer *w, const char *path, int *n_vocab, sd_err *err);
/* Marks ordinary tokens (the ones the language may produce) of a vocabulary: synthetic ids >= 259, or
 * token_type NORMAL of a copied one. Returns a malloc'd flag array of n entries. */
bool *sd_mk_ordinary(const char *vocab_from, int n, sd_err *err);

#endif
