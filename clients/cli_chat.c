/* `specd-cli chat`: a conversation in the terminal. Each line typed is a user turn; the daemon renders the
 * whole history with the model's chat template and streams the reply, which joins the history. Ctrl-C
 * during a reply cancels that turn (what came so far is kept); Ctrl-C or Ctrl-D at the prompt ends.
 * Lines "/reset" (forget the history) and "/exit" are commands. */
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clients/cli.h"

static volatile sig_atomic_t g_cancel;
static void on_sigint(int sig) {
    (void)sig;
    g_cancel = 1;
}

static int print_piece(const specd_token *t, void *user) {
    (void)user;
    fwrite(t->text, 1, t->len, stdout);
    fflush(stdout);
    return g_cancel;
}

typedef struct history {
    specd_chat_msg *m;
    char **owned; /* the strings this history allocated (user lines, replies) */
    int n, cap;
} history;

static int push(history *h, const char *role, char *content) {
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 16;
        specd_chat_msg *m = realloc(h->m, sizeof *m * (size_t)cap);
        if (m) h->m = m;
        char **o = realloc(h->owned, sizeof *o * (size_t)cap);
        if (o) h->owned = o;
        if (!m || !o) return -1;
        h->cap = cap;
    }
    h->m[h->n] = (specd_chat_msg){role, content};
    h->owned[h->n++] = content;
    return 0;
}

static void reset(history *h, int keep) {
    while (h->n > keep) free(h->owned[--h->n]);
}

/* Reads one line (without its newline) into a malloc'd string; NULL at end of input. */
static char *read_line(void) {
    size_t cap = 0;
    char *line = NULL;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
    return line;
}

int cli_chat(cli_opts *o) {
    if (o->n_args != 0) {
        fprintf(stderr, "specd-cli chat: takes no arguments (type the messages; --system TEXT sets a system message)\n");
        return CLI_USAGE;
    }
    specd_client *c;
    specd_error e;
    if (specd_connect(&o->conn, &c, &e)) return cli_fail(&e);
    history h = {0};
    int keep = 0, rc = CLI_OK;
    bool tty = isatty(STDIN_FILENO);
    if (o->system) {
        char *s = strdup(o->system);
        if (!s || push(&h, "system", s)) { free(s); specd_close(c); return CLI_ERR; }
        keep = 1;
    }
    for (;;) {
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        signal(SIGINT, SIG_DFL); /* at the prompt Ctrl-C ends the program */
        char *line = read_line();
        if (!line || !strcmp(line, "/exit")) { free(line); break; }
        if (!strcmp(line, "/reset")) { free(line); reset(&h, keep); continue; }
        if (!*line) { free(line); continue; }
        if (push(&h, "user", line)) { free(line); rc = CLI_ERR; break; }
        specd_gen g = o->gen;
        g.prompt = NULL;
        g.messages = h.m;
        g.n_messages = h.n;
        g.stream = 1;
        g_cancel = 0;
        signal(SIGINT, on_sigint);
        specd_result r;
        if (specd_chat(c, &g, print_piece, NULL, &r, &e)) {
            fflush(stdout);
            rc = cli_fail(&e);
            if (e.kind != SPECD_ERR_DAEMON) break; /* the connection is gone */
            reset(&h, h.n - 1);                   /* forget the turn the daemon refused */
            continue;
        }
        fputs(g_cancel ? " [cancelled]\n" : "\n", stdout);
        fflush(stdout);
        if (o->verbose) fprintf(stderr, "[%d tokens, finish %s]\n", r.stats.generated, r.finish_reason);
        char *reply = r.text;
        r.text = NULL;
        specd_result_free(&r);
        if (push(&h, "assistant", reply)) { free(reply); rc = CLI_ERR; break; }
        rc = CLI_OK;
    }
    reset(&h, 0);
    free(h.m);
    free(h.owned);
    specd_close(c);
    return rc;
}
