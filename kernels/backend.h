/* The one backend interface. Model code (model/) runs the transformer only through these calls, so
 * the CPU backend (kernels/cpu/) and the CUDA backend (kernels/cuda/) are interchangeable.
 *
 * Memory model:
 *  - Activations are F32, row-major [n][width], in *backend memory* returned by alloc(). Host code never
 *    dereferences them; it moves data with to_host()/from_host(). Pointer arithmetic on them is allowed
 *    (x + row * width addresses a row), so a CUDA device pointer is a valid activation pointer.
 *  - Weights are sd_tensor: `host` points at the bytes in the model file's mapping; upload_weight() makes
 *    `data` usable by the backend (the CPU backend just aliases host: no copy; CUDA copies to the device).
 *  - K/V live in one pool per model (sd_kv_mem, kv_mem_alloc): blocks of SD_KV_BLOCK positions of every
 *    layer. A sequence's cache is a table of block ids (model/kv_pool.c hands them out); kv_spans tells
 *    the backend which rows of a pass belong to which sequence, at which positions, with which table.
 *  - Every op may run asynchronously; to_host() and sync() wait for all earlier work.
 *  - In-place use (out == x) is allowed for rmsnorm, rope, add, add_bias, swiglu (out == gate).
 */
#ifndef SD_BACKEND_H
#define SD_BACKEND_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Tensor element types. The values are GGML's type ids, so GGUF tensor types map one to one. Block
 * layouts of the quantized ones: kernels/quant_k.h (Q8_0 below). */
typedef enum sd_dtype {
    SD_F32 = 0,
    SD_F16 = 1,
    SD_Q4_0 = 2,
    SD_Q4_1 = 3,
    SD_Q5_0 = 6,
    SD_Q5_1 = 7,
    SD_Q8_0 = 8,
    SD_Q2_K = 10,
    SD_Q3_K = 11,
    SD_Q4_K = 12,
    SD_Q5_K = 13,
    SD_Q6_K = 14,
    SD_IQ4_NL = 20,
    SD_IQ4_XS = 23,
    SD_BF16 = 30,
} sd_dtype;

/* Q8_0: blocks of 32 weights, one F16 scale then 32 int8. */
#define SD_QK8_0 32
typedef struct sd_block_q8_0 {
    uint16_t d; /* F16 bits */
    int8_t qs[SD_QK8_0];
} sd_block_q8_0;

/* Name of a type ("f16"), or NULL for a type id we do not know. */
const char *sd_dtype_name(int type);
/* Elements per block (1 for plain floats), 0 for unknown types. */
int sd_dtype_block(int type);
/* Bytes per block, 0 for unknown types. */
size_t sd_dtype_block_bytes(int type);
/* True when every backend computes with this type (F32, F16, BF16, Q8_0 for now). */
bool sd_dtype_supported(int type);
/* True when the model loader accepts this type: the plain floats and the quantized types with a block
 * layout in kernels/quant_k.h (Q4_0 ... Q6_K, IQ4_NL, IQ4_XS). A backend that cannot compute one refuses
 * it in upload_weight, naming the tensor. */
bool sd_dtype_loadable(int type);
/* "f32, f16, ..." : the loadable types, for error messages. */
const char *sd_dtype_loadable_list(void);
/* The type called `name` (case-insensitive: "q4_K", "Q4_K", "iq4_nl"), or -1. */
int sd_dtype_by_name(const char *name);
/* Bytes of one row of n elements (n must be a multiple of the block size). */
size_t sd_dtype_row_bytes(int type, int64_t n);

