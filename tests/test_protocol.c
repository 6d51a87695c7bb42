/* Protocol v1: request/reply round trips and every validation error (ipc/protocol.c, ipc/transport.c). */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/json_out.h"
#include "ipc/protocol.h"
#include "ipc/transport.h"
#include "tests/test.h"

/* Builds a request map from (key, packer-callback) pairs: each test packs exactly what it wants. */
typedef struct mb { msgpack_sbuffer sb; msgpack_packer pk; } mb;
static void mb_init(mb *b, int n_fields) {
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&b->pk, (size_t)n_fields);
}
static void mb_key(mb *b, const char *k) { sd_pack_cstr(&b->pk, k); }
static void mb_head(mb *b, int n_extra, const char *op) {
    mb_init(b, 3 + n_extra);
    sd_pack_kv_uint(&b->pk, "v", 1);
    sd_pack_kv_uint(&b->pk, "id", 42);
    sd_pack_kv_str(&b->pk, "op", op);
}

/* Decodes b and expects failure with code and field; checks the message names the field. */
static int expect_err(mb *b, const char *code, const char *field) {
    sd_request r;
    sd_proto_err e;
    int rc = sd_request_decode(b->sb.data, b->sb.size, &r, &e);
    msgpack_sbuffer_destroy(&b->sb);
    CHECKF(rc == -1, "expected %s on %s, decode succeeded", code, field);
    if (rc == 0) { sd_request_free(&r); return 0; }
    CHECKF(!strcmp(e.code, code), "code %s, expected %s (%s)", e.code, code, e.message);
    CHECKF(!strcmp(e.field, field), "field '%s', expected '%s' (%s)", e.field, field, e.message);
    if (*field) CHECKF(strstr(e.message, field) != NULL, "message does not name %s: %s", field, e.message);
    return !strcmp(e.code, code) && !strcmp(e.field, field);
}

static void test_generate_roundtrip(void) {
    sd_request r;
    sd_request_init(&r, SD_OP_GENERATE, 123456789012345ull);
    r.gen.prompt = strdup("héllo wörld");
    r.gen.prompt_len = strlen(r.gen.prompt);
    r.gen.set = SD_GF_MAX_TOKENS | SD_GF_TEMPERATURE | SD_GF_TOP_K | SD_GF_TOP_P | SD_GF_MIN_P | SD_GF_SEED |
                SD_GF_STOP | SD_GF_MODE | SD_GF_DRAFT_MAX | SD_GF_STREAM | SD_GF_ADD_BOS;
    r.gen.max_tokens = 77; r.gen.temperature = 0.5f; r.gen.top_k = 40; r.gen.top_p = 0.9f; r.gen.min_p = 0.05f;
    r.gen.seed = 0xfedcba9876543210ull; r.gen.mode = SD_PMODE_PLAIN; r.gen.draft_max = 12; r.gen.stream = true;
    r.gen.add_bos = false;
    r.gen.n_stop = 2;
    r.gen.stop = calloc(2, sizeof(char *));
    r.gen.stop[0] = strdup("\n\n");
    r.gen.stop[1] = strdup("END");
    char *buf; size_t len; sd_err err;
    REQUIRE(sd_request_encode(&r, &buf, &len, &err) == 0);
    sd_request d; sd_proto_err e;
    REQUIRE(sd_request_decode(buf, len, &d, &e) == 0);
    CHECK(d.op == SD_OP_GENERATE);
    CHECK(d.id == 123456789012345ull);
    CHECK_STR_EQ(d.gen.prompt, "héllo wörld");
    CHECK_EQ_INT(d.gen.prompt_len, strlen("héllo wörld"));
    CHECK_EQ_INT(d.gen.set, r.gen.set);
    CHECK_EQ_INT(d.gen.max_tokens, 77);
    CHECK_NEAR(d.gen.temperature, 0.5, 1e-6);
    CHECK_EQ_INT(d.gen.top_k, 40);
    CHECK_NEAR(d.gen.top_p, 0.9, 1e-6);
    CHECK_NEAR(d.gen.min_p, 0.05, 1e-6);
    CHECK(d.gen.seed == 0xfedcba9876543210ull);
    CHECK(d.gen.mode == SD_PMODE_PLAIN);
    CHECK_EQ_INT(d.gen.draft_max, 12);
    CHECK(d.gen.stream && !d.gen.add_bos);
    REQUIRE(d.gen.n_stop == 2);
    CHECK_STR_EQ(d.gen.stop[0], "\n\n");
    CHECK_STR_EQ(d.gen.stop[1], "END");
    sd_request_free(&d);
    free(buf);
    sd_request_free(&r);

    /* tokens instead of prompt, no optional fields: defaults */
    sd_request_init(&r, SD_OP_GENERATE, 0);
    int32_t ids[] = {1, 2, 3, 2147483647};
    r.gen.tokens = malloc(sizeof ids); memcpy(r.gen.tokens, ids, sizeof ids); r.gen.n_tokens = 4;
    REQUIRE(sd_request_encode(&r, &buf, &len, &err) == 0);
    REQUIRE(sd_request_decode(buf, len, &d, &e) == 0);
    CHECK(d.gen.prompt == NULL && d.gen.n_tokens == 4 && d.gen.tokens[3] == 2147483647);
    CHECK_EQ_INT(d.gen.set, 0);
    CHECK(d.gen.add_bos && !d.gen.stream && d.gen.mode == SD_PMODE_SPEC);
    sd_request_free(&d); free(buf); sd_request_free(&r);
}

