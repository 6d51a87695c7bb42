/* The option table and its parser (base/args.h, target/options.h, cmd/options.h): defaults, SPECD_*
 * environment variables, the command line winning, messages naming the option and its range, rows
 * limited to the commands that take them, one default per option (the engine's), --help and --version
 * of both binaries. */
#include <stdlib.h>

#include "cmd/options.h"
#include "test.h"
#include "tests/test_util.h"

static const sd_opt_table *const k_shared[] = {&sd_engine_options, &sd_request_options};

static sd_args_spec spec_for(unsigned cmd) {
    return (sd_args_spec){.prog = "specd test", .usage = "specd test", .tables = k_shared, .n_tables = 2, .cmd = cmd};
}

static int parse(unsigned cmd, sd_optval *v, sd_err *err, int argc, char **argv) {
    sd_args_spec s = spec_for(cmd);
    return sd_args_parse(&s, argc, argv, v, SD_O_COUNT, NULL, err);
}

/* With nothing given, every command's request parameters are the engine's defaults. */
static void test_one_default_per_option(void) {
    sd_optval v[SD_O_COUNT];
    sd_err err = {{0}};
    char *argv[] = {"x", NULL};
    unsigned cmds[] = {SD_CMD_GENERATE, SD_CMD_SERVE, SD_CMD_BENCH};
    for (int c = 0; c < 3; c++) {
        REQUIRE(parse(cmds[c], v, &err, 1, argv) == 0);
        sd_gen_params p, d = sd_gen_params_default();
        cmd_gen_params(v, &p);
        CHECK_EQ_INT(p.max_tokens, d.max_tokens);
        CHECK_EQ_INT(p.draft_max, d.draft_max);
        CHECK_EQ_INT(p.draft_min, d.draft_min);
        CHECK(p.draft_p_min == d.draft_p_min && p.mode == d.mode);
        CHECK(p.sampling.temperature == d.sampling.temperature && p.sampling.top_k == d.sampling.top_k);
        CHECK(p.sampling.top_p == d.sampling.top_p && p.sampling.min_p == d.sampling.min_p);
        if (cmds[c] != SD_CMD_SERVE) CHECK(p.sampling.seed == d.sampling.seed); /* serve: per request */
    }
    /* the ranges are the engine's */
    for (int i = 0; i < sd_request_options.n; i++) {
        const sd_opt *o = &sd_request_options.opts[i];
        if (o->id == SD_O_DRAFT_MAX) CHECK_EQ_INT((int)o->hi, SD_DRAFT_LIMIT);
        if (o->id == SD_O_TEMP) CHECK_EQ_INT((int)o->hi, SD_TEMP_MAX);
    }
}

static void test_env_and_command_line(void) {
    sd_optval v[SD_O_COUNT];
    sd_err err = {{0}};
    setenv("SPECD_TEMP", "0.5", 1);
    setenv("SPECD_DRAFT_MAX", "4", 1);
    char *a1[] = {"x", "--draft-max", "6", NULL};
    REQUIRE(parse(SD_CMD_GENERATE, v, &err, 3, a1) == 0);
    CHECK_NEAR(v[SD_O_TEMP].f, 0.5, 1e-12);  /* from the environment */
    CHECK(v[SD_O_TEMP].given && !v[SD_O_TOP_K].given);
    CHECK_EQ_INT(v[SD_O_DRAFT_MAX].i, 6);    /* the command line wins */
    setenv("SPECD_TEMP", "hot", 1);
    CHECK(parse(SD_CMD_GENERATE, v, &err, 1, a1) == -1);
    CHECKF(strstr(err.msg, "SPECD_TEMP") && strstr(err.msg, "0..100") && strstr(err.msg, "'hot'"), "%s", err.msg);
    unsetenv("SPECD_TEMP");
    unsetenv("SPECD_DRAFT_MAX");
}

