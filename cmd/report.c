/*
 * report.c: the self-contained HTML report of `pneumo eval`: inline CSS, inline SVG charts (ROC,
 * precision-recall, confusion matrix, training curves from a run's log.csv) and the most
 * confident mistakes as base64 PNG thumbnails, so that the one file can be mailed or archived and
 * opened offline. It makes no network request and links to nothing. Glue only: numbers come from
 * cmd/eval.c. Tests: tests/eval.sh.
 */
#include "cmd/report.h"

#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- small writers ----

// Writes s with &, <, >, " and ' escaped (for text and attribute values).
static void html(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

// "0.8750", or "n/a" for NaN.
static const char *fmt4(char *buf, size_t len, double x)
{
    if (isfinite(x))
        snprintf(buf, len, "%.4f", x);
    else
        snprintf(buf, len, "n/a");
    return buf;
}

static const char *base_name(const char *s)
{
    const char *b = strrchr(s, '/');
    return b ? b + 1 : s;
}

// ---- base64 and PNG ----

char *ev_base64(const uint8_t *buf, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out               = malloc((len + 2) / 3 * 4 + 1);
    if (!out) return NULL;
    char *o = out;
    size_t i;
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)buf[i] << 16 | (uint32_t)buf[i + 1] << 8 | buf[i + 2];
        *o++       = tab[v >> 18 & 63];
        *o++       = tab[v >> 12 & 63];
        *o++       = tab[v >> 6 & 63];
        *o++       = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)buf[i] << 16 | (i + 1 < len ? (uint32_t)buf[i + 1] << 8 : 0);
        *o++       = tab[v >> 18 & 63];
        *o++       = tab[v >> 12 & 63];
        *o++       = i + 1 < len ? tab[v >> 6 & 63] : '=';
        *o++       = '=';
    }
    *o = 0;
    return out;
}

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
} membuf;

static void png_mem_write(png_structp png, png_bytep data, size_t len)
{
    membuf *b = png_get_io_ptr(png);
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) png_error(png, "out of memory");
        b->p   = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void png_mem_flush(png_structp png)
{
    (void)png;
}

// libpng's default handlers print to stderr; the caller reports failures itself.
static void png_quiet_error(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_longjmp(png, 1);
}

static void png_quiet_warning(png_structp png, png_const_charp msg)
{
    (void)png, (void)msg;
}

int ev_png_encode(const uint8_t *rgb, int w, int h, uint8_t **png_out, size_t *len)
{
    *png_out = NULL;
    *len     = 0;
    size_t i = 0, npx = (size_t)w * (size_t)h;
    while (i < npx && rgb[3 * i] == rgb[3 * i + 1] && rgb[3 * i] == rgb[3 * i + 2])
        i++;
    // volatile: read after setjmp (gcc's -Wclobbered).
    volatile int grey = i == npx;
    // Everything the error path frees is set before setjmp and never reassigned after it.
    membuf *buf     = calloc(1, sizeof(*buf));
    uint8_t *row    = malloc((size_t)w * 3);
    png_structp png = buf && row ? png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL,
                                                           png_quiet_error, png_quiet_warning)
                                 : NULL;
    png_infop info  = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        free(row);
        free(buf);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(buf->p);
        free(buf);
        free(row);
        return -1;
    }
    png_set_write_fn(png, buf, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 grey ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) {
        const uint8_t *src = rgb + (size_t)y * (size_t)w * 3;
        if (grey)
            for (int x = 0; x < w; x++)
                row[x] = src[3 * x];
        else
            memcpy(row, src, (size_t)w * 3);
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *png_out = buf->p;
    *len     = buf->n;
    free(buf);
    free(row);
    return 0;
}

