/*
 * bench_data.c: `pneumo bench data`: images/s of the data pipeline through the real loader
 * (data/loader.c): one epoch from the source (files or S3: read, decode, resize, fill the cache)
 * and one from the cache (no decoding), each with augmentation when asked, as grep-able lines.
 * The goal (DESIGN.md section 1): loading never limits training, i.e. one loader thread at least
 * twice the model's training rate. Not a test: correctness is tests/test_dataset.c's job.
 */
#include "cmd/bench_data.h"
#include "cmd/cli.h"
#include "data/dataset.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Warnings (skipped files) always go to stderr; INFO and DEBUG with PNEUMO_VERBOSE.
static void log_stderr(void *user, nt_log_level level, const char *msg)
{
    const char *v = getenv("PNEUMO_VERBOSE");
    if (level >= NT_LOG_WARN || (v && *v && strcmp(v, "0") != 0))
        fprintf(stderr, "pneumo bench data: %s%s\n", level >= NT_LOG_WARN ? "warning: " : "", msg);
}

// The last path component of a folder or s3:// URI ("train" for ".../chest_xray/train/").
static void set_name(const char *uri, char *out, size_t len)
{
    size_t l = strlen(uri);
    while (l > 1 && uri[l - 1] == '/')
        l--;
    size_t b = l;
    while (b > 0 && uri[b - 1] != '/')
        b--;
    snprintf(out, len, "%.*s", (int)(l - b), uri + b);
    for (char *p = out; *p; p++)
        if (*p == ' ' || *p == '=') *p = '_';
}

