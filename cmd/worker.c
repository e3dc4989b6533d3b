/*
 * worker.c: `pneumo worker --queue NAME`: consumes the Redis Stream that `pneumo predict
 * --enqueue --queue NAME` filled (keys: cmd/results.h, README.md "Redis key schema"). Any number
 * of workers, on any machine that reaches Redis and the images, share one consumer group
 * ("workers"): each loop first takes over entries another consumer has held longer than
 * --claim-idle-ms (XAUTOCLAIM: a dead or stuck worker's work), else reads new ones (XREADGROUP >,
 * BLOCK). Each image goes through predict's own loading code (pr_load_image: read, hash, cache
 * look-up, decode) and model; its result is written with predict's idempotent writes, then the
 * source joins pneumo:queue:NAME:done and the entry is XACKed, in that order, in one pipeline.
 * Delivery is at least once (a worker killed after the write and before the XACK has its entry
 * redelivered), and results stay exactly one per image because they are keyed by image content.
 * A failed image stays pending (another delivery may succeed: S3 hiccups); once an entry has
 * been delivered --max-deliveries times without success it goes to pneumo:queue:NAME:dead and
 * is acknowledged. Exits 0 when the queue is drained (nothing pending, nothing new) unless
 * --follow; 1 when Redis is lost, the model cannot run, or this worker dead-lettered entries.
 * Test: tests/workers.sh.
 */
#include "cmd/cli.h"
#include "cmd/results.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODEL "weights/pneumo-resnet50.safetensors"

typedef struct entry {
    char id[64];
    char *source;
    long deliveries;
} entry;

typedef struct wk {
    pr_redis *r;
    pr_batch *b;
    const char *consumer, *stream, *done_key, *dead_key, *model, *queue;
    char model_id[17], model_sha[65], run_id[300];
    long ttl;
    int max_del, ndone, ncached, nfailed, ndead, nclaimed;
} wk;

static void ack(wk *w, const entry *e)
{
    const char *a[] = {"XACK", w->stream, "workers", e->id};
    pr_batch_add(w->b, 4, a);
}

static void mark_done(wk *w, const entry *e)
{
    const char *a[] = {"SADD", w->done_key, e->source};
    pr_batch_add(w->b, 3, a);
    ack(w, e);
}

static void dead_letter(wk *w, const entry *e, const char *reason)
{
    char d[32], now[40];
    snprintf(d, sizeof(d), "%ld", e->deliveries);
    pr_iso_now(now, sizeof(now));
    const char *a[] = {"XADD", w->dead_key,  "*", "source",   e->source,   "id",   e->id, "reason",
                       reason, "deliveries", d,   "consumer", w->consumer, "time", now};
    pr_batch_add(w->b, (int)(sizeof(a) / sizeof(a[0])), a);
    pr_batch_fail(w->b, w->run_id, e->source, reason, w->ttl);
    ack(w, e);
    w->ndead++;
    fprintf(stderr, "pneumo worker %s: dead-lettered %s after %ld deliveries: %s\n", w->consumer,
            e->source, e->deliveries, reason);
}

// The queue's run summary pneumo:run:queue:<q>, recomputed from idempotent truths (the done set,
// the failure hash, meta's total), so that redeliveries and many workers never skew it.
// KEYS: run, done, fail, meta, runs; ARGV: now (ISO), model, model_id, now (Unix s), queue, run_id.
#define RUN_LUA                                                                                    \
    "local total = tonumber(redis.call('HGET', KEYS[4], 'total') or '0') "                         \
    "local done = redis.call('SCARD', KEYS[2]) "                                                   \
    "local failed = redis.call('HLEN', KEYS[3]) "                                                  \
    "redis.call('HSETNX', KEYS[1], 'started', ARGV[1]) "                                           \
    "redis.call('HSET', KEYS[1], 'status', (done + failed >= total) and 'done' or 'running', "     \
    "'total', total, 'done', done, 'failed', failed, 'updated', ARGV[1], 'model', ARGV[2], "       \
    "'model_id', ARGV[3], 'queue', ARGV[5]) "                                                      \
    "redis.call('ZADD', KEYS[5], 'NX', ARGV[4], ARGV[6]) return done"

