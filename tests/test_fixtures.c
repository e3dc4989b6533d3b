/*
 * test_fixtures.c: parity with the independent PyTorch (float64) reference of
 * tests/gen_fixtures.py. block.bin: one projection bottleneck block, every output, gradient and
 * moving statistic elementwise (NT_IMPL_REF and NT_IMPL_AUTO). resnet_b2.bin: the whole Keras
 * ResNet50 v1 with head at batch 2: logits, loss, probs, GAP, inference logits, moving statistics,
 * and every parameter gradient's norm, max abs and 16 hashed samples (NT_IMPL_REF with the
 * brief's tolerances, NT_IMPL_AUTO with float32-sized ones, see "tolerances"). Also the
 * fixture reader on truncated and corrupt files. The 10-step training run is test_train10.c.
 */
#include "libnet/nt.h"
#include "kernels/nk.h"
#include "tests/check.h"
#include "tests/fixture.h"
#include "tests/testutil.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

// ---- tolerances (the same constants, with the measurements behind them, are in
// tests/gen_fixtures.py under "tolerances of the C tests"; keep the two in step) ----
//
// block.bin: one block, BN over 50 rows; elementwise, |got - ref| <= tol * max|ref| + TOL_ATOL.
#define TOL_FWD  1e-4  /* forward outputs and moving statistics: float32 torch uses 2e-7 */
#define TOL_GRAD 1e-3  /* gradients (sums over <= 50 rows): float32 torch uses 4e-7 */
#define TOL_ATOL 1e-30 /* only so that an all-zero reference tensor compares exactly */
// resnet_b2.bin: the whole model, with one tolerance set per kernel set.
//
// NT_IMPL_REF accumulates in double and stores float32: the logits land within 2e-6 and every
// gradient within 5e-5 of max|ref| (measured), so the brief's tolerances apply as they are, to
// every sampled entry. A failure here that moves a cluster of tensors by ~1% after a change to
// kernels/ref is most likely a ReLU flip (next paragraph), not a bug; look at AUTO's numbers.
//
// NT_IMPL_AUTO accumulates in float32. At conv5 the BN batch statistics cover only 2*2*2 = 8
// rows, which amplifies float32 rounding ~100x; the ~1e-4 forward error then flips the few ReLUs
// whose input is that close to 0, and each flip moves the gradients upstream of it by ~1%
// (float32 torch and this library's AVX-512 path alike: median 1.8%, worst 3.6% relative L2 per
// tensor, up to 18% in single entries). Elementwise checks at 1e-3 are out of reach of any
// float32 implementation, so AUTO checks norms, max abs and L2 errors: enough for wiring bugs
// (layer order, strides, padding, head, loss), which give O(1) errors; op numerics are checked
// elementwise on block.bin and against finite differences in test_grad.c.
typedef struct {
    const char *name;
    double fwd;   // logits, probs, GAP, loss: elementwise, relative to max|ref|
    double infer; // inference logits and moving statistics (no batch statistics), same
    double norm;  // |norm(g) - norm(ref)| / norm(ref), per tensor
    double max;   // |max|g| - max|ref|| / max|ref|
    double l2;    // norm(g - ref) / norm(ref): dx and the tensors stored whole
    double samp;  // rms error of the 16 sampled entries / max|ref|
    double elem;  // largest error of any sampled or stored entry / max|ref| (and of dx)
} deep_tols;

static const deep_tols TOLS_REF = {
    "REF", 1e-4, 1e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, // the brief's; measured <= 7e-5 (GAP)
};
static const deep_tols TOLS_AUTO = {
    "AUTO",
    2e-3,     // float32 torch 3.1e-4 (probs), avx512 2.7e-4
    1e-4,     // float32 torch 9e-6, avx512 7.5e-6
    2e-2,     // float32 torch 6e-3, avx512 5.4e-3
    0.1,      // float32 torch 2.9e-2, avx512 2.1e-2
    0.15,     // float32 torch 3.6e-2, avx512 3.3e-2
    0.05,     // float32 torch 1.2e-2, avx512 9e-3
    INFINITY, // single entries: flips move them by O(10%)
};
// A conv bias that feeds a training-mode BN has an exact gradient of 0 (the batch mean cancels
// it): the float64 reference holds rounding noise (~1e-17). Checked as
// |g| <= TOL_BIAS0 * max|gradient of that BN's beta| instead; float32 torch: 1.5e-5.
#define TOL_BIAS0 1e-3

