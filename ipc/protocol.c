/* Protocol v1: strict request decoding, reply encoding and decoding (see docs/protocol.md). */
#include "ipc/protocol.h"

#include "base/json_out.h"
#include "ipc/mp_check.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {"?", "generate", "tokenize", "detokenize", "info", "stats", "cancel",
                                       "ping", "chat"};

const char *sd_op_name(sd_op op) {
    return (op >= SD_OP_NONE && op <= SD_OP_LAST) ? op_names[op] : "?";
}

sd_op sd_op_parse(const char *s, size_t len) {
    for (int i = SD_OP_GENERATE; i <= SD_OP_LAST; i++)
        if (len > 0 && strlen(op_names[i]) == len && memcmp(op_names[i], s, len) == 0) return (sd_op)i;
    return SD_OP_NONE;
}

static const char *const type_names[] = {"?", "token", "done", "error", "result", "heartbeat"};
const char *sd_reply_type_name(sd_reply_type t) {
    return (t >= SD_REPLY_NONE && t <= SD_REPLY_HEARTBEAT) ? type_names[t] : "?";
}

/* ------------------------------------------------------------------ requests */

void sd_request_init(sd_request *r, sd_op op, uint64_t id) {
    memset(r, 0, sizeof *r);
    r->op = op;
    r->id = id;
    r->add_bos = true;
    r->add_generation_prompt = true;
    r->gen.add_bos = true;
    r->gen.top_p = 1.0f;
}

void sd_request_free(sd_request *r) {
    if (!r) return;
    free(r->gen.prompt);
    free(r->gen.tokens);
    for (int i = 0; i < r->gen.n_stop; i++) free(r->gen.stop[i]);
    free(r->gen.stop);
    free(r->text);
    free(r->tokens);
    for (int i = 0; i < r->n_messages; i++) {
        free(r->messages[i].role);
        free(r->messages[i].content);
    }
    free(r->messages);
    sd_request_init(r, SD_OP_NONE, 0);
}

__attribute__((format(printf, 4, 5))) static int perr(sd_proto_err *e, const char *code, const char *field,
                                                      const char *fmt, ...) {
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    char tmp[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (field && *field)
        snprintf(e->message, sizeof e->message, "field '%s': %s", field, tmp);
    else
        snprintf(e->message, sizeof e->message, "%s", tmp);
    return -1;
}

/* A name from the request, fit to be echoed in an error reply: at most 60 bytes cut on a character
 * boundary, and "(not UTF-8)" when it is not valid UTF-8 (replies carry only UTF-8 strings). */
static void echo_name(char *dst, size_t cap, const char *s, size_t n) {
    if (n > 60) {
        n = 60;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--; /* s[n] exists: the string is longer */
    }
    if (n && !sd_utf8_valid(s, n)) s = "(not UTF-8)", n = strlen(s);
    snprintf(dst, cap, "%.*s", (int)n, n ? s : "");
}

static const char *mp_type_name(msgpack_object_type t) {
    switch (t) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "string";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "binary";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "unknown";
}

static bool key_is(const msgpack_object_kv *kv, const char *name) {
    size_t n = strlen(name);
    return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n && n > 0 &&
           memcmp(kv->key.via.str.ptr, name, n) == 0;
}

const msgpack_object *sd_mp_get(const msgpack_object *o, const char *key) {
    if (!o || o->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++)
        if (key_is(&o->via.map.ptr[i], key)) return &o->via.map.ptr[i].val;
    return NULL;
}

/* An integer in [lo, hi] (as int64); unsigned values above INT64_MAX are out of range. */
static int get_int(const msgpack_object *o, const char *field, int64_t lo, int64_t hi, int64_t *out,
                   sd_proto_err *e) {
    int64_t v;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return perr(e, SD_E_OUT_OF_RANGE, field, "must be in %lld..%lld, got %llu", (long long)lo,
                        (long long)hi, (unsigned long long)o->via.u64);
        v = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        v = o->via.i64;
    } else {
        return perr(e, SD_E_BAD_TYPE, field, "must be an integer, got %s", mp_type_name(o->type));
    }
    if (v < lo || v > hi)
        return perr(e, SD_E_OUT_OF_RANGE, field, "must be in %lld..%lld, got %lld", (long long)lo, (long long)hi,
                    (long long)v);
    *out = v;
    return 0;
}

static int get_u64(const msgpack_object *o, const char *field, uint64_t *out, sd_proto_err *e) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) { *out = o->via.u64; return 0; }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return perr(e, SD_E_OUT_OF_RANGE, field, "must be a non-negative integer, got %lld", (long long)o->via.i64);
    return perr(e, SD_E_BAD_TYPE, field, "must be an unsigned integer, got %s", mp_type_name(o->type));
}

/* A number in [lo, hi], or (lo, hi] when lo_open. */
static int get_float(const msgpack_object *o, const char *field, double lo, double hi, bool lo_open,
                     float *out, sd_proto_err *e) {
    double v;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: v = (double)o->via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: v = (double)o->via.i64; break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: v = o->via.f64; break;
    default: return perr(e, SD_E_BAD_TYPE, field, "must be a number, got %s", mp_type_name(o->type));
    }
    /* the range holds for the float the engine will use: 1e-300 is above 0 as a double but 0 as a float */
    float f = isfinite(v) && fabs(v) <= 3.4e38 ? (float)v : NAN;
    if (!isfinite(f) || f > hi || (lo_open ? f <= lo : f < lo))
        return perr(e, SD_E_OUT_OF_RANGE, field, "must be in %s%g, %g] as a 32-bit float, got %g", lo_open ? "(" : "[",
                    lo, hi, v);
    *out = f;
    return 0;
}

static int get_bool(const msgpack_object *o, const char *field, bool *out, sd_proto_err *e) {
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return perr(e, SD_E_BAD_TYPE, field, "must be a boolean, got %s", mp_type_name(o->type));
    *out = o->via.boolean;
    return 0;
}

