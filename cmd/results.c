/*
 * results.c: the Redis results layer of results.h on hiredis 0.14 (sync API, argv commands,
 * pipelines through redisAppendCommandArgv + redisGetReply). The key schema is in results.h.
 * Tests: tests/predict.sh against a real redis-server on a loopback port.
 */
#include "cmd/results.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pr_redis {
    redisContext *c;
    char host[256];
    int port, db;
    char user[128], pass[256];
    pr_redis_opts o;
    char where[300];
    char err[512];
};

typedef struct pr_cmd {
    int argc;
    char **argv;
    size_t *len;
} pr_cmd;

struct pr_batch {
    pr_cmd *cmds;
    int n, cap;
};

const char *pr_redis_url(const char *flag)
{
    if (flag) return flag;
    const char *env = getenv("REDIS_URL");
    return env && *env ? env : NULL;
}

void pr_redis_opts_default(pr_redis_opts *o)
{
    o->retries   = 4;
    o->backoff_s = 0.2;
    o->timeout_s = 5;
}

static void seterr(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

// redis://[[user]:password@]host[:port][/db]
static int parse_url(pr_redis *r, const char *url, char *err, size_t errlen)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        seterr(err, errlen, "expected a URL redis://[:password@]host:port/db, got \"%s\"", url);
        return -1;
    }
    p += 8;
    r->port        = 6379;
    r->db          = 0;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) {
            seterr(err, errlen, "Redis URL: expected :password@ before the host in \"%s\"", url);
            return -1;
        }
        size_t ul = (size_t)(colon - p), pl = (size_t)(at - colon - 1);
        if (ul >= sizeof(r->user) || pl >= sizeof(r->pass)) {
            seterr(err, errlen, "Redis URL: user or password too long");
            return -1;
        }
        memcpy(r->user, p, ul);
        r->user[ul] = 0;
        memcpy(r->pass, colon + 1, pl);
        r->pass[pl] = 0;
        p           = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof(r->host)) {
        seterr(err, errlen, "Redis URL: no host in \"%s\"", url);
        return -1;
    }
    memcpy(r->host, p, hl);
    r->host[hl] = 0;
    p += hl;
    char *end;
    if (*p == ':') {
        errno  = 0;
        long v = strtol(p + 1, &end, 10);
        if (errno || end == p + 1 || v < 1 || v > 65535 || (*end && *end != '/')) {
            seterr(err, errlen, "Redis URL: expected a port 1..65535 after ':' in \"%s\"", url);
            return -1;
        }
        r->port = (int)v;
        p       = end;
    }
    if (*p == '/' && p[1]) {
        errno  = 0;
        long v = strtol(p + 1, &end, 10);
        if (errno || end == p + 1 || *end || v < 0 || v > 1000000) {
            seterr(err, errlen, "Redis URL: expected a database number after '/' in \"%s\"", url);
            return -1;
        }
        r->db = (int)v;
    } else if (*p && strcmp(p, "/") != 0) {
        seterr(err, errlen, "Redis URL: unexpected \"%s\" in \"%s\"", p, url);
        return -1;
    }
    snprintf(r->where, sizeof(r->where), "%s:%d/%d", r->host, r->port, r->db);
    return 0;
}

static struct timeval tv_of(double s)
{
    struct timeval tv;
    tv.tv_sec  = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

// One command with a status check; returns 0 or -1 with r->err set.
static int simple(pr_redis *r, int argc, const char **argv, const char *what)
{
    redisReply *rep = redisCommandArgv(r->c, argc, argv, NULL);
    if (!rep) {
        snprintf(r->err, sizeof(r->err), "Redis at %s: %s failed: %s", r->where, what,
                 r->c->errstr[0] ? r->c->errstr : "connection lost");
        return -1;
    }
    int bad = rep->type == REDIS_REPLY_ERROR;
    if (bad)
        snprintf(r->err, sizeof(r->err), "Redis at %s: %s: %s%s", r->where, what, rep->str,
                 strstr(rep->str, "NOAUTH") || strstr(rep->str, "WRONGPASS") ||
                         strstr(rep->str, "invalid password")
                     ? " (check the password in --redis or REDIS_URL)"
                     : "");
    freeReplyObject(rep);
    return bad ? -1 : 0;
}

static int do_connect(pr_redis *r)
{
    if (r->c) redisFree(r->c);
    r->c = redisConnectWithTimeout(r->host, r->port, tv_of(r->o.timeout_s));
    if (!r->c || r->c->err) {
        snprintf(r->err, sizeof(r->err), "cannot connect to Redis at %s:%d: %s", r->host, r->port,
                 r->c ? r->c->errstr : "out of memory");
        if (r->c) redisFree(r->c);
        r->c = NULL;
        return -1;
    }
    redisSetTimeout(r->c, tv_of(r->o.timeout_s));
    if (r->pass[0]) {
        const char *a[3] = {"AUTH", r->user[0] ? r->user : r->pass, r->pass};
        if (simple(r, r->user[0] ? 3 : 2, a, "AUTH")) goto fail;
    }
    if (r->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->db);
        const char *a[2] = {"SELECT", db};
        if (simple(r, 2, a, "SELECT")) goto fail;
    }
    const char *a[1] = {"PING"};
    if (simple(r, 1, a, "PING")) goto fail;
    return 0;
fail:
    redisFree(r->c);
    r->c = NULL;
    return -1;
}

