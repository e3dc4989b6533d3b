/*
 * train.c: `pneumo train`: fine-tunes the Keras ResNet50 on class folders (local or S3) with
 * Keras's semantics: ImageDataGenerator augmentation, class-weighted BCE, EarlyStopping,
 * ModelCheckpoint (best and last), ReduceLROnPlateau, CSVLogger columns, TensorBoard scalars,
 * and a decision threshold chosen on validation data. `--resume` continues bit-exactly from the
 * last checkpoint (same thread count); Ctrl-C finishes the step, saves and exits 130.
 * Glue only: the math is in libnet, the data in data/. Tests: tests/train.sh.
 */
#include "cmd/cli.h"
#include "cmd/tblog.h"
#include "data/dataset.h"
#include "weights/nw.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CKPT_NAME "last.ckpt.safetensors"
#define BEST_NAME "best.safetensors"

static volatile sig_atomic_t g_stop = 0;

static void on_sigint(int sig)
{
    g_stop = 1;
    signal(sig, SIG_DFL); // a second Ctrl-C aborts at once
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- options ----

typedef struct train_opts {
    const char *data, *val, *weights, *unfreeze, *preprocess, *optimizer, *class_weight, *monitor,
        *out, *resume, *fill_mode, *resize, *device, *group_regex, *dtype;
    double val_split, lr, momentum, weight_decay, dropout, min_delta, reduce_factor, lr_min,
        rotation, wshift, hshift, shear, zoom, cval, max_bad_frac, target_sens, seed;
    int img_size, batch, epochs, threads, loader_threads, head1, head2, nesterov, es_patience,
        restore_best, rlr_patience, rlr_cooldown, hflip, json, fp16, no_cache, width_div;
} train_opts;

static void opts_default(train_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->weights        = "none";
    o->unfreeze       = "20";
    o->optimizer      = "adam";
    o->class_weight   = "balanced";
    o->monitor        = "val_loss";
    o->fill_mode      = "nearest";
    o->resize         = "area";
    o->device         = "cpu";
    o->val_split      = -1;
    o->lr             = -1;
    o->dropout        = 0.5;
    o->reduce_factor  = 0.1;
    o->max_bad_frac   = 0.01;
    o->img_size       = 224;
    o->batch          = 32;
    o->epochs         = 10;
    o->loader_threads = 1;
    o->head1          = 256;
    o->head2          = 128;
    o->rlr_patience   = 0;
    o->es_patience    = 0;
    o->width_div      = 1;
}

#define NOPTS 49
static int make_opts(train_opts *o, cli_opt *t)
{
    cli_opt a[NOPTS] = {
        {"data", OPT_STR, &o->data, 0, 0, "DIR|s3://B/P/", "training images in class folders"},
        {"val", OPT_STR, &o->val, 0, 0, "DIR|s3://B/P/", "validation images (else --val-split)"},
        {"val-split", OPT_FLOAT, &o->val_split, 0, 0.9, "F",
         "carve F of --data as validation, grouped by patient (default 0.1 without --val)"},
        {"group-regex", OPT_STR, &o->group_regex, 0, 0, "ERE",
         "patient group of a file name for --val-split (default: Kermany names)"},
        {"img-size", OPT_INT, &o->img_size, 32, 1024, "PX", "input size, default 224"},
        {"batch", OPT_INT, &o->batch, 1, 4096, "N", "batch size, default 32"},
        {"epochs", OPT_INT, &o->epochs, 1, 100000, "N", "epochs, default 10"},
        {"seed", OPT_FLOAT, &o->seed, 0, 9007199254740992.0, "N",
         "seed (order, augmentation, "
         "dropout, init), default 0"},
        {"threads", OPT_INT, &o->threads, 0, 1024, "N", "compute threads, default all CPUs"},
        {"dtype", OPT_STR, &o->dtype, 0, 0, "f32|bf16",
         "compute type (default $PNEUMO_DTYPE, else f32); bf16: convolutions and their "
         "gradients from bf16 products, float32 master weights, BN and optimizer"},
        {"loader-threads", OPT_INT, &o->loader_threads, 1, 64, "N", "image loader threads (1)"},
        {"device", OPT_STR, &o->device, 0, 0, "cpu|cuda", "where to compute, default cpu"},
        {"weights", OPT_STR, &o->weights, 0, 0, "none|FILE.h5|FILE.safetensors",
         "start from Keras ImageNet .h5 weights or a pneumo model (default none)"},
        {"unfreeze", OPT_STR, &o->unfreeze, 0, 0, "N|all",
         "trainable backbone layers from the end, plus the head (default 20)"},
        {"head1", OPT_INT, &o->head1, 1, 65536, "N", "first head Dense units (256)"},
        {"head2", OPT_INT, &o->head2, 1, 65536, "N", "second head Dense units (128)"},
        {"dropout", OPT_FLOAT, &o->dropout, 0, 0.99, "RATE", "head dropout rate (0.5)"},
        {"preprocess", OPT_STR, &o->preprocess, 0, 0, "rescale|caffe|torch",
         "input preprocessing (default: the weights' own; rescale for none)"},
        {"optimizer", OPT_STR, &o->optimizer, 0, 0, "adam|sgd", "default adam"},
        {"lr", OPT_FLOAT, &o->lr, 1e-12, 10, "LR", "learning rate (adam 1e-3, sgd 1e-2)"},
        {"momentum", OPT_FLOAT, &o->momentum, 0, 0.999, "M", "SGD momentum (0)"},
        {"nesterov", OPT_FLAG, &o->nesterov, 0, 0, NULL, "SGD with Nesterov momentum"},
        {"weight-decay", OPT_FLOAT, &o->weight_decay, 0, 1, "WD", "decoupled weight decay (0)"},
        {"class-weight", OPT_STR, &o->class_weight, 0, 0, "balanced|none|0:W0,1:W1",
         "per-class loss weights (default balanced: n / (2 count))"},
        {"rotation-range", OPT_FLOAT, &o->rotation, 0, 180, "DEG", "augmentation: rotation"},
        {"width-shift-range", OPT_FLOAT, &o->wshift, 0, 4096, "F|PX", "augmentation"},
        {"height-shift-range", OPT_FLOAT, &o->hshift, 0, 4096, "F|PX", "augmentation"},
        {"shear-range", OPT_FLOAT, &o->shear, 0, 90, "DEG", "augmentation"},
        {"zoom-range", OPT_FLOAT, &o->zoom, 0, 0.99, "Z", "augmentation: zoom in [1-Z, 1+Z]"},
        {"horizontal-flip", OPT_FLAG, &o->hflip, 0, 0, NULL, "augmentation: flip with p 0.5"},
        {"fill-mode", OPT_STR, &o->fill_mode, 0, 0, "nearest|constant|reflect|wrap", "(nearest)"},
        {"cval", OPT_FLOAT, &o->cval, 0, 255, "V", "fill value for constant (0)"},
        {"resize", OPT_STR, &o->resize, 0, 0, "area|bilinear|nearest", "resizing (area)"},
        {"monitor", OPT_STR, &o->monitor, 0, 0, "METRIC",
         "val_loss (default), val_auc, val_accuracy, ... for the callbacks"},
        {"early-stopping-patience", OPT_INT, &o->es_patience, 0, 100000, "N",
         "stop after N epochs without improvement (0: off)"},
        {"min-delta", OPT_FLOAT, &o->min_delta, 0, 1e9, "D", "EarlyStopping min_delta (0)"},
        {"restore-best-weights", OPT_FLAG, &o->restore_best, 0, 0, NULL,
         "end with the best epoch's weights"},
        {"reduce-lr-factor", OPT_FLOAT, &o->reduce_factor, 0, 0.999, "F",
         "ReduceLROnPlateau (0.1)"},
        {"reduce-lr-patience", OPT_INT, &o->rlr_patience, 0, 100000, "N",
         "ReduceLROnPlateau patience (0: off)"},
        {"reduce-lr-cooldown", OPT_INT, &o->rlr_cooldown, 0, 100000, "N", "cooldown epochs (0)"},
        {"min-lr", OPT_FLOAT, &o->lr_min, 0, 10, "LR", "ReduceLROnPlateau floor (0)"},
        {"target-sensitivity", OPT_FLOAT, &o->target_sens, 0, 1, "S",
         "choose the threshold for this sensitivity (default: Youden's J)"},
        {"max-bad-frac", OPT_FLOAT, &o->max_bad_frac, 0, 1, "F",
         "stop when more than F of the images fail to load (0.01)"},
        {"out", OPT_STR, &o->out, 0, 0, "DIR", "run folder (default runs/DATE-TIME)"},
        {"resume", OPT_STR, &o->resume, 0, 0, "DIR", "continue the run in DIR exactly"},
        {"json", OPT_FLAG, &o->json, 0, 0, NULL, "one JSON record per epoch on stdout"},
        {"fp16", OPT_FLAG, &o->fp16, 0, 0, NULL, "store best.safetensors as float16"},
        {"no-cache", OPT_FLAG, &o->no_cache, 0, 0, NULL, "decode every epoch (less memory)"},
        {"width-div", OPT_INT, &o->width_div, 1, 64, "K",
         "divide every channel count by K (small test networks; default 1)"},
    };
    memcpy(t, a, sizeof(a));
    return NOPTS;
}

// ---- small helpers ----

static int mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static int parse_class_weight(const char *s, const nd_dataset *ds, float cw[2])
{
    if (strcmp(s, "none") == 0) {
        cw[0] = cw[1] = 1.0f;
        return 0;
    }
    if (strcmp(s, "balanced") == 0) {
        for (int c = 0; c < 2; c++)
            cw[c] =
                ds->class_counts[c] ? (float)((double)ds->n / (2.0 * ds->class_counts[c])) : 1.0f;
        return 0;
    }
    double w0, w1;
    char tail;
    if (sscanf(s, "0:%lf,1:%lf%c", &w0, &w1, &tail) == 2 && w0 >= 0 && w1 >= 0 && w0 < 1e6 &&
        w1 < 1e6) {
        cw[0] = (float)w0, cw[1] = (float)w1;
        return 0;
    }
    return cli_fail("train", EXIT_USAGE,
                    "--class-weight expects balanced, none or 0:W0,1:W1, got \"%s\"", s);
}

static nt_mode monitor_mode(const char *m)
{
    return strstr(m, "loss") ? NT_MODE_MIN : NT_MODE_MAX;
}

typedef struct epoch_logs {
    nt_metric_values tr, va;
    double lr;
} epoch_logs;

// The value named `name` ("val_auc", "loss", ...), NAN when unknown.
static double log_value(const epoch_logs *l, const char *name)
{
    const nt_metric_values *v = strncmp(name, "val_", 4) == 0 ? &l->va : &l->tr;
    const char *k             = strncmp(name, "val_", 4) == 0 ? name + 4 : name;
    if (!strcmp(k, "loss")) return v->loss;
    if (!strcmp(k, "accuracy")) return v->accuracy;
    if (!strcmp(k, "auc")) return v->auc;
    if (!strcmp(k, "precision")) return v->precision;
    if (!strcmp(k, "recall")) return v->recall;
    return NAN;
}

static int known_monitor(const char *m)
{
    static const char *ok[] = {"loss",          "accuracy",  "auc",          "precision",
                               "recall",        "val_loss",  "val_accuracy", "val_auc",
                               "val_precision", "val_recall"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!strcmp(m, ok[i])) return 1;
    return 0;
}

// Keras's CSVLogger: epoch, then the log keys sorted.
static const char *csv_header =
    "epoch,accuracy,auc,learning_rate,loss,precision,recall,val_accuracy,val_auc,val_loss,"
    "val_precision,val_recall\n";

static void csv_row(FILE *f, int epoch, const epoch_logs *l)
{
    fprintf(f, "%d,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n", epoch, l->tr.accuracy,
            l->tr.auc, l->lr, l->tr.loss, l->tr.precision, l->tr.recall, l->va.accuracy, l->va.auc,
            l->va.loss, l->va.precision, l->va.recall);
    fflush(f);
}

// Without a terminal (a log file, nohup) the bar would be one endless line; instead one plain
// line per PROGRESS_LOG_S seconds, so that a long epoch still shows it is moving.
#define PROGRESS_LOG_S 60.0

// Progress within an epoch: a Keras-like bar redrawn in place on a terminal (epoch 0), else one
// plain line that names the epoch (1-based, of epochs).
static void progress(int epoch, int epochs, int step, int steps, double elapsed,
                     const nt_metrics *mt, int images)
{
    nt_metric_values v;
    nt_metrics_compute(mt, 0.5f, &v);
    const double eta = step > 0 && steps > step ? elapsed / step * (steps - step) : 0;
    const double ips = elapsed > 0 ? images / elapsed : 0.0;
    if (epoch > 0) {
        fprintf(stderr,
                "epoch %d/%d step %d/%d - %.0fs - ETA %d:%02d - loss %.4f - accuracy %.4f - "
                "%.1f img/s\n",
                epoch, epochs, step, steps, elapsed, (int)eta / 60, (int)eta % 60, v.loss,
                v.accuracy, ips);
    } else {
        int width = 30, done = steps > 0 ? step * width / steps : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < done ? '=' : i == done ? '>' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%4d/%-4d [%s] - ETA %3d:%02d - loss %.4f - accuracy %.4f - %.1f img/s ",
                step, steps, bar, (int)eta / 60, (int)eta % 60, v.loss, v.accuracy, ips);
    }
    fflush(stderr);
}

