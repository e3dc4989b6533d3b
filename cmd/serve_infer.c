/*
 * serve_infer.c: `pneumo serve`'s inference thread: a bounded FIFO of jobs (mutex + condvar);
 * the thread takes up to max_batch jobs, waiting at most max_wait_ms after the first while other
 * uploads are still arriving (announced by sv_infer_expect), runs one nt_model_forward over the
 * batch, then probabilities and Grad-CAM maps, and hands each job back through on_done. The model
 * and its context are touched by this thread only. Also the heat-map sources (what a heat map is
 * drawn from, packed at upload) and the PNG encoder that draws them on the first GET (libpng).
 * Tests: tests/serve.sh.
 */
#include "cmd/serve.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sv_infer {
    nt_ctx *ctx;
    nt_model *m;
    int S, layer, max_batch, max_wait_ms, cap;
    void (*on_done)(sv_job *);
    sv_infer_stats stats;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sv_job *head, *tail;
    int depth, stop;
    int coming; // uploads announced (sv_infer_expect) and not yet queued or given up
    pthread_t th;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *infer_main(void *arg)
{
    sv_infer *q = arg;
    int S = q->S, B = q->max_batch;
    int64_t shp[4] = {B, S, S, 3};
    nt_tensor x    = {0};
    sv_job **batch = calloc((size_t)B, sizeof(*batch));
    float *probs   = calloc((size_t)B, sizeof(float));
    int ch = 0, cw = 0;
    nt_model_gradcam(q->m, q->layer, NULL, &ch, &cw);
    float *cams       = calloc((size_t)B * (size_t)(ch > 0 && cw > 0 ? ch * cw : 1), sizeof(float));
    int oom           = !batch || !probs || !cams;
    char oom_msg[128] = "";
    if (!oom && nt_tensor_new(q->ctx, 4, shp, &x) != NT_OK) oom = 1;
    if (oom) snprintf(oom_msg, sizeof(oom_msg), "out of memory for a batch of %d", B);
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (!q->head) { // stop and drained
            pthread_mutex_unlock(&q->mu);
            break;
        }
        // Wait for company, at most max_wait_ms after the first job arrived, and only while
        // other uploads are on their way: a lone upload (a doctor's) runs at once. Waiting the
        // 5 ms default for nobody had cost a lone upload 8-9 ms (median of 12 uploads, 43-44
        // against 34-36 ms end to end on the 2-core development machine).
        double deadline = q->head->queued_at + q->max_wait_ms / 1e3;
        while (q->depth < B && !q->stop && q->coming > 0) {
            double left = deadline - mono();
            if (left <= 0) break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double t   = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec + left;
            ts.tv_sec  = (time_t)t;
            ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
            if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT) break;
        }
        int n = 0;
        while (q->head && n < B) {
            batch[n++] = q->head;
            q->head    = q->head->next;
            q->depth--;
        }
        if (!q->head) q->tail = NULL;
        pthread_mutex_unlock(&q->mu);

        const char *fail = oom ? oom_msg : NULL;
        double t0        = mono();
        if (!fail) {
            for (int k = 0; k < n; k++)
                memcpy(x.data + (size_t)k * S * S * 3, batch[k]->x,
                       sizeof(float) * (size_t)S * S * 3);
            nt_tensor xb = x;
            xb.shape[0]  = n;
            if (nt_model_forward(q->m, &xb, 0, 0) != NT_OK ||
                nt_model_loss(q->m, NULL, NULL, NULL, probs, NULL) != NT_OK ||
                nt_model_gradcam(q->m, q->layer, cams, &ch, &cw) != NT_OK)
                fail = nt_ctx_errmsg(q->ctx);
        }
        double dt = mono() - t0;
        if (q->stats.batch && !fail) q->stats.batch(q->stats.user, n, dt);
        for (int k = 0; k < n; k++) {
            sv_job *j = batch[k];
            if (fail) {
                j->failed = 1;
                snprintf(j->err, sizeof(j->err), "%s", fail);
            } else {
                j->prob = probs[k];
                j->cam  = malloc(sizeof(float) * (size_t)ch * cw);
                if (j->cam) {
                    memcpy(j->cam, cams + (size_t)k * ch * cw, sizeof(float) * (size_t)ch * cw);
                    j->cam_h = ch;
                    j->cam_w = cw;
                }
            }
            pthread_mutex_lock(&q->mu);
            j->done = 1;
            pthread_mutex_unlock(&q->mu);
            q->on_done(j);
        }
    }
    nt_tensor_free(&x);
    free(batch);
    free(probs);
    free(cams);
    return NULL;
}

