/* Block layouts and dequantization of the GGML quantized types beyond Q8_0: Q4_0, Q4_1, Q5_0, Q5_1
 * (blocks of 32), the K-quants Q2_K ... Q6_K (super-blocks of 256 in 8 or 16 sub-blocks with quantized
 * scales), IQ4_NL (32, non-linear 4-bit grid) and IQ4_XS (256, IQ4_NL's grid with 6-bit sub-block scales).
 * Layouts are GGML's byte for byte (ggml-common.h), so the bytes of a GGUF tensor are arrays of these.
 * Everything is `static inline SD_HD` like kernels/quant.h: the CUDA backend can compile the same math.
 *
 * Dequantized values are computed in float in GGML's order (d * q, (d * sc) * q - (dmin * m)), the
 * order gguf-py's numpy code uses too, so every weight is the float the reference implementations see. */
#ifndef SD_QUANT_K_H
#define SD_QUANT_K_H
#include "kernels/quant.h"

#define SD_QK 32    /* elements of a Q4_0 ... Q5_1, IQ4_NL block */
#define SD_QK_K 256 /* elements of a K-quant / IQ4_XS super-block */

typedef struct sd_block_q4_0 { uint16_t d; uint8_t qs[16]; } sd_block_q4_0;                   /* q - 8 */
typedef struct sd_block_q4_1 { uint16_t d, m; uint8_t qs[16]; } sd_block_q4_1;                /* d q + m */
typedef struct sd_block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } sd_block_q5_0;    /* q - 16 */
typedef struct sd_block_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } sd_block_q5_1; /* d q + m */
/* 16 sub-blocks of 16: 4-bit scale (low) and 4-bit min (high) per sub-block, 2-bit quants. */
typedef struct sd_block_q2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } sd_block_q2_K;
/* 16 sub-blocks of 16: 6-bit signed scales (offset 32) packed in 12 bytes; quants 2 low bits + 1 high. */
typedef struct sd_block_q3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } sd_block_q3_K;
/* 8 sub-blocks of 32: 6-bit scales and mins packed in 12 bytes (sd_k4_scale_min), 4-bit quants. */
typedef struct sd_block_q4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } sd_block_q4_K;
typedef struct sd_block_q5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } sd_block_q5_K;
/* 16 sub-blocks of 16: int8 scales, 6-bit quants (4 low bits in ql, 2 high in qh) offset by 32. */
typedef struct sd_block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } sd_block_q6_K;
typedef struct sd_block_iq4_nl { uint16_t d; uint8_t qs[16]; } sd_block_iq4_nl;
/* 8 sub-blocks of 32: 6-bit scales offset by 32 (4 low bits in scales_l, 2 high in scales_h). */
typedef struct sd_block_iq4_xs { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } sd_block_iq4_xs;

/* The 16 levels of IQ4_NL / IQ4_XS (denser near zero, where weights are). */
#ifdef __CUDACC__
__device__ __constant__
#endif
static const int8_t sd_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* Q4_0 ... IQ4_NL: element j < 16 of a block is the low nibble of qs[j], element j + 16 the high one. */
static inline SD_HD void sd_dequant_q4_0(const sd_block_q4_0 *b, float *y) {
    float d = sd_fp16_to_fp32(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b->qs[j] & 15) - 8) * d;
        y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}

static inline SD_HD void sd_dequant_q4_1(const sd_block_q4_1 *b, float *y) {
    float d = sd_fp16_to_fp32(b->d), m = sd_fp16_to_fp32(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b->qs[j] & 15) * d + m;
        y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
    }
}

