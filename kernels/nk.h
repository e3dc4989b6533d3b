/*
 * nk.h: the kernel interface of pneumo. Math only, on raw pointers and shapes.
 * Kernels never allocate, print or do I/O, and know nothing of tensors; libnet checks shapes
 * before it calls them. kernels/ref/ is the specification (plain C, one thread); kernels/cpu/
 * holds the fast CPU paths, tested against ref/ in tests/test_ops.c and tests/test_gemm.c.
 *
 * Layouts (project-wide): activations NHWC, conv weights HWIO = [R,S,C,K], dense weights [C,K].
 * Shape letters: N batch, C in-channels, K out-channels, H W input size, P Q output size,
 * R S filter size.
 */
#ifndef NK_H
#define NK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- deterministic hashing (shared with tests/gen_fixtures.py) ----
//
// Every random number pneumo draws for weights and dropout comes from these two functions,
// so a Python script can reproduce them exactly:
//   nk_mix64(z):   z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27;
//                  z *= 0x94D049BB133111EB; z ^= z >> 31   (all mod 2^64; splitmix64's finaliser)
//   nk_u01(key,i): (nk_mix64(key + 0x9E3779B97F4A7C15 * (i + 1)) >> 40) * 2^-24, in [0, 1)
#define NK_GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t nk_mix64(uint64_t z)
{
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z;
}

static inline float nk_u01(uint64_t key, uint64_t i)
{
    return (float)(nk_mix64(key + NK_GOLDEN * (i + 1)) >> 40) * (1.0f / 16777216.0f);
}

// ---- execution context for fast kernels ----
//
// Fast kernels get the thread count and a scratch area from the caller (libnet owns it).
// ws may be NULL when ws_floats is 0; a kernel that needs more than ws_floats says so through its
// *_ws_floats() query, which the caller must consult first. Ref kernels take no nk_exec.
typedef struct nk_exec {
    int nthreads;
    float *ws;
    size_t ws_floats;
    // An nk_conv_algo for the float32 convolutions that take w unpacked (forward, and backward
    // data as a forward on the flipped filter): 0 (NK_CONV_AUTO) lets them run Winograd.
    int conv_algo;
} nk_exec;

// ---- convolution ----
//
// x [N,H,W,C], w [R,S,C,K], b [K] (may be NULL), y [N,P,Q,K].
// pad_h/pad_w are the zeros above/left of the input; the zeros below/right are whatever
// P and Q imply: P = (H + pad_h + pad_bottom - R) / stride + 1. A tap that falls outside
// [0,H)x[0,W) reads zero.
typedef struct nk_conv_desc {
    int N, H, W, C, K, R, S, P, Q;
    int stride, pad_h, pad_w;
} nk_conv_desc;

void nk_conv2d_fwd_ref(const nk_conv_desc *d, const float *x, const float *w, const float *b,
                       float *y);
// dx = conv_transpose(dy, w); overwrites dx [N,H,W,C].
void nk_conv2d_bwd_data_ref(const nk_conv_desc *d, const float *dy, const float *w, float *dx);
// dw [R,S,C,K] and db [K] (db may be NULL) are overwritten.
void nk_conv2d_bwd_filter_ref(const nk_conv_desc *d, const float *x, const float *dy, float *dw,
                              float *db);

// ---- batch normalisation over M = N*H*W rows of C channels ----
//
// Training: batch mean and biased variance; mean[C] and invstd[C] = 1/sqrt(var + eps) are
// written for the backward pass and for the caller's moving-average update (var is recovered as
// 1/invstd^2 - eps). Inference: y = gamma * (x - mmean) / sqrt(mvar + eps) + beta.
// relu: y = max(bn(x), 0) (NaN -> 0): a BN and the ReLU after it as one op.
void nk_bn_fwd_train_ref(int64_t M, int C, const float *x, const float *gamma, const float *beta,
                         float eps, int relu, float *y, float *mean, float *invstd);
