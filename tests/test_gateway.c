/* The OpenAI HTTP gateway (gateway/): request parsing on its own, then `specd serve --http` with the shared
 * aidreams model: curl for raw HTTP and SSE, the official `openai` npm package (installed into
 * $BUILD/node by this test from the npm registry; skipped when that cannot be done), error mapping, hostile
 * bodies, 16 concurrent streams, a client leaving mid-stream, API keys. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "gateway/openai.h"
#include "tests/daemon_fixture.h"
#include "tests/test.h"

/* ---- parsing, no daemon ---- */

static int parse(oai_kind k, const char *body, oai_error *e) {
    oai_request r;
    int rc = oai_parse(k, body, strlen(body), &r, e);
    oai_request_free(&r);
    return rc;
}

static void test_parse(void) {
    oai_error e;
    oai_request r;
    const char *ok = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":"
                     "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],\"max_completion_tokens\":5,"
                     "\"temperature\":0.5,\"top_p\":0.9,\"stop\":\"x\",\"n\":1,\"stream\":true,"
                     "\"stream_options\":{\"include_usage\":true},\"user\":\"u\",\"seed\":7,"
                     "\"speculative\":{\"mode\":\"plain\",\"draft_max\":4}}";
    REQUIRE(oai_parse(OAI_CHAT, ok, strlen(ok), &r, &e) == 0);
    CHECK(r.g.n_messages == 2 && !strcmp(r.g.messages[1].content, "ab") && r.g.max_tokens == 5);
    CHECK(r.stream && r.include_usage && r.g.n_stop == 1 && !strcmp(r.g.stop[0], "x") && r.g.has_seed && r.g.seed == 7);
    CHECK(!strcmp(r.g.mode, "plain") && r.g.draft_max == 4 && r.g.temperature == 0.5);
    oai_request_free(&r);
    static const struct {
        oai_kind kind;
        const char *body, *param;
    } bad[] = {
        {OAI_CHAT, "{\"messages\":[]}", "messages"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":1}]}", "messages[0].content"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"extra\":1}]}", "messages[0].extra"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", "n"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[]}", "tools"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":2}", "top_p"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", "stop"},
        {OAI_CHAT, "{\"prompt\":\"x\"}", "prompt"},
        {OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt"},
        {OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens"},
        {OAI_COMPLETION, "{\"prompt\":\"x\",\"stream\":\"yes\"}", "stream"},
        {OAI_COMPLETION, "{}", "prompt"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(bad[i].kind, bad[i].body, &e);
        CHECKF(rc == -1 && e.status == 400 && !strcmp(e.param, bad[i].param), "%s: rc %d status %d param '%s' (%s)",
               bad[i].body, rc, e.status, e.param, e.message);
    }
    CHECK(parse(OAI_CHAT, "{\"messages\":", &e) == -1 && e.status == 400 && strstr(e.message, "not valid JSON"));
    CHECK(parse(OAI_CHAT, "[1]", &e) == -1 && e.status == 400);
    CHECK(parse(OAI_COMPLETION, "{\"prompt\":\"\xff\"}", &e) == -1 && e.status == 400); /* invalid UTF-8 */
    CHECK(parse(OAI_COMPLETION, "{\"prompt\":\"x\",\"prompt\":\"y\"}", &e) == -1 && e.status == 400);
    char *j = oai_error_json(&e);
    CHECK(j && strstr(j, "\"error\":{\"message\":") && strstr(j, "\"type\":\"invalid_request_error\""));
    free(j);
}

/* ---- against a daemon ---- */

static const char k_template[] = "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                                 "{% if add_generation_prompt %}assistant:{% endif %}";

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &l) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

typedef struct gw {
    fixture_daemon d;
    char tmpl[64], url[64], port[16];
} gw;

/* api_key, timeout: --api-key / --http-timeout when not NULL. */
static const char *g_ctx; /* --ctx for the next gw_start (NULL: the model's own 128 positions) */

static int gw_start(gw *g, const char *api_key, const char *timeout) {
    snprintf(g->tmpl, sizeof g->tmpl, "/tmp/specd-test-gwtmpl-XXXXXX");
    int fd = mkstemp(g->tmpl);
    if (fd < 0 || write(fd, k_template, sizeof k_template - 1) != (ssize_t)(sizeof k_template - 1)) return -1;
    close(fd);
    snprintf(g->port, sizeof g->port, "%d", free_port());
    snprintf(g->url, sizeof g->url, "http://127.0.0.1:%s", g->port);
    const char *argv[16] = {"-m", shared_path("models/aidreams260K.gguf"), "--chat-template", g->tmpl, "--http", g->port};
    int n = 6;
    if (g_ctx) argv[n++] = "--ctx", argv[n++] = g_ctx;
    if (api_key) argv[n++] = "--api-key", argv[n++] = api_key;
    if (timeout) argv[n++] = "--http-timeout", argv[n++] = timeout;
    argv[n] = NULL;
    char why[512];
    if (fx_daemon_start(&g->d, argv, why, sizeof why)) {
        fprintf(stderr, "  %s\n", why);
        unlink(g->tmpl);
        return -1;
    }
    return 0;
}

static void gw_stop(gw *g) {
    CHECK_EQ_INT(fx_daemon_stop(&g->d), 0);
    unlink(g->tmpl);
}

/* curl with its HTTP status appended on a last line ("\n%{http_code}"); returns the status. */
static int curl(const gw *g, const char *args, char **body) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "curl -sN -m 30 -w '\\n%%{http_code}' %s", args);
    char *out = NULL;
    if (fx_run(cmd, &out, NULL) != 0 || !out) {
        free(out);
        *body = NULL;
        return -1;
    }
    char *nl = strrchr(out, '\n');
    int status = nl ? atoi(nl + 1) : -1;
    if (nl) *nl = '\0';
    *body = out;
    (void)g;
    return status;
}

static json_t *post_json(const gw *g, const char *path, const char *body, int *status) {
    char args[1024], *out;
    snprintf(args, sizeof args, "-H 'Content-Type: application/json' -d '%s' %s%s", body, g->url, path);
    *status = curl(g, args, &out);
    json_t *j = out ? json_loads(out, 0, NULL) : NULL;
    free(out);
    return j;
}

static void test_http(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    gw g;
    REQUIRE(gw_start(&g, NULL, NULL) == 0);
    char *out;
    char args[1024];
    snprintf(args, sizeof args, "%s/health", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    free(out);
    snprintf(args, sizeof args, "%s/v1/models", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    CHECK(out && strstr(out, "\"id\":\"aidreams260K.gguf\""));
    free(out);

    /* non-streaming chat = IPC chat (greedy), with usage and specd's counts */
    int st;
    json_t *j = post_json(&g, "/v1/chat/completions",
                          "{\"model\":\"aidreams260K.gguf\",\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}],"
                          "\"max_tokens\":10,\"temperature\":0}", &st);
    CHECK_EQ_INT(st, 200);
    const char *text = json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content"));
    CHECK(text && *text);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 10);
    CHECK(json_object_get(json_object_get(j, "specd"), "drafted") != NULL);
    specd_options o = {.endpoint = g.d.endpoint};
    specd_client *c;
    specd_error e;
    REQUIRE(specd_connect(&o, &c, &e) == 0);
    specd_chat_msg msgs[] = {{"user", "Once upon a time"}};
    specd_gen gen = specd_gen_default();
    gen.messages = msgs;
    gen.n_messages = 1;
    gen.max_tokens = 10;
    gen.temperature = 0;
    specd_result res;
    REQUIRE(specd_chat(c, &gen, NULL, NULL, &res, &e) == 0);
    CHECK(text && !strcmp(text, res.text));

    /* streaming: SSE chunks whose deltas add up to the same text, usage, then [DONE] */
    snprintf(args, sizeof args, "-d '{\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}],\"max_tokens\":10,"
                                "\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}' %s/v1/chat/completions",
             g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    char joined[4096] = "";
    int n_chunks = 0;
    bool usage = false, done = false;
    for (char *line = out ? strtok(out, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6)) continue;
        if (!strcmp(line + 6, "[DONE]")) { done = true; continue; }
        json_t *ch = json_loads(line + 6, 0, NULL);
        CHECKF(ch != NULL, "bad chunk %s", line);
        json_t *choice = json_array_get(json_object_get(ch, "choices"), 0);
        const char *d = json_string_value(json_object_get(json_object_get(choice, "delta"), "content"));
        if (d) strncat(joined, d, sizeof joined - strlen(joined) - 1);
        usage |= json_object_get(ch, "usage") != NULL;
        n_chunks++;
        json_decref(ch);
    }
    CHECKF(!strcmp(joined, res.text), "streamed '%s' vs '%s'", joined, res.text);
    CHECK(usage && done && n_chunks >= 3);
    free(out);
    specd_result_free(&res);
    json_decref(j);

    /* completions */
    j = post_json(&g, "/v1/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":6}", &st);
    CHECK_EQ_INT(st, 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "object")), "text_completion");
    json_decref(j);

    /* errors: OpenAI's shape and status codes */
    static const struct {
        const char *path, *body, *param;
        int status;
    } bad[] = {
        {"/v1/chat/completions", "{\"messages\":", NULL, 400},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}", "temperature", 400},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frequency\":1}", "frequency", 400},
        {"/v1/chat/completions", "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model", 404},
        {"/v1/completions", "{\"prompt\":\"cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat "
                            "cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat "
                            "cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat "
                            "cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat "
                            "cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat cat\"}", NULL, 400},
        {"/v1/nothing", "{}", NULL, 404},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = post_json(&g, bad[i].path, bad[i].body, &st);
        json_t *err = json_object_get(j, "error");
        CHECKF(st == bad[i].status && json_is_string(json_object_get(err, "message")) &&
                   (!bad[i].param || !strcmp(json_string_value(json_object_get(err, "param")), bad[i].param)),
               "%s %s: status %d", bad[i].path, bad[i].body, st);
        json_decref(j);
    }
    /* invalid UTF-8 and a 10 MB body */
    char path[300];
    snprintf(path, sizeof path, "%s/big.json", g.d.dir);
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fputs("{\"prompt\":\"", f);
    for (int i = 0; i < 10 << 20; i += 16) fputs("aaaaaaaaaaaaaaaa", f);
    fputs("\"}", f);
    fclose(f);
    snprintf(args, sizeof args, "--data-binary @%s %s/v1/completions", path, g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 413);
    CHECK(out && strstr(out, "\"error\""));
    free(out);
    f = fopen(path, "wb");
    REQUIRE(f);
    fputs("{\"prompt\":\"\xc3\x28\"}", f);
    fclose(f);
    CHECK_EQ_INT(curl(&g, args, &out), 400);
    free(out);
    unlink(path);
    snprintf(args, sizeof args, "-X DELETE %s/v1/models", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 405);
    free(out);
    /* the daemon still serves */
    CHECK_EQ_INT(specd_ping(c, NULL, &e), 0);
    specd_close(c);
    gw_stop(&g);
}

