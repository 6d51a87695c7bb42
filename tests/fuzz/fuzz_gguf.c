/* Fuzz target: a GGUF file through the reader, the tokenizer loader, the model loader (CPU backend) and
 * one forward step of a model that loads. Input: the file's bytes. */
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>

#include "kernels/backend.h"
#include "model/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

static int g_gguf_fd = -1;
static sd_backend *g_gguf_be;

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    char path[64];
    sd_err err;
    if (fuzz_memfile(&g_gguf_fd, "fuzz.gguf", data, size, path, sizeof path)) return 0;
    gguf_file *f = NULL;
    if (gguf_open(path, &f, &err)) return 0;
    sd_tokenizer *t = NULL;
    if (sd_tok_from_gguf(f, &t, &err) == 0) {
        int32_t *ids = NULL;
        int n = 0;
        if (sd_tok_encode(t, "Hello <s> world\n", 16, SD_TOK_ADD_BOS | SD_TOK_PARSE_SPECIAL, &ids, &n, &err) == 0) {
            char out[SD_TOK_MAX_PIECE + 16];
            for (int i = 0; i < n; i++) sd_tok_decode(t, i ? ids[i - 1] : -1, ids[i], out, sizeof out, NULL);
        }
        free(ids);
        sd_tok_free(t);
    }
    gguf_close(f);
    if (!g_gguf_be && sd_backend_cpu_new(1, &g_gguf_be, &err)) return 0;
    sd_model *m = NULL;
    if (sd_model_load(path, NULL, g_gguf_be, &m, &err)) return 0;
    sd_seq *s = NULL;
    if (sd_seq_new(m, 8, 0, &s, &err) == 0) {
        int32_t tok = 1 % m->hp.vocab, id;
        sd_forward_greedy(s, &tok, 1, false, &id, &err);
        sd_seq_free(s);
    }
    sd_model_free(m);
    return 0;
}
