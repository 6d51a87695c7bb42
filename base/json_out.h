/* JSON text output for the command-line tools (specd generate/bench), the client CLI (specd-cli) and the
 * protocol's msgpack -> JSON conversion: one escaping rule for all of them. */
#ifndef SD_JSON_OUT_H
#define SD_JSON_OUT_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The escape sequence of byte c inside a JSON string (quote, backslash, control characters and DEL; the
 * short forms \n \r \t \b \f where JSON has them), or NULL when c stands for itself (bytes >= 0x80 do:
 * the text is UTF-8). buf holds a \u00XX form. */
const char *sd_json_escape(unsigned char c, char buf[8]);
/* Writes s[0..n) as a JSON string: bytes >= 0x80 pass through (the caller's text is UTF-8); quote,
 * backslash, control characters and DEL are escaped. */
void sd_json_str(FILE *f, const char *s, size_t n);
/* Writes ids[0..n) as a JSON array of integers. */
void sd_json_ids(FILE *f, const int32_t *ids, int n);
#endif
