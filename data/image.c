/*
 * image.c: JPEG (libturbojpeg) and PNG (libpng) decoding to 8-bit RGB, DCT-scaled decoding for a
 * target size, and resizing (nearest as PIL, bilinear, area). Untrusted input: sizes are checked
 * from the header before allocation and every library error becomes a one-line NT_EFORMAT naming
 * the file. Not here: augmentation (augment.c), datasets (dataset.c). Tests: tests/test_image.c.
 */
#include "data/nd.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#define JMSG_LENGTH_MAX_ND 200 // libjpeg's JMSG_LENGTH_MAX

// A decoded image before it becomes RGB: c = 1 (grey) or 3 (RGB) interleaved channels.
typedef struct raw_image {
    int w, h, c;
    uint8_t *px; // owned
} raw_image;

void nd_image_free(nd_image *img)
{
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}

static nt_status check_dims(nt_ctx *ctx, const char *name, long w, long h)
{
    if (w < 1 || h < 1)
        return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: %ldx%ld pixels; the header is corrupt",
                             name, w, h);
    if (w > 65535 || h > 65535 || (long long)w * h > ND_MAX_PIXELS)
        return nt_ctx_seterr(ctx, NT_EFORMAT,
                             "image %s: %ldx%ld pixels; expected 1..65535 per side and at most %d "
                             "pixels (refused before decoding, as a possible decompression bomb)",
                             name, w, h, ND_MAX_PIXELS);
    return NT_OK;
}

// ---- JPEG ----

// Adobe-inverted CMYK (the samples are 255 - ink) to RGB with PIL's formula (Convert.c
// cmyk2rgb): R = (255-K) - round(C (255-K) / 255); in place, 4 bytes per pixel in, 3 out.
// PIL takes every CMYK/YCCK JPEG as inverted, with or without the Adobe APP14 marker (libjpeg
// writes that marker into every CMYK file it makes, and Photoshop's files are inverted), so
// Keras sees these values; Chrome and Firefox do the same.
static void cmyk_to_rgb(uint8_t *px, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int v[4];
        for (int k = 0; k < 4; k++)
            v[k] = 255 - px[4 * i + k];
        int nk = 255 - v[3];
        for (int k = 0; k < 3; k++) {
            int t                 = v[k] * nk + 128;
            int r                 = nk - (((t >> 8) + t) >> 8);
            px[3 * i + (size_t)k] = (uint8_t)(r < 0 ? 0 : r);
        }
    }
}

// The smallest power-of-two DCT scale (1, 1/2, 1/4, 1/8; SIMD-accelerated in libjpeg-turbo)
// whose output is still >= ND_DCT_MARGIN x the target on both axes.
static tjscalingfactor jpeg_pick_scale(int w, int h, int tw, int th)
{
    tjscalingfactor best = {1, 1};
    if (tw <= 0 || th <= 0) return best;
    int n                  = 0;
    tjscalingfactor *avail = tjGetScalingFactors(&n);
    for (int d = 2; d <= 8; d *= 2) {
        int ok = 0;
        for (int i = 0; avail && i < n; i++)
            if (avail[i].num == 1 && avail[i].denom == d) ok = 1;
        tjscalingfactor f = {1, d};
        if (!ok || TJSCALED(w, f) < ND_DCT_MARGIN * tw || TJSCALED(h, f) < ND_DCT_MARGIN * th)
            break;
        best = f;
    }
    return best;
}

// The frame size from the first SOFn segment before any scan: the header is walked here rather
// than trusted to TurboJPEG, which on a stream cut inside the header reports stale sizes.
// Returns 0 when there is no frame header.
static int jpeg_frame_size(const uint8_t *b, size_t len, int *w, int *h)
{
    size_t p = 2;
    while (p + 3 < len) {
        if (b[p] != 0xFF || b[p + 1] == 0xFF || b[p + 1] == 0) {
            p++;
            continue;
        }
        uint8_t m = b[p + 1];
        p += 2;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;
        if (m == 0xD9 || m == 0xDA) return 0;
        size_t seg = ((size_t)b[p] << 8) | b[p + 1];
        if (seg < 2 || p + seg > len) return 0;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (seg < 8) return 0;
            *h = (b[p + 3] << 8) | b[p + 4];
            *w = (b[p + 5] << 8) | b[p + 6];
            return 1;
        }
        p += seg;
    }
    return 0;
}

