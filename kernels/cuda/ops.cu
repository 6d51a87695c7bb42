/* Fused element-wise and row kernels: embedding gather, RMSNorm, bias, RoPE, SwiGLU, residual add. */
#include <stdio.h>

#include "kernels/cuda/cuda_internal.h"

__global__ void k_embed(float *out, const void *table, int type, int64_t rows, int64_t cols, const int32_t *ids) {
    int t = blockIdx.y;
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c < cols) out[t * cols + c] = cuda_load_elem(table, type, rows, cols, ids[t], c);
}

void cuda_embed(cuda_ctx *c, float *out, const sd_tensor *table, const int32_t *ids, int n) {
    dim3 grid((unsigned)((table->cols + 255) / 256), (unsigned)n);
    if (c->stepping) { /* graph_begin staged the ids on the device */
        k_embed<<<grid, 256, 0, c->stream>>>(out, table->data, table->data_type, table->rows, table->cols,
                                             (const int32_t *)c->step_dev + 1);
        return;
    }
    /* ids are host memory: stage them on the device (small, n ints). */
    int32_t *d_ids = NULL;
    CUDA_LOG(cudaMallocAsync((void **)&d_ids, sizeof(int32_t) * (size_t)n, c->stream));
    CUDA_LOG(cudaMemcpyAsync(d_ids, ids, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice, c->stream));
    k_embed<<<grid, 256, 0, c->stream>>>(out, table->data, table->data_type, table->rows, table->cols, d_ids);
    CUDA_LOG(cudaFreeAsync(d_ids, c->stream));
}

__global__ void k_rmsnorm(float *out, const float *x, const void *w, int wtype, int width, float eps) {
    const float *xr = x + (size_t)blockIdx.x * width;
    float *orow = out + (size_t)blockIdx.x * width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += xr[i] * xr[i];
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

void cuda_rmsnorm(cuda_ctx *c, float *out, const float *x, const sd_tensor *w, int rows, int width, float eps) {
    int threads = width >= 1024 ? 1024 : ((width + 31) / 32) * 32;
    k_rmsnorm<<<rows, threads, 0, c->stream>>>(out, x, w->data, w->data_type, width, eps);
}

__global__ void k_add_bias(float *x, const float *bias, int width, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) x[i] += bias[i % width];
}

void cuda_add_bias(cuda_ctx *c, float *x, const sd_tensor *bias, int n) {
    size_t count = (size_t)n * (size_t)bias->cols;
    k_add_bias<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(x, (const float *)bias->data,
                                                                       (int)bias->cols, count);
}

/* One thread per rotated pair. neox pairs (j, j + n_rot/2), otherwise (2j, 2j+1). */
__global__ void k_rope(float *x, int n, int n_heads, int head_dim, int n_rot, int pos0, const int *pos_dev,
                       const float *inv_freq, int neox) {
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
    sincosf(sd_rope_angle(pos0 + t, inv_freq[j]), &s, &co);
    int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
    sd_rope_rotate(&h[a], &h[b], co, s);
}

void cuda_rope(cuda_ctx *c, float *x, int n, int n_heads, int head_dim, int n_rot, int pos0, const float *inv_freq,
               bool neox) {
    size_t total = (size_t)n * n_heads * (n_rot / 2);
    if (!total) return;
    k_rope<<<(unsigned)((total + 255) / 256), 256, 0, c->stream>>>(x, n, n_heads, head_dim, n_rot, pos0, step_pos(c), inv_freq,
                                                                   neox ? 1 : 0);
}

__global__ void k_swiglu(float *out, const float *gate, const float *up, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        out[i] = sd_silu(gate[i]) * up[i];
    }
}

void cuda_swiglu(cuda_ctx *c, float *out, const float *gate, const float *up, size_t count) {
    if (count) k_swiglu<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(out, gate, up, count);
}

__global__ void k_add(float *x, const float *y, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) x[i] += y[i];
}

void cuda_add(cuda_ctx *c, float *x, const float *y, size_t count) {
    if (count) k_add<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(x, y, count);
}

/* K and V rows of n positions into the cache at pos0 (a kernel, not a memcpy, so the offset can come
 * from the step state inside a graph). */
__global__ void k_kv_store(float *kc, float *vc, const float *k, const float *v, int pos0, const int *pos_dev,
                           size_t count, int kv_dim) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    if (pos_dev) pos0 = *pos_dev;
    size_t off = (size_t)pos0 * (size_t)kv_dim + i;
    kc[off] = k[i];
    vc[off] = v[i];
}

void cuda_kv_store(cuda_ctx *c, float *kcache, float *vcache, const float *k, const float *v, int pos0, int n,
                   int kv_dim) {
    size_t count = (size_t)n * (size_t)kv_dim;
    if (count)
        k_kv_store<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(kcache, vcache, k, v, pos0, step_pos(c),
                                                                          count, kv_dim);
}

/* One block per row: each thread scans a strided share, then a shared-memory tree picks the winner under
 * the same order the CPU uses (kernels/quant.h: larger first, lower index on ties, NaN last). */
__global__ void k_argmax_rows(int32_t *ids, const float *x, int width) {
    const float *row = x + (size_t)blockIdx.x * width;
    float best = NAN;
    int32_t best_i = INT32_MAX;
    for (int32_t i = threadIdx.x; i < width; i += blockDim.x)
        if (best_i == INT32_MAX || sd_argmax_prefers(row[i], i, best, best_i)) {
            best = row[i];
            best_i = i;
        }
    __shared__ float sv[256];
    __shared__ int32_t si[256];
    sv[threadIdx.x] = best;
    si[threadIdx.x] = best_i;
    __syncthreads();
    for (int step = blockDim.x / 2; step > 0; step >>= 1) {
        if (threadIdx.x < step) {
            int o = threadIdx.x + step;
            bool take = si[o] != INT32_MAX &&
                        (si[threadIdx.x] == INT32_MAX || sd_argmax_prefers(sv[o], si[o], sv[threadIdx.x], si[threadIdx.x]));
            if (take) {
                sv[threadIdx.x] = sv[o];
                si[threadIdx.x] = si[o];
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = si[0];
}

void cuda_argmax_rows(cuda_ctx *c, int32_t *ids_host, const float *x, int rows, int width) {
    int32_t *d_ids = NULL;
    CUDA_LOG(cudaMallocAsync((void **)&d_ids, sizeof(int32_t) * (size_t)rows, c->stream));
    k_argmax_rows<<<rows, 256, 0, c->stream>>>(d_ids, x, width);
    CUDA_LOG(cudaMemcpyAsync(ids_host, d_ids, sizeof(int32_t) * (size_t)rows, cudaMemcpyDeviceToHost, c->stream));
    CUDA_LOG(cudaFreeAsync(d_ids, c->stream));
    CUDA_LOG(cudaStreamSynchronize(c->stream));
}
