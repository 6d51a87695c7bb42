/* Register decoders of GGML's quantized blocks (kernels/quant_k.h layouts, as in the file) for the CUDA
 * kernels: one group of 32 consecutive weights at a time, as 8 ints of 4 int8 levels (element order) and a
 * scale and an offset per 16, so weight w_i = sc[i / 16] * q_i + off[i / 16], the floats the CPU's
 * sd_unpack_block gives. The levels pair with int8 activations in dp4a; nothing goes through local memory
 * (the whole-block unpack of quant_k.h needs a 256-byte array per thread).
 *
 * qdec<TYPE> describes a type: QK elements and BB bytes per block; a lane's unit of work is a chunk of E
 * elements (G = E / 32 groups) sharing its quant bytes (Q4_K's low and high nibbles, Q2_K's four 2-bit
 * planes), CPB = QK / E chunks per block; group(blk, c, g, w) decodes group g of chunk c of the block at
 * blk, whose first element is xoff(c, g) within the block; OFF: the type has offsets (minimums); loads are
 * as wide as the block's alignment allows (a row of Q4_0 blocks is 2-byte aligned, of Q4_K 16-byte). */
#ifndef SD_CUDA_QDECODE_H
#define SD_CUDA_QDECODE_H
#include <cuda_fp16.h>
#include <stdint.h>

#include "kernels/quant_k.h"

typedef struct qgroup {
    int q[8];             /* 32 int8 levels, four per int, element order */
    float sc[2], off[2];  /* per 16 elements */
} qgroup;

__device__ __forceinline__ uint32_t qd_u16(const uint8_t *p) { return __ldg((const unsigned short *)p); }
__device__ __forceinline__ uint32_t qd_u32(const uint8_t *p) { return __ldg((const unsigned int *)p); }
__device__ __forceinline__ uint32_t qd_u32_a2(const uint8_t *p) { return qd_u16(p) | qd_u16(p + 2) << 16; }
__device__ __forceinline__ float qd_half(uint32_t bits) { return __half2float(__ushort_as_half((unsigned short)(bits & 0xffff))); }
/* four bytes each below 128 + b, minus b, as signed bytes (no borrow crosses a byte) */
__device__ __forceinline__ int qd_sub(uint32_t v, int b) { return (int)((v + (0x80u - (uint32_t)b) * 0x01010101u) ^ 0x80808080u); }
/* bits 0..3 of h to bit 0 of bytes 0..3 */
__device__ __forceinline__ uint32_t qd_spread4(uint32_t h) { return ((h & 15u) * 0x00204081u) & 0x01010101u; }
__device__ __forceinline__ void qd_affine(qgroup &w, float sc, float off) {
    w.sc[0] = w.sc[1] = sc;
    w.off[0] = w.off[1] = off;
}
/* byte i (0..11) of three little-endian words */
__device__ __forceinline__ uint32_t qd_byte12(uint32_t a, uint32_t b, uint32_t c, int i) {
    return ((i < 4 ? a : i < 8 ? b : c) >> (8 * (i & 3))) & 0xffu;
}

/* IQ4_NL's levels as bytes, four per word, for __byte_perm lookups */
static constexpr int8_t qd_iq4_levels[16] = SD_IQ4NL_LEVELS;
static constexpr uint32_t qd_iq4_word(int i) {
    return (uint32_t)(uint8_t)qd_iq4_levels[i] | (uint32_t)(uint8_t)qd_iq4_levels[i + 1] << 8 |
           (uint32_t)(uint8_t)qd_iq4_levels[i + 2] << 16 | (uint32_t)(uint8_t)qd_iq4_levels[i + 3] << 24;
}
static constexpr uint32_t qd_iq4_w0 = qd_iq4_word(0), qd_iq4_w1 = qd_iq4_word(4), qd_iq4_w2 = qd_iq4_word(8),
                          qd_iq4_w3 = qd_iq4_word(12);
/* four nibbles (one per byte) to their IQ4_NL levels */
__device__ __forceinline__ int qd_iq4(uint32_t n) {
    uint32_t sel = (n & 7u) | (n >> 4 & 0x70u) | (n >> 8 & 0x700u) | (n >> 12 & 0x7000u);
    uint32_t lo = __byte_perm(qd_iq4_w0, qd_iq4_w1, sel), hi = __byte_perm(qd_iq4_w2, qd_iq4_w3, sel);
    uint32_t m = (n >> 3 & 0x01010101u) * 0xffu;
    return (int)((lo & ~m) | (hi & m));
}

