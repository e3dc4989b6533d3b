/*
 * ctx.c: contexts (options, error messages, logging, kernel dispatch, scratch) and tensors.
 * The dispatch table starts from the references in kernels/ref and is then overridden by the
 * fast CPU kernels the machine supports (BLIS cntx_init style). Tests: tests/test_ctx.c.
 */
#include "libnet/nt_internal.h"

#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

const char *nt_status_str(nt_status s)
{
    switch (s) {
    case NT_OK:
        return "ok";
    case NT_EINVAL:
        return "invalid argument";
    case NT_ENOMEM:
        return "out of memory";
    case NT_EIO:
        return "i/o error";
    case NT_EDEVICE:
        return "device error";
    case NT_ESHAPE:
        return "shape mismatch";
    case NT_EFORMAT:
        return "bad file format";
    }
    return "unknown status";
}

// Blocks of NT_HUGE_MIN bytes and more (the activation plan, the kernels' workspace, large
// weights and their gradients) are whole 2 MiB pages, aligned and advised as transparent huge
// pages (Linux's default "madvise" mode uses them only when asked): a training step streams GBs
// through them, and 4 KiB pages cost a TLB miss every 4 KiB and a page fault per page on first
// touch. Measured (ResNet50 at 224 px, batch 16, all layers): 462k page faults a run -> 30k; BN
// passes 3-5 % faster, the GEMMs 0-2 %. Where the kernel has no THP the advice is ignored.
#define NT_HUGE_PAGE ((size_t)2 << 20)
#define NT_HUGE_MIN  ((size_t)4 << 20)