static void test_other_ops_roundtrip(void) {
    char *buf; size_t len; sd_err err; sd_request r, d; sd_proto_err e;
    sd_request_init(&r, SD_OP_TOKENIZE, 5);
    r.text = strdup(""); r.text_len = 0; r.add_bos = false;
    REQUIRE(sd_request_encode(&r, &buf, &len, &err) == 0);
    REQUIRE(sd_request_decode(buf, len, &d, &e) == 0);
    CHECK(d.op == SD_OP_TOKENIZE && d.text && d.text_len == 0 && !d.add_bos && d.id == 5);
    sd_request_free(&d); free(buf); sd_request_free(&r);

    sd_request_init(&r, SD_OP_DETOKENIZE, 6);
    r.tokens = calloc(3, sizeof(int32_t)); r.tokens[1] = 9; r.n_tokens = 3;
    REQUIRE(sd_request_encode(&r, &buf, &len, &err) == 0);
    REQUIRE(sd_request_decode(buf, len, &d, &e) == 0);
    CHECK(d.op == SD_OP_DETOKENIZE && d.n_tokens == 3 && d.tokens[1] == 9);
    sd_request_free(&d); free(buf); sd_request_free(&r);

    sd_request_init(&r, SD_OP_CANCEL, 7); r.target = UINT64_MAX;
    REQUIRE(sd_request_encode(&r, &buf, &len, &err) == 0);
    REQUIRE(sd_request_decode(buf, len, &d, &e) == 0);
    CHECK(d.op == SD_OP_CANCEL && d.target == UINT64_MAX);
    sd_request_free(&d); free(buf);

    sd_op simple[] = {SD_OP_INFO, SD_OP_STATS, SD_OP_PING};
    for (int i = 0; i < 3; i++) {
        sd_request_init(&r, simple[i], 100 + i);
        REQUIRE(sd_request_encode(&r, &buf, &len, &err) == 0);
        REQUIRE(sd_request_decode(buf, len, &d, &e) == 0);
        CHECK(d.op == simple[i] && d.id == (uint64_t)(100 + i));
        sd_request_free(&d); free(buf);
    }
    /* encode refuses an invalid request */
    sd_request_init(&r, SD_OP_GENERATE, 1);
    CHECK(sd_request_encode(&r, &buf, &len, &err) == -1);
    CHECK(strstr(err.msg, "prompt") != NULL);
    r.gen.prompt = strdup("x"); r.gen.prompt_len = 1; r.gen.set = SD_GF_TOP_P; r.gen.top_p = 1.5f;
    CHECK(sd_request_encode(&r, &buf, &len, &err) == -1);
    CHECK(strstr(err.msg, "top_p") != NULL);
    sd_request_free(&r);
}

static void test_bad_messages(void) {
    sd_request r; sd_proto_err e;
    const char garbage[] = "\xc1\xc1\xc1";
    CHECK(sd_request_decode(garbage, 3, &r, &e) == -1 && !strcmp(e.code, SD_E_BAD_MESSAGE) && !e.has_id);
    CHECK(sd_request_decode("", 0, &r, &e) == -1 && !strcmp(e.code, SD_E_BAD_MESSAGE));
    const char trunc[] = "\x83\xa1v\x01";  /* map of 3, only one pair */
    CHECK(sd_request_decode(trunc, 4, &r, &e) == -1 && !strcmp(e.code, SD_E_BAD_MESSAGE));
    CHECK(strstr(e.message, "truncated") != NULL);
    const char arr[] = "\x92\x01\x02";
    CHECK(sd_request_decode(arr, 3, &r, &e) == -1 && !strcmp(e.code, SD_E_BAD_MESSAGE));
    CHECK(strstr(e.message, "map") != NULL);
    /* trailing bytes after a valid ping */
    mb b; mb_head(&b, 0, "ping");
    msgpack_pack_nil(&b.pk);
    CHECK(sd_request_decode(b.sb.data, b.sb.size, &r, &e) == -1 && !strcmp(e.code, SD_E_BAD_MESSAGE));
    CHECK(strstr(e.message, "trailing") != NULL);
    msgpack_sbuffer_destroy(&b.sb);
    /* non-string key */
    mb_init(&b, 1); msgpack_pack_int(&b.pk, 1); msgpack_pack_int(&b.pk, 2);
    expect_err(&b, SD_E_BAD_TYPE, "");
}

