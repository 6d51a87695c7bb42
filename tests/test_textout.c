/* Stop strings and held-back text (target/textout.c). */
#include "target/textout.h"
#include "test.h"

/* Pushes pieces one by one, releasing after each; returns the concatenated released text. */
static int feed(sd_textout *t, const char *const *pieces, int n, char *shown, size_t cap) {
    size_t len = 0;
    int stopped = 0;
    for (int i = 0; i < n && !stopped; i++) {
        stopped = sd_textout_push(t, pieces[i], strlen(pieces[i]), NULL);
        size_t m;
        const char *s = sd_textout_release(t, stopped, &m);
        if (len + m < cap) memcpy(shown + len, s, m), len += m;
    }
    if (!stopped) {
        size_t m;
        const char *s = sd_textout_release(t, true, &m);
        if (len + m < cap) memcpy(shown + len, s, m), len += m;
    }
    shown[len] = 0;
    return stopped;
}

static void test_stop_spanning_pieces(void) {
    sd_textout t;
    const char *stop[] = {"END", "\n\n"};
    REQUIRE(sd_textout_init(&t, stop, 2, NULL) == 0);
    const char *pieces[] = {"Hello E", "N", "D more"};
    char out[64];
    CHECK(feed(&t, pieces, 3, out, sizeof out) == 1);
    CHECK_STR_EQ(out, "Hello ");
    sd_textout_free(&t);

    /* held back while it could be a stop string, released when it cannot */
    REQUIRE(sd_textout_init(&t, stop, 2, NULL) == 0);
    CHECK_EQ_INT(sd_textout_push(&t, "abc E", 5, NULL), 0);
    size_t n;
    const char *s = sd_textout_release(&t, false, &n);
    CHECK_EQ_INT(n, 4);
    CHECK(!memcmp(s, "abc ", 4));
    CHECK_EQ_INT(sd_textout_push(&t, "Nx", 2, NULL), 0);
    s = sd_textout_release(&t, false, &n);
    CHECK_EQ_INT(n, 3);
    CHECK(!memcmp(s, "ENx", 3));
    sd_textout_free(&t);
}

static void test_earliest_stop_wins(void) {
    sd_textout t;
    const char *stop[] = {"cd", "bcde"};
    REQUIRE(sd_textout_init(&t, stop, 2, NULL) == 0);
    const char *pieces[] = {"ab", "cdef"};
    char out[64];
    CHECK(feed(&t, pieces, 2, out, sizeof out) == 1);
    CHECK_STR_EQ(out, "a"); /* "bcde" starts before "cd" */
    sd_textout_free(&t);
}

static void test_no_stop_and_final(void) {
    sd_textout t;
    const char *stop[] = {"xyz"};
    REQUIRE(sd_textout_init(&t, stop, 1, NULL) == 0);
    const char *pieces[] = {"a", "x", "y"}; /* ends on a stop prefix: released at the end */
    char out[64];
    CHECK(feed(&t, pieces, 3, out, sizeof out) == 0);
    CHECK_STR_EQ(out, "axy");
    sd_textout_free(&t);
    REQUIRE(sd_textout_init(&t, NULL, 0, NULL) == 0);
    CHECK(feed(&t, pieces, 3, out, sizeof out) == 0);
    CHECK_STR_EQ(out, "axy");
    sd_textout_free(&t);
    sd_err err;
    const char *bad[] = {"ok", ""};
    CHECK(sd_textout_init(&t, bad, 2, &err) == -1);
    CHECK(strstr(err.msg, "stop string 2") != NULL);
}

static void test_utf8_stop(void) {
    sd_textout t;
    const char *stop[] = {"\xC3\xA9t\xC3\xA9"}; /* "été" */
    REQUIRE(sd_textout_init(&t, stop, 1, NULL) == 0);
    const char *pieces[] = {"caf\xC3\xA9", " \xC3\xA9", "t", "\xC3\xA9!"};
    char out[64];
    CHECK(feed(&t, pieces, 4, out, sizeof out) == 1);
    CHECK_STR_EQ(out, "caf\xC3\xA9 ");
    sd_textout_free(&t);
}

int main(void) {
    RUN(test_stop_spanning_pieces);
    RUN(test_earliest_stop_wins);
    RUN(test_no_stop_and_final);
    RUN(test_utf8_stop);
    return TEST_DONE();
}
