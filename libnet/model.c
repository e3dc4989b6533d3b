/*
 * model.c: layer graphs in Keras order, their parameters, a static memory plan per batch size,
 * forward (training and inference), backward through the trainable suffix, and the fused
 * sigmoid + weighted BCE loss. Math goes through ctx->ops (kernels/). The ResNet50 builder is in
 * resnet.c. Verified against PyTorch in tests/test_fixtures.c and tests/test_train10.c.
 */
#include "libnet/model_internal.h"

#include <math.h>
#include <string.h>

static const char *type_names[] = {
    [NT_LAYER_INPUT] = "InputLayer", [NT_LAYER_ZEROPAD] = "ZeroPadding2D",
    [NT_LAYER_CONV] = "Conv2D",      [NT_LAYER_BN] = "BatchNormalization",
    [NT_LAYER_RELU] = "Activation",  [NT_LAYER_MAXPOOL] = "MaxPooling2D",
    [NT_LAYER_ADD] = "Add",          [NT_LAYER_GAP] = "GlobalAveragePooling2D",
    [NT_LAYER_DENSE] = "Dense",      [NT_LAYER_DROPOUT] = "Dropout",
};

// ---- building ----

nt_status nt_model_new(nt_ctx *ctx, const char *input_name, int H, int W, int C, nt_model **out)
{
    *out = NULL;
    if (H < 1 || W < 1 || C < 1 || H > 16384 || W > 16384 || C > 65536)
        return nt_ctx_seterr(ctx, NT_EINVAL, "model: input size %dx%dx%d is out of range", H, W, C);
    nt_model *m = calloc(1, sizeof(*m));
    if (!m) return nt_ctx_seterr(ctx, NT_ENOMEM, "model: out of memory");
    m->ctx        = ctx;
    m->head_start = -1;
    *out          = m;
    nt_layer *l   = model_add_layer(m, input_name, NT_LAYER_INPUT);
    if (!l) {
        nt_model_free(m);
        *out = NULL;
        return NT_ENOMEM;
    }
    l->H = H, l->W = W, l->C = C;
    return NT_OK;
}

void nt_model_free(nt_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->nparams; i++) {
        nt_tensor_free(&m->params[i].value);
        nt_tensor_free(&m->params[i].grad);
    }
    for (int i = 0; i < m->nlayers; i++) {
        free(m->layers[i].bn_mean);
        free(m->layers[i].bn_invstd);
        free(m->layers[i].fold_scale);
        nt_free(m->layers[i].wpack);
    }
    free(m->params);
    free(m->layers);
    nt_free(m->buf);
    free(m->plan);
    free(m);
}

nt_layer *model_add_layer(nt_model *m, const char *name, nt_layer_type type)
{
    if (!name || !*name || strlen(name) >= sizeof(m->layers[0].name)) {
        nt_ctx_seterr(m->ctx, NT_EINVAL, "model: layer name \"%s\" is empty or too long",
                      name ? name : "");
        return NULL;
    }
    if (nt_model_find_layer(m, name) >= 0) {
        nt_ctx_seterr(m->ctx, NT_EINVAL, "model: a layer named \"%s\" already exists", name);
        return NULL;
    }
    if (m->nlayers == m->cap_layers) {
        int cap      = m->cap_layers ? 2 * m->cap_layers : 64;
        nt_layer *nl = realloc(m->layers, (size_t)cap * sizeof(*nl));
        if (!nl) {
            nt_ctx_seterr(m->ctx, NT_ENOMEM, "model: out of memory adding layer \"%s\"", name);
            return NULL;
        }
        m->layers     = nl;
        m->cap_layers = cap;
    }
    nt_layer *l = &m->layers[m->nlayers];
    memset(l, 0, sizeof(*l));
    snprintf(l->name, sizeof(l->name), "%s", name);
    l->type      = type;
    l->param0    = m->nparams;
    l->trainable = 1;
    l->index     = m->nlayers++;
    m->planned_n = 0; // the graph changed: plan again
    return l;
}

