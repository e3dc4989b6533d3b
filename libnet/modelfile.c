/*
 * modelfile.c: pneumo model files, i.e. a safetensors file (safetensors.c) whose metadata says
 * which ResNet50 it holds and how to feed it (preprocessing, classes, threshold). Also the
 * preprocessing itself, which belongs to the model. Tests: tests/test_modelfile.c.
 */
#include "libnet/model_internal.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#define ARCH "resnet50_keras_v1"

void nt_model_meta_default(nt_model_meta *meta)
{
    memset(meta, 0, sizeof(*meta));
    nt_resnet_cfg_default(&meta->cfg);
    meta->preprocess = NT_PRE_RESCALE;
    snprintf(meta->class_names[0], sizeof(meta->class_names[0]), "NORMAL");
    snprintf(meta->class_names[1], sizeof(meta->class_names[1]), "PNEUMONIA");
    meta->threshold = 0.5f;
}

const char *nt_preprocess_name(nt_preprocess p)
{
    switch (p) {
    case NT_PRE_RESCALE:
        return "rescale";
    case NT_PRE_CAFFE:
        return "caffe";
    case NT_PRE_TORCH:
        return "torch";
    }
    return "?";
}

nt_status nt_preprocess_parse(nt_ctx *ctx, const char *s, nt_preprocess *out)
{
    for (int p = NT_PRE_RESCALE; p <= NT_PRE_TORCH; p++)
        if (s && strcmp(s, nt_preprocess_name((nt_preprocess)p)) == 0) {
            *out = (nt_preprocess)p;
            return NT_OK;
        }
    return nt_ctx_seterr(ctx, NT_EINVAL, "preprocess: expected rescale, caffe or torch, got \"%s\"",
                         s ? s : "");
}

static const float caffe_mean[3] = {103.939f, 116.779f, 123.68f}; // B, G, R
static const float torch_mean[3] = {0.485f, 0.456f, 0.406f};
static const float torch_std[3]  = {0.229f, 0.224f, 0.225f};

// One pixel; px and o may alias (BGR swaps read both ends first).
static inline void preprocess_px(nt_preprocess p, float r, float g, float b, float *o)
{
    switch (p) {
    case NT_PRE_RESCALE:
        o[0] = r * (1.0f / 255.0f), o[1] = g * (1.0f / 255.0f), o[2] = b * (1.0f / 255.0f);
        break;
    case NT_PRE_CAFFE: // RGB -> BGR, then minus the ImageNet means (no scaling)
        o[0] = b - caffe_mean[0], o[1] = g - caffe_mean[1], o[2] = r - caffe_mean[2];
        break;
    case NT_PRE_TORCH:
        o[0] = (r * (1.0f / 255.0f) - torch_mean[0]) / torch_std[0];
        o[1] = (g * (1.0f / 255.0f) - torch_mean[1]) / torch_std[1];
        o[2] = (b * (1.0f / 255.0f) - torch_mean[2]) / torch_std[2];
        break;
    }
}

void nt_preprocess_apply(nt_preprocess p, const uint8_t *rgb, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++)
        preprocess_px(p, rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], out + 3 * i);
}

void nt_preprocess_apply_f32(nt_preprocess p, const float *rgb, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++)
        preprocess_px(p, rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], out + 3 * i);
}

nt_status nt_model_save_file(nt_model *m, const nt_model_meta *meta, const char *path, int fp16)
{
    return nt_model_save_file_ex(m, meta, path, fp16, NULL, 0, NULL, 0);
}

nt_status nt_model_save_file_ex(nt_model *m, const nt_model_meta *meta, const char *path, int fp16,
                                const nt_st_entry *extra, int nextra, const nt_kv *extra_meta,
                                int nextra_meta)
{
    char v[8][64];
    const nt_resnet_cfg *c = &meta->cfg;
    snprintf(v[0], sizeof(v[0]), "%d", c->img_size);
    snprintf(v[1], sizeof(v[1]), "%d", c->head1);
    snprintf(v[2], sizeof(v[2]), "%d", c->head2);
    snprintf(v[3], sizeof(v[3]), "%.9g", (double)c->dropout);
    snprintf(v[4], sizeof(v[4]), "%d", c->width_div ? c->width_div : 1);
    snprintf(v[5], sizeof(v[5]), "%.9g", (double)meta->threshold);
    json_t *names = json_pack("[ss]", meta->class_names[0], meta->class_names[1]);
    char *cls     = names ? json_dumps(names, JSON_COMPACT) : NULL;
    json_decref(names);
    int np           = nt_model_num_params(m);
    nt_kv *kv        = calloc((size_t)(12 + nextra_meta), sizeof(*kv));
    nt_st_entry *ent = calloc((size_t)(np + nextra), sizeof(*ent));
    if (!cls || !kv || !ent) {
        free(cls), free(kv), free(ent);
        return nt_ctx_seterr(m->ctx, NT_ENOMEM, "model file: out of memory");
    }
    const nt_kv base[12] = {
        {"format", "pneumo-model"},
        {"format_version", "1"},
        {"architecture", ARCH},
        {"img_size", v[0]},
        {"head1", v[1]},
        {"head2", v[2]},
        {"dropout", v[3]},
        {"width_div", v[4]},
        {"preprocess", nt_preprocess_name(meta->preprocess)},
        {"class_names", cls},
        {"threshold", v[5]},
        {"provenance", meta->provenance},
    };
    int nkv = meta->provenance[0] ? 12 : 11;
    memcpy(kv, base, sizeof(nt_kv) * (size_t)nkv);
    for (int i = 0; i < nextra_meta; i++)
        kv[nkv++] = extra_meta[i];
    for (int i = 0; i < np; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        ent[i] = (nt_st_entry){p.name, p.value->ndim, p.value->shape, p.value->data};
    }
    for (int i = 0; i < nextra; i++)
        ent[np + i] = extra[i];
    nt_status s = nt_st_write(m->ctx, path, ent, np + nextra, kv, nkv, fp16);
    free(cls), free(kv), free(ent);
    return s;
}

