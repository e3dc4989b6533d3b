/*
 * test_model.c: the Keras ResNet50 v1 layer list (names, order, shapes, parameter counts),
 * Keras-style freezing, the memory plan (frozen outputs are not kept), an end-to-end
 * finite-difference check of a small network's gradients through the whole graph, Adam and
 * SGD updates by hand, and error messages for bad input. PyTorch parity is test_fixtures.c.
 */
#include "kernels/nk.h"
#include "libnet/nt.h"
#include "tests/check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

// Finite differences on a float forward: eps large enough to beat float round-off.
#define FD_EPS 1e-4 /* small: larger steps cross ReLU kinks (1e-3 gave 4% at one input) */
#define FD_RTOL                                                                                    \
    3e-2 /* float loss differences over 2e-4 carry ~0.5% noise; exact checks: test_grad */

static nt_ctx *new_ctx(nt_impl impl, uint64_t seed)
{
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.impl     = impl;
    o.seed     = seed;
    o.nthreads = 2;
    nt_ctx *ctx;
    if (nt_ctx_new(&o, &ctx) != NT_OK) {
        fprintf(stderr, "ctx: %s\n", nt_ctx_errmsg(ctx));
        exit(1);
    }
    return ctx;
}

static void test_layer_list(nt_ctx *ctx)
{
    nt_resnet_cfg cfg;
    nt_resnet_cfg_default(&cfg);
    cfg.with_head = 0;
    nt_model *m;
    CHECK(nt_resnet50_new(ctx, &cfg, &m) == NT_OK);
    CHECK(nt_model_num_layers(m) == 175);
    nt_layer_info li;
    static const char *first[] = {"input_1",    "conv1_pad", "conv1_conv", "conv1_bn",
                                  "conv1_relu", "pool1_pad", "pool1_pool", "conv2_block1_1_conv"};
    for (int i = 0; i < 8; i++) {
        nt_model_layer(m, i, &li);
        CHECK_MSG(strcmp(li.name, first[i]) == 0, "layer %d is %s, expected %s", i, li.name,
                  first[i]);
    }
    // Keras's order inside a projection block.
    static const char *blk[] = {"conv2_block1_1_conv", "conv2_block1_1_bn",   "conv2_block1_1_relu",
                                "conv2_block1_2_conv", "conv2_block1_2_bn",   "conv2_block1_2_relu",
                                "conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block1_0_bn",
                                "conv2_block1_3_bn",   "conv2_block1_add",    "conv2_block1_out"};
    for (int i = 0; i < 12; i++) {
        nt_model_layer(m, 7 + i, &li);
        CHECK_MSG(strcmp(li.name, blk[i]) == 0, "layer %d is %s, expected %s", 7 + i, li.name,
                  blk[i]);
    }
    nt_model_layer(m, 174, &li);
    CHECK(strcmp(li.name, "conv5_block3_out") == 0);
    CHECK(li.out_shape[1] == 7 && li.out_shape[2] == 7 && li.out_shape[3] == 2048);
    nt_model_layer(m, nt_model_find_layer(m, "pool1_pool"), &li);
    CHECK(li.out_shape[1] == 56 && li.out_shape[3] == 64);
    nt_model_layer(m, nt_model_find_layer(m, "conv3_block1_1_conv"), &li);
    CHECK_MSG(li.out_shape[1] == 28 && li.out_shape[3] == 128, "conv3_block1_1_conv is %lldx%lld",
              (long long)li.out_shape[1], (long long)li.out_shape[3]);
    CHECK(strcmp(li.type_name, "Conv2D") == 0);
    nt_model_layer(m, nt_model_find_layer(m, "conv4_block6_out"), &li);
    CHECK(li.out_shape[1] == 14 && li.out_shape[3] == 1024);

    int64_t tr, total = nt_model_count_params(m, &tr);
    CHECK_MSG(total == 23587712, "total params %lld", (long long)total);
    CHECK_MSG(tr == 23534592, "trainable (all) %lld", (long long)tr);
    CHECK(nt_model_set_trainable_last(m, 20) == NT_OK);
    nt_model_count_params(m, &tr);
    CHECK_MSG(tr == 8931328, "trainable (last 20) %lld", (long long)tr);
    nt_model_layer(m, nt_model_find_layer(m, "conv5_block2_1_conv"), &li);
    CHECK(li.trainable);
    nt_model_layer(m, nt_model_find_layer(m, "conv5_block1_out"), &li);
    CHECK(!li.trainable);
    CHECK(nt_model_set_trainable_last(m, 0) == NT_OK);
    nt_model_count_params(m, &tr);
    CHECK(tr == 0);
    CHECK(nt_model_set_trainable_last(m, 176) == NT_EINVAL);
    CHECK(strstr(nt_ctx_errmsg(ctx), "175") != NULL);
    nt_param p;
    int pi = nt_model_find_param(m, "conv1_conv/kernel");
    CHECK(pi == 0);
    nt_model_param(m, pi, &p);
    CHECK(p.value->ndim == 4 && p.value->shape[0] == 7 && p.value->shape[2] == 3 &&
          p.value->shape[3] == 64);
    CHECK(nt_model_find_param(m, "conv5_block3_3_bn/moving_variance") ==
          nt_model_num_params(m) - 1);
    nt_model_free(m);

    // With the head: 5 more layers, 2048*256+256 + 256*128+128 + 128+1 parameters.
    cfg.with_head = 1;
    CHECK(nt_resnet50_new(ctx, &cfg, &m) == NT_OK);
    CHECK(nt_model_num_layers(m) == 180);
    CHECK(nt_model_head_start(m) == 175);
    total = nt_model_count_params(m, &tr);
    CHECK(total == 23587712 + 557569);
    CHECK(nt_model_set_trainable_last(m, 20) == NT_OK);
    nt_model_count_params(m, &tr);
    CHECK_MSG(tr == 8931328 + 557569, "trainable with head %lld", (long long)tr);
    nt_model_layer(m, 179, &li);
    CHECK(strcmp(li.name, "dense_2") == 0 && li.out_ndim == 2 && li.out_shape[1] == 1);
    nt_model_free(m);

    // Bad configurations are refused with a message.
    cfg.img_size = 16;
    CHECK(nt_resnet50_new(ctx, &cfg, &m) == NT_EINVAL);
    CHECK(strstr(nt_ctx_errmsg(ctx), "16") != NULL);
    cfg.img_size = 224;
    cfg.dropout  = 1.5f;
    CHECK(nt_resnet50_new(ctx, &cfg, &m) == NT_EINVAL);
}

static nt_model *small_model(nt_ctx *ctx, int img, int unfreeze)
{
    nt_resnet_cfg cfg;
    nt_resnet_cfg_default(&cfg);
    cfg.img_size  = img;
    cfg.width_div = 16;
    cfg.head1     = 16;
    cfg.head2     = 8;
    cfg.dropout   = 0.25f;
    nt_model *m;
    if (nt_resnet50_new(ctx, &cfg, &m) != NT_OK) {
        fprintf(stderr, "resnet: %s\n", nt_ctx_errmsg(ctx));
        exit(1);
    }
    nt_model_init(m, NT_INIT_TEST, 99);
    nt_model_set_trainable_last(m, unfreeze);
    return m;
}

