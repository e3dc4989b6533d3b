/*
 * run.c: running a model. A static memory plan per (batch size, mode): every layer output and
 * every gradient buffer gets a lifetime on a timeline (forward steps 0..L-1, then backward steps
 * L..2L-1) and an offset in one buffer, greedily first-fit, so that dead buffers are reused and
 * nothing a frozen layer computes outlives its last reader. Then forward, backward and the loss.
 * Inference convolutions run in bf16 when the context asks for it (NT_DTYPE_BF16), on weights
 * packed once and cached per layer until they change.
 * Tests: tests/test_model.c (plan, freezing, bf16), tests/test_fixtures.c (against PyTorch).
 */
#include "libnet/model_internal.h"

#include <math.h>
#include <string.h>
#include <time.h>

#define BN_EPS      1.001e-5f
#define BN_MOMENTUM 0.99f

typedef struct plan_item {
    int64_t size, birth, death, off;
    int layer, is_grad;
} plan_item;

static int64_t layer_numel(const nt_layer *l, int N)
{
    return (int64_t)N * l->H * l->W * l->C;
}

static int64_t round16(int64_t n)
{
    return (n + 15) & ~(int64_t)15;
}

static int bn_batch_mode(const nt_layer *l, int training)
{
    return training && l->trainable;
}

// Does layer i's backward read its input k / its own output?
static int bwd_needs_input(const nt_layer *l, int training)
{
    switch (l->type) {
    case NT_LAYER_CONV:
    case NT_LAYER_DENSE:
        return l->trainable;
    case NT_LAYER_BN:
        return bn_batch_mode(l, training);
    case NT_LAYER_MAXPOOL:
        return 1;
    default:
        return 0;
    }
}

static int bwd_needs_output(const nt_layer *l)
{
    return l->type == NT_LAYER_RELU || (l->type == NT_LAYER_DENSE && l->act == NT_ACT_RELU);
}

static int layer_has_trainable(const nt_model *m, const nt_layer *l)
{
    if (!l->trainable) return 0;
    for (int k = 0; k < l->nparam; k++)
        if (param_is_trainable_kind(m->params[l->param0 + k].kind)) return 1;
    return 0;
}

static int cmp_birth(const void *a, const void *b)
{
    const plan_item *x = a, *y = b;
    if (x->birth != y->birth) return x->birth < y->birth ? -1 : 1;
    return x->layer - y->layer;
}

// First-fit placement in birth order; a block is free for an item born at t once its death < t.
static int64_t place(plan_item *it, int n)
{
    qsort(it, (size_t)n, sizeof(*it), cmp_birth);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        // Live blocks are the earlier items with death >= birth; try offsets in increasing order:
        // 0 and the end of each live block.
        int64_t best = -1;
        for (int c = -1; c < i; c++) {
            int64_t off = c < 0 ? 0 : it[c].off + it[c].size;
            if (c >= 0 && it[c].death < it[i].birth) continue;
            if (best >= 0 && off >= best) continue;
            int ok = 1;
            for (int j = 0; j < i && ok; j++) {
                if (it[j].death < it[i].birth) continue;
                if (off < it[j].off + it[j].size && it[j].off < off + it[i].size) ok = 0;
            }
            if (ok) best = off;
        }
        it[i].off = best;
        if (best + it[i].size > total) total = best + it[i].size;
    }
    return total;
}

static nk_conv_desc conv_desc(const nt_model *m, const nt_layer *l, int N)
{
    const nt_layer *src = &m->layers[l->in[0]];
    int ph = l->pad_h, pw = l->pad_w;
    if (l->type == NT_LAYER_MAXPOOL && l->fold_pad >= 0) { // the pad's input, padded by the pool
        ph += src->pt, pw += src->pl;
        src = &m->layers[src->in[0]];
    }
    nk_conv_desc d = {.N      = N,
                      .H      = src->H,
                      .W      = src->W,
                      .C      = src->C,
                      .K      = l->C,
                      .R      = l->R,
                      .S      = l->S,
                      .P      = l->H,
                      .Q      = l->W,
                      .stride = l->stride,
                      .pad_h  = ph,
                      .pad_w  = pw};
    return d;
}

// The layer whose output layer l reads as its first input: through a folded pad (fold_pad).
static int in0(const nt_model *m, const nt_layer *l)
{
    return l->type == NT_LAYER_MAXPOOL && l->fold_pad >= 0 ? m->layers[l->fold_pad].in[0]
                                                           : l->in[0];
}

// Fusion in the inference parts of the graph (before the backward region): a conv whose only
// reader is an inference BN computes it in its epilogue (and the ReLU after it, when that is the
// BN's only reader, or else the residual add after it, when the add's other input is already
// computed, and the ReLU after that add); an add whose only reader is a ReLU computes it too.
// Fills born[i]: the step at which layer i's output is written, or -1 when it is never
// materialised.
static void fuse(nt_model *m, int training, const int *ncons, const int *cons, int *born)
{
    int L = m->nlayers;
    for (int i = 0; i < L; i++) {
        nt_layer *l  = &m->layers[i];
        l->fuse_bn   = -1;
        l->fuse_relu = -1;
        l->fuse_add  = -1;
        l->fuse_res  = -1;
        l->gsrc      = -1;
        l->fold_pad  = -1;
        l->fused     = 0;
        born[i]      = i;
    }
    // A max-pool with no padding of its own after a ZeroPadding2D that only it reads, of a ReLU's
    // output: the pool pads itself (its kernels skip the taps outside the input, and every window
    // keeps one inside when each pad is under the window; the zeros, never above a ReLU's
    // output, would not change a maximum), so the padded copy is never made. On a tie at 0 the
    // gradient then goes to an input 0 instead of a pad, and the ReLU's mask drops it either way.
    for (int i = 1; i < L; i++) {
        nt_layer *l = &m->layers[i];
        if (l->type != NT_LAYER_MAXPOOL || l->pad_h || l->pad_w) continue;
        const int p = l->in[0];
        nt_layer *z = &m->layers[p];
        if (z->type != NT_LAYER_ZEROPAD || z->keep || ncons[p] != 1 ||
            m->layers[z->in[0]].type != NT_LAYER_RELU || z->pt >= l->R || z->pb >= l->R ||
            z->pl >= l->S || z->pr >= l->S)
            continue;
        l->fold_pad = p;
        z->fused    = 1;
        born[p]     = -1;
    }
    for (int i = 1; i < L; i++) {
        nt_layer *l = &m->layers[i];
        if (i >= m->bstart || l->keep || l->fused || ncons[i] != 1) continue;
        int j       = cons[i];
        nt_layer *c = &m->layers[j];
        if (l->type == NT_LAYER_CONV && c->type == NT_LAYER_BN && j < m->bstart &&
            !bn_batch_mode(c, training)) {
            l->fuse_bn = j;
            c->fused   = 1;
            born[i]    = -1;
            born[j]    = i;
            int k      = cons[j];
            if (!c->keep && ncons[j] == 1 && m->layers[k].type == NT_LAYER_RELU && k < m->bstart) {
                l->fuse_relu       = k;
                m->layers[k].fused = 1;
                born[j]            = -1;
                born[k]            = i;
            } else if (!c->keep && ncons[j] == 1 && m->layers[k].type == NT_LAYER_ADD &&
                       k < m->bstart) {
                nt_layer *a = &m->layers[k];
                const int o = a->in[0] == j ? a->in[1] : a->in[0];
                // The other input must already be in memory when the conv runs (and be a
                // different tensor: x + x is left alone).
                if (o != j && born[o] >= 0 && born[o] < i) {
                    l->fuse_add = k;
                    l->fuse_res = o;
                    a->fused    = 1;
                    born[j]     = -1;
                    born[k]     = i;
                    const int r = cons[k];
                    if (!a->keep && ncons[k] == 1 && m->layers[r].type == NT_LAYER_RELU &&
                        r < m->bstart) {
                        l->fuse_relu       = r;
                        m->layers[r].fused = 1;
                        born[k]            = -1;
                        born[r]            = i;
                    }
                }
            }
        } else if (l->type == NT_LAYER_ADD && c->type == NT_LAYER_RELU && j < m->bstart) {
            l->fuse_relu = j;
            c->fused     = 1;
            born[i]      = -1;
            born[j]      = i;
        }
    }
    // In the backward region (training): a batch-statistics BN whose only reader is a ReLU
    // writes the ReLU's output directly, and its backward reads the ReLU's gradient through the
    // ReLU's output as a mask: the BN's own output and gradient never exist. A residual add
    // whose only reader is a ReLU computes it (add_relu); its backward reads the ReLU's gradient
    // the same way, and a batch BN feeding only that add reads it too (no copy for the add).
    // That BN also computes the add and the ReLU when the add's other input exists by then (a
    // ResNet block's last BN and its shortcut): the BN's and the add's outputs are never written.
    // The add's backward still runs (the shortcut's gradient).
    for (int i = m->bstart; i < L; i++) {
        nt_layer *l = &m->layers[i];
        if (!training || l->keep || ncons[i] != 1) continue;
        const int k = cons[i];
        if (m->layers[k].type != NT_LAYER_RELU) continue;
        if (l->type == NT_LAYER_BN && bn_batch_mode(l, training)) {
            l->fuse_relu = k;
            l->gsrc      = k;
        } else if (l->type == NT_LAYER_ADD && l->in[0] != l->in[1]) {
            l->fuse_relu = k;
            int fused_bn = -1; // the BN that computes the add, if any
            for (int t = 0; t < 2; t++) {
                const int bi = l->in[t], o = l->in[1 - t];
                nt_layer *b = &m->layers[bi];
                if (b->type != NT_LAYER_BN || !bn_batch_mode(b, training) || b->keep ||
                    ncons[bi] != 1 || bi < m->bstart)
                    continue;
                b->gsrc = k;
                // The BN computes the add and its ReLU too when the add's other input is
                // already in memory then: its own output and the add's never exist.
                if (fused_bn < 0 && born[o] >= 0 && born[o] < bi) {
                    b->fuse_add  = i;
                    b->fuse_res  = o;
                    b->fuse_relu = k;
                    l->fused     = 1; // the add's forward; its backward still runs
                    born[bi]     = -1;
                    fused_bn     = bi;
                }
            }
            if (fused_bn >= 0) {
                m->layers[k].fused = 1;
                born[i]            = -1;
                born[k]            = fused_bn;
                continue;
            }
        } else {
            continue;
        }
        m->layers[k].fused = 1;
        born[i]            = -1;
        born[k]            = i;
    }
}

