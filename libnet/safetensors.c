/*
 * safetensors.c: pneumo's model files, in the format of the Python `safetensors` package: an
 * 8-byte little-endian header length N, N bytes of JSON (padded with spaces to a multiple of 8),
 * then the raw little-endian tensor data. Writes are atomic (path.tmp, fsync, rename, fsync of
 * the directory). The reader validates everything and widens F16/BF16 to F32. It is not a
 * general reader: only F32, F16 and BF16 tensors are accepted. Tests: tests/test_safetensors.c,
 * which also runs the independent stdlib-only checker tests/st_check.py on what we write.
 */
#include "libnet/model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// The Python package refuses headers above 100 MB (safetensors' MAX_HEADER_SIZE); so do we.
#define ST_MAX_HEADER 100000000ULL

// ---- little-endian and half-precision conversions ----

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t load_le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void store_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

// float32 -> IEEE binary16, round to nearest, ties to even; overflow gives +-inf, NaN stays a
// (quiet) NaN, values below half the smallest subnormal (2^-25) give a signed zero.
static uint16_t f32_to_f16(float f)
{
    uint32_t x    = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax   = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); // NaN
    if (ax >= 0x47800000u) return (uint16_t)(sign | 0x7c00u); // >= 2^16 (or inf): inf
    if (ax >= 0x38800000u) {
        // Normal in f16 (>= 2^-14): rebias the exponent by 127-15, then drop 13 mantissa bits
        // rounding to even. A carry out of the mantissa bumps the exponent, which is right (and
        // turns [65520, 65536) into inf).
        uint32_t r = ax - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax < 0x33000000u) return sign; // below 2^-25: rounds to zero
    // Subnormal in f16: the value in units of 2^-24 is m * 2^(e-126) with m the 24-bit
    // significand, so drop 126-e bits (13..24) and round to even. q may reach 0x400, which is
    // exactly the encoding of the smallest normal.
    uint32_t e     = ax >> 23;
    uint32_t m     = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;
    uint32_t q     = m >> shift;
    uint32_t rem   = m & ((1u << shift) - 1u);
    uint32_t half  = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e    = (h >> 10) & 0x1fu;
    uint32_t m    = h & 0x3ffu;
    if (e == 0) {
        if (m == 0) return f32_from_bits(sign);
        // Subnormal: normalise into an f32 normal.
        e = 113; // 127 - 14
        while (!(m & 0x400u)) {
            m <<= 1;
            e--;
        }
        return f32_from_bits(sign | e << 23 | (m & 0x3ffu) << 13);
    }
    if (e == 31) return f32_from_bits(sign | 0x7f800000u | m << 13);
    return f32_from_bits(sign | (e + 112u) << 23 | m << 13);
}

static float bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

// "[7,7,3,64]" into buf (always terminated).
static void shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

// ---- the parsed file ----

typedef struct st_tensor {
    char *name;
    const char *dtype; // static string "F32", "F16" or "BF16"
    int esize;         // its bytes per element
    int order;         // position in the header (ties of empty tensors keep it)
    int ndim;
    int64_t *shape; // points into nt_st_file.dims
    float *data;    // points into nt_st_file.values
    uint64_t begin, end;
} st_tensor;

struct nt_st_file {
    char *path;
    int nmeta;
    char **meta_key;
    char **meta_val;
    int ntensors;
    st_tensor *t;
    int64_t *dims;
    float *values;
};

void nt_st_close(nt_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_key[i]);
        free(f->meta_val[i]);
    }
    free(f->meta_key);
    free(f->meta_val);
    for (int i = 0; i < f->ntensors; i++)
        free(f->t[i].name);
    free(f->t);
    free(f->dims);
    nt_free(f->values);
    free(f->path);
    free(f);
}

const char *nt_st_meta(const nt_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_key[i], key) == 0) return f->meta_val[i];
    return NULL;
}

int nt_st_num_meta(const nt_st_file *f)
{
    return f->nmeta;
}

void nt_st_meta_at(const nt_st_file *f, int i, const char **key, const char **value)
{
    NT_ASSERT(i >= 0 && i < f->nmeta);
    if (key) *key = f->meta_key[i];
    if (value) *value = f->meta_val[i];
}

int nt_st_num_tensors(const nt_st_file *f)
{
    return f->ntensors;
}

