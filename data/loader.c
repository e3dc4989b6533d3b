/*
 * loader.c: loader threads (pthreads) that prepare whole batches into a bounded ring while the
 * caller computes: read (file or S3), decode + resize (image.c), cache the 8-bit result, augment
 * (augment.h) and preprocess. Batches are deterministic (a function of seed, epoch and batch
 * number) and come out in order whatever the thread count. The contract is in dataset.h.
 * Tests: tests/test_dataset.c; speed: `pneumo bench data` (cmd/bench_data.c).
 */
#include "data/dataset.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REASON_LEN 320

typedef struct bad_rec {
    int index;
    char why[REASON_LEN];
} bad_rec;

// One ring slot: a prepared batch.
typedef struct slot {
    int ready; // holds batch `b` of the current generation
    int b;
    int n;    // images in it
    float *x; // [batch, S, S, 3]
    float *labels;
    int *idx;
    int nbad; // items found bad while making it (first time)
    bad_rec *bad;
    int64_t hits;
    double decode_s, prep_s;
    nt_status status; // a failure that is not one bad item (e.g. no S3 credentials)
    char msg[REASON_LEN];
} slot;

typedef struct worker {
    nd_loader *ld;
    int id;
    pthread_t th;
    int started;
    nt_ctx *ctx; // errors of this thread's decodes
    nd_s3 *s3;   // opened on the first s3:// item
} worker;

struct nd_loader {
    nt_ctx *ctx; // the consumer's: messages and the log
    const nd_dataset *ds;
    nd_loader_opts o;
    int S, nslots, aug;
    size_t img_floats; // S*S*3

    pthread_mutex_t mu;
    pthread_cond_t work_cv; // workers wait for a batch to make
    pthread_cond_t done_cv; // the consumer waits for a batch, start_epoch for idle workers
    int quit, running, busy;
    uint64_t gen; // bumped by each start_epoch; stale batches are dropped
    int epoch, nbatches, next_make, next_take;
    int *perm;
    slot *slots;
    worker *workers;