// The ReLU a training-fused BN computes with itself, or -1.
static int bn_relu(const nt_layer *l)
{
    return l->type == NT_LAYER_BN ? l->fuse_relu : -1;
}

// Where layer i's backward finds its output gradient: the ReLU fused after it (a training-fused
// BN or add), else its own buffer.
static int grad_src(const nt_model *m, int i)
{
    const nt_layer *l = &m->layers[i];
    if (l->gsrc >= 0) return l->gsrc;
    if (l->type == NT_LAYER_ADD && l->fuse_relu >= 0 && i >= m->bstart) return l->fuse_relu;
    return i;
}

static int conv_infer(const nt_model *m, int i, int training);

// bf16 activations (NT_DTYPE_BF16): an output that an inference-form conv writes (itself or
// through its fused epilogue) and that only inference-form convs read, as their input or as the
// residual of their epilogue, is stored in bf16: each of those convs rounds its input to bf16
// anyway, so this halves the bytes written and read and loses only the residual's rounding.
// Kept outputs, the model's output and everything the backward reads stay float32.
static void choose_bf16(nt_model *m, int training, const int *born)
{
    const int L = m->nlayers;
    for (int k = 0; k < L; k++)
        m->layers[k].out_bf16 = 0;
    if (m->ctx->opts.dtype != NT_DTYPE_BF16 || !m->ctx->ops.conv_fwd_bf16x) return;
    for (int k = 0; k < L - 1; k++) {
        const int p = born[k];
        if (p < 0 || m->layers[k].keep || m->layers[p].type != NT_LAYER_CONV ||
            !conv_infer(m, p, training))
            continue;
        int readers = 0, ok = 1;
        for (int j = k + 1; j < L && ok; j++) {
            const nt_layer *r = &m->layers[j];
            for (int t = 0; t < r->nin && ok; t++) {
                if (r->in[t] != k) continue;
                readers++;
                if (r->type == NT_LAYER_CONV && !r->fused && conv_infer(m, j, training)) continue;
                // A fused residual add: k is the residual of the conv that computes the add.
                int res = 0;
                if (r->type == NT_LAYER_ADD && r->fused)
                    for (int c = 0; c < j; c++)
                        if (m->layers[c].type == NT_LAYER_CONV && m->layers[c].fuse_add == j &&
                            m->layers[c].fuse_res == k)
                            res = 1;
                ok = res;
            }
        }
        m->layers[k].out_bf16 = ok && readers > 0;
    }
}

// Kernel workspace (floats) layer i needs at batch N.
static size_t layer_ws(const nt_model *m, int i, int N, int training)
{
    const nt_ctx *ctx = m->ctx;
    const nt_layer *l = &m->layers[i];
    const int nt      = ctx->nthreads;
    size_t ws         = 0, w;
    if (l->type == NT_LAYER_CONV) {
        nk_conv_desc d = conv_desc(m, l, N);
        ws             = ctx->ops.conv_ws(&d, nt);
        if (ctx->opts.dtype == NT_DTYPE_BF16) {
            if ((w = ctx->ops.conv_bf16_ws(&d, nt)) > ws) ws = w;
            if ((w = ctx->ops.conv_bf16x_ws(&d, nt, m->layers[l->in[0]].out_bf16)) > ws) ws = w;
            if (training && i >= m->bstart) {
                if ((w = ctx->ops.conv_bwd_data_bf16_ws(&d, nt)) > ws) ws = w;
                if ((w = ctx->ops.conv_bwd_filter_bf16_ws(&d, nt)) > ws) ws = w;
            }
        }
    } else if (l->type == NT_LAYER_DENSE) {
        ws = ctx->ops.dense_ws(nt);
    } else if (l->type == NT_LAYER_BN) {
        ws = ctx->ops.bn_ws((int64_t)N * l->H * l->W, l->C);
    }
    return ws;
}

// Chunked forward. Run layer by layer over a whole batch that does not fit in the caches, the
// early layers of a ResNet50 (large activations, small filters) stream every activation through
// memory: at 224 px and batch 16 conv2's 1x1 convs ran at 45-55 % of peak, and 20-25 % faster
// per image at batch 1. So the layers before the first conv whose filter outweighs
// CHUNK_WEIGHT_RATIO images of its output (conv4's first at 224 px) run CHUNK_IMAGES images at a
// time, through buffers planned for that many; only the outputs read after that prefix (or kept)
// hold the whole batch (out_whole). Only when the prefix's largest output, whole batch, exceeds
// CHUNK_L3_FRACTION of the L3 cache: measured (2 cores, 32 MB L3, b = batch), f32 at 224 px
// b16 (51 MB) 6-10 % faster, b8 4-5 %, b4 (13 MB) 2-3 %, bf16 b16 6-10 %, fine-tuning b16 6 %;
// at 128 px b8 (8 MB) no gain. The prefix also ends at the backward region and at any layer that
// mixes or draws per batch (batch-statistics BN, dropout, GAP, dense), so every chunk computes
// exactly what the whole batch would. NT_CHUNK=B[:LAYER] (tuning, tests) runs the layers before
// LAYER (or the rule's) B images at a time whatever the sizes; NT_CHUNK=0 turns chunking off.
#define CHUNK_IMAGES       1
#define CHUNK_WEIGHT_RATIO 2.0
#define CHUNK_L3_FRACTION  0.375

