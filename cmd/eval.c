/*
 * eval.c: `pneumo eval`: runs a model over labelled class folders (local or S3) and reports
 * accuracy, sensitivity, specificity, precision, F1, ROC AUC with a bootstrap interval and the
 * confusion matrix at the model's threshold, as a table or one JSON object (with the ROC and
 * precision-recall points), and optionally as a self-contained HTML report (cmd/report.c).
 * Glue only: the metrics are libnet's nt_metrics_*, the images come through data/'s loader.
 * Tests: tests/eval.sh.
 */
#include "cmd/cli.h"
#include "cmd/report.h"
#include "data/dataset.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CMD           "eval"
#define DEFAULT_MODEL "weights/pneumo-resnet50.safetensors"
#define THUMB_PX      96
#define CI_LEVEL      0.95
#define MAX_LISTED    10 // skipped images named on stderr
// File names of Kermany et al.'s chest X-ray set (bacteria/virus patients, NORMAL and NORMAL2).
#define KERMANY_NAMES "^(person[0-9]+_(bacteria|virus)_[0-9]+|(NORMAL2-)?IM-[0-9]+-[0-9]+)\\.jpe?g$"

typedef struct eval_opts {
    const char *model, *data, *report, *csv, *run, *resize, *dtype;
    double threshold, seed, max_bad_frac;
    int json, batch, threads, loader_threads, boot, mistakes;
} eval_opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *base_name(const char *s)
{
    const char *b = strrchr(s, '/');
    return b ? b + 1 : s;
}

// ---- curves, mistakes, layout ----

typedef struct scored {
    float p;
    int y;
} scored;

static int cmp_desc(const void *a, const void *b)
{
    float x = ((const scored *)a)->p, y = ((const scored *)b)->p;
    return x > y ? -1 : x < y;
}

// ROC / PR points by falling threshold, one per distinct score, after a first point above every
// score; *ap gets the average precision (scikit-learn's: sum of (R_k - R_k-1) P_k).
static ev_point *make_curve(const float *p, const float *y, int64_t n, int *npts, double *ap)
{
    scored *s    = malloc(sizeof(*s) * (size_t)(n ? n : 1));
    ev_point *c  = malloc(sizeof(*c) * (size_t)(n + 1));
    int64_t npos = 0;
    if (!s || !c) {
        free(s);
        free(c);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        s[i] = (scored){p[i], y[i] > 0.5f};
        npos += s[i].y;
    }
    qsort(s, (size_t)n, sizeof(*s), cmp_desc);
    c[0]       = (ev_point){n ? nextafterf(s[0].p, INFINITY) : 1.0f, 0, 0};
    int k      = 1;
    int64_t tp = 0, fp = 0;
    double sum = 0, r_prev = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        for (; j < n && s[j].p == s[i].p; j++) {
            tp += s[j].y;
            fp += !s[j].y;
        }
        c[k++] = (ev_point){s[i].p, tp, fp};
        if (npos > 0) {
            double r = (double)tp / (double)npos;
            sum += (r - r_prev) * (double)tp / (double)(tp + fp);
            r_prev = r;
        }
        i = j;
    }
    free(s);
    *npts = k;
    *ap   = npos > 0 ? sum : NAN;
    return c;
}

typedef struct ranked {
    float key;
    int index;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->index - y->index;
}

// The up to max most confident false positives (fn = 0: label 0, p >= t, highest p first) or
// false negatives (fn = 1: label 1, p < t, lowest p first). Ties keep dataset order.
static ev_mistake *pick_mistakes(const nd_dataset *ds, const float *prob, float t, int fn, int max,
                                 int *n)
{
    ranked *r     = malloc(sizeof(*r) * (size_t)ds->n);
    ev_mistake *m = malloc(sizeof(*m) * (size_t)(max ? max : 1));
    *n            = 0;
    if (!r || !m) {
        free(r);
        free(m);
        return NULL;
    }
    int k = 0;
    for (int i = 0; i < ds->n; i++) {
        if (isnan(prob[i]) || ds->items[i].label != fn) continue;
        if (fn ? prob[i] < t : prob[i] >= t) r[k++] = (ranked){fn ? -prob[i] : prob[i], i};
    }
    qsort(r, (size_t)k, sizeof(*r), cmp_ranked);
    for (int i = 0; i < k && i < max; i++)
        m[(*n)++] = (ev_mistake){r[i].index, prob[r[i].index]};
    free(r);
    return m;
}

