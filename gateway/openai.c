/* OpenAI request parsing and response building for the gateway (gateway/openai.h). */
#include "gateway/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "ipc/protocol.h"

void oai_errorf(oai_error *e, int status, const char *type, const char *param, const char *fmt, ...) {
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    /* field names and messages may be cut inside a character; JSON needs UTF-8 */
    sd_utf8_sanitize(e->param);
    sd_utf8_sanitize(e->message);
}

static int bad(oai_error *e, const char *param, const char *fmt, const char *what) {
    char msg[300];
    snprintf(msg, sizeof msg, fmt, what);
    oai_errorf(e, 400, "invalid_request_error", param, "'%s': %s", param, msg);
    return -1;
}

static int get_number(json_t *v, const char *name, double lo, double hi, double *out, oai_error *e) {
    if (!json_is_number(v)) return bad(e, name, "must be a number, got %s", json_is_string(v) ? "a string" : "another type");
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        oai_errorf(e, 400, "invalid_request_error", name, "'%s': must be in [%g, %g], got %g", name, lo, hi, x);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_int(json_t *v, const char *name, long long lo, long long hi, long long *out, oai_error *e) {
    if (!json_is_integer(v)) return bad(e, name, "must be an integer%s", "");
    long long x = json_integer_value(v);
    if (x < lo || x > hi) {
        oai_errorf(e, 400, "invalid_request_error", name, "'%s': must be in %lld..%lld, got %lld", name, lo, hi, x);
        return -1;
    }
    *out = x;
    return 0;
}

/* Message content: a string, null (""), or an array of {"type": "text", "text": ...} parts (joined). */
static int get_content(json_t *v, int i, const char **out, oai_request *r, oai_error *e) {
    char name[48];
    snprintf(name, sizeof name, "messages[%d].content", i);
    if (json_is_null(v)) { *out = ""; return 0; }
    if (json_is_string(v)) { *out = json_string_value(v); return 0; }
    if (!json_is_array(v)) return bad(e, name, "must be a string or an array of text parts%s", "");
    size_t total = 1, k;
    json_t *p;
    json_array_foreach(v, k, p) {
        json_t *t = json_object_get(p, "text");
        if (!json_is_object(p) || !json_is_string(json_object_get(p, "type")) ||
            strcmp(json_string_value(json_object_get(p, "type")), "text") || !json_is_string(t))
            return bad(e, name, "only parts {\"type\": \"text\", \"text\": ...} are supported%s", "");
        total += json_string_length(t);
    }
    char *s = malloc(total), **parts = realloc(r->parts, sizeof *parts * (size_t)(r->n_parts + 1));
    if (parts) r->parts = parts;
    if (!s || !parts) {
        free(s);
        oai_errorf(e, 500, "server_error", NULL, "out of memory");
        return -1;
    }
    r->parts[r->n_parts++] = s;
    size_t n = 0;
    json_array_foreach(v, k, p) {
        json_t *t = json_object_get(p, "text");
        memcpy(s + n, json_string_value(t), json_string_length(t));
        n += json_string_length(t);
    }
    s[n] = '\0';
    if (strlen(s) != n) return bad(e, name, "contains a NUL character%s", "");
    *out = s;
    return 0;
}

static int get_messages(json_t *v, oai_request *r, oai_error *e) {
    if (!json_is_array(v) || json_array_size(v) == 0) return bad(e, "messages", "must be a non-empty array%s", "");
    if (json_array_size(v) > SD_PROTO_MAX_MESSAGES)
        return bad(e, "messages", "too many messages (the limit is " "1024" ")%s", "");
    size_t n = json_array_size(v), i;
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) { oai_errorf(e, 500, "server_error", NULL, "out of memory"); return -1; }
    json_t *m;
    json_array_foreach(v, i, m) {
        char name[48];
        snprintf(name, sizeof name, "messages[%zu]", i);
        if (!json_is_object(m)) return bad(e, name, "must be an object with 'role' and 'content'%s", "");
        const char *key;
        json_t *val;
        json_object_foreach(m, key, val) {
            if (!strcmp(key, "role") || !strcmp(key, "content") || !strcmp(key, "name")) continue;
            if (!strcmp(key, "tool_calls") || !strcmp(key, "tool_call_id"))
                return bad(e, name, "tool calls are not supported yet%s", "");
            char field[112];
            snprintf(field, sizeof field, "%s.%.60s", name, key);
            return bad(e, field, "unknown field%s", "");
        }
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role) || !json_string_length(role)) return bad(e, name, "needs a string 'role'%s", "");
        r->msgs[i].role = json_string_value(role);
        if (get_content(json_object_get(m, "content"), (int)i, &r->msgs[i].content, r, e)) return -1;
    }
    r->g.messages = r->msgs;
    r->g.n_messages = (int)n;
    return 0;
}

