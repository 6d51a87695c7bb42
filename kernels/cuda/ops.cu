/* Fused element-wise and row kernels: embedding gather, RMSNorm, bias, RoPE, SwiGLU, residual add. */
#include <stdio.h>

#include "kernels/cuda/cuda_internal.h"

/* Embedding gathers. F32/F16/BF16 tables (what GGUF files hold) read their elements directly; the generic
 * element loader (cuda_load_elem) decodes quantized blocks, whose unpacking spills to local memory. */
__device__ __forceinline__ float plain_f(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float plain_f(const __half *p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float plain_f(const __nv_bfloat16 *p, int64_t i) { return __bfloat162float(p[i]); }

template <typename T>
__global__ void __launch_bounds__(256) k_embed_plain(float *out, const T *table, int64_t cols, const int32_t *ids) {
    int t = blockIdx.y;
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c < cols) out[t * cols + c] = plain_f(table, (int64_t)ids[t] * cols + c);
}

__global__ void __launch_bounds__(256) k_embed(float *out, const void *table, int type, int64_t rows, int64_t cols,
                                               const int32_t *ids) {
    int t = blockIdx.y;
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c < cols) out[t * cols + c] = cuda_load_elem(table, type, rows, cols, ids[t], c);
}

static void launch_embed(cuda_ctx *c, float *out, const sd_tensor *table, const int32_t *ids, int n) {
    dim3 grid((unsigned)((table->cols + 255) / 256), (unsigned)n);
    switch (table->data_type) {
    case SD_F32: k_embed_plain<float><<<grid, 256, 0, c->stream>>>(out, (const float *)table->data, table->cols, ids); break;
    case SD_F16: k_embed_plain<__half><<<grid, 256, 0, c->stream>>>(out, (const __half *)table->data, table->cols, ids); break;
    case SD_BF16:
        k_embed_plain<__nv_bfloat16><<<grid, 256, 0, c->stream>>>(out, (const __nv_bfloat16 *)table->data, table->cols, ids);
        break;
    default:
        k_embed<<<grid, 256, 0, c->stream>>>(out, table->data, table->data_type, table->rows, table->cols, ids);
        break;
    }
    CUDA_LAUNCHED(c, "embed");
}

void cuda_embed(cuda_ctx *c, float *out, const sd_tensor *table, const int32_t *ids, int n) {
    if (c->stepping) { /* graph_begin staged the ids on the device */
        launch_embed(c, out, table, (const int32_t *)c->step_dev + 1, n);
        return;
    }
    /* ids are host memory: stage them in the id buffer (pageable source: the copy is staged before the
     * call returns, so the caller may reuse ids) */
    int32_t *d_ids = cuda_ids(c, (size_t)n);
    if (!d_ids) return;
    CUDA_CK(c, cudaMemcpyAsync(d_ids, ids, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice, c->stream));
    launch_embed(c, out, table, d_ids, n);
}

/* Launched with up to 1024 threads: the bound caps registers at 64 so the rare quantized-weight path (a block
 * unpacked per element) spills instead of making every launch fail with "too many resources requested". */
#define RMS_MAX_THREADS 1024
/* ADD: x += y first (the residual add fused in; each thread reads back only what it wrote, so the norm is
 * bitwise the unfused one's). out may alias y: a row's y is read before the barrier, out written after. */
template <bool ADD>
__global__ void __launch_bounds__(RMS_MAX_THREADS) k_rmsnorm(float *out, float *x, const float *y, const void *w, int wtype,
                                                             int width, float eps) {
    float *xr = x + (size_t)blockIdx.x * width;
    float *orow = out + (size_t)blockIdx.x * width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        if (ADD) xr[i] = __fadd_rn(xr[i], y[(size_t)blockIdx.x * width + i]);
        ss += xr[i] * xr[i];
    }
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) part[0] = v;
    }
    __syncthreads();
    float scale = rsqrtf(part[0] / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x)
        orow[i] = xr[i] * scale * cuda_load_elem(w, wtype, 1, width, 0, i);
}

