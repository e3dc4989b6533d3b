/*
 * test_safetensors.c: the safetensors model files of libnet/safetensors.c. Round trips (F32 bit
 * exact, F16 exhaustively and against a round-to-nearest-even reference, BF16 reading), the
 * independent checker tests/st_check.py on what we write, NT_EFORMAT for every corrupt variant,
 * a seeded fuzz of truncations and bit flips, atomic writes, and nt_model_save /
 * nt_model_load_st on a small ResNet50 (width_div 16).
 */
#include "libnet/nt.h"
#include "tests/check.h"
#include "tests/testutil.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static nt_ctx *ctx;
static const char *dir; // the temporary directory
static int have_python = -1;
static int n_rejects;

// ---- helpers ----

// Writes a hand-made safetensors file: header `json` padded with spaces to a multiple of 8
// (unless pad == 0), then dlen bytes of data.
static void craft(const char *path, const char *json, const void *data, size_t dlen, int pad)
{
    size_t hl = strlen(json), padded = pad ? (hl + 7) & ~(size_t)7 : hl;
    unsigned char *b = calloc(1, 8 + padded + dlen + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, json, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    if (dlen) memcpy(b + 8 + padded, data, dlen);
    tu_spit(path, b, 8 + padded + dlen);
    free(b);
}

static uint64_t rd_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

// Whether python3 and tests/st_check.py are there (the test runs from the repository root).
static int python_ok(void)
{
    if (have_python < 0) {
        have_python = system("command -v python3 >/dev/null 2>&1") == 0 &&
                      access("tests/st_check.py", R_OK) == 0;
        if (!have_python) printf("SKIP st_check.py sub-checks: no python3 on PATH\n");
    }
    return have_python;
}

// Runs tests/st_check.py on path with extra arguments; returns its exit status, or -1 when
// python3 or the script is not available (prints SKIP once).
__attribute__((format(printf, 2, 3))) static int st_check(const char *path, const char *fmt, ...)
{
    if (!python_ok()) return -1;
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "python3 tests/st_check.py '%s' --quiet %s 2>&1", path, args);
    fflush(stdout);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 99;
}

#define CHECK_PY_OK(path, ...)                                                                     \
    do {                                                                                           \
        int rc_ = st_check(path, __VA_ARGS__);                                                     \
        CHECK_MSG(rc_ == 0 || rc_ == -1, "st_check.py exit %d on %s", rc_, path);                  \
    } while (0)