static void test_header_errors(void) {
    mb b;
    /* missing id */
    mb_init(&b, 2); sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_str(&b.pk, "op", "ping");
    expect_err(&b, SD_E_MISSING_FIELD, "id");
    /* id wrong type / negative */
    mb_init(&b, 3); sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_str(&b.pk, "id", "x"); sd_pack_kv_str(&b.pk, "op", "ping");
    expect_err(&b, SD_E_BAD_TYPE, "id");
    mb_init(&b, 3); sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_int(&b.pk, "id", -1); sd_pack_kv_str(&b.pk, "op", "ping");
    expect_err(&b, SD_E_OUT_OF_RANGE, "id");
    /* version: missing, 2, string — the id is still echoed */
    mb_init(&b, 2); sd_pack_kv_uint(&b.pk, "id", 9); sd_pack_kv_str(&b.pk, "op", "ping");
    {
        sd_request r; sd_proto_err e;
        CHECK(sd_request_decode(b.sb.data, b.sb.size, &r, &e) == -1);
        CHECK(!strcmp(e.code, SD_E_BAD_VERSION) && e.has_id && e.id == 9);
        msgpack_sbuffer_destroy(&b.sb);
    }
    mb_init(&b, 3); sd_pack_kv_uint(&b.pk, "v", 2); sd_pack_kv_uint(&b.pk, "id", 1); sd_pack_kv_str(&b.pk, "op", "ping");
    expect_err(&b, SD_E_BAD_VERSION, "v");
    mb_init(&b, 3); sd_pack_kv_str(&b.pk, "v", "1"); sd_pack_kv_uint(&b.pk, "id", 1); sd_pack_kv_str(&b.pk, "op", "ping");
    expect_err(&b, SD_E_BAD_VERSION, "v");
    /* op: missing, wrong type, unknown */
    mb_init(&b, 2); sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_uint(&b.pk, "id", 1);
    expect_err(&b, SD_E_MISSING_FIELD, "op");
    mb_init(&b, 3); sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_uint(&b.pk, "id", 1); sd_pack_kv_int(&b.pk, "op", 3);
    expect_err(&b, SD_E_BAD_TYPE, "op");
    mb_head(&b, 0, "explode");
    expect_err(&b, SD_E_UNKNOWN_OP, "op");
    /* duplicate key, unknown field */
    mb_init(&b, 4); sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_uint(&b.pk, "id", 1); sd_pack_kv_str(&b.pk, "op", "ping");
    sd_pack_kv_uint(&b.pk, "id", 2);
    expect_err(&b, SD_E_DUPLICATE_FIELD, "id");
    mb_head(&b, 1, "ping"); sd_pack_kv_int(&b.pk, "max_tokens", 3);
    expect_err(&b, SD_E_UNKNOWN_FIELD, "max_tokens");
    mb_head(&b, 2, "generate"); sd_pack_kv_str(&b.pk, "prompt", "x"); sd_pack_kv_int(&b.pk, "max_token", 3);
    expect_err(&b, SD_E_UNKNOWN_FIELD, "max_token");
}

/* One generate with prompt "x" plus one extra field packed by the caller. */
#define GEN1(b, key) do { mb_head(&(b), 2, "generate"); sd_pack_kv_str(&(b).pk, "prompt", "x"); mb_key(&(b), key); } while (0)

