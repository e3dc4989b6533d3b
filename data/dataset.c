/*
 * dataset.c: listing image datasets (a folder or an S3 prefix) with flow_from_directory's rules,
 * subsets, and the patient-grouped, stratified validation split. Not here: decoding (image.c),
 * loader threads and the cache (loader.c). Tests: tests/test_dataset.c.
 */
#include "data/dataset.h"

#include <dirent.h>
#include <math.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- building datasets ----

// One listed file before sorting: class, folder inside the class ("" at its top), file name.
typedef struct entry {
    int cls;
    char *dir, *name, *source;
    int64_t size;
} entry;

typedef struct entries {
    entry *v;
    int n, cap;
} entries;

static int entries_push(entries *e, int cls, const char *dir, const char *name, char *source,
                        int64_t size)
{
    if (e->n == e->cap) {
        int cap  = e->cap ? 2 * e->cap : 256;
        entry *v = realloc(e->v, sizeof(entry) * (size_t)cap);
        if (!v) return -1;
        e->v = v, e->cap = cap;
    }
    entry *x  = &e->v[e->n];
    x->cls    = cls;
    x->dir    = strdup(dir);
    x->name   = strdup(name);
    x->source = source;
    x->size   = size;
    if (!x->dir || !x->name || !source) {
        free(x->dir), free(x->name), free(source);
        return -1;
    }
    e->n++;
    return 0;
}

static void entries_free(entries *e)
{
    for (int i = 0; i < e->n; i++)
        free(e->v[i].dir), free(e->v[i].name), free(e->v[i].source);
    free(e->v);
}

// Keras's order: class, then os.walk's folders sorted by path, then file names sorted.
static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->cls != y->cls) return x->cls < y->cls ? -1 : 1;
    int c = strcmp(x->dir, y->dir);
    return c ? c : strcmp(x->name, y->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static nd_dataset *ds_alloc(int nclasses, char *const *names, int n)
{
    nd_dataset *ds = calloc(1, sizeof(*ds));
    if (!ds) return NULL;
    ds->items        = calloc(n > 0 ? (size_t)n : 1, sizeof(nd_item));
    ds->class_names  = calloc(nclasses > 0 ? (size_t)nclasses : 1, sizeof(char *));
    ds->class_counts = calloc(nclasses > 0 ? (size_t)nclasses : 1, sizeof(int));
    ds->nclasses     = nclasses;
    if (!ds->items || !ds->class_names || !ds->class_counts) {
        nd_dataset_free(ds);
        return NULL;
    }
    for (int c = 0; c < nclasses; c++)
        if (!(ds->class_names[c] = strdup(names[c]))) {
            nd_dataset_free(ds);
            return NULL;
        }
    return ds;
}

void nd_dataset_free(nd_dataset *ds)
{
    if (!ds) return;
    for (int i = 0; i < ds->n; i++)
        free(ds->items[i].source);
    for (int c = 0; ds->class_names && c < ds->nclasses; c++)
        free(ds->class_names[c]);
    free(ds->items);
    free(ds->class_names);
    free(ds->class_counts);
    free(ds->root);
    free(ds);
}

static int has_image_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    const char *list = ND_EXTENSIONS;
    size_t el        = strlen(dot + 1);
    while (*list) {
        const char *comma = strchr(list, ',');
        size_t l          = comma ? (size_t)(comma - list) : strlen(list);
        if (l == el && strncasecmp(dot + 1, list, l) == 0) return 1;
        list += l + (comma ? 1 : 0);
    }
    return 0;
}

static char *join3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = c ? strlen(c) : 0;
    char *p = malloc(la + lb + lc + 3);
    if (!p) return NULL;
    memcpy(p, a, la);
    size_t k = la;
    if (lb) {
        if (k && p[k - 1] != '/') p[k++] = '/';
        memcpy(p + k, b, lb), k += lb;
    }
    if (lc) {
        if (k && p[k - 1] != '/') p[k++] = '/';
        memcpy(p + k, c, lc), k += lc;
    }
    p[k] = 0;
    return p;
}

