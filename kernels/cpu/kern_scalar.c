/* The scalar reference kernels: plain C, one output element at a time, accumulated in order. */
#include <limits.h>

#include "kernels/cpu/simd.h"
#include "kernels/quant_k.h"

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

static float dot(const float *a, const float *b, int64_t n) { return sd_dot_f32(a, b, n); }

static void axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void scale(float *y, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= a;
}

static float dot_f16(const float *a, const uint16_t *b, int64_t n) { return sd_dot_f16(b, a, n); }

static void axpy_f16(float *y, float a, const uint16_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * sd_fp16_to_fp32(x[i]);
}

const sd_cpu_kernels sd_kernels_scalar = {
    .level = SD_SIMD_SCALAR,
    .name = "scalar",
    .mm = {mm_f32, mm_f16, mm_bf16, mm_q8_0, mm_quant},
    .block_min = {INT_MAX, INT_MAX, INT_MAX, INT_MAX, INT_MAX}, /* one element at a time: nothing to block */
    .dot = dot,
    .axpy = axpy,
    .scale = scale,
    .dot_f16 = dot_f16,
    .axpy_f16 = axpy_f16,
    .quant_act = sd_quant_act_q8,
    .act_groups = sd_act_groups_ref,
};
