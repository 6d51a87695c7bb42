/* The activation records of the SD_MM_QUANT kernels (kernels/cpu/simd.h, sd_act_group), in plain C. */
#include <string.h>

#include "kernels/cpu/simd.h"

void sd_act_groups_ref(const int8_t *q, const float *d, const int32_t *sums, int64_t cols, sd_act_group *g,
                       int64_t gstride) {
    for (int64_t c0 = 0; c0 < cols; c0 += 256, g += gstride) {
        int nb = cols - c0 >= 256 ? 8 : (int)((cols - c0) / 32);
        memset(g, 0, sizeof *g);
        for (int k = 0; k < nb; k++) {
            g->d[k] = d[c0 / 32 + k], g->s[k] = sums[c0 / 32 + k], g->ds[k] = g->d[k] * (float)g->s[k];
            for (int v = 0; v < 8; v++) memcpy(g->q + (nb == 8 ? 32 * v + 4 * k : 32 * k + 4 * v), q + c0 + 32 * k + 4 * v, 4);
        }
    }
}
