/* The Python client (clients/python/) with Debian's python3-zmq and python3-msgpack: it compiles, and
 * tests/python_client_check.py exchanges every call with a real daemon on a temporary socket. */
#include "tests/daemon_fixture.h"
#include "tests/test.h"

static const char *py;

static void test_py_compile(void) {
    if (!py) SKIP("no python3 with the zmq and msgpack modules (Debian: python3-zmq python3-msgpack)");
    char cmd[512], *err = NULL;
    snprintf(cmd, sizeof cmd, "%s -m py_compile clients/python/specd_client.py clients/python/example_agent.py "
             "tests/python_client_check.py", py);
    int rc = fx_run(cmd, NULL, &err);
    CHECKF(rc == 0, "%s", err ? err : "");
    free(err);
}

static void test_py_exchange(void) {
    if (!py) SKIP("no python3 with the zmq and msgpack modules (Debian: python3-zmq python3-msgpack)");
    const char *target = shared_path("models/aidreams260K.bin"), *tok = shared_path("models/tok512.bin");
    const char *draft = shared_path("models/aidreams-draft.bin");
    if (!target || !tok) SKIP("../shared/models/aidreams260K.bin or tok512.bin missing");
    const char *with_draft[] = {"-m", target, "-z", tok, "-md", draft, NULL};
    const char *alone[] = {"-m", target, "-z", tok, NULL};
    fixture_daemon d;
    char why[200];
    if (fx_daemon_start(&d, draft ? with_draft : alone, why, sizeof why)) SKIP("%s", why);
    char cmd[700], *out = NULL, *err = NULL;
    snprintf(cmd, sizeof cmd, "%s tests/python_client_check.py %s", py, d.endpoint);
    int rc = fx_run(cmd, &out, &err);
    CHECKF(rc == 0, "exit %d:\n%s%s", rc, out ? out : "", err ? err : "");
    free(out);
    free(err);
    /* the example agent runs two turns */
    snprintf(cmd, sizeof cmd, "%s clients/python/example_agent.py --socket %s -n 8 'Hello' 'Tell me more'", py, d.sock);
    rc = fx_run(cmd, &out, &err);
    CHECKF(rc == 0 && out && strstr(out, "> Tell me more") && strstr(out, "reused"), "exit %d: %s%s", rc,
           out ? out : "", err ? err : "");
    free(out);
    free(err);
    CHECK_EQ_INT(fx_daemon_stop(&d), 0);
}

int main(void) {
    py = fx_python();
    RUN(test_py_compile);
    RUN(test_py_exchange);
    return TEST_DONE();
}