void *nt_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes >= NT_HUGE_MIN) {
        bytes = (bytes + NT_HUGE_PAGE - 1) & ~(NT_HUGE_PAGE - 1);
        if (posix_memalign(&p, NT_HUGE_PAGE, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
        (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
        return p;
    }
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

void nt_free(void *p)
{
    free(p);
}

// ---- reference adapters: the fast-kernel signature over the plain kernels ----

static void ref_conv_fwd(const nk_exec *ex, const nk_conv_desc *d, const float *x, const float *w,
                         const float *b, float *y)
{
    nk_conv2d_fwd_ref(d, x, w, b, y);
}
static void ref_conv_bwd_data(const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                              const float *w, float *dx)
{
    nk_conv2d_bwd_data_ref(d, dy, w, dx);
}
static void ref_conv_bwd_filter(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                                const float *dy, float *dw, float *db)
{
    nk_conv2d_bwd_filter_ref(d, x, dy, dw, db);
}
static size_t ref_conv_ws(const nk_conv_desc *d, int nthreads)
{
    return 0;
}
static void ref_dense_fwd(const nk_exec *ex, int N, int C, int K, const float *x, const float *w,
                          const float *b, int relu, float *y)
{
    nk_dense_fwd_ref(N, C, K, x, w, b, relu, y);
}
static void ref_dense_bwd_data(const nk_exec *ex, int N, int C, int K, const float *dy,
                               const float *w, float *dx)
{
    nk_dense_bwd_data_ref(N, C, K, dy, w, dx);
}
static void ref_dense_bwd_filter(const nk_exec *ex, int N, int C, int K, const float *x,
                                 const float *dy, float *dw, float *db)
{
    nk_dense_bwd_filter_ref(N, C, K, x, dy, dw, db);
}
static size_t ref_dense_ws(int nthreads)
{
    return 0;
}
static size_t ref_bn_ws(int64_t M, int C)
{
    return 0;
}
static void ref_bn_fwd_train(const nk_exec *ex, int64_t M, int C, const float *x,
                             const float *gamma, const float *beta, float eps, int relu,
                             const float *res, float *y, float *mean, float *invstd)
{
    nk_bn_fwd_train_ref(M, C, x, gamma, beta, eps, res ? 0 : relu, y, mean, invstd);
    if (!res) return;
    nk_add_fwd_ref(M * C, res, y, y);
    if (relu) nk_relu_fwd_ref(M * C, y, y);
}
static void ref_bn_fwd_infer(const nk_exec *ex, int64_t M, int C, const float *x,
                             const float *gamma, const float *beta, const float *mmean,
                             const float *mvar, float eps, float *y)
{
    nk_bn_fwd_infer_ref(M, C, x, gamma, beta, mmean, mvar, eps, y);
}
static void ref_bn_bwd_train(const nk_exec *ex, int64_t M, int C, const float *x, const float *ry,
                             const float *dy, const float *gamma, const float *beta,
                             const float *mean, const float *invstd, float *dx, float *dgamma,
                             float *dbeta, float *dxsum)
{ // the reference always reads the mask from ry
    nk_bn_bwd_train_ref(M, C, x, ry, dy, gamma, mean, invstd, dx, dgamma, dbeta);
    for (int c = 0; dxsum && c < C; c++) { // as the reference conv sums its bias gradient
        double s = 0.0;
        for (int64_t r = 0; r < M; r++)
            s += dx[r * C + c];
        dxsum[c] = (float)s;
    }
}
static void ref_relu_fwd(const nk_exec *ex, int64_t n, const float *x, float *y)
{
    nk_relu_fwd_ref(n, x, y);
}
static void ref_relu_bwd(const nk_exec *ex, int64_t n, const float *y, const float *dy, float *dx)
{
    nk_relu_bwd_ref(n, y, dy, dx);
}
static void ref_add_fwd(const nk_exec *ex, int64_t n, const float *a, const float *b, float *y)
{
    nk_add_fwd_ref(n, a, b, y);
}

static void ref_add_relu_fwd(const nk_exec *ex, int64_t n, const float *a, const float *b, float *y)
{
    nk_add_fwd_ref(n, a, b, y);
    nk_relu_fwd_ref(n, y, y);
}
static void ref_epilogue(const nk_conv_desc *d, const nk_epilogue *ep, float *y);
// The reference form of the fused epilogue: the plain conv, then the map, then ReLU.
static void ref_conv_fwd_epi(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                             const float *w, const float *b, const nk_epilogue *ep, float *y)
{
    nk_conv2d_fwd_ref(d, x, w, b, y);
    if (ep) ref_epilogue(d, ep, y);
}
// Applies the fused epilogue to y[rows, K] (the reference form).
static void ref_epilogue(const nk_conv_desc *d, const nk_epilogue *ep, float *y)
{
    int64_t rows = (int64_t)d->N * d->P * d->Q;
    for (int64_t r = 0; r < rows; r++)
        for (int k = 0; k < d->K; k++) {
            float v = y[r * d->K + k];
            if (ep->scale) v = v * ep->scale[k] + ep->shift[k];
            if (ep->residual) v += ep->residual[r * d->K + k];
            if (ep->relu && !(v > 0.0f)) v = 0.0f;
            y[r * d->K + k] = v;
        }
}
static void ref_conv_fwd_bf16(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                              const float *w, const uint16_t *wp, const float *b,
                              const nk_epilogue *ep, float *y)
{
    nk_conv2d_fwd_bf16_ref(d, x, w, b, y);
    if (ep) ref_epilogue(d, ep, y);
}
static void fast_conv_fwd_bf16(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                               const float *w, const uint16_t *wp, const float *b,
                               const nk_epilogue *ep, float *y)
{
    nk_conv2d_fwd_bf16_cpu(nk_cpu_bf16(), ex, d, x, wp, b, ep, y);
}
static void ref_conv_fwd_bf16x(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                               const uint16_t *xb, const float *w, const uint16_t *wp,
                               const float *b, const nk_epilogue *ep, float *y, uint16_t *yb)
{
    nk_conv2d_fwd_bf16x_ref(d, x, xb, w, b, ep, y, yb);
}
static size_t ref_conv_bf16x_ws(const nk_conv_desc *d, int nthreads, int x_bf16)
{
    return 0;
}
static void fast_conv_fwd_bf16x(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                                const uint16_t *xb, const float *w, const uint16_t *wp,
                                const float *b, const nk_epilogue *ep, float *y, uint16_t *yb)
{
    nk_conv2d_fwd_bf16x_cpu(nk_cpu_bf16(), ex, d, x, xb, wp, b, ep, y, yb);
}
static void ref_conv_bwd_data_bf16(const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                                   const float *w, float *dx)
{
    nk_conv2d_bwd_data_bf16_ref(d, dy, w, dx);
}
static void fast_conv_bwd_data_bf16(const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                                    const float *w, float *dx)
{
    nk_conv2d_bwd_data_bf16_cpu(nk_cpu_bf16(), ex, d, dy, w, dx);
}
static void fast_conv_bwd_data_bf16_acc(const nk_exec *ex, const nk_conv_desc *d, const float *dy,
                                        const float *w, float *dx)
{
    nk_conv2d_bwd_data_bf16_acc_cpu(nk_cpu_bf16(), ex, d, dy, w, dx);
}
static void ref_conv_bwd_filter_bf16(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                                     const float *dy, float *dw, float *db)
{
    nk_conv2d_bwd_filter_bf16_ref(d, x, dy, dw, db);
}
static void fast_conv_bwd_filter_bf16(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                                      const float *dy, float *dw, float *db)
{
    nk_conv2d_bwd_filter_bf16_cpu(nk_cpu_bf16(), ex, d, x, dy, dw, db);
}
static void ref_maxpool_fwd(const nk_exec *ex, const nk_conv_desc *d, const float *x, float *y)
{
    nk_maxpool_fwd_ref(d, x, y);
}
static void ref_maxpool_bwd(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                            const float *dy, float *dx)
{
    nk_maxpool_bwd_ref(d, x, dy, dx);
}
static void ref_zeropad_fwd(const nk_exec *ex, int N, int H, int W, int C, int pt, int pb, int pl,
                            int pr, const float *x, float *y)
{
    nk_zeropad_fwd_ref(N, H, W, C, pt, pb, pl, pr, x, y);
}
static void ref_zeropad_bwd(const nk_exec *ex, int N, int H, int W, int C, int pt, int pb, int pl,
                            int pr, const float *dy, float *dx)
{
    nk_zeropad_bwd_ref(N, H, W, C, pt, pb, pl, pr, dy, dx);
}
static void ref_gap_fwd(const nk_exec *ex, int N, int HW, int C, const float *x, float *y)
{
    nk_gap_fwd_ref(N, HW, C, x, y);
}
static void ref_gap_bwd(const nk_exec *ex, int N, int HW, int C, const float *dy, float *dx)
{
    nk_gap_bwd_ref(N, HW, C, dy, dx);
}

// ---- fast adapters: bind the ISA chosen at context creation ----
//
// The fast conv/dense kernels take the ISA explicitly; the context stores it, and these adapters
// read it from a file-level table indexed by ISA so that the dispatch entries stay plain
// function pointers.
#define FAST_ADAPTERS(ISA, SUF)                                                                    \
    static void fast_conv_fwd_##SUF(const nk_exec *ex, const nk_conv_desc *d, const float *x,      \
                                    const float *w, const float *b, float *y)                      \
    {                                                                                              \
        nk_conv2d_fwd_cpu(ISA, ex, d, x, w, b, y);                                                 \
    }                                                                                              \
    static void fast_conv_bwd_data_##SUF(const nk_exec *ex, const nk_conv_desc *d,                 \
                                         const float *dy, const float *w, float *dx)               \
    {                                                                                              \
        nk_conv2d_bwd_data_cpu(ISA, ex, d, dy, w, dx);                                             \
    }                                                                                              \
    static void fast_conv_bwd_data_acc_##SUF(const nk_exec *ex, const nk_conv_desc *d,             \
                                             const float *dy, const float *w, float *dx)           \
    {                                                                                              \
        nk_conv2d_bwd_data_acc_cpu(ISA, ex, d, dy, w, dx);                                         \
    }                                                                                              \
    static void fast_conv_bwd_filter_##SUF(const nk_exec *ex, const nk_conv_desc *d,               \
                                           const float *x, const float *dy, float *dw, float *db)  \
    {                                                                                              \
        nk_conv2d_bwd_filter_cpu(ISA, ex, d, x, dy, dw, db);                                       \
    }                                                                                              \
    static void fast_conv_fwd_epi_##SUF(const nk_exec *ex, const nk_conv_desc *d, const float *x,  \
                                        const float *w, const float *b, const nk_epilogue *ep,     \
                                        float *y)                                                  \
    {                                                                                              \
        nk_conv2d_fwd_epi_cpu(ISA, ex, d, x, w, b, ep, y);                                         \
    }                                                                                              \
    static size_t fast_conv_packed_floats_##SUF(const nk_conv_desc *d, int algo)                   \
    {                                                                                              \
        return nk_conv2d_packed_floats(ISA, (nk_conv_algo)algo, d);                                \
    }                                                                                              \
    static void fast_conv_pack_##SUF(const nk_conv_desc *d, int algo, const float *w, float *dst)  \
    {                                                                                              \
        nk_conv2d_pack(ISA, (nk_conv_algo)algo, d, w, dst);                                        \
    }                                                                                              \
    static void fast_conv_fwd_packed_##SUF(const nk_exec *ex, const nk_conv_desc *d, int algo,     \
                                           const float *x, const float *wp, const float *b,        \
                                           const nk_epilogue *ep, float *y)                        \
    {                                                                                              \
        nk_conv2d_fwd_packed_cpu(ISA, (nk_conv_algo)algo, ex, d, x, wp, b, ep, y);                 \
    }                                                                                              \
    static void fast_dense_fwd_##SUF(const nk_exec *ex, int N, int C, int K, const float *x,       \
                                     const float *w, const float *b, int relu, float *y)           \
    {                                                                                              \
        nk_dense_fwd_cpu(ISA, ex, N, C, K, x, w, b, relu, y);                                      \
    }                                                                                              \
    static void fast_dense_bwd_data_##SUF(const nk_exec *ex, int N, int C, int K, const float *dy, \
                                          const float *w, float *dx)                               \
    {                                                                                              \
        nk_dense_bwd_data_cpu(ISA, ex, N, C, K, dy, w, dx);                                        \
    }                                                                                              \
    static void fast_dense_bwd_filter_##SUF(const nk_exec *ex, int N, int C, int K,                \
                                            const float *x, const float *dy, float *dw, float *db) \
    {                                                                                              \
        nk_dense_bwd_filter_cpu(ISA, ex, N, C, K, x, dy, dw, db);                                  \
    }

