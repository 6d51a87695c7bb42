/* Matrix work on the GPU: out[n][rows] = x[n][cols] · Wᵀ.
 * n <= MV_MAX_N (decode, verification, small batches): bandwidth-bound matrix-vector kernels. A block
 * takes R weight rows; its MV_WARPS warps split the columns into 16-byte-per-lane strips, so even a small
 * matrix (a GQA wk of 1024 rows) gives enough blocks and loads in flight to stream at memory speed, and
 * each x load serves R rows (n x 32 bytes of x per 16 bytes of weights would otherwise make large n
 * L1-bound). The warps' partial sums meet in shared memory. The weights are read once for all n rows, and
 * every row's sum is formed in the same order whatever n is, so a verify block computes bitwise what
 * single decode steps would.
 * Q8_0 quantizes the activations per block of 32 first, exactly as the CPU backend does
 * (kernels/quant.h), and sums exact int8 products with dp4a: a quarter of the x bytes of float x.
 * n > MV_MAX_N (prefill): cuBLAS GemmEx with F16/BF16 inputs and F32 accumulation; Q8_0 like the other
 * quantized types (matmul_q.cu: tiles dequantized to F16, then cuBLAS; its matvec kernel over MV_MAX_N rows
 * at a time grew linearly, 12.6x one row at 64 rows on the H200). */
#include <stdio.h>

#include "kernels/cuda/cuda_internal.h"

#define MV_WARPS 4

/* Sums acc[R][NC] over the block's warps and writes out[j][row0 + r] for the rows that exist. */
template <int NC, int R>
__device__ __forceinline__ void mv_reduce(float (&acc)[R][NC], float *out, int64_t rows, int64_t row0) {
    mv_reduce_groups<NC, R, MV_WARPS>(acc, out, rows, row0, MV_WARPS * 32, NC);
}

__device__ __forceinline__ float2 to_float2(__half2 h) { return __half22float2(h); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 h) { return __bfloat1622float2(h); }

/* F16 and BF16 weights, 8 per 16-byte load. T2 is the pair type (__half2 or __nv_bfloat162). Rows past
 * the end read the last row (valid memory) and are not written. (Measured on the H200 and not kept: two
 * 16-byte vectors per lane per strip, and evict-first weight loads; docs/benchmarks.md.) */
template <int NC, typename T2>
__global__ void __launch_bounds__(MV_WARPS * 32) mv_16bit(const void *W, int64_t rows, int64_t cols,
                                                          const float *x, float *out) {
    constexpr int R = mv_rows<NC>::R;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row0 = (int64_t)blockIdx.x * R;
    const uint16_t *w[R];
#pragma unroll
    for (int r = 0; r < R; r++) w[r] = (const uint16_t *)W + min(row0 + r, rows - 1) * cols;
    float acc[R][NC] = {};
    for (int64_t c = ((int64_t)warp * 32 + lane) * 8; c < cols; c += MV_WARPS * 256) {
        uint4 raw[R];
#pragma unroll
        for (int r = 0; r < R; r++) raw[r] = __ldg((const uint4 *)(w[r] + c));
        float wf[R][8];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const T2 *h = (const T2 *)&raw[r];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = to_float2(h[i]);
                wf[r][2 * i] = f.x;
                wf[r][2 * i + 1] = f.y;
            }
        }
#pragma unroll
        for (int j = 0; j < NC; j++) {
            const float4 a = __ldg((const float4 *)(x + j * cols + c));
            const float4 b = __ldg((const float4 *)(x + j * cols + c + 4));
#pragma unroll
            for (int r = 0; r < R; r++)
                acc[r][j] += wf[r][0] * a.x + wf[r][1] * a.y + wf[r][2] * a.z + wf[r][3] * a.w +
                             wf[r][4] * b.x + wf[r][5] * b.y + wf[r][6] * b.z + wf[r][7] * b.w;
        }
    }
    mv_reduce<NC, R>(acc, out, rows, row0);
}

/* Activations for Q8_0 products: one warp per block of 32, bit for bit what sd_quant_act_q8 computes on
 * the CPU (the maximum is exact; the division and reciprocal are IEEE-rounded in both). */
__global__ void __launch_bounds__(256) k_quant_act_q8(int8_t *q, float *d, const float *x, int64_t blocks) {
    int64_t b = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (b >= blocks) return; /* whole warps leave together */
    float v = x[b * 32 + lane], a = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
    float db = a / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
    float s = v * id;
    q[b * 32 + lane] = (int8_t)(int)(s + (s >= 0.0f ? 0.5f : -0.5f));
    if (lane == 0) d[b] = db;
}

