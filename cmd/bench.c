/*
 * bench.c: `pneumo bench peak|gemm|model [--dtype f32|bf16]`: the machine's measured FMA peak
 * (bf16: the VDPBF16PS peak, or TDPBF16PS on AMX), GEMM GFLOP/s on ResNet50 shapes, and whole-model
 * images/s, each as a grep-able line with % of the peak of its dtype. Every fast result is checked
 * before it is timed (GEMM: BLIS's C*t == A*(B*t) check; model: the fast kernels against the
 * reference kernels at batch 1). bench/run.sh adds PyTorch beside it.
 */
#include "cmd/bench_data.h"
#include "cmd/cli.h"
#include "kernels/nk.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// CPU seconds this process has used (all threads, user + system).
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int resolve_threads(int t)
{
    nt_ctx *ctx = cli_ctx("bench", t, 0);
    if (!ctx) return 1;
    int n = nt_ctx_nthreads(ctx);
    nt_ctx_free(ctx);
    return n;
}

static double measure_peak(nk_isa isa, int threads)
{
    return nk_fma_peak_gflops(isa, threads, 0.5);
}

// ---- gemm ----

static int gemm_check(nk_isa isa, const nk_exec *ex, int M, int N, int K, const float *A,
                      const float *B, const float *C)
{
    // C t == A (B t) for a random t, in double: O(n^2) instead of a full reference product.
    double *t = malloc(sizeof(double) * (size_t)N), *bt = malloc(sizeof(double) * (size_t)K);
    double worst = 0;
    for (int j = 0; j < N; j++)
        t[j] = nk_u01(77, (uint64_t)j) - 0.5;
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (int j = 0; j < N; j++)
            s += (double)B[(size_t)k * N + j] * t[j];
        bt[k] = s;
    }
    for (int i = 0; i < M; i++) {
        double ct = 0, abt = 0, mag = 0;
        for (int j = 0; j < N; j++)
            ct += (double)C[(size_t)i * N + j] * t[j];
        for (int k = 0; k < K; k++) {
            abt += (double)A[(size_t)i * K + k] * bt[k];
            mag += fabs((double)A[(size_t)i * K + k] * bt[k]);
        }
        double e = fabs(ct - abt) / (mag + 1e-30);
        if (e > worst) worst = e;
    }
    free(t);
    free(bt);
    return worst < 1e-4; // float products of K terms, compared against their magnitude
}

