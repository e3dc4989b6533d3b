/*
 * s3.c: the S3 client of data/s3.h: libcurl signs (CURLOPT_AWS_SIGV4), expat reads the XML
 * answers, OpenSSL's libcrypto hashes PUT bodies. With curl 7.88 (Debian 12) the caller must
 * set x-amz-content-sha256 (curl then signs that value as the payload hash), pre-sort and encode
 * the query, encode the key per path segment, and never pass a header it does not send: curl
 * signs every CURLOPT_HTTPHEADER entry, so "Expect:" would break the signature. Not here: TLS
 * settings beyond curl's defaults, multipart uploads. Tests: tests/test_s3.c via tests/s3.sh.
 */
#include "data/s3.h"

#include <curl/curl.h>
#include <expat.h>
#include <openssl/evp.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S3_PAGE_KEYS    1000      // ListObjectsV2's maximum page
#define S3_RETRIES      5         // retries after the first try (botocore's legacy mode: 5 tries)
#define S3_TIMEOUT_S    60.0      // botocore's connect and read timeouts
#define S3_BACKOFF_BASE 0.5       // seconds
#define S3_BACKOFF_CAP  20.0      // seconds (the AWS SDKs' standard-mode cap)
#define S3_MSG_MAX      200       // bytes of a server's <Message> kept in our one-line errors
#define S3_CONFIG_MAX   (1 << 20) // an AWS config file larger than this is refused
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct nd_s3 {
    nt_ctx *ctx;
    CURL *curl;
    char *endpoint; // scheme://host[:port][/path], no trailing slash
    char *region;
    char *sigv4;                 // "aws:amz:REGION:s3"
    char *akid, *secret, *token; // token may be NULL
    char *cred_src;
    int max_retries;
    double timeout_s, retry_base_s;
    uint64_t rng; // jitter only: deliberately not reproducible, so clients do not retry in step
    char errbuf[CURL_ERROR_SIZE];
};

// ---- strings ----

// A growable NUL-terminated buffer. After a failed allocation it stays failed (oom set) and
// keeps the size it wanted, so that the caller can report it once.
typedef struct sbuf {
    char *p;
    size_t n, cap;
    size_t want; // bytes asked for when oom
    int oom;
} sbuf;

static int sb_reserve(sbuf *b, size_t extra)
{
    if (b->oom) return -1;
    if (extra > SIZE_MAX - b->n - 1) {
        b->oom  = 1;
        b->want = SIZE_MAX;
        return -1;
    }
    size_t need = b->n + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom  = 1;
        b->want = cap;
        return -1;
    }
    b->p   = p;
    b->cap = cap;
    return 0;
}

static void sb_add(sbuf *b, const void *s, size_t len)
{
    if (sb_reserve(b, len)) return;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || sb_reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static void sb_free(sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static const char *sb_str(const sbuf *b)
{
    return b->p ? b->p : "";
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

// AWS's URI encoding: unreserved bytes kept, every other byte as %XX in upper case; '/' kept
// when keep_slash (object keys are encoded per path segment).
static void sb_encode(sbuf *b, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_unreserved(*p) || (keep_slash && *p == '/')) {
            sb_add(b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            sb_add(b, e, 3);
        }
    }
}

static char *xstrdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p  = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

// Frees a string that held a secret after overwriting it.
static void free_secret(char *s)
{
    if (!s) return;
    volatile char *v = s;
    while (*v)
        *v++ = 0;
    free(s);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

// An environment variable, or NULL when it is unset or empty (as the AWS tools treat both).
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int is_true(const char *v)
{
    return v && strcasecmp(v, "true") == 0;
}

// Bucket names as S3 accepted them (legacy ones included): letters, digits, '.', '-', '_'.
// Anything else could also change the meaning of the URL we build.
static int bucket_ok(const char *b, size_t len)
{
    if (len == 0 || len > 255) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---- AWS config files ----

// One "key = value" of an INI file, in its section. A nested block (`s3 =` followed by indented
// `endpoint_url = ...` lines, as in [services NAME]) becomes the key "s3.endpoint_url".
typedef struct ini_kv {
    char *sec, *key, *val;
} ini_kv;

typedef struct ini {
    char *path; // NULL when there is no such file
    ini_kv *kv;
    size_t n, cap;
} ini;

static void ini_free(ini *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->kv[i].sec);
        free(f->kv[i].key);
        free_secret(f->kv[i].val);
    }
    free(f->kv);
    free(f->path);
    memset(f, 0, sizeof(*f));
}

static int ini_add(ini *f, const char *sec, const char *key, const char *val)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 32;
        ini_kv *kv = realloc(f->kv, cap * sizeof(*kv));
        if (!kv) return -1;
        f->kv  = kv;
        f->cap = cap;
    }
    ini_kv *e = &f->kv[f->n];
    e->sec    = xstrdup(sec);
    e->key    = xstrdup(key);
    e->val    = xstrdup(val);
    if (!e->sec || !e->key || !e->val) {
        free(e->sec);
        free(e->key);
        free(e->val);
        return -1;
    }
    f->n++;
    return 0;
}

// The first value of key in section sec, or NULL.
static const char *ini_get(const ini *f, const char *sec, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->kv[i].sec, sec) == 0 && strcmp(f->kv[i].key, key) == 0) return f->kv[i].val;
    return NULL;
}

static int ini_has_section(const ini *f, const char *sec)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->kv[i].sec, sec) == 0) return 1;
    return 0;
}

// Parses text the way botocore's ConfigParser does for these files: [section] headers,
// key = value (or key: value), full-line comments (# or ;), lower-cased keys, and one level of
// nesting through indented lines below a key with an empty value. Lines outside a section and
// lines without a delimiter are ignored. Returns -1 on out of memory.
static int ini_parse(ini *f, char *text)
{
    char sec[256] = "", parent[128] = "";
    int have_sec = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        int indented = line[0] == ' ' || line[0] == '\t';
        char *s      = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[' && !indented) {
            char *end = strrchr(s, ']');
            if (!end) continue;
            *end = 0;
            snprintf(sec, sizeof(sec), "%s", trim(s + 1));
            // "[profile   dev]" is "[profile dev]"
            if (strncmp(sec, "profile", 7) == 0 && (sec[7] == ' ' || sec[7] == '\t')) {
                char *name = trim(sec + 8);
                memmove(sec + 8, name, strlen(name) + 1);
                sec[7] = ' ';
            }
            have_sec  = 1;
            parent[0] = 0;
            continue;
        }
        size_t d = strcspn(s, "=:");
        if (!s[d]) continue;
        s[d]      = 0;
        char *key = trim(s), *val = trim(s + d + 1);
        for (char *k = key; *k; k++)
            if (*k >= 'A' && *k <= 'Z') *k = (char)(*k - 'A' + 'a');
        char full[256];
        if (indented && parent[0]) {
            snprintf(full, sizeof(full), "%s.%s", parent, key);
        } else {
            snprintf(full, sizeof(full), "%s", key);
            if (*val)
                parent[0] = 0;
            else
                snprintf(parent, sizeof(parent), "%s", key);
        }
        if (have_sec && ini_add(f, sec, full, val)) return -1;
    }
    return 0;
}

