/*
 * test_augment.c: data/augment.c against Keras + scipy: pixel parity with the fixtures of
 * tests/gen_augment.py (every explicit transform x fill mode, border pixels left out and
 * reported), the fill modes on a hand-computed row, identity and flip exactness, determinism of
 * the per-sample RNG (same key, same image; any thread count), and the distribution of
 * nd_aug_random's draws. Not a test of resizing (test_image.c) or of the command (augment.sh).
 */
#include "data/augment.h"
#include "kernels/nk.h"
#include "tests/check.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

#include <math.h>
#include <string.h>

// ---- tolerances ----
// Parity on the 0..1 scale (the bound): both sides interpolate in double and store
// float32, so the measured error is float32 rounding of 0..255 values, about 1e-7 after / 255.
#define TOL_PARITY      1e-3
#define TOL_PARITY_WARN 1e-5 /* above this something changed in the arithmetic: say so */
// Distribution checks over N_DRAWS draws: a uniform mean is within 5 standard errors.
#define N_DRAWS        40000
#define SE5(halfwidth) (5.0 * (halfwidth) / sqrt(3.0 * N_DRAWS))
#define TOL_FRAC       0.015 /* proportions (flip, integer shifts): 5 s.e. of p = 0.5 is 0.0125 */
#define TOL_CORR       0.03  /* |correlation| of independent draws: 5 s.e. is 0.025 */

static const char *const mode_names[4] = {"nearest", "constant", "reflect", "wrap"};

// An RGB test image of w x h from a hash, so that every channel and pixel differs.
static nd_image hashed_image(int w, int h, uint64_t key)
{
    nd_image im = {w, h, tu_xcalloc((int64_t)w * h * 3, 1)};
    for (int64_t i = 0; i < (int64_t)w * h * 3; i++)
        im.rgb[i] = (uint8_t)(nk_mix64(key + (uint64_t)i) >> 56);
    return im;
}

// ---- parity with Keras + scipy ----

