/*
 * maxpool.c: reference max pooling on NHWC activations, described by nk_conv_desc with C == K.
 * No padding of its own (Keras puts a ZeroPadding2D in front); a tap outside the input, which a
 * desc with pad or an implied bottom/right margin would create, is skipped rather than read as 0.
 * Backward routes each dy to the first maximum in row-major (r,s) order. Tested in tests/.
 */
#include "kernels/ref/ref.h"

// Returns the offset in x of the first maximum of window (n,p,q) in channel c, scanning r then
// s; -1 when the window holds no input tap.
static int64_t window_argmax(const nk_conv_desc *d, const NK_REAL *x, int n, int p, int q, int c)
{
    int64_t best = -1;
    for (int r = 0; r < d->R; r++) {
        const int ih = p * d->stride - d->pad_h + r;
        if (ih < 0 || ih >= d->H) continue;
        for (int s = 0; s < d->S; s++) {
            const int iw = q * d->stride - d->pad_w + s;
            if (iw < 0 || iw >= d->W) continue;
            const int64_t i = (((int64_t)n * d->H + ih) * d->W + iw) * d->C + c;
            if (best < 0 || x[i] > x[best]) best = i; // strict: a later tie does not win
        }
    }
    return best;
}

// x [N,H,W,C] -> y [N,P,Q,C]; an empty window gives 0.
void NK_REF(nk_maxpool_fwd_ref)(const nk_conv_desc *d, const NK_REAL *x, NK_REAL *y)
{
    for (int n = 0; n < d->N; n++) {
        for (int p = 0; p < d->P; p++) {
            for (int q = 0; q < d->Q; q++) {
                for (int c = 0; c < d->C; c++) {
                    const int64_t best = window_argmax(d, x, n, p, q, c);
                    y[(((int64_t)n * d->P + p) * d->Q + q) * d->C + c] = best < 0 ? 0 : x[best];
                }
            }
        }
    }
}

// dx [N,H,W,C] is overwritten: zero, plus each dy added at its window's argmax (windows may
// overlap when stride < R, so one input can collect several dy).
void NK_REF(nk_maxpool_bwd_ref)(const nk_conv_desc *d, const NK_REAL *x, const NK_REAL *dy,
                                NK_REAL *dx)
{
    const int64_t nx = (int64_t)d->N * d->H * d->W * d->C;
    for (int64_t i = 0; i < nx; i++)
        dx[i] = 0;
    for (int n = 0; n < d->N; n++) {
        for (int p = 0; p < d->P; p++) {
            for (int q = 0; q < d->Q; q++) {
                for (int c = 0; c < d->C; c++) {
                    const int64_t best = window_argmax(d, x, n, p, q, c);
                    if (best >= 0) dx[best] += dy[(((int64_t)n * d->P + p) * d->Q + q) * d->C + c];
                }
            }
        }
    }
}
