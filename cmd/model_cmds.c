/*
 * model_cmds.c: `pneumo info` (Keras-style summary of a model file), `pneumo init` (a new model
 * with Keras's initialisation) and `pneumo weights import` (Keras ImageNet .h5 -> model file).
 * Tests: tests/cli.sh.
 */
#include "cmd/cli.h"
#include "weights/nw.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// "1234567" -> "1,234,567"
static const char *commas(long long v, char *buf, size_t len)
{
    char tmp[32];
    snprintf(tmp, sizeof(tmp), "%lld", v < 0 ? -v : v);
    size_t n = strlen(tmp), k = 0;
    if (v < 0 && k + 1 < len) buf[k++] = '-';
    for (size_t i = 0; i < n && k + 2 < len; i++) {
        buf[k++] = tmp[i];
        if ((n - i - 1) % 3 == 0 && i + 1 < n) buf[k++] = ',';
    }
    buf[k] = 0;
    return buf;
}

static const char *shape_text(const nt_layer_info *li, char *buf, size_t len)
{
    if (li->out_ndim == 2)
        snprintf(buf, len, "(None, %lld)", (long long)li->out_shape[1]);
    else
        snprintf(buf, len, "(None, %lld, %lld, %lld)", (long long)li->out_shape[1],
                 (long long)li->out_shape[2], (long long)li->out_shape[3]);
    return buf;
}

// ---- pneumo info ----

