/*
 * test_ops.c: every fast CPU op in kernels/cpu/ against its specification in kernels/ref/
 * (the ggml test-backend-ops pattern): convolution forward / backward data / backward filter on
 * a shape table (1x1 s1, 1x1 s2, 3x3 s1 p1, 3x3 s2 with asymmetric padding, 7x7 s2, odd sizes,
 * N = 1 and 3, a case split into several im2col chunks), dense, batch norm, ReLU and add, for
 * every ISA this machine has (NK_ISA caps it) and 1 and 2 threads. GEMM itself: test_gemm.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"
#include "tests/check.h"

// Inputs are uniform in [-1, 1); a sum of T products has fp32 rounding error growing like
// sqrt(T) eps, and the ref sums in double, so T * 1e-6 is a wide margin for GEMM-based ops.
#define TOL_SUM_ATOL_PER_TERM 1e-6
// Relative part for GEMM-based ops (different summation order from the ref).
#define TOL_SUM_RTOL 1e-5
// Batch norm: fp32 block sums then double, vs the ref's double; outputs are O(1).
#define TOL_BN_ATOL 2e-5
#define TOL_BN_RTOL 1e-5
// BN gradients are sums of M terms of dy*xh.
#define TOL_BN_GRAD_ATOL_PER_ROW 1e-6
// ReLU and add are exact in fp32: the fast path must agree bit for bit.
#define TOL_EXACT 0.0

// The bf16 impls that run here (nk_bf16_impls: the emulated ones always), set by main.
static nk_bf16_impl bf16s[4];
static int n_bf16;

static float *xmalloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

static void fill(float *p, size_t n, uint64_t key, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * nk_u01(key, i);
}

static void poison(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

// ---- convolution ----

typedef struct {
    int N, H, W, C, K, R, S, stride, pad_h, pad_w, pad_b, pad_r;
} conv_case;

static const conv_case convs[] = {
    // N  H   W   C   K   R  S  st ph pw pb pr
    {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},      // 1x1 s1, all ones
    {3, 7, 7, 33, 7, 1, 1, 1, 0, 0, 0, 0},     // 1x1 s1 (direct GEMM)
    {1, 8, 6, 64, 33, 1, 1, 1, 0, 0, 0, 0},    // 1x1 s1, rectangular
    {3, 7, 7, 33, 7, 1, 1, 2, 0, 0, 0, 0},     // 1x1 s2 (downsample shortcut)
    {1, 8, 8, 7, 33, 1, 1, 2, 0, 0, 0, 0},     // 1x1 s2, even size
    {3, 7, 7, 7, 33, 3, 3, 1, 1, 1, 1, 1},     // 3x3 s1 p1
    {1, 33, 33, 7, 7, 3, 3, 1, 1, 1, 1, 1},    // 3x3 s1 p1, odd size
    {3, 7, 9, 5, 7, 3, 3, 2, 0, 0, 1, 1},      // 3x3 s2, pad only bottom/right
    {1, 33, 33, 3, 7, 7, 7, 2, 3, 3, 3, 3},    // 7x7 s2 p3 (conv1)
    {3, 7, 7, 1, 1, 7, 7, 2, 3, 3, 2, 2},      // 7x7 s2, one channel
    {3, 40, 40, 64, 16, 3, 3, 1, 1, 1, 1, 1},  // 4800 rows x 576: several im2col chunks
    {1, 1, 1, 1023, 1, 1, 1, 1, 0, 0, 0, 0},   // long reduction
    {2, 9, 9, 32, 40, 1, 1, 2, 0, 0, 0, 0},    // 1x1 s2, C % 32 == 0 (bf16 implicit GEMM)
    {2, 9, 7, 64, 33, 3, 3, 2, 0, 0, 1, 1},    // 3x3 s2 asymmetric pad, C % 32 == 0
    {1, 5, 5, 512, 40, 3, 3, 1, 1, 1, 1, 1},   // C > kc: k blocks inside one tap
    {2, 6, 6, 16, 35, 3, 3, 1, 1, 1, 1, 1},    // C = 16: a k block spans many taps
    {2, 21, 21, 3, 20, 7, 7, 2, 0, 0, 0, 0},   // conv1 after ZeroPadding2D: contiguous filter rows
    {2, 7, 7, 24, 32, 3, 3, 1, 1, 1, 1, 1},    // K % 16 == 0: backward data as a forward conv
    {2, 9, 9, 64, 161, 1, 1, 1, 0, 0, 0, 0},   // K > 128: several bf16 staging blocks, a ragged one
    {2, 5, 3, 7, 33, 1, 1, 1, 0, 0, 0, 0},     // 1x1 s1, C < K: weight gradient as dw^T, transposed
    {2, 9, 7, 48, 32, 1, 1, 1, 0, 0, 0, 0},    // 1x1 s1, C <= 64, K % 16 == 0: dx reads dy in place
    {2, 64, 64, 8, 16, 3, 3, 1, 1, 1, 1, 1},   // weight gradient split into 4 row chunks (3x3)
    {2, 60, 60, 8, 16, 3, 3, 1, 1, 1, 1, 1},   // the same, chunks of 34 lines in pieces of 4 (+2)
    {9, 32, 32, 16, 24, 1, 1, 1, 0, 0, 0, 0},  // the same, 1x1 (bf16), 5 chunks, a short last one
    {2, 9, 11, 32, 48, 3, 3, 1, 1, 1, 1, 1},   // Winograd: ragged tiles, one K block, a half panel
    {1, 14, 14, 48, 160, 3, 3, 1, 1, 1, 1, 1}, // Winograd: shared V, K blocks of 64, 64, 32
    {2, 30, 30, 16, 80, 3, 3, 1, 1, 1, 1, 1},  // Winograd: 128 tiles in V chunks of 48, 48, 32
    {3, 32, 32, 16, 112, 3, 3, 1, 1, 1, 1, 1}, // Winograd: per-unit V over 3.5 K panels
    {1, 6, 6, 288, 320, 3, 3, 1, 1, 1, 1, 1},  // Winograd weight gradient: its GEMMs pack
    {2, 4, 4, 32, 48, 3, 3, 1, 1, 1, 1, 1},    // one tile an image: both forms packed; GEMM runs
    {5, 3, 5, 16, 32, 3, 3, 1, 1, 1, 1, 1},    // ... and 10 tiles in the batch: Winograd runs
    {2, 6, 5, 768, 48, 1, 1, 1, 0, 0, 0, 0},   // 1x1, C = 768: implicit k blocks of 512 and 256
};

// The shapes that Winograd F(4x4, 3x3) computes on an AVX2 or AVX-512 machine (an independent
// statement of nk_wino_ok's rule): 3x3, stride 1, 'same' padding, C and K multiples of 16.
static int wino_shape(const nk_conv_desc *d)
{
    return nk_cpu_detect() >= NK_ISA_AVX2 && d->R == 3 && d->S == 3 && d->stride == 1 &&
           d->pad_h == 1 && d->pad_w == 1 && d->P == d->H && d->Q == d->W && d->C % 16 == 0 &&
           d->K % 16 == 0;
}

// Bits of a bf16 array against nk_f32_to_bf16 of a float32 one: the mismatches.
static int64_t bf16_mismatches(const uint16_t *got, const float *ref, int64_t n)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += got[i] != nk_f32_to_bf16(ref[i]);
    return bad;
}

// nk_conv2d_fwd_wino_x_cpu (bf16 inference's 3x3s): from bf16 activations against the reference
// on their float32 values, then the same with a bf16 output, which must be nk_f32_to_bf16 of the
// float32 one bit for bit.
static void test_wino_bf16x(const nk_conv_desc *d, const nk_exec *ex, const float *x,
                            const float *w, const float *b, const float *wp, const nk_epilogue *ep,
                            double tol)
{
    const size_t nx = (size_t)d->N * d->H * d->W * d->C, ny = (size_t)d->N * d->P * d->Q * d->K;
    uint16_t *xb = malloc(nx * 2), *yb = malloc(ny * 2);
    float *xr = xmalloc(nx), *yr = xmalloc(ny), *y = xmalloc(ny);
    if (!xb || !yb) abort();
    for (size_t i = 0; i < nx; i++)
        xr[i] = nk_bf16_to_f32(xb[i] = nk_f32_to_bf16(x[i]));
    nk_conv2d_fwd_ref(d, xr, w, b, yr);
    for (size_t i = 0; i < ny; i++) {
        const size_t k = i % (size_t)d->K;
        float v        = yr[i] * ep->scale[k] + ep->shift[k] + ep->residual[i];
        yr[i]          = v > 0.0f ? v : 0.0f;
    }
    char what[160];
    snprintf(what, sizeof what, "conv2d_fwd_winograd_bf16_in t%d N=%d H=%d W=%d C=%d K=%d",
             ex->nthreads, d->N, d->H, d->W, d->C, d->K);
    poison(y, ny);
    nk_conv2d_fwd_wino_x_cpu(ex, d, NULL, xb, wp, b, ep, y, NULL);
    CHECK_CLOSE(what, y, yr, (int64_t)ny, tol, TOL_SUM_RTOL);
    nk_conv2d_fwd_wino_x_cpu(ex, d, xr, NULL, wp, b, ep, NULL, yb);
    const int64_t bad = bf16_mismatches(yb, y, (int64_t)ny);
    CHECK_MSG(bad == 0, "%s: bf16 output, %lld of %zu differ from nk_f32_to_bf16", what,
              (long long)bad, ny);
    free(xb), free(yb), free(xr), free(yr), free(y);
}

// The bf16 output's rounding on the values that take its other branches: NaN (from a NaN input,
// kept quiet), denormals (to a signed zero) and ties (to even), against nk_f32_to_bf16.
// Which passes run Winograd by default: the packed forward from 4 tiles in the batch (any batch
// where an image has 4), the passes on unpacked weights (training) from 32 tiles up: a 7x7 image
// is 4 tiles, so batch 7 is 28 and 8 is 32.
static void test_wino_tiles(void)
{
    nk_conv_desc d = {.N = 7, .H = 7, .W = 7, .C = 32, .K = 48, .R = 3, .S = 3, .stride = 1};
    d.pad_h = d.pad_w = 1, d.P = d.Q = 7;
    const nk_isa isa = nk_cpu_detect();
    if (isa < NK_ISA_AVX2) {
        CHECK(!nk_conv2d_winograd(NK_ISA_AVX512, NK_CONV_AUTO, &d));
        printf("SKIP winograd tile rule: no AVX2\n");
        return;
    }
    CHECK(nk_conv2d_winograd(isa, NK_CONV_AUTO, &d));
    CHECK(!nk_conv2d_winograd_w(isa, NK_CONV_AUTO, &d));
    d.N = 8;
    CHECK(nk_conv2d_winograd_w(isa, NK_CONV_AUTO, &d));
    CHECK(!nk_conv2d_winograd_w(isa, NK_CONV_GEMM, &d));
    CHECK(!nk_conv2d_winograd_w((nk_isa)(isa - 1), NK_CONV_AUTO, &d)); // below the machine's ISA
    d.N = 1, d.H = d.W = d.P = d.Q = 24;                               // 36 tiles in one image
    CHECK(nk_conv2d_winograd_w(isa, NK_CONV_AUTO, &d));
    // The packed forward: from 4 tiles in the batch where an image has fewer (both forms packed).
    CHECK(nk_conv2d_winograd_fwd(isa, NK_CONV_AUTO, &d));
    d.H = d.W = d.P = d.Q = 4, d.N = 3; // one tile an image
    CHECK(nk_conv2d_winograd(isa, NK_CONV_AUTO, &d));
    CHECK(!nk_conv2d_winograd_fwd(isa, NK_CONV_AUTO, &d));
    d.N = 4;
    CHECK(nk_conv2d_winograd_fwd(isa, NK_CONV_AUTO, &d));
    d.H = d.W = d.P = d.Q = 7, d.N = 1; // 4 tiles in one image
    CHECK(nk_conv2d_winograd_fwd(isa, NK_CONV_AUTO, &d));
    printf("ok   winograd tile rule: packed forward from 4 tiles, unpacked passes from 32\n");
}

static void test_wino_bf16_rounding(void)
{
    if (nk_cpu_detect() < NK_ISA_AVX2) return;
    const nk_conv_desc d = {.N      = 1,
                            .H      = 8,
                            .W      = 8,
                            .C      = 16,
                            .K      = 16,
                            .R      = 3,
                            .S      = 3,
                            .P      = 8,
                            .Q      = 8,
                            .stride = 1,
                            .pad_h  = 1,
                            .pad_w  = 1};
    const size_t nx = 8 * 8 * 16, ny = 8 * 8 * 16, nw = 9 * 16 * 16;
    float *x = xmalloc(nx), *w = xmalloc(nw), *y = xmalloc(ny), sc[16], sh[16];
    uint16_t *yb = malloc(ny * 2);
    if (!yb) abort();
    fill(w, nw, 31, -1, 1);
    for (size_t i = 0; i < nx; i++)
        x[i] = 0.0f;
    x[(1 * 8 + 1) * 16 + 3] = NAN; // one tile's outputs become NaN
    // y = acc * sc + sh: acc is 0 away from the NaN, so y = sh exactly there.
    const float shs[4] = {1e-39f, -1e-39f, 1.00390625f, 1.01171875f}; // denormals, two ties
    for (int k = 0; k < 16; k++)
        sc[k] = 1.0f, sh[k] = shs[k % 4];
    const nk_epilogue ep = {.scale = sc, .shift = sh};
    float *wp            = xmalloc(nk_conv2d_packed_floats(NK_ISA_AVX512, NK_CONV_AUTO, &d));
    const size_t wsn     = nk_conv2d_ws_floats(&d, 2);
    float *ws            = xmalloc(wsn);
    const nk_exec ex     = {2, ws, wsn, 0};
    nk_conv2d_pack(NK_ISA_AVX512, NK_CONV_AUTO, &d, w, wp);
    nk_conv2d_fwd_wino_x_cpu(&ex, &d, x, NULL, wp, NULL, &ep, y, NULL);
    nk_conv2d_fwd_wino_x_cpu(&ex, &d, x, NULL, wp, NULL, &ep, NULL, yb);
    int nan = 0, den = 0;
    for (size_t i = 0; i < ny; i++)
        nan += isnan(y[i]), den += y[i] != 0.0f && fabsf(y[i]) < 1e-38f;
    const int64_t bad = bf16_mismatches(yb, y, (int64_t)ny);
    CHECK_MSG(nan > 0 && den > 0 && bad == 0,
              "winograd bf16 output rounding: %d NaN, %d denormal, %lld of %zu differ", nan, den,
              (long long)bad, ny);
    free(x), free(w), free(y), free(yb), free(wp), free(ws);
}

static void test_conv(const conv_case *cc)
{
    nk_conv_desc d  = {.N      = cc->N,
                       .H      = cc->H,
                       .W      = cc->W,
                       .C      = cc->C,
                       .K      = cc->K,
                       .R      = cc->R,
                       .S      = cc->S,
                       .stride = cc->stride,
                       .pad_h  = cc->pad_h,
                       .pad_w  = cc->pad_w};
    d.P             = (d.H + cc->pad_h + cc->pad_b - d.R) / d.stride + 1;
    d.Q             = (d.W + cc->pad_w + cc->pad_r - d.S) / d.stride + 1;
    const size_t nx = (size_t)d.N * d.H * d.W * d.C, ny = (size_t)d.N * d.P * d.Q * d.K;
    const size_t nw = (size_t)d.R * d.S * d.C * d.K;
    float *x = xmalloc(nx), *w = xmalloc(nw), *b = xmalloc(d.K), *dy = xmalloc(ny);
    float *y_ref = xmalloc(ny), *dx_ref = xmalloc(nx), *dw_ref = xmalloc(nw),
          *db_ref = xmalloc(d.K);
    float *y = xmalloc(ny), *dx = xmalloc(nx), *dw = xmalloc(nw), *db = xmalloc(d.K);
    float *dw1 = xmalloc(nw), *yw1 = xmalloc(ny);
    fill(x, nx, 21, -1, 1);
    fill(w, nw, 22, -1, 1);
    fill(b, d.K, 23, -1, 1);
    fill(dy, ny, 24, -1, 1);
    nk_conv2d_fwd_ref(&d, x, w, b, y_ref);
    nk_conv2d_bwd_data_ref(&d, dy, w, dx_ref);
    nk_conv2d_bwd_filter_ref(&d, x, dy, dw_ref, db_ref);

    size_t wsn = nk_conv2d_ws_floats(&d, 2);
    CHECK(wsn >= nk_conv2d_ws_floats(&d, 1));
    float *ws                   = xmalloc(wsn);
    const double tol_fwd        = TOL_SUM_ATOL_PER_TERM * (d.R * d.S * d.C + 1);
    const double tol_bwd_data   = TOL_SUM_ATOL_PER_TERM * (d.R * d.S * d.K + 1);
    const double tol_bwd_filter = TOL_SUM_ATOL_PER_TERM * ((double)d.N * d.P * d.Q + 1);
    // At the machine's ISA the Winograd shapes (wino_shape) run the plain forward and backward data
    // by Winograd by default (conv_algo 0): they run twice, the second time with NK_CONV_GEMM.
    const int nalgo = wino_shape(&d) ? 2 : 1;
    for (int isa = 0; isa <= (int)nk_cpu_detect(); isa++) {
        for (int run = 0; run < 2 * nalgo; run++) {
            const int nt = 1 + run % 2, algo = run / 2;
            nk_exec ex = {nt, ws, wsn, algo};
            char what[200];
#define NAME(op)                                                                                   \
    snprintf(what, sizeof what,                                                                    \
             "conv2d_%s %s%s t%d N=%d H=%d W=%d C=%d K=%d R=%d S=%d st=%d P=%d "                   \
             "Q=%d",                                                                               \
             op, nk_isa_name((nk_isa)isa), algo ? "/gemm" : "", nt, d.N, d.H, d.W, d.C, d.K, d.R,  \
             d.S, d.stride, d.P, d.Q)
            poison(y, ny);
            nk_conv2d_fwd_cpu((nk_isa)isa, &ex, &d, x, w, b, y);
            NAME("fwd");
            CHECK_CLOSE(what, y, y_ref, (int64_t)ny, tol_fwd, TOL_SUM_RTOL);
            // Without bias as well (b == NULL means zero bias).
            poison(y, ny);
            nk_conv2d_fwd_cpu((nk_isa)isa, &ex, &d, x, w, NULL, y);
            for (size_t i = 0; i < ny; i++)
                y[i] += b[i % (size_t)d.K];
            NAME("fwd_nobias");
            CHECK_CLOSE(what, y, y_ref, (int64_t)ny, tol_fwd, TOL_SUM_RTOL);

            // With the fused epilogue (an inference BN as scale/shift, then ReLU) against the
            // plain reference conv followed by the same map.
            {
                float *sc = xmalloc(d.K), *sh = xmalloc(d.K), *ye = xmalloc(ny);
                fill(sc, d.K, 25, 0.5f, 1.5f);
                fill(sh, d.K, 26, -0.5f, 0.5f);
                for (size_t i = 0; i < ny; i++) {
                    const size_t k = i % (size_t)d.K;
                    const float v  = y_ref[i] * sc[k] + sh[k];
                    ye[i]          = v > 0.0f ? v : 0.0f;
                }
                const nk_epilogue ep = {.scale = sc, .shift = sh, .relu = 1};
                poison(y, ny);
                nk_conv2d_fwd_epi_cpu((nk_isa)isa, &ex, &d, x, w, b, &ep, y);
                NAME("fwd_bn_relu");
                CHECK_CLOSE(what, y, ye, (int64_t)ny, tol_fwd * 1.5, TOL_SUM_RTOL);
                // ... and with a residual added before the ReLU (a ResNet block's end).
                float *res = xmalloc(ny);
                fill(res, ny, 27, -1, 1);
                for (size_t i = 0; i < ny; i++) {
                    const size_t k = i % (size_t)d.K;
                    const float v  = y_ref[i] * sc[k] + sh[k] + res[i];
                    ye[i]          = v > 0.0f ? v : 0.0f;
                }
                const nk_epilogue epr = {.scale = sc, .shift = sh, .relu = 1, .residual = res};
                poison(y, ny);
                nk_conv2d_fwd_epi_cpu((nk_isa)isa, &ex, &d, x, w, b, &epr, y);
                NAME("fwd_bn_add_relu");
                CHECK_CLOSE(what, y, ye, (int64_t)ny, tol_fwd * 1.5, TOL_SUM_RTOL);
                // ... and on weights packed once (the inference cache).
                float *wp = xmalloc(nk_conv2d_packed_floats((nk_isa)isa, NK_CONV_GEMM, &d));
                nk_conv2d_pack((nk_isa)isa, NK_CONV_GEMM, &d, w, wp);
                poison(y, ny);
                nk_conv2d_fwd_packed_cpu((nk_isa)isa, NK_CONV_GEMM, &ex, &d, x, wp, b, &epr, y);
                NAME("fwd_packed_bn_add_relu");
                CHECK_CLOSE(what, y, ye, (int64_t)ny, tol_fwd * 1.5, TOL_SUM_RTOL);
                free(wp);
                // ... and as the packed forward chooses by default: Winograd F(4x4, 3x3) for a
                // 3x3 stride-1 'same' conv with C and K multiples of 16 at the machine's own
                // AVX2 or AVX-512 (its packing
                // is then 36 transformed 3x3 ones: 4x the floats; under 4 tiles an image the
                // GEMM's panels too, which a batch of under 4 tiles runs), the GEMM otherwise.
                const int wino  = isa == (int)nk_cpu_detect() && wino_shape(&d);
                const int tpi   = ((d.P + 3) / 4) * ((d.Q + 3) / 4);
                const int dual  = wino && tpi < 4;
                const size_t pg = nk_conv2d_packed_floats((nk_isa)isa, NK_CONV_GEMM, &d);
                const size_t pa = nk_conv2d_packed_floats((nk_isa)isa, NK_CONV_AUTO, &d);
                NAME("packed_auto_size");
                CHECK_MSG(pa == (wino ? 4 : 1) * pg + (dual ? pg : 0),
                          "%s: %zu floats packed, GEMM's %zu", what, pa, pg);
                CHECK(nk_conv2d_winograd_fwd((nk_isa)isa, NK_CONV_AUTO, &d) ==
                      (wino && (!dual || d.N * tpi >= 4)));
                wp = xmalloc(pa);
                nk_conv2d_pack((nk_isa)isa, NK_CONV_AUTO, &d, w, wp);
                poison(y, ny);
                nk_conv2d_fwd_packed_cpu((nk_isa)isa, NK_CONV_AUTO, &ex, &d, x, wp, b, &epr, y);
                NAME(nk_conv2d_winograd_fwd((nk_isa)isa, NK_CONV_AUTO, &d)
                         ? "fwd_winograd_bn_add_relu"
                         : "fwd_auto_bn_add_relu");
                CHECK_CLOSE(what, y, ye, (int64_t)ny, tol_fwd * 1.5, TOL_SUM_RTOL);
                if (nk_conv2d_winograd_fwd((nk_isa)isa, NK_CONV_AUTO, &d) && algo == 0) {
                    // The same bits on 1 and 2 threads (2 may split the output channels).
                    if (nt == 1) memcpy(yw1, y, ny * sizeof(float));
                    NAME("fwd_winograd_threads_same_bits");
                    CHECK_MSG(nt == 1 || memcmp(yw1, y, ny * sizeof(float)) == 0, "%s", what);
                }
                if (wino) test_wino_bf16x(&d, &ex, x, w, b, wp, &epr, tol_fwd * 1.5);
                free(wp);
                free(sc), free(sh), free(ye), free(res);
            }

            // bf16 inference, once per thread count (at the best fp32 ISA): every bf16 impl up to
            // this CPU's against the bf16 reference followed by the same epilogue.
            if (isa == (int)nk_cpu_detect()) {
                float *sc = xmalloc(d.K), *sh = xmalloc(d.K), *ye = xmalloc(ny);
                float *res = xmalloc(ny);
                fill(sc, d.K, 25, 0.5f, 1.5f);
                fill(sh, d.K, 26, -0.5f, 0.5f);
                fill(res, ny, 27, -1, 1);
                nk_conv2d_fwd_bf16_ref(&d, x, w, b, ye);
                for (size_t i = 0; i < ny; i++) {
                    const size_t k = i % (size_t)d.K;
                    const float v  = ye[i] * sc[k] + sh[k] + res[i];
                    ye[i]          = v > 0.0f ? v : 0.0f;
                }
                const int rsc = d.R * d.S * d.C;
                uint16_t *wp  = malloc(nk_gemm_bf16_packed_b_elems(rsc, d.K) * sizeof(uint16_t));
                size_t bwn    = nk_conv2d_bf16_ws_floats(&d, 2);
                float *bws    = xmalloc(bwn);
                if (!wp) exit(1);
                CHECK(bwn >= nk_conv2d_bf16_ws_floats(&d, 1));
                nk_gemm_bf16_pack_b(0, rsc, d.K, w, d.K, wp);
                const nk_epilogue ep = {.scale = sc, .shift = sh, .relu = 1, .residual = res};
                for (int ii = 0; ii < n_bf16; ii++) {
                    const int bi = bf16s[ii];
                    nk_exec bex  = {nt, bws, bwn, 0};
                    poison(y, ny);
                    nk_conv2d_fwd_bf16_cpu((nk_bf16_impl)bi, &bex, &d, x, wp, b, &ep, y);
                    snprintf(what, sizeof what,
                             "conv2d_fwd_bf16 %s t%d N=%d H=%d W=%d C=%d K=%d R=%d S=%d st=%d",
                             nk_bf16_impl_name((nk_bf16_impl)bi), nt, d.N, d.H, d.W, d.C, d.K, d.R,
                             d.S, d.stride);
                    CHECK_CLOSE(what, y, ye, (int64_t)ny, tol_fwd * 1.5, TOL_SUM_RTOL);
                }
                // bf16 activations: input float32 or bf16, output float32 or bf16, the residual
                // in bf16, against the reference; a bf16 output may differ by the rounding of a
                // sum that differs in its last bits (one bf16 ulp: rtol 2^-7 added).
                {
                    uint16_t *xb = malloc(nx * 2), *rb = malloc(ny * 2), *yb = malloc(ny * 2);
                    uint16_t *ybe = malloc(ny * 2);
                    float *yx = xmalloc(ny), *ybf = xmalloc(ny), *ybef = xmalloc(ny);
                    if (!xb || !rb || !yb || !ybe) exit(1);
                    for (size_t i = 0; i < nx; i++)
                        xb[i] = nk_f32_to_bf16(x[i]);
                    for (size_t i = 0; i < ny; i++)
                        rb[i] = nk_f32_to_bf16(res[i]);
                    const nk_epilogue epb = {
                        .scale = sc, .shift = sh, .relu = 1, .residual_bf16 = rb};
                    for (int xin = 0; xin < 2; xin++) {
                        const size_t xwn = nk_conv2d_bf16x_ws_floats(&d, 2, xin);
                        float *xws       = xmalloc(xwn);
                        CHECK(xwn >= nk_conv2d_bf16x_ws_floats(&d, 1, xin));
                        for (int yout = 0; yout < 2; yout++) {
                            nk_conv2d_fwd_bf16x_ref(&d, x, xin ? xb : NULL, w, b, &epb,
                                                    yout ? NULL : ye, yout ? ybe : NULL);
                            for (int ii = 0; ii < n_bf16; ii++) {
                                const int bi = bf16s[ii];
                                nk_exec bex  = {nt, xws, xwn, 0};
                                poison(yx, ny);
                                memset(yb, 0xff, ny * 2);
                                nk_conv2d_fwd_bf16x_cpu((nk_bf16_impl)bi, &bex, &d, xin ? NULL : x,
                                                        xin ? xb : NULL, wp, b, &epb,
                                                        yout ? NULL : yx, yout ? yb : NULL);
                                snprintf(what, sizeof what,
                                         "conv2d_fwd_bf16x %s x=%s y=%s t%d N=%d H=%d W=%d C=%d "
                                         "K=%d R=%d S=%d st=%d",
                                         nk_bf16_impl_name((nk_bf16_impl)bi), xin ? "bf16" : "f32",
                                         yout ? "bf16" : "f32", nt, d.N, d.H, d.W, d.C, d.K, d.R,
                                         d.S, d.stride);
                                if (!yout) {
                                    CHECK_CLOSE(what, yx, ye, (int64_t)ny, tol_fwd * 1.5,
                                                TOL_SUM_RTOL);
                                    continue;
                                }
                                for (size_t i = 0; i < ny; i++) {
                                    ybf[i]  = nk_bf16_to_f32(yb[i]);
                                    ybef[i] = nk_bf16_to_f32(ybe[i]);
                                }
                                CHECK_CLOSE(what, ybf, ybef, (int64_t)ny, tol_fwd * 1.5,
                                            TOL_SUM_RTOL + 1.0 / 128);
                            }
                        }
                        free(xws);
                    }
                    free(xb), free(rb), free(yb), free(ybe), free(yx), free(ybf), free(ybef);
                }
                free(sc), free(sh), free(ye), free(wp), free(bws), free(res);

                // The bf16 input gradient (training in bf16) against its bf16 reference.
                float *dxb = xmalloc(nx);
                nk_conv2d_bwd_data_bf16_ref(&d, dy, w, dxb);
                size_t dwn = nk_conv2d_bwd_data_bf16_ws_floats(&d, 2);
                float *dws = xmalloc(dwn);
                CHECK(dwn >= nk_conv2d_bwd_data_bf16_ws_floats(&d, 1));
                for (int ii = 0; ii < n_bf16; ii++) {
                    const int bi = bf16s[ii];
                    nk_exec bex  = {nt, dws, dwn, 0};
                    poison(dx, nx);
                    nk_conv2d_bwd_data_bf16_cpu((nk_bf16_impl)bi, &bex, &d, dy, w, dx);
                    snprintf(what, sizeof what,
                             "conv2d_bwd_data_bf16 %s t%d N=%d H=%d W=%d C=%d K=%d R=%d S=%d st=%d",
                             nk_bf16_impl_name((nk_bf16_impl)bi), nt, d.N, d.H, d.W, d.C, d.K, d.R,
                             d.S, d.stride);
                    CHECK_CLOSE(what, dx, dxb, (int64_t)nx, tol_bwd_data * 1.5, TOL_SUM_RTOL);
                    // Added into an earlier gradient (dx += ...): ref + that gradient.
                    float *sum = xmalloc(nx);
                    fill(dx, nx, 27, -1, 1);
                    for (size_t i = 0; i < nx; i++)
                        sum[i] = dx[i] + dxb[i];
                    nk_conv2d_bwd_data_bf16_acc_cpu((nk_bf16_impl)bi, &bex, &d, dy, w, dx);
                    CHECK_CLOSE(what, dx, sum, (int64_t)nx, tol_bwd_data * 1.5, TOL_SUM_RTOL);
                    free(sum);
                }
                free(dxb), free(dws);

                // The bf16 weight gradient against its bf16 reference.
                float *dwb = xmalloc(nw), *dbb = xmalloc(d.K);
                nk_conv2d_bwd_filter_bf16_ref(&d, x, dy, dwb, dbb);
                size_t fwn = nk_conv2d_bwd_filter_bf16_ws_floats(&d, 2);
                float *fws = xmalloc(fwn);
                CHECK(fwn >= nk_conv2d_bwd_filter_bf16_ws_floats(&d, 1));
                for (int ii = 0; ii < n_bf16; ii++) {
                    const int bi = bf16s[ii];
                    nk_exec bex  = {nt, fws, fwn, 0};
                    poison(dw, nw);
                    poison(db, d.K);
                    nk_conv2d_bwd_filter_bf16_cpu((nk_bf16_impl)bi, &bex, &d, x, dy, dw, db);
                    snprintf(what, sizeof what,
                             "conv2d_bwd_filter_bf16 %s t%d N=%d H=%d W=%d C=%d K=%d R=%d S=%d "
                             "st=%d",
                             nk_bf16_impl_name((nk_bf16_impl)bi), nt, d.N, d.H, d.W, d.C, d.K, d.R,
                             d.S, d.stride);
                    CHECK_CLOSE(what, dw, dwb, (int64_t)nw, tol_bwd_filter * 1.5, TOL_SUM_RTOL);
                    CHECK_CLOSE(what, db, dbb, d.K, tol_bwd_filter, TOL_SUM_RTOL);
                    poison(dw, nw); // without db (its sums ride on the packing of dy)
                    nk_conv2d_bwd_filter_bf16_cpu((nk_bf16_impl)bi, &bex, &d, x, dy, dw, NULL);
                    CHECK_CLOSE(what, dw, dwb, (int64_t)nw, tol_bwd_filter * 1.5, TOL_SUM_RTOL);
                }
                free(dwb), free(dbb), free(fws);
            }

            poison(dx, nx);
            nk_conv2d_bwd_data_cpu((nk_isa)isa, &ex, &d, dy, w, dx);
            NAME("bwd_data");
            CHECK_CLOSE(what, dx, dx_ref, (int64_t)nx, tol_bwd_data, TOL_SUM_RTOL);
            {
                float *sum = xmalloc(nx);
                fill(dx, nx, 28, -1, 1);
                for (size_t i = 0; i < nx; i++)
                    sum[i] = dx[i] + dx_ref[i];
                nk_conv2d_bwd_data_acc_cpu((nk_isa)isa, &ex, &d, dy, w, dx);
                NAME("bwd_data_acc");
                CHECK_CLOSE(what, dx, sum, (int64_t)nx, tol_bwd_data, TOL_SUM_RTOL);
                free(sum);
            }

            poison(dw, nw);
            poison(db, d.K);
            nk_conv2d_bwd_filter_cpu((nk_isa)isa, &ex, &d, x, dy, dw, db);
            // Winograd's weight gradient scales dy's tiles by up to 64 before its sums: about
            // 10x the direct sum's float32 error (measured 2.6e-5 against 1.9e-6 on the 288x320
            // case), so 4x the tolerance there.
            const double tol_dw =
                tol_bwd_filter *
                (algo == 0 && isa == (int)nk_cpu_detect() && wino_shape(&d) ? 4 : 1);
            NAME("bwd_filter_dw");
            CHECK_CLOSE(what, dw, dw_ref, (int64_t)nw, tol_dw, TOL_SUM_RTOL);
            if (tol_dw > tol_bwd_filter) { // Winograd: the same bits for 1 and 2 threads
                if (nt == 1) memcpy(dw1, dw, nw * sizeof(float));
                CHECK_MSG(nt == 1 || memcmp(dw1, dw, nw * sizeof(float)) == 0,
                          "%s: winograd weight gradient differs between 1 and 2 threads", what);
            }
            NAME("bwd_filter_db");
            CHECK_CLOSE(what, db, db_ref, d.K, tol_bwd_filter, TOL_SUM_RTOL);
            poison(dw, nw);
            nk_conv2d_bwd_filter_cpu((nk_isa)isa, &ex, &d, x, dy, dw, NULL);
            NAME("bwd_filter_nodb");
            CHECK_CLOSE(what, dw, dw_ref, (int64_t)nw, tol_dw, TOL_SUM_RTOL);
#undef NAME
        }
    }
    free(x), free(w), free(b), free(dy), free(y_ref), free(dx_ref), free(dw_ref), free(db_ref);
    free(y), free(dx), free(dw), free(db), free(ws), free(dw1), free(yw1);
}

// ---- dense ----

static void test_dense(int N, int C, int K)
{
    float *x = xmalloc((size_t)N * C), *w = xmalloc((size_t)C * K), *b = xmalloc(K);
    float *dy    = xmalloc((size_t)N * K);
    float *y_ref = xmalloc((size_t)N * K), *y = xmalloc((size_t)N * K);
    float *dx_ref = xmalloc((size_t)N * C), *dx = xmalloc((size_t)N * C);
    float *dw_ref = xmalloc((size_t)C * K), *dw = xmalloc((size_t)C * K);
    float *db_ref = xmalloc(K), *db = xmalloc(K);
    fill(x, (size_t)N * C, 31, -1, 1);
    fill(w, (size_t)C * K, 32, -1, 1);
    fill(b, K, 33, -1, 1);
    fill(dy, (size_t)N * K, 34, -1, 1);
    size_t wsn = nk_sgemm_ws_floats(2);
    float *ws  = xmalloc(wsn);
    nk_dense_bwd_data_ref(N, C, K, dy, w, dx_ref);
    nk_dense_bwd_filter_ref(N, C, K, x, dy, dw_ref, db_ref);
    for (int isa = 0; isa <= (int)nk_cpu_detect(); isa++) {
        for (int nt = 1; nt <= 2; nt++) {
            nk_exec ex = {nt, ws, wsn, 0};
            char what[160];
            for (int variant = 0; variant < 4; variant++) {
                const float *bias = variant & 1 ? b : NULL;
                const int relu    = variant >> 1;
                nk_dense_fwd_ref(N, C, K, x, w, bias, relu, y_ref);
                poison(y, (size_t)N * K);
                nk_dense_fwd_cpu((nk_isa)isa, &ex, N, C, K, x, w, bias, relu, y);
                snprintf(what, sizeof what, "dense_fwd %s t%d N=%d C=%d K=%d bias=%d relu=%d",
                         nk_isa_name((nk_isa)isa), nt, N, C, K, bias != NULL, relu);
                CHECK_CLOSE(what, y, y_ref, (int64_t)N * K, TOL_SUM_ATOL_PER_TERM * (C + 1),
                            TOL_SUM_RTOL);
            }
            poison(dx, (size_t)N * C);
            nk_dense_bwd_data_cpu((nk_isa)isa, &ex, N, C, K, dy, w, dx);
            snprintf(what, sizeof what, "dense_bwd_data %s t%d N=%d C=%d K=%d",
                     nk_isa_name((nk_isa)isa), nt, N, C, K);
            CHECK_CLOSE(what, dx, dx_ref, (int64_t)N * C, TOL_SUM_ATOL_PER_TERM * (K + 1),
                        TOL_SUM_RTOL);
            poison(dw, (size_t)C * K);
            poison(db, K);
            nk_dense_bwd_filter_cpu((nk_isa)isa, &ex, N, C, K, x, dy, dw, db);
            snprintf(what, sizeof what, "dense_bwd_filter %s t%d N=%d C=%d K=%d",
                     nk_isa_name((nk_isa)isa), nt, N, C, K);
            CHECK_CLOSE(what, dw, dw_ref, (int64_t)C * K, TOL_SUM_ATOL_PER_TERM * (N + 1),
                        TOL_SUM_RTOL);
            CHECK_CLOSE(what, db, db_ref, K, TOL_SUM_ATOL_PER_TERM * (N + 1), TOL_SUM_RTOL);
        }
    }
    free(x), free(w), free(b), free(dy), free(y_ref), free(y), free(dx_ref), free(dx);
    free(dw_ref), free(dw), free(db_ref), free(db), free(ws);
}

// ---- batch norm ----

static void test_bn(int64_t M, int C)
{
    const size_t n  = (size_t)M * C;
    const float eps = 1e-3f;
    float *x = xmalloc(n), *dy = xmalloc(n), *g = xmalloc(C), *be = xmalloc(C);
    float *mm = xmalloc(C), *mv = xmalloc(C);
    float *y_ref = xmalloc(n), *y = xmalloc(n), *dx_ref = xmalloc(n), *dx = xmalloc(n);
    float *mean_ref = xmalloc(C), *mean = xmalloc(C), *is_ref = xmalloc(C), *is = xmalloc(C);
    float *dg_ref = xmalloc(C), *dg = xmalloc(C), *db_ref = xmalloc(C), *db = xmalloc(C);
    float *ws = xmalloc(nk_bn_ws_floats(M, C));
    // An offset mean (2..4) exercises the cancellation a one-pass variance would suffer.
    fill(x, n, 41, 2, 4);
    fill(dy, n, 42, -1, 1);
    fill(g, C, 43, 0.5f, 1.5f);
    fill(be, C, 44, -1, 1);
    fill(mm, C, 45, 2.5f, 3.5f);
    fill(mv, C, 46, 0.1f, 1);
    const double tol_grad = TOL_BN_GRAD_ATOL_PER_ROW * (double)(M + 1);
    // relu: BN + ReLU as one op (the training fusion); ry is then the ReLU's output.
    for (int relu = 0; relu <= 1; relu++) {
        nk_bn_fwd_train_ref(M, C, x, g, be, eps, relu, y_ref, mean_ref, is_ref);
        const float *ry = relu ? y_ref : NULL;
        nk_bn_bwd_train_ref(M, C, x, ry, dy, g, mean_ref, is_ref, dx_ref, dg_ref, db_ref);
        for (int nt = 1; nt <= 2; nt++) {
            nk_exec ex = {nt, ws, nk_bn_ws_floats(M, C), 0};
            char what[120];
            poison(y, n);
            nk_bn_fwd_train_cpu(&ex, M, C, x, g, be, eps, relu, NULL, y, mean, is);
            snprintf(what, sizeof what, "bn_fwd_train_y r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, y, y_ref, (int64_t)n, TOL_BN_ATOL, TOL_BN_RTOL);
            snprintf(what, sizeof what, "bn_fwd_train_mean r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, mean, mean_ref, C, TOL_BN_ATOL, TOL_BN_RTOL);
            snprintf(what, sizeof what, "bn_fwd_train_invstd r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, is, is_ref, C, TOL_BN_ATOL, TOL_BN_RTOL);

            // Backward from the ref's statistics and mask, so only the backward is compared.
            poison(dx, n);
            nk_bn_bwd_train_cpu(&ex, M, C, x, ry, dy, g, NULL, mean_ref, is_ref, dx, dg, db, NULL);
            snprintf(what, sizeof what, "bn_bwd_train_dx r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, dx, dx_ref, (int64_t)n, TOL_BN_ATOL, TOL_BN_RTOL);
            snprintf(what, sizeof what, "bn_bwd_train_dgamma r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, dg, dg_ref, C, tol_grad, TOL_BN_RTOL);
            snprintf(what, sizeof what, "bn_bwd_train_dbeta r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, db, db_ref, C, tol_grad, TOL_BN_RTOL);
            poison(dg, C);
            nk_bn_bwd_train_cpu(&ex, M, C, x, ry, dy, g, NULL, mean_ref, is_ref, NULL, dg, db,
                                NULL);
            snprintf(what, sizeof what, "bn_bwd_train_nodx r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, dg, dg_ref, C, tol_grad, TOL_BN_RTOL);
        }
    }
    // BN + residual add (+ ReLU) as one op: the reference BN, then the add, then the ReLU.
    for (int relu = 0; relu <= 1; relu++) {
        float *res = xmalloc(n);
        fill(res, n, 47, -2, 2);
        nk_bn_fwd_train_ref(M, C, x, g, be, eps, 0, y_ref, mean_ref, is_ref);
        nk_add_fwd_ref((int64_t)n, res, y_ref, y_ref);
        if (relu) nk_relu_fwd_ref((int64_t)n, y_ref, y_ref);
        for (int nt = 1; nt <= 2; nt++) {
            nk_exec ex = {nt, ws, nk_bn_ws_floats(M, C), 0};
            char what[120];
            poison(y, n);
            nk_bn_fwd_train_cpu(&ex, M, C, x, g, be, eps, relu, res, y, mean, is);
            snprintf(what, sizeof what, "bn_fwd_train_res_y r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            // The BN part's relative error is of its own size (|bn(x)| < 8 here), which the
            // residual can cancel: an absolute allowance of that size.
            CHECK_CLOSE(what, y, y_ref, (int64_t)n, TOL_BN_ATOL + 8 * TOL_BN_RTOL, TOL_BN_RTOL);
            snprintf(what, sizeof what, "bn_fwd_train_res_mean r%d t%d M=%lld C=%d", relu, nt,
                     (long long)M, C);
            CHECK_CLOSE(what, mean, mean_ref, C, TOL_BN_ATOL, TOL_BN_RTOL);
        }
        free(res);
    }
    // The fused ReLU really masks: where the ReLU's output is 0, dy must not matter.
    if (n > 0) {
        nk_exec ex = {2, ws, nk_bn_ws_floats(M, C), 0};
        nk_bn_fwd_train_ref(M, C, x, g, be, eps, 1, y_ref, mean_ref, is_ref);
        nk_bn_bwd_train_cpu(&ex, M, C, x, y_ref, dy, g, NULL, mean_ref, is_ref, dx, dg, db, NULL);
        float *dy2 = xmalloc(n), *dx2 = xmalloc(n);
        int64_t masked = 0;
        for (size_t i = 0; i < n; i++) {
            dy2[i] = y_ref[i] > 0 ? dy[i] : 1e6f;
            masked += !(y_ref[i] > 0);
        }
        nk_bn_bwd_train_cpu(&ex, M, C, x, y_ref, dy2, g, NULL, mean_ref, is_ref, dx2, dg, db, NULL);
        CHECK(masked > 0 || n < 64);
        CHECK(memcmp(dx, dx2, n * sizeof(float)) == 0);
        free(dy2), free(dx2);
    }
    for (int nt = 1; nt <= 2; nt++) {
        nk_exec ex = {nt, ws, nk_bn_ws_floats(M, C), 0};
        char what[120];
        nk_bn_fwd_infer_ref(M, C, x, g, be, mm, mv, eps, y_ref);
        poison(y, n);
        nk_bn_fwd_infer_cpu(&ex, M, C, x, g, be, mm, mv, eps, y);
        snprintf(what, sizeof what, "bn_fwd_infer t%d M=%lld C=%d", nt, (long long)M, C);
        CHECK_CLOSE(what, y, y_ref, (int64_t)n, TOL_BN_ATOL, TOL_BN_RTOL);
    }
    // The thread count does not change a bit (fixed chunks and groups, sums in a fixed order).
    {
        nk_exec e1 = {1, ws, nk_bn_ws_floats(M, C), 0};
        nk_bn_fwd_train_cpu(&e1, M, C, x, g, be, eps, 1, NULL, y_ref, mean_ref, is_ref);
        nk_bn_bwd_train_cpu(&e1, M, C, x, y_ref, dy, g, NULL, mean_ref, is_ref, dx_ref, dg_ref,
                            db_ref, NULL);
        nk_exec e3 = {3, ws, nk_bn_ws_floats(M, C), 0};
        nk_bn_fwd_train_cpu(&e3, M, C, x, g, be, eps, 1, NULL, y, mean, is);
        nk_bn_bwd_train_cpu(&e3, M, C, x, y, dy, g, NULL, mean, is, dx, dg, db, NULL);
        CHECK(memcmp(y, y_ref, n * sizeof(float)) == 0 &&
              memcmp(mean, mean_ref, C * sizeof(float)) == 0 &&
              memcmp(is, is_ref, C * sizeof(float)) == 0);
        CHECK(memcmp(dx, dx_ref, n * sizeof(float)) == 0 &&
              memcmp(dg, dg_ref, C * sizeof(float)) == 0 &&
              memcmp(db, db_ref, C * sizeof(float)) == 0);
        // The mask recomputed from x and beta (ry not read) is the one the forward applied: the
        // same bits as reading ry, for either thread count.
        float *dx3 = xmalloc(n), *dg3 = xmalloc(C), *db3 = xmalloc(C);
        for (int t = 0; t < 2; t++) {
            nk_bn_bwd_train_cpu(t ? &e3 : &e1, M, C, x, NULL, dy, g, be, mean, is, dx3, dg3, db3,
                                NULL);
            CHECK_MSG(memcmp(dx3, dx, n * sizeof(float)) == 0 &&
                          memcmp(dg3, dg, C * sizeof(float)) == 0 &&
                          memcmp(db3, db, C * sizeof(float)) == 0,
                      "BN backward with the ReLU mask from x, %d threads, M=%lld C=%d", t ? 3 : 1,
                      (long long)M, C);
        }
        // With dxsum: the same dx, and dx's column sums bit for bit as nk_colsum_cpu reads them
        // back (the conv bias gradient it replaces), from ry or from x, either thread count.
        float *cs = xmalloc(C), *cs_ref = xmalloc(C);
        for (int t = 0; t < 4; t++) {
            const nk_exec *e = t & 1 ? &e3 : &e1;
            poison(dx3, n);
            nk_bn_bwd_train_cpu(e, M, C, x, t & 2 ? NULL : y, dy, g, t & 2 ? be : NULL, mean, is,
                                dx3, dg3, db3, cs);
            nk_colsum_cpu(e, M, C, dx3, cs_ref);
            CHECK_MSG(memcmp(dx3, dx, n * sizeof(float)) == 0 &&
                          memcmp(cs, cs_ref, C * sizeof(float)) == 0,
                      "BN backward summing dx (%s), %d threads, M=%lld C=%d",
                      t & 2 ? "mask from x" : "mask from ry", t & 1 ? 3 : 1, (long long)M, C);
        }
        free(dx3), free(dg3), free(db3), free(cs), free(cs_ref);
    }
    free(x), free(dy), free(g), free(be), free(mm), free(mv), free(y_ref), free(y);
    free(dx_ref), free(dx), free(mean_ref), free(mean), free(is_ref), free(is);
    free(dg_ref), free(dg), free(db_ref), free(db), free(ws);
}

// ---- elementwise ----

static void test_eltwise(int64_t n)
{
    float *a = xmalloc(n), *b = xmalloc(n), *r = xmalloc(n), *o = xmalloc(n), *g = xmalloc(n);
    fill(a, n, 51, -1, 1);
    fill(b, n, 52, -1, 1);
    fill(g, n, 53, -1, 1);
    // Exact zeros and a NaN: ReLU must treat them as the ref does (both give 0).
    for (int64_t i = 0; i < n; i += 5)
        a[i] = 0.0f;
    if (n > 3) a[3] = NAN;
    for (int nt = 1; nt <= 2; nt++) {
        nk_exec ex = {nt, NULL, 0, 0};
        char what[80];
        nk_relu_fwd_ref(n, a, r);
        poison(o, n);
        nk_relu_fwd_cpu(&ex, n, a, o);
        snprintf(what, sizeof what, "relu_fwd t%d n=%lld", nt, (long long)n);
        CHECK_CLOSE(what, o, r, n, TOL_EXACT, TOL_EXACT);
        if (n > 3) CHECK(o[3] == 0.0f);

        nk_relu_bwd_ref(n, a, g, r);
        poison(o, n);
        nk_relu_bwd_cpu(&ex, n, a, g, o);
        snprintf(what, sizeof what, "relu_bwd t%d n=%lld", nt, (long long)n);
        CHECK_CLOSE(what, o, r, n, TOL_EXACT, TOL_EXACT);
        // In place: dx == dy.
        memcpy(o, g, sizeof(float) * (size_t)n);
        nk_relu_bwd_cpu(&ex, n, a, o, o);
        snprintf(what, sizeof what, "relu_bwd_inplace t%d n=%lld", nt, (long long)n);
        CHECK_CLOSE(what, o, r, n, TOL_EXACT, TOL_EXACT);

        nk_add_fwd_ref(n, a, b, r);
        poison(o, n);
        nk_add_fwd_cpu(&ex, n, a, b, o);
        snprintf(what, sizeof what, "add_fwd t%d n=%lld", nt, (long long)n);
        CHECK_CLOSE(what, o, r, n, TOL_EXACT, TOL_EXACT);

        nk_relu_fwd_ref(n, r, r);
        poison(o, n);
        nk_add_relu_fwd_cpu(&ex, n, a, b, o);
        snprintf(what, sizeof what, "add_relu_fwd t%d n=%lld", nt, (long long)n);
        CHECK_CLOSE(what, o, r, n, TOL_EXACT, TOL_EXACT);
    }
    free(a), free(b), free(r), free(o), free(g);
}

// ---- pooling and padding ----

static void test_pool(int N, int H, int W, int C, int R, int stride, int pad)
{
    nk_conv_desc d  = {.N      = N,
                       .H      = H,
                       .W      = W,
                       .C      = C,
                       .K      = C,
                       .R      = R,
                       .S      = R,
                       .stride = stride,
                       .pad_h  = pad,
                       .pad_w  = pad};
    d.P             = (H + 2 * pad - R) / stride + 1;
    d.Q             = (W + 2 * pad - R) / stride + 1;
    const size_t nx = (size_t)N * H * W * C, ny = (size_t)N * d.P * d.Q * C;
    float *x = xmalloc(nx), *dy = xmalloc(ny), *r = xmalloc(nx), *o = xmalloc(nx);
    fill(x, nx, 61, -1, 1);
    fill(dy, ny, 62, -1, 1);
    // Ties (after a ReLU most values are 0): backward must pick the first maximum as the ref.
    for (size_t i = 0; i < nx; i += 3)
        x[i] = 0.0f;
    for (int nt = 1; nt <= 2; nt++) {
        nk_exec ex = {nt, NULL, 0, 0};
        char what[120];
        nk_maxpool_fwd_ref(&d, x, r);
        poison(o, ny);
        nk_maxpool_fwd_cpu(&ex, &d, x, o);
        snprintf(what, sizeof what, "maxpool_fwd t%d N=%d H=%d C=%d R=%d s=%d pad=%d", nt, N, H, C,
                 R, stride, pad);
        CHECK_CLOSE(what, o, r, (int64_t)ny, TOL_EXACT, TOL_EXACT);
        nk_maxpool_bwd_ref(&d, x, dy, r);
        poison(o, nx);
        nk_maxpool_bwd_cpu(&ex, &d, x, dy, o);
        snprintf(what, sizeof what, "maxpool_bwd t%d N=%d H=%d C=%d R=%d s=%d pad=%d", nt, N, H, C,
                 R, stride, pad);
        CHECK_CLOSE(what, o, r, (int64_t)nx, 1e-6, 1e-6); // overlapping windows sum in any order

        const int pt = 1, pb = 2, pl = 3, pr = 0;
        const size_t np = (size_t)N * (H + pt + pb) * (W + pl + pr) * C;
        float *pref = xmalloc(np), *pgot = xmalloc(np);
        nk_zeropad_fwd_ref(N, H, W, C, pt, pb, pl, pr, x, pref);
        poison(pgot, np);
        nk_zeropad_fwd_cpu(&ex, N, H, W, C, pt, pb, pl, pr, x, pgot);
        snprintf(what, sizeof what, "zeropad_fwd t%d N=%d H=%d C=%d", nt, N, H, C);
        CHECK_CLOSE(what, pgot, pref, (int64_t)np, TOL_EXACT, TOL_EXACT);
        // Backward: the interior of a padded gradient (pref as dy).
        nk_zeropad_bwd_ref(N, H, W, C, pt, pb, pl, pr, pref, r);
        poison(o, nx);
        nk_zeropad_bwd_cpu(&ex, N, H, W, C, pt, pb, pl, pr, pref, o);
        snprintf(what, sizeof what, "zeropad_bwd t%d N=%d H=%d C=%d", nt, N, H, C);
        CHECK_CLOSE(what, o, r, (int64_t)nx, TOL_EXACT, TOL_EXACT);
        free(pref), free(pgot);

        nk_gap_fwd_ref(N, H * W, C, x, r);
        poison(o, (size_t)N * C);
        nk_gap_fwd_cpu(&ex, N, H * W, C, x, o);
        snprintf(what, sizeof what, "gap_fwd t%d N=%d HW=%d C=%d", nt, N, H * W, C);
        CHECK_CLOSE(what, o, r, (int64_t)N * C, TOL_EXACT, TOL_EXACT); // same double sums
        // Backward: x's first N*C values as dy.
        nk_gap_bwd_ref(N, H * W, C, x, r);
        poison(o, nx);
        nk_gap_bwd_cpu(&ex, N, H * W, C, x, o);
        snprintf(what, sizeof what, "gap_bwd t%d N=%d HW=%d C=%d", nt, N, H * W, C);
        CHECK_CLOSE(what, o, r, (int64_t)nx, TOL_EXACT, TOL_EXACT);
    }
    free(x), free(dy), free(r), free(o);
}

int main(void)
{
    printf("isa detected: %s\n", nk_isa_name(nk_cpu_detect()));
    n_bf16 = nk_bf16_impls(bf16s);
    // The small test shapes run by Winograd in every pass (by default the passes on unpacked
    // weights leave shapes under 32 tiles to the implicit GEMM; test_wino_tiles checks that).
    const int min_tiles = nk_wino_min_tiles_w;
    nk_wino_min_tiles_w = 0;
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
        test_conv(&convs[i]);
    test_wino_bf16_rounding();
    // Winograd's shared V in chunks of 48 tiles (the default holds a whole small test shape; 192
    // tiles of K <= 128 take per-unit V), and U stored non-temporally whatever its size.
    const size_t chunk = nk_wino_chunk_floats, nt_min = nk_wino_nt_min_bytes;
    nk_wino_chunk_floats = 36 * 16 * 48;
    nk_wino_nt_min_bytes = 0;
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
        if (convs[i].R == 3 && convs[i].stride == 1 && convs[i].K > 64) test_conv(&convs[i]);
    nk_wino_chunk_floats = chunk;
    nk_wino_nt_min_bytes = nt_min;
    nk_wino_min_tiles_w  = min_tiles;
    test_wino_tiles();

    static const int dn[][3] = {{1, 1, 1},     {7, 33, 1},  {1, 1023, 7},
                                {33, 7, 1023}, {3, 64, 33}, {16, 2048, 14}};
    for (size_t i = 0; i < sizeof dn / sizeof dn[0]; i++)
        test_dense(dn[i][0], dn[i][1], dn[i][2]);

    static const int64_t bm[] = {1, 7, 33 * 33, 20000};
    // C = 300: ragged blocks of the per-channel merges (64); 1100: two channel blocks (1024).
    static const int bc[] = {1, 7, 33, 300, 1100};
    for (size_t i = 0; i < sizeof bm / sizeof bm[0]; i++)
        for (size_t j = 0; j < sizeof bc / sizeof bc[0]; j++)
            if (bm[i] * bc[j] <= 2000000) test_bn(bm[i], bc[j]);

    test_pool(1, 3, 3, 1, 3, 2, 0);
    test_pool(3, 7, 7, 33, 3, 2, 0);
    test_pool(2, 33, 33, 7, 3, 2, 0);
    test_pool(1, 9, 9, 130, 2, 1, 0);
    test_pool(2, 8, 9, 64, 3, 2, 0); // the last input row is in no window
    test_pool(2, 8, 8, 20, 3, 2, 1); // padded windows

    static const int64_t en[] = {1, 7, 1023, 100003};
    for (size_t i = 0; i < 4; i++)
        test_eltwise(en[i]);
    return check_summary("test_ops");
}
