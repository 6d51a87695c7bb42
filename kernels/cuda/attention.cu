/* Causal attention over the KV cache for 1..k+1 queries, GQA, with two paths:
 *
 *  - Single pass (short contexts, many queries): one block per (query, head); each of ATT_WARPS warps walks
 *    a strided share of the positions keeping an online softmax (running max, sum, weighted V), and the
 *    warps' states are merged at the end, so no score buffer of context length is needed.
 *  - Tiled (prefill, more queries than a step holds): see k_attention_tiled.
 *  - Split over the sequence ("flash decoding"; long contexts, few queries): one block per (query, head)
 *    is far too few to fill a GPU (32 heads x 1 query = 32 blocks on 132 SMs) and each reads the whole
 *    context serially. The positions are cut into chunks; one warp per (query, head, chunk) computes the
 *    chunk's partial state into a workspace, and a second kernel merges each (query, head)'s partials.
 *
 * Both keep and merge states with the helpers of kernels/softmax.h (shared with, and tested on, the CPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.h"
#include "kernels/softmax.h"

#define ATT_WARPS 4
#define ATT_MAX_PER_LANE 8 /* head_dim <= 256 */
#define ATT_MAX_HEAD_DIM (ATT_MAX_PER_LANE * 32)

/* Split path tuning. None of these was measured yet (no GPU where this was written); the reasoning:
 *  - ATT_SPLIT_MIN_SPAN: below it the single-pass kernel's warps each walk at most 128 positions, about
 *    as long as the split path's second launch and the partials' round trip through memory cost.
 *  - ATT_SPLIT_MAX_N: more queries than a step graph holds (prefill) already give n * heads blocks.
 *  - chunks of at least ATT_CHUNK_MIN positions, so a partial's write (head_dim + 2 floats) stays small
 *    next to the chunk's K/V reads; at most ATT_MAX_CHUNKS, which bounds the merge's serial loop and
 *    still gives 64 x heads warps per query.
 *  - ATT_BATCH: positions whose K (then V) rows a warp loads before it uses any, so a warp keeps several
 *    loads in flight instead of waiting out the memory latency once per position. */
#define ATT_SPLIT_MIN_SPAN 512
#define ATT_SPLIT_MAX_N SD_CUDA_STEP_MAX
#define ATT_CHUNK_MIN 64
#define ATT_MAX_CHUNKS 64
#define ATT_BATCH 8
/* The partials' workspace, allocated once with the backend and never moved: a recorded step graph keeps
 * its address, so growing it (a new allocation) would leave recorded graphs writing to freed memory.
 * 16 MiB holds 64 chunks of 8 queries x 32 heads x head_dim 128 (8.5 MiB); larger shapes get fewer,
 * longer chunks (split_plan). */
#define ATT_WS_BYTES ((size_t)16 << 20)

