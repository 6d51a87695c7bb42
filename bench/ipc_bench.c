/* build/ipc_bench: what the daemon's IPC path costs (docs/benchmarks.md, "daemon IPC").
 *
 *   build/ipc_bench [-m MODEL -z TOK] [--pings N] [--runs N] [--tokens N] [--clients N] [--requests N]
 *                   [--busy N] [--busy-only 1] [--soak SECONDS]
 *
 * Starts `build/specd serve` on a temporary Unix socket with the small shared model, then measures:
 *  1. ping round trip over the Unix socket (p50/p95/p99 of N pings, one client, idle daemon);
 *  2. IPC cost per streamed token: the same greedy request decoded in this process (the engine alone),
 *     through the daemon without streaming, and through the daemon streaming, interleaved run by run;
 *     overhead/token = (fastest streamed wall time - fastest in-process wall time) / tokens; and directly:
 *     each token event carries the daemon's monotonic time when the step produced it, so the client
 *     measures produced -> received -> decoded latency per token (same machine, same clock);
 *  3. N concurrent clients streaming R requests each: errors, lost replies, tokens/s, the gap between
 *     consecutive token events seen by a client (p50/p95).
 * Built by `make build/ipc_bench` (bench/run.sh). */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc/protocol.h"
#include "ipc/transport.h"
#include "base/clock.h"
#include "target/engine.h"
#include "cmd/commands.h"
#include "bench/pct.h"


typedef struct opts {
    const char *model, *tok;
    int pings, runs, tokens, clients, requests;
    int busy, busy_only;       /* phase 4: pings while `busy` streams run; only that phase */
    double soak_s;             /* --soak S: only the soak (make soak), `clients` connections */
    char endpoint[400], sock[300], dir[128];
    const char *prompt;
} opts;

static pid_t start_daemon(opts *o) {
    char specd[512];
    const char *b = getenv("BUILD");
    snprintf(specd, sizeof specd, "%s/specd", b ? b : "build");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s serve --help >/dev/null 2>&1", specd);
    bool exec_ok = access(specd, X_OK) == 0 && system(cmd) == 0;
    char sessions[16];
    snprintf(sessions, sizeof sessions, "%d", o->clients > 4 ? o->clients : 4);
    const char *argv[] = {"serve", "-m", o->model, "--socket", o->sock, "--log-level", "warn",
                          "--max-sessions", sessions, "--queue", "256", "-t", "1", "-z", o->tok, NULL};
    if (!*o->tok) argv[13] = NULL; /* a GGUF model carries its tokenizer */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (exec_ok) {
            const char *av[32];
            av[0] = specd;
            for (int i = 0; argv[i]; i++) av[i + 1] = argv[i], av[i + 2] = NULL;
            execv(specd, (char *const *)av);
            _exit(127);
        }
        _exit(cmd_serve(*o->tok ? 15 : 13, (char **)argv));
    }
    void *ctx = zmq_ctx_new();
    double end = sd_now_s() + 30;
    while (sd_now_s() < end) {
        if (access(o->sock, F_OK) == 0 && sd_ping_endpoint(ctx, o->endpoint, 500)) { zmq_ctx_term(ctx); return pid; }
        if (waitpid(pid, NULL, WNOHANG) == pid) break;
        usleep(20000);
    }
    zmq_ctx_term(ctx);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int send_req(void *s, const sd_request *r) {
    char *buf;
    size_t len;
    if (sd_request_encode(r, &buf, &len, NULL)) return -1;
    int rc = sd_send(s, buf, len, NULL);
    free(buf);
    return rc;
}

static int recv_rep(void *s, sd_reply *r, int timeout_ms) {
    for (;;) {
        char *buf;
        size_t len;
        if (sd_recv(s, timeout_ms, &buf, &len, NULL) != 1) return -1;
        int rc = sd_reply_decode(buf, len, r, NULL);
        free(buf);
        if (rc) return -1;
        if (r->type != SD_REPLY_HEARTBEAT) return 0;
        sd_reply_free(r);
    }
}

