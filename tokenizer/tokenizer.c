/* The tokenizer's common part: loading (GGUF tokenizer.ggml.* and llama2.c tokenizer files), the text->id
 * map, special-token parsing, decoding, the streaming decoder, the end-of-generation set and the
 * draft/target compatibility check. The encoders live in tok_spm.c and tok_bpe.c. */
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- small helpers */

int sd_ids_push(sd_ids *a, int32_t id, sd_err *err) {
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) return sd_errf(err, "out of memory (token list of %d ids)", cap);
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

/* ---------------------------------------------------------------- text -> id map */

static uint32_t hash_bytes(const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int map_build(sd_tokenizer *t, sd_err *err) {
    uint32_t cap = 16;
    while (cap < (uint32_t)t->n_vocab * 2) cap *= 2;
    t->map.slots = calloc(cap, sizeof *t->map.slots);
    if (!t->map.slots) return sd_errf(err, "out of memory (token map)");
    t->map.mask = cap - 1;
    for (int i = 0; i < t->n_vocab; i++) {
        uint32_t h = hash_bytes(t->text[i], t->text_len[i]) & t->map.mask;
        for (;; h = (h + 1) & t->map.mask) {
            uint32_t s = t->map.slots[h];
            if (s == 0) { t->map.slots[h] = (uint32_t)i + 1; break; }
            /* a duplicate text: the later id wins, as in the reference loaders */
            if (t->text_len[s - 1] == t->text_len[i] && !memcmp(t->text[s - 1], t->text[i], t->text_len[i])) {
                t->map.slots[h] = (uint32_t)i + 1;
                break;
            }
        }
    }
    return 0;
}

int32_t sd_tok_find(const sd_tokenizer *t, const char *s, size_t len) {
    if (!t->map.slots) return -1;
    uint32_t h = hash_bytes(s, len) & t->map.mask;
    for (;; h = (h + 1) & t->map.mask) {
        uint32_t v = t->map.slots[h];
        if (v == 0) return -1;
        if (t->text_len[v - 1] == len && !memcmp(t->text[v - 1], s, len)) return (int32_t)(v - 1);
    }
}

/* ---------------------------------------------------------------- pair map (BPE merge ranks) */

static uint64_t pair_key(int32_t l, int32_t r) { return (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1; }

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static int pairmap_grow(sd_pairmap *m, sd_err *err) {
    uint32_t cap = m->keys ? (m->mask + 1) * 2 : 64;
    uint64_t *keys = calloc(cap, sizeof *keys);
    int32_t *vals = malloc(cap * sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return sd_errf(err, "out of memory (merge table of %u entries)", cap);
    }
    for (uint32_t i = 0; m->keys && i <= m->mask; i++) {
        if (!m->keys[i]) continue;
        uint32_t h = pair_hash(m->keys[i]) & (cap - 1);
        while (keys[h]) h = (h + 1) & (cap - 1);
        keys[h] = m->keys[i];
        vals[h] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->mask = cap - 1;
    return 0;
}

int sd_pairmap_put(sd_pairmap *m, int32_t left, int32_t right, int32_t val, sd_err *err) {
    if (!m->keys || (m->n + 1) * 2 > m->mask + 1)
        if (pairmap_grow(m, err)) return -1;
    uint64_t k = pair_key(left, right);
    uint32_t h = pair_hash(k) & m->mask;
    while (m->keys[h] && m->keys[h] != k) h = (h + 1) & m->mask;
    if (!m->keys[h]) m->n++;
    m->keys[h] = k;
    m->vals[h] = val;
    return 0;
}

int32_t sd_pairmap_get(const sd_pairmap *m, int32_t left, int32_t right) {
    if (!m->keys) return -1;
    uint64_t k = pair_key(left, right);
    for (uint32_t h = pair_hash(k) & m->mask;; h = (h + 1) & m->mask) {
        if (m->keys[h] == k) return m->vals[h];
        if (!m->keys[h]) return -1;
    }
}

void sd_pairmap_free(sd_pairmap *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- building a tokenizer */

static sd_tokenizer *tok_alloc(int n) {
    sd_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_vocab = n;
    t->text = calloc((size_t)n, sizeof *t->text);
    t->text_len = calloc((size_t)n, sizeof *t->text_len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->type = calloc((size_t)n, sizeof *t->type);
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->piece_len = calloc((size_t)n, sizeof *t->piece_len);
    t->bos = t->eos = t->unk = t->pad = t->eot = t->eom = t->sep = t->nl = -1;
    t->add_space_prefix = true;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    if (!t->text || !t->text_len || !t->score || !t->type || !t->piece || !t->piece_len) {
        sd_tok_free(t);
        return NULL;
    }
    return t;
}

void sd_tok_free(sd_tokenizer *t) {
    if (!t) return;
    if (t->bpe) sd_tok_bpe_free(t);
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->text) free(t->text[i]);
        if (t->piece) free(t->piece[i]);
    }
    free(t->text);
    free(t->text_len);
    free(t->score);
    free(t->type);
    free(t->piece);
    free(t->piece_len);
    free(t->map.slots);
    free(t->eog);
    free(t->strip);
    free(t->special);
    sd_special_trie_free(t->strie);
    sd_pairmap_free(&t->merges);
    free(t->model);
    free(t->pre);
    free(t);
}

static int set_text(sd_tokenizer *t, int i, const char *s, size_t len, sd_err *err) {
    if (len > SD_TOK_MAX_PIECE)
        return sd_errf(err, "token %d is %zu bytes long (at most %d supported)", i, len, SD_TOK_MAX_PIECE);
    char *c = malloc(len + 1);
    if (!c) return sd_errf(err, "out of memory (token %d)", i);
    memcpy(c, s, len);
    c[len] = '\0';
    t->text[i] = c;
    t->text_len[i] = (uint32_t)len;
    if ((int)len > t->max_text_len) t->max_text_len = (int)len;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xXX>" text, or -1. */
static int byte_token_value(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* What token i decodes to, before leading-space handling. */
static int build_piece(sd_tokenizer *t, int i, sd_err *err) {
    const char *s = t->text[i];
    size_t n = t->text_len[i];
    char *p = malloc(n * 2 + 4); /* never longer than the text, except "▅" for unknown */
    if (!p) return sd_errf(err, "out of memory (token %d)", i);
    size_t o = 0;
    int type = t->type[i];
    if (type == SD_TT_USER) {
        memcpy(p, s, n);
        o = n;
    } else if (type == SD_TT_BYTE) {
        int b = byte_token_value(s, n);
        if (b >= 0) p[o++] = (char)b;
    } else if (type == SD_TT_UNKNOWN) {
        memcpy(p, "\xe2\x96\x85", 3); /* U+2585, as llama.cpp shows unknown pieces */
        o = 3;
    } else if (type == SD_TT_NORMAL && t->kind == SD_TOK_SPM) {
        for (size_t k = 0; k < n;) {
            if (k + 3 <= n && !memcmp(s + k, "\xe2\x96\x81", 3)) { p[o++] = ' '; k += 3; }
            else p[o++] = s[k++];
        }
    } else if (type == SD_TT_NORMAL) { /* byte-level BPE: each char stands for one byte */
        for (size_t k = 0; k < n;) {
            uint32_t cp;
            int valid;
            size_t l = sd_utf8_decode((const unsigned char *)s + k, n - k, &cp, &valid);
            int b = valid ? sd_uni_cp_to_byte(cp) : -1;
            if (b < 0) { /* not a stand-in (or an invalid byte, l = 1): keep the bytes as they are */
                memcpy(p + o, s + k, l);
                o += l;
            } else {
                p[o++] = (char)b;
            }
            k += l;
        }
    } /* control, unused: nothing */
    t->piece[i] = p;
    t->piece_len[i] = (uint32_t)o;
    /* the streaming decoder promises that SD_TOK_MAX_PIECE + 16 bytes hold what one token produces: up to
     * 3 held bytes, then the piece with each invalid byte as U+FFFD (3 bytes) */
    size_t worst = 3;
    for (size_t k = 0; k < o;) {
        uint32_t cp;
        int valid;
        size_t l = sd_utf8_decode((const unsigned char *)p + k, o - k, &cp, &valid);
        worst += valid ? l : 3;
        k += l;
    }
    if (worst > SD_TOK_MAX_PIECE + 15)
        return sd_errf(err, "token %d decodes to %zu bytes of text (at most %d supported)", i, worst, SD_TOK_MAX_PIECE);
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const sd_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

static bool is_special_type(int type) {
    return type == SD_TT_CONTROL || type == SD_TT_USER || type == SD_TT_UNKNOWN;
}

/* Token texts that end a turn in the chat formats people use (found among special tokens). */
static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
};

static int build_eog(sd_tokenizer *t, sd_err *err) {
    size_t nt = sizeof k_eog_texts / sizeof k_eog_texts[0];
    t->eog = malloc((nt + 3) * sizeof *t->eog);
    if (!t->eog) return sd_errf(err, "out of memory");
    int n = 0;
    int32_t fixed[3] = {t->eos, t->eot, t->eom};
    for (int k = 0; k < 3; k++)
        if (fixed[k] >= 0) t->eog[n++] = fixed[k];
    for (size_t k = 0; k < nt; k++) {
        int32_t id = sd_tok_find(t, k_eog_texts[k], strlen(k_eog_texts[k]));
        if (id < 0 || !(t->type[id] == SD_TT_CONTROL || t->type[id] == SD_TT_USER)) continue;
        if (t->eot < 0 && strcmp(k_eog_texts[k], "<|eom_id|>") != 0) t->eot = id;
        t->eog[n++] = id;
    }
    qsort(t->eog, (size_t)n, sizeof *t->eog, cmp_i32);
    int u = 0;
    for (int k = 0; k < n; k++)
        if (u == 0 || t->eog[u - 1] != t->eog[k]) t->eog[u++] = t->eog[k];
    t->n_eog = u;
    return 0;
}

/* Everything derived from texts and types: the map, byte tokens, pieces, special list, EOG set. */
static int tok_finish(sd_tokenizer *t, sd_err *err) {
    if (!t->map.slots && map_build(t, err)) return -1;
    for (int i = 0; i < t->n_vocab; i++) {
        int b = t->type[i] == SD_TT_BYTE ? byte_token_value(t->text[i], t->text_len[i]) : -1;
        if (b >= 0 && t->byte_id[b] < 0) t->byte_id[b] = i;
    }
    if (t->kind == SD_TOK_SPM) t->nl = t->byte_id['\n'];
    if (t->nl < 0) t->nl = sd_tok_find(t, "\n", 1);
    int n_special = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        if (build_piece(t, i, err)) return -1;
        n_special += is_special_type(t->type[i]) && t->text_len[i] > 0;
    }
    t->special = malloc((size_t)(n_special + 1) * sizeof *t->special);
    if (!t->special) return sd_errf(err, "out of memory");
    t->n_special = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->type[i]) && t->text_len[i] > 0) t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    if (sd_special_trie_build(t, err)) return -1;
    return build_eog(t, err);
}

/* ---------------------------------------------------------------- GGUF */

/* An optional token id from metadata: absent or -1 / 0xFFFFFFFF (the converters' "none") keep *out;
 * anything else must be inside the vocabulary. */
static int gguf_token_id(const gguf_file *f, const char *key, int n_vocab, int32_t *out, sd_err *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return 0;
    int64_t v;
    switch (kv->type) {
    case GGUF_T_UINT8: case GGUF_T_UINT16: case GGUF_T_UINT32: case GGUF_T_UINT64:
        if (kv->v.u == 0xFFFFFFFFu || kv->v.u == UINT64_MAX) { *out = -1; return 0; }
        v = kv->v.u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)kv->v.u;
        break;
    case GGUF_T_INT8: case GGUF_T_INT16: case GGUF_T_INT32: case GGUF_T_INT64:
        v = kv->v.i;
        if (v == -1) { *out = -1; return 0; }
        break;
    default:
        return sd_errf(err, "%s is not an integer (type %d)", key, (int)kv->type);
    }
    if (v < 0 || v >= n_vocab)
        return sd_errf(err, "%s = %lld is out of range (the vocabulary has %d tokens)", key, (long long)v, n_vocab);
    *out = (int32_t)v;
    return 0;
}

static int gguf_opt_bool(const gguf_file *f, const char *key, bool *out, sd_err *err) {
    if (!gguf_find(f, key)) return 0;
    return gguf_get_bool(f, key, out, err);
}

static int gguf_vocab(sd_tokenizer *t, const gguf_file *f, sd_err *err) {
    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    int n = t->n_vocab;
    for (int i = 0; i < n; i++)
        if (set_text(t, i, tokens->arr_strs[i].ptr, tokens->arr_strs[i].len, err)) return -1;
    const gguf_kv *scores = gguf_find(f, "tokenizer.ggml.scores");
    if (scores) {
        if (scores->type != GGUF_T_ARRAY || scores->arr_n != (uint64_t)n)
            return sd_errf(err, "tokenizer.ggml.scores has %llu entries, expected %d (one per token)",
                           scores->type == GGUF_T_ARRAY ? (unsigned long long)scores->arr_n : 0ULL, n);
        for (int i = 0; i < n; i++)
            if (gguf_arr_f32(scores, (uint64_t)i, &t->score[i]))
                return sd_errf(err, "tokenizer.ggml.scores is not an array of numbers");
    }
    const gguf_kv *types = gguf_find(f, "tokenizer.ggml.token_type");
    if (types && (types->type != GGUF_T_ARRAY || types->arr_n != (uint64_t)n))
        return sd_errf(err, "tokenizer.ggml.token_type has %llu entries, expected %d (one per token)",
                       types->type == GGUF_T_ARRAY ? (unsigned long long)types->arr_n : 0ULL, n);
    for (int i = 0; i < n; i++) {
        int64_t ty = SD_TT_NORMAL;
        if (types && gguf_arr_i64(types, (uint64_t)i, &ty))
            return sd_errf(err, "tokenizer.ggml.token_type is not an array of integers");
        if (!types && byte_token_value(t->text[i], t->text_len[i]) >= 0 && t->kind == SD_TOK_SPM) ty = SD_TT_BYTE;
        if (ty == 0) ty = SD_TT_NORMAL; /* "undefined" in older converters */
        if (ty < SD_TT_NORMAL || ty > SD_TT_BYTE)
            return sd_errf(err, "tokenizer.ggml.token_type[%d] = %lld is not a known token type", i, (long long)ty);
        t->type[i] = (int32_t)ty;
    }
    return 0;
}

static int gguf_specials(sd_tokenizer *t, const gguf_file *f, sd_err *err) {
    int n = t->n_vocab;
    if (t->kind == SD_TOK_SPM) { /* SentencePiece's fixed layout when the file does not say */
        t->unk = n > 0 ? 0 : -1;
        t->bos = n > 1 ? 1 : -1;
        t->eos = n > 2 ? 2 : -1;
        t->add_bos = true;
    }
    struct { const char *key; int32_t *dst; } ids[] = {
        {"tokenizer.ggml.bos_token_id", &t->bos},       {"tokenizer.ggml.eos_token_id", &t->eos},
        {"tokenizer.ggml.unknown_token_id", &t->unk},   {"tokenizer.ggml.padding_token_id", &t->pad},
        {"tokenizer.ggml.eot_token_id", &t->eot},       {"tokenizer.ggml.eom_token_id", &t->eom},
        {"tokenizer.ggml.seperator_token_id", &t->sep},
    };
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++)
        if (gguf_token_id(f, ids[k].key, n, ids[k].dst, err)) return -1;
    if (gguf_opt_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err) ||
        gguf_opt_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos, err) ||
        gguf_opt_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err))
        return -1;
    return 0;
}