void nt_st_tensor_at(const nt_st_file *f, int i, const char **name, const char **dtype, int *ndim,
                     const int64_t **shape, const float **data)
{
    NT_ASSERT(i >= 0 && i < f->ntensors);
    const st_tensor *t = &f->t[i];
    if (name) *name = t->name;
    if (dtype) *dtype = t->dtype;
    if (ndim) *ndim = t->ndim;
    if (shape) *shape = t->shape;
    if (data) *data = t->data;
}

int nt_st_find(const nt_st_file *f, const char *name)
{
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->t[i].name, name) == 0) return i;
    return -1;
}

// ---- reading ----

// NT_EFORMAT with "safetensors file PATH: <what>".
__attribute__((format(printf, 3, 4))) static nt_status bad(nt_ctx *ctx, const char *path,
                                                           const char *fmt, ...)
{
    char what[NT_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return nt_ctx_seterr(ctx, NT_EFORMAT, "safetensors file %s: %s", path, what);
}

// Reads the whole file into *buf (malloc'd; *len bytes). NT_EIO with path and errno text.
static nt_status read_all(nt_ctx *ctx, const char *path, unsigned char **buf, size_t *len)
{
    *buf   = NULL;
    *len   = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nt_ctx_seterr(ctx, NT_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return nt_ctx_seterr(ctx, NT_EIO, "cannot stat %s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return nt_ctx_seterr(ctx, NT_EIO, "cannot read %s: %s", path, strerror(EISDIR));
    }
    // st_size is only a hint (pipes, files that grow); read until EOF.
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, n = 0;
    unsigned char *p = malloc(cap);
    if (!p) {
        close(fd);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: cannot allocate %zu bytes for %s", cap,
                             path);
    }
    for (;;) {
        if (n == cap) {
            unsigned char *q = realloc(p, cap * 2);
            if (!q) {
                free(p);
                close(fd);
                return nt_ctx_seterr(
                    ctx, NT_ENOMEM, "safetensors: cannot allocate %zu bytes for %s", cap * 2, path);
            }
            p = q;
            cap *= 2;
        }
        ssize_t r = read(fd, p + n, cap - n);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(p);
            close(fd);
            return nt_ctx_seterr(ctx, NT_EIO, "cannot read %s: %s", path, strerror(e));
        }
        n += (size_t)r;
    }
    close(fd);
    *buf = p;
    *len = n;
    return NT_OK;
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

// A JSON value that must be an integer in [0, max]. Returns 0 and sets *v, or -1.
static int json_uint(const json_t *j, uint64_t max, uint64_t *v)
{
    if (!json_is_integer(j)) return -1;
    json_int_t x = json_integer_value(j);
    if (x < 0 || (uint64_t)x > max) return -1;
    *v = (uint64_t)x;
    return 0;
}

// Bytes per element of a dtype we read (setting *canon to a static copy of its name), or 0.
static int dtype_size(const char *s, const char **canon)
{
    static const char *const names[] = {"F32", "F16", "BF16"};
    static const int sizes[]         = {4, 2, 2};
    for (int i = 0; i < 3; i++) {
        if (strcmp(s, names[i]) == 0) {
            *canon = names[i];
            return sizes[i];
        }
    }
    return 0;
}

static int cmp_offsets(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

// Parses one tensor entry `name` -> `v` into t (shape kept in a scratch array the caller sized).
// datalen is the size of the data buffer.
static nt_status parse_entry(nt_ctx *ctx, const char *path, const char *name, json_t *v,
                             uint64_t datalen, st_tensor *t, int64_t *dims, size_t *ndims_used)
{
    if (!json_is_object(v))
        return bad(ctx, path,
                   "entry \"%s\" must be an object {dtype, shape, data_offsets}, found %s", name,
                   json_type_name(v));
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return bad(
                ctx, path,
                "tensor \"%s\": unexpected field \"%s\" (expected dtype, shape, data_offsets)",
                name, k);
    }
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo          = json_object_get(v, "data_offsets");
    const char *missing = !jd ? "dtype" : !js ? "shape" : !jo ? "data_offsets" : NULL;
    if (missing) return bad(ctx, path, "tensor \"%s\": missing field \"%s\"", name, missing);
    if (!json_is_string(jd))
        return bad(ctx, path, "tensor \"%s\": dtype must be a string, found %s", name,
                   json_type_name(jd));
    int esize = t->esize = dtype_size(json_string_value(jd), &t->dtype);
    if (!esize)
        return bad(ctx, path,
                   "tensor \"%s\": dtype \"%.32s\" is not supported (expected F32, F16 or BF16)",
                   name, json_string_value(jd));
    if (!json_is_array(js))
        return bad(ctx, path, "tensor \"%s\": shape must be an array, found %s", name,
                   json_type_name(js));
    size_t nd = json_array_size(js);
    if (nd > 64)
        return bad(ctx, path, "tensor \"%s\": shape has %zu dimensions (at most 64 expected)", name,
                   nd);
    t->ndim  = (int)nd;
    t->shape = dims + *ndims_used;
    int zero = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (json_uint(json_array_get(js, i), (uint64_t)INT64_MAX, &d))
            return bad(ctx, path, "tensor \"%s\": shape[%zu] must be a non-negative integer", name,
                       i);
        t->shape[i] = (int64_t)d;
        if (d == 0) zero = 1;
    }
    *ndims_used += nd;
    // numel * esize, with overflow treated as "larger than any file".
    uint64_t bytes = zero ? 0 : (uint64_t)esize;
    for (size_t i = 0; i < nd && bytes; i++) {
        uint64_t d = (uint64_t)t->shape[i];
        if (bytes > UINT64_MAX / d) {
            bytes = UINT64_MAX;
            break;
        }
        bytes *= d;
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return bad(ctx, path, "tensor \"%s\": data_offsets must be an array [begin, end]", name);
    if (json_uint(json_array_get(jo, 0), UINT64_MAX >> 1, &t->begin) ||
        json_uint(json_array_get(jo, 1), UINT64_MAX >> 1, &t->end))
        return bad(ctx, path, "tensor \"%s\": data_offsets must be non-negative integers", name);
    if (t->end < t->begin)
        return bad(ctx, path, "tensor \"%s\": data_offsets [%llu,%llu] end before they begin", name,
                   (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > datalen)
        return bad(ctx, path,
                   "tensor \"%s\": data_offsets [%llu,%llu] extend beyond the data buffer (%llu "
                   "bytes; truncated file?)",
                   name, (unsigned long long)t->begin, (unsigned long long)t->end,
                   (unsigned long long)datalen);
    if (t->end - t->begin != bytes) {
        char sh[128];
        shape_str(t->ndim, t->shape, sh, sizeof(sh));
        return bad(ctx, path,
                   "tensor \"%s\": shape %s of %s needs %llu bytes but data_offsets [%llu,%llu] "
                   "span %llu",
                   name, sh, t->dtype, (unsigned long long)bytes, (unsigned long long)t->begin,
                   (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
    }
    t->name = strdup(name);
    if (!t->name) return nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
    return NT_OK;
}

static nt_status parse(nt_ctx *ctx, nt_st_file *f, const unsigned char *buf, size_t len)
{
    const char *path = f->path;
    if (len == 0) return bad(ctx, path, "the file is empty (expected an 8-byte header length)");
    if (len < 8)
        return bad(ctx, path, "%zu bytes, too short for the 8-byte header length (truncated?)",
                   len);
    uint64_t hlen = load_le64(buf);
    if (hlen > ST_MAX_HEADER)
        return bad(ctx, path,
                   "header length %llu exceeds the %llu-byte limit (not a safetensors "
                   "file, or corrupt)",
                   (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > len - 8)
        return bad(ctx, path,
                   "header length %llu is beyond the end of the file (%zu bytes, so at most %zu; "
                   "truncated?)",
                   (unsigned long long)hlen, len, len - 8);
    if (hlen == 0) return bad(ctx, path, "header length is 0 (expected a JSON object)");
    if (buf[8] != '{')
        return bad(ctx, path,
                   "header must start with '{' (a JSON object) but starts with byte 0x%02x",
                   buf[8]);
    uint64_t datalen          = len - 8 - hlen;
    const unsigned char *data = buf + 8 + hlen;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bad(ctx, path, "header is not valid JSON at line %d, column %d: %s", jerr.line,
                   jerr.column, jerr.text);
    nt_status s = NT_OK;
    if (!json_is_object(root)) {
        s = bad(ctx, path, "header must be a JSON object, found %s", json_type_name(root));
        goto done;
    }

    // Metadata first: a map of strings to strings.
    json_t *meta = json_object_get(root, "__metadata__");
    size_t nent  = json_object_size(root) - (meta ? 1 : 0);
    if (meta) {
        if (!json_is_object(meta)) {
            s = bad(ctx, path, "__metadata__ must be an object of strings, found %s",
                    json_type_name(meta));
            goto done;
        }
        size_t nm   = json_object_size(meta);
        f->meta_key = calloc(nm + 1, sizeof(char *));
        f->meta_val = calloc(nm + 1, sizeof(char *));
        if (!f->meta_key || !f->meta_val) {
            s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
            goto done;
        }
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v)
        {
            if (!json_is_string(v)) {
                s = bad(ctx, path, "__metadata__ value for \"%s\" must be a string, found %s", k,
                        json_type_name(v));
                goto done;
            }
            f->meta_key[f->nmeta] = strdup(k);
            f->meta_val[f->nmeta] = strdup(json_string_value(v));
            f->nmeta++;
            if (!f->meta_key[f->nmeta - 1] || !f->meta_val[f->nmeta - 1]) {
                s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
                goto done;
            }
        }
    }

    // Tensor entries. Every dimension fits in the header, so hlen bounds the dims we store.
    size_t maxdims = 0;
    {
        const char *k;
        json_t *v;
        json_object_foreach(root, k, v)
        {
            json_t *sh = json_is_object(v) ? json_object_get(v, "shape") : NULL;
            if (sh && json_is_array(sh)) maxdims += json_array_size(sh);
        }
    }
    f->t    = calloc(nent + 1, sizeof(st_tensor));
    f->dims = calloc(maxdims + 1, sizeof(int64_t));
    if (!f->t || !f->dims) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
        goto done;
    }
    size_t used = 0;
    {
        const char *k;
        json_t *v;
        json_object_foreach(root, k, v)
        {
            if (v == meta) continue;
            s = parse_entry(ctx, path, k, v, datalen, &f->t[f->ntensors], f->dims, &used);
            if (s) goto done;
            f->t[f->ntensors].order = f->ntensors;
            f->ntensors++;
        }
    }

    // Tensors in file order; they must tile the data buffer exactly.
    qsort(f->t, (size_t)f->ntensors, sizeof(st_tensor), cmp_offsets);
    uint64_t pos = 0;
    for (int i = 0; i < f->ntensors; i++) {
        const st_tensor *t = &f->t[i];
        if (t->begin < pos) {
            const st_tensor *p    = &f->t[i - 1];
            unsigned long long b0 = t->begin, e0 = t->end, b1 = p->begin, e1 = p->end;
            s = bad(ctx, path,
                    "tensor \"%s\" data_offsets [%llu,%llu] overlap tensor \"%s\" [%llu,%llu]",
                    t->name, b0, e0, p->name, b1, e1);
            goto done;
        }
        if (t->begin > pos) {
            s = bad(ctx, path,
                    "tensor \"%s\" begins at data byte %llu but the previous tensor ends at %llu "
                    "(gap in the data buffer)",
                    t->name, (unsigned long long)t->begin, (unsigned long long)pos);
            goto done;
        }
        pos = t->end;
    }
    if (pos != datalen) {
        s = bad(ctx, path,
                "the tensors cover %llu bytes of data but the file holds %llu after the "
                "header (trailing bytes)",
                (unsigned long long)pos, (unsigned long long)datalen);
        goto done;
    }

    // Widen to float32. Every element takes >= 2 bytes of the file, so this stays below 2x.
    uint64_t total = 0;
    for (int i = 0; i < f->ntensors; i++)
        total += (f->t[i].end - f->t[i].begin) / (uint64_t)f->t[i].esize;
    f->values = nt_alloc((size_t)total * sizeof(float));
    if (!f->values) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: cannot allocate %llu bytes for %s",
                          (unsigned long long)(total * sizeof(float)), path);
        goto done;
    }
    float *out = f->values;
    for (int i = 0; i < f->ntensors; i++) {
        st_tensor *t           = &f->t[i];
        const unsigned char *p = data + t->begin;
        t->data                = out;
        if (t->esize == 4) {
            uint64_t n = (t->end - t->begin) / 4;
            for (uint64_t j = 0; j < n; j++)
                out[j] = f32_from_bits(load_le32(p + 4 * j));
            out += n;
        } else {
            int bf     = strcmp(t->dtype, "BF16") == 0;
            uint64_t n = (t->end - t->begin) / 2;
            for (uint64_t j = 0; j < n; j++) {
                uint16_t h = load_le16(p + 2 * j);
                out[j]     = bf ? bf16_to_f32(h) : f16_to_f32(h);
            }
            out += n;
        }
    }
done:
    json_decref(root);
    return s;
}

nt_status nt_st_open(nt_ctx *ctx, const char *path, nt_st_file **out)
{
    *out = NULL;
    if (!path) return nt_ctx_seterr(ctx, NT_EINVAL, "safetensors: path is NULL");
    unsigned char *buf;
    size_t len;
    nt_status s = read_all(ctx, path, &buf, &len);
    if (s) return s;
    nt_st_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        free(buf);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
    }
    s = parse(ctx, f, buf, len);
    free(buf);
    if (s) {
        nt_st_close(f);
        return s;
    }
    *out = f;
    return NT_OK;
}

