/* Matrix work on the GPU: out[n][rows] = x[n][cols] · Wᵀ.
 * n <= 8 (decode, verification of up to 8 tokens): a bandwidth-bound kernel, one warp per weight row,
 * 16-byte coalesced loads, the row read once for all n inputs (n accumulators per lane).
 * n > 8 (prefill): cuBLAS GemmEx with F16/BF16 inputs and F32 accumulation; Q8_0 loops the small-n kernel. */
#include <stdio.h>

#include "kernels/cuda/cuda_internal.h"

#define MV_WARPS 8
#define MV_MAX_N 8

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Multiplies 8 consecutive weights (already F32) with 8 inputs of each of the NC vectors. */
template <int NC>
__device__ __forceinline__ void fma8(float (&acc)[NC], const float (&w)[8], const float *x, int64_t cols,
                                     int64_t c) {
#pragma unroll
    for (int j = 0; j < NC; j++) {
        const float4 a = *(const float4 *)(x + j * cols + c);
        const float4 b = *(const float4 *)(x + j * cols + c + 4);
        acc[j] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z +
                  w[7] * b.w;
    }
}

template <int NC>
__device__ __forceinline__ void store_row(float (&acc)[NC], float *out, int64_t rows, int64_t row, int lane) {
#pragma unroll
    for (int j = 0; j < NC; j++) {
        float s = warp_sum(acc[j]);
        if (lane == 0) out[j * rows + row] = s;
    }
}

__device__ __forceinline__ float2 to_float2(__half2 h) { return __half22float2(h); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 h) { return __bfloat1622float2(h); }

/* F16 and BF16 weights: 8 per 16-byte load. T2 is the pair type (__half2 or __nv_bfloat162). */
template <int NC, typename T2>
__global__ void mv_16bit(const void *W, int64_t rows, int64_t cols, const float *x, float *out) {
    int64_t row = (int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const uint16_t *w = (const uint16_t *)W + row * cols;
    float acc[NC] = {};
#pragma unroll 2
    for (int64_t c = lane * 8; c < cols; c += 256) {
        uint4 raw = __ldg((const uint4 *)(w + c));
        const T2 *h = (const T2 *)&raw;
        float wf[8];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = to_float2(h[i]);
            wf[2 * i] = f.x;
            wf[2 * i + 1] = f.y;
        }
        fma8<NC>(acc, wf, x, cols, c);
    }
    store_row<NC>(acc, out, rows, row, lane);
}

