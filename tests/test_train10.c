/*
 * test_train10.c: 10 Keras-SGD steps (lr 0.01, momentum 0.9) of the full ResNet50 with head at
 * batch 4, 64x64, the last 20 backbone layers + head trainable, against the loss sequence and
 * final inference logits of the PyTorch float64 reference in tests/fixtures/train10.bin
 * (tests/gen_fixtures.py, gen_train10), once with NT_IMPL_REF (the brief's 1e-4 per step) and
 * once with NT_IMPL_AUTO (float32-sized tolerances, see below). Also checks exactly that frozen
 * weights and frozen BN statistics do not move. Single-step parity is test_fixtures.c.
 */
#include "libnet/nt.h"
#include "tests/check.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

#include <math.h>
#include <string.h>

// ---- tolerances (the same constants, with the measurements behind them, are in
// tests/gen_fixtures.py under "tolerances of the C tests"; keep the two in step) ----
//
// NT_IMPL_REF accumulates in double and stores float32: it follows the float64 trajectory within
// 2e-6 per step and 3e-6 in the final logits (measured), so the brief's tolerances apply: 1e-4
// of the loss at every step, 1e-3 of max|ref| for the final logits.
static const double T10_REF_TOL_LOSS[10] = {1e-4, 1e-4, 1e-4, 1e-4, 1e-4,
                                            1e-4, 1e-4, 1e-4, 1e-4, 1e-4};
#define T10_REF_TOL_FINAL 1e-3
// NT_IMPL_AUTO accumulates in float32. Its rounding perturbs conv5 activations by ~1e-5 of their
// range and so flips, every few steps, a ReLU whose input is that close to 0; each flip changes
// that step's gradients by ~1% (the BNs there normalise over only 16 rows), and float32 and
// float64 trajectories separate: worst of 15 float32 torch runs 2e-6, 1e-4, 3e-3, 1.7e-2, then
// <= 1e-1 from step 4 on. So the loss tolerance grows tenfold per step up to 0.3. Measured on
// this model, bugs still exceed it at some step: gradients accumulated across steps (1e-1 at
// step 2), one dropout mask for all steps (3e-1 at step 1), no momentum (4e-2 at step 2),
// Nesterov (1.4e-2 at step 1), frozen layers on batch statistics (step 0). REF catches smaller
// ones.
static const double T10_AUTO_TOL_LOSS[10] = {1e-4, 1e-3, 1e-2, 1e-1, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3};
// Final inference logits, relative to max|ref|. They sit near 0.18 for all four images (the
// moving statistics move only ~10% in 10 steps) and the separation above moves them by up to
// 0.025 (14%) in float32 torch. Catches gross errors only (inference on batch statistics is 14x
// off); REF holds them to 1e-3.
#define T10_AUTO_TOL_FINAL 0.4
// train10 scales every _0_bn and _3_bn gamma by this after the init (see RESIDUAL_GAMMA_SCALE
// in gen_fixtures.py: without it every logit is clipped and no gradient flows). A power of two,
// so the scaled values are exact in float32 on both sides.
#define RESIDUAL_GAMMA_SCALE 0.25f

#define SEED   7
#define NSTEPS 10

// A copy of parameter `name`'s values (NULL when there is no such parameter).
static float *snapshot(const nt_model *m, const char *name, int64_t *n)
{
    int i = nt_model_find_param(m, name);
    CHECK_MSG(i >= 0, "no parameter %s", name);
    if (i < 0) return NULL;
    nt_param p;
    nt_model_param(m, i, &p);
    *n       = nt_tensor_numel(p.value);
    float *c = malloc((size_t)*n * sizeof(float));
    if (c) memcpy(c, p.value->data, (size_t)*n * sizeof(float));
    return c;
}

static int unchanged(const nt_model *m, const char *name, const float *before, int64_t n)
{
    int i = nt_model_find_param(m, name);
    if (i < 0 || !before) return 0;
    nt_param p;
    nt_model_param(m, i, &p);
    return memcmp(p.value->data, before, (size_t)n * sizeof(float)) == 0;
}

