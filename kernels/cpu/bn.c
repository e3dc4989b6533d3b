/*
 * bn.c: threaded batch normalisation over M rows of C channels (x is [M,C]): training forward
 * (two-pass batch statistics), inference forward and training backward. Threads own disjoint
 * channel ranges, so results do not depend on the thread count; sums run in fp32 over blocks of
 * BN_RBLOCK rows and then in double. Plain C + OpenMP. Specification: kernels/ref/bn.c; compared
 * in tests/test_ops.c.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "kernels/nk.h"

// Channels handled together: one block's accumulators (double + float) stay on the stack.
#define BN_CBLOCK 256
// Rows summed in fp32 before each double accumulation: exact enough (~BN_RBLOCK ulp) and
// vectorisable.
#define BN_RBLOCK 32
// Below this many elements per thread, use fewer threads.
#define BN_MIN_PER_THREAD 32768

static int nthreads_for(const nk_exec *ex, int64_t n)
{
    int nt = ex && ex->nthreads > 0 ? ex->nthreads : 1;
    while (nt > 1 && n < (int64_t)nt * BN_MIN_PER_THREAD)
        nt--;
    return nt;
}

// acc[0:w] = sum over rows of x[m*C + j] - sub[j] (sub may be NULL), squared when sq.
static void col_sums(int64_t M, int C, const float *x, int w, const float *sub, int sq, double *acc)
{
    float part[BN_CBLOCK];
    for (int j = 0; j < w; j++)
        acc[j] = 0.0;
    for (int64_t m0 = 0; m0 < M; m0 += BN_RBLOCK) {
        const int64_t m1 = M - m0 < BN_RBLOCK ? M : m0 + BN_RBLOCK;
        for (int j = 0; j < w; j++)
            part[j] = 0.0f;
        for (int64_t m = m0; m < m1; m++) {
            const float *xr = x + m * C;
            if (sq) {
                for (int j = 0; j < w; j++) {
                    const float dv = xr[j] - sub[j];
                    part[j] += dv * dv;
                }
            } else {
                for (int j = 0; j < w; j++)
                    part[j] += xr[j];
            }
        }
        for (int j = 0; j < w; j++)
            acc[j] += part[j];
    }
}

void nk_bn_fwd_train_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, float eps, float *y, float *mean, float *invstd)
{
#pragma omp parallel num_threads(nthreads_for(ex, M *C))
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        const int c0 = (int)((int64_t)C * tid / nth), c1 = (int)((int64_t)C * (tid + 1) / nth);
        for (int cb = c0; cb < c1; cb += BN_CBLOCK) {
            const int w = c1 - cb < BN_CBLOCK ? c1 - cb : BN_CBLOCK;
            double acc[BN_CBLOCK];
            float mu[BN_CBLOCK], sc[BN_CBLOCK];
            col_sums(M, C, x + cb, w, NULL, 0, acc);
            for (int j = 0; j < w; j++)
                mu[j] = (float)(acc[j] / (double)M);
            // Second pass over squared deviations: no cancellation as in E[x^2] - mean^2.
            col_sums(M, C, x + cb, w, mu, 1, acc);
            for (int j = 0; j < w; j++) {
                const double is = 1.0 / sqrt(acc[j] / (double)M + eps);
                mean[cb + j]    = mu[j];
                invstd[cb + j]  = (float)is;
                sc[j]           = (float)(gamma[cb + j] * is);
            }
            const float *bb = beta + cb;
            for (int64_t m = 0; m < M; m++) {
                const float *xr = x + m * C + cb;
                float *yr       = y + m * C + cb;
                for (int j = 0; j < w; j++)
                    yr[j] = (xr[j] - mu[j]) * sc[j] + bb[j];
            }
        }
    }
}

void nk_bn_fwd_infer_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, const float *mmean, const float *mvar, float eps,
                         float *y)
{
    // Rows are independent here, so threads split rows; each folds the scale once per block.
#pragma omp parallel num_threads(nthreads_for(ex, M *C))
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        const int64_t m0 = M * tid / nth, m1 = M * (tid + 1) / nth;
        for (int cb = 0; cb < C; cb += BN_CBLOCK) {
            const int w = C - cb < BN_CBLOCK ? C - cb : BN_CBLOCK;
            float sc[BN_CBLOCK];
            for (int j = 0; j < w; j++)
                sc[j] = (float)(gamma[cb + j] / sqrt((double)mvar[cb + j] + eps));
            const float *mm = mmean + cb, *bb = beta + cb;
            for (int64_t m = m0; m < m1; m++) {
                const float *xr = x + m * C + cb;
                float *yr       = y + m * C + cb;
                for (int j = 0; j < w; j++)
                    yr[j] = (xr[j] - mm[j]) * sc[j] + bb[j];
            }
        }
    }
}

void nk_bn_bwd_train_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *dy,
                         const float *gamma, const float *mean, const float *invstd, float *dx,
                         float *dgamma, float *dbeta)
{
    // dbeta = sum dy, dgamma = sum dy*xh, dx = gamma*invstd*(dy - dbeta/M - xh*dgamma/M) with
    // xh = (x - mean)*invstd (derivation in kernels/ref/bn.c).
#pragma omp parallel num_threads(nthreads_for(ex, M *C))
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        const int c0 = (int)((int64_t)C * tid / nth), c1 = (int)((int64_t)C * (tid + 1) / nth);
        for (int cb = c0; cb < c1; cb += BN_CBLOCK) {
            const int w     = c1 - cb < BN_CBLOCK ? c1 - cb : BN_CBLOCK;
            const float *mu = mean + cb, *is = invstd + cb;
            double sdy[BN_CBLOCK], sdx[BN_CBLOCK];
            float pdy[BN_CBLOCK], pdx[BN_CBLOCK];
            for (int j = 0; j < w; j++)
                sdy[j] = sdx[j] = 0.0;
            for (int64_t m0 = 0; m0 < M; m0 += BN_RBLOCK) {
                const int64_t m1 = M - m0 < BN_RBLOCK ? M : m0 + BN_RBLOCK;
                for (int j = 0; j < w; j++)
                    pdy[j] = pdx[j] = 0.0f;
                for (int64_t m = m0; m < m1; m++) {
                    const float *xr = x + m * C + cb, *gr = dy + m * C + cb;
                    for (int j = 0; j < w; j++) {
                        pdy[j] += gr[j];
                        pdx[j] += gr[j] * ((xr[j] - mu[j]) * is[j]);
                    }
                }
                for (int j = 0; j < w; j++) {
                    sdy[j] += pdy[j];
                    sdx[j] += pdx[j];
                }
            }
            float k[BN_CBLOCK], ady[BN_CBLOCK], axh[BN_CBLOCK];
            for (int j = 0; j < w; j++) {
                dbeta[cb + j]  = (float)sdy[j];
                dgamma[cb + j] = (float)sdx[j];
                k[j]           = gamma[cb + j] * is[j];
                ady[j]         = (float)(sdy[j] / (double)M);
                axh[j]         = (float)(sdx[j] / (double)M);
            }
            if (!dx) continue;
            for (int64_t m = 0; m < M; m++) {
                const float *xr = x + m * C + cb, *gr = dy + m * C + cb;
                float *dr = dx + m * C + cb;
                for (int j = 0; j < w; j++)
                    dr[j] = k[j] * (gr[j] - ady[j] - (xr[j] - mu[j]) * is[j] * axh[j]);
            }
        }
    }
}
