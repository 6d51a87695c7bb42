/* GGUF reader and writer: real files from ../shared, a writer->reader round trip of every value type,
 * and every kind of malformed file (each must fail with a message naming the file and the problem). */
#include <stdint.h>
#include <sys/stat.h>

#include "kernels/backend.h"
#include "model/gguf.h"
#include "tests/test.h"
#include "tests/test_util.h"

static void test_dtype(void) {
    CHECK_STR_EQ(sd_dtype_name(SD_F16), "f16");
    CHECK_STR_EQ(sd_dtype_name(SD_Q8_0), "q8_0");
    CHECK_STR_EQ(sd_dtype_name(SD_Q4_K), "q4_K");
    CHECK(sd_dtype_name(77) == NULL);
    CHECK_EQ_INT(sd_dtype_block(SD_Q8_0), 32);
    CHECK_EQ_INT(sd_dtype_block(SD_Q6_K), 256);
    CHECK_EQ_INT(sd_dtype_block(-1), 0);
    CHECK_EQ_INT(sd_dtype_row_bytes(SD_F32, 10), 40);
    CHECK_EQ_INT(sd_dtype_row_bytes(SD_BF16, 10), 20);
    CHECK_EQ_INT(sd_dtype_row_bytes(SD_Q8_0, 64), 68);
    CHECK_EQ_INT(sd_dtype_row_bytes(SD_Q4_0, 64), 36);
    CHECK_EQ_INT(sd_dtype_row_bytes(SD_Q4_K, 512), 288);
    CHECK(sd_dtype_supported(SD_F32) && sd_dtype_supported(SD_F16) && sd_dtype_supported(SD_BF16));
    CHECK(sd_dtype_supported(SD_Q8_0));
    CHECK(!sd_dtype_supported(SD_Q4_0) && !sd_dtype_supported(SD_Q4_K) && !sd_dtype_supported(SD_Q6_K));
}

/* Every tensor of an opened file lies inside the mapping and has the size its type and shape say. */
static void check_tensors_sane(const gguf_file *f) {
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor_info *t = &f->tensors[i];
        const uint8_t *d = t->data;
        CHECK(d >= f->map + f->data_offset && d + t->nbytes <= f->map + f->size);
        CHECK((uint64_t)(d - f->map) % f->alignment == 0);
        int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        CHECK_EQ_INT(t->nbytes, sd_dtype_row_bytes((int)t->type, t->ne[0]) * (size_t)(n / t->ne[0]));
    }
}

static void test_real_model(void) {
    const char *path = shared_path("models/aidreams260K.gguf");
    if (!path) SKIP("../shared/models/aidreams260K.gguf not found");
    gguf_file *f;
    sd_err err = {{0}};
    REQUIRE(gguf_open(path, &f, &err) == 0);
    CHECK_EQ_INT(f->version, 3);
    char *arch = NULL;
    CHECK(gguf_get_str(f, "general.architecture", &arch, &err) == 0);
    CHECK_STR_EQ(arch, "llama");
    free(arch);
    uint32_t dim = 0, layers = 0;
    CHECK(gguf_get_u32(f, "llama.embedding_length", &dim, &err) == 0);
    CHECK(gguf_get_u32(f, "llama.block_count", &layers, &err) == 0);
    CHECK_EQ_INT(dim, 64);   /* shared/README.md: dim 64, 4 layers, vocab 512 */
    CHECK_EQ_INT(layers, 4);
    const gguf_kv *tok = gguf_find(f, "tokenizer.ggml.tokens");
    REQUIRE(tok && tok->type == GGUF_T_ARRAY && tok->arr_type == GGUF_T_STRING);
    CHECK_EQ_INT(tok->arr_n, 512);
    const gguf_kv *scores = gguf_find(f, "tokenizer.ggml.scores");
    REQUIRE(scores);
    float s;
    CHECK(gguf_arr_f32(scores, 511, &s) == 0);
    CHECK(gguf_arr_f32(scores, 512, &s) == -1);
    CHECK(gguf_arr_f32(tok, 0, &s) == -1); /* strings are not numbers */
    const gguf_tensor_info *emb = gguf_find_tensor(f, "token_embd.weight");
    REQUIRE(emb);
    CHECK_EQ_INT(emb->ne[0], 64);
    CHECK_EQ_INT(emb->ne[1], 512);
    CHECK_EQ_INT(emb->type, SD_F32);
    CHECK(gguf_find_tensor(f, "blk.3.ffn_down.weight") != NULL);
    CHECK(gguf_find_tensor(f, "blk.4.ffn_down.weight") == NULL);
    check_tensors_sane(f);
    uint32_t u;
    CHECK(gguf_get_u32(f, "no.such.key", &u, &err) == -1);
    CHECK(strstr(err.msg, "no.such.key") != NULL);
    CHECK(gguf_get_u32(f, "general.architecture", &u, &err) == -1); /* a string, not an integer */
    gguf_close(f);
}

