/*
 * nd.h: pneumo's data layer: image decoding (libjpeg-turbo, libpng) and resizing to the model's
 * input. Errors go to the nt_ctx as one line naming the file. Tests: tests/test_image.c.
 * Issue 3 extends this with augmentation, datasets, the S3 client and loader threads.
 */
#ifndef ND_H
#define ND_H

#include "libnet/nt.h"

#include <stddef.h>
#include <stdint.h>

// An 8-bit interleaved RGB image. Greyscale sources become three equal channels, as Keras's
// color_mode="rgb" does; alpha is dropped; 16-bit PNG samples are reduced to 8 bits.
typedef struct nd_image {
    int w, h;
    uint8_t *rgb; // w*h*3 bytes, owned (nd_image_free)
} nd_image;

// Hard limits for decoding untrusted input: a file over this many pixels is refused before
// any pixel memory is allocated.
#define ND_MAX_PIXELS (64 * 1024 * 1024)

// Decodes a JPEG or PNG held in memory; the type is told by its magic bytes, not its name.
// `name` is used in messages only. NT_EFORMAT for anything that is not a whole, sane image.
nt_status nd_image_decode(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                          nd_image *out);
// Reads and decodes a file. NT_EIO when it cannot be read.
nt_status nd_image_load(nt_ctx *ctx, const char *path, nd_image *out);
void nd_image_free(nd_image *img);

typedef enum {
    ND_RESIZE_NEAREST  = 0, // Keras's default (PIL NEAREST: src = floor((x + 0.5) * scale))
    ND_RESIZE_BILINEAR = 1, // half-pixel centres, 2x2 taps (no anti-aliasing)
    ND_RESIZE_AREA     = 2, // exact box average over the covered source area (anti-aliased)
} nd_resize;

// Parses "nearest", "bilinear" or "area".
nt_status nd_resize_parse(nt_ctx *ctx, const char *s, nd_resize *out);
const char *nd_resize_name(nd_resize r);
// Resizes src to w x h without keeping the aspect ratio (as flow_from_directory does).
nt_status nd_image_resize(nt_ctx *ctx, const nd_image *src, int w, int h, nd_resize mode,
                          nd_image *out);

#endif
