/*
 * dense.c: reference fully connected layer, x [N,C], w [C,K], b [K] or NULL, y [N,K], with an
 * optional fused ReLU in forward only (the caller undoes it before the backward calls).
 * Plain loops, sums in double; the GEMM version is in kernels/cpu/. Tested in tests/.
 */
#include "kernels/ref/ref.h"

// y[n,k] = b[k] + sum_c x[n,c] w[c,k], then max(y, 0) when relu != 0.
void NK_REF(nk_dense_fwd_ref)(int N, int C, int K, const NK_REAL *x, const NK_REAL *w,
                              const NK_REAL *b, int relu, NK_REAL *y)
{
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            double acc = b ? (double)b[k] : 0.0;
            for (int c = 0; c < C; c++)
                acc += (double)x[(int64_t)n * C + c] * w[(int64_t)c * K + k];
            if (relu && !(acc > 0)) acc = 0.0;
            y[(int64_t)n * K + k] = (NK_REAL)acc;
        }
    }
}

// dx[n,c] = sum_k dy[n,k] w[c,k].
void NK_REF(nk_dense_bwd_data_ref)(int N, int C, int K, const NK_REAL *dy, const NK_REAL *w,
                                   NK_REAL *dx)
{
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)dy[(int64_t)n * K + k] * w[(int64_t)c * K + k];
            dx[(int64_t)n * C + c] = (NK_REAL)acc;
        }
    }
}

// dw[c,k] = sum_n x[n,c] dy[n,k]; db[k] = sum_n dy[n,k] when db != NULL.
void NK_REF(nk_dense_bwd_filter_ref)(int N, int C, int K, const NK_REAL *x, const NK_REAL *dy,
                                     NK_REAL *dw, NK_REAL *db)
{
    for (int c = 0; c < C; c++) {
        for (int k = 0; k < K; k++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++)
                acc += (double)x[(int64_t)n * C + c] * dy[(int64_t)n * K + k];
            dw[(int64_t)c * K + k] = (NK_REAL)acc;
        }
    }
    if (!db) return;
    for (int k = 0; k < K; k++) {
        double acc = 0.0;
        for (int n = 0; n < N; n++)
            acc += dy[(int64_t)n * K + k];
        db[k] = (NK_REAL)acc;
    }
}