template <int T> struct qdec;

/* chunks of contiguous groups (all types but Q6_K) */
template <int QK_, int BB_, int E_, bool OFF_> struct qdec_base {
    static constexpr int QK = QK_, BB = BB_, E = E_, G = E_ / 32, CPB = QK_ / E_;
    static constexpr bool OFF = OFF_;
    __device__ static int xoff(int c, int g) { return c * E_ + 32 * g; }
    __device__ static void locate(int e, int &c, int &g) { c = e / E_; g = e % E_ / 32; }
};

template <> struct qdec<SD_Q4_0> : qdec_base<32, 18, 32, false> {
    __device__ static void group(const uint8_t *b, int, int, qgroup &w) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t v = qd_u32_a2(b + 2 + 4 * k);
            w.q[k] = qd_sub(v & 0x0f0f0f0fu, 8);
            w.q[k + 4] = qd_sub(v >> 4 & 0x0f0f0f0fu, 8);
        }
        qd_affine(w, qd_half(qd_u16(b)), 0.0f);
    }
};

template <> struct qdec<SD_Q4_1> : qdec_base<32, 20, 32, true> {
    __device__ static void group(const uint8_t *b, int, int, qgroup &w) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t v = qd_u32(b + 4 + 4 * k);
            w.q[k] = (int)(v & 0x0f0f0f0fu);
            w.q[k + 4] = (int)(v >> 4 & 0x0f0f0f0fu);
        }
        uint32_t dm = qd_u32(b);
        qd_affine(w, qd_half(dm), qd_half(dm >> 16));
    }
};

template <> struct qdec<SD_Q5_0> : qdec_base<32, 22, 32, false> {
    __device__ static void group(const uint8_t *b, int, int, qgroup &w) {
        uint32_t h = qd_u32_a2(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t v = qd_u32_a2(b + 6 + 4 * k);
            w.q[k] = qd_sub((v & 0x0f0f0f0fu) | qd_spread4(h >> 4 * k) << 4, 16);
            w.q[k + 4] = qd_sub((v >> 4 & 0x0f0f0f0fu) | qd_spread4(h >> (16 + 4 * k)) << 4, 16);
        }
        qd_affine(w, qd_half(qd_u16(b)), 0.0f);
    }
};

template <> struct qdec<SD_Q5_1> : qdec_base<32, 24, 32, true> {
    __device__ static void group(const uint8_t *b, int, int, qgroup &w) {
        uint32_t h = qd_u32(b + 4);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t v = qd_u32(b + 8 + 4 * k);
            w.q[k] = (int)((v & 0x0f0f0f0fu) | qd_spread4(h >> 4 * k) << 4);
            w.q[k + 4] = (int)((v >> 4 & 0x0f0f0f0fu) | qd_spread4(h >> (16 + 4 * k)) << 4);
        }
        uint32_t dm = qd_u32(b);
        qd_affine(w, qd_half(dm), qd_half(dm >> 16));
    }
};

template <> struct qdec<SD_IQ4_NL> : qdec_base<32, 18, 32, false> {
    __device__ static void group(const uint8_t *b, int, int, qgroup &w) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t v = qd_u32_a2(b + 2 + 4 * k);
            w.q[k] = qd_iq4(v & 0x0f0f0f0fu);
            w.q[k + 4] = qd_iq4(v >> 4 & 0x0f0f0f0fu);
        }
        qd_affine(w, qd_half(qd_u16(b)), 0.0f);
    }
};

/* IQ4_XS: a chunk is sub-block c (16 quant bytes at 8 + 16c, like an IQ4_NL block). */
template <> struct qdec<SD_IQ4_XS> : qdec_base<256, 136, 32, false> {
    __device__ static void group(const uint8_t *b, int c, int, qgroup &w) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t v = qd_u32(b + 8 + 16 * c + 4 * k);
            w.q[k] = qd_iq4(v & 0x0f0f0f0fu);
            w.q[k + 4] = qd_iq4(v >> 4 & 0x0f0f0f0fu);
        }
        uint32_t dh = qd_u32(b), sl = qd_u32(b + 4);
        int s = (int)((sl >> 4 * c & 15u) | (dh >> (16 + 2 * c) & 3u) << 4) - 32;
        qd_affine(w, qd_half(dh) * (float)s, 0.0f);
    }
};

