/*
 * bce.c: reference sigmoid fused with class-weighted binary cross-entropy, Keras semantics:
 * p = sigmoid(z) clipped to [NK_BCE_EPS, 1 - NK_BCE_EPS], loss = sum_i wt_i l_i / N.
 * Computed on logits with a stable softplus, in double. Known values and the clip region are
 * tested in tests/test_ref.c; the gradient in tests/test_grad.c.
 */
#include "kernels/ref/ref.h"

// Clipping p to [eps, 1-eps] is clamping z to +-log((1-eps)/eps) = +-16.118...
static double bce_zmax(void)
{
    return log((1.0 - NK_BCE_EPS) / NK_BCE_EPS);
}

// softplus(z) = log(1 + e^z), written so that it neither overflows nor loses small terms.
static double softplus(double z)
{
    return (z > 0 ? z : 0.0) + log1p(exp(-fabs(z)));
}

// With p = sigmoid(z): log p = -softplus(-z) and log(1-p) = -softplus(z), so
// l = t softplus(-z) + (1-t) softplus(z). (Not softplus(z) - t z, which cancels when t = 1 and
// z is large.)
double NK_REF(nk_bce_fwd_ref)(int N, const NK_REAL *z, const NK_REAL *t, const NK_REAL *wt,
                              NK_REAL *p)
{
    if (N <= 0) return 0.0;
    const double zmax = bce_zmax();
    double sum        = 0.0;
    for (int i = 0; i < N; i++) {
        // Explicit comparisons, not fmin/fmax, so that a NaN logit stays NaN in the loss.
        double zc = z[i];
        if (zc > zmax) zc = zmax;
        if (zc < -zmax) zc = -zmax;
        const double l = t[i] * softplus(-zc) + (1.0 - t[i]) * softplus(zc);
        sum += (wt ? (double)wt[i] : 1.0) * l;
        if (p) p[i] = (NK_REAL)(1.0 / (1.0 + exp(-zc)));
    }
    return sum / N;
}

// Inside the clip range dl/dz = sigmoid(z) - t; outside it the clamped loss is flat. The range
// is closed, as tf.clip_by_value passes the gradient at the bounds.
void NK_REF(nk_bce_bwd_ref)(int N, const NK_REAL *z, const NK_REAL *t, const NK_REAL *wt,
                            NK_REAL *dz)
{
    const double zmax = bce_zmax();
    for (int i = 0; i < N; i++) {
        const double zi = z[i];
        if (zi > zmax || zi < -zmax) {
            dz[i] = 0;
            continue;
        }
        const double w = wt ? (double)wt[i] : 1.0;
        dz[i]          = (NK_REAL)(w * (1.0 / (1.0 + exp(-zi)) - t[i]) / N);
    }
}