int bench_data(int argc, char **argv)
{
    const char *data = "../shared/data/chest_xray/train", *resize_s = "area";
    int img = 224, threads = 1, augment = 0, limit = 0, batch = 32, epochs = 2, nocache = 0;
    cli_opt opts[] = {
        {"data", OPT_STR, &data, 0, 0, "DIR|s3://BUCKET/PREFIX/",
         "class folders to read (default ../shared/data/chest_xray/train)"},
        {"img-size", OPT_INT, &img, 16, 4096, "PX", "square target size, default 224"},
        {"threads", OPT_INT, &threads, 1, 64, "N", "loader threads, default 1"},
        {"batch", OPT_INT, &batch, 1, 4096, "N", "images per batch, default 32"},
        {"resize", OPT_STR, &resize_s, 0, 0, "nearest|bilinear|area", "default area"},
        {"augment", OPT_FLAG, &augment, 0, 0, NULL,
         "a typical augmentation: rotation 15, shifts 0.1, shear 5, zoom 0.1, flip"},
        {"limit", OPT_INT, &limit, 0, 1 << 30, "N", "use N images spread over the set (0: all)"},
        {"epochs", OPT_INT, &epochs, 1, 1000, "N",
         "epochs timed: the first from the source, the rest from the cache; default 2"},
        {"no-cache", OPT_FLAG, &nocache, 0, 0, NULL,
         "decode in every epoch (steadier numbers for small sets such as val)"},
    };
    cli_cmd cmd = {"bench data",
                   "[--data DIR|s3://...] [options]",
                   "Images/s of decode + resize (+ augment) + preprocess through the loader "
                   "threads: from files or S3, then from the cache.",
                   opts,
                   (int)(sizeof(opts) / sizeof(opts[0])),
                   0,
                   0};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;

    nt_ctx_opts co;
    nt_ctx_opts_default(&co);
    co.nthreads = 1;
    co.log      = log_stderr;
    nt_ctx *ctx;
    if (nt_ctx_new(&co, &ctx) != NT_OK) {
        nt_ctx_free(ctx);
        return cli_fail("bench data", EXIT_FAIL, "cannot create a context");
    }
    nd_resize resize;
    if (nd_resize_parse(ctx, resize_s, &resize) != NT_OK) {
        rc = cli_fail("bench data", EXIT_USAGE, "--resize: %s", nt_ctx_errmsg(ctx));
        nt_ctx_free(ctx);
        return rc;
    }
    int is_s3       = strncmp(data, "s3://", 5) == 0;
    nd_s3 *s3       = NULL;
    nd_dataset *all = NULL, *ds = NULL;
    nd_loader *ld = NULL;
    nt_tensor x   = {0};
    int *idx      = NULL;
    rc            = EXIT_FAIL;
    if (is_s3 && nd_s3_new(ctx, NULL, &s3) != NT_OK) {
        cli_fail("bench data", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    double t0 = now_s();
    if (nd_dataset_open(ctx, data, s3, &all, NULL) != NT_OK) {
        cli_fail("bench data", EXIT_FAIL, "--data %s: %s", data, nt_ctx_errmsg(ctx));
        goto out;
    }
    double list_s = now_s() - t0;
    int n         = limit > 0 && limit < all->n ? limit : all->n;
    idx           = malloc(sizeof(int) * (size_t)n);
    if (!idx) {
        cli_fail("bench data", EXIT_FAIL, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) // spread over the classes and the file sizes
        idx[i] = (int)((int64_t)i * all->n / n);
    if (nd_dataset_subset(ctx, all, idx, n, &ds) != NT_OK) {
        cli_fail("bench data", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    int64_t bytes = 0;
    for (int i = 0; i < ds->n; i++)
        bytes += ds->items[i].size;
    char set[128];
    set_name(data, set, sizeof set);
    printf("data: %s: %d images (%.1f MB) of %d, %d classes, listed in %.2f s\n", data, ds->n,
           (double)bytes / 1e6, all->n, all->nclasses, list_s);
    fflush(stdout);

    nd_loader_opts lo;
    nd_loader_opts_default(&lo);
    lo.img_size     = img;
    lo.resize       = resize;
    lo.batch        = batch;
    lo.threads      = threads;
    lo.seed         = 1;
    lo.max_bad_frac = 1.0; // measure whatever is readable; skips are reported
    lo.cache        = !nocache;
    if (augment) {
        lo.aug.rotation_range     = 15;
        lo.aug.width_shift_range  = 0.1;
        lo.aug.height_shift_range = 0.1;
        lo.aug.shear_range        = 5;
        lo.aug.zoom_lo            = 0.9;
        lo.aug.zoom_hi            = 1.1;
        lo.aug.horizontal_flip    = 1;
    }
    int64_t shp[4] = {batch, img, img, 3};
    if (nt_tensor_new(ctx, 4, shp, &x) != NT_OK || nd_loader_new(ctx, ds, &lo, &ld) != NT_OK) {
        cli_fail("bench data", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    nd_loader_stats prev = {0};
    for (int e = 0; e < epochs; e++) {
        t0          = now_s();
        int images  = 0, got;
        nt_status s = nd_loader_start_epoch(ld, e);
        while (s == NT_OK && (s = nd_loader_next(ld, &x, NULL, NULL, &got)) == NT_OK && got > 0)
            images += got;
        double sec = now_s() - t0;
        if (s != NT_OK) {
            cli_fail("bench data", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
            goto out;
        }
        nd_loader_stats st;
        nd_loader_stats_get(ld, &st);
        int64_t decoded = (st.loaded - prev.loaded) - (st.cache_hits - prev.cache_hits);
        double dec_ms   = decoded > 0 ? 1e3 * (st.decode_s - prev.decode_s) / (double)decoded : 0;
        double prep_ms  = images > 0 ? 1e3 * (st.prep_s - prev.prep_s) / images : 0;
        printf("op=data source=%s set=%s threads=%d img=%d batch=%d resize=%s augment=%d epoch=%d "
               "images=%d bad=%lld s=%.3f decode_ms=%.2f prep_ms=%.2f images_per_s=%.1f\n",
               e == 0 || nocache ? (is_s3 ? "s3" : "files") : "cache", set, threads, img, batch,
               nd_resize_name(resize), augment, e, images, (long long)(st.bad - prev.bad), sec,
               dec_ms, prep_ms, sec > 0 ? images / sec : 0.0);
        fflush(stdout);
        prev = st;
    }
    rc = EXIT_OK;
out:
    nd_loader_free(ld);
    nt_tensor_free(&x);
    nd_dataset_free(ds);
    nd_dataset_free(all);
    nd_s3_free(s3);
    free(idx);
    nt_ctx_free(ctx);
    return rc;
}
