/*
 * bn.c: threaded batch normalisation over M rows of C channels (x is [M,C]): training forward
 * (optionally with the ReLU after it), inference forward, and training backward (optionally
 * through that ReLU). Specification: kernels/ref/bn.c; compared in tests/test_ops.c.
 *
 * The training statistics take one pass over x from memory: x is cut into chunks of rows that
 * fit in L1/L2, each chunk's per-channel mean and M2 come from two passes over the cached chunk,
 * and chunks are merged with Chan et al.'s pairwise formula in double, first within fixed groups
 * of chunks (one thread each), then the groups in order. The backward sums are float within a
 * chunk and double beyond. The loops are in bn_impl.h, compiled here with the baseline flags, in
 * bn_avx2.c with AVX2 and in bn_avx512.c with AVX-512; the entry points below pick a copy by the
 * CPU's ISA.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"

#define BN_NAME(f) bn_##f##_base
#include "kernels/cpu/bn_impl.h"

// The copies of bn_impl.h built with wider vectors (bn_avx512.c, bn_avx2.c).
#define BN_COPY(isa)                                                                               \
    void bn_fwd_train_##isa(const nk_exec *ex, int64_t M, int C, const float *x,                   \
                            const float *gamma, const float *beta, float eps, int relu,            \
                            const float *res, float *y, float *mean, float *invstd);               \
    void bn_fwd_infer_##isa(const nk_exec *ex, int64_t M, int C, const float *x,                   \
                            const float *gamma, const float *beta, const float *mmean,             \
                            const float *mvar, float eps, float *y);                               \
    void bn_bwd_train_##isa(const nk_exec *ex, int64_t M, int C, const float *x, const float *ry,  \
                            const float *dy, const float *gamma, const float *beta,                \
                            const float *mean, const float *invstd, float *dx, float *dgamma,      \
                            float *dbeta, float *dxsum);                                           \
    void bn_colsum_##isa(const nk_exec *ex, int64_t M, int C, const float *x, float *out);
BN_COPY(avx512)
BN_COPY(avx2)

size_t nk_colsum_ws_floats(int64_t M, int N)
{
    return 2 * (size_t)bn_grid_of(M, N).ngroups * (size_t)N;
}

// Column sums through the chunk grid when ex's workspace holds the per-group sums; otherwise
// threads own column ranges (also thread-count independent, but strided and slower).
void nk_colsum_cpu(const nk_exec *ex, int64_t M, int N, const float *x, float *out)
{
    if (!ex || !ex->ws || ex->ws_floats < nk_colsum_ws_floats(M, N)) {
        nk_colsum_cols_cpu(ex, M, N, x, out);
        return;
    }
    NK_CALL_BY_ISA(bn_colsum, ex, M, N, x, out);
}

size_t nk_bn_ws_floats(int64_t M, int C)
{
    const bn_grid g = bn_grid_of(M, C);
    // Two doubles per channel and group, then three per-channel float rows.
    return 4 * (size_t)g.ngroups * (size_t)C + 3 * (size_t)C;
}

void nk_bn_fwd_train_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, float eps, int relu, const float *res, float *y,
                         float *mean, float *invstd)
{
    NK_CALL_BY_ISA(bn_fwd_train, ex, M, C, x, gamma, beta, eps, relu, res, y, mean, invstd);
}

void nk_bn_fwd_infer_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, const float *mmean, const float *mvar, float eps,
                         float *y)
{
    NK_CALL_BY_ISA(bn_fwd_infer, ex, M, C, x, gamma, beta, mmean, mvar, eps, y);
}

void nk_bn_bwd_train_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *ry,
                         const float *dy, const float *gamma, const float *beta, const float *mean,
                         const float *invstd, float *dx, float *dgamma, float *dbeta, float *dxsum)
{
    NK_CALL_BY_ISA(bn_bwd_train, ex, M, C, x, ry, dy, gamma, beta, mean, invstd, dx, dgamma, dbeta,
                   dxsum);
}
