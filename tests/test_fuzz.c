/* Corpus replay of the fuzz targets (tests/fuzz/fuzz_*.c, run under libFuzzer by `make fuzz`): each
 * target gets every file kept in tests/fuzz/corpus/<target>/ (small seeds and every input that ever
 * crashed a target), seeds generated here and from ../shared, and a fixed set of deterministic mutations
 * of each seed. `make SAN=1 test` makes this a sanitizer run of all the targets. The generated seeds are
 * also written to $BUILD/fuzz/seeds/<target>/, where `make fuzz` starts from them. */
#define FUZZ_ENTRY fuzz_gguf
#include "tests/fuzz/fuzz_gguf.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_llama2c
#include "tests/fuzz/fuzz_llama2c.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_tok
#include "tests/fuzz/fuzz_tok.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_request
#include "tests/fuzz/fuzz_request.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_reply
#include "tests/fuzz/fuzz_reply.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_template
#include "tests/fuzz/fuzz_template.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_http
#include "tests/fuzz/fuzz_http.c"
#undef FUZZ_ENTRY

#include <dirent.h>
#include <sys/stat.h>

#include "tests/test.h"
#include "tests/test_util.h"
#include "tools/mkmodel.h"

typedef int (*fuzz_fn)(const uint8_t *, size_t);
typedef struct blob { uint8_t *p; size_t n; } blob;
typedef struct blobs { blob v[64]; int n; } blobs;

/* Appends prefix (may be empty) followed by the bytes of file path (NULL: none) as one seed. */
static void add_seed(blobs *s, const void *prefix, size_t np, const void *body, size_t nb) {
    if (s->n == 64) return;
    uint8_t *p = malloc(np + nb + 1);
    if (!p) return;
    if (np) memcpy(p, prefix, np);
    if (nb) memcpy(p + np, body, nb);
    s->v[s->n++] = (blob){p, np + nb};
}
static void add_file(blobs *s, const void *prefix, size_t np, const char *path) {
    size_t n;
    char *b = path ? read_all(path, &n) : NULL;
    if (b) add_seed(s, prefix, np, b, n);
    free(b);
}
static void free_blobs(blobs *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i].p);
    s->n = 0;
}

/* Writes the generated seeds where `make fuzz` finds them ($BUILD/fuzz/seeds/<name>/). */
static void save_seeds(const char *name, const blobs *s) {
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/fuzz", build);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/fuzz/seeds", build);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/fuzz/seeds/%s", build, name);
    mkdir(dir, 0755);
    for (int i = 0; i < s->n; i++) {
        snprintf(path, sizeof path, "%s/seed-%02d", dir, i);
        write_all(path, s->v[i].p, s->v[i].n);
    }
}

/* Runs fn on every file of tests/fuzz/corpus/<name>/; returns how many. */
static int replay_kept(const char *name, fuzz_fn fn) {
    char dir[256], path[600];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", name);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        char *b = read_all(path, &len);
        if (!b) continue;
        fn((const uint8_t *)b, len);
        free(b);
        n++;
    }
    closedir(d);
    return n;
}

static uint64_t g_mrng;
static uint32_t mrand(void) {
    g_mrng = g_mrng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_mrng >> 33);
}

/* A deterministic mutant of src in dst (same capacity as src + 8): byte flips, a truncation, or an
 * "interesting" 1/2/4/8-byte value written over counts and lengths. Half the edits land in the first
 * 512 bytes, where headers and counts live. */
static size_t mutate(const blob *src, uint8_t *dst) {
    static const uint64_t interesting[] = {0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fffffff,
                                           0x80000000u, 0xffffffffu, 0x100000000ull, UINT64_MAX, 1ull << 62};
    size_t n = src->n;
    memcpy(dst, src->p, n);
    if (n == 0) return 0;
    int edits = 1 + (int)(mrand() % 4);
    for (int k = 0; k < edits && n > 0; k++) {
        size_t at = (mrand() % 2 && n > 512) ? mrand() % 512 : mrand() % n;
        switch (mrand() % 4) {
        case 0: dst[at] ^= (uint8_t)(1u << (mrand() % 8)); break;
        case 1: dst[at] = (uint8_t)mrand(); break;
        case 2: if (k == 0) n = at; break; /* truncate */
        default: {
            uint64_t v = interesting[mrand() % (sizeof interesting / sizeof interesting[0])];
            size_t w = (size_t)1 << (mrand() % 4);
            if (at + w <= n) memcpy(dst + at, &v, w);
        }
        }
    }
    return n;
}