// The Kermany layout: classes NORMAL and PNEUMONIA, and most file names as Kermany's.
static int is_kermany(const nd_dataset *ds)
{
    if (ds->nclasses != 2 || strcmp(ds->class_names[0], "NORMAL") ||
        strcmp(ds->class_names[1], "PNEUMONIA"))
        return 0;
    regex_t re;
    if (regcomp(&re, KERMANY_NAMES, REG_EXTENDED | REG_NOSUB)) return 0;
    int hits = 0;
    for (int i = 0; i < ds->n; i++)
        hits += regexec(&re, base_name(ds->items[i].source), 0, NULL, 0) == 0;
    regfree(&re);
    return ds->n > 0 && hits * 10 >= ds->n * 9;
}

// ---- output ----

static json_t *jnum(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

// A JSON string; bytes that are not UTF-8 (file names may hold any) become '?'.
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s);
    if (j) return j;
    char *t = strdup(s);
    if (!t) return json_null();
    for (char *p = t; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    j = json_string(t);
    free(t);
    return j ? j : json_null();
}

static json_t *mistakes_json(const ev_result *r, const ev_mistake *m, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:o,s:o}", "source",
                                           jstr(r->ds->items[m[i].index].source), "probability",
                                           jnum(m[i].p)));
    return a;
}

static void print_json(const ev_result *r, const char *report)
{
    const nt_metric_values *v = &r->v;
    const nt_model_meta *mm   = r->meta;
    json_t *o = json_object(), *roc = json_object(), *pr = json_object(), *sk = json_array();
    json_t *rt = json_array(), *rf = json_array(), *rtp = json_array();
    json_t *pt = json_array(), *pp = json_array(), *prr = json_array();
    for (int i = 0; i < r->ncurve; i++) {
        const ev_point *c = &r->curve[i];
        json_array_append_new(rt, jnum(c->threshold));
        json_array_append_new(rf, jnum(v->neg ? (double)c->fp / (double)v->neg : NAN));
        json_array_append_new(rtp, jnum(v->pos ? (double)c->tp / (double)v->pos : NAN));
        if (c->tp + c->fp == 0 || v->pos == 0) continue;
        json_array_append_new(pt, jnum(c->threshold));
        json_array_append_new(pp, jnum((double)c->tp / (double)(c->tp + c->fp)));
        json_array_append_new(prr, jnum((double)c->tp / (double)v->pos));
    }
    json_object_set_new(roc, "threshold", rt);
    json_object_set_new(roc, "fpr", rf);
    json_object_set_new(roc, "tpr", rtp);
    json_object_set_new(pr, "threshold", pt);
    json_object_set_new(pr, "precision", pp);
    json_object_set_new(pr, "recall", prr);
    for (int i = 0; i < r->nskipped; i++)
        json_array_append_new(sk, jstr(r->ds->items[r->skipped[i]].source));
    json_object_set_new(o, "model", jstr(r->model_path));
    json_object_set_new(o, "model_meta",
                        json_pack("{s:i,s:i,s:s,s:[o,o],s:o,s:o}", "img_size", mm->cfg.img_size,
                                  "width_div", mm->cfg.width_div, "preprocess",
                                  nt_preprocess_name(mm->preprocess), "class_names",
                                  jstr(mm->class_names[0]), jstr(mm->class_names[1]), "threshold",
                                  jnum(mm->threshold), "provenance", jstr(mm->provenance)));
    json_object_set_new(o, "data", jstr(r->ds->root));
    json_object_set_new(o, "n", json_integer(v->n));
    json_object_set_new(
        o, "class_names",
        json_pack("[o,o]", jstr(r->ds->class_names[0]), jstr(r->ds->class_names[1])));
    json_object_set_new(o, "class_counts",
                        json_pack("[I,I]", (json_int_t)v->neg, (json_int_t)v->pos));
    json_object_set_new(o, "positive_class", jstr(r->ds->class_names[1]));
    json_object_set_new(o, "skipped", json_integer(r->nskipped));
    json_object_set_new(o, "skipped_sources", sk);
    json_object_set_new(o, "threshold", jnum(r->threshold));
    json_object_set_new(o, "threshold_source", json_string(r->threshold_given ? "flag" : "model"));
    json_object_set_new(o, "accuracy", jnum(v->accuracy));
    json_object_set_new(o, "sensitivity", jnum(v->recall));
    json_object_set_new(o, "recall", jnum(v->recall));
    json_object_set_new(o, "specificity", jnum(v->specificity));
    json_object_set_new(o, "precision", jnum(v->precision));
    json_object_set_new(o, "f1", jnum(v->f1));
    json_object_set_new(o, "auc", jnum(v->auc));
    json_object_set_new(o, "auc_ci",
                        json_pack("{s:o,s:o,s:f,s:i}", "lo", jnum(r->auc_lo), "hi", jnum(r->auc_hi),
                                  "level", r->ci_level, "resamples", r->boot));
    json_object_set_new(o, "average_precision", jnum(r->ap));
    json_object_set_new(o, "loss", jnum(v->loss));
    json_object_set_new(o, "confusion",
                        json_pack("{s:I,s:I,s:I,s:I}", "tp", (json_int_t)v->tp, "fp",
                                  (json_int_t)v->fp, "tn", (json_int_t)v->tn, "fn",
                                  (json_int_t)v->fn));
    // Rows are the true class, columns the prediction, both in class index order.
    json_object_set_new(o, "confusion_matrix",
                        json_pack("[[I,I],[I,I]]", (json_int_t)v->tn, (json_int_t)v->fp,
                                  (json_int_t)v->fn, (json_int_t)v->tp));
    json_object_set_new(o, "roc", roc);
    json_object_set_new(o, "pr", pr);
    json_object_set_new(o, "mistakes",
                        json_pack("{s:o,s:o}", "false_positives", mistakes_json(r, r->fp, r->nfp),
                                  "false_negatives", mistakes_json(r, r->fn, r->nfn)));
    json_object_set_new(o, "training_log", r->log_path ? jstr(r->log_path) : json_null());
    json_object_set_new(o, "report", report ? jstr(report) : json_null());
    json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
    fputc('\n', stdout);
    json_decref(o);
}

