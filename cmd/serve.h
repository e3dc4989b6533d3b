/*
 * serve.h: the pieces of `pneumo serve` shared by cmd/serve.c (HTTP, routing, auth, Redis,
 * metrics) and cmd/serve_infer.c (the micro-batching queue and the inference thread, Grad-CAM,
 * heat-map sources and PNGs). Glue only: the math is libnet's (nt_model_gradcam,
 * nt_gradcam_overlay). Tests: tests/serve.sh.
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
// batches of up to max_batch jobs, waiting at most max_wait_ms after the first one while other
// uploads are on their way (sv_infer_expect), queue_cap jobs
// at most waiting. layer: the Grad-CAM layer (kept by the caller). Returns 0 or -1 (err set).
int sv_infer_start(nt_ctx *ctx, nt_model *m, int S, int layer, int max_batch, int max_wait_ms,
                   int queue_cap, void (*on_done)(sv_job *), const sv_infer_stats *stats,
                   sv_infer **out, char *err, size_t errlen);
// An upload has begun (delta 1) or ended without a job (-1, e.g. a cache hit or an error): the
// inference thread waits for company (max_wait_ms at most) only while uploads are on their way.
void sv_infer_expect(sv_infer *q, int delta);
// Queues j (not yet done); expected: j's upload was announced by sv_infer_expect(q, 1), which
// this settles whatever it returns. 0 queued, -1 the queue is full, -2 shutting down.
int sv_infer_submit(sv_infer *q, sv_job *j, int expected);
// Jobs waiting (not yet taken into a batch).
int sv_infer_depth(sv_infer *q);
// Finishes every queued job, then stops and joins the thread; NULL is fine. Later calls of
// sv_infer_submit answer -2 (HTTP threads may still call in until their daemon stops).
void sv_infer_stop(sv_infer *q);
// Frees q (stopped) once nothing calls in any more; NULL is fine.
void sv_infer_free(sv_infer *q);

// A PNG (8-bit RGB, w x h) in memory: *png malloc'd. 0, or -1 (out of memory / libpng error).
int sv_png_encode(const uint8_t *rgb, int w, int h, uint8_t **png, size_t *len);

// ---- heat-map sources ----
//
// A heat map is drawn on its first GET, not at upload: the upload keeps only what drawing needs,
// packed into one binary string (the in-process LRU and Redis key pneumo:heatsrc:<mid>:<sha> hold
// the same bytes, so any serve process behind the same Redis can draw it). Layout, little-endian:
//   offset 0  "PNHS"            magic
//          4  u8   version      1
//          5  u8   channels     1 (the image is grey: R = G = B everywhere) or 3 (RGB)
//          6  u16  w, h         the display image's size
//         10  u16  cam_h, cam_w the Grad-CAM map's size
//         14  u16  0            reserved
//         16  i64  expiry       Unix seconds after which it is stale (0: never), so that the PNG
//                               drawn later expires with the result, not a --ttl after the GET
//         24  f32  cam[cam_h * cam_w], row-major, values in [0,1]
//             u8   pixels[h * w * channels], row-major, interleaved
// Grey X-rays (nearly all of them) take a third of the RGB size; drawing from either form gives
// the same PNG, byte for byte, as drawing from the decoded RGB image did.
#define SV_HMSRC_HEAD 24

// Packs cam [cam_h, cam_w] and rgb [h, w, 3] (both borrowed) into a new malloc'd source of *len
// bytes; NULL when out of memory or a size does not fit the layout (above 65535). Thread-safe.
uint8_t *sv_hmsrc_pack(const float *cam, int cam_h, int cam_w, const uint8_t *rgb, int w, int h,
                       int64_t expiry, size_t *len);

// Draws the heat map a source describes (nt_gradcam_overlay) and encodes it: *png malloc'd,
// *expiry from the header (may be NULL). 0; -1 when src is not a source of this layout (err says
// what was expected and what arrived); -2 out of memory or a libpng error. Thread-safe.
int sv_hmsrc_render(const uint8_t *src, size_t len, uint8_t **png, size_t *png_len, int64_t *expiry,
                    char *err, size_t errlen);

#endif
