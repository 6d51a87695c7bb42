/* Fuzz target: a chat template and the variables it renders with. Input: u32 template length, the
 * template source, then JSON: an object is the variables (messages, add_generation_prompt, bos_token...,
 * as a .cases.json case), an array the messages, anything else the content of one user message. Parsing
 * and rendering must end (the interpreter's step, depth and output bounds), and an error message must be
 * valid UTF-8: the daemon sends it to the client in its error reply. */
#include "tests/fuzz/fuzz.h"

#include "base/utf8.h"
#include "chat/template.h"

static json_t *template_vars(const char *text, size_t n) {
    json_t *j = json_loadb(text, n, 0, NULL);
    if (json_is_object(j)) return j;
    json_t *msgs = json_is_array(j) ? j : json_pack("[{s:s, s:s%}]", "role", "user", "content", text, n);
    if (!json_is_array(j)) json_decref(j);
    if (!msgs) return NULL; /* the text is not UTF-8: jansson refuses it, as the gateway would */
    return json_pack("{s:o, s:b, s:s, s:s}", "messages", msgs, "add_generation_prompt", 1, "bos_token", "<s>",
                     "eos_token", "</s>");
}

static void check_message(const sd_err *err) {
    if (!err->msg[0] || !sd_utf8_valid(err->msg, strlen(err->msg))) abort();
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    size_t n_src = fuzz_u32(data);
    if (n_src > size - 4) n_src = size - 4;
    const char *src = (const char *)data + 4, *rest = src + n_src;
    sd_err err = {{0}};
    sd_tmpl *t = sd_tmpl_parse(src, n_src, &err);
    if (!t) {
        check_message(&err);
        return 0;
    }
    json_t *vars = template_vars(rest, size - 4 - n_src);
    char *out = NULL;
    size_t len = 0;
    if (vars && sd_tmpl_render(t, vars, &out, &len, &err) == 0) {
        if (out[len] != '\0') abort();
    } else if (vars) {
        check_message(&err);
    }
    free(out);
    json_decref(vars);
    sd_tmpl_free(t);
    return 0;
}