static const char *num(char *buf, size_t len, double x)
{
    if (isfinite(x))
        snprintf(buf, len, "%.4f", x);
    else
        snprintf(buf, len, "n/a");
    return buf;
}

static void print_table(const ev_result *r)
{
    const nt_metric_values *v = &r->v;
    const nt_model_meta *mm   = r->meta;
    char **cn                 = r->ds->class_names;
    char a[32], b[32];
    printf("model        %s (%dx%d, %s)\n", r->model_path, mm->cfg.img_size, mm->cfg.img_size,
           nt_preprocess_name(mm->preprocess));
    printf("data         %s\n", r->ds->root);
    printf("images       %lld: %s %lld, %s %lld", (long long)v->n, cn[0], (long long)v->neg, cn[1],
           (long long)v->pos);
    if (r->nskipped) printf("; %d skipped (unreadable)", r->nskipped);
    printf("\nthreshold    %.4g", (double)r->threshold);
    if (r->threshold_given)
        printf(" (--threshold; the model stores %.4g)\n", (double)mm->threshold);
    else
        printf(" (stored in the model); p >= threshold is %s\n", cn[1]);
    printf("\naccuracy     %s\n", num(a, sizeof(a), v->accuracy));
    printf("sensitivity  %s   (recall of %s)\n", num(a, sizeof(a), v->recall), cn[1]);
    printf("specificity  %s\n", num(a, sizeof(a), v->specificity));
    printf("precision    %s\n", num(a, sizeof(a), v->precision));
    printf("F1           %s\n", num(a, sizeof(a), v->f1));
    printf("ROC AUC      %s", num(a, sizeof(a), v->auc));
    if (isfinite(r->auc_lo))
        printf("   [%s, %s] %.0f%% bootstrap interval, %d resamples", num(a, sizeof(a), r->auc_lo),
               num(b, sizeof(b), r->auc_hi), 100 * r->ci_level, r->boot);
    printf("\navg prec.    %s\n", num(a, sizeof(a), r->ap));
    printf("loss         %s\n", num(a, sizeof(a), v->loss));
    // Confusion matrix: rows the true class, columns the prediction.
    int w = 9;
    for (int c = 0; c < 2; c++)
        if ((int)strlen(cn[c]) + 5 > w) w = (int)strlen(cn[c]) + 5;
    char h0[80], h1[80];
    snprintf(h0, sizeof(h0), "pred %s", cn[0]);
    snprintf(h1, sizeof(h1), "pred %s", cn[1]);
    printf("\nconfusion matrix (rows: true class, columns: predicted)\n");
    printf("  %-*s  %*s  %*s\n", w, "", w + 5, h0, w + 5, h1);
    printf("  %-*s  %*lld (TN)  %*lld (FP)\n", w, cn[0], w, (long long)v->tn, w, (long long)v->fp);
    printf("  %-*s  %*lld (FN)  %*lld (TP)\n", w, cn[1], w, (long long)v->fn, w, (long long)v->tp);
}

