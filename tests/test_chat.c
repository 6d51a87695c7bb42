/* The `chat` op and special tokens in the protocol: request decoding (ipc/protocol.c), and against a running
 * daemon with the shared aidreams model and a chat template file: chat renders and generates exactly as
 * generate does with the rendered text, info exposes the template and special ids, tokenize/detokenize
 * handle special tokens, errors (no template, a raising template, tools), specd-cli chat. */
#include <jansson.h>

#include "chat/template.h"
#include "ipc/protocol.h"
#include "tests/daemon_fixture.h"
#include "tests/test.h"

/* A template in the usual shape, which raises when the first message is the assistant's. */
static const char k_template[] =
    "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversation must start with the user') }}"
    "{% endif %}{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}";

/* ---- request decoding ---- */

static void pack_head(msgpack_packer *pk, int n_extra, const char *op) {
    msgpack_pack_map(pk, (size_t)(3 + n_extra));
    sd_pack_kv_uint(pk, "v", 1);
    sd_pack_kv_uint(pk, "id", 9);
    sd_pack_kv_str(pk, "op", op);
}

static void pack_msgs(msgpack_packer *pk, int n, const char *extra_key) {
    sd_pack_cstr(pk, "messages");
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(pk, extra_key ? 3 : 2);
        sd_pack_kv_str(pk, "role", i % 2 ? "assistant" : "user");
        sd_pack_kv_str(pk, "content", "hi");
        if (extra_key) sd_pack_kv_str(pk, extra_key, "x");
    }
}

/* Decodes sb; returns the error code ("" when it decoded) and the field in *field. */
static const char *decode(msgpack_sbuffer *sb, sd_request *r, char field[64]) {
    static sd_proto_err e;
    if (sd_request_decode(sb->data, sb->size, r, &e) == 0) {
        field[0] = 0;
        return "";
    }
    snprintf(field, 64, "%s", e.field);
    return e.code;
}

static void test_decode_chat(void) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    sd_request r;
    char field[64];
    pack_head(&pk, 3, "chat");
    pack_msgs(&pk, 3, NULL);
    sd_pack_kv_bool(&pk, "add_generation_prompt", false);
    sd_pack_kv_int(&pk, "max_tokens", 7);
    CHECK_STR_EQ(decode(&sb, &r, field), "");
    CHECK(r.op == SD_OP_CHAT && r.n_messages == 3 && !r.add_generation_prompt && r.gen.max_tokens == 7);
    CHECK(r.n_messages == 3 && !strcmp(r.messages[1].role, "assistant") && !strcmp(r.messages[2].content, "hi"));
    /* the encoder writes what the decoder reads */
    char *buf;
    size_t len;
    sd_err err;
    REQUIRE(sd_request_encode(&r, &buf, &len, &err) == 0);
    sd_request back;
    sd_proto_err pe;
    REQUIRE(sd_request_decode(buf, len, &back, &pe) == 0);
    CHECK(back.n_messages == 3 && !back.add_generation_prompt && back.gen.max_tokens == 7 &&
          !strcmp(back.messages[1].role, "assistant"));
    free(buf);
    sd_request_free(&back);
    sd_request_free(&r);

    static const struct {
        const char *what, *code, *field;
    } bad[] = {
        {"tools", SD_E_UNSUPPORTED, "tools"},
        {"prompt", SD_E_UNKNOWN_FIELD, "prompt"},
        {"extra key", SD_E_UNKNOWN_FIELD, "messages[0].name"},
        {"no messages", SD_E_MISSING_FIELD, "messages"},
        {"empty", SD_E_OUT_OF_RANGE, "messages"},
        {"no content", SD_E_MISSING_FIELD, "messages[0]"},
        {"not a map", SD_E_BAD_TYPE, "messages[0]"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        msgpack_sbuffer_clear(&sb);
        const char *w = bad[k].what;
        if (!strcmp(w, "tools") || !strcmp(w, "prompt")) {
            pack_head(&pk, 2, "chat");
            pack_msgs(&pk, 1, NULL);
            sd_pack_kv_str(&pk, w, "x");
        } else if (!strcmp(w, "extra key")) {
            pack_head(&pk, 1, "chat");
            pack_msgs(&pk, 1, "name");
        } else if (!strcmp(w, "no messages")) {
            pack_head(&pk, 0, "chat");
        } else if (!strcmp(w, "empty")) {
            pack_head(&pk, 1, "chat");
            pack_msgs(&pk, 0, NULL);
        } else if (!strcmp(w, "no content")) {
            pack_head(&pk, 1, "chat");
            sd_pack_cstr(&pk, "messages");
            msgpack_pack_array(&pk, 1);
            msgpack_pack_map(&pk, 1);
            sd_pack_kv_str(&pk, "role", "user");
        } else {
            pack_head(&pk, 1, "chat");
            sd_pack_cstr(&pk, "messages");
            msgpack_pack_array(&pk, 1);
            sd_pack_cstr(&pk, "hello");
        }
        const char *code = decode(&sb, &r, field);
        CHECKF(!strcmp(code, bad[k].code) && !strcmp(field, bad[k].field), "%s: got %s on '%s'", w, code, field);
    }
    /* special on a token-id prompt is refused; on text it decodes */
    msgpack_sbuffer_clear(&sb);
    pack_head(&pk, 2, "generate");
    sd_pack_cstr(&pk, "tokens");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, 1);
    sd_pack_kv_bool(&pk, "special", true);
    CHECK_STR_EQ(decode(&sb, &r, field), SD_E_BAD_TYPE);
    msgpack_sbuffer_clear(&sb);
    pack_head(&pk, 2, "tokenize");
    sd_pack_kv_str(&pk, "text", "<s>");
    sd_pack_kv_bool(&pk, "special", true);
    CHECK_STR_EQ(decode(&sb, &r, field), "");
    CHECK(r.special);
    sd_request_free(&r);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- against a daemon ---- */