// Adds parameter "<layer>/<suffix>" of the given shape to the most recent layer.
static int add_param(nt_model *m, nt_layer *l, const char *suffix, nt_param_kind kind, int ndim,
                     const int64_t *shape)
{
    if (m->nparams == m->cap_params) {
        int cap             = m->cap_params ? 2 * m->cap_params : 128;
        nt_model_param_ *np = realloc(m->params, (size_t)cap * sizeof(*np));
        if (!np) return nt_ctx_seterr(m->ctx, NT_ENOMEM, "model: out of memory"), -1;
        m->params     = np;
        m->cap_params = cap;
    }
    nt_model_param_ *p = &m->params[m->nparams];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s/%s", l->name, suffix);
    p->layer = l->index;
    p->kind  = kind;
    if (nt_tensor_new(m->ctx, ndim, shape, &p->value) != NT_OK) return -1;
    l->nparam++;
    return m->nparams++;
}

static nt_layer *check_input(nt_model *m, const char *name, int in, const char *what)
{
    if (in < 0 || in >= m->nlayers) {
        nt_ctx_seterr(m->ctx, NT_EINVAL, "%s \"%s\": input layer %d does not exist (model has %d)",
                      what, name ? name : "", in, m->nlayers);
        return NULL;
    }
    return &m->layers[in];
}

static int is_map(const nt_layer *l)
{
    return !l->flat;
}

int nt_layer_zeropad(nt_model *m, const char *name, int in, int pt, int pb, int pl, int pr)
{
    nt_layer *src = check_input(m, name, in, "ZeroPadding2D");
    if (!src) return -1;
    if (!is_map(src) || pt < 0 || pb < 0 || pl < 0 || pr < 0 || pt + pb > 4096 || pl + pr > 4096) {
        nt_ctx_seterr(m->ctx, NT_EINVAL,
                      "ZeroPadding2D \"%s\": needs a feature map and paddings in 0..4096, got "
                      "(%d,%d,%d,%d)",
                      name, pt, pb, pl, pr);
        return -1;
    }
    int H = src->H, W = src->W, C = src->C;
    nt_layer *l = model_add_layer(m, name, NT_LAYER_ZEROPAD);
    if (!l) return -1;
    l->nin = 1, l->in[0] = in;
    l->pt = pt, l->pb = pb, l->pl = pl, l->pr = pr;
    l->H = H + pt + pb, l->W = W + pl + pr, l->C = C;
    return l->index;
}

int nt_layer_conv(nt_model *m, const char *name, int in, int K, int R, int S, int stride, int pad_h,
                  int pad_w)
{
    nt_layer *src = check_input(m, name, in, "Conv2D");
    if (!src) return -1;
    if (!is_map(src) || K < 1 || R < 1 || S < 1 || stride < 1 || pad_h < 0 || pad_w < 0 ||
        K > 65536 || R > 64 || S > 64 || stride > 64) {
        nt_ctx_seterr(m->ctx, NT_EINVAL,
                      "Conv2D \"%s\": needs a feature map, K >= 1, kernel 1..64, stride 1..64, "
                      "pads >= 0; got K=%d kernel %dx%d stride %d pad %d,%d",
                      name, K, R, S, stride, pad_h, pad_w);
        return -1;
    }
    // Output size for symmetric padding (Keras "same" at stride 1 or "valid").
    int P = (src->H + 2 * pad_h - R) / stride + 1;
    int Q = (src->W + 2 * pad_w - S) / stride + 1;
    if (src->H + 2 * pad_h < R || src->W + 2 * pad_w < S) {
        nt_ctx_seterr(
            m->ctx, NT_ESHAPE,
            "Conv2D \"%s\": a %dx%d kernel does not fit an input of %dx%d (padding %d,%d)", name, R,
            S, src->H, src->W, pad_h, pad_w);
        return -1;
    }
    int C       = src->C;
    nt_layer *l = model_add_layer(m, name, NT_LAYER_CONV);
    if (!l) return -1;
    l->nin = 1, l->in[0] = in;
    l->R = R, l->S = S, l->stride = stride, l->pad_h = pad_h, l->pad_w = pad_w;
    l->H = P, l->W = Q, l->C = K;
    int64_t ks[4] = {R, S, C, K}, bs[1] = {K};
    if (add_param(m, l, "kernel", NT_PK_KERNEL, 4, ks) < 0) return -1;
    if (add_param(m, l, "bias", NT_PK_BIAS, 1, bs) < 0) return -1;
    return l->index;
}

