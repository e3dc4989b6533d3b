/*
 * resnet.c: keras.applications.ResNet50 (v1, include_top=False) with Keras's layer names and
 * order, and the pneumo head. Stride sits on the first 1x1 conv and on the projection shortcut;
 * every conv has a bias. The layer list is checked in tests/test_model.c (175 layers,
 * 23,587,712 parameters) and the numbers against PyTorch in tests/test_fixtures.c.
 */
#include "libnet/model_internal.h"

#include <string.h>

void nt_resnet_cfg_default(nt_resnet_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->img_size  = 224;
    cfg->head1     = 256;
    cfg->head2     = 128;
    cfg->dropout   = 0.5f;
    cfg->with_head = 1;
    cfg->width_div = 1;
}

static int conv_bn_relu_name(nt_model *m, const char *prefix, const char *suffix, char *buf,
                             size_t len)
{
    int n = snprintf(buf, len, "%s%s", prefix, suffix);
    if (n < 0 || (size_t)n >= len) {
        nt_ctx_seterr(m->ctx, NT_EINVAL, "resnet: layer prefix \"%s\" is too long", prefix);
        return -1;
    }
    return 0;
}

#define LAYER(call)                                                                                \
    do {                                                                                           \
        if ((call) < 0) return -1;                                                                 \
    } while (0)

int nt_resnet_block(nt_model *m, const char *prefix, int in, int f1, int f2, int f3, int stride,
                    int projection)
{
    char n[12][96];
    static const char *suf[12] = {"_1_conv", "_1_bn",   "_1_relu", "_2_conv", "_2_bn", "_2_relu",
                                  "_0_conv", "_3_conv", "_0_bn",   "_3_bn",   "_add",  "_out"};
    for (int i = 0; i < 12; i++)
        if (conv_bn_relu_name(m, prefix, suf[i], n[i], sizeof(n[i])) < 0) return -1;
    int x, shortcut = in, c0 = -1;
    LAYER(x = nt_layer_conv(m, n[0], in, f1, 1, 1, stride, 0, 0));
    LAYER(x = nt_layer_bn(m, n[1], x));
    LAYER(x = nt_layer_relu(m, n[2], x));
    LAYER(x = nt_layer_conv(m, n[3], x, f2, 3, 3, 1, 1, 1));
    LAYER(x = nt_layer_bn(m, n[4], x));
    LAYER(x = nt_layer_relu(m, n[5], x));
    if (projection) LAYER(c0 = nt_layer_conv(m, n[6], in, f3, 1, 1, stride, 0, 0));
    LAYER(x = nt_layer_conv(m, n[7], x, f3, 1, 1, 1, 0, 0));
    if (projection) LAYER(shortcut = nt_layer_bn(m, n[8], c0));
    LAYER(x = nt_layer_bn(m, n[9], x));
    // Keras: layers.Add()([shortcut, x]).
    LAYER(x = nt_layer_add(m, n[10], shortcut, x));
    LAYER(x = nt_layer_relu(m, n[11], x));
    return x;
}

nt_status nt_resnet50_new(nt_ctx *ctx, const nt_resnet_cfg *cfg_in, nt_model **out)
{
    nt_resnet_cfg cfg;
    if (cfg_in)
        cfg = *cfg_in;
    else
        nt_resnet_cfg_default(&cfg);
    *out = NULL;
    if (cfg.width_div == 0) cfg.width_div = 1;
    int k = cfg.width_div;
    if (cfg.img_size < 32 || cfg.img_size > 4096)
        return nt_ctx_seterr(ctx, NT_EINVAL, "resnet50: image size must be 32..4096, got %d",
                             cfg.img_size);
    if (k < 1 || 64 % k != 0)
        return nt_ctx_seterr(ctx, NT_EINVAL, "resnet50: width_div must divide 64, got %d", k);
    if (cfg.with_head && (cfg.head1 < 1 || cfg.head2 < 1 || cfg.head1 > 65536 || cfg.head2 > 65536))
        return nt_ctx_seterr(ctx, NT_EINVAL, "resnet50: head sizes must be 1..65536, got %d and %d",
                             cfg.head1, cfg.head2);
    if (cfg.with_head && !(cfg.dropout >= 0.0f && cfg.dropout < 1.0f))
        return nt_ctx_seterr(ctx, NT_EINVAL, "resnet50: dropout must be in [0, 1), got %g",
                             (double)cfg.dropout);

    nt_model *m;
    nt_status s = nt_model_new(ctx, "input_1", cfg.img_size, cfg.img_size, 3, &m);
    if (s != NT_OK) return s;
    int x = 0;
#define B(call)                                                                                    \
    do {                                                                                           \
        if ((x = (call)) < 0) goto fail;                                                           \
    } while (0)
    B(nt_layer_zeropad(m, "conv1_pad", x, 3, 3, 3, 3));
    B(nt_layer_conv(m, "conv1_conv", x, 64 / k, 7, 7, 2, 0, 0));
    B(nt_layer_bn(m, "conv1_bn", x));
    B(nt_layer_relu(m, "conv1_relu", x));
    B(nt_layer_zeropad(m, "pool1_pad", x, 1, 1, 1, 1));
    B(nt_layer_maxpool(m, "pool1_pool", x, 3, 2));
    static const int filters[4] = {64, 128, 256, 512}, blocks[4] = {3, 4, 6, 3};
    for (int st = 0; st < 4; st++) {
        int f = filters[st] / k;
        for (int b = 0; b < blocks[st]; b++) {
            char prefix[48]; // "conv%d_block%d" with two ints: room for any
            snprintf(prefix, sizeof(prefix), "conv%d_block%d", st + 2, b + 1);
            int stride = (b == 0 && st > 0) ? 2 : 1;
            B(nt_resnet_block(m, prefix, x, f, f, 4 * f, stride, b == 0));
        }
    }
    if (cfg.with_head) {
        B(nt_layer_gap(m, "global_average_pooling2d", x));
        B(nt_layer_dense(m, "dense", x, cfg.head1, NT_ACT_RELU));
        B(nt_layer_dropout(m, "dropout", x, cfg.dropout));
        B(nt_layer_dense(m, "dense_1", x, cfg.head2, NT_ACT_RELU));
        B(nt_layer_dense(m, "dense_2", x, 1, NT_ACT_SIGMOID));
    }
#undef B
    *out = m;
    return NT_OK;
fail:
    nt_model_free(m);
    return NT_EINVAL;
}
