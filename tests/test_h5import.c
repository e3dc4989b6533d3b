/*
 * test_h5import.c: weights/keras_h5.c on the small Keras .h5 files from tests/gen_h5.py (both
 * namings of ResNet50 with width_div 16). Every imported value is checked against the pattern
 * that encodes its layer, role and element; head parameters must stay untouched. Error cases:
 * a model of another width, missing / non-HDF5 / truncated files, and files modified here through
 * libhdf5 (missing dataset or layer, duplicate layer, NaN, reordered layers and weight names,
 * split attributes, a whole-model file with a nested model group).
 */
#include "libnet/nt.h"
#include "tests/check.h"
#include "tests/testutil.h"
#include "weights/nw.h"

#include <hdf5.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX_CUR "tests/fixtures/keras_resnet50_w16_current.h5"
#define FIX_OLD "tests/fixtures/keras_resnet50_w16_2017.h5"

static nt_ctx *ctx;
static const char *dir; // the temporary directory

static void copy_file(const char *src, const char *dst)
{
    size_t n;
    unsigned char *b = tu_slurp(src, &n);
    CHECK_MSG(b != NULL, "cannot read %s", src);
    if (b) tu_spit(dst, b, n);
    free(b);
}

// ---- models and the value pattern ----

// Value of element i of parameter number r of model layer L (see tests/gen_h5.py).
static float pattern(int L, int r, int64_t i)
{
    return (float)(L * 8 + r) + (float)(i % 8192) * 0x1p-13f;
}

// Checks every backbone parameter against the pattern; returns the number of bad parameters.
static int check_pattern(const nt_model *m, const char *what)
{
    int np = nt_model_num_params(m), head = nt_model_head_start(m), bad = 0, r = 0, prev = -1;
    int64_t nval = 0;
    for (int i = 0; i < np; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        r    = p.layer == prev ? r + 1 : 0;
        prev = p.layer;
        if (p.layer >= head) continue;
        int64_t n = nt_tensor_numel(p.value);
        for (int64_t j = 0; j < n; j++) {
            float want = pattern(p.layer, r, j);
            if (p.value->data[j] != want) {
                if (bad < 5)
                    fprintf(stderr, "  %s: %s[%lld] = %.9g, expected %.9g\n", what, p.name,
                            (long long)j, (double)p.value->data[j], (double)want);
                bad++;
                break;
            }
        }
        nval += n;
    }
    CHECK_MSG(bad == 0, "%s: %d parameters hold wrong values", what, bad);
    printf("%s %s: %lld backbone values match the pattern\n", bad ? "FAIL" : "ok  ", what,
           (long long)nval);
    return bad;
}

// Copies of all parameter values, to show that a failed import changes nothing.
typedef struct snap {
    int n;
    float **v;
} snap;

static snap snap_take(const nt_model *m)
{
    snap s = {nt_model_num_params(m), NULL};
    s.v    = calloc((size_t)s.n, sizeof(float *));
    for (int i = 0; i < s.n; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        size_t b = (size_t)nt_tensor_numel(p.value) * sizeof(float);
        s.v[i]   = malloc(b ? b : 1);
        memcpy(s.v[i], p.value->data, b);
    }
    return s;
}

// Number of parameters (of layers >= from) that differ from the snapshot.
static int snap_diff(const nt_model *m, const snap *s, int from)
{
    int d = 0;
    for (int i = 0; i < s->n; i++) {
        nt_param p;
        nt_model_param(m, i, &p);
        if (p.layer < from) continue;
        if (memcmp(s->v[i], p.value->data, (size_t)nt_tensor_numel(p.value) * sizeof(float))) d++;
    }
    return d;
}