/* A UTF-8 string of at most max bytes, copied NUL-terminated. min_len 1 rejects "". */
static int get_str(const msgpack_object *o, const char *field, size_t min_len, size_t max, char **out,
                   size_t *out_len, sd_proto_err *e) {
    if (o->type != MSGPACK_OBJECT_STR)
        return perr(e, SD_E_BAD_TYPE, field, "must be a string, got %s", mp_type_name(o->type));
    size_t n = o->via.str.size;
    if (n > max) return perr(e, SD_E_OUT_OF_RANGE, field, "is %zu bytes, the limit is %zu", n, max);
    if (n < min_len) return perr(e, SD_E_OUT_OF_RANGE, field, "must not be empty");
    if (!sd_utf8_valid(o->via.str.ptr, n)) return perr(e, SD_E_BAD_UTF8, field, "is not valid UTF-8");
    char *s = malloc(n + 1);
    if (!s) return perr(e, SD_E_INTERNAL, field, "out of memory");
    if (n) memcpy(s, o->via.str.ptr, n); /* an empty string's pointer may be NULL */
    s[n] = 0;
    *out = s;
    if (out_len) *out_len = n;
    return 0;
}

static int get_tokens(const msgpack_object *o, const char *field, int32_t **out, int *n_out, sd_proto_err *e) {
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return perr(e, SD_E_BAD_TYPE, field, "must be an array of integers, got %s", mp_type_name(o->type));
    uint32_t n = o->via.array.size;
    if (n > (uint32_t)SD_PROTO_MAX_INPUT_TOKENS)
        return perr(e, SD_E_OUT_OF_RANGE, field, "has %u ids, the limit is %d", n, SD_PROTO_MAX_INPUT_TOKENS);
    int32_t *ids = malloc(sizeof *ids * (n ? n : 1));
    if (!ids) return perr(e, SD_E_INTERNAL, field, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s[%u]", field, i);
        int64_t v;
        if (get_int(&o->via.array.ptr[i], name, 0, INT32_MAX, &v, e)) { free(ids); return -1; }
        ids[i] = (int32_t)v;
    }
    *out = ids;
    *n_out = (int)n;
    return 0;
}

static int get_stop(const msgpack_object *o, sd_req_generate *g, sd_proto_err *e) {
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return perr(e, SD_E_BAD_TYPE, "stop", "must be an array of strings, got %s", mp_type_name(o->type));
    uint32_t n = o->via.array.size;
    if (n > SD_PROTO_MAX_STOP)
        return perr(e, SD_E_OUT_OF_RANGE, "stop", "has %u strings, the limit is %d", n, SD_PROTO_MAX_STOP);
    g->stop = calloc(n ? n : 1, sizeof *g->stop);
    if (!g->stop) return perr(e, SD_E_INTERNAL, "stop", "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "stop[%u]", i);
        if (get_str(&o->via.array.ptr[i], name, 1, SD_PROTO_MAX_STOP_BYTES, &g->stop[i], NULL, e)) return -1;
        g->n_stop = (int)i + 1;
    }
    return 0;
}

static int decode_generate_field(const msgpack_object_kv *kv, sd_req_generate *g, sd_proto_err *e) {
    const msgpack_object *o = &kv->val;
    int64_t v;
    if (key_is(kv, "prompt")) return get_str(o, "prompt", 0, SD_PROTO_MAX_TEXT_BYTES, &g->prompt, &g->prompt_len, e);
    if (key_is(kv, "tokens")) return get_tokens(o, "tokens", &g->tokens, &g->n_tokens, e);
    if (key_is(kv, "max_tokens")) {
        if (get_int(o, "max_tokens", 1, SD_PROTO_MAX_GEN_TOKENS, &v, e)) return -1;
        g->max_tokens = (int)v; g->set |= SD_GF_MAX_TOKENS; return 0;
    }
    if (key_is(kv, "temperature")) {
        g->set |= SD_GF_TEMPERATURE;
        return get_float(o, "temperature", 0, SD_PROTO_MAX_TEMPERATURE, false, &g->temperature, e);
    }
    if (key_is(kv, "top_k")) {
        if (get_int(o, "top_k", 0, SD_PROTO_MAX_TOP_K, &v, e)) return -1;
        g->top_k = (int)v; g->set |= SD_GF_TOP_K; return 0;
    }
    if (key_is(kv, "top_p")) { g->set |= SD_GF_TOP_P; return get_float(o, "top_p", 0, 1, true, &g->top_p, e); }
    if (key_is(kv, "min_p")) { g->set |= SD_GF_MIN_P; return get_float(o, "min_p", 0, 1, false, &g->min_p, e); }
    if (key_is(kv, "seed")) { g->set |= SD_GF_SEED; return get_u64(o, "seed", &g->seed, e); }
    if (key_is(kv, "stop")) { g->set |= SD_GF_STOP; return get_stop(o, g, e); }
    if (key_is(kv, "mode")) {
        if (o->type != MSGPACK_OBJECT_STR)
            return perr(e, SD_E_BAD_TYPE, "mode", "must be a string, got %s", mp_type_name(o->type));
        const char *s = o->via.str.ptr;
        uint32_t n = o->via.str.size;
        if (n == 4 && !memcmp(s, "spec", 4)) g->mode = SD_PMODE_SPEC;
        else if (n == 5 && !memcmp(s, "plain", 5)) g->mode = SD_PMODE_PLAIN;
        else return perr(e, SD_E_OUT_OF_RANGE, "mode", "must be \"spec\" or \"plain\"");
        g->set |= SD_GF_MODE;
        return 0;
    }
    if (key_is(kv, "draft_max")) {
        if (get_int(o, "draft_max", 1, SD_PROTO_MAX_DRAFT, &v, e)) return -1;
        g->draft_max = (int)v; g->set |= SD_GF_DRAFT_MAX; return 0;
    }
    if (key_is(kv, "stream")) { g->set |= SD_GF_STREAM; return get_bool(o, "stream", &g->stream, e); }
    if (key_is(kv, "add_bos")) { g->set |= SD_GF_ADD_BOS; return get_bool(o, "add_bos", &g->add_bos, e); }
    if (key_is(kv, "special")) { g->set |= SD_GF_SPECIAL; return get_bool(o, "special", &g->special, e); }
    return 1; /* not a generate field */
}