// Reads src again (file or s3:// object) and makes a PNG that fits px x px, aspect kept.
// Returns NT_OK, or a status with the message in ctx.
static nt_status thumbnail(nt_ctx *ctx, nd_s3 *s3, const char *src, int px, uint8_t **png,
                           size_t *len, int *tw, int *th)
{
    uint8_t *buf = NULL;
    size_t n     = 0;
    nt_status s;
    if (strncmp(src, "s3://", 5) == 0) {
        char *bucket = NULL, *key = NULL;
        s = s3 ? nd_s3_parse_uri(ctx, src, &bucket, &key)
               : nt_ctx_seterr(ctx, NT_EINVAL, "%s: no S3 client", src);
        if (s == NT_OK) s = nd_s3_get(s3, bucket, key, &buf, &n);
        free(bucket);
        free(key);
    } else {
        s = nd_file_read(ctx, src, 0, &buf, &n);
    }
    nd_image full = {0}, small = {0};
    if (s == NT_OK) s = nd_image_decode_for(ctx, buf, n, src, px, px, &full);
    free(buf);
    if (s == NT_OK) {
        double k = fmin((double)px / full.w, (double)px / full.h);
        *tw      = (int)fmax(1, lround(full.w * k));
        *th      = (int)fmax(1, lround(full.h * k));
        s        = nd_image_resize(ctx, &full, *tw, *th, ND_RESIZE_AREA, &small);
    }
    nd_image_free(&full);
    if (s == NT_OK && ev_png_encode(small.rgb, *tw, *th, png, len) != 0)
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "%s: PNG encoding failed", src);
    nd_image_free(&small);
    return s;
}

// ---- SVG charts ----

#define CW 380 // chart size
#define CH 300
#define ML 54 // margins around the plot area
#define MR 14
#define MT 30
#define MB 46

typedef struct series {
    const char *name, *colour;
    const double *x, *y;
    int n, dashed;
} series;

typedef enum { LEGEND_TOP_RIGHT, LEGEND_BOTTOM_RIGHT, LEGEND_BOTTOM_LEFT } legend_pos;

typedef struct chart {
    const char *title, *xlabel, *ylabel;
    double x0, x1, xstep, y0, y1, ystep;
    const series *s;
    int ns;
    legend_pos legend;
    int diagonal;     // dotted y = x (ROC's chance line)
    double hline;     // dotted horizontal line (PR's chance level), NaN for none
    double mx, my;    // operating point, NaN for none
    const char *mark; // its label
} chart;

static double to_px(const chart *c, double x)
{
    return ML + (x - c->x0) / (c->x1 - c->x0) * (CW - ML - MR);
}

static double to_py(const chart *c, double y)
{
    return CH - MB - (y - c->y0) / (c->y1 - c->y0) * (CH - MT - MB);
}

// The 1, 2 or 5 times a power of ten nearest above v.
static double nice_step(double v)
{
    if (!(v > 0)) return 1;
    double e = pow(10, floor(log10(v))), f = v / e;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
}

// A range covering [lo, hi] in whole steps of about span/5 (at least min_step).
static void nice_range(double lo, double hi, double min_step, double *a, double *b, double *step)
{
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-9) lo -= 0.5 * fmax(min_step, 1e-3), hi += 0.5 * fmax(min_step, 1e-3);
    *step = fmax(nice_step((hi - lo) / 5), min_step);
    *a    = floor(lo / *step + 1e-9) * *step;
    *b    = ceil(hi / *step - 1e-9) * *step;
}

