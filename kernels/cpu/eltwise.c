/*
 * eltwise.c: threaded ReLU forward/backward and the residual add. Memory-bound loops over n
 * floats, split statically over ex->nthreads with OpenMP; plain C that the compiler vectorises.
 * Specification: kernels/ref/relu.c; compared in tests/test_ops.c.
 */
#include <stdint.h>

#include "kernels/nk.h"

// Below this many elements one thread is faster than waking a second one.
#define ELTWISE_MIN_PER_THREAD 32768

static int nthreads_for(const nk_exec *ex, int64_t n)
{
    int nt = ex && ex->nthreads > 0 ? ex->nthreads : 1;
    while (nt > 1 && n < (int64_t)nt * ELTWISE_MIN_PER_THREAD)
        nt--;
    return nt;
}

void nk_relu_fwd_cpu(const nk_exec *ex, int64_t n, const float *x, float *y)
{
    // x > 0 ? x : 0 maps NaN to 0, as the reference does.
#pragma omp parallel for simd num_threads(nthreads_for(ex, n)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void nk_relu_bwd_cpu(const nk_exec *ex, int64_t n, const float *y, const float *dy, float *dx)
{
    // dx may alias dy: each element is read before it is written, by the same thread. Both
    // loads are unconditional, so the select vectorises.
#pragma omp parallel for simd num_threads(nthreads_for(ex, n)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float g = dy[i];
        dx[i]         = y[i] > 0.0f ? g : 0.0f;
    }
}

void nk_add_fwd_cpu(const nk_exec *ex, int64_t n, const float *a, const float *b, float *y)
{
#pragma omp parallel for simd num_threads(nthreads_for(ex, n)) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}
