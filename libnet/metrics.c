/*
 * metrics.c: epoch metrics for binary classification (accuracy, precision, recall, specificity,
 * F1, exact ROC AUC with a bootstrap interval), the decision threshold choice (Youden's J or a
 * target sensitivity), and the Keras 3 callback rules (EarlyStopping, ReduceLROnPlateau,
 * ModelCheckpoint's save_best_only). Tests: tests/test_metrics.c against hand-computed values.
 */
#include "libnet/nt_internal.h"

#include <math.h>
#include <string.h>

struct nt_metrics {
    nt_ctx *ctx;
    float *p, *y;
    int64_t n, cap;
    double loss_sum;
    int64_t loss_n;
};

nt_status nt_metrics_new(nt_ctx *ctx, nt_metrics **out)
{
    *out = calloc(1, sizeof(**out));
    if (!*out) return nt_ctx_seterr(ctx, NT_ENOMEM, "metrics: out of memory");
    (*out)->ctx = ctx;
    return NT_OK;
}

void nt_metrics_free(nt_metrics *mt)
{
    if (!mt) return;
    free(mt->p);
    free(mt->y);
    free(mt);
}

void nt_metrics_reset(nt_metrics *mt)
{
    mt->n        = 0;
    mt->loss_sum = 0;
    mt->loss_n   = 0;
}

int64_t nt_metrics_count(const nt_metrics *mt)
{
    return mt->n;
}

void nt_metrics_data(const nt_metrics *mt, const float **probs, const float **labels)
{
    *probs  = mt->p;
    *labels = mt->y;
}

nt_status nt_metrics_add(nt_metrics *mt, const float *probs, const float *labels, int n,
                         double batch_loss)
{
    for (int i = 0; i < n; i++)
        if (labels[i] != 0.0f && labels[i] != 1.0f)
            return nt_ctx_seterr(mt->ctx, NT_EINVAL, "metrics: label %d is %g, expected 0 or 1", i,
                                 (double)labels[i]);
    if (mt->n + n > mt->cap) {
        int64_t cap = mt->cap ? 2 * mt->cap : 1024;
        while (cap < mt->n + n)
            cap *= 2;
        float *p = realloc(mt->p, (size_t)cap * sizeof(float));
        if (p) mt->p = p;
        float *y = p ? realloc(mt->y, (size_t)cap * sizeof(float)) : NULL;
        if (!p || !y) return nt_ctx_seterr(mt->ctx, NT_ENOMEM, "metrics: out of memory");
        mt->y   = y;
        mt->cap = cap;
    }
    memcpy(mt->p + mt->n, probs, (size_t)n * sizeof(float));
    memcpy(mt->y + mt->n, labels, (size_t)n * sizeof(float));
    mt->n += n;
    if (!isnan(batch_loss)) {
        mt->loss_sum += batch_loss * n;
        mt->loss_n += n;
    }
    return NT_OK;
}

// ---- AUC ----

typedef struct scored {
    float p;
    float y;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    float x = ((const scored *)a)->p, y = ((const scored *)b)->p;
    return x < y ? -1 : x > y;
}

// Exact AUC: P(score of a positive > score of a negative) + 0.5 P(equal), from sorted scores.
static double auc_sorted(const scored *s, int64_t n)
{
    double pos = 0, neg = 0, sum = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j   = i;
        double tpos = 0, tneg = 0;
        while (j < n && s[j].p == s[i].p) {
            if (s[j].y > 0.5f)
                tpos++;
            else
                tneg++;
            j++;
        }
        // Positives in this tie group beat every negative below it and half of those tied.
        sum += tpos * (neg + 0.5 * tneg);
        pos += tpos;
        neg += tneg;
        i = j;
    }
    return pos > 0 && neg > 0 ? sum / (pos * neg) : NAN;
}