void nk_bn_fwd_infer_ref(int64_t M, int C, const float *x, const float *gamma, const float *beta,
                         const float *mmean, const float *mvar, float eps, float *y);
// Backward of the training form. dx [M,C], dgamma [C], dbeta [C] are overwritten; dx may be NULL.
// ry (may be NULL): the output of the fused ReLU (relu = 1 above); dy is then the gradient of
// that output and counts only where ry > 0.
void nk_bn_bwd_train_ref(int64_t M, int C, const float *x, const float *ry, const float *dy,
                         const float *gamma, const float *mean, const float *invstd, float *dx,
                         float *dgamma, float *dbeta);
// Backward of the inference form (a per-channel affine map). Overwrites dx; dgamma/dbeta may be
// NULL (frozen statistics), otherwise overwritten.
void nk_bn_bwd_infer_ref(int64_t M, int C, const float *x, const float *dy, const float *gamma,
                         const float *mmean, const float *mvar, float eps, float *dx, float *dgamma,
                         float *dbeta);

// ---- elementwise ----
void nk_relu_fwd_ref(int64_t n, const float *x, float *y);
// dx = dy where y > 0, else 0. In-place (dx == dy) is allowed.
void nk_relu_bwd_ref(int64_t n, const float *y, const float *dy, float *dx);
void nk_add_fwd_ref(int64_t n, const float *a, const float *b, float *y);

// ---- zero padding (Keras ZeroPadding2D) ----
// x [N,H,W,C] -> y [N,H+pt+pb,W+pl+pr,C]; backward crops.
void nk_zeropad_fwd_ref(int N, int H, int W, int C, int pt, int pb, int pl, int pr, const float *x,
                        float *y);
void nk_zeropad_bwd_ref(int N, int H, int W, int C, int pt, int pb, int pl, int pr, const float *dy,
                        float *dx);

// ---- max pooling, no padding (Keras pads with a ZeroPadding2D layer first) ----
// Uses nk_conv_desc with C == K; x [N,H,W,C] -> y [N,P,Q,C]. Backward routes each dy to the
// first maximum of its window in row-major (r, s) order; dx is overwritten.
void nk_maxpool_fwd_ref(const nk_conv_desc *d, const float *x, float *y);
void nk_maxpool_bwd_ref(const nk_conv_desc *d, const float *x, const float *dy, float *dx);

// ---- global average pooling ----
// x [N,HW,C] -> y [N,C]; backward spreads dy/HW.
void nk_gap_fwd_ref(int N, int HW, int C, const float *x, float *y);
void nk_gap_bwd_ref(int N, int HW, int C, const float *dy, float *dx);

// ---- dense ----
// x [N,C], w [C,K], b [K] (may be NULL), y [N,K]. relu != 0 applies ReLU to y.
void nk_dense_fwd_ref(int N, int C, int K, const float *x, const float *w, const float *b, int relu,
                      float *y);
// dx [N,C] = dy w^T (overwrites); dw [C,K] = x^T dy and db [K] = sum dy (overwrite; db may be
// NULL). dy here is the gradient after the activation has been undone by the caller.
void nk_dense_bwd_data_ref(int N, int C, int K, const float *dy, const float *w, float *dx);
void nk_dense_bwd_filter_ref(int N, int C, int K, const float *x, const float *dy, float *dw,
                             float *db);

// ---- dropout (inverted: kept values scaled by 1/(1-rate)) ----
// Element i is kept when nk_u01(key, i) >= rate. The mask is recomputed in backward from key.
void nk_dropout_fwd_ref(int64_t n, float rate, uint64_t key, const float *x, float *y);
void nk_dropout_bwd_ref(int64_t n, float rate, uint64_t key, const float *dy, float *dx);

