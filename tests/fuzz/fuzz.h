/* What the fuzz targets share. Each tests/fuzz/fuzz_*.c defines one libFuzzer entry point, FUZZ_ENTRY
 * (LLVMFuzzerTestOneInput unless the includer renames it: tests/test_fuzz.c includes every target into one
 * program that replays the corpus under the plain compiler). The loaders take paths, so an input is
 * written to a memfd and opened through /proc/self/fd: the real open/mmap path runs, nothing touches disk.
 * A target returns 0 whatever the input; what it checks is that nothing crashes, leaks, hangs or trips
 * the sanitizers. */
#ifndef SD_FUZZ_H
#define SD_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

/* A memfd named name holding exactly buf[0..n); *path receives its /proc path. -1 when it cannot be made. */
static inline int fuzz_memfile(int *fd, const char *name, const void *buf, size_t n, char *path, size_t cap) {
    if (*fd < 0 && (*fd = memfd_create(name, 0)) < 0) return -1;
    if (ftruncate(*fd, 0) || (n && pwrite(*fd, buf, n, 0) != (ssize_t)n)) return -1;
    snprintf(path, cap, "/proc/self/fd/%d", *fd);
    return 0;
}

/* Encodes text with t and decodes every id one by one: what any vocabulary that loads must survive. */
static inline void fuzz_tok_text(const sd_tokenizer *t, const char *text, int flags) {
    sd_err err;
    int32_t *ids = NULL;
    int n = 0;
    if (sd_tok_encode(t, text, strlen(text), flags, &ids, &n, &err) == 0) {
        char out[SD_TOK_MAX_PIECE + 16];
        for (int i = 0; i < n; i++) sd_tok_decode(t, i ? ids[i - 1] : -1, ids[i], out, sizeof out, NULL);
    }
    free(ids);
}

/* Loads the model at path (tok: its llama2.c tokenizer file, or NULL) on a CPU backend made once in *be,
 * and runs one forward step of one token. */
static inline void fuzz_model_step(const char *path, const char *tok, sd_backend **be) {
    sd_err err;
    sd_model *m = NULL;
    if ((!*be && sd_backend_cpu_new(1, be, &err)) || sd_model_load(path, tok, *be, &m, &err)) return;
    sd_seq *s = NULL;
    if (sd_seq_new(m, 8, 0, &s, &err) == 0) {
        int32_t first = 1 % m->hp.vocab, id;
        sd_forward_greedy(s, &first, 1, false, &id, &err);
        sd_seq_free(s);
    }
    sd_model_free(m);
}

/* Little-endian u32 at p (inputs carry section lengths this way). */
static inline uint32_t fuzz_u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
#endif
