/* Tensor-core matrix products for 1..64 rows of activations (decode, verify blocks, batches) with F16 or
 * BF16 weights: out[n][rows] = x[n][cols] · Wᵀ, the weights read once for all n rows.
 *
 * Not the default (SPECD_CUDA_TC=1 turns it on): measured on an H200 (docs/benchmarks.md) it streams one row
 * at 68-82% of the copy bandwidth where the F32 matrix-vector kernels reach 86-99%, and it is not yet faster
 * than them up to 16 rows nor than cuBLAS past that. It is correct (test_cuda passes with it, rows bitwise
 * equal up to 40) and is the starting point for batches of many requests (issue "The batch is the unit of
 * work", §7): what it lacks is more bytes in flight per warp and x shared between warps.
 *
 * mma.sync m16n8k8 in TF32 with F32 accumulation: a 16-row weight tile (A, row-major) times 8 activation
 * vectors (B). F16 and BF16 weights are exact in TF32 (10- and 7-bit mantissas, TF32's 8-bit exponent), so
 * only x is rounded, to 11 significant bits, with F32's range: no overflow for large activations (which F16
 * activations would have). Every output element is its own column of the product, so an n-row call gives
 * bitwise the rows of n one-row calls (a verify block computes what single decode steps would).
 *
 * Loads without shared memory: the k order inside a tile is free as long as A and B agree, so lane (g, t)
 * (g = lane / 4, t = lane % 4) takes 32 consecutive columns [c0 + 32t, c0 + 32t + 32) of weight rows g and
 * g + 8 (four 16-byte loads each) and the same 32 columns of its activation vectors; k-step s (0..15) of the
 * 128 columns uses columns 32t + 2s (as k = t) and 32t + 2s + 1 (as k = t + 4). The 4 lanes of a row read
 * 256 contiguous bytes. A block's TC_WARPS warps split the columns; their tiles meet in shared memory. */
#include "kernels/cuda/cuda_internal.h"

#define TC_WARPS 8

__device__ __forceinline__ uint32_t to_tf32(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
    return r;
#else /* round to nearest, ties away: keep 10 mantissa bits */
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
    return u;
#endif
}

/* c (16 x 8, F32) += a (16 x 8, TF32) · b (8 x 8, TF32) in the m16n8k8 fragment layout: a0 (g, t), a1 (g+8, t),
 * a2 (g, t+4), a3 (g+8, t+4); b0 (k t, n g), b1 (k t+4, n g); c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t),
 * c3 (g+8, 2t+1). Without the instruction (the CPU emulation), the same sums through warp shuffles. */
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    for (int k = 0; k < 8; k++) {
        int src = g * 4 + (k & 3);
        float r0 = __uint_as_float(__shfl_sync(0xffffffffu, k < 4 ? a[0] : a[2], src));
        float r1 = __uint_as_float(__shfl_sync(0xffffffffu, k < 4 ? a[1] : a[3], src));
        float b0 = __uint_as_float(__shfl_sync(0xffffffffu, k < 4 ? b[0] : b[1], (2 * t) * 4 + (k & 3)));
        float b1 = __uint_as_float(__shfl_sync(0xffffffffu, k < 4 ? b[0] : b[1], (2 * t + 1) * 4 + (k & 3)));
        c[0] += r0 * b0;
        c[1] += r0 * b1;
        c[2] += r1 * b0;
        c[3] += r1 * b1;
    }
#endif
}

__device__ __forceinline__ float half_bits_to_float(uint16_t h, bool bf16) {
    return bf16 ? __uint_as_float((uint32_t)h << 16) : __half2float(__ushort_as_half(h));
}