/* One chat message: a map with string `role` and `content`. */
static int get_message(const msgpack_object *o, uint32_t i, sd_chat_msg *m, sd_proto_err *e) {
    char name[64];
    snprintf(name, sizeof name, "messages[%u]", i);
    if (o->type != MSGPACK_OBJECT_MAP)
        return perr(e, SD_E_BAD_TYPE, name, "must be a map with 'role' and 'content', got %s", mp_type_name(o->type));
    for (uint32_t k = 0; k < o->via.map.size; k++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[k];
        char fname[96];
        if (key_is(kv, "role")) {
            snprintf(fname, sizeof fname, "%s.role", name);
            if (m->role) return perr(e, SD_E_DUPLICATE_FIELD, fname, "appears more than once");
            if (get_str(&kv->val, fname, 1, SD_PROTO_MAX_ROLE_BYTES, &m->role, NULL, e)) return -1;
        } else if (key_is(kv, "content")) {
            snprintf(fname, sizeof fname, "%s.content", name);
            if (m->content) return perr(e, SD_E_DUPLICATE_FIELD, fname, "appears more than once");
            if (get_str(&kv->val, fname, 0, SD_PROTO_MAX_TEXT_BYTES, &m->content, &m->content_len, e)) return -1;
        } else {
            char key[64] = "";
            if (kv->key.type == MSGPACK_OBJECT_STR) echo_name(key, sizeof key, kv->key.via.str.ptr, kv->key.via.str.size);
            snprintf(fname, sizeof fname, "%s.%s", name, key);
            return perr(e, SD_E_UNKNOWN_FIELD, fname, "messages have 'role' and 'content' only in protocol v1");
        }
    }
    if (!m->role) return perr(e, SD_E_MISSING_FIELD, name, "a message needs 'role'");
    if (!m->content) return perr(e, SD_E_MISSING_FIELD, name, "a message needs 'content'");
    return 0;
}

static int get_messages(const msgpack_object *o, sd_request *r, sd_proto_err *e) {
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return perr(e, SD_E_BAD_TYPE, "messages", "must be an array of maps, got %s", mp_type_name(o->type));
    uint32_t n = o->via.array.size;
    if (n > SD_PROTO_MAX_MESSAGES)
        return perr(e, SD_E_OUT_OF_RANGE, "messages", "has %u messages, the limit is %d", n, SD_PROTO_MAX_MESSAGES);
    r->messages = calloc(n ? n : 1, sizeof *r->messages);
    if (!r->messages) return perr(e, SD_E_INTERNAL, "messages", "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        r->n_messages = (int)i + 1; /* so sd_request_free releases what this message got */
        if (get_message(&o->via.array.ptr[i], i, &r->messages[i], e)) return -1;
    }
    return 0;
}

static int decode_chat_field(const msgpack_object_kv *kv, sd_request *r, sd_proto_err *e) {
    if (key_is(kv, "messages")) return get_messages(&kv->val, r, e);
    if (key_is(kv, "add_generation_prompt")) {
        r->gen.set |= SD_GF_ADD_GEN_PROMPT;
        return get_bool(&kv->val, "add_generation_prompt", &r->add_generation_prompt, e);
    }
    if (key_is(kv, "tools")) return perr(e, SD_E_UNSUPPORTED, "tools", "tool calling is not supported yet");
    static const char *const not_chat[] = {"prompt", "tokens", "add_bos", "special"};
    for (int k = 0; k < 4; k++)
        if (key_is(kv, not_chat[k]))
            return perr(e, SD_E_UNKNOWN_FIELD, not_chat[k], "is not a field of 'chat' (the chat template makes the prompt)");
    return decode_generate_field(kv, &r->gen, e);
}

static int decode_op_field(const msgpack_object_kv *kv, sd_request *r, sd_proto_err *e) {
    switch (r->op) {
    case SD_OP_GENERATE: return decode_generate_field(kv, &r->gen, e);
    case SD_OP_CHAT: return decode_chat_field(kv, r, e);
    case SD_OP_TOKENIZE:
        if (key_is(kv, "text")) return get_str(&kv->val, "text", 0, SD_PROTO_MAX_TEXT_BYTES, &r->text, &r->text_len, e);
        if (key_is(kv, "add_bos")) return get_bool(&kv->val, "add_bos", &r->add_bos, e);
        if (key_is(kv, "special")) return get_bool(&kv->val, "special", &r->special, e);
        return 1;
    case SD_OP_DETOKENIZE:
        if (key_is(kv, "tokens")) return get_tokens(&kv->val, "tokens", &r->tokens, &r->n_tokens, e);
        if (key_is(kv, "special")) return get_bool(&kv->val, "special", &r->special, e);
        return 1;
    case SD_OP_CANCEL:
        if (key_is(kv, "target")) return get_u64(&kv->val, "target", &r->target, e);
        return 1;
    default: return 1;
    }
}

/* Required fields of each op, checked after all fields were read. */
static int check_required(const msgpack_object *m, sd_request *r, sd_proto_err *e) {
    switch (r->op) {
    case SD_OP_GENERATE: {
        bool p = sd_mp_get(m, "prompt") != NULL, t = sd_mp_get(m, "tokens") != NULL;
        if (!p && !t) return perr(e, SD_E_MISSING_FIELD, "prompt", "generate needs 'prompt' (text) or 'tokens' (ids)");
        if (p && t) return perr(e, SD_E_BAD_TYPE, "prompt", "give either 'prompt' or 'tokens', not both");
        if (t && r->gen.n_tokens == 0) return perr(e, SD_E_OUT_OF_RANGE, "tokens", "must not be empty");
        if (t && sd_mp_get(m, "add_bos")) return perr(e, SD_E_BAD_TYPE, "add_bos", "only applies to 'prompt'");
        if (t && sd_mp_get(m, "special")) return perr(e, SD_E_BAD_TYPE, "special", "only applies to 'prompt'");
        return 0;
    }
    case SD_OP_CHAT:
        if (!sd_mp_get(m, "messages")) return perr(e, SD_E_MISSING_FIELD, "messages", "chat needs 'messages'");
        if (r->n_messages == 0) return perr(e, SD_E_OUT_OF_RANGE, "messages", "must not be empty");
        return 0;
    case SD_OP_TOKENIZE:
        if (!sd_mp_get(m, "text")) return perr(e, SD_E_MISSING_FIELD, "text", "tokenize needs 'text'");
        return 0;
    case SD_OP_DETOKENIZE:
        if (!sd_mp_get(m, "tokens")) return perr(e, SD_E_MISSING_FIELD, "tokens", "detokenize needs 'tokens'");
        return 0;
    case SD_OP_CANCEL:
        if (!sd_mp_get(m, "target")) return perr(e, SD_E_MISSING_FIELD, "target", "cancel needs 'target' (a request id)");
        return 0;
    default: return 0;
    }
}