// ---- writing ----

// Writes path.tmp, fsyncs it, renames it over path and fsyncs the directory. On failure the
// temporary is removed and any previous file at path is left as it was.
typedef struct st_writer {
    nt_ctx *ctx;
    const char *path;
    char *tmp;
    FILE *fp;
} st_writer;

static nt_status w_fail(st_writer *w, const char *what, int err)
{
    nt_status s = nt_ctx_seterr(w->ctx, NT_EIO, "cannot %s %s: %s", what, w->tmp,
                                err ? strerror(err) : "short write");
    if (w->fp) fclose(w->fp);
    w->fp = NULL;
    unlink(w->tmp);
    return s;
}

static nt_status w_put(st_writer *w, const void *p, size_t n)
{
    errno = 0;
    if (n && fwrite(p, 1, n, w->fp) != n) return w_fail(w, "write", errno);
    return NT_OK;
}

static nt_status w_data(st_writer *w, const float *x, int64_t n, int fp16)
{
    enum { CHUNK = 16384 };
    unsigned char buf[CHUNK * 4];
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        if (fp16) {
            for (int64_t j = 0; j < m; j++) {
                uint16_t h     = f32_to_f16(x[i + j]);
                buf[2 * j]     = (unsigned char)h;
                buf[2 * j + 1] = (unsigned char)(h >> 8);
            }
        } else {
            for (int64_t j = 0; j < m; j++)
                store_le32(buf + 4 * j, f32_bits(x[i + j]));
        }
        nt_status s = w_put(w, buf, (size_t)m * (fp16 ? 2 : 4));
        if (s) return s;
    }
    return NT_OK;
}