static void test_generate_errors(void) {
    mb b;
    mb_head(&b, 0, "generate"); expect_err(&b, SD_E_MISSING_FIELD, "prompt");
    mb_head(&b, 2, "generate"); sd_pack_kv_str(&b.pk, "prompt", "x"); mb_key(&b, "tokens");
    msgpack_pack_array(&b.pk, 1); msgpack_pack_int(&b.pk, 1);
    expect_err(&b, SD_E_BAD_TYPE, "prompt");
    mb_head(&b, 1, "generate"); sd_pack_kv_int(&b.pk, "prompt", 5); expect_err(&b, SD_E_BAD_TYPE, "prompt");
    mb_head(&b, 1, "generate"); mb_key(&b, "prompt"); msgpack_pack_str(&b.pk, 3); msgpack_pack_str_body(&b.pk, "a\xff" "b", 3);
    expect_err(&b, SD_E_BAD_UTF8, "prompt");
    mb_head(&b, 1, "generate"); mb_key(&b, "prompt"); msgpack_pack_str(&b.pk, 3); msgpack_pack_str_body(&b.pk, "\xed\xa0\x80", 3);
    expect_err(&b, SD_E_BAD_UTF8, "prompt"); /* a UTF-16 surrogate */
    mb_head(&b, 1, "generate"); mb_key(&b, "prompt"); msgpack_pack_str(&b.pk, 2); msgpack_pack_str_body(&b.pk, "\xc0\x80", 2);
    expect_err(&b, SD_E_BAD_UTF8, "prompt"); /* overlong NUL */
    {   /* prompt over the byte limit */
        size_t n = SD_PROTO_MAX_TEXT_BYTES + 1;
        char *big = malloc(n); memset(big, 'a', n);
        mb_head(&b, 1, "generate"); mb_key(&b, "prompt"); msgpack_pack_str(&b.pk, n); msgpack_pack_str_body(&b.pk, big, n);
        expect_err(&b, SD_E_OUT_OF_RANGE, "prompt");
        free(big);
    }
    mb_head(&b, 1, "generate"); sd_pack_kv_str(&b.pk, "tokens", "1 2"); expect_err(&b, SD_E_BAD_TYPE, "tokens");
    mb_head(&b, 1, "generate"); mb_key(&b, "tokens"); msgpack_pack_array(&b.pk, 0); expect_err(&b, SD_E_OUT_OF_RANGE, "tokens");
    mb_head(&b, 1, "generate"); mb_key(&b, "tokens"); msgpack_pack_array(&b.pk, 2); msgpack_pack_int(&b.pk, 1); msgpack_pack_int(&b.pk, -4);
    expect_err(&b, SD_E_OUT_OF_RANGE, "tokens[1]");
    mb_head(&b, 1, "generate"); mb_key(&b, "tokens"); msgpack_pack_array(&b.pk, 1); msgpack_pack_double(&b.pk, 1.0);
    expect_err(&b, SD_E_BAD_TYPE, "tokens[0]");
    mb_head(&b, 1, "generate"); mb_key(&b, "tokens"); msgpack_pack_array(&b.pk, 1); msgpack_pack_int64(&b.pk, 1ll << 33);
    expect_err(&b, SD_E_OUT_OF_RANGE, "tokens[0]");
    {
        int n = SD_PROTO_MAX_INPUT_TOKENS + 1;
        mb_head(&b, 1, "generate"); mb_key(&b, "tokens"); msgpack_pack_array(&b.pk, (size_t)n);
        for (int i = 0; i < n; i++) msgpack_pack_int(&b.pk, 1);
        expect_err(&b, SD_E_OUT_OF_RANGE, "tokens");
    }
    GEN1(b, "max_tokens"); msgpack_pack_int(&b.pk, 0); expect_err(&b, SD_E_OUT_OF_RANGE, "max_tokens");
    GEN1(b, "max_tokens"); msgpack_pack_int(&b.pk, SD_PROTO_MAX_GEN_TOKENS + 1); expect_err(&b, SD_E_OUT_OF_RANGE, "max_tokens");
    GEN1(b, "max_tokens"); msgpack_pack_double(&b.pk, 5.0); expect_err(&b, SD_E_BAD_TYPE, "max_tokens");
    GEN1(b, "max_tokens"); msgpack_pack_uint64(&b.pk, UINT64_MAX); expect_err(&b, SD_E_OUT_OF_RANGE, "max_tokens");
    GEN1(b, "temperature"); msgpack_pack_double(&b.pk, -0.1); expect_err(&b, SD_E_OUT_OF_RANGE, "temperature");
    GEN1(b, "temperature"); msgpack_pack_double(&b.pk, NAN); expect_err(&b, SD_E_OUT_OF_RANGE, "temperature");
    GEN1(b, "temperature"); sd_pack_cstr(&b.pk, "hot"); expect_err(&b, SD_E_BAD_TYPE, "temperature");
    GEN1(b, "top_k"); msgpack_pack_int(&b.pk, -1); expect_err(&b, SD_E_OUT_OF_RANGE, "top_k");
    GEN1(b, "top_p"); msgpack_pack_double(&b.pk, 0.0); expect_err(&b, SD_E_OUT_OF_RANGE, "top_p");
    GEN1(b, "top_p"); msgpack_pack_double(&b.pk, 1.5); expect_err(&b, SD_E_OUT_OF_RANGE, "top_p");
    GEN1(b, "min_p"); msgpack_pack_double(&b.pk, 2); expect_err(&b, SD_E_OUT_OF_RANGE, "min_p");
    GEN1(b, "seed"); msgpack_pack_int(&b.pk, -3); expect_err(&b, SD_E_OUT_OF_RANGE, "seed");
    GEN1(b, "seed"); msgpack_pack_true(&b.pk); expect_err(&b, SD_E_BAD_TYPE, "seed");
    GEN1(b, "mode"); sd_pack_cstr(&b.pk, "fast"); expect_err(&b, SD_E_OUT_OF_RANGE, "mode");
    GEN1(b, "mode"); msgpack_pack_int(&b.pk, 1); expect_err(&b, SD_E_BAD_TYPE, "mode");
    GEN1(b, "draft_max"); msgpack_pack_int(&b.pk, 0); expect_err(&b, SD_E_OUT_OF_RANGE, "draft_max");
    GEN1(b, "draft_max"); msgpack_pack_int(&b.pk, SD_PROTO_MAX_DRAFT + 1); expect_err(&b, SD_E_OUT_OF_RANGE, "draft_max");
    GEN1(b, "stream"); msgpack_pack_int(&b.pk, 1); expect_err(&b, SD_E_BAD_TYPE, "stream");
    GEN1(b, "stream"); msgpack_pack_nil(&b.pk); expect_err(&b, SD_E_BAD_TYPE, "stream");
    GEN1(b, "add_bos"); sd_pack_cstr(&b.pk, "yes"); expect_err(&b, SD_E_BAD_TYPE, "add_bos");
    GEN1(b, "stop"); sd_pack_cstr(&b.pk, "\n"); expect_err(&b, SD_E_BAD_TYPE, "stop");
    GEN1(b, "stop"); msgpack_pack_array(&b.pk, SD_PROTO_MAX_STOP + 1);
    for (int i = 0; i <= SD_PROTO_MAX_STOP; i++) sd_pack_cstr(&b.pk, "s");
    expect_err(&b, SD_E_OUT_OF_RANGE, "stop");
    GEN1(b, "stop"); msgpack_pack_array(&b.pk, 2); sd_pack_cstr(&b.pk, "ok"); sd_pack_cstr(&b.pk, "");
    expect_err(&b, SD_E_OUT_OF_RANGE, "stop[1]");
    GEN1(b, "stop"); msgpack_pack_array(&b.pk, 1); msgpack_pack_str(&b.pk, 1); msgpack_pack_str_body(&b.pk, "\x80", 1);
    expect_err(&b, SD_E_BAD_UTF8, "stop[0]");
    GEN1(b, "stop"); msgpack_pack_array(&b.pk, 1); msgpack_pack_int(&b.pk, 1);
    expect_err(&b, SD_E_BAD_TYPE, "stop[0]");
    {
        char s[SD_PROTO_MAX_STOP_BYTES + 2]; memset(s, 'a', sizeof s - 1); s[sizeof s - 1] = 0;
        GEN1(b, "stop"); msgpack_pack_array(&b.pk, 1); sd_pack_cstr(&b.pk, s);
        expect_err(&b, SD_E_OUT_OF_RANGE, "stop[0]");
    }
    /* add_bos with tokens makes no sense */
    mb_head(&b, 2, "generate"); mb_key(&b, "tokens"); msgpack_pack_array(&b.pk, 1); msgpack_pack_int(&b.pk, 1);
    sd_pack_kv_bool(&b.pk, "add_bos", true);
    expect_err(&b, SD_E_BAD_TYPE, "add_bos");
}

