/*
 * optim.c: SGD (momentum, Nesterov) and Adam with Keras's update formulas, decoupled weight
 * decay, over the trainable parameters of a model. State is one float buffer per parameter.
 * Checked by tests/test_train10.c (SGD against PyTorch) and tests/test_model.c (Adam by hand).
 */
#include "libnet/model_internal.h"

#include <math.h>
#include <omp.h>
#include <string.h>

typedef struct optim_slot {
    const char *name;
    nt_tensor *value, *grad;
    float *m, *v;
} optim_slot;

struct nt_optim {
    nt_ctx *ctx;
    nt_optim_cfg cfg;
    optim_slot *slots;
    int nslots;
    int64_t t; // Adam step count
};

void nt_optim_cfg_default(nt_optim_cfg *cfg, nt_opt_kind kind)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->kind  = kind;
    cfg->lr    = kind == NT_OPT_ADAM ? 1e-3f : 1e-2f;
    cfg->beta1 = 0.9f;
    cfg->beta2 = 0.999f;
    cfg->eps   = 1e-7f;
}

void nt_optim_free(nt_optim *o)
{
    if (!o) return;
    for (int i = 0; i < o->nslots; i++) {
        nt_free(o->slots[i].m);
        nt_free(o->slots[i].v);
    }
    free(o->slots);
    free(o);
}

nt_status nt_optim_new(nt_ctx *ctx, const nt_optim_cfg *cfg, nt_model *m, nt_optim **out)
{
    *out = NULL;
    if (cfg->kind != NT_OPT_SGD && cfg->kind != NT_OPT_ADAM)
        return nt_ctx_seterr(ctx, NT_EINVAL, "optimizer: unknown kind %d", (int)cfg->kind);
    if (!(cfg->lr > 0 && cfg->lr < 10))
        return nt_ctx_seterr(ctx, NT_EINVAL, "optimizer: learning rate must be in (0, 10), got %g",
                             (double)cfg->lr);
    if (!(cfg->momentum >= 0 && cfg->momentum < 1) || !(cfg->beta1 >= 0 && cfg->beta1 < 1) ||
        !(cfg->beta2 >= 0 && cfg->beta2 < 1) || !(cfg->eps > 0) || !(cfg->weight_decay >= 0))
        return nt_ctx_seterr(ctx, NT_EINVAL,
                             "optimizer: momentum, beta1, beta2 must be in [0, 1), eps > 0, "
                             "weight decay >= 0");
    nt_status s = model_sync_grads(m);
    if (s != NT_OK) return s;
    nt_optim *o = calloc(1, sizeof(*o));
    if (!o) return nt_ctx_seterr(ctx, NT_ENOMEM, "optimizer: out of memory");
    o->ctx   = ctx;
    o->cfg   = *cfg;
    o->slots = calloc((size_t)m->nparams + 1, sizeof(*o->slots));
    if (!o->slots) {
        nt_optim_free(o);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "optimizer: out of memory");
    }
    for (int i = 0; i < m->nparams; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        if (!p.trainable) continue;
        optim_slot *sl = &o->slots[o->nslots++];
        sl->name       = p.name;
        sl->value      = p.value;
        sl->grad       = p.grad;
        size_t b       = (size_t)nt_tensor_numel(p.value) * sizeof(float);
        int need_v     = cfg->kind == NT_OPT_ADAM;
        int need_m     = need_v || cfg->momentum > 0;
        if (need_m && !(sl->m = nt_alloc(b))) goto oom;
        if (need_v && !(sl->v = nt_alloc(b))) goto oom;
        if (sl->m) memset(sl->m, 0, b);
        if (sl->v) memset(sl->v, 0, b);
    }
    *out = o;
    return NT_OK;
oom:
    nt_optim_free(o);
    return nt_ctx_seterr(ctx, NT_ENOMEM, "optimizer: out of memory for its state");
}

// Slots of at least this many floats are split over the threads; smaller ones (biases, BN) go
// whole to one thread each.
#define OPTIM_MIN_SPLIT 32768