// Whether the stream reaches its EOI marker: a walk over the segments and the entropy-coded data
// (where 0xFF is always followed by 0x00 or a restart marker), so an EOI inside an embedded
// thumbnail does not count; stray bytes between segments are skipped, as libjpeg skips them.
static int jpeg_complete(const uint8_t *b, size_t len)
{
    size_t p = 2;
    while (p + 1 < len) {
        if (b[p] != 0xFF || b[p + 1] == 0xFF || b[p + 1] == 0) { // garbage or fill bytes
            p++;
            continue;
        }
        uint8_t m = b[p + 1];
        p += 2;
        if (m == 0xD9) return 1;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue; // no length
        if (p + 2 > len) return 0;
        size_t seg = ((size_t)b[p] << 8) | b[p + 1];
        if (seg < 2) return 0;
        p += seg;
        if (m != 0xDA) continue;
        // Entropy-coded data up to the next marker that is not a stuffed 0xFF or a restart.
        while (p + 1 < len &&
               !(b[p] == 0xFF && b[p + 1] != 0 && !(b[p + 1] >= 0xD0 && b[p + 1] <= 0xD7)))
            p++;
    }
    return 0;
}

// Decompresses with TurboJPEG, telling warnings from errors. TurboJPEG 2.1 reports "warning" for
// any failure once a warning has been seen, so: a first pass stops at the first warning; a fatal
// error there is corruption, a "Premature end" is truncation; otherwise the file is decoded again
// letting warnings pass, and it is accepted when the only message is still that first warning
// (libjpeg records the first warning and every error) and the stream reaches its EOI.
static nt_status jpeg_run(nt_ctx *ctx, tjhandle tj, const uint8_t *buf, size_t len,
                          const char *name, uint8_t *dst, int w, int h, int pf)
{
    const int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;
    if (tjDecompress2(tj, buf, (unsigned long)len, dst, w, 0, h, pf,
                      flags | TJFLAG_STOPONWARNING) == 0)
        return NT_OK;
    char first[JMSG_LENGTH_MAX_ND];
    snprintf(first, sizeof first, "%s", tjGetErrorStr2(tj));
    if (tjGetErrorCode(tj) == TJERR_FATAL)
        return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: corrupt JPEG (%s)", name, first);
    if (strstr(first, "Premature end") || !jpeg_complete(buf, len))
        return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: corrupt JPEG: the file ends early (%s)",
                             name, first);
    if (tjDecompress2(tj, buf, (unsigned long)len, dst, w, 0, h, pf, flags) == 0 ||
        strcmp(tjGetErrorStr2(tj), first) == 0)
        return NT_OK;
    return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: corrupt JPEG (%s)", name, tjGetErrorStr2(tj));
}