static void fsync_dir(nt_ctx *ctx, const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // The file is already in place; a directory we cannot open or fsync (some filesystems
    // refuse) only weakens durability, so it is logged rather than reported as a failure.
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL && errno != EROFS))
        nt_ctx_log(ctx, NT_LOG_WARN, "safetensors: cannot fsync directory %s: %s", dir,
                   strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
}

// Builds the JSON header (metadata first, then the tensors in the order given, contiguous) and
// checks the arguments. *hdr is malloc'd by jansson.
static nt_status build_header(nt_ctx *ctx, const char *path, const nt_st_entry *t, int n,
                              const nt_kv *metadata, int nmeta, int fp16, char **hdr)
{
    *hdr         = NULL;
    nt_status s  = NT_OK;
    json_t *root = json_object();
    if (!root) return nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
    if (nmeta > 0) {
        json_t *meta = json_object();
        if (!meta || json_object_set_new(root, "__metadata__", meta)) {
            s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
            goto done;
        }
        for (int i = 0; i < nmeta; i++) {
            const nt_kv *kv = &metadata[i];
            if (!kv->key || !kv->value) {
                s = nt_ctx_seterr(ctx, NT_EINVAL, "safetensors %s: metadata entry %d is NULL", path,
                                  i);
                goto done;
            }
            if (json_object_get(meta, kv->key)) {
                s = nt_ctx_seterr(ctx, NT_EINVAL, "safetensors %s: metadata key \"%s\" given twice",
                                  path, kv->key);
                goto done;
            }
            json_t *v = json_string(kv->value);
            if (!v || json_object_set_new(meta, kv->key, v)) {
                s = nt_ctx_seterr(ctx, NT_EINVAL,
                                  "safetensors %s: metadata \"%.64s\" is not valid UTF-8", path,
                                  kv->key);
                goto done;
            }
        }
    }
    const uint64_t esize = fp16 ? 2 : 4;
    uint64_t off         = 0;
    for (int i = 0; i < n; i++) {
        const nt_st_entry *e = &t[i];
        if (!e->name || !*e->name || strcmp(e->name, "__metadata__") == 0) {
            s = nt_ctx_seterr(ctx, NT_EINVAL, "safetensors %s: tensor %d has no usable name", path,
                              i);
            goto done;
        }
        if (e->ndim < 0 || e->ndim > 64 || (e->ndim > 0 && !e->shape)) {
            s = nt_ctx_seterr(ctx, NT_EINVAL, "safetensors %s: tensor \"%s\" has ndim %d", path,
                              e->name, e->ndim);
            goto done;
        }
        if (json_object_get(root, e->name)) {
            s = nt_ctx_seterr(ctx, NT_EINVAL, "safetensors %s: tensor name \"%s\" given twice",
                              path, e->name);
            goto done;
        }
        // Keys in the Python writer's order; shape and offs are borrowed from ent, which root
        // owns once it is set.
        json_t *ent =
            json_pack("{s:s, s:[], s:[]}", "dtype", fp16 ? "F16" : "F32", "shape", "data_offsets");
        if (!ent) {
            s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
            goto done;
        }
        json_t *shape = json_object_get(ent, "shape"), *offs = json_object_get(ent, "data_offsets");
        if (json_object_set_new(root, e->name, ent)) {
            s = nt_ctx_seterr(ctx, NT_EINVAL,
                              "safetensors %s: tensor name \"%.64s\" is not valid UTF-8", path,
                              e->name);
            goto done;
        }
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            int64_t k = e->shape[d];
            if (k < 0 || k > ((int64_t)1 << 40) || (k && numel > ((int64_t)1 << 40) / k)) {
                s = nt_ctx_seterr(ctx, NT_EINVAL,
                                  "safetensors %s: tensor \"%s\" dimension %d is %lld", path,
                                  e->name, d, (long long)k);
                goto done;
            }
            numel *= k;
            json_array_append_new(shape, json_integer(k));
        }
        if (numel > 0 && !e->data) {
            s = nt_ctx_seterr(ctx, NT_EINVAL, "safetensors %s: tensor \"%s\" has no data", path,
                              e->name);
            goto done;
        }
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += (uint64_t)numel * esize;
        json_array_append_new(offs, json_integer((json_int_t)off));
    }
    *hdr = json_dumps(root, JSON_COMPACT);
    if (!*hdr) s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: cannot format the header");