// The L3 cache's size as the kernel reports it (glibc's sysconf gave 320 MB for this VM's 32 MB),
// 32 MB when unknown.
static double l3_bytes(void)
{
    double kb = 0;
    FILE *f   = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
        if (fscanf(f, "%lf", &kb) != 1) kb = 0;
        fclose(f);
    }
    return kb > 0 ? kb * 1024 : 32.0 * (1 << 20);
}

static int chunk_safe(const nt_layer *l, int training)
{
    switch (l->type) {
    case NT_LAYER_INPUT:
    case NT_LAYER_ZEROPAD:
    case NT_LAYER_CONV:
    case NT_LAYER_RELU:
    case NT_LAYER_MAXPOOL:
    case NT_LAYER_ADD:
        return 1;
    case NT_LAYER_BN:
        return !bn_batch_mode(l, training);
    default:
        return 0;
    }
}

static void chunk_plan(nt_model *m, int N, int training, const int *born)
{
    const int L = m->nlayers;
    m->chunk_b = m->chunk_end = 0;
    for (int i = 0; i < L; i++)
        m->layers[i].out_whole = 0;
    int b = CHUNK_IMAGES, end = 0;
    const char *env = getenv("NT_CHUNK"), *stop = NULL;
    if (env) {
        b    = atoi(env);
        stop = strchr(env, ':');
        stop = stop ? stop + 1 : NULL;
    }
    if (b < 1 || N <= b) return;
    for (int i = 0; i < L && i < m->bstart; i++) {
        const nt_layer *l = &m->layers[i];
        if (!chunk_safe(l, training)) break;
        if (stop ? strcmp(l->name, stop) == 0
                 : l->type == NT_LAYER_CONV && (double)l->R * l->S * m->layers[l->in[0]].C * l->C >
                                                   CHUNK_WEIGHT_RATIO * l->H * l->W * l->C)
            break;
        end = i + 1;
    }
    // No fused group may straddle the end: a layer after it computed by a conv before it moves
    // the end back to that conv.
    for (int moved = 1; moved;) {
        moved = 0;
        for (int k = end; k < L; k++)
            if (born[k] >= 0 && born[k] < end) end = born[k], moved = 1;
    }
    if (end < 2) return;
    if (!env) {
        const double l3 = l3_bytes();
        double most     = 0;
        for (int i = 0; i < end; i++) {
            const double bytes =
                (double)layer_numel(&m->layers[i], N) * (m->layers[i].out_bf16 ? 2 : 4);
            if (born[i] >= 0 && bytes > most) most = bytes;
        }
        if (most <= CHUNK_L3_FRACTION * l3) return;
    }
    for (int i = 0; i < end; i++) {
        nt_layer *l = &m->layers[i];
        if (born[i] < 0) continue;
        l->out_whole = l->out_death >= end || l->keep;
        // A whole-batch bf16 buffer is addressed per chunk in floats: per image must be even.
        if (l->out_whole && l->out_bf16 && (layer_numel(l, 1) & 1)) {
            for (int k = 0; k <= i; k++)
                m->layers[k].out_whole = 0;
            return;
        }
    }
    m->chunk_b   = b;
    m->chunk_end = end;
}

static nt_status plan(nt_model *m, int N, int training)
{
    if (m->planned_n == N && m->planned_training == training) return NT_OK;
    nt_ctx *ctx = m->ctx;
    int L       = m->nlayers;
    int64_t T   = 2 * (int64_t)L; // backward step of layer i is T - 1 - i

    // The backward region: from the first layer with trainable parameters (or everything when
    // the input gradient is wanted); nothing in training mode means no backward at all.
    int bstart = L;
    if (training) {
        if (m->want_input_grad)
            bstart = 1;
        else
            for (int i = 1; i < L; i++)
                if (layer_has_trainable(m, &m->layers[i])) {
                    bstart = i;
                    break;
                }
    }
    m->bstart = bstart;

    plan_item *it = calloc((size_t)(2 * L + 1), sizeof(*it));
    int *ncons = calloc((size_t)L, sizeof(int)), *cons = calloc((size_t)L, sizeof(int));
    int *born = calloc((size_t)L, sizeof(int));
    if (!it || !ncons || !cons || !born) {
        free(it), free(ncons), free(cons), free(born);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "model: out of memory planning");
    }
    for (int i = 0; i < L; i++)
        for (int k = 0; k < m->layers[i].nin; k++) {
            ncons[m->layers[i].in[k]]++;
            cons[m->layers[i].in[k]] = i;
        }
    fuse(m, training, ncons, cons, born);
    choose_bf16(m, training, born);
    for (int i = 0; i < L; i++) {
        nt_layer *l = &m->layers[i];
        const int j = l->nin ? l->in[0] : -1;
        l->sum_dx   = l->type == NT_LAYER_BN && bn_batch_mode(l, training) && j >= bstart &&
                    m->layers[j].type == NT_LAYER_CONV && m->layers[j].trainable &&
                    m->layers[j].nparam >= 2 && ncons[j] == 1;
    }
    int n          = 0;
    int64_t maxact = 0;
    size_t ws      = 0;
    for (int i = 0; i < L; i++) {
        nt_layer *l = &m->layers[i];
        int64_t sz  = layer_numel(l, N);
        if (sz > maxact) maxact = sz;
        int64_t death = i;
        if (i == L - 1) death = L; // the output is read after forward (loss, backward)
        if (l->keep) death = T;
        if (i >= bstart && bwd_needs_output(l) && T - 1 - i > death) death = T - 1 - i;
        l->out_death = death;
        l->grad_off  = -1;
        l->out_off   = -1;
        size_t w     = layer_ws(m, i, N, training);
        if (w > ws) ws = w;
    }
    // Extend each input's life to its last forward reader and, inside the backward region, to
    // the backward step of a reader that needs it.
    for (int i = 0; i < L; i++) {
        nt_layer *l = &m->layers[i];
        for (int k = 0; k < l->nin; k++) {
            nt_layer *src = &m->layers[l->in[k]];
            if (src->out_death < i) src->out_death = i;
            if (i >= bstart && bwd_needs_input(l, training) && src->out_death < T - 1 - i)
                src->out_death = T - 1 - i;
        }
    }
    // A pool reads through a folded pad: the pad's input, in the pool's forward and backward.
    for (int i = 0; i < L; i++) {
        nt_layer *l = &m->layers[i];
        if (l->type != NT_LAYER_MAXPOOL || l->fold_pad < 0) continue;
        nt_layer *src = &m->layers[in0(m, l)];
        if (src->out_death < i) src->out_death = i;
        if (i >= bstart && src->out_death < T - 1 - i) src->out_death = T - 1 - i;
    }
    // A fused ReLU's output is read (as a mask) by the backward steps of the layers that take
    // its gradient.
    for (int i = bstart; i < L; i++) {
        const int k = grad_src(m, i);
        if (k != i && m->layers[k].out_death < T - 1 - i) m->layers[k].out_death = T - 1 - i;
    }
    chunk_plan(m, N, training, born);
    for (int i = 0; i < m->chunk_end; i++) {
        size_t w = layer_ws(m, i, m->chunk_b, training);
        if (w > ws) ws = w;
    }
    // Outputs that a fused epilogue skips get no buffer; the rest are born when computed. In a
    // chunked prefix a buffer holds one chunk, and a whole-batch one lives from the first chunk.
    for (int i = 0; i < L; i++) {
        if (born[i] < 0) continue;
        const nt_layer *l   = &m->layers[i];
        const int per_chunk = i < m->chunk_end && !l->out_whole;
        const int64_t ne    = layer_numel(l, per_chunk ? m->chunk_b : N);
        it[n++]             = (plan_item){.size  = round16(l->out_bf16 ? (ne + 1) / 2 : ne),
                                          .birth = i < m->chunk_end && l->out_whole ? 0 : born[i],
                                          .death = l->out_death,
                                          .layer = i};
    }
    free(ncons), free(cons), free(born);
    // Gradients: born at the backward step of the last reader, dead after the layer's own.
    if (bstart < L) {
        for (int j = 0; j < L; j++) {
            int needs = j >= bstart || (j == 0 && m->want_input_grad);
            if (!needs || grad_src(m, j) != j) continue; // fused: it reads a ReLU's gradient
            const nt_layer *lj = &m->layers[j];
            if (lj->type == NT_LAYER_ZEROPAD && lj->fused) continue; // folded: no gradient
            // A gradient lives until the last backward step that reads it (a fused ReLU's: the
            // earliest layer that takes it).
            int owner = j;
            for (int i = bstart; i < j; i++)
                if (grad_src(m, i) == j) {
                    owner = i;
                    break;
                }
            int last = j == L - 1 ? j : -1;
            for (int i = j + 1; i < L; i++)
                for (int k = 0; k < m->layers[i].nin; k++)
                    if (m->layers[i].in[k] == j || (k == 0 && in0(m, &m->layers[i]) == j)) last = i;
            if (last < 0) continue; // a dead end: nothing flows back into it
            it[n++] = (plan_item){.size    = round16(layer_numel(&m->layers[j], N)),
                                  .birth   = T - 1 - last,
                                  .death   = T - 1 - owner,
                                  .layer   = j,
                                  .is_grad = 1};
        }
        it[n++] = (plan_item){.size = round16(maxact), .birth = L, .death = T, .layer = -1};
    }
    int64_t total  = place(it, n);
    m->scratch_off = -1;
    for (int i = 0; i < n; i++) {
        if (it[i].layer < 0)
            m->scratch_off = it[i].off;
        else if (it[i].is_grad)
            m->layers[it[i].layer].grad_off = it[i].off;
        else
            m->layers[it[i].layer].out_off = it[i].off;
    }
    free(it);

    if (total > m->buf_floats) {
        nt_free(m->buf);
        m->buf_floats = 0;
        m->buf        = nt_alloc((size_t)total * sizeof(float));
        if (!m->buf)
            return nt_ctx_seterr(ctx, NT_ENOMEM,
                                 "model: cannot allocate %lld MB of activations for batch %d; "
                                 "try a smaller --batch",
                                 (long long)(total * 4 >> 20), N);
        m->buf_floats = total;
    }
    nk_exec ex;
    nt_status s = nt_ctx_exec(ctx, ws, &ex);
    if (s != NT_OK) return s;
    m->ws_floats        = ws;
    m->plan_floats      = total;
    m->planned_n        = N;
    m->planned_training = training;
    nt_ctx_log(ctx, NT_LOG_DEBUG, "plan: batch %d %s: %lld MB activations, backward from layer %d",
               N, training ? "training" : "inference", (long long)(total * 4 >> 20), bstart);
    if (m->chunk_b > 0)
        nt_ctx_log(ctx, NT_LOG_DEBUG, "plan: layers before \"%s\" run %d images at a time",
                   m->layers[m->chunk_end].name, m->chunk_b);
    return NT_OK;
}