static uint64_t rng = 0x1234567887654321ULL;
static uint64_t xrand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static float fbits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Independent decoder for binary16 (the reference for the F16 checks).
static double half_ref(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

// ---- F32 round trip ----

static void test_roundtrip_f32(void)
{
    int64_t sk[4] = {3, 3, 2, 4}, sb[1] = {4}, se[2] = {0, 5}, sg[2] = {1000, 37}, ss[1] = {6};
    float k[72], b[4], sc = 42.5f, sp[6];
    float *g = malloc(sizeof(float) * 37000);
    for (int i = 0; i < 72; i++)
        k[i] = 0.01f * (float)i - 0.3f;
    for (int i = 0; i < 4; i++)
        b[i] = -1.5f + (float)i;
    for (int i = 0; i < 37000; i++)
        g[i] = (float)(xrand() >> 40) * 1e-5f - 50.0f;
    sp[0] = 0.0f, sp[1] = -0.0f, sp[2] = INFINITY, sp[3] = -INFINITY, sp[4] = NAN;
    sp[5]            = fbits(0x00000001u); // smallest subnormal
    nt_st_entry e[6] = {
        {"conv1_conv/kernel", 4, sk, k},
        {"conv1_conv/bias", 1, sb, b},
        {"scalar", 0, NULL, &sc},
        {"empty", 2, se, NULL},
        {"big", 2, sg, g},
        {"special", 1, ss, sp},
    };
    nt_kv meta[3] = {{"arch", "resnet50"},
                     {"classes", "[\"NORMAL\",\"PNEUMONIA\"]"},
                     {"note", "ünïcode \\ \"quoted\"\tand a\nnewline"}};
    const char *p = tu_path("a.safetensors");
    nt_status s   = nt_st_write(ctx, p, e, 6, meta, 3, 0);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    CHECK(access(tu_path("a.safetensors.tmp"), F_OK) != 0);

    size_t len;
    unsigned char *raw = tu_slurp(p, &len);
    CHECK(raw && len >= 8 && rd_le64(raw) % 8 == 0);
    free(raw);

    nt_st_file *f = NULL;
    s             = nt_st_open(ctx, p, &f);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    if (f) {
        CHECK(nt_st_num_tensors(f) == 6);
        for (int i = 0; i < 6 && i < nt_st_num_tensors(f); i++) {
            const char *name, *dt;
            int nd;
            const int64_t *sh;
            const float *d;
            nt_st_tensor_at(f, i, &name, &dt, &nd, &sh, &d);
            CHECK_MSG(strcmp(name, e[i].name) == 0, "tensor %d is %s, expected %s", i, name,
                      e[i].name);
            CHECK(strcmp(dt, "F32") == 0);
            CHECK(nd == e[i].ndim);
            int64_t n = 1;
            for (int j = 0; j < nd && j < e[i].ndim; j++) {
                CHECK(sh[j] == e[i].shape[j]);
                n *= sh[j];
            }
            if (n) CHECK_MSG(memcmp(d, e[i].data, (size_t)n * 4) == 0, "%s bits differ", name);
            CHECK(nt_st_find(f, e[i].name) == i);
        }
        CHECK(nt_st_find(f, "nope") == -1);
        CHECK(nt_st_num_meta(f) == 3);
        for (int i = 0; i < 3; i++) {
            const char *v = nt_st_meta(f, meta[i].key);
            CHECK_MSG(v && strcmp(v, meta[i].value) == 0, "meta %s", meta[i].key);
            const char *kk, *vv;
            nt_st_meta_at(f, i, &kk, &vv);
            CHECK(nt_st_meta(f, kk) == vv);
        }
        CHECK(nt_st_meta(f, "missing") == NULL);
        nt_st_close(f);
    }
    CHECK_PY_OK(
        p, "--expect-count 6 --expect-order conv1_conv/kernel,conv1_conv/bias,scalar,empty,big,"
           "special --expect-meta arch=resnet50 --expect-name conv1_conv/kernel "
           "--expect-dtype F32 --expect-shape 3,3,2,4 --expect-values -0.3,-0.29,-0.28 "
           "--expect-name scalar --expect-shape '' --expect-first 42.5 --expect-name empty "
           "--expect-shape 0,5 --expect-name special --expect-values 0,0,inf,-inf,nan");
    // The checker must notice a wrong expectation (it is not a rubber stamp).
    int rc = st_check(p, "--expect-name conv1_conv/kernel --expect-first 0.123 >/dev/null");
    CHECK(rc == 1 || rc == -1);

    // Overwriting an existing file (and a stale .tmp from an earlier crash) works.
    tu_spit(tu_path("a.safetensors.tmp"), "stale", 5);
    s = nt_st_write(ctx, p, e, 2, NULL, 0, 0);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    CHECK(access(tu_path("a.safetensors.tmp"), F_OK) != 0);
    CHECK_PY_OK(p, "--expect-count 2");
    // No tensors and no metadata is a valid file too.
    s = nt_st_write(ctx, tu_path("empty.safetensors"), NULL, 0, NULL, 0, 0);
    CHECK(s == NT_OK);
    if (nt_st_open(ctx, tu_path("empty.safetensors"), &f) == NT_OK) {
        CHECK(nt_st_num_tensors(f) == 0 && nt_st_num_meta(f) == 0);
        nt_st_close(f);
    } else {
        CHECK_MSG(0, "%s", nt_ctx_errmsg(ctx));
    }
    CHECK_PY_OK(tu_path("empty.safetensors"), "--expect-count 0");
    free(g);
}

// ---- F16 ----

static const unsigned char *f16_data(const unsigned char *raw)
{
    return raw + 8 + rd_le64(raw);
}

static void test_f16(void)
{
    // Every binary16 pattern: read (widened) and written back bit for bit.
    uint16_t *all = malloc(65536 * 2);
    for (int i = 0; i < 65536; i++)
        all[i] = (uint16_t)i; // little-endian host assumed here
    craft(tu_path("all16.safetensors"),
          "{\"h\":{\"dtype\":\"F16\",\"shape\":[256,256],\"data_offsets\":[0,131072]}}", all,
          131072, 1);
    nt_st_file *f = NULL;
    nt_status s   = nt_st_open(ctx, tu_path("all16.safetensors"), &f);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    if (f) {
        const float *d;
        const char *dt;
        nt_st_tensor_at(f, 0, NULL, &dt, NULL, NULL, &d);
        CHECK(strcmp(dt, "F16") == 0);
        int bad = 0;
        for (int i = 0; i < 65536; i++) {
            double r = half_ref((uint16_t)i);
            if (isnan(r) ? !isnan(d[i]) : (double)d[i] != r || !signbit(d[i]) != !signbit(r)) {
                if (bad++ < 5) fprintf(stderr, "  f16 0x%04x: got %.9g want %.9g\n", i, d[i], r);
            }
        }
        CHECK_MSG(bad == 0, "%d of 65536 halves widen wrongly", bad);

        int64_t sh[1]    = {65536};
        nt_st_entry e[1] = {{"h", 1, sh, d}};
        s                = nt_st_write(ctx, tu_path("all16b.safetensors"), e, 1, NULL, 0, 1);
        CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
        size_t len;
        unsigned char *raw = tu_slurp(tu_path("all16b.safetensors"), &len);
        if (raw) {
            const unsigned char *q = f16_data(raw);
            bad                    = 0;
            for (int i = 0; i < 65536; i++) {
                uint16_t h = (uint16_t)(q[2 * i] | q[2 * i + 1] << 8);
                int ok     = isnan(half_ref((uint16_t)i)) ? isnan(half_ref(h)) : h == i;
                if (!ok && bad++ < 5) fprintf(stderr, "  f16 0x%04x written as 0x%04x\n", i, h);
            }
            CHECK_MSG(bad == 0, "%d of 65536 halves do not round-trip", bad);
            free(raw);
        }
        nt_st_close(f);
    }
    free(all);

    // Rounding at the edges: ties to even, overflow, subnormals, signed zero, NaN.
    static const struct {
        float x;
        uint16_t h;
    } tab[] = {
        {1.0f, 0x3c00},
        {1.0f + 0x1p-11f, 0x3c00},            // tie -> even (down)
        {1.0f + 3 * 0x1p-11f, 0x3c02},        // tie -> even (up)
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01}, // just above the tie
        {0.1f, 0x2e66},
        {-2.0f, 0xc000},
        {65504.0f, 0x7bff},
        {65519.0f, 0x7bff},
        {65520.0f, 0x7c00}, // rounds up to inf
        {1e9f, 0x7c00},
        {-1e9f, 0xfc00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        {-0.0f, 0x8000},
        {0x1p-14f, 0x0400},            // smallest normal
        {0x1p-14f - 0x1p-25f, 0x0400}, // tie between 0x3ff and 0x400 -> even
        {0x1p-24f, 0x0001},            // smallest subnormal
        {0x1p-25f, 0x0000},            // tie -> even (zero)
        {-0x1p-25f, 0x8000},
        {0x1.8p-25f, 0x0001},
        {3 * 0x1p-25f, 0x0002}, // 1.5 units: tie -> even (2)
        {0x1p-26f, 0x0000},
        {0x1p-30f, 0x0000},
    };
    enum { NT_ = sizeof(tab) / sizeof(tab[0]) };
    float xs[NT_ + 1];
    for (int i = 0; i < NT_; i++)
        xs[i] = tab[i].x;
    xs[NT_]          = NAN;
    int64_t sh[1]    = {NT_ + 1};
    nt_st_entry e[1] = {{"t", 1, sh, xs}};
    s                = nt_st_write(ctx, tu_path("tab16.safetensors"), e, 1, NULL, 0, 1);
    CHECK(s == NT_OK);
    size_t len;
    unsigned char *raw = tu_slurp(tu_path("tab16.safetensors"), &len);
    if (raw) {
        const unsigned char *q = f16_data(raw);
        for (int i = 0; i < NT_; i++) {
            uint16_t h = (uint16_t)(q[2 * i] | q[2 * i + 1] << 8);
            CHECK_MSG(h == tab[i].h, "f16(%a) = 0x%04x, expected 0x%04x", (double)tab[i].x, h,
                      tab[i].h);
        }
        uint16_t hn = (uint16_t)(q[2 * NT_] | q[2 * NT_ + 1] << 8);
        CHECK_MSG((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff), "NaN written as 0x%04x", hn);
        free(raw);
    }
    // Python's own half decoder (struct 'e') reads the same values.
    CHECK_PY_OK(tu_path("tab16.safetensors"),
                "--tol 0 --expect-name t --expect-dtype F16 --expect-values 1,1,1.001953125,"
                "1.0009765625,0.0999755859375,-2,65504,65504,inf,inf,-inf,inf,-inf");

    // Random floats over a wide range: the written half must be a nearest one, ties to even.
    enum { NR = 200000 };
    float *x = malloc(NR * sizeof(float));
    for (int i = 0; i < NR; i++) {
        uint32_t u  = (uint32_t)xrand();
        uint32_t e8 = 97 + (uint32_t)(xrand() % 50); // 2^-30 .. 2^19
        x[i]        = fbits((u & 0x807fffffu) | e8 << 23);
        if (i % 7 == 0) x[i] = fbits((u & 0x807fe000u) | e8 << 23 | 0x1000u); // exact ties
    }
    sh[0] = NR;
    e[0]  = (nt_st_entry){"r", 1, sh, x};
    s     = nt_st_write(ctx, tu_path("r16.safetensors"), e, 1, NULL, 0, 1);
    CHECK(s == NT_OK);
    raw = tu_slurp(tu_path("r16.safetensors"), &len);
    if (raw) {
        const unsigned char *q = f16_data(raw);
        int bad                = 0;
        double maxrel          = 0;
        for (int i = 0; i < NR; i++) {
            uint16_t h = (uint16_t)(q[2 * i] | q[2 * i + 1] << 8);
            double xv = x[i], ax = fabs(xv);
            int ok      = 1;
            uint16_t mg = h & 0x7fff;
            if (ax >= 65520.0) {
                ok = mg == 0x7c00;
            } else {
                double d = fabs(xv - half_ref(h));
                ok       = mg < 0x7c00 && (!!signbit(xv) == (h >> 15));
                if (mg > 0) {
                    double dn = fabs(xv - half_ref((uint16_t)(h - 1)));
                    ok        = ok && (d < dn || (d == dn && !(h & 1)));
                }
                if (mg < 0x7bff) {
                    double du = fabs(xv - half_ref((uint16_t)(h + 1)));
                    ok        = ok && (d < du || (d == du && !(h & 1)));
                }
                if (ax >= 0x1p-14 && d / ax > maxrel) maxrel = d / ax;
            }
            if (!ok && bad++ < 5) fprintf(stderr, "  f16(%a) = 0x%04x is not RNE\n", xv, h);
        }
        CHECK_MSG(bad == 0, "%d of %d conversions are not round-to-nearest-even", bad, NR);
        CHECK(maxrel <= 0x1p-11);
        printf("ok   f16 random: n=%d max_rel(normal)=%.3g (bound 2^-11 = %.3g)\n", NR, maxrel,
               0x1p-11);
        free(raw);
    }
    // And the loader widens them back within half precision.
    nt_st_file *g = NULL;
    if (nt_st_open(ctx, tu_path("r16.safetensors"), &g) == NT_OK) {
        const float *d;
        nt_st_tensor_at(g, 0, NULL, NULL, NULL, NULL, &d);
        int bad = 0;
        for (int i = 0; i < NR; i++) {
            double ax = fabs((double)x[i]);
            if (ax >= 65520.0) continue;
            double tol = ax >= 0x1p-14 ? ax * 0x1p-11 : 0x1p-25;
            if (!(fabs((double)d[i] - x[i]) <= tol) && bad++ < 5)
                fprintf(stderr, "  f16 round trip %a -> %a\n", (double)x[i], (double)d[i]);
        }
        CHECK_MSG(bad == 0, "%d f16 round trips outside half precision", bad);
        nt_st_close(g);
    } else {
        CHECK_MSG(0, "%s", nt_ctx_errmsg(ctx));
    }
    free(x);
}

static void test_bf16(void)
{
    // 1.0, -2.0, 0.25, inf, 3.140625 (0x4049), smallest bf16 subnormal, -0
    const uint16_t h[7] = {0x3f80, 0xc000, 0x3e80, 0x7f80, 0x4049, 0x0001, 0x8000};
    const float want[7] = {1.0f, -2.0f, 0.25f, INFINITY, 3.140625f, fbits(0x00010000u), -0.0f};
    unsigned char d[14 + 8];
    for (int i = 0; i < 7; i++)
        d[2 * i] = (unsigned char)h[i], d[2 * i + 1] = (unsigned char)(h[i] >> 8);
    // Mixed with an F32 tensor, BF16 first in the data but last in the header.
    float one = 7.0f;
    memcpy(d + 14, &one, 4);
    memset(d + 18, 0, 4);
    craft(tu_path("bf16.safetensors"),
          "{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
          "\"data_offsets\":[14,22]},\"w\":{\"dtype\":\"BF16\",\"shape\":[7],"
          "\"data_offsets\":[0,14]}}",
          d, sizeof(d), 1);
    nt_st_file *f = NULL;
    nt_status s   = nt_st_open(ctx, tu_path("bf16.safetensors"), &f);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    if (!f) return;
    CHECK(nt_st_num_tensors(f) == 2);
    int iw = nt_st_find(f, "w"), ix = nt_st_find(f, "x");
    CHECK(iw == 0 && ix == 1); // data order
    if (iw >= 0) {
        const char *dt;
        const float *v;
        const int64_t *sh;
        int nd;
        nt_st_tensor_at(f, iw, NULL, &dt, &nd, &sh, &v);
        CHECK(strcmp(dt, "BF16") == 0 && nd == 1 && sh[0] == 7);
        for (int i = 0; i < 7; i++)
            CHECK_MSG(memcmp(&v[i], &want[i], 4) == 0, "bf16[%d] = %a, expected %a", i,
                      (double)v[i], (double)want[i]);
    }
    if (ix >= 0) {
        const float *v;
        nt_st_tensor_at(f, ix, NULL, NULL, NULL, NULL, &v);
        CHECK(v[0] == 7.0f && v[1] == 0.0f);
    }
    CHECK(nt_st_meta(f, "format") && strcmp(nt_st_meta(f, "format"), "pt") == 0);
    nt_st_close(f);
    CHECK_PY_OK(
        tu_path("bf16.safetensors"),
        "--tol 0 --expect-name w --expect-dtype BF16 --expect-values 1,-2,0.25,inf,3.140625");
}

// ---- corrupt files ----

// Expects nt_st_open to fail with `want` and a one-line message naming the file; when py is 1,
// st_check.py must reject the file too.
static void expect_bad(const char *path, nt_status want, const char *needle, int py,
                       const char *what)
{
    nt_st_file *f = NULL;
    nt_status s   = nt_st_open(ctx, path, &f);
    const char *m = nt_ctx_errmsg(ctx);
    CHECK_MSG(s == want && f == NULL, "%s: status %d (%s), expected %d", what, s, m, want);
    CHECK_MSG(strstr(m, path) != NULL, "%s: message does not name the file: %s", what, m);
    if (needle)
        CHECK_MSG(strstr(m, needle) != NULL, "%s: message lacks \"%s\": %s", what, needle, m);
    CHECK_MSG(strchr(m, '\n') == NULL, "%s: message is not one line", what);
    printf("ok   %-28s -> %s\n", what, m);
    if (f) nt_st_close(f);
    if (py) {
        // Kept under its own name for one batched st_check.py --expect-invalid run.
        size_t len;
        unsigned char *b = tu_slurp(path, &len);
        char name[32];
        snprintf(name, sizeof(name), "rej_%02d.safetensors", n_rejects++);
        if (b) tu_spit(tu_path(name), b, len);
        free(b);
    }
}

// st_check.py must reject every file expect_bad kept (python startup is slow, so one run).
static void check_rejects_py(void)
{
    if (!python_ok()) return;
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "python3 tests/st_check.py --expect-invalid %s/rej_*.safetensors | sed 's/^/     /'",
             dir);
    fflush(stdout);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "st_check.py accepted some of the %d corrupt files (exit %d)", n_rejects,
              rc);
}