done:
    json_decref(root);
    return s;
}

nt_status nt_st_write(nt_ctx *ctx, const char *path, const nt_st_entry *t, int n,
                      const nt_kv *metadata, int nmeta, int fp16)
{
    if (!path || !*path) return nt_ctx_seterr(ctx, NT_EINVAL, "safetensors: empty path");
    if (n < 0 || (n > 0 && !t) || nmeta < 0 || (nmeta > 0 && !metadata))
        return nt_ctx_seterr(ctx, NT_EINVAL, "safetensors %s: bad tensor/metadata list (%d, %d)",
                             path, n, nmeta);
    char *hdr   = NULL;
    nt_status s = build_header(ctx, path, t, n, metadata, nmeta, fp16, &hdr);
    if (s) return s;
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;

    st_writer w = {ctx, path, NULL, NULL};
    size_t plen = strlen(path);
    w.tmp       = malloc(plen + 5);
    if (!w.tmp) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "safetensors: out of memory");
        goto done;
    }
    memcpy(w.tmp, path, plen);
    memcpy(w.tmp + plen, ".tmp", 5);
    int fd = open(w.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        s = nt_ctx_seterr(ctx, NT_EIO, "cannot create %s: %s", w.tmp, strerror(errno));
        goto done;
    }
    w.fp = fdopen(fd, "wb");
    if (!w.fp) {
        int e = errno;
        close(fd);
        s = w_fail(&w, "open", e);
        goto done;
    }
    unsigned char len8[8];
    store_le64(len8, padded);
    static const char spaces[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
    if ((s = w_put(&w, len8, 8)) || (s = w_put(&w, hdr, hlen)) ||
        (s = w_put(&w, spaces, padded - hlen)))
        goto done;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= t[i].shape[d];
        if ((s = w_data(&w, t[i].data, numel, fp16))) goto done;
    }
    // Only a flushed, fsynced, closed file may replace the old one.
    if (fflush(w.fp) != 0) {
        s = w_fail(&w, "write", errno);
        goto done;
    }
    if (fsync(fileno(w.fp)) != 0) {
        s = w_fail(&w, "fsync", errno);
        goto done;
    }
    int rc = fclose(w.fp);
    w.fp   = NULL;
    if (rc != 0) {
        s = w_fail(&w, "close", errno);
        goto done;
    }
    if (rename(w.tmp, path) != 0) {
        int e = errno;
        unlink(w.tmp);
        s = nt_ctx_seterr(ctx, NT_EIO, "cannot rename %s to %s: %s", w.tmp, path, strerror(e));
        goto done;
    }
    fsync_dir(ctx, path);
