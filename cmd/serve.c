/*
 * serve.c: `pneumo serve`: the HTTP API (libmicrohttpd thread pool, JSON through jansson), token
 * auth, static files for the page, Prometheus metrics, the Redis cache (a mutex-protected pool of
 * pr_redis handles that fails fast and reconnects at most once a second) and a small in-process
 * LRU of recent results and heat maps. Uploads are decoded (once) and preprocessed on the HTTP
 * threads exactly as `pneumo predict` does (pr_load_image's functions), then the connection is
 * suspended (MHD_suspend_connection) while cmd/serve_infer.c batches the model; the inference
 * thread resumes it. Heat maps are drawn on their first GET from the source the upload kept
 * (serve.h), then cached as PNGs. Endpoints and JSON: README.md "pneumo serve".
 * Tests: tests/serve.sh.
 */
#include "cmd/cli.h"
#include "cmd/results.h"
#include "cmd/serve.h"
#include "cmd/token.h"
#include "data/nd.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>

#define DEFAULT_MODEL "weights/pneumo-resnet50.safetensors"
#define CAM_LAYER     "conv5_block3_out"
#define LRU_N         64
#define HISTORY_MAX   1000
#define DISPLAY_MAX   512 // heat maps: the image's size, the long side capped at this

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- metrics ----

enum {
    RT_PREDICT, // POST and GET /api/v1/predictions
    RT_ITEM,    // /api/v1/predictions/{id}
    RT_HEATMAP, // /api/v1/predictions/{id}/heatmap.png
    RT_API_OTHER,
    RT_HEALTHZ,
    RT_READYZ,
    RT_METRICS,
    RT_STATIC,
    RT_N
};
static const char *route_names[RT_N] = {"/api/v1/predictions",
                                        "/api/v1/predictions/{id}",
                                        "/api/v1/predictions/{id}/heatmap.png",
                                        "/api/other",
                                        "/healthz",
                                        "/readyz",
                                        "/metrics",
                                        "static"};
static const double dur_buckets[]    = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NDUR (int)(sizeof(dur_buckets) / sizeof(dur_buckets[0]))
static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64};
#define NBATCH (int)(sizeof(batch_buckets) / sizeof(batch_buckets[0]))

typedef struct histo {
    uint64_t b[16], count;
    double sum;
} histo;

typedef struct metrics {
    pthread_mutex_t mu;
    struct {
        int route, code;
        uint64_t n;
    } req[128];
    int nreq;
    histo dur[RT_N], batch, infer;
    uint64_t hits, misses, heatmaps;
} metrics;

static void histo_add(histo *h, const double *bk, int nb, double v)
{
    for (int i = 0; i < nb; i++)
        if (v <= bk[i]) h->b[i]++;
    h->count++;
    h->sum += v;
}

// ---- the server's state ----

typedef struct lru_ent {
    char sha[65];
    double prob, threshold, latency_ms;
    char label[64], time[40];
    uint8_t *png; // the heat map once drawn, else
    uint8_t *src; // what to draw it from (serve.h), until then
    size_t png_len, src_len;
    uint64_t used;
} lru_ent;

typedef struct server {
    // read-only after start
    const char *model_path, *model_name, *web_root, *tokens_path, *redis_url;
    char web_real[PATH_MAX];
    char model_id[17], model_sha[65];
    const char *dtype_name; // "f32" or "bf16": what the model computes in
    nt_model_meta meta;
    int S, insecure, quiet;
    long ttl;
    size_t max_bytes;
    double max_pixels;
    sv_infer *infer;
    struct MHD_Daemon *d;
    // tokens
    pthread_mutex_t tok_mu;
    pr_tokens tokens;
    time_t tok_mtime;
    double tok_checked;
    // redis pool
    pthread_mutex_t r_mu;
    pr_redis *r_free[64];
    int r_nfree, r_up;
    double r_last_fail;
    // LRU
    pthread_mutex_t lru_mu;
    lru_ent lru[LRU_N];
    uint64_t lru_clock;
    // in flight, and the HTTP threads' decode contexts (freed at shutdown)
    pthread_mutex_t fl_mu;
    int inflight;
    nt_ctx *tctx[512];
    int ntctx;
    metrics mt;
} server;

// ---- tokens ----

static void tokens_reload(server *sv, int force)
{
    if (sv->insecure) return;
    double now = mono();
    pthread_mutex_lock(&sv->tok_mu);
    int due = force || now - sv->tok_checked >= 1.0;
    if (due) sv->tok_checked = now;
    pthread_mutex_unlock(&sv->tok_mu);
    if (!due) return;
    struct stat st;
    time_t mt =
        stat(sv->tokens_path, &st) == 0 ? st.st_mtim.tv_sec * 1000000000L + st.st_mtim.tv_nsec : 0;
    pthread_mutex_lock(&sv->tok_mu);
    int changed = force || mt != sv->tok_mtime;
    pthread_mutex_unlock(&sv->tok_mu);
    if (!changed) return;
    pr_tokens t;
    char err[600];
    if (pr_tokens_load(sv->tokens_path, 1, &t, err, sizeof(err))) {
        // Keep the tokens we had: a half-written file must not lock everyone out.
        fprintf(stderr, "pneumo serve: %s; keeping the previous tokens\n", err);
        return;
    }
    pthread_mutex_lock(&sv->tok_mu);
    pr_tokens_free(&sv->tokens);
    sv->tokens    = t;
    sv->tok_mtime = mt;
    pthread_mutex_unlock(&sv->tok_mu);
    if (!sv->quiet)
        fprintf(stderr, "pneumo serve: %d tokens loaded from %s\n", t.n, sv->tokens_path);
}

static int authorized(server *sv, struct MHD_Connection *c)
{
    if (sv->insecure) return 1;
    tokens_reload(sv, 0);
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ')
        h++;
    pthread_mutex_lock(&sv->tok_mu);
    int ok = pr_tokens_check(&sv->tokens, h, strlen(h)) >= 0;
    pthread_mutex_unlock(&sv->tok_mu);
    return ok;
}

// ---- Redis pool: fail fast, reconnect at most once a second ----

static pr_redis *redis_get(server *sv)
{
    if (!sv->redis_url) return NULL;
    pthread_mutex_lock(&sv->r_mu);
    if (sv->r_nfree) {
        pr_redis *r = sv->r_free[--sv->r_nfree];
        pthread_mutex_unlock(&sv->r_mu);
        return r;
    }
    if (!sv->r_up && mono() - sv->r_last_fail < 1.0) {
        pthread_mutex_unlock(&sv->r_mu);
        return NULL;
    }
    sv->r_last_fail = mono(); // one connect try per second while down, across all threads
    pthread_mutex_unlock(&sv->r_mu);
    pr_redis_opts o;
    pr_redis_opts_default(&o);
    o.retries   = 0;
    o.timeout_s = 0.25;
    char err[600];
    pr_redis *r = pr_redis_open(sv->redis_url, &o, err, sizeof(err));
    pthread_mutex_lock(&sv->r_mu);
    if (!r && sv->r_up)
        fprintf(stderr, "pneumo serve: Redis is down (%s); serving uncached\n", err);
    if (r && !sv->r_up) fprintf(stderr, "pneumo serve: Redis is up at %s\n", pr_redis_where(r));
    sv->r_up = r != NULL;
    pthread_mutex_unlock(&sv->r_mu);
    return r;
}

// ok = 0: the handle failed; it and every idle one are closed (they share the dead server).
static void redis_put(server *sv, pr_redis *r, int ok)
{
    if (!r) return;
    pthread_mutex_lock(&sv->r_mu);
    if (ok && sv->r_nfree < (int)(sizeof(sv->r_free) / sizeof(sv->r_free[0]))) {
        sv->r_free[sv->r_nfree++] = r;
        r                         = NULL;
    } else if (!ok) {
        if (sv->r_up)
            fprintf(stderr, "pneumo serve: Redis is down (%s); serving uncached\n",
                    pr_redis_errstr(r));
        sv->r_up        = 0;
        sv->r_last_fail = mono();
        while (sv->r_nfree)
            pr_redis_close(sv->r_free[--sv->r_nfree]);
    }
    pthread_mutex_unlock(&sv->r_mu);
    pr_redis_close(r);
}

