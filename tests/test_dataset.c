/*
 * test_dataset.c: datasets and loader threads (data/dataset.c, data/loader.c). Listing: a temp
 * folder tree with classes, odd extensions, hidden names, unreadable entries, Keras's sort order.
 * The split: groups never straddle, each class within one group of its fraction, deterministic by
 * seed, different seeds differ, the Kermany pattern on real names. The loader: every item once per
 * epoch, batches bit for bit the same with 1 and 3 threads (with and without augmentation), cache
 * hits in epoch 2, bad files skipped, logged and counted, max_bad_frac stops with NT_EFORMAT.
 * S3: the same tree served by the local S3 server (tests/s3rver.js, started here when node and
 * node_modules are present) lists the same way and gives the same batches bit for bit.
 * Uses ../shared/data only when present.
 */
#include "data/dataset.h"
#include "tests/check.h"
#include "tests/testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>

// ---- helpers ----

static void mkdir_p(const char *rel)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", tu_path(rel));
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    mkdir(buf, 0755);
}

static void touch(const char *rel)
{
    tu_spit(tu_path(rel), "", 0);
}

// A w x h RGB JPEG whose content depends on seed.
static void write_jpeg(const char *rel, int w, int h, int seed)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                px[((size_t)y * w + x) * 3 + c] =
                    (uint8_t)((x * (seed + 3) + y * (7 + c) * (seed % 5 + 1) + 40 * c + seed * 13) %
                              256);
    tjhandle tj      = tjInitCompress();
    unsigned char *j = NULL;
    unsigned long jl = 0;
    CHECK(tj && tjCompress2(tj, px, w, 0, h, TJPF_RGB, &j, &jl, TJSAMP_420, 90, 0) == 0);
    if (j) tu_spit(tu_path(rel), j, jl);
    tjFree(j);
    tjDestroy(tj);
    free(px);
}

