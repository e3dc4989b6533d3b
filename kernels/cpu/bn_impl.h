/*
 * bn_impl.h: the threaded batch normalisation loops, written once and compiled three times: by bn.c
 * (baseline flags), bn_avx2.c (AVX2) and bn_avx512.c (AVX-512), each defining BN_NAME(f) to name
 * its copy; bn.c picks one at run time. Inner loops run over a block of channels under omp simd, so
 * the compiler uses the widest vectors the copy was built for. Memory-bound: every pass reads or
 * writes [M,C] once, so the passes are few (see bn.c for the layout and the arithmetic).
 */

#ifndef NK_BN_GRID
#    define NK_BN_GRID
// Channels handled together in the per-chunk loops (their accumulators are L1 arrays). Wide, so
// that a block's rows are long runs of consecutive lines: with 64 channels (a 256-byte piece of
// each 1 KiB row) the backward sums of [50176,256] read memory 2.3x slower (6.4 against 2.7
// ms), the forward statistics 1.8x slower; 1024 is faster than 256 or 512 for C = 1024 and 2048.
#    define BN_CB 1024
// Floats per chunk: a chunk of rows is summed twice while it is in L1/L2.
#    define BN_CHUNK_FLOATS 16384
// Chunks are merged in groups, at most this many; each group's partial result is in ws.
#    define BN_GROUPS 64
// Channels per block in the loops that merge the groups' per-channel results.
#    define BN_MERGE_CB 64
// Below this many elements per thread, use fewer threads.
#    define BN_MIN_PER_THREAD 32768

// The fixed split of [M,C] into chunks of rows and groups of chunks. It depends on M and C
// only, and every sum is taken in the same order whatever the thread count, so the results
// do not depend on ex->nthreads.
typedef struct {
    int64_t rows, nchunks, gchunks;
    int ngroups;
} bn_grid;

static inline bn_grid bn_grid_of(int64_t M, int C)
{
    bn_grid g;
    g.rows    = C >= BN_CHUNK_FLOATS ? 1 : BN_CHUNK_FLOATS / C;
    g.nchunks = M > 0 ? (M + g.rows - 1) / g.rows : 1;
    g.gchunks = (g.nchunks + BN_GROUPS - 1) / BN_GROUPS;
    g.ngroups = (int)((g.nchunks + g.gchunks - 1) / g.gchunks);
    return g;
}

// Group gi's chunks: [*k0, *k1).
static inline void bn_group_chunks(const bn_grid *g, int gi, int64_t *k0, int64_t *k1)
{
    *k0 = (int64_t)gi * g->gchunks;
    *k1 = *k0 + g->gchunks < g->nchunks ? *k0 + g->gchunks : g->nchunks;
}

// One past chunk k's last row (of M).
static inline int64_t bn_chunk_end(const bn_grid *g, int64_t M, int64_t k)
{
    return M - k * g->rows < g->rows ? M : k * g->rows + g->rows;
}

static inline int bn_threads(const nk_exec *ex, int64_t n)
{
    int nt = ex && ex->nthreads > 0 ? ex->nthreads : 1;
    while (nt > 1 && n < (int64_t)nt * BN_MIN_PER_THREAD)
        nt--;
    return nt;
}
#endif

// Per-channel mean and M2 (sum of squared deviations) of rows [0,n) of a [*, ld] block of w <=
// BN_CB channels: two passes over data that is still in L1/L2 (one chunk).
static inline void BN_NAME(chunk_stats)(const float *x, int64_t ld, int n, int w, float *mu,
                                        float *m2)
{
    float s[BN_CB] = {0};
    for (int r = 0; r < n; r++) {
        const float *xr = x + r * ld;
#pragma omp simd
        for (int j = 0; j < w; j++)
            s[j] += xr[j];
    }
    const float inv = 1.0f / (float)n;
#pragma omp simd
    for (int j = 0; j < w; j++) {
        mu[j] = s[j] * inv;
        s[j]  = 0.0f;
    }
    for (int r = 0; r < n; r++) {
        const float *xr = x + r * ld;
#pragma omp simd
        for (int j = 0; j < w; j++) {
            const float d = xr[j] - mu[j];
            s[j] += d * d;
        }
    }
#pragma omp simd
    for (int j = 0; j < w; j++)
        m2[j] = s[j];
}