// One command; NULL when Redis is down or failed (the handle is then dropped).
static redisReply *redis_cmd(server *sv, int argc, const char **argv, const size_t *lens)
{
    pr_redis *r = redis_get(sv);
    if (!r) return NULL;
    redisReply *rep = pr_redis_command_len(r, argc, argv, lens);
    redis_put(sv, r, rep != NULL);
    return rep;
}

static int redis_ping(server *sv)
{
    const char *a[] = {"PING"};
    redisReply *rep = redis_cmd(sv, 1, a, NULL);
    int ok          = rep && rep->type == REDIS_REPLY_STATUS;
    if (rep) freeReplyObject(rep);
    return ok;
}

// ---- LRU of recent results (the page keeps working while Redis is down) ----

// Stores a result with the source of its heat map (src taken, may be NULL). An entry for sha that
// already has its PNG keeps it (a concurrent upload of the same image).
static void lru_put(server *sv, const char *sha, double prob, const char *label, double thr,
                    double lat, const char *tm, uint8_t *src, size_t src_len)
{
    pthread_mutex_lock(&sv->lru_mu);
    lru_ent *e = NULL;
    for (int i = 0; i < LRU_N && !e; i++)
        if (strcmp(sv->lru[i].sha, sha) == 0) e = &sv->lru[i];
    for (int i = 0; i < LRU_N && !e; i++)
        if (!sv->lru[i].sha[0]) e = &sv->lru[i];
    if (!e) {
        e = &sv->lru[0];
        for (int i = 1; i < LRU_N; i++)
            if (sv->lru[i].used < e->used) e = &sv->lru[i];
    }
    int same = strcmp(e->sha, sha) == 0;
    if (!same || (!e->png && src)) {
        if (!same) {
            free(e->png);
            e->png     = NULL;
            e->png_len = 0;
        }
        free(e->src);
        e->src     = src;
        e->src_len = src ? src_len : 0;
        src        = NULL;
    }
    free(src);
    snprintf(e->sha, sizeof(e->sha), "%s", sha);
    e->prob       = prob;
    e->threshold  = thr;
    e->latency_ms = lat;
    snprintf(e->label, sizeof(e->label), "%s", label);
    snprintf(e->time, sizeof(e->time), "%s", tm);
    e->used = ++sv->lru_clock;
    pthread_mutex_unlock(&sv->lru_mu);
}

enum { LRU_PNG = 1, LRU_SRC = 2 };

// Copies the entry for sha out; its PNG (want & LRU_PNG), else its heat-map source
// (want & LRU_SRC), is malloc'd into out when present, every other pointer is NULL. 1 found, 0 not.
static int lru_get(server *sv, const char *sha, lru_ent *out, int want)
{
    int found = 0;
    pthread_mutex_lock(&sv->lru_mu);
    for (int i = 0; i < LRU_N; i++)
        if (sv->lru[i].sha[0] && strcmp(sv->lru[i].sha, sha) == 0) {
            const lru_ent *e = &sv->lru[i];
            *out             = *e;
            out->png = out->src = NULL;
            if ((want & LRU_PNG) && e->png && (out->png = malloc(e->png_len)))
                memcpy(out->png, e->png, e->png_len);
            else if ((want & LRU_SRC) && !e->png && e->src && (out->src = malloc(e->src_len)))
                memcpy(out->src, e->src, e->src_len);
            sv->lru[i].used = ++sv->lru_clock;
            found           = 1;
            break;
        }
    pthread_mutex_unlock(&sv->lru_mu);
    return found;
}

// The heat map of sha was drawn: the entry (if still there) keeps a copy and drops its source.
static void lru_set_png(server *sv, const char *sha, const uint8_t *png, size_t len)
{
    pthread_mutex_lock(&sv->lru_mu);
    for (int i = 0; i < LRU_N; i++) {
        lru_ent *e = &sv->lru[i];
        if (!e->sha[0] || strcmp(e->sha, sha) != 0) continue;
        uint8_t *copy = e->png ? NULL : malloc(len);
        if (copy) {
            memcpy(copy, png, len);
            e->png     = copy;
            e->png_len = len;
            free(e->src);
            e->src     = NULL;
            e->src_len = 0;
        }
        break;
    }
    pthread_mutex_unlock(&sv->lru_mu);
}

// ---- responses ----

typedef struct req {
    struct server *sv;
    int route, status;
    double t0, t_body;
    const char *method;
    // upload
    struct MHD_PostProcessor *pp;
    uint8_t *body;
    size_t len, cap, seen;
    int too_big, oom, part_chosen, part_is_image, part_done;
    // waiting on the model
    int expected; // announced to the inference thread (sv_infer_expect), not yet queued
    int waiting;
    sv_job job;
    struct MHD_Connection *conn;
    char sha[65];
    nd_image disp;
    int cached_prob; // the probability came from Redis; only the heat map was missing
    double prob, thr;
    char label[64];
} req;

static enum MHD_Result send_buf(struct MHD_Connection *c, req *r, int status, const char *type,
                                void *buf, size_t len, int must_free)
{
    if (r->expected) { // answered without a job (a cache hit, an error): nothing to wait for
        sv_infer_expect(r->sv->infer, -1);
        r->expected = 0;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, buf, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (r->route <= RT_API_OTHER) {
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    }
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE && r->route == RT_PREDICT)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                r->route == RT_PREDICT ? "GET, POST" : "GET, HEAD");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *c, req *r, int status, json_t *j)
{
    // The numbers are float32 values and milliseconds: 10 significant digits, not jansson's 17.
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(j);
    if (!s) return MHD_NO;
    size_t n = strlen(s);
    char *b  = malloc(n + 2);
    if (!b) {
        free(s);
        return MHD_NO;
    }
    memcpy(b, s, n);
    b[n] = '\n';
    free(s);
    return send_buf(c, r, status, "application/json", b, n + 1, 1);
}

static enum MHD_Result send_err(struct MHD_Connection *c, req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_err(struct MHD_Connection *c, req *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return send_json(c, r, status, json_pack("{s:s}", "error", msg));
}

static json_t *record_json(server *sv, const char *sha, double prob, const char *label, double thr,
                           const char *model, const char *mid, int cached, double lat,
                           const char *tm)
{
    char hm[160];
    snprintf(hm, sizeof(hm), "/api/v1/predictions/%s/heatmap.png", sha);
    return json_pack("{s:s, s:s, s:f, s:s, s:f, s:s, s:s, s:b, s:f, s:s, s:s}", "id", sha, "sha256",
                     sha, "probability", prob, "label", label, "threshold", thr, "model", model,
                     "model_id", mid, "cached", cached, "latency_ms", round(lat * 1000) / 1000,
                     "time", tm, "heatmap", hm);
}

// The record of pneumo:result:<mid>:<sha> as JSON (cached: true), or NULL (missing or down).
static json_t *redis_record(server *sv, const char *mid, const char *sha, int *down)
{
    char key[160];
    snprintf(key, sizeof(key), "pneumo:result:%s:%s", mid, sha);
    const char *a[] = {"HMGET", key,    "probability", "label",   "threshold",
                       "model", "time", "latency_ms",  "model_id"};
    redisReply *rep = redis_cmd(sv, 9, a, NULL);
    if (down) *down = rep == NULL;
    if (!rep) return NULL;
    json_t *j = NULL;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 7) {
        const char *v[7];
        int all = 1;
        for (int i = 0; i < 7; i++) {
            v[i] = rep->element[i]->type == REDIS_REPLY_STRING ? rep->element[i]->str : NULL;
            if (i < 3 && !v[i]) all = 0;
        }
        if (all)
            j = record_json(sv, sha, strtod(v[0], NULL), v[1], strtod(v[2], NULL),
                            v[3] ? v[3] : sv->model_name, v[6] ? v[6] : mid, 1,
                            v[5] ? strtod(v[5], NULL) : 0, v[4] ? v[4] : "");
    }
    freeReplyObject(rep);
    return j;
}

