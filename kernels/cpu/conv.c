/*
 * conv.c: convolution through the GEMM drivers of gemm.c. NHWC x and HWIO w make the forward
 * pass y[N*P*Q, K] = col[N*P*Q, R*S*C] w[R*S*C, K] (+ bias). Where the ISA has a batch-reduce
 * micro-kernel and C % 16 == 0 (or filter rows are contiguous in x), col is never built: the
 * micro-kernel reads x through per-row pointers (nk_sgemm_conv_cpu). Otherwise a 1x1 stride-1
 * convolution is that GEMM on x itself and every other one builds col (im2col) a chunk of output
 * rows at a time in the workspace. Backward data of a stride-1 conv is a forward conv of dy with
 * the flipped filter; otherwise dcol = dy w^T then a col2im gather; backward filter is
 * dw = col^T dy summed over chunks. Also the bf16 inference forward. Plain C + OpenMP; the
 * specifications are kernels/ref/conv2d.c and gemm_bf16.c, and tests/test_ops.c compares.
 */
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"

// im2col chunk target: 2 Mi floats (8 MiB) stays in L3 between im2col and packing...
#define COL_CHUNK_FLOATS (2u << 20)
// ...but never fewer rows than this, or repacking w for each chunk costs more than the copy.
#define COL_CHUNK_MIN_ROWS 768

static int is_direct(const nk_conv_desc *d)
{
    return d->R == 1 && d->S == 1 && d->stride == 1 && d->pad_h == 0 && d->pad_w == 0 &&
           d->P == d->H && d->Q == d->W;
}

// Output lines (one (n, p) pair, Q rows of col) per chunk.
static int64_t chunk_lines(const nk_conv_desc *d)
{
    const int64_t rsc = (int64_t)d->R * d->S * d->C, lines = (int64_t)d->N * d->P;
    int64_t rows = (int64_t)COL_CHUNK_FLOATS / (rsc > 0 ? rsc : 1);
    if (rows < COL_CHUNK_MIN_ROWS) rows = COL_CHUNK_MIN_ROWS;
    int64_t l = rows / (d->Q > 0 ? d->Q : 1);
    if (l < 1) l = 1;
    if (l >= lines) return lines;
    // Equal chunks: a short last chunk would run a GEMM too small to keep threads busy.
    const int64_t chunks = (lines + l - 1) / l;
    return (lines + chunks - 1) / chunks;
}

// Weight gradients of tall shapes (many output rows, a small dw: ResNet50's stage 2-3) split the
// rows: fixed chunks of about WGRAD_SPLIT_ROWS rows, each a whole single-threaded GEMM into its
// own partial dw, the threads taking chunks as they finish; then the partials are added in chunk
// order. The split depends on the shape only, so the result does not depend on the thread count
// (float32 and bf16 alike).
#define WGRAD_SPLIT_ROWS       2048
#define WGRAD_SPLIT_MIN_CHUNKS 4
#define WGRAD_SPLIT_MAX_FLOATS (4u << 20)

// Within a chunk, convolutions that gather patches (all but 1x1 stride 1) do so about
// WGRAD_SUB_ROWS rows at a time (whole lines), each piece's GEMM added into the chunk's partial.
// A whole chunk's patches (9 MB for conv3's 3x3) left the caches between the gather and the GEMM:
// conv3's 3x3 went from 24-27 to 20 ms in float32 and from 14.5-15.5 to 11 ms in bf16 (batch 16);
// conv1, conv2's 3x3 and the strided 1x1s measured the same (256, 512 and whole chunks alike).
#define WGRAD_SUB_ROWS 256

// Lines per piece of a chunk of lp lines (all lp for a 1x1 stride-1 conv: nothing to gather).
static int64_t wgrad_sub_lines(const nk_conv_desc *d, int64_t lp)
{
    if (is_direct(d)) return lp;
    int64_t l = WGRAD_SUB_ROWS / (d->Q > 0 ? d->Q : 1);
    if (l < 1) l = 1;
    return l < lp ? l : lp;
}

// Lines per chunk and the chunk count of the row split, or 0 chunks when the shape does not
// split.
static int64_t wgrad_split(const nk_conv_desc *d, int64_t *lines_per)
{
    const int64_t lines = (int64_t)d->N * d->P, rsc = (int64_t)d->R * d->S * d->C;
    int64_t lp = WGRAD_SPLIT_ROWS / (d->Q > 0 ? d->Q : 1);
    if (lp < 1) lp = 1;
    const int64_t nch = (lines + lp - 1) / lp;
    *lines_per        = lp;
    if (nch < WGRAD_SPLIT_MIN_CHUNKS || nch * rsc * d->K > (int64_t)WGRAD_SPLIT_MAX_FLOATS)
        return 0;
    return nch;
}

// Workspace floats per buffer, rounded so the col buffer after the GEMM's starts 64-byte aligned
// whenever ws itself is.
static size_t gemm_part(int nthreads)
{
    return (nk_sgemm_ws_floats(nthreads) + 15) & ~(size_t)15;
}

// Floats of the float32 row split: the partials, then per thread a one-thread GEMM's workspace
// and a col chunk.
static size_t wgrad_split_f32_floats(const nk_conv_desc *d, int nthreads, int64_t nch, int64_t lp,
                                     size_t *per_thread)
{
    const size_t rsc = (size_t)d->R * d->S * d->C;
    *per_thread =
        gemm_part(1) +
        (is_direct(d) ? 0 : (((size_t)wgrad_sub_lines(d, lp) * d->Q * rsc + 15) & ~(size_t)15));
    return (((size_t)nch * rsc * d->K + 15) & ~(size_t)15) +
           (size_t)(nthreads > 0 ? nthreads : 1) * *per_thread;
}

// dw[e] = the row split's partials summed in chunk order. Called inside the split's parallel
// region: the threads share blocks of elements (an orphaned omp for), each element's sum its own
// vector lane, in chunk order.
#define ADD_PARTIALS_BLOCK 64
static void add_partials(const float *part, int64_t nch, int64_t nw, float *dw)
{
#pragma omp for schedule(static)
    for (int64_t e0 = 0; e0 < nw; e0 += ADD_PARTIALS_BLOCK) {
        const int w = nw - e0 < ADD_PARTIALS_BLOCK ? (int)(nw - e0) : ADD_PARTIALS_BLOCK;
        float sum[ADD_PARTIALS_BLOCK] = {0};
        for (int64_t c = 0; c < nch; c++) {
            const float *pc = part + c * nw + e0;
#pragma omp simd
            for (int j = 0; j < w; j++)
                sum[j] += pc[j];
        }
        for (int j = 0; j < w; j++)
            dw[e0 + j] = sum[j];
    }
}

// The float32 weight gradient splits only filters wider than 1x1 (built from im2col chunks):
// measured 1.2-1.5x on conv1 and the 3x3s; the 1x1 shapes were no faster split, on AVX-512's
// unpacked A^T B kernel nor on AVX2's packed one (Zen 3: the training step 1.004x).
static int64_t wgrad_split_f32(const nk_conv_desc *d, int64_t *lines_per)
{
    *lines_per = 1;
    return d->R * d->S > 1 ? wgrad_split(d, lines_per) : 0;
}

static nk_conv_desc flipped_desc(const nk_conv_desc *d);
static int use_wino_fwd(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d);

