/* `specd tokenize`: the token ids of a text, from the tokenizer alone (no weights are loaded, so
 * vocabulary-only GGUF files work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "cmd/commands.h"

static int usage(void) {
    fprintf(stderr,
            "usage: specd tokenize -m MODEL [-z TOKENIZER] [--no-bos] [--special] (TEXT | --file F)\n"
            "  -m MODEL      GGUF file (its tokenizer.ggml.* metadata) or llama2.c checkpoint (.bin, needs -z)\n"
            "  -z TOKENIZER  llama2.c tokenizer file (tokenizer.bin format)\n"
            "  --no-bos      do not add BOS (nor EOS) even when the model's metadata asks for it\n"
            "  --special     parse special-token text (\"<|eot_id|>\" becomes that one token)\n"
            "  --file F      take the text byte for byte from file F\n"
            "prints the ids space-separated on one line\n");
    return 2;
}

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
    const char *model = NULL, *tokfile = NULL, *file = NULL, *text = NULL;
    bool no_bos = false, special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (!strcmp(a, "-m") && has_val) model = argv[++i];
        else if (!strcmp(a, "-z") && has_val) tokfile = argv[++i];
        else if (!strcmp(a, "--file") && has_val) file = argv[++i];
        else if (!strcmp(a, "--no-bos")) no_bos = true;
        else if (!strcmp(a, "--special")) special = true;
        else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "specd tokenize: unknown option or missing value: %s\n", a);
            return usage();
        } else if (!text) text = a;
        else {
            fprintf(stderr, "specd tokenize: more than one text given\n");
            return usage();
        }
    }
    if (!model || (!text && !file) || (text && file)) {
        fprintf(stderr, "specd tokenize: %s\n", !model ? "-m MODEL is required" : "give either TEXT or --file F");
        return usage();
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
