/* Shared declarations of the CUDA backend's translation units (C++ / CUDA only). */
#ifndef SD_CUDA_INTERNAL_H
#define SD_CUDA_INTERNAL_H
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "kernels/backend.h"
}
#include "kernels/quant.h"
#include "kernels/quant_k.h"
#include "kernels/cuda/qdecode.h"

/* A span of the pass (kernels/backend.h's sd_kv_span) with its table's offset in the device copy. */
typedef struct cuda_kv_span {
    int row, n, pos0, cap, tab;
} cuda_kv_span;

typedef struct cuda_ctx {
    sd_backend *owner;    /* whose sticky error a failure sets */
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    size_t bytes_weights, bytes_kv, bytes_work;
    void *scratch;        /* activations converted to F16/BF16 for cuBLAS */
    size_t scratch_bytes;
    void *deq;            /* a tile of quantized weights dequantized to F16 for cuBLAS (matmul_q.cu) */
    size_t deq_bytes;
    char name[256];
    /* Step capture (CUDA graphs): while a step is recorded or replayed, kernels read the step's first
     * position and token ids from device memory (step_dev), so one recorded graph serves every step
     * with the same shapes and buffers. Kernels use their arguments outside steps (step_pos). */
    int *step_dev;        /* desc_dev + DESC_STEP: [0] = pos0, [1..] = ids */
    /* The pass's descriptors (layout: DESC_* below): the step state, per row its position and the offset
     * of its sequence's block table, the block tables. desc_host (pinned) mirrors what the device holds or
     * will hold once the pending copy has run; cuda_desc_set writes only entries that change and marks
     * them dirty, cuda_desc_flush uploads the dirty ranges before the first kernel that reads them. A
     * decode step so copies its position and token (a few ints, one copy) and a table entry only when a
     * block is appended, instead of every row and table on every pass. */
    int *desc_dev, *desc_host;
    int desc_lo[2], desc_hi[2]; /* dirty ranges (ints): [0] step state and rows, [1] tables; lo >= hi: clean */
    cudaEvent_t desc_copied;    /* the last flush's copies have read desc_host */
    bool desc_pending;          /* a flush may not have run yet: wait for desc_copied before writing */
    bool stepping;        /* ops are being captured into a graph */
    bool graphs_enabled;  /* SPECD_CUDA_GRAPHS=0 turns graphs off */
    float *att_ws;        /* attention's split-path partials (attention.cu); fixed, NULL when unavailable */
    size_t att_ws_floats;
    /* Q8_0 products quantize the activations first (matmul.cu): [MV_MAX_N][q8_cols] int8 and
     * [MV_MAX_N][q8_cols / 32] float scales, sized by upload_weight (never while a graph records). */
    int8_t *q8_x;
    float *q8_d;
    int64_t q8_cols;
    const float *q8_src;  /* the activations q8_x holds ([q8_n][q8_src_cols]); NULL after any other op */
    int q8_n;
    int64_t q8_src_cols;
    const float *f16_src; /* the activations scratch holds as scaled F16 for cuBLAS ([f16_n][f16_cols]), the same way */
    int f16_n;
    int64_t f16_cols;
    float *gemm_scal;     /* [3] device scalars of F16 cuBLAS products (matmul.cu): max |x|, alpha, beta */
    void *samp_ws;        /* sample.cu's per-row states, allocated on first use */
    int32_t *ids;         /* small id buffer for embed gathers and argmax results, grown outside steps */
    size_t ids_cap;
    /* The sticky error: the first failed CUDA call or launch, with the op that made it. The context may
     * be unusable after it (an illegal address poisons it), so the backend reports it on every later call
     * and the engine ends the request with it instead of reading back garbage. */
    cudaError_t err;
    char err_msg[384];
    bool sync_each;       /* SPECD_CUDA_SYNC=1: synchronise after every op, so a failure names its op */
    long fail_after;      /* SPECD_FAIL_AFTER=N (test hook): the N-th launch check fails; 0 = never */
    long launches;
    bool tc;              /* SPECD_CUDA_TC=1: F16/BF16 products of up to 64 rows on tensor cores (matmul_tc.cu) */
    /* The pass's spans (cuda_kv_spans, attention.cu): kv_rows (desc_dev + DESC_ROWS) holds per row its
     * position and the offset of its block table in kv_tabs (desc_dev + DESC_TABS); kv_span the spans with
     * those offsets (host). */
    int *kv_rows;
    int32_t *kv_tabs;
    cuda_kv_span *kv_span;
    int kv_n_rows, kv_n_spans;
} cuda_ctx;