// Turns sorted entries into a dataset (taking the sources).
static nt_status ds_from_entries(nt_ctx *ctx, const char *root, char **classes, int nclasses,
                                 entries *e, nd_dataset **out)
{
    qsort(e->v, (size_t)e->n, sizeof(entry), cmp_entry);
    nd_dataset *ds = ds_alloc(nclasses, classes, e->n);
    if (!ds || !(ds->root = strdup(root))) {
        nd_dataset_free(ds);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "dataset %s: out of memory for %d items", root, e->n);
    }
    for (int i = 0; i < e->n; i++) {
        ds->items[i]   = (nd_item){e->v[i].source, e->v[i].cls, e->v[i].size};
        e->v[i].source = NULL;
        ds->class_counts[e->v[i].cls]++;
    }
    ds->n = e->n;
    *out  = ds;
    return NT_OK;
}

// ---- folders ----

typedef struct walk {
    nt_ctx *ctx;
    entries *e;
    int cls;
    int ignored, unreadable;
    int oom;
} walk;

// Lists one class folder recursively (os.walk(followlinks=False): links to files count, links to
// folders are not entered).
static void walk_dir(walk *w, const char *path, const char *rel)
{
    DIR *d = opendir(path);
    if (!d) {
        nt_ctx_log(w->ctx, NT_LOG_WARN, "dataset: skipping folder %s: %s", path, strerror(errno));
        w->unreadable++;
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) && !w->oom) {
        const char *nm = de->d_name;
        if (nm[0] == '.') {
            if (strcmp(nm, ".") && strcmp(nm, "..")) w->ignored++;
            continue;
        }
        char *full = join3(path, nm, NULL);
        if (!full) {
            w->oom = 1;
            break;
        }
        struct stat st;
        if (lstat(full, &st) != 0) {
            nt_ctx_log(w->ctx, NT_LOG_WARN, "dataset: skipping %s: %s", full, strerror(errno));
            w->unreadable++;
            free(full);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            char *r = join3(rel, nm, NULL);
            if (!r) w->oom = 1;
            if (r) walk_dir(w, full, r);
            free(r);
            free(full);
            continue;
        }
        if (!has_image_ext(nm)) {
            w->ignored++;
            free(full);
            continue;
        }
        const char *why = NULL;
        if (S_ISLNK(st.st_mode)) {
            if (stat(full, &st) != 0)
                why = errno == ENOENT ? "a link to nothing" : strerror(errno);
            else if (S_ISDIR(st.st_mode)) {
                w->ignored++; // a link to a folder with an image's name: not entered, as Keras
                free(full);
                continue;
            }
        }
        if (!why && !S_ISREG(st.st_mode)) why = "not a regular file";
        if (!why && access(full, R_OK) != 0) why = strerror(errno);
        if (why) {
            nt_ctx_log(w->ctx, NT_LOG_WARN, "dataset: skipping %s: %s", full, why);
            w->unreadable++;
            free(full);
            continue;
        }
        if (entries_push(w->e, w->cls, rel, nm, full, (int64_t)st.st_size)) w->oom = 1;
    }
    closedir(d);
}

