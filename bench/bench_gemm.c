/*
 * bench_gemm.c: times nk_sgemm_cpu (kernels/cpu/) on square sizes and ResNet50 convolution GEMM
 * shapes (M = batch*P*Q, N = K filters, K = R*S*C) at batch 1 and 16, with 1 and 2 threads, and
 * prints one grep-able line per config with GFLOP/s and % of the measured FMA peak. Every config
 * is first checked against nk_sgemm_ref on its first and last rows; a wrong result prints FAIL
 * and no number. Built with -DHAVE_OPENBLAS (link -lopenblas) it also times cblas_sgemm.
 * NK_ISA=avx2|scalar caps the micro-kernel, as everywhere.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/nk.h"

#ifdef HAVE_OPENBLAS
#    include <cblas.h>
void openblas_set_num_threads(int num_threads);
#endif

// Repeats: at least BENCH_MIN_REPS, more while the total stays under BENCH_SECONDS.
#define BENCH_MIN_REPS 5
#define BENCH_MAX_REPS 51
#define BENCH_SECONDS  0.6
// Rows checked against the reference at each end of C (covers the first and the edge tiles).
#define VERIFY_ROWS 40
// Inputs in [-1,1): fp32 rounding over K terms stays far below K * 1e-6 (test_gemm uses the same).
#define VERIFY_ATOL_PER_K 1e-6

typedef struct {
    const char *name;
    int M, N, K;
} bshape;

// ResNet50 v1 at 224x224, batch 1 (M = P*Q); batch 16 multiplies M by 16.
static const bshape resnet[] = {
    {"conv1_7x7s2", 12544, 64, 147}, {"res2_1x1_reduce", 3136, 64, 256},
    {"res2_3x3", 3136, 64, 576},     {"res2_1x1_expand", 3136, 256, 64},
    {"res3_3x3", 784, 128, 1152},    {"res3_1x1_expand", 784, 512, 128},
    {"res4_3x3", 196, 256, 2304},    {"res4_1x1_expand", 196, 1024, 256},
    {"res5_3x3", 49, 512, 4608},     {"res5_1x1_expand", 49, 2048, 512},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *xmalloc(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_gemm: out of memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

typedef void (*gemm_fn)(void *ctx, int M, int N, int K, const float *A, const float *B, float *C);

typedef struct {
    nk_isa isa;
    nk_exec ex;
} nk_ctx;

static void run_nk(void *ctx, int M, int N, int K, const float *A, const float *B, float *C)
{
    nk_ctx *c = ctx;
    nk_sgemm_cpu(c->isa, &c->ex, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
}

#ifdef HAVE_OPENBLAS
static void run_blas(void *ctx, int M, int N, int K, const float *A, const float *B, float *C)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
}
#endif

// Median seconds per call over the repeats, after one warm-up call.
static double time_median(gemm_fn fn, void *ctx, int M, int N, int K, const float *A,
                          const float *B, float *C)
{
    double t[BENCH_MAX_REPS];
    fn(ctx, M, N, K, A, B, C);
    int n        = 0;
    double start = now();
    while (n < BENCH_MAX_REPS && (n < BENCH_MIN_REPS || now() - start < BENCH_SECONDS)) {
        double t0 = now();
        fn(ctx, M, N, K, A, B, C);
        t[n++] = now() - t0;
    }
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return t[n / 2];
}

// Checks rows [r0, r1) of C against the reference. Returns 1 when all are close.
static int verify_rows(int r0, int r1, int N, int K, const float *A, const float *B, const float *C,
                       float *tmp)
{
    nk_sgemm_ref(0, 0, r1 - r0, N, K, 1.0f, A + (size_t)r0 * K, K, B, N, 0.0f, tmp, N);
    double atol = VERIFY_ATOL_PER_K * (K + 1);
    for (size_t i = 0; i < (size_t)(r1 - r0) * N; i++)
        if (!(fabs(C[(size_t)r0 * N + i] - tmp[i]) <= atol + 1e-5 * fabs(tmp[i]))) return 0;
    return 1;
}

static void bench_one(const char *name, int M, int N, int K, int nt, nk_isa isa, double peak,
                      float *ws, size_t wsn)
{
    float *A = xmalloc((size_t)M * K), *B = xmalloc((size_t)K * N), *C = xmalloc((size_t)M * N);
    float *tmp = xmalloc((size_t)VERIFY_ROWS * N);
    for (size_t i = 0; i < (size_t)M * K; i++)
        A[i] = 2.0f * nk_u01(1, i) - 1.0f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        B[i] = 2.0f * nk_u01(2, i) - 1.0f;
    for (size_t i = 0; i < (size_t)M * N; i++)
        C[i] = NAN;

    nk_ctx ctx = {isa, {nt, ws, wsn, NK_CONV_AUTO}};
    run_nk(&ctx, M, N, K, A, B, C);
    int v  = VERIFY_ROWS < M ? VERIFY_ROWS : M;
    int ok = verify_rows(0, v, N, K, A, B, C, tmp) && verify_rows(M - v, M, N, K, A, B, C, tmp);
    printf("op=sgemm impl=%s shape=%s M=%d N=%d K=%d threads=%d ", nk_isa_name(isa), name, M, N, K,
           nt);
    if (!ok) {
        printf("FAIL\n");
    } else {
        double flop = 2.0 * M * N * (double)K;
        double g    = flop / time_median(run_nk, &ctx, M, N, K, A, B, C) * 1e-9;
        printf("gflops=%.1f pct_peak=%.1f", g, 100.0 * g / peak);
#ifdef HAVE_OPENBLAS
        openblas_set_num_threads(nt);
        double gb = flop / time_median(run_blas, NULL, M, N, K, A, B, C) * 1e-9;
        printf(" openblas_gflops=%.1f ratio_vs_openblas=%.2f", gb, g / gb);
#endif
        printf("\n");
    }
    fflush(stdout);
    free(A);
    free(B);
    free(C);
    free(tmp);
}

int main(void)
{
    nk_isa isa     = nk_cpu_detect();
    size_t wsn     = nk_sgemm_ws_floats(2);
    float *ws      = xmalloc(wsn);
    double peak[3] = {0, 0, 0};
    for (int nt = 1; nt <= 2; nt++) {
        peak[nt] = nk_fma_peak_gflops(isa, nt, 0.5);
        printf("op=fma_peak impl=%s threads=%d gflops=%.1f\n", nk_isa_name(isa), nt, peak[nt]);
    }
    static const int squares[] = {256, 512, 1024, 2048};
    for (int nt = 1; nt <= 2; nt++) {
        for (size_t i = 0; i < sizeof squares / sizeof squares[0]; i++)
            bench_one("square", squares[i], squares[i], squares[i], nt, isa, peak[nt], ws, wsn);
        for (int batch = 1; batch <= 16; batch += 15)
            for (size_t i = 0; i < sizeof resnet / sizeof resnet[0]; i++) {
                char name[64];
                snprintf(name, sizeof name, "%s_b%d", resnet[i].name, batch);
                bench_one(name, resnet[i].M * batch, resnet[i].N, resnet[i].K, nt, isa, peak[nt],
                          ws, wsn);
            }
    }
    free(ws);
    return 0;
}