static void test_corrupt(void)
{
    // A valid base file to cut up.
    int64_t sa[2] = {2, 3}, sb[1] = {5};
    float a[6] = {1, 2, 3, 4, 5, 6}, b[5] = {-1, -2, -3, -4, -5};
    nt_st_entry e[2] = {{"a", 2, sa, a}, {"b", 1, sb, b}};
    nt_kv meta[1]    = {{"k", "v"}};
    const char *base = tu_path("base.safetensors");
    CHECK(nt_st_write(ctx, base, e, 2, meta, 1, 0) == NT_OK);
    size_t len;
    unsigned char *raw = tu_slurp(base, &len);
    if (!raw) return;
    size_t hl       = (size_t)rd_le64(raw);
    const char *bad = tu_path("bad.safetensors");

    tu_spit(bad, raw, 0);
    expect_bad(bad, NT_EFORMAT, "empty", 1, "empty file");
    size_t cuts[] = {4, 8, 8 + hl / 2, 8 + hl, 8 + hl + 10, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "truncated at %zu of %zu", cuts[i], len);
        tu_spit(bad, raw, cuts[i]);
        expect_bad(bad, NT_EFORMAT, NULL, 1, what);
    }
    // Trailing garbage.
    unsigned char *big = malloc(len + 3);
    memcpy(big, raw, len);
    memcpy(big + len, "xyz", 3);
    tu_spit(bad, big, len + 3);
    expect_bad(bad, NT_EFORMAT, "trailing", 1, "trailing bytes");
    // Header length beyond the file, and beyond the 100 MB limit.
    memcpy(big, raw, len);
    for (int i = 0; i < 8; i++)
        big[i] = (unsigned char)((uint64_t)len >> (8 * i));
    tu_spit(bad, big, len);
    expect_bad(bad, NT_EFORMAT, "beyond the end", 1, "header length > file");
    for (int i = 0; i < 8; i++)
        big[i] = (unsigned char)(((uint64_t)1 << 60) >> (8 * i));
    tu_spit(bad, big, len);
    expect_bad(bad, NT_EFORMAT, "limit", 1, "header length 2^60");
    for (int i = 0; i < 8; i++)
        big[i] = 0xff;
    tu_spit(bad, big, len);
    expect_bad(bad, NT_EFORMAT, "limit", 1, "header length 2^64-1");
    free(big);
    free(raw);

    const char four[16] = {0};
    static const struct {
        const char *json;
        size_t dlen;
        const char *needle;
        int py; // st_check.py rejects it too
        const char *what;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "line 1, column", 1,
         "bad JSON"},
        {"[{\"a\":1}]", 0, "must start with '{'", 1, "array header"},
        {"{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "\"I64\"", 0,
         "dtype I64"},
        {"{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"F33\"", 1,
         "dtype F33"},
        {"{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype", 1,
         "dtype not a string"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "needs 8 bytes", 1,
         "shape/offsets mismatch"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
         "\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "overlap", 1, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\","
         "\"shape\":[1],\"data_offsets\":[8,12]}}",
         12, "gap", 1, "gap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "beyond the data",
         1, "offsets out of range"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "end before", 1,
         "end < begin"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\","
         "\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "duplicate", 1, "duplicate names"},
        {"{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"
         "}}",
         4, "must be a string", 1, "non-string metadata"},
        {"{\"__metadata__\":[\"k\"],\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"
         "}",
         4, "__metadata__", 1, "metadata not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]", 1,
         "negative dimension"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "shape[0]", 1,
         "real dimension"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", 4, "shape[0]", 1,
         "boolean dimension"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}",
         4, "needs", 1, "numel overflow"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing field \"shape\"", 1,
         "missing shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
         "unexpected field", 1, "extra field"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "data_offsets", 1,
         "three offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4, "data_offsets", 1,
         "negative offset"},
        {"{\"a\":[1,2]}", 0, "must be an object", 1, "entry not an object"},
        {"{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "JSON", 1,
         "invalid UTF-8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "JSON", 1,
         "junk after the JSON"},
        {"{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "JSON", 0,
         "NUL in a name"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4,
         "JSON", 0, "huge integer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        craft(bad, cases[i].json, four, cases[i].dlen, 1);
        expect_bad(bad, NT_EFORMAT, cases[i].needle, cases[i].py, cases[i].what);
    }

    // Header length 0 and a header that is not padded (the latter is valid for the Python
    // package, so our reader accepts it; st_check.py, which checks our writer, does not).
    unsigned char zero[8] = {0};
    tu_spit(bad, zero, 8);
    expect_bad(bad, NT_EFORMAT, "length is 0", 1, "header length 0");
    craft(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", four, 4, 0);
    nt_st_file *f = NULL;
    CHECK_MSG(nt_st_open(ctx, bad, &f) == NT_OK, "unpadded header: %s", nt_ctx_errmsg(ctx));
    nt_st_close(f);

    check_rejects_py();

    // I/O errors.
    expect_bad(tu_path("does-not-exist.safetensors"), NT_EIO, "No such file", 0, "missing file");
    expect_bad(dir, NT_EIO, "directory", 0, "a directory");
    CHECK(strstr(nt_ctx_errmsg(ctx), "Is a directory") != NULL);
}

