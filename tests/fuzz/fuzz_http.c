/* Fuzz target: one HTTP request body through the gateway's parser (gateway/openai.c), as a chat request
 * (first byte odd) or a completion. A body that parses must hand the daemon every string whole (no NUL
 * inside: the protocol's C strings would cut it silently) and turn a result into response objects; a
 * refused body gets a 4xx whose OpenAI-shaped JSON is well formed (it was "{}" when a message was cut
 * inside a character). */
#include "tests/fuzz/fuzz.h"

#include "gateway/openai.h"

static void check_error(const oai_error *e) {
    char *text = oai_error_json(e);
    json_t *back = text ? json_loads(text, 0, NULL) : NULL;
    if (!back || e->status < 400 || e->status > 499) abort();
    json_decref(back);
    free(text);
}

/* A string handed on whole: as long as JSON's (s borrowed from v, or joined from parts). */
static void check_whole(const char *s, const json_t *v) {
    if (json_is_string(v) && strlen(s) != json_string_length(v)) abort();
}

static void check_request(const oai_request *r) {
    const json_t *msgs = json_object_get(r->root, "messages");
    for (int i = 0; i < r->g.n_messages; i++) {
        const json_t *m = json_array_get(msgs, (size_t)i);
        check_whole(r->g.messages[i].role, json_object_get(m, "role"));
        check_whole(r->g.messages[i].content, json_object_get(m, "content"));
    }
    const json_t *stop = json_object_get(r->root, "stop");
    for (int i = 0; i < r->g.n_stop; i++) check_whole(r->g.stop[i], json_is_array(stop) ? json_array_get(stop, (size_t)i) : stop);
    if (r->g.prompt) check_whole(r->g.prompt, json_object_get(r->root, "prompt"));
    specd_result res = {.text = "Hi \xc3\xa9", .text_len = 5, .finish_reason = "length"};
    char *parts[4] = {oai_response(r, &res, "id-1", 1), oai_chunk_delta(r, "id-1", 1, "\xc3\xa9", 2, true, 7),
                      oai_chunk_finish(r, "id-1", 1, "stop"), oai_chunk_usage(r, "id-1", 1, &res)};
    for (int i = 0; i < 4; i++) {
        if (!parts[i]) abort();
        free(parts[i]);
    }
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    oai_request r;
    oai_error e;
    if (oai_parse(data[0] & 1 ? OAI_CHAT : OAI_COMPLETION, (const char *)data + 1, size - 1, &r, &e) == 0) check_request(&r);
    else check_error(&e);
    oai_request_free(&r);
    return 0;
}
