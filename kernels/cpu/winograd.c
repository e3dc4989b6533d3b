/*
 * winograd.c: 3x3 stride-1 'same' convolutions by Winograd's minimal filtering F(4x4, 3x3)
 * (Lavin and Gray, 2016). Each 4x4 output tile comes from a 6x6 input tile d (4x4 strided,
 * overlapping by 2): y = A^T [ (G g G^T) . (B^T d B) ] A, summed over the input channels. The
 * product . is elementwise over the 36 points e of the 6x6 transform domain, so the channel sum
 * becomes 36 independent GEMMs M_e[tiles, K] = V_e[tiles, C] U_e[C, K]: 36 multiply-adds per tile
 * and channel pair where the direct convolution needs 16 * 9 = 144, i.e. 4x fewer, for transforms
 * that cost O(C + K) per tile.
 *
 * Layout. U (the transformed weights: packed once for inference, transformed per call in
 * training) is stored as 36 B matrices packed for the CPU's micro-kernel (nk_wino_kernel's gemm:
 * panels of NR columns over all C, 64 with AVX-512, 16 with AVX2). A work unit is a block of
 * WINO_TB tiles x a block of output channels: per NR-wide panel it runs the 36 small GEMMs from
 * V[e][tile][C] into a per-thread M[e][tile][NR] (L2) through the same batch-reduce micro-kernel as
 * the implicit GEMM (ukr_rows, one segment of C), then the output transform with the fused epilogue
 * writes y. Where one unit covers all K (local_v), it transforms its own tiles into a per-thread V
 * first; otherwise the tiles go a chunk at a time, all threads transforming the chunk into a shared
 * V (L3) before the units run, so that no tile is transformed once per channel block. The
 * transforms are in winograd_avx512.c and winograd_avx2.c (the same arithmetic, 16 or 8 channels a
 * vector); the specification is the direct convolution (kernels/ref/conv2d.c), and tests/test_ops.c
 * compares.
 *
 * Accuracy: the transforms multiply by up to 8 and divide by up to 24, so float32 rounding grows
 * by about one decimal digit against the direct sum (test_ops: max error 2e-4 against 2e-5 on
 * 576-term sums of values in [-1, 1]); the whole network's logit moves by under 1e-6 relative
 * (`pneumo bench model`'s check) and stays within tests/test_fixtures.c's PyTorch tolerances.
 *
 * In training the forward's error moves the batch statistics a little: against PyTorch on
 * tests/test_fixtures.c's small batch-2 network the worst BN gradient's relative error grows from
 * 0.5 % to 1.5 % (its tolerance is 2 %); the backward passes by Winograd add nothing measurable.
 *
 * Speed (batch 16, 2 Zen 4 threads, `pneumo bench conv`): ResNet50's four 3x3 shapes 7.9-8.8 ms
 * against 18-20.5 ms as implicit GEMMs, i.e. 2.2-2.5x; oneDNN 2.6's jit_wino_4x3 in its own
 * blocked layouts took 6.4-8.7 ms (about 1.1-1.25x faster, bench/RESULTS.md; at batch 16 the
 * input and output transforms here are bound by memory traffic, 40 % of conv2's time). Backward
 * data 8.9-10.6 ms against 19.4-32.7 (conv5's, whose U is 4x its 9 MB of weights and is
 * transformed per call, 13.6 against 22.5: U is transformed straight from the filter, turned and
 * transposed 16 x 16 in registers, written panel by panel); weight gradient 10.1-14.6 ms against
 * 20.7-22.6 (conv5's 13.4-14.4 against 22.3: its M_e are a cache line apart, not 1 MiB).
 */
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"

#define WINO_E 36 // points of the 6x6 transform domain
// Tiles per work unit (whole micro-tiles of MR rows: 12, now 6). 24 rather than 48 since the
// buffers are huge pages: conv2's 3x3 (56 x 56, C = 64) at batch 16, best of 11 with the builds
// alternating, forward 7.83-9.11 -> 7.54-8.80 ms, input gradient 7.94-9.01 -> 7.55-8.76;
// conv3's-conv5's and batch 1 within the noise.
#define WINO_TB 24
// Output channels per work unit: 128 (2 panels of AVX-512's 64, 8 of AVX2's 16).
#ifndef WINO_KB_CH
#    define WINO_KB_CH 128
#endif
#define WINO_MAX_MR 16
// V chunk target: 2 Mi floats (8 MiB) stays in L3 between the input transform and the GEMMs.
size_t nk_wino_chunk_floats = 2u << 20;

