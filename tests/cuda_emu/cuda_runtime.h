/* Stand-in for <cuda_runtime.h>: the CUDA emulation (emu.h). */
#include "tests/cuda_emu/emu.h"