/* NT tiles of 8 activation vectors (n <= 8 NT); block: 16 weight rows x all columns, TC_WARPS warps. */
template <int NT>
__global__ void __launch_bounds__(TC_WARPS * 32) mv_tc(const uint16_t *W, bool bf16, int64_t rows, int64_t cols,
                                                       const float *x, int n, float *out) {
    __shared__ float part[TC_WARPS][16][8 * NT + 1];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int64_t row0 = (int64_t)blockIdx.x * 16;
    const uint16_t *w0 = W + min(row0 + g, rows - 1) * cols, *w1 = W + min(row0 + g + 8, rows - 1) * cols;
    float c[NT][4] = {};
    for (int64_t cb = (int64_t)warp * 128; cb < cols; cb += TC_WARPS * 128) {
        int64_t col = cb + 32 * t;
        uint4 ra[4], rb[4];
#pragma unroll
        for (int v = 0; v < 4; v++) {
            ra[v] = __ldg((const uint4 *)(w0 + col) + v);
            rb[v] = __ldg((const uint4 *)(w1 + col) + v);
        }
        const uint16_t *ha = (const uint16_t *)ra, *hb = (const uint16_t *)rb;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            int j = nt * 8 + g; /* this lane's activation vector */
            float xv[32];
#pragma unroll
            for (int v = 0; v < 8; v++) {
                float4 p = j < n ? __ldg((const float4 *)(x + (int64_t)j * cols + col) + v) : make_float4(0, 0, 0, 0);
                xv[4 * v] = p.x; xv[4 * v + 1] = p.y; xv[4 * v + 2] = p.z; xv[4 * v + 3] = p.w;
            }
#pragma unroll
            for (int s = 0; s < 16; s++) {
                const uint32_t a[4] = {__float_as_uint(half_bits_to_float(ha[2 * s], bf16)),
                                       __float_as_uint(half_bits_to_float(hb[2 * s], bf16)),
                                       __float_as_uint(half_bits_to_float(ha[2 * s + 1], bf16)),
                                       __float_as_uint(half_bits_to_float(hb[2 * s + 1], bf16))};
                const uint32_t b[2] = {to_tf32(xv[2 * s]), to_tf32(xv[2 * s + 1])};
                mma_tf32(c[nt], a, b);
            }
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        part[warp][g][nt * 8 + 2 * t] = c[nt][0];
        part[warp][g][nt * 8 + 2 * t + 1] = c[nt][1];
        part[warp][g + 8][nt * 8 + 2 * t] = c[nt][2];
        part[warp][g + 8][nt * 8 + 2 * t + 1] = c[nt][3];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * n; i += blockDim.x) {
        int r = i % 16, j = i / 16;
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < TC_WARPS; w++) s += part[w][r][j];
        if (row0 + r < rows) out[(int64_t)j * rows + row0 + r] = s;
    }
}

/* The tensor-core product when it applies (F16/BF16 weights, cols a multiple of 128, aligned, n <= 64);
 * false otherwise (the caller uses the other kernels). */
bool cuda_matmul_tc(cuda_ctx *c, float *out, const sd_tensor *w, const float *x, int n) {
    if ((w->data_type != SD_F16 && w->data_type != SD_BF16) || w->cols % 128 || n < 1 || n > TC_MAX_N ||
        (uintptr_t)x % 16 || (uintptr_t)w->data % 16)
        return false;
    bool bf16 = w->data_type == SD_BF16;
    dim3 grid((unsigned)((w->rows + 15) / 16)), block(TC_WARPS * 32);
    const uint16_t *W = (const uint16_t *)w->data;
    switch ((n + 7) / 8) {
    case 1: mv_tc<1><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    case 2: mv_tc<2><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    case 3: mv_tc<3><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    case 4: mv_tc<4><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    case 5: mv_tc<5><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    case 6: mv_tc<6><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    case 7: mv_tc<7><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    default: mv_tc<8><<<grid, block, 0, c->stream>>>(W, bf16, w->rows, w->cols, x, n, out); break;
    }
    CUDA_LAUNCHED(c, "matmul (tensor cores)");
    return true;
}