static void test_parity(void)
{
    char path[512], err[256];
    fx_default_path("augment.bin", path, sizeof path);
    fx_file *f = NULL;
    if (fx_open(path, &f, err, sizeof err) != 0) {
        CHECK_MSG(0, "%s (regenerate with /usr/bin/python3 tests/gen_augment.py)", err);
        return;
    }
    const fx_tensor *in = fx_find(f, "input"), *cv = fx_find(f, "cval");
    CHECK_MSG(in && in->ndim == 3 && in->shape[2] == 3 && cv, "fixture %s: no input/cval", path);
    if (!in || in->ndim != 3 || in->shape[2] != 3 || !cv) {
        fx_close(f);
        return;
    }
    const int h = (int)in->shape[0], w = (int)in->shape[1];
    const int64_t n = (int64_t)w * h * 3;
    nd_image src    = {w, h, tu_xcalloc(n, 1)};
    for (int64_t i = 0; i < n; i++)
        src.rgb[i] = (uint8_t)in->data[i];
    float *got   = tu_zeros_f32(n);
    uint8_t *bad = tu_xcalloc(w * h, 1);
    int ncases = 0, nborder_total = 0, nborder_differ = 0;
    double worst = 0;
    printf("parity with Keras apply_transform + scipy.ndimage.affine_transform (%dx%d, 0..1 "
           "scale, cval %g):\n",
           w, h, (double)cv->data[0]);
    for (int t = 0; t < fx_count(f); t++) {
        const fx_tensor *pt = fx_at(f, t);
        if (strncmp(pt->name, "params/", 7) != 0) continue;
        const char *name = pt->name + 7;
        CHECK_MSG(pt->numel == 7, "%s: expected 7 values", pt->name);
        if (pt->numel != 7) continue;
        nd_aug_params p = {pt->data[0], pt->data[1], pt->data[2],     pt->data[3],
                           pt->data[4], pt->data[5], pt->data[6] != 0};
        printf("  %-14s", name);
        for (int m = 0; m < 4; m++) {
            char oname[128], bname[128];
            snprintf(oname, sizeof oname, "out/%s/%s", name, mode_names[m]);
            snprintf(bname, sizeof bname, "border/%s/%s", name, mode_names[m]);
            const fx_tensor *ref = fx_expect(f, oname, 3, in->shape);
            const fx_tensor *bt  = fx_expect(f, bname, -1, NULL);
            CHECK_MSG(ref && bt, "%s: missing %s or %s", path, oname, bname);
            if (!ref || !bt) continue;
            nd_aug_apply(&p, (nd_fill)m, cv->data[0], &src, got);
            memset(bad, 0, (size_t)(w * h));
            for (int64_t k = 0; k < bt->numel; k++) {
                int64_t px = (int64_t)bt->data[k];
                CHECK_MSG(px >= 0 && px < (int64_t)w * h, "%s: index %lld", bname, (long long)px);
                if (px >= 0 && px < (int64_t)w * h) bad[px] = 1;
            }
            double max_abs = 0, max_border = 0;
            int differ = 0;
            for (int64_t px = 0; px < (int64_t)w * h; px++) {
                double e = 0;
                for (int k = 0; k < 3; k++) {
                    double d = fabs((double)got[px * 3 + k] - ref->data[px * 3 + k]) / 255.0;
                    if (!(d == d)) d = INFINITY;
                    if (d > e) e = d;
                }
                if (bad[px]) {
                    if (e > max_border) max_border = e;
                    differ += e > TOL_PARITY;
                } else if (e > max_abs) {
                    max_abs = e;
                }
            }
            CHECK_MSG(max_abs <= TOL_PARITY, "%s: max abs error %.3g on the 0..1 scale", oname,
                      max_abs);
            if (max_abs > TOL_PARITY_WARN)
                fprintf(stderr, "warning: %s: max abs error %.3g above the warn level %.0e\n",
                        oname, max_abs, TOL_PARITY_WARN);
            if (max_abs > worst) worst = max_abs;
            nborder_total += (int)bt->numel;
            nborder_differ += differ;
            printf(" %s %.1e", mode_names[m], max_abs);
            if (bt->numel)
                printf(" (border %lld, %d differ, max %.2f)", (long long)bt->numel, differ,
                       max_border);
            ncases++;
        }
        printf("\n");
    }
    CHECK_MSG(ncases == 14 * 4, "expected 56 transform x mode cases, found %d", ncases);
    printf("%s parity: %d cases, max abs error %.3g (tolerance %.0e); %d border pixels left out, "
           "%d of them differ\n",
           worst <= TOL_PARITY ? "ok  " : "FAIL", ncases, worst, TOL_PARITY, nborder_total,
           nborder_differ);
    free(bad);
    free(got);
    nd_image_free(&src);
    fx_close(f);
}

// ---- fill modes on one row, by hand ----

static void test_fill_row(void)
{
    // One row 10 20 30 40 50; tx = 1.3 reads 1.3 pixels to the right: output col c is source
    // c + 1.3, so col 3 is at 4.3 and col 4 at 5.3 (past the last pixel, 4).
    nd_image im = {5, 1, tu_xcalloc(15, 1)};
    for (int c = 0; c < 5; c++)
        im.rgb[c * 3] = im.rgb[c * 3 + 1] = im.rgb[c * 3 + 2] = (uint8_t)(10 * (c + 1));
    nd_aug_params p;
    nd_aug_params_identity(&p);
    p.tx = 1.3;
    float out[15];
    // expected cols 0..4 for each mode
    const double want[4][5] = {
        {23, 33, 43, 50, 50},                  // nearest: clamped
        {23, 33, 43, 99, 99},                  // constant (cval 99): no blending past 4
        {23, 33, 43, 50, 0.7 * 50 + 0.3 * 40}, // reflect: 4.3 -> 50, 5.3 -> between 50, 40
        {23, 33, 43, 0.7 * 10 + 0.3 * 20, 0.7 * 20 + 0.3 * 30}, // wrap: period n-1 = 4
    };
    for (int m = 0; m < 4; m++) {
        nd_aug_apply(&p, (nd_fill)m, 99, &im, out);
        for (int c = 0; c < 5; c++)
            CHECK_MSG(fabs(out[c * 3] - want[m][c]) < 1e-4 && out[c * 3] == out[c * 3 + 2],
                      "%s col %d: expected %g got %g", mode_names[m], c, want[m][c],
                      (double)out[c * 3]);
    }
    // Left of the image: tx = -6.5 puts col 0 at -6.5 (reflect: -6.5 mirrors to 5.5 = between
    // the mirrored 4 and 3 -> between 50 and 40... computed on the extension d c b a | a b c d).
    p.tx = -6.5;
    nd_aug_apply(&p, ND_FILL_REFLECT, 0, &im, out);
    // extension index -7 -> 6 -> 3 (40), -6 -> 5 -> 4 (50): at -6.5 half of each
    CHECK_MSG(fabs(out[0] - 45) < 1e-4, "reflect at -6.5: expected 45 got %g", (double)out[0]);
    nd_aug_apply(&p, ND_FILL_WRAP, 0, &im, out);
    // wrap: -6.5 + 4 * (1 + 1) = 1.5 -> between 20 and 30
    CHECK_MSG(fabs(out[0] - 25) < 1e-4, "wrap at -6.5: expected 25 got %g", (double)out[0]);
    nd_image_free(&im);
}