/* Repacked Q8_0 (see cuda_internal.h) times quantized activations: each lane takes 16 quants (half a
 * block) per strip and sums them exactly with dp4a, then scales by d_w * d_x. */
template <int NC>
__global__ void __launch_bounds__(MV_WARPS * 32) mv_q8_0(const int8_t *Q, const __half *S, int64_t rows,
                                                         int64_t cols, const int8_t *xq, const float *xd,
                                                         float *out) {
    constexpr int R = mv_rows<NC>::R;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row0 = (int64_t)blockIdx.x * R, nb = cols / 32;
    const int8_t *q[R];
    const __half *s[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int64_t row = min(row0 + r, rows - 1);
        q[r] = Q + row * cols;
        s[r] = S + row * nb;
    }
    float acc[R][NC] = {};
    for (int64_t c = (int64_t)warp * 512 + lane * 16; c < cols; c += MV_WARPS * 512) {
        int4 raw[R];
        float dw[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            raw[r] = __ldg((const int4 *)(q[r] + c));
            dw[r] = __half2float(s[r][c / 32]);
        }
#pragma unroll
        for (int j = 0; j < NC; j++) {
            const int4 a = __ldg((const int4 *)(xq + j * cols + c));
            const float dx = __ldg(xd + j * nb + c / 32);
#pragma unroll
            for (int r = 0; r < R; r++) {
                int is = __dp4a(raw[r].x, a.x, 0);
                is = __dp4a(raw[r].y, a.y, is);
                is = __dp4a(raw[r].z, a.z, is);
                is = __dp4a(raw[r].w, a.w, is);
                acc[r][j] += dw[r] * dx * (float)is;
            }
        }
    }
    mv_reduce<NC, R>(acc, out, rows, row0);
}

