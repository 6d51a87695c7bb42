/* Integration tests of `specd serve`: the real daemon on a temporary socket with the small aidreams
 * models, driven over raw ZeroMQ + MessagePack (ipc/protocol.h codecs). Every op, streaming, 32 concurrent
 * clients, cancel, vanished clients, bad input, SIGTERM under load, stale/live sockets, socket mode, and
 * memory staying flat over thousands of requests. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc/curve.h"
#include "ipc/protocol.h"
#include "ipc/transport.h"
#include "base/clock.h"
#include "tests/test.h"
#include "cmd/commands.h"

static char g_dir[256];      /* temporary directory for sockets and logs */
static const char *g_target, *g_tok, *g_draft;
static bool g_exec_ok;       /* build/specd has `serve` (else the child calls cmd_serve directly) */
static char g_specd[512];
/* A synthetic model written by `specd mkmodel` (dim 256, 4 layers, context 4096): a step takes long enough
 * and it runs thousands of tokens without an end-of-generation, so a request is reliably still running
 * when a test cancels it or kills its client. */
static char g_slow[300];
static bool g_have_slow, g_slow_on;

/* ------------------------------------------------------------------ daemon process */

typedef struct daemon {
    pid_t pid;
    char sock[300], endpoint[320], log[300];
} daemon_t;

/* Starts `specd serve` on dir/name.sock with the given extra options (NULL-terminated) and waits until
 * it answers a ping. Returns 0, or -1 (the daemon log is printed). */
static int daemon_start_ep(daemon_t *d, const char *name, const char *const *extra, const char *tcp_endpoint);
static int daemon_start(daemon_t *d, const char *name, const char *const *extra) {
    return daemon_start_ep(d, name, extra, NULL);
}

/* The client keys daemon_start uses to see the daemon answer (a CURVE daemon ignores others); NULL: none. */
static const sd_curve_client *g_curve;

/* 1 when a ping on a fresh connection (with CURVE keys when curve is not NULL) is answered in timeout_ms. */
static int ping_as(void *ctx, const char *endpoint, const sd_curve_client *curve, int timeout_ms) {
    if (!curve) return sd_ping_endpoint(ctx, endpoint, timeout_ms);
    void *s = sd_client_connect_curve(ctx, endpoint, curve, NULL);
    if (!s) return 0;
    sd_request q;
    sd_request_init(&q, SD_OP_PING, 1);
    char *buf, *rb;
    size_t len, rl;
    int ok = 0;
    if (sd_request_encode(&q, &buf, &len, NULL) == 0) {
        if (sd_send(s, buf, len, NULL) == 0 && sd_recv(s, timeout_ms, &rb, &rl, NULL) == 1) { ok = 1; free(rb); }
        free(buf);
    }
    zmq_close(s);
    return ok;
}

/* tcp_endpoint: the daemon listens there (extra must hold the matching --tcp); NULL: the ipc socket. */
static int daemon_start_ep(daemon_t *d, const char *name, const char *const *extra, const char *tcp_endpoint) {
    memset(d, 0, sizeof *d);
    snprintf(d->sock, sizeof d->sock, "%s/%s.sock", g_dir, name);
    if (tcp_endpoint) snprintf(d->endpoint, sizeof d->endpoint, "%s", tcp_endpoint);
    else snprintf(d->endpoint, sizeof d->endpoint, "ipc://%s", d->sock);
    snprintf(d->log, sizeof d->log, "%s/%s.log", g_dir, name);
    const char *argv[64];
    int n = 0;
    argv[n++] = "serve";
    if (g_slow_on) {
        argv[n++] = "-m"; argv[n++] = g_slow;
    } else {
        argv[n++] = "-m"; argv[n++] = g_target;
        argv[n++] = "-z"; argv[n++] = g_tok;
    }
    argv[n++] = "--socket"; argv[n++] = d->sock;
    argv[n++] = "-t"; argv[n++] = "1";
    for (int i = 0; extra && extra[i] && n < 60; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    fflush(NULL);
    d->pid = fork();
    if (d->pid < 0) return -1;
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) { dup2(fd, 2); dup2(fd, 1); close(fd); }
        if (g_exec_ok) {
            const char *av[66];
            av[0] = g_specd;
            for (int i = 0; i <= n; i++) av[i + 1] = argv[i];
            execv(g_specd, (char *const *)av);
            _exit(127);
        }
        _exit(cmd_serve(n, (char **)argv));
    }
    void *ctx = zmq_ctx_new();
    double end = sd_now_s() + 20;
    int ok = 0;
    while (sd_now_s() < end) {
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) { d->pid = 0; break; }
        if ((tcp_endpoint || access(d->sock, F_OK) == 0) && ping_as(ctx, d->endpoint, g_curve, 500)) { ok = 1; break; }
        usleep(20000);
    }
    zmq_ctx_term(ctx);
    if (!ok) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "cat %s >&2", d->log);
        if (system(cmd)) {}
        if (d->pid > 0) { kill(d->pid, SIGKILL); waitpid(d->pid, NULL, 0); d->pid = 0; }
        return -1;
    }
    return 0;
}

/* Sends SIGTERM and waits up to timeout_s; returns the exit status (or -1 if it had to be killed). */
static int daemon_stop(daemon_t *d, double timeout_s) {
    if (d->pid <= 0) return -1;
    kill(d->pid, SIGTERM);
    double end = sd_now_s() + timeout_s;
    int st = 0;
    while (sd_now_s() < end) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) { d->pid = 0; return WIFEXITED(st) ? WEXITSTATUS(st) : -1; }
        usleep(10000);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    return -1;
}

