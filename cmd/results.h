/*
 * results.h: pneumo's Redis results layer (hiredis 0.14, sync API, redisCommandArgv-style argv
 * commands): connect from a redis:// URL (AUTH, SELECT), cache look-ups, and pipelined writes
 * with bounded retries (reconnect, exponential backoff with jitter). Not thread-safe per handle:
 * give each thread its own. Used by cmd/predict.c; tests: tests/predict.sh (real redis-server).
 *
 * Key schema (also in README.md, "Redis key schema"); <mid> is the model id (the first 16 hex
 * digits of the SHA-256 of the model file), <sha> the SHA-256 of the image bytes (64 hex):
 *   pneumo:result:<mid>:<sha>   hash: probability, label, threshold, model_id, model_sha256,
 *                               model, source (the first source seen), time, latency_ms, run_id
 *   pneumo:source:<mid>:<src>   string: the <sha> the source (path or s3:// URI) had last time
 *   pneumo:run:<run_id>         hash: the run's summary (status running|done|incomplete, model,
 *                               model_id, total, done, cached, failed, elapsed_s, started, ...)
 *   pneumo:fail:<run_id>        hash: source -> reason, one field per failed image
 *   pneumo:runs                 sorted set: run_id scored by its start time (Unix seconds)
 * With a TTL (--ttl) result, source and fail keys expire; run summaries and the index do not.
 * Work queues (`pneumo predict --enqueue --queue <q>`, `pneumo worker --queue <q>`):
 *   pneumo:queue:<q>            stream: one entry per image, field source; consumer group
 *                               "workers" (XREADGROUP, XACK, XAUTOCLAIM for a dead worker's work)
 *   pneumo:queue:<q>:sources    set: every source ever enqueued (a source is queued once)
 *   pneumo:queue:<q>:meta       hash: total (entries ever enqueued), created, updated
 *   pneumo:queue:<q>:done       set: the sources whose result is stored (one member per image)
 *   pneumo:queue:<q>:dead       stream: dead letters: source, id (the queue entry), reason,
 *                               deliveries, consumer, time
 *   pneumo:run:queue:<q>, pneumo:fail:queue:<q>: the queue's summary (recomputed by workers
 *                               from done, fail and total) and its dead-lettered sources
 * `pneumo serve` (cmd/serve.c) writes results as predict does (source "upload", run_id "serve";
 * never a client's file name), plus
 *   pneumo:heatmap:<mid>:<sha>  string: the Grad-CAM heat map over the image, as PNG bytes
 *                               (expires with --ttl like the result)
 *   pneumo:history              sorted set: "<mid>:<sha>" scored by the time of its last upload
 *                               (Unix milliseconds), trimmed to the newest 1000
 * Workers write results exactly as predict does (result hash, source index, run_id "queue:<q>"):
 * delivery is at least once, and a redelivered image rewrites the same key.
 */
#ifndef CMD_RESULTS_H
#define CMD_RESULTS_H

#include "data/dataset.h"
#include "data/s3.h"
#include "libnet/nt.h"

#include <stddef.h>

typedef struct pr_redis pr_redis;

typedef struct pr_redis_opts {
    int retries;      // reconnect attempts after a failed command batch (default 4)
    double backoff_s; // first backoff; doubles each retry, with jitter (default 0.2)
    double timeout_s; // connect and I/O timeout (default 5)
} pr_redis_opts;

void pr_redis_opts_default(pr_redis_opts *o);
// The Redis URL to use: flag (from --redis) when given, else $REDIS_URL when set, else NULL.
const char *pr_redis_url(const char *flag);

// Connects to url = redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by default),
// sends AUTH and SELECT when asked, then PING. Returns NULL with a one-line reason in err
// (malformed URL, connection refused, bad password, ...). Only one try: the caller decides.
pr_redis *pr_redis_open(const char *url, const pr_redis_opts *o, char *err, size_t errlen);
void pr_redis_close(pr_redis *r);
// "host:port/db" for messages (never the password).
const char *pr_redis_where(const pr_redis *r);
// The last error (never NULL).
const char *pr_redis_errstr(const pr_redis *r);

