/* The golden test: every line of ../shared/reference/aidreams260K-greedy.tsv (prompt, steps, expected
 * text from llama2.c and llama.cpp) reproduced exactly, greedy, from the llama2.c checkpoint and from the
 * GGUF conversion, through the forward pass directly and through `build/specd generate --json`. */
#include "kernels/backend.h"
#include "model/model.h"
#include "target/sampler.h"
#include "tokenizer/tokenizer.h"
#include "tests/test.h"
#include "tests/test_util.h"

typedef struct gline {
    char *prompt, *expected;
    int steps;
} gline;

/* Reads the TSV (prompt<TAB>steps<TAB>expected); returns the number of lines, -1 on a malformed file. */
static int read_tsv(const char *path, gline **out) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    gline *v = NULL;
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2) { n = -1; break; }
        *t1 = *t2 = 0;
        v = realloc(v, sizeof *v * (n + 1));
        v[n].prompt = strdup(line);
        v[n].steps = atoi(t1 + 1);
        v[n].expected = strdup(t2 + 1);
        n++;
    }
    free(line);
    fclose(f);
    *out = v;
    return n;
}

static void free_tsv(gline *v, int n) {
    for (int i = 0; i < n; i++) { free(v[i].prompt); free(v[i].expected); }
    free(v);
}

/* Tokens generated for a line. `steps` counts positions as llama2.c's run.c does: tokens at positions
 * 0..steps-1 are run through the model and each one's successor is printed, so BOS is followed by
 * `steps` tokens, prompt (n_prompt - 1 without BOS) and generated: the last generated token is sampled
 * from the logits at position steps-1 and never itself run. */
static int n_generate(const gline *g, int n_prompt) { return g->steps - (n_prompt - 1); }

/* Greedy generation with sd_forward; returns the malloc'd text (prompt + generation). */
static char *generate(sd_model *m, const gline *g, sd_err *err) {
    int32_t *ids = NULL;
    int n = 0;
    if (sd_tok_encode(m->tok, g->prompt, strlen(g->prompt), SD_TOK_ADD_BOS, &ids, &n, err) != 0) return NULL;
    int gen = n_generate(g, n);
    size_t plen = strlen(g->prompt), cap = plen + (size_t)(gen > 0 ? gen : 0) * (SD_TOK_MAX_PIECE + 16) + 64;
    char *text = malloc(cap);
    memcpy(text, g->prompt, plen);
    size_t len = plen;
    float *logits = malloc(sizeof(float) * m->hp.vocab);
    sd_seq *s = NULL;
    if (sd_seq_new(m, 0, 0, &s, err) != 0 || sd_forward(s, ids, n, false, logits, err) != 0) {
        sd_seq_free(s); free(ids); free(text); free(logits);
        return NULL;
    }
    sd_detok dt;
    sd_detok_init(&dt, m->tok, ids[n - 1]);
    for (int i = 0; i < gen; i++) {
        int32_t next = sd_argmax(logits, m->hp.vocab);
        if (sd_tok_is_eog(m->tok, next) || next == sd_tok_bos(m->tok)) break;
        len += sd_detok_push(&dt, next, text + len, cap - len);
        if (i + 1 < gen && sd_forward(s, &next, 1, false, logits, err) != 0) {
            free(text); text = NULL;
            break;
        }
    }
    if (text) {
        len += sd_detok_flush(&dt, text + len, cap - len);
        text[len] = 0;
    }
    sd_seq_free(s);
    free(ids);
    free(logits);
    return text;
}

static void check_model(const char *model, const char *tokf) {
    gline *v;
    int n = read_tsv(shared_path("reference/aidreams260K-greedy.tsv"), &v);
    REQUIRE(n > 0);
    sd_err err = {{0}};
    sd_backend *be = NULL;
    REQUIRE(sd_backend_cpu_new(2, &be, &err) == 0);
    sd_model *m = NULL;
    if (sd_model_load(model, tokf, be, &m, &err) != 0) fprintf(stderr, "  %s: %s\n", model, err.msg);
    if (m) {
        for (int i = 0; i < n; i++) {
            char *text = generate(m, &v[i], &err);
            CHECKF(text != NULL, "%s: %s", v[i].prompt, err.msg);
            if (text) CHECKF(!strcmp(text, v[i].expected), "%s\n   got:  %s\n   want: %s", model, text, v[i].expected);
            free(text);
        }
    }
    CHECK(m != NULL);
    sd_model_free(m);
    be->destroy(be);
    free_tsv(v, n);
}

