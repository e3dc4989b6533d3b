/*
 * test_image.c: image decoding and resizing (data/image.c). The corpus tests/corpus/ (made by
 * tests/gen_corpus.py) against PIL's decoding in tests/fixtures/corpus_expected.bin: every good
 * file pixel for pixel, every bad_* file refused with NT_EFORMAT and a reason; prefixes and byte
 * flips of good files never crash; YCCK made here with TurboJPEG; resizing (nearest equal to PIL,
 * bilinear on known values and near PIL on upscales, area exact on integer factors and keeping
 * the mean); the DCT-scaled decode against a full decode + area resize.
 */
#include "data/nd.h"
#include "tests/check.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

// Decoders are exact: the same libjpeg-turbo IDCT and upsampling as PIL's, libpng's expansions.
#define TOL_DECODE 0.0
// PIL's bilinear uses 22-bit fixed-point weights, pneumo float: at most one level apart.
#define TOL_BILINEAR_PIL 1.0
// DCT-scaled decode vs full decode, both area-resized to 224: the reduced IDCT (1/2 for the
// ~1300 px sample) is not an exact box filter and rings at sharp edges (burned-in letters, the
// film's border). Measured on the 16 val originals: mean 0.12..0.57, max 7..26 levels, a few
// pixels per image over 8.
#define TOL_DCT_MEAN  0.5
#define TOL_DCT_OVER8 0.002 /* fraction of values more than 8 levels apart (sample: 0.0003) */
#define TOL_DCT_MAX   32.0

