/*
 * gemm.c: reference row-major GEMM, C = alpha op(A) op(B) + beta C, the specification for the
 * packed, threaded nk_sgemm_cpu (kernels/cpu/, compared in tests/test_gemm.c). Triple loop,
 * one thread, dot products in double; not for speed.
 */
#include "kernels/ref/ref.h"

// op(A)[i,k] is A[i*lda + k], or A[k*lda + i] when ta; op(B)[k,j] is B[k*ldb + j], or
// B[j*ldb + k] when tb. beta == 0 never reads C, so NaNs in the old C do not leak through.
void NK_REF(nk_sgemm_ref)(int ta, int tb, int M, int N, int K, NK_REAL alpha, const NK_REAL *A,
                          int lda, const NK_REAL *B, int ldb, NK_REAL beta, NK_REAL *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) {
                const double a = ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k];
                const double b = tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j];
                acc += a * b;
            }
            double c = alpha * acc;
            if (beta != 0) c += (double)beta * C[(int64_t)i * ldc + j];
            C[(int64_t)i * ldc + j] = (NK_REAL)c;
        }
    }
}