static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

// The transforms and GEMM of this CPU (NULL: none).
static const nk_wino_kernel *wk(void)
{
    const nk_isa have = nk_cpu_detect();
    return have >= NK_ISA_AVX512 ? &nk_wino_kernel_avx512
           : have >= NK_ISA_AVX2 ? &nk_wino_kernel_avx2
                                 : NULL;
}

int nk_wino_ok(nk_isa isa, const nk_conv_desc *d)
{
    const nk_wino_kernel *k = wk();
    return k && isa >= k->isa && k->gemm->mr <= WINO_MAX_MR && d->R == 3 && d->S == 3 &&
           d->stride == 1 && d->pad_h == 1 && d->pad_w == 1 && d->P == d->H && d->Q == d->W &&
           d->C % 16 == 0 && d->K % 16 == 0;
}

// Floats of one point's packed U_e: ceil(K / NR) panels of C x NR.
static size_t packed_e_floats(const nk_conv_desc *d)
{
    const int NR = wk()->gemm->nr;
    return (size_t)((d->K + NR - 1) / NR) * NR * d->C;
}

size_t nk_wino_packed_floats(const nk_conv_desc *d)
{
    return WINO_E * packed_e_floats(d);
}

// U of at least this many bytes is written with non-temporal stores: without a read for
// ownership of every line of its 36 store streams first. Training transforms U at every forward
// and input gradient (the weights change), so this is per step. bench conv, alternating, batch
// 16: conv5's 3x3 (U 38 MB) fwd-train 12.8 -> 10.3 ms, bwd-data 13.2 -> 9.8; conv4's (9.4 MB)
// 0.93x and 0.75x; conv3's (2.4 MB) fwd-train 0.87x but bwd-data 1.03x and conv2's (0.6 MB)
// 0.94x / 1.03x, so those stay cached. The all-layer training step 0.97x (7 of 8 rounds), the
// fine-tuning step 0.986x (7 of 8).
size_t nk_wino_nt_min_bytes = 4u << 20;

// Whether to stream U (pe, the floats of one point's U_e, is whole NR-wide panels, so every
// 16-float store stays 64-byte aligned when dst is).
static int wino_nt(const float *dst, int64_t pe)
{
    return (double)WINO_E * pe * sizeof(float) >= (double)nk_wino_nt_min_bytes &&
           ((uintptr_t)dst & 63) == 0;
}

void nk_wino_pack(int nthreads, const nk_conv_desc *d, const float *w, float *dst)
{
    // Panel after panel (parallel), each written row (c) after row: 36 streams of stores, where
    // going across the panels row by row kept 36 x K/NR of them open (conv5's U at 2x the time).
    const nk_wino_kernel *k = wk();
    const int C = d->C, K = d->K, NR = k->gemm->nr, np = (K + NR - 1) / NR;
    const int64_t pe = (int64_t)packed_e_floats(d), ck = (int64_t)C * K;
    const int nt = wino_nt(dst, pe);
#pragma omp parallel num_threads(nthreads > 0 ? nthreads : 1)
    {
#pragma omp for schedule(static)
        for (int p = 0; p < np; p++) {
            float *panel = dst + (int64_t)p * C * NR;
            const int n  = K - p * NR < NR ? K - p * NR : NR;
            for (int c = 0; c < C; c++) {
                for (int j = 0; j < n; j += 16)
                    k->wt(w + (int64_t)c * K + p * NR + j, ck, panel + (int64_t)c * NR + j, pe, nt);
                if (n < NR) // the last panel's columns past K
                    for (int e = 0; e < WINO_E; e++)
                        memset(panel + e * pe + (int64_t)c * NR + n, 0,
                               (size_t)(NR - n) * sizeof(float));
            }
        }
        nk_nt_fence(nt);
    }
}

