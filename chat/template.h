/* Chat templates: a Jinja interpreter for the subset that models' `tokenizer.chat_template` use, with the
 * settings Hugging Face renders them with (trim_blocks, lstrip_blocks, loop controls, a `tojson` that keeps
 * non-ASCII, `raise_exception`, `strftime_now`). Parsing and rendering are bounded (nesting depth, macro
 * recursion, evaluation steps, memory, output size), so a hostile template gets an error, not a crash. */
#ifndef SD_TEMPLATE_H
#define SD_TEMPLATE_H
#include <stddef.h>

#include <jansson.h>

#include "base/err.h"

typedef struct sd_tmpl sd_tmpl;

/* Parses template source src[0..n). NULL on a syntax error or an unsupported construct; the message names
 * the construct and its line ("TemplateSyntaxError: line 3: ..."). */
sd_tmpl *sd_tmpl_parse(const char *src, size_t n, sd_err *err);
void sd_tmpl_free(sd_tmpl *t);

/* Renders with the variables of the JSON object vars (messages, add_generation_prompt, bos_token, ...).
 * On success *out is a malloc'd NUL-terminated string of *out_len bytes. On failure -1 with the error
 * the template raised, as Jinja names it ("UndefinedError: 'x' is undefined", "TemplateError: <msg>"). */
int sd_tmpl_render(const sd_tmpl *t, const json_t *vars, char **out, size_t *out_len, sd_err *err);

#endif
