/*
 * testutil.h: helpers shared by the test programs: a temporary directory with named paths in it,
 * whole-file read/write, seeded float and double buffers, a one-thread context and the ResNet50
 * configurations the tests build. A test helper, linked into every test binary; not part of libnet.
 * The static inline helpers below CHECK, so their checks count in the calling test (check.h keeps
 * per-file counts).
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include "libnet/nt.h"
#include "tests/check.h"

#include <stddef.h>
#include <stdint.h>

// ---- temporary files ----

// Creates /tmp/pneumo_TAG_XXXXXX; returns its path (owned here), or NULL after perror.
const char *tu_tmpdir_new(const char *tag);
// Removes the temporary directory with everything in it and frees every tu_path string.
void tu_tmpdir_free(void);
// NAME inside the temporary directory; a new string each call, freed by tu_tmpdir_free.
const char *tu_path(const char *name);
// The whole file at path (with one spare byte after it, malloc'ed) and its size, or NULL.
unsigned char *tu_slurp(const char *path, size_t *len);
// Writes len bytes to path: 0 on success, -1 when it cannot be opened, -2 on a short write.
int tu_write(const char *path, const void *p, size_t len);

// Writes len bytes to path; CHECKs that it opens and, when it does, that every byte is written.
static inline void tu_spit(const char *path, const void *p, size_t len)
{
    int r = tu_write(path, p, len);
    CHECK_MSG(r != -1, "cannot open %s", path);
    if (r != -1) CHECK_MSG(r == 0, "short write to %s", path);
}

// ---- buffers (each exits on out of memory; free with free()) ----

// n zeroed elements of size bytes each (room for one when n <= 0).
void *tu_xcalloc(int64_t n, size_t size);
// n zeroed doubles (room for one when n <= 0).
double *tu_zeros_f64(int64_t n);
// n zeroed floats (room for one when n <= 0).
float *tu_zeros_f32(int64_t n);
// n doubles uniform in [lo, hi) from nk_u01(key, i), the same on every run.
double *tu_rand_f64(int64_t n, uint64_t key, double lo, double hi);
// n floats uniform in [lo, hi) from nk_u01(key, i), the same on every run.
float *tu_rand_f32(int64_t n, uint64_t key, float lo, float hi);
// n doubles set to NaN: an output a kernel must overwrite, so a skipped entry fails its check.
double *tu_nan_f64(int64_t n);
// n floats set to NaN: an output a kernel must overwrite, so a skipped entry fails its check.
float *tu_nan_f32(int64_t n);

// ---- models ----

// A context with options o, or NULL after printing why to stderr.
nt_ctx *tu_ctx_new(const nt_ctx_opts *o);
// A default context on one thread, or NULL after printing why to stderr.
nt_ctx *tu_ctx_new1(void);

// Whether string s ends with suffix (parameter names such as "conv1_bn/gamma").
int tu_ends_with(const char *s, const char *suffix);

// A 32x32 ResNet50 of width 1/width_div (head 8-4 when with_head) initialized by NT_INIT_TEST
// with seed; NULL after a failed CHECK when it cannot be built.
static inline nt_model *tu_small_resnet(nt_ctx *ctx, int width_div, int with_head, uint64_t seed)
{
    nt_resnet_cfg cfg;
    nt_resnet_cfg_default(&cfg);
    cfg.img_size  = 32;
    cfg.width_div = width_div;
    cfg.with_head = with_head;
    cfg.head1     = 8;
    cfg.head2     = 4;
    nt_model *m   = NULL;
    nt_status s   = nt_resnet50_new(ctx, &cfg, &m);
    CHECK_MSG(s == NT_OK, "nt_resnet50_new: %s", nt_ctx_errmsg(ctx));
    if (s) return NULL;
    s = nt_model_init(m, NT_INIT_TEST, seed);
    CHECK_MSG(s == NT_OK, "nt_model_init: %s", nt_ctx_errmsg(ctx));
    return m;
}

// The uninitialized model of tests/gen_fixtures.py (64x64 input, full width, head 256-128 with
// dropout 0.5); NULL after a failed CHECK when it cannot be built.
static inline nt_model *tu_fixture_resnet(nt_ctx *ctx)
{
    nt_resnet_cfg cfg;
    nt_resnet_cfg_default(&cfg);
    cfg.img_size  = 64;
    cfg.head1     = 256;
    cfg.head2     = 128;
    cfg.dropout   = 0.5f;
    cfg.with_head = 1;
    cfg.width_div = 1;
    nt_model *m   = NULL;
    CHECK_MSG(nt_resnet50_new(ctx, &cfg, &m) == NT_OK, "resnet50: %s", nt_ctx_errmsg(ctx));
    return m;
}

#endif