/* The descriptor buffer's layout, in ints: the step state, then 2 per row, then the block tables. */
#define KV_ROWS_MAX 4096          /* rows of one pass */
#define KV_TABS_MAX (1 << 20)     /* block ids of all a pass's sequences: 16M positions */
#define DESC_STEP 0
#define DESC_ROWS 32
#define DESC_TABS (DESC_ROWS + 2 * KV_ROWS_MAX)
#define DESC_INTS (DESC_TABS + KV_TABS_MAX)

#define SD_CUDA_STEP_MAX 16 /* steps of at most this many tokens are captured as graphs: the largest
                               verify block (draft_max 15 + 1) and small batches */
#define MV_MAX_N 16         /* matmul: up to this many rows read the weights once (matvec kernels) */
#define MQ_THREADS 128      /* threads of a quantized-type matrix-vector block (matmul_q.cu) */
#define TC_MAX_N 64         /* F16/BF16 matmul: up to this many rows on tensor cores (matmul_tc.cu) */

/* Forgets the converted activations (q8_x, scratch): any op but a product may rewrite their source. */
static inline void cuda_forget_inputs(cuda_ctx *c) {
    c->q8_src = NULL;
    c->f16_src = NULL;
}

/* Records a failure in the sticky error (the first one wins) and logs it. */
void cuda_fail(cuda_ctx *c, cudaError_t e, const char *what, const char *file, int line);
/* After a kernel launch: checks the launch, and with SPECD_CUDA_SYNC=1 (outside graph capture) also waits
 * for the kernel, so an asynchronous fault is attributed to `name`. Returns false on failure. */
bool cuda_launched(cuda_ctx *c, const char *name, const char *file, int line);
#define CUDA_CK(c, call) do { cudaError_t _e = (call); if (_e != cudaSuccess) \
    cuda_fail((c), _e, #call, __FILE__, __LINE__); } while (0)
#define CUDA_LAUNCHED(c, name) cuda_launched((c), (name), __FILE__, __LINE__)
/* Device buffer of at least n ids (grown outside graph capture only); NULL on failure (sticky error set). */
int32_t *cuda_ids(cuda_ctx *c, size_t n);
/* Sizes the Q8_0 activation buffers for matrices of `cols` columns; -1 when out of memory. */
int cuda_q8_reserve(cuda_ctx *c, int64_t cols);

/* Q8_0 matrices are repacked on upload so every load is aligned: all int8 quants row-major first
 * ([rows][cols]), then the F16 scales ([rows][cols/32]). */
__host__ __device__ static inline size_t q8_repacked_scales_offset(int64_t rows, int64_t cols) {
    size_t q = (size_t)rows * (size_t)cols;
    return (q + 15) & ~(size_t)15;
}

/* Element (r, c) of an uploaded weight as F32, any device type: the reference path (odd shapes, gathers).
 * Plain types convert as the CPU does (kernels/quant.h), GGML blocks decode their element's group of 32
 * (qdecode.h); only repacked Q8_0's layout is CUDA's own. */
__device__ __forceinline__ float cuda_load_elem(const void *data, int type, int64_t rows, int64_t cols, int64_t r,
                                                int64_t c) {
    if (type != SD_Q8_0 && sd_quant_block(type)) return qdec_load(data, type, cols, r, c);
    if (type == SD_Q8_0) {
        const int8_t *q = (const int8_t *)data;
        const uint16_t *s = (const uint16_t *)((const char *)data + q8_repacked_scales_offset(rows, cols));
        return sd_fp16_to_fp32(s[r * (cols / 32) + c / 32]) * (float)q[r * cols + c];
    }
    size_t row_bytes = (size_t)cols * (type == SD_F32 ? 4 : 2);
    return sd_row_get(type, (const char *)data + (size_t)r * row_bytes, c);
}

/* Matrix-vector kernels (matmul.cu, matmul_q.cu) keep R weight rows per group of lanes: enough to reuse each
 * x load, few enough to keep blocks (and loads) plentiful. */
template <int NC> struct mv_rows { static constexpr int R = NC <= 4 ? 2 : 4; };

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The end of a matrix-vector kernel whose block splits into groups of `lpr` lanes (whole warps), group i
 * holding rows row0 + i * R .. + R - 1: sums acc[R][NC] over each group's warps (in warp order, so a row's
 * sum does not depend on NC) and writes out[j][row] for the rows that exist and j < n. */
template <int NC, int R, int WARPS>
__device__ __forceinline__ void mv_reduce_groups(float (&acc)[R][NC], float *out, int64_t rows, int64_t row0, int lpr,
                                                 int n) {
    __shared__ float part[WARPS][R * NC];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wpg = lpr / 32;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int j = 0; j < NC; j++) {
            float s = warp_sum(acc[r][j]);
            if (lane == 0) part[warp][r * NC + j] = s;
        }
    __syncthreads();
    for (int i = threadIdx.x; i < WARPS / wpg * R * NC; i += blockDim.x) {
        int grp = i / (R * NC), k = i % (R * NC), r = k / NC, j = k % NC;
        float s = 0.0f;
        for (int w = grp * wpg; w < (grp + 1) * wpg; w++) s += part[w][k];
        int64_t row = row0 + (int64_t)grp * R + r;
        if (row < rows && j < n) out[(int64_t)j * rows + row] = s;
    }
}

