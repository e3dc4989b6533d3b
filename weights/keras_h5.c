/*
 * keras_h5.c: imports Keras .h5 weights (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5,
 * either release) into an nt_model through libhdf5. It reads the Keras 2 layout (weight names
 * "layer/kernel:0", datasets nested under the layer group) and the Keras 1 one
 * ("layer_W:0" directly in the group), matching datasets to parameters by name; it does not
 * read whole-model topology (model_config) or optimizer state. Kernels are HWIO in both Keras and
 * pneumo, so values are copied as they are. Tests: tests/test_h5import.c (fixtures from
 * tests/gen_h5.py).
 */
#include "weights/nw.h"

#include <hdf5.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *nw_naming_str(nw_naming n)
{
    switch (n) {
    case NW_NAMING_NONE:
        return "none";
    case NW_NAMING_CURRENT:
        return "current";
    case NW_NAMING_2017:
        return "2017";
    case NW_NAMING_MIXED:
        return "mixed";
    }
    return "?";
}

// ---- names ----

// Parameter roles: the suffix of the model's parameter names, and the weight-name tokens of
// Keras 2 and Keras 1 that mean it. Keras 1's BatchNormalization called its moving variance
// "running_std" (it always held the variance; Keras 2 loads it as moving_variance).
static const struct {
    const char *token, *role;
} roles[] = {
    {"moving_variance", "moving_variance"},
    {"running_std", "moving_variance"},
    {"moving_mean", "moving_mean"},
    {"running_mean", "moving_mean"},
    {"kernel", "kernel"},
    {"gamma", "gamma"},
    {"beta", "beta"},
    {"bias", "bias"},
    {"W", "kernel"},
    {"b", "bias"},
};

static const char *role_of(const char *token)
{
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(token, roles[i].token) == 0) return roles[i].role;
    return NULL;
}

// Copies the n bytes of src into dst (cap bytes) as a string; -1 when they do not fit.
static int copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap) return -1;
    memcpy(dst, src, n);
    dst[n] = 0;
    return 0;
}

// Splits a weight name of group `group` into its layer and role. Keras 2: "conv1_conv/kernel:0"
// (possibly under outer scopes, "resnet50/conv1_conv/kernel:0"); Keras 1: "res2a_branch2a_W:0".
// Returns 0, or -1 when the role cannot be told (or a name is too long to be a layer's).
static int split_weight(const char *wname, const char *group, char *layer, size_t llen,
                        const char **role)
{
    char base[256];
    if (copy_str(base, sizeof(base), wname, strlen(wname))) return -1;
    char *colon = strrchr(base, ':');
    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) *colon = 0;
    char *slash = strrchr(base, '/');
    if (slash) {
        *slash = 0;
        if (!(*role = role_of(slash + 1))) return -1;
        const char *prev = strrchr(base, '/');
        const char *l    = prev ? prev + 1 : base;
        return copy_str(layer, llen, l, strlen(l));
    }
    if ((*role = role_of(base))) return copy_str(layer, llen, group, strlen(group));
    // Keras 1: <layer>_<token>; take the longest token that fits (running_mean before b, ...).
    size_t n = strlen(base);
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        size_t t = strlen(roles[i].token);
        if (n > t + 1 && base[n - t - 1] == '_' && strcmp(base + n - t, roles[i].token) == 0) {
            *role = roles[i].role;
            return copy_str(layer, llen, base, n - t - 1);
        }
    }
    return -1;
}

// The 2017 keras-applications name of a ResNet50 layer, mapped onto the current one: conv1 ->
// conv1_conv, bn_conv1 -> conv1_bn, res2a_branch2b -> conv2_block1_2_conv, bn3d_branch1 ->
// conv3_block4_0_bn. Returns 0 and writes out, or -1 when `name` is not such a name.
static int name_from_2017(const char *name, char *out, size_t len)
{
    if (strcmp(name, "conv1") == 0) return copy_str(out, len, "conv1_conv", 10);
    if (strcmp(name, "bn_conv1") == 0) return copy_str(out, len, "conv1_bn", 8);
    const char *kind, *p;
    if (strncmp(name, "res", 3) == 0) {
        kind = "conv";
        p    = name + 3;
    } else if (strncmp(name, "bn", 2) == 0) {
        kind = "bn";
        p    = name + 2;
    } else {
        return -1;
    }
    if (p[0] < '1' || p[0] > '9' || p[1] < 'a' || p[1] > 'z') return -1;
    static const char *const branch[] = {"_branch1", "_branch2a", "_branch2b", "_branch2c"};
    for (int k = 0; k < 4; k++) {
        if (strcmp(p + 2, branch[k]) == 0) {
            snprintf(out, len, "conv%c_block%d_%d_%s", p[0], p[1] - 'a' + 1, k, kind);
            return 0;
        }
    }
    return -1;
}

