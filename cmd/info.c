/* `specd info -m MODEL [-z TOKENIZER]`: loads a model (on the CPU backend: weights stay in the file
 * mapping, nothing is copied) and describes it. */
#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "cmd/commands.h"

static void usage(void) {
    fprintf(stderr,
            "usage: specd info -m MODEL [-z TOKENIZER]\n"
            "  -m FILE   model (GGUF, or llama2.c .bin with -z)\n"
            "  -z FILE   llama2.c tokenizer file (for .bin models)\n"
            "prints architecture, hyperparameters, tensor types, parameter count and bytes read per token\n");
}

int cmd_info(int argc, char **argv) {
    const char *model = NULL, *tok = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        }
        bool known = !strcmp(argv[i], "-m") || !strcmp(argv[i], "-z");
        if (!known || i + 1 >= argc) {
            fprintf(stderr, "specd info: %s '%s'\n", known ? "missing value for" : "unknown argument", argv[i]);
            usage();
            return 2;
        }
        if (!strcmp(argv[i], "-m")) model = argv[++i];
        else tok = argv[++i];
    }
    if (!model) {
        fprintf(stderr, "specd info: -m MODEL is required\n");
        usage();
        return 2;
    }
    sd_err err = {{0}};
    sd_backend *be = NULL;
    sd_model *m = NULL;
    if (sd_backend_cpu_new(1, &be, &err) || sd_model_load(model, tok, be, &m, &err)) {
        fprintf(stderr, "specd info: %s\n", err.msg);
        if (be) be->destroy(be);
        return 1;
    }
    sd_model_print_info(m, stdout);
    sd_model_free(m);
    be->destroy(be);
    return 0;
}
