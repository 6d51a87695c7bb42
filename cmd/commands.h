/* Subcommands of build/specd. Each returns the process exit status: 0 ok, 1 runtime/model error,
 * 2 usage error (after printing its usage to stderr). */
#ifndef SD_COMMANDS_H
#define SD_COMMANDS_H

int cmd_generate(int argc, char **argv); /* generate.c */
int cmd_tokenize(int argc, char **argv); /* tokenize.c */
int cmd_info(int argc, char **argv);     /* info.c */
int cmd_mkmodel(int argc, char **argv);  /* mkmodel.c */
int cmd_serve(int argc, char **argv);    /* serve.c */
int cmd_bench(int argc, char **argv);    /* bench.c */
int cmd_template(int argc, char **argv); /* template.c */
int cmd_quantize(int argc, char **argv); /* quantize.c */
int cmd_keygen(int argc, char **argv);   /* keygen.c */

#endif
