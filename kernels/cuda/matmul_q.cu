/* Matrix products with weights in GGML's quantized types beyond Q8_0 (Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K,
 * IQ4_NL, IQ4_XS; kernels/quant_k.h), for any number of rows: out[n][rows] = x[n][cols] · Wᵀ.
 *
 * The weights stay in the file's blocks on the device. A block of MQ_WARPS warps takes one weight row; each
 * lane takes whole blocks, unpacks one with the code the CPU uses (sd_unpack_block: int8 levels, a scale and
 * an offset per 16) and multiplies it with the F32 activations of up to MV_MAX_N rows, so the weights are
 * read once per MV_MAX_N rows. Neighbouring lanes take neighbouring blocks: a warp reads contiguous bytes.
 * A first version for correctness (the unpacked block lives in local memory); the fast path would unpack
 * per group of 32 in registers and use dp4a on quantized activations as the Q8_0 kernel does. */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/quant_k.h"

#define MQ_WARPS 4

/* NC: rows of x the kernel holds accumulators for; n <= NC of them exist. */
template <int NC>
__global__ void __launch_bounds__(MQ_WARPS * 32) mv_quant(const uint8_t *W, int type, int64_t rows, int64_t cols,
                                                          size_t row_bytes, const float *x, int n, float *out) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row = blockIdx.x;
    int qk = sd_quant_block(type), bb = sd_quant_block_bytes(type);
    const uint8_t *wr = W + (size_t)row * row_bytes;
    float acc[NC] = {};
    for (int64_t b = (int64_t)warp * 32 + lane; b < cols / qk; b += MQ_WARPS * 32) {
        sd_qunpacked u;
        sd_unpack_block(type, wr + (size_t)b * bb, &u);
        for (int i = 0; i < qk; i++) {
            float w = u.sc[i / 16] * (float)u.q[i] + u.off[i / 16];
#pragma unroll
            for (int j = 0; j < NC; j++)
                if (j < n) acc[j] += w * __ldg(x + (int64_t)j * cols + b * qk + i);
        }
    }
    __shared__ float part[MQ_WARPS][NC];
#pragma unroll
    for (int j = 0; j < NC; j++) {
        float s = acc[j];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) part[warp][j] = s;
    }
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < MQ_WARPS; w++) s += part[w][j];
        out[(int64_t)j * rows + row] = s;
    }
}

bool cuda_matmul_quant(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    int type = w->data_type;
    if (type == SD_Q8_0 || !sd_quant_block(type) || w->cols % sd_quant_block(type)) return false;
    size_t rb = sd_dtype_row_bytes(type, w->cols);
    const uint8_t *W = (const uint8_t *)w->data;
    for (int i = 0; i < n; i += MV_MAX_N) {
        int m = n - i < MV_MAX_N ? n - i : MV_MAX_N;
        const float *xi = x + (size_t)i * w->cols;
        float *oi = out + (size_t)i * w->rows;
        dim3 grid((unsigned)w->rows), block(MQ_WARPS * 32);
        if (m == 1) mv_quant<1><<<grid, block, 0, c->stream>>>(W, type, w->rows, w->cols, rb, xi, m, oi);
        else if (m <= 4) mv_quant<4><<<grid, block, 0, c->stream>>>(W, type, w->rows, w->cols, rb, xi, m, oi);
        else mv_quant<16><<<grid, block, 0, c->stream>>>(W, type, w->rows, w->cols, rb, xi, m, oi);
        if (!CUDA_LAUNCHED(c, "matmul (quantized)")) break;
    }
    return true;
}
