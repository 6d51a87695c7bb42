/* The scalar reference kernels: plain C, one output element at a time, accumulated in order. */
#include "kernels/cpu/simd.h"
#include "kernels/quant.h"

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

static float dot(const float *a, const float *b, int64_t n) { return sd_dot_f32(a, b, n); }

static void axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void scale(float *y, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= a;
}

const sd_cpu_kernels sd_kernels_scalar = {
    .level = SD_SIMD_SCALAR,
    .name = "scalar",
    .mm = {mm_f32, mm_f16, mm_bf16, mm_q8_0},
    .dot = dot,
    .axpy = axpy,
    .scale = scale,
};