/* Q5: bit j of the little-endian qh word is the fifth bit of element j. */
static inline SD_HD uint32_t sd_q5_high(const uint8_t *qh) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static inline SD_HD void sd_dequant_q5_0(const sd_block_q5_0 *b, float *y) {
    float d = sd_fp16_to_fp32(b->d);
    uint32_t qh = sd_q5_high(b->qh);
    for (int j = 0; j < 16; j++) {
        int lo = (b->qs[j] & 15) | (int)((qh >> j) & 1) << 4, hi = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

static inline SD_HD void sd_dequant_q5_1(const sd_block_q5_1 *b, float *y) {
    float d = sd_fp16_to_fp32(b->d), m = sd_fp16_to_fp32(b->m);
    uint32_t qh = sd_q5_high(b->qh);
    for (int j = 0; j < 16; j++) {
        int lo = (b->qs[j] & 15) | (int)((qh >> j) & 1) << 4, hi = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)lo * d + m;
        y[j + 16] = (float)hi * d + m;
    }
}

static inline SD_HD void sd_dequant_iq4_nl(const sd_block_iq4_nl *b, float *y) {
    float d = sd_fp16_to_fp32(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)sd_iq4nl_values[b->qs[j] & 15];
        y[j + 16] = d * (float)sd_iq4nl_values[b->qs[j] >> 4];
    }
}

/* Q2_K: 128 elements per 32 quant bytes: element 32 * s + l of each half (s = shift / 2) is bits
 * [2s, 2s+2) of qs[l]; sub-block k = 16 elements, its scale byte scales[k]. */
static inline SD_HD void sd_dequant_q2_K(const sd_block_q2_K *b, float *y) {
    float d = sd_fp16_to_fp32(b->d), dmin = sd_fp16_to_fp32(b->dmin);
    for (int half = 0; half < 2; half++) {
        const uint8_t *q = b->qs + 32 * half;
        for (int s = 0; s < 4; s++)
            for (int k = 0; k < 2; k++) {
                uint8_t sc = b->scales[8 * half + 2 * s + k];
                float dl = d * (float)(sc & 15), ml = dmin * (float)(sc >> 4);
                float *o = y + 128 * half + 32 * s + 16 * k;
                for (int l = 0; l < 16; l++) o[l] = dl * (float)((q[16 * k + l] >> (2 * s)) & 3) - ml;
            }
    }
}

