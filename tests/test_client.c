/* The client library and build/specd-cli end to end, against `build/specd serve` running the small
 * shared models on a temporary socket (tests skip when the models or the daemon are missing). The first
 * tests need no daemon: absent, stale, silent daemons and usage errors must fail fast with the documented
 * exit codes. */
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <zmq.h>

#include "ipc/protocol.h"
#include "ipc/transport.h"
#include "base/clock.h"
#include "tests/daemon_fixture.h"
#include "tests/test.h"

static char cli[600];          /* "build/specd-cli --socket SOCK" once a daemon runs */
static fixture_daemon dmn;
static int have_daemon, have_draft;
static char no_daemon_why[200];
static const char *target, *tok, *draft;

static int cli_run(const char *args, char **out, char **err) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s", cli, args);
    return fx_run(cmd, out, err);
}

/* ---- without a daemon ---- */

static void test_no_daemon_library(void) {
    specd_client *c = NULL;
    specd_error e;
    specd_options o = {.endpoint = "ipc:///tmp/specd-test-no-such-dir/none.sock"};
    double t0 = sd_now_ms();
    CHECK_EQ_INT(specd_connect(&o, &c, &e), -1);
    CHECK(c == NULL);
    CHECK_EQ_INT(e.kind, SPECD_ERR_CONNECT);
    CHECKF(strstr(e.message, "no daemon at ipc:///tmp/specd-test-no-such-dir/none.sock") &&
               strstr(e.message, "specd serve"), "%s", e.message);
    CHECK(sd_now_ms() - t0 < 1000);
    o.endpoint = "unix:/x";
    CHECK_EQ_INT(specd_connect(&o, &c, &e), -1);
    CHECK_EQ_INT(e.kind, SPECD_ERR_ARG);
}

/* A socket file nobody listens on (a dead daemon's): refused at once, not after the timeout. */
static void test_stale_socket(void) {
    char dir[] = "/tmp/specd-test-XXXXXX", path[64];
    REQUIRE(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/stale.sock", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    close(fd); /* the file stays, nothing listens */
    char ep[80];
    snprintf(ep, sizeof ep, "ipc://%s", path);
    specd_options o = {.endpoint = ep, .connect_timeout_ms = 5000};
    specd_client *c = NULL;
    specd_error e;
    double t0 = sd_now_ms();
    CHECK_EQ_INT(specd_connect(&o, &c, &e), -1);
    CHECK_EQ_INT(e.kind, SPECD_ERR_CONNECT);
    CHECKF(strstr(e.message, "no daemon at") != NULL, "%s", e.message);
    CHECKF(sd_now_ms() - t0 < 2500, "took %.0f ms", sd_now_ms() - t0);
    unlink(path);
    rmdir(dir);
}

/* A fake daemon in a child process: answers pings like a real one and writes one byte to report_fd per
 * message it receives, so the parent can tell whether anything was sent to it. drop: run as nobody. */
static void fake_daemon_child(const char *ep, int report_fd, bool drop) {
    if (drop && (setgid(65534) || setuid(65534))) _exit(2);
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    if (!s || zmq_bind(s, ep)) _exit(3);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (double end = sd_now_ms() + 30000; sd_now_ms() < end;) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        char rid[256], body[4096];
        int rl = zmq_recv(s, rid, sizeof rid, 0), bl = zmq_recv(s, body, sizeof body, 0);
        if (rl <= 0 || bl < 0 || write(report_fd, "m", 1) != 1) continue;
        sd_request r;
        sd_proto_err pe;
        if (sd_request_decode(body, (size_t)bl, &r, &pe) == 0 && r.op == SD_OP_PING) {
            msgpack_sbuffer_clear(&sb);
            sd_enc_result_pong(&sb, r.id, 1, NULL);
            zmq_send(s, rid, (size_t)rl, ZMQ_SNDMORE);
            zmq_send(s, sb.data, sb.size, 0);
        }
        sd_request_free(&r);
    }
    _exit(0);
}

/* Socket squatting: a daemon of another user (nobody when the tests run as root, else a uid the client
 * is told to expect instead of its own) is refused by the library and the CLI before anything is sent.
 * The fake answers pings, so a client without the check connects and sends it its requests. */
