/* OpenAI request and response JSON for the gateway (gateway/openai.c): request bodies become specd
 * requests (strictly validated: wrong types, unknown fields and out-of-range values are 400s naming the
 * field), `done` results become completion objects and SSE chunks. */
#ifndef SD_OPENAI_H
#define SD_OPENAI_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "clients/specd_client.h"

typedef enum { OAI_CHAT, OAI_COMPLETION } oai_kind;

/* A parsed request: g borrows strings from `root` (keep it until the request ends). */
typedef struct oai_request {
    oai_kind kind;
    json_t *root;
    specd_gen g;
    specd_chat_msg *msgs;
    char **parts;            /* contents joined from content-part arrays (owned) */
    int n_parts;
    const char *stop[16];
    bool stream, include_usage;
    const char *model;
} oai_request;

/* An HTTP error in OpenAI's shape. */
typedef struct oai_error {
    int status;
    char type[40], code[40], param[64], message[400];
} oai_error;

/* Parses a request body; 0, or -1 with e filled (400: bad JSON, wrong types, unknown fields...). */
int oai_parse(oai_kind kind, const char *body, size_t len, oai_request *r, oai_error *e);
void oai_request_free(oai_request *r);
/* An error reply of the daemon (or the client library) as an HTTP error. */
void oai_from_specd_error(const specd_error *se, oai_error *e);
/* The JSON text of an error (malloc'd). */
char *oai_error_json(const oai_error *e);
void oai_errorf(oai_error *e, int status, const char *type, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The non-streaming response object (malloc'd JSON text). */
char *oai_response(const oai_request *r, const specd_result *res, const char *id, long created);
/* One SSE event "data: {chunk}\n\n" (malloc'd): a text delta (first: with the assistant role; time_us,
 * when not 0, is the daemon's clock when it produced the piece, as specd.time_us, for latency checks), the
 * last chunk with finish_reason, or the usage chunk. */
char *oai_chunk_delta(const oai_request *r, const char *id, long created, const char *text, size_t len, bool first,
                      uint64_t time_us);
char *oai_chunk_finish(const oai_request *r, const char *id, long created, const char *finish_reason);
char *oai_chunk_usage(const oai_request *r, const char *id, long created, const specd_result *res);
const char *oai_finish_reason(const char *specd_reason);

#endif