// Seeded fuzz: truncations, bit flips and byte overwrites of a valid file must give NT_OK or
// NT_EFORMAT, never a crash (run under `make asan` for memory errors), and whatever opens must
// be self-consistent.
static void test_fuzz(void)
{
    int64_t sa[3] = {2, 3, 4}, sb[1] = {3}, sc[2] = {0, 2};
    float a[24], b[3] = {1, 2, 3};
    for (int i = 0; i < 24; i++)
        a[i] = (float)i * 0.5f;
    nt_st_entry e[3] = {{"layer/kernel", 3, sa, a}, {"layer/bias", 1, sb, b}, {"z", 2, sc, NULL}};
    nt_kv meta[2]    = {{"arch", "resnet50"}, {"size", "224"}};
    const char *base = tu_path("fuzz_base.safetensors");
    for (int fp16 = 0; fp16 < 2; fp16++) {
        CHECK(nt_st_write(ctx, base, e, 3, meta, 2, fp16) == NT_OK);
        size_t len;
        unsigned char *raw = tu_slurp(base, &len);
        if (!raw) return;
        size_t hl          = (size_t)rd_le64(raw);
        unsigned char *buf = malloc(len + 64);
        const char *p      = tu_path("fuzz.safetensors");
        int n_ok = 0, n_bad = 0, n_other = 0;
        for (int it = 0; it < 3000; it++) {
            size_t n = len;
            memcpy(buf, raw, len);
            int kind = (int)(xrand() % 4);
            if (kind == 0) {
                n = (size_t)(xrand() % len);
            } else if (kind == 1 || kind == 2) {
                int flips = 1 + (int)(xrand() % 4);
                for (int k = 0; k < flips; k++) {
                    // Mostly in the length and header, where the parser works hardest.
                    size_t at = kind == 1 ? (size_t)(xrand() % (8 + hl)) : (size_t)(xrand() % len);
                    buf[at] ^= (unsigned char)(1u << (xrand() % 8));
                }
            } else {
                size_t at = (size_t)(xrand() % (8 + hl));
                buf[at]   = "{}[]\":,0123456789-.e \\"[xrand() % 22];
            }
            tu_spit(p, buf, n);
            nt_st_file *f = NULL;
            nt_status s   = nt_st_open(ctx, p, &f);
            if (s == NT_OK) {
                n_ok++;
                // What opens must be consistent: every element readable (ASan watches), and no
                // more elements than the file has room for at 2 bytes each.
                int64_t total = 0;
                volatile float sink;
                for (int i = 0; i < nt_st_num_tensors(f); i++) {
                    int nd;
                    const int64_t *sh;
                    const float *d;
                    nt_st_tensor_at(f, i, NULL, NULL, &nd, &sh, &d);
                    int64_t m = 1;
                    for (int j = 0; j < nd; j++)
                        m *= sh[j];
                    for (int64_t j = 0; j < m; j++)
                        sink = d[j];
                    total += m;
                }
                (void)sink;
                CHECK(total * 2 <= (int64_t)n);
                for (int i = 0; i < nt_st_num_meta(f); i++) {
                    const char *k, *v;
                    nt_st_meta_at(f, i, &k, &v);
                    CHECK(k && v);
                }
                nt_st_close(f);
            } else if (s == NT_EFORMAT) {
                n_bad++;
            } else {
                n_other++;
                if (n_other < 5) fprintf(stderr, "  fuzz: status %d: %s\n", s, nt_ctx_errmsg(ctx));
            }
        }
        CHECK_MSG(n_other == 0, "%d fuzzed files gave a status other than OK/EFORMAT", n_other);
        printf("ok   fuzz (%s): 3000 variants, %d opened, %d rejected with NT_EFORMAT\n",
               fp16 ? "F16" : "F32", n_ok, n_bad);
        free(buf);
        free(raw);
    }
}