static void test_squatted_socket(void) {
    bool root = getuid() == 0;
    char dir[] = "/tmp/specd-test-XXXXXX", ep[96], cmd[800], other[32];
    REQUIRE(mkdtemp(dir));
    chmod(dir, 0777); /* a directory anyone can write, like /tmp */
    snprintf(ep, sizeof ep, "ipc://%s/specd.sock", dir);
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        fake_daemon_child(ep, pfd[1], root);
    }
    close(pfd[1]);
    for (int i = 0; i < 200 && access(ep + 6, F_OK); i++) usleep(10000);
    if (!root) { snprintf(other, sizeof other, "%u", (unsigned)getuid() + 1); setenv(SD_DAEMON_UID_ENV, other, 1); }
    specd_options o = {.endpoint = ep, .connect_timeout_ms = 3000};
    specd_client *c = NULL;
    specd_error e;
    CHECK_EQ_INT(specd_connect(&o, &c, &e), -1);
    CHECK_EQ_INT(e.kind, SPECD_ERR_CONNECT);
    CHECKF(strstr(e.message, "refusing to talk to") && strstr(e.message, root ? "is uid 65534" : "expected uid"), "%s",
           e.message);
    char *err = NULL;
    snprintf(cmd, sizeof cmd, "%s/specd-cli --socket %s/specd.sock generate 'my secret prompt'", fx_build_dir(), dir);
    CHECK(fx_run(cmd, NULL, &err) != 0);
    CHECKF(err && strstr(err, "refusing to talk to"), "%s", err ? err : "");
    free(err);
    setenv(SD_DAEMON_UID_ENV, "no-such-user-xyz", 1);
    CHECK_EQ_INT(specd_connect(&o, &c, &e), -1);
    CHECKF(strstr(e.message, "neither a uid nor a known user name"), "%s", e.message);
    /* told to trust that user, the same client talks to the fake: the refusal above was the check */
    snprintf(other, sizeof other, "%u", root ? 65534u : (unsigned)getuid());
    if (root && getpwuid(65534)) snprintf(other, sizeof other, "%s", getpwuid(65534)->pw_name); /* by name */
    setenv(SD_DAEMON_UID_ENV, other, 1);
    CHECKF(specd_connect(&o, &c, &e) == 0, "%s", e.message);
    if (c) specd_close(c);
    unsetenv(SD_DAEMON_UID_ENV);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    char got[64];
    ssize_t n = read(pfd[0], got, sizeof got);
    close(pfd[0]);
    CHECK_EQ_INT(n, 1); /* only the trusted connection's ping reached it */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void test_cli_no_daemon_exit_code(void) {
    char cmd[700], *out = NULL, *err = NULL;
    snprintf(cmd, sizeof cmd, "%s/specd-cli --socket /tmp/specd-test-no-such-dir/none.sock ping", fx_build_dir());
    CHECK_EQ_INT(fx_run(cmd, &out, &err), 3);
    CHECKF(err && strstr(err, "no daemon at ipc:///tmp/specd-test-no-such-dir/none.sock: is `specd serve` running?"),
           "%s", err ? err : "");
    free(out);
    free(err);
    /* --json: the error is one JSON object on stdout, the exit status unchanged */
    snprintf(cmd, sizeof cmd, "%s/specd-cli --json --socket /tmp/specd-test-no-such-dir/none.sock ping", fx_build_dir());
    CHECK_EQ_INT(fx_run(cmd, &out, &err), 3);
    CHECKF(out && !strncmp(out, "{\"error\":{\"kind\":\"connect\",\"code\":\"\",\"message\":\"no daemon at", 50),
           "%s", out ? out : "");
    free(out);
    free(err);
    snprintf(cmd, sizeof cmd, "%s/specd-cli --tcp 127.0.0.1:1 --connect-timeout 3000 info", fx_build_dir());
    double t0 = sd_now_ms();
    CHECK_EQ_INT(fx_run(cmd, &out, &err), 3);
    CHECK(sd_now_ms() - t0 < 2500); /* refused: reported at once, not after the timeout */
    CHECKF(err && strstr(err, "no daemon at tcp://127.0.0.1:1"), "%s", err ? err : "");
    free(out);
    free(err);
}