void nk_wino_pack_flipped(int nthreads, const nk_conv_desc *d, const float *w, float *dst)
{
    // The turned convolution's U_e has K rows (its input channels) and C columns in panels of
    // NR; each panel (parallel) is written row after row, two 16 x 16 blocks of w at a time.
    const nk_wino_kernel *k = wk();
    const int C = d->C, K = d->K, NR = k->gemm->nr, np = (C + NR - 1) / NR;
    const int64_t pe = (int64_t)np * NR * K, ck = (int64_t)C * K;
    const int nt = wino_nt(dst, pe);
#pragma omp parallel num_threads(nthreads > 0 ? nthreads : 1)
    {
#pragma omp for schedule(static)
        for (int p = 0; p < np; p++) {
            float *panel = dst + (int64_t)p * K * NR;
            const int n  = C - p * NR < NR ? C - p * NR : NR;
            for (int k0 = 0; k0 < K; k0 += 16) {
                for (int i = 0; i < n; i += 16)
                    k->wt_flip(w + (int64_t)(p * NR + i) * K + k0, K, ck,
                               panel + (int64_t)k0 * NR + i, NR, pe, nt);
                if (n < NR) // the last panel's columns past C
                    for (int e = 0; e < WINO_E; e++)
                        for (int j = 0; j < 16; j++)
                            memset(panel + e * pe + (int64_t)(k0 + j) * NR + n, 0,
                                   (size_t)(NR - n) * sizeof(float));
            }
        }
        nk_nt_fence(nt);
    }
}

// Tiles per chunk when each tile takes per_tile floats: about nk_wino_chunk_floats, a multiple
// of unit (at least one), the chunks of equal size.
static int64_t chunk_tiles(int64_t tiles, int64_t per_tile, int64_t unit)
{
    int64_t tc = (int64_t)nk_wino_chunk_floats / per_tile / unit * unit;
    if (tc < unit) tc = unit;
    if (tc >= tiles) return tiles;
    const int64_t nch = (tiles + tc - 1) / tc;
    tc                = (tiles + nch - 1) / nch;
    return (tc + unit - 1) / unit * unit;
}

// The forward's shared V chunk: whole work units of V[36][tile][C].
static int64_t fwd_chunk_tiles(const nk_conv_desc *d, int64_t tiles)
{
    return chunk_tiles(tiles, (int64_t)WINO_E * d->C, WINO_TB);
}

static int64_t tiles_of(const nk_conv_desc *d)
{
    return (int64_t)d->N * ((d->P + 3) / 4) * ((d->Q + 3) / 4);
}

// Whether each work unit transforms its own tiles into a per-thread V (one unit covers all K, so
// nothing is transformed twice, and V never leaves the core's L2): the alternative, a shared V
// chunk that all threads fill before any GEMM, measured 16.8 ms against 7.9 ms on conv2's 3x3
// (C = K = 64, batch 16), where the GEMMs are too short to hide reading V from L3.
// A unit also covers all of K up to WINO_LOCAL_CH channels when the batch has at least
// WINO_LOCAL_UNITS tile blocks (enough units for any thread count to share; the decision must
// not depend on the threads, since the workspace query sizes V by it): conv3's 3x3 (K = 128) at
// batch 16, builds alternating, best of 11: forward 6.95-7.01 -> 6.32-6.39 ms, input gradient
// 7.40-7.61 -> 6.46-6.65; 128 px, batch 32 forward 4.57 -> 4.12-4.20, input gradient 5.04 ->
// 4.22-4.43; at batch 1 (3 units) it was 10-16 % slower, hence the floor (8 units: 192 tiles,
// measured no worse than the shared V there). Up to 8 panels (conv4's K = 256) gained 0-6 %
// with V at 864 KiB of the 1 MiB L2: left at 4. Those panels were 32 wide (the 12 x 32 tile);
// with 6 x 64 (4cea066), 4 panels cover K = 256, so conv4's 3x3 now takes the local V as well
// (and a unit 128 channels): the tile change's run had conv4's 3x3 8.0 -> 7.0 ms in the forward
// and 8.7 -> 7.9 in the input gradient. Both bounds were first counted in panels; with AVX2's
// 16-wide panels that meant units of 32 channels and the local V only up to K = 64. Counted in
// channels (the same for AVX-512), on Zen 3 with AVX2 (batch 16, `pneumo bench conv --shape`,
// best of 5 alternating): conv3's 3x3 forward 13.8 -> 10.4 ms, input gradient 14.4 -> 12.5;
// conv4's 17.0 -> 13.2 and 19.8 -> 16.3 (V at 864 KiB, past the 512 KiB L2, still faster);
// conv5's (K = 512, the shared V) within the noise; the inference step 0.964x.
#ifndef WINO_LOCAL_CH
#    define WINO_LOCAL_CH 256
#endif
#define WINO_LOCAL_UNITS 8
// ch channels in whole NR-wide panels (at least one): WINO_KB_CH and WINO_LOCAL_CH for a table.
static int whole_panels(int ch, int nr)
{
    return ch > nr ? ch / nr * nr : nr;
}