static void svg_chart(FILE *f, const chart *c)
{
    fprintf(f, "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"",
            CW, CH, CW, CH);
    html(f, c->title);
    fprintf(f, "\">\n<text x=\"%d\" y=\"18\" class=\"t\">", ML);
    html(f, c->title);
    fprintf(f,
            "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fff\" "
            "stroke=\"#999\"/>\n",
            ML, MT, CW - ML - MR, CH - MT - MB);
    int nx = (int)lround((c->x1 - c->x0) / c->xstep), ny = (int)lround((c->y1 - c->y0) / c->ystep);
    for (int i = 0; i <= nx; i++) {
        double v = c->x0 + i * c->xstep, X = to_px(c, v);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>"
                "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.4g</text>\n",
                X, MT + 1, X, CH - MB - 1, X, CH - MB + 15, fabs(v) < 1e-12 ? 0.0 : v);
    }
    for (int i = 0; i <= ny; i++) {
        double v = c->y0 + i * c->ystep, Y = to_py(c, v);
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
                ML + 1, Y, CW - MR - 1, Y, ML - 5, Y + 4, fabs(v) < 1e-12 ? 0.0 : v);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", ML + (CW - ML - MR) / 2, CH - 10);
    html(f, c->xlabel);
    fprintf(f, "</text><text transform=\"translate(14 %d) rotate(-90)\" text-anchor=\"middle\">",
            MT + (CH - MT - MB) / 2);
    html(f, c->ylabel);
    fputs("</text>\n", f);
    if (c->diagonal)
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#aaa\" "
                "stroke-dasharray=\"3 3\"/>\n",
                to_px(c, 0), to_py(c, 0), to_px(c, 1), to_py(c, 1));
    if (isfinite(c->hline))
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#aaa\" "
                "stroke-dasharray=\"3 3\"/>\n",
                ML, to_py(c, c->hline), CW - MR, to_py(c, c->hline));
    for (int k = 0; k < c->ns; k++) {
        const series *s = &c->s[k];
        // A NaN breaks the line. Short series get a dot per point, long ones (curves) only at
        // the ends of each piece.
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s d=\"", s->colour,
                s->dashed ? " stroke-dasharray=\"6 3\"" : "");
        int pen = 0;
        for (int i = 0; i < s->n; i++) {
            if (!isfinite(s->x[i]) || !isfinite(s->y[i])) {
                pen = 0;
                continue;
            }
            fprintf(f, "%c%.1f %.1f ", pen ? 'L' : 'M', to_px(c, s->x[i]), to_py(c, s->y[i]));
            pen = 1;
        }
        fputs("\"/>\n", f);
        for (int i = 0; i < s->n; i++)
            if (isfinite(s->x[i]) && isfinite(s->y[i]) &&
                (s->n < 40 || (i == 0 || !isfinite(s->y[i - 1])) ||
                 (i + 1 == s->n || !isfinite(s->y[i + 1]))))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>",
                        to_px(c, s->x[i]), to_py(c, s->y[i]), s->colour);
        fputc('\n', f);
    }
    if (isfinite(c->mx) && isfinite(c->my)) {
        double X = to_px(c, c->mx), Y = to_py(c, c->my);
        int left = X > CW - MR - 130;
        fprintf(f,
                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#d62728\" stroke=\"#fff\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" fill=\"#d62728\">",
                X, Y, X + (left ? -8 : 8), Y + (Y > CH - MB - 20 ? -8 : 14),
                left ? "end" : "start");
        html(f, c->mark);
        fputs("</text>\n", f);
    }
    // Legend. Right-aligned legends are placed from their longest name (about 6 px a character).
    size_t longest = 0;
    for (int k = 0; k < c->ns; k++)
        longest = strlen(c->s[k].name) > longest ? strlen(c->s[k].name) : longest;
    int lx = c->legend == LEGEND_BOTTOM_LEFT ? ML + 10 : CW - MR - 10 - 28 - 6 * (int)longest;
    int ly = c->legend == LEGEND_TOP_RIGHT ? MT + 16 : CH - MB - 10 - 16 * (c->ns - 1);
    for (int k = 0; k < c->ns; k++, ly += 16) {
        fprintf(f,
                "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                "<text x=\"%d\" y=\"%d\">",
                lx, ly - 4, lx + 22, ly - 4, c->s[k].colour,
                c->s[k].dashed ? " stroke-dasharray=\"6 3\"" : "", lx + 28, ly);
        html(f, c->s[k].name);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
}