int sv_infer_start(nt_ctx *ctx, nt_model *m, int S, int layer, int max_batch, int max_wait_ms,
                   int queue_cap, void (*on_done)(sv_job *), const sv_infer_stats *stats,
                   sv_infer **out, char *err, size_t errlen)
{
    sv_infer *q = calloc(1, sizeof(*q));
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    q->ctx         = ctx;
    q->m           = m;
    q->S           = S;
    q->layer       = layer;
    q->max_batch   = max_batch;
    q->max_wait_ms = max_wait_ms;
    q->cap         = queue_cap;
    q->on_done     = on_done;
    if (stats) q->stats = *stats;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    if (pthread_create(&q->th, NULL, infer_main, q) != 0) {
        snprintf(err, errlen, "cannot start the inference thread");
        free(q);
        return -1;
    }
    *out = q;
    return 0;
}

void sv_infer_expect(sv_infer *q, int delta)
{
    pthread_mutex_lock(&q->mu);
    q->coming += delta;
    if (delta < 0) pthread_cond_signal(&q->cv); // one fewer to wait for
    pthread_mutex_unlock(&q->mu);
}

int sv_infer_submit(sv_infer *q, sv_job *j, int expected)
{
    j->next      = NULL;
    j->done      = 0;
    j->queued_at = mono();
    pthread_mutex_lock(&q->mu);
    int rc = q->stop ? -2 : q->depth >= q->cap ? -1 : 0;
    if (expected) q->coming--;
    if (rc == 0) {
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        q->depth++;
    }
    if (rc == 0 || expected) pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int sv_infer_depth(sv_infer *q)
{
    pthread_mutex_lock(&q->mu);
    int d = q->depth;
    pthread_mutex_unlock(&q->mu);
    return d;
}

void sv_infer_stop(sv_infer *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->th, NULL);
}

void sv_infer_free(sv_infer *q)
{
    if (!q) return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

// ---- PNG ----

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} membuf;

static void png_put(png_structp png, png_bytep data, png_size_t len)
{
    membuf *b = png_get_io_ptr(png);
    if (b->oom) return;
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + len)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p   = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void png_noflush(png_structp png)
{
    (void)png;
}

int sv_png_encode(const uint8_t *rgb, int w, int h, uint8_t **png_out, size_t *len)
{
    membuf b        = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info  = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(b.p);
        return -1;
    }
    png_set_write_fn(png, &b, png_put, png_noflush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 1); // speed over size: a client waits for the first GET
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * w * 3));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *png_out = b.p;
    *len     = b.n;
    return 0;
}

// ---- heat-map sources (layout in serve.h) ----