static void fill_input(nt_tensor *x, uint64_t key)
{
    int64_t n = nt_tensor_numel(x);
    for (int64_t i = 0; i < n; i++)
        x->data[i] = 2.0f * (float)((i * 7919 + key) % 1000) / 1000.f - 1.0f;
}

static void test_plan_and_modes(nt_ctx *ctx)
{
    nt_model *m = small_model(ctx, 64, 20);
    nt_tensor x;
    int64_t shp[4] = {3, 64, 64, 3};
    nt_tensor_new(ctx, 4, shp, &x);
    fill_input(&x, 1);
    int conv1 = nt_model_find_layer(m, "conv1_conv");
    int c53   = nt_model_find_layer(m, "conv5_block3_1_conv");
    int gap   = nt_model_find_layer(m, "global_average_pooling2d");

    CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
    const nt_tensor *y = nt_model_output(m);
    CHECK(y && y->ndim == 2 && y->shape[0] == 3 && y->shape[1] == 1);
    float infer0[3];
    memcpy(infer0, y->data, sizeof(infer0));
    CHECK(nt_model_layer_output(m, conv1) == NULL); // frozen buffers are reused
    // Inference is deterministic and the same when run again.
    CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
    CHECK(memcmp(nt_model_output(m)->data, infer0, sizeof(infer0)) == 0);
    // A kept layer survives.
    nt_model_keep_output(m, conv1, 1);
    CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
    const nt_tensor *k = nt_model_layer_output(m, conv1);
    CHECK(k && k->shape[1] == 32 && k->shape[3] == 4);
    nt_model_keep_output(m, conv1, 0);
    // Fused inference (conv+BN+ReLU epilogues, add+ReLU) against the unfused graph: keeping
    // every output disables fusion.
    {
        nt_model *u = small_model(ctx, 64, 20);
        for (int i = 0; i < nt_model_num_layers(u); i++)
            nt_model_keep_output(u, i, 1);
        CHECK(nt_model_forward(u, &x, 0, 0) == NT_OK);
        CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
        CHECK(nt_model_layer_output(m, conv1) == NULL); // fused: never materialised
        CHECK(nt_model_layer_output(u, conv1) != NULL);
        CHECK_CLOSE("fused vs unfused inference logits", nt_model_output(u)->data, infer0, 3, 1e-3,
                    1e-5); // logits are ~1e3 here; rounding of the folded BN only
        nt_model_free(u);
    }

    // Preparing ahead (plan, packed weights) changes nothing of the first forward's result.
    {
        nt_model *p = small_model(ctx, 64, 20);
        CHECK(nt_model_prepare(p, 0, 0) == NT_EINVAL);
        CHECK(strstr(nt_ctx_errmsg(ctx), "got 0") != NULL);
        CHECK(nt_model_activation_bytes(p) == 0);
        CHECK(nt_model_prepare(p, 3, 0) == NT_OK);
        CHECK(nt_model_activation_bytes(p) > 0);
        CHECK(nt_model_forward(p, &x, 0, 0) == NT_OK);
        CHECK(memcmp(nt_model_output(p)->data, infer0, sizeof(infer0)) == 0);
        nt_model_free(p);
    }

    // Training keeps what the trainable suffix needs, and nothing of the frozen prefix.
    CHECK(nt_model_forward(m, &x, 1, 0) == NT_OK);
    CHECK(nt_model_layer_output(m, conv1) == NULL);
    CHECK(nt_model_layer_output(m, c53) != NULL);
    CHECK(nt_model_layer_output(m, gap) != NULL);
    // Frozen BN runs in inference mode: the backbone output before conv5_block2 matches
    // inference, so only dropout and the trainable BNs differ; with batch stats it must differ.
    float labels[3] = {0, 1, 1}, dl[3];
    double loss     = 0;
    CHECK(nt_model_loss(m, labels, NULL, &loss, NULL, dl) == NT_OK);
    CHECK(isfinite(loss) && loss > 0);
    // The frozen random backbone (inference BN) saturates the logits, where the clipped loss has
    // no gradient: push ones back instead, which reaches every trainable parameter.
    float ones[3] = {1, 1, 1};
    nt_tensor dy  = {.ndim = 2, .shape = {3, 1}, .data = ones};
    CHECK(nt_model_backward(m, &dy, NULL) == NT_OK);
    // Frozen parameters have no gradient; trainable ones got one.
    nt_param p;
    nt_model_param(m, nt_model_find_param(m, "conv1_conv/kernel"), &p);
    CHECK(p.grad == NULL && !p.trainable);
    nt_model_param(m, nt_model_find_param(m, "conv5_block3_3_conv/kernel"), &p);
    CHECK(p.grad != NULL && p.trainable);
    double gn = 0;
    for (int64_t i = 0; i < nt_tensor_numel(p.grad); i++)
        gn += fabs(p.grad->data[i]);
    CHECK(gn > 0);
    // dx without asking first is an error with a message.
    nt_tensor dx;
    nt_tensor_new(ctx, 4, shp, &dx);
    CHECK(nt_model_backward(m, &dy, &dx) == NT_EINVAL);
    // Wrong input shape.
    int64_t bad[4] = {3, 32, 64, 3};
    nt_tensor xb;
    nt_tensor_new(ctx, 4, bad, &xb);
    CHECK(nt_model_forward(m, &xb, 0, 0) == NT_ESHAPE);
    CHECK_MSG(strstr(nt_ctx_errmsg(ctx), "input_1") && strstr(nt_ctx_errmsg(ctx), "[3,32,64,3]"),
              "message: %s", nt_ctx_errmsg(ctx));
    nt_tensor_free(&xb);
    nt_tensor_free(&dx);
    nt_tensor_free(&x);
    nt_model_free(m);
}

// Loss of a training forward (fixed dropout step) as a function of the parameters.
static double loss_at(nt_model *m, const nt_tensor *x, const float *labels, const float *w)
{
    double loss = 0;
    nt_model_forward(m, x, 1, 5);
    nt_model_loss(m, labels, w, &loss, NULL, NULL);
    return loss;
}