// Loads path (a leading "~/" is $HOME) into f. A missing file is no error (f->path stays NULL).
static nt_status ini_load(nt_ctx *ctx, const char *path, ini *f)
{
    memset(f, 0, sizeof(*f));
    if (!path) return NT_OK;
    sbuf p = {0};
    if (strncmp(path, "~/", 2) == 0) {
        const char *home = env("HOME");
        if (!home) return NT_OK;
        sb_printf(&p, "%s/%s", home, path + 2);
    } else {
        sb_puts(&p, path);
    }
    if (p.oom) return nt_ctx_seterr(ctx, NT_ENOMEM, "s3: cannot allocate %zu bytes", p.want);
    FILE *fp = fopen(p.p, "rb");
    if (!fp) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) {
            sb_free(&p);
            return NT_OK;
        }
        nt_status s =
            nt_ctx_seterr(ctx, NT_EIO, "s3: cannot read AWS config file %s: %s", p.p, strerror(e));
        sb_free(&p);
        return s;
    }
    sbuf text = {0};
    char chunk[4096];
    size_t k;
    while ((k = fread(chunk, 1, sizeof(chunk), fp)) > 0 && text.n <= S3_CONFIG_MAX)
        sb_add(&text, chunk, k);
    int rerr = ferror(fp);
    fclose(fp);
    nt_status s = NT_OK;
    if (rerr)
        s = nt_ctx_seterr(ctx, NT_EIO, "s3: cannot read AWS config file %s: read error", p.p);
    else if (text.n > S3_CONFIG_MAX)
        s = nt_ctx_seterr(ctx, NT_EINVAL, "s3: AWS config file %s is over %d bytes", p.p,
                          S3_CONFIG_MAX);
    else if (text.oom || (text.p && ini_parse(f, text.p)))
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "s3: out of memory reading %s", p.p);
    if (text.p) memset(text.p, 0, text.n); // it may hold secrets
    sb_free(&text);
    if (s) {
        ini_free(f);
        sb_free(&p);
        return s;
    }
    f->path = p.p; // taken
    return NT_OK;
}

// ---- configuration ----

typedef struct s3_conf {
    ini cred, cfg;
    char cfg_sec[300]; // the profile's section in the config file
    const char *profile;
} s3_conf;

// A setting of the profile in the config file, or NULL.
static const char *conf_get(const s3_conf *c, const char *key)
{
    const char *v = ini_get(&c->cfg, c->cfg_sec, key);
    if (!v && strcmp(c->profile, "default") == 0) v = ini_get(&c->cfg, "profile default", key);
    return v;
}

static nt_status s3_endpoint_set(nd_s3 *s3, const char *ep, const char *from)
{
    if (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)
        return nt_ctx_seterr(s3->ctx, NT_EINVAL,
                             "s3: endpoint \"%s\" (%s) must start with http:// or https://", ep,
                             from);
    const char *host = strstr(ep, "://") + 3;
    if (!*host || *host == '/' || strpbrk(ep, "?# \t"))
        return nt_ctx_seterr(s3->ctx, NT_EINVAL,
                             "s3: endpoint \"%s\" (%s) is not a URL like http://HOST:PORT", ep,
                             from);
    if (!(s3->endpoint = xstrdup(ep)))
        return nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
    size_t n = strlen(s3->endpoint);
    while (n && s3->endpoint[n - 1] == '/')
        s3->endpoint[--n] = 0;
    return NT_OK;
}

