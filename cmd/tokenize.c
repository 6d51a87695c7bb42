/* `specd tokenize`: the token ids of a text, from the tokenizer alone (no weights are loaded, so
 * vocabulary-only GGUF files work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "cmd/commands.h"
#include "cmd/options.h"

/* tokenize's own options; -m and -z are the engine table's. */
enum { O_NO_BOS = SD_O_COUNT, O_SPECIAL, O_FILE, O_N };
static const sd_opt k_own[] = {
    {O_NO_BOS, "--no-bos", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_INFO,
     "do not add BOS (nor EOS) even when the model's metadata asks for it"},
    {O_SPECIAL, "--special", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_INFO,
     "parse special-token text (\"<|eot_id|>\" becomes that one token)"},
    {O_FILE, "--file", NULL, SD_OPT_STR, 0, 0, NULL, "F", SD_CMD_INFO, "take the text byte for byte from file F"},
};
static const sd_opt_table k_own_table = {"tokenize", k_own, (int)(sizeof k_own / sizeof k_own[0])};
static const sd_opt_table *const k_tables[] = {&k_own_table, &sd_engine_options};

/* Reads a whole file; 0 ok. */
static int read_file(const char *path, char **buf, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b) break;
        n += fread(b + n, 1, cap - n, fp);
        if (n < cap) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = ferror(fp) || !b;
    fclose(fp);
    if (bad) {
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

static bool is_gguf(const char *path) {
    FILE *fp = fopen(path, "rb");
    char magic[4] = {0};
    if (!fp) return false;
    size_t n = fread(magic, 1, 4, fp);
    fclose(fp);
    return n == 4 && !memcmp(magic, "GGUF", 4);
}

/* The vocabulary size in a llama2.c checkpoint header (7 int32; a negative vocab_size means an unshared
 * classifier), or -1. */
static int llama2c_vocab_size(const char *path) {
    FILE *fp = fopen(path, "rb");
    int32_t h[7];
    if (!fp) return -1;
    size_t n = fread(h, sizeof h[0], 7, fp);
    fclose(fp);
    if (n != 7) return -1;
    if (h[5] == INT32_MIN) return -1; /* its negation overflows */
    int v = h[5] < 0 ? -h[5] : h[5];
    return v > 0 ? v : -1;
}

static int load_tokenizer(const char *model, const char *tokfile, sd_tokenizer **tok, sd_err *err) {
    if (is_gguf(model)) {
        if (tokfile) return sd_tok_from_llama2c(tokfile, 0, tok, err);
        gguf_file *f = NULL;
        if (gguf_open(model, &f, err)) return -1;
        int rc = sd_tok_from_gguf(f, tok, err);
        gguf_close(f);
        return rc;
    }
    if (!tokfile) return sd_errf(err, "%s: not a GGUF file; a llama2.c checkpoint needs its tokenizer (-z)", model);
    int vocab = llama2c_vocab_size(model);
    if (vocab < 0) return sd_errf(err, "%s: cannot read a llama2.c checkpoint header", model);
    return sd_tok_from_llama2c(tokfile, vocab, tok, err);
}

int cmd_tokenize(int argc, char **argv) {
    const char *pos[2] = {0};
    sd_args_spec spec = {.prog = "specd tokenize", .usage = "specd tokenize -m MODEL [-z TOKENIZER] [--no-bos] [--special] (TEXT | --file F)\n"
                         "Prints the token ids, space-separated, on one line (the tokenizer alone: no weights are loaded).",
                         .tables = k_tables, .n_tables = 2, .cmd = SD_CMD_INFO, .pos = pos, .max_pos = 2};
    sd_optval v[O_N];
    sd_err perr = {{0}};
    int n_pos = 0, prc = sd_args_parse(&spec, argc, argv, v, O_N, &n_pos, &perr);
    if (prc > 0) return 0;
    const char *model = v[SD_O_MODEL].s, *tokfile = v[SD_O_TOKENIZER].s, *file = v[O_FILE].s, *text = pos[0];
    bool no_bos = v[O_NO_BOS].i, special = v[O_SPECIAL].i;
    const char *bad = prc < 0 ? perr.msg + strlen("specd tokenize: ")
                      : !model ? "-m MODEL is required"
                      : n_pos > 1 ? "more than one text given (quote it)"
                      : (!text) == (!file) ? "give either TEXT or --file F" : NULL;
    if (bad) {
        fprintf(stderr, "specd tokenize: %s\n(specd tokenize --help for usage)\n", bad);
        return 2;
    }
    char *buf = NULL;
    size_t len = 0;
    if (file && read_file(file, &buf, &len)) {
        fprintf(stderr, "specd tokenize: cannot read %s\n", file);
        return 1;
    }
    sd_err err = {{0}};
    sd_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    int flags = (no_bos ? 0 : SD_TOK_DEFAULT_SPECIALS) | (special ? SD_TOK_PARSE_SPECIAL : 0);
    if (load_tokenizer(model, tokfile, &tok, &err) == 0 &&
        sd_tok_encode(tok, file ? buf : text, file ? len : strlen(text), flags, &ids, &n, &err) == 0) {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        rc = 0;
    } else {
        fprintf(stderr, "specd tokenize: %s\n", err.msg);
    }
    free(ids);
    sd_tok_free(tok);
    free(buf);
    return rc;
}