#define NSAMP      16
#define SAMPLE_KEY 0xF1C5u

// ---- helpers ----

static nt_ctx *new_ctx(nt_impl impl, uint64_t seed)
{
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.impl = impl;
    o.seed = seed; // keys dropout; the fixtures use the init seed for it too
    return tu_ctx_new(&o);
}

static fx_file *open_fixture(const char *file)
{
    char path[512], err[512];
    fx_file *f;
    fx_default_path(file, path, sizeof path);
    // Fixtures are committed: a missing one is a failure, not a skip.
    CHECK_MSG(fx_open(path, &f, err, sizeof err) == 0, "%s", err);
    return f;
}

static double max_abs(const float *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}

// Elementwise against a fixture tensor, tol relative to the tensor's max |ref|.
static void close_to(const char *what, const float *got, const fx_tensor *ref, double tol)
{
    if (!ref) {
        CHECK_MSG(0, "%s: no reference", what);
        return;
    }
    CHECK_CLOSE(what, got, ref->data, ref->numel, tol * max_abs(ref->data, ref->numel) + TOL_ATOL,
                0.0);
}

static int same_shape(const nt_tensor *t, const fx_tensor *r)
{
    if (!t || !r || t->ndim != r->ndim) return 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != r->shape[d]) return 0;
    return 1;
}

static nt_tensor tensor_from(nt_ctx *ctx, const fx_tensor *r)
{
    nt_tensor t = {0};
    if (!r) return t;
    if (nt_tensor_new(ctx, r->ndim, r->shape, &t) != NT_OK) {
        fprintf(stderr, "FAIL tensor_new: %s\n", nt_ctx_errmsg(ctx));
        return t;
    }
    memcpy(t.data, r->data, (size_t)r->numel * sizeof(float));
    return t;
}

// "X_conv/bias" -> "X_bn/beta" (the BN this conv feeds, by Keras's naming).
static void beta_of_bias(const char *bias, char *out, size_t len)
{
    size_t n = strlen(bias) - strlen("_conv/bias");
    snprintf(out, len, "%.*s_bn/beta", (int)n, bias);
}

// Layer and parameter order against "layer/<name>" and "pidx/<name>".
static void check_order(const nt_model *m, const fx_file *f)
{
    int nl = 0, np = 0;
    for (int i = 0; i < fx_count(f); i++) {
        const fx_tensor *t = fx_at(f, i);
        if (strncmp(t->name, "layer/", 6) == 0) {
            int got = nt_model_find_layer(m, t->name + 6);
            CHECK_MSG(got == (int)t->data[0], "layer %s is at %d, expected %d", t->name + 6, got,
                      (int)t->data[0]);
            nl++;
        } else if (strncmp(t->name, "pidx/", 5) == 0) {
            int got = nt_model_find_param(m, t->name + 5);
            CHECK_MSG(got == (int)t->data[0], "parameter %s is at %d, expected %d", t->name + 5,
                      got, (int)t->data[0]);
            np++;
        }
    }
    CHECK_MSG(nl == nt_model_num_layers(m), "%d layers, the reference has %d",
              nt_model_num_layers(m), nl);
    CHECK_MSG(np == nt_model_num_params(m), "%d parameters, the reference has %d",
              nt_model_num_params(m), np);
}