// ---- run state and checkpoints ----

typedef struct run {
    train_opts o;
    nt_ctx *ctx;
    nt_model *m;
    nt_model_meta meta;
    nt_optim *opt;
    nt_early_stopping es;
    nt_reduce_lr rlr;
    double ckpt_best; // ModelCheckpoint's best monitored value
    int epoch, step_in_epoch;
    int64_t global_step;
    double lr;
    nt_metrics *trm; // training metrics of the epoch in progress
    float **best_w;  // restore_best_weights snapshot (one buffer per parameter), or NULL
    char argv_json[8192];
    char dir[1024];
} run;

static int snapshot_best(run *r)
{
    int np = nt_model_num_params(r->m);
    if (!r->best_w && !(r->best_w = calloc((size_t)np, sizeof(float *)))) return -1;
    for (int i = 0; i < np; i++) {
        nt_param p;
        nt_model_param(r->m, i, &p);
        size_t b = (size_t)nt_tensor_numel(p.value) * sizeof(float);
        if (!r->best_w[i] && !(r->best_w[i] = malloc(b))) return -1;
        memcpy(r->best_w[i], p.value->data, b);
    }
    return 0;
}

static void restore_best(run *r)
{
    for (int i = 0; r->best_w && i < nt_model_num_params(r->m); i++) {
        nt_param p;
        nt_model_param(r->m, i, &p);
        memcpy(p.value->data, r->best_w[i], (size_t)nt_tensor_numel(p.value) * sizeof(float));
    }
}

