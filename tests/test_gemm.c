/*
 * test_gemm.c: nk_sgemm_cpu (kernels/cpu/gemm*.c) against the specification nk_sgemm_ref
 * (kernels/ref/gemm.c) on odd sizes, every ta/tb, alpha/beta (beta = 0 over a NaN-filled C),
 * padded leading dimensions, every ISA this machine has and 1 and 2 threads; then BLIS's O(n^2)
 * check C t == A (B t) on a large threaded case. NK_ISA caps the ISAs tried (kernels/cpu/cpu.c).
 * The bf16 GEMM (nk_gemm_bf16_cpu, every bf16 impl here including the emulated one) against
 * nk_gemm_bf16_ref on the same shapes, with rounding ties and specials in the inputs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"
#include "tests/check.h"

// Inputs are uniform in [-1, 1), so a dot product of K terms has rounding error growing like
// sqrt(K) eps; K * 1e-6 leaves a wide margin (the ref sums in double, the fast path in fp32).
#define TOL_GEMM_ATOL_PER_K 1e-6
// Relative part for large entries (alpha, beta scale them).
#define TOL_GEMM_RTOL 1e-5
// O(n^2) check: |C t - A (B t)| / (|A| |B| |t|) summed in double; fp32 GEMM rounding is ~K eps.
#define TOL_GEMM_PROJ_REL 1e-5

// The bf16 impls that run here (nk_bf16_impls: the emulated ones always), set by main.
static nk_bf16_impl bf16s[4];
static int n_bf16;

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

// Odd sizes around the register blocks (4x8, 6x16, 6x64) and cache blocks (kc 256, mc 264/480),
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
            nk_exec ex = {nt, ws, wsn, 0};
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
            if (!ta || tb || cf.alpha != 1.0f) continue;
            // The weight-gradient form C = A^T B + beta C (unpacked where the ISA has it).
            memcpy(C, C0, (size_t)M * ldc * sizeof(float));
            nk_sgemm_atb_cpu((nk_isa)isa, &ex, M, N, K, A, lda, B, ldb, cf.beta, C, ldc);
            snprintf(what, sizeof what, "sgemm_atb %s t%d M=%d N=%d K=%d b=%g pad=%d",
                     nk_isa_name((nk_isa)isa), nt, M, N, K, cf.beta, pad);
            pad_ok = 1;
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
    nk_exec ex = {nt, ws, wsn, 0};
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

// ---- bf16 ----

// The fast bf16 GEMM and its reference round the inputs identically, so only float32 summation
// order differs: the fp32 tolerance applies (products of bf16 values are exact in float32).
#define TOL_BF16_ATOL_PER_K 1e-6
#define TOL_BF16_RTOL       1e-5

static void check_bf16_rounding(void)
{
    // Ties go to even; denormals flush to signed zero; NaN stays NaN; overflow gives infinity.
    static const struct {
        float in;
        uint16_t out;
    } cases[] = {
        {1.0f, 0x3f80},       {1.00390625f, 0x3f80}, {1.01171875f, 0x3f82}, {-1.00390625f, 0xbf80},
        {1.0039064f, 0x3f81}, {0.0f, 0x0000},        {-0.0f, 0x8000},       {1e-40f, 0x0000},
        {-1e-40f, 0x8000},    {3.4e38f, 0x7f80},     {-3.4e38f, 0xff80},    {INFINITY, 0x7f80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = nk_f32_to_bf16(cases[i].in);
        CHECK_MSG(got == cases[i].out, "nk_f32_to_bf16(%.9g) = 0x%04x, want 0x%04x",
                  (double)cases[i].in, got, cases[i].out);
    }
    CHECK(isnan(nk_bf16_to_f32(nk_f32_to_bf16(NAN))));
    CHECK(nk_bf16_to_f32(0x3f80) == 1.0f);
}

// nk_gemm_bf16_pack_b (any thread count, the AVX512_BF16 packer where the CPU has one) against
// its documented layout built element by element with nk_f32_to_bf16, on the rounding cases
// above and random values: the packed bits must be identical.
static void check_bf16_pack_b(int K, int N, int tb)
{
    const int ldb = (tb ? K : N) + 3;
    float *B      = xmalloc((size_t)(tb ? N : K) * ldb);
    fill(B, (size_t)(tb ? N : K) * ldb, 9 + (uint64_t)K);
    static const float special[] = {1.00390625f, 1.01171875f, -1.00390625f, 1.0039064f, 0.0f,
                                    -0.0f,       1e-40f,      3.4e38f,      -3.4e38f};
    for (size_t i = 0; i < (size_t)(tb ? N : K) * ldb; i += 7)
        B[i] = special[(i / 7) % (sizeof special / sizeof special[0])];
    const size_t ne = nk_gemm_bf16_packed_b_elems(K, N);
    uint16_t *want = malloc(ne * 2), *got = malloc(ne * 2);
    if (!want || !got) exit(1);
    const int Kp = (K + 1) / 2;
    for (int jp = 0; jp < (N + NK_BF16_NR - 1) / NK_BF16_NR; jp++)
        for (int q = 0; q < Kp; q++)
            for (int j = 0; j < NK_BF16_NR; j++)
                for (int e = 0; e < 2; e++) {
                    const int col = jp * NK_BF16_NR + j, k = 2 * q + e;
                    const float v                                          = col < N && k < K
                                                                                 ? (tb ? B[(size_t)col * ldb + k] : B[(size_t)k * ldb + col])
                                                                                 : 0.0f;
                    want[(((size_t)jp * Kp + q) * NK_BF16_NR + j) * 2 + e] = nk_f32_to_bf16(v);
                }
    for (int nt = 1; nt <= 2; nt++) {
        memset(got, 0xab, ne * 2);
        nk_gemm_bf16_pack_b_mt(nt, tb, K, N, B, ldb, got);
        CHECK_MSG(memcmp(got, want, ne * 2) == 0, "bf16 pack_b K=%d N=%d tb=%d t%d differs", K, N,
                  tb, nt);
    }
    free(B), free(want), free(got);
}

static void run_bf16_case(const shape *s, int tb, float beta, int epi)
{
    const int M = s->M, N = s->N, K = s->K, pad = 3;
    const int lda = K + pad, ldc = N + pad, ldb = (tb ? K : N) + pad;
    float *A = xmalloc((size_t)M * lda), *B = xmalloc((size_t)(tb ? N : K) * ldb);
    float *C0 = xmalloc((size_t)M * ldc), *Cref = xmalloc((size_t)M * ldc);
    float *C = xmalloc((size_t)M * ldc), *bias = xmalloc((size_t)N);
    float *sc = xmalloc((size_t)N), *sh = xmalloc((size_t)N);
    fill(A, (size_t)M * lda, 41 + (uint64_t)M);
    fill(B, (size_t)(tb ? N : K) * ldb, 42 + (uint64_t)N);
    fill(bias, (size_t)N, 43);
    fill(sc, (size_t)N, 44);
    fill(sh, (size_t)N, 45);
    // Rounding ties (halfway between two bf16 values, both parities) among the inputs.
    static const float ties[] = {1.00390625f, 1.01171875f, -0.501953125f, 0.2509765625f};
    for (size_t i = 0; i < (size_t)M * lda; i += 7)
        A[i] = ties[i % 4];
    for (size_t i = 3; i < (size_t)(tb ? N : K) * ldb; i += 11)
        B[i] = ties[i % 4];
    if (beta == 0.0f)
        for (size_t i = 0; i < (size_t)M * ldc; i++)
            C0[i] = NAN;
    else
        fill(C0, (size_t)M * ldc, 46);
    memcpy(Cref, C0, (size_t)M * ldc * sizeof(float));
    nk_gemm_bf16_ref(tb, M, N, K, A, lda, B, ldb, beta, Cref, ldc);
    if (epi) // + bias, then the per-column affine map, then ReLU (beta is 0 here)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float v                   = (Cref[(size_t)i * ldc + j] + bias[j]) * sc[j] + sh[j];
                Cref[(size_t)i * ldc + j] = v > 0.0f ? v : 0.0f;
            }
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++)
            Cref[(size_t)i * ldc + j] = C0[(size_t)i * ldc + j];
    uint16_t *Bp = malloc(nk_gemm_bf16_packed_b_elems(K, N) * sizeof(uint16_t) + 2);
    if (!Bp) exit(1);
    nk_gemm_bf16_pack_b(tb, K, N, B, ldb, Bp);
    size_t wsn     = nk_gemm_bf16_ws_floats(2);
    float *wsb     = xmalloc(wsn + 1);
    nk_epilogue ep = {.scale = sc, .shift = sh, .relu = 1};
    for (int ii = 0; ii < n_bf16; ii++) {
        const int impl = bf16s[ii];
        for (int nt = 1; nt <= 2; nt++) {
            memcpy(C, C0, (size_t)M * ldc * sizeof(float));
            nk_exec ex = {nt, wsb + 1, wsn, 0};
            nk_gemm_bf16_cpu((nk_bf16_impl)impl, &ex, M, N, K, A, lda, Bp, beta, C, ldc,
                             epi ? bias : NULL, epi ? &ep : NULL);
            char what[160];
            snprintf(what, sizeof what, "gemm_bf16 %s t%d M=%d N=%d K=%d tb=%d b=%g epi=%d",
                     nk_bf16_impl_name((nk_bf16_impl)impl), nt, M, N, K, tb, beta, epi);
            int pad_ok = 1;
            for (int i = 0; i < M; i++)
                for (int j = N; j < ldc; j++)
                    pad_ok &= memcmp(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], 4) == 0;
            CHECK_MSG(pad_ok, "%s wrote outside its N columns", what);
            CHECK_CLOSE(what, C, Cref, (int64_t)M * ldc, TOL_BF16_ATOL_PER_K * (K + 1) * 4,
                        TOL_BF16_RTOL);
        }
    }
    free(A), free(B), free(C0), free(Cref), free(C), free(bias), free(sc), free(sh), free(Bp);
    free(wsb);
}

int main(void)
{
    printf("isa detected: %s\n", nk_isa_name(nk_cpu_detect()));
    n_bf16 = nk_bf16_impls(bf16s);
    CHECK(nk_sgemm_ws_floats(1) > 0 && nk_sgemm_ws_floats(2) > nk_sgemm_ws_floats(1));
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t c = 0; c < sizeof coefs / sizeof coefs[0]; c++)
                    run_case(&shapes[s], ta, tb, coefs[c], (int)(c % 2) * 3);
    // K = 0 scales C by beta only.
    run_case(&(shape){5, 9, 0}, 0, 0, (coef){1.0f, 0.5f}, 1);
    run_case(&(shape){5, 9, 0}, 1, 1, (coef){1.0f, 0.0f}, 0);
    printf("bf16 impl detected: %s\n", nk_bf16_impl_name(nk_cpu_bf16()));
    check_bf16_rounding();
    static const int pk[][2] = {{1, 1}, {7, 33}, {33, 7}, {300, 65}, {257, 1023}, {64, 512}};
    for (size_t i = 0; i < sizeof pk / sizeof pk[0]; i++)
        for (int tb = 0; tb < 2; tb++)
            check_bf16_pack_b(pk[i][0], pk[i][1], tb);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tb = 0; tb < 2; tb++) {
            run_bf16_case(&shapes[s], tb, 0.0f, 0);
            run_bf16_case(&shapes[s], tb, 1.0f, 0);
            run_bf16_case(&shapes[s], tb, 0.0f, 1);
        }
    run_bf16_case(&(shape){5, 9, 0}, 0, 0.5f, 0);
    check_projection(1500, 1100, 1300, 2);
    check_projection(2000, 64, 4608, 2);
    return check_summary("test_gemm");
}