// Moving statistics of every BN against "moving/<name>".
static void check_moving(const nt_model *m, const fx_file *f, double tol, const char *tag)
{
    int n        = 0;
    double worst = 0;
    for (int i = 0; i < nt_model_num_params(m); i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        if (!tu_ends_with(p.name, "/moving_mean") && !tu_ends_with(p.name, "/moving_variance"))
            continue;
        char key[256];
        snprintf(key, sizeof key, "moving/%s", p.name);
        const fx_tensor *r = fx_find(f, key);
        if (!r || !same_shape(p.value, r)) {
            CHECK_MSG(0, "%s: %s missing from the fixture or of another shape", tag, key);
            continue;
        }
        double mx = max_abs(r->data, r->numel), e = 0;
        for (int64_t k = 0; k < r->numel; k++) {
            double d = fabs((double)p.value->data[k] - r->data[k]);
            if (!(d <= e)) e = d; // NaN sticks
        }
        CHECK_MSG(e <= tol * mx, "%s: %s differs by %.3g (max |ref| %.3g)", tag, p.name, e, mx);
        if (!(e / mx <= worst)) worst = e / mx;
        n++;
    }
    printf("%s  %s: moving statistics of %d tensors, worst %.3g of max|ref| (tol %g)\n",
           worst <= tol ? "ok  " : "FAIL", tag, n, worst, tol);
}

// ---- the fixture reader on broken files ----

static int write_file(const char *path, const unsigned char *b, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = fwrite(b, 1, n, fp);
    return (fclose(fp) == 0 && w == n) ? 0 : -1;
}