static int is_sha(const char *s, size_t n)
{
    if (n != 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

// ---- uploads ----

static int body_add(server *sv, req *r, const char *data, size_t n)
{
    if (r->too_big || r->oom) return 0;
    if (r->len + n > sv->max_bytes) {
        r->too_big = 1;
        return 0;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 65536;
        while (cap < r->len + n)
            cap *= 2;
        uint8_t *p = realloc(r->body, cap);
        if (!p) {
            r->oom = 1;
            return 0;
        }
        r->body = p;
        r->cap  = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return 1;
}

static enum MHD_Result post_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    req *r    = cls;
    int image = key && strcmp(key, "image") == 0;
    if (off == 0) {
        // The field "image", else the first file part; a later "image" part replaces a file.
        if (!r->part_chosen && (image || filename)) {
            r->part_chosen   = 1;
            r->part_is_image = image;
            r->part_done     = 0;
            r->len           = 0;
        } else if (r->part_chosen && image && !r->part_is_image) {
            r->part_is_image = 1;
            r->part_done     = 0;
            r->len           = 0;
        } else {
            if (r->part_chosen) r->part_done = 1;
            return MHD_YES;
        }
    } else if (!r->part_chosen || r->part_done || (r->part_is_image && !image) ||
               (!r->part_is_image && !filename)) {
        return MHD_YES;
    }
    if (size) body_add(r->sv, r, data, size);
    return MHD_YES;
}

static const char *what_is(const uint8_t *b, size_t n, char *out, size_t len)
{
    if (n == 0) return "an empty body";
    if (n >= 4 && memcmp(b, "GIF8", 4) == 0) return "a GIF";
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return "a BMP";
    if (n >= 4 && memcmp(b, "%PDF", 4) == 0) return "a PDF";
    if (n >= 4 && (memcmp(b, "II*", 3) == 0 || memcmp(b, "MM\0*", 4) == 0)) return "a TIFF";
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return "a WebP";
    size_t k = n < 64 ? n : 64, text = 1;
    for (size_t i = 0; i < k; i++)
        if (b[i] < 9 || (b[i] > 13 && b[i] < 32) || b[i] == 127) text = 0;
    if (text) return "text";
    snprintf(out, len, "%zu bytes starting %02x %02x %02x %02x", n, b[0], n > 1 ? b[1] : 0,
             n > 2 ? b[2] : 0, n > 3 ? b[3] : 0);
    return out;
}

// Image size from the header, before any pixel memory. 0, or -1 (not a sane header).
static int image_dims(const uint8_t *b, size_t n, int png, long *w, long *h)
{
    if (png) {
        if (n < 24 || memcmp(b + 12, "IHDR", 4) != 0) return -1;
        *w = (long)((uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19]);
        *h = (long)((uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23]);
        return *w > 0 && *h > 0 ? 0 : -1;
    }
    tjhandle tj = tjInitDecompress();
    if (!tj) return -1;
    int iw = 0, ih = 0, ss = 0, cs = 0;
    int bad = tjDecompressHeader3(tj, b, (unsigned long)n, &iw, &ih, &ss, &cs) != 0;
    tjDestroy(tj);
    *w = iw;
    *h = ih;
    return bad || iw <= 0 || ih <= 0 ? -1 : 0;
}

static _Thread_local nt_ctx *tl_ctx; // per HTTP thread: decode errors land here

// The calling HTTP thread's context (one thread, errors only), made on first use and kept in
// sv->tctx so that shutdown frees it. NULL when out of memory or past the table.
static nt_ctx *thread_ctx(server *sv)
{
    if (tl_ctx) return tl_ctx;
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.nthreads = 1;
    nt_ctx *c  = NULL;
    if (nt_ctx_new(&o, &c) != NT_OK) {
        nt_ctx_free(c);
        return NULL;
    }
    pthread_mutex_lock(&sv->fl_mu);
    int room = sv->ntctx < (int)(sizeof(sv->tctx) / sizeof(sv->tctx[0]));
    if (room) sv->tctx[sv->ntctx++] = c;
    pthread_mutex_unlock(&sv->fl_mu);
    if (!room) {
        nt_ctx_free(c);
        return NULL;
    }
    return tl_ctx = c;
}

static void history_add(server *sv, pr_batch *b, const char *sha)
{
    char member[100], score[32];
    snprintf(member, sizeof(member), "%s:%s", sv->model_id, sha);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(score, sizeof(score), "%lld",
             (long long)ts.tv_sec * 1000 + (long long)(ts.tv_nsec / 1000000));
    const char *z[] = {"ZADD", "pneumo:history", score, member};
    pr_batch_add(b, 4, z);
    char lim[32];
    snprintf(lim, sizeof(lim), "%d", -HISTORY_MAX - 1);
    const char *t[] = {"ZREMRANGEBYRANK", "pneumo:history", "0", lim};
    pr_batch_add(b, 4, t);
}

static void redis_exec(server *sv, pr_batch *b)
{
    pr_redis *rr = redis_get(sv);
    if (!rr) return;
    redis_put(sv, rr, pr_redis_exec(rr, b) == 0);
}

static void heatmap_key(const server *sv, const char *kind, const char *sha, char *key, size_t n)
{
    snprintf(key, n, "pneumo:%s:%s:%s", kind, sv->model_id, sha);
}

static void on_done(sv_job *j)
{
    req *r = j->user;
    MHD_resume_connection(r->conn);
}

// Back from the model: the record, Redis writes, the answer.
static enum MHD_Result upload_finish(server *sv, struct MHD_Connection *c, req *r)
{
    if (r->job.failed) return send_err(c, r, 500, "inference failed: %s", r->job.err);
    char tm[40];
    pr_iso_now(tm, sizeof(tm));
    double lat = (mono() - r->t_body) * 1e3;
    if (!r->cached_prob) {
        r->prob = r->job.prob;
        r->thr  = sv->meta.threshold;
        snprintf(r->label, sizeof(r->label), "%s",
                 sv->meta.class_names[r->job.prob >= sv->meta.threshold]);
    }
    // Only what the heat map is drawn from: drawing and PNG-encoding wait for its first GET.
    int64_t expiry = sv->ttl > 0 ? (int64_t)time(NULL) + sv->ttl : 0;
    size_t slen    = 0;
    uint8_t *src   = r->job.cam && r->disp.rgb
                         ? sv_hmsrc_pack(r->job.cam, r->job.cam_h, r->job.cam_w, r->disp.rgb,
                                         r->disp.w, r->disp.h, expiry, &slen)
                         : NULL;
    if (sv->redis_url) {
        pr_batch *b = pr_batch_new();
        if (b) {
            if (!r->cached_prob) {
                pr_result res = {"upload",      r->sha,         r->label, sv->model_id,
                                 sv->model_sha, sv->model_name, "serve",  tm,
                                 r->prob,       r->thr,         lat,      1};
                pr_batch_result(b, &res, sv->ttl);
            }
            history_add(sv, b, r->sha);
            if (src) { // the heat map's source in the same round trip
                char key[160], ttl[32];
                heatmap_key(sv, "heatsrc", r->sha, key, sizeof(key));
                snprintf(ttl, sizeof(ttl), "%ld", sv->ttl);
                const char *a[] = {"SET", key, (const char *)src, "EX", ttl};
                size_t lens[]   = {3, strlen(key), slen, 2, strlen(ttl)};
                pr_batch_add_len(b, sv->ttl > 0 ? 5 : 3, a, lens);
            }
            redis_exec(sv, b);
            pr_batch_free(b);
        }
    }
    lru_put(sv, r->sha, r->prob, r->label, r->thr, lat, tm, src, slen); // src taken
    return send_json(c, r, 200,
                     record_json(sv, r->sha, r->prob, r->label, r->thr, sv->model_name,
                                 sv->model_id, r->cached_prob, lat, tm));
}

// The heat map, drawn or not yet (its source), is in Redis.
static int heatmap_in_redis(server *sv, const char *sha)
{
    char key[160], skey[160];
    heatmap_key(sv, "heatmap", sha, key, sizeof(key));
    heatmap_key(sv, "heatsrc", sha, skey, sizeof(skey));
    const char *a[] = {"EXISTS", key, skey};
    redisReply *rep = redis_cmd(sv, 3, a, NULL);
    int yes         = !rep || (rep->type == REDIS_REPLY_INTEGER && rep->integer >= 1);
    if (rep) freeReplyObject(rep);
    return yes; // down: do not recompute for it
}

static void count_cache(server *sv, int hit)
{
    pthread_mutex_lock(&sv->mt.mu);
    if (hit)
        sv->mt.hits++;
    else
        sv->mt.misses++;
    pthread_mutex_unlock(&sv->mt.mu);
}

static enum MHD_Result upload_process(server *sv, struct MHD_Connection *c, req *r)
{
    r->t_body = mono();
    if (r->too_big)
        return send_err(c, r, 413, "expected an image of at most %zu bytes, got more",
                        sv->max_bytes);
    if (r->oom) return send_err(c, r, 503, "out of memory reading the upload");
    if (r->pp && !r->part_chosen)
        return send_err(c, r, 400,
                        "expected a file in the multipart field \"image\", got no file part");
    const uint8_t *b = r->body;
    size_t n         = r->len;
    int png          = n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0;
    int jpg          = n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff;
    char desc[96];
    if (!png && !jpg)
        return send_err(c, r, n ? 415 : 400, "expected a JPEG or PNG image, got %s",
                        what_is(b, n, desc, sizeof(desc)));
    long w = 0, h = 0;
    if (image_dims(b, n, png, &w, &h))
        return send_err(c, r, 400, "expected a whole %s image, got an unreadable header",
                        png ? "PNG" : "JPEG");
    if ((double)w * (double)h > sv->max_pixels)
        return send_err(c, r, 413, "expected at most %.0f pixels, got %ldx%ld", sv->max_pixels, w,
                        h);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdn = 0;
    EVP_Digest(b, n, md, &mdn, EVP_sha256(), NULL);
    for (unsigned i = 0; i < mdn; i++)
        sprintf(r->sha + 2 * i, "%02x", md[i]);
    // Cached: the in-process LRU, then Redis.
    lru_ent e;
    if (lru_get(sv, r->sha, &e, 0)) {
        count_cache(sv, 1);
        if (sv->redis_url) {
            pr_batch *hb = pr_batch_new();
            if (hb) {
                history_add(sv, hb, r->sha);
                redis_exec(sv, hb);
                pr_batch_free(hb);
            }
        }
        return send_json(c, r, 200,
                         record_json(sv, r->sha, e.prob, e.label, e.threshold, sv->model_name,
                                     sv->model_id, 1, (mono() - r->t_body) * 1e3, e.time));
    }
    int down  = 0;
    json_t *j = sv->redis_url ? redis_record(sv, sv->model_id, r->sha, &down) : NULL;
    if (j) {
        count_cache(sv, 1);
        if (heatmap_in_redis(sv, r->sha)) {
            json_object_set_new(j, "latency_ms",
                                json_real(round((mono() - r->t_body) * 1e6) / 1e3));
            pr_batch *hb = pr_batch_new();
            if (hb) {
                history_add(sv, hb, r->sha);
                redis_exec(sv, hb);
                pr_batch_free(hb);
            }
            return send_json(c, r, 200, j);
        }
        // The result is there but its heat map expired or was lost: recompute the map only.
        r->cached_prob = 1;
        r->prob        = json_real_value(json_object_get(j, "probability"));
        r->thr         = json_real_value(json_object_get(j, "threshold"));
        snprintf(r->label, sizeof(r->label), "%s", json_string_value(json_object_get(j, "label")));
        json_decref(j);
    } else {
        count_cache(sv, 0);
    }
    nt_ctx *ctx = thread_ctx(sv);
    if (!ctx) return send_err(c, r, 503, "out of memory");
    size_t px = (size_t)sv->S * sv->S * 3;
    r->job.x  = malloc(sizeof(float) * px);
    if (!r->job.x) return send_err(c, r, 503, "out of memory");
    // Exactly pneumo predict's path (pr_load_image): nd_image_decode_resized(S, S, area) is this
    // decode for the target followed by the area resize (per channel, so grey sources expanded
    // first resize the same); then preprocessing.
    nd_image dec;
    if (nd_image_decode_for(ctx, b, n, "upload", sv->S, sv->S, &dec) != NT_OK)
        return send_err(c, r, 400, "%s", nt_ctx_errmsg(ctx));
    if (dec.w == sv->S && dec.h == sv->S) {
        nt_preprocess_apply(sv->meta.preprocess, dec.rgb, (int64_t)sv->S * sv->S, r->job.x);
    } else {
        nd_image small;
        if (nd_image_resize(ctx, &dec, sv->S, sv->S, ND_RESIZE_AREA, &small) != NT_OK) {
            nd_image_free(&dec);
            return send_err(c, r, 503, "%s", nt_ctx_errmsg(ctx));
        }
        nt_preprocess_apply(sv->meta.preprocess, small.rgb, (int64_t)sv->S * sv->S, r->job.x);
        nd_image_free(&small);
    }
    // The picture under the heat map: the image's size, long side capped at DISPLAY_MAX. A
    // decode at full size for S <= DISPLAY_MAX (every PNG, every JPEG too small for a reduced DCT
    // scale) is the one a decode for DISPLAY_MAX would give: no second decode then.
    nd_image full;
    if (dec.w == (int)w && dec.h == (int)h && sv->S <= DISPLAY_MAX) {
        full = dec;
    } else {
        nd_image_free(&dec);
        if (nd_image_decode_for(ctx, b, n, "upload", DISPLAY_MAX, DISPLAY_MAX, &full) != NT_OK)
            return send_err(c, r, 400, "%s", nt_ctx_errmsg(ctx));
    }
    int dw = (int)w, dh = (int)h;
    if (dw > DISPLAY_MAX || dh > DISPLAY_MAX) {
        double s = (double)DISPLAY_MAX / (dw > dh ? dw : dh);
        dw       = (int)lrint(dw * s);
        dh       = (int)lrint(dh * s);
        if (dw < 1) dw = 1;
        if (dh < 1) dh = 1;
    }
    if (full.w == dw && full.h == dh) {
        r->disp = full;
    } else {
        nt_status st = nd_image_resize(ctx, &full, dw, dh, ND_RESIZE_AREA, &r->disp);
        nd_image_free(&full);
        if (st != NT_OK) return send_err(c, r, 503, "%s", nt_ctx_errmsg(ctx));
    }
    free(r->body); // the bytes are not needed any more
    r->body = NULL;
    r->len = r->cap = 0;
    // Suspend before queueing: the inference thread may resume us at once.
    r->job.user = r;
    r->conn     = c;
    r->waiting  = 1;
    MHD_suspend_connection(c);
    int q       = sv_infer_submit(sv->infer, &r->job, r->expected);
    r->expected = 0;
    if (q != 0) {
        r->waiting = 0;
        MHD_resume_connection(c);
        return send_err(c, r, 503,
                        q == -1 ? "the prediction queue is full; retry in a second"
                                : "the server is shutting down");
    }
    return MHD_YES;
}

// ---- GET routes ----

static enum MHD_Result get_item(server *sv, struct MHD_Connection *c, req *r, const char *id)
{
    lru_ent e;
    if (lru_get(sv, id, &e, 0))
        return send_json(c, r, 200,
                         record_json(sv, id, e.prob, e.label, e.threshold, sv->model_name,
                                     sv->model_id, 1, e.latency_ms, e.time));
    int down  = 0;
    json_t *j = sv->redis_url ? redis_record(sv, sv->model_id, id, &down) : NULL;
    if (j) return send_json(c, r, 200, j);
    if (down) return send_err(c, r, 503, "Redis is unreachable and %s is not in memory", id);
    return send_err(c, r, 404, "no prediction with id %s for model %s", id, sv->model_id);
}

// Draws the heat map of id from its source (borrowed), counts it, keeps the PNG (the LRU entry,
// if any, drops its source; Redis gets pneumo:heatmap with what is left of the upload's expiry,
// and loses pneumo:heatsrc) and answers it. An unusable source is deleted: 404, upload again.
static enum MHD_Result heatmap_draw(server *sv, struct MHD_Connection *c, req *r, const char *id,
                                    const uint8_t *src, size_t slen)
{
    uint8_t *png   = NULL;
    size_t plen    = 0;
    int64_t expiry = 0;
    char why[200], key[160], skey[160];
    heatmap_key(sv, "heatmap", id, key, sizeof(key));
    heatmap_key(sv, "heatsrc", id, skey, sizeof(skey));
    int rc = sv_hmsrc_render(src, slen, &png, &plen, &expiry, why, sizeof(why));
    if (rc == -1) {
        fprintf(stderr, "pneumo serve: dropped an unusable heat-map source of model %s: %s\n",
                sv->model_id, why);
        const char *d[] = {"DEL", skey};
        redisReply *rep = sv->redis_url ? redis_cmd(sv, 2, d, NULL) : NULL;
        if (rep) freeReplyObject(rep);
        return send_err(c, r, 404, "no heat map for id %s (model %s); upload the image again", id,
                        sv->model_id);
    }
    if (rc) return send_err(c, r, 503, "out of memory drawing the heat map");
    pthread_mutex_lock(&sv->mt.mu);
    sv->mt.heatmaps++;
    pthread_mutex_unlock(&sv->mt.mu);
    lru_set_png(sv, id, png, plen);
    if (sv->redis_url) {
        long ttl = 0;
        if (expiry > 0) {
            int64_t left = expiry - (int64_t)time(NULL);
            ttl          = left < 1 ? 1 : (long)left;
        }
        char t[32];
        snprintf(t, sizeof(t), "%ld", ttl);
        const char *a[] = {"SET", key, (const char *)png, "EX", t};
        size_t lens[]   = {3, strlen(key), plen, 2, strlen(t)};
        redisReply *rep = redis_cmd(sv, ttl > 0 ? 5 : 3, a, lens);
        int stored      = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep) freeReplyObject(rep);
        // The source goes only once the PNG is there: another process may be about to read it.
        const char *d[] = {"DEL", skey};
        rep             = stored ? redis_cmd(sv, 2, d, NULL) : NULL;
        if (rep) freeReplyObject(rep);
    }
    return send_buf(c, r, 200, "image/png", png, plen, 1);
}

static enum MHD_Result get_heatmap(server *sv, struct MHD_Connection *c, req *r, const char *id)
{
    lru_ent e;
    int here = lru_get(sv, id, &e, LRU_PNG | LRU_SRC);
    if (here && e.png) return send_buf(c, r, 200, "image/png", e.png, e.png_len, 1);
    if (!here) e.src = NULL;
    // Drawn already (by any serve process), or only its source: one round trip for both. Even
    // with the source in memory, another process may have drawn it: one round trip, not a draw.
    char key[160], skey[160];
    heatmap_key(sv, "heatmap", id, key, sizeof(key));
    heatmap_key(sv, "heatsrc", id, skey, sizeof(skey));
    const char *a[] = {"MGET", key, skey};
    redisReply *rep = sv->redis_url ? redis_cmd(sv, 3, a, NULL) : NULL;
    const redisReply *png =
        rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 ? rep->element[0] : NULL;
    const redisReply *src = png ? rep->element[1] : NULL;
    enum MHD_Result ok;
    if (png && png->type == REDIS_REPLY_STRING) {
        if (e.src) lru_set_png(sv, id, (const uint8_t *)png->str, png->len);
        ok = send_buf(c, r, 200, "image/png", png->str, png->len, 0);
    } else if (e.src) {
        ok = heatmap_draw(sv, c, r, id, e.src, e.src_len);
    } else if (src && src->type == REDIS_REPLY_STRING) {
        ok = heatmap_draw(sv, c, r, id, (const uint8_t *)src->str, src->len);
    } else if (sv->redis_url && !rep) {
        ok = send_err(c, r, 503, "Redis is unreachable and %s is not in memory", id);
    } else {
        ok = send_err(c, r, 404, "no heat map for id %s (model %s); upload the image again", id,
                      sv->model_id);
    }
    free(e.src);
    if (rep) freeReplyObject(rep);
    return ok;
}

static int lru_newest_cmp(const void *a, const void *b)
{
    const lru_ent *x = a, *y = b;
    return x->used < y->used ? 1 : x->used > y->used ? -1 : 0;
}

static enum MHD_Result get_list(server *sv, struct MHD_Connection *c, req *r)
{
    long limit    = 20;
    const char *l = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    if (l) {
        char *end;
        errno = 0;
        limit = strtol(l, &end, 10);
        if (errno || end == l || *end || limit < 1 || limit > 100)
            return send_err(c, r, 400, "expected limit 1..100, got \"%.32s\"", l);
    }
    json_t *arr = json_array();
    char stop[16];
    snprintf(stop, sizeof(stop), "%ld", limit - 1);
    const char *a[] = {"ZREVRANGE", "pneumo:history", "0", stop};
    redisReply *rep = sv->redis_url ? redis_cmd(sv, 4, a, NULL) : NULL;
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements; i++) {
            const char *m = rep->element[i]->str;
            if (!m || strlen(m) != 16 + 1 + 64 || m[16] != ':') continue;
            char mid[17];
            memcpy(mid, m, 16);
            mid[16]   = 0;
            json_t *j = redis_record(sv, mid, m + 17, NULL);
            if (j) {
                if (strcmp(mid, sv->model_id) != 0) json_object_set_new(j, "heatmap", json_null());
                json_array_append_new(arr, j);
            }
        }
    } else {
        // Redis down or disabled: the newest results in memory.
        lru_ent *v = malloc(sizeof(sv->lru));
        if (v) {
            pthread_mutex_lock(&sv->lru_mu);
            memcpy(v, sv->lru, sizeof(sv->lru));
            pthread_mutex_unlock(&sv->lru_mu);
            qsort(v, LRU_N, sizeof(*v), lru_newest_cmp);
            for (int i = 0; i < LRU_N && i < limit && v[i].sha[0]; i++)
                json_array_append_new(arr, record_json(sv, v[i].sha, v[i].prob, v[i].label,
                                                       v[i].threshold, sv->model_name, sv->model_id,
                                                       1, v[i].latency_ms, v[i].time));
            free(v);
        }
    }
    if (rep) freeReplyObject(rep);
    return send_json(c, r, 200, json_pack("{s:o}", "predictions", arr));
}