/* The lstrip/rstrip attributes the reference tokenizers give special tokens, which GGUF does not carry:
 * llama.cpp sets them from the model's name, and so do we. Phi-3 (general.name containing "phi-3" or
 * "phi3"): every special token swallows the whitespace after it, except <unk>, <s> and <|endoftext|>. */
static int family_strip(sd_tokenizer *t, const gguf_file *f, sd_err *err) {
    char *name = NULL;
    if (!gguf_find(f, "general.name") || gguf_get_str(f, "general.name", &name, NULL)) return 0;
    for (char *p = name; *p; p++) *p = (char)tolower((unsigned char)*p);
    bool phi3 = strstr(name, "phi-3") || strstr(name, "phi3");
    free(name);
    if (!phi3 || !t->n_special) return 0;
    t->strip = calloc((size_t)t->n_vocab, 1);
    if (!t->strip) return sd_errf(err, "out of memory (token attributes)");
    for (int i = 0; i < t->n_special; i++) t->strip[t->special[i]] = SD_STRIP_RIGHT;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (int k = 0; k < 3; k++) {
        int32_t id = sd_tok_find(t, keep[k], strlen(keep[k]));
        if (id >= 0) t->strip[id] = 0;
    }
    return 0;
}

static int from_gguf(const gguf_file *f, sd_tokenizer **out, sd_err *err) {
    char *model = NULL;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model, err)) return -1;
    sd_tok_kind kind;
    if (!strcmp(model, "llama")) kind = SD_TOK_SPM;
    else if (!strcmp(model, "gpt2")) kind = SD_TOK_BPE;
    else {
        sd_errf(err, "tokenizer.ggml.model '%s' is not supported (llama and gpt2 are)", model);
        free(model);
        return -1;
    }
    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != GGUF_T_ARRAY || tokens->arr_type != GGUF_T_STRING || !tokens->arr_strs) {
        free(model);
        return sd_errf(err, "tokenizer.ggml.tokens is %s", tokens ? "not an array of strings" : "missing");
    }
    if (tokens->arr_n == 0 || tokens->arr_n > (1u << 24)) {
        free(model);
        return sd_errf(err, "tokenizer.ggml.tokens has %llu entries (expected 1 to %u)",
                       (unsigned long long)tokens->arr_n, 1u << 24);
    }
    sd_tokenizer *t = tok_alloc((int)tokens->arr_n);
    if (!t) {
        free(model);
        return sd_errf(err, "out of memory (tokenizer)");
    }
    t->kind = kind;
    t->model = model;
    if (gguf_find(f, "tokenizer.ggml.pre") && gguf_get_str(f, "tokenizer.ggml.pre", &t->pre, err)) goto fail;
    if (gguf_vocab(t, f, err) || gguf_specials(t, f, err)) goto fail;
    if (map_build(t, err)) goto fail; /* before the BPE setup, which looks merges up by text */
    if (kind == SD_TOK_BPE && sd_tok_bpe_init(t, f, err)) goto fail;
    if (tok_finish(t, err)) goto fail;
    if (family_strip(t, f, err)) goto fail;
    *out = t;
    return 0;
