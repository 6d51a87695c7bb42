/* CPU attention over the paged KV pool (the backend's attention op, kernels/backend.h).
 *
 * Work: the query heads that share a kv head (a GQA group) and up to a tile of consecutive rows of one
 * sequence go together, so each K/V chunk is read and converted to F32 once for all of them; tiles are
 * spread over the thread pool, and with few of them (decode at long context) each tile's positions are
 * split too, the parts merged afterwards.
 *
 * Numerics: a row's positions are taken in chunks (SD_ATT_CHUNK positions) inside parts of 512,
 * both at absolute positions; a part's state is the online softmax over its chunks in order, a row's the
 * merge of its parts in order (kernels/softmax.h). Whatever the tiling, the thread count, the split and
 * the other rows of the pass, a row gets bitwise the same result. */
#ifndef SD_CPU_ATTENTION_H
#define SD_CPU_ATTENTION_H
#include <stddef.h>

#include "kernels/backend.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/threadpool.h"

/* Scratch that grows to the largest pass seen: per thread, and the parts of split tiles. Zero-initialised
 * before first use; sd_attn_ws_free releases it. */
typedef struct sd_attn_ws {
    float **thread;
    size_t *thread_cap; /* floats */
    int n_thread;
    struct attn_item *items;
    int items_cap;
    float *parts;
    size_t parts_cap;
} sd_attn_ws;

void sd_attn_ws_free(sd_attn_ws *ws);

/* out = attention of q over the pool for the pass's rows (spans: kv_spans's), with the kernels of one SIMD
 * level on the pool's threads. The shapes are checked by the caller (heads divisible, layer and kv head
 * slice inside the pool). 0, or -1 when scratch memory ran out (out untouched). */
int sd_cpu_attention(sd_attn_ws *ws, sd_pool *pool, const sd_cpu_kernels *k, float *out, const float *q,
                     const sd_kv_mem *kv, int layer, int n_heads, int n_kv_heads, int head_dim,
                     const sd_kv_span *spans, int n_spans, int rows);

#endif