// ---- HDF5 helpers ----

static herr_t walk_first(unsigned n, const H5E_error2_t *e, void *data)
{
    char *buf = data;
    if (n == 0 && e->desc) snprintf(buf, 200, "%s", e->desc);
    return 0;
}

// The most specific message of HDF5's error stack (which is then cleared).
static const char *h5err(char *buf)
{
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_first, buf);
    H5Eclear2(H5E_DEFAULT);
    if (!buf[0]) snprintf(buf, 200, "HDF5 error");
    return buf;
}

typedef struct strlist {
    char **v;
    int n;
} strlist;

static void strlist_free(strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

typedef struct imp {
    nt_ctx *ctx;
    nt_model *m;
    const char *path;
    hid_t file, root;
    char errbuf[256];
} imp;

__attribute__((format(printf, 2, 3))) static nt_status bad(imp *im, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return nt_ctx_seterr(im->ctx, NT_EFORMAT, "keras h5 %s: %s", im->path, what);
}

static nt_status oom(imp *im)
{
    return nt_ctx_seterr(im->ctx, NT_ENOMEM, "keras h5 %s: out of memory", im->path);
}

// Appends the strings of one 1-D string attribute (fixed or variable length) to *out.
static nt_status read_str_attr1(imp *im, hid_t obj, const char *owner, const char *attr,
                                strlist *out)
{
    nt_status s = NT_OK;
    hid_t a = H5Aopen(obj, attr, H5P_DEFAULT), t = -1, sp = -1, mt = -1;
    if (a < 0) return bad(im, "cannot read attribute %s of %s: %s", attr, owner, h5err(im->errbuf));
    t              = H5Aget_type(a);
    sp             = H5Aget_space(a);
    hssize_t npts  = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    H5T_class_t tc = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    if (npts < 0 || t < 0) {
        s = bad(im, "cannot read attribute %s of %s: %s", attr, owner, h5err(im->errbuf));
        goto done;
    }
    // Keras writes an empty float64 array for a layer without weights.
    if (npts == 0) goto done;
    if (tc != H5T_STRING || npts > 1000000) {
        s = bad(im, "attribute %s of %s is not a list of strings", attr, owner);
        goto done;
    }
    char **nv = realloc(out->v, (size_t)(out->n + npts) * sizeof(char *));
    if (!nv) {
        s = oom(im);
        goto done;
    }
    out->v = nv;
    mt     = H5Tcopy(H5T_C_S1);
    if (H5Tis_variable_str(t) > 0) {
        char **buf = calloc((size_t)npts, sizeof(char *));
        if (!buf || H5Tset_size(mt, H5T_VARIABLE) < 0) {
            free(buf);
            s = oom(im);
            goto done;
        }
        if (H5Aread(a, mt, buf) < 0) {
            free(buf);
            s = bad(im, "cannot read attribute %s of %s: %s", attr, owner, h5err(im->errbuf));
            goto done;
        }
        for (hssize_t i = 0; i < npts; i++) {
            out->v[out->n] = strdup(buf[i] ? buf[i] : "");
            if (!out->v[out->n])
                s = oom(im);
            else
                out->n++;
        }
#if H5_VERSION_GE(1, 12, 0)
        H5Treclaim(mt, sp, H5P_DEFAULT, buf);
#else
        H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, buf);
#endif
        free(buf);
    } else {
        size_t size = H5Tget_size(t);
        if (size == 0 || size > 65536) {
            s = bad(im, "attribute %s of %s has strings of %zu bytes", attr, owner, size);
            goto done;
        }
        char *buf = calloc((size_t)npts, size);
        if (!buf) {
            s = oom(im);
            goto done;
        }
        H5Tset_size(mt, size);
        H5Tset_strpad(mt, H5T_STR_NULLPAD);
        if (H5Aread(a, mt, buf) < 0) {
            free(buf);
            s = bad(im, "cannot read attribute %s of %s: %s", attr, owner, h5err(im->errbuf));
            goto done;
        }
        for (hssize_t i = 0; i < npts && !s; i++) {
            out->v[out->n] = strndup(buf + (size_t)i * size, size);
            if (!out->v[out->n])
                s = oom(im);
            else
                out->n++;
        }
        free(buf);
    }
done:
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return s;
}

