/* The scalar reference kernels: plain C, one output element at a time, accumulated in order. */
#include <limits.h>
#include <math.h>

#include "kernels/cpu/simd.h"
#include "kernels/quant_k.h"
#include "kernels/softmax.h"

#define MM_SCALAR(NAME, DOT, WT)                                                                   \
    static void NAME(const sd_mm_job *j, int64_t r0, int64_t r1) {                                 \
        for (int64_t r = r0; r < r1; r++) {                                                        \
            const WT *row = (const WT *)(j->w + (size_t)r * j->row_bytes);                         \
            for (int i = 0; i < j->n; i++) j->out[i * j->out_stride + r] = DOT(row, j->x + i * j->cols, j->cols); \
        }                                                                                          \
    }

MM_SCALAR(mm_f32, sd_dot_f32, float)
MM_SCALAR(mm_f16, sd_dot_f16, uint16_t)
MM_SCALAR(mm_bf16, sd_dot_bf16, uint16_t)

static void mm_q8_0(const sd_mm_job *j, int64_t r0, int64_t r1) {
    int64_t nb = j->cols / SD_QK8_0;
    for (int64_t r = r0; r < r1; r++) {
        const sd_block_q8_0 *row = (const sd_block_q8_0 *)(j->w + (size_t)r * j->row_bytes);
        for (int i = 0; i < j->n; i++)
            j->out[i * j->out_stride + r] = sd_dot_q8_0_q8(row, j->xq + i * j->cols, j->xd + i * nb, j->cols);
    }
}

/* Other quantized types, with the activations quantized per block of 32 as for Q8_0: per row, each
 * weight block dequantized once per 64 activations; per activation block of 32 the products of the
 * dequantized weights with the int8 levels are summed in order, scaled by the block's d_x and added. */
static void mm_quant(const sd_mm_job *j, int64_t r0, int64_t r1) {
    int qk = sd_quant_block(j->type), bb = sd_quant_block_bytes(j->type);
    int64_t nblk = j->cols / SD_QK8_0;
    float w[SD_QK_K], s[64];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = j->w + (size_t)r * j->row_bytes;
        for (int i0 = 0; i0 < j->n; i0 += 64) {
            int ni = j->n - i0 < 64 ? j->n - i0 : 64;
            memset(s, 0, sizeof s);
            for (int64_t b = 0; b < j->cols / qk; b++) {
                sd_dequant_block(j->type, row + b * bb, w);
                for (int i = 0; i < ni; i++)
                    for (int c0 = 0; c0 < qk; c0 += SD_QK8_0) {
                        int64_t col = b * qk + c0;
                        const int8_t *xq = j->xq + (int64_t)(i0 + i) * j->cols + col;
                        float bs = 0;
                        for (int c = 0; c < SD_QK8_0; c++) bs += w[c0 + c] * (float)xq[c];
                        s[i] += bs * j->xd[(int64_t)(i0 + i) * nblk + col / SD_QK8_0];
                    }
            }
            for (int i = 0; i < ni; i++) j->out[(int64_t)(i0 + i) * j->out_stride + r] = s[i];
        }
    }
}

/* Attention, one element at a time: the reference the SIMD levels' kernels are tested against. */
static float kv_elem(const void *src, size_t stride, int n, int hd, int f16, int r, int d) {
    if (r >= n || d >= hd) return 0;
    if (f16) return sd_fp16_to_fp32(((const uint16_t *)src)[(size_t)r * stride + d]);
    return ((const float *)src)[(size_t)r * stride + d];
}

static void attn_load_k(float *kt, int col, const void *src, size_t stride, int n, int hd, int hdp, int f16) {
    for (int r = 0; r < 16; r++)
        for (int d = 0; d < hdp; d++) kt[(size_t)d * SD_ATT_CHUNK + col + r] = kv_elem(src, stride, n, hd, f16, r, d);
}

static void attn_load_v(float *v, const void *src, size_t stride, int n, int hd, int hdp, int f16) {
    for (int r = 0; r < 16; r++)
        for (int d = 0; d < hdp; d++) v[(size_t)r * hdp + d] = kv_elem(src, stride, n, hd, f16, r, d);
}

static void attn_row(const float *q, int g, const float *kt, const float *v, int n, int hdp, float scale, float *ml,
                     float *acc, float *s) {
    for (int m = 0; m < g; m++, q += hdp, ml += 2, acc += hdp) {
        float bm = -INFINITY;
        for (int t = 0; t < n; t++) {
            float d = 0;
            for (int i = 0; i < hdp; i++) d += q[i] * kt[(size_t)i * SD_ATT_CHUNK + t];
            s[t] = d * scale;
            bm = s[t] > bm ? s[t] : bm;
        }
        if (bm > ml[0]) {
            float r = sd_softmax_rescale(ml[0], bm);
            ml[1] *= r;
            for (int i = 0; i < hdp; i++) acc[i] *= r;
            ml[0] = bm;
        }
        for (int t = 0; t < n; t++) {
            float p = expf(s[t] - ml[0]);
            ml[1] += p;
            for (int i = 0; i < hdp; i++) acc[i] += p * v[(size_t)t * hdp + i];
        }
    }
}

const sd_cpu_kernels sd_kernels_scalar = {
    .level = SD_SIMD_SCALAR,
    .name = "scalar",
    .mm = {mm_f32, mm_f16, mm_bf16, mm_q8_0, mm_quant},
    .block_min = {INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX}, /* one element at a time: nothing to block */
    .attn_load_k = attn_load_k,
    .attn_load_v = attn_load_v,
    .attn_row = attn_row,
    .quant_act = sd_quant_act_q8,
    .act_groups = sd_act_groups_ref,
};
