/* Protocol v1 between `specd serve` and its clients (docs/protocol.md is the reference).
 * One MessagePack map per ZeroMQ message; the daemon is a ROUTER, clients are DEALERs.
 *
 * This module is shared by the daemon and the client library, so it depends on nothing but msgpack-c
 * and base/err.h: no model, engine or daemon types appear here.
 *
 * Requests: sd_request (decoded strictly: every problem becomes an sd_proto_err naming the field).
 * Replies: encoders for every reply type, and sd_reply_decode() which fills the common fields and keeps
 * the unpacked object for callers that want the nested maps of `info` and `stats`. */
#ifndef SD_PROTOCOL_H
#define SD_PROTOCOL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "base/err.h"
#include "base/utf8.h"
#include "target/limits.h" /* macros only: the engine's ranges, which the protocol's match */

#define SD_PROTO_VERSION 1

/* Limits every daemon enforces (a daemon may announce tighter ones in `info.limits`). */
#define SD_PROTO_MAX_MSG_BYTES (4u << 20)     /* ZMQ_MAXMSGSIZE: larger messages drop the connection */
#define SD_PROTO_MAX_TEXT_BYTES (1u << 20)    /* prompt / tokenize text */
#define SD_PROTO_MAX_INPUT_TOKENS (1 << 18)   /* `tokens` arrays in requests */
#define SD_PROTO_MAX_GEN_TOKENS SD_MAX_TOKENS_LIMIT /* max_tokens upper bound (the context bounds it further) */
#define SD_PROTO_MAX_STOP SD_MAX_STOP         /* stop strings per request */
#define SD_PROTO_MAX_STOP_BYTES 256           /* bytes per stop string */
#define SD_PROTO_MAX_DRAFT 64                 /* draft_max upper bound on the wire; today's engine takes
                                                 SD_DRAFT_LIMIT and says so in info.limits.draft_max */
#define SD_PROTO_MAX_TOP_K SD_TOP_K_MAX
#define SD_PROTO_MAX_TEMPERATURE ((double)SD_TEMP_MAX)
#define SD_PROTO_MAX_MESSAGES 1024            /* chat: messages per request */
#define SD_PROTO_MAX_ROLE_BYTES 64            /* chat: bytes of a message's role */

typedef enum sd_op {
    SD_OP_NONE = 0,
    SD_OP_GENERATE,
    SD_OP_TOKENIZE,
    SD_OP_DETOKENIZE,
    SD_OP_INFO,
    SD_OP_STATS,
    SD_OP_CANCEL,
    SD_OP_PING,
    SD_OP_CHAT,
    SD_OP_LAST = SD_OP_CHAT,
} sd_op;
const char *sd_op_name(sd_op op);      /* "generate", ... ; "?" for SD_OP_NONE */
sd_op sd_op_parse(const char *s, size_t len); /* SD_OP_NONE when unknown */

typedef enum sd_gen_mode_p { SD_PMODE_SPEC = 0, SD_PMODE_PLAIN = 1 } sd_gen_mode_p;

/* Bits of sd_req_generate.set: which optional fields the request carried (others take the daemon's
 * defaults, see `info.defaults`). */
enum {
    SD_GF_MAX_TOKENS = 1 << 0,
    SD_GF_TEMPERATURE = 1 << 1,
    SD_GF_TOP_K = 1 << 2,
    SD_GF_TOP_P = 1 << 3,
    SD_GF_MIN_P = 1 << 4,
    SD_GF_SEED = 1 << 5,
    SD_GF_STOP = 1 << 6,
    SD_GF_MODE = 1 << 7,
    SD_GF_DRAFT_MAX = 1 << 8,
    SD_GF_STREAM = 1 << 9,
    SD_GF_ADD_BOS = 1 << 10,
    SD_GF_SPECIAL = 1 << 11,      /* generate: `special` */
    SD_GF_ADD_GEN_PROMPT = 1 << 12, /* chat: `add_generation_prompt` */
};

typedef struct sd_req_generate {
    /* exactly one of prompt (UTF-8 text, NUL-terminated copy) and tokens is set */
    char *prompt;
    size_t prompt_len;
    int32_t *tokens;
    int n_tokens;
    unsigned set;    /* SD_GF_* bits */
    int max_tokens;  /* 1 .. SD_PROTO_MAX_GEN_TOKENS */
    float temperature; /* 0 .. 100 (0: greedy) */
    int top_k;       /* 0 (off) .. SD_PROTO_MAX_TOP_K */
    float top_p;     /* (0, 1] (1: off) */
    float min_p;     /* [0, 1] (0: off) */
    uint64_t seed;
    char **stop;     /* n_stop NUL-terminated UTF-8 strings, each 1..SD_PROTO_MAX_STOP_BYTES bytes */
    int n_stop;
    sd_gen_mode_p mode;
    int draft_max;   /* 1 .. SD_PROTO_MAX_DRAFT */
    bool stream;     /* default false */
    bool add_bos;    /* prompt text only: default true */
    bool special;    /* prompt text only: special-token text ("<|eot_id|>") becomes that token; default false */
} sd_req_generate;