static void test_real_draft_and_vocabs(void) {
    const char *files[] = {"models/aidreams-draft.gguf", "vocab/ggml-vocab-llama-spm.gguf",
                           "vocab/ggml-vocab-phi-3.gguf", "vocab/ggml-vocab-gpt-2.gguf"};
    int opened = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        const char *path = shared_path(files[i]);
        if (!path) continue;
        gguf_file *f;
        sd_err err = {{0}};
        CHECKF(gguf_open(path, &f, &err) == 0, "%s", err.msg);
        if (!f) continue;
        opened++;
        const gguf_kv *tok = gguf_find(f, "tokenizer.ggml.tokens");
        CHECK(tok && tok->arr_type == GGUF_T_STRING && tok->arr_n > 0);
        for (uint64_t k = 0; tok && k < tok->arr_n; k++)
            CHECK(tok->arr_strs[k].ptr >= (const char *)f->map &&
                  tok->arr_strs[k].ptr + tok->arr_strs[k].len <= (const char *)f->map + f->size);
        check_tensors_sane(f);
        gguf_close(f);
    }
    if (!opened) SKIP("no GGUF files under ../shared");
}

/* Rewriting a file written by llama.cpp's own tooling (every kv copied, every tensor re-added) gives the
 * same bytes: the writer lays out GGUF exactly as llama.cpp does. */
static void test_rewrite_identical(void) {
    const char *files[] = {"models/aidreams260K.gguf", "models/aidreams-draft.gguf", "vocab/ggml-vocab-llama-spm.gguf",
                           "vocab/ggml-vocab-gpt-2.gguf"};
    int done = 0;
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        const char *path = shared_path(files[k]);
        if (!path) continue;
        gguf_file *f;
        sd_err err = {{0}};
        REQUIRE(gguf_open(path, &f, &err) == 0);
        gguf_writer *w = gguf_writer_new((uint32_t)f->alignment);
        for (uint64_t i = 0; i < f->n_kv; i++)
            if (strcmp(f->kv[i].key, "general.alignment") || f->alignment == 32)
                gguf_w_raw(w, f->kv[i].key, f->kv[i].type, f->kv[i].raw, f->kv[i].raw_len);
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const gguf_tensor_info *t = &f->tensors[i];
            gguf_w_tensor(w, t->name, t->type, (int)t->n_dims, t->ne, t->data);
        }
        const char *out = tmp_path("rewrite.gguf");
        CHECKF(gguf_writer_save(w, out, &err) == 0, "%s", err.msg);
        gguf_writer_free(w);
        size_t n = 0;
        uint8_t *b = (uint8_t *)read_all(out, &n);
        CHECKF(b && n == f->size && !memcmp(b, f->map, n), "%s: rewrite differs (%zu vs %zu bytes)", files[k], n, f->size);
        free(b);
        gguf_close(f);
        done++;
    }
    if (!done) SKIP("no GGUF files under ../shared");
}

/* ---- writer -> reader round trip ---- */

static void fill_ramp(void *ctx, void *buf, size_t offset, size_t nbytes) {
    uint8_t *b = buf;
    for (size_t i = 0; i < nbytes; i++) b[i] = (uint8_t)((offset + i) * 7 + (uintptr_t)ctx);
}