pr_redis *pr_redis_open(const char *url, const pr_redis_opts *o, char *err, size_t errlen)
{
    pr_redis *r = calloc(1, sizeof(*r));
    if (!r) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    if (o)
        r->o = *o;
    else
        pr_redis_opts_default(&r->o);
    if (parse_url(r, url, err, errlen)) {
        free(r);
        return NULL;
    }
    if (do_connect(r)) {
        seterr(err, errlen, "%s", r->err);
        pr_redis_close(r);
        return NULL;
    }
    return r;
}

void pr_redis_close(pr_redis *r)
{
    if (!r) return;
    if (r->c) redisFree(r->c);
    memset(r->pass, 0, sizeof(r->pass));
    free(r);
}

const char *pr_redis_where(const pr_redis *r)
{
    return r->where;
}

const char *pr_redis_errstr(const pr_redis *r)
{
    return r->err[0] ? r->err : "no error";
}

int pr_redis_lookup(pr_redis *r, const char *model_id, const char *sha, double *prob, char *label,
                    size_t label_len, double *threshold)
{
    if (!r->c && do_connect(r)) return -1;
    char key[160];
    snprintf(key, sizeof(key), "pneumo:result:%s:%s", model_id, sha);
    const char *a[5] = {"HMGET", key, "probability", "label", "threshold"};
    redisReply *rep  = redisCommandArgv(r->c, 5, a, NULL);
    if (!rep) {
        snprintf(r->err, sizeof(r->err), "Redis at %s: %s", r->where,
                 r->c->errstr[0] ? r->c->errstr : "connection lost");
        redisFree(r->c);
        r->c = NULL;
        return -1;
    }
    int hit = 0;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
        rep->element[0]->type == REDIS_REPLY_STRING &&
        rep->element[1]->type == REDIS_REPLY_STRING &&
        rep->element[2]->type == REDIS_REPLY_STRING) {
        char *e1, *e2;
        double p = strtod(rep->element[0]->str, &e1), t = strtod(rep->element[2]->str, &e2);
        if (!*e1 && !*e2) {
            *prob      = p;
            *threshold = t;
            snprintf(label, label_len, "%s", rep->element[1]->str);
            hit = 1;
        }
    } else if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(r->err, sizeof(r->err), "Redis at %s: HMGET: %s", r->where, rep->str);
        hit = -1;
    }
    freeReplyObject(rep);
    return hit;
}

// ---- batches ----

pr_batch *pr_batch_new(void)
{
    return calloc(1, sizeof(pr_batch));
}

void pr_batch_clear(pr_batch *b)
{
    for (int i = 0; i < b->n; i++) {
        for (int k = 0; k < b->cmds[i].argc; k++)
            free(b->cmds[i].argv[k]);
        free(b->cmds[i].argv);
        free(b->cmds[i].len);
    }
    b->n = 0;
}

void pr_batch_free(pr_batch *b)
{
    if (!b) return;
    pr_batch_clear(b);
    free(b->cmds);
    free(b);
}