// ---- sigmoid fused with class-weighted binary cross-entropy (Keras semantics) ----
// z [N] logits, t [N] labels in {0,1} (any value in [0,1] works), wt [N] per-sample weights or
// NULL (all 1). p = sigmoid(z) clipped to [1e-7, 1-1e-7], as Keras clips; equivalently z is
// clamped to +-NK_BCE_ZMAX. loss = sum_i wt_i * l_i / N, l_i = -(t log p + (1-t) log(1-p)).
// Returns the loss (computed in double); writes p[N] when p != NULL.
#define NK_BCE_EPS  1e-7
#define NK_BCE_ZMAX 16.118095550958316 // log((1 - NK_BCE_EPS) / NK_BCE_EPS)
double nk_bce_fwd_ref(int N, const float *z, const float *t, const float *wt, float *p);
// dz_i = wt_i * (sigmoid(z_i) - t_i) / N inside the clip range, 0 outside it (the gradient of
// the clipped form). Overwrites dz.
void nk_bce_bwd_ref(int N, const float *z, const float *t, const float *wt, float *dz);

// ---- GEMM (reference) ----
// Row-major. C[M,N] = alpha * op(A) op(B) + beta * C, op(A) is [M,K] (A is [K,M] when ta),
// op(B) is [K,N] (B is [N,K] when tb). beta == 0 ignores C's old contents (NaNs included).
void nk_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);

// ---- bfloat16 ----
//
// A bf16 value is kept as its bits (uint16_t): the upper half of an IEEE float32. Rounding from
// float32 is to nearest, ties to even, exactly as VCVTNE2PS2BF16 does: zero and denormal inputs
// become a zero of the same sign (the instruction treats denormals as zero), NaN stays a quiet NaN,
// and values that round past the largest finite bf16 become infinities.
static inline uint16_t nk_f32_to_bf16(float f)
{
    union {
        float f;
        uint32_t u;
    } v;
    v.f = f;
    if ((v.u & 0x7f800000u) == 0) return (uint16_t)((v.u >> 16) & 0x8000u);
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x0040u);
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}

static inline float nk_bf16_to_f32(uint16_t h)
{
    union {
        float f;
        uint32_t u;
    } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

// The bf16 GEMM's specification: C[M,N] = op(A)[M,K] op(B)[K,N] + beta * C with every element of
// A and B first rounded to bf16 (nk_f32_to_bf16), products and sums in double, one rounding to
// float at the end. A is row-major [M,K]; B is [K,N], or [N,K] when tb. beta == 0 ignores C's old
// contents. The fast path (nk_gemm_bf16_cpu) accumulates in float32, so it differs from this by
// float32 summation error only: the bf16 rounding of the inputs is the same in both.
void nk_gemm_bf16_ref(int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                      float beta, float *C, int ldc);
// Convolution with x and w rounded to bf16 (bias and sums as above); same contract as
// nk_conv2d_fwd_ref otherwise.
void nk_conv2d_fwd_bf16_ref(const nk_conv_desc *d, const float *x, const float *w, const float *b,
                            float *y);
// dx = conv_transpose(dy, w) with dy and w rounded to bf16 (the input gradient of a conv trained
// in bf16); same contract as nk_conv2d_bwd_data_ref otherwise.
void nk_conv2d_bwd_data_bf16_ref(const nk_conv_desc *d, const float *dy, const float *w, float *dx);
// dw = patches^T dy with x and dy rounded to bf16 (db, when not NULL, the exact float32 column
// sum of dy); same contract as nk_conv2d_bwd_filter_ref otherwise.
void nk_conv2d_bwd_filter_bf16_ref(const nk_conv_desc *d, const float *x, const float *dy,
                                   float *dw, float *db);

// ---- fast CPU paths (kernels/cpu/) ----
//
// CPU features found at run time. nk_cpu_detect() is cheap after the first call.
typedef enum { NK_ISA_SCALAR = 0, NK_ISA_AVX2 = 1, NK_ISA_AVX512 = 2 } nk_isa;
nk_isa nk_cpu_detect(void);
const char *nk_isa_name(nk_isa isa);

// Packed, register-blocked SGEMM with the same contract as nk_sgemm_ref. isa picks the
// micro-kernel (pass nk_cpu_detect(); a lower one is always allowed). Threads with OpenMP over
// ex->nthreads. Needs ex->ws of at least nk_sgemm_ws_floats(ex->nthreads) floats.
size_t nk_sgemm_ws_floats(int nthreads);
void nk_sgemm_cpu(nk_isa isa, const nk_exec *ex, int ta, int tb, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

// Convolution through GEMM. Forward: with AVX-512, convolutions with C % 16 == 0 (and conv1-like
// ones whose filter rows are contiguous in x) are implicit GEMMs whose micro-kernel broadcasts
// straight from x (no im2col, no A packing); the rest use im2col in chunks (1x1 stride-1: x is
// A). Backward data of a stride-1 conv runs as such a forward on the flipped filter; otherwise
// dcol = dy w^T and col2im. Backward filter: im2col and col^T dy. With AVX-512 and
// ex->conv_algo NK_CONV_AUTO, 3x3 stride-1 'same' convolutions with C, K % 16 == 0 run all
// three by Winograd F(4x4, 3x3) instead (kernels/cpu/winograd.c). Same contracts as the _ref
// versions. Scratch: nk_conv2d_ws_floats(d, nthreads), enough for all three.
size_t nk_conv2d_ws_floats(const nk_conv_desc *d, int nthreads);
void nk_conv2d_fwd_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                       const float *w, const float *b, float *y);
void nk_conv2d_bwd_data_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                            const float *w, float *dx);
// The same gradient added into dx (dx += ...), for a tensor that feeds two convs or a conv and a
// shortcut: no scratch tensor and no add pass. A stride-1 filter wider than 1x1 then takes the
// col2im path rather than the forward conv. Same scratch.
void nk_conv2d_bwd_data_acc_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d,
                                const float *dy, const float *w, float *dx);