static void bench_ping(opts *o, void *ctx) {
    void *s = sd_client_connect(ctx, o->endpoint, NULL);
    double *t = malloc(sizeof(double) * (size_t)o->pings);
    int n = 0;
    sd_request q;
    sd_request_init(&q, SD_OP_PING, 0);
    char *buf;
    size_t len;
    sd_request_encode(&q, &buf, &len, NULL);
    for (int i = 0; i < o->pings + 200; i++) {
        double t0 = sd_now_s();
        if (sd_send(s, buf, len, NULL)) break;
        sd_reply r;
        if (recv_rep(s, &r, 5000)) break;
        double dt = sd_now_s() - t0;
        sd_reply_free(&r);
        if (i >= 200) t[n++] = dt * 1e6; /* the first 200 warm up */
    }
    free(buf);
    printf("ping round trip over %s: n=%d p50=%.1f us p95=%.1f us p99=%.1f us\n", o->endpoint, n, pct(t, n, 0.5),
           pct(t, n, 0.95), pct(t, n, 0.99));
    free(t);
    zmq_close(s);
}

/* One greedy generate through the daemon; returns wall seconds and the token count. */
static double *g_lat; /* one-way token latencies (us) of single-client streaming runs */
static int g_n_lat, g_cap_lat;

static double daemon_gen(opts *o, void *s, uint64_t id, bool stream, int *n_tok) {
    sd_request q;
    sd_request_init(&q, SD_OP_GENERATE, id);
    q.gen.prompt = (char *)o->prompt;
    q.gen.prompt_len = strlen(o->prompt);
    q.gen.max_tokens = o->tokens;
    q.gen.stream = stream;
    q.gen.set = SD_GF_MAX_TOKENS | SD_GF_STREAM | SD_GF_MODE;
    q.gen.mode = SD_PMODE_PLAIN;
    double t0 = sd_now_s();
    if (send_req(s, &q)) return -1;
    for (;;) {
        sd_reply r;
        if (recv_rep(s, &r, 30000)) return -1;
        bool fin = r.type != SD_REPLY_TOKEN;
        if (r.type == SD_REPLY_TOKEN && r.time_us && g_n_lat < g_cap_lat)
            g_lat[g_n_lat++] = sd_now_s() * 1e6 - (double)r.time_us;
        if (r.type == SD_REPLY_DONE) *n_tok = r.n_tokens;
        sd_reply_free(&r);
        if (fin) break;
    }
    return sd_now_s() - t0;
}

static double inproc_gen(opts *o, sd_engine *e, sd_session *sess, int *n_tok) {
    double t0 = sd_now_s();
    int32_t *ids = NULL;
    int n = 0;
    if (sd_tok_encode(e->target->tok, o->prompt, strlen(o->prompt), SD_TOK_ADD_BOS, &ids, &n, NULL)) return -1;
    sd_gen_params p = sd_gen_params_default();
    p.max_tokens = o->tokens;
    p.mode = SD_MODE_PLAIN;
    sd_gen *g;
    if (sd_gen_start(sess, ids, n, &p, &g, NULL)) { free(ids); return -1; }
    while (sd_gen_finish(g) == SD_FINISH_NONE)
        if (sd_gen_step(g, NULL)) break;
    sd_gen_tokens(g, n_tok);
    sd_gen_free(g);
    free(ids);
    return sd_now_s() - t0;
}