static nt_status decode_jpeg(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name, int tw,
                             int th, raw_image *out)
{
    tjhandle tj = tjInitDecompress();
    if (!tj) return nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot start the JPEG decoder", name);
    int w, h, fw, fh, sub, cs;
    nt_status s = NT_OK;
    if (!jpeg_frame_size(buf, len, &fw, &fh)) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "image %s: truncated or corrupt JPEG (no frame header before the image "
                          "data)",
                          name);
        goto done;
    }
    if ((s = check_dims(ctx, name, fw, fh)) != NT_OK) goto done;
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &sub, &cs) != 0) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: not a readable JPEG (%s)", name,
                          tjGetErrorStr2(tj));
        goto done;
    }
    if (w != fw || h != fh) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "image %s: corrupt JPEG (frame header says %dx%d, the "
                          "decoder %dx%d)",
                          name, fw, fh, w, h);
        goto done;
    }
    tjscalingfactor f = jpeg_pick_scale(w, h, tw, th);
    int sw = TJSCALED(w, f), sh = TJSCALED(h, f);
    // TurboJPEG converts grey, YCbCr and RGB itself; CMYK/YCCK only come out as CMYK.
    int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    int pf   = cs == TJCS_GRAY ? TJPF_GRAY : cmyk ? TJPF_CMYK : TJPF_RGB;
    int bpp  = tjPixelSize[pf];
    out->px  = malloc((size_t)sw * (size_t)sh * (size_t)bpp);
    if (!out->px) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot allocate %dx%d pixels (%zu bytes)",
                          name, sw, sh, (size_t)sw * (size_t)sh * (size_t)bpp);
        goto done;
    }
    // Warnings such as extraneous bytes are accepted (as PIL does); a fatal error or a file
    // that ends early (the rest would be grey) is not.
    if ((s = jpeg_run(ctx, tj, buf, len, name, out->px, sw, sh, pf)) != NT_OK) {
        free(out->px);
        out->px = NULL;
        goto done;
    }
    if (cmyk) cmyk_to_rgb(out->px, (size_t)sw * sh);
    out->w = sw, out->h = sh, out->c = cs == TJCS_GRAY ? 1 : 3;
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
    if (n > src->len - src->pos) png_error(png, "the file ends early");
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
                            raw_image *out)
{
    png_err err = {{0}};
    png_src src = {buf, len, 0};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    png_infop info           = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile pix    = NULL;
    png_bytep *volatile rows = NULL;
    volatile int rows_done   = 0;
    volatile png_uint_32 w = 0, h = 0;
    volatile int c = 3;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, NULL);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot start the PNG decoder", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        if (rows_done) goto ok; // only what follows the pixels (e.g. IEND) is missing or bad
        free(pix);
        return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: corrupt PNG (%s)", name, err.msg);
    }
    png_set_read_fn(png, &src, png_read_mem);
    // Sizes are judged by check_dims below, with a message that names the limit.
    png_set_user_limits(png, 0x7fffffffU, 0x7fffffffU);
    png_read_info(png, info);
    w           = png_get_image_width(png, info);
    h           = png_get_image_height(png, info);
    nt_status s = check_dims(ctx, name, (long)w, (long)h);
    if (s != NT_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return s;
    }
    // Everything to 8 bits, grey or RGB: expand palettes, low-depth grey and tRNS, scale 16 bits
    // with rounding, drop alpha (PIL's convert("RGB") does not composite either).
    int ct = png_get_color_type(png, info);
    c      = (ct & PNG_COLOR_MASK_COLOR) ? 3 : 1;
    png_set_expand(png);
    png_set_scale_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * (size_t)c)
        png_error(png, "unexpected row layout after conversion to 8 bits");
    pix  = malloc((size_t)w * h * (size_t)c);
    rows = malloc(sizeof(png_bytep) * h);
    if (!pix || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = pix + (size_t)y * w * (size_t)c;
    png_read_image(png, rows);
    rows_done = 1;
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
ok:
    out->px = pix;
    out->w  = (int)w;
    out->h  = (int)h;
    out->c  = c;
    return NT_OK;
}

// ---- dispatch ----

static nt_status decode_raw(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name, int tw,
                            int th, raw_image *out)
{
    memset(out, 0, sizeof(*out));
    if (!buf && len) return nt_ctx_seterr(ctx, NT_EINVAL, "image %s: NULL buffer", name);
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF)
        return decode_jpeg(ctx, buf, len, name, tw, th, out);
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (len >= 8 && memcmp(buf, png_magic, 8) == 0) return decode_png(ctx, buf, len, name, out);
    const char *what = "something else (unknown magic bytes)";
    if (len == 0)
        what = "an empty file";
    else if (len >= 2 && buf[0] == 'B' && buf[1] == 'M')
        what = "a BMP file (not supported: convert it to PNG)";
    else if (len >= 4 && (!memcmp(buf, "II*\0", 4) || !memcmp(buf, "MM\0*", 4)))
        what = "a TIFF file (not supported: convert it to PNG)";
    else if (len >= 2 && buf[0] == 'P' && buf[1] >= '1' && buf[1] <= '7')
        what = "a PNM file (not supported: convert it to PNG)";
    else if (len >= 8 && (buf[0] == 0xFF && buf[1] == 0xD8))
        what = "a JPEG start without a marker after it";
    return nt_ctx_seterr(ctx, NT_EFORMAT, "image %s: expected a JPEG or PNG file, got %s", name,
                         what);
}

// Grey to RGB, reusing the buffer (grown to w*h*3).
static nt_status raw_to_rgb(nt_ctx *ctx, const char *name, raw_image *r, nd_image *out)
{
    size_t n = (size_t)r->w * r->h;
    if (r->c == 1) {
        uint8_t *p = realloc(r->px, n * 3);
        if (!p) {
            free(r->px);
            return nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot allocate %zu bytes", name,
                                 n * 3);
        }
        for (size_t i = n; i-- > 0;)
            p[3 * i] = p[3 * i + 1] = p[3 * i + 2] = p[i];
        r->px = p;
    }
    out->rgb = r->px;
    out->w   = r->w;
    out->h   = r->h;
    return NT_OK;
}

