/* JSON text output for the command-line tools (specd generate/bench) and the client CLI (specd-cli).
 * It lives in ipc/ because ipc is the one folder linked into both libspecd.a and libspecd-client.a. */
#ifndef SD_JSON_OUT_H
#define SD_JSON_OUT_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Writes s[0..n) as a JSON string: bytes >= 0x80 pass through (the caller's text is UTF-8); quote,
 * backslash, control characters and DEL are escaped. */
void sd_json_str(FILE *f, const char *s, size_t n);
/* Writes ids[0..n) as a JSON array of integers. */
void sd_json_ids(FILE *f, const int32_t *ids, int n);
#endif
