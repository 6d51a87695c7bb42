/* UTF-8: the one decoder and encoder of the project (tokenizers, protocol validation, streaming text). */
#ifndef SD_UTF8_H
#define SD_UTF8_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Stand-in code point for a byte that does not start a valid UTF-8 character: U+FFFD. */
#define SD_UTF8_REPLACEMENT 0xFFFDu

/* Bytes of the character a lead byte starts: 1 for ASCII, 2..4, 0 when c cannot start a character
 * (continuation byte, C0/C1, F5..FF). */
int sd_utf8_lead_len(unsigned char c);
/* Decodes the character at s[0..len), len > 0. Returns its byte length (1..4) and *cp; a byte that does
 * not start a valid character (bad lead, truncated, overlong, surrogate, > U+10FFFF) returns 1 with
 * *cp = SD_UTF8_REPLACEMENT and *valid = 0, so any byte string decodes and can be re-assembled exactly. */
size_t sd_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp, int *valid);
/* Encodes cp (<= U+10FFFF) as UTF-8 into out[4]; returns the byte count (0 when cp is out of range). */
int sd_utf8_encode(uint32_t cp, char *out);
/* True when s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool sd_utf8_valid(const char *s, size_t len);
/* Makes the NUL-terminated s valid UTF-8 in place, for messages that quote outside bytes or were cut
 * to a buffer: each byte that does not start a valid character (a cut one included) becomes '?'. */
void sd_utf8_sanitize(char *s);
#endif
