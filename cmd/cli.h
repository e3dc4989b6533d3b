/*
 * cli.h: the `pneumo` command's shared pieces: strict option parsing (no atoi: every number is
 * range-checked and a bad one names its flag), usage text, error printing and exit codes.
 * Exit codes: 0 success, 1 runtime failure, 2 usage error.
 */
#ifndef CLI_H
#define CLI_H

#include "libnet/nt.h"

#include <stdio.h>

#define EXIT_OK    0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

typedef enum { OPT_FLAG, OPT_INT, OPT_FLOAT, OPT_STR } opt_type;

typedef struct cli_opt {
    const char *name; // without the leading "--"
    opt_type type;
    void *dst;     // int* for FLAG and INT, double* for FLOAT, const char** for STR
    double lo, hi; // range for INT and FLOAT
    const char *metavar;
    const char *help;
} cli_opt;

typedef struct cli_cmd {
    const char *name;     // "info"
    const char *synopsis; // "MODEL [--json]"
    const char *summary;  // one line
    const cli_opt *opts;
    int nopts;
    int min_pos, max_pos; // positional argument counts (max -1: any)
} cli_cmd;

// Parses argv[0..argc) (the words after the subcommand). Positional words are collected in
// pos (argv order; caller provides room for argc pointers). "--help" prints usage and returns
// -1 (caller exits 0). Returns 0 on success, EXIT_USAGE after printing a one-line error.
int cli_parse(const cli_cmd *cmd, int argc, char **argv, char **pos, int *npos);
void cli_usage(FILE *f, const cli_cmd *cmd);

// Prints "pneumo CMD: message" to stderr and returns code.
int cli_fail(const char *cmd, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Maps a library status to an exit code (EINVAL/ESHAPE from user flags are usage errors only
// when the caller says so; everything else is a failure).
int cli_status_exit(nt_status s);

// A context for the command: threads (0 = all), seed, and logging to stderr when verbose.
// The environment can pick the kernels (PNEUMO_KERNELS=ref|avx2) and the inference compute type
// (PNEUMO_DTYPE=f32|bf16, see nt_ctx_opts.dtype).
nt_ctx *cli_ctx(const char *cmd, int threads, unsigned long long seed);
// The same with an explicit inference dtype ("f32", "bf16"; NULL: PNEUMO_DTYPE or f32), e.g.
// from a --dtype flag. Prints the error and returns NULL on a bad name or an unsupported CPU.
nt_ctx *cli_ctx_dtype(const char *cmd, int threads, unsigned long long seed, const char *dtype);
// 0 when dtype is NULL, "f32" or "bf16"; else prints a usage error and returns EXIT_USAGE.
int cli_check_dtype(const char *cmd, const char *dtype);

// Parses "N" or "all" for --unfreeze (all -> -1). Returns 0 or EXIT_USAGE after printing.
int cli_parse_unfreeze(const char *cmd, const char *s, int *out);

// True when stdout is a terminal (for progress bars and tables).
int cli_isatty(FILE *f);

// Subcommands.
int cmd_info(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_weights(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_augment(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_token(int argc, char **argv);

#endif
