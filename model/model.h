/* A loaded transformer (llama, qwen2, qwen3 families) and its forward pass over the backend interface.
 * Loading: model/model_load.c (GGUF) and model/llama2c.c (llama2.c checkpoints); forward: model/forward.c. */
#ifndef SD_MODEL_H
#define SD_MODEL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "base/err.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

typedef enum sd_arch { SD_ARCH_LLAMA = 1, SD_ARCH_QWEN2 = 2, SD_ARCH_QWEN3 = 3 } sd_arch;
/* The GGUF general.architecture name of a ("llama", "qwen2", "qwen3"; "?" for none of them). */
const char *sd_arch_name(sd_arch a);

typedef struct sd_hparams {
    sd_arch arch;
    int dim;          /* embedding_length */
    int n_layers;     /* block_count */
    int n_heads;
    int n_kv_heads;
    int head_dim;     /* dim / n_heads unless attention.key_length says otherwise */
    int ffn;          /* feed_forward_length */
    int vocab;
    int ctx;          /* context_length (the model's trained limit) */
    int n_rot;        /* rope.dimension_count (default head_dim) */
    float eps;        /* RMSNorm epsilon */
    float rope_base;  /* rope.freq_base */
    bool rope_neox;   /* NeoX-style pairs (qwen2/qwen3) */
    int rope_scaling; /* 0 none, 1 linear, 2 llama3 */
    float rope_factor, rope_low_freq, rope_high_freq; int rope_orig_ctx;
} sd_hparams;

typedef struct sd_layer {
    sd_tensor attn_norm, wq, wk, wv, wo;
    sd_tensor bq, bk, bv;         /* qwen2 biases (rows == 0 when absent) */
    sd_tensor q_norm, k_norm;     /* qwen3 per-head RMSNorm (rows == 0 when absent) */
    sd_tensor ffn_norm, w_gate, w_up, w_down;
} sd_layer;

/* The tensor table: every tensor of a layer with its GGUF name (blk.N.<suffix>), its field, its shape
 * [cols, rows] as a rule over the hyperparameters, and when it must be present. Loading, counting,
 * upload, bytes per token, self-drafting, the llama2.c mapping and the benchmarks walk it. */
typedef enum sd_dim {
    SD_DIM_ONE,   /* 1: rows of a vector */
    SD_DIM_MODEL, /* dim */
    SD_DIM_Q,     /* n_heads * head_dim */
    SD_DIM_KV,    /* n_kv_heads * head_dim */
    SD_DIM_HEAD,  /* head_dim */
    SD_DIM_FFN,   /* ffn */
} sd_dim;
typedef enum sd_need {
    SD_NEED_ALWAYS,
    SD_NEED_QKV_BIAS, /* architectures with q/k/v biases (qwen2) */
    SD_NEED_QK_NORM,  /* architectures with per-head q/k RMSNorm (qwen3) */
} sd_need;
typedef struct sd_layer_tensor {
    const char *suffix; /* "attn_q.weight" */
    size_t field;       /* offsetof(sd_layer, ...) */
    sd_dim cols, rows;
    sd_need need;
} sd_layer_tensor;
#define SD_LAYER_TENSORS 14
extern const sd_layer_tensor sd_layer_tensors[SD_LAYER_TENSORS];
/* Tensor i of the table in layer L. */
static inline sd_tensor *sd_layer_tensor_at(sd_layer *L, int i) {
    return (sd_tensor *)((char *)L + sd_layer_tensors[i].field);
}
/* The size a shape rule gives under hp. */
int64_t sd_dim_size(const sd_hparams *hp, sd_dim d);
/* The table row with this suffix, or -1. */
int sd_layer_tensor_find(const char *suffix);

typedef struct sd_fwd_ws sd_fwd_ws;
typedef struct sd_kv_pool sd_kv_pool; /* model/kv_pool.c */

