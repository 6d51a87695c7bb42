/* The OpenAI HTTP gateway (gateway/): request parsing on its own, then `specd serve --http` with the shared
 * aidreams model: curl for raw HTTP and SSE, the official `openai` npm package (installed into
 * $BUILD/node by this test from the npm registry; skipped when that cannot be done), error mapping, hostile
 * bodies, 16 concurrent streams, a client leaving mid-stream, API keys. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "gateway/metrics.h"
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
        /* OpenAI fields specd does not implement: refused unless they ask for nothing */
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frequency_penalty\":0.5}", "frequency_penalty"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}", "logprobs"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}", "response_format"},
        {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"5\":1}}", "logit_bias"},
        {OAI_COMPLETION, "{\"prompt\":\"x\",\"best_of\":2}", "best_of"},
        {OAI_COMPLETION, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"text\"}}", "response_format"}, /* chat only */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(bad[i].kind, bad[i].body, &e);
        CHECKF(rc == -1 && e.status == 400 && !strcmp(e.param, bad[i].param), "%s: rc %d status %d param '%s' (%s)",
               bad[i].body, rc, e.status, e.param, e.message);
    }
    const char *neutral = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frequency_penalty\":0,"
                          "\"presence_penalty\":0.0,\"logprobs\":false,\"top_logprobs\":null,\"logit_bias\":{},"
                          "\"response_format\":{\"type\":\"text\"},\"parallel_tool_calls\":true,\"store\":false}";
    CHECKF(parse(OAI_CHAT, neutral, &e) == 0, "neutral values refused: %s", e.message);
    CHECK(parse(OAI_COMPLETION, "{\"prompt\":\"x\",\"echo\":false,\"best_of\":1,\"frequency_penalty\":0}", &e) == 0);
    CHECK(parse(OAI_CHAT, "{\"messages\":", &e) == -1 && e.status == 400 && strstr(e.message, "not valid JSON"));
    CHECK(parse(OAI_CHAT, "[1]", &e) == -1 && e.status == 400);
    CHECK(parse(OAI_COMPLETION, "{\"prompt\":\"\xff\"}", &e) == -1 && e.status == 400); /* invalid UTF-8 */
    CHECK(parse(OAI_COMPLETION, "{\"prompt\":\"x\",\"prompt\":\"y\"}", &e) == -1 && e.status == 400);
    char *j = oai_error_json(&e);
    CHECK(j && strstr(j, "\"error\":{\"message\":") && strstr(j, "\"type\":\"invalid_request_error\""));
    free(j);
    /* an unknown field whose long name is cut inside a character still gets a JSON error (it was "{}") */
    char body[1024] = "{\"prompt\":\"x\",\"";
    for (int i = 0; i < 300; i++) strcat(body, "\xc3\xa9");
    strcat(body, "\":1}");
    CHECK(parse(OAI_COMPLETION, body, &e) == -1 && e.status == 400);
    j = oai_error_json(&e);
    json_t *back = j ? json_loads(j, 0, NULL) : NULL;
    CHECKF(back && json_is_string(json_object_get(json_object_get(back, "error"), "param")), "%s", j ? j : "NULL");
    json_decref(back);
    free(j);
}

/* The per-token SSE chunk (written without a JSON tree) is byte for byte what jansson writes for the same
 * object: quotes, backslashes, control characters, DEL, '/', non-ASCII; chat first and later deltas and
 * completions, with and without specd.time_us; text that is not UTF-8 is refused, as jansson refuses it. */
