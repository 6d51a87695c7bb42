/* Tokens of a chat template (tmpl_lex.c), consumed by the parser (tmpl_parse.c). */
#ifndef SD_TMPL_LEX_H
#define SD_TMPL_LEX_H
#include "chat/tmpl_internal.h"

enum { T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_COMMENT, T_NAME, T_STRING, T_INT, T_FLOAT,
       T_OP, T_EOF };

typedef struct {
    int type, line;
    bool ends_line;  /* an end tag whose trimming ended on a newline (lstrip_blocks' "line starting") */
    const char *s;   /* T_NAME, T_OP: the text */
    size_t n;
    tm_value v;      /* T_DATA, T_STRING, T_INT, T_FLOAT */
} tm_tok;

typedef struct {
    tm_tok *v;
    size_t n, cap;
} tm_toks;

/* Tokenizes the whole template; unwinds with a TemplateSyntaxError naming the line. */
void tm_lex(tm_arena *a, const char *src, size_t n, tm_toks *ts);
#endif