// ---- identity, flip, odd inputs ----

static void test_identity_and_flip(void)
{
    const int w = 37, h = 23;
    nd_image im = hashed_image(w, h, 11);
    float *out  = tu_nan_f32((int64_t)w * h * 3);
    nd_aug_params p;
    nd_aug_params_identity(&p);
    for (int m = 0; m < 4; m++) {
        nd_aug_apply(&p, (nd_fill)m, 7, &im, out);
        int same = 1;
        for (int64_t i = 0; i < (int64_t)w * h * 3; i++)
            same &= out[i] == (float)im.rgb[i];
        CHECK_MSG(same, "identity transform with fill %s changed the image", mode_names[m]);
    }
    p.flip = 1;
    nd_aug_apply(&p, ND_FILL_NEAREST, 0, &im, out);
    int same = 1;
    for (int r = 0; r < h; r++)
        for (int c = 0; c < w; c++)
            for (int k = 0; k < 3; k++)
                same &= out[(r * w + c) * 3 + k] == (float)im.rgb[(r * w + (w - 1 - c)) * 3 + k];
    CHECK_MSG(same, "flip alone is not an exact mirror");
    // Flip comes after the transform: flipping a shifted image equals shifting by -tx the
    // flipped image (nearest fill is symmetric under the mirror).
    nd_image mir = hashed_image(w, h, 0);
    for (int r = 0; r < h; r++)
        for (int c = 0; c < w; c++)
            memcpy(mir.rgb + (r * w + c) * 3, im.rgb + (r * w + (w - 1 - c)) * 3, 3);
    float *out2 = tu_nan_f32((int64_t)w * h * 3);
    nd_aug_params_identity(&p);
    p.tx   = 3.25;
    p.flip = 1;
    nd_aug_apply(&p, ND_FILL_NEAREST, 0, &im, out);
    p.tx   = -3.25;
    p.flip = 0;
    nd_aug_apply(&p, ND_FILL_NEAREST, 0, &mir, out2);
    double e = 0;
    for (int64_t i = 0; i < (int64_t)w * h * 3; i++)
        e = fmax(e, fabs(out[i] - out2[i]));
    CHECK_MSG(e < 1e-3, "shift then flip != flip then opposite shift (max diff %g)", e);

    // A 1x1 image, non-finite and absurd parameters: no crash, defined values.
    nd_image one = hashed_image(1, 1, 5);
    float o1[3];
    nd_aug_params_identity(&p);
    p.theta = 33;
    p.zx    = 0.5;
    for (int m = 0; m < 4; m++) {
        nd_aug_apply(&p, (nd_fill)m, 1, &one, o1);
        CHECK_MSG(o1[0] == one.rgb[0] || (m == ND_FILL_CONSTANT && o1[0] == 1),
                  "1x1 image, fill %s: got %g", mode_names[m], (double)o1[0]);
    }
    nd_aug_params_identity(&p);
    p.theta = NAN;
    nd_aug_apply(&p, ND_FILL_REFLECT, 42, &im, out);
    CHECK_MSG(out[0] == 42 && out[(int64_t)w * h * 3 - 1] == 42, "NaN theta: expected cval");
    nd_aug_params_identity(&p);
    p.tx = 1e300;
    p.ty = -1e300;
    for (int m = 0; m < 4; m++) {
        nd_aug_apply(&p, (nd_fill)m, 42, &im, out);
        int finite = 1;
        for (int64_t i = 0; i < (int64_t)w * h * 3; i++)
            finite &= isfinite(out[i]) && out[i] >= 0;
        CHECK_MSG(finite, "shift 1e300, fill %s: non-finite output", mode_names[m]);
    }
    free(out);
    free(out2);
    nd_image_free(&mir);
    nd_image_free(&one);
    nd_image_free(&im);
}

