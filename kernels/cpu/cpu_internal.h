/*
 * cpu_internal.h: what the plain C drivers in kernels/cpu/ (gemm.c, conv.c, cpu.c) need from the
 * ISA-specific files (*_avx512.c, *_avx2.c). Not a public header: libnet sees only kernels/nk.h.
 * The drivers never use intrinsics; they pick one of these tables at run time (BLIS cntx_init
 * style). Tests: tests/test_gemm.c and tests/test_ops.c.
 */
#ifndef NK_CPU_INTERNAL_H
#define NK_CPU_INTERNAL_H

#include <stdint.h>

#include "kernels/nk.h"

// Micro-kernel: C[0:m,0:n] = alpha * Apanel Bpanel + beta * C, for m <= mr, n <= nr.
// a is a packed panel a[p*mr + i] (i < mr, rows >= m are zero), b a packed panel b[p*nr + j]
// (columns >= n are zero), both kc long. beta == 0 never reads C (so NaNs there are ignored).
typedef void (*nk_gemm_ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                               float alpha, float beta, int m, int n);

// Packers. pack_a writes ceil(mc/mr) panels of mr x kc from op(A) (ta: A is stored [K,M]) whose
// element (0,0) is at A; pack_b writes ceil(nc/nr) panels of kc x nr from op(B) (tb: B stored
// [N,K]). Partial panels are zero-padded, so the micro-kernel always runs full mr x nr tiles.
typedef void (*nk_gemm_pack_a_fn)(int ta, int mc, int kc, const float *A, int64_t lda, float *dst);
typedef void (*nk_gemm_pack_b_fn)(int tb, int kc, int nc, const float *B, int64_t ldb, float *dst);
// Non-temporal (streamed) stores are weakly ordered: each thread that made some (on) runs this
// SFENCE before its parallel region's closing barrier, so they are visible before C is read.
static inline void nk_nt_fence(int on)
{
#ifdef __SSE__
    if (on) __builtin_ia32_sfence();
#else
    (void)on;
#endif
}

// A micro-tile's fused epilogue, applied in registers before C is stored, in the order of
// nk_tile_epi_fn: bias, sc and sh point at the tile's first column, res at its element (0,0)
// (C's ldc); each may be NULL.
// stream: the kernel may store whole-width tiles with non-temporal stores (see sgemm_run); the
// caller fences them (nk_nt_fence) before anyone reads C.
typedef struct nk_tile_epi {
    const float *bias, *sc, *sh, *res;
    int relu, stream;
} nk_tile_epi;

// gemm_avx512.c's ukr_atb prefetches A and B rows of at least this many floats (see there).
extern int nk_atb_pf_min_ld;
// gemm.c's bf16 A packer prefetches rows of at least this many floats (see there).
extern int nk_bf16_pack_pf_min_ld;
// gemm.c's bf16 row kernels prefetch A's rows when A holds at least this many bytes (see there).
extern int64_t nk_bf16_rows_pf_min_bytes;

// Micro-kernel on unpacked A rows (a batch-reduce GEMM, as oneDNN's brgemm): C[0:m,0:n] =
// sum over segments s of A_s B_s + beta * C, where A_s's row i is rows[s*mr + i] (seglen[s]
// contiguous floats; a row of zeros for padding taps and rows >= m) and B_s the next seglen[s]
// k of the packed panel b, then the epilogue e (NULL: none). No alpha: convolutions only.
typedef void (*nk_gemm_ukr_rows_fn)(int nseg, const int *seglen, const float *const *rows,
                                    const float *b, float *c, int64_t ldc, float beta, int m, int n,
                                    const nk_tile_epi *e);

// Unpacked C[0:m,0:n] = A^T B + beta * C over kc k steps, with a[p*lda + i] and b[p*ldb + j]
// (both operands [k, channels] row-major, as activations and gradients are: a weight gradient
// without packing). m <= mr, n <= nr; rows past m of A and columns past n of B are not read.
typedef void (*nk_gemm_ukr_atb_fn)(int64_t kc, const float *a, int64_t lda, const float *b,
                                   int64_t ldb, float *c, int64_t ldc, float beta, int m, int n);