// Floats of nk_conv2d_fwd_wino_x_cpu's float32 copy of x (0) or y (1) under 4 tiles, rounded
// to 64 bytes.
static size_t wino_x_copy_floats(const nk_conv_desc *d, int out)
{
    const size_t n = out ? (size_t)d->N * d->P * d->Q * d->K : (size_t)d->N * d->H * d->W * d->C;
    return (n + 15) & ~(size_t)15;
}

// Floats of a Winograd U in the workspace, or at the start of a packed buffer (rounded to 64
// bytes).
static size_t wino_u_floats(const nk_conv_desc *d)
{
    return (nk_wino_packed_floats(d) + 15) & ~(size_t)15;
}

// The weight gradient of a 1x1 stride-1 conv with fewer input than output channels, at most
// NK_WGRAD_T_MAX of them (conv2's and conv3's expand convs), as dw^T[K, C] = dy^T x, then
// transposed: the A^T B kernel's 6-row tiles then run over K (the longer side) and its 64-wide
// panels over C, reading x's rows whole. Batch 16, 2 threads, `pneumo bench conv --pass
// bwd-filter`, 3 runs each alternating, ms: conv2's expand (64 -> 256) 12.6-13.3 -> 10.8-11.1,
// conv3's (128 -> 512) 10.1-10.4 -> 9.1; conv4's (256 -> 1024) 8.5-8.7 -> 8.7-8.8 and conv5's
// (512 -> 2048) 8.2-8.3 -> 8.7-11.4 went slower, hence the bound.
#ifndef NK_WGRAD_T_MAX
#    define NK_WGRAD_T_MAX 128
#endif
static int wgrad_transposed(const nk_conv_desc *d)
{
    return is_direct(d) && d->C < d->K && d->C <= (NK_WGRAD_T_MAX);
}

// dst[c, k] = src[k, c] for the [K, C] src, in 16 x 16 blocks, blocks of dst rows split over
// the threads.
static void transpose_into(const nk_exec *ex, int K, int C, const float *src, float *dst)
{
#pragma omp parallel for num_threads(ex && ex->nthreads > 0 ? ex->nthreads : 1) schedule(static)
    for (int c0 = 0; c0 < C; c0 += 16)
        for (int k0 = 0; k0 < K; k0 += 16)
            for (int c = c0; c < C && c < c0 + 16; c++)
                for (int k = k0; k < K && k < k0 + 16; k++)
                    dst[(int64_t)c * K + k] = src[(int64_t)k * C + c];
}

size_t nk_conv2d_ws_floats(const nk_conv_desc *d, int nthreads)
{
    size_t g = gemm_part(nthreads), w = g;
    if (wgrad_transposed(d)) w = g + (((size_t)d->C * d->K + 15) & ~(size_t)15);
    if (!is_direct(d)) {
        const size_t col = (size_t)chunk_lines(d) * d->Q * d->R * d->S * d->C;
        // Backward data of a stride-1 conv keeps the flipped filter there instead.
        const size_t wt = d->stride == 1 ? (size_t)d->R * d->S * d->C * d->K : 0;
        w               = g + (col > wt ? col : wt);
    }
    if (nk_wino_ok(NK_ISA_AVX512, d)) { // U, then Winograd's scratch; the weight gradient's
        size_t wi = wino_u_floats(d) + nk_wino_ws_floats(d, nthreads);
        if (wi > w) w = wi;
        if ((wi = nk_wino_wgrad_ws_floats(d, nthreads)) > w) w = wi;
        // bf16 activations under 4 tiles: float32 copies of x and y, then the GEMM's scratch.
        if (!use_wino_fwd(NK_ISA_AVX512, NK_CONV_AUTO, d) &&
            (wi = wino_x_copy_floats(d, 0) + wino_x_copy_floats(d, 1) + g) > w)
            w = wi;
    }
    const nk_conv_desc t = flipped_desc(d);
    if (d->stride == 1 && nk_wino_ok(NK_ISA_AVX512, &t)) { // backward data: U, scratch
        const size_t wi = wino_u_floats(&t) + nk_wino_ws_floats(&t, nthreads);
        if (wi > w) w = wi;
    }
    int64_t lp;
    const int64_t nch = wgrad_split_f32(d, &lp);
    size_t per, split = nch > 0 ? wgrad_split_f32_floats(d, nthreads, nch, lp, &per) : 0;
    return w > split ? w : split;
}

static int nthreads_of(const nk_exec *ex)
{
    return ex && ex->nthreads > 0 ? ex->nthreads : 1;
}

// col[(l - l0)*Q + q, (r*S + s)*C + c] = x[n, p*stride - pad_h + r, q*stride - pad_w + s, c]
// (zero outside the image) for the output lines l = n*P + p in [l0, l1), elements of es bytes
// (float32 or bf16), rows ldk elements apart (zero from R*S*C on).
static void im2col_es(const nk_conv_desc *d, const void *x, size_t es, int64_t l0, int64_t l1,
                      int64_t ldk, void *col, int nt)
{
    const int H = d->H, W = d->W, C = d->C, R = d->R, S = d->S, P = d->P, Q = d->Q;
    const int64_t rsc = (int64_t)R * S * C;
    const size_t row = (size_t)S * C * es, px = (size_t)C * es;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t l = l0; l < l1; l++) {
        const int n = (int)(l / P), p = (int)(l % P);
        for (int q = 0; q < Q; q++) {
            char *line = (char *)col + ((l - l0) * Q + q) * ldk * (int64_t)es, *dst = line;
            const int iw0 = q * d->stride - d->pad_w;
            for (int r = 0; r < R; r++, dst += row) {
                const int ih = p * d->stride - d->pad_h + r;
                if (ih < 0 || ih >= H) {
                    memset(dst, 0, row);
                    continue;
                }
                const char *src = (const char *)x + ((int64_t)n * H + ih) * W * (int64_t)px;
                if (iw0 >= 0 && iw0 + S <= W) {
                    // The whole filter row is inside: S*C contiguous elements (NHWC).
                    memcpy(dst, src + (int64_t)iw0 * px, row);
                    continue;
                }
                for (int s = 0; s < S; s++) {
                    const int iw = iw0 + s;
                    if (iw < 0 || iw >= W)
                        memset(dst + s * px, 0, px);
                    else
                        memcpy(dst + s * px, src + (int64_t)iw * px, px);
                }
            }
            if (ldk > rsc) memset(line + rsc * (int64_t)es, 0, (size_t)(ldk - rsc) * es);
        }
    }
}

static void im2col(const nk_conv_desc *d, const float *x, int64_t l0, int64_t l1, float *col,
                   int nt)
{
    im2col_es(d, x, sizeof(float), l0, l1, (int64_t)d->R * d->S * d->C, col, nt);
}