/* Kept corpus, then the seeds, then `mutants` mutants of each seed: nothing may crash (the sanitizer
 * build turns any memory error, leak or undefined behaviour into a failure of this program). */
static void replay(const char *name, fuzz_fn fn, blobs *s, int mutants) {
    save_seeds(name, s);
    int kept = replay_kept(name, fn), runs = kept;
    CHECKF(kept > 0, "tests/fuzz/corpus/%s is empty or missing (run from the repository root)", name);
    CHECKF(s->n > 0, "no seeds for %s", name);
    g_mrng = 0x5eed0000u + (uint64_t)s->n;
    for (int i = 0; i < s->n; i++) {
        fn(s->v[i].p, s->v[i].n);
        uint8_t *m = malloc(s->v[i].n + 8);
        REQUIRE(m);
        for (int k = 0; k < mutants; k++, runs++) fn(m, mutate(&s->v[i], m));
        free(m);
        runs++;
    }
    fprintf(stderr, "  %s: %d kept inputs, %d seeds, %d runs\n", name, kept, s->n, runs);
    free_blobs(s);
}

/* ---- seeds ---- */

/* A tiny synthetic model of the given type, as bytes. */
static void add_mkmodel(blobs *s, int type) {
    sd_mk_opts o;
    sd_mk_defaults(&o);
    o.shape = (sd_mk_shape){.dim = 32, .layers = 1, .heads = 2, .kv_heads = 1, .ffn = 64, .vocab = 300, .ctx = 16};
    o.type = type;
    sd_err err;
    const char *p = tmp_path("seed.gguf");
    if (sd_mk_write(&o, p, &err) == 0) add_file(s, NULL, 0, p);
    else fprintf(stderr, "  mkmodel: %s\n", err.msg);
}

static void test_gguf(void) {
    blobs s = {0};
    add_mkmodel(&s, SD_F32);
    add_mkmodel(&s, SD_F16);
    add_mkmodel(&s, SD_Q8_0);
    add_file(&s, NULL, 0, shared_path("models/aidreams-draft.gguf"));
    replay("gguf", fuzz_gguf, &s, 300);
}

/* A llama2.c checkpoint of the smallest sensible shape with its tokenizer file. */
static void add_tiny_llama2c(blobs *s) {
    int32_t h[7] = {8, 16, 1, 2, 2, 40, 8};
    size_t floats = 40 * 8 + 8 + 4 * 8 * 8 + 8 + 3 * 8 * 16 + 8 + 8 * 4; /* emb, rms, qkvo, rms, ffn, final, freq */
    size_t nm = 28 + floats * 4;
    uint8_t *b = calloc(1, nm + 4096);
    if (!b) return;
    memcpy(b, h, 28);
    for (size_t i = 0; i < floats; i++) { float x = (float)((i * 37) % 17) / 17.0f - 0.5f; memcpy(b + 28 + 4 * i, &x, 4); }
    size_t o = nm;
    int32_t maxlen = 8;
    memcpy(b + o, &maxlen, 4); o += 4;
    for (int t = 0; t < 40; t++) {
        char piece[8];
        int len = t == 0 ? snprintf(piece, sizeof piece, "<unk>") : t < 3 ? snprintf(piece, sizeof piece, t == 1 ? "<s>" : "</s>")
                                                                           : snprintf(piece, sizeof piece, "%c", 'a' + (t - 3) % 26);
        if (t >= 29) len = snprintf(piece, sizeof piece, " %c", 'a' + t - 29);
        float score = -(float)t;
        memcpy(b + o, &score, 4); o += 4;
        memcpy(b + o, &len, 4); o += 4;
        memcpy(b + o, piece, (size_t)len); o += (size_t)len;
    }
    uint32_t nm32 = (uint32_t)nm;
    add_seed(s, &nm32, 4, b, o);
    free(b);
}