    uint8_t **cache; // [n] S*S*3 images or NULL; written by the one thread that makes the item
    uint8_t *bad;    // [n] known bad (set by the consumer, in batch order)
    int64_t nbad;    // distinct bad items taken so far
    nd_loader_stats stats;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void nd_loader_opts_default(nd_loader_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->img_size     = 224;
    o->resize       = ND_RESIZE_AREA;
    o->batch        = 32;
    o->threads      = 1;
    o->shuffle      = 1;
    o->seed         = 0;
    o->preprocess   = NT_PRE_RESCALE;
    o->cache        = 1;
    o->max_bad_frac = 0.01;
    o->s3           = NULL;
    o->prefetch     = 0;
    nd_aug_cfg_default(&o->aug);
}

// ---- making one batch (worker side, without the lock) ----

// Reads and decodes item i into an S x S image. On failure, the reason goes to why.
static nt_status load_item(worker *w, int i, nd_image *img, char *why)
{
    nd_loader *ld   = w->ld;
    const char *src = ld->ds->items[i].source;
    uint8_t *buf    = NULL;
    size_t len      = 0;
    nt_status s;
    if (strncmp(src, "s3://", 5) == 0) {
        if (!w->s3 && (s = nd_s3_new(w->ctx, ld->o.s3, &w->s3)) != NT_OK) {
            snprintf(why, REASON_LEN, "%s", nt_ctx_errmsg(w->ctx));
            return NT_EINVAL; // not the item's fault: the whole run cannot read S3
        }
        const char *b = src + 5, *sl = strchr(b, '/');
        char bucket[256];
        size_t bl = sl ? (size_t)(sl - b) : 0;
        if (!sl || bl == 0 || bl >= sizeof bucket) {
            snprintf(why, REASON_LEN, "%s: not an s3://bucket/key URI", src);
            return NT_EFORMAT;
        }
        memcpy(bucket, b, bl);
        bucket[bl] = 0;
        s          = nd_s3_get(w->s3, bucket, sl + 1, &buf, &len);
    } else {
        s = nd_file_read(w->ctx, src, 0, &buf, &len);
    }
    if (s == NT_OK)
        s = nd_image_decode_resized(w->ctx, buf, len, src, ld->S, ld->S, ld->o.resize, img);
    free(buf);
    if (s != NT_OK) {
        // Messages start with "image SRC: " or "SRC: "; the source is logged with the reason.
        const char *m = nt_ctx_errmsg(w->ctx);
        size_t L      = strlen(src);
        if (!strncmp(m, "image ", 6) && !strncmp(m + 6, src, L) && !strncmp(m + 6 + L, ": ", 2))
            m += 8 + L;
        else if (!strncmp(m, src, L) && !strncmp(m + L, ": ", 2))
            m += L + 2;
        snprintf(why, REASON_LEN, "%s", *m ? m : nt_status_str(s));
        if (s == NT_ENOMEM) return NT_ENOMEM;
        return NT_EFORMAT; // counted as a bad item (unreadable, corrupt, S3 errors after retries)
    }
    return NT_OK;
}

static void make_batch(worker *w, slot *sl, int b, int epoch)
{
    nd_loader *ld = w->ld;
    const int B = ld->o.batch, S = ld->S;
    int lo = b * B, hi = lo + B < ld->ds->n ? lo + B : ld->ds->n;
    sl->n = sl->nbad = 0;
    sl->hits         = 0;
    sl->decode_s = sl->prep_s = 0;
    sl->status                = NT_OK;
    sl->msg[0]                = 0;
    for (int p = lo; p < hi; p++) {
        int i = ld->perm[p];
        if (ld->bad[i]) continue; // known bad: left out quietly
        nd_image img    = {0};
        uint8_t *cached = ld->cache ? ld->cache[i] : NULL;
        if (cached) {
            img = (nd_image){S, S, cached};
            sl->hits++;
        } else {
            double t0   = now_s();
            nt_status s = load_item(w, i, &img, sl->bad[sl->nbad].why);
            sl->decode_s += now_s() - t0;
            if (s == NT_EFORMAT) {
                sl->bad[sl->nbad++].index = i;
                continue;
            }
            if (s != NT_OK) {
                sl->status = s;
                snprintf(sl->msg, sizeof sl->msg, "%s", sl->bad[sl->nbad].why);
                return;
            }
        }
        double t0  = now_s();
        float *dst = sl->x + (size_t)sl->n * ld->img_floats;
        if (ld->aug) {
            nd_aug_params ap;
            nd_aug_random(&ld->o.aug, ld->o.seed, (uint64_t)epoch, (uint64_t)i, S, S, &ap);
            nd_aug_apply(&ap, ld->o.aug.fill_mode, ld->o.aug.cval, &img, dst);
            nt_preprocess_apply_f32(ld->o.preprocess, dst, (int64_t)S * S, dst);
        } else {
            nt_preprocess_apply(ld->o.preprocess, img.rgb, (int64_t)S * S, dst);
        }
        sl->prep_s += now_s() - t0;
        sl->labels[sl->n] = (float)ld->ds->items[i].label;
        sl->idx[sl->n]    = i;
        sl->n++;
        if (!cached) {
            if (ld->cache)
                ld->cache[i] = img.rgb; // kept: this thread is the only one making item i now
            else
                nd_image_free(&img);
        }
    }
}

static void *worker_main(void *arg)
{
    worker *w     = arg;
    nd_loader *ld = w->ld;
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        while (!ld->quit && !(ld->running && ld->next_make < ld->nbatches &&
                              ld->next_make < ld->next_take + ld->nslots))
            pthread_cond_wait(&ld->work_cv, &ld->mu);
        if (ld->quit) break;
        int b        = ld->next_make++;
        uint64_t gen = ld->gen;
        int epoch    = ld->epoch;
        slot *sl     = &ld->slots[b % ld->nslots];
        ld->busy++;
        pthread_mutex_unlock(&ld->mu);
        make_batch(w, sl, b, epoch);
        pthread_mutex_lock(&ld->mu);
        ld->busy--;
        if (gen == ld->gen) {
            sl->b     = b;
            sl->ready = 1;
        }
        pthread_cond_broadcast(&ld->done_cv);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

// ---- lifetime ----

nt_status nd_loader_new(nt_ctx *ctx, const nd_dataset *ds, const nd_loader_opts *o, nd_loader **out)
{
    *out = NULL;
    if (!ds || ds->n < 1) return nt_ctx_seterr(ctx, NT_EINVAL, "loader: empty dataset");
    if (o->img_size < 1 || o->img_size > 4096)
        return nt_ctx_seterr(ctx, NT_EINVAL, "loader: img_size %d out of range 1..4096",
                             o->img_size);
    if (o->batch < 1 || o->batch > 65536)
        return nt_ctx_seterr(ctx, NT_EINVAL, "loader: batch %d out of range 1..65536", o->batch);
    if (o->threads < 1 || o->threads > 64)
        return nt_ctx_seterr(ctx, NT_EINVAL, "loader: threads %d out of range 1..64", o->threads);
    if (o->prefetch < 0 || o->prefetch > 256)
        return nt_ctx_seterr(ctx, NT_EINVAL, "loader: prefetch %d out of range 0..256",
                             o->prefetch);
    if (!(o->max_bad_frac >= 0 && o->max_bad_frac <= 1))
        return nt_ctx_seterr(ctx, NT_EINVAL, "loader: max_bad_frac %g out of range 0..1",
                             o->max_bad_frac);
    if ((int)o->resize < ND_RESIZE_NEAREST || (int)o->resize > ND_RESIZE_AREA)
        return nt_ctx_seterr(ctx, NT_EINVAL, "loader: unknown resize mode %d", (int)o->resize);
    nd_loader *ld = calloc(1, sizeof(*ld));
    if (!ld) return nt_ctx_seterr(ctx, NT_ENOMEM, "loader: out of memory");
    ld->ctx        = ctx;
    ld->ds         = ds;
    ld->o          = *o;
    ld->S          = o->img_size;
    ld->aug        = nd_aug_active(&o->aug);
    ld->img_floats = (size_t)ld->S * ld->S * 3;
    ld->nslots     = o->prefetch ? o->prefetch : 2 * o->threads;
    if (ld->nslots < 2) ld->nslots = 2;
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->work_cv, NULL);
    pthread_cond_init(&ld->done_cv, NULL);
    ld->perm    = malloc(sizeof(int) * (size_t)ds->n);
    ld->bad     = calloc((size_t)ds->n, 1);
    ld->cache   = o->cache ? calloc((size_t)ds->n, sizeof(uint8_t *)) : NULL;
    ld->slots   = calloc((size_t)ld->nslots, sizeof(slot));
    ld->workers = calloc((size_t)o->threads, sizeof(worker));
    int ok      = ld->perm && ld->bad && (ld->cache || !o->cache) && ld->slots && ld->workers;
    for (int k = 0; ok && k < ld->nslots; k++) {
        slot *sl   = &ld->slots[k];
        sl->x      = malloc(sizeof(float) * ld->img_floats * (size_t)o->batch);
        sl->labels = malloc(sizeof(float) * (size_t)o->batch);
        sl->idx    = malloc(sizeof(int) * (size_t)o->batch);
        sl->bad    = malloc(sizeof(bad_rec) * ((size_t)o->batch + 1));
        ok         = sl->x && sl->labels && sl->idx && sl->bad;
    }
    if (!ok) {
        int nslots   = ld->nslots;
        size_t bytes = sizeof(float) * ld->img_floats * (size_t)o->batch * (size_t)nslots;
        nd_loader_free(ld);
        return nt_ctx_seterr(ctx, NT_ENOMEM,
                             "loader: out of memory for %d prepared batches of %d (%zu bytes)",
                             nslots, o->batch, bytes);
    }
    for (int t = 0; t < o->threads; t++) {
        worker *w = &ld->workers[t];
        w->ld     = ld;
        w->id     = t;
        nt_ctx_opts co;
        nt_ctx_opts_default(&co);
        co.nthreads = 1;
        if (nt_ctx_new(&co, &w->ctx) != NT_OK) {
            nd_loader_free(ld);
            return nt_ctx_seterr(ctx, NT_ENOMEM, "loader: cannot create a context for thread %d",
                                 t);
        }
        if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
            nd_loader_free(ld);
            return nt_ctx_seterr(ctx, NT_EIO, "loader: cannot start thread %d of %d", t + 1,
                                 o->threads);
        }
        w->started = 1;
    }
    *out = ld;
    return NT_OK;
}

