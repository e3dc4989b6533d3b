/*
 * report.h: what `pneumo eval` (cmd/eval.c) hands to its HTML report writer (cmd/report.c): the
 * evaluation result, the ROC / precision-recall curve points, the most confident mistakes, and a
 * run's training log (log.csv with Keras CSVLogger columns). Not here: the metrics themselves
 * (libnet's nt_metrics_*). Tests: tests/eval.sh.
 */
#ifndef REPORT_H
#define REPORT_H

#include "data/dataset.h"

#include <stdio.h>

// One point of the ROC and precision-recall curves: predicting "p >= threshold" positive gives
// tp true positives and fp false positives.
typedef struct ev_point {
    float threshold;
    int64_t tp, fp;
} ev_point;

// A mistake: dataset item `index` and its probability.
typedef struct ev_mistake {
    int index;
    float p;
} ev_mistake;

// A run's log.csv: one row per line, in file order. A column the file lacks, or an empty or
// "nan" field, is NaN.
typedef struct ev_log {
    int n;
    double *epoch, *loss, *val_loss, *auc, *val_auc; // [n] each, one allocation
} ev_log;

typedef struct ev_result {
    const char *model_path;
    const nt_model_meta *meta;
    const nd_dataset *ds;
    int nskipped;          // items that could not be read or decoded (not in the metrics)
    const int *skipped;    // their dataset indices [nskipped]
    float threshold;       // the one used ("p >= threshold" is class 1)
    int threshold_given;   // 1 when --threshold overrode meta->threshold
    nt_metric_values v;    // at threshold
    double auc_lo, auc_hi; // bootstrap percentile interval (NaN when not computed)
    double ci_level;
    int boot;
    double ap;             // average precision: sum over thresholds of (R_k - R_k-1) P_k
    const ev_point *curve; // by falling threshold; the first lies above every score (0, 0)
    int ncurve;
    const ev_mistake *fp, *fn; // most confident first: highest p for fp, lowest for fn
    int nfp, nfn;
    const char *log_path; // NULL: no training log given
    const ev_log *log;
    int kermany; // the data has the Kermany layout and names (attribution in the footer)
} ev_result;

// Reads a run's log.csv. The header must name an "epoch" column and at least one of loss,
// val_loss, auc, val_auc; every row must have the header's field count. NT_EIO (cannot read: the
// message has the path and errno text), NT_EFORMAT (not such a log: path, line and what is
// wrong), NT_ENOMEM. *out is zeroed on failure. Free with ev_log_free.
nt_status ev_log_read(nt_ctx *ctx, const char *path, ev_log *out);
void ev_log_free(ev_log *l);

// Writes the self-contained HTML report of r to f: inline CSS and SVG charts, thumbnails of the
// mistakes (read again from their sources, through s3 for s3:// items: s3 may be NULL for
// folders) as data: PNGs fitting thumb_px x thumb_px. An image that cannot be read again is shown
// as a grey box with the reason. Nothing in it refers to another file or a network address.
// Returns 0, or -1 when writing to f failed (errno set).
int ev_report_write(FILE *f, const ev_result *r, nt_ctx *ctx, nd_s3 *s3, int thumb_px);

// Base64 (RFC 4648, with padding) of buf[0..len) into a new NUL-terminated string; NULL when out
// of memory. Exposed for tests.
char *ev_base64(const uint8_t *buf, size_t len);
// Encodes an 8-bit RGB image (w x h, rows of w*3 bytes) as PNG in memory (greyscale when every
// pixel has R = G = B). *png is malloc'd. Returns 0, or -1 (out of memory or a libpng error).
int ev_png_encode(const uint8_t *rgb, int w, int h, uint8_t **png, size_t *len);

#endif
