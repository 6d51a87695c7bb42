/* Synthetic model presets, the agreement calibration and the default options (tools/mkmodel.h). */
#include <string.h>

#include "kernels/backend.h"
#include "tools/mkmodel.h"

typedef struct preset {
    const char *name;
    sd_mk_shape shape;
    const char *what;
} preset;

static const preset k_presets[] = {
    {"tiny", {64, 2, 4, 2, 128, 512, 256}, "tests: < 1 MB"},
    {"demo", {768, 12, 12, 4, 2048, 8192, 2048}, "the demo target, ~88M params"},
    {"demo-draft", {256, 2, 4, 2, 512, 8192, 2048}, "the demo draft, ~4% of the target per token"},
    {"bench", {1024, 24, 16, 4, 2816, 32000, 2048}, "CPU decode benchmarks, ~337M params"},
    {"1b", {2048, 16, 32, 8, 8192, 32000, 4096}, "1B-class shape"},
    {"8b", {4096, 32, 32, 8, 14336, 32000, 8192}, "8B-class (Llama-3-8B-like) shape"},
};

const char *sd_mk_preset_at(int i, sd_mk_shape *shape, const char **what) {
    if (i < 0 || (size_t)i >= sizeof k_presets / sizeof k_presets[0]) return NULL;
    *shape = k_presets[i].shape;
    *what = k_presets[i].what;
    return k_presets[i].name;
}

int sd_mk_preset(const char *name, sd_mk_shape *out) {
    for (size_t i = 0; i < sizeof k_presets / sizeof k_presets[0]; i++)
        if (!strcmp(name, k_presets[i].name)) {
            *out = k_presets[i].shape;
            return 0;
        }
    return -1;
}

/* Measured on the demo pair with `specd generate -m T -md D -p P -n 80` over three prompts (greedy
 * acceptance printed by the engine, averaged; docs/benchmarks.md): acceptance -> target layer scale,
 * interpolated linearly. Single prompts vary widely (0.53 to 0.97 at scale 0.5). */
static const float k_calib[][2] = {{1.0f, 0.0f},  {0.87f, 0.32f}, {0.84f, 0.4f}, {0.70f, 0.5f},
                                   {0.60f, 0.67f}, {0.39f, 1.0f}, {0.16f, 1.5f}, {0.0f, 2.0f}};
#define N_CALIB (int)(sizeof k_calib / sizeof k_calib[0])

float sd_mk_scale_for_agreement(float a) {
    if (a >= 1) return 0;
    for (int i = 1; i < N_CALIB; i++)
        if (a >= k_calib[i][0]) {
            float t = (a - k_calib[i][0]) / (k_calib[i - 1][0] - k_calib[i][0]);
            return k_calib[i][1] + t * (k_calib[i - 1][1] - k_calib[i][1]);
        }
    return k_calib[N_CALIB - 1][1];
}

void sd_mk_defaults(sd_mk_opts *o) {
    memset(o, 0, sizeof *o);
    sd_mk_preset("tiny", &o->shape);
    o->type = SD_F16;
    o->seed = 1;
    o->lang_seed = 1;
    o->layer_scale = sd_mk_scale_for_agreement(0.7f);
}