static void test_other_op_errors(void) {
    mb b;
    mb_head(&b, 0, "tokenize"); expect_err(&b, SD_E_MISSING_FIELD, "text");
    mb_head(&b, 1, "tokenize"); sd_pack_kv_int(&b.pk, "text", 1); expect_err(&b, SD_E_BAD_TYPE, "text");
    mb_head(&b, 1, "tokenize"); mb_key(&b, "text"); msgpack_pack_str(&b.pk, 1); msgpack_pack_str_body(&b.pk, "\xfe", 1);
    expect_err(&b, SD_E_BAD_UTF8, "text");
    mb_head(&b, 0, "detokenize"); expect_err(&b, SD_E_MISSING_FIELD, "tokens");
    mb_head(&b, 1, "detokenize"); mb_key(&b, "tokens"); msgpack_pack_array(&b.pk, 1); sd_pack_cstr(&b.pk, "a");
    expect_err(&b, SD_E_BAD_TYPE, "tokens[0]");
    mb_head(&b, 0, "cancel"); expect_err(&b, SD_E_MISSING_FIELD, "target");
    mb_head(&b, 1, "cancel"); sd_pack_kv_str(&b.pk, "target", "7"); expect_err(&b, SD_E_BAD_TYPE, "target");
    mb_head(&b, 1, "info"); sd_pack_kv_int(&b.pk, "verbose", 1); expect_err(&b, SD_E_UNKNOWN_FIELD, "verbose");
}

static void test_replies_roundtrip(void) {
    msgpack_sbuffer sb; msgpack_sbuffer_init(&sb);
    sd_reply r; sd_err err;
    int32_t ids[] = {5, 6};
    sd_enc_token(&sb, 3, "hé", 3, ids, 2);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.type == SD_REPLY_TOKEN && r.id == 3 && r.text_len == 3 && !memcmp(r.text, "hé", 3));
    CHECK(r.n_tokens == 2 && r.tokens[1] == 6);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);

    sd_done_stats st = {.prompt_tokens = 10, .prefilled = 4, .reused = 6, .preempted = 2, .generated = 2, .drafted = 8, .accepted = 6,
                        .target_passes = 3, .draft_k = 5, .queue_ms = 1.5, .ttft_ms = 2.5, .ms_per_token = 0.75,
                        .total_ms = 9, .acceptance = 0.75, .mode = SD_PMODE_PLAIN, .seed = 99};
    sd_enc_done(&sb, 4, "abc", 3, ids, 2, SD_FINISH_STR_LENGTH, &st);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.type == SD_REPLY_DONE && r.id == 4 && !strcmp(r.finish_reason, "length"));
    CHECK(r.stats.prompt_tokens == 10 && r.stats.prefilled == 4 && r.stats.generated == 2 && r.stats.drafted == 8);
    CHECK(r.stats.reused == 6 && r.stats.preempted == 2);
    CHECK(r.stats.accepted == 6 && r.stats.target_passes == 3 && r.stats.draft_k == 5 && r.stats.seed == 99);
    CHECK_NEAR(r.stats.ttft_ms, 2.5, 1e-9); CHECK_NEAR(r.stats.ms_per_token, 0.75, 1e-9);
    CHECK(r.stats.mode == SD_PMODE_PLAIN);
    char *json = sd_mp_to_json(r.root);
    CHECK(json && strstr(json, "\"finish_reason\":\"length\"") && strstr(json, "\"tokens\":[5,6]"));
    free(json);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);

    sd_enc_error(&sb, false, 0, SD_E_BAD_MESSAGE, NULL, "not \"msgpack\"\n");
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.type == SD_REPLY_ERROR && !r.has_id && !strcmp(r.code, "bad_message") && r.field[0] == 0);
    json = sd_mp_to_json(r.root);
    CHECK(json && strstr(json, "\"id\":null") && strstr(json, "not \\\"msgpack\\\"\\n"));
    free(json);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);

    sd_enc_busy(&sb, 8, 100, 4, 2);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.type == SD_REPLY_ERROR && r.id == 8 && !strcmp(r.code, SD_E_BUSY) && r.retry_after_ms == 100);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);

    sd_enc_result_tokens(&sb, 9, ids, 2);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.type == SD_REPLY_RESULT && r.op == SD_OP_TOKENIZE && r.n_tokens == 2);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);
    sd_enc_result_text(&sb, 10, "xy", 2);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.op == SD_OP_DETOKENIZE && r.text_len == 2);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);
    sd_enc_result_cancel(&sb, 11, 3, true);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.op == SD_OP_CANCEL && r.target == 3 && r.found);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);
    sd_enc_result_pong(&sb, 12, 777, NULL);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.op == SD_OP_PING && r.time_us == 777);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);
    sd_enc_heartbeat(&sb);
    REQUIRE(sd_reply_decode(sb.data, sb.size, &r, &err) == 0);
    CHECK(r.type == SD_REPLY_HEARTBEAT && !r.has_id);
    sd_reply_free(&r); msgpack_sbuffer_clear(&sb);
    CHECK(sd_reply_decode("\x01", 1, &r, &err) == -1);
    msgpack_sbuffer_destroy(&sb);
}