static void test_messages_name_option_and_range(void) {
    sd_optval v[SD_O_COUNT];
    sd_err err = {{0}};
    char *a1[] = {"x", "--draft-max", "17"};
    CHECK(parse(SD_CMD_SERVE, v, &err, 3, a1) == -1);
    CHECKF(strstr(err.msg, "--draft-max") && strstr(err.msg, "1..16") && strstr(err.msg, "'17'"), "%s", err.msg);
    char *a2[] = {"x", "--temp"};
    CHECK(parse(SD_CMD_GENERATE, v, &err, 2, a2) == -1 && strstr(err.msg, "--temp needs a value"));
    char *a3[] = {"x", "--frobnicate", "1"};
    CHECK(parse(SD_CMD_GENERATE, v, &err, 3, a3) == -1 && strstr(err.msg, "unknown option '--frobnicate'"));
    char *a4[] = {"x", "--stop", "a", "--stop", "b"}; /* serve does not take --stop */
    CHECK(parse(SD_CMD_SERVE, v, &err, 5, a4) == -1 && strstr(err.msg, "unknown option '--stop'"));
    REQUIRE(parse(SD_CMD_GENERATE, v, &err, 5, a4) == 0);
    CHECK(v[SD_O_STOP].n_list == 2 && !strcmp(v[SD_O_STOP].list[1], "b"));
    char *a5[] = {"x", "hello"};
    CHECK(parse(SD_CMD_GENERATE, v, &err, 2, a5) == -1 && strstr(err.msg, "unexpected argument 'hello'"));
    char *a6[] = {"x", "-n", "0"};
    CHECK(parse(SD_CMD_GENERATE, v, &err, 3, a6) == -1 && strstr(err.msg, "-n needs an integer in 1..1048576"));
}

/* Runs a shell command; its stdout and stderr together (malloc'd) and its exit status. */
static char *run(const char *args, int *st) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/%s 2>&1", getenv("BUILD") ? getenv("BUILD") : "build", args);
    return run_capture(cmd, st);
}

static void test_help_and_version(void) {
    int st;
    char *out = run("specd generate --help", &st);
    CHECK(st == 0 && out && strstr(out, "--draft-max K") && strstr(out, "(1..16, default 8)") && strstr(out, "SPECD_"));
    free(out);
    out = run("specd serve --help", &st);
    CHECK(st == 0 && out && strstr(out, "--max-sessions") && strstr(out, "--draft-max") && !strstr(out, "--stop"));
    free(out);
    out = run("specd bench --help", &st);
    CHECK(st == 0 && out && strstr(out, "--sweep") && strstr(out, "--lookup N"));
    free(out);
    out = run("specd-cli ping --help", &st);
    CHECK(st == 0 && out && strstr(out, "--count") && !strstr(out, "--temp"));
    free(out);
    out = run("specd-cli generate --help", &st);
    CHECK(st == 0 && out && strstr(out, "--temp") && strstr(out, "--echo") && !strstr(out, "--count"));
    free(out);
    out = run("specd --version", &st);
    CHECK(st == 0 && out && !strncmp(out, "specd 0.", 8));
    free(out);
    out = run("specd-cli --version", &st);
    CHECK(st == 0 && out && !strncmp(out, "specd-cli 0.", 12) && strstr(out, "protocol 1"));
    free(out);
    out = run("specd-cli --socket /tmp/specd-none.sock ping --temp 1", &st);
    CHECKF(st == 2 && out && strstr(out, "--temp does not apply"), "%d: %s", st, out ? out : "");
    free(out);
    out = run("specd generate -m /nonexistent.gguf -p y --json", &st); /* a runtime error, as JSON */
    CHECKF(st == 1 && out && !strncmp(out, "{\"error\":{\"message\":\"", 21) && strstr(out, "nonexistent.gguf"), "%s",
           out ? out : "");
    free(out);
    out = run("specd generate -m x -p y --draft-max 99", &st);
    CHECKF(st == 2 && out && strstr(out, "--draft-max needs an integer in 1..16, got '99'"), "%s", out ? out : "");
    free(out);
}

int main(void) {
    RUN(test_one_default_per_option);
    RUN(test_env_and_command_line);
    RUN(test_messages_name_option_and_range);
    RUN(test_help_and_version);
    return TEST_DONE();
}