// Confusion matrix: rows the true class, columns the prediction; cells shaded by their share of
// the row (blue on the diagonal, red off it).
static void svg_confusion(FILE *f, const ev_result *r)
{
    const int L = 150, T = 58, W = 130, H = 86;
    int64_t cell[2][2]    = {{r->v.tn, r->v.fp}, {r->v.fn, r->v.tp}};
    const char *tag[2][2] = {{"TN", "FP"}, {"FN", "TP"}};
    fprintf(f,
            "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" "
            "aria-label=\"confusion matrix\">\n<text x=\"%d\" y=\"18\" class=\"t\">Confusion "
            "matrix at threshold %.4g</text>\n<text x=\"%d\" y=\"38\" "
            "text-anchor=\"middle\">predicted</text>\n",
            L + 2 * W + 10, T + 2 * H + 10, L + 2 * W + 10, T + 2 * H + 10, 4, (double)r->threshold,
            L + W);
    for (int j = 0; j < 2; j++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", L + W * j + W / 2, T - 6);
        html(f, r->ds->class_names[j]);
        fputs("</text>\n", f);
    }
    for (int i = 0; i < 2; i++) {
        int64_t row = cell[i][0] + cell[i][1];
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">true ", L - 8,
                T + H * i + H / 2 + 4);
        html(f, r->ds->class_names[i]);
        fputs("</text>\n", f);
        for (int j = 0; j < 2; j++) {
            double frac = row ? (double)cell[i][j] / (double)row : 0;
            // White to #1f5fa8 (right) or #c0392b (wrong) by the share of the row.
            int R = i == j ? 31 : 192, G = i == j ? 95 : 57, B = i == j ? 168 : 43;
            int cr = (int)lround(255 + (R - 255) * frac), cg = (int)lround(255 + (G - 255) * frac),
                cb          = (int)lround(255 + (B - 255) * frac);
            const char *ink = frac > 0.55 ? "#fff" : "#222";
            int x = L + W * j, y = T + H * i;
            fprintf(f,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\" "
                    "stroke=\"#fff\" stroke-width=\"2\"/>\n<text x=\"%d\" y=\"%d\" "
                    "text-anchor=\"middle\" style=\"font-size:22px;font-weight:600;fill:%s\">%lld"
                    "</text><text x=\"%d\" y=\"%d\" text-anchor=\"middle\" style=\"fill:%s\">%s, "
                    "%.1f%% of row</text>\n",
                    x, y, W, H, cr, cg, cb, x + W / 2, y + H / 2 + 2, ink, (long long)cell[i][j],
                    x + W / 2, y + H / 2 + 22, ink, tag[i][j], 100 * frac);
        }
    }
    fputs("</svg>\n", f);
}

static void charts_roc_pr(FILE *f, const ev_result *r)
{
    int n      = r->ncurve;
    double *xy = malloc(sizeof(double) * 4 * (size_t)(n + 1));
    if (!xy) {
        fputs("<p class=\"note\">Out of memory for the curves.</p>\n", f);
        return;
    }
    double P = (double)r->v.pos, N = (double)r->v.neg;
    double *fpr = xy, *tpr = xy + n, *rec = xy + 2 * n, *prec = xy + 3 * n;
    for (int i = 0; i < n; i++) {
        fpr[i] = N > 0 ? (double)r->curve[i].fp / N : NAN;
        tpr[i] = P > 0 ? (double)r->curve[i].tp / P : NAN;
    }
    // PR: the first point with a prediction also stands for recall 0 (as scikit-learn draws it).
    int m = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = r->curve[i].tp + r->curve[i].fp;
        if (k == 0 || P <= 0) continue;
        if (m == 0) rec[m] = 0, prec[m] = (double)r->curve[i].tp / (double)k, m++;
        rec[m]  = (double)r->curve[i].tp / P;
        prec[m] = (double)r->curve[i].tp / (double)k;
        m++;
    }
    char mark[96], auc[64], lo[16];
    snprintf(mark, sizeof(mark), "threshold %.3g", (double)r->threshold);
    if (isfinite(r->auc_lo))
        snprintf(auc, sizeof(auc), "AUC %.3f [%.3f, %.3f]", r->v.auc, r->auc_lo, r->auc_hi);
    else
        snprintf(auc, sizeof(auc), "AUC %s", fmt4(lo, sizeof(lo), r->v.auc));
    series roc = {auc, "#1f77b4", fpr, tpr, n, 0};
    chart c    = {.title    = "ROC curve",
                  .xlabel   = "false positive rate (1 - specificity)",
                  .ylabel   = "true positive rate (sensitivity)",
                  .x1       = 1,
                  .xstep    = 0.2,
                  .y1       = 1,
                  .ystep    = 0.2,
                  .s        = &roc,
                  .ns       = 1,
                  .legend   = LEGEND_BOTTOM_RIGHT,
                  .diagonal = 1,
                  .hline    = NAN,
                  .mx       = 1 - r->v.specificity,
                  .my       = r->v.recall,
                  .mark     = mark};
    char apn[64];
    snprintf(apn, sizeof(apn), "average precision %s", fmt4(lo, sizeof(lo), r->ap));
    series pr = {apn, "#2ca02c", rec, prec, m, 0};
    chart d   = {.title  = "Precision-recall curve",
                 .xlabel = "recall (sensitivity)",
                 .ylabel = "precision",
                 .x1     = 1,
                 .xstep  = 0.2,
                 .y1     = 1,
                 .ystep  = 0.2,
                 .s      = &pr,
                 .ns     = 1,
                 .legend = LEGEND_BOTTOM_LEFT,
                 .hline  = r->v.n ? P / (double)r->v.n : NAN,
                 .mx     = r->v.recall,
                 .my     = r->v.precision,
                 .mark   = mark};
    fputs("<div class=\"charts\">\n<figure>", f);
    if (P > 0 && N > 0)
        svg_chart(f, &c);
    else
        fputs("<p class=\"note\">No ROC curve: the data has only one class.</p>", f);
    fputs("<figcaption>Dotted: chance. Red: the operating point at the threshold.</figcaption>"
          "</figure>\n<figure>",
          f);
    if (m > 0)
        svg_chart(f, &d);
    else
        fputs("<p class=\"note\">No precision-recall curve: no positive images.</p>", f);
    fputs("<figcaption>Dotted: the share of positives (chance).</figcaption></figure>\n<figure>",
          f);
    svg_confusion(f, r);
    fputs("</figure>\n</div>\n", f);
    free(xy);
}

