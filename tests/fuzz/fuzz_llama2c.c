/* Fuzz target: a llama2.c checkpoint and its tokenizer file through the model loader (CPU backend), the
 * llama2.c tokenizer loader and one encode/decode. Input: u32 checkpoint length, the checkpoint, then the
 * tokenizer file. */
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

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
        int32_t *ids = NULL;
        int n = 0;
        if (sd_tok_encode(t, "Once upon a time", 16, SD_TOK_ADD_BOS, &ids, &n, &err) == 0) {
            char out[SD_TOK_MAX_PIECE + 16];
            for (int i = 0; i < n; i++) sd_tok_decode(t, i ? ids[i - 1] : -1, ids[i], out, sizeof out, NULL);
        }
        free(ids);
        sd_tok_free(t);
    }
    if (!g_l2c_be && sd_backend_cpu_new(1, &g_l2c_be, &err)) return 0;
    sd_model *m = NULL;
    if (sd_model_load(mpath, tpath, g_l2c_be, &m, &err)) return 0;
    sd_seq *s = NULL;
    if (sd_seq_new(m, 8, 0, &s, &err) == 0) {
        int32_t tok = 1 % m->hp.vocab, id;
        sd_forward_greedy(s, &tok, 1, false, &id, &err);
        sd_seq_free(s);
    }
    sd_model_free(m);
    return 0;
}
