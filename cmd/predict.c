/*
 * predict.c: `pneumo predict`: batch prediction over files, folders (recursive), s3:// prefixes
 * (recursive) or a list on stdin ("-"), into JSON lines / CSV / a table and, with --redis or
 * REDIS_URL, into Redis (key schema: cmd/results.h and README.md), where results are cached by
 * image SHA-256 and model id. Loader threads read, hash, look up and decode while the main thread
 * runs the model. `--replay FILE` writes a previous run's JSON lines to Redis.
 * `--enqueue --queue NAME` lists the same inputs into a Redis Stream for `pneumo worker`
 * (cmd/worker.c, which reuses pr_load_image below). Tests: tests/predict.sh, tests/cli.sh,
 * tests/workers.sh.
 */
#include "cmd/cli.h"
#include "cmd/results.h"
#include "data/dataset.h"
#include "data/nd.h"
#include "data/s3.h"

#include <dirent.h>
#include <hiredis/hiredis.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODEL "weights/pneumo-resnet50.safetensors"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void iso_now(char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char s[24];
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%.19s.%03dZ", s, (int)(ts.tv_nsec / 1000000) % 1000);
}

static void hex(const unsigned char *md, unsigned n, char *out)
{
    for (unsigned i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
    out[2 * n] = 0;
}

static void sha256_hex(const uint8_t *buf, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL);
    hex(md, n, out);
}

static int sha256_file(const char *path, char out[65])
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    unsigned char buf[1 << 16], md[EVP_MAX_MD_SIZE];
    size_t k;
    while ((k = fread(buf, 1, sizeof(buf), f)) > 0)
        EVP_DigestUpdate(c, buf, k);
    int bad = ferror(f);
    fclose(f);
    unsigned n = 0;
    EVP_DigestFinal_ex(c, md, &n);
    EVP_MD_CTX_free(c);
    if (bad) return -1;
    hex(md, n, out);
    return 0;
}

int pr_model_open(const char *cmd, nt_ctx *ctx, const char *path, nt_model **m, nt_model_meta *meta,
                  char sha[65], char id[17])
{
    if (nt_model_load_file(ctx, path, m, meta) != NT_OK)
        return cli_fail(cmd, EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
    if (sha256_file(path, sha) != 0)
        return cli_fail(cmd, EXIT_FAIL, "cannot read %s to hash it: %s", path, strerror(errno));
    memcpy(id, sha, 16);
    id[16] = 0;
    return 0;
}

void pr_iso_now(char *buf, size_t len)
{
    iso_now(buf, len);
}

// ---- inputs ----

typedef struct item {
    char *source;
    char *err;      // a failure known before reading (a listing error), or NULL
    char sha[65];   // set when its batch is being computed
    double prep_ms; // read + hash + decode time
} item;

typedef struct items {
    item *v;
    int n, cap;
} items;

static void items_add(items *it, const char *src, const char *err)
{
    if (it->n == it->cap) {
        it->cap = it->cap ? 2 * it->cap : 64;
        it->v   = realloc(it->v, sizeof(item) * (size_t)it->cap);
        if (!it->v) abort();
    }
    it->v[it->n].source = strdup(src);
    it->v[it->n].err    = err ? strdup(err) : NULL;
    it->v[it->n].sha[0] = 0;
    it->n++;
}

static int is_image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    static const char *ext[] = {"png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff"};
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++)
        if (strcasecmp(dot + 1, ext[i]) == 0) return 1;
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

// Every image file under dir (sorted, hidden names skipped, links to folders not followed).
static void list_dir(items *it, const char *dir, int depth)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, by_name);
    if (n < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "cannot list folder %s: %s", dir, strerror(errno));
        items_add(it, dir, msg);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        if (name[0] != '.') {
            size_t len = strlen(dir) + strlen(name) + 2;
            char *p    = malloc(len);
            snprintf(p, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
            struct stat st, lst;
            if (lstat(p, &lst) == 0 && S_ISDIR(lst.st_mode)) {
                if (depth < 64) list_dir(it, p, depth + 1);
            } else if (is_image_name(name) && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                items_add(it, p, NULL);
            } else if (is_image_name(name)) {
                char msg[600];
                snprintf(msg, sizeof(msg), "%s: not a readable regular file", p);
                items_add(it, p, msg);
            }
            free(p);
        }
        free(ents[i]);
    }
    free(ents);
}

static void list_s3(nt_ctx *ctx, nd_s3 **s3, items *it, const char *uri)
{
    char *bucket = NULL, *prefix = NULL;
    nd_s3_object *objs = NULL;
    size_t n           = 0;
    if ((!*s3 && nd_s3_new(ctx, NULL, s3) != NT_OK) ||
        nd_s3_parse_uri(ctx, uri, &bucket, &prefix) != NT_OK ||
        nd_s3_list(*s3, bucket, prefix, &objs, &n) != NT_OK) {
        items_add(it, uri, nt_ctx_errmsg(ctx));
    } else {
        for (size_t i = 0; i < n; i++) {
            const char *k    = objs[i].key;
            const char *base = strrchr(k, '/');
            base             = base ? base + 1 : k;
            if (base[0] == '.' || !is_image_name(base)) continue;
            size_t len = strlen(bucket) + strlen(k) + 8;
            char *src  = malloc(len);
            snprintf(src, len, "s3://%s/%s", bucket, k);
            items_add(it, src, NULL);
            free(src);
        }
        if (n == 0) {
            char msg[600];
            snprintf(msg, sizeof(msg), "no objects under %s", uri);
            items_add(it, uri, msg);
        }
    }
    nd_s3_objects_free(objs, n);
    free(bucket);
    free(prefix);
}