int pr_batch_len(const pr_batch *b)
{
    return b->n;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        // The command side has no sane way on with a half-built pipeline.
        fprintf(stderr, "pneumo: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

void pr_batch_add(pr_batch *b, int argc, const char **argv)
{
    size_t len[argc > 0 ? argc : 1];
    for (int k = 0; k < argc; k++)
        len[k] = strlen(argv[k]);
    pr_batch_add_len(b, argc, argv, len);
}

void pr_batch_add_len(pr_batch *b, int argc, const char **argv, const size_t *argvlen)
{
    if (b->n == b->cap) {
        int cap     = b->cap ? 2 * b->cap : 16;
        pr_cmd *cmd = realloc(b->cmds, sizeof(pr_cmd) * (size_t)cap);
        if (!cmd) {
            fprintf(stderr, "pneumo: out of memory for a Redis pipeline of %d commands\n", cap);
            abort();
        }
        b->cmds = cmd;
        b->cap  = cap;
    }
    pr_cmd *c = &b->cmds[b->n++];
    c->argc   = argc;
    c->argv   = xmalloc(sizeof(char *) * (size_t)argc);
    c->len    = xmalloc(sizeof(size_t) * (size_t)argc);
    for (int k = 0; k < argc; k++) {
        c->len[k]  = argvlen[k];
        c->argv[k] = xmalloc(c->len[k] + 1);
        memcpy(c->argv[k], argv[k], c->len[k]);
        c->argv[k][c->len[k]] = '\0';
    }
}

static void add_expire(pr_batch *b, const char *key, long ttl_s)
{
    if (ttl_s <= 0) return;
    char t[32];
    snprintf(t, sizeof(t), "%ld", ttl_s);
    const char *a[3] = {"EXPIRE", key, t};
    pr_batch_add(b, 3, a);
}

void pr_batch_result(pr_batch *b, const pr_result *res, long ttl_s)
{
    size_t klen = strlen(res->source) + 128;
    char *key   = xmalloc(klen), p[32], t[32], l[32];
    snprintf(key, klen, "pneumo:result:%s:%s", res->model_id, res->sha256);
    snprintf(p, sizeof(p), "%.17g", res->probability);
    snprintf(t, sizeof(t), "%.17g", res->threshold);
    snprintf(l, sizeof(l), "%.3f", res->latency_ms);
    // HSETNX for the source: the first source that produced a result stays the record's source.
    const char *a[] = {"HSET",         key,
                       "probability",  p,
                       "label",        res->label,
                       "threshold",    t,
                       "model_id",     res->model_id,
                       "model_sha256", res->model_sha256,
                       "model",        res->model,
                       "time",         res->time,
                       "latency_ms",   l,
                       "run_id",       res->run_id};
    pr_batch_add(b, (int)(sizeof(a) / sizeof(a[0])), a);
    const char *s[] = {"HSETNX", key, "source", res->source};
    pr_batch_add(b, 4, s);
    add_expire(b, key, ttl_s);
    if (!res->no_source_index) {
        snprintf(key, klen, "pneumo:source:%s:%s", res->model_id, res->source);
        const char *x[] = {"SET", key, res->sha256};
        pr_batch_add(b, 3, x);
        add_expire(b, key, ttl_s);
    }
    free(key);
}

void pr_batch_fail(pr_batch *b, const char *run_id, const char *source, const char *reason,
                   long ttl_s)
{
    char key[160];
    snprintf(key, sizeof(key), "pneumo:fail:%s", run_id);
    const char *a[] = {"HSET", key, source, reason};
    pr_batch_add(b, 4, a);
    add_expire(b, key, ttl_s);
}

void pr_batch_source(pr_batch *b, const char *model_id, const char *source, const char *sha,
                     long ttl_s)
{
    size_t klen = strlen(source) + strlen(model_id) + 32;
    char *key   = xmalloc(klen);
    snprintf(key, klen, "pneumo:source:%s:%s", model_id, source);
    const char *a[] = {"SET", key, sha};
    pr_batch_add(b, 3, a);
    add_expire(b, key, ttl_s);
    free(key);
}

static void backoff(double base, int i)
{
    double hi = base;
    for (int k = 0; k < i; k++)
        hi *= 2;
    if (hi > 5) hi = 5;
    // Half fixed, half jitter: waits grow for sure, and many clients do not retry in step.
    double s           = hi / 2 + hi / 2 * ((double)rand() / RAND_MAX);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

// One pipelined try: 0 done, -1 connection error (retry), -2 a command error (no retry).
static int exec_once(pr_redis *r, pr_batch *b)
{
    if (!r->c && do_connect(r)) return -1;
    for (int i = 0; i < b->n; i++)
        if (redisAppendCommandArgv(r->c, b->cmds[i].argc, (const char **)b->cmds[i].argv,
                                   b->cmds[i].len) != REDIS_OK)
            goto lost;
    int cmd_err = 0;
    for (int i = 0; i < b->n; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(r->c, (void **)&rep) != REDIS_OK || !rep) goto lost;
        if (rep->type == REDIS_REPLY_ERROR && !cmd_err) {
            snprintf(r->err, sizeof(r->err), "Redis at %s: %s %s: %s", r->where, b->cmds[i].argv[0],
                     b->cmds[i].argc > 1 ? b->cmds[i].argv[1] : "", rep->str);
            cmd_err = 1;
        }
        freeReplyObject(rep);
    }
    return cmd_err ? -2 : 0;
lost:
    snprintf(r->err, sizeof(r->err), "lost the connection to Redis at %s: %s", r->where,
             r->c->errstr[0] ? r->c->errstr : "connection closed");
    redisFree(r->c);
    r->c = NULL;
    return -1;
}

int pr_redis_exec(pr_redis *r, pr_batch *b)
{
    if (b->n == 0) return 0;
    for (int i = 0;; i++) {
        int rc = exec_once(r, b);
        if (rc == 0) {
            pr_batch_clear(b);
            return 0;
        }
        if (rc == -2 || i >= r->o.retries) return -1;
        backoff(r->o.backoff_s, i);
    }
}

void *pr_redis_command(pr_redis *r, int argc, const char **argv)
{
    return pr_redis_command_len(r, argc, argv, NULL);
}

void *pr_redis_command_len(pr_redis *r, int argc, const char **argv, const size_t *lens)
{
    for (int i = 0;; i++) {
        if (r->c || do_connect(r) == 0) {
            redisReply *rep = redisCommandArgv(r->c, argc, argv, lens);
            if (rep) return rep;
            snprintf(r->err, sizeof(r->err), "lost the connection to Redis at %s: %s", r->where,
                     r->c->errstr[0] ? r->c->errstr : "connection closed");
            redisFree(r->c);
            r->c = NULL;
        }
        if (i >= r->o.retries) return NULL;
        backoff(r->o.backoff_s, i);
    }
}