static const char *base_of(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// Log lines captured from a context.
typedef struct logbuf {
    char text[1 << 16];
    size_t len;
    int nwarn;
} logbuf;

static void on_log(void *user, nt_log_level level, const char *msg)
{
    logbuf *lb = user;
    if (level == NT_LOG_WARN) lb->nwarn++;
    int k = snprintf(lb->text + lb->len, sizeof(lb->text) - lb->len, "%s\n", msg);
    if (k > 0 && lb->len + (size_t)k < sizeof(lb->text)) lb->len += (size_t)k;
}

static nt_ctx *ctx_with_log(logbuf *lb)
{
    memset(lb, 0, sizeof(*lb));
    nt_ctx_opts o;
    nt_ctx_opts_default(&o);
    o.nthreads = 1;
    o.log      = on_log;
    o.log_user = lb;
    return tu_ctx_new(&o);
}

// ---- listing ----

static void test_listing(void)
{
    logbuf lb;
    nt_ctx *ctx = ctx_with_log(&lb);
    mkdir_p("tree/PNEUMONIA/sub");
    mkdir_p("tree/PNEUMONIA/sub-x");
    mkdir_p("tree/PNEUMONIA/sub/deeper");
    mkdir_p("tree/NORMAL");
    mkdir_p("tree/EMPTY");
    mkdir_p("tree/.ipynb_checkpoints");
    const char *files[] = {"tree/PNEUMONIA/b.jpg",
                           "tree/PNEUMONIA/a.PNG",
                           "tree/PNEUMONIA/c.jpeg",
                           "tree/PNEUMONIA/sub/z.jpg",
                           "tree/PNEUMONIA/sub/a.tif",
                           "tree/PNEUMONIA/sub-x/m.bmp",
                           "tree/PNEUMONIA/sub/deeper/q.ppm",
                           "tree/PNEUMONIA/notes.txt",
                           "tree/PNEUMONIA/.hidden.jpg",
                           "tree/PNEUMONIA/x.gif",
                           "tree/PNEUMONIA/jpg",
                           "tree/NORMAL/Z.JPG",
                           "tree/NORMAL/a.tiff",
                           "tree/NORMAL/b b.jpg",
                           "tree/top.jpg",
                           "tree/.ipynb_checkpoints/k.jpg"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        touch(files[i]);
    // A link to a file counts; a dangling link and a FIFO are reported and left out.
    CHECK(symlink("b.jpg", tu_path("tree/PNEUMONIA/link.jpg")) == 0);
    CHECK(symlink("nowhere.jpg", tu_path("tree/PNEUMONIA/dangling.jpg")) == 0);
    CHECK(mkfifo(tu_path("tree/NORMAL/fifo.jpg"), 0644) == 0);
    int unreadable_expected = 2;
    if (geteuid() != 0) { // root reads anything: the permission case only runs as a user
        touch("tree/NORMAL/secret.jpg");
        chmod(tu_path("tree/NORMAL/secret.jpg"), 0);
        unreadable_expected++;
    }
    nd_dataset *ds = NULL;
    int ignored    = -1;
    nt_status s    = nd_dataset_open(ctx, tu_path("tree/"), NULL, &ds, &ignored);
    CHECK_MSG(s == NT_OK, "%s", nt_ctx_errmsg(ctx));
    if (!ds) goto out;
    CHECK(ds->nclasses == 3);
    if (ds->nclasses == 3) {
        CHECK(!strcmp(ds->class_names[0], "EMPTY") && !strcmp(ds->class_names[1], "NORMAL") &&
              !strcmp(ds->class_names[2], "PNEUMONIA"));
        CHECK(ds->class_counts[0] == 0 && ds->class_counts[1] == 3 && ds->class_counts[2] == 8);
    }
    // Keras's order: class, then folder (sorted by path: "" < "sub" < "sub-x" < "sub/deeper"),
    // then name in byte order (upper case first).
    const char *want[] = {"NORMAL/Z.JPG",
                          "NORMAL/a.tiff",
                          "NORMAL/b b.jpg",
                          "PNEUMONIA/a.PNG",
                          "PNEUMONIA/b.jpg",
                          "PNEUMONIA/c.jpeg",
                          "PNEUMONIA/link.jpg",
                          "PNEUMONIA/sub/a.tif",
                          "PNEUMONIA/sub/z.jpg",
                          "PNEUMONIA/sub-x/m.bmp",
                          "PNEUMONIA/sub/deeper/q.ppm"};
    int nwant          = (int)(sizeof(want) / sizeof(want[0]));
    CHECK_MSG(ds->n == nwant, "listed %d files, want %d", ds->n, nwant);
    for (int i = 0; i < ds->n && i < nwant; i++) {
        const char *src = ds->items[i].source;
        size_t ls = strlen(src), lw = strlen(want[i]);
        CHECK_MSG(ls > lw && !strcmp(src + ls - lw, want[i]) && src[ls - lw - 1] == '/',
                  "item %d is %s, want .../%s", i, src, want[i]);
        CHECK(ds->items[i].label == (i < 3 ? 1 : 2));
        CHECK(!strstr(src, "//"));
    }
    // Ignored: notes.txt, .hidden.jpg, x.gif, "jpg" (no dot), top.jpg.
    CHECK_MSG(ignored == 5 && ds->ignored == 5, "ignored %d", ignored);
    CHECK_MSG(ds->unreadable == unreadable_expected, "unreadable %d, want %d", ds->unreadable,
              unreadable_expected);
    CHECK(strstr(lb.text, "dangling.jpg: a link to nothing") != NULL);
    CHECK(strstr(lb.text, "fifo.jpg: not a regular file") != NULL);
    printf("ok   listing: %d items, %d ignored, %d unreadable; log:\n%s", ds->n, ignored,
           ds->unreadable, lb.text);
    nd_dataset_free(ds);

    // Errors say what was expected.
    CHECK(nd_dataset_open(ctx, tu_path("nope"), NULL, &ds, NULL) == NT_EIO);
    CHECK(strstr(nt_ctx_errmsg(ctx), "one sub-folder per class") != NULL);
    mkdir_p("flat");
    touch("flat/a.jpg");
    CHECK(nd_dataset_open(ctx, tu_path("flat"), NULL, &ds, NULL) == NT_EFORMAT);
    CHECK(strstr(nt_ctx_errmsg(ctx), "no class folders") != NULL);
    mkdir_p("noimg/A");
    touch("noimg/A/readme.md");
    CHECK(nd_dataset_open(ctx, tu_path("noimg"), NULL, &ds, NULL) == NT_EFORMAT);
    CHECK(strstr(nt_ctx_errmsg(ctx), "no images") != NULL);
    CHECK(nd_dataset_open(ctx, "s3://bucket/train/", NULL, &ds, NULL) == NT_EINVAL);
    CHECK(ds == NULL);

    // Subsets.
    CHECK(nd_dataset_open(ctx, tu_path("tree"), NULL, &ds, NULL) == NT_OK);
    if (ds) {
        nd_dataset *sub = NULL;
        int idx[]       = {5, 0, 5};
        CHECK(nd_dataset_subset(ctx, ds, idx, 3, &sub) == NT_OK);
        if (sub) {
            CHECK(sub->n == 3 && !strcmp(sub->items[1].source, ds->items[0].source));
            CHECK(sub->class_counts[1] == 1 && sub->class_counts[2] == 2);
        }
        nd_dataset_free(sub);
        int badidx = ds->n;
        CHECK(nd_dataset_subset(ctx, ds, &badidx, 1, &sub) == NT_EINVAL);
        nd_dataset_free(ds);
    }
out:
    nt_ctx_free(ctx);
}

// ---- split ----

// The group of every item of ds under the default pattern ("" for its own group).
static char **keys_of(nt_ctx *ctx, const nd_dataset *ds)
{
    char **k = tu_xcalloc(ds->n, sizeof(char *));
    for (int i = 0; i < ds->n; i++) {
        char g[256];
        CHECK(nd_dataset_group(ctx, ND_KERMANY_GROUPS, base_of(ds->items[i].source), g, sizeof g) ==
              NT_OK);
        k[i] = strdup(g);
    }
    return k;
}

static void keys_free(char **k, int n)
{
    for (int i = 0; i < n; i++)
        free(k[i]);
    free(k);
}

// The largest patient group of class cls.
static int max_group(const nd_dataset *ds, char **keys, int cls)
{
    int best = 0;
    for (int i = 0; i < ds->n; i++) {
        if (ds->items[i].label != cls) continue;
        int cnt = 0;
        for (int j = 0; j < ds->n; j++)
            cnt += keys[i][0] ? !strcmp(keys[i], keys[j]) : i == j;
        if (cnt > best) best = cnt;
    }
    return best;
}

// Checks a split of ds: disjoint, complete, no group on both sides, each class within one group.
static void check_split(nt_ctx *ctx, const nd_dataset *ds, char **keys, const nd_dataset *tr,
                        const nd_dataset *va, double frac, int check_strat)
{
    CHECK(tr->n + va->n == ds->n);
    char **kt = keys_of(ctx, tr), **kv = keys_of(ctx, va);
    int straddle = 0, dup = 0;
    for (int i = 0; i < va->n; i++)
        for (int j = 0; j < tr->n; j++) {
            straddle += kv[i][0] && !strcmp(kv[i], kt[j]);
            dup += !strcmp(va->items[i].source, tr->items[j].source);
        }
    CHECK_MSG(straddle == 0, "%d train/validation pairs share a patient", straddle);
    CHECK_MSG(dup == 0, "%d files on both sides", dup);
    keys_free(kt, tr->n), keys_free(kv, va->n);
    for (int c = 0; c < ds->nclasses; c++) {
        CHECK(tr->class_counts[c] + va->class_counts[c] == ds->class_counts[c]);
        if (!check_strat) continue;
        int g       = max_group(ds, keys, c);
        double want = frac * ds->class_counts[c];
        CHECK_MSG(fabs(va->class_counts[c] - want) <= g,
                  "class %s: %d in validation, want %.1f +- %d", ds->class_names[c],
                  va->class_counts[c], want, g);
    }
}

static int same_items(const nd_dataset *a, const nd_dataset *b)
{
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->items[i].source, b->items[i].source)) return 0;
    return 1;
}