static void add_input(nt_ctx *ctx, nd_s3 **s3, items *it, const char *in)
{
    struct stat st;
    if (strncmp(in, "s3://", 5) == 0)
        list_s3(ctx, s3, it, in);
    else if (stat(in, &st) == 0 && S_ISDIR(st.st_mode))
        list_dir(it, in, 0);
    else
        items_add(it, in, NULL); // a file (or a missing one: its read fails and is recorded)
}

// ---- one image: read (file or s3://), hash, look up, decode and preprocess ----

int pr_load_image(nt_ctx *ctx, nd_s3 **s3, pr_load *lo, const char *source, float *x, char sha[65],
                  double *prob, char *label, size_t label_len, double *threshold, char *err,
                  size_t errlen, double *prep_ms)
{
    double t0    = now_s();
    uint8_t *buf = NULL;
    size_t len   = 0;
    nt_status st = NT_OK;
    int kind     = PR_LOAD_FAILED;
    sha[0]       = 0;
    err[0]       = 0;
    if (strncmp(source, "s3://", 5) == 0) {
        char *bucket = NULL, *key = NULL;
        if (!*s3) st = nd_s3_new(ctx, NULL, s3);
        if (st == NT_OK) st = nd_s3_parse_uri(ctx, source, &bucket, &key);
        if (st == NT_OK) st = nd_s3_get(*s3, bucket, key, &buf, &len);
        free(bucket);
        free(key);
    } else {
        st = nd_file_read(ctx, source, 0, &buf, &len);
    }
    if (st != NT_OK) {
        snprintf(err, errlen, "%s", nt_ctx_errmsg(ctx));
        goto done;
    }
    sha256_hex(buf, len, sha);
    if (lo->r) {
        // A failed look-up is a miss; lookup_failed tells the caller.
        int hit = pr_redis_lookup(lo->r, lo->model_id, sha, prob, label, label_len, threshold);
        if (hit < 0) lo->lookup_failed = 1;
        if (hit == 1) {
            kind = PR_LOAD_CACHED;
            goto done;
        }
    }
    nd_image small;
    st = nd_image_decode_resized(ctx, buf, len, source, lo->S, lo->S, lo->resize, &small);
    if (st != NT_OK) {
        snprintf(err, errlen, "%s", nt_ctx_errmsg(ctx));
        goto done;
    }
    nt_preprocess_apply(lo->pre, small.rgb, (int64_t)lo->S * lo->S, x);
    nd_image_free(&small);
    kind = PR_LOAD_COMPUTE;
done:
    free(buf);
    *prep_ms = (now_s() - t0) * 1e3;
    return kind;
}

// ---- loader threads: read, hash, look up, decode and preprocess into a bounded ring ----

enum { SLOT_COMPUTE, SLOT_CACHED, SLOT_FAILED };

typedef struct slot {
    int idx, ready, kind;
    char sha[65];
    char label[64];
    double prob, threshold, prep_ms;
    char err[768];
    float *x;
} slot;

typedef struct pipe_state {
    const items *it;
    slot *slots;
    int Q, next, consumed, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv_ready, cv_space;
    // read-only after start
    int S, force;
    nd_resize resize;
    nt_preprocess pre;
    const char *redis_url, *model_id;
    pr_redis_opts ropts;
    volatile int redis_lost; // set by the writer: stop looking up
} pipe_state;

static void *loader_main(void *arg)
{
    pipe_state *ps = arg;
    nt_ctx_opts co;
    nt_ctx_opts_default(&co);
    co.nthreads = 1;
    nt_ctx *ctx = NULL;
    if (nt_ctx_new(&co, &ctx) != NT_OK) {
        nt_ctx_free(ctx);
        ctx = NULL;
    }
    nd_s3 *s3      = NULL;
    pr_redis *r    = NULL;
    int lookups_ok = ps->redis_url && !ps->force;
    char rerr[512];
    if (lookups_ok) {
        r = pr_redis_open(ps->redis_url, &ps->ropts, rerr, sizeof(rerr));
        if (!r) lookups_ok = 0;
    }
    for (;;) {
        pthread_mutex_lock(&ps->mu);
        while (!ps->stop && ps->next < ps->it->n && ps->next >= ps->consumed + ps->Q)
            pthread_cond_wait(&ps->cv_space, &ps->mu);
        if (ps->stop || ps->next >= ps->it->n) {
            pthread_mutex_unlock(&ps->mu);
            break;
        }
        int i = ps->next++;
        pthread_mutex_unlock(&ps->mu);

        slot *s         = &ps->slots[i % ps->Q];
        const item *itm = &ps->it->v[i];
        pr_load lo      = {
                 ps->S, ps->resize, ps->pre, ps->model_id, lookups_ok && !ps->redis_lost ? r : NULL, 0};
        int kind;
        if (!ctx) {
            kind = PR_LOAD_FAILED;
            snprintf(s->err, sizeof(s->err), "out of memory for a loader context");
            s->sha[0]  = 0;
            s->prep_ms = 0;
        } else if (itm->err) {
            kind = PR_LOAD_FAILED;
            snprintf(s->err, sizeof(s->err), "%s", itm->err);
            s->sha[0]  = 0;
            s->prep_ms = 0;
        } else {
            kind =
                pr_load_image(ctx, &s3, &lo, itm->source, s->x, s->sha, &s->prob, s->label,
                              sizeof(s->label), &s->threshold, s->err, sizeof(s->err), &s->prep_ms);
            if (lo.lookup_failed) lookups_ok = 0; // a failed look-up is a miss; the writer reports
        }
        s->kind = kind == PR_LOAD_COMPUTE  ? SLOT_COMPUTE
                  : kind == PR_LOAD_CACHED ? SLOT_CACHED
                                           : SLOT_FAILED;
        pthread_mutex_lock(&ps->mu);
        s->idx   = i;
        s->ready = 1;
        pthread_cond_broadcast(&ps->cv_ready);
        pthread_mutex_unlock(&ps->mu);
    }
    pr_redis_close(r);
    nd_s3_free(s3);
    nt_ctx_free(ctx);
    return NULL;
}

