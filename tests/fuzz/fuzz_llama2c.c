/* Fuzz target: a llama2.c checkpoint and its tokenizer file through the model loader (CPU backend), the
 * llama2.c tokenizer loader and one encode/decode. Input: u32 checkpoint length, the checkpoint, then the
 * tokenizer file. */
#include "tests/fuzz/fuzz.h"

static int g_l2c_model_fd = -1, g_l2c_tok_fd = -1;
static sd_backend *g_l2c_be;

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    size_t n_model = fuzz_u32(data);
    if (n_model > size - 4) n_model = size - 4;
    char mpath[64], tpath[64];
    if (fuzz_memfile(&g_l2c_model_fd, "fuzz.bin", data + 4, n_model, mpath, sizeof mpath) ||
        fuzz_memfile(&g_l2c_tok_fd, "fuzz.tok", data + 4 + n_model, size - 4 - n_model, tpath, sizeof tpath))
        return 0;
    sd_err err;
    sd_tokenizer *t = NULL;
    int vocab = n_model >= 28 ? (int)fuzz_u32(data + 4 + 20) : 0; /* header field 5, as tokenize reads it */
    if (vocab < 0) vocab = vocab == INT32_MIN ? 0 : -vocab;
    if (sd_tok_from_llama2c(tpath, vocab, &t, &err) == 0) {
        fuzz_tok_text(t, "Once upon a time", SD_TOK_ADD_BOS);
        sd_tok_free(t);
    }
    fuzz_model_step(mpath, tpath, &g_l2c_be);
    return 0;
}
