/* Tokenizers behind one interface: SentencePiece-style BPE (tokenizer.ggml.model = "llama", and
 * llama2.c tokenizer files) in tokenizer/tok_spm.c, byte-level BPE ("gpt2") in tokenizer/tok_bpe.c.
 * Shared code (vocabulary, special tokens, decoding, the streaming decoder) is in tokenizer/tokenizer.c. */
#ifndef SD_TOKENIZER_H
#define SD_TOKENIZER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/gguf.h"

typedef enum sd_tok_kind { SD_TOK_SPM = 1, SD_TOK_BPE = 2 } sd_tok_kind;

/* GGUF tokenizer.ggml.token_type values */
enum { SD_TT_NORMAL = 1, SD_TT_UNKNOWN = 2, SD_TT_CONTROL = 3, SD_TT_USER = 4, SD_TT_UNUSED = 5, SD_TT_BYTE = 6 };

typedef struct sd_tokenizer sd_tokenizer;

/* From a GGUF file's tokenizer.ggml.* metadata. */
int sd_tok_from_gguf(const gguf_file *f, sd_tokenizer **out, sd_err *err);
/* From a llama2.c tokenizer file (tokenizer.bin format) for a model of `vocab_size` tokens. */
int sd_tok_from_llama2c(const char *path, int vocab_size, sd_tokenizer **out, sd_err *err);
void sd_tok_free(sd_tokenizer *t);

enum {
    SD_TOK_ADD_BOS = 1,       /* prepend BOS (when the vocabulary has one) */
    SD_TOK_ADD_EOS = 2,
    SD_TOK_PARSE_SPECIAL = 4, /* "<|eot_id|>" in the text becomes that one token; default: plain text */
    SD_TOK_DEFAULT_SPECIALS = 8, /* add BOS/EOS as the model's metadata says (add_bos/add_eos) */
};
/* Encodes len bytes of text (any bytes; invalid UTF-8 never crashes). *ids is malloc'd. */
int sd_tok_encode(const sd_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, int *n_ids,
                  sd_err *err);

sd_tok_kind sd_tok_kind_of(const sd_tokenizer *t);
int sd_tok_vocab_size(const sd_tokenizer *t);
int32_t sd_tok_bos(const sd_tokenizer *t); /* -1 when none */
int32_t sd_tok_eos(const sd_tokenizer *t);
int32_t sd_tok_eot(const sd_tokenizer *t); /* end of turn (<|eot_id|>, <|im_end|>, ...), -1 when none */
/* The end-of-generation ids (sorted) and the special tokens (control, user-defined, unknown; longest text
 * first): arrays owned by the tokenizer, their counts returned. */
int sd_tok_eog_ids(const sd_tokenizer *t, const int32_t **ids);
int sd_tok_special_ids(const sd_tokenizer *t, const int32_t **ids);
/* True for every token that ends generation (EOS, EOT, <|im_end|>, <|endoftext|>...). */
bool sd_tok_is_eog(const sd_tokenizer *t, int32_t id);
/* The token's text as stored in the vocabulary (e.g. "▁the", "Ġthe", "<0x0A>"). */
const char *sd_tok_text(const sd_tokenizer *t, int32_t id);

/* Decodes one token to raw bytes (byte tokens give their byte, "▁" gives a space, byte-level BPE maps
 * back to bytes; control tokens give nothing). prev is the previous token (-1 at the start): after BOS
 * the SentencePiece leading space is dropped, as reference implementations do. Returns the byte count
 * written (truncated to cap, never more) — the full length is returned via *full_len when not NULL. */
size_t sd_tok_decode(const sd_tokenizer *t, int32_t prev, int32_t id, char *out, size_t cap, size_t *full_len);

/* Streaming decoder: holds bytes of an incomplete UTF-8 character until it completes, so every chunk it
 * returns is valid UTF-8 and the chunks concatenate to the whole decode (invalid bytes come out as
 * U+FFFD). */
typedef struct sd_detok {
    const sd_tokenizer *tok;
    int32_t prev;
    unsigned char pending[8];
    int n_pending;
    bool special; /* render control tokens as their text ("<|eot_id|>") instead of nothing; set after init */
} sd_detok;
void sd_detok_init(sd_detok *d, const sd_tokenizer *t, int32_t prev);
/* Appends the valid UTF-8 text that token id completes to out (NUL-terminated); returns its length.
 * cap >= SD_TOK_MAX_PIECE + 16 is always enough: vocabularies with longer pieces are rejected at load. */
#define SD_TOK_MAX_PIECE 1024
size_t sd_detok_push(sd_detok *d, int32_t id, char *out, size_t cap);
/* Flushes held bytes at the end of a stream (as U+FFFD for an incomplete character). */
size_t sd_detok_flush(sd_detok *d, char *out, size_t cap);

/* Draft/target compatibility: same kind and pre-tokenizer, same special ids, equal token texts over the
 * shared range. The error reads e.g. `draft and target vocabularies differ at token 1234: "x" vs "y"`. */
int sd_tok_compatible(const sd_tokenizer *draft, const sd_tokenizer *target, sd_err *err);

#endif