static void test_split(void)
{
    logbuf lb;
    nt_ctx *ctx = ctx_with_log(&lb);
    // The pattern on real Kermany names.
    struct {
        const char *name, *group;
    } names[] = {
        {"person1000_bacteria_2931.jpeg", "person1000"},
        {"person1000_virus_1681.jpeg", "person1000"},
        {"person3_bacteria_10.jpeg", "person3"},
        {"IM-0115-0001.jpeg", "IM-0115"},
        {"IM-0115-0002.jpeg", "IM-0115"},
        {"NORMAL2-IM-1438-0001.jpeg", "NORMAL2-IM-1438"},
        {"NORMAL2-IM-0012-0001.jpeg", "NORMAL2-IM-0012"},
        {"notes.jpeg", ""},
        {"xperson1_bacteria_1.jpeg", ""},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char g[64];
        CHECK(nd_dataset_group(ctx, ND_KERMANY_GROUPS, names[i].name, g, sizeof g) == NT_OK);
        CHECK_MSG(!strcmp(g, names[i].group), "%s: group \"%s\", want \"%s\"", names[i].name, g,
                  names[i].group);
    }
    char g[64];
    CHECK(nd_dataset_group(ctx, "^(pat[0-9]+", "pat1.jpg", g, sizeof g) == NT_EINVAL);
    CHECK(nd_dataset_group(ctx, "^([a-z]+)[0-9]", "abc12.png", g, sizeof g) == NT_OK &&
          !strcmp(g, "abc"));
    CHECK(nd_dataset_group(ctx, "^[a-z]+", "abc12.png", g, sizeof g) == NT_OK &&
          !strcmp(g, "abc")); // no capture group: the whole match

    // A Kermany-like tree of empty files: patients with 1..6 images.
    mkdir_p("k/NORMAL");
    mkdir_p("k/PNEUMONIA");
    int made = 0;
    for (int p = 0; p < 60; p++) {
        int cnt = 1 + (p * 7 + 3) % 6;
        for (int k = 0; k < cnt; k++) {
            char rel[128];
            if (p % 3 == 0)
                snprintf(rel, sizeof rel, "k/NORMAL/IM-%04d-%04d.jpeg", p, k + 1);
            else if (p % 3 == 1)
                snprintf(rel, sizeof rel, "k/NORMAL/NORMAL2-IM-%04d-%04d.jpeg", p, k + 1);
            else
                snprintf(rel, sizeof rel, "k/PNEUMONIA/person%d_%s_%d.jpeg", p,
                         k % 2 ? "virus" : "bacteria", 100 + k);
            touch(rel);
            made++;
        }
        // The same patient number under both naming schemes and in PNEUMONIA.
        if (p % 3 == 2 && p < 30) {
            char rel[128];
            snprintf(rel, sizeof rel, "k/PNEUMONIA/person%d_virus_%d.jpeg", p + 1000, 7);
            touch(rel);
            made++;
        }
    }
    touch("k/PNEUMONIA/unmatched.jpeg");
    made++;
    nd_dataset *ds = NULL, *tr = NULL, *va = NULL, *tr2 = NULL, *va2 = NULL;
    CHECK(nd_dataset_open(ctx, tu_path("k"), NULL, &ds, NULL) == NT_OK);
    if (!ds) goto out;
    CHECK(ds->n == made);
    char **keys          = keys_of(ctx, ds);
    const double fracs[] = {0.2, 0.1, 0.5, 0.05};
    for (size_t f = 0; f < sizeof(fracs) / sizeof(fracs[0]); f++) {
        for (uint64_t seed = 0; seed < 4; seed++) {
            CHECK(nd_dataset_split(ctx, ds, fracs[f], seed, NULL, &tr, &va) == NT_OK);
            if (!tr || !va) continue;
            check_split(ctx, ds, keys, tr, va, fracs[f], 1);
            CHECK(nd_dataset_split(ctx, ds, fracs[f], seed, ND_KERMANY_GROUPS, &tr2, &va2) ==
                  NT_OK);
            if (tr2 && va2)
                CHECK_MSG(same_items(va, va2) && same_items(tr, tr2), "seed %llu not deterministic",
                          (unsigned long long)seed);
            nd_dataset_free(tr2), nd_dataset_free(va2);
            // Another seed picks other patients.
            CHECK(nd_dataset_split(ctx, ds, fracs[f], seed + 100, NULL, &tr2, &va2) == NT_OK);
            if (va2)
                CHECK_MSG(!same_items(va, va2), "seeds %llu and %llu give the same split",
                          (unsigned long long)seed, (unsigned long long)seed + 100);
            nd_dataset_free(tr2), nd_dataset_free(va2);
            nd_dataset_free(tr), nd_dataset_free(va);
            tr = va = tr2 = va2 = NULL;
        }
    }
    CHECK(strstr(lb.text, "split: NORMAL:") != NULL && strstr(lb.text, "patient groups") != NULL);
    CHECK(nd_dataset_split(ctx, ds, 0, 1, NULL, &tr, &va) == NT_EINVAL);
    CHECK(nd_dataset_split(ctx, ds, 1, 1, NULL, &tr, &va) == NT_EINVAL);
    CHECK(nd_dataset_split(ctx, ds, 0.2, 1, "(", &tr, &va) == NT_EINVAL);
    CHECK(tr == NULL && va == NULL);
    keys_free(keys, ds->n);
    nd_dataset_free(ds);
    ds = NULL;

    // The shared training set, when it is here.
    const char *shared = "../shared/data/chest_xray/train";
    if (access(shared, R_OK) == 0 && nd_dataset_open(ctx, shared, NULL, &ds, NULL) == NT_OK) {
        CHECK(ds->n == 5216 && ds->class_counts[0] == 1341 && ds->class_counts[1] == 3875);
        lb.len = 0;
        CHECK(nd_dataset_split(ctx, ds, 0.2, 42, NULL, &tr, &va) == NT_OK);
        if (tr && va) {
            check_split(ctx, ds, NULL, tr, va, 0.2, 0);
            for (int c = 0; c < 2; c++)
                CHECK(fabs(va->class_counts[c] - 0.2 * ds->class_counts[c]) <= 10);
        }
        printf("ok   shared train split:\n%s", lb.text);
        nd_dataset_free(tr), nd_dataset_free(va);
        nd_dataset_free(ds);
    } else {
        printf("note: %s not here; the split on it is not tested\n", shared);
    }
out:
    nt_ctx_free(ctx);
}