static const char *model_path(void) { return shared_path("models/aidreams260K.gguf"); }

/* Starts a daemon, with the test template when tmpl_path is not NULL. */
static int start(fixture_daemon *d, const char *tmpl_path, char *why, size_t n) {
    const char *with[] = {"-m", model_path(), "--chat-template", tmpl_path, NULL};
    const char *without[] = {"-m", model_path(), NULL};
    return fx_daemon_start(d, tmpl_path ? with : without, why, n);
}

/* start() and a connected client; -1 after printing why. */
static int start_connected(fixture_daemon *d, const char *tmpl_path, specd_client **c) {
    char why[512];
    if (start(d, tmpl_path, why, sizeof why)) {
        fprintf(stderr, "  %s\n", why);
        return -1;
    }
    specd_options o = {.endpoint = d->endpoint};
    specd_error e;
    if (specd_connect(&o, c, &e) == 0) return 0;
    fprintf(stderr, "  %s\n", e.message);
    fx_daemon_stop(d);
    return -1;
}

static int write_template(char *path, size_t n) {
    snprintf(path, n, "/tmp/specd-test-tmpl-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    ssize_t w = write(fd, k_template, sizeof k_template - 1);
    close(fd);
    return w == (ssize_t)(sizeof k_template - 1) ? 0 : -1;
}

static void test_daemon_chat(void) {
    if (!model_path()) SKIP("../shared/models/aidreams260K.gguf is not there");
    char tpath[64];
    REQUIRE(write_template(tpath, sizeof tpath) == 0);
    fixture_daemon d;
    specd_client *c = NULL;
    specd_error e;
    if (start_connected(&d, tpath, &c)) unlink(tpath);
    REQUIRE(c);

    /* chat = generate of the rendered text with special tokens parsed and no BOS added */
    specd_chat_msg msgs[] = {{"system", "Be poetic."}, {"user", "Once upon a time"}};
    specd_gen g = specd_gen_default();
    g.messages = msgs;
    g.n_messages = 2;
    g.max_tokens = 16;
    g.temperature = 0;
    specd_result chat, gen;
    REQUIRE(specd_chat(c, &g, NULL, NULL, &chat, &e) == 0);
    specd_gen p = specd_gen_default();
    p.prompt = "<s>system: Be poetic.\nuser: Once upon a time\nassistant:";
    p.special = 1;
    p.add_bos = 0;
    p.max_tokens = 16;
    p.temperature = 0;
    REQUIRE(specd_generate(c, &p, NULL, NULL, &gen, &e) == 0);
    CHECK(chat.n_ids == gen.n_ids && chat.n_ids > 0 && !memcmp(chat.ids, gen.ids, sizeof(int32_t) * (size_t)gen.n_ids));
    CHECK_STR_EQ(chat.text, gen.text);
    CHECK_EQ_INT(chat.stats.prompt_tokens, gen.stats.prompt_tokens);
    specd_result_free(&gen);
    /* without special parsing "<s>" is text: more prompt tokens, and no BOS id among them */
    p.special = 0;
    REQUIRE(specd_generate(c, &p, NULL, NULL, &gen, &e) == 0);
    CHECK(gen.stats.prompt_tokens > chat.stats.prompt_tokens);
    specd_result_free(&gen);
    specd_result_free(&chat);

    /* `done` says what stopped it: the end-of-generation token (greedy "The sun" ends with </s> within 120
     * tokens), or the stop string that matched */
    specd_gen s = specd_gen_default();
    s.prompt = "The sun";
    s.max_tokens = 120;
    s.temperature = 0;
    REQUIRE(specd_generate(c, &s, NULL, NULL, &gen, &e) == 0);
    CHECK(!strcmp(gen.finish_reason, "stop") && gen.stop_token == 2 && !gen.stop_string[0]);
    specd_result_free(&gen);
    s.prompt = "Once upon a time";
    s.max_tokens = 24;
    REQUIRE(specd_generate(c, &s, NULL, NULL, &gen, &e) == 0);
    CHECK(!strcmp(gen.finish_reason, "length") && gen.stop_token == -1 && gen.text_len > 12);
    char word[8] = "";
    if (gen.text_len > 12) memcpy(word, gen.text + 8, 4);
    const char *stops[] = {"\x01never", word};
    s.stop = stops;
    s.n_stop = 2;
    specd_result_free(&gen);
    REQUIRE(specd_generate(c, &s, NULL, NULL, &gen, &e) == 0);
    CHECKF(!strcmp(gen.finish_reason, "stop") && !strcmp(gen.stop_string, word) && gen.stop_token == -1,
           "finish %s stop '%s' (word '%s')", gen.finish_reason, gen.stop_string, word);
    specd_result_free(&gen);

    /* tokenize/detokenize with special tokens */
    int32_t *ids;
    int n;
    REQUIRE(specd_tokenize(c, "<s>hi</s>", SPECD_TOK_SPECIAL, &ids, &n, &e) == 0);
    CHECK(n >= 3 && ids[0] == 1 && ids[n - 1] == 2);
    char *text;
    REQUIRE(specd_detokenize_special(c, ids, n, 1, &text, &e) == 0);
    CHECK(strstr(text, "<s>") == text && strstr(text, "</s>"));
    free(text);
    REQUIRE(specd_detokenize(c, ids, n, &text, &e) == 0);
    CHECK(!strstr(text, "<s>") && !strstr(text, "</s>"));
    free(text);
    free(ids);
    REQUIRE(specd_tokenize(c, "<s>hi</s>", 0, &ids, &n, &e) == 0);
    for (int i = 0; i < n; i++) CHECK(ids[i] != 1 && ids[i] != 2);
    free(ids);

    /* info: the template, the special ids and texts */
    char *info;
    REQUIRE(specd_info(c, &info, &e) == 0);
    json_t *j = json_loads(info, 0, NULL);
    REQUIRE(j);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "chat_template")), k_template);
    json_t *vocab = json_object_get(j, "vocab");
    CHECK_EQ_INT(json_integer_value(json_object_get(vocab, "bos")), 1);
    CHECK_EQ_INT(json_integer_value(json_object_get(vocab, "eot")), -1);
    json_t *eog = json_object_get(vocab, "eog");
    CHECK(json_array_size(eog) == 1 && json_integer_value(json_array_get(eog, 0)) == 2);
    bool has_bos_text = false;
    size_t i;
    json_t *sp;
    json_array_foreach(json_object_get(vocab, "special"), i, sp)
        has_bos_text |= json_integer_value(json_object_get(sp, "id")) == 1 &&
                        !strcmp(json_string_value(json_object_get(sp, "text")), "<s>");
    CHECK(has_bos_text);
    json_decref(j);
    free(info);

    /* the template raising is the client's error, named */
    specd_chat_msg bad[] = {{"assistant", "I start"}};
    g.messages = bad;
    g.n_messages = 1;
    CHECK(specd_chat(c, &g, NULL, NULL, &chat, &e) == -1 && e.kind == SPECD_ERR_DAEMON);
    CHECK_STR_EQ(e.code, SD_E_TEMPLATE);
    CHECKF(strstr(e.message, "Conversation must start with the user") != NULL, "%s", e.message);

    /* specd-cli chat, piped: two turns (the second sees the first in its history), /reset between */
    char cmd[1024], *out = NULL, *err_out = NULL;
    snprintf(cmd, sizeof cmd, "printf 'Once upon a time\\n/reset\\nThe robot\\n' | %s/specd-cli --socket %s chat -n 6 --temp 0",
             fx_build_dir(), d.sock);
    int rc = fx_run(cmd, &out, &err_out);
    CHECKF(rc == 0, "specd-cli chat exited %d: %s", rc, err_out ? err_out : "");
    int lines = 0;
    for (char *q = out; q && *q; q++) lines += *q == '\n';
    CHECKF(lines == 2, "expected two reply lines, got: %s", out ? out : "(none)");
    free(out);
    free(err_out);

    specd_close(c);
    CHECK_EQ_INT(fx_daemon_stop(&d), 0);
    unlink(tpath);
}