// The fused epilogue on one finished m x n tile of C (still in L1), in this order: + bias[j],
// then c * sc[j] + sh[j], then + res (same layout and ldc as c), then ReLU (NaN -> 0, as the
// references); each of bias, sc (with sh) and res may be NULL.
typedef void (*nk_tile_epi_fn)(float *c, int64_t ldc, int m, int n, const float *bias,
                               const float *sc, const float *sh, const float *res, int relu);

// One ISA's GEMM: register block mr x nr and cache blocks mc (A block in L2), kc (depth),
// nc (B block in L3). mc is a multiple of mr and nc a multiple of nr.
typedef struct nk_gemm_kernel {
    int mr, nr, mc, kc, nc;
    nk_gemm_ukr_fn ukr;
    nk_gemm_pack_a_fn pack_a;
    nk_gemm_pack_b_fn pack_b;
    nk_gemm_ukr_rows_fn ukr_rows; // NULL: convolutions go through im2col with this ISA
    // ukr_rows prefetching its rows ahead, for A read in place from memory (the implicit GEMM;
    // Winograd's rows are in L2). NULL: ukr_rows.
    nk_gemm_ukr_rows_fn ukr_rows_pf;
    nk_gemm_ukr_atb_fn ukr_atb; // NULL: nk_sgemm_atb_cpu packs as nk_sgemm_cpu does
    nk_tile_epi_fn epi;         // NULL: the plain C epilogue in gemm.c
    // Convolutions read in place (the implicit GEMM) store their outputs non-temporally whenever
    // their fused epilogue does more than add a bias (inference, fine-tuning's frozen layers),
    // not only when it adds a residual (see sgemm_run).
    int stream_all;
} nk_gemm_kernel;

// Calls name_avx512, name_avx2 or name_base by the CPU's ISA: the copies of one loop file
// (bn_impl.h, pool_impl.h) built with each ISA's flags.
#define NK_CALL_BY_ISA(name, ...)                                                                  \
    (nk_cpu_detect() >= NK_ISA_AVX512 ? name##_avx512(__VA_ARGS__)                                 \
     : nk_cpu_detect() >= NK_ISA_AVX2 ? name##_avx2(__VA_ARGS__)                                   \
                                      : name##_base(__VA_ARGS__))

// Largest blocks any table uses; nk_sgemm_ws_floats sizes the workspace from these.
#define NK_GEMM_MAX_MC 480
#define NK_GEMM_MAX_KC 512
#define NK_GEMM_MAX_NC 3072

extern const nk_gemm_kernel nk_gemm_kernel_scalar;
extern const nk_gemm_kernel nk_gemm_kernel_avx2;
extern const nk_gemm_kernel nk_gemm_kernel_avx512;
// The same kernels with the 12 x 32 block, for the fully packed GEMM (gemm_packed_avx512.c).
extern const nk_gemm_kernel nk_gemm_kernel_avx512_12x32;

// nk_sgemm_cpu with a fused epilogue: C = alpha op(A) op(B) + beta C, then + bias[N] (may be
// NULL), then ep (may be NULL: per-column scale/shift, a residual with C's ldc, ReLU; see
// nk_epilogue), applied per tile
// while it is in L1. With a bias, beta must be 0 (callers here only ever add a bias to a fresh
// output). Same workspace as nk_sgemm_cpu.
void nk_sgemm_cpu_epi(nk_isa isa, const nk_exec *ex, int ta, int tb, int M, int N, int K,
                      float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc, const float *bias, const nk_epilogue *ep);

// Implicit-GEMM forward convolution (no im2col, no A packing) with the fused epilogue: A's rows
// are output pixels, k = (r*S + s)*C + c, and the micro-kernel broadcasts straight from x through
// per-row pointers, one segment per filter tap. Needs d->C % 16 == 0 and an ISA whose table has
// ukr_rows (nk_sgemm_conv_ok). Scratch nk_sgemm_ws_floats (the A block holds the row pointers).
int nk_sgemm_conv_ok(nk_isa isa, const nk_conv_desc *d);
// wp: w packed by nk_sgemm_pack_b_full (or NULL: w is packed block by block as usual).
void nk_sgemm_conv_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                       const float *w, const float *wp, const float *b, const nk_epilogue *ep,
                       float *y);