// Looks up pneumo:result:<model_id>:<sha>. Returns 1 on a hit (*prob, label, *threshold set),
// 0 on a miss, -1 on a connection or protocol error (no retries: a failed look-up is a miss).
int pr_redis_lookup(pr_redis *r, const char *model_id, const char *sha, double *prob, char *label,
                    size_t label_len, double *threshold);

// A batch of commands, sent as one pipeline by pr_redis_exec. Arguments are copied.
typedef struct pr_batch pr_batch;
pr_batch *pr_batch_new(void);
void pr_batch_free(pr_batch *b);
void pr_batch_clear(pr_batch *b);
int pr_batch_len(const pr_batch *b);
// Appends one command of argc NUL-terminated words.
void pr_batch_add(pr_batch *b, int argc, const char **argv);
// The same with explicit argument lengths (binary values, e.g. a heat map's source record).
void pr_batch_add_len(pr_batch *b, int argc, const char **argv, const size_t *argvlen);

typedef struct pr_result {
    const char *source, *sha256, *label, *model_id, *model_sha256, *model, *run_id, *time;
    double probability, threshold, latency_ms;
    int no_source_index; // 1: no pneumo:source key (uploads have no source worth indexing)
} pr_result;

// The commands that store a result (the result hash, the source index), with EXPIRE when
// ttl_s > 0. Idempotent: replays and at-least-once deliveries write the same values.
void pr_batch_result(pr_batch *b, const pr_result *res, long ttl_s);
// A failure: HSET pneumo:fail:<run_id> source reason (EXPIRE when ttl_s > 0).
void pr_batch_fail(pr_batch *b, const char *run_id, const char *source, const char *reason,
                   long ttl_s);

// Sends the batch as a pipeline and reads every reply. On a connection error it reconnects and
// resends the whole batch (every command is idempotent), up to opts.retries times with backoff.
// Returns 0 on success (the batch is then cleared), -1 when Redis stayed unreachable or
// answered an error (pr_redis_errstr says which; the batch is kept for the caller).
int pr_redis_exec(pr_redis *r, pr_batch *b);

// The source index alone (a cache hit under this source): SET pneumo:source:<mid>:<source> sha.
void pr_batch_source(pr_batch *b, const char *model_id, const char *source, const char *sha,
                     long ttl_s);

// One command with its reply (a struct redisReply *, free with freeReplyObject), reconnecting
// and resending up to opts.retries times on a connection error. NULL when Redis stayed
// unreachable (pr_redis_errstr says why). An error reply is returned as such.
void *pr_redis_command(pr_redis *r, int argc, const char **argv);
// The same with explicit argument lengths (binary-safe values, e.g. a PNG); lens NULL: strlen.
void *pr_redis_command_len(pr_redis *r, int argc, const char **argv, const size_t *lens);

// ---- shared with `pneumo worker` (implemented in cmd/predict.c) ----

enum { PR_LOAD_COMPUTE, PR_LOAD_CACHED, PR_LOAD_FAILED };

typedef struct pr_load {
    int S; // model input size
    nd_resize resize;
    nt_preprocess pre;
    const char *model_id;
    pr_redis *r;       // cache look-ups here, or NULL (no look-up)
    int lookup_failed; // out: set when a look-up failed (counted as a miss)
} pr_load;

// Reads source (a file or s3:// URI; *s3 is created on first use), hashes it into sha, looks
// the result up (lo->r), and on a miss decodes, resizes and preprocesses into x (S*S*3 floats).
// Returns PR_LOAD_CACHED (*prob, label, *threshold set), PR_LOAD_COMPUTE (x set) or
// PR_LOAD_FAILED (err set). *prep_ms: the time it took.
int pr_load_image(nt_ctx *ctx, nd_s3 **s3, pr_load *lo, const char *source, float *x, char sha[65],
                  double *prob, char *label, size_t label_len, double *threshold, char *err,
                  size_t errlen, double *prep_ms);
// Loads the model file at path and its identity: sha = SHA-256 of the file (64 hex digits), id =
// its first 16. Returns 0, or the exit code after printing a one-line error as `pneumo CMD`.
int pr_model_open(const char *cmd, nt_ctx *ctx, const char *path, nt_model **m, nt_model_meta *meta,
                  char sha[65], char id[17]);
// The current UTC time as 2026-01-02T03:04:05.678Z.
void pr_iso_now(char *buf, size_t len);

#endif