done:
    free(w.tmp);
    free(hdr);
    return s;
}

// ---- model files ----

nt_status nt_model_save(nt_model *m, const char *path, const nt_kv *metadata, int nmeta, int fp16)
{
    int n          = nt_model_num_params(m);
    nt_st_entry *e = calloc((size_t)n + 1, sizeof(*e));
    if (!e) return nt_ctx_seterr(m->ctx, NT_ENOMEM, "model file %s: out of memory", path);
    for (int i = 0; i < n; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        e[i].name  = p.name;
        e[i].ndim  = p.value->ndim;
        e[i].shape = p.value->shape;
        e[i].data  = p.value->data;
    }
    nt_status s = nt_st_write(m->ctx, path, e, n, metadata, nmeta, fp16);
    free(e);
    return s;
}

nt_status nt_model_load_st(nt_model *m, const nt_st_file *f, int allow_extra)
{
    nt_ctx *ctx = m->ctx;
    int n       = nt_model_num_params(m);
    int *src    = malloc(((size_t)n + 1) * sizeof(int));
    if (!src) return nt_ctx_seterr(ctx, NT_ENOMEM, "model file %s: out of memory", f->path);
    // Check everything first, so that a refused file leaves the model as it was.
    for (int i = 0; i < n; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        char want[128], got[128];
        shape_str(p.value->ndim, p.value->shape, want, sizeof(want));
        int j = nt_st_find(f, p.name);
        if (j < 0) {
            free(src);
            return nt_ctx_seterr(ctx, NT_EFORMAT,
                                 "model file %s: tensor \"%s\" (shape %s) is missing; the file "
                                 "holds %d tensors, the model has %d parameters",
                                 f->path, p.name, want, f->ntensors, n);
        }
        const st_tensor *t = &f->t[j];
        int same           = t->ndim == p.value->ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = t->shape[d] == p.value->shape[d];
        if (!same) {
            shape_str(t->ndim, t->shape, got, sizeof(got));
            free(src);
            return nt_ctx_seterr(
                ctx, NT_EFORMAT,
                "model file %s: tensor \"%s\" has shape %s but the model expects %s", f->path,
                p.name, got, want);
        }
        src[i] = j;
    }
    if (!allow_extra) {
        int extra = 0, first = -1;
        for (int j = 0; j < f->ntensors; j++) {
            if (nt_model_find_param(m, f->t[j].name) < 0) {
                if (first < 0) first = j;
                extra++;
            }
        }
        if (extra) {
            free(src);
            return nt_ctx_seterr(ctx, NT_EFORMAT,
                                 "model file %s: %d tensor%s the model does not have, the first "
                                 "\"%s\" (a file of another architecture or head?)",
                                 f->path, extra, extra == 1 ? "" : "s", f->t[first].name);
        }
    }
    for (int i = 0; i < n; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        const st_tensor *t = &f->t[src[i]];
        memcpy(p.value->data, t->data, (size_t)nt_tensor_numel(p.value) * sizeof(float));
    }
    free(src);
    return NT_OK;
}