int nt_layer_bn(nt_model *m, const char *name, int in)
{
    nt_layer *src = check_input(m, name, in, "BatchNormalization");
    if (!src) return -1;
    int H = src->H, W = src->W, C = src->C, flat = src->flat;
    nt_layer *l = model_add_layer(m, name, NT_LAYER_BN);
    if (!l) return -1;
    l->nin = 1, l->in[0] = in;
    l->H = H, l->W = W, l->C = C, l->flat = flat;
    int64_t s[1] = {C};
    if (add_param(m, l, "gamma", NT_PK_GAMMA, 1, s) < 0) return -1;
    if (add_param(m, l, "beta", NT_PK_BETA, 1, s) < 0) return -1;
    if (add_param(m, l, "moving_mean", NT_PK_MEAN, 1, s) < 0) return -1;
    if (add_param(m, l, "moving_variance", NT_PK_VAR, 1, s) < 0) return -1;
    l->bn_mean    = calloc((size_t)C, sizeof(float));
    l->bn_invstd  = calloc((size_t)C, sizeof(float));
    l->fold_scale = calloc(2 * (size_t)C, sizeof(float));
    l->fold_shift = l->fold_scale ? l->fold_scale + C : NULL;
    if (!l->bn_mean || !l->bn_invstd || !l->fold_scale) {
        nt_ctx_seterr(m->ctx, NT_ENOMEM, "BatchNormalization \"%s\": out of memory", name);
        return -1;
    }
    return l->index;
}

static int simple_layer(nt_model *m, const char *name, int in, nt_layer_type type, const char *what)
{
    nt_layer *src = check_input(m, name, in, what);
    if (!src) return -1;
    nt_layer s  = *src;
    nt_layer *l = model_add_layer(m, name, type);
    if (!l) return -1;
    l->nin = 1, l->in[0] = in;
    l->H = s.H, l->W = s.W, l->C = s.C, l->flat = s.flat;
    return l->index;
}

int nt_layer_relu(nt_model *m, const char *name, int in)
{
    return simple_layer(m, name, in, NT_LAYER_RELU, "Activation");
}

int nt_layer_maxpool(nt_model *m, const char *name, int in, int R, int stride)
{
    nt_layer *src = check_input(m, name, in, "MaxPooling2D");
    if (!src) return -1;
    if (!is_map(src) || R < 1 || stride < 1 || R > src->H || R > src->W || R > 64 || stride > 64) {
        nt_ctx_seterr(m->ctx, NT_ESHAPE,
                      "MaxPooling2D \"%s\": a %dx%d window (stride %d) does not fit an input of "
                      "%dx%d",
                      name, R, R, stride, src->H, src->W);
        return -1;
    }
    int P = (src->H - R) / stride + 1, Q = (src->W - R) / stride + 1, C = src->C;
    nt_layer *l = model_add_layer(m, name, NT_LAYER_MAXPOOL);
    if (!l) return -1;
    l->nin = 1, l->in[0] = in;
    l->R = R, l->S = R, l->stride = stride;
    l->H = P, l->W = Q, l->C = C;
    return l->index;
}

int nt_layer_add(nt_model *m, const char *name, int a, int b)
{
    nt_layer *la = check_input(m, name, a, "Add");
    nt_layer *lb = check_input(m, name, b, "Add");
    if (!la || !lb) return -1;
    if (la->H != lb->H || la->W != lb->W || la->C != lb->C || la->flat != lb->flat) {
        nt_ctx_seterr(m->ctx, NT_ESHAPE,
                      "Add \"%s\": inputs \"%s\" [%d,%d,%d] and \"%s\" [%d,%d,%d] differ in shape",
                      name, la->name, la->H, la->W, la->C, lb->name, lb->H, lb->W, lb->C);
        return -1;
    }
    nt_layer s  = *la;
    nt_layer *l = model_add_layer(m, name, NT_LAYER_ADD);
    if (!l) return -1;
    l->nin = 2, l->in[0] = a, l->in[1] = b;
    l->H = s.H, l->W = s.W, l->C = s.C, l->flat = s.flat;
    return l->index;
}

int nt_layer_gap(nt_model *m, const char *name, int in)
{
    nt_layer *src = check_input(m, name, in, "GlobalAveragePooling2D");
    if (!src) return -1;
    if (!is_map(src)) {
        nt_ctx_seterr(m->ctx, NT_ESHAPE,
                      "GlobalAveragePooling2D \"%s\": input \"%s\" is not a "
                      "feature map",
                      name, src->name);
        return -1;
    }
    int C       = src->C;
    nt_layer *l = model_add_layer(m, name, NT_LAYER_GAP);
    if (!l) return -1;
    l->nin = 1, l->in[0] = in;
    l->H = 1, l->W = 1, l->C = C, l->flat = 1;
    if (m->head_start < 0) m->head_start = l->index;
    return l->index;
}

