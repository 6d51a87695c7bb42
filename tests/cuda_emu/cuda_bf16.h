/* Stand-in for <cuda_bf16.h>: the CUDA emulation (emu.h). */
#include "tests/cuda_emu/emu.h"