static void bench_tokens(opts *o, void *ctx) {
    sd_engine_config ec = {.target_path = o->model, .target_tok = o->tok, .device = "cpu", .n_threads = 1};
    sd_engine *e;
    sd_err err;
    if (sd_engine_open(&ec, &e, &err)) { fprintf(stderr, "ipc_bench: %s\n", err.msg); return; }
    sd_session *sess;
    if (sd_session_new(e, &sess, &err)) { fprintf(stderr, "ipc_bench: %s\n", err.msg); sd_engine_free(e); return; }
    void *s = sd_client_connect(ctx, o->endpoint, NULL);
    double *tin = malloc(sizeof(double) * (size_t)o->runs), *tst = malloc(sizeof(double) * (size_t)o->runs);
    double *tno = malloc(sizeof(double) * (size_t)o->runs);
    int n_in = 0, n_st = 0, n_no = 0;
    g_cap_lat = (o->runs + 5) * (o->tokens + 2);
    g_lat = malloc(sizeof(double) * (size_t)g_cap_lat);
    for (int i = 0; i < o->runs + 5; i++) { /* interleaved; the first 5 warm up */
        double a = inproc_gen(o, e, sess, &n_in);
        double b = daemon_gen(o, s, 2 * (uint64_t)i, true, &n_st);
        double c = daemon_gen(o, s, 2 * (uint64_t)i + 1, false, &n_no);
        if (i >= 5) { tin[i - 5] = a; tst[i - 5] = b; tno[i - 5] = c; }
    }
    /* the fastest run of each kind: on a shared machine the minimum is the least disturbed measurement */
    double min_in = pct(tin, o->runs, 0), min_st = pct(tst, o->runs, 0), min_no = pct(tno, o->runs, 0);
    int n = n_st > 0 ? n_st : 1;
    printf("per-token (%d tokens, greedy, plain, fastest of %d interleaved runs each):\n", n_st, o->runs);
    printf("  in-process engine     %8.1f us/token\n", min_in / n * 1e6);
    printf("  daemon, no streaming  %8.1f us/token\n", min_no / n * 1e6);
    printf("  daemon, streaming     %8.1f us/token\n", min_st / n * 1e6);
    printf("  IPC overhead per streamed token: %.1f us (daemon streaming - in-process); streaming alone adds %.1f us "
           "(streaming - no streaming); one request round trip adds %.1f us\n",
           (min_st - min_in) / n * 1e6, (min_st - min_no) / n * 1e6, (min_no - min_in) * 1e6);
    printf("  token event latency (daemon produced -> client decoded, one client): p50 %.1f us p95 %.1f us "
           "p99 %.1f us (n=%d)\n", pct(g_lat, g_n_lat, 0.5), pct(g_lat, g_n_lat, 0.95), pct(g_lat, g_n_lat, 0.99),
           g_n_lat);
    free(g_lat);
    if (n_in != n_st || n_no != n_st) printf("  warning: token counts differ (%d/%d/%d)\n", n_in, n_st, n_no);
    free(tin); free(tst); free(tno);
    zmq_close(s);
    sd_session_free(sess);
    sd_engine_free(e);
}

typedef struct cl_arg {
    opts *o;
    int idx, errors, lost, dones, tokens;
    double *gaps, *lat;
    int n_gaps, cap_gaps, n_lat;
} cl_arg;