static void write_all_types(const char *path, uint32_t align) {
    gguf_writer *w = gguf_writer_new(align);
    uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000;
    uint64_t u64 = 1ull << 40; int64_t i64 = -(1ll << 40); double f64 = 3.25;
    uint8_t b = 1;
    gguf_w_scalar(w, "t.u8", GGUF_T_UINT8, &u8);
    gguf_w_scalar(w, "t.i8", GGUF_T_INT8, &i8);
    gguf_w_scalar(w, "t.u16", GGUF_T_UINT16, &u16);
    gguf_w_scalar(w, "t.i16", GGUF_T_INT16, &i16);
    gguf_w_u32(w, "t.u32", 4000000000u);
    gguf_w_i32(w, "t.i32", -2000000000);
    gguf_w_f32(w, "t.f32", 0.5f);
    gguf_w_scalar(w, "t.bool", GGUF_T_BOOL, &b);
    gguf_w_str(w, "t.str", "hello ▁world");
    gguf_w_scalar(w, "t.u64", GGUF_T_UINT64, &u64);
    gguf_w_scalar(w, "t.i64", GGUF_T_INT64, &i64);
    gguf_w_scalar(w, "t.f64", GGUF_T_FLOAT64, &f64);
    const char *strs[] = {"a", "", "<0x0A>"};
    gguf_w_arr_str(w, "t.astr", strs, 3);
    float fa[] = {1.5f, -2.0f};
    gguf_w_arr_f32(w, "t.af32", fa, 2);
    int32_t ia[] = {-1, 2, 3};
    gguf_w_arr_i32(w, "t.ai32", ia, 3);
    uint16_t ua[] = {1, 65535};
    gguf_w_arr(w, "t.au16", GGUF_T_UINT16, ua, 2);
    double da[] = {0.25};
    gguf_w_arr(w, "t.af64", GGUF_T_FLOAT64, da, 1);
    /* nested: an array of 2 arrays: [[7, 8], ["x"]] serialized by hand */
    uint8_t nested[256];
    size_t n = 0;
#define PUT(v) do { memcpy(nested + n, &(v), sizeof(v)); n += sizeof(v); } while (0)
    uint32_t t_arr = GGUF_T_ARRAY, t_i32 = GGUF_T_INT32, t_str = GGUF_T_STRING;
    uint64_t two = 2, one = 1;
    int32_t seven = 7, eight = 8;
    PUT(t_arr); PUT(two);
    PUT(t_i32); PUT(two); PUT(seven); PUT(eight);
    PUT(t_str); PUT(one); PUT(one); nested[n++] = 'x';
#undef PUT
    gguf_w_raw(w, "t.nested", GGUF_T_ARRAY, nested, n);
    float data[2 * 3] = {1, 2, 3, 4, 5, 6};
    int64_t ne_a[2] = {3, 2};
    gguf_w_tensor(w, "a", SD_F32, 2, ne_a, data);
    int64_t ne_b[2] = {64, 3}; /* q8_0: 2 blocks per row */
    gguf_w_tensor_fn(w, "b", SD_Q8_0, 2, ne_b, fill_ramp, (void *)5);
    int64_t ne_c[1] = {5};
    gguf_w_tensor_fn(w, "c", SD_F16, 1, ne_c, fill_ramp, (void *)1);
    sd_err err = {{0}};
    CHECKF(gguf_writer_save(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
}

static void test_roundtrip(void) {
    uint32_t aligns[] = {32, 64, 8};
    for (int ai = 0; ai < 3; ai++) {
        const char *path = tmp_path("all.gguf");
        write_all_types(path, aligns[ai]);
        gguf_file *f;
        sd_err err = {{0}};
        REQUIRE(gguf_open(path, &f, &err) == 0);
        CHECK_EQ_INT(f->version, 3);
        CHECK_EQ_INT(f->alignment, aligns[ai]);
        CHECK_EQ_INT(gguf_find(f, "t.u8")->v.u, 200);
        CHECK_EQ_INT(gguf_find(f, "t.i8")->v.i, -100);
        CHECK_EQ_INT(gguf_find(f, "t.u16")->v.u, 60000);
        CHECK_EQ_INT(gguf_find(f, "t.i16")->v.i, -30000);
        CHECK_EQ_INT(gguf_find(f, "t.u32")->v.u, 4000000000u);
        CHECK_EQ_INT(gguf_find(f, "t.i32")->v.i, -2000000000);
        CHECK_EQ_INT(gguf_find(f, "t.u64")->v.u, 1ull << 40);
        CHECK_EQ_INT(gguf_find(f, "t.i64")->v.i, -(1ll << 40));
        CHECK_NEAR(gguf_find(f, "t.f64")->v.f, 3.25, 0);
        uint32_t u;
        float fl;
        bool bl = false;
        char *s = NULL;
        CHECK(gguf_get_u32(f, "t.u8", &u, &err) == 0 && u == 200);
        CHECK(gguf_get_u32(f, "t.i8", &u, &err) == -1);   /* negative */
        CHECK(gguf_get_u32(f, "t.u64", &u, &err) == -1);  /* does not fit */
        CHECK(gguf_get_f32(f, "t.f32", &fl, &err) == 0 && fl == 0.5f);
        CHECK(gguf_get_bool(f, "t.bool", &bl, &err) == 0 && bl);
        CHECK(gguf_get_str(f, "t.str", &s, &err) == 0);
        CHECK_STR_EQ(s, "hello ▁world");
        free(s);
        CHECK(gguf_get_str(f, "t.u8", &s, &err) == -1);
        const gguf_kv *a = gguf_find(f, "t.astr");
        REQUIRE(a && a->arr_type == GGUF_T_STRING && a->arr_n == 3);
        CHECK(a->arr_strs[1].len == 0);
        CHECK(a->arr_strs[2].len == 6 && !memcmp(a->arr_strs[2].ptr, "<0x0A>", 6));
        int64_t iv;
        CHECK(gguf_arr_f32(gguf_find(f, "t.af32"), 1, &fl) == 0 && fl == -2.0f);
        CHECK(gguf_arr_i64(gguf_find(f, "t.ai32"), 0, &iv) == 0 && iv == -1);
        CHECK(gguf_arr_i64(gguf_find(f, "t.ai32"), 3, &iv) == -1);
        CHECK(gguf_arr_i64(gguf_find(f, "t.au16"), 1, &iv) == 0 && iv == 65535);
        CHECK(gguf_arr_f32(gguf_find(f, "t.af64"), 0, &fl) == 0 && fl == 0.25f);
        const gguf_kv *nest = gguf_find(f, "t.nested");
        REQUIRE(nest);
        CHECK(nest->arr_type == GGUF_T_ARRAY && nest->arr_n == 2);
        CHECK(gguf_arr_i64(nest, 0, &iv) == -1);
        const gguf_tensor_info *ta = gguf_find_tensor(f, "a"), *tb = gguf_find_tensor(f, "b"),
                               *tc = gguf_find_tensor(f, "c");
        REQUIRE(ta && tb && tc);
        CHECK(ta->n_dims == 2 && ta->ne[0] == 3 && ta->ne[1] == 2 && ta->ne[2] == 1 && ta->type == SD_F32);
        CHECK(!memcmp(ta->data, (float[]){1, 2, 3, 4, 5, 6}, 24));
        CHECK_EQ_INT(tb->nbytes, 3 * 2 * 34);
        CHECK_EQ_INT(tc->nbytes, 10);
        uint8_t expect[204];
        fill_ramp((void *)5, expect, 0, sizeof expect);
        CHECK(!memcmp(tb->data, expect, sizeof expect));
        fill_ramp((void *)1, expect, 0, 10);
        CHECK(!memcmp(tc->data, expect, 10));
        check_tensors_sane(f);
        /* copying every kv verbatim through gguf_w_raw gives a file with identical metadata */
        gguf_writer *w = gguf_writer_new(32);
        for (uint64_t i = 0; i < f->n_kv; i++)
            if (strcmp(f->kv[i].key, "general.alignment"))
                gguf_w_raw(w, f->kv[i].key, f->kv[i].type, f->kv[i].raw, f->kv[i].raw_len);
        CHECK(gguf_writer_save(w, tmp_path("copy.gguf"), &err) == 0);
        gguf_writer_free(w);
        gguf_file *g;
        CHECKF(gguf_open(tmp_path("copy.gguf"), &g, &err) == 0, "%s", err.msg);
        if (g) {
            for (uint64_t i = 0; i < f->n_kv; i++) {
                const gguf_kv *k2 = gguf_find(g, f->kv[i].key);
                if (!strcmp(f->kv[i].key, "general.alignment")) continue;
                CHECK(k2 && k2->raw_len == f->kv[i].raw_len && !memcmp(k2->raw, f->kv[i].raw, k2->raw_len));
            }
            gguf_close(g);
        }
        gguf_close(f);
    }
}

static void test_writer_rejects(void) {
    sd_err err = {{0}};
    gguf_writer *w = gguf_writer_new(32);
    float x[31] = {0};
    int64_t ne[1] = {31};
    gguf_w_tensor(w, "odd", SD_Q8_0, 1, ne, x); /* 31 is not a multiple of 32 */
    CHECK(gguf_writer_save(w, tmp_path("bad.gguf"), &err) == -1);
    CHECK(strstr(err.msg, "odd") != NULL);
    gguf_writer_free(w);
    w = gguf_writer_new(32);
    int64_t ne1[1] = {4};
    gguf_w_tensor(w, "dup", SD_F32, 1, ne1, x);
    gguf_w_tensor(w, "dup", SD_F32, 1, ne1, x);
    CHECK(gguf_writer_save(w, tmp_path("bad.gguf"), &err) == -1);
    CHECK(strstr(err.msg, "duplicate") != NULL);
    gguf_writer_free(w);
    struct stat st;
    CHECK(stat(tmp_path("bad.gguf"), &st) != 0); /* nothing half-written left behind */
}

/* ---- malformed files ---- */

/* A small valid file: two metadata entries and two tensors. */
static uint8_t *small_valid(size_t *n) {
    gguf_writer *w = gguf_writer_new(32);
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_u32(w, "llama.block_count", 1);
    float d[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t ne[2] = {4, 2};
    gguf_w_tensor(w, "tensA", SD_F32, 2, ne, d);
    gguf_w_tensor(w, "tensB", SD_F32, 2, ne, d);
    sd_err err;
    const char *p = tmp_path("valid.gguf");
    int rc = gguf_writer_save(w, p, &err);
    gguf_writer_free(w);
    return rc ? NULL : (uint8_t *)read_all(p, n);
}

/* Writes bytes to a file and expects gguf_open to fail with the file name and `what` in the message. */
static void expect_fail(const uint8_t *b, size_t n, const char *what, const char *label) {
    const char *p = tmp_path("bad.gguf");
    REQUIRE(write_all(p, b, n) == 0);
    gguf_file *f = NULL;
    sd_err err = {{0}};
    int rc = gguf_open(p, &f, &err);
    CHECKF(rc == -1 && f == NULL, "%s: accepted", label);
    CHECKF(strstr(err.msg, p) != NULL, "%s: message does not name the file: %s", label, err.msg);
    if (what) CHECKF(strstr(err.msg, what) != NULL, "%s: '%s' not in: %s", label, what, err.msg);
    if (getenv("GGUF_TEST_VERBOSE")) fprintf(stderr, "%s -> %s\n", label, err.msg);
    if (rc == 0) gguf_close(f);
}

/* Offset of a tensor info's fields: after its name string. */
static size_t tensor_info_at(const uint8_t *b, size_t n, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 8; i + len <= n; i++)
        if (!memcmp(b + i, name, len) && !memcmp(b + i - 8, &(uint64_t){len}, 8)) return i + len;
    return 0;
}

static void test_truncated(void) {
    size_t n;
    uint8_t *b = small_valid(&n);
    REQUIRE(b);
    const char *p = tmp_path("valid.gguf");
    gguf_file *f;
    sd_err err;
    REQUIRE(gguf_open(p, &f, &err) == 0);
    gguf_close(f);
    for (size_t cut = 0; cut < n; cut++) {
        char label[64];
        snprintf(label, sizeof label, "truncated at %zu of %zu", cut, n);
        expect_fail(b, cut, NULL, label);
    }
    free(b);
}

static void test_corrupt_header(void) {
    size_t n;
    uint8_t *b = small_valid(&n);
    REQUIRE(b);
    uint8_t *c = malloc(n);
    memcpy(c, b, n); c[0] = 'X';
    expect_fail(c, n, "bad magic", "bad magic");
    /* version 2 has the same layout (64-bit counts and lengths): it must load */
    memcpy(c, b, n); memcpy(c + 4, &(uint32_t){2}, 4);
    {
        const char *p = tmp_path("v2.gguf");
        gguf_file *f = NULL;
        sd_err err = {{0}};
        REQUIRE(write_all(p, c, n) == 0);
        CHECKF(gguf_open(p, &f, &err) == 0, "%s", err.msg);
        if (f) {
            CHECK_EQ_INT(f->version, 2);
            CHECK(gguf_find_tensor(f, "tensB") != NULL);
            gguf_close(f);
        }
    }
    memcpy(c, b, n); memcpy(c + 4, &(uint32_t){1}, 4);
    expect_fail(c, n, "version 1", "version 1");
    memcpy(c, b, n); memcpy(c + 4, &(uint32_t){99}, 4);
    expect_fail(c, n, "version 99", "version 99");
    memcpy(c, b, n); memcpy(c + 8, &(uint64_t){1ull << 60}, 8);
    expect_fail(c, n, "tensor count", "absurd tensor count");
    memcpy(c, b, n); memcpy(c + 16, &(uint64_t){UINT64_MAX}, 8);
    expect_fail(c, n, "metadata count", "absurd kv count");
    memcpy(c, b, n); memcpy(c + 24, &(uint64_t){1ull << 62}, 8); /* first key's length */
    expect_fail(c, n, "string length", "huge key length");
    /* the first value is a string: huge length */
    size_t key_len = strlen("general.architecture");
    size_t val_at = 24 + 8 + key_len + 4;
    memcpy(c, b, n); memcpy(c + val_at, &(uint64_t){UINT64_MAX - 3}, 8);
    expect_fail(c, n, "string length", "huge string length");
    memcpy(c, b, n); memcpy(c + val_at - 4, &(uint32_t){13}, 4);
    expect_fail(c, n, "unknown value type 13", "unknown value type");
    memcpy(c, b, n); memcpy(c + val_at - 4, &(uint32_t){GGUF_T_ARRAY}, 4);
    memcpy(c + val_at, &(uint32_t){GGUF_T_UINT64}, 4);
    expect_fail(c, n, NULL, "string read as array");
    expect_fail(c, 0, "empty file", "empty file");
    free(c);
    free(b);
}

static void test_corrupt_tensors(void) {
    size_t n;
    uint8_t *b = small_valid(&n);
    REQUIRE(b);
    size_t at = tensor_info_at(b, n, "tensB"); /* n_dims u32, ne[2] u64, type u32, offset u64 */
    REQUIRE(at);
    uint8_t *c = malloc(n);
    memcpy(c, b, n); memcpy(c + at, &(uint32_t){5}, 4);
    expect_fail(c, n, "5 dimensions", "n_dims 5");
    memcpy(c, b, n); memcpy(c + at, &(uint32_t){0}, 4);
    expect_fail(c, n, "0 dimensions", "n_dims 0");
    memcpy(c, b, n); memcpy(c + at + 4, &(uint64_t){0}, 8);
    expect_fail(c, n, "dimension", "zero dimension");
    memcpy(c, b, n); memcpy(c + at + 12, &(uint64_t){1ull << 62}, 8);
    expect_fail(c, n, "dimension", "absurd dimension");
    memcpy(c, b, n); memcpy(c + at + 20, &(uint32_t){77}, 4);
    expect_fail(c, n, "unknown type 77", "unknown tensor type");
    memcpy(c, b, n); memcpy(c + at + 20, &(uint32_t){SD_Q8_0}, 4);
    expect_fail(c, n, "block size", "row not a multiple of the block");
    memcpy(c, b, n); memcpy(c + at + 24, &(uint64_t){1 << 20}, 8);
    expect_fail(c, n, "outside the data section", "offset out of bounds");
    memcpy(c, b, n); memcpy(c + at + 24, &(uint64_t){UINT64_MAX - 31}, 8);
    expect_fail(c, n, "outside the data section", "offset near UINT64_MAX");
    memcpy(c, b, n); memcpy(c + at + 24, &(uint64_t){33}, 8);
    expect_fail(c, n, "alignment", "misaligned offset");
    memcpy(c, b, n); memcpy(c + at + 12, &(uint64_t){1000}, 8);
    expect_fail(c, n, "outside the data section", "shape larger than the data");
    memcpy(c, b, n); memcpy(c + at - 5, "tensA", 5);
    expect_fail(c, n, "duplicate tensor 'tensA'", "duplicate tensor");
    free(c);
    free(b);
}

static void test_duplicates_and_alignment(void) {
    sd_err err;
    const char *p = tmp_path("dup.gguf");
    gguf_writer *w = gguf_writer_new(32);
    gguf_w_u32(w, "k", 1);
    gguf_w_u32(w, "k", 2);
    REQUIRE(gguf_writer_save(w, p, &err) == 0);
    gguf_writer_free(w);
    size_t n;
    uint8_t *b = (uint8_t *)read_all(p, &n);
    REQUIRE(b);
    expect_fail(b, n, "duplicate key 'k'", "duplicate key");
    free(b);
    w = gguf_writer_new(32);
    gguf_w_u32(w, "general.alignment", 48);
    REQUIRE(gguf_writer_save(w, p, &err) == 0);
    gguf_writer_free(w);
    b = (uint8_t *)read_all(p, &n);
    REQUIRE(b);
    expect_fail(b, n, "power of two", "alignment 48");
    free(b);
    /* general.alignment 1 lets tensor data start at any byte: F32 data at an odd offset is refused (the
     * kernels load it in place), data that happens to be aligned is accepted */
    int refused = 0;
    for (int pad = 0; pad < 4; pad++) {
        w = gguf_writer_new(1);
        char val[4] = "abc";
        val[pad] = 0;
        gguf_w_str(w, "pad", val);
        float x[4] = {1, 2, 3, 4};
        int64_t ne[1] = {4};
        gguf_w_tensor(w, "x", SD_F32, 1, ne, x);
        REQUIRE(gguf_writer_save(w, p, &err) == 0);
        gguf_writer_free(w);
        gguf_file *g = NULL;
        if (gguf_open(p, &g, &err) == 0) {
            CHECK((uintptr_t)gguf_find_tensor(g, "x")->data % 4 == 0);
            gguf_close(g);
        } else {
            CHECKF(strstr(err.msg, "tensor 'x'") && strstr(err.msg, "not aligned to 4 bytes"), "%s", err.msg);
            refused++;
        }
    }
    CHECK_EQ_INT(refused, 3);
    w = gguf_writer_new(32);
    gguf_w_u32(w, "general.alignment", 1u << 30);
    REQUIRE(gguf_writer_save(w, p, &err) == 0);
    gguf_writer_free(w);
    b = (uint8_t *)read_all(p, &n);
    REQUIRE(b);
    expect_fail(b, n, "power of two up to", "alignment 2^30");
    free(b);
    gguf_file *f;
    CHECK(gguf_open(tmp_path("does-not-exist.gguf"), &f, &err) == -1);
    CHECK(strstr(err.msg, "does-not-exist.gguf") != NULL);
    CHECK(gguf_open(g_dir, &f, &err) == -1); /* a directory */
}

/* Random byte flips in a valid file never crash the reader (ASan/UBSan builds check the accesses). */
static void test_fuzz(void) {
    size_t n;
    uint8_t *b = small_valid(&n);
    REQUIRE(b);
    uint8_t *c = malloc(n);
    uint32_t rng = 12345;
    const char *p = tmp_path("fuzz.gguf");
    int rejected = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(c, b, n);
        for (int k = 0; k < 1 + it % 4; k++) {
            rng = rng * 1664525u + 1013904223u;
            size_t pos = (rng >> 8) % n;
            rng = rng * 1664525u + 1013904223u;
            c[pos] = (uint8_t)(rng >> 24);
        }
        REQUIRE(write_all(p, c, n) == 0);
        gguf_file *f;
        sd_err err;
        if (gguf_open(p, &f, &err) == 0) {
            check_tensors_sane(f);
            gguf_close(f);
        } else {
            rejected++;
        }
    }
    CHECK(rejected > 0);
    free(c);
    free(b);
}

int main(void) {
    if (make_tmpdir("specd_test_gguf_")) return 1;
    RUN(test_dtype);
    RUN(test_real_model);
    RUN(test_real_draft_and_vocabs);
    RUN(test_rewrite_identical);
    RUN(test_roundtrip);
    RUN(test_writer_rejects);
    RUN(test_truncated);
    RUN(test_corrupt_header);
    RUN(test_corrupt_tensors);
    RUN(test_duplicates_and_alignment);
    RUN(test_fuzz);
    remove_tmpdir();
    return TEST_DONE();
}