// One GEMM C[M,N] = A[M,K] B[K,N]; bf16: B packed once before timing (as model weights are), A
// rounded while packed inside the timed call. The check runs on bf16-rounded copies of A and B,
// so it tests the kernel, not bf16's precision.
// Operands come from nt_alloc, as the model's buffers do (64-byte aligned, huge pages from 4
// MiB): glibc's malloc hands large blocks out 16 bytes past a page, and rows that straddle
// cache lines made conv2's 1x1 weight gradient 30 % slower than the model runs it (18 against 14
// ms).
static int bench_gemm(int M, int N, int K, int threads, int repeat, double peak, nk_isa isa,
                      int bf16)
{
    float *A     = nt_alloc(sizeof(float) * (size_t)M * K),
          *B     = nt_alloc(sizeof(float) * (size_t)K * N);
    float *C     = nt_alloc(sizeof(float) * (size_t)M * N);
    size_t wsn   = bf16 ? nk_gemm_bf16_ws_floats(threads) : nk_sgemm_ws_floats(threads);
    float *ws    = nt_alloc(sizeof(float) * (wsn ? wsn : 1));
    uint16_t *Bp = bf16 ? nt_alloc(nk_gemm_bf16_packed_b_elems(K, N) * sizeof(uint16_t)) : NULL;
    if (!A || !B || !C || !ws || (bf16 && !Bp)) {
        nt_free(A), nt_free(B), nt_free(C), nt_free(ws), nt_free(Bp);
        return cli_fail("bench", EXIT_FAIL, "out of memory for M=%d N=%d K=%d", M, N, K);
    }
    for (size_t i = 0; i < (size_t)M * K; i++)
        A[i] = nk_u01(1, i) - 0.5f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        B[i] = nk_u01(2, i) - 0.5f;
    nk_exec ex         = {threads, ws, wsn, NK_CONV_AUTO};
    const char *op     = bf16 ? "gemm_bf16" : "sgemm";
    const char *impl   = bf16 ? nk_bf16_impl_name(nk_cpu_bf16()) : nk_isa_name(isa);
    nk_bf16_impl bimpl = nk_cpu_bf16();
    if (bf16) {
        for (size_t i = 0; i < (size_t)M * K; i++)
            A[i] = nk_bf16_to_f32(nk_f32_to_bf16(A[i]));
        for (size_t i = 0; i < (size_t)K * N; i++)
            B[i] = nk_bf16_to_f32(nk_f32_to_bf16(B[i]));
        nk_gemm_bf16_pack_b(0, K, N, B, N, Bp);
        nk_gemm_bf16_cpu(bimpl, &ex, M, N, K, A, K, Bp, 0.0f, C, N, NULL, NULL);
    } else {
        nk_sgemm_cpu(isa, &ex, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    }
    int ok = gemm_check(isa, &ex, M, N, K, A, B, C);
    if (!ok) {
        printf("op=%s impl=%s M=%d N=%d K=%d threads=%d FAIL (result differs from A*(B*t))\n", op,
               impl, M, N, K, threads);
    } else {
        double t[64];
        for (int r = 0; r < repeat; r++) {
            double t0 = now_s();
            if (bf16)
                nk_gemm_bf16_cpu(bimpl, &ex, M, N, K, A, K, Bp, 0.0f, C, N, NULL, NULL);
            else
                nk_sgemm_cpu(isa, &ex, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
            t[r] = now_s() - t0;
        }
        double s = median(t, repeat), gf = 2.0 * M * N * K / s * 1e-9;
        printf("op=%s impl=%s M=%d N=%d K=%d threads=%d ms=%.3f gflops=%.1f pct_peak=%.1f\n", op,
               impl, M, N, K, threads, s * 1e3, gf, 100 * gf / peak);
    }
    fflush(stdout);
    nt_free(A), nt_free(B), nt_free(C), nt_free(ws), nt_free(Bp);
    return ok ? EXIT_OK : EXIT_FAIL;
}

// ---- conv ----

// ResNet50 v1's distinct convolutions at 224 px (Keras: ZeroPadding2D(3) before conv1, 'same'
// 3x3, stride on the first 1x1 of conv3..5 and on their projections). bench/dnnl_conv.c keeps the
// same table for oneDNN.
typedef struct conv_shape {
    const char *name;
    int H, C, K, R, stride, pad, count; // count: how often the network runs it
    int own; // a shape given with --conv: H as given, whatever --img-size
} conv_shape;

static const conv_shape conv_shapes[] = {
    {"conv1_7x7s2", 230, 3, 64, 7, 2, 0, 1, 0},
    {"conv2_1x1_64_64", 56, 64, 64, 1, 1, 0, 1, 0},
    {"conv2_3x3", 56, 64, 64, 3, 1, 1, 3, 0},
    {"conv2_1x1_expand", 56, 64, 256, 1, 1, 0, 4, 0},
    {"conv2_1x1_reduce", 56, 256, 64, 1, 1, 0, 2, 0},
    {"conv3_1x1s2_reduce", 56, 256, 128, 1, 2, 0, 1, 0},
    {"conv3_1x1s2_proj", 56, 256, 512, 1, 2, 0, 1, 0},
    {"conv3_3x3", 28, 128, 128, 3, 1, 1, 4, 0},
    {"conv3_1x1_expand", 28, 128, 512, 1, 1, 0, 4, 0},
    {"conv3_1x1_reduce", 28, 512, 128, 1, 1, 0, 3, 0},
    {"conv4_1x1s2_reduce", 28, 512, 256, 1, 2, 0, 1, 0},
    {"conv4_1x1s2_proj", 28, 512, 1024, 1, 2, 0, 1, 0},
    {"conv4_3x3", 14, 256, 256, 3, 1, 1, 6, 0},
    {"conv4_1x1_expand", 14, 256, 1024, 1, 1, 0, 6, 0},
    {"conv4_1x1_reduce", 14, 1024, 256, 1, 1, 0, 5, 0},
    {"conv5_1x1s2_reduce", 14, 1024, 512, 1, 2, 0, 1, 0},
    {"conv5_1x1s2_proj", 14, 1024, 2048, 1, 2, 0, 1, 0},
    {"conv5_3x3", 7, 512, 512, 3, 1, 1, 3, 0},
    {"conv5_1x1_expand", 7, 512, 2048, 1, 1, 0, 3, 0},
    {"conv5_1x1_reduce", 7, 2048, 512, 1, 1, 0, 2, 0},
};

// The shape's input size at img px (the table is at 224: conv1's input after its 3-pixel padding,
// then the stages' 56, 28, 14 and 7), through the network's own arithmetic: conv1 7x7/2 and
// pool1 3x3/2 on their padded inputs, then a 1x1/2 at the start of each later stage.
static int conv_shape_h(const conv_shape *c, int img)
{
    if (c->own) return c->H;
    if (c->H == 230) return img + 6;
    int h = ((img + 6 - 7) / 2 + 1 + 2 - 3) / 2 + 1; // conv2's
    for (int t = 56; t > c->H; t /= 2)
        h = (h - 1) / 2 + 1;
    return h;
}

static nk_conv_desc conv_shape_desc(const conv_shape *c, int N, int img)
{
    const int h    = conv_shape_h(c, img);
    nk_conv_desc d = {.N = N, .H = h, .W = h, .C = c->C, .K = c->K, .R = c->R, .S = c->R};
    d.stride       = c->stride;
    d.pad_h = d.pad_w = c->pad;
    d.P = d.Q = (h + 2 * c->pad - c->R) / c->stride + 1;
    return d;
}

// Which computation `bench conv` times: the forward, or one half of the backward.
typedef enum { PASS_FWD, PASS_BWD_DATA, PASS_BWD_FILTER, PASS_FWD_TRAIN } conv_pass;
static const char *const pass_names[] = {"fwd", "bwd-data", "bwd-filter", "fwd-train"};

// Runs one convolution pass. The forward runs on weights packed before timing, as inference does
// (f32: nk_conv2d_fwd_packed_cpu; bf16: nk_conv2d_fwd_bf16x_cpu on bf16 activations in and out,
// as bf16 inference passes them between convolutions; an odd C (conv1's image) reads float32
// x, as the model's first convolution does); fwd-train as training's forward runs: f32 on the
// weights as they are (nk_conv2d_fwd_cpu: any transform inside the timed call), bf16 on float32
// activations in and out, which the backward reads (nk_conv2d_fwd_bf16_cpu, weights packed);
// the backward passes (f32) are
// nk_conv2d_bwd_data_cpu (dx from dy and w) and nk_conv2d_bwd_filter_cpu (dw and db from x and
// dy), as training runs them. Returns seconds per call (median), or -1 on a failed check: the fast
// kernel is compared with the reference (f32 or bf16) at batch 1 first.
static double conv_run(const conv_shape *c, int N, int img, int threads, int repeat, nk_isa isa,
                       nk_conv_algo algo, int bf16, conv_pass pass, double *err)
{
    nk_conv_desc d = conv_shape_desc(c, N, img), d1 = conv_shape_desc(c, 1, img);
    const size_t nx = (size_t)N * d.H * d.W * d.C, ny = (size_t)N * d.P * d.Q * d.K;
    const size_t nw = (size_t)d.R * d.S * d.C * d.K, rsc = (size_t)d.R * d.S * d.C;
    // bf16 forward: x rounded to bf16 before timing (an even C), y written in bf16.
    const int bfx = bf16 && pass == PASS_FWD && d.C % 2 == 0, bfy = bf16 && pass == PASS_FWD;
    size_t wsn = bf16 ? nk_conv2d_bf16_ws_floats(&d, threads) : nk_conv2d_ws_floats(&d, threads);
    if (bfy) wsn = nk_conv2d_bf16x_ws_floats(&d, threads, bfx);
    if (bf16 && pass == PASS_BWD_DATA) wsn = nk_conv2d_bwd_data_bf16_ws_floats(&d, threads);
    if (bf16 && pass == PASS_BWD_FILTER) wsn = nk_conv2d_bwd_filter_bf16_ws_floats(&d, threads);
    // The output of this pass and its size at batch 1 (the reference's copy).
    const int fwd      = pass == PASS_FWD || pass == PASS_FWD_TRAIN;
    const size_t nout  = fwd ? ny : pass == PASS_BWD_DATA ? nx : nw;
    const size_t nout1 = fwd                     ? (size_t)d1.P * d1.Q * d.K
                         : pass == PASS_BWD_DATA ? (size_t)d1.H * d1.W * d.C
                                                 : nw;
    float *x = nt_alloc(nx * 4), *w = nt_alloc(nw * 4), *b = nt_alloc((size_t)d.K * 4);
    float *y = nt_alloc(ny * 4), *o = nt_alloc(nout * 4), *yr = nt_alloc(nout1 * 4);
    float *db = nt_alloc((size_t)d.K * 4), *ws = nt_alloc(wsn * 4);
    uint16_t *wp = bf16 ? nt_alloc(nk_gemm_bf16_packed_b_elems((int)rsc, d.K) * 2) : NULL;
    // f32 too runs on weights packed once, as the model's inference does.
    float *wpf   = bf16 ? NULL : nt_alloc(nk_conv2d_packed_floats(isa, algo, &d) * 4);
    uint16_t *xb = bfx ? nt_alloc(nx * 2) : NULL, *yb = bfy ? nt_alloc(ny * 2) : NULL;
    double s = -1;
    *err     = -1; // out of memory, until the check has run
    if (!x || !w || !b || !y || !o || !yr || !db || !ws || (bf16 ? !wp : !wpf) || (bfx && !xb) ||
        (bfy && !yb))
        goto out;
    for (size_t i = 0; i < nx; i++)
        x[i] = nk_u01(3, i) - 0.5f;
    for (size_t i = 0; i < nw; i++)
        w[i] = (nk_u01(4, i) - 0.5f) * 0.1f;
    for (int k = 0; k < d.K; k++)
        b[k] = nk_u01(5, (uint64_t)k) - 0.5f;
    for (size_t i = 0; bfx && i < nx; i++)
        xb[i] = nk_f32_to_bf16(x[i]);
    for (size_t i = 0; i < ny; i++) // dy for the backward passes
        y[i] = nk_u01(6, i) - 0.5f;
    if (bf16)
        nk_gemm_bf16_pack_b(0, (int)rsc, d.K, w, d.K, wp);
    else
        nk_conv2d_pack(isa, algo, &d, w, wpf);
    nk_exec ex = {threads, ws, wsn, algo};
#define RUN(dd)                                                                                    \
    (pass == PASS_BWD_DATA && bf16                                                                 \
         ? nk_conv2d_bwd_data_bf16_cpu(nk_cpu_bf16(), &ex, &(dd), y, w, o)                         \
     : pass == PASS_BWD_DATA ? nk_conv2d_bwd_data_cpu(isa, &ex, &(dd), y, w, o)                    \
     : pass == PASS_BWD_FILTER && bf16                                                             \
         ? nk_conv2d_bwd_filter_bf16_cpu(nk_cpu_bf16(), &ex, &(dd), x, y, o, db)                   \
     : pass == PASS_BWD_FILTER ? nk_conv2d_bwd_filter_cpu(isa, &ex, &(dd), x, y, o, db)            \
     : pass == PASS_FWD_TRAIN && bf16                                                              \
         ? nk_conv2d_fwd_bf16_cpu(nk_cpu_bf16(), &ex, &(dd), x, wp, b, NULL, o)                    \
     : pass == PASS_FWD_TRAIN ? nk_conv2d_fwd_cpu(isa, &ex, &(dd), x, w, b, o)                     \
     : bf16 ? nk_conv2d_fwd_bf16x_cpu(nk_cpu_bf16(), &ex, &(dd), bfx ? NULL : x, xb, wp, b, NULL,  \
                                      NULL, yb)                                                    \
            : nk_conv2d_fwd_packed_cpu(isa, algo, &ex, &(dd), x, wpf, b, NULL, o))
    RUN(d1);
    if (pass == PASS_BWD_DATA && bf16)
        nk_conv2d_bwd_data_bf16_ref(&d1, y, w, yr);
    else if (pass == PASS_BWD_DATA)
        nk_conv2d_bwd_data_ref(&d1, y, w, yr);
    else if (pass == PASS_BWD_FILTER && bf16)
        nk_conv2d_bwd_filter_bf16_ref(&d1, x, y, yr, NULL);
    else if (pass == PASS_BWD_FILTER)
        nk_conv2d_bwd_filter_ref(&d1, x, y, yr, NULL);
    else if (bf16)
        nk_conv2d_fwd_bf16_ref(&d1, x, w, b, yr); // rounds x as xb was rounded
    else
        nk_conv2d_fwd_ref(&d1, x, w, b, yr);
    for (size_t i = 0; bfy && i < nout1; i++)
        o[i] = nk_bf16_to_f32(yb[i]);
    double e = 0, mx = 0;
    for (size_t i = 0; i < nout1; i++) {
        e  = fmax(e, fabs((double)o[i] - yr[i]));
        mx = fmax(mx, fabs((double)yr[i]));
    }
    *err = e / (mx > 0 ? mx : 1);
    // Sums of <= 12544 products: float32 rounding ~1e-6 of max; a bf16 output is rounded to 8
    // bits (2^-9 of max), where two orders of summation may round one ulp apart.
    if (!(*err < (bfy ? 8e-3 : 1e-4))) goto out;
    double t[64];
    RUN(d); // warm-up
    for (int r = 0; r < repeat; r++) {
        double t0 = now_s();
        RUN(d);
        t[r] = now_s() - t0;
    }
#undef RUN
    s = median(t, repeat);
out:
    nt_free(x), nt_free(w), nt_free(b), nt_free(y), nt_free(o), nt_free(yr), nt_free(db),
        nt_free(ws), nt_free(wp), nt_free(wpf), nt_free(xb), nt_free(yb);
    return s;
}

static int bench_conv(int batch, int img, int threads, int repeat, double peak, nk_isa isa,
                      nk_conv_algo algo, int bf16, conv_pass pass, const char *only,
                      const conv_shape *own)
{
    int rc         = EXIT_OK;
    double total_s = 0, total_f = 0;
    const char *impl = bf16 ? nk_bf16_impl_name(nk_cpu_bf16()) : nk_isa_name(isa);
    const size_t n   = own ? 1 : sizeof(conv_shapes) / sizeof(conv_shapes[0]);
    for (size_t i = 0; i < n; i++) {
        const conv_shape *c = own ? own : &conv_shapes[i];
        if (only && strcmp(only, c->name) != 0) continue;
        nk_conv_desc d = conv_shape_desc(c, batch, img);
        double err = 0, s = conv_run(c, batch, img, threads, repeat, isa, algo, bf16, pass, &err);
        double fl = 2.0 * batch * d.P * d.Q * (double)d.K * d.R * d.S * d.C;
        if (s < 0 && err < 0) {
            printf("op=conv name=%s pass=%s dtype=%s impl=%s FAIL (out of memory for its buffers "
                   "at batch %d)\n",
                   c->name, pass_names[pass], bf16 ? "bf16" : "f32", impl, batch);
            rc = EXIT_FAIL;
            continue;
        }
        if (s < 0) {
            printf("op=conv name=%s pass=%s dtype=%s impl=%s FAIL (rel error %.3g vs the "
                   "reference)\n",
                   c->name, pass_names[pass], bf16 ? "bf16" : "f32", impl, err);
            rc = EXIT_FAIL;
            continue;
        }
        total_s += s * c->count;
        total_f += fl * c->count;
        // Winograd (f32: forward, weight gradient, and backward data as a forward of the
        // flipped filter, C and K swapped; the passes on unpacked weights from 32 tiles up):
        // GFLOP/s still count the direct convolution's multiply-adds.
        nk_conv_desc dw = d;
        if (pass == PASS_BWD_DATA) dw.C = d.K, dw.K = d.C;
        const int wino = !bf16 && (pass == PASS_FWD ? nk_conv2d_winograd_fwd(isa, algo, &dw)
                                                    : nk_conv2d_winograd_w(isa, algo, &dw));
        printf("op=conv name=%s pass=%s dtype=%s impl=%s N=%d H=%d C=%d K=%d R=%d stride=%d "
               "count=%d threads=%d ms=%.3f gflops=%.1f pct_peak=%.1f algo=%s\n",
               c->name, pass_names[pass], bf16 ? "bf16" : "f32", impl, batch, d.H, c->C, c->K, c->R,
               c->stride, c->count, threads, s * 1e3, fl / s * 1e-9, 100 * fl / s * 1e-9 / peak,
               wino ? "winograd" : "gemm");
        fflush(stdout);
    }
    if (rc == EXIT_OK && !only && !own)
        printf("op=conv name=resnet50_all_convs pass=%s dtype=%s impl=%s N=%d threads=%d "
               "ms=%.1f gflops=%.1f pct_peak=%.1f\n",
               pass_names[pass], bf16 ? "bf16" : "f32", impl, batch, threads, total_s * 1e3,
               total_f / total_s * 1e-9, 100 * total_f / total_s * 1e-9 / peak);
    return rc;
}

// ---- model ----

// The first trainable layer (the backward stops there), or L when none is.
static int first_trainable(nt_model *m)
{
    const int L = nt_model_num_layers(m);
    for (int i = 0; i < L; i++) {
        nt_layer_info li;
        nt_model_layer(m, i, &li);
        if (li.ntrain > 0) return i;
    }
    return L;
}

// FLOPs of layer i at batch N (conv and dense multiply-adds x 2): its forward, and what a
// training step's backward adds (the weight gradient when trainable, the input gradient above
// the first trainable layer).
static void layer_flops(nt_model *m, int i, int N, int bstart, double *fwd, double *bwd)
{
    nt_layer_info li;
    nt_model_layer(m, i, &li);
    double c = 0;
    if (li.type == NT_LAYER_CONV) {
        // MACs = P*Q*K * (R*S*C); R*S*C = kernel params / K (bias excluded)
        double kparams = (double)(li.nparams - li.out_shape[3]);
        c              = 2.0 * N * (double)li.out_shape[1] * (double)li.out_shape[2] * kparams;
    } else if (li.type == NT_LAYER_DENSE) {
        c = 2.0 * N * (double)(li.nparams - li.out_shape[1]);
    }
    *fwd = c;
    *bwd = i >= bstart ? (li.ntrain > 0 ? c : 0) + (i > bstart ? c : 0) : 0;
}

// FLOPs of one forward and of one training step.
static void model_flops(nt_model *m, int N, double *fwd, double *train)
{
    const int L = nt_model_num_layers(m), bstart = first_trainable(m);
    double f = 0, t = 0;
    for (int i = 1; i < L; i++) {
        double lf, lb;
        layer_flops(m, i, N, bstart, &lf, &lb);
        f += lf;
        t += lf + lb;
    }
    *fwd   = f;
    *train = t;
}

typedef struct prof_row {
    int layer;
    double f, b;  // seconds per step: forward, backward
    double flops; // per step, forward + backward (direct-convolution count)
} prof_row;

// Slowest first (forward + backward).
static int cmp_prof(const void *a, const void *b)
{
    const prof_row *p = a, *q = b;
    double x = p->f + p->b, y = q->f + q->b;
    return x < y ? 1 : x > y ? -1 : 0;
}

// Per-layer-type totals and the slowest layers, per step (summed over `repeat` steps).
static void print_profile(nt_model *m, int N, int train, double peak, int repeat, double step_s,
                          int top)
{
    int L                 = nt_model_num_layers(m);
    const int bstart      = train ? first_trainable(m) : L; // inference: no backward flops
    prof_row *row         = calloc((size_t)L, sizeof(*row));
    double by_type[16][2] = {{0}};
    const char *names[16] = {0};
    for (int i = 0; i < L; i++) {
        nt_layer_info li;
        double f, b;
        nt_model_layer(m, i, &li);
        nt_model_layer_time(m, i, &f, &b);
        double ff, fb;
        layer_flops(m, i, N, bstart, &ff, &fb);
        row[i] = (prof_row){i, f / repeat, b / repeat, ff + fb};
        by_type[li.type][0] += f / repeat;
        by_type[li.type][1] += b / repeat;
        names[li.type] = li.type_name;
    }
    printf("profile: per step (mean %.1f ms), by layer type: forward ms / backward ms / %% of "
           "step\n",
           step_s * 1e3);
    for (int t = 0; t < 16; t++)
        if (names[t] && by_type[t][0] + by_type[t][1] > 0)
            printf("  %-24s %9.1f %9.1f %6.1f%%\n", names[t], by_type[t][0] * 1e3,
                   by_type[t][1] * 1e3, 100 * (by_type[t][0] + by_type[t][1]) / step_s);
    qsort(row, (size_t)L, sizeof(*row), cmp_prof);
    // GFLOP/s counts a convolution's direct multiply-adds, so Winograd layers can pass 100 %.
    printf("profile: slowest layers (ms per step: forward + backward, forward, backward; "
           "GFLOP/s, %% of peak)\n");
    for (int i = 0; i < top && i < L; i++) {
        nt_layer_info li;
        nt_model_layer(m, row[i].layer, &li);
        const double s = row[i].f + row[i].b;
        if (s <= 0) break;
        printf("  %-28s %-20s %9.2f %9.2f %9.2f", li.name, li.type_name, s * 1e3, row[i].f * 1e3,
               row[i].b * 1e3);
        if (row[i].flops > 0)
            printf(" %8.1f %6.1f%%", row[i].flops / s * 1e-9, 100 * row[i].flops / s * 1e-9 / peak);
        printf("\n");
    }
    free(row);
}

static int bench_model(int batch, int threads, int img, int train, int unfreeze, int repeat,
                       int warmup, double peak, int check, int profile, int top, const char *dtype)
{
    nt_ctx *ctx = cli_ctx_dtype("bench", threads, 1, dtype);
    if (!ctx) return EXIT_FAIL;
    nt_resnet_cfg cfg;
    nt_resnet_cfg_default(&cfg);
    cfg.img_size = img;
    nt_model *m  = NULL;
    nt_optim *op = NULL;
    nt_tensor x  = {0};
    int rc       = EXIT_OK;
    // bf16 with --train: the frozen layers' forward runs in bf16, the rest in f32.
    const int bf16 = dtype && strcmp(dtype, "bf16") == 0;
    nt_status s    = nt_resnet50_new(ctx, &cfg, &m);
    if (s == NT_OK) s = nt_model_init(m, NT_INIT_KERAS, 1);
    if (s == NT_OK) s = nt_model_set_trainable_last(m, unfreeze);
    // A training step ends with the update, as PyTorch's in bench/torch_resnet50.py: SGD with
    // momentum 0.9, lr 0.01.
    nt_optim_cfg oc;
    nt_optim_cfg_default(&oc, NT_OPT_SGD);
    oc.momentum = 0.9f;
    if (s == NT_OK && train) s = nt_optim_new(ctx, &oc, m, &op);
    int64_t shp[4] = {batch, img, img, 3};
    if (s == NT_OK) s = nt_tensor_new(ctx, 4, shp, &x);
    if (s != NT_OK) {
        rc = cli_fail("bench", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    for (int64_t i = 0; i < nt_tensor_numel(&x); i++)
        x.data[i] = nk_u01(5, (uint64_t)i);

    if (check) {
        // The fast kernels against the reference kernels on one image.
        nt_ctx_opts o;
        nt_ctx_opts_default(&o);
        o.impl  = NT_IMPL_REF;
        o.dtype = bf16;
        nt_ctx *rctx;
        nt_model *rm = NULL;
        nt_tensor x1 = x;
        x1.shape[0]  = 1;
        float a = 0, b = 0;
        if (nt_ctx_new(&o, &rctx) == NT_OK && nt_resnet50_new(rctx, &cfg, &rm) == NT_OK &&
            nt_model_init(rm, NT_INIT_KERAS, 1) == NT_OK &&
            nt_model_forward(rm, &x1, 0, 0) == NT_OK && nt_model_forward(m, &x1, 0, 0) == NT_OK) {
            a = nt_model_output(m)->data[0];
            b = nt_model_output(rm)->data[0];
        }
        nt_model_free(rm);
        nt_ctx_free(rctx);
        // bf16: both sides round every conv input to bf16, but float32 vs double sums can flip
        // an activation's rounding, which then propagates: a looser bound.
        const double tol = bf16 ? 1e-2 : 1e-3;
        double err       = fabs((double)a - b) / fmax(fabs((double)b), 1e-3);
        printf("check: %s kernels vs reference (%s) at batch 1: logit %.6g vs %.6g (rel %.2g) %s\n",
               nt_ctx_impl_name(ctx), bf16 ? "bf16" : "f32", (double)a, (double)b, err,
               err < tol ? "ok" : "FAIL");
        if (!(err < tol)) {
            printf("op=model FAIL: fast kernels disagree with the reference\n");
            rc = EXIT_FAIL;
            goto out;
        }
    }
    double fwd, trn;
    model_flops(m, batch, &fwd, &trn);
    float *dl  = calloc((size_t)batch, sizeof(float));
    float *lab = calloc((size_t)batch, sizeof(float));
    double t[64];
    double cpu[64];
    for (int r = -warmup; r < repeat; r++) {
        double t0 = now_s(), c0 = cpu_s();
        s = nt_model_forward(m, &x, train, (uint64_t)(r + warmup));
        if (s == NT_OK && train) {
            double loss;
            s            = nt_model_loss(m, lab, NULL, &loss, NULL, dl);
            nt_tensor dy = {.ndim = 2, .shape = {batch, 1}, .data = dl};
            for (int k = 0; k < batch; k++)
                dl[k] = 1.0f / (float)batch;
            if (s == NT_OK) s = nt_model_backward(m, &dy, NULL);
            if (s == NT_OK) s = nt_optim_step(op);
        }
        if (s != NT_OK) break;
        if (r >= 0) t[r] = now_s() - t0, cpu[r] = cpu_s() - c0;
        if (r == -1 && profile) nt_model_set_profile(m, 1); // count the timed steps only
    }
    if (profile && warmup == 0) printf("profile: needs --warmup >= 1\n");
    free(dl);
    free(lab);
    if (s != NT_OK) {
        rc = cli_fail("bench", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    // Besides the median: the best step (what a quiet machine gives; shared VMs are noisy) and
    // the median CPU time of a step over all threads (rises little when other processes take
    // cores away, so it tracks code changes on a busy machine; includes OpenMP spin-waits).
    double best = t[0];
    for (int r = 1; r < repeat; r++)
        best = fmin(best, t[r]);
    double cpu_med = median(cpu, repeat);
    double sec = median(t, repeat), flops = train ? trn : fwd;
    double gf = flops / sec * 1e-9;
    printf("op=model model=resnet50 mode=%s dtype=%s unfreeze=%d impl=%s batch=%d img=%d "
           "threads=%d ms=%.1f images_per_s=%.2f gflop_per_image=%.2f gflops=%.1f pct_peak=%.1f "
           "best_ms=%.1f best_images_per_s=%.2f best_pct_peak=%.1f cpu_ms=%.1f\n",
           train ? "train" : "infer", bf16 ? "bf16" : "f32", unfreeze, nt_ctx_impl_name(ctx), batch,
           img, nt_ctx_nthreads(ctx), sec * 1e3, batch / sec, flops / batch * 1e-9, gf,
           100 * gf / peak, best * 1e3, batch / best, 100 * flops / best * 1e-9 / peak,
           cpu_med * 1e3);
    // The layer times are sums over the timed steps: their shares are of the mean step (the
    // median one, on a noisy machine, made the shares add up to more than 100 %).
    double mean = 0;
    for (int r = 0; r < repeat; r++)
        mean += t[r] / repeat;
    if (profile && warmup > 0) print_profile(m, batch, train, peak, repeat, mean, top);
out:
    nt_tensor_free(&x);
    nt_optim_free(op);
    nt_model_free(m);
    nt_ctx_free(ctx);
    return rc;
}

// --conv H,C,K,R[,S[,P]]: a convolution of the caller's, named after its numbers (conv_h56_c64_
// k64_r3_s1_p1). Returns 0, or EXIT_USAGE after a one-line error.
static int parse_conv_shape(const char *s, conv_shape *c, char *name, size_t cap)
{
    long v[6]     = {0, 0, 0, 0, 1, 0};
    int n         = 0;
    const char *p = s;
    while (n < 6) {
        char *end;
        errno  = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > 1 << 20 || (*end != ',' && *end != '\0')) break;
        v[n++] = x;
        p      = end;
        if (*p == '\0') break;
        p++;
    }
    const int ok = (n >= 4 && *p == '\0' && p[-1] != ',') && v[0] >= 1 && v[0] <= 4096 &&
                   v[1] >= 1 && v[1] <= 65536 && v[2] >= 1 && v[2] <= 65536 && v[3] >= 1 &&
                   v[3] <= 64 && v[4] >= 1 && v[4] <= 64 && v[5] < v[3] && v[3] <= v[0] + 2 * v[5];
    if (!ok)
        return cli_fail("bench", EXIT_USAGE,
                        "--conv expects H,C,K,R[,STRIDE[,PAD]]: integers, H 1..4096, C and K "
                        "1..65536, R and STRIDE 1..64, PAD 0..R-1, R <= H + 2*PAD; got \"%s\"",
                        s);
    snprintf(name, cap, "conv_h%d_c%d_k%d_r%d_s%d_p%d", (int)v[0], (int)v[1], (int)v[2], (int)v[3],
             (int)v[4], (int)v[5]);
    *c = (conv_shape){name, (int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5], 1, 1};
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    const char *what = argc > 0 && argv[0][0] != '-' ? argv[0] : NULL;
    if (what && strcmp(what, "data") == 0) return bench_data(argc - 1, argv + 1);
    int threads = 0, batch = 16, img = 224, train = 0, repeat = 5, warmup = 1, M = 0, N = 0, K = 0,
        nocheck = 0, profile = 0, top = 12;
    double peak            = 0;
    const char *unfreeze_s = "20", *isa_s = NULL, *dtype_s = "f32", *pass_s = "fwd", *shape = NULL,
               *algo_s = "auto", *conv_s = NULL;
    cli_opt opts[] = {
        {"threads", OPT_INT, &threads, 0, 1024, "N", "threads, default all CPUs"},
        {"batch", OPT_INT, &batch, 1, 4096, "N", "model, conv: batch size, default 16"},
        {"img-size", OPT_INT, &img, 32, 1024, "PX",
         "model, conv: input size, default 224 (conv: the shapes at that size)"},
        {"train", OPT_FLAG, &train, 0, 0, NULL,
         "model: time a training step (forward, backward, SGD update)"},
        {"unfreeze", OPT_STR, &unfreeze_s, 0, 0, "N|all", "model --train: trainable layers (20)"},
        {"repeat", OPT_INT, &repeat, 1, 64, "N", "timed repeats (median), default 5"},
        {"warmup", OPT_INT, &warmup, 0, 16, "N", "untimed repeats first, default 1"},
        {"m", OPT_INT, &M, 1, 1 << 20, "M", "gemm: rows of C (with --n, --k: one shape)"},
        {"n", OPT_INT, &N, 1, 1 << 20, "N", "gemm: columns of C"},
        {"k", OPT_INT, &K, 1, 1 << 20, "K", "gemm: inner dimension"},
        {"isa", OPT_STR, &isa_s, 0, 0, "avx512|avx2|scalar", "gemm: micro-kernel, default best"},
        {"dtype", OPT_STR, &dtype_s, 0, 0, "f32|bf16",
         "compute type (bf16: inference, and the frozen layers when training; peak: the VDPBF16PS "
         "peak, TDPBF16PS on AMX; NK_BF16=avx512 in the environment keeps AMX off)"},
        {"peak", OPT_FLOAT, &peak, 1, 1e9, "GFLOPS", "peak to report against (default: measured)"},
        {"no-check", OPT_FLAG, &nocheck, 0, 0, NULL, "model: skip the check against the reference"},
        {"profile", OPT_FLAG, &profile, 0, 0, NULL, "model: time every layer (by type, slowest)"},
        {"top", OPT_INT, &top, 1, 100000, "N", "model --profile: slowest layers listed (12)"},
        {"pass", OPT_STR, &pass_s, 0, 0, "fwd|fwd-train|bwd-data|bwd-filter",
         "conv: the forward on packed weights (default), training's forward, or a backward "
         "half"},
        {"shape", OPT_STR, &shape, 0, 0, "NAME", "conv: only this shape (a name that it prints)"},
        {"conv", OPT_STR, &conv_s, 0, 0, "H,C,K,R[,S[,P]]",
         "conv: one shape of your own instead: HxH input, C channels in, K out, RxR filter, "
         "stride S (1), padding P (0)"},
        {"conv-algo", OPT_STR, &algo_s, 0, 0, "auto|gemm",
         "conv, model (f32): auto (Winograd for the 3x3s where it pays) or gemm only"},
    };
    cli_cmd cmd = {"bench",
                   "peak|gemm|conv|model|data [options]",
                   "Measure the FMA peak, GEMM and the whole ResNet50 (images/s, GFLOP/s, % of "
                   "peak).",
                   opts,
                   (int)(sizeof(opts) / sizeof(opts[0])),
                   0,
                   0};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, what ? argc - 1 : argc, what ? argv + 1 : argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if (!what || (strcmp(what, "peak") && strcmp(what, "gemm") && strcmp(what, "model") &&
                  strcmp(what, "conv")))
        return cli_fail("bench", EXIT_USAGE, "expected peak, gemm, conv, model or data, got %s%s%s",
                        what ? "\"" : "", what ? what : "nothing", what ? "\"" : "");
    int unfreeze;
    if ((rc = cli_parse_unfreeze("bench", unfreeze_s, &unfreeze))) return rc;
    nt_dtype dtype;
    if (nt_dtype_parse(dtype_s, &dtype) != NT_OK)
        return cli_fail("bench", EXIT_USAGE, "--dtype expects f32 or bf16, got \"%s\"", dtype_s);
    const int bf16 = dtype == NT_DTYPE_BF16;
    if (bf16 && nk_cpu_bf16() == NK_BF16_AMX_EMU)
        return cli_fail("bench", EXIT_FAIL,
                        "--dtype bf16 times the CPU's bf16 unit, got NK_BF16=amx-emulated (the C "
                        "model of AMX, for tests); unset NK_BF16");
    if (bf16 && !nk_bf16_hw())
        return cli_fail("bench", EXIT_FAIL, "--dtype bf16 needs a CPU with AVX512_BF16");
    nk_conv_algo algo;
    if (strcmp(algo_s, "auto") == 0)
        algo = NK_CONV_AUTO;
    else if (strcmp(algo_s, "gemm") == 0)
        algo = NK_CONV_GEMM;
    else
        return cli_fail("bench", EXIT_USAGE, "--conv-algo expects auto or gemm, got \"%s\"",
                        algo_s);
    if (strcmp(algo_s, "auto") != 0) setenv("PNEUMO_CONV", algo_s, 1); // bench model's context
    threads    = resolve_threads(threads);
    nk_isa isa = nk_cpu_detect();
    if (isa_s) {
        nk_isa want = strcmp(isa_s, "avx512") == 0   ? NK_ISA_AVX512
                      : strcmp(isa_s, "avx2") == 0   ? NK_ISA_AVX2
                      : strcmp(isa_s, "scalar") == 0 ? NK_ISA_SCALAR
                                                     : (nk_isa)-1;
        if ((int)want < 0)
            return cli_fail("bench", EXIT_USAGE, "--isa expects avx512, avx2 or scalar, got \"%s\"",
                            isa_s);
        if (want > isa)
            return cli_fail("bench", EXIT_USAGE, "--isa %s: this CPU supports at most %s", isa_s,
                            nk_isa_name(isa));
        isa = want;
    }
    if (shape && strcmp(what, "conv") == 0) {
        size_t i = 0, n = sizeof(conv_shapes) / sizeof(conv_shapes[0]);
        while (i < n && strcmp(shape, conv_shapes[i].name) != 0)
            i++;
        if (i == n)
            return cli_fail("bench", EXIT_USAGE,
                            "--shape expects a name that bench conv prints (conv1_7x7s2 ... "
                            "conv5_1x1_reduce), got \"%s\"",
                            shape);
    }
    conv_shape own;
    char own_name[128];
    if (conv_s && strcmp(what, "conv") == 0) {
        if (shape)
            return cli_fail("bench", EXIT_USAGE,
                            "--conv and --shape: expected one of them, got both");
        if ((rc = parse_conv_shape(conv_s, &own, own_name, sizeof own_name))) return rc;
        // The kernels take a GEMM's rows and sizes as int.
        const nk_conv_desc d = conv_shape_desc(&own, batch, img);
        const double big =
            fmax(fmax((double)batch * d.H * d.W * d.C, (double)batch * d.P * d.Q * d.K),
                 (double)batch * d.P * d.Q * d.R * d.S * d.C);
        if (big > 2147483647.0)
            return cli_fail("bench", EXIT_USAGE,
                            "--conv %s at --batch %d: expected tensors of at most 2^31-1 values, "
                            "got %.3g",
                            conv_s, batch, big);
    }
    if (peak <= 0) {
        peak = bf16 ? nk_bf16_peak_gflops(threads, 0.5) : measure_peak(nk_cpu_detect(), threads);
        printf("op=peak dtype=%s impl=%s threads=%d gflops=%.1f (measured %s loop)\n",
               bf16 ? "bf16" : "f32",
               bf16 ? nk_bf16_impl_name(nk_cpu_bf16()) : nk_isa_name(nk_cpu_detect()), threads,
               peak,
               !bf16                          ? "FMA"
               : nk_cpu_bf16() == NK_BF16_AMX ? "TDPBF16PS"
                                              : "VDPBF16PS");
        fflush(stdout);
    }
    if (strcmp(what, "peak") == 0) {
        if (threads > 1) {
            double p1 = bf16 ? nk_bf16_peak_gflops(1, 0.5) : measure_peak(nk_cpu_detect(), 1);
            printf("op=peak dtype=%s impl=%s threads=1 gflops=%.1f scaling=%.2fx\n",
                   bf16 ? "bf16" : "f32",
                   bf16 ? nk_bf16_impl_name(nk_cpu_bf16()) : nk_isa_name(nk_cpu_detect()), p1,
                   peak / p1);
        }
        return EXIT_OK;
    }
    if (strcmp(what, "gemm") == 0) {
        if (M && N && K) return bench_gemm(M, N, K, threads, repeat, peak, isa, bf16);
        if (M || N || K) return cli_fail("bench", EXIT_USAGE, "give all of --m, --n, --k or none");
        // ResNet50 GEMMs at batch 16 (M = 16*P*Q), plus a square one.
        static const int shapes[][3] = {
            {2048, 2048, 2048}, {50176, 64, 64},    {50176, 256, 64},  {50176, 64, 576},
            {12544, 512, 128},  {12544, 128, 1152}, {3136, 1024, 256}, {3136, 256, 2304},
            {784, 2048, 512},   {784, 512, 4608},
        };
        for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
            int r = bench_gemm(shapes[i][0], shapes[i][1], shapes[i][2], threads, repeat, peak, isa,
                               bf16);
            if (r) rc = r;
        }
        return rc;
    }
    if (strcmp(what, "conv") == 0) {
        int pass = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(pass_s, pass_names[i]) == 0) pass = i;
        if (pass < 0)
            return cli_fail("bench", EXIT_USAGE,
                            "--pass expects fwd, fwd-train, bwd-data or bwd-filter, got \"%s\"",
                            pass_s);
        return bench_conv(batch, img, threads, repeat, peak, isa, algo, bf16, (conv_pass)pass,
                          shape, conv_s ? &own : NULL);
    }
    return bench_model(batch, threads, img, train, unfreeze, repeat, warmup, peak, !nocheck,
                       profile, top, bf16 ? "bf16" : "f32");
}