static nt_status open_folder(nt_ctx *ctx, const char *root, nd_dataset **out, int *ignored)
{
    DIR *d = opendir(root);
    if (!d)
        return nt_ctx_seterr(ctx, NT_EIO,
                             "dataset %s: %s (expected a folder with one sub-folder per class, "
                             "e.g. NORMAL/ and PNEUMONIA/)",
                             root, strerror(errno));
    char **classes = NULL;
    int nclasses = 0, cap = 0, top_files = 0;
    nt_status s = NT_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *full = join3(root, de->d_name, NULL);
        struct stat st;
        int isdir = full && stat(full, &st) == 0 && S_ISDIR(st.st_mode); // os.path.isdir
        free(full);
        if (!isdir) {
            top_files++;
            continue;
        }
        if (nclasses == cap) {
            char **v = realloc(classes, sizeof(char *) * (size_t)(cap = cap ? 2 * cap : 8));
            if (!v) break;
            classes = v;
        }
        if (!(classes[nclasses] = strdup(de->d_name))) break;
        nclasses++;
    }
    closedir(d);
    if (de) s = nt_ctx_seterr(ctx, NT_ENOMEM, "dataset %s: out of memory", root);
    if (s == NT_OK && nclasses == 0)
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "dataset %s: no class folders; expected one sub-folder per class "
                          "(e.g. NORMAL/ and PNEUMONIA/) holding %s files",
                          root, ND_EXTENSIONS);
    entries e = {0};
    walk w    = {ctx, &e, 0, top_files, 0, 0};
    if (s == NT_OK) {
        qsort(classes, (size_t)nclasses, sizeof(char *), cmp_str);
        for (int c = 0; c < nclasses && !w.oom; c++) {
            char *p = join3(root, classes[c], NULL);
            w.cls   = c;
            if (p) walk_dir(&w, p, "");
            w.oom |= !p;
            free(p);
        }
        if (w.oom) s = nt_ctx_seterr(ctx, NT_ENOMEM, "dataset %s: out of memory", root);
    }
    if (s == NT_OK && e.n == 0)
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "dataset %s: no images in its %d class folder%s (expected files ending "
                          "in %s)",
                          root, nclasses, nclasses == 1 ? "" : "s", ND_EXTENSIONS);
    if (s == NT_OK) s = ds_from_entries(ctx, root, classes, nclasses, &e, out);
    if (s == NT_OK) {
        (*out)->ignored    = w.ignored;
        (*out)->unreadable = w.unreadable;
        if (ignored) *ignored = w.ignored;
    }
    entries_free(&e);
    for (int c = 0; c < nclasses; c++)
        free(classes[c]);
    free(classes);
    return s;
}

// ---- S3 ----

static int has_hidden_part(const char *path)
{
    for (const char *p = path; *p; p++)
        if (*p == '.' && (p == path || p[-1] == '/')) return 1;
    return 0;
}

