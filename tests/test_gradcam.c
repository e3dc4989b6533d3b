/*
 * test_gradcam.c: libnet/gradcam.c on a small ResNet50 (odd map size 3x3, odd head widths): the
 * hand-written head gradient against central differences of an independent double forward of the
 * head from the GAP features, the CAM against a direct computation from the kept feature map, the
 * size query, the error when the map was not kept, and the overlay's end points.
 */
#include "libnet/model_internal.h" // layers[].wpack_ok: Grad-CAM must keep the packed weights
#include "libnet/nt.h"
#include "tests/check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FD_EPS  1e-3 /* the project's gradient-check step (STYLE.md 6) */
#define FD_RTOL 1e-4 /* the head is piecewise linear: differences away from kinks are exact */
#define CAM_ATOL                                                                                   \
    1e-5 /* both sides sum in double; the kept map and GAP are float, normalised to [0,1] */

typedef struct hp {
    const float *w[3], *b[3];
    int C, U1, U2;
} hp;

static const float *param(nt_model *m, const char *name, const nt_tensor **t)
{
    int k = nt_model_find_param(m, name);
    CHECK_MSG(k >= 0, "no parameter %s", name);
    nt_param p;
    nt_model_param(m, k, &p);
    if (t) *t = p.value;
    return p.value->data;
}

// Logit of the head from GAP features f [C], in double; masks (may be NULL) record the ReLUs.
static double head_fwd(const hp *h, const double *f, unsigned char *mask)
{
    double z1[64], z2[64];
    for (int u = 0; u < h->U1; u++) {
        double s = h->b[0][u];
        for (int c = 0; c < h->C; c++)
            s += f[c] * h->w[0][c * h->U1 + u];
        z1[u] = s > 0 ? s : 0;
        if (mask) mask[u] = s > 0;
    }
    double z = h->b[2][0];
    for (int v = 0; v < h->U2; v++) {
        double s = h->b[1][v];
        for (int u = 0; u < h->U1; u++)
            s += z1[u] * h->w[1][u * h->U2 + v];
        z2[v] = s > 0 ? s : 0;
        if (mask) mask[h->U1 + v] = s > 0;
        z += z2[v] * h->w[2][v];
    }
    return z;
}