/* Repacked Q8_0 (see cuda_internal.h): each lane takes 16 quants (half a block) per step. */
template <int NC>
__global__ void mv_q8_0(const int8_t *Q, const __half *S, int64_t rows, int64_t cols, const float *x, float *out) {
    int64_t row = (int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const int8_t *q = Q + row * cols;
    const __half *s = S + row * (cols / 32);
    float acc[NC] = {};
#pragma unroll 2
    for (int64_t c = lane * 16; c < cols; c += 512) {
        int4 raw = __ldg((const int4 *)(q + c));
        const int8_t *qb = (const int8_t *)&raw;
        float d = __half2float(s[c / 32]);
        float wf[8];
#pragma unroll
        for (int half = 0; half < 2; half++) {
#pragma unroll
            for (int i = 0; i < 8; i++) wf[i] = d * (float)qb[half * 8 + i];
            fma8<NC>(acc, wf, x, cols, c + half * 8);
        }
    }
    store_row<NC>(acc, out, rows, row, lane);
}

/* Any type, any alignment: one element at a time. Used for odd shapes (tiny test models). */
template <int NC>
__global__ void mv_generic(const void *W, int type, int64_t rows, int64_t cols, const float *x, float *out) {
    int64_t row = (int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float acc[NC] = {};
    for (int64_t c = lane; c < cols; c += 32) {
        float w = cuda_load_elem(W, type, rows, cols, row, c);
#pragma unroll
        for (int j = 0; j < NC; j++) acc[j] += w * x[j * cols + c];
    }
    store_row<NC>(acc, out, rows, row, lane);
}

template <int NC>
static void launch_mv(cuda_ctx *c, float *out, const sd_tensor *w, const float *x) {
    dim3 grid((unsigned)((w->rows + MV_WARPS - 1) / MV_WARPS)), block(MV_WARPS * 32);
    bool aligned = ((uintptr_t)x % 16 == 0) && ((uintptr_t)w->data % 16 == 0);
    int64_t rows = w->rows, cols = w->cols;
    switch (w->data_type) {
    case SD_F16:
        if (aligned && cols % 8 == 0) {
            mv_16bit<NC, __half2><<<grid, block, 0, c->stream>>>(w->data, rows, cols, x, out);
            return;
        }
        break;
    case SD_BF16:
        if (aligned && cols % 8 == 0) {
            mv_16bit<NC, __nv_bfloat162><<<grid, block, 0, c->stream>>>(w->data, rows, cols, x, out);
            return;
        }
        break;
    case SD_Q8_0:
        if (aligned && cols % 32 == 0) {
            const __half *s = (const __half *)((const char *)w->data + q8_repacked_scales_offset(rows, cols));
            mv_q8_0<NC><<<grid, block, 0, c->stream>>>((const int8_t *)w->data, s, rows, cols, x, out);
            return;
        }
        break;
    default: break;
    }
    mv_generic<NC><<<grid, block, 0, c->stream>>>(w->data, w->data_type, rows, cols, x, out);
}

static void matvec_small(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    switch (n) {
    case 1: launch_mv<1>(c, out, w, x); break;
    case 2: launch_mv<2>(c, out, w, x); break;
    case 3: launch_mv<3>(c, out, w, x); break;
    case 4: launch_mv<4>(c, out, w, x); break;
    case 5: launch_mv<5>(c, out, w, x); break;
    case 6: launch_mv<6>(c, out, w, x); break;
    case 7: launch_mv<7>(c, out, w, x); break;
    default: launch_mv<8>(c, out, w, x); break;
    }
}

__global__ void k_f32_to_f16(__half *dst, const float *src, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] = __float2half(src[i]);
}

__global__ void k_f32_to_bf16(__nv_bfloat16 *dst, const float *src, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] = __float2bfloat16(src[i]);
}

void cuda_f32_to_f16(cuda_ctx *c, __half *dst, const float *src, size_t count) {
    k_f32_to_f16<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(dst, src, count);
}

static void *scratch(cuda_ctx *c, size_t bytes) {
    if (bytes > c->scratch_bytes) {
        if (c->scratch) cudaFree(c->scratch);
        c->bytes_work -= c->scratch_bytes;
        c->scratch = NULL;
        c->scratch_bytes = 0;
        if (cudaMalloc(&c->scratch, bytes) != cudaSuccess) return NULL;
        c->scratch_bytes = bytes;
        c->bytes_work += bytes;
    }
    return c->scratch;
}

/* cuBLAS in column-major terms: W (row-major rows×cols) is Wᵀ column-major with ld = cols, so
 * outᵀ (rows × n, ld = rows) = op_T(W) · xᵀ (cols × n, ld = cols). */
static bool gemm_cublas(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    cudaDataType_t t;
    if (w->data_type == SD_F16) t = CUDA_R_16F;
    else if (w->data_type == SD_BF16) t = CUDA_R_16BF;
    else return false;
    size_t count = (size_t)n * (size_t)w->cols;
    void *xs = scratch(c, count * 2);
    if (!xs) return false;
    if (t == CUDA_R_16F) cuda_f32_to_f16(c, (__half *)xs, x, count);
    else k_f32_to_bf16<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>((__nv_bfloat16 *)xs, x, count);
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, n, (int)w->cols, &one,
                                     w->data, t, (int)w->cols, xs, t, (int)w->cols, &zero, out, CUDA_R_32F,
                                     (int)w->rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS;
}

void cuda_matmul(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    if (n <= MV_MAX_N) {
        matvec_small(c, out, w, x, n);
        return;
    }
    if (gemm_cublas(c, out, w, x, n)) return;
    for (int i = 0; i < n; i += MV_MAX_N) {
        int m = n - i < MV_MAX_N ? n - i : MV_MAX_N;
        matvec_small(c, out + (size_t)i * w->rows, w, x + (size_t)i * w->cols, m);
    }
}
