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

/* Decoders are always inlined: inside a SIMD kernel (kernels/cpu/mm_tmpl.h) they are then compiled for
 * that kernel's instruction set, with the type a constant. */
#ifdef __CUDACC__
#define SD_QI static __forceinline__ __host__ __device__
#else
#define SD_QI static inline __attribute__((always_inline))
#endif

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

/* The 16 levels of IQ4_NL / IQ4_XS (denser near zero, where weights are). CUDA keeps its own copy in
 * constant memory; sd_iq4nl_value reads whichever side it is compiled for. */
#define SD_IQ4NL_LEVELS {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
static const int8_t sd_iq4nl_values[16] = SD_IQ4NL_LEVELS;
#ifdef __CUDACC__
__device__ __constant__ static const int8_t sd_iq4nl_values_dev[16] = SD_IQ4NL_LEVELS;
#endif

SD_QI int8_t sd_iq4nl_value(int i) {
#ifdef __CUDA_ARCH__
    return sd_iq4nl_values_dev[i];
#else
    return sd_iq4nl_values[i];
#endif
}

/* Block geometry of the types above, without the dtype table (usable on the device). */
SD_QI int sd_quant_block(int type) {
    switch (type) {
    case SD_Q4_0: case SD_Q4_1: case SD_Q5_0: case SD_Q5_1: case SD_Q8_0: case SD_IQ4_NL: return SD_QK;
    case SD_Q2_K: case SD_Q3_K: case SD_Q4_K: case SD_Q5_K: case SD_Q6_K: case SD_IQ4_XS: return SD_QK_K;
    default: return 0;
    }
}

/* Byte offsets of the F16 scale fields in a block of a quantized type (-1 ends the list): where tests put
 * extreme scales. Host only. */
static inline const int *sd_quant_scale_fields(int type) {
    static const int d0[] = {0, -1}, dm[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1}, q6k[] = {208, -1};
    switch (type) {
    case SD_Q4_1: case SD_Q5_1: case SD_Q4_K: case SD_Q5_K: return dm;
    case SD_Q2_K: return q2k;
    case SD_Q3_K: return q3k;
    case SD_Q6_K: return q6k;
    default: return d0;
    }
}

SD_QI int sd_quant_block_bytes(int type) {
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

/* Every type decodes the same way: a block unpacks to int8 levels q and, per 16 elements, a scale and an
 * offset; element i is sc[i / 16] * q[i] + off[i / 16]. The offsets are minus the (scaled) minimum of the
 * types with one (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) and 0 elsewhere. The SIMD kernels consume this form (int8
 * to float, one FMA); sd_dequant_block applies it in float with GGML's roundings (a product, then a sum). */
typedef struct sd_qunpacked {
    int8_t q[SD_QK_K];
    float sc[SD_QK_K / 16], off[SD_QK_K / 16];
} sd_qunpacked;

/* Q4_0 ... IQ4_NL: element j < 16 of a block is the low nibble of qs[j], element j + 16 the high one. */
SD_QI void sd_unpack_nibbles(const uint8_t *qs, int bias, int8_t *q) {
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((qs[j] & 15) - bias);
        q[j + 16] = (int8_t)((qs[j] >> 4) - bias);
    }
}

/* Q5: bit j of the little-endian qh word is the fifth bit of element j. */
SD_QI void sd_unpack_q5(const uint8_t *qs, const uint8_t *qh, int bias, int8_t *q) {
    uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(((qs[j] & 15) | (int)((h >> j) & 1) << 4) - bias);
        q[j + 16] = (int8_t)(((qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4) - bias);
    }
}

SD_QI void sd_set_affine(sd_qunpacked *u, int first, int count, float sc, float off) {
    for (int k = first; k < first + count; k++) {
        u->sc[k] = sc;
        u->off[k] = off;
    }
}

SD_QI void sd_unpack_q4_0(const sd_block_q4_0 *b, sd_qunpacked *u) {
    sd_unpack_nibbles(b->qs, 8, u->q);
    sd_set_affine(u, 0, 2, sd_fp16_to_fp32(b->d), 0.0f);
}

SD_QI void sd_unpack_q4_1(const sd_block_q4_1 *b, sd_qunpacked *u) {
    sd_unpack_nibbles(b->qs, 0, u->q);
    sd_set_affine(u, 0, 2, sd_fp16_to_fp32(b->d), sd_fp16_to_fp32(b->m));
}