static void test_llama2c(void) {
    blobs s = {0};
    add_tiny_llama2c(&s);
    const char *bin = shared_path("models/aidreams-draft.bin"), *tok = shared_path("models/tok512.bin");
    size_t nb, nt;
    char *b = bin ? read_all(bin, &nb) : NULL, *t = tok ? read_all(tok, &nt) : NULL;
    if (b && t) {
        uint32_t n32 = (uint32_t)nb;
        uint8_t *both = malloc(nb + nt);
        if (both) {
            memcpy(both, b, nb);
            memcpy(both + nb, t, nt);
            add_seed(&s, &n32, 4, both, nb + nt);
            free(both);
        }
    }
    free(b);
    free(t);
    replay("llama2c", fuzz_llama2c, &s, 200);
}

/* A vocabulary-only GGUF: the synthetic SentencePiece one of mkmodel. */
static char *synth_spm_vocab(size_t *n) {
    gguf_writer *w = gguf_writer_new(32);
    sd_err err;
    const char *p = tmp_path("spm.gguf");
    char *b = NULL;
    if (sd_mk_synth_vocab(w, 300, &err) == 0 && gguf_writer_save(w, p, &err) == 0) b = read_all(p, n);
    gguf_writer_free(w);
    return b;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The first n_keep tokens of a BPE vocabulary and the merges among them: a small byte-level BPE seed. */
static char *bpe_subset(const char *path, int n_keep, size_t *n) {
    gguf_file *f = NULL;
    sd_err err;
    if (!path || gguf_open(path, &f, &err)) return NULL;
    const gguf_kv *toks = gguf_find(f, "tokenizer.ggml.tokens"), *merges = gguf_find(f, "tokenizer.ggml.merges");
    char *out = NULL;
    if (toks && merges && toks->arr_strs && merges->arr_strs && toks->arr_n >= (uint64_t)n_keep) {
        char **tv = calloc((size_t)n_keep, sizeof *tv), **sorted = calloc((size_t)n_keep, sizeof *sorted);
        char **mv = calloc(merges->arr_n, sizeof *mv);
        size_t nm = 0;
        for (int i = 0; tv && sorted && i < n_keep; i++) {
            tv[i] = strndup(toks->arr_strs[i].ptr, toks->arr_strs[i].len);
            sorted[i] = tv[i];
        }
        qsort(sorted, (size_t)n_keep, sizeof *sorted, str_cmp);
        for (uint64_t i = 0; mv && i < merges->arr_n; i++) {
            char *m = strndup(merges->arr_strs[i].ptr, merges->arr_strs[i].len), *sp = m ? strchr(m, ' ') : NULL;
            if (!sp) { free(m); continue; }
            *sp = 0;
            char *joined = malloc(strlen(m) + strlen(sp + 1) + 1);
            sprintf(joined, "%s%s", m, sp + 1);
            char *keys[3] = {m, sp + 1, joined};
            bool all = true;
            for (int k = 0; k < 3; k++) all = all && bsearch(&keys[k], sorted, (size_t)n_keep, sizeof *sorted, str_cmp);
            *sp = ' ';
            free(joined);
            if (all) mv[nm++] = m;
            else free(m);
        }
        gguf_writer *w = gguf_writer_new(32);
        for (uint64_t i = 0; i < f->n_kv; i++) {
            const gguf_kv *kv = &f->kv[i];
            if (strncmp(kv->key, "tokenizer.ggml.", 15) || kv == toks || kv == merges) continue;
            if (kv->type == GGUF_T_ARRAY) continue; /* per-token arrays (types, scores) would not match */
            if (strstr(kv->key, "_token_id") && kv->v.u >= (uint64_t)n_keep) continue;
            gguf_w_raw(w, kv->key, kv->type, kv->raw, kv->raw_len);
        }
        gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tv, (size_t)n_keep);
        gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mv, nm);
        const char *p = tmp_path("bpe.gguf");
        if (gguf_writer_save(w, p, &err) == 0) out = read_all(p, n);
        gguf_writer_free(w);
        for (int i = 0; tv && i < n_keep; i++) free(tv[i]);
        for (size_t i = 0; i < nm; i++) free(mv[i]);
        free(tv);
        free(sorted);
        free(mv);
    }
    gguf_close(f);
    return out;
}

