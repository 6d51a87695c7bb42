/* The OpenAI-compatible HTTP gateway (`specd serve --http [HOST:]PORT`), on libmicrohttpd.
 *
 * It is a thin client of the daemon's own socket, run in the daemon's process: every HTTP request becomes
 * one protocol request on a daemon connection it holds alone while it runs (the C client library; idle
 * connections are kept for the next requests), so the engine loop stays the single owner of the models,
 * the scheduler treats HTTP and IPC clients alike, and a client that leaves mid-stream has its request
 * cancelled. The gateway starts before the models load and
 * answers /health 503 until the daemon answers a ping.
 *
 * Endpoints: GET /health, GET /v1/models[/{id}], POST /v1/chat/completions, POST /v1/completions (both with
 * `stream`: SSE chunks ending `data: [DONE]`), GET /metrics (Prometheus text). Errors use OpenAI's shape
 * {"error": {"message", "type", "param", "code"}} and status codes. */
#ifndef SD_GATEWAY_H
#define SD_GATEWAY_H
#include <stddef.h>

#include "base/err.h"

typedef struct sd_gateway_opts {
    const char *listen;   /* "[HOST:]PORT"; host 127.0.0.1 unless named */
    const char *endpoint; /* the daemon's endpoint ("ipc://...") */
    const char *api_key;  /* NULL: none (allowed on loopback only); else `Authorization: Bearer KEY` */
    size_t max_body;      /* bytes of a request body (0: 4 MiB); larger ones get 413 */
    int body_timeout_s;   /* a request (headers and body) still arriving after this long: 408, and the connection closes, as idle ones do (0: 30) */
} sd_gateway_opts;

typedef struct sd_gateway sd_gateway;

/* Binds and starts serving in libmicrohttpd's threads. Fails (naming why) on a bad address, a port in
 * use, or a non-loopback address without an API key. */
int sd_gateway_start(const sd_gateway_opts *o, sd_gateway **out, sd_err *err);
void sd_gateway_stop(sd_gateway *g);

#endif