FAST_ADAPTERS(NK_ISA_SCALAR, scalar)
FAST_ADAPTERS(NK_ISA_AVX2, avx2)
FAST_ADAPTERS(NK_ISA_AVX512, avx512)

#define SET_FAST(ops, SUF)                                                                         \
    do {                                                                                           \
        (ops)->conv_fwd           = fast_conv_fwd_##SUF;                                           \
        (ops)->conv_fwd_epi       = fast_conv_fwd_epi_##SUF;                                       \
        (ops)->conv_bwd_data      = fast_conv_bwd_data_##SUF;                                      \
        (ops)->conv_bwd_data_acc  = fast_conv_bwd_data_acc_##SUF;                                  \
        (ops)->conv_bwd_filter    = fast_conv_bwd_filter_##SUF;                                    \
        (ops)->dense_fwd          = fast_dense_fwd_##SUF;                                          \
        (ops)->conv_packed_floats = fast_conv_packed_floats_##SUF;                                 \
        (ops)->conv_pack          = fast_conv_pack_##SUF;                                          \
        (ops)->conv_fwd_packed    = fast_conv_fwd_packed_##SUF;                                    \
        (ops)->dense_bwd_data     = fast_dense_bwd_data_##SUF;                                     \
        (ops)->dense_bwd_filter   = fast_dense_bwd_filter_##SUF;                                   \
    } while (0)