SD_QI void sd_unpack_q5_0(const sd_block_q5_0 *b, sd_qunpacked *u) {
    sd_unpack_q5(b->qs, b->qh, 16, u->q);
    sd_set_affine(u, 0, 2, sd_fp16_to_fp32(b->d), 0.0f);
}

SD_QI void sd_unpack_q5_1(const sd_block_q5_1 *b, sd_qunpacked *u) {
    sd_unpack_q5(b->qs, b->qh, 0, u->q);
    sd_set_affine(u, 0, 2, sd_fp16_to_fp32(b->d), sd_fp16_to_fp32(b->m));
}

SD_QI void sd_unpack_q8_0(const sd_block_q8_0 *b, sd_qunpacked *u) {
    for (int j = 0; j < 32; j++) u->q[j] = b->qs[j];
    sd_set_affine(u, 0, 2, sd_fp16_to_fp32(b->d), 0.0f);
}

SD_QI void sd_unpack_iq4_nl(const sd_block_iq4_nl *b, sd_qunpacked *u) {
    for (int j = 0; j < 16; j++) {
        u->q[j] = sd_iq4nl_value(b->qs[j] & 15);
        u->q[j + 16] = sd_iq4nl_value(b->qs[j] >> 4);
    }
    sd_set_affine(u, 0, 2, sd_fp16_to_fp32(b->d), 0.0f);
}

/* Q2_K: per half of 128 elements and 32 quant bytes, element 32 * s + 16 * k + l is bits [2s, 2s+2) of
 * qs[16 * k + l]; its sub-block (8 * half + 2 * s + k) has scale byte: 4-bit scale low, 4-bit min high. */
SD_QI void sd_unpack_q2_K(const sd_block_q2_K *b, sd_qunpacked *u) {
    float d = sd_fp16_to_fp32(b->d), dmin = sd_fp16_to_fp32(b->dmin);
    for (int half = 0; half < 2; half++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) u->q[128 * half + 32 * s + l] = (int8_t)((b->qs[32 * half + l] >> (2 * s)) & 3);
    for (int k = 0; k < 16; k++) {
        u->sc[k] = d * (float)(b->scales[k] & 15);
        u->off[k] = -(dmin * (float)(b->scales[k] >> 4));
    }
}

/* Q3_K's 16 six-bit scales: low 4 bits in bytes 0-7 (two per byte), high 2 bits in bytes 8-11. */
SD_QI int sd_q3k_scale(const uint8_t *sc, int k) {
    int lo = k < 8 ? sc[k] & 15 : sc[k - 8] >> 4;
    int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* Q3_K: Q2_K's order; the third bit is bit (4 * half + s) of hmask[l % 32], and a clear bit subtracts 4. */
SD_QI void sd_unpack_q3_K(const sd_block_q3_K *b, sd_qunpacked *u) {
    float d = sd_fp16_to_fp32(b->d);
    for (int half = 0; half < 2; half++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                int lo = (b->qs[32 * half + l] >> (2 * s)) & 3, hi = (b->hmask[l] >> (4 * half + s)) & 1;
                u->q[128 * half + 32 * s + l] = (int8_t)(lo - 4 + 4 * hi);
            }
    for (int k = 0; k < 16; k++) {
        u->sc[k] = d * (float)sd_q3k_scale(b->scales, k);
        u->off[k] = 0.0f;
    }
}

/* Scale and min of sub-block j of a Q4_K / Q5_K super-block: j < 4 in the low 6 bits of bytes j and
 * j + 4; j >= 4 as 4 low bits in byte j + 4 and 2 high bits in the top of bytes j - 4 (scale) and j (min). */
SD_QI void sd_k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

SD_QI void sd_k4_affine(const uint8_t *scales, uint16_t d16, uint16_t dmin16, sd_qunpacked *u) {
    float d = sd_fp16_to_fp32(d16), dmin = sd_fp16_to_fp32(dmin16);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        sd_k4_scale_min(scales, j, &sc, &m);
        sd_set_affine(u, 2 * j, 2, d * (float)sc, -(dmin * (float)m));
    }
}

/* Q4_K: 64 elements per 32 quant bytes (low nibbles: sub-block 2i, high: 2i + 1). */
SD_QI void sd_unpack_q4_K(const sd_block_q4_K *b, sd_qunpacked *u) {
    for (int i = 0; i < 4; i++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * i + l] = (int8_t)(b->qs[32 * i + l] & 15);
            u->q[64 * i + 32 + l] = (int8_t)(b->qs[32 * i + l] >> 4);
        }
    sd_k4_affine(b->scales, b->d, b->dmin, u);
}