// The adjoint of im2col, accumulated: dx[n, ih, iw, c] += col[...] over the output lines
// [l0, l1). Written as a gather over input rows (n, ih), so no two threads touch one dx row.
static void col2im_add(const nk_conv_desc *d, const float *col, int64_t l0, int64_t l1, float *dx,
                       int nt)
{
    const int H = d->H, W = d->W, C = d->C, R = d->R, S = d->S, P = d->P, Q = d->Q;
    const int64_t rsc = (int64_t)R * S * C;
    const int n0 = (int)(l0 / P), n1 = (int)((l1 - 1) / P);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < (int64_t)(n1 - n0 + 1) * H; t++) {
        const int n = n0 + (int)(t / H), ih = (int)(t % H);
        // Output rows of image n inside this chunk.
        const int p_lo = n == n0 ? (int)(l0 % P) : 0;
        const int p_hi = n == n1 ? (int)((l1 - 1) % P) : P - 1;
        float *drow    = dx + ((int64_t)n * H + ih) * W * C;
        for (int r = 0; r < R; r++) {
            // Output row p reads ih through tap r when p*stride == ih + pad_h - r.
            const int ph = ih + d->pad_h - r;
            if (ph < 0 || ph % d->stride) continue;
            const int p = ph / d->stride;
            if (p < p_lo || p > p_hi) continue;
            const float *crow = col + (((int64_t)n * P + p - l0) * Q) * rsc + (int64_t)r * S * C;
            for (int q = 0; q < Q; q++) {
                for (int s = 0; s < S; s++) {
                    const int iw = q * d->stride - d->pad_w + s;
                    if (iw < 0 || iw >= W) continue;
                    const float *src = crow + q * rsc + (int64_t)s * C;
                    float *dst       = drow + (int64_t)iw * C;
#pragma omp simd
                    for (int c = 0; c < C; c++)
                        dst[c] += src[c];
                }
            }
        }
    }
}

// A strided 1x1 convolution without padding (the downsampling shortcut and reduce): each input
// pixel is read by at most one output (by none off the stride), so its input gradient can be
// written, not added: col2im_write.
static int col2im_writes(const nk_conv_desc *d)
{
    return d->R == 1 && d->S == 1 && d->pad_h == 0 && d->pad_w == 0;
}

// For such a convolution (col2im_writes), the input rows of output lines [l0, l1) written over
// dx whole: the strided pixels of each line's row from col, every other pixel and the rows in
// between 0, so dx needs no zeroing pass first and each of its lines is written once (conv3's
// projection, batch 16: 22.1-24.5 -> 19.0-20.0 ms, its reduce 8.5-8.6 -> 6.2-7.2 ms, alternating
// runs of `pneumo bench conv --pass bwd-data`; in training the reduce adds into the gradient the
// projection wrote, so only the projections gain there).
static void col2im_write(const nk_conv_desc *d, const float *col, int64_t l0, int64_t l1, float *dx,
                         int nt)
{
    const int H = d->H, W = d->W, C = d->C, P = d->P, Q = d->Q, st = d->stride;
    const size_t px = (size_t)C * sizeof(float);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t l = l0; l < l1; l++) {
        const int64_t n = l / P;
        const int p = (int)(l % P), h1 = p == P - 1 ? H : (p + 1) * st;
        float *drow       = dx + (n * H + (int64_t)p * st) * W * C;
        const float *crow = col + (l - l0) * Q * C;
        for (int iw = 0; iw < W; iw++) {
            if (iw % st == 0 && iw / st < Q)
                memcpy(drow + (int64_t)iw * C, crow + (int64_t)(iw / st) * C, px);
            else
                memset(drow + (int64_t)iw * C, 0, px);
        }
        // The rows below it up to the next output line's (to H after the last) no output reads.
        if (h1 > p * st + 1) memset(drow + (int64_t)W * C, 0, (size_t)(h1 - p * st - 1) * W * px);
    }
}

// The chunk of col for output lines [l0, l1) into dx: written (col2im_writes, not acc) or added.
static void col2im_out(const nk_conv_desc *d, const float *col, int64_t l0, int64_t l1, float *dx,
                       int nt, int acc)
{
    if (!acc && col2im_writes(d))
        col2im_write(d, col, l0, l1, dx, nt);
    else
        col2im_add(d, col, l0, l1, dx, nt);
}

// The epilogue for the chunk of y that starts `off` floats in: the residual moves with y.
static nk_epilogue chunk_epilogue(const nk_epilogue *ep, int64_t off)
{
    nk_epilogue e = {0};
    if (ep) {
        e = *ep;
        if (e.residual) e.residual += off;
        if (e.residual_bf16) e.residual_bf16 += off;
    }
    return e;
}

// Splits ex's workspace into the GEMM's part and the col buffer.
static float *split_ws(const nk_exec *ex, nk_exec *gex)
{
    const int nt   = nthreads_of(ex);
    const size_t g = gemm_part(nt);
    *gex           = (nk_exec){nt, ex->ws, g, ex->conv_algo};
    return ex->ws + g;
}

void nk_conv2d_fwd_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                       const float *w, const float *b, float *y)
{
    nk_conv2d_fwd_epi_cpu(isa, ex, d, x, w, b, NULL, y);
}

// Whether a forward of this shape runs Winograd F(4x4, 3x3) (winograd.c). The choice depends on
// the shape without the batch size, since packed weights serve any batch.
static int use_wino(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    return algo != NK_CONV_GEMM && nk_wino_ok(isa, d);
}

// On weights transformed per call (training's forward, input and weight gradients) Winograd also
// needs tiles enough to pay for that transform (36 C K floats written and read, against 72 C K
// flops per tile). Measured on conv5's 3x3 (C = K = 512, 7x7, 4 tiles an image; 2 threads,
// `pneumo bench conv --batch B --pass bwd-data|bwd-filter|fwd-train`, GEMM against Winograd,
// ms): 16 tiles 8.1 / 8.7, 4.4 / 6.7 and 5.1 / 5.1; 32 tiles 12.9 / 10.3, 9.3 / 8.4 and 9.8 /
// 7.7; 48 tiles 17.4 / 12.7, 15.8 / 12.2 and 16.4 / 10.4. conv4's (C = K = 256, 16 tiles an
// image) at 16 tiles: 1.55 / 1.65, 1.15 / 1.0, 1.2 / 1.0; at 32 all three Winograd by 1.6-1.9x.
// So Winograd from 32 tiles up.
int nk_wino_min_tiles_w = 32;

// 4x4 output tiles of one image.
static int64_t wino_tiles_per_image(const nk_conv_desc *d)
{
    return (int64_t)((d->P + 3) / 4) * ((d->Q + 3) / 4);
}

static int use_wino_w(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    return use_wino(isa, algo, d) && d->N * wino_tiles_per_image(d) >= nk_wino_min_tiles_w;
}

// The packed forward, too, needs a few tiles: below WINO_MIN_TILES_PACKED in the batch, streaming
// U (4x the weights' bytes) takes longer than the direct GEMM's work. Measured on conv5's 3x3 at
// 128 px (4x4: one tile an image; 2 threads, ms, Winograd / GEMM): batch 1 1.36 / 0.56, batch 2
// 1.23 / 0.86, batch 4 1.33 / 1.71; at 224 px, batch 1 (4 tiles) 1.52 / 1.50. So shapes with
// fewer tiles an image pack both forms (U, then the GEMM's panels) and each forward picks by its
// batch: the shipped 128 px model's conv5 3x3s at batch 1 and 2 (serving one image).
#define WINO_MIN_TILES_PACKED 4

static int wino_dual(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    return use_wino(isa, algo, d) && wino_tiles_per_image(d) < WINO_MIN_TILES_PACKED;
}

static int use_wino_fwd(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    return use_wino(isa, algo, d) &&
           (!wino_dual(isa, algo, d) || d->N * wino_tiles_per_image(d) >= WINO_MIN_TILES_PACKED);
}

