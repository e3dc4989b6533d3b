/*
 * nd.h: pneumo's data layer: image decoding (libjpeg-turbo, libpng) and resizing to the model's
 * input. Errors go to the nt_ctx as one line naming the file. Tests: tests/test_image.c (with the
 * bad-input corpus tests/corpus/, made by tests/gen_corpus.py). Augmentation is data/augment.h,
 * datasets and loader threads data/dataset.h, the S3 client data/s3.h.
 */
#ifndef ND_H
#define ND_H

#include "libnet/nt.h"

#include <stddef.h>
#include <stdint.h>

// An 8-bit interleaved RGB image. Greyscale sources become three equal channels, as Keras's
// color_mode="rgb" does; alpha is dropped without compositing (as PIL's convert("RGB") does);
// 16-bit PNG samples are scaled to 8 bits with rounding (round(v / 257); PIL truncates to the
// high byte, at most one level apart); CMYK and YCCK JPEGs are converted with PIL's formula
// (R = (255 - K) - C (255 - K) / 255), their samples taken as Adobe-inverted (255 = no ink),
// with or without the APP14 marker, as PIL (so Keras), Chrome and Firefox take them.
typedef struct nd_image {
    int w, h;
    uint8_t *rgb; // w*h*3 bytes, owned (nd_image_free)
} nd_image;

// Hard limits for decoding untrusted input: a file over this many pixels (or over 65535 on a
// side) is refused from its header, before any pixel memory is allocated; a file over
// ND_MAX_FILE_BYTES is not read.
#define ND_MAX_PIXELS     (64 * 1024 * 1024)
#define ND_MAX_FILE_BYTES ((size_t)512 << 20)

// Decodes a JPEG (baseline, progressive, arithmetic; grey, YCbCr, RGB, CMYK, YCCK) or PNG (any
// colour type, 1..16 bits, interlaced) held in memory; the type is told by its magic bytes, not
// its name. `name` is used in messages only. Returns NT_OK; NT_EFORMAT for anything that is not a
// whole, sane image (empty, truncated, corrupt, not JPEG/PNG, over the pixel limit: the message
// says which); NT_ENOMEM. *out is zeroed on failure. Thread-safe (errors go to ctx).
nt_status nd_image_decode(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                          nd_image *out);

// The DCT-scaled JPEG decode keeps at least this many decoded pixels per output pixel along each
// axis, so that the area resize that follows still averages over 2x2 or more and the result stays
// within about one grey level of a full decode followed by the same resize.
#define ND_DCT_MARGIN 2

// Decodes for a target size tw x th: a JPEG whose size is at least 2 x ND_DCT_MARGIN times the
// target on both axes is decoded at a reduced DCT scale (1/2, 1/4 or 1/8: the smallest whose
// output is still >= ND_DCT_MARGIN x the target on both axes), which is several times faster for
// large originals. *out is then smaller than the file, but never smaller than ND_DCT_MARGIN x
// the target; PNGs and small JPEGs decode at full size. tw, th <= 0 mean "no target" (full size).
// Statuses as nd_image_decode.
nt_status nd_image_decode_for(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name, int tw,
                              int th, nd_image *out);

typedef enum {
    ND_RESIZE_NEAREST  = 0, // Keras's default: PIL NEAREST, bit for bit (its index rule below)
    ND_RESIZE_BILINEAR = 1, // half-pixel centres, 2x2 taps (no anti-aliasing)
    ND_RESIZE_AREA     = 2, // exact box average over the covered source area (anti-aliased)
} nd_resize;

// Decodes and resizes to exactly w x h (the loader's path): area mode uses the DCT-scaled decode
// of nd_image_decode_for, nearest and bilinear decode at full size so that they match PIL/Keras.
// Greyscale sources are resized on one channel and expanded at the end. Statuses as
// nd_image_decode, plus NT_EINVAL for a target outside 1..16384.
nt_status nd_image_decode_resized(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                                  int w, int h, nd_resize mode, nd_image *out);

// Reads a whole file into a malloc'd buffer (*buf, *len; free with free()). NT_EIO when it cannot
// be opened or read (the message has the path and errno text, and what to do for EACCES);
// NT_EFORMAT when it is not a regular file or is larger than max_bytes (0: ND_MAX_FILE_BYTES).
nt_status nd_file_read(nt_ctx *ctx, const char *path, size_t max_bytes, uint8_t **buf, size_t *len);
// Reads and decodes a file. NT_EIO when it cannot be read; otherwise as nd_image_decode.
nt_status nd_image_load(nt_ctx *ctx, const char *path, nd_image *out);
// _free(NULL) and freeing a zeroed image are fine; the image is zeroed afterwards.
void nd_image_free(nd_image *img);

// Parses "nearest", "bilinear" or "area". NT_EINVAL otherwise (the message lists the choices).
nt_status nd_resize_parse(nt_ctx *ctx, const char *s, nd_resize *out);
const char *nd_resize_name(nd_resize r);
// Resizes src to w x h without keeping the aspect ratio (as flow_from_directory does).
//   nearest:  PIL's rule: source x = floor(xo) with xo = sx/2 + x*sx accumulated in double
//             (sx = src.w / w), clamped; the same for y. Equal to PIL's resize(NEAREST).
//   bilinear: source x = (x + 0.5) sx - 0.5 clamped to the image, linear in both axes.
//   area:     each output pixel is the mean of the source area it covers, partial pixels
//             weighted by their coverage; exact on integer factors (the rounded mean of the
//             block), and the image mean is kept.
// Results are rounded to nearest. NT_EINVAL for a target outside 1..16384 or an empty source,
// NT_ENOMEM. *out is new (nd_image_free). Thread-safe.
nt_status nd_image_resize(nt_ctx *ctx, const nd_image *src, int w, int h, nd_resize mode,
                          nd_image *out);

#endif