void nk_conv2d_bwd_filter_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                              const float *dy, float *dw, float *db);

// Fused forward epilogue, applied to each output tile while it is in cache: after the bias,
// y = y * scale[k] + shift[k] when scale != NULL (an inference-mode BatchNormalization folded in:
// scale = gamma / sqrt(var + eps), shift = beta - mean * scale), then y += residual (when not
// NULL: a tensor of y's shape and layout, e.g. a ResNet shortcut; it must not overlap y), then
// ReLU when relu != 0.
typedef struct nk_epilogue {
    const float *scale, *shift;
    int relu;
    const float *residual;
    // The residual as bf16 instead (bf16 activations; read by nk_conv2d_fwd_bf16x_* only, and
    // then residual must be NULL).
    const uint16_t *residual_bf16;
} nk_epilogue;

// nk_conv2d_fwd_bf16_ref with bf16 activations (contract of nk_conv2d_fwd_bf16x_cpu): x from xb
// when xb != NULL, then the epilogue in float32 (ep may be NULL; its residual float32 or bf16),
// then y, or yb rounded to bf16 when yb != NULL.
void nk_conv2d_fwd_bf16x_ref(const nk_conv_desc *d, const float *x, const uint16_t *xb,
                             const float *w, const float *b, const nk_epilogue *ep, float *y,
                             uint16_t *yb);

// nk_conv2d_fwd_cpu followed by the epilogue (ep may be NULL: plain convolution).
void nk_conv2d_fwd_epi_cpu(nk_isa isa, const nk_exec *ex, const nk_conv_desc *d, const float *x,
                           const float *w, const float *b, const nk_epilogue *ep, float *y);

// Inference weights packed once (float32): B = w [R*S*C, K] in the ISA's micro-kernel panels
// over all of K, so that repeated forwards skip packing B (it dominates small batches, where
// each weight is used a few times only). nk_sgemm_packed_b_floats gives the size for B [K,N];
// nk_sgemm_pack_b_full packs a row-major B [K,N] (one thread).
size_t nk_sgemm_packed_b_floats(nk_isa isa, int K, int N);
void nk_sgemm_pack_b_full(nk_isa isa, int K, int N, const float *B, int ldb, float *dst);

