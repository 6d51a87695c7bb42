#include "kernels/cpu/simd.h"

#include <stdlib.h>
#include <string.h>

static const char *const names[SD_SIMD_COUNT] = {"scalar", "avx", "avx2", "avx512"};

const char *sd_simd_name(sd_simd s) { return (unsigned)s < SD_SIMD_COUNT ? names[s] : "?"; }

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
/* F16C from CPUID leaf 1 (ECX bit 29): clang before 15 has no "f16c" for __builtin_cpu_supports. */
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
}
#endif

sd_simd sd_simd_detect(void) {
#if defined(__x86_64__) || defined(__i386__)
    /* __builtin_cpu_supports also checks the OS saves the wider registers (XGETBV). */
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx") && __builtin_cpu_supports("fma") && has_f16c()))
        return SD_SIMD_SCALAR;
    if (!__builtin_cpu_supports("avx2")) return SD_SIMD_AVX;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return SD_SIMD_AVX512;
    return SD_SIMD_AVX2;
#else
    return SD_SIMD_SCALAR;
#endif
}

sd_simd sd_simd_default(void) {
    sd_simd best = sd_simd_detect();
    const char *cap = getenv("SPECD_SIMD");
    if (cap && *cap) {
        for (int s = 0; s < SD_SIMD_COUNT; s++)
            if (strcmp(cap, names[s]) == 0 && (sd_simd)s < best) best = (sd_simd)s;
    }
    return best;
}

const sd_cpu_kernels *sd_simd_kernels(sd_simd s) {
    switch (s) {
    case SD_SIMD_SCALAR: return &sd_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
    case SD_SIMD_AVX: return &sd_kernels_avx;
    case SD_SIMD_AVX2: return &sd_kernels_avx2;
    case SD_SIMD_AVX512: return &sd_kernels_avx512;
#endif
    default: return NULL;
    }
}
