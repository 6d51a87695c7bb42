/* The daemon's chat format: template loading and message rendering (chat/chat.h). */
#include "chat/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "chat/template.h"

struct sd_chat {
    sd_tmpl *tmpl;
    char *source;
    char origin[300];
};

static char *read_text(const char *path, size_t *n, sd_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        sd_errf(err, "%s: cannot open the chat template", path);
        return NULL;
    }
    char *buf = NULL;
    size_t cap = 0;
    *n = 0;
    for (;;) {
        if (cap - *n < 4097) {
            char *nb = cap < (64u << 20) ? realloc(buf, cap ? cap * 2 : 8192) : NULL;
            if (!nb) {
                sd_errf(err, "%s: chat template too large or out of memory", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap = cap ? cap * 2 : 8192;
        }
        size_t got = fread(buf + *n, 1, cap - *n - 1, f);
        *n += got;
        if (!got) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        sd_errf(err, "%s: read error", path);
        free(buf);
        return NULL;
    }
    buf[*n] = '\0';
    return buf;
}

int sd_chat_open(const char *template_path, const gguf_file *gguf, sd_chat **out, sd_err *err) {
    *out = NULL;
    char *src = NULL;
    size_t n = 0;
    if (template_path) {
        src = read_text(template_path, &n, err);
        if (!src) return -1;
    } else if (gguf && gguf_find(gguf, "tokenizer.chat_template")) {
        if (gguf_get_str(gguf, "tokenizer.chat_template", &src, err)) return -1;
        n = strlen(src);
    } else {
        return 0;
    }
    sd_chat *c = calloc(1, sizeof *c);
    if (!c) {
        free(src);
        return sd_errf(err, "out of memory");
    }
    c->source = src;
    snprintf(c->origin, sizeof c->origin, template_path ? "file %s" : "model", template_path);
    c->tmpl = sd_tmpl_parse(src, n, err);
    if (!c->tmpl) {
        sd_err_prefix(err, "chat template (%s)", c->origin);
        sd_chat_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void sd_chat_free(sd_chat *c) {
    if (!c) return;
    sd_tmpl_free(c->tmpl);
    free(c->source);
    free(c);
}

const char *sd_chat_source(const sd_chat *c) { return c->source; }
const char *sd_chat_origin(const sd_chat *c) { return c->origin; }

int sd_chat_render(const sd_chat *c, const sd_chat_msg *msgs, int n, bool add_generation_prompt, const char *bos,
                   const char *eos, char **out, size_t *out_len, sd_err *err) {
    json_t *vars = json_object(), *list = json_array();
    int rc = -1;
    if (!vars || !list) {
        sd_errf(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        json_t *m = json_pack("{s:s, s:s%}", "role", msgs[i].role, "content", msgs[i].content, msgs[i].content_len);
        if (!m || json_array_append_new(list, m)) {
            sd_errf(err, "message %d: not representable (invalid UTF-8?)", i);
            goto done;
        }
    }
    if (json_object_set(vars, "messages", list) || json_object_set_new(vars, "add_generation_prompt", json_boolean(add_generation_prompt)) ||
        json_object_set_new(vars, "bos_token", json_string(bos ? bos : "")) ||
        json_object_set_new(vars, "eos_token", json_string(eos ? eos : ""))) {
        sd_errf(err, "out of memory");
        goto done;
    }
    rc = sd_tmpl_render(c->tmpl, vars, out, out_len, err);
done:
    json_decref(list);
    json_decref(vars);
    return rc;
}