static int get_stop(json_t *v, oai_request *r, oai_error *e) {
    if (json_is_string(v)) {
        r->stop[0] = json_string_value(v);
        r->g.n_stop = 1;
    } else if (json_is_array(v) && json_array_size(v) <= 16) {
        size_t i;
        json_t *s;
        json_array_foreach(v, i, s) {
            if (!json_is_string(s)) return bad(e, "stop", "must be a string or an array of strings%s", "");
            r->stop[i] = json_string_value(s);
        }
        r->g.n_stop = (int)json_array_size(v);
    } else if (!json_is_null(v)) {
        return bad(e, "stop", "must be a string or an array of at most 16 strings%s", "");
    }
    r->g.stop = r->stop;
    return 0;
}

static int get_speculative(json_t *v, oai_request *r, oai_error *e) {
    if (!json_is_object(v)) return bad(e, "speculative", "must be an object {mode, draft_max}%s", "");
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        if (!strcmp(key, "mode")) {
            const char *m = json_string_value(val);
            if (!m || (strcmp(m, "spec") && strcmp(m, "plain")))
                return bad(e, "speculative.mode", "must be \"spec\" or \"plain\"%s", "");
            r->g.mode = m;
        } else if (!strcmp(key, "draft_max")) {
            long long k;
            if (get_int(val, "speculative.draft_max", 1, SD_PROTO_MAX_DRAFT, &k, e)) return -1;
            r->g.draft_max = (int)k;
        } else {
            return bad(e, "speculative", "unknown field (mode, draft_max)%s", "");
        }
    }
    return 0;
}

/* OpenAI fields specd does not implement, accepted at the value that asks for nothing (SDKs and agent
 * frameworks send some of them explicitly, e.g. `frequency_penalty: 0`), refused with a 400 otherwise.
 * -1 refused, 0 accepted, 1 not such a field. */
static int neutral_field(const char *key, json_t *v, oai_kind kind, oai_error *e) {
    static const struct {
        const char *name;
        char want; /* '0': the number 0; 'f': false; 'e': an empty object; 't': {"type": "text"}; '1': the number 1; 'b': any boolean */
        bool chat_only, completion_only;
    } k[] = {
        {"presence_penalty", '0', 0, 0}, {"frequency_penalty", '0', 0, 0}, {"logprobs", 'f', 1, 0},
        {"top_logprobs", '0', 1, 0}, {"logit_bias", 'e', 0, 0}, {"response_format", 't', 1, 0},
        {"parallel_tool_calls", 'b', 1, 0}, {"store", 'f', 1, 0}, {"echo", 'f', 0, 1}, {"best_of", '1', 0, 1},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (strcmp(key, k[i].name) || (k[i].chat_only && kind != OAI_CHAT) || (k[i].completion_only && kind != OAI_COMPLETION))
            continue;
        const json_t *type = json_object_get(v, "type");
        bool ok = json_is_null(v) || (k[i].want == '0' && json_is_number(v) && json_number_value(v) == 0) ||
                  (k[i].want == '1' && json_is_integer(v) && json_integer_value(v) == 1) ||
                  (k[i].want == 'f' && json_is_false(v)) || (k[i].want == 'b' && json_is_boolean(v)) ||
                  (k[i].want == 'e' && json_is_object(v) && json_object_size(v) == 0) ||
                  (k[i].want == 't' && json_is_object(v) && json_object_size(v) == 1 && json_is_string(type) &&
                   !strcmp(json_string_value(type), "text"));
        if (ok) return 0;
        static const char *const what[] = {"0", "false", "{}", "{\"type\": \"text\"}", "1", "a boolean"};
        const char *w = what[strchr("0fet1b", k[i].want) - "0fet1b"];
        oai_errorf(e, 400, "invalid_request_error", key, "'%s': not supported by specd (only %s or null)", key, w);
        return -1;
    }
    return 1;
}