// Winograd forward on unpacked w: U transformed into the start of the workspace, then the rest.
static void wino_fwd_w(const nk_exec *ex, const nk_conv_desc *d, const float *x, const float *w,
                       const float *b, const nk_epilogue *ep, float *y)
{
    const size_t nu = wino_u_floats(d);
    nk_wino_pack(nthreads_of(ex), d, w, ex->ws);
    const nk_exec rest = {nthreads_of(ex), ex->ws + nu, ex->ws_floats - nu, ex->conv_algo};
    nk_wino_fwd(&rest, d, x, NULL, ex->ws, b, ep, y, NULL);
}

// Forward with the epilogue on w, or (wp != NULL) on w packed by nk_sgemm_pack_b_full.
static void conv_fwd(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                     const float *w, const float *wp, const float *b, const nk_epilogue *ep,
                     float *y)
{
    const int K   = d->K;
    const int rsc = d->R * d->S * d->C;
    if (!wp && use_wino_w(isa, (nk_conv_algo)ex->conv_algo, d)) {
        wino_fwd_w(ex, d, x, w, b, ep, y);
        return;
    }
    if (nk_sgemm_conv_ok(isa, d)) {
        // Implicit GEMM: the patches go from x straight into the micro-kernel, no col copy.
        nk_sgemm_conv_cpu(isa, ex, d, x, w, wp, b, ep, y);
        return;
    }
    if (is_direct(d)) {
        if (wp)
            nk_sgemm_cpu_pb(isa, ex, d->N * d->H * d->W, K, d->C, x, d->C, wp, y, K, b, ep);
        else
            nk_sgemm_cpu_epi(isa, ex, 0, 0, d->N * d->H * d->W, K, d->C, 1.0f, x, d->C, w, K, 0.0f,
                             y, K, b, ep);
        return;
    }
    nk_exec gex;
    float *col          = split_ws(ex, &gex);
    const int64_t lines = (int64_t)d->N * d->P, step = chunk_lines(d);
    for (int64_t l0 = 0; l0 < lines; l0 += step) {
        const int64_t l1 = l0 + step < lines ? l0 + step : lines;
        im2col(d, x, l0, l1, col, gex.nthreads);
        const int rows        = (int)((l1 - l0) * d->Q);
        const nk_epilogue epc = chunk_epilogue(ep, l0 * d->Q * K);
        if (wp)
            nk_sgemm_cpu_pb(isa, &gex, rows, K, rsc, col, rsc, wp, y + l0 * d->Q * K, K, b,
                            ep ? &epc : NULL);
        else
            nk_sgemm_cpu_epi(isa, &gex, 0, 0, rows, K, rsc, 1.0f, col, rsc, w, K, 0.0f,
                             y + l0 * d->Q * K, K, b, ep ? &epc : NULL);
    }
}

void nk_conv2d_fwd_epi_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                           const float *w, const float *b, const nk_epilogue *ep, float *y)
{
    conv_fwd(isa, ex, d, x, w, NULL, b, ep, y);
}

int nk_conv2d_winograd(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    return use_wino(isa, algo, d);
}

int nk_conv2d_winograd_w(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    return use_wino_w(isa, algo, d);
}

int nk_conv2d_winograd_fwd(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    return use_wino_fwd(isa, algo, d);
}

size_t nk_conv2d_packed_floats(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d)
{
    const size_t g = nk_sgemm_packed_b_floats(isa, d->R * d->S * d->C, d->K);
    if (!use_wino(isa, algo, d)) return g;
    return wino_u_floats(d) + (wino_dual(isa, algo, d) ? g : 0);
}

void nk_conv2d_pack(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d, const float *w,
                    float *dst)
{
    const int rsc = d->R * d->S * d->C;
    if (!use_wino(isa, algo, d)) {
        nk_sgemm_pack_b_full(isa, rsc, d->K, w, d->K, dst);
        return;
    }
    nk_wino_pack(1, d, w, dst);
    if (wino_dual(isa, algo, d))
        nk_sgemm_pack_b_full(isa, rsc, d->K, w, d->K, dst + wino_u_floats(d));
}

void nk_conv2d_fwd_packed_cpu(nk_isa isa, nk_conv_algo algo, const nk_exec *ex,
                              const nk_conv_desc *d, const float *x, const float *wp,
                              const float *b, const nk_epilogue *ep, float *y)
{
    if (use_wino_fwd(isa, algo, d))
        nk_wino_fwd(ex, d, x, NULL, wp, b, ep, y, NULL);
    else
        conv_fwd(isa, ex, d, x, NULL, use_wino(isa, algo, d) ? wp + wino_u_floats(d) : wp, b, ep,
                 y);
}

void nk_conv2d_fwd_wino_x_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                              const uint16_t *xb, const float *wp, const float *b,
                              const nk_epilogue *ep, float *y, uint16_t *yb)
{
    if (use_wino_fwd(NK_ISA_AVX512, NK_CONV_AUTO, d)) {
        nk_wino_fwd(ex, d, x, xb, wp, b, ep, y, yb);
        return;
    }
    // Under 4 tiles (the buffer is dual, see use_wino_fwd): the GEMM's float32 panels, on float32
    // copies of the bf16 sides (a few images of a few pixels: conv5 at 128 px, batch 1-3).
    float *buf      = ex->ws;
    const size_t nx = wino_x_copy_floats(d, 0), ny = wino_x_copy_floats(d, 1);
    if (xb) {
        for (size_t i = 0; i < (size_t)d->N * d->H * d->W * d->C; i++)
            buf[i] = nk_bf16_to_f32(xb[i]);
        x = buf;
    }
    float *yf          = yb ? buf + nx : y;
    const nk_exec rest = {nthreads_of(ex), buf + nx + ny, ex->ws_floats - nx - ny, NK_CONV_AUTO};
    conv_fwd(NK_ISA_AVX512, &rest, d, x, NULL, wp + wino_u_floats(d), b, ep, yf);
    if (yb)
        for (size_t i = 0; i < (size_t)d->N * d->P * d->Q * d->K; i++)
            yb[i] = nk_f32_to_bf16(yf[i]);
}

// The descriptor of the forward conv that computes a stride-1 conv's input gradient (below).
static nk_conv_desc flipped_desc(const nk_conv_desc *d)
{
    return (nk_conv_desc){.N      = d->N,
                          .H      = d->P,
                          .W      = d->Q,
                          .C      = d->K,
                          .K      = d->C,
                          .R      = d->R,
                          .S      = d->S,
                          .P      = d->H,
                          .Q      = d->W,
                          .stride = 1,
                          .pad_h  = d->R - 1 - d->pad_h,
                          .pad_w  = d->S - 1 - d->pad_w};
}

