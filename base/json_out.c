/* JSON text output (see json_out.h). */
#include "base/json_out.h"

const char *sd_json_escape(unsigned char c, char buf[8]) {
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default:
        if (c >= 0x20 && c != 0x7f) return NULL;
        snprintf(buf, 8, "\\u%04x", c);
        return buf;
    }
}

void sd_json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        char buf[8];
        const char *esc = sd_json_escape((unsigned char)s[i], buf);
        if (esc) fputs(esc, f);
        else fputc(s[i], f);
    }
    fputc('"', f);
}

void sd_json_ids(FILE *f, const int32_t *ids, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? "," : "", (int)ids[i]);
    fputc(']', f);
}