/* v, id and op: read first so that later errors can echo the id. */
static int decode_header(const msgpack_object *m, sd_request *r, sd_proto_err *e) {
    const msgpack_object *id = sd_mp_get(m, "id"), *v = sd_mp_get(m, "v"), *op = sd_mp_get(m, "op");
    if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        e->has_id = true;
        e->id = r->id = id->via.u64;
    }
    if (op && op->type == MSGPACK_OBJECT_STR) e->op = sd_op_parse(op->via.str.ptr, op->via.str.size);
    if (!id) return perr(e, SD_E_MISSING_FIELD, "id", "every request needs an 'id'");
    if (id->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (id->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return perr(e, SD_E_OUT_OF_RANGE, "id", "must be a non-negative integer");
        return perr(e, SD_E_BAD_TYPE, "id", "must be an unsigned integer, got %s", mp_type_name(id->type));
    }
    if (!v) return perr(e, SD_E_BAD_VERSION, "v", "missing protocol version 'v' (this daemon speaks 1)");
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != SD_PROTO_VERSION) {
        if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            return perr(e, SD_E_BAD_VERSION, "v", "unsupported protocol version %llu (this daemon speaks 1)",
                        (unsigned long long)v->via.u64);
        return perr(e, SD_E_BAD_VERSION, "v", "must be the integer 1, got %s", mp_type_name(v->type));
    }
    if (!op) return perr(e, SD_E_MISSING_FIELD, "op", "every request needs an 'op'");
    if (op->type != MSGPACK_OBJECT_STR)
        return perr(e, SD_E_BAD_TYPE, "op", "must be a string, got %s", mp_type_name(op->type));
    r->op = e->op;
    if (r->op == SD_OP_NONE) {
        char name[64];
        echo_name(name, sizeof name, op->via.str.ptr, op->via.str.size);
        return perr(e, SD_E_UNKNOWN_OP, "op", "unknown op \"%s\" (known: generate, chat, tokenize, detokenize, "
                    "info, stats, cancel, ping)", name);
    }
    return 0;
}

static int check_keys(const msgpack_object *m, sd_proto_err *e) {
    const msgpack_object_map *mp = &m->via.map;
    for (uint32_t i = 0; i < mp->size; i++) {
        const msgpack_object *k = &mp->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return perr(e, SD_E_BAD_TYPE, "", "map keys must be strings, got a %s key", mp_type_name(k->type));
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *k2 = &mp->ptr[j].key;
            /* an empty key has no bytes (msgpack-c leaves its pointer NULL): compare sizes first */
            if (k2->via.str.size == k->via.str.size &&
                (k->via.str.size == 0 || !memcmp(k2->via.str.ptr, k->via.str.ptr, k->via.str.size))) {
                char name[64];
                echo_name(name, sizeof name, k->via.str.ptr, k->via.str.size);
                return perr(e, SD_E_DUPLICATE_FIELD, name, "appears more than once");
            }
        }
    }
    return 0;
}

static int decode_map(const msgpack_object *m, sd_request *r, sd_proto_err *e) {
    if (m->via.map.size > 64) return perr(e, SD_E_BAD_MESSAGE, "", "too many fields (%u)", m->via.map.size);
    if (check_keys(m, e)) return -1;
    if (decode_header(m, r, e)) return -1;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (key_is(kv, "v") || key_is(kv, "id") || key_is(kv, "op")) continue;
        int rc = decode_op_field(kv, r, e);
        if (rc < 0) return -1;
        if (rc > 0) {
            char name[64];
            echo_name(name, sizeof name, kv->key.via.str.ptr, kv->key.via.str.size);
            return perr(e, SD_E_UNKNOWN_FIELD, name, "is not a field of '%s' in protocol v1", sd_op_name(r->op));
        }
    }
    return check_required(m, r, e);
}

int sd_request_decode(const void *buf, size_t len, sd_request *r, sd_proto_err *e) {
    memset(e, 0, sizeof *e);
    sd_request_init(r, SD_OP_NONE, 0);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    char why[128];
    msgpack_unpack_return ur = MSGPACK_UNPACK_PARSE_ERROR;
    if (sd_mp_check(buf, len, why, sizeof why))
        perr(e, SD_E_BAD_MESSAGE, "", "not a well-formed MessagePack message: %s", why);
    else if ((ur = msgpack_unpack_next(&up, buf, len, &off)) != MSGPACK_UNPACK_SUCCESS)
        perr(e, SD_E_BAD_MESSAGE, "", "not a MessagePack message (%s)",
             ur == MSGPACK_UNPACK_CONTINUE ? "truncated" : ur == MSGPACK_UNPACK_NOMEM_ERROR ? "too large" : "parse error");
    else if (off != len)
        perr(e, SD_E_BAD_MESSAGE, "", "%zu trailing bytes after the MessagePack object", len - off);
    else if (up.data.type != MSGPACK_OBJECT_MAP)
        perr(e, SD_E_BAD_MESSAGE, "", "a request must be a MessagePack map, got %s", mp_type_name(up.data.type));
    else
        rc = decode_map(&up.data, r, e);
    msgpack_unpacked_destroy(&up);
    if (rc) {
        uint64_t id = r->id;
        sd_request_free(r);
        r->id = id;
    }
    return rc;
}

/* ------------------------------------------------------------------ packing helpers */