/* K/V elements as float: F32 caches as they are, F16 ones converted exactly (--kv-type). */
__device__ __forceinline__ float kv_f(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float kv_f(const __half *p, size_t i) { return __half2float(p[i]); }

/* Row of position p of a sequence (block table tab) in a layer of the pool. */
__device__ __forceinline__ size_t kv_row(const int32_t *tab, int p) {
    return (size_t)tab[p / SD_KV_BLOCK] * SD_KV_BLOCK + (size_t)(p % SD_KV_BLOCK);
}

/* The pass's row descriptors (kv_spans): rows[2 t] = row t's position, rows[2 t + 1] = the offset of its
 * sequence's block table in tabs. */
template <typename T>
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attention(float *out, const float *q, const T *kc, const T *vc,
                                                              const int *rows, const int32_t *tabs, int row0,
                                                              int n_heads, int n_kv_heads, int head_dim, int kv_dim) {
    int t = row0 + (int)blockIdx.y, h = blockIdx.x;
    int pos0 = rows[2 * t];
    const int32_t *tab = tabs + rows[2 * t + 1];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int kvh = h / (n_heads / n_kv_heads);
    int per_lane = (head_dim + 31) / 32;
    int last = pos0; /* attends positions 0..last */
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
        const T *kr = kc + kv_row(tab, p) * kv_dim + (size_t)kvh * head_dim;
        const T *vr = vc + kv_row(tab, p) * kv_dim + (size_t)kvh * head_dim;
        float s = 0.0f;
        for (int i = 0; i < per_lane; i++) {
            int d = lane + 32 * i;
            if (d < head_dim) s += qv[i] * kv_f(kr, d);
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        float m_new = fmaxf(m, s);
        float corr = __expf(m - m_new), e = __expf(s - m_new);
        l = l * corr + e;
        for (int i = 0; i < per_lane; i++) {
            int d = lane + 32 * i;
            acc[i] = acc[i] * corr + (d < head_dim ? e * kv_f(vr, d) : 0.0f);
        }
        m = m_new;
    }
    /* merge the warps' states (a warp that saw no position holds the empty state) */
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][ATT_MAX_PER_LANE * 32];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
    for (int i = 0; i < per_lane; i++) sacc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp == 0) {
        float M = -INFINITY, L = 0.0f, v[ATT_MAX_PER_LANE];
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; i++) v[i] = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) {
            float f1, f2;
            sd_softmax_merge(&M, &L, sm[w], sl[w], &f1, &f2);
#pragma unroll
            for (int i = 0; i < ATT_MAX_PER_LANE; i++)
                if (i < per_lane)
                    v[i] = sd_softmax_scaled(f1, v[i]) + sd_softmax_scaled(f2, sacc[w][lane + 32 * i]);
        }
        float *oh = out + ((size_t)t * n_heads + h) * head_dim;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
            int d = lane + 32 * i;
            if (i < per_lane && d < head_dim) oh[d] = v[i] / L;
        }
    }
}

/* Chunk length for `len` live positions over a grid of n_chunks chunks. The grid comes from the cache
 * capacity while stepping (a recorded graph replays it at every position); the length comes from the live
 * sequence on the device, so a 131072-position cache at position 300 walks 64-position chunks (five of
 * them busy, the rest empty and gone at once) instead of 2048-position ones. */
__device__ __forceinline__ int live_chunk(int len, int n_chunks) {
    int c = (len + n_chunks - 1) / n_chunks;
    return c < ATT_CHUNK_MIN ? ATT_CHUNK_MIN : c;
}

/* Split path, first kernel: the partial state of one chunk of positions for one (query, head), one warp
 * each. Warps are numbered (chunk, head of the group) with the head fastest, so when a group has
 * ATT_WARPS or more query heads a block's warps read the same K/V rows at about the same time (the
 * group's K/V come from memory once, then L1); smaller groups get consecutive chunks of one head.
 * Slot (t, h, c) of the workspace holds (m, l) in ml and head_dim floats of acc. A chunk past the query's
 * last position writes the empty state (l = 0, acc = 0). No block barriers: warps exit freely. */
