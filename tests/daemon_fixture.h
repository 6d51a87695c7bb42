/* For client tests: runs `build/specd serve` on a temporary socket with the small shared models, and
 * runs commands capturing their output. Header-only (each tests/test_*.c is its own program). */
#ifndef SD_DAEMON_FIXTURE_H
#define SD_DAEMON_FIXTURE_H
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clients/specd_client.h"
#include "base/clock.h"
#include "tests/test_util.h"

typedef struct fixture_daemon {
    pid_t pid;
    char dir[256];      /* temporary directory holding the socket and the log */
    char sock[300];
    char endpoint[320];
    char log[300];
} fixture_daemon;

static inline const char *fx_build_dir(void) {
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Starts the daemon: argv_extra are the model options (NULL-terminated). Returns 0 when it answers a ping,
 * -1 with why[] filled (the daemon's own message when it exited). */
static inline int fx_daemon_start(fixture_daemon *d, const char *const *argv_extra, char *why, size_t why_n) {
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/specd-test-XXXXXX");
    if (!mkdtemp(d->dir)) { snprintf(why, why_n, "mkdtemp failed"); return -1; }
    snprintf(d->sock, sizeof d->sock, "%s/d.sock", d->dir);
    snprintf(d->endpoint, sizeof d->endpoint, "ipc://%s", d->sock);
    snprintf(d->log, sizeof d->log, "%s/daemon.log", d->dir);
    char exe[512];
    snprintf(exe, sizeof exe, "%s/specd", fx_build_dir());
    const char *argv[64];
    int n = 0;
    argv[n++] = exe;
    argv[n++] = "serve";
    for (int i = 0; argv_extra[i] && n < 58; i++) argv[n++] = argv_extra[i];
    argv[n++] = "--socket";
    argv[n++] = d->sock;
    argv[n++] = "-t";
    argv[n++] = "1";
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    d->pid = fork();
    if (d->pid < 0) { snprintf(why, why_n, "fork failed"); return -1; }
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    double end = sd_now_ms() + 20000;
    while (sd_now_ms() < end) {
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            char *log = read_all(d->log, NULL);
            char *nl = log ? strchr(log, '\n') : NULL;
            if (nl) *nl = 0;
            snprintf(why, why_n, "`specd serve` exited (status %d): %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                     log && *log ? log : "no output");
            free(log);
            d->pid = 0;
            return -1;
        }
        specd_client *c;
        specd_options o = {.endpoint = d->endpoint, .connect_timeout_ms = 500};
        if (specd_connect(&o, &c, NULL) == 0) {
            specd_close(c);
            return 0;
        }
        usleep(50 * 1000);
    }
    snprintf(why, why_n, "`specd serve` did not answer within 20 s");
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    return -1;
}

/* SIGTERM, wait (then SIGKILL after 10 s); returns the exit status, -1 when it had to be killed. */
static inline int fx_daemon_stop(fixture_daemon *d) {
    int rc = -1;
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        double end = sd_now_ms() + 10000;
        int st = 0;
        pid_t w;
        while ((w = waitpid(d->pid, &st, WNOHANG)) == 0 && sd_now_ms() < end) usleep(20 * 1000);
        if (w == d->pid) rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        else { kill(d->pid, SIGKILL); waitpid(d->pid, NULL, 0); }
        d->pid = 0;
    }
    unlink(d->sock);
    unlink(d->log);
    rmdir(d->dir);
    return rc;
}

/* Runs a shell command; its stdout goes to *out (malloc'd), stderr to *err_out (when not NULL).
 * Returns the exit status (or -1). */
static inline int fx_run(const char *cmd, char **out, char **err_out) {
    char of[] = "/tmp/specd-test-out-XXXXXX", ef[] = "/tmp/specd-test-err-XXXXXX";
    int ofd = mkstemp(of), efd = mkstemp(ef);
    if (ofd < 0 || efd < 0) return -1;
    close(ofd);
    close(efd);
    char *full = malloc(strlen(cmd) + 128);
    if (!full) return -1;
    sprintf(full, "%s >%s 2>%s", cmd, of, ef);
    fflush(stdout);
    int st = system(full);
    free(full);
    if (out) *out = read_all(of, NULL);
    if (err_out) *err_out = read_all(ef, NULL);
    unlink(of);
    unlink(ef);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Debian's python3 with python3-zmq and python3-msgpack (the PATH's python3 may be another one). */
static inline const char *fx_python(void) {
    static const char *const cands[] = {"/usr/bin/python3", "python3"};
    for (int i = 0; i < 2; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "%s -c 'import zmq, msgpack' >/dev/null 2>&1", cands[i]);
        if (system(cmd) == 0) return cands[i];
    }
    return NULL;
}

#endif
