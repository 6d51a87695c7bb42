/* A CPU emulation of the CUDA subset kernels/cuda uses, so tests/test_cuda.c runs its kernels on every
 * change where no GPU exists. It lives under tests/ because it is test machinery only: specd never links
 * it, and `make test` builds it into build/tests/test_cuda_emu (see the Makefile's emulation section).
 *
 * How it works:
 *  - kernels/cuda/ *.cu are compiled unchanged by g++ -std=c++17 after tests/cuda_emu/launch.sed rewrites
 *    each `k<<<grid, block, smem, stream>>>(args)` into `emu::launch_cfg("k", grid, block, smem, stream)(k, args)`.
 *    These headers stand in for cuda_runtime.h, cuda_fp16.h, cuda_bf16.h and cublas_v2.h.
 *  - Every GPU thread of a block is a fiber (emu_sched.cpp). A fiber runs until it reaches __syncthreads or a
 *    warp collective (shuffle, vote, __syncwarp), which are scheduling barriers over the block's fibers;
 *    blocks run one after the other, so `__shared__` variables are static storage (poisoned with 0xff bytes
 *    before every block: a read of shared memory no thread wrote shows up as NaN or -1).
 *  - Device memory is malloc'ed and the emulated test is built with ASan and UBSan, so an out-of-bounds or
 *    misaligned access in a kernel is reported (with the kernel, block and thread that made it).
 *  - Streams queue their work and run it when the host waits (stream/event/device sync, blocking copies),
 *    following the CUDA documentation's synchronisation rules, so a missing wait shows up as a wrong
 *    result. Graph capture records launches and copies and replays them; calls that are illegal while a
 *    stream captures (cudaMalloc, cudaFree, blocking copies, syncs, pageable copies) fail the capture.
 *  - cublasGemmEx follows cuBLAS's column-major definition, computed in double on the CPU.
 *
 * Flagged as faults (a report naming kernel, block, thread and source line; then abort(), or with
 * SPECD_EMU_FATAL=0 the sticky error cudaErrorLaunchFailure): barrier deadlocks (threads waiting at
 * different __syncthreads, or some exited while others wait), warp collectives whose mask names an exited,
 * missing or diverged lane, shuffles reading a lane outside the mask, kernel pointer arguments that are not
 * device memory, bad launch configurations. Not caught: host code dereferencing device pointers (device
 * memory is host memory here), data races between threads (fibers switch only at barriers), timing. */
#ifndef SD_CUDA_EMU_H
#define SD_CUDA_EMU_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- the language: qualifiers and built-in variables ---- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __constant__
#define __managed__
/* One block runs at a time, so a block's shared memory is static storage; the section lets the scheduler
 * poison all of it before each block (emu_sched.cpp). `extern __shared__ T x[];` is rewritten by
 * launch.sed into a pointer to the launch's dynamic shared memory. */
#define __shared__ static __attribute__((section("emu_shared")))

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

namespace emu {
struct fiber;
extern fiber *cur;              /* the running GPU thread */
extern uint3 block_idx;         /* of the running block */
extern dim3 block_dim, grid_dim;
const uint3 &thread_idx();
void *dyn_smem();               /* the launch's dynamic shared memory */
} // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
static const int warpSize = 32;

/* ---- vector types ---- */

#define EMU_VEC2(T, N, A) struct __align__(A) N##2 { T x, y; }; \
    static inline N##2 make_##N##2(T a, T b) { return N##2{a, b}; }
#define EMU_VEC3(T, N) struct N##3 { T x, y, z; }; \
    static inline N##3 make_##N##3(T a, T b, T c) { return N##3{a, b, c}; }
#define EMU_VEC4(T, N, A) struct __align__(A) N##4 { T x, y, z, w; }; \
    static inline N##4 make_##N##4(T a, T b, T c, T d) { return N##4{a, b, c, d}; }
