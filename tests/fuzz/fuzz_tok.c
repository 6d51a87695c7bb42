/* Fuzz target: a vocabulary (GGUF tokenizer.ggml.*, SentencePiece or BPE) and a text. Input: one flags
 * byte (bit 0 parse specials, bit 1 add BOS), u32 text length, the text, then the GGUF file. The text is
 * encoded, every id decoded (one by one and streamed), and the ids' decode re-encoded. */
#include "tests/fuzz/fuzz.h"

#include "model/gguf.h"

static int g_tok_fd = -1;

static void tok_roundtrip(const sd_tokenizer *t, const char *text, size_t len, int flags) {
    sd_err err;
    int32_t *ids = NULL;
    int n = 0;
    if (sd_tok_encode(t, text, len, flags, &ids, &n, &err)) return;
    char out[SD_TOK_MAX_PIECE + 16];
    sd_detok d;
    sd_detok_init(&d, t, -1);
    for (int i = 0; i < n; i++) {
        sd_tok_decode(t, i ? ids[i - 1] : -1, ids[i], out, sizeof out, NULL);
        sd_detok_push(&d, ids[i], out, sizeof out);
        sd_tok_is_eog(t, ids[i]);
    }
    sd_detok_flush(&d, out, sizeof out);
    free(ids);
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 5) return 0;
    int flags = (data[0] & 1 ? SD_TOK_PARSE_SPECIAL : 0) | (data[0] & 2 ? SD_TOK_ADD_BOS : 0);
    size_t n_text = fuzz_u32(data + 1);
    if (n_text > size - 5) n_text = size - 5;
    const char *text = (const char *)data + 5;
    char path[64];
    if (fuzz_memfile(&g_tok_fd, "fuzz-vocab.gguf", text + n_text, size - 5 - n_text, path, sizeof path)) return 0;
    sd_err err;
    gguf_file *f = NULL;
    if (gguf_open(path, &f, &err)) return 0;
    sd_tokenizer *t = NULL;
    if (sd_tok_from_gguf(f, &t, &err) == 0) {
        tok_roundtrip(t, text, n_text, flags);
        /* ids straight from the input (in and out of range) through the decoders */
        char out[SD_TOK_MAX_PIECE + 16];
        for (size_t i = 0; i + 4 <= n_text && i < 64; i += 4) {
            int32_t id = (int32_t)fuzz_u32((const uint8_t *)text + i);
            if (id >= 0 && id < sd_tok_vocab_size(t)) sd_tok_decode(t, -1, id, out, sizeof out, NULL);
        }
        sd_tok_free(t);
    }
    gguf_close(f);
    return 0;
}