/* Q3_K's 16 six-bit scales: low 4 bits in bytes 0-7 (two per byte), high 2 bits in bytes 8-11. */
static inline SD_HD int sd_q3k_scale(const uint8_t *sc, int k) {
    int lo = k < 8 ? sc[k] & 15 : sc[k - 8] >> 4;
    int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* Q3_K: as Q2_K's order, the third bit from hmask[l] bit (4 * half + s); a clear bit subtracts 4. */
static inline SD_HD void sd_dequant_q3_K(const sd_block_q3_K *b, float *y) {
    float d = sd_fp16_to_fp32(b->d);
    for (int half = 0; half < 2; half++) {
        const uint8_t *q = b->qs + 32 * half;
        for (int s = 0; s < 4; s++)
            for (int k = 0; k < 2; k++) {
                float dl = d * (float)sd_q3k_scale(b->scales, 8 * half + 2 * s + k);
                float *o = y + 128 * half + 32 * s + 16 * k;
                uint8_t m = (uint8_t)(1u << (4 * half + s));
                for (int l = 0; l < 16; l++) {
                    int v = ((q[16 * k + l] >> (2 * s)) & 3) - ((b->hmask[16 * k + l] & m) ? 0 : 4);
                    o[l] = dl * (float)v;
                }
            }
    }
}

/* Scale and min of sub-block j of a Q4_K / Q5_K super-block: j < 4 in the low 6 bits of bytes j and
 * j + 4; j >= 4 as 4 low bits in byte j + 4 and 2 high bits in the top of bytes j - 4 (scale) and j (min). */
static inline SD_HD void sd_k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

/* Q4_K: 64 elements per 32 quant bytes (low nibbles: sub-block 2i, high: 2i + 1). */
static inline SD_HD void sd_dequant_q4_K(const sd_block_q4_K *b, float *y) {
    float d = sd_fp16_to_fp32(b->d), dmin = sd_fp16_to_fp32(b->dmin);
    for (int i = 0; i < 4; i++) {
        int sc0, m0, sc1, m1;
        sd_k4_scale_min(b->scales, 2 * i, &sc0, &m0);
        sd_k4_scale_min(b->scales, 2 * i + 1, &sc1, &m1);
        float d0 = d * (float)sc0, n0 = dmin * (float)m0, d1 = d * (float)sc1, n1 = dmin * (float)m1;
        const uint8_t *q = b->qs + 32 * i;
        for (int l = 0; l < 32; l++) {
            y[64 * i + l] = d0 * (float)(q[l] & 15) - n0;
            y[64 * i + 32 + l] = d1 * (float)(q[l] >> 4) - n1;
        }
    }
}

/* Q5_K: Q4_K plus a fifth bit, bit j of qh[l] for sub-block j. */
static inline SD_HD void sd_dequant_q5_K(const sd_block_q5_K *b, float *y) {
    float d = sd_fp16_to_fp32(b->d), dmin = sd_fp16_to_fp32(b->dmin);
    for (int i = 0; i < 4; i++) {
        int sc0, m0, sc1, m1;
        sd_k4_scale_min(b->scales, 2 * i, &sc0, &m0);
        sd_k4_scale_min(b->scales, 2 * i + 1, &sc1, &m1);
        float d0 = d * (float)sc0, n0 = dmin * (float)m0, d1 = d * (float)sc1, n1 = dmin * (float)m1;
        const uint8_t *q = b->qs + 32 * i;
        for (int l = 0; l < 32; l++) {
            int lo = (q[l] & 15) | ((b->qh[l] >> (2 * i)) & 1) << 4;
            int hi = (q[l] >> 4) | ((b->qh[l] >> (2 * i + 1)) & 1) << 4;
            y[64 * i + l] = d0 * (float)lo - n0;
            y[64 * i + 32 + l] = d1 * (float)hi - n1;
        }
    }
}

/* Q6_K: per half of 128, element 32 * s + l takes the nibble of ql[l + 32 * (s & 1)] (low for s < 2) and
 * bits [2s, 2s+2) of qh[l]; scale index 8 * half + 2 * s + l / 16. */
static inline SD_HD void sd_dequant_q6_K(const sd_block_q6_K *b, float *y) {
    float d = sd_fp16_to_fp32(b->d);
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        const int8_t *sc = b->scales + 8 * half;
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                int lo = s < 2 ? ql[l + 32 * s] & 15 : ql[l + 32 * (s - 2)] >> 4;
                int q = (lo | ((qh[l] >> (2 * s)) & 3) << 4) - 32;
                y[128 * half + 32 * s + l] = d * (float)sc[2 * s + l / 16] * (float)q;
            }
    }
}