// The normalised output (x - mean) * k + beta, k = gamma * invstd in float: the one expression
// the forward writes and the backward recomputes a fused ReLU's mask from, so both agree bit for
// bit (no FMA contraction: -std=c11 gives -ffp-contract=off).
static inline __attribute__((always_inline)) float BN_NAME(affine)(float x, float mean, float k,
                                                                   float beta)
{
    return (x - mean) * k + beta;
}

// One output row: the affine map, plus the residual row rr when res, then the ReLU when relu.
// res and relu are constants at each call, so the four forms compile to four loops.
static inline __attribute__((always_inline)) void
BN_NAME(out_row)(int C, const float *xr, const float *mean, const float *k, const float *beta,
                 const float *rr, int res, int relu, float *yr)
{
#pragma omp simd
    for (int c = 0; c < C; c++) {
        float v = BN_NAME(affine)(xr[c], mean[c], k[c], beta[c]);
        if (res) v = rr[c] + v; // Add([shortcut, bn]): the shortcut first, as Keras
        if (relu) v = v > 0.0f ? v : 0.0f;
        yr[c] = v;
    }
}

void BN_NAME(fwd_train)(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                        const float *beta, float eps, int relu, const float *res, float *y,
                        float *mean, float *invstd)
{
    const bn_grid g = bn_grid_of(M, C);
    double *gmu = (double *)ex->ws, *gm2 = gmu + (int64_t)g.ngroups * C;
    float *sc = (float *)(gm2 + (int64_t)g.ngroups * C);
#pragma omp parallel num_threads(bn_threads(ex, M *C))
    {
        // 1. Per group: its chunks' (mean, M2) merged in order (Chan et al.), in double.
#pragma omp for schedule(static)
        for (int gi = 0; gi < g.ngroups; gi++) {
            double *am = gmu + (int64_t)gi * C, *a2 = gm2 + (int64_t)gi * C;
            for (int c = 0; c < C; c++)
                am[c] = a2[c] = 0.0;
            int64_t k0, k1, na = 0;
            bn_group_chunks(&g, gi, &k0, &k1);
            for (int64_t k = k0; k < k1; k++) {
                const int64_t r0 = k * g.rows;
                const int nb     = (int)(bn_chunk_end(&g, M, k) - r0);
                const double fb = nb / (double)(na + nb), fab = (double)na * nb / (double)(na + nb);
                for (int cb = 0; cb < C; cb += BN_CB) {
                    const int w = C - cb < BN_CB ? C - cb : BN_CB;
                    float mu[BN_CB], m2[BN_CB];
                    BN_NAME(chunk_stats)(x + r0 * C + cb, C, nb, w, mu, m2);
                    double *pm = am + cb, *p2 = a2 + cb;
#pragma omp simd
                    for (int j = 0; j < w; j++) {
                        const double d = (double)mu[j] - pm[j];
                        pm[j] += d * fb;
                        p2[j] += (double)m2[j] + d * d * fab;
                    }
                }
                na += nb;
            }
        }
        // 2. Per channel: the groups merged in order; scale and shift for the output pass. A
        // block of channels at a time, the groups outer, so the divisions run as vectors.
#pragma omp for schedule(static)
        for (int cb = 0; cb < C; cb += BN_MERGE_CB) {
            const int w           = C - cb < BN_MERGE_CB ? C - cb : BN_MERGE_CB;
            double m[BN_MERGE_CB] = {0}, q[BN_MERGE_CB] = {0};
            int64_t na = 0;
            for (int gi = 0; gi < g.ngroups; gi++) {
                const int64_t r0 = (int64_t)gi * g.gchunks * g.rows;
                const int64_t r1 =
                    r0 + (int64_t)g.gchunks * g.rows < M ? r0 + (int64_t)g.gchunks * g.rows : M;
                const int64_t nb = r1 - r0;
                const double *bm = gmu + (int64_t)gi * C + cb, *b2 = gm2 + (int64_t)gi * C + cb;
#pragma omp simd
                for (int j = 0; j < w; j++) {
                    const double d = bm[j] - m[j];
                    m[j] += d * (double)nb / (double)(na + nb);
                    q[j] += b2[j] + d * d * (double)na * (double)nb / (double)(na + nb);
                }
                na += nb;
            }
            for (int j = 0; j < w; j++) {
                const int c     = cb + j;
                const double is = 1.0 / sqrt(q[j] / (double)M + eps);
                mean[c]         = (float)m[j];
                invstd[c]       = (float)is;
                sc[c]           = gamma[c] * invstd[c]; // from the rounded invstd, as bwd_train's k
            }
        }
        // 3. The output, rows split over the threads.
#pragma omp for schedule(static)
        for (int64_t r = 0; r < M; r++) {
            const float *xr = x + r * C, *rr = res ? res + r * C : NULL;
            float *yr = y + r * C;
            if (res && relu)
                BN_NAME(out_row)(C, xr, mean, sc, beta, rr, 1, 1, yr);
            else if (res)
                BN_NAME(out_row)(C, xr, mean, sc, beta, rr, 1, 0, yr);
            else if (relu)
                BN_NAME(out_row)(C, xr, mean, sc, beta, rr, 0, 1, yr);
            else
                BN_NAME(out_row)(C, xr, mean, sc, beta, rr, 0, 0, yr);
        }
    }
}