// How a packed forward convolution computes. AUTO: Winograd F(4x4, 3x3) for the 3x3 stride-1
// 'same' convolutions with C and K multiples of 16 on AVX-512 (4x fewer multiplies in its GEMMs,
// float32 error about 10x the direct sum's), the implicit GEMM otherwise; GEMM: never Winograd.
typedef enum { NK_CONV_AUTO = 0, NK_CONV_GEMM = 1 } nk_conv_algo;

// Inference convolution on weights packed once: nk_conv2d_pack writes w [R,S,C,K] in
// nk_conv2d_packed_floats floats (B panels as above, or transformed for Winograd; the batch size
// d->N is not used, the packing serves any), and nk_conv2d_fwd_packed_cpu is then
// nk_conv2d_fwd_epi_cpu on it. Pack and run with the same isa and algo. Same scratch
// (nk_conv2d_ws_floats).
// Whether this shape packs for Winograd under algo (any batch size: nk_conv2d_pack's form).
int nk_conv2d_winograd(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d);
// Whether the packed forward at batch d->N runs it: shapes of fewer than 4 tiles an image (conv5
// at 128 px) also pack the GEMM's panels, and run those while the batch has under 4 tiles.
int nk_conv2d_winograd_fwd(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d);
// Whether the passes on weights transformed per call run Winograd: nk_conv2d_fwd_epi_cpu on
// unpacked w, the weight gradient, and the stride-1 input gradient (pass the desc of the forward
// it becomes: C and K swapped). These also need d->N * ceil(P/4) * ceil(Q/4) >= 32 tiles.
int nk_conv2d_winograd_w(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d);
size_t nk_conv2d_packed_floats(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d);
void nk_conv2d_pack(nk_isa isa, nk_conv_algo algo, const nk_conv_desc *d, const float *w,
                    float *dst);
void nk_conv2d_fwd_packed_cpu(nk_isa isa, nk_conv_algo algo, const nk_exec *ex,
                              const nk_conv_desc *d, const float *x, const float *wp,
                              const float *b, const nk_epilogue *ep, float *y);
// The Winograd packed forward (nk_conv2d_winograd true, wp from nk_conv2d_pack with
// NK_CONV_AUTO) with bf16 activations on either side, as bf16 inference stores them: the input
// from xb when not NULL (else x), the output rounded into yb when not NULL (else y); float32
// arithmetic throughout, the epilogue's residual float32 (residual_bf16 unsupported). Where
// nk_conv2d_winograd_fwd is false (under 4 tiles) it runs the packed GEMM panels instead, on
// float32 copies of the bf16 sides. Same scratch.
void nk_conv2d_fwd_wino_x_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                              const uint16_t *xb, const float *wp, const float *b,
                              const nk_epilogue *ep, float *y, uint16_t *yb);

// Threaded pooling, padding and add+ReLU (same contracts as the _ref versions).
void nk_maxpool_fwd_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x, float *y);
void nk_maxpool_bwd_cpu(const nk_exec *ex, const nk_conv_desc *d, const float *x, const float *dy,
                        float *dx);
void nk_zeropad_fwd_cpu(const nk_exec *ex, int N, int H, int W, int C, int pt, int pb, int pl,
                        int pr, const float *x, float *y);
// dx [N,H,W,C] = the interior of dy [N,H+pt+pb,W+pl+pr,C].
void nk_zeropad_bwd_cpu(const nk_exec *ex, int N, int H, int W, int C, int pt, int pb, int pl,
                        int pr, const float *dy, float *dx);
