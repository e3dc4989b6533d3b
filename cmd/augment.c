/*
 * augment.c: `pneumo augment IMAGE`: shows what training sees. The image is resized as training
 * resizes it, then transformed by explicit parameters (as Keras's apply_transform takes them) or
 * by random ones drawn from the training flags with the training RNG (data/augment.h), and
 * written as 8-bit PNGs (before rescaling) or one contact sheet. Glue only: the math is in
 * data/augment.c. Tests: tests/augment.sh.
 * The resize defaults to area, as `pneumo train` and `pneumo predict` do (Keras's load_img
 * defaults to nearest: --resize nearest shows that). Random draws use the training key
 * (--seed, --epoch, sample index), so the same flags show exactly what an epoch's sample gets.
 */
#include "cmd/cli.h"
#include "data/augment.h"
#include "data/nd.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CMD        "augment"
#define SHEET_GAP  4  // pixels between and around the tiles of a contact sheet
#define SHEET_GREY 96 // their colour
#define MAX_N      1000

// Writes an 8-bit RGB image to path as PNG. Returns 0, or EXIT_FAIL after printing why.
static int write_png(const char *path, const uint8_t *rgb, int w, int h)
{
    FILE *f = fopen(path, "wb");
    if (!f) return cli_fail(CMD, EXIT_FAIL, "cannot write %s: %s", path, strerror(errno));
    png_image img;
    memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    img.width   = (png_uint_32)w;
    img.height  = (png_uint_32)h;
    img.format  = PNG_FORMAT_RGB;
    int ok      = png_image_write_to_stdio(&img, f, 0, rgb, w * 3, NULL);
    int err     = ferror(f);
    if (fclose(f) != 0) err = 1;
    if (!ok || err) {
        remove(path);
        return cli_fail(CMD, EXIT_FAIL, "cannot write %s: %s", path,
                        !ok ? img.message : strerror(errno));
    }
    png_image_free(&img);
    return 0;
}

// The file name of random sample `index`: STEM-INDEX.png, STEM being --out without ".png".
static char *numbered_name(const char *out, long long index)
{
    size_t n = strlen(out);
    if (n >= 4 && strcasecmp(out + n - 4, ".png") == 0) n -= 4;
    size_t len = n + 32;
    char *s    = malloc(len);
    if (s) snprintf(s, len, "%.*s-%lld.png", (int)n, out, index);
    return s;
}

static void print_params(const char *file, long long index, const nd_aug_params *p)
{
    if (index >= 0) printf("index %lld: ", index);
    printf("theta %.3f tx %.3f ty %.3f shear %.3f zx %.4f zy %.4f flip %d%s%s\n", p->theta, p->tx,
           p->ty, p->shear, p->zx, p->zy, p->flip, file ? " -> " : "", file ? file : "");
}

