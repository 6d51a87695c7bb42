/* Internals shared by the tokenizer files: tokenizer/tokenizer.c (loading, specials, decoding, the streaming
 * decoder, compatibility), tokenizer/tok_spm.c (SentencePiece-style encode) and tokenizer/tok_bpe.c (byte-level
 * BPE encode, pre-tokenizers). Not for use outside tokenizer/. Changes here are additive only. */
#ifndef SD_TOK_INTERNAL_H
#define SD_TOK_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

/* A growable list of token ids: encoders append to it. */
typedef struct sd_ids {
    int32_t *v;
    int n, cap;
} sd_ids;
/* Appends id; 0 ok, -1 out of memory (message in err). */
int sd_ids_push(sd_ids *a, int32_t id, sd_err *err);

/* Open-addressing hash from a token's text to its id (slots hold id + 1; 0 = empty). The keys are the
 * vocabulary's own texts, so the map stores no strings. Built by tokenizer.c at load. */
typedef struct sd_tok_map {
    uint32_t *slots;
    uint32_t mask;        /* capacity - 1 (capacity is a power of two) */
} sd_tok_map;

/* Open-addressing hash from a pair of ids (left, right) to an int32 value (BPE merge rank). Filled by
 * tok_bpe.c through sd_pairmap_put; freed by sd_tok_free. */
typedef struct sd_pairmap {
    uint64_t *keys;       /* ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1; 0 = empty */
    int32_t *vals;
    uint32_t mask;        /* capacity - 1; 0 with keys == NULL when empty */
    uint32_t n;
} sd_pairmap;
int sd_pairmap_put(sd_pairmap *m, int32_t left, int32_t right, int32_t val, sd_err *err);
/* The value for (left, right), or -1 when absent. */
int32_t sd_pairmap_get(const sd_pairmap *m, int32_t left, int32_t right);
void sd_pairmap_free(sd_pairmap *m);

struct sd_tokenizer {
    sd_tok_kind kind;
    char *model;          /* tokenizer.ggml.model ("llama", "gpt2"; "llama2c" for .bin files) */
    char *pre;            /* tokenizer.ggml.pre (BPE pre-tokenizer name); NULL when absent */

    /* vocabulary, n_vocab entries each */
    int n_vocab;
    char **text;          /* NUL-terminated copies of the token texts */
    uint32_t *text_len;   /* byte length of text[i] (a text may contain NUL bytes) */
    float *score;         /* 0 when the file has no scores */
    int32_t *type;        /* SD_TT_*; SD_TT_NORMAL when the file has no token types */
    sd_tok_map map;       /* text -> id */
    int max_text_len;

    /* what each token decodes to (raw bytes, no leading-space handling); built at load by tokenizer.c
     * for both kinds: SPM "▁" -> ' ', <0xXX> -> byte; BPE byte-level chars -> bytes; control -> "". */
    char **piece;
    uint32_t *piece_len;

    /* special ids, -1 when none */
    int32_t bos, eos, unk, pad, eot, eom, sep, nl;
    bool add_bos, add_eos;
    bool add_space_prefix;   /* SPM: prepend "▁" to the text (default true) */
    int32_t byte_id[256];    /* SPM byte-fallback tokens <0xXX>, -1 when absent */

    /* end-of-generation set: sorted ids */
    int32_t *eog;
    int n_eog;

    /* control, user-defined and unknown tokens (SD_TT_CONTROL / SD_TT_USER / SD_TT_UNKNOWN) with non-empty
     * text, sorted by text length descending (longest match first) for special-token parsing: user-defined
     * ones are always split out, the others only with SD_TOK_PARSE_SPECIAL. */
    int32_t *special;
    int n_special;
    /* per token, SD_STRIP_* bits (NULL: none): the whitespace a special token swallows when it is split out,
     * as Hugging Face's lstrip/rstrip on added tokens. GGUF does not store them; set by model family. */
    uint8_t *strip;
    struct sd_special_trie *strie; /* the special texts as a byte trie (tok_special.c) */

    /* byte-level BPE: merge ranks (left id, right id) -> rank, and tok_bpe.c's private state */
    sd_pairmap merges;
    void *bpe;
};

enum { SD_STRIP_LEFT = 1, SD_STRIP_RIGHT = 2 };

/* Special-token splitting, in tok_special.c. A text cut into raw fragments (id -1) and special tokens. */
typedef struct sd_special_trie sd_special_trie;
typedef struct sd_frag {
    size_t off, len;
    int32_t id; /* -1: raw text */
} sd_frag;
typedef struct sd_frag_list {
    sd_frag *v;
    size_t n, cap;
} sd_frag_list;
int sd_frag_push(sd_frag_list *l, size_t off, size_t len, int32_t id, sd_err *err);
/* Builds t->strie from t->special (which must be sorted by priority). 0 ok, -1 with err. */
int sd_special_trie_build(sd_tokenizer *t, sd_err *err);
void sd_special_trie_free(sd_special_trie *tr);
/* Cuts text[0..len) (len > 0) into out (emptied first): user-defined tokens always, control and unknown
 * ones only with parse_special; longer texts take priority, then lower ids, as the reference tokenizers
 * split. 0 ok, -1 with err. */
int sd_tok_partition(const sd_tokenizer *t, const char *text, size_t len, bool parse_special, sd_frag_list *out,
                     sd_err *err);

/* The id of the token whose text is exactly s[0..len), or -1. */
int32_t sd_tok_find(const sd_tokenizer *t, const char *s, size_t len);

/* Encoders: append the ids of a plain text fragment (no special-token parsing, no BOS/EOS) to out.
 * first: the fragment starts the text or follows a special token found in it (SPM adds its space prefix
 * only there, as llama.cpp does). Never called with len == 0 by sd_tok_encode. 0 ok, -1 with err. */
int sd_tok_spm_encode(const sd_tokenizer *t, const char *text, size_t len, bool first, sd_ids *out, sd_err *err);
int sd_tok_bpe_encode(const sd_tokenizer *t, const char *text, size_t len, bool first, sd_ids *out, sd_err *err);

/* Byte-level BPE setup, in tok_bpe.c: called by sd_tok_from_gguf after the vocabulary, types, specials,
 * add_bos/add_eos (metadata or defaults) and the text->id map (sd_tok_find works) are in place, t->pre set
 * from tokenizer.ggml.pre, and before pieces, byte_id, the special list and EOG are computed. Reads
 * tokenizer.ggml.merges into t->merges, chooses the pre-tokenizer (unknown name -> error naming it),
 * may set t->bpe. sd_tok_bpe_free releases t->bpe (merges are freed by sd_tok_free). */
int sd_tok_bpe_init(sd_tokenizer *t, const gguf_file *f, sd_err *err);
void sd_tok_bpe_free(sd_tokenizer *t);

#endif