/* 16 streams at once all complete; a client that leaves mid-stream cancels its request. */
static void test_concurrency_and_disconnect(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    gw g;
    /* a context far past the model's 128 positions, so an unbounded stream lasts long enough for a client
     * that leaves mid-stream to be noticed before the request would end by itself */
    g_ctx = "8192";
    int rc = gw_start(&g, NULL, NULL);
    g_ctx = NULL;
    REQUIRE(rc == 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "(cd %s && for i in $(seq 16); do curl -sN -m 60 -d '{\"prompt\":\"Once upon a time\",\"max_tokens\":40,"
             "\"stream\":true}' %s/v1/completions > s$i.txt & done; wait; grep -l '^data: \\[DONE\\]' s*.txt | wc -l; rm -f s*.txt)",
             g.d.dir, g.url);
    char *out = NULL;
    CHECK_EQ_INT(fx_run(cmd, &out, NULL), 0);
    CHECKF(out && atoi(out) == 16, "streams ending with [DONE]: %s", out ? out : "none");
    free(out);

    /* leave after the first chunk of a long stream: the daemon counts a cancelled request */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(g.port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    const char body[] = "{\"prompt\":\"Once upon a time\",\"max_tokens\":100000,\"stream\":true}";
    char req[512];
    int n = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    REQUIRE(write(fd, req, (size_t)n) == n);
    char buf[512];
    REQUIRE(read(fd, buf, sizeof buf) > 0);
    close(fd);
    specd_options o = {.endpoint = g.d.endpoint};
    specd_client *c;
    specd_error e;
    REQUIRE(specd_connect(&o, &c, &e) == 0);
    bool cancelled = false;
    for (int tries = 0; tries < 100 && !cancelled; tries++) {
        char *stats;
        REQUIRE(specd_stats(c, &stats, &e) == 0);
        json_t *j = json_loads(stats, 0, NULL);
        cancelled = json_integer_value(json_object_get(json_object_get(j, "requests"), "cancelled")) >= 1;
        json_decref(j);
        free(stats);
        if (!cancelled) usleep(50 * 1000);
    }
    CHECK(cancelled);
    specd_close(c);
    char args[256];
    snprintf(args, sizeof args, "%s/metrics", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    CHECK(out && strstr(out, "specd_requests_cancelled_total 1") && strstr(out, "specd_ttft_ms_bucket{le=\"+Inf\"}"));
    free(out);
    gw_stop(&g);
}

static void test_api_key(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    char cmd[512], *out = NULL, *err = NULL;
    /* beyond loopback without a key: refused before loading anything */
    snprintf(cmd, sizeof cmd, "%s/specd serve -m %s --socket /tmp/specd-test-nokey.sock --http 0.0.0.0:%d", fx_build_dir(),
             shared_path("models/aidreams260K.gguf"), free_port());
    CHECK_EQ_INT(fx_run(cmd, &out, &err), 2);
    CHECKF(err && strstr(err, "--api-key"), "%s", err ? err : "");
    free(out);
    free(err);
    gw g;
    REQUIRE(gw_start(&g, "s3cret", NULL) == 0);
    char args[256];
    snprintf(args, sizeof args, "%s/v1/models", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 401);
    free(out);
    snprintf(args, sizeof args, "-H 'Authorization: Bearer s3cret' %s/v1/models", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    free(out);
    snprintf(args, sizeof args, "%s/health", g.url); /* health needs no key */
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    free(out);
    gw_stop(&g);
}

/* A body that drips in slower than --http-timeout is cut off (the connection closes: libmicrohttpd allows
 * no reply before a body is complete), and the daemon goes on serving others. */
static void test_slow_drip(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    gw g;
    REQUIRE(gw_start(&g, NULL, "1") == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(g.port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    const char head[] = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"prompt\":";
    REQUIRE(write(fd, head, sizeof head - 1) == (ssize_t)(sizeof head - 1));
    char buf[2048];
    struct timeval tv = {0, 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    double t0 = sd_now_ms(), closed_after = -1;
    for (int i = 0; i < 25 && closed_after < 0; i++) { /* a byte every 200 ms: 5 s for 25 bytes */
        usleep(200 * 1000);
        if (send(fd, " ", 1, MSG_NOSIGNAL) != 1 || read(fd, buf, sizeof buf) == 0) closed_after = sd_now_ms() - t0;
    }
    close(fd);
    CHECKF(closed_after > 900 && closed_after < 3000, "the dripping connection closed after %.0f ms", closed_after);
    /* a Content-Length over the limit is refused before the body is sent */
    char *out, args[256];
    snprintf(args, sizeof args, "-H 'Content-Length: 99999999' -d x %s/v1/completions", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 413);
    free(out);
    snprintf(args, sizeof args, "%s/health", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    free(out);
    gw_stop(&g);
}

/* The official openai npm package, installed into $BUILD/node from the npm registry on first use. */
static void test_openai_sdk(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("node --version >/dev/null 2>&1 && npm --version >/dev/null 2>&1") != 0) SKIP("node/npm are not installed");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %1$s/node && cp tests/node/openai_check.mjs %1$s/node/ && "
             "(test -d %1$s/node/node_modules/openai || timeout 120 npm install --prefix %1$s/node --no-audit --no-fund "
             "--loglevel=error openai@4 >/dev/null 2>&1)",
             fx_build_dir());
    if (system(cmd) != 0) SKIP("could not install the openai npm package (no registry access?)");
    gw g;
    REQUIRE(gw_start(&g, NULL, NULL) == 0);
    char *out = NULL, *err = NULL;
    snprintf(cmd, sizeof cmd, "timeout 120 node %s/node/openai_check.mjs %s/v1 aidreams260K.gguf", fx_build_dir(), g.url);
    int rc = fx_run(cmd, &out, &err);
    CHECKF(rc == 0, "openai SDK checks (exit %d): %s", rc, err ? err : "");
    free(out);
    free(err);
    gw_stop(&g);
}

int main(void) {
    RUN(test_parse);
    RUN(test_http);
    RUN(test_concurrency_and_disconnect);
    RUN(test_api_key);
    RUN(test_slow_drip);
    RUN(test_openai_sdk);
    return TEST_DONE();
}
