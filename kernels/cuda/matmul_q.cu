/* Matrix products with weights in GGML's quantized types beyond Q8_0 (Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K,
 * IQ4_NL, IQ4_XS; kernels/quant_k.h): out[n][rows] = x[n][cols] · Wᵀ. The weights stay in the file's blocks.
 *
 * n <= MV_MAX_N (decode, verification): matrix-vector kernels that read the weights once for all n rows.
 * The activations are quantized per block of 32 to int8 as for Q8_0 (matmul.cu, shared and reused across
 * products on the same input); a lane decodes its chunk of weights in registers (qdecode.h: 32 int8 levels
 * and a scale and offset per 16) and sums exact dp4a products, scaled by d_x and the weights' scales; the
 * offsets (minimums) multiply the activations' sums. A block of MQ_THREADS splits into groups of `lpr`
 * lanes (32..128, as many as a row has chunks), each taking R rows, so rows of few chunks (a 4096-column
 * Q2_K row is 32 chunks of 128) still keep every lane busy. Each row's sum is formed in the same order
 * whatever n is, so a verify block computes bitwise what single decode steps would.
 * n > MV_MAX_N (prefill, batches of many rows): tiles of rows dequantized to F16 (each weight the float the
 * CPU computes, then rounded) and multiplied by cuBLAS with F16 activations (matmul.cu); Q8_0 too (its
 * n <= MV_MAX_N kernel is matmul.cu's). */
#include "kernels/cuda/cuda_internal.h"

/* Dot product of a decoded group with 32 int8 activations (8 ints): the levels' sums per 16 times the
 * scales, plus the offsets times the activations' sums (xs, types with offsets only). */
template <bool OFF>
__device__ __forceinline__ float qdot(const qgroup &w, const int (&x)[8], int xs0, int xs1) {
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        s0 = __dp4a(w.q[k], x[k], s0);
        s1 = __dp4a(w.q[k + 4], x[k + 4], s1);
    }
    /* Explicit roundings: left to itself nvcc contracts these into FMAs differently in each <T, NC>
     * instantiation, and the rows of an n-row product must equal the one-row product bit for bit (seen on
     * the H200 for Q2_K). */
    float v = __fmaf_rn(w.sc[1], (float)s1, __fmul_rn(w.sc[0], (float)s0));
    if (OFF) v = __fmaf_rn(w.off[1], (float)xs1, __fmaf_rn(w.off[0], (float)xs0, v));
    return v;
}

/* NC: rows of x the kernel holds accumulators for; n <= NC of them exist. */
template <int T, int NC>
__global__ void __launch_bounds__(MQ_THREADS) mv_q(const uint8_t *W, int64_t rows, int64_t cols, size_t row_bytes,
                                                   int lpr, const int8_t *xq, const float *xd, int n, float *out) {
    using D = qdec<T>;
    constexpr int R = mv_rows<NC>::R;
    int t = threadIdx.x % lpr;
    int64_t row0 = (int64_t)blockIdx.x * (MQ_THREADS / lpr) * R, my_row0 = row0 + (int64_t)(threadIdx.x / lpr) * R;
    const uint8_t *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = W + (size_t)min(my_row0 + r, rows - 1) * row_bytes;
    float acc[R][NC] = {};
    int64_t chunks = cols / D::E, nb = cols / 32;
    for (int64_t ch = t; ch < chunks; ch += lpr) {
        int64_t b = ch / D::CPB;
        int c = (int)(ch % D::CPB);
#pragma unroll
        for (int g = 0; g < D::G; g++) {
            qgroup w[R];
#pragma unroll
            for (int r = 0; r < R; r++) D::group(wr[r] + (size_t)b * D::BB, c, g, w[r]);
            int64_t e = b * D::QK + D::xoff(c, g);
#pragma unroll
            for (int j = 0; j < NC; j++) {
                if (j >= n) break;
                const int4 a0 = __ldg((const int4 *)(xq + j * cols + e)), a1 = __ldg((const int4 *)(xq + j * cols + e + 16));
                const int x[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
                const float dx = __ldg(xd + j * nb + e / 32);
                int xs0 = 0, xs1 = 0;
                if (D::OFF)
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        xs0 = __dp4a(x[k], 0x01010101, xs0);
                        xs1 = __dp4a(x[k + 4], 0x01010101, xs1);
                    }
#pragma unroll
                for (int r = 0; r < R; r++) acc[r][j] = __fmaf_rn(dx, qdot<D::OFF>(w[r], x, xs0, xs1), acc[r][j]);
            }
        }
    }
    mv_reduce_groups<NC, R, MQ_THREADS / 32>(acc, out, rows, row0, lpr, n);
}

/* Rows [row0, row0 + nrows) of W dequantized to F16, dst[nrows][cols], at close to copy speed: a thread
 * decodes one group of 32 (qdecode.h); the 32 groups of a warp are whole blocks, so they cover 1024
 * consecutive halves of dst, which the warp stages in shared memory and stores as 16-byte vectors, each
 * lane's contiguous to its neighbour's (a thread storing its own group directly wrote 32 scattered 64-byte
 * pieces per warp instruction: the uncoalesced stores that made n > 16 products 15-30x one row). */
