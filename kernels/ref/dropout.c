/*
 * dropout.c: reference inverted dropout. Element i is kept when nk_u01(key, i) >= rate and then
 * scaled by 1/(1-rate), so E[y] = x and inference is the identity. The mask is never stored;
 * backward recomputes it from the same key. Tested in tests/test_ref.c and tests/test_grad.c.
 */
#include "kernels/ref/ref.h"

// 1/(1-rate); rate >= 1 keeps nothing (nk_u01 < 1), so the scale is never used then.
static NK_REAL keep_scale(NK_REAL rate)
{
    return rate < 1 ? 1 / (1 - rate) : 0;
}

void NK_REF(nk_dropout_fwd_ref)(int64_t n, NK_REAL rate, uint64_t key, const NK_REAL *x, NK_REAL *y)
{
    const NK_REAL scale = keep_scale(rate);
    for (int64_t i = 0; i < n; i++)
        y[i] = (NK_REAL)nk_u01(key, (uint64_t)i) >= rate ? x[i] * scale : 0;
}

// The forward is linear in x with the same mask, so dx = dropout(dy). dx may alias dy.
void NK_REF(nk_dropout_bwd_ref)(int64_t n, NK_REAL rate, uint64_t key, const NK_REAL *dy,
                                NK_REAL *dx)
{
    const NK_REAL scale = keep_scale(rate);
    for (int64_t i = 0; i < n; i++)
        dx[i] = (NK_REAL)nk_u01(key, (uint64_t)i) >= rate ? dy[i] * scale : 0;
}