static void test_daemon_without_template(void) {
    if (!model_path()) SKIP("../shared/models/aidreams260K.gguf is not there");
    char why[512];
    fixture_daemon d;
    specd_client *c = NULL;
    specd_error e;
    REQUIRE(start_connected(&d, NULL, &c) == 0);
    specd_chat_msg msgs[] = {{"user", "hi"}};
    specd_gen g = specd_gen_default();
    g.messages = msgs;
    g.n_messages = 1;
    specd_result r;
    CHECK(specd_chat(c, &g, NULL, NULL, &r, &e) == -1 && e.kind == SPECD_ERR_DAEMON);
    CHECK_STR_EQ(e.code, SD_E_UNSUPPORTED);
    CHECK(strstr(e.message, "--chat-template") != NULL);
    char *info;
    REQUIRE(specd_info(c, &info, &e) == 0);
    CHECK(strstr(info, "\"chat_template\":null") != NULL);
    free(info);
    specd_close(c);
    CHECK_EQ_INT(fx_daemon_stop(&d), 0);

    /* a template that does not parse stops the daemon at start, naming the line */
    char tpath[] = "/tmp/specd-test-badtmpl-XXXXXX";
    int fd = mkstemp(tpath);
    REQUIRE(fd >= 0);
    const char bad[] = "ok\n{% for x in %}";
    REQUIRE(write(fd, bad, sizeof bad - 1) == (ssize_t)(sizeof bad - 1));
    close(fd);
    CHECK(start(&d, tpath, why, sizeof why) == -1);
    char *log = read_all(d.log, NULL);
    CHECKF(log && strstr(log, "chat template") && strstr(log, "line 2"), "%s", log ? log : why);
    free(log);
    fx_daemon_stop(&d);
    unlink(tpath);
}

int main(void) {
    RUN(test_decode_chat);
    RUN(test_daemon_chat);
    RUN(test_daemon_without_template);
    return TEST_DONE();
}