// The forward convolution that computes a stride-1 conv's input gradient: dx = conv(dy, w')
// with w'[r,s,k,c] = w[R-1-r, S-1-s, c, k] and padding R-1-pad_h above, S-1-pad_w left (so tap
// r' of output row ih reads dy row ih + pad_h - r, r = R-1-r'). Then the forward's implicit GEMM
// does the work without the dcol buffer and col2im pass. Returns 0 when that forward path does
// not apply.
static int bwd_data_as_fwd(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                           const float *w, float *dx)
{
    if (d->stride != 1 || is_direct(d)) return 0;
    const nk_conv_desc t = flipped_desc(d);
    if (t.pad_h < 0 || t.pad_w < 0 || !nk_sgemm_conv_ok(isa, &t)) return 0;
    if (use_wino_w(isa, (nk_conv_algo)ex->conv_algo, &t)) { // U from w, then the scratch
        const size_t nu = wino_u_floats(&t);
        nk_wino_pack_flipped(nthreads_of(ex), d, w, ex->ws);
        const nk_exec rest = {nthreads_of(ex), ex->ws + nu, ex->ws_floats - nu, ex->conv_algo};
        nk_wino_fwd(&rest, &t, dy, NULL, ex->ws, NULL, NULL, dx, NULL);
        return 1;
    }
    nk_exec gex;
    float *wt   = split_ws(ex, &gex);
    const int C = d->C, K = d->K;
#pragma omp parallel for num_threads(gex.nthreads) schedule(static)
    for (int rs = 0; rs < d->R * d->S; rs++) {
        const int r = rs / d->S, s = rs % d->S;
        const float *src = w + ((int64_t)(d->R - 1 - r) * d->S + (d->S - 1 - s)) * C * K;
        float *dst       = wt + (int64_t)rs * K * C;
        for (int k = 0; k < K; k++)
            for (int c = 0; c < C; c++)
                dst[(int64_t)k * C + c] = src[(int64_t)c * K + k];
    }
    gex.conv_algo = NK_CONV_GEMM; // wt sits in the scratch that Winograd would use
    conv_fwd(isa, &gex, &t, dy, wt, NULL, NULL, NULL, dx);
    return 1;
}

// The 1x1 stride-1 input gradient reads dy in place up to this many input channels C, and this
// many channels of dy (one k block), see bwd_data_f32.
#define BWD_1X1_MAX_C 64
#define BWD_1X1_MAX_K 256

// The input gradient written over dx, or added into it (acc: the GEMM's beta = 1, or no zeroing
// before the col2im adds; a stride-1 conv then takes the col2im path, not the forward one).
static void bwd_data_f32(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                         const float *w, float *dx, int acc)
{
    const int K = d->K, C = d->C;
    const int rsc = d->R * d->S * C;
    if (!acc && bwd_data_as_fwd(isa, ex, d, dy, w, dx)) return;
    if (is_direct(d)) {
        // dx[NHW, C] = dy[NHW, K] w[C, K]^T (+ dx). With few columns C the packing of dy is
        // spread over little work, so there it runs as a 1x1 convolution of dy (K channels in, C
        // out) whose micro-kernel reads dy in place. Measured (batch 16, 2 threads, medians of 6
        // alternating runs): conv2's 1x1s with C = 64: 10.8 -> 9.6 ms (K = 256), 2.96 -> 2.64 ms
        // (K = 64); with C = 256 (conv2's reduce) it was 9.8 -> 10.5 ms, and the wider ones no
        // better, so those pack.
        nk_conv_desc t = *d;
        t.C = K, t.K = C;
        if (C <= BWD_1X1_MAX_C && K <= BWD_1X1_MAX_K && nk_sgemm_conv_ok(isa, &t)) {
            nk_sgemm_conv_bt_cpu(isa, ex, &t, dy, w, acc ? 1.0f : 0.0f, dx);
            return;
        }
        nk_sgemm_cpu(isa, ex, 0, 1, d->N * d->H * d->W, C, K, 1.0f, dy, K, w, K, acc ? 1.0f : 0.0f,
                     dx, C);
        return;
    }
    nk_exec gex;
    float *col       = split_ws(ex, &gex);
    const int64_t nx = acc || col2im_writes(d) ? 0 : (int64_t)d->N * d->H * d->W * C;
#pragma omp parallel for num_threads(gex.nthreads) schedule(static)
    for (int64_t i = 0; i < nx; i++)
        dx[i] = 0.0f;
    const int64_t lines = (int64_t)d->N * d->P, step = chunk_lines(d);
    for (int64_t l0 = 0; l0 < lines; l0 += step) {
        const int64_t l1 = l0 + step < lines ? l0 + step : lines;
        const int rows   = (int)((l1 - l0) * d->Q);
        // dcol[rows, RSC] = dy[rows, K] w[RSC, K]^T.
        nk_sgemm_cpu(isa, &gex, 0, 1, rows, rsc, K, 1.0f, dy + l0 * d->Q * K, K, w, K, 0.0f, col,
                     rsc);
        col2im_out(d, col, l0, l1, dx, gex.nthreads, acc);
    }
}

void nk_conv2d_bwd_data_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                            const float *w, float *dx)
{
    bwd_data_f32(isa, ex, d, dy, w, dx, 0);
}

void nk_conv2d_bwd_data_acc_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d,
                                const float *dy, const float *w, float *dx)
{
    bwd_data_f32(isa, ex, d, dy, w, dx, 1);
}

void nk_conv2d_bwd_filter_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                              const float *dy, float *dw, float *db)
{
    const int K = d->K, C = d->C;
    const int rsc          = d->R * d->S * C;
    const int64_t rows_all = (int64_t)d->N * d->P * d->Q;
    if (db) nk_colsum_cpu(ex, rows_all, K, dy, db);
    if (use_wino_w(isa, (nk_conv_algo)ex->conv_algo, d)) {
        nk_wino_wgrad(ex, d, x, dy, dw);
        return;
    }
    int64_t lp;
    const int64_t nch = wgrad_split_f32(d, &lp);
    if (nch > 0) {
        const int nt = nthreads_of(ex);
        size_t per;
        wgrad_split_f32_floats(d, nt, nch, lp, &per);
        const int64_t nw = (int64_t)rsc * K, lines = (int64_t)d->N * d->P;
        float *part = ex->ws, *tws = part + ((nch * nw + 15) & ~(int64_t)15);
        const size_t g1 = gemm_part(1);
#pragma omp parallel num_threads(nt)
        {
            float *mine       = tws + (size_t)omp_get_thread_num() * per;
            const nk_exec one = {1, mine, g1, ex->conv_algo};
            float *col        = mine + g1;
#pragma omp for schedule(dynamic, 1)
            for (int64_t c = 0; c < nch; c++) {
                const int64_t l0 = c * lp, l1 = l0 + lp < lines ? l0 + lp : lines;
                const int64_t sub = wgrad_sub_lines(d, lp);
                for (int64_t s0 = l0; s0 < l1; s0 += sub) {
                    const int64_t s1 = s0 + sub < l1 ? s0 + sub : l1;
                    const int rows   = (int)((s1 - s0) * d->Q);
                    const float *src = x + s0 * d->Q * C;
                    if (!is_direct(d)) {
                        im2col(d, x, s0, s1, col, 1);
                        src = col;
                    }
                    nk_sgemm_atb_cpu(isa, &one, rsc, K, rows, src, rsc, dy + s0 * d->Q * K, K,
                                     s0 == l0 ? 0.0f : 1.0f, part + c * nw, K);
                }
            }
            add_partials(part, nch, nw, dw);
        }
        return;
    }
    if (is_direct(d)) {
        if (wgrad_transposed(d)) {
            // dw^T[K, C] = dy^T x into the workspace after the GEMM's part, then transposed.
            nk_exec gex;
            float *t = split_ws(ex, &gex);
            nk_sgemm_atb_cpu(isa, &gex, K, C, (int)rows_all, dy, K, x, C, 0.0f, t, C);
            transpose_into(ex, K, C, t, dw);
            return;
        }
        // dw[C, K] = x[NHW, C]^T dy[NHW, K].
        nk_sgemm_atb_cpu(isa, ex, C, K, (int)rows_all, x, C, dy, K, 0.0f, dw, K);
        return;
    }
    nk_exec gex;
    float *col          = split_ws(ex, &gex);
    const int64_t lines = (int64_t)d->N * d->P, step = chunk_lines(d);
    for (int64_t l0 = 0; l0 < lines; l0 += step) {
        const int64_t l1 = l0 + step < lines ? l0 + step : lines;
        const int rows   = (int)((l1 - l0) * d->Q);
        im2col(d, x, l0, l1, col, gex.nthreads);
        // dw[RSC, K] (+)= col[rows, RSC]^T dy[rows, K].
        nk_sgemm_atb_cpu(isa, &gex, rsc, K, rows, col, rsc, dy + l0 * d->Q * K, K,
                         l0 == 0 ? 0.0f : 1.0f, dw, K);
    }
}

