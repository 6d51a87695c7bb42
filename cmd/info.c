/* `specd info -m MODEL [-z TOKENIZER]`: reads a model for description (no backend, nothing uploaded:
 * a file with tensor types specd cannot compute is described too) and prints it. */
#include <stdio.h>
#include <string.h>

#include "model/model.h"
#include "cmd/commands.h"
#include "cmd/options.h"

static const sd_opt_table *const k_tables[] = {&sd_engine_options};
static const sd_args_spec k_spec = {.prog = "specd info", .usage = "specd info -m MODEL [-z TOKENIZER]\n"
                                    "Prints architecture, hyperparameters, tensor types, parameter count and bytes read per token.",
                                    .tables = k_tables, .n_tables = 1, .cmd = SD_CMD_INFO};

int cmd_info(int argc, char **argv) {
    sd_optval v[SD_O_COUNT];
    int go_on, rc = cmd_parse_options(&k_spec, argc, argv, v, SD_O_COUNT, &go_on);
    if (!go_on) return rc;
    const char *model = v[SD_O_MODEL].s, *tok = v[SD_O_TOKENIZER].s;
    if (!model) {
        fprintf(stderr, "specd info: -m MODEL is required\n(specd info --help for usage)\n");
        return 2;
    }
    sd_err err = {{0}};
    sd_model *m = NULL;
    if (sd_model_describe(model, tok, &m, &err)) {
        fprintf(stderr, "specd info: %s\n", err.msg);
        return 1;
    }
    sd_model_print_info(m, stdout);
    sd_model_free(m);
    return 0;
}
