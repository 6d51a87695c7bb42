/* tests/test.h itself: tests run by name, --list, an unknown name fails the program. The program runs
 * itself (/proc/self/exe) with SD_HARNESS_CHILD set, where main() runs three subject tests instead. */
#include <limits.h>

#include "test.h"
#include "tests/test_util.h"

static void test_alpha(void) { CHECK(1); }
static void test_beta(void) { CHECK(1); }
static void test_gamma(void) { SKIP("subject"); }

/* Runs this program as a child with args; its stdout in out, its exit status returned. */
static int child(const char *args, char *out, size_t cap) {
    char exe[PATH_MAX], cmd[PATH_MAX + 256];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = 0;
    snprintf(cmd, sizeof cmd, "SD_HARNESS_CHILD=1 '%s' %s 2>/dev/null", exe, args);
    return run_cmd(cmd, out, cap);
}

static void test_run_by_name(void) {
    char out[1024];
    CHECK_EQ_INT(child("", out, sizeof out), 0);
    CHECK_STR_EQ(out, "ok test_alpha\nok test_beta\nskipped: test_gamma: subject\n");
    CHECK_EQ_INT(child("test_beta", out, sizeof out), 0);
    CHECK_STR_EQ(out, "ok test_beta\n");
    CHECK_EQ_INT(child("gamma alpha", out, sizeof out), 0); /* without the test_ prefix; run in program order */
    CHECK_STR_EQ(out, "ok test_alpha\nskipped: test_gamma: subject\n");
}

static void test_list_and_unknown_names(void) {
    char out[1024];
    CHECK_EQ_INT(child("--list", out, sizeof out), 0);
    CHECK_STR_EQ(out, "test_alpha\ntest_beta\ntest_gamma\n");
    CHECK_EQ_INT(child("alpha delta", out, sizeof out), 1);
    CHECK_STR_EQ(out, "ok test_alpha\nFAIL delta: no such test in this program\n");
}

int main(void) {
    if (getenv("SD_HARNESS_CHILD")) {
        RUN(test_alpha);
        RUN(test_beta);
        RUN(test_gamma);
        return TEST_DONE();
    }
    RUN(test_run_by_name);
    RUN(test_list_and_unknown_names);
    return TEST_DONE();
}