typedef struct sd_model {
    char *path;
    sd_hparams hp;
    sd_tensor tok_embd, out_norm, output; /* output aliases tok_embd when the classifier is tied */
    sd_layer *layers;
    sd_tokenizer *tok;
    sd_backend *be;
    float *rope_inv_freq;     /* backend memory, n_rot/2 floats */
    size_t weight_bytes;      /* bytes of all weights */
    size_t bytes_per_token;   /* weight bytes one decode step reads (embedding row, not the whole table) */
    uint64_t n_params;
    /* file backing */
    gguf_file *gguf;          /* when loaded from GGUF */
    void *map; size_t map_size; /* when loaded from a llama2.c checkpoint */
    void *owned;              /* host buffers the loader made (converted tensors), freed with the model */
    /* forward pass (model/forward.c) */
    struct sd_fwd_ws *ws;     /* activations of one pass, shared by the model's sequences (made on first use) */
    int batch_rows;           /* rows per internal pass; 0: SD_MAX_BATCH (tests lower it to force passes) */
    bool describe_only;       /* sd_model_describe: no backend, nothing uploaded, any tensor type */
    sd_dtype kv_type;         /* K/V element type of its sequences: SD_F16 (the default) or SD_F32 */
    sd_kv_pool *kv;           /* the K/V blocks of all its sequences (sd_model_kv_init, or the first sd_seq_new) */
    sd_kv_pool *kv_shallow;   /* optional: blocks of its first L layers only, for sequences of L layers */
} sd_model;

/* Loads a model file (GGUF by magic, else llama2.c checkpoint; tok_path is the llama2.c tokenizer,
 * required for .bin checkpoints, ignored for GGUF which embeds its vocabulary) onto backend be. */
int sd_model_load(const char *path, const char *tok_path, sd_backend *be, sd_model **out, sd_err *err);
/* Reads a model for description only (`specd info`): hyperparameters, tensors and sizes, with no backend
 * and no weight upload, so a file with tensor types no backend computes (IQ2_XXS, ...) is described too.
 * Such a model cannot run (sd_seq_new refuses it). */
int sd_model_describe(const char *path, const char *tok_path, sd_model **out, sd_err *err);
void sd_model_free(sd_model *m);
/* Bytes one position of K and V costs a sequence of m running n_layers layers (in m->kv_type). */
size_t sd_model_kv_bytes_per_token(const sd_model *m, int n_layers);
/* Human-readable summary (architecture, hyperparameters, tensor types, params, bytes/token) to f. */
void sd_model_print_info(const sd_model *m, void *file /* FILE* */);

/* ---- K/V memory: one pool of blocks per model, shared by its sequences ---- */

/* Makes m's pool of `bytes` (0: the default, half of what the backend has available, at most
 * SD_KV_DEFAULT_POSITIONS positions); at least one block. Fails when m already has one. */
int sd_model_kv_init(sd_model *m, size_t bytes, sd_err *err);
#define SD_KV_DEFAULT_POSITIONS (1 << 20)
/* The default pool size for models whose positions cost bytes_per_position together. */
size_t sd_kv_default_bytes(sd_backend *be, size_t bytes_per_position);
/* Makes m's shallow pool of `bytes` (0: the default): blocks of its first n_layers layers (1 <= n_layers <
 * its layers), which sequences of exactly n_layers layers (self-drafting) take instead of full blocks. */
int sd_model_kv_init_shallow(sd_model *m, int n_layers, size_t bytes, sd_err *err);
/* Frees m's pools (its sequences must be freed first); the next sd_seq_new makes a default one, in the
 * m->kv_type of then. */
void sd_model_kv_free(sd_model *m);
/* Blocks of m's full pool in all and free now (0, 0 before the pool exists). */
void sd_model_kv_blocks(const sd_model *m, int *total, int *free_now);
/* The same for the pool m's sequences of n_layers layers take blocks from (the shallow one at its depth). */
void sd_model_kv_blocks_at(const sd_model *m, int n_layers, int *total, int *free_now);
/* Bytes of one block (every layer, K and V). */
size_t sd_model_kv_block_bytes(const sd_model *m);

/* One sequence's state: the block table of its cache and the number of positions in it. A sequence may
 * use only the first n_layers layers of its model (self-drafting; its blocks come from the model's shallow
 * pool when that has its depth, else they span every layer).
 * Activations live in the model's workspace. Invariant between forwards: it holds exactly the blocks
 * of positions [0, pos). */
typedef struct sd_seq {
    sd_model *m;
    int n_layers;
    int ctx;          /* capacity in positions */
    int pos;          /* positions computed so far (the cache holds [0, pos)) */
    int32_t *table;   /* block ids of its positions, ceil(ctx / SD_KV_BLOCK) entries */
    int n_blocks;     /* blocks held: table[0..n_blocks) */
    uint64_t *keys;   /* prefix cache: chain keys of its first n_cached blocks (full blocks of final tokens) */
    int n_cached;
} sd_seq;

