/*
 * test_metrics.c: epoch metrics, threshold choice and the Keras 3 callback rules against
 * hand-computed values and sequences (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint).
 */
#include "libnet/nt.h"
#include "tests/check.h"
#include "tests/testutil.h"

#include <math.h>

#define EQ(a, b) (fabs((double)(a) - (double)(b)) < 1e-9)

static void test_values(nt_ctx *ctx)
{
    nt_metrics *mt;
    CHECK(nt_metrics_new(ctx, &mt) == NT_OK);
    // The textbook example: AUC 0.75.
    float p[4] = {0.1f, 0.4f, 0.35f, 0.8f}, y[4] = {0, 0, 1, 1};
    CHECK(nt_metrics_add(mt, p, y, 2, 0.5) == NT_OK);
    CHECK(nt_metrics_add(mt, p + 2, y + 2, 2, 0.7) == NT_OK);
    nt_metric_values v;
    nt_metrics_compute(mt, 0.5f, &v);
    CHECK(v.n == 4 && v.tp == 1 && v.fp == 0 && v.tn == 2 && v.fn == 1);
    CHECK_MSG(EQ(v.auc, 0.75), "auc %g", v.auc);
    CHECK(EQ(v.accuracy, 0.75) && EQ(v.precision, 1.0) && EQ(v.recall, 0.5));
    CHECK(EQ(v.specificity, 1.0) && fabs(v.f1 - 2.0 / 3.0) < 1e-9);
    CHECK_MSG(EQ(v.loss, 0.6), "loss %g", v.loss);
    // Youden's J: 0.5 at t between 0.1 and 0.35 (sens 1, spec 0.5) and between 0.4 and 0.8
    // (sens 0.5, spec 1); the lower one is kept.
    float t = nt_metrics_choose_threshold(mt, 0);
    CHECK_MSG(fabsf(t - 0.225f) < 1e-6f, "youden threshold %g", (double)t);
    t = nt_metrics_choose_threshold(mt, 1.0);
    CHECK_MSG(fabsf(t - 0.225f) < 1e-6f, "sens>=1 threshold %g", (double)t);
    t = nt_metrics_choose_threshold(mt, 0.5);
    CHECK_MSG(fabsf(t - 0.6f) < 1e-6f, "sens>=0.5 threshold %g", (double)t);
    double lo, hi, lo2, hi2;
    nt_metrics_auc_ci(mt, 200, 1, 0.95, &lo, &hi);
    nt_metrics_auc_ci(mt, 200, 1, 0.95, &lo2, &hi2);
    CHECK(lo <= 0.75 && 0.75 <= hi && lo == lo2 && hi == hi2);
    // Ties count half; one class only gives NaN; bad labels are refused.
    nt_metrics_reset(mt);
    float pt[2] = {0.5f, 0.5f}, yt[2] = {0, 1};
    nt_metrics_add(mt, pt, yt, 2, NAN);
    nt_metrics_compute(mt, 0.5f, &v);
    CHECK(EQ(v.auc, 0.5) && isnan(v.loss));
    nt_metrics_reset(mt);
    nt_metrics_add(mt, pt, yt + 1, 1, NAN);
    nt_metrics_compute(mt, 0.5f, &v);
    CHECK(isnan(v.auc) && v.precision == 1.0 && v.specificity == 0.0);
    float bad = 0.5f;
    CHECK(nt_metrics_add(mt, pt, &bad, 1, NAN) == NT_EINVAL);
    nt_metrics_free(mt);
}

static void test_early_stopping(void)
{
    // patience 2, min_delta 0.01 (min mode): improvements at epochs 0 and 1; 0.945 is not below
    // 0.95 - 0.01; stop at epoch 3 (wait reached 2).
    nt_early_stopping es;
    nt_es_init(&es, NT_MODE_MIN, 0.01, 2, 1);
    const double v[] = {1.0, 0.95, 0.945, 0.96, 0.90};
    const int stop[] = {0, 0, 0, 1}, imp[] = {1, 1, 0, 0};
    for (int e = 0; e < 4; e++) {
        int improved;
        int s = nt_es_update(&es, e, v[e], &improved);
        CHECK_MSG(s == stop[e] && improved == imp[e], "epoch %d: stop %d improved %d", e, s,
                  improved);
    }
    CHECK(es.best_epoch == 1 && EQ(es.best, 0.95) && es.stopped_epoch == 3);
    // Max mode (val_auc), patience 1: stops at the first epoch without improvement after 0.
    nt_es_init(&es, NT_MODE_MAX, 0, 1, 0);
    CHECK(nt_es_update(&es, 0, 0.8, NULL) == 0);
    CHECK(nt_es_update(&es, 1, 0.9, NULL) == 0);
    CHECK(nt_es_update(&es, 2, 0.9, NULL) == 1);
    // patience 0 never stops at epoch 0 (Keras: epoch > 0).
    nt_es_init(&es, NT_MODE_MIN, 0, 0, 0);
    CHECK(nt_es_update(&es, 0, 1.0, NULL) == 0);
    CHECK(nt_es_update(&es, 1, 1.0, NULL) == 1);
}

static void test_reduce_lr(void)
{
    // factor 0.5, patience 2, min_delta 1e-4, cooldown 1, min_lr 0.1, worked by hand with
    // Keras 3's ReduceLROnPlateau.on_epoch_end.
    nt_reduce_lr r;
    nt_rlr_init(&r, NT_MODE_MIN, 0.5, 2, 1e-4, 1, 0.1);
    const double v[]  = {1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    const double lr[] = {1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1, 0.1, 0.1};
    double cur        = 1.0;
    for (int e = 0; e < 14; e++) {
        cur = nt_rlr_update(&r, v[e], cur);
        CHECK_MSG(EQ(cur, lr[e]), "epoch %d: lr %g expected %g", e, cur, lr[e]);
    }
    // min_delta: a change smaller than it is a plateau.
    nt_rlr_init(&r, NT_MODE_MIN, 0.1, 1, 1e-4, 0, 0);
    cur = nt_rlr_update(&r, 1.0, 1e-3);
    cur = nt_rlr_update(&r, 1.0 - 5e-5, cur);
    CHECK_MSG(EQ(cur, 1e-4), "lr %g", cur);
}

static void test_checkpoint(void)
{
    double best = nt_mode_worst(NT_MODE_MIN);
    CHECK(nt_checkpoint_improved(NT_MODE_MIN, 0.5, &best) && best == 0.5);
    CHECK(!nt_checkpoint_improved(NT_MODE_MIN, 0.5, &best));
    CHECK(nt_checkpoint_improved(NT_MODE_MIN, 0.4999, &best));
    best = nt_mode_worst(NT_MODE_MAX);
    CHECK(nt_checkpoint_improved(NT_MODE_MAX, 0.1, &best) &&
          !nt_checkpoint_improved(NT_MODE_MAX, 0.05, &best));
}

int main(void)
{
    nt_ctx *ctx = tu_ctx_new1();
    test_values(ctx);
    test_early_stopping();
    test_reduce_lr();
    test_checkpoint();
    nt_ctx_free(ctx);
    return check_summary("test_metrics");
}