static scored *sorted_copy(const nt_metrics *mt)
{
    scored *s = malloc(sizeof(*s) * (size_t)(mt->n ? mt->n : 1));
    if (!s) return NULL;
    for (int64_t i = 0; i < mt->n; i++)
        s[i] = (scored){mt->p[i], mt->y[i]};
    qsort(s, (size_t)mt->n, sizeof(*s), cmp_scored);
    return s;
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0.0;
}

void nt_metrics_compute(const nt_metrics *mt, float threshold, nt_metric_values *v)
{
    memset(v, 0, sizeof(*v));
    v->n         = mt->n;
    v->threshold = threshold;
    v->loss      = mt->loss_n ? mt->loss_sum / (double)mt->loss_n : NAN;
    for (int64_t i = 0; i < mt->n; i++) {
        int pred = mt->p[i] >= threshold, pos = mt->y[i] > 0.5f;
        v->tp += pred && pos;
        v->fp += pred && !pos;
        v->tn += !pred && !pos;
        v->fn += !pred && pos;
    }
    v->pos         = v->tp + v->fn;
    v->neg         = v->tn + v->fp;
    v->accuracy    = ratio((double)(v->tp + v->tn), (double)mt->n);
    v->precision   = ratio((double)v->tp, (double)(v->tp + v->fp));
    v->recall      = ratio((double)v->tp, (double)(v->tp + v->fn));
    v->specificity = ratio((double)v->tn, (double)(v->tn + v->fp));
    v->f1          = ratio(2.0 * v->precision * v->recall, v->precision + v->recall);
    scored *s      = sorted_copy(mt);
    v->auc         = s ? auc_sorted(s, mt->n) : NAN;
    free(s);
}

float nt_metrics_choose_threshold(const nt_metrics *mt, double target_sensitivity)
{
    scored *s = sorted_copy(mt);
    if (!s || mt->n == 0) {
        free(s);
        return 0.5f;
    }
    double pos = 0, neg = 0;
    for (int64_t i = 0; i < mt->n; i++) {
        if (s[i].y > 0.5f)
            pos++;
        else
            neg++;
    }
    // Candidate thresholds: between neighbouring distinct scores (and below the lowest), so that
    // "p >= t" splits exactly there. Walk from the lowest: everything at or above i is positive.
    double best_j = -2, fn = 0, tn = 0;
    float best_t = 0.5f;
    for (int64_t i = 0; i <= mt->n;) {
        float t = i == 0 ? s[0].p * 0.5f : i == mt->n ? 1.0f : 0.5f * (s[i - 1].p + s[i].p);
        if (i == mt->n) t = nextafterf(s[mt->n - 1].p, 2.0f);
        double sens = pos > 0 ? (pos - fn) / pos : 0, spec = neg > 0 ? tn / neg : 0;
        if (target_sensitivity > 0) {
            // Highest threshold that keeps sensitivity >= target (sensitivity falls as t rises).
            if (sens >= target_sensitivity) best_t = t;
        } else if (sens + spec - 1 > best_j) {
            best_j = sens + spec - 1;
            best_t = t;
        }
        if (i == mt->n) break;
        int64_t j = i;
        while (j < mt->n && s[j].p == s[i].p) {
            if (s[j].y > 0.5f)
                fn++;
            else
                tn++;
            j++;
        }
        i = j;
    }
    free(s);
    return best_t;
}