static void run(nt_impl impl, const char *tag, const double *tol_loss, double tol_final)
{
    char path[512], err[512];
    fx_file *f = NULL;
    fx_default_path("train10.bin", path, sizeof path);
    if (fx_open(path, &f, err, sizeof err) != 0) { // committed: missing is a failure
        CHECK_MSG(0, "%s", err);
        return;
    }
    const fx_tensor *cs   = fx_expect(f, "cfg/seed", 1, (int64_t[]){1});
    const fx_tensor *cg   = fx_expect(f, "cfg/sgd", 1, (int64_t[]){5});
    const fx_tensor *rx   = fx_expect(f, "x", 4, (int64_t[]){4, 64, 64, 3});
    const fx_tensor *rlab = fx_expect(f, "labels", 1, (int64_t[]){4});
    const fx_tensor *rw   = fx_expect(f, "weights", 1, (int64_t[]){4});
    const fx_tensor *rl   = fx_expect(f, "losses", 1, (int64_t[]){NSTEPS});
    const fx_tensor *rf   = fx_expect(f, "logits_final", 2, (int64_t[]){4, 1});
    if (!(cs && cg && rx && rlab && rw && rl && rf)) {
        CHECK_MSG(0, "train10.bin lacks tensors (see above)");
        fx_close(f);
        return;
    }
    // The run below hard-codes the reference's settings; a regenerated fixture must agree.
    CHECK(cs->data[0] == SEED);
    CHECK(cg->data[0] == 0.01f && cg->data[1] == 0.9f && cg->data[2] == NSTEPS &&
          cg->data[3] == 20 && cg->data[4] == RESIDUAL_GAMMA_SCALE);

    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.seed        = SEED; // keys dropout: the reference uses the init seed for it
    o.impl        = impl;
    nt_ctx *ctx   = NULL;
    nt_model *m   = NULL;
    nt_optim *opt = NULL;
    nt_tensor x = {0}, dl = {0};
    float *frozen_k = NULL, *frozen_mm = NULL, *train_mm = NULL;
    int64_t nk = 0, nfm = 0, ntm = 0;
    if (nt_ctx_new(&o, &ctx) != NT_OK) {
        CHECK_MSG(0, "ctx: %s", ctx ? nt_ctx_errmsg(ctx) : "no context");
        goto done;
    }
    printf("-- train10.bin, impl %s (%s)\n", tag, nt_ctx_impl_name(ctx));

    m = tu_fixture_resnet(ctx);
    if (!m) goto done;
    CHECK(nt_model_set_trainable_last(m, 20) == NT_OK);
    int64_t tr;
    nt_model_count_params(m, &tr);
    CHECK_MSG(tr == 8931328 + 557569, "trainable %lld, expected conv5_block2+3 and the head",
              (long long)tr);
    CHECK_MSG(nt_model_init(m, NT_INIT_TEST, SEED) == NT_OK, "init: %s", nt_ctx_errmsg(ctx));
    int nscaled = 0;
    for (int i = 0; i < nt_model_num_params(m); i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        if (!tu_ends_with(p.name, "_0_bn/gamma") && !tu_ends_with(p.name, "_3_bn/gamma")) continue;
        for (int64_t k = 0; k < nt_tensor_numel(p.value); k++)
            p.value->data[k] *= RESIDUAL_GAMMA_SCALE;
        nscaled++;
    }
    CHECK_MSG(nscaled == 20, "%d gammas scaled, expected 16 _3_bn + 4 _0_bn", nscaled);

    // Frozen parts must stay bit for bit; a trainable BN's moving statistics must move.
    frozen_k  = snapshot(m, "conv5_block1_3_conv/kernel", &nk);
    frozen_mm = snapshot(m, "conv5_block1_3_bn/moving_mean", &nfm);
    train_mm  = snapshot(m, "conv5_block3_3_bn/moving_mean", &ntm);
    {
        nt_param p;
        nt_model_param(m, nt_model_find_param(m, "conv1_conv/kernel"), &p);
        CHECK_MSG(!p.trainable && p.grad == NULL, "conv1_conv/kernel is trainable or has a grad");
    }

    nt_optim_cfg oc;
    nt_optim_cfg_default(&oc, NT_OPT_SGD);
    oc.lr           = 0.01f;
    oc.momentum     = 0.9f;
    oc.nesterov     = 0;
    oc.weight_decay = 0.0f;
    CHECK_MSG(nt_optim_new(ctx, &oc, m, &opt) == NT_OK, "optim: %s", nt_ctx_errmsg(ctx));
    if (!opt) goto done;

    CHECK(nt_tensor_new(ctx, 4, rx->shape, &x) == NT_OK);
    CHECK(nt_tensor_new(ctx, 2, (int64_t[]){4, 1}, &dl) == NT_OK);
    if (!x.data || !dl.data) goto done;
    memcpy(x.data, rx->data, (size_t)rx->numel * sizeof(float));

    for (int s = 0; s < NSTEPS; s++) {
        double loss = NAN;
        if (nt_model_forward(m, &x, 1, (uint64_t)s) != NT_OK ||
            nt_model_loss(m, rlab->data, rw->data, &loss, NULL, dl.data) != NT_OK ||
            nt_model_backward(m, &dl, NULL) != NT_OK || nt_optim_step(opt) != NT_OK) {
            CHECK_MSG(0, "step %d: %s", s, nt_ctx_errmsg(ctx));
            goto done;
        }
        double ref = rl->data[s], rel = fabs(loss - ref) / fabs(ref);
        int ok = rel <= tol_loss[s];
        printf("%s  step %d loss %.6f ref %.6f rel %.2g (tol %g)\n", ok ? "ok  " : "FAIL", s, loss,
               ref, rel, tol_loss[s]);
        CHECK_MSG(ok, "%s step %d: loss %.7f, reference %.7f (rel %.3g > %g)", tag, s, loss, ref,
                  rel, tol_loss[s]);
    }

    CHECK_MSG(nt_model_forward(m, &x, 0, 0) == NT_OK, "forward: %s", nt_ctx_errmsg(ctx));
    const nt_tensor *z = nt_model_output(m);
    CHECK(z && nt_tensor_numel(z) == 4);
    if (z && nt_tensor_numel(z) == 4) {
        double mx = 0;
        for (int i = 0; i < 4; i++)
            mx = fmax(mx, fabs(rf->data[i]));
        CHECK_CLOSE("final logits", z->data, rf->data, 4, tol_final * mx, 0.0);
    }
    CHECK_MSG(unchanged(m, "conv5_block1_3_conv/kernel", frozen_k, nk),
              "a frozen kernel (conv5_block1_3_conv) changed");
    CHECK_MSG(unchanged(m, "conv5_block1_3_bn/moving_mean", frozen_mm, nfm),
              "a frozen BN's moving mean (conv5_block1_3_bn) changed");
    CHECK_MSG(!unchanged(m, "conv5_block3_3_bn/moving_mean", train_mm, ntm),
              "a trainable BN's moving mean (conv5_block3_3_bn) did not change");

done:
    free(frozen_k);
    free(frozen_mm);
    free(train_mm);
    nt_tensor_free(&x);
    nt_tensor_free(&dl);
    nt_optim_free(opt);
    nt_model_free(m);
    nt_ctx_free(ctx);
    fx_close(f);
}

int main(void)
{
    run(NT_IMPL_REF, "REF", T10_REF_TOL_LOSS, T10_REF_TOL_FINAL);
    run(NT_IMPL_AUTO, "AUTO", T10_AUTO_TOL_LOSS, T10_AUTO_TOL_FINAL);
    return check_summary("test_train10");
}