/* One top-level field; 1 when the name is not a field of this endpoint. */
static int parse_field(const char *key, json_t *v, oai_request *r, oai_error *e) {
    specd_gen *g = &r->g;
    double d;
    long long i;
    if (!strcmp(key, "model")) {
        if (!json_is_string(v)) return bad(e, key, "must be a string%s", "");
        r->model = json_string_value(v);
        return 0;
    }
    if (!strcmp(key, "messages") && r->kind == OAI_CHAT) return get_messages(v, r, e);
    if (!strcmp(key, "prompt") && r->kind == OAI_COMPLETION) {
        if (json_is_array(v) && json_array_size(v) == 1) v = json_array_get(v, 0);
        if (!json_is_string(v)) return bad(e, key, "must be a string (or an array of one string)%s", "");
        g->prompt = json_string_value(v);
        if (strlen(g->prompt) != json_string_length(v)) return bad(e, key, "contains a NUL character%s", "");
        return 0;
    }
    if (!strcmp(key, "max_tokens") || !strcmp(key, "max_completion_tokens")) {
        if (json_is_null(v)) return 0;
        if (get_int(v, key, 1, SD_PROTO_MAX_GEN_TOKENS, &i, e)) return -1;
        g->max_tokens = (int)i;
        return 0;
    }
    if (!strcmp(key, "temperature")) {
        if (get_number(v, key, 0, SD_PROTO_MAX_TEMPERATURE, &d, e)) return -1;
        g->temperature = d;
        return 0;
    }
    if (!strcmp(key, "top_p")) {
        if (get_number(v, key, 1e-9, 1, &d, e)) return -1;
        g->top_p = d;
        return 0;
    }
    if (!strcmp(key, "min_p")) {
        if (get_number(v, key, 0, 1, &d, e)) return -1;
        g->min_p = d;
        return 0;
    }
    if (!strcmp(key, "top_k")) {
        if (get_int(v, key, 0, SD_PROTO_MAX_TOP_K, &i, e)) return -1;
        g->top_k = (int)i;
        return 0;
    }
    if (!strcmp(key, "seed")) {
        if (json_is_null(v)) return 0;
        if (get_int(v, key, 0, INT64_MAX, &i, e)) return -1;
        g->seed = (uint64_t)i;
        g->has_seed = 1;
        return 0;
    }
    if (!strcmp(key, "stop")) return get_stop(v, r, e);
    if (!strcmp(key, "n")) return get_int(v, key, 1, 1, &i, e);
    if (!strcmp(key, "stream")) {
        if (!json_is_boolean(v)) return bad(e, key, "must be a boolean%s", "");
        r->stream = json_is_true(v);
        return 0;
    }
    if (!strcmp(key, "stream_options")) {
        json_t *u = json_object_get(v, "include_usage");
        if (!json_is_object(v) || json_object_size(v) != (u ? 1u : 0u) || (u && !json_is_boolean(u)))
            return bad(e, key, "must be {\"include_usage\": boolean}%s", "");
        r->include_usage = json_is_true(u);
        return 0;
    }
    if (!strcmp(key, "user")) return json_is_string(v) ? 0 : bad(e, key, "must be a string%s", "");
    if (!strcmp(key, "speculative")) return get_speculative(v, r, e);
    if (!strcmp(key, "tools") || !strcmp(key, "tool_choice") || !strcmp(key, "functions"))
        return bad(e, key, "tool calling is not supported yet%s", "");
    return neutral_field(key, v, r->kind, e);
}

