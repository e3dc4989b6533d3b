/*
 * zeropad.c: reference zero padding of NHWC activations (Keras ZeroPadding2D) and its backward,
 * a crop. pt/pb/pl/pr are the rows above/below and columns left/right. Plain loops, one thread.
 * Tested in tests/test_ref.c and tests/test_grad.c.
 */
#include "kernels/ref/ref.h"

// x [N,H,W,C] -> y [N,H+pt+pb,W+pl+pr,C]; every y entry is written.
void NK_REF(nk_zeropad_fwd_ref)(int N, int H, int W, int C, int pt, int pb, int pl, int pr,
                                const NK_REAL *x, NK_REAL *y)
{
    const int Ho = H + pt + pb, Wo = W + pl + pr;
    for (int n = 0; n < N; n++) {
        for (int oh = 0; oh < Ho; oh++) {
            for (int ow = 0; ow < Wo; ow++) {
                const int ih = oh - pt, iw = ow - pl;
                const int inside  = ih >= 0 && ih < H && iw >= 0 && iw < W;
                NK_REAL *yp       = y + (((int64_t)n * Ho + oh) * Wo + ow) * C;
                const NK_REAL *xp = x + (((int64_t)n * H + ih) * W + iw) * C;
                for (int c = 0; c < C; c++)
                    yp[c] = inside ? xp[c] : 0;
            }
        }
    }
}

// dx [N,H,W,C] is the interior of dy [N,H+pt+pb,W+pl+pr,C]; the border gradients are dropped.
void NK_REF(nk_zeropad_bwd_ref)(int N, int H, int W, int C, int pt, int pb, int pl, int pr,
                                const NK_REAL *dy, NK_REAL *dx)
{
    const int Ho = H + pt + pb, Wo = W + pl + pr;
    for (int n = 0; n < N; n++) {
        for (int ih = 0; ih < H; ih++) {
            for (int iw = 0; iw < W; iw++) {
                const NK_REAL *dyp = dy + (((int64_t)n * Ho + ih + pt) * Wo + iw + pl) * C;
                NK_REAL *dxp       = dx + (((int64_t)n * H + ih) * W + iw) * C;
                for (int c = 0; c < C; c++)
                    dxp[c] = dyp[c];
            }
        }
    }
}