/* The fast path: F32/F16/BF16 weights (what GGUF files hold), width a multiple of 4 up to RMS_VEC_MAX * 4 *
 * RMS_FAST_THREADS, 16-byte aligned rows. Each thread keeps its float4s of x in registers (x is read once,
 * the weights are loaded before the reduction), no generic element loader (whose quantized unpacking spills
 * to local memory). The sum of squares is formed in one fixed order whatever ADD is, so the fused op stays
 * bitwise the unfused pair. */
#define RMS_FAST_THREADS 256
#define RMS_VEC_MAX 8 /* float4s per thread: widths up to 8192 */

__device__ __forceinline__ float4 load4(const float *p, int i) { return ((const float4 *)p)[i]; }
__device__ __forceinline__ float4 load4(const __half *p, int i) {
    const __half2 *h = (const __half2 *)p + 2 * i;
    float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
    return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ float4 load4(const __nv_bfloat16 *p, int i) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)p + 2 * i;
    float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
    return make_float4(a.x, a.y, b.x, b.y);
}

template <bool ADD, typename WT>
__global__ void __launch_bounds__(RMS_FAST_THREADS) k_rmsnorm_fast(float *out, float *x, const float *y, const WT *w,
                                                                   int width, float eps) {
    float4 *xr = (float4 *)(x + (size_t)blockIdx.x * width);
    float4 *orow = (float4 *)(out + (size_t)blockIdx.x * width);
    const float4 *yr = ADD ? (const float4 *)(y + (size_t)blockIdx.x * width) : nullptr;
    int nv = width / 4;
    float4 v[RMS_VEC_MAX], wv[RMS_VEC_MAX];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < RMS_VEC_MAX; k++) {
        int i = threadIdx.x + k * RMS_FAST_THREADS;
        if (i >= nv) break;
        v[k] = xr[i];
        wv[k] = load4(w, i);
        if (ADD) {
            float4 a = yr[i];
            v[k] = make_float4(__fadd_rn(v[k].x, a.x), __fadd_rn(v[k].y, a.y), __fadd_rn(v[k].z, a.z),
                               __fadd_rn(v[k].w, a.w));
            xr[i] = v[k];
        }
        ss = __fmaf_rn(v[k].x, v[k].x, ss);
        ss = __fmaf_rn(v[k].y, v[k].y, ss);
        ss = __fmaf_rn(v[k].z, v[k].z, ss);
        ss = __fmaf_rn(v[k].w, v[k].w, ss);
    }
    __shared__ float part[RMS_FAST_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < RMS_FAST_THREADS / 32; i++) tot += part[i];
    float scale = rsqrtf(tot / (float)width + eps);
#pragma unroll
    for (int k = 0; k < RMS_VEC_MAX; k++) {
        int i = threadIdx.x + k * RMS_FAST_THREADS;
        if (i >= nv) break;
        orow[i] = make_float4(__fmul_rn(__fmul_rn(v[k].x, scale), wv[k].x), __fmul_rn(__fmul_rn(v[k].y, scale), wv[k].y),
                              __fmul_rn(__fmul_rn(v[k].z, scale), wv[k].z), __fmul_rn(__fmul_rn(v[k].w, scale), wv[k].w));
    }
}

/* The fast path when it applies; false otherwise. */
template <bool ADD>
static bool rmsnorm_fast(cuda_ctx *c, float *out, float *x, const float *y, const sd_tensor *w, int rows, int width,
                         float eps) {
    if (width % 4 || width > RMS_VEC_MAX * 4 * RMS_FAST_THREADS || (uintptr_t)x % 16 || (uintptr_t)out % 16 ||
        (ADD && (uintptr_t)y % 16) || (uintptr_t)w->data % 16)
        return false;
    switch (w->data_type) {
    case SD_F32:
        k_rmsnorm_fast<ADD, float><<<rows, RMS_FAST_THREADS, 0, c->stream>>>(out, x, y, (const float *)w->data, width, eps);
        break;
    case SD_F16:
        k_rmsnorm_fast<ADD, __half><<<rows, RMS_FAST_THREADS, 0, c->stream>>>(out, x, y, (const __half *)w->data, width, eps);
        break;
    case SD_BF16:
        k_rmsnorm_fast<ADD, __nv_bfloat16><<<rows, RMS_FAST_THREADS, 0, c->stream>>>(out, x, y, (const __nv_bfloat16 *)w->data,
                                                                      width, eps);
        break;
    default: return false;
    }
    CUDA_LAUNCHED(c, ADD ? "add_rmsnorm" : "rmsnorm");
    return true;
}