// ---- bf16 inference ----

static size_t bf16_gemm_part(int nthreads)
{
    return (nk_gemm_bf16_ws_floats(nthreads) + 15) & ~(size_t)15;
}

// Floats (rounded up to 16) that hold n bf16 values.
static size_t bf16_floats(size_t n)
{
    return ((n + 1) / 2 + 15) & ~(size_t)15;
}

// Convolutions that round x to bf16 once into the workspace and read it unpacked: filters wider
// than 1x1 (each x element then serves R*S taps, so rounding it once beats packing patches:
// 1.1-1.2x on the 3x3 convs; on 1x1 convs the extra pass lost 1-15%), even C, so that no k pair
// straddles two filter taps, and C >= 16, so that a k block has at most 17 segments (their row
// pointers live in the per-thread A buffer).
static int bf16_unpacked(const nk_conv_desc *d)
{
    return d->R * d->S > 1 && d->C % 2 == 0 && d->C >= 16;
}

// Convolutions whose patches the bf16 packer reads from x directly (no col buffer).
static int bf16_implicit(const nk_conv_desc *d)
{
    return d->C % 32 == 0;
}

// The rest (conv1: C = 3, 7x7, K = 147) goes through a bf16 patch matrix: x rounded to bf16 once,
// then each chunk of output lines gathered into rows of ldk = R*S*C rounded up to even bf16 (the
// pad is zero), which the micro-kernel reads unpacked. Half the bytes of a float32 col, and no
// per-panel rounding and transposing (that packing dominated a 64-column GEMM: conv1 ran at 100
// GFLOP/s in bf16, slower than in float32).
static int64_t bf16_col_ldk(const nk_conv_desc *d)
{
    return ((int64_t)d->R * d->S * d->C + 1) & ~(int64_t)1;
}

// Workspace floats of x rounded to bf16.
static size_t bf16_x_floats(const nk_conv_desc *d)
{
    return bf16_floats((size_t)d->N * d->H * d->W * d->C);
}

// The patch matrix goes block by block, each a few output lines that one thread gathers and then
// multiplies on its own while the block is in its core's L2 (conv1: 4 lines of 112, 448 rows of
// 148 bf16 = 130 KiB). Chunks of 4 MiB gathered by all threads, then multiplied by all, left
// the L2 in between: conv1 ran 13 ms at best, and 32-33 ms (the gather 7x slower) whenever this
// VM's memory was contended, which it often is.
#define COL_BF16_BLOCK_ROWS 480

static int64_t bf16_col_block_lines(const nk_conv_desc *d)
{
    const int64_t l = COL_BF16_BLOCK_ROWS / (d->Q > 0 ? d->Q : 1);
    return l > 0 ? l : 1;
}

// Per thread: a one-thread GEMM's scratch, then one block of the patch matrix.
static size_t bf16_col_thread_floats(const nk_conv_desc *d)
{
    return bf16_gemm_part(1) +
           bf16_floats((size_t)bf16_col_block_lines(d) * d->Q * (size_t)bf16_col_ldk(d));
}

// The patch-matrix route's workspace: x rounded to bf16 (unless it comes in bf16), then each
// thread's share.
static size_t bf16_col_ws_floats(const nk_conv_desc *d, int nthreads, int x_bf16)
{
    return (x_bf16 ? 0 : bf16_x_floats(d)) +
           (size_t)(nthreads > 0 ? nthreads : 1) * bf16_col_thread_floats(d);
}

size_t nk_conv2d_bf16_ws_floats(const nk_conv_desc *d, int nthreads)
{
    const size_t g = bf16_gemm_part(nthreads);
    if (bf16_unpacked(d)) return g + bf16_x_floats(d);
    if (is_direct(d) || bf16_implicit(d)) return g;
    return bf16_col_ws_floats(d, nthreads, 0);
}

// The patch-matrix route (any C): x (or xb, already bf16) gathered into bf16 rows of ldk, a
// block of output lines at a time (bf16_col_block_lines), each block one thread's GEMM on
// unpacked rows, into y or (yb) bf16. Every output row is one thread's whole sum, so the result
// does not depend on the thread count.
static void conv_bf16_col(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                          const float *x, const uint16_t *xb, const uint16_t *wp, const float *b,
                          const nk_epilogue *ep, float *y, uint16_t *yb)
{
    const int nt = nthreads_of(ex), K = d->K;
    const int64_t ldk = bf16_col_ldk(d);
    float *tws        = ex->ws;
    if (!xb) {
        // x rounded once in front of the blocks.
        uint16_t *xr = (uint16_t *)ex->ws;
        tws          = ex->ws + bf16_x_floats(d);
        nk_bf16_convert_mt(impl, nt, (int64_t)d->N * d->H * d->W * d->C, x, xr);
        xb = xr;
    }
    const size_t per = bf16_col_thread_floats(d), g1 = bf16_gemm_part(1);
    const int64_t lines = (int64_t)d->N * d->P, step = bf16_col_block_lines(d);
    const int64_t nblk = (lines + step - 1) / step;
#pragma omp parallel num_threads(nt)
    {
        float *mine       = tws + (size_t)omp_get_thread_num() * per;
        const nk_exec one = {1, mine, g1, ex->conv_algo};
        uint16_t *col     = (uint16_t *)(mine + g1);
#pragma omp for schedule(dynamic, 1)
        for (int64_t bi = 0; bi < nblk; bi++) {
            const int64_t l0 = bi * step, l1 = l0 + step < lines ? l0 + step : lines;
            const int64_t off = l0 * d->Q * K;
            im2col_es(d, xb, sizeof(uint16_t), l0, l1, ldk, col, 1);
            const nk_epilogue epc = chunk_epilogue(ep, off);
            nk_gemm_bf16_rows_cpu(impl, &one, (int)((l1 - l0) * d->Q), K, (int)ldk, col, (int)ldk,
                                  wp, yb ? NULL : y + off, yb ? yb + off : NULL, K, b,
                                  ep ? &epc : NULL);
        }
    }
}

void nk_conv2d_fwd_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                            const float *x, const uint16_t *wp, const float *b,
                            const nk_epilogue *ep, float *y)
{
    const int K = d->K;
    if (bf16_unpacked(d)) {
        uint16_t *xb = (uint16_t *)(ex->ws + bf16_gemm_part(nthreads_of(ex)));
        nk_gemm_bf16_conv_cpu(impl, ex, d, x, xb, wp, b, ep, y, NULL);
        return;
    }
    if (is_direct(d)) {
        nk_gemm_bf16_cpu(impl, ex, d->N * d->H * d->W, K, d->C, x, d->C, wp, 0.0f, y, K, b, ep);
        return;
    }
    if (bf16_implicit(d)) {
        nk_gemm_bf16_conv_cpu(impl, ex, d, x, NULL, wp, b, ep, y, NULL);
        return;
    }
    conv_bf16_col(impl, ex, d, x, NULL, wp, b, ep, y, NULL);
}