void nd_loader_free(nd_loader *ld)
{
    if (!ld) return;
    pthread_mutex_lock(&ld->mu);
    ld->quit = 1;
    pthread_cond_broadcast(&ld->work_cv);
    pthread_mutex_unlock(&ld->mu);
    for (int t = 0; ld->workers && t < ld->o.threads; t++) {
        worker *w = &ld->workers[t];
        if (w->started) pthread_join(w->th, NULL);
        nd_s3_free(w->s3);
        nt_ctx_free(w->ctx);
    }
    for (int k = 0; ld->slots && k < ld->nslots; k++) {
        free(ld->slots[k].x), free(ld->slots[k].labels), free(ld->slots[k].idx);
        free(ld->slots[k].bad);
    }
    for (int i = 0; ld->cache && i < ld->ds->n; i++)
        free(ld->cache[i]);
    free(ld->cache), free(ld->bad), free(ld->perm), free(ld->slots), free(ld->workers);
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->work_cv);
    pthread_cond_destroy(&ld->done_cv);
    free(ld);
}

int nd_loader_batches(const nd_loader *ld)
{
    return (ld->ds->n + ld->o.batch - 1) / ld->o.batch;
}

nt_status nd_loader_start_epoch(nd_loader *ld, int epoch)
{
    if (epoch < 0) return nt_ctx_seterr(ld->ctx, NT_EINVAL, "loader: epoch %d < 0", epoch);
    pthread_mutex_lock(&ld->mu);
    ld->running = 0;
    ld->gen++;
    while (ld->busy > 0) // batches of the old epoch being made: wait, then drop them
        pthread_cond_wait(&ld->done_cv, &ld->mu);
    int n = ld->ds->n;
    for (int i = 0; i < n; i++)
        ld->perm[i] = i;
    if (ld->o.shuffle) {
        // Fisher-Yates from a counter-based stream keyed by (seed, epoch).
        uint64_t key = mix64(ld->o.seed ^ mix64((uint64_t)epoch + 0x5EED));
        for (int i = n - 1; i > 0; i--) {
            uint64_t r  = mix64(key + (uint64_t)i);
            int j       = (int)(r % (uint64_t)(i + 1));
            int t       = ld->perm[i];
            ld->perm[i] = ld->perm[j], ld->perm[j] = t;
        }
    }
    for (int k = 0; k < ld->nslots; k++)
        ld->slots[k].ready = 0;
    ld->epoch     = epoch;
    ld->nbatches  = nd_loader_batches(ld);
    ld->next_make = ld->next_take = 0;
    ld->running                   = 1;
    pthread_cond_broadcast(&ld->work_cv);
    pthread_mutex_unlock(&ld->mu);
    return NT_OK;
}