static void test_names_and_u8(void)
{
    for (int m = 0; m < 4; m++) {
        nd_fill f = ND_FILL_WRAP;
        CHECK(nd_fill_parse(NULL, nd_fill_name((nd_fill)m), &f) == NT_OK && f == (nd_fill)m);
    }
    nt_ctx *ctx = tu_ctx_new1();
    nd_fill f   = ND_FILL_REFLECT;
    CHECK(nd_fill_parse(ctx, "mirror", &f) == NT_EINVAL && f == ND_FILL_REFLECT);
    CHECK_MSG(strstr(nt_ctx_errmsg(ctx), "\"mirror\"") != NULL, "message: %s", nt_ctx_errmsg(ctx));
    CHECK(nd_fill_parse(ctx, NULL, &f) == NT_EINVAL);
    CHECK(strcmp(nd_fill_name((nd_fill)9), "?") == 0);
    nt_ctx_free(ctx);
    const float in[8]    = {-3, 0, 0.49f, 0.5f, 254.4f, 254.5f, 300, NAN};
    const uint8_t want[] = {0, 0, 0, 1, 254, 255, 255, 0};
    uint8_t out[8];
    nd_float_to_u8(in, 8, out);
    CHECK(memcmp(out, want, 8) == 0);
}

// ---- the per-sample RNG ----

static void full_cfg(nd_aug_cfg *c)
{
    nd_aug_cfg_default(c);
    c->rotation_range     = 20;
    c->width_shift_range  = 0.1;
    c->height_shift_range = 0.2;
    c->shear_range        = 10;
    c->zoom_lo            = 0.8;
    c->zoom_hi            = 1.2;
    c->horizontal_flip    = 1;
}

static int params_eq(const nd_aug_params *a, const nd_aug_params *b)
{
    return a->theta == b->theta && a->tx == b->tx && a->ty == b->ty && a->shear == b->shear &&
           a->zx == b->zx && a->zy == b->zy && a->flip == b->flip;
}

static void test_determinism(void)
{
    nd_aug_cfg cfg;
    full_cfg(&cfg);
    CHECK(nd_aug_active(&cfg));
    nd_aug_params a, b;
    nd_aug_random(&cfg, 7, 3, 100, 64, 48, &a);
    nd_aug_random(&cfg, 7, 3, 100, 64, 48, &b);
    CHECK_MSG(params_eq(&a, &b), "same (seed, epoch, index) gave different parameters");
    nd_aug_random(&cfg, 7, 3, 101, 64, 48, &b);
    CHECK_MSG(a.theta != b.theta && a.tx != b.tx && a.zx != b.zx, "index 101 repeats index 100");
    nd_aug_random(&cfg, 7, 4, 100, 64, 48, &b);
    CHECK_MSG(a.theta != b.theta && a.tx != b.tx, "epoch 4 repeats epoch 3");
    nd_aug_random(&cfg, 8, 3, 100, 64, 48, &b);
    CHECK_MSG(a.theta != b.theta && a.tx != b.tx, "seed 8 repeats seed 7");
    // No two of 2000 samples share a rotation (24-bit draws: a tie is a 1e-4 event).
    enum { NS = 2000 };
    static double th[NS];
    for (int i = 0; i < NS; i++) {
        nd_aug_random(&cfg, 7, 3, (uint64_t)i, 64, 48, &b);
        th[i] = b.theta;
    }
    int ties = 0;
    for (int i = 0; i < NS; i++)
        for (int j = i + 1; j < NS; j++)
            ties += th[i] == th[j];
    CHECK_MSG(ties <= 1, "%d ties among %d rotations", ties, NS);

    // Each range has its own slot: switching the others off leaves a draw unchanged.
    nd_aug_cfg only;
    nd_aug_cfg_default(&only);
    CHECK(!nd_aug_active(&only));
    only.height_shift_range = 0.2;
    nd_aug_random(&only, 7, 3, 100, 64, 48, &b);
    CHECK_MSG(b.ty == a.ty && b.theta == 0 && b.tx == 0 && b.shear == 0 && b.zx == 1 && b.zy == 1 &&
                  !b.flip,
              "height_shift_range alone: ty %g (with all ranges %g)", b.ty, a.ty);
    nd_aug_cfg_default(&only);
    for (int i = 0; i < 100; i++) {
        nd_aug_params id;
        nd_aug_params_identity(&id);
        nd_aug_random(&only, 1, 2, (uint64_t)i, 64, 48, &b);
        CHECK_MSG(params_eq(&b, &id), "default config drew a transform at index %d", i);
    }

    // Images: the same keys give bit-identical images on 1 thread and on several, in any order.
    enum { NI = 48, W = 40, H = 30 };
    nd_image im   = hashed_image(W, H, 3);
    float *serial = tu_zeros_f32((int64_t)NI * W * H * 3);
    float *par    = tu_nan_f32((int64_t)NI * W * H * 3);
    cfg.fill_mode = ND_FILL_REFLECT;
    for (int i = 0; i < NI; i++) {
        nd_aug_random(&cfg, 99, 5, (uint64_t)i, W, H, &a);
        nd_aug_apply(&a, cfg.fill_mode, cfg.cval, &im, serial + (int64_t)i * W * H * 3);
    }
#pragma omp parallel for num_threads(4) schedule(dynamic, 1)
    for (int j = 0; j < NI; j++) {
        int i = NI - 1 - j; // reverse order on purpose
        nd_aug_params q;
        nd_aug_random(&cfg, 99, 5, (uint64_t)i, W, H, &q);
        nd_aug_apply(&q, cfg.fill_mode, cfg.cval, &im, par + (int64_t)i * W * H * 3);
    }
    CHECK_MSG(memcmp(serial, par, sizeof(float) * NI * W * H * 3) == 0,
              "4 threads in reverse order gave other images than 1 thread");
    CHECK_MSG(memcmp(serial, serial + W * H * 3, sizeof(float) * W * H * 3) != 0,
              "index 0 and 1 gave the same image");
    free(serial);
    free(par);
    nd_image_free(&im);
}