// The same GEMM on the transposed filter: y[M, K] = patches(x) wt^T + beta y, wt row-major
// [d->K, R*S*C] (packed block by block). A 1x1 stride-1 convolution's input gradient is this with
// dy as x and the filter as wt (C and K swapped in d).
void nk_sgemm_conv_bt_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                          const float *wt, float beta, float *y);
// C[M,N] = A[M,K] Bp (+ bias, ep) with B packed whole by nk_sgemm_pack_b_full.
void nk_sgemm_cpu_pb(nk_isa isa, const nk_exec *ex, int M, int N, int K, const float *A, int lda,
                     const float *Bp, float *C, int ldc, const float *bias, const nk_epilogue *ep);

// C[M,N] = A^T B + beta * C with A [K,M] (lda) and B [K,N] (ldb) row-major: a weight gradient
// (x^T dy). Without packing where the ISA has ukr_atb; threads own blocks of C and run all of K,
// so the result does not depend on the thread count. Same workspace as nk_sgemm_cpu.
void nk_sgemm_atb_cpu(nk_isa isa, const nk_exec *ex, int M, int N, int K, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);

// out[N] = column sums of x[M,N] (row-major), accumulated in double, the same for any thread
// count. Used for bias gradients. With ex->ws of nk_colsum_ws_floats(M, N) it reads x once in
// cached chunks of rows (bn.c); without, nk_colsum_cols_cpu: threads own column ranges.
size_t nk_colsum_ws_floats(int64_t M, int N);
void nk_colsum_cpu(const nk_exec *ex, int64_t M, int N, const float *x, float *out);
void nk_colsum_cols_cpu(const nk_exec *ex, int64_t M, int N, const float *x, float *out);

// FMA throughput loops for nk_fma_peak_gflops: run `iters` iterations of independent FMAs on
// registers only and return the number of floating-point operations done.
double nk_fma_loop_scalar(int64_t iters);
double nk_fma_loop_avx2(int64_t iters);
double nk_fma_loop_avx512(int64_t iters);

// ---- bf16 (nk_gemm_bf16_cpu) ----
//
// Micro-tile: a table's mr rows x NK_BF16_NR columns (mr: NK_BF16_MR for the VDPBF16PS and
// portable tables, 32 for AMX's two 16-row tiles; at most NK_BF16_MR_MAX). Packed A holds, per
// panel of mr rows, k pair q of row i as one 32-bit word at q*mr + i (low half the even k; the
// AMX tables lay each 32-k chunk out row-major instead, see gemm_amx_impl.h); packed B is the
// layout of nk_gemm_bf16_pack_b.
#define NK_BF16_MR     12
#define NK_BF16_MR_MAX 32

// C[0:m,0:n] = Apanel Bpanel + beta * C over kp k pairs (a and b as above, b a panel of NR
// columns). beta == 0 never reads C.
typedef void (*nk_bf16_ukr_fn)(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                               int64_t ldc, float beta, int m, int n);
// Rounds one chunk of w <= 32 consecutive k of mr rows to bf16 and stores it packed: src[i]
// points at row i's first float (NULL: a row of zeros); writes ceil(w/2) pair words per row at
// dst[q*mr + i] (an odd w pads the last pair with a zero).
typedef void (*nk_bf16_pack_fn)(const float *const *src, int w, uint32_t *dst);

// The same panel for A stored transposed ([K, M], a weight gradient's x^T): rows i < m of the
// panel are columns of src, k step p at src[p*lda + i]; kc k steps (an odd kc pads the last pair
// with a zero), rows past m zero.
typedef void (*nk_bf16_pack_t_fn)(const float *src, int64_t lda, int m, int kc, uint32_t *dst);
// One panel of nk_gemm_bf16_pack_b's layout from row-major B (not transposed): columns [0, n) of
// B (n <= NK_BF16_NR; the rest of the panel zero), all K rows, rows paired. colsum (may be NULL)
// gets the float32 sums of those n columns of B, rows added in order (a bias gradient read on the
// same pass).
typedef void (*nk_bf16_pack_b_fn)(const float *B, int64_t ldb, int K, int n, uint32_t *dst,
                                  float *colsum);