static void histo_print(FILE *f, const char *name, const char *labels, const histo *h,
                        const double *bk, int nb)
{
    for (int i = 0; i < nb; i++)
        fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, *labels ? "," : "", bk[i],
                (unsigned long long)h->b[i]);
    fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "",
            (unsigned long long)h->count);
    fprintf(f, "%s_sum%s%s%s %.9g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", h->sum);
    fprintf(f, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
            (unsigned long long)h->count);
}

static enum MHD_Result get_metrics(server *sv, struct MHD_Connection *c, req *r)
{
    char *buf   = NULL;
    size_t blen = 0;
    FILE *f     = open_memstream(&buf, &blen);
    if (!f) return send_err(c, r, 503, "out of memory");
    int depth = sv_infer_depth(sv->infer);
    pthread_mutex_lock(&sv->r_mu);
    int up = sv->r_up;
    pthread_mutex_unlock(&sv->r_mu);
    pthread_mutex_lock(&sv->mt.mu);
    metrics *m = &sv->mt;
    fprintf(f, "# HELP pneumo_http_requests_total HTTP requests by route template and status.\n"
               "# TYPE pneumo_http_requests_total counter\n");
    for (int i = 0; i < m->nreq; i++)
        fprintf(f, "pneumo_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                route_names[m->req[i].route], m->req[i].code, (unsigned long long)m->req[i].n);
    fprintf(f, "# HELP pneumo_http_request_duration_seconds Time from the request to the answer.\n"
               "# TYPE pneumo_http_request_duration_seconds histogram\n");
    for (int rt = 0; rt < RT_N; rt++) {
        if (!m->dur[rt].count) continue;
        char lab[96];
        snprintf(lab, sizeof(lab), "route=\"%s\"", route_names[rt]);
        histo_print(f, "pneumo_http_request_duration_seconds", lab, &m->dur[rt], dur_buckets, NDUR);
    }
    fprintf(f, "# HELP pneumo_inference_batch_size Images per forward pass.\n"
               "# TYPE pneumo_inference_batch_size histogram\n");
    histo_print(f, "pneumo_inference_batch_size", "", &m->batch, batch_buckets, NBATCH);
    fprintf(f, "# HELP pneumo_inference_seconds Time of one batched forward with Grad-CAM.\n"
               "# TYPE pneumo_inference_seconds histogram\n");
    histo_print(f, "pneumo_inference_seconds", "", &m->infer, dur_buckets, NDUR);
    fprintf(f,
            "# HELP pneumo_cache_hits_total Uploads answered from the cache (memory or Redis).\n"
            "# TYPE pneumo_cache_hits_total counter\npneumo_cache_hits_total %llu\n"
            "# HELP pneumo_cache_misses_total Uploads that needed the model.\n"
            "# TYPE pneumo_cache_misses_total counter\npneumo_cache_misses_total %llu\n"
            "# HELP pneumo_heatmaps_rendered_total Heat maps drawn and PNG-encoded (on their first "
            "GET).\n# TYPE pneumo_heatmaps_rendered_total counter\n"
            "pneumo_heatmaps_rendered_total %llu\n",
            (unsigned long long)m->hits, (unsigned long long)m->misses,
            (unsigned long long)m->heatmaps);
    pthread_mutex_unlock(&sv->mt.mu);
    fprintf(f,
            "# HELP pneumo_queue_depth Images waiting for the model.\n"
            "# TYPE pneumo_queue_depth gauge\npneumo_queue_depth %d\n"
            "# HELP pneumo_redis_up 1 when the last Redis operation succeeded (0 without "
            "--redis).\n# TYPE pneumo_redis_up gauge\npneumo_redis_up %d\n"
            "# HELP pneumo_model_info The model being served.\n"
            "# TYPE pneumo_model_info gauge\npneumo_model_info{model=\"%s\",model_id=\"%s\","
            "dtype=\"%s\"} 1\n",
            depth, up, sv->model_name, sv->model_id, sv->dtype_name);
    fclose(f);
    return send_buf(c, r, 200, "text/plain; version=0.0.4; charset=utf-8", buf, blen, 1);
}

// ---- static files ----

static const char *mime_of(const char *path)
{
    const char *dot             = strrchr(path, '.');
    static const char *map[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".png", "image/png"},
        {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".txt", "text/plain; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
    };
    if (dot)
        for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
            if (strcasecmp(dot, map[i][0]) == 0) return map[i][1];
    return "application/octet-stream";
}

static enum MHD_Result get_static(server *sv, struct MHD_Connection *c, req *r, const char *url)
{
    if (!sv->web_root) return send_err(c, r, 404, "not found (no --web folder)");
    // url is already percent-decoded by MHD: "/%2e%2e/x" arrives as "/../x".
    if (strstr(url, "..") || strchr(url, '\\') || url[0] != '/')
        return send_err(c, r, 404, "not found");
    char path[PATH_MAX], real[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s%s%s", sv->web_real, url,
                     url[strlen(url) - 1] == '/' ? "index.html" : "");
    if (n <= 0 || (size_t)n >= sizeof(path)) return send_err(c, r, 404, "not found");
    // realpath resolves symlinks: whatever it names must still lie under the web root.
    size_t rl = strlen(sv->web_real);
    struct stat st;
    if (!realpath(path, real) || strncmp(real, sv->web_real, rl) != 0 || real[rl] != '/' ||
        stat(real, &st) != 0 || !S_ISREG(st.st_mode))
        return send_err(c, r, 404, "not found");
    FILE *f = fopen(real, "rb");
    if (!f) return send_err(c, r, 404, "not found");
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, dup(fileno(f)));
    fclose(f);
    if (!resp) return send_err(c, r, 503, "cannot open the file");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, mime_of(real));
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ok = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    r->status = 200;
    return ok;
}

