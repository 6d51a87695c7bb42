/* Fuzz target: a GGUF file through the reader, the tokenizer loader, the model loader (CPU backend) and
 * one forward step of a model that loads. Input: the file's bytes. */
#include "tests/fuzz/fuzz.h"

#include "model/gguf.h"

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
        fuzz_tok_text(t, "Hello <s> world\n", SD_TOK_ADD_BOS | SD_TOK_PARSE_SPECIAL);
        sd_tok_free(t);
    }
    gguf_close(f);
    fuzz_model_step(path, NULL, &g_gguf_be);
    return 0;
}