// Writes DIR/last.ckpt.safetensors: the model, the optimizer state, the restore-best snapshot,
// the partial epoch's metrics, and the counters and callback state as metadata.
static nt_status save_checkpoint(run *r)
{
    int ns = nt_optim_num_state(r->opt), np = nt_model_num_params(r->m);
    int nb            = r->best_w ? np : 0;
    nt_st_entry *ex   = calloc((size_t)(ns + nb + 2), sizeof(*ex));
    char(*names)[160] = calloc((size_t)(ns + nb), sizeof(*names));
    nt_tensor *views  = calloc((size_t)(ns + 1), sizeof(*views));
    if (!ex || !names || !views) {
        free(ex), free(names), free(views);
        return nt_ctx_seterr(r->ctx, NT_ENOMEM, "checkpoint: out of memory");
    }
    int k = 0;
    for (int i = 0; i < ns; i++, k++) {
        nt_optim_state_at(r->opt, i, names[k], sizeof(names[k]), &views[i]);
        ex[k] = (nt_st_entry){names[k], views[i].ndim, views[i].shape, views[i].data};
    }
    for (int i = 0; i < nb; i++, k++) {
        nt_param p;
        nt_model_param(r->m, i, &p);
        snprintf(names[k], sizeof(names[k]), "best_weights/%s", p.name);
        ex[k] = (nt_st_entry){names[k], p.value->ndim, p.value->shape, r->best_w[i]};
    }
    const float *pp, *pl;
    nt_metrics_data(r->trm, &pp, &pl);
    int64_t nm        = nt_metrics_count(r->trm);
    static float one  = 0;
    int64_t mshape[1] = {nm};
    ex[k++]           = (nt_st_entry){"train_epoch/probs", 1, mshape, nm ? pp : &one};
    ex[k++]           = (nt_st_entry){"train_epoch/labels", 1, mshape, nm ? pl : &one};
    nt_metric_values mv;
    nt_metrics_compute(r->trm, 0.5f, &mv);
    char v[12][96];
    snprintf(v[0], sizeof(v[0]), "%d", r->epoch);
    snprintf(v[1], sizeof(v[1]), "%d", r->step_in_epoch);
    snprintf(v[2], sizeof(v[2]), "%lld", (long long)r->global_step);
    snprintf(v[3], sizeof(v[3]), "%.17g", r->lr);
    snprintf(v[4], sizeof(v[4]), "%.17g", r->ckpt_best);
    snprintf(v[5], sizeof(v[5]), "%.17g %d %d %d", r->es.best, r->es.wait, r->es.best_epoch,
             r->es.stopped_epoch);
    snprintf(v[6], sizeof(v[6]), "%.17g %d %d", r->rlr.best, r->rlr.wait, r->rlr.cooldown_counter);
    snprintf(v[7], sizeof(v[7]), "%lld", (long long)nt_optim_iterations(r->opt));
    snprintf(v[8], sizeof(v[8]), "%.17g", isnan(mv.loss) ? 0.0 : mv.loss);
    snprintf(v[9], sizeof(v[9]), "%d", nt_ctx_nthreads(r->ctx));
    nt_kv kv[11] = {{"ckpt_epoch", v[0]},       {"ckpt_step_in_epoch", v[1]},
                    {"ckpt_global_step", v[2]}, {"ckpt_lr", v[3]},
                    {"ckpt_best", v[4]},        {"ckpt_early_stopping", v[5]},
                    {"ckpt_reduce_lr", v[6]},   {"ckpt_optimizer_iterations", v[7]},
                    {"ckpt_train_loss", v[8]},  {"ckpt_threads", v[9]},
                    {"ckpt_argv", r->argv_json}};
    char path[1100];
    snprintf(path, sizeof(path), "%s/%s", r->dir, CKPT_NAME);
    nt_status s = nt_model_save_file_ex(r->m, &r->meta, path, 0, ex, k, kv, 11);
    free(ex), free(names), free(views);
    return s;
}