void nk_gap_fwd_cpu(const nk_exec *ex, int N, int HW, int C, const float *x, float *y);
// dx [N,HW,C] = dy [N,C] / HW at every position, the reference's bits.
void nk_gap_bwd_cpu(const nk_exec *ex, int N, int HW, int C, const float *dy, float *dx);
// y = max(a + b, 0): a residual add fused with the ReLU that follows it.
void nk_add_relu_fwd_cpu(const nk_exec *ex, int64_t n, const float *a, const float *b, float *y);

// Dense through GEMM. Same contracts as the _ref versions; scratch nk_sgemm_ws_floats.
void nk_dense_fwd_cpu(nk_isa isa, const nk_exec *ex, int N, int C, int K, const float *x,
                      const float *w, const float *b, int relu, float *y);
void nk_dense_bwd_data_cpu(nk_isa isa, const nk_exec *ex, int N, int C, int K, const float *dy,
                           const float *w, float *dx);
void nk_dense_bwd_filter_cpu(nk_isa isa, const nk_exec *ex, int N, int C, int K, const float *x,
                             const float *dy, float *dw, float *db);

// Threaded elementwise and BN paths (OpenMP over ex->nthreads). Same contracts as _ref.
// Scratch (ex->ws) for the three BN kernels below on [M,C].
size_t nk_bn_ws_floats(int64_t M, int C);
// res (may be NULL): a residual [M,C] added after the normalisation and before the ReLU, so that
// y = [relu](res + bn(x)): a BN, the residual add after it and its ReLU as one op (training
// ResNet's last BN of a block; the reference is nk_bn_fwd_train_ref, then the add, then the ReLU).
void nk_bn_fwd_train_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, float eps, int relu, const float *res, float *y,
                         float *mean, float *invstd);
void nk_bn_fwd_infer_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, const float *mmean, const float *mvar, float eps,
                         float *y);
// beta (may be NULL): the BN's beta. Given after nk_bn_fwd_train_cpu with relu and no residual
// (same gamma, beta, mean, invstd), the fused ReLU's mask is recomputed from x bit for bit and
// ry is not read (one tensor less to stream, twice). dxsum (may be NULL; needs dx) receives
// the column sums of dx, bit for bit what nk_colsum_cpu would read back from it: the bias
// gradient of the convolution before the BN, without a pass over dx of its own.
void nk_bn_bwd_train_cpu(const nk_exec *ex, int64_t M, int C, const float *x, const float *ry,
                         const float *dy, const float *gamma, const float *beta, const float *mean,
                         const float *invstd, float *dx, float *dgamma, float *dbeta, float *dxsum);
void nk_relu_fwd_cpu(const nk_exec *ex, int64_t n, const float *x, float *y);
void nk_relu_bwd_cpu(const nk_exec *ex, int64_t n, const float *y, const float *dy, float *dx);
void nk_add_fwd_cpu(const nk_exec *ex, int64_t n, const float *a, const float *b, float *y);

// ---- bf16 inference GEMM and convolution (kernels/cpu/gemm.c, gemm_avx512bf16.c, gemm_amx.c) --
//
// Which bf16 dot-product unit this CPU has. NONE still runs (a portable C micro-kernel over the
// same packed bf16 data: correct, slow, for tests); AVX512 uses VDPBF16PS (AVX512_BF16, e.g.
// Zen 4, Cooper Lake, Sapphire Rapids); AMX uses TDPBF16PS tiles (AMX-TILE and AMX-BF16 with
// AVX512_BF16, e.g. Sapphire Rapids, once the kernel grants the process the tile state through
// arch_prctl(ARCH_REQ_XCOMP_PERM); refused, it falls back to AVX512). AMX_EMU is never detected:
// the AMX kernels on a C model of the tile instructions, for tests on any CPU. NK_ISA below
// avx512 in the environment caps this at NONE; NK_BF16=none|avx512|amx caps it too (it can never
// raise it), and NK_BF16=amx-emulated makes it AMX_EMU on any CPU (tests of the bf16 model path
// where there is no bf16 unit: slow, not for timing).
typedef enum {
    NK_BF16_NONE    = 0,
    NK_BF16_AVX512  = 1,
    NK_BF16_AMX     = 2,
    NK_BF16_AMX_EMU = 3,
} nk_bf16_impl;
nk_bf16_impl nk_cpu_bf16(void);
const char *nk_bf16_impl_name(nk_bf16_impl impl);
// The impls that run on this CPU, for tests: NONE, AMX_EMU, then what nk_cpu_bf16() allows
// (AVX512, AMX). Returns how many (at most 4) were written to out.
int nk_bf16_impls(nk_bf16_impl out[4]);
// Whether nk_cpu_bf16() is a hardware unit (AVX512 or AMX): what timing and peaks need.
int nk_bf16_hw(void);

