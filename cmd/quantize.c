/* `specd quantize IN.gguf OUT.gguf TYPE [--keep NAME]...`: a GGUF model rewritten in another type or mix
 * (model/quantize_model.h), with a progress bar and a summary (bytes before and after, time). */
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "cmd/commands.h"
#include "kernels/backend.h"
#include "model/quantize_model.h"

#define MAX_KEEP 64

static void usage(void) {
    fprintf(stderr,
            "usage: specd quantize IN.gguf OUT.gguf TYPE [--keep NAME]... [-q]\n"
            "  TYPE         %s\n"
            "  --keep NAME  copy tensors whose name contains NAME as they are (repeatable)\n"
            "  -q           no progress bar\n",
            sd_qtarget_list());
}

typedef struct progress_state {
    double t0;
    bool quiet;
} progress_state;

static void progress(void *ctx, int i, int n, const char *name, int from, int to, size_t in_bytes, size_t out_bytes) {
    progress_state *p = ctx;
    if (p->quiet) return;
    const int width = 30;
    int done = (i + 1) * width / (n ? n : 1);
    fprintf(stderr, "\r[%.*s%*s] %d/%d %-32.32s %-6s -> %-6s %7.1f s", done, "##############################",
            width - done, "", i + 1, n, name, sd_dtype_name(from), sd_dtype_name(to), sd_now_s() - p->t0);
    if (i + 1 == n) fputc('\n', stderr);
    (void)in_bytes;
    (void)out_bytes;
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL}, *keep[MAX_KEEP];
    int n_pos = 0, n_keep = 0;
    progress_state ps = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (!strcmp(argv[i], "--keep")) {
            if (i + 1 >= argc || n_keep == MAX_KEEP) {
                fprintf(stderr, "specd quantize: %s\n", i + 1 >= argc ? "missing value for --keep" : "too many --keep");
                usage();
                return 2;
            }
            keep[n_keep++] = argv[++i];
        } else if (!strcmp(argv[i], "-q")) {
            ps.quiet = true;
        } else if (argv[i][0] == '-' || n_pos == 3) {
            fprintf(stderr, "specd quantize: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        } else {
            pos[n_pos++] = argv[i];
        }
    }
    if (n_pos != 3) {
        fprintf(stderr, "specd quantize: IN, OUT and TYPE are required\n");
        usage();
        return 2;
    }
    const sd_qtarget *t = sd_qtarget_find(pos[2]);
    if (!t) {
        fprintf(stderr, "specd quantize: unknown type '%s' (one of: %s)\n", pos[2], sd_qtarget_list());
        return 2;
    }
    if (!strcmp(pos[0], pos[1])) {
        fprintf(stderr, "specd quantize: OUT must differ from IN ('%s')\n", pos[0]);
        return 2;
    }
    sd_quant_opts o = {.keep = keep, .n_keep = n_keep, .progress = progress, .ctx = &ps};
    sd_quant_stats st;
    sd_err err = {{0}};
    ps.t0 = sd_now_s();
    if (sd_quantize_file(pos[0], pos[1], t, &o, &st, &err)) {
        fprintf(stderr, "specd quantize: %s\n", err.msg);
        return 1;
    }
    double secs = sd_now_s() - ps.t0;
    printf("%s -> %s (%s): %d tensors, %d converted\n", pos[0], pos[1], t->name, st.n_tensors, st.n_quantized);
    printf("tensor data: %.2f MB -> %.2f MB (%.2fx smaller) in %.1f s\n", st.in_bytes / 1e6, st.out_bytes / 1e6,
           st.out_bytes ? (double)st.in_bytes / (double)st.out_bytes : 0.0, secs);
    printf("types:");
    for (int ty = 0; ty < 64; ty++)
        if (st.count_by_type[ty]) printf(" %s %d", sd_dtype_name(ty), st.count_by_type[ty]);
    printf("\n");
    return 0;
}