// A shallow network with every layer type and both residual forms (projection and identity),
// well conditioned enough for finite differences in float.
static nt_model *mini_resnet(nt_ctx *ctx)
{
    nt_model *m;
    int x = 0;
    if (nt_model_new(ctx, "input_1", 20, 20, 3, &m) != NT_OK) exit(1);
    x = nt_layer_zeropad(m, "conv1_pad", x, 3, 3, 3, 3);
    x = nt_layer_conv(m, "conv1_conv", x, 8, 7, 7, 2, 0, 0);
    x = nt_layer_bn(m, "conv1_bn", x);
    x = nt_layer_relu(m, "conv1_relu", x);
    x = nt_layer_zeropad(m, "pool1_pad", x, 1, 1, 1, 1);
    x = nt_layer_maxpool(m, "pool1_pool", x, 3, 2);
    x = nt_resnet_block(m, "conv2_block1", x, 4, 4, 16, 1, 1);
    x = nt_resnet_block(m, "conv2_block2", x, 4, 4, 16, 1, 0);
    x = nt_resnet_block(m, "conv3_block1", x, 8, 8, 32, 2, 1);
    x = nt_layer_gap(m, "global_average_pooling2d", x);
    x = nt_layer_dense(m, "dense", x, 16, NT_ACT_RELU);
    x = nt_layer_dropout(m, "dropout", x, 0.25f);
    x = nt_layer_dense(m, "dense_1", x, 8, NT_ACT_RELU);
    x = nt_layer_dense(m, "dense_2", x, 1, NT_ACT_SIGMOID);
    if (x < 0) {
        fprintf(stderr, "mini: %s\n", nt_ctx_errmsg(ctx));
        exit(1);
    }
    nt_model_init(m, NT_INIT_TEST, 99);
    return m;
}

// The training fusions (BN + ReLU, BN + residual add + ReLU, add + ReLU) against the unfused
// graph: keeping every output turns them off. The loss, the input gradient and every parameter
// gradient agree, and the fused model never materialises a block's last BN or its add.
static void test_train_fused(nt_ctx *ctx)
{
    nt_model *f = mini_resnet(ctx), *u = mini_resnet(ctx);
    for (int i = 0; i < nt_model_num_layers(u); i++)
        nt_model_keep_output(u, i, 1);
    int64_t shp[4] = {4, 20, 20, 3};
    nt_tensor x;
    nt_tensor_new(ctx, 4, shp, &x);
    fill_input(&x, 7);
    float labels[4] = {1, 0, 0, 1}, dl[2][4];
    double loss[2];
    nt_model *ms[2] = {f, u};
    for (int k = 0; k < 2; k++) {
        nt_model_set_profile(ms[k], 1);
        CHECK(nt_model_forward(ms[k], &x, 1, 5) == NT_OK);
        CHECK(nt_model_loss(ms[k], labels, NULL, &loss[k], NULL, dl[k]) == NT_OK);
        nt_tensor dy = {.ndim = 2, .shape = {4, 1}, .data = dl[k]};
        CHECK(nt_model_backward(ms[k], &dy, NULL) == NT_OK);
    }
    CHECK_CLOSE("fused vs unfused training loss", &(float){(float)loss[0]},
                &(float){(float)loss[1]}, 1, 1e-6, 1e-5);
    // Each block's add runs inside its last BN in the fused model (no forward time of its own)
    // and still runs its backward; unfused, it runs both.
    const char *adds[] = {"conv2_block1_add", "conv2_block2_add", "conv3_block1_add"};
    for (int t = 0; t < 3; t++) {
        const int li = nt_model_find_layer(f, adds[t]);
        double ff, fb, uf, ub;
        CHECK(li >= 0);
        nt_model_layer_time(f, li, &ff, &fb);
        nt_model_layer_time(u, li, &uf, &ub);
        CHECK_MSG(ff == 0 && fb > 0, "%s fused into its BN: forward %g s, backward %g s", adds[t],
                  ff, fb);
        CHECK_MSG(uf > 0 && ub > 0 && nt_model_layer_output(u, li) != NULL,
                  "%s unfused: forward %g s, backward %g s", adds[t], uf, ub);
    }
    CHECK(nt_model_activation_bytes(f) < nt_model_activation_bytes(u));
    for (int i = 0; i < nt_model_num_params(f); i++) {
        nt_param pf, pu;
        nt_model_param(f, i, &pf);
        nt_model_param(u, i, &pu);
        if (!pf.grad) continue;
        char what[120];
        snprintf(what, sizeof what, "fused vs unfused gradient %s", pf.name);
        CHECK_CLOSE(what, pf.grad->data, pu.grad->data, nt_tensor_numel(pf.grad), 1e-6, 1e-4);
    }
    nt_tensor_free(&x);
    nt_model_free(f);
    nt_model_free(u);
}

static void test_fd_gradients(nt_ctx *ctx)
{
    nt_model *m = mini_resnet(ctx);
    nt_model_set_want_input_grad(m, 1);
    int64_t shp[4] = {4, 20, 20, 3};
    nt_tensor x, dx;
    nt_tensor_new(ctx, 4, shp, &x);
    nt_tensor_new(ctx, 4, shp, &dx);
    fill_input(&x, 3);
    float labels[4] = {1, 0, 0, 1}, w[4] = {0.7f, 1.9f, 1.9f, 0.7f}, dl[4];
    double loss;
    CHECK(nt_model_forward(m, &x, 1, 5) == NT_OK);
    CHECK(nt_model_loss(m, labels, w, &loss, NULL, dl) == NT_OK);
    nt_tensor dy = {.ndim = 2, .shape = {4, 1}, .data = dl};
    CHECK(nt_model_backward(m, &dy, &dx) == NT_OK);

    static const char *names[] = {"conv1_conv/kernel",
                                  "conv1_bn/gamma",
                                  "conv2_block1_0_conv/kernel",
                                  "conv2_block2_2_conv/kernel",
                                  "conv3_block1_3_bn/beta",
                                  "dense/kernel",
                                  "dense_2/bias",
                                  "dense_1/kernel"};
    double worst               = 0;
    for (int t = 0; t < 8; t++) {
        nt_param p;
        int pi = nt_model_find_param(m, names[t]);
        CHECK(pi >= 0);
        if (pi < 0) continue;
        nt_model_param(m, pi, &p);
        int64_t n = nt_tensor_numel(p.value);
        // The largest-gradient entry of the tensor: a clear signal over float noise.
        int64_t best = 0;
        for (int64_t i = 1; i < n; i++)
            if (fabsf(p.grad->data[i]) > fabsf(p.grad->data[best])) best = i;
        float save          = p.value->data[best];
        double a            = p.grad->data[best];
        p.value->data[best] = save + (float)FD_EPS;
        double lp           = loss_at(m, &x, labels, w);
        p.value->data[best] = save - (float)FD_EPS;
        double lm           = loss_at(m, &x, labels, w);
        p.value->data[best] = save;
        double num          = (lp - lm) / (2 * FD_EPS);
        double rel          = fabs(a - num) / fmax(fmax(fabs(a), fabs(num)), 1e-8);
        if (rel > worst) worst = rel;
        CHECK_MSG(rel < FD_RTOL, "%s[%lld]: analytic %.6g numeric %.6g (rel %.3g)", names[t],
                  (long long)best, a, num, rel);
    }
    // The input gradient at its largest entry.
    int64_t n = nt_tensor_numel(&x), best = 0;
    for (int64_t i = 1; i < n; i++)
        if (fabsf(dx.data[i]) > fabsf(dx.data[best])) best = i;
    float save   = x.data[best];
    x.data[best] = save + (float)FD_EPS;
    double lp    = loss_at(m, &x, labels, w);
    x.data[best] = save - (float)FD_EPS;
    double lm    = loss_at(m, &x, labels, w);
    x.data[best] = save;
    double num = (lp - lm) / (2 * FD_EPS), a = dx.data[best];
    double rel = fabs(a - num) / fmax(fmax(fabs(a), fabs(num)), 1e-8);
    CHECK_MSG(rel < FD_RTOL, "dx[%lld]: analytic %.6g numeric %.6g", (long long)best, a, num);
    if (rel > worst) worst = rel;
    printf("finite differences through the whole graph: max rel error %.3g\n", worst);
    nt_tensor_free(&x);
    nt_tensor_free(&dx);
    nt_model_free(m);
}