/* Decodes raw bytes and expects bad_message (the structure check runs before msgpack-c allocates). */
static void expect_bad_bytes(const void *buf, size_t len, const char *needle) {
    sd_request r; sd_proto_err e;
    CHECK(sd_request_decode(buf, len, &r, &e) == -1);
    CHECKF(!strcmp(e.code, SD_E_BAD_MESSAGE), "code %s (%s)", e.code, e.message);
    CHECKF(strstr(e.message, needle) != NULL, "message lacks '%s': %s", needle, e.message);
}

/* Headers that claim more than the message holds, nesting, empty and duplicate keys, names that are
 * not UTF-8 and floats that vanish as 32-bit floats: each once made the sanitizer build fail. */
static void test_hostile_requests(void) {
    expect_bad_bytes("\xdf\xff\xff\xff\xff", 5, "more elements than bytes");   /* map32 of 2^32-1 */
    expect_bad_bytes("\xdd\xff\xff\xff\xff", 5, "more elements than bytes");   /* array32 */
    expect_bad_bytes("\xde\x00\x02\x00", 4, "more elements than bytes");       /* map16 of 2, 1 byte */
    expect_bad_bytes("\xdb\xff\xff\xff\xf0" "ab", 7, "past the end");          /* str32 */
    char deep[64];
    memset(deep, 0x91, sizeof deep); /* 63 nested one-element arrays, then nil */
    deep[63] = (char)0xc0;
    expect_bad_bytes(deep, sizeof deep, "nested too deeply");
    /* a tokens array32 header claiming 2^32-1 ids inside an otherwise fine request */
    mb b; mb_head(&b, 1, "detokenize");
    mb_key(&b, "tokens");
    msgpack_sbuffer_write(&b.sb, "\xdd\xff\xff\xff\xff\x01", 6);
    expect_bad_bytes(b.sb.data, b.sb.size, "more elements than bytes");
    msgpack_sbuffer_destroy(&b.sb);

    /* two empty keys: a duplicate, not a crash (msgpack-c gives empty strings a NULL pointer) */
    mb_init(&b, 2);
    mb_key(&b, ""); msgpack_pack_nil(&b.pk);
    mb_key(&b, ""); msgpack_pack_nil(&b.pk);
    expect_err(&b, SD_E_DUPLICATE_FIELD, "");
    mb_head(&b, 1, "ping");
    mb_key(&b, ""); msgpack_pack_nil(&b.pk);
    expect_err(&b, SD_E_UNKNOWN_FIELD, "");

    /* echoed names are valid UTF-8: invalid bytes are replaced, long names cut on a character boundary */
    sd_request r; sd_proto_err e;
    const char *bad_names[] = {"\xff\xfe", "\xc3", NULL};
    char longname[200] = "";
    for (int i = 0; i < 40; i++) strcat(longname, "é"); /* 80 bytes of 2-byte characters, cut inside one */
    strcat(longname, "x");
    bad_names[2] = longname + 1;                        /* starts mid-character: not UTF-8 at all */
    for (int k = 0; k < 4; k++) {
        const char *name = k < 3 ? bad_names[k] : longname;
        mb_init(&b, 3);
        sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_uint(&b.pk, "id", 7);
        if (k % 2) { mb_key(&b, "op"); sd_pack_cstr(&b.pk, name); }          /* unknown op */
        else { sd_pack_kv_str(&b.pk, "op", "ping"); mb_key(&b, name); msgpack_pack_nil(&b.pk); }
        CHECK(sd_request_decode(b.sb.data, b.sb.size, &r, &e) == -1);
        CHECKF(sd_utf8_valid(e.message, strlen(e.message)) && sd_utf8_valid(e.field, strlen(e.field)),
               "name %d: reply strings not UTF-8: %s", k, e.message);
        msgpack_sbuffer_destroy(&b.sb);
    }
    mb_init(&b, 4); /* duplicate keys that are not UTF-8 */
    sd_pack_kv_uint(&b.pk, "v", 1); sd_pack_kv_uint(&b.pk, "id", 7);
    mb_key(&b, "\xff"); msgpack_pack_nil(&b.pk);
    mb_key(&b, "\xff"); msgpack_pack_nil(&b.pk);
    CHECK(sd_request_decode(b.sb.data, b.sb.size, &r, &e) == -1 && !strcmp(e.code, SD_E_DUPLICATE_FIELD));
    CHECK(sd_utf8_valid(e.field, strlen(e.field)) && sd_utf8_valid(e.message, strlen(e.message)));
    msgpack_sbuffer_destroy(&b.sb);

    /* top_p must be above 0 as the float the sampler uses; 1e-300 is 0 as a float */
    mb_head(&b, 2, "generate");
    sd_pack_kv_str(&b.pk, "prompt", "x");
    mb_key(&b, "top_p"); msgpack_pack_double(&b.pk, 1e-300);
    expect_err(&b, SD_E_OUT_OF_RANGE, "top_p");
    mb_head(&b, 2, "generate");
    sd_pack_kv_str(&b.pk, "prompt", "x");
    mb_key(&b, "temperature"); msgpack_pack_double(&b.pk, 1e300);
    expect_err(&b, SD_E_OUT_OF_RANGE, "temperature");
    /* an empty prompt decodes (its bytes may be a NULL pointer) */
    mb_head(&b, 1, "generate");
    sd_pack_kv_str(&b.pk, "prompt", "");
    REQUIRE(sd_request_decode(b.sb.data, b.sb.size, &r, &e) == 0);
    CHECK(r.gen.prompt && r.gen.prompt_len == 0 && r.gen.prompt[0] == 0);
    sd_request_free(&r);
    msgpack_sbuffer_destroy(&b.sb);
}