template <typename T>
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attention_part(float2 *ml, float *accs, const float *q, const T *kc,
                                                                   const T *vc, const int *rows, const int32_t *tabs,
                                                                   int n_heads, int group, int head_dim, int kv_dim,
                                                                   int n_chunks) {
    int t = blockIdx.z, pos = rows[2 * t];
    const int32_t *tab = tabs + rows[2 * t + 1];
    int chunk = live_chunk(pos + 1, n_chunks);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int task = blockIdx.x * ATT_WARPS + warp;
    if (task >= n_chunks * group) return;
    int c = task / group, kvh = blockIdx.y, h = kvh * group + task % group;
    int p0 = c * chunk, p1 = min(p0 + chunk, pos + 1); /* this chunk's positions [p0, p1) */
    int per_lane = (head_dim + 31) / 32;
    float scale = rsqrtf((float)head_dim);
    const float *qh = q + ((size_t)t * n_heads + h) * head_dim;
    const T *kb = kc + (size_t)kvh * head_dim, *vb = vc + (size_t)kvh * head_dim;

    float qv[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
        int d = lane + 32 * i;
        qv[i] = (i < per_lane && d < head_dim) ? qh[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int p = p0; p < p1; p += ATT_BATCH) {
        /* scores of a batch (conditions on p + u are the same for the whole warp) */
        float s[ATT_BATCH];
#pragma unroll
        for (int u = 0; u < ATT_BATCH; u++) {
            s[u] = 0.0f;
            if (p + u >= p1) continue;
            const T *kr = kb + kv_row(tab, p + u) * kv_dim;
#pragma unroll
            for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
                int d = lane + 32 * i;
                if (i < per_lane && d < head_dim) s[u] += qv[i] * kv_f(kr, d);
            }
        }
        float bm = -INFINITY;
#pragma unroll
        for (int u = 0; u < ATT_BATCH; u++) {
            for (int o = 16; o > 0; o >>= 1) s[u] += __shfl_xor_sync(0xffffffffu, s[u], o);
            if (p + u < p1) bm = fmaxf(bm, s[u]);
        }
        if (bm > m) { /* move the state to the batch's larger max, as the CPU attention does */
            float r = sd_softmax_rescale(m, bm);
            l *= r;
#pragma unroll
            for (int i = 0; i < ATT_MAX_PER_LANE; i++) acc[i] *= r;
            m = bm;
        }
#pragma unroll
        for (int u = 0; u < ATT_BATCH; u++) {
            if (p + u >= p1) continue;
            float e = __expf(s[u] - m);
            const T *vr = vb + kv_row(tab, p + u) * kv_dim;
            l += e;
#pragma unroll
            for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
                int d = lane + 32 * i;
                if (i < per_lane && d < head_dim) acc[i] += e * kv_f(vr, d);
            }
        }
    }
    size_t slot = ((size_t)t * n_heads + h) * n_chunks + c;
    if (lane == 0) ml[slot] = make_float2(m, l);
    float *a = accs + slot * head_dim;
#pragma unroll
    for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
        int d = lane + 32 * i;
        if (i < per_lane && d < head_dim) a[d] = acc[i];
    }
}

/* Split path, second kernel: one block per (head, query), a thread per output element, merging the
 * partials of the chunks that hold the row's positions (the later ones are empty). */
__global__ void __launch_bounds__(ATT_MAX_HEAD_DIM) k_attention_merge(float *out, const float2 *ml, const float *accs,
                                                                      const int *rows, int n_heads, int head_dim,
                                                                      int n_chunks) {
    int h = blockIdx.x, t = blockIdx.y, pos = rows[2 * t];
    int chunk = live_chunk(pos + 1, n_chunks);
    int used = min(pos / chunk + 1, n_chunks);
    size_t slot0 = ((size_t)t * n_heads + h) * n_chunks;
    float *oh = out + ((size_t)t * n_heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float m = -INFINITY, l = 0.0f, a = 0.0f;
        for (int c = 0; c < used; c++) {
            float2 s = ml[slot0 + c];
            float f1, f2;
            sd_softmax_merge(&m, &l, s.x, s.y, &f1, &f2);
            a = sd_softmax_scaled(f1, a) + sd_softmax_scaled(f2, accs[(slot0 + c) * head_dim + d]);
        }
        oh[d] = a / l; /* chunk 0 always holds position 0, so l > 0 */
    }
}

/* Prefill (more queries than a step holds): tiles. A block takes ATT_TQ consecutive queries of one head
 * (ATT_TQ / ATT_WARPS per warp) and walks the K/V positions they need in tiles of ATT_TK, staged in shared
 * memory once for all its queries: K/V are read from memory once per ATT_TQ queries instead of once per
 * query, and each position's score is one lane's dot product instead of a warp-wide reduction.
 * Dynamic shared memory: Q [ATT_TQ][hd], K [ATT_TK][hd + 1] (the pad keeps lanes on distinct banks), V
 * [ATT_TK][hd]. Lane j scores position p0 + j; lane-owned dims (lane + 32 i) accumulate V. */
