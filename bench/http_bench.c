/* build/http_bench: what the OpenAI HTTP gateway adds over the direct IPC path (docs/benchmarks.md, "http").
 *
 *   build/http_bench [-m MODEL] [--runs N] [--tokens N]
 *   build/http_bench --chunk-cost N     (no daemon: the CPU cost of one token's SSE chunk, N of each)
 *
 * Starts `build/specd serve -m MODEL --http PORT` on a temporary socket, then runs the same greedy streamed
 * completion N times through each path, interleaved: IPC (the C client library) and HTTP (POST
 * /v1/completions with stream, read from a plain socket). Every token event carries the daemon's monotonic
 * time when the step produced it (IPC: the event's time_us; HTTP: the chunk's specd.time_us), so each path's
 * per-token delivery latency (produced -> received by the client) is measured directly on one clock; the
 * gateway's per-token overhead is the difference of the p50s. Time to first token is measured at the client
 * (request sent -> first text). --chunk-cost times the gateway's own work per token: the SSE chunk as the
 * gateway writes it (oai_chunk_delta) against the same object built and dumped with jansson (what it did
 * before). Built by `make` (every bench/ file is a program). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/clock.h"
#include "bench/pct.h"
#include "clients/specd_client.h"
#include "gateway/openai.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}


typedef struct samples {
    double *v;
    int n, cap;
} samples;
static void add(samples *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, sizeof *s->v * (size_t)s->cap);
        if (!s->v) exit(1);
    }
    s->v[s->n++] = x;
}

static const char *k_prompt = "Once upon a time";

typedef struct ipc_ctx {
    samples *lat;
    double t0, ttft;
} ipc_ctx;

static int on_token(const specd_token *t, void *user) {
    ipc_ctx *c = user;
    double now = now_us();
    if (c->ttft < 0 && t->len) c->ttft = now - c->t0;
    if (t->time_us) add(c->lat, now - (double)t->time_us);
    return 0;
}

static int run_ipc(specd_client *cl, int tokens, samples *lat, samples *ttft) {
    specd_gen g = specd_gen_default();
    g.prompt = k_prompt;
    g.max_tokens = tokens;
    g.temperature = 0;
    g.mode = "plain";
    ipc_ctx c = {lat, now_us(), -1};
    specd_result r;
    specd_error e;
    if (specd_generate(cl, &g, on_token, &c, &r, &e)) {
        fprintf(stderr, "http_bench: ipc: %s\n", e.message);
        return -1;
    }
    specd_result_free(&r);
    add(ttft, c.ttft / 1e3);
    return 0;
}

/* One streamed completion over HTTP/1.1 from a plain socket; SSE chunks parsed as they arrive. */
static int run_http(int port, int tokens, samples *lat, samples *ttft) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("http_bench: connect");
        if (fd >= 0) close(fd);
        return -1;
    }
    char body[256], req[512];
    int bn = snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,\"stream\":true,"
                                         "\"speculative\":{\"mode\":\"plain\"}}", k_prompt, tokens);
    int rn = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                       "Content-Length: %d\r\nConnection: close\r\n\r\n%s", bn, body);
    double t0 = now_us(), first = -1;
    if (write(fd, req, (size_t)rn) != rn) { close(fd); return -1; }
    static char buf[1 << 20];
    size_t len = 0, scan = 0;
    int rc = -1;
    for (;;) {
        ssize_t k = read(fd, buf + len, sizeof buf - 1 - len);
        if (k <= 0) break;
        double now = now_us();
        len += (size_t)k;
        buf[len] = '\0';
        char *p;
        while ((p = strstr(buf + scan, "data: ")) && strstr(p, "\n\n")) { /* each complete event */
            char *end = strstr(p, "\n\n");
            *end = '\0';
            if (!strcmp(p + 6, "[DONE]")) rc = 0;
            json_t *j = json_loads(p + 6, 0, NULL);
            json_t *t = json_object_get(json_object_get(j, "specd"), "time_us");
            if (t) {
                if (first < 0) first = now - t0;
                add(lat, now - (double)json_integer_value(t));
            }
            json_decref(j);
            scan = (size_t)(end + 2 - buf);
        }
        if (len > sizeof buf / 2) { /* keep the unparsed tail only */
            memmove(buf, buf + scan, len - scan);
            len -= scan;
            scan = 0;
        }
    }
    close(fd);
    if (first >= 0) add(ttft, first / 1e3);
    if (rc) fprintf(stderr, "http_bench: the HTTP stream did not end with [DONE]\n");
    return rc;
}

