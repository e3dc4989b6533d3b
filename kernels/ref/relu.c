/*
 * relu.c: reference elementwise ops: ReLU forward/backward and the residual add.
 * One thread, no SIMD; the threaded versions are in kernels/cpu/ and tests/test_ops.c compares
 * them with these. Gradients are checked in tests/test_grad.c.
 */
#include "kernels/ref/ref.h"

// y = max(x, 0). A NaN input gives 0 (the comparison is false).
void NK_REF(nk_relu_fwd_ref)(int64_t n, const NK_REAL *x, NK_REAL *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0 ? x[i] : 0;
}

// Uses the forward output: y > 0 exactly where x > 0. dx may alias dy.
void NK_REF(nk_relu_bwd_ref)(int64_t n, const NK_REAL *y, const NK_REAL *dy, NK_REAL *dx)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0 ? dy[i] : 0;
}

// y = a + b (the residual connection). Its backward passes dy to both inputs unchanged.
void NK_REF(nk_add_fwd_ref)(int64_t n, const NK_REAL *a, const NK_REAL *b, NK_REAL *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}
