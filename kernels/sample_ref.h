/* The device-sampling algorithm in plain C (see kernels/sample_math.h): the reference the CUDA kernels
 * are tested against, and the sample_rows / spec_accept ops of a host-memory backend in the tests. */
#ifndef SD_SAMPLE_REF_H
#define SD_SAMPLE_REF_H
#include <stdint.h>

#include "kernels/backend.h"

/* probs[0..width) = the filtered, normalised distribution of one row of logits (greedy: one-hot argmax). */
void sd_sample_ref_row(float *probs, const float *logits, int width, const sd_sample_cfg *cfg);
/* Inverse-CDF draw in ascending id order over a distribution (u uniform in [0,1)). */
int32_t sd_sample_ref_draw(const float *probs, int width, float u);
/* backend.h's sample_rows and spec_accept on host memory (b is unused). */
void sd_sample_rows_ref(sd_backend *b, int32_t *ids, float *probs, const float *logits, int rows, int width,
                        const sd_sample_cfg *cfg, const float *u);
int sd_spec_accept_ref(sd_backend *b, int32_t *next, const float *p, const float *q, const int32_t *draft, int k,
                       int width, const float *u);

#endif