static void *client_thread(void *p) {
    cl_arg *a = p;
    void *ctx = zmq_ctx_new();
    void *s = sd_client_connect(ctx, a->o->endpoint, NULL);
    for (int k = 0; k < a->o->requests; k++) {
        sd_request q;
        sd_request_init(&q, SD_OP_GENERATE, (uint64_t)k);
        q.gen.prompt = (char *)a->o->prompt;
        q.gen.prompt_len = strlen(a->o->prompt);
        q.gen.max_tokens = a->o->tokens;
        q.gen.stream = true;
        q.gen.temperature = 0.8f;
        q.gen.seed = (uint64_t)(a->idx * 1000 + k);
        q.gen.set = SD_GF_MAX_TOKENS | SD_GF_STREAM | SD_GF_TEMPERATURE | SD_GF_SEED;
        if (send_req(s, &q)) { a->errors++; continue; }
        double last = sd_now_s();
        for (;;) {
            sd_reply r;
            if (recv_rep(s, &r, 30000)) { a->lost++; break; }
            double t = sd_now_s();
            if (r.type == SD_REPLY_TOKEN && a->n_gaps < a->cap_gaps) a->gaps[a->n_gaps++] = (t - last) * 1e3;
            if (r.type == SD_REPLY_TOKEN && r.time_us && a->n_lat < a->cap_gaps)
                a->lat[a->n_lat++] = t * 1e6 - (double)r.time_us;
            last = t;
            if (r.type == SD_REPLY_ERROR) a->errors++;
            if (r.type == SD_REPLY_DONE) { a->dones++; a->tokens += r.n_tokens; }
            bool fin = r.type != SD_REPLY_TOKEN;
            sd_reply_free(&r);
            if (fin) break;
        }
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

static void bench_clients(opts *o) {
    int n = o->clients;
    pthread_t *th = calloc((size_t)n, sizeof *th);
    cl_arg *args = calloc((size_t)n, sizeof *args);
    double t0 = sd_now_s();
    for (int i = 0; i < n; i++) {
        args[i].o = o;
        args[i].idx = i;
        args[i].cap_gaps = o->requests * (o->tokens + 2);
        args[i].gaps = malloc(sizeof(double) * (size_t)args[i].cap_gaps);
        args[i].lat = malloc(sizeof(double) * (size_t)args[i].cap_gaps);
        pthread_create(&th[i], NULL, client_thread, &args[i]);
    }
    int errors = 0, lost = 0, dones = 0, tokens = 0, ng = 0, nl = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        errors += args[i].errors; lost += args[i].lost; dones += args[i].dones; tokens += args[i].tokens;
        ng += args[i].n_gaps;
        nl += args[i].n_lat;
    }
    double dt = sd_now_s() - t0;
    double *gaps = malloc(sizeof(double) * (size_t)(ng ? ng : 1)), *lat = malloc(sizeof(double) * (size_t)(nl ? nl : 1));
    int k = 0, kl = 0;
    for (int i = 0; i < n; i++) {
        memcpy(gaps + k, args[i].gaps, sizeof(double) * (size_t)args[i].n_gaps);
        k += args[i].n_gaps;
        memcpy(lat + kl, args[i].lat, sizeof(double) * (size_t)args[i].n_lat);
        kl += args[i].n_lat;
        free(args[i].gaps);
        free(args[i].lat);
    }
    printf("%d concurrent streaming clients x %d requests x %d tokens: %d done, %d errors, %d lost, %.0f tokens/s, "
           "token gap p50 %.2f ms p95 %.2f ms (%.1fs)\n", n, o->requests, o->tokens, dones, errors, lost,
           tokens / dt, pct(gaps, ng, 0.5), pct(gaps, ng, 0.95), dt);
    printf("  token event latency under this load (daemon produced -> client decoded): p50 %.1f us p95 %.1f us\n",
           pct(lat, nl, 0.5), pct(lat, nl, 0.95));
    free(gaps);
    free(lat);
    free(th);
    free(args);
}

/* Phase 4: ping round trips from one more client while `busy` clients stream requests back to back (the
 * socket thread answers pings whatever the engine is doing; a single-threaded loop answers them between
 * turns only). */
static volatile int g_busy_stop;

static void *busy_thread(void *p) {
    cl_arg *a = p;
    void *ctx = zmq_ctx_new();
    void *s = sd_client_connect(ctx, a->o->endpoint, NULL);
    for (uint64_t k = 0; !__atomic_load_n(&g_busy_stop, __ATOMIC_RELAXED); k++) {
        sd_request q;
        sd_request_init(&q, SD_OP_GENERATE, k);
        q.gen.prompt = (char *)a->o->prompt;
        q.gen.prompt_len = strlen(a->o->prompt);
        q.gen.max_tokens = a->o->tokens;
        q.gen.stream = true;
        q.gen.set = SD_GF_MAX_TOKENS | SD_GF_STREAM;
        if (send_req(s, &q)) { a->errors++; break; }
        for (;;) {
            sd_reply r;
            if (recv_rep(s, &r, 30000)) { a->lost++; break; }
            if (r.type == SD_REPLY_ERROR) a->errors++;
            if (r.type == SD_REPLY_TOKEN) __atomic_add_fetch(&a->tokens, r.n_tokens, __ATOMIC_RELAXED);
            if (r.type == SD_REPLY_DONE) a->dones++;
            bool fin = r.type != SD_REPLY_TOKEN;
            sd_reply_free(&r);
            if (fin) break;
        }
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

static void bench_busy_ping(opts *o, void *ctx) {
    int n = o->busy;
    pthread_t *th = calloc((size_t)n, sizeof *th);
    cl_arg *args = calloc((size_t)n, sizeof *args);
    g_busy_stop = 0;
    for (int i = 0; i < n; i++) {
        args[i].o = o;
        args[i].idx = i;
        pthread_create(&th[i], NULL, busy_thread, &args[i]);
    }
    usleep(500000); /* every stream running */
    void *s = sd_client_connect(ctx, o->endpoint, NULL);
    double *t = malloc(sizeof(double) * (size_t)o->pings);
    int k = 0;
    sd_request q;
    sd_request_init(&q, SD_OP_PING, 0);
    char *buf;
    size_t len;
    sd_request_encode(&q, &buf, &len, NULL);
    double t0 = sd_now_s();
    int tok0 = 0;
    for (int i = 0; i < n; i++) tok0 += __atomic_load_n(&args[i].tokens, __ATOMIC_RELAXED);
    while (k < o->pings) {
        double a = sd_now_s();
        if (sd_send(s, buf, len, NULL)) break;
        sd_reply r;
        if (recv_rep(s, &r, 5000)) break;
        t[k++] = (sd_now_s() - a) * 1e6;
        sd_reply_free(&r);
        usleep(1000); /* a ping a millisecond, so the pings sample the engine's turns rather than crowd them */
    }
    double dt = sd_now_s() - t0;
    int tok1 = 0;
    for (int i = 0; i < n; i++) tok1 += __atomic_load_n(&args[i].tokens, __ATOMIC_RELAXED);
    __atomic_store_n(&g_busy_stop, 1, __ATOMIC_RELAXED);
    int errors = 0, lost = 0, dones = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        errors += args[i].errors; lost += args[i].lost; dones += args[i].dones;
    }
    free(buf);
    zmq_close(s);
    printf("ping while %d streams run: n=%d p50=%.1f us p95=%.1f us p99=%.1f us max=%.1f us; streams: %.0f tokens/s "
           "meanwhile, %d done, %d errors, %d lost\n", n, k, pct(t, k, 0.5), pct(t, k, 0.95), pct(t, k, 0.99),
           pct(t, k, 1.0), (tok1 - tok0) / dt, dones, errors, lost);
    free(t);
    free(th);
    free(args);
}

/* ------------------------------------------------------------------ soak (make soak) */

/* --soak S: S seconds of mixed load from `clients` connections (streaming and non-streaming generates,
 * cancels mid-stream, tokenize, pings, connections dropped mid-request) plus one client that sends
 * detokenize requests and never reads a reply. Checks that every request that was not abandoned ends with
 * exactly one final reply (done, error or result) and nothing after it; samples the daemon's RSS every
 * second and a ping every 20 ms. Exit status 1 when a request was lost or answered twice, or RSS grew by
 * 16 MB or more after the first quarter of the run (warm-up: sessions, allocator, ZeroMQ pools). */
typedef struct soak_arg {
    opts *o;
    int idx;
    double end;
    int requests, finals, lost, after_final, errors, busy, abandoned, cancels;
} soak_arg;

static uint64_t soak_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Reads the replies of request id until its final one; counts what does not belong. Returns 0, or -1 when
 * the daemon fell silent. cancel_after: send a cancel (id cancel_id) after that many token events (< 0:
 * never). */
static int soak_wait(soak_arg *a, void *s, uint64_t id, int cancel_after, uint64_t cancel_id) {
    int events = 0, finals_seen = 0;
    bool cancel_pending = false;
    for (;;) {
        sd_reply r;
        if (recv_rep(s, &r, 30000)) { a->lost++; return -1; }
        bool mine = r.id == id, fin = r.type != SD_REPLY_TOKEN;
        if (r.id == cancel_id && r.type == SD_REPLY_RESULT) {
            cancel_pending = false;
            sd_reply_free(&r);
            if (finals_seen) break;
            continue;
        }
        if (!mine) { a->after_final++; sd_reply_free(&r); continue; } /* an earlier request's reply: after its final */
        if (r.type == SD_REPLY_ERROR) { a->errors++; if (!strcmp(r.code, "busy")) a->busy++; }
        if (r.type == SD_REPLY_TOKEN && ++events == cancel_after) {
            sd_request c;
            sd_request_init(&c, SD_OP_CANCEL, cancel_id);
            c.target = id;
            send_req(s, &c);
            cancel_pending = true;
            a->cancels++;
        }
        sd_reply_free(&r);
        if (fin) finals_seen++;
        if (fin && !cancel_pending) break;
    }
    a->finals += finals_seen;
    if (finals_seen > 1) a->after_final += finals_seen - 1;
    return 0;
}

static void *soak_client(void *p) {
    soak_arg *a = p;
    void *ctx = zmq_ctx_new();
    void *s = sd_client_connect(ctx, a->o->endpoint, NULL);
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(a->idx + 1), id = 1;
    while (sd_now_s() < a->end && s) {
        int what = (int)(soak_rand(&rng) % 100);
        sd_request q;
        uint64_t rid = id++;
        if (what < 55) { /* generate: streaming or not, some cancelled, some abandoned with the connection */
            sd_request_init(&q, SD_OP_GENERATE, rid);
            q.gen.prompt = (char *)a->o->prompt;
            q.gen.prompt_len = strlen(a->o->prompt);
            q.gen.max_tokens = 8 + (int)(soak_rand(&rng) % 56);
            q.gen.stream = what < 40;
            q.gen.set = SD_GF_MAX_TOKENS | SD_GF_STREAM;
            if (send_req(s, &q)) break;
            a->requests++;
            if (what < 5) { /* drop the connection mid-request: the daemon must cancel it */
                sd_reply r;
                if (recv_rep(s, &r, 30000) == 0) sd_reply_free(&r);
                zmq_close(s);
                s = sd_client_connect(ctx, a->o->endpoint, NULL);
                a->abandoned++;
                continue;
            }
            int cancel_after = what < 15 ? 2 : -1;
            soak_wait(a, s, rid, cancel_after, id++);
        } else {
            sd_request_init(&q, what < 80 ? SD_OP_TOKENIZE : SD_OP_PING, rid);
            if (q.op == SD_OP_TOKENIZE) {
                q.text = (char *)a->o->prompt;
                q.text_len = strlen(a->o->prompt);
            }
            if (send_req(s, &q)) break;
            a->requests++;
            soak_wait(a, s, rid, -1, 0);
        }
    }
    if (s) zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

/* The client that never reads: a detokenize of 20,000 ids every 50 ms. */
static void *soak_mute(void *p) {
    soak_arg *a = p;
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
    int one = 1, small = 4096, zero = 0;
    zmq_setsockopt(s, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_RCVBUF, &small, sizeof small);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(s, a->o->endpoint);
    sd_request q;
    sd_request_init(&q, SD_OP_DETOKENIZE, 0);
    q.n_tokens = 20000;
    q.tokens = malloc(sizeof *q.tokens * (size_t)q.n_tokens);
    for (int i = 0; q.tokens && i < q.n_tokens; i++) q.tokens[i] = 300 + i % 200;
    while (q.tokens && sd_now_s() < a->end) {
        q.id++;
        char *buf;
        size_t len;
        if (sd_request_encode(&q, &buf, &len, NULL) == 0) {
            zmq_send(s, buf, len, ZMQ_DONTWAIT);
            free(buf);
            a->requests++;
        }
        usleep(50000);
    }
    sd_request_free(&q);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

static long soak_rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static int soak(opts *o, pid_t daemon, void *ctx) {
    int n = o->clients;
    double t0 = sd_now_s(), end = t0 + o->soak_s;
    pthread_t *th = calloc((size_t)n + 1, sizeof *th);
    soak_arg *args = calloc((size_t)n + 1, sizeof *args);
    for (int i = 0; i <= n; i++) {
        args[i] = (soak_arg){.o = o, .idx = i, .end = end};
        pthread_create(&th[i], NULL, i < n ? soak_client : soak_mute, &args[i]);
    }
    void *s = sd_client_connect(ctx, o->endpoint, NULL);
    int cap = (int)(o->soak_s * 60) + 16, np = 0, nr = 0;
    double *pings = malloc(sizeof(double) * (size_t)cap);
    long *rss = malloc(sizeof(long) * ((size_t)o->soak_s + 8));
    sd_request q;
    sd_request_init(&q, SD_OP_PING, 0);
    double next_rss = t0;
    while (sd_now_s() < end && np < cap) {
        double a = sd_now_s();
        q.id++;
        sd_reply r;
        if (send_req(s, &q) == 0 && recv_rep(s, &r, 5000) == 0) {
            pings[np++] = (sd_now_s() - a) * 1e6;
            sd_reply_free(&r);
        }
        if (a >= next_rss && nr < (int)o->soak_s + 8) { rss[nr++] = soak_rss_kb(daemon); next_rss += 1.0; }
        usleep(20000);
    }
    zmq_close(s);
    int req = 0, fin = 0, lost = 0, after = 0, err = 0, busy = 0, ab = 0, canc = 0;
    for (int i = 0; i <= n; i++) {
        pthread_join(th[i], NULL);
        if (i == n) continue;
        req += args[i].requests; fin += args[i].finals; lost += args[i].lost; after += args[i].after_final;
        err += args[i].errors; busy += args[i].busy; ab += args[i].abandoned; canc += args[i].cancels;
    }
    long warm = nr > 4 ? rss[nr / 4] : rss[0], last = nr ? rss[nr - 1] : -1, peak = 0;
    for (int i = nr / 4; i < nr; i++) if (rss[i] > peak) peak = rss[i];
    printf("soak %.0f s, %d clients + 1 that never reads (%d detokenize requests unread):\n", o->soak_s, n,
           args[n].requests);
    printf("  requests %d (cancelled mid-stream %d, abandoned with their connection %d): finals %d, lost %d, "
           "replies after a final %d, errors %d (busy %d)\n", req, canc, ab, fin, lost, after, err, busy);
    printf("  ping every 20 ms: n=%d p50=%.1f us p99=%.1f us max=%.1f us\n", np, pct(pings, np, 0.5),
           pct(pings, np, 0.99), pct(pings, np, 1.0));
    printf("  daemon RSS: %ld kB at 1 s, %ld kB after the first quarter, %ld kB at the end, peak after the first "
           "quarter %ld kB\n", rss[0], warm, last, peak);
    bool ok = lost == 0 && after == 0 && req - ab == fin && peak - warm < 16 * 1024;
    printf("  %s\n", ok ? "ok: every request ended with exactly one final reply, RSS flat"
                        : "FAILED: lost or duplicated replies, or RSS grew by 16 MB or more");
    free(pings);
    free(rss);
    free(th);
    free(args);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    opts o = {.pings = 10000, .runs = 30, .tokens = 100, .clients = 32, .requests = 4, .busy = 8,
              .prompt = "Once upon a time"};
    o.model = "../shared/models/aidreams260K.bin";
    o.tok = "../shared/models/tok512.bin";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "-m")) o.model = v;
        else if (!strcmp(a, "-z")) o.tok = v;
        else if (!strcmp(a, "--pings")) o.pings = atoi(v);
        else if (!strcmp(a, "--runs")) o.runs = atoi(v);
        else if (!strcmp(a, "--tokens")) o.tokens = atoi(v);
        else if (!strcmp(a, "--clients")) o.clients = atoi(v);
        else if (!strcmp(a, "--requests")) o.requests = atoi(v);
        else if (!strcmp(a, "--busy")) o.busy = atoi(v);
        else if (!strcmp(a, "--busy-only")) o.busy_only = atoi(v);
        else if (!strcmp(a, "--soak")) o.soak_s = atof(v);
        else { fprintf(stderr, "ipc_bench: unknown option %s\n", a); return 2; }
    }
    if (o.pings < 1 || o.runs < 1 || o.tokens < 1 || o.clients < 1 || o.requests < 1 || o.busy < 1) {
        fprintf(stderr, "ipc_bench: counts must be >= 1\n");
        return 2;
    }
    if (access(o.model, R_OK) || (*o.tok && access(o.tok, R_OK))) {
        fprintf(stderr, "ipc_bench: model %s / tokenizer %s not readable\n", o.model, o.tok);
        return 1;
    }
    snprintf(o.dir, sizeof o.dir, "/tmp/specd-bench-XXXXXX");
    if (!mkdtemp(o.dir)) { perror("mkdtemp"); return 1; }
    snprintf(o.sock, sizeof o.sock, "%s/bench.sock", o.dir);
    snprintf(o.endpoint, sizeof o.endpoint, "ipc://%s", o.sock);
    pid_t pid = start_daemon(&o);
    if (pid < 0) { fprintf(stderr, "ipc_bench: the daemon did not start\n"); rmdir(o.dir); return 1; }
    void *ctx = zmq_ctx_new();
    if (o.soak_s > 0) {
        int rc = soak(&o, pid, ctx);
        zmq_ctx_term(ctx);
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        rmdir(o.dir);
        return rc;
    }
    if (!o.busy_only) {
        bench_ping(&o, ctx);
        bench_tokens(&o, ctx);
        bench_clients(&o);
    }
    bench_busy_ping(&o, ctx);
    zmq_ctx_term(ctx);
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    rmdir(o.dir);
    printf("daemon exit status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
