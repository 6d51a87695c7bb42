/* What the CUDA emulation's scheduler (emu_sched.cpp), runtime (emu_runtime.cpp) and cuBLAS
 * (emu_cublas.cpp) share. */
#ifndef SD_CUDA_EMU_INTERNAL_H
#define SD_CUDA_EMU_INTERNAL_H
#include "tests/cuda_emu/emu.h"

namespace emu {
/* Runs every block of a launch; false after a fault (already reported). */
bool run_kernel(const char *name, dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn);
/* Reports a fault: aborts, or (fatal off) returns and the caller sets the sticky error. */
void report_fault(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Queues fn on stream s (or records it while s captures); what names it in reports. */
cudaError_t enqueue(cudaStream_t s, const char *what, std::function<void()> fn);
/* Whether [p, p + bytes) lies inside one live device allocation. */
bool is_device_range(const void *p, size_t bytes);
/* Sets the sticky error after a fault found while work ran. */
void set_sticky(cudaError_t e);
} // namespace emu
#endif