static void run_summary(wk *w)
{
    char now[40], secs[32], run_key[320], fail_key[320], meta_key[320];
    pr_iso_now(now, sizeof(now));
    snprintf(secs, sizeof(secs), "%ld", (long)time(NULL));
    snprintf(run_key, sizeof(run_key), "pneumo:run:%s", w->run_id);
    snprintf(fail_key, sizeof(fail_key), "pneumo:fail:%s", w->run_id);
    snprintf(meta_key, sizeof(meta_key), "%s:meta", w->stream);
    const char *a[] = {"EVAL",      RUN_LUA,  "5",           run_key,  w->done_key,
                       fail_key,    meta_key, "pneumo:runs", now,      w->model,
                       w->model_id, secs,     w->queue,      w->run_id};
    pr_batch_add(w->b, (int)(sizeof(a) / sizeof(a[0])), a);
}

// ---- loading a batch with --loader-threads threads, each with its own context, S3 handle (kept
// across batches: its connections stay open) and Redis connection for the cache look-ups ----

enum { LK_LOAD = -1, LK_SKIP = -2 }; // besides PR_LOAD_COMPUTE / CACHED / FAILED

typedef struct loader {
    nt_ctx *ctx;
    nd_s3 *s3;
    pr_redis *r; // NULL: no look-ups (it could not connect, or a look-up failed)
} loader;

typedef struct load_batch_t {
    loader *ls;
    int nl;
    pr_load lo; // S, resize, pre, model_id (r is per loader)
    float *xs;  // entry i decodes into xs + i * img
    size_t img;
    int *lk; // per entry: LK_LOAD in, PR_LOAD_* out (LK_SKIP left alone)
    char (*shas)[65];
    char (*lerrs)[768];
    double *prep;
    const entry *es;
    int ne, next;
} load_batch_t;

typedef struct {
    load_batch_t *b;
    loader *l;
} load_arg;

static void *load_main(void *arg)
{
    load_arg *a     = arg;
    load_batch_t *b = a->b;
    loader *l       = a->l;
    for (;;) {
        int i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->ne) break;
        if (b->lk[i] != LK_LOAD) continue;
        double p = 0, thr = 0;
        char label[64];
        pr_load lo = b->lo;
        lo.r       = l->r;
        b->lk[i]   = pr_load_image(l->ctx, &l->s3, &lo, b->es[i].source, b->xs + (size_t)i * b->img,
                                   b->shas[i], &p, label, sizeof(label), &thr, b->lerrs[i],
                                   sizeof(b->lerrs[i]), &b->prep[i]);
        if (lo.lookup_failed) { // a failed look-up is a miss; stop asking this connection
            pr_redis_close(l->r);
            l->r = NULL;
        }
    }
    return NULL;
}

static void load_batch(load_batch_t *b, const entry *es, int ne)
{
    b->es   = es;
    b->ne   = ne;
    b->next = 0;
    int nt  = b->nl < ne ? b->nl : ne;
    pthread_t th[64];
    load_arg args[64];
    int started = 0;
    for (int t = 1; t < nt; t++) {
        args[t] = (load_arg){b, &b->ls[t]};
        if (pthread_create(&th[t], NULL, load_main, &args[t]) != 0) break;
        started = t;
    }
    args[0] = (load_arg){b, &b->ls[0]};
    load_main(&args[0]); // this thread is a loader too
    for (int t = 1; t <= started; t++)
        pthread_join(th[t], NULL);
}

static volatile sig_atomic_t wk_stop;
static void on_stop(int sig)
{
    (void)sig;
    wk_stop = 1;
}