nt_status nd_image_decode_for(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name, int tw,
                              int th, nd_image *out)
{
    memset(out, 0, sizeof(*out));
    raw_image r;
    nt_status s = decode_raw(ctx, buf, len, name, tw, th, &r);
    if (s != NT_OK) return s;
    return raw_to_rgb(ctx, name, &r, out);
}

nt_status nd_image_decode(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                          nd_image *out)
{
    return nd_image_decode_for(ctx, buf, len, name, 0, 0, out);
}

nt_status nd_file_read(nt_ctx *ctx, const char *path, size_t max_bytes, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (!max_bytes) max_bytes = ND_MAX_FILE_BYTES;
    FILE *f = fopen(path, "rb");
    if (!f)
        return nt_ctx_seterr(ctx, NT_EIO, "%s: cannot open: %s%s", path, strerror(errno),
                             errno == EACCES ? " (check the file's permissions)" : "");
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return nt_ctx_seterr(ctx, NT_EFORMAT, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return nt_ctx_seterr(ctx, NT_EFORMAT, "%s: %lld bytes, over the limit of %zu", path,
                             (long long)st.st_size, max_bytes);
    }
    // The size from stat is a hint: the file may change while it is read.
    size_t cap = (size_t)st.st_size + 1, n = 0;
    uint8_t *p = malloc(cap);
    if (!p) {
        fclose(f);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "%s: cannot allocate %zu bytes", path, cap);
    }
    for (;;) {
        n += fread(p + n, 1, cap - n, f);
        if (n < cap || ferror(f)) break;
        if (cap > max_bytes) {
            free(p);
            fclose(f);
            return nt_ctx_seterr(ctx, NT_EFORMAT, "%s: larger than the limit of %zu bytes", path,
                                 max_bytes);
        }
        uint8_t *q = realloc(p, cap * 2);
        if (!q) {
            free(p);
            fclose(f);
            return nt_ctx_seterr(ctx, NT_ENOMEM, "%s: cannot allocate %zu bytes", path, cap * 2);
        }
        p = q, cap *= 2;
    }
    int bad = ferror(f);
    int e   = errno;
    fclose(f);
    if (bad) {
        free(p);
        return nt_ctx_seterr(ctx, NT_EIO, "%s: read error: %s", path, strerror(e));
    }
    *buf = p;
    *len = n;
    return NT_OK;
}