#define FAST_WINO(SUF, ISA)                                                                        \
    static int fast_conv_winograd_##SUF(const nk_conv_desc *d, int algo)                           \
    {                                                                                              \
        return nk_conv2d_winograd(ISA, (nk_conv_algo)algo, d);                                     \
    }                                                                                              \
    static int fast_conv_winograd_w_##SUF(const nk_conv_desc *d, int algo)                         \
    {                                                                                              \
        return nk_conv2d_winograd_w(ISA, (nk_conv_algo)algo, d);                                   \
    }
FAST_WINO(avx512, NK_ISA_AVX512)
FAST_WINO(avx2, NK_ISA_AVX2)
// Winograd where the ISA has it (AVX2 and up; the CPU picks the transforms,
// kernels/cpu/winograd.c).
#define SET_WINO(ops, SUF)                                                                         \
    do {                                                                                           \
        (ops)->conv_winograd   = fast_conv_winograd_##SUF;                                         \
        (ops)->conv_winograd_w = fast_conv_winograd_w_##SUF;                                       \
        (ops)->conv_fwd_wino_x = nk_conv2d_fwd_wino_x_cpu;                                         \
    } while (0)

static size_t fast_dense_ws(int nthreads)
{
    return nk_sgemm_ws_floats(nthreads);
}