int oai_parse(oai_kind kind, const char *body, size_t len, oai_request *r, oai_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->g = specd_gen_default();
    json_error_t je;
    r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!r->root) {
        oai_errorf(e, 400, "invalid_request_error", NULL, "the body is not valid JSON: %s (at byte %d)", je.text,
                   je.position);
        return -1;
    }
    if (!json_is_object(r->root)) {
        oai_errorf(e, 400, "invalid_request_error", NULL, "the body must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(r->root, key, v) {
        int rc = parse_field(key, v, r, e);
        if (rc < 0) return -1;
        if (rc > 0) return bad(e, key, "unknown field%s", "");
    }
    if (kind == OAI_CHAT && !r->g.messages) return bad(e, "messages", "is required%s", "");
    if (kind == OAI_COMPLETION && !r->g.prompt) return bad(e, "prompt", "is required%s", "");
    return 0;
}

void oai_request_free(oai_request *r) {
    for (int i = 0; i < r->n_parts; i++) free(r->parts[i]);
    free(r->parts);
    free(r->msgs);
    json_decref(r->root);
    memset(r, 0, sizeof *r);
}

void oai_from_specd_error(const specd_error *se, oai_error *e) {
    if (se->kind != SPECD_ERR_DAEMON) {
        int st = se->kind == SPECD_ERR_CONNECT || se->kind == SPECD_ERR_TIMEOUT ? 503 : 500;
        oai_errorf(e, st, st == 503 ? "service_unavailable" : "server_error", NULL, "%s", se->message);
        return;
    }
    const char *c = se->code;
    int st = !strcmp(c, SD_E_BUSY) ? 429 : !strcmp(c, SD_E_SHUTTING_DOWN) ? 503 : !strcmp(c, SD_E_INTERNAL) ? 500 : 400;
    oai_errorf(e, st, st == 400 ? "invalid_request_error" : st == 429 ? "rate_limit_error" : "server_error", NULL, "%s",
               se->message);
    snprintf(e->code, sizeof e->code, "%s", !strcmp(c, SD_E_TOO_LONG) ? "context_length_exceeded" : c);
}

char *oai_error_json(const oai_error *e) {
    json_t *j = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type", e->type, "param",
                          e->param[0] ? json_string(e->param) : json_null(), "code",
                          e->code[0] ? json_string(e->code) : json_null());
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

const char *oai_finish_reason(const char *r) { return !strcmp(r, "length") ? "length" : "stop"; }

static json_t *usage(const specd_result *res) {
    const specd_gen_stats *s = &res->stats;
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", s->prompt_tokens, "completion_tokens", s->generated,
                     "total_tokens", s->prompt_tokens + s->generated);
}

/* specd's own figures in every response: speculation counts and timings. */
static json_t *specd_fields(const specd_result *res) {
    const specd_gen_stats *s = &res->stats;
    return json_pack("{s:i, s:i, s:f, s:f, s:f}", "drafted", s->drafted, "accepted", s->accepted, "acceptance",
                     s->acceptance, "ttft_ms", s->ttft_ms, "ms_per_token", s->ms_per_token);
}

static char *dump(json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

char *oai_response(const oai_request *r, const specd_result *res, const char *id, long created) {
    const char *fr = oai_finish_reason(res->finish_reason);
    json_t *choice = r->kind == OAI_CHAT
                         ? json_pack("{s:i, s:{s:s, s:s%}, s:n, s:s}", "index", 0, "message", "role", "assistant",
                                     "content", res->text, res->text_len, "logprobs", "finish_reason", fr)
                         : json_pack("{s:i, s:s%, s:n, s:s}", "index", 0, "text", res->text, res->text_len, "logprobs",
                                     "finish_reason", fr);
    return dump(json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o, s:o}", "id", id, "object",
                          r->kind == OAI_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)created,
                          "model", r->model ? r->model : "", "choices", choice, "usage", usage(res), "specd",
                          specd_fields(res)));
}