fail:
    sd_tok_free(t);
    return -1;
}

int sd_tok_from_gguf(const gguf_file *f, sd_tokenizer **out, sd_err *err) {
    *out = NULL;
    if (from_gguf(f, out, err) == 0) return 0;
    const char *path = f->path ? f->path : "gguf";
    /* the GGUF getters already name the file */
    if (err && strncmp(err->msg, path, strlen(path)) == 0) return -1;
    return sd_err_prefix(err, "%s: tokenizer", path);
}

/* ---------------------------------------------------------------- llama2.c tokenizer files */

/* llama2.c's export writes SentencePiece texts with spaces where SentencePiece has "▁", and BOS/EOS as
 * "\n<s>\n" / "\n</s>\n"; we store them the way GGUF converters do, so both sources compare equal. */
static int llama2c_token(sd_tokenizer *t, int i, const char *s, size_t len, sd_err *err) {
    char buf[SD_TOK_MAX_PIECE * 3 + 8];
    size_t o = 0;
    if (len > SD_TOK_MAX_PIECE)
        return sd_errf(err, "token %d is %zu bytes long (at most %d supported)", i, len, SD_TOK_MAX_PIECE);
    if (i == 1 || i == 2) {
        const char *fixed = i == 1 ? "<s>" : "</s>";
        t->type[i] = SD_TT_CONTROL;
        return set_text(t, i, fixed, strlen(fixed), err);
    }
    for (size_t k = 0; k < len; k++) {
        if (s[k] == ' ') { memcpy(buf + o, "\xe2\x96\x81", 3); o += 3; }
        else buf[o++] = s[k];
    }
    if (i == 0) t->type[i] = SD_TT_UNKNOWN;
    else if (byte_token_value(s, len) >= 0) t->type[i] = SD_TT_BYTE;
    else t->type[i] = SD_TT_NORMAL;
    return set_text(t, i, buf, o, err);
}