/* Q5_K: Q4_K plus a fifth bit, bit j of qh[l] for sub-block j. */
SD_QI void sd_unpack_q5_K(const sd_block_q5_K *b, sd_qunpacked *u) {
    for (int i = 0; i < 4; i++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * i + l] = (int8_t)((b->qs[32 * i + l] & 15) | ((b->qh[l] >> (2 * i)) & 1) << 4);
            u->q[64 * i + 32 + l] = (int8_t)((b->qs[32 * i + l] >> 4) | ((b->qh[l] >> (2 * i + 1)) & 1) << 4);
        }
    sd_k4_affine(b->scales, b->d, b->dmin, u);
}

/* Q6_K: per half of 128, element 32 * s + l takes the nibble of ql[l + 32 * (s & 1)] (low for s < 2) and
 * bits [2s, 2s+2) of qh[l], minus 32; scale index 8 * half + 2 * s + l / 16 (int8, times d). */
SD_QI void sd_unpack_q6_K(const sd_block_q6_K *b, sd_qunpacked *u) {
    float d = sd_fp16_to_fp32(b->d);
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        for (int l = 0; l < 32; l++) {
            int8_t *q = u->q + 128 * half + l;
            q[0] = (int8_t)(((ql[l] & 15) | (qh[l] & 3) << 4) - 32);
            q[32] = (int8_t)(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
            q[64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            q[96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
        }
    }
    for (int k = 0; k < 16; k++) {
        u->sc[k] = d * (float)b->scales[k];
        u->off[k] = 0.0f;
    }
}

/* IQ4_XS sub-block scale (6 bits, offset 32). */
SD_QI int sd_iq4xs_scale(const sd_block_iq4_xs *b, int ib) {
    return (((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | ((b->scales_h >> (2 * ib)) & 3) << 4) - 32;
}

SD_QI void sd_unpack_iq4_xs(const sd_block_iq4_xs *b, sd_qunpacked *u) {
    float d = sd_fp16_to_fp32(b->d);
    for (int ib = 0; ib < 8; ib++) {
        const uint8_t *q = b->qs + 16 * ib;
        for (int j = 0; j < 16; j++) {
            u->q[32 * ib + j] = sd_iq4nl_value(q[j] & 15);
            u->q[32 * ib + 16 + j] = sd_iq4nl_value(q[j] >> 4);
        }
        sd_set_affine(u, 2 * ib, 2, d * (float)sd_iq4xs_scale(b, ib), 0.0f);
    }
}

/* One block of any quantized type unpacked; false for other types. */
SD_QI bool sd_unpack_block(int type, const void *blk, sd_qunpacked *u) {
    switch (type) {
    case SD_Q4_0: sd_unpack_q4_0((const sd_block_q4_0 *)blk, u); return true;
    case SD_Q4_1: sd_unpack_q4_1((const sd_block_q4_1 *)blk, u); return true;
    case SD_Q5_0: sd_unpack_q5_0((const sd_block_q5_0 *)blk, u); return true;
    case SD_Q5_1: sd_unpack_q5_1((const sd_block_q5_1 *)blk, u); return true;
    case SD_Q8_0: sd_unpack_q8_0((const sd_block_q8_0 *)blk, u); return true;
    case SD_Q2_K: sd_unpack_q2_K((const sd_block_q2_K *)blk, u); return true;
    case SD_Q3_K: sd_unpack_q3_K((const sd_block_q3_K *)blk, u); return true;
    case SD_Q4_K: sd_unpack_q4_K((const sd_block_q4_K *)blk, u); return true;
    case SD_Q5_K: sd_unpack_q5_K((const sd_block_q5_K *)blk, u); return true;
    case SD_Q6_K: sd_unpack_q6_K((const sd_block_q6_K *)blk, u); return true;
    case SD_IQ4_NL: sd_unpack_iq4_nl((const sd_block_iq4_nl *)blk, u); return true;
    case SD_IQ4_XS: sd_unpack_iq4_xs((const sd_block_iq4_xs *)blk, u); return true;
    default: return false;
    }
}

/* One block of any quantized type to sd_quant_block(type) floats; false for other types. */
SD_QI bool sd_dequant_block(int type, const void *blk, float *y) {
    sd_qunpacked u;
    if (!sd_unpack_block(type, blk, &u)) return false;
    for (int i = 0; i < sd_quant_block(type); i++) y[i] = u.sc[i / 16] * (float)u.q[i] + u.off[i / 16];
    return true;
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