// ---- bf16 activations (bf16 inference) ----

size_t nk_conv2d_bf16x_ws_floats(const nk_conv_desc *d, int nthreads, int x_bf16)
{
    const size_t g = bf16_gemm_part(nthreads), xb = x_bf16 ? 0 : bf16_x_floats(d);
    if (d->C % 2) return bf16_col_ws_floats(d, nthreads, x_bf16);
    return g + xb;
}

void nk_conv2d_fwd_bf16x_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                             const float *x, const uint16_t *xb, const uint16_t *wp, const float *b,
                             const nk_epilogue *ep, float *y, uint16_t *yb)
{
    if (!xb && !yb && !(ep && ep->residual_bf16)) {
        nk_conv2d_fwd_bf16_cpu(impl, ex, d, x, wp, b, ep, y);
        return;
    }
    if (d->C % 2) {
        conv_bf16_col(impl, ex, d, xb ? NULL : x, xb, wp, b, ep, y, yb);
        return;
    }
    // Even C: the micro-kernel reads pairs of x's channels in place (rounded first when x is
    // float32), for every filter size and stride.
    uint16_t *xr = (uint16_t *)xb;
    if (!xr) xr = (uint16_t *)(ex->ws + bf16_gemm_part(nthreads_of(ex)));
    nk_gemm_bf16_conv_cpu(impl, ex, d, xb ? NULL : x, xr, wp, b, ep, yb ? NULL : y, yb);
}

// ---- bf16 input gradient (training in bf16) ----

static int bf16_bwd_as_fwd(const nk_conv_desc *d)
{
    const nk_conv_desc t = flipped_desc(d);
    return d->stride == 1 && !is_direct(d) && t.pad_h >= 0 && t.pad_w >= 0;
}

size_t nk_conv2d_bwd_data_bf16_ws_floats(const nk_conv_desc *d, int nthreads)
{
    const size_t rsc = (size_t)d->R * d->S * d->C;
    const size_t g =
        bf16_gemm_part(nthreads) + bf16_floats(nk_gemm_bf16_packed_b_elems(d->K, (int)rsc));
    if (is_direct(d)) return g;
    const size_t gcol = g + (size_t)chunk_lines(d) * d->Q * rsc; // the col2im path
    if (!bf16_bwd_as_fwd(d)) return gcol;
    const nk_conv_desc t = flipped_desc(d);
    const size_t rsk     = (size_t)d->R * d->S * d->K;
    // the flipped filter packed in bf16, then the forward's own scratch (or col2im's, to add)
    const size_t f = bf16_floats(nk_gemm_bf16_packed_b_elems((int)rsk, d->C)) +
                     nk_conv2d_bf16_ws_floats(&t, nthreads);
    return f > gcol ? f : gcol;
}

static void bwd_data_bf16(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                          const float *dy, const float *w, float *dx, int acc)
{
    const int nt = nthreads_of(ex), C = d->C, K = d->K;
    const int rsc = d->R * d->S * C;
    if (!acc && bf16_bwd_as_fwd(d)) {
        // dx = conv(dy, w') with w'[r,s,k,c] = w[R-1-r, S-1-s, c, k], packed straight from w as
        // a forward filter B'[(r,s,k), c] (nk_gemm_bf16_pack_b's layout): each tap of w read as
        // [C, K] is that tap's block of B' transposed. Panels split between the threads.
        const nk_conv_desc t = flipped_desc(d);
        const int rsk = d->R * d->S * K, RS = d->R * d->S, Kp = rsk / 2 + rsk % 2;
        uint16_t *wp = (uint16_t *)ex->ws;
        float *rest  = ex->ws + bf16_floats(nk_gemm_bf16_packed_b_elems(rsk, C));
        const int np = (C + NK_BF16_NR - 1) / NK_BF16_NR;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int jp = 0; jp < np; jp++)
            for (int q = 0; q < Kp; q++)
                for (int j = 0; j < NK_BF16_NR; j++) {
                    const int c = jp * NK_BF16_NR + j;
                    uint16_t *o = wp + (((int64_t)jp * Kp + q) * NK_BF16_NR + j) * 2;
                    for (int e = 0; e < 2; e++) {
                        const int kk = 2 * q + e, rs = kk / K, k = kk % K;
                        o[e] = c < C && kk < rsk
                                   ? nk_f32_to_bf16(w[((int64_t)(RS - 1 - rs) * C + c) * K + k])
                                   : 0;
                    }
                }
        const nk_exec tex = {nt, rest, nk_conv2d_bf16_ws_floats(&t, nt), ex->conv_algo};
        nk_conv2d_fwd_bf16_cpu(impl, &tex, &t, dy, wp, NULL, NULL, dx);
        return;
    }
    // dcol[rows, RSC] = dy[rows, K] w^T: B = w^T is w read as [N = RSC, K] (tb).
    const size_t g = bf16_gemm_part(nt);
    uint16_t *wp   = (uint16_t *)(ex->ws + g);
    nk_gemm_bf16_pack_b_mt(nt, 1, K, rsc, w, K, wp);
    const nk_exec gex = {nt, ex->ws, g, ex->conv_algo};
    if (is_direct(d)) {
        nk_gemm_bf16_cpu(impl, &gex, d->N * d->H * d->W, C, K, dy, K, wp, acc ? 1.0f : 0.0f, dx, C,
                         NULL, NULL);
        return;
    }
    float *col       = (float *)wp + bf16_floats(nk_gemm_bf16_packed_b_elems(K, rsc));
    const int64_t nx = acc || col2im_writes(d) ? 0 : (int64_t)d->N * d->H * d->W * C;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < nx; i++)
        dx[i] = 0.0f;
    const int64_t lines = (int64_t)d->N * d->P, step = chunk_lines(d);
    for (int64_t l0 = 0; l0 < lines; l0 += step) {
        const int64_t l1 = l0 + step < lines ? l0 + step : lines;
        const int rows   = (int)((l1 - l0) * d->Q);
        nk_gemm_bf16_cpu(impl, &gex, rows, rsc, K, dy + l0 * d->Q * K, K, wp, 0.0f, col, rsc, NULL,
                         NULL);
        col2im_out(d, col, l0, l1, dx, nt, acc);
    }
}

void nk_conv2d_bwd_data_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                                 const float *dy, const float *w, float *dx)
{
    bwd_data_bf16(impl, ex, d, dy, w, dx, 0);
}

void nk_conv2d_bwd_data_bf16_acc_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                                     const float *dy, const float *w, float *dx)
{
    bwd_data_bf16(impl, ex, d, dy, w, dx, 1);
}

// ---- bf16 weight gradient (training in bf16) ----
//
// dw[RSC, K] = col^T dy as bf16 GEMMs over chunks of output rows, accumulated in float32: the
// GEMM packs A = col^T straight from the patches (x itself for a 1x1 stride-1 conv; a col chunk
// otherwise), pairing consecutive rows, and each chunk's rows of dy are packed as B. db is the
// float32 column sum of dy.