/* Any type, any alignment: one element at a time. Used for odd shapes (tiny test models). */
template <int NC>
__global__ void __launch_bounds__(MV_WARPS * 32) mv_generic(const void *W, int type, int64_t rows, int64_t cols, const float *x, float *out) {
    int64_t row = (int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float acc[NC] = {};
    for (int64_t c = lane; c < cols; c += 32) {
        float w = cuda_load_elem(W, type, rows, cols, row, c);
#pragma unroll
        for (int j = 0; j < NC; j++) acc[j] += w * x[j * cols + c];
    }
#pragma unroll
    for (int j = 0; j < NC; j++) {
        float s = warp_sum(acc[j]);
        if (lane == 0) out[j * rows + row] = s;
    }
}

template <int NC>
static void launch_mv(cuda_ctx *c, float *out, const sd_tensor *w, const float *x) {
    constexpr int R = mv_rows<NC>::R;
    dim3 grid((unsigned)((w->rows + R - 1) / R)), block(MV_WARPS * 32);
    bool aligned = ((uintptr_t)x % 16 == 0) && ((uintptr_t)w->data % 16 == 0);
    int64_t rows = w->rows, cols = w->cols;
    switch (w->data_type) {
    case SD_F16:
        if (aligned && cols % 8 == 0) {
            mv_16bit<NC, __half2><<<grid, block, 0, c->stream>>>(w->data, rows, cols, x, out);
            CUDA_LAUNCHED(c, "matmul f16");
            return;
        }
        break;
    case SD_BF16:
        if (aligned && cols % 8 == 0) {
            mv_16bit<NC, __nv_bfloat162><<<grid, block, 0, c->stream>>>(w->data, rows, cols, x, out);
            CUDA_LAUNCHED(c, "matmul bf16");
            return;
        }
        break;
    case SD_Q8_0:
        if (aligned && cols % 32 == 0 && cols <= c->q8_cols && c->q8_x) {
            if (!cuda_q8_act(c, x, NC, cols)) return;
            const __half *s = (const __half *)((const char *)w->data + q8_repacked_scales_offset(rows, cols));
            mv_q8_0<NC><<<grid, block, 0, c->stream>>>((const int8_t *)w->data, s, rows, cols, c->q8_x, c->q8_d,
                                                       out);
            CUDA_LAUNCHED(c, "matmul q8_0");
            return;
        }
        break;
    default: break;
    }
    dim3 ggrid((unsigned)((w->rows + MV_WARPS - 1) / MV_WARPS));
    mv_generic<NC><<<ggrid, block, 0, c->stream>>>(w->data, w->data_type, rows, cols, x, out);
    CUDA_LAUNCHED(c, "matmul (generic)");
}

typedef void (*mv_launcher)(cuda_ctx *, float *, const sd_tensor *, const float *);
static const mv_launcher k_mv[MV_MAX_N + 1] = {
    NULL, launch_mv<1>, launch_mv<2>, launch_mv<3>, launch_mv<4>, launch_mv<5>, launch_mv<6>,
    launch_mv<7>, launch_mv<8>, launch_mv<9>, launch_mv<10>, launch_mv<11>, launch_mv<12>,
    launch_mv<13>, launch_mv<14>, launch_mv<15>, launch_mv<16>};

static void matvec_small(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    k_mv[n](c, out, w, x);
}

bool cuda_q8_act(cuda_ctx *c, const float *x, int n, int64_t cols) {
    if (c->q8_src == x && c->q8_n == n && c->q8_src_cols == cols) return true; /* quantized already */
    int64_t blocks = (int64_t)n * cols / 32;
    k_quant_act_q8<<<(unsigned)((blocks + 7) / 8), 256, 0, c->stream>>>(c->q8_x, c->q8_d, x, blocks);
    if (!CUDA_LAUNCHED(c, "quantize activations")) return false;
    c->q8_src = x;
    c->q8_n = n;
    c->q8_src_cols = cols;
    return true;
}

static size_t q8_bytes(int64_t cols) { return (size_t)cols * MV_MAX_N + (size_t)cols / 32 * MV_MAX_N * sizeof(float); }

/* Sizes the Q8_0 activation buffers for matrices of `cols` columns (called at upload, outside steps). */
int cuda_q8_reserve(cuda_ctx *c, int64_t cols) {
    if (cols <= c->q8_cols) return 0;
    if (c->q8_x) cudaFree(c->q8_x);
    if (c->q8_d) cudaFree(c->q8_d);
    c->bytes_work -= q8_bytes(c->q8_cols);
    c->q8_x = NULL;
    c->q8_d = NULL;
    c->q8_cols = 0;
    if (cudaMalloc((void **)&c->q8_x, (size_t)cols * MV_MAX_N) != cudaSuccess ||
        cudaMalloc((void **)&c->q8_d, (size_t)cols / 32 * MV_MAX_N * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    c->q8_cols = cols;
    c->bytes_work += q8_bytes(cols);
    return 0;
}

__global__ void __launch_bounds__(256) k_f32_to_f16(__half *dst, const float *src, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] = __float2half(src[i]);
}

/* Activations for an F16 cuBLAS product: F16 overflows past 65504, and some models' activations exceed that
 * (e.g. at w_down's input), so x is scaled by a power of two (exact) that brings its largest magnitude under
 * 2^15, and cuBLAS multiplies the result back through alpha, read from the device (no host round trip).
 * gs[0]: max |x| as float bits (non-negative floats order as their bits), gs[1]: alpha, gs[2]: beta (0). */
__global__ void __launch_bounds__(256) k_absmax(unsigned *gs, const float *x, size_t count) {
    float m = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        m = fmaxf(m, fabsf(x[i]));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    /* one atomic per block, not per warp (2112 atomics on one word took 7 us a call on the H200) */
    __shared__ float part[8];
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < 8; w++) m = fmaxf(m, part[w]);
        atomicMax(gs, __float_as_uint(m));
    }
}

__global__ void __launch_bounds__(256) k_f32_to_f16_scaled(__half *dst, const float *src, size_t count, float *gs) {
    float amax = __uint_as_float(((const unsigned *)gs)[0]);
    int e = 0;
    if (amax > 32768.0f) frexpf(amax / 32768.0f, &e); /* 2^(e-1) <= amax / 2^15 < 2^e */
    float scale = ldexpf(1.0f, -e);
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] = __float2half(src[i] * scale);
    if (i == 0) {
        gs[1] = ldexpf(1.0f, e);
        gs[2] = 0.0f;
    }
}

__global__ void __launch_bounds__(256) k_f32_to_bf16(__nv_bfloat16 *dst, const float *src, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] = __float2bfloat16(src[i]);
}