/* flags byte, text length, text, vocabulary */
static void add_tok_seed(blobs *s, uint8_t flags, const char *text, const char *vocab, size_t nv) {
    size_t nt = strlen(text);
    uint8_t *head = malloc(5 + nt);
    if (!head) return;
    head[0] = flags;
    uint32_t n32 = (uint32_t)nt;
    memcpy(head + 1, &n32, 4);
    memcpy(head + 5, text, nt);
    add_seed(s, head, 5 + nt, vocab, nv);
    free(head);
}

static void test_tok(void) {
    blobs s = {0};
    size_t n;
    const char *texts[] = {"Hello world! <s> 123 \xc3\xa9t\xc3\xa9\n\n  tabs\t", " </s>\xf0\x9f\x98\x80 it's"};
    char *spm = synth_spm_vocab(&n);
    for (int i = 0; spm && i < 2; i++) add_tok_seed(&s, (uint8_t)(3 - i), texts[i], spm, n);
    free(spm);
    char *bpe = bpe_subset(shared_path("vocab/ggml-vocab-gpt-2.gguf"), 600, &n);
    for (int i = 0; bpe && i < 2; i++) add_tok_seed(&s, (uint8_t)(3 - i), texts[i], bpe, n);
    free(bpe);
    bpe = bpe_subset(shared_path("vocab/ggml-vocab-deepseek-llm.gguf"), 800, &n);
    if (bpe) add_tok_seed(&s, 1, texts[0], bpe, n);
    free(bpe);
    replay("tok", fuzz_tok, &s, 300);
}

static void add_sbuf(blobs *s, msgpack_sbuffer *sb) {
    add_seed(s, NULL, 0, sb->data, sb->size);
    msgpack_sbuffer_clear(sb);
}

static void test_request(void) {
    blobs s = {0};
    sd_request r;
    sd_err err;
    char *buf;
    size_t len;
    int32_t ids[] = {1, 2, 300};
    char *stops[] = {"\n\n", "END"};
    sd_chat_msg msgs[2] = {{.role = "system", .content = "Be brief.", .content_len = 9},
                           {.role = "user", .content = "Hi", .content_len = 2}};
    for (int op = SD_OP_GENERATE; op <= SD_OP_LAST; op++) {
        sd_request_init(&r, (sd_op)op, 7);
        if (op == SD_OP_GENERATE) {
            r.gen.prompt = "Once upon a time";
            r.gen.prompt_len = strlen(r.gen.prompt);
            r.gen.set = SD_GF_MAX_TOKENS | SD_GF_TEMPERATURE | SD_GF_TOP_P | SD_GF_STOP | SD_GF_SEED | SD_GF_STREAM;
            r.gen.max_tokens = 16;
            r.gen.temperature = 0.7f;
            r.gen.top_p = 0.9f;
            r.gen.stop = stops;
            r.gen.n_stop = 2;
            r.gen.seed = 1ull << 40;
            r.gen.stream = true;
        }
        if (op == SD_OP_TOKENIZE) { r.text = "héllo"; r.text_len = strlen(r.text); }
        if (op == SD_OP_DETOKENIZE) { r.tokens = ids; r.n_tokens = 3; }
        if (op == SD_OP_CANCEL) r.target = 3;
        if (op == SD_OP_CHAT) { r.messages = msgs; r.n_messages = 2; }
        if (sd_request_encode(&r, &buf, &len, &err) == 0) add_seed(&s, NULL, 0, buf, len);
        free(buf);
    }
    replay("request", fuzz_request, &s, 2000);
}