static int meta_num(const nt_st_file *f, const char *key, double *out)
{
    const char *s = nt_st_meta(f, key);
    char *end;
    if (!s) return -1;
    *out = strtod(s, &end);
    return end == s ? -1 : 0;
}

// Restores counters, callbacks, optimizer state, snapshot and partial metrics from f.
static nt_status load_checkpoint_state(run *r, const nt_st_file *f, const char *path)
{
    double e, st, gs, lr, best, it, loss, thr;
    if (meta_num(f, "ckpt_epoch", &e) || meta_num(f, "ckpt_step_in_epoch", &st) ||
        meta_num(f, "ckpt_global_step", &gs) || meta_num(f, "ckpt_lr", &lr) ||
        meta_num(f, "ckpt_best", &best) || meta_num(f, "ckpt_optimizer_iterations", &it) ||
        meta_num(f, "ckpt_train_loss", &loss) || meta_num(f, "ckpt_threads", &thr))
        return nt_ctx_seterr(
            r->ctx, NT_EFORMAT,
            "checkpoint %s: missing training state (not a pneumo train checkpoint)", path);
    r->epoch = (int)e, r->step_in_epoch = (int)st, r->global_step = (int64_t)gs;
    r->lr = lr, r->ckpt_best = best;
    const char *es = nt_st_meta(f, "ckpt_early_stopping"), *rl = nt_st_meta(f, "ckpt_reduce_lr");
    if (!es ||
        sscanf(es, "%lf %d %d %d", &r->es.best, &r->es.wait, &r->es.best_epoch,
               &r->es.stopped_epoch) != 4 ||
        !rl || sscanf(rl, "%lf %d %d", &r->rlr.best, &r->rlr.wait, &r->rlr.cooldown_counter) != 3)
        return nt_ctx_seterr(r->ctx, NT_EFORMAT, "checkpoint %s: bad callback state", path);
    if ((int)thr != nt_ctx_nthreads(r->ctx))
        fprintf(stderr,
                "pneumo train: warning: the run used %d threads, now %d: results will "
                "not be bit-identical to an uninterrupted run\n",
                (int)thr, nt_ctx_nthreads(r->ctx));
    nt_optim_set_lr(r->opt, (float)r->lr);
    nt_optim_set_iterations(r->opt, (int64_t)it);
    for (int i = 0; i < nt_optim_num_state(r->opt); i++) {
        char name[160];
        nt_tensor v;
        nt_optim_state_at(r->opt, i, name, sizeof(name), &v);
        int j = nt_st_find(f, name);
        const int64_t *shape;
        const float *data;
        const char *nm, *dt;
        int nd;
        if (j < 0)
            return nt_ctx_seterr(r->ctx, NT_EFORMAT,
                                 "checkpoint %s: no optimizer state \"%s\" (was the run started "
                                 "with another --optimizer or --unfreeze?)",
                                 path, name);
        nt_st_tensor_at(f, j, &nm, &dt, &nd, &shape, &data);
        memcpy(v.data, data, (size_t)nt_tensor_numel(&v) * sizeof(float));
    }
    if (r->o.restore_best && nt_st_find(f, "best_weights/conv1_conv/kernel") >= 0) {
        if (snapshot_best(r)) return nt_ctx_seterr(r->ctx, NT_ENOMEM, "checkpoint: out of memory");
        for (int i = 0; i < nt_model_num_params(r->m); i++) {
            nt_param p;
            char name[200];
            nt_model_param(r->m, i, &p);
            snprintf(name, sizeof(name), "best_weights/%s", p.name);
            int j = nt_st_find(f, name);
            if (j < 0) continue;
            const int64_t *shape;
            const float *data;
            const char *nm, *dt;
            int nd;
            nt_st_tensor_at(f, j, &nm, &dt, &nd, &shape, &data);
            memcpy(r->best_w[i], data, (size_t)nt_tensor_numel(p.value) * sizeof(float));
        }
    }
    int jp = nt_st_find(f, "train_epoch/probs"), jl = nt_st_find(f, "train_epoch/labels");
    if (jp >= 0 && jl >= 0 && r->step_in_epoch > 0) {
        const int64_t *shape;
        const float *p, *l;
        const char *nm, *dt;
        int nd;
        nt_st_tensor_at(f, jp, &nm, &dt, &nd, &shape, &p);
        nt_st_tensor_at(f, jl, &nm, &dt, &nd, &shape, &l);
        if (shape[0] > 0) nt_metrics_add(r->trm, p, l, (int)shape[0], loss);
    }
    return NT_OK;
}

// ---- the command ----

static int argv_has(int argc, char **argv, const char *flag)
{
    size_t n = strlen(flag);
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], flag, n) && (argv[i][n] == 0 || argv[i][n] == '=')) return 1;
    return 0;
}

// Reads the stored command line of a run so that --resume continues with the same options.
static int resume_argv(const char *dir, json_t **arr)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/%s", dir, CKPT_NAME);
    nt_ctx *ctx = cli_ctx("train", 1, 0);
    nt_st_file *f;
    if (!ctx) return EXIT_FAIL;
    if (nt_st_open(ctx, path, &f) != NT_OK) {
        int rc = cli_fail("train", EXIT_FAIL, "--resume %s: %s", dir, nt_ctx_errmsg(ctx));
        nt_ctx_free(ctx);
        return rc;
    }
    const char *a = nt_st_meta(f, "ckpt_argv");
    json_error_t je;
    *arr = a ? json_loads(a, 0, &je) : NULL;
    nt_st_close(f);
    nt_ctx_free(ctx);
    if (!json_is_array(*arr))
        return cli_fail("train", EXIT_FAIL, "--resume %s: %s has no stored command line", dir,
                        CKPT_NAME);
    return 0;
}