static void test_optimizers(nt_ctx *ctx)
{
    // A one-layer model: input 1x1x2 -> GAP -> Dense(1).
    nt_model *m;
    CHECK(nt_model_new(ctx, "in", 1, 1, 2, &m) == NT_OK);
    int g = nt_layer_gap(m, "gap", 0);
    CHECK(nt_layer_dense(m, "d", g, 1, NT_ACT_SIGMOID) == 2);
    nt_param kp, bp;
    nt_model_param(m, 0, &kp);
    nt_model_param(m, 1, &bp);
    kp.value->data[0] = 0.5f, kp.value->data[1] = -0.25f, bp.value->data[0] = 0.1f;
    nt_optim_cfg oc;
    nt_optim_cfg_default(&oc, NT_OPT_ADAM);
    oc.lr = 0.01f;
    nt_optim *o;
    CHECK(nt_optim_new(ctx, &oc, m, &o) == NT_OK);
    nt_model_param(m, 0, &kp);
    CHECK(kp.grad != NULL);
    kp.grad->data[0] = 0.3f, kp.grad->data[1] = -2.0f;
    nt_model_param(m, 1, &bp);
    bp.grad->data[0] = 0.0f;
    for (int t = 1; t <= 2; t++)
        CHECK(nt_optim_step(o) == NT_OK);
    // By hand, Keras's Adam with a constant gradient g over two steps.
    double w0 = 0.5, g0 = 0.3, m1 = 0, v1 = 0;
    for (int t = 1; t <= 2; t++) {
        m1          = 0.9 * m1 + 0.1 * g0;
        v1          = 0.999 * v1 + 0.001 * g0 * g0;
        double lr_t = 0.01 * sqrt(1 - pow(0.999, t)) / (1 - pow(0.9, t));
        w0 -= lr_t * m1 / (sqrt(v1) + 1e-7);
    }
    CHECK_MSG(fabs(kp.value->data[0] - w0) < 1e-6, "adam w %.8f expected %.8f", kp.value->data[0],
              w0);
    // State round trip: a second optimizer given the first one's state and step count takes
    // exactly the same next step.
    {
        CHECK(nt_optim_num_state(o) == 4 && nt_optim_iterations(o) == 2);
        nt_optim *o2;
        CHECK(nt_optim_new(ctx, &oc, m, &o2) == NT_OK);
        for (int i = 0; i < nt_optim_num_state(o); i++) {
            char n1[128], n2[128];
            nt_tensor a, b;
            nt_optim_state_at(o, i, n1, sizeof(n1), &a);
            nt_optim_state_at(o2, i, n2, sizeof(n2), &b);
            CHECK(strcmp(n1, n2) == 0);
            memcpy(b.data, a.data, (size_t)nt_tensor_numel(&a) * sizeof(float));
        }
        char n0[128];
        nt_tensor t0;
        nt_optim_state_at(o, 0, n0, sizeof(n0), &t0);
        CHECK_MSG(strcmp(n0, "optimizer/d/kernel/m") == 0, "%s", n0);
        nt_optim_set_iterations(o2, nt_optim_iterations(o));
        float w_before = kp.value->data[0];
        CHECK(nt_optim_step(o) == NT_OK);
        float w1          = kp.value->data[0];
        kp.value->data[0] = w_before;
        CHECK(nt_optim_step(o2) == NT_OK);
        CHECK_MSG(kp.value->data[0] == w1, "resumed step %.9g vs %.9g", kp.value->data[0], w1);
        nt_optim_free(o2);
    }
    CHECK(bp.value->data[0] == 0.1f);
    nt_optim_free(o);

    nt_optim_cfg_default(&oc, NT_OPT_SGD);
    oc.lr       = 0.1f;
    oc.momentum = 0.9f;
    oc.nesterov = 1;
    CHECK(nt_optim_new(ctx, &oc, m, &o) == NT_OK);
    float w  = kp.value->data[1];
    double v = 0, wn = w, gg = -2.0;
    for (int t = 0; t < 3; t++) {
        CHECK(nt_optim_step(o) == NT_OK);
        v  = 0.9 * v - 0.1 * gg;
        wn = wn + 0.9 * v - 0.1 * gg;
    }
    CHECK_MSG(fabs(kp.value->data[1] - wn) < 1e-5, "sgd nesterov w %.7f expected %.7f",
              kp.value->data[1], wn);
    nt_optim_free(o);
    oc.lr = -1;
    CHECK(nt_optim_new(ctx, &oc, m, &o) == NT_EINVAL);
    nt_model_free(m);
}