// Reads string-list attribute `attr` of obj. Keras splits attributes above HDF5's 64 KB header
// limit into attr0, attr1, ... (save_attributes_to_hdf5_group); those are joined. Sets *found.
static nt_status read_str_attr(imp *im, hid_t obj, const char *owner, const char *attr,
                               strlist *out, int *found)
{
    *found = 0;
    if (H5Aexists(obj, attr) > 0) {
        *found = 1;
        return read_str_attr1(im, obj, owner, attr, out);
    }
    for (int k = 0;; k++) {
        char name[96];
        snprintf(name, sizeof(name), "%s%d", attr, k);
        if (H5Aexists(obj, name) <= 0) break;
        *found      = 1;
        nt_status s = read_str_attr1(im, obj, owner, name, out);
        if (s) return s;
    }
    H5Eclear2(H5E_DEFAULT);
    return NT_OK;
}

static void dims_str(int nd, const int64_t *d, char *buf, size_t len)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < nd && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, i ? ",%lld" : "%lld", (long long)d[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

// ---- the import ----

typedef struct staged {
    float *data; // values read for this parameter, NULL while not provided
    char *from;  // "layer/dataset" that provided it
} staged;

// Reads dataset `wname` of layer group g (file layer `lname`) into the staging slot of model
// parameter `pi`, checking shape, type and finiteness.
static nt_status read_dataset(imp *im, hid_t g, const char *lname, const char *wname, int pi,
                              staged *st)
{
    nt_param p;
    nt_model_param(im->m, pi, &p);
    char want[96], got[96];
    dims_str(p.value->ndim, p.value->shape, want, sizeof(want));
    if (st[pi].data)
        return bad(im,
                   "layer \"%s\" dataset \"%s\" provides model parameter \"%s\", which \"%s\" "
                   "already provided",
                   lname, wname, p.name, st[pi].from);
    nt_status s = NT_OK;
    hid_t d = H5Dopen2(g, wname, H5P_DEFAULT), sp = -1, t = -1;
    if (d < 0)
        return bad(im, "layer \"%s\": dataset \"%s\" listed in weight_names cannot be opened (%s)",
                   lname, wname, h5err(im->errbuf));
    sp     = H5Dget_space(d);
    t      = H5Dget_type(d);
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (nd < 0 || nd > 8 || t < 0) {
        s = bad(im, "layer \"%s\": dataset \"%s\" has an unreadable shape (%s)", lname, wname,
                h5err(im->errbuf));
        goto done;
    }
    hsize_t hd[8];
    int64_t dims[8];
    H5Sget_simple_extent_dims(sp, hd, NULL);
    for (int i = 0; i < nd; i++)
        dims[i] = (int64_t)hd[i];
    int same = nd == p.value->ndim;
    for (int i = 0; same && i < nd; i++)
        same = dims[i] == p.value->shape[i];
    if (!same) {
        dims_str(nd, dims, got, sizeof(got));
        s = bad(im, "layer \"%s\" dataset \"%s\" has shape %s but the model's \"%s\" expects %s",
                lname, wname, got, p.name, want);
        goto done;
    }
    H5T_class_t tc = H5Tget_class(t);
    if (tc != H5T_FLOAT && tc != H5T_INTEGER) {
        s = bad(im, "layer \"%s\" dataset \"%s\" does not hold numbers (HDF5 type class %d)", lname,
                wname, (int)tc);
        goto done;
    }
    int64_t n  = nt_tensor_numel(p.value);
    float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
    char *from = malloc(strlen(lname) + strlen(wname) + 2);
    if (!buf || !from) {
        free(buf);
        free(from);
        s = oom(im);
        goto done;
    }
    sprintf(from, "%s/%s", lname, wname);
    if (n && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        free(from);
        s = bad(im, "layer \"%s\" dataset \"%s\" cannot be read (truncated or corrupt file?): %s",
                lname, wname, h5err(im->errbuf));
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(buf[i])) {
            s = bad(im, "layer \"%s\" dataset \"%s\" holds %g at element %lld", lname, wname,
                    (double)buf[i], (long long)i);
            free(buf);
            free(from);
            goto done;
        }
    }
    st[pi].data = buf;
    st[pi].from = from;
done:
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return s;
}