/* One chat message (role and content, both NUL-terminated UTF-8 copies). */
typedef struct sd_chat_msg {
    char *role;
    char *content;
    size_t content_len;
} sd_chat_msg;

typedef struct sd_request {
    uint64_t id;
    sd_op op;
    sd_req_generate gen;    /* SD_OP_GENERATE; SD_OP_CHAT: the generation fields (no prompt/tokens) */
    sd_chat_msg *messages;  /* SD_OP_CHAT */
    int n_messages;
    bool add_generation_prompt; /* SD_OP_CHAT: default true */
    bool special;           /* SD_OP_TOKENIZE: parse special-token text; SD_OP_DETOKENIZE: render special
                               tokens as their text; default false */
    char *text;             /* SD_OP_TOKENIZE: NUL-terminated copy */
    size_t text_len;
    bool add_bos;           /* SD_OP_TOKENIZE: default true */
    int32_t *tokens;        /* SD_OP_DETOKENIZE */
    int n_tokens;
    uint64_t target;        /* SD_OP_CANCEL: id of the request to cancel */
} sd_request;

/* Initialises r for op with every optional field unset (defaults). */
void sd_request_init(sd_request *r, sd_op op, uint64_t id);
/* Frees what a decoded request owns (strings, arrays); r can be reused after. Safe on a zeroed r. */
void sd_request_free(sd_request *r);

/* Error codes (the `code` field of an `error` reply). */
#define SD_E_BAD_MESSAGE "bad_message"     /* not MessagePack, not a map, trailing bytes */
#define SD_E_BAD_VERSION "bad_version"     /* `v` is not 1 */
#define SD_E_UNKNOWN_OP "unknown_op"
#define SD_E_MISSING_FIELD "missing_field"
#define SD_E_BAD_TYPE "bad_type"           /* a field has the wrong MessagePack type */
#define SD_E_OUT_OF_RANGE "out_of_range"   /* a number outside its range, too many items, too long */
#define SD_E_BAD_UTF8 "bad_utf8"           /* prompt, text or a stop string is not valid UTF-8 */
#define SD_E_UNKNOWN_FIELD "unknown_field"
#define SD_E_DUPLICATE_FIELD "duplicate_field"
#define SD_E_TOO_LONG "too_long"           /* the prompt (+ max_tokens) does not fit in the context */
#define SD_E_DUPLICATE_ID "duplicate_id"   /* this client already has a request in flight with this id */
#define SD_E_BUSY "busy"                   /* every session is busy and the wait queue is full */
#define SD_E_SHUTTING_DOWN "shutting_down"
#define SD_E_INTERNAL "internal"
#define SD_E_REPLY_TOO_LARGE "reply_too_large" /* the answer would exceed SD_PROTO_MAX_MSG_BYTES */
#define SD_E_UNSUPPORTED "unsupported"     /* a known feature this daemon cannot serve (no chat template, tools) */
#define SD_E_TEMPLATE "template_error"     /* chat: the chat template raised an error for these messages */

/* A request decode failure: what to put in the `error` reply. */
typedef struct sd_proto_err {
    char code[32];
    char field[64];    /* "" when the error is not about one field */
    char message[400];
    bool has_id;       /* the request's id was readable, so the reply can echo it */
    uint64_t id;
    sd_op op;          /* the op when it was readable, else SD_OP_NONE */
} sd_proto_err;

/* Decodes and validates one request message. 0 on success (r owns its allocations: sd_request_free),
 * -1 with *e filled (r left empty). */
int sd_request_decode(const void *buf, size_t len, sd_request *r, sd_proto_err *e);
/* Encodes a request (validating it the same way: an invalid request is an error, not a message).
 * *buf is malloc'd. */
int sd_request_encode(const sd_request *r, char **buf, size_t *len, sd_err *err);

/* ---- replies ---- */

typedef enum sd_reply_type {
    SD_REPLY_NONE = 0,
    SD_REPLY_TOKEN,     /* streamed piece of a generate */
    SD_REPLY_DONE,      /* end of a generate */
    SD_REPLY_ERROR,     /* end of any request that failed (including `busy`) */
    SD_REPLY_RESULT,    /* the answer to tokenize, detokenize, info, stats, cancel, ping */
    SD_REPLY_HEARTBEAT, /* daemon -> client keep-alive; no id; clients ignore it */
} sd_reply_type;
const char *sd_reply_type_name(sd_reply_type t);

/* Per-request statistics carried by `done`. */
typedef struct sd_done_stats {
    int prompt_tokens, prefilled, generated;
    int reused, preempted;   /* prompt tokens taken from KV caches; times preempted (recomputed) */
    int drafted, accepted, target_passes, draft_k;
    double queue_ms, ttft_ms, ms_per_token, total_ms;
    double acceptance;        /* accepted / drafted, 0 when nothing was drafted */
    sd_gen_mode_p mode;       /* the mode actually used (spec falls back to plain without a proposer) */
    uint64_t seed;            /* the seed used (random per request unless the request gave one) */
} sd_done_stats;

