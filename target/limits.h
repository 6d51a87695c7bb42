/* The engine's ranges and request defaults: macros only, so the option table (target/options.h), the
 * daemon and the client CLI use the very values the engine checks (target/engine.c). */
#ifndef SD_LIMITS_H
#define SD_LIMITS_H

#define SD_DRAFT_LIMIT 16          /* most tokens one speculative block may draft (draft_max) */
#define SD_LOOKUP_MAX 64           /* n-gram length of the lookup proposer: 1..SD_LOOKUP_MAX */
#define SD_DRAFT_LAYERS_MAX 1024   /* self-draft layers (the target's layer count bounds it further) */
#define SD_TEMP_MAX 100            /* temperature: 0 (greedy) ..SD_TEMP_MAX */
#define SD_TOP_K_MAX (1 << 20)     /* top-k: 0 (off) ..SD_TOP_K_MAX */
#define SD_MAX_TOKENS_LIMIT (1 << 20) /* max_tokens of one request (the context bounds it further) */
#define SD_MAX_STOP 16             /* stop strings per request */
#define SD_THREADS_MAX 1024
#define SD_CTX_LIMIT (1 << 20)     /* context length asked for (the model bounds it further) */

/* Request defaults (sd_gen_params_default, the commands' options, the daemon's defaults). */
#define SD_DEFAULT_MAX_TOKENS 256
#define SD_DEFAULT_DRAFT_MAX 8
#define SD_DEFAULT_DRAFT_MIN 1
#define SD_DEFAULT_SEED 1

#define SD_XSTR_(x) #x
#define SD_XSTR(x) SD_XSTR_(x) /* a macro's value as a string literal, for option defaults */
#endif
