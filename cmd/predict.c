/*
 * predict.c: `pneumo predict`: decode, resize and preprocess images, run the model in batches
 * and print one JSON line per image (or a table on a terminal). A file that cannot be read is
 * reported on its own line and the run goes on; the exit code is then 1.
 * Issue 5 adds S3 sources, Redis results and workers. Tests: tests/cli.sh.
 */
#include "cmd/cli.h"
#include "data/nd.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODEL "weights/pneumo-resnet50.safetensors"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void emit(int json, const char *src, double p, const nt_model_meta *meta, const char *model,
                 double ms)
{
    int label = p >= meta->threshold;
    if (json) {
        json_t *o = json_pack("{s:s,s:f,s:s,s:f,s:s,s:f}", "source", src, "probability", p, "label",
                              meta->class_names[label], "threshold", (double)meta->threshold,
                              "model", model, "latency_ms", ms);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("%-50s %8.4f  %-10s (threshold %.3f)\n", src, p, meta->class_names[label],
               (double)meta->threshold);
    }
    fflush(stdout);
}

static void emit_error(int json, const char *src, const char *msg)
{
    if (json) {
        json_t *o = json_pack("{s:s,s:s}", "source", src, "error", msg);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("%-50s error: %s\n", src, msg);
    }
    fflush(stdout);
}

int cmd_predict(int argc, char **argv)
{
    const char *model = NULL, *resize_s = "area", *format = NULL;
    int threads = 0, batch = 8;
    cli_opt opts[] = {
        {"model", OPT_STR, &model, 0, 0, "FILE", "model file (default " DEFAULT_MODEL ")"},
        {"batch", OPT_INT, &batch, 1, 1024, "N", "images per forward pass, default 8"},
        {"threads", OPT_INT, &threads, 0, 1024, "N", "compute threads, default all CPUs"},
        {"resize", OPT_STR, &resize_s, 0, 0, "nearest|bilinear|area",
         "how images are resized to the model's input, default area"},
        {"format", OPT_STR, &format, 0, 0, "jsonl|table",
         "output format; default table on a terminal, else jsonl"},
    };
    cli_cmd cmd = {"predict",
                   "[--model FILE] [options] IMAGE...",
                   "Predict the probability of pneumonia for each JPEG/PNG image.",
                   opts,
                   (int)(sizeof(opts) / sizeof(opts[0])),
                   1,
                   -1};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    int json = !cli_isatty(stdout);
    if (format) {
        if (strcmp(format, "jsonl") == 0)
            json = 1;
        else if (strcmp(format, "table") == 0)
            json = 0;
        else
            return cli_fail("predict", EXIT_USAGE, "--format expects jsonl or table, got \"%s\"",
                            format);
    }
    if (!model) {
        if (access(DEFAULT_MODEL, R_OK) != 0)
            return cli_fail("predict", EXIT_USAGE,
                            "no --model given and the default %s is not here; create one with "
                            "`pneumo init --out FILE` or train one",
                            DEFAULT_MODEL);
        model = DEFAULT_MODEL;
    }
    nt_ctx *ctx = cli_ctx("predict", threads, 0);
    if (!ctx) return EXIT_FAIL;
    nd_resize resize;
    if (nd_resize_parse(ctx, resize_s, &resize) != NT_OK) {
        rc = cli_fail("predict", EXIT_USAGE, "--%s", nt_ctx_errmsg(ctx));
        nt_ctx_free(ctx);
        return rc;
    }
    nt_model *m;
    nt_model_meta meta;
    if (nt_model_load_file(ctx, model, &m, &meta) != NT_OK) {
        rc = cli_fail("predict", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        nt_ctx_free(ctx);
        return rc;
    }
    int S          = meta.cfg.img_size;
    int64_t shp[4] = {batch, S, S, 3};
    nt_tensor x;
    float *probs     = malloc(sizeof(float) * (size_t)batch);
    const char **src = malloc(sizeof(char *) * (size_t)batch);
    if (nt_tensor_new(ctx, 4, shp, &x) != NT_OK || !probs || !src) {
        rc = cli_fail("predict", EXIT_FAIL, "out of memory for a batch of %d", batch);
        goto out;
    }
    if (!json) printf("%-50s %8s  %s\n", "image", "p", "label");
    int failed = 0, done = 0;
    for (int i = 0; i < npos;) {
        int n     = 0;
        double t0 = now_s();
        for (; i < npos && n < batch; i++) {
            // The loader's path (DCT-scaled decode for large originals, then the resize), so
            // that predictions see what training saw.
            nd_image small;
            uint8_t *buf = NULL;
            size_t len   = 0;
            nt_status s  = nd_file_read(ctx, pos[i], 0, &buf, &len);
            if (s == NT_OK)
                s = nd_image_decode_resized(ctx, buf, len, pos[i], S, S, resize, &small);
            free(buf);
            if (s != NT_OK) {
                emit_error(json, pos[i], nt_ctx_errmsg(ctx));
                failed++;
                continue;
            }
            nt_preprocess_apply(meta.preprocess, small.rgb, (int64_t)S * S,
                                x.data + (size_t)n * S * S * 3);
            nd_image_free(&small);
            src[n++] = pos[i];
        }
        if (n == 0) continue;
        nt_tensor xb = x;
        xb.shape[0]  = n;
        if (nt_model_forward(m, &xb, 0, 0) != NT_OK ||
            nt_model_loss(m, NULL, NULL, NULL, probs, NULL) != NT_OK) {
            rc = cli_fail("predict", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
            goto out;
        }
        double ms = (now_s() - t0) * 1e3 / n;
        for (int k = 0; k < n; k++)
            emit(json, src[k], probs[k], &meta, model, ms);
        done += n;
    }
    if (failed)
        rc = cli_fail("predict", EXIT_FAIL, "%d of %d images failed (see their lines above)",
                      failed, done + failed);
out:
    free(probs);
    free(src);
    nt_tensor_free(&x);
    nt_model_free(m);
    nt_ctx_free(ctx);
    return rc;
}