static void snap_free(snap *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

// ---- good files ----

static void test_import(const char *path, nw_naming naming, const char *version)
{
    nt_model *m = tu_small_resnet(ctx, 16, 0, 7);
    if (!m) return;
    nw_import_report rep;
    nt_status s = nw_import_keras_h5(ctx, m, path, &rep);
    CHECK_MSG(s == NT_OK, "%s: %s", path, nt_ctx_errmsg(ctx));
    int64_t total = nt_model_count_params(m, NULL);
    printf("ok   %s: naming %s, %d layers (%d with weights), %d matched, %d tensors, %lld values, "
           "keras %s\n",
           path, rep.naming, rep.layers_in_file, rep.layers_with_weights, rep.layers, rep.tensors,
           (long long)rep.values, rep.keras_version);
    CHECK(rep.naming_kind == naming && strcmp(rep.naming, nw_naming_str(naming)) == 0);
    CHECK(rep.layers_in_file == 175);
    CHECK(rep.layers_with_weights == 106 && rep.layers == 106);
    CHECK(rep.tensors_in_file == 318 && rep.tensors == 318);
    CHECK(rep.layers_skipped == 0 && rep.skipped_first[0] == 0);
    CHECK(rep.params_untouched == 0);
    CHECK(rep.values == total);
    CHECK(strcmp(rep.keras_version, version) == 0);
    check_pattern(m, path);
    nt_model_free(m);

    // With a head: the backbone comes from the file, the head stays as initialised.
    m = tu_small_resnet(ctx, 16, 1, 7);
    if (!m) return;
    snap before = snap_take(m);
    s           = nw_import_keras_h5(ctx, m, path, &rep);
    CHECK_MSG(s == NT_OK, "%s (head): %s", path, nt_ctx_errmsg(ctx));
    CHECK(rep.params_untouched == 6);
    check_pattern(m, "with head");
    CHECK_MSG(snap_diff(m, &before, nt_model_head_start(m)) == 0, "head parameters changed");
    snap_free(&before);
    nt_model_free(m);
}

// ---- error cases ----

static void expect_fail(nt_model *m, const char *path, nt_status want, const char *needle,
                        const char *what)
{
    snap before     = snap_take(m);
    nt_status s     = nw_import_keras_h5(ctx, m, path, NULL);
    const char *msg = nt_ctx_errmsg(ctx);
    CHECK_MSG(s == want, "%s: status %d (%s), expected %d", what, s, msg, want);
    CHECK_MSG(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
    if (needle)
        CHECK_MSG(strstr(msg, needle) != NULL, "%s: message lacks \"%s\": %s", what, needle, msg);
    CHECK_MSG(snap_diff(m, &before, 0) == 0, "%s: the model changed", what);
    printf("ok   %-24s -> %s\n", what, msg);
    snap_free(&before);
}

static void test_errors(void)
{
    nt_model *w8 = tu_small_resnet(ctx, 8, 0, 7), *m = tu_small_resnet(ctx, 16, 0, 7);
    if (!w8 || !m) goto out;
    expect_fail(w8, FIX_CUR, NT_EFORMAT,
                "layer \"conv1_conv\" dataset \"conv1_conv/kernel:0\" has shape [7,7,3,4] but the "
                "model's \"conv1_conv/kernel\" expects [7,7,3,8]",
                "width_div 8, current");
    expect_fail(w8, FIX_OLD, NT_EFORMAT,
                "layer \"conv1\" dataset \"conv1_W:0\" has shape [7,7,3,4] but the model's "
                "\"conv1_conv/kernel\" expects [7,7,3,8]",
                "width_div 8, 2017");
    expect_fail(m, tu_path("nope.h5"), NT_EIO, "No such file", "missing file");
    expect_fail(m, dir, NT_EIO, "Is a directory", "directory");
    tu_spit(tu_path("text.h5"), "this is not HDF5\n", 17);
    expect_fail(m, tu_path("text.h5"), NT_EFORMAT, "not an HDF5 file", "text file");
    tu_spit(tu_path("empty.h5"), "", 0);
    expect_fail(m, tu_path("empty.h5"), NT_EFORMAT, "not an HDF5 file", "empty file");

    size_t len;
    unsigned char *raw = tu_slurp(FIX_CUR, &len);
    CHECK_MSG(raw != NULL, "cannot read %s (run /usr/bin/python3 tests/gen_h5.py)", FIX_CUR);
    if (raw) {
        size_t cuts[] = {8, 600, 4096, len / 3, len / 2, len - 4096, len - 1};
        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
            char name[64], what[64];
            snprintf(name, sizeof(name), "cut%zu.h5", i);
            snprintf(what, sizeof(what), "truncated at %zu/%zu", cuts[i], len);
            const char *p = tu_path(name);
            tu_spit(p, raw, cuts[i]);
            expect_fail(m, p, NT_EFORMAT, NULL, what);
        }
        free(raw);
    }
out:
    nt_model_free(w8);
    nt_model_free(m);
}

// ---- files modified through libhdf5 ----

// Reads a fixed-length string list attribute (as gen_h5.py writes them).
static int get_names(hid_t obj, const char *attr, char ***out)
{
    hid_t a = H5Aopen(obj, attr, H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
    int n     = (int)H5Sget_simple_extent_npoints(sp);
    size_t sz = H5Tget_size(t);
    char *buf = calloc((size_t)n, sz);
    H5Aread(a, t, buf);
    *out = calloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++)
        (*out)[i] = strndup(buf + (size_t)i * sz, sz);
    free(buf);
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return n;
}

static void free_names(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

// Replaces attribute `attr` of obj by a fixed-length string list.
static void set_names(hid_t obj, const char *attr, char *const *v, int n)
{
    if (H5Aexists(obj, attr) > 0) H5Adelete(obj, attr);
    size_t sz = 1;
    for (int i = 0; i < n; i++)
        if (strlen(v[i]) > sz) sz = strlen(v[i]);
    char *buf = calloc((size_t)n + 1, sz);
    for (int i = 0; i < n; i++)
        memcpy(buf + (size_t)i * sz, v[i], strlen(v[i]));
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, sz);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    hsize_t d[1] = {(hsize_t)n};
    hid_t sp     = H5Screate_simple(1, d, NULL);
    hid_t a      = H5Acreate2(obj, attr, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, t, buf) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    free(buf);
}

// The same with variable-length strings (what h5py writes for a list of str).
static void set_vnames(hid_t obj, const char *attr, char *const *v, int n)
{
    if (H5Aexists(obj, attr) > 0) H5Adelete(obj, attr);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hsize_t d[1] = {(hsize_t)n};
    hid_t sp     = H5Screate_simple(1, d, NULL);
    hid_t a      = H5Acreate2(obj, attr, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, t, v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

static int find_name(char **v, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0) return i;
    return -1;
}

static void test_modified(void)
{
    nt_model *m = tu_small_resnet(ctx, 16, 0, 7);
    if (!m) return;
    nw_import_report rep;
    char **ln;
    int n;

    // A dataset listed in weight_names is gone.
    const char *p = tu_path("nodset.h5");
    copy_file(FIX_CUR, p);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(H5Ldelete(f, "/conv5_block3_3_bn/conv5_block3_3_bn/moving_variance:0", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    expect_fail(m, p, NT_EFORMAT,
                "layer \"conv5_block3_3_bn\": dataset \"conv5_block3_3_bn/moving_variance:0\"",
                "missing dataset");

    // A layer is missing from layer_names: its parameters are not provided.
    p = tu_path("nolayer.h5");
    copy_file(FIX_CUR, p);
    f     = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    n     = get_names(f, "layer_names", &ln);
    int k = find_name(ln, n, "conv4_block2_2_bn");
    CHECK(k > 0);
    free(ln[k]);
    memmove(ln + k, ln + k + 1, (size_t)(n - k - 1) * sizeof(char *));
    set_names(f, "layer_names", ln, n - 1);
    free_names(ln, n - 1);
    H5Fclose(f);
    expect_fail(m, p, NT_EFORMAT, "model parameter \"conv4_block2_2_bn/gamma\" is not in the file",
                "missing layer");

    // The same layer listed twice.
    p = tu_path("twice.h5");
    copy_file(FIX_CUR, p);
    f     = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    n     = get_names(f, "layer_names", &ln);
    ln[0] = realloc(ln[0], 32);
    strcpy(ln[0], "conv1_conv"); // input_1 -> conv1_conv (twice now)
    set_names(f, "layer_names", ln, n);
    free_names(ln, n);
    H5Fclose(f);
    expect_fail(m, p, NT_EFORMAT, "already provided", "duplicate layer");

    // A NaN in a kernel.
    p = tu_path("nan.h5");
    copy_file(FIX_CUR, p);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    {
        hid_t d     = H5Dopen2(f, "/conv3_block2_2_conv/conv3_block2_2_conv/kernel:0", H5P_DEFAULT);
        hid_t sp    = H5Dget_space(d);
        int64_t cnt = H5Sget_simple_extent_npoints(sp);
        float *v    = malloc((size_t)cnt * sizeof(float));
        H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        v[5] = NAN;
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        free(v);
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
    expect_fail(m, p, NT_EFORMAT, "holds nan at element 5", "NaN value");

    // Layers in reverse order, a BN layer's weight_names in another order, and layer_names split
    // into layer_names0/1 as Keras does for large attributes: all still import by name.
    p = tu_path("reordered.h5");
    copy_file(FIX_OLD, p);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    n = get_names(f, "layer_names", &ln);
    for (int i = 0; i < n / 2; i++) {
        char *t       = ln[i];
        ln[i]         = ln[n - 1 - i];
        ln[n - 1 - i] = t;
    }
    H5Adelete(f, "layer_names");
    set_names(f, "layer_names0", ln, 100);
    set_names(f, "layer_names1", ln + 100, n - 100);
    free_names(ln, n);
    hid_t g = H5Gopen2(f, "bn3a_branch1", H5P_DEFAULT);
    char **wn;
    int nw = get_names(g, "weight_names", &wn);
    CHECK(nw == 4);
    char *w[4] = {wn[3], wn[1], wn[0], wn[2]};
    set_names(g, "weight_names", w, 4);
    free_names(wn, nw);
    H5Gclose(g);
    H5Fclose(f);
    nt_status s = nw_import_keras_h5(ctx, m, p, &rep);
    CHECK_MSG(s == NT_OK, "reordered: %s", nt_ctx_errmsg(ctx));
    CHECK(rep.naming_kind == NW_NAMING_2017 && rep.layers_in_file == 175 && rep.tensors == 318);
    check_pattern(m, "reordered 2017 file");
    nt_model_free(m);

    // layer_names and one weight_names as variable-length strings.
    p = tu_path("vlen.h5");
    copy_file(FIX_CUR, p);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    n = get_names(f, "layer_names", &ln);
    set_vnames(f, "layer_names", ln, n);
    free_names(ln, n);
    g  = H5Gopen2(f, "conv1_bn", H5P_DEFAULT);
    nw = get_names(g, "weight_names", &wn);
    set_vnames(g, "weight_names", wn, nw);
    free_names(wn, nw);
    H5Gclose(g);
    H5Fclose(f);
    m = tu_small_resnet(ctx, 16, 0, 7);
    if (m) {
        s = nw_import_keras_h5(ctx, m, p, &rep);
        CHECK_MSG(s == NT_OK, "vlen strings: %s", nt_ctx_errmsg(ctx));
        CHECK(rep.layers_in_file == 175 && rep.tensors == 318);
        check_pattern(m, "variable-length names");
        nt_model_free(m);
    }

    // A whole-model file of a fine-tuned app: weights under /model_weights, the backbone a nested
    // model group "resnet50" whose weight_names list every layer's weights (trainable ones first,
    // as Keras orders a nested model), plus a classifier layer the model does not have.
    p          = tu_path("wholemodel.h5");
    hid_t src  = H5Fopen(FIX_CUR, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dst  = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t mw   = H5Gcreate2(dst, "model_weights", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t rn   = H5Gcreate2(mw, "resnet50", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    n          = get_names(src, "layer_names", &ln);
    char **all = calloc(400, sizeof(char *));
    int nall   = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            hid_t lg = H5Gopen2(src, ln[i], H5P_DEFAULT);
            if (H5Aexists(lg, "weight_names") > 0 && pass == 0) {
                hid_t a = H5Aopen(lg, "weight_names", H5P_DEFAULT), sp = H5Aget_space(a);
                int has = H5Sget_simple_extent_npoints(sp) > 0;
                H5Sclose(sp);
                H5Aclose(a);
                if (has) {
                    char from[200];
                    snprintf(from, sizeof(from), "%s/%s", ln[i], ln[i]);
                    CHECK(H5Ocopy(src, from, rn, ln[i], H5P_DEFAULT, H5P_DEFAULT) >= 0);
                }
            }
            if (H5Aexists(lg, "weight_names") > 0) {
                char **v;
                int nv  = get_names(lg, "weight_names", &v);
                hid_t a = H5Aopen(lg, "weight_names", H5P_DEFAULT), t = H5Aget_type(a);
                int is_str = H5Tget_class(t) == H5T_STRING;
                H5Tclose(t);
                H5Aclose(a);
                for (int j = 0; is_str && j < nv; j++) {
                    int moving = strstr(v[j], "moving_") != NULL;
                    if (moving == pass) all[nall++] = strdup(v[j]);
                }
                free_names(v, nv);
            }
            H5Gclose(lg);
        }
    }
    free_names(ln, n);
    set_names(rn, "weight_names", all, nall);
    char *top[3] = {"input_1", "resnet50", "fc1000"};
    set_names(mw, "layer_names", top, 3);
    hid_t in = H5Gcreate2(mw, "input_1", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    set_names(in, "weight_names", NULL, 0);
    hid_t fc     = H5Gcreate2(mw, "fc1000", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    char *fcw[1] = {"fc1000/kernel:0"};
    set_names(fc, "weight_names", fcw, 1);
    {
        hsize_t d[2] = {128, 10};
        hid_t sp     = H5Screate_simple(2, d, NULL);
        hid_t lcpl   = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        hid_t ds =
            H5Dcreate2(fc, "fc1000/kernel:0", H5T_NATIVE_FLOAT, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        CHECK(ds >= 0);
        H5Dclose(ds);
        H5Pclose(lcpl);
        H5Sclose(sp);
    }
    H5Gclose(fc);
    H5Gclose(in);
    for (int i = 0; i < nall; i++)
        free(all[i]);
    free(all);
    H5Gclose(rn);
    H5Gclose(mw);
    H5Fclose(dst);
    H5Fclose(src);
    m = tu_small_resnet(ctx, 16, 1, 7);
    if (m) {
        s = nw_import_keras_h5(ctx, m, p, &rep);
        CHECK_MSG(s == NT_OK, "whole-model file: %s", nt_ctx_errmsg(ctx));
        CHECK(rep.naming_kind == NW_NAMING_CURRENT && rep.layers_in_file == 3 &&
              rep.tensors_in_file == 319 && rep.tensors == 318 && rep.layers == 106);
        CHECK(rep.layers_skipped == 1 && strcmp(rep.skipped_first, "fc1000") == 0);
        check_pattern(m, "whole-model file");
        nt_model_free(m);
    }
}

int main(void)
{
    if (!(ctx = tu_ctx_new1())) return 1;
    if (access(FIX_CUR, R_OK) != 0 || access(FIX_OLD, R_OK) != 0) {
        fprintf(stderr, "FAIL: fixtures missing; run /usr/bin/python3 tests/gen_h5.py\n");
        return 1;
    }
    if (!(dir = tu_tmpdir_new("h5"))) return 1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); // the test's own HDF5 calls stay quiet too
    test_import(FIX_CUR, NW_NAMING_CURRENT, "2.2.4");
    test_import(FIX_OLD, NW_NAMING_2017, "1.2.2");
    test_errors();
    test_modified();

    tu_tmpdir_free();
    nt_ctx_free(ctx);
    return check_summary("test_h5import");
}