static double prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void nt_model_set_profile(nt_model *m, int on)
{
    m->profile = on ? 1 : 0;
    for (int i = 0; i < m->nlayers; i++)
        m->layers[i].prof_fwd = m->layers[i].prof_bwd = 0;
}

void nt_model_layer_time(const nt_model *m, int layer, double *fwd_s, double *bwd_s)
{
    *fwd_s = m->layers[layer].prof_fwd;
    *bwd_s = m->layers[layer].prof_bwd;
}

static float *out_of(nt_model *m, int i)
{
    return m->buf + m->layers[i].out_off;
}

static float *param(nt_model *m, const nt_layer *l, int k)
{
    return m->params[l->param0 + k].value.data;
}

static float *pgrad(nt_model *m, const nt_layer *l, int k)
{
    return m->params[l->param0 + k].grad.data;
}

// Does conv layer i run in inference form in this forward (every conv in inference; in
// training the convs before the backward region: frozen layers, whose outputs need no
// gradient)? Those run on weights packed once: bf16 with NT_DTYPE_BF16, so that fine-tuning
// gets the bf16 speed on its frozen part too, else float32 panels.
static int conv_infer(const nt_model *m, int i, int training)
{
    return !training || i < m->bstart;
}

// The nk_conv_algo of the float32 packed convolutions (nt_ctx_exec gives the rest the same).
static int conv_algo(const nt_model *m)
{
    return nt_ctx_conv_algo(m->ctx);
}

// bf16 training's trainable convs that float32 Winograd runs faster than bf16 products, in all
// three passes: the 3x3s it takes at the planned batch with at least 16 4x4 output tiles an image
// (conv2's to conv4's at 224 px). Measured per conv (batch 16, 2 threads, forward + input
// gradient + weight gradient): conv2's 3x3 26.6 ms against 36.3 in bf16, conv3's 24.4 against
// 30.6 (12 x 32 SGEMM tile); with the 6 x 64 tile (4cea066), `pneumo bench conv --pass
// fwd-train|bwd-data|bwd-filter` against the bf16 passes, 2 runs each: conv4's (14x14, 16 tiles,
// a quarter of each tile row wasted) 24.5 against 28.0-28.7, where before it was 30.1 against
// 29.9; conv5's (7x7, 4 tiles) 34.6-34.8 against 30.9-31.0 stays bf16. In a ResNet50
// step: conv2's three 3x3s 115 -> 93-100 ms, conv3's four 129-134 -> 112-117 ms. Float32
// Winograd is also the more accurate of the two.
static int conv_train_wino(const nt_model *m, int i, int training)
{
    const nt_ops *o   = &m->ctx->ops;
    const nt_layer *l = &m->layers[i];
    if (!training || i < m->bstart || !o->conv_winograd_w || m->planned_n < 1) return 0;
    const nk_conv_desc d = conv_desc(m, l, m->planned_n);
    return ((d.P + 3) / 4) * ((d.Q + 3) / 4) >= 16 && o->conv_winograd_w(&d, conv_algo(m));
}

// With NT_DTYPE_BF16 every conv runs in bf16 but those of conv_train_wino: the frozen ones on
// weights packed once, the trainable ones (training) on their float32 master weights rounded and
// packed at each forward, and their input and weight gradients from bf16 products too (float32
// sums); the master weights, BN, the loss and the optimizer stay float32.
static int conv_bf16(const nt_model *m, int i, int training)
{
    return m->ctx->opts.dtype == NT_DTYPE_BF16 && !conv_train_wino(m, i, training);
}

// bf16 inference's 3x3s (NT_DTYPE_BF16, inference form, a shape the packed forward runs by
// Winograd, no residual): float32 Winograd on the bf16 activations, on float32 weights. Measured
// (batch 16, 2 threads) 7.8-8.8 ms against 9.9-11.9 ms for bf16 products per ResNet50 3x3, and
// closer to float32.
static int conv_wino_bf16(const nt_model *m, int i, int training)
{
    const nt_ops *o   = &m->ctx->ops;
    const nt_layer *l = &m->layers[i];
    if (m->ctx->opts.dtype != NT_DTYPE_BF16 || !o->conv_winograd || !o->conv_fwd_wino_x ||
        l->fuse_res >= 0 || !conv_infer(m, i, training))
        return 0;
    const nk_conv_desc d = conv_desc(m, l, 1);
    return o->conv_winograd(&d, conv_algo(m));
}

