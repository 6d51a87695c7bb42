/* A model's chat format for the daemon: its template (a file given on the command line, or the GGUF's
 * tokenizer.chat_template) and the rendering of chat messages into prompt text. */
#ifndef SD_CHAT_H
#define SD_CHAT_H
#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "ipc/protocol.h"
#include "model/gguf.h"

typedef struct sd_chat sd_chat;

/* Loads and parses the template: the file template_path when given, else tokenizer.chat_template of gguf
 * (which may be NULL: a llama2.c model). 0 with *out NULL when there is no template at all; -1 with err
 * when a template is there but unreadable or fails to parse (the message names the line). */
int sd_chat_open(const char *template_path, const gguf_file *gguf, sd_chat **out, sd_err *err);
void sd_chat_free(sd_chat *c);
/* The template text (for `info`) and where it came from ("file PATH" or "model"). */
const char *sd_chat_source(const sd_chat *c);
const char *sd_chat_origin(const sd_chat *c);

/* Renders messages with the template as Hugging Face does (bos_token/eos_token are the vocabulary's
 * texts, "" when it has none). *out is malloc'd. -1 with the error the template raised. */
int sd_chat_render(const sd_chat *c, const sd_chat_msg *msgs, int n, bool add_generation_prompt, const char *bos,
                   const char *eos, char **out, size_t *out_len, sd_err *err);

#endif