void sd_pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = s ? strlen(s) : 0;
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s ? s : "", n);
}
static void pack_strn(msgpack_packer *pk, const char *s, size_t n) {
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s ? s : "", n);
}
void sd_pack_kv_str(msgpack_packer *pk, const char *key, const char *val) { sd_pack_cstr(pk, key); sd_pack_cstr(pk, val); }
void sd_pack_kv_int(msgpack_packer *pk, const char *key, int64_t val) { sd_pack_cstr(pk, key); msgpack_pack_int64(pk, val); }
void sd_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val) { sd_pack_cstr(pk, key); msgpack_pack_uint64(pk, val); }
void sd_pack_kv_double(msgpack_packer *pk, const char *key, double val) { sd_pack_cstr(pk, key); msgpack_pack_double(pk, val); }
void sd_pack_kv_float(msgpack_packer *pk, const char *key, float val) { sd_pack_kv_double(pk, key, sd_float_decimal(val)); }
void sd_pack_kv_bool(msgpack_packer *pk, const char *key, bool val) {
    sd_pack_cstr(pk, key);
    if (val) msgpack_pack_true(pk); else msgpack_pack_false(pk);
}
static void pack_ids(msgpack_packer *pk, const int32_t *ids, int n) {
    msgpack_pack_array(pk, (size_t)(n > 0 ? n : 0));
    for (int i = 0; i < n; i++) msgpack_pack_int32(pk, ids[i]);
}

/* ------------------------------------------------------------------ request encoding */

static void pack_request(msgpack_packer *pk, const sd_request *r) {
    const sd_req_generate *g = &r->gen;
    int n = 3;
    if (r->op == SD_OP_GENERATE || r->op == SD_OP_CHAT) {
        n += (g->prompt != NULL) + (g->tokens != NULL) + (r->op == SD_OP_CHAT);
        for (unsigned b = g->set; b; b &= b - 1) n++;
    } else if (r->op == SD_OP_TOKENIZE) n += 3;
    else if (r->op == SD_OP_DETOKENIZE) n += 2;
    else if (r->op == SD_OP_CANCEL) n += 1;
    msgpack_pack_map(pk, (size_t)n);
    sd_pack_kv_uint(pk, "v", SD_PROTO_VERSION);
    sd_pack_kv_uint(pk, "id", r->id);
    sd_pack_kv_str(pk, "op", sd_op_name(r->op));
    switch (r->op) {
    case SD_OP_CHAT:
        sd_pack_cstr(pk, "messages");
        msgpack_pack_array(pk, (size_t)(r->n_messages > 0 ? r->n_messages : 0));
        for (int i = 0; i < r->n_messages; i++) {
            msgpack_pack_map(pk, 2);
            sd_pack_kv_str(pk, "role", r->messages[i].role);
            sd_pack_cstr(pk, "content");
            pack_strn(pk, r->messages[i].content, r->messages[i].content_len);
        }
        if (g->set & SD_GF_ADD_GEN_PROMPT) sd_pack_kv_bool(pk, "add_generation_prompt", r->add_generation_prompt);
        __attribute__((fallthrough)); /* then the generation fields */
    case SD_OP_GENERATE:
        if (g->prompt) { sd_pack_cstr(pk, "prompt"); pack_strn(pk, g->prompt, g->prompt_len); }
        if (g->tokens) { sd_pack_cstr(pk, "tokens"); pack_ids(pk, g->tokens, g->n_tokens); }
        if (g->set & SD_GF_MAX_TOKENS) sd_pack_kv_int(pk, "max_tokens", g->max_tokens);
        if (g->set & SD_GF_TEMPERATURE) sd_pack_kv_float(pk, "temperature", g->temperature);
        if (g->set & SD_GF_TOP_K) sd_pack_kv_int(pk, "top_k", g->top_k);
        if (g->set & SD_GF_TOP_P) sd_pack_kv_float(pk, "top_p", g->top_p);
        if (g->set & SD_GF_MIN_P) sd_pack_kv_float(pk, "min_p", g->min_p);
        if (g->set & SD_GF_SEED) sd_pack_kv_uint(pk, "seed", g->seed);
        if (g->set & SD_GF_STOP) {
            sd_pack_cstr(pk, "stop");
            msgpack_pack_array(pk, (size_t)(g->n_stop > 0 ? g->n_stop : 0));
            for (int i = 0; i < g->n_stop; i++) sd_pack_cstr(pk, g->stop[i]);
        }
        if (g->set & SD_GF_MODE) sd_pack_kv_str(pk, "mode", g->mode == SD_PMODE_PLAIN ? "plain" : "spec");
        if (g->set & SD_GF_DRAFT_MAX) sd_pack_kv_int(pk, "draft_max", g->draft_max);
        if (g->set & SD_GF_STREAM) sd_pack_kv_bool(pk, "stream", g->stream);
        if (g->set & SD_GF_ADD_BOS) sd_pack_kv_bool(pk, "add_bos", g->add_bos);
        if (g->set & SD_GF_SPECIAL) sd_pack_kv_bool(pk, "special", g->special);
        break;
    case SD_OP_TOKENIZE:
        sd_pack_cstr(pk, "text");
        pack_strn(pk, r->text, r->text_len);
        sd_pack_kv_bool(pk, "add_bos", r->add_bos);
        sd_pack_kv_bool(pk, "special", r->special);
        break;
    case SD_OP_DETOKENIZE:
        sd_pack_cstr(pk, "tokens");
        pack_ids(pk, r->tokens, r->n_tokens);
        sd_pack_kv_bool(pk, "special", r->special);
        break;
    case SD_OP_CANCEL: sd_pack_kv_uint(pk, "target", r->target); break;
    default: break;
    }
}

int sd_request_encode(const sd_request *r, char **buf, size_t *len, sd_err *err) {
    if (r->op <= SD_OP_NONE || r->op > SD_OP_LAST) return sd_errf(err, "request: unknown op %d", (int)r->op);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_request(&pk, r);
    /* Validate by decoding: the client refuses to send what the daemon would reject for its form. */
    sd_request chk;
    sd_proto_err pe;
    if (sd_request_decode(sb.data, sb.size, &chk, &pe)) {
        msgpack_sbuffer_destroy(&sb);
        return sd_errf(err, "request %s: %s", pe.code, pe.message);
    }
    sd_request_free(&chk);
    if (sb.size > SD_PROTO_MAX_MSG_BYTES) {
        msgpack_sbuffer_destroy(&sb);
        return sd_errf(err, "request is %zu bytes, the limit is %u", sb.size, SD_PROTO_MAX_MSG_BYTES);
    }
    *len = sb.size;
    *buf = msgpack_sbuffer_release(&sb);
    return 0;
}