// At a batch of few tiles those 3x3s run bf16 products instead, on bf16 panels packed after the
// Winograd ones: streaming U (36 C K floats) then costs more than the products on 9 C K bf16
// weights. Measured (128 px, 2 threads, ms, float32 Winograd / bf16 products): conv4's 3x3
// (C = 256, 4 tiles an image) batch 1 0.30 / 0.22, batch 2 0.36 / 0.39; conv5's (C = 512, one
// tile) batch 8 2.00 / 1.74, batch 16 2.84 / 3.28; conv3's (C = 128, 16 tiles) never. So below
// C / 32 tiles in the batch (n: the batch; 1 asks whether any batch can). Only for layers of
// conv_wino_bf16.
static int wino_bf16_few_tiles(const nt_model *m, int i, int n)
{
    const nk_conv_desc d = conv_desc(m, &m->layers[i], n);
    return (int64_t)n * ((d.P + 3) / 4) * ((d.Q + 3) / 4) * 32 < d.C;
}

// Bytes of the float32 part of a bf16 3x3's packed buffer (the bf16 panels start there).
static size_t wino_bf16_off(const nt_model *m, int i)
{
    const nk_conv_desc d = conv_desc(m, &m->layers[i], 1);
    return (m->ctx->ops.conv_packed_floats(&d, conv_algo(m)) * sizeof(float) + 63) & ~(size_t)63;
}

// Whether conv i runs on the packed cache (l->wpack) in this forward.
static int conv_packed(const nt_model *m, int i, int training)
{
    const nt_ops *o = &m->ctx->ops;
    if (conv_bf16(m, i, training)) return o->conv_bf16_packs;
    return conv_infer(m, i, training) && o->conv_fwd_packed != NULL;
}

// Packs the weights of the convs that run packed (once; kept until the weights change).
static nt_status pack_weights(nt_model *m, int training)
{
    const nt_ops *o = &m->ctx->ops;
    for (int i = 0; i < m->nlayers; i++) {
        nt_layer *l = &m->layers[i];
        if (l->type != NT_LAYER_CONV || !conv_packed(m, i, training)) continue;
        // bf16 panels, or float32 ones (Winograd's for bf16 inference's 3x3s too); a layer
        // that switches (trainable, then frozen) is packed anew.
        const int wino = conv_wino_bf16(m, i, training);
        const int bf16 = conv_bf16(m, i, training) && !wino;
        if (l->wpack_ok && l->wpack_bf16 == bf16) continue;
        const int rsc        = l->R * l->S * m->layers[l->in[0]].C;
        const float *w       = m->params[l->param0].value.data;
        const nk_conv_desc d = conv_desc(m, l, 1);
        const size_t pb      = nk_gemm_bf16_packed_b_elems(rsc, l->C) * sizeof(uint16_t);
        // bf16 inference's Winograd 3x3s that few-tile batches run in bf16: both forms.
        const int both = wino && wino_bf16_few_tiles(m, i, 1);
        const size_t b = bf16   ? pb
                         : both ? wino_bf16_off(m, i) + pb
                                : o->conv_packed_floats(&d, conv_algo(m)) * sizeof(float);
        if (!l->wpack || l->wpack_bytes < b) {
            nt_free(l->wpack);
            l->wpack_bytes = 0;
            if (!(l->wpack = nt_alloc(b)))
                return nt_ctx_seterr(m->ctx, NT_ENOMEM,
                                     "model: cannot allocate %zu bytes of packed weights for "
                                     "\"%s\"",
                                     b, l->name);
            l->wpack_bytes = b;
        }
        if (bf16)
            nk_gemm_bf16_pack_b_mt(m->ctx->nthreads, 0, rsc, l->C, w, l->C, l->wpack);
        else
            o->conv_pack(&d, conv_algo(m), w, l->wpack);
        if (both)
            nk_gemm_bf16_pack_b_mt(m->ctx->nthreads, 0, rsc, l->C, w, l->C,
                                   (uint16_t *)((char *)l->wpack + wino_bf16_off(m, i)));
        l->wpack_ok   = 1;
        l->wpack_bf16 = bf16;
    }
    return NT_OK;
}

static uint64_t dropout_key(const nt_model *m, uint64_t step, int layer)
{
    return nk_mix64(m->ctx->opts.seed + NK_GOLDEN * (step + 1)) ^ (uint64_t)(layer + 1);
}

// Where layer k's output for image img0 of the batch starts: in a chunked prefix (img0 > 0),
// at the image's place in a whole-batch buffer, else at the chunk's own buffer.
static float *act(nt_model *m, int k, int64_t img0)
{
    const nt_layer *l = &m->layers[k];
    float *p          = out_of(m, k);
    if (!img0 || !l->out_whole) return p;
    const int64_t e = img0 * layer_numel(l, 1);
    return l->out_bf16 ? p + e / 2 : p + e; // e is even for bf16 (chunk_plan)
}

