/* The engine/request option table (see options.h). */
#include "target/options.h"

#define GSB (SD_CMD_GENERATE | SD_CMD_SERVE | SD_CMD_BENCH)
#define CLI (SD_CMD_CLI_GENERATE | SD_CMD_CLI_BENCH)

static const sd_opt k_engine[] = {
    {SD_O_MODEL, "--model", "-m", SD_OPT_STR, 0, 0, NULL, "FILE", GSB | SD_CMD_INFO,
     "target model (GGUF, or llama2.c .bin with -z)"},
    {SD_O_TOKENIZER, "--tokenizer", "-z", SD_OPT_STR, 0, 0, NULL, "FILE", GSB | SD_CMD_INFO,
     "llama2.c tokenizer of a .bin target"},
    {SD_O_DRAFT, "--draft", "-md", SD_OPT_STR, 0, 0, NULL, "FILE", GSB, "draft model: speculative decoding"},
    {SD_O_DRAFT_TOKENIZER, "--draft-tokenizer", "-zd", SD_OPT_STR, 0, 0, NULL, "FILE", GSB,
     "llama2.c tokenizer of a .bin draft; unset: -z"},
    {SD_O_LOOKUP, "--lookup", NULL, SD_OPT_INT, 1, SD_LOOKUP_MAX, NULL, "N", GSB,
     "n-gram lookup proposer (prompt and output), n-gram length N"},
    {SD_O_DRAFT_LAYERS, "--draft-layers", NULL, SD_OPT_INT, 1, SD_DRAFT_LAYERS_MAX, NULL, "L", GSB,
     "self-drafting with the target's first L layers"},
    {SD_O_THREADS, "--threads", "-t", SD_OPT_INT, 1, SD_THREADS_MAX, NULL, "N", GSB, "CPU threads; unset: online CPUs"},
    {SD_O_DEVICE, "--device", NULL, SD_OPT_STR, 0, 0, "auto", "D", GSB, "backend: auto | cpu | cuda | cuda:N"},
    {SD_O_CTX, "--ctx", NULL, SD_OPT_INT, 1, SD_CTX_LIMIT, NULL, "N", GSB, "context length; unset: the target's"},
    {SD_O_KV_TYPE, "--kv-type", NULL, SD_OPT_STR, 0, 0, "f16", "T", GSB, "K/V cache element type: f16 | f32"},
    {SD_O_KV_MEM, "--kv-mem", NULL, SD_OPT_INT, 1, 1 << 30, NULL, "MIB", GSB,
     "K/V pool size in MiB (target and draft); unset: half the free memory"},
};

static const sd_opt k_request[] = {
    {SD_O_MAX_TOKENS, "--max-tokens", "-n", SD_OPT_INT, 1, SD_MAX_TOKENS_LIMIT, SD_XSTR(SD_DEFAULT_MAX_TOKENS), "N",
     GSB | CLI, "tokens to generate per request"},
    {SD_O_TEMP, "--temp", NULL, SD_OPT_FLOAT, 0, SD_TEMP_MAX, "0", "T", GSB | CLI, "temperature, 0 = greedy"},
    {SD_O_TOP_K, "--top-k", NULL, SD_OPT_INT, 0, SD_TOP_K_MAX, "0", "K", GSB | CLI, "keep the K most likely tokens, 0 = off"},
    {SD_O_TOP_P, "--top-p", NULL, SD_OPT_FLOAT, 0, 1, "1", "P", GSB | CLI, "nucleus sampling, 1 = off"},
    {SD_O_MIN_P, "--min-p", NULL, SD_OPT_FLOAT, 0, 1, "0", "P", GSB | CLI,
     "drop tokens below P x the top probability, 0 = off"},
    {SD_O_SEED, "--seed", NULL, SD_OPT_U64, 0, 0, SD_XSTR(SD_DEFAULT_SEED), "S",
     SD_CMD_GENERATE | SD_CMD_BENCH | CLI, "sampling seed: same seed, same output"},
    {SD_O_STOP, "--stop", NULL, SD_OPT_LIST, 0, SD_MAX_STOP, NULL, "STR", SD_CMD_GENERATE | SD_CMD_CLI_GENERATE,
     "stop string, not emitted (repeatable)"},
    {SD_O_DRAFT_MAX, "--draft-max", NULL, SD_OPT_INT, 1, SD_DRAFT_LIMIT, SD_XSTR(SD_DEFAULT_DRAFT_MAX), "K",
     GSB | CLI, "most tokens drafted per step (adaptive k up to K)"},
    {SD_O_DRAFT_MIN, "--draft-min", NULL, SD_OPT_INT, 0, SD_DRAFT_LIMIT, SD_XSTR(SD_DEFAULT_DRAFT_MIN), "K", GSB,
     "fewest tokens drafted per step"},
    {SD_O_DRAFT_P_MIN, "--draft-p-min", NULL, SD_OPT_FLOAT, 0, 1, "0", "P", GSB,
     "the draft model stops proposing below this top probability"},
    {SD_O_PLAIN, "--plain", NULL, SD_OPT_FLAG, 0, 0, NULL, NULL, SD_CMD_GENERATE | CLI,
     "plain decoding even when a proposer is given"},
};

const sd_opt_table sd_engine_options = {"engine", k_engine, (int)(sizeof k_engine / sizeof k_engine[0])};
const sd_opt_table sd_request_options = {"sampling and speculation", k_request,
                                         (int)(sizeof k_request / sizeof k_request[0])};
