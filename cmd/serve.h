/*
 * serve.h: the pieces of `pneumo serve` shared by cmd/serve.c (HTTP, routing, auth, Redis,
 * metrics) and cmd/serve_infer.c (the micro-batching queue and the inference thread, Grad-CAM
 * and heat-map PNGs). Glue only: the math is libnet's (nt_model_gradcam, nt_gradcam_overlay).
 * Tests: tests/serve.sh.
 */
#ifndef CMD_SERVE_H
#define CMD_SERVE_H

#include "libnet/nt.h"

#include <stddef.h>
#include <stdint.h>

// One image waiting for the model. The submitter owns it (x, cam included); the inference thread
// writes the outputs, sets done under the queue's lock and then calls on_done(job) (outside it).
typedef struct sv_job {
    float *x; // S*S*3 preprocessed input
    void *user;
    // outputs
    float prob;
    float *cam; // h*w in [0,1], malloc'd by the inference thread (the submitter frees it)
    int cam_h, cam_w;
    int done, failed;
    char err[256];
    double queued_at; // monotonic seconds
    struct sv_job *next;
} sv_job;

typedef struct sv_infer_stats {
    void (*batch)(void *user, int n, double seconds); // after each forward (may be NULL)
    void *user;
} sv_infer_stats;

typedef struct sv_infer sv_infer;

// Starts the inference thread over m and its context ctx (which only this thread uses from now on):
// batches of up to max_batch jobs, waiting at most max_wait_ms after the first one, queue_cap jobs
// at most waiting. layer: the Grad-CAM layer (kept by the caller). Returns 0 or -1 (err set).
int sv_infer_start(nt_ctx *ctx, nt_model *m, int S, int layer, int max_batch, int max_wait_ms,
                   int queue_cap, void (*on_done)(sv_job *), const sv_infer_stats *stats,
                   sv_infer **out, char *err, size_t errlen);
// Queues j (not yet done). 0 queued, -1 the queue is full, -2 shutting down.
int sv_infer_submit(sv_infer *q, sv_job *j);
// Jobs waiting (not yet taken into a batch).
int sv_infer_depth(sv_infer *q);
// Finishes every queued job, then stops and joins the thread; NULL is fine.
void sv_infer_stop(sv_infer *q);

// A PNG (8-bit RGB, w x h) in memory: *png malloc'd. 0, or -1 (out of memory / libpng error).
int sv_png_encode(const uint8_t *rgb, int w, int h, uint8_t **png, size_t *len);

#endif