static nt_status s3_resolve_endpoint(nd_s3 *s3, const nd_s3_opts *o, const s3_conf *c)
{
    if (o->endpoint && *o->endpoint) return s3_endpoint_set(s3, o->endpoint, "option");
    int ignore = is_true(env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")) ||
                 (!env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") &&
                  is_true(conf_get(c, "ignore_configured_endpoint_urls")));
    if (!ignore) {
        const char *v;
        if ((v = env("AWS_ENDPOINT_URL_S3"))) return s3_endpoint_set(s3, v, "AWS_ENDPOINT_URL_S3");
        if ((v = env("AWS_ENDPOINT_URL"))) return s3_endpoint_set(s3, v, "AWS_ENDPOINT_URL");
        const char *svc = conf_get(c, "services");
        if (svc) {
            char sec[300];
            snprintf(sec, sizeof(sec), "services %s", svc);
            if ((v = ini_get(&c->cfg, sec, "s3.endpoint_url")) && *v)
                return s3_endpoint_set(s3, v, "services s3 endpoint_url in the AWS config file");
        }
        if ((v = conf_get(c, "endpoint_url")) && *v)
            return s3_endpoint_set(s3, v, "endpoint_url in the AWS config file");
    }
    char ep[300];
    snprintf(ep, sizeof(ep), "https://s3.%s.amazonaws.com%s", s3->region,
             strncmp(s3->region, "cn-", 3) == 0 ? ".cn" : "");
    return s3_endpoint_set(s3, ep, "default for the region");
}

static nt_status s3_resolve_region(nd_s3 *s3, const nd_s3_opts *o, const s3_conf *c)
{
    const char *r = o->region && *o->region ? o->region : env("AWS_REGION");
    if (!r) r = env("AWS_DEFAULT_REGION");
    if (!r) r = conf_get(c, "region");
    if (!r || !*r) r = "us-east-1";
    size_t n = strlen(r);
    // The region goes into curl's "aws:amz:REGION:s3", so no ':' (or anything odd) may pass.
    int ok = n > 0 && n < 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = (r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '-';
    if (!ok)
        return nt_ctx_seterr(s3->ctx, NT_EINVAL,
                             "s3: region \"%s\" is not a region name like us-east-1", r);
    sbuf sig = {0};
    sb_printf(&sig, "aws:amz:%s:s3", r);
    s3->region = xstrdup(r);
    s3->sigv4  = sig.p;
    if (!s3->region || !s3->sigv4) return nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
    return NT_OK;
}

static nt_status s3_resolve_retries(nd_s3 *s3, const nd_s3_opts *o, const s3_conf *c)
{
    if (o->max_retries) {
        s3->max_retries = o->max_retries < 0 ? 0 : o->max_retries;
        return NT_OK;
    }
    const char *from = "AWS_MAX_ATTEMPTS", *v = env("AWS_MAX_ATTEMPTS");
    if (!v) {
        from = "max_attempts in the AWS config file";
        v    = conf_get(c, "max_attempts");
    }
    s3->max_retries = S3_RETRIES;
    if (!v) return NT_OK;
    char *end;
    errno  = 0;
    long a = strtol(v, &end, 10);
    if (errno || end == v || *end || a < 1 || a > 100)
        return nt_ctx_seterr(s3->ctx, NT_EINVAL,
                             "s3: %s expects a number of tries in 1..100, got \"%s\"", from, v);
    s3->max_retries = (int)a - 1;
    return NT_OK;
}

static nt_status s3_set_creds(nd_s3 *s3, const char *akid, const char *secret, const char *token,
                              const char *src)
{
    s3->akid     = xstrdup(akid);
    s3->secret   = xstrdup(secret);
    s3->token    = token && *token ? xstrdup(token) : NULL;
    s3->cred_src = xstrdup(src);
    if (!s3->akid || !s3->secret || !s3->cred_src || (token && *token && !s3->token))
        return nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
    return NT_OK;
}

// Keys of a profile in one file: 1 found, 0 none, -1 half a pair (message set).
static int profile_keys(nd_s3 *s3, const ini *f, const char *sec, const char *profile,
                        const char **akid, const char **secret, const char **token)
{
    *akid   = ini_get(f, sec, "aws_access_key_id");
    *secret = ini_get(f, sec, "aws_secret_access_key");
    *token  = ini_get(f, sec, "aws_session_token");
    if ((*akid && **akid) && (*secret && **secret)) return 1;
    if ((*akid && **akid) || (*secret && **secret)) {
        nt_ctx_seterr(s3->ctx, NT_EINVAL, "s3: profile \"%s\" in %s has %s but not %s", profile,
                      f->path, *akid && **akid ? "aws_access_key_id" : "aws_secret_access_key",
                      *akid && **akid ? "aws_secret_access_key" : "aws_access_key_id");
        return -1;
    }
    return 0;
}

static nt_status s3_resolve_creds(nd_s3 *s3, int profile_named, const s3_conf *c)
{
    const char *ek = env("AWS_ACCESS_KEY_ID"), *es = env("AWS_SECRET_ACCESS_KEY");
    if (!profile_named) {
        if (ek && es)
            return s3_set_creds(s3, ek, es, env("AWS_SESSION_TOKEN"),
                                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY");
        if (ek || es)
            return nt_ctx_seterr(s3->ctx, NT_EINVAL, "s3: %s is set but %s is not",
                                 ek ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                                 ek ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    }
    const char *k, *s, *t;
    char src[600];
    int r = profile_keys(s3, &c->cred, c->profile, c->profile, &k, &s, &t);
    if (r < 0) return NT_EINVAL;
    if (r) {
        snprintf(src, sizeof(src), "profile \"%s\" in %s", c->profile, c->cred.path);
        return s3_set_creds(s3, k, s, t, src);
    }
    r = profile_keys(s3, &c->cfg, c->cfg_sec, c->profile, &k, &s, &t);
    if (r < 0) return NT_EINVAL;
    if (r) {
        snprintf(src, sizeof(src), "profile \"%s\" in %s", c->profile, c->cfg.path);
        return s3_set_creds(s3, k, s, t, src);
    }
    static const char *unsupported[] = {"role_arn", "credential_process", "sso_start_url",
                                        "sso_session", "web_identity_token_file"};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(*unsupported); i++)
        if (conf_get(c, unsupported[i]))
            return nt_ctx_seterr(
                s3->ctx, NT_EINVAL,
                "s3: profile \"%s\" gets its credentials through %s, which pneumo does not "
                "support; export them instead: eval \"$(aws configure export-credentials "
                "--profile %s --format env)\"",
                c->profile, unsupported[i], c->profile);
    return nt_ctx_seterr(s3->ctx, NT_EINVAL,
                         "s3: no AWS credentials: %sprofile \"%s\" has none in %s or %s (set "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `aws configure`)",
                         profile_named ? "" : "AWS_ACCESS_KEY_ID is not set and ", c->profile,
                         c->cred.path ? c->cred.path : "the credentials file (none)",
                         c->cfg.path ? c->cfg.path : "the config file (none)");
}

static pthread_once_t s3_curl_once = PTHREAD_ONCE_INIT;
static CURLcode s3_curl_init_rc    = CURLE_FAILED_INIT;

static void s3_curl_init(void)
{
    s3_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

nt_status nd_s3_new(nt_ctx *ctx, const nd_s3_opts *opts, nd_s3 **out)
{
    if (!out) return nt_ctx_seterr(ctx, NT_EINVAL, "s3: out is NULL");
    *out = NULL;
    pthread_once(&s3_curl_once, s3_curl_init);
    if (s3_curl_init_rc != CURLE_OK)
        return nt_ctx_seterr(ctx, NT_EIO, "s3: curl_global_init failed: %s",
                             curl_easy_strerror(s3_curl_init_rc));
    nd_s3_opts o = {0};
    if (opts) o = *opts;
    nd_s3 *s3 = calloc(1, sizeof(*s3));
    if (!s3) return nt_ctx_seterr(ctx, NT_ENOMEM, "s3: cannot allocate %zu bytes", sizeof(*s3));
    s3->ctx          = ctx;
    s3->timeout_s    = o.timeout_s > 0 ? o.timeout_s : S3_TIMEOUT_S;
    s3->retry_base_s = o.retry_base_s > 0 ? o.retry_base_s : S3_BACKOFF_BASE;
    s3->rng = (uint64_t)(now_s() * 1e9) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s3;

    s3_conf c               = {0};
    int named               = o.profile && *o.profile;
    const char *env_profile = env("AWS_PROFILE");
    if (!env_profile) env_profile = env("AWS_DEFAULT_PROFILE");
    c.profile = named ? o.profile : env_profile ? env_profile : "default";
    if (strcmp(c.profile, "default") == 0)
        snprintf(c.cfg_sec, sizeof(c.cfg_sec), "default");
    else
        snprintf(c.cfg_sec, sizeof(c.cfg_sec), "profile %s", c.profile);
    const char *cred_path = env("AWS_SHARED_CREDENTIALS_FILE");
    const char *cfg_path  = env("AWS_CONFIG_FILE");
    nt_status s           = ini_load(ctx, cred_path ? cred_path : "~/.aws/credentials", &c.cred);
    if (!s) s = ini_load(ctx, cfg_path ? cfg_path : "~/.aws/config", &c.cfg);
    // A profile asked for by name (option or AWS_PROFILE) must exist, as in the AWS CLI.
    if (!s && (named || env_profile) && !ini_has_section(&c.cred, c.profile) &&
        !ini_has_section(&c.cfg, c.cfg_sec) &&
        !(strcmp(c.profile, "default") == 0 && ini_has_section(&c.cfg, "profile default")))
        s = nt_ctx_seterr(ctx, NT_EINVAL, "s3: AWS profile \"%s\" (%s) not found in %s or %s",
                          c.profile,
                          named                ? "option"
                          : env("AWS_PROFILE") ? "AWS_PROFILE"
                                               : "AWS_DEFAULT_PROFILE",
                          c.cred.path ? c.cred.path : "the credentials file (none)",
                          c.cfg.path ? c.cfg.path : "the config file (none)");
    if (!s) s = s3_resolve_region(s3, &o, &c);
    if (!s) s = s3_resolve_endpoint(s3, &o, &c);
    if (!s) s = s3_resolve_retries(s3, &o, &c);
    if (!s) s = s3_resolve_creds(s3, named, &c);
    if (!s && !(s3->curl = curl_easy_init()))
        s = nt_ctx_seterr(ctx, NT_ENOMEM, "s3: curl_easy_init failed");
    ini_free(&c.cred);
    ini_free(&c.cfg);
    if (s) {
        nd_s3_free(s3);
        return s;
    }
    nt_ctx_log(ctx, NT_LOG_DEBUG, "s3: endpoint %s, region %s, credentials from %s, %d retries",
               s3->endpoint, s3->region, s3->cred_src, s3->max_retries);
    *out = s3;
    return NT_OK;
}

void nd_s3_free(nd_s3 *s3)
{
    if (!s3) return;
    if (s3->curl) curl_easy_cleanup(s3->curl);
    free(s3->endpoint);
    free(s3->region);
    free(s3->sigv4);
    free_secret(s3->akid);
    free_secret(s3->secret);
    free_secret(s3->token);
    free(s3->cred_src);
    free(s3);
}

const char *nd_s3_endpoint(const nd_s3 *s3)
{
    return s3 ? s3->endpoint : "";
}

const char *nd_s3_region(const nd_s3 *s3)
{
    return s3 ? s3->region : "";
}

const char *nd_s3_credentials_source(const nd_s3 *s3)
{
    return s3 ? s3->cred_src : "";
}

nt_status nd_s3_parse_uri(nt_ctx *ctx, const char *uri, char **bucket, char **prefix)
{
    if (!bucket || !prefix) return nt_ctx_seterr(ctx, NT_EINVAL, "s3: bucket/prefix is NULL");
    *bucket = *prefix = NULL;
    if (!uri || strncmp(uri, "s3://", 5) != 0)
        return nt_ctx_seterr(ctx, NT_EINVAL,
                             "s3: expected a URI like s3://BUCKET/PREFIX, got \"%s\"",
                             uri ? uri : "(null)");
    const char *b = uri + 5, *slash = strchr(b, '/');
    size_t blen = slash ? (size_t)(slash - b) : strlen(b);
    if (blen == 0)
        return nt_ctx_seterr(ctx, NT_EINVAL,
                             "s3: \"%s\" has no bucket name (expected s3://BUCKET/PREFIX)", uri);
    if (!bucket_ok(b, blen))
        return nt_ctx_seterr(ctx, NT_EINVAL,
                             "s3: \"%s\": a bucket name holds 1 to 255 letters, digits, '.', '-' "
                             "or '_'",
                             uri);
    *bucket = malloc(blen + 1);
    *prefix = xstrdup(slash ? slash + 1 : "");
    if (!*bucket || !*prefix) {
        free(*bucket);
        free(*prefix);
        *bucket = *prefix = NULL;
        return nt_ctx_seterr(ctx, NT_ENOMEM, "s3: out of memory");
    }
    memcpy(*bucket, b, blen);
    (*bucket)[blen] = 0;
    return NT_OK;
}

// ---- XML answers ----

// S3's <Error> body: the fields our messages use. Never StringToSign & co.
typedef struct s3_err {
    char code[64];
    char msg[S3_MSG_MAX + 1];
    char region[64];
} s3_err;

typedef struct err_parse {
    int depth;
    int in_error;
    char name[32];
    sbuf text;
    s3_err *e;
} err_parse;

static void XMLCALL err_start(void *u, const XML_Char *name, const XML_Char **attr)
{
    err_parse *p = u;
    p->depth++;
    if (p->depth == 1) p->in_error = strcmp(name, "Error") == 0;
    if (p->depth == 2) {
        snprintf(p->name, sizeof(p->name), "%s", name);
        p->text.n = 0;
        if (p->text.p) p->text.p[0] = 0;
    }
}

static void XMLCALL err_end(void *u, const XML_Char *name)
{
    err_parse *p = u;
    if (p->depth == 2 && p->in_error) {
        const char *t = sb_str(&p->text);
        if (strcmp(name, "Code") == 0) snprintf(p->e->code, sizeof(p->e->code), "%s", t);
        if (strcmp(name, "Message") == 0) snprintf(p->e->msg, sizeof(p->e->msg), "%s", t);
        if (strcmp(name, "Region") == 0) snprintf(p->e->region, sizeof(p->e->region), "%s", t);
    }
    p->depth--;
}

static void XMLCALL err_text(void *u, const XML_Char *s, int len)
{
    err_parse *p = u;
    if (p->depth == 2 && p->in_error && p->text.n < 4096) sb_add(&p->text, s, (size_t)len);
}

// Fills e from an <Error> body; leaves it empty for anything else.
static void parse_error(const char *body, size_t len, s3_err *e)
{
    memset(e, 0, sizeof(*e));
    if (!len || len > INT_MAX) return;
    XML_Parser xp = XML_ParserCreate("UTF-8");
    if (!xp) return;
    err_parse p = {.e = e};
    XML_SetUserData(xp, &p);
    XML_SetElementHandler(xp, err_start, err_end);
    XML_SetCharacterDataHandler(xp, err_text);
    if (XML_Parse(xp, body, (int)len, 1) == XML_STATUS_ERROR) memset(e, 0, sizeof(*e));
    XML_ParserFree(xp);
    sb_free(&p.text);
    for (char *c = e->msg; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' ';
}

// ListObjectsV2's <ListBucketResult>: the objects of one page, appended to a growing array.
typedef struct list_parse {
    XML_Parser xp;
    int depth, root_seen, in_contents;
    sbuf text;
    nd_s3_object cur;
    int have_key, have_size;
    nd_s3_object *objs;
    size_t n, cap;
    int truncated, page_keys;
    char *next_token;
    nt_status err;
    char why[160];
} list_parse;

static void list_fail(list_parse *p, nt_status s, const char *why)
{
    if (p->err) return;
    p->err = s;
    snprintf(p->why, sizeof(p->why), "%s", why);
    XML_StopParser(p->xp, XML_FALSE);
}

static void XMLCALL list_start(void *u, const XML_Char *name, const XML_Char **attr)
{
    list_parse *p = u;
    p->depth++;
    p->text.n = 0;
    if (p->text.p) p->text.p[0] = 0;
    if (p->depth == 1) {
        p->root_seen = 1;
        if (strcmp(name, "ListBucketResult") != 0) {
            char why[128];
            snprintf(why, sizeof(why), "expected <ListBucketResult>, got <%.60s>", name);
            list_fail(p, NT_EFORMAT, why);
        }
    } else if (p->depth == 2 && strcmp(name, "Contents") == 0) {
        p->in_contents = 1;
        free(p->cur.key);
        memset(&p->cur, 0, sizeof(p->cur));
        p->have_key = p->have_size = 0;
    }
}

static void XMLCALL list_text(void *u, const XML_Char *s, int len)
{
    list_parse *p = u;
    if (p->depth == 2 || (p->depth == 3 && p->in_contents)) {
        sb_add(&p->text, s, (size_t)len);
        if (p->text.oom) list_fail(p, NT_ENOMEM, "out of memory");
    }
}

static void XMLCALL list_end(void *u, const XML_Char *name)
{
    list_parse *p = u;
    const char *t = sb_str(&p->text);
    if (p->depth == 3 && p->in_contents) {
        if (strcmp(name, "Key") == 0) {
            free(p->cur.key);
            if (!(p->cur.key = xstrdup(t))) list_fail(p, NT_ENOMEM, "out of memory");
            p->have_key = 1;
        } else if (strcmp(name, "Size") == 0) {
            char *end;
            errno       = 0;
            long long v = strtoll(t, &end, 10);
            if (errno || end == t || *end || v < 0) {
                char why[128];
                snprintf(why, sizeof(why), "<Size> \"%.40s\" is not a byte count", t);
                list_fail(p, NT_EFORMAT, why);
            }
            p->cur.size  = v;
            p->have_size = 1;
        } else if (strcmp(name, "ETag") == 0) {
            size_t n = strlen(t);
            if (n >= 2 && t[0] == '"' && t[n - 1] == '"') {
                t++;
                n -= 2;
            }
            if (n >= sizeof(p->cur.etag)) n = sizeof(p->cur.etag) - 1;
            memcpy(p->cur.etag, t, n);
            p->cur.etag[n] = 0;
        }
    } else if (p->depth == 2) {
        if (strcmp(name, "Contents") == 0) {
            p->in_contents = 0;
            if (!p->have_key || !p->have_size) {
                list_fail(p, NT_EFORMAT, "a <Contents> entry lacks <Key> or <Size>");
            } else {
                if (p->n == p->cap) {
                    size_t cap         = p->cap ? 2 * p->cap : 1024;
                    nd_s3_object *objs = realloc(p->objs, cap * sizeof(*objs));
                    if (!objs) {
                        list_fail(p, NT_ENOMEM, "out of memory");
                        p->depth--;
                        return;
                    }
                    p->objs = objs;
                    p->cap  = cap;
                }
                p->objs[p->n++] = p->cur; // the key is taken
                p->page_keys++;
                memset(&p->cur, 0, sizeof(p->cur));
            }
        } else if (strcmp(name, "IsTruncated") == 0) {
            p->truncated = strcmp(t, "true") == 0;
        } else if (strcmp(name, "NextContinuationToken") == 0) {
            free(p->next_token);
            if (!(p->next_token = xstrdup(t))) list_fail(p, NT_ENOMEM, "out of memory");
        }
    }
    p->depth--;
}

// ---- requests ----

typedef struct s3_req {
    const char *method; // "GET", "HEAD" or "PUT"
    const char *bucket;
    const char *key;   // NULL: the bucket itself
    const char *query; // already sorted and encoded, or NULL
    const uint8_t *body;
    size_t body_len;
    const char *content_type;
    const char *what; // "GET s3://b/k", for messages
} s3_req;

typedef struct s3_resp {
    long status;
    sbuf body;
    int64_t content_length; // -1: not sent
    char etag[128];
    double retry_after; // seconds, -1: not sent
    char bucket_region[64];
} s3_resp;

typedef struct s3_upload {
    const uint8_t *p;
    size_t len, off;
} s3_upload;

static void resp_clear(s3_resp *r)
{
    r->status           = 0;
    r->body.n           = 0;
    r->content_length   = -1;
    r->etag[0]          = 0;
    r->retry_after      = -1;
    r->bucket_region[0] = 0;
    if (r->body.p) r->body.p[0] = 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *u)
{
    s3_resp *r = u;
    size_t n   = size * nmemb;
    if (r->body.n == 0 && r->content_length > 0 && (uint64_t)r->content_length < SIZE_MAX)
        sb_reserve(&r->body, (size_t)r->content_length);
    sb_add(&r->body, data, n);
    return r->body.oom ? 0 : n;
}

// Copies header value v (without surrounding quotes) into dst.
static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *u)
{
    s3_resp *r = u;
    size_t n   = size * nmemb;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) { // a new response (after a 100 Continue)
        r->content_length   = -1;
        r->etag[0]          = 0;
        r->retry_after      = -1;
        r->bucket_region[0] = 0;
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon) return n;
    size_t klen   = (size_t)(colon - data);
    const char *v = colon + 1, *end = data + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vlen = (size_t)(end - v);
    char val[128];
    copy_value(val, sizeof(val), v, vlen);
    if (klen == 14 && strncasecmp(data, "Content-Length", 14) == 0) {
        char *e;
        long long cl = strtoll(val, &e, 10);
        if (e != val && !*e && cl >= 0) r->content_length = cl;
    } else if (klen == 4 && strncasecmp(data, "ETag", 4) == 0) {
        copy_value(r->etag, sizeof(r->etag), v, vlen);
    } else if (klen == 11 && strncasecmp(data, "Retry-After", 11) == 0) {
        char *e;
        double ra = strtod(val, &e);
        if (e != val && !*e && ra >= 0) r->retry_after = ra;
    } else if (klen == 19 && strncasecmp(data, "x-amz-bucket-region", 19) == 0) {
        copy_value(r->bucket_region, sizeof(r->bucket_region), v, vlen);
    }
    return n;
}

static size_t on_read(char *dst, size_t size, size_t nmemb, void *u)
{
    s3_upload *up = u;
    size_t n = size * nmemb, left = up->len - up->off;
    if (n > left) n = left;
    if (n) memcpy(dst, up->p + up->off, n);
    up->off += n;
    return n;
}

static int on_seek(void *u, curl_off_t off, int origin)
{
    s3_upload *up = u;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > up->len) return CURL_SEEKFUNC_FAIL;
    up->off = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

static void hex_sha256(const uint8_t *p, size_t len, char out[65], int *ok)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    *ok                = EVP_Digest(p, len, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", *ok ? md[i] : 0);
}

// One try. Returns curl's code; the HTTP status, headers and body go to r.
static CURLcode s3_try(nd_s3 *s3, const s3_req *q, const char *url, struct curl_slist *hdrs,
                       s3_resp *r)
{
    CURL *c = s3->curl;
    curl_easy_reset(c); // keeps the connection cache
    s3->errbuf[0] = 0;
    s3_upload up  = {q->body, q->body_len, 0};
    long stall    = (long)ceil(s3->timeout_s);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); // keys may hold "." and ".." segments
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s3->errbuf);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s3->sigv4);
    curl_easy_setopt(c, CURLOPT_USERNAME, s3->akid);
    curl_easy_setopt(c, CURLOPT_PASSWORD, s3->secret);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(s3->timeout_s * 1000));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, stall < 1 ? 1L : stall);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (strcmp(q->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(q->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, &up);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body_len);
    }
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    return cc;
}

