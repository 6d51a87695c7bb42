/* Loading tokenizers in the tokenizer tests: from a GGUF file, or one of ../shared/vocab's vocabularies
 * by name. Include after tests/test.h. */
#ifndef SD_TOK_FIXTURE_H
#define SD_TOK_FIXTURE_H
#include <stdio.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

/* The tokenizer of the GGUF file at path; NULL with err on failure. */
static inline sd_tokenizer *tok_load(const char *path, sd_err *err) {
    gguf_file *f = NULL;
    sd_tokenizer *t = NULL;
    if (gguf_open(path, &f, err) == 0) sd_tok_from_gguf(f, &t, err);
    gguf_close(f);
    return t;
}

/* The same, printing the error. */
static inline sd_tokenizer *tok_load_path(const char *path) {
    sd_err err = {{0}};
    sd_tokenizer *t = tok_load(path, &err);
    if (!t) fprintf(stderr, "  %s\n", err.msg);
    return t;
}

/* ../shared/vocab/ggml-vocab-NAME.gguf's tokenizer; NULL when the file is absent or does not load. */
static inline sd_tokenizer *tok_load_vocab(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    const char *p = shared_path(rel);
    return p ? tok_load_path(p) : NULL;
}
#endif