// ---- distribution of nd_aug_random ----

typedef struct rstat {
    double lo, hi, sum, sum2;
} rstat;

static void stat_add(rstat *s, double v, int first)
{
    if (first || v < s->lo) s->lo = v;
    if (first || v > s->hi) s->hi = v;
    s->sum += v;
    s->sum2 += v * v;
}

static void check_uniform(const char *what, const rstat *s, double lo, double hi)
{
    double mean = s->sum / N_DRAWS, var = s->sum2 / N_DRAWS - mean * mean;
    double half = (hi - lo) / 2, want_var = (hi - lo) * (hi - lo) / 12;
    printf("  %-8s in [%8.4f, %8.4f] (want [%g, %g)), mean %8.4f, var %8.4f (want %.4f)\n", what,
           s->lo, s->hi, lo, hi, mean, var, want_var);
    CHECK_MSG(s->lo >= lo && s->hi < hi, "%s: draws outside [%g, %g)", what, lo, hi);
    CHECK_MSG(s->lo < lo + 0.002 * (hi - lo) && s->hi > hi - 0.002 * (hi - lo),
              "%s: draws do not cover [%g, %g)", what, lo, hi);
    CHECK_MSG(fabs(mean - (lo + hi) / 2) < SE5(half), "%s: mean %g", what, mean);
    CHECK_MSG(fabs(var / want_var - 1) < 0.03, "%s: variance %g, expected %g", what, var, want_var);
}

static double corr(const double *x, const double *y, int n)
{
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++)
        mx += x[i], my += y[i];
    mx /= n, my /= n;
    for (int i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxy / sqrt(sxx * syy);
}