void BN_NAME(fwd_infer)(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                        const float *beta, const float *mmean, const float *mvar, float eps,
                        float *y)
{
    float *sc = ex->ws;
#pragma omp parallel num_threads(bn_threads(ex, M *C))
    {
#pragma omp for schedule(static)
        for (int c = 0; c < C; c++)
            sc[c] = (float)(gamma[c] / sqrt((double)mvar[c] + eps));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < M; r++) {
            const float *xr = x + r * C;
            float *yr       = y + r * C;
#pragma omp simd
            for (int c = 0; c < C; c++)
                yr[c] = (xr[c] - mmean[c]) * sc[c] + beta[c];
        }
    }
}

// Sums of g and g * xh over rows [r0,r1) of the channel block at cb (w <= BN_CB channels), where
// g is dy, masked by the fused ReLU where it passed: masked 1 reads its output ry (> 0), masked 2
// recomputes that output from x (BN_NAME(affine)), so ry is not read. masked is a constant at
// each call, so the three forms compile to three loops without a test inside.
static inline __attribute__((always_inline)) void
BN_NAME(grad_sums)(int64_t r0, int64_t r1, int C, int cb, int w, const float *x, const float *ry,
                   const float *dy, const float *mu, const float *is, const float *k,
                   const float *beta, int masked, float *sg, float *sx)
{
    for (int64_t r = r0; r < r1; r++) {
        const int64_t o = r * C + cb;
#pragma omp simd
        for (int j = 0; j < w; j++) {
            const float xv = x[o + j];
            float gv       = dy[o + j];
            if (masked == 1) gv = ry[o + j] > 0.0f ? gv : 0.0f;
            if (masked == 2) gv = BN_NAME(affine)(xv, mu[j], k[j], beta[j]) > 0.0f ? gv : 0.0f;
            sg[j] += gv;
            sx[j] += gv * ((xv - mu[j]) * is[j]);
        }
    }
}

// dx for one row: gamma * invstd * (g - mean(g) - xh * mean(g * xh)).
static inline __attribute__((always_inline)) void
BN_NAME(grad_row)(int C, const float *x, const float *ry, const float *dy, const float *mean,
                  const float *invstd, const float *k, const float *beta, const float *ag,
                  const float *ax, int masked, float *dx)
{
#pragma omp simd
    for (int c = 0; c < C; c++) {
        float gv = dy[c];
        if (masked == 1) gv = ry[c] > 0.0f ? gv : 0.0f;
        if (masked == 2) gv = BN_NAME(affine)(x[c], mean[c], k[c], beta[c]) > 0.0f ? gv : 0.0f;
        const float xh = (x[c] - mean[c]) * invstd[c];
        dx[c]          = k[c] * (gv - ag[c] - xh * ax[c]);
    }
}