#define ATT_TQ 16
#define ATT_TK 32

static size_t tiled_smem(int hd) { return sizeof(float) * ((size_t)ATT_TQ * hd + (size_t)ATT_TK * (hd + 1) + (size_t)ATT_TK * hd); }

/* Stages a tile of K and V rows (srow: their offsets, -1 for none) as floats, 16-byte loads: the rows' offsets
 * are looked up once per tile (srow), and each thread issues ATT_STAGE_V independent loads before it stores
 * any. (Staging element by element, each load behind its block-table lookup, kept one load in flight per
 * thread: on the H200 the tiled kernel took 90% of a prefill pass, 2.3 ms a layer at 2000 positions.) */
#define ATT_STAGE_V 8

__device__ __forceinline__ void unpack16(float (&f)[8], const uint4 &r, const float *) {
    const float *p = (const float *)&r;
    f[0] = p[0]; f[1] = p[1]; f[2] = p[2]; f[3] = p[3];
}
__device__ __forceinline__ void unpack16(float (&f)[8], const uint4 &r, const __half *) {
    const __half2 *h = (const __half2 *)&r;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 v = __half22float2(h[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

template <typename T>
__device__ __forceinline__ void stage_tile_vec(float *Ks, float *Vs, const T *kc, const T *vc, const int64_t *srow,
                                               int head_dim) {
    constexpr int VE = 16 / sizeof(T); /* elements per load */
    int vpr = head_dim / VE, nvec = ATT_TK * vpr; /* loads per row, per K (and per V) */
    for (int base = 0; base < 2 * nvec; base += ATT_STAGE_V * ATT_WARPS * 32) {
        uint4 r[ATT_STAGE_V];
#pragma unroll
        for (int u = 0; u < ATT_STAGE_V; u++) {
            int v = base + u * ATT_WARPS * 32 + threadIdx.x, isv = v >= nvec, w = v - isv * nvec;
            int64_t off = v < 2 * nvec ? srow[w / vpr] : -1;
            r[u] = off >= 0 ? __ldg((const uint4 *)((isv ? vc : kc) + off) + w % vpr) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < ATT_STAGE_V; u++) {
            int v = base + u * ATT_WARPS * 32 + threadIdx.x, isv = v >= nvec, w = v - isv * nvec;
            if (v >= 2 * nvec) break;
            int j = w / vpr, d = (w % vpr) * VE;
            float f[8];
            unpack16(f, r[u], kc);
            float *dst = isv ? Vs + j * head_dim + d : Ks + j * (head_dim + 1) + d;
#pragma unroll
            for (int e = 0; e < VE; e++) dst[e] = f[e];
        }
    }
}

/* vec: K/V rows start 16-byte aligned and head_dim fills whole 16-byte loads (stage_tile_vec). */
template <typename T>
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attention_tiled(float *out, const float *q, const T *kc, const T *vc,
                                                                    const int32_t *tab, int pos0, int n, int n_heads,
                                                                    int n_kv_heads, int head_dim, int kv_dim, bool vec) {
    extern __shared__ float sm_tiled[];
    float *Qs = sm_tiled, *Ks = Qs + ATT_TQ * head_dim, *Vs = Ks + ATT_TK * (head_dim + 1);
    int h = blockIdx.y, kvh = h / (n_heads / n_kv_heads);
    int t0 = blockIdx.x * ATT_TQ, nq = min(ATT_TQ, n - t0);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int per_lane = (head_dim + 31) / 32;
    float scale = rsqrtf((float)head_dim);
    for (int i = threadIdx.x; i < ATT_TQ * head_dim; i += blockDim.x) {
        int t = i / head_dim, d = i % head_dim;
        Qs[i] = t < nq ? q[((size_t)(t0 + t) * n_heads + h) * head_dim + d] * scale : 0.0f;
    }
    constexpr int QW = ATT_TQ / ATT_WARPS; /* queries per warp */
    float m[QW], l[QW], acc[QW][ATT_MAX_PER_LANE];
#pragma unroll
    for (int a = 0; a < QW; a++) {
        m[a] = -INFINITY;
        l[a] = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; i++) acc[a][i] = 0.0f;
    }
    int last = pos0 + t0 + nq - 1; /* the block's last query attends 0..last */
    __shared__ int64_t srow[ATT_TK]; /* the tile's K/V rows' offsets (elements); -1 past last */
    for (int p0 = 0; p0 <= last; p0 += ATT_TK) {
        __syncthreads(); /* the previous tile is consumed (and Q is staged, the first time) */
        if (threadIdx.x < ATT_TK) {
            int p = p0 + threadIdx.x;
            srow[threadIdx.x] = p <= last ? (int64_t)kv_row(tab, p) * kv_dim + (int64_t)kvh * head_dim : -1;
        }
        __syncthreads();
        if (vec) stage_tile_vec(Ks, Vs, kc, vc, srow, head_dim);
        else
            for (int i = threadIdx.x; i < ATT_TK * head_dim; i += blockDim.x) {
                int j = i / head_dim, d = i % head_dim;
                int64_t off = srow[j];
                Ks[j * (head_dim + 1) + d] = off >= 0 ? kv_f(kc, (size_t)off + d) : 0.0f;
                Vs[j * head_dim + d] = off >= 0 ? kv_f(vc, (size_t)off + d) : 0.0f;
            }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < QW; a++) {
            int t = warp * QW + a;
            if (t >= nq) break; /* uniform across the warp */
            int qpos = pos0 + t0 + t, p = p0 + lane;
            bool valid = lane < ATT_TK && p <= qpos;
            float s = 0.0f;
            if (valid) { /* four chains of FMAs, not one 128 long */
                float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                const float *qr = Qs + t * head_dim, *kr = Ks + lane * (head_dim + 1);
                int d = 0;
                for (; d + 4 <= head_dim; d += 4)
#pragma unroll
                    for (int u = 0; u < 4; u++) s4[u] += qr[d + u] * kr[d + u];
                for (; d < head_dim; d++) s4[0] += qr[d] * kr[d];
                s = (s4[0] + s4[1]) + (s4[2] + s4[3]);
            }
            float tmax = valid ? s : -INFINITY;
            for (int o = 16; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
            if (tmax == -INFINITY) continue; /* no position of this tile is visible to this query */
            float m_new = fmaxf(m[a], tmax), corr = __expf(m[a] - m_new);
            float e = valid ? __expf(s - m_new) : 0.0f, es = e;
            for (int o = 16; o > 0; o >>= 1) es += __shfl_xor_sync(0xffffffffu, es, o);
            l[a] = l[a] * corr + es;
            m[a] = m_new;
#pragma unroll
            for (int i = 0; i < ATT_MAX_PER_LANE; i++) acc[a][i] *= corr;
            for (int j = 0; j < ATT_TK; j++) {
                float ej = __shfl_sync(0xffffffffu, e, j);
#pragma unroll
                for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
                    int d = lane + 32 * i;
                    if (i < per_lane && d < head_dim) acc[a][i] += ej * Vs[j * head_dim + d];
                }
            }
        }
    }
#pragma unroll
    for (int a = 0; a < QW; a++) {
        int t = warp * QW + a;
        if (t >= nq) break;
        float *oh = out + ((size_t)(t0 + t) * n_heads + h) * head_dim;
#pragma unroll
        for (int i = 0; i < ATT_MAX_PER_LANE; i++) {
            int d = lane + 32 * i;
            if (i < per_lane && d < head_dim) oh[d] = acc[a][i] / l[a];
        }
    }
}

void cuda_attention_init(cuda_ctx *c) {
    cudaError_t e = cudaFuncSetAttribute(k_attention_tiled<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)tiled_smem(ATT_MAX_HEAD_DIM));
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(k_attention_tiled<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)tiled_smem(ATT_MAX_HEAD_DIM));
    if (e != cudaSuccess) cuda_fail(c, e, "allowing the tiled attention its shared memory", __FILE__, __LINE__);
    c->kv_span = (cuda_kv_span *)malloc(sizeof(cuda_kv_span) * KV_ROWS_MAX);
    if (!c->kv_span) cuda_fail(c, cudaErrorMemoryAllocation, "the attention spans", __FILE__, __LINE__);
    if (cudaMalloc((void **)&c->att_ws, ATT_WS_BYTES) != cudaSuccess) {
        cudaGetLastError();
        c->att_ws = NULL; /* the single-pass kernel does everything then */
        fprintf(stderr, "specd: cuda: no memory for the attention workspace; long contexts will be slower\n");
        return;
    }
    c->att_ws_floats = ATT_WS_BYTES / sizeof(float);
    c->bytes_work += ATT_WS_BYTES;
}