static nt_status open_s3(nt_ctx *ctx, const char *uri, nd_s3 *s3, nd_dataset **out, int *ignored)
{
    if (!s3)
        return nt_ctx_seterr(ctx, NT_EINVAL, "dataset %s: an S3 client is needed for s3:// URIs",
                             uri);
    char *bucket = NULL, *prefix = NULL, *pre = NULL;
    nt_status s = nd_s3_parse_uri(ctx, uri, &bucket, &prefix);
    if (s != NT_OK) return s;
    size_t pl          = strlen(prefix);
    pre                = malloc(pl + 2);
    nd_s3_object *objs = NULL;
    size_t nobj        = 0;
    char **classes     = NULL;
    int nclasses = 0, nign = 0;
    entries e = {0};
    if (!pre) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "dataset %s: out of memory", uri);
        goto out;
    }
    memcpy(pre, prefix, pl + 1);
    if (pl && pre[pl - 1] != '/') pre[pl++] = '/', pre[pl] = 0;
    if ((s = nd_s3_list(s3, bucket, pre, &objs, &nobj)) != NT_OK) goto out;
    // Class names: the first path segment of keys that have one below the prefix.
    classes = calloc(nobj ? nobj : 1, sizeof(char *));
    if (!classes) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "dataset %s: out of memory", uri);
        goto out;
    }
    for (size_t i = 0; i < nobj; i++) {
        const char *rel = objs[i].key + (strncmp(objs[i].key, pre, pl) == 0 ? pl : 0);
        const char *sl  = strchr(rel, '/');
        if (!sl || sl == rel || rel[0] == '.') continue;
        int found = 0;
        for (int c = 0; c < nclasses && !found; c++)
            found = strlen(classes[c]) == (size_t)(sl - rel) &&
                    !strncmp(classes[c], rel, (size_t)(sl - rel));
        if (!found && !(classes[nclasses++] = strndup(rel, (size_t)(sl - rel)))) {
            s = nt_ctx_seterr(ctx, NT_ENOMEM, "dataset %s: out of memory", uri);
            goto out;
        }
    }
    if (nclasses == 0) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "dataset %s: no class folders among %zu objects; expected keys "
                          "PREFIX/CLASS/FILE (e.g. NORMAL/ and PNEUMONIA/) holding %s files",
                          uri, nobj, ND_EXTENSIONS);
        goto out;
    }
    qsort(classes, (size_t)nclasses, sizeof(char *), cmp_str);
    for (size_t i = 0; i < nobj; i++) {
        const char *rel = objs[i].key + (strncmp(objs[i].key, pre, pl) == 0 ? pl : 0);
        const char *sl  = strchr(rel, '/');
        if (!sl || sl == rel || rel[0] == '.') {
            nign++; // top-level objects are not in a class folder
            continue;
        }
        const char *in = sl + 1, *base = strrchr(in, '/');
        base = base ? base + 1 : in;
        if (!*base) continue; // a "folder/" marker object
        if (has_hidden_part(in) || !has_image_ext(base)) {
            nign++;
            continue;
        }
        int c = 0;
        while (c < nclasses && !(strlen(classes[c]) == (size_t)(sl - rel) &&
                                 !strncmp(classes[c], rel, (size_t)(sl - rel))))
            c++;
        char *dir = strndup(in, (size_t)(base - in));
        char *src = malloc(strlen(bucket) + strlen(objs[i].key) + 7);
        if (src) sprintf(src, "s3://%s/%s", bucket, objs[i].key);
        int bad = !dir || entries_push(&e, c, dir, base, src, objs[i].size);
        free(dir);
        if (bad) {
            s = nt_ctx_seterr(ctx, NT_ENOMEM, "dataset %s: out of memory", uri);
            goto out;
        }
    }
    if (e.n == 0) {
        s = nt_ctx_seterr(ctx, NT_EFORMAT,
                          "dataset %s: no images in its %d class folder%s (expected keys ending "
                          "in %s)",
                          uri, nclasses, nclasses == 1 ? "" : "s", ND_EXTENSIONS);
        goto out;
    }
    if ((s = ds_from_entries(ctx, uri, classes, nclasses, &e, out)) == NT_OK) {
        (*out)->ignored = nign;
        if (ignored) *ignored = nign;
    }
out:
    entries_free(&e);
    for (int c = 0; classes && c < nclasses; c++)
        free(classes[c]);
    free(classes);
    nd_s3_objects_free(objs, nobj);
    free(bucket), free(prefix), free(pre);
    return s;
}

nt_status nd_dataset_open(nt_ctx *ctx, const char *uri, nd_s3 *s3, nd_dataset **out, int *ignored)
{
    *out = NULL;
    if (ignored) *ignored = 0;
    if (!uri || !*uri) return nt_ctx_seterr(ctx, NT_EINVAL, "dataset: empty path");
    if (strncmp(uri, "s3://", 5) == 0) return open_s3(ctx, uri, s3, out, ignored);
    // "data/train/" and "data/train" are the same folder.
    char *root = strdup(uri);
    if (!root) return nt_ctx_seterr(ctx, NT_ENOMEM, "dataset: out of memory");
    for (size_t l = strlen(root); l > 1 && root[l - 1] == '/'; l--)
        root[l - 1] = 0;
    nt_status s = open_folder(ctx, root, out, ignored);
    free(root);
    return s;
}