static void test_cli_usage_exit_code(void) {
    static const char *const bad[] = {"", "frobnicate", "generate", "generate -n x hi", "ping --bogus",
                                      "detokenize", "detokenize 1 x", "cancel abc", "--tcp 99999 ping",
                                      "generate --top-p 2 hi", "tokenize a b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[700], *err = NULL;
        snprintf(cmd, sizeof cmd, "%s/specd-cli --socket /tmp/specd-test-none.sock %s", fx_build_dir(), bad[i]);
        int rc = fx_run(cmd, NULL, &err);
        CHECKF(rc == 2, "'%s' exited %d: %s", bad[i], rc, err ? err : "");
        CHECKF(err && strstr(err, "specd-cli"), "'%s': no message", bad[i]);
        free(err);
    }
    char cmd[700], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s/specd-cli --help", fx_build_dir());
    CHECK_EQ_INT(fx_run(cmd, &out, NULL), 0);
    CHECK(out && strstr(out, "exit status") && strstr(out, "bench"));
    free(out);
}

/* A peer that answers only the first ping (id 1, the library's connect check) and then stays silent:
 * requests must time out with SPECD_ERR_TIMEOUT, specd-cli with exit code 3. */
typedef struct silent_peer { void *ctx, *sock; volatile int stop; } silent_peer;
static void *silent_main(void *arg) {
    silent_peer *p = arg;
    while (!p->stop) {
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) <= 0) continue;
        zmq_msg_t idm, m;
        zmq_msg_init(&idm);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&idm, p->sock, 0) >= 0 && zmq_msg_recv(&m, p->sock, 0) >= 0) {
            sd_request r;
            sd_proto_err pe;
            if (sd_request_decode(zmq_msg_data(&m), zmq_msg_size(&m), &r, &pe) == 0) {
                if (r.id == 1) {
                    msgpack_sbuffer sb;
                    msgpack_sbuffer_init(&sb);
                    sd_enc_result_pong(&sb, r.id, 1, NULL);
                    zmq_send(p->sock, zmq_msg_data(&idm), zmq_msg_size(&idm), ZMQ_SNDMORE);
                    zmq_send(p->sock, sb.data, sb.size, 0);
                    msgpack_sbuffer_destroy(&sb);
                }
                sd_request_free(&r);
            }
        }
        zmq_msg_close(&idm);
        zmq_msg_close(&m);
    }
    return NULL;
}

static void test_timeout_silent_daemon(void) {
    char dir[] = "/tmp/specd-test-XXXXXX", ep[80];
    REQUIRE(mkdtemp(dir));
    snprintf(ep, sizeof ep, "ipc://%s/silent.sock", dir);
    silent_peer p = {.ctx = zmq_ctx_new()};
    p.sock = zmq_socket(p.ctx, ZMQ_ROUTER);
    REQUIRE(zmq_bind(p.sock, ep) == 0);
    pthread_t th;
    pthread_create(&th, NULL, silent_main, &p);
    specd_options o = {.endpoint = ep, .timeout_ms = 300};
    specd_client *c = NULL;
    specd_error e;
    CHECK_EQ_INT(specd_connect(&o, &c, &e), 0);
    if (c) {
        double t0 = sd_now_ms();
        CHECK_EQ_INT(specd_ping(c, NULL, &e), -1);
        CHECK_EQ_INT(e.kind, SPECD_ERR_TIMEOUT);
        double dt = sd_now_ms() - t0;
        CHECKF(dt >= 250 && dt < 2000, "%.0f ms", dt);
        specd_close(c);
    }
    char cmd[700], *err = NULL;
    snprintf(cmd, sizeof cmd, "%s/specd-cli --socket %s/silent.sock --timeout 0.3 stats", fx_build_dir(), dir);
    CHECK_EQ_INT(fx_run(cmd, NULL, &err), 3);
    CHECKF(err && strstr(err, "timed out"), "%s", err ? err : "");
    free(err);
    p.stop = 1;
    pthread_join(th, NULL);
    zmq_close(p.sock);
    zmq_ctx_term(p.ctx);
    char path[80];
    snprintf(path, sizeof path, "%s/silent.sock", dir);
    unlink(path);
    rmdir(dir);
}

/* ---- with the daemon ---- */

#define NEED_DAEMON() do { if (!have_daemon) SKIP("%s", no_daemon_why); } while (0)

static specd_client *open_client(void) {
    specd_options o = {.endpoint = dmn.endpoint, .timeout_ms = 30000};
    specd_client *c = NULL;
    specd_error e;
    if (specd_connect(&o, &c, &e)) fprintf(stderr, "  connect: %s\n", e.message);
    return c;
}