/* A weight matrix (or vector when rows == 1): rows × cols, each row `cols` elements of `type`. */
typedef struct sd_tensor {
    sd_dtype type;
    int64_t cols;      /* elements per row (GGUF ne[0], the input dimension of a matmul) */
    int64_t rows;      /* number of rows (GGUF ne[1], the output dimension); 1 for vectors */
    const void *host;  /* the bytes in the file mapping (or a host buffer the model owns) */
    void *data;        /* backend memory after upload_weight() */
    sd_dtype data_type;/* type of `data`, set by upload_weight (a backend may convert: CUDA stores F32
                          matrices as F16 and repacks Q8_0); the CPU backend leaves it == type */
    const char *name;  /* for error messages; may be NULL */
} sd_tensor;

/* rope's pos0 for "each row at its position in the pass's spans". */
#define SD_POS_SPANS (-1)

/* Positions per KV block. */
#define SD_KV_BLOCK 16

/* A KV pool's memory: K and V of n_blocks blocks, each SD_KV_BLOCK positions × kv_dim elements of `type`
 * for every layer. Position p of a sequence with block table T lives in block T[p / SD_KV_BLOCK], row
 * p % SD_KV_BLOCK. */
typedef struct sd_kv_mem {
    int n_layers, kv_dim, n_blocks;
    sd_dtype type; /* SD_F16 (half the memory; attention converts as it reads) or SD_F32 */
    void *k, *v;   /* backend memory; layout is the backend's business */
} sd_kv_mem;

/* What every backend's kv_mem_alloc does first: checks the shape and type, fills kv's shape (k, v NULL).
 * 0, or -1 with err naming what was wrong (also a pool whose size overflows). */
int sd_kv_mem_shape(sd_kv_mem *kv, int n_layers, int kv_dim, int n_blocks, sd_dtype type, sd_err *err);
/* Bytes of one layer's K (or V) in a pool of that shape; K for all layers is n_layers times that. */
size_t sd_kv_layer_bytes(const sd_kv_mem *kv);

/* Rows [row, row + n) of a pass belong to one sequence, at positions pos0..pos0+n-1. table (host memory):
 * the block ids of its positions 0..pos0+n-1. cap: the sequence's capacity in positions (a recorded
 * step graph plans attention for it, as the positions change on replay). */
typedef struct sd_kv_span {
    int row, n, pos0, cap;
    const int32_t *table;
} sd_kv_span;

/* Sampling filters as the backends see them (target/sampler.h's sd_sampling converts to this). */
typedef struct sd_sample_cfg {
    float temperature; /* <= 0: greedy (argmax) */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1: off */
    float min_p;       /* <= 0: off */
} sd_sample_cfg;

/* Most drafts one spec_accept call takes, and most rows one sample_rows launch draws for (more rows are
 * split by the backend). */
#define SD_SAMPLE_MAX_K 32

typedef struct sd_backend sd_backend;
struct sd_backend {
    const char *name; /* "cpu" or "cuda" */
    const char *device; /* human-readable description (GPU model, CPU SIMD level); may be NULL */
    int n_threads;    /* CPU threads in use (1 for CUDA) */
    void *impl;
    /* The sticky error. Ops return void, so a backend whose op fails (a device fault, an allocation inside
     * an op, an injected test fault) calls sd_backend_fail() once; every result after that is garbage.
     * The forward pass checks it (sd_backend_check) before handing out logits or ids, and the engine ends
     * the request with its message: never NaN or garbage tokens. It stays set: the device may be lost. */
    bool failed;
    char fail_msg[400];

    void (*destroy)(sd_backend *b);