int cmd_info(int argc, char **argv)
{
    int json = 0, params = 0;
    const char *unfreeze_s = "20";
    cli_opt opts[]         = {
                {"unfreeze", OPT_STR, &unfreeze_s, 0, 0, "N|all",
                 "show trainability as `pneumo train --unfreeze N` would set it (default 20)"},
                {"params", OPT_FLAG, &params, 0, 0, NULL, "also list every parameter tensor"},
                {"json", OPT_FLAG, &json, 0, 0, NULL, "print JSON instead of a table"},
    };
    cli_cmd cmd = {"info",
                   "MODEL [--unfreeze N|all] [--params] [--json]",
                   "Print a model file's layer table (name, type, output shape, parameters, "
                   "trainable), totals and metadata.",
                   opts,
                   3,
                   1,
                   1};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    int unfreeze;
    if ((rc = cli_parse_unfreeze("info", unfreeze_s, &unfreeze))) return rc;

    nt_ctx *ctx = cli_ctx("info", 1, 0);
    if (!ctx) return EXIT_FAIL;
    nt_model *m;
    nt_model_meta meta;
    nt_status s = nt_model_load_file(ctx, pos[0], &m, &meta);
    if (s != NT_OK) {
        rc = cli_fail("info", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        nt_ctx_free(ctx);
        return rc;
    }
    if ((s = nt_model_set_trainable_last(m, unfreeze)) != NT_OK) {
        rc = cli_fail("info", EXIT_USAGE, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    int64_t trainable, total = nt_model_count_params(m, &trainable);
    int L = nt_model_num_layers(m);
    if (json) {
        json_t *o = json_object(), *layers = json_array(), *md = json_object();
        for (int i = 0; i < L; i++) {
            nt_layer_info li;
            nt_model_layer(m, i, &li);
            json_t *sh = json_array();
            json_array_append_new(sh, json_null());
            for (int d = 1; d < li.out_ndim; d++)
                json_array_append_new(sh, json_integer(li.out_shape[d]));
            json_array_append_new(layers,
                                  json_pack("{s:s,s:s,s:o,s:I,s:I,s:b}", "name", li.name, "type",
                                            li.type_name, "output_shape", sh, "params",
                                            (json_int_t)li.nparams, "trainable_params",
                                            (json_int_t)li.ntrain, "trainable", li.trainable));
        }
        json_object_set_new(md, "preprocess", json_string(nt_preprocess_name(meta.preprocess)));
        json_object_set_new(md, "class_names",
                            json_pack("[ss]", meta.class_names[0], meta.class_names[1]));
        json_object_set_new(md, "threshold", json_real(meta.threshold));
        json_object_set_new(md, "provenance", json_string(meta.provenance));
        json_object_set_new(o, "file", json_string(pos[0]));
        json_object_set_new(o, "architecture", json_string("resnet50_keras_v1"));
        json_object_set_new(o, "input_shape",
                            json_pack("[n,i,i,i]", meta.cfg.img_size, meta.cfg.img_size, 3));
        json_object_set_new(o, "layers", layers);
        json_object_set_new(o, "total_params", json_integer(total));
        json_object_set_new(o, "trainable_params", json_integer(trainable));
        json_object_set_new(o, "non_trainable_params", json_integer(total - trainable));
        json_object_set_new(o, "metadata", md);
        json_dumpf(o, stdout, JSON_INDENT(1));
        fputc('\n', stdout);
        json_decref(o);
        goto out;
    }
    char b1[32], b2[64], b3[32];
    printf("Model: %s (resnet50_keras_v1, input %dx%dx3, head %d-%d, dropout %g)\n", pos[0],
           meta.cfg.img_size, meta.cfg.img_size, meta.cfg.head1, meta.cfg.head2,
           (double)meta.cfg.dropout);
    printf("%-4s %-40s %-24s %12s  %s\n", "#", "Layer (type)", "Output Shape", "Param #",
           "Trainable");
    for (int i = 0; i < L; i++) {
        nt_layer_info li;
        nt_model_layer(m, i, &li);
        char name[96];
        snprintf(name, sizeof(name), "%s (%s)", li.name, li.type_name);
        printf("%-4d %-40s %-24s %12s  %s\n", i, name, shape_text(&li, b2, sizeof(b2)),
               commas(li.nparams, b1, sizeof(b1)),
               li.nparams == 0 ? "-"
               : li.ntrain     ? "yes"
                               : "no");
    }
    int hs = nt_model_head_start(m);
    printf("Backbone: %d layers (input included); head: %d layers\n", hs, L - hs);
    printf("Total params: %s\n", commas(total, b1, sizeof(b1)));
    printf("Trainable params: %s (--unfreeze %s)\n", commas(trainable, b1, sizeof(b1)), unfreeze_s);
    printf("Non-trainable params: %s\n", commas(total - trainable, b3, sizeof(b3)));
    printf("Preprocess: %s; classes: 0=%s 1=%s; threshold: %g\n",
           nt_preprocess_name(meta.preprocess), meta.class_names[0], meta.class_names[1],
           (double)meta.threshold);
    if (meta.provenance[0]) printf("Provenance: %s\n", meta.provenance);
    if (params) {
        printf("\n%-48s %-22s %s\n", "Parameter", "Shape", "Trainable");
        for (int i = 0; i < nt_model_num_params(m); i++) {
            nt_param p;
            nt_model_param(m, i, &p);
            printf("%-48s %-22s %s\n", p.name, nt_shape_str(p.value, b2, sizeof(b2)),
                   p.trainable ? "yes" : "no");
        }
    }
out:
    nt_model_free(m);
    nt_ctx_free(ctx);
    return rc;
}

// ---- options shared by init and weights import ----

typedef struct model_flags {
    int img_size, head1, head2, fp16, width_div;
    double dropout, seed;
    const char *preprocess;
} model_flags;

#define MODEL_FLAG_OPTS(f)                                                                           \
    {"img-size", OPT_INT, &(f).img_size, 32, 4096, "PX", "input size (square), default 224"},        \
        {"head1", OPT_INT, &(f).head1, 1, 65536, "N", "units of the first head Dense, default 256"}, \
        {"head2",                                                                                    \
         OPT_INT,                                                                                    \
         &(f).head2,                                                                                 \
         1,                                                                                          \
         65536,                                                                                      \
         "N",                                                                                        \
         "units of the second head Dense, default 128"},                                             \
        {"dropout", OPT_FLOAT, &(f).dropout, 0, 0.99, "RATE", "head dropout rate, default 0.5"},     \
        {"seed",                                                                                     \
         OPT_FLOAT,                                                                                  \
         &(f).seed,                                                                                  \
         0,                                                                                          \
         9007199254740992.0,                                                                         \
         "N",                                                                                        \
         "seed of the initialisation, default 0"},                                                   \
        {"fp16", OPT_FLAG, &(f).fp16, 0, 0, NULL, "store tensors as float16 (half the size)"},       \
        {"width-div",                                                                                \
         OPT_INT,                                                                                    \
         &(f).width_div,                                                                             \
         1,                                                                                          \
         64,                                                                                         \
         "K",                                                                                        \
         "divide every channel count by K (small test networks; default 1)"},                        \
    {                                                                                                \
        "preprocess", OPT_STR, &(f).preprocess, 0, 0, "rescale|caffe|torch",                         \
            "input preprocessing stored in the model"                                                \
    }

static int build_meta(const char *cmdname, nt_ctx *ctx, const model_flags *f, int argc, char **argv,
                      nt_model_meta *meta)
{
    nt_model_meta_default(meta);
    meta->cfg.img_size  = f->img_size;
    meta->cfg.head1     = f->head1;
    meta->cfg.head2     = f->head2;
    meta->cfg.dropout   = (float)f->dropout;
    meta->cfg.width_div = f->width_div;
    if (nt_preprocess_parse(ctx, f->preprocess, &meta->preprocess) != NT_OK)
        return cli_fail(cmdname, EXIT_USAGE, "--%s", nt_ctx_errmsg(ctx));
    // Provenance: the command and version, so that a file says how it was made.
    size_t k =
        (size_t)snprintf(meta->provenance, sizeof(meta->provenance), "pneumo %s:", NT_VERSION);
    for (int i = -1; i < argc && k < sizeof(meta->provenance); i++)
        k += (size_t)snprintf(meta->provenance + k, sizeof(meta->provenance) - k, " %s",
                              i < 0 ? cmdname : argv[i]);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    if (k < sizeof(meta->provenance))
        strftime(meta->provenance + k, sizeof(meta->provenance) - k, " (%Y-%m-%dT%H:%M:%SZ)", &tm);
    return 0;
}

// ---- pneumo init ----

int cmd_init(int argc, char **argv)
{
    model_flags f   = {224, 256, 128, 0, 1, 0.5, 0, "rescale"};
    const char *out = NULL;
    cli_opt opts[]  = {{"out", OPT_STR, &out, 0, 0, "FILE", "model file to write (required)"},
                       MODEL_FLAG_OPTS(f)};
    cli_cmd cmd     = {"init",
                       "--out FILE [--img-size PX] [--head1 N] [--head2 N] ...",
                       "Write a new model file: the Keras ResNet50 v1 and head with Keras's "
                           "initialisation (glorot-uniform kernels, zero biases).",
                       opts,
                       (int)(sizeof(opts) / sizeof(opts[0])),
                       0,
                       0};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if (!out) return cli_fail("init", EXIT_USAGE, "--out FILE is required");
    nt_ctx *ctx = cli_ctx("init", 0, (unsigned long long)f.seed);
    if (!ctx) return EXIT_FAIL;
    nt_model_meta meta;
    nt_model *m = NULL;
    if ((rc = build_meta("init", ctx, &f, argc, argv, &meta))) goto out;
    nt_status s = nt_resnet50_new(ctx, &meta.cfg, &m);
    if (s == NT_OK) s = nt_model_init(m, NT_INIT_KERAS, (uint64_t)f.seed);
    if (s == NT_OK) s = nt_model_save_file(m, &meta, out, f.fp16);
    if (s != NT_OK) {
        rc = cli_fail("init", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    int64_t total = nt_model_count_params(m, NULL);
    char b[32];
    printf("wrote %s: resnet50_keras_v1 %dx%d, %s parameters (%s)\n", out, meta.cfg.img_size,
           meta.cfg.img_size, commas(total, b, sizeof(b)), f.fp16 ? "float16" : "float32");
out:
    nt_model_free(m);
    nt_ctx_free(ctx);
    return rc;
}

// ---- pneumo weights import ----

// ---- pneumo weights convert ----

static int weights_convert(int argc, char **argv)
{
    const char *out  = NULL;
    int fp16         = 0;
    double threshold = -1;
    cli_opt opts[]   = {
          {"out", OPT_STR, &out, 0, 0, "FILE", "model file to write (required)"},
          {"fp16", OPT_FLAG, &fp16, 0, 0, NULL, "store float16 (half the size; loads as float32)"},
          {"threshold", OPT_FLOAT, &threshold, 0, 1, "T", "replace the stored decision threshold"},
    };
    cli_cmd cmd = {"weights convert",
                   "MODEL --out FILE [--fp16] [--threshold T]",
                   "Rewrite a model file, e.g. as float16 for shipping.",
                   opts,
                   3,
                   1,
                   1};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if (!out) return cli_fail("weights convert", EXIT_USAGE, "--out FILE is required");
    nt_ctx *ctx = cli_ctx("weights convert", 1, 0);
    if (!ctx) return EXIT_FAIL;
    nt_model *m = NULL;
    nt_model_meta meta;
    nt_status s = nt_model_load_file(ctx, pos[0], &m, &meta);
    if (s == NT_OK && threshold >= 0) meta.threshold = (float)threshold;
    if (s == NT_OK) s = nt_model_save_file(m, &meta, out, fp16);
    if (s != NT_OK)
        rc = cli_fail("weights convert", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
    else
        printf("wrote %s (%s, threshold %g)\n", out, fp16 ? "float16" : "float32",
               (double)meta.threshold);
    nt_model_free(m);
    nt_ctx_free(ctx);
    return rc;
}

int cmd_weights(int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "convert") == 0) return weights_convert(argc - 1, argv + 1);
    if (argc < 1 || strcmp(argv[0], "import") != 0) {
        if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
            printf("usage: pneumo weights import KERAS.h5 --out FILE [options]\n"
                   "       pneumo weights convert MODEL --out FILE [--fp16] [--threshold T]\n");
            return EXIT_OK;
        }
        return cli_fail("weights", EXIT_USAGE,
                        "expected `pneumo weights import KERAS.h5 --out FILE` or `pneumo weights "
                        "convert MODEL --out FILE`, got %s%s%s",
                        argc ? "\"" : "", argc ? argv[0] : "nothing", argc ? "\"" : "");
    }
    model_flags f   = {224, 256, 128, 0, 1, 0.5, 0, "caffe"};
    const char *out = NULL;
    cli_opt opts[]  = {{"out", OPT_STR, &out, 0, 0, "FILE", "model file to write (required)"},
                       MODEL_FLAG_OPTS(f)};
    cli_cmd cmd     = {"weights import",
                       "KERAS.h5 --out FILE [--img-size PX] [--preprocess P] ...",
                       "Import resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 (current or "
                           "2017 layer names) into a model file; the head gets Keras's "
                           "initialisation and preprocessing defaults to caffe, as those weights "
                           "expect.",
                       opts,
                       (int)(sizeof(opts) / sizeof(opts[0])),
                       1,
                       1};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc - 1, argv + 1, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if (!out) return cli_fail("weights import", EXIT_USAGE, "--out FILE is required");
    nt_ctx *ctx = cli_ctx("weights import", 0, (unsigned long long)f.seed);
    if (!ctx) return EXIT_FAIL;
    nt_model_meta meta;
    nt_model *m = NULL;
    if ((rc = build_meta("weights", ctx, &f, argc, argv, &meta))) goto out;
    nw_import_report rep;
    nt_status s = nt_resnet50_new(ctx, &meta.cfg, &m);
    if (s == NT_OK) s = nt_model_init(m, NT_INIT_KERAS, (uint64_t)f.seed);
    if (s == NT_OK) s = nw_import_keras_h5(ctx, m, pos[0], &rep);
    if (s == NT_OK) s = nt_model_save_file(m, &meta, out, f.fp16);
    if (s != NT_OK) {
        rc = cli_fail("weights import", EXIT_FAIL, "%s", nt_ctx_errmsg(ctx));
        goto out;
    }
    printf("imported %d tensors of %d layers from %s (%s layer names) into %s\n", rep.tensors,
           rep.layers, pos[0], rep.naming, out);
out:
    nt_model_free(m);
    nt_ctx_free(ctx);
    return rc;
}