static bool log_contains(const daemon_t *d, const char *needle) {
    FILE *f = fopen(d->log, "r");
    if (!f) return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static int log_count(const daemon_t *d, const char *needle) {
    FILE *f = fopen(d->log, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

/* ------------------------------------------------------------------ client side */

typedef struct client {
    void *ctx, *sock;
} client;

static int cl_open(client *c, const daemon_t *d) {
    c->ctx = zmq_ctx_new();
    c->sock = sd_client_connect(c->ctx, d->endpoint, NULL);
    return c->sock ? 0 : -1;
}
static void cl_close(client *c) {
    if (c->sock) zmq_close(c->sock);
    if (c->ctx) zmq_ctx_term(c->ctx);
    memset(c, 0, sizeof *c);
}

static int cl_send_req(client *c, const sd_request *r) {
    char *buf;
    size_t len;
    sd_err err;
    if (sd_request_encode(r, &buf, &len, &err)) { fprintf(stderr, "  encode: %s\n", err.msg); return -1; }
    int rc = sd_send(c->sock, buf, len, &err);
    free(buf);
    return rc;
}
static int cl_send_raw(client *c, const void *buf, size_t len) { return sd_send(c->sock, buf, len, NULL); }

/* Next reply that is not a heartbeat, within timeout_s. 0 ok, -1 timeout/garbage. */
static int cl_recv(client *c, sd_reply *r, double timeout_s) {
    double end = sd_now_s() + timeout_s;
    for (;;) {
        int left = (int)((end - sd_now_s()) * 1000);
        if (left <= 0) return -1;
        char *buf;
        size_t len;
        if (sd_recv(c->sock, left, &buf, &len, NULL) != 1) return -1;
        sd_err err;
        int rc = sd_reply_decode(buf, len, r, &err);
        free(buf);
        if (rc) { fprintf(stderr, "  bad reply: %s\n", err.msg); return -1; }
        if (r->type == SD_REPLY_HEARTBEAT) { sd_reply_free(r); continue; }
        return 0;
    }
}

static void gen_init(sd_request *r, uint64_t id, const char *prompt, int max_tokens, bool stream) {
    sd_request_init(r, SD_OP_GENERATE, id);
    r->gen.prompt = strdup(prompt);
    r->gen.prompt_len = strlen(prompt);
    r->gen.max_tokens = max_tokens;
    r->gen.stream = stream;
    r->gen.set = SD_GF_MAX_TOKENS | SD_GF_STREAM;
}

/* A finished generate as the client saw it. */
typedef struct gen_out {
    char text[8192];
    size_t text_len;
    int32_t ids[512];
    int n_ids;
    char streamed[8192];   /* concatenated token texts */
    size_t streamed_len;
    int32_t sids[512];
    int n_sids;
    int n_events;
    bool bad_utf8_piece;
    char finish[16];
    char error[32];
    sd_done_stats st;
} gen_out;

/* Records one reply into o; returns 1 when it was the final one. */
static int gen_take(gen_out *o, const sd_reply *r) {
    if (r->type == SD_REPLY_TOKEN) {
        o->n_events++;
        if (!sd_utf8_valid(r->text, r->text_len)) o->bad_utf8_piece = true;
        if (o->streamed_len + r->text_len < sizeof o->streamed) {
            memcpy(o->streamed + o->streamed_len, r->text, r->text_len);
            o->streamed_len += r->text_len;
        }
        for (int i = 0; i < r->n_tokens && o->n_sids < 512; i++) o->sids[o->n_sids++] = r->tokens[i];
        return 0;
    }
    if (r->type == SD_REPLY_DONE) {
        o->text_len = r->text_len < sizeof o->text ? r->text_len : sizeof o->text - 1;
        memcpy(o->text, r->text, o->text_len);
        o->text[o->text_len] = 0;
        o->n_ids = r->n_tokens < 512 ? r->n_tokens : 512;
        memcpy(o->ids, r->tokens, sizeof(int32_t) * (size_t)o->n_ids);
        snprintf(o->finish, sizeof o->finish, "%s", r->finish_reason);
        o->st = r->stats;
        return 1;
    }
    if (r->type == SD_REPLY_ERROR) { snprintf(o->error, sizeof o->error, "%s", r->code); return 1; }
    return 1;
}

/* Runs one generate alone on client c and collects it. */
static int gen_run(client *c, const sd_request *req, gen_out *o) {
    memset(o, 0, sizeof *o);
    if (cl_send_req(c, req)) return -1;
    for (;;) {
        sd_reply r;
        if (cl_recv(c, &r, 30)) return -1;
        if (r.id != req->id) { sd_reply_free(&r); return -1; }
        int fin = gen_take(o, &r);
        sd_reply_free(&r);
        if (fin) return 0;
    }
}

/* One request/reply op (not generate). */
static int op_run(client *c, const sd_request *req, sd_reply *r) {
    if (cl_send_req(c, req)) return -1;
    return cl_recv(c, r, 10);
}

static bool same_gen(const gen_out *a, const gen_out *b) {
    return a->n_ids == b->n_ids && !memcmp(a->ids, b->ids, sizeof(int32_t) * (size_t)a->n_ids) &&
           a->text_len == b->text_len && !memcmp(a->text, b->text, a->text_len);
}

#define NEED_MODELS() do { if (!g_target || !g_tok) SKIP("../shared/models/aidreams260K.bin or tok512.bin missing"); } while (0)

/* ------------------------------------------------------------------ tests */

static void test_ops(void) {
    NEED_MODELS();
    daemon_t d;
    REQUIRE(daemon_start(&d, "ops", NULL) == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    sd_reply r;

    sd_request_init(&q, SD_OP_PING, 1);
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECK(r.type == SD_REPLY_RESULT && r.op == SD_OP_PING && r.id == 1 && r.time_us > 0);
    sd_reply_free(&r);

    sd_request_init(&q, SD_OP_INFO, 2);
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECK(r.type == SD_REPLY_RESULT && r.op == SD_OP_INFO);
    const msgpack_object *vocab = sd_mp_get(r.root, "vocab"), *limits = sd_mp_get(r.root, "limits");
    const msgpack_object *size = sd_mp_get(vocab, "size"), *ctx = sd_mp_get(limits, "ctx");
    CHECK(size && size->type == MSGPACK_OBJECT_POSITIVE_INTEGER && size->via.u64 == 512);
    CHECK(ctx && ctx->type == MSGPACK_OBJECT_POSITIVE_INTEGER && ctx->via.u64 == 128);
    const msgpack_object *proto = sd_mp_get(r.root, "protocol"), *ver = sd_mp_get(r.root, "version");
    CHECK(proto && proto->via.u64 == 1 && ver && ver->type == MSGPACK_OBJECT_STR);
    const msgpack_object *tgt = sd_mp_get(r.root, "target");
    CHECK(tgt && sd_mp_get(tgt, "layers") && sd_mp_get(tgt, "layers")->via.u64 == 4);
    const msgpack_object *mp = sd_mp_get(tgt, "path"); /* absolute, whatever the daemon's directory */
    char path[512] = "";
    if (mp && mp->type == MSGPACK_OBJECT_STR && mp->via.str.size < sizeof path)
        memcpy(path, mp->via.str.ptr, mp->via.str.size);
    CHECKF(path[0] == '/' && access(path, R_OK) == 0, "target path '%s'", path);
    CHECK(sd_mp_get(r.root, "backend") && sd_mp_get(r.root, "defaults"));
    sd_reply_free(&r);

    /* tokenize -> detokenize round trip */
    sd_request_init(&q, SD_OP_TOKENIZE, 3);
    q.text = strdup("Once upon a time");
    q.text_len = strlen(q.text);
    q.add_bos = false;
    REQUIRE(op_run(&c, &q, &r) == 0);
    sd_request_free(&q);
    CHECK(r.type == SD_REPLY_RESULT && r.op == SD_OP_TOKENIZE && r.n_tokens > 0 && r.n_tokens < 16);
    sd_request_init(&q, SD_OP_DETOKENIZE, 4);
    q.n_tokens = r.n_tokens;
    q.tokens = malloc(sizeof(int32_t) * (size_t)q.n_tokens);
    memcpy(q.tokens, r.tokens, sizeof(int32_t) * (size_t)q.n_tokens);
    sd_reply_free(&r);
    REQUIRE(op_run(&c, &q, &r) == 0);
    sd_request_free(&q);
    CHECK(r.type == SD_REPLY_RESULT && r.op == SD_OP_DETOKENIZE);
    CHECKF(r.text_len >= 15 && strstr(r.text, "Once upon a time") != NULL, "detokenized '%.*s'", (int)r.text_len, r.text);
    sd_reply_free(&r);

    /* generate (non-streaming) then stats counts it */
    sd_request_init(&q, SD_OP_GENERATE, 5);
    gen_out o;
    gen_init(&q, 5, "Once upon a time", 20, false);
    REQUIRE(gen_run(&c, &q, &o) == 0);
    sd_request_free(&q);
    CHECK(o.n_events == 0 && !strcmp(o.finish, "length") && o.n_ids == 20 && o.st.generated == 20);
    CHECK(o.text_len > 0 && sd_utf8_valid(o.text, o.text_len));
    CHECK(o.st.prompt_tokens > 1 && o.st.ttft_ms > 0 && o.st.total_ms >= o.st.ttft_ms);

    /* the same prompt again: the session's cached prefix is reused, the output is the same */
    gen_out o2;
    gen_init(&q, 55, "Once upon a time", 20, false);
    REQUIRE(gen_run(&c, &q, &o2) == 0);
    sd_request_free(&q);
    CHECKF(o2.st.prefilled < o2.st.prompt_tokens && o.st.prefilled == o.st.prompt_tokens,
           "first prefilled %d/%d, second %d/%d", o.st.prefilled, o.st.prompt_tokens, o2.st.prefilled,
           o2.st.prompt_tokens);
    CHECKF(o.st.reused == 0 && o2.st.reused == o2.st.prompt_tokens - o2.st.prefilled && !o.st.preempted &&
               !o2.st.preempted,
           "reused %d then %d, preempted %d and %d", o.st.reused, o2.st.reused, o.st.preempted, o2.st.preempted);
    CHECK(same_gen(&o, &o2));

    sd_request_init(&q, SD_OP_STATS, 6);
    REQUIRE(op_run(&c, &q, &r) == 0);
    const msgpack_object *reqs = sd_mp_get(r.root, "requests"), *toks = sd_mp_get(r.root, "tokens");
    CHECK(reqs && sd_mp_get(reqs, "total") && sd_mp_get(reqs, "total")->via.u64 == 2);
    CHECK(sd_mp_get(reqs, "completed")->via.u64 == 2);
    CHECK(toks && sd_mp_get(toks, "generated")->via.u64 == 40);
    CHECK(toks && sd_mp_get(toks, "reused") && sd_mp_get(toks, "reused")->via.u64 == (uint64_t)o2.st.reused);
    CHECK(sd_mp_get(reqs, "preemptions") && sd_mp_get(reqs, "preemptions")->via.u64 == 0);
    const msgpack_object *h = sd_mp_get(sd_mp_get(r.root, "histograms"), "ttft_ms");
    const msgpack_object *counts = sd_mp_get(h, "counts");
    uint64_t sum = 0;
    for (uint32_t i = 0; counts && i < counts->via.array.size; i++) sum += counts->via.array.ptr[i].via.u64;
    CHECK_EQ_INT(sum, 2);
    sd_reply_free(&r);

    /* cancel of an unknown id: found false */
    sd_request_init(&q, SD_OP_CANCEL, 7);
    q.target = 999;
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECK(r.type == SD_REPLY_RESULT && r.op == SD_OP_CANCEL && r.target == 999 && !r.found);
    sd_reply_free(&r);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
    CHECK(access(d.sock, F_OK) != 0); /* socket file removed */
}

static void test_streaming(void) {
    NEED_MODELS();
    daemon_t d;
    const char *extra[] = {g_draft ? "-md" : NULL, g_draft, NULL};
    REQUIRE(daemon_start(&d, "stream", g_draft ? extra : NULL) == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    const char *prompts[] = {"Once upon a time", "The robot", "Data flows", "é ü ß 日本語 🙂"};
    for (int p = 0; p < 4; p++) {
        sd_request q;
        gen_out s, n, plain;
        gen_init(&q, 10 + p, prompts[p], 60, true);
        REQUIRE(gen_run(&c, &q, &s) == 0);
        q.gen.stream = false;
        REQUIRE(gen_run(&c, &q, &n) == 0);
        q.gen.set |= SD_GF_MODE;
        q.gen.mode = SD_PMODE_PLAIN;
        REQUIRE(gen_run(&c, &q, &plain) == 0);
        sd_request_free(&q);
        CHECK(s.error[0] == 0 && s.n_events > 0 && !s.bad_utf8_piece);
        CHECKF(s.streamed_len == s.text_len && !memcmp(s.streamed, s.text, s.text_len), "streamed '%.*s' vs done '%s'",
               (int)s.streamed_len, s.streamed, s.text);
        CHECK(s.n_sids == s.n_ids && !memcmp(s.sids, s.ids, sizeof(int32_t) * (size_t)s.n_ids));
        CHECK(sd_utf8_valid(s.text, s.text_len));
        CHECK(same_gen(&s, &n));                 /* streaming does not change the output */
        CHECKF(same_gen(&s, &plain), "spec '%s' vs plain '%s'", s.text, plain.text); /* greedy spec == plain */
        CHECK(plain.st.mode == SD_PMODE_PLAIN && plain.st.drafted == 0);
        if (g_draft) CHECK(s.st.mode == SD_PMODE_SPEC);
    }
    /* stop string: output ends before it and finish_reason is stop */
    sd_request q;
    gen_out full, stopped;
    gen_init(&q, 30, "Once upon a time", 60, true);
    REQUIRE(gen_run(&c, &q, &full) == 0);
    if (full.text_len > 12) {
        char stop[8];
        memcpy(stop, full.text + 8, 3);
        stop[3] = 0;
        q.gen.set |= SD_GF_STOP;
        q.gen.n_stop = 1;
        q.gen.stop = calloc(1, sizeof(char *));
        q.gen.stop[0] = strdup(stop);
        q.id = 31;
        REQUIRE(gen_run(&c, &q, &stopped) == 0);
        CHECK(!strcmp(stopped.finish, "stop"));
        CHECK(strstr(stopped.text, stop) == NULL && stopped.text_len <= 8 + 2);
        CHECK(stopped.streamed_len == stopped.text_len && !memcmp(stopped.streamed, stopped.text, stopped.text_len));
    }
    sd_request_free(&q);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* ---- 32 concurrent clients ---- */

#define N_CLIENTS 32
#define N_PER 3
#define N_PROMPTS 6
static const char *conc_prompts[N_PROMPTS] = {"Once upon a time", "The robot", "Data flows", "A little bird",
                                              "In the garden", "She said"};
static gen_out solo[N_PROMPTS];

typedef struct conc_arg {
    const daemon_t *d;
    int idx;
    int done, errors, lost, dup, mismatch, bad_order;
} conc_arg;

static int conc_max_tokens(int p) { return 24 + 6 * p; }

static void *conc_client(void *arg) {
    conc_arg *a = arg;
    client c;
    if (cl_open(&c, a->d)) { a->errors = N_PER; return NULL; }
    gen_out outs[N_PER];
    bool finished[N_PER];
    memset(finished, 0, sizeof finished);
    memset(outs, 0, sizeof outs);
    /* all requests of this client in flight at once, ids chosen by the client */
    for (int k = 0; k < N_PER; k++) {
        int p = (a->idx + k) % N_PROMPTS;
        sd_request q;
        gen_init(&q, 1000 + (uint64_t)k, conc_prompts[p], conc_max_tokens(p), (a->idx + k) % 2 == 0);
        cl_send_req(&c, &q);
        sd_request_free(&q);
    }
    int left = N_PER;
    while (left > 0) {
        sd_reply r;
        if (cl_recv(&c, &r, 60)) { a->lost = left; break; }
        int k = (int)r.id - 1000;
        if (k < 0 || k >= N_PER) { a->errors++; sd_reply_free(&r); continue; }
        if (finished[k]) { a->dup++; sd_reply_free(&r); continue; }
        if (gen_take(&outs[k], &r)) {
            finished[k] = true;
            left--;
            int p = (a->idx + k) % N_PROMPTS;
            if (outs[k].error[0]) a->errors++;
            else {
                a->done++;
                if (!same_gen(&outs[k], &solo[p])) a->mismatch++;
                bool stream = (a->idx + k) % 2 == 0;
                if (stream && (outs[k].streamed_len != outs[k].text_len || outs[k].bad_utf8_piece)) a->bad_order++;
                if (!stream && outs[k].n_events) a->bad_order++;
            }
        }
        sd_reply_free(&r);
    }
    /* anything after the last done is a duplicate */
    sd_reply extra;
    if (cl_recv(&c, &extra, 0.2) == 0) { a->dup++; sd_reply_free(&extra); }
    cl_close(&c);
    return NULL;
}

static void test_concurrent_clients(void) {
    NEED_MODELS();
    daemon_t d;
    const char *extra[] = {"--max-sessions", "6", "--queue", "128", g_draft ? "-md" : NULL, g_draft, NULL};
    REQUIRE(daemon_start(&d, "conc", extra) == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    for (int p = 0; p < N_PROMPTS; p++) {   /* each prompt's solo output, one request at a time */
        sd_request q;
        gen_init(&q, (uint64_t)p, conc_prompts[p], conc_max_tokens(p), false);
        REQUIRE(gen_run(&c, &q, &solo[p]) == 0);
        sd_request_free(&q);
        REQUIRE(solo[p].error[0] == 0);
    }
    cl_close(&c);
    pthread_t th[N_CLIENTS];
    conc_arg args[N_CLIENTS];
    double t0 = sd_now_s();
    for (int i = 0; i < N_CLIENTS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].d = &d;
        args[i].idx = i;
        pthread_create(&th[i], NULL, conc_client, &args[i]);
    }
    int done = 0, errors = 0, lost = 0, dup = 0, mismatch = 0, bad = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        pthread_join(th[i], NULL);
        done += args[i].done; errors += args[i].errors; lost += args[i].lost;
        dup += args[i].dup; mismatch += args[i].mismatch; bad += args[i].bad_order;
    }
    fprintf(stderr, "  %d clients x %d requests: %d done in %.2fs\n", N_CLIENTS, N_PER, done, sd_now_s() - t0);
    CHECK_EQ_INT(done, N_CLIENTS * N_PER);
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(lost, 0);
    CHECK_EQ_INT(dup, 0);
    CHECK_EQ_INT(mismatch, 0);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

static void test_busy_and_queue(void) {
    if (!g_have_slow) SKIP("specd mkmodel could not write the synthetic model");
    daemon_t d;
    const char *extra[] = {"--max-sessions", "1", "--queue", "1", NULL};
    g_slow_on = true;   /* requests that surely still run when the next ones arrive */
    int started = daemon_start(&d, "busy", extra);
    g_slow_on = false;
    REQUIRE(started == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    for (int i = 0; i < 3; i++) {
        sd_request q;
        gen_init(&q, 50 + (uint64_t)i, "Once upon a time", 100, false);
        cl_send_req(&c, &q);
        sd_request_free(&q);
    }
    /* the third finds the session busy and the queue full: `busy` at once, before the others finish */
    int done = 0, busy = 0;
    uint64_t busy_id = 0;
    for (int i = 0; i < 3; i++) {
        sd_reply r;
        if (cl_recv(&c, &r, 30)) break;
        if (r.type == SD_REPLY_ERROR && !strcmp(r.code, SD_E_BUSY)) {
            busy++;
            busy_id = r.id;
            CHECK(done == 0);
            CHECK(r.retry_after_ms > 0);
        } else if (r.type == SD_REPLY_DONE) {
            done++;
            if (r.id == 51) CHECK(r.stats.queue_ms > 0);
        }
        sd_reply_free(&r);
    }
    CHECK_EQ_INT(busy, 1);
    CHECK_EQ_INT(busy_id, 52);
    CHECK_EQ_INT(done, 2);
    /* duplicate id while in flight */
    sd_request q;
    gen_init(&q, 60, "The robot", 100, false);
    cl_send_req(&c, &q);
    cl_send_req(&c, &q);
    sd_request_free(&q);
    /* another op may not reuse it either: the client would get two final replies with one id */
    sd_request_init(&q, SD_OP_TOKENIZE, 60);
    q.text = strdup("hi");
    q.text_len = 2;
    cl_send_req(&c, &q);
    sd_request_free(&q);
    sd_reply r;
    for (int i = 0; i < 2; i++) {
        REQUIRE(cl_recv(&c, &r, 30) == 0);
        CHECKF(r.type == SD_REPLY_ERROR && !strcmp(r.code, SD_E_DUPLICATE_ID) && r.id == 60, "reply %d: %s %s", i,
               sd_reply_type_name(r.type), r.code);
        sd_reply_free(&r);
    }
    REQUIRE(cl_recv(&c, &r, 30) == 0);
    CHECK(r.type == SD_REPLY_DONE && r.id == 60);
    sd_reply_free(&r);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

static void test_cancel(void) {
    if (!g_have_slow) SKIP("specd mkmodel could not write the synthetic model");
    daemon_t d;
    const char *extra[] = {"--max-sessions", "1", "--queue", "4", NULL};
    g_slow_on = true;
    int started = daemon_start(&d, "cancel", extra);
    g_slow_on = false;
    REQUIRE(started == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    gen_init(&q, 70, "Once upon a time", 3000, true);
    cl_send_req(&c, &q);
    sd_request_free(&q);
    gen_init(&q, 71, "The robot", 3000, false); /* queued behind 70 */
    cl_send_req(&c, &q);
    sd_request_free(&q);
    sd_reply r;
    REQUIRE(cl_recv(&c, &r, 30) == 0);
    CHECK(r.type == SD_REPLY_TOKEN && r.id == 70);
    sd_reply_free(&r);
    sd_request_init(&q, SD_OP_CANCEL, 72);
    q.target = 71;               /* the queued one */
    cl_send_req(&c, &q);
    q.id = 73;
    q.target = 70;               /* the running one */
    cl_send_req(&c, &q);
    bool got71 = false, got70 = false, res72 = false, res73 = false;
    int tokens_after = 0, extra_done = 0;
    for (int i = 0; i < 300 && !(got70 && got71 && res72 && res73); i++) {
        if (cl_recv(&c, &r, 10)) break;
        if (r.type == SD_REPLY_RESULT && r.id == 72) { res72 = true; CHECK(r.found); }
        else if (r.type == SD_REPLY_RESULT && r.id == 73) { res73 = true; CHECK(r.found); }
        else if (r.type == SD_REPLY_DONE && r.id == 71) {
            if (got71) extra_done++;
            got71 = true;
            CHECK(!strcmp(r.finish_reason, "cancelled") && r.n_tokens == 0);
        } else if (r.type == SD_REPLY_DONE && r.id == 70) {
            if (got70) extra_done++;
            got70 = true;
            CHECK(!strcmp(r.finish_reason, "cancelled"));
            CHECK(r.n_tokens < 3000);
        } else if (r.type == SD_REPLY_TOKEN && r.id == 70 && res73) tokens_after++;
        sd_reply_free(&r);
    }
    CHECK(got70 && got71 && res72 && res73);
    /* Stops within a step: the front sends what the engine made before answering, so only the step that
     * was running and, if a turn began between that and the hand-over, the next one can follow. */
    CHECKF(tokens_after <= 2, "%d token replies after the cancel's answer", tokens_after);
    CHECK_EQ_INT(extra_done, 0);
    /* the daemon is free again: a new request runs at once */
    gen_out o;
    gen_init(&q, 74, "Data flows", 5, false);
    REQUIRE(gen_run(&c, &q, &o) == 0);
    sd_request_free(&q);
    CHECK(!strcmp(o.finish, "length") && o.st.queue_ms < 1000);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* Reads stats; returns requests.<key> or -1. */
static long stat_req(client *c, const char *key) {
    sd_request q;
    sd_request_init(&q, SD_OP_STATS, 9999);
    sd_reply r;
    if (op_run(c, &q, &r)) return -1;
    const msgpack_object *v = sd_mp_get(sd_mp_get(r.root, "requests"), key);
    long x = v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long)v->via.u64 : -1;
    sd_reply_free(&r);
    return x;
}

/* A child process that sends one generate and dies without closing anything: streaming, after the
 * first token; or not streaming, once a ping answered after the generate proves the daemon has it. */
static void killed_child(const daemon_t *d, bool stream) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return;
    if (pid == 0) {
        client c;
        if (cl_open(&c, d)) _exit(2);
        sd_request q;
        gen_init(&q, 1, "Once upon a time", 3000, stream);
        cl_send_req(&c, &q);
        sd_reply r;
        if (!stream) {
            sd_request p;
            sd_request_init(&p, SD_OP_PING, 2);
            cl_send_req(&c, &p);
        }
        if (cl_recv(&c, &r, 20) == 0) sd_reply_free(&r);
        _exit(0); /* no close, no linger: the process just vanishes */
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_client_killed(void) {
    if (!g_have_slow) SKIP("specd mkmodel could not write the synthetic model");
    daemon_t d;
    /* two sessions: the streaming child's request and one non-streaming child's run, the other waits */
    const char *extra[] = {"--max-sessions", "2", "--queue", "64", NULL};
    g_slow_on = true;
    int started = daemon_start(&d, "killed", extra);
    g_slow_on = false;
    REQUIRE(started == 0);
    client h;
    REQUIRE(cl_open(&h, &d) == 0);
    killed_child(&d, true);
    killed_child(&d, false);
    killed_child(&d, false);
    /* another client is served meanwhile (its short requests queue behind the children's) */
    const int n_help = 4;
    for (int i = 0; i < n_help; i++) {
        sd_request q;
        gen_init(&q, 100 + (uint64_t)i, conc_prompts[i % N_PROMPTS], 5, false);
        cl_send_req(&h, &q);
        sd_request_free(&q);
    }
    int helper_done = 0;
    for (int i = 0; i < n_help; i++) {
        sd_reply r;
        if (cl_recv(&h, &r, 60)) break;
        helper_done += r.type == SD_REPLY_DONE;
        sd_reply_free(&r);
    }
    CHECK_EQ_INT(helper_done, n_help);   /* the other client is served throughout */
    /* every request ended and every session is free again */
    long active = -1, queued = -1;
    double end = sd_now_s() + 15;
    while (sd_now_s() < end) {
        active = stat_req(&h, "active");
        queued = stat_req(&h, "queued");
        if (active == 0 && queued == 0) break;
        usleep(50000);
    }
    CHECK_EQ_INT(active, 0);
    CHECK_EQ_INT(queued, 0);
    long vanished = stat_req(&h, "vanished"), completed = stat_req(&h, "completed"), total = stat_req(&h, "total");
    CHECKF(vanished + completed == n_help + 3 && total == n_help + 3 && vanished >= 2,
           "vanished %ld completed %ld total %ld", vanished, completed, total);
    CHECK_EQ_INT(vanished, 3);
    CHECK(log_contains(&d, "has disconnected"));
    cl_close(&h);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* One raw message; expects an error reply with code (and field when not NULL). */
static void expect_raw_error(client *c, const void *buf, size_t len, const char *code, const char *field) {
    REQUIRE(cl_send_raw(c, buf, len) == 0);
    sd_reply r;
    REQUIRE(cl_recv(c, &r, 10) == 0);
    CHECKF(r.type == SD_REPLY_ERROR && !strcmp(r.code, code), "got %s %s (%s), expected %s",
           sd_reply_type_name(r.type), r.code, r.message, code);
    if (field) CHECKF(!strcmp(r.field, field) && strstr(r.message, field), "field '%s' msg '%s', expected %s", r.field,
                      r.message, field);
    CHECK(r.message[0] != 0);
    sd_reply_free(&r);
}

static void pack_head(msgpack_packer *pk, int n_extra, uint64_t id, const char *op) {
    msgpack_pack_map(pk, (size_t)(3 + n_extra));
    sd_pack_kv_uint(pk, "v", 1);
    sd_pack_kv_uint(pk, "id", id);
    sd_pack_kv_str(pk, "op", op);
}

static void test_bad_input(void) {
    NEED_MODELS();
    daemon_t d;
    REQUIRE(daemon_start(&d, "bad", NULL) == 0);
    client c, other;
    REQUIRE(cl_open(&c, &d) == 0);
    REQUIRE(cl_open(&other, &d) == 0);
    /* another client keeps a long stream going through all of it */
    sd_request q;
    gen_init(&q, 1, "Once upon a time", 100, true);
    cl_send_req(&other, &q);
    sd_request_free(&q);

    expect_raw_error(&c, "\xc1\xff\x00", 3, SD_E_BAD_MESSAGE, NULL);
    expect_raw_error(&c, "\x93\x01\x02\x03", 4, SD_E_BAD_MESSAGE, NULL);   /* an array, not a map */
    expect_raw_error(&c, "\x2a", 1, SD_E_BAD_MESSAGE, NULL);               /* an integer */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
#define RESET() msgpack_sbuffer_clear(&sb)
    RESET(); pack_head(&pk, 0, 2, "launch");
    expect_raw_error(&c, sb.data, sb.size, SD_E_UNKNOWN_OP, "op");
    RESET(); msgpack_pack_map(&pk, 3); sd_pack_kv_uint(&pk, "v", 7); sd_pack_kv_uint(&pk, "id", 3); sd_pack_kv_str(&pk, "op", "ping");
    expect_raw_error(&c, sb.data, sb.size, SD_E_BAD_VERSION, "v");
    RESET(); pack_head(&pk, 2, 4, "generate"); sd_pack_kv_str(&pk, "prompt", "x");
    sd_pack_kv_str(&pk, "max_tokens", "ten");
    expect_raw_error(&c, sb.data, sb.size, SD_E_BAD_TYPE, "max_tokens");
    RESET(); pack_head(&pk, 1, 5, "generate"); sd_pack_kv_int(&pk, "max_tokens", 3);
    expect_raw_error(&c, sb.data, sb.size, SD_E_MISSING_FIELD, "prompt");
    RESET(); pack_head(&pk, 1, 6, "generate"); sd_pack_cstr(&pk, "prompt"); msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "\xff\xfe", 2);
    expect_raw_error(&c, sb.data, sb.size, SD_E_BAD_UTF8, "prompt");
    RESET(); pack_head(&pk, 2, 7, "generate"); sd_pack_kv_str(&pk, "prompt", "x"); sd_pack_cstr(&pk, "stop");
    msgpack_pack_array(&pk, 1); msgpack_pack_str(&pk, 1); msgpack_pack_str_body(&pk, "\xc3", 1);
    expect_raw_error(&c, sb.data, sb.size, SD_E_BAD_UTF8, "stop[0]");
    /* max_tokens above what the context (128) holds means "at most": it ends at the context, "length" */
    RESET(); pack_head(&pk, 2, 8, "generate"); sd_pack_kv_str(&pk, "prompt", "x"); sd_pack_kv_int(&pk, "max_tokens", 100000);
    {
        REQUIRE(cl_send_raw(&c, sb.data, sb.size) == 0);
        sd_reply r;
        REQUIRE(cl_recv(&c, &r, 30) == 0);
        CHECKF(r.type == SD_REPLY_DONE && !strcmp(r.finish_reason, "length"), "got %s %s %s",
               sd_reply_type_name(r.type), r.code, r.finish_reason);
        CHECK(r.stats.generated > 0 && r.stats.prompt_tokens + r.stats.generated <= 128);
        sd_reply_free(&r);
    }
    /* a prompt longer than the context: 200 token ids, and a long text */
    RESET(); pack_head(&pk, 1, 9, "generate"); sd_pack_cstr(&pk, "tokens"); msgpack_pack_array(&pk, 200);
    for (int i = 0; i < 200; i++) msgpack_pack_int(&pk, 100 + i);
    expect_raw_error(&c, sb.data, sb.size, SD_E_TOO_LONG, "tokens");
    {
        char text[4000];
        for (int i = 0; i < 3999; i++) text[i] = "abc de"[i % 6];
        text[3999] = 0;
        RESET(); pack_head(&pk, 1, 10, "generate"); sd_pack_kv_str(&pk, "prompt", text);
        expect_raw_error(&c, sb.data, sb.size, SD_E_TOO_LONG, "prompt");
    }
    /* a token id beyond the vocabulary */
    RESET(); pack_head(&pk, 1, 11, "detokenize"); sd_pack_cstr(&pk, "tokens"); msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 1); msgpack_pack_int(&pk, 5000);
    expect_raw_error(&c, sb.data, sb.size, SD_E_OUT_OF_RANGE, "tokens[1]");
    RESET(); pack_head(&pk, 2, 12, "generate"); sd_pack_kv_str(&pk, "prompt", "x"); sd_pack_kv_int(&pk, "draft_max", 40);
    expect_raw_error(&c, sb.data, sb.size, SD_E_OUT_OF_RANGE, "draft_max");
    /* two frames in one message */
    RESET(); pack_head(&pk, 0, 13, "ping");
    REQUIRE(zmq_send(c.sock, sb.data, sb.size, ZMQ_SNDMORE) >= 0);
    expect_raw_error(&c, sb.data, sb.size, SD_E_BAD_MESSAGE, NULL);
    msgpack_sbuffer_destroy(&sb);

    /* an oversized message: ZeroMQ drops that connection (no reply possible); the daemon logs it */
    client big;
    REQUIRE(cl_open(&big, &d) == 0);
    int64_t unlimited = -1;
    zmq_setsockopt(big.sock, ZMQ_MAXMSGSIZE, &unlimited, sizeof unlimited);
    sd_reply r;
    sd_request_init(&q, SD_OP_PING, 14);
    REQUIRE(op_run(&big, &q, &r) == 0);   /* connected and known to the daemon */
    sd_reply_free(&r);
    usleep(100000);
    int closed_before = log_count(&d, "connection closed");
    size_t n = SD_PROTO_MAX_MSG_BYTES + 1024;
    char *huge = calloc(1, n);
    REQUIRE(huge);
    REQUIRE(cl_send_raw(&big, huge, n) == 0);
    free(huge);
    CHECK(cl_recv(&big, &r, 1.0) != 0);   /* nothing comes back */
    /* the client still has its socket open: a new "connection closed" line is ZeroMQ dropping it */
    double end = sd_now_s() + 5;
    while (sd_now_s() < end && log_count(&d, "connection closed") <= closed_before) usleep(50000);
    CHECK(log_count(&d, "connection closed") > closed_before);
    cl_close(&big);

    /* everyone else is still served: ping, and the long stream completes correctly */
    sd_request_init(&q, SD_OP_PING, 15);
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECK(r.type == SD_REPLY_RESULT && r.op == SD_OP_PING);
    sd_reply_free(&r);
    gen_out o;
    memset(&o, 0, sizeof o);
    for (;;) {
        if (cl_recv(&other, &r, 30)) break;
        int fin = gen_take(&o, &r);
        sd_reply_free(&r);
        if (fin) break;
    }
    CHECKF(!strcmp(o.finish, "length") && o.n_ids == 100 && o.streamed_len == o.text_len, "finish '%s' error '%s' %d ids",
           o.finish, o.error, o.n_ids);
    cl_close(&c);
    cl_close(&other);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

typedef struct load_arg { const daemon_t *d; int idx; int dones, cancelled, errors, lost; } load_arg;
static int g_load_started; /* token events seen by the load clients (atomic) */
static void *load_client(void *arg) {
    load_arg *a = arg;
    client c;
    if (cl_open(&c, a->d)) { a->errors++; return NULL; }
    sd_request q;
    gen_init(&q, 1, conc_prompts[a->idx % N_PROMPTS], 2000, true);
    cl_send_req(&c, &q);
    sd_request_free(&q);
    sd_request_init(&q, SD_OP_PING, 2);  /* its answer proves the daemon has the generate */
    cl_send_req(&c, &q);
    for (;;) {
        sd_reply r;
        if (cl_recv(&c, &r, 20)) { a->lost++; break; }
        if (r.type == SD_REPLY_RESULT) {
            __atomic_add_fetch(&g_load_started, 1, __ATOMIC_SEQ_CST);
            sd_reply_free(&r);
            continue;
        }
        if (r.type == SD_REPLY_DONE) {
            a->dones++;
            if (!strcmp(r.finish_reason, "cancelled")) a->cancelled++;
        } else if (r.type == SD_REPLY_ERROR) a->errors++;
        bool fin = r.type != SD_REPLY_TOKEN;
        sd_reply_free(&r);
        if (fin) break;
    }
    cl_close(&c);
    return NULL;
}

static void test_sigterm_under_load(void) {
    if (!g_have_slow) SKIP("specd mkmodel could not write the synthetic model");
    daemon_t d;
    const char *extra[] = {"--max-sessions", "4", "--queue", "16", NULL};
    g_slow_on = true;
    int started = daemon_start(&d, "term", extra);
    g_slow_on = false;
    REQUIRE(started == 0);
    pthread_t th[8];
    load_arg args[8];
    for (int i = 0; i < 8; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].d = &d;
        args[i].idx = i;
        pthread_create(&th[i], NULL, load_client, &args[i]);
    }
    /* SIGTERM once the daemon has all 8 requests: 4 run, the others wait in the queue */
    double t_end = sd_now_s() + 20;
    while (__atomic_load_n(&g_load_started, __ATOMIC_SEQ_CST) < 8 && sd_now_s() < t_end) usleep(200);
    pid_t pid = d.pid;
    kill(pid, SIGTERM);
    int st = 0;
    double end = sd_now_s() + 15;
    bool exited = false;
    while (sd_now_s() < end) {
        if (waitpid(pid, &st, WNOHANG) == pid) { exited = true; break; }
        usleep(10000);
    }
    if (!exited) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); }
    d.pid = 0;
    int dones = 0, cancelled = 0, errors = 0, lost = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        dones += args[i].dones; cancelled += args[i].cancelled; errors += args[i].errors; lost += args[i].lost;
    }
    CHECK(exited && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ_INT(dones, 8);        /* every in-flight request ended with done, cancelled */
    CHECK_EQ_INT(cancelled, 8);
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(lost, 0);
    CHECK(access(d.sock, F_OK) != 0);
}

static void test_grace(void) {
    if (!g_have_slow) SKIP("specd mkmodel could not write the synthetic model");
    daemon_t d;
    const char *extra[] = {"--grace", "60", NULL};
    g_slow_on = true;
    int started = daemon_start(&d, "grace", extra);
    g_slow_on = false;
    REQUIRE(started == 0);
    client c, late;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    gen_init(&q, 1, "Once upon a time", 500, true);
    cl_send_req(&c, &q);
    sd_request_free(&q);
    sd_reply r;
    REQUIRE(cl_recv(&c, &r, 10) == 0);
    sd_reply_free(&r);
    kill(d.pid, SIGTERM);
    usleep(50000);
    /* new requests are refused while the running one finishes */
    REQUIRE(cl_open(&late, &d) == 0);
    gen_init(&q, 2, "The robot", 5, false);
    cl_send_req(&late, &q);
    sd_request_free(&q);
    REQUIRE(cl_recv(&late, &r, 20) == 0);
    CHECK(r.type == SD_REPLY_ERROR && !strcmp(r.code, SD_E_SHUTTING_DOWN));
    sd_reply_free(&r);
    gen_out o;
    memset(&o, 0, sizeof o);
    for (;;) {
        if (cl_recv(&c, &r, 60)) break;
        int fin = gen_take(&o, &r);
        sd_reply_free(&r);
        if (fin) break;
    }
    CHECKF(!strcmp(o.finish, "length") && o.n_ids == 500, "finish %s error %s %d ids", o.finish, o.error, o.n_ids);
    cl_close(&c);
    cl_close(&late);
    int st;
    double end = sd_now_s() + 10;
    int rc = -1;
    while (sd_now_s() < end) {
        if (waitpid(d.pid, &st, WNOHANG) == d.pid) { rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1; d.pid = 0; break; }
        usleep(10000);
    }
    if (d.pid > 0) { kill(d.pid, SIGKILL); waitpid(d.pid, NULL, 0); }
    CHECK_EQ_INT(rc, 0);
}

static void test_stale_and_live_socket(void) {
    NEED_MODELS();
    /* a stale socket file: bound by a process that is gone */
    char path[300];
    snprintf(path, sizeof path, "%s/stale.sock", g_dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    REQUIRE(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    REQUIRE(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    close(fd);
    REQUIRE(access(path, F_OK) == 0);
    daemon_t d;
    REQUIRE(daemon_start(&d, "stale", NULL) == 0);   /* replaces it */
    CHECK(log_contains(&d, "stale"));
    /* a second daemon on the same socket refuses to start, before loading its model (a missing file here:
     * the message must be about the socket), and the first keeps serving */
    daemon_t d2 = d;
    snprintf(d2.log, sizeof d2.log, "%s/stale2.log", g_dir);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int lfd = open(d2.log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (lfd >= 0) { dup2(lfd, 2); close(lfd); }
        const char *argv[] = {"serve", "-m", "/nonexistent/model.gguf", "--socket", d.sock, "-t", "1", NULL};
        if (g_exec_ok) {
            const char *av[] = {g_specd, "serve", "-m", "/nonexistent/model.gguf", "--socket", d.sock, "-t", "1", NULL};
            execv(g_specd, (char *const *)av);
            _exit(127);
        }
        _exit(cmd_serve(7, (char **)argv));
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    CHECK(log_contains(&d2, "already serving"));
    CHECK(access(d.sock, F_OK) == 0);   /* the refused daemon did not remove the live socket */
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    sd_request_init(&q, SD_OP_PING, 1);
    sd_reply r;
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECK(r.type == SD_REPLY_RESULT);
    sd_reply_free(&r);
    cl_close(&c);
    /* a killed daemon leaves its socket file; the next one starts over it */
    kill(d.pid, SIGKILL);
    waitpid(d.pid, NULL, 0);
    d.pid = 0;
    CHECK(access(d.sock, F_OK) == 0);
    daemon_t d3;
    REQUIRE(daemon_start(&d3, "stale", NULL) == 0);
    CHECK_EQ_INT(daemon_stop(&d3, 10), 0);
}

/* Waits up to timeout_s for d to end; its wait status, or -1 when it is still running (then killed). */
static int wait_end(daemon_t *d, double timeout_s) {
    int st = 0;
    for (double end = sd_now_s() + timeout_s; sd_now_s() < end; usleep(10000))
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) { d->pid = 0; return st; }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    return -1;
}

/* SIGHUP and SIGUSR1 log statistics, SIGALRM and SIGUSR2 do nothing, SIGQUIT stops cleanly; a signal
 * that ends the daemon still removes its socket file (only SIGKILL leaves one, see the test above). */
static void test_signals(void) {
    daemon_t d;
    REQUIRE(daemon_start(&d, "signals", NULL) == 0);
    int harmless[] = {SIGHUP, SIGUSR1, SIGALRM, SIGUSR2};
    for (size_t i = 0; i < sizeof harmless / sizeof harmless[0]; i++) {
        kill(d.pid, harmless[i]);
        usleep(50000);
        CHECKF(waitpid(d.pid, NULL, WNOHANG) == 0, "signal %d ended the daemon", harmless[i]);
    }
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    sd_request_init(&q, SD_OP_PING, 1);
    sd_reply r;
    CHECK(op_run(&c, &q, &r) == 0 && r.type == SD_REPLY_RESULT);
    sd_reply_free(&r);
    cl_close(&c);
    CHECK(log_contains(&d, "stats: up"));
    kill(d.pid, SIGQUIT);
    int st = wait_end(&d, 10);
    CHECKF(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGQUIT: status %d", st);
    CHECK(access(d.sock, F_OK) != 0);
    int fatal[] = {SIGPWR, SIGXCPU, SIGRTMIN + 3};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
        REQUIRE(daemon_start(&d, "signals", NULL) == 0);
        kill(d.pid, fatal[i]);
        st = wait_end(&d, 10);
        CHECKF(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == fatal[i], "signal %d: status %d", fatal[i], st);
        CHECKF(access(d.sock, F_OK) != 0, "signal %d left the socket file", fatal[i]);
    }
}

/* Runs `specd mkmodel` with the NULL-terminated arguments av in a child (quietly); 0 when it succeeded. */
static int run_mkmodel(const char *const *av) {
    int n = 0;
    while (av[n]) n++;
    fflush(NULL);
    pid_t mk = fork();
    if (mk == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        _exit(cmd_mkmodel(n, (char **)av));
    }
    int st = 0;
    if (mk < 0 || waitpid(mk, &st, 0) != mk) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* No reply exceeds the 4 MiB message limit the clients enforce: detokenize of 200,000 copies of a long
 * token (megabytes of text) is answered with reply_too_large, and the connection stays usable (before,
 * the daemon sent the whole text and the client dropped the connection). */
static void test_reply_limit(void) {
    const char *voc = shared_path("vocab/ggml-vocab-deepseek-coder.gguf");
    if (!voc) SKIP("ggml-vocab-deepseek-coder.gguf not in ../shared/vocab");
    char model[300], saved[300];
    snprintf(model, sizeof model, "%s/longvocab.gguf", g_dir);
    const char *av[] = {"mkmodel", "--preset", "tiny", "--vocab-from", voc, "-o", model, NULL};
    REQUIRE(run_mkmodel(av) == 0);
    snprintf(saved, sizeof saved, "%s", g_slow);
    snprintf(g_slow, sizeof g_slow, "%s", model);
    g_slow_on = true;
    daemon_t d;
    int started = daemon_start(&d, "replylimit", NULL);
    g_slow_on = false;
    snprintf(g_slow, sizeof g_slow, "%s", saved);
    REQUIRE(started == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    const int32_t longest = 8653; /* 128 bytes in the vocabulary: the longest token of deepseek-coder */
    sd_request q;
    sd_reply r;
    sd_request_init(&q, SD_OP_DETOKENIZE, 1);
    q.tokens = malloc(200000 * sizeof *q.tokens);
    REQUIRE(q.tokens);
    q.n_tokens = 1;
    q.tokens[0] = longest;
    REQUIRE(op_run(&c, &q, &r) == 0);
    size_t one = r.text_len;
    sd_reply_free(&r);
    REQUIRE(one >= 32); /* 200,000 copies are then above 4 MiB */
    for (int i = 0; i < 200000; i++) q.tokens[i] = longest;
    q.n_tokens = 200000;
    q.id = 2;
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECKF(r.type == SD_REPLY_ERROR && !strcmp(r.code, SD_E_REPLY_TOO_LARGE) && r.id == 2, "%s %s: %s",
           sd_reply_type_name(r.type), r.code, r.message);
    sd_reply_free(&r);
    sd_request_free(&q);
    sd_request_init(&q, SD_OP_PING, 3);
    CHECK(op_run(&c, &q, &r) == 0 && r.type == SD_REPLY_RESULT && r.id == 3);
    sd_reply_free(&r);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* One datagram from the notify socket within timeout_ms into buf (NUL-terminated); its length or -1. */
static int recv_notify(int fd, char *buf, size_t cap, int timeout_ms) {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(fd, buf, cap - 1, 0);
    if (n < 0) return -1;
    buf[n] = 0;
    return (int)n;
}

/* systemd Type=notify: READY=1 once the socket answers, STOPPING=1 on SIGTERM, through $NOTIFY_SOCKET. */
static void test_systemd_notify(void) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    REQUIRE(strlen(g_dir) + 20 < sizeof a.sun_path);
    char *path = a.sun_path;
    strcat(strcpy(path, g_dir), "/systemd-notify");
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    REQUIRE(fd >= 0);
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    setenv("NOTIFY_SOCKET", path, 1);
    daemon_t d;
    int started = daemon_start(&d, "notify", NULL);
    unsetenv("NOTIFY_SOCKET");
    REQUIRE(started == 0);
    char buf[1024];
    CHECKF(recv_notify(fd, buf, sizeof buf, 5000) > 0 && !strncmp(buf, "READY=1\n", 8) && strstr(buf, d.sock),
           "notify message '%s'", buf);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
    CHECK(recv_notify(fd, buf, sizeof buf, 2000) > 0 && !strcmp(buf, "STOPPING=1"));
    close(fd);
}

static void test_socket_mode(void) {
    NEED_MODELS();
    daemon_t d;
    struct stat sb;
    REQUIRE(daemon_start(&d, "mode", NULL) == 0);
    REQUIRE(stat(d.sock, &sb) == 0);
    CHECK(S_ISSOCK(sb.st_mode));
    CHECK_EQ_INT(sb.st_mode & 0777, 0600);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
    const char *extra[] = {"--socket-mode", "0660", NULL};
    REQUIRE(daemon_start(&d, "mode", extra) == 0);
    REQUIRE(stat(d.sock, &sb) == 0);
    CHECK_EQ_INT(sb.st_mode & 0777, 0660);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* Runs n requests (generate, tokenize) from one client, cycling prompts; returns failures. */
static int churn(client *c, int n, uint64_t base) {
    int fails = 0;
    for (int i = 0; i < n; i++) {
        sd_request q;
        sd_reply r;
        if (i % 4 == 3) {
            sd_request_init(&q, SD_OP_TOKENIZE, base + (uint64_t)i);
            q.text = strdup(conc_prompts[i % N_PROMPTS]);
            q.text_len = strlen(q.text);
            if (op_run(c, &q, &r)) fails++; else sd_reply_free(&r);
            sd_request_free(&q);
            continue;
        }
        gen_out o;
        gen_init(&q, base + (uint64_t)i, conc_prompts[i % N_PROMPTS], 4, i % 2 == 0);
        if (gen_run(c, &q, &o) || o.error[0]) fails++;
        sd_request_free(&q);
    }
    return fails;
}

/* Connections that come and go, half of them vanishing mid-request. */
static void conn_churn(const daemon_t *d, int n) {
    for (int i = 0; i < n; i++) {
        client t;
        if (cl_open(&t, d)) continue;
        sd_request q;
        gen_init(&q, 1, "Once upon a time", 8, true);
        cl_send_req(&t, &q);
        sd_request_free(&q);
        if (i % 2) { sd_reply r; if (cl_recv(&t, &r, 10) == 0) sd_reply_free(&r); }
        cl_close(&t);
    }
}

/* Under ASan the quarantine and shadow memory move RSS in bigger steps (a 3.2 MB rise was seen under
 * load); there LeakSanitizer checks the daemon at exit, and daemon_stop fails on its non-zero status. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_SLACK_KB 8192
#else
#define RSS_SLACK_KB 3072
#endif

static void test_memory_flat(void) {
    NEED_MODELS();
    daemon_t d;
    const char *extra[] = {"--max-sessions", "2", "--log-level", "warn", NULL};
    REQUIRE(daemon_start(&d, "mem", extra) == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    /* warm up (sessions, allocator and ZeroMQ pools), then two equal rounds: a leak grows RSS in both,
     * warm-up effects only in the first */
    CHECK_EQ_INT(churn(&c, 500, 0), 0);
    conn_churn(&d, 50);
    long r0 = rss_kb(d.pid);
    double t0 = sd_now_s();
    CHECK_EQ_INT(churn(&c, 1500, 100000), 0);
    conn_churn(&d, 100);
    long r1 = rss_kb(d.pid);
    CHECK_EQ_INT(churn(&c, 1500, 200000), 0);
    conn_churn(&d, 100);
    long r2 = rss_kb(d.pid);
    CHECK_EQ_INT(churn(&c, 1500, 300000), 0);
    conn_churn(&d, 100);
    long r3 = rss_kb(d.pid);
    fprintf(stderr, "  RSS %ld -> %ld -> %ld -> %ld kB over 3 x (1500 requests + 100 connections) (%.1fs)\n", r0, r1,
            r2, r3, sd_now_s() - t0);
    CHECK(r0 > 0 && r1 > 0 && r2 > 0 && r3 > 0);
    /* a leak grows every round; the allocator may take one step of about a megabyte once */
    CHECKF(r2 - r1 < 1024 || r3 - r2 < 1024, "RSS grew by %ld then %ld kB", r2 - r1, r3 - r2);
    CHECKF(r3 - r1 < RSS_SLACK_KB, "RSS grew by %ld kB over two rounds", r3 - r1);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

static void test_tcp(void) {
    NEED_MODELS();
    char port[16], ep[64];
    snprintf(port, sizeof port, "%d", 20000 + (int)(getpid() % 20000));
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%s", port);
    const char *extra[] = {"--tcp", port, NULL};   /* a bare port means 127.0.0.1 */
    daemon_t d;
    REQUIRE(daemon_start_ep(&d, "tcp", extra, ep) == 0);
    CHECK(access(d.sock, F_OK) != 0);             /* no Unix socket when TCP is asked for */
    CHECK(log_contains(&d, "TCP without CURVE"));  /* loopback TCP without authentication: a warning */
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    gen_out o;
    sd_request q;
    gen_init(&q, 1, "The robot", 10, true);
    REQUIRE(gen_run(&c, &q, &o) == 0);
    sd_request_free(&q);
    CHECK(!strcmp(o.finish, "length") && o.n_ids == 10 && o.streamed_len == o.text_len);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* A short request is not starved by a long one started before it. */
static void test_fairness(void) {
    NEED_MODELS();
    daemon_t d;
    const char *extra[] = {"--max-sessions", "2", NULL};
    REQUIRE(daemon_start(&d, "fair", extra) == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    gen_init(&q, 1, "Once upon a time", 110, false);
    cl_send_req(&c, &q);
    sd_request_free(&q);
    gen_init(&q, 2, "The robot", 3, false);
    cl_send_req(&c, &q);
    sd_request_free(&q);
    sd_reply r;
    REQUIRE(cl_recv(&c, &r, 30) == 0);
    CHECKF(r.type == SD_REPLY_DONE && r.id == 2, "first reply: %s id %llu", sd_reply_type_name(r.type),
           (unsigned long long)r.id);
    sd_reply_free(&r);
    REQUIRE(cl_recv(&c, &r, 30) == 0);
    CHECK(r.type == SD_REPLY_DONE && r.id == 1 && r.n_tokens > 3);
    sd_reply_free(&r);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* The n-gram lookup proposer through the daemon: greedy speculative output equals plain. */
static void test_lookup_proposer(void) {
    NEED_MODELS();
    daemon_t d;
    const char *extra[] = {"--lookup", "2", NULL};
    REQUIRE(daemon_start(&d, "lookup", extra) == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    for (int p = 0; p < 3; p++) {
        sd_request q;
        gen_out s, plain;
        gen_init(&q, 10 + (uint64_t)p, conc_prompts[p], 100, true);
        REQUIRE(gen_run(&c, &q, &s) == 0);
        q.gen.set |= SD_GF_MODE;
        q.gen.mode = SD_PMODE_PLAIN;
        REQUIRE(gen_run(&c, &q, &plain) == 0);
        sd_request_free(&q);
        CHECK(s.error[0] == 0 && s.st.mode == SD_PMODE_SPEC && plain.st.mode == SD_PMODE_PLAIN);
        CHECKF(same_gen(&s, &plain), "lookup '%s' vs plain '%s'", s.text, plain.text);
        CHECK(s.streamed_len == s.text_len && !memcmp(s.streamed, s.text, s.text_len));
    }
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* A backend failure (injected with SPECD_FAIL_AFTER, the test hook: the 60th matmul fails, inside the first
 * request's decode) ends that request with an error reply naming it, never with garbage tokens and `done`;
 * ping reports the backend unhealthy, and later requests fail fast with the same error. */
static void test_backend_failure(void) {
    NEED_MODELS();
    daemon_t d;
    setenv("SPECD_FAIL_AFTER", "60", 1);
    int rc = daemon_start(&d, "fault", NULL);
    unsetenv("SPECD_FAIL_AFTER");
    REQUIRE(rc == 0);
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    gen_out o;
    sd_reply r;
    sd_request_init(&q, SD_OP_PING, 1);
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECK(r.type == SD_REPLY_RESULT && !r.unhealthy);
    sd_reply_free(&r);
    for (int i = 0; i < 2; i++) {
        gen_init(&q, 2 + (uint64_t)i, conc_prompts[0], 60, true);
        REQUIRE(gen_run(&c, &q, &o) == 0);
        sd_request_free(&q);
        CHECKF(!strcmp(o.error, "internal"), "request %d ended with '%s' instead of an error", i, o.error);
    }
    sd_request_init(&q, SD_OP_PING, 5);
    REQUIRE(op_run(&c, &q, &r) == 0);
    CHECK(r.type == SD_REPLY_RESULT && r.unhealthy);
    CHECKF(strstr(r.message, "injected fault"), "backend_error '%s'", r.message);
    sd_reply_free(&r);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* One round trip of a request/reply op on c, in milliseconds (-1 on failure); r receives the reply. */
static double timed_op(client *c, const sd_request *q, sd_reply *r) {
    double t0 = sd_now_s();
    if (op_run(c, q, r)) return -1;
    return (sd_now_s() - t0) * 1e3;
}

/* Socket I/O never waits for compute: while one long turn runs (a 2000-token prompt prefilled in one turn
 * on the slow model, plus SPECD_TURN_DELAY_MS, the test hook, so a turn is long on any machine), ping and
 * stats from another connection are answered at once (a single-threaded loop answers them only between
 * turns: here after seconds), the cancel's result too, and the cancelled request ends after the turn. */
#define SLOW_TURN_MS 300
#define QUICK_MS 250.0
static void test_answers_during_turn(void) {
    if (!g_have_slow) SKIP("specd mkmodel could not write the synthetic model");
    daemon_t d;
    char delay[16];
    snprintf(delay, sizeof delay, "%d", SLOW_TURN_MS);
    setenv("SPECD_TURN_DELAY_MS", delay, 1);
    const char *extra[] = {"--batch-tokens", "0", NULL};
    g_slow_on = true;
    int started = daemon_start(&d, "turns", extra);
    g_slow_on = false;
    unsetenv("SPECD_TURN_DELAY_MS");
    REQUIRE(started == 0);
    client gen, other;
    REQUIRE(cl_open(&gen, &d) == 0 && cl_open(&other, &d) == 0);
    sd_request q;
    sd_reply r;
    sd_request_init(&q, SD_OP_GENERATE, 1);
    q.gen.n_tokens = 2000;
    q.gen.tokens = malloc(sizeof *q.gen.tokens * 2000);
    REQUIRE(q.gen.tokens);
    for (int i = 0; i < 2000; i++) q.gen.tokens[i] = 5 + i % 200;
    q.gen.max_tokens = 100;
    q.gen.stream = true;
    q.gen.set = SD_GF_MAX_TOKENS | SD_GF_STREAM;
    double t_gen = sd_now_s();
    REQUIRE(cl_send_req(&gen, &q) == 0);
    sd_request_free(&q);
    usleep(100000);                           /* its prefill turn is running now */
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        sd_request_init(&q, i % 2 ? SD_OP_STATS : SD_OP_PING, 10 + (uint64_t)i);
        double ms = timed_op(&other, &q, &r);
        CHECK(ms >= 0 && r.type == SD_REPLY_RESULT && r.id == 10 + (uint64_t)i);
        if (ms >= 0) sd_reply_free(&r);
        if (ms > worst || ms < 0) worst = ms < 0 ? 1e9 : ms;
    }
    fprintf(stderr, "  5 pings/stats during a long turn: slowest %.1f ms\n", worst);
    CHECKF(worst < QUICK_MS, "a ping or stats took %.1f ms while a turn ran", worst);
    /* cancel: its result at once, the request's `done` once the turn is over */
    sd_request_init(&q, SD_OP_CANCEL, 2);
    q.target = 1;
    double t0 = sd_now_s();
    REQUIRE(cl_send_req(&gen, &q) == 0);
    double t_result = -1, t_done = -1;
    int tokens_after = 0;
    while (t_done < 0) {
        if (cl_recv(&gen, &r, 30)) break;
        double ms = (sd_now_s() - t0) * 1e3;
        if (r.type == SD_REPLY_RESULT && r.id == 2) { t_result = ms; CHECK(r.found); }
        else if (r.type == SD_REPLY_TOKEN && t_result >= 0) tokens_after++;
        else if (r.type == SD_REPLY_DONE) { t_done = ms; CHECK(!strcmp(r.finish_reason, "cancelled")); }
        sd_reply_free(&r);
    }
    fprintf(stderr, "  cancel answered in %.1f ms, done after %.1f ms (%.1f s after the generate)\n", t_result,
            t_done, sd_now_s() - t_gen);
    CHECKF(t_result >= 0 && t_result < QUICK_MS, "cancel answered after %.1f ms", t_result);
    CHECK(t_done >= 0 && t_done > t_result);
    CHECK(tokens_after <= 1);
    cl_close(&gen);
    cl_close(&other);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* Bounded per-client output: a client that sends requests with large replies and never reads them is
 * dropped (log line) once its queue is full; the daemon's memory stays bounded (a daemon that queued
 * them all grew by 90 MB here, this one by about 25 MB) and other clients are served throughout. */
static void test_slow_reader(void) {
    NEED_MODELS();
    daemon_t d;
    const char *extra[] = {"--log-level", "info", NULL};
    REQUIRE(daemon_start(&d, "slowreader", extra) == 0);
    client other;
    REQUIRE(cl_open(&other, &d) == 0);
    void *ctx = zmq_ctx_new(), *mute = zmq_socket(ctx, ZMQ_DEALER);
    int one = 1, small = 4096, linger = 0;
    zmq_setsockopt(mute, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt(mute, ZMQ_RCVBUF, &small, sizeof small);
    zmq_setsockopt(mute, ZMQ_LINGER, &linger, sizeof linger);
    REQUIRE(zmq_connect(mute, d.endpoint) == 0);
    sd_request q;
    sd_reply r;
    sd_request_init(&q, SD_OP_PING, 1);
    REQUIRE(op_run(&other, &q, &r) == 0);
    sd_reply_free(&r);
    long rss0 = rss_kb(d.pid);
    /* 150 detokenize requests of 200,000 ids, about 600 kB of reply each */
    const int n_req = 150, n_ids = 200000;
    sd_request_init(&q, SD_OP_DETOKENIZE, 0);
    q.tokens = malloc(sizeof *q.tokens * (size_t)n_ids);
    REQUIRE(q.tokens);
    q.n_tokens = n_ids;
    for (int i = 0; i < n_ids; i++) q.tokens[i] = 300 + i % 200;
    char *buf;
    size_t len;
    long peak = rss0;
    double worst_ping = 0;
    for (int i = 0; i < n_req; i++) {
        q.id = 100 + (uint64_t)i;
        REQUIRE(sd_request_encode(&q, &buf, &len, NULL) == 0);
        zmq_send(mute, buf, len, 0);
        free(buf);
        if (i % 10 == 9) {
            sd_request p;
            sd_request_init(&p, SD_OP_PING, 1000 + (uint64_t)i);
            double ms = timed_op(&other, &p, &r);
            CHECK(ms >= 0);
            if (ms >= 0) sd_reply_free(&r);
            if (ms > worst_ping) worst_ping = ms;
            long now = rss_kb(d.pid);
            if (now > peak) peak = now;
        }
    }
    sd_request_free(&q);
    for (int i = 0; i < 20; i++) { /* let the daemon work through what it received */
        usleep(100000);
        long now = rss_kb(d.pid);
        if (now > peak) peak = now;
    }
    fprintf(stderr, "  RSS %ld kB -> peak %ld kB with a client that never reads %d large replies; slowest ping "
            "%.1f ms\n", rss0, peak, n_req, worst_ping);
#if !defined(__SANITIZE_ADDRESS__) /* ASan's quarantine keeps the freed requests (~110 MB): RSS says nothing */
    CHECKF(peak - rss0 < 40 * 1024, "RSS grew by %ld kB", peak - rss0);
#endif
    CHECK(log_contains(&d, "is not reading its replies"));
    sd_request_init(&q, SD_OP_PING, 2);
    CHECK(op_run(&other, &q, &r) == 0 && r.type == SD_REPLY_RESULT);
    sd_reply_free(&r);
    zmq_close(mute);
    zmq_ctx_term(ctx);
    cl_close(&other);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
}

/* Tenant scoping: a client of another Unix user (here `nobody`, on a socket shared with mode 0666) neither
 * reuses the prompt another user's request left cached (its `prefilled` is its whole prompt, with one
 * session so it must take that very session) nor sees that user's requests in `stats`; the same user's
 * clients keep sharing as before. */
static void test_tenant_scoping(void) {
    NEED_MODELS();
    if (geteuid() != 0) SKIP("needs root, to run a client as a second user (nobody)");
    struct passwd *pw = getpwnam("nobody");
    uid_t other = pw ? pw->pw_uid : 65534;
    gid_t other_g = pw ? pw->pw_gid : 65534;
    REQUIRE(chmod(g_dir, 0711) == 0);
    daemon_t d;
    const char *extra[] = {"--max-sessions", "1", "--socket-mode", "0666", NULL};
    int started = daemon_start(&d, "tenant", extra);
    REQUIRE(started == 0);
    const char *prompt = "Once upon a time, there was a little girl named Lily who";
    client c;
    REQUIRE(cl_open(&c, &d) == 0);
    sd_request q;
    gen_out o;
    gen_init(&q, 1, prompt, 4, false);
    REQUIRE(gen_run(&c, &q, &o) == 0);
    CHECK(o.st.prefilled == o.st.prompt_tokens && o.st.prompt_tokens > 8);
    q.id = 2;
    REQUIRE(gen_run(&c, &q, &o) == 0);   /* the same user again: its cached prompt is reused */
    CHECKF(o.st.prefilled == 1, "same tenant: prefilled %d of %d", o.st.prefilled, o.st.prompt_tokens);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) { /* the other user: its prefilled and prompt_tokens, and the `total` its stats show */
        int res[3] = {-1, -1, -1};
        client oc;
        sd_reply r;
        if (setgid(other_g) == 0 && setuid(other) == 0 && cl_open(&oc, &d) == 0) {
            gen_out oo;
            if (gen_run(&oc, &q, &oo) == 0 && !oo.error[0]) { res[0] = oo.st.prefilled; res[1] = oo.st.prompt_tokens; }
            sd_request sq;
            sd_request_init(&sq, SD_OP_STATS, 9);
            if (op_run(&oc, &sq, &r) == 0) {
                const msgpack_object *reqs = sd_mp_get(r.root, "requests");
                const msgpack_object *t = reqs ? sd_mp_get(reqs, "total") : NULL;
                res[2] = t ? (int)t->via.u64 : -1;
                sd_reply_free(&r);
            }
            cl_close(&oc);
        }
        if (write(fds[1], res, sizeof res) != (ssize_t)sizeof res) _exit(1);
        _exit(0);
    }
    close(fds[1]);
    int res[3] = {-1, -1, -1};
    ssize_t got = read(fds[0], res, sizeof res);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    REQUIRE(got == (ssize_t)sizeof res);
    CHECKF(res[1] > 8 && res[0] == res[1], "another user's request: prefilled %d of %d (a reused prefix leaks the "
           "cached prompt)", res[0], res[1]);
    CHECKF(res[2] == 1, "another user's stats count %d requests, not its own 1", res[2]);
    sd_request_free(&q);
    sd_reply r;
    sd_request_init(&q, SD_OP_STATS, 3);
    REQUIRE(op_run(&c, &q, &r) == 0);
    const msgpack_object *reqs = sd_mp_get(r.root, "requests");
    CHECK(reqs && sd_mp_get(reqs, "total") && sd_mp_get(reqs, "total")->via.u64 == 2);
    sd_reply_free(&r);
    cl_close(&c);
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
    chmod(g_dir, 0700);
}

/* A reply from a fresh connection (curve NULL: plain) to one ping within timeout_ms? */
static bool answered(const daemon_t *d, const sd_curve_client *curve, int timeout_ms) {
    void *ctx = zmq_ctx_new();
    int ok = ping_as(ctx, d->endpoint, curve, timeout_ms);
    zmq_ctx_term(ctx);
    return ok;
}

/* Authenticated TCP: a CURVE daemon answers a client whose key is in --curve-clients (library and
 * specd-cli), and nothing at all to a client with an unknown key or without CURVE. */
static void test_tcp_curve(void) {
    NEED_MODELS();
    if (!sd_curve_available()) SKIP("this libzmq has no CURVE");
    char keys[300], clients[300], server[320], alice[320], mallory[320];
    snprintf(keys, sizeof keys, "%s/keys", g_dir);
    snprintf(clients, sizeof clients, "%s/clients", g_dir);
    REQUIRE(mkdir(keys, 0700) == 0 && mkdir(clients, 0700) == 0);
    snprintf(server, sizeof server, "%s/server", keys);
    snprintf(alice, sizeof alice, "%s/alice", clients);   /* alice.pub (and .key) in the clients directory */
    snprintf(mallory, sizeof mallory, "%s/mallory", keys);
    REQUIRE(sd_curve_keygen(server, NULL) == 0 && sd_curve_keygen(alice, NULL) == 0 &&
            sd_curve_keygen(mallory, NULL) == 0);
    char skey[340], spub[340], akey[340], mkey[340];
    snprintf(skey, sizeof skey, "%s.key", server);
    snprintf(spub, sizeof spub, "%s.pub", server);
    snprintf(akey, sizeof akey, "%s.key", alice);
    snprintf(mkey, sizeof mkey, "%s.key", mallory);
    char port[16], hostport[40], ep[64];
    snprintf(port, sizeof port, "%d", 20000 + (int)((getpid() + 7) % 20000));
    snprintf(hostport, sizeof hostport, "127.0.0.1:%s", port);
    snprintf(ep, sizeof ep, "tcp://%s", hostport);
    const char *extra[] = {"--tcp", hostport, "--curve-secret", skey, "--curve-clients", clients, NULL};
    sd_curve_client as_alice = {spub, akey}, as_mallory = {spub, mkey};
    daemon_t d;
    g_curve = &as_alice;
    int started = daemon_start_ep(&d, "curve", extra, ep);
    g_curve = NULL;
    REQUIRE(started == 0);
    CHECK(answered(&d, &as_alice, 2000));
    CHECK(!answered(&d, &as_mallory, 1000));
    CHECK(!answered(&d, NULL, 1000));
    CHECK(log_contains(&d, "is not among the --curve-clients keys"));
    /* alice generates through the C library's client and through specd-cli */
    void *ctx = zmq_ctx_new();
    client c = {ctx, sd_client_connect_curve(ctx, d.endpoint, &as_alice, NULL)};
    REQUIRE(c.sock);
    sd_request q;
    gen_out o;
    gen_init(&q, 1, "The robot", 6, true);
    REQUIRE(gen_run(&c, &q, &o) == 0);
    sd_request_free(&q);
    CHECK(!strcmp(o.finish, "length") && o.n_ids == 6);
    cl_close(&c);
    if (g_exec_ok) {
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "%s-cli --tcp %s --curve-server %s --curve-key %s ping >/dev/null 2>&1", g_specd,
                 hostport, spub, akey);
        CHECK(system(cmd) == 0);
        snprintf(cmd, sizeof cmd, "%s-cli --tcp %s --connect-timeout 500 ping >/dev/null 2>&1", g_specd, hostport);
        CHECK(WEXITSTATUS(system(cmd)) == 3); /* without keys: no daemon answers */
    }
    /* the Python client, where a python3 with zmq and msgpack is found */
    const char *py = NULL;
    static const char *const pys[] = {"/usr/bin/python3", "python3"};
    for (int i = 0; i < 2 && !py; i++) {
        char probe[256];
        snprintf(probe, sizeof probe, "%s -c 'import zmq, msgpack' >/dev/null 2>&1", pys[i]);
        if (system(probe) == 0) py = pys[i];
    }
    if (py) {
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "%s -c \"import sys; sys.path.insert(0, 'clients/python'); import specd_client as sc; "
                 "c = sc.Client(tcp='%s', curve_server='%s', curve_key='%s'); "
                 "sys.exit(0 if c.complete('The robot', max_tokens=3)['stats']['generated'] == 3 else 1)\" >&2",
                 py, hostport, spub, akey);
        CHECK(system(cmd) == 0);
    } else {
        fprintf(stderr, "  (no python3 with zmq and msgpack: the Python client's CURVE is not checked)\n");
    }
    CHECK_EQ_INT(daemon_stop(&d, 10), 0);
    CHECK(sd_curve_keygen(mallory, NULL) != 0);  /* keygen never overwrites */
}

/* Binding beyond loopback without CURVE is refused, before the models load, with a message that says why. */
static void test_tcp_needs_curve(void) {
    NEED_MODELS();
    if (!g_exec_ok) SKIP("build/specd not runnable");
    char cmd[1200], out[300];
    snprintf(out, sizeof out, "%s/refused.txt", g_dir);
    snprintf(cmd, sizeof cmd, "timeout 10 %s serve -m %s -z %s --tcp 0.0.0.0:%d >%s 2>&1", g_specd, g_target, g_tok,
             20000 + (int)((getpid() + 13) % 20000), out);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    daemon_t d = {0};
    snprintf(d.log, sizeof d.log, "%s", out);
    CHECK(log_contains(&d, "without authentication") && log_contains(&d, "--curve-secret"));
}

int main(void) {
    g_target = shared_path("models/aidreams260K.bin");
    g_tok = shared_path("models/tok512.bin");
    g_draft = shared_path("models/aidreams-draft.bin");
    const char *b = getenv("BUILD");
    snprintf(g_specd, sizeof g_specd, "%s/specd", b ? b : "build");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s serve --help >/dev/null 2>&1", g_specd);
    g_exec_ok = access(g_specd, X_OK) == 0 && system(cmd) == 0;
    snprintf(g_dir, sizeof g_dir, "/tmp/specd-test-XXXXXX");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_slow, sizeof g_slow, "%s/slow.gguf", g_dir);
    const char *av[] = {"mkmodel", "--preset", "tiny", "--dim", "256", "--layers", "4", "--ffn", "512",
                        "--ctx", "4096", "-o", g_slow, NULL};
    g_have_slow = run_mkmodel(av) == 0 && access(g_slow, R_OK) == 0;
    RUN(test_ops);
    RUN(test_streaming);
    RUN(test_concurrent_clients);
    RUN(test_busy_and_queue);
    RUN(test_cancel);
    RUN(test_client_killed);
    RUN(test_bad_input);
    RUN(test_sigterm_under_load);
    RUN(test_grace);
    RUN(test_stale_and_live_socket);
    RUN(test_signals);
    RUN(test_reply_limit);
    RUN(test_socket_mode);
    RUN(test_systemd_notify);
    RUN(test_memory_flat);
    RUN(test_tcp);
    RUN(test_fairness);
    RUN(test_lookup_proposer);
    RUN(test_backend_failure);
    RUN(test_answers_during_turn);
    RUN(test_slow_reader);
    RUN(test_tenant_scoping);
    RUN(test_tcp_curve);
    RUN(test_tcp_needs_curve);
    if (getenv("SPECD_TEST_KEEP")) fprintf(stderr, "daemon logs kept in %s\n", g_dir);
    else {
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
        if (system(cmd)) {}
    }
    return TEST_DONE();
}