/* ctx <= 0: the model's context length. n_layers <= 0: all layers. Takes no blocks yet. */
int sd_seq_new(sd_model *m, int ctx, int n_layers, sd_seq **out, sd_err *err);
void sd_seq_free(sd_seq *s);
/* Drops positions >= pos and returns their blocks; afterwards the cache is exactly as if they had never
 * been computed. s->pos may end lower than asked: a block other sequences share is kept whole or not at
 * all (nobody writes into a shared block). */
void sd_seq_truncate(sd_seq *s, int pos);
/* Prefix cache (model/kv_pool.c). The chain's root for a tenant: blocks are shared only within one. */
uint64_t sd_kv_chain_root(uint64_t tenant);
/* Offers s's full blocks of tokens[0..n) (final tokens: its cache holds exactly them) to other
 * sequences of the same root (all-layer sequences only). */
void sd_seq_cache_prefix(sd_seq *s, uint64_t root, const int32_t *tokens, int n);
/* Extends s (whose every block is a cached one, e.g. an empty s) with the cached blocks of tokens[0..n)
 * under root, read-only; returns the positions gained (s->pos grew by as many). */
int sd_seq_share_prefix(sd_seq *s, uint64_t root, const int32_t *tokens, int n);
/* Blocks s must take from the pool before positions up to end - 1 can be written. */
int sd_seq_blocks_needed(const sd_seq *s, int end);
/* True when s takes its blocks from its model's shallow pool (not the full one). */
bool sd_seq_in_shallow_pool(const sd_seq *s);

/* ---- the forward pass: one entry point over a batch of rows ---- */

/* What a row hands back. */
typedef enum sd_row_out {
    SD_OUT_NONE = 0, /* nothing: the row only extends its sequence's cache (prefill) */
    SD_OUT_LOGITS,   /* vocab floats of logits into host memory at `logits` */
    SD_OUT_ARGMAX,   /* the index of the largest logit into *id (only the id leaves a GPU) */
    SD_OUT_KEEP,     /* the logits stay in backend memory: *kept points at them (vocab floats) until the
                        model's next forward; for sampling there (backend.h's sample_rows, spec_accept) */
} sd_row_out;

/* One row of a batch: a token of a sequence at a position. */
typedef struct sd_row {
    sd_seq *seq;
    int32_t token;
    int pos;             /* seq->pos for its sequence's first row in the batch, then one more per row */
    sd_row_out out;
    float *logits;       /* SD_OUT_LOGITS */
    int32_t *id;         /* SD_OUT_ARGMAX */
    const float **kept;  /* SD_OUT_KEEP */
} sd_row;

/* Runs a batch of rows of any sequences of m (all with the same n_layers): appends every row's K/V to its
 * sequence's cache, attends over that cache (causal: a row sees its sequence's earlier positions,
 * including earlier rows of this batch) and delivers what each row asks for; each sequence's pos ends
 * one past its last row. Each weight matrix is read once per SD_MAX_BATCH rows, whatever the sequences,
 * and every row's result is bitwise what its sequence alone would compute. Rows of one sequence should be
 * consecutive (a span): RoPE, KV store and attention run once per span. At most sd_model_keep_rows rows
 * may be SD_OUT_KEEP; they land consecutively in batch order. Fails before any work (nothing changed) on
 * bad rows (message names the row): a token outside the vocabulary, a position that does not continue
 * its sequence, a context overflow, an output with no destination, and when the pool cannot give the
 * blocks its rows need ("KV pool full": sd_seq_blocks_needed says how many; the engine preempts). */
int sd_forward_batch(sd_model *m, const sd_row *rows, int n, sd_err *err);
/* Most SD_OUT_KEEP rows one batch of m may hold. */
int sd_model_keep_rows(sd_model *m);
/* Frees the model's forward workspace (sd_model_free does; the next forward makes it again). */
void sd_forward_ws_free(sd_model *m);

/* One sequence, n tokens at positions [s->pos, s->pos + n): one batch. logits (host memory): when
 * all_logits, n × vocab floats (one row per token); else vocab floats for the last token only. */
int sd_forward(sd_seq *s, const int32_t *tokens, int n, bool all_logits, float *logits, sd_err *err);
/* The same with the argmax id of each row (all) or of the last row instead of logits. */
int sd_forward_greedy(sd_seq *s, const int32_t *tokens, int n, bool all, int32_t *ids, sd_err *err);
/* The same leaving the logits in backend memory (SD_OUT_KEEP): *logits = n consecutive rows (all) or the
 * last row, valid until the model's next forward. all needs n <= sd_model_keep_rows. */
int sd_forward_keep(sd_seq *s, const int32_t *tokens, int n, bool all, const float **logits, sd_err *err);

#endif