// grad_row in the mask mode of the call: constant there, so each mode inlines its own loop.
static inline __attribute__((always_inline)) void
BN_NAME(grad_row_as)(int masked, int C, const float *x, const float *ry, const float *dy,
                     const float *mean, const float *invstd, const float *k, const float *beta,
                     const float *ag, const float *ax, float *dx)
{
    if (masked == 2) {
        BN_NAME(grad_row)(C, x, ry, dy, mean, invstd, k, beta, ag, ax, 2, dx);
    } else if (masked == 1) {
        BN_NAME(grad_row)(C, x, ry, dy, mean, invstd, k, beta, ag, ax, 1, dx);
    } else {
        BN_NAME(grad_row)(C, x, ry, dy, mean, invstd, k, beta, ag, ax, 0, dx);
    }
}

// as[c] += the sum over rows [r0,r1) of x[r*C + c], in float from 0 per block of BN_CB channels
// (rows in order), added to as in double: one chunk of colsum.
static inline void BN_NAME(chunk_colsum)(const float *x, int64_t r0, int64_t r1, int C, double *as)
{
    for (int cb = 0; cb < C; cb += BN_CB) {
        const int w     = C - cb < BN_CB ? C - cb : BN_CB;
        float sg[BN_CB] = {0};
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = x + r * C + cb;
#pragma omp simd
            for (int j = 0; j < w; j++)
                sg[j] += xr[j];
        }
        for (int j = 0; j < w; j++)
            as[cb + j] += sg[j];
    }
}

// out[c] = the groups' sums gs[gi * C + c] added in group order (an orphaned omp for: called
// inside a parallel region, the threads share the channels).
static inline void BN_NAME(sum_groups)(const double *gs, int ngroups, int C, float *out)
{
#pragma omp for schedule(static)
    for (int cb = 0; cb < C; cb += BN_MERGE_CB) {
        const int w             = C - cb < BN_MERGE_CB ? C - cb : BN_MERGE_CB;
        double sum[BN_MERGE_CB] = {0};
        for (int gi = 0; gi < ngroups; gi++) {
            const double *p = gs + (int64_t)gi * C + cb;
#pragma omp simd
            for (int j = 0; j < w; j++)
                sum[j] += p[j];
        }
        for (int j = 0; j < w; j++)
            out[cb + j] = (float)sum[j];
    }
}