static char *sse(json_t *j) {
    char *s = dump(j);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *out = malloc(n + 9);
    if (out) {
        memcpy(out, "data: ", 6);
        memcpy(out + 6, s, n);
        memcpy(out + 6 + n, "\n\n", 3);
    }
    free(s);
    return out;
}

static json_t *chunk(const oai_request *r, const char *id, long created, json_t *choices) {
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", id, "object",
                     r->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)created,
                     "model", r->model ? r->model : "", "choices", choices);
}

/* ---- the per-token chunk, written directly ----
 * Every token of a stream becomes one of these, so it is written with one allocation and no JSON tree
 * (jansson's pack and dump took most of the gateway's own time per token); the bytes are those jansson
 * writes for the same object (tests/test_gateway.c compares them). */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool bad; /* out of memory, or a string that is not UTF-8 */
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->bad) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->bad = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string as jansson writes it: quotes, \" \\ \b \f \n \r \t, other controls as \u00XX,
 * DEL, '/' and non-ASCII as they are; text that is not UTF-8 is refused, as jansson refuses it. */
static void put_str(sbuf *b, const char *s, size_t n) {
    if (!sd_utf8_valid(s, n)) {
        b->bad = true;
        return;
    }
    put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(b, s + run, i - run);
        run = i + 1;
        char esc[8];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b" : c == '\f' ? "\\f"
                      : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
        if (!e) {
            snprintf(esc, sizeof esc, "\\u%04X", c);
            e = esc;
        }
        puts_(b, e);
    }
    put(b, s + run, n - run);
    put(b, "\"", 1);
}

char *oai_chunk_delta(const oai_request *r, const char *id, long created, const char *text, size_t len, bool first,
                      uint64_t time_us) {
    char num[32];
    bool chat = r->kind == OAI_CHAT;
    const char *model = r->model ? r->model : "";
    sbuf b = {.cap = 192 + strlen(id) + strlen(model) + len}; /* the whole chunk unless the text has escapes */
    b.p = malloc(b.cap);
    if (!b.p) return NULL;
    puts_(&b, "data: {\"id\":");
    put_str(&b, id, strlen(id));
    puts_(&b, chat ? ",\"object\":\"chat.completion.chunk\",\"created\":" : ",\"object\":\"text_completion\",\"created\":");
    snprintf(num, sizeof num, "%ld", created);
    puts_(&b, num);
    puts_(&b, ",\"model\":");
    put_str(&b, model, strlen(model));
    puts_(&b, chat ? (first ? ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                            : ",\"choices\":[{\"index\":0,\"delta\":{\"content\":")
                   : ",\"choices\":[{\"index\":0,\"text\":");
    put_str(&b, text, len);
    puts_(&b, chat ? "},\"logprobs\":null,\"finish_reason\":null}]" : ",\"logprobs\":null,\"finish_reason\":null}]");
    if (time_us) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)time_us);
        puts_(&b, ",\"specd\":{\"time_us\":");
        puts_(&b, num);
        puts_(&b, "}");
    }
    puts_(&b, "}\n\n");
    if (b.bad) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *oai_chunk_finish(const oai_request *r, const char *id, long created, const char *finish_reason) {
    json_t *c = r->kind == OAI_CHAT
                    ? json_pack("{s:i, s:{}, s:n, s:s}", "index", 0, "delta", "logprobs", "finish_reason", finish_reason)
                    : json_pack("{s:i, s:s, s:n, s:s}", "index", 0, "text", "", "logprobs", "finish_reason", finish_reason);
    return sse(chunk(r, id, created, json_pack("[o]", c)));
}

char *oai_chunk_usage(const oai_request *r, const char *id, long created, const specd_result *res) {
    json_t *j = chunk(r, id, created, json_array());
    if (j) {
        json_object_set_new(j, "usage", usage(res));
        json_object_set_new(j, "specd", specd_fields(res));
    }
    return sse(j);
}
