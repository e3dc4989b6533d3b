/*
 * pool.c: threaded max pooling (forward and backward), zero padding, global average pooling and
 * the fused residual add + ReLU, on NHWC. Plain C with OpenMP: the inner loops run over
 * channels, contiguous in NHWC, and vectorise. The max pooling loops are in pool_impl.h,
 * built three times (here, in pool_avx2.c and in pool_avx512.c) and picked by the CPU's ISA.
 * Contracts in kernels/nk.h; tested against kernels/ref in tests/test_ops.c (and tests/isa.sh).
 */
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"

#define POOL_NAME(f) pool_##f##_base
#include "kernels/cpu/pool_impl.h"

static int threads_of(const nk_exec *ex)
{
    return ex && ex->nthreads > 0 ? ex->nthreads : 1;
}

// The copies of pool_impl.h built with wider vectors (pool_avx512.c, pool_avx2.c).
#define POOL_COPY(isa)                                                                             \
    void pool_maxpool_fwd_##isa(const nk_exec *ex, const nk_conv_desc *d, const float *x,          \
                                float *y);                                                         \
    void pool_maxpool_bwd_##isa(const nk_exec *ex, const nk_conv_desc *d, const float *x,          \
                                const float *dy, float *dx);
POOL_COPY(avx512)
POOL_COPY(avx2)

void nk_maxpool_fwd_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x, float *y)
{
    NK_CALL_BY_ISA(pool_maxpool_fwd, ex, d, x, y);
}

void nk_maxpool_bwd_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x, const float *dy,
                        float *dx)
{
    NK_CALL_BY_ISA(pool_maxpool_bwd, ex, d, x, dy, dx);
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

void nk_zeropad_bwd_cpu(const nk_exec *ex, int N, int H, int W, int C, int pt, int pb, int pl,
                        int pr, const float *dy, float *dx)
{
    const int Ho = H + pt + pb, Wo = W + pl + pr;
#pragma omp parallel for num_threads(threads_of(ex)) schedule(static)
    for (int64_t nh = 0; nh < (int64_t)N * H; nh++) {
        const int64_t n = nh / H, h = nh % H;
        memcpy(dx + nh * W * C, dy + ((n * Ho + h + pt) * Wo + pl) * C,
               (size_t)W * C * sizeof(float));
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

void nk_gap_bwd_cpu(const nk_exec *ex, int N, int HW, int C, const float *dy, float *dx)
{
    // Each image's row of C values, divided in double as the reference, then copied to its HW
    // positions (pool5's gradient at batch 16: 2.1 ms in the reference, one division per element).
#pragma omp parallel for num_threads(threads_of(ex)) schedule(static)
    for (int n = 0; n < N; n++) {
        float *dxn = dx + (int64_t)n * HW * C;
        for (int c = 0; c < C; c++)
            dxn[c] = (float)((double)dy[(int64_t)n * C + c] / HW);
        for (int i = 1; i < HW; i++)
            memcpy(dxn + (int64_t)i * C, dxn, (size_t)C * sizeof(float));
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