static void put_u16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static unsigned get_u16(const uint8_t *p)
{
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

uint8_t *sv_hmsrc_pack(const float *cam, int cam_h, int cam_w, const uint8_t *rgb, int w, int h,
                       int64_t expiry, size_t *len)
{
    if (cam_h < 1 || cam_w < 1 || w < 1 || h < 1 || cam_h > 65535 || cam_w > 65535 || w > 65535 ||
        h > 65535)
        return NULL;
    size_t npx = (size_t)w * h, ncam = (size_t)cam_h * cam_w;
    int grey = 1;
    for (size_t i = 0; i < npx && grey; i++)
        grey = rgb[3 * i] == rgb[3 * i + 1] && rgb[3 * i] == rgb[3 * i + 2];
    int c      = grey ? 1 : 3;
    size_t n   = SV_HMSRC_HEAD + 4 * ncam + npx * (size_t)c;
    uint8_t *b = malloc(n);
    if (!b) return NULL;
    memcpy(b, "PNHS", 4);
    b[4] = 1;
    b[5] = (uint8_t)c;
    put_u16(b + 6, (unsigned)w);
    put_u16(b + 8, (unsigned)h);
    put_u16(b + 10, (unsigned)cam_h);
    put_u16(b + 12, (unsigned)cam_w);
    put_u16(b + 14, 0);
    uint64_t e = (uint64_t)expiry;
    for (int k = 0; k < 8; k++)
        b[16 + k] = (uint8_t)(e >> (8 * k));
    uint8_t *p = b + SV_HMSRC_HEAD;
    for (size_t i = 0; i < ncam; i++, p += 4) {
        uint32_t u;
        memcpy(&u, &cam[i], 4);
        for (int k = 0; k < 4; k++)
            p[k] = (uint8_t)(u >> (8 * k));
    }
    if (grey)
        for (size_t i = 0; i < npx; i++)
            p[i] = rgb[3 * i];
    else
        memcpy(p, rgb, npx * 3);
    *len = n;
    return b;
}

int sv_hmsrc_render(const uint8_t *src, size_t len, uint8_t **png, size_t *png_len, int64_t *expiry,
                    char *err, size_t errlen)
{
    if (len < SV_HMSRC_HEAD || memcmp(src, "PNHS", 4) != 0 || src[4] != 1) {
        snprintf(err, errlen, "expected a heat-map source (\"PNHS\", version 1), got %zu bytes%s",
                 len, len >= 5 && memcmp(src, "PNHS", 4) == 0 ? " of another version" : "");
        return -1;
    }
    int c = src[5], w = (int)get_u16(src + 6), h = (int)get_u16(src + 8);
    int ch = (int)get_u16(src + 10), cw = (int)get_u16(src + 12);
    size_t npx = (size_t)w * h, ncam = (size_t)ch * cw;
    size_t want = SV_HMSRC_HEAD + 4 * ncam + npx * (size_t)(c == 1 || c == 3 ? c : 0);
    if ((c != 1 && c != 3) || !w || !h || !ch || !cw || len != want) {
        snprintf(err, errlen,
                 "expected a heat-map source of %zu bytes (%dx%dx%d pixels, a %dx%d map), got %zu",
                 want, w, h, c, ch, cw, len);
        return -1;
    }
    uint64_t e = 0;
    for (int k = 0; k < 8; k++)
        e |= (uint64_t)src[16 + k] << (8 * k);
    if (expiry) *expiry = (int64_t)e;
    float *cam   = malloc(sizeof(float) * ncam);
    uint8_t *out = malloc(npx * 3);
    uint8_t *rgb = c == 1 ? malloc(npx * 3) : NULL;
    int rc       = -2;
    if (cam && out && (c == 3 || rgb)) {
        const uint8_t *p = src + SV_HMSRC_HEAD;
        for (size_t i = 0; i < ncam; i++, p += 4) {
            uint32_t u =
                (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            float v;
            memcpy(&v, &u, 4);
            // The overlay expects [0,1] (beyond it the blend leaves 0..255); valid maps pass
            // unchanged.
            cam[i] = isfinite(v) ? v < 0 ? 0 : v > 1 ? 1 : v : 0;
        }
        if (c == 1)
            for (size_t i = 0; i < npx; i++)
                rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = p[i];
        nt_gradcam_overlay(cam, ch, cw, c == 1 ? rgb : p, w, h, out);
        rc = sv_png_encode(out, w, h, png, png_len) == 0 ? 0 : -2;
    }
    free(cam);
    free(out);
    free(rgb);
    return rc;
}
