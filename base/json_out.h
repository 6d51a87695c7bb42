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
/* x as the shortest JSON number that reads back as the same double (0.05, not 0.050000000000000003);
 * "null" for NaN and infinities, which JSON lacks. Returns what snprintf returns. */
int sd_json_number(char *buf, size_t cap, double x);
/* The double of the shortest decimal that reads back as f (0.05f -> 0.05): a float setting sent as a
 * double, or printed, shows as it was typed rather than as 0.05000000074505806. */
double sd_float_decimal(float f);
#endif