// Layer i's forward over images [img0, img0 + N) of the batch.
static void fwd_layer(nt_model *m, const nk_exec *ex, int i, int N, int64_t img0,
                      const nt_tensor *x, int training, uint64_t step)
{
    const nt_ops *o = &m->ctx->ops;
    nt_layer *l     = &m->layers[i];
    if (l->fused) return; // computed by the layer it is fused into
    double t0           = m->profile ? prof_now() : 0;
    float *y            = l->out_off >= 0 ? act(m, i, img0) : NULL;
    const nt_layer *src = l->nin ? &m->layers[in0(m, l)] : NULL;
    const float *xin    = src ? act(m, in0(m, l), img0) : NULL;
    int64_t n           = layer_numel(l, N);
    switch (l->type) {
    case NT_LAYER_INPUT:
        memcpy(y, x->data + img0 * layer_numel(l, 1), (size_t)n * sizeof(float));
        break;
    case NT_LAYER_ZEROPAD:
        o->zeropad_fwd(ex, N, src->H, src->W, src->C, l->pt, l->pb, l->pl, l->pr, xin, y);
        break;
    case NT_LAYER_CONV: {
        nk_conv_desc d = conv_desc(m, l, N);
        const int bf16 = conv_bf16(m, i, training), packed = conv_packed(m, i, training);
        // bf16 activations: input, output (the last layer the epilogue computes) or residual.
        const int yl  = l->fuse_relu >= 0  ? l->fuse_relu
                        : l->fuse_add >= 0 ? l->fuse_add
                        : l->fuse_bn >= 0  ? l->fuse_bn
                                           : i;
        const int xbf = src->out_bf16, ybf = m->layers[yl].out_bf16;
        const int rbf = l->fuse_res >= 0 && m->layers[l->fuse_res].out_bf16;
        // bf16 activations, float32 Winograd; at a batch of few tiles, bf16 products on the bf16
        // panels after the Winograd ones (wq).
        const int wb   = conv_wino_bf16(m, i, training);
        const int wxs  = wb && wino_bf16_few_tiles(m, i, N);
        const int wx   = wb && !wxs;
        const void *wq = wxs ? (const char *)l->wpack + wino_bf16_off(m, i) : l->wpack;
        if (l->fuse_bn < 0) {
            if (wx)
                o->conv_fwd_wino_x(ex, &d, xbf ? NULL : xin, xbf ? (const uint16_t *)xin : NULL,
                                   l->wpack, param(m, l, 1), NULL, ybf ? NULL : y,
                                   ybf ? (uint16_t *)y : NULL);
            else if (bf16 && (xbf || ybf))
                o->conv_fwd_bf16x(ex, &d, xbf ? NULL : xin, xbf ? (const uint16_t *)xin : NULL,
                                  param(m, l, 0), wq, param(m, l, 1), NULL, ybf ? NULL : y,
                                  ybf ? (uint16_t *)y : NULL);
            else if (bf16)
                o->conv_fwd_bf16(ex, &d, xin, param(m, l, 0), wq, param(m, l, 1), NULL, y);
            else if (packed)
                o->conv_fwd_packed(ex, &d, conv_algo(m), xin, l->wpack, param(m, l, 1), NULL, y);
            else
                o->conv_fwd(ex, &d, xin, param(m, l, 0), param(m, l, 1), y);
            break;
        }
        // The inference BN after it as a per-channel map: scale = gamma / sqrt(var + eps),
        // shift = beta - mean * scale.
        nt_layer *bn    = &m->layers[l->fuse_bn];
        const float *ga = param(m, bn, 0), *be = param(m, bn, 1);
        const float *mm = param(m, bn, 2), *mv = param(m, bn, 3);
        for (int c = 0; c < bn->C; c++) {
            double sc         = ga[c] / sqrt((double)mv[c] + BN_EPS);
            bn->fold_scale[c] = (float)sc;
            bn->fold_shift[c] = (float)(be[c] - mm[c] * sc);
        }
        const float *res = l->fuse_res >= 0 ? act(m, l->fuse_res, img0) : NULL;
        nk_epilogue ep   = {.scale         = bn->fold_scale,
                            .shift         = bn->fold_shift,
                            .relu          = l->fuse_relu >= 0,
                            .residual      = rbf ? NULL : res,
                            .residual_bf16 = rbf ? (const uint16_t *)res : NULL};
        float *yo        = act(m, yl, img0);
        if (wx)
            o->conv_fwd_wino_x(ex, &d, xbf ? NULL : xin, xbf ? (const uint16_t *)xin : NULL,
                               l->wpack, param(m, l, 1), &ep, ybf ? NULL : yo,
                               ybf ? (uint16_t *)yo : NULL);
        else if (bf16 && (xbf || ybf || rbf))
            o->conv_fwd_bf16x(ex, &d, xbf ? NULL : xin, xbf ? (const uint16_t *)xin : NULL,
                              param(m, l, 0), wq, param(m, l, 1), &ep, ybf ? NULL : yo,
                              ybf ? (uint16_t *)yo : NULL);
        else if (bf16)
            o->conv_fwd_bf16(ex, &d, xin, param(m, l, 0), wq, param(m, l, 1), &ep, yo);
        else if (packed)
            o->conv_fwd_packed(ex, &d, conv_algo(m), xin, l->wpack, param(m, l, 1), &ep, yo);
        else
            o->conv_fwd_epi(ex, &d, xin, param(m, l, 0), param(m, l, 1), &ep, yo);
    } break;
    case NT_LAYER_BN: {
        int64_t M        = (int64_t)N * l->H * l->W;
        l->bn_batch_mode = bn_batch_mode(l, training);
        if (l->bn_batch_mode) {
            const int r = bn_relu(l);
            o->bn_fwd_train(ex, M, l->C, xin, param(m, l, 0), param(m, l, 1), BN_EPS, r >= 0,
                            l->fuse_res >= 0 ? act(m, l->fuse_res, img0) : NULL,
                            r >= 0 ? act(m, r, img0) : y, l->bn_mean, l->bn_invstd);
            float *mm = param(m, l, 2), *mv = param(m, l, 3);
            for (int c = 0; c < l->C; c++) {
                double is  = l->bn_invstd[c];
                double var = 1.0 / (is * is) - BN_EPS;
                mm[c]      = (float)(mm[c] * BN_MOMENTUM + l->bn_mean[c] * (1.0 - BN_MOMENTUM));
                mv[c]      = (float)(mv[c] * BN_MOMENTUM + var * (1.0 - BN_MOMENTUM));
            }
        } else {
            o->bn_fwd_infer(ex, M, l->C, xin, param(m, l, 0), param(m, l, 1), param(m, l, 2),
                            param(m, l, 3), BN_EPS, y);
        }
    } break;
    case NT_LAYER_RELU:
        o->relu_fwd(ex, n, xin, y);
        break;
    case NT_LAYER_MAXPOOL: {
        nk_conv_desc d = conv_desc(m, l, N);
        o->maxpool_fwd(ex, &d, xin, y);
    } break;
    case NT_LAYER_ADD:
        if (l->fuse_relu >= 0)
            o->add_relu_fwd(ex, n, xin, act(m, l->in[1], img0), act(m, l->fuse_relu, img0));
        else
            o->add_fwd(ex, n, xin, act(m, l->in[1], img0), y);
        break;
    case NT_LAYER_GAP:
        o->gap_fwd(ex, N, src->H * src->W, src->C, xin, y);
        break;
    case NT_LAYER_DENSE:
        o->dense_fwd(ex, N, src->C, l->C, xin, param(m, l, 0), param(m, l, 1),
                     l->act == NT_ACT_RELU, y);
        break;
    case NT_LAYER_DROPOUT:
        if (training && l->rate > 0)
            nk_dropout_fwd_ref(n, l->rate, dropout_key(m, step, i), xin, y);
        else
            memcpy(y, xin, (size_t)n * sizeof(float));
        break;
    }
    if (m->profile) l->prof_fwd += prof_now() - t0;
}

nt_status nt_model_forward(nt_model *m, const nt_tensor *x, int training, uint64_t step)
{
    nt_ctx *ctx         = m->ctx;
    const nt_layer *in0 = &m->layers[0];
    char b1[64];
    if (!x || !x->data || x->ndim != 4 || x->shape[1] != in0->H || x->shape[2] != in0->W ||
        x->shape[3] != in0->C || x->shape[0] < 1 || x->shape[0] > 65536)
        return nt_ctx_seterr(
            ctx, NT_ESHAPE, "forward: input \"%s\" expects [N,%d,%d,%d] with N in 1..65536, got %s",
            in0->name, in0->H, in0->W, in0->C, x ? nt_shape_str(x, b1, sizeof(b1)) : "nothing");
    nt_status s = training ? model_sync_grads(m) : NT_OK;
    if (s != NT_OK) return s;
    int N = (int)x->shape[0];
    s     = plan(m, N, training ? 1 : 0);
    if (s != NT_OK) return s;
    // A training forward means the trainable weights are about to change.
    if (training)
        for (int i = 0; i < m->nlayers; i++)
            if (m->layers[i].trainable) m->layers[i].wpack_ok = 0;
    if ((s = pack_weights(m, training)) != NT_OK) return s;
    nk_exec ex;
    nt_ctx_exec(ctx, m->ws_floats, &ex);
    // A chunked prefix [0, chunk_end) runs chunk_b images at a time; the rest the whole batch.
    const int end = m->chunk_end;
    for (int64_t img0 = 0; end > 0 && img0 < N; img0 += m->chunk_b) {
        const int nc = (int)(N - img0 < m->chunk_b ? N - img0 : m->chunk_b);
        for (int i = 0; i < end; i++)
            fwd_layer(m, &ex, i, nc, img0, x, training, step);
    }
    for (int i = end; i < m->nlayers; i++)
        fwd_layer(m, &ex, i, N, 0, x, training, step);
    m->last_n             = N;
    m->last_training      = training ? 1 : 0;
    m->last_step          = step;
    m->have_forward       = 1;
    m->have_backward_data = training ? 1 : 0;
    return NT_OK;
}

