/* __half, __half2, __nv_bfloat16, __nv_bfloat162 and the conversion intrinsics the kernels use, for the
 * CUDA emulation (emu.h). F16 rounding comes from the compiler's _Float16 (an implementation independent
 * of kernels/quant.h's, which the tests compare against); BF16 rounds to nearest even by hand. */
#ifndef SD_CUDA_EMU_HALF_H
#define SD_CUDA_EMU_HALF_H
#include <stdint.h>
#include <string.h>

static inline uint16_t emu_f32_to_f16_bits(float f) {
    _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
static inline float emu_f16_bits_to_f32(uint16_t u) {
    _Float16 h;
    memcpy(&h, &u, 2);
    return (float)h;
}
static inline uint16_t emu_f32_to_bf16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* NaN stays NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
static inline float emu_bf16_bits_to_f32(uint16_t u) {
    uint32_t x = (uint32_t)u << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

struct __align__(2) __half {
    uint16_t __x;
    __half() = default;
    __half(float f) : __x(emu_f32_to_f16_bits(f)) {}
    __half(double d) : __x(emu_f32_to_f16_bits((float)d)) {}
    __half(int i) : __x(emu_f32_to_f16_bits((float)i)) {}
    operator float() const { return emu_f16_bits_to_f32(__x); }
};
struct __align__(4) __half2 {
    __half x, y;
};
struct __align__(2) __nv_bfloat16 {
    uint16_t __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(emu_f32_to_bf16_bits(f)) {}
    __nv_bfloat16(double d) : __x(emu_f32_to_bf16_bits((float)d)) {}
    __nv_bfloat16(int i) : __x(emu_f32_to_bf16_bits((float)i)) {}
    operator float() const { return emu_bf16_bits_to_f32(__x); }
};
struct __align__(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

static inline __half __float2half(float f) { return __half(f); }
static inline __half __float2half_rn(float f) { return __half(f); }
static inline float __half2float(__half h) { return (float)h; }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
static inline __half2 __float2half2_rn(float a) { return __half2{__half(a), __half(a)}; }
static inline __half2 __float22half2_rn(float2 f) { return __half2{__half(f.x), __half(f.y)}; }
static inline float2 __half22float2(__half2 h) { return float2{(float)h.x, (float)h.y}; }
static inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
static inline __half2 __half2half2(__half a) { return __half2{a, a}; }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline float __low2float(__half2 h) { return (float)h.x; }
static inline float __high2float(__half2 h) { return (float)h.y; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
static inline short __half_as_short(__half h) { return (short)h.__x; }
static inline __half __short_as_half(short u) { __half h; h.__x = (uint16_t)u; return h; }
static inline __half __int2half_rn(int i) { return __half((float)i); }
static inline int __half2int_rn(__half h) { return (int)nearbyintf((float)h); }
static inline bool __hisnan(__half h) { float f = h; return f != f; }
static inline bool __hisinf(__half h) { return isinf((float)h); }
static inline __half __habs(__half h) { h.__x &= 0x7fff; return h; }
static inline __half __hneg(__half h) { h.__x ^= 0x8000; return h; }

static inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 h) { return (float)h; }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__nv_bfloat16(a), __nv_bfloat16(b)};
}
static inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __nv_bfloat162{__nv_bfloat16(a), __nv_bfloat16(a)}; }
static inline __nv_bfloat162 __float22bfloat162_rn(float2 f) {
    return __nv_bfloat162{__nv_bfloat16(f.x), __nv_bfloat16(f.y)};
}
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{(float)h.x, (float)h.y}; }
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162{a, b}; }
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }

/* Arithmetic rounds each result to the 16-bit type, as the hardware instructions do. */
#define EMU_H_OPS(H, H2)                                                                                     \
    static inline H __hadd(H a, H b) { return H((float)a + (float)b); }                                     \
    static inline H __hsub(H a, H b) { return H((float)a - (float)b); }                                     \
    static inline H __hmul(H a, H b) { return H((float)a * (float)b); }                                     \
    static inline H __hdiv(H a, H b) { return H((float)a / (float)b); }                                     \
    static inline H __hfma(H a, H b, H c) { return H(fmaf((float)a, (float)b, (float)c)); }                 \
    static inline H __hmax(H a, H b) { return (float)a > (float)b ? a : b; }                                \
    static inline H __hmin(H a, H b) { return (float)a < (float)b ? a : b; }                                \
    static inline bool __heq(H a, H b) { return (float)a == (float)b; }                                     \
    static inline bool __hlt(H a, H b) { return (float)a < (float)b; }                                      \
    static inline bool __hgt(H a, H b) { return (float)a > (float)b; }                                      \
    static inline H2 __hadd2(H2 a, H2 b) { return H2{__hadd(a.x, b.x), __hadd(a.y, b.y)}; }                 \
    static inline H2 __hmul2(H2 a, H2 b) { return H2{__hmul(a.x, b.x), __hmul(a.y, b.y)}; }                 \
    static inline H2 __hfma2(H2 a, H2 b, H2 c) { return H2{__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)}; } \
    static inline H operator+(H a, H b) { return __hadd(a, b); }                                            \
    static inline H operator-(H a, H b) { return __hsub(a, b); }                                            \
    static inline H operator*(H a, H b) { return __hmul(a, b); }                                            \
    static inline H operator/(H a, H b) { return __hdiv(a, b); }
EMU_H_OPS(__half, __half2)
EMU_H_OPS(__nv_bfloat16, __nv_bfloat162)
#undef EMU_H_OPS
#endif