/* One chat delta chunk as a JSON tree with jansson (pack, dump, then "data: ...\n\n"), for --chunk-cost. */
static char *chunk_with_jansson(const oai_request *r, const char *text, size_t len, uint64_t time_us) {
    json_t *c = json_pack("{s:i, s:{s:s%}, s:n, s:n}", "index", 0, "delta", "content", text, len, "logprobs", "finish_reason");
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:{s:I}}", "id", "chatcmpl-12", "object", "chat.completion.chunk",
                          "created", (json_int_t)1700000000, "model", r->model, "choices", c, "specd", "time_us",
                          (json_int_t)time_us);
    char *d = json_dumps(j, JSON_COMPACT), *out = malloc(strlen(d) + 9);
    sprintf(out, "data: %s\n\n", d);
    free(d);
    json_decref(j);
    return out;
}

static int chunk_cost(int n) {
    oai_request r = {.kind = OAI_CHAT, .model = "demo.gguf"};
    size_t sink = 0;
    for (int rep = 0; rep < 3; rep++) { /* interleaved, three times */
        double t0 = now_us();
        for (int i = 0; i < n; i++) {
            char *s = chunk_with_jansson(&r, " the", 4, 123456789012ull + (uint64_t)i);
            sink += strlen(s);
            free(s);
        }
        double t1 = now_us();
        for (int i = 0; i < n; i++) {
            char *s = oai_chunk_delta(&r, "chatcmpl-12", 1700000000L, " the", 4, false, 123456789012ull + (uint64_t)i);
            sink += s ? strlen(s) : 0;
            free(s);
        }
        double t2 = now_us();
        printf("SSE chunk of one token, us: jansson tree %.2f | gateway (oai_chunk_delta) %.2f\n", (t1 - t0) / n,
               (t2 - t1) / n);
    }
    return sink ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *model = "../shared/models/aidreams260K.gguf";
    int runs = 50, tokens = 100;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--chunk-cost")) return chunk_cost(atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : 100000);
        else { fprintf(stderr, "usage: http_bench [-m MODEL] [--runs N] [--tokens N] | --chunk-cost N\n"); return 2; }
    }
    if (runs < 1 || tokens < 1) { fprintf(stderr, "http_bench: --runs and --tokens must be >= 1\n"); return 2; }
    char dir[] = "/tmp/specd-http-bench-XXXXXX", sock[128], endpoint[160], port[16];
    if (!mkdtemp(dir)) return 1;
    snprintf(sock, sizeof sock, "%s/d.sock", dir);
    snprintf(endpoint, sizeof endpoint, "ipc://%s", sock);
    snprintf(port, sizeof port, "%d", 20000 + getpid() % 20000);
    const char *b = getenv("BUILD");
    char exe[256];
    snprintf(exe, sizeof exe, "%s/specd", b && *b ? b : "build");
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(127);
        execl(exe, exe, "serve", "-m", model, "--socket", sock, "--http", port, "--log-level", "error", (char *)NULL);
        _exit(127);
    }
    specd_client *cl = NULL;
    specd_options o = {.endpoint = endpoint, .connect_timeout_ms = 200};
    for (int i = 0; i < 200 && specd_connect(&o, &cl, NULL); i++) usleep(50000);
    int rc = 1;
    if (!cl) {
        fprintf(stderr, "http_bench: the daemon did not start (%s serve -m %s)\n", exe, model);
        goto out;
    }
    samples ipc_lat = {0}, http_lat = {0}, ipc_ttft = {0}, http_ttft = {0};
    run_ipc(cl, tokens, &ipc_lat, &ipc_ttft); /* warm-up, not counted */
    ipc_lat.n = ipc_ttft.n = 0;
    for (int r = 0; r < runs; r++) { /* interleaved, alternating which goes first */
        if (r % 2 == 0) {
            if (run_ipc(cl, tokens, &ipc_lat, &ipc_ttft) || run_http(atoi(port), tokens, &http_lat, &http_ttft)) goto out;
        } else {
            if (run_http(atoi(port), tokens, &http_lat, &http_ttft) || run_ipc(cl, tokens, &ipc_lat, &ipc_ttft)) goto out;
        }
    }
    double ip50 = pct(ipc_lat.v, ipc_lat.n, 0.5), hp50 = pct(http_lat.v, http_lat.n, 0.5);
    printf("model %s, %d runs x %d tokens, greedy, plain, streamed\n", model, runs, tokens);
    printf("per-token delivery (daemon produced -> client received), us: IPC p50 %.1f p95 %.1f | HTTP p50 %.1f p95 %.1f\n",
           ip50, pct(ipc_lat.v, ipc_lat.n, 0.95), hp50, pct(http_lat.v, http_lat.n, 0.95));
    printf("gateway overhead per token (HTTP p50 - IPC p50): %.1f us\n", hp50 - ip50);
    printf("time to first token, ms: IPC p50 %.3f p95 %.3f | HTTP p50 %.3f p95 %.3f\n", pct(ipc_ttft.v, ipc_ttft.n, 0.5),
           pct(ipc_ttft.v, ipc_ttft.n, 0.95), pct(http_ttft.v, http_ttft.n, 0.5), pct(http_ttft.v, http_ttft.n, 0.95));
    rc = 0;
out:
    specd_close(cl);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(sock);
    rmdir(dir);
    return rc;
}