static int local_v(const nk_conv_desc *d)
{
    const int nr = wk()->gemm->nr;
    return d->K <= whole_panels(WINO_KB_CH, nr) ||
           (d->K <= whole_panels(WINO_LOCAL_CH, nr) &&
            tiles_of(d) >= (int64_t)WINO_LOCAL_UNITS * WINO_TB);
}

// Output-channel splits of the local path's units (whole panels): enough for every thread to
// have a unit when there are fewer tile blocks than threads, else none. At batch 1 a 128 px
// image's conv3 3x3 (16 tiles, one block) ran on one thread while the other waited: split in
// two, bench conv 0.67x the time (8 of 8 rounds, `sh bench/ab.sh`); in the 128 px inference at
// batch 1 (`--profile`, 3 runs alternating) the four took 2.5-3.0 -> 1.7-2.1 ms, about 3 % of
// the step, which the step's noise hides. With two blocks or more each thread already streams its
// own copy of the transformed weights, which such small blocks are bound by, and splits measured no
// better: conv3's at batch 2 0.99x, conv2's at batch 1 (3 blocks) 0.96x, while each split
// transforms its tile block again. The sums per output are the same whatever the split, so the
// result does not depend on the thread count.
static int k_splits(int64_t ntb, int nt, int np)
{
    if (ntb >= nt) return 1;
    const int s = (int)((nt + ntb - 1) / ntb);
    return s < np ? s : np;
}

// Per-thread floats: M, and V when local_v.
static size_t thread_floats(const nk_conv_desc *d)
{
    const size_t m = round16((size_t)WINO_E * WINO_TB * wk()->gemm->nr);
    return m + (local_v(d) ? round16((size_t)WINO_E * WINO_TB * d->C) : 0);
}

size_t nk_wino_ws_floats(const nk_conv_desc *d, int nthreads)
{
    const size_t v =
        local_v(d) ? 0 : round16((size_t)WINO_E * fwd_chunk_tiles(d, tiles_of(d)) * d->C);
    return 16 + v + (size_t)(nthreads > 0 ? nthreads : 1) * thread_floats(d);
}

// The start of ex->ws rounded up to 64 bytes (the *_ws_floats queries add 16 floats for it).
static float *ws_start(const nk_exec *ex)
{
    return (float *)(((uintptr_t)ex->ws + 63) & ~(uintptr_t)63);
}

typedef struct wino_run {
    const nk_wino_kernel *k; // this CPU's transforms and GEMM
    const nk_conv_desc *d;
    const float *x, *up, *b, *sc, *sh, *res;
    const uint16_t *xb; // bf16 input instead of x
    float *y;
    uint16_t *yb;      // bf16 output instead of y
    int relu, tw, thw; // tiles per row of the output, per image
    size_t pe;         // floats of one packed U_e
} wino_run;

// The tile grid of d's output: 4x4 tiles, the last row and column ragged.
static wino_run grid(const nk_conv_desc *d)
{
    return (wino_run){
        .k = wk(), .d = d, .tw = (d->Q + 3) / 4, .thw = (d->P + 3) / 4 * ((d->Q + 3) / 4)};
}

// Tile g of the batch: its image, and its output corner (oh, ow); the input tile starts at
// (oh - pad_h, ow - pad_w).
static int64_t tile_at(const wino_run *r, int64_t g, int *oh, int *ow)
{
    const int t = (int)(g % r->thw);
    *oh         = t / r->tw * 4;
    *ow         = t % r->tw * 4;
    return g / r->thw;
}

// Transforms tiles [g0, g0 + n) into V: tile g0 + t at v + t * C, point e ves floats further.
static void in_tiles(const wino_run *r, int64_t g0, int64_t n, float *v, int64_t ves)
{
    const nk_conv_desc *d = r->d;
    for (int64_t t = 0; t < n; t++) {
        int oh, ow;
        const int64_t o = tile_at(r, g0 + t, &oh, &ow) * d->H * d->W * d->C;
        if (r->xb)
            r->k->in_bf16(r->xb + o, d->H, d->W, d->C, oh - d->pad_h, ow - d->pad_w, v + t * d->C,
                          ves);
        else
            r->k->in(r->x + o, d->H, d->W, d->C, oh - d->pad_h, ow - d->pad_w, v + t * d->C, ves);
    }
}