// Batch-reduce form on unpacked bf16 rows (see nk_gemm_ukr_rows_fn): segment s has segp[s] k
// pairs, row i of it at rows[s*mr + i] (32-bit pair words: bf16 activations, NHWC). pf: the rows
// are read here for the first time (the first column panel): prefetch them ahead.
typedef void (*nk_bf16_ukr_rows_fn)(int nseg, const int *segp, const uint32_t *const *rows,
                                    const uint32_t *b, float *c, int64_t ldc, float beta, int m,
                                    int n, int pf);
// y[0:n] = bf16(x[0:n]) (nk_f32_to_bf16's rounding).
typedef void (*nk_bf16_convert_fn)(int64_t n, const float *x, uint16_t *y);

// Finishes an output tile c (m x n floats, ldc) of a bf16 GEMM: bias, scale/shift (sc, sh), the
// residual from bf16 resb (ldr) when not NULL, ReLU; then stores it rounded to bf16 into yb (ldy),
// or in place as float32 when yb is NULL. Any pointer but c may be NULL.
typedef void (*nk_bf16_fin_fn)(float *c, int64_t ldc, int m, int n, const float *bias,
                               const float *sc, const float *sh, const uint16_t *resb, int64_t ldr,
                               int relu, uint16_t *yb, int64_t ldy);

// The finish of nk_bf16_fin_fn for one micro-tile, as arguments (any pointer may be NULL but yb).
typedef struct nk_bf16_fin_args {
    const float *bias, *sc, *sh;
    const uint16_t *resb;
    int64_t ldr;
    int relu;
    uint16_t *yb;
    int64_t ldy;
} nk_bf16_fin_args;

// ukr_rows on the last k block of a bf16-output GEMM: the sum (acc + beta * c; c is the float32
// partial sum of the earlier k blocks) finished as nk_bf16_fin_fn does, in registers, and stored
// only to f->yb in bf16 (c is not written). Same values as ukr_rows, then fin.
typedef void (*nk_bf16_ukr_rows_fin_fn)(int nseg, const int *segp, const uint32_t *const *rows,
                                        const uint32_t *b, const float *c, int64_t ldc, float beta,
                                        int m, int n, int pf, const nk_bf16_fin_args *f);

typedef struct nk_bf16_kernel {
    int mr; // rows of a micro-tile and of a packed A panel (<= NK_BF16_MR_MAX, divides 480)
    nk_bf16_ukr_fn ukr;
    nk_bf16_pack_fn pack;
    nk_bf16_pack_t_fn pack_t;
    nk_bf16_pack_b_fn pack_b; // NULL: the portable packer
    nk_bf16_ukr_rows_fn ukr_rows;
    nk_bf16_ukr_rows_fin_fn ukr_rows_fin; // NULL: ukr_rows, then fin
    nk_bf16_convert_fn convert;
    nk_bf16_fin_fn fin;
} nk_bf16_kernel;

extern const nk_bf16_kernel nk_bf16_kernel_avx512;
// AMX (TDPBF16PS; gemm_amx.c) and the same kernels on a plain C model of the tile operations
// (gemm_amx_emu.c, any CPU: for tests). Their packed A is laid out per 32-k chunk (see
// gemm_amx_impl.h); B is nk_gemm_bf16_pack_b's.
extern const nk_bf16_kernel nk_bf16_kernel_amx;
extern const nk_bf16_kernel nk_bf16_kernel_amx_emu;
// The tables' shared pieces: the AVX512_BF16 finish and rounding (the AMX table's), the portable
// ones (gemm.c; the emulated table's).
void nk_bf16_fin_avx512(float *c, int64_t ldc, int m, int n, const float *bias, const float *sc,
                        const float *sh, const uint16_t *resb, int64_t ldr, int relu, uint16_t *yb,
                        int64_t ldy);
void nk_bf16_convert_avx512(int64_t n, const float *x, uint16_t *y);
void nk_bf16_fin_scalar(float *c, int64_t ldc, int m, int n, const float *bias, const float *sc,
                        const float *sh, const uint16_t *resb, int64_t ldr, int relu, uint16_t *yb,
                        int64_t ldy);
void nk_bf16_convert_scalar(int64_t n, const float *x, uint16_t *y);