nt_status nt_model_prepare(nt_model *m, int batch, int training)
{
    if (batch < 1 || batch > 65536)
        return nt_ctx_seterr(m->ctx, NT_EINVAL, "prepare: batch must be 1..65536, got %d", batch);
    nt_status s = plan(m, batch, training ? 1 : 0);
    if (s == NT_OK) s = pack_weights(m, training ? 1 : 0);
    nk_exec ex;
    if (s == NT_OK) s = nt_ctx_exec(m->ctx, m->ws_floats, &ex);
    if (s != NT_OK) return s;
    // First touch now: the kernel maps these pages on the first write.
    memset(m->buf, 0, (size_t)m->plan_floats * sizeof(float));
    if (ex.ws) memset(ex.ws, 0, ex.ws_floats * sizeof(float));
    return NT_OK;
}

static void set_view(nt_tensor *v, const nt_layer *l, int N, float *data)
{
    memset(v, 0, sizeof(*v));
    v->data = data;
    if (l->flat) {
        v->ndim     = 2;
        v->shape[0] = N;
        v->shape[1] = l->C;
    } else {
        v->ndim     = 4;
        v->shape[0] = N;
        v->shape[1] = l->H;
        v->shape[2] = l->W;
        v->shape[3] = l->C;
    }
}

const nt_tensor *nt_model_output(const nt_model *m)
{
    if (!m->have_forward) return NULL;
    nt_model *mm = (nt_model *)m;
    int L        = m->nlayers;
    set_view(&mm->out_view, &m->layers[L - 1], m->last_n, mm->buf + m->layers[L - 1].out_off);
    return &mm->out_view;
}

const nt_tensor *nt_model_layer_output(const nt_model *m, int layer)
{
    if (!m->have_forward || layer < 0 || layer >= m->nlayers) return NULL;
    const nt_layer *l = &m->layers[layer];
    if (l->out_off < 0 || l->out_death < m->nlayers - 1) return NULL; // fused away or reused
    if (l->out_bf16) return NULL;                                     // not float32 (not kept)
    nt_model *mm = (nt_model *)m;
    set_view(&mm->layer_view, l, m->last_n, mm->buf + l->out_off);
    return &mm->layer_view;
}

size_t nt_model_activation_bytes(const nt_model *m)
{
    return m->planned_n > 0 ? (size_t)m->plan_floats * sizeof(float) : 0;
}

// ---- loss ----

nt_status nt_model_loss(nt_model *m, const float *labels, const float *weights, double *loss,
                        float *probs, float *dlogits)
{
    const nt_tensor *z = nt_model_output(m);
    if (!z) return nt_ctx_seterr(m->ctx, NT_EINVAL, "loss: run a forward pass first");
    const nt_layer *last = &m->layers[m->nlayers - 1];
    if (!last->flat || last->C != 1)
        return nt_ctx_seterr(m->ctx, NT_ESHAPE,
                             "loss: needs one logit per sample, but the last layer \"%s\" has %d "
                             "outputs",
                             last->name, last->C);
    int N = m->last_n;
    if (probs) // the model's output probability: plain sigmoid, not the loss's clipped p
        for (int i = 0; i < N; i++)
            probs[i] = (float)(1.0 / (1.0 + exp(-(double)z->data[i])));
    if (!labels) return NT_OK;
    for (int i = 0; i < N; i++)
        if (!(labels[i] >= 0.0f && labels[i] <= 1.0f))
            return nt_ctx_seterr(m->ctx, NT_EINVAL, "loss: label %d is %g, expected 0..1", i,
                                 (double)labels[i]);
    double v = nk_bce_fwd_ref(N, z->data, labels, weights, NULL);
    if (loss) *loss = v;
    if (dlogits) nk_bce_bwd_ref(N, z->data, labels, weights, dlogits);
    return NT_OK;
}

// ---- backward ----

// Where layer j's gradient should be written: its own buffer the first time (overwrite), the
// scratch buffer afterwards (the caller then adds it in with accumulate()).
static float *grad_dst(nt_model *m, int j, int *acc)
{
    nt_layer *l = &m->layers[j];
    if (!l->grad_ready) {
        l->grad_ready = 1;
        *acc          = 0;
        return m->buf + l->grad_off;
    }
    *acc = 1;
    return m->buf + m->scratch_off;
}

static void accumulate(nt_model *m, const nk_exec *ex, int j, int acc)
{
    if (!acc) return;
    nt_layer *l = &m->layers[j];
    float *g    = m->buf + l->grad_off;
    m->ctx->ops.add_fwd(ex, layer_numel(l, m->last_n), g, m->buf + m->scratch_off, g);
}

static int wants_grad(const nt_model *m, int j)
{
    return m->layers[j].grad_off >= 0;
}

// For BN i that reads the gradient of ReLU gi (gsrc): the layer whose gradient buffer holds that
// gradient already masked by the ReLU's output (the add's backward left it there, see gm_at),
// or -1. The shortcut's buffer counts only while unchanged: its layer comes before i (so its
// gradient outlives i's step) and no layer whose backward runs between the add's and i's reads
// it.
static int masked_grad_at(const nt_model *m, int i, int gi)
{
    const int at = gi != i ? m->layers[gi].gm_at : -1;
    if (at < 0 || at == gi) return at;
    if (at >= i) return -1;
    for (int t = i + 1, a = m->layers[gi].in[0]; t < a; t++) // up to the add
        for (int k = 0; k < m->layers[t].nin; k++)
            if (m->layers[t].in[k] == at) return -1;
    return at;
}