    /* ---- memory ---- */
    float *(*alloc)(sd_backend *b, size_t n_floats, sd_err *err); /* zero-filled; NULL + err on failure */
    void (*release)(sd_backend *b, void *p);
    int (*upload_weight)(sd_backend *b, sd_tensor *t, sd_err *err);
    void (*free_weight)(sd_backend *b, sd_tensor *t);
    void (*to_host)(sd_backend *b, float *dst, const float *src, size_t n_floats);
    void (*from_host)(sd_backend *b, float *dst, const float *src, size_t n_floats);
    /* A pool of n_blocks blocks; type SD_F16 or SD_F32 (others fail, naming the type). */
    int (*kv_mem_alloc)(sd_backend *b, sd_kv_mem *kv, int n_layers, int kv_dim, int n_blocks, sd_dtype type,
                        sd_err *err);
    void (*kv_mem_free)(sd_backend *b, sd_kv_mem *kv);
    /* Bytes a KV pool may take now (free device memory; MemAvailable on the CPU); 0: unknown. */
    size_t (*mem_available)(sd_backend *b);
    void (*sync)(sd_backend *b);
    /* Optional (NULL when unsupported): step graphs, so a small model's many tiny kernels cost one launch.
     * The model brackets the ops of one forward step (no to_host inside):
     *     if (!(be->graph_begin && be->graph_begin(be, key, key_len, tokens, n, pos0))) {
     *         step ops...;
     *         if (be->graph_end && be->graph_end(be) != 0) step ops again;
     *     }
     * graph_begin returns 1 when it replayed a graph recorded under the same key with this step's tokens
     * and pos0 (the ops must not be issued), 0 when the caller issues them (the backend may record them).
     * graph_end returns -1 when recording failed and the ops did not run (graphs are then off). The key
     * must identify the op sequence exactly: every buffer and weight address and every shape argument
     * except the tokens and pos0, which ops inside a step take from the backend's step state. Freeing weights
     * or a KV pool forgets every recorded graph (a model loaded later may reuse the old addresses). */
    int (*graph_begin)(sd_backend *b, const uint64_t *key, int key_len, const int32_t *tokens, int n, int pos0);
    int (*graph_end)(sd_backend *b);
    /* ids[r] = index of the largest of row r of x ([rows][width], backend memory; lowest index on ties),
     * into host memory; waits. Greedy decoding uses it so only token ids cross from a GPU, not logits. */
    void (*argmax_rows)(sd_backend *b, int32_t *ids, const float *x, int rows, int width);
    /* Optional (NULL: the engine downloads logits and samples on the host, target/sampler.c). Sampling where
     * the logits live, so only token ids cross to the host; the algorithm is kernels/sample_ref.c's.
     * sample_rows: for each row r of logits ([rows][width], backend memory) writes the filtered, normalised
     * distribution (temperature, top-k, top-p, min-p) to row r of probs (backend memory, not aliasing
     * logits) and, when ids is not NULL, ids[r] (host) = a draw from it with uniform u[r] (host). Waits.
     * spec_accept: speculative acceptance of k <= SD_SAMPLE_MAX_K drafts (host ids) against the target's
     * filtered rows p ([k+1][width]) and the draft's q ([k][width]; NULL: point masses) with k+1 host
     * uniforms: draft i is accepted iff u[i] * q_i(x) < p_i(x); at the first rejection *next is drawn
     * from normalize(max(0, p_i - q_i)) (p_i when that is empty) with u[k], else from p_k with u[k].
     * Returns the number accepted; waits. */
    void (*sample_rows)(sd_backend *b, int32_t *ids, float *probs, const float *logits, int rows, int width,
                        const sd_sample_cfg *cfg, const float *u);
    int (*spec_accept)(sd_backend *b, int32_t *next, const float *p, const float *q, const int32_t *draft, int k,
                       int width, const float *u);
    /* Bytes of backend memory held, by kind (for start-up memory reports); may be NULL. */
    void (*mem_usage)(sd_backend *b, size_t *weights, size_t *kv, size_t *work);