// LDTILECFG's 64-byte operand, palette 1: tile t has rows[t] rows of colsb[t] bytes.
typedef struct __attribute__((packed, aligned(64))) amx_cfg {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;
_Static_assert(sizeof(amx_cfg) == 64, "LDTILECFG reads 64 bytes");
// TDPBF16PS throughput loop for nk_bf16_peak_gflops on AMX; returns the flops done.
double nk_amx_loop(int64_t iters);

// nk_gemm_bf16_pack_b_mt for row-major B that also writes colsum[0:N], the float32 sum of each
// column of B, its rows added in order (one thread per column: the sums do not depend on
// nthreads).
void nk_gemm_bf16_pack_b_sum_mt(int nthreads, int K, int N, const float *B, int ldb, uint16_t *dst,
                                float *colsum);

// C[M,N] = bf16(A)^T Bp + beta * C with A stored [K, M] (lda): weight gradients (dw = x^T dy) in
// bf16 without transposing x. Bp from nk_gemm_bf16_pack_b (K, N). Scratch nk_gemm_bf16_ws_floats.
void nk_gemm_bf16_at_cpu(nk_bf16_impl impl, const nk_exec *ex, int M, int N, int K, const float *A,
                         int lda, const uint16_t *Bp, float beta, float *C, int ldc);

// y[0:n] = bf16(x[0:n]), threaded in chunks of 64 Ki elements (one thread below 4 chunks).
void nk_bf16_convert_mt(nk_bf16_impl impl, int nthreads, int64_t n, const float *x, uint16_t *y);

// C[M,N] = A Bp (+ bias, epilogue) with A already bf16, row-major: K and lda even (a row's
// pairs are 32-bit words, read unpacked by the micro-kernel; a K past Bp's rows pairs with its
// zero padding). Scratch nk_gemm_bf16_ws_floats.
void nk_gemm_bf16_rows_cpu(nk_bf16_impl impl, const nk_exec *ex, int M, int N, int K,
                           const uint16_t *A, int lda, const uint16_t *Bp, float *C, uint16_t *Cb,
                           int ldc, const float *bias, const nk_epilogue *ep);

// The implicit-GEMM form of nk_conv2d_fwd_bf16_cpu: A's rows are output pixels and its
// k = (r*S + s)*C + c. With xb (room for N*H*W*C bf16; needs C even), x is rounded to bf16 once
// into xb (x NULL: xb holds it already) and the micro-kernel broadcasts pairs straight from it
// (no A packing); without,
// d->C % 32 == 0 and the packer gathers and rounds patches from x. yb (needs xb): the output in
// bf16 instead of y. Scratch nk_gemm_bf16_ws_floats (plus xb).
void nk_gemm_bf16_conv_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                           const float *x, uint16_t *xb, const uint16_t *wp, const float *b,
                           const nk_epilogue *ep, float *y, uint16_t *yb);

// VDPBF16PS throughput loop for nk_bf16_peak_gflops; returns the flops done.
double nk_bf16_loop_avx512(int64_t iters);

// ---- Winograd F(4x4, 3x3) (winograd.c; AVX-512 or AVX2) ----
//
// nk_wino_ok: a 3x3 stride-1 'same' convolution with C and K multiples of 16 on an AVX2 or
// AVX-512 machine, asked for at the machine's own ISA or above (the transforms and U's layout are
// the CPU's: nk_cpu_detect picks the tables, so a capped NK_ISA reaches the AVX2 ones). The weights
// are transformed and packed once (nk_wino_packed_floats floats; the batch size N of d is not
// used), then nk_wino_fwd computes the forward with the fused epilogue (ep may be NULL) in
// nk_wino_ws_floats(d, nthreads) floats of ex->ws.
int nk_wino_ok(nk_isa isa, const nk_conv_desc *d);
// Floats of the shared V chunk (2 Mi); tests lower it to reach several chunks on small shapes
// (set it before sizing the workspace).
extern size_t nk_wino_chunk_floats;
// U (the transformed weights) of at least this many bytes is stored non-temporally (4 MiB:
// conv4's 9.4 MB and conv5's 38 MB; tests lower it to 0 to reach that path on small shapes).
extern size_t nk_wino_nt_min_bytes;
// Fewest tiles (batch included) for which the passes on unpacked weights run Winograd (48; conv.c
// says why); a global so that tests can run small shapes through those passes too.
extern int nk_wino_min_tiles_w;
size_t nk_wino_packed_floats(const nk_conv_desc *d);
void nk_wino_pack(int nthreads, const nk_conv_desc *d, const float *w, float *dst);
// U of the convolution that computes d's input gradient as a forward (its filter turned 180
// degrees, C and K swapped: conv.c's flipped_desc), straight from d's filter w, in the layout
// nk_wino_pack writes for that convolution (nk_wino_packed_floats of it).
void nk_wino_pack_flipped(int nthreads, const nk_conv_desc *d, const float *w, float *dst);
size_t nk_wino_ws_floats(const nk_conv_desc *d, int nthreads);
// x (or, when xb != NULL, bf16 activations xb) in; y (or, when yb != NULL, bf16 yb) out. The
// epilogue's residual must be float32.
void nk_wino_fwd(const nk_exec *ex, const nk_conv_desc *d, const float *x, const uint16_t *xb,
                 const float *up, const float *b, const nk_epilogue *ep, float *y, uint16_t *yb);