#define DQ_THREADS 256

template <int T>
__global__ void __launch_bounds__(DQ_THREADS) k_dequant_f16(const uint8_t *W, int64_t cols, size_t row_bytes,
                                                            int64_t row0, int64_t nrows, __half *dst) {
    using D = qdec<T>;
    static_assert(32 % (D::QK / 32) == 0, "a warp's 32 groups must be whole blocks");
    __shared__ uint4 st[DQ_THREADS / 32][128]; /* 1024 halves per warp */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t per_row = cols / 32, total = nrows * per_row;
    int64_t g0 = ((int64_t)blockIdx.x * (DQ_THREADS / 32) + warp) * 32, i = g0 + lane;
    if (g0 >= total) return; /* whole warps leave together */
    if (i < total) {
        int64_t r = i / per_row, gi = i % per_row, ch = gi / D::G, b = ch / D::CPB;
        int c = (int)(ch % D::CPB), g = (int)(gi % D::G);
        qgroup w;
        D::group(W + (size_t)(row0 + r) * row_bytes + (size_t)b * D::BB, c, g, w);
        /* where the group lands in the warp's 1024 halves: its row and element offset, less the warp's start */
        int64_t at = r * cols + b * D::QK + D::xoff(c, g) - g0 * 32;
        uint4 *o = &st[warp][at / 8];
#pragma unroll
        for (int v = 0; v < 4; v++) {
            __half2 h[4];
#pragma unroll
            for (int k2 = 0; k2 < 4; k2++) {
                int k = 8 * v + 2 * k2;
                float q0 = (float)(int8_t)(w.q[k / 4] >> 8 * (k % 4) & 0xff),
                      q1 = (float)(int8_t)(w.q[k / 4] >> 8 * (k % 4 + 1) & 0xff);
                float sc = w.sc[k / 16], off = w.off[k / 16];
                h[k2] = __floats2half2_rn(sc * q0 + off, sc * q1 + off);
            }
            o[v] = *(const uint4 *)h;
        }
    }
    __syncwarp();
    int64_t vecs = (total - g0 < 32 ? total - g0 : 32) * 4; /* 16-byte vectors the warp's groups fill */
    uint4 *out = (uint4 *)(dst + g0 * 32);
    for (int k = lane; k < vecs; k += 32) out[k] = st[warp][k];
}

/* Repacked Q8_0 (cuda_internal.h) rows [row0, row0 + nrows) to F16, dst[nrows][cols]: a thread per 8
 * consecutive weights (an 8-byte load, a 16-byte store). */
__global__ void __launch_bounds__(DQ_THREADS) k_dequant_q8_f16(const int8_t *Q, const __half *S, int64_t cols,
                                                               int64_t row0, int64_t nrows, __half *dst) {
    int64_t i = (int64_t)blockIdx.x * DQ_THREADS + threadIdx.x, e = i * 8; /* element in the tile */
    if (e >= nrows * cols) return;
    int64_t el = row0 * cols + e; /* element in the matrix */
    float d = __half2float(S[el / 32]);
    int2 raw = __ldg((const int2 *)(Q + el));
    const int8_t *q = (const int8_t *)&raw;
    __half2 h[4];
#pragma unroll
    for (int k = 0; k < 4; k++) h[k] = __floats2half2_rn(d * (float)q[2 * k], d * (float)q[2 * k + 1]);
    *(uint4 *)(dst + e) = *(const uint4 *)h;
}

/* Lanes per row group: a power of two from 32 to MQ_THREADS, at most the row's chunks where it has 32+. */
static int lanes_per_row(int64_t chunks) {
    int lpr = 32;
    while (lpr < MQ_THREADS && 2 * lpr <= chunks) lpr *= 2;
    return lpr;
}

template <int T, int NC>
static void launch_mv_q(cuda_ctx *c, float *out, const sd_tensor *w, const int8_t *xq, const float *xd, int n) {
    constexpr int R = mv_rows<NC>::R;
    int lpr = lanes_per_row(w->cols / qdec<T>::E);
    int64_t rows_per_block = (int64_t)(MQ_THREADS / lpr) * R;
    dim3 grid((unsigned)((w->rows + rows_per_block - 1) / rows_per_block)), block(MQ_THREADS);
    mv_q<T, NC><<<grid, block, 0, c->stream>>>((const uint8_t *)w->data, w->rows, w->cols,
                                               sd_dtype_row_bytes(T, w->cols), lpr, xq, xd, n, out);
    CUDA_LAUNCHED(c, "matmul (quantized)");
}

/* Weights in F16 per tile: at most this many elements (64 MiB), so a large output matrix needs no
 * F16 copy of its own. */
#define DEQ_TILE_ELEMS ((int64_t)1 << 25)