void cuda_f32_to_f16(cuda_ctx *c, __half *dst, const float *src, size_t count) {
    k_f32_to_f16<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(dst, src, count);
    CUDA_LAUNCHED(c, "f32 to f16");
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
 * outᵀ (rows × n, ld = ldo) = op_T(W) · xᵀ (cols × n, ld = cols). alpha and beta are device scalars
 * (gemm_scal) for F16, whose input was scaled, and host ones otherwise. */
static void gemm_ex(cuda_ctx *c, float *out, int64_t ldo, const void *W, cudaDataType_t t, int64_t rows,
                    int64_t cols, const void *xs, int n) {
    const float one = 1.0f, zero = 0.0f;
    bool scaled = t == CUDA_R_16F;
    if (scaled) cublasSetPointerMode(c->cublas, CUBLAS_POINTER_MODE_DEVICE);
    cublasStatus_t st = cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, n, (int)cols,
                                     scaled ? (const float *)c->gemm_scal + 1 : &one, W, t, (int)cols, xs, t,
                                     (int)cols, scaled ? (const float *)c->gemm_scal + 2 : &zero, out, CUDA_R_32F,
                                     (int)ldo, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (scaled) cublasSetPointerMode(c->cublas, CUBLAS_POINTER_MODE_HOST);
    if (st != CUBLAS_STATUS_SUCCESS) {
        char what[128];
        snprintf(what, sizeof what, "cublasGemmEx (%lld x %lld, n %d): status %d", (long long)rows, (long long)cols,
                 n, (int)st);
        cuda_fail(c, cudaErrorUnknown, what, __FILE__, __LINE__);
    }
}

const void *cuda_gemm_f16_input(cuda_ctx *c, const float *x, int n, int64_t cols) {
    if (c->f16_src == x && c->f16_n == n && c->f16_cols == cols) return c->scratch; /* converted already */
    c->f16_src = NULL;
    size_t count = (size_t)n * (size_t)cols;
    __half *xs = (__half *)scratch(c, count * 2);
    if (!xs) {
        cuda_fail(c, cudaErrorMemoryAllocation, "cuBLAS input buffer", __FILE__, __LINE__);
        return NULL;
    }
    CUDA_CK(c, cudaMemsetAsync(c->gemm_scal, 0, sizeof(unsigned), c->stream));
    k_absmax<<<264, 256, 0, c->stream>>>((unsigned *)c->gemm_scal, x, count);
    if (!CUDA_LAUNCHED(c, "absmax (F16 prefill)")) return NULL;
    k_f32_to_f16_scaled<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(xs, x, count, c->gemm_scal);
    if (!CUDA_LAUNCHED(c, "f32 to f16 (scaled)")) return NULL;
    c->f16_src = x;
    c->f16_n = n;
    c->f16_cols = cols;
    return xs;
}

void cuda_gemm_f16(cuda_ctx *c, float *out, int64_t ldo, const void *W, int64_t rows, int64_t cols, const void *xs,
                   int n) {
    gemm_ex(c, out, ldo, W, CUDA_R_16F, rows, cols, xs, n);
}

/* F16 and BF16 weights, n > MV_MAX_N; false for other types. */
static bool gemm_cublas(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    if (w->data_type == SD_F16) {
        const void *xs = cuda_gemm_f16_input(c, x, n, w->cols);
        if (xs) cuda_gemm_f16(c, out, w->rows, w->data, w->rows, w->cols, xs, n);
        return true;
    }
    if (w->data_type != SD_BF16) return false;
    c->f16_src = NULL; /* the scratch buffer is about to hold BF16 */
    size_t count = (size_t)n * (size_t)w->cols;
    __nv_bfloat16 *xs = (__nv_bfloat16 *)scratch(c, count * 2);
    if (!xs) {
        cuda_fail(c, cudaErrorMemoryAllocation, "cuBLAS input buffer", __FILE__, __LINE__);
        return true;
    }
    k_f32_to_bf16<<<(unsigned)((count + 255) / 256), 256, 0, c->stream>>>(xs, x, count);
    if (CUDA_LAUNCHED(c, "f32 to bf16")) gemm_ex(c, out, w->rows, w->data, CUDA_R_16BF, w->rows, w->cols, xs, n);
    return true;
}

void cuda_matmul(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    /* the product's output must not be activations still held converted */
    if (c->q8_src && out < c->q8_src + (size_t)c->q8_n * c->q8_src_cols && c->q8_src < out + (size_t)n * w->rows)
        c->q8_src = NULL;
    if (c->f16_src && out < c->f16_src + (size_t)c->f16_n * c->f16_cols && c->f16_src < out + (size_t)n * w->rows)
        c->f16_src = NULL;
    if (cuda_matmul_quant(c, out, w, x, n)) return;
    if (c->tc && cuda_matmul_tc(c, out, w, x, n)) return;
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