static int rms_threads(int width) { return width >= RMS_MAX_THREADS ? RMS_MAX_THREADS : ((width + 31) / 32) * 32; }

void cuda_rmsnorm(cuda_ctx *c, float *out, const float *x, const sd_tensor *w, int rows, int width, float eps) {
    /* x is only read (ADD false) */
    if (rmsnorm_fast<false>(c, out, (float *)x, nullptr, w, rows, width, eps)) return;
    k_rmsnorm<false><<<rows, rms_threads(width), 0, c->stream>>>(out, (float *)x, (const float *)nullptr, w->data,
                                                                 w->data_type, width, eps);
    CUDA_LAUNCHED(c, "rmsnorm");
}

void cuda_add_rmsnorm(cuda_ctx *c, float *out, float *x, const float *y, const sd_tensor *w, int rows, int width,
                      float eps) {
    if (rmsnorm_fast<true>(c, out, x, y, w, rows, width, eps)) return;
    k_rmsnorm<true><<<rows, rms_threads(width), 0, c->stream>>>(out, x, y, w->data, w->data_type, width, eps);
    CUDA_LAUNCHED(c, "add_rmsnorm");
}

__global__ void k_add_bias(float *x, const float *bias, int width, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) x[i] += bias[i % width];
}

void cuda_add_bias(cuda_ctx *c, float *x, const sd_tensor *bias, int n) {
    size_t count = (size_t)n * (size_t)bias->cols;
    k_add_bias<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(x, (const float *)bias->data,
                                                                       (int)bias->cols, count);
    CUDA_LAUNCHED(c, "add_bias");
}

/* One thread per rotated pair. neox pairs (j, j + n_rot/2), otherwise (2j, 2j+1). Row t is at pos0 + t,
 * pos0 from the step state while stepping (pos_dev), or at its own position in the pass's descriptors
 * (rows: SD_POS_SPANS). */
__global__ void __launch_bounds__(256) k_rope(float *x, int n, int n_heads, int head_dim, int n_rot, int pos0,
                                              const int *pos_dev, const int *rows, const float *inv_freq, int neox) {
    if (pos_dev) pos0 = *pos_dev;
    int half = n_rot / 2;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)n * n_heads * half;
    if (i >= total) return;
    int j = (int)(i % half);
    size_t th = i / half; /* token * n_heads + head */
    int t = (int)(th / n_heads);
    float *h = x + th * head_dim;
    float s, co;
    sincosf(sd_rope_angle(rows ? rows[2 * t] : pos0 + t, inv_freq[j]), &s, &co);
    int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
    sd_rope_rotate(&h[a], &h[b], co, s);
}

void cuda_rope(cuda_ctx *c, float *x, int n, int n_heads, int head_dim, int n_rot, int pos0, const float *inv_freq,
               bool neox) {
    size_t total = (size_t)n * n_heads * (n_rot / 2);
    if (!total) return;
    const int *rows = NULL;
    if (pos0 == SD_POS_SPANS) {
        if (n != c->kv_n_rows) {
            char what[120];
            snprintf(what, sizeof what, "rope of %d rows at the spans' positions (the pass has %d)", n, c->kv_n_rows);
            cuda_fail(c, cudaErrorInvalidValue, what, __FILE__, __LINE__);
            return;
        }
        cuda_desc_flush(c);
        rows = c->kv_rows;
    }
    k_rope<<<(unsigned)((total + 255) / 256), 256, 0, c->stream>>>(x, n, n_heads, head_dim, n_rot, pos0,
                                                                   rows ? NULL : step_pos(c), rows, inv_freq,
                                                                   neox ? 1 : 0);
    CUDA_LAUNCHED(c, "rope");
}

__global__ void k_swiglu(float *out, const float *gate, const float *up, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        out[i] = sd_silu(gate[i]) * up[i];
    }
}

void cuda_swiglu(cuda_ctx *c, float *out, const float *gate, const float *up, size_t count) {
    if (!count) return;
    k_swiglu<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(out, gate, up, count);
    CUDA_LAUNCHED(c, "swiglu");
}

