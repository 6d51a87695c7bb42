/* Scalar number formats and the per-element math every backend shares: half/bfloat conversion, Q8_0
 * blocks, reference dot products, SiLU, one RoPE rotation. Everything is `static inline SD_HD` so the
 * CUDA backend compiles the very same code for the device and the CPU tests cover it. */
#ifndef SD_QUANT_H
#define SD_QUANT_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/backend.h"

#ifdef __CUDACC__
#define SD_HD __host__ __device__
#else
#define SD_HD
#endif

static inline SD_HD float sd_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline SD_HD uint32_t sd_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* IEEE half -> float, exact for every input (subnormals, infinities, NaN payloads). */
static inline SD_HD float sd_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return sd_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp != 0) return sd_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return sd_bits_f32(sign);
    /* Subnormal: man * 2^-24; normalise so the leading one becomes the implicit bit. */
    uint32_t e = 113;
    while (!(man & 0x400u)) {
        man <<= 1;
        e--;
    }
    return sd_bits_f32(sign | (e << 23) | ((man & 0x3ffu) << 13));
}

/* float -> IEEE half, round to nearest even; overflow gives infinity, NaN stays NaN. */
static inline SD_HD uint16_t sd_fp32_to_fp16(float f) {
    uint32_t x = sd_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) {                                     /* below 2^-14: subnormal half or zero */
        if (ax <= 0x33000000u) return (uint16_t)sign;          /* <= 2^-25 rounds (to even) to zero */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e, q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax - (112u << 23);
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | r);
}

static inline SD_HD float sd_bf16_to_fp32(uint16_t h) { return sd_bits_f32((uint32_t)h << 16); }

/* float -> bfloat16, round to nearest even, NaN kept quiet. */
static inline SD_HD uint16_t sd_fp32_to_bf16(float f) {
    uint32_t x = sd_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* One Q8_0 block to 32 floats. d * q is exact in float (11 + 8 significant bits), so a matmul on
 * dequantized weights is plain F32 math on the exact matrix the file describes. */
static inline SD_HD void sd_dequant_q8_0(const sd_block_q8_0 *b, float *y) {
    float d = sd_fp16_to_fp32(b->d);
    for (int i = 0; i < SD_QK8_0; i++) y[i] = d * (float)b->qs[i];
}

/* x / d of a Q8_0 quantization: within +-127 for finite x; NaN (from a NaN or infinite value of a broken
 * model) becomes 0, since converting NaN to an integer is undefined. */
static inline SD_HD float sd_q8_scaled(float x, float id) {
    float v = x * id;
    return v == v ? (v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v) : 0.0f;
}

/* Quantizes 32 floats into one Q8_0 block (as llama.cpp does: d = amax / 127, q = round(x / d)). */
static inline SD_HD void sd_quant_q8_0(const float *x, sd_block_q8_0 *b) {
    float amax = 0;
    for (int i = 0; i < SD_QK8_0; i++) amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sd_fp32_to_fp16(d);
    for (int i = 0; i < SD_QK8_0; i++) b->qs[i] = (int8_t)roundf(sd_q8_scaled(x[i], id));
}

/* Activations for a Q8_0 product, quantized as llama.cpp does: per block of 32, d = amax / 127 (kept in
 * float) and q = round(x / d), so |x - d * q| <= d / 2. n is a multiple of 32. sums (NULL: not wanted)
 * gets each block's sum of q, which kernels that offset the weights to unsigned need. */
static inline SD_HD void sd_quant_act_q8(const float *x, int64_t n, int8_t *q, float *d, int32_t *sums) {
    for (int64_t b = 0; b < n / SD_QK8_0; b++) {
        const float *xb = x + b * SD_QK8_0;
        float amax = 0;
        for (int i = 0; i < SD_QK8_0; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax; /* not fmaxf: that is a libm call on baseline x86-64 */
        }
        float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
        d[b] = db;
        int32_t sum = 0;
        for (int i = 0; i < SD_QK8_0; i++) { /* round half away from zero, without a libm call */
            float v = sd_q8_scaled(xb[i], id);
            q[b * SD_QK8_0 + i] = (int8_t)(int)(v + (v >= 0 ? 0.5f : -0.5f));
            sum += q[b * SD_QK8_0 + i];
        }
        if (sums) sums[b] = sum;
    }
}

/* Q8_0 weights . quantized activations: per block an exact integer sum, scaled by d_w * d_x. */
static inline SD_HD float sd_dot_q8_0_q8(const sd_block_q8_0 *w, const int8_t *q, const float *d, int64_t n) {
    float s = 0;
    for (int64_t b = 0; b < n / SD_QK8_0; b++) {
        int32_t is = 0;
        for (int i = 0; i < SD_QK8_0; i++) is += (int32_t)w[b].qs[i] * q[b * SD_QK8_0 + i];
        s += sd_fp16_to_fp32(w[b].d) * d[b] * (float)is;
    }
    return s;
}

/* Element c of a row of type `type` (reference path; the fast paths convert whole vectors). */
static inline SD_HD float sd_row_get(int type, const void *row, int64_t c) {
    switch (type) {
    case SD_F32: return ((const float *)row)[c];
    case SD_F16: return sd_fp16_to_fp32(((const uint16_t *)row)[c]);
    case SD_BF16: return sd_bf16_to_fp32(((const uint16_t *)row)[c]);
    case SD_Q8_0: {
        const sd_block_q8_0 *b = (const sd_block_q8_0 *)row + c / SD_QK8_0;
        return sd_fp16_to_fp32(b->d) * (float)b->qs[c % SD_QK8_0];
    }
    default: return 0.0f;
    }
}

/* Reference dot products, accumulated in order in float: the scalar path every SIMD path is tested against. */
static inline SD_HD float sd_dot_f32(const float *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static inline SD_HD float sd_dot_f16(const uint16_t *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += sd_fp16_to_fp32(w[i]) * x[i];
    return s;
}

static inline SD_HD float sd_dot_bf16(const uint16_t *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += sd_bf16_to_fp32(w[i]) * x[i];
    return s;
}

/* n is a multiple of 32. */
static inline SD_HD float sd_dot_q8_0(const sd_block_q8_0 *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t b = 0; b < n / SD_QK8_0; b++) {
        float d = sd_fp16_to_fp32(w[b].d);
        for (int i = 0; i < SD_QK8_0; i++) s += d * (float)w[b].qs[i] * x[b * SD_QK8_0 + i];
    }
    return s;
}

static inline SD_HD float sd_silu(float x) { return x / (1.0f + expf(-x)); }

/* The argmax order, shared by the sampler, the CPU and the CUDA backends so greedy picks agree everywhere:
 * larger value first, lower index on ties, NaN after every number. True when (a, ia) beats (b, ib). */
static inline SD_HD bool sd_argmax_prefers(float a, int32_t ia, float b, int32_t ib) {
    if (b != b) return a == a || ia < ib; /* b is NaN */
    if (a != a) return false;
    return a > b || (a == b && ia < ib);
}

/* Rotates the pair (a, b) by the angle whose cosine and sine are c and s. */
static inline SD_HD void sd_rope_rotate(float *a, float *b, float c, float s) {
    float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
}

/* The angle of pair j at position pos: pos * inv_freq[j] (scaling is folded into inv_freq). */
static inline SD_HD float sd_rope_angle(int pos, float inv_freq_j) { return (float)pos * inv_freq_j; }

#endif