static void range_of(const double *a, const double *b, int n, double *lo, double *hi)
{
    *lo = INFINITY, *hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isfinite(a[i])) *lo = fmin(*lo, a[i]), *hi = fmax(*hi, a[i]);
        if (b && isfinite(b[i])) *lo = fmin(*lo, b[i]), *hi = fmax(*hi, b[i]);
    }
}

static void charts_training(FILE *f, const ev_result *r)
{
    fputs("<h2>Training curves</h2>\n", f);
    if (!r->log) {
        fputs("<p class=\"note\">No training log given (pass <code>--run DIR</code> or "
              "<code>--csv DIR/log.csv</code> to show the run's curves).</p>\n",
              f);
        return;
    }
    const ev_log *l = r->log;
    fputs("<p>From <code>", f);
    html(f, r->log_path);
    fprintf(f, "</code>: %d epoch%s.</p>\n", l->n, l->n == 1 ? "" : "s");
    if (l->n == 0) return;
    double x0, x1, xs, lo, hi;
    range_of(l->epoch, NULL, l->n, &lo, &hi);
    nice_range(lo, hi, 1, &x0, &x1, &xs);
    fputs("<div class=\"charts\">\n", f);
    struct {
        const char *title, *y, *a, *b;
        const double *ya, *yb;
        legend_pos lp;
    } k[2] = {
        {"Loss per epoch", "binary cross-entropy", "loss", "val_loss", l->loss, l->val_loss,
         LEGEND_TOP_RIGHT},
        {"ROC AUC per epoch", "AUC", "auc", "val_auc", l->auc, l->val_auc, LEGEND_BOTTOM_RIGHT}};
    for (int i = 0; i < 2; i++) {
        double y0, y1, ys;
        range_of(k[i].ya, k[i].yb, l->n, &lo, &hi);
        if (!isfinite(lo)) {
            fprintf(f, "<p class=\"note\">The log has no %s values.</p>\n", k[i].a);
            continue;
        }
        nice_range(lo, hi, 0, &y0, &y1, &ys);
        series s[2] = {{k[i].a, "#1f77b4", l->epoch, k[i].ya, l->n, 0},
                       {k[i].b, "#ff7f0e", l->epoch, k[i].yb, l->n, 1}};
        chart c     = {.title  = k[i].title,
                       .xlabel = "epoch (as in log.csv, from 0)",
                       .ylabel = k[i].y,
                       .x0     = x0,
                       .x1     = x1,
                       .xstep  = xs,
                       .y0     = y0,
                       .y1     = y1,
                       .ystep  = ys,
                       .s      = s,
                       .ns     = 2,
                       .legend = k[i].lp,
                       .hline  = NAN,
                       .mx     = NAN,
                       .my     = NAN};
        fputs("<figure>", f);
        svg_chart(f, &c);
        fputs("</figure>\n", f);
    }
    fputs("</div>\n", f);
}

