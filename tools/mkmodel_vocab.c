/* Vocabularies for synthetic models: a SentencePiece-style one made up here (control tokens, the 256
 * byte-fallback tokens, then printable pieces built so that longer pieces are merges of shorter ones), or
 * the tokenizer.ggml.* metadata of another GGUF copied verbatim. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tools/mkmodel.h"

#define N_SPECIAL 3
#define N_BYTES 256
#define SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's word-start marker */

static const char *k_cons = "bcdfghjklmnprstvwz";
static const char *k_vow = "aeiou";

/* Piece number k (0-based) of the printable part: single characters, word-start letters, syllables,
 * word-start syllables, two-syllable pieces, ... Every piece is distinct by construction. */
static void piece(int k, char *out, size_t cap) {
    static const char *singles[] = {SPACE, ".", ",", "!", "?", "'", "-", ":", ";", "0", "1", "2", "3", "4",
                                    "5", "6", "7", "8", "9"};
    int n_single = (int)(sizeof singles / sizeof singles[0]);
    int nc = (int)strlen(k_cons), nv = (int)strlen(k_vow), nsyl = nc * nv;
    if (k < n_single) { snprintf(out, cap, "%s", singles[k]); return; }
    k -= n_single;
    if (k < 26) { snprintf(out, cap, "%c", 'a' + k); return; }
    k -= 26;
    if (k < 26) { snprintf(out, cap, SPACE "%c", 'a' + k); return; }
    k -= 26;
    /* then groups of 1, 2, 3... syllables, alternately without and with the word-start marker so that
     * about half the pieces begin a word */
    for (int len = 1;; len++) {
        long group = 1;
        for (int i = 0; i < len; i++) group *= nsyl;
        if (k < 2 * group) {
            size_t o = (size_t)snprintf(out, cap, "%s", k % 2 ? SPACE : "");
            long idx = k / 2;
            for (int i = 0; i < len && o + 3 < cap; i++) {
                int s = (int)(idx % nsyl);
                idx /= nsyl;
                out[o++] = k_cons[s / nv];
                out[o++] = k_vow[s % nv];
            }
            out[o] = 0;
            return;
        }
        k -= (int)(2 * group);
    }
}

int sd_mk_synth_vocab(gguf_writer *w, int n, sd_err *err) {
    if (n < N_SPECIAL + N_BYTES + 8)
        return sd_errf(err, "a synthetic vocabulary needs at least %d tokens (got %d)", N_SPECIAL + N_BYTES + 8, n);
    char **toks = calloc((size_t)n, sizeof *toks);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    int rc = 0;
    if (!toks || !scores || !types) rc = sd_errf(err, "out of memory (vocabulary)");
    for (int i = 0; i < n && !rc; i++) {
        if (!(toks[i] = malloc(48))) { rc = sd_errf(err, "out of memory (vocabulary)"); break; }
        if (i < N_SPECIAL) {
            snprintf(toks[i], 48, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            types[i] = i == 0 ? SD_TT_UNKNOWN : SD_TT_CONTROL;
            scores[i] = 0;
        } else if (i < N_SPECIAL + N_BYTES) {
            snprintf(toks[i], 48, "<0x%02X>", i - N_SPECIAL);
            types[i] = SD_TT_BYTE;
            scores[i] = 0;
        } else {
            piece(i - N_SPECIAL - N_BYTES, toks[i], 48);
            types[i] = SD_TT_NORMAL;
            scores[i] = -(float)(i - N_SPECIAL - N_BYTES); /* shorter pieces come first and merge first */
        }
    }
    if (!rc) {
        gguf_w_str(w, "tokenizer.ggml.model", "llama");
        gguf_w_str(w, "tokenizer.ggml.pre", "default");
        gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, (size_t)n);
        gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)n);
        gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
        gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
        gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
        gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
        gguf_w_bool(w, "tokenizer.ggml.add_bos_token", true);
        gguf_w_bool(w, "tokenizer.ggml.add_eos_token", false);
    }
    for (int i = 0; toks && i < n; i++) free(toks[i]);
    free(toks);
    free(scores);
    free(types);
    return rc;
}

int sd_mk_copy_vocab(gguf_writer *w, const char *path, int *n_vocab, sd_err *err) {
    gguf_file *f;
    if (gguf_open(path, &f, err)) return -1;
    const gguf_kv *toks = gguf_find(f, "tokenizer.ggml.tokens");
    if (!toks || toks->type != GGUF_T_ARRAY || toks->arr_type != GGUF_T_STRING || toks->arr_n < 1 ||
        toks->arr_n > (1u << 24)) {
        gguf_close(f);
        return sd_errf(err, "%s: no usable tokenizer.ggml.tokens to copy", path);
    }
    *n_vocab = (int)toks->arr_n;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (!strncmp(f->kv[i].key, "tokenizer.ggml.", 15))
            gguf_w_raw(w, f->kv[i].key, f->kv[i].type, f->kv[i].raw, f->kv[i].raw_len);
    gguf_close(f);
    return 0;
}

bool *sd_mk_ordinary(const char *vocab_from, int n, sd_err *err) {
    bool *ord = calloc((size_t)n, sizeof *ord);
    if (!ord) return sd_errf(err, "out of memory"), NULL;
    if (!vocab_from) {
        for (int i = N_SPECIAL + N_BYTES; i < n; i++) ord[i] = true;
        return ord;
    }
    gguf_file *f;
    if (gguf_open(vocab_from, &f, err)) {
        free(ord);
        return NULL;
    }
    const gguf_kv *tt = gguf_find(f, "tokenizer.ggml.token_type");
    int count = 0;
    for (int i = 0; i < n; i++) {
        int64_t t = SD_TT_NORMAL;
        if (tt) gguf_arr_i64(tt, (uint64_t)i, &t);
        ord[i] = t == SD_TT_NORMAL && (tt || i >= N_SPECIAL);
        count += ord[i];
    }
    gguf_close(f);
    if (count < 2) {
        free(ord);
        return sd_errf(err, "%s: fewer than 2 ordinary tokens in the vocabulary", vocab_from), NULL;
    }
    return ord;
}