// Entries of an XREADGROUP / XAUTOCLAIM list: [[id, [field, value, ...]], ...].
static int parse_entries(const redisReply *list, entry *out, int max)
{
    int n = 0;
    if (!list || list->type != REDIS_REPLY_ARRAY) return 0;
    for (size_t i = 0; i < list->elements && n < max; i++) {
        const redisReply *e = list->element[i];
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue; // a deleted entry (nil)
        const redisReply *f = e->element[1];
        const char *src     = NULL;
        if (f && f->type == REDIS_REPLY_ARRAY)
            for (size_t k = 0; k + 1 < f->elements; k += 2)
                if (f->element[k]->type == REDIS_REPLY_STRING &&
                    strcmp(f->element[k]->str, "source") == 0 &&
                    f->element[k + 1]->type == REDIS_REPLY_STRING)
                    src = f->element[k + 1]->str;
        snprintf(out[n].id, sizeof(out[n].id), "%s", e->element[0]->str);
        out[n].source     = strdup(src ? src : "");
        out[n].deliveries = 1;
        n++;
    }
    return n;
}

// The delivery count of a pending entry (XPENDING stream group id id 1), or 1 when unknown.
static long deliveries(wk *w, const char *id)
{
    const char *a[] = {"XPENDING", w->stream, "workers", id, id, "1"};
    redisReply *rep = pr_redis_command(w->r, 6, a);
    long n          = 1;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
        rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements >= 4)
        n = (long)rep->element[0]->element[3]->integer;
    if (rep) freeReplyObject(rep);
    return n;
}

// ---- one batch of entries, loaded while the previous one is computed ----

typedef struct wbatch {
    entry *es;
    int ne;
    nt_tensor x;     // entry i decodes into x + i * img, then the misses are packed to the front
    load_batch_t lb; // the per-entry results (lk, shas, lerrs, prep) live here
} wbatch;

static int wbatch_init(wbatch *b, nt_ctx *ctx, int count, int S, loader *ls, int nl, pr_load lo)
{
    int64_t shp[4] = {count, S, S, 3};
    b->es          = calloc((size_t)count, sizeof(entry));
    memset(&b->lb, 0, sizeof(b->lb));
    b->lb.ls    = ls;
    b->lb.nl    = nl;
    b->lb.lo    = lo;
    b->lb.img   = (size_t)S * S * 3;
    b->lb.lk    = malloc(sizeof(int) * (size_t)count);
    b->lb.shas  = malloc(sizeof(*b->lb.shas) * (size_t)count);
    b->lb.lerrs = malloc(sizeof(*b->lb.lerrs) * (size_t)count);
    b->lb.prep  = malloc(sizeof(double) * (size_t)count);
    if (nt_tensor_new(ctx, 4, shp, &b->x) != NT_OK || !b->es || !b->lb.lk || !b->lb.shas ||
        !b->lb.lerrs || !b->lb.prep)
        return -1;
    b->lb.xs = b->x.data;
    return 0;
}

static void wbatch_drop_entries(wbatch *b)
{
    for (int i = 0; b->es && i < b->ne; i++) {
        free(b->es[i].source);
        b->es[i].source = NULL;
    }
    b->ne = 0;
}

static void wbatch_free(wbatch *b)
{
    wbatch_drop_entries(b);
    free(b->es);
    free(b->lb.lk);
    free(b->lb.shas);
    free(b->lb.lerrs);
    free(b->lb.prep);
    nt_tensor_free(&b->x);
}

static void wbatch_start(wbatch *b, int max_del)
{
    for (int i = 0; i < b->ne; i++)
        b->lb.lk[i] = b->es[i].deliveries > max_del ? LK_SKIP : LK_LOAD;
}

static void *bg_load(void *arg)
{
    wbatch *b = arg;
    load_batch(&b->lb, b->es, b->ne);
    return NULL;
}

