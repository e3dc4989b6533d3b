/*
 * cli.c: option parsing and error reporting shared by every `pneumo` subcommand.
 * Accepts "--name value" and "--name=value"; unknown flags, missing values, trailing junk in
 * numbers and out-of-range values are usage errors (exit 2) that name the flag.
 */
#include "cmd/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_fail(const char *cmd, int code, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "pneumo %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

int cli_status_exit(nt_status s)
{
    return s == NT_OK ? EXIT_OK : EXIT_FAIL;
}

void cli_usage(FILE *f, const cli_cmd *cmd)
{
    fprintf(f, "usage: pneumo %s %s\n  %s\n", cmd->name, cmd->synopsis, cmd->summary);
    if (cmd->nopts) fprintf(f, "options:\n");
    for (int i = 0; i < cmd->nopts; i++) {
        const cli_opt *o = &cmd->opts[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o->name, o->type == OPT_FLAG ? "" : " ",
                 o->type == OPT_FLAG ? "" : (o->metavar ? o->metavar : "V"));
        fprintf(f, "  %-26s %s\n", left, o->help);
    }
    fprintf(f, "  %-26s %s\n", "--help", "show this help");
}

static int set_opt(const cli_cmd *cmd, const cli_opt *o, const char *val)
{
    char *end;
    switch (o->type) {
    case OPT_FLAG:
        *(int *)o->dst = 1;
        return 0;
    case OPT_STR:
        if (!*val) return cli_fail(cmd->name, EXIT_USAGE, "--%s needs a non-empty value", o->name);
        *(const char **)o->dst = val;
        return 0;
    case OPT_INT: {
        errno  = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end || v < o->lo || v > o->hi)
            return cli_fail(cmd->name, EXIT_USAGE,
                            "--%s expects an integer in %.0f..%.0f, got \"%s\"", o->name, o->lo,
                            o->hi, val);
        *(int *)o->dst = (int)v;
        return 0;
    }
    case OPT_FLOAT: {
        errno    = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v) || v < o->lo || v > o->hi)
            return cli_fail(cmd->name, EXIT_USAGE, "--%s expects a number in [%g, %g], got \"%s\"",
                            o->name, o->lo, o->hi, val);
        *(double *)o->dst = v;
        return 0;
    }
    }
    return EXIT_USAGE;
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, char **pos, int *npos)
{
    *npos       = 0;
    int no_more = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (no_more || a[0] != '-' || a[1] == 0) {
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            no_more = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_usage(stdout, cmd);
            return -1;
        }
        if (a[1] != '-')
            return cli_fail(cmd->name, EXIT_USAGE,
                            "unknown option \"%s\" (options are --long; see "
                            "pneumo %s --help)",
                            a, cmd->name);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen      = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = NULL;
        for (int k = 0; k < cmd->nopts; k++)
            if (strlen(cmd->opts[k].name) == nlen && strncmp(cmd->opts[k].name, name, nlen) == 0)
                o = &cmd->opts[k];
        if (!o)
            return cli_fail(cmd->name, EXIT_USAGE,
                            "unknown option \"--%.*s\" (see pneumo %s --help)", (int)nlen, name,
                            cmd->name);
        const char *val = NULL;
        if (o->type == OPT_FLAG) {
            if (eq) return cli_fail(cmd->name, EXIT_USAGE, "--%s takes no value", o->name);
        } else if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc)
                return cli_fail(cmd->name, EXIT_USAGE, "--%s needs a value (%s)", o->name,
                                o->metavar ? o->metavar : "V");
            val = argv[++i];
        }
        int rc = set_opt(cmd, o, val);
        if (rc) return rc;
    }
    if (*npos < cmd->min_pos || (cmd->max_pos >= 0 && *npos > cmd->max_pos)) {
        if (cmd->max_pos == 0)
            return cli_fail(cmd->name, EXIT_USAGE, "takes no arguments, got \"%s\"", pos[0]);
        return cli_fail(cmd->name, EXIT_USAGE,
                        "expected %s, got %d argument%s (usage: pneumo %s %s)",
                        cmd->min_pos == cmd->max_pos && cmd->min_pos == 1 ? "one argument"
                        : cmd->min_pos                                    ? "more arguments"
                                                                          : "fewer arguments",
                        *npos, *npos == 1 ? "" : "s", cmd->name, cmd->synopsis);
    }
    return 0;
}

static void log_stderr(void *user, nt_log_level level, const char *msg)
{
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "pneumo: %s: %s\n", names[level], msg);
}

nt_ctx *cli_ctx(const char *cmd, int threads, unsigned long long seed)
{
    return cli_ctx_dtype(cmd, threads, seed, NULL);
}

int cli_check_dtype(const char *cmd, const char *dtype)
{
    nt_dtype t;
    if (!dtype || nt_dtype_parse(dtype, &t) == NT_OK) return 0;
    return cli_fail(cmd, EXIT_USAGE, "--dtype expects f32 or bf16, got \"%s\"", dtype);
}

nt_ctx *cli_ctx_dtype(const char *cmd, int threads, unsigned long long seed, const char *dtype)
{
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.nthreads = threads;
    o.seed     = seed;
    if (!dtype) dtype = getenv("PNEUMO_DTYPE");
    if (dtype && *dtype) {
        nt_dtype t;
        if (nt_dtype_parse(dtype, &t) != NT_OK) {
            cli_fail(cmd, EXIT_USAGE, "dtype must be f32 or bf16, got \"%s\"", dtype);
            return NULL;
        }
        o.dtype = (int)t;
    }
    const char *v = getenv("PNEUMO_VERBOSE");
    if (v && *v && strcmp(v, "0") != 0) o.log = log_stderr;
    const char *impl = getenv("PNEUMO_KERNELS");
    if (impl && strcmp(impl, "ref") == 0) o.impl = NT_IMPL_REF;
    if (impl && strcmp(impl, "avx2") == 0) o.impl = NT_IMPL_AVX2;
    const char *conv = getenv("PNEUMO_CONV");
    if (conv && *conv) {
        if (strcmp(conv, "gemm") != 0 && strcmp(conv, "auto") != 0) {
            cli_fail(cmd, EXIT_USAGE, "PNEUMO_CONV must be auto or gemm, got \"%s\"", conv);
            return NULL;
        }
        o.no_winograd = strcmp(conv, "gemm") == 0;
    }
    nt_ctx *ctx;
    if (nt_ctx_new(&o, &ctx) != NT_OK) {
        cli_fail(cmd, EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        nt_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

int cli_parse_unfreeze(const char *cmd, const char *s, int *out)
{
    if (strcmp(s, "all") == 0) {
        *out = -1;
        return 0;
    }
    char *end;
    errno  = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 100000)
        return cli_fail(cmd, EXIT_USAGE,
                        "--unfreeze expects a layer count >= 0 or \"all\", got \"%s\"", s);
    *out = (int)v;
    return 0;
}

int cli_isatty(FILE *f)
{
    return isatty(fileno(f));
}
