/* Pre-tokenizers of byte-level BPE vocabularies: the text is split into pieces by the splitting regexes
 * of the model's tokenizer (chosen by GGUF tokenizer.ggml.pre), before BPE merges run inside each piece.
 * Each regex is a hand-written matcher with the regex's exact semantics (leftmost match, alternatives in
 * order, greedy quantifiers with backtracking, lookahead); a sequence of regexes splits the pieces of the
 * previous one, keeping both matches and the text between them as pieces (Hugging Face "Split, isolated").
 * Works on any bytes: a byte that is not valid UTF-8 is one character of category So (as U+FFFD) and
 * stays itself in the pieces, so the pieces always concatenate back to the input. */
#ifndef SD_PRETOK_H
#define SD_PRETOK_H
#include <stddef.h>

#include "base/err.h"

typedef enum sd_pretok_kind {
    SD_PRETOK_DEFAULT = 0, /* llama.cpp's default list ("default", or no tokenizer.ggml.pre) */
    SD_PRETOK_GPT2,        /* gpt2, gpt-2, mpt, olmo, jais, phi-2, ... */
    SD_PRETOK_LLAMA3,      /* llama-bpe, llama3, falcon3, dbrx, smaug-bpe, glm4, ... */
    SD_PRETOK_QWEN2,       /* qwen2, deepseek-r1-qwen, stablelm2, megrez, ... */
    SD_PRETOK_DEEPSEEK_LLM,
    SD_PRETOK_DEEPSEEK_CODER,
    SD_PRETOK_FALCON,
    SD_PRETOK_STARCODER,   /* starcoder, refact, smollm, command-r, codeshell, exaone, minerva-7b */
    SD_PRETOK_GPT4O,       /* gpt-4o, llama4, minimax-m2 */
    SD_PRETOK_COUNT
} sd_pretok_kind;

/* The pre-tokenizer for a tokenizer.ggml.pre name (NULL or "" = "default"); an unknown name is an error
 * naming it. */
int sd_pretok_find(const char *name, sd_pretok_kind *kind, sd_err *err);
const char *sd_pretok_name(sd_pretok_kind kind);

/* A piece of the text: bytes [off, off + len). */
typedef struct sd_span {
    size_t off, len;
} sd_span;

/* Splits text[0..len) into pieces (in order, non-empty, covering the text). *spans is malloc'd (NULL
 * when there are none). 0 ok, -1 (out of memory) with err. */
int sd_pretok_split(sd_pretok_kind kind, const char *text, size_t len, sd_span **spans, size_t *n_spans,
                    sd_err *err);

#endif
