/*
 * test_ref.c: sanity tests of the float reference kernels (kernels/ref/) against hand-computed
 * tiny cases, naive loops written independently here, and known properties (BN statistics,
 * dropout keep rate, BCE values and clipping). Also checks each float ref against its double
 * twin. Gradients are tests/test_grad.c; fast kernels vs refs are tests/test_ops.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/nk.h"
#include "tests/check.h"
#include "tests/testutil.h"
#include "tests/ref64.h"

// Tolerances (atol, rtol), each with its reason:
// hand values are short sums of small numbers, exact or nearly so in float;
#define TOL_HAND_ATOL 1e-6
#define TOL_HAND_RTOL 1e-6
// naive float loops written here vs the refs, which sum in double: sums of < 100 terms;
#define TOL_NAIVE_ATOL 1e-5
#define TOL_NAIVE_RTOL 1e-5
// float ref vs double twin on the same inputs: both sum in double, so they differ only by the
// float rounding of outputs and of stored statistics (BN mean/invstd feed the backward).
#define TOL_TWIN_ATOL 1e-6
#define TOL_TWIN_RTOL 1e-5

// ---- helpers ----

static double *to_f64(const float *x, int64_t n)
{
    double *p = tu_zeros_f64(n);
    for (int64_t i = 0; i < n; i++)
        p[i] = x[i];
    return p;
}

static float *to_f32(const double *x, int64_t n)
{
    float *p = tu_zeros_f32(n);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)x[i];
    return p;
}

#define HAND(what, got, ref, n)  CHECK_CLOSE(what, got, ref, n, TOL_HAND_ATOL, TOL_HAND_RTOL)
#define NAIVE(what, got, ref, n) CHECK_CLOSE(what, got, ref, n, TOL_NAIVE_ATOL, TOL_NAIVE_RTOL)

// Compares a float ref output with the double twin's output (rounded to float).
static void twin_close(const char *what, const float *got, const double *ref64, int64_t n)
{
    float *ref = to_f32(ref64, n);
    CHECK_CLOSE(what, got, ref, n, TOL_TWIN_ATOL, TOL_TWIN_RTOL);
    free(ref);
}

// ---- convolution ----

static void test_conv_hand(void)
{
    // All-ones 3x3 input and 3x3 filter with "same" padding: each output counts the window's
    // taps inside the input (4 at corners, 6 at edges, 9 in the middle), plus the bias.
    const nk_conv_desc d = {.N      = 1,
                            .H      = 3,
                            .W      = 3,
                            .C      = 1,
                            .K      = 1,
                            .R      = 3,
                            .S      = 3,
                            .P      = 3,
                            .Q      = 3,
                            .stride = 1,
                            .pad_h  = 1,
                            .pad_w  = 1};
    float x[9], w[9], b[1] = {0.5f}, y[9];
    for (int i = 0; i < 9; i++)
        x[i] = w[i] = 1;
    const float want[9] = {4.5f, 6.5f, 4.5f, 6.5f, 9.5f, 6.5f, 4.5f, 6.5f, 4.5f};
    nk_conv2d_fwd_ref(&d, x, w, b, y);
    HAND("conv hand 3x3 same", y, want, 9);

    // Its backward with dy = 1: dx counts the outputs that read each input (same pattern), dw[r,s]
    // counts the inputs each tap reads, db sums dy.
    float dy[9], dx[9], dw[9], db[1];
    for (int i = 0; i < 9; i++)
        dy[i] = 1;
    const float want_dx[9] = {4, 6, 4, 6, 9, 6, 4, 6, 4};
    nk_conv2d_bwd_data_ref(&d, dy, w, dx);
    HAND("conv hand 3x3 same dx", dx, want_dx, 9);
    nk_conv2d_bwd_filter_ref(&d, x, dy, dw, db);
    HAND("conv hand 3x3 same dw", dw, want_dx, 9);
    const float want_db[1] = {9};
    HAND("conv hand 3x3 same db", db, want_db, 1);
}

// Naive convolution written another way: copy x into an explicitly zero-padded buffer, then a
// valid convolution over it with float sums. bottom/right margins come from P and Q.
static void conv_naive(const nk_conv_desc *d, const float *x, const float *w, const float *b,
                       float *y)
{
    const int Hp = (d->P - 1) * d->stride + d->R, Wp = (d->Q - 1) * d->stride + d->S;
    float *xp = tu_zeros_f32((int64_t)d->N * Hp * Wp * d->C);
    for (int n = 0; n < d->N; n++)
        for (int h = 0; h < d->H; h++)
            for (int ww = 0; ww < d->W; ww++)
                for (int c = 0; c < d->C; c++) {
                    const int hp = h + d->pad_h, wp = ww + d->pad_w;
                    if (hp >= Hp || wp >= Wp) continue; // rows/cols no window reaches
                    xp[((n * Hp + hp) * Wp + wp) * d->C + c] =
                        x[((n * d->H + h) * d->W + ww) * d->C + c];
                }
    for (int n = 0; n < d->N; n++)
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++)
                for (int k = 0; k < d->K; k++) {
                    float acc = b ? b[k] : 0;
                    for (int r = 0; r < d->R; r++)
                        for (int s = 0; s < d->S; s++)
                            for (int c = 0; c < d->C; c++)
                                acc += xp[((n * Hp + p * d->stride + r) * Wp + q * d->stride + s) *
                                              d->C +
                                          c] *
                                       w[((r * d->S + s) * d->C + c) * d->K + k];
                    y[((n * d->P + p) * d->Q + q) * d->K + k] = acc;
                }
    free(xp);
}

static double fdot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

// Forward vs the naive loop, then the adjoint identities that define the two backwards:
// <conv(x, w), dy> = <x, bwd_data(dy, w)> = <w, bwd_filter(x, dy)> (no bias).
static void check_conv_desc(const char *name, nk_conv_desc d, uint64_t seed)
{
    const int64_t nx = (int64_t)d.N * d.H * d.W * d.C, nw = (int64_t)d.R * d.S * d.C * d.K;
    const int64_t ny = (int64_t)d.N * d.P * d.Q * d.K;
    float *x = tu_rand_f32(nx, seed, -1, 1), *w = tu_rand_f32(nw, seed + 1, -1, 1);
    float *b = tu_rand_f32(d.K, seed + 2, -1, 1), *dy = tu_rand_f32(ny, seed + 3, -1, 1);
    float *y = tu_nan_f32(ny), *y_naive = tu_nan_f32(ny), *dx = tu_nan_f32(nx),
          *dw = tu_nan_f32(nw), *db = tu_nan_f32(d.K);
    char what[96];

    nk_conv2d_fwd_ref(&d, x, w, b, y);
    conv_naive(&d, x, w, b, y_naive);
    snprintf(what, sizeof what, "conv %s fwd vs naive", name);
    NAIVE(what, y, y_naive, ny);

    nk_conv2d_fwd_ref(&d, x, w, NULL, y);
    nk_conv2d_bwd_data_ref(&d, dy, w, dx);
    nk_conv2d_bwd_filter_ref(&d, x, dy, dw, db);
    const double lhs = fdot(y, dy, ny), rx = fdot(x, dx, nx), rw = fdot(w, dw, nw);
    CHECK_MSG(fabs(lhs - rx) <= 1e-5 * (1 + fabs(lhs)), "conv %s: <y,dy>=%.9g <x,dx>=%.9g", name,
              lhs, rx);
    CHECK_MSG(fabs(lhs - rw) <= 1e-5 * (1 + fabs(lhs)), "conv %s: <y,dy>=%.9g <w,dw>=%.9g", name,
              lhs, rw);
    printf("ok   conv %s adjoint: <y,dy>=%.6f <x,dx>=%.6f <w,dw>=%.6f\n", name, lhs, rx, rw);

    // db = sum of dy over N, P, Q.
    float *db_naive = tu_zeros_f32(d.K);
    for (int64_t i = 0; i < ny; i++)
        db_naive[i % d.K] += dy[i];
    snprintf(what, sizeof what, "conv %s db", name);
    NAIVE(what, db, db_naive, d.K);

    // Double twin on the same inputs.
    double *x64 = to_f64(x, nx), *w64 = to_f64(w, nw), *b64 = to_f64(b, d.K);
    double *dy64 = to_f64(dy, ny), *y64 = calloc((size_t)ny, sizeof(double));
    double *dx64 = calloc((size_t)nx, sizeof(double)), *dw64 = calloc((size_t)nw, sizeof(double));
    double *db64 = calloc((size_t)d.K, sizeof(double));
    nk_conv2d_fwd_ref(&d, x, w, b, y);
    nk_conv2d_fwd_ref_f64(&d, x64, w64, b64, y64);
    nk_conv2d_bwd_data_ref_f64(&d, dy64, w64, dx64);
    nk_conv2d_bwd_filter_ref_f64(&d, x64, dy64, dw64, db64);
    snprintf(what, sizeof what, "conv %s fwd f32 vs f64", name);
    twin_close(what, y, y64, ny);
    snprintf(what, sizeof what, "conv %s dx f32 vs f64", name);
    twin_close(what, dx, dx64, nx);
    snprintf(what, sizeof what, "conv %s dw f32 vs f64", name);
    twin_close(what, dw, dw64, nw);

    free(x), free(w), free(b), free(dy), free(y), free(y_naive), free(dx), free(dw), free(db);
    free(db_naive), free(x64), free(w64), free(b64), free(dy64), free(y64), free(dx64);
    free(dw64), free(db64);
}

static void test_conv(void)
{
    test_conv_hand();
    // A 3x3 conv on a 4x4 input: "same", stride 2 "same", and stride 2 with no top padding, where
    // P = 2 implies one zero row at the bottom (and column at the right).
    const nk_conv_desc same      = {2, 4, 4, 3, 2, 3, 3, 4, 4, 1, 1, 1};
    const nk_conv_desc s2        = {2, 4, 4, 3, 2, 3, 3, 2, 2, 2, 1, 1};
    const nk_conv_desc s2_bottom = {2, 4, 4, 3, 2, 3, 3, 2, 2, 2, 0, 0};
    const nk_conv_desc one_s2    = {1, 7, 7, 5, 3, 1, 1, 4, 4, 2, 0, 0};
    const nk_conv_desc seven_s2  = {1, 13, 13, 3, 4, 7, 7, 4, 4, 2, 0, 0};
    check_conv_desc("3x3 s1 p1 4x4", same, 10);
    check_conv_desc("3x3 s2 p1 4x4", s2, 20);
    check_conv_desc("3x3 s2 p0+bottom 4x4", s2_bottom, 30);
    check_conv_desc("1x1 s2 7x7", one_s2, 40);
    check_conv_desc("7x7 s2 13x13", seven_s2, 50);

    // db == NULL is allowed and leaves the other outputs alone.
    float x[16], dy[16], dw[9];
    for (int i = 0; i < 16; i++)
        x[i] = dy[i] = (float)i;
    const nk_conv_desc d = {1, 4, 4, 1, 1, 3, 3, 4, 4, 1, 1, 1};
    nk_conv2d_bwd_filter_ref(&d, x, dy, dw, NULL);
    CHECK(isfinite(dw[4]) && dw[4] == 1240); // centre tap: sum of i*i over 0..15
}

// ---- batch normalisation ----

static void test_bn(void)
{
    const int64_t M = 7 * 5 * 3;
    const int C     = 7;
    const float eps = 1.001e-5f;
    float *x = tu_rand_f32(M * C, 100, -2, 5), *y = tu_nan_f32(M * C);
    float *gamma = tu_zeros_f32(C), *beta = tu_zeros_f32(C), *mean = tu_nan_f32(C),
          *invstd = tu_nan_f32(C);
    for (int c = 0; c < C; c++)
        gamma[c] = 1;
    nk_bn_fwd_train_ref(M, C, x, gamma, beta, eps, 0, y, mean, invstd);
    // With gamma 1 and beta 0, each channel of y has mean 0 and variance var/(var + eps).
    double worst_mean = 0, worst_var = 0;
    for (int c = 0; c < C; c++) {
        double s = 0, s2 = 0, sx = 0, sx2 = 0;
        for (int64_t m = 0; m < M; m++) {
            s += y[m * C + c], s2 += (double)y[m * C + c] * y[m * C + c];
            sx += x[m * C + c];
        }
        for (int64_t m = 0; m < M; m++)
            sx2 += pow(x[m * C + c] - sx / M, 2);
        const double var_x = sx2 / M; // biased
        worst_mean         = fmax(worst_mean, fabs(s / M));
        worst_var          = fmax(worst_var, fabs(s2 / M - var_x / (var_x + eps)));
        CHECK(fabs(mean[c] - sx / M) <= 1e-6 * (1 + fabs(sx / M)));
        CHECK(fabs(invstd[c] - 1 / sqrt(var_x + eps)) <= 1e-6 * invstd[c]);
    }
    printf("%s bn train: per-channel |mean(y)| <= %.2g, |var(y) - var/(var+eps)| <= %.2g\n",
           worst_mean < 1e-6 && worst_var < 1e-5 ? "ok  " : "FAIL", worst_mean, worst_var);
    CHECK(worst_mean < 1e-6);
    CHECK(worst_var < 1e-5);

    // Backward: dx of a normalised channel is orthogonal to 1 and to xhat (both sums vanish).
    float *dy = tu_rand_f32(M * C, 101, -1, 1), *dx = tu_nan_f32(M * C), *dg = tu_nan_f32(C),
          *dbeta = tu_nan_f32(C);
    for (int c = 0; c < C; c++)
        gamma[c] = 1.5f;
    nk_bn_bwd_train_ref(M, C, x, NULL, dy, gamma, mean, invstd, dx, dg, dbeta);
    double worst = 0;
    for (int c = 0; c < C; c++) {
        double s = 0, sxh = 0;
        for (int64_t m = 0; m < M; m++) {
            s += dx[m * C + c];
            sxh += dx[m * C + c] * (x[m * C + c] - mean[c]) * invstd[c];
        }
        worst = fmax(worst, fmax(fabs(s), fabs(sxh)));
    }
    printf("%s bn train bwd: |sum dx|, |sum dx*xhat| <= %.2g\n", worst < 1e-4 ? "ok  " : "FAIL",
           worst);
    CHECK(worst < 1e-4);

    // Inference, by hand: gamma (x - mmean) / sqrt(mvar + eps) + beta with eps = 0.
    const float xi[4] = {3, -1, 1, 7}, g2[2] = {2, 0.5f}, b2[2] = {1, -1};
    const float mm[2] = {1, 3}, mv[2] = {4, 16};
    float yi[4], dxi[4], dgi[2], dbi[2];
    nk_bn_fwd_infer_ref(2, 2, xi, g2, b2, mm, mv, 0, yi);
    const float want[4] = {3, -1.5f, 1, -0.5f};
    HAND("bn infer hand", yi, want, 4);
    const float dyi[4] = {1, 1, 2, 4};
    nk_bn_bwd_infer_ref(2, 2, xi, dyi, g2, mm, mv, 0, dxi, dgi, dbi);
    const float want_dx[4] = {1, 0.125f, 2, 0.5f}, want_dg[2] = {1 + 2 * 0, -1 + 4 * 1};
    const float want_db[2] = {3, 5};
    HAND("bn infer bwd hand dx", dxi, want_dx, 4);
    HAND("bn infer bwd hand dgamma", dgi, want_dg, 2);
    HAND("bn infer bwd hand dbeta", dbi, want_db, 2);

    // Double twin.
    double *x64 = to_f64(x, M * C), *g64 = to_f64(gamma, C), *b64 = to_f64(beta, C);
    double *dy64 = to_f64(dy, M * C), *y64 = calloc((size_t)(M * C), sizeof(double));
    double *mean64 = calloc(C, sizeof(double)), *is64 = calloc(C, sizeof(double));
    double *dx64 = calloc((size_t)(M * C), sizeof(double));
    double *dg64 = calloc(C, sizeof(double)), *db64 = calloc(C, sizeof(double));
    nk_bn_fwd_train_ref(M, C, x, gamma, beta, eps, 0, y, mean, invstd);
    nk_bn_fwd_train_ref_f64(M, C, x64, g64, b64, eps, 0, y64, mean64, is64);
    nk_bn_bwd_train_ref(M, C, x, NULL, dy, gamma, mean, invstd, dx, dg, dbeta);
    nk_bn_bwd_train_ref_f64(M, C, x64, NULL, dy64, g64, mean64, is64, dx64, dg64, db64);
    twin_close("bn train fwd f32 vs f64", y, y64, M * C);
    twin_close("bn train invstd f32 vs f64", invstd, is64, C);
    twin_close("bn train dx f32 vs f64", dx, dx64, M * C);
    twin_close("bn train dgamma f32 vs f64", dg, dg64, C);

    free(x), free(y), free(gamma), free(beta), free(mean), free(invstd), free(dy), free(dx);
    free(dg), free(dbeta), free(x64), free(g64), free(b64), free(dy64), free(y64), free(mean64);
    free(is64), free(dx64), free(dg64), free(db64);
}

// ---- elementwise, padding, pooling ----

static void test_relu_add(void)
{
    float x[4] = {-1, 0, 2, -0.5f}, y[4], g[4] = {5, 6, 7, 8};
    nk_relu_fwd_ref(4, x, y);
    const float want[4] = {0, 0, 2, 0};
    HAND("relu fwd", y, want, 4);
    nk_relu_bwd_ref(4, y, g, g); // in place
    const float want_dx[4] = {0, 0, 7, 0};
    HAND("relu bwd in place", g, want_dx, 4);
    float s[4];
    nk_add_fwd_ref(4, x, want_dx, s);
    const float want_s[4] = {-1, 0, 9, -0.5f};
    HAND("add", s, want_s, 4);
}

static void test_zeropad(void)
{
    // [1 2; 3 4] with one row on top and one column on the right.
    const float x[4] = {1, 2, 3, 4};
    float y[9];
    for (int i = 0; i < 9; i++)
        y[i] = NAN;
    nk_zeropad_fwd_ref(1, 2, 2, 1, 1, 0, 0, 1, x, y);
    const float want[9] = {0, 0, 0, 1, 2, 0, 3, 4, 0};
    HAND("zeropad fwd", y, want, 9);
    const float dy[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float dx[4];
    nk_zeropad_bwd_ref(1, 2, 2, 1, 1, 0, 0, 1, dy, dx);
    const float want_dx[4] = {4, 5, 7, 8};
    HAND("zeropad bwd (crop)", dx, want_dx, 4);

    // Two channels, two images, all four sides: the interior of y is x.
    float x2[2 * 3 * 2 * 2], y2[2 * 6 * 5 * 2], back[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; i++)
        x2[i] = (float)(i + 1);
    nk_zeropad_fwd_ref(2, 3, 2, 2, 1, 2, 2, 1, x2, y2);
    nk_zeropad_bwd_ref(2, 3, 2, 2, 1, 2, 2, 1, y2, back);
    HAND("zeropad bwd(fwd(x)) == x", back, x2, 24);
    double total = 0;
    for (int i = 0; i < 120; i++)
        total += y2[i];
    CHECK(total == 300); // 1 + ... + 24: the border holds only zeros
}

static void test_maxpool(void)
{
    // 4x4 input 0..15 scrambled, 2x2 windows, stride 2.
    const float x[16]    = {3, 1, 12, 4, 0, 9, 7, 2, 15, 5, 6, 14, 10, 8, 13, 11};
    const nk_conv_desc d = {1, 4, 4, 1, 1, 2, 2, 2, 2, 2, 0, 0};
    float y[4], dx[16];
    nk_maxpool_fwd_ref(&d, x, y);
    const float want[4] = {9, 12, 15, 14};
    HAND("maxpool 2x2 s2 fwd", y, want, 4);
    const float dy[4] = {1, 2, 3, 4};
    nk_maxpool_bwd_ref(&d, x, dy, dx);
    const float want_dx[16] = {0, 0, 2, 0, 0, 1, 0, 0, 3, 0, 0, 4, 0, 0, 0, 0};
    HAND("maxpool 2x2 s2 bwd", dx, want_dx, 16);

    // Ties go to the first maximum in row-major (r, s) order.
    const float t[16] = {1, 1, 0, 5, 1, 1, 5, 0, 2, 0, 7, 7, 0, 2, 7, 7};
    nk_maxpool_bwd_ref(&d, t, dy, dx);
    const float want_tie[16] = {1, 0, 0, 2, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0};
    HAND("maxpool ties route to the first max", dx, want_tie, 16);

    // 3x3 stride 2 on 5x5: overlapping windows send two dy to the shared maximum.
    float x5[25];
    for (int i = 0; i < 25; i++)
        x5[i] = (float)(i % 5 == 2 && i / 5 == 2 ? 100 : i % 7);
    const nk_conv_desc d3 = {1, 5, 5, 1, 1, 3, 3, 2, 2, 2, 0, 0};
    float y3[4], dx5[25];
    const float dy3[4] = {1, 2, 3, 4};
    nk_maxpool_fwd_ref(&d3, x5, y3);
    const float want3[4] = {100, 100, 100, 100};
    HAND("maxpool 3x3 s2 shared max fwd", y3, want3, 4);
    nk_maxpool_bwd_ref(&d3, x5, dy3, dx5);
    CHECK(dx5[12] == 10);
    double rest = 0;
    for (int i = 0; i < 25; i++)
        rest += i == 12 ? 0 : fabs(dx5[i]);
    CHECK(rest == 0);
}

static void test_gap(void)
{
    const float x[6] = {1, 2, 3, 4, 5, 6}; // N=1, HW=3, C=2
    float y[2], dx[6];
    nk_gap_fwd_ref(1, 3, 2, x, y);
    const float want[2] = {3, 4};
    HAND("gap fwd", y, want, 2);
    const float dy[2] = {3, 6};
    nk_gap_bwd_ref(1, 3, 2, dy, dx);
    const float want_dx[6] = {1, 2, 1, 2, 1, 2};
    HAND("gap bwd", dx, want_dx, 6);
}

// ---- dense ----

static void test_dense(void)
{
    const float x[2] = {1, 2}, w[6] = {1, 2, 3, 4, 5, 6}, b[3] = {1, -20, 0};
    float y[3];
    nk_dense_fwd_ref(1, 2, 3, x, w, b, 0, y);
    const float want[3] = {10, -8, 15};
    HAND("dense fwd", y, want, 3);
    nk_dense_fwd_ref(1, 2, 3, x, w, b, 1, y);
    const float want_relu[3] = {10, 0, 15};
    HAND("dense fwd relu", y, want_relu, 3);
    nk_dense_fwd_ref(1, 2, 3, x, w, NULL, 0, y);
    const float want_nob[3] = {9, 12, 15};
    HAND("dense fwd no bias", y, want_nob, 3);
    const float dy[3] = {1, 1, 1};
    float dx[2], dw[6], db[3];
    nk_dense_bwd_data_ref(1, 2, 3, dy, w, dx);
    const float want_dx[2] = {6, 15};
    HAND("dense bwd data", dx, want_dx, 2);
    nk_dense_bwd_filter_ref(1, 2, 3, x, dy, dw, db);
    const float want_dw[6] = {1, 1, 1, 2, 2, 2};
    HAND("dense bwd filter dw", dw, want_dw, 6);
    HAND("dense bwd filter db", db, dy, 3);

    // Larger, against the double twin.
    const int N = 7, C = 33, K = 5;
    float *xs = tu_rand_f32(N * C, 200, -1, 1), *ws = tu_rand_f32(C * K, 201, -1, 1),
          *bs   = tu_rand_f32(K, 202, -1, 1);
    float *ys   = tu_nan_f32(N * K);
    double *x64 = to_f64(xs, N * C), *w64 = to_f64(ws, C * K), *b64 = to_f64(bs, K);
    double *y64 = calloc((size_t)(N * K), sizeof(double));
    nk_dense_fwd_ref(N, C, K, xs, ws, bs, 1, ys);
    nk_dense_fwd_ref_f64(N, C, K, x64, w64, b64, 1, y64);
    twin_close("dense fwd relu f32 vs f64", ys, y64, N * K);
    free(xs), free(ws), free(bs), free(ys), free(x64), free(w64), free(b64), free(y64);
}

// ---- dropout ----

static void test_dropout(void)
{
    const int64_t n = 200000;
    float *x = tu_zeros_f32(n), *y = tu_nan_f32(n), *dx = tu_nan_f32(n);
    for (int64_t i = 0; i < n; i++)
        x[i] = 1;
    const float rates[3] = {0.5f, 0.3f, 0.9f};
    for (int j = 0; j < 3; j++) {
        const float rate = rates[j], scale = 1 / (1 - rate);
        const uint64_t key = 1234 + (uint64_t)j;
        nk_dropout_fwd_ref(n, rate, key, x, y);
        nk_dropout_bwd_ref(n, rate, key, x, dx); // dy = 1: dx is the mask times the scale
        int64_t kept = 0, odd = 0, mismatch = 0;
        double sum = 0;
        for (int64_t i = 0; i < n; i++) {
            kept += y[i] != 0;
            odd += y[i] != 0 && y[i] != scale;
            mismatch += y[i] != dx[i];
            sum += y[i];
        }
        const double frac = (double)kept / n, mean = sum / n;
        // Binomial: sd of the kept fraction is sqrt(r(1-r)/n) <= 0.0012; 5 sd is 0.006.
        const int ok = fabs(frac - (1 - rate)) < 0.006 && fabs(mean - 1) < 0.006 / (1 - rate) &&
                       odd == 0 && mismatch == 0;
        printf("%s dropout rate %.1f: kept %.4f (want %.1f), mean %.4f (want 1), bwd mask %s\n",
               ok ? "ok  " : "FAIL", rate, frac, 1 - rate, mean, mismatch ? "differs" : "same");
        CHECK(ok);
    }
    // rate 0 is the identity; another key gives another mask.
    nk_dropout_fwd_ref(n, 0, 7, x, y);
    HAND("dropout rate 0 is identity", y, x, n);
    nk_dropout_fwd_ref(n, 0.5f, 1, x, y);
    nk_dropout_fwd_ref(n, 0.5f, 2, x, dx);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++)
        differ += y[i] != dx[i];
    CHECK(differ > n / 3);
    // Keep decision matches the documented hash: element i kept iff nk_u01(key, i) >= rate.
    int64_t wrong = 0;
    for (int64_t i = 0; i < 1000; i++)
        wrong += (y[i] != 0) != (nk_u01(1, (uint64_t)i) >= 0.5f);
    CHECK(wrong == 0);

    // Double twin, same mask.
    float *xr   = tu_rand_f32(n, 300, -1, 1);
    double *x64 = to_f64(xr, n), *y64 = calloc((size_t)n, sizeof(double));
    nk_dropout_fwd_ref(n, 0.3f, 99, xr, y);
    nk_dropout_fwd_ref_f64(n, (double)0.3f, 99, x64, y64);
    twin_close("dropout fwd f32 vs f64", y, y64, n);
    free(x), free(y), free(dx), free(xr), free(x64), free(y64);
}

// ---- BCE ----

static void test_bce(void)
{
    const double zmax = log((1 - NK_BCE_EPS) / NK_BCE_EPS); // 16.118...
    // One sample at a time: loss = l.
    struct {
        float z, t;
        double want;
    } cases[] = {
        {0, 1, log(2.0)},
        {0, 0, log(2.0)},
        {2, 1, log1p(exp(-2.0))},
        {-3, 0, log1p(exp(-3.0))},
        {-3, 1, 3 + log1p(exp(-3.0))},
        {0, 0.25f, log(2.0)},       // soft label: the t*z term vanishes at z = 0
        {100, 0, -log(NK_BCE_EPS)}, // clipped: p = 1 - 1e-7
        {100, 1, -log1p(-NK_BCE_EPS)},
        {-100, 1, -log(NK_BCE_EPS)},
        {-100, 0, -log1p(-NK_BCE_EPS)},
    };
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    double worst     = 0;
    for (int i = 0; i < ncases; i++) {
        const double l   = nk_bce_fwd_ref(1, &cases[i].z, &cases[i].t, NULL, NULL);
        const double rel = fabs(l - cases[i].want) / cases[i].want;
        worst            = fmax(worst, rel);
        CHECK_MSG(rel < 1e-6, "bce z=%g t=%g: got %.12g want %.12g", cases[i].z, cases[i].t, l,
                  cases[i].want);
    }
    printf("%s bce known values: %d cases, max rel %.2g\n", worst < 1e-6 ? "ok  " : "FAIL", ncases,
           worst);

    // Weighted mean over N (not over sum of weights), p written and clipped.
    const float z[4] = {0, 100, -100, 2}, t[4] = {1, 0, 1, 1}, wt[4] = {2, 1, 0.5f, 3};
    float p[4], dz[4];
    const double l = nk_bce_fwd_ref(4, z, t, wt, p);
    const double want_l =
        (2 * log(2.0) + 1 * -log(NK_BCE_EPS) + 0.5 * -log(NK_BCE_EPS) + 3 * log1p(exp(-2.0))) / 4;
    CHECK_MSG(fabs(l - want_l) < 1e-6 * want_l, "bce weighted: got %.12g want %.12g", l, want_l);
    const float want_p[4] = {0.5f, (float)(1 - NK_BCE_EPS), (float)NK_BCE_EPS,
                             (float)(1 / (1 + exp(-2.0)))};
    HAND("bce p (clipped)", p, want_p, 4);
    nk_bce_bwd_ref(4, z, t, wt, dz);
    const float want_dz[4] = {2 * (0.5f - 1) / 4, 0, 0, (float)(3 * (1 / (1 + exp(-2.0)) - 1) / 4)};
    HAND("bce dz (0 in the clip region)", dz, want_dz, 4);

    // Just inside the clip range the gradient is live, just outside it is 0.
    const float zb[2] = {(float)zmax - 0.01f, -(float)zmax - 0.01f}, tb[2] = {0, 0};
    nk_bce_bwd_ref(2, zb, tb, NULL, dz);
    CHECK(dz[0] > 0.4f && dz[1] == 0);

    // A NaN logit gives a NaN loss rather than a clipped number.
    const float zn[1] = {NAN}, tn[1] = {1};
    CHECK(isnan(nk_bce_fwd_ref(1, zn, tn, NULL, NULL)));

    // Double twin.
    const int N = 33;
    float *zr = tu_rand_f32(N, 400, -20, 20), *tr = tu_rand_f32(N, 401, 0, 1),
          *wr   = tu_rand_f32(N, 402, 0.5f, 2);
    double *z64 = to_f64(zr, N), *t64 = to_f64(tr, N), *w64 = to_f64(wr, N);
    double *dz64     = calloc(N, sizeof(double));
    float *dzr       = tu_nan_f32(N);
    const double l32 = nk_bce_fwd_ref(N, zr, tr, wr, NULL);
    const double l64 = nk_bce_fwd_ref_f64(N, z64, t64, w64, NULL);
    CHECK_MSG(fabs(l32 - l64) <= 1e-12 * fabs(l64), "bce f32 %.15g vs f64 %.15g", l32, l64);
    nk_bce_bwd_ref(N, zr, tr, wr, dzr);
    nk_bce_bwd_ref_f64(N, z64, t64, w64, dz64);
    twin_close("bce dz f32 vs f64", dzr, dz64, N);
    free(zr), free(tr), free(wr), free(z64), free(t64), free(w64), free(dz64), free(dzr);
}

// ---- GEMM ----

static void test_gemm(void)
{
    const int M = 7, N = 5, K = 9, pad = 3; // leading dimensions larger than the rows
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            float *A    = tu_rand_f32((int64_t)(ta ? K : M) * lda, 500, -1, 1);
            float *B    = tu_rand_f32((int64_t)(tb ? N : K) * ldb, 501, -1, 1);
            float *C    = tu_rand_f32((int64_t)M * ldc, 502, -1, 1),
                  *want = tu_zeros_f32((int64_t)M * ldc);
            memcpy(want, C, sizeof(float) * (size_t)(M * ldc));
            const float alpha = 1.5f, beta = 0.5f;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    float acc = 0;
                    for (int k = 0; k < K; k++)
                        acc += (ta ? A[k * lda + i] : A[i * lda + k]) *
                               (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    want[i * ldc + j] = alpha * acc + beta * want[i * ldc + j];
                }
            nk_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            char what[64];
            snprintf(what, sizeof what, "sgemm ta=%d tb=%d beta=0.5", ta, tb);
            NAIVE(what, C, want, (int64_t)M * ldc); // padding columns must be untouched too

            // beta == 0 ignores NaNs in C; the double twin agrees.
            for (int i = 0; i < M * ldc; i++)
                C[i] = NAN;
            double *A64 = to_f64(A, (int64_t)(ta ? K : M) * lda);
            double *B64 = to_f64(B, (int64_t)(tb ? N : K) * ldb);
            double *C64 = calloc((size_t)(M * ldc), sizeof(double));
            nk_sgemm_ref(ta, tb, M, N, K, 1, A, lda, B, ldb, 0, C, ldc);
            nk_sgemm_ref_f64(ta, tb, M, N, K, 1, A64, lda, B64, ldb, 0, C64, ldc);
            int finite = 1;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    finite &= isfinite(C[i * ldc + j]) != 0;
            CHECK_MSG(finite, "sgemm ta=%d tb=%d: beta=0 let NaN through", ta, tb);
            for (int i = 0; i < M; i++) // compare the M x N block only
                for (int j = 0; j < N; j++)
                    C64[i * ldc + j] -= C[i * ldc + j];
            double worst = 0;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    worst = fmax(worst, fabs(C64[i * ldc + j]));
            CHECK_MSG(worst < 1e-6, "sgemm ta=%d tb=%d f32 vs f64: %.3g", ta, tb, worst);
            free(A), free(B), free(C), free(want), free(A64), free(B64), free(C64);
        }
    }
}

int main(void)
{
    test_conv();
    test_bn();
    test_relu_add();
    test_zeropad();
    test_maxpool();
    test_gap();
    test_dense();
    test_dropout();
    test_bce();
    test_gemm();
    return check_summary("test_ref");
}
