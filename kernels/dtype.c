/* Element types: names, block geometry and which ones the backends compute with. */
#include "kernels/backend.h"

typedef struct dtype_desc {
    int type;
    const char *name;
    int block;          /* elements per block */
    size_t block_bytes; /* bytes per block */
    bool supported;
} dtype_desc;

/* Q4_0: f16 scale + 16 bytes of nibbles; Q4_K / Q6_K: 256-element super-blocks as GGML lays them out. */
static const dtype_desc k_types[] = {
    {SD_F32, "f32", 1, 4, true},
    {SD_F16, "f16", 1, 2, true},
    {SD_BF16, "bf16", 1, 2, true},
    {SD_Q8_0, "q8_0", SD_QK8_0, sizeof(sd_block_q8_0), true},
    {SD_Q4_0, "q4_0", 32, 18, false},
    {SD_Q4_K, "q4_K", 256, 144, false},
    {SD_Q6_K, "q6_K", 256, 210, false},
};

static const dtype_desc *find(int type) {
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
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

size_t sd_dtype_row_bytes(int type, int64_t n) {
    const dtype_desc *d = find(type);
    if (!d || n < 0) return 0;
    return (size_t)(n / d->block) * d->block_bytes;
}
