/* The activation order of the SD_MM_QUANT kernels (kernels/cpu/quant_tmpl.h). */
#include <string.h>

#include "kernels/cpu/simd.h"

void sd_act_interleave(const int8_t *xq, int64_t cols, int8_t *out) {
    int64_t g = 0;
    for (; g + 256 <= cols; g += 256)
        for (int v = 0; v < 8; v++)
            for (int k = 0; k < 8; k++) memcpy(out + g + 32 * v + 4 * k, xq + g + 32 * k + 4 * v, 4);
    memcpy(out + g, xq + g, (size_t)(cols - g));
}
