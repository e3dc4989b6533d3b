/*
 * gap.c: reference global average pooling, x [N,HW,C] -> y [N,C], and its backward, which
 * spreads dy/HW over the HW positions. Plain loops, sums in double.
 * Tested in tests/test_ref.c and tests/test_grad.c.
 */
#include "kernels/ref/ref.h"

void NK_REF(nk_gap_fwd_ref)(int N, int HW, int C, const NK_REAL *x, NK_REAL *y)
{
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            double acc = 0.0;
            for (int i = 0; i < HW; i++)
                acc += x[((int64_t)n * HW + i) * C + c];
            y[(int64_t)n * C + c] = (NK_REAL)(acc / HW);
        }
    }
}

void NK_REF(nk_gap_bwd_ref)(int N, int HW, int C, const NK_REAL *dy, NK_REAL *dx)
{
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < HW; i++) {
            for (int c = 0; c < C; c++)
                dx[((int64_t)n * HW + i) * C + c] = (NK_REAL)((double)dy[(int64_t)n * C + c] / HW);
        }
    }
}