static __half *deq_buffer(cuda_ctx *c, size_t bytes) {
    if (bytes > c->deq_bytes) {
        if (c->deq) cudaFree(c->deq);
        c->bytes_work -= c->deq_bytes;
        c->deq = NULL;
        c->deq_bytes = 0;
        if (cudaMalloc(&c->deq, bytes) != cudaSuccess) {
            cudaGetLastError();
            cuda_fail(c, cudaErrorMemoryAllocation, "F16 tile of dequantized weights", __FILE__, __LINE__);
            return NULL;
        }
        c->deq_bytes = bytes;
        c->bytes_work += bytes;
    }
    return (__half *)c->deq;
}

/* Rows [r0, r0 + m) of w to F16 in d (one launch). */
template <int T>
static bool dequant_tile(cuda_ctx *c, const sd_tensor *w, int64_t r0, int64_t m, __half *d) {
    if constexpr (T == SD_Q8_0) {
        const int8_t *q = (const int8_t *)w->data;
        const __half *s = (const __half *)((const char *)w->data + q8_repacked_scales_offset(w->rows, w->cols));
        int64_t vecs = m * w->cols / 8;
        k_dequant_q8_f16<<<(unsigned)((vecs + DQ_THREADS - 1) / DQ_THREADS), DQ_THREADS, 0, c->stream>>>(
            q, s, w->cols, r0, m, d);
    } else {
        int64_t groups = m * (w->cols / 32), per_block = DQ_THREADS; /* a group per thread */
        k_dequant_f16<T><<<(unsigned)((groups + per_block - 1) / per_block), DQ_THREADS, 0, c->stream>>>(
            (const uint8_t *)w->data, w->cols, sd_dtype_row_bytes(T, w->cols), r0, m, d);
    }
    return CUDA_LAUNCHED(c, "dequantize to f16");
}

template <int T>
static void gemm_dequant(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    int64_t tile = DEQ_TILE_ELEMS / w->cols < w->rows ? DEQ_TILE_ELEMS / w->cols : w->rows;
    if (tile < 1) tile = 1;
    __half *d = deq_buffer(c, (size_t)tile * (size_t)w->cols * 2);
    const void *xs = d ? cuda_gemm_f16_input(c, x, n, w->cols) : NULL;
    if (!xs) return;
    for (int64_t r0 = 0; r0 < w->rows; r0 += tile) {
        int64_t m = w->rows - r0 < tile ? w->rows - r0 : tile;
        if (!dequant_tile<T>(c, w, r0, m, d)) return;
        cuda_gemm_f16(c, out + r0, w->rows, d, m, w->cols, xs, n);
    }
}

template <int T>
static void matmul_type(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    if (n > MV_MAX_N) {
        gemm_dequant<T>(c, out, w, x, n);
        return;
    }
    if (!cuda_q8_act(c, x, n, w->cols)) return;
    if (n == 1) launch_mv_q<T, 1>(c, out, w, c->q8_x, c->q8_d, n);
    else if (n == 2) launch_mv_q<T, 2>(c, out, w, c->q8_x, c->q8_d, n);
    else if (n <= 4) launch_mv_q<T, 4>(c, out, w, c->q8_x, c->q8_d, n);
    else if (n <= 8) launch_mv_q<T, 8>(c, out, w, c->q8_x, c->q8_d, n);
    else launch_mv_q<T, 16>(c, out, w, c->q8_x, c->q8_d, n);
}

bool cuda_matmul_quant(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    int type = w->data_type;
    if (type == SD_Q8_0) { /* n <= MV_MAX_N: matmul.cu's dp4a kernel */
        if (n <= MV_MAX_N || w->cols % 32) return false;
        gemm_dequant<SD_Q8_0>(c, out, w, x, n);
        return true;
    }
    if (!sd_quant_block(type) || w->cols % sd_quant_block(type)) return false;
    if (n <= MV_MAX_N && (w->cols > c->q8_cols || !c->q8_x)) {
        cuda_fail(c, cudaErrorInvalidValue, "quantized matmul: activation buffers not sized for these weights",
                  __FILE__, __LINE__);
        return true;
    }
    switch (type) {
    case SD_Q4_0: matmul_type<SD_Q4_0>(c, out, w, x, n); break;
    case SD_Q4_1: matmul_type<SD_Q4_1>(c, out, w, x, n); break;
    case SD_Q5_0: matmul_type<SD_Q5_0>(c, out, w, x, n); break;
    case SD_Q5_1: matmul_type<SD_Q5_1>(c, out, w, x, n); break;
    case SD_Q2_K: matmul_type<SD_Q2_K>(c, out, w, x, n); break;
    case SD_Q3_K: matmul_type<SD_Q3_K>(c, out, w, x, n); break;
    case SD_Q4_K: matmul_type<SD_Q4_K>(c, out, w, x, n); break;
    case SD_Q5_K: matmul_type<SD_Q5_K>(c, out, w, x, n); break;
    case SD_Q6_K: matmul_type<SD_Q6_K>(c, out, w, x, n); break;
    case SD_IQ4_NL: matmul_type<SD_IQ4_NL>(c, out, w, x, n); break;
    case SD_IQ4_XS: matmul_type<SD_IQ4_XS>(c, out, w, x, n); break;
    default: return false;
    }
    return true;
}
