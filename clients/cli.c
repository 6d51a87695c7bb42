/* build/specd-cli: the thin client (clients/cli_main.c holds the real implementation once written). */
#include <stdio.h>
#pragma weak specd_cli_main
int specd_cli_main(int argc, char **argv);
int main(int argc, char **argv) {
    if (!specd_cli_main) { fprintf(stderr, "specd-cli: not available in this build\n"); return 1; }
    return specd_cli_main(argc, argv);
}