/* The Q8_0 activation buffers (q8_x, q8_d) hold x[n][cols] quantized per block of 32 (k_quant_act_q8) after
 * this; it does nothing when they hold them already. False on failure (sticky error set). */
bool cuda_q8_act(cuda_ctx *c, const float *x, int n, int64_t cols);
/* F16 cuBLAS products (matmul.cu): x[n][cols] to F16 in the scratch buffer (scaled into F16's range; the
 * factor lives on the device), then outᵀ[rows][n] (leading dimension ldo) = W(F16, rows×cols) · xᵀ. */
const void *cuda_gemm_f16_input(cuda_ctx *c, const float *x, int n, int64_t cols);
void cuda_gemm_f16(cuda_ctx *c, float *out, int64_t ldo, const void *W, int64_t rows, int64_t cols, const void *xs,
                   int n);

void cuda_matmul(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n);
/* Weights in GGML's other quantized types (matmul_q.cu), any n; false when w is not of those types. */
bool cuda_matmul_quant(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n);
/* The tensor-core product (matmul_tc.cu) when it applies to w and n; false when the caller must use another. */
bool cuda_matmul_tc(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n);
void cuda_embed(cuda_ctx *c, float *out, const sd_tensor *table, const int32_t *ids, int n);
void cuda_rmsnorm(cuda_ctx *c, float *out, const float *x, const sd_tensor *w, int rows, int width, float eps);
/* x += y, then out = rmsnorm(x): bitwise cuda_add then cuda_rmsnorm, one launch. */
void cuda_add_rmsnorm(cuda_ctx *c, float *out, float *x, const float *y, const sd_tensor *w, int rows, int width,
                      float eps);
void cuda_add_bias(cuda_ctx *c, float *x, const sd_tensor *bias, int n);
void cuda_rope(cuda_ctx *c, float *x, int n, int n_heads, int head_dim, int n_rot, int pos0, const float *inv_freq,
               bool neox);
void cuda_swiglu(cuda_ctx *c, float *out, const float *gate, const float *up, size_t count);
void cuda_add(cuda_ctx *c, float *x, const float *y, size_t count);
/* Attention and the K/V store of the rows cuda_kv_spans described, on one layer of a pool of `type`
 * (SD_F16 or SD_F32; kcache, vcache: the layer's blocks). */
void cuda_kv_spans(cuda_ctx *c, const sd_kv_span *spans, int n_spans, int rows);
void cuda_attention(cuda_ctx *c, float *out, const float *q, const void *kcache, const void *vcache, sd_dtype type,
                    int n_heads, int n_kv_heads, int head_dim, int kv_dim);
void cuda_attention_init(cuda_ctx *c); /* allocates att_ws (counted as work bytes); failure only slows */
void cuda_attention_free(cuda_ctx *c);
void cuda_argmax_rows(cuda_ctx *c, int32_t *ids_host, const float *x, int rows, int width);
void cuda_sample_rows(cuda_ctx *c, int32_t *ids, float *probs, const float *logits, int rows, int width,
                      const sd_sample_cfg *cfg, const float *u);
int cuda_spec_accept(cuda_ctx *c, int32_t *next, const float *p, const float *q, const int32_t *draft, int k,
                     int width, const float *u);
void cuda_kv_store(cuda_ctx *c, void *kcache, void *vcache, sd_dtype type, const float *k, const float *v,
                   int kv_dim);
/* desc_host[i] = v, marking it for the next flush when it changes (waits for a pending flush's copies
 * first: they read desc_host when they run, not when they are issued). */
void cuda_desc_set(cuda_ctx *c, int i, int v);
/* desc_host[i .. i + n) = v[0 .. n), the same way. */
void cuda_desc_put(cuda_ctx *c, int i, const int32_t *v, int n);
/* Uploads the dirty descriptor ranges (no-op when clean); every op whose kernels read descriptors calls it
 * before launching. Never dirty while a graph records (graph_begin flushes first). */
void cuda_desc_flush(cuda_ctx *c);
/* Device pointer to the current step's pos0 while stepping, else NULL (kernels then use the argument). */
static inline const int *step_pos(const cuda_ctx *c) { return c->stepping ? c->step_dev : NULL; }
/* F32 (host) matrix to F16 (device), for upload. */
void cuda_f32_to_f16(cuda_ctx *c, __half *dst, const float *src, size_t count);


#endif