/* Q4_K / Q5_K: chunk c is quant bytes [32c, 32c + 32): sub-block 2c + g (g = 0: low nibbles, 1: high);
 * scale and min of sub-block j as sd_k4_scale_min, from the 12 scale bytes at 4. */
__device__ __forceinline__ void qd_k4_affine(const uint8_t *b, int j, qgroup &w) {
    uint32_t dm = qd_u32(b), s0 = qd_u32(b + 4), s1 = qd_u32(b + 8), s2 = qd_u32(b + 12);
    int sh = 8 * (j & 3);
    uint32_t sc, m;
    if (j < 4) {
        sc = s0 >> sh & 63u;
        m = s1 >> sh & 63u;
    } else {
        sc = (s2 >> sh & 15u) | (s0 >> (sh + 6) & 3u) << 4;
        m = (s2 >> (sh + 4) & 15u) | (s1 >> (sh + 6) & 3u) << 4;
    }
    qd_affine(w, qd_half(dm) * (float)sc, -(qd_half(dm >> 16) * (float)m));
}

__device__ __forceinline__ void qd_ld32(const uint8_t *p, uint32_t (&v)[8]) { /* 16-byte aligned p */
    uint4 a = __ldg((const uint4 *)p), b = __ldg((const uint4 *)(p + 16));
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

template <> struct qdec<SD_Q4_K> : qdec_base<256, 144, 64, true> {
    __device__ static void group(const uint8_t *b, int c, int g, qgroup &w) {
        uint32_t v[8];
        qd_ld32(b + 16 + 32 * c, v);
#pragma unroll
        for (int k = 0; k < 8; k++) w.q[k] = (int)(v[k] >> 4 * g & 0x0f0f0f0fu);
        qd_k4_affine(b, 2 * c + g, w);
    }
};

template <> struct qdec<SD_Q5_K> : qdec_base<256, 176, 64, true> {
    __device__ static void group(const uint8_t *b, int c, int g, qgroup &w) {
        uint32_t v[8], h[8];
        qd_ld32(b + 48 + 32 * c, v);
        qd_ld32(b + 16, h);
        int j = 2 * c + g;
#pragma unroll
        for (int k = 0; k < 8; k++) w.q[k] = (int)((v[k] >> 4 * g & 0x0f0f0f0fu) | (h[k] >> j & 0x01010101u) << 4);
        qd_k4_affine(b, j, w);
    }
};

/* Q2_K: chunk c is the half [128c, 128c + 128): group g takes bits [2g, 2g + 2) of quant bytes
 * [16 + 32c, +32); sub-blocks 8c + 2g and 8c + 2g + 1 (scale byte: 4-bit scale low, 4-bit min high). */
template <> struct qdec<SD_Q2_K> : qdec_base<256, 84, 128, true> {
    __device__ static void group(const uint8_t *b, int c, int g, qgroup &w) {
#pragma unroll
        for (int k = 0; k < 8; k++) w.q[k] = (int)(qd_u32(b + 16 + 32 * c + 4 * k) >> 2 * g & 0x03030303u);
        uint32_t dm = qd_u32(b + 80), s = qd_u16(b + 8 * c + 2 * g);
        float d = qd_half(dm), dmin = qd_half(dm >> 16);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint32_t sb = s >> 8 * i & 0xffu;
            w.sc[i] = d * (float)(sb & 15u);
            w.off[i] = -(dmin * (float)(sb >> 4));
        }
    }
};

/* Q3_K: Q2_K's order; the third bit is bit 4c + g of hmask[l]; six-bit scales as sd_q3k_scale. */
template <> struct qdec<SD_Q3_K> : qdec_base<256, 110, 128, false> {
    __device__ static void group(const uint8_t *b, int c, int g, qgroup &w) {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            uint32_t lo = qd_u32_a2(b + 32 + 32 * c + 4 * k) >> 2 * g & 0x03030303u;
            uint32_t hi = qd_u32_a2(b + 4 * k) >> (4 * c + g) & 0x01010101u;
            w.q[k] = qd_sub(lo | hi << 2, 4);
        }
        uint32_t s0 = qd_u32_a2(b + 96), s1 = qd_u32_a2(b + 100), s2 = qd_u32_a2(b + 104);
        float d = qd_half(qd_u16(b + 108));
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int k = 8 * c + 2 * g + i;
            uint32_t lo = k < 8 ? qd_byte12(s0, s1, s2, k) & 15u : qd_byte12(s0, s1, s2, k - 8) >> 4;
            uint32_t hi = qd_byte12(s0, s1, s2, 8 + k % 4) >> 2 * (k / 4) & 3u;
            w.sc[i] = d * (float)((int)(lo | hi << 4) - 32);
            w.off[i] = 0.0f;
        }
    }
};

