/*
 * dataset.h: image datasets with flow_from_directory semantics (class folders sorted by name,
 * files sorted, the listed extensions) from a folder or an S3 prefix; a patient-grouped,
 * stratified validation split; an in-memory cache of decoded, resized 8-bit images; and loader
 * threads that prefetch preprocessed (and augmented) batches while compute runs.
 * Not here: decoding and resizing (nd.h), augmentation (augment.h), the S3 protocol (s3.h).
 * Tests: tests/test_dataset.c (folders, and S3 through the local server when node is here);
 * speed: `pneumo bench data` (cmd/bench_data.c).
 */
#ifndef ND_DATASET_H
#define ND_DATASET_H

#include "data/augment.h"
#include "data/nd.h"
#include "data/s3.h"

// Image extensions flow_from_directory accepts (case-insensitive).
#define ND_EXTENSIONS "png,jpg,jpeg,bmp,ppm,tif,tiff"

typedef struct nd_item {
    char *source; // a path, or "s3://bucket/key"
    int label;    // class index
    int64_t size; // bytes (0 when unknown)
} nd_item;

typedef struct nd_dataset {
    char *root; // the folder or s3:// prefix it was read from
    nd_item *items;
    int n;
    char **class_names; // sorted
    int nclasses;
    int *class_counts;
    int ignored;    // files listed but left out: other extensions, hidden names, top-level files
    int unreadable; // image files left out because they cannot be read (each logged at WARN)
} nd_dataset;

// Lists a dataset: `uri` is a folder or "s3://bucket/prefix/" holding one sub-folder per class.
// flow_from_directory's rules: class folders sorted by name (class index = position), files
// found recursively under each (symbolic links to files followed, to folders not), sorted by
// folder then name (byte order, as Python's sorted), extensions ND_EXTENSIONS (case-insensitive,
// after a dot). Two deliberate differences from Keras: names starting with '.'
// (".ipynb_checkpoints",
// "._x.jpg") are skipped, and image files that cannot be read (dangling links, no permission,
// FIFOs and other non-regular files) are logged with the reason at WARN, counted in
// ds->unreadable and left out, instead of failing or hanging later. For S3 the keys under the
// prefix play the part of paths (a prefix without a trailing '/' gets one); errors of the
// listing itself are written by the S3 client to the context it was created with.
// s3 may be NULL for folders (and is needed for s3:// URIs: NT_EINVAL without). Files with other
// extensions are ignored (counted in *ignored when not NULL, and in ds->ignored). Errors:
// NT_EIO (a missing or unreadable folder, an S3 failure), NT_EFORMAT (no class folders or no
// images: the message says what layout was expected), NT_EINVAL, NT_ENOMEM.
nt_status nd_dataset_open(nt_ctx *ctx, const char *uri, nd_s3 *s3, nd_dataset **out, int *ignored);
void nd_dataset_free(nd_dataset *ds);

// A new dataset of ds's items idx[0..n) in that order (classes as in ds, counts recomputed;
// shares nothing with ds). NT_EINVAL for an index out of range, NT_ENOMEM.
nt_status nd_dataset_subset(nt_ctx *ctx, const nd_dataset *ds, const int *idx, int n,
                            nd_dataset **out);

// Carves a validation split: about `frac` (0 < frac < 1) of each class goes to val, whole patient
// groups at a time. A file's group is the first non-empty capture group (or else the whole match)
// of `group_regex` (POSIX extended) on its file name; files that do not match are their own group.
// The default ND_KERMANY_GROUPS knows the Kermany names: personNNN_... -> "personNNN",
// IM-NNNN-... -> "IM-NNNN", NORMAL2-IM-NNNN-... -> "NORMAL2-IM-NNNN". Groups are shuffled from
// seed (one stream per class) and taken greedily while they bring the class's count closer to
// round(frac * count), so each class lands within one group of its target. A group whose files
// span classes goes whole to one side (by its majority class). Items keep their order. The
// counts per class are logged (INFO) and are in the outputs' class_counts. Both outputs are new
// datasets (sharing nothing with ds). NT_EINVAL for frac outside (0, 1) or a bad regex (with
// regerror's text), NT_ENOMEM.
#define ND_KERMANY_GROUPS "^(person[0-9]+)_|^((NORMAL2-)?IM-[0-9]+)-"
nt_status nd_dataset_split(nt_ctx *ctx, const nd_dataset *ds, double frac, uint64_t seed,
                           const char *group_regex, nd_dataset **train, nd_dataset **val);
// The group nd_dataset_split gives file name `name` (no folder) under group_regex, into buf
// (always terminated); "" when the name does not match (the file is its own group).
// NT_EINVAL for a bad regex.
nt_status nd_dataset_group(nt_ctx *ctx, const char *group_regex, const char *name, char *buf,
                           size_t len);