static int read_exact(FILE *fp, void *dst, size_t n) { return fread(dst, 1, n, fp) == n ? 0 : -1; }

/* Counts the tokens in the file (vocab_size <= 0: the tokenizer alone decides). */
static int llama2c_count(FILE *fp, int *n, sd_err *err) {
    int count = 0;
    for (;;) {
        float score;
        int32_t len;
        if (read_exact(fp, &score, 4)) break;
        if (read_exact(fp, &len, 4) || len < 0 || len > SD_TOK_MAX_PIECE || fseek(fp, len, SEEK_CUR))
            return sd_errf(err, "token %d: bad or truncated entry", count);
        count++;
    }
    if (count == 0) return sd_errf(err, "no tokens");
    *n = count;
    return fseek(fp, 4, SEEK_SET);
}

static int llama2c_read(FILE *fp, int vocab_size, sd_tokenizer **out, sd_err *err) {
    int32_t max_len;
    if (read_exact(fp, &max_len, 4)) return sd_errf(err, "truncated header");
    if (max_len <= 0 || max_len > SD_TOK_MAX_PIECE)
        return sd_errf(err, "max_token_length %d is not in 1..%d", max_len, SD_TOK_MAX_PIECE);
    if (vocab_size <= 0 && llama2c_count(fp, &vocab_size, err)) return -1;
    if (vocab_size > (1 << 24)) return sd_errf(err, "vocabulary size %d is absurd", vocab_size);
    sd_tokenizer *t = tok_alloc(vocab_size);
    if (!t) return sd_errf(err, "out of memory (tokenizer)");
    t->kind = SD_TOK_SPM;
    t->model = strdup("llama2c");
    char buf[SD_TOK_MAX_PIECE];
    for (int i = 0; i < vocab_size; i++) {
        int32_t len;
        if (read_exact(fp, &t->score[i], 4) || read_exact(fp, &len, 4)) {
            sd_errf(err, "truncated at token %d (the model has %d tokens)", i, vocab_size);
            goto fail;
        }
        if (len < 0 || len > max_len) {
            sd_errf(err, "token %d has length %d (max_token_length is %d)", i, len, max_len);
            goto fail;
        }
        if (read_exact(fp, buf, (size_t)len)) {
            sd_errf(err, "truncated in token %d", i);
            goto fail;
        }
        if (llama2c_token(t, i, buf, (size_t)len, err)) goto fail;
    }
    t->unk = 0;
    t->bos = vocab_size > 1 ? 1 : -1;
    t->eos = vocab_size > 2 ? 2 : -1;
    t->add_bos = true;
    if (!t->model || tok_finish(t, err)) goto fail;
    *out = t;
    return 0;
fail:
    sd_tok_free(t);
    return -1;
}