int nt_layer_dense(nt_model *m, const char *name, int in, int units, nt_act act)
{
    nt_layer *src = check_input(m, name, in, "Dense");
    if (!src) return -1;
    if (!src->flat || units < 1 || units > (1 << 20) || act < NT_ACT_NONE || act > NT_ACT_SIGMOID) {
        nt_ctx_seterr(m->ctx, NT_EINVAL,
                      "Dense \"%s\": needs a flat input and 1..1048576 units; got input \"%s\" "
                      "(%s) and %d units",
                      name, src->name, src->flat ? "flat" : "a feature map", units);
        return -1;
    }
    int C       = src->C;
    nt_layer *l = model_add_layer(m, name, NT_LAYER_DENSE);
    if (!l) return -1;
    l->nin = 1, l->in[0] = in;
    l->act = act;
    l->H = 1, l->W = 1, l->C = units, l->flat = 1;
    int64_t ks[2] = {C, units}, bs[1] = {units};
    if (add_param(m, l, "kernel", NT_PK_KERNEL, 2, ks) < 0) return -1;
    if (add_param(m, l, "bias", NT_PK_BIAS, 1, bs) < 0) return -1;
    return l->index;
}

int nt_layer_dropout(nt_model *m, const char *name, int in, float rate)
{
    if (!(rate >= 0.0f && rate < 1.0f)) {
        nt_ctx_seterr(m->ctx, NT_EINVAL, "Dropout \"%s\": rate must be in [0, 1), got %g",
                      name ? name : "", (double)rate);
        return -1;
    }
    int i = simple_layer(m, name, in, NT_LAYER_DROPOUT, "Dropout");
    if (i >= 0) m->layers[i].rate = rate;
    return i;
}

// ---- introspection ----

int nt_model_num_layers(const nt_model *m)
{
    return m->nlayers;
}

static int64_t layer_nparams(const nt_model *m, const nt_layer *l, int64_t *ntrain)
{
    int64_t n = 0, t = 0;
    for (int k = 0; k < l->nparam; k++) {
        const nt_model_param_ *p = &m->params[l->param0 + k];
        int64_t c                = nt_tensor_numel(&p->value);
        n += c;
        if (l->trainable && param_is_trainable_kind(p->kind)) t += c;
    }
    if (ntrain) *ntrain = t;
    return n;
}

void nt_model_layer(const nt_model *m, int i, nt_layer_info *info)
{
    const nt_layer *l = &m->layers[i];
    memset(info, 0, sizeof(*info));
    info->name      = l->name;
    info->type      = l->type;
    info->type_name = type_names[l->type];
    info->ninputs   = l->nin;
    info->inputs[0] = l->in[0];
    info->inputs[1] = l->in[1];
    if (l->flat) {
        info->out_ndim     = 2;
        info->out_shape[0] = -1;
        info->out_shape[1] = l->C;
    } else {
        info->out_ndim     = 4;
        info->out_shape[0] = -1;
        info->out_shape[1] = l->H;
        info->out_shape[2] = l->W;
        info->out_shape[3] = l->C;
    }
    info->nparams   = layer_nparams(m, l, &info->ntrain);
    info->trainable = l->trainable;
    info->out_bf16  = l->out_bf16;
}

int nt_model_find_layer(const nt_model *m, const char *name)
{
    for (int i = 0; i < m->nlayers; i++)
        if (strcmp(m->layers[i].name, name) == 0) return i;
    return -1;
}

int nt_model_num_params(const nt_model *m)
{
    return m->nparams;
}

void nt_model_weights_changed(nt_model *m)
{
    for (int i = 0; i < m->nlayers; i++)
        m->layers[i].wpack_ok = 0;
}

void nt_model_param(const nt_model *m, int i, nt_param *p)
{
    // The caller may write the value: derived copies are stale from here on. The field is a
    // cache, not part of the model's observable state, hence the cast.
    nt_model_weights_changed((nt_model *)m);
    nt_model_param_ *q = &m->params[i];
    p->name            = q->name;
    p->layer           = q->layer;
    p->value           = &q->value;
    p->grad            = q->grad.data ? &q->grad : NULL;
    p->trainable       = m->layers[q->layer].trainable && param_is_trainable_kind(q->kind);
}

const nt_tensor *nt_model_param_value(const nt_model *m, int i)
{
    return &m->params[i].value;
}

