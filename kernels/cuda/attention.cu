/* Causal attention over the KV cache for 1..k+1 queries, GQA. One block per (query, head); each warp
 * walks a strided share of the positions keeping an online softmax (running max, sum, weighted V), and the
 * warps' partial results are merged at the end, so no score buffer of context length is needed. */
#include <math.h>
#include <stdio.h>

#include "kernels/cuda/cuda_internal.h"

#define ATT_WARPS 4
#define ATT_MAX_PER_LANE 8 /* head_dim <= 256 */

__global__ void k_attention(float *out, const float *q, const float *kc, const float *vc, int pos0,
                            const int *pos_dev, int n_heads, int n_kv_heads, int head_dim, int kv_dim) {
    if (pos_dev) pos0 = *pos_dev;
    int t = blockIdx.y, h = blockIdx.x;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int kvh = h / (n_heads / n_kv_heads);
    int per_lane = (head_dim + 31) / 32;
    int last = pos0 + t; /* attends positions 0..last */
    float scale = rsqrtf((float)head_dim);
    const float *qh = q + ((size_t)t * n_heads + h) * head_dim;

    float qv[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
    for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
        int d = lane + 32 * i;
        qv[i] = (i < per_lane && d < head_dim) ? qh[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int p = warp; p <= last; p += ATT_WARPS) {
        const float *kr = kc + (size_t)p * kv_dim + (size_t)kvh * head_dim;
        const float *vr = vc + (size_t)p * kv_dim + (size_t)kvh * head_dim;
        float s = 0.0f;
        for (int i = 0; i < per_lane; i++) {
            int d = lane + 32 * i;
            if (d < head_dim) s += qv[i] * kr[d];
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        float m_new = fmaxf(m, s);
        float corr = __expf(m - m_new), e = __expf(s - m_new);
        l = l * corr + e;
        for (int i = 0; i < per_lane; i++) {
            int d = lane + 32 * i;
            acc[i] = acc[i] * corr + (d < head_dim ? e * vr[d] : 0.0f);
        }
        m = m_new;
    }
    /* merge the warps */
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][ATT_MAX_PER_LANE * 32];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
    for (int i = 0; i < per_lane; i++) sacc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp == 0) {
        float M = -INFINITY;
        for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[w]);
        float L = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (sl[w] > 0.0f) L += sl[w] * __expf(sm[w] - M);
        float *oh = out + ((size_t)t * n_heads + h) * head_dim;
        for (int i = 0; i < per_lane; i++) {
            int d = lane + 32 * i;
            if (d >= head_dim) continue;
            float v = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++)
                if (sl[w] > 0.0f) v += sacc[w][d] * __expf(sm[w] - M);
            oh[d] = v / L;
        }
    }
}

void cuda_attention(cuda_ctx *c, float *out, const float *q, const float *kcache, const float *vcache, int pos0,
                    int n, int n_heads, int n_kv_heads, int head_dim, int kv_dim) {
    if (head_dim > ATT_MAX_PER_LANE * 32) {
        fprintf(stderr, "specd: cuda: head_dim %d above the attention kernel's limit %d\n", head_dim,
                ATT_MAX_PER_LANE * 32);
        return;
    }
    dim3 grid((unsigned)n_heads, (unsigned)n);
    k_attention<<<grid, ATT_WARPS * 32, 0, c->stream>>>(out, q, kcache, vcache, pos0, step_pos(c), n_heads, n_kv_heads,
                                                        head_dim, kv_dim);
}
