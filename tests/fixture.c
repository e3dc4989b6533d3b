/*
 * fixture.c: the reader of tests/fixtures/NAME.bin (format in tests/fixture.h). Reads the whole
 * file, checks every length against what is left before decoding anything, and copies each
 * tensor into its own aligned buffer. Tested on good and broken files by tests/test_fixtures.c.
 */
#include "fixture.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fx_file {
    char *path;
    int n;
    fx_tensor *t;
    char **names;
    float **bufs;
};

// ---- helpers ----

static void seterr(char *err, size_t len, const char *fmt, ...)
{
    if (!err || !len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

uint32_t fx_crc32(uint32_t crc, const void *data, size_t n)
{
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) { // benign race: every thread computes the same table
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const unsigned char *p = data;
    crc                    = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_u64(const unsigned char *p)
{
    return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}

void fx_close(fx_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->names ? f->names[i] : NULL);
        free(f->bufs ? f->bufs[i] : NULL);
    }
    free(f->names);
    free(f->bufs);
    free(f->t);
    free(f->path);
    free(f);
}

// ---- open ----

// Reads the whole file into *buf. Returns 0, or -1 with a message.
static int slurp(const char *path, unsigned char **buf, size_t *size, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        seterr(err, errlen,
               "fixture %s: cannot open: %s (regenerate with /usr/bin/python3 "
               "tests/gen_fixtures.py)",
               path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        if (n == cap) {
            unsigned char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    int rerr = ferror(fp);
    fclose(fp);
    if (!b) {
        seterr(err, errlen, "fixture %s: out of memory after %zu bytes", path, n);
        return -1;
    }
    if (rerr) {
        free(b);
        seterr(err, errlen, "fixture %s: read error after %zu bytes", path, n);
        return -1;
    }
    *buf  = b;
    *size = n;
    return 0;
}

int fx_open(const char *path, fx_file **out, char *err, size_t errlen)
{
    *out = NULL;
    unsigned char *b;
    size_t size;
    if (slurp(path, &b, &size, err, errlen)) return -1;

    fx_file *f = calloc(1, sizeof *f);
    int rc     = -1;
    if (!f || !(f->path = strdup(path))) {
        seterr(err, errlen, "fixture %s: out of memory", path);
        goto done;
    }
    if (size < 16 + 8) {
        seterr(err, errlen, "fixture %s: truncated: %zu bytes, a fixture has at least 24", path,
               size);
        goto done;
    }
    if (memcmp(b, "PNFX", 4) != 0) {
        seterr(err, errlen,
               "fixture %s: not a fixture file: magic is %02x %02x %02x %02x, "
               "expected \"PNFX\"",
               path, b[0], b[1], b[2], b[3]);
        goto done;
    }
    uint32_t version = rd_u32(b + 4), count = rd_u32(b + 8);
    if (version != 1) {
        seterr(err, errlen, "fixture %s: version %u, this reader knows version 1", path, version);
        goto done;
    }
    // The trailer first: a truncated or corrupted file is named as such before any record is
    // decoded. A truncated file has no trailer where the size says it should be.
    size_t body = size - 8;
    if (memcmp(b + body, "PNFE", 4) != 0) {
        seterr(err, errlen,
               "fixture %s: truncated or corrupt: no \"PNFE\" trailer in the last 8 "
               "of its %zu bytes",
               path, size);
        goto done;
    }
    uint32_t want = rd_u32(b + body + 4), crc = fx_crc32(0, b, body);
    if (crc != want) {
        seterr(err, errlen,
               "fixture %s: corrupt: CRC-32 of the first %zu bytes is %08x, the "
               "trailer says %08x",
               path, body, crc, want);
        goto done;
    }
    if (count > body / 12) { // every record takes at least 4 + 1 + 4 + 4 bytes
        seterr(err, errlen, "fixture %s: header says %u tensors, more than %zu bytes can hold",
               path, count, body);
        goto done;
    }
    f->t     = calloc(count ? count : 1, sizeof *f->t);
    f->names = calloc(count ? count : 1, sizeof *f->names);
    f->bufs  = calloc(count ? count : 1, sizeof *f->bufs);
    if (!f->t || !f->names || !f->bufs) {
        seterr(err, errlen, "fixture %s: out of memory for %u tensors", path, count);
        goto done;
    }
    size_t off = 16;
    for (uint32_t i = 0; i < count; i++) {
        size_t left = body - off;
        if (left < 4) {
            seterr(err, errlen,
                   "fixture %s: record %u at offset %zu: %zu bytes left, need a name "
                   "length",
                   path, i, off, left);
            goto done;
        }
        uint32_t L = rd_u32(b + off);
        if (L < 1 || L > 255 || (size_t)L + 8 > left) {
            seterr(err, errlen,
                   "fixture %s: record %u at offset %zu: name length %u (expected "
                   "1..255 within the %zu bytes left)",
                   path, i, off, L, left);
            goto done;
        }
        const unsigned char *nm = b + off + 4;
        for (uint32_t k = 0; k < L; k++) {
            if (nm[k] <= 32 || nm[k] >= 127) {
                seterr(err, errlen,
                       "fixture %s: record %u at offset %zu: name byte %u is 0x%02x, "
                       "expected printable ASCII",
                       path, i, off, k, nm[k]);
                goto done;
            }
        }
        f->names[i] = malloc(L + 1);
        if (!f->names[i]) {
            seterr(err, errlen, "fixture %s: out of memory", path);
            goto done;
        }
        memcpy(f->names[i], nm, L);
        f->names[i][L] = 0;
        f->n           = (int)i + 1; // from here on fx_close frees record i
        off += 4 + L;
        uint32_t ndim = rd_u32(b + off);
        off += 4;
        if (ndim > FX_MAX_DIMS || (size_t)ndim * 8 > body - off) {
            seterr(err, errlen,
                   "fixture %s: tensor \"%s\": ndim %u (expected 0..%d within the "
                   "%zu bytes left)",
                   path, f->names[i], ndim, FX_MAX_DIMS, body - off);
            goto done;
        }
        fx_tensor *t = &f->t[i];
        t->name      = f->names[i];
        t->ndim      = (int)ndim;
        t->numel     = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            uint64_t s = rd_u64(b + off + 8 * d);
            // bounded by the bytes left, so that the product cannot overflow
            if (s > (body - off) / 4 || (s && (uint64_t)t->numel > (body - off) / 4 / s)) {
                seterr(err, errlen,
                       "fixture %s: tensor \"%s\": dimension %u is %llu, more than "
                       "the %zu bytes left can hold",
                       path, f->names[i], d, (unsigned long long)s, body - off);
                goto done;
            }
            t->shape[d] = (int64_t)s;
            t->numel *= (int64_t)s;
        }
        off += 8 * (size_t)ndim;
        size_t bytes = (size_t)t->numel * 4;
        if (bytes > body - off) {
            seterr(err, errlen,
                   "fixture %s: tensor \"%s\": %zu bytes of data at offset %zu, but "
                   "only %zu are left",
                   path, f->names[i], bytes, off, body - off);
            goto done;
        }
        float *d = aligned_alloc(64, ((bytes ? bytes : 4) + 63) / 64 * 64);
        if (!d) {
            seterr(err, errlen, "fixture %s: out of memory for %zu bytes", path, bytes);
            goto done;
        }
        for (int64_t k = 0; k < t->numel; k++) {
            uint32_t u = rd_u32(b + off + 4 * (size_t)k);
            memcpy(&d[k], &u, 4);
        }
        f->bufs[i] = d;
        t->data    = d;
        off += bytes;
        for (uint32_t k = 0; k < i; k++) {
            if (strcmp(f->names[k], f->names[i]) == 0) {
                seterr(err, errlen, "fixture %s: tensor \"%s\" appears twice (records %u and %u)",
                       path, f->names[i], k, i);
                goto done;
            }
        }
    }
    if (off != body) {
        seterr(err, errlen,
               "fixture %s: %zu unexpected bytes between the last tensor (ends at "
               "%zu) and the trailer",
               path, body - off, off);
        goto done;
    }
    f->n = (int)count;
    rc   = 0;
done:
    free(b);
    if (rc) {
        fx_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

// ---- lookup ----

const char *fx_path_of(const fx_file *f)
{
    return f->path;
}

int fx_count(const fx_file *f)
{
    return f->n;
}

const fx_tensor *fx_at(const fx_file *f, int i)
{
    return (i >= 0 && i < f->n) ? &f->t[i] : NULL;
}

const fx_tensor *fx_find(const fx_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

const fx_tensor *fx_expect(const fx_file *f, const char *name, int ndim, const int64_t *shape)
{
    const fx_tensor *t = fx_find(f, name);
    if (!t) {
        fprintf(stderr,
                "fixture %s: no tensor \"%s\" (regenerate with /usr/bin/python3 "
                "tests/gen_fixtures.py?)\n",
                f->path, name);
        return NULL;
    }
    if (ndim < 0) return t;
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == shape[d];
    if (!ok) {
        char a[128], e[128];
        shape_str(t->ndim, t->shape, a, sizeof a);
        shape_str(ndim, shape, e, sizeof e);
        fprintf(stderr, "fixture %s: tensor \"%s\" has shape %s, expected %s\n", f->path, name, a,
                e);
        return NULL;
    }
    return t;
}

const char *fx_default_path(const char *file, char *buf, size_t len)
{
    const char *dir = getenv("PNEUMO_FIXTURES");
    snprintf(buf, len, "%s/%s", dir && *dir ? dir : "tests/fixtures", file);
    return buf;
}