// One slot's update over elements [i0, i1), with nt_optim_step's formulas element by element:
// each element's arithmetic is the same whatever the split, so any thread count gives the same
// bits (and the loops vectorise: no excess precision, no contraction at the baseline flags).
static void slot_update(const nt_optim_cfg *c, const optim_slot *sl, float flr, float wd,
                        int64_t i0, int64_t i1)
{
    float *w = sl->value->data, *g = sl->grad->data;
    if (c->kind == NT_OPT_ADAM) {
        const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
        float *m = sl->m, *v = sl->v;
#pragma omp simd
        for (int64_t i = i0; i < i1; i++) {
            const float wi = w[i];
            m[i]           = b1 * m[i] + (1 - b1) * g[i];
            v[i]           = b2 * v[i] + (1 - b2) * g[i] * g[i];
            w[i]           = wi - flr * m[i] / (sqrtf(v[i]) + eps) - wd * wi;
        }
    } else if (!sl->m) {
#pragma omp simd
        for (int64_t i = i0; i < i1; i++)
            w[i] -= flr * g[i] + wd * w[i];
    } else {
        const float mom = c->momentum;
        float *v        = sl->m;
        if (c->nesterov) {
#pragma omp simd
            for (int64_t i = i0; i < i1; i++) {
                const float wi = w[i];
                v[i]           = mom * v[i] - flr * g[i];
                float nw       = wi + mom * v[i] - flr * g[i];
                w[i]           = nw - wd * wi;
            }
        } else {
#pragma omp simd
            for (int64_t i = i0; i < i1; i++) {
                const float wi = w[i];
                v[i]           = mom * v[i] - flr * g[i];
                float nw       = wi + v[i];
                w[i]           = nw - wd * wi;
            }
        }
    }
}

nt_status nt_optim_step(nt_optim *o)
{
    const nt_optim_cfg *c = &o->cfg;
    double lr             = c->lr;
    double lr_t           = lr;
    if (c->kind == NT_OPT_ADAM) {
        o->t++;
        lr_t = lr * sqrt(1.0 - pow(c->beta2, (double)o->t)) / (1.0 - pow(c->beta1, (double)o->t));
    }
    const float flr = (float)lr_t, wd = (float)(lr * c->weight_decay);
    // Memory-bound (SGD reads and writes 5 floats an element, Adam 7): the threads share it,
    // without a barrier between the slots since each element is updated once.
#pragma omp parallel num_threads(nt_ctx_nthreads(o->ctx))
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        for (int s = 0; s < o->nslots; s++) {
            const int64_t n = nt_tensor_numel(o->slots[s].value);
            if (n < OPTIM_MIN_SPLIT) {
                if (s % nth == tid) slot_update(c, &o->slots[s], flr, wd, 0, n);
                continue;
            }
            // Whole 64-byte runs per thread.
            const int64_t i0 = (n * tid / nth) & ~(int64_t)15;
            const int64_t i1 = tid == nth - 1 ? n : (n * (tid + 1) / nth) & ~(int64_t)15;
            slot_update(c, &o->slots[s], flr, wd, i0, i1);
        }
    }
    return NT_OK;
}

void nt_optim_set_lr(nt_optim *o, float lr)
{
    o->cfg.lr = lr;
}

float nt_optim_lr(const nt_optim *o)
{
    return o->cfg.lr;
}

// ---- state for checkpoints ----

// State tensors in slot order: m then v for each slot that has them.
int nt_optim_num_state(const nt_optim *o)
{
    int n = 0;
    for (int s = 0; s < o->nslots; s++)
        n += (o->slots[s].m != NULL) + (o->slots[s].v != NULL);
    return n;
}

void nt_optim_state_at(const nt_optim *o, int i, char *name, size_t len, nt_tensor *view)
{
    for (int s = 0; s < o->nslots; s++) {
        const optim_slot *sl = &o->slots[s];
        float *bufs[2]       = {sl->m, sl->v};
        const char *sfx[2]   = {o->cfg.kind == NT_OPT_ADAM ? "m" : "momentum", "v"};
        for (int k = 0; k < 2; k++) {
            if (!bufs[k]) continue;
            if (i-- > 0) continue;
            snprintf(name, len, "optimizer/%s/%s", sl->name, sfx[k]);
            *view      = *sl->value;
            view->data = bufs[k];
            return;
        }
    }
    NT_ASSERT(0 && "optimizer state index out of range");
}

int64_t nt_optim_iterations(const nt_optim *o)
{
    return o->t;
}

void nt_optim_set_iterations(nt_optim *o, int64_t t)
{
    o->t = t;
}