static void expect_refused(const char *path, const char *what, const char *needle)
{
    char err[512] = "";
    fx_file *f;
    int rc = fx_open(path, &f, err, sizeof err);
    CHECK_MSG(rc == -1 && f == NULL, "%s: a broken file was accepted", what);
    CHECK_MSG(strstr(err, needle) != NULL, "%s: message \"%s\" does not mention \"%s\"", what, err,
              needle);
    if (rc == 0) fx_close(f);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void test_reader(void)
{
    char path[512];
    fx_default_path("block.bin", path, sizeof path);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        CHECK_MSG(0, "cannot open %s", path);
        return;
    }
    static unsigned char b[1 << 20], c[1 << 20];
    size_t n = fread(b, 1, sizeof b, fp);
    fclose(fp);
    CHECK(n > 100 && n < sizeof b);

    char tmp[] = "/tmp/pneumo_fx_XXXXXX";
    int fd     = mkstemp(tmp);
    if (fd < 0) {
        CHECK_MSG(0, "mkstemp failed");
        return;
    }
    close(fd);

    // Truncated at several points, down to empty.
    size_t cuts[] = {0, 3, 16, 23, 100, n / 2, n - 9, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK(write_file(tmp, b, cuts[i]) == 0);
        expect_refused(tmp, "truncated", "truncated");
    }
    // One byte flipped in the data: the CRC catches it.
    memcpy(c, b, n);
    c[n / 2] ^= 0x10;
    CHECK(write_file(tmp, c, n) == 0);
    expect_refused(tmp, "flipped byte", "CRC-32");
    // Wrong magic and version.
    memcpy(c, b, n);
    c[0] = 'X';
    CHECK(write_file(tmp, c, n) == 0);
    expect_refused(tmp, "magic", "magic");
    memcpy(c, b, n);
    put_u32(c + 4, 7);
    CHECK(write_file(tmp, c, n) == 0);
    expect_refused(tmp, "version", "version 7");
    // A lying tensor count, with a valid CRC so that the structural check is what refuses it.
    memcpy(c, b, n);
    put_u32(c + 8, 1000000);
    put_u32(c + n - 4, fx_crc32(0, c, n - 8));
    CHECK(write_file(tmp, c, n) == 0);
    expect_refused(tmp, "count", "tensors");
    // The first record's name length made huge, CRC fixed.
    memcpy(c, b, n);
    put_u32(c + 16, 100000);
    put_u32(c + n - 4, fx_crc32(0, c, n - 8));
    CHECK(write_file(tmp, c, n) == 0);
    expect_refused(tmp, "name length", "name length");
    // Trailing garbage after the trailer.
    memcpy(c, b, n);
    c[n] = 0;
    CHECK(write_file(tmp, c, n + 1) == 0);
    expect_refused(tmp, "trailing byte", "PNFE");
    // The intact copy reads, and a missing file is named.
    CHECK(write_file(tmp, b, n) == 0);
    char err[512];
    fx_file *f = NULL;
    CHECK_MSG(fx_open(tmp, &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK(fx_find(f, "x") != NULL && fx_find(f, "no such tensor") == NULL);
        int64_t want[4] = {2, 9, 9, 16}, wrong[4] = {2, 9, 9, 15};
        CHECK(fx_expect(f, "x", 4, want) != NULL);
        fprintf(stderr, "(the next line is an expected message)\n");
        CHECK(fx_expect(f, "x", 4, wrong) == NULL);
        fx_close(f);
    }
    remove(tmp);
    expect_refused(tmp, "missing file", "cannot open");
    printf("ok    fixture reader: truncated, corrupt and malformed files refused\n");
}

// ---- block.bin ----

static void test_block(nt_impl impl, const char *tag)
{
    fx_file *f = open_fixture("block.bin");
    if (!f) return;
    nt_ctx *ctx = new_ctx(impl, 1234);
    nt_model *m = NULL;
    nt_tensor x = {0}, dy = {0}, dx = {0};
    if (!ctx) goto done;
    printf("-- block.bin, impl %s (%s)\n", tag, nt_ctx_impl_name(ctx));

    const fx_tensor *cs = fx_expect(f, "cfg/seed", 1, (int64_t[]){1});
    CHECK(cs && cs->data[0] == 1234.0f);
    const fx_tensor *rx  = fx_expect(f, "x", 4, (int64_t[]){2, 9, 9, 16});
    const fx_tensor *ry  = fx_expect(f, "y", 4, (int64_t[]){2, 5, 5, 32});
    const fx_tensor *ryi = fx_expect(f, "y_infer", 4, (int64_t[]){2, 5, 5, 32});
    const fx_tensor *rdy = fx_expect(f, "dy", 4, (int64_t[]){2, 5, 5, 32});
    const fx_tensor *rdx = fx_expect(f, "dx", 4, (int64_t[]){2, 9, 9, 16});
    CHECK(rx && ry && ryi && rdy && rdx);
    if (!(rx && ry && ryi && rdy && rdx)) goto done;

    CHECK(nt_model_new(ctx, "input_1", 9, 9, 16, &m) == NT_OK);
    if (!m) goto done;
    int out = nt_resnet_block(m, "conv3_block1", 0, 8, 8, 32, 2, 1);
    CHECK_MSG(out == 12, "nt_resnet_block returned %d (%s)", out, nt_ctx_errmsg(ctx));
    if (out < 0) goto done;
    check_order(m, f);
    CHECK_MSG(nt_model_init(m, NT_INIT_TEST, 1234) == NT_OK, "init: %s", nt_ctx_errmsg(ctx));
    nt_model_set_want_input_grad(m, 1);
    x  = tensor_from(ctx, rx);
    dy = tensor_from(ctx, rdy);
    CHECK(nt_tensor_new(ctx, 4, rx->shape, &dx) == NT_OK);
    if (!x.data || !dy.data || !dx.data) goto done;

    // Inference first: the reference uses the moving statistics as initialised.
    CHECK_MSG(nt_model_forward(m, &x, 0, 0) == NT_OK, "forward: %s", nt_ctx_errmsg(ctx));
    const nt_tensor *y = nt_model_output(m);
    CHECK(same_shape(y, ryi));
    if (same_shape(y, ryi)) close_to("block y_infer", y->data, ryi, TOL_FWD);

    CHECK_MSG(nt_model_forward(m, &x, 1, 0) == NT_OK, "forward: %s", nt_ctx_errmsg(ctx));
    y = nt_model_output(m);
    CHECK(same_shape(y, ry));
    if (same_shape(y, ry)) close_to("block y", y->data, ry, TOL_FWD);
    check_moving(m, f, TOL_FWD, "block");

    CHECK_MSG(nt_model_backward(m, &dy, &dx) == NT_OK, "backward: %s", nt_ctx_errmsg(ctx));
    close_to("block dx", dx.data, rdx, TOL_GRAD);
    int ngrad = 0;
    for (int i = 0; i < nt_model_num_params(m); i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        char key[256], what[300];
        snprintf(key, sizeof key, "grad/%s", p.name);
        const fx_tensor *r = fx_find(f, key);
        if (!p.trainable) {
            CHECK_MSG(r == NULL, "%s is not trainable here but the reference has a gradient",
                      p.name);
            continue;
        }
        if (!r || !p.grad || !same_shape(p.grad, r)) {
            CHECK_MSG(0, "%s: gradient missing or of another shape (reference %s)", p.name,
                      r ? "has it" : "lacks it");
            continue;
        }
        ngrad++;
        snprintf(what, sizeof what, "block %s", key);
        if (tu_ends_with(p.name, "_conv/bias")) {
            char beta[256];
            beta_of_bias(key, beta, sizeof beta);
            const fx_tensor *rb = fx_find(f, beta);
            double lim          = rb ? TOL_BIAS0 * max_abs(rb->data, rb->numel) : 0;
            double got          = max_abs(p.grad->data, nt_tensor_numel(p.grad));
            CHECK_MSG(rb && got <= lim, "%s: |g| %.3g, expected ~0 (<= %.3g)", p.name, got, lim);
            continue;
        }
        close_to(what, p.grad->data, r, TOL_GRAD);
    }
    CHECK_MSG(ngrad == 16, "%d gradients compared, expected 16", ngrad);

done:
    nt_tensor_free(&x);
    nt_tensor_free(&dy);
    nt_tensor_free(&dx);
    nt_model_free(m);
    nt_ctx_free(ctx);
    fx_close(f);
}

// ---- resnet_b2.bin ----

// Worst use of each tolerance, printed once at the end (every failure is printed when it happens).
typedef struct {
    const char *kind;
    double tol, worst;
    char at[200];
    int n, bad;
} metric;

static void score(metric *mt, const char *name, double err)
{
    mt->n++;
    if (!(err <= mt->worst)) { // NaN becomes the worst
        mt->worst = err;
        snprintf(mt->at, sizeof mt->at, "%s", name);
    }
    if (!(err <= mt->tol)) {
        mt->bad++;
        fprintf(stderr, "  %s %s: error %.3g > tol %g\n", mt->kind, name, err, mt->tol);
    }
}

static void metric_report(metric *mt)
{
    check_ncheck_++;
    if (mt->bad) check_nfail_++;
    printf("%s  full %-5s %3d checked, %d over; worst %.3g (tol %g) at %s\n",
           mt->bad ? "FAIL" : "ok  ", mt->kind, mt->n, mt->bad, mt->worst, mt->tol, mt->at);
}

static double max_err(const float *g, const float *r, int64_t n)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)g[i] - r[i]);
        if (!(d <= e)) e = d;
    }
    return e;
}