// ---- output ----

typedef enum { FMT_JSONL, FMT_CSV, FMT_TABLE } out_fmt;

typedef struct rec {
    const char *source, *sha, *label, *err, *time;
    double prob, threshold, latency_ms;
    int cached;
} rec;

typedef struct run_info {
    const char *model, *model_id, *model_sha256, *run_id;
    out_fmt fmt;
    FILE *out;
} run_info;

static void csv_field(FILE *f, const char *s)
{
    if (!s) return;
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void emit(const run_info *ri, const rec *r)
{
    FILE *f = ri->out;
    if (ri->fmt == FMT_JSONL) {
        json_t *o = json_object();
        json_object_set_new(o, "source", json_string(r->source));
        if (r->err) {
            json_object_set_new(o, "error", json_string(r->err));
            if (r->sha && r->sha[0]) json_object_set_new(o, "sha256", json_string(r->sha));
        } else {
            json_object_set_new(o, "probability", json_real(r->prob));
            json_object_set_new(o, "label", json_string(r->label));
            json_object_set_new(o, "threshold", json_real(r->threshold));
            json_object_set_new(o, "sha256", json_string(r->sha));
        }
        json_object_set_new(o, "model_id", json_string(ri->model_id));
        json_object_set_new(o, "model", json_string(ri->model));
        json_object_set_new(o, "model_sha256", json_string(ri->model_sha256));
        if (!r->err) json_object_set_new(o, "cached", json_boolean(r->cached));
        json_object_set_new(o, "time", json_string(r->time));
        json_object_set_new(o, "latency_ms", json_real(r->latency_ms));
        json_object_set_new(o, "run_id", json_string(ri->run_id));
        json_dumpf(o, f, JSON_COMPACT);
        fputc('\n', f);
        json_decref(o);
    } else if (ri->fmt == FMT_CSV) {
        csv_field(f, r->source);
        if (r->err)
            fprintf(f, ",,,,");
        else
            fprintf(f, ",%.9g,%s,%.9g,", r->prob, r->label, r->threshold);
        csv_field(f, r->sha);
        fprintf(f, ",%s,", ri->model_id);
        csv_field(f, ri->model);
        fprintf(f, ",%s,%s,%.3f,%s,",
                r->err      ? ""
                : r->cached ? "true"
                            : "false",
                r->time, r->latency_ms, ri->run_id);
        csv_field(f, r->err);
        fputc('\n', f);
    } else if (r->err) {
        fprintf(f, "%-50s error: %s\n", r->source, r->err);
    } else {
        fprintf(f, "%-50s %8.4f  %-10s (threshold %.3f)%s\n", r->source, r->prob, r->label,
                r->threshold, r->cached ? " cached" : "");
    }
    fflush(f);
}

// ---- progress ----

static void progress(int done, int total, double t0, int final)
{
    static double last;
    double t = now_s();
    if (!final && t - last < 0.1) return;
    last        = t;
    double rate = done / (t - t0 > 1e-9 ? t - t0 : 1e-9);
    double eta  = rate > 0 ? (total - done) / rate : 0;
    int w = 30, fill = total ? (int)((long)w * done / total) : w;
    char bar[64];
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '=' : ' ';
    bar[w] = 0;
    fprintf(stderr, "\r[%s] %d/%d  %.1f images/s  ETA %d:%02d ", bar, done, total, rate,
            (int)eta / 60, (int)eta % 60);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

// ---- Redis writes on the main thread ----

typedef struct writer {
    pr_redis *r;
    pr_batch *b;
    const char *url;
    long ttl;
    int lost;
    int pending; // records in b since the last successful flush
    int unsent;  // records that never reached Redis
    char why[600];
    pipe_state *ps;
} writer;

static void w_flush(writer *w)
{
    if (!w->r || w->lost || pr_batch_len(w->b) == 0) return;
    if (pr_redis_exec(w->r, w->b) == 0) {
        w->pending = 0;
        return;
    }
    w->lost = 1;
    if (w->ps) w->ps->redis_lost = 1;
    w->unsent += w->pending;
    w->pending = 0;
    snprintf(w->why, sizeof(w->why), "%s", pr_redis_errstr(w->r));
    pr_batch_clear(w->b);
    fprintf(stderr,
            "\npneumo predict: %s (gave up after the retries); the remaining results go "
            "to the output only\n",
            w->why);
}

static void w_record(writer *w, const run_info *ri, const rec *r)
{
    if (!w->r) return;
    if (w->lost) {
        w->unsent++;
        return;
    }
    if (r->err) {
        pr_batch_fail(w->b, ri->run_id, r->source, r->err, w->ttl);
    } else if (r->cached) {
        // A duplicate or re-run: the result is there; point this source at it.
        pr_batch_source(w->b, ri->model_id, r->source, r->sha, w->ttl);
    } else {
        pr_result res = {r->source,  r->sha,  r->label, ri->model_id, ri->model_sha256, ri->model,
                         ri->run_id, r->time, r->prob,  r->threshold, r->latency_ms,    0};
        pr_batch_result(w->b, &res, w->ttl);
    }
    w->pending++;
}

static void w_summary(writer *w, const run_info *ri, const char *status, int total, int done,
                      int cached, int failed, double elapsed, const char *started)
{
    if (!w->r || w->lost) return;
    char key[128], t[16], d[16], c[16], f[16], e[32], fin[40];
    snprintf(key, sizeof(key), "pneumo:run:%s", ri->run_id);
    snprintf(t, sizeof(t), "%d", total);
    snprintf(d, sizeof(d), "%d", done);
    snprintf(c, sizeof(c), "%d", cached);
    snprintf(f, sizeof(f), "%d", failed);
    snprintf(e, sizeof(e), "%.3f", elapsed);
    iso_now(fin, sizeof(fin));
    const char *a[] = {"HSET",         key,
                       "status",       status,
                       "model",        ri->model,
                       "model_id",     ri->model_id,
                       "model_sha256", ri->model_sha256,
                       "total",        t,
                       "done",         d,
                       "cached",       c,
                       "failed",       f,
                       "elapsed_s",    e,
                       "started",      started,
                       "updated",      fin};
    pr_batch_add(w->b, (int)(sizeof(a) / sizeof(a[0])), a);
}

// ---- --replay ----

static int replay(const char *file, const char *url, const pr_redis_opts *ro, long ttl)
{
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (!f) return cli_fail("predict", EXIT_FAIL, "--replay %s: %s", file, strerror(errno));
    char err[600];
    pr_redis *r = pr_redis_open(url, ro, err, sizeof(err));
    if (!r) {
        if (f != stdin) fclose(f);
        return cli_fail("predict", EXIT_FAIL, "%s; start Redis or check --redis / REDIS_URL", err);
    }
    pr_batch *b = pr_batch_new();
    char *line  = NULL;
    size_t cap  = 0;
    int results = 0, fails = 0, bad = 0, lineno = 0, rc = EXIT_OK;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        json_error_t je;
        json_t *o       = json_loads(line, 0, &je);
        const char *src = o ? json_string_value(json_object_get(o, "source")) : NULL;
        const char *run = o ? json_string_value(json_object_get(o, "run_id")) : NULL;
        const char *mid = o ? json_string_value(json_object_get(o, "model_id")) : NULL;
        const char *sha = o ? json_string_value(json_object_get(o, "sha256")) : NULL;
        const char *er  = o ? json_string_value(json_object_get(o, "error")) : NULL;
        const char *lab = o ? json_string_value(json_object_get(o, "label")) : NULL;
        if (src && run && er) {
            pr_batch_fail(b, run, src, er, ttl);
            fails++;
        } else if (src && run && mid && sha && lab &&
                   json_is_number(json_object_get(o, "probability"))) {
            const char *ms  = json_string_value(json_object_get(o, "model_sha256"));
            const char *mod = json_string_value(json_object_get(o, "model"));
            const char *tm  = json_string_value(json_object_get(o, "time"));
            pr_result res   = {src,
                               sha,
                               lab,
                               mid,
                             ms ? ms : "",
                             mod ? mod : "",
                               run,
                             tm ? tm : "",
                               json_number_value(json_object_get(o, "probability")),
                               json_number_value(json_object_get(o, "threshold")),
                               json_number_value(json_object_get(o, "latency_ms")),
                               0};
            pr_batch_result(b, &res, ttl);
            results++;
        } else {
            if (!bad)
                fprintf(stderr, "pneumo predict: --replay %s:%d: not a predict JSON line%s%s\n",
                        file, lineno, o ? "" : ": ", o ? "" : je.text);
            bad++;
        }
        json_decref(o);
        if (pr_batch_len(b) >= 512 && pr_redis_exec(r, b) != 0) break;
    }
    free(line);
    if (f != stdin) fclose(f);
    if (pr_redis_exec(r, b) != 0)
        rc = cli_fail("predict", EXIT_FAIL, "%s; nothing after it was written, run --replay again",
                      pr_redis_errstr(r));
    else {
        fprintf(stderr, "replayed %d results and %d failures into Redis at %s\n", results, fails,
                pr_redis_where(r));
        if (bad)
            rc = cli_fail("predict", EXIT_FAIL, "%d lines of %s were not predict records", bad,
                          file);
    }
    pr_batch_free(b);
    pr_redis_close(r);
    return rc;
}

// ---- --enqueue: one stream entry per image for `pneumo worker` ----

static void read_inputs(nt_ctx *ctx, nd_s3 **s3, items *it, int npos, char **pos)
{
    for (int i = 0; i < npos; i++) {
        if (strcmp(pos[i], "-") != 0) {
            add_input(ctx, s3, it, pos[i]);
            continue;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t k;
        while ((k = getline(&line, &cap, stdin)) > 0) {
            while (k > 0 && (line[k - 1] == '\n' || line[k - 1] == '\r' || line[k - 1] == ' '))
                line[--k] = 0;
            if (k > 0 && line[0] != '#') add_input(ctx, s3, it, line);
        }
        free(line);
    }
}

// KEYS: the stream, its set of sources, its meta hash; ARGV: one source. Adds the entry only
// when the source is new to this queue, and counts it in meta's total.
#define ENQUEUE_LUA                                                                                \
    "if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then "                                           \
    "redis.call('XADD', KEYS[1], '*', 'source', ARGV[1]); "                                        \
    "redis.call('HINCRBY', KEYS[3], 'total', 1); return 1 end return 0"

static long queue_total(pr_redis *r, const char *meta)
{
    const char *a[] = {"HGET", meta, "total"};
    redisReply *rep = pr_redis_command(r, 3, a);
    long n          = rep && rep->type == REDIS_REPLY_STRING ? atol(rep->str) : 0;
    if (rep) freeReplyObject(rep);
    return n;
}

static int enqueue(const char *queue, const char *url, const pr_redis_opts *ro, int npos,
                   char **pos)
{
    char err[600];
    pr_redis *r = pr_redis_open(url, ro, err, sizeof(err));
    if (!r)
        return cli_fail("predict", EXIT_FAIL, "%s; start Redis or check --redis / REDIS_URL", err);
    nt_ctx *ctx = cli_ctx("predict", 1, 0);
    if (!ctx) {
        pr_redis_close(r);
        return EXIT_FAIL;
    }
    items it  = {0};
    nd_s3 *s3 = NULL;
    read_inputs(ctx, &s3, &it, npos, pos);
    nd_s3_free(s3);
    size_t ql    = strlen(queue) + 32;
    char *stream = malloc(ql), *meta = malloc(ql), *sources = malloc(ql);
    snprintf(stream, ql, "pneumo:queue:%s", queue);
    snprintf(meta, ql, "pneumo:queue:%s:meta", queue);
    snprintf(sources, ql, "pneumo:queue:%s:sources", queue);
    int rc = EXIT_OK, nq = 0, nbad = 0;
    // The group first, at 0: workers see every entry, including ones added before they start.
    const char *g[] = {"XGROUP", "CREATE", stream, "workers", "0", "MKSTREAM"};
    redisReply *rep = pr_redis_command(r, 6, g);
    if (!rep || (rep->type == REDIS_REPLY_ERROR && !strstr(rep->str, "BUSYGROUP"))) {
        rc = cli_fail("predict", EXIT_FAIL, "--enqueue: XGROUP CREATE %s: %s", stream,
                      rep ? rep->str : pr_redis_errstr(r));
        if (rep) freeReplyObject(rep);
        goto out;
    }
    freeReplyObject(rep);
    pr_batch *b = pr_batch_new();
    char now[40];
    pr_iso_now(now, sizeof(now));
    const char *c[] = {"HSETNX", meta, "created", now};
    pr_batch_add(b, 4, c);
    long before = queue_total(r, meta);
    for (int i = 0; i < it.n; i++) {
        if (it.v[i].err) {
            fprintf(stderr, "pneumo predict: %s (not enqueued)\n", it.v[i].err);
            nbad++;
            continue;
        }
        // Idempotent (a resend after a lost connection queues nothing twice), and a source
        // already in this queue is skipped: re-running an --enqueue adds only what is new.
        const char *a[] = {"EVAL", ENQUEUE_LUA, "3", stream, sources, meta, it.v[i].source};
        pr_batch_add(b, 7, a);
        nq++;
        if (pr_batch_len(b) >= 512 && pr_redis_exec(r, b) != 0) break;
    }
    const char *u[] = {"HSET", meta, "updated", now};
    pr_batch_add(b, 4, u);
    if (pr_redis_exec(r, b) != 0)
        rc = cli_fail("predict", EXIT_FAIL, "--enqueue: %s (some entries may not be queued)",
                      pr_redis_errstr(r));
    else {
        long added = queue_total(r, meta) - before;
        fprintf(stderr, "enqueued %ld images to %s at %s", added, stream, pr_redis_where(r));
        if (added < nq) fprintf(stderr, " (%ld already in the queue)", nq - added);
        fprintf(stderr, "\n");
        if (nbad)
            rc = cli_fail("predict", EXIT_FAIL, "%d inputs could not be listed", nbad);
        else if (nq == 0)
            rc = cli_fail("predict", EXIT_FAIL, "no images found in the inputs given");
    }
    pr_batch_free(b);
out:
    for (int k = 0; k < it.n; k++) {
        free(it.v[k].source);
        free(it.v[k].err);
    }
    free(it.v);
    free(stream);
    free(meta);
    free(sources);
    nt_ctx_free(ctx);
    pr_redis_close(r);
    return rc;
}

// ---- the command ----

int cmd_predict(int argc, char **argv)
{
    const char *model = NULL, *resize_s = "area", *format = NULL, *out_path = NULL;
    const char *redis_url = NULL, *replay_file = NULL, *queue = NULL;
    int threads = 0, batch = 8, loaders = 2, force = 0, ttl = 0, retries = 4, enq = 0;
    const char *dtype = NULL;
    cli_opt opts[]    = {
           {"model", OPT_STR, &model, 0, 0, "FILE", "model file (default " DEFAULT_MODEL ")"},
           {"batch", OPT_INT, &batch, 1, 1024, "N", "images per forward pass, default 8"},
           {"threads", OPT_INT, &threads, 0, 1024, "N", "compute threads, default all CPUs"},
           {"dtype", OPT_STR, &dtype, 0, 0, "f32|bf16",
            "compute in f32 or bf16 (AVX512_BF16, on AMX tiles where present); default $PNEUMO_DTYPE, "
               "else f32"},
           {"loader-threads", OPT_INT, &loaders, 1, 64, "N",
            "threads that read, hash and decode, default 2"},
           {"resize", OPT_STR, &resize_s, 0, 0, "nearest|bilinear|area",
            "how images are resized to the model's input, default area"},
           {"format", OPT_STR, &format, 0, 0, "jsonl|csv|table",
            "output format; default table on a terminal, else jsonl"},
           {"out", OPT_STR, &out_path, 0, 0, "FILE", "write the records here instead of stdout"},
           {"redis", OPT_STR, &redis_url, 0, 0, "URL",
            "redis://[:password@]host:port/db (default $REDIS_URL; unset: no Redis)"},
           {"force", OPT_FLAG, &force, 0, 0, NULL, "recompute even when Redis has the result"},
           {"ttl", OPT_INT, &ttl, 0, 2147483647.0, "SECONDS",
            "expire results, source index and failures after this long (default 0: never)"},
           {"redis-retries", OPT_INT, &retries, 0, 100, "N",
            "reconnects before Redis counts as lost, default 4"},
           {"replay", OPT_STR, &replay_file, 0, 0, "FILE",
            "write the JSON lines of an earlier run (\"-\": stdin) to Redis, then exit"},
           {"enqueue", OPT_FLAG, &enq, 0, 0, NULL,
            "list the inputs into the Redis queue --queue for `pneumo worker`, then exit"},
           {"queue", OPT_STR, &queue, 0, 0, "NAME", "the queue for --enqueue"},
    };
    cli_cmd cmd = {"predict",
                   "[--model FILE] [options] IMAGE|FOLDER|s3://bucket/prefix/|-...",
                   "Predict the probability of pneumonia for each image; results to Redis and "
                   "JSON lines or CSV.",
                   opts,
                   (int)(sizeof(opts) / sizeof(opts[0])),
                   0,
                   -1};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if ((rc = cli_check_dtype("predict", dtype))) return rc;
    redis_url = pr_redis_url(redis_url);
    pr_redis_opts ropts;
    pr_redis_opts_default(&ropts);
    ropts.retries = retries;
    if (replay_file) {
        if (npos)
            return cli_fail("predict", EXIT_USAGE, "--replay takes no images (got \"%s\")", pos[0]);
        if (!redis_url)
            return cli_fail("predict", EXIT_USAGE, "--replay needs --redis URL or REDIS_URL");
        return replay(replay_file, redis_url, &ropts, ttl);
    }
    if (enq || queue) {
        if (!enq || !queue || !*queue)
            return cli_fail("predict", EXIT_USAGE, "--enqueue and --queue NAME go together");
        if (npos == 0)
            return cli_fail("predict", EXIT_USAGE,
                            "--enqueue expects images, folders, s3:// prefixes or -");
        if (!redis_url)
            return cli_fail("predict", EXIT_USAGE, "--enqueue needs --redis URL or REDIS_URL");
        return enqueue(queue, redis_url, &ropts, npos, pos);
    }
    if (npos == 0)
        return cli_fail("predict", EXIT_USAGE,
                        "expected images, folders, s3:// prefixes or - (a list on stdin); see "
                        "`pneumo predict --help`");
    out_fmt fmt = (out_path ? 0 : cli_isatty(stdout)) ? FMT_TABLE : FMT_JSONL;
    if (format) {
        if (strcmp(format, "jsonl") == 0)
            fmt = FMT_JSONL;
        else if (strcmp(format, "csv") == 0)
            fmt = FMT_CSV;
        else if (strcmp(format, "table") == 0)
            fmt = FMT_TABLE;
        else
            return cli_fail("predict", EXIT_USAGE,
                            "--format expects jsonl, csv or table, got \"%s\"", format);
    }
    if (!model) {
        if (access(DEFAULT_MODEL, R_OK) != 0)
            return cli_fail("predict", EXIT_USAGE,
                            "no --model given and the default %s is not here; create one with "
                            "`pneumo init --out FILE` or train one",
                            DEFAULT_MODEL);
        model = DEFAULT_MODEL;
    }
    // Redis first: an unreachable server is an error before any work.
    writer w = {0};
    w.ttl    = ttl;
    w.url    = redis_url;
    if (redis_url) {
        char err[600];
        w.r = pr_redis_open(redis_url, &ropts, err, sizeof(err));
        if (!w.r)
            return cli_fail("predict", EXIT_FAIL,
                            "%s; start Redis, check --redis / REDIS_URL, or leave both unset to "
                            "predict without Redis",
                            err);
        w.b = pr_batch_new();
    }
    nt_ctx *ctx = cli_ctx_dtype("predict", threads, 0, dtype);
    if (!ctx) {
        pr_redis_close(w.r);
        pr_batch_free(w.b);
        return EXIT_FAIL;
    }
    nt_model *m = NULL;
    nt_model_meta meta;
    nt_tensor x        = {0};
    float *probs       = NULL;
    int *bidx          = NULL;
    FILE *out          = stdout;
    items it           = {0};
    nd_s3 *s3          = NULL;
    pipe_state ps      = {0};
    pthread_t *ths     = NULL;
    int nths           = 0;
    char model_sha[65] = "", model_id[17] = "";
    nd_resize resize;
    if (nd_resize_parse(ctx, resize_s, &resize) != NT_OK) {
        rc = cli_fail("predict", EXIT_USAGE, "--%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    if ((rc = pr_model_open("predict", ctx, model, &m, &meta, model_sha, model_id))) goto out;
    // Inputs.
    read_inputs(ctx, &s3, &it, npos, pos);
    nd_s3_free(s3);
    s3 = NULL;
    // The model's one-time work (packing its weights) before the clock starts, as serve does.
    if (it.n > 0 && nt_model_prepare(m, it.n < batch ? it.n : batch, 0) != NT_OK) {
        rc = cli_fail("predict", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    if (out_path && !(out = fopen(out_path, "w"))) {
        out = stdout;
        rc  = cli_fail("predict", EXIT_FAIL, "cannot write %s: %s", out_path, strerror(errno));
        goto out;
    }
    int S          = meta.cfg.img_size;
    int64_t shp[4] = {batch, S, S, 3};
    probs          = malloc(sizeof(float) * (size_t)batch);
    bidx           = malloc(sizeof(int) * (size_t)batch);
    ps.Q           = 2 * batch + loaders;
    ps.slots       = calloc((size_t)ps.Q, sizeof(slot));
    int oom        = nt_tensor_new(ctx, 4, shp, &x) != NT_OK || !probs || !bidx || !ps.slots;
    for (int q = 0; !oom && q < ps.Q; q++)
        oom = !(ps.slots[q].x = malloc(sizeof(float) * (size_t)S * S * 3));
    if (oom) {
        rc = cli_fail("predict", EXIT_FAIL, "out of memory for a batch of %d", batch);
        goto out;
    }
    // Run id: UTC time plus random bits (two runs in the same second stay apart).
    char run_id[48], started[40];
    {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        char ts[24];
        strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
        unsigned rnd = (unsigned)getpid() * 2654435761u ^ (unsigned)(now_s() * 1e6);
        FILE *ur     = fopen("/dev/urandom", "rb");
        if (ur) {
            if (fread(&rnd, sizeof(rnd), 1, ur) != 1) rnd ^= 0x9e3779b9u;
            fclose(ur);
        }
        snprintf(run_id, sizeof(run_id), "%s-%08x", ts, rnd);
        iso_now(started, sizeof(started));
    }
    run_info ri = {model, model_id, model_sha, run_id, fmt, out};
    w.ps        = &ps;
    int total = it.n, ndone = 0, ncached = 0, nfailed = 0, nseen = 0;
    double t0 = now_s();
    if (w.r) {
        w_summary(&w, &ri, "running", total, 0, 0, 0, 0, started);
        char key[64], sc[32];
        snprintf(key, sizeof(key), "pneumo:runs");
        snprintf(sc, sizeof(sc), "%ld", (long)time(NULL));
        const char *a[] = {"ZADD", key, sc, run_id};
        pr_batch_add(w.b, 4, a);
        w_flush(&w);
    }
    if (fmt == FMT_CSV)
        fprintf(out, "source,probability,label,threshold,sha256,model_id,model,cached,time,"
                     "latency_ms,run_id,error\n");
    else if (fmt == FMT_TABLE)
        fprintf(out, "%-50s %8s  %s\n", "image", "p", "label");
    int bar = cli_isatty(stderr) && total > 0;

    ps.it            = &it;
    ps.S             = S;
    ps.force         = force;
    ps.resize        = resize;
    ps.pre           = meta.preprocess;
    ps.redis_url     = redis_url;
    ps.model_id      = model_id;
    ps.ropts         = ropts;
    ps.ropts.retries = 0;
    pthread_mutex_init(&ps.mu, NULL);
    pthread_cond_init(&ps.cv_ready, NULL);
    pthread_cond_init(&ps.cv_space, NULL);
    ths = calloc((size_t)loaders, sizeof(pthread_t));
    for (; ths && nths < loaders && nths < total; nths++)
        if (pthread_create(&ths[nths], NULL, loader_main, &ps) != 0) break;
    if (total > 0 && nths == 0) {
        rc = cli_fail("predict", EXIT_FAIL, "cannot start a loader thread");
        goto out;
    }
    char tnow[40];
    int n = 0;
    // Seconds the model spent computing, and waiting for the loaders (a long wait: loading is
    // the bottleneck; more --loader-threads may help).
    double t_model = 0, t_wait = 0;
    for (int i = 0; i < total; i++) {
        slot *s = &ps.slots[i % ps.Q];
        pthread_mutex_lock(&ps.mu);
        if (!(s->ready && s->idx == i)) {
            const double tw = now_s();
            while (!(s->ready && s->idx == i))
                pthread_cond_wait(&ps.cv_ready, &ps.mu);
            t_wait += now_s() - tw;
        }
        pthread_mutex_unlock(&ps.mu);
        rec r = {it.v[i].source, s->sha, NULL, NULL, tnow, 0, 0, s->prep_ms, 0};
        if (s->kind == SLOT_COMPUTE) {
            memcpy(x.data + (size_t)n * S * S * 3, s->x, sizeof(float) * (size_t)S * S * 3);
            bidx[n++] = i;
            // The slot is reused once released: the hash and prep time stay with the item.
            memcpy(it.v[i].sha, s->sha, sizeof(s->sha));
            it.v[i].prep_ms = s->prep_ms;
        } else {
            iso_now(tnow, sizeof(tnow));
            if (s->kind == SLOT_CACHED) {
                r.prob      = s->prob;
                r.threshold = s->threshold;
                r.label     = s->label;
                r.cached    = 1;
                ncached++;
                ndone++;
            } else {
                r.err = s->err;
                nfailed++;
            }
            emit(&ri, &r);
            w_record(&w, &ri, &r);
            nseen++;
        }
        pthread_mutex_lock(&ps.mu);
        s->ready    = 0;
        ps.consumed = i + 1;
        pthread_cond_broadcast(&ps.cv_space);
        pthread_mutex_unlock(&ps.mu);

        if (n > 0 && (n == batch || i == total - 1)) {
            double tf    = now_s();
            nt_tensor xb = x;
            xb.shape[0]  = n;
            if (nt_model_forward(m, &xb, 0, 0) != NT_OK ||
                nt_model_loss(m, NULL, NULL, NULL, probs, NULL) != NT_OK) {
                rc = cli_fail("predict", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
                goto out;
            }
            const double dt = now_s() - tf;
            t_model += dt;
            double fwd_ms = dt * 1e3 / n;
            iso_now(tnow, sizeof(tnow));
            for (int k = 0; k < n; k++) {
                item *itm = &it.v[bidx[k]];
                int lab   = probs[k] >= meta.threshold;
                rec rr    = {itm->source,
                             itm->sha,
                             meta.class_names[lab],
                             NULL,
                             tnow,
                             probs[k],
                             (double)meta.threshold,
                             itm->prep_ms + fwd_ms,
                             0};
                emit(&ri, &rr);
                w_record(&w, &ri, &rr);
                ndone++;
                nseen++;
            }
            n = 0;
            w_summary(&w, &ri, "running", total, ndone, ncached, nfailed, now_s() - t0, started);
            w_flush(&w);
        } else if (w.r && pr_batch_len(w.b) >= 256) {
            w_flush(&w);
        }
        if (bar) progress(nseen, total, t0, 0);
    }
    double elapsed = now_s() - t0;
    w_summary(&w, &ri, "done", total, ndone, ncached, nfailed, elapsed, started);
    w_flush(&w);
    if (bar) progress(nseen, total, t0, 1);
    fprintf(stderr,
            "predict: %d images: %d done (%d cached), %d failed in %.1f s (%.1f images/s; model "
            "%.1f s, waiting for input %.1f s)%s%s\n",
            total, ndone, ncached, nfailed, elapsed, elapsed > 0 ? nseen / elapsed : 0.0, t_model,
            t_wait, w.r ? "; run " : "", w.r ? run_id : "");
    if (w.lost) {
        if (fmt == FMT_JSONL)
            rc = cli_fail("predict", EXIT_FAIL,
                          "Redis was lost (%s): %d records did not reach it. They are all in %s; "
                          "when Redis is back, write them with `pneumo predict --replay %s`",
                          w.why, w.unsent, out_path ? out_path : "the JSON lines on stdout",
                          out_path ? out_path : "FILE");
        else
            rc = cli_fail("predict", EXIT_FAIL,
                          "Redis was lost (%s): %d records did not reach it. `pneumo predict "
                          "--replay FILE` reads JSON lines only: run again (with --format jsonl "
                          "--out FILE); cached results are not recomputed",
                          w.why, w.unsent);
    } else if (nfailed) {
        rc = cli_fail("predict", EXIT_FAIL, "%d of %d images failed (see their records%s)", nfailed,
                      total, w.r ? " and pneumo:fail:<run_id> in Redis" : " above");
    } else if (total == 0) {
        rc = cli_fail("predict", EXIT_FAIL, "no images found in the inputs given");
    }
    if (out != stdout && fclose(out) != 0 && rc == EXIT_OK)
        rc = cli_fail("predict", EXIT_FAIL, "writing %s: %s", out_path, strerror(errno));
    out = stdout;
out:
    if (nths) {
        pthread_mutex_lock(&ps.mu);
        ps.stop = 1;
        pthread_cond_broadcast(&ps.cv_space);
        pthread_mutex_unlock(&ps.mu);
        for (int k = 0; k < nths; k++)
            pthread_join(ths[k], NULL);
    }
    free(ths);
    if (ps.slots)
        for (int q = 0; q < ps.Q; q++)
            free(ps.slots[q].x);
    free(ps.slots);
    if (out != stdout) fclose(out);
    for (int k = 0; k < it.n; k++) {
        free(it.v[k].source);
        free(it.v[k].err);
    }
    free(it.v);
    nd_s3_free(s3);
    free(probs);
    free(bidx);
    nt_tensor_free(&x);
    nt_model_free(m);
    nt_ctx_free(ctx);
    pr_batch_free(w.b);
    pr_redis_close(w.r);
    return rc;
}
