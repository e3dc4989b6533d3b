/*
 * bn.c: reference batch normalisation over M rows of C channels (x is [M,C], M = N*H*W).
 * Training form (batch statistics, biased variance) and inference form (moving statistics),
 * forward and backward. Plain loops, sums in double; threaded versions are in kernels/cpu/.
 * Gradients are checked by central differences in tests/test_grad.c.
 */
#include "kernels/ref/ref.h"

// relu: y = max(bn(x), 0) (NaN -> 0), a BN and the ReLU after it as one layer.
void NK_REF(nk_bn_fwd_train_ref)(int64_t M, int C, const NK_REAL *x, const NK_REAL *gamma,
                                 const NK_REAL *beta, NK_REAL eps, int relu, NK_REAL *y,
                                 NK_REAL *mean, NK_REAL *invstd)
{
    for (int c = 0; c < C; c++) {
        double sum = 0.0;
        for (int64_t m = 0; m < M; m++)
            sum += x[m * C + c];
        const double mu = sum / (double)M;
        // Two passes: the variance from squared deviations does not cancel like E[x^2] - mu^2.
        double sq = 0.0;
        for (int64_t m = 0; m < M; m++) {
            const double dev = x[m * C + c] - mu;
            sq += dev * dev;
        }
        const double var = sq / (double)M; // biased, as Keras normalises in training
        const double is  = 1.0 / sqrt(var + eps);
        for (int64_t m = 0; m < M; m++) {
            const NK_REAL v = (NK_REAL)(gamma[c] * (x[m * C + c] - mu) * is + beta[c]);
            y[m * C + c]    = relu && !(v > 0) ? 0 : v;
        }
        mean[c]   = (NK_REAL)mu;
        invstd[c] = (NK_REAL)is;
    }
}

void NK_REF(nk_bn_fwd_infer_ref)(int64_t M, int C, const NK_REAL *x, const NK_REAL *gamma,
                                 const NK_REAL *beta, const NK_REAL *mmean, const NK_REAL *mvar,
                                 NK_REAL eps, NK_REAL *y)
{
    for (int c = 0; c < C; c++) {
        const double is = 1.0 / sqrt((double)mvar[c] + eps);
        for (int64_t m = 0; m < M; m++)
            y[m * C + c] = (NK_REAL)(gamma[c] * (x[m * C + c] - (double)mmean[c]) * is + beta[c]);
    }
}

// With xh = (x - mean) * invstd and sums over the M rows of one channel:
//   dbeta = sum dy, dgamma = sum dy*xh,
//   dx = gamma * invstd / M * (M*dy - dbeta - xh*dgamma)
// (the batch mean and variance depend on every x of the channel, hence the two sums).
// ry (may be NULL) is the output of a fused ReLU (nk_bn_fwd_train_ref with relu): dy is then the
// ReLU's output gradient and counts only where ry > 0.
#define BN_DY(i) (ry && !(ry[i] > 0) ? 0.0 : (double)dy[i])
void NK_REF(nk_bn_bwd_train_ref)(int64_t M, int C, const NK_REAL *x, const NK_REAL *ry,
                                 const NK_REAL *dy, const NK_REAL *gamma, const NK_REAL *mean,
                                 const NK_REAL *invstd, NK_REAL *dx, NK_REAL *dgamma,
                                 NK_REAL *dbeta)
{
    for (int c = 0; c < C; c++) {
        const double mu = mean[c], is = invstd[c];
        double sum_dy = 0.0, sum_dy_xh = 0.0;
        for (int64_t m = 0; m < M; m++) {
            const double xh = (x[m * C + c] - mu) * is;
            sum_dy += BN_DY(m * C + c);
            sum_dy_xh += BN_DY(m * C + c) * xh;
        }
        dgamma[c] = (NK_REAL)sum_dy_xh;
        dbeta[c]  = (NK_REAL)sum_dy;
        if (!dx) continue;
        const double scale = gamma[c] * is / (double)M;
        for (int64_t m = 0; m < M; m++) {
            const double xh = (x[m * C + c] - mu) * is;
            dx[m * C + c] =
                (NK_REAL)(scale * ((double)M * BN_DY(m * C + c) - sum_dy - xh * sum_dy_xh));
        }
    }
}
#undef BN_DY

// The inference form is y = gamma * xh + beta with xh = (x - mmean) / sqrt(mvar + eps) fixed per
// channel, so dx = dy * gamma / sqrt(mvar + eps), dgamma = sum dy*xh, dbeta = sum dy.
void NK_REF(nk_bn_bwd_infer_ref)(int64_t M, int C, const NK_REAL *x, const NK_REAL *dy,
                                 const NK_REAL *gamma, const NK_REAL *mmean, const NK_REAL *mvar,
                                 NK_REAL eps, NK_REAL *dx, NK_REAL *dgamma, NK_REAL *dbeta)
{
    for (int c = 0; c < C; c++) {
        const double is = 1.0 / sqrt((double)mvar[c] + eps);
        double sum_dy = 0.0, sum_dy_xh = 0.0;
        for (int64_t m = 0; m < M; m++) {
            const double g = dy[m * C + c];
            sum_dy += g;
            sum_dy_xh += g * (x[m * C + c] - (double)mmean[c]) * is;
            dx[m * C + c] = (NK_REAL)(g * gamma[c] * is);
        }
        if (dgamma) dgamma[c] = (NK_REAL)sum_dy_xh;
        if (dbeta) dbeta[c] = (NK_REAL)sum_dy;
    }
}