static double rel_l2(const float *g, const float *r, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)g[i] - r[i];
        e += d * d;
        s += (double)r[i] * r[i];
    }
    return sqrt(e) / sqrt(s);
}

static void test_full(nt_impl impl, const deep_tols *tol)
{
    const char *tag = tol->name;
    fx_file *f      = open_fixture("resnet_b2.bin");
    if (!f) return;
    nt_ctx *ctx = new_ctx(impl, 42);
    nt_model *m = NULL;
    nt_tensor x = {0}, dl = {0}, dx = {0};
    if (!ctx) goto done;
    printf("-- resnet_b2.bin, impl %s (%s)\n", tag, nt_ctx_impl_name(ctx));

    const fx_tensor *cs = fx_expect(f, "cfg/seed", 1, (int64_t[]){1});
    const fx_tensor *ch = fx_expect(f, "cfg/head", 1, (int64_t[]){4});
    CHECK(cs && cs->data[0] == 42.0f);
    CHECK(ch && ch->data[0] == 256 && ch->data[1] == 128 && ch->data[2] == 0.5f &&
          ch->data[3] == 64);
    const fx_tensor *rx    = fx_expect(f, "x", 4, (int64_t[]){2, 64, 64, 3});
    const fx_tensor *rlab  = fx_expect(f, "labels", 1, (int64_t[]){2});
    const fx_tensor *rw    = fx_expect(f, "weights", 1, (int64_t[]){2});
    const fx_tensor *rz    = fx_expect(f, "logits", 2, (int64_t[]){2, 1});
    const fx_tensor *rzi   = fx_expect(f, "logits_infer", 2, (int64_t[]){2, 1});
    const fx_tensor *rloss = fx_expect(f, "loss", 1, (int64_t[]){1});
    const fx_tensor *rp    = fx_expect(f, "probs", 1, (int64_t[]){2});
    const fx_tensor *rgap  = fx_expect(f, "gap", 2, (int64_t[]){2, 2048});
    const fx_tensor *rdx   = fx_expect(f, "dx", 4, (int64_t[]){2, 64, 64, 3});
    if (!(rx && rlab && rw && rz && rzi && rloss && rp && rgap && rdx)) {
        CHECK_MSG(0, "resnet_b2.bin lacks tensors (see above)");
        goto done;
    }

    m = tu_fixture_resnet(ctx);
    if (!m) goto done;
    CHECK(nt_model_set_trainable_last(m, -1) == NT_OK);
    check_order(m, f);
    int64_t tr, total = nt_model_count_params(m, &tr);
    CHECK_MSG(total == 24145281 && tr == 24092161, "params %lld, trainable %lld", (long long)total,
              (long long)tr);
    CHECK_MSG(nt_model_init(m, NT_INIT_TEST, 42) == NT_OK, "init: %s", nt_ctx_errmsg(ctx));
    nt_model_set_want_input_grad(m, 1);
    x = tensor_from(ctx, rx);
    CHECK(nt_tensor_new(ctx, 2, (int64_t[]){2, 1}, &dl) == NT_OK);
    CHECK(nt_tensor_new(ctx, 4, rx->shape, &dx) == NT_OK);
    if (!x.data || !dl.data || !dx.data) goto done;

    CHECK_MSG(nt_model_forward(m, &x, 0, 0) == NT_OK, "forward: %s", nt_ctx_errmsg(ctx));
    const nt_tensor *z = nt_model_output(m);
    CHECK(same_shape(z, rzi));
    if (same_shape(z, rzi)) close_to("full logits_infer", z->data, rzi, tol->infer);

    CHECK_MSG(nt_model_forward(m, &x, 1, 0) == NT_OK, "forward: %s", nt_ctx_errmsg(ctx));
    z = nt_model_output(m);
    CHECK(same_shape(z, rz));
    if (same_shape(z, rz)) close_to("full logits", z->data, rz, tol->fwd);
    int gi               = nt_model_find_layer(m, "global_average_pooling2d");
    const nt_tensor *gap = nt_model_layer_output(m, gi);
    CHECK_MSG(gap && same_shape(gap, rgap), "GAP output (layer %d) not kept or of another shape",
              gi);
    if (gap && same_shape(gap, rgap)) close_to("full gap", gap->data, rgap, tol->fwd);
    check_moving(m, f, tol->infer, "full");

    double loss = NAN;
    float probs[2];
    CHECK_MSG(nt_model_loss(m, rlab->data, rw->data, &loss, probs, dl.data) == NT_OK, "loss: %s",
              nt_ctx_errmsg(ctx));
    float lossf = (float)loss;
    close_to("full loss", &lossf, rloss, tol->fwd);
    close_to("full probs", probs, rp, tol->fwd);

    CHECK_MSG(nt_model_backward(m, &dl, &dx) == NT_OK, "backward: %s", nt_ctx_errmsg(ctx));
    metric m_l2 = {"l2", tol->l2, 0, "", 0, 0}, m_elem = {"elem", tol->elem, 0, "", 0, 0};
    metric m_norm = {"norm", tol->norm, 0, "", 0, 0}, m_max = {"max", tol->max, 0, "", 0, 0};
    metric m_samp = {"samp", tol->samp, 0, "", 0, 0}, m_b0 = {"bias0", TOL_BIAS0, 0, "", 0, 0};
    score(&m_l2, "dx", rel_l2(dx.data, rdx->data, rdx->numel));
    score(&m_elem, "dx", max_err(dx.data, rdx->data, rdx->numel) / max_abs(rdx->data, rdx->numel));
    int ngrad = 0;
    for (int i = 0; i < nt_model_num_params(m); i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        if (!p.trainable) continue;
        char key[256];
        snprintf(key, sizeof key, "gstat/%s", p.name);
        const fx_tensor *st = fx_expect(f, key, 1, (int64_t[]){4});
        snprintf(key, sizeof key, "gidx/%s", p.name);
        const fx_tensor *ix = fx_expect(f, key, 1, (int64_t[]){NSAMP});
        snprintf(key, sizeof key, "gsamp/%s", p.name);
        const fx_tensor *sa = fx_expect(f, key, 1, (int64_t[]){NSAMP});
        if (!st || !ix || !sa || !p.grad) {
            CHECK_MSG(0, "%s: no gradient or no reference statistics", p.name);
            continue;
        }
        const float *g = p.grad->data;
        int64_t n      = nt_tensor_numel(p.grad);
        CHECK_MSG(st->data[2] == (float)i && st->data[3] == (float)n,
                  "%s: index %d numel %lld, the reference has %g and %g", p.name, i, (long long)n,
                  st->data[2], st->data[3]);
        ngrad++;
        double nrm = 0, mx = 0;
        for (int64_t k = 0; k < n; k++) {
            nrm += (double)g[k] * g[k];
            if (!(fabs(g[k]) <= mx)) mx = fabs(g[k]);
        }
        nrm = sqrt(nrm);
        if (tu_ends_with(p.name, "_conv/bias")) {
            char beta[200];
            beta_of_bias(p.name, beta, sizeof beta);
            snprintf(key, sizeof key, "gstat/%s", beta);
            const fx_tensor *bs = fx_find(f, key);
            score(&m_b0, p.name, bs ? mx / bs->data[1] : INFINITY);
            continue;
        }
        score(&m_norm, p.name, fabs(nrm - st->data[0]) / st->data[0]);
        score(&m_max, p.name, fabs(mx - st->data[1]) / st->data[1]);
        double se = 0, emax = 0;
        for (int j = 0; j < NSAMP; j++) {
            // The sample positions come from the hash, here as in the generator.
            int64_t at =
                (int64_t)floor((double)nk_u01(SAMPLE_KEY + (uint64_t)i, (uint64_t)j) * (double)n);
            CHECK_MSG(ix->data[j] == (float)at, "%s: sample %d at %lld, the reference has %g",
                      p.name, j, (long long)at, ix->data[j]);
            double d = (double)g[at] - sa->data[j];
            se += d * d;
            if (!(fabs(d) <= emax)) emax = fabs(d);
        }
        score(&m_samp, p.name, sqrt(se / NSAMP) / st->data[1]);
        score(&m_elem, p.name, emax / st->data[1]);
        snprintf(key, sizeof key, "grad/%s", p.name);
        const fx_tensor *full = fx_find(f, key);
        if (full) {
            CHECK(same_shape(p.grad, full));
            if (same_shape(p.grad, full)) {
                score(&m_l2, p.name, rel_l2(g, full->data, n));
                score(&m_elem, p.name, max_err(g, full->data, n) / st->data[1]);
            }
        }
    }
    CHECK_MSG(ngrad == 218, "%d trainable gradients compared, expected 218", ngrad);
    metric_report(&m_norm);
    metric_report(&m_max);
    metric_report(&m_l2);
    metric_report(&m_samp);
    metric_report(&m_elem);
    metric_report(&m_b0);

done:
    nt_tensor_free(&x);
    nt_tensor_free(&dl);
    nt_tensor_free(&dx);
    nt_model_free(m);
    nt_ctx_free(ctx);
    fx_close(f);
}

int main(void)
{
    test_reader();
    test_block(NT_IMPL_REF, "REF");
    test_block(NT_IMPL_AUTO, "AUTO");
    test_full(NT_IMPL_REF, &TOLS_REF);
    test_full(NT_IMPL_AUTO, &TOLS_AUTO);
    return check_summary("test_fixtures");
}