/* IQ4_XS sub-block scale (6 bits, offset 32). */
static inline SD_HD int sd_iq4xs_scale(const sd_block_iq4_xs *b, int ib) {
    return (((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | ((b->scales_h >> (2 * ib)) & 3) << 4) - 32;
}

static inline SD_HD void sd_dequant_iq4_xs(const sd_block_iq4_xs *b, float *y) {
    float d = sd_fp16_to_fp32(b->d);
    for (int ib = 0; ib < 8; ib++) {
        float dl = d * (float)sd_iq4xs_scale(b, ib);
        const uint8_t *q = b->qs + 16 * ib;
        for (int j = 0; j < 16; j++) {
            y[32 * ib + j] = dl * (float)sd_iq4nl_values[q[j] & 15];
            y[32 * ib + 16 + j] = dl * (float)sd_iq4nl_values[q[j] >> 4];
        }
    }
}

/* One block of any loadable quantized type to sd_dtype_block(type) floats; false for other types. */
static inline SD_HD bool sd_dequant_block(int type, const void *blk, float *y) {
    switch (type) {
    case SD_Q4_0: sd_dequant_q4_0((const sd_block_q4_0 *)blk, y); return true;
    case SD_Q4_1: sd_dequant_q4_1((const sd_block_q4_1 *)blk, y); return true;
    case SD_Q5_0: sd_dequant_q5_0((const sd_block_q5_0 *)blk, y); return true;
    case SD_Q5_1: sd_dequant_q5_1((const sd_block_q5_1 *)blk, y); return true;
    case SD_Q8_0: sd_dequant_q8_0((const sd_block_q8_0 *)blk, y); return true;
    case SD_Q2_K: sd_dequant_q2_K((const sd_block_q2_K *)blk, y); return true;
    case SD_Q3_K: sd_dequant_q3_K((const sd_block_q3_K *)blk, y); return true;
    case SD_Q4_K: sd_dequant_q4_K((const sd_block_q4_K *)blk, y); return true;
    case SD_Q5_K: sd_dequant_q5_K((const sd_block_q5_K *)blk, y); return true;
    case SD_Q6_K: sd_dequant_q6_K((const sd_block_q6_K *)blk, y); return true;
    case SD_IQ4_NL: sd_dequant_iq4_nl((const sd_block_iq4_nl *)blk, y); return true;
    case SD_IQ4_XS: sd_dequant_iq4_xs((const sd_block_iq4_xs *)blk, y); return true;
    default: return false;
    }
}

/* Block geometry of the types above, without the dtype table (usable on the device). */
static inline SD_HD int sd_quant_block(int type) {
    switch (type) {
    case SD_Q4_0: case SD_Q4_1: case SD_Q5_0: case SD_Q5_1: case SD_Q8_0: case SD_IQ4_NL: return SD_QK;
    case SD_Q2_K: case SD_Q3_K: case SD_Q4_K: case SD_Q5_K: case SD_Q6_K: case SD_IQ4_XS: return SD_QK_K;
    default: return 0;
    }
}

static inline SD_HD int sd_quant_block_bytes(int type) {
    switch (type) {
    case SD_Q4_0: return (int)sizeof(sd_block_q4_0);
    case SD_Q4_1: return (int)sizeof(sd_block_q4_1);
    case SD_Q5_0: return (int)sizeof(sd_block_q5_0);
    case SD_Q5_1: return (int)sizeof(sd_block_q5_1);
    case SD_Q8_0: return (int)sizeof(sd_block_q8_0);
    case SD_Q2_K: return (int)sizeof(sd_block_q2_K);
    case SD_Q3_K: return (int)sizeof(sd_block_q3_K);
    case SD_Q4_K: return (int)sizeof(sd_block_q4_K);
    case SD_Q5_K: return (int)sizeof(sd_block_q5_K);
    case SD_Q6_K: return (int)sizeof(sd_block_q6_K);
    case SD_IQ4_NL: return (int)sizeof(sd_block_iq4_nl);
    case SD_IQ4_XS: return (int)sizeof(sd_block_iq4_xs);
    default: return 0;
    }
}

/* n elements (a multiple of the block size) of a row of any loadable type to floats. */
static inline SD_HD void sd_dequant_row(int type, const void *row, float *y, int64_t n) {
    if (type == SD_F32 || type == SD_F16 || type == SD_BF16) {
        for (int64_t i = 0; i < n; i++) y[i] = sd_row_get(type, row, i);
        return;
    }
    int qk = sd_quant_block(type), bb = sd_quant_block_bytes(type);
    for (int64_t b = 0; qk && b < n / qk; b++) sd_dequant_block(type, (const uint8_t *)row + b * bb, y + b * qk);
}

/* Reference dot product of a quantized row with float activations: each block dequantized, then
 * products accumulated in order in float (the scalar path the SIMD kernels are tested against). */
static inline SD_HD float sd_dot_quant(int type, const void *row, const float *x, int64_t n) {
    float w[SD_QK_K], s = 0;
    int qk = sd_quant_block(type), bb = sd_quant_block_bytes(type);
    for (int64_t b = 0; qk && b < n / qk; b++) {
        sd_dequant_block(type, (const uint8_t *)row + b * bb, w);
        for (int i = 0; i < qk; i++) s += w[i] * x[b * qk + i];
    }
    return s;
}

#endif