static void ops_init(nt_ctx *ctx)
{
    nt_ops *o                  = &ctx->ops;
    o->conv_fwd                = ref_conv_fwd;
    o->conv_bwd_data           = ref_conv_bwd_data;
    o->conv_bwd_data_acc       = NULL; // the backward adds through its scratch buffer
    o->conv_bwd_data_bf16_acc  = NULL;
    o->conv_bwd_filter         = ref_conv_bwd_filter;
    o->conv_ws                 = ref_conv_ws;
    o->dense_fwd               = ref_dense_fwd;
    o->dense_bwd_data          = ref_dense_bwd_data;
    o->dense_bwd_filter        = ref_dense_bwd_filter;
    o->dense_ws                = ref_dense_ws;
    o->bn_ws                   = ref_bn_ws;
    o->bn_fwd_train            = ref_bn_fwd_train;
    o->bn_fwd_infer            = ref_bn_fwd_infer;
    o->bn_bwd_train            = ref_bn_bwd_train;
    o->relu_fwd                = ref_relu_fwd;
    o->relu_bwd                = ref_relu_bwd;
    o->add_fwd                 = ref_add_fwd;
    o->add_relu_fwd            = ref_add_relu_fwd;
    o->conv_fwd_epi            = ref_conv_fwd_epi;
    o->maxpool_fwd             = ref_maxpool_fwd;
    o->maxpool_bwd             = ref_maxpool_bwd;
    o->zeropad_fwd             = ref_zeropad_fwd;
    o->zeropad_bwd             = ref_zeropad_bwd;
    o->gap_fwd                 = ref_gap_fwd;
    o->gap_bwd                 = ref_gap_bwd;
    o->conv_fwd_bf16           = ref_conv_fwd_bf16;
    o->conv_bf16_ws            = ref_conv_ws;
    o->conv_fwd_bf16x          = ref_conv_fwd_bf16x;
    o->conv_bf16x_ws           = ref_conv_bf16x_ws;
    o->conv_bwd_data_bf16      = ref_conv_bwd_data_bf16;
    o->conv_bwd_data_bf16_ws   = ref_conv_ws;
    o->conv_bwd_filter_bf16    = ref_conv_bwd_filter_bf16;
    o->conv_bwd_filter_bf16_ws = ref_conv_ws;
    o->conv_bf16_packs         = 0;
    o->conv_fwd_packed         = NULL;
    o->conv_winograd           = NULL;
    o->conv_winograd_w         = NULL;
    o->conv_fwd_wino_x         = NULL;
    ctx->isa                   = NK_ISA_SCALAR;
    ctx->impl_name             = "ref";
    if (ctx->opts.impl == NT_IMPL_REF) return;

    nk_isa isa = nk_cpu_detect();
    if (ctx->opts.impl == NT_IMPL_AVX2 && isa > NK_ISA_AVX2) isa = NK_ISA_AVX2;
    ctx->isa       = isa;
    ctx->impl_name = nk_isa_name(isa);
    switch (isa) {
    case NK_ISA_AVX512:
        SET_FAST(o, avx512);
        SET_WINO(o, avx512);
        break;
    case NK_ISA_AVX2:
        SET_FAST(o, avx2);
        SET_WINO(o, avx2);
        break;
    default:
        SET_FAST(o, scalar);
        break;
    }
    o->conv_ws      = nk_conv2d_ws_floats;
    o->dense_ws     = fast_dense_ws;
    o->bn_ws        = nk_bn_ws_floats;
    o->bn_fwd_train = nk_bn_fwd_train_cpu;
    o->bn_fwd_infer = nk_bn_fwd_infer_cpu;
    o->bn_bwd_train = nk_bn_bwd_train_cpu;
    o->relu_fwd     = nk_relu_fwd_cpu;
    o->relu_bwd     = nk_relu_bwd_cpu;
    o->add_fwd      = nk_add_fwd_cpu;
    o->add_relu_fwd = nk_add_relu_fwd_cpu;
    o->maxpool_fwd  = nk_maxpool_fwd_cpu;
    o->maxpool_bwd  = nk_maxpool_bwd_cpu;
    o->zeropad_fwd  = nk_zeropad_fwd_cpu;
    o->zeropad_bwd  = nk_zeropad_bwd_cpu;
    o->gap_fwd      = nk_gap_fwd_cpu;
    o->gap_bwd      = nk_gap_bwd_cpu;
    if (ctx->opts.dtype == NT_DTYPE_BF16 && nk_cpu_bf16() >= NK_BF16_AVX512) {
        o->conv_fwd_bf16           = fast_conv_fwd_bf16;
        o->conv_bwd_data_bf16      = fast_conv_bwd_data_bf16;
        o->conv_bwd_data_bf16_acc  = fast_conv_bwd_data_bf16_acc;
        o->conv_bwd_data_bf16_ws   = nk_conv2d_bwd_data_bf16_ws_floats;
        o->conv_bwd_filter_bf16    = fast_conv_bwd_filter_bf16;
        o->conv_bwd_filter_bf16_ws = nk_conv2d_bwd_filter_bf16_ws_floats;
        o->conv_bf16_ws            = nk_conv2d_bf16_ws_floats;
        o->conv_fwd_bf16x          = fast_conv_fwd_bf16x;
        o->conv_bf16x_ws           = nk_conv2d_bf16x_ws_floats;
        o->conv_bf16_packs         = 1;
        snprintf(ctx->impl_buf, sizeof(ctx->impl_buf), "%s+%s", nk_isa_name(isa),
                 nk_bf16_impl_name(nk_cpu_bf16()));
        ctx->impl_name = ctx->impl_buf;
    }
}