/* ------------------------------------------------------------------ reply encoding */

static void pack_head(msgpack_packer *pk, int n_extra, bool has_id, uint64_t id, const char *type) {
    msgpack_pack_map(pk, (size_t)(3 + n_extra));
    sd_pack_kv_uint(pk, "v", SD_PROTO_VERSION);
    sd_pack_cstr(pk, "id");
    if (has_id) msgpack_pack_uint64(pk, id); else msgpack_pack_nil(pk);
    sd_pack_kv_str(pk, "type", type);
}

#define PACKER(sb) msgpack_packer pk_; msgpack_packer_init(&pk_, (sb), msgpack_sbuffer_write); msgpack_packer *pk = &pk_

int sd_enc_token_t(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids,
                   int n_ids, uint64_t time_us) {
    PACKER(sb);
    pack_head(pk, 2 + (time_us != 0), true, id, "token");
    sd_pack_cstr(pk, "text");
    pack_strn(pk, text, text_len);
    sd_pack_cstr(pk, "tokens");
    pack_ids(pk, ids, n_ids);
    if (time_us) sd_pack_kv_uint(pk, "time_us", time_us);
    return 0;
}

int sd_enc_token(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids, int n_ids) {
    return sd_enc_token_t(sb, id, text, text_len, ids, n_ids, 0);
}

int sd_enc_done(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids, int n_ids,
                const char *finish_reason, const sd_done_stats *st) {
    return sd_enc_done_stop(sb, id, text, text_len, ids, n_ids, finish_reason, st, -1, NULL);
}

int sd_enc_done_stop(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t text_len, const int32_t *ids,
                     int n_ids, const char *finish_reason, const sd_done_stats *st, int32_t stop_token,
                     const char *stop_string) {
    PACKER(sb);
    pack_head(pk, 4 + (stop_token >= 0) + (stop_string != NULL), true, id, "done");
    if (stop_token >= 0) sd_pack_kv_int(pk, "stop_token", stop_token);
    if (stop_string) sd_pack_kv_str(pk, "stop_string", stop_string);
    sd_pack_cstr(pk, "text");
    pack_strn(pk, text, text_len);
    sd_pack_cstr(pk, "tokens");
    pack_ids(pk, ids, n_ids);
    sd_pack_kv_str(pk, "finish_reason", finish_reason);
    sd_pack_cstr(pk, "stats");
    msgpack_pack_map(pk, 16);
    sd_pack_kv_int(pk, "prompt_tokens", st->prompt_tokens);
    sd_pack_kv_int(pk, "prefilled", st->prefilled);
    sd_pack_kv_int(pk, "reused", st->reused);
    sd_pack_kv_int(pk, "preempted", st->preempted);
    sd_pack_kv_int(pk, "generated", st->generated);
    sd_pack_kv_double(pk, "queue_ms", st->queue_ms);
    sd_pack_kv_double(pk, "ttft_ms", st->ttft_ms);
    sd_pack_kv_double(pk, "ms_per_token", st->ms_per_token);
    sd_pack_kv_double(pk, "total_ms", st->total_ms);
    sd_pack_kv_str(pk, "mode", st->mode == SD_PMODE_PLAIN ? "plain" : "spec");
    sd_pack_kv_int(pk, "drafted", st->drafted);
    sd_pack_kv_int(pk, "accepted", st->accepted);
    sd_pack_kv_double(pk, "acceptance", st->acceptance);
    sd_pack_kv_int(pk, "target_passes", st->target_passes);
    sd_pack_kv_int(pk, "draft_k", st->draft_k);
    sd_pack_kv_uint(pk, "seed", st->seed);
    return 0;
}

int sd_enc_error(msgpack_sbuffer *sb, bool has_id, uint64_t id, const char *code, const char *field,
                 const char *message) {
    PACKER(sb);
    bool f = field && *field;
    pack_head(pk, 2 + f, has_id, id, "error");
    sd_pack_kv_str(pk, "code", code);
    sd_pack_kv_str(pk, "message", message);
    if (f) sd_pack_kv_str(pk, "field", field);
    return 0;
}

int sd_enc_busy(msgpack_sbuffer *sb, uint64_t id, int retry_after_ms, int queued, int active) {
    PACKER(sb);
    pack_head(pk, 5, true, id, "error");
    sd_pack_kv_str(pk, "code", SD_E_BUSY);
    char msg[160];
    snprintf(msg, sizeof msg, "daemon busy: %d requests running and %d queued (queue full); retry later", active,
             queued);
    sd_pack_kv_str(pk, "message", msg);
    sd_pack_kv_int(pk, "retry_after_ms", retry_after_ms);
    sd_pack_kv_int(pk, "queued", queued);
    sd_pack_kv_int(pk, "active", active);
    return 0;
}

int sd_enc_heartbeat(msgpack_sbuffer *sb) {
    PACKER(sb);
    msgpack_pack_map(pk, 2);
    sd_pack_kv_uint(pk, "v", SD_PROTO_VERSION);
    sd_pack_kv_str(pk, "type", "heartbeat");
    return 0;
}

int sd_enc_result_begin(msgpack_packer *pk, uint64_t id, sd_op op, int n_extra) {
    pack_head(pk, 1 + n_extra, true, id, "result");
    sd_pack_kv_str(pk, "op", sd_op_name(op));
    return 0;
}

int sd_enc_result_tokens(msgpack_sbuffer *sb, uint64_t id, const int32_t *ids, int n_ids) {
    PACKER(sb);
    sd_enc_result_begin(pk, id, SD_OP_TOKENIZE, 1);
    sd_pack_cstr(pk, "tokens");
    pack_ids(pk, ids, n_ids);
    return 0;
}

