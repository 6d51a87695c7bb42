/* The daemon's ZeroMQ ROUTER loop: receives requests, answers the quick ops at once, and advances every
 * running generate request one engine step per turn, all in one forward batch (continuous batching:
 * requests join and leave between turns), checking the socket between turns. */
#ifndef SD_SERVER_H
#define SD_SERVER_H
#include <signal.h>
#include <stdbool.h>

#include "base/err.h"
#include "target/engine.h"

typedef struct sd_server_opts {
    const char *endpoint;    /* "ipc://..." or "tcp://..." */
    const char *socket_path; /* ipc socket file ("" for tcp) */
    int socket_mode;         /* file mode of the socket file (0600) */
    int max_sessions;        /* concurrent requests (sessions) */
    int queue;               /* wait queue length beyond max_sessions */
    int batch_tokens;        /* rows of one turn's batch that prefill chunks may fill (<= 0: no bound) */
    double grace_s;          /* on SIGTERM: let running requests finish this long */
    int max_tokens;          /* default max_tokens */
    sd_gen_params defaults;  /* default sampling / mode / draft bounds */
    const char *chat_template; /* --chat-template FILE: overrides the model's tokenizer.chat_template */
    /* --curve-secret FILE, --curve-clients DIR: CURVE on TCP (both or neither; required beyond loopback) */
    const char *curve_secret, *curve_clients;
    /* optional, for signal handlers: *report non-zero makes the server log a line of statistics and clear
     * it (SIGHUP, SIGUSR1); *bound is 1 while the socket file is the server's (bound, not yet removed) */
    volatile sig_atomic_t *report, *bound;
} sd_server_opts;

/* Before loading the models: -1 with a message when a live daemon already answers on the socket file (or
 * the path is some other file), so a second `specd serve` fails at once instead of after loading; or when
 * a TCP endpoint beyond loopback is asked for without CURVE, or the CURVE key files cannot be read. */
int sd_server_check_endpoint(const sd_server_opts *o, sd_err *err);
/* Binds the endpoint (refusing when a live daemon answers on it, replacing a stale socket file), serves
 * until *stop becomes non-zero, shuts down as docs/protocol.md §6 says and removes the socket file.
 * Returns 0 after a clean shutdown, -1 with err when it could not start. */
int sd_server_run(sd_engine *e, const sd_server_opts *o, volatile sig_atomic_t *stop, sd_err *err);

#endif