EMU_VEC2(signed char, char, 2) EMU_VEC4(signed char, char, 4)
EMU_VEC2(unsigned char, uchar, 2) EMU_VEC4(unsigned char, uchar, 4)
EMU_VEC2(short, short, 4) EMU_VEC4(short, short, 8)
EMU_VEC2(unsigned short, ushort, 4) EMU_VEC4(unsigned short, ushort, 8)
EMU_VEC2(int, int, 8) EMU_VEC3(int, int) EMU_VEC4(int, int, 16)
EMU_VEC2(unsigned int, uint, 8) EMU_VEC4(unsigned int, uint, 16)
EMU_VEC2(float, float, 8) EMU_VEC3(float, float) EMU_VEC4(float, float, 16)
EMU_VEC2(double, double, 16)
EMU_VEC2(long long, longlong, 16)
EMU_VEC2(unsigned long long, ulonglong, 16)
static inline uint3 make_uint3(unsigned a, unsigned b, unsigned c) { return uint3{a, b, c}; }
#undef EMU_VEC2
#undef EMU_VEC3
#undef EMU_VEC4

/* ---- math and bit intrinsics (IEEE versions of the fast approximations) ---- */

template <class A, class B> static inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type T;
    return (T)a < (T)b ? (T)a : (T)b;
}
template <class A, class B> static inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type T;
    return (T)a > (T)b ? (T)a : (T)b;
}
/* glibc declares these names itself (its own aliases of the libm functions): macros, not definitions */
#define __expf(x) expf(x)
#define __exp10f(x) powf(10.0f, (x))
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf((x), (s), (c))
#define __powf(x, y) powf((x), (y))
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x == x ? x : 0.0f; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
template <class To, class From> static inline To emu_bits(From f) {
    static_assert(sizeof(To) == sizeof(From), "same size");
    To t;
    memcpy(&t, &f, sizeof t);
    return t;
}
static inline int __float_as_int(float x) { return emu_bits<int>(x); }
static inline unsigned __float_as_uint(float x) { return emu_bits<unsigned>(x); }
static inline float __int_as_float(int x) { return emu_bits<float>(x); }
static inline float __uint_as_float(unsigned x) { return emu_bits<float>(x); }
static inline long long __double_as_longlong(double x) { return emu_bits<long long>(x); }
static inline double __longlong_as_double(long long x) { return emu_bits<double>(x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __mul24(int a, int b) { return (int)((long long)(a << 8 >> 8) * (b << 8 >> 8)); }
/* Four signed 8-bit products summed into c. */
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
static inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    for (int i = 0; i < 4; i++) c += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
    return c;
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
template <class T> static inline T __ldg(const T *p) { return *p; }
template <class T> static inline T __ldcg(const T *p) { return *p; }
template <class T> static inline T __ldcs(const T *p) { return *p; }
template <class T> static inline T __ldlu(const T *p) { return *p; }
template <class T> static inline void __stcg(T *p, T v) { *p = v; }
template <class T> static inline void __stcs(T *p, T v) { *p = v; }
static inline void __threadfence() {}
static inline void __threadfence_block() {}
static inline void __threadfence_system() {}
static inline void __nanosleep(unsigned) {}
static inline void __trap() { abort(); }
static inline long long clock64() { return 0; }

/* Atomics: fibers of a block never run at the same time and blocks run in turn, so plain read-modify-write
 * is atomic here. */
template <class T, class U> static inline T atomicAdd(T *p, U v) { T o = *p; *p = (T)(o + (T)v); return o; }
template <class T, class U> static inline T atomicSub(T *p, U v) { T o = *p; *p = (T)(o - (T)v); return o; }
template <class T, class U> static inline T atomicMax(T *p, U v) { T o = *p; if ((T)v > o) *p = (T)v; return o; }
template <class T, class U> static inline T atomicMin(T *p, U v) { T o = *p; if ((T)v < o) *p = (T)v; return o; }
template <class T, class U> static inline T atomicExch(T *p, U v) { T o = *p; *p = (T)v; return o; }
template <class T, class U> static inline T atomicAnd(T *p, U v) { T o = *p; *p = (T)(o & (T)v); return o; }
template <class T, class U> static inline T atomicOr(T *p, U v) { T o = *p; *p = (T)(o | (T)v); return o; }
template <class T, class U> static inline T atomicXor(T *p, U v) { T o = *p; *p = (T)(o ^ (T)v); return o; }
template <class T, class U, class V> static inline T atomicCAS(T *p, U cmp, V v) {
    T o = *p;
    if (o == (T)cmp) *p = (T)v;
    return o;
}
static inline unsigned atomicInc(unsigned *p, unsigned lim) { unsigned o = *p; *p = o >= lim ? 0 : o + 1; return o; }
static inline unsigned atomicDec(unsigned *p, unsigned lim) {
    unsigned o = *p;
    *p = (o == 0 || o > lim) ? lim : o - 1;
    return o;
}

/* ---- block and warp collectives: scheduling points (emu_sched.cpp) ---- */

namespace emu {
enum warp_op { W_SHFL, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_SYNCWARP, W_MATCH_ANY,
               W_REDUCE_ADD, W_REDUCE_MIN, W_REDUCE_MAX };
enum bar_op { B_SYNC, B_COUNT, B_AND, B_OR };
/* The calling thread waits at the warp collective `op` with the lanes of mask; returns its result. */
uint64_t warp_collective(const char *file, int line, int op, unsigned mask, uint64_t value, int arg, int width);
int block_barrier(const char *file, int line, int op, int pred);
unsigned active_mask();
unsigned lane_id();

template <class T> static inline uint64_t to_u64(T v) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    return u;
}
template <class T> static inline T from_u64(uint64_t u) {
    T v;
    memcpy(&v, &u, sizeof v);
    return v;
}
static inline unsigned mask_or_all(unsigned m = 0xffffffffu) { return m; }
template <class T> static inline T shfl(const char *f, int l, int op, unsigned mask, T v, int arg, int width = 32) {
    return from_u64<T>(warp_collective(f, l, op, mask, to_u64(v), arg, width));
}
} // namespace emu

#define __syncthreads() emu::block_barrier(__FILE__, __LINE__, emu::B_SYNC, 1)
#define __syncthreads_count(p) emu::block_barrier(__FILE__, __LINE__, emu::B_COUNT, (p) != 0)
#define __syncthreads_and(p) emu::block_barrier(__FILE__, __LINE__, emu::B_AND, (p) != 0)
#define __syncthreads_or(p) emu::block_barrier(__FILE__, __LINE__, emu::B_OR, (p) != 0)
#define __syncwarp(...) ((void)emu::warp_collective(__FILE__, __LINE__, emu::W_SYNCWARP, emu::mask_or_all(__VA_ARGS__), 0, 0, 32))
#define __shfl_sync(...) emu::shfl(__FILE__, __LINE__, emu::W_SHFL, __VA_ARGS__)
#define __shfl_up_sync(...) emu::shfl(__FILE__, __LINE__, emu::W_SHFL_UP, __VA_ARGS__)
#define __shfl_down_sync(...) emu::shfl(__FILE__, __LINE__, emu::W_SHFL_DOWN, __VA_ARGS__)
#define __shfl_xor_sync(...) emu::shfl(__FILE__, __LINE__, emu::W_SHFL_XOR, __VA_ARGS__)
#define __ballot_sync(m, p) ((unsigned)emu::warp_collective(__FILE__, __LINE__, emu::W_BALLOT, (m), (p) != 0, 0, 32))
#define __any_sync(m, p) ((int)emu::warp_collective(__FILE__, __LINE__, emu::W_ANY, (m), (p) != 0, 0, 32))
#define __all_sync(m, p) ((int)emu::warp_collective(__FILE__, __LINE__, emu::W_ALL, (m), (p) != 0, 0, 32))
#define __match_any_sync(m, v) ((unsigned)emu::warp_collective(__FILE__, __LINE__, emu::W_MATCH_ANY, (m), emu::to_u64(v), 0, 32))
#define __reduce_add_sync(m, v) ((unsigned)emu::warp_collective(__FILE__, __LINE__, emu::W_REDUCE_ADD, (m), (unsigned)(v), 0, 32))
#define __reduce_min_sync(m, v) ((unsigned)emu::warp_collective(__FILE__, __LINE__, emu::W_REDUCE_MIN, (m), (unsigned)(v), 0, 32))
#define __reduce_max_sync(m, v) ((unsigned)emu::warp_collective(__FILE__, __LINE__, emu::W_REDUCE_MAX, (m), (unsigned)(v), 0, 32))
#define __activemask() emu::active_mask()

#include "tests/cuda_emu/emu_half.h"
#include "tests/cuda_emu/emu_runtime.h"
#endif
