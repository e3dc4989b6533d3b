/*
 * test_grad.c: central-difference gradient checks, in double, of every backward reference kernel
 * (the _f64 twins of kernels/ref/, declared in tests/ref64.h). Not a float accuracy test: that
 * is tests/test_ref.c (refs vs hand values) and tests/test_ops.c (fast kernels vs refs).
 * Objective L = sum(y * R) for a fixed random R (BCE: the loss itself); STYLE.md section 6.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/nk.h"
#include "tests/check.h"
#include "tests/testutil.h"
#include "tests/ref64.h"

#define GRAD_EPS         1e-3 // central-difference step (STYLE.md section 6)
#define GRAD_RTOL        1e-4 // fail level for |a-n| / max(|a|,|n|,GRAD_FLOOR) (STYLE.md section 6)
#define GRAD_WARN        3e-5 // warn level: O(eps^2) truncation of nonlinear ops (BN, M=7) is ~1e-5
#define GRAD_FLOOR       1e-8 // denominator floor, so exact zeros on both sides compare equal
#define GRAD_MAX_SAMPLES 200  // entries checked per tensor when it has more (keeps runtime bounded)

static double max_rel_all = 0.0; // over every check, printed at the end

// ---- helpers ----

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

// The objective, recomputed from whatever state st points at (the entry being perturbed lives
// in that state).
typedef double (*loss_fn)(void *st);

// Compares the analytic gradient g of L with respect to the n values v (read by L through st)
// with central differences: every entry when n <= GRAD_MAX_SAMPLES, else a seeded random subset.
static void grad_check(const char *what, loss_fn L, void *st, double *v, const double *g, int64_t n,
                       uint64_t key)
{
    const int64_t m = n <= GRAD_MAX_SAMPLES ? n : GRAD_MAX_SAMPLES;
    double max_rel  = 0.0;
    int64_t bad     = 0;
    for (int64_t j = 0; j < m; j++) {
        const int64_t i  = n == m ? j : (int64_t)(nk_u01(key, (uint64_t)j) * (double)n);
        const double v0  = v[i];
        v[i]             = v0 + GRAD_EPS;
        const double lp  = L(st);
        v[i]             = v0 - GRAD_EPS;
        const double lm  = L(st);
        v[i]             = v0;
        const double num = (lp - lm) / (2 * GRAD_EPS);
        const double den = fmax(fmax(fabs(g[i]), fabs(num)), GRAD_FLOOR);
        double rel       = fabs(g[i] - num) / den;
        if (!(rel == rel)) rel = INFINITY; // NaN in the analytic gradient
        if (rel > max_rel) max_rel = rel;
        if (!(rel < GRAD_RTOL)) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: analytic %.12g numeric %.12g rel %.3g\n", what,
                        (long long)i, g[i], num, rel);
            bad++;
        }
    }
    if (max_rel > max_rel_all) max_rel_all = max_rel;
    printf("%s %-44s n=%-6lld checked=%-4lld max_rel=%.2e\n",
           bad                   ? "FAIL"
           : max_rel > GRAD_WARN ? "warn"
                                 : "ok  ",
           what, (long long)n, (long long)m, max_rel);
    CHECK_MSG(bad == 0, "%s: %lld of %lld entries over rel %.0e", what, (long long)bad,
              (long long)m, GRAD_RTOL);
}

// ---- convolution (optionally behind a zero padding, as Keras's conv1_pad + conv1_conv) ----

typedef struct {
    nk_conv_desc d;
    int pt, pb, pl, pr; // zero padding applied to x0 to make x (all 0: x is the input)
    double *x0, *x, *w, *b, *y, *R;
} conv_st;

static double conv_loss(void *p)
{
    conv_st *s            = p;
    const nk_conv_desc *d = &s->d;
    if (s->x0 != s->x)
        nk_zeropad_fwd_ref_f64(d->N, d->H - s->pt - s->pb, d->W - s->pl - s->pr, d->C, s->pt, s->pb,
                               s->pl, s->pr, s->x0, s->x);
    nk_conv2d_fwd_ref_f64(d, s->x, s->w, s->b, s->y);
    return dot(s->y, s->R, (int64_t)d->N * d->P * d->Q * d->K);
}

// H and W in d are the conv's input size; the checked input x0 is H-pt-pb by W-pl-pr.
static void check_conv(const char *name, nk_conv_desc d, int pt, int pb, int pl, int pr,
                       int with_bias, uint64_t seed)
{
    conv_st s    = {.d = d, .pt = pt, .pb = pb, .pl = pl, .pr = pr};
    const int H0 = d.H - pt - pb, W0 = d.W - pl - pr;
    const int64_t nx0 = (int64_t)d.N * H0 * W0 * d.C, nx = (int64_t)d.N * d.H * d.W * d.C;
    const int64_t nw = (int64_t)d.R * d.S * d.C * d.K, ny = (int64_t)d.N * d.P * d.Q * d.K;
    const int padded = pt || pb || pl || pr;
    s.x0             = tu_rand_f64(nx0, seed + 1, -1, 1);
    s.x              = padded ? tu_zeros_f64(nx) : s.x0;
    s.w              = tu_rand_f64(nw, seed + 2, -1, 1);
    s.b              = with_bias ? tu_rand_f64(d.K, seed + 3, -1, 1) : NULL;
    s.y              = tu_zeros_f64(ny);
    s.R              = tu_rand_f64(ny, seed + 4, -1, 1);
    conv_loss(&s); // fills s.x when padded

    double *dx = tu_nan_f64(nx), *dx0 = padded ? tu_nan_f64(nx0) : dx;
    double *dw = tu_nan_f64(nw), *db = tu_nan_f64(d.K);
    nk_conv2d_bwd_data_ref_f64(&d, s.R, s.w, dx);
    if (padded) nk_zeropad_bwd_ref_f64(d.N, H0, W0, d.C, pt, pb, pl, pr, dx, dx0);
    nk_conv2d_bwd_filter_ref_f64(&d, s.x, s.R, dw, with_bias ? db : NULL);

    char what[96];
    snprintf(what, sizeof what, "conv %s dx", name);
    grad_check(what, conv_loss, &s, s.x0, dx0, nx0, seed + 5);
    snprintf(what, sizeof what, "conv %s dw", name);
    grad_check(what, conv_loss, &s, s.w, dw, nw, seed + 6);
    if (with_bias) {
        snprintf(what, sizeof what, "conv %s db", name);
        grad_check(what, conv_loss, &s, s.b, db, d.K, seed + 7);
    } else {
        for (int k = 0; k < d.K; k++)
            CHECK(isnan(db[k])); // db == NULL must not be written
    }
    if (padded) {
        free(s.x);
        free(dx0);
    }
    free(s.x0);
    free(s.w);
    free(s.b);
    free(s.y);
    free(s.R);
    free(dx);
    free(dw);
    free(db);
}

// P and Q from the input size, padding (top/left explicit, bottom/right given) and stride.
static nk_conv_desc conv_desc(int N, int H, int W, int C, int K, int R, int S, int stride,
                              int pad_h, int pad_w, int pad_b, int pad_r)
{
    nk_conv_desc d = {.N      = N,
                      .H      = H,
                      .W      = W,
                      .C      = C,
                      .K      = K,
                      .R      = R,
                      .S      = S,
                      .stride = stride,
                      .pad_h  = pad_h,
                      .pad_w  = pad_w};
    d.P            = (H + pad_h + pad_b - R) / stride + 1;
    d.Q            = (W + pad_w + pad_r - S) / stride + 1;
    return d;
}

static void test_conv(void)
{
    // 1x1 stride 1 (bottleneck conv), C = 1 so that a c/k mix-up in w shows.
    check_conv("1x1 s1 N7 7x33 C1 K33", conv_desc(7, 7, 33, 1, 33, 1, 1, 1, 0, 0, 0, 0), 0, 0, 0, 0,
               1, 100);
    check_conv("1x1 s1 N7 7x7 C33 K7 nobias", conv_desc(7, 7, 7, 33, 7, 1, 1, 1, 0, 0, 0, 0), 0, 0,
               0, 0, 0, 110);
    // 1x1 stride 2 (projection shortcut): odd rows/columns of x get no gradient at all.
    check_conv("1x1 s2 N7 33x7 C7 K33", conv_desc(7, 33, 7, 7, 33, 1, 1, 2, 0, 0, 0, 0), 0, 0, 0, 0,
               1, 200);
    // 3x3 stride 1 pad 1 ("same").
    check_conv("3x3 s1 p1 N1 33x33 C7 K7", conv_desc(1, 33, 33, 7, 7, 3, 3, 1, 1, 1, 1, 1), 0, 0, 0,
               0, 1, 300);
    check_conv("3x3 s1 p1 N7 7x7 C7 K1", conv_desc(7, 7, 7, 7, 1, 3, 3, 1, 1, 1, 1, 1), 0, 0, 0, 0,
               1, 310);
    // 7x7 stride 2 pad 0 on an input padded by 3 first (Keras conv1_pad + conv1_conv).
    check_conv("7x7 s2 pad3+p0 N1 33x33 C7 K7", conv_desc(1, 39, 39, 7, 7, 7, 7, 2, 0, 0, 0, 0), 3,
               3, 3, 3, 1, 400);
    // 3x3 stride 2 with zeros only where P and Q imply them: top 0 / bottom 2 rows, left 1 /
    // right 1 column.
    check_conv("3x3 s2 pt0 pb2 pl1 pr1 N7 7x33 C7 K7",
               conv_desc(7, 7, 33, 7, 7, 3, 3, 2, 0, 1, 2, 1), 0, 0, 0, 0, 1, 500);
}

// ---- batch normalisation ----

typedef struct {
    int64_t M;
    int C, train, relu; // relu: BN + ReLU fused (training form only)
    double eps;
    double *x, *gamma, *beta, *mmean, *mvar, *y, *mean, *invstd, *R;
} bn_st;

static double bn_loss(void *p)
{
    bn_st *s = p;
    if (s->train)
        nk_bn_fwd_train_ref_f64(s->M, s->C, s->x, s->gamma, s->beta, s->eps, s->relu, s->y, s->mean,
                                s->invstd);
    else
        nk_bn_fwd_infer_ref_f64(s->M, s->C, s->x, s->gamma, s->beta, s->mmean, s->mvar, s->eps,
                                s->y);
    return dot(s->y, s->R, s->M * s->C);
}

static void check_bn(int train, int relu, int64_t M, int C, uint64_t seed)
{
    // Keras ResNet50's epsilon
    bn_st s         = {.M = M, .C = C, .train = train, .relu = relu, .eps = 1.001e-5};
    const int64_t n = M * C;
    s.x             = tu_rand_f64(n, seed + 1, -1, 3);
    s.gamma         = tu_rand_f64(C, seed + 2, 0.5, 2);
    s.beta          = tu_rand_f64(C, seed + 3, -1, 1);
    s.mmean         = tu_rand_f64(C, seed + 4, 0, 2);
    s.mvar          = tu_rand_f64(C, seed + 5, 0.5, 2);
    s.y             = tu_zeros_f64(n);
    s.mean          = tu_zeros_f64(C);
    s.invstd        = tu_zeros_f64(C);
    s.R             = tu_rand_f64(n, seed + 6, -1, 1);
    bn_loss(&s);

    double *dx = tu_nan_f64(n), *dgamma = tu_nan_f64(C), *dbeta = tu_nan_f64(C);
    if (train) {
        nk_bn_bwd_train_ref_f64(M, C, s.x, relu ? s.y : NULL, s.R, s.gamma, s.mean, s.invstd, dx,
                                dgamma, dbeta);
    } else {
        nk_bn_bwd_infer_ref_f64(M, C, s.x, s.R, s.gamma, s.mmean, s.mvar, s.eps, dx, dgamma, dbeta);
    }
    char what[96];
    const char *form = relu ? "train+relu" : train ? "train" : "infer";
    snprintf(what, sizeof what, "bn %s M%lld C%d dx", form, (long long)M, C);
    grad_check(what, bn_loss, &s, s.x, dx, n, seed + 7);
    snprintf(what, sizeof what, "bn %s M%lld C%d dgamma", form, (long long)M, C);
    grad_check(what, bn_loss, &s, s.gamma, dgamma, C, seed + 8);
    snprintf(what, sizeof what, "bn %s M%lld C%d dbeta", form, (long long)M, C);
    grad_check(what, bn_loss, &s, s.beta, dbeta, C, seed + 9);

    // dx == NULL (training) and dgamma/dbeta == NULL (inference) are allowed and change nothing.
    double *dx2 = tu_nan_f64(n), *dg2 = tu_nan_f64(C), *db2 = tu_nan_f64(C);
    int same = 1;
    bn_loss(&s); // y (the ReLU mask) back at the unperturbed point
    if (train) {
        nk_bn_bwd_train_ref_f64(M, C, s.x, relu ? s.y : NULL, s.R, s.gamma, s.mean, s.invstd, NULL,
                                dg2, db2);
        for (int c = 0; c < C; c++)
            same &= dg2[c] == dgamma[c] && db2[c] == dbeta[c];
    } else {
        nk_bn_bwd_infer_ref_f64(M, C, s.x, s.R, s.gamma, s.mmean, s.mvar, s.eps, dx2, NULL, NULL);
        for (int64_t i = 0; i < n; i++)
            same &= dx2[i] == dx[i];
    }
    CHECK_MSG(same, "bn %s: the optional-NULL form changed the other outputs", form);

    free(s.x);
    free(s.gamma);
    free(s.beta);
    free(s.mmean);
    free(s.mvar);
    free(s.y);
    free(s.mean);
    free(s.invstd);
    free(s.R);
    free(dx);
    free(dgamma);
    free(dbeta);
    free(dx2);
    free(dg2);
    free(db2);
}

// The fused backward is the BN backward of the ReLU's backward, for every element (no kink).
static void bn_relu_identity(int64_t M, int C, uint64_t seed)
{
    const int64_t n = M * C;
    double *x = tu_rand_f64(n, seed, -1, 3), *ga = tu_rand_f64(C, seed + 1, 0.5, 2);
    double *be = tu_rand_f64(C, seed + 2, -1, 1), *dy = tu_rand_f64(n, seed + 3, -1, 1);
    double *y = tu_zeros_f64(n), *mu = tu_zeros_f64(C), *is = tu_zeros_f64(C);
    double *dx = tu_zeros_f64(n), *dg = tu_zeros_f64(C), *db = tu_zeros_f64(C);
    double *g = tu_zeros_f64(n), *dx2 = tu_zeros_f64(n), *dg2 = tu_zeros_f64(C),
           *db2 = tu_zeros_f64(C);
    nk_bn_fwd_train_ref_f64(M, C, x, ga, be, 1e-3, 1, y, mu, is);
    nk_bn_bwd_train_ref_f64(M, C, x, y, dy, ga, mu, is, dx, dg, db);
    nk_relu_bwd_ref_f64(n, y, dy, g);
    nk_bn_bwd_train_ref_f64(M, C, x, NULL, g, ga, mu, is, dx2, dg2, db2);
    int64_t zeros = 0;
    for (int64_t i = 0; i < n; i++)
        zeros += y[i] == 0;
    CHECK_MSG(zeros > 0 && zeros < n, "bn+relu identity: %lld of %lld outputs are 0",
              (long long)zeros, (long long)n);
    CHECK_MSG(memcmp(dx, dx2, (size_t)n * sizeof *dx) == 0 &&
                  memcmp(dg, dg2, (size_t)C * sizeof *dg) == 0 &&
                  memcmp(db, db2, (size_t)C * sizeof *db) == 0,
              "bn+relu backward differs from relu backward then bn backward (M%lld C%d)",
              (long long)M, C);
    printf("ok   bn+relu backward == bn backward of relu backward, M%lld C%d (%lld zeros)\n",
           (long long)M, C, (long long)zeros);
    free(x), free(ga), free(be), free(dy), free(y), free(mu), free(is), free(dx), free(dg);
    free(db), free(g), free(dx2), free(dg2), free(db2);
}

static void test_bn(void)
{
    check_bn(1, 0, 7 * 33 * 1, 7, 600); // N=7 H=33 W=1
    check_bn(1, 0, 1 * 7 * 7, 33, 610); // N=1 H=7 W=7
    check_bn(1, 0, 7, 1, 620);          // N=7 H=W=1, one channel
    check_bn(0, 0, 7 * 33 * 1, 7, 630);
    check_bn(0, 0, 1 * 7 * 7, 33, 640);
    // BN + ReLU as one op (the training fusion). Central differences fail where a step of
    // GRAD_EPS crosses the ReLU's kink, so these seeds are ones whose outputs stay clear of it;
    // bn_relu_identity below covers the rest exactly.
    check_bn(1, 1, 7 * 33 * 1, 7, 650);
    check_bn(1, 1, 1 * 7 * 7, 33, 670);
    bn_relu_identity(7 * 33, 7, 680);
    bn_relu_identity(49, 33, 690);
}

// ---- elementwise, padding, pooling ----

// One state for the single-input ops below: y = f(x), L = sum(y * R).
typedef struct {
    int64_t nx, ny;
    double *x, *y, *R;
    void (*fwd)(const void *args, const double *x, double *y);
    const void *args;
} unary_st;

static double unary_loss(void *p)
{
    unary_st *s = p;
    s->fwd(s->args, s->x, s->y);
    return dot(s->y, s->R, s->ny);
}

// Runs the check for dx given by the caller's backward (already computed from dy = R).
static void unary_check(const char *what, unary_st *s, const double *dx, uint64_t seed)
{
    grad_check(what, unary_loss, s, s->x, dx, s->nx, seed);
}

static void relu_fwd(const void *a, const double *x, double *y)
{
    nk_relu_fwd_ref_f64(*(const int64_t *)a, x, y);
}

static void test_relu(void)
{
    const int64_t n = 7 * 33 * 7;
    unary_st s      = {.nx = n, .ny = n, .fwd = relu_fwd, .args = &n};
    s.x             = tu_rand_f64(n, 700, -1, 1);
    for (int64_t i = 0; i < n; i++) // keep 2*GRAD_EPS away from the kink at 0
        if (fabs(s.x[i]) < 0.01) s.x[i] = s.x[i] < 0 ? -0.01 : 0.01;
    s.y = tu_zeros_f64(n);
    s.R = tu_rand_f64(n, 701, -1, 1);
    unary_loss(&s);
    double *dx = tu_nan_f64(n);
    nk_relu_bwd_ref_f64(n, s.y, s.R, dx);
    unary_check("relu n1617 dx", &s, dx, 702);
    // In place (dx == dy) must give the same result.
    double *g = tu_zeros_f64(n);
    memcpy(g, s.R, (size_t)n * sizeof *g);
    nk_relu_bwd_ref_f64(n, s.y, g, g);
    CHECK(memcmp(g, dx, (size_t)n * sizeof *g) == 0);
    free(s.x);
    free(s.y);
    free(s.R);
    free(dx);
    free(g);
}

// add has no backward kernel: its gradient is dy for both inputs. Checked so that a change to
// the forward that breaks that assumption shows up here.
typedef struct {
    int64_t n;
    double *a, *b, *y, *R;
} add_st;

static double add_loss(void *p)
{
    add_st *s = p;
    nk_add_fwd_ref_f64(s->n, s->a, s->b, s->y);
    return dot(s->y, s->R, s->n);
}

static void test_add(void)
{
    add_st s = {.n = 33};
    s.a      = tu_rand_f64(s.n, 710, -1, 1);
    s.b      = tu_rand_f64(s.n, 711, -1, 1);
    s.y      = tu_zeros_f64(s.n);
    s.R      = tu_rand_f64(s.n, 712, -1, 1);
    grad_check("add n33 da (= dy)", add_loss, &s, s.a, s.R, s.n, 713);
    grad_check("add n33 db (= dy)", add_loss, &s, s.b, s.R, s.n, 714);
    free(s.a);
    free(s.b);
    free(s.y);
    free(s.R);
}

typedef struct {
    int N, H, W, C, pt, pb, pl, pr;
} pad_args;

static void zeropad_fwd(const void *p, const double *x, double *y)
{
    const pad_args *a = p;
    nk_zeropad_fwd_ref_f64(a->N, a->H, a->W, a->C, a->pt, a->pb, a->pl, a->pr, x, y);
}

static void check_zeropad(pad_args a, uint64_t seed)
{
    const int64_t nx = (int64_t)a.N * a.H * a.W * a.C;
    const int64_t ny = (int64_t)a.N * (a.H + a.pt + a.pb) * (a.W + a.pl + a.pr) * a.C;
    unary_st s       = {.nx = nx, .ny = ny, .fwd = zeropad_fwd, .args = &a};
    s.x              = tu_rand_f64(nx, seed, -1, 1);
    s.y              = tu_zeros_f64(ny);
    s.R              = tu_rand_f64(ny, seed + 1, -1, 1);
    double *dx       = tu_nan_f64(nx);
    nk_zeropad_bwd_ref_f64(a.N, a.H, a.W, a.C, a.pt, a.pb, a.pl, a.pr, s.R, dx);
    char what[96];
    snprintf(what, sizeof what, "zeropad N%d %dx%d C%d (%d,%d,%d,%d) dx", a.N, a.H, a.W, a.C, a.pt,
             a.pb, a.pl, a.pr);
    unary_check(what, &s, dx, seed + 2);
    free(s.x);
    free(s.y);
    free(s.R);
    free(dx);
}

static void test_zeropad(void)
{
    check_zeropad((pad_args){7, 7, 33, 1, 1, 2, 3, 0}, 720);
    check_zeropad((pad_args){1, 1, 1, 7, 3, 3, 3, 3}, 730);
    check_zeropad((pad_args){1, 33, 7, 7, 0, 1, 0, 1}, 740);
}

static void maxpool_fwd(const void *p, const double *x, double *y)
{
    nk_maxpool_fwd_ref_f64(p, x, y);
}

static void check_maxpool(nk_conv_desc d, uint64_t seed)
{
    const int64_t nx = (int64_t)d.N * d.H * d.W * d.C, ny = (int64_t)d.N * d.P * d.Q * d.C;
    unary_st s = {.nx = nx, .ny = ny, .fwd = maxpool_fwd, .args = &d};
    // Distinct values 0.01 apart in a scrambled order: no ties, and a +-GRAD_EPS step never
    // changes which input is a window's maximum (the kinks of max).
    s.x                = tu_zeros_f64(nx);
    const int64_t mult = 7919; // prime, so i -> i*mult mod nx is a permutation when nx % 7919 != 0
    for (int64_t i = 0; i < nx; i++)
        s.x[i] = 0.01 * (double)((i * mult) % nx) - 0.005 * nx;
    s.y        = tu_zeros_f64(ny);
    s.R        = tu_rand_f64(ny, seed, -1, 1);
    double *dx = tu_nan_f64(nx);
    nk_maxpool_bwd_ref_f64(&d, s.x, s.R, dx);
    char what[96];
    snprintf(what, sizeof what, "maxpool %dx%d s%d N%d %dx%d C%d dx", d.R, d.S, d.stride, d.N, d.H,
             d.W, d.C);
    unary_check(what, &s, dx, seed + 1);
    free(s.x);
    free(s.y);
    free(s.R);
    free(dx);
}

static void test_maxpool(void)
{
    // 3x3 stride 2 (Keras pool1, after its ZeroPadding2D): overlapping windows.
    check_maxpool(conv_desc(7, 7, 7, 7, 7, 3, 3, 2, 0, 0, 0, 0), 750);
    check_maxpool(conv_desc(1, 33, 33, 33, 33, 3, 3, 2, 0, 0, 0, 0), 760);
    // 1x7 windows, stride 1, one channel.
    check_maxpool(conv_desc(7, 7, 33, 1, 1, 1, 7, 1, 0, 0, 0, 0), 770);
}

typedef struct {
    int N, HW, C;
} gap_args;

static void gap_fwd(const void *p, const double *x, double *y)
{
    const gap_args *a = p;
    nk_gap_fwd_ref_f64(a->N, a->HW, a->C, x, y);
}

static void test_gap(void)
{
    const gap_args a = {7, 33, 7};
    const int64_t nx = (int64_t)a.N * a.HW * a.C, ny = (int64_t)a.N * a.C;
    unary_st s = {.nx = nx, .ny = ny, .fwd = gap_fwd, .args = &a};
    s.x        = tu_rand_f64(nx, 780, -1, 1);
    s.y        = tu_zeros_f64(ny);
    s.R        = tu_rand_f64(ny, 781, -1, 1);
    double *dx = tu_nan_f64(nx);
    nk_gap_bwd_ref_f64(a.N, a.HW, a.C, s.R, dx);
    unary_check("gap N7 HW33 C7 dx", &s, dx, 782);
    free(s.x);
    free(s.y);
    free(s.R);
    free(dx);
}

typedef struct {
    int64_t n;
    double rate;
    uint64_t key;
} drop_args;

static void dropout_fwd(const void *p, const double *x, double *y)
{
    const drop_args *a = p;
    nk_dropout_fwd_ref_f64(a->n, a->rate, a->key, x, y);
}

static void check_dropout(double rate, uint64_t seed)
{
    const drop_args a = {7 * 33 * 7, rate, seed * 2654435761u};
    unary_st s        = {.nx = a.n, .ny = a.n, .fwd = dropout_fwd, .args = &a};
    s.x               = tu_rand_f64(a.n, seed, -1, 1);
    s.y               = tu_zeros_f64(a.n);
    s.R               = tu_rand_f64(a.n, seed + 1, -1, 1);
    double *dx        = tu_nan_f64(a.n);
    nk_dropout_bwd_ref_f64(a.n, rate, a.key, s.R, dx);
    char what[96];
    snprintf(what, sizeof what, "dropout rate %.2f n%lld dx", rate, (long long)a.n);
    unary_check(what, &s, dx, seed + 2);
    free(s.x);
    free(s.y);
    free(s.R);
    free(dx);
}

static void test_dropout(void)
{
    check_dropout(0.5, 790);
    check_dropout(0.3, 800);
    check_dropout(0.0, 810);
}

// ---- dense ----

typedef struct {
    int N, C, K;
    double *x, *w, *b, *y, *R;
} dense_st;

static double dense_loss(void *p)
{
    dense_st *s = p;
    nk_dense_fwd_ref_f64(s->N, s->C, s->K, s->x, s->w, s->b, 0, s->y);
    return dot(s->y, s->R, (int64_t)s->N * s->K);
}

static void check_dense(int N, int C, int K, int with_bias, uint64_t seed)
{
    dense_st s       = {.N = N, .C = C, .K = K};
    const int64_t nx = (int64_t)N * C, nw = (int64_t)C * K, ny = (int64_t)N * K;
    s.x        = tu_rand_f64(nx, seed, -1, 1);
    s.w        = tu_rand_f64(nw, seed + 1, -1, 1);
    s.b        = with_bias ? tu_rand_f64(K, seed + 2, -1, 1) : NULL;
    s.y        = tu_zeros_f64(ny);
    s.R        = tu_rand_f64(ny, seed + 3, -1, 1);
    double *dx = tu_nan_f64(nx), *dw = tu_nan_f64(nw), *db = tu_nan_f64(K);
    nk_dense_bwd_data_ref_f64(N, C, K, s.R, s.w, dx);
    nk_dense_bwd_filter_ref_f64(N, C, K, s.x, s.R, dw, with_bias ? db : NULL);
    char what[96];
    snprintf(what, sizeof what, "dense N%d C%d K%d dx", N, C, K);
    grad_check(what, dense_loss, &s, s.x, dx, nx, seed + 4);
    snprintf(what, sizeof what, "dense N%d C%d K%d dw", N, C, K);
    grad_check(what, dense_loss, &s, s.w, dw, nw, seed + 5);
    if (with_bias) {
        snprintf(what, sizeof what, "dense N%d C%d K%d db", N, C, K);
        grad_check(what, dense_loss, &s, s.b, db, K, seed + 6);
    } else {
        for (int k = 0; k < K; k++)
            CHECK(isnan(db[k])); // db == NULL must not be written
    }
    free(s.x);
    free(s.w);
    free(s.b);
    free(s.y);
    free(s.R);
    free(dx);
    free(dw);
    free(db);
}

static void test_dense(void)
{
    check_dense(7, 33, 7, 1, 820);
    check_dense(1, 7, 33, 0, 830);
    check_dense(33, 1, 1, 1, 840);
}

// ---- BCE (the objective is the loss itself) ----

typedef struct {
    int N;
    double *z, *t, *wt; // wt may be NULL
} bce_st;

static double bce_loss(void *p)
{
    bce_st *s = p;
    return nk_bce_fwd_ref_f64(s->N, s->z, s->t, s->wt, NULL);
}

static void check_bce(int N, double zlo, double zhi, int weighted, int clipped, uint64_t seed)
{
    bce_st s = {.N = N};
    s.z      = tu_rand_f64(N, seed, zlo, zhi);
    s.t      = tu_zeros_f64(N);
    for (int i = 0; i < N; i++) // hard labels plus some soft ones
        s.t[i] = i % 3 == 0 ? 0.0 : i % 3 == 1 ? 1.0 : nk_u01(seed + 1, (uint64_t)i);
    if (clipped) // both sides of the clip range, never within 2*GRAD_EPS of +-16.118
        for (int i = 0; i < N; i += 2)
            s.z[i] = -s.z[i];
    s.wt       = weighted ? tu_rand_f64(N, seed + 2, 0.5, 2) : NULL;
    double *dz = tu_nan_f64(N);
    nk_bce_bwd_ref_f64(N, s.z, s.t, s.wt, dz);
    char what[96];
    snprintf(what, sizeof what, "bce N%d z %s[%g,%g] %s dz", N, clipped ? "+-" : "", zlo, zhi,
             weighted ? "weighted" : "wt=NULL");
    grad_check(what, bce_loss, &s, s.z, dz, N, seed + 3);
    if (clipped) {
        int zero = 1;
        for (int i = 0; i < N; i++)
            zero &= dz[i] == 0.0;
        CHECK_MSG(zero, "bce: gradient must be exactly 0 in the clip region");
    }
    free(s.z);
    free(s.t);
    free(s.wt);
    free(dz);
}

static void test_bce(void)
{
    check_bce(33, -4, 4, 1, 0, 850);
    check_bce(7, -8, 8, 0, 0, 860);
    check_bce(1, -2, 2, 1, 0, 870);
    check_bce(33, 17, 30, 1, 1, 880); // clip region
}

int main(void)
{
    const clock_t t0 = clock();
    test_conv();
    test_bn();
    test_relu();
    test_add();
    test_zeropad();
    test_maxpool();
    test_gap();
    test_dense();
    test_dropout();
    test_bce();
    printf("max rel error over all gradient checks: %.2e (fail level %.0e), %.2f s cpu\n",
           max_rel_all, GRAD_RTOL, (double)(clock() - t0) / CLOCKS_PER_SEC);
    return check_summary("test_grad");
}