void BN_NAME(bwd_train)(const nk_exec *ex, int64_t M, int C, const float *x, const float *ry,
                        const float *dy, const float *gamma, const float *beta, const float *mean,
                        const float *invstd, float *dx, float *dgamma, float *dbeta, float *dxsum)
{
    const bn_grid g = bn_grid_of(M, C);
    double *gsg = (double *)ex->ws, *gsx = gsg + (int64_t)g.ngroups * C;
    float *k = (float *)(gsx + (int64_t)g.ngroups * C), *ag = k + C, *ax = ag + C;
    const int masked = beta ? 2 : ry ? 1 : 0;
#pragma omp parallel num_threads(bn_threads(ex, M *C))
    {
        // 0. fwd_train's scale, bit for bit (a fused ReLU's mask may be recomputed with it).
#pragma omp for schedule(static)
        for (int c = 0; c < C; c++) {
            k[c] = gamma[c] * invstd[c];
        }
        // 1. Per group: sum g and sum g * xh, each chunk in float, added up in double.
#pragma omp for schedule(static)
        for (int gi = 0; gi < g.ngroups; gi++) {
            double *asg = gsg + (int64_t)gi * C, *asx = gsx + (int64_t)gi * C;
            for (int c = 0; c < C; c++)
                asg[c] = asx[c] = 0.0;
            int64_t k0, k1;
            bn_group_chunks(&g, gi, &k0, &k1);
            for (int64_t kk = k0; kk < k1; kk++) {
                const int64_t r0 = kk * g.rows, r1 = bn_chunk_end(&g, M, kk);
                for (int cb = 0; cb < C; cb += BN_CB) {
                    const int w     = C - cb < BN_CB ? C - cb : BN_CB;
                    float sg[BN_CB] = {0}, sx[BN_CB] = {0};
                    const float *mu = mean + cb, *is = invstd + cb, *kb = k + cb;
                    const float *bb = beta ? beta + cb : NULL;
                    if (masked == 2)
                        BN_NAME(grad_sums)(r0, r1, C, cb, w, x, ry, dy, mu, is, kb, bb, 2, sg, sx);
                    else if (masked == 1)
                        BN_NAME(grad_sums)(r0, r1, C, cb, w, x, ry, dy, mu, is, kb, bb, 1, sg, sx);
                    else
                        BN_NAME(grad_sums)(r0, r1, C, cb, w, x, ry, dy, mu, is, kb, bb, 0, sg, sx);
                    for (int j = 0; j < w; j++) {
                        asg[cb + j] += sg[j];
                        asx[cb + j] += sx[j];
                    }
                }
            }
        }
        // 2. Per channel: the groups added in order (channel blocks, groups outer, as fwd_train).
#pragma omp for schedule(static)
        for (int cb = 0; cb < C; cb += BN_MERGE_CB) {
            const int w            = C - cb < BN_MERGE_CB ? C - cb : BN_MERGE_CB;
            double sg[BN_MERGE_CB] = {0}, sx[BN_MERGE_CB] = {0};
            for (int gi = 0; gi < g.ngroups; gi++) {
                const double *pg = gsg + (int64_t)gi * C + cb, *px = gsx + (int64_t)gi * C + cb;
#pragma omp simd
                for (int j = 0; j < w; j++) {
                    sg[j] += pg[j];
                    sx[j] += px[j];
                }
            }
            for (int j = 0; j < w; j++) {
                const int c = cb + j;
                dbeta[c]    = (float)sg[j];
                dgamma[c]   = (float)sx[j];
                ag[c]       = (float)(sg[j] / (double)M);
                ax[c]       = (float)(sx[j] / (double)M);
            }
        }
        // 3. dx = gamma * invstd * (g - mean(g) - xh * mean(g * xh)), rows split. With dxsum,
        // by groups of chunks instead, each chunk's rows summed as written while still in L1,
        // into the groups' (now free) rows of gsg: colsum's grid and order, so its bits.
        if (dx && dxsum) {
#pragma omp for schedule(static)
            for (int gi = 0; gi < g.ngroups; gi++) {
                double *as = gsg + (int64_t)gi * C;
                for (int c = 0; c < C; c++)
                    as[c] = 0.0;
                int64_t k0, k1;
                bn_group_chunks(&g, gi, &k0, &k1);
                for (int64_t kk = k0; kk < k1; kk++) {
                    const int64_t r0 = kk * g.rows, r1 = bn_chunk_end(&g, M, kk);
                    for (int64_t r = r0; r < r1; r++) {
                        const int64_t o = r * C;
                        BN_NAME(grad_row_as)
                        (masked, C, x + o, ry ? ry + o : NULL, dy + o, mean, invstd, k, beta, ag,
                         ax, dx + o);
                    }
                    BN_NAME(chunk_colsum)(dx, r0, r1, C, as);
                }
            }
            BN_NAME(sum_groups)(gsg, g.ngroups, C, dxsum);
        } else if (dx) {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < M; r++) {
                const int64_t o = r * C;
                BN_NAME(grad_row_as)
                (masked, C, x + o, ry ? ry + o : NULL, dy + o, mean, invstd, k, beta, ag, ax,
                 dx + o);
            }
        }
    }
}

// out[c] = sum over the M rows of x[r*C + c], through the same grid: float within a chunk, then
// double per group (ws), then the groups in order. The bias gradient of a convolution.
void BN_NAME(colsum)(const nk_exec *ex, int64_t M, int C, const float *x, float *out)
{
    const bn_grid g = bn_grid_of(M, C);
    double *gs      = (double *)ex->ws;
#pragma omp parallel num_threads(bn_threads(ex, M *C))
    {
#pragma omp for schedule(static)
        for (int gi = 0; gi < g.ngroups; gi++) {
            double *as = gs + (int64_t)gi * C;
            for (int c = 0; c < C; c++)
                as[c] = 0.0;
            int64_t k0, k1;
            bn_group_chunks(&g, gi, &k0, &k1);
            for (int64_t kk = k0; kk < k1; kk++)
                BN_NAME(chunk_colsum)(x, kk * g.rows, bn_chunk_end(&g, M, kk), C, as);
        }
        BN_NAME(sum_groups)(gs, g.ngroups, C, out);
    }
}