void cuda_attention_free(cuda_ctx *c) {
    free(c->kv_span);
    c->kv_span = NULL;
    if (!c->att_ws) return;
    cudaFree(c->att_ws);
    c->att_ws = NULL;
    c->bytes_work -= c->att_ws_floats * sizeof(float);
    c->att_ws_floats = 0;
}

/* The split path's grid over at most `span` positions: the chunk count (0: use the single pass). Depends only
 * on its arguments, never on pos0 while stepping (span is the cache capacity then), so a recorded graph's
 * grid stays right for every position it is replayed at; the kernels size the chunks from the live length. */
static int split_plan(const cuda_ctx *c, int span, int n, int n_heads, int head_dim) {
    if (!c->att_ws || n > ATT_SPLIT_MAX_N || span < ATT_SPLIT_MIN_SPAN) return 0;
    size_t per_chunk = (size_t)n * (size_t)n_heads * (size_t)(head_dim + 2); /* acc + (m, l) */
    size_t fit = c->att_ws_floats / per_chunk;
    int nc = (span + ATT_CHUNK_MIN - 1) / ATT_CHUNK_MIN;
    if (nc > ATT_MAX_CHUNKS) nc = ATT_MAX_CHUNKS;
    if ((size_t)nc > fit) nc = (int)fit;
    return nc < 2 ? 0 : nc;
}

