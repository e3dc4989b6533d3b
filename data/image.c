/*
 * image.c: JPEG (libturbojpeg) and PNG (libpng) decoding to 8-bit RGB, and resizing.
 * Untrusted input: sizes are checked before allocation and every library error becomes a
 * one-line NT_EFORMAT naming the file. Tests: tests/test_image.c.
 */
#include "data/nd.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

void nd_image_free(nd_image *img)
{
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}

static nt_status check_dims(nt_ctx *ctx, const char *name, long w, long h)
{
    if (w < 1 || h < 1 || w > 65535 || h > 65535 || (long long)w * h > ND_MAX_PIXELS)
        return nt_ctx_seterr(ctx, NT_EFORMAT,
                             "image %s: %ldx%ld pixels; expected 1..65535 per side and at most %d "
                             "pixels",
                             name, w, h, ND_MAX_PIXELS);
    return NT_OK;
}

// ---- JPEG ----

static nt_status decode_jpeg(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                             nd_image *out)
{
    tjhandle tj = tjInitDecompress();
    if (!tj) return nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot start the JPEG decoder", name);
    int w, h, sub, cs;
    nt_status s = NT_OK;
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &sub, &cs) != 0) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: not a readable JPEG (%s)", name,
                          tjGetErrorStr2(tj));
        goto done;
    }
    if ((s = check_dims(ctx, name, w, h)) != NT_OK) goto done;
    out->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!out->rgb) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot allocate %dx%d pixels", name, w, h);
        goto done;
    }
    // libjpeg-turbo converts greyscale, YCbCr and CMYK/YCCK to RGB itself.
    // Warnings such as extraneous bytes are accepted (as PIL does); a fatal error or a file
    // that ends early (the rest would be grey) is not.
    if (tjDecompress2(tj, buf, (unsigned long)len, out->rgb, w, 0, h, TJPF_RGB,
                      TJFLAG_ACCURATEDCT) != 0 &&
        (tjGetErrorCode(tj) == TJERR_FATAL || strstr(tjGetErrorStr2(tj), "Premature end"))) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: corrupt JPEG (%s)", name, tjGetErrorStr2(tj));
        nd_image_free(out);
        goto done;
    }
    out->w = w, out->h = h;
done:
    tjDestroy(tj);
    return s;
}

// ---- PNG ----

typedef struct png_src {
    const uint8_t *buf;
    size_t len, pos;
} png_src;

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n)
{
    png_src *src = png_get_io_ptr(png);
    if (n > src->len - src->pos) png_error(png, "file is truncated");
    memcpy(dst, src->buf + src->pos, n);
    src->pos += n;
}

typedef struct png_err {
    char msg[200];
} png_err;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_err *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {}

static nt_status decode_png(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                            nd_image *out)
{
    png_err err = {{0}};
    png_src src = {buf, len, 0};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    png_infop info           = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile pix    = NULL;
    png_bytep *volatile rows = NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, NULL);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot start the PNG decoder", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pix);
        free(rows);
        return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: corrupt PNG (%s)", name, err.msg);
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, 65535, 65535);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    nt_status s = check_dims(ctx, name, (long)w, (long)h);
    if (s != NT_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return s;
    }
    // Everything to 8-bit RGB: expand palettes and low-depth grey, strip 16 bits and alpha,
    // grey to RGB.
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        png_error(png, "unexpected row layout after conversion to RGB");
    pix  = malloc((size_t)w * h * 3);
    rows = malloc(sizeof(png_bytep) * h);
    if (!pix || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = pix + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    out->rgb = pix;
    out->w   = (int)w;
    out->h   = (int)h;
    return NT_OK;
}

nt_status nd_image_decode(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                          nd_image *out)
{
    memset(out, 0, sizeof(*out));
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF)
        return decode_jpeg(ctx, buf, len, name, out);
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (len >= 8 && memcmp(buf, png_magic, 8) == 0) return decode_png(ctx, buf, len, name, out);
    return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: expected a JPEG or PNG file, got %s", name,
                         len == 0 ? "an empty file" : "something else (unknown magic bytes)");
}

nt_status nd_image_load(nt_ctx *ctx, const char *path, nd_image *out)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "rb");
    if (!f) return nt_ctx_seterr(ctx, NT_EIO, "image %s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap         = cap ? 2 * cap : 1 << 16;
            uint8_t *nb = cap > ((size_t)512 << 20) ? NULL : realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: larger than 512 MB", path);
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return nt_ctx_seterr(ctx, NT_EIO, "image %s: read error", path);
    }
    nt_status s = nd_image_decode(ctx, buf, len, path, out);
    free(buf);
    return s;
}

// ---- resizing ----