// Opens the file and finds the group holding layer_names (the root, or /model_weights of a
// whole-model file).
static nt_status open_file(imp *im)
{
    struct stat stt;
    int fd = open(im->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &stt) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return nt_ctx_seterr(im->ctx, NT_EIO, "cannot open %s: %s", im->path, strerror(e));
    }
    close(fd);
    if (S_ISDIR(stt.st_mode))
        return nt_ctx_seterr(im->ctx, NT_EIO, "cannot read %s: %s", im->path, strerror(EISDIR));
    if (H5Fis_hdf5(im->path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return bad(im,
                   "not an HDF5 file (%lld bytes; expected Keras .h5 weights such as "
                   "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)",
                   (long long)stt.st_size);
    }
    im->file = H5Fopen(im->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (im->file < 0)
        return bad(im, "cannot open the HDF5 file (truncated or corrupt?): %s", h5err(im->errbuf));
    im->root = H5Gopen2(im->file, "/", H5P_DEFAULT);
    if (im->root < 0) return bad(im, "cannot open the root group: %s", h5err(im->errbuf));
    if (H5Aexists(im->root, "layer_names") <= 0 && H5Aexists(im->root, "layer_names0") <= 0 &&
        H5Lexists(im->root, "model_weights", H5P_DEFAULT) > 0) {
        hid_t g = H5Gopen2(im->root, "model_weights", H5P_DEFAULT);
        if (g >= 0) {
            H5Gclose(im->root);
            im->root = g;
        }
    }
    H5Eclear2(H5E_DEFAULT);
    return NT_OK;
}

// The root attribute keras_version, when there is one (informational: failures are ignored).
static void read_version(imp *im, nw_import_report *rep)
{
    strlist v = {0};
    int found = 0;
    if (read_str_attr(im, im->root, "the file", "keras_version", &v, &found) != NT_OK)
        nt_ctx_seterr(im->ctx, NT_OK, "%s", "");
    else if (v.n == 1)
        snprintf(rep->keras_version, sizeof(rep->keras_version), "%s", v.v[0]);
    strlist_free(&v);
}

nt_status nw_import_keras_h5(nt_ctx *ctx, nt_model *m, const char *path, nw_import_report *rep)
{
    nw_import_report dummy;
    if (!rep) rep = &dummy;
    memset(rep, 0, sizeof(*rep));
    rep->naming = nw_naming_str(NW_NAMING_NONE);
    if (!m || !path) return nt_ctx_seterr(ctx, NT_EINVAL, "keras h5: model or path is NULL");

    // HDF5 prints its error stack to stderr by default; we turn its errors into messages.
    H5E_auto2_t old_fn = NULL;
    void *old_data     = NULL;
    H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    imp im          = {ctx, m, path, -1, -1, {0}};
    int np          = nt_model_num_params(m);
    int nl          = nt_model_num_layers(m);
    int head        = nt_model_head_start(m);
    staged *st      = calloc((size_t)np + 1, sizeof(staged));
    char *got_layer = calloc((size_t)nl + 1, 1);
    strlist layers = {0}, wn = {0};
    hid_t g   = -1;
    int n_cur = 0, n_old = 0;
    nt_status s = NT_OK;
    if (!st || !got_layer) {
        s = oom(&im);
        goto done;
    }
    if ((s = open_file(&im))) goto done;
    read_version(&im, rep);

    int found;
    if ((s = read_str_attr(&im, im.root, "the file", "layer_names", &layers, &found))) goto done;
    if (!found) {
        s = bad(&im, "no layer_names attribute: not a Keras weights file (expected the layout "
                     "of Keras's save_weights)");
        goto done;
    }
    rep->layers_in_file = layers.n;

    for (int li = 0; li < layers.n; li++) {
        const char *lname = layers.v[li];
        g                 = H5Gopen2(im.root, lname, H5P_DEFAULT);
        if (g < 0) {
            s = bad(&im, "layer \"%s\" of layer_names has no group (%s)", lname, h5err(im.errbuf));
            goto done;
        }
        char owner[160];
        snprintf(owner, sizeof(owner), "layer \"%s\"", lname);
        if ((s = read_str_attr(&im, g, owner, "weight_names", &wn, &found))) goto done;
        if (!found) {
            s = bad(&im, "layer \"%s\" has no weight_names attribute", lname);
            goto done;
        }
        if (wn.n > 0) rep->layers_with_weights++;
        rep->tensors_in_file += wn.n;
        int skipped = 0;
        for (int wi = 0; wi < wn.n; wi++) {
            char lpart[128], mapped[128];
            const char *role;
            if (split_weight(wn.v[wi], lname, lpart, sizeof(lpart), &role)) {
                s = bad(&im,
                        "layer \"%s\": cannot tell which parameter dataset \"%s\" is (expected "
                        "kernel, bias, gamma, beta, moving_mean or moving_variance)",
                        lname, wn.v[wi]);
                goto done;
            }
            int ml = nt_model_find_layer(m, lpart), old = 0;
            if (ml >= 0) {
                snprintf(mapped, sizeof(mapped), "%s", lpart);
            } else if (name_from_2017(lpart, mapped, sizeof(mapped)) == 0 &&
                       (ml = nt_model_find_layer(m, mapped)) >= 0) {
                old = 1;
            } else {
                // Not a layer of this model (the classifier of a with-top file, say).
                if (!skipped++) {
                    rep->layers_skipped++;
                    if (!rep->skipped_first[0])
                        snprintf(rep->skipped_first, sizeof(rep->skipped_first), "%.95s", lpart);
                    nt_ctx_log(ctx, NT_LOG_WARN,
                               "keras h5 %s: layer \"%s\" is not in the model; its weights are "
                               "ignored",
                               path, lpart);
                }
                continue;
            }
            char pname[300];
            snprintf(pname, sizeof(pname), "%s/%s", mapped, role);
            int pi = nt_model_find_param(m, pname);
            if (pi < 0) {
                s = bad(&im,
                        "layer \"%s\" dataset \"%s\" is a %s, but model layer \"%s\" has no "
                        "parameter \"%s\"",
                        lname, wn.v[wi], role, mapped, pname);
                goto done;
            }
            if ((s = read_dataset(&im, g, lname, wn.v[wi], pi, st))) goto done;
            if (old)
                n_old++;
            else
                n_cur++;
            got_layer[ml] = 1;
            rep->tensors++;
        }
        strlist_free(&wn);
        H5Gclose(g);
        g = -1;
    }
    rep->naming_kind = n_cur && n_old ? NW_NAMING_MIXED
                       : n_cur        ? NW_NAMING_CURRENT
                       : n_old        ? NW_NAMING_2017
                                      : NW_NAMING_NONE;
    rep->naming      = nw_naming_str(rep->naming_kind);

    // Every backbone parameter must have come from the file.
    int missing = 0, first_missing = -1, nbackbone = 0;
    for (int i = 0; i < np; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        if (p.layer >= head) continue;
        nbackbone++;
        if (!st[i].data && missing++ == 0) first_missing = i;
    }
    if (missing) {
        nt_param p;
        nt_model_param(m, first_missing, &p);
        s = bad(&im,
                "model parameter \"%s\" is not in the file (%d of %d backbone parameters "
                "missing; %d of %d datasets matched, naming %s)",
                p.name, missing, nbackbone, rep->tensors, rep->tensors_in_file, rep->naming);
        goto done;
    }

    // Commit.
    for (int i = 0; i < np; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        if (!st[i].data) {
            rep->params_untouched++;
            continue;
        }
        int64_t n = nt_tensor_numel(p.value);
        memcpy(p.value->data, st[i].data, (size_t)n * sizeof(float));
        rep->values += n;
    }
    for (int i = 0; i < nl; i++)
        rep->layers += got_layer[i];
    nt_ctx_log(ctx, NT_LOG_INFO,
               "keras h5 %s: %d tensors into %d layers (%s names), %d file layers skipped", path,
               rep->tensors, rep->layers, rep->naming, rep->layers_skipped);

done:
    if (g >= 0) H5Gclose(g);
    strlist_free(&wn);
    strlist_free(&layers);
    if (st) {
        for (int i = 0; i < np; i++) {
            free(st[i].data);
            free(st[i].from);
        }
    }
    free(st);
    free(got_layer);
    if (im.root >= 0) H5Gclose(im.root);
    if (im.file >= 0) H5Fclose(im.file);
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
    return s;
}