int sd_enc_result_text(msgpack_sbuffer *sb, uint64_t id, const char *text, size_t len) {
    PACKER(sb);
    sd_enc_result_begin(pk, id, SD_OP_DETOKENIZE, 1);
    sd_pack_cstr(pk, "text");
    pack_strn(pk, text, len);
    return 0;
}

int sd_enc_result_cancel(msgpack_sbuffer *sb, uint64_t id, uint64_t target, bool found) {
    PACKER(sb);
    sd_enc_result_begin(pk, id, SD_OP_CANCEL, 2);
    sd_pack_kv_uint(pk, "target", target);
    sd_pack_kv_bool(pk, "found", found);
    return 0;
}

int sd_enc_result_pong(msgpack_sbuffer *sb, uint64_t id, uint64_t time_us, const char *backend_error) {
    PACKER(sb);
    sd_enc_result_begin(pk, id, SD_OP_PING, 2 + (backend_error != NULL));
    sd_pack_kv_uint(pk, "time_us", time_us);
    sd_pack_kv_bool(pk, "healthy", backend_error == NULL);
    if (backend_error) sd_pack_kv_str(pk, "backend_error", backend_error);
    return 0;
}

/* ------------------------------------------------------------------ reply decoding */

static bool mp_str_eq(const msgpack_object *o, const char *s) {
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) && !memcmp(o->via.str.ptr, s, o->via.str.size);
}
static void mp_copy_str(const msgpack_object *o, char *dst, size_t cap) {
    dst[0] = 0;
    if (o && o->type == MSGPACK_OBJECT_STR) {
        size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
        if (n) memcpy(dst, o->via.str.ptr, n); /* an empty string's pointer may be NULL */
        dst[n] = 0;
    }
}
static double mp_num(const msgpack_object *o) {
    if (!o) return 0;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
    default: return 0;
    }
}
/* A counter of a reply as an int: out-of-range, fractional or non-finite numbers (a broken or hostile
 * daemon) saturate or become 0 instead of an undefined conversion. */
static int mp_int(const msgpack_object *o) {
    double d = mp_num(o);
    if (!(d == d)) return 0;
    if (d >= 2147483647.0) return INT32_MAX;
    if (d <= -2147483648.0) return INT32_MIN;
    return (int)d;
}
static uint64_t mp_u64(const msgpack_object *o) {
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

static int reply_ids(const msgpack_object *o, sd_reply *r, sd_err *err) {
    if (!o) return 0;
    if (o->type != MSGPACK_OBJECT_ARRAY) return sd_errf(err, "reply: 'tokens' is not an array");
    r->tokens = malloc(sizeof(int32_t) * (o->via.array.size ? o->via.array.size : 1));
    if (!r->tokens) return sd_errf(err, "reply: out of memory");
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *x = &o->via.array.ptr[i];
        if (x->type != MSGPACK_OBJECT_POSITIVE_INTEGER || x->via.u64 > INT32_MAX)
            return sd_errf(err, "reply: tokens[%u] is not a token id", i);
        r->tokens[i] = (int32_t)x->via.u64;
    }
    r->n_tokens = (int)o->via.array.size;
    return 0;
}

static void reply_stats(const msgpack_object *s, sd_done_stats *st) {
    st->prompt_tokens = mp_int(sd_mp_get(s, "prompt_tokens"));
    st->prefilled = mp_int(sd_mp_get(s, "prefilled"));
    st->reused = mp_int(sd_mp_get(s, "reused"));
    st->preempted = mp_int(sd_mp_get(s, "preempted"));
    st->generated = mp_int(sd_mp_get(s, "generated"));
    st->drafted = mp_int(sd_mp_get(s, "drafted"));
    st->accepted = mp_int(sd_mp_get(s, "accepted"));
    st->target_passes = mp_int(sd_mp_get(s, "target_passes"));
    st->draft_k = mp_int(sd_mp_get(s, "draft_k"));
    st->queue_ms = mp_num(sd_mp_get(s, "queue_ms"));
    st->ttft_ms = mp_num(sd_mp_get(s, "ttft_ms"));
    st->ms_per_token = mp_num(sd_mp_get(s, "ms_per_token"));
    st->total_ms = mp_num(sd_mp_get(s, "total_ms"));
    st->acceptance = mp_num(sd_mp_get(s, "acceptance"));
    st->mode = mp_str_eq(sd_mp_get(s, "mode"), "plain") ? SD_PMODE_PLAIN : SD_PMODE_SPEC;
    st->seed = mp_u64(sd_mp_get(s, "seed"));
}