int main(void)
{
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.nthreads = 2;
    nt_ctx *ctx;
    if (nt_ctx_new(&o, &ctx) != NT_OK) return 1;
    nt_resnet_cfg cfg;
    nt_resnet_cfg_default(&cfg);
    cfg.img_size  = 72; // conv5 map 3x3
    cfg.width_div = 16; // 128 channels
    cfg.head1     = 13;
    cfg.head2     = 7;
    nt_model *m;
    CHECK(nt_resnet50_new(ctx, &cfg, &m) == NT_OK);
    CHECK(nt_model_init(m, NT_INIT_TEST, 7) == NT_OK);
    int L = nt_model_find_layer(m, "conv5_block3_out");
    CHECK(L > 0);
    int h = 0, w = 0;
    CHECK(nt_model_gradcam(m, L, NULL, &h, &w) == NT_OK);
    CHECK_MSG(h == 3 && w == 3, "map %dx%d, expected 3x3", h, w);

    const int N = 3, S = cfg.img_size;
    int64_t shp[4] = {N, S, S, 3};
    nt_tensor x;
    CHECK(nt_tensor_new(ctx, 4, shp, &x) == NT_OK);
    uint64_t r = 12345;
    for (int64_t i = 0; i < nt_tensor_numel(&x); i++) {
        r         = r * 6364136223846793005ull + 1442695040888963407ull;
        x.data[i] = (float)((r >> 40) & 0xffff) / 65535.0f * 2 - 1;
    }
    // Not kept: a clear error, not stale memory.
    CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
    float *cam = calloc((size_t)N * h * w, sizeof(float)), *ref = calloc((size_t)N * h * w, 4);
    if (nt_model_layer_output(m, L) == NULL) {
        CHECK(nt_model_gradcam(m, L, cam, NULL, NULL) == NT_EINVAL);
        CHECK(strstr(nt_ctx_errmsg(ctx), "nt_model_keep_output") != NULL);
    }
    nt_model_keep_output(m, L, 1);
    CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK);
    const nt_tensor *A = nt_model_layer_output(m, L);
    CHECK(A != NULL);
    if (!A) return check_summary("test_gradcam");
    const nt_tensor *k1;
    hp hd;
    hd.w[0] = param(m, "dense/kernel", &k1);
    hd.b[0] = param(m, "dense/bias", NULL);
    hd.w[1] = param(m, "dense_1/kernel", NULL);
    hd.b[1] = param(m, "dense_1/bias", NULL);
    hd.w[2] = param(m, "dense_2/kernel", NULL);
    hd.b[2] = param(m, "dense_2/bias", NULL);
    hd.C = (int)k1->shape[0], hd.U1 = cfg.head1, hd.U2 = cfg.head2;
    int C = (int)A->shape[3], HW = h * w;
    CHECK(C == hd.C);

    float *f = malloc(sizeof(float) * (size_t)N * C), *g = malloc(sizeof(float) * (size_t)N * C);
    double *fd = malloc(sizeof(double) * (size_t)C), logit[3];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int p = 0; p < HW; p++)
                s += A->data[((size_t)n * HW + p) * C + c];
            f[n * C + c] = (float)(s / HW);
        }
    CHECK(nt_model_head_grad(m, f, N, logit, g) == NT_OK);
    const nt_tensor *y = nt_model_output(m);
    int nonzero = 0, checked = 0, kinks = 0;
    double max_rel = 0;
    unsigned char m0[64], mp[64], mm[64];
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++)
            fd[c] = f[n * C + c];
        double z = head_fwd(&hd, fd, m0);
        CHECK_MSG(fabs(z - logit[n]) < 1e-9 * (1 + fabs(z)), "logit %d: %.12g vs %.12g", n,
                  logit[n], z);
        CHECK_MSG(fabs(z - y->data[n]) < 1e-4 * (1 + fabs(z)), "model logit %d: %g vs head %g", n,
                  y->data[n], z);
        for (int c = 0; c < C; c++) {
            double keep = fd[c];
            fd[c]       = keep + FD_EPS;
            double zp   = head_fwd(&hd, fd, mp);
            fd[c]       = keep - FD_EPS;
            double zm   = head_fwd(&hd, fd, mm);
            fd[c]       = keep;
            // A step that crosses a ReLU kink measures a secant, not the derivative: skip it.
            if (memcmp(mp, m0, (size_t)(hd.U1 + hd.U2)) ||
                memcmp(mm, m0, (size_t)(hd.U1 + hd.U2))) {
                kinks++;
                continue;
            }
            double num = (zp - zm) / (2 * FD_EPS), an = g[n * C + c];
            double rel = fabs(an - num) / fmax(fmax(fabs(an), fabs(num)), 1e-8);
            if (rel > max_rel) max_rel = rel;
            CHECK_MSG(rel < FD_RTOL, "dlogit/df[%d,%d]: analytic %.9g numeric %.9g", n, c, an, num);
            checked++;
            nonzero += an != 0;
        }
    }
    printf("head gradient: %d checked (%d nonzero), %d skipped at kinks, max rel err %.3g\n",
           checked, nonzero, kinks, max_rel);
    CHECK_MSG(nonzero > C, "only %d nonzero gradient entries: the check would be vacuous", nonzero);

    // The CAM, directly from A and g.
    for (int n = 0; n < N; n++) {
        double mx = 0;
        for (int p = 0; p < HW; p++) {
            double s = 0;
            for (int c = 0; c < C; c++)
                s += (double)g[n * C + c] / HW * A->data[((size_t)n * HW + p) * C + c];
            ref[n * HW + p] = s > 0 ? (float)s : 0;
            if (s > mx) mx = s;
        }
        for (int p = 0; p < HW; p++)
            ref[n * HW + p] = mx > 0 ? (float)(ref[n * HW + p] / mx) : 0;
    }
    int packed0 = 0, packed1 = 0;
    CHECK(nt_model_forward(m, &x, 0, 0) == NT_OK); // (the reference above read params: repack)
    for (int i = 0; i < m->nlayers; i++)
        packed0 += m->layers[i].wpack_ok;
    CHECK(nt_model_gradcam(m, L, cam, &h, &w) == NT_OK);
    for (int i = 0; i < m->nlayers; i++)
        packed1 += m->layers[i].wpack_ok;
    // Reading the head must not drop the weights packed for inference (a repack every request).
    CHECK(packed0 > 0 && packed1 == packed0);
    CHECK_CLOSE("cam", cam, ref, N * HW, CAM_ATOL, 0);
    int ones = 0;
    for (int i = 0; i < N * HW; i++) {
        CHECK(cam[i] >= 0 && cam[i] <= 1);
        ones += cam[i] == 1.0f;
    }
    CHECK_MSG(ones >= 1, "no map reaches 1 after normalisation");
    CHECK(nt_model_gradcam(m, 9999, cam, &h, &w) == NT_EINVAL);

    // Overlay: a zero map leaves the grey image; a map of ones is 40% grey + 60% Turbo's red end.
    uint8_t img[5 * 4 * 3], out[5 * 4 * 3];
    for (int i = 0; i < 5 * 4; i++)
        img[3 * i] = img[3 * i + 1] = img[3 * i + 2] = (uint8_t)(10 * i);
    float z2x2[4] = {0, 0, 0, 0}, o2x2[4] = {1, 1, 1, 1};
    nt_gradcam_overlay(z2x2, 2, 2, img, 5, 4, out);
    CHECK(memcmp(out, img, sizeof(img)) == 0);
    nt_gradcam_overlay(o2x2, 2, 2, img, 5, 4, out);
    CHECK_MSG(out[0] > 60 && out[2] < 10, "hot pixel over black: %d %d %d", out[0], out[1], out[2]);

    free(f), free(g), free(fd), free(cam), free(ref);
    nt_tensor_free(&x);
    nt_model_free(m);
    nt_ctx_free(ctx);
    return check_summary("test_gradcam");
}
