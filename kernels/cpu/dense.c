/*
 * dense.c: the fully connected layer through nk_sgemm_cpu: y = x w (+ b, ReLU fused into the
 * GEMM's tile epilogue), dx = dy w^T, dw = x^T dy, db = column sums of dy. Plain C; the
 * specification is kernels/ref/dense.c and tests/test_ops.c compares the two.
 */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"

void nk_dense_fwd_cpu(nk_isa isa, const nk_exec *ex, int N, int C, int K, const float *x,
                      const float *w, const float *b, int relu, float *y)
{
    // y[N, K] = x[N, C] w[C, K].
    const nk_epilogue ep = {.relu = relu};
    nk_sgemm_cpu_epi(isa, ex, 0, 0, N, K, C, 1.0f, x, C, w, K, 0.0f, y, K, b, &ep);
}

void nk_dense_bwd_data_cpu(nk_isa isa, const nk_exec *ex, int N, int C, int K, const float *dy,
                           const float *w, float *dx)
{
    // dx[N, C] = dy[N, K] w[C, K]^T.
    nk_sgemm_cpu(isa, ex, 0, 1, N, C, K, 1.0f, dy, K, w, K, 0.0f, dx, C);
}

void nk_dense_bwd_filter_cpu(nk_isa isa, const nk_exec *ex, int N, int C, int K, const float *x,
                             const float *dy, float *dw, float *db)
{
    // dw[C, K] = x[N, C]^T dy[N, K].
    nk_sgemm_cpu(isa, ex, 1, 0, C, K, N, 1.0f, x, C, dy, K, 0.0f, dw, K);
    if (db) nk_colsum_cpu(ex, N, K, dy, db);
}
