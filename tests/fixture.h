/*
 * fixture.h: reader for the PyTorch reference fixtures tests/fixtures/NAME.bin, which
 * tests/gen_fixtures.py writes (write_fixture). A test helper, linked into every test binary;
 * not part of libnet. Used by tests/test_fixtures.c (which also feeds it corrupt files) and
 * tests/test_train10.c.
 *
 * Format, version 1. All integers little-endian, floats IEEE-754 binary32 little-endian.
 *   offset 0   char[4]    magic "PNFX"
 *          4   u32        version (1)
 *          8   u32        number of tensors T
 *         12   u32        reserved, 0
 *   then T records, back to back (no padding):
 *              u32        name length L, 1..255
 *              char[L]    name: printable ASCII without spaces, no terminator; unique in the file
 *              u32        ndim, 0..8
 *              i64[ndim]  shape, each >= 0
 *              f32[numel] data in row-major (C) order; numel = product of the shape (1 if ndim 0)
 *   then the trailer:
 *              char[4]    "PNFE"
 *              u32        CRC-32 (the zlib / IEEE 802.3 one) of every byte before the trailer
 *   and nothing after it. A file that breaks any of these rules is refused with a message that
 *   says what was expected, what was found and at which offset.
 */
#ifndef FIXTURE_H
#define FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define FX_MAX_DIMS 8

typedef struct fx_tensor {
    const char *name;
    int ndim;
    int64_t shape[FX_MAX_DIMS];
    int64_t numel;
    const float *data; // 64-byte aligned, owned by the fx_file
} fx_tensor;

typedef struct fx_file fx_file;

// Reads and validates a whole fixture file. Returns 0 and sets *out, or -1 with a one-line
// message in err (always terminated when errlen > 0) and *out = NULL.
int fx_open(const char *path, fx_file **out, char *err, size_t errlen);
void fx_close(fx_file *f); // NULL is fine
const char *fx_path_of(const fx_file *f);
int fx_count(const fx_file *f);
const fx_tensor *fx_at(const fx_file *f, int i);
// The tensor named `name`, or NULL.
const fx_tensor *fx_find(const fx_file *f, const char *name);
// The tensor named `name` when it exists and (unless ndim < 0) has exactly the shape
// shape[0..ndim-1]; otherwise prints "fixture PATH: ..." to stderr and returns NULL.
const fx_tensor *fx_expect(const fx_file *f, const char *name, int ndim, const int64_t *shape);

// The path of fixture file `file` ("block.bin"): $PNEUMO_FIXTURES/file when that variable is
// set, else tests/fixtures/file (tests run from the repository root). Writes into buf.
const char *fx_default_path(const char *file, char *buf, size_t len);

// CRC-32 (zlib's) of n bytes, continuing from crc (start with 0).
uint32_t fx_crc32(uint32_t crc, const void *data, size_t n);

#endif