/* finish_reason values */
#define SD_FINISH_STR_STOP "stop"
#define SD_FINISH_STR_LENGTH "length"
#define SD_FINISH_STR_CANCELLED "cancelled"

/* Encoders: each returns 0 and appends one complete message to sb (callers clear sb between messages),
 * or -1 only when msgpack fails to allocate. */
int sd_enc_token(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids,
                 int n_ids);
/* The same with `time_us`: the daemon's CLOCK_MONOTONIC (microseconds) when the step produced the piece,
 * so a client on the same machine can measure the IPC latency of each token. */
int sd_enc_token_t(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids,
                   int n_ids, uint64_t time_us);
int sd_enc_done(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids,
                int n_ids, const char *finish_reason, const sd_done_stats *st);
/* The same with why a `stop` finish stopped: stop_token >= 0 (an end-of-generation token) becomes
 * `stop_token`, a non-NULL stop_string `stop_string`; neither when -1 / NULL. */
int sd_enc_done_stop(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids,
                     int n_ids, const char *finish_reason, const sd_done_stats *st, int32_t stop_token,
                     const char *stop_string);
/* has_id false: the id could not be read (malformed message); `id` is then nil. field may be NULL/"". */
int sd_enc_error(msgpack_sbuffer *sb, bool has_id, uint64_t id, const char *code, const char *field,
                 const char *message);
int sd_enc_busy(msgpack_sbuffer *sb, uint64_t id, int retry_after_ms, int queued, int active);
int sd_enc_heartbeat(msgpack_sbuffer *sb);
int sd_enc_result_tokens(msgpack_sbuffer *sb, uint64_t id, const int32_t *ids, int n_ids); /* tokenize */
int sd_enc_result_text(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t len);   /* detokenize */
int sd_enc_result_cancel(msgpack_sbuffer *sb, uint64_t id, uint64_t target, bool found);
/* backend_error: NULL while the backend is healthy, else its sticky error (the reply says healthy false). */
int sd_enc_result_pong(msgpack_sbuffer *sb, uint64_t id, uint64_t time_us, const char *backend_error);
/* Starts a result map for `op` with n_extra more key/value pairs the caller packs itself (info, stats):
 * the map gets v, id, type, op plus n_extra entries. */
int sd_enc_result_begin(msgpack_packer *pk, uint64_t id, sd_op op, int n_extra);

/* Packs a str (helpers for callers building nested maps). */
void sd_pack_cstr(msgpack_packer *pk, const char *s);
void sd_pack_kv_str(msgpack_packer *pk, const char *key, const char *val);
void sd_pack_kv_int(msgpack_packer *pk, const char *key, int64_t val);
void sd_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val);
void sd_pack_kv_double(msgpack_packer *pk, const char *key, double val);
/* A float setting as the double of its shortest decimal (0.05f is sent as 0.05). */
void sd_pack_kv_float(msgpack_packer *pk, const char *key, float val);
void sd_pack_kv_bool(msgpack_packer *pk, const char *key, bool val);

/* A decoded reply. Pointers (text, code, ...) point into `up` and are valid until sd_reply_free. */
typedef struct sd_reply {
    sd_reply_type type;
    bool has_id;
    uint64_t id;
    sd_op op;                  /* RESULT: the op answered */
    /* TOKEN and DONE: text piece / full text; RESULT detokenize: text */
    const char *text;
    size_t text_len;
    /* TOKEN: ids of this piece; DONE: every generated id; RESULT tokenize: the ids (malloc'd copy) */
    int32_t *tokens;
    int n_tokens;
    /* DONE */
    char finish_reason[16];
    int32_t stop_token;        /* the end-of-generation token that ended it, -1 when none */
    char stop_string[SD_PROTO_MAX_STOP_BYTES + 1]; /* the stop string that matched, "" when none */
    sd_done_stats stats;
    /* ERROR */
    char code[32];
    char field[64];
    char message[400];
    int retry_after_ms;        /* busy */
    /* RESULT cancel */
    uint64_t target;
    bool found;
    /* RESULT ping: the daemon's clock; TOKEN: when the daemon produced it (0 when absent) */
    uint64_t time_us;
    bool unhealthy;            /* RESULT ping: the backend failed (its error in message) */
    /* the whole message, for info/stats (a map) */
    msgpack_unpacked up;
    const msgpack_object *root;
    char *owned;               /* a copy of the message bytes: strings of `up` point into it */
} sd_reply;

/* Decodes one reply message. 0 on success (free with sd_reply_free), -1 with err for a message that is
 * not a valid v1 reply. The reply keeps its own copy of the bytes: buf may be freed right after. */
int sd_reply_decode(const void *buf, size_t len, sd_reply *r, sd_err *err);
void sd_reply_free(sd_reply *r);

/* ---- helpers ---- */

/* Looks key up in a msgpack map object; NULL when absent or o is not a map. */
const msgpack_object *sd_mp_get(const msgpack_object *o, const char *key);
/* Writes o as JSON to a malloc'd NUL-terminated string (for `--json` output). Binary data becomes a
 * base64-less placeholder; non-finite floats become null. */
char *sd_mp_to_json(const msgpack_object *o);

#endif