static void test_lib_short_ops(void) {
    NEED_DAEMON();
    specd_client *c = open_client();
    REQUIRE(c);
    specd_error e;
    double rtt = -1;
    CHECK_EQ_INT(specd_ping(c, &rtt, &e), 0);
    CHECK(rtt > 0 && rtt < 1e6);
    int32_t *ids = NULL, *ids_bos = NULL;
    int n = 0, n_bos = 0;
    const char *text = "Once upon a time, a robot";
    CHECK_EQ_INT(specd_tokenize(c, text, 0, &ids, &n, &e), 0);
    CHECK_EQ_INT(specd_tokenize(c, text, 1, &ids_bos, &n_bos, &e), 0);
    CHECK(n > 2);
    CHECK_EQ_INT(n_bos, n + 1); /* the vocabulary has a BOS */
    if (n > 0 && n_bos == n + 1) CHECK(memcmp(ids, ids_bos + 1, sizeof(int32_t) * (size_t)n) == 0);
    char *back = NULL;
    if (n > 0) {
        CHECK_EQ_INT(specd_detokenize(c, ids, n, &back, &e), 0);
        CHECKF(back && strstr(back, "Once upon a time, a robot"), "'%s'", back ? back : "(null)");
    }
    free(back);
    free(ids);
    free(ids_bos);
    char *info = NULL, *stats = NULL;
    CHECK_EQ_INT(specd_info(c, &info, &e), 0);
    CHECKF(info && strstr(info, "\"protocol\":1") && strstr(info, "\"limits\""), "%s", info ? info : "");
    CHECK_EQ_INT(specd_stats(c, &stats, &e), 0);
    CHECKF(stats && strstr(stats, "\"requests\"") && strstr(stats, "\"histograms\""), "%s", stats ? stats : "");
    free(info);
    free(stats);
    int found = 1;
    CHECK_EQ_INT(specd_cancel(c, 987654321, &found, &e), 0);
    CHECK_EQ_INT(found, 0);
    /* a bad value is refused before it is sent */
    specd_gen g = specd_gen_default();
    g.prompt = "x";
    g.top_p = 2;
    specd_result r;
    CHECK_EQ_INT(specd_generate(c, &g, NULL, NULL, &r, &e), -1);
    CHECK_EQ_INT(e.kind, SPECD_ERR_ARG);
    CHECKF(strstr(e.message, "top_p") != NULL, "%s", e.message);
    CHECK_EQ_INT(specd_ping(c, NULL, &e), 0); /* still usable */
    specd_close(c);
}

typedef struct stream_log {
    char text[8192];
    size_t len;
    int32_t ids[1024];
    int n_ids, n_events, bad_utf8, out_of_order, stop_after;
    double last_t;
} stream_log;

static int log_token(const specd_token *t, void *user) {
    stream_log *l = user;
    if (!sd_utf8_valid(t->text, t->len)) l->bad_utf8++;
    if (t->t_ms < l->last_t) l->out_of_order++;
    l->last_t = t->t_ms;
    if (l->len + t->len < sizeof l->text) { memcpy(l->text + l->len, t->text, t->len); l->len += t->len; }
    for (int i = 0; i < t->n_ids && l->n_ids < 1024; i++) l->ids[l->n_ids++] = t->ids[i];
    l->n_events++;
    return l->stop_after && l->n_events >= l->stop_after;
}