// B (the weights) is packed once into bf16 pairs: panels of NK_BF16_NR columns; in a panel, k pair
// q of column j is one 32-bit word at q*NR + j holding bf16(B[2q][j]) in its low half and
// bf16(B[2q+1][j]) in its high half; columns past N and the odd k past K are zero. The layout is
// the same for every nk_bf16_impl. nk_gemm_bf16_packed_b_elems gives the size in uint16_t.
#define NK_BF16_NR 32
size_t nk_gemm_bf16_packed_b_elems(int K, int N);
// Packs B ([K,N] row-major, or [N,K] when tb) into dst. One thread; no allocation.
void nk_gemm_bf16_pack_b(int tb, int K, int N, const float *B, int ldb, uint16_t *dst);
// The same with OpenMP over nthreads (panels split between threads).
void nk_gemm_bf16_pack_b_mt(int nthreads, int tb, int K, int N, const float *B, int ldb,
                            uint16_t *dst);

// C[M,N] = bf16(A)[M,K] Bp + beta * C, then + bias[N] (may be NULL; then beta must be 0 or no
// bias given), then ep (may be NULL; see nk_epilogue), with float32 accumulation. A is float32,
// row-major [M,K] with leading dimension lda, rounded to bf16 while it is packed. Bp comes from
// nk_gemm_bf16_pack_b with the same K and N. Threads with OpenMP over ex->nthreads; scratch
// nk_gemm_bf16_ws_floats(nthreads). beta == 0 never reads C.
size_t nk_gemm_bf16_ws_floats(int nthreads);
void nk_gemm_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, int M, int N, int K, const float *A,
                      int lda, const uint16_t *Bp, float beta, float *C, int ldc, const float *bias,
                      const nk_epilogue *ep);

// Inference convolution in bf16 with the fused epilogue (ep may be NULL). wp is w [R,S,C,K] packed
// by nk_gemm_bf16_pack_b(0, R*S*C, K, w, K, wp). Filters wider than 1x1 with even C >= 16 round
// x to bf16 once into the workspace and broadcast pairs straight from it; 1x1 convolutions pack
// (and round) A from x directly (strided ones too when C % 32 == 0); the rest (conv1: C = 3)
// round x once and gather bf16 patch rows that the micro-kernel reads unpacked. Scratch:
// nk_conv2d_bf16_ws_floats(d, nthreads). Specification:
// nk_conv2d_fwd_bf16_ref followed by the epilogue.
size_t nk_conv2d_bf16_ws_floats(const nk_conv_desc *d, int nthreads);
// The input gradient in bf16: a stride-1 conv's as the forward bf16 conv of dy with the flipped
// filter, a 1x1's as one bf16 GEMM, the rest as a bf16 GEMM into patches and a col2im gather.
// w (float32, [R,S,C,K]) is rounded and packed into the workspace on each call (training weights
// change every step). Scratch: nk_conv2d_bwd_data_bf16_ws_floats(d, nthreads). Specification:
// nk_conv2d_bwd_data_bf16_ref.
size_t nk_conv2d_bwd_data_bf16_ws_floats(const nk_conv_desc *d, int nthreads);
void nk_conv2d_bwd_data_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                                 const float *dy, const float *w, float *dx);
// The same gradient added into dx (dx += ...): where a tensor feeds two convs, or a conv and a
// shortcut, the second gradient goes straight in instead of through a scratch tensor and an add.
// Same scratch.
void nk_conv2d_bwd_data_bf16_acc_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                                     const float *dy, const float *w, float *dx);
// The weight gradient in bf16: dw [R,S,C,K] = patches^T dy with both rounded to bf16 and float32
// sums (bf16 GEMMs over chunks of output rows); db [K] (may be NULL) is dy's float32 column sum.
// Scratch: nk_conv2d_bwd_filter_bf16_ws_floats(d, nthreads). Specification:
// nk_conv2d_bwd_filter_bf16_ref.
size_t nk_conv2d_bwd_filter_bf16_ws_floats(const nk_conv_desc *d, int nthreads);
void nk_conv2d_bwd_filter_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                                   const float *x, const float *dy, float *dw, float *db);
void nk_conv2d_fwd_bf16_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                            const float *x, const uint16_t *wp, const float *b,
                            const nk_epilogue *ep, float *y);