// ---- the command ----

int cmd_eval(int argc, char **argv)
{
    eval_opts o    = {.resize         = "area",
                      .threshold      = -1,
                      .max_bad_frac   = 0.01,
                      .batch          = 32,
                      .loader_threads = 1,
                      .boot           = 1000,
                      .mistakes       = 6};
    cli_opt opts[] = {
        {"model", OPT_STR, &o.model, 0, 0, "FILE", "model file (default " DEFAULT_MODEL ")"},
        {"data", OPT_STR, &o.data, 0, 0, "DIR|s3://B/P/",
         "labelled images in two class folders (required)"},
        {"json", OPT_FLAG, &o.json, 0, 0, NULL,
         "print one JSON object (metrics, confusion, ROC and PR points)"},
        {"report", OPT_STR, &o.report, 0, 0, "FILE.html", "write a self-contained HTML report"},
        {"csv", OPT_STR, &o.csv, 0, 0, "FILE", "a run's log.csv: training curves in the report"},
        {"run", OPT_STR, &o.run, 0, 0, "DIR", "a run folder: the same as --csv DIR/log.csv"},
        {"threshold", OPT_FLOAT, &o.threshold, 0, 1, "T",
         "decision threshold (default: the model's)"},
        {"batch", OPT_INT, &o.batch, 1, 4096, "N", "images per forward pass, default 32"},
        {"threads", OPT_INT, &o.threads, 0, 1024, "N", "compute threads, default all CPUs"},
        {"dtype", OPT_STR, &o.dtype, 0, 0, "f32|bf16",
         "compute in f32 or bf16 (AVX512_BF16, on AMX tiles where present); default $PNEUMO_DTYPE, "
         "else f32"},
        {"loader-threads", OPT_INT, &o.loader_threads, 1, 64, "N", "image loader threads (1)"},
        {"resize", OPT_STR, &o.resize, 0, 0, "area|bilinear|nearest",
         "resizing, as pneumo train --resize (area)"},
        {"boot", OPT_INT, &o.boot, 0, 100000, "N",
         "bootstrap resamples for the AUC interval (1000; 0: none)"},
        {"seed", OPT_FLOAT, &o.seed, 0, 9007199254740992.0, "N", "bootstrap seed (0)"},
        {"mistakes", OPT_INT, &o.mistakes, 0, 100, "N",
         "most confident mistakes of each kind in the report and JSON (6)"},
        {"max-bad-frac", OPT_FLOAT, &o.max_bad_frac, 0, 1, "F",
         "fail when more than F of the images cannot be read (0.01)"},
    };
    cli_cmd cmd = {CMD,
                   "--data DIR|s3://... [--model FILE] [--json] [--report FILE.html] [options]",
                   "Evaluate a model on labelled class folders: accuracy, sensitivity, "
                   "specificity, precision, F1, ROC AUC with a bootstrap interval, confusion "
                   "matrix.",
                   opts,
                   (int)(sizeof(opts) / sizeof(opts[0])),
                   0,
                   0};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if ((rc = cli_check_dtype(CMD, o.dtype))) return rc;
    if (!o.data) return cli_fail(CMD, EXIT_USAGE, "--data DIR|s3://bucket/prefix/ is required");
    if (o.csv && o.run) return cli_fail(CMD, EXIT_USAGE, "give --csv or --run, not both");
    if (!o.model) {
        if (access(DEFAULT_MODEL, R_OK) != 0)
            return cli_fail(CMD, EXIT_USAGE,
                            "no --model given and the default %s is not here; train one or "
                            "pass --model FILE",
                            DEFAULT_MODEL);
        o.model = DEFAULT_MODEL;
    }
    nd_resize resize;
    if (nd_resize_parse(NULL, o.resize, &resize) != NT_OK)
        return cli_fail(CMD, EXIT_USAGE, "--resize expects area, bilinear or nearest, got \"%s\"",
                        o.resize);
    char log_path[4200] = "";
    if (o.csv) snprintf(log_path, sizeof(log_path), "%s", o.csv);
    if (o.run) snprintf(log_path, sizeof(log_path), "%s/log.csv", o.run);

    nt_ctx *ctx = cli_ctx_dtype(CMD, o.threads, (unsigned long long)o.seed, o.dtype);
    if (!ctx) return EXIT_FAIL;
    nt_model *m = NULL;
    nt_model_meta meta;
    nd_s3 *s3      = NULL;
    nd_dataset *ds = NULL;
    nd_loader *ld  = NULL;
    nt_metrics *mt = NULL;
    nt_tensor x    = {0};
    float *lab = NULL, *probs = NULL, *prob = NULL;
    int *idx = NULL, *skipped = NULL;
    ev_point *curve = NULL;
    ev_mistake *fps = NULL, *fns = NULL;
    ev_log log     = {0};
    FILE *rf       = NULL;
    char tmp[4200] = "";
    int tmp_made   = 0;
    rc             = EXIT_FAIL;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        cli_fail(CMD, EXIT_FAIL, __VA_ARGS__);                                                     \
        goto out;                                                                                  \
    } while (0)

    // Everything that can fail fast does so before the images are read.
    if (log_path[0] && ev_log_read(ctx, log_path, &log) != NT_OK)
        FAIL("--%s: %s", o.csv ? "csv" : "run", nt_ctx_errmsg(ctx));
    if (o.report) {
        snprintf(tmp, sizeof(tmp), "%s.tmp", o.report);
        if (!(rf = fopen(tmp, "w"))) FAIL("cannot write %s: %s", tmp, strerror(errno));
        tmp_made = 1;
    }
    if (nt_model_load_file(ctx, o.model, &m, &meta) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    if (!strncmp(o.data, "s3://", 5) && nd_s3_new(ctx, NULL, &s3) != NT_OK)
        FAIL("%s", nt_ctx_errmsg(ctx));
    if (nd_dataset_open(ctx, o.data, s3, &ds, NULL) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    if (ds->nclasses != 2)
        FAIL("--data %s: expected 2 class folders (e.g. NORMAL, PNEUMONIA), as the model has, "
             "found %d",
             o.data, ds->nclasses);
    if (strcmp(ds->class_names[0], meta.class_names[0]) ||
        strcmp(ds->class_names[1], meta.class_names[1]))
        fprintf(stderr,
                "pneumo eval: warning: the data's classes are %s, %s but the model's are %s, "
                "%s; evaluating by position (%s is the positive class)\n",
                ds->class_names[0], ds->class_names[1], meta.class_names[0], meta.class_names[1],
                ds->class_names[1]);

    // Inference over the data set in its order; idx says which item each row is.
    nd_loader_opts lo;
    nd_loader_opts_default(&lo);
    lo.img_size     = meta.cfg.img_size;
    lo.resize       = resize;
    lo.batch        = o.batch;
    lo.threads      = o.loader_threads;
    lo.shuffle      = 0;
    lo.cache        = 0;
    lo.preprocess   = meta.preprocess;
    lo.max_bad_frac = o.max_bad_frac;
    if (nd_loader_new(ctx, ds, &lo, &ld) != NT_OK || nt_metrics_new(ctx, &mt) != NT_OK)
        FAIL("%s", nt_ctx_errmsg(ctx));
    int S          = meta.cfg.img_size;
    int64_t shp[4] = {o.batch, S, S, 3};
    lab            = malloc(sizeof(float) * (size_t)o.batch);
    probs          = malloc(sizeof(float) * (size_t)o.batch);
    idx            = malloc(sizeof(int) * (size_t)o.batch);
    prob           = malloc(sizeof(float) * (size_t)ds->n);
    skipped        = malloc(sizeof(int) * (size_t)ds->n);
    if (nt_tensor_new(ctx, 4, shp, &x) != NT_OK || !lab || !probs || !idx || !prob || !skipped)
        FAIL("out of memory for a batch of %d", o.batch);
    for (int i = 0; i < ds->n; i++)
        prob[i] = NAN;
    int tty = cli_isatty(stderr), done = 0;
    double t0 = now_s();
    if (nd_loader_start_epoch(ld, 0) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    for (int n;;) {
        if (nd_loader_next(ld, &x, lab, idx, &n) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
        if (n == 0) break;
        nt_tensor xb = x;
        xb.shape[0]  = n;
        double loss;
        if (nt_model_forward(m, &xb, 0, 0) != NT_OK ||
            nt_model_loss(m, lab, NULL, &loss, probs, NULL) != NT_OK ||
            nt_metrics_add(mt, probs, lab, n, loss) != NT_OK)
            FAIL("%s", nt_ctx_errmsg(ctx));
        for (int k = 0; k < n; k++)
            prob[idx[k]] = probs[k];
        done += n;
        if (tty)
            fprintf(stderr, "\reval: %d/%d images, %.1f img/s", done, ds->n, done / (now_s() - t0));
    }
    if (tty) fputc('\n', stderr);
    if (nt_metrics_count(mt) == 0) FAIL("--data %s: no image could be read", o.data);

    ev_result r = {.model_path      = o.model,
                   .meta            = &meta,
                   .ds              = ds,
                   .skipped         = skipped,
                   .threshold       = o.threshold >= 0 ? (float)o.threshold : meta.threshold,
                   .threshold_given = o.threshold >= 0,
                   .ci_level        = CI_LEVEL,
                   .boot            = o.boot,
                   .auc_lo          = NAN,
                   .auc_hi          = NAN,
                   .log_path        = log_path[0] ? log_path : NULL,
                   .log             = log_path[0] ? &log : NULL,
                   .kermany         = is_kermany(ds)};
    for (int i = 0; i < ds->n; i++)
        if (isnan(prob[i])) skipped[r.nskipped++] = i;
    for (int i = 0; i < r.nskipped && i < MAX_LISTED; i++)
        fprintf(stderr,
                "pneumo eval: warning: skipped %s (cannot be read or decoded; "
                "PNEUMO_VERBOSE=1 says why)\n",
                ds->items[skipped[i]].source);
    if (r.nskipped > MAX_LISTED)
        fprintf(stderr, "pneumo eval: warning: ... and %d more skipped\n", r.nskipped - MAX_LISTED);
    nt_metrics_compute(mt, r.threshold, &r.v);
    if (o.boot >= 2 && isfinite(r.v.auc))
        nt_metrics_auc_ci(mt, o.boot, (uint64_t)o.seed, CI_LEVEL, &r.auc_lo, &r.auc_hi);
    const float *mp, *my;
    nt_metrics_data(mt, &mp, &my);
    curve = make_curve(mp, my, nt_metrics_count(mt), &r.ncurve, &r.ap);
    fps   = pick_mistakes(ds, prob, r.threshold, 0, o.mistakes, &r.nfp);
    fns   = pick_mistakes(ds, prob, r.threshold, 1, o.mistakes, &r.nfn);
    if (!curve || !fps || !fns) FAIL("out of memory for the curves of %d images", ds->n);
    r.curve = curve, r.fp = fps, r.fn = fns;

    if (rf) {
        // Atomic: the whole report goes to FILE.tmp, which replaces FILE only when complete.
        int bad = ev_report_write(rf, &r, ctx, s3, THUMB_PX) != 0 || fflush(rf) != 0 ||
                  fsync(fileno(rf)) != 0;
        int err = errno;
        if (fclose(rf) != 0 && !bad) bad = 1, err = errno;
        rf = NULL;
        if (bad) FAIL("cannot write %s: %s", tmp, strerror(err));
        if (rename(tmp, o.report) != 0)
            FAIL("cannot rename %s to %s: %s", tmp, o.report, strerror(errno));
        tmp_made = 0;
    }
    if (o.json)
        print_json(&r, o.report);
    else
        print_table(&r);
    fflush(stdout);

    if (o.report)
        fprintf(o.json ? stderr : stdout, "%sreport: %s\n", o.json ? "pneumo eval: " : "\n",
                o.report);
    rc = EXIT_OK;
out:
#undef FAIL
    if (rf) fclose(rf);
    if (tmp_made) remove(tmp);
    ev_log_free(&log);
    free(curve), free(fps), free(fns);
    free(lab), free(probs), free(idx), free(prob), free(skipped);
    nt_tensor_free(&x);
    nt_metrics_free(mt);
    nd_loader_free(ld);
    nd_dataset_free(ds);
    nd_s3_free(s3);
    nt_model_free(m);
    nt_ctx_free(ctx);
    return rc;
}