// Weight gradient dw [3,3,C,K] (overwritten) by Winograd in nk_wino_wgrad_ws_floats(d, nthreads)
// floats of ex->ws: summed over tile chunks in a fixed order (the same for any thread count).
size_t nk_wino_wgrad_ws_floats(const nk_conv_desc *d, int nthreads);
void nk_wino_wgrad(const nk_exec *ex, const nk_conv_desc *d, const float *x, const float *dy,
                   float *dw);
// The transforms, one table per ISA (winograd_avx512.c, winograd_avx2.c), picked with the GEMM
// table whose batch-reduce micro-kernel runs the 36 products (gemm: its nr is U's panel width).
// in: V[e * ves + c] (e < 36, c < C, C % 16 == 0) from the 6x6 patch of image xb (H x W x C, NHWC;
// float32, or bf16 for in_bf16) whose corner is (ih0, iw0), zeros outside the image.
// out: the 4x4 tile from M[e * mes + k] (k < n, n % 16 == 0) into y[i * ldh + j * ldw + k] (or
// rounded to bf16, as nk_f32_to_bf16, into yb at the same offsets when yb != NULL) for i < rows,
// j < cols, with the epilogue of nk_tile_epi_fn (res float32, y's layout).
// wt: U[e * ues + j] for e < 36, j < 16, from the 3x3 filters g[(r*3 + s) * ld + j]. nt:
// non-temporal stores (u and ues 64-byte aligned; the caller fences).
// wt_flip: the same for the filter turned 180 degrees and transposed (backward data as a
// forward): from the 16 x 16 block w[tap * ldtap + i * ldc + j] (i < 16 input channels c, j < 16
// output channels k), U'[e * ues + j * ldk + i] = the transform of w[(8 - tap) * ldtap + i * ldc +
// j].
// dy (weight gradient): Z[e * zes + k] (k < K, K % 16 == 0) = (A dY A^T) of the 4x4 tile of dyb
// (P x Q x K) whose corner is (oh0, ow0), zeros past P and Q; dw: dW = G^T M G for 16 channel
// pairs, M[e * mes + j] (j < 16) into dw[(r*3 + s) * ldtap + j].
typedef struct nk_wino_kernel {
    nk_isa isa;
    const nk_gemm_kernel *gemm;
    void (*in)(const float *xb, int H, int W, int C, int ih0, int iw0, float *v, int64_t ves);
    void (*in_bf16)(const uint16_t *xb, int H, int W, int C, int ih0, int iw0, float *v,
                    int64_t ves);
    void (*out)(const float *m, int64_t mes, int n, float *y, uint16_t *yb, int64_t ldh,
                int64_t ldw, int rows, int cols, const float *bias, const float *sc,
                const float *sh, const float *res, int relu);
    void (*wt)(const float *g, int64_t ld, float *u, int64_t ues, int nt);
    void (*wt_flip)(const float *w, int64_t ldc, int64_t ldtap, float *u, int64_t ldk, int64_t ues,
                    int nt);
    void (*dy)(const float *dyb, int P, int Q, int K, int oh0, int ow0, float *z, int64_t zes);
    void (*dw)(const float *m, int64_t mes, float *dw, int64_t ldtap);
} nk_wino_kernel;

extern const nk_wino_kernel nk_wino_kernel_avx512;
extern const nk_wino_kernel nk_wino_kernel_avx2;

#endif