/* A broken or hostile daemon: counters beyond int, NaN, and headers claiming more than the message. */
static void test_hostile_replies(void) {
    sd_reply r; sd_err err;
    CHECK(sd_reply_decode("\xdf\xff\xff\xff\xff", 5, &r, &err) == -1 && strstr(err.msg, "more elements"));
    mb b; mb_init(&b, 5);
    sd_pack_kv_uint(&b.pk, "v", 1);
    sd_pack_kv_str(&b.pk, "type", "done");
    sd_pack_kv_uint(&b.pk, "id", 1);
    mb_key(&b, "stats");
    msgpack_pack_map(&b.pk, 4);
    sd_pack_kv_double(&b.pk, "prompt_tokens", 1e300);
    sd_pack_kv_double(&b.pk, "prefilled", -1e300);
    sd_pack_kv_double(&b.pk, "generated", NAN);
    sd_pack_kv_uint(&b.pk, "drafted", UINT64_MAX);
    mb_key(&b, "text"); sd_pack_cstr(&b.pk, "");
    REQUIRE(sd_reply_decode(b.sb.data, b.sb.size, &r, &err) == 0);
    CHECK_EQ_INT(r.stats.prompt_tokens, INT32_MAX);
    CHECK_EQ_INT(r.stats.prefilled, INT32_MIN);
    CHECK_EQ_INT(r.stats.generated, 0);
    CHECK_EQ_INT(r.stats.drafted, INT32_MAX);
    CHECK(r.text && r.text_len == 0);
    sd_reply_free(&r);
    msgpack_sbuffer_destroy(&b.sb);
    mb_init(&b, 4); /* an error with retry_after_ms out of range */
    sd_pack_kv_uint(&b.pk, "v", 1);
    sd_pack_kv_str(&b.pk, "type", "error");
    sd_pack_kv_str(&b.pk, "code", "");
    sd_pack_kv_double(&b.pk, "retry_after_ms", -1e19);
    REQUIRE(sd_reply_decode(b.sb.data, b.sb.size, &r, &err) == 0);
    CHECK_EQ_INT(r.retry_after_ms, INT32_MIN);
    CHECK(r.code[0] == 0);
    sd_reply_free(&r);
    msgpack_sbuffer_destroy(&b.sb);
}