static int reply_fill(sd_reply *r, sd_err *err) {
    const msgpack_object *m = r->root;
    if (m->type != MSGPACK_OBJECT_MAP) return sd_errf(err, "reply is not a map");
    const msgpack_object *v = sd_mp_get(m, "v"), *t = sd_mp_get(m, "type"), *id = sd_mp_get(m, "id");
    if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != SD_PROTO_VERSION)
        return sd_errf(err, "reply has no 'v' = 1");
    for (int i = SD_REPLY_TOKEN; i <= SD_REPLY_HEARTBEAT; i++)
        if (mp_str_eq(t, type_names[i])) r->type = (sd_reply_type)i;
    if (r->type == SD_REPLY_NONE) return sd_errf(err, "reply has an unknown 'type'");
    if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER) { r->has_id = true; r->id = id->via.u64; }
    else if (r->type != SD_REPLY_ERROR && r->type != SD_REPLY_HEARTBEAT) return sd_errf(err, "reply has no 'id'");
    const msgpack_object *text = sd_mp_get(m, "text");
    if (text) {
        if (text->type != MSGPACK_OBJECT_STR) return sd_errf(err, "reply: 'text' is not a string");
        r->text = text->via.str.size ? text->via.str.ptr : "";
        r->text_len = text->via.str.size;
    }
    const msgpack_object *op = sd_mp_get(m, "op");
    if (op && op->type == MSGPACK_OBJECT_STR) r->op = sd_op_parse(op->via.str.ptr, op->via.str.size);
    /* `tokens` is an id array in token/done/tokenize replies (in a stats result it is a map of counters) */
    if ((r->type == SD_REPLY_TOKEN || r->type == SD_REPLY_DONE || (r->type == SD_REPLY_RESULT && r->op == SD_OP_TOKENIZE)) &&
        reply_ids(sd_mp_get(m, "tokens"), r, err))
        return -1;
    switch (r->type) {
    case SD_REPLY_DONE: {
        mp_copy_str(sd_mp_get(m, "finish_reason"), r->finish_reason, sizeof r->finish_reason);
        reply_stats(sd_mp_get(m, "stats"), &r->stats);
        const msgpack_object *st = sd_mp_get(m, "stop_token");
        r->stop_token = st && st->type == MSGPACK_OBJECT_POSITIVE_INTEGER && st->via.u64 <= INT32_MAX ? (int32_t)st->via.u64 : -1;
        mp_copy_str(sd_mp_get(m, "stop_string"), r->stop_string, sizeof r->stop_string);
        break;
    }
    case SD_REPLY_ERROR:
        mp_copy_str(sd_mp_get(m, "code"), r->code, sizeof r->code);
        mp_copy_str(sd_mp_get(m, "field"), r->field, sizeof r->field);
        mp_copy_str(sd_mp_get(m, "message"), r->message, sizeof r->message);
        r->retry_after_ms = mp_int(sd_mp_get(m, "retry_after_ms"));
        break;
    case SD_REPLY_TOKEN: r->time_us = mp_u64(sd_mp_get(m, "time_us")); break;
    case SD_REPLY_RESULT: {
        r->target = mp_u64(sd_mp_get(m, "target"));
        const msgpack_object *f = sd_mp_get(m, "found");
        r->found = f && f->type == MSGPACK_OBJECT_BOOLEAN && f->via.boolean;
        r->time_us = mp_u64(sd_mp_get(m, "time_us"));
        const msgpack_object *h = sd_mp_get(m, "healthy");
        r->unhealthy = h && h->type == MSGPACK_OBJECT_BOOLEAN && !h->via.boolean;
        if (r->unhealthy) mp_copy_str(sd_mp_get(m, "backend_error"), r->message, sizeof r->message);
        break;
    }
    default: break;
    }
    return 0;
}

int sd_reply_decode(const void *buf, size_t len, sd_reply *r, sd_err *err) {
    memset(r, 0, sizeof *r);
    /* msgpack-c's unpacked strings point into the input: keep our own copy for the reply's lifetime */
    r->owned = malloc(len ? len : 1);
    if (!r->owned) return sd_errf(err, "reply: out of memory");
    memcpy(r->owned, buf, len);
    msgpack_unpacked_init(&r->up);
    size_t off = 0;
    char why[128] = "";
    if (sd_mp_check(buf, len, why, sizeof why) ||
        msgpack_unpack_next(&r->up, r->owned, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(&r->up);
        free(r->owned);
        memset(r, 0, sizeof *r);
        return sd_errf(err, "reply is not one well-formed MessagePack object%s%s", *why ? ": " : "", why);
    }
    r->root = &r->up.data;
    if (reply_fill(r, err)) {
        sd_reply_free(r);
        return -1;
    }
    return 0;
}

void sd_reply_free(sd_reply *r) {
    if (!r) return;
    free(r->tokens);
    if (r->root) msgpack_unpacked_destroy(&r->up);
    free(r->owned);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------ JSON */

typedef struct jbuf { char *p; size_t n, cap; bool oom; } jbuf;

static void jput(jbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = true; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void jputs(jbuf *b, const char *s) { jput(b, s, strlen(s)); }

static void jstr(jbuf *b, const char *s, size_t n) {
    jputs(b, "\"");
    for (size_t i = 0; i < n; i++) {
        char buf[8];
        const char *esc = sd_json_escape((unsigned char)s[i], buf);
        if (esc) jputs(b, esc);
        else jput(b, &s[i], 1);
    }
    jputs(b, "\"");
}

static bool is_seed(const msgpack_object_kv *kv) {
    return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 4 && !memcmp(kv->key.via.str.ptr, "seed", 4) &&
           kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}

static void jobj(jbuf *b, const msgpack_object *o, int depth) {
    char num[64];
    if (depth > 64) { jputs(b, "null"); return; }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: jputs(b, "null"); break;
    case MSGPACK_OBJECT_BOOLEAN: jputs(b, o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: snprintf(num, sizeof num, "%llu", (unsigned long long)o->via.u64); jputs(b, num); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: snprintf(num, sizeof num, "%lld", (long long)o->via.i64); jputs(b, num); break;
    case MSGPACK_OBJECT_FLOAT32: /* at float precision: 0.05f prints as 0.05 */
        sd_json_number(num, sizeof num, isfinite(o->via.f64) ? sd_float_decimal((float)o->via.f64) : o->via.f64);
        jputs(b, num);
        break;
    case MSGPACK_OBJECT_FLOAT64:
        sd_json_number(num, sizeof num, o->via.f64);
        jputs(b, num);
        break;
    case MSGPACK_OBJECT_STR: jstr(b, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_ARRAY:
        jputs(b, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) jputs(b, ",");
            jobj(b, &o->via.array.ptr[i], depth + 1);
        }
        jputs(b, "]");
        break;
    case MSGPACK_OBJECT_MAP:
        jputs(b, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (i) jputs(b, ",");
            if (kv->key.type == MSGPACK_OBJECT_STR) jstr(b, kv->key.via.str.ptr, kv->key.via.str.size);
            else { jbuf k = {0}; jobj(&k, &kv->key, depth + 1); jstr(b, k.p ? k.p : "", k.n); free(k.p); }
            jputs(b, ":");
            if (is_seed(kv)) { /* 64-bit seeds exceed what JSON numbers carry (2^53): a string */
                snprintf(num, sizeof num, "\"%llu\"", (unsigned long long)kv->val.via.u64);
                jputs(b, num);
            } else jobj(b, &kv->val, depth + 1);
        }
        jputs(b, "}");
        break;
    default: jputs(b, "null"); break;
    }
}

char *sd_mp_to_json(const msgpack_object *o) {
    jbuf b = {0};
    jobj(&b, o, 0);
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}
