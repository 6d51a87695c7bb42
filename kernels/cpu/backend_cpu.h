/* CPU backend internals that tests and benchmarks use beyond kernels/backend.h. */
#ifndef SD_BACKEND_CPU_H
#define SD_BACKEND_CPU_H
#include "kernels/backend.h"
#include "kernels/cpu/simd.h"

/* Like sd_backend_cpu_new, with an explicit SIMD level (fails when this CPU lacks it). */
int sd_backend_cpu_new_simd(int n_threads, sd_simd level, sd_backend **out, sd_err *err);
/* The SIMD level a CPU backend runs. */
sd_simd sd_backend_cpu_simd(const sd_backend *b);

#endif