int sd_tok_from_llama2c(const char *path, int vocab_size, sd_tokenizer **out, sd_err *err) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return sd_errf(err, "%s: cannot open tokenizer file", path);
    int rc = llama2c_read(fp, vocab_size, out, err);
    fclose(fp);
    if (rc) return sd_err_prefix(err, "%s: llama2.c tokenizer", path);
    return 0;
}

/* ---------------------------------------------------------------- encode */

int sd_tok_encode(const sd_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, int *n_ids,
                  sd_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (len > (size_t)1 << 30) return sd_errf(err, "text of %zu bytes is too long to tokenize", len);
    bool bos = (flags & SD_TOK_ADD_BOS) || ((flags & SD_TOK_DEFAULT_SPECIALS) && t->add_bos);
    bool eos = (flags & SD_TOK_ADD_EOS) || ((flags & SD_TOK_DEFAULT_SPECIALS) && t->add_eos);
    sd_ids out = {0};
    sd_frag_list fr = {0};
    int rc = 0;
    if (bos && t->bos >= 0) rc = sd_ids_push(&out, t->bos, err);
    if (rc == 0 && len > 0) rc = sd_tok_partition(t, text, len, (flags & SD_TOK_PARSE_SPECIAL) != 0, &fr, err);
    bool after_special = true; /* SentencePiece adds its space prefix at the start and after specials */
    for (size_t k = 0; k < fr.n && rc == 0; k++) {
        sd_frag f = fr.v[k];
        if (f.id >= 0) {
            rc = sd_ids_push(&out, f.id, err);
            after_special = true;
            continue;
        }
        rc = t->kind == SD_TOK_SPM ? sd_tok_spm_encode(t, text + f.off, f.len, after_special, &out, err)
                                   : sd_tok_bpe_encode(t, text + f.off, f.len, after_special, &out, err);
        after_special = false;
    }
    if (rc == 0 && eos && t->eos >= 0) rc = sd_ids_push(&out, t->eos, err);
    free(fr.v);
    if (rc) {
        free(out.v);
        return -1;
    }
    if (!out.v) out.v = malloc(sizeof *out.v); /* callers may free(*ids) whatever the count */
    if (!out.v) return sd_errf(err, "out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}

/* ---------------------------------------------------------------- queries */

sd_tok_kind sd_tok_kind_of(const sd_tokenizer *t) { return t->kind; }
int sd_tok_vocab_size(const sd_tokenizer *t) { return t->n_vocab; }
int32_t sd_tok_bos(const sd_tokenizer *t) { return t->bos; }
int32_t sd_tok_eos(const sd_tokenizer *t) { return t->eos; }

bool sd_tok_is_eog(const sd_tokenizer *t, int32_t id) {
    int lo = 0, hi = t->n_eog - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (t->eog[mid] == id) return true;
        if (t->eog[mid] < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return false;
}

int32_t sd_tok_eot(const sd_tokenizer *t) { return t->eot; }
int sd_tok_eog_ids(const sd_tokenizer *t, const int32_t **ids) {
    *ids = t->eog;
    return t->n_eog;
}
int sd_tok_special_ids(const sd_tokenizer *t, const int32_t **ids) {
    *ids = t->special;
    return t->n_special;
}

const char *sd_tok_text(const sd_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->text[id] : NULL;
}

/* ---------------------------------------------------------------- decode */

size_t sd_tok_decode(const sd_tokenizer *t, int32_t prev, int32_t id, char *out, size_t cap, size_t *full_len) {
    size_t n = 0;
    const char *p = "";
    if (id >= 0 && id < t->n_vocab) {
        p = t->piece[id];
        n = t->piece_len[id];
        /* SentencePiece: the space prefix added at encode time is not part of the text */
        if (t->kind == SD_TOK_SPM && prev >= 0 && prev == t->bos && t->add_space_prefix && n > 0 && p[0] == ' ') {
            p++;
            n--;
        }
    }
    if (full_len) *full_len = n;
    size_t w = n < cap ? n : cap;
    if (w) memcpy(out, p, w);
    return w;
}

/* ---------------------------------------------------------------- streaming decoder */

void sd_detok_init(sd_detok *d, const sd_tokenizer *t, int32_t prev) {
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->prev = prev;
}

typedef struct sink {
    char *out;
    size_t cap, n; /* cap counts the NUL */
} sink;

static void sink_put(sink *s, const void *p, size_t n) {
    if (s->cap == 0) return;
    if (n > s->cap - 1 - s->n) n = s->cap - 1 - s->n; /* never overflow; cap >= max piece + 16 fits */
    memcpy(s->out + s->n, p, n);
    s->n += n;
}

/* Whether byte c may follow the held prefix p[0..n) (n >= 1) of a character. */
static bool continues(const unsigned char *p, int n, unsigned char c) {
    if ((c & 0xC0) != 0x80) return false;
    if (n > 1) return true;
    switch (p[0]) {
    case 0xE0: return c >= 0xA0;
    case 0xED: return c <= 0x9F;
    case 0xF0: return c >= 0x90;
    case 0xF4: return c <= 0x8F;
    default: return true;
    }
}

/* Feeds one byte: emits complete characters, U+FFFD for each maximal invalid part. */
static void detok_byte(sd_detok *d, sink *s, unsigned char c) {
    if (d->n_pending > 0) {
        if (continues(d->pending, d->n_pending, c)) {
            d->pending[d->n_pending++] = c;
            if (d->n_pending == sd_utf8_lead_len(d->pending[0])) {
                sink_put(s, d->pending, (size_t)d->n_pending);
                d->n_pending = 0;
            }
            return;
        }
        sink_put(s, "\xef\xbf\xbd", 3);
        d->n_pending = 0; /* and c starts afresh */
    }
    if (c < 0x80) sink_put(s, &c, 1);
    else if (sd_utf8_lead_len(c)) d->pending[d->n_pending++] = c;
    else sink_put(s, "\xef\xbf\xbd", 3);
}

size_t sd_detok_push(sd_detok *d, int32_t id, char *out, size_t cap) {
    char piece[SD_TOK_MAX_PIECE];
    size_t full = 0, n;
    const sd_tokenizer *t = d->tok;
    if (d->special && id >= 0 && id < t->n_vocab && t->type[id] == SD_TT_CONTROL) { /* its text, as written */
        n = t->text_len[id] < sizeof piece ? t->text_len[id] : sizeof piece;
        memcpy(piece, t->text[id], n);
    } else {
        n = sd_tok_decode(t, d->prev, id, piece, sizeof piece, &full);
    }
    d->prev = id;
    sink s = {out, cap, 0};
    for (size_t k = 0; k < n; k++) detok_byte(d, &s, (unsigned char)piece[k]);
    if (cap) out[s.n] = '\0';
    return s.n;
}

size_t sd_detok_flush(sd_detok *d, char *out, size_t cap) {
    sink s = {out, cap, 0};
    if (d->n_pending) sink_put(&s, "\xef\xbf\xbd", 3);
    d->n_pending = 0;
    if (cap) out[s.n] = '\0';
    return s.n;
}

/* ---------------------------------------------------------------- compatibility */

/* A token text for messages: printable bytes as they are, the rest escaped, at most ~60 bytes. */
static void quote_text(const sd_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) {
        snprintf(buf, cap, "(none)");
        return;
    }
    size_t o = 0;
    buf[o++] = '"';
    for (uint32_t k = 0; k < t->text_len[id] && o + 8 < cap && k < 60; k++) {
        unsigned char c = (unsigned char)t->text[id][k];
        if (c == '"' || c == '\\') { buf[o++] = '\\'; buf[o++] = (char)c; }
        else if (c == '\n') { buf[o++] = '\\'; buf[o++] = 'n'; }
        else if (c < 0x20 || c == 0x7F) o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", c);
        else buf[o++] = (char)c;
    }
    buf[o++] = '"';
    buf[o] = '\0';
}

static const char *kind_name(const sd_tokenizer *t) {
    return t->kind == SD_TOK_SPM ? "SentencePiece-style (llama)" : "byte-level BPE (gpt2)";
}

int sd_tok_compatible(const sd_tokenizer *draft, const sd_tokenizer *target, sd_err *err) {
    if (draft->kind != target->kind)
        return sd_errf(err, "draft and target tokenizers differ: %s vs %s", kind_name(draft), kind_name(target));
    const char *pd = draft->pre ? draft->pre : "default", *pt = target->pre ? target->pre : "default";
    if (strcmp(pd, pt) != 0)
        return sd_errf(err, "draft and target pre-tokenizers differ: \"%s\" vs \"%s\"", pd, pt);
    int n = draft->n_vocab < target->n_vocab ? draft->n_vocab : target->n_vocab;
    char a[160], b[160];
    for (int i = 0; i < n; i++) {
        if (draft->text_len[i] == target->text_len[i] && !memcmp(draft->text[i], target->text[i], draft->text_len[i]))
            continue;
        quote_text(draft, i, a, sizeof a);
        quote_text(target, i, b, sizeof b);
        return sd_errf(err, "draft and target vocabularies differ at token %d: %s vs %s", i, a, b);
    }
    struct { const char *name; int32_t d, t; } sp[] = {
        {"bos", draft->bos, target->bos}, {"eos", draft->eos, target->eos}, {"eot", draft->eot, target->eot},
        {"eom", draft->eom, target->eom}, {"unk", draft->unk, target->unk}, {"pad", draft->pad, target->pad},
        {"sep", draft->sep, target->sep},
    };
    for (size_t k = 0; k < sizeof sp / sizeof sp[0]; k++) {
        if (sp[k].d == sp[k].t) continue;
        quote_text(draft, sp[k].d, a, sizeof a);
        quote_text(target, sp[k].t, b, sizeof b);
        return sd_errf(err, "draft and target special tokens differ: %s is %d %s in the draft, %d %s in the target",
                       sp[k].name, sp[k].d, a, sp[k].t, b);
    }
    return 0;
}
