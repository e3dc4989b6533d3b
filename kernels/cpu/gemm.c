/*
 * gemm.c: the BLIS-style SGEMM driver (nk_sgemm_cpu). C is cut into work units (blocks of rows x
 * columns, see plan_units); OpenMP threads take units from an atomic counter, and each unit runs
 * pc (kc, pack B) -> ic (mc, pack A) -> jr (nr) -> ir (mr) around an ISA micro-kernel picked at
 * run time. Plain C: the SIMD micro-kernels and packers live in gemm_avx512.c and gemm_avx2.c;
 * the scalar table below is the fallback. Also the column sums used for bias gradients. The
 * specification is nk_sgemm_ref (kernels/ref/gemm.c); tests in tests/test_gemm.c, benchmark in
 * bench/bench_gemm.c.
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"

// ---- scalar fallback (4 x 8) ----

#define SMR 4
#define SNR 8

static void ukr_scalar(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                       float alpha, float beta, int m, int n)
{
    float acc[SMR][SNR] = {{0}};
    for (int64_t p = 0; p < kc; p++, a += SMR, b += SNR)
        for (int i = 0; i < SMR; i++)
            for (int j = 0; j < SNR; j++)
                acc[i][j] += a[i] * b[j];
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            float r        = alpha * acc[i][j];
            c[i * ldc + j] = beta != 0.0f ? r + beta * c[i * ldc + j] : r;
        }
    }
}

static void pack_a_scalar(int ta, int mc, int kc, const float *A, int64_t lda, float *dst)
{
    for (int i0 = 0; i0 < mc; i0 += SMR, dst += (int64_t)SMR * kc)
        for (int p = 0; p < kc; p++)
            for (int i = 0; i < SMR; i++) {
                int64_t r        = i0 + i;
                dst[p * SMR + i] = r >= mc ? 0.0f : ta ? A[p * lda + r] : A[r * lda + p];
            }
}

static void pack_b_scalar(int tb, int kc, int nc, const float *B, int64_t ldb, float *dst)
{
    for (int j0 = 0; j0 < nc; j0 += SNR, dst += (int64_t)SNR * kc)
        for (int p = 0; p < kc; p++)
            for (int j = 0; j < SNR; j++) {
                int64_t q        = j0 + j;
                dst[p * SNR + j] = q >= nc ? 0.0f : tb ? B[q * ldb + p] : B[p * ldb + q];
            }
}

const nk_gemm_kernel nk_gemm_kernel_scalar = {
    .mr     = SMR,
    .nr     = SNR,
    .mc     = 128,
    .kc     = 256,
    .nc     = 1024,
    .ukr    = ukr_scalar,
    .pack_a = pack_a_scalar,
    .pack_b = pack_b_scalar,
};

// ---- workspace ----

// Each buffer starts on a 64-byte boundary; this many floats of slack per buffer cover that.
#define WS_ALIGN_FLOATS 16

size_t nk_sgemm_ws_floats(int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    // Every thread packs its own A and B blocks (no sharing, hence no barriers).
    size_t b = (size_t)NK_GEMM_MAX_KC * NK_GEMM_MAX_NC + WS_ALIGN_FLOATS;
    size_t a = (size_t)NK_GEMM_MAX_MC * NK_GEMM_MAX_KC + WS_ALIGN_FLOATS;
    // + one more slack: the driver first rounds ws itself up to 64 bytes.
    return (size_t)nthreads * (a + b) + WS_ALIGN_FLOATS;
}

static float *align64(float *p)
{
    uintptr_t u = (uintptr_t)p;
    return (float *)((u + 63) & ~(uintptr_t)63);
}

// ---- driver ----

static const nk_gemm_kernel *kernel_for(nk_isa isa)
{
    nk_isa have = nk_cpu_detect();
    if (isa > have) isa = have;
    if (isa == NK_ISA_AVX512) return &nk_gemm_kernel_avx512;
    if (isa == NK_ISA_AVX2) return &nk_gemm_kernel_avx2;
    return &nk_gemm_kernel_scalar;
}

// The table for a GEMM that packs both A and B per block (no convolution rows, no prepacked B,
// whose panels are kernel_for's): AVX-512's 12 x 32 build (see gemm_packed_avx512.c).
static const nk_gemm_kernel *kernel_packed_for(nk_isa isa)
{
    const nk_gemm_kernel *kr = kernel_for(isa);
    return kr == &nk_gemm_kernel_avx512 ? &nk_gemm_kernel_avx512_12x32 : kr;
}

// C = beta * C (+ bias, then ReLU) over an M x N block, the whole GEMM when K == 0 or
// alpha == 0. beta == 0 writes without reading C.
static void scale_c(int nt, int M, int N, float beta, float *C, int64_t ldc, const float *bias,
                    const nk_epilogue *ep)
{
    const float *sc = ep ? ep->scale : NULL, *sh = ep ? ep->shift : NULL;
    const float *res = ep ? ep->residual : NULL;
    const int relu   = ep && ep->relu;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++)
                c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++)
                c[j] *= beta;
        if (bias)
            for (int j = 0; j < N; j++)
                c[j] += bias[j];
        if (sc)
            for (int j = 0; j < N; j++)
                c[j] = c[j] * sc[j] + sh[j];
        if (res)
            for (int j = 0; j < N; j++)
                c[j] += res[i * ldc + j];
        if (relu)
            for (int j = 0; j < N; j++)
                c[j] = c[j] > 0.0f ? c[j] : 0.0f;
    }
}

// Work units: C is cut into m_units x n_units blocks of mc_u rows and nc_u columns, each computed
// whole (all of K) by one thread that packs its own A and B blocks, so threads never wait for
// each other: one that the OS deschedules on a shared machine just takes fewer units. More units
// balance better but repack more (each row unit packs all of B's columns it touches, each column
// unit all of A's rows), so the grid minimises the busiest thread's flops plus the packing,
// costed at GEMM_PACK_FLOPS per float packed (about 0.4 ns against a 100 GFLOP/s core).
#define GEMM_PACK_FLOPS 40.0
// Grids with up to this many units per thread are considered.
#define GEMM_MAX_UNITS_PER_THREAD 8

typedef struct {
    int m_units, n_units, mc_u, nc_u;
} gemm_units;

// Splits `len` into about `parts` blocks of whole `tile`s; writes the block length, returns the
// block count.
static int split_len(int len, int parts, int tile, int *block)
{
    int tiles = (len + tile - 1) / tile;
    if (parts > tiles) parts = tiles;
    if (parts < 1) parts = 1;
    *block = (tiles + parts - 1) / parts * tile;
    return (len + *block - 1) / *block;
}

// a_cost, b_cost: what handling one float of A / B costs per unit that touches it, as a fraction
// of GEMM_PACK_FLOPS: 1 when the unit packs it, less when it only reads it (A read unpacked by
// the batch-reduce kernel, B packed once beforehand).
static gemm_units plan_units(const nk_gemm_kernel *kr, int M, int N, int K, int nt, double a_cost,
                             double b_cost)
{
    gemm_units best  = {1, 1, M, N};
    double best_t    = -1;
    int best_units   = 0;
    const int lim    = nt > 1 ? GEMM_MAX_UNITS_PER_THREAD * nt : 1;
    const int nu_min = (N + kr->nc - 1) / kr->nc; // nc bounds the packed B block
    // Pass 0 finds the cheapest grid; pass 1 takes the one with most units within 2% of it,
    // since more units rebalance when a thread is descheduled.
    for (int pass = 0; pass < 2; pass++) {
        for (int mu = 1; mu <= lim; mu++) {
            for (int nu = nu_min; nu <= nu_min + lim - 1; nu++) {
                gemm_units u;
                u.m_units = split_len(M, mu, kr->mr, &u.mc_u);
                u.n_units = split_len(N, nu, kr->nr, &u.nc_u);
                if (u.m_units != mu || u.n_units != nu) continue; // a smaller pair's grid
                const int units = mu * nu, per_thread = (units + nt - 1) / nt;
                const double work = 2.0 * per_thread * (double)u.mc_u * u.nc_u * K;
                const double pack =
                    GEMM_PACK_FLOPS * (b_cost * mu * K * N + a_cost * nu * (double)M * K) / nt;
                const double t = work + pack;
                if (pass == 0 && (best_t < 0 || t < best_t)) best_t = t;
                if (pass == 1 && t <= best_t * 1.02 && units > best_units) {
                    best_units = units;
                    best       = u;
                }
            }
        }
    }
    return best;
}

// Below this many flops the OpenMP fork costs more than it gains; run on one thread.
#define GEMM_MIN_FLOPS_PER_THREAD 2e5

// The fused epilogue in plain C (see nk_tile_epi_fn), for ISAs without their own.
static void tile_epi_c(float *c, int64_t ldc, int m, int n, const float *bias, const float *sc,
                       const float *sh, const float *res, int relu)
{
    for (int i = 0; i < m; i++) {
        float *cr = c + i * ldc;
        for (int j = 0; j < n; j++) {
            float v = cr[j];
            if (bias) v += bias[j];
            if (sc) v = v * sc[j] + sh[j];
            if (res) v += res[i * ldc + j];
            if (relu) v = v > 0.0f ? v : 0.0f;
            cr[j] = v;
        }
    }
}

// Zeros that stand in for the rows of padding taps (segments are at most kc <= 256 long).
static const float zero_row[NK_GEMM_MAX_KC] __attribute__((aligned(64)));

// Whether every filter row of every output pixel lies inside the image horizontally: then the
// S*C values of one filter row are contiguous in x (conv1 after Keras's ZeroPadding2D). Rows
// shorter than 16 are not worth it, and would overflow the pointer space (see sgemm_run).
static int conv_row_contig(const nk_conv_desc *d)
{
    return d->pad_w == 0 && (int64_t)(d->Q - 1) * d->stride + d->S <= d->W && d->S * d->C >= 16;
}

// Where k = (r*S + s)*C + c of a convolution's patch rows reads: filter tap (r, s), and the offset
// in x from a row's tap (0, 0) pixel. Worked out once per call, not per row: the divisions per
// row and segment had cost conv1 (7 segments of 21) a sixth of its time.
typedef struct conv_tap {
    int r, s;
    int64_t off;
} conv_tap;

static conv_tap conv_tap_of(const nk_conv_desc *d, int k)
{
    const int tap = k / d->C;
    conv_tap t    = {tap / d->S, tap % d->S, 0};
    t.off         = ((int64_t)t.r * d->W + t.s) * d->C + k % d->C;
    return t;
}

// A patch row's output pixel (n, p, q), stepped from row to row without dividing.
typedef struct conv_pos {
    int64_t n;
    int p, q;
} conv_pos;

static conv_pos conv_pos_at(const nk_conv_desc *d, int64_t row)
{
    const int64_t PQ = (int64_t)d->P * d->Q, pq = row % PQ;
    return (conv_pos){row / PQ, (int)(pq / d->Q), (int)(pq % d->Q)};
}

static void conv_pos_next(const nk_conv_desc *d, conv_pos *c)
{
    if (++c->q == d->Q) {
        c->q = 0;
        if (++c->p == d->P) c->p = 0, c->n++;
    }
}

// The offset in x (elements) that pixel c reads through tap t, or -1 where that is padding.
static int64_t conv_read_at(const nk_conv_desc *d, const conv_pos *c, const conv_tap *t)
{
    const int ih0 = c->p * d->stride - d->pad_h, iw0 = c->q * d->stride - d->pad_w;
    const int ih = ih0 + t->r, iw = iw0 + t->s;
    if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) return -1;
    return ((c->n * d->H + ih0) * d->W + iw0) * d->C + t->off;
}

// Segments of k [pc, pc + kc) of a convolution's patch matrix that are contiguous in x (one
// filter row when conv_row_contig, else one tap), and each micro-tile row's pointer into x for
// each (zero_row for padding and rows past mc): rows[(ir/mr * nseg + s) * mr + i]. Returns nseg.
static int conv_rows(const nk_gemm_kernel *kr, const nk_conv_desc *d, const float *x, int64_t row0,
                     int mc, int pc, int kc, int *seglen, const float **rows)
{
    const int MR = kr->mr, unit = conv_row_contig(d) ? d->S * d->C : d->C;
    // Segments are >= 16 long but for the first: at most kc/16 + 1 of them.
    int nseg = 0, segk[NK_GEMM_MAX_KC / 16 + 2];
    for (int k = pc; k < pc + kc;) {
        const int c0 = k % unit, len0 = unit - c0, left = pc + kc - k;
        segk[nseg]   = k;
        seglen[nseg] = len0 < left ? len0 : left;
        k += seglen[nseg++];
    }
    conv_tap tap[NK_GEMM_MAX_KC / 16 + 2];
    for (int s = 0; s < nseg; s++)
        tap[s] = conv_tap_of(d, segk[s]);
    conv_pos at = conv_pos_at(d, row0);
    for (int i0 = 0; i0 < mc; i0 += MR) {
        const float **rp = rows + (int64_t)(i0 / MR) * nseg * MR;
        for (int i = 0; i < MR; i++) {
            if (i0 + i >= mc) {
                for (int s = 0; s < nseg; s++)
                    rp[s * MR + i] = zero_row;
                continue;
            }
            for (int s = 0; s < nseg; s++) {
                const int64_t o = conv_read_at(d, &at, &tap[s]);
                rp[s * MR + i]  = o >= 0 ? x + o : zero_row;
            }
            conv_pos_next(d, &at);
        }
    }
    return nseg;
}

// Depth blocks of convolutions read in place (the implicit GEMM) with K >= this many: half the
// passes over C for the deep 1x1s. Alternating runs at batch 16 (`pneumo bench conv --pass
// fwd-train` and `--pass fwd`, 5 rounds each, 512 against 256): the 1x1s with C >= 512 (conv3's
// reduce, conv4's and conv5's) 0.96-0.975x the time, faster in 4-5 of 5 rounds; K < 512 runs
// the same code. (512 in the packed GEMM's table too was mixed: some input gradients faster,
// others slower.)
#ifndef CONV_WIDE_KC
#    define CONV_WIDE_KC 512
#endif
_Static_assert(CONV_WIDE_KC <= NK_GEMM_MAX_KC,
               "the workspace and segment arrays cover CONV_WIDE_KC");

// The driver behind nk_sgemm_cpu_epi and nk_sgemm_conv_cpu: A is op(A) (ta, lda), or, when d is
// not NULL, the patch matrix of x.
// Bp, when not NULL, is B packed whole (nk_sgemm_pack_b_full) and B/tb/ldb are unused.
static void sgemm_run(nk_isa isa, const nk_exec *ex, int ta, int tb, int M, int N, int K,
                      float alpha, const float *A, int lda, const nk_conv_desc *d, const float *x,
                      const float *B, int ldb, const float *Bp, float beta, float *C, int ldc,
                      const float *bias, const nk_epilogue *ep)
{
    if (M <= 0 || N <= 0) return;
    const int relu    = ep && ep->relu;
    const int any_epi = bias || relu || (ep && (ep->scale || ep->residual));
    int nt            = ex && ex->nthreads > 0 ? ex->nthreads : 1;
    double flops      = 2.0 * M * N * (double)K;
    if (flops < GEMM_MIN_FLOPS_PER_THREAD * nt) nt = 1;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(nt, M, N, beta, C, ldc, bias, ep);
        return;
    }
    const nk_gemm_kernel *kr = d || Bp ? kernel_for(isa) : kernel_packed_for(isa);
    const int MR = kr->mr, NR = kr->nr, MC = kr->mc, NC = kr->nc;
    const int KC = d && K >= CONV_WIDE_KC ? CONV_WIDE_KC : kr->kc;
    // Bias and epilogue once, on the last k block's tiles (beta == 0 with a bias: the contract).
    const nk_tile_epi_fn epi           = kr->epi ? kr->epi : tile_epi_c;
    const nk_gemm_ukr_rows_fn ukr_rows = kr->ukr_rows_pf ? kr->ukr_rows_pf : kr->ukr_rows;
    // Convolutions read A unpacked (batch-reduce micro-kernel): packing costs about the same per
    // element of A whatever N is, while the work per element is N multiply-adds, so skipping it
    // measured 1.0-1.36x faster on every ResNet50 conv with C % 16 == 0 (most for N = 64).
    const int direct = d != NULL;
    // A unit that only reads (no packing) still streams the data through the caches: 1/4.
    const gemm_units u = plan_units(kr, M, N, K, nt, direct ? 0.25 : 1.0, Bp ? 0.25 : 1.0);
    const int total    = u.m_units * u.n_units;
    if (nt > total) nt = total;
    // A convolution whose epilogue adds a residual (a bottleneck block's expanding 1x1 with BN
    // folded in: inference, and fine-tuning's frozen layers) writes its tiles with non-temporal
    // stores: its output is four times its input, and storing it through the caches evicted
    // the rows, weights and residual the block still reads. `pneumo bench model --profile`, 6
    // alternating rounds at batch 16: conv2's expands 0.78-0.86x the time, conv3's 0.89-0.92x,
    // conv4's and conv5's 0.94-0.96x, their readers +0.1-0.3 ms; `sh bench/ab.sh -r 8`: the
    // inference step 0.97x (faster in 6 of 8 rounds), the fine-tuning step 0.98x (7 of 8).
    // Tables with stream_all (AVX2) stream every convolution's output whose epilogue does more
    // than add the bias: a bias alone is training's forward, whose output batch normalisation
    // reads next (see gemm_avx2.c).
    const int more_than_bias = relu || (ep && (ep->scale || ep->residual));
    const int stream = direct && ((ep && ep->residual) || (kr->stream_all && more_than_bias));
    float *ws        = align64(ex->ws);
    const size_t per_thread = (size_t)KC * NC + (size_t)MC * KC + 2 * WS_ALIGN_FLOATS;
    int next                = 0; // next unfinished unit, taken with an atomic add

#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        float *bbuf   = align64(ws + (size_t)tid * per_thread);
        float *abuf   = align64(bbuf + (size_t)KC * NC + WS_ALIGN_FLOATS);
        for (;;) {
            const int unit = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
            if (unit >= total) break;
            // Consecutive units share a row block, so its A rows are still in cache.
            const int64_t i0 = (int64_t)(unit / u.n_units) * u.mc_u;
            const int j0     = (unit % u.n_units) * u.nc_u;
            const int mcb    = (int)(M - i0 < u.mc_u ? M - i0 : u.mc_u);
            const int ncb    = N - j0 < u.nc_u ? N - j0 : u.nc_u;
            for (int pc = 0; pc < K; pc += KC) {
                const int kcb   = K - pc < KC ? K - pc : KC;
                const int first = pc == 0, last = pc + kcb == K;
                const float beta_eff = first ? beta : 1.0f;
                if (!Bp) {
                    const float *bsrc =
                        tb ? B + (int64_t)j0 * ldb + pc : B + (int64_t)pc * ldb + j0;
                    kr->pack_b(tb, kcb, ncb, bsrc, ldb, bbuf);
                }
                // mc_u may exceed MC for a few rows' balance; pack at most MC rows at a time.
                for (int ic = 0; ic < mcb; ic += MC) {
                    const int mcc      = mcb - ic < MC ? mcb - ic : MC;
                    const int64_t row  = i0 + ic;
                    int nseg           = 0, seglen[NK_GEMM_MAX_KC / 16 + 2];
                    const float **rows = (const float **)abuf; // direct: pointers, not panels
                    if (direct) {
                        nseg = conv_rows(kr, d, x, row, mcc, pc, kcb, seglen, rows);
                    } else {
                        const float *asrc = ta ? A + (int64_t)pc * lda + row : A + row * lda + pc;
                        kr->pack_a(ta, mcc, kcb, asrc, lda, abuf);
                    }
                    for (int j = 0; j < ncb; j += NR) {
                        const int n = ncb - j < NR ? ncb - j : NR;
                        // Prepacked: panel (j0 + j)/NR holds all K; this block starts at row pc.
                        const float *bp =
                            Bp ? Bp + (int64_t)((j0 + j) / NR) * K * NR + (int64_t)pc * NR
                               : bbuf + (int64_t)j * kcb;
                        for (int ir = 0; ir < mcc; ir += MR) {
                            const int m          = mcc - ir < MR ? mcc - ir : MR;
                            float *c             = C + (row + ir) * ldc + j0 + j;
                            const nk_tile_epi te = {bias ? bias + j0 + j : NULL,
                                                    ep && ep->scale ? ep->scale + j0 + j : NULL,
                                                    ep && ep->scale ? ep->shift + j0 + j : NULL,
                                                    ep && ep->residual ? ep->residual + (c - C)
                                                                       : NULL,
                                                    relu,
                                                    stream};
                            if (direct) { // the epilogue fused into the micro-kernel's stores
                                ukr_rows(nseg, seglen, rows + (int64_t)(ir / MR) * nseg * MR, bp, c,
                                         ldc, beta_eff, m, n, last && any_epi ? &te : NULL);
                                continue;
                            }
                            kr->ukr(kcb, abuf + (int64_t)ir * kcb, bp, c, ldc, alpha, beta_eff, m,
                                    n);
                            if (last && any_epi)
                                epi(c, ldc, m, n, te.bias, te.sc, te.sh, te.res, relu);
                        }
                    }
                }
            }
        }
        nk_nt_fence(stream);
    }
}

void nk_sgemm_cpu_epi(nk_isa isa, const nk_exec *ex, int ta, int tb, int M, int N, int K,
                      float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc, const float *bias, const nk_epilogue *ep)
{
    sgemm_run(isa, ex, ta, tb, M, N, K, alpha, A, lda, NULL, NULL, B, ldb, NULL, beta, C, ldc, bias,
              ep);
}

int nk_sgemm_conv_ok(nk_isa isa, const nk_conv_desc *d)
{
    const nk_gemm_kernel *kr = kernel_for(isa);
    return kr->ukr_rows && (d->C % 16 == 0 || conv_row_contig(d)) && kr->kc <= NK_GEMM_MAX_KC;
}

void nk_sgemm_conv_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                       const float *w, const float *wp, const float *b, const nk_epilogue *ep,
                       float *y)
{
    sgemm_run(isa, ex, 0, 0, d->N * d->P * d->Q, d->K, d->R * d->S * d->C, 1.0f, NULL, 0, d, x, w,
              d->K, wp, 0.0f, y, d->K, b, ep);
}

void nk_sgemm_conv_bt_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                          const float *wt, float beta, float *y)
{
    const int rsc = d->R * d->S * d->C;
    sgemm_run(isa, ex, 0, 1, d->N * d->P * d->Q, d->K, rsc, 1.0f, NULL, 0, d, x, wt, rsc, NULL,
              beta, y, d->K, NULL, NULL);
}

void nk_sgemm_cpu_pb(nk_isa isa, const nk_exec *ex, int M, int N, int K, const float *A, int lda,
                     const float *Bp, float *C, int ldc, const float *bias, const nk_epilogue *ep)
{
    sgemm_run(isa, ex, 0, 0, M, N, K, 1.0f, A, lda, NULL, NULL, NULL, 0, Bp, 0.0f, C, ldc, bias,
              ep);
}

size_t nk_sgemm_packed_b_floats(nk_isa isa, int K, int N)
{
    const nk_gemm_kernel *kr = kernel_for(isa);
    return (size_t)((N + kr->nr - 1) / kr->nr) * kr->nr * (size_t)(K > 0 ? K : 1);
}

void nk_sgemm_pack_b_full(nk_isa isa, int K, int N, const float *B, int ldb, float *dst)
{
    // The ISA's own packer over all of K: panels of K x nr, the layout sgemm_run indexes.
    if (K > 0) kernel_for(isa)->pack_b(0, K, N, B, ldb, dst);
}

void nk_sgemm_cpu(nk_isa isa, const nk_exec *ex, int ta, int tb, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    nk_sgemm_cpu_epi(isa, ex, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL, NULL);
}

// ---- column sums (bias gradients) ----

// Rows are summed in fp32 blocks of this many, then the block sums in double: vectorisable and
// still accurate to a few ulp for millions of rows.
#define COLSUM_BLOCK 64

// k steps per block of nk_sgemm_atb_cpu; C is reloaded once per block. 128 (a 128 x 32 B
// micro-panel of 16 KiB in L1) with the 12 x 32 tile; with the 6 x 64 one, 256 (64 KiB panels, in
// L2, half the C reloads): `pneumo bench conv --pass bwd-filter`, batch 16, 5 runs each
// alternating, the network's weight gradients 513-615 (median 539) -> 497-613 (median 515) ms,
// 15 of the 20 shapes' medians faster.
#define ATB_KC        256
#define ATB_MAX_REUSE 256.0

void nk_sgemm_atb_cpu(nk_isa isa, const nk_exec *ex, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
    const nk_gemm_kernel *kr = kernel_for(isa);
    // Packing costs the same per float of A and B whatever the shape, and each packed float
    // then serves 2MN/(M+N) flops: skipping it pays below ATB_MAX_REUSE (ResNet50's stage 2-3
    // weight gradients: 1.1-1.7x on Zen 4 with AVX-512). Above, the packed path wins: wide
    // power-of-two rows (C or K >= 1024) alias in L1 when read unpacked (conv5's 1x1s ran at half
    // speed). The AVX2 table has no ukr_atb: on Zen 3 packing won at every reuse (gemm_avx2.c).
    const double reuse = 2.0 * M * (double)N / ((double)M + N);
    if (!kr->ukr_atb || K <= 0 || reuse > ATB_MAX_REUSE) {
        nk_sgemm_cpu(isa, ex, 1, 0, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (M <= 0 || N <= 0) return;
    int nt = ex && ex->nthreads > 0 ? ex->nthreads : 1;
    if (2.0 * M * N * (double)K < GEMM_MIN_FLOPS_PER_THREAD * nt) nt = 1;
    const int MR = kr->mr, NR = kr->nr;
    // Nothing is packed: a unit only streams its columns of A and B through the caches.
    const gemm_units u = plan_units(kr, M, N, K, nt, 0.25, 0.25);
    const int total    = u.m_units * u.n_units;
    if (nt > total) nt = total;
    int next = 0;
#pragma omp parallel num_threads(nt)
    for (;;) {
        const int unit = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
        if (unit >= total) break;
        const int i0 = (unit / u.n_units) * u.mc_u, j0 = (unit % u.n_units) * u.nc_u;
        const int mcb = M - i0 < u.mc_u ? M - i0 : u.mc_u;
        const int ncb = N - j0 < u.nc_u ? N - j0 : u.nc_u;
        for (int pc = 0; pc < K; pc += ATB_KC) {
            const int kcb     = K - pc < ATB_KC ? K - pc : ATB_KC;
            const float b_eff = pc == 0 ? beta : 1.0f;
            for (int j = 0; j < ncb; j += NR) {
                const int n    = ncb - j < NR ? ncb - j : NR;
                const float *b = B + (int64_t)pc * ldb + j0 + j;
                for (int i = 0; i < mcb; i += MR) {
                    const int m = mcb - i < MR ? mcb - i : MR;
                    kr->ukr_atb(kcb, A + (int64_t)pc * lda + i0 + i, lda, b, ldb,
                                C + (int64_t)(i0 + i) * ldc + j0 + j, ldc, b_eff, m, n);
                }
            }
        }
    }
}

void nk_colsum_cols_cpu(const nk_exec *ex, int64_t M, int N, const float *x, float *out)
{
    int nt = ex && ex->nthreads > 0 ? ex->nthreads : 1;
    if ((double)M * N < 1e5) nt = 1;
        // Threads own disjoint column ranges, so the result does not depend on the thread count.
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        const int j0 = (int)((int64_t)N * tid / nth), j1 = (int)((int64_t)N * (tid + 1) / nth);
        for (int jb = j0; jb < j1; jb += 64) {
            const int w    = j1 - jb < 64 ? j1 - jb : 64;
            double acc[64] = {0};
            float part[64];
            for (int64_t i0 = 0; i0 < M; i0 += COLSUM_BLOCK) {
                const int64_t i1 = M - i0 < COLSUM_BLOCK ? M : i0 + COLSUM_BLOCK;
                for (int j = 0; j < w; j++)
                    part[j] = 0.0f;
                for (int64_t i = i0; i < i1; i++)
                    for (int j = 0; j < w; j++)
                        part[j] += x[i * N + jb + j];
                for (int j = 0; j < w; j++)
                    acc[j] += part[j];
            }
            for (int j = 0; j < w; j++)
                out[jb + j] = (float)acc[j];
        }
    }
}

// ---- bf16 inference GEMM ----
//
// The same work-unit scheme as nk_sgemm_cpu_epi, with two differences: B comes packed once
// (nk_gemm_bf16_pack_b: the weights, packed when a model is first run), so each unit only packs
// A, rounding it to bf16 on the way; and A may be a convolution's patch matrix that the packer
// reads straight from x (implicit GEMM), 32 k at a time, each chunk inside one filter tap.

#define BMR NK_BF16_MR
#define BNR NK_BF16_NR
// A block: 480 rows x 256 k as bf16 = 240 KiB of the 1 MiB L2; the 12 x 256 A micro-panel
// (6 KiB) and the 256 x 32 B micro-panel (16 KiB) stay in the 32 KiB L1. BKC is a multiple of
// 32 (the packer's chunk) so that chunks never straddle a filter tap when C % 32 == 0.
#define BMC 480
#define BKC 256
_Static_assert(BKC % 32 == 0 && BMC % BMR == 0 && BMC % NK_BF16_MR_MAX == 0,
               "bf16 blocks: kc in whole chunks, mc in panels of every table's mr");
// With a bf16 output, each thread sums a BMC x BJC block in a float32 staging tile (in L2: 240
// KiB) over all k blocks, and rounds it into the output as each micro-tile's last k block ends.
#define BJC 128
_Static_assert(BJC % BNR == 0, "bf16 staging: whole column panels");

static void ukr_bf16_scalar(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                            float beta, int m, int n)
{
    float acc[BMR][BNR] = {{0}};
    for (int64_t p = 0; p < kp; p++, a += BMR, b += BNR)
        for (int i = 0; i < BMR; i++) {
            const float a0 = nk_bf16_to_f32((uint16_t)a[i]);
            const float a1 = nk_bf16_to_f32((uint16_t)(a[i] >> 16));
            for (int j = 0; j < BNR; j++)
                acc[i][j] += a0 * nk_bf16_to_f32((uint16_t)b[j]) +
                             a1 * nk_bf16_to_f32((uint16_t)(b[j] >> 16));
        }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[i * ldc + j] = beta != 0.0f ? acc[i][j] + beta * c[i * ldc + j] : acc[i][j];
}

static void pack_bf16_scalar(const float *const *src, int w, uint32_t *dst)
{
    for (int i = 0; i < BMR; i++)
        for (int q = 0; q < (w + 1) / 2; q++) {
            const uint32_t lo = src[i] ? nk_f32_to_bf16(src[i][2 * q]) : 0;
            const uint32_t hi = src[i] && 2 * q + 1 < w ? nk_f32_to_bf16(src[i][2 * q + 1]) : 0;
            dst[q * BMR + i]  = lo | hi << 16;
        }
}

static void pack_t_bf16_scalar(const float *src, int64_t lda, int m, int kc, uint32_t *dst)
{
    for (int q = 0; q < (kc + 1) / 2; q++)
        for (int i = 0; i < BMR; i++) {
            const uint32_t lo = i < m ? nk_f32_to_bf16(src[(int64_t)(2 * q) * lda + i]) : 0;
            const uint32_t hi =
                i < m && 2 * q + 1 < kc ? nk_f32_to_bf16(src[(int64_t)(2 * q + 1) * lda + i]) : 0;
            dst[q * BMR + i] = lo | hi << 16;
        }
}

static void ukr_rows_bf16_scalar(int nseg, const int *segp, const uint32_t *const *rows,
                                 const uint32_t *b, float *c, int64_t ldc, float beta, int m, int n,
                                 int pf)
{
    float acc[BMR][BNR] = {{0}};
    for (int s = 0; s < nseg; s++, rows += BMR)
        for (int p = 0; p < segp[s]; p++, b += BNR)
            for (int i = 0; i < BMR; i++) {
                const float a0 = nk_bf16_to_f32((uint16_t)rows[i][p]);
                const float a1 = nk_bf16_to_f32((uint16_t)(rows[i][p] >> 16));
                for (int j = 0; j < BNR; j++)
                    acc[i][j] += a0 * nk_bf16_to_f32((uint16_t)b[j]) +
                                 a1 * nk_bf16_to_f32((uint16_t)(b[j] >> 16));
            }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[i * ldc + j] = beta != 0.0f ? acc[i][j] + beta * c[i * ldc + j] : acc[i][j];
}

void nk_bf16_convert_scalar(int64_t n, const float *x, uint16_t *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = nk_f32_to_bf16(x[i]);
}

void nk_bf16_fin_scalar(float *c, int64_t ldc, int m, int n, const float *bias, const float *sc,
                        const float *sh, const uint16_t *resb, int64_t ldr, int relu, uint16_t *yb,
                        int64_t ldy)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float v = c[i * ldc + j];
            if (bias) v += bias[j];
            if (sc) v = v * sc[j] + sh[j];
            if (resb) v += nk_bf16_to_f32(resb[i * ldr + j]);
            if (relu) v = v > 0.0f ? v : 0.0f;
            if (yb)
                yb[i * ldy + j] = nk_f32_to_bf16(v);
            else
                c[i * ldc + j] = v;
        }
}

static const nk_bf16_kernel nk_bf16_kernel_scalar = {
    .mr       = BMR,
    .ukr      = ukr_bf16_scalar,
    .pack     = pack_bf16_scalar,
    .pack_t   = pack_t_bf16_scalar,
    .ukr_rows = ukr_rows_bf16_scalar,
    .convert  = nk_bf16_convert_scalar,
    .fin      = nk_bf16_fin_scalar,
};

// The table for impl, or the best this CPU has below it; the emulated AMX runs anywhere.
static const nk_bf16_kernel *bf16_kernel_for(nk_bf16_impl impl)
{
    if (impl == NK_BF16_AMX_EMU) return &nk_bf16_kernel_amx_emu;
    const nk_bf16_impl have = nk_bf16_hw() ? nk_cpu_bf16() : NK_BF16_NONE;
    if (impl > have) impl = have;
    return impl == NK_BF16_AMX      ? &nk_bf16_kernel_amx
           : impl == NK_BF16_AVX512 ? &nk_bf16_kernel_avx512
                                    : &nk_bf16_kernel_scalar;
}

size_t nk_gemm_bf16_packed_b_elems(int K, int N)
{
    return (size_t)((N + BNR - 1) / BNR) * BNR * (size_t)((K + 1) / 2) * 2;
}

// One panel (BNR columns from jp * BNR) of nk_gemm_bf16_pack_b's layout.
static void bf16_pack_b_panel(int tb, int K, int N, const float *B, int ldb, int jp, uint16_t *dst)
{
    const int Kp = (K + 1) / 2;
    for (int q = 0; q < Kp; q++)
        for (int j = 0; j < BNR; j++) {
            const int col = jp * BNR + j;
            uint16_t *o   = dst + (((int64_t)jp * Kp + q) * BNR + j) * 2;
            for (int e = 0; e < 2; e++) {
                const int k = 2 * q + e;
                float v     = 0.0f;
                if (col < N && k < K)
                    v = tb ? B[(int64_t)col * ldb + k] : B[(int64_t)k * ldb + col];
                o[e] = nk_f32_to_bf16(v);
            }
        }
}

void nk_gemm_bf16_pack_b(int tb, int K, int N, const float *B, int ldb, uint16_t *dst)
{
    nk_gemm_bf16_pack_b_mt(1, tb, K, N, B, ldb, dst);
}

// Packs B (tb: stored [N,K]) panel by panel, OpenMP over nthreads; colsum (row-major B only;
// may be NULL) gets each column's float32 sum, rows in order.
static void bf16_pack_b_mt(int nthreads, int tb, int K, int N, const float *B, int ldb,
                           uint16_t *dst, float *colsum)
{
    const int np = (N + BNR - 1) / BNR;
    // Below ~64 Ki weights one thread packs faster than two wake up.
    if ((int64_t)K * N < 65536) nthreads = 1;
    // Row-major B with the AVX512_BF16 packer where the CPU has one (same rounding).
    const nk_bf16_kernel *kr = nk_bf16_hw() ? &nk_bf16_kernel_avx512 : NULL;
    const int64_t Kp         = (K + 1) / 2;
#pragma omp parallel for num_threads(nthreads > 0 ? nthreads : 1) schedule(static)
    for (int jp = 0; jp < np; jp++) {
        const int n = N - jp * BNR < BNR ? N - jp * BNR : BNR;
        float *cs   = colsum ? colsum + jp * BNR : NULL;
        if (!tb && kr && kr->pack_b) {
            kr->pack_b(B + (int64_t)jp * BNR, ldb, K, n, (uint32_t *)dst + (int64_t)jp * Kp * BNR,
                       cs);
            continue;
        }
        bf16_pack_b_panel(tb, K, N, B, ldb, jp, dst);
        for (int j = 0; cs && j < n; j++) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++)
                sum += B[(int64_t)k * ldb + jp * BNR + j];
            cs[j] = sum;
        }
    }
}

void nk_gemm_bf16_pack_b_mt(int nthreads, int tb, int K, int N, const float *B, int ldb,
                            uint16_t *dst)
{
    bf16_pack_b_mt(nthreads, tb, K, N, B, ldb, dst, NULL);
}

void nk_gemm_bf16_pack_b_sum_mt(int nthreads, int K, int N, const float *B, int ldb, uint16_t *dst,
                                float *colsum)
{
    bf16_pack_b_mt(nthreads, 0, K, N, B, ldb, dst, colsum);
}

size_t nk_gemm_bf16_ws_floats(int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    // One packed A block (BMC x BKC bf16 = BMC * BKC / 2 words) per thread.
    return (size_t)nthreads * ((size_t)BMC * BKC / 2 + (size_t)BMC * BJC + 2 * WS_ALIGN_FLOATS) +
           WS_ALIGN_FLOATS;
}

// Where A's rows come from: a row-major matrix, or (d != NULL) the patches of an NHWC x.
typedef struct bf16_src {
    const float *A;
    int64_t lda;
    const nk_conv_desc *d;
    const float *x;
    const uint32_t *xb; // x rounded to bf16 (pairs along C): read unpacked when not NULL
    const uint32_t *ab; // A already bf16, row-major, ldab pair words a row (K even): unpacked
    int64_t ldab;
    int at; // A stored transposed: element (m, k) at A[k*lda + m]
} bf16_src;

// Zero pairs for padding taps (segments are at most BKC/2 pairs long).
static const uint32_t zero_pairs[BKC / 2] __attribute__((aligned(64)));

// The bf16 twin of conv_rows: segments of k [pc, pc + kc) inside one filter tap, in pairs, and
// the row pointers into xb (pair words), rows[(ir/mr * nseg + s) * mr + i]. Returns nseg.
static int bf16_conv_rows(const bf16_src *s, int mr, int64_t row0, int mc, int pc, int kc,
                          int *segp, const uint32_t **rows)
{
    const nk_conv_desc *d = s->d;
    int nseg              = 0, segk[BKC / 2 + 1];
    for (int k = pc; k < pc + kc;) {
        const int c0 = k % d->C, len0 = d->C - c0, left = pc + kc - k;
        const int len = len0 < left ? len0 : left;
        segk[nseg]    = k;
        segp[nseg++]  = len / 2; // C and pc even: every segment is whole pairs
        k += len;
    }
    conv_tap tap[BKC / 2 + 1];
    for (int t = 0; t < nseg; t++)
        tap[t] = conv_tap_of(d, segk[t]);
    conv_pos at = conv_pos_at(d, row0);
    for (int i0 = 0; i0 < mc; i0 += mr) {
        const uint32_t **rp = rows + (int64_t)(i0 / mr) * nseg * mr;
        for (int i = 0; i < mr; i++) {
            if (i0 + i >= mc) {
                for (int t = 0; t < nseg; t++)
                    rp[t * mr + i] = zero_pairs;
                continue;
            }
            for (int t = 0; t < nseg; t++) { // C and c0 even: offsets halve into pair words
                const int64_t o = conv_read_at(d, &at, &tap[t]);
                rp[t * mr + i]  = o >= 0 ? s->xb + o / 2 : zero_pairs;
            }
            conv_pos_next(d, &at);
        }
    }
    return nseg;
}

// The row pointers of A already in bf16 (s->ab): one segment of kc/2 pairs a row. Returns 1.
static int bf16_ab_rows(const bf16_src *s, int mr, int64_t row0, int mc, int pc, int kc, int *segp,
                        const uint32_t **rows)
{
    segp[0] = kc / 2;
    for (int i0 = 0; i0 < mc; i0 += mr)
        for (int i = 0; i < mr; i++)
            rows[i0 + i] = i0 + i < mc ? s->ab + (row0 + i0 + i) * s->ldab + pc / 2 : zero_pairs;
    return 1;
}

// The row pointers of an unpacked A (s->xb or s->ab) for rows [row0, row0 + mc) x k [pc, pc + kc).
static int bf16_unpacked_rows(const bf16_src *s, int mr, int64_t row0, int mc, int pc, int kc,
                              int *segp, const uint32_t **rows)
{
    return s->xb ? bf16_conv_rows(s, mr, row0, mc, pc, kc, segp, rows)
                 : bf16_ab_rows(s, mr, row0, mc, pc, kc, segp, rows);
}

// One unit of a bf16-output GEMM (rows [i0, i0 + mcb), columns [j0, j0 + ncb)): BMC x BJC
// blocks summed over every k block in the float32 staging tile, then finished (epilogue, bf16
// rounding) into Cb. A is unpacked.
static void bf16_unit_out(const nk_bf16_kernel *kr, const bf16_src *s, int64_t i0, int mcb, int j0,
                          int ncb, int K, const uint32_t *B32, const float *bias,
                          const nk_epilogue *ep, uint16_t *Cb, int ldc, uint32_t *abuf,
                          float *stage, int pfa)
{
    const int Kp = (K + 1) / 2, MR = kr->mr;
    const float *sc      = ep ? ep->scale : NULL;
    const uint16_t *resb = ep ? ep->residual_bf16 : NULL;
    for (int ic = 0; ic < mcb; ic += BMC) {
        const int mcc     = mcb - ic < BMC ? mcb - ic : BMC;
        const int64_t row = i0 + ic;
        for (int jc = 0; jc < ncb; jc += BJC) {
            const int jce = ncb - jc < BJC ? ncb - jc : BJC;
            if (K <= 0)
                for (int i = 0; i < mcc; i++)
                    memset(stage + (int64_t)i * BJC, 0, sizeof(float) * (size_t)jce);
            for (int pc = 0; pc < K; pc += BKC) {
                const int kcb = K - pc < BKC ? K - pc : BKC;
                int segp[BKC / 2 + 1];
                const uint32_t **rows = (const uint32_t **)abuf;
                const int nseg        = bf16_unpacked_rows(s, MR, row, mcc, pc, kcb, segp, rows);
                // The last k block finishes in the micro-kernel where it can (fused).
                const int fuse = kr->ukr_rows_fin && pc + kcb >= K;
                for (int j = jc; j < jc + jce; j += BNR) {
                    const int n = jc + jce - j < BNR ? jc + jce - j : BNR;
                    const uint32_t *bp =
                        B32 + (int64_t)((j0 + j) / BNR) * Kp * BNR + (int64_t)(pc / 2) * BNR;
                    const int jj = j0 + j, pf = pfa && j == 0; // the rows' first panel here
                    for (int ir = 0; ir < mcc; ir += MR) {
                        const uint32_t *const *rr = rows + (int64_t)(ir / MR) * nseg * MR;
                        float *st                 = stage + (int64_t)ir * BJC + (j - jc);
                        const float beta          = pc == 0 ? 0.0f : 1.0f;
                        const int m               = mcc - ir < MR ? mcc - ir : MR;
                        if (!fuse) {
                            kr->ukr_rows(nseg, segp, rr, bp, st, BJC, beta, m, n, pf);
                            continue;
                        }
                        const int64_t off         = (row + ir) * ldc + jj;
                        const nk_bf16_fin_args fa = {
                            .bias = bias ? bias + jj : NULL,
                            .sc   = sc ? sc + jj : NULL,
                            .sh   = sc ? ep->shift + jj : NULL,
                            .resb = resb ? resb + off : NULL,
                            .ldr  = ldc,
                            .relu = ep && ep->relu,
                            .yb   = Cb + off,
                            .ldy  = ldc,
                        };
                        kr->ukr_rows_fin(nseg, segp, rr, bp, st, BJC, beta, m, n, pf, &fa);
                    }
                }
            }
            if (kr->ukr_rows_fin && K > 0) continue; // finished above
            for (int ir = 0; ir < mcc; ir += MR) {
                const int64_t off = (row + ir) * ldc + j0 + jc;
                kr->fin(stage + (int64_t)ir * BJC, BJC, mcc - ir < MR ? mcc - ir : MR, jce,
                        bias ? bias + j0 + jc : NULL, sc ? sc + j0 + jc : NULL,
                        sc ? ep->shift + j0 + jc : NULL, resb ? resb + off : NULL, ldc,
                        ep && ep->relu, Cb + off, ldc);
            }
        }
    }
}

// bf16_pack_a prefetches the next panel's rows of a row-major A, the same 32 k, while a chunk
// packs, when the rows are at least this many floats long: the packer reads 128 bytes of each
// of 12 rows a lda apart, which the hardware's prefetch does not follow. Measured (2 threads,
// the forms alternating call by call in one process, best of 21): M = 50176, N = 64, K = 256
// (conv2's reduce in bf16 training) 7.69 -> 6.86 ms; N = 128, K = 512 5.37 -> 5.13; N = 512,
// K = 128 4.49 -> 4.42; rows of 64 floats (contiguous enough) -1.5 .. +6 %, left out; two panels
// ahead no better than one.
int nk_bf16_pack_pf_min_ld = 128;

// Packs rows [row0, row0 + mc) x k [pc, pc + kc) of A into panels of MR rows (kc rounded up to
// pairs), through the kernel's chunk packer.
static void bf16_pack_a(const nk_bf16_kernel *kr, const bf16_src *s, int64_t row0, int mc, int pc,
                        int kc, uint32_t *abuf)
{
    const int kp = (kc + 1) / 2, MR = kr->mr;
    // Implicit GEMM: each 32-k chunk's tap once per call, the rows' pixels stepped (conv_rows).
    const nk_conv_desc *d = s->d;
    conv_tap tap[BKC / 32 + 1];
    conv_pos at = {0, 0, 0};
    if (d && !s->at) {
        for (int k = 0; k < kc; k += 32)
            tap[k / 32] = conv_tap_of(d, pc + k);
        at = conv_pos_at(d, row0);
    }
    for (int i0 = 0; i0 < mc; i0 += MR) {
        uint32_t *dst = abuf + (int64_t)(i0 / MR) * kp * MR;
        const int m   = mc - i0 < MR ? mc - i0 : MR;
        const float *src[NK_BF16_MR_MAX];
        if (s->at) {
            kr->pack_t(s->A + (int64_t)pc * s->lda + row0 + i0, s->lda, m, kc, dst);
            continue;
        }
        if (!s->d) {
            for (int i = 0; i < MR; i++)
                src[i] = i < m ? s->A + (row0 + i0 + i) * s->lda + pc : NULL;
            // The next panel's rows, the same 32 k: fetched while this chunk packs.
            const int mn     = s->lda < nk_bf16_pack_pf_min_ld ? 0
                               : mc - i0 - MR < MR             ? mc - i0 - MR
                                                               : MR;
            const float *nxt = mn > 0 ? s->A + (row0 + i0 + MR) * s->lda + pc : NULL;
            for (int k = 0; k < kc; k += 32) {
                for (int i = 0; i < mn; i++) {
                    __builtin_prefetch(nxt + i * s->lda + k, 0, 3);
                    if (k + 16 < kc) __builtin_prefetch(nxt + i * s->lda + k + 16, 0, 3);
                }
                kr->pack(src, kc - k < 32 ? kc - k : 32, dst + (k / 2) * MR);
                for (int i = 0; i < m; i++)
                    src[i] += 32;
            }
            continue;
        }
        conv_pos px[NK_BF16_MR_MAX]; // the panel's rows' pixels
        for (int i = 0; i < m; i++) {
            px[i] = at;
            conv_pos_next(d, &at);
        }
        for (int k = 0; k < kc; k += 32) {
            for (int i = 0; i < MR; i++) {
                const int64_t o = i < m ? conv_read_at(d, &px[i], &tap[k / 32]) : -1;
                src[i]          = o >= 0 ? s->x + o : NULL;
            }
            kr->pack(src, kc - k < 32 ? kc - k : 32, dst + (k / 2) * MR);
        }
    }
}

// The bf16 row kernels prefetch A's rows on their first column panel (later panels find them in
// L2) when A holds at least this many bytes. Measured (bench conv --dtype bf16, builds
// alternating, 5-7 rounds): conv2's reduce (25.7 MB of rows) 15 % faster with the prefetch;
// conv4's and conv5's (1.6-6.4 MB, rows of 512 B - 4 KiB that the previous layer left in L2/L3)
// 2-7 % slower, conv3's no different. conv1's patch rows, gathered by the same thread into its
// L2 just before (conv.c's bf16 blocks), run the same with or without it (13.3 ms, 9 rounds).
int64_t nk_bf16_rows_pf_min_bytes = 4 << 20;

// C (float32) or Cb (bf16, when not NULL; beta must be 0 and A unpacked: s->xb or s->ab) =
// A Bp + beta C, then the epilogue (its residual float32, or bf16 from ep->residual_bf16 with A
// unpacked).
static void gemm_bf16_run(nk_bf16_impl impl, const nk_exec *ex, int M, int N, int K,
                          const bf16_src *s, const uint16_t *Bp, float beta, float *C, int ldc,
                          const float *bias, const nk_epilogue *ep, uint16_t *Cb)
{
    if (M <= 0 || N <= 0) return;
    const uint16_t *resb = ep ? ep->residual_bf16 : NULL;
    const int relu       = ep && ep->relu;
    const int any_epi    = bias || relu || (ep && (ep->scale || ep->residual));
    int nt               = ex && ex->nthreads > 0 ? ex->nthreads : 1;
    if (2.0 * M * N * (double)K < GEMM_MIN_FLOPS_PER_THREAD * nt) nt = 1;
    const nk_bf16_kernel *kr = bf16_kernel_for(impl);
    const int MR             = kr->mr;
    if (K <= 0 && !Cb && !resb) {
        scale_c(nt, M, N, beta, C, ldc, bias, ep);
        return;
    }
    // The float32 epilogue of the best ISA here (AVX-512 on every AVX512_BF16 CPU).
    const nk_tile_epi_fn epi =
        kernel_for(NK_ISA_AVX512)->epi ? kernel_for(NK_ISA_AVX512)->epi : tile_epi_c;
    // B needs no block limit here (it is packed already): nc = N leaves the grid free.
    const nk_gemm_kernel shape = {.mr = kr->mr, .nr = BNR, .mc = BMC, .kc = BKC, .nc = N};
    const int unpacked         = s->xb || s->ab;
    // Unpacked rows are prefetched on their first column panel when A is large (see
    // nk_bf16_rows_pf_min_bytes).
    const int64_t a_bytes = s->xb   ? (int64_t)s->d->N * s->d->H * s->d->W * s->d->C * 2
                            : s->ab ? (int64_t)M * s->ldab * 4
                                    : 0;
    const int pfa         = a_bytes >= nk_bf16_rows_pf_min_bytes;
    const gemm_units u    = plan_units(&shape, M, N, K, nt, unpacked ? 0.25 : 1.0, 0.25);
    const int total       = u.m_units * u.n_units;
    if (nt > total) nt = total;
    const int Kp            = (K + 1) / 2;
    const uint32_t *B32     = (const uint32_t *)Bp;
    float *ws               = align64(ex->ws);
    const size_t per_thread = (size_t)BMC * BKC / 2 + (size_t)BMC * BJC + 2 * WS_ALIGN_FLOATS;
    int next                = 0;

#pragma omp parallel num_threads(nt)
    {
        float *mine    = ws + (size_t)omp_get_thread_num() * per_thread;
        uint32_t *abuf = (uint32_t *)align64(mine);
        float *stage   = align64(mine + (size_t)BMC * BKC / 2 + WS_ALIGN_FLOATS);
        for (;;) {
            const int unit = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
            if (unit >= total) break;
            const int64_t i0 = (int64_t)(unit / u.n_units) * u.mc_u;
            const int j0     = (unit % u.n_units) * u.nc_u;
            const int mcb    = (int)(M - i0 < u.mc_u ? M - i0 : u.mc_u);
            const int ncb    = N - j0 < u.nc_u ? N - j0 : u.nc_u;
            if (Cb) {
                bf16_unit_out(kr, s, i0, mcb, j0, ncb, K, B32, bias, ep, Cb, ldc, abuf, stage, pfa);
                continue;
            }
            for (int pc = 0; pc < K; pc += BKC) {
                const int kcb = K - pc < BKC ? K - pc : BKC, kp = (kcb + 1) / 2;
                const int first = pc == 0, last = pc + kcb == K;
                const float beta_eff = first ? beta : 1.0f;
                for (int ic = 0; ic < mcb; ic += BMC) {
                    const int mcc         = mcb - ic < BMC ? mcb - ic : BMC;
                    const int64_t row     = i0 + ic;
                    int nseg              = 0, segp[BKC / 2 + 1];
                    const uint32_t **rows = (const uint32_t **)abuf; // pointers, not panels
                    if (unpacked)
                        nseg = bf16_unpacked_rows(s, MR, row, mcc, pc, kcb, segp, rows);
                    else
                        bf16_pack_a(kr, s, row, mcc, pc, kcb, abuf);
                    for (int j = 0; j < ncb; j += BNR) {
                        const int n = ncb - j < BNR ? ncb - j : BNR;
                        const uint32_t *bp =
                            B32 + (int64_t)((j0 + j) / BNR) * Kp * BNR + (int64_t)(pc / 2) * BNR;
                        for (int ir = 0; ir < mcc; ir += MR) {
                            const int m = mcc - ir < MR ? mcc - ir : MR;
                            float *c    = C + (row + ir) * ldc + j0 + j;
                            if (unpacked)
                                kr->ukr_rows(nseg, segp, rows + (int64_t)(ir / MR) * nseg * MR, bp,
                                             c, ldc, beta_eff, m, n, pfa && j == 0);
                            else
                                kr->ukr(kp, abuf + (int64_t)ir * kp, bp, c, ldc, beta_eff, m, n);
                            if (last && resb)
                                kr->fin(c, ldc, m, n, bias ? bias + j0 + j : NULL,
                                        ep->scale ? ep->scale + j0 + j : NULL,
                                        ep->scale ? ep->shift + j0 + j : NULL, resb + (c - C), ldc,
                                        relu, NULL, 0);
                            else if (last && any_epi)
                                epi(c, ldc, m, n, bias ? bias + j0 + j : NULL,
                                    ep && ep->scale ? ep->scale + j0 + j : NULL,
                                    ep && ep->scale ? ep->shift + j0 + j : NULL,
                                    ep && ep->residual ? ep->residual + (c - C) : NULL, relu);
                        }
                    }
                }
            }
        }
    }
}

void nk_gemm_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, int M, int N, int K, const float *A,
                      int lda, const uint16_t *Bp, float beta, float *C, int ldc, const float *bias,
                      const nk_epilogue *ep)
{
    const bf16_src s = {.A = A, .lda = lda};
    gemm_bf16_run(impl, ex, M, N, K, &s, Bp, beta, C, ldc, bias, ep, NULL);
}

void nk_bf16_convert_mt(nk_bf16_impl impl, int nthreads, int64_t n, const float *x, uint16_t *y)
{
    const nk_bf16_kernel *kr = bf16_kernel_for(impl);
    const int64_t chunk      = 1 << 16;
    int nt                   = nthreads > 0 ? nthreads : 1;
    if (n < 4 * chunk) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i += chunk)
        kr->convert(n - i < chunk ? n - i : chunk, x + i, y + i);
}

void nk_gemm_bf16_rows_cpu(nk_bf16_impl impl, const nk_exec *ex, int M, int N, int K,
                           const uint16_t *A, int lda, const uint16_t *Bp, float *C, uint16_t *Cb,
                           int ldc, const float *bias, const nk_epilogue *ep)
{
    const bf16_src s = {.ab = (const uint32_t *)A, .ldab = lda / 2};
    gemm_bf16_run(impl, ex, M, N, K, &s, Bp, 0.0f, C, ldc, bias, ep, Cb);
}

void nk_gemm_bf16_at_cpu(nk_bf16_impl impl, const nk_exec *ex, int M, int N, int K, const float *A,
                         int lda, const uint16_t *Bp, float beta, float *C, int ldc)
{
    const bf16_src s = {.A = A, .lda = lda, .at = 1};
    gemm_bf16_run(impl, ex, M, N, K, &s, Bp, beta, C, ldc, NULL, NULL, NULL);
}

void nk_gemm_bf16_conv_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                           const float *x, uint16_t *xb, const uint16_t *wp, const float *b,
                           const nk_epilogue *ep, float *y, uint16_t *yb)
{
    // Round x to bf16 once (each element is then read by up to R*S taps without converting);
    // x NULL: xb holds the input already.
    if (xb && x)
        nk_bf16_convert_mt(impl, ex && ex->nthreads > 0 ? ex->nthreads : 1,
                           (int64_t)d->N * d->H * d->W * d->C, x, xb);
    const bf16_src s = {.d = d, .x = x, .xb = (const uint32_t *)xb};
    gemm_bf16_run(impl, ex, d->N * d->P * d->Q, d->K, d->R * d->S * d->C, &s, wp, 0.0f, y, d->K, b,
                  ep, yb);
}
