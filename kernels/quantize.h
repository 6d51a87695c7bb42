/* Float rows to the blocks of a GGML type, the way ggml's reference quantizers do it without an
 * importance matrix (what llama-quantize does when given none): the same scale choices and the same
 * searches, so Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 come out byte for byte as ggml's, and the K-quants and
 * IQ4 types with the same error. Layouts: kernels/quant_k.h. */
#ifndef SD_QUANTIZE_H
#define SD_QUANTIZE_H
#include <stdbool.h>
#include <stdint.h>

/* True when sd_quantize_row can produce `type` (every loadable type: F32, F16, BF16 and the quantized). */
bool sd_quantize_supported(int type);

/* Quantizes n floats (a multiple of the type's block size) into `out` (sd_dtype_row_bytes(type, n)
 * bytes). Returns 0, or -1 when the type is not supported or n is not a whole number of blocks. */
int sd_quantize_row(int type, const float *x, void *out, int64_t n);

#endif
