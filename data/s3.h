/*
 * s3.h: a small S3 client on libcurl (CURLOPT_AWS_SIGV4): ListObjectsV2 with continuation
 * tokens, GET, HEAD and PUT, path-style URLs, retries with exponential backoff and full jitter,
 * and the AWS configuration conventions. Not an AWS SDK: no multipart uploads, no virtual-host
 * URLs, no SSO / assume-role / credential_process credentials. Tests: tests/s3.sh +
 * tests/test_s3.c against the local S3 server (@20minutes/s3rver, which checks signatures).
 */
#ifndef ND_S3_H
#define ND_S3_H

#include "libnet/nt.h"

#include <stddef.h>
#include <stdint.h>

typedef struct nd_s3 nd_s3;

// Options; a zeroed struct (or NULL) means "as the AWS tools would": every field overrides the
// environment and the AWS config files when it is non-NULL / non-zero.
typedef struct nd_s3_opts {
    const char *endpoint; // e.g. "http://127.0.0.1:4568"; else AWS_ENDPOINT_URL_S3, then
                          // AWS_ENDPOINT_URL, then the profile's `services` s3 endpoint_url, then
                          // the profile's endpoint_url (the last four are skipped when
                          // AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true), else
                          // https://s3.REGION.amazonaws.com
    const char *region;   // else AWS_REGION, AWS_DEFAULT_REGION, the profile's region, "us-east-1"
    const char *profile;  // else AWS_PROFILE, AWS_DEFAULT_PROFILE, "default". Naming a profile
                          // here makes it win over AWS_ACCESS_KEY_ID (as `aws --profile` does)
    int max_retries;      // retries after the first try. 0: AWS_MAX_ATTEMPTS - 1, else the
                          // profile's max_attempts - 1, else 5; < 0: no retries
    double timeout_s;     // a try fails when connecting, or any silence while sending or
                          // receiving, lasts this long (whole seconds, at least 1). 0: 60
    double retry_base_s;  // backoff before retry i is uniform in [0, min(20 s, base * 2^i)]
                          // ("full jitter"), at least a Retry-After the server sent. 0: 0.5
} nd_s3_opts;

// Creates a client. Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_SESSION_TOKEN, else the profile in ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE) and
// then ~/.aws/config (AWS_CONFIG_FILE). Credentials never appear in messages or logs, and are
// wiped from memory by nd_s3_free. No request is made here.
// Returns NT_OK; NT_EINVAL when no credentials are found (the message says where it looked), a
// named profile does not exist, only half of a key pair is set, or a setting is malformed (an
// endpoint that is not http(s)://, a bad region or AWS_MAX_ATTEMPTS); NT_EIO when a config
// file exists but cannot be read; NT_ENOMEM. *out is NULL on error.
// Errors of this client's requests go to ctx (borrowed; it must outlive the client). A client
// may be used by one thread at a time; give each loader thread its own (cheap: connections are
// kept per client) and, since an nt_ctx's error buffer is not thread-safe, its own ctx.
// Programs should ignore SIGPIPE: the client sets CURLOPT_NOSIGNAL, as threaded programs must.
nt_status nd_s3_new(nt_ctx *ctx, const nd_s3_opts *opts, nd_s3 **out);
// Closes the connections and wipes the credentials. nd_s3_free(NULL) does nothing.
void nd_s3_free(nd_s3 *s3);

// What the client resolved, for messages (owned by the client; never the credentials):
// the endpoint without a trailing slash, the region, and where the credentials came from
// (e.g. "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" or "profile \"dev\" in
// /home/u/.aws/credentials").
const char *nd_s3_endpoint(const nd_s3 *s3);
const char *nd_s3_region(const nd_s3 *s3);
const char *nd_s3_credentials_source(const nd_s3 *s3);

// Splits "s3://bucket/prefix/..." into bucket and prefix (prefix may be "", and is kept as
// written: "s3://b/dir" lists dir2/ too, "s3://b/dir/" does not). bucket and prefix are malloc'd.
// NT_EINVAL (with the URI in the message) when uri does not start with "s3://", has an empty
// bucket, or a bucket name with characters other than letters, digits, '.', '-' and '_' or
// longer than 255 bytes; NT_ENOMEM. Thread-safe apart from the ctx's error buffer.
nt_status nd_s3_parse_uri(nt_ctx *ctx, const char *uri, char **bucket, char **prefix);

typedef struct nd_s3_object {
    char *key;
    int64_t size;  // bytes
    char etag[72]; // without the quotes S3 puts around it ("" when absent; cut to 71 bytes)
} nd_s3_object;

// Lists every object whose key starts with prefix (a raw S3 prefix; "" or NULL lists the whole
// bucket), recursively, through all pages (ListObjectsV2, 1000 keys a page, continuation
// tokens), in the server's order (UTF-8 byte order on S3). Zero-byte "folder" markers ending
// in '/' are listed too. *objs is malloc'd (free with nd_s3_objects_free; NULL when *n == 0).
// Errors: NT_EIO (network or server errors, after the retries; server errors name their S3
// code and message and say what to check, e.g. "403 SignatureDoesNotMatch ... (check the secret
// access key ...)", "404 NoSuchBucket"), NT_EFORMAT (a listing that is not the XML of
// ListObjectsV2, or a truncated page without a new continuation token), NT_EINVAL (a bad bucket
// name), NT_ENOMEM. On error *objs is NULL and *n is 0.
nt_status nd_s3_list(nd_s3 *s3, const char *bucket, const char *prefix, nd_s3_object **objs,
                     size_t *n);
void nd_s3_objects_free(nd_s3_object *objs, size_t n);

// GET: the whole object into a malloc'd buffer (*buf is non-NULL even for an empty object).
// NT_EIO ("404 NoSuchKey", "404 NoSuchBucket", network errors after the retries), NT_EINVAL (an
// empty key or a bad bucket name), NT_ENOMEM (with the size).
nt_status nd_s3_get(nd_s3 *s3, const char *bucket, const char *key, uint8_t **buf, size_t *len);
// HEAD: size and ETag without quotes (etag may be NULL; else it receives at most etag_len - 1
// bytes and a NUL). A HEAD answer has no body, so a missing key or bucket is
// "404 Not Found" and a bad secret "403 Forbidden" (NT_EIO). NT_EFORMAT when the answer has no
// Content-Length.
nt_status nd_s3_head(nd_s3 *s3, const char *bucket, const char *key, int64_t *size, char *etag,
                     size_t etag_len);
// PUT: one object from memory (a single request, so at most 5 GiB), with its SHA-256 as the
// signed x-amz-content-sha256; content_type may be NULL (S3 then stores
// binary/octet-stream). Replaces an existing object. Errors as nd_s3_get.
nt_status nd_s3_put(nd_s3 *s3, const char *bucket, const char *key, const void *buf, size_t len,
                    const char *content_type);

#endif
