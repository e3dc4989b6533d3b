/*
 * s3.h: a small S3 client on libcurl (CURLOPT_AWS_SIGV4): ListObjectsV2 with continuation
 * tokens, GET, HEAD and PUT, path-style URLs, retries with exponential backoff and jitter, and
 * the AWS configuration conventions. Tests: tests/s3.sh + tests/test_s3.c against the local
 * S3 server (@20minutes/s3rver, which checks signatures).
 */
#ifndef ND_S3_H
#define ND_S3_H

#include "libnet/nt.h"

#include <stddef.h>
#include <stdint.h>

typedef struct nd_s3 nd_s3;

typedef struct nd_s3_opts {
    // Each field overrides the environment / AWS config when non-NULL / non-zero.
    const char *endpoint; // e.g. "http://127.0.0.1:4568"; else AWS_ENDPOINT_URL_S3,
                          // AWS_ENDPOINT_URL, the profile's endpoint_url, or AWS's own
    const char *region;   // else AWS_REGION, AWS_DEFAULT_REGION, the profile, "us-east-1"
    const char *profile;  // else AWS_PROFILE, "default"
    int max_retries;      // 0: the default (5)
    double timeout_s;     // per request; 0: the default (60)
} nd_s3_opts;

// Creates a client. Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_SESSION_TOKEN, else the profile in ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE) and
// ~/.aws/config (AWS_CONFIG_FILE). Credentials never appear in messages or logs.
// NT_EINVAL when no credentials are found (the message says where it looked).
// A client may be used by one thread at a time; give each loader thread its own (cheap).
nt_status nd_s3_new(nt_ctx *ctx, const nd_s3_opts *opts, nd_s3 **out);
void nd_s3_free(nd_s3 *s3);

// Splits "s3://bucket/prefix/..." into bucket and prefix (prefix may be ""); NT_EINVAL otherwise.
// bucket and prefix are malloc'd.
nt_status nd_s3_parse_uri(nt_ctx *ctx, const char *uri, char **bucket, char **prefix);

typedef struct nd_s3_object {
    char *key;
    int64_t size;
    char etag[72];
} nd_s3_object;

// Lists every object under prefix (recursively; all pages). *objs is malloc'd (free with
// nd_s3_objects_free). Errors: NT_EIO (network, after retries; server errors with their S3 code
// and message, e.g. "NoSuchBucket", "SignatureDoesNotMatch: check the secret key"), NT_EFORMAT
// (an unparsable listing).
nt_status nd_s3_list(nd_s3 *s3, const char *bucket, const char *prefix, nd_s3_object **objs,
                     size_t *n);
void nd_s3_objects_free(nd_s3_object *objs, size_t n);

// GET: the whole object into a malloc'd buffer. NT_EIO with "NoSuchKey" etc.
nt_status nd_s3_get(nd_s3 *s3, const char *bucket, const char *key, uint8_t **buf, size_t *len);
// HEAD: size and ETag (etag may be NULL).
nt_status nd_s3_head(nd_s3 *s3, const char *bucket, const char *key, int64_t *size, char *etag,
                     size_t etag_len);
// PUT: one object from memory; content_type may be NULL.
nt_status nd_s3_put(nd_s3 *s3, const char *bucket, const char *key, const void *buf, size_t len,
                    const char *content_type);

#endif
