/* `make install PREFIX=...` into a temporary prefix: the binaries run, a C program builds against the
 * installed header and library through pkg-config and runs on the shared library, the systemd unit
 * points at the installed daemon, the Python client imports from the installed directory. */
#include <stdlib.h>

#include "test.h"
#include "tests/test_util.h"

static bool g_installed;

static const char *build_dir(void) { return getenv("BUILD") ? getenv("BUILD") : "build"; }

/* Runs cmd (stdout and stderr together); returns its exit status and frees the output unless out. */
static int sh(const char *cmd, char **out) {
    int st;
    char *o = run_capture(cmd, &st);
    if (out) *out = o;
    else free(o);
    return st;
}

static void test_make_install(void) {
    if (strstr(build_dir(), "san")) SKIP("checked in the plain build (the sanitizer build links differently)");
    char cmd[2048], *out = NULL;
    /* the parent make's jobserver must not leak into this one */
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install BUILD=%s PREFIX=%s/prefix 2>&1",
             build_dir(), g_dir);
    int st = sh(cmd, &out);
    REQUIRE(out);
    CHECKF(st == 0, "make install: exit %d\n%s", st, out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/prefix/bin/specd --version && %s/prefix/bin/specd-cli --version", g_dir, g_dir);
    CHECK(sh(cmd, &out) == 0 && out && strstr(out, "specd 0.") && strstr(out, "specd-cli 0."));
    free(out);

    const char *prog = tmp_path("prog.c");
    const char *src = "#include <specd_client.h>\n#include <stdio.h>\n"
                      "int main(void) { specd_options o = {.endpoint = \"ipc:///nonexistent/specd.sock\"};\n"
                      "  specd_client *c; specd_error e;\n"
                      "  int rc = specd_connect(&o, &c, &e); printf(\"%d %s\\n\", rc, e.message); return 0; }\n";
    REQUIRE(write_all(prog, src, strlen(src)) == 0);
    snprintf(cmd, sizeof cmd,
             "export PKG_CONFIG_PATH=%s/prefix/lib/pkgconfig; cc %s $(pkg-config --cflags --libs specd-client) -o %s "
             "&& LD_LIBRARY_PATH=%s/prefix/lib %s && ldd %s",
             g_dir, prog, tmp_path("prog"), g_dir, tmp_path("prog"), tmp_path("prog"));
    st = sh(cmd, &out);
    CHECKF(st == 0 && out && strstr(out, "-1 no daemon at ipc:///nonexistent/specd.sock"), "exit %d: %s", st, out);
    CHECKF(out && strstr(out, "libspecd-client.so.0"), "not linked to the shared library: %s", out);
    free(out);

    snprintf(cmd, sizeof cmd, "cat %s/prefix/lib/systemd/system/specd.service", g_dir);
    CHECK(sh(cmd, &out) == 0 && out && strstr(out, "Type=notify"));
    char want[600];
    snprintf(want, sizeof want, "ExecStart=%s/prefix/bin/specd serve", g_dir);
    CHECKF(out && strstr(out, want), "unit: %s", out);
    free(out);
    /* systemd's own check of the unit (it also finds ExecStart's binary), where systemd-analyze exists */
    snprintf(cmd, sizeof cmd, "command -v systemd-analyze >/dev/null && systemd-analyze verify %s/prefix/lib/systemd/system/specd.service",
             g_dir);
    if (sh("command -v systemd-analyze >/dev/null", NULL) == 0) {
        CHECKF(sh(cmd, &out) == 0 && out && !strstr(out, "Unknown"), "systemd-analyze verify: %s", out ? out : "");
        free(out);
    }
    g_installed = true;
}

static void test_python_client_installed(void) {
    if (!g_installed) SKIP("make install did not run");
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "python3 -c 'import zmq, msgpack' 2>/dev/null");
    if (sh(cmd, NULL) != 0) SKIP("python3 with the zmq and msgpack modules missing (Debian: python3-zmq python3-msgpack)");
    snprintf(cmd, sizeof cmd, "PYTHONPATH=%s/prefix/lib/python3/dist-packages python3 -c 'import specd_client; print(specd_client.__file__)'",
             g_dir);
    CHECK(sh(cmd, &out) == 0 && out && strstr(out, "/prefix/lib/python3/dist-packages/specd_client.py"));
    free(out);
}

int main(void) {
    if (make_tmpdir("specd_test_install_")) return 1;
    RUN(test_make_install);
    RUN(test_python_client_installed);
    remove_tmpdir();
    return TEST_DONE();
}
