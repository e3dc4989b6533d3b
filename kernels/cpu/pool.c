/*
 * pool.c: threaded max pooling (forward and backward), zero padding, global average pooling and
 * the fused residual add + ReLU, on NHWC. Plain C with OpenMP: the inner loops run over
 * channels, contiguous in NHWC, and vectorise. Contracts in kernels/nk.h; tested against
 * kernels/ref in tests/test_ops.c.
 */
#include "kernels/nk.h"

#include <string.h>

static int threads_of(const nk_exec *ex)
{
    return ex && ex->nthreads > 0 ? ex->nthreads : 1;
}

void nk_maxpool_fwd_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x, float *y)
{
    const int C = d->C;
    // One output row (n, p) per iteration.
#pragma omp parallel for num_threads(threads_of(ex)) schedule(static)
    for (int64_t np = 0; np < (int64_t)d->N * d->P; np++) {
        const int n = (int)(np / d->P), p = (int)(np % d->P);
        for (int q = 0; q < d->Q; q++) {
            float *o  = y + ((np * d->Q) + q) * C;
            int first = 1;
            for (int r = 0; r < d->R; r++) {
                const int h = p * d->stride - d->pad_h + r;
                if (h < 0 || h >= d->H) continue;
                for (int s = 0; s < d->S; s++) {
                    const int w = q * d->stride - d->pad_w + s;
                    if (w < 0 || w >= d->W) continue;
                    const float *i = x + (((int64_t)n * d->H + h) * d->W + w) * C;
                    if (first) {
                        memcpy(o, i, (size_t)C * sizeof(float));
                        first = 0;
                    } else {
                        for (int c = 0; c < C; c++)
                            o[c] = i[c] > o[c] ? i[c] : o[c];
                    }
                }
            }
            if (first) memset(o, 0, (size_t)C * sizeof(float)); // an empty window, as the ref
        }
    }
}

void nk_maxpool_bwd_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x, const float *dy,
                        float *dx)
{
    const int C = d->C;
    // Windows overlap inside an image, so each thread owns whole images. Each window's taps are
    // listed once (offsets of whole pixels); then 64 channels at a time keep the running maximum
    // and its tap in registers, reading contiguous NHWC pixels.
#pragma omp parallel for num_threads(threads_of(ex)) schedule(static)
    for (int n = 0; n < d->N; n++) {
        const float *xn = x + (int64_t)n * d->H * d->W * C;
        float *dxn      = dx + (int64_t)n * d->H * d->W * C;
        for (int64_t i = 0; i < (int64_t)d->H * d->W * C; i++)
            dxn[i] = 0.0f;
        for (int p = 0; p < d->P; p++)
            for (int q = 0; q < d->Q; q++) {
                const float *g = dy + (((int64_t)n * d->P + p) * d->Q + q) * C;
                int64_t tap[64];
                int nt = 0;
                for (int r = 0; r < d->R; r++) {
                    const int h = p * d->stride - d->pad_h + r;
                    if (h < 0 || h >= d->H) continue;
                    for (int s = 0; s < d->S; s++) {
                        const int w = q * d->stride - d->pad_w + s;
                        if (w < 0 || w >= d->W || nt == 64) continue;
                        tap[nt++] = ((int64_t)h * d->W + w) * C;
                    }
                }
                if (nt == 0) continue;
                for (int c0 = 0; c0 < C; c0 += 64) {
                    const int cw = C - c0 < 64 ? C - c0 : 64;
                    float best[64];
                    int64_t at[64];
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        best[c] = xn[tap[0] + c0 + c];
                        at[c]   = tap[0];
                    }
                    // The first maximum in row-major (r, s) order, as the reference: strict >.
                    for (int t = 1; t < nt; t++) {
                        const float *xt = xn + tap[t] + c0;
#pragma omp simd
                        for (int c = 0; c < cw; c++) {
                            const float v = xt[c];
                            const int up  = v > best[c];
                            best[c]       = up ? v : best[c];
                            at[c]         = up ? tap[t] : at[c];
                        }
                    }
                    for (int c = 0; c < cw; c++)
                        dxn[at[c] + c0 + c] += g[c0 + c];
                }
            }
    }
}

void nk_zeropad_fwd_cpu(const nk_exec *ex, int N, int H, int W, int C, int pt, int pb, int pl,
                        int pr, const float *x, float *y)
{
    const int Ho = H + pt + pb, Wo = W + pl + pr;
#pragma omp parallel for num_threads(threads_of(ex)) schedule(static)
    for (int64_t nh = 0; nh < (int64_t)N * Ho; nh++) {
        const int n = (int)(nh / Ho), h = (int)(nh % Ho) - pt;
        float *o = y + nh * Wo * C;
        if (h < 0 || h >= H) {
            memset(o, 0, (size_t)Wo * C * sizeof(float));
            continue;
        }
        memset(o, 0, (size_t)pl * C * sizeof(float));
        memcpy(o + (int64_t)pl * C, x + (((int64_t)n * H + h) * W) * C,
               (size_t)W * C * sizeof(float));
        memset(o + (int64_t)(pl + W) * C, 0, (size_t)pr * C * sizeof(float));
    }
}

void nk_gap_fwd_cpu(const nk_exec *ex, int N, int HW, int C, const float *x, float *y)
{
    // Per (n, c) in double, as the reference, so the result does not depend on threads.
#pragma omp parallel for num_threads(threads_of(ex)) schedule(static)
    for (int n = 0; n < N; n++) {
        double acc[64];
        for (int c0 = 0; c0 < C; c0 += 64) {
            const int c1 = c0 + 64 < C ? c0 + 64 : C;
            for (int c = c0; c < c1; c++)
                acc[c - c0] = 0;
            for (int i = 0; i < HW; i++) {
                const float *xi = x + ((int64_t)n * HW + i) * C;
                for (int c = c0; c < c1; c++)
                    acc[c - c0] += xi[c];
            }
            for (int c = c0; c < c1; c++)
                y[(int64_t)n * C + c] = (float)(acc[c - c0] / HW);
        }
    }
}

void nk_add_relu_fwd_cpu(const nk_exec *ex, int64_t n, const float *a, const float *b, float *y)
{
#pragma omp parallel for simd num_threads(threads_of(ex)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float v = a[i] + b[i];
        y[i]          = v > 0.0f ? v : 0.0f;
    }
}