    /* ---- ops ---- */
    /* out[i] = row ids[i] of table, converted to F32 (ids are host memory). */
    void (*embed)(sd_backend *b, float *out, const sd_tensor *table, const int32_t *ids, int n);
    /* out[r] = x[r] / rms(x[r]) * w, for rows r < rows of `width` floats (w has width elements). */
    void (*rmsnorm)(sd_backend *b, float *out, const float *x, const sd_tensor *w, int rows, int width, float eps);
    /* out[i][o] = sum_c x[i][c] * w[o][c] for i < n, o < w->rows, c < w->cols. Each weight row is read
     * once for all n inputs: n > 1 is a matrix-matrix product, not n matrix-vector products. */
    void (*matmul)(sd_backend *b, float *out, const sd_tensor *w, const float *x, int n);
    /* x[i][o] += bias[o] (bias is an F32 vector tensor). */
    void (*add_bias)(sd_backend *b, float *x, const sd_tensor *bias, int n);
    /* Rotary embedding of n tokens at positions pos0..pos0+n-1, x is [n][n_heads*head_dim]. The first
     * n_rot dims of each head rotate; pair j uses angle pos * inv_freq[j] (inv_freq: backend memory,
     * n_rot/2 floats, already including any rope scaling). neox: pairs (j, j+n_rot/2); else (2j, 2j+1).
     * pos0 = SD_POS_SPANS: x holds every row of the pass (n = its rows), each at the position kv_spans
     * gave it: one call for a pass of several sequences, which a step graph replays at new positions. */
    void (*rope)(sd_backend *b, float *x, int n, int n_heads, int head_dim, int n_rot, int pos0,
                 const float *inv_freq, bool neox);
    /* The spans of the pass whose kv_store and attention calls follow, covering its `rows` rows in order
     * (host memory, read during the call; the tables must not change until those ops ran). Called outside
     * a step graph's bracket: a replayed graph reads the spans given before it. */
    void (*kv_spans)(sd_backend *b, const sd_kv_span *spans, int n_spans, int rows);
    /* Writes K and V ([rows][kv_dim] F32 each) of one layer into the pool at each row's position (the
     * spans), converted to the pool's type (F16: round to nearest even, as sd_fp32_to_fp16). */
    void (*kv_store)(sd_backend *b, sd_kv_mem *kv, int layer, const float *k, const float *v);
    /* Causal attention of every row over its sequence's positions 0..its own (the spans: earlier rows of
     * its span included), GQA (query head h uses kv head h / (n_heads / n_kv_heads)), scale
     * 1/sqrt(head_dim). q and out are [rows][n_heads*head_dim]. */
    void (*attention)(sd_backend *b, float *out, const float *q, const sd_kv_mem *kv, int layer, int n_heads,
                      int n_kv_heads, int head_dim);
    /* out[i] = silu(gate[i]) * up[i]. */
    void (*swiglu)(sd_backend *b, float *out, const float *gate, const float *up, size_t count);
    /* x[i] += y[i]. */
    void (*add)(sd_backend *b, float *x, const float *y, size_t count);
    /* Optional (NULL: add, then rmsnorm): x += y ([rows][width]), then out = rmsnorm(x) with w, in one
     * pass over the rows (a block's residual add and the next block's norm); out may alias y. Results
     * are bitwise those of the two ops. */
    void (*add_rmsnorm)(sd_backend *b, float *out, float *x, const float *y, const sd_tensor *w, int rows, int width,
                        float eps);
};

/* n_threads <= 0: one per online CPU. */
int sd_backend_cpu_new(int n_threads, sd_backend **out, sd_err *err);
/* Fails with a message saying why (built without CUDA, no driver, no device, bad index). */
int sd_backend_cuda_new(int device, sd_backend **out, sd_err *err);
/* spec: "auto" (CUDA when a device is present, else CPU, saying why on *why), "cpu", "cuda", "cuda:N". */
int sd_backend_open(const char *spec, int n_threads, sd_backend **out, char *why, size_t why_len, sd_err *err);

/* Sets the sticky error (the first failure wins; later calls keep the first message). */
void sd_backend_fail(sd_backend *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 0 while the backend is healthy, else -1 with "backend <name> failed: <message>" in err. */
int sd_backend_check(const sd_backend *b, sd_err *err);

#endif
