/* Element types: names, block geometry and which ones the loader and the backends compute with.
 * Every GGML type id a GGUF file can hold is listed, so a file of any type parses (and `specd info`
 * describes it) even when no backend can compute with some of its tensors. */
#include <pthread.h>
#include <stdio.h>
#include <strings.h>

#include "kernels/backend.h"

typedef struct dtype_desc {
    int type;
    const char *name;   /* as GGML prints it */
    int block;          /* elements per block */
    size_t block_bytes; /* bytes per block */
    bool loadable;      /* the loader accepts it (kernels/quant_k.h has its layout) */
    bool supported;     /* every backend computes with it */
} dtype_desc;

/* Block sizes are GGML's (ggml-common.h layouts); the ones not loadable are here only to walk a file. */
static const dtype_desc k_types[] = {
    {SD_F32, "f32", 1, 4, true, true},
    {SD_F16, "f16", 1, 2, true, true},
    {SD_BF16, "bf16", 1, 2, true, true},
    {SD_Q8_0, "q8_0", 32, 34, true, true},
    {SD_Q4_0, "q4_0", 32, 18, true, false},
    {SD_Q4_1, "q4_1", 32, 20, true, false},
    {SD_Q5_0, "q5_0", 32, 22, true, false},
    {SD_Q5_1, "q5_1", 32, 24, true, false},
    {SD_Q2_K, "q2_K", 256, 84, true, false},
    {SD_Q3_K, "q3_K", 256, 110, true, false},
    {SD_Q4_K, "q4_K", 256, 144, true, false},
    {SD_Q5_K, "q5_K", 256, 176, true, false},
    {SD_Q6_K, "q6_K", 256, 210, true, false},
    {SD_IQ4_NL, "iq4_nl", 32, 18, true, false},
    {SD_IQ4_XS, "iq4_xs", 256, 136, true, false},
    {9, "q8_1", 32, 36, false, false},
    {15, "q8_K", 256, 292, false, false},
    {16, "iq2_xxs", 256, 66, false, false},
    {17, "iq2_xs", 256, 74, false, false},
    {18, "iq3_xxs", 256, 98, false, false},
    {19, "iq1_s", 256, 50, false, false},
    {21, "iq3_s", 256, 110, false, false},
    {22, "iq2_s", 256, 82, false, false},
    {24, "i8", 1, 1, false, false},
    {25, "i16", 1, 2, false, false},
    {26, "i32", 1, 4, false, false},
    {27, "i64", 1, 8, false, false},
    {28, "f64", 1, 8, false, false},
    {29, "iq1_m", 256, 56, false, false},
    {34, "tq1_0", 256, 54, false, false},
    {35, "tq2_0", 256, 66, false, false},
    {39, "mxfp4", 32, 17, false, false},
    {40, "nvfp4", 64, 36, false, false},
    {41, "q1_0", 128, 18, false, false},
    {42, "q2_0", 64, 18, false, false},
};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

static const dtype_desc *find(int type) {
    for (size_t i = 0; i < N_TYPES; i++)
        if (k_types[i].type == type) return &k_types[i];
    return NULL;
}

const char *sd_dtype_name(int type) {
    const dtype_desc *d = find(type);
    return d ? d->name : NULL;
}

int sd_dtype_block(int type) {
    const dtype_desc *d = find(type);
    return d ? d->block : 0;
}

size_t sd_dtype_block_bytes(int type) {
    const dtype_desc *d = find(type);
    return d ? d->block_bytes : 0;
}

bool sd_dtype_supported(int type) {
    const dtype_desc *d = find(type);
    return d && d->supported;
}

bool sd_dtype_loadable(int type) {
    const dtype_desc *d = find(type);
    return d && d->loadable;
}

static char loadable_list[256];

static void build_loadable_list(void) {
    size_t len = 0;
    for (size_t i = 0; i < N_TYPES && len < sizeof loadable_list; i++)
        if (k_types[i].loadable)
            len += (size_t)snprintf(loadable_list + len, sizeof loadable_list - len, "%s%s", len ? ", " : "",
                                    k_types[i].name);
}

const char *sd_dtype_loadable_list(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT; /* built from the table, once, whoever asks first */
    pthread_once(&once, build_loadable_list);
    return loadable_list;
}

int sd_dtype_by_name(const char *name) {
    for (size_t i = 0; name && i < N_TYPES; i++)
        if (!strcasecmp(name, k_types[i].name)) return k_types[i].type;
    return -1;
}

size_t sd_dtype_row_bytes(int type, int64_t n) {
    const dtype_desc *d = find(type);
    if (!d || n < 0) return 0;
    return (size_t)(n / d->block) * d->block_bytes;
}
