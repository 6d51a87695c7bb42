/* The specd client library: talks protocol v1 (docs/protocol.md) to a running `specd serve`.
 *
 * One specd_client is one ZeroMQ DEALER connection, used by one thread at a time; open one per thread
 * for parallel requests. Every call returns 0 on success or -1 with *err filled in (err may be NULL).
 * No call blocks forever: connecting fails fast when nothing listens, and a request fails with
 * SPECD_ERR_TIMEOUT when the daemon sends nothing for the client's timeout (it sends heartbeats while a
 * request waits), or SPECD_ERR_CONNECT when the connection drops mid-request. Linked from libspecd-client.a with -lzmq -lmsgpackc. */
#ifndef SPECD_CLIENT_H
#define SPECD_CLIENT_H
#include <stddef.h>
#include <stdint.h>

typedef struct specd_client specd_client;

typedef enum specd_err_kind {
    SPECD_ERR_NONE = 0,
    SPECD_ERR_CONNECT = 1,  /* no daemon at the endpoint, or the connection dropped */
    SPECD_ERR_TIMEOUT = 2,  /* the daemon sent nothing within the timeout */
    SPECD_ERR_DAEMON = 3,   /* the daemon answered with an `error` reply (code + message) */
    SPECD_ERR_PROTOCOL = 4, /* the daemon's reply could not be understood */
    SPECD_ERR_ARG = 5,      /* a bad argument to this library (caught before sending) */
} specd_err_kind;

typedef struct specd_error {
    specd_err_kind kind;
    char code[32];     /* SPECD_ERR_DAEMON: the protocol's error code (e.g. "busy", "bad_request") */
    char message[512]; /* always a full sentence-like message naming what went wrong */
} specd_error;

typedef struct specd_options {
    const char *endpoint;   /* "ipc:///path", "tcp://host:port", or NULL: the daemon's default endpoint */
    int connect_timeout_ms; /* <= 0: 2000 */
    int timeout_ms;         /* silence allowed during a request; 0: 60000; < 0: wait forever */
    int wait_ms;            /* a daemon still starting (loading its models: no socket yet): keep trying to
                               connect for this long, every 100 ms; 0: one try */
    const char *curve_server; /* TCP with CURVE: the daemon's public key file (NAME.pub of `specd keygen`) */
    const char *curve_key;    /* TCP with CURVE: this client's key file (NAME.key, mode 0600); both or neither */
} specd_options;

/* Connects (fails with SPECD_ERR_CONNECT, "no daemon at ipc://…: is `specd serve` running?", when nothing
 * listens there, after opts->wait_ms of retries). opts may be NULL for the default endpoint and timeouts. */
int specd_connect(const specd_options *opts, specd_client **out, specd_error *err);
void specd_close(specd_client *c);
const char *specd_endpoint(const specd_client *c); /* the endpoint actually used */

/* A chat message (specd_chat). */
typedef struct specd_chat_msg {
    const char *role;    /* "system", "user", "assistant", ... as the model's chat template knows them */
    const char *content;
} specd_chat_msg;

/* A generation request. Fields left at their specd_gen_default() values are not sent, so the daemon's
 * defaults apply. specd_generate: exactly one of prompt / tokens; specd_chat: messages. */
typedef struct specd_gen {
    const char *prompt;
    const int32_t *tokens;
    int n_tokens;
    int max_tokens;          /* < 0: daemon default */
    double temperature;      /* < 0: default; 0: greedy */
    int top_k;               /* < 0: default */
    double top_p, min_p;     /* < 0: default */
    int has_seed;
    uint64_t seed;
    const char *const *stop; /* n_stop stop strings */
    int n_stop;
    const char *mode;        /* "spec", "plain", or NULL: default */
    int draft_max;           /* < 0: default */
    int stream;              /* 1 (default): token events reach the callback; 0: only the final result */
    int add_bos;             /* prompt only: -1 (default): the daemon's (yes); 0: no BOS; 1: BOS */
    int special;             /* prompt only: 1: special-token text ("<|eot_id|>") becomes that token */
    const specd_chat_msg *messages; /* specd_chat: the conversation, n_messages of them */
    int n_messages;
    int add_generation_prompt; /* specd_chat: -1 (default): yes; 0: no (the template's assistant header) */
} specd_gen;
specd_gen specd_gen_default(void);

/* One streamed token event: a valid UTF-8 text piece and the token ids it came from (one or more). */
typedef struct specd_token {
    const char *text;
    size_t len;
    const int32_t *ids;
    int n_ids;
    double t_ms; /* client-side arrival time, ms since the request was sent */
    /* microseconds from the daemon producing this piece to the client having decoded it (the IPC path),
     * from the event's `time_us`; -1 when unknown (not an ipc:// endpoint, or no time_us) */
    double delivery_us;
    uint64_t time_us; /* the daemon's monotonic clock (µs) when it produced this piece; 0 when unknown */
} specd_token;
/* Return 0 to go on, non-zero to cancel the request: no more callbacks; the result (every id the daemon
 * sent) has finish_reason "cancelled", unless the request ended before the cancel reached the daemon. */