nt_status nt_model_backward(nt_model *m, const nt_tensor *dy, nt_tensor *dx)
{
    nt_ctx *ctx = m->ctx;
    int L = m->nlayers, N = m->last_n;
    char b1[64];
    if (!m->have_forward || !m->have_backward_data)
        return nt_ctx_seterr(ctx, NT_EINVAL, "backward: needs a training forward pass first");
    if (m->bstart >= L)
        return nt_ctx_seterr(ctx, NT_EINVAL,
                             "backward: nothing is trainable and no input gradient was asked for");
    const nt_layer *last = &m->layers[L - 1];
    if (!dy || !dy->data || nt_tensor_numel(dy) != layer_numel(last, N) || dy->shape[0] != N)
        return nt_ctx_seterr(ctx, NT_ESHAPE,
                             "backward: dy must match the output of \"%s\" "
                             "(batch %d, %lld values), got %s",
                             last->name, N, (long long)layer_numel(last, N),
                             dy ? nt_shape_str(dy, b1, sizeof(b1)) : "nothing");
    if (dx && !m->want_input_grad)
        return nt_ctx_seterr(ctx, NT_EINVAL,
                             "backward: call nt_model_set_want_input_grad before the forward to "
                             "get dx");
    if (dx && (!dx->data || nt_tensor_numel(dx) != layer_numel(&m->layers[0], N)))
        return nt_ctx_seterr(ctx, NT_ESHAPE, "backward: dx must have the input's shape, got %s",
                             nt_shape_str(dx, b1, sizeof(b1)));
    nk_exec ex;
    nt_ctx_exec(ctx, m->ws_floats, &ex);
    const nt_ops *o = &ctx->ops;
    for (int i = 0; i < L; i++) {
        m->layers[i].grad_ready = m->layers[i].db_done = 0;
        m->layers[i].gm_at                             = -1;
    }
    memcpy(m->buf + last->grad_off, dy->data, (size_t)layer_numel(last, N) * sizeof(float));
    m->layers[L - 1].grad_ready = 1;

    for (int i = L - 1; i >= m->bstart; i--) {
        double t0   = m->profile ? prof_now() : 0;
        nt_layer *l = &m->layers[i];
        // In the layer before it, or a pad folded into the pool after it (fuse()).
        if ((l->type == NT_LAYER_RELU || l->type == NT_LAYER_ZEROPAD) && l->fused) continue;
        // A training-fused BN or add starts from the ReLU's gradient.
        const int gi = grad_src(m, i);
        NT_ASSERT(m->layers[gi].grad_ready);
        float *g            = m->buf + m->layers[gi].grad_off;
        int j               = l->nin ? in0(m, l) : -1; // through a folded pad
        const nt_layer *src = j >= 0 ? &m->layers[j] : NULL;
        int want            = j >= 0 && wants_grad(m, j);
        int64_t n           = layer_numel(l, N);
        int acc             = 0;
        float *d;
        switch (l->type) {
        case NT_LAYER_INPUT:
            break;
        case NT_LAYER_ZEROPAD:
            if (!want) break;
            d = grad_dst(m, j, &acc);
            o->zeropad_bwd(&ex, N, src->H, src->W, src->C, l->pt, l->pb, l->pl, l->pr, g, d);
            accumulate(m, &ex, j, acc);
            break;
        case NT_LAYER_CONV: {
            nk_conv_desc cd = conv_desc(m, l, N);
            const int bf    = conv_bf16(m, i, 1);
            float *db       = l->db_done ? NULL : pgrad(m, l, 1); // the BN after it summed it
            if (l->trainable && bf)
                o->conv_bwd_filter_bf16(&ex, &cd, out_of(m, j), g, pgrad(m, l, 0), db);
            else if (l->trainable)
                o->conv_bwd_filter(&ex, &cd, out_of(m, j), g, pgrad(m, l, 0), db);
            if (!want) break;
            d                      = grad_dst(m, j, &acc);
            nt_conv_bwd_data_fn fn = bf ? o->conv_bwd_data_bf16 : o->conv_bwd_data;
            nt_conv_bwd_data_fn fa = bf ? o->conv_bwd_data_bf16_acc : o->conv_bwd_data_acc;
            // A second gradient into the same tensor goes straight in where the kernels can add
            // (1x1 filters: a stride-1 wider one would leave its faster forward-conv form).
            if (acc && cd.R * cd.S == 1 && fa) {
                fa(&ex, &cd, g, param(m, l, 0), m->buf + m->layers[j].grad_off);
                break;
            }
            fn(&ex, &cd, g, param(m, l, 0), d);
            accumulate(m, &ex, j, acc);
        } break;
        case NT_LAYER_BN: {
            int64_t M = (int64_t)N * l->H * l->W;
            if (l->bn_batch_mode) {
                d = want ? grad_dst(m, j, &acc) : NULL;
                // A BN + ReLU with no residual: the mask follows from x and the parameters.
                const int own = l->fuse_relu >= 0 && l->fuse_res < 0;
                // The conv before it gets its bias gradient here (dx is all of its gradient).
                float *cdb = l->sum_dx && d && !acc ? pgrad(m, src, 1) : NULL;
                // The add before the ReLU may have masked its gradient already (in place, or into
                // the shortcut's): read that (the same values) rather than mask it again.
                const int gm    = masked_grad_at(m, i, gi);
                const float *ry = gm < 0 && gi != i ? out_of(m, gi) : NULL;
                o->bn_bwd_train(&ex, M, l->C, out_of(m, j), ry,
                                gm >= 0 ? m->buf + m->layers[gm].grad_off : g, param(m, l, 0),
                                own && gm < 0 ? param(m, l, 1) : NULL, l->bn_mean, l->bn_invstd, d,
                                pgrad(m, l, 0), pgrad(m, l, 1), cdb);
                m->layers[j].db_done = cdb != NULL;
            } else {
                if (!want) break;
                // Frozen statistics: a per-channel scale (in fold_scale, unused by a BN that no
                // conv folds), then one pass over the rows.
                d               = grad_dst(m, j, &acc);
                const float *ga = param(m, l, 0), *mv = param(m, l, 3);
                float *sc = l->fold_scale;
                for (int c = 0; c < l->C; c++)
                    sc[c] = ga[c] / sqrtf(mv[c] + BN_EPS);
                const int C = l->C;
#pragma omp parallel for num_threads(ex.nthreads) schedule(static)
                for (int64_t r = 0; r < M; r++) {
#pragma omp simd
                    for (int c = 0; c < C; c++)
                        d[r * C + c] = g[r * C + c] * sc[c];
                }
            }
            if (want) accumulate(m, &ex, j, acc);
        } break;
        case NT_LAYER_RELU:
            if (!want) break;
            d = grad_dst(m, j, &acc);
            o->relu_bwd(&ex, n, out_of(m, i), g, d);
            accumulate(m, &ex, j, acc);
            break;
        case NT_LAYER_MAXPOOL: {
            if (!want) break;
            nk_conv_desc cd = conv_desc(m, l, N);
            d               = grad_dst(m, j, &acc);
            o->maxpool_bwd(&ex, &cd, out_of(m, j), g, d);
            accumulate(m, &ex, j, acc);
        } break;
        case NT_LAYER_ADD:
            // Both inputs BNs that read the fused ReLU's gradient themselves: mask it once in
            // place for both, rather than each reading the ReLU's output twice to mask it.
            if (gi != i && !wants_grad(m, l->in[0]) && !wants_grad(m, l->in[1])) {
                o->relu_bwd(&ex, n, out_of(m, gi), g, g);
                m->layers[gi].gm_at = gi;
            }
            for (int k = 0; k < 2; k++) {
                int jk = l->in[k];
                if (!wants_grad(m, jk)) continue; // (also a BN that reads gi itself)
                d = grad_dst(m, jk, &acc);
                if (gi != i) { // through the fused ReLU's mask
                    o->relu_bwd(&ex, n, out_of(m, gi), g, d);
                    if (!acc) m->layers[gi].gm_at = jk;
                    accumulate(m, &ex, jk, acc);
                } else if (acc) {
                    o->add_fwd(&ex, n, m->buf + m->layers[jk].grad_off, g,
                               m->buf + m->layers[jk].grad_off);
                } else {
                    memcpy(d, g, (size_t)n * sizeof(float));
                }
            }
            break;
        case NT_LAYER_GAP:
            if (!want) break;
            d = grad_dst(m, j, &acc);
            o->gap_bwd(&ex, N, src->H * src->W, src->C, g, d);
            accumulate(m, &ex, j, acc);
            break;
        case NT_LAYER_DENSE:
            // Undo the fused ReLU in place: g is read by nobody after this layer.
            if (l->act == NT_ACT_RELU) o->relu_bwd(&ex, n, out_of(m, i), g, g);
            if (l->trainable)
                o->dense_bwd_filter(&ex, N, src->C, l->C, out_of(m, j), g, pgrad(m, l, 0),
                                    pgrad(m, l, 1));
            if (!want) break;
            d = grad_dst(m, j, &acc);
            o->dense_bwd_data(&ex, N, src->C, l->C, g, param(m, l, 0), d);
            accumulate(m, &ex, j, acc);
            break;
        case NT_LAYER_DROPOUT:
            if (!want) break;
            d = grad_dst(m, j, &acc);
            if (l->rate > 0)
                nk_dropout_bwd_ref(n, l->rate, dropout_key(m, m->last_step, i), g, d);
            else
                memcpy(d, g, (size_t)n * sizeof(float));
            accumulate(m, &ex, j, acc);
            break;
        }
        if (m->profile) l->prof_bwd += prof_now() - t0;
    }
    if (dx) {
        NT_ASSERT(m->layers[0].grad_ready);
        memcpy(dx->data, m->buf + m->layers[0].grad_off,
               (size_t)layer_numel(&m->layers[0], N) * sizeof(float));
    }
    return NT_OK;
}