nt_status nd_image_load(nt_ctx *ctx, const char *path, nd_image *out)
{
    memset(out, 0, sizeof(*out));
    uint8_t *buf;
    size_t len;
    nt_status s = nd_file_read(ctx, path, 0, &buf, &len);
    if (s != NT_OK) return s;
    s = nd_image_decode(ctx, buf, len, path, out);
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

static inline uint8_t round_u8(float v)
{
    v += 0.5f;
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
}

// PIL's nearest index rule (ImagingScaleAffine): xo starts at s/2 and grows by s, accumulated in
// double; the index is its integer part. Matching the accumulation (not (x + 0.5) * s) is what
// makes it agree with PIL where a product lands exactly on an integer.
static void nearest_table(int n_out, int n_src, int *idx)
{
    double s = (double)n_src / n_out, xo = s * 0.5;
    for (int x = 0; x < n_out; x++, xo += s) {
        int i  = (int)xo;
        idx[x] = i < 0 ? 0 : i > n_src - 1 ? n_src - 1 : i;
    }
}

// Area taps of output pixel o along an axis of scale s over n source pixels: source pixels
// [i0, i0 + cnt) weighted by their coverage (1 inside, fractions at the ends; unnormalised so
// that integer factors stay exact).
static int area_taps(int o, double s, int n, int *i0, float *wt)
{
    double lo = o * s, hi = (o + 1) * s;
    int a = (int)lo, b = (int)hi;
    if (b > n - 1) b = n - 1;
    if ((double)b == hi && b > a) b--;
    if (a > b) a = b;
    for (int i = a; i <= b; i++) {
        double l = i > lo ? i : lo, r = i + 1 < hi ? i + 1 : hi;
        wt[i - a] = (float)(r > l ? r - l : 0);
    }
    if (a == b) wt[0] = (float)(hi - lo);
    *i0 = a;
    return b - a + 1;
}

// Resizes c-channel interleaved src (sw x sh) into dst (dw x dh).
static nt_status resize_raw(nt_ctx *ctx, const uint8_t *S, int sw, int sh, int c, uint8_t *D,
                            int dw, int dh, nd_resize mode)
{
    const size_t srow = (size_t)sw * c, drow = (size_t)dw * c;
    if (sw == dw && sh == dh) {
        memcpy(D, S, srow * sh);
        return NT_OK;
    }
    if (mode == ND_RESIZE_NEAREST) {
        int *xi = malloc(sizeof(int) * ((size_t)dw + dh)), *yi = xi + dw;
        if (!xi) return nt_ctx_seterr(ctx, NT_ENOMEM, "resize: out of memory");
        nearest_table(dw, sw, xi);
        nearest_table(dh, sh, yi);
        for (int y = 0; y < dh; y++) {
            const uint8_t *r = S + (size_t)yi[y] * srow;
            uint8_t *o       = D + (size_t)y * drow;
            for (int x = 0; x < dw; x++)
                for (int k = 0; k < c; k++)
                    o[(size_t)x * c + k] = r[(size_t)xi[x] * c + k];
        }
        free(xi);
        return NT_OK;
    }
    if (mode == ND_RESIZE_BILINEAR) {
        int *x0   = malloc(sizeof(int) * 2 * ((size_t)dw + dh));
        float *ax = malloc(sizeof(float) * ((size_t)dw + dh));
        if (!x0 || !ax) {
            free(x0), free(ax);
            return nt_ctx_seterr(ctx, NT_ENOMEM, "resize: out of memory");
        }
        int *x1 = x0 + dw, *y0 = x1 + dw, *y1 = y0 + dh;
        float *ay = ax + dw;
        for (int pass = 0; pass < 2; pass++) {
            int n = pass ? dh : dw, ns = pass ? sh : sw;
            int *i0 = pass ? y0 : x0, *i1 = pass ? y1 : x1;
            float *a = pass ? ay : ax;
            double s = (double)ns / n;
            for (int o = 0; o < n; o++) {
                double f = (o + 0.5) * s - 0.5;
                if (f < 0) f = 0;
                int i = (int)f;
                if (i > ns - 1) i = ns - 1;
                i0[o] = i;
                i1[o] = i + 1 < ns ? i + 1 : i;
                a[o]  = (float)(f - i);
            }
        }
        for (int y = 0; y < dh; y++) {
            const uint8_t *r0 = S + (size_t)y0[y] * srow, *r1 = S + (size_t)y1[y] * srow;
            uint8_t *o = D + (size_t)y * drow;
            float b    = ay[y];
            for (int x = 0; x < dw; x++) {
                float a = ax[x];
                for (int k = 0; k < c; k++) {
                    float p00 = r0[(size_t)x0[x] * c + k], p01 = r0[(size_t)x1[x] * c + k];
                    float p10 = r1[(size_t)x0[x] * c + k], p11 = r1[(size_t)x1[x] * c + k];
                    float top = p00 + a * (p01 - p00), bot = p10 + a * (p11 - p10);
                    o[(size_t)x * c + k] = round_u8(top + b * (bot - top));
                }
            }
        }
        free(x0), free(ax);
        return NT_OK;
    }
    // Area: a horizontal pass into floats (all source rows), then a vertical one; the weights are
    // coverages, and each output is divided once by the covered area at the end.
    double sx = (double)sw / dw, sy = (double)sh / dh;
    int mx = (int)sx + 2, my = (int)sy + 2;
    int *xi0   = malloc(sizeof(int) * ((size_t)dw * 2 + dh * 2));
    float *xw  = malloc(sizeof(float) * ((size_t)dw * mx + (size_t)dh * my + dw + dh));
    float *tmp = malloc(sizeof(float) * ((size_t)sh * drow + drow));
    if (!xi0 || !xw || !tmp) {
        free(xi0), free(xw), free(tmp);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "resize: out of memory for %dx%d -> %dx%d", sw, sh, dw,
                             dh);
    }
    int *xn = xi0 + dw, *yi0 = xn + dw, *yn = yi0 + dh;
    float *yw = xw + (size_t)dw * mx, *xsum = yw + (size_t)dh * my, *ysum = xsum + dw;
    for (int x = 0; x < dw; x++) {
        xn[x]   = area_taps(x, sx, sw, &xi0[x], xw + (size_t)x * mx);
        xsum[x] = 0;
        for (int t = 0; t < xn[x]; t++)
            xsum[x] += xw[(size_t)x * mx + t];
    }
    for (int y = 0; y < dh; y++) {
        yn[y]   = area_taps(y, sy, sh, &yi0[y], yw + (size_t)y * my);
        ysum[y] = 0;
        for (int t = 0; t < yn[y]; t++)
            ysum[y] += yw[(size_t)y * my + t];
    }
    for (int y = 0; y < sh; y++) {
        const uint8_t *r = S + (size_t)y * srow;
        float *o         = tmp + (size_t)y * drow;
        for (int x = 0; x < dw; x++) {
            const float *w   = xw + (size_t)x * mx;
            const uint8_t *p = r + (size_t)xi0[x] * c;
            if (c == 1) {
                float acc = 0;
                for (int t = 0; t < xn[x]; t++)
                    acc += w[t] * p[t];
                o[x] = acc;
            } else {
                float a0 = 0, a1 = 0, a2 = 0;
                for (int t = 0; t < xn[x]; t++) {
                    a0 += w[t] * p[3 * t];
                    a1 += w[t] * p[3 * t + 1];
                    a2 += w[t] * p[3 * t + 2];
                }
                o[3 * x] = a0, o[3 * x + 1] = a1, o[3 * x + 2] = a2;
            }
        }
    }
    float *acc = tmp + (size_t)sh * drow;
    for (int y = 0; y < dh; y++) {
        const float *w = yw + (size_t)y * my;
        memset(acc, 0, sizeof(float) * drow);
        for (int t = 0; t < yn[y]; t++) {
            const float *r = tmp + (size_t)(yi0[y] + t) * drow;
            for (size_t i = 0; i < drow; i++)
                acc[i] += w[t] * r[i];
        }
        uint8_t *o = D + (size_t)y * drow;
        for (int x = 0; x < dw; x++) {
            float area = xsum[x] * ysum[y];
            for (int k = 0; k < c; k++)
                o[(size_t)x * c + k] = round_u8(acc[(size_t)x * c + k] / area);
        }
    }
    free(xi0), free(xw), free(tmp);
    return NT_OK;
}