// Output rows per chunk: the transposed patches stay within WGRAD_CHUNK_FLOATS, in whole lines.
#define WGRAD_CHUNK_FLOATS (1u << 20)

static int64_t wgrad_chunk_lines(const nk_conv_desc *d)
{
    const int64_t rsc = (int64_t)d->R * d->S * d->C, lines = (int64_t)d->N * d->P;
    int64_t l = (int64_t)WGRAD_CHUNK_FLOATS / (rsc * (d->Q > 0 ? d->Q : 1));
    if (l < 1) l = 1;
    if (l >= lines) return lines;
    const int64_t chunks = (lines + l - 1) / l;
    return (lines + chunks - 1) / chunks;
}

// Workspace of one thread in the row split: a one-thread GEMM's, a col piece, the packed dy,
// a piece's bias sums.
static size_t wgrad_split_thread_floats(const nk_conv_desc *d, int64_t lp)
{
    const size_t rows = (size_t)wgrad_sub_lines(d, lp) * d->Q;
    const size_t rsc  = (size_t)d->R * d->S * d->C;
    return bf16_gemm_part(1) + (is_direct(d) ? 0 : ((rows * rsc + 15) & ~(size_t)15)) +
           bf16_floats(nk_gemm_bf16_packed_b_elems((int)rows, d->K)) +
           (((size_t)d->K + 15) & ~(size_t)15);
}

// Floats before the GEMM's workspace in the bf16 weight gradient: the bias gradient's partial
// sums, a float row per chunk of the row split, or else K doubles and a float row.
static size_t wgrad_sum_floats(const nk_conv_desc *d, int64_t nch)
{
    return ((size_t)(nch > 0 ? nch : 3) * d->K + 15) & ~(size_t)15;
}

size_t nk_conv2d_bwd_filter_bf16_ws_floats(const nk_conv_desc *d, int nthreads)
{
    const size_t rsc = (size_t)d->R * d->S * d->C;
    int64_t lp;
    const int64_t nch = wgrad_split(d, &lp);
    const size_t sums = wgrad_sum_floats(d, nch);
    if (nch > 0)
        return sums + (((size_t)nch * rsc * d->K + 15) & ~(size_t)15) +
               (size_t)(nthreads > 0 ? nthreads : 1) * wgrad_split_thread_floats(d, lp);
    const size_t rows = (size_t)wgrad_chunk_lines(d) * d->Q;
    const size_t col  = is_direct(d) ? 0 : ((rows * rsc + 15) & ~(size_t)15);
    return sums + bf16_gemm_part(nthreads) + col +
           bf16_floats(nk_gemm_bf16_packed_b_elems((int)rows, d->K));
}

void nk_conv2d_bwd_filter_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                                   const float *x, const float *dy, float *dw, float *db)
{
    const int nt = nthreads_of(ex), K = d->K, rsc = d->R * d->S * d->C;
    const int64_t lines = (int64_t)d->N * d->P;
    int64_t lp;
    const int64_t nch = wgrad_split(d, &lp);
    // db is summed while dy is packed (no pass of its own over dy): float sums per chunk of rows,
    // then the chunks in order (as dw's partials, or in double over the unsplit loop's steps).
    float *sums   = ex->ws;
    float *ws     = sums + wgrad_sum_floats(d, nch);
    double *dbsum = (double *)sums;
    if (nch > 0) {
        const int64_t nw = (int64_t)rsc * K;
        float *part      = ws;
        float *tws       = part + ((nch * nw + 15) & ~(int64_t)15);
        const size_t per = wgrad_split_thread_floats(d, lp), g1 = bf16_gemm_part(1);
        const int64_t sub = wgrad_sub_lines(d, lp);
        const size_t colf =
            is_direct(d) ? 0 : (((size_t)sub * d->Q * (size_t)rsc + 15) & ~(size_t)15);
        const size_t bpf = bf16_floats(nk_gemm_bf16_packed_b_elems((int)(sub * d->Q), K));
#pragma omp parallel num_threads(nt)
        {
            float *mine       = tws + (size_t)omp_get_thread_num() * per;
            const nk_exec one = {1, mine, g1, ex->conv_algo};
            float *col        = mine + g1;
            uint16_t *bp      = (uint16_t *)(col + colf);
            float *psum       = col + colf + bpf;
#pragma omp for schedule(dynamic, 1)
            for (int64_t c = 0; c < nch; c++) {
                const int64_t l0 = c * lp, l1 = l0 + lp < lines ? l0 + lp : lines;
                float *cs = sums + c * K; // this chunk's bias sums
                for (int64_t s0 = l0; s0 < l1; s0 += sub) {
                    const int64_t s1 = s0 + sub < l1 ? s0 + sub : l1;
                    const int rows   = (int)((s1 - s0) * d->Q);
                    const float *src = x + s0 * d->Q * d->C;
                    if (!is_direct(d)) {
                        im2col(d, x, s0, s1, col, 1);
                        src = col;
                    }
                    if (db)
                        nk_gemm_bf16_pack_b_sum_mt(1, rows, K, dy + s0 * d->Q * K, K, bp,
                                                   s0 == l0 ? cs : psum);
                    else
                        nk_gemm_bf16_pack_b(0, rows, K, dy + s0 * d->Q * K, K, bp);
                    for (int k = 0; db && s0 > l0 && k < K; k++)
                        cs[k] += psum[k];
                    nk_gemm_bf16_at_cpu(impl, &one, rsc, K, rows, src, rsc, bp,
                                        s0 == l0 ? 0.0f : 1.0f, part + c * nw, K);
                }
            }
            add_partials(part, nch, nw, dw);
            if (db) add_partials(sums, nch, K, db);
        }
        return;
    }
    const int64_t step    = wgrad_chunk_lines(d);
    const size_t rows_max = (size_t)step * d->Q, g = bf16_gemm_part(nt);
    float *col   = ws + g;
    uint16_t *bp = (uint16_t *)(col + (is_direct(d) ? 0 : ((rows_max * rsc + 15) & ~(size_t)15)));
    const nk_exec gex = {nt, ws, g, ex->conv_algo};
    float *chunk_sum  = sums + 2 * (size_t)K; // after the K doubles
    for (int64_t l0 = 0; l0 < lines; l0 += step) {
        const int64_t l1 = l0 + step < lines ? l0 + step : lines;
        const int rows   = (int)((l1 - l0) * d->Q);
        const float *src = x + l0 * d->Q * d->C; // a 1x1 stride-1 conv's patches are x's rows
        if (!is_direct(d)) {
            im2col(d, x, l0, l1, col, nt);
            src = col;
        }
        if (db) {
            nk_gemm_bf16_pack_b_sum_mt(nt, rows, K, dy + l0 * d->Q * K, K, bp, chunk_sum);
            for (int k = 0; k < K; k++)
                dbsum[k] = (l0 == 0 ? 0.0 : dbsum[k]) + chunk_sum[k];
        } else {
            nk_gemm_bf16_pack_b_mt(nt, 0, rows, K, dy + l0 * d->Q * K, K, bp);
        }
        nk_gemm_bf16_at_cpu(impl, &gex, rsc, K, rows, src, rsc, bp, l0 == 0 ? 0.0f : 1.0f, dw, K);
    }
    if (db)
        for (int k = 0; k < K; k++)
            db[k] = (float)dbsum[k];
}