nt_status nd_dataset_subset(nt_ctx *ctx, const nd_dataset *ds, const int *idx, int n,
                            nd_dataset **out)
{
    *out = NULL;
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= ds->n)
            return nt_ctx_seterr(ctx, NT_EINVAL, "dataset subset: index %d out of range 0..%d",
                                 idx[i], ds->n - 1);
    nd_dataset *sub = ds_alloc(ds->nclasses, ds->class_names, n);
    if (!sub || !(sub->root = strdup(ds->root ? ds->root : ""))) {
        nd_dataset_free(sub);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "dataset subset: out of memory for %d items", n);
    }
    for (int i = 0; i < n; i++) {
        const nd_item *it = &ds->items[idx[i]];
        if (!(sub->items[i].source = strdup(it->source))) {
            nd_dataset_free(sub);
            return nt_ctx_seterr(ctx, NT_ENOMEM, "dataset subset: out of memory");
        }
        sub->items[i].label = it->label;
        sub->items[i].size  = it->size;
        sub->n              = i + 1;
        if (it->label >= 0 && it->label < sub->nclasses) sub->class_counts[it->label]++;
    }
    sub->n = n;
    *out   = sub;
    return NT_OK;
}

// ---- split ----

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// The group key of name under re into buf; "" when it does not match.
static void group_key(const regex_t *re, const char *name, char *buf, size_t len)
{
    regmatch_t m[10];
    buf[0] = 0;
    if (regexec(re, name, 10, m, 0) != 0) return;
    int k = 0;
    for (int i = 1; i < 10 && i <= (int)re->re_nsub; i++)
        if (m[i].rm_so >= 0 && m[i].rm_eo > m[i].rm_so) {
            k = i;
            break;
        }
    size_t l = (size_t)(m[k].rm_eo - m[k].rm_so);
    if (l >= len) l = len - 1;
    memcpy(buf, name + m[k].rm_so, l);
    buf[l] = 0;
}

static nt_status compile(nt_ctx *ctx, const char *rx, regex_t *re)
{
    int rc = regcomp(re, rx ? rx : ND_KERMANY_GROUPS, REG_EXTENDED);
    if (rc) {
        char msg[200];
        regerror(rc, re, msg, sizeof msg);
        return nt_ctx_seterr(ctx, NT_EINVAL, "group pattern \"%s\": %s", rx, msg);
    }
    return NT_OK;
}

nt_status nd_dataset_group(nt_ctx *ctx, const char *group_regex, const char *name, char *buf,
                           size_t len)
{
    if (len) buf[0] = 0;
    regex_t re;
    nt_status s = compile(ctx, group_regex, &re);
    if (s != NT_OK) return s;
    if (len) group_key(&re, name, buf, len);
    regfree(&re);
    return NT_OK;
}

typedef struct group {
    char *key;
    int cls;      // majority class
    int *count;   // per class
    int val;      // assigned to validation
    uint64_t ord; // shuffle key
} group;

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const group *)a)->key, ((const group *)b)->key);
}

static int cmp_ord(const void *a, const void *b)
{
    const group *x = *(group *const *)a, *y = *(group *const *)b;
    if (x->ord != y->ord) return x->ord < y->ord ? -1 : 1;
    return strcmp(x->key, y->key);
}