// The most confident false positives (fn = 0) or false negatives (fn = 1) as thumbnails.
static void mistakes(FILE *f, const ev_result *r, int fn, nt_ctx *ctx, nd_s3 *s3, int px)
{
    const ev_mistake *m = fn ? r->fn : r->fp;
    int n               = fn ? r->nfn : r->nfp;
    fprintf(f, "<h3>False %s (true ", fn ? "negatives" : "positives");
    html(f, r->ds->class_names[fn]);
    fputs(", predicted ", f);
    html(f, r->ds->class_names[!fn]);
    fprintf(f, "), %s p first</h3>\n", fn ? "lowest" : "highest");
    if (n == 0) {
        fputs("<p class=\"note\">None.</p>\n", f);
        return;
    }
    fputs("<div class=\"thumbs\">\n", f);
    for (int i = 0; i < n; i++) {
        const char *src = r->ds->items[m[i].index].source;
        uint8_t *png    = NULL;
        size_t len      = 0;
        int w = px, h = px;
        nt_status s = thumbnail(ctx, s3, src, px, &png, &len, &w, &h);
        char *b64   = s == NT_OK ? ev_base64(png, len) : NULL;
        fputs("<figure class=\"thumb\" title=\"", f);
        html(f, src);
        fputs("\">", f);
        if (b64)
            fprintf(f, "<img width=\"%d\" height=\"%d\" alt=\"\" src=\"data:image/png;base64,%s\">",
                    w, h, b64);
        else {
            fprintf(f, "<div class=\"missing\" style=\"width:%dpx;height:%dpx\">", px, px);
            html(f, s == NT_OK ? "out of memory" : nt_ctx_errmsg(ctx));
            fputs("</div>", f);
        }
        fprintf(f, "<figcaption>p = %.4f<br>", (double)m[i].p);
        html(f, base_name(src));
        fputs("</figcaption></figure>\n", f);
        free(b64);
        free(png);
    }
    fputs("</div>\n", f);
}

static const char *css =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;"
    "max-width:1180px;margin:24px auto;padding:0 16px}\n"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;"
    "border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}\n"
    "table{border-collapse:collapse}td,th{padding:3px 12px 3px 0;text-align:left;"
    "border-bottom:1px solid #eee;vertical-align:top}td.n{text-align:right;"
    "font-variant-numeric:tabular-nums}\n"
    ".charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}figure{margin:0}"
    "figcaption{font-size:12px;color:#666}\n"
    "svg text{font:11px system-ui,sans-serif;fill:#333}svg text.t{font-size:13px;"
    "font-weight:600}\n"
    ".thumbs{display:flex;flex-wrap:wrap;gap:12px}.thumb{width:120px;font-size:11px;"
    "overflow-wrap:anywhere}.thumb img{display:block;border:1px solid #ccc;background:#000}\n"
    ".missing{background:#ddd;color:#555;font-size:10px;overflow:hidden}\n"
    ".note{color:#666}code{font-size:12px;overflow-wrap:anywhere}"
    "footer{margin-top:32px;border-top:1px solid #ddd;padding-top:8px;color:#555;"
    "font-size:12px}\n";

static void kv_row(FILE *f, const char *k, const char *v)
{
    fprintf(f, "<tr><th>%s</th><td>", k);
    html(f, v);
    fputs("</td></tr>\n", f);
}

