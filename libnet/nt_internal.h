/*
 * nt_internal.h: what libnet's own files share and nobody else sees: the context's fields,
 * the kernel dispatch table and the model's layer records. Public contracts are in nt.h.
 */
#ifndef NT_INTERNAL_H
#define NT_INTERNAL_H

#include "kernels/nk.h"
#include "libnet/nt.h"

#include <stdio.h>
#include <stdlib.h>

// Internal invariants only (never user input): prints file:line and aborts, like GGML_ASSERT.
#define NT_ASSERT(x)                                                                               \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "NT_ASSERT %s:%d: %s\n", __FILE__, __LINE__, #x);                      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

// ---- kernel dispatch ----
//
// Every entry has the fast-kernel signature; ctx.c fills the table from the reference kernels
// (through small adapters that drop the nk_exec) and then overrides what this CPU does faster.
// A conv's input gradient dx from dy and w: overwritten, or added into (the _acc entries).
typedef void (*nt_conv_bwd_data_fn)(const nk_exec *, const nk_conv_desc *, const float *dy,
                                    const float *w, float *dx);

typedef struct nt_ops {
    void (*conv_fwd)(const nk_exec *, const nk_conv_desc *, const float *x, const float *w,
                     const float *b, float *y);
    nt_conv_bwd_data_fn conv_bwd_data;
    // The same added into dx; NULL where only the overwriting form exists (the reference
    // context: the backward then adds through the scratch buffer).
    nt_conv_bwd_data_fn conv_bwd_data_acc;
    void (*conv_bwd_filter)(const nk_exec *, const nk_conv_desc *, const float *x, const float *dy,
                            float *dw, float *db);
    size_t (*conv_ws)(const nk_conv_desc *, int nthreads);
    void (*dense_fwd)(const nk_exec *, int N, int C, int K, const float *x, const float *w,
                      const float *b, int relu, float *y);
    void (*dense_bwd_data)(const nk_exec *, int N, int C, int K, const float *dy, const float *w,
                           float *dx);
    void (*dense_bwd_filter)(const nk_exec *, int N, int C, int K, const float *x, const float *dy,
                             float *dw, float *db);
    size_t (*dense_ws)(int nthreads);
    size_t (*bn_ws)(int64_t M, int C);
    // relu: the ReLU after the BN computed with it (y is then the ReLU's output); res (may be
    // NULL): a residual added before it (y is then the add's or its ReLU's output).
    void (*bn_fwd_train)(const nk_exec *, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, float eps, int relu, const float *res, float *y,
                         float *mean, float *invstd);
    void (*bn_fwd_infer)(const nk_exec *, int64_t M, int C, const float *x, const float *gamma,
                         const float *beta, const float *mmean, const float *mvar, float eps,
                         float *y);
    // ry: the fused ReLU's output (dy is its gradient), or NULL. beta (may be NULL, and may be
    // ignored): the mask can be recomputed from x (a BN + ReLU without a residual). dxsum (may
    // be NULL, needs dx): the column sums of dx (the bias gradient of the conv before).
    void (*bn_bwd_train)(const nk_exec *, int64_t M, int C, const float *x, const float *ry,
                         const float *dy, const float *gamma, const float *beta, const float *mean,
                         const float *invstd, float *dx, float *dgamma, float *dbeta, float *dxsum);
    void (*relu_fwd)(const nk_exec *, int64_t n, const float *x, float *y);
    void (*relu_bwd)(const nk_exec *, int64_t n, const float *y, const float *dy, float *dx);
    void (*add_fwd)(const nk_exec *, int64_t n, const float *a, const float *b, float *y);
    void (*add_relu_fwd)(const nk_exec *, int64_t n, const float *a, const float *b, float *y);
    void (*conv_fwd_epi)(const nk_exec *, const nk_conv_desc *, const float *x, const float *w,
                         const float *b, const nk_epilogue *ep, float *y);
    void (*maxpool_fwd)(const nk_exec *, const nk_conv_desc *, const float *x, float *y);
    void (*maxpool_bwd)(const nk_exec *, const nk_conv_desc *, const float *x, const float *dy,
                        float *dx);
    void (*zeropad_fwd)(const nk_exec *, int N, int H, int W, int C, int pt, int pb, int pl, int pr,
                        const float *x, float *y);
    void (*zeropad_bwd)(const nk_exec *, int N, int H, int W, int C, int pt, int pb, int pl, int pr,
                        const float *dy, float *dx);
    void (*gap_fwd)(const nk_exec *, int N, int HW, int C, const float *x, float *y);
    void (*gap_bwd)(const nk_exec *, int N, int HW, int C, const float *dy, float *dx);
    // bf16 inference convolution (NT_DTYPE_BF16): the reference reads w, the fast path wp (w
    // packed by nk_gemm_bf16_pack_b; NULL when conv_bf16_packs is 0). ep may be NULL.
    void (*conv_fwd_bf16)(const nk_exec *, const nk_conv_desc *, const float *x, const float *w,
                          const uint16_t *wp, const float *b, const nk_epilogue *ep, float *y);
    size_t (*conv_bf16_ws)(const nk_conv_desc *, int nthreads);
    // The same with bf16 activations (nk_conv2d_fwd_bf16x_cpu's contract): input from xb when
    // not NULL, output into yb when not NULL, the residual from ep->residual_bf16 when set.
    void (*conv_fwd_bf16x)(const nk_exec *, const nk_conv_desc *, const float *x,
                           const uint16_t *xb, const float *w, const uint16_t *wp, const float *b,
                           const nk_epilogue *ep, float *y, uint16_t *yb);
    size_t (*conv_bf16x_ws)(const nk_conv_desc *, int nthreads, int x_bf16);
    // bf16 input gradient (training with NT_DTYPE_BF16): w float32, rounded and packed per call.
    nt_conv_bwd_data_fn conv_bwd_data_bf16;
    nt_conv_bwd_data_fn conv_bwd_data_bf16_acc; // as conv_bwd_data_acc
    size_t (*conv_bwd_data_bf16_ws)(const nk_conv_desc *, int nthreads);
    // bf16 weight gradient (dw float32 from bf16 products; db the float32 sum of dy, may be NULL).
    void (*conv_bwd_filter_bf16)(const nk_exec *, const nk_conv_desc *, const float *x,
                                 const float *dy, float *dw, float *db);
    size_t (*conv_bwd_filter_bf16_ws)(const nk_conv_desc *, int nthreads);
    int conv_bf16_packs;
    // float32 inference on weights packed once (NULL on the reference table): the packed size
    // in floats, the packer, and the forward (conv_fwd_epi's contract, ep may be NULL); algo is an
    // nk_conv_algo (the same for all three; the batch size in the desc is not used by the first
    // two).
    size_t (*conv_packed_floats)(const nk_conv_desc *, int algo);
    void (*conv_pack)(const nk_conv_desc *, int algo, const float *w, float *dst);
    void (*conv_fwd_packed)(const nk_exec *, const nk_conv_desc *, int algo, const float *x,
                            const float *wp, const float *b, const nk_epilogue *ep, float *y);
    // Whether the packed forward of a shape runs Winograd under algo (NULL: never), and that
    // forward with bf16 activations on either side (nk_conv2d_fwd_wino_x_cpu: bf16 inference's
    // 3x3s run it on weights that conv_pack packed with NK_CONV_AUTO).
    int (*conv_winograd)(const nk_conv_desc *, int algo);
    // Whether the unpacked passes (training's forward, input and weight gradients) of a shape
    // at its batch size run Winograd (nk_conv2d_winograd_w; NULL: never).
    int (*conv_winograd_w)(const nk_conv_desc *, int algo);
    void (*conv_fwd_wino_x)(const nk_exec *, const nk_conv_desc *, const float *x,
                            const uint16_t *xb, const float *wp, const float *b,
                            const nk_epilogue *ep, float *y, uint16_t *yb);
} nt_ops;

#define NT_ERRMSG_LEN 512

struct nt_ctx {
    nt_ctx_opts opts;
    int nthreads;
    nk_isa isa;
    const char *impl_name;
    char impl_buf[48];
    nt_ops ops;
    // Scratch for the fast kernels, grown on demand, never shrunk.
    float *ws;
    size_t ws_floats;
    char errmsg[NT_ERRMSG_LEN];
};

// Makes sure ctx->ws holds at least n floats and fills *ex. NT_ENOMEM on failure.
nt_status nt_ctx_exec(nt_ctx *ctx, size_t n, nk_exec *ex);
// The nk_conv_algo that nt_ctx_opts.no_winograd asks for (nk_exec.conv_algo, packing).
int nt_ctx_conv_algo(const nt_ctx *ctx);

#endif