// ---- atomic writes and argument checks ----

static void test_atomic(void)
{
    int64_t sa[1] = {3};
    float a[3] = {1, 2, 3}, b[3] = {4, 5, 6};
    nt_st_entry e1[1] = {{"a", 1, sa, a}}, e2[1] = {{"a", 1, sa, b}};
    const char *p = tu_path("atomic.safetensors");
    CHECK(nt_st_write(ctx, p, e1, 1, NULL, 0, 0) == NT_OK);
    size_t len1, len2;
    unsigned char *old = tu_slurp(p, &len1);

    // The temporary cannot be created (a directory sits at path.tmp): NT_EIO, old file intact.
    const char *tmp = tu_path("atomic.safetensors.tmp");
    CHECK(mkdir(tmp, 0700) == 0);
    nt_status s = nt_st_write(ctx, p, e2, 1, NULL, 0, 0);
    CHECK_MSG(s == NT_EIO, "status %d", s);
    CHECK_MSG(strstr(nt_ctx_errmsg(ctx), ".tmp") != NULL, "%s", nt_ctx_errmsg(ctx));
    printf("ok   unwritable temp -> %s\n", nt_ctx_errmsg(ctx));
    unsigned char *now = tu_slurp(p, &len2);
    CHECK(now && old && len1 == len2 && memcmp(old, now, len1) == 0);
    free(now);
    rmdir(tmp);

    // The target directory does not exist.
    s = nt_st_write(ctx, tu_path("no/such/dir.safetensors"), e2, 1, NULL, 0, 0);
    CHECK(s == NT_EIO && strstr(nt_ctx_errmsg(ctx), "No such file"));

    // A full disk: path.tmp is a link to /dev/full, so every write fails with ENOSPC. The error
    // must surface (checked fwrite/fflush), the old file stay, and the temporary go.
    if (symlink("/dev/full", tmp) == 0) {
        s = nt_st_write(ctx, p, e2, 1, NULL, 0, 0);
        CHECK_MSG(s == NT_EIO && strstr(nt_ctx_errmsg(ctx), "No space left"), "status %d: %s", s,
                  nt_ctx_errmsg(ctx));
        printf("ok   full disk -> %s\n", nt_ctx_errmsg(ctx));
        now = tu_slurp(p, &len2);
        CHECK(now && len1 == len2 && memcmp(old, now, len1) == 0);
        free(now);
        CHECK(access(tmp, F_OK) != 0);
        unlink(tmp);
    } else {
        printf("SKIP full-disk check: cannot link to /dev/full (%s)\n", strerror(errno));
    }

    s = nt_st_write(ctx, p, e2, 1, NULL, 0, 0);
    CHECK(s == NT_OK && access(tmp, F_OK) != 0);
    now = tu_slurp(p, &len2);
    CHECK(now && len2 == len1 && memcmp(now, old, len1) != 0);
    free(now);
    free(old);

    // Argument errors: nothing is written.
    const char *q   = tu_path("args.safetensors");
    int64_t neg[1]  = {-2};
    nt_st_entry d[] = {{"a", 1, sa, a}, {"a", 1, sa, b}};
    CHECK(nt_st_write(ctx, q, d, 2, NULL, 0, 0) == NT_EINVAL);
    CHECK(strstr(nt_ctx_errmsg(ctx), "twice") != NULL);
    nt_st_entry m1[] = {{"__metadata__", 1, sa, a}};
    CHECK(nt_st_write(ctx, q, m1, 1, NULL, 0, 0) == NT_EINVAL);
    nt_st_entry n1[] = {{"a", 1, neg, a}};
    CHECK(nt_st_write(ctx, q, n1, 1, NULL, 0, 0) == NT_EINVAL);
    nt_st_entry z1[] = {{"a", 1, sa, NULL}};
    CHECK(nt_st_write(ctx, q, z1, 1, NULL, 0, 0) == NT_EINVAL);
    nt_st_entry u1[] = {{"a\xff", 1, sa, a}};
    CHECK(nt_st_write(ctx, q, u1, 1, NULL, 0, 0) == NT_EINVAL);
    nt_kv dm[2] = {{"k", "1"}, {"k", "2"}};
    CHECK(nt_st_write(ctx, q, e1, 1, dm, 2, 0) == NT_EINVAL);
    nt_kv um[1] = {{"k", "bad \xc3"}};
    CHECK(nt_st_write(ctx, q, e1, 1, um, 1, 0) == NT_EINVAL);
    CHECK(nt_st_write(ctx, q, e1, -1, NULL, 0, 0) == NT_EINVAL);
    CHECK(access(q, F_OK) != 0 && errno == ENOENT);
}