const char *nt_dtype_name(nt_dtype t)
{
    return t == NT_DTYPE_BF16 ? "bf16" : t == NT_DTYPE_F32 ? "f32" : "unknown";
}

nt_status nt_dtype_parse(const char *s, nt_dtype *out)
{
    if (!s) return NT_EINVAL;
    if (!strcmp(s, "f32") || !strcmp(s, "fp32") || !strcmp(s, "float32")) {
        *out = NT_DTYPE_F32;
        return NT_OK;
    }
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) {
        *out = NT_DTYPE_BF16;
        return NT_OK;
    }
    return NT_EINVAL;
}

// ---- context ----

void nt_ctx_opts_default(nt_ctx_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->device = NT_DEV_CPU;
    o->impl   = NT_IMPL_AUTO;
}

nt_status nt_ctx_new(const nt_ctx_opts *o, nt_ctx **out)
{
    *out        = NULL;
    nt_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) return NT_ENOMEM;
    if (o)
        ctx->opts = *o;
    else
        nt_ctx_opts_default(&ctx->opts);
    *out = ctx;
    if (ctx->opts.device != NT_DEV_CPU)
        return nt_ctx_seterr(ctx, NT_EDEVICE,
                             "context: device %d requested, but this build runs on the CPU only",
                             (int)ctx->opts.device);
    if (ctx->opts.nthreads < 0 || ctx->opts.nthreads > 1024)
        return nt_ctx_seterr(ctx, NT_EINVAL, "context: nthreads must be in 0..1024, got %d",
                             ctx->opts.nthreads);
    if (ctx->opts.dtype != NT_DTYPE_F32 && ctx->opts.dtype != NT_DTYPE_BF16)
        return nt_ctx_seterr(ctx, NT_EINVAL, "context: dtype must be f32 or bf16, got %d",
                             ctx->opts.dtype);
    // bf16 has no slow fallback on the fast path: an emulated bf16 convolution would be slower
    // than float32, which is never what someone asking for bf16 wants.
    if (ctx->opts.dtype == NT_DTYPE_BF16 && ctx->opts.impl != NT_IMPL_REF &&
        nk_cpu_bf16() < NK_BF16_AVX512)
        return nt_ctx_seterr(ctx, NT_EDEVICE,
                             "context: dtype bf16 needs a CPU with AVX512_BF16 (this one runs %s "
                             "at best); use f32",
                             nk_isa_name(nk_cpu_detect()));
    long ncpu     = sysconf(_SC_NPROCESSORS_ONLN);
    ctx->nthreads = ctx->opts.nthreads ? ctx->opts.nthreads : (ncpu > 0 ? (int)ncpu : 1);
    ops_init(ctx);
    return NT_OK;
}

