/* Stand-in for <cublas_v2.h>: the CUDA emulation (emu.h). */
#include "tests/cuda_emu/emu.h"