/* Q6_K: chunk c = (half h = c / 2, t = c % 2) holds groups s = t and t + 2 of the half, which share the
 * low-bit bytes ql[64h + 32t, +32) (low nibbles for s < 2) and the high-bit bytes qh[32h, +32) (bits 2s). */
template <> struct qdec<SD_Q6_K> {
    static constexpr int QK = 256, BB = 210, E = 64, G = 2, CPB = 4;
    static constexpr bool OFF = false;
    __device__ static int xoff(int c, int g) { return 128 * (c >> 1) + 32 * ((c & 1) + 2 * g); }
    __device__ static void locate(int e, int &c, int &g) {
        int s = e % 128 / 32;
        c = 2 * (e / 128) + (s & 1);
        g = s >> 1;
    }
    __device__ static void group(const uint8_t *b, int c, int g, qgroup &w) {
        int h = c >> 1, s = (c & 1) + 2 * g;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            uint32_t lo = qd_u32_a2(b + 64 * h + 32 * (c & 1) + 4 * k) >> 4 * g & 0x0f0f0f0fu;
            uint32_t hi = qd_u32_a2(b + 128 + 32 * h + 4 * k) >> 2 * s & 0x03030303u;
            w.q[k] = qd_sub(lo | hi << 4, 32);
        }
        uint32_t sc = qd_u16(b + 192 + 8 * h + 2 * s);
        float d = qd_half(qd_u16(b + 208));
        w.sc[0] = d * (float)(int8_t)(sc & 0xffu);
        w.sc[1] = d * (float)(int8_t)(sc >> 8);
        w.off[0] = w.off[1] = 0.0f;
    }
};

/* Weight `e` (0 .. 31) of a decoded group, without indexing the arrays by a runtime value (which would put
 * them in local memory). */
__device__ __forceinline__ float qgroup_elem(const qgroup &w, int e) {
    int v = 0;
#pragma unroll
    for (int k = 0; k < 8; k++)
        if (k == e / 4) v = w.q[k];
    float q = (float)(int8_t)(v >> 8 * (e % 4) & 0xff);
    return e < 16 ? w.sc[0] * q + w.off[0] : w.sc[1] * q + w.off[1];
}

/* Element e of the block at blk (reference path: gathers, odd shapes): decodes only its group. */
template <int T> __device__ __forceinline__ float qdec_elem(const uint8_t *blk, int e) {
    int c, g;
    qdec<T>::locate(e, c, g);
    qgroup w;
    qdec<T>::group(blk, c, g, w);
    return qgroup_elem(w, e - qdec<T>::xoff(c, g));
}

/* Element (r, c) of a matrix of any of the types above, in the file's layout; 0 for other types. */
__device__ __forceinline__ float qdec_load(const void *data, int type, int64_t cols, int64_t r, int64_t c) {
    int qk = sd_quant_block(type);
    const uint8_t *blk = (const uint8_t *)data + ((size_t)r * (size_t)(cols / qk) + (size_t)(c / qk)) * sd_quant_block_bytes(type);
    int e = (int)(c % qk);
    switch (type) {
    case SD_Q4_0: return qdec_elem<SD_Q4_0>(blk, e);
    case SD_Q4_1: return qdec_elem<SD_Q4_1>(blk, e);
    case SD_Q5_0: return qdec_elem<SD_Q5_0>(blk, e);
    case SD_Q5_1: return qdec_elem<SD_Q5_1>(blk, e);
    case SD_Q2_K: return qdec_elem<SD_Q2_K>(blk, e);
    case SD_Q3_K: return qdec_elem<SD_Q3_K>(blk, e);
    case SD_Q4_K: return qdec_elem<SD_Q4_K>(blk, e);
    case SD_Q5_K: return qdec_elem<SD_Q5_K>(blk, e);
    case SD_Q6_K: return qdec_elem<SD_Q6_K>(blk, e);
    case SD_IQ4_NL: return qdec_elem<SD_IQ4_NL>(blk, e);
    case SD_IQ4_XS: return qdec_elem<SD_IQ4_XS>(blk, e);
    default: return 0.0f;
    }
}

#endif