// ---- dispatch ----

static int classify(const char *url, const char **id)
{
    static const char P[] = "/api/v1/predictions";
    *id                   = NULL;
    if (strcmp(url, "/healthz") == 0) return RT_HEALTHZ;
    if (strcmp(url, "/readyz") == 0) return RT_READYZ;
    if (strcmp(url, "/metrics") == 0) return RT_METRICS;
    if (strcmp(url, "/api") != 0 && strncmp(url, "/api/", 5) != 0) return RT_STATIC;
    if (strcmp(url, P) == 0 || strcmp(url, "/api/v1/predictions/") == 0) return RT_PREDICT;
    if (strncmp(url, P, sizeof(P) - 1) == 0 && url[sizeof(P) - 1] == '/') {
        const char *rest = url + sizeof(P);
        const char *sl   = strchr(rest, '/');
        *id              = rest;
        if (!sl) return RT_ITEM;
        if (strcmp(sl, "/heatmap.png") == 0) return RT_HEATMAP;
    }
    return RT_API_OTHER;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    server *sv = cls;
    req *r     = *con_cls;
    const char *id;
    int route = classify(url, &id);
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) return MHD_NO;
        r->sv     = sv;
        r->t0     = mono();
        r->route  = route;
        r->method = strcmp(method, "POST") == 0   ? "POST"
                    : strcmp(method, "GET") == 0  ? "GET"
                    : strcmp(method, "HEAD") == 0 ? "HEAD"
                                                  : "OTHER";
        *con_cls  = r;
        pthread_mutex_lock(&sv->fl_mu);
        sv->inflight++;
        pthread_mutex_unlock(&sv->fl_mu);
        if (route <= RT_API_OTHER && !authorized(sv, c))
            return send_err(
                c, r, 401,
                "expected \"Authorization: Bearer <token>\" with a valid token, got "
                "%s",
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)
                    ? "an unknown token"
                    : "none");
        if (route == RT_PREDICT && strcmp(method, "POST") == 0) {
            const char *cl =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl && strtoull(cl, NULL, 10) > sv->max_bytes)
                return send_err(c, r, 413, "expected an image of at most %zu bytes, got %s bytes",
                                sv->max_bytes, cl);
            const char *ct =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            if (ct && strncasecmp(ct, "multipart/form-data", 19) == 0) {
                r->pp = MHD_create_post_processor(c, 64 * 1024, post_part, r);
                if (!r->pp)
                    return send_err(c, r, 400,
                                    "expected multipart/form-data with a boundary, got \"%.80s\"",
                                    ct);
            }
            // An image on its way: a batch that has begun waits for it (--max-wait-ms at most).
            sv_infer_expect(sv->infer, 1);
            r->expected = 1;
        }
        return MHD_YES;
    }
    if (r->waiting) {
        r->waiting = 0;
        return upload_finish(sv, c, r);
    }
    if (*upload_size) {
        r->seen += *upload_size;
        if (r->seen > sv->max_bytes) r->too_big = 1;
        if (r->pp && !r->too_big)
            MHD_post_process(r->pp, upload_data, *upload_size);
        else if (!r->pp)
            body_add(sv, r, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->status) return MHD_YES; // answered already (an early error)
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    switch (route) {
    case RT_HEALTHZ:
        if (!get) return send_err(c, r, 405, "expected GET, got %s", method);
        return send_json(c, r, 200, json_pack("{s:s}", "status", "ok"));
    case RT_READYZ: {
        if (!get) return send_err(c, r, 405, "expected GET, got %s", method);
        if (!sv->redis_url)
            return send_json(
                c, r, 200,
                json_pack("{s:s, s:b, s:s}", "status", "ready", "model", 1, "redis", "disabled"));
        int up = redis_ping(sv);
        return send_json(c, r, up ? 200 : 503,
                         json_pack("{s:s, s:b, s:b}", "status", up ? "ready" : "not ready", "model",
                                   1, "redis", up));
    }
    case RT_METRICS:
        if (!get) return send_err(c, r, 405, "expected GET, got %s", method);
        return get_metrics(sv, c, r);
    case RT_PREDICT:
        if (strcmp(method, "POST") == 0) return upload_process(sv, c, r);
        if (get) return get_list(sv, c, r);
        return send_err(c, r, 405, "expected GET or POST, got %s", method);
    case RT_ITEM:
    case RT_HEATMAP: {
        if (!get) return send_err(c, r, 405, "expected GET, got %s", method);
        size_t n = route == RT_ITEM ? strlen(id) : (size_t)(strchr(id, '/') - id);
        if (!is_sha(id, n))
            return send_err(c, r, 400, "expected an id of 64 lower-case hex digits, got \"%.*s\"",
                            (int)(n > 80 ? 80 : n), id);
        char sha[65];
        memcpy(sha, id, 64);
        sha[64] = 0;
        return route == RT_ITEM ? get_item(sv, c, r, sha) : get_heatmap(sv, c, r, sha);
    }
    case RT_API_OTHER:
        return send_err(c, r, 404, "no API route %.100s (see README.md, pneumo serve)", url);
    default:
        if (!get) return send_err(c, r, 405, "expected GET, got %s", method);
        return get_static(sv, c, r, url);
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *sv = cls;
    req *r     = *con_cls;
    if (!r) return;
    double dt = mono() - r->t0;
    int code  = r->status ? r->status : 499; // 499: the client went away before an answer
    pthread_mutex_lock(&sv->mt.mu);
    int k = 0;
    while (k < sv->mt.nreq && !(sv->mt.req[k].route == r->route && sv->mt.req[k].code == code))
        k++;
    if (k == sv->mt.nreq && k < (int)(sizeof(sv->mt.req) / sizeof(sv->mt.req[0]))) {
        sv->mt.req[k].route = r->route;
        sv->mt.req[k].code  = code;
        sv->mt.req[k].n     = 0;
        sv->mt.nreq++;
    }
    if (k < sv->mt.nreq) sv->mt.req[k].n++;
    histo_add(&sv->mt.dur[r->route], dur_buckets, NDUR, dt);
    pthread_mutex_unlock(&sv->mt.mu);
    if (!sv->quiet)
        fprintf(stderr, "pneumo serve: %s %s %d %.1f ms\n", r->method, route_names[r->route], code,
                dt * 1e3);
    if (r->pp) MHD_destroy_post_processor(r->pp);
    free(r->body);
    free(r->job.x);
    free(r->job.cam);
    nd_image_free(&r->disp);
    if (r->expected) sv_infer_expect(sv->infer, -1); // the client went away mid-upload
    free(r);
    *con_cls = NULL;
    pthread_mutex_lock(&sv->fl_mu);
    sv->inflight--;
    pthread_mutex_unlock(&sv->fl_mu);
}

static void on_batch(void *user, int n, double s)
{
    server *sv = user;
    pthread_mutex_lock(&sv->mt.mu);
    histo_add(&sv->mt.batch, batch_buckets, NBATCH, n);
    histo_add(&sv->mt.infer, dur_buckets, NDUR, s);
    pthread_mutex_unlock(&sv->mt.mu);
}

// ---- the command ----

static const char *default_web(char *buf, size_t len)
{
    char exe[PATH_MAX - 16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) return NULL;
    exe[n]      = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = 0;
    // build/pneumo -> <repo>/web
    if ((size_t)snprintf(buf, len, "%s/../web", exe) >= len) return NULL;
    struct stat st;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? buf : NULL;
}

static int serve_main(server *sv, int argc, char **argv)
{
    const char *model = NULL, *listen = "127.0.0.1:8080", *redis_url = NULL, *tokens = NULL;
    const char *web = NULL;
    int insecure = 0, threads = 4, max_batch = 8, max_wait = 5, queue = 64, quiet = 0;
    int compute_threads = 0;
    const char *dtype   = NULL;
    double max_bytes = 20 << 20, max_pixels = 50e6;
    int ttl        = 0;
    cli_opt opts[] = {
        {"model", OPT_STR, &model, 0, 0, "FILE", "model file (default " DEFAULT_MODEL ")"},
        {"listen", OPT_STR, &listen, 0, 0, "HOST:PORT",
         "address to listen on, default 127.0.0.1:8080"},
        {"redis", OPT_STR, &redis_url, 0, 0, "URL",
         "redis://[:password@]host:port/db for the cache (default $REDIS_URL; unset: no Redis)"},
        {"tokens", OPT_STR, &tokens, 0, 0, "FILE",
         "API tokens (pneumo token add; default $PNEUMO_TOKENS, else ./pneumo-tokens)"},
        {"insecure-no-auth", OPT_FLAG, &insecure, 0, 0, NULL,
         "serve the API without tokens (local experiments only)"},
        {"web", OPT_STR, &web, 0, 0, "DIR", "static files at / (default: web/ beside build/)"},
        {"threads", OPT_INT, &threads, 1, 256, "N", "HTTP threads, default 4"},
        {"compute-threads", OPT_INT, &compute_threads, 0, 1024, "N",
         "threads of the model, default all CPUs"},
        {"dtype", OPT_STR, &dtype, 0, 0, "f32|bf16",
         "compute in f32 or bf16 (AVX512_BF16, on AMX tiles where present); default $PNEUMO_DTYPE, "
         "else f32"},
        {"max-batch", OPT_INT, &max_batch, 1, 256, "N",
         "images per forward pass at most, default 8"},
        {"max-wait-ms", OPT_INT, &max_wait, 0, 60000, "MS",
         "how long the first image waits for company while other uploads are arriving, default 5"},
        {"queue", OPT_INT, &queue, 1, 100000, "N", "images waiting at most (then 503), default 64"},
        {"max-bytes", OPT_FLOAT, &max_bytes, 1, 1e12, "N", "largest upload, default 20 MiB"},
        {"max-pixels", OPT_FLOAT, &max_pixels, 1, 1e12, "N", "largest image, default 50e6"},
        {"ttl", OPT_INT, &ttl, 0, 2147483647.0, "SECONDS",
         "expire results and heat maps in Redis (default 0: never)"},
        {"quiet", OPT_FLAG, &quiet, 0, 0, NULL, "no access log"},
    };
    cli_cmd cmd = {"serve",
                   "[--model FILE] [--listen HOST:PORT] [--redis URL] [--tokens FILE] [options]",
                   "Serve the HTTP API and the web page: upload a chest X-ray, get the probability "
                   "of pneumonia and a Grad-CAM heat map.",
                   opts,
                   (int)(sizeof(opts) / sizeof(opts[0])),
                   0,
                   0};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if ((rc = cli_check_dtype("serve", dtype))) return rc;
    redis_url       = pr_redis_url(redis_url);
    sv->insecure    = insecure;
    sv->quiet       = quiet;
    sv->ttl         = ttl;
    sv->max_bytes   = (size_t)max_bytes;
    sv->max_pixels  = max_pixels;
    sv->redis_url   = redis_url;
    sv->tokens_path = pr_tokens_path(tokens);
    sv->r_up        = 1; // until a connect fails
    pthread_mutex_init(&sv->tok_mu, NULL);
    pthread_mutex_init(&sv->r_mu, NULL);
    pthread_mutex_init(&sv->lru_mu, NULL);
    pthread_mutex_init(&sv->fl_mu, NULL);
    pthread_mutex_init(&sv->mt.mu, NULL);
    if (!insecure) {
        char err[600];
        struct stat st;
        if (!tokens && !getenv("PNEUMO_TOKENS") && stat(sv->tokens_path, &st) != 0)
            return cli_fail("serve", EXIT_USAGE,
                            "expected --tokens FILE (or $PNEUMO_TOKENS, or ./pneumo-tokens), got "
                            "none; create one with `pneumo token add NAME`, or pass "
                            "--insecure-no-auth for a local experiment");
        if (pr_tokens_load(sv->tokens_path, 0, &sv->tokens, err, sizeof(err)))
            return cli_fail("serve", EXIT_USAGE, "%s; create it with `pneumo token add NAME`", err);
        if (stat(sv->tokens_path, &st) == 0)
            sv->tok_mtime = st.st_mtim.tv_sec * 1000000000L + st.st_mtim.tv_nsec;
        sv->tok_checked = mono();
    }
    char webbuf[PATH_MAX];
    if (!web) web = default_web(webbuf, sizeof(webbuf));
    if (web) {
        if (!realpath(web, sv->web_real))
            return cli_fail("serve", EXIT_USAGE, "--web %s: %s", web, strerror(errno));
        sv->web_root = sv->web_real;
    }
    // HOST:PORT (the last colon; [v6]:port too).
    char host[256];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == listen || *end || port < 0 || port > 65535 ||
        (size_t)(colon - listen) >= sizeof(host))
        return cli_fail("serve", EXIT_USAGE, "--listen expects HOST:PORT, got \"%s\"", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family   = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags    = AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%ld", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai) return cli_fail("serve", EXIT_USAGE, "--listen %s: %s", listen, gai_strerror(gai));

    if (!model) {
        if (access(DEFAULT_MODEL, R_OK) != 0) {
            freeaddrinfo(ai);
            return cli_fail("serve", EXIT_USAGE, "no --model given and the default %s is not here",
                            DEFAULT_MODEL);
        }
        model = DEFAULT_MODEL;
    }
    sv->model_path   = model;
    const char *base = strrchr(model, '/');
    sv->model_name   = base ? base + 1 : model;
    nt_ctx *ctx      = cli_ctx_dtype("serve", compute_threads, 0, dtype);
    nt_model *m      = NULL;
    if (!ctx) {
        freeaddrinfo(ai);
        return EXIT_FAIL;
    }
    sv->dtype_name = nt_dtype_name(nt_ctx_dtype(ctx));
    if ((rc = pr_model_open("serve", ctx, model, &m, &sv->meta, sv->model_sha, sv->model_id))) {
        freeaddrinfo(ai);
        nt_ctx_free(ctx);
        return rc;
    }
    sv->S     = sv->meta.cfg.img_size;
    int layer = nt_model_find_layer(m, CAM_LAYER);
    if (layer < 0) {
        freeaddrinfo(ai);
        nt_model_free(m);
        nt_ctx_free(ctx);
        return cli_fail("serve", EXIT_FAIL, "%s has no layer %s for the heat map", model,
                        CAM_LAYER);
    }
    nt_model_keep_output(m, layer, 1);
    // Warm up (plans memory, touches the weights) so that the first request is not the slow one.
    {
        int64_t shp[4] = {1, sv->S, sv->S, 3};
        nt_tensor x;
        if (nt_tensor_new(ctx, 4, shp, &x) == NT_OK) {
            nt_model_forward(m, &x, 0, 0);
            nt_tensor_free(&x);
        }
    }
    if (redis_url) {
        pr_redis *r = redis_get(sv);
        if (r)
            redis_put(sv, r, 1);
        else
            fprintf(stderr,
                    "pneumo serve: Redis at %s does not answer; serving uncached until it does "
                    "(/readyz says 503)\n",
                    redis_url);
    }
    // Signals go to the main thread only (sigtimedwait below): block them before any thread.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    char err[256];
    sv_infer_stats stats = {on_batch, sv};
    if (sv_infer_start(ctx, m, sv->S, layer, max_batch, max_wait, queue, on_done, &stats,
                       &sv->infer, err, sizeof(err))) {
        freeaddrinfo(ai);
        return cli_fail("serve", EXIT_FAIL, "%s", err);
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    sv->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, sv,
                             MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE,
                             (unsigned)threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed, sv,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!sv->d) {
        sv_infer_stop(sv->infer);
        sv_infer_free(sv->infer);
        nt_model_free(m);
        nt_ctx_free(ctx);
        return cli_fail("serve", EXIT_FAIL,
                        "cannot listen on %s (in use, or not an address of this machine?)", listen);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(sv->d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "pneumo serve: listening on http://%s%s%s:%u (model %s, id %s, %s)%s\n",
            strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
            di ? di->port : (unsigned)port, sv->model_name, sv->model_id, sv->dtype_name,
            insecure ? " WITHOUT AUTH" : "");
    fflush(stderr);
    int sig = 0;
    while (sig != SIGINT && sig != SIGTERM) {
        struct timespec one = {1, 0};
        sig                 = sigtimedwait(&sigs, NULL, &one);
        if (sig == SIGHUP) tokens_reload(sv, 1);
        if (sig < 0 && redis_url) {
            pthread_mutex_lock(&sv->r_mu);
            int down = !sv->r_up;
            pthread_mutex_unlock(&sv->r_mu);
            if (down) redis_ping(sv); // recover without waiting for a request
        }
    }
    // Stop accepting, let the requests in flight finish (30 s at most), then stop.
    fprintf(stderr, "pneumo serve: %s: finishing requests in flight\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    MHD_socket ls = MHD_quiesce_daemon(sv->d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    for (int i = 0; i < 3000; i++) {
        pthread_mutex_lock(&sv->fl_mu);
        int busy = sv->inflight;
        pthread_mutex_unlock(&sv->fl_mu);
        if (!busy) break;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    // The model first: it drains its queue and resumes those connections while MHD still runs;
    // a request that comes later on a kept-alive connection gets 503 "shutting down".
    sv_infer_stop(sv->infer);
    MHD_stop_daemon(sv->d);
    sv_infer_free(sv->infer); // only now: MHD's threads may call in until they stop
    while (sv->r_nfree)
        pr_redis_close(sv->r_free[--sv->r_nfree]);
    for (int i = 0; i < LRU_N; i++) {
        free(sv->lru[i].png);
        free(sv->lru[i].src);
    }
    pr_tokens_free(&sv->tokens);
    for (int i = 0; i < sv->ntctx; i++)
        nt_ctx_free(sv->tctx[i]);
    nt_model_free(m);
    nt_ctx_free(ctx);
    fprintf(stderr, "pneumo serve: stopped\n");
    return EXIT_OK;
}

int cmd_serve(int argc, char **argv)
{
    server *sv = calloc(1, sizeof(*sv));
    if (!sv) return cli_fail("serve", EXIT_FAIL, "out of memory");
    int rc = serve_main(sv, argc, argv);
    pr_tokens_free(&sv->tokens);
    free(sv);
    return rc;
}
