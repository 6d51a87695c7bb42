/* `specd template`: renders a chat template (a model's tokenizer.chat_template or a file) for every case of
 * a cases file, one JSON object per line, so a user can check a template against expected renderings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "chat/template.h"
#include "model/gguf.h"
#include "cmd/commands.h"

static int usage(void) {
    fprintf(stderr,
            "usage: specd template (--chat-template FILE | -m MODEL) (--cases FILE | --vars FILE)\n"
            "  --chat-template FILE  Jinja template file (with -m too: it overrides the model's)\n"
            "  -m MODEL              GGUF file whose tokenizer.chat_template is used\n"
            "  --cases FILE          JSON list of {messages, add_generation_prompt, bos_token, eos_token, ...};\n"
            "                        prints {\"rendered\": TEXT} or {\"error\": MESSAGE} per case, one per line\n"
            "  --vars FILE           one JSON object of template variables; prints the rendering as is\n");
    return 2;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0;
    *n = 0;
    for (;;) {
        if (*n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t got = fread(buf + *n, 1, cap - *n - 1, f);
        *n += got;
        if (got == 0) break;
    }
    bool bad = ferror(f) || !buf;
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[*n] = '\0';
    return buf;
}

/* The template source: the file, or the model's tokenizer.chat_template. */
static char *load_source(const char *file, const char *model, size_t *n, sd_err *err) {
    if (file) {
        char *s = slurp(file, n);
        if (!s) sd_errf(err, "%s: cannot read the template file", file);
        return s;
    }
    gguf_file *g;
    if (gguf_open(model, &g, err)) return NULL;
    char *s = NULL;
    if (gguf_get_str(g, "tokenizer.chat_template", &s, err)) {
        sd_err_prefix(err, "%s: the model has no chat template (use --chat-template)", model);
        s = NULL;
    }
    gguf_close(g);
    if (s) *n = strlen(s);
    return s;
}

/* One line per case: {"rendered": ...} or {"error": ...}. */
static int render_cases(const sd_tmpl *t, json_t *cases) {
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        char *out = NULL;
        size_t n = 0;
        sd_err e = {{0}};
        json_t *line;
        if (!json_is_object(c)) line = json_pack("{s:s}", "error", "TypeError: a case must be a JSON object");
        else if (sd_tmpl_render(t, c, &out, &n, &e)) line = json_pack("{s:s}", "error", e.msg);
        else line = json_pack("{s:s%}", "rendered", out, n);
        char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
        if (!text) {
            fprintf(stderr, "specd template: case %zu: cannot encode the result\n", i);
            free(out);
            json_decref(line);
            return 1;
        }
        printf("%s\n", text);
        free(text);
        free(out);
        json_decref(line);
    }
    return 0;
}

int cmd_template(int argc, char **argv) {
    const char *file = NULL, *model = NULL, *cases_path = NULL, *vars_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage();
        if (i + 1 >= argc) {
            fprintf(stderr, "specd template: %s needs a value\n", a);
            return usage();
        }
        if (!strcmp(a, "--chat-template")) file = argv[++i];
        else if (!strcmp(a, "-m")) model = argv[++i];
        else if (!strcmp(a, "--cases")) cases_path = argv[++i];
        else if (!strcmp(a, "--vars")) vars_path = argv[++i];
        else {
            fprintf(stderr, "specd template: unknown option %s\n", a);
            return usage();
        }
    }
    if ((!file && !model) || !cases_path == !vars_path) return usage();
    sd_err err = {{0}};
    size_t n;
    char *src = load_source(file, model, &n, &err);
    if (!src) {
        fprintf(stderr, "specd template: %s\n", err.msg);
        return 1;
    }
    sd_tmpl *t = sd_tmpl_parse(src, n, &err);
    free(src);
    if (!t) {
        fprintf(stderr, "specd template: %s: %s\n", file ? file : model, err.msg);
        return 1;
    }
    json_error_t je;
    const char *jpath = cases_path ? cases_path : vars_path;
    json_t *j = json_load_file(jpath, JSON_REJECT_DUPLICATES, &je);
    int rc = 1;
    if (!j) {
        fprintf(stderr, "specd template: %s: line %d: %s\n", jpath, je.line, je.text);
    } else if (cases_path && !json_is_array(j)) {
        fprintf(stderr, "specd template: %s: expected a JSON list of cases\n", jpath);
    } else if (cases_path) {
        rc = render_cases(t, j);
    } else {
        char *out;
        size_t len;
        if (sd_tmpl_render(t, j, &out, &len, &err)) {
            fprintf(stderr, "specd template: %s\n", err.msg);
        } else {
            fwrite(out, 1, len, stdout);
            free(out);
            rc = 0;
        }
    }
    json_decref(j);
    sd_tmpl_free(t);
    return rc;
}
