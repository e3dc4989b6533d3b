/*
 * gemm_bf16.c: the bf16 specifications (contracts in kernels/nk.h): GEMM and forward convolution
 * with every input element rounded to bf16 first (nk_f32_to_bf16), then exact products and double
 * sums. The fast paths in kernels/cpu/gemm.c and gemm_avx512bf16.c are compared with these in
 * tests/test_gemm.c and tests/test_ops.c. Float build only: the double twins of ref.h have no use
 * for a bf16 rounding, so the ref64 build compiles this file to nothing.
 */
#include "kernels/nk.h"

#include <stdlib.h>

#ifndef NK_REF_SUFFIX

static double bf(float v)
{
    return (double)nk_bf16_to_f32(nk_f32_to_bf16(v));
}

void nk_gemm_bf16_ref(int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += bf(A[(int64_t)i * lda + k]) *
                       bf(tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j]);
            if (beta != 0.0f) acc += (double)beta * C[(int64_t)i * ldc + j];
            C[(int64_t)i * ldc + j] = (float)acc;
        }
    }
}

void nk_conv2d_fwd_bf16_ref(const nk_conv_desc *d, const float *x, const float *w, const float *b,
                            float *y)
{
    const int H = d->H, W = d->W, C = d->C, K = d->K;
    for (int n = 0; n < d->N; n++) {
        for (int p = 0; p < d->P; p++) {
            for (int q = 0; q < d->Q; q++) {
                float *yp = y + (((int64_t)n * d->P + p) * d->Q + q) * K;
                for (int k = 0; k < K; k++) {
                    double acc = b ? (double)b[k] : 0.0;
                    for (int r = 0; r < d->R; r++) {
                        const int ih = p * d->stride - d->pad_h + r;
                        if (ih < 0 || ih >= H) continue;
                        for (int s = 0; s < d->S; s++) {
                            const int iw = q * d->stride - d->pad_w + s;
                            if (iw < 0 || iw >= W) continue;
                            const float *xp = x + (((int64_t)n * H + ih) * W + iw) * C;
                            const float *wp = w + ((int64_t)r * d->S + s) * C * K + k;
                            for (int c = 0; c < C; c++)
                                acc += bf(xp[c]) * bf(wp[(int64_t)c * K]);
                        }
                    }
                    yp[k] = (float)acc;
                }
            }
        }
    }
}

void nk_conv2d_fwd_bf16x_ref(const nk_conv_desc *d, const float *x, const uint16_t *xb,
                             const float *w, const float *b, const nk_epilogue *ep, float *y,
                             uint16_t *yb)
{
    const int64_t nx = (int64_t)d->N * d->H * d->W * d->C, ny = (int64_t)d->N * d->P * d->Q * d->K;
    float *xf = NULL, *yf = y;
    if (xb) {
        xf = malloc(sizeof(float) * (size_t)(nx > 0 ? nx : 1));
        if (!xf) return;
        for (int64_t i = 0; i < nx; i++)
            xf[i] = nk_bf16_to_f32(xb[i]);
        x = xf;
    }
    if (yb) {
        yf = malloc(sizeof(float) * (size_t)(ny > 0 ? ny : 1));
        if (!yf) {
            free(xf);
            return;
        }
    }
    nk_conv2d_fwd_bf16_ref(d, x, w, b, yf);
    for (int64_t i = 0; ep && i < ny; i++) {
        const int64_t k = i % d->K;
        float v         = yf[i];
        if (ep->scale) v = v * ep->scale[k] + ep->shift[k];
        if (ep->residual) v += ep->residual[i];
        if (ep->residual_bf16) v += nk_bf16_to_f32(ep->residual_bf16[i]);
        if (ep->relu && !(v > 0.0f)) v = 0.0f;
        yf[i] = v;
    }
    if (yb) {
        for (int64_t i = 0; i < ny; i++)
            yb[i] = nk_f32_to_bf16(yf[i]);
        free(yf);
    }
    free(xf);
}

// dx = conv_transpose(dy, w) with dy and w rounded to bf16: the input gradient of a conv run in
// bf16 (training with NT_DTYPE_BF16). Written as a gather over dx, sums in double.
void nk_conv2d_bwd_data_bf16_ref(const nk_conv_desc *d, const float *dy, const float *w, float *dx)
{
    const int H = d->H, W = d->W, C = d->C, K = d->K;
    for (int n = 0; n < d->N; n++)
        for (int ih = 0; ih < H; ih++)
            for (int iw = 0; iw < W; iw++)
                for (int c = 0; c < C; c++) {
                    double acc = 0.0;
                    for (int r = 0; r < d->R; r++) {
                        const int ph = ih + d->pad_h - r;
                        if (ph < 0 || ph % d->stride || ph / d->stride >= d->P) continue;
                        for (int s = 0; s < d->S; s++) {
                            const int qw = iw + d->pad_w - s;
                            if (qw < 0 || qw % d->stride || qw / d->stride >= d->Q) continue;
                            const float *g =
                                dy +
                                (((int64_t)n * d->P + ph / d->stride) * d->Q + qw / d->stride) * K;
                            const float *wr = w + (((int64_t)r * d->S + s) * C + c) * K;
                            for (int k = 0; k < K; k++)
                                acc += bf(g[k]) * bf(wr[k]);
                        }
                    }
                    dx[(((int64_t)n * H + ih) * W + iw) * C + c] = (float)acc;
                }
}

void nk_conv2d_bwd_filter_bf16_ref(const nk_conv_desc *d, const float *x, const float *dy,
                                   float *dw, float *db)
{
    const int H = d->H, W = d->W, C = d->C, K = d->K;
    for (int r = 0; r < d->R; r++)
        for (int s = 0; s < d->S; s++)
            for (int c = 0; c < C; c++)
                for (int k = 0; k < K; k++) {
                    double acc = 0.0;
                    for (int n = 0; n < d->N; n++)
                        for (int p = 0; p < d->P; p++) {
                            const int ih = p * d->stride - d->pad_h + r;
                            if (ih < 0 || ih >= H) continue;
                            for (int q = 0; q < d->Q; q++) {
                                const int iw = q * d->stride - d->pad_w + s;
                                if (iw < 0 || iw >= W) continue;
                                acc += bf(x[(((int64_t)n * H + ih) * W + iw) * C + c]) *
                                       bf(dy[(((int64_t)n * d->P + p) * d->Q + q) * K + k]);
                            }
                        }
                    dw[(((int64_t)r * d->S + s) * C + c) * K + k] = (float)acc;
                }
    if (!db) return;
    for (int k = 0; k < K; k++) {
        double acc = 0.0;
        for (int64_t i = 0; i < (int64_t)d->N * d->P * d->Q; i++)
            acc += dy[i * K + k];
        db[k] = (float)acc;
    }
}

#endif