static void test_reply(void) {
    blobs s = {0};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int32_t ids[] = {5, 6};
    sd_done_stats st = {.prompt_tokens = 10, .prefilled = 4, .generated = 2, .queue_ms = 1.5, .acceptance = 0.5, .seed = 9};
    sd_enc_token_t(&sb, 3, "hé", 3, ids, 2, 12345); add_sbuf(&s, &sb);
    sd_enc_done(&sb, 4, "abc", 3, ids, 2, SD_FINISH_STR_LENGTH, &st); add_sbuf(&s, &sb);
    sd_enc_error(&sb, true, 5, SD_E_OUT_OF_RANGE, "top_p", "field 'top_p': must be in (0, 1]"); add_sbuf(&s, &sb);
    sd_enc_busy(&sb, 6, 100, 3, 1); add_sbuf(&s, &sb);
    sd_enc_heartbeat(&sb); add_sbuf(&s, &sb);
    sd_enc_result_tokens(&sb, 7, ids, 2); add_sbuf(&s, &sb);
    sd_enc_result_text(&sb, 8, "text", 4); add_sbuf(&s, &sb);
    sd_enc_result_cancel(&sb, 9, 4, true); add_sbuf(&s, &sb);
    sd_enc_result_pong(&sb, 10, 99, "cuda: launch failed"); add_sbuf(&s, &sb);
    msgpack_sbuffer_destroy(&sb);
    replay("reply", fuzz_reply, &s, 1000);
}

/* Every template of ../shared/chat-templates with its first two cases (the case object is the variables). */
static void test_template(void) {
    blobs s = {0};
    const char *dir = shared_path("chat-templates");
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 7 || strcmp(e->d_name + n - 6, ".jinja")) continue;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t nt;
        char *src = read_all(path, &nt);
        snprintf(path + strlen(path) - 6, 20, ".cases.json");
        json_t *cases = json_load_file(path, 0, NULL);
        for (size_t i = 0; src && i < 2 && i < json_array_size(cases); i++) {
            json_t *c = json_deep_copy(json_array_get(cases, i));
            json_object_del(c, "expected");
            json_object_del(c, "error");
            char *vars = json_dumps(c, JSON_COMPACT);
            uint8_t *head = malloc(4 + nt);
            uint32_t n32 = (uint32_t)nt;
            if (vars && head) {
                memcpy(head, &n32, 4);
                memcpy(head + 4, src, nt);
                add_seed(&s, head, 4 + nt, vars, strlen(vars));
            }
            free(head);
            free(vars);
            json_decref(c);
        }
        json_decref(cases);
        free(src);
    }
    if (d) closedir(d);
    static const char small[] = "{% for m in messages %}{{ m.role | upper }}: {{ m.content | trim }}{% endfor %}";
    uint32_t n32 = sizeof small - 1;
    uint8_t head[4 + sizeof small];
    memcpy(head, &n32, 4);
    memcpy(head + 4, small, sizeof small - 1);
    add_seed(&s, head, 4 + n32, "Hello", 5);
    replay("template", fuzz_template, &s, 150);
}

/* Request bodies of both endpoints: every field, content parts, a few refused ones. */
static void test_http(void) {
    blobs s = {0};
    static const char *const bodies[] = {
        "\x01{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],\"max_completion_tokens\":5,"
        "\"temperature\":0.5,\"top_p\":0.9,\"min_p\":0.1,\"top_k\":4,\"stop\":[\"x\",\"y\"],\"n\":1,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"u\",\"seed\":7,\"speculative\":{\"mode\":\"plain\",\"draft_max\":4}}",
        "\x00{\"prompt\":\"Once upon a time\",\"max_tokens\":16,\"stop\":\"\\n\",\"seed\":null,\"stream\":false}",
        "\x00{\"prompt\":[\"h\\u00e9\"],\"max_tokens\":null}",
        "\x01{\"messages\":[{\"role\":\"user\",\"content\":null,\"name\":\"n\"}],\"tools\":[]}",
        "\x01{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}",
        "\x01{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frequency_penalty\":0,\"logprobs\":false,"
        "\"logit_bias\":{},\"response_format\":{\"type\":\"text\"},\"parallel_tool_calls\":true}",
        "\x00{\"prompt\":\"x\",\"echo\":false,\"best_of\":1,\"presence_penalty\":0.0}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) add_seed(&s, bodies[i], 1, bodies[i] + 1, strlen(bodies[i] + 1));
    replay("http", fuzz_http, &s, 1500);
}

int main(void) {
    if (make_tmpdir("specd-fuzz")) return 1;
    RUN(test_gguf);
    RUN(test_llama2c);
    RUN(test_tok);
    RUN(test_request);
    RUN(test_reply);
    RUN(test_template);
    RUN(test_http);
    remove_tmpdir();
    return TEST_DONE();
}