// Up to count entries into b: first a dead or stuck worker's (XAUTOCLAIM, which counts a
// delivery), else new ones (XREADGROUP, waiting up to blk ms; NULL: no wait). 0, or the exit code
// after printing the error.
static int fetch(wk *w, char cur[64], const char *idle, const char *cnt, const char *blk,
                 int claim_ms, int count, wbatch *b)
{
    b->ne            = 0;
    const char *ca[] = {"XAUTOCLAIM", w->stream, "workers", w->consumer, idle, cur, "COUNT", cnt};
    redisReply *rep  = pr_redis_command(w->r, 8, ca);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 2) {
        int rc = cli_fail("worker", EXIT_FAIL, "XAUTOCLAIM %s: %s", w->stream,
                          rep && rep->type == REDIS_REPLY_ERROR ? rep->str : pr_redis_errstr(w->r));
        if (rep) freeReplyObject(rep);
        return rc;
    }
    snprintf(cur, 64, "%s",
             rep->element[0]->type == REDIS_REPLY_STRING ? rep->element[0]->str : "0-0");
    b->ne = parse_entries(rep->element[1], b->es, count);
    freeReplyObject(rep);
    if (b->ne > 0) {
        w->nclaimed += b->ne;
        fprintf(stderr, "pneumo worker %s: claimed %d entries idle for over %d ms\n", w->consumer,
                b->ne, claim_ms);
        for (int i = 0; i < b->ne; i++)
            b->es[i].deliveries = deliveries(w, b->es[i].id);
        return 0;
    }
    const char *ra[] = {"XREADGROUP", "GROUP", "workers", w->consumer, "COUNT", cnt,
                        "BLOCK",      blk,     "STREAMS", w->stream,   ">"};
    const char *rn[] = {"XREADGROUP", "GROUP",   "workers", w->consumer, "COUNT",
                        cnt,          "STREAMS", w->stream, ">"};
    rep              = blk ? pr_redis_command(w->r, 11, ra) : pr_redis_command(w->r, 9, rn);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        int rc = cli_fail("worker", EXIT_FAIL, "XREADGROUP %s: %s", w->stream,
                          rep ? rep->str : pr_redis_errstr(w->r));
        if (rep) freeReplyObject(rep);
        return rc;
    }
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
        rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements >= 2)
        b->ne = parse_entries(rep->element[0]->element[1], b->es, count);
    freeReplyObject(rep);
    return 0;
}