// The same with bf16 activations on either side (bf16 inference stores a conv's output in bf16
// when only convs read it: each of them rounds its input to bf16 anyway, so the stored bytes
// halve and nothing is lost but the rounding of the residual). xb != NULL: the input is xb (bf16
// NHWC) and x is ignored; yb != NULL: the output is rounded to bf16 into yb and y is ignored;
// ep->residual_bf16: the residual read from bf16. A bf16 output is summed in float32 and rounded
// once, after the epilogue. Scratch: nk_conv2d_bf16x_ws_floats(d, nthreads, xb != NULL).
// Specification: nk_conv2d_fwd_bf16x_ref.
size_t nk_conv2d_bf16x_ws_floats(const nk_conv_desc *d, int nthreads, int x_bf16);
void nk_conv2d_fwd_bf16x_cpu(nk_bf16_impl impl, const nk_exec *ex, const nk_conv_desc *d,
                             const float *x, const uint16_t *xb, const uint16_t *wp, const float *b,
                             const nk_epilogue *ep, float *y, uint16_t *yb);

// bf16 dot-product peak: VDPBF16PS on registers only (2 flops per bf16 pair product-add, 64 per
// instruction), over nthreads threads for about `seconds`. 0 when the CPU has no AVX512_BF16.
double nk_bf16_peak_gflops(int nthreads, double seconds);

// Peak measurement: runs a register-only FMA loop on each of nthreads threads for about
// `seconds` and returns the achieved GFLOP/s (fp32).
double nk_fma_peak_gflops(nk_isa isa, int nthreads, double seconds);

// ---- CUDA (kernels/cuda/*.cu; built when nvcc is found, and then NT_HAVE_CUDA is defined) ----
//
// The first pieces of the CUDA backend: device discovery, the device-memory primitives that
// backend buffers will be made of, and elementwise kernels. Functions return 0 or a CUDA error
// code (nk_cuda_errstr names it); pointers named d_* are device pointers. Kernels run on the
// default stream and return after it is synchronised.
int nk_cuda_device_count(void); // 0 when there is no driver or no GPU
int nk_cuda_device_name(int dev, char *buf, size_t len);
const char *nk_cuda_errstr(int err);
int nk_cuda_malloc(void **d_p, size_t bytes);
void nk_cuda_free(void *d_p);
int nk_cuda_h2d(void *d_dst, const void *src, size_t bytes);
int nk_cuda_d2h(void *dst, const void *d_src, size_t bytes);
int nk_relu_fwd_cuda(int64_t n, const float *d_x, float *d_y);
int nk_relu_bwd_cuda(int64_t n, const float *d_y, const float *d_dy, float *d_dx);
int nk_add_fwd_cuda(int64_t n, const float *d_a, const float *d_b, float *d_y);

#ifdef __cplusplus
}
#endif
#endif