static int validate(train_opts *o)
{
    if (!o->data)
        return cli_fail("train", EXIT_USAGE, "--data DIR|s3://bucket/prefix/ is required");
    if (o->val && o->val_split >= 0)
        return cli_fail("train", EXIT_USAGE, "give --val or --val-split, not both");
    if (!o->val && o->val_split < 0) o->val_split = 0.1;
    if (!o->val && o->val_split <= 0)
        return cli_fail("train", EXIT_USAGE,
                        "--val-split must be above 0 without --val (validation drives the "
                        "callbacks and the threshold)");
    if (strcmp(o->device, "cpu") != 0)
        return cli_fail("train", EXIT_USAGE,
                        "--device %s: this build trains on the CPU only (expected cpu)", o->device);
    if (strcmp(o->optimizer, "adam") && strcmp(o->optimizer, "sgd"))
        return cli_fail("train", EXIT_USAGE, "--optimizer expects adam or sgd, got \"%s\"",
                        o->optimizer);
    if (!known_monitor(o->monitor))
        return cli_fail("train", EXIT_USAGE,
                        "--monitor expects loss, accuracy, auc, precision or recall, with or "
                        "without val_, got \"%s\"",
                        o->monitor);
    if (o->lr < 0) o->lr = strcmp(o->optimizer, "adam") == 0 ? 1e-3 : 1e-2;
    return 0;
}

// Runs the validation set through the model in inference mode into mt (unweighted loss).
static nt_status validate_epoch(run *r, nd_loader *vl, nt_tensor *x, float *lab, float *probs,
                                nt_metrics *mt)
{
    nt_metrics_reset(mt);
    nt_status s = nd_loader_start_epoch(vl, 0);
    for (int n; s == NT_OK;) {
        s = nd_loader_next(vl, x, lab, NULL, &n);
        if (s != NT_OK || n == 0) break;
        nt_tensor xb = *x;
        xb.shape[0]  = n;
        double loss;
        s = nt_model_forward(r->m, &xb, 0, 0);
        if (s == NT_OK) s = nt_model_loss(r->m, lab, NULL, &loss, probs, NULL);
        if (s == NT_OK) s = nt_metrics_add(mt, probs, lab, n, loss);
    }
    return s;
}