// The update is split over the threads (slots of 32768 floats and more) and small slots go whole
// to one thread each: the weights after a few steps are the same bits for 1 and 3 threads, and
// match the formula, for SGD (plain, momentum with Nesterov and weight decay) and Adam.
static void test_optimizer_threads(void)
{
    enum { IN = 300, OUT = 200 }; // a 60000-float kernel (split) and a 200-float bias (whole)
    const nt_opt_kind kinds[3] = {NT_OPT_SGD, NT_OPT_SGD, NT_OPT_ADAM};
    for (int k = 0; k < 3; k++) {
        float *w[2] = {NULL, NULL};
        for (int t = 0; t < 2; t++) {
            nt_ctx_opts co;
            nt_ctx_opts_default(&co);
            co.nthreads = t ? 3 : 1;
            nt_ctx *ctx;
            nt_model *m;
            CHECK(nt_ctx_new(&co, &ctx) == NT_OK);
            CHECK(nt_model_new(ctx, "in", 1, 1, IN, &m) == NT_OK);
            CHECK(nt_layer_dense(m, "d", nt_layer_gap(m, "gap", 0), OUT, NT_ACT_NONE) == 2);
            nt_optim_cfg oc;
            nt_optim_cfg_default(&oc, kinds[k]);
            oc.momentum     = k == 1 ? 0.9f : 0.0f;
            oc.nesterov     = k == 1;
            oc.weight_decay = k ? 1e-2f : 0.0f;
            nt_optim *o;
            CHECK(nt_optim_new(ctx, &oc, m, &o) == NT_OK);
            nt_param kp, bp;
            nt_model_param(m, 0, &kp);
            nt_model_param(m, 1, &bp);
            for (int64_t i = 0; i < IN * OUT; i++)
                kp.value->data[i] = nk_u01(71, (uint64_t)i) - 0.5f;
            for (int i = 0; i < OUT; i++)
                bp.value->data[i] = nk_u01(72, (uint64_t)i) - 0.5f;
            const float w0 = kp.value->data[12345];
            for (int step = 0; step < 3; step++) {
                for (int64_t i = 0; i < IN * OUT; i++)
                    kp.grad->data[i] = nk_u01(73 + step, (uint64_t)i) - 0.5f;
                for (int i = 0; i < OUT; i++)
                    bp.grad->data[i] = nk_u01(76 + step, (uint64_t)i) - 0.5f;
                CHECK(nt_optim_step(o) == NT_OK);
            }
            // The formula in double for one element of the split kernel.
            double wd = w0, m1 = 0, v1 = 0, vm = 0;
            for (int step = 0; step < 3; step++) {
                const double g = nk_u01(73 + step, 12345) - 0.5, lr = oc.lr, w_in = wd;
                if (k == 2) {
                    m1 = 0.9 * m1 + 0.1 * g, v1 = 0.999 * v1 + 0.001 * g * g;
                    const double lr_t =
                        lr * sqrt(1 - pow(0.999, step + 1)) / (1 - pow(0.9, step + 1));
                    wd = w_in - lr_t * m1 / (sqrt(v1) + 1e-7);
                } else if (k == 1) {
                    vm = 0.9 * vm - lr * g;
                    wd = w_in + 0.9 * vm - lr * g;
                } else {
                    wd = w_in - lr * g;
                }
                wd -= lr * oc.weight_decay * w_in;
            }
            CHECK_MSG(fabs(kp.value->data[12345] - wd) < 1e-5, "optimizer %d: w %.7f, formula %.7f",
                      k, kp.value->data[12345], wd);
            w[t] = malloc((IN * OUT + OUT) * sizeof(float));
            memcpy(w[t], kp.value->data, IN * OUT * sizeof(float));
            memcpy(w[t] + IN * OUT, bp.value->data, OUT * sizeof(float));
            nt_optim_free(o);
            nt_model_free(m);
            nt_ctx_free(ctx);
        }
        CHECK_MSG(memcmp(w[0], w[1], (IN * OUT + OUT) * sizeof(float)) == 0,
                  "optimizer %d: 1 and 3 threads give different weights", k);
        free(w[0]), free(w[1]);
    }
    printf("ok   optimizers: the same bits for 1 and 3 threads\n");
}

static void test_bad_graphs(nt_ctx *ctx)
{
    nt_model *m;
    CHECK(nt_model_new(ctx, "in", 8, 8, 3, &m) == NT_OK);
    CHECK(nt_layer_conv(m, "c", 0, 4, 9, 9, 1, 0, 0) == -1);
    CHECK(strstr(nt_ctx_errmsg(ctx), "\"c\"") != NULL);
    int a = nt_layer_conv(m, "a", 0, 4, 3, 3, 1, 1, 1);
    int b = nt_layer_conv(m, "b", 0, 5, 3, 3, 1, 1, 1);
    CHECK(a > 0 && b > 0);
    CHECK(nt_layer_add(m, "sum", a, b) == -1);
    CHECK_MSG(strstr(nt_ctx_errmsg(ctx), "differ") != NULL, "%s", nt_ctx_errmsg(ctx));
    CHECK(nt_layer_conv(m, "a", 0, 4, 3, 3, 1, 1, 1) == -1); // duplicate name
    CHECK(nt_layer_dense(m, "d", a, 4, NT_ACT_RELU) == -1);  // not flat
    CHECK(nt_layer_dropout(m, "dr", a, 1.0f) == -1);
    CHECK(nt_layer_relu(m, "r", 42) == -1);
    nt_model_free(m);
    CHECK(nt_model_new(ctx, "in", 0, 8, 3, &m) == NT_EINVAL);
}

// ---- bf16 inference (NT_DTYPE_BF16) ----

// The fast bf16 model against the reference bf16 model: both round every conv input to bf16, but
// float32 vs double sums can flip single roundings that then propagate through 50 layers.
#define TOL_BF16_VS_REF_RTOL 1e-2
// bf16 against float32: inputs carry 2^-9 relative error; on this random small net the logits
// moved by < 1% (measured); 5% fails only for a broken path.
#define TOL_BF16_VS_F32_RTOL 5e-2