int nt_model_find_param(const nt_model *m, const char *name)
{
    for (int i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

int64_t nt_model_count_params(const nt_model *m, int64_t *trainable)
{
    int64_t n = 0, t = 0;
    for (int i = 0; i < m->nlayers; i++) {
        int64_t lt = 0;
        n += layer_nparams(m, &m->layers[i], &lt);
        t += lt;
    }
    if (trainable) *trainable = t;
    return n;
}

int nt_model_head_start(const nt_model *m)
{
    return m->head_start >= 0 ? m->head_start : m->nlayers;
}

// Allocates grads for trainable parameters and frees those of frozen ones.
nt_status model_sync_grads(nt_model *m)
{
    for (int i = 0; i < m->nparams; i++) {
        nt_model_param_ *p = &m->params[i];
        int want           = m->layers[p->layer].trainable && param_is_trainable_kind(p->kind);
        if (want && !p->grad.data) {
            nt_status s = nt_tensor_new(m->ctx, p->value.ndim, p->value.shape, &p->grad);
            if (s != NT_OK) return s;
        } else if (!want && p->grad.data) {
            nt_tensor_free(&p->grad);
        }
    }
    return NT_OK;
}

nt_status nt_model_set_trainable_last(nt_model *m, int n)
{
    int hs = nt_model_head_start(m);
    if (n > hs)
        return nt_ctx_seterr(m->ctx, NT_EINVAL,
                             "unfreeze: %d layers asked for, but the backbone has %d (input "
                             "included); use a number in 0..%d or all",
                             n, hs, hs);
    int first = n < 0 ? 0 : hs - n;
    for (int i = 0; i < m->nlayers; i++)
        m->layers[i].trainable = (i >= first);
    m->planned_n = 0;
    return model_sync_grads(m);
}

void nt_model_keep_output(nt_model *m, int layer, int on)
{
    if (layer < 0 || layer >= m->nlayers) return;
    m->layers[layer].keep = on ? 1 : 0;
    m->planned_n          = 0;
}

void nt_model_set_want_input_grad(nt_model *m, int on)
{
    m->want_input_grad = on ? 1 : 0;
    m->planned_n       = 0;
}

// ---- initialisation ----

nt_status nt_model_init(nt_model *m, nt_init kind, uint64_t seed)
{
    if (kind != NT_INIT_KERAS && kind != NT_INIT_TEST)
        return nt_ctx_seterr(m->ctx, NT_EINVAL, "init: unknown kind %d", (int)kind);
    nt_model_weights_changed(m);
    for (int p = 0; p < m->nparams; p++) {
        nt_model_param_ *q = &m->params[p];
        nt_tensor *t       = &q->value;
        int64_t n          = nt_tensor_numel(t);
        uint64_t key       = nk_mix64(seed + NK_GOLDEN * (uint64_t)(p + 1));
        int test           = kind == NT_INIT_TEST;
        double a           = 0;
        if (q->kind == NT_PK_KERNEL) {
            double fan_in, fan_out;
            if (t->ndim == 4) {
                double rs = (double)(t->shape[0] * t->shape[1]);
                fan_in    = rs * (double)t->shape[2];
                fan_out   = rs * (double)t->shape[3];
            } else {
                fan_in  = (double)t->shape[0];
                fan_out = (double)t->shape[1];
            }
            a = test ? sqrt(6.0 / fan_in) : sqrt(6.0 / (fan_in + fan_out));
        }
        for (int64_t i = 0; i < n; i++) {
            float u   = test || q->kind == NT_PK_KERNEL ? nk_u01(key, (uint64_t)i) : 0.0f;
            double du = u, v = 0; // in double, as tests/gen_fixtures.py computes it
            switch (q->kind) {
            case NT_PK_KERNEL:
                v = (2.0 * du - 1.0) * a;
                break;
            case NT_PK_BIAS:
                v = test ? 0.1 * (2.0 * du - 1.0) : 0.0;
                break;
            case NT_PK_GAMMA:
                v = test ? 1.0 + 0.2 * (2.0 * du - 1.0) : 1.0;
                break;
            case NT_PK_BETA:
                v = test ? 0.1 * (2.0 * du - 1.0) : 0.0;
                break;
            case NT_PK_MEAN:
                v = test ? 0.1 * (2.0 * du - 1.0) : 0.0;
                break;
            case NT_PK_VAR:
                v = test ? 0.5 + du : 1.0;
                break;
            }
            t->data[i] = (float)v;
        }
    }
    return NT_OK;
}
