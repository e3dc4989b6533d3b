/*
 * testutil.c: the out-of-line helpers of tests/testutil.h (temporary files, seeded buffers,
 * contexts, name matching). None of them CHECKs: check.h counts per file, so whatever should count
 * as a check is in the header's inline helpers or in the tests themselves.
 */
#include "tests/testutil.h"

#include "kernels/nk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TU_MAX_PATHS 1024

static char tu_dir[64];
static char *tu_paths[TU_MAX_PATHS];
static int tu_npaths;

// ---- temporary files ----

const char *tu_tmpdir_new(const char *tag)
{
    snprintf(tu_dir, sizeof(tu_dir), "/tmp/pneumo_%s_XXXXXX", tag);
    if (!mkdtemp(tu_dir)) {
        perror("mkdtemp");
        return NULL;
    }
    return tu_dir;
}

void tu_tmpdir_free(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tu_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tu_dir);
    for (int i = 0; i < tu_npaths; i++)
        free(tu_paths[i]);
    tu_npaths = 0;
}

const char *tu_path(const char *name)
{
    char *p = malloc(strlen(tu_dir) + strlen(name) + 2);
    if (!p || tu_npaths == TU_MAX_PATHS) abort();
    sprintf(p, "%s/%s", tu_dir, name);
    return tu_paths[tu_npaths++] = p;
}

unsigned char *tu_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

int tu_write(const char *path, const void *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, len, f);
    fclose(f);
    return w == len ? 0 : -2;
}

// ---- buffers ----

void *tu_xcalloc(int64_t n, size_t size)
{
    void *p = calloc((size_t)(n > 0 ? n : 1), size);
    if (!p) {
        fprintf(stderr, "out of memory (%lld elements of %zu bytes)\n", (long long)n, size);
        exit(1);
    }
    return p;
}

double *tu_zeros_f64(int64_t n)
{
    return tu_xcalloc(n, sizeof(double));
}

float *tu_zeros_f32(int64_t n)
{
    return tu_xcalloc(n, sizeof(float));
}

double *tu_rand_f64(int64_t n, uint64_t key, double lo, double hi)
{
    double *p = tu_xcalloc(n, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * nk_u01(key, (uint64_t)i);
    return p;
}

float *tu_rand_f32(int64_t n, uint64_t key, float lo, float hi)
{
    float *p = tu_xcalloc(n, sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * nk_u01(key, (uint64_t)i);
    return p;
}

double *tu_nan_f64(int64_t n)
{
    double *p = tu_xcalloc(n, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

float *tu_nan_f32(int64_t n)
{
    float *p = tu_xcalloc(n, sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

// ---- models ----

nt_ctx *tu_ctx_new(const nt_ctx_opts *o)
{
    nt_ctx *ctx = NULL;
    if (nt_ctx_new(o, &ctx) != NT_OK) {
        fprintf(stderr, "context: %s\n", ctx ? nt_ctx_errmsg(ctx) : "no context");
        nt_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

nt_ctx *tu_ctx_new1(void)
{
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.nthreads = 1;
    return tu_ctx_new(&o);
}

int tu_ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}