int ev_report_write(FILE *f, const ev_result *r, nt_ctx *ctx, nd_s3 *s3, int thumb_px)
{
    const nt_model_meta *mm   = r->meta;
    const nd_dataset *ds      = r->ds;
    const nt_metric_values *v = &r->v;
    char b[1200], x[32], y[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char date[64];
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M %Z", &tm);

    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
          f);
    snprintf(b, sizeof(b), "pneumo eval: %s on %s", base_name(r->model_path), ds->root);
    html(f, b);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n", css);
    fputs("<h1>Pneumonia classifier evaluation</h1>\n<p class=\"note\">", f);
    snprintf(b, sizeof(b), "pneumo %s eval, %s. Positive class: %s.", NT_VERSION, date,
             ds->class_names[1]);
    html(f, b);
    fputs("</p>\n", f);

    // Model and data.
    fputs("<h2>Model</h2>\n<table>\n", f);
    kv_row(f, "file", r->model_path);
    snprintf(b, sizeof(b), "Keras ResNet50 v1, input %dx%dx3, head %d-%d, dropout %.2g%s",
             mm->cfg.img_size, mm->cfg.img_size, mm->cfg.head1, mm->cfg.head2,
             (double)mm->cfg.dropout, mm->cfg.width_div > 1 ? ", narrow test network" : "");
    if (mm->cfg.width_div > 1)
        snprintf(b + strlen(b), sizeof(b) - strlen(b), " (channels / %d)", mm->cfg.width_div);
    kv_row(f, "architecture", b);
    kv_row(f, "preprocessing", nt_preprocess_name(mm->preprocess));
    snprintf(b, sizeof(b), "%s, %s", mm->class_names[0], mm->class_names[1]);
    kv_row(f, "class names", b);
    if (r->threshold_given)
        snprintf(b, sizeof(b), "%.4g (--threshold; the model stores %.4g)", (double)r->threshold,
                 (double)mm->threshold);
    else
        snprintf(b, sizeof(b), "%.4g (stored in the model)", (double)r->threshold);
    kv_row(f, "threshold", b);
    kv_row(f, "provenance", mm->provenance[0] ? mm->provenance : "(none recorded)");
    fputs("</table>\n<h2>Data</h2>\n<table>\n", f);
    kv_row(f, "source", ds->root);
    snprintf(b, sizeof(b), "%lld (%s %lld, %s %lld)", (long long)v->n, ds->class_names[0],
             (long long)v->neg, ds->class_names[1], (long long)v->pos);
    kv_row(f, "images evaluated", b);
    if (r->nskipped) {
        fprintf(f, "<tr><th>skipped</th><td>%d could not be read or decoded:", r->nskipped);
        for (int i = 0; i < r->nskipped && i < 20; i++) {
            fputs(" <code>", f);
            html(f, base_name(ds->items[r->skipped[i]].source));
            fputs("</code>", f);
        }
        fprintf(f, "%s</td></tr>\n", r->nskipped > 20 ? " ..." : "");
    }
    fputs("</table>\n", f);

    // Metrics.
    fputs("<h2>Metrics</h2>\n<table>\n", f);
    struct {
        const char *name, *note;
        double val;
    } rows[] = {
        {"accuracy", "", v->accuracy},
        {"sensitivity", "recall: positives found", v->recall},
        {"specificity", "negatives cleared", v->specificity},
        {"precision", "positive predictive value", v->precision},
        {"F1", "harmonic mean of precision and recall", v->f1},
        {"ROC AUC", "", v->auc},
        {"average precision", "area under the precision-recall curve", r->ap},
        {"loss", "mean binary cross-entropy", v->loss},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        fprintf(f, "<tr><th>%s</th><td class=\"n\">%s</td><td class=\"note\">", rows[i].name,
                fmt4(x, sizeof(x), rows[i].val));
        if (i == 5 && isfinite(r->auc_lo))
            fprintf(f, "%.0f%% interval [%s, %s], percentile bootstrap, %d resamples",
                    100 * r->ci_level, fmt4(x, sizeof(x), r->auc_lo), fmt4(y, sizeof(y), r->auc_hi),
                    r->boot);
        else
            html(f, rows[i].note);
        fputs("</td></tr>\n", f);
    }
    fprintf(f,
            "<tr><th>threshold</th><td class=\"n\">%.4g</td><td class=\"note\">p &ge; "
            "threshold is ",
            (double)r->threshold);
    html(f, ds->class_names[1]);
    fputs("</td></tr>\n</table>\n", f);
    charts_roc_pr(f, r);
    charts_training(f, r);

    // Mistakes.
    fprintf(f,
            "<h2>Most confident mistakes</h2>\n<p class=\"note\">At threshold %.4g; hover a "
            "thumbnail for its full path.</p>\n",
            (double)r->threshold);
    mistakes(f, r, 0, ctx, s3, thumb_px);
    mistakes(f, r, 1, ctx, s3, thumb_px);

    fputs("<footer>\n", f);
    if (r->kermany)
        fputs("<p>Data: chest X-rays from Kermany, Zhang and Goldbaum, &ldquo;Labeled Optical "
              "Coherence Tomography (OCT) and Chest X-Ray Images for Classification&rdquo;, "
              "Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0.</p>\n",
              f);
    fputs("<p><strong>Decision support, not a diagnosis.</strong> These numbers describe this "
          "model on this data set only; a clinician reads the image.</p>\n</footer>\n"
          "</body>\n</html>\n",
          f);
    return ferror(f) ? -1 : 0;
}

