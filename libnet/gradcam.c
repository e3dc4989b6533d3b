/*
 * gradcam.c: Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391) for pneumo's head, and the
 * heat-map overlay the page shows. The head GAP -> Dense(ReLU) -> Dropout -> Dense(ReLU) ->
 * Dense(1) is differentiated by hand (dropout is the identity at inference), so a map costs one
 * small matrix-vector chain per image and no backward pass. Not a general autodiff: a model whose
 * head differs is refused. Tests: tests/test_gradcam.c (finite differences, direct CAM).
 */
#include "libnet/model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct head {
    const float *w1, *b1, *w2, *b2, *w3, *b3; // dense, dense_1, dense_2 (kernels [in,out])
    int C, U1, U2;
} head;

static nt_status find_head(nt_model *m, head *h)
{
    static const char *names[6] = {"dense/kernel", "dense/bias",     "dense_1/kernel",
                                   "dense_1/bias", "dense_2/kernel", "dense_2/bias"};
    const nt_tensor *t[6];
    for (int i = 0; i < 6; i++) {
        int k = nt_model_find_param(m, names[i]);
        if (k < 0)
            return nt_ctx_seterr(m->ctx, NT_EINVAL,
                                 "gradcam: expected the pneumo head (dense, dropout, dense_1, "
                                 "dense_2), but the model has no parameter %s",
                                 names[i]);
        t[i] = nt_model_param_value(m, k); // read-only: keeps the packed weights
    }
    h->w1 = t[0]->data, h->b1 = t[1]->data, h->w2 = t[2]->data;
    h->b2 = t[3]->data, h->w3 = t[4]->data, h->b3 = t[5]->data;
    h->C  = (int)t[0]->shape[0];
    h->U1 = (int)t[0]->shape[1];
    h->U2 = (int)t[2]->shape[1];
    if (t[2]->shape[0] != h->U1 || t[4]->shape[0] != h->U2 || t[4]->shape[1] != 1)
        return nt_ctx_seterr(m->ctx, NT_ESHAPE,
                             "gradcam: head kernels do not chain: dense [%d,%d], dense_1 "
                             "[%lld,%lld], dense_2 [%lld,%lld] (expected [%d,%d] and [%d,1])",
                             h->C, h->U1, (long long)t[2]->shape[0], (long long)t[2]->shape[1],
                             (long long)t[4]->shape[0], (long long)t[4]->shape[1], h->U1, h->U2,
                             h->U2);
    return NT_OK;
}

// One sample: forward in double from the GAP features f [C], then the chain rule back:
// d(logit)/d(z2) = w3; through ReLU where z2 > 0; d/d(z1) = w2 . d2; through ReLU; g = w1 . d1.
static nt_status head_grad_one(const head *h, const float *f, double *logit, float *g)
{
    double *z1 = malloc(sizeof(double) * (size_t)(2 * h->U1 + 2 * h->U2));
    if (!z1) return NT_ENOMEM;
    double *z2 = z1 + h->U1, *d1 = z2 + h->U2, *d2 = d1 + h->U1;
    // The forward sums run along the weights' rows (w1 is C x U1, w2 U1 x U2): a column at a
    // time strode U1 floats per step through w1's 2 MiB: 3.9 % of serve's perf samples, now 1.6 %.
    for (int u = 0; u < h->U1; u++)
        z1[u] = h->b1[u];
    for (int c = 0; c < h->C; c++) {
        const double fc = f[c];
        const float *wr = h->w1 + (size_t)c * h->U1;
        for (int u = 0; u < h->U1; u++)
            z1[u] += fc * wr[u];
    }
    for (int u = 0; u < h->U1; u++)
        z1[u] = z1[u] > 0 ? z1[u] : 0;
    for (int v = 0; v < h->U2; v++)
        z2[v] = h->b2[v];
    for (int u = 0; u < h->U1; u++) {
        const float *wr = h->w2 + (size_t)u * h->U2;
        for (int v = 0; v < h->U2; v++)
            z2[v] += z1[u] * wr[v];
    }
    double z = h->b3[0];
    for (int v = 0; v < h->U2; v++) {
        const double s = z2[v];
        z2[v]          = s > 0 ? s : 0;
        z += z2[v] * h->w3[v];
        d2[v] = s > 0 ? h->w3[v] : 0;
    }
    for (int u = 0; u < h->U1; u++) {
        double s = 0;
        if (z1[u] > 0)
            for (int v = 0; v < h->U2; v++)
                s += h->w2[(size_t)u * h->U2 + v] * d2[v];
        d1[u] = s;
    }
    for (int c = 0; c < h->C; c++) {
        double s = 0;
        for (int u = 0; u < h->U1; u++)
            s += h->w1[(size_t)c * h->U1 + u] * d1[u];
        g[c] = (float)s;
    }
    if (logit) *logit = z;
    free(z1);
    return NT_OK;
}

nt_status nt_model_head_grad(nt_model *m, const float *feat, int n, double *logit, float *grad)
{
    head h;
    nt_status s = find_head(m, &h);
    if (s != NT_OK) return s;
    for (int i = 0; i < n; i++) {
        s = head_grad_one(&h, feat + (size_t)i * h.C, logit ? logit + i : NULL,
                          grad + (size_t)i * h.C);
        if (s != NT_OK)
            return nt_ctx_seterr(m->ctx, NT_ENOMEM, "gradcam: out of memory (%d head units)",
                                 h.U1 + h.U2);
    }
    return NT_OK;
}