static void test_chunk_bytes(void) {
    static const char *const texts[] = {"plain", "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f \xc3\xa9 \xf0\x9f\x98\x80", ""};
    int checked = 0;
    for (int kind = 0; kind < 2; kind++)
        for (int first = 0; first < 2; first++)
            for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++)
                for (int with_time = 0; with_time < 2; with_time++) {
                    oai_request r = {.kind = kind ? OAI_COMPLETION : OAI_CHAT, .model = "m\"od\xc3\xa9l.gguf"};
                    const char *text = texts[t];
                    size_t len = strlen(text);
                    uint64_t time_us = with_time ? 123456789012ull : 0;
                    char *got = oai_chunk_delta(&r, "chatcmpl-7", 1700000000L, text, len, first, time_us);
                    json_t *c = !kind ? json_pack("{s:i, s:o, s:n, s:n}", "index", 0, "delta",
                                                  first ? json_pack("{s:s, s:s%}", "role", "assistant", "content", text, len)
                                                        : json_pack("{s:s%}", "content", text, len),
                                                  "logprobs", "finish_reason")
                                      : json_pack("{s:i, s:s%, s:n, s:n}", "index", 0, "text", text, len, "logprobs",
                                                  "finish_reason");
                    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", "chatcmpl-7", "object",
                                          !kind ? "chat.completion.chunk" : "text_completion", "created",
                                          (json_int_t)1700000000, "model", r.model, "choices", c);
                    if (time_us) json_object_set_new(j, "specd", json_pack("{s:I}", "time_us", (json_int_t)time_us));
                    char *d = j ? json_dumps(j, JSON_COMPACT) : NULL, want[1024];
                    snprintf(want, sizeof want, "data: %s\n\n", d ? d : "?");
                    CHECKF(got && !strcmp(got, want), "kind %d first %d text %zu\n  got  %s\n  want %s", kind, first, t,
                           got ? got : "NULL", want);
                    checked += got != NULL;
                    free(got);
                    free(d);
                    json_decref(j);
                }
    CHECK_EQ_INT(checked, 24);
    oai_request r = {.kind = OAI_CHAT, .model = "m"};
    CHECK(oai_chunk_delta(&r, "x", 1, "a\xff", 2, false, 0) == NULL);
}

/* ---- Prometheus text ---- */

/* Checks the exposition format as a scraper reads it: HELP then TYPE before a family's samples, one
 * declaration per family, counters named _total, every value a number, and histograms with ascending
 * bounds, cumulative (non-decreasing) buckets ending in +Inf, then _sum and a _count equal to +Inf's. */
typedef struct prom_fam {
    char name[96], type[16];
    double last_le, last_cum, inf;
    bool has_inf, has_sum, has_count;
} prom_fam;