// ---- loader ----

// Everything one epoch gave: per batch n, then idx, labels and x of the whole epoch.
typedef struct run_out {
    int nbatches, nimg;
    int sizes[64];
    int idx[256];
    float labels[256];
    float *x; // nimg * S*S*3
} run_out;

enum { S = 16, B = 4 };

static nt_status run_epoch(nd_loader *ld, int epoch, nt_tensor *x, run_out *r)
{
    memset(r, 0, sizeof(*r));
    r->x        = tu_zeros_f32(256 * S * S * 3);
    nt_status s = nd_loader_start_epoch(ld, epoch);
    while (s == NT_OK) {
        int n;
        s = nd_loader_next(ld, x, r->labels + r->nimg, r->idx + r->nimg, &n);
        if (s != NT_OK || n == 0) break;
        memcpy(r->x + (size_t)r->nimg * S * S * 3, x->data, sizeof(float) * n * S * S * 3);
        r->sizes[r->nbatches++] = n;
        r->nimg += n;
    }
    return s;
}

static int same_run(const run_out *a, const run_out *b)
{
    return a->nbatches == b->nbatches && a->nimg == b->nimg &&
           !memcmp(a->sizes, b->sizes, sizeof(int) * (size_t)a->nbatches) &&
           !memcmp(a->idx, b->idx, sizeof(int) * (size_t)a->nimg) &&
           !memcmp(a->labels, b->labels, sizeof(float) * (size_t)a->nimg) &&
           !memcmp(a->x, b->x, sizeof(float) * (size_t)a->nimg * S * S * 3);
}