void nt_ctx_free(nt_ctx *ctx)
{
    if (!ctx) return;
    nt_free(ctx->ws);
    free(ctx);
}

const char *nt_ctx_errmsg(const nt_ctx *ctx)
{
    return ctx ? ctx->errmsg : "no context";
}

nt_status nt_ctx_seterr(nt_ctx *ctx, nt_status s, const char *fmt, ...)
{
    if (!ctx) return s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof(ctx->errmsg), fmt, ap);
    va_end(ap);
    // One line: fold any newline a caller's text may carry.
    for (char *p = ctx->errmsg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return s;
}

void nt_ctx_log(const nt_ctx *ctx, nt_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->opts.log) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ctx->opts.log(ctx->opts.log_user, level, buf);
}

int nt_ctx_nthreads(const nt_ctx *ctx)
{
    return ctx->nthreads;
}

nt_dtype nt_ctx_dtype(const nt_ctx *ctx)
{
    return (nt_dtype)ctx->opts.dtype;
}

const char *nt_ctx_impl_name(const nt_ctx *ctx)
{
    return ctx->impl_name;
}

nt_status nt_ctx_exec(nt_ctx *ctx, size_t n, nk_exec *ex)
{
    if (n > ctx->ws_floats) {
        float *p = nt_alloc(n * sizeof(float));
        if (!p)
            return nt_ctx_seterr(ctx, NT_ENOMEM, "scratch: cannot allocate %zu bytes",
                                 n * sizeof(float));
        nt_free(ctx->ws);
        ctx->ws        = p;
        ctx->ws_floats = n;
    }
    ex->nthreads  = ctx->nthreads;
    ex->ws        = ctx->ws;
    ex->ws_floats = ctx->ws_floats;
    ex->conv_algo = nt_ctx_conv_algo(ctx);
    return NT_OK;
}

int nt_ctx_conv_algo(const nt_ctx *ctx)
{
    return ctx->opts.no_winograd ? NK_CONV_GEMM : NK_CONV_AUTO;
}

// ---- tensors ----

int64_t nt_tensor_numel(const nt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

nt_status nt_tensor_new(nt_ctx *ctx, int ndim, const int64_t *shape, nt_tensor *out)
{
    memset(out, 0, sizeof(*out));
    if (ndim < 1 || ndim > NT_MAX_DIMS)
        return nt_ctx_seterr(ctx, NT_EINVAL, "tensor: ndim must be 1..%d, got %d", NT_MAX_DIMS,
                             ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] > ((int64_t)1 << 40))
            return nt_ctx_seterr(ctx, NT_EINVAL, "tensor: dimension %d is %lld", i,
                                 (long long)shape[i]);
        n *= shape[i];
        out->shape[i] = shape[i];
    }
    out->ndim = ndim;
    size_t b  = (size_t)n * sizeof(float);
    out->data = nt_alloc(b);
    if (!out->data) return nt_ctx_seterr(ctx, NT_ENOMEM, "tensor: cannot allocate %zu bytes", b);
    memset(out->data, 0, b);
    return NT_OK;
}

void nt_tensor_free(nt_tensor *t)
{
    if (!t) return;
    nt_free(t->data);
    memset(t, 0, sizeof(*t));
}

const char *nt_shape_str(const nt_tensor *t, char *buf, size_t len)
{
    size_t k = 0;
    if (len == 0) return buf;
    buf[0] = 0;
    k += (size_t)snprintf(buf + k, len - k, "[");
    for (int i = 0; i < t->ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
    return buf;
}