static void test_utf8(void) {
    CHECK(sd_utf8_valid("", 0));
    CHECK(sd_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    CHECK(!sd_utf8_valid("\xc3", 1));              /* truncated */
    CHECK(!sd_utf8_valid("\xe2\x82", 2));
    CHECK(!sd_utf8_valid("\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
    CHECK(!sd_utf8_valid("\xe0\x80\x80", 3));      /* overlong */
    CHECK(!sd_utf8_valid("\x80", 1));
    CHECK(sd_utf8_valid("\xef\xbf\xbd", 3));
}

static void test_endpoints(void) {
    char ep[SD_ENDPOINT_MAX], path[SD_ENDPOINT_MAX]; sd_err err;
    CHECK(sd_endpoint_resolve("/tmp/x.sock", NULL, ep, sizeof ep, path, sizeof path, &err) == 0);
    CHECK_STR_EQ(ep, "ipc:///tmp/x.sock"); CHECK_STR_EQ(path, "/tmp/x.sock");
    CHECK(sd_endpoint_resolve(NULL, "5555", ep, sizeof ep, path, sizeof path, &err) == 0);
    CHECK_STR_EQ(ep, "tcp://127.0.0.1:5555"); CHECK_STR_EQ(path, "");
    CHECK(sd_endpoint_resolve(NULL, ":6000", ep, sizeof ep, path, sizeof path, &err) == 0);
    CHECK_STR_EQ(ep, "tcp://127.0.0.1:6000");
    CHECK(sd_endpoint_resolve(NULL, "0.0.0.0:7000", ep, sizeof ep, path, sizeof path, &err) == 0);
    CHECK_STR_EQ(ep, "tcp://0.0.0.0:7000");
    CHECK(sd_endpoint_resolve(NULL, "host:99999", ep, sizeof ep, path, sizeof path, &err) == -1);
    CHECK(strstr(err.msg, "--tcp") != NULL);
    CHECK(sd_endpoint_resolve("", NULL, ep, sizeof ep, path, sizeof path, &err) == -1);
    char longp[200]; memset(longp, 'a', 150); longp[150] = 0;
    CHECK(sd_endpoint_resolve(longp, NULL, ep, sizeof ep, path, sizeof path, &err) == -1);
    setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
    CHECK(sd_endpoint_resolve(NULL, NULL, ep, sizeof ep, path, sizeof path, &err) == 0);
    CHECK_STR_EQ(ep, "ipc:///run/user/1234/specd.sock");
    unsetenv("XDG_RUNTIME_DIR");
    char want[64]; snprintf(want, sizeof want, "/tmp/specd-%u/specd.sock", (unsigned)getuid());
    sd_default_socket_path(path, sizeof path);
    CHECK_STR_EQ(path, want);
    CHECK_EQ_INT(sd_parse_mode("600"), 0600);
    CHECK_EQ_INT(sd_parse_mode("0660"), 0660);
    CHECK_EQ_INT(sd_parse_mode("999"), -1);
    CHECK_EQ_INT(sd_parse_mode("1777"), -1);
    CHECK_EQ_INT(sd_parse_mode(""), -1);
}

/* The default socket's directory must be this user's alone: created 0700, refused when another user owns
 * it, others can write it, or it is a link or a file (the old default was a name in /tmp anyone could take). */
static void test_private_dir(void) {
    char base[] = "/tmp/specd-test-dir-XXXXXX", d[128], l[128];
    REQUIRE(mkdtemp(base));
    sd_err err;
    snprintf(d, sizeof d, "%s/sock", base);
    CHECK(sd_private_dir(d, false, &err) == -1 && strstr(err.msg, d));
    CHECK(sd_private_dir(d, true, &err) == 0);
    struct stat st;
    CHECK(stat(d, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    CHECK(sd_private_dir(d, true, &err) == 0); /* exists already: fine */
    chmod(d, 0777);
    CHECK(sd_private_dir(d, true, &err) == -1);
    CHECKF(strstr(err.msg, "refusing the socket directory") && strstr(err.msg, "mode 0777"), "%s", err.msg);
    chmod(d, 0700);
    snprintf(l, sizeof l, "%s/link", base);
    REQUIRE(symlink(d, l) == 0);
    CHECK(sd_private_dir(l, true, &err) == -1 && strstr(err.msg, "symbolic link"));
    unlink(l);
    if (getuid() == 0) { /* root can make a directory that belongs to someone else */
        CHECK(chown(d, 65534, 65534) == 0);
        CHECK(sd_private_dir(d, true, &err) == -1);
        CHECKF(strstr(err.msg, "belongs to uid 65534"), "%s", err.msg);
    }
    rmdir(d);
    FILE *f = fopen(d, "w");
    if (f) fclose(f);
    CHECK(sd_private_dir(d, true, &err) == -1 && strstr(err.msg, "not a directory"));
    unlink(d);
    rmdir(base);
}

/* One escaping rule: the msgpack -> JSON conversion and the command-line JSON writer give the same text
 * for every byte, with the short forms JSON has (\b \f included). */
static void test_json_escape_one_rule(void) {
    char all[255];
    for (int i = 0; i < 255; i++) all[i] = (char)(i + 1);
    msgpack_sbuffer sb; msgpack_sbuffer_init(&sb);
    msgpack_packer pk; msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_str(&pk, sizeof all); msgpack_pack_str_body(&pk, all, sizeof all);
    msgpack_unpacked u; msgpack_unpacked_init(&u);
    REQUIRE(msgpack_unpack_next(&u, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    char *from_mp = sd_mp_to_json(&u.data);
    char *from_file = NULL; size_t n = 0;
    FILE *f = open_memstream(&from_file, &n);
    REQUIRE(f);
    sd_json_str(f, all, sizeof all);
    fclose(f);
    CHECK_STR_EQ(from_mp, from_file);
    CHECK(from_file && strstr(from_file, "\\b\\t\\n\\u000b\\f\\r") && strstr(from_file, "\\u007f"));
    free(from_mp); free(from_file);
    msgpack_unpacked_destroy(&u); msgpack_sbuffer_destroy(&sb);
}

/* JSON numbers: the shortest text that reads back as the value (floats at float precision); NaN is
 * null; seeds are strings, since 64-bit integers exceed what JSON numbers carry. */
static void test_json_numbers_and_seeds(void) {
    msgpack_sbuffer sb; msgpack_sbuffer_init(&sb);
    msgpack_packer pk; msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    sd_pack_kv_double(&pk, "a", 0.05);
    sd_pack_cstr(&pk, "b"); msgpack_pack_float(&pk, 0.05f);
    sd_pack_kv_float(&pk, "c", 0.8f);
    sd_pack_kv_double(&pk, "d", NAN);
    sd_pack_kv_uint(&pk, "seed", UINT64_MAX);
    sd_pack_kv_double(&pk, "e", 1.0 / 3);
    msgpack_unpacked u; msgpack_unpacked_init(&u);
    REQUIRE(msgpack_unpack_next(&u, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    char *j = sd_mp_to_json(&u.data);
    CHECK_STR_EQ(j, "{\"a\":0.05,\"b\":0.05,\"c\":0.8,\"d\":null,\"seed\":\"18446744073709551615\","
                    "\"e\":0.3333333333333333}");
    free(j);
    msgpack_unpacked_destroy(&u); msgpack_sbuffer_destroy(&sb);
    char buf[40];
    sd_json_number(buf, sizeof buf, 1e300);
    CHECK(strtod(buf, NULL) == 1e300);
    CHECK(sd_float_decimal(0.1f) == 0.1 && sd_float_decimal(3.0f) == 3.0);
}

int main(void) {
    RUN(test_generate_roundtrip);
    RUN(test_other_ops_roundtrip);
    RUN(test_bad_messages);
    RUN(test_header_errors);
    RUN(test_generate_errors);
    RUN(test_other_op_errors);
    RUN(test_replies_roundtrip);
    RUN(test_hostile_requests);
    RUN(test_hostile_replies);
    RUN(test_utf8);
    RUN(test_json_escape_one_rule);
    RUN(test_json_numbers_and_seeds);
    RUN(test_endpoints);
    RUN(test_private_dir);
    return TEST_DONE();
}