nt_status nt_model_gradcam(nt_model *m, int layer, float *cam, int *h_out, int *w_out)
{
    if (layer < 0 || layer >= m->nlayers)
        return nt_ctx_seterr(m->ctx, NT_EINVAL, "gradcam: expected a layer index 0..%d, got %d",
                             m->nlayers - 1, layer);
    const nt_layer *l = &m->layers[layer];
    if (h_out) *h_out = l->H;
    if (w_out) *w_out = l->W;
    if (!cam) return NT_OK;
    const nt_tensor *a = nt_model_layer_output(m, layer);
    if (!a || a->ndim != 4)
        return nt_ctx_seterr(m->ctx, NT_EINVAL,
                             "gradcam: layer \"%s\" has no kept feature map; call "
                             "nt_model_keep_output before the forward",
                             l->name);
    head h;
    nt_status s = find_head(m, &h);
    if (s != NT_OK) return s;
    int N = (int)a->shape[0], H = (int)a->shape[1], W = (int)a->shape[2], C = (int)a->shape[3];
    if (C != h.C)
        return nt_ctx_seterr(m->ctx, NT_ESHAPE,
                             "gradcam: layer \"%s\" has %d channels but the head expects %d",
                             l->name, C, h.C);
    float *f = malloc(sizeof(float) * 2 * (size_t)C);
    if (!f) return nt_ctx_seterr(m->ctx, NT_ENOMEM, "gradcam: out of memory (%d floats)", 2 * C);
    float *g = f + C;
    int HW   = H * W;
    for (int n = 0; n < N; n++) {
        const float *A = a->data + (size_t)n * HW * C;
        // f = GAP(A) in double, as the head saw it (up to float rounding).
        for (int c = 0; c < C; c++) {
            double s2 = 0;
            for (int p = 0; p < HW; p++)
                s2 += A[(size_t)p * C + c];
            f[c] = (float)(s2 / HW);
        }
        if (head_grad_one(&h, f, NULL, g) != NT_OK) {
            free(f);
            return nt_ctx_seterr(m->ctx, NT_ENOMEM, "gradcam: out of memory");
        }
        // alpha_c = g_c / (h w); cam = ReLU(sum_c alpha_c A[:,:,c]), then scaled to [0,1].
        float *out = cam + (size_t)n * HW;
        double mx  = 0;
        for (int p = 0; p < HW; p++) {
            double s2 = 0;
            for (int c = 0; c < C; c++)
                s2 += (double)g[c] * A[(size_t)p * C + c];
            s2 /= HW;
            out[p] = s2 > 0 ? (float)s2 : 0;
            if (out[p] > mx) mx = out[p];
        }
        for (int p = 0; p < HW; p++)
            out[p] = mx > 0 ? (float)(out[p] / mx) : 0;
    }
    free(f);
    return NT_OK;
}

// Turbo colour map (Mikhailov, Google 2019), the polynomial fit of its published coefficients.
static void turbo(double t, double rgb[3])
{
    static const double r[6] = {0.13572138,   4.61539260,    -42.66032258,
                                132.13108234, -152.94239396, 59.28637943};
    static const double g[6] = {0.09140261,   2.19418839, 4.84296658,
                                -14.18503333, 4.27729857, 2.82956604};
    static const double b[6] = {0.10667330,   12.64194608,  -60.58204836,
                                110.36276771, -89.90310912, 27.34824973};
    const double *k[3]       = {r, g, b};
    for (int c = 0; c < 3; c++) {
        double v = 0;
        for (int i = 5; i >= 0; i--)
            v = v * t + k[c][i];
        rgb[c] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
}

void nt_gradcam_overlay(const float *cam, int h, int w, const uint8_t *rgb, int W, int H,
                        uint8_t *out)
{
    for (int y = 0; y < H; y++) {
        // Half-pixel centres, clamped: the map's cell centres land on the image's.
        double sy = (y + 0.5) * h / H - 0.5;
        if (sy < 0) sy = 0;
        if (sy > h - 1) sy = h - 1;
        int y0 = (int)sy, y1 = y0 + 1 < h ? y0 + 1 : y0;
        double fy = sy - y0;
        for (int x = 0; x < W; x++) {
            double sx = (x + 0.5) * w / W - 0.5;
            if (sx < 0) sx = 0;
            if (sx > w - 1) sx = w - 1;
            int x0 = (int)sx, x1 = x0 + 1 < w ? x0 + 1 : x0;
            double fx = sx - x0;
            double v  = (1 - fy) * ((1 - fx) * cam[y0 * w + x0] + fx * cam[y0 * w + x1]) +
                       fy * ((1 - fx) * cam[y1 * w + x0] + fx * cam[y1 * w + x1]);
            const uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            double grey      = (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
            double c[3];
            turbo(v, c);
            // Cold regions stay the plain X-ray; hot ones take up to 60% of the colour.
            double a = 0.6 * v;
            for (int k = 0; k < 3; k++)
                out[((size_t)y * W + x) * 3 + k] =
                    (uint8_t)lrint((1 - a) * grey + a * 255.0 * c[k]);
        }
    }
}