static void test_lib_stream_order(void) {
    NEED_DAEMON();
    specd_client *c = open_client();
    REQUIRE(c);
    const char *modes[2] = {"plain", "spec"};
    char texts[2][8192];
    for (int m = 0; m < 2; m++) {
        stream_log l = {0};
        specd_gen g = specd_gen_default();
        g.prompt = "Once upon a time";
        g.max_tokens = 40;
        g.temperature = 0;
        g.mode = modes[m];
        specd_result r;
        specd_error e;
        REQUIRE(specd_generate(c, &g, log_token, &l, &r, &e) == 0);
        CHECK(l.n_events > 0);
        CHECK_EQ_INT(l.n_events, r.n_events);
        CHECK_EQ_INT(l.bad_utf8, 0);
        CHECK_EQ_INT(l.out_of_order, 0);
        /* the pieces add up to the done reply, in order */
        CHECK_EQ_INT(l.len, r.text_len);
        CHECK(l.len == r.text_len && memcmp(l.text, r.text, l.len) == 0);
        CHECK_EQ_INT(l.n_ids, r.n_ids);
        CHECK(l.n_ids == r.n_ids && memcmp(l.ids, r.ids, sizeof(int32_t) * (size_t)l.n_ids) == 0);
        CHECK_EQ_INT(r.stats.generated, r.n_ids);
        /* the second run repeats the prompt: its cached prefix is reused, and the counts add up */
        CHECKF(r.stats.prefilled + r.stats.reused == r.stats.prompt_tokens && (m == 0 || r.stats.reused > 0) &&
                   r.stats.preempted == 0,
               "run %d: prefilled %d + reused %d of %d, preempted %d", m, r.stats.prefilled, r.stats.reused,
               r.stats.prompt_tokens, r.stats.preempted);
        CHECK(r.n_ids <= 40);
        CHECKF(!strcmp(r.finish_reason, "length") || !strcmp(r.finish_reason, "stop"), "%s", r.finish_reason);
        CHECK(r.client_ttft_ms > 0 && r.client_ttft_ms <= r.client_total_ms);
        CHECK(r.json && strstr(r.json, "\"type\":\"done\""));
        if (m == 1 && have_draft) CHECK(r.stats.drafted > 0);
        snprintf(texts[m], sizeof texts[m], "%s", r.text);
        specd_result_free(&r);
    }
    CHECK_STR_EQ(texts[0], texts[1]); /* greedy: speculation changes nothing */
    /* non-streamed: no events, same result */
    specd_gen g = specd_gen_default();
    g.prompt = "Once upon a time";
    g.max_tokens = 40;
    g.temperature = 0;
    g.stream = 0;
    stream_log l = {0};
    specd_result r;
    specd_error e;
    REQUIRE(specd_generate(c, &g, log_token, &l, &r, &e) == 0);
    CHECK_EQ_INT(l.n_events, 0);
    CHECK_STR_EQ(r.text, texts[0]);
    specd_result_free(&r);
    specd_close(c);
}

/* Returning non-zero from the callback cancels. The 260K model makes a token in ~50 us, so on a loaded
 * machine the whole request can finish before the cancel arrives: up to 5 tries, one must be cancelled. */
static void test_lib_cancel(void) {
    NEED_DAEMON();
    specd_client *c = open_client();
    REQUIRE(c);
    int cancelled = 0;
    for (int attempt = 0; attempt < 5 && !cancelled; attempt++) {
        stream_log l = {.stop_after = 1};
        specd_gen g = specd_gen_default();
        g.prompt = "The robot";
        g.max_tokens = 120;
        g.temperature = 0;
        g.mode = "plain";
        specd_result r;
        specd_error e;
        REQUIRE(specd_generate(c, &g, log_token, &l, &r, &e) == 0);
        if (!strcmp(r.finish_reason, "cancelled")) {
            cancelled = 1;
            CHECK(r.n_ids < 120);
            CHECK(l.n_ids <= r.n_ids); /* no callbacks after the cancel; the result holds every id */
            CHECK(l.n_ids > 0 && memcmp(l.ids, r.ids, sizeof(int32_t) * (size_t)l.n_ids) == 0);
        } else {
            CHECKF(!strcmp(r.finish_reason, "length") || !strcmp(r.finish_reason, "stop"), "%s", r.finish_reason);
        }
        specd_result_free(&r);
        CHECK_EQ_INT(specd_ping(c, NULL, &e), 0); /* the connection goes on */
    }
    CHECK(cancelled);
    specd_close(c);
}

static void test_lib_daemon_error(void) {
    NEED_DAEMON();
    specd_client *c = open_client();
    REQUIRE(c);
    char prompt[4000] = {0};
    for (int i = 0; i < 300; i++) strcat(prompt, "cat ");
    specd_gen g = specd_gen_default();
    g.prompt = prompt; /* far longer than the 128-position context */
    specd_result r;
    specd_error e;
    CHECK_EQ_INT(specd_generate(c, &g, NULL, NULL, &r, &e), -1);
    CHECK_EQ_INT(e.kind, SPECD_ERR_DAEMON);
    CHECK_STR_EQ(e.code, "too_long");
    CHECK(e.message[0] != 0);
    CHECK_EQ_INT(specd_ping(c, NULL, &e), 0);
    specd_close(c);
}