static const char *corpus_dir(void)
{
    const char *d = getenv("PNEUMO_CORPUS");
    return d ? d : "tests/corpus";
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Sorted names of the corpus files; NULL when the folder is missing.
static char **list_corpus(int *n)
{
    DIR *d = opendir(corpus_dir());
    if (!d) return NULL;
    char **v = NULL;
    int cap  = 0;
    *n       = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (*n == cap) v = realloc(v, sizeof(char *) * (size_t)(cap = cap ? 2 * cap : 64));
        v[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(v, (size_t)*n, sizeof(char *), cmp_str);
    return v;
}

static float *to_f32(const uint8_t *p, int64_t n)
{
    float *f = tu_zeros_f32(n);
    for (int64_t i = 0; i < n; i++)
        f[i] = p[i];
    return f;
}

static int is_grey(const nd_image *im)
{
    for (int64_t i = 0; i < (int64_t)im->w * im->h; i++)
        if (im->rgb[3 * i] != im->rgb[3 * i + 1] || im->rgb[3 * i] != im->rgb[3 * i + 2]) return 0;
    return 1;
}

static const uint8_t *px(const nd_image *im, int x, int y)
{
    return im->rgb + ((size_t)y * im->w + x) * 3;
}

static int near_rgb(const uint8_t *p, int r, int g, int b, int tol)
{
    return abs(p[0] - r) <= tol && abs(p[1] - g) <= tol && abs(p[2] - b) <= tol;
}

// ---- the corpus ----

static void test_corpus(nt_ctx *ctx, const fx_file *fx)
{
    int n;
    char **names = list_corpus(&n);
    CHECK_MSG(names != NULL, "no corpus at %s (run tests/gen_corpus.py)", corpus_dir());
    if (!names) return;
    int ngood = 0, nbad = 0;
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", corpus_dir(), names[i]);
        int bad = strncmp(names[i], "bad_", 4) == 0;
        nd_image im;
        nt_status s = nd_image_load(ctx, path, &im);
        if (bad) {
            nbad++;
            CHECK_MSG(s == NT_EFORMAT, "%s: expected NT_EFORMAT, got %s", names[i],
                      nt_status_str(s));
            CHECK_MSG(im.rgb == NULL && im.w == 0, "%s: output not cleared", names[i]);
            CHECK_MSG(strstr(nt_ctx_errmsg(ctx), names[i]) != NULL, "%s: message \"%s\"", names[i],
                      nt_ctx_errmsg(ctx));
            printf("ok   refused %-32s %s\n", names[i], nt_ctx_errmsg(ctx));
            if (strstr(names[i], "bomb"))
                CHECK_MSG(strstr(nt_ctx_errmsg(ctx), "decompression bomb") != NULL, "%s: %s",
                          names[i], nt_ctx_errmsg(ctx));
            // The other entry points refuse it the same way.
            size_t len;
            uint8_t *buf = tu_slurp(path, &len);
            CHECK(buf != NULL);
            if (buf) {
                nd_image r;
                CHECK(nd_image_decode_resized(ctx, buf, len, names[i], 8, 8, ND_RESIZE_AREA, &r) ==
                      NT_EFORMAT);
                CHECK(nd_image_decode_for(ctx, buf, len, names[i], 4, 4, &r) == NT_EFORMAT);
                free(buf);
            }
            continue;
        }
        ngood++;
        CHECK_MSG(s == NT_OK, "%s: %s", names[i], nt_ctx_errmsg(ctx));
        if (s != NT_OK) continue;
        char tname[300];
        snprintf(tname, sizeof tname, "img/%s", names[i]);
        const fx_tensor *t = fx_find(fx, tname);
        CHECK_MSG(t != NULL, "no expected decoding %s in the fixture", tname);
        if (t) {
            CHECK_MSG(t->ndim == 3 && t->shape[0] == im.h && t->shape[1] == im.w &&
                          t->shape[2] == 3,
                      "%s: decoded %dx%d", names[i], im.w, im.h);
            if (t->ndim == 3 && t->shape[0] == im.h && t->shape[1] == im.w) {
                float *got = to_f32(im.rgb, (int64_t)im.w * im.h * 3);
                CHECK_CLOSE(names[i], got, t->data, t->numel, TOL_DECODE, 0);
                free(got);
            }
        }
        if (strstr(names[i], "grey"))
            CHECK_MSG(is_grey(&im), "%s: greyscale must become 3 equal channels", names[i]);
        nd_image_free(&im);
    }
    printf("corpus: %d good files, %d bad files\n", ngood, nbad);
    CHECK(ngood >= 20 && nbad >= 15);
    // Every expected decoding belongs to a file that is there.
    for (int i = 0; i < fx_count(fx); i++) {
        const fx_tensor *t = fx_at(fx, i);
        if (strncmp(t->name, "img/", 4)) continue;
        int found = 0;
        for (int k = 0; k < n; k++)
            found |= strcmp(names[k], t->name + 4) == 0;
        CHECK_MSG(found, "fixture %s has no corpus file", t->name);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

// Relations that do not need PIL: CMYK inks decode to their colours.
static void test_cmyk(nt_ctx *ctx)
{
    const char *files[] = {"cmyk_adobe.jpg", "cmyk_noadobe.jpg"};
    for (int f = 0; f < 2; f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", corpus_dir(), files[f]);
        nd_image im;
        CHECK_MSG(nd_image_load(ctx, path, &im) == NT_OK, "%s", nt_ctx_errmsg(ctx));
        if (!im.rgb) continue;
        CHECK(im.w == 16 && im.h == 16);
        CHECK_MSG(near_rgb(px(&im, 3, 3), 255, 0, 0, 2), "%s: red ink decodes as %d,%d,%d",
                  files[f], px(&im, 3, 3)[0], px(&im, 3, 3)[1], px(&im, 3, 3)[2]);
        CHECK_MSG(near_rgb(px(&im, 12, 3), 0, 255, 0, 2), "%s: green", files[f]);
        CHECK_MSG(near_rgb(px(&im, 3, 12), 0, 0, 255, 2), "%s: blue", files[f]);
        CHECK_MSG(near_rgb(px(&im, 12, 12), 127, 127, 127, 2), "%s: K=128 is mid grey", files[f]);
        nd_image_free(&im);
    }
    // YCCK: TurboJPEG compresses CMYK pixels as YCCK with an Adobe marker (transform 2).
    // Samples are stored inverted (255 - ink).
    enum { W = 32, H = 16 };
    uint8_t cmyk[W * H * 4];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = cmyk + (y * W + x) * 4;
            int left   = x < W / 2;
            // left: red ink (M + Y); right: cyan at half black
            uint8_t ink[4] = {left ? 0 : 255, left ? 255 : 0, left ? 255 : 0, left ? 0 : 128};
            for (int k = 0; k < 4; k++)
                p[k] = (uint8_t)(255 - ink[k]);
        }
    tjhandle tj       = tjInitCompress();
    unsigned char *jb = NULL;
    unsigned long jl  = 0;
    CHECK(tj && tjCompress2(tj, cmyk, W, 0, H, TJPF_CMYK, &jb, &jl, TJSAMP_444, 98, 0) == 0);
    tjDestroy(tj);
    if (!jb) return;
    nd_image im;
    CHECK_MSG(nd_image_decode(ctx, jb, jl, "ycck", &im) == NT_OK, "%s", nt_ctx_errmsg(ctx));
    if (im.rgb) {
        CHECK_MSG(near_rgb(px(&im, 4, 8), 255, 0, 0, 6), "YCCK red decodes as %d,%d,%d",
                  px(&im, 4, 8)[0], px(&im, 4, 8)[1], px(&im, 4, 8)[2]);
        // cyan at K=128: R = 127 - 127 = 0, G = B = 127
        CHECK_MSG(near_rgb(px(&im, 27, 8), 0, 127, 127, 6), "YCCK cyan decodes as %d,%d,%d",
                  px(&im, 27, 8)[0], px(&im, 27, 8)[1], px(&im, 27, 8)[2]);
    }
    nd_image_free(&im);
    tjFree(jb);
}

// Every prefix and many single-byte corruptions of good files: NT_OK or NT_EFORMAT, no crash
// (make asan runs this too).
static void test_mutations(nt_ctx *ctx)
{
    const char *files[] = {"rgb.jpg",        "progressive.jpg",  "grey.jpg",   "rgb.png",
                           "interlaced.png", "palette_trns.png", "rgba16.png", "cmyk_adobe.jpg"};
    int odd = 0, tried = 0;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", corpus_dir(), files[f]);
        size_t len;
        uint8_t *buf = tu_slurp(path, &len);
        CHECK_MSG(buf != NULL, "cannot read %s", path);
        if (!buf) continue;
        uint8_t *cp = malloc(len);
        for (size_t n = 0; n < len; n++) {
            nd_image im;
            memcpy(cp, buf, n);
            nt_status s = nd_image_decode(ctx, cp, n, files[f], &im);
            odd += s != NT_OK && s != NT_EFORMAT;
            tried++;
            nd_image_free(&im);
        }
        for (int k = 0; k < 300; k++) {
            memcpy(cp, buf, len);
            uint64_t r = (uint64_t)k * 0x9E3779B97F4A7C15ull + f;
            r ^= r >> 29;
            cp[(r >> 8) % len] ^= (uint8_t)(1u << (r % 8));
            nd_image im;
            nt_status s =
                nd_image_decode_resized(ctx, cp, len, files[f], 7, 5, ND_RESIZE_AREA, &im);
            odd += s != NT_OK && s != NT_EFORMAT;
            if (s == NT_OK) CHECK(im.w == 7 && im.h == 5);
            tried++;
            nd_image_free(&im);
        }
        free(cp);
        free(buf);
    }
    CHECK_MSG(odd == 0, "%d of %d mutated inputs gave a status other than OK/EFORMAT", odd, tried);
    printf("ok   %d truncated or corrupted inputs: each decoded or refused\n", tried);
}

// ---- resizing ----

static nd_image make_image(int w, int h, uint64_t key)
{
    nd_image im = {w, h, malloc((size_t)w * h * 3)};
    float *r    = tu_rand_f32((int64_t)w * h * 3, key, 0, 256);
    for (int64_t i = 0; i < (int64_t)w * h * 3; i++)
        im.rgb[i] = (uint8_t)(r[i] >= 255 ? 255 : r[i]);
    free(r);
    return im;
}

static void test_resize_pil(nt_ctx *ctx, const fx_file *fx)
{
    const fx_tensor *src = fx_find(fx, "resize/src");
    CHECK(src != NULL && src->ndim == 3);
    if (!src) return;
    nd_image s = {(int)src->shape[1], (int)src->shape[0], malloc((size_t)src->numel)};
    for (int64_t i = 0; i < src->numel; i++)
        s.rgb[i] = (uint8_t)src->data[i];
    int ncase = 0;
    for (int i = 0; i < fx_count(fx); i++) {
        const fx_tensor *t = fx_at(fx, i);
        int w, h;
        int nearest = sscanf(t->name, "resize/nearest_%dx%d", &w, &h) == 2;
        int bilin   = !nearest && sscanf(t->name, "resize/bilinear_up_%dx%d", &w, &h) == 2;
        if (!nearest && !bilin) continue;
        nd_image o;
        CHECK(nd_image_resize(ctx, &s, w, h, nearest ? ND_RESIZE_NEAREST : ND_RESIZE_BILINEAR,
                              &o) == NT_OK);
        if (!o.rgb) continue;
        CHECK(t->numel == (int64_t)w * h * 3);
        float *got = to_f32(o.rgb, (int64_t)w * h * 3);
        CHECK_CLOSE(t->name, got, t->data, t->numel, nearest ? 0.0 : TOL_BILINEAR_PIL, 0);
        free(got);
        nd_image_free(&o);
        ncase++;
    }
    CHECK(ncase >= 6);
    nd_image_free(&s);

    // PIL's nearest index rule on sizes where (x + 0.5) * scale lands on an integer
    // (6 -> 9: the accumulated double gives 0,0,1,... where the exact product could differ).
    nd_image line = {6, 1, malloc(18)};
    for (int i = 0; i < 18; i++)
        line.rgb[i] = (uint8_t)(i / 3 * 10);
    nd_image o;
    CHECK(nd_image_resize(ctx, &line, 9, 1, ND_RESIZE_NEAREST, &o) == NT_OK);
    double a = 6.0 / 9, xo = a / 2;
    for (int x = 0; x < 9; x++, xo += a)
        CHECK_MSG(o.rgb[3 * x] == (int)xo * 10, "x=%d got %d want %d", x, o.rgb[3 * x],
                  (int)xo * 10);
    nd_image_free(&o);
    nd_image_free(&line);
}

static void test_resize_rules(nt_ctx *ctx)
{
    // Bilinear on known values: [0, 255] to 4 wide: centres at -0.25 (clamped), 0.25, 0.75, 1.25.
    nd_image two = {2, 1, (uint8_t[]){0, 0, 0, 255, 255, 255}};
    nd_image o;
    CHECK(nd_image_resize(ctx, &two, 4, 1, ND_RESIZE_BILINEAR, &o) == NT_OK);
    if (o.rgb)
        CHECK_MSG(o.rgb[0] == 0 && o.rgb[3] == 64 && o.rgb[6] == 191 && o.rgb[9] == 255,
                  "bilinear [0,255]->4: %d %d %d %d", o.rgb[0], o.rgb[3], o.rgb[6], o.rgb[9]);
    nd_image_free(&o);
    // 2x2 -> 3x3 bilinear: the centre is the mean of all four.
    nd_image sq = {2, 2, (uint8_t[]){0, 0, 0, 100, 100, 100, 200, 200, 200, 40, 40, 40}};
    CHECK(nd_image_resize(ctx, &sq, 3, 3, ND_RESIZE_BILINEAR, &o) == NT_OK);
    if (o.rgb) CHECK_MSG(o.rgb[4 * 3] == 85, "bilinear centre %d, want 85", o.rgb[4 * 3]);
    nd_image_free(&o);

    // Area on integer factors: each output is the rounded mean (half up) of its block.
    nd_image im      = make_image(24, 18, 11);
    int factors[][2] = {{2, 2}, {3, 3}, {4, 6}, {6, 2}, {24, 18}, {1, 1}};
    for (size_t f = 0; f < sizeof(factors) / sizeof(factors[0]); f++) {
        int fx = factors[f][0], fy = factors[f][1], w = 24 / fx, h = 18 / fy, bad = 0;
        CHECK(nd_image_resize(ctx, &im, w, h, ND_RESIZE_AREA, &o) == NT_OK);
        if (!o.rgb) continue;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++) {
                    long sum = 0, cnt = (long)fx * fy;
                    for (int j = 0; j < fy; j++)
                        for (int i = 0; i < fx; i++)
                            sum += px(&im, x * fx + i, y * fy + j)[c];
                    long want = (2 * sum + cnt) / (2 * cnt); // round half up
                    bad += px(&o, x, y)[c] != want;
                }
        CHECK_MSG(bad == 0, "area %dx%d: %d outputs are not the rounded block mean", fx, fy, bad);
        nd_image_free(&o);
    }
    nd_image_free(&im);

    // Area on fractional factors keeps the mean (exactly before rounding; rounding moves each
    // pixel by at most 0.5 and the errors average out).
    int sizes[][4] = {{37, 29, 11, 7}, {300, 200, 224, 224}, {17, 13, 40, 30}, {1000, 3, 7, 2}};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        im = make_image(sizes[k][0], sizes[k][1], 20 + k);
        CHECK(nd_image_resize(ctx, &im, sizes[k][2], sizes[k][3], ND_RESIZE_AREA, &o) == NT_OK);
        if (o.rgb) {
            double m0 = 0, m1 = 0;
            for (int64_t i = 0; i < (int64_t)im.w * im.h * 3; i++)
                m0 += im.rgb[i];
            for (int64_t i = 0; i < (int64_t)o.w * o.h * 3; i++)
                m1 += o.rgb[i];
            m0 /= (double)im.w * im.h * 3;
            m1 /= (double)o.w * o.h * 3;
            CHECK_MSG(fabs(m0 - m1) < 0.5, "area %dx%d->%dx%d: mean %.3f -> %.3f", im.w, im.h, o.w,
                      o.h, m0, m1);
        }
        nd_image_free(&o);
        nd_image_free(&im);
    }
    // A constant image stays constant in every mode and size.
    im = make_image(23, 19, 3);
    memset(im.rgb, 77, (size_t)23 * 19 * 3);
    for (int mode = 0; mode < 3; mode++) {
        int sz[][2] = {{5, 7}, {46, 38}, {1, 1}, {23, 19}, {100, 3}};
        for (int k = 0; k < 5; k++) {
            CHECK(nd_image_resize(ctx, &im, sz[k][0], sz[k][1], (nd_resize)mode, &o) == NT_OK);
            int bad = 0;
            for (int64_t i = 0; o.rgb && i < (int64_t)o.w * o.h * 3; i++)
                bad += o.rgb[i] != 77;
            CHECK_MSG(bad == 0, "%s to %dx%d changed a constant image", nd_resize_name(mode),
                      sz[k][0], sz[k][1]);
            nd_image_free(&o);
        }
    }
    // Bad targets and names.
    CHECK(nd_image_resize(ctx, &im, 0, 5, ND_RESIZE_AREA, &o) == NT_EINVAL);
    CHECK(nd_image_resize(ctx, &im, 5, 20000, ND_RESIZE_AREA, &o) == NT_EINVAL);
    nd_resize r;
    CHECK(nd_resize_parse(ctx, "area", &r) == NT_OK && r == ND_RESIZE_AREA);
    CHECK(nd_resize_parse(ctx, "nearest", &r) == NT_OK && r == ND_RESIZE_NEAREST);
    CHECK(nd_resize_parse(ctx, "cubic", &r) == NT_EINVAL);
    CHECK(strstr(nt_ctx_errmsg(ctx), "cubic") != NULL);
    nd_image_free(&im);
}