__global__ void k_add(float *x, const float *y, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) x[i] += y[i];
}

void cuda_add(cuda_ctx *c, float *x, const float *y, size_t count) {
    if (!count) return;
    k_add<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(x, y, count);
    CUDA_LAUNCHED(c, "add");
}

/* Argmax in two launches, so a 32000..150000-word row is scanned by many blocks instead of one:
 * k_argmax_part: block (chunk, row) finds the best of its chunk of columns (each thread a strided share,
 * then a shared-memory tree); k_argmax_merge: one warp per row picks the best chunk. Both compare under the
 * order the CPU uses (kernels/quant.h: larger first, lower index on ties, NaN last), so ids match the CPU. */
#define AM_THREADS 256
#define AM_CHUNK 4096   /* columns per block, at most */
#define AM_MAX_CHUNKS 32

__device__ __forceinline__ bool am_take(float v, int32_t i, float bv, int32_t bi) {
    return i != INT32_MAX && (bi == INT32_MAX || sd_argmax_prefers(v, i, bv, bi));
}

__global__ void k_argmax_part(float *pv, int32_t *pi, const float *x, int width, int chunk, int nch) {
    int row = blockIdx.y, c0 = blockIdx.x * chunk, c1 = min(c0 + chunk, width);
    const float *r = x + (size_t)row * width;
    float best = NAN;
    int32_t best_i = INT32_MAX;
    for (int32_t i = c0 + threadIdx.x; i < c1; i += AM_THREADS)
        if (am_take(r[i], i, best, best_i)) {
            best = r[i];
            best_i = i;
        }
    __shared__ float sv[AM_THREADS];
    __shared__ int32_t si[AM_THREADS];
    sv[threadIdx.x] = best;
    si[threadIdx.x] = best_i;
    __syncthreads();
    for (int step = AM_THREADS / 2; step > 0; step >>= 1) {
        if (threadIdx.x < step && am_take(sv[threadIdx.x + step], si[threadIdx.x + step], sv[threadIdx.x], si[threadIdx.x])) {
            sv[threadIdx.x] = sv[threadIdx.x + step];
            si[threadIdx.x] = si[threadIdx.x + step];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        pv[row * nch + blockIdx.x] = sv[0];
        pi[row * nch + blockIdx.x] = si[0];
    }
}

__global__ void k_argmax_merge(int32_t *ids, const float *pv, const int32_t *pi, int nch) {
    int row = blockIdx.x, lane = threadIdx.x;
    float v = lane < nch ? pv[row * nch + lane] : NAN;
    int32_t i = lane < nch ? pi[row * nch + lane] : INT32_MAX;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (am_take(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    if (lane == 0) ids[row] = i;
}

void cuda_argmax_rows(cuda_ctx *c, int32_t *ids_host, const float *x, int rows, int width) {
    int nch = (width + AM_CHUNK - 1) / AM_CHUNK;
    if (nch > AM_MAX_CHUNKS) nch = AM_MAX_CHUNKS; /* then each block's share is wider than AM_CHUNK */
    int chunk = (width + nch - 1) / nch;
    /* the id buffer holds the ids, then the partials' indices and values */
    int32_t *buf = cuda_ids(c, (size_t)rows * (1 + 2 * (size_t)nch));
    if (buf) {
        int32_t *d_ids = buf, *pi = buf + rows;
        float *pv = (float *)(pi + (size_t)rows * nch);
        k_argmax_part<<<dim3((unsigned)nch, (unsigned)rows), AM_THREADS, 0, c->stream>>>(pv, pi, x, width, chunk, nch);
        if (CUDA_LAUNCHED(c, "argmax (chunks)")) {
            k_argmax_merge<<<rows, 32, 0, c->stream>>>(d_ids, pv, pi, nch);
            if (CUDA_LAUNCHED(c, "argmax (merge)"))
                CUDA_CK(c, cudaMemcpyAsync(ids_host, d_ids, sizeof(int32_t) * (size_t)rows, cudaMemcpyDeviceToHost,
                                           c->stream));
        }
        CUDA_CK(c, cudaStreamSynchronize(c->stream));
    }
    if (c->err) /* never hand out ids the device did not compute */
        for (int r = 0; r < rows; r++) ids_host[r] = 0;
}
