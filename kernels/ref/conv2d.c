/*
 * conv2d.c: reference 2-D convolution, NHWC activations, HWIO weights (contract in kernels/nk.h).
 * The specification, not a fast path: direct loops, one thread, sums in double, no scratch.
 * Fast versions live in kernels/cpu/ and are compared with these in tests/test_ops.c; the
 * backward passes are checked by central differences in tests/test_grad.c.
 */
#include "kernels/ref/ref.h"

// x [N,H,W,C], w [R,S,C,K], b [K] or NULL, y [N,P,Q,K].
// y[n,p,q,k] = b[k] + sum_{r,s,c} x[n, p*stride - pad_h + r, q*stride - pad_w + s, c] w[r,s,c,k],
// where taps outside [0,H)x[0,W) read zero (padding above/left and the implied bottom/right).
void NK_REF(nk_conv2d_fwd_ref)(const nk_conv_desc *d, const NK_REAL *x, const NK_REAL *w,
                               const NK_REAL *b, NK_REAL *y)
{
    const int H = d->H, W = d->W, C = d->C, K = d->K;
    for (int n = 0; n < d->N; n++) {
        for (int p = 0; p < d->P; p++) {
            for (int q = 0; q < d->Q; q++) {
                NK_REAL *yp = y + (((int64_t)n * d->P + p) * d->Q + q) * K;
                for (int k = 0; k < K; k++) {
                    double acc = b ? (double)b[k] : 0.0;
                    for (int r = 0; r < d->R; r++) {
                        const int ih = p * d->stride - d->pad_h + r;
                        if (ih < 0 || ih >= H) continue;
                        for (int s = 0; s < d->S; s++) {
                            const int iw = q * d->stride - d->pad_w + s;
                            if (iw < 0 || iw >= W) continue;
                            const NK_REAL *xp = x + (((int64_t)n * H + ih) * W + iw) * C;
                            const NK_REAL *wp = w + ((int64_t)r * d->S + s) * C * K + k;
                            for (int c = 0; c < C; c++)
                                acc += (double)xp[c] * wp[(int64_t)c * K];
                        }
                    }
                    yp[k] = (NK_REAL)acc;
                }
            }
        }
    }
}

// dx[n,ih,iw,c] = sum over the (p,r) with p*stride - pad_h + r == ih (and likewise (q,s) for iw)
// of sum_k dy[n,p,q,k] w[r,s,c,k]. Written as a gather so each dx entry is one double sum.
void NK_REF(nk_conv2d_bwd_data_ref)(const nk_conv_desc *d, const NK_REAL *dy, const NK_REAL *w,
                                    NK_REAL *dx)
{
    const int H = d->H, W = d->W, C = d->C, K = d->K;
    for (int n = 0; n < d->N; n++) {
        for (int ih = 0; ih < H; ih++) {
            for (int iw = 0; iw < W; iw++) {
                for (int c = 0; c < C; c++) {
                    double acc = 0.0;
                    for (int r = 0; r < d->R; r++) {
                        // Output row p reads ih through tap r when p*stride == ih + pad_h - r.
                        const int ph = ih + d->pad_h - r;
                        if (ph < 0 || ph % d->stride != 0 || ph / d->stride >= d->P) continue;
                        const int p = ph / d->stride;
                        for (int s = 0; s < d->S; s++) {
                            const int qw = iw + d->pad_w - s;
                            if (qw < 0 || qw % d->stride != 0 || qw / d->stride >= d->Q) continue;
                            const int q        = qw / d->stride;
                            const NK_REAL *dyp = dy + (((int64_t)n * d->P + p) * d->Q + q) * K;
                            const NK_REAL *wp  = w + (((int64_t)r * d->S + s) * C + c) * K;
                            for (int k = 0; k < K; k++)
                                acc += (double)dyp[k] * wp[k];
                        }
                    }
                    dx[(((int64_t)n * H + ih) * W + iw) * C + c] = (NK_REAL)acc;
                }
            }
        }
    }
}

// dw[r,s,c,k] = sum_{n,p,q} x[n, p*stride - pad_h + r, q*stride - pad_w + s, c] dy[n,p,q,k]
// (padding taps contribute nothing); db[k] = sum_{n,p,q} dy[n,p,q,k].
void NK_REF(nk_conv2d_bwd_filter_ref)(const nk_conv_desc *d, const NK_REAL *x, const NK_REAL *dy,
                                      NK_REAL *dw, NK_REAL *db)
{
    const int H = d->H, W = d->W, C = d->C, K = d->K;
    for (int r = 0; r < d->R; r++) {
        for (int s = 0; s < d->S; s++) {
            for (int c = 0; c < C; c++) {
                for (int k = 0; k < K; k++) {
                    double acc = 0.0;
                    for (int n = 0; n < d->N; n++) {
                        for (int p = 0; p < d->P; p++) {
                            const int ih = p * d->stride - d->pad_h + r;
                            if (ih < 0 || ih >= H) continue;
                            for (int q = 0; q < d->Q; q++) {
                                const int iw = q * d->stride - d->pad_w + s;
                                if (iw < 0 || iw >= W) continue;
                                acc += (double)x[(((int64_t)n * H + ih) * W + iw) * C + c] *
                                       dy[(((int64_t)n * d->P + p) * d->Q + q) * K + k];
                            }
                        }
                    }
                    dw[(((int64_t)r * d->S + s) * C + c) * K + k] = (NK_REAL)acc;
                }
            }
        }
    }
    if (!db) return;
    const int64_t rows = (int64_t)d->N * d->P * d->Q;
    for (int k = 0; k < K; k++) {
        double acc = 0.0;
        for (int64_t i = 0; i < rows; i++)
            acc += dy[i * K + k];
        db[k] = (NK_REAL)acc;
    }
}