void nt_metrics_auc_ci(const nt_metrics *mt, int n_boot, uint64_t seed, double level, double *lo,
                       double *hi)
{
    *lo = *hi = NAN;
    if (mt->n == 0 || n_boot < 2) return;
    scored *s    = malloc(sizeof(*s) * (size_t)mt->n);
    double *aucs = malloc(sizeof(double) * (size_t)n_boot);
    int got      = 0;
    if (!s || !aucs) goto done;
    for (int b = 0; b < n_boot; b++) {
        uint64_t key = nk_mix64(seed + NK_GOLDEN * (uint64_t)(b + 1));
        for (int64_t i = 0; i < mt->n; i++) {
            int64_t k = (int64_t)(nk_u01(key, (uint64_t)i) * (float)mt->n);
            if (k >= mt->n) k = mt->n - 1;
            s[i] = (scored){mt->p[k], mt->y[k]};
        }
        qsort(s, (size_t)mt->n, sizeof(*s), cmp_scored);
        double a = auc_sorted(s, mt->n);
        if (!isnan(a)) aucs[got++] = a;
    }
    if (got >= 2) {
        // Percentile interval.
        for (int i = 1; i < got; i++)
            for (int j = i; j > 0 && aucs[j - 1] > aucs[j]; j--) {
                double t = aucs[j];
                aucs[j] = aucs[j - 1], aucs[j - 1] = t;
            }
        double a = (1 - level) / 2;
        *lo      = aucs[(int)floor(a * (got - 1))];
        *hi      = aucs[(int)ceil((1 - a) * (got - 1))];
    }
done:
    free(s);
    free(aucs);
}

// ---- callbacks ----

double nt_mode_worst(nt_mode mode)
{
    return mode == NT_MODE_MIN ? INFINITY : -INFINITY;
}

static int improves(nt_mode mode, double cur, double ref, double min_delta)
{
    return mode == NT_MODE_MIN ? cur < ref - min_delta : cur > ref + min_delta;
}

void nt_es_init(nt_early_stopping *es, nt_mode mode, double min_delta, int patience,
                int restore_best)
{
    memset(es, 0, sizeof(*es));
    es->mode          = mode;
    es->min_delta     = fabs(min_delta);
    es->patience      = patience;
    es->restore_best  = restore_best;
    es->best          = nt_mode_worst(mode);
    es->best_epoch    = -1;
    es->stopped_epoch = -1;
}

int nt_es_update(nt_early_stopping *es, int epoch, double value, int *improved)
{
    // Keras 3 EarlyStopping.on_epoch_end: wait counts up first, an improvement resets it, and
    // training stops once wait >= patience (never after the first epoch).
    if (improved) *improved = 0;
    es->wait++;
    if (improves(es->mode, value, es->best, es->min_delta)) {
        es->best       = value;
        es->best_epoch = epoch;
        es->wait       = 0;
        if (improved) *improved = 1;
        return 0;
    }
    if (es->wait >= es->patience && epoch > 0) {
        es->stopped_epoch = epoch;
        return 1;
    }
    return 0;
}

void nt_rlr_init(nt_reduce_lr *r, nt_mode mode, double factor, int patience, double min_delta,
                 int cooldown, double lr_min)
{
    memset(r, 0, sizeof(*r));
    r->mode      = mode;
    r->factor    = factor;
    r->patience  = patience;
    r->min_delta = min_delta;
    r->cooldown  = cooldown;
    r->lr_min    = lr_min;
    r->best      = nt_mode_worst(mode);
}

double nt_rlr_update(nt_reduce_lr *r, double value, double lr)
{
    // Keras 3 ReduceLROnPlateau.on_epoch_end.
    int in_cooldown = r->cooldown_counter > 0;
    if (in_cooldown) {
        r->cooldown_counter--;
        r->wait = 0;
    }
    if (improves(r->mode, value, r->best, r->min_delta)) {
        r->best = value;
        r->wait = 0;
    } else if (!(r->cooldown_counter > 0)) {
        r->wait++;
        if (r->wait >= r->patience && lr > (double)(float)r->lr_min) {
            double nl = lr * r->factor;
            if (nl < r->lr_min) nl = r->lr_min;
            r->cooldown_counter = r->cooldown;
            r->wait             = 0;
            return nl;
        }
    }
    return lr;
}

int nt_checkpoint_improved(nt_mode mode, double value, double *best)
{
    if (!improves(mode, value, *best, 0)) return 0;
    *best = value;
    return 1;
}