int cmd_worker(int argc, char **argv)
{
    const char *model = NULL, *redis_url = NULL, *queue = NULL, *consumer = NULL;
    const char *resize_s = "area";
    int threads = 0, count = 8, claim_ms = 30000, max_del = 3, follow = 0, ttl = 0, retries = 4;
    int nloaders      = 2;
    const char *dtype = NULL;
    cli_opt opts[]    = {
           {"queue", OPT_STR, &queue, 0, 0, "NAME", "the queue to consume (required)"},
           {"model", OPT_STR, &model, 0, 0, "FILE", "model file (default " DEFAULT_MODEL ")"},
           {"redis", OPT_STR, &redis_url, 0, 0, "URL",
            "redis://[:password@]host:port/db (default $REDIS_URL)"},
           {"consumer", OPT_STR, &consumer, 0, 0, "NAME",
            "this worker's name in the group (default HOST-PID)"},
           {"count", OPT_INT, &count, 1, 1024, "N",
            "entries per read, also the batch size; default 8"},
           {"claim-idle-ms", OPT_INT, &claim_ms, 1, 2147483647.0, "MS",
            "take over entries another worker has held this long, default 30000"},
           {"max-deliveries", OPT_INT, &max_del, 1, 1000000, "N",
            "dead-letter an entry after this many deliveries without success, default 3"},
           {"follow", OPT_FLAG, &follow, 0, 0, NULL, "keep waiting for new entries when drained"},
           {"threads", OPT_INT, &threads, 0, 1024, "N", "compute threads, default all CPUs"},
           {"dtype", OPT_STR, &dtype, 0, 0, "f32|bf16",
            "compute in f32 or bf16 (AVX512_BF16, on AMX tiles where present); default $PNEUMO_DTYPE, "
               "else f32"},
           {"loader-threads", OPT_INT, &nloaders, 1, 64, "N",
            "threads that read, look up and decode a batch's images, default 2"},
           {"resize", OPT_STR, &resize_s, 0, 0, "nearest|bilinear|area",
            "how images are resized to the model's input, default area"},
           {"ttl", OPT_INT, &ttl, 0, 2147483647.0, "SECONDS",
            "expire results and source index after this long (default 0: never)"},
           {"redis-retries", OPT_INT, &retries, 0, 100, "N",
            "reconnects before Redis counts as lost, default 4"},
    };
    cli_cmd cmd = {"worker",
                   "--queue NAME [--model FILE] [--redis URL] [options]",
                   "Consume a prediction queue filled by `pneumo predict --enqueue`; many workers "
                   "share one queue.",
                   opts,
                   (int)(sizeof(opts) / sizeof(opts[0])),
                   0,
                   0};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if ((rc = cli_check_dtype("worker", dtype))) return rc;
    if (!queue || !*queue) return cli_fail("worker", EXIT_USAGE, "--queue NAME is required");
    redis_url = pr_redis_url(redis_url);
    if (!redis_url) return cli_fail("worker", EXIT_USAGE, "needs --redis URL or REDIS_URL");
    if (!model) {
        if (access(DEFAULT_MODEL, R_OK) != 0)
            return cli_fail("worker", EXIT_USAGE, "no --model given and the default %s is not here",
                            DEFAULT_MODEL);
        model = DEFAULT_MODEL;
    }
    char cname[320];
    if (!consumer) {
        char host[256] = "host";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = 0;
        snprintf(cname, sizeof(cname), "%s-%ld", host, (long)getpid());
        consumer = cname;
    }
    pr_redis_opts ropts;
    pr_redis_opts_default(&ropts);
    ropts.retries = retries;
    char err[600];
    wk w = {0};
    w.r  = pr_redis_open(redis_url, &ropts, err, sizeof(err));
    if (!w.r)
        return cli_fail("worker", EXIT_FAIL, "%s; start Redis or check --redis / REDIS_URL", err);
    size_t ql    = strlen(queue) + 32;
    char *stream = malloc(ql), *done_key = malloc(ql), *dead_key = malloc(ql);
    snprintf(stream, ql, "pneumo:queue:%s", queue);
    snprintf(done_key, ql, "pneumo:queue:%s:done", queue);
    snprintf(dead_key, ql, "pneumo:queue:%s:dead", queue);
    w.b        = pr_batch_new();
    w.consumer = consumer;
    w.stream   = stream;
    w.done_key = done_key;
    w.dead_key = dead_key;
    w.model    = model;
    w.queue    = queue;
    w.ttl      = ttl;
    w.max_del  = max_del;
    snprintf(w.run_id, sizeof(w.run_id), "queue:%s", queue);

    nt_ctx *ctx     = NULL;
    nt_model *m     = NULL;
    float *probs    = NULL;
    int *bidx       = NULL;
    loader *ls      = NULL;
    redisReply *rep = NULL;
    wbatch wb[2]    = {0};
    pthread_t bg;
    int bg_on = 0; // a background load of wb[nx] is running
    nt_model_meta meta;
    nd_resize resize;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler       = on_stop;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    wk_stop = 0; // SIGINT/SIGTERM: finish the batch at hand, then exit
    // The group (a worker may start before the first --enqueue).
    {
        const char *g[] = {"XGROUP", "CREATE", stream, "workers", "0", "MKSTREAM"};
        rep             = pr_redis_command(w.r, 6, g);
        if (!rep || (rep->type == REDIS_REPLY_ERROR && !strstr(rep->str, "BUSYGROUP"))) {
            rc = cli_fail("worker", EXIT_FAIL, "XGROUP CREATE %s: %s", stream,
                          rep ? rep->str : pr_redis_errstr(w.r));
            goto out;
        }
        freeReplyObject(rep);
        rep = NULL;
    }
    if (!(ctx = cli_ctx_dtype("worker", threads, 0, dtype))) {
        rc = EXIT_FAIL;
        goto out;
    }
    if (nd_resize_parse(ctx, resize_s, &resize) != NT_OK) {
        rc = cli_fail("worker", EXIT_USAGE, "--%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    if ((rc = pr_model_open("worker", ctx, model, &m, &meta, w.model_sha, w.model_id))) goto out;
    if (nt_model_prepare(m, count, 0) != NT_OK) {
        rc = cli_fail("worker", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    int S      = meta.cfg.img_size;
    size_t img = (size_t)S * S * 3;
    probs      = malloc(sizeof(float) * (size_t)count);
    bidx       = malloc(sizeof(int) * (size_t)count);
    ls         = calloc((size_t)nloaders, sizeof(loader));
    if (!probs || !bidx || !ls) {
        rc = cli_fail("worker", EXIT_FAIL, "out of memory for a batch of %d", count);
        goto out;
    }
    for (int t = 0; t < nloaders; t++) {
        nt_ctx_opts co;
        nt_ctx_opts_default(&co);
        co.nthreads = 1;
        char rerr[600];
        if (nt_ctx_new(&co, &ls[t].ctx) != NT_OK) {
            rc = cli_fail("worker", EXIT_FAIL, "out of memory for loader contexts");
            goto out;
        }
        ls[t].r = pr_redis_open(redis_url, &ropts, rerr, sizeof(rerr)); // NULL: no look-ups
    }
    pr_load lo0 = {S, resize, meta.preprocess, w.model_id, NULL, 0};
    for (int k = 0; k < 2; k++)
        if (wbatch_init(&wb[k], ctx, count, S, ls, nloaders, lo0) != 0) {
            rc = cli_fail("worker", EXIT_FAIL, "out of memory for a batch of %d", count);
            goto out;
        }
    char cur[64] = "0-0", cnt[16], idle[32], blk[16];
    snprintf(cnt, sizeof(cnt), "%d", count);
    snprintf(idle, sizeof(idle), "%d", claim_ms);
    snprintf(blk, sizeof(blk), "%d", claim_ms < 1000 ? claim_ms : 1000);
    fprintf(stderr, "pneumo worker %s: consuming %s at %s (model %s)\n", consumer, stream,
            pr_redis_where(w.r), w.model_id);
    // wb[cx] is the batch at hand; while the model computes it, the next one (wb[1 - cx]) is
    // fetched and loaded by a background thread, so reading and decoding overlap compute.
    int cx = 0, loaded = 0;
    for (;;) {
        wbatch *bc = &wb[cx], *bn = &wb[1 - cx];
        if (!loaded) {
            if (wk_stop) { // between batches: nothing is half done
                fprintf(stderr, "pneumo worker %s: stopped by a signal\n", consumer);
                break;
            }
            if ((rc = fetch(&w, cur, idle, cnt, blk, claim_ms, count, bc))) goto out;
            if (bc->ne == 0) {
                // Drained: nothing new and nothing pending anywhere in the group.
                const char *pa[] = {"XPENDING", stream, "workers"};
                rep              = pr_redis_command(w.r, 3, pa);
                if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) {
                    rc = cli_fail("worker", EXIT_FAIL, "XPENDING %s: %s", stream,
                                  rep && rep->type == REDIS_REPLY_ERROR ? rep->str
                                                                        : pr_redis_errstr(w.r));
                    goto out;
                }
                long pending = (long)rep->element[0]->integer;
                freeReplyObject(rep);
                rep = NULL;
                if (pending == 0 && !follow) break;
                if (pending > 0) {
                    struct timespec ts = {0, 100 * 1000000L}; // others hold entries: wait
                    nanosleep(&ts, NULL);
                }
                continue;
            }
            wbatch_start(bc, max_del);
            load_batch(&bc->lb, bc->es, bc->ne);
        }
        // The next batch, without waiting for new entries, loads in the background.
        loaded = 0;
        if (!wk_stop) {
            if ((rc = fetch(&w, cur, idle, cnt, NULL, claim_ms, count, bn))) goto out;
            if (bn->ne > 0) {
                wbatch_start(bn, max_del);
                if (pthread_create(&bg, NULL, bg_load, bn) == 0)
                    bg_on = 1;
                else
                    load_batch(&bn->lb, bn->es, bn->ne);
                loaded = 1;
            }
        }
        // The batch at hand: dead letters, cache hits and failures, then the misses' forward.
        float *xs = bc->x.data;
        int n     = 0;
        for (int i = 0; i < bc->ne; i++) {
            entry *e = &bc->es[i];
            if (bc->lb.lk[i] == LK_SKIP) {
                dead_letter(&w, e,
                            "delivered more times than --max-deliveries (a worker died "
                            "on it?)");
                continue;
            }
            if (bc->lb.lk[i] == PR_LOAD_CACHED) {
                pr_batch_source(w.b, w.model_id, e->source, bc->lb.shas[i], ttl);
                mark_done(&w, e);
                w.ncached++;
                w.ndone++;
            } else if (bc->lb.lk[i] == PR_LOAD_FAILED) {
                w.nfailed++;
                if (e->deliveries >= max_del)
                    dead_letter(&w, e, bc->lb.lerrs[i]);
                else
                    fprintf(stderr,
                            "pneumo worker %s: %s (delivery %ld of %d; left pending for a "
                            "retry)\n",
                            consumer, bc->lb.lerrs[i], e->deliveries, max_del);
            } else {
                if (n != i)
                    memmove(xs + (size_t)n * img, xs + (size_t)i * img, img * sizeof(float));
                bidx[n++] = i;
            }
        }
        if (n > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double t0    = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
            nt_tensor xb = bc->x;
            xb.shape[0]  = n;
            if (nt_model_forward(m, &xb, 0, 0) != NT_OK ||
                nt_model_loss(m, NULL, NULL, NULL, probs, NULL) != NT_OK) {
                rc = cli_fail("worker", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
                goto out;
            }
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double fwd_ms = ((double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec - t0) * 1e3 / n;
            char tnow[40];
            pr_iso_now(tnow, sizeof(tnow));
            for (int k = 0; k < n; k++) {
                entry *e      = &bc->es[bidx[k]];
                int lab       = probs[k] >= meta.threshold;
                pr_result res = {e->source,
                                 bc->lb.shas[bidx[k]],
                                 meta.class_names[lab],
                                 w.model_id,
                                 w.model_sha,
                                 model,
                                 w.run_id,
                                 tnow,
                                 probs[k],
                                 meta.threshold,
                                 bc->lb.prep[bidx[k]] + fwd_ms,
                                 0};
                pr_batch_result(w.b, &res, ttl);
                mark_done(&w, e);
                w.ndone++;
            }
        }
        run_summary(&w);
        if (pr_redis_exec(w.r, w.b) != 0) {
            rc = cli_fail("worker", EXIT_FAIL,
                          "%s; the entries of this batch stay pending and another worker takes "
                          "them over",
                          pr_redis_errstr(w.r));
            goto out;
        }
        wbatch_drop_entries(bc);
        if (bg_on) {
            pthread_join(bg, NULL);
            bg_on = 0;
        }
        if (loaded) cx = 1 - cx;
    }
    run_summary(&w);
    if (pr_redis_exec(w.r, w.b) != 0)
        fprintf(stderr, "pneumo worker %s: run summary not written: %s\n", consumer,
                pr_redis_errstr(w.r));
    fprintf(stderr,
            "pneumo worker %s: %s %s: %d done (%d cached), %d failed deliveries, %d "
            "dead-lettered, %d claimed\n",
            consumer, stream, wk_stop ? "stopped" : "drained", w.ndone, w.ncached, w.nfailed,
            w.ndead, w.nclaimed);
    if (w.ndead)
        rc = cli_fail("worker", EXIT_FAIL, "%d entries dead-lettered (see %s)", w.ndead, dead_key);
out:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rep) freeReplyObject(rep);
    if (bg_on) pthread_join(bg, NULL); // before its batch and the loaders go
    wbatch_free(&wb[0]);
    wbatch_free(&wb[1]);
    free(probs);
    free(bidx);
    for (int t = 0; ls && t < nloaders; t++) {
        nd_s3_free(ls[t].s3);
        pr_redis_close(ls[t].r);
        nt_ctx_free(ls[t].ctx);
    }
    free(ls);
    nt_model_free(m);
    nt_ctx_free(ctx);
    pr_batch_free(w.b);
    pr_redis_close(w.r);
    free(stream);
    free(done_key);
    free(dead_key);
    return rc;
}