/* Blocks of a span's table: its positions 0..pos0+n-1. */
static int span_blocks(const sd_kv_span *sp) { return (sp->pos0 + sp->n + SD_KV_BLOCK - 1) / SD_KV_BLOCK; }

/* The pass's spans into the descriptors (uploaded by the first op that reads them): per row its position
 * and its table's offset. Tables sit at offsets from the spans' capacities when they fit, so a sequence
 * that grows keeps its offset and the others theirs: a pass like the last one changes its positions and,
 * every SD_KV_BLOCK positions, one table entry per sequence. */
void cuda_kv_spans(cuda_ctx *c, const sd_kv_span *spans, int n_spans, int rows) {
    c->kv_n_rows = c->kv_n_spans = 0;
    if (!c->kv_span || !c->desc_host) return;
    size_t used = 0, by_cap = 0;
    for (int i = 0; i < n_spans; i++) {
        int nb = span_blocks(&spans[i]), cb = (spans[i].cap + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
        used += (size_t)nb;
        by_cap += (size_t)(cb > nb ? cb : nb);
    }
    if (rows > KV_ROWS_MAX || n_spans > KV_ROWS_MAX || used > KV_TABS_MAX) {
        char what[160];
        snprintf(what, sizeof what, "a pass of %d rows with %zu blocks (most %d rows, %d blocks)", rows, used,
                 KV_ROWS_MAX, KV_TABS_MAX);
        cuda_fail(c, cudaErrorInvalidValue, what, __FILE__, __LINE__);
        return;
    }
    bool at_cap = by_cap <= KV_TABS_MAX;
    int off = 0;
    for (int i = 0; i < n_spans; i++) {
        const sd_kv_span *sp = &spans[i];
        int nb = span_blocks(sp), cb = (sp->cap + SD_KV_BLOCK - 1) / SD_KV_BLOCK;
        cuda_desc_put(c, DESC_TABS + off, sp->table, nb);
        for (int r = 0; r < sp->n; r++) {
            cuda_desc_set(c, DESC_ROWS + 2 * (sp->row + r), sp->pos0 + r);
            cuda_desc_set(c, DESC_ROWS + 2 * (sp->row + r) + 1, off);
        }
        c->kv_span[i] = cuda_kv_span{sp->row, sp->n, sp->pos0, sp->cap, off};
        off += at_cap && cb > nb ? cb : nb;
    }
    c->kv_n_rows = rows;
    c->kv_n_spans = n_spans;
}

/* Rows [r0, r1) by the single-pass kernel. */
template <typename T>
static void attention_rows(cuda_ctx *c, float *out, const float *q, const T *kc, const T *vc, int r0, int r1,
                           int n_heads, int n_kv_heads, int head_dim, int kv_dim) {
    if (r1 <= r0) return;
    dim3 grid((unsigned)n_heads, (unsigned)(r1 - r0));
    k_attention<T><<<grid, ATT_WARPS * 32, 0, c->stream>>>(out, q, kc, vc, c->kv_rows, c->kv_tabs, r0, n_heads,
                                                           n_kv_heads, head_dim, kv_dim);
    CUDA_LAUNCHED(c, "attention");
}

/* Up to a step's rows: the single pass, or the split path for long contexts (planned for the largest
 * capacity while a graph records, as positions change on replay). More rows: spans longer than a step by
 * the tiled kernel, runs of the other spans by the single pass. */
template <typename T>
static void attention_t(cuda_ctx *c, float *out, const float *q, const T *kc, const T *vc, int n_heads,
                        int n_kv_heads, int head_dim, int kv_dim) {
    int n = c->kv_n_rows;
    if (n > ATT_SPLIT_MAX_N) {
        constexpr int ve = 16 / sizeof(T);
        bool vec = head_dim % ve == 0 && kv_dim % ve == 0 && (uintptr_t)kc % 16 == 0 && (uintptr_t)vc % 16 == 0;
        int run0 = 0;
        for (int i = 0; i < c->kv_n_spans; i++) {
            const cuda_kv_span *sp = &c->kv_span[i];
            if (sp->n <= ATT_SPLIT_MAX_N) continue;
            attention_rows(c, out, q, kc, vc, run0, sp->row, n_heads, n_kv_heads, head_dim, kv_dim);
            run0 = sp->row + sp->n;
            size_t qo = (size_t)sp->row * n_heads * head_dim;
            dim3 grid((unsigned)((sp->n + ATT_TQ - 1) / ATT_TQ), (unsigned)n_heads);
            k_attention_tiled<T><<<grid, ATT_WARPS * 32, tiled_smem(head_dim), c->stream>>>(
                out + qo, q + qo, kc, vc, c->kv_tabs + sp->tab, sp->pos0, sp->n, n_heads, n_kv_heads, head_dim, kv_dim,
                vec);
            CUDA_LAUNCHED(c, "attention (tiled prefill)");
        }
        attention_rows(c, out, q, kc, vc, run0, n, n_heads, n_kv_heads, head_dim, kv_dim);
        return;
    }
    int span = 0;
    for (int i = 0; i < c->kv_n_spans; i++) {
        int want = c->stepping ? c->kv_span[i].cap : c->kv_span[i].pos0 + c->kv_span[i].n;
        if (want > span) span = want;
    }
    int n_chunks = split_plan(c, span, n, n_heads, head_dim);
    if (n_chunks == 0) {
        attention_rows(c, out, q, kc, vc, 0, n, n_heads, n_kv_heads, head_dim, kv_dim);
        return;
    }
    int group = n_heads / n_kv_heads;
    size_t slots = (size_t)n * (size_t)n_heads * (size_t)n_chunks;
    float2 *ml = (float2 *)c->att_ws;      /* slots × (m, l) first: keeps the float2s aligned */
    float *accs = c->att_ws + 2 * slots; /* then slots × head_dim */
    dim3 grid((unsigned)((n_chunks * group + ATT_WARPS - 1) / ATT_WARPS), (unsigned)n_kv_heads, (unsigned)n);
    k_attention_part<T><<<grid, ATT_WARPS * 32, 0, c->stream>>>(ml, accs, q, kc, vc, c->kv_rows, c->kv_tabs, n_heads,
                                                                group, head_dim, kv_dim, n_chunks);
    if (!CUDA_LAUNCHED(c, "attention (split part)")) return;
    int threads = (head_dim + 31) / 32 * 32;
    k_attention_merge<<<dim3((unsigned)n_heads, (unsigned)n), threads, 0, c->stream>>>(out, ml, accs, c->kv_rows,
                                                                                      n_heads, head_dim, n_chunks);
    CUDA_LAUNCHED(c, "attention (split merge)");
}

void cuda_attention(cuda_ctx *c, float *out, const float *q, const void *kcache, const void *vcache, sd_dtype type,
                    int n_heads, int n_kv_heads, int head_dim, int kv_dim) {
    if (head_dim > ATT_MAX_HEAD_DIM || n_kv_heads <= 0 || n_heads % n_kv_heads != 0) {
        char what[160];
        snprintf(what, sizeof what, "attention (head_dim %d, max %d; %d heads, %d kv heads: shape not supported)",
                 head_dim, ATT_MAX_HEAD_DIM, n_heads, n_kv_heads);
        cuda_fail(c, cudaErrorInvalidValue, what, __FILE__, __LINE__);
        return;
    }
    if (!c->kv_n_rows) return; /* no spans (a failure was recorded) */
    cuda_desc_flush(c);
    if (type == SD_F16)
        attention_t(c, out, q, (const __half *)kcache, (const __half *)vcache, n_heads, n_kv_heads, head_dim, kv_dim);
    else
        attention_t(c, out, q, (const float *)kcache, (const float *)vcache, n_heads, n_kv_heads, head_dim, kv_dim);
}

/* K and V of every row of the pass into the pool at its position (the spans), converted to the pool's
 * type. */
__device__ __forceinline__ void kv_put(float *p, size_t i, float x) { p[i] = x; }
__device__ __forceinline__ void kv_put(__half *p, size_t i, float x) { p[i] = __float2half_rn(x); }

template <typename T>
__global__ void __launch_bounds__(256) k_kv_store(T *kc, T *vc, const float *k, const float *v, const int *rows,
                                                  const int32_t *tabs, size_t count, int kv_dim) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    int r = (int)(i / (size_t)kv_dim);
    size_t off = kv_row(tabs + rows[2 * r + 1], rows[2 * r]) * (size_t)kv_dim + i % (size_t)kv_dim;
    kv_put(kc, off, k[i]);
    kv_put(vc, off, v[i]);
}

void cuda_kv_store(cuda_ctx *c, void *kcache, void *vcache, sd_dtype type, const float *k, const float *v,
                   int kv_dim) {
    size_t count = (size_t)c->kv_n_rows * (size_t)kv_dim;
    if (!count) return;
    cuda_desc_flush(c);
    unsigned blocks = (unsigned)((count + 255) / 256);
    if (type == SD_F16)
        k_kv_store<__half><<<blocks, 256, 0, c->stream>>>((__half *)kcache, (__half *)vcache, k, v, c->kv_rows,
                                                          c->kv_tabs, count, kv_dim);
    else
        k_kv_store<float><<<blocks, 256, 0, c->stream>>>((float *)kcache, (float *)vcache, k, v, c->kv_rows, c->kv_tabs,
                                                         count, kv_dim);
    CUDA_LAUNCHED(c, "kv_store");
}