// ---- DCT-scaled decoding ----

static void test_dct_scaled(nt_ctx *ctx)
{
    const char *big = "data/samples/NORMAL2-IM-1438-0001.jpeg";
    size_t len;
    uint8_t *buf = tu_slurp(big, &len);
    CHECK_MSG(buf != NULL, "cannot read %s", big);
    if (!buf) return;
    nd_image full, scaled, a, b;
    CHECK(nd_image_decode(ctx, buf, len, big, &full) == NT_OK);
    CHECK(nd_image_decode_for(ctx, buf, len, big, 224, 224, &scaled) == NT_OK);
    if (!full.rgb || !scaled.rgb) return;
    printf("ok   %s: %dx%d, decoded for 224x224 at %dx%d\n", big, full.w, full.h, scaled.w,
           scaled.h);
    CHECK_MSG(scaled.w < full.w && scaled.w >= ND_DCT_MARGIN * 224 &&
                  scaled.h >= ND_DCT_MARGIN * 224 && scaled.w < 2 * ND_DCT_MARGIN * 224 + 8,
              "DCT-scaled size %dx%d", scaled.w, scaled.h);
    CHECK(is_grey(&full) && is_grey(&scaled));
    CHECK(nd_image_resize(ctx, &full, 224, 224, ND_RESIZE_AREA, &a) == NT_OK);
    CHECK(nd_image_decode_resized(ctx, buf, len, big, 224, 224, ND_RESIZE_AREA, &b) == NT_OK);
    if (a.rgb && b.rgb) {
        float *fa = to_f32(a.rgb, 224 * 224 * 3), *fb = to_f32(b.rgb, 224 * 224 * 3);
        double mean = 0;
        int over8   = 0;
        for (int i = 0; i < 224 * 224 * 3; i++) {
            mean += fabs((double)fa[i] - fb[i]);
            over8 += fabs((double)fa[i] - fb[i]) > 8;
        }
        mean /= 224 * 224 * 3;
        printf("ok   DCT-scaled + area vs full + area: mean abs diff %.3f, %d values over 8\n",
               mean, over8);
        CHECK_MSG(mean < TOL_DCT_MEAN, "mean abs diff %.3f", mean);
        CHECK_MSG(over8 < TOL_DCT_OVER8 * 224 * 224 * 3, "%d values differ by more than 8", over8);
        CHECK_CLOSE("dct_scaled_vs_full", fb, fa, 224 * 224 * 3, TOL_DCT_MAX, 0);
        CHECK(is_grey(&b));
        free(fa), free(fb);
    }
    nd_image_free(&a), nd_image_free(&b);
    // Nearest and bilinear decode at full size: equal to decode + resize, bit for bit.
    for (int mode = ND_RESIZE_NEAREST; mode <= ND_RESIZE_BILINEAR; mode++) {
        CHECK(nd_image_resize(ctx, &full, 224, 200, (nd_resize)mode, &a) == NT_OK);
        CHECK(nd_image_decode_resized(ctx, buf, len, big, 224, 200, (nd_resize)mode, &b) == NT_OK);
        if (a.rgb && b.rgb)
            CHECK_MSG(memcmp(a.rgb, b.rgb, 224 * 200 * 3) == 0, "%s: decode_resized differs",
                      nd_resize_name(mode));
        nd_image_free(&a), nd_image_free(&b);
    }
    // A target bigger than half the image: no DCT scaling.
    CHECK(nd_image_decode_for(ctx, buf, len, big, full.w / 3, full.h / 3, &a) == NT_OK);
    CHECK(a.w == full.w && a.h == full.h);
    nd_image_free(&a);
    // decode_resized resizes grey on one channel: the same bytes as decode_for (3 equal
    // channels) followed by nd_image_resize, here at the 1/4 scale 97x131 gets.
    nd_image c;
    CHECK(nd_image_decode_for(ctx, buf, len, big, 97, 131, &c) == NT_OK);
    CHECK(c.w == (full.w + 3) / 4 && c.h == (full.h + 3) / 4);
    CHECK(nd_image_resize(ctx, &c, 97, 131, ND_RESIZE_AREA, &a) == NT_OK);
    CHECK(nd_image_decode_resized(ctx, buf, len, big, 97, 131, ND_RESIZE_AREA, &b) == NT_OK);
    if (a.rgb && b.rgb) CHECK(memcmp(a.rgb, b.rgb, 97 * 131 * 3) == 0);
    nd_image_free(&c);
    nd_image_free(&a), nd_image_free(&b);
    nd_image_free(&full), nd_image_free(&scaled);
    free(buf);

    // The 224 px training copies: decode_for changes nothing, decode_resized at 224 is identity.
    const char *small = "data/samples/IM-0115-0001.jpeg";
    buf               = tu_slurp(small, &len);
    CHECK(buf != NULL);
    if (!buf) return;
    CHECK(nd_image_decode(ctx, buf, len, small, &full) == NT_OK);
    CHECK(nd_image_decode_resized(ctx, buf, len, small, full.w, full.h, ND_RESIZE_AREA, &b) ==
          NT_OK);
    if (full.rgb && b.rgb) CHECK(memcmp(full.rgb, b.rgb, (size_t)full.w * full.h * 3) == 0);
    nd_image_free(&full), nd_image_free(&b);
    free(buf);
}