// ---- model files ----

static int params_equal(const nt_model *a, const nt_model *b, double tol, int quiet)
{
    int n = nt_model_num_params(a), bad = 0;
    for (int i = 0; i < n; i++) {
        nt_param pa, pb;
        nt_model_param(a, i, &pa);
        nt_model_param(b, i, &pb);
        int64_t m = nt_tensor_numel(pa.value);
        for (int64_t j = 0; j < m; j++) {
            double x = pa.value->data[j], y = pb.value->data[j];
            if (!(fabs(x - y) <= tol * fabs(x) + (tol ? 0x1p-24 : 0))) {
                if (bad++ < 5 && !quiet)
                    fprintf(stderr, "  %s[%lld]: %.9g vs %.9g\n", pa.name, (long long)j, x, y);
                break;
            }
        }
    }
    return bad == 0;
}

static void test_model(void)
{
    nt_model *a = tu_small_resnet(ctx, 16, 1, 1), *b = tu_small_resnet(ctx, 16, 1, 2);
    if (!a || !b) goto out;
    CHECK(!params_equal(a, b, 0, 1));
    nt_kv meta[2] = {{"arch", "resnet50"}, {"preprocess", "caffe"}};
    const char *p = tu_path("model.safetensors");
    nt_status s   = nt_model_save(a, p, meta, 2, 0);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    CHECK(access(tu_path("model.safetensors.tmp"), F_OK) != 0);

    nt_param p0, plast;
    nt_model_param(a, 0, &p0);
    nt_model_param(a, nt_model_num_params(a) - 1, &plast);
    CHECK(strcmp(p0.name, "conv1_conv/kernel") == 0);
    CHECK_PY_OK(p,
                "--expect-count %d --expect-meta arch=resnet50 --expect-meta preprocess=caffe "
                "--expect-name conv1_conv/kernel --expect-dtype F32 --expect-shape 7,7,3,4 "
                "--expect-values %.9g,%.9g --expect-name %s --expect-first %.9g",
                nt_model_num_params(a), (double)p0.value->data[0], (double)p0.value->data[1],
                plast.name, (double)plast.value->data[0]);

    nt_st_file *f = NULL;
    s             = nt_st_open(ctx, p, &f);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    if (!f) goto out;
    CHECK(nt_st_num_tensors(f) == nt_model_num_params(a));
    for (int i = 0; i < nt_st_num_tensors(f) && i < nt_model_num_params(a); i++) {
        const char *name;
        nt_param pp;
        nt_st_tensor_at(f, i, &name, NULL, NULL, NULL, NULL);
        nt_model_param(a, i, &pp);
        CHECK_MSG(strcmp(name, pp.name) == 0, "file tensor %d is %s, model param %s", i, name,
                  pp.name);
    }
    s = nt_model_load_st(b, f, 0);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    CHECK_MSG(params_equal(a, b, 0, 0), "F32 load is not bit exact");

    // Shape mismatch: the width_div 8 model refuses, names the tensor and both shapes, and is
    // left untouched.
    nt_model *w8 = tu_small_resnet(ctx, 8, 1, 3), *w8c = tu_small_resnet(ctx, 8, 1, 3);
    if (w8 && w8c) {
        s = nt_model_load_st(w8, f, 0);
        CHECK(s == NT_EFORMAT);
        const char *want = "tensor \"conv1_conv/kernel\" has shape [7,7,3,4] but the model "
                           "expects [7,7,3,8]";
        CHECK_MSG(strstr(nt_ctx_errmsg(ctx), want) && strstr(nt_ctx_errmsg(ctx), p), "%s",
                  nt_ctx_errmsg(ctx));
        printf("ok   shape mismatch -> %s\n", nt_ctx_errmsg(ctx));
        CHECK(params_equal(w8, w8c, 0, 0));
    }
    nt_model_free(w8);
    nt_model_free(w8c);

    // A backbone-only model: the head tensors are extra (an error unless allow_extra).
    nt_model *nh = tu_small_resnet(ctx, 16, 0, 4);
    if (nh) {
        s = nt_model_load_st(nh, f, 0);
        CHECK(s == NT_EFORMAT && strstr(nt_ctx_errmsg(ctx), "dense"));
        printf("ok   extra tensors -> %s\n", nt_ctx_errmsg(ctx));
        s = nt_model_load_st(nh, f, 1);
        CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
        for (int i = 0; i < nt_model_num_params(nh); i++) {
            nt_param pn, pa;
            nt_model_param(nh, i, &pn);
            nt_model_param(a, nt_model_find_param(a, pn.name), &pa);
            CHECK(memcmp(pn.value->data, pa.value->data, (size_t)nt_tensor_numel(pn.value) * 4) ==
                  0);
        }
        // And the other way: a file without the head is missing tensors for a model with one.
        CHECK(nt_model_save(nh, tu_path("nohead.safetensors"), NULL, 0, 0) == NT_OK);
        nt_st_file *g = NULL;
        if (nt_st_open(ctx, tu_path("nohead.safetensors"), &g) == NT_OK) {
            s = nt_model_load_st(b, g, 1);
            CHECK(s == NT_EFORMAT && strstr(nt_ctx_errmsg(ctx), "dense"));
            printf("ok   missing tensors -> %s\n", nt_ctx_errmsg(ctx));
            nt_st_close(g);
        }
    }
    nt_model_free(nh);
    nt_st_close(f);

    // F16 model file: every parameter back within half precision.
    p = tu_path("model16.safetensors");
    s = nt_model_save(a, p, NULL, 0, 1);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    CHECK_PY_OK(p,
                "--expect-name conv1_conv/kernel --expect-dtype F16 --tol 1e-3 "
                "--expect-first %.9g",
                (double)p0.value->data[0]);
    if (nt_st_open(ctx, p, &f) == NT_OK) {
        nt_model *c = tu_small_resnet(ctx, 16, 1, 5);
        if (c) {
            CHECK(nt_model_load_st(c, f, 0) == NT_OK);
            CHECK_MSG(params_equal(a, c, 0x1p-11, 0), "F16 load outside half precision");
        }
        nt_model_free(c);
        nt_st_close(f);
    } else {
        CHECK_MSG(0, "%s", nt_ctx_errmsg(ctx));
    }
    // A failed save reports NT_EIO.
    CHECK(nt_model_save(a, tu_path("no/dir/m.safetensors"), NULL, 0, 0) == NT_EIO);
out:
    nt_model_free(a);
    nt_model_free(b);
}

int main(void)
{
    if (!(ctx = tu_ctx_new1())) return 1;
    if (!(dir = tu_tmpdir_new("st"))) return 1;
    test_roundtrip_f32();
    test_f16();
    test_bf16();
    test_corrupt();
    test_fuzz();
    test_atomic();
    test_model();
    tu_tmpdir_free();
    nt_ctx_free(ctx);
    return check_summary("test_safetensors");
}
