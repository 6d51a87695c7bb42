/* The one option table for engine, sampling and speculation options: `specd generate`, `specd serve`,
 * `specd bench` and `specd-cli` take their rows from here (base/args.h parses them), with the ranges and
 * defaults of target/limits.h. Data only (no engine code), so the client library links it too. */
#ifndef SD_OPTIONS_H
#define SD_OPTIONS_H
#include "base/args.h"
#include "target/limits.h"

/* Which command takes a row (sd_opt.cmds). */
enum {
    SD_CMD_GENERATE = 1 << 0,
    SD_CMD_SERVE = 1 << 1,
    SD_CMD_BENCH = 1 << 2,
    SD_CMD_CLI_GENERATE = 1 << 3, /* specd-cli generate */
    SD_CMD_CLI_BENCH = 1 << 4,    /* specd-cli bench */
    SD_CMD_INFO = 1 << 5,         /* specd info, specd tokenize: the model and tokenizer rows only */
};

/* Ids of the rows (indexes into sd_optval arrays); a command's own options continue from SD_O_COUNT. */
enum {
    SD_O_MODEL, SD_O_TOKENIZER, SD_O_DRAFT, SD_O_DRAFT_TOKENIZER, SD_O_LOOKUP, SD_O_DRAFT_LAYERS,
    SD_O_THREADS, SD_O_DEVICE, SD_O_CTX, SD_O_KV_TYPE, SD_O_KV_MEM,
    SD_O_MAX_TOKENS, SD_O_TEMP, SD_O_TOP_K, SD_O_TOP_P, SD_O_MIN_P, SD_O_SEED, SD_O_STOP,
    SD_O_DRAFT_MAX, SD_O_DRAFT_MIN, SD_O_DRAFT_P_MIN, SD_O_PLAIN,
    SD_O_COUNT
};

extern const sd_opt_table sd_engine_options;  /* models, proposer, threads, device, context */
extern const sd_opt_table sd_request_options; /* sampling, speculation, length, stop strings */
#endif