static void test_distribution(void)
{
    const int w = 200, h = 100; // unequal, so a swapped axis or size shows
    nd_aug_cfg cfg;
    full_cfg(&cfg);
    rstat st[6] = {{0}};
    double *zx = tu_zeros_f64(N_DRAWS), *zy = tu_zeros_f64(N_DRAWS), *th = tu_zeros_f64(N_DRAWS);
    double *tx = tu_zeros_f64(N_DRAWS);
    int flips = 0, equal_zoom = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        nd_aug_params p;
        nd_aug_random(&cfg, 2024, 1, (uint64_t)i, w, h, &p);
        double v[6] = {p.theta, p.tx, p.ty, p.shear, p.zx, p.zy};
        for (int k = 0; k < 6; k++)
            stat_add(&st[k], v[k], i == 0);
        zx[i] = p.zx, zy[i] = p.zy, th[i] = p.theta, tx[i] = p.tx;
        flips += p.flip;
        equal_zoom += p.zx == p.zy;
    }
    printf("nd_aug_random, %d draws (rotation 20, width shift 0.1 of %d, height shift 0.2 of %d, "
           "shear 10, zoom [0.8, 1.2], flip):\n",
           N_DRAWS, w, h);
    check_uniform("theta", &st[0], -20, 20);
    check_uniform("tx", &st[1], -0.1 * w, 0.1 * w);
    check_uniform("ty", &st[2], -0.2 * h, 0.2 * h);
    check_uniform("shear", &st[3], -10, 10);
    check_uniform("zx", &st[4], 0.8, 1.2);
    check_uniform("zy", &st[5], 0.8, 1.2);
    double fr = (double)flips / N_DRAWS, czz = corr(zx, zy, N_DRAWS), cth = corr(th, tx, N_DRAWS);
    printf("  flip fraction %.4f; corr(zx, zy) %.4f; corr(theta, tx) %.4f; zx == zy %d times\n", fr,
           czz, cth, equal_zoom);
    CHECK_MSG(fabs(fr - 0.5) < TOL_FRAC, "flip fraction %g", fr);
    CHECK_MSG(fabs(czz) < TOL_CORR, "zx and zy are correlated (%g): not independent draws", czz);
    CHECK_MSG(fabs(cth) < TOL_CORR, "theta and tx are correlated (%g)", cth);
    CHECK_MSG(equal_zoom < 10, "zx == zy in %d of %d draws", equal_zoom, N_DRAWS);

    // Whole pixels (Keras's int range 5): k * s, k in 0..4, s = +-1: P(0) = 1/5, others 1/10.
    nd_aug_cfg_default(&cfg);
    cfg.width_shift_range = 5;
    int hist[9] = {0}, nonint = 0;
    for (int i = 0; i < N_DRAWS; i++) {
        nd_aug_params p;
        nd_aug_random(&cfg, 5, 0, (uint64_t)i, w, h, &p);
        if (p.tx != floor(p.tx) || fabs(p.tx) > 4 || p.ty != 0)
            nonint++;
        else
            hist[(int)p.tx + 4]++;
    }
    CHECK_MSG(nonint == 0, "integral range 5: %d draws not whole pixels in -4..4", nonint);
    printf("  integral width_shift_range 5: P(tx = -4..4) =");
    for (int k = 0; k < 9; k++) {
        double pk = (double)hist[k] / N_DRAWS, want = k == 4 ? 0.2 : 0.1;
        printf(" %.3f", pk);
        CHECK_MSG(fabs(pk - want) < TOL_FRAC, "P(tx = %d) = %g, expected %g", k - 4, pk, want);
    }
    printf("\n");
    // A fractional pixel range (2.5) is continuous pixels, not a fraction of the width.
    cfg.width_shift_range = 2.5;
    rstat s25             = {0};
    for (int i = 0; i < N_DRAWS; i++) {
        nd_aug_params p;
        nd_aug_random(&cfg, 5, 0, (uint64_t)i, w, h, &p);
        stat_add(&s25, p.tx, i == 0);
    }
    check_uniform("tx 2.5px", &s25, -2.5, 2.5);
    // Keras >= 2.9's swap: width_shift_range (times the width) moves vertically.
    nd_aug_cfg_default(&cfg);
    cfg.width_shift_range  = 0.1;
    cfg.height_shift_range = 0.3;
    cfg.keras_swap_shifts  = 1;
    rstat sx = {0}, sy = {0};
    for (int i = 0; i < N_DRAWS; i++) {
        nd_aug_params p;
        nd_aug_random(&cfg, 6, 0, (uint64_t)i, w, h, &p);
        stat_add(&sx, p.tx, i == 0);
        stat_add(&sy, p.ty, i == 0);
    }
    check_uniform("swap tx", &sx, -0.3 * h, 0.3 * h);
    check_uniform("swap ty", &sy, -0.1 * w, 0.1 * w);
    free(zx);
    free(zy);
    free(th);
    free(tx);
}

int main(void)
{
    test_parity();
    test_fill_row();
    test_identity_and_flip();
    test_names_and_u8();
    test_determinism();
    test_distribution();
    return check_summary("test_augment");
}