// One work unit: tiles [g0, g0 + tbn) (tbn <= WINO_TB, transformed at v as in_tiles wrote them)
// times output channels [k0, k1): per NR-wide panel, the 36 GEMMs into M, then the output
// transform and epilogue into y.
static void unit(const wino_run *r, const float *v, int64_t ves, int64_t g0, int tbn, int k0,
                 int k1, float *mb)
{
    const nk_gemm_kernel *kr = r->k->gemm;
    const nk_conv_desc *d    = r->d;
    const int MR = kr->mr, NR = kr->nr, C = d->C, K = d->K, P = d->P, Q = d->Q;
    for (int j = k0; j < k1; j += NR) {
        const int n = k1 - j < NR ? k1 - j : NR;
        for (int e = 0; e < WINO_E; e++) {
            const float *bp = r->up + e * r->pe + (int64_t)(j / NR) * C * NR;
            const float *ve = v + e * ves;
            for (int i = 0; i < tbn; i += MR) {
                const int m = tbn - i < MR ? tbn - i : MR;
                const float *rows[WINO_MAX_MR];
                for (int q = 0; q < MR; q++) // rows past m: read, never stored
                    rows[q] = ve + (int64_t)(i + (q < m ? q : 0)) * C;
                kr->ukr_rows(1, &C, rows, bp, mb + ((int64_t)e * WINO_TB + i) * NR, NR, 0.0f, m, n,
                             NULL);
            }
        }
        for (int i = 0; i < tbn; i++) {
            int oh, ow;
            const int64_t img = tile_at(r, g0 + i, &oh, &ow);
            const int64_t off = ((img * P + oh) * Q + ow) * K + j;
            r->k->out(mb + (int64_t)i * NR, (int64_t)WINO_TB * NR, n, r->yb ? NULL : r->y + off,
                      r->yb ? r->yb + off : NULL, (int64_t)Q * K, K, P - oh < 4 ? P - oh : 4,
                      Q - ow < 4 ? Q - ow : 4, r->b ? r->b + j : NULL, r->sc ? r->sc + j : NULL,
                      r->sc ? r->sh + j : NULL, r->res ? r->res + off : NULL, r->relu);
        }
    }
}

void nk_wino_fwd(const nk_exec *ex, const nk_conv_desc *d, const float *x, const uint16_t *xb,
                 const float *up, const float *b, const nk_epilogue *ep, float *y, uint16_t *yb)
{
    const int NR = wk()->gemm->nr, C = d->C, K = d->K;
    const int KB = whole_panels(WINO_KB_CH, NR), nkb = (K + KB - 1) / KB;
    const int64_t T  = tiles_of(d);
    const int local  = local_v(d);
    const int64_t TC = local ? WINO_TB : fwd_chunk_tiles(d, T);
    wino_run r       = grid(d);
    r.x = x, r.xb = xb, r.up = up, r.b = b, r.y = y, r.yb = yb, r.pe = packed_e_floats(d);
    r.sc = ep ? ep->scale : NULL, r.sh = ep ? ep->shift : NULL;
    r.res = ep ? ep->residual : NULL, r.relu = ep && ep->relu;
    float *V     = ws_start(ex);
    float *th0   = local ? V : V + round16((size_t)WINO_E * TC * C);
    const int nt = ex->nthreads > 0 ? ex->nthreads : 1;
#pragma omp parallel num_threads(nt)
    {
        float *mb = th0 + (size_t)omp_get_thread_num() * thread_floats(d);
        if (local) {
            float *vl         = mb + round16((size_t)WINO_E * WINO_TB * NR);
            const int64_t ntb = (T + WINO_TB - 1) / WINO_TB;
            const int np = (K + NR - 1) / NR, nks = k_splits(ntb, nt, np);
            int64_t held = -1; // the tile block in vl
#pragma omp for schedule(dynamic, 1)
            for (int64_t u = 0; u < ntb * nks; u++) {
                const int64_t g0 = u / nks * WINO_TB;
                const int s = (int)(u % nks), k0 = s * np / nks * NR;
                const int k1  = s + 1 == nks ? K : (s + 1) * np / nks * NR;
                const int tbn = (int)(T - g0 < WINO_TB ? T - g0 : WINO_TB);
                if (g0 != held) in_tiles(&r, g0, tbn, vl, (int64_t)WINO_TB * C);
                held = g0;
                unit(&r, vl, (int64_t)WINO_TB * C, g0, tbn, k0, k1, mb);
            }
        } else {
            for (int64_t t0 = 0; t0 < T; t0 += TC) {
                const int64_t tc = T - t0 < TC ? T - t0 : TC;
#pragma omp for schedule(dynamic, 1)
                for (int64_t t = 0; t < tc; t += 8)
                    in_tiles(&r, t0 + t, tc - t < 8 ? tc - t : 8, V + t * C, TC * C);
                const int64_t units = (tc + WINO_TB - 1) / WINO_TB * nkb;
#pragma omp for schedule(dynamic, 1)
                for (int64_t u = 0; u < units; u++) {
                    const int64_t tb0 = u / nkb * WINO_TB;
                    const int tbn     = (int)(tc - tb0 < WINO_TB ? tc - tb0 : WINO_TB);
                    const int k0 = (int)(u % nkb) * KB, k1 = K - k0 < KB ? K : k0 + KB;
                    unit(&r, V + tb0 * C, TC * C, t0 + tb0, tbn, k0, k1, mb);
                }
            }
        }
    }
}