static nt_ctx *new_ctx_dtype(nt_impl impl, int dtype, nt_status *st)
{
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.impl     = impl;
    o.seed     = 11;
    o.nthreads = 2;
    o.dtype    = dtype;
    nt_ctx *ctx;
    *st = nt_ctx_new(&o, &ctx);
    if (*st != NT_OK) {
        nt_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

static double max_rel(const float *a, const float *b, int n)
{
    double mx = 0, e = 0;
    for (int i = 0; i < n; i++)
        mx = fmax(mx, fabs((double)b[i]));
    for (int i = 0; i < n; i++)
        e = fmax(e, fabs((double)a[i] - b[i]));
    return e / (mx > 0 ? mx : 1);
}

// A half-width ResNet50 on 32x32 inputs with a 16-8 head: the channel counts are multiples of
// 32, so the implicit-GEMM packing runs.
static nt_resnet_cfg half_resnet_cfg(void)
{
    nt_resnet_cfg cfg;
    nt_resnet_cfg_default(&cfg);
    cfg.img_size  = 32;
    cfg.width_div = 2;
    cfg.head1     = 16;
    cfg.head2     = 8;
    return cfg;
}

static void test_bf16(void)
{
    nt_status st;
    nt_ctx *cb = new_ctx_dtype(NT_IMPL_AUTO, NT_DTYPE_BF16, &st);
    if (!cb) {
        CHECK(st == NT_EDEVICE);
        printf("SKIP bf16 model tests: this CPU has no AVX512_BF16\n");
        return;
    }
    nt_ctx *cf = new_ctx_dtype(NT_IMPL_AUTO, NT_DTYPE_F32, &st);
    nt_ctx *cr = new_ctx_dtype(NT_IMPL_REF, NT_DTYPE_BF16, &st);
    CHECK(cf && cr);
    if (!cf || !cr) return;
    nt_ctx *bad = new_ctx_dtype(NT_IMPL_AUTO, 7, &st);
    CHECK(!bad && st == NT_EINVAL);
    nt_dtype t;
    CHECK(nt_dtype_parse("bf16", &t) == NT_OK && t == NT_DTYPE_BF16);
    CHECK(nt_dtype_parse("f16", &t) == NT_EINVAL);
    printf("kernels: %s\n", nt_ctx_impl_name(cb));
    nt_resnet_cfg cfg = half_resnet_cfg();
    nt_model *mb, *mf, *mr;
    CHECK(nt_resnet50_new(cb, &cfg, &mb) == NT_OK);
    CHECK(nt_resnet50_new(cf, &cfg, &mf) == NT_OK);
    CHECK(nt_resnet50_new(cr, &cfg, &mr) == NT_OK);
    nt_model *ms[3] = {mb, mf, mr};
    float out[3][3];
    nt_tensor x;
    CHECK(nt_tensor_new(cb, 4, (int64_t[]){3, 32, 32, 3}, &x) == NT_OK);
    fill_input(&x, 5);
    for (int k = 0; k < 3; k++) {
        nt_model_init(ms[k], NT_INIT_TEST, 99);
        CHECK(nt_model_forward(ms[k], &x, 0, 0) == NT_OK);
        memcpy(out[k], nt_model_output(ms[k])->data, sizeof(out[k]));
    }
    double e_ref = max_rel(out[0], out[2], 3), e_f32 = max_rel(out[0], out[1], 3);
    printf("%s bf16 model vs bf16 reference: rel %.3g (tol %g); vs f32: rel %.3g (tol %g)\n",
           e_ref <= TOL_BF16_VS_REF_RTOL && e_f32 <= TOL_BF16_VS_F32_RTOL ? "ok  " : "FAIL", e_ref,
           TOL_BF16_VS_REF_RTOL, e_f32, TOL_BF16_VS_F32_RTOL);
    CHECK(e_ref <= TOL_BF16_VS_REF_RTOL);
    CHECK(e_f32 <= TOL_BF16_VS_F32_RTOL);
    CHECK(memcmp(out[0], out[1], sizeof(out[0])) != 0); // bf16 really ran
    // bf16 activations: the outputs that only convs read are stored in bf16 (every block's but
    // the last, and the convs' inside the blocks), the reference plans the same way, float32 has
    // none, and a kept output stays float32.
    {
        int nb[3] = {0, 0, 0}, same = 1;
        for (int i = 0; i < nt_model_num_layers(mb); i++) {
            nt_layer_info li[3];
            for (int k = 0; k < 3; k++) {
                nt_model_layer(ms[k], i, &li[k]);
                nb[k] += li[k].out_bf16;
            }
            if (li[0].out_bf16 != li[2].out_bf16) same = 0;
            if (strcmp(li[0].name, "conv4_block2_out") == 0 ||
                strcmp(li[0].name, "conv2_block1_2_relu") == 0)
                CHECK_MSG(li[0].out_bf16, "%s stored in bf16", li[0].name);
            if (strcmp(li[0].name, "conv5_block3_out") == 0 ||
                strcmp(li[0].name, "pool1_pool") == 0)
                CHECK_MSG(!li[0].out_bf16, "%s stays float32 (not only convs read it)", li[0].name);
        }
        CHECK_MSG(nb[0] >= 40 && nb[1] == 0 && same, "bf16 outputs: %d fast, %d f32, %d ref", nb[0],
                  nb[1], nb[2]);
        CHECK(nt_model_activation_bytes(mb) > 0 &&
              nt_model_activation_bytes(mb) <= nt_model_activation_bytes(mf));
    }
    {
        const int k = nt_model_find_layer(mb, "conv4_block2_out");
        CHECK(k > 0);
        nt_model_keep_output(mb, k, 1);
        nt_model_keep_output(mf, k, 1);
        CHECK(nt_model_forward(mb, &x, 0, 0) == NT_OK && nt_model_forward(mf, &x, 0, 0) == NT_OK);
        nt_layer_info kl;
        nt_model_layer(mb, k, &kl);
        CHECK_MSG(!kl.out_bf16, "a kept output is float32");
        const nt_tensor *kb = nt_model_layer_output(mb, k), *kf = nt_model_layer_output(mf, k);
        CHECK(kb && kf && nt_tensor_numel(kb) == nt_tensor_numel(kf));
        if (kb && kf) {
            double num = 0, den = 0;
            for (int64_t i = 0; i < nt_tensor_numel(kf); i++) {
                num += fabs((double)kb->data[i] - kf->data[i]);
                den += fabs((double)kf->data[i]);
            }
            CHECK_MSG(den > 0 && num / den<0.05, "kept bf16 output vs f32: mean rel %.3g", den> 0
                          ? num / den
                          : -1.0);
        }
        nt_model_keep_output(mb, k, 0);
        nt_model_keep_output(mf, k, 0);
    }

    // Weights written through nt_model_param drop the cached packing; the output follows.
    nt_param p;
    nt_model_param(mb, nt_model_find_param(mb, "conv1_conv/kernel"), &p);
    for (int64_t i = 0; i < nt_tensor_numel(p.value); i++)
        p.value->data[i] *= 0.5f;
    nt_model_param(mf, nt_model_find_param(mf, "conv1_conv/kernel"), &p);
    for (int64_t i = 0; i < nt_tensor_numel(p.value); i++)
        p.value->data[i] *= 0.5f;
    float again[2][3];
    for (int k = 0; k < 2; k++) {
        CHECK(nt_model_forward(ms[k], &x, 0, 0) == NT_OK);
        memcpy(again[k], nt_model_output(ms[k])->data, sizeof(again[k]));
    }
    CHECK(memcmp(again[0], out[0], sizeof(out[0])) != 0);
    CHECK(memcmp(again[1], out[1], sizeof(out[1])) != 0); // the f32 packed cache as well
    CHECK(max_rel(again[0], again[1], 3) <= TOL_BF16_VS_F32_RTOL);
    // Training with the last 20 trainable: frozen part and trainable convs in bf16 (close, not
    // equal). Every layer trainable: test_bf16_training.
    nt_model_set_trainable_last(mb, 20);
    nt_model_set_trainable_last(mf, 20);
    CHECK(nt_model_forward(mb, &x, 1, 0) == NT_OK && nt_model_forward(mf, &x, 1, 0) == NT_OK);
    nt_model_set_trainable_last(mb, 20);
    nt_model_set_trainable_last(mf, 20);
    CHECK(nt_model_forward(mb, &x, 1, 0) == NT_OK && nt_model_forward(mf, &x, 1, 0) == NT_OK);
    const double e_tr = max_rel(nt_model_output(mb)->data, nt_model_output(mf)->data, 3);
    CHECK_MSG(e_tr > 0 && e_tr <= TOL_BF16_VS_F32_RTOL, "last 20 trainable in bf16: rel %.3g",
              e_tr);
    nt_tensor_free(&x);
    for (int k = 0; k < 3; k++)
        nt_model_free(ms[k]);
    nt_ctx_free(cb), nt_ctx_free(cf), nt_ctx_free(cr);
}

// Training in bf16: every conv runs bf16 (the trainable ones on their float32 weights rounded at
// each forward) and so do their input gradients; weight gradients, BN and the optimizer stay
// float32. A training step's outputs are sensitive to rounding (BN's batch statistics over 4
// images), so the check is calibrated: on the shipped model at its 128 px, the bf16 step's logits
// and conv kernel gradients must be as close to float32's as a float32 step whose input alone
// carries bf16-sized noise (+-0.4 %) is (within 2x). A wrong or stale packing, a bad flip or a
// missing update would be off by O(1).
#define SHIPPED_MODEL "weights/pneumo-resnet50.safetensors"

typedef struct {
    double out, mean, worst; // logits max rel; conv kernel gradients' relative L2: mean, worst
} grad_dist;

static grad_dist grad_distance(nt_model *a, nt_model *b, const float *za, const float *zb, int B)
{
    grad_dist g = {max_rel(za, zb, B), 0, 0};
    int nconv   = 0;
    for (int q = 0; q < nt_model_num_params(a); q++) {
        nt_param pa, pb;
        nt_model_param(a, q, &pa), nt_model_param(b, q, &pb);
        if (!pa.grad || !pb.grad || !strstr(pa.name, "_conv/kernel")) continue;
        double d2 = 0, n2 = 0;
        for (int64_t i = 0; i < nt_tensor_numel(pa.grad); i++) {
            const double u = pa.grad->data[i], v = pb.grad->data[i];
            d2 += (u - v) * (u - v), n2 += v * v;
        }
        const double e = sqrt(d2 / (n2 > 0 ? n2 : 1));
        g.worst        = e > g.worst ? e : g.worst;
        g.mean += e;
        nconv++;
    }
    CHECK(nconv == 53);
    g.mean /= nconv > 0 ? nconv : 1;
    return g;
}

static void test_bf16_training(void)
{
    nt_status st;
    nt_ctx *cb = new_ctx_dtype(NT_IMPL_AUTO, NT_DTYPE_BF16, &st);
    if (!cb) {
        printf("SKIP bf16 training test: this CPU has no AVX512_BF16\n");
        return;
    }
    nt_ctx *cf = new_ctx_dtype(NT_IMPL_AUTO, NT_DTYPE_F32, &st);
    enum { B = 4, S = 128 };
    nt_model *ms[3] = {NULL, NULL, NULL}; // bf16, f32, f32 on the noisy input
    float z[3][B];
    nt_ctx *cs[3] = {cb, cf, cf};
    nt_tensor x, xn, dy;
    CHECK(nt_tensor_new(cb, 4, (int64_t[]){B, S, S, 3}, &x) == NT_OK);
    CHECK(nt_tensor_new(cb, 4, (int64_t[]){B, S, S, 3}, &xn) == NT_OK);
    CHECK(nt_tensor_new(cb, 2, (int64_t[]){B, 1}, &dy) == NT_OK);
    // Smooth blobs in 0..255 (the model's input range), different per image.
    for (int n = 0; n < B; n++)
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                const double v = 128 + 90 * sin(0.05 * (i + 7 * n)) * cos(0.07 * (j - 5 * n));
                for (int c = 0; c < 3; c++)
                    x.data[(((int64_t)n * S + i) * S + j) * 3 + c] = (float)v;
            }
    for (int64_t i = 0; i < nt_tensor_numel(&x); i++)
        xn.data[i] = x.data[i] * (1.0f + 0.004f * (2.0f * nk_u01(77, (uint64_t)i) - 1.0f));
    for (int i = 0; i < B; i++)
        dy.data[i] = i % 2 ? -1.0f : 1.0f;
    for (int k = 0; k < 3; k++) {
        CHECK(cs[k] && nt_model_load_file(cs[k], SHIPPED_MODEL, &ms[k], NULL) == NT_OK);
        if (!ms[k]) return;
        nt_model_set_trainable_last(ms[k], -1);
        CHECK(nt_model_forward(ms[k], k == 2 ? &xn : &x, 1, 0) == NT_OK);
        // The logits now: the backward pass may reuse their buffer.
        memcpy(z[k], nt_model_output(ms[k])->data, sizeof(z[k]));
        CHECK(nt_model_backward(ms[k], &dy, NULL) == NT_OK);
    }
    const grad_dist b = grad_distance(ms[0], ms[1], z[0], z[1], B);
    const grad_dist n = grad_distance(ms[2], ms[1], z[2], z[1], B);
    const int ok      = b.out > 0 && b.mean > 0 && b.out <= 2 * n.out && b.mean <= 2 * n.mean &&
                   b.worst <= 2 * n.worst;
    printf("%s bf16 training step (shipped model, batch %d, %d px) vs f32: logits rel %.3g, conv "
           "kernel gradients' relative L2 mean %.3g, worst %.3g; f32 with +-0.4%% input noise: "
           "%.3g, %.3g, %.3g (limit 2x)\n",
           ok ? "ok  " : "FAIL", B, S, b.out, b.mean, b.worst, n.out, n.mean, n.worst);
    CHECK(ok);
    nt_tensor_free(&x), nt_tensor_free(&xn), nt_tensor_free(&dy);
    for (int k = 0; k < 3; k++)
        nt_model_free(ms[k]);
    nt_ctx_free(cb), nt_ctx_free(cf);
}

// Chunked forward (chunk_plan in libnet/run.c): the early layers run a few images at a time
// (NT_CHUNK forces it at these small sizes), through a smaller plan, and give the same outputs
// as the whole batch layer by layer; in fine-tuning the frozen prefix is chunked and the loss and
// gradients are the same too. Batch 3 in chunks of 2 leaves a short last chunk.
static void test_chunked(nt_ctx *ctx, const char *tag)
{
    nt_resnet_cfg cfg    = half_resnet_cfg();
    const char *modes[3] = {"0", "2:conv3_block1_1_conv", "1"};
    float out[3][3], loss[3];
    size_t bytes[3][2];
    float *grads[3] = {NULL, NULL, NULL};
    int64_t ngrad   = 0;
    cfg.img_size    = 64; // at 32 px the prefix is no longer where the plan peaks (below)
    int64_t shp[4]  = {3, 64, 64, 3};
    nt_tensor x;
    nt_tensor_new(ctx, 4, shp, &x);
    fill_input(&x, 5);
    float labels[3] = {1, 0, 1};
    for (int k = 0; k < 3; k++) {
        setenv("NT_CHUNK", modes[k], 1);
        nt_model *m;
        CHECK(nt_resnet50_new(ctx, &cfg, &m) == NT_OK);
        nt_model_init(m, NT_INIT_TEST, 99);
        CHECK(nt_model_set_trainable_last(m, 20) == NT_OK);
        CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
        memcpy(out[k], nt_model_output(m)->data, sizeof out[k]);
        bytes[k][0] = nt_model_activation_bytes(m);
        CHECK(nt_model_forward(m, &x, 1, 3) == NT_OK);
        double l;
        CHECK(nt_model_loss(m, labels, NULL, &l, NULL, NULL) == NT_OK);
        loss[k] = (float)l;
        // Not the loss's gradient: these logits saturate the clipped sigmoid (gradient 0).
        float dl[3]  = {1.0f, -0.5f, 0.25f};
        nt_tensor dy = {.ndim = 2, .shape = {3, 1}, .data = dl};
        CHECK(nt_model_backward(m, &dy, NULL) == NT_OK);
        bytes[k][1] = nt_model_activation_bytes(m);
        ngrad       = 0;
        for (int i = 0; i < nt_model_num_params(m); i++) {
            nt_param p;
            nt_model_param(m, i, &p);
            if (p.grad) ngrad += nt_tensor_numel(p.grad);
        }
        grads[k] = malloc((size_t)ngrad * sizeof(float));
        for (int i = 0, at = 0; i < nt_model_num_params(m) && grads[k]; i++) {
            nt_param p;
            nt_model_param(m, i, &p);
            if (!p.grad) continue;
            memcpy(grads[k] + at, p.grad->data, (size_t)nt_tensor_numel(p.grad) * sizeof(float));
            at += (int)nt_tensor_numel(p.grad);
        }
        nt_model_free(m);
    }
    unsetenv("NT_CHUNK");
    // Unforced, the rule leaves a batch this small (well inside the L3 cache) whole: the same
    // plan as NT_CHUNK=0.
    {
        nt_model *m;
        CHECK(nt_resnet50_new(ctx, &cfg, &m) == NT_OK);
        nt_model_init(m, NT_INIT_TEST, 99);
        CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
        CHECK_MSG(nt_model_activation_bytes(m) == bytes[0][0],
                  "%s unforced: %zu bytes of activations, %zu unchunked", tag,
                  nt_model_activation_bytes(m), bytes[0][0]);
        nt_model_free(m);
    }
    // Not a degenerate model: the images' logits differ and the gradients are not all zero.
    double gsum = 0;
    for (int64_t i = 0; i < ngrad && grads[0]; i++)
        gsum += fabs(grads[0][i]);
    CHECK_MSG(out[0][0] != out[0][1] && out[0][1] != out[0][2] && gsum > 0,
              "%s: logits %g %g %g, sum |gradient| %g", tag, out[0][0], out[0][1], out[0][2], gsum);
    for (int k = 1; k < 3; k++) {
        char what[96];
        snprintf(what, sizeof what, "%s NT_CHUNK=%s: inference logits", tag, modes[k]);
        CHECK_CLOSE(what, out[k], out[0], 3, 1e-6, 1e-6);
        snprintf(what, sizeof what, "%s NT_CHUNK=%s: fine-tuning loss", tag, modes[k]);
        CHECK_CLOSE(what, &loss[k], &loss[0], 1, 1e-6, 1e-6);
        snprintf(what, sizeof what, "%s NT_CHUNK=%s: fine-tuning gradients", tag, modes[k]);
        CHECK(grads[k] && grads[0] && ngrad > 0);
        if (grads[k] && grads[0]) CHECK_CLOSE(what, grads[k], grads[0], ngrad, 1e-6, 1e-5);
        // One image a chunk makes the inference plan smaller, and the training plan no larger
        // (with bf16 activations its peak is in the backward region, which is never chunked).
        // Chunks of 2 of a batch of 3 need not: the prefix's buffers shrink to 2/3 while those
        // read past the prefix hold the whole batch from its start (at 64 px 1146880 bytes
        // against 1081344 unchunked).
        if (k == 2)
            CHECK_MSG(bytes[k][0] < bytes[0][0] && bytes[k][1] <= bytes[0][1],
                      "%s NT_CHUNK=%s: activations %zu/%zu bytes (inference/training) against "
                      "%zu/%zu unchunked",
                      tag, modes[k], bytes[k][0], bytes[k][1], bytes[0][0], bytes[0][1]);
    }
    for (int k = 0; k < 3; k++)
        free(grads[k]);
    nt_tensor_free(&x);
}

// Large tensors (nt_alloc's blocks of 4 MiB and more) are whole 2 MiB pages, advised as
// transparent huge pages: the address is 2 MiB-aligned, and where THP is on ("always" or
// "madvise"), the touched block's mapping holds huge pages (/proc/self/smaps).
static void test_huge_pages(nt_ctx *ctx)
{
    nt_tensor t;
    CHECK(nt_tensor_new(ctx, 1, (int64_t[]){3 << 20}, &t) == NT_OK); // 12 MiB
    const uintptr_t a = (uintptr_t)t.data;
    CHECK_MSG(a % (2u << 20) == 0, "12 MiB tensor at %#lx: 2 MiB-aligned", (unsigned long)a);
    memset(t.data, 1, (size_t)nt_tensor_numel(&t) * sizeof(float));
    char mode[128] = "";
    FILE *f        = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f && !fgets(mode, sizeof mode, f)) mode[0] = 0;
    if (f) fclose(f);
    if (!strstr(mode, "[always]") && !strstr(mode, "[madvise]")) {
        printf("SKIP part: huge pages (THP is \"%.*s\")\n", (int)strcspn(mode, "\n"), mode);
        nt_tensor_free(&t);
        return;
    }
    long huge_kb = -1;
    char line[512];
    int in = 0;
    if ((f = fopen("/proc/self/smaps", "r"))) {
        while (fgets(line, sizeof line, f)) {
            unsigned long lo, hi;
            if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) // a mapping's header line
                in = a >= lo && a < hi;
            else if (in && sscanf(line, "AnonHugePages: %ld kB", &huge_kb) == 1)
                break;
        }
        fclose(f);
    }
    CHECK_MSG(huge_kb >= 2048, "12 MiB tensor's mapping: %ld kB in huge pages", huge_kb);
    if (huge_kb >= 2048)
        printf("ok   12 MiB tensor: 2 MiB-aligned, %ld kB of its mapping in huge pages\n", huge_kb);
    nt_tensor_free(&t);
}