// ---- S3 (the local server of tests/s3.sh) ----

// Starts tests/s3rver.js with bucket `bucket` on a free loopback port; 0 with *pid and *port, or
// -1 when node or the npm packages are missing (the S3 part is then skipped).
static int s3rver_start(const char *bucket, pid_t *pid, int *port)
{
    if (access("node_modules/@20minutes/s3rver/package.json", R_OK) != 0 ||
        system("command -v node >/dev/null 2>&1") != 0)
        return -1;
    const char *portfile = tu_path("s3rver.port");
    mkdir_p("s3rver");
    fflush(stdout), fflush(stderr); // or the child would write our buffered output again
    *pid = fork();
    if (*pid == 0) {
        FILE *devnull = freopen("/dev/null", "w", stdout);
        (void)devnull;
        execlp("node", "node", "--openssl-legacy-provider", "tests/s3rver.js", tu_path("s3rver"),
               portfile, bucket, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300 && *pid > 0; i++) { // up to 30 s on a slow machine
        size_t len;
        unsigned char *p = tu_slurp(portfile, &len);
        if (p) {
            p[len] = 0;
            *port  = (int)strtol((char *)p, NULL, 10);
            free(p);
            return 0;
        }
        int st;
        if (waitpid(*pid, &st, WNOHANG) == *pid) break;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK_MSG(0, "s3rver did not start (node --openssl-legacy-provider tests/s3rver.js)");
    if (*pid > 0) kill(*pid, SIGKILL), waitpid(*pid, NULL, 0);
    return -2;
}

static void s3rver_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

// The folder dataset ds served from S3: listing, order, and loader batches equal to `want`
// (the folder run of epoch 0 with options o).
static void test_s3(nt_ctx *ctx, const nd_dataset *ds, const nd_loader_opts *o, const run_out *want)
{
    pid_t pid;
    int port;
    int r = s3rver_start("pneumo-ds", &pid, &port);
    if (r == -1) {
        printf("note: node or node_modules missing (npm ci): S3 datasets not tested here\n");
        return;
    }
    if (r) return;
    // Only this test's settings, none of the machine's AWS configuration.
    const char *unset[] = {"AWS_PROFILE",      "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                           "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS"};
    for (size_t i = 0; i < sizeof(unset) / sizeof(unset[0]); i++)
        unsetenv(unset[i]);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1); // s3rver's default account
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    setenv("AWS_CONFIG_FILE", tu_path("no-aws-config"), 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", tu_path("no-aws-credentials"), 1);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
    nd_s3_opts so  = {0};
    so.endpoint    = endpoint;
    so.region      = "us-east-1";
    so.max_retries = 1;
    so.timeout_s   = 10;
    nd_s3 *s3      = NULL;
    CHECK_MSG(nd_s3_new(ctx, &so, &s3) == NT_OK, "%s", nt_ctx_errmsg(ctx));
    if (!s3) goto out;
    // The same files under s3://pneumo-ds/sets/ld/CLASS/NAME, plus objects that are not images.
    size_t rl = strlen(ds->root);
    for (int i = 0; i < ds->n; i++) {
        const char *src = ds->items[i].source;
        char key[512];
        snprintf(key, sizeof key, "sets/ld/%s", src + rl + 1);
        size_t len;
        unsigned char *buf = tu_slurp(src, &len);
        if (!buf) buf = (unsigned char *)strdup(""), len = 0; // removed after listing
        CHECK_MSG(nd_s3_put(s3, "pneumo-ds", key, buf, len, NULL) == NT_OK, "%s",
                  nt_ctx_errmsg(ctx));
        free(buf);
    }
    const char *extra[] = {"sets/ld/readme.txt", "sets/ld/NORMAL/", "sets/ld/NORMAL/notes.txt",
                           "sets/ld/.hidden/x.jpg", "sets/ldx/NORMAL/other.jpg"};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
        CHECK(nd_s3_put(s3, "pneumo-ds", extra[i], "x", 1, NULL) == NT_OK);
    nd_dataset *sd = NULL;
    int ignored    = -1;
    CHECK_MSG(nd_dataset_open(ctx, "s3://pneumo-ds/sets/ld", s3, &sd, &ignored) == NT_OK, "%s",
              nt_ctx_errmsg(ctx));
    if (!sd) goto out;
    CHECK(sd->n == ds->n && sd->nclasses == 2 && ignored == 3);
    for (int i = 0; i < sd->n && i < ds->n; i++) {
        char want_src[512];
        snprintf(want_src, sizeof want_src, "s3://pneumo-ds/sets/ld/%s",
                 ds->items[i].source + rl + 1);
        CHECK_MSG(!strcmp(sd->items[i].source, want_src), "s3 item %d: %s, want %s", i,
                  sd->items[i].source, want_src);
        CHECK(sd->items[i].label == ds->items[i].label && sd->items[i].size == ds->items[i].size);
    }
    // The loader reads s3:// items with one client per thread: the same batches as from files.
    nd_loader_opts so_l = *o;
    so_l.s3             = &so;
    so_l.threads        = 2;
    nd_loader *ld       = NULL;
    int64_t shp[4]      = {B, S, S, 3};
    nt_tensor x;
    CHECK(nt_tensor_new(ctx, 4, shp, &x) == NT_OK);
    CHECK(nd_loader_new(ctx, sd, &so_l, &ld) == NT_OK);
    run_out got;
    if (ld) {
        CHECK_MSG(run_epoch(ld, 0, &x, &got) == NT_OK, "%s", nt_ctx_errmsg(ctx));
        CHECK_MSG(same_run(&got, want), "S3 batches differ from the folder's");
        nd_loader_stats st;
        nd_loader_stats_get(ld, &st);
        CHECK(st.bad == 2);
        printf("ok   S3: %d items listed, %d images in %d batches equal to the folder's\n", sd->n,
               got.nimg, got.nbatches);
        free(got.x);
    }
    nd_loader_free(ld);
    // A thread that cannot open its S3 client stops the run with that client's message.
    nd_s3_opts bad = so;
    bad.profile    = "no-such-profile";
    so_l.s3        = &bad;
    CHECK(nd_loader_new(ctx, sd, &so_l, &ld) == NT_OK);
    if (ld) {
        nt_status st = run_epoch(ld, 0, &x, &got);
        CHECK_MSG(st == NT_EINVAL && strstr(nt_ctx_errmsg(ctx), "no-such-profile"), "%s: %s",
                  nt_status_str(st), nt_ctx_errmsg(ctx));
        free(got.x);
    }
    nd_loader_free(ld);
    nt_tensor_free(&x);
    nd_dataset_free(sd);
    // A bucket that does not exist, and no S3 client.
    sd = NULL;
    CHECK(nd_dataset_open(ctx, "s3://no-such-bucket/x/", s3, &sd, NULL) == NT_EIO);
    CHECK(strstr(nt_ctx_errmsg(ctx), "NoSuchBucket") != NULL);
    CHECK(nd_dataset_open(ctx, "s3://pneumo-ds/nothing/", s3, &sd, NULL) == NT_EFORMAT);
    CHECK(sd == NULL);
out:
    nd_s3_free(s3);
    s3rver_stop(pid);
}

static void test_loader(void)
{
    logbuf lb;
    nt_ctx *ctx = ctx_with_log(&lb);
    mkdir_p("ld/NORMAL");
    mkdir_p("ld/PNEUMONIA");
    int ngood = 0;
    for (int i = 0; i < 23; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "ld/%s/img%02d.jpg", i % 3 ? "PNEUMONIA" : "NORMAL", i);
        write_jpeg(rel, 20 + (i * 7) % 41, 18 + (i * 11) % 37, i);
        ngood++;
    }
    touch("ld/NORMAL/empty.jpg"); // zero bytes
    size_t tl;
    unsigned char *tb = tu_slurp("tests/corpus/bad_truncated.png", &tl);
    CHECK_MSG(tb != NULL, "tests/corpus/bad_truncated.png missing");
    if (tb) tu_spit(tu_path("ld/PNEUMONIA/truncated.png"), tb, tl);
    free(tb);
    nd_dataset *ds = NULL;
    CHECK(nd_dataset_open(ctx, tu_path("ld"), NULL, &ds, NULL) == NT_OK);
    if (!ds) goto out;
    CHECK(ds->n == 25);

    int64_t shp[4] = {B, S, S, 3};
    nt_tensor x;
    CHECK(nt_tensor_new(ctx, 4, shp, &x) == NT_OK);
    nd_loader_opts o;
    nd_loader_opts_default(&o);
    o.img_size     = S;
    o.batch        = B;
    o.seed         = 7;
    o.max_bad_frac = 0.5;
    o.preprocess   = NT_PRE_CAFFE;

    // 1 thread, then 3: the same batches bit for bit, in both epochs.
    run_out r1[2], r3[2];
    nd_loader *ld = NULL;
    o.threads     = 1;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    if (!ld) goto out;
    CHECK(nd_loader_batches(ld) == 7);
    int dummy;
    CHECK(nd_loader_next(ld, &x, NULL, NULL, &dummy) == NT_EINVAL); // no epoch yet
    nd_loader_stats st;
    for (int e = 0; e < 2; e++) {
        CHECK_MSG(run_epoch(ld, e, &x, &r1[e]) == NT_OK, "%s", nt_ctx_errmsg(ctx));
        nd_loader_stats_get(ld, &st);
        // Every good item exactly once; bad ones never.
        int seen[32] = {0};
        for (int i = 0; i < r1[e].nimg; i++) {
            seen[r1[e].idx[i]]++;
            CHECK(r1[e].labels[i] == (float)ds->items[r1[e].idx[i]].label);
        }
        for (int i = 0; i < ds->n; i++) {
            int bad = strstr(ds->items[i].source, "empty") || strstr(ds->items[i].source, "trunc");
            CHECK_MSG(seen[i] == !bad, "epoch %d: item %d seen %d times", e, i, seen[i]);
        }
        CHECK(r1[e].nimg == ngood);
        if (e == 0)
            CHECK_MSG(st.cache_hits == 0 && st.bad == 2, "hits %lld bad %lld",
                      (long long)st.cache_hits, (long long)st.bad);
        if (e == 1)
            CHECK_MSG(st.cache_hits == ngood, "epoch 2: %lld cache hits, want %d",
                      (long long)st.cache_hits, ngood);
    }
    CHECK(st.loaded == 2 * ngood && st.bad == 2);
    CHECK_MSG(memcmp(r1[0].idx, r1[1].idx, sizeof(int) * ngood) != 0, "epochs in the same order");
    // Bad files are logged once, with their reasons.
    CHECK(lb.nwarn == 2);
    CHECK(strstr(lb.text, "empty.jpg: expected a JPEG or PNG file, got an empty file") != NULL);
    CHECK(strstr(lb.text, "truncated.png: corrupt PNG (the file ends early)") != NULL);
    printf("ok   loader log:\n%s", lb.text);
    // The content: preprocess(decode_resized(file)).
    {
        int i = r1[0].idx[5];
        nd_image im;
        CHECK(nd_image_load(ctx, ds->items[i].source, &im) == NT_OK);
        nd_image small;
        uint8_t *buf;
        size_t len;
        CHECK(nd_file_read(ctx, ds->items[i].source, 0, &buf, &len) == NT_OK);
        CHECK(nd_image_decode_resized(ctx, buf, len, "x", S, S, ND_RESIZE_AREA, &small) == NT_OK);
        float *want = tu_zeros_f32(S * S * 3);
        if (small.rgb) nt_preprocess_apply(NT_PRE_CAFFE, small.rgb, S * S, want);
        CHECK_CLOSE("loader_x_vs_direct", r1[0].x + 5 * S * S * 3, want, S * S * 3, 0, 0);
        free(want), free(buf);
        nd_image_free(&im), nd_image_free(&small);
    }
    // Errors.
    nt_tensor xs = x;
    xs.shape[1]  = S + 1;
    CHECK(nd_loader_next(ld, &xs, NULL, NULL, &dummy) == NT_EINVAL);
    CHECK(strstr(nt_ctx_errmsg(ctx), "expected [4,16,16,3]") != NULL);
    CHECK(nd_loader_start_epoch(ld, -1) == NT_EINVAL);
    // Restarting in the middle of an epoch drops what was made and starts over.
    CHECK(nd_loader_start_epoch(ld, 0) == NT_OK);
    CHECK(nd_loader_next(ld, &x, NULL, NULL, &dummy) == NT_OK && dummy > 0);
    run_out again;
    CHECK(run_epoch(ld, 0, &x, &again) == NT_OK);
    CHECK_MSG(same_run(&again, &r1[0]), "epoch 0 again differs");
    free(again.x);
    nd_loader_free(ld);

    o.threads  = 3;
    o.prefetch = 5;
    lb.len     = 0;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    for (int e = 0; ld && e < 2; e++) {
        CHECK(run_epoch(ld, e, &x, &r3[e]) == NT_OK);
        CHECK_MSG(same_run(&r1[e], &r3[e]), "epoch %d: 1 and 3 threads differ", e);
    }
    // Epochs taken out of order give the same batches as well.
    CHECK(run_epoch(ld, 0, &x, &again) == NT_OK && same_run(&again, &r1[0]));
    free(again.x);
    nd_loader_free(ld);

    // Without the cache: the same content, no hits.
    o.cache   = 0;
    o.threads = 2;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    CHECK(run_epoch(ld, 1, &x, &again) == NT_OK && same_run(&again, &r1[1]));
    nd_loader_stats_get(ld, &st);
    CHECK(st.cache_hits == 0);
    free(again.x);
    nd_loader_free(ld);
    o.cache = 1;

    // In dataset order without shuffling.
    o.shuffle = 0;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    CHECK(run_epoch(ld, 3, &x, &again) == NT_OK);
    for (int i = 1; i < again.nimg; i++)
        CHECK(again.idx[i] > again.idx[i - 1]);
    free(again.x);
    nd_loader_free(ld);
    o.shuffle = 1;

    // With augmentation: deterministic whatever the thread count, and different from without.
    nd_aug_cfg_default(&o.aug);
    o.aug.horizontal_flip   = 1;
    o.aug.width_shift_range = 2;
    o.aug.rotation_range    = 10;
    run_out a1, a3;
    o.threads = 1;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    CHECK(run_epoch(ld, 1, &x, &a1) == NT_OK);
    nd_loader_free(ld);
    o.threads = 3;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    CHECK(run_epoch(ld, 1, &x, &a3) == NT_OK);
    nd_loader_free(ld);
    CHECK_MSG(same_run(&a1, &a3), "augmented: 1 and 3 threads differ");
    CHECK(!memcmp(a1.idx, r1[1].idx, sizeof(int) * ngood)); // the order does not change
    CHECK(memcmp(a1.x, r1[1].x, sizeof(float) * ngood * S * S * 3) != 0);
    free(a1.x), free(a3.x);
    nd_aug_cfg_default(&o.aug);

    // The same tree from S3.
    test_s3(ctx, ds, &o, &r1[0]);

    // Too many bad files: 2 of 25 is over 5%; the error names the file and the reason.
    o.max_bad_frac = 0.05;
    o.threads      = 2;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    run_out rb;
    nt_status s = run_epoch(ld, 0, &x, &rb);
    CHECK_MSG(s == NT_EFORMAT, "max_bad_frac: got %s", nt_status_str(s));
    CHECK(strstr(nt_ctx_errmsg(ctx), "2 of 25 images could not be loaded") != NULL);
    CHECK(strstr(nt_ctx_errmsg(ctx), "--max-bad-frac") != NULL);
    printf("ok   %s\n", nt_ctx_errmsg(ctx));
    free(rb.x);
    nd_loader_free(ld);
    // 1 of 25 allowed at 5%: a file that disappears after listing is one bad item.
    o.max_bad_frac = 0.1;
    CHECK(unlink(tu_path("ld/PNEUMONIA/img01.jpg")) == 0);
    lb.len = 0;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_OK);
    CHECK(run_epoch(ld, 0, &x, &rb) == NT_EFORMAT); // 3 of 25 > 10%
    CHECK(strstr(lb.text, "img01.jpg: cannot open: No such file or directory") != NULL);
    free(rb.x);
    nd_loader_free(ld);

    // Bad options are named.
    o.threads = 0;
    CHECK(nd_loader_new(ctx, ds, &o, &ld) == NT_EINVAL && ld == NULL);
    CHECK(strstr(nt_ctx_errmsg(ctx), "threads") != NULL);
    free(r1[0].x), free(r1[1].x), free(r3[0].x), free(r3[1].x);
    nt_tensor_free(&x);
out:
    nd_dataset_free(ds);
    nt_ctx_free(ctx);
}

int main(void)
{
    if (!tu_tmpdir_new("dataset")) return 1;
    test_listing();
    test_split();
    test_loader();
    tu_tmpdir_free();
    return check_summary("test_dataset");
}