/* A crude check that out is one JSON object; Debian's python3 parses it when present. */
static int is_json_object(const char *out) {
    if (!out || out[0] != '{') return 0;
    const char *py = fx_python();
    if (!py) return strchr(out, '}') != NULL;
    char f[] = "/tmp/specd-test-json-XXXXXX";
    int fd = mkstemp(f);
    if (fd < 0) return 0;
    ssize_t w = write(fd, out, strlen(out));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s -c 'import json,sys; d=json.load(open(\"%s\")); sys.exit(0 if isinstance(d, dict) else 1)'", py, f);
    int rc = fx_run(cmd, NULL, NULL);
    unlink(f);
    return w > 0 && rc == 0;
}

static void test_cli_subcommands_json(void) {
    NEED_DAEMON();
    static const struct { const char *args, *must; int rc; } cases[] = {
        {"--json ping -c 5", "\"p50\"", 0},
        {"--json tokenize 'Once upon a time'", "\"tokens\":[", 0},
        {"--json detokenize 1 403 407", "\"text\"", 0},
        {"--json info", "\"protocol\":1", 0},
        {"--json stats", "\"requests\"", 0},
        {"--json cancel 12345", "\"found\":false", 1},
        {"generate --json -n 8 'The robot'", "\"finish_reason\"", 0},
        {"--json bench -n 8 --runs 1", "\"speedup\"", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL, *err = NULL;
        int rc = cli_run(cases[i].args, &out, &err);
        CHECKF(rc == cases[i].rc, "'%s' exited %d: %s", cases[i].args, rc, err ? err : "");
        CHECKF(out && strstr(out, cases[i].must), "'%s': %s", cases[i].args, out ? out : "");
        CHECKF(is_json_object(out), "'%s' printed no JSON object: %s", cases[i].args, out ? out : "");
        free(out);
        free(err);
    }
    /* and the text forms */
    char *out = NULL;
    CHECK_EQ_INT(cli_run("ping", &out, NULL), 0);
    CHECK(out && strstr(out, "pong from ipc://") && strstr(out, " us"));
    free(out);
    out = NULL;
    CHECK_EQ_INT(cli_run("tokenize --no-bos 'Once'", &out, NULL), 0);
    CHECK(out && out[0] >= '0' && out[0] <= '9');
    free(out);
    out = NULL;
    CHECK_EQ_INT(cli_run("info", &out, NULL), 0);
    CHECK(out && strstr(out, "\"limits\": {"));
    free(out);
    /* the daemon's own errors: exit 1 with its code */
    char *err = NULL;
    char args[1400] = "generate '";
    for (int i = 0; i < 300; i++) strcat(args, "cat ");
    strcat(args, "'");
    CHECK_EQ_INT(cli_run(args, NULL, &err), 1);
    CHECKF(err && strstr(err, "too_long"), "%s", err ? err : "");
    free(err);
}

/* Greedy specd-cli generate prints what `specd generate` prints for the same prompt. */
static void test_cli_generate_matches_local(void) {
    NEED_DAEMON();
    static const char *const prompts[] = {"Once upon a time", "The robot"};
    for (int i = 0; i < 2; i++) {
        char cmd[1200], *local = NULL, *viacli = NULL, *plain = NULL;
        snprintf(cmd, sizeof cmd, "%s/specd generate -m %s -z %s -n 48 -t 1 -p '%s'", fx_build_dir(), target, tok,
                 prompts[i]);
        int rc = fx_run(cmd, &local, NULL);
        if (rc != 0) { free(local); SKIP("`specd generate` is not available (exit %d)", rc); }
        snprintf(cmd, sizeof cmd, "generate --echo -n 48 '%s'", prompts[i]);
        CHECK_EQ_INT(cli_run(cmd, &viacli, NULL), 0);
        snprintf(cmd, sizeof cmd, "generate --plain --echo -n 48 '%s'", prompts[i]);
        CHECK_EQ_INT(cli_run(cmd, &plain, NULL), 0);
        REQUIRE(local && viacli && plain);
        size_t n = strlen(viacli);
        if (n && viacli[n - 1] == '\n' && (!*local || local[strlen(local) - 1] != '\n')) viacli[n - 1] = 0;
        n = strlen(plain);
        if (n && plain[n - 1] == '\n' && (!*local || local[strlen(local) - 1] != '\n')) plain[n - 1] = 0;
        CHECK(strlen(local) > strlen(prompts[i]));
        CHECK_STR_EQ(viacli, local);
        CHECK_STR_EQ(plain, local);
        free(local);
        free(viacli);
        free(plain);
    }
}

static void test_cli_bench_text(void) {
    NEED_DAEMON();
    char f[] = "/tmp/specd-test-prompts-XXXXXX";
    int fd = mkstemp(f);
    REQUIRE(fd >= 0);
    const char *p = "Once upon a time\n\nThe robot\n";
    REQUIRE(write(fd, p, strlen(p)) == (ssize_t)strlen(p));
    close(fd);
    char args[200], *out = NULL, *err = NULL;
    snprintf(args, sizeof args, "bench --prompts %s -n 12 --runs 2 --concurrency 3", f);
    int rc = cli_run(args, &out, &err);
    CHECKF(rc == 0, "exit %d: %s", rc, err ? err : "");
    CHECKF(out && strstr(out, "2 prompts x 2 runs x 3 clients") && strstr(out, "speedup") &&
               strstr(out, "identical in both modes: 12 of 12"), "%s", out ? out : "");
    free(out);
    free(err);
    unlink(f);
}

/* A daemon still starting (no socket yet): specd_connect with wait_ms retries until it answers; without
 * waiting the same connect fails at once. */
static void test_connect_waits_for_a_starting_daemon(void) {
    if (!target || !tok) SKIP("%s", no_daemon_why);
    char dir[] = "/tmp/specd-test-wait-XXXXXX";
    REQUIRE(mkdtemp(dir));
    char sock[300], ep[320], exe[512];
    snprintf(sock, sizeof sock, "%s/d.sock", dir);
    snprintf(ep, sizeof ep, "ipc://%s", sock);
    snprintf(exe, sizeof exe, "%s/specd", fx_build_dir());
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        usleep(700 * 1000); /* "loading" */
        execl(exe, exe, "serve", "-m", target, "-z", tok, "--socket", sock, "-t", "1", (char *)NULL);
        _exit(127);
    }
    specd_options o = {.endpoint = ep};
    specd_client *c = NULL;
    specd_error e;
    CHECK(specd_connect(&o, &c, &e) == -1 && e.kind == SPECD_ERR_CONNECT); /* no waiting: not there yet */
    o.wait_ms = 20000;
    double t0 = sd_now_ms();
    CHECKF(specd_connect(&o, &c, &e) == 0, "%s", e.message);
    CHECK(sd_now_ms() - t0 > 300);
    if (c) {
        double rtt;
        CHECK(specd_ping(c, &rtt, &e) == 0);
        specd_close(c);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(sock);
    rmdir(dir);
}

int main(void) {
    snprintf(cli, sizeof cli, "%s/specd-cli", fx_build_dir());
    RUN(test_no_daemon_library);
    RUN(test_stale_socket);
    RUN(test_cli_no_daemon_exit_code);
    RUN(test_cli_usage_exit_code);
    RUN(test_timeout_silent_daemon);
    RUN(test_squatted_socket);

    target = shared_path("models/aidreams260K.bin");
    tok = shared_path("models/tok512.bin");
    draft = shared_path("models/aidreams-draft.bin");
    if (!target || !tok) {
        snprintf(no_daemon_why, sizeof no_daemon_why, "../shared/models/aidreams260K.bin or tok512.bin missing");
    } else {
        const char *with_draft[] = {"-m", target, "-z", tok, "-md", draft, NULL};
        const char *alone[] = {"-m", target, "-z", tok, NULL};
        have_draft = draft != NULL;
        have_daemon = fx_daemon_start(&dmn, have_draft ? with_draft : alone, no_daemon_why,
                                      sizeof no_daemon_why) == 0;
        if (have_daemon) snprintf(cli, sizeof cli, "%s/specd-cli --socket %s", fx_build_dir(), dmn.sock);
    }
    RUN(test_connect_waits_for_a_starting_daemon);
    RUN(test_lib_short_ops);
    RUN(test_lib_stream_order);
    RUN(test_lib_cancel);
    RUN(test_lib_daemon_error);
    RUN(test_cli_subcommands_json);
    RUN(test_cli_generate_matches_local);
    RUN(test_cli_bench_text);
    if (have_daemon) {
        int rc = fx_daemon_stop(&dmn);
        if (rc != 0) {
            printf("FAIL daemon_stop: `specd serve` exited %d on SIGTERM\n", rc);
            t_n_fail++;
        }
    }
    return TEST_DONE();
}