int cmd_augment(int argc, char **argv)
{
    // Explicit parameters: NAN / -1 mean "not given".
    double theta = NAN, shear = NAN, tx = NAN, ty = NAN, zx = NAN, zy = NAN;
    int flip = -1;
    // Training flags (random parameters); NAN / -1 mean "not given".
    double rot = NAN, wshift = NAN, hshift = NAN, shear_r = NAN, zoom = NAN, seed = NAN;
    int hflip = 0, swap = 0, epoch = -1, index = -1, n = -1, count = -1;
    // Common.
    const char *out = NULL, *sheet = NULL, *fill_s = "nearest", *resize_s = "area";
    double cval    = 0;
    int img_size   = 224;
    cli_opt opts[] = {
        {"out", OPT_STR, &out, 0, 0, "FILE.png",
         "the result (explicit); with random ones, FILE-INDEX.png per image"},
        {"sheet", OPT_STR, &sheet, 0, 0, "FILE.png", "random: all N images on one contact sheet"},
        {"img-size", OPT_INT, &img_size, 32, 1024, "PX",
         "resize to PX x PX first, as training does (224)"},
        {"resize", OPT_STR, &resize_s, 0, 0, "area|bilinear|nearest",
         "resizing, as pneumo train --resize (area)"},
        {"theta", OPT_FLOAT, &theta, -360, 360, "DEG",
         "explicit: rotation, positive turns clockwise (0)"},
        {"tx", OPT_FLOAT, &tx, -1e6, 1e6, "PX",
         "explicit: horizontal shift; positive reads from the right (0)"},
        {"ty", OPT_FLOAT, &ty, -1e6, 1e6, "PX",
         "explicit: vertical shift; positive reads from below (0)"},
        {"shear", OPT_FLOAT, &shear, -360, 360, "DEG", "explicit: shear angle (0)"},
        {"zx", OPT_FLOAT, &zx, 0.01, 100, "F", "explicit: horizontal zoom, > 1 shrinks (1)"},
        {"zy", OPT_FLOAT, &zy, 0.01, 100, "F", "explicit: vertical zoom, > 1 shrinks (1)"},
        {"flip", OPT_INT, &flip, 0, 1, "0|1", "explicit: flip horizontally after the transform"},
        {"rotation-range", OPT_FLOAT, &rot, 0, 180, "DEG", "random: theta uniform in +-DEG"},
        {"width-shift-range", OPT_FLOAT, &wshift, 0, 4096, "F|PX",
         "random: tx, F < 1 of the width, else pixels (whole for an integer)"},
        {"height-shift-range", OPT_FLOAT, &hshift, 0, 4096, "F|PX", "random: ty, the same"},
        {"shear-range", OPT_FLOAT, &shear_r, 0, 90, "DEG", "random: shear uniform in +-DEG"},
        {"zoom-range", OPT_FLOAT, &zoom, 0, 0.99, "Z",
         "random: zx, zy drawn independently in [1-Z, 1+Z]"},
        {"horizontal-flip", OPT_FLAG, &hflip, 0, 0, NULL, "random: flip with p 0.5"},
        {"keras-swap-shifts", OPT_FLAG, &swap, 0, 0, NULL,
         "random: shift ranges as Keras >= 2.9 applies them (swapped)"},
        {"seed", OPT_FLOAT, &seed, 0, 9007199254740992.0, "N", "random: the run seed (0)"},
        {"epoch", OPT_INT, &epoch, 0, 2147483647, "E", "random: the epoch (0)"},
        {"index", OPT_INT, &index, 0, 2147483647, "I", "random: first sample index (0)"},
        {"n", OPT_INT, &n, 1, MAX_N, "N", "random: N images, indices I .. I+N-1 (also -n N)"},
        {"count", OPT_INT, &count, 1, MAX_N, "N", "the same as --n"},
        {"fill-mode", OPT_STR, &fill_s, 0, 0, "nearest|constant|reflect|wrap",
         "points outside the image (nearest)"},
        {"cval", OPT_FLOAT, &cval, 0, 255, "V", "fill value for constant (0)"},
    };
    cli_cmd cmd = {
        CMD,
        "IMAGE --out FILE.png [--theta DEG] [--tx PX] [--ty PX] [--shear DEG] [--zx F] [--zy F] "
        "[--flip 0|1] | IMAGE [training flags] [--seed N] [-n N] (--out|--sheet) "
        "FILE.png",
        "Show what training sees: resize IMAGE as training does, transform it with "
        "explicit parameters or random ones drawn from the training flags, and write "
        "8-bit PNGs (before rescaling).",
        opts,
        (int)(sizeof(opts) / sizeof(opts[0])),
        1,
        1};
    // cli_parse knows --long options only: -n N is --n N.
    char *av[argc + 1];
    for (int i = 0, dashdash = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) dashdash = 1;
        av[i] = !dashdash && strcmp(argv[i], "-n") == 0 ? "--n" : argv[i];
    }
    av[argc] = NULL;
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, av, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;

    nd_fill fill;
    nd_resize resize;
    if (nd_fill_parse(NULL, fill_s, &fill) != NT_OK)
        return cli_fail(CMD, EXIT_USAGE,
                        "--fill-mode expects nearest, constant, reflect or wrap, got \"%s\"",
                        fill_s);
    if (nd_resize_parse(NULL, resize_s, &resize) != NT_OK)
        return cli_fail(CMD, EXIT_USAGE, "--resize expects area, bilinear or nearest, got \"%s\"",
                        resize_s);
    if (n >= 0 && count >= 0 && n != count)
        return cli_fail(CMD, EXIT_USAGE, "-n %d and --count %d disagree; give one", n, count);
    if (n < 0) n = count;

    // Which kind: the first explicit and the first random flag given, if any.
    const char *explicit_flag = !isnan(theta)   ? "--theta"
                                : !isnan(tx)    ? "--tx"
                                : !isnan(ty)    ? "--ty"
                                : !isnan(shear) ? "--shear"
                                : !isnan(zx)    ? "--zx"
                                : !isnan(zy)    ? "--zy"
                                : flip >= 0     ? "--flip"
                                                : NULL;
    const char *random_flag   = !isnan(rot)       ? "--rotation-range"
                                : !isnan(wshift)  ? "--width-shift-range"
                                : !isnan(hshift)  ? "--height-shift-range"
                                : !isnan(shear_r) ? "--shear-range"
                                : !isnan(zoom)    ? "--zoom-range"
                                : hflip           ? "--horizontal-flip"
                                : swap            ? "--keras-swap-shifts"
                                : !isnan(seed)    ? "--seed"
                                : epoch >= 0      ? "--epoch"
                                : index >= 0      ? "--index"
                                : n >= 0          ? "-n"
                                : sheet           ? "--sheet"
                                                  : NULL;
    if (explicit_flag && random_flag)
        return cli_fail(CMD, EXIT_USAGE,
                        "%s gives explicit parameters and %s asks for random ones; use one kind "
                        "(see pneumo augment --help)",
                        explicit_flag, random_flag);
    int random = random_flag != NULL;
    if (!random && !out)
        return cli_fail(
            CMD, EXIT_USAGE,
            "--out FILE.png is required (random transforms may use --sheet FILE.png instead)");
    if (random && !out && !sheet)
        return cli_fail(CMD, EXIT_USAGE,
                        "random transforms need --out FILE.png, --sheet "
                        "FILE.png or both");
    if (n < 0) n = 1;
    if (epoch < 0) epoch = 0;
    if (index < 0) index = 0;
    if ((long long)index + n - 1 > 2147483647LL)
        return cli_fail(CMD, EXIT_USAGE, "--index %d with -n %d goes past 2147483647", index, n);

    // The sheet's size is known before any work: refuse one that is too large.
    const int S = img_size;
    int cols = 1, rows = 1;
    long long sw = 0, sh = 0;
    if (sheet) {
        while (cols * cols < n)
            cols++;
        rows = (n + cols - 1) / cols;
        sw   = (long long)cols * S + (long long)(cols + 1) * SHEET_GAP;
        sh   = (long long)rows * S + (long long)(rows + 1) * SHEET_GAP;
        if (sw * sh > ND_MAX_PIXELS)
            return cli_fail(CMD, EXIT_USAGE,
                            "--sheet: %d images of %dx%d make a %lldx%lld sheet, over %d pixels; "
                            "use a smaller -n or --img-size",
                            n, S, S, sw, sh, ND_MAX_PIXELS);
    }

    nt_ctx *ctx = cli_ctx(CMD, 1, 0);
    if (!ctx) return EXIT_FAIL;
    nd_image src = {0}, img = {0};
    float *buf  = NULL;
    uint8_t *u8 = NULL, *sheet_px = NULL;
    rc = EXIT_OK;
    if (nd_image_load(ctx, pos[0], &src) != NT_OK ||
        nd_image_resize(ctx, &src, S, S, resize, &img) != NT_OK) {
        rc = cli_fail(CMD, EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    buf = malloc(sizeof(float) * (size_t)S * S * 3);
    u8  = malloc((size_t)S * S * 3);
    if (sheet) {
        sheet_px = malloc((size_t)(sw * sh * 3));
        if (sheet_px) memset(sheet_px, SHEET_GREY, (size_t)(sw * sh * 3));
    }
    if (!buf || !u8 || (sheet && !sheet_px)) {
        rc = cli_fail(CMD, EXIT_FAIL, "out of memory for %dx%d images", S, S);
        goto out;
    }

    nd_aug_cfg cfg;
    nd_aug_cfg_default(&cfg);
    cfg.rotation_range     = isnan(rot) ? 0 : rot;
    cfg.width_shift_range  = isnan(wshift) ? 0 : wshift;
    cfg.height_shift_range = isnan(hshift) ? 0 : hshift;
    cfg.shear_range        = isnan(shear_r) ? 0 : shear_r;
    cfg.zoom_lo            = isnan(zoom) ? 1 : 1 - zoom;
    cfg.zoom_hi            = isnan(zoom) ? 1 : 1 + zoom;
    cfg.horizontal_flip    = hflip;
    cfg.keras_swap_shifts  = swap;
    cfg.fill_mode          = fill;
    cfg.cval               = cval;
    nd_aug_params p;
    nd_aug_params_identity(&p);
    if (!random) {
        p.theta = isnan(theta) ? 0 : theta;
        p.tx    = isnan(tx) ? 0 : tx;
        p.ty    = isnan(ty) ? 0 : ty;
        p.shear = isnan(shear) ? 0 : shear;
        p.zx    = isnan(zx) ? 1 : zx;
        p.zy    = isnan(zy) ? 1 : zy;
        p.flip  = flip > 0;
    }
    uint64_t seed_u = isnan(seed) ? 0 : (uint64_t)seed;
    for (int i = 0; i < n; i++) {
        long long k = (long long)index + i;
        if (random) nd_aug_random(&cfg, seed_u, (uint64_t)epoch, (uint64_t)k, S, S, &p);
        nd_aug_apply(&p, fill, cval, &img, buf);
        nd_float_to_u8(buf, (int64_t)S * S * 3, u8);
        char *file = NULL;
        if (out) {
            file = random ? numbered_name(out, k) : strdup(out);
            if (!file) {
                rc = cli_fail(CMD, EXIT_FAIL, "out of memory");
                goto out;
            }
            rc = write_png(file, u8, S, S);
        }
        if (rc == EXIT_OK) print_params(file, random ? k : -1, &p);
        free(file);
        if (rc) goto out;
        if (sheet) {
            long long x0 = SHEET_GAP + (long long)(i % cols) * (S + SHEET_GAP);
            long long y0 = SHEET_GAP + (long long)(i / cols) * (S + SHEET_GAP);
            for (int r = 0; r < S; r++)
                memcpy(sheet_px + ((y0 + r) * sw + x0) * 3, u8 + (size_t)r * S * 3, (size_t)S * 3);
        }
    }
    if (sheet) {
        rc = write_png(sheet, sheet_px, (int)sw, (int)sh);
        if (rc == EXIT_OK)
            printf("sheet: %d image%s, %d per row -> %s\n", n, n == 1 ? "" : "s", cols, sheet);
    }
out:
    free(sheet_px);
    free(u8);
    free(buf);
    nd_image_free(&img);
    nd_image_free(&src);
    nt_ctx_free(ctx);
    return rc;
}