// Reads integer metadata `key` into *out within [lo, hi].
static nt_status meta_int(nt_ctx *ctx, const nt_st_file *f, const char *path, const char *key,
                          int lo, int hi, int *out)
{
    const char *s = nt_st_meta(f, key);
    if (!s)
        return nt_ctx_seterr(ctx, NT_EFORMAT, "model file %s: metadata has no \"%s\"", path, key);
    char *end;
    errno  = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return nt_ctx_seterr(ctx, NT_EFORMAT,
                             "model file %s: metadata \"%s\" must be an integer in %d..%d, got "
                             "\"%s\"",
                             path, key, lo, hi, s);
    *out = (int)v;
    return NT_OK;
}

static nt_status meta_float(nt_ctx *ctx, const nt_st_file *f, const char *path, const char *key,
                            double lo, double hi, float *out)
{
    const char *s = nt_st_meta(f, key);
    if (!s)
        return nt_ctx_seterr(ctx, NT_EFORMAT, "model file %s: metadata has no \"%s\"", path, key);
    char *end;
    errno    = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return nt_ctx_seterr(ctx, NT_EFORMAT,
                             "model file %s: metadata \"%s\" must be a number in [%g, %g], got "
                             "\"%s\"",
                             path, key, lo, hi, s);
    *out = (float)v;
    return NT_OK;
}

nt_status nt_model_load_file(nt_ctx *ctx, const char *path, nt_model **out, nt_model_meta *meta)
{
    return nt_model_load_file_ex(ctx, path, 0, out, meta, NULL);
}

nt_status nt_model_load_file_ex(nt_ctx *ctx, const char *path, int allow_extra, nt_model **out,
                                nt_model_meta *meta, nt_st_file **file_out)
{
    *out = NULL;
    if (file_out) *file_out = NULL;
    nt_model_meta scratch_meta;
    if (!meta) meta = &scratch_meta; // the caller does not want it
    nt_model_meta_default(meta);
    nt_st_file *f;
    nt_status s = nt_st_open(ctx, path, &f);
    if (s != NT_OK) return s;
    const char *fmt = nt_st_meta(f, "format"), *arch = nt_st_meta(f, "architecture");
    nt_model *m = NULL;
    if (!fmt || strcmp(fmt, "pneumo-model") != 0) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "model file %s: not a pneumo model (metadata \"format\" is %s%s%s, "
                          "expected \"pneumo-model\"); import Keras weights with `pneumo weights "
                          "import`",
                          path, fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "");
        goto done;
    }
    if (!arch || strcmp(arch, ARCH) != 0) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "model file %s: architecture \"%s\" is not supported (expected \"%s\")",
                          path, arch ? arch : "", ARCH);
        goto done;
    }
    nt_resnet_cfg *c = &meta->cfg;
    c->with_head     = 1;
    if ((s = meta_int(ctx, f, path, "img_size", 32, 4096, &c->img_size)) != NT_OK) goto done;
    if ((s = meta_int(ctx, f, path, "head1", 1, 65536, &c->head1)) != NT_OK) goto done;
    if ((s = meta_int(ctx, f, path, "head2", 1, 65536, &c->head2)) != NT_OK) goto done;
    if ((s = meta_float(ctx, f, path, "dropout", 0, 0.999, &c->dropout)) != NT_OK) goto done;
    if ((s = meta_float(ctx, f, path, "threshold", 0, 1, &meta->threshold)) != NT_OK) goto done;
    c->width_div = 1;
    if (nt_st_meta(f, "width_div") &&
        (s = meta_int(ctx, f, path, "width_div", 1, 64, &c->width_div)) != NT_OK)
        goto done;
    const char *pre = nt_st_meta(f, "preprocess");
    if (pre && (s = nt_preprocess_parse(ctx, pre, &meta->preprocess)) != NT_OK) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT, "model file %s: %s", path, nt_ctx_errmsg(ctx));
        goto done;
    }
    const char *cls = nt_st_meta(f, "class_names");
    if (cls) {
        json_error_t je;
        json_t *a = json_loads(cls, 0, &je);
        if (!json_is_array(a) || json_array_size(a) != 2 || !json_is_string(json_array_get(a, 0)) ||
            !json_is_string(json_array_get(a, 1))) {
            json_decref(a);
            s = nt_ctx_seterr(ctx, NT_EFORMAT,
                              "model file %s: metadata \"class_names\" must be a JSON array of two "
                              "strings, got %s",
                              path, cls);
            goto done;
        }
        for (int i = 0; i < 2; i++)
            snprintf(meta->class_names[i], sizeof(meta->class_names[i]), "%s",
                     json_string_value(json_array_get(a, (size_t)i)));
        json_decref(a);
    }
    const char *prov = nt_st_meta(f, "provenance");
    if (prov) snprintf(meta->provenance, sizeof(meta->provenance), "%s", prov);
    if ((s = nt_resnet50_new(ctx, c, &m)) != NT_OK) goto done;
    if ((s = nt_model_load_st(m, f, allow_extra)) != NT_OK) {
        nt_model_free(m);
        m = NULL;
        goto done;
    }
    // Inference users need no gradients; trainers call nt_model_set_trainable_last.
    nt_model_set_trainable_last(m, 0);
    *out = m;
    if (file_out) {
        *file_out = f;
        return NT_OK;
    }
done:
    nt_st_close(f);
    return s;
}