// ---- weight gradient ----
//
// dW = G^T [ sum over tiles (A dY A^T) . (B^T D B) ] G (the forward's algorithm transposed, so
// the same B, with A and G swapping roles): per chunk of tiles all threads transform the input
// tiles into V (as the forward does) and the output-gradient tiles into Z, then the 36 sums
// M_e[C, K] += V_e^T Z_e, one point per thread at a time (chunks in order, so the result does not
// depend on the thread count), and at the end dW = G^T M G.

// Tiles per chunk: V (36 x tc x C) and Z (36 x tc x K) in about nk_wino_chunk_floats.
// Floats from one point's M_e to the next: C x K and a cache line, so that the output transform's
// 36 streams (and the GEMMs' stores) do not all fall in the same cache sets when C x K is a
// multiple of 16 Ki floats.
static int64_t wgrad_m_stride(const nk_conv_desc *d)
{
    return (int64_t)d->C * d->K + 16;
}

static int64_t wgrad_chunk_tiles(const nk_conv_desc *d, int64_t tiles)
{
    return chunk_tiles(tiles, (int64_t)WINO_E * (d->C + d->K), 16);
}

size_t nk_wino_wgrad_ws_floats(const nk_conv_desc *d, int nthreads)
{
    const size_t tc = (size_t)wgrad_chunk_tiles(d, tiles_of(d));
    return 16 + round16((size_t)WINO_E * wgrad_m_stride(d)) + round16(WINO_E * tc * d->C) +
           round16(WINO_E * tc * d->K) +
           (size_t)(nthreads > 0 ? nthreads : 1) * round16(nk_sgemm_ws_floats(1));
}

void nk_wino_wgrad(const nk_exec *ex, const nk_conv_desc *d, const float *x, const float *dy,
                   float *dw)
{
    const int C = d->C, K = d->K, P = d->P, Q = d->Q;
    const int64_t T = tiles_of(d), TC = wgrad_chunk_tiles(d, T), mes = wgrad_m_stride(d);
    wino_run r      = grid(d);
    r.x             = x;
    float *M        = ws_start(ex);
    float *V        = M + round16((size_t)WINO_E * mes);
    float *Z        = V + round16((size_t)WINO_E * TC * C);
    float *G0       = Z + round16((size_t)WINO_E * TC * K);
    const size_t g1 = round16(nk_sgemm_ws_floats(1));
    const int nt    = ex->nthreads > 0 ? ex->nthreads : 1;
#pragma omp parallel num_threads(nt)
    {
        // Each thread's GEMMs run single-threaded on its own scratch (packing where C, K are
        // large).
        const nk_exec one = {1, G0 + (size_t)omp_get_thread_num() * g1, g1, ex->conv_algo};
        for (int64_t t0 = 0; t0 < T; t0 += TC) {
            const int64_t tc = T - t0 < TC ? T - t0 : TC;
#pragma omp for schedule(dynamic, 8)
            for (int64_t t = 0; t < tc; t++) {
                int oh, ow;
                const int64_t img = tile_at(&r, t0 + t, &oh, &ow);
                in_tiles(&r, t0 + t, 1, V + t * C, TC * C);
                r.k->dy(dy + img * P * Q * K, P, Q, K, oh, ow, Z + t * K, TC * K);
            }
#pragma omp for schedule(dynamic, 1)
            for (int e = 0; e < WINO_E; e++)
                nk_sgemm_atb_cpu(r.k->isa, &one, C, K, (int)tc, V + e * TC * C, C, Z + e * TC * K,
                                 K, t0 == 0 ? 0.0f : 1.0f, M + e * mes, K);
        }
#pragma omp for schedule(static)
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K; k += 16)
                r.k->dw(M + (int64_t)c * K + k, mes, dw + (int64_t)c * K + k, (int64_t)C * K);
    }
}