nt_status nd_resize_parse(nt_ctx *ctx, const char *s, nd_resize *out)
{
    for (int r = ND_RESIZE_NEAREST; r <= ND_RESIZE_AREA; r++)
        if (s && strcmp(s, nd_resize_name((nd_resize)r)) == 0) {
            *out = (nd_resize)r;
            return NT_OK;
        }
    return nt_ctx_seterr(ctx, NT_EINVAL, "resize: expected nearest, bilinear or area, got \"%s\"",
                         s ? s : "");
}

const char *nd_resize_name(nd_resize r)
{
    switch (r) {
    case ND_RESIZE_NEAREST:
        return "nearest";
    case ND_RESIZE_BILINEAR:
        return "bilinear";
    case ND_RESIZE_AREA:
        return "area";
    }
    return "?";
}

static uint8_t clamp_u8(double v)
{
    v = v + 0.5;
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
}

// Area weights of source pixels [i0, i1) for output pixel o along one axis of scale s.
static void area_span(int o, double s, int n, int *i0, int *i1, double *a0, double *a1)
{
    double lo = o * s, hi = (o + 1) * s;
    *i0 = (int)lo;
    *i1 = (int)hi;
    if (*i1 > n - 1) *i1 = n - 1;
    if ((double)*i1 == hi && *i1 > *i0) (*i1)--;
    *a0 = (*i0 + 1) - lo; // coverage of the first source pixel
    *a1 = hi - *i1;       // coverage of the last
    if (*i0 == *i1) *a0 = *a1 = hi - lo;
}

nt_status nd_image_resize(nt_ctx *ctx, const nd_image *src, int w, int h, nd_resize mode,
                          nd_image *out)
{
    memset(out, 0, sizeof(*out));
    if (w < 1 || h < 1 || w > 16384 || h > 16384)
        return nt_ctx_seterr(ctx, NT_EINVAL, "resize: target %dx%d out of range 1..16384", w, h);
    out->rgb = malloc((size_t)w * h * 3);
    if (!out->rgb) return nt_ctx_seterr(ctx, NT_ENOMEM, "resize: out of memory");
    out->w = w, out->h = h;
    double sx = (double)src->w / w, sy = (double)src->h / h;
    const uint8_t *S = src->rgb;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *o = out->rgb + ((size_t)y * w + x) * 3;
            if (mode == ND_RESIZE_NEAREST) {
                int ix = (int)((x + 0.5) * sx), iy = (int)((y + 0.5) * sy);
                if (ix > src->w - 1) ix = src->w - 1;
                if (iy > src->h - 1) iy = src->h - 1;
                memcpy(o, S + ((size_t)iy * src->w + ix) * 3, 3);
            } else if (mode == ND_RESIZE_BILINEAR) {
                double fx = (x + 0.5) * sx - 0.5, fy = (y + 0.5) * sy - 0.5;
                if (fx < 0) fx = 0;
                if (fy < 0) fy = 0;
                int x0 = (int)fx, y0 = (int)fy;
                int x1 = x0 + 1 < src->w ? x0 + 1 : x0, y1 = y0 + 1 < src->h ? y0 + 1 : y0;
                double ax = fx - x0, ay = fy - y0;
                for (int c = 0; c < 3; c++) {
                    double p00 = S[((size_t)y0 * src->w + x0) * 3 + c];
                    double p01 = S[((size_t)y0 * src->w + x1) * 3 + c];
                    double p10 = S[((size_t)y1 * src->w + x0) * 3 + c];
                    double p11 = S[((size_t)y1 * src->w + x1) * 3 + c];
                    o[c]       = clamp_u8((1 - ay) * ((1 - ax) * p00 + ax * p01) +
                                          ay * ((1 - ax) * p10 + ax * p11));
                }
            } else {
                int x0, x1, y0, y1;
                double ax0, ax1, ay0, ay1;
                area_span(x, sx, src->w, &x0, &x1, &ax0, &ax1);
                area_span(y, sy, src->h, &y0, &y1, &ay0, &ay1);
                double acc[3] = {0, 0, 0}, wsum = 0;
                for (int iy = y0; iy <= y1; iy++) {
                    double wy = iy == y0 ? ay0 : iy == y1 ? ay1 : 1.0;
                    for (int ix = x0; ix <= x1; ix++) {
                        double wx        = ix == x0 ? ax0 : ix == x1 ? ax1 : 1.0;
                        const uint8_t *p = S + ((size_t)iy * src->w + ix) * 3;
                        for (int c = 0; c < 3; c++)
                            acc[c] += wx * wy * p[c];
                        wsum += wx * wy;
                    }
                }
                for (int c = 0; c < 3; c++)
                    o[c] = clamp_u8(acc[c] / wsum);
            }
        }
    }
    return NT_OK;
}
