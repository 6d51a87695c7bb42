/* What the engine commands (generate, serve, bench) do with the shared option table: parse with their
 * own rows added, and turn the values into an engine configuration and request parameters. */
#ifndef SD_CMD_OPTIONS_H
#define SD_CMD_OPTIONS_H
#include "target/engine.h"
#include "target/options.h"

/* Parses argv with spec; on an error prints it and a pointer to --help. Returns 0 to go on, or the exit
 * status to end with: 0 after --help, 2 on a usage error. */
int cmd_parse_options(const sd_args_spec *spec, int argc, char **argv, sd_optval *vals, int n_vals, int *go_on);

/* The engine configuration the values describe (strings point into argv or the environment). */
void cmd_engine_config(const sd_optval *v, sd_engine_config *c);
/* The request parameters the values describe; p->stop points into v (keep v alive). */
void cmd_gen_params(const sd_optval *v, sd_gen_params *p);
/* How many proposers the values name (-md, --lookup, --draft-layers): more than one is a usage error. */
int cmd_n_proposers(const sd_optval *v);
#endif
