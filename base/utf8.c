/* UTF-8 decoding and encoding (see utf8.h). */
#include "base/utf8.h"

#include <string.h>

int sd_utf8_lead_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

size_t sd_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp, int *valid) {
    unsigned char b = s[0];
    *valid = 1;
    if (b < 0x80) { *cp = b; return 1; }
    static const uint32_t first_bits[5] = {0, 0, 0x1F, 0x0F, 0x07}, min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t n = (size_t)sd_utf8_lead_len(b);
    if (n < 2 || len < n) goto bad;
    uint32_t c = b & first_bits[n], min = min_cp[n];
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) goto bad;
    *cp = c;
    return n;
bad:
    *valid = 0;
    *cp = SD_UTF8_REPLACEMENT;
    return 1;
}

int sd_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > 0x10FFFF) return 0;
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

bool sd_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int valid;
        i += sd_utf8_decode(p + i, len - i, &cp, &valid);
        if (!valid) return false;
    }
    return true;
}

void sd_utf8_sanitize(char *s) {
    unsigned char *p = (unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int valid;
        size_t k = sd_utf8_decode(p + i, len - i, &cp, &valid);
        if (!valid) p[i] = '?';
        i += k;
    }
}