// Network failures worth another try: refused, reset, timed out, cut short.
static int curl_transient(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

// Server answers worth another try: 5xx but 501/505, 429, and S3's 400 RequestTimeout.
static int http_transient(long status, const char *code)
{
    if (status >= 500 && status != 501 && status != 505) return 1;
    if (status == 429) return 1;
    return strcmp(code, "RequestTimeout") == 0 || strcmp(code, "SlowDown") == 0;
}

// What to check for an S3 error code, or "".
static void s3_hint(const nd_s3 *s3, const s3_req *q, long status, const s3_err *e,
                    const char *bucket_region, char *out, size_t cap)
{
    const char *code = e->code;
    const char *reg  = e->region[0] ? e->region : bucket_region;
    out[0]           = 0;
    if (strcmp(code, "SignatureDoesNotMatch") == 0)
        snprintf(out, cap, "check the secret access key, from %s", s3->cred_src);
    else if (strcmp(code, "InvalidAccessKeyId") == 0)
        snprintf(out, cap, "check the access key id, from %s", s3->cred_src);
    else if (strcmp(code, "AccessDenied") == 0 || strcmp(code, "AllAccessDisabled") == 0 ||
             (status == 403 && !code[0]))
        snprintf(out, cap, "the credentials from %s are wrong or lack permission", s3->cred_src);
    else if (strcmp(code, "ExpiredToken") == 0 || strcmp(code, "TokenRefreshRequired") == 0 ||
             strcmp(code, "InvalidToken") == 0)
        snprintf(out, cap, "refresh the session token (AWS_SESSION_TOKEN or the profile's)");
    else if (strcmp(code, "NoSuchBucket") == 0)
        snprintf(out, cap, "no bucket \"%s\" at %s: check the name and the endpoint", q->bucket,
                 s3->endpoint);
    else if (status == 404 && !code[0])
        snprintf(out, cap, "no such key, or no bucket \"%s\" at %s", q->bucket, s3->endpoint);
    else if (strcmp(code, "RequestTimeTooSkewed") == 0)
        snprintf(out, cap, "this machine's clock is off: sync it");
    else if (strcmp(code, "PermanentRedirect") == 0 ||
             strcmp(code, "AuthorizationHeaderMalformed") == 0 || status == 301) {
        if (reg[0])
            snprintf(out, cap, "the bucket is in region %s: set AWS_REGION=%s", reg, reg);
        else
            snprintf(out, cap, "the bucket is in another region than %s: set AWS_REGION",
                     s3->region);
    }
}

// Sends q with retries. On NT_OK, r holds the 2xx answer; otherwise the message is set.
static nt_status s3_request(nd_s3 *s3, const s3_req *q, s3_resp *r)
{
    nt_ctx *ctx = s3->ctx;
    sbuf url    = {0};
    sb_puts(&url, s3->endpoint);
    sb_puts(&url, "/");
    sb_puts(&url, q->bucket);
    if (q->key) {
        sb_puts(&url, "/");
        sb_encode(&url, q->key, 1);
    }
    if (q->query && *q->query) {
        sb_puts(&url, "?");
        sb_puts(&url, q->query);
    }
    char sha[65] = S3_EMPTY_SHA256;
    if (q->body_len) {
        int ok;
        hex_sha256(q->body, q->body_len, sha, &ok);
        if (!ok) {
            sb_free(&url);
            return nt_ctx_seterr(ctx, NT_EIO, "s3: %s: SHA-256 of the body failed (libcrypto)",
                                 q->what);
        }
    }
    sbuf h1 = {0}, h2 = {0}, h3 = {0};
    sb_printf(&h1, "x-amz-content-sha256: %s", sha);
    if (s3->token) sb_printf(&h2, "x-amz-security-token: %s", s3->token);
    if (q->content_type) sb_printf(&h3, "Content-Type: %s", q->content_type);
    struct curl_slist *hdrs = NULL, *t;
    int oom                 = url.oom || h1.oom || h2.oom || h3.oom;
    const char *hv[3]       = {h1.p, h2.p, h3.p};
    for (int i = 0; i < 3 && !oom; i++) {
        if (!hv[i]) continue;
        if (!(t = curl_slist_append(hdrs, hv[i])))
            oom = 1;
        else
            hdrs = t;
    }
    if (h2.p) memset(h2.p, 0, h2.n);
    sb_free(&h1);
    sb_free(&h2);
    sb_free(&h3);
    if (oom) {
        curl_slist_free_all(hdrs);
        sb_free(&url);
        return nt_ctx_seterr(ctx, NT_ENOMEM, "s3: %s: out of memory", q->what);
    }

    nt_status s  = NT_OK;
    double start = now_s();
    for (int attempt = 0;; attempt++) {
        resp_clear(r);
        double t0   = now_s();
        CURLcode cc = s3_try(s3, q, url.p, hdrs, r);
        if (r->body.oom) {
            s = nt_ctx_seterr(ctx, NT_ENOMEM, "s3: %s: cannot allocate %zu bytes for the answer",
                              q->what, r->body.want);
            break;
        }
        char why[400];
        int transient;
        s3_err e = {0};
        if (cc != CURLE_OK) {
            transient          = curl_transient(cc);
            const char *detail = s3->errbuf[0] ? s3->errbuf : curl_easy_strerror(cc);
            if (cc == CURLE_OPERATION_TIMEDOUT)
                snprintf(why, sizeof(why), "timed out, nothing moved for %g s (%s)",
                         ceil(s3->timeout_s), detail);
            else
                snprintf(why, sizeof(why), "%s", detail);
        } else if (r->status >= 200 && r->status < 300) {
            nt_ctx_log(ctx, NT_LOG_DEBUG, "s3: %s: %ld, %zu bytes in %.3f s", q->what, r->status,
                       r->body.n, now_s() - t0);
            break;
        } else {
            parse_error(sb_str(&r->body), r->body.n, &e);
            transient = http_transient(r->status, e.code);
            if (e.code[0])
                snprintf(why, sizeof(why), "%ld %s%s%s", r->status, e.code, e.msg[0] ? ": " : "",
                         e.msg);
            else
                snprintf(why, sizeof(why), "HTTP %ld%s", r->status,
                         r->status == 404   ? " Not Found"
                         : r->status == 403 ? " Forbidden"
                                            : "");
        }
        if (!transient) {
            char hint[300];
            if (cc != CURLE_OK)
                snprintf(hint, sizeof(hint), "endpoint %s", s3->endpoint);
            else
                s3_hint(s3, q, r->status, &e, r->bucket_region, hint, sizeof(hint));
            s = nt_ctx_seterr(ctx, NT_EIO, "s3: %s: %s%s%s%s", q->what, why, hint[0] ? " (" : "",
                              hint, hint[0] ? ")" : "");
            break;
        }
        if (attempt >= s3->max_retries) {
            s = nt_ctx_seterr(ctx, NT_EIO,
                              "s3: %s: %s; gave up after %d tr%s in %.1f s (is the S3 endpoint %s "
                              "up and reachable?)",
                              q->what, why, attempt + 1, attempt ? "ies" : "y", now_s() - start,
                              s3->endpoint);
            break;
        }
        // Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
        double cap   = fmin(S3_BACKOFF_CAP, s3->retry_base_s * ldexp(1.0, attempt));
        double delay = cap * (double)(splitmix64(&s3->rng) >> 11) * 0x1.0p-53;
        if (r->retry_after > delay) delay = fmin(r->retry_after, S3_BACKOFF_CAP);
        nt_ctx_log(ctx, NT_LOG_WARN, "s3: %s: %s; retry %d of %d in %.2f s", q->what, why,
                   attempt + 1, s3->max_retries, delay);
        struct timespec ts = {(time_t)delay, (long)((delay - floor(delay)) * 1e9)};
        nanosleep(&ts, NULL);
    }
    curl_slist_free_all(hdrs);
    sb_free(&url);
    return s;
}

static nt_status s3_check_args(nd_s3 *s3, const char *bucket, const char *key, int need_key)
{
    if (!bucket || !bucket_ok(bucket, strlen(bucket)))
        return nt_ctx_seterr(s3->ctx, NT_EINVAL,
                             "s3: bucket name \"%s\" must be 1 to 255 letters, digits, '.', '-' "
                             "or '_'",
                             bucket ? bucket : "(null)");
    if (need_key && (!key || !*key))
        return nt_ctx_seterr(s3->ctx, NT_EINVAL, "s3: s3://%s: the object key is empty", bucket);
    if (need_key && strlen(key) > 1024)
        return nt_ctx_seterr(s3->ctx, NT_EINVAL,
                             "s3: s3://%s: the key is %zu bytes, S3 allows at most 1024", bucket,
                             strlen(key));
    return NT_OK;
}

// ---- public operations ----

nt_status nd_s3_list(nd_s3 *s3, const char *bucket, const char *prefix, nd_s3_object **objs,
                     size_t *n)
{
    if (!s3 || !objs || !n) return NT_EINVAL;
    *objs       = NULL;
    *n          = 0;
    nt_status s = s3_check_args(s3, bucket, NULL, 0);
    if (s) return s;
    if (!prefix) prefix = "";
    list_parse p = {0};
    s3_resp r    = {0};
    char *token  = NULL;
    for (int page = 1;; page++) {
        // Parameters sorted by name, values encoded: the canonical query curl 7.88 will sign.
        sbuf q = {0}, what = {0};
        if (token) {
            sb_puts(&q, "continuation-token=");
            sb_encode(&q, token, 0);
            sb_puts(&q, "&");
        }
        sb_printf(&q, "list-type=2&max-keys=%d", S3_PAGE_KEYS);
        if (*prefix) {
            sb_puts(&q, "&prefix=");
            sb_encode(&q, prefix, 0);
        }
        sb_printf(&what, "list s3://%s/%s (page %d)", bucket, prefix, page);
        if (q.oom || what.oom) {
            s = nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
        } else {
            s3_req rq = {.method = "GET", .bucket = bucket, .query = q.p, .what = what.p};
            s         = s3_request(s3, &rq, &r);
        }
        if (!s) {
            p.xp = XML_ParserCreate("UTF-8");
            if (!p.xp) {
                s = nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: cannot create an XML parser");
            } else {
                p.depth = p.root_seen = p.in_contents = p.truncated = p.page_keys = 0;
                free(p.next_token);
                p.next_token = NULL;
                XML_SetUserData(p.xp, &p);
                XML_SetElementHandler(p.xp, list_start, list_end);
                XML_SetCharacterDataHandler(p.xp, list_text);
                int ok = r.body.n <= INT_MAX &&
                         XML_Parse(p.xp, sb_str(&r.body), (int)r.body.n, 1) == XML_STATUS_OK;
                if (p.err == NT_ENOMEM)
                    s = nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: %s: out of memory", what.p);
                else if (p.err)
                    s = nt_ctx_seterr(s3->ctx, p.err, "s3: %s: bad listing: %s", what.p, p.why);
                else if (!ok)
                    s = nt_ctx_seterr(s3->ctx, NT_EFORMAT,
                                      "s3: %s: the listing is not XML (%s at line %lu)", what.p,
                                      XML_ErrorString(XML_GetErrorCode(p.xp)),
                                      (unsigned long)XML_GetCurrentLineNumber(p.xp));
                else if (!p.root_seen)
                    s = nt_ctx_seterr(s3->ctx, NT_EFORMAT, "s3: %s: empty listing", what.p);
                else if (p.truncated && (!p.next_token || !*p.next_token))
                    s = nt_ctx_seterr(s3->ctx, NT_EFORMAT,
                                      "s3: %s: a truncated page without NextContinuationToken",
                                      what.p);
                else if (p.truncated && token && strcmp(token, p.next_token) == 0)
                    s = nt_ctx_seterr(s3->ctx, NT_EFORMAT,
                                      "s3: %s: the server returned the same continuation token "
                                      "again",
                                      what.p);
                XML_ParserFree(p.xp);
                p.xp = NULL;
            }
        }
        if (!s)
            nt_ctx_log(s3->ctx, NT_LOG_DEBUG, "s3: %s: %d keys%s, %zu so far", what.p, p.page_keys,
                       p.truncated ? ", truncated" : "", p.n);
        sb_free(&q);
        sb_free(&what);
        if (s || !p.truncated) break;
        free(token);
        token        = p.next_token; // taken
        p.next_token = NULL;
    }
    free(token);
    free(p.next_token);
    free(p.cur.key);
    sb_free(&p.text);
    sb_free(&r.body);
    if (s) {
        nd_s3_objects_free(p.objs, p.n);
        return s;
    }
    *objs = p.objs;
    *n    = p.n;
    return NT_OK;
}

void nd_s3_objects_free(nd_s3_object *objs, size_t n)
{
    if (!objs) return;
    for (size_t i = 0; i < n; i++)
        free(objs[i].key);
    free(objs);
}

// "VERB s3://bucket/key" for messages.
static char *what_of(const char *verb, const char *bucket, const char *key)
{
    sbuf w = {0};
    sb_printf(&w, "%s s3://%s/%s", verb, bucket, key);
    return w.p;
}

nt_status nd_s3_get(nd_s3 *s3, const char *bucket, const char *key, uint8_t **buf, size_t *len)
{
    if (!s3 || !buf || !len) return NT_EINVAL;
    *buf        = NULL;
    *len        = 0;
    nt_status s = s3_check_args(s3, bucket, key, 1);
    if (s) return s;
    char *what = what_of("GET", bucket, key);
    if (!what) return nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
    s3_req q  = {.method = "GET", .bucket = bucket, .key = key, .what = what};
    s3_resp r = {0};
    s         = s3_request(s3, &q, &r);
    if (!s && !r.body.p && !(r.body.p = malloc(1)))
        s = nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
    free(what);
    if (s) {
        sb_free(&r.body);
        return s;
    }
    *buf = (uint8_t *)r.body.p; // taken
    *len = r.body.n;
    return NT_OK;
}

nt_status nd_s3_head(nd_s3 *s3, const char *bucket, const char *key, int64_t *size, char *etag,
                     size_t etag_len)
{
    if (!s3 || !size) return NT_EINVAL;
    *size = 0;
    if (etag && etag_len) etag[0] = 0;
    nt_status s = s3_check_args(s3, bucket, key, 1);
    if (s) return s;
    char *what = what_of("HEAD", bucket, key);
    if (!what) return nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
    s3_req q  = {.method = "HEAD", .bucket = bucket, .key = key, .what = what};
    s3_resp r = {0};
    s         = s3_request(s3, &q, &r);
    if (!s && r.content_length < 0)
        s = nt_ctx_seterr(s3->ctx, NT_EFORMAT, "s3: %s: the answer has no Content-Length", what);
    if (!s) {
        *size = r.content_length;
        if (etag && etag_len) snprintf(etag, etag_len, "%s", r.etag);
    }
    free(what);
    sb_free(&r.body);
    return s;
}

nt_status nd_s3_put(nd_s3 *s3, const char *bucket, const char *key, const void *buf, size_t len,
                    const char *content_type)
{
    if (!s3) return NT_EINVAL;
    nt_status s = s3_check_args(s3, bucket, key, 1);
    if (s) return s;
    if (!buf && len)
        return nt_ctx_seterr(s3->ctx, NT_EINVAL, "s3: PUT s3://%s/%s: buf is NULL", bucket, key);
    if (content_type && strpbrk(content_type, "\r\n"))
        return nt_ctx_seterr(s3->ctx, NT_EINVAL, "s3: PUT s3://%s/%s: bad content type", bucket,
                             key);
    char *what = what_of("PUT", bucket, key);
    if (!what) return nt_ctx_seterr(s3->ctx, NT_ENOMEM, "s3: out of memory");
    s3_req q  = {.method       = "PUT",
                 .bucket       = bucket,
                 .key          = key,
                 .body         = buf,
                 .body_len     = len,
                 .content_type = content_type,
                 .what         = what};
    s3_resp r = {0};
    s         = s3_request(s3, &q, &r);
    free(what);
    sb_free(&r.body);
    return s;
}
