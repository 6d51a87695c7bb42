/* build/specd: the daemon (`serve`) and the local subcommands. */
#include <stdio.h>
#include <string.h>

#include "base/version.h"
#include "cmd/commands.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static void usage(const command *cmds, int n) {
    fprintf(stderr, "usage: specd <command> [options]\n\ncommands:\n");
    for (int i = 0; i < n; i++) fprintf(stderr, "  %-10s %s\n", cmds[i].name, cmds[i].help);
    fprintf(stderr, "\n`specd <command> --help` shows a command's options; `specd --version` the version.\n");
}

int main(int argc, char **argv) {
    const command cmds[] = {
        {"serve", cmd_serve, "run the daemon: load the models once, answer clients over ZeroMQ"},
        {"generate", cmd_generate, "generate text locally (plain or speculative)"},
        {"bench", cmd_bench, "compare plain and speculative decoding latency in one run"},
        {"tokenize", cmd_tokenize, "print the token ids of a text"},
        {"info", cmd_info, "describe a model file"},
        {"template", cmd_template, "render a chat template for the cases of a file"},
        {"mkmodel", cmd_mkmodel, "write a GGUF model with synthetic weights"},
        {"keygen", cmd_keygen, "write a CURVE key pair for authenticated TCP (serve --curve-secret)"},
        {"quantize", cmd_quantize, "rewrite a GGUF model in a quantized type or mix (as llama-quantize does)"},
    };
    int n = (int)(sizeof cmds / sizeof cmds[0]);
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("specd %s\n", SD_VERSION);
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(cmds, n);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(argv[1], cmds[i].name) == 0) return cmds[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "specd: unknown command '%s'\n", argv[1]);
    usage(cmds, n);
    return 2;
}