typedef int (*specd_token_cb)(const specd_token *tok, void *user);

typedef struct specd_gen_stats { /* per-request stats from the `done` reply; -1 where not reported */
    int prompt_tokens, generated, drafted, accepted;
    double acceptance;   /* accepted / drafted */
    double queue_ms, ttft_ms, ms_per_token, total_ms;
    int prefilled, reused; /* prompt tokens computed, and taken from KV caches (a shared prefix) instead */
    int preempted;         /* times the request's KV blocks were taken back for older requests (recomputed) */
} specd_gen_stats;

typedef struct specd_result {
    uint64_t id;            /* the request id (chosen by the library, unique on this connection) */
    char *text;             /* the full generated text, NUL-terminated */
    size_t text_len;
    int32_t *ids;
    int n_ids;
    char finish_reason[16]; /* "stop", "length", "cancelled" */
    int32_t stop_token;     /* "stop" by an end-of-generation token: its id; else -1 */
    char stop_string[257];  /* "stop" by a stop string: that string; else "" */
    specd_gen_stats stats;
    /* client-side timings, ms since the request was sent */
    double client_ttft_ms, client_total_ms;
    int n_events;           /* token events received */
    char *json;             /* the daemon's `done` reply as one JSON object (all fields, also future ones) */
} specd_result;
void specd_result_free(specd_result *r);

/* Sends a generate request and waits for its `done` (0) or `error` (-1, kind SPECD_ERR_DAEMON).
 * cb may be NULL. The request id is written to r->id before the first callback. */
int specd_generate(specd_client *c, const specd_gen *g, specd_token_cb cb, void *user, specd_result *r,
                   specd_error *err);
/* The same for a chat: the daemon renders g->messages with the model's chat template and generates the
 * reply; generation ends at the model's end-of-turn token. */
int specd_chat(specd_client *c, const specd_gen *g, specd_token_cb cb, void *user, specd_result *r,
               specd_error *err);

/* Pull-style streaming, for callers that cannot block inside a callback (an HTTP server writing each piece
 * when its socket asks for more): specd_stream_begin sends a generate (chat: a chat) request and returns;
 * each specd_stream_next returns the next event: 1 with *tok (valid until the next call on c), 0 at the end
 * with *r filled as specd_generate fills it, -1 on an error (the request is over). specd_stream_cancel
 * asks the daemon to stop (the stream then ends with finish_reason "cancelled"); specd_stream_end frees
 * what the stream holds (call it after begin, whatever happened). specd_generate/specd_chat use these. */
typedef struct specd_stream {
    uint64_t id;
    double t0, ttft_ms;
    int n_events, cancelled;
    void *held; /* the reply the last token points into */
} specd_stream;
int specd_stream_begin(specd_client *c, int chat, const specd_gen *g, specd_stream *s, specd_error *err);
int specd_stream_next(specd_client *c, specd_stream *s, specd_token *tok, specd_result *r, specd_error *err);
int specd_stream_cancel(specd_client *c, specd_stream *s, specd_error *err);
void specd_stream_end(specd_stream *s);

/* flags: SPECD_TOK_ADD_BOS prepends the vocabulary's BOS token (as generate does with a prompt; 1 is this
 * flag), SPECD_TOK_SPECIAL makes special-token text ("<|eot_id|>") that one token. free(*ids). */
enum { SPECD_TOK_ADD_BOS = 1, SPECD_TOK_SPECIAL = 2 };
int specd_tokenize(specd_client *c, const char *text, int flags, int32_t **ids, int *n, specd_error *err);
int specd_detokenize(specd_client *c, const int32_t *ids, int n, char **text, specd_error *err); /* free(*text) */
/* special: control tokens come back as their text ("<|eot_id|>") instead of nothing. */
int specd_detokenize_special(specd_client *c, const int32_t *ids, int n, int special, char **text, specd_error *err);
/* info and stats: the daemon's reply map, as one JSON object (free(*json)). */
int specd_info(specd_client *c, char **json, specd_error *err);
int specd_stats(specd_client *c, char **json, specd_error *err);
/* Cancels the request with this id. Protocol v1 scopes ids to their connection, so this reaches only
 * requests sent on c (to cancel a running generate, return non-zero from its token callback).
 * *found (may be NULL) is set to whether the daemon had such a request queued or running. */
int specd_cancel(specd_client *c, uint64_t id, int *found, specd_error *err);
/* One ping round trip; *rtt_us (may be NULL) gets its duration in microseconds. */
int specd_ping(specd_client *c, double *rtt_us, specd_error *err);

/* Endpoint from --socket / --tcp style options (either may be NULL; neither: the daemon's default,
 * ipc://$XDG_RUNTIME_DIR/specd.sock else ipc:///tmp/specd-$UID.sock). Same rules as `specd serve`. */
int specd_resolve_endpoint(const char *socket_path, const char *tcp, char *buf, size_t n, specd_error *err);

#endif
