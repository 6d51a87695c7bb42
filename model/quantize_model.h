/* `specd quantize`: a GGUF model rewritten with its matrices in another type, each tensor's type chosen
 * as llama.cpp's llama-quantize chooses it for the same target (the mixes Q2_K, Q3_K_M, Q4_K_M, Q5_K_M,
 * Q6_K and the plain legacy / IQ4 targets keep some tensors at more bits), the metadata copied with
 * general.file_type and general.quantization_version set as llama.cpp sets them. */
#ifndef SD_QUANTIZE_MODEL_H
#define SD_QUANTIZE_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* A quantization target: a mix (llama.cpp file type) or one type for every quantizable tensor. */
typedef struct sd_qtarget {
    const char *name;  /* "q4_k_m", "q4_0", "q4_k" ... */
    int base_type;     /* sd_dtype most tensors get */
    int ftype;         /* llama.cpp's LLAMA_FTYPE_* value written to general.file_type */
    int mix;           /* the sd_qmix rule set (0: the one type everywhere) */
} sd_qtarget;

/* The target called `name` (case-insensitive), or NULL. */
const sd_qtarget *sd_qtarget_find(const char *name);
/* llama.cpp's general.file_type for a file whose matrices are all `type`. */
int sd_ftype_of_type(int type);
/* "q4_0, q4_1, ..." : every target name, for usage and errors. */
const char *sd_qtarget_list(void);

typedef struct sd_quant_opts {
    const char *const *keep; /* tensors whose name contains one of these are copied as they are */
    int n_keep;
    /* Called after each tensor is written: index, count, name, types, bytes in and out. May be NULL. */
    void (*progress)(void *ctx, int i, int n, const char *name, int from, int to, size_t in_bytes, size_t out_bytes);
    void *ctx;
} sd_quant_opts;

typedef struct sd_quant_stats {
    size_t in_bytes, out_bytes; /* tensor data before and after */
    int n_tensors, n_quantized;
    int count_by_type[64];      /* output tensors per sd_dtype */
} sd_quant_stats;

/* The type tensor `name` (ne0 x rows, currently `type`) gets in a file quantized to `t`; the state of
 * the llama.cpp rules that count attn_v / ffn_down tensors lives in *counters (zero it per file, and
 * call in file order). n_gqa: heads per KV head. n_attn_v, n_ffn_down: their counts in the file. */
typedef struct sd_qrule_state {
    int n_attn_v, n_ffn_down, i_attn_v, i_ffn_down, n_gqa;
    int tied; /* no output.weight: token_embd is the classifier */
    int is_70b; /* llama.cpp's LLM_TYPE_70B: a llama with 80 layers and grouped KV heads (attn_v gets Q5_K) */
} sd_qrule_state;
int sd_quant_tensor_type(const sd_qtarget *t, sd_qrule_state *st, const char *name, int n_dims, int64_t ne0,
                         int type);

/* Reads `in`, writes `out` quantized to target t. Errors name the file and the tensor. */
int sd_quantize_file(const char *in, const char *out, const sd_qtarget *t, const sd_quant_opts *o,
                     sd_quant_stats *stats, sd_err *err);

#endif