// ---- training log ----

void ev_log_free(ev_log *l)
{
    if (!l) return;
    free(l->epoch);
    memset(l, 0, sizeof(*l));
}

// Splits line (modified in place) at commas into at most max fields; returns the count.
static int split_csv(char *line, char **fld, int max)
{
    int n = 0;
    for (char *p = line;;) {
        if (n < max) fld[n] = p;
        n++;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p  = c + 1;
    }
    return n;
}

static double field_value(const char *s)
{
    while (*s == ' ')
        s++;
    if (!*s) return NAN;
    char *end;
    double v = strtod(s, &end);
    while (*end == ' ')
        end++;
    return end == s || *end ? NAN : v;
}

#define LOG_MAX_COLS 64

nt_status ev_log_read(nt_ctx *ctx, const char *path, ev_log *out)
{
    memset(out, 0, sizeof(*out));
    uint8_t *buf = NULL;
    size_t len   = 0;
    nt_status s  = nd_file_read(ctx, path, (size_t)64 << 20, &buf, &len);
    if (s != NT_OK) return s;
    char *text = realloc(buf, len + 1);
    if (!text) {
        free(buf);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "%s: out of memory", path);
    }
    text[len] = 0;
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    static const char *want[] = {"epoch", "loss", "val_loss", "auc", "val_auc"};
    int col[5] = {-1, -1, -1, -1, -1}, ncols = 0, row = 0, lineno = 0;
    double *mem = malloc(sizeof(double) * 5 * (size_t)(lines + 1));
    if (!mem) {
        free(text);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "%s: out of memory", path);
    }
    char *fld[LOG_MAX_COLS];
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        lineno++;
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r') line[--ll] = 0;
        if (ll == 0) continue;
        int nf = split_csv(line, fld, LOG_MAX_COLS);
        if (nf > LOG_MAX_COLS) {
            s = nt_ctx_seterr(ctx, NT_EFORMAT, "%s line %d: %d columns, at most %d expected", path,
                              lineno, nf, LOG_MAX_COLS);
            break;
        }
        if (ncols == 0) {
            ncols = nf;
            for (int i = 0; i < nf; i++)
                for (int k = 0; k < 5; k++)
                    if (strcmp(fld[i], want[k]) == 0) col[k] = i;
            if (col[0] < 0 || (col[1] < 0 && col[2] < 0 && col[3] < 0 && col[4] < 0)) {
                s = nt_ctx_seterr(ctx, NT_EFORMAT,
                                  "%s: not a training log (expected a CSV header with epoch and "
                                  "loss, val_loss, auc or val_auc, as pneumo train's log.csv)",
                                  path);
                break;
            }
            continue;
        }
        if (nf != ncols) {
            s = nt_ctx_seterr(ctx, NT_EFORMAT, "%s line %d: %d fields, the header has %d", path,
                              lineno, nf, ncols);
            break;
        }
        for (int k = 0; k < 5; k++)
            mem[(size_t)k * (size_t)(lines + 1) + (size_t)row] =
                col[k] >= 0 ? field_value(fld[col[k]]) : NAN;
        row++;
    }
    if (s == NT_OK && ncols == 0)
        s = nt_ctx_seterr(ctx, NT_EFORMAT, "%s: empty; expected pneumo train's log.csv", path);
    free(text);
    if (s != NT_OK) {
        free(mem);
        return s;
    }
    size_t stride = (size_t)(lines + 1);
    out->n        = row;
    out->epoch    = mem;
    out->loss     = mem + stride;
    out->val_loss = mem + 2 * stride;
    out->auc      = mem + 3 * stride;
    out->val_auc  = mem + 4 * stride;
    return NT_OK;
}
