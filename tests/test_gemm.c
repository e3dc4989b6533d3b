/*
 * test_gemm.c: nk_sgemm_cpu (kernels/cpu/gemm*.c) against the specification nk_sgemm_ref
 * (kernels/ref/gemm.c) on odd sizes, every ta/tb, alpha/beta (beta = 0 over a NaN-filled C),
 * padded leading dimensions, every ISA this machine has and 1 and 2 threads; then BLIS's O(n^2)
 * check C t == A (B t) on a large threaded case. NK_ISA caps the ISAs tried (kernels/cpu/cpu.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/nk.h"
#include "tests/check.h"

// Inputs are uniform in [-1, 1), so a dot product of K terms has rounding error growing like
// sqrt(K) eps; K * 1e-6 leaves a wide margin (the ref sums in double, the fast path in fp32).
#define TOL_GEMM_ATOL_PER_K 1e-6
// Relative part for large entries (alpha, beta scale them).
#define TOL_GEMM_RTOL 1e-5
// O(n^2) check: |C t - A (B t)| / (|A| |B| |t|) summed in double; fp32 GEMM rounding is ~K eps.
#define TOL_GEMM_PROJ_REL 1e-5

static void fill(float *p, size_t n, uint64_t key)
{
    for (size_t i = 0; i < n; i++)
        p[i] = 2.0f * nk_u01(key, i) - 1.0f;
}

static float *xmalloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

typedef struct {
    int M, N, K;
} shape;

// Odd sizes around the register blocks (4x8, 6x16, 12x32) and cache blocks (kc 256, mc 264/480),
// and the 1 / 7 / 33 / 1023 mixes.
static const shape shapes[] = {
    {1, 1, 1},     {1, 7, 33},     {7, 1, 33},     {33, 33, 1},   {7, 33, 1023},
    {1023, 7, 33}, {33, 1023, 7},  {1, 1023, 1},   {1023, 1, 33}, {13, 33, 300},
    {97, 65, 257}, {481, 67, 513}, {50, 2100, 40}, {600, 40, 70},
};

typedef struct {
    float alpha, beta;
} coef;

static const coef coefs[] = {{1.0f, 0.0f}, {-0.75f, 1.0f}, {1.5f, -0.5f}, {0.0f, 0.5f}};

static int run_case(const shape *s, int ta, int tb, coef cf, int pad)
{
    const int M = s->M, N = s->N, K = s->K;
    // Stored shapes: A [M,K] or [K,M]; B [K,N] or [N,K]; leading dims padded by `pad`.
    const int arows = ta ? K : M, acols = ta ? M : K;
    const int brows = tb ? N : K, bcols = tb ? K : N;
    const int lda = acols + pad, ldb = bcols + pad, ldc = N + pad;
    float *A = xmalloc((size_t)arows * lda), *B = xmalloc((size_t)brows * ldb);
    float *C0 = xmalloc((size_t)M * ldc), *Cref = xmalloc((size_t)M * ldc);
    float *C = xmalloc((size_t)M * ldc);
    fill(A, (size_t)arows * lda, 1 + (uint64_t)M);
    fill(B, (size_t)brows * ldb, 2 + (uint64_t)N);
    if (cf.beta == 0.0f)
        for (size_t i = 0; i < (size_t)M * ldc; i++)
            C0[i] = NAN;
    else
        fill(C0, (size_t)M * ldc, 3);
    memcpy(Cref, C0, (size_t)M * ldc * sizeof(float));
    nk_sgemm_ref(ta, tb, M, N, K, cf.alpha, A, lda, B, ldb, cf.beta, Cref, ldc);
    // The padding columns of C must come back untouched: compare them against C0.
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++)
            Cref[(size_t)i * ldc + j] = C0[(size_t)i * ldc + j];

    // The workspace starts one float off a 64-byte boundary, so the driver's own alignment has to
    // fit inside nk_sgemm_ws_floats (ASan builds catch an overrun).
    size_t wsn = nk_sgemm_ws_floats(2);
    float *wsb = xmalloc(wsn + 1), *ws = wsb + 1;
    int ok = 1;
    for (int isa = 0; isa <= (int)nk_cpu_detect(); isa++) {
        for (int nt = 1; nt <= 2; nt++) {
            memcpy(C, C0, (size_t)M * ldc * sizeof(float));
            nk_exec ex = {nt, ws, wsn};
            nk_sgemm_cpu((nk_isa)isa, &ex, ta, tb, M, N, K, cf.alpha, A, lda, B, ldb, cf.beta, C,
                         ldc);
            char what[160];
            snprintf(what, sizeof what, "sgemm %s t%d M=%d N=%d K=%d ta=%d tb=%d a=%g b=%g pad=%d",
                     nk_isa_name((nk_isa)isa), nt, M, N, K, ta, tb, cf.alpha, cf.beta, pad);
            double atol = TOL_GEMM_ATOL_PER_K * (K + 1) * (fabs(cf.alpha) + 1);
            // NaN padding columns would be skipped by CHECK_CLOSE (non-finite ref); check them.
            int pad_ok = 1;
            for (int i = 0; i < M; i++)
                for (int j = N; j < ldc; j++)
                    pad_ok &= memcmp(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], 4) == 0;
            CHECK_MSG(pad_ok, "%s wrote outside its N columns", what);
            ok &= CHECK_CLOSE(what, C, Cref, (int64_t)M * ldc, atol, TOL_GEMM_RTOL) && pad_ok;
        }
    }
    free(A);
    free(B);
    free(C0);
    free(Cref);
    free(C);
    free(wsb);
    return ok;
}

// BLIS-style O(n^2) check: with a random t, C t must equal A (B t) up to fp32 rounding.
static void check_projection(int M, int N, int K, int nt)
{
    float *A = xmalloc((size_t)M * K), *B = xmalloc((size_t)K * N), *C = xmalloc((size_t)M * N);
    double *t = malloc(sizeof(double) * N), *bt = malloc(sizeof(double) * K);
    if (!t || !bt) exit(1);
    fill(A, (size_t)M * K, 11);
    fill(B, (size_t)K * N, 12);
    for (int j = 0; j < N; j++)
        t[j] = 2.0 * nk_u01(13, (uint64_t)j) - 1.0;
    for (int p = 0; p < K; p++) {
        double s = 0;
        for (int j = 0; j < N; j++)
            s += (double)B[(size_t)p * N + j] * t[j];
        bt[p] = s;
    }
    size_t wsn = nk_sgemm_ws_floats(nt);
    float *ws  = xmalloc(wsn);
    nk_isa isa = nk_cpu_detect();
    nk_exec ex = {nt, ws, wsn};
    nk_sgemm_cpu(isa, &ex, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    double err = 0, nrm = 0;
    for (int i = 0; i < M; i++) {
        double ct = 0, abt = 0;
        for (int j = 0; j < N; j++)
            ct += (double)C[(size_t)i * N + j] * t[j];
        for (int p = 0; p < K; p++)
            abt += (double)A[(size_t)i * K + p] * bt[p];
        err += (ct - abt) * (ct - abt);
        nrm += abt * abt;
    }
    double rel = sqrt(err / (nrm > 0 ? nrm : 1));
    printf("%s sgemm O(n^2) %s t%d M=%d N=%d K=%d: rel=%.3g (tol %.1g)\n",
           rel <= TOL_GEMM_PROJ_REL ? "ok  " : "FAIL", nk_isa_name(isa), nt, M, N, K, rel,
           TOL_GEMM_PROJ_REL);
    CHECK(rel <= TOL_GEMM_PROJ_REL);
    free(A);
    free(B);
    free(C);
    free(t);
    free(bt);
    free(ws);
}

int main(void)
{
    printf("isa detected: %s\n", nk_isa_name(nk_cpu_detect()));
    CHECK(nk_sgemm_ws_floats(1) > 0 && nk_sgemm_ws_floats(2) > nk_sgemm_ws_floats(1));
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t c = 0; c < sizeof coefs / sizeof coefs[0]; c++)
                    run_case(&shapes[s], ta, tb, coefs[c], (int)(c % 2) * 3);
    // K = 0 scales C by beta only.
    run_case(&(shape){5, 9, 0}, 0, 0, (coef){1.0f, 0.5f}, 1);
    run_case(&(shape){5, 9, 0}, 1, 1, (coef){1.0f, 0.0f}, 0);
    check_projection(1500, 1100, 1300, 2);
    check_projection(2000, 64, 4608, 2);
    return check_summary("test_gemm");
}