static int prom_fail(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int prom_fail(char *why, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return -1;
}

static int prom_fam_end(const prom_fam *f, char *why, size_t cap) {
    if (!strcmp(f->type, "histogram") && !(f->has_inf && f->has_sum && f->has_count)) {
        return prom_fail(why, cap, "histogram %s lacks +Inf, _sum or _count", f->name);
    }
    return 0;
}

static int prom_sample(prom_fam *f, char *line, char *why, size_t cap) {
    char *sp = strrchr(line, ' '), *end;
    if (!sp) return prom_fail(why, cap, "no value: %s", line);
    double v = strtod(sp + 1, &end);
    if (end == sp + 1 || *end) return prom_fail(why, cap, "bad value: %s", line);
    *sp = '\0';
    char *brace = strchr(line, '{');
    size_t nlen = brace ? (size_t)(brace - line) : strlen(line), flen = strlen(f->name);
    const char *suffix = nlen >= flen && !strncmp(line, f->name, flen) ? line + flen : NULL;
    bool hist = !strcmp(f->type, "histogram");
    if (!suffix || (!hist && suffix != line + nlen) ||
        (hist && strncmp(suffix, "_bucket{", 8) && strcmp(suffix, "_sum") && strcmp(suffix, "_count")))
        return prom_fail(why, cap, "sample %s outside its family %s", line, f->name);
    if (!hist) return 0;
    if (!strcmp(suffix, "_sum")) { f->has_sum = f->has_inf; return 0; }
    if (!strcmp(suffix, "_count")) {
        f->has_count = f->has_inf && v == f->inf;
        return f->has_count ? 0 : prom_fail(why, cap, "%s_count %g is not +Inf's %g", f->name, v, f->inf);
    }
    const char *le = strstr(suffix, "le=\"");
    if (!le || f->has_inf || v < f->last_cum) return prom_fail(why, cap, "bucket out of order: %s %g", line, v);
    f->last_cum = v;
    if (!strncmp(le + 4, "+Inf\"", 5)) { f->has_inf = true; f->inf = v; return 0; }
    double b = strtod(le + 4, &end);
    if (*end != '"' || b <= f->last_le) return prom_fail(why, cap, "bad bound: %s", line);
    f->last_le = b;
    return 0;
}

static int prom_check(const char *text, char *why, size_t cap) {
    char *copy = strdup(text), *save = NULL, help[96] = "", declared[8192] = " ";
    prom_fam f = {.type = ""};
    int rc = 0;
    for (char *line = strtok_r(copy, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        char name[96], type[16], key[200];
        if (sscanf(line, "# HELP %95s", name) == 1) snprintf(help, sizeof help, "%s", name);
        else if (sscanf(line, "# TYPE %95s %15s", name, type) == 2) {
            snprintf(key, sizeof key, " %s ", name);
            size_t n = strlen(name);
            if ((rc = prom_fam_end(&f, why, cap))) break;
            if (strcmp(help, name) || strstr(declared, key))
                rc = prom_fail(why, cap, "%s: no HELP just before, or declared twice", name);
            else if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram"))
                rc = prom_fail(why, cap, "%s: type %s", name, type);
            else if (!strcmp(type, "counter") && (n < 6 || strcmp(name + n - 6, "_total")))
                rc = prom_fail(why, cap, "counter %s does not end in _total", name);
            strncat(declared, key + 1, sizeof declared - strlen(declared) - 1);
            f = (prom_fam){.last_le = -1, .last_cum = -1};
            snprintf(f.name, sizeof f.name, "%s", name);
            snprintf(f.type, sizeof f.type, "%s", type);
        } else if (line[0] == '#') rc = prom_fail(why, cap, "stray comment: %s", line);
        else rc = prom_sample(&f, line, why, cap);
    }
    if (!rc) rc = prom_fam_end(&f, why, cap);
    free(copy);
    return rc;
}

/* The value of the sample named exactly `sample` (labels included), or -1 when there is none. */
static double prom_value(const char *text, const char *sample) {
    size_t n = strlen(sample);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, sample, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
    return -1;
}

static void test_metrics_text(void) {
    const char *stats =
        "{\"uptime_s\":2.5,\"requests\":{\"total\":3,\"active\":1,\"queued\":2,\"completed\":2,\"cancelled\":0,"
        "\"errors\":1,\"busy\":0,\"vanished\":0,\"other\":4,\"preemptions\":5},"
        "\"tokens\":{\"prompt\":30,\"prefilled\":20,\"reused\":10,\"generated\":40,"
        "\"drafted\":30,\"accepted\":15,\"target_passes\":23},\"acceptance\":0.5,\"tokens_per_pass\":1.6521739,"
        "\"sessions\":{\"pool\":2,\"busy\":1},\"kv\":{\"used_positions\":50,\"total_positions\":256,\"used_bytes\":6400,"
        "\"total_bytes\":32768},\"histograms\":{\"ttft_ms\":{\"sum_ms\":7.5,\"bounds_ms\":[1,10],\"counts\":[1,1,1]},"
        "\"total_ms\":{\"sum_ms\":1,\"bounds_ms\":[1,10],\"counts\":[1,1]}}}";
    gw_counters k = {9, 2, 1};
    char *t = gw_metrics_text(stats, &k), why[256] = "";
    REQUIRE(t);
    CHECKF(prom_check(t, why, sizeof why) == 0, "%s\n%s", why, t);
    CHECK(prom_value(t, "specd_requests_total") == 3 && prom_value(t, "specd_queue_depth") == 2);
    CHECK(prom_value(t, "specd_target_passes_total") == 23 && fabs(prom_value(t, "specd_tokens_per_pass") - 1.6521739) < 1e-6);
    CHECK(prom_value(t, "specd_kv_used_bytes") == 6400 && prom_value(t, "specd_kv_total_positions") == 256);
    CHECK(prom_value(t, "specd_reused_tokens_total") == 10 && prom_value(t, "specd_preemptions_total") == 5);
    CHECK(prom_value(t, "specd_time_to_first_token_seconds_bucket{le=\"0.001\"}") == 1);
    CHECK(prom_value(t, "specd_time_to_first_token_seconds_bucket{le=\"0.01\"}") == 2);
    CHECK(prom_value(t, "specd_time_to_first_token_seconds_bucket{le=\"+Inf\"}") == 3);
    CHECK(prom_value(t, "specd_time_to_first_token_seconds_count") == 3);
    CHECK(fabs(prom_value(t, "specd_time_to_first_token_seconds_sum") - 0.0075) < 1e-12);
    CHECK(prom_value(t, "specd_http_requests_total") == 9 && prom_value(t, "specd_http_errors_total") == 2);
    /* a histogram of the wrong shape and figures the daemon does not give are left out, not made up */
    CHECK(!strstr(t, "specd_request_duration_seconds") && !strstr(t, "specd_queue_seconds"));
    free(t);
    t = gw_metrics_text("{\"requests\":{\"total\":1}}", &k);
    REQUIRE(t);
    CHECK(prom_check(t, why, sizeof why) == 0 && !strstr(t, "specd_kv_") && prom_value(t, "specd_requests_total") == 1);
    free(t);
    CHECK(gw_metrics_text("[1]", &k) == NULL && gw_metrics_text("{", &k) == NULL);
    /* the checker itself rejects what a scraper would */
    CHECK(prom_check("# HELP a_total x\n# TYPE a_total counter\nb 1\n", why, sizeof why) == -1);
    CHECK(prom_check("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n", why, sizeof why) == -1);
    CHECK(prom_check("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\n", why, sizeof why) == -1);
    CHECK(prom_check("# HELP c x\n# TYPE c counter\nc 1\n", why, sizeof why) == -1);
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
static const char *const *g_extra; /* more serve options for the next gw_start (NULL-terminated), or NULL */
static const char *g_model;         /* the model of the next gw_start (NULL: ../shared's aidreams260K.gguf) */
static int g_port;                  /* the port of the next gw_start (0: a free one) */

static int gw_start(gw *g, const char *api_key, const char *timeout) {
    snprintf(g->tmpl, sizeof g->tmpl, "/tmp/specd-test-gwtmpl-XXXXXX");
    int fd = mkstemp(g->tmpl);
    if (fd < 0 || write(fd, k_template, sizeof k_template - 1) != (ssize_t)(sizeof k_template - 1)) return -1;
    close(fd);
    snprintf(g->port, sizeof g->port, "%d", g_port ? g_port : free_port());
    snprintf(g->url, sizeof g->url, "http://127.0.0.1:%s", g->port);
    const char *argv[32] = {"-m", g_model ? g_model : shared_path("models/aidreams260K.gguf"), "--chat-template", g->tmpl, "--http", g->port};
    int n = 6;
    for (int i = 0; g_extra && g_extra[i] && n < 24; i++) argv[n++] = g_extra[i];
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
    snprintf(args, sizeof args, "%s/v1/models/aidreams260K.gguf", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 200);
    CHECK(out && strstr(out, "\"object\":\"model\"") && !strstr(out, "\"list\""));
    free(out);
    snprintf(args, sizeof args, "%s/v1/models/gpt-4", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 404);
    CHECK(out && strstr(out, "model_not_found"));
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

/* A gateway on a synthetic model that runs thousands of tokens without an end-of-generation token
 * (aidreams ends its story after 165 greedy tokens: sooner than a loaded machine notices a client leave). */
static int gw_start_endless(gw *g, const char *const *extra) {
    char model[64], cmd[256];
    snprintf(model, sizeof model, "/tmp/specd-test-gwtiny-%d.gguf", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s/specd mkmodel --preset tiny -o %s", fx_build_dir(), model);
    if (fx_run(cmd, NULL, NULL) != 0) return -1;
    g_extra = extra;
    g_model = model;
    int rc = gw_start(g, NULL, NULL);
    g_extra = NULL;
    g_model = NULL;
    unlink(model);
    return rc;
}

/* A raw connection streaming an unbounded completion, its first bytes read (the request runs). */
static int endless_stream(const gw *g) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(g->port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    const char body[] = "{\"prompt\":\"Once upon a time\",\"max_tokens\":100000,\"stream\":true}";
    char req[512], buf[512];
    int n = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) || write(fd, req, (size_t)n) != n ||
        read(fd, buf, sizeof buf) <= 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

/* One session and no queue: a second request while one runs is answered 429 in OpenAI's shape; once the
 * first client leaves, requests are served again. */
static void test_busy(void) {
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    gw g;
    static const char *const one[] = {"--ctx", "16384", "--max-sessions", "1", "--queue", "0", NULL};
    REQUIRE(gw_start_endless(&g, one) == 0);
    int fd = endless_stream(&g);
    REQUIRE(fd >= 0);
    int st;
    json_t *j = post_json(&g, "/v1/completions", "{\"prompt\":\"hi\",\"max_tokens\":4}", &st);
    json_t *err = json_object_get(j, "error");
    CHECKF(st == 429 && json_is_string(json_object_get(err, "type")) &&
               !strcmp(json_string_value(json_object_get(err, "type")), "rate_limit_error") &&
               json_is_string(json_object_get(err, "message")), "status %d", st);
    json_decref(j);
    close(fd);
    for (int tries = 0; tries < 50 && st != 200; tries++) { /* the leave is noticed within a few tokens */
        usleep(100 * 1000);
        json_decref(post_json(&g, "/v1/completions", "{\"prompt\":\"hi\",\"max_tokens\":4}", &st));
    }
    CHECK_EQ_INT(st, 200);
    gw_stop(&g);
}

/* 16 streams at once all complete, hostile requests among them notwithstanding; a client that leaves
 * mid-stream cancels its request. */
static void test_concurrency_and_disconnect(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    gw g;
    REQUIRE(gw_start(&g, NULL, NULL) == 0);
    char cmd[4096];
    /* hostile requests land among the 16 streams: each gets its 4xx, every stream still ends with [DONE] */
    snprintf(cmd, sizeof cmd,
             "(cd %s && head -c 10485760 /dev/zero | tr '\\0' a > big && printf '{\"prompt\":\"\\303(\"}' > bad8 && "
             "for i in $(seq 16); do curl -sN -m 60 -d '{\"prompt\":\"Once upon a time\",\"max_tokens\":40,"
             "\"stream\":true}' %s/v1/completions > s$i.txt & done; "
             "H='curl -s -m 60 -o /dev/null -w %%{http_code}'; "
             "$H -d '{\"prompt\":' %s/v1/completions > c1 & $H --data-binary @big %s/v1/completions > c2 & "
             "$H --data-binary @bad8 %s/v1/completions > c3 & $H -d '{\"prompt\":\"x\",\"frobs\":1}' %s/v1/completions > c4 & "
             "$H -d '{\"prompt\":7}' %s/v1/completions > c5 & wait; "
             "grep -l '^data: \\[DONE\\]' s*.txt | wc -l; cat c1 c2 c3 c4 c5; echo; "
             "for f in s*.txt; do grep -q '^data: \\[DONE\\]' $f || { echo \"$f:\"; head -c 300 $f; echo; }; done; "
             "rm -f s*.txt c? big bad8)",
             g.d.dir, g.url, g.url, g.url, g.url, g.url, g.url);
    char *out = NULL;
    CHECK_EQ_INT(fx_run(cmd, &out, NULL), 0);
    char *codes = out ? strchr(out, '\n') : NULL;
    CHECKF(out && atoi(out) == 16, "streams ending with [DONE]: %s", out ? out : "none");
    CHECKF(codes && !strncmp(codes + 1, "400413400400400\n", 16), "hostile requests answered %s (want 400 413 400 400 400)",
           codes ? codes + 1 : "nothing");
    free(out);
    gw_stop(&g);

    /* leave after the first chunk of a long stream: the daemon counts a cancelled request. The model is a
     * synthetic one that runs thousands of tokens without an end-of-generation token (aidreams ends its
     * story after 165 greedy tokens, sooner than a loaded machine noticed the client leave) */
    static const char *const ctx[] = {"--ctx", "16384", NULL};
    REQUIRE(gw_start_endless(&g, ctx) == 0);
    int fd = endless_stream(&g);
    REQUIRE(fd >= 0);
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
    CHECK(out && strstr(out, "specd_requests_cancelled_total 1") && strstr(out, "specd_time_to_first_token_seconds_bucket{le=\"+Inf\"}"));
    free(out);
    /* the daemon connections go back to the gateway's pool, the cancelled one too: the next requests get
     * exactly their own tokens, as an IPC client does */
    specd_gen gen = specd_gen_default();
    gen.prompt = "The robot";
    gen.max_tokens = 7;
    gen.temperature = 0;
    specd_result res;
    REQUIRE(specd_connect(&o, &c, &e) == 0);
    REQUIRE(specd_generate(c, &gen, NULL, NULL, &res, &e) == 0);
    specd_close(c);
    for (int i = 0; i < 4; i++) {
        int st;
        json_t *j = post_json(&g, "/v1/completions", "{\"prompt\":\"The robot\",\"max_tokens\":7,\"temperature\":0}", &st);
        const char *text = json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text"));
        CHECKF(st == 200 && text && !strcmp(text, res.text), "status %d, '%s' vs '%s'", st, text ? text : "", res.text);
        json_decref(j);
    }
    specd_result_free(&res);
    gw_stop(&g);
}

static char *scrape(const gw *g) {
    char args[256], *out = NULL;
    snprintf(args, sizeof args, "%s/metrics", g->url);
    int st = curl(g, args, &out);
    CHECK_EQ_INT(st, 200);
    char why[256] = "";
    CHECKF(out && prom_check(out, why, sizeof why) == 0, "/metrics: %s", why);
    return out;
}

/* /metrics after requests, with speculation (the shared draft model) on: every figure moved by what the requests did. */
static void test_metrics(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    gw g;
    if (!shared_path("models/aidreams-draft.gguf")) SKIP("../shared/models/aidreams-draft.gguf is not there");
    const char *const draft[] = {"-md", shared_path("models/aidreams-draft.gguf"), NULL};
    g_extra = draft;
    int rc = gw_start(&g, NULL, NULL);
    g_extra = NULL;
    REQUIRE(rc == 0);
    char *m0 = scrape(&g);
    REQUIRE(m0);
    CHECK(prom_value(m0, "specd_requests_total") == 0 && prom_value(m0, "specd_kv_used_positions") == 0);
    const int n = 3;
    long gen = 0, prompt = 0;
    for (int i = 0; i < n; i++) {
        int st;
        json_t *j = post_json(&g, "/v1/completions", "{\"prompt\":\"the cat sat on the mat. the cat sat on the\","
                                                     "\"max_tokens\":12,\"temperature\":0}", &st);
        CHECK_EQ_INT(st, 200);
        gen += (long)json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
        prompt += (long)json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
        json_decref(j);
    }
    char *m1 = scrape(&g);
    REQUIRE(m1);
#define D(name) (prom_value(m1, name) - prom_value(m0, name))
    CHECK(D("specd_requests_total") == n && D("specd_requests_completed_total") == n);
    CHECKF(D("specd_generated_tokens_total") == gen && gen == 12 * n, "generated %g, usage %ld",
           D("specd_generated_tokens_total"), gen);
    CHECK(D("specd_prompt_tokens_total") == prompt);
    CHECK(D("specd_time_to_first_token_seconds_count") == n && D("specd_request_duration_seconds_count") == n);
    CHECK(prom_value(m1, "specd_time_to_first_token_seconds_sum") > 0);
    CHECK(prom_value(m1, "specd_requests_active") == 0 && prom_value(m1, "specd_queue_depth") == 0);
    CHECK(D("specd_http_requests_total") >= n + 1);
    /* speculation: acceptance and tokens per pass agree with the counters they come from */
    double drafted = prom_value(m1, "specd_drafted_tokens_total"), accepted = prom_value(m1, "specd_accepted_tokens_total");
    double passes = prom_value(m1, "specd_target_passes_total");
    CHECK(accepted >= 0 && accepted <= drafted && passes > 0);
    CHECK(drafted == 0 || fabs(prom_value(m1, "specd_acceptance_ratio") - accepted / drafted) < 1e-6);
    double tpp = prom_value(m1, "specd_tokens_per_pass");
    CHECKF(fabs(tpp - (gen - n) / passes) < 1e-6 && tpp >= 1, "tokens per pass %g, (%ld - %d) / %g passes", tpp, gen, n, passes);
    CHECKF(accepted > 0 && tpp > 1, "accepted %g tokens, %g tokens per pass", accepted, tpp);
    /* the session keeps the request's prompt and output in its KV cache */
    double used = prom_value(m1, "specd_kv_used_positions"), total = prom_value(m1, "specd_kv_total_positions");
    CHECKF(used >= (double)prompt / n && used <= total && total > 0, "kv %g of %g positions", used, total);
    CHECK(prom_value(m1, "specd_kv_used_bytes") * total == prom_value(m1, "specd_kv_total_bytes") * used);
#undef D
    free(m0);
    free(m1);
    gw_stop(&g);
}

/* GET /health while the model loads (the SPECD_LOAD_DELAY_MS hook makes loading take 1.5 s): 503
 * {"status":"loading"} from the moment the gateway listens, then 200 once the daemon answers. */
static void test_health_loading(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    char log[] = "/tmp/specd-test-health-XXXXXX", cmd[1024];
    int fd = mkstemp(log);
    REQUIRE(fd >= 0);
    close(fd);
    g_port = free_port();
    /* a poller in the background from before the daemon starts: one line "BODY CODE" a check, until a 200;
     * then the first answer to a completion, asked as soon as the gateway listens (while loading) */
    snprintf(cmd, sizeof cmd,
             "(for i in $(seq 400); do r=$(curl -s -m 5 -w ' %%{http_code}' http://127.0.0.1:%d/health); echo \"$r\"; "
             "case \"$r\" in *' 200') break;; esac; sleep 0.02; done; cat %s.c; echo end) > %s 2>&1 & "
             "(for i in $(seq 400); do r=$(curl -s -m 5 -w ' %%{http_code}' -d '{\"prompt\":\"x\"}' "
             "http://127.0.0.1:%d/v1/completions); case \"$r\" in *' 000') sleep 0.02;; *) echo \"C $r\" > %s.c; break;; esac; "
             "done) &",
             g_port, log, log, g_port, log);
    REQUIRE(system(cmd) == 0);
    setenv("SPECD_LOAD_DELAY_MS", "1500", 1);
    gw g;
    int rc = gw_start(&g, NULL, NULL);
    unsetenv("SPECD_LOAD_DELAY_MS");
    g_port = 0;
    REQUIRE(rc == 0);
    char *text = NULL;
    for (int i = 0; i < 200 && !(text && strstr(text, "end\n")); i++) {
        free(text);
        usleep(50 * 1000);
        text = read_all(log, NULL);
    }
    REQUIRE(text);
    int loading = 0, ok = 0, other = 0;
    bool completion_503 = false;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strcmp(line, "{\"status\":\"loading\"} 503")) loading += !ok;
        else if (!strcmp(line, "{\"status\":\"ok\"} 200")) ok++;
        else if (!strncmp(line, "C ", 2)) completion_503 = strstr(line, "\"service_unavailable\"") && strstr(line, "} 503");
        else if (strcmp(line, " 000") && strcmp(line, "end")) other++; /* 000: not listening yet */
    }
    CHECKF(loading >= 5 && ok == 1 && other == 0, "%d answers 503 loading, then %d 200 ok, %d others", loading, ok, other);
    CHECK(completion_503); /* a completion while loading: 503 in OpenAI's shape */
    free(text);
    unlink(log);
    snprintf(cmd, sizeof cmd, "%s.c", log);
    unlink(cmd);
    gw_stop(&g);
}

/* An engine failure (the SPECD_FAIL_AFTER hook fails the backend's first matrix product) is a 500 in
 * OpenAI's shape, streamed or not (a stream that fails before its first token gets the status too). */
static void test_engine_failure(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    setenv("SPECD_FAIL_AFTER", "1", 1);
    gw g;
    int rc = gw_start(&g, NULL, NULL);
    unsetenv("SPECD_FAIL_AFTER");
    REQUIRE(rc == 0);
    for (int stream = 0; stream < 2; stream++) {
        int st;
        json_t *j = post_json(&g, "/v1/completions", stream ? "{\"prompt\":\"Once\",\"max_tokens\":4,\"stream\":true}"
                                                            : "{\"prompt\":\"Once\",\"max_tokens\":4}", &st);
        json_t *err = json_object_get(j, "error");
        CHECKF(st == 500 && json_is_string(json_object_get(err, "message")) &&
                   !strcmp(json_string_value(json_object_get(err, "type")), "server_error"),
               "stream %d: status %d", stream, st);
        json_decref(j);
    }
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

/* A connection to the gateway that has sent `head`: the headers and the first bytes of a 40-byte body
 * (k_part_body), part of the headers (k_part_headers), or nothing (""). */
static const char k_part_body[] = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"prompt\":";
static const char k_part_headers[] = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Pad: ";

static int partial_post(const gw *g, const char *head) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(g->port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    if (write(fd, head, strlen(head)) != (ssize_t)strlen(head)) {
        close(fd);
        return -1;
    }
    struct timeval tv = {0, 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* A connection the test drives by hand: what the gateway sent back, and when it closed. */
typedef struct slow_conn {
    int fd;
    bool drips;        /* sends a byte every round */
    char got[2048];
    size_t n;
    double closed_ms;  /* -1 while open */
} slow_conn;

/* One round: a byte sent (if it drips), what arrived read; notes when the gateway closed. */
static void slow_round(slow_conn *s, double t0) {
    if (s->closed_ms >= 0) return;
    bool gone = s->drips && send(s->fd, "a", 1, MSG_NOSIGNAL) != 1;
    while (!gone && s->n < sizeof s->got - 1) {
        ssize_t r = read(s->fd, s->got + s->n, sizeof s->got - 1 - s->n); /* SO_RCVTIMEO: 1 ms */
        if (r <= 0) {
            gone = r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
            break;
        }
        s->n += (size_t)r;
        s->got[s->n] = '\0';
    }
    if (gone) s->closed_ms = sd_now_ms() - t0;
}

/* The gateway's reply on a slow connection: 408 in OpenAI's error shape, then the end of the stream. */
static void check_408(const slow_conn *s, const char *what) {
    const char *body = strstr(s->got, "\r\n\r\n");
    json_t *j = body ? json_loads(body + 4, 0, NULL) : NULL;
    json_t *err = json_object_get(j, "error");
    CHECKF(!strncmp(s->got, "HTTP/1.1 408 ", 13) && json_is_string(json_object_get(err, "message")) &&
               !strcmp(json_string_value(json_object_get(err, "code")), "request_timeout") &&
               strstr(json_string_value(json_object_get(err, "message")), "--http-timeout"),
           "%s: got '%.300s'", what, s->got);
    CHECKF(s->closed_ms > 900 && s->closed_ms < 3500, "%s: closed after %.0f ms", what, s->closed_ms);
    json_decref(j);
}

/* A body that drips in slower than --http-timeout, headers that do, and a body that stops halfway get a
 * 408 Request Timeout with an error message within about that time and are closed (an idle connection is
 * closed without one), and the gateway answers others all the while; curl uploading slower than that
 * gets the 408 too. */
static void test_slow_drip(void) {
    if (!shared_path("models/aidreams260K.gguf")) SKIP("../shared/models/aidreams260K.gguf is not there");
    if (system("curl --version >/dev/null 2>&1") != 0) SKIP("curl is not installed");
    gw g;
    REQUIRE(gw_start(&g, NULL, "1") == 0);
    slow_conn c[4] = {{partial_post(&g, k_part_body), true, "", 0, -1}, {partial_post(&g, k_part_body), false, "", 0, -1},
                      {partial_post(&g, k_part_headers), true, "", 0, -1}, {partial_post(&g, ""), false, "", 0, -1}};
    static const char *const what[] = {"the dripping body", "the stalled body", "the dripping headers"};
    REQUIRE(c[0].fd >= 0 && c[1].fd >= 0 && c[2].fd >= 0 && c[3].fd >= 0);
    char *out, args[512];
    double t0 = sd_now_ms();
    int served = 0;
    for (int i = 0; i < 25 && (c[0].closed_ms < 0 || c[1].closed_ms < 0 || c[2].closed_ms < 0 || c[3].closed_ms < 0);
         i++) { /* a byte every 200 ms */
        usleep(200 * 1000);
        for (int k = 0; k < 4; k++) slow_round(&c[k], t0);
        if (i == 2) { /* meanwhile a whole request is served as usual */
            snprintf(args, sizeof args, "-d '{\"prompt\":\"Once upon a time\",\"max_tokens\":8}' %s/v1/completions", g.url);
            served = curl(&g, args, &out);
            free(out);
        }
    }
    for (int k = 0; k < 3; k++) {
        check_408(&c[k], what[k]);
        close(c[k].fd);
    }
    /* a connection that sent nothing is closed without a reply (a client reusing an idle connection must
     * not read a 408 as the answer to its next request) */
    CHECKF(c[3].n == 0 && c[3].closed_ms > 900 && c[3].closed_ms < 3500, "the idle connection got '%s', closed after %.0f ms",
           c[3].got, c[3].closed_ms);
    close(c[3].fd);
    CHECK_EQ_INT(served, 200);
    /* curl sending its body at 20 bytes a second (3 s for this one) */
    snprintf(args, sizeof args, "--limit-rate 20 -H 'Content-Type: application/json' -d '{\"prompt\":\"Once upon a time, "
                                "there was a little robot\",\"max_tokens\":4}' %s/v1/completions", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 408);
    CHECKF(out && strstr(out, "\"request_timeout\""), "%s", out ? out : "");
    free(out);
    /* a Content-Length over the limit is refused before the body is sent */
    snprintf(args, sizeof args, "-H 'Content-Length: 99999999' -d x %s/v1/completions", g.url);
    CHECK_EQ_INT(curl(&g, args, &out), 413);
    CHECK(out && strstr(out, "\"error\""));
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
    RUN(test_chunk_bytes);
    RUN(test_metrics_text);
    RUN(test_http);
    RUN(test_concurrency_and_disconnect);
    RUN(test_metrics);
    RUN(test_busy);
    RUN(test_health_loading);
    RUN(test_engine_failure);
    RUN(test_api_key);
    RUN(test_slow_drip);
    RUN(test_openai_sdk);
    return TEST_DONE();
}