int main(int argc, char **argv)
{
    // `test_model bf16`: the bf16 model tests alone (tests/amx_emu.sh runs them on the C model
    // of the AMX kernels, NK_BF16=amx-emulated, where the CPU has no bf16 unit).
    if (argc > 1 && strcmp(argv[1], "bf16") == 0) {
        test_bf16();
        test_bf16_training();
        nt_status st;
        nt_ctx *cb = new_ctx_dtype(NT_IMPL_AUTO, NT_DTYPE_BF16, &st);
        if (cb) test_chunked(cb, "bf16");
        nt_ctx_free(cb);
        return check_summary("test_model bf16");
    }
    nt_ctx *ctx = new_ctx(NT_IMPL_AUTO, 11);
    printf("kernels: %s, %d threads\n", nt_ctx_impl_name(ctx), nt_ctx_nthreads(ctx));
    test_huge_pages(ctx);
    test_layer_list(ctx);
    test_plan_and_modes(ctx);
    test_optimizers(ctx);
    test_optimizer_threads();
    test_bad_graphs(ctx);
    test_bf16();
    test_bf16_training();
    nt_ctx *ref = new_ctx(NT_IMPL_REF, 11);
    test_fd_gradients(ref);
    test_fd_gradients(ctx);
    test_train_fused(ref);
    test_train_fused(ctx);
    test_chunked(ref, "ref");
    test_chunked(ctx, "auto");
    nt_status st;
    nt_ctx *cb = new_ctx_dtype(NT_IMPL_AUTO, NT_DTYPE_BF16, &st);
    if (cb) test_chunked(cb, "bf16");
    nt_ctx_free(cb);
    nt_ctx_free(ref);
    nt_ctx_free(ctx);
    return check_summary("test_model");
}
