/* Helpers several test programs share: a per-program temp dir, whole-file read/write, running the specd
 * binary and capturing its output, llama.cpp's vocab conformance files (.inp/.out), token-id lists.
 * Include after tests/test.h. Everything is static inline so a program that uses only part of it
 * compiles without unused-function warnings. */
#ifndef SD_TEST_UTIL_H
#define SD_TEST_UTIL_H
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- a temp dir for the program's files: make_tmpdir() in main, tmp_path() for names in it ---- */
static char g_dir[256];

/* Creates g_dir as /tmp/<tag>XXXXXX; -1 when mkdtemp fails. */
static inline int make_tmpdir(const char *tag) {
    snprintf(g_dir, sizeof g_dir, "/tmp/%sXXXXXX", tag);
    return mkdtemp(g_dir) ? 0 : -1;
}

/* Removes g_dir and everything in it (best effort: a failure is only reported). */
static inline void remove_tmpdir(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

/* g_dir/name; the result stays valid for the next 7 calls. */
static inline const char *tmp_path(const char *name) {
    static char buf[8][512];
    static int slot;
    char *p = buf[slot++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

/* Runs `$BUILD/specd ARGS` (build/ by default), stdout and stderr into a file in the temp dir and then into
 * out (cap bytes, NUL-terminated); returns the exit status, -1 when it did not exit. */
static inline int run_specd_out(const char *args, char *out, size_t cap) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[2048];
    const char *log = tmp_path("specd.log");
    snprintf(cmd, sizeof cmd, "%s/specd %s >'%s' 2>&1", build, args, log);
    int st = system(cmd);
    out[0] = 0;
    FILE *f = fopen(log, "rb");
    if (f) {
        size_t n = fread(out, 1, cap - 1, f);
        out[n] = 0;
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- whole files ---- */

/* Everything left in stream f (a file or a pipe) plus a terminating NUL (free() it), its length in *n
 * when n is not NULL; NULL when out of memory. */
static inline char *read_stream(FILE *f, size_t *n) {
    size_t cap = 4096, len = 0, r;
    char *b = malloc(cap);
    while (b && (r = fread(b + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len < 2) {
            char *q = realloc(b, cap *= 2);
            if (!q) free(b);
            b = q;
        }
    }
    if (b) b[len] = '\0';
    if (n) *n = len;
    return b;
}

/* The whole file plus a terminating NUL (free() it), its length in *n when n is not NULL; NULL when
 * unreadable. */
static inline char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = read_stream(f, n);
    fclose(f);
    return b;
}

static inline int write_all(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) || w != n ? -1 : 0;
}

/* ---- running commands ---- */

/* $BUILD/specd (default build/specd), or NULL when it is not built. */
static inline const char *specd_bin(void) {
    static char p[512];
    const char *b = getenv("BUILD");
    snprintf(p, sizeof p, "%s/specd", b && *b ? b : "build");
    return access(p, X_OK) == 0 ? p : NULL;
}

/* Runs cmd through the shell, puts up to cap-1 bytes of its stdout in out (NUL-terminated);
 * returns its exit status, -1 when it could not run or did not exit normally. */
static inline int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs cmd through the shell: its whole stdout (malloc'd, NUL-terminated), *status its exit status
 * (-1 when it did not exit normally); NULL when it could not run. */
static inline char *run_capture(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    char *out = read_stream(p, NULL);
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* ---- llama.cpp's vocab conformance vectors ---- */

/* .inp: every test string followed by "\n__ggml_vocab_test__\n"; .out: one line of ids per string. */
#define VOCAB_SEP "\n__ggml_vocab_test__\n"
typedef struct vecs {
    char *inp, *out;
    const char *str[128];
    size_t len[128];
    const char *ids[128]; /* start of the matching .out line */
    int n;
} vecs;

/* Reads and splits a pair of .inp/.out files; -1 when either is unreadable or their counts differ. */
static inline int load_vecs_files(const char *inp_path, const char *out_path, vecs *v) {
    size_t ni, no;
    memset(v, 0, sizeof *v);
    v->inp = read_all(inp_path, &ni);
    v->out = read_all(out_path, &no);
    if (!v->inp || !v->out) return -1;
    for (char *s = v->inp; v->n < 128;) {
        char *e = strstr(s, VOCAB_SEP);
        if (!e) break;
        v->str[v->n] = s;
        v->len[v->n++] = (size_t)(e - s);
        s = e + strlen(VOCAB_SEP);
    }
    int lines = 0;
    for (char *s = v->out; *s && lines < v->n; lines++) {
        v->ids[lines] = s;
        char *nl = strchr(s, '\n');
        if (!nl) { lines++; break; }
        s = nl + 1;
    }
    return lines == v->n ? 0 : -1;
}

static inline void free_vecs(vecs *v) {
    free(v->inp);
    free(v->out);
}

/* ---- token-id lists ---- */

/* The integers on one line of text (up to cap), skipping anything between them. */
static inline int parse_ids(const char *line, int32_t *ids, int cap) {
    int n = 0;
    while (*line && *line != '\n' && n < cap) {
        char *end;
        long x = strtol(line, &end, 10);
        if (end == line) { line++; continue; }
        ids[n++] = (int32_t)x;
        line = end;
    }
    return n;
}

static inline bool ids_equal(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

static inline void print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "    %s:", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* ---- numbers ---- */

/* A fixed-seed xorshift64 stream: the same pseudo-random inputs on every run. */
static uint64_t g_rand_state = 0x9e3779b97f4a7c15ull;
static inline uint32_t rand_u32(void) {
    g_rand_state ^= g_rand_state << 13;
    g_rand_state ^= g_rand_state >> 7;
    g_rand_state ^= g_rand_state << 17;
    return (uint32_t)(g_rand_state >> 16);
}

/* IEEE half (bits) -> float, written independently of the library's conversion it is used to check. */
static inline float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) return (sign ? -1.0f : 1.0f) * ldexpf((float)man, -24);
    bits = exp == 31 ? sign | 0x7f800000u | (man << 13) : sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}


/* Chi-square quantile with df degrees of freedom at standard-normal point z (Wilson-Hilferty),
 * accurate to a fraction of a percent for df > 30. */
static inline double chi2_crit(int df, double z) {
    double h = 2.0 / (9.0 * df);
    return df * pow(1 - h + z * sqrt(h), 3);
}

/* Chi-square of n cells' counts over `trials` against probabilities p (cells of expected count < 5
 * pooled into one); sets *df; -1 when an outcome of probability 0 was seen. */
static inline double chi2_counts(const int *count, const double *p, int n, int trials, int *df) {
    double chi = 0, pe = 0, po = 0;
    int cells = 0;
    *df = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * trials;
        if (p[i] <= 0 && count[i] > 0) return -1;
        if (e < 5) {
            pe += e;
            po += count[i];
            continue;
        }
        chi += (count[i] - e) * (count[i] - e) / e;
        cells++;
    }
    if (pe > 0) {
        chi += (po - pe) * (po - pe) / pe;
        cells++;
    }
    *df = cells - 1;
    return chi;
}

/* Target and draft as Markov chains over mv tokens (row a: the logits after token a), for the exactness
 * tests of speculative sampling: the target favours a + 1 after a, the draft a + 2, so they disagree often. */
static inline void spec_chains(int mv, float *P, float *Q) {
    uint64_t s = 7;
    for (int a = 0; a < mv; a++)
        for (int b = 0; b < mv; b++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float u1 = (float)(s >> 40) / 16777216.0f;
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            float u2 = (float)(s >> 40) / 16777216.0f;
            P[a * mv + b] = logf(0.05f + u1 * (b == (a + 1) % mv ? 4.0f : 1.0f));
            Q[a * mv + b] = logf(0.05f + u2 * (b == (a + 2) % mv ? 4.0f : 1.0f));
        }
}
#endif