static bool have_shared(void) {
    return shared_path("models/aidreams260K.bin") && shared_path("models/tok512.bin") &&
           shared_path("models/aidreams260K.gguf") && shared_path("reference/aidreams260K-greedy.tsv");
}

static void test_golden_llama2c_bin(void) {
    if (!have_shared()) SKIP("../shared/models/aidreams260K.* or reference/aidreams260K-greedy.tsv missing");
    check_model(shared_path("models/aidreams260K.bin"), shared_path("models/tok512.bin"));
}

static void test_golden_gguf(void) {
    if (!have_shared()) SKIP("../shared/models/aidreams260K.* or reference/aidreams260K-greedy.tsv missing");
    check_model(shared_path("models/aidreams260K.gguf"), NULL);
}

/* ---- through the command line ---- */

/* Extracts the JSON string value of "key" from a one-object JSON text (handles the escapes json_str
 * writes). Returns a malloc'd string or NULL. */
static char *json_get_str(const char *js, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(js, pat);
    if (!p) return NULL;
    p += strlen(pat);
    char *out = malloc(strlen(p) + 1), *o = out;
    for (; *p && *p != '"'; p++) {
        if (*p != '\\') { *o++ = *p; continue; }
        p++;
        switch (*p) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': { unsigned c = 0; sscanf(p + 1, "%4x", &c); *o++ = (char)c; p += 4; break; }
        default: *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

/* Single-quotes s for the shell. */
static void shell_quote(char *out, size_t cap, const char *s) {
    size_t o = 0;
    out[o++] = '\'';
    for (; *s && o + 5 < cap; s++) {
        if (*s == '\'') { memcpy(out + o, "'\\''", 4); o += 4; }
        else out[o++] = *s;
    }
    out[o++] = '\'';
    out[o] = 0;
}

static void check_cli(const char *model_args) {
    gline *v;
    int n = read_tsv(shared_path("reference/aidreams260K-greedy.tsv"), &v);
    REQUIRE(n > 0);
    sd_err err = {{0}};
    sd_backend *be = NULL;
    sd_tokenizer *tok = NULL;
    REQUIRE(sd_backend_cpu_new(1, &be, &err) == 0);
    sd_model *m = NULL;
    REQUIRE(sd_model_load(shared_path("models/aidreams260K.bin"), shared_path("models/tok512.bin"), be, &m, &err) == 0);
    tok = m->tok;
    for (int i = 0; i < n; i++) {
        int32_t *ids = NULL;
        int np = 0;
        REQUIRE(sd_tok_encode(tok, v[i].prompt, strlen(v[i].prompt), SD_TOK_ADD_BOS, &ids, &np, &err) == 0);
        free(ids);
        char q[1024], cmd[8192];
        shell_quote(q, sizeof q, v[i].prompt);
        snprintf(cmd, sizeof cmd, "%s/specd generate %s -p %s -n %d --temp 0 --json -t 1 2>/dev/null",
                 getenv("BUILD") ? getenv("BUILD") : "build", model_args, q, n_generate(&v[i], np));
        int st = -1;
        char *js = run_capture(cmd, &st);
        CHECKF(st == 0, "%s: exit %d", cmd, st);
        char *text = js ? json_get_str(js, "text") : NULL;
        CHECKF(text && !strcmp(text, v[i].expected), "%s\n   got:  %s\n   want: %s", cmd, text ? text : js,
               v[i].expected);
        free(text);
        free(js);
    }
    sd_model_free(m);
    be->destroy(be);
    free_tsv(v, n);
}

static void test_golden_cli(void) {
    if (!have_shared()) SKIP("../shared/models/aidreams260K.* or reference/aidreams260K-greedy.tsv missing");
    char args[3072];
    char a[1024], b[1024];
    shell_quote(a, sizeof a, shared_path("models/aidreams260K.bin"));
    shell_quote(b, sizeof b, shared_path("models/tok512.bin"));
    snprintf(args, sizeof args, "-m %s -z %s", a, b);
    check_cli(args);
    shell_quote(a, sizeof a, shared_path("models/aidreams260K.gguf"));
    snprintf(args, sizeof args, "-m %s", a);
    check_cli(args);
}

int main(void) {
    RUN(test_golden_llama2c_bin);
    RUN(test_golden_gguf);
    RUN(test_golden_cli);
    return TEST_DONE();
}
