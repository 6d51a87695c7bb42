/* JSON text output (see json_out.h). */
#include "base/json_out.h"

#include <math.h>
#include <stdlib.h>

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

int sd_json_number(char *buf, size_t cap, double x) {
    if (!isfinite(x)) return snprintf(buf, cap, "null");
    int n = 0;
    for (int prec = 1; prec <= 17; prec++) { /* the fewest digits that read back as x */
        n = snprintf(buf, cap, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    return n;
}

double sd_float_decimal(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}