// ---- files ----

static void test_files(nt_ctx *ctx)
{
    uint8_t *buf;
    size_t len;
    CHECK(nd_file_read(ctx, "tests/no/such/file.jpg", 0, &buf, &len) == NT_EIO);
    CHECK(strstr(nt_ctx_errmsg(ctx), "No such file") != NULL);
    CHECK(nd_file_read(ctx, "tests", 0, &buf, &len) == NT_EFORMAT);
    CHECK(strstr(nt_ctx_errmsg(ctx), "not a regular file") != NULL);
    CHECK(nd_file_read(ctx, "data/samples/IM-0115-0001.jpeg", 100, &buf, &len) == NT_EFORMAT);
    CHECK(nd_file_read(ctx, "data/samples/IM-0115-0001.jpeg", 0, &buf, &len) == NT_OK);
    struct stat st;
    CHECK(stat("data/samples/IM-0115-0001.jpeg", &st) == 0 && (size_t)st.st_size == len);
    free(buf);
    nd_image im;
    CHECK(nd_image_load(ctx, "tests/no/such/file.jpg", &im) == NT_EIO);
    CHECK(im.rgb == NULL);
    nd_image_free(NULL);
}

int main(void)
{
    nt_ctx *ctx = tu_ctx_new1();
    if (!ctx) return 1;
    char path[512];
    fx_file *fx = NULL;
    char err[256];
    fx_default_path("corpus_expected.bin", path, sizeof path);
    CHECK_MSG(fx_open(path, &fx, err, sizeof err) == 0, "%s", err);
    if (fx) {
        test_corpus(ctx, fx);
        test_resize_pil(ctx, fx);
    }
    test_cmyk(ctx);
    test_mutations(ctx);
    test_resize_rules(ctx);
    test_dct_scaled(ctx);
    test_files(ctx);
    fx_close(fx);
    nt_ctx_free(ctx);
    return check_summary("test_image");
}