nt_status nd_dataset_split(nt_ctx *ctx, const nd_dataset *ds, double frac, uint64_t seed,
                           const char *group_regex, nd_dataset **train, nd_dataset **val)
{
    *train = *val = NULL;
    if (!(frac > 0 && frac < 1))
        return nt_ctx_seterr(ctx, NT_EINVAL,
                             "validation split: expected a fraction in (0, 1), got %g", frac);
    regex_t re;
    nt_status s = compile(ctx, group_regex, &re);
    if (s != NT_OK) return s;
    int n = ds->n, C = ds->nclasses;
    char **key  = calloc((size_t)n + 1, sizeof(char *));
    int *gi     = calloc((size_t)n + 1, sizeof(int));
    group *g    = calloc((size_t)n + 1, sizeof(group));
    int *counts = calloc((size_t)(n + 1) * (size_t)C, sizeof(int));
    group **ord = calloc((size_t)n + 1, sizeof(group *));
    int *tix    = malloc(sizeof(int) * ((size_t)n + 1));
    int *vix    = malloc(sizeof(int) * ((size_t)n + 1));
    int ng      = 0;
    if (!key || !gi || !g || !counts || !ord || !tix || !vix) {
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "validation split: out of memory for %d items", n);
        goto out;
    }
    // Group keys; a file that does not match is its own group, keyed by its whole source.
    for (int i = 0; i < n; i++) {
        char k[256];
        group_key(&re, base_name(ds->items[i].source), k, sizeof k);
        key[i] = strdup(k[0] ? k : ds->items[i].source);
        if (!key[i]) {
            s = nt_ctx_seterr(ctx, NT_ENOMEM, "validation split: out of memory");
            goto out;
        }
    }
    // Distinct groups, sorted by key (so the result does not depend on item order).
    for (int i = 0; i < n; i++)
        g[i].key = key[i];
    qsort(g, (size_t)n, sizeof(group), cmp_key);
    for (int i = 0; i < n; i++)
        if (ng == 0 || strcmp(g[ng - 1].key, g[i].key) != 0) g[ng++] = g[i];
    for (int k = 0; k < ng; k++)
        g[k].count = counts + (size_t)k * C;
    for (int i = 0; i < n; i++) {
        group probe = {key[i], 0, NULL, 0, 0};
        group *f    = bsearch(&probe, g, (size_t)ng, sizeof(group), cmp_key);
        gi[i]       = (int)(f - g);
        if (ds->items[i].label >= 0 && ds->items[i].label < C) f->count[ds->items[i].label]++;
    }
    for (int k = 0; k < ng; k++)
        for (int c = 1; c < C; c++)
            if (g[k].count[c] > g[k].count[g[k].cls]) g[k].cls = c;
    // Per class: groups in a seeded order, taken while they bring the count closer to target.
    for (int c = 0; c < C; c++) {
        int m = 0;
        for (int k = 0; k < ng; k++)
            if (g[k].cls == c) {
                g[k].ord = mix64(mix64(seed ^ mix64((uint64_t)c + 1)) ^ (uint64_t)k);
                ord[m++] = &g[k];
            }
        qsort(ord, (size_t)m, sizeof(group *), cmp_ord);
        long target = lround(frac * ds->class_counts[c]), taken = 0;
        for (int k = 0; k < m && taken < target; k++) {
            long sz = ord[k]->count[c];
            if (taken + sz <= target || taken + sz - target < target - taken) {
                ord[k]->val = 1;
                taken += sz;
            }
        }
    }
    int nt = 0, nv = 0;
    for (int i = 0; i < n; i++) {
        if (g[gi[i]].val)
            vix[nv++] = i;
        else
            tix[nt++] = i;
    }
    if ((s = nd_dataset_subset(ctx, ds, tix, nt, train)) == NT_OK)
        s = nd_dataset_subset(ctx, ds, vix, nv, val);
    if (s != NT_OK) {
        nd_dataset_free(*train);
        *train = NULL;
        goto out;
    }
    for (int c = 0; c < C; c++) {
        int gt = 0, gv = 0;
        for (int k = 0; k < ng; k++)
            if (g[k].cls == c) g[k].val ? gv++ : gt++;
        nt_ctx_log(ctx, NT_LOG_INFO,
                   "split: %s: %d train, %d validation (%.1f%%; %d and %d patient groups)",
                   ds->class_names[c], (*train)->class_counts[c], (*val)->class_counts[c],
                   ds->class_counts[c] ? 100.0 * (*val)->class_counts[c] / ds->class_counts[c]
                                       : 0.0,
                   gt, gv);
    }
out:
    regfree(&re);
    for (int i = 0; key && i < n; i++)
        free(key[i]);
    free(key), free(gi), free(g), free(counts), free(ord), free(tix), free(vix);
    return s;
}