nt_status nd_loader_next(nd_loader *ld, nt_tensor *x, float *labels, int *idx, int *n)
{
    *n          = 0;
    const int S = ld->S;
    if (!x || !x->data || x->ndim != 4 || x->shape[0] < ld->o.batch || x->shape[1] != S ||
        x->shape[2] != S || x->shape[3] != 3) {
        char sh[64] = "none";
        if (x && x->data) nt_shape_str(x, sh, sizeof sh);
        return nt_ctx_seterr(ld->ctx, NT_EINVAL, "loader: x is %s; expected [%d,%d,%d,3]", sh,
                             ld->o.batch, S, S);
    }
    for (;;) {
        pthread_mutex_lock(&ld->mu);
        if (!ld->running) {
            pthread_mutex_unlock(&ld->mu);
            return nt_ctx_seterr(ld->ctx, NT_EINVAL, "loader: no epoch started");
        }
        if (ld->next_take >= ld->nbatches) {
            pthread_mutex_unlock(&ld->mu);
            return NT_OK; // end of the epoch
        }
        int b    = ld->next_take;
        slot *sl = &ld->slots[b % ld->nslots];
        while (!(sl->ready && sl->b == b))
            pthread_cond_wait(&ld->done_cv, &ld->mu);
        pthread_mutex_unlock(&ld->mu);

        // The slot is ours until next_take moves past it.
        nt_status s = sl->status;
        if (s == NT_OK && sl->n > 0) {
            memcpy(x->data, sl->x, sizeof(float) * ld->img_floats * (size_t)sl->n);
            if (labels) memcpy(labels, sl->labels, sizeof(float) * (size_t)sl->n);
            if (idx) memcpy(idx, sl->idx, sizeof(int) * (size_t)sl->n);
        }
        // Messages are copied out: the slot is refilled as soon as it is released below.
        const char *last_src = NULL;
        char last_why[REASON_LEN], msg[REASON_LEN];
        snprintf(msg, sizeof msg, "%s", sl->msg);
        for (int k = 0; k < sl->nbad; k++) {
            const bad_rec *r = &sl->bad[k];
            last_src         = ld->ds->items[r->index].source;
            snprintf(last_why, sizeof last_why, "%s", r->why);
            nt_ctx_log(ld->ctx, NT_LOG_WARN, "loader: skipped %s: %s", last_src, last_why);
        }
        pthread_mutex_lock(&ld->mu);
        for (int k = 0; k < sl->nbad; k++)
            ld->bad[sl->bad[k].index] = 1;
        ld->nbad += sl->nbad;
        ld->stats.bad = ld->nbad;
        if (s == NT_OK) {
            ld->stats.loaded += sl->n;
            ld->stats.cache_hits += sl->hits;
            ld->stats.decode_s += sl->decode_s;
            ld->stats.prep_s += sl->prep_s;
        }
        int got       = sl->n;
        int64_t nbad  = ld->nbad;
        sl->ready     = 0;
        ld->next_take = b + 1;
        pthread_cond_broadcast(&ld->work_cv);
        pthread_mutex_unlock(&ld->mu);

        if (s != NT_OK) return nt_ctx_seterr(ld->ctx, s, "loader: %s", msg);
        if ((double)nbad > ld->o.max_bad_frac * ld->ds->n && last_src)
            return nt_ctx_seterr(ld->ctx, NT_EFORMAT,
                                 "loader: %lld of %d images could not be loaded, more than the "
                                 "allowed fraction %g (--max-bad-frac); the last: %s: %s",
                                 (long long)nbad, ld->ds->n, ld->o.max_bad_frac, last_src,
                                 last_why);
        if (got > 0) {
            *n = got;
            return NT_OK;
        }
        // Every item of this batch was bad: go on to the next one.
    }
}

void nd_loader_stats_get(const nd_loader *ld, nd_loader_stats *st)
{
    nd_loader *m = (nd_loader *)ld; // the lock is not part of the observable state
    pthread_mutex_lock(&m->mu);
    *st = ld->stats;
    pthread_mutex_unlock(&m->mu);
}
