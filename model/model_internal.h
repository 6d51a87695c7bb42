/* Internals shared by the model loaders: model/model_load.c (GGUF, entry point, free),
 * model/llama2c.c (llama2.c checkpoints) and model/model_common.c (validation, RoPE table, upload,
 * size accounting). Not for use outside these files. */
#ifndef SD_MODEL_INTERNAL_H
#define SD_MODEL_INTERNAL_H
#include "model/model.h"

/* Limits on hyperparameters: anything beyond them is a corrupt file, not a model. */
#define SD_MAX_DIM (1 << 16)
#define SD_MAX_LAYERS 1024
#define SD_MAX_HEADS 1024
#define SD_MAX_FFN (1 << 20)
#define SD_MAX_VOCAB (1 << 24)
#define SD_MAX_CTX (1 << 24)

/* The K/V pool (model/kv_pool.c), for the forward pass. */
sd_kv_mem *sd_kv_pool_mem(const sd_model *m, int n_layers);
/* Takes the blocks s needs to hold positions [0, end) (all or none: "KV pool full" when too few are free). */
int sd_seq_reserve(sd_seq *s, int end, sd_err *err);
/* Before truncating s to pos: a cached block pos falls inside stops being cached when s alone holds it
 * (it will be written again); a shared one must stay whole, so the position to truncate to drops to its
 * start. Returns that position. */
int sd_seq_uncache(sd_seq *s, int pos);
/* Returns the blocks s holds beyond positions [0, pos). */
void sd_seq_release(sd_seq *s, int pos);

/* Loads a llama2.c checkpoint into m (m->path set, m->be set). */
int sd_llama2c_load(sd_model *m, const char *tok_path, sd_err *err);

/* A zeroed host buffer freed with the model (converted tensors, llama2.c tensor names). */
void *sd_model_own(sd_model *m, size_t bytes, sd_err *err);

/* Frees the buffers sd_model_own handed out. */
void sd_model_free_owned(sd_model *m);
/* Returns every uploaded weight to the backend and releases the RoPE table. */
void sd_model_release_weights(sd_model *m);

/* Every distinct tensor of the model (the tied classifier once, absent optional tensors skipped) into
 * list, which must hold SD_MODEL_MAX_TENSORS(n_layers) entries; returns the count. */
#define SD_MODEL_MAX_TENSORS(n_layers) (3 + SD_LAYER_TENSORS * (size_t)(n_layers))
int sd_model_tensors(sd_model *m, sd_tensor **list);

/* Checks hyperparameters for absurd or inconsistent values; the message names the file. */
int sd_model_check_hparams(const sd_model *m, sd_err *err);

/* Fills in what every loader computes the same way once tensors are set: RoPE inverse frequencies
 * (freq_factors: optional per-pair divisors, llama3 rope_freqs.weight), weight upload, byte and
 * parameter counts. */
int sd_model_finish(sd_model *m, const float *freq_factors, sd_err *err);

/* Fills inv_freq[n_rot/2] from the hyperparameters' base and scaling (exposed for tests). */
void sd_rope_inv_freq(const sd_hparams *hp, const float *freq_factors, float *inv_freq);

#endif