static nt_status check_target(nt_ctx *ctx, int w, int h)
{
    if (w < 1 || h < 1 || w > 16384 || h > 16384)
        return nt_ctx_seterr(ctx, NT_EINVAL, "resize: target %dx%d out of range 1..16384", w, h);
    return NT_OK;
}

nt_status nd_image_resize(nt_ctx *ctx, const nd_image *src, int w, int h, nd_resize mode,
                          nd_image *out)
{
    memset(out, 0, sizeof(*out));
    nt_status s = check_target(ctx, w, h);
    if (s != NT_OK) return s;
    if (!src || !src->rgb || src->w < 1 || src->h < 1)
        return nt_ctx_seterr(ctx, NT_EINVAL, "resize: empty source image");
    out->rgb = malloc((size_t)w * h * 3);
    if (!out->rgb)
        return nt_ctx_seterr(ctx, NT_ENOMEM, "resize: cannot allocate %zu bytes",
                             (size_t)w * h * 3);
    s = resize_raw(ctx, src->rgb, src->w, src->h, 3, out->rgb, w, h, mode);
    if (s != NT_OK) {
        nd_image_free(out);
        return s;
    }
    out->w = w, out->h = h;
    return NT_OK;
}

nt_status nd_image_decode_resized(nt_ctx *ctx, const uint8_t *buf, size_t len, const char *name,
                                  int w, int h, nd_resize mode, nd_image *out)
{
    memset(out, 0, sizeof(*out));
    nt_status s = check_target(ctx, w, h);
    if (s != NT_OK) return s;
    raw_image r;
    int scaled = mode == ND_RESIZE_AREA;
    if ((s = decode_raw(ctx, buf, len, name, scaled ? w : 0, scaled ? h : 0, &r)) != NT_OK)
        return s;
    raw_image d = {w, h, r.c, malloc((size_t)w * h * (size_t)r.c)};
    if (!d.px) {
        free(r.px);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "image %s: cannot allocate %dx%d pixels", name, w, h);
    }
    s = resize_raw(ctx, r.px, r.w, r.h, r.c, d.px, w, h, mode);
    free(r.px);
    if (s != NT_OK) {
        free(d.px);
        return s;
    }
    return raw_to_rgb(ctx, name, &d, out);
}