int cmd_train(int argc, char **argv)
{
    run R;
    memset(&R, 0, sizeof(R));
    run *r = &R;
    cli_opt table[NOPTS];
    opts_default(&r->o);
    int nopts   = make_opts(&r->o, table);
    cli_cmd cmd = {"train",
                   "--data DIR|s3://... [options]",
                   "Fine-tune the Keras ResNet50 on class folders (NORMAL, PNEUMONIA).",
                   table,
                   nopts,
                   0,
                   0};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    json_t *stored = NULL;
    if (r->o.resume) {
        // Same options as the run had; only --epochs may change.
        int epochs = r->o.epochs, has_epochs = argv_has(argc, argv, "--epochs");
        const char *resume = r->o.resume;
        if ((rc = resume_argv(resume, &stored))) return rc;
        int sn    = (int)json_array_size(stored);
        char **sv = calloc((size_t)sn + 1, sizeof(char *));
        for (int i = 0; i < sn; i++)
            sv[i] = (char *)json_string_value(json_array_get(stored, (size_t)i));
        opts_default(&r->o);
        make_opts(&r->o, table);
        rc = cli_parse(&cmd, sn, sv, pos, &npos);
        free(sv);
        if (rc) {
            json_decref(stored);
            return rc < 0 ? EXIT_OK : rc;
        }
        if (has_epochs) r->o.epochs = epochs;
        r->o.resume  = resume;
        r->o.out     = resume;
        json_t *copy = json_deep_copy(stored);
        char *s      = json_dumps(copy, JSON_COMPACT);
        snprintf(r->argv_json, sizeof(r->argv_json), "%s", s ? s : "[]");
        free(s);
        json_decref(copy);
    } else {
        json_t *a = json_array();
        for (int i = 0; i < argc; i++)
            json_array_append_new(a, json_string(argv[i]));
        char *s = json_dumps(a, JSON_COMPACT);
        if (!s || strlen(s) >= sizeof(r->argv_json)) {
            free(s);
            json_decref(a);
            return cli_fail("train", EXIT_USAGE, "command line too long");
        }
        snprintf(r->argv_json, sizeof(r->argv_json), "%s", s);
        free(s);
        json_decref(a);
    }
    train_opts *o = &r->o;
    if ((rc = cli_check_dtype("train", o->dtype)) || (rc = validate(o))) {
        json_decref(stored);
        return rc;
    }
    int unfreeze;
    if ((rc = cli_parse_unfreeze("train", o->unfreeze, &unfreeze))) return rc;
    nd_fill fill;
    nd_resize resize;
    nt_ctx *ctx = r->ctx =
        cli_ctx_dtype("train", o->threads, (unsigned long long)o->seed, o->dtype);
    if (!ctx) return EXIT_FAIL;
    if (nd_fill_parse(ctx, o->fill_mode, &fill) != NT_OK ||
        nd_resize_parse(ctx, o->resize, &resize) != NT_OK) {
        rc = cli_fail("train", EXIT_USAGE, "%s", nt_ctx_errmsg(ctx));
        nt_ctx_free(ctx);
        return rc;
    }

    nd_dataset *all = NULL, *tr = NULL, *va = NULL;
    nd_loader *tl = NULL, *vl = NULL;
    nd_s3 *s3      = NULL;
    nt_metrics *vm = NULL;
    FILE *csv      = NULL;
    tb_writer *tb  = NULL;
    nt_tensor x    = {0};
    float *lab = NULL, *probs = NULL, *dl = NULL, *w = NULL;
    nt_st_file *ckf = NULL;
    nt_status s     = NT_OK;
    rc              = EXIT_FAIL;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        cli_fail("train", EXIT_FAIL, __VA_ARGS__);                                                 \
        goto out;                                                                                  \
    } while (0)

    // Data.
    if (!strncmp(o->data, "s3://", 5) || (o->val && !strncmp(o->val, "s3://", 5))) {
        if (nd_s3_new(ctx, NULL, &s3) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    }
    int ignored = 0;
    if (nd_dataset_open(ctx, o->data, s3, &all, &ignored) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    if (all->nclasses != 2)
        FAIL("--data %s: expected 2 class folders (e.g. NORMAL, PNEUMONIA), found %d", o->data,
             all->nclasses);
    if (o->val) {
        tr = all, all = NULL;
        if (nd_dataset_open(ctx, o->val, s3, &va, NULL) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    } else if (nd_dataset_split(ctx, all, o->val_split, (uint64_t)o->seed,
                                o->group_regex ? o->group_regex : ND_KERMANY_GROUPS, &tr,
                                &va) != NT_OK) {
        FAIL("%s", nt_ctx_errmsg(ctx));
    }
    printf("train: %d images (%s %d, %s %d); validation: %d (%s %d, %s %d)%s\n", tr->n,
           tr->class_names[0], tr->class_counts[0], tr->class_names[1], tr->class_counts[1], va->n,
           va->class_names[0], va->class_counts[0], va->class_names[1], va->class_counts[1],
           o->val ? "" : ", split by patient");
    float cw[2] = {1.0f, 1.0f};
    if ((rc = parse_class_weight(o->class_weight, tr, cw))) goto out;
    rc = EXIT_FAIL;
    printf("class weights: %s %.4f, %s %.4f\n", tr->class_names[0], (double)cw[0],
           tr->class_names[1], (double)cw[1]);

    // Model.
    char ckpath[1100] = "";
    nt_model_meta_default(&r->meta);
    if (o->resume) {
        snprintf(ckpath, sizeof(ckpath), "%s/%s", o->resume, CKPT_NAME);
        if (nt_model_load_file_ex(ctx, ckpath, 1, &r->m, &r->meta, &ckf) != NT_OK)
            FAIL("%s", nt_ctx_errmsg(ctx));
    } else {
        const char *wt = o->weights;
        size_t wl      = strlen(wt);
        int is_h5      = wl > 3 && !strcmp(wt + wl - 3, ".h5");
        if (strcmp(wt, "none") && !is_h5) {
            if (nt_model_load_file(ctx, wt, &r->m, &r->meta) != NT_OK)
                FAIL("--weights: %s", nt_ctx_errmsg(ctx));
            if (r->meta.cfg.img_size != o->img_size && argv_has(argc, argv, "--img-size"))
                FAIL("--img-size %d differs from the model's %d", o->img_size,
                     r->meta.cfg.img_size);
            o->img_size = r->meta.cfg.img_size;
        } else {
            r->meta.cfg.img_size  = o->img_size;
            r->meta.cfg.head1     = o->head1;
            r->meta.cfg.head2     = o->head2;
            r->meta.cfg.dropout   = (float)o->dropout;
            r->meta.cfg.width_div = o->width_div;
            r->meta.preprocess    = is_h5 ? NT_PRE_CAFFE : NT_PRE_RESCALE;
            s                     = nt_resnet50_new(ctx, &r->meta.cfg, &r->m);
            if (s == NT_OK) s = nt_model_init(r->m, NT_INIT_KERAS, (uint64_t)o->seed);
            nw_import_report rep;
            if (s == NT_OK && is_h5) s = nw_import_keras_h5(ctx, r->m, wt, &rep);
            if (s != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
        }
        if (o->preprocess &&
            nt_preprocess_parse(ctx, o->preprocess, &r->meta.preprocess) != NT_OK) {
            rc = cli_fail("train", EXIT_USAGE, "--%s", nt_ctx_errmsg(ctx));
            goto out;
        }
        snprintf(r->meta.class_names[0], sizeof(r->meta.class_names[0]), "%s", tr->class_names[0]);
        snprintf(r->meta.class_names[1], sizeof(r->meta.class_names[1]), "%s", tr->class_names[1]);
    }
    snprintf(r->meta.provenance, sizeof(r->meta.provenance), "pneumo %s train %.900s", NT_VERSION,
             r->argv_json);
    if (nt_model_set_trainable_last(r->m, unfreeze) != NT_OK) {
        rc = cli_fail("train", EXIT_USAGE, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    {
        int64_t trn, tot = nt_model_count_params(r->m, &trn), L = nt_model_num_layers(r->m);
        int first = -1, nt = 0;
        for (int i = 0; i < L; i++) {
            nt_layer_info li;
            nt_model_layer(r->m, i, &li);
            if (li.trainable && li.ntrain > 0) {
                if (first < 0) first = i;
                nt++;
            }
        }
        nt_layer_info fl, ll;
        nt_model_layer(r->m, first < 0 ? 0 : first, &fl);
        nt_model_layer(r->m, (int)L - 1, &ll);
        printf("trainable: %d layers with weights, %s ... %s: %lld of %lld parameters "
               "(--unfreeze %s)\n",
               nt, fl.name, ll.name, (long long)trn, (long long)tot, o->unfreeze);
        // The list itself when it is short enough to read (the default fine-tune: 15 layers).
        if (nt > 0 && nt <= 40) {
            printf("trainable layers:");
            for (int i = 0; i < L; i++) {
                nt_layer_info li;
                nt_model_layer(r->m, i, &li);
                if (li.trainable && li.ntrain > 0) printf(" %s", li.name);
            }
            printf("\n");
        }
    }

    // Optimizer, callbacks, metrics.
    nt_optim_cfg oc;
    nt_optim_cfg_default(&oc, strcmp(o->optimizer, "adam") == 0 ? NT_OPT_ADAM : NT_OPT_SGD);
    oc.lr           = (float)o->lr;
    oc.momentum     = (float)o->momentum;
    oc.nesterov     = o->nesterov;
    oc.weight_decay = (float)o->weight_decay;
    if (nt_optim_new(ctx, &oc, r->m, &r->opt) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    nt_mode mode = monitor_mode(o->monitor);
    nt_es_init(&r->es, mode, o->min_delta, o->es_patience, o->restore_best);
    nt_rlr_init(&r->rlr, mode, o->reduce_factor, o->rlr_patience, 1e-4, o->rlr_cooldown, o->lr_min);
    r->ckpt_best = nt_mode_worst(mode);
    r->lr        = o->lr;
    if (nt_metrics_new(ctx, &r->trm) != NT_OK || nt_metrics_new(ctx, &vm) != NT_OK)
        FAIL("%s", nt_ctx_errmsg(ctx));
    if (ckf) {
        if (load_checkpoint_state(r, ckf, ckpath) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
        nt_st_close(ckf);
        ckf = NULL;
        printf("resuming %s at epoch %d, step %d\n", o->resume, r->epoch + 1, r->step_in_epoch);
    }

    // Loaders.
    nd_loader_opts lo;
    nd_loader_opts_default(&lo);
    lo.img_size     = o->img_size;
    lo.resize       = resize;
    lo.batch        = o->batch;
    lo.threads      = o->loader_threads;
    lo.shuffle      = 1;
    lo.seed         = (uint64_t)o->seed;
    lo.preprocess   = r->meta.preprocess;
    lo.cache        = !o->no_cache;
    lo.max_bad_frac = o->max_bad_frac;
    nd_aug_cfg_default(&lo.aug);
    lo.aug.rotation_range     = o->rotation;
    lo.aug.width_shift_range  = o->wshift;
    lo.aug.height_shift_range = o->hshift;
    lo.aug.shear_range        = o->shear;
    lo.aug.zoom_lo            = 1 - o->zoom;
    lo.aug.zoom_hi            = 1 + o->zoom;
    lo.aug.horizontal_flip    = o->hflip;
    lo.aug.fill_mode          = fill;
    lo.aug.cval               = o->cval;
    if (nd_loader_new(ctx, tr, &lo, &tl) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    lo.shuffle = 0;
    nd_aug_cfg_default(&lo.aug);
    if (nd_loader_new(ctx, va, &lo, &vl) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
    int64_t shp[4] = {o->batch, o->img_size, o->img_size, 3};
    lab            = malloc(sizeof(float) * (size_t)o->batch);
    probs          = malloc(sizeof(float) * (size_t)o->batch);
    dl             = malloc(sizeof(float) * (size_t)o->batch);
    w              = malloc(sizeof(float) * (size_t)o->batch);
    if (nt_tensor_new(ctx, 4, shp, &x) != NT_OK || !lab || !probs || !dl || !w)
        FAIL("out of memory for a batch of %d", o->batch);

    // Output folder, logs.
    char dir[1024], path[1100];
    if (o->out)
        snprintf(dir, sizeof(dir), "%s", o->out);
    else {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(dir, sizeof(dir), "runs/%Y%m%d-%H%M%S", &tm);
    }
    snprintf(r->dir, sizeof(r->dir), "%s", dir);
    if (mkdirs(dir)) FAIL("--out %s: %s", dir, strerror(errno));
    snprintf(path, sizeof(path), "%s/command.json", dir);
    if (!o->resume) {
        FILE *cf = fopen(path, "w");
        if (!cf) FAIL("%s: %s", path, strerror(errno));
        fprintf(cf, "{\"argv\": %s, \"pneumo\": \"%s\", \"kernels\": \"%s\", \"threads\": %d}\n",
                r->argv_json, NT_VERSION, nt_ctx_impl_name(ctx), nt_ctx_nthreads(ctx));
        fclose(cf);
    }
    snprintf(path, sizeof(path), "%s/log.csv", dir);
    csv = fopen(path, o->resume ? "a" : "w");
    if (!csv) FAIL("%s: %s", path, strerror(errno));
    if (!o->resume) fputs(csv_header, csv);
    char err[512];
    if (!(tb = tb_open(dir, err, sizeof(err)))) FAIL("tensorboard: %s", err);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    int tty = cli_isatty(stderr) && !o->json;
    // Test hook: the non-terminal progress interval in seconds (tests/train.sh sets it to 0).
    const char *log_env    = getenv("PNEUMO_PROGRESS_LOG_S");
    const double log_every = log_env ? strtod(log_env, NULL) : PROGRESS_LOG_S;
    // Test hook: behave as if Ctrl-C came after this many steps (tests/train.sh uses it to
    // interrupt a run at an exact step).
    const char *stop_env = getenv("PNEUMO_STOP_AFTER_STEPS");
    long stop_after      = stop_env ? strtol(stop_env, NULL, 10) : -1;
    int steps = (tr->n + o->batch - 1) / o->batch, stop = 0;

    for (; r->epoch < o->epochs && !stop; r->epoch++) {
        if (tty) fprintf(stderr, "Epoch %d/%d\n", r->epoch + 1, o->epochs);
        if (nd_loader_start_epoch(tl, r->epoch) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
        int n, images = 0;
        // A resumed epoch skips the batches it had done (the order is a function of the seed).
        for (int k = 0; k < r->step_in_epoch; k++)
            if (nd_loader_next(tl, &x, lab, NULL, &n) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
        if (r->step_in_epoch == 0) nt_metrics_reset(r->trm);
        double t0 = now_s(), logged = t0;
        for (;;) {
            if ((s = nd_loader_next(tl, &x, lab, NULL, &n)) != NT_OK)
                FAIL("%s", nt_ctx_errmsg(ctx));
            if (n == 0) break;
            nt_tensor xb = x;
            xb.shape[0]  = n;
            for (int i = 0; i < n; i++)
                w[i] = cw[lab[i] > 0.5f];
            double loss;
            s = nt_model_forward(r->m, &xb, 1, (uint64_t)r->global_step);
            if (s == NT_OK) s = nt_model_loss(r->m, lab, w, &loss, probs, dl);
            nt_tensor dy = {.ndim = 2, .shape = {n, 1}, .data = dl};
            if (s == NT_OK) s = nt_model_backward(r->m, &dy, NULL);
            if (s == NT_OK) s = nt_optim_step(r->opt);
            if (s == NT_OK) s = nt_metrics_add(r->trm, probs, lab, n, loss);
            if (s != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
            if (!isfinite(loss))
                FAIL("the loss is %g at epoch %d step %d; lower --lr", loss, r->epoch + 1,
                     r->step_in_epoch + 1);
            r->step_in_epoch++;
            r->global_step++;
            images += n;
            const double t = now_s();
            if (tty) {
                progress(0, 0, r->step_in_epoch, steps, t - t0, r->trm, images);
            } else if (!o->json && t - logged >= log_every && r->step_in_epoch < steps) {
                progress(r->epoch + 1, o->epochs, r->step_in_epoch, steps, t - t0, r->trm, images);
                logged = t;
            }
            if (stop_after >= 0 && r->global_step >= stop_after) g_stop = 1;
            if (g_stop) {
                if (tty) fputc('\n', stderr);
                if (save_checkpoint(r) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
                fprintf(stderr,
                        "pneumo train: interrupted at epoch %d step %d; saved %s/%s; "
                        "continue with `pneumo train --resume %s`\n",
                        r->epoch + 1, r->step_in_epoch, dir, CKPT_NAME, dir);
                rc = 130;
                goto out;
            }
        }
        double secs = now_s() - t0;
        if (tty) fputc('\n', stderr);
        epoch_logs lg;
        lg.lr = r->lr;
        nt_metrics_compute(r->trm, 0.5f, &lg.tr);
        if (validate_epoch(r, vl, &x, lab, probs, vm) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
        nt_metrics_compute(vm, 0.5f, &lg.va);
        double mon = log_value(&lg, o->monitor);
        // ModelCheckpoint(save_best_only), with the threshold chosen on this validation pass.
        int best = nt_checkpoint_improved(mode, mon, &r->ckpt_best);
        if (best) {
            r->meta.threshold = nt_metrics_choose_threshold(vm, o->target_sens);
            snprintf(path, sizeof(path), "%s/%s", dir, BEST_NAME);
            if (nt_model_save_file(r->m, &r->meta, path, o->fp16) != NT_OK)
                FAIL("%s", nt_ctx_errmsg(ctx));
        }
        int improved = 0;
        if (o->es_patience > 0 || o->restore_best) {
            int es_stop = nt_es_update(&r->es, r->epoch, mon, &improved);
            if (o->es_patience > 0) stop = es_stop;
            if (improved && o->restore_best && snapshot_best(r)) FAIL("out of memory (snapshot)");
        }
        double new_lr = o->rlr_patience > 0 ? nt_rlr_update(&r->rlr, mon, r->lr) : r->lr;
        csv_row(csv, r->epoch, &lg);
        static const char *tags[] = {"loss", "accuracy", "auc", "precision", "recall"};
        for (int t = 0; t < 5; t++) {
            char vt[32];
            snprintf(vt, sizeof(vt), "val_%s", tags[t]);
            tb_scalar(tb, tags[t], r->epoch, log_value(&lg, tags[t]));
            tb_scalar(tb, vt, r->epoch, log_value(&lg, vt));
        }
        tb_scalar(tb, "learning_rate", r->epoch, r->lr);
        if (o->json) {
            printf("{\"epoch\":%d,\"loss\":%.6g,\"accuracy\":%.6g,\"auc\":%.6g,\"precision\":%.6g,"
                   "\"recall\":%.6g,\"val_loss\":%.6g,\"val_accuracy\":%.6g,\"val_auc\":%.6g,"
                   "\"val_precision\":%.6g,\"val_recall\":%.6g,\"learning_rate\":%.6g,"
                   "\"seconds\":%.1f,\"images_per_s\":%.1f,\"best\":%s}\n",
                   r->epoch, lg.tr.loss, lg.tr.accuracy, lg.tr.auc, lg.tr.precision, lg.tr.recall,
                   lg.va.loss, lg.va.accuracy, lg.va.auc, lg.va.precision, lg.va.recall, r->lr,
                   secs, images / secs, best ? "true" : "false");
        } else {
            printf("epoch %d/%d - %.0fs - %.1f img/s - loss %.4f - accuracy %.4f - auc %.4f - "
                   "val_loss %.4f - val_accuracy %.4f - val_auc %.4f - lr %.3g%s\n",
                   r->epoch + 1, o->epochs, secs, images / secs, lg.tr.loss, lg.tr.accuracy,
                   lg.tr.auc, lg.va.loss, lg.va.accuracy, lg.va.auc, r->lr,
                   best ? " - saved best" : "");
        }
        fflush(stdout);
        if (new_lr != r->lr) {
            printf("epoch %d: ReduceLROnPlateau reducing the learning rate to %.3g\n", r->epoch + 1,
                   new_lr);
            r->lr = new_lr;
            nt_optim_set_lr(r->opt, (float)new_lr);
        }
        if (stop)
            printf("epoch %d: early stopping (%s did not improve for %d epochs; best epoch %d)\n",
                   r->epoch + 1, o->monitor, o->es_patience, r->es.best_epoch + 1);
        r->step_in_epoch = 0;
        int saved_epoch  = r->epoch;
        r->epoch++; // the checkpoint resumes at the next epoch
        if (save_checkpoint(r) != NT_OK) FAIL("%s", nt_ctx_errmsg(ctx));
        r->epoch = saved_epoch;
    }
    if (o->restore_best && r->best_w) {
        restore_best(r);
        printf("restored the weights of epoch %d (best %s %.4f)\n", r->es.best_epoch + 1,
               o->monitor, r->es.best);
    }
    printf("best %s %.4f; model: %s/%s\n", o->monitor, r->ckpt_best, dir, BEST_NAME);
    rc = EXIT_OK;
out:
#undef FAIL
    if (stored) json_decref(stored);
    nt_st_close(ckf);
    if (tb && tb_close(tb)) fprintf(stderr, "pneumo train: closing the TensorBoard file failed\n");
    if (csv) fclose(csv);
    free(lab), free(probs), free(dl), free(w);
    nt_tensor_free(&x);
    nd_loader_free(tl);
    nd_loader_free(vl);
    nd_dataset_free(all);
    nd_dataset_free(tr);
    nd_dataset_free(va);
    nd_s3_free(s3);
    nt_metrics_free(r->trm);
    nt_metrics_free(vm);
    nt_optim_free(r->opt);
    for (int i = 0; r->best_w && r->m && i < nt_model_num_params(r->m); i++)
        free(r->best_w[i]);
    free(r->best_w);
    nt_model_free(r->m);
    nt_ctx_free(ctx);
    return rc;
}
