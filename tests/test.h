/* A minimal test harness: each tests/test_*.c is one program whose main() runs its test functions
 * (static void test_x(void)) with RUN(test_x) and returns TEST_DONE(). Every test prints one line:
 * "ok <name>", "FAIL <name>" (after the failed checks) or "skipped: <name>: <reason>"; tests/run.sh
 * counts those lines across programs.
 *
 * Run by name: `build/tests/test_x NAME...` runs only the tests named (test_foo or foo), `--list` prints
 * the names. The names are read from /proc/self/cmdline, so main() stays main(void); a name that matches
 * no test is a failure (a typo must not pass as "0 tests failed"). */
#ifndef SD_TEST_H
#define SD_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int t_failed_checks;   /* failed checks in the running test */
static int t_skipped;
static char t_skip_reason[1024];
static int t_n_pass, t_n_fail, t_n_skip;

#define CHECK(cond) do { if (!(cond)) { t_failed_checks++; \
    fprintf(stderr, "  check failed %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECKF(cond, ...) do { if (!(cond)) { t_failed_checks++; \
    fprintf(stderr, "  check failed %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    CHECKF(_a == _b, "%lld != %lld", _a, _b); } while (0)
#define CHECK_NEAR(a, b, tol) do { double _a = (a), _b = (b); \
    CHECKF(fabs(_a - _b) <= (tol), "%.9g vs %.9g (tol %g)", _a, _b, (double)(tol)); } while (0)
#define CHECK_STR_EQ(a, b) do { const char *_a = (a), *_b = (b); \
    CHECKF(_a && _b && strcmp(_a, _b) == 0, "\"%s\" != \"%s\"", _a ? _a : "(null)", _b ? _b : "(null)"); } while (0)
/* Stop the current test and report it as skipped, with the reason. */
#define SKIP(...) do { t_skipped = 1; snprintf(t_skip_reason, sizeof t_skip_reason, __VA_ARGS__); return; } while (0)
/* Abort the current test when a precondition fails (counts as a failure). */
#define REQUIRE(cond) do { if (!(cond)) { t_failed_checks++; \
    fprintf(stderr, "  required %s:%d: %s\n", __FILE__, __LINE__, #cond); return; } } while (0)

/* ---- selection by name ---- */
#define T_MAX_NAMES 64
static char t_args[8192];              /* the program's arguments, NUL-separated */
static const char *t_names[T_MAX_NAMES];
static int t_n_names, t_list, t_args_read;
static unsigned char t_name_used[T_MAX_NAMES];

static inline void t_read_args(void) {
    if (t_args_read) return;
    t_args_read = 1;
    FILE *f = fopen("/proc/self/cmdline", "rb");
    if (!f) return;
    size_t n = fread(t_args, 1, sizeof t_args - 1, f);
    fclose(f);
    t_args[n] = 0;
    size_t i = strlen(t_args) + 1; /* skip argv[0] */
    while (i < n) {
        const char *a = t_args + i;
        if (!strcmp(a, "--list")) t_list = 1;
        else if (t_n_names < T_MAX_NAMES) t_names[t_n_names++] = a;
        i += strlen(a) + 1;
    }
}

/* Whether test fn runs: every test when no names were given, else those named (with or without test_). */
static inline int t_selected(const char *fn) {
    t_read_args();
    if (t_list) { printf("%s\n", fn); return 0; }
    int hit = t_n_names == 0;
    for (int i = 0; i < t_n_names; i++)
        if (!strcmp(t_names[i], fn) || (!strncmp(fn, "test_", 5) && !strcmp(t_names[i], fn + 5))) {
            t_name_used[i] = 1;
            hit = 1;
        }
    return hit;
}

/* Seconds on the monotonic clock: each result line names the tests that take long (make test has a
 * 10-minute budget on 2 cores). */
static inline double t_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
static inline void t_print_time(double t0) {
    double dt = t_now() - t0;
    if (dt >= 0.5) printf(" (%.1f s)", dt);
    printf("\n");
}

#define RUN(fn) do { if (!t_selected(#fn)) break; t_failed_checks = 0; t_skipped = 0; \
    double t_t0 = t_now(); fn(); \
    if (t_failed_checks) { t_n_fail++; printf("FAIL %s", #fn); } \
    else if (t_skipped) { t_n_skip++; printf("skipped: %s: %s", #fn, t_skip_reason); } \
    else { t_n_pass++; printf("ok %s", #fn); } t_print_time(t_t0); fflush(stdout); } while (0)

/* The exit status of the program: 1 when a test failed or a name given matched no test. */
static inline int t_done(void) {
    t_read_args();
    for (int i = 0; i < t_n_names && !t_list; i++)
        if (!t_name_used[i]) { t_n_fail++; printf("FAIL %s: no such test in this program\n", t_names[i]); }
    return t_n_fail ? 1 : 0;
}
#define TEST_DONE() t_done()

/* Path of a file under ../shared (or $SPECD_SHARED), or NULL when it is not there. */
static inline const char *shared_path(const char *rel) {
    static char buf[8][1024];
    static int slot;
    const char *root = getenv("SPECD_SHARED");
    if (!root) root = "../shared";
    char *p = buf[slot++ % 8];
    snprintf(p, 1024, "%s/%s", root, rel);
    return access(p, R_OK) == 0 ? p : NULL;
}
#endif