// ---- loader ----
//
// Threads (pthreads, each with its own nt_ctx and, for s3:// items, its own S3 client) prepare
// whole batches into a bounded ring of `prefetch` slots while the caller computes; batches come
// out in order. Batch b of an epoch holds the items at positions [b*batch, (b+1)*batch) of the
// epoch's order (a Fisher-Yates shuffle keyed by (seed, epoch), or dataset order); its content is
// a function of (seed, epoch, b) and the files alone, so it is the same bit for bit whatever the
// thread count or timing. Per item: the cached 8-bit image or a read + nd_image_decode_resized
// (then cached), then either nd_aug_random(aug, seed, epoch, dataset index) + nd_aug_apply into
// floats + nt_preprocess_apply_f32, or (no augmentation) nt_preprocess_apply from the 8-bit image.
//
// Bad items: an item that cannot be read or decoded is left out of its batch (which is then
// smaller), logged once at WARN through the loader's context with the reason, counted, and
// remembered as bad (not retried in later epochs). A batch left empty is skipped. The run stops
// (nd_loader_next returns NT_EFORMAT) as soon as the bad items exceed max_bad_frac of the
// dataset, i.e. as soon as the final fraction is certain to exceed it; the count is taken in batch
// order, so it is the same with any thread count.

typedef struct nd_loader_opts {
    int img_size;             // square target, default 224
    nd_resize resize;         // default ND_RESIZE_AREA
    int batch;                // images per batch, default 32
    int threads;              // loader threads (1..64), default 1
    int shuffle;              // reshuffle each epoch (from seed, epoch), default 1
    uint64_t seed;            // order and augmentation
    nd_aug_cfg aug;           // nd_aug_cfg_default: none
    nt_preprocess preprocess; // default NT_PRE_RESCALE
    int cache;                // keep decoded, resized 8-bit images in memory after first use
               // (img_size^2 * 3 bytes per image: 0.79 GB for 5216 at 224); default 1
    double max_bad_frac;  // stop (NT_EFORMAT) when more than this fraction failed; default 0.01
    const nd_s3_opts *s3; // for s3:// items (each thread opens its own client); may be NULL
    int prefetch;         // batches prepared ahead (ring slots); 0: 2 per thread, at least 2
} nd_loader_opts;

void nd_loader_opts_default(nd_loader_opts *o);

typedef struct nd_loader nd_loader;

// Starts the loader threads over ds (borrowed: must outlive the loader); o is copied (o->s3 is
// borrowed too). The threads wait for nd_loader_start_epoch. NT_EINVAL for bad options (named),
// NT_ENOMEM (the ring: prefetch * batch * img_size^2 * 3 floats), NT_EIO when a thread cannot
// be started.
nt_status nd_loader_new(nt_ctx *ctx, const nd_dataset *ds, const nd_loader_opts *o,
                        nd_loader **out);
// Stops and joins the threads, frees the cache. NULL is fine.
void nd_loader_free(nd_loader *ld);
// Begins an epoch (the order is a function of seed and epoch). Batches of the previous epoch
// not yet taken are dropped (it waits for the ones being made). Any epoch number may follow any
// other. NT_EINVAL for a negative epoch.
nt_status nd_loader_start_epoch(nd_loader *ld, int epoch);
// Takes the next batch: x [batch, S, S, 3] preprocessed floats (preallocated for opts.batch; rows
// past *n are left as they were), labels [batch], idx [batch] (dataset indices, may be NULL),
// *n = images in it (partial when it is the last batch or lost bad items; 0 at the end of the
// epoch). Images that fail to load are skipped and counted; NT_EFORMAT once they exceed
// max_bad_frac (the message names the last one and why). Other errors: NT_EINVAL (no epoch
// started, x of the wrong shape), NT_ENOMEM or NT_EINVAL from a thread (e.g. no S3
// credentials), with the thread's message. Errors go to the context given to nd_loader_new.
// One consumer thread only.
nt_status nd_loader_next(nd_loader *ld, nt_tensor *x, float *labels, int *idx, int *n);
// Batches per epoch: ceil(n / batch) (fewer come out when bad items empty a batch).
int nd_loader_batches(const nd_loader *ld);

typedef struct nd_loader_stats {
    int64_t loaded;     // images delivered in batches (all epochs)
    int64_t cache_hits; // of which taken from the cache, without decoding
    int64_t bad;        // distinct items found bad
    double decode_s;    // read + decode + resize, summed over threads
    double prep_s;      // augmentation + preprocessing, summed over threads
} nd_loader_stats;
// Counters of the batches taken so far (thread-safe).
void nd_loader_stats_get(const nd_loader *ld, nd_loader_stats *st);

#endif
